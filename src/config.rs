//! What a connector is told: [`Config`] for every connect, [`ConnectOptions`]
//! for one. Both can grow: build them from `default()` with the `with_`
//! methods (or set the public fields), never with a struct literal.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::credentials::{Credentials, ServiceAccountImpersonation, DEFAULT_UNIVERSE_DOMAIN};
use crate::error::Error;
use crate::ip_type::IpType;
use crate::store::Store;

/// The DNS-over-HTTPS resolver used when the config names none: Google
/// Public DNS.
pub const DEFAULT_DNS_RESOLVER: &str = "https://dns.google/dns-query";

/// The longest time a connector keeps a DNS name's answer without asking
/// again, unless configured (Google's connectors check every 30 s).
pub const DEFAULT_FAILOVER_PERIOD: Duration = Duration::from_secs(30);

/// Settings shared by every connect of a [`Connector`](crate::Connector).
///
/// ```
/// use std::time::Duration;
/// use gcp_db_connector::{Config, Credentials, IpType};
///
/// let config = Config::default()
///     .with_credentials(Credentials::MetadataServer)
///     .with_ip_type(IpType::Private)
///     .with_dial_timeout(Duration::from_secs(10));
/// assert_eq!(config.ip_type, Some(IpType::Private));
/// ```
#[non_exhaustive]
#[derive(Clone)]
pub struct Config {
    /// Where tokens come from; `None` means Application Default Credentials.
    pub credentials: Option<Credentials>,
    /// The address to dial unless a connect says otherwise; `None`: the
    /// service's default (Cloud SQL public, AlloyDB private).
    pub ip_type: Option<IpType>,
    /// Automatic IAM database authentication for every connect by default.
    pub enable_iam_auth: bool,
    /// Act as this service account, whatever the credentials (as the Auth
    /// Proxy's `--impersonate-service-account`): their token is exchanged
    /// at IAM Credentials for one of the target's, which is also the IAM
    /// database user of automatic IAM authentication.
    pub impersonation: Option<ServiceAccountImpersonation>,
    /// The Google Cloud universe every default endpoint is in (Admin APIs,
    /// token, STS, IAM Credentials), e.g. `googleapis.com`; `None`:
    /// `GOOGLE_CLOUD_UNIVERSE_DOMAIN`, else
    /// [`DEFAULT_UNIVERSE_DOMAIN`]. Credentials of another universe are an
    /// error before any call.
    pub universe_domain: Option<String>,
    /// Cloud SQL Admin API base URL; default `https://sqladmin.UNIVERSE`
    /// ([`DEFAULT_ADMIN_ENDPOINT`](crate::DEFAULT_ADMIN_ENDPOINT)).
    pub admin_endpoint: Option<String>,
    /// AlloyDB Admin API base URL; default `https://alloydb.UNIVERSE`
    /// ([`DEFAULT_ALLOYDB_ADMIN_ENDPOINT`](crate::DEFAULT_ALLOYDB_ADMIN_ENDPOINT)).
    pub alloydb_admin_endpoint: Option<String>,
    /// Token endpoint, overriding the one a credentials file carries.
    pub token_endpoint: Option<String>,
    /// IAM Credentials API base URL, for [`Config::impersonation`]; default
    /// `https://iamcredentials.UNIVERSE`.
    pub iam_credentials_endpoint: Option<String>,
    /// Metadata server host; default `GCE_METADATA_HOST` or
    /// [`DEFAULT_METADATA_HOST`](crate::DEFAULT_METADATA_HOST).
    pub metadata_host: Option<String>,
    /// Sent as `X-Goog-User-Project` on Admin API calls; `None`:
    /// `GOOGLE_CLOUD_QUOTA_PROJECT`, if set.
    pub quota_project: Option<String>,
    /// Appended to the connector's user agent.
    pub user_agent: Option<String>,
    /// The connector's RSA key (PEM, PKCS#8 or PKCS#1, at least 2048 bits),
    /// as Go's `WithRSAKey`: for hosts that keep one in a secret and want no
    /// key generation. `None`: a fresh RSA-2048 key made on first connect.
    pub rsa_private_key: Option<String>,
    /// A host store that outlives the component instance (see [`Store`]):
    /// connection info is shared through it with later instances, so a
    /// fresh instance per request needs no key generation and no Admin API
    /// call. The Admin API's refusals of an instance's refreshes are shared
    /// too, so a broken instance is rate-limited across instances as within
    /// one. `None`: the cache lives as long as the connector.
    pub store: Option<Arc<dyn Store>>,
    /// Keep the connector's RSA private key in the store (default), once per
    /// principal, so fresh instances reuse it. Off: the key stays in the
    /// instance, and a stored certificate serves only connectors with the
    /// same key (`rsa_private_key`); others generate a key and refresh.
    pub store_private_key: bool,
    /// A secret from outside the store (a Spin variable, an environment
    /// secret): every value the connector stores is then sealed with an
    /// HMAC-SHA-256 under it, and one that is not is ignored. Without it,
    /// whoever can write the store can plant an entry that sends the
    /// connector to another server.
    pub store_secret: Option<String>,
    /// The DNS-over-HTTPS resolver (RFC 8484) that resolves instances named
    /// by a DNS name (`orders-db.example.com`, whose TXT record holds the
    /// instance name); `None`:
    /// [`DEFAULT_DNS_RESOLVER`](crate::DEFAULT_DNS_RESOLVER), Google Public
    /// DNS. `https://` (or `http://` to a loopback address, for tests).
    pub dns_resolver: Option<String>,
    /// The longest time a DNS name's answer is used before the next connect
    /// asks again (shorter if its TTL is); a name found to point elsewhere
    /// moves new connects to the new instance and fails the old
    /// connections' next read or write. Default 30 s, as Google's
    /// connectors check.
    pub failover_period: Duration,
    /// Bound on one certificate refresh (tokens and Admin API calls).
    pub refresh_timeout: Duration,
    /// Bound on the TCP connect, the TLS handshake and the metadata exchange,
    /// together.
    pub dial_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            credentials: None,
            ip_type: None,
            enable_iam_auth: false,
            impersonation: None,
            universe_domain: None,
            admin_endpoint: None,
            alloydb_admin_endpoint: None,
            token_endpoint: None,
            iam_credentials_endpoint: None,
            metadata_host: None,
            quota_project: None,
            user_agent: None,
            rsa_private_key: None,
            store: None,
            store_private_key: true,
            store_secret: None,
            dns_resolver: None,
            failover_period: DEFAULT_FAILOVER_PERIOD,
            // Google's connectors bound a refresh by 60 s.
            refresh_timeout: Duration::from_secs(60),
            dial_timeout: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// Tokens from `credentials` instead of Application Default Credentials.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Dial this kind of address unless a connect says otherwise.
    pub fn with_ip_type(mut self, ip_type: IpType) -> Self {
        self.ip_type = Some(ip_type);
        self
    }

    /// Automatic IAM database authentication for every connect by default.
    pub fn with_iam_auth(mut self, enable: bool) -> Self {
        self.enable_iam_auth = enable;
        self
    }

    /// The Cloud SQL Admin API at `url` (no trailing slash).
    pub fn with_admin_endpoint(mut self, url: impl Into<String>) -> Self {
        self.admin_endpoint = Some(url.into());
        self
    }

    /// The AlloyDB Admin API at `url`.
    pub fn with_alloydb_admin_endpoint(mut self, url: impl Into<String>) -> Self {
        self.alloydb_admin_endpoint = Some(url.into());
        self
    }

    /// The OAuth2 token endpoint at `url`, whatever a credentials file says.
    pub fn with_token_endpoint(mut self, url: impl Into<String>) -> Self {
        self.token_endpoint = Some(url.into());
        self
    }

    /// The metadata server at `host` (and port).
    pub fn with_metadata_host(mut self, host: impl Into<String>) -> Self {
        self.metadata_host = Some(host.into());
        self
    }

    /// Bill Admin API calls to `project` (`X-Goog-User-Project`).
    pub fn with_quota_project(mut self, project: impl Into<String>) -> Self {
        self.quota_project = Some(project.into());
        self
    }

    /// Append `suffix` to the connector's user agent.
    pub fn with_user_agent(mut self, suffix: impl Into<String>) -> Self {
        self.user_agent = Some(suffix.into());
        self
    }

    /// Use this RSA key (PEM) instead of generating one.
    pub fn with_rsa_private_key(mut self, pem: impl Into<String>) -> Self {
        self.rsa_private_key = Some(pem.into());
        self
    }

    /// Share connection info across instances through `store`.
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Seal what is stored with an HMAC under `secret` (see
    /// [`Config::store_secret`]).
    pub fn with_store_secret(mut self, secret: impl Into<String>) -> Self {
        self.store_secret = Some(secret.into());
        self
    }

    /// Whether the RSA private key goes into the store too.
    pub fn with_store_private_key(mut self, store_private_key: bool) -> Self {
        self.store_private_key = store_private_key;
        self
    }

    /// Act as a service account (see [`Config::impersonation`]).
    pub fn with_impersonation(mut self, impersonation: ServiceAccountImpersonation) -> Self {
        self.impersonation = Some(impersonation);
        self
    }

    /// Use the universe `domain` (see [`Config::universe_domain`]).
    pub fn with_universe_domain(mut self, domain: impl Into<String>) -> Self {
        self.universe_domain = Some(domain.into());
        self
    }

    /// Call the IAM Credentials API at `url` (no trailing slash).
    pub fn with_iam_credentials_endpoint(mut self, url: impl Into<String>) -> Self {
        self.iam_credentials_endpoint = Some(url.into());
        self
    }

    /// The universe every default endpoint is in: the configured one, else
    /// [`DEFAULT_UNIVERSE_DOMAIN`]. (A connector made from a config that
    /// leaves it unset takes `GOOGLE_CLOUD_UNIVERSE_DOMAIN` first.)
    pub fn universe(&self) -> &str {
        self.universe_domain
            .as_deref()
            .unwrap_or(DEFAULT_UNIVERSE_DOMAIN)
    }

    /// Fills what the config leaves open from the environment, as Google's
    /// connectors do: the universe from `GOOGLE_CLOUD_UNIVERSE_DOMAIN`, the
    /// quota project from `GOOGLE_CLOUD_QUOTA_PROJECT`.
    pub(crate) fn with_environment(self) -> Self {
        self.with_environment_from(|name| std::env::var(name).ok())
    }

    fn with_environment_from(mut self, env: impl Fn(&str) -> Option<String>) -> Self {
        let env = |name: &str| {
            env(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if self.universe_domain.is_none() {
            self.universe_domain = env("GOOGLE_CLOUD_UNIVERSE_DOMAIN");
        }
        if self.quota_project.is_none() {
            self.quota_project = env("GOOGLE_CLOUD_QUOTA_PROJECT");
        }
        self
    }

    /// Resolve DNS-named instances through the DoH resolver at `url` (see
    /// [`Config::dns_resolver`]).
    pub fn with_dns_resolver(mut self, url: impl Into<String>) -> Self {
        self.dns_resolver = Some(url.into());
        self
    }

    /// Ask again what a DNS name names after at most `period` (see
    /// [`Config::failover_period`]).
    pub fn with_failover_period(mut self, period: Duration) -> Self {
        self.failover_period = period;
        self
    }

    /// Bound one certificate refresh by `timeout`.
    pub fn with_refresh_timeout(mut self, timeout: Duration) -> Self {
        self.refresh_timeout = timeout;
        self
    }

    /// Bound the TCP connect, the handshake and the exchange by `timeout`.
    pub fn with_dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }

    /// Checks what can be checked before any connect: the URLs and the
    /// timeouts.
    pub(crate) fn check(&self) -> Result<(), Error> {
        for (what, url) in [
            ("admin-endpoint", &self.admin_endpoint),
            ("alloydb-admin-endpoint", &self.alloydb_admin_endpoint),
            ("token-endpoint", &self.token_endpoint),
            ("iam-credentials-endpoint", &self.iam_credentials_endpoint),
        ] {
            if let Some(url) = url {
                check_url(what, url)?;
            }
        }
        if let Some(domain) = &self.universe_domain {
            let ok = !domain.is_empty()
                && domain.len() <= 253
                && domain.contains('.')
                && domain.split('.').all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !ok {
                return Err(Error::invalid_config(format!(
                    "universe-domain {domain:?} is not a domain name (e.g. googleapis.com)"
                )));
            }
        }
        if let Some(i) = &self.impersonation {
            // The same checks as when it is used, before any call.
            crate::credentials::impersonated::Impersonation::of(
                "https://iamcredentials.invalid",
                &i.target_principal,
                &i.delegates,
            )?;
        }
        if self
            .store_secret
            .as_ref()
            .is_some_and(|s| s.trim().is_empty())
        {
            return Err(Error::invalid_config(
                "store-secret is empty; give a secret, or none to store entries unsealed",
            ));
        }
        if let Some(url) = &self.dns_resolver {
            check_resolver_url(url)?;
        }
        for (what, t) in [
            ("refresh-timeout", self.refresh_timeout),
            ("dial-timeout", self.dial_timeout),
        ] {
            if t.is_zero() {
                return Err(Error::invalid_config(format!("{what} must be more than 0")));
            }
        }
        Ok(())
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
        Err(Error::invalid_config(format!(
            "{what} {url:?} is not an http:// or https:// URL with a host"
        )))
    }
}

/// The DoH resolver's answers say where the connector goes: only over TLS,
/// or to a resolver on this machine.
fn check_resolver_url(url: &str) -> Result<(), Error> {
    if crate::http::is_https_or_loopback(url) {
        return Ok(());
    }
    Err(Error::invalid_config(format!(
        "dns-resolver {url:?} is not an https:// URL (http:// only to a loopback address), \
         e.g. {DEFAULT_DNS_RESOLVER}"
    )))
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("credentials", &self.credentials)
            .field("ip_type", &self.ip_type)
            .field("enable_iam_auth", &self.enable_iam_auth)
            .field("admin_endpoint", &self.admin_endpoint)
            .field("alloydb_admin_endpoint", &self.alloydb_admin_endpoint)
            .field("impersonation", &self.impersonation)
            .field("universe_domain", &self.universe_domain)
            .field("token_endpoint", &self.token_endpoint)
            .field("iam_credentials_endpoint", &self.iam_credentials_endpoint)
            .field("metadata_host", &self.metadata_host)
            .field("quota_project", &self.quota_project)
            .field("user_agent", &self.user_agent)
            .field(
                "rsa_private_key",
                &self.rsa_private_key.as_ref().map(|_| "<redacted>"),
            )
            .field("store", &self.store.as_ref().map(|_| "<host store>"))
            .field("store_private_key", &self.store_private_key)
            .field(
                "store_secret",
                &self.store_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("dns_resolver", &self.dns_resolver)
            .field("failover_period", &self.failover_period)
            .field("refresh_timeout", &self.refresh_timeout)
            .field("dial_timeout", &self.dial_timeout)
            .finish()
    }
}

/// Per-connect settings; each overrides the connector's [`Config`].
///
/// ```
/// use gcp_db_connector::{ConnectOptions, IpType};
///
/// let options = ConnectOptions::default().with_ip_type(IpType::Psc).with_iam_auth(true);
/// assert_eq!(options.enable_iam_auth, Some(true));
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The address to dial.
    pub ip_type: Option<IpType>,
    /// Automatic IAM database authentication.
    pub enable_iam_auth: Option<bool>,
}

impl ConnectOptions {
    /// Dial this kind of address.
    pub fn with_ip_type(mut self, ip_type: IpType) -> Self {
        self.ip_type = Some(ip_type);
        self
    }

    /// Automatic IAM database authentication on or off for this connect.
    pub fn with_iam_auth(mut self, enable: bool) -> Self {
        self.enable_iam_auth = Some(enable);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn a_resolver_over_tls_or_on_this_machine_is_accepted() {
        for url in [
            "https://dns.google/dns-query",
            "http://127.0.0.1:8053/dns-query",
            "http://[::1]:8053/dns-query",
            "http://localhost/dns-query",
        ] {
            assert!(
                Config::default().with_dns_resolver(url).check().is_ok(),
                "{url}"
            );
        }
    }

    #[test]
    fn bad_urls_and_zero_timeouts_are_refused_by_name() {
        for (config, what) in [
            (
                Config::default().with_admin_endpoint("ftp://x"),
                "admin-endpoint",
            ),
            (
                Config::default().with_alloydb_admin_endpoint("no scheme"),
                "alloydb-admin-endpoint",
            ),
            (
                Config::default().with_token_endpoint("http://"),
                "token-endpoint",
            ),
            (
                Config::default().with_dial_timeout(Duration::ZERO),
                "dial-timeout",
            ),
            (
                // Plain HTTP would let the network say where the connector goes.
                Config::default().with_dns_resolver("http://dns.example.com/dns-query"),
                "dns-resolver",
            ),
            (
                Config::default().with_dns_resolver("dns.google"),
                "dns-resolver",
            ),
            (
                Config::default().with_refresh_timeout(Duration::ZERO),
                "refresh-timeout",
            ),
        ] {
            let e = config.check().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig);
            assert!(e.message().starts_with(what), "{e}");
        }
        Config::default()
            .with_admin_endpoint("http://127.0.0.1:9")
            .check()
            .unwrap();
    }

    #[test]
    fn the_universe_and_the_impersonation_are_checked_before_any_call() {
        for bad in [
            "",
            "googleapis",
            "https://googleapis.com",
            "a..b",
            "x/y.com",
            "a b.com",
        ] {
            let e = Config::default()
                .with_universe_domain(bad)
                .check()
                .unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidConfig, "{bad}");
            assert!(e.message().contains("universe-domain"), "{e}");
        }
        let c = Config::default().with_universe_domain("example-universe.test");
        assert!(c.check().is_ok());
        assert_eq!(c.universe(), "example-universe.test");
        assert_eq!(Config::default().universe(), DEFAULT_UNIVERSE_DOMAIN);

        let bad = ServiceAccountImpersonation::new("not-an-email");
        let e = Config::default()
            .with_impersonation(bad)
            .check()
            .unwrap_err();
        assert!(e.message().contains("not-an-email"), "{e}");
        let chain =
            ServiceAccountImpersonation::from_chain("t@p.iam.gserviceaccount.com, bad delegate");
        assert!(Config::default().with_impersonation(chain).check().is_err());
        // The environment fills only what the config leaves open.
        let env = |name: &str| match name {
            "GOOGLE_CLOUD_UNIVERSE_DOMAIN" => Some(" u.example ".to_string()),
            "GOOGLE_CLOUD_QUOTA_PROJECT" => Some("billed".to_string()),
            _ => None,
        };
        let c = Config::default().with_environment_from(env);
        assert_eq!(c.universe_domain.as_deref(), Some("u.example"));
        assert_eq!(c.quota_project.as_deref(), Some("billed"));
        let mut mine = Config::default().with_universe_domain("mine.example");
        mine.quota_project = Some("mine".into());
        let c = mine.with_environment_from(env);
        assert_eq!(c.universe_domain.as_deref(), Some("mine.example"));
        assert_eq!(c.quota_project.as_deref(), Some("mine"));

        let ok = ServiceAccountImpersonation::from_chain("t@p.iam.gserviceaccount.com");
        assert!(ok.delegates.is_empty());
        assert!(Config::default().with_impersonation(ok).check().is_ok());
    }

    #[test]
    fn debug_output_redacts_the_key() {
        let c = Config::default().with_rsa_private_key("-----BEGIN PRIVATE KEY-----");
        assert!(!format!("{c:?}").contains("BEGIN"));
    }
}
