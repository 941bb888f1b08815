//! The gcp-db-connector component: the WIT export `gcp:db-connector/connector`
//! over the library's public Rust API. Only type conversions live here, so the
//! component and the library are the same code.
//!
//! A separate crate, so that Rust guests using the library neither export the
//! interface themselves nor overwrite this artifact when they build.
//!
//! With the `keyvalue` feature it is the world `connector-component-kv`: the
//! library's `wasi-keyvalue` feature adds the `wasi:keyvalue` imports, and
//! connection info is shared across instances through the bucket named by
//! `store-bucket`.

// Only a wasm32-wasip2 build is a component; natively this crate is empty.
#![cfg(target_os = "wasi")]

use std::cell::RefCell;
use std::io::{self, Write};
use std::time::Duration;

use exports::gcp::db_connector::connector as wit;

use gcp_db_connector::{
    Config, ConnectOptions, ConnectTimings, Connection, Connector, Credentials, Error, ErrorKind,
    IpType, VerificationCheck,
};

wit_bindgen::generate!({
    world: "connector-component",
    path: "../wit",
    // The WASI imports are the wasip2 crate's; this crate only adds the export.
    with: {
        "wasi:http/types@0.2.12": wasip2::http::types,
        "wasi:http/outgoing-handler@0.2.12": wasip2::http::outgoing_handler,
        "wasi:io/error@0.2.12": wasip2::io::error,
        "wasi:io/poll@0.2.12": wasip2::io::poll,
        "wasi:io/streams@0.2.12": wasip2::io::streams,
        "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
        "wasi:clocks/wall-clock@0.2.12": wasip2::clocks::wall_clock,
        "wasi:sockets/network@0.2.12": wasip2::sockets::network,
        "wasi:sockets/tcp@0.2.12": wasip2::sockets::tcp,
        "wasi:sockets/tcp-create-socket@0.2.12": wasip2::sockets::tcp_create_socket,
        "wasi:sockets/ip-name-lookup@0.2.12": wasip2::sockets::ip_name_lookup,
        "wasi:random/random@0.2.12": wasip2::random::random,
        "wasi:cli/environment@0.2.12": wasip2::cli::environment,
        "wasi:filesystem/types@0.2.12": wasip2::filesystem::types,
        "wasi:filesystem/preopens@0.2.12": wasip2::filesystem::preopens,
    },
});

/// Largest read handed back in one call.
const MAX_READ: u32 = 1 << 20;
/// What a read reserves before it knows how much has arrived: a few TLS
/// records' worth.
const FIRST_READ_CAPACITY: usize = 64 * 1024;

struct Component;

export!(Component);

impl wit::Guest for Component {
    type Connector = ConnectorResource;
    type Connection = ConnectionResource;
}

/// A WIT constructor cannot fail, so a bad config is kept and reported by the
/// first call.
struct ConnectorResource(Result<Connector, wit::Error>);

impl ConnectorResource {
    fn connector(&self) -> Result<&Connector, wit::Error> {
        self.0.as_ref().map_err(Clone::clone)
    }
}

impl wit::GuestConnector for ConnectorResource {
    fn new(config: wit::Config) -> Self {
        Self(from_wit_config(config).and_then(|c| Connector::new(c).map_err(to_wit_error)))
    }

    fn connect(
        &self,
        instance: String,
        options: wit::ConnectOptions,
    ) -> Result<wit::Connection, wit::Error> {
        let conn = self
            .connector()?
            .connect(&instance, &from_wit_options(options))
            .map_err(to_wit_error)?;
        Ok(wit::Connection::new(ConnectionResource(RefCell::new(
            Some(conn),
        ))))
    }

    fn login_token(&self) -> Result<String, wit::Error> {
        self.connector()?.login_token().map_err(to_wit_error)
    }

    fn warmup(&self, instance: String, options: wit::ConnectOptions) -> Result<(), wit::Error> {
        self.connector()?
            .warmup(&instance, &from_wit_options(options))
            .map_err(to_wit_error)
    }
}

/// `None` once shut down.
struct ConnectionResource(RefCell<Option<Connection>>);

impl ConnectionResource {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> std::io::Result<T>,
    ) -> Result<T, wit::Error> {
        let mut slot = self.0.borrow_mut();
        let conn = slot.as_mut().ok_or(wit::Error::Closed)?;
        f(conn).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                wit::Error::Io("the server closed the connection without TLS close_notify".into())
            }
            _ => wit::Error::Io(e.to_string()),
        })
    }
}

impl wit::GuestConnection for ConnectionResource {
    fn read(&self, max: u32) -> Result<Vec<u8>, wit::Error> {
        if max == 0 {
            return Err(wit::Error::InvalidConfig(
                "read: max must be at least 1".into(),
            ));
        }
        let max = max.min(MAX_READ) as usize;
        let mut buf = Vec::with_capacity(max.min(FIRST_READ_CAPACITY));
        self.with(|c| c.read_available(&mut buf, max))?;
        Ok(buf)
    }

    fn write(&self, data: Vec<u8>) -> Result<(), wit::Error> {
        self.with(|c| c.write_all(&data))
    }

    fn flush(&self) -> Result<(), wit::Error> {
        self.with(Connection::flush)
    }

    fn shutdown(&self) -> Result<(), wit::Error> {
        let conn = self.0.borrow_mut().take();
        match conn {
            Some(mut c) => c.shutdown().map_err(|e| wit::Error::Io(e.to_string())),
            None => Ok(()),
        }
    }

    fn timings(&self) -> wit::ConnectTimings {
        let t = self
            .0
            .borrow()
            .as_ref()
            .map(Connection::timings)
            .unwrap_or_default();
        to_wit_timings(t)
    }
}

fn from_wit_ip_type(t: wit::IpType) -> IpType {
    match t {
        wit::IpType::Public => IpType::Public,
        wit::IpType::Private => IpType::Private,
        wit::IpType::Psc => IpType::Psc,
    }
}

fn from_wit_options(options: wit::ConnectOptions) -> ConnectOptions {
    let mut opts = ConnectOptions::default();
    if let Some(t) = options.ip_type {
        opts = opts.with_ip_type(from_wit_ip_type(t));
    }
    if let Some(iam) = options.enable_iam_auth {
        opts = opts.with_iam_auth(iam);
    }
    opts
}

fn from_wit_config(c: wit::Config) -> Result<Config, wit::Error> {
    let ms = |v: Option<u32>, d: Duration| v.map_or(d, |v| Duration::from_millis(v.into()));
    let store =
        match (c.store_bucket, c.store_dir) {
            (Some(_), Some(_)) => return Err(wit::Error::InvalidConfig(
                "invalid connector config: store-bucket and store-dir name two stores; give one"
                    .into(),
            )),
            (None, None) => None,
            (None, Some(dir)) => Some(
                gcp_db_connector::DirectoryStore::open(&dir)
                    .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn gcp_db_connector::Store>)
                    .map_err(to_wit_error)?,
            ),
            #[cfg(feature = "keyvalue")]
            (Some(bucket), None) => {
                Some(gcp_db_connector::open_wasi_keyvalue(&bucket).map_err(to_wit_error)?)
            }
            #[cfg(not(feature = "keyvalue"))]
            (Some(_), None) => {
                return Err(wit::Error::InvalidConfig(
                    "invalid connector config: store-bucket needs the wasi:keyvalue build of the \
                 component (gcp_db_connector_component_kv.wasm, world connector-component-kv)"
                        .into(),
                ))
            }
        };
    let mut config = Config::default();
    config.credentials = c.credentials.map(|c| match c {
        wit::Credentials::AccessToken(t) => Credentials::AccessToken {
            api_token: t.api_token,
            login_token: t.login_token,
        },
        wit::Credentials::Json(j) => Credentials::Json(j),
        wit::Credentials::MetadataServer => Credentials::MetadataServer,
    });
    config.impersonation = c.impersonation.map(|i| {
        gcp_db_connector::ServiceAccountImpersonation::new(i.target_principal)
            .with_delegates(i.delegates)
    });
    config.universe_domain = c.universe_domain;
    config.iam_credentials_endpoint = c.iam_credentials_endpoint;
    config.ip_type = c.ip_type.map(from_wit_ip_type);
    config.enable_iam_auth = c.enable_iam_auth;
    config.admin_endpoint = c.admin_endpoint;
    config.alloydb_admin_endpoint = c.alloydb_admin_endpoint;
    config.token_endpoint = c.token_endpoint;
    config.metadata_host = c.metadata_host;
    config.quota_project = c.quota_project;
    config.user_agent = c.user_agent;
    config.rsa_private_key = c.rsa_private_key;
    config.store = store;
    config.store_private_key = c.store_private_key.unwrap_or(config.store_private_key);
    config.store_secret = c.store_secret;
    config.refresh_timeout = ms(c.refresh_timeout_ms, config.refresh_timeout);
    config.dial_timeout = ms(c.dial_timeout_ms, config.dial_timeout);
    config.dns_resolver = c.dns_resolver;
    config.failover_period = ms(c.failover_period_ms, config.failover_period);
    Ok(config)
}

fn to_wit_timings(t: ConnectTimings) -> wit::ConnectTimings {
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    wit::ConnectTimings {
        token_us: us(t.token),
        admin_api_us: us(t.admin_api),
        key_generation_us: us(t.key_generation),
        name_resolution_us: us(t.name_resolution),
        tcp_us: us(t.tcp),
        tls_us: us(t.tls),
        total_us: us(t.total),
        cached: t.cached,
        from_store: t.from_store,
    }
}

fn to_wit_error(e: Error) -> wit::Error {
    let message = e.to_string();
    match e.kind() {
        ErrorKind::InvalidInstanceName => wit::Error::InvalidInstanceName(message),
        ErrorKind::InvalidConfig => wit::Error::InvalidConfig(message),
        ErrorKind::Credentials => wit::Error::Credentials(message),
        ErrorKind::Http => wit::Error::Http(message),
        ErrorKind::AdminApi => match e.api_error() {
            Some(a) => wit::Error::AdminApi(wit::ApiError {
                status: a.status,
                code: a.code.clone(),
                message: a.message.clone(),
            }),
            None => wit::Error::Http(message),
        },
        ErrorKind::QuotaExceeded => wit::Error::QuotaExceeded(message),
        ErrorKind::InstanceMetadata => wit::Error::InstanceMetadata(message),
        ErrorKind::RegionMismatch => wit::Error::RegionMismatch(message),
        ErrorKind::Unsupported => wit::Error::Unsupported(message),
        ErrorKind::IpTypeNotAvailable => wit::Error::IpTypeNotAvailable(message),
        ErrorKind::RateLimited => wit::Error::RateLimited(message),
        ErrorKind::Dial => wit::Error::Dial(message),
        ErrorKind::ServerVerification => wit::Error::ServerVerification(wit::VerificationError {
            check: match e.verification_check() {
                Some(VerificationCheck::Chain) => wit::VerificationCheck::Chain,
                Some(VerificationCheck::Expired) => wit::VerificationCheck::Expired,
                Some(VerificationCheck::NotYetValid) => wit::VerificationCheck::NotYetValid,
                Some(VerificationCheck::Identity) => wit::VerificationCheck::Identity,
                Some(VerificationCheck::ProtocolVersion) => wit::VerificationCheck::ProtocolVersion,
                Some(VerificationCheck::ClientAuth) => wit::VerificationCheck::ClientAuth,
                _ => wit::VerificationCheck::Other,
            },
            message: e.message().to_string(),
        }),
        ErrorKind::Tls => wit::Error::Tls(message),
        ErrorKind::MetadataExchange => wit::Error::MetadataExchange(message),
        ErrorKind::Timeout => wit::Error::Timeout(message),
        ErrorKind::Io => wit::Error::Io(message),
        ErrorKind::Closed => wit::Error::Closed,
        ErrorKind::Dns => wit::Error::Dns(message),
        // `ErrorKind` is non-exhaustive; a kind added later keeps its message
        // until it gets a WIT case of its own.
        _ => wit::Error::Io(message),
    }
}
