//! The store every instance of a [`Host`](crate::Host) shares, behind
//! `wasi:keyvalue` ([`keyvalue`](crate::keyvalue)) and Spin's `spin:key-value`
//! ([`spin_key_value`](crate::spin_key_value)): the in-memory
//! [`KeyValueStore`] of one process (the default), or a [`RedisStore`] that
//! several host processes share.
//!
//! The glue calls only these methods; they are `async` because Redis answers
//! over the network (the in-memory ones never wait). Both stores have the
//! same buckets by default ([`DEFAULT_BUCKETS`](crate::memory_store::DEFAULT_BUCKETS)),
//! and `open` checks the name against the configured ones without asking
//! Redis, so a bucket opens while Redis is down and only its calls fail.

use crate::memory_store::{KeyValueError, KeyValueStore};
use crate::redis_store::RedisStore;

/// The host's store: in this process's memory, or on a Redis server.
#[derive(Debug, Clone)]
pub enum SharedStore {
    /// One map in this process.
    Memory(KeyValueStore),
    /// A Redis server, shared with other processes.
    Redis(RedisStore),
}

impl Default for SharedStore {
    /// An empty in-memory store with the default buckets.
    fn default() -> SharedStore {
        SharedStore::Memory(KeyValueStore::default())
    }
}

impl From<KeyValueStore> for SharedStore {
    fn from(store: KeyValueStore) -> SharedStore {
        SharedStore::Memory(store)
    }
}

impl From<RedisStore> for SharedStore {
    fn from(store: RedisStore) -> SharedStore {
        SharedStore::Redis(store)
    }
}

impl SharedStore {
    /// Where the data lives, for messages: `in memory` or
    /// `on Redis at redis://host:port/db, prefix P` (never a password).
    pub fn describe(&self) -> String {
        match self {
            SharedStore::Memory(_) => "in memory".into(),
            SharedStore::Redis(r) => {
                format!("on Redis at {}, prefix {:?}", r.endpoint(), r.prefix())
            }
        }
    }

    /// The configured bucket names, sorted.
    pub fn bucket_names(&self) -> Vec<String> {
        match self {
            SharedStore::Memory(m) => m.bucket_names(),
            SharedStore::Redis(r) => r.bucket_names(),
        }
    }

    /// Whether a bucket called `name` is configured.
    pub fn has_bucket(&self, name: &str) -> bool {
        match self {
            SharedStore::Memory(m) => m.has_bucket(name),
            SharedStore::Redis(r) => r.has_bucket(name),
        }
    }

    /// The value of `key` in `bucket`, if set.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KeyValueError> {
        match self {
            SharedStore::Memory(m) => m.get(bucket, key),
            SharedStore::Redis(r) => r.get(bucket, key).await,
        }
    }

    /// Sets `key` in `bucket` to `value`.
    pub async fn set(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<(), KeyValueError> {
        match self {
            SharedStore::Memory(m) => m.set(bucket, key, value),
            SharedStore::Redis(r) => r.set(bucket, key, value).await,
        }
    }

    /// Removes `key` from `bucket` (absent is no error).
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), KeyValueError> {
        match self {
            SharedStore::Memory(m) => m.delete(bucket, key),
            SharedStore::Redis(r) => r.delete(bucket, key).await,
        }
    }

    /// Whether `key` is set in `bucket`.
    pub async fn exists(&self, bucket: &str, key: &str) -> Result<bool, KeyValueError> {
        match self {
            SharedStore::Memory(m) => m.exists(bucket, key),
            SharedStore::Redis(r) => r.exists(bucket, key).await,
        }
    }

    /// The keys of `bucket`, sorted.
    pub async fn keys(&self, bucket: &str) -> Result<Vec<String>, KeyValueError> {
        match self {
            SharedStore::Memory(m) => m.keys(bucket),
            SharedStore::Redis(r) => r.keys(bucket).await,
        }
    }

    /// Atomically adds `delta` to the number at `key` and returns the sum
    /// (atomic across processes on Redis).
    pub async fn increment(
        &self,
        bucket: &str,
        key: &str,
        delta: u64,
    ) -> Result<u64, KeyValueError> {
        match self {
            SharedStore::Memory(m) => m.increment(bucket, key, delta),
            SharedStore::Redis(r) => r.increment(bucket, key, delta).await,
        }
    }
}
