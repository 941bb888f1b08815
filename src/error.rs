//! The one error type of the connector: an [`ErrorKind`] naming the step of a
//! connect that failed, the instance when known, a message, and the detail a
//! caller can act on (Google's answer, the failed server check, when to retry),
//! with the underlying error as [`std::error::Error::source`]. No error ever
//! holds a token, a key or a JWT.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::ip_type::{InvalidIpType, IpType};
use crate::rate_limit;

/// Why a connect (or a token fetch) failed. Match on [`Error::kind`]; the
/// accessors give the detail of each kind.
#[derive(Clone)]
pub struct Error(Box<Inner>);

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    message: String,
    instance: Option<String>,
    detail: Detail,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// The detail some kinds carry.
#[derive(Clone, Debug)]
enum Detail {
    None,
    /// What kind of name was expected, and its form, for the message.
    Expected {
        what: &'static str,
        form: String,
    },
    Api(ApiError),
    Verification(VerificationCheck),
    RateLimited {
        retry_after: Duration,
        last_error: Option<Error>,
    },
    IpType(IpType),
    Region {
        given: String,
        actual: String,
    },
}

/// Which step of a connect failed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The instance name (Cloud SQL) or URI (AlloyDB) does not parse;
    /// [`Error::instance`] is what the caller passed.
    InvalidInstanceName,
    /// The connector's config or the connect options are unusable.
    InvalidConfig,
    /// No credentials were found, a credentials file is malformed, or the
    /// token endpoint (or metadata server) refused them.
    Credentials,
    /// An HTTP request to a Google endpoint could not be made or answered
    /// (connection refused, host policy, oversized body).
    Http,
    /// The Admin API answered with an error status ([`Error::api_error`]).
    AdminApi,
    /// The Admin API refused the call for quota (HTTP 429 or
    /// `RESOURCE_EXHAUSTED`, [`Error::api_error`]). Not retried, as Google's
    /// connectors do not: the quota is per minute, so the instance's next
    /// refresh is held for one rate-limit interval.
    QuotaExceeded,
    /// The Admin API answered with a body the connector cannot use.
    InstanceMetadata,
    /// The region in the instance name is not the region the Admin API
    /// reports ([`Error::regions`]).
    RegionMismatch,
    /// The instance cannot be used this way.
    Unsupported,
    /// The instance has no address of the requested type ([`Error::ip_type`]).
    IpTypeNotAvailable,
    /// Certificate refreshes for this instance are rate-limited: by this
    /// connector's limiter, or, after the Admin API refused them, by the
    /// bucket shared through the host store ([`crate::Config::store`]).
    /// [`Error::retry_after`] says when; the source is the last refresh's
    /// failure, if it failed.
    RateLimited,
    /// The TCP connection to the instance failed.
    Dial,
    /// The server was refused before anything was sent to it: its
    /// certificate, its TLS version, or its not asking for the client
    /// certificate ([`Error::verification_check`]).
    ServerVerification,
    /// The TLS handshake failed for another reason.
    Tls,
    /// The metadata exchange after the handshake failed, or the server refused
    /// the connection in it.
    MetadataExchange,
    /// A step took longer than its bound.
    Timeout,
    /// Reading or writing an established connection failed.
    Io,
    /// The connection was already shut down.
    Closed,
    /// A DNS name given as the instance name did not resolve to an instance:
    /// the name does not exist (NXDOMAIN), the resolver failed (SERVFAIL, an
    /// HTTP error, a malformed answer), it has no TXT record that is an
    /// instance name, or its CNAMEs loop. The message names the name and
    /// the cause.
    Dns,
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

impl ApiError {
    /// Whether Google says the quota is spent: 429, or `RESOURCE_EXHAUSTED`
    /// under any status.
    pub fn is_quota(&self) -> bool {
        self.status == 429 || self.code == "RESOURCE_EXHAUSTED"
    }
}

impl Error {
    /// An error of `kind` saying `message`.
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            kind,
            message: message.into(),
            instance: None,
            detail: Detail::None,
            source: None,
        }))
    }

    pub(crate) fn invalid_config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidConfig, message)
    }

    pub(crate) fn credentials(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Credentials, message)
    }

    pub(crate) fn http(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Http, message)
    }

    pub(crate) fn instance_metadata(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InstanceMetadata, message)
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    pub(crate) fn dial(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Dial, message)
    }

    pub(crate) fn tls(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Tls, message)
    }

    pub(crate) fn metadata_exchange(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::MetadataExchange, message)
    }

    pub(crate) fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }

    pub(crate) fn dns(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Dns, message)
    }

    /// `name` does not parse as `what` (e.g. "AlloyDB instance URI"):
    /// `reason` says why, `form` shows the form.
    pub(crate) fn invalid_instance_name(
        name: &str,
        what: &'static str,
        reason: impl Into<String>,
        form: &str,
    ) -> Self {
        let mut e = Self::new(ErrorKind::InvalidInstanceName, reason);
        e.0.instance = Some(name.to_string());
        e.0.detail = Detail::Expected {
            what,
            form: form.to_string(),
        };
        e
    }

    /// Google's error answer: [`ErrorKind::QuotaExceeded`] when it says the
    /// quota is spent, else [`ErrorKind::AdminApi`].
    pub(crate) fn api(api: ApiError) -> Self {
        let kind = if api.is_quota() {
            ErrorKind::QuotaExceeded
        } else {
            ErrorKind::AdminApi
        };
        let mut e = Self::new(kind, api.message.clone());
        e.0.detail = Detail::Api(api);
        e
    }

    /// A check of the server failed.
    pub(crate) fn verification(check: VerificationCheck, message: impl Into<String>) -> Self {
        let mut e = Self::new(ErrorKind::ServerVerification, message);
        e.0.detail = Detail::Verification(check);
        e
    }

    /// Refreshes of `instance` are held for `retry_after`; `last_error` is
    /// why the last one failed, if it did.
    pub(crate) fn rate_limited(
        instance: impl fmt::Display,
        retry_after: Duration,
        last_error: Option<Error>,
    ) -> Self {
        let mut e = Self::new(
            ErrorKind::RateLimited,
            format!("retry in {} s", retry_after.as_secs().max(1)),
        )
        .for_instance(instance);
        e.0.detail = Detail::RateLimited {
            retry_after,
            last_error,
        };
        e
    }

    /// `instance` has no address of `ip_type`.
    pub(crate) fn ip_type_not_available(instance: impl fmt::Display, ip_type: IpType) -> Self {
        let mut e = Self::new(
            ErrorKind::IpTypeNotAvailable,
            format!("no {ip_type} address"),
        )
        .for_instance(instance);
        e.0.detail = Detail::IpType(ip_type);
        e
    }

    /// The name says region `given`, the Admin API `actual`.
    pub(crate) fn region_mismatch(instance: impl fmt::Display, given: &str, actual: &str) -> Self {
        let mut e = Self::new(
            ErrorKind::RegionMismatch,
            format!("the instance is in {actual:?}, not {given:?}"),
        )
        .for_instance(instance);
        e.0.detail = Detail::Region {
            given: given.to_string(),
            actual: actual.to_string(),
        };
        e
    }

    /// This error with `source` as its cause.
    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.0.source = Some(Arc::new(source));
        self
    }

    /// This error naming `instance`, unless it names one already.
    pub(crate) fn for_instance(mut self, instance: impl fmt::Display) -> Self {
        if self.0.instance.is_none() {
            self.0.instance = Some(instance.to_string());
        }
        self
    }

    /// This error, of [`ErrorKind::InvalidInstanceName`], showing `form` as
    /// the form expected.
    pub(crate) fn expecting(mut self, form: impl Into<String>) -> Self {
        if let Detail::Expected { form: f, .. } = &mut self.0.detail {
            *f = form.into();
        }
        self
    }

    /// How a refresh that failed with this error counts for the rate limit.
    pub(crate) fn refresh_outcome(&self) -> rate_limit::Outcome {
        match self.0.kind {
            ErrorKind::AdminApi => rate_limit::Outcome::Refused { quota: false },
            ErrorKind::QuotaExceeded => rate_limit::Outcome::Refused { quota: true },
            _ => rate_limit::Outcome::Failed,
        }
    }

    /// Which step failed.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// What went wrong, without the kind's wording around it (for
    /// [`ErrorKind::ServerVerification`]: what the check found).
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The instance the connect was for, when known (for
    /// [`ErrorKind::InvalidInstanceName`], the name as the caller gave it).
    pub fn instance(&self) -> Option<&str> {
        self.0.instance.as_deref()
    }

    /// Google's answer, for [`ErrorKind::AdminApi`] and
    /// [`ErrorKind::QuotaExceeded`].
    pub fn api_error(&self) -> Option<&ApiError> {
        match &self.0.detail {
            Detail::Api(a) => Some(a),
            _ => None,
        }
    }

    /// The check that failed, for [`ErrorKind::ServerVerification`].
    pub fn verification_check(&self) -> Option<VerificationCheck> {
        match self.0.detail {
            Detail::Verification(c) => Some(c),
            _ => None,
        }
    }

    /// How long until a refresh is allowed again, for
    /// [`ErrorKind::RateLimited`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self.0.detail {
            Detail::RateLimited { retry_after, .. } => Some(retry_after),
            _ => None,
        }
    }

    /// Why the last refresh failed, for [`ErrorKind::RateLimited`] (also its
    /// [`std::error::Error::source`]).
    pub fn last_error(&self) -> Option<&Error> {
        match &self.0.detail {
            Detail::RateLimited { last_error, .. } => last_error.as_ref(),
            _ => None,
        }
    }

    /// The IP type asked for, for [`ErrorKind::IpTypeNotAvailable`].
    pub fn ip_type(&self) -> Option<IpType> {
        match self.0.detail {
            Detail::IpType(t) => Some(t),
            _ => None,
        }
    }

    /// The region the name gave and the instance's real one, for
    /// [`ErrorKind::RegionMismatch`].
    pub fn regions(&self) -> Option<(&str, &str)> {
        match &self.0.detail {
            Detail::Region { given, actual } => Some((given, actual)),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Inner {
            kind,
            message: m,
            instance,
            detail,
            ..
        } = &*self.0;
        let instance = instance.as_deref().unwrap_or("the instance");
        match (kind, detail) {
            (ErrorKind::InvalidInstanceName, Detail::Expected { what, form }) => {
                write!(f, "invalid {what} {instance:?}: {m}; expected {form}")
            }
            (ErrorKind::InvalidInstanceName, _) => {
                write!(f, "invalid instance name {instance:?}: {m}")
            }
            (ErrorKind::InvalidConfig, _) => write!(f, "invalid connector config: {m}"),
            (ErrorKind::Credentials, _) => write!(f, "credentials: {m}"),
            (ErrorKind::Http, _) => write!(f, "HTTP request failed: {m}"),
            (ErrorKind::AdminApi, Detail::Api(api)) => write!(f, "Admin API {api}"),
            (ErrorKind::QuotaExceeded, Detail::Api(api)) => write!(
                f,
                "Admin API quota exhausted: {api}; not retried, and this instance's next refresh \
                 waits {} s. Wait a minute before retrying, reuse one connector per process (it \
                 caches certificates for about an hour), or raise the Admin API quota in the \
                 Google Cloud console",
                rate_limit::INTERVAL.as_secs()
            ),
            (ErrorKind::AdminApi | ErrorKind::QuotaExceeded, _) => write!(f, "Admin API: {m}"),
            (ErrorKind::InstanceMetadata, _) => write!(f, "unusable Admin API response: {m}"),
            (ErrorKind::RegionMismatch, Detail::Region { given, actual }) => write!(
                f,
                "instance {instance}: the name says region {given:?} but the instance is in \
                 {actual:?}; fix the instance connection name"
            ),
            (ErrorKind::RegionMismatch, _) => write!(f, "instance {instance}: {m}"),
            (ErrorKind::Unsupported, _) => write!(f, "unsupported: {m}"),
            (ErrorKind::IpTypeNotAvailable, Detail::IpType(ip_type)) => write!(
                f,
                "instance {instance} has no {ip_type} address; pick another IP type or enable it \
                 on the instance"
            ),
            (ErrorKind::IpTypeNotAvailable, _) => write!(f, "instance {instance}: {m}"),
            (
                ErrorKind::RateLimited,
                Detail::RateLimited {
                    retry_after,
                    last_error,
                },
            ) => {
                write!(
                    f,
                    "certificate refreshes for {instance} are rate-limited ({}); retry in {} s",
                    rate_limit::POLICY,
                    retry_after.as_secs().max(1)
                )?;
                match last_error {
                    Some(e) => write!(f, "; the last refresh failed: {e}"),
                    None => Ok(()),
                }
            }
            (ErrorKind::RateLimited, _) => write!(f, "certificate refreshes for {instance}: {m}"),
            (ErrorKind::Dial, _) => write!(f, "dial: {m}"),
            (ErrorKind::ServerVerification, detail) => {
                let check = match detail {
                    Detail::Verification(c) => *c,
                    _ => VerificationCheck::Other,
                };
                let what = match check {
                    VerificationCheck::ProtocolVersion | VerificationCheck::ClientAuth => "server",
                    _ => "server certificate",
                };
                write!(f, "{what} refused ({check:?} check): {m}")
            }
            (ErrorKind::Tls, _) => write!(f, "TLS: {m}"),
            (ErrorKind::MetadataExchange, _) => write!(f, "metadata exchange: {m}"),
            (ErrorKind::Timeout, _) => write!(f, "timeout: {m}"),
            (ErrorKind::Io, _) => write!(f, "connection I/O: {m}"),
            (ErrorKind::Closed, _) => write!(f, "the connection is closed"),
            (ErrorKind::Dns, _) => write!(f, "DNS: {m}"),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.0.kind)
            .field("message", &self.0.message);
        if let Some(i) = &self.0.instance {
            d.field("instance", i);
        }
        if !matches!(self.0.detail, Detail::None) {
            d.field("detail", &self.0.detail);
        }
        if let Some(s) = &self.0.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        if let Some(last) = self.last_error() {
            return Some(last);
        }
        self.0
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

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

impl From<InvalidIpType> for Error {
    fn from(e: InvalidIpType) -> Self {
        Error::invalid_config(e.to_string()).with_source(e)
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::other(e)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    fn api(status: u16, code: &str) -> ApiError {
        ApiError {
            call: "connectSettings for p:r:i".into(),
            status,
            code: code.into(),
            message: "Quota exceeded for quota metric 'Queries'.".into(),
        }
    }

    #[test]
    fn googles_answer_decides_between_quota_and_refusal() {
        let quota = Error::api(api(429, "RESOURCE_EXHAUSTED"));
        assert_eq!(quota.kind(), ErrorKind::QuotaExceeded);
        assert_eq!(quota.api_error().map(|a| a.status), Some(429));
        assert_eq!(
            Error::api(api(403, "RESOURCE_EXHAUSTED")).kind(),
            ErrorKind::QuotaExceeded
        );
        assert_eq!(
            Error::api(api(404, "NOT_FOUND")).kind(),
            ErrorKind::AdminApi
        );
    }

    #[test]
    fn the_last_refresh_failure_is_the_source_of_a_rate_limit() {
        let quota = Error::api(api(429, "RESOURCE_EXHAUSTED"));
        let limited = Error::rate_limited("p:r:i", Duration::from_secs(30), Some(quota));
        assert_eq!(limited.kind(), ErrorKind::RateLimited);
        assert_eq!(limited.instance(), Some("p:r:i"));
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(30)));
        let source = limited.source().and_then(|s| s.downcast_ref::<Error>());
        assert_eq!(source.map(Error::kind), Some(ErrorKind::QuotaExceeded));
        let text = limited.to_string();
        assert!(
            text.contains("retry in 30 s")
                && text.contains("the last refresh failed: Admin API quota exhausted"),
            "{text}"
        );
    }

    #[test]
    fn an_io_cause_is_the_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::dial("TCP connect to 10.0.0.2:3307 failed").with_source(io);
        let source = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            source.map(std::io::Error::kind),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
        assert_eq!(e.kind(), ErrorKind::Dial);
        assert!(e.source().is_some());
        assert!(Error::dial("x").source().is_none());
    }

    #[test]
    fn a_bad_ip_type_is_a_config_error() {
        let e = Error::from("vpc".parse::<IpType>().unwrap_err());
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert!(e.source().is_some());
    }

    #[test]
    fn the_instance_is_kept_once() {
        let e = Error::dial("x").for_instance("a:b:c").for_instance("d:e:f");
        assert_eq!(e.instance(), Some("a:b:c"));
    }
}
