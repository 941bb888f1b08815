//! Spin's `spin:key-value/key-value@3.0.0` (what a spin-sdk 7 app imports
//! with its `key-value` feature) over the same
//! [`SharedStore`] as `wasi:keyvalue` (in memory, or on Redis).
//!
//! Spin's store labels map to buckets of the same name: `default` (the store
//! `Store::open_default` opens) is the bucket
//! [`DEFAULT_BUCKET`](crate::keyvalue::DEFAULT_BUCKET); a label with no bucket
//! is `no-such-store`. Every function is a WASI 0.3 `async func`; on Redis
//! they wait for its answer (with its timeouts), in memory they never wait.
//!
//! `get-keys` answers every key of the bucket at once: a stream written from
//! a sorted snapshot of the keys, and a future that is `ok` (or the error, with
//! an empty stream, if the bucket is gone).

use wasmtime::component::{
    Accessor, FutureReader, HasData, Linker, Resource, ResourceTable, StreamReader,
};

use crate::shared_store::SharedStore;

#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/spin-key-value",
        inline: "
            package gcp-db-host:spin-key-value;
            world spin-store {
                import spin:key-value/key-value@3.0.0;
            }
        ",
        // Trappable so a bad resource handle traps instead of becoming a
        // guest-visible store error.
        imports: { default: trappable },
        with: {
            "spin:key-value/key-value.store": super::SpinStore,
        },
    });
}

use bindings::spin::key_value::key_value::{self, Error};

/// The interface this module provides, as a component names its import.
pub const INTERFACE: &str = "spin:key-value/key-value@3.0.0";

/// The host side of a Spin `store` resource: the bucket its label named.
#[derive(Debug)]
pub struct SpinStore {
    bucket: String,
}

/// What the `spin:key-value` functions of one wasmtime store see: the shared
/// store (if this instance was given one) and the instance's resource table.
pub struct SpinKeyValueView<'a> {
    store: Option<&'a SharedStore>,
    table: &'a mut ResourceTable,
}

impl<'a> SpinKeyValueView<'a> {
    /// A view over `store` and `table`. Without a store, `open` answers
    /// `access-denied`.
    pub fn new(store: Option<&'a SharedStore>, table: &'a mut ResourceTable) -> Self {
        SpinKeyValueView { store, table }
    }

    fn open(&mut self, label: String) -> wasmtime::Result<Result<Resource<SpinStore>, Error>> {
        let Some(store) = self.store else {
            return Ok(Err(Error::AccessDenied));
        };
        if !store.has_bucket(&label) {
            return Ok(Err(Error::NoSuchStore));
        }
        Ok(Ok(self.table.push(SpinStore { bucket: label })?))
    }

    /// The shared store and the bucket behind `handle`.
    fn bucket(&self, handle: &Resource<SpinStore>) -> wasmtime::Result<(SharedStore, String)> {
        let store = self
            .store
            .ok_or_else(|| wasmtime::format_err!("a store exists but no key-value store does"))?;
        Ok((store.clone(), self.table.get(handle)?.bucket.clone()))
    }
}

fn to_error(err: crate::keyvalue::KeyValueError) -> Error {
    match err {
        crate::keyvalue::KeyValueError::NoSuchStore { .. } => Error::NoSuchStore,
        other => Error::Other(other.to_string()),
    }
}

/// The [`HasData`] of these bindings.
pub struct HasSpinKeyValue;

impl HasData for HasSpinKeyValue {
    type Data<'a> = SpinKeyValueView<'a>;
}

type GuestResult<T> = wasmtime::Result<Result<T, Error>>;

/// The shared store and bucket behind `handle`, read through `accessor`.
fn bucket_of<T>(
    accessor: &Accessor<T, HasSpinKeyValue>,
    handle: &Resource<SpinStore>,
) -> wasmtime::Result<(SharedStore, String)> {
    accessor.with(|mut access| access.get().bucket(handle))
}

impl key_value::Host for SpinKeyValueView<'_> {}

impl key_value::HostStore for SpinKeyValueView<'_> {
    fn drop(&mut self, handle: Resource<SpinStore>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl<T> key_value::HostStoreWithStore<T> for HasSpinKeyValue {
    async fn open(accessor: &Accessor<T, Self>, label: String) -> GuestResult<Resource<SpinStore>> {
        accessor.with(|mut access| access.get().open(label))
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        handle: Resource<SpinStore>,
        key: String,
    ) -> GuestResult<Option<Vec<u8>>> {
        let (store, bucket) = bucket_of(accessor, &handle)?;
        Ok(store.get(&bucket, &key).await.map_err(to_error))
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        handle: Resource<SpinStore>,
        key: String,
        value: Vec<u8>,
    ) -> GuestResult<()> {
        let (store, bucket) = bucket_of(accessor, &handle)?;
        Ok(store.set(&bucket, &key, value).await.map_err(to_error))
    }

    async fn delete(
        accessor: &Accessor<T, Self>,
        handle: Resource<SpinStore>,
        key: String,
    ) -> GuestResult<()> {
        let (store, bucket) = bucket_of(accessor, &handle)?;
        Ok(store.delete(&bucket, &key).await.map_err(to_error))
    }

    async fn exists(
        accessor: &Accessor<T, Self>,
        handle: Resource<SpinStore>,
        key: String,
    ) -> GuestResult<bool> {
        let (store, bucket) = bucket_of(accessor, &handle)?;
        Ok(store.exists(&bucket, &key).await.map_err(to_error))
    }

    async fn get_keys(
        accessor: &Accessor<T, Self>,
        handle: Resource<SpinStore>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), Error>>)> {
        let (store, bucket) = bucket_of(accessor, &handle)?;
        let (keys, result) = match store.keys(&bucket).await {
            Ok(keys) => (keys, Ok(())),
            Err(err) => (Vec::new(), Err(to_error(err))),
        };
        accessor.with(|mut access| {
            Ok((
                StreamReader::new(&mut access, keys)?,
                FutureReader::new(&mut access, async move { wasmtime::error::Ok(result) })?,
            ))
        })
    }
}

/// Adds `spin:key-value/key-value@3.0.0` to `linker`, reaching the store of
/// each instance through `view`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> SpinKeyValueView<'_>,
) -> wasmtime::Result<()> {
    key_value::add_to_linker::<T, HasSpinKeyValue>(linker, view)
}
