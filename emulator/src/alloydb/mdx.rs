//! The AlloyDB metadata exchange (MDX), server side (spec §7). Right after the TLS
//! handshake the client sends a big-endian u32 length and that many bytes of a protobuf
//! `MetadataExchangeRequest`; the proxy checks its OAuth2 token and answers with the same
//! framing around a `MetadataExchangeResponse`, in one write. Only then does the Postgres
//! protocol start.
//!
//! Tests can make the exchange misbehave ([`MdxMode`]) to exercise a client's error paths.

use std::fmt;
use std::io;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

use crate::inbound::Inbound;
use crate::pgwire::PgError;
use crate::proto;
use crate::tokens::{TokenStore, SCOPE_ALLOYDB_LOGIN, SCOPE_CLOUD_PLATFORM};

/// The largest request accepted (the connectors' `maxMessageSize`).
pub const MAX_MESSAGE_SIZE: u32 = 16 * 1024;
/// How long each read of the request may take (the connectors' `ioTimeout`).
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// The ERROR text of [`MdxMode::Error`] when the test gives none.
pub const DEFAULT_ERROR_MESSAGE: &str = "emulated metadata exchange failure";
/// [`MdxMode::Truncated`]: what the header claims, and what follows it.
const TRUNCATED: &[u8] = &[0, 0, 0, 10, 0x08, 0x01, 0x12];
/// [`MdxMode::Oversized`]: the length claimed (1 MiB) and the bytes actually sent.
const OVERSIZED_CLAIM: u32 = 0x0010_0000;
const OVERSIZED_SENT: usize = 64 * 1024;
/// [`MdxMode::Silent`] gives up waiting for the client to close after this long.
const SILENT_LIMIT: Duration = Duration::from_secs(600);

/// `MetadataExchangeRequest.AuthType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    /// 0, treated as [`AuthType::DbNative`].
    Unspecified,
    /// 1: the database checks a password.
    DbNative,
    /// 2: automatic IAM database authentication with the request's token.
    AutoIam,
    /// A value this emulator does not know (protobuf enums are open).
    Other(i32),
}

impl AuthType {
    fn from_i32(v: i32) -> Self {
        match v {
            0 => Self::Unspecified,
            1 => Self::DbNative,
            2 => Self::AutoIam,
            n => Self::Other(n),
        }
    }

    fn as_i32(self) -> i32 {
        match self {
            Self::Unspecified => 0,
            Self::DbNative => 1,
            Self::AutoIam => 2,
            Self::Other(n) => n,
        }
    }

    /// The proto enum value name, or the number for unknown values.
    pub fn name(self) -> String {
        match self {
            Self::Unspecified => "AUTH_TYPE_UNSPECIFIED".to_string(),
            Self::DbNative => "DB_NATIVE".to_string(),
            Self::AutoIam => "AUTO_IAM".to_string(),
            Self::Other(n) => n.to_string(),
        }
    }
}

/// `MetadataExchangeRequest {string user_agent = 1; AuthType auth_type = 2;
/// string oauth2_token = 3;}`.
#[derive(Clone, PartialEq, Eq)]
pub struct MetadataExchangeRequest {
    /// The connector's user agent.
    pub user_agent: String,
    /// How the database session is authenticated.
    pub auth_type: AuthType,
    /// An access token with the `alloydb.login` scope.
    pub oauth2_token: String,
}

impl fmt::Debug for MetadataExchangeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token.
        f.debug_struct("MetadataExchangeRequest")
            .field("user_agent", &self.user_agent)
            .field("auth_type", &self.auth_type)
            .field("oauth2_token_len", &self.oauth2_token.len())
            .finish()
    }
}

impl MetadataExchangeRequest {
    /// Decodes the protobuf payload (without the length). Unknown fields are skipped.
    pub fn decode(payload: &[u8]) -> Result<Self, proto::DecodeError> {
        let mut req = Self {
            user_agent: String::new(),
            auth_type: AuthType::Unspecified,
            oauth2_token: String::new(),
        };
        for f in proto::fields(payload)? {
            match f.number {
                1 => req.user_agent = proto::string_value(1, f.value)?,
                2 => req.auth_type = AuthType::from_i32(proto::enum_value(2, f.value)?),
                3 => req.oauth2_token = proto::string_value(3, f.value)?,
                _ => {} // Fields added after this emulator was written.
            }
        }
        Ok(req)
    }

    /// The protobuf payload (what a connector sends), fields in number order.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.user_agent.is_empty() {
            proto::put_string(&mut out, 1, &self.user_agent);
        }
        if self.auth_type != AuthType::Unspecified {
            proto::put_enum(&mut out, 2, self.auth_type.as_i32());
        }
        if !self.oauth2_token.is_empty() {
            proto::put_string(&mut out, 3, &self.oauth2_token);
        }
        out
    }
}

/// `MetadataExchangeResponse.ResponseCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseCode {
    /// 0.
    Unspecified,
    /// 1.
    Ok,
    /// 2.
    Error,
    /// Any other value.
    Other(i32),
}

/// `MetadataExchangeResponse {ResponseCode response_code = 1; string error = 2;}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataExchangeResponse {
    /// OK or ERROR.
    pub response_code: ResponseCode,
    /// Why, for ERROR.
    pub error: String,
}

impl MetadataExchangeResponse {
    /// The success answer.
    pub fn ok() -> Self {
        Self {
            response_code: ResponseCode::Ok,
            error: String::new(),
        }
    }

    /// A failure answer.
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            response_code: ResponseCode::Error,
            error: message.into(),
        }
    }

    /// The protobuf payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let code = match self.response_code {
            ResponseCode::Unspecified => 0,
            ResponseCode::Ok => 1,
            ResponseCode::Error => 2,
            ResponseCode::Other(n) => n,
        };
        if code != 0 {
            proto::put_enum(&mut out, 1, code);
        }
        if !self.error.is_empty() {
            proto::put_string(&mut out, 2, &self.error);
        }
        out
    }

    /// Decodes the protobuf payload (what a connector reads).
    pub fn decode(payload: &[u8]) -> Result<Self, proto::DecodeError> {
        let mut resp = Self {
            response_code: ResponseCode::Unspecified,
            error: String::new(),
        };
        for f in proto::fields(payload)? {
            match f.number {
                1 => {
                    resp.response_code = match proto::enum_value(1, f.value)? {
                        0 => ResponseCode::Unspecified,
                        1 => ResponseCode::Ok,
                        2 => ResponseCode::Error,
                        n => ResponseCode::Other(n),
                    }
                }
                2 => resp.error = proto::string_value(2, f.value)?,
                _ => {}
            }
        }
        Ok(resp)
    }
}

/// Big-endian u32 length + `payload`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// How the proxy answers metadata exchanges (`POST /emulator/v1/instances/{uri}/mdx`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MdxMode {
    /// Check the request and answer OK or ERROR.
    Normal,
    /// Answer ERROR with this message, whatever the request.
    Error(String),
    /// A header claiming 10 bytes, 3 bytes, then close.
    Truncated,
    /// A header claiming 1 MiB, 64 KiB of bytes, then close.
    Oversized,
    /// A Postgres ErrorResponse, as a server that expects no MDX would send, then close.
    NotMdx,
    /// Read the request and never answer; close only when the client does.
    Silent,
}

impl MdxMode {
    /// Parses `normal`, `error` (with an optional `message`), `truncated`, `oversized`,
    /// `not-mdx` or `silent`.
    pub fn parse(mode: &str, message: Option<String>) -> Result<Self, String> {
        Ok(match mode {
            "normal" => Self::Normal,
            "error" => Self::Error(message.unwrap_or_else(|| DEFAULT_ERROR_MESSAGE.to_string())),
            "truncated" => Self::Truncated,
            "oversized" => Self::Oversized,
            "not-mdx" => Self::NotMdx,
            "silent" => Self::Silent,
            other => {
                return Err(format!(
                    "unknown mode {other:?}: expected normal, error, truncated, oversized, \
                     not-mdx or silent"
                ))
            }
        })
    }
}

/// What the client sent at the start of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A complete frame holding a request.
    Request(MetadataExchangeRequest, Vec<u8>),
    /// A complete frame whose payload is no `MetadataExchangeRequest` (with the frame).
    Malformed(String, Vec<u8>),
    /// No complete frame (the client closed or stalled, or the length is 0 or too big):
    /// closed without an answer, as the reason says.
    Nothing(String),
}

impl Received {
    /// The auth type of a well-formed request.
    pub fn auth_type(&self) -> Option<AuthType> {
        match self {
            Self::Request(req, _) => Some(req.auth_type),
            _ => None,
        }
    }
}

/// Reads one request frame, each read within [`IO_TIMEOUT`]. Bytes after the frame (a
/// pipelining client's startup message) stay buffered for the backend.
pub async fn receive<S: AsyncRead + AsyncWrite + Unpin>(inbound: &mut Inbound<S>) -> Received {
    if let Err(why) = fill(inbound, 4, "length").await {
        return Received::Nothing(why);
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&inbound.buffered()[..4]);
    let len = u32::from_be_bytes(len);
    if len == 0 || len > MAX_MESSAGE_SIZE {
        return Received::Nothing(format!(
            "metadata exchange length {len} is outside 1..={MAX_MESSAGE_SIZE}"
        ));
    }
    let total = 4 + len as usize;
    if let Err(why) = fill(inbound, total, "request").await {
        return Received::Nothing(why);
    }
    let raw = inbound.take(total);
    match MetadataExchangeRequest::decode(&raw[4..]) {
        Ok(req) => Received::Request(req, raw),
        Err(e) => Received::Malformed(format!("invalid MetadataExchangeRequest: {e}"), raw),
    }
}

async fn fill<S: AsyncRead + AsyncWrite + Unpin>(
    inbound: &mut Inbound<S>,
    n: usize,
    what: &str,
) -> Result<(), String> {
    match timeout(IO_TIMEOUT, inbound.fill(n)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Err(format!(
            "the client closed the connection before the metadata exchange {what} was complete"
        )),
        Ok(Err(e)) => Err(format!("reading the metadata exchange {what}: {e}")),
        Err(_) => Err(format!(
            "no metadata exchange {what} within {} s",
            IO_TIMEOUT.as_secs()
        )),
    }
}

/// An admitted client: the request's facts and its token's principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// How the database session is authenticated.
    pub auth_type: AuthType,
    /// The token's principal (an email).
    pub principal: String,
    /// When the token expires.
    pub token_expiry: SystemTime,
    /// The connector's user agent.
    pub user_agent: String,
}

/// Decides a request as Google's proxy would (normal mode). The error is the message for
/// the client's ERROR response; it never contains the token.
pub fn check(
    req: &MetadataExchangeRequest,
    tokens: &TokenStore,
    now: SystemTime,
) -> Result<Login, String> {
    if let AuthType::Other(n) = req.auth_type {
        return Err(format!(
            "metadata exchange refused: unsupported auth_type {n}"
        ));
    }
    if req.oauth2_token.is_empty() {
        return Err(
            "metadata exchange refused: the request has no OAuth2 token \
                    (oauth2_token is empty)"
                .into(),
        );
    }
    let Some(info) = tokens.lookup(&req.oauth2_token) else {
        return Err(
            "metadata exchange refused: the OAuth2 token is invalid (not an access \
                    token issued by this token server)"
                .into(),
        );
    };
    if info.expiry <= now {
        return Err("metadata exchange refused: the OAuth2 token has expired".into());
    }
    if !info.has_scope(SCOPE_ALLOYDB_LOGIN) && !info.has_scope(SCOPE_CLOUD_PLATFORM) {
        return Err(format!(
            "metadata exchange refused: the OAuth2 token lacks the scope {SCOPE_ALLOYDB_LOGIN} \
             (or {SCOPE_CLOUD_PLATFORM})"
        ));
    }
    Ok(Login {
        auth_type: req.auth_type,
        principal: info.principal,
        token_expiry: info.expiry,
        user_agent: req.user_agent.clone(),
    })
}

/// Answers what was received as `mode` says. `Ok`: answered OK, go on to the database.
/// `Err`: close the connection, for the reason given (for the log; no secrets).
pub async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    inbound: &mut Inbound<S>,
    received: Received,
    mode: &MdxMode,
    tokens: &TokenStore,
) -> Result<Login, String> {
    let raw = match &received {
        Received::Nothing(why) => return Err(why.clone()),
        Received::Request(_, raw) | Received::Malformed(_, raw) => raw.clone(),
    };
    let (answer, outcome) = match (mode, received) {
        (MdxMode::Normal, Received::Request(req, _)) => {
            match check(&req, tokens, SystemTime::now()) {
                Ok(login) => (frame(&MetadataExchangeResponse::ok().encode()), Ok(login)),
                Err(msg) => (error_frame(&msg), Err(msg)),
            }
        }
        (MdxMode::Normal, Received::Malformed(why, _)) => (error_frame(&why), Err(why)),
        (MdxMode::Error(msg), _) => (error_frame(msg), Err(format!("error mode: {msg}"))),
        (MdxMode::Truncated, _) => (TRUNCATED.to_vec(), Err("truncated mode".into())),
        (MdxMode::Oversized, _) => {
            let mut out = OVERSIZED_CLAIM.to_be_bytes().to_vec();
            out.resize(4 + OVERSIZED_SENT, 0);
            (out, Err("oversized mode".into()))
        }
        (MdxMode::NotMdx, _) => (postgres_answer(&raw), Err("not-mdx mode".into())),
        (MdxMode::Silent, _) => {
            wait_for_close(inbound).await;
            return Err("silent mode: no answer; the client closed".into());
        }
        (_, Received::Nothing(why)) => return Err(why),
    };
    let stream = inbound.stream_mut();
    // One write, so the answer travels in one TLS record (Go's client reads it in one Read).
    let written = async {
        stream.write_all(&answer).await?;
        stream.flush().await
    };
    match written.await {
        Ok(()) => outcome,
        Err(e) => Err(format!("writing the metadata exchange answer: {e}")),
    }
}

fn error_frame(message: &str) -> Vec<u8> {
    frame(&MetadataExchangeResponse::error(message).encode())
}

/// What Postgres answers when the MDX request arrives where it expects a startup packet:
/// the first 4 bytes as the length, the next 4 as a protocol version it does not support.
fn postgres_answer(raw: &[u8]) -> Vec<u8> {
    let error = match raw.get(4..8) {
        Some(v) if v[0..2] != [0, 3] => PgError::UnsupportedProtocol(
            u16::from_be_bytes([v[0], v[1]]),
            u16::from_be_bytes([v[2], v[3]]),
        ),
        _ => PgError::Malformed("expected terminator as last byte"),
    };
    // Both variants have an ErrorResponse; the fallback keeps this total.
    error.response().unwrap_or_else(|| {
        crate::pgwire::error_response("FATAL", "08P01", "invalid startup packet")
    })
}

/// Reads and drops whatever the client sends until it closes (or [`SILENT_LIMIT`]).
async fn wait_for_close<S: AsyncRead + AsyncWrite + Unpin>(inbound: &mut Inbound<S>) {
    let stream = inbound.stream_mut();
    let mut sink = [0u8; 4096];
    let drain = async { while let Ok(1..) = stream.read(&mut sink).await {} };
    let _ = timeout(SILENT_LIMIT, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgwire::error_response;
    use tokio::io::AsyncReadExt;

    /// Spec §7's OK and ERROR "denied" bytes.
    const OK_BYTES: &[u8] = &[0x00, 0x00, 0x00, 0x02, 0x08, 0x01];
    const DENIED_BYTES: &[u8] = &[
        0x00, 0x00, 0x00, 0x0a, 0x08, 0x02, 0x12, 0x06, 0x64, 0x65, 0x6e, 0x69, 0x65, 0x64,
    ];

    #[test]
    fn response_bytes_match_the_spec() {
        assert_eq!(frame(&MetadataExchangeResponse::ok().encode()), OK_BYTES);
        assert_eq!(
            frame(&MetadataExchangeResponse::error("denied").encode()),
            DENIED_BYTES
        );
        assert_eq!(
            MetadataExchangeResponse::decode(&DENIED_BYTES[4..]).unwrap(),
            MetadataExchangeResponse::error("denied")
        );
        assert_eq!(
            MetadataExchangeResponse::decode(&[0x08, 0x07])
                .unwrap()
                .response_code,
            ResponseCode::Other(7)
        );
    }

    #[test]
    fn request_matches_the_spec_example() {
        // Spec §7: Go's user agent, AUTO_IAM, token "ya29.TOKEN": 43 bytes.
        let req = MetadataExchangeRequest {
            user_agent: "alloydb-go-connector/1.18.4".into(),
            auth_type: AuthType::AutoIam,
            oauth2_token: "ya29.TOKEN".into(),
        };
        let framed = frame(&req.encode());
        let mut want = vec![0x00, 0x00, 0x00, 0x2b, 0x0a, 0x1b];
        want.extend_from_slice(b"alloydb-go-connector/1.18.4");
        want.extend_from_slice(&[0x10, 0x02, 0x1a, 0x0a]);
        want.extend_from_slice(b"ya29.TOKEN");
        assert_eq!(framed, want);
        assert_eq!(MetadataExchangeRequest::decode(&framed[4..]).unwrap(), req);

        // A 300-byte token's length takes two varint bytes; unknown fields are skipped;
        // any field order; UNSPECIFIED may be absent.
        let long = "t".repeat(300);
        let mut payload = vec![0x1a, 0xac, 0x02];
        payload.extend_from_slice(long.as_bytes());
        payload.extend_from_slice(&[0x20, 0x05, 0x10, 0x01]);
        let req = MetadataExchangeRequest::decode(&payload).unwrap();
        assert_eq!(req.oauth2_token, long);
        assert_eq!(req.auth_type, AuthType::DbNative);
        assert_eq!(req.user_agent, "");
        let req = MetadataExchangeRequest::decode(&[]).unwrap();
        assert_eq!(req.auth_type.name(), "AUTH_TYPE_UNSPECIFIED");
        assert_eq!(
            MetadataExchangeRequest::decode(&[0x10, 0x09])
                .unwrap()
                .auth_type
                .name(),
            "9"
        );
        assert!(MetadataExchangeRequest::decode(&[0x1a, 0x05, b'a']).is_err());
        assert!(MetadataExchangeRequest::decode(&[0x1a, 0x01, 0xff]).is_err());
        // The token never shows in debug output.
        let shown = format!("{:?}", MetadataExchangeRequest::decode(&want[4..]).unwrap());
        assert!(!shown.contains("TOKEN"), "{shown}");
    }

    #[test]
    fn modes_parse() {
        assert_eq!(MdxMode::parse("normal", None), Ok(MdxMode::Normal));
        assert_eq!(
            MdxMode::parse("error", None),
            Ok(MdxMode::Error(DEFAULT_ERROR_MESSAGE.into()))
        );
        assert_eq!(
            MdxMode::parse("error", Some("x".into())),
            Ok(MdxMode::Error("x".into()))
        );
        for (s, m) in [
            ("truncated", MdxMode::Truncated),
            ("oversized", MdxMode::Oversized),
            ("not-mdx", MdxMode::NotMdx),
            ("silent", MdxMode::Silent),
        ] {
            assert_eq!(MdxMode::parse(s, None), Ok(m));
        }
        assert!(MdxMode::parse("explode", None).is_err());
    }

    fn store() -> TokenStore {
        TokenStore::new(Duration::from_secs(600))
    }

    fn request(auth_type: AuthType, token: &str) -> MetadataExchangeRequest {
        MetadataExchangeRequest {
            user_agent: "test/1".into(),
            auth_type,
            oauth2_token: token.into(),
        }
    }

    #[test]
    fn checks_tokens() {
        let tokens = store();
        let now = SystemTime::now();
        let (login, _) = tokens.issue(
            "sa@p.iam.gserviceaccount.com",
            vec![SCOPE_ALLOYDB_LOGIN.into()],
        );
        let (platform, _) = tokens.issue("u@example.com", vec![SCOPE_CLOUD_PLATFORM.into()]);
        let (other, _) = tokens.issue("u@example.com", vec!["https://x/other".into()]);

        let l = check(&request(AuthType::AutoIam, &login), &tokens, now).unwrap();
        assert_eq!(l.principal, "sa@p.iam.gserviceaccount.com");
        assert_eq!(l.auth_type, AuthType::AutoIam);
        assert_eq!(l.user_agent, "test/1");
        let l = check(&request(AuthType::Unspecified, &platform), &tokens, now).unwrap();
        assert_eq!(l.principal, "u@example.com");

        let refused = |req: MetadataExchangeRequest, now: SystemTime| {
            let msg = check(&req, &tokens, now).unwrap_err();
            assert!(!msg.contains("ya29"), "the token leaked: {msg}");
            msg
        };
        assert!(refused(request(AuthType::DbNative, ""), now).contains("no OAuth2 token"));
        assert!(refused(request(AuthType::DbNative, "ya29.unknown"), now).contains("invalid"));
        assert!(refused(request(AuthType::DbNative, &other), now).contains("lacks the scope"));
        let later = now + Duration::from_secs(601);
        assert!(refused(request(AuthType::DbNative, &login), later).contains("expired"));
        assert!(refused(request(AuthType::Other(5), &login), now).contains("auth_type 5"));
    }

    /// Runs receive + respond against a client that wrote `sent` and then closed its side.
    async fn exchange(
        sent: &[u8],
        mode: MdxMode,
        tokens: &TokenStore,
    ) -> (Option<AuthType>, Result<Login, String>, Vec<u8>, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        client.write_all(sent).await.unwrap();
        client.shutdown().await.unwrap();
        let mut inbound = Inbound::new(server);
        let received = receive(&mut inbound).await;
        let auth_type = received.auth_type();
        let result = respond(&mut inbound, received, &mode, tokens).await;
        let (_, rest) = inbound.into_parts();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        (auth_type, result, answer, rest)
    }

    #[tokio::test]
    async fn normal_mode_answers_ok_and_keeps_following_bytes() {
        let tokens = store();
        let (tok, _) = tokens.issue("u@example.com", vec![SCOPE_ALLOYDB_LOGIN.into()]);
        let mut sent = frame(&request(AuthType::DbNative, &tok).encode());
        sent.extend_from_slice(b"startup");
        let (auth, result, answer, rest) = exchange(&sent, MdxMode::Normal, &tokens).await;
        assert_eq!(auth, Some(AuthType::DbNative));
        assert_eq!(result.unwrap().principal, "u@example.com");
        assert_eq!(answer, OK_BYTES);
        assert_eq!(rest, b"startup");
    }

    #[tokio::test]
    async fn normal_mode_refuses_with_an_error_response() {
        let tokens = store();
        let sent = frame(&request(AuthType::AutoIam, "ya29.nope").encode());
        let (auth, result, answer, _) = exchange(&sent, MdxMode::Normal, &tokens).await;
        assert_eq!(auth, Some(AuthType::AutoIam));
        let why = result.unwrap_err();
        let resp = MetadataExchangeResponse::decode(&answer[4..]).unwrap();
        assert_eq!(resp, MetadataExchangeResponse::error(why));
        assert_eq!(answer[..4], ((answer.len() - 4) as u32).to_be_bytes());

        // A frame that is no request: ERROR too.
        let (auth, result, answer, _) =
            exchange(&[0, 0, 0, 2, 0x12, 0x05], MdxMode::Normal, &tokens).await;
        assert_eq!(auth, None);
        assert!(result
            .unwrap_err()
            .contains("invalid MetadataExchangeRequest"));
        let resp = MetadataExchangeResponse::decode(&answer[4..]).unwrap();
        assert_eq!(resp.response_code, ResponseCode::Error);
    }

    #[tokio::test]
    async fn impossible_lengths_and_short_frames_are_closed_silently() {
        let tokens = store();
        for sent in [
            &[0u8, 0, 0, 0][..],
            &[0, 0, 0x40, 0x01],
            &[0x45, 0, 0, 0],
            &[0, 0, 0, 10, 1, 2],
            &[0, 0],
            &[],
        ] {
            let (auth, result, answer, _) = exchange(sent, MdxMode::Normal, &tokens).await;
            assert_eq!(auth, None);
            assert!(result.is_err());
            assert!(answer.is_empty(), "{sent:?}: {answer:?}");
        }
    }

    #[tokio::test]
    async fn test_modes_misbehave_as_told() {
        let tokens = store();
        let (tok, _) = tokens.issue("u@example.com", vec![SCOPE_ALLOYDB_LOGIN.into()]);
        let sent = frame(&request(AuthType::DbNative, &tok).encode());

        let (auth, result, answer, _) =
            exchange(&sent, MdxMode::Error("denied".into()), &tokens).await;
        assert_eq!(auth, Some(AuthType::DbNative));
        assert!(result.is_err());
        assert_eq!(answer, DENIED_BYTES);

        let (_, result, answer, _) = exchange(&sent, MdxMode::Truncated, &tokens).await;
        assert!(result.is_err());
        assert_eq!(answer, [0, 0, 0, 10, 0x08, 0x01, 0x12]);

        let (_, result, answer, _) = exchange(&sent, MdxMode::Oversized, &tokens).await;
        assert!(result.is_err());
        assert_eq!(answer.len(), 4 + 64 * 1024);
        assert_eq!(answer[..4], [0x00, 0x10, 0x00, 0x00]);

        let (_, result, answer, _) = exchange(&sent, MdxMode::NotMdx, &tokens).await;
        assert!(result.is_err());
        assert_eq!(answer[0], b'E');
        // The request's bytes 4..8 (0a 06 't' 'e') read as a protocol version.
        assert_eq!(
            answer,
            error_response(
                "FATAL",
                "0A000",
                "unsupported frontend protocol 2566.29797: server supports 3.0 to 3.2"
            )
        );

        // Silent: nothing is written, and respond returns only once the client closed.
        let (_, result, answer, _) = exchange(&sent, MdxMode::Silent, &tokens).await;
        assert!(result.unwrap_err().contains("silent"));
        assert!(answer.is_empty());
    }

    #[tokio::test]
    async fn silent_mode_waits_for_the_client() {
        let tokens = store();
        let (mut client, server) = tokio::io::duplex(1024);
        client
            .write_all(&frame(&request(AuthType::DbNative, "x").encode()))
            .await
            .unwrap();
        let task = tokio::spawn(async move {
            let mut inbound = Inbound::new(server);
            let received = receive(&mut inbound).await;
            respond(&mut inbound, received, &MdxMode::Silent, &tokens).await
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !task.is_finished(),
            "silent mode must keep the connection open"
        );
        drop(client);
        assert!(task.await.unwrap().is_err());
    }
}
