//! The few Postgres wire messages the proxy reads or writes before it relays (Postgres
//! docs, "Message Formats"): the untyped packets that open a connection (SSLRequest,
//! GSSENCRequest, CancelRequest, StartupMessage), and ErrorResponse.
//!
//! The `postgres-protocol` crate encodes only the client's messages and decodes only the
//! server's; the server side needs the opposite, so these few are written out here (and
//! checked against that crate in the tests).

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::inbound::Inbound;

/// SSLRequest's code in place of a protocol version.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// GSSENCRequest's code.
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// CancelRequest's code.
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// Postgres refuses longer opening packets (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET_LEN: usize = 10_000;
/// SQLSTATE `invalid_authorization_specification`.
pub const SQLSTATE_INVALID_AUTHORIZATION: &str = "28000";
/// SQLSTATE `feature_not_supported`.
pub const SQLSTATE_FEATURE_NOT_SUPPORTED: &str = "0A000";

/// A StartupMessage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    /// Protocol major version (always 3 here).
    pub major: u16,
    /// Protocol minor version; the backend negotiates it down if needed.
    pub minor: u16,
    /// Parameters in the order sent (`user`, `database`, `options`, …).
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// The value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The database user, which Postgres requires.
    pub fn user(&self) -> Option<&str> {
        self.param("user").filter(|u| !u.is_empty())
    }
}

/// The first packet of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstPacket {
    /// Asks for TLS inside the connection.
    SslRequest,
    /// Asks for GSSAPI encryption.
    GssEncRequest,
    /// Cancels a query on another connection.
    CancelRequest,
    /// Starts a session.
    Startup(StartupMessage),
}

/// A first packet Postgres would not accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgError {
    /// The length word is out of range; Postgres closes without an answer.
    BadLength(u32),
    /// Not protocol 3.x.
    UnsupportedProtocol(u16, u16),
    /// Bad layout inside the packet.
    Malformed(&'static str),
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadLength(n) => write!(f, "invalid length of startup packet ({n})"),
            Self::UnsupportedProtocol(major, minor) => write!(
                f,
                "unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.2"
            ),
            Self::Malformed(what) => write!(f, "invalid startup packet layout: {what}"),
        }
    }
}

impl PgError {
    /// The ErrorResponse Postgres sends for this, if it sends one.
    pub fn response(&self) -> Option<Vec<u8>> {
        let code = match self {
            Self::BadLength(_) => return None,
            Self::UnsupportedProtocol(..) => SQLSTATE_FEATURE_NOT_SUPPORTED,
            // Postgres: ERRCODE_PROTOCOL_VIOLATION.
            Self::Malformed(_) => "08P01",
        };
        Some(error_response("FATAL", code, &self.to_string()))
    }
}

/// The total length of the packet whose length word is `header`.
pub fn packet_len(header: [u8; 4]) -> Result<usize, PgError> {
    let len = u32::from_be_bytes(header);
    match usize::try_from(len) {
        Ok(n) if (8..=MAX_STARTUP_PACKET_LEN).contains(&n) => Ok(n),
        _ => Err(PgError::BadLength(len)),
    }
}

fn cstring(buf: &mut &[u8]) -> Result<String, PgError> {
    let Some(end) = buf.iter().position(|&b| b == 0) else {
        return Err(PgError::Malformed("unterminated string"));
    };
    // Postgres itself does not insist on UTF-8 here; a lossy name never equals a real one.
    let s = String::from_utf8_lossy(&buf[..end]).into_owned();
    *buf = &buf[end + 1..];
    Ok(s)
}

/// Parses one complete first packet, length word included.
pub fn parse_first_packet(packet: &[u8]) -> Result<FirstPacket, PgError> {
    let (Some(len), Some(code)) = (packet.get(..4), packet.get(4..8)) else {
        return Err(PgError::BadLength(0));
    };
    let mut len4 = [0u8; 4];
    len4.copy_from_slice(len);
    if packet_len(len4)? != packet.len() {
        return Err(PgError::Malformed("length word does not match the packet"));
    }
    let mut code4 = [0u8; 4];
    code4.copy_from_slice(code);
    let code = u32::from_be_bytes(code4);
    let body = &packet[8..];
    match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE if !body.is_empty() => {
            Err(PgError::Malformed("encryption request with a body"))
        }
        SSL_REQUEST_CODE => Ok(FirstPacket::SslRequest),
        GSSENC_REQUEST_CODE => Ok(FirstPacket::GssEncRequest),
        // Protocol 3.2 made the secret key longer; the backend checks it, not the proxy.
        CANCEL_REQUEST_CODE => Ok(FirstPacket::CancelRequest),
        _ => {
            let (major, minor) = ((code >> 16) as u16, code as u16);
            if major != 3 {
                return Err(PgError::UnsupportedProtocol(major, minor));
            }
            parse_params(body).map(|params| {
                FirstPacket::Startup(StartupMessage {
                    major,
                    minor,
                    params,
                })
            })
        }
    }
}

fn parse_params(mut body: &[u8]) -> Result<Vec<(String, String)>, PgError> {
    if body.last() != Some(&0) {
        return Err(PgError::Malformed("expected terminator as last byte"));
    }
    let mut params = Vec::new();
    loop {
        let name = cstring(&mut body)?;
        if name.is_empty() {
            break;
        }
        let value = cstring(&mut body)?;
        params.push((name, value));
    }
    if !body.is_empty() {
        return Err(PgError::Malformed("bytes after the terminator"));
    }
    Ok(params)
}

/// An ErrorResponse with the given severity, SQLSTATE and message.
pub fn error_response(severity: &str, code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    // `S` is localised in real servers, `V` never is (Postgres 9.6+ sends both).
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
    ] {
        body.push(field);
        // Strings on the wire end at the first NUL; drop any so the message stays whole.
        body.extend(value.bytes().filter(|&b| b != 0));
        body.push(0);
    }
    body.push(0);
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(b'E');
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Buffers the client's next opening packet and parses it; the packet stays in the buffer
/// (its length is returned), so it can still be relayed unchanged.
pub async fn peek_first_packet<S: AsyncRead + AsyncWrite + Unpin>(
    inbound: &mut Inbound<S>,
) -> io::Result<Result<(FirstPacket, usize), PgError>> {
    inbound.fill(4).await?;
    let mut header = [0u8; 4];
    header.copy_from_slice(&inbound.buffered()[..4]);
    let len = match packet_len(header) {
        Ok(n) => n,
        Err(e) => return Ok(Err(e)),
    };
    inbound.fill(len).await?;
    Ok(parse_first_packet(&inbound.buffered()[..len]).map(|p| (p, len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use fallible_iterator::FallibleIterator;
    use postgres_protocol::message::{backend, frontend};

    fn startup(params: &[(&str, &str)]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        frontend::startup_message(params.iter().copied(), &mut buf).unwrap();
        buf.to_vec()
    }

    #[test]
    fn parses_startup_from_a_real_encoder() {
        let packet = startup(&[("user", "sa@p.iam"), ("database", "app")]);
        let FirstPacket::Startup(msg) = parse_first_packet(&packet).unwrap() else {
            panic!("not a startup message");
        };
        assert_eq!((msg.major, msg.minor), (3, 0));
        assert_eq!(msg.user(), Some("sa@p.iam"));
        assert_eq!(msg.param("database"), Some("app"));
        assert_eq!(msg.param("options"), None);

        let packet = startup(&[("database", "app")]);
        let FirstPacket::Startup(msg) = parse_first_packet(&packet).unwrap() else {
            panic!("not a startup message");
        };
        assert_eq!(msg.user(), None);
    }

    #[test]
    fn parses_requests() {
        let mut buf = BytesMut::new();
        frontend::ssl_request(&mut buf);
        assert_eq!(parse_first_packet(&buf), Ok(FirstPacket::SslRequest));
        assert_eq!(
            parse_first_packet(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]),
            Ok(FirstPacket::GssEncRequest)
        );
        let mut buf = BytesMut::new();
        frontend::cancel_request(42, 7, &mut buf);
        assert_eq!(parse_first_packet(&buf), Ok(FirstPacket::CancelRequest));
    }

    #[test]
    fn rejects_bad_packets() {
        assert_eq!(packet_len([0, 0, 0, 7]), Err(PgError::BadLength(7)));
        assert_eq!(
            packet_len([0, 0, 0x27, 0x11]),
            Err(PgError::BadLength(10_001))
        );
        assert_eq!(packet_len([0, 0, 0x27, 0x10]), Ok(10_000));
        // Protocol 2.0.
        assert_eq!(
            parse_first_packet(&[0, 0, 0, 9, 0, 2, 0, 0, 0]),
            Err(PgError::UnsupportedProtocol(2, 0))
        );
        // Missing the final terminator, a name without a value, a short length word.
        let mut p = startup(&[("user", "u")]);
        p.pop();
        let n = p.len() as u8;
        p[3] = n;
        assert!(matches!(parse_first_packet(&p), Err(PgError::Malformed(_))));
        assert!(matches!(
            parse_first_packet(&[0, 0, 0, 13, 0, 3, 0, 0, b'u', 0, b'v', 0, 0]),
            Ok(FirstPacket::Startup(_))
        ));
        // Name, empty value, no terminator (Postgres: "expected terminator as last byte").
        assert!(matches!(
            parse_first_packet(&[0, 0, 0, 11, 0, 3, 0, 0, b'u', 0, 0]),
            Err(PgError::Malformed(_))
        ));
        assert!(matches!(
            parse_first_packet(&[0, 0, 0, 10, 0, 3, 0, 0, b'u', 0]),
            Err(PgError::Malformed(_))
        ));
        assert!(matches!(
            parse_first_packet(&[0, 0, 0, 9, 0x04, 0xd2, 0x16, 0x2f, 0]),
            Err(PgError::Malformed(_))
        ));
        assert!(matches!(
            parse_first_packet(&[0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2f]),
            Err(PgError::Malformed(_))
        ));
    }

    #[test]
    fn error_response_decodes_with_a_real_decoder() {
        let bytes = error_response("FATAL", "28000", "nope for \"u\"\0!");
        assert_eq!(&bytes[..5], [b'E', 0, 0, 0, (bytes.len() - 1) as u8]);
        let mut buf = BytesMut::from(&bytes[..]);
        let Some(backend::Message::ErrorResponse(body)) =
            backend::Message::parse(&mut buf).unwrap()
        else {
            panic!("not an ErrorResponse");
        };
        assert!(buf.is_empty());
        let fields: Vec<(u8, String)> = body
            .fields()
            .map(|f| {
                Ok((
                    f.type_(),
                    String::from_utf8_lossy(f.value_bytes()).into_owned(),
                ))
            })
            .collect()
            .unwrap();
        assert_eq!(
            fields,
            vec![
                (b'S', "FATAL".into()),
                (b'V', "FATAL".into()),
                (b'C', "28000".into()),
                (b'M', "nope for \"u\"!".into()),
            ]
        );
        assert_eq!(PgError::BadLength(3).response(), None);
        assert!(PgError::UnsupportedProtocol(2, 0).response().is_some());
    }

    #[tokio::test]
    async fn peeks_without_consuming() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(1024);
        let packet = startup(&[("user", "x")]);
        client.write_all(&packet).await.unwrap();
        client.write_all(b"Q...").await.unwrap();
        let mut inbound = Inbound::new(server);
        let (first, len) = peek_first_packet(&mut inbound).await.unwrap().unwrap();
        assert!(matches!(first, FirstPacket::Startup(_)));
        assert_eq!(len, packet.len());
        assert!(inbound.buffered().starts_with(&packet));

        // A TLS ClientHello (Postgres 17 direct SSL) is not a startup packet.
        let (mut client, server) = tokio::io::duplex(1024);
        client
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
            .await
            .unwrap();
        let mut inbound = Inbound::new(server);
        assert_eq!(
            peek_first_packet(&mut inbound).await.unwrap(),
            Err(PgError::BadLength(0x1603_0102))
        );
    }
}
