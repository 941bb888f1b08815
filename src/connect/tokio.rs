//! The tokio pump, for async drivers (tokio-postgres): drives a [`Dial`] on
//! tokio's reactor, so the driver's reads and writes never block the
//! runtime, then carries the established connection's bytes.
//!
//! The certificate refresh before it still runs synchronously inside
//! `connect_async`: a wasm guest is single-threaded and the refresh is the
//! first thing any request needs, so there is nothing else for the runtime to
//! do meanwhile.

use std::io::{self, Write};
use std::net::ToSocketAddrs;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustls::ClientConnection;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::records::{outgoing, read_plaintext, Inbox, Plain, READ_CHUNK};
use super::timings::ConnectTimings;
use super::{Action, Dial};
use crate::error::Error;

/// Runs `dial` to the end on tokio: a connection, or the dial's error.
pub(crate) async fn run(mut dial: Dial) -> Result<AsyncConnection, Error> {
    let mut socket: Option<TcpStream> = None;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match dial.next()? {
            Action::Resolve { host, port, .. } => {
                // As the blocking pump: std's lookup, bounded by the host.
                dial.resolved(
                    (host.as_str(), port)
                        .to_socket_addrs()
                        .map(Iterator::collect),
                );
            }
            Action::Connect { addr, timeout: t } => {
                let tcp = match timeout(t, TcpStream::connect(addr)).await {
                    Ok(tcp) => tcp.and_then(|tcp| {
                        tcp.set_nodelay(true)?;
                        Ok(tcp)
                    }),
                    Err(_) => Err(io::ErrorKind::TimedOut.into()),
                };
                match tcp {
                    Ok(tcp) => {
                        socket = Some(tcp);
                        dial.connected(Ok(()));
                    }
                    Err(e) => dial.connected(Err(e)),
                }
            }
            Action::Send { bytes, timeout: t } => {
                let result = match socket.as_mut() {
                    Some(tcp) => timeout(t, tcp.write_all(&bytes))
                        .await
                        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
                    None => Err(io::ErrorKind::NotConnected.into()),
                };
                dial.sent(result);
            }
            Action::Receive { timeout: t } => {
                let result = match socket.as_mut() {
                    Some(tcp) => timeout(t, tcp.read(&mut buf))
                        .await
                        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
                    None => Err(io::ErrorKind::NotConnected.into()),
                };
                dial.received(result.map(|n| &buf[..n]));
            }
            Action::Done => break,
        }
    }
    let tcp = socket.ok_or_else(|| Error::dial("the dial ended without a TCP connection"))?;
    let (tls, inbox, timings) = dial.finish()?;
    Ok(AsyncConnection {
        tls,
        tcp,
        outgoing: Vec::new(),
        sent: 0,
        inbox,
        closing: false,
        timings,
        moved: None,
    })
}

/// An encrypted connection for async drivers: `tokio::io::AsyncRead` and
/// `AsyncWrite` of the database protocol in plain text.
pub struct AsyncConnection {
    tls: ClientConnection,
    tcp: TcpStream,
    /// Encrypted bytes not yet written to the socket, from `sent` on.
    outgoing: Vec<u8>,
    sent: usize,
    /// What the server sent that rustls has not taken yet.
    inbox: Inbox,
    /// close_notify has been queued.
    closing: bool,
    timings: ConnectTimings,
    /// Set when the DNS name it was made through names another instance.
    moved: Option<std::sync::Arc<crate::dns::names::Moved>>,
}

impl AsyncConnection {
    /// What the connect cost, step by step.
    pub fn timings(&self) -> ConnectTimings {
        self.timings
    }

    /// As `Connection::routed`.
    pub(crate) fn routed(mut self, route: Option<crate::dns::names::Route>) -> Self {
        if let Some(route) = route {
            self.timings.name_resolution = route.took;
            self.moved = Some(route.moved);
        }
        self
    }

    /// An error once the DNS name the connection was made through has moved
    /// (dropping the connection closes it).
    fn check_moved(&self) -> io::Result<()> {
        match self.moved.as_ref().and_then(|m| m.reason()) {
            Some(reason) => Err(super::moved_error(reason)),
            None => Ok(()),
        }
    }

    /// Writes out `outgoing`, plus whatever rustls has encrypted since, in
    /// as few writes as the socket allows.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.sent == self.outgoing.len() {
                self.outgoing.clear();
                self.sent = 0;
                if !self.tls.wants_write() {
                    return Poll::Ready(Ok(()));
                }
                self.outgoing = outgoing(&mut self.tls);
            }
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
    }
}

impl AsyncRead for AsyncConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_moved()?;
        loop {
            let plain = read_plaintext(&mut this.tls, &mut this.inbox, buf.initialize_unfilled())?;
            if let Plain::Read(n) = plain {
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            // Answers rustls owes the server (a key update) go out when they
            // can; reading does not wait for them.
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            let tcp = &mut this.tcp;
            let read = this.inbox.read_from(|room| {
                let mut room = ReadBuf::new(room);
                match Pin::new(tcp).poll_read(cx, &mut room) {
                    Poll::Ready(Ok(())) => Ok(room.filled().len()),
                    Poll::Ready(Err(e)) => Err(e),
                    // Told apart below: a socket's read never fails so.
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            });
            match read {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for AsyncConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_moved()?;
        // What an earlier write left goes first: at most one write's worth
        // of ciphertext waits in memory.
        ready!(this.poll_send(cx))?;
        let n = this.tls.writer().write(buf)?;
        // Already accepted: what the socket cannot take now goes out with the
        // next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_moved()?;
        this.tls.writer().flush()?;
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    /// Sends TLS close_notify, then shuts the TCP connection down.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            this.tls.send_close_notify();
            this.closing = true;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
