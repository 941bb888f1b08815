//! The Cloud SQL metadata exchange (MDX), sent right after the TLS handshake
//! when `connectSettings` lists `CLIENT_PROTOCOL_TYPE` in
//! `mdxProtocolSupport` (Go connector `metadataexchange.go`).
//!
//! Both directions are framed as ASCII `CSQLMDEX`, a big-endian u32 length and
//! a protobuf message:
//!
//! ```text
//! MetadataExchangeRequest  { string user_agent = 1; ClientProtocolType client_protocol_type = 2; }
//! MetadataExchangeResponse { ResponseStatusCode response_status_code = 1; string error_message = 2; }
//! ```
//!
//! The two messages have three scalar fields between them, so they are
//! encoded here by hand (a protobuf crate would add a code generator for
//! that); the tests pin the bytes.

use std::io::{self, Read, Write};

use crate::Error;

/// Every MDX frame starts with this.
pub(crate) const SIGNATURE: &[u8; 8] = b"CSQLMDEX";
/// Google bounds an MDX message at 16 KiB.
pub(crate) const MAX_MESSAGE: u32 = 16 * 1024;

/// How the database driver reaches the connector. The driver sees plain bytes
/// through an in-process, already encrypted channel: Google's `TLS` case,
/// which lets MySQL use `caching_sha2_password` without its own TLS.
const CLIENT_PROTOCOL_TLS: u64 = 2;
const STATUS_OK: u64 = 1;
const STATUS_ERROR: u64 = 2;

/// The framed request.
pub(crate) fn request(user_agent: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(user_agent.len() + 8);
    body.push(0x0a); // field 1, length-delimited
    put_varint(&mut body, user_agent.len() as u64);
    body.extend_from_slice(user_agent.as_bytes());
    body.push(0x10); // field 2, varint
    put_varint(&mut body, CLIENT_PROTOCOL_TLS);

    let mut frame = Vec::with_capacity(12 + body.len());
    frame.extend_from_slice(SIGNATURE);
    // A user agent is far below 4 GiB; the connector builds it.
    frame.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Checks a response header (signature and length); returns the body length.
pub(crate) fn response_length(header: &[u8; 12]) -> Result<usize, Error> {
    if &header[..8] != SIGNATURE {
        return Err(Error::MetadataExchange(
            "the server did not answer the metadata exchange (no CSQLMDEX signature)".into(),
        ));
    }
    let len = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    if len > MAX_MESSAGE {
        return Err(Error::MetadataExchange(format!(
            "the server's metadata exchange response claims {len} bytes, more than {MAX_MESSAGE}"
        )));
    }
    Ok(len as usize)
}

/// Decodes a response body: `Ok` if the server accepted, else the server's
/// message as [`Error::MetadataExchange`].
pub(crate) fn check_response(body: &[u8]) -> Result<(), Error> {
    let malformed = |what: &str| {
        Error::MetadataExchange(format!("malformed metadata exchange response: {what}"))
    };
    let mut status = 0;
    let mut message = String::new();
    let mut rest = body;
    while !rest.is_empty() {
        let key = take_varint(&mut rest).ok_or_else(|| malformed("bad field key"))?;
        match (key >> 3, key & 7) {
            (1, 0) => status = take_varint(&mut rest).ok_or_else(|| malformed("bad status"))?,
            (2, 2) => {
                let bytes = take_bytes(&mut rest).ok_or_else(|| malformed("bad message"))?;
                message = String::from_utf8_lossy(bytes).into_owned();
            }
            // Unknown fields are skipped, as protobuf requires.
            (_, 0) => {
                take_varint(&mut rest).ok_or_else(|| malformed("bad varint field"))?;
            }
            (_, 1) => rest = rest.get(8..).ok_or_else(|| malformed("short fixed64"))?,
            (_, 2) => {
                take_bytes(&mut rest).ok_or_else(|| malformed("bad length-delimited field"))?;
            }
            (_, 5) => rest = rest.get(4..).ok_or_else(|| malformed("short fixed32"))?,
            (_, t) => return Err(malformed(&format!("wire type {t}"))),
        }
    }
    match status {
        STATUS_OK => Ok(()),
        STATUS_ERROR => Err(Error::MetadataExchange(format!(
            "the server refused the connection: {message}"
        ))),
        other => Err(malformed(&format!("status {other}"))),
    }
}

/// Runs the exchange on an established TLS stream (blocking; the caller has
/// set a read timeout).
pub(crate) fn exchange<S: Read + Write>(stream: &mut S, user_agent: &str) -> Result<(), Error> {
    stream
        .write_all(&request(user_agent))
        .and_then(|()| stream.flush())
        .map_err(io_error)?;
    let mut header = [0u8; 12];
    stream.read_exact(&mut header).map_err(io_error)?;
    let mut body = vec![0u8; response_length(&header)?];
    stream.read_exact(&mut body).map_err(io_error)?;
    check_response(&body)
}

/// [`exchange`] for tokio streams.
#[cfg(feature = "tokio")]
pub(crate) async fn exchange_async<S>(stream: &mut S, user_agent: &str) -> Result<(), Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(&request(user_agent))
        .await
        .map_err(io_error)?;
    stream.flush().await.map_err(io_error)?;
    let mut header = [0u8; 12];
    stream.read_exact(&mut header).await.map_err(io_error)?;
    let mut body = vec![0u8; response_length(&header)?];
    stream.read_exact(&mut body).await.map_err(io_error)?;
    check_response(&body)
}

fn io_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            Error::Timeout("the metadata exchange response did not arrive in time".into())
        }
        io::ErrorKind::UnexpectedEof => Error::MetadataExchange(
            "the server closed the connection during the metadata exchange".into(),
        ),
        _ => Error::MetadataExchange(format!("the metadata exchange failed: {e}")),
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(input: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for (i, b) in input.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *input = &input[i + 1..];
            return Some(v);
        }
    }
    None
}

fn take_bytes<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(take_varint(input)?).ok()?;
    let bytes = input.get(..len)?;
    *input = &input[len..];
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes_match_the_proto() {
        let frame = request("ua/1");
        assert_eq!(&frame[..8], b"CSQLMDEX");
        assert_eq!(&frame[8..12], &[0, 0, 0, 8]);
        assert_eq!(&frame[12..], &[0x0a, 4, b'u', b'a', b'/', b'1', 0x10, 0x02]);

        // A user agent longer than 127 bytes takes a two-byte length varint.
        let long = "x".repeat(200);
        let frame = request(&long);
        assert_eq!(&frame[12..15], &[0x0a, 0xc8, 0x01]);
        assert_eq!(frame.len(), 12 + 3 + 200 + 2);
    }

    #[test]
    fn googles_ok_response_is_accepted() {
        // The Go connector's mock answers exactly `CSQLMDEX 00 00 00 02 08 01`.
        let frame = b"CSQLMDEX\x00\x00\x00\x02\x08\x01";
        let len = response_length(frame[..12].try_into().unwrap()).unwrap();
        assert_eq!(len, 2);
        check_response(&frame[12..]).unwrap();
    }

    #[test]
    fn an_error_response_carries_the_servers_message() {
        let mut body = vec![0x08, 0x02, 0x12, 5];
        body.extend_from_slice(b"nope!");
        match check_response(&body) {
            Err(Error::MetadataExchange(m)) => assert!(m.ends_with("nope!"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_fields_are_skipped() {
        // field 3 varint, field 4 bytes, field 5 fixed32, then status OK
        let body = [
            0x18, 0x96, 0x01, 0x22, 2, b'h', b'i', 0x2d, 1, 2, 3, 4, 0x08, 0x01,
        ];
        check_response(&body).unwrap();
    }

    #[test]
    fn exchange_over_a_stream_reads_exactly_the_response() {
        // A fake server: Google's OK response followed by database bytes,
        // which the exchange must leave unread.
        struct Fake {
            input: io::Cursor<Vec<u8>>,
            written: Vec<u8>,
        }
        impl Read for Fake {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.input.read(buf)
            }
        }
        impl Write for Fake {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.written.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut fake = Fake {
            input: io::Cursor::new(b"CSQLMDEX\x00\x00\x00\x02\x08\x01RHELLO".to_vec()),
            written: Vec::new(),
        };
        exchange(&mut fake, "ua/1").unwrap();
        assert_eq!(fake.written, request("ua/1"));
        let mut rest = Vec::new();
        fake.input.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"RHELLO");

        let mut truncated = Fake {
            input: io::Cursor::new(b"CSQLMDEX\x00\x00\x00\x05\x08".to_vec()),
            written: Vec::new(),
        };
        let e = exchange(&mut truncated, "ua").unwrap_err().to_string();
        assert!(e.contains("closed the connection"), "{e}");
    }

    #[test]
    fn bad_frames_are_typed_errors_never_panics() {
        assert!(response_length(b"PGSQLXXX\x00\x00\x00\x02").is_err());
        let e = response_length(b"CSQLMDEX\x00\x01\x00\x01")
            .unwrap_err()
            .to_string();
        assert!(e.contains("65537"), "{e}");
        for body in [
            &[][..],          // no status
            &[0x08],          // truncated varint
            &[0x08, 0x07],    // unknown status
            &[0x12, 9, b'x'], // message longer than the body
            &[0x0b],          // wire type 3 (groups)
            &[0xff; 11],      // varint longer than 10 bytes
            &[0x09, 1, 2],    // short fixed64
        ] {
            assert!(
                matches!(check_response(body), Err(Error::MetadataExchange(_))),
                "{body:?}"
            );
        }
    }
}
