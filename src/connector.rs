//! The connector: the composition of the parts, and the connect sequence top
//! to bottom. Parse the name (which picks the service), take connection info
//! from the sources stacked at construction (memory, host store, refresh),
//! pick the address, then dial it with one of the pumps.

use std::sync::Arc;
use std::time::Instant;

use crate::cache::memory::MemoryCache;
use crate::cache::refresh::Refresher;
use crate::cache::store::{HostStore, Shelf, StoredKey};
use crate::cache::{CacheKey, Found, Source};
use crate::cloudsql;
use crate::config::{Config, ConnectOptions, DEFAULT_DNS_RESOLVER};
use crate::connect::blocking::{self, Connection};
use crate::connect::{Dial, Plan};
use crate::credentials::source::Endpoints;
use crate::credentials::TokenSource;
use crate::dns::names::{Names, Route};
use crate::dns::resolve::Resolver;
use crate::dns::DomainName;
use crate::error::Error;
use crate::google_api::ApiClient;
use crate::http::Transport;
use crate::instance::Instance;
use crate::ip_type::IpType;
use crate::key::{ClientKey, KeySlot};
use crate::secret::Secret;
use crate::wasi::http::WasiHttp;

/// The connector's user agent, before any caller-supplied suffix.
const USER_AGENT: &str = concat!("gcp-db-connector/", env!("CARGO_PKG_VERSION"));

/// Connects to Cloud SQL and AlloyDB instances. Make one per process (or per
/// request on hosts that give each request a fresh instance) and reuse it: it
/// holds the credentials, the RSA key and the certificate cache.
pub struct Connector {
    config: Config,
    tokens: Arc<TokenSource>,
    /// Memory, then the host store if there is one, then a refresh.
    info: Arc<dyn Source>,
    /// What DNS names given as instance names resolve to.
    names: Names,
}

impl Connector {
    /// Checks the config; nothing is fetched or generated until the first
    /// connect.
    pub fn new(config: Config) -> Result<Self, Error> {
        Self::with_transport(config, Arc::new(WasiHttp))
    }

    /// A connector whose HTTP calls go through `transport`.
    pub(crate) fn with_transport(
        config: Config,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, Error> {
        let config = config.with_environment();
        config.check()?;
        let user_agent = match &config.user_agent {
            Some(extra) if !extra.trim().is_empty() => format!("{USER_AGENT} {}", extra.trim()),
            _ => USER_AGENT.to_string(),
        };
        let tokens = Arc::new(TokenSource::new(
            config.credentials.clone(),
            Endpoints {
                token_endpoint: config.token_endpoint.clone(),
                metadata_host: config.metadata_host.clone(),
                iam_credentials_endpoint: config.iam_credentials_endpoint.clone(),
                universe_domain: config.universe().to_string(),
                impersonation: config.impersonation.clone(),
            },
            transport.clone(),
        ));
        let shelf = config.store.as_ref().map(|store| {
            Arc::new(Shelf {
                store: store.clone(),
                secret: config.store_secret.clone().map(Secret::new),
                tokens: tokens.clone(),
                config: config.clone(),
            })
        });
        let keys = Arc::new(match (&config.rsa_private_key, &shelf) {
            (Some(pem), _) => KeySlot::with_key(ClientKey::from_pem(pem)?),
            // One key per principal, kept in the store for every instance.
            (None, Some(shelf)) if config.store_private_key => {
                KeySlot::with_keeper(Arc::new(StoredKey::new(shelf.clone())))
            }
            (None, _) => KeySlot::default(),
        });
        let names = Names::new(
            Resolver {
                transport: transport.clone(),
                url: config
                    .dns_resolver
                    .clone()
                    .unwrap_or_else(|| DEFAULT_DNS_RESOLVER.to_string()),
                tokens: tokens.clone(),
                admin: ApiClient::new(
                    &cloudsql::admin_endpoint(&config),
                    user_agent.clone(),
                    config.quota_project.clone(),
                ),
            },
            shelf.clone(),
            config.failover_period,
        );
        let refresh: Box<dyn Source> = Box::new(Refresher {
            config: config.clone(),
            user_agent: user_agent.clone(),
            tokens: tokens.clone(),
            keys: keys.clone(),
            transport,
        });
        let behind_memory = match shelf {
            Some(shelf) => Box::new(HostStore {
                shelf,
                keys: keys.clone(),
                user_agent,
                inner: refresh,
            }),
            None => refresh,
        };
        Ok(Self {
            info: Arc::new(MemoryCache::new(behind_memory)),
            config,
            tokens,
            names,
        })
    }

    /// Connects to the Cloud SQL instance `project:region:instance` or the
    /// AlloyDB instance `projects/P/locations/R/clusters/C/instances/I` and
    /// returns the encrypted connection, ready for the database protocol.
    ///
    /// `instance` may also be a DNS name whose TXT record holds either (see
    /// [`Config::dns_resolver`]), or a Cloud SQL instance DNS name
    /// (`….sql.goog`, resolved by the Admin API).
    pub fn connect(&self, instance: &str, options: &ConnectOptions) -> Result<Connection, Error> {
        let (dial, route) = self.begin(instance, options)?;
        let retry = dial.origin().retries_a_failed_dial();
        match blocking::run(dial) {
            // The failure made the stale info forgotten: this one refreshes.
            Err(_) if retry => {
                let (dial, route) = self.begin(instance, options)?;
                blocking::run(dial).map(|c| c.routed(route))
            }
            result => result.map(|c| c.routed(route)),
        }
        .map_err(|e| e.for_instance(instance))
    }

    /// Like [`Connector::connect`], for tokio drivers.
    #[cfg(feature = "tokio")]
    pub async fn connect_async(
        &self,
        instance: &str,
        options: &ConnectOptions,
    ) -> Result<crate::connect::tokio::AsyncConnection, Error> {
        use crate::connect::tokio;
        let (dial, route) = self.begin(instance, options)?;
        let retry = dial.origin().retries_a_failed_dial();
        match tokio::run(dial).await {
            // As in `connect`.
            Err(_) if retry => {
                let (dial, route) = self.begin(instance, options)?;
                tokio::run(dial).await.map(|c| c.routed(route))
            }
            result => result.map(|c| c.routed(route)),
        }
        .map_err(|e| e.for_instance(instance))
    }

    /// An OAuth2 token with the sqlservice.login scope, to use as the database
    /// password for manual IAM database authentication to Cloud SQL.
    pub fn login_token(&self) -> Result<String, Error> {
        let deadline = Instant::now() + self.config.refresh_timeout;
        Ok(self
            .tokens
            .token(cloudsql::LOGIN_SCOPE, deadline)?
            .secret
            .expose()
            .to_string())
    }

    /// The connector's config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Gets the instance's connection info ready without dialing, as a
    /// connect would (refreshing it, or loading it from the host store), so
    /// that the first connect after a deployment does not pay for it (as
    /// Go's `Dialer.Warmup`). Errors as a connect's would before it dials.
    pub fn warmup(&self, instance: &str, options: &ConnectOptions) -> Result<(), Error> {
        self.begin(instance, options)
            .map(|(dial, _)| dial.finish_unused())
            .map_err(|e| e.for_instance(instance))
    }

    /// Everything before the dial: the name, connection info, the address.
    /// Info from the host store that cannot be planned with (another
    /// instance's view, or a planted entry) is forgotten, and refreshed once.
    fn begin(
        &self,
        instance: &str,
        options: &ConnectOptions,
    ) -> Result<(Dial, Option<Route>), Error> {
        let started = Instant::now();
        let deadline = started + self.config.refresh_timeout;
        let (name, route) = self.instance(instance, deadline)?;
        let iam = options
            .enable_iam_auth
            .unwrap_or(self.config.enable_iam_auth);
        let ip_type = options
            .ip_type
            .or(self.config.ip_type)
            .unwrap_or_else(|| name.service().default_ip_type());
        let key = CacheKey { name, iam };
        let found = self.get(&key, deadline)?;
        let plan = match self.plan(&key, &found, ip_type, started) {
            Err(_) if found.origin.retries_a_failed_dial() => {
                self.info.invalidate(&key);
                self.plan(&key, &self.get(&key, deadline)?, ip_type, started)
            }
            plan => plan,
        }?;
        Ok((
            Dial::new(plan, self.config.dial_timeout, self.info.clone()),
            route,
        ))
    }

    /// The instance `given` names: itself, or what the DNS name resolves to
    /// now. When the name has moved, the old instance's info is forgotten.
    fn instance(&self, given: &str, deadline: Instant) -> Result<(Instance, Option<Route>), Error> {
        let not_a_name = match Instance::parse(given) {
            Ok(name) => return Ok((name, None)),
            Err(e) => e,
        };
        let Some(domain) = DomainName::parse(given) else {
            return Err(not_a_name.expecting(format!(
                "{} (Cloud SQL), {} (AlloyDB), or a DNS name whose TXT record holds one",
                cloudsql::instance_name::EXPECTED,
                crate::alloydb::instance_uri::EXPECTED
            )));
        };
        let route = self
            .names
            .route(&domain, deadline)
            .map_err(|e| e.for_instance(&domain))?;
        if let Some(old) = &route.moved_from {
            for iam in [false, true] {
                self.info.invalidate(&CacheKey {
                    name: old.clone(),
                    iam,
                });
            }
        }
        Ok((route.instance.clone(), Some(route)))
    }

    fn get(&self, key: &CacheKey, deadline: Instant) -> Result<Found, Error> {
        self.info
            .get(key, deadline)
            .map_err(|e| e.for_instance(&key.name))
    }

    fn plan(
        &self,
        key: &CacheKey,
        found: &Found,
        ip_type: IpType,
        started: Instant,
    ) -> Result<Plan, Error> {
        let info = &found.prepared.info;
        Ok(Plan {
            target: info.target(ip_type, &key.name)?,
            port: info.port,
            tls: found.prepared.tls.for_connection()?,
            exchange: info.exchange.clone(),
            origin: found.origin,
            key: key.clone(),
            started,
        })
    }
}

#[cfg(test)]
mod tests;
