//! The one error type of the connector: each variant names the step of a
//! connect that failed and carries what a caller can act on. No variant ever
//! holds a token, a key or a JWT.

use std::fmt;
use std::time::Duration;

use crate::IpType;

/// Why a connect (or a token fetch) failed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The instance name (Cloud SQL) or URI (AlloyDB) does not parse.
    InvalidInstanceName {
        /// What the caller passed.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The connector's config or the connect options are unusable.
    InvalidConfig(String),
    /// No credentials were found, a credentials file is malformed, or the
    /// token endpoint (or metadata server) refused them.
    Credentials(String),
    /// An HTTP request to a Google endpoint could not be made or answered
    /// (connection refused, host policy, oversized body).
    Http(String),
    /// The Admin API answered with an error status.
    AdminApi(ApiError),
    /// The Admin API refused the call for quota (HTTP 429 or
    /// `RESOURCE_EXHAUSTED`). Not retried, as Google's connectors do not:
    /// the quota is per minute, so the instance's next refresh is held for
    /// one rate-limit interval (30 s).
    QuotaExceeded(ApiError),
    /// The Admin API answered with a body the connector cannot use.
    InstanceMetadata(String),
    /// The region in the instance name is not the region the Admin API reports.
    RegionMismatch {
        /// The instance, `project:region:instance`.
        instance: String,
        /// The region in the name.
        given: String,
        /// The instance's real region.
        actual: String,
    },
    /// The instance cannot be used this way.
    Unsupported(String),
    /// The instance has no address of the requested type.
    IpTypeNotAvailable {
        /// The instance, `project:region:instance`.
        instance: String,
        /// The type that was asked for.
        ip_type: IpType,
    },
    /// Certificate refreshes for this instance are rate-limited: by this
    /// connector's limiter, or, after the Admin API refused them, by the
    /// bucket shared through the host store ([`crate::Config::store`]).
    RateLimited {
        /// The instance, `project:region:instance`.
        instance: String,
        /// How long until a refresh is allowed again.
        retry_after: Duration,
        /// Why the last refresh failed, if it did (e.g. a quota error).
        last_error: Option<Box<Error>>,
    },
    /// The TCP connection to the instance failed.
    Dial(String),
    /// The server was refused before anything was sent to it: its
    /// certificate, its TLS version, or its not asking for the client
    /// certificate.
    ServerVerification {
        /// Which check failed.
        check: VerificationCheck,
        /// What the check found.
        message: String,
    },
    /// The TLS handshake failed for another reason.
    Tls(String),
    /// The metadata exchange after the handshake failed or the server refused
    /// the connection in it.
    MetadataExchange(String),
    /// A step took longer than its bound.
    Timeout(String),
    /// Reading or writing an established connection failed.
    Io(String),
    /// The connection was already shut down.
    Closed,
}

/// Which check of the server failed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerificationCheck {
    /// The chain does not lead to the instance's CA (Cloud SQL serverCaCert,
    /// AlloyDB caCert).
    Chain,
    /// The certificate has expired.
    Expired,
    /// The certificate is not valid yet.
    NotYetValid,
    /// The certificate does not name this instance: for Cloud SQL neither a
    /// SAN nor the CN, for AlloyDB no SAN is the address dialled.
    Identity,
    /// Any other certificate problem.
    Other,
    /// The server does not speak TLS 1.3; every Cloud SQL and AlloyDB server
    /// does, and the connector accepts nothing older.
    ProtocolVersion,
    /// The server did not ask for the client certificate; every Cloud SQL and
    /// AlloyDB server does (it is how they authorize the client), so this is
    /// not the instance's server.
    ClientAuth,
}

/// An error answer from a Google API, with Google's own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Which call failed, e.g. `connectSettings for p:r:i`.
    pub call: String,
    /// The HTTP status.
    pub status: u16,
    /// Google's `error.status`, e.g. `NOT_FOUND`; empty when absent.
    pub code: String,
    /// Google's `error.message`, or the start of the body.
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidInstanceName { name, reason } if name.starts_with("projects/") => write!(
                f,
                "invalid AlloyDB instance URI {name:?}: {reason}; expected {}",
                crate::alloydb::instance_uri::EXPECTED
            ),
            Self::InvalidInstanceName { name, reason } => write!(
                f,
                "invalid instance connection name {name:?}: {reason}; expected PROJECT:REGION:INSTANCE \
                 (Cloud SQL) or {} (AlloyDB)",
                crate::alloydb::instance_uri::EXPECTED
            ),
            Self::InvalidConfig(m) => write!(f, "invalid connector config: {m}"),
            Self::Credentials(m) => write!(f, "credentials: {m}"),
            Self::Http(m) => write!(f, "HTTP request failed: {m}"),
            Self::AdminApi(e) => write!(f, "Admin API {e}"),
            Self::QuotaExceeded(e) => write!(
                f,
                "Admin API quota exhausted: {e}; not retried, and this instance's next refresh \
                 waits 30 s. Wait a minute before retrying, reuse one connector per process (it \
                 caches certificates for about an hour), or raise the Admin API quota in the \
                 Google Cloud console"
            ),
            Self::InstanceMetadata(m) => write!(f, "unusable Admin API response: {m}"),
            Self::RegionMismatch { instance, given, actual } => write!(
                f,
                "instance {instance}: the name says region {given:?} but the instance is in {actual:?}; fix the instance connection name"
            ),
            Self::Unsupported(m) => write!(f, "unsupported: {m}"),
            Self::IpTypeNotAvailable { instance, ip_type } => write!(
                f,
                "instance {instance} has no {ip_type} address; pick another IP type or enable it on the instance"
            ),
            Self::RateLimited { instance, retry_after, last_error } => {
                write!(
                    f,
                    "certificate refreshes for {instance} are rate-limited (burst 2, one per 30 s); retry in {} s",
                    retry_after.as_secs().max(1)
                )?;
                match last_error {
                    Some(e) => write!(f, "; the last refresh failed: {e}"),
                    None => Ok(()),
                }
            }
            Self::Dial(m) => write!(f, "dial: {m}"),
            Self::ServerVerification { check, message } => {
                let what = match check {
                    VerificationCheck::ProtocolVersion | VerificationCheck::ClientAuth => "server",
                    _ => "server certificate",
                };
                write!(f, "{what} refused ({check:?} check): {message}")
            }
            Self::Tls(m) => write!(f, "TLS: {m}"),
            Self::MetadataExchange(m) => write!(f, "metadata exchange: {m}"),
            Self::Timeout(m) => write!(f, "timeout: {m}"),
            Self::Io(m) => write!(f, "connection I/O: {m}"),
            Self::Closed => write!(f, "the connection is closed"),
        }
    }
}

impl std::error::Error for Error {}

impl fmt::Display for ApiError {
    /// `connectSettings for p:r:i failed with HTTP 404 NOT_FOUND: …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed with HTTP {}", self.call, self.status)?;
        if !self.code.is_empty() {
            write!(f, " {}", self.code)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::other(e)
    }
}
