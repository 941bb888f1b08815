//! Serving a `wasi:http/proxy` component over HTTP/1.1, the way
//! `wasmtime serve` and other serverless hosts do: compiled once, then a
//! **fresh store and instance for every request**, each on its own tokio task
//! so requests run concurrently.
//!
//! Both generations of `wasi:http` are served, told apart by the component's
//! exports: WASI 0.2 `wasi:http/incoming-handler@0.2.x`, and WASI 0.3
//! `wasi:http/handler@0.3.0` (component-model async; what a Spin spin-sdk 7
//! app exports), as `wasmtime serve -W component-model-async=y -S p3=y
//! -S cli=y` does. A 0.3 guest may import WASI 0.2 as well (std's sockets,
//! clocks and stdio on `wasm32-wasip2`). Unlike `wasmtime serve`, which reuses
//! a 0.3 instance for up to 128 requests, every request gets its own
//! instance here too; it lives until the guest's last task ends (after the
//! response body is written).
//!
//! A guest therefore keeps nothing between requests in its own memory; with
//! [`ServeOptions::keyvalue`] it gets the host's
//! [`SharedStore`] to keep things in instead (the
//! connector's certificate cache), which is the point of this module: in
//! memory, or on Redis for several host processes serving one app.
//!
//! Guests get the same WASI context as commands: the given environment
//! variables, read-only preopens, TCP and outgoing HTTP to loopback only, no
//! UDP, and the host's stdout and stderr.
//!
//! A request the guest cannot answer (instantiation fails, it traps, or it
//! never sets the response) gets a `500` whose body is the error, also
//! printed on stderr. A component that imports `wasi:keyvalue` (or Spin's
//! `spin:key-value`, see [`spin_key_value`](crate::spin_key_value)) without
//! [`ServeOptions::keyvalue`] is refused by [`Host::serve`] itself, before
//! any request.
//!
//! ```no_run
//! # async fn demo() -> wasmtime::Result<()> {
//! use gcp_db_host::{Host, ServeOptions};
//! let host = Host::new()?;
//! let server = host
//!     .serve("app.wasm".as_ref(), ServeOptions { keyvalue: true, ..Default::default() })
//!     .await?;
//! println!("serving http://{}", server.addr());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use wasmtime::error::Context as _;
use wasmtime::Store;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::{FieldMap, WasiHttpView as _};

use crate::{policy, wasi_builder, Host, SharedStore, State};

/// How to serve a component.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen; a loopback address only. Port 0 picks a free port
    /// (see [`Server::addr`]). Default `127.0.0.1:0`.
    pub addr: SocketAddr,
    /// Environment variables, the only ones the guest sees.
    pub env: Vec<(String, String)>,
    /// Directories preopened read-only: `(host path, guest path)`.
    pub dirs: Vec<(PathBuf, String)>,
    /// Give every instance the host's
    /// [`SharedStore`], as `wasi:keyvalue` and as
    /// Spin's `spin:key-value`. A component importing either is served only
    /// with this on.
    pub keyvalue: bool,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            env: Vec::new(),
            dirs: Vec::new(),
            keyvalue: false,
        }
    }
}

/// A running server. It stops accepting and closes its connections when
/// dropped or on [`Server::shutdown`]; requests already inside a guest run to
/// their end.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    /// The address the server listens on (with the port chosen when
    /// [`ServeOptions::addr`] asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits until the listener and every connection
    /// are closed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            // The accept loop may already be gone; then there is nothing to stop.
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            // A panic in the accept loop has nothing left to clean up.
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Aborting drops the listener and the connection set, which aborts
        // every connection task.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Host {
    /// Serves the `wasi:http/proxy` component (WASI 0.2, or a WASI 0.3
    /// `wasi:http/handler@0.3.0` exporter) at `component` on
    /// [`ServeOptions::addr`] until the returned [`Server`] is shut down or
    /// dropped. Must be called within a tokio runtime, which runs the server.
    ///
    /// The component is compiled (or loaded from the cache) and linked here,
    /// so a file that is not a proxy, an unsatisfiable import (including
    /// `wasi:keyvalue` without [`ServeOptions::keyvalue`]), a bad preopen or
    /// a non-loopback address is an error now rather than on every request.
    pub async fn serve(&self, component: &Path, opts: ServeOptions) -> wasmtime::Result<Server> {
        if !policy::is_loopback(opts.addr.ip()) {
            wasmtime::bail!(
                "serve listens on loopback addresses only, not {}",
                opts.addr
            );
        }
        let compiled = self.component(component)?;
        let instance_pre = self.instance_pre(&compiled, opts.keyvalue)?;
        // As `wasmtime serve`: a wasi:http/handler@0.3 export makes it a
        // WASI 0.3 service, else it must be a 0.2 proxy.
        let pre = match ServicePre::new(instance_pre.clone()) {
            Ok(pre) => Pre::P3(pre),
            Err(_) => Pre::P2(ProxyPre::new(instance_pre).with_context(|| {
                format!(
                    "{} is not a wasi:http/proxy component (no wasi:http/incoming-handler@0.2 \
                     or wasi:http/handler@0.3 export)",
                    component.display()
                )
            })?),
        };
        // Checked once here so a missing directory is not a 500 per request.
        wasi_builder(&opts.env, &opts.dirs)?;
        let listener = TcpListener::bind(opts.addr)
            .await
            .with_context(|| format!("cannot listen on {}", opts.addr))?;
        let addr = listener.local_addr()?;

        let app = Arc::new(App {
            pre,
            env: opts.env,
            dirs: opts.dirs,
            keyvalue: opts.keyvalue.then(|| self.keyvalue.clone()),
        });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, app, stopped));
        Ok(Server {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// The linked component, by the `wasi:http` generation it exports.
enum Pre {
    /// `wasi:http/incoming-handler@0.2.x`.
    P2(ProxyPre<State>),
    /// `wasi:http/handler@0.3.x`.
    P3(ServicePre<State>),
}

/// What every request needs: the linked component and the WASI settings.
struct App {
    pre: Pre,
    env: Vec<(String, String)>,
    dirs: Vec<(PathBuf, String)>,
    keyvalue: Option<SharedStore>,
}

async fn accept_loop(listener: TcpListener, app: Arc<App>, mut stopped: oneshot::Receiver<()>) {
    // Owned here so that ending the loop (or aborting its task) ends them.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // A send or a dropped sender: either way, stop.
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&app)));
                }
                Err(err) => {
                    // E.g. out of file descriptors: wait instead of spinning.
                    eprintln!("gcp-db-host serve: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Reap finished connections so the set does not grow forever.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn serve_connection(stream: tokio::net::TcpStream, app: Arc<App>) {
    let service = hyper::service::service_fn(move |request| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Infallible>(app.handle(request).await) }
    });
    if let Err(err) = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        // Mostly clients hanging up mid-request; nothing to answer anymore.
        eprintln!("gcp-db-host serve: connection: {err}");
    }
}

impl App {
    /// One request: the guest's response, or a 500 saying why there is none.
    async fn handle(
        &self,
        request: hyper::Request<Incoming>,
    ) -> hyper::Response<HyperOutgoingBody> {
        match self.run_guest(request).await {
            Ok(response) => response,
            Err(err) => {
                eprintln!("gcp-db-host serve: {err:?}");
                error_response(&format!("{err:#}\n"))
            }
        }
    }

    /// A fresh store and instance for `request`, as `wasmtime serve` does.
    async fn run_guest(
        &self,
        request: hyper::Request<Incoming>,
    ) -> wasmtime::Result<hyper::Response<HyperOutgoingBody>> {
        let mut builder = wasi_builder(&self.env, &self.dirs)?;
        builder.inherit_stdout().inherit_stderr();
        let state = State::new(builder.build(), self.keyvalue.clone());
        match &self.pre {
            Pre::P2(pre) => {
                let store = Store::new(pre.engine(), state);
                run_p2(pre.clone(), store, request).await
            }
            Pre::P3(pre) => {
                let store = Store::new(pre.engine(), state);
                run_p3(pre.clone(), store, request).await
            }
        }
    }
}

/// One request to a WASI 0.2 proxy: `incoming-handler.handle` with a
/// response outparam.
async fn run_p2(
    pre: ProxyPre<State>,
    mut store: Store<State>,
    request: hyper::Request<Incoming>,
) -> wasmtime::Result<hyper::Response<HyperOutgoingBody>> {
    let (sender, receiver) = oneshot::channel();
    let request = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, request)?;
    let out = store.data_mut().http().new_response_outparam(sender)?;
    // The guest runs on its own task so it can keep streaming the body
    // after handing over the response head.
    let guest = tokio::spawn(async move {
        let proxy = pre
            .instantiate_async(&mut store)
            .await
            .context("instantiating the component")?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, request, out)
            .await
    });

    match receiver.await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(code)) => Err(wasmtime::format_err!(
            "the guest answered with an error: {code:?}"
        )),
        // The sender went away with the store: the guest returned or
        // failed without setting the response.
        Err(_) => Err(match guest.await {
            Ok(Ok(())) => {
                wasmtime::format_err!("the guest never called response-outparam.set")
            }
            Ok(Err(err)) => err,
            Err(join) => wasmtime::format_err!("the guest's task failed: {join}"),
        }),
    }
}

/// One request to a WASI 0.3 service: `handler.handle` returns the response,
/// whose body the guest may go on writing after returning, so the store's
/// event loop runs (on its own task) until the guest has no task left.
async fn run_p3(
    pre: ServicePre<State>,
    mut store: Store<State>,
    request: hyper::Request<Incoming>,
) -> wasmtime::Result<hyper::Response<HyperOutgoingBody>> {
    let (sender, receiver) = oneshot::channel();
    let guest = tokio::spawn(async move {
        let service = pre
            .instantiate_async(&mut store)
            .await
            .context("instantiating the component")?;
        store
            .run_concurrent(async move |accessor| -> wasmtime::Result<()> {
                // `Request::from_http`, with the headers filtered by this
                // store's hooks (the future it returns cannot outlive them).
                let (parts, body) = request.into_parts();
                let headers = accessor.with(|mut access| {
                    FieldMap::new_immutable(access.data_mut().http().hooks, parts.headers)
                });
                let uri = parts.uri.into_parts();
                let (request, request_io) = wasmtime_wasi_http::p3::Request::new(
                    parts.method,
                    uri.scheme,
                    uri.authority,
                    uri.path_and_query,
                    headers,
                    None,
                    body.map_err(wasmtime_wasi_http::Error::Hyper),
                );
                let response = match service.handle(accessor, request).await? {
                    Ok(response) => {
                        accessor.with(|mut access| response.into_http(&mut access, request_io))
                    }
                    Err(code) => Err(wasmtime::format_err!(
                        "the guest answered with an error: {code:?}"
                    )),
                };
                let _ = sender.send(response);
                // The body, trailers and any other work of the guest.
                std::future::poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)).await;
                Ok(())
            })
            .await?
    });
    match receiver.await {
        Ok(response) => {
            // A trap while the body streams cuts the body short; say why.
            tokio::spawn(async move {
                if let Ok(Err(err)) = guest.await {
                    eprintln!("gcp-db-host serve: after the response: {err:?}");
                }
            });
            response
        }
        // The guest trapped (or failed to instantiate) before answering.
        Err(_) => Err(match guest.await {
            Ok(Ok(())) => wasmtime::format_err!("the guest returned no response"),
            Ok(Err(err)) => err,
            Err(join) => wasmtime::format_err!("the guest's task failed: {join}"),
        }),
    }
}

fn error_response(message: &str) -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(message.to_string()))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_listens_on_a_free_loopback_port() {
        let opts = ServeOptions::default();
        assert_eq!(opts.addr, "127.0.0.1:0".parse::<SocketAddr>().unwrap());
        assert!(!opts.keyvalue);
    }

    #[tokio::test]
    async fn refuses_non_loopback_addresses_before_loading() {
        let host = Host::with_cache_dir(None).unwrap();
        let opts = ServeOptions {
            addr: "0.0.0.0:0".parse().unwrap(),
            ..Default::default()
        };
        let err = host
            .serve("/nonexistent/app.wasm".as_ref(), opts)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("loopback"), "{err:#}");
    }

    #[tokio::test]
    async fn error_responses_are_500_with_the_message() {
        let response = error_response("it broke\n");
        assert_eq!(response.status(), 500);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"it broke\n");
    }
}
