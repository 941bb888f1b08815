//! The TCP socket under TLS. rustls hands over a batch of records (a whole
//! handshake flight, say) as one vectored write; this sends it as one write.
//!
//! Why: `wasi:sockets` has no vectored write, so the standard library writes
//! only the first buffer per call and the rest goes out in later sends; and a
//! guest cannot turn Nagle off (no TCP_NODELAY in `wasi:sockets`), so each
//! later small send waits for the peer's delayed ACK, about 40 ms.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;

/// A [`TcpStream`] whose vectored writes are single writes.
#[derive(Debug)]
pub(crate) struct Socket(pub TcpStream);

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let bufs: Vec<&IoSlice<'_>> = bufs.iter().filter(|b| !b.is_empty()).collect();
        if let [one] = bufs.as_slice() {
            return self.0.write(one);
        }
        let joined = bufs
            .iter()
            .flat_map(|b| b.iter().copied())
            .collect::<Vec<u8>>();
        // All or an error: a partial send of a batch leaves the connection
        // unusable either way.
        self.0.write_all(&joined)?;
        Ok(joined.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// The tokio counterpart of [`Socket`], for [`crate::AsyncConnection`].
#[cfg(feature = "tokio")]
#[derive(Debug)]
pub(crate) struct AsyncSocket(pub tokio::net::TcpStream);

#[cfg(feature = "tokio")]
mod tokio_socket {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use super::*;

    impl AsyncRead for AsyncSocket {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for AsyncSocket {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }

        /// One write of the buffers joined; a partial write counts from the
        /// start of the first, as a vectored write's does.
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let joined = bufs
                .iter()
                .flat_map(|b| b.iter().copied())
                .collect::<Vec<u8>>();
            Pin::new(&mut self.0).poll_write(cx, &joined)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn a_vectored_write_arrives_whole() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got
        });
        let mut socket = Socket(TcpStream::connect(addr).unwrap());
        let n = socket
            .write_vectored(&[
                IoSlice::new(b"one "),
                IoSlice::new(b""),
                IoSlice::new(b"two "),
                IoSlice::new(b"three"),
            ])
            .unwrap();
        assert_eq!(n, 13);
        assert_eq!(socket.write_vectored(&[IoSlice::new(b"!")]).unwrap(), 1);
        drop(socket);
        assert_eq!(reader.join().unwrap(), b"one two three!");
    }
}
