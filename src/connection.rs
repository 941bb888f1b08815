//! The connection handed to a database driver: plain bytes in and out, TLS
//! underneath.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use rustls::{ClientConnection, StreamOwned};

use crate::socket::Socket;

/// How long each step of a connect took. A step that did not run (cached
/// certificate or token) is zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectTimings {
    /// Getting OAuth2 tokens.
    pub token: Duration,
    /// The Admin API calls, less the time hidden behind key generation.
    pub admin_api: Duration,
    /// Generating the RSA key (first connect of a connector only).
    pub key_generation: Duration,
    /// The TCP connect.
    pub tcp: Duration,
    /// The TLS handshake, server verification included.
    pub tls: Duration,
    /// The whole connect.
    pub total: Duration,
    /// The certificate came from the cache: no Admin API call was made.
    pub cached: bool,
    /// It came from the host store (another instance's refresh).
    pub from_store: bool,
}

/// A blocking, encrypted connection to the instance. Bytes written are the
/// database protocol in plain text.
pub struct Connection {
    stream: StreamOwned<ClientConnection, Socket>,
    timings: ConnectTimings,
}

impl Connection {
    pub(crate) fn new(conn: ClientConnection, tcp: Socket, timings: ConnectTimings) -> Self {
        Self {
            stream: StreamOwned::new(conn, tcp),
            timings,
        }
    }

    /// What the connect cost, step by step.
    pub fn timings(&self) -> ConnectTimings {
        self.timings
    }

    /// Sends TLS close_notify and shuts the TCP connection down.
    pub fn shutdown(&mut self) -> io::Result<()> {
        self.stream.conn.send_close_notify();
        // Best effort: the peer may already be gone.
        let flushed = self.stream.flush();
        let closed = self.stream.sock.0.shutdown(Shutdown::Both);
        flushed.and(closed)
    }
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}
