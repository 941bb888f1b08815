//! Connect to Google Cloud SQL and AlloyDB from WebAssembly, the way Google's
//! connectors do, with nothing but WASI host interfaces.
//!
//! A [`Connector`] gets an OAuth2 token, asks the instance's Admin API (Cloud
//! SQL or AlloyDB, the name tells which) for its connection info and a client
//! certificate for its RSA-2048 key, dials the instance's server-side proxy
//! (port 3307 Cloud SQL, 5433 AlloyDB), runs mutual TLS 1.3, verifies the
//! server's identity, runs the metadata exchange where the instance needs it,
//! and hands back a [`Connection`] over which a database driver speaks its own
//! protocol in plain text (the driver must not start TLS itself).
//!
//! Refresh is lazy: nothing runs in the background. Certificates are cached in
//! the connector until four minutes before they expire, and, with a host
//! [`Store`], across component instances (serverless hosts make one per
//! request).
//!
//! ```no_run
//! use std::io::Write;
//! use gcp_db_connector::{Config, ConnectOptions, Connector};
//!
//! let connector = Connector::new(Config::default())?;
//! let mut conn = connector.connect("my-project:us-central1:my-db", &ConnectOptions::default())?;
//! conn.write_all(b"...the database protocol...")?;
//! let alloydb = "projects/my-project/locations/us-central1/clusters/c/instances/i";
//! let mut conn = connector.connect(alloydb, &ConnectOptions::default())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Where each step lives: `instance_name` parses the name (and
//! `alloydb::instance_uri` an AlloyDB URI), `credentials` gets tokens,
//! `cloudsql::{admin, refresh}` and `alloydb::{admin, refresh}` make the
//! Admin API calls into a `connection_info`, `key` makes the RSA key, `cache`
//! is the lazy cache and `store` its cross-instance part, `tls` and `verify`
//! configure and check TLS, `socket` sends each TLS flight in one write,
//! `mdx` runs the metadata exchange (`cloudsql::mdx`, `alloydb::mdx`), `dial`
//! ties them together, and `wasi` is the only code that calls WASI directly.
//! The WIT component (`gcp:db-connector/connector`) is this library behind
//! the thin export glue of the `gcp-db-connector-component` crate.

#![deny(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

mod alloydb;
#[cfg(feature = "tokio")]
mod async_connection;
mod cache;
mod certs;
mod cloudsql;
mod connection;
mod connection_info;
mod credentials;
mod dial;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod google_api;
mod http;
mod instance_name;
mod jwt;
mod key;
mod keygen;
mod mdx;
mod refresh;
mod retry;
mod socket;
mod store;
#[cfg(test)]
mod test_certs;
mod tls;
mod verify;
mod wasi;

pub use alloydb::admin::DEFAULT_ALLOYDB_ADMIN_ENDPOINT;
pub use alloydb::instance_uri::AlloyDbInstanceUri;
#[cfg(feature = "tokio")]
pub use async_connection::AsyncConnection;
pub use cache::REFRESH_BUFFER;
pub use cloudsql::admin::DEFAULT_ADMIN_ENDPOINT;
pub use connection::{ConnectTimings, Connection};
pub use credentials::{Credentials, DEFAULT_METADATA_HOST, DEFAULT_TOKEN_ENDPOINT};
pub use dial::{Connector, ALLOYDB_PORT, CLOUD_SQL_PORT};
pub use error::{ApiError, Error, VerificationCheck};
pub use instance_name::{Instance, InstanceName};
pub use store::{Store, LEASE_WAIT};
#[cfg(all(target_os = "wasi", feature = "wasi-keyvalue"))]
pub use wasi::keyvalue::open_wasi_keyvalue;

/// Which address of the instance to dial. Unless told, Cloud SQL dials
/// public (Google's default there) and AlloyDB private (AlloyDB's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpType {
    /// The public IP (Cloud SQL's `PRIMARY`, AlloyDB's `publicIpAddress`).
    Public,
    /// The private IP (AlloyDB's `ipAddress`).
    Private,
    /// The Private Service Connect DNS name.
    Psc,
}

impl fmt::Display for IpType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Public => "public",
            Self::Private => "private",
            Self::Psc => "PSC",
        })
    }
}

impl FromStr for IpType {
    type Err = Error;

    /// `public` (or `primary`), `private`, `psc`; any case.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "public" | "primary" => Ok(Self::Public),
            "private" => Ok(Self::Private),
            "psc" => Ok(Self::Psc),
            _ => Err(Error::InvalidConfig(format!(
                "IP type {s:?} is not one of public, private, psc"
            ))),
        }
    }
}

/// Settings shared by every connect of a [`Connector`].
#[derive(Clone)]
pub struct Config {
    /// Where tokens come from; `None` means Application Default Credentials.
    pub credentials: Option<Credentials>,
    /// The address to dial unless a connect says otherwise; `None`: the
    /// service's default (Cloud SQL public, AlloyDB private).
    pub ip_type: Option<IpType>,
    /// Automatic IAM database authentication for every connect by default.
    pub enable_iam_auth: bool,
    /// Cloud SQL Admin API base URL; default [`DEFAULT_ADMIN_ENDPOINT`].
    pub admin_endpoint: Option<String>,
    /// AlloyDB Admin API base URL; default [`DEFAULT_ALLOYDB_ADMIN_ENDPOINT`].
    pub alloydb_admin_endpoint: Option<String>,
    /// Token endpoint, overriding the one a credentials file carries.
    pub token_endpoint: Option<String>,
    /// Metadata server host; default `GCE_METADATA_HOST` or
    /// [`DEFAULT_METADATA_HOST`].
    pub metadata_host: Option<String>,
    /// Sent as `X-Goog-User-Project` on Admin API calls.
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
    /// Keep the RSA private key in the store with the certificate (default).
    /// Off: the key stays in the instance, and a stored certificate serves
    /// only connectors with the same key (`rsa_private_key`); others generate
    /// a key and refresh.
    pub store_private_key: bool,
    /// Bound on one certificate refresh (tokens and Admin API calls).
    pub refresh_timeout: Duration,
    /// Bound on the TCP connect and TLS handshake.
    pub dial_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            credentials: None,
            ip_type: None,
            enable_iam_auth: false,
            admin_endpoint: None,
            alloydb_admin_endpoint: None,
            token_endpoint: None,
            metadata_host: None,
            quota_project: None,
            user_agent: None,
            rsa_private_key: None,
            store: None,
            store_private_key: true,
            // Google's connectors bound a refresh by 60 s.
            refresh_timeout: Duration::from_secs(60),
            dial_timeout: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("credentials", &self.credentials)
            .field("ip_type", &self.ip_type)
            .field("enable_iam_auth", &self.enable_iam_auth)
            .field("admin_endpoint", &self.admin_endpoint)
            .field("alloydb_admin_endpoint", &self.alloydb_admin_endpoint)
            .field("token_endpoint", &self.token_endpoint)
            .field("metadata_host", &self.metadata_host)
            .field("quota_project", &self.quota_project)
            .field("user_agent", &self.user_agent)
            .field(
                "rsa_private_key",
                &self.rsa_private_key.as_ref().map(|_| "<redacted>"),
            )
            .field("store", &self.store.as_ref().map(|_| "<host store>"))
            .field("store_private_key", &self.store_private_key)
            .field("refresh_timeout", &self.refresh_timeout)
            .field("dial_timeout", &self.dial_timeout)
            .finish()
    }
}

/// Per-connect settings; each overrides the connector's [`Config`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The address to dial.
    pub ip_type: Option<IpType>,
    /// Automatic IAM database authentication.
    pub enable_iam_auth: Option<bool>,
}
