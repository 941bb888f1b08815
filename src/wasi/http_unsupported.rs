//! Outside wasm32-wasip2 there is no `wasi:http`; the connector's HTTP calls
//! fail with a clear error (native builds exist for unit tests and docs).

use std::time::Instant;

use crate::http::{Request, Response};
use crate::Error;

/// A request in flight (never constructed here).
pub(crate) struct Pending(());

pub(crate) fn start(req: &Request, _deadline: Instant) -> Result<Pending, Error> {
    Err(Error::Http(format!(
        "{}: outgoing HTTP needs wasi:http; build for wasm32-wasip2",
        crate::http::redact_url(&req.url)
    )))
}

impl Pending {
    pub(crate) fn wait(self) -> Result<Response, Error> {
        Err(Error::Http("outgoing HTTP needs wasi:http".into()))
    }
}
