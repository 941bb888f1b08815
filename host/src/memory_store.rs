//! The in-memory store of one host process: named buckets of byte values,
//! and what every store behind `wasi:keyvalue` and `spin:key-value` shares
//! (the default bucket names and the errors), so that the WIT glue
//! ([`keyvalue`](crate::keyvalue), [`spin_key_value`](crate::spin_key_value)),
//! the [`SharedStore`](crate::SharedStore) seam and the
//! [`RedisStore`](crate::redis_store::RedisStore) all stand on it.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The bucket every store has unless configured otherwise (Spin's default
/// store).
pub const DEFAULT_BUCKET: &str = "default";

/// The bucket the connector's examples keep its cache in: one of its own, so
/// that nothing else of the app writes there.
pub const CONNECTOR_BUCKET: &str = "gcp-db-connector";

/// The buckets of a store unless configured otherwise.
pub const DEFAULT_BUCKETS: [&str; 2] = [DEFAULT_BUCKET, CONNECTOR_BUCKET];

/// What a store operation can fail with, before it becomes the WIT `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyValueError {
    /// No bucket of that name is configured (`no-such-store`).
    NoSuchStore {
        /// The name asked for.
        bucket: String,
    },
    /// `increment` on a value that is not the decimal ASCII of a u64
    /// (`other`).
    NotANumber {
        /// The key holding the value.
        key: String,
    },
    /// `increment` would pass `u64::MAX` (`other`).
    Overflow {
        /// The key holding the value.
        key: String,
    },
    /// The store behind the bucket failed: Redis down, refusing or too slow
    /// (`other`). Never holds a credential or a value.
    Backend {
        /// What happened, naming the server by host and port.
        reason: String,
    },
}

impl fmt::Display for KeyValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyValueError::NoSuchStore { bucket } => write!(f, "no bucket named {bucket:?}"),
            KeyValueError::NotANumber { key } => {
                write!(f, "the value of {key:?} is not a decimal u64")
            }
            KeyValueError::Overflow { key } => write!(f, "incrementing {key:?} overflows a u64"),
            KeyValueError::Backend { reason } => f.write_str(reason),
        }
    }
}

impl std::error::Error for KeyValueError {}

type Buckets = HashMap<String, HashMap<String, Vec<u8>>>;

/// An in-memory key-value store: named buckets of byte values.
///
/// A cheap handle: clones share the same data, which is how every instance
/// of a [`Host`](crate::Host) sees one store. The set of buckets is fixed at
/// creation.
#[derive(Clone)]
pub struct KeyValueStore {
    buckets: Arc<Mutex<Buckets>>,
}

impl Default for KeyValueStore {
    /// A store with the [`DEFAULT_BUCKETS`].
    fn default() -> KeyValueStore {
        KeyValueStore::new(DEFAULT_BUCKETS)
    }
}

impl fmt::Debug for KeyValueStore {
    // Names and sizes only: values may be keys and certificates.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let buckets = self.lock();
        let mut map = f.debug_map();
        for (name, entries) in buckets.iter() {
            map.entry(name, &entries.len());
        }
        map.finish()
    }
}

impl KeyValueStore {
    /// An empty store with exactly the buckets `names` (duplicates merge).
    pub fn new<I, S>(names: I) -> KeyValueStore
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let buckets = names
            .into_iter()
            .map(|name| (name.into(), HashMap::new()))
            .collect();
        KeyValueStore {
            buckets: Arc::new(Mutex::new(buckets)),
        }
    }

    /// The configured bucket names, sorted.
    pub fn bucket_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().keys().cloned().collect();
        names.sort();
        names
    }

    /// Whether a bucket called `name` exists (what `open` checks).
    pub fn has_bucket(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// The value of `key` in `bucket`, if set.
    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KeyValueError> {
        self.with_bucket(bucket, |entries| entries.get(key).cloned())
    }

    /// Sets `key` in `bucket` to `value`, replacing any earlier value.
    pub fn set(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<(), KeyValueError> {
        self.with_bucket(bucket, |entries| {
            entries.insert(key.to_string(), value);
        })
    }

    /// Removes `key` from `bucket`; absent keys are no error.
    pub fn delete(&self, bucket: &str, key: &str) -> Result<(), KeyValueError> {
        self.with_bucket(bucket, |entries| {
            entries.remove(key);
        })
    }

    /// Whether `key` is set in `bucket`.
    pub fn exists(&self, bucket: &str, key: &str) -> Result<bool, KeyValueError> {
        self.with_bucket(bucket, |entries| entries.contains_key(key))
    }

    /// The keys of `bucket`, sorted (so `list-keys` cursors are stable
    /// offsets between calls that do not change the bucket).
    pub fn keys(&self, bucket: &str) -> Result<Vec<String>, KeyValueError> {
        self.with_bucket(bucket, |entries| {
            let sorted: BTreeSet<&String> = entries.keys().collect();
            sorted.into_iter().cloned().collect()
        })
    }

    /// Adds `delta` to the number stored at `key` and returns the sum.
    ///
    /// Values are the decimal ASCII of a u64 (what Spin and wasmtime store);
    /// an absent key counts as 0. The read and the write happen under one
    /// lock, so concurrent increments from many instances never lose one.
    pub fn increment(&self, bucket: &str, key: &str, delta: u64) -> Result<u64, KeyValueError> {
        self.with_bucket(bucket, |entries| {
            let current = match entries.get(key) {
                None => 0,
                Some(bytes) => std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|text| text.parse::<u64>().ok())
                    .ok_or_else(|| KeyValueError::NotANumber { key: key.into() })?,
            };
            let sum = current
                .checked_add(delta)
                .ok_or_else(|| KeyValueError::Overflow { key: key.into() })?;
            entries.insert(key.to_string(), sum.to_string().into_bytes());
            Ok(sum)
        })?
    }

    /// Empties every bucket (the buckets themselves stay).
    pub fn clear(&self) {
        for entries in self.lock().values_mut() {
            entries.clear();
        }
    }

    /// How many entries all buckets hold together.
    pub fn len(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }

    /// Whether every bucket is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn with_bucket<R>(
        &self,
        bucket: &str,
        f: impl FnOnce(&mut HashMap<String, Vec<u8>>) -> R,
    ) -> Result<R, KeyValueError> {
        let mut buckets = self.lock();
        let entries = buckets
            .get_mut(bucket)
            .ok_or_else(|| KeyValueError::NoSuchStore {
                bucket: bucket.into(),
            })?;
        Ok(f(entries))
    }

    fn lock(&self) -> MutexGuard<'_, Buckets> {
        // Every operation is a single map update, so a panic elsewhere while
        // holding the lock cannot leave the data half-written.
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
