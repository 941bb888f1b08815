//! A `wasi:keyvalue@0.2.0-draft` store (`store` and `atomics`) shared by
//! every instance a [`Host`](crate::Host) creates.
//!
//! Serverless hosts (wasmtime serve, Spin) make a fresh instance per request,
//! so whatever a guest wants to keep between requests (the connector's
//! certificate cache) must live in the host. wasmtime's own provider
//! (`wasmtime-wasi-keyvalue`, `-S keyvalue`) copies its data into every
//! opened bucket, so writes die with the instance; this store is one map
//! behind a mutex that every instance's buckets point into.
//!
//! The semantics live on [`KeyValueStore`] as plain methods (unit-tested
//! without wasm); [`KeyValueView`] is the thin WIT glue over them, through
//! [`SharedStore`], which is either this store or a
//! [`RedisStore`](crate::redis_store::RedisStore) shared by several host
//! processes. The glue's functions are `async` on the host (the guest sees
//! them blocking, as the WIT declares): a Redis call waits on the network
//! without holding up the runtime's thread.

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::shared_store::SharedStore;

#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/deps/keyvalue",
        // Only what the connector imports: no `batch`, no `watcher`.
        inline: "
            package gcp-db-host:keyvalue;
            world shared-store {
                import wasi:keyvalue/store@0.2.0-draft;
                import wasi:keyvalue/atomics@0.2.0-draft;
            }
        ",
        // Trappable so a bad resource handle traps instead of becoming a
        // guest-visible store error; async so a Redis call does not block
        // the runtime's thread.
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
        },
    });
}

use bindings::wasi::keyvalue::{atomics, store};

pub use crate::memory_store::{
    KeyValueError, KeyValueStore, CONNECTOR_BUCKET, DEFAULT_BUCKET, DEFAULT_BUCKETS,
};

/// The `wasi:keyvalue` interfaces this module provides, as a component
/// names its imports.
pub const INTERFACES: [&str; 2] = [
    "wasi:keyvalue/store@0.2.0-draft",
    "wasi:keyvalue/atomics@0.2.0-draft",
];

impl From<KeyValueError> for store::Error {
    fn from(err: KeyValueError) -> store::Error {
        match err {
            KeyValueError::NoSuchStore { .. } => store::Error::NoSuchStore,
            other => store::Error::Other(other.to_string()),
        }
    }
}

/// The host side of a `bucket` resource: which bucket the guest opened.
#[derive(Debug)]
pub struct Bucket {
    name: String,
}

/// What the `wasi:keyvalue` functions of one store see: the shared store (if
/// this instance was given one) and the instance's resource table.
pub struct KeyValueView<'a> {
    store: Option<&'a SharedStore>,
    table: &'a mut ResourceTable,
}

impl<'a> KeyValueView<'a> {
    /// A view over `store` and `table`. Without a store, `open` answers
    /// `access-denied`.
    pub fn new(store: Option<&'a SharedStore>, table: &'a mut ResourceTable) -> Self {
        KeyValueView { store, table }
    }

    /// The store and bucket name behind `bucket`.
    fn bucket(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<(&'a SharedStore, String)> {
        let store = self
            .store
            .ok_or_else(|| wasmtime::format_err!("a bucket exists but no key-value store does"))?;
        Ok((store, self.table.get(bucket)?.name.clone()))
    }
}

type GuestResult<T> = wasmtime::Result<Result<T, store::Error>>;

impl store::Host for KeyValueView<'_> {
    async fn open(&mut self, identifier: String) -> GuestResult<Resource<Bucket>> {
        let Some(store) = self.store else {
            return Ok(Err(store::Error::AccessDenied));
        };
        if !store.has_bucket(&identifier) {
            return Ok(Err(store::Error::NoSuchStore));
        }
        Ok(Ok(self.table.push(Bucket { name: identifier })?))
    }
}

impl store::HostBucket for KeyValueView<'_> {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> GuestResult<Option<Vec<u8>>> {
        let (store, name) = self.bucket(&bucket)?;
        Ok(store.get(&name, &key).await.map_err(Into::into))
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> GuestResult<()> {
        let (store, name) = self.bucket(&bucket)?;
        Ok(store.set(&name, &key, value).await.map_err(Into::into))
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> GuestResult<()> {
        let (store, name) = self.bucket(&bucket)?;
        Ok(store.delete(&name, &key).await.map_err(Into::into))
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> GuestResult<bool> {
        let (store, name) = self.bucket(&bucket)?;
        Ok(store.exists(&name, &key).await.map_err(Into::into))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> GuestResult<store::KeyResponse> {
        let (store, name) = self.bucket(&bucket)?;
        Ok(store
            .keys(&name)
            .await
            .map(|keys| {
                // One page holds everything from the cursor on; the cursor is
                // an offset the guest controls, so clamp it.
                let start = usize::try_from(cursor.unwrap_or(0))
                    .unwrap_or(usize::MAX)
                    .min(keys.len());
                store::KeyResponse {
                    keys: keys[start..].to_vec(),
                    cursor: None,
                }
            })
            .map_err(Into::into))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KeyValueView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> GuestResult<u64> {
        let (store, name) = self.bucket(&bucket)?;
        Ok(store
            .increment(&name, &key, delta)
            .await
            .map_err(Into::into))
    }
}

struct HasKeyValue;

impl HasData for HasKeyValue {
    type Data<'a> = KeyValueView<'a>;
}

/// Adds `wasi:keyvalue/store` and `wasi:keyvalue/atomics` (0.2.0-draft) to
/// `linker`, reaching the store of each instance through `view`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KeyValueView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, HasKeyValue>(linker, view)?;
    atomics::add_to_linker::<T, HasKeyValue>(linker, view)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use atomics::Host as _;
    use store::{Host as _, HostBucket as _};

    #[test]
    fn increment_counts_from_zero_and_stores_decimal_ascii() {
        let kv = KeyValueStore::default();
        assert_eq!(kv.increment("default", "n", 1), Ok(1));
        assert_eq!(kv.increment("default", "n", 41), Ok(42));
        assert_eq!(kv.get("default", "n"), Ok(Some(b"42".to_vec())));
        // Zero delta on an absent key creates it as "0".
        assert_eq!(kv.increment("default", "z", 0), Ok(0));
        assert_eq!(kv.get("default", "z"), Ok(Some(b"0".to_vec())));
    }

    #[test]
    fn increment_continues_a_numeric_value_set_by_hand() {
        let kv = KeyValueStore::default();
        kv.set("default", "n", b"1000".to_vec()).unwrap();
        assert_eq!(kv.increment("default", "n", 5), Ok(1005));
    }

    #[test]
    fn increment_refuses_non_numbers_and_overflow() {
        let kv = KeyValueStore::default();
        for bad in [&b"abc"[..], b"-1", b"1.5", b" 7", b"", &[0xff, 0xfe]] {
            kv.set("default", "n", bad.to_vec()).unwrap();
            let err = kv.increment("default", "n", 1).unwrap_err();
            assert_eq!(err, KeyValueError::NotANumber { key: "n".into() });
            assert!(matches!(store::Error::from(err), store::Error::Other(_)));
            // The value is left as it was.
            assert_eq!(kv.get("default", "n"), Ok(Some(bad.to_vec())));
        }
        kv.set("default", "max", u64::MAX.to_string().into_bytes())
            .unwrap();
        assert_eq!(
            kv.increment("default", "max", 1),
            Err(KeyValueError::Overflow { key: "max".into() })
        );
    }

    #[test]
    fn buckets_are_the_configured_names_and_separate() {
        let kv = KeyValueStore::new(["a", "b", "a"]);
        assert_eq!(kv.bucket_names(), ["a", "b"]);
        assert!(!kv.has_bucket("default"));
        kv.set("a", "k", b"in a".to_vec()).unwrap();
        assert_eq!(kv.get("b", "k"), Ok(None));
        assert_eq!(kv.exists("a", "k"), Ok(true));
        let missing = kv.get("c", "k").unwrap_err();
        assert_eq!(missing, KeyValueError::NoSuchStore { bucket: "c".into() });
        assert!(matches!(
            store::Error::from(missing),
            store::Error::NoSuchStore
        ));
        assert_eq!(KeyValueStore::default().bucket_names(), DEFAULT_BUCKETS);
    }

    #[test]
    fn clones_share_data_and_clear_keeps_buckets() {
        let one = KeyValueStore::default();
        let two = one.clone();
        one.set("default", "x", b"1".to_vec()).unwrap();
        assert_eq!(two.increment("default", "y", 2), Ok(2));
        assert_eq!(one.get("default", "y"), Ok(Some(b"2".to_vec())));
        assert_eq!(two.len(), 2);
        assert_eq!(one.keys("default"), Ok(vec!["x".into(), "y".into()]));
        two.delete("default", "x").unwrap();
        two.delete("default", "never-set").unwrap();
        assert_eq!(one.len(), 1);
        one.clear();
        assert!(two.is_empty());
        assert!(two.has_bucket("default"));
        // A separate store is separate.
        assert!(KeyValueStore::default().is_empty());
    }

    #[test]
    fn concurrent_increments_lose_nothing() {
        let kv = KeyValueStore::default();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let kv = kv.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        kv.increment("default", "n", 1).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(kv.get("default", "n"), Ok(Some(b"8000".to_vec())));
    }

    /// The WIT glue: two views (two instances' tables) over one store.
    #[tokio::test]
    async fn views_over_one_store_share_it() {
        let kv = KeyValueStore::default();
        views_share_one_store(&SharedStore::Memory(kv.clone())).await;
        assert_eq!(kv.len(), 1);
    }

    /// Two views over `kv` (an empty store with the default buckets) see
    /// each other's writes, through every function of the glue; leaves the
    /// key "n" = "3" in bucket "default".
    pub(crate) async fn views_share_one_store(kv: &SharedStore) {
        let (mut table1, mut table2) = (ResourceTable::new(), ResourceTable::new());
        let mut first = KeyValueView::new(Some(kv), &mut table1);
        let bucket = first.open("default".into()).await.unwrap().unwrap();
        let again = Resource::<Bucket>::new_borrow(bucket.rep());
        assert_eq!(
            first
                .increment(again, "n".into(), 3)
                .await
                .unwrap()
                .unwrap(),
            3
        );
        first.drop(bucket).await.unwrap();

        let mut second = KeyValueView::new(Some(kv), &mut table2);
        assert!(matches!(
            second.open("other".into()).await.unwrap(),
            Err(store::Error::NoSuchStore)
        ));
        let bucket = second.open("default".into()).await.unwrap().unwrap();
        let borrow = || Resource::<Bucket>::new_borrow(bucket.rep());
        assert_eq!(
            second.get(borrow(), "n".into()).await.unwrap().unwrap(),
            Some(b"3".to_vec())
        );
        second
            .set(borrow(), "s".into(), b"text".to_vec())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(
            second.increment(borrow(), "s".into(), 1).await.unwrap(),
            Err(store::Error::Other(_))
        ));
        let page = second.list_keys(borrow(), None).await.unwrap().unwrap();
        assert_eq!(page.keys, ["n", "s"]);
        assert_eq!(page.cursor, None);
        let page = second.list_keys(borrow(), Some(1)).await.unwrap().unwrap();
        assert_eq!(page.keys, ["s"]);
        let page = second
            .list_keys(borrow(), Some(u64::MAX))
            .await
            .unwrap()
            .unwrap();
        assert!(page.keys.is_empty());
        assert!(second.exists(borrow(), "s".into()).await.unwrap().unwrap());
        second.delete(borrow(), "s".into()).await.unwrap().unwrap();
        assert!(!second.exists(borrow(), "s".into()).await.unwrap().unwrap());
    }

    #[tokio::test]
    async fn a_view_without_a_store_denies_open() {
        let mut table = ResourceTable::new();
        let mut view = KeyValueView::new(None, &mut table);
        assert!(matches!(
            view.open("default".into()).await.unwrap(),
            Err(store::Error::AccessDenied)
        ));
    }
}
