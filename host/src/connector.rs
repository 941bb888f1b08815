//! Calling the connector component's `gcp:db-connector/connector` exports
//! directly, the way a serverless host would: one fresh store and instance per
//! [`Host::instantiate_connector`]. The `connector-component-kv` build keeps
//! its certificate cache in `wasi:keyvalue`; instantiate it with
//! [`Host::instantiate_connector_with`] and [`ConnectorOptions::keyvalue`] so
//! successive instances share the host's store.
//!
//! ```no_run
//! # async fn demo() -> wasmtime::Result<()> {
//! use gcp_db_host::connector::{Config, ConnectOptions, Credentials, AccessTokens};
//! let host = gcp_db_host::Host::new()?;
//! let mut inst = host
//!     .instantiate_connector("gcp_db_connector.wasm".as_ref(), vec![], vec![])
//!     .await?;
//! let connector = inst
//!     .new_connector(Config {
//!         credentials: Some(Credentials::AccessToken(AccessTokens {
//!             api_token: "token".into(),
//!             login_token: None,
//!         })),
//!         admin_endpoint: Some("http://127.0.0.1:8080".into()),
//!         ..Default::default()
//!     })
//!     .await?;
//! let conn = inst
//!     .connect(connector, "p:r:i", ConnectOptions::default())
//!     .await??;
//! inst.write(conn, b"hello").await??;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use wasmtime::Store;

use crate::{wasi_builder, Host, State};

#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "gcp:db-connector/connector-component",
        exports: { default: async },
        // The component's WASI imports are the real implementations from
        // wasmtime-wasi and wasmtime-wasi-http, linked by `Host`; nothing is
        // generated for them here.
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:random": wasmtime_wasi::p2::bindings::random,
            "wasi:cli": wasmtime_wasi::p2::bindings::cli,
            "wasi:filesystem": wasmtime_wasi::p2::bindings::filesystem,
            "wasi:sockets": wasmtime_wasi::p2::bindings::sockets,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        },
        require_store_data_send: true,
    });
}

/// The handle type of `connector` and `connection` resources.
pub use wasmtime::component::ResourceAny;

/// The bindgen'd world: `ConnectorComponent` for callers that need more than
/// [`ConnectorInstance`] offers.
pub use bindings::{ConnectorComponent, ConnectorComponentPre};

/// The types of the `gcp:db-connector/connector` interface, as generated from
/// `wit/connector.wit`.
pub use bindings::exports::gcp::db_connector::connector::{
    AccessTokens, ApiError, Config, ConnectOptions, ConnectTimings, Credentials, Error,
    Impersonation, IpType, VerificationCheck, VerificationError,
};

/// Defaults matching the WIT's documented ones (all optional fields unset,
/// IAM authentication off), for `..Default::default()` in tests.
impl Default for Config {
    fn default() -> Config {
        Config {
            credentials: None,
            impersonation: None,
            universe_domain: None,
            ip_type: None,
            enable_iam_auth: false,
            admin_endpoint: None,
            alloydb_admin_endpoint: None,
            token_endpoint: None,
            iam_credentials_endpoint: None,
            metadata_host: None,
            quota_project: None,
            user_agent: None,
            rsa_private_key: None,
            store_bucket: None,
            store_dir: None,
            store_private_key: None,
            store_secret: None,
            refresh_timeout_ms: None,
            dial_timeout_ms: None,
            dns_resolver: None,
            failover_period_ms: None,
        }
    }
}

/// No per-connect overrides.
impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            ip_type: None,
            enable_iam_auth: None,
        }
    }
}

/// Environment variable naming the connector component to use, overriding
/// the build output [`find_component`] looks for.
pub const COMPONENT_ENV: &str = "GCP_DB_CONNECTOR_WASM";

/// Environment variable naming the `connector-component-kv` build, overriding
/// the build output [`find_component_kv`] looks for.
pub const COMPONENT_KV_ENV: &str = "GCP_DB_CONNECTOR_KV_WASM";

/// Where the connector component is: `$GCP_DB_CONNECTOR_WASM` if set (even if
/// missing, so a typo is not silently replaced), else the first existing
/// build in `$CARGO_TARGET_DIR` (or the workspace's `target/`) under
/// `wasm32-wasip2/wasm/` (the project's wasm profile) or
/// `wasm32-wasip2/release/`, as `gcp_db_connector_component.wasm` (the
/// `component/` crate).
pub fn find_component() -> Option<PathBuf> {
    find_build(COMPONENT_ENV, "gcp_db_connector_component.wasm")
}

/// [`find_component`] for the build with the `wasi:keyvalue` cache (world
/// `connector-component-kv`): `$GCP_DB_CONNECTOR_KV_WASM`, else
/// `gcp_db_connector_component_kv.wasm` in the same places.
pub fn find_component_kv() -> Option<PathBuf> {
    find_build(COMPONENT_KV_ENV, "gcp_db_connector_component_kv.wasm")
}

fn find_build(env: &str, file_name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        return path.exists().then_some(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    ["wasm", "release"]
        .iter()
        .map(|profile| target.join("wasm32-wasip2").join(profile).join(file_name))
        .find(|path| path.exists())
}

/// How to instantiate the connector component.
#[derive(Debug, Clone, Default)]
pub struct ConnectorOptions {
    /// Environment variables, the only ones the guest sees.
    pub env: Vec<(String, String)>,
    /// Directories preopened read-only: `(host path, guest path)`, e.g. for
    /// a credentials file.
    pub dirs: Vec<(PathBuf, String)>,
    /// Link the host's [`SharedStore`](crate::SharedStore): needed
    /// by the `connector-component-kv` build, which refuses to instantiate
    /// without it; the plain build ignores it.
    pub keyvalue: bool,
}

/// One instance of the connector component in its own store.
///
/// Resources (`connector`, `connection`) are handed out as [`ResourceAny`]
/// and belong to this instance only. Drop them with
/// [`ConnectorInstance::drop_resource`] to run the guest's destructor; they
/// are otherwise freed with the instance.
pub struct ConnectorInstance {
    store: Store<State>,
    bindings: ConnectorComponent,
}

impl Host {
    /// Instantiates the connector component at `wasm` in a fresh store, with
    /// exactly the environment variables `env` and the read-only preopened
    /// directories `dirs` (`(host path, guest path)`), e.g. for a credentials
    /// file. The guest's stdout and stderr are the host's.
    ///
    /// Without the shared key-value store; see
    /// [`Host::instantiate_connector_with`].
    pub async fn instantiate_connector(
        &self,
        wasm: &Path,
        env: Vec<(String, String)>,
        dirs: Vec<(PathBuf, String)>,
    ) -> wasmtime::Result<ConnectorInstance> {
        let opts = ConnectorOptions {
            env,
            dirs,
            keyvalue: false,
        };
        self.instantiate_connector_with(wasm, &opts).await
    }

    /// Instantiates the connector component at `wasm` in a fresh store as
    /// `opts` says: with [`ConnectorOptions::keyvalue`], the instance shares
    /// the host's [`SharedStore`](crate::SharedStore) with every other
    /// instance that enables it, as per-request instances on a serverless
    /// host do.
    pub async fn instantiate_connector_with(
        &self,
        wasm: &Path,
        opts: &ConnectorOptions,
    ) -> wasmtime::Result<ConnectorInstance> {
        let component = self.component(wasm)?;
        let pre = ConnectorComponentPre::new(self.instance_pre(&component, opts.keyvalue)?)?;
        let mut builder = wasi_builder(&opts.env, &opts.dirs)?;
        builder.inherit_stdout().inherit_stderr();
        let mut store = self.new_store(builder.build(), opts.keyvalue);
        let bindings = pre.instantiate_async(&mut store).await?;
        Ok(ConnectorInstance { store, bindings })
    }
}

impl ConnectorInstance {
    /// `connector` constructor: a connector with `config`.
    pub async fn new_connector(&mut self, config: Config) -> wasmtime::Result<ResourceAny> {
        let api = self.bindings.gcp_db_connector_connector();
        api.connector()
            .call_constructor(&mut self.store, &config)
            .await
    }

    /// `connector.connect`: a connection to the Cloud SQL instance named
    /// `instance` (`project:region:instance`).
    pub async fn connect(
        &mut self,
        connector: ResourceAny,
        instance: &str,
        options: ConnectOptions,
    ) -> wasmtime::Result<Result<ResourceAny, Error>> {
        let api = self.bindings.gcp_db_connector_connector();
        api.connector()
            .call_connect(&mut self.store, connector, instance, options)
            .await
    }

    /// `connector.login-token`: an OAuth2 token for manual IAM database
    /// authentication.
    pub async fn login_token(
        &mut self,
        connector: ResourceAny,
    ) -> wasmtime::Result<Result<String, Error>> {
        let api = self.bindings.gcp_db_connector_connector();
        api.connector()
            .call_login_token(&mut self.store, connector)
            .await
    }

    /// `connector.warmup`: the instance's connection info made ready without
    /// a dial.
    pub async fn warmup(
        &mut self,
        connector: ResourceAny,
        instance: &str,
        options: ConnectOptions,
    ) -> wasmtime::Result<Result<(), Error>> {
        let api = self.bindings.gcp_db_connector_connector();
        api.connector()
            .call_warmup(&mut self.store, connector, instance, options)
            .await
    }

    /// `connection.read`: up to `max` bytes; empty when the server closed.
    pub async fn read(
        &mut self,
        connection: ResourceAny,
        max: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        let api = self.bindings.gcp_db_connector_connector();
        api.connection()
            .call_read(&mut self.store, connection, max)
            .await
    }

    /// `connection.write`: all of `data`.
    pub async fn write(
        &mut self,
        connection: ResourceAny,
        data: &[u8],
    ) -> wasmtime::Result<Result<(), Error>> {
        let api = self.bindings.gcp_db_connector_connector();
        api.connection()
            .call_write(&mut self.store, connection, data)
            .await
    }

    /// `connection.flush`.
    pub async fn flush(&mut self, connection: ResourceAny) -> wasmtime::Result<Result<(), Error>> {
        let api = self.bindings.gcp_db_connector_connector();
        api.connection()
            .call_flush(&mut self.store, connection)
            .await
    }

    /// `connection.shutdown`: TLS close_notify, then close.
    pub async fn shutdown(
        &mut self,
        connection: ResourceAny,
    ) -> wasmtime::Result<Result<(), Error>> {
        let api = self.bindings.gcp_db_connector_connector();
        api.connection()
            .call_shutdown(&mut self.store, connection)
            .await
    }

    /// `connection.timings`: what the connect cost, step by step.
    pub async fn timings(&mut self, connection: ResourceAny) -> wasmtime::Result<ConnectTimings> {
        let api = self.bindings.gcp_db_connector_connector();
        api.connection()
            .call_timings(&mut self.store, connection)
            .await
    }

    /// Drops a `connector` or `connection` resource, running the guest's
    /// destructor (a connection's drop closes its socket).
    pub async fn drop_resource(&mut self, resource: ResourceAny) -> wasmtime::Result<()> {
        resource.resource_drop_async(&mut self.store).await
    }
}
