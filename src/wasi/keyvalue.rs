//! A `wasi:keyvalue` bucket as the cross-request [`Store`]: Spin's key-value
//! stores, and any host implementing `wasi:keyvalue@0.2.0-draft` (`store` and
//! `atomics`; without atomics refreshes are not single-flight across
//! instances, see `cache::store`).

use std::sync::Arc;

use crate::error::Error;
use crate::store::Store;

// Generated import glue: the one place the crate lets unsafe code in.
#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        inline: "
            package gcp:db-connector-keyvalue;
            world keyvalue {
                import wasi:keyvalue/store@0.2.0-draft;
                import wasi:keyvalue/atomics@0.2.0-draft;
            }
        ",
        path: "wit/deps/keyvalue",
        world: "gcp:db-connector-keyvalue/keyvalue",
        generate_all,
    });
}

use bindings::wasi::keyvalue::{atomics, store};

/// An open bucket.
struct Bucket(store::Bucket);

/// Opens the `wasi:keyvalue` bucket `identifier` (Spin: a store listed in
/// the component's `key_value_stores`) as the connector's [`Store`].
pub fn open_wasi_keyvalue(identifier: &str) -> Result<Arc<dyn Store>, Error> {
    store::open(identifier)
        .map(|b| Arc::new(Bucket(b)) as Arc<dyn Store>)
        .map_err(|e| {
            Error::invalid_config(format!(
                "cannot open the wasi:keyvalue bucket {identifier:?}: {}; does the host grant it?",
                describe(e)
            ))
        })
}

fn describe(e: store::Error) -> String {
    match e {
        store::Error::NoSuchStore => "no such store".into(),
        store::Error::AccessDenied => "access denied".into(),
        store::Error::Other(m) => m,
    }
}

impl Store for Bucket {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.0.get(key).map_err(describe)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.0.set(key, value).map_err(describe)
    }

    fn delete(&self, key: &str) -> Result<(), String> {
        self.0.delete(key).map_err(describe)
    }

    fn increment(&self, key: &str, delta: u64) -> Result<Option<u64>, String> {
        atomics::increment(&self.0, key, delta)
            .map(Some)
            .map_err(describe)
    }
}
