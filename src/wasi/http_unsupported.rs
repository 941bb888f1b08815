//! Outside wasm32-wasip2 there is no `wasi:http`; the connector's HTTP calls
//! fail with a clear error (native builds exist for unit tests and docs,
//! which give the connector a transport of their own).

use std::time::Instant;

use crate::error::Error;
use crate::http::{redact_url, Pending, Request, Transport};

/// The transport of native builds: every request fails, saying why.
#[derive(Debug, Default)]
pub(crate) struct WasiHttp;

impl Transport for WasiHttp {
    fn start(&self, req: &Request, _deadline: Instant) -> Result<Box<dyn Pending>, Error> {
        Err(Error::http(format!(
            "{}: outgoing HTTP needs wasi:http; build for wasm32-wasip2",
            redact_url(&req.url)
        )))
    }
}
