//! The metadata exchange right after the TLS handshake: one framed protobuf
//! request, one framed response, before any database byte. Each service
//! frames and words it its own way (`cloudsql::mdx`, `alloydb::mdx` implement
//! [`MetadataExchange`]); this reads a response, whichever, from the
//! plaintext the TLS connection has buffered, without reading a byte past it
//! (a MySQL server speaks first, right after it) and with its length bounded
//! before anything is allocated for it.
//!
//! The request is handed to rustls before the handshake starts (see
//! `connect`): rustls holds it until the server is verified and the handshake
//! done, then sends it in the same TCP send as the client's last handshake
//! flight. Sent on its own it would wait for the server's delayed ACK
//! (~40 ms): a guest's socket cannot turn Nagle off (wasi:sockets has no
//! TCP_NODELAY).

use std::fmt;
use std::io::{self, Read};

use crate::error::Error;
use crate::secret::Secret;

/// Google bounds a metadata exchange message at 16 KiB.
pub(crate) const MAX_MESSAGE: u32 = 16 * 1024;

/// One service's metadata exchange, ready to run.
pub(crate) trait MetadataExchange: Send + Sync + fmt::Debug {
    /// The framed request.
    fn request(&self) -> Vec<u8>;
    /// How long the response header is.
    fn header_len(&self) -> usize;
    /// Checks a response header; returns the body length, bounded by
    /// [`MAX_MESSAGE`] (see [`bounded_length`]).
    fn body_len(&self, header: &[u8]) -> Result<usize, Error>;
    /// `Ok` if the server accepted the connection, else its message.
    fn check(&self, body: &[u8]) -> Result<(), Error>;
    /// What a host store keeps of it, to make it again.
    fn record(&self) -> ExchangeRecord;
}

/// An exchange as a host store keeps it: what it carries besides the user
/// agent. The instance's service makes the exchange again from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExchangeRecord {
    /// The token the exchange sends, if it sends one.
    pub login_token: Option<Secret>,
    /// Whether it asks the server to log the token's principal in.
    pub auto_iam: bool,
}

/// The body length a response header announces, bounded by [`MAX_MESSAGE`]
/// before anything is allocated for it.
pub(crate) fn bounded_length(be_length: [u8; 4]) -> Result<usize, Error> {
    let len = u32::from_be_bytes(be_length);
    if len > MAX_MESSAGE {
        return Err(Error::metadata_exchange(format!(
            "the server's metadata exchange response claims {len} bytes, more than {MAX_MESSAGE}"
        )));
    }
    // At most 16 KiB: fits any usize.
    Ok(len as usize)
}

/// What a decoded response says: both services' protos number OK 1 and
/// ERROR 2, with the server's message beside.
pub(crate) fn outcome(code: i32, message: &str) -> Result<(), Error> {
    match code {
        1 => Ok(()),
        2 => Err(Error::metadata_exchange(format!(
            "the server refused the connection: {}",
            crate::redact::server_text(message, &[])
        ))),
        other => Err(malformed(format!("response code {other}"))),
    }
}

/// A response that does not decode.
pub(crate) fn malformed(what: impl fmt::Display) -> Error {
    Error::metadata_exchange(format!("malformed metadata exchange response: {what}"))
}

/// How far a response has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// The whole response is in, and the server accepted.
    Accepted,
    /// More bytes are needed than are buffered.
    NeedMore,
}

/// Reads one response of an exchange, header then body, as the bytes
/// arrive.
#[derive(Debug)]
pub(crate) struct ResponseReader {
    buf: Vec<u8>,
    filled: usize,
    in_body: bool,
}

impl ResponseReader {
    pub(crate) fn new(exchange: &dyn MetadataExchange) -> Self {
        Self {
            buf: vec![0; exchange.header_len()],
            filled: 0,
            in_body: false,
        }
    }

    /// Reads the response to `exchange` from what `plaintext` holds, never
    /// past it. A read that would block (nothing buffered yet) is
    /// [`Progress::NeedMore`].
    pub(crate) fn read_from(
        &mut self,
        exchange: &dyn MetadataExchange,
        plaintext: &mut dyn Read,
    ) -> Result<Progress, Error> {
        loop {
            if self.filled == self.buf.len() {
                if self.in_body {
                    return exchange.check(&self.buf).map(|()| Progress::Accepted);
                }
                let body_len = exchange.body_len(&self.buf)?;
                self.buf = vec![0; body_len];
                self.filled = 0;
                self.in_body = true;
                continue;
            }
            match plaintext.read(&mut self.buf[self.filled..]) {
                Ok(0) => return Err(closed()),
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Progress::NeedMore),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e)),
            }
        }
    }
}

/// The response did not arrive before the deadline.
pub(crate) fn timed_out() -> Error {
    Error::timeout("the metadata exchange response did not arrive in time")
}

fn closed() -> Error {
    Error::metadata_exchange("the server closed the connection during the metadata exchange")
}

/// A failed read or write of the connection during the exchange.
pub(crate) fn io_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => timed_out(),
        io::ErrorKind::UnexpectedEof => closed(),
        _ => Error::metadata_exchange(format!("the metadata exchange failed: {e}")).with_source(e),
    }
}

/// Reads and checks the response to `exchange` from a blocking stream (the
/// fuzz targets' and tests' way in; a dial reads it as the bytes arrive).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn read_response(
    stream: &mut impl Read,
    exchange: &dyn MetadataExchange,
) -> Result<(), Error> {
    match ResponseReader::new(exchange).read_from(exchange, stream)? {
        Progress::Accepted => Ok(()),
        // A blocking stream would block only past its read timeout.
        Progress::NeedMore => Err(timed_out()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    /// A made-up framing: one length byte, then `y` (accept) or `n`.
    #[derive(Debug)]
    struct OneByte;

    impl MetadataExchange for OneByte {
        fn request(&self) -> Vec<u8> {
            b"?".to_vec()
        }
        fn header_len(&self) -> usize {
            1
        }
        fn body_len(&self, header: &[u8]) -> Result<usize, Error> {
            bounded_length([0, 0, 0, header[0]])
        }
        fn check(&self, body: &[u8]) -> Result<(), Error> {
            outcome(if body == b"y" { 1 } else { 2 }, "no")
        }
        fn record(&self) -> ExchangeRecord {
            ExchangeRecord {
                login_token: None,
                auto_iam: false,
            }
        }
    }

    /// Hands out its bytes `chunk` at a time, then would block.
    struct Trickle {
        data: Vec<u8>,
        chunk: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.data.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.chunk).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data.drain(..n);
            Ok(n)
        }
    }

    #[test]
    fn a_response_read_as_it_arrives_leaves_what_follows() {
        let mut r = ResponseReader::new(&OneByte);
        let mut wire = Trickle {
            data: b"\x01".to_vec(),
            chunk: 1,
        };
        assert_eq!(
            r.read_from(&OneByte, &mut wire).unwrap(),
            Progress::NeedMore
        );
        wire.data.extend_from_slice(b"yDATABASE");
        assert_eq!(
            r.read_from(&OneByte, &mut wire).unwrap(),
            Progress::Accepted
        );
        assert_eq!(wire.data, b"DATABASE");
    }

    #[test]
    fn a_refusal_and_a_close_are_typed_errors() {
        let e = read_response(&mut &b"\x01n"[..], &OneByte).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MetadataExchange);
        assert!(e.message().contains("refused the connection"), "{e}");
        for cut in [&b""[..], b"\x02y"] {
            let e = read_response(&mut &cut[..], &OneByte).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::MetadataExchange);
            assert!(e.message().contains("closed the connection"), "{e}");
        }
        let mut stalled = Trickle {
            data: b"\x01".to_vec(),
            chunk: 9,
        };
        assert_eq!(
            read_response(&mut stalled, &OneByte).unwrap_err().kind(),
            ErrorKind::Timeout
        );
    }

    #[test]
    fn an_oversized_length_is_refused_before_allocating() {
        let e = bounded_length([0, 0, 0x40, 1]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MetadataExchange);
        assert!(e.message().contains("16385"), "{e}");
        assert_eq!(bounded_length([0, 0, 0x40, 0]).unwrap(), 16384);
    }
}
