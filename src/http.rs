//! Host-agnostic HTTP request and response values for the JSON calls the
//! connector makes (token endpoint, metadata server, Admin API). The transport
//! itself is `wasi:http`, in [`crate::wasi::http`].

use std::time::Instant;

use crate::Error;

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
// Native builds have no transport to read the method and body.
#[cfg_attr(not(target_os = "wasi"), allow(dead_code))]
pub(crate) struct Request {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
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
            headers: vec![("content-type", content_type.to_string())],
            body,
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
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

/// Sends `req` and waits for its response, bounded by `deadline`.
pub(crate) fn send(req: &Request, deadline: Instant) -> Result<Response, Error> {
    crate::wasi::http::start(req, deadline)?.wait()
}

/// The part of a URL that is safe to show in an error: scheme, host and path,
/// never the query (the metadata server's carries scopes, others could carry
/// keys).
pub(crate) fn redact_url(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

pub(crate) use crate::wasi::http::{start, Pending};
