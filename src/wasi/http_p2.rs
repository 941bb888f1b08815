//! Outgoing HTTP over `wasi:http@0.2` with the raw bindings.
//!
//! The request body is written and finished *before* the request is handed to
//! `outgoing-handler.handle`: the concurrent-body shape (wstd 0.6's client) lost
//! requests on this stack (shared/spec/wasi-stack.md §9). Splitting `start` and
//! `wait` lets the caller keep several requests in flight, e.g. both Admin API
//! calls, while it does other work such as key generation.

use std::time::Instant;

use wasip2::clocks::monotonic_clock;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    http_error_code, ErrorCode, Fields, FutureIncomingResponse, IncomingBody, Method as WasiMethod,
    OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::poll;
use wasip2::io::streams::StreamError;

use crate::error::Error;
use crate::http::{self, redact_url, Method, Request, Response, Transport, MAX_RESPONSE_BYTES};

/// `wasi:io` streams take at most 4096 bytes per blocking write.
const WRITE_CHUNK: usize = 4096;

/// The host's `wasi:http/outgoing-handler`.
#[derive(Debug, Default)]
pub(crate) struct WasiHttp;

impl Transport for WasiHttp {
    fn start(&self, req: &Request, deadline: Instant) -> Result<Box<dyn http::Pending>, Error> {
        start(req, deadline).map(|p| Box::new(p) as Box<dyn http::Pending>)
    }
}

/// A request handed to the host, its response not yet read.
struct Pending {
    future: FutureIncomingResponse,
    deadline: Instant,
    url: String,
}

/// Sends the request and returns without waiting for the response.
fn start(req: &Request, deadline: Instant) -> Result<Pending, Error> {
    let url = redact_url(&req.url).to_string();
    let fail = |what: &str| Error::http(format!("{url}: {what}"));
    let uri: ::http::Uri = req
        .url
        .parse()
        .map_err(|e| Error::invalid_config(format!("URL {url:?} does not parse: {e}")))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::Http,
        Some("https") => Scheme::Https,
        _ => {
            return Err(Error::invalid_config(format!(
                "URL {url:?} must start with http:// or https://"
            )))
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| Error::invalid_config(format!("URL {url:?} has no host")))?;

    let mut headers: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone().into_bytes()))
        .collect();
    if req.method == Method::Post {
        headers.push((
            "content-length".into(),
            req.body.len().to_string().into_bytes(),
        ));
    }
    let fields = Fields::from_list(&headers).map_err(|e| fail(&format!("bad header: {e:?}")))?;
    let request = OutgoingRequest::new(fields);
    let method = match req.method {
        Method::Get => WasiMethod::Get,
        Method::Post => WasiMethod::Post,
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    request
        .set_method(&method)
        .and_then(|()| request.set_scheme(Some(&scheme)))
        .and_then(|()| request.set_authority(Some(authority.as_str())))
        .and_then(|()| request.set_path_with_query(Some(path)))
        .map_err(|()| fail("the host refused the request line"))?;

    let body = request.body().map_err(|()| fail("no request body"))?;
    {
        let stream = body.write().map_err(|()| fail("no request body stream"))?;
        for chunk in req.body.chunks(WRITE_CHUNK) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| fail(&format!("writing the body: {}", stream_error(e))))?;
        }
    }
    OutgoingBody::finish(body, None).map_err(|e| fail(&error_code(&e)))?;

    let options = RequestOptions::new();
    let budget = remaining_ns(deadline);
    // Not every host supports every timeout; the deadline in `wait` bounds the
    // call anyway, so a refusal here is not an error.
    let _ = options.set_connect_timeout(Some(budget));
    let _ = options.set_first_byte_timeout(Some(budget));
    let _ = options.set_between_bytes_timeout(Some(budget));

    let future =
        outgoing_handler::handle(request, Some(options)).map_err(|e| fail(&error_code(&e)))?;
    Ok(Pending {
        future,
        deadline,
        url,
    })
}

impl http::Pending for Pending {
    /// Blocks until the response has arrived and its body is read, or the
    /// deadline passes.
    fn wait(self: Box<Self>) -> Result<Response, Error> {
        let fail = |what: String| Error::http(format!("{}: {what}", self.url));
        let ready = self.future.subscribe();
        let timer = monotonic_clock::subscribe_duration(remaining_ns(self.deadline));
        if !poll::poll(&[&ready, &timer]).contains(&0) {
            return Err(Error::timeout(format!(
                "no answer from {} in time",
                self.url
            )));
        }
        let response = match self.future.get() {
            Some(Ok(Ok(r))) => r,
            // The host enforces the same budget (RequestOptions) and may notice
            // first: its timeouts are timeouts too.
            Some(Ok(Err(e))) if is_timeout(Some(e.clone())) => {
                return Err(Error::timeout(format!(
                    "no answer from {} in time",
                    self.url
                )))
            }
            Some(Ok(Err(e))) => return Err(fail(error_code(&e))),
            Some(Err(())) | None => return Err(fail("the host lost the response".into())),
        };
        let status = response.status();
        let body = response
            .consume()
            .map_err(|()| fail("no response body".into()))?;
        let mut bytes = Vec::new();
        {
            let stream = body
                .stream()
                .map_err(|()| fail("no response body stream".into()))?;
            loop {
                // A body that stalls or trickles is bounded by the deadline
                // too: wait for bytes or the timer, whichever comes first,
                // and read without blocking.
                let timed_out =
                    || Error::timeout(format!("the body from {} did not finish in time", self.url));
                if Instant::now() >= self.deadline {
                    return Err(timed_out());
                }
                {
                    let readable = stream.subscribe();
                    let timer = monotonic_clock::subscribe_duration(remaining_ns(self.deadline));
                    if !poll::poll(&[&readable, &timer]).contains(&0) {
                        return Err(timed_out());
                    }
                }
                match stream.read(64 * 1024) {
                    Ok(chunk) => {
                        bytes.extend_from_slice(&chunk);
                        if bytes.len() > MAX_RESPONSE_BYTES {
                            return Err(fail(format!(
                                "response body larger than {MAX_RESPONSE_BYTES} bytes"
                            )));
                        }
                    }
                    Err(StreamError::Closed) => break,
                    // The host's own between-bytes timeout (the same budget)
                    // may end the read first: a timeout too.
                    Err(StreamError::LastOperationFailed(e))
                        if is_timeout(http_error_code(&e)) || Instant::now() >= self.deadline =>
                    {
                        return Err(timed_out())
                    }
                    Err(e) => return Err(fail(format!("reading the body: {}", stream_error(e)))),
                }
            }
        }
        drop(IncomingBody::finish(body));
        Ok(Response {
            status,
            body: bytes,
        })
    }
}

fn remaining_ns(deadline: Instant) -> u64 {
    let left = deadline.saturating_duration_since(Instant::now());
    u64::try_from(left.as_nanos()).unwrap_or(u64::MAX)
}

fn error_code(e: &ErrorCode) -> String {
    format!("{e:?}")
}

/// Whether the host ended the call for one of its timeouts.
fn is_timeout(code: Option<ErrorCode>) -> bool {
    matches!(
        code,
        Some(
            ErrorCode::ConnectionTimeout
                | ErrorCode::ConnectionReadTimeout
                | ErrorCode::ConnectionWriteTimeout
        )
    )
}

/// The host's words for a stream error: its first line only (wasmtime's
/// debug string goes on with a backtrace of the host).
fn stream_error(e: StreamError) -> String {
    match e {
        StreamError::Closed => "stream closed".into(),
        StreamError::LastOperationFailed(err) => {
            let text = err.to_debug_string();
            text.lines().next().unwrap_or_default().trim().to_string()
        }
    }
}
