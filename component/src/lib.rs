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
use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

use exports::gcp::db_connector::connector as wit;

use gcp_db_connector::{
    Config, ConnectOptions, ConnectTimings, Connection, Connector, Credentials, Error, IpType,
    VerificationCheck,
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

struct Component;

export!(Component);

impl wit::Guest for Component {
    type Connector = ConnectorResource;
    type Connection = ConnectionResource;
}

/// A WIT constructor cannot fail, so a bad config is kept and reported by the
/// first call.
struct ConnectorResource(Result<Connector, Error>);

impl ConnectorResource {
    fn connector(&self) -> Result<&Connector, wit::Error> {
        self.0.as_ref().map_err(|e| to_wit_error(e.clone()))
    }
}

impl wit::GuestConnector for ConnectorResource {
    fn new(config: wit::Config) -> Self {
        Self(from_wit_config(config).and_then(Connector::new))
    }

    fn connect(
        &self,
        instance: String,
        options: wit::ConnectOptions,
    ) -> Result<wit::Connection, wit::Error> {
        let options = ConnectOptions {
            ip_type: options.ip_type.map(from_wit_ip_type),
            enable_iam_auth: options.enable_iam_auth,
        };
        let conn = self
            .connector()?
            .connect(&instance, &options)
            .map_err(to_wit_error)?;
        Ok(wit::Connection::new(ConnectionResource(RefCell::new(
            Some(conn),
        ))))
    }

    fn login_token(&self) -> Result<String, wit::Error> {
        self.connector()?.login_token().map_err(to_wit_error)
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
            ErrorKind::UnexpectedEof => {
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
        let mut buf = vec![0; max.min(MAX_READ) as usize];
        let n = self.with(|c| c.read(&mut buf))?;
        buf.truncate(n);
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

fn from_wit_config(c: wit::Config) -> Result<Config, Error> {
    let defaults = Config::default();
    let ms = |v: Option<u32>, d: Duration| v.map_or(d, |v| Duration::from_millis(v.into()));
    let store = match c.store_bucket {
        None => None,
        #[cfg(feature = "keyvalue")]
        Some(bucket) => Some(gcp_db_connector::open_wasi_keyvalue(&bucket)?),
        #[cfg(not(feature = "keyvalue"))]
        Some(_) => {
            return Err(Error::InvalidConfig(
                "store-bucket needs the wasi:keyvalue build of the component \
                 (gcp_db_connector_component_kv.wasm, world connector-component-kv)"
                    .into(),
            ))
        }
    };
    Ok(Config {
        credentials: c.credentials.map(|c| match c {
            wit::Credentials::AccessToken(t) => Credentials::AccessToken {
                api_token: t.api_token,
                login_token: t.login_token,
            },
            wit::Credentials::Json(j) => Credentials::Json(j),
            wit::Credentials::MetadataServer => Credentials::MetadataServer,
        }),
        ip_type: c.ip_type.map(from_wit_ip_type),
        enable_iam_auth: c.enable_iam_auth,
        admin_endpoint: c.admin_endpoint,
        alloydb_admin_endpoint: c.alloydb_admin_endpoint,
        token_endpoint: c.token_endpoint,
        metadata_host: c.metadata_host,
        quota_project: c.quota_project,
        user_agent: c.user_agent,
        rsa_private_key: c.rsa_private_key,
        store,
        store_private_key: c.store_private_key.unwrap_or(defaults.store_private_key),
        refresh_timeout: ms(c.refresh_timeout_ms, defaults.refresh_timeout),
        dial_timeout: ms(c.dial_timeout_ms, defaults.dial_timeout),
    })
}

fn to_wit_timings(t: ConnectTimings) -> wit::ConnectTimings {
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    wit::ConnectTimings {
        token_us: us(t.token),
        admin_api_us: us(t.admin_api),
        key_generation_us: us(t.key_generation),
        tcp_us: us(t.tcp),
        tls_us: us(t.tls),
        total_us: us(t.total),
        cached: t.cached,
        from_store: t.from_store,
    }
}

fn to_wit_error(e: Error) -> wit::Error {
    let message = e.to_string();
    match e {
        Error::InvalidInstanceName { .. } => wit::Error::InvalidInstanceName(message),
        Error::InvalidConfig(_) => wit::Error::InvalidConfig(message),
        Error::Credentials(_) => wit::Error::Credentials(message),
        Error::Http(_) => wit::Error::Http(message),
        Error::AdminApi(a) => wit::Error::AdminApi(wit::ApiError {
            status: a.status,
            code: a.code,
            message: a.message,
        }),
        Error::QuotaExceeded(_) => wit::Error::QuotaExceeded(message),
        Error::InstanceMetadata(_) => wit::Error::InstanceMetadata(message),
        Error::RegionMismatch { .. } => wit::Error::RegionMismatch(message),
        Error::Unsupported(_) => wit::Error::Unsupported(message),
        Error::IpTypeNotAvailable { .. } => wit::Error::IpTypeNotAvailable(message),
        Error::RateLimited { .. } => wit::Error::RateLimited(message),
        Error::Dial(_) => wit::Error::Dial(message),
        Error::ServerVerification { check, message } => {
            wit::Error::ServerVerification(wit::VerificationError {
                check: match check {
                    VerificationCheck::Chain => wit::VerificationCheck::Chain,
                    VerificationCheck::Expired => wit::VerificationCheck::Expired,
                    VerificationCheck::NotYetValid => wit::VerificationCheck::NotYetValid,
                    VerificationCheck::Identity => wit::VerificationCheck::Identity,
                    VerificationCheck::ProtocolVersion => wit::VerificationCheck::ProtocolVersion,
                    VerificationCheck::ClientAuth => wit::VerificationCheck::ClientAuth,
                    _ => wit::VerificationCheck::Other,
                },
                message,
            })
        }
        Error::Tls(_) => wit::Error::Tls(message),
        Error::MetadataExchange(_) => wit::Error::MetadataExchange(message),
        Error::Timeout(_) => wit::Error::Timeout(message),
        Error::Io(_) => wit::Error::Io(message),
        Error::Closed => wit::Error::Closed,
        // `Error` is non-exhaustive; a variant added later keeps its message
        // until it gets a WIT case of its own.
        _ => wit::Error::Io(message),
    }
}
