//! The Cloud SQL metadata exchange (MDX), server side (spec §6.6): a connector that saw
//! `mdxProtocolSupport: ["CLIENT_PROTOCOL_TYPE"]` writes, before its first database bytes,
//! `CSQLMDEX` + a big-endian u32 length + a protobuf `MetadataExchangeRequest`; the proxy
//! answers with the same framing around a `MetadataExchangeResponse`.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout, timeout_at, Instant};

use crate::inbound::Inbound;
use crate::proto;

/// The 8 bytes that open every MDX frame.
pub const SIGNATURE: &[u8; 8] = b"CSQLMDEX";
/// Signature plus length.
pub const HEADER_LEN: usize = 12;
/// The largest payload either side accepts (the connectors' `maxMessageSize`).
pub const MAX_MESSAGE_SIZE: u32 = 16 * 1024;
/// How long to wait for the first bytes. Go's mock waits 100 ms; a loaded test machine
/// needs more, and clients of server-speaks-first databases (MySQL) send nothing at all,
/// so this is also what they lose per connection.
pub const PEEK_TIMEOUT: Duration = Duration::from_millis(500);
/// Once the signature is in, the rest of the frame must follow within this.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// `MetadataExchangeRequest.ClientProtocolType`: the socket the database driver uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientProtocolType {
    /// 0.
    Unspecified,
    /// 1: TCP (the Auth Proxy's TCP listeners).
    Tcp,
    /// 2: TLS (connectors that hand the driver the TLS socket).
    Tls,
    /// 3: Unix domain socket.
    Uds,
    /// A value this emulator does not know (protobuf enums are open).
    Other(i32),
}

impl ClientProtocolType {
    fn from_i32(v: i32) -> Self {
        match v {
            0 => Self::Unspecified,
            1 => Self::Tcp,
            2 => Self::Tls,
            3 => Self::Uds,
            n => Self::Other(n),
        }
    }

    fn as_i32(self) -> i32 {
        match self {
            Self::Unspecified => 0,
            Self::Tcp => 1,
            Self::Tls => 2,
            Self::Uds => 3,
            Self::Other(n) => n,
        }
    }

    /// The proto enum value name (`TCP`, …), or the number for unknown values.
    pub fn name(self) -> String {
        match self {
            Self::Unspecified => "CLIENT_PROTOCOL_TYPE_UNSPECIFIED".to_string(),
            Self::Tcp => "TCP".to_string(),
            Self::Tls => "TLS".to_string(),
            Self::Uds => "UDS".to_string(),
            Self::Other(n) => n.to_string(),
        }
    }
}

/// `MetadataExchangeRequest {string user_agent = 1; ClientProtocolType client_protocol_type = 2;}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataExchangeRequest {
    /// The connector's user agent.
    pub user_agent: String,
    /// The driver's socket type.
    pub client_protocol_type: ClientProtocolType,
}

impl MetadataExchangeRequest {
    /// Decodes the protobuf payload (without the frame header).
    pub fn decode(payload: &[u8]) -> Result<Self, proto::DecodeError> {
        let mut req = Self {
            user_agent: String::new(),
            client_protocol_type: ClientProtocolType::Unspecified,
        };
        for f in proto::fields(payload)? {
            match f.number {
                1 => req.user_agent = proto::string_value(1, f.value)?,
                2 => {
                    req.client_protocol_type =
                        ClientProtocolType::from_i32(proto::enum_value(2, f.value)?)
                }
                _ => {} // Fields added after this emulator was written.
            }
        }
        Ok(req)
    }

    /// The protobuf payload (what a connector sends).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.user_agent.is_empty() {
            proto::put_string(&mut out, 1, &self.user_agent);
        }
        if self.client_protocol_type != ClientProtocolType::Unspecified {
            proto::put_enum(&mut out, 2, self.client_protocol_type.as_i32());
        }
        out
    }
}

/// `MetadataExchangeResponse.ResponseStatusCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseStatusCode {
    /// 0.
    Unspecified,
    /// 1.
    Ok,
    /// 2.
    Error,
}

/// `MetadataExchangeResponse {ResponseStatusCode response_status_code = 1; string error_message = 2;}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataExchangeResponse {
    /// OK or ERROR.
    pub response_status_code: ResponseStatusCode,
    /// Why, for ERROR.
    pub error_message: String,
}

impl MetadataExchangeResponse {
    /// The success answer.
    pub fn ok() -> Self {
        Self {
            response_status_code: ResponseStatusCode::Ok,
            error_message: String::new(),
        }
    }

    /// A failure answer.
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            response_status_code: ResponseStatusCode::Error,
            error_message: message.into(),
        }
    }

    /// The protobuf payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let code = match self.response_status_code {
            ResponseStatusCode::Unspecified => 0,
            ResponseStatusCode::Ok => 1,
            ResponseStatusCode::Error => 2,
        };
        if code != 0 {
            proto::put_enum(&mut out, 1, code);
        }
        if !self.error_message.is_empty() {
            proto::put_string(&mut out, 2, &self.error_message);
        }
        out
    }
}

/// `CSQLMDEX` + big-endian length + `payload`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// What happened at the start of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No signature: whatever was read belongs to the database protocol and is still
    /// buffered for the backend.
    Absent,
    /// A valid request, answered OK.
    Accepted(MetadataExchangeRequest),
    /// A bad frame (answered ERROR unless it was too large); the connection must close.
    Rejected(String),
}

/// Buffers `n` bytes; `false` if the client stalls past [`MESSAGE_TIMEOUT`].
async fn fill_in_time<S: AsyncRead + AsyncWrite + Unpin>(
    inbound: &mut Inbound<S>,
    n: usize,
) -> io::Result<bool> {
    match timeout(MESSAGE_TIMEOUT, inbound.fill(n)).await {
        Ok(r) => r.map(|()| true),
        Err(_) => Ok(false),
    }
}

/// Looks for a metadata exchange at the start of `inbound` and answers it.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    inbound: &mut Inbound<S>,
) -> io::Result<Outcome> {
    // Stop as soon as the bytes cannot be the signature, so database clients that write
    // first (Postgres) lose no time; wait the full timeout only for silent ones.
    let deadline = Instant::now() + PEEK_TIMEOUT;
    while inbound.buffered().len() < SIGNATURE.len() && SIGNATURE.starts_with(inbound.buffered()) {
        match timeout_at(deadline, inbound.read_more()).await {
            Err(_) | Ok(Ok(0)) => return Ok(Outcome::Absent),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
    if !inbound.buffered().starts_with(SIGNATURE) {
        return Ok(Outcome::Absent);
    }

    if !fill_in_time(inbound, HEADER_LEN).await? {
        return Ok(Outcome::Rejected("no MDX length within 10 s".into()));
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&inbound.buffered()[SIGNATURE.len()..HEADER_LEN]);
    let len = u32::from_be_bytes(len);
    if len > MAX_MESSAGE_SIZE {
        // Not worth an answer: the peer is not a connector.
        return Ok(Outcome::Rejected(format!(
            "MDX message of {len} bytes exceeds {MAX_MESSAGE_SIZE}"
        )));
    }
    let total = HEADER_LEN + len as usize;
    if !fill_in_time(inbound, total).await? {
        return Ok(Outcome::Rejected(
            "incomplete MDX message after 10 s".into(),
        ));
    }
    let msg = inbound.take(total);
    let (outcome, response) = match MetadataExchangeRequest::decode(&msg[HEADER_LEN..]) {
        Ok(req) => (Outcome::Accepted(req), MetadataExchangeResponse::ok()),
        Err(e) => {
            let message = format!("invalid MetadataExchangeRequest: {e}");
            let response = MetadataExchangeResponse::error(message.clone());
            (Outcome::Rejected(message), response)
        }
    };
    let stream = inbound.stream_mut();
    stream.write_all(&frame(&response.encode())).await?;
    stream.flush().await?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn ok_response_bytes() {
        assert_eq!(
            frame(&MetadataExchangeResponse::ok().encode()),
            b"CSQLMDEX\x00\x00\x00\x02\x08\x01"
        );
        assert_eq!(
            frame(&MetadataExchangeResponse::error("bad").encode()),
            b"CSQLMDEX\x00\x00\x00\x07\x08\x02\x12\x03bad"
        );
    }

    #[test]
    fn request_round_trip() {
        let req = MetadataExchangeRequest {
            user_agent: "cloud-sql-go-connector/1.2".into(),
            client_protocol_type: ClientProtocolType::Tcp,
        };
        let payload = req.encode();
        let mut want = vec![0x0a, 26];
        want.extend_from_slice(b"cloud-sql-go-connector/1.2");
        want.extend_from_slice(&[0x10, 0x01]);
        assert_eq!(payload, want);
        assert_eq!(MetadataExchangeRequest::decode(&payload).unwrap(), req);

        // Field order does not matter, unknown fields are skipped, enums are open.
        let req =
            MetadataExchangeRequest::decode(&[0x10, 0x03, 0x18, 0x05, 0x0a, 0x01, b'u']).unwrap();
        assert_eq!(req.client_protocol_type, ClientProtocolType::Uds);
        assert_eq!(req.user_agent, "u");
        let req = MetadataExchangeRequest::decode(&[0x10, 0x09]).unwrap();
        assert_eq!(req.client_protocol_type.name(), "9");
        let req = MetadataExchangeRequest::decode(&[]).unwrap();
        assert_eq!(
            req.client_protocol_type.name(),
            "CLIENT_PROTOCOL_TYPE_UNSPECIFIED"
        );
        assert!(MetadataExchangeRequest::decode(&[0x0a, 0x01, 0x01, 0x10]).is_err());
        assert!(MetadataExchangeRequest::decode(&[0x12, 0x00]).is_err());
    }

    /// Runs `serve` against a client that writes `sent` and then stays open.
    async fn exchange(sent: &[u8]) -> (Outcome, Vec<u8>, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(sent).await.unwrap();
        let mut inbound = Inbound::new(server);
        let outcome = serve(&mut inbound).await.unwrap();
        let (_, rest) = inbound.into_parts();
        let mut answer = Vec::new();
        drop(client.shutdown().await);
        // The server half is gone, so the client reads what it was sent, then EOF.
        client.read_to_end(&mut answer).await.unwrap();
        (outcome, answer, rest)
    }

    #[tokio::test]
    async fn answers_ok_and_keeps_following_bytes() {
        let req = MetadataExchangeRequest {
            user_agent: "ua".into(),
            client_protocol_type: ClientProtocolType::Tls,
        };
        let mut sent = frame(&req.encode());
        sent.extend_from_slice(b"\x00\x00\x00\x08\x04\xd2\x16\x2f");
        let (outcome, answer, rest) = exchange(&sent).await;
        assert_eq!(outcome, Outcome::Accepted(req));
        assert_eq!(answer, b"CSQLMDEX\x00\x00\x00\x02\x08\x01");
        assert_eq!(rest, b"\x00\x00\x00\x08\x04\xd2\x16\x2f");
    }

    #[tokio::test]
    async fn leaves_database_bytes_alone() {
        let (outcome, answer, rest) = exchange(b"\x00\x00\x00\x08\x04\xd2\x16\x2f").await;
        assert_eq!(outcome, Outcome::Absent);
        assert!(answer.is_empty());
        assert_eq!(rest, b"\x00\x00\x00\x08\x04\xd2\x16\x2f");
        // A prefix of the signature that stops short, then silence: not MDX either.
        let (outcome, _, rest) = exchange(b"CSQL").await;
        assert_eq!(outcome, Outcome::Absent);
        assert_eq!(rest, b"CSQL");
        let (outcome, _, rest) = exchange(b"").await;
        assert_eq!(outcome, Outcome::Absent);
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn rejects_bad_frames() {
        let (outcome, answer, _) = exchange(b"CSQLMDEX\x00\x00\x00\x02\x12\x05").await;
        assert!(matches!(outcome, Outcome::Rejected(_)), "{outcome:?}");
        let message = "invalid MetadataExchangeRequest: field 2: length 5 past the end";
        let mut want = b"CSQLMDEX\x00\x00\x00\x43\x08\x02\x12\x3f".to_vec();
        want.extend_from_slice(message.as_bytes());
        assert_eq!(answer, want);
        let (outcome, answer, _) = exchange(b"CSQLMDEX\x00\x00\x40\x01").await;
        assert!(matches!(outcome, Outcome::Rejected(_)), "{outcome:?}");
        assert!(answer.is_empty());
    }
}
