//! The client side of a proxied connection after its TLS handshake, counting the
//! application bytes the client sends, so tests can check that a client which refused the
//! server sent it nothing.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::calls::ProxyStats;

/// A server-side TLS stream whose reads are counted in its proxy's [`ProxyStats`].
#[derive(Debug)]
pub struct ClientTls {
    tls: TlsStream<TcpStream>,
    stats: Arc<ProxyStats>,
}

impl ClientTls {
    /// Wraps the stream of a completed handshake, counted in `stats`.
    pub fn new(tls: TlsStream<TcpStream>, stats: Arc<ProxyStats>) -> Self {
        Self { tls, stats }
    }

    /// The TLS stream (for the client's certificate).
    pub fn tls(&self) -> &TlsStream<TcpStream> {
        &self.tls
    }

    /// The TLS stream (to close its TCP connection without a close_notify).
    pub fn tls_mut(&mut self) -> &mut TlsStream<TcpStream> {
        &mut self.tls
    }
}

impl AsyncRead for ClientTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.tls).poll_read(cx, buf);
        this.stats.received((buf.filled().len() - before) as u64);
        polled
    }
}

impl AsyncWrite for ClientTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tls).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }
}
