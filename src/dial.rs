//! The connect sequence, top to bottom: parse the name, take connection info
//! from the lazy cache (or refresh it from the instance's service), pick the
//! address, open TCP to the server-side proxy (3307 Cloud SQL, 5433 AlloyDB),
//! run the TLS 1.3 handshake and the metadata exchange, hand back the
//! connection. A failed dial, handshake or exchange marks the cache entry
//! stale so the next connect refreshes.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustls::{ClientConfig, ClientConnection};

use crate::alloydb::admin::DEFAULT_ALLOYDB_ADMIN_ENDPOINT;
use crate::cache::{Cache, CacheKey, Expiring};
use crate::cloudsql::admin::DEFAULT_ADMIN_ENDPOINT;
use crate::connection_info::{ConnectionInfo, MdxKind, Target};
use crate::credentials::{Endpoints, Scope, TokenSource};
use crate::google_api::ApiClient;
use crate::key::{ClientKey, KeySlot};
use crate::mdx::{self, Exchange};
use crate::refresh::Refresher;
use crate::socket::Socket;
use crate::store::{Found, SharedCache};
use crate::{
    alloydb, cloudsql, tls, Config, ConnectOptions, ConnectTimings, Connection, Error, Instance,
    IpType,
};

/// The Cloud SQL server-side proxy's port.
pub const CLOUD_SQL_PORT: u16 = 3307;
/// The AlloyDB server-side proxy's port.
pub const ALLOYDB_PORT: u16 = 5433;

/// The connector's user agent, before any caller-supplied suffix.
const USER_AGENT: &str = concat!("gcp-db-connector/", env!("CARGO_PKG_VERSION"));

/// Connection info with the TLS config built from it, as cached.
pub(crate) struct Prepared {
    pub info: ConnectionInfo,
    pub tls: tls::TlsConfig,
    /// Loaded from the host store rather than refreshed.
    pub from_store: bool,
}

impl Expiring for Prepared {
    fn expiry(&self) -> SystemTime {
        self.info.expiry
    }
}

/// Connects to Cloud SQL and AlloyDB instances. Make one per process (or per
/// request on hosts that give each request a fresh instance) and reuse it: it
/// holds the credentials, the RSA key and the certificate cache.
pub struct Connector {
    sql_admin: cloudsql::admin::AdminClient,
    alloydb_admin: alloydb::admin::AdminClient,
    user_agent: String,
    tokens: TokenSource,
    key: KeySlot,
    cache: Cache<Prepared>,
    shared: Option<SharedCache>,
    config: Config,
}

/// A connect resolved up to the point of dialling.
pub(crate) struct Plan {
    pub key: CacheKey,
    pub target: Target,
    pub port: u16,
    pub tls: Arc<ClientConfig>,
    /// The metadata exchange to run after the handshake.
    pub mdx: MdxKind,
    pub timings: ConnectTimings,
    pub started: Instant,
}

impl Connector {
    /// Checks the config; nothing is fetched or generated until the first
    /// connect.
    pub fn new(config: Config) -> Result<Self, Error> {
        let admin_endpoint = config
            .admin_endpoint
            .as_deref()
            .unwrap_or(DEFAULT_ADMIN_ENDPOINT);
        let alloydb_endpoint = config
            .alloydb_admin_endpoint
            .as_deref()
            .unwrap_or(DEFAULT_ALLOYDB_ADMIN_ENDPOINT);
        for (what, url) in [
            ("admin-endpoint", Some(admin_endpoint)),
            ("alloydb-admin-endpoint", Some(alloydb_endpoint)),
            ("token-endpoint", config.token_endpoint.as_deref()),
        ] {
            if let Some(url) = url {
                check_url(what, url)?;
            }
        }
        for (what, t) in [
            ("refresh-timeout", config.refresh_timeout),
            ("dial-timeout", config.dial_timeout),
        ] {
            if t.is_zero() {
                return Err(Error::InvalidConfig(format!("{what} must be more than 0")));
            }
        }
        let user_agent = match &config.user_agent {
            Some(extra) if !extra.trim().is_empty() => format!("{USER_AGENT} {}", extra.trim()),
            _ => USER_AGENT.to_string(),
        };
        let api =
            |base: &str| ApiClient::new(base, user_agent.clone(), config.quota_project.clone());
        Ok(Self {
            sql_admin: cloudsql::admin::AdminClient(api(admin_endpoint)),
            alloydb_admin: alloydb::admin::AdminClient(api(alloydb_endpoint)),
            user_agent: user_agent.clone(),
            tokens: TokenSource::new(
                config.credentials.clone(),
                Endpoints {
                    token_endpoint: config.token_endpoint.clone(),
                    metadata_host: config.metadata_host.clone(),
                },
            ),
            key: match &config.rsa_private_key {
                Some(pem) => KeySlot::with_key(ClientKey::from_pem(pem)?),
                None => KeySlot::default(),
            },
            cache: Cache::new(),
            shared: config
                .store
                .clone()
                .map(|s| SharedCache::new(s, config.store_private_key)),
            config,
        })
    }

    /// Connects to the Cloud SQL instance `project:region:instance` or the
    /// AlloyDB instance `projects/P/locations/R/clusters/C/instances/I` and
    /// returns the encrypted connection, ready for the database protocol.
    pub fn connect(&self, instance: &str, options: &ConnectOptions) -> Result<Connection, Error> {
        let plan = self.plan(instance, options)?;
        let from_store = plan.timings.from_store;
        match self.dial(plan) {
            // Another instance's entry may be out of date (the instance moved,
            // its CA rotated): it is forgotten now, so one more try refreshes.
            Err(_) if from_store => self.dial(self.plan(instance, options)?),
            result => result,
        }
    }

    /// TCP, TLS and the exchange for `plan`; a failure marks its entry stale.
    fn dial(&self, mut plan: Plan) -> Result<Connection, Error> {
        let dial_deadline = Instant::now() + self.config.dial_timeout;

        let tcp_started = Instant::now();
        let mut tcp = self
            .dial_tcp(&plan.target, plan.port, dial_deadline)
            .map(Socket)
            .inspect_err(|_| self.invalidate(&plan.key))?;
        plan.timings.tcp = tcp_started.elapsed();

        let tls_started = Instant::now();
        let exchange = Exchange::for_kind(&plan.mdx, &self.user_agent);
        let conn = handshake(
            &plan.tls,
            &plan.target,
            &mut tcp,
            dial_deadline,
            exchange.as_ref(),
        )
        .inspect_err(|_| self.invalidate(&plan.key))?;
        plan.timings.tls = tls_started.elapsed();
        plan.timings.total = plan.started.elapsed();
        Ok(Connection::new(conn, tcp, plan.timings))
    }

    /// An OAuth2 token with the sqlservice.login scope, to use as the database
    /// password for manual IAM database authentication to Cloud SQL.
    pub fn login_token(&self) -> Result<String, Error> {
        let deadline = Instant::now() + self.config.refresh_timeout;
        Ok(self
            .tokens
            .token(Scope::Login, deadline)?
            .secret
            .expose()
            .to_string())
    }

    /// Everything before the dial: name, cache or refresh, address.
    pub(crate) fn plan(&self, instance: &str, options: &ConnectOptions) -> Result<Plan, Error> {
        let started = Instant::now();
        let name = Instance::parse(instance)?;
        let iam = options
            .enable_iam_auth
            .unwrap_or(self.config.enable_iam_auth);
        // Each service's own default: Cloud SQL public, AlloyDB private.
        let ip_type = options
            .ip_type
            .or(self.config.ip_type)
            .unwrap_or(match name {
                Instance::CloudSql(_) => IpType::Public,
                Instance::AlloyDb(_) => IpType::Private,
            });
        let key = CacheKey { name, iam };
        let deadline = started + self.config.refresh_timeout;

        let mut timings = ConnectTimings::default();
        let (prepared, cached) = self.cache.get_or_refresh(&key, deadline, || {
            let mut refresh = || self.refresh(&key, deadline, &mut timings);
            let found = match &self.shared {
                Some(shared) => shared.get_or_refresh(&key, &self.key, deadline, refresh)?,
                None => refresh().map(|(info, key)| Found {
                    info,
                    key,
                    from_store: false,
                })?,
            };
            let tls = tls::TlsConfig::new(&found.info, &found.key, &key.name)?;
            Ok(Prepared {
                info: found.info,
                tls,
                from_store: found.from_store,
            })
        })?;
        timings.from_store = !cached && prepared.from_store;
        timings.cached = cached || prepared.from_store;
        let target = prepared.info.target(ip_type, &key.name)?;
        Ok(Plan {
            target,
            port: prepared.info.port,
            tls: prepared.tls.for_connection()?,
            mdx: prepared.info.mdx.clone(),
            key,
            timings,
            started,
        })
    }

    /// A refresh by the instance's own service.
    fn refresh(
        &self,
        key: &CacheKey,
        deadline: Instant,
        timings: &mut ConnectTimings,
    ) -> Result<(ConnectionInfo, Arc<ClientKey>), Error> {
        match &key.name {
            Instance::CloudSql(name) => Refresher {
                admin: &self.sql_admin,
                tokens: &self.tokens,
                key: &self.key,
            }
            .refresh(name, key.iam, deadline, timings),
            Instance::AlloyDb(uri) => Refresher {
                admin: &self.alloydb_admin,
                tokens: &self.tokens,
                key: &self.key,
            }
            .refresh(uri, key.iam, deadline, timings),
        }
    }

    /// The socket address to dial for `target`.
    pub(crate) fn socket_addr(target: &Target, port: u16) -> Result<SocketAddr, Error> {
        match target {
            Target::Ip(ip) => Ok(SocketAddr::new(*ip, port)),
            Target::Dns(name) => (name.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| Error::Dial(format!("cannot resolve {name}: {e}")))?
                .next()
                .ok_or_else(|| Error::Dial(format!("{name} resolves to no address"))),
        }
    }

    fn dial_tcp(&self, target: &Target, port: u16, deadline: Instant) -> Result<TcpStream, Error> {
        let addr = Self::socket_addr(target, port)?;
        let tcp = TcpStream::connect_timeout(&addr, remaining(deadline)?).map_err(|e| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                Error::Timeout(format!("TCP connect to {addr} did not finish in time"))
            } else {
                Error::Dial(format!("TCP connect to {addr} failed: {e}"))
            }
        })?;
        // Database protocols exchange small messages; don't delay them. (A
        // no-op in a wasm guest, which `Socket` makes up for.)
        tcp.set_nodelay(true)
            .map_err(|e| Error::Dial(format!("cannot set TCP_NODELAY: {e}")))?;
        Ok(tcp)
    }

    /// The user agent sent to Google (Admin API, metadata exchange).
    #[cfg(feature = "tokio")]
    pub(crate) fn user_agent(&self) -> &str {
        &self.user_agent
    }

    /// The connector's config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// After a failed dial, handshake or exchange: the next connect
    /// refreshes, here and in every instance sharing the store.
    pub(crate) fn invalidate(&self, key: &CacheKey) {
        self.cache.invalidate(key);
        if let Some(shared) = &self.shared {
            shared.forget(key);
        }
    }
}

/// Runs the TLS 1.3 handshake on `tcp`, then the metadata exchange if there
/// is one, all bounded by `deadline`.
fn handshake(
    config: &Arc<ClientConfig>,
    target: &Target,
    tcp: &mut Socket,
    deadline: Instant,
    exchange: Option<&Exchange<'_>>,
) -> Result<ClientConnection, Error> {
    let mut conn = ClientConnection::new(config.clone(), tls::server_name(target)?)
        .map_err(|e| Error::Tls(format!("cannot start TLS: {e}")))?;
    if let Some(exchange) = exchange {
        // Held by rustls until the handshake is done, then sent with the
        // client's last flight (see `mdx`).
        conn.writer()
            .write_all(&exchange.request())
            .map_err(|e| Error::Tls(format!("cannot queue the metadata exchange: {e}")))?;
    }
    tcp.0
        .set_read_timeout(Some(remaining(deadline)?))
        .map_err(|e| Error::Dial(format!("cannot set a read timeout: {e}")))?;
    while conn.is_handshaking() {
        conn.complete_io(tcp)
            .map_err(|e| tls::handshake_error(&e))?;
    }
    if let Some(exchange) = exchange {
        mdx::read_response(&mut rustls::Stream::new(&mut conn, tcp), exchange)?;
    }
    tcp.0
        .set_read_timeout(None)
        .map_err(|e| Error::Dial(format!("cannot clear the read timeout: {e}")))?;
    Ok(conn)
}

/// Time left before `deadline`, or a timeout error.
pub(crate) fn remaining(deadline: Instant) -> Result<Duration, Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(Error::Timeout("the dial timeout passed".into()))
    } else {
        Ok(left)
    }
}

fn check_url(what: &str, url: &str) -> Result<(), Error> {
    let ok = url
        .parse::<http::Uri>()
        .ok()
        .is_some_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "{what} {url:?} is not an http:// or https:// URL with a host"
        )))
    }
}
