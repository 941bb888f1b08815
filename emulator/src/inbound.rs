//! The client side of a proxied connection while the proxy looks at its first bytes
//! (metadata exchange, Postgres startup): bytes read but not yet consumed stay buffered, so
//! whatever the proxy does not answer itself reaches the backend unchanged.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

/// Read at most this much per read; the messages looked at are small.
const READ_CHUNK: usize = 8 * 1024;

/// A client stream with read-ahead.
#[derive(Debug)]
pub struct Inbound<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Inbound<S> {
    /// Wraps `stream` with an empty buffer.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Bytes read from the client and not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Reads once more from the client, appending to the buffer. Returns how many bytes
    /// arrived; 0 means the client closed its side. Cancel-safe: a cancelled call loses
    /// no bytes, so it can run under a timeout.
    pub async fn read_more(&mut self) -> io::Result<usize> {
        self.buf.reserve(READ_CHUNK);
        let mut limited = (&mut self.stream).take(READ_CHUNK as u64);
        limited.read_buf(&mut self.buf).await
    }

    /// Reads until at least `n` bytes are buffered. Fails with `UnexpectedEof` if the
    /// client closes first.
    pub async fn fill(&mut self, n: usize) -> io::Result<()> {
        while self.buf.len() < n {
            if self.read_more().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    /// Removes and returns the first `n` buffered bytes (all of them if fewer).
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.buf.len());
        self.buf.drain(..n).collect()
    }

    /// The stream, for answering the client directly.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The stream and the bytes still owed to the backend.
    pub fn into_parts(self) -> (S, Vec<u8>) {
        (self.stream, self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn buffers_and_takes() {
        let (client, server) = tokio::io::duplex(64);
        let mut inbound = Inbound::new(server);
        let mut client = client;
        client.write_all(b"hello ").await.unwrap();
        inbound.fill(3).await.unwrap();
        assert_eq!(inbound.take(3), b"hel");
        client.write_all(b"world").await.unwrap();
        inbound.fill(8).await.unwrap();
        assert_eq!(inbound.buffered(), b"lo world");
        drop(client);
        let err = inbound.fill(100).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let (_, rest) = inbound.into_parts();
        assert_eq!(rest, b"lo world");
    }
}
