//! The blocking pump: drives a [`Dial`] over std's sockets (on wasm32-wasip2,
//! `wasi:sockets`), then carries the established connection's bytes.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;

use rustls::ClientConnection;

use super::records::{outgoing, read_plaintext, Append, Inbox, Plain, Sink, READ_CHUNK};
use super::timings::ConnectTimings;
use super::{Action, Dial};
use crate::dns::names::{Moved, Route};
use crate::error::Error;

/// Runs `dial` to the end: a connection, or the dial's error.
pub(crate) fn run(mut dial: Dial) -> Result<Connection, Error> {
    let mut socket: Option<TcpStream> = None;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match dial.next()? {
            Action::Resolve {
                host,
                port,
                timeout,
            } => dial.resolved(resolve(&host, port, timeout)),
            Action::Connect { addr, timeout } => {
                let tcp = TcpStream::connect_timeout(&addr, timeout).and_then(|tcp| {
                    // Database protocols exchange small messages; don't delay
                    // them (a no-op in a wasm guest: see `connect`).
                    tcp.set_nodelay(true)?;
                    Ok(tcp)
                });
                match tcp {
                    Ok(tcp) => {
                        socket = Some(tcp);
                        dial.connected(Ok(()));
                    }
                    Err(e) => dial.connected(Err(e)),
                }
            }
            Action::Send { bytes, timeout } => {
                let result = connected(&mut socket).and_then(|tcp| {
                    tcp.set_write_timeout(Some(timeout))?;
                    tcp.write_all(&bytes)
                });
                dial.sent(result);
            }
            Action::Receive { timeout } => {
                let result = connected(&mut socket).and_then(|tcp| {
                    tcp.set_read_timeout(Some(timeout))?;
                    tcp.read(&mut buf)
                });
                dial.received(result.map(|n| &buf[..n]));
            }
            Action::Done => break,
        }
    }
    // The driver's reads wait as long as it likes.
    let tcp = socket
        .take()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no TCP connection"))
        .and_then(|tcp| {
            tcp.set_read_timeout(None)?;
            tcp.set_write_timeout(None)?;
            Ok(tcp)
        })
        .map_err(|e| {
            Error::dial(format!("cannot clear the socket's timeouts: {e}")).with_source(e)
        })?;
    let (tls, inbox, timings) = dial.finish()?;
    Ok(Connection {
        tls,
        tcp,
        inbox,
        deferred: None,
        timings,
        moved: None,
    })
}

fn connected(socket: &mut Option<TcpStream>) -> io::Result<&mut TcpStream> {
    socket
        .as_mut()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no TCP connection"))
}

/// A blocking, encrypted connection to the instance. Bytes written are the
/// database protocol in plain text.
pub struct Connection {
    tls: ClientConnection,
    tcp: TcpStream,
    /// What the server sent that rustls has not taken yet.
    inbox: Inbox,
    /// An error met after [`Connection::read_available`] had bytes to hand
    /// back: the next read returns it.
    deferred: Option<io::Error>,
    timings: ConnectTimings,
    /// Set when the DNS name it was made through names another instance.
    moved: Option<Arc<Moved>>,
}

impl Connection {
    /// What the connect cost, step by step.
    pub fn timings(&self) -> ConnectTimings {
        self.timings
    }

    /// This connection, made through `route` when the instance was named by
    /// a DNS name.
    pub(crate) fn routed(mut self, route: Option<Route>) -> Self {
        if let Some(route) = route {
            self.timings.name_resolution = route.took;
            self.moved = Some(route.moved);
        }
        self
    }

    /// An error, and the connection shut, once its DNS name has moved.
    fn check_moved(&mut self) -> io::Result<()> {
        let Some(reason) = self.moved.as_ref().and_then(|m| m.reason()) else {
            return Ok(());
        };
        // Best effort: the old instance may be gone already.
        let _ = self.shutdown();
        Err(super::moved_error(reason))
    }

    /// Sends TLS close_notify and shuts the TCP connection down.
    pub fn shutdown(&mut self) -> io::Result<()> {
        self.tls.send_close_notify();
        // Best effort: the peer may already be gone.
        let flushed = self.flush_tls();
        let closed = self.tcp.shutdown(Shutdown::Both);
        flushed.and(closed)
    }

    /// Sends what rustls has encrypted, in one write.
    fn flush_tls(&mut self) -> io::Result<()> {
        let pending = outgoing(&mut self.tls);
        if pending.is_empty() {
            return Ok(());
        }
        self.tcp.write_all(&pending)
    }

    /// Appends up to `max` bytes of plaintext to `out`: waits for the first
    /// as [`Read::read`] does, then adds what has already arrived without
    /// waiting again, without clearing room for bytes that may never come.
    /// How many bytes were added; 0 once the server has closed with
    /// close_notify (or when `max` is 0).
    pub fn read_available(&mut self, out: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        if max == 0 {
            self.check_moved()?;
            return Ok(0);
        }
        let start = out.len();
        let mut sink = Append {
            out,
            limit: start.saturating_add(max),
        };
        if self.read_some(&mut sink)? == 0 {
            return Ok(0);
        }
        while sink.out.len() < sink.limit {
            match read_plaintext(&mut self.tls, &mut self.inbox, &mut sink) {
                Ok(Plain::Read(n)) if n > 0 => {}
                Ok(_) => break,
                // These bytes first; the next read returns the error.
                Err(e) => {
                    self.deferred = Some(e);
                    break;
                }
            }
        }
        Ok(sink.out.len() - start)
    }

    /// Waits until `sink` takes some plaintext; 0: the server closed.
    fn read_some<S: Sink + ?Sized>(&mut self, sink: &mut S) -> io::Result<usize> {
        self.check_moved()?;
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        loop {
            if let Plain::Read(n) = read_plaintext(&mut self.tls, &mut self.inbox, sink)? {
                return Ok(n);
            }
            // Answers rustls owes the server (a key update) go first.
            self.flush_tls()?;
            let tcp = &mut self.tcp;
            self.inbox.read_from(|room| tcp.read(room))?;
        }
    }
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            self.check_moved()?;
            return Ok(0);
        }
        self.read_some(buf)
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check_moved()?;
        let n = self.tls.writer().write(buf)?;
        self.flush_tls()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.check_moved()?;
        self.tls.writer().flush()?;
        self.flush_tls()?;
        self.tcp.flush()
    }
}

/// The addresses of `host`: in a wasm guest bounded by `timeout`; natively
/// (tests) by the system resolver.
#[cfg(target_os = "wasi")]
fn resolve(host: &str, port: u16, timeout: std::time::Duration) -> io::Result<Vec<SocketAddr>> {
    crate::wasi::name_lookup::resolve(host, port, timeout)
}

#[cfg(not(target_os = "wasi"))]
fn resolve(host: &str, port: u16, _: std::time::Duration) -> io::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    (host, port).to_socket_addrs().map(Iterator::collect)
}
