//! The metadata exchange right after the TLS handshake: one framed protobuf
//! request, one framed response, before any database byte. Framing and
//! messages differ per service (`cloudsql::mdx`, `alloydb::mdx`); this reads
//! either response over a blocking or a tokio stream, with its length bounded
//! before anything is allocated for it.
//!
//! The request is handed to rustls before the handshake starts (see
//! `dial`): rustls holds it until the server is verified and the handshake
//! done, then sends it in the same TCP send as the client's last handshake
//! flight. Sent on its own it would wait for the server's delayed ACK
//! (~40 ms): a guest's socket cannot turn Nagle off (wasi:sockets has no
//! TCP_NODELAY).

use std::io::{self, Read};

use crate::connection_info::MdxKind;
use crate::{alloydb, cloudsql, Error};

/// Google bounds a metadata exchange message at 16 KiB.
pub(crate) const MAX_MESSAGE: u32 = 16 * 1024;

/// One exchange, ready to run.
#[derive(Debug)]
pub(crate) enum Exchange<'a> {
    CloudSql {
        user_agent: &'a str,
    },
    AlloyDb {
        user_agent: &'a str,
        token: &'a str,
        iam: bool,
    },
}

impl<'a> Exchange<'a> {
    /// The exchange a connection of `kind` needs, if any.
    pub(crate) fn for_kind(kind: &'a MdxKind, user_agent: &'a str) -> Option<Self> {
        match kind {
            MdxKind::None => None,
            MdxKind::CloudSql => Some(Self::CloudSql { user_agent }),
            MdxKind::AlloyDb { token, iam } => Some(Self::AlloyDb {
                user_agent,
                token: token.expose(),
                iam: *iam,
            }),
        }
    }

    /// The framed request.
    pub(crate) fn request(&self) -> Vec<u8> {
        match self {
            Self::CloudSql { user_agent } => cloudsql::mdx::request(user_agent),
            Self::AlloyDb {
                user_agent,
                token,
                iam,
            } => alloydb::mdx::request(user_agent, token, *iam),
        }
    }

    fn header_len(&self) -> usize {
        match self {
            Self::CloudSql { .. } => cloudsql::mdx::HEADER_LEN,
            Self::AlloyDb { .. } => alloydb::mdx::HEADER_LEN,
        }
    }

    /// Checks a response header; returns the body length.
    fn body_length(&self, header: &[u8]) -> Result<usize, Error> {
        match self {
            Self::CloudSql { .. } => cloudsql::mdx::response_length(header),
            Self::AlloyDb { .. } => alloydb::mdx::response_length(header),
        }
    }

    /// `Ok` if the server accepted, else its message as an error.
    fn check(&self, body: &[u8]) -> Result<(), Error> {
        match self {
            Self::CloudSql { .. } => cloudsql::mdx::check_response(body),
            Self::AlloyDb { .. } => alloydb::mdx::check_response(body),
        }
    }
}

/// Reads and checks the response to `ex`'s request (blocking; the caller has
/// set a read timeout).
pub(crate) fn read_response<S: Read>(stream: &mut S, ex: &Exchange<'_>) -> Result<(), Error> {
    let mut header = vec![0u8; ex.header_len()];
    stream.read_exact(&mut header).map_err(io_error)?;
    let mut body = vec![0u8; ex.body_length(&header)?];
    stream.read_exact(&mut body).map_err(io_error)?;
    ex.check(&body)
}

/// [`read_response`] for tokio streams (the caller bounds it with a timeout).
#[cfg(feature = "tokio")]
pub(crate) async fn read_response_async<S>(stream: &mut S, ex: &Exchange<'_>) -> Result<(), Error>
where
    S: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut header = vec![0u8; ex.header_len()];
    stream.read_exact(&mut header).await.map_err(io_error)?;
    let mut body = vec![0u8; ex.body_length(&header)?];
    stream.read_exact(&mut body).await.map_err(io_error)?;
    ex.check(&body)
}

/// The body length a response header announces, bounded by [`MAX_MESSAGE`]
/// before anything is allocated for it.
pub(crate) fn bounded_length(be_length: [u8; 4]) -> Result<usize, Error> {
    let len = u32::from_be_bytes(be_length);
    if len > MAX_MESSAGE {
        return Err(Error::MetadataExchange(format!(
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
        2 => Err(Error::MetadataExchange(format!(
            "the server refused the connection: {message}"
        ))),
        other => Err(malformed(format!("response code {other}"))),
    }
}

/// A response that does not decode.
pub(crate) fn malformed(what: impl std::fmt::Display) -> Error {
    Error::MetadataExchange(format!("malformed metadata exchange response: {what}"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Secret;

    fn answering(bytes: &[u8]) -> io::Cursor<Vec<u8>> {
        io::Cursor::new(bytes.to_vec())
    }

    /// What the exchange left unread.
    fn rest(input: &mut io::Cursor<Vec<u8>>) -> Vec<u8> {
        let mut rest = Vec::new();
        input.read_to_end(&mut rest).unwrap();
        rest
    }

    #[test]
    fn each_kind_runs_its_own_exchange() {
        assert!(Exchange::for_kind(&MdxKind::None, "ua").is_none());

        // Cloud SQL: Google's OK response, then database bytes left unread.
        let ex = Exchange::for_kind(&MdxKind::CloudSql, "ua/1").unwrap();
        assert_eq!(ex.request(), cloudsql::mdx::request("ua/1"));
        let mut server = answering(b"CSQLMDEX\x00\x00\x00\x02\x08\x01RHELLO");
        read_response(&mut server, &ex).unwrap();
        assert_eq!(rest(&mut server), b"RHELLO");

        // AlloyDB: the spec's OK bytes.
        let kind = MdxKind::AlloyDb {
            token: Secret::new("tok".into()),
            iam: true,
        };
        let ex = Exchange::for_kind(&kind, "ua/1").unwrap();
        assert_eq!(ex.request(), alloydb::mdx::request("ua/1", "tok", true));
        let mut server = answering(b"\x00\x00\x00\x02\x08\x01R");
        read_response(&mut server, &ex).unwrap();
        assert_eq!(rest(&mut server), b"R");
    }

    #[test]
    fn a_server_closing_mid_response_is_a_typed_error() {
        for (kind, bytes) in [
            (MdxKind::CloudSql, &b"CSQLMDEX\x00\x00\x00\x05\x08"[..]),
            (
                MdxKind::AlloyDb {
                    token: Secret::new("t".into()),
                    iam: false,
                },
                &b"\x00\x00\x00\x0a\x08\x02\x12"[..],
            ),
            (MdxKind::CloudSql, &b"CSQL"[..]),
        ] {
            let ex = Exchange::for_kind(&kind, "ua").unwrap();
            let e = read_response(&mut answering(bytes), &ex).unwrap_err();
            assert!(
                matches!(&e, Error::MetadataExchange(m) if m.contains("closed the connection")),
                "{e:?}"
            );
        }
    }
}
