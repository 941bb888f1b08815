//! An embedded wasmtime 48 host for the `gcp-db-connector` project's tests,
//! demo and benchmarks.
//!
//! One [`Host`] owns one [`wasmtime::Engine`] and a [`Linker`] with every
//! WASI 0.2 interface plus `wasi:http`, and WASI 0.3 (`wasi:*@0.3.0`,
//! component-model async) beside them. It runs:
//!
//! - `wasi:cli/run` commands with [`Host::run_command`], capturing their
//!   output (see [`command`]);
//! - the connector component with [`Host::instantiate_connector`], calling its
//!   `gcp:db-connector/connector` exports directly (see [`connector`]);
//! - `wasi:http/proxy` components (`wasi:http/incoming-handler@0.2`) and
//!   WASI 0.3 `wasi:http/handler@0.3.0` ones (a Spin spin-sdk 7 app) behind
//!   an HTTP server with [`Host::serve`], a fresh instance per request like
//!   `wasmtime serve` (see [`serve`]).
//!
//! Every guest gets the same network policy ([`policy`]): TCP and HTTP to the
//! local machine only, no UDP. Each use can also give the guest the host's
//! [`SharedStore`] (`wasi:keyvalue`, see [`keyvalue`]), one store shared by
//! every instance, so data outlives the per-request instances of `serve`: the
//! in-memory [`KeyValueStore`] by default, or with [`Host::with_redis_store`]
//! a [`RedisStore`] that several host processes share ([`redis_store`]).
//!
//! [`compose`] plugs one component's exports into another's imports, as
//! `wac plug` does.
//!
//! Compiled components are cached on disk by wasmtime (so a test run after
//! the first does not pay for Cranelift again) and in memory per path.
//!
//! ```no_run
//! # async fn demo() -> wasmtime::Result<()> {
//! use gcp_db_host::{CommandOptions, Host};
//! let host = Host::new()?;
//! let out = host
//!     .run_command(
//!         "guest.wasm".as_ref(),
//!         &CommandOptions { args: vec!["hello".into()], ..Default::default() },
//!     )
//!     .await?;
//! assert!(out.success, "{}", out.stderr);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod command;
pub mod compose;
pub mod connector;
pub mod keyvalue;
pub mod kv_imports;
pub mod memory_store;
pub mod pgwire;
pub mod policy;
pub mod query;
pub mod redis_store;
pub mod serve;
pub mod shared_store;
pub mod spin_key_value;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{Cache, CacheConfig, Config, Engine, Store};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub use command::{CommandOptions, CommandOutput};
pub use connector::{ConnectorInstance, ConnectorOptions};
pub use keyvalue::KeyValueStore;
pub use redis_store::{RedisOptions, RedisStore};
pub use serve::{ServeOptions, Server};
pub use shared_store::SharedStore;

/// Runs WebAssembly components with the project's WASI policy.
///
/// Cheap to share: wrap it in an `Arc` or a `static` and use it from many
/// tasks. Each run or instantiation gets its own [`wasmtime::Store`]; the
/// [`SharedStore`] is the one thing they share, and only when a use enables
/// it.
pub struct Host {
    engine: Engine,
    /// WASI 0.2 and `wasi:http`.
    linker: Linker<State>,
    /// The same plus `wasi:keyvalue`, for uses that enable the store.
    linker_keyvalue: Linker<State>,
    /// What instances share: `memory`, unless a Redis store was given.
    keyvalue: SharedStore,
    /// The in-memory store, for [`Host::keyvalue_store`].
    memory: KeyValueStore,
    components: Mutex<HashMap<PathBuf, CachedComponent>>,
}

/// A compiled component and the file state it was compiled from, so a
/// rebuilt `.wasm` is noticed by a long-lived host.
struct CachedComponent {
    stamp: FileStamp,
    component: Component,
}

#[derive(PartialEq, Eq, Clone, Copy)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    fn of(path: &Path) -> wasmtime::Result<FileStamp> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(FileStamp {
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

impl Host {
    /// A host whose compiled code is cached on disk in [`default_cache_dir`].
    ///
    /// If that cache cannot be set up (no usable directory), the host still
    /// works, compiling every component from scratch, and says so on stderr.
    pub fn new() -> wasmtime::Result<Host> {
        match default_cache_dir() {
            Some(dir) => match Host::with_cache_dir(Some(dir.clone())) {
                Ok(host) => Ok(host),
                Err(err) => {
                    eprintln!(
                        "gcp-db-host: compilation cache at {} unavailable ({err:#}); continuing without it",
                        dir.display()
                    );
                    Host::with_cache_dir(None)
                }
            },
            None => Host::with_cache_dir(None),
        }
    }

    /// A host caching compiled code in `cache_dir` (made absolute and created
    /// if missing), or not caching on disk at all with `None`.
    pub fn with_cache_dir(cache_dir: Option<PathBuf>) -> wasmtime::Result<Host> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // WASI 0.3 guests (`wasmtime serve -W component-model-async=y`).
        config.wasm_component_model_async(true);
        if let Some(dir) = cache_dir {
            let dir = std::path::absolute(&dir)
                .with_context(|| format!("cache directory {}", dir.display()))?;
            let mut cache_config = CacheConfig::new();
            cache_config.with_directory(dir);
            config.cache(Some(Cache::new(cache_config)?));
        }
        let engine = Engine::new(&config)?;

        let mut linker = Linker::<State>::new(&engine);
        // All of WASI 0.2, not only what a component's WIT world names: the
        // Rust standard library of a guest may pull in more (stderr, exit…).
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        // And WASI 0.3 with its wasi:http (`-S p3=y -S cli=y`): a spin-sdk 7
        // app imports both, p3 wasi:http and the p2 interfaces of std.
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        // Two linkers rather than one with the store always present: a
        // component that imports wasi:keyvalue must not silently get a store
        // its caller did not ask to share.
        let mut linker_keyvalue = linker.clone();
        keyvalue::add_to_linker(&mut linker_keyvalue, |state: &mut State| {
            keyvalue::KeyValueView::new(state.keyvalue.as_ref(), &mut state.table)
        })?;
        // Spin's spin:key-value@3.0.0 (a spin-sdk 7 app's store) over the
        // same shared store, behind the same switch.
        spin_key_value::add_to_linker(&mut linker_keyvalue, |state: &mut State| {
            spin_key_value::SpinKeyValueView::new(state.keyvalue.as_ref(), &mut state.table)
        })?;

        let memory = KeyValueStore::default();
        Ok(Host {
            engine,
            linker,
            linker_keyvalue,
            keyvalue: SharedStore::Memory(memory.clone()),
            memory,
            components: Mutex::new(HashMap::new()),
        })
    }

    /// This host with `store` as the in-memory key-value store its instances
    /// share (e.g. one with other bucket names than the default ones).
    pub fn with_keyvalue_store(mut self, store: KeyValueStore) -> Host {
        self.keyvalue = SharedStore::Memory(store.clone());
        self.memory = store;
        self
    }

    /// This host with its instances sharing `store`, on a Redis server,
    /// instead of the in-memory store: several host processes given the same
    /// server and prefix share one store.
    pub fn with_redis_store(mut self, store: RedisStore) -> Host {
        self.keyvalue = SharedStore::Redis(store);
        self
    }

    /// The in-memory key-value store: the one every instance that enables a
    /// store shares, unless the host was given a Redis store
    /// ([`Host::with_redis_store`]). A handle to inspect or clear what guests
    /// stored.
    pub fn keyvalue_store(&self) -> &KeyValueStore {
        &self.memory
    }

    /// The store every instance that enables one shares, in memory or on
    /// Redis.
    pub fn shared_store(&self) -> &SharedStore {
        &self.keyvalue
    }

    /// The engine shared by every component this host runs.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The compiled component at `wasm`, compiled at most once per host for
    /// an unchanged file (and loaded from the on-disk cache when possible).
    pub fn component(&self, wasm: &Path) -> wasmtime::Result<Component> {
        let key = std::fs::canonicalize(wasm)
            .with_context(|| format!("component {} not found", wasm.display()))?;
        let stamp = FileStamp::of(&key)?;
        if let Some(cached) = self.lock_components().get(&key) {
            if cached.stamp == stamp {
                return Ok(cached.component.clone());
            }
        }
        // Compiled without holding the lock so other components can load in
        // parallel; two racing compiles of one file are merely wasted work.
        let component = Component::from_file(&self.engine, &key)
            .with_context(|| format!("cannot load component {}", wasm.display()))?;
        self.lock_components().insert(
            key,
            CachedComponent {
                stamp,
                component: component.clone(),
            },
        );
        Ok(component)
    }

    /// The import names of the component at `wasm`, e.g.
    /// `wasi:http/outgoing-handler@0.2.12`, in the component's order.
    pub fn imports(&self, wasm: &Path) -> wasmtime::Result<Vec<String>> {
        let component = self.component(wasm)?;
        Ok(component_imports(&self.engine, &component))
    }

    /// The export names of the component at `wasm`, e.g.
    /// `gcp:db-connector/connector@0.2.0`.
    pub fn exports(&self, wasm: &Path) -> wasmtime::Result<Vec<String>> {
        let component = self.component(wasm)?;
        Ok(component
            .component_type()
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect())
    }

    /// `component` linked against WASI, `wasi:http` and, with `keyvalue`, the
    /// shared store; a `wasi:keyvalue` import without it is a clear error
    /// ([`kv_imports::KeyValueImportError`]).
    pub(crate) fn instance_pre(
        &self,
        component: &Component,
        keyvalue: bool,
    ) -> wasmtime::Result<InstancePre<State>> {
        let imports = component_imports(&self.engine, component);
        kv_imports::check_imports(imports.iter().map(String::as_str), keyvalue)?;
        let linker = if keyvalue {
            &self.linker_keyvalue
        } else {
            &self.linker
        };
        linker.instantiate_pre(component)
    }

    /// A fresh store for one instance, holding the shared key-value store
    /// when `keyvalue` is on.
    pub(crate) fn new_store(&self, wasi: WasiCtx, keyvalue: bool) -> Store<State> {
        let store = keyvalue.then(|| self.keyvalue.clone());
        Store::new(&self.engine, State::new(wasi, store))
    }

    fn lock_components(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, CachedComponent>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (each update is a single insert), so a poisoned lock is still usable.
        self.components
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The import names of an already compiled component.
pub fn component_imports(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect()
}

/// Where [`Host::new`] caches compiled code:
/// `$CARGO_TARGET_DIR/wasmtime-cache` when `CARGO_TARGET_DIR` is set (so it
/// lives and dies with the build cache), else
/// `$HOME/.cache/gcp-db-connector/wasmtime-cache`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(target).join("wasmtime-cache"));
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty())?;
    Some(PathBuf::from(home).join(".cache/gcp-db-connector/wasmtime-cache"))
}

/// The data of every store this host creates.
pub(crate) struct State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: policy::LoopbackHttpHooks,
    /// The host's shared store, when this use enabled it.
    keyvalue: Option<SharedStore>,
}

impl State {
    fn new(wasi: WasiCtx, keyvalue: Option<SharedStore>) -> State {
        State {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: policy::LoopbackHttpHooks,
            keyvalue,
        }
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// A WASI context builder with the network policy, `env` and read-only
/// preopens `(host path, guest path)` applied.
fn wasi_builder(
    env: &[(String, String)],
    dirs: &[(PathBuf, String)],
) -> wasmtime::Result<WasiCtxBuilder> {
    let mut builder = WasiCtxBuilder::new();
    policy::apply_socket_policy(&mut builder);
    builder.envs(env);
    for (host_dir, guest_dir) in dirs {
        builder
            .preopened_dir(host_dir, guest_dir, FsPerms::ReadOnly)
            .with_context(|| format!("cannot preopen {}", host_dir.display()))?;
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use std::pin::Pin;

    /// The store data hands wasi:http the policy hook, not the default one.
    #[tokio::test]
    async fn store_state_uses_the_policy_hook() {
        let mut state = State::new(wasi_builder(&[], &[]).unwrap().build(), None);
        let body = Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        let request = http::Request::builder()
            .uri("https://sqladmin.googleapis.com/")
            .body(body)
            .unwrap();
        let fut = state
            .http()
            .hooks
            .send_request(request, None, Box::new(async { Ok(()) }));
        assert!(matches!(
            Pin::from(fut).await,
            Err(wasmtime_wasi_http::Error::HttpRequestDenied)
        ));
    }
}
