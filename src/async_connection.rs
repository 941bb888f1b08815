//! The connect sequence for tokio drivers (tokio-postgres): the same plan and
//! TLS config as [`Connector::connect`], with the dial and handshake on tokio's
//! reactor so the driver's reads and writes never block the runtime.
//!
//! The certificate refresh still runs synchronously inside `connect_async`:
//! a wasm guest is single-threaded and the refresh is the first thing any
//! request needs, so there is nothing else for the runtime to do meanwhile.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::dial::{remaining, Plan};
use crate::mdx::{self, Exchange};
use crate::socket::AsyncSocket;
use crate::{tls, ConnectOptions, ConnectTimings, Connector, Error};

/// An encrypted connection for async drivers: `tokio::io::AsyncRead` and
/// `AsyncWrite` of the database protocol in plain text.
pub struct AsyncConnection {
    inner: TlsStream<AsyncSocket>,
    timings: ConnectTimings,
}

impl AsyncConnection {
    /// What the connect cost, step by step.
    pub fn timings(&self) -> ConnectTimings {
        self.timings
    }
}

impl Connector {
    /// Like [`Connector::connect`], for tokio drivers.
    pub async fn connect_async(
        &self,
        instance: &str,
        options: &ConnectOptions,
    ) -> Result<AsyncConnection, Error> {
        let plan = self.plan(instance, options)?;
        let from_store = plan.timings.from_store;
        match self.dial_async(plan).await {
            // As in `connect`: a stale shared entry gets one retry, refreshed.
            Err(_) if from_store => self.dial_async(self.plan(instance, options)?).await,
            result => result,
        }
    }

    async fn dial_async(&self, mut plan: Plan) -> Result<AsyncConnection, Error> {
        let deadline = Instant::now() + self.config().dial_timeout;
        let addr = Self::socket_addr(&plan.target, plan.port)?;

        let tcp_started = Instant::now();
        let tcp = tokio::time::timeout(remaining(deadline)?, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Timeout(format!("TCP connect to {addr} did not finish in time")))
            .and_then(|r| r.map_err(|e| Error::Dial(format!("TCP connect to {addr} failed: {e}"))))
            .and_then(|tcp| {
                tcp.set_nodelay(true)
                    .map_err(|e| Error::Dial(format!("cannot set TCP_NODELAY: {e}")))?;
                Ok(AsyncSocket(tcp))
            })
            .inspect_err(|_| self.invalidate(&plan.key))?;
        plan.timings.tcp = tcp_started.elapsed();

        let tls_started = Instant::now();
        let mut queued = Ok(());
        let server_name = tls::server_name(&plan.target)?;
        let exchange = Exchange::for_kind(&plan.mdx, self.user_agent());
        let request = exchange.as_ref().map(Exchange::request);
        // The exchange request is held by rustls until the handshake is done,
        // then sent with the client's last flight (see `mdx`).
        let handshake =
            TlsConnector::from(plan.tls.clone()).connect_with(server_name, tcp, |conn| {
                if let Some(request) = &request {
                    queued = conn.writer().write_all(request);
                }
            });
        let mut inner = tokio::time::timeout(remaining(deadline)?, handshake)
            .await
            .map_err(|_| Error::Timeout("the TLS handshake did not finish in time".into()))
            .and_then(|r| r.map_err(|e| tls::handshake_error(&e)))
            .and_then(|s| {
                queued
                    .map(|()| s)
                    .map_err(|e| Error::Tls(format!("cannot queue the metadata exchange: {e}")))
            })
            .inspect_err(|_| self.invalidate(&plan.key))?;
        if let Some(exchange) = &exchange {
            let response = mdx::read_response_async(&mut inner, exchange);
            tokio::time::timeout(remaining(deadline)?, response)
                .await
                .map_err(|_| Error::Timeout("the metadata exchange did not finish in time".into()))
                .and_then(|r| r)
                .inspect_err(|_| self.invalidate(&plan.key))?;
        }
        plan.timings.tls = tls_started.elapsed();
        plan.timings.total = plan.started.elapsed();
        Ok(AsyncConnection {
            inner,
            timings: plan.timings,
        })
    }
}

impl AsyncRead for AsyncConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AsyncConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
