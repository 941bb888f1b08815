//! Host-agnostic HTTP for the JSON calls the connector makes (token endpoint,
//! metadata server, Admin API): request and response values, and the
//! [`Transport`] that carries them. The connector's transport is `wasi:http`
//! (`crate::wasi::http`); tests script one.

use std::borrow::Cow;
use std::time::Instant;

use crate::error::Error;

/// Largest response body read from any Google endpoint. Admin API answers are a
/// few KiB; anything larger is a broken or hostile server.
#[cfg_attr(not(target_os = "wasi"), allow(dead_code))]
pub(crate) const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// The HTTP method of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
}

/// A request with its whole body in memory.
#[derive(Debug, Clone)]
// Native builds outside tests have no transport to read the method and body.
#[cfg_attr(not(any(target_os = "wasi", test)), allow(dead_code))]
pub(crate) struct Request {
    pub method: Method,
    pub url: String,
    /// Names in lower case; most are the connector's own (`&'static`), a
    /// few come from a credentials file.
    pub headers: Vec<(Cow<'static, str>, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub(crate) fn get(url: String) -> Self {
        Self {
            method: Method::Get,
            url,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub(crate) fn post(url: String, content_type: &str, body: Vec<u8>) -> Self {
        Self {
            method: Method::Post,
            url,
            headers: vec![("content-type".into(), content_type.to_string())],
            body,
        }
    }

    pub(crate) fn header(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<String>,
    ) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A response with its whole body in memory.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends requests. Starting and waiting are apart so that a refresh can
/// keep several requests in flight (both Admin API calls) while it does
/// other work (key generation).
pub(crate) trait Transport: Send + Sync {
    /// Sends `req` without waiting for its response; the whole exchange is
    /// bounded by `deadline`.
    fn start(&self, req: &Request, deadline: Instant) -> Result<Box<dyn Pending>, Error>;

    /// Sends `req` and waits for its response.
    fn send(&self, req: &Request, deadline: Instant) -> Result<Response, Error> {
        self.start(req, deadline)?.wait()
    }
}

/// A request in flight.
pub(crate) trait Pending {
    /// Blocks until the response and its whole body have arrived, or the
    /// deadline given to [`Transport::start`] passes.
    fn wait(self: Box<Self>) -> Result<Response, Error>;
}

/// The part of a URL that is safe to show in an error: scheme, host and path,
/// never the query (the metadata server's carries scopes, others could carry
/// keys).
pub(crate) fn redact_url(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// Whether `url` may carry what the connector must not send in the clear (a
/// credential, a question whose answer says where to connect): https, or
/// plain http only to a loopback address (an emulator on this machine).
pub(crate) fn is_https_or_loopback(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let host = uri.host().unwrap_or_default();
    let loopback = || {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    match uri.scheme_str() {
        Some("https") => !host.is_empty(),
        Some("http") => loopback(),
        _ => false,
    }
}

/// A request answered at once: scripted transports' [`Pending`].
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) struct Answered(pub Result<Response, Error>);

#[cfg(any(test, feature = "fuzzing"))]
impl Pending for Answered {
    fn wait(self: Box<Self>) -> Result<Response, Error> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_shows_no_query() {
        assert_eq!(redact_url("http://h/p?scopes=x#f"), "http://h/p");
        assert_eq!(redact_url("http://h/p#f"), "http://h/p");
        assert_eq!(redact_url("http://h/p"), "http://h/p");
    }
}
