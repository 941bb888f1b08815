//! Automatic IAM database authentication, MySQL flavour. MySQL servers speak first: the
//! proxy dials the backend, relays its initial handshake to the client, and reads the
//! client's HandshakeResponse41. The login goes through (unchanged, passwordless on the
//! backend) only if it names the certificate principal's MySQL user, the part of the email
//! before `@`; anything else gets the ERR packet MySQL sends for a refused login, and the
//! backend connection is dropped before it sees a byte from the client.

use std::io;
use std::net::IpAddr;
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::iam::IamBinding;
use crate::inbound::Inbound;

/// `CLIENT_PROTOCOL_41`.
pub const CLIENT_PROTOCOL_41: u32 = 0x0000_0200;
/// `CLIENT_SSL`: the client asks for TLS inside the connection (an SSLRequest).
pub const CLIENT_SSL: u32 = 0x0000_0800;
/// `CLIENT_SECURE_CONNECTION`: the auth response has a one-byte length prefix.
pub const CLIENT_SECURE_CONNECTION: u32 = 0x0000_8000;
/// `CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA`: the auth response has a length-encoded prefix.
pub const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x0020_0000;
/// `ER_ACCESS_DENIED_ERROR`.
pub const ER_ACCESS_DENIED_ERROR: u16 = 1045;
/// `ER_HANDSHAKE_ERROR` ("Bad handshake").
pub const ER_HANDSHAKE_ERROR: u16 = 1043;
/// The fixed part of HandshakeResponse41 (and the whole of an SSLRequest).
pub const FIXED_LEN: usize = 32;
/// Larger handshake packets are refused (real ones are a few hundred bytes).
pub const MAX_HANDSHAKE_PACKET: usize = 64 * 1024;

/// The 4-byte header of a MySQL packet: payload length (24-bit little-endian), sequence id.
pub fn header(payload_len: usize, seq: u8) -> [u8; 4] {
    let l = (payload_len as u32).to_le_bytes();
    [l[0], l[1], l[2], seq]
}

/// Payload length and sequence id of a packet header.
pub fn parse_header(h: [u8; 4]) -> (usize, u8) {
    (u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize, h[3])
}

/// An ERR packet (header included) with sequence id `seq`.
pub fn err_packet(seq: u8, code: u16, sql_state: &str, message: &str) -> Vec<u8> {
    let mut payload = vec![0xff];
    payload.extend_from_slice(&code.to_le_bytes());
    payload.push(b'#');
    let mut state = sql_state.as_bytes().to_vec();
    state.resize(5, b'0');
    payload.extend_from_slice(&state);
    payload.extend_from_slice(message.as_bytes());
    let mut out = header(payload.len(), seq).to_vec();
    out.extend_from_slice(&payload);
    out
}

/// The MySQL user of an IAM principal: the email's part before `@`.
pub fn mysql_user(principal: &str) -> &str {
    principal.split('@').next().unwrap_or(principal)
}

/// MySQL's message for a refused login as `user` from `host`.
pub fn access_denied_message(user: &str, host: &str, with_password: bool) -> String {
    let yes_no = if with_password { "YES" } else { "NO" };
    format!("Access denied for user '{user}'@'{host}' (using password: {yes_no})")
}

/// The host part Cloud SQL reports for connections through its proxy.
pub fn proxy_host(client_ip: IpAddr) -> String {
    format!("cloudsqlproxy~{client_ip}")
}

/// The client's first packet after the server's greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello {
    /// An SSLRequest (CLIENT_SSL set): TLS inside the tunnel, which Cloud SQL refuses.
    SslRequest,
    /// A HandshakeResponse41.
    Response {
        /// Capability flags.
        capabilities: u32,
        /// The user name.
        user: String,
        /// Whether the client sent a non-empty auth response (a password).
        with_password: bool,
    },
}

/// Parses the payload (no header) of the client's first packet.
pub fn parse_client_hello(payload: &[u8]) -> Result<ClientHello, &'static str> {
    if payload.len() < 4 {
        return Err("packet too short for capability flags");
    }
    let capabilities = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
    if capabilities & CLIENT_SSL != 0 {
        return Ok(ClientHello::SslRequest);
    }
    if capabilities & CLIENT_PROTOCOL_41 == 0 {
        return Err("pre-4.1 handshake response");
    }
    if payload.len() < FIXED_LEN {
        return Err("packet too short for a HandshakeResponse41");
    }
    let mut rest = &payload[FIXED_LEN..];
    let Some(end) = rest.iter().position(|&b| b == 0) else {
        return Err("unterminated user name");
    };
    let user = String::from_utf8_lossy(&rest[..end]).into_owned();
    rest = &rest[end + 1..];
    let auth_len = if capabilities & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        lenenc(rest)
    } else if capabilities & CLIENT_SECURE_CONNECTION != 0 {
        rest.first().map(|&b| u64::from(b))
    } else {
        // NUL-terminated: anything before the NUL is a password.
        Some(rest.iter().position(|&b| b == 0).unwrap_or(rest.len()) as u64)
    };
    Ok(ClientHello::Response {
        capabilities,
        user,
        with_password: auth_len.unwrap_or(0) > 0,
    })
}

/// A length-encoded integer at the start of `b`.
fn lenenc(b: &[u8]) -> Option<u64> {
    let first = *b.first()?;
    let n = match first {
        0..=0xfa => return Some(u64::from(first)),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return None,
    };
    let bytes = b.get(1..=n)?;
    let mut v = [0u8; 8];
    v[..n].copy_from_slice(bytes);
    Some(u64::from_le_bytes(v))
}

/// Reads one whole packet (header included) from `r`.
pub async fn read_packet<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut h = [0u8; 4];
    r.read_exact(&mut h).await?;
    let (len, _) = parse_header(h);
    if len > MAX_HANDSHAKE_PACKET {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("handshake packet of {len} bytes"),
        ));
    }
    let mut out = h.to_vec();
    out.resize(4 + len, 0);
    r.read_exact(&mut out[4..]).await?;
    Ok(out)
}

/// Buffers the client's next packet; returns its total length (header included) and
/// sequence id. The packet stays buffered.
async fn peek_packet<S: AsyncRead + AsyncWrite + Unpin>(
    inbound: &mut Inbound<S>,
) -> io::Result<(usize, u8)> {
    inbound.fill(4).await?;
    let mut h = [0u8; 4];
    h.copy_from_slice(&inbound.buffered()[..4]);
    let (len, seq) = parse_header(h);
    if len > MAX_HANDSHAKE_PACKET {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("client handshake packet of {len} bytes"),
        ));
    }
    inbound.fill(4 + len).await?;
    Ok((4 + len, seq))
}

/// What became of a MySQL login with an IAM-bound certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// The right user: its packet is still buffered, for the backend.
    Admitted {
        /// The MySQL user.
        user: String,
        /// How many bytes of the backend's greeting went to the client.
        greeting_len: usize,
    },
    /// Refused and answered with this ERR message; `reason` is for the log.
    Refused {
        /// For the log.
        reason: String,
        /// What the client was sent.
        message: String,
    },
}

/// Decides the HandshakeResponse in `payload` against `binding` at `now`: `Ok(user)` or
/// the `(error code, SQL state, message, log reason)` to refuse with.
pub fn check_login(
    binding: &IamBinding,
    payload: &[u8],
    client_ip: IpAddr,
    now: SystemTime,
) -> Result<String, (u16, &'static str, String, String)> {
    match parse_client_hello(payload) {
        Ok(ClientHello::SslRequest) => Err((
            ER_HANDSHAKE_ERROR,
            "08S01",
            "Bad handshake: SSL is not supported inside the Cloud SQL proxy's TLS tunnel".into(),
            "the client sent an SSLRequest".into(),
        )),
        Err(why) => Err((
            ER_HANDSHAKE_ERROR,
            "08S01",
            "Bad handshake".into(),
            why.to_string(),
        )),
        Ok(ClientHello::Response {
            user,
            with_password,
            ..
        }) => {
            let want = mysql_user(&binding.principal);
            let reason = if binding.token_expiry <= now {
                format!("the login token of {} has expired", binding.principal)
            } else if user != want {
                format!(
                    "user '{user}' is not '{want}', the principal of the certificate's login token"
                )
            } else {
                return Ok(user);
            };
            let message = access_denied_message(&user, &proxy_host(client_ip), with_password);
            Err((ER_ACCESS_DENIED_ERROR, "28000", message, reason))
        }
    }
}

/// Relays the backend's greeting (read from `upstream`) to the client, then reads and
/// decides the client's answer. On refusal the ERR is written to the client.
pub async fn login<S, U>(
    inbound: &mut Inbound<S>,
    upstream: &mut U,
    binding: &IamBinding,
    client_ip: IpAddr,
) -> io::Result<Login>
where
    S: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + Unpin,
{
    let greeting = read_packet(upstream).await?;
    {
        let stream = inbound.stream_mut();
        stream.write_all(&greeting).await?;
        stream.flush().await?;
    }
    let (len, seq) = peek_packet(inbound).await?;
    let payload = &inbound.buffered()[4..len];
    match check_login(binding, payload, client_ip, SystemTime::now()) {
        Ok(user) => Ok(Login::Admitted {
            user,
            greeting_len: greeting.len(),
        }),
        Err((code, state, message, reason)) => {
            let err = err_packet(seq.wrapping_add(1), code, state, &message);
            let stream = inbound.stream_mut();
            stream.write_all(&err).await?;
            stream.flush().await?;
            Ok(Login::Refused { reason, message })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iam::fixtures::{binding, SA, USER};
    use std::net::Ipv4Addr;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// A HandshakeResponse41 payload, built by hand as the MySQL docs lay it out.
    fn response(caps: u32, user: &str, auth: &[u8]) -> Vec<u8> {
        let mut p = caps.to_le_bytes().to_vec();
        p.extend_from_slice(&16_777_216u32.to_le_bytes());
        p.push(45); // utf8mb4_general_ci
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(user.as_bytes());
        p.push(0);
        if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 || caps & CLIENT_SECURE_CONNECTION != 0
        {
            p.push(auth.len() as u8);
            p.extend_from_slice(auth);
        } else {
            p.extend_from_slice(auth);
            p.push(0);
        }
        p.extend_from_slice(b"mydb\0mysql_native_password\0");
        p
    }

    const CAPS: u32 = CLIENT_PROTOCOL_41
        | CLIENT_SECURE_CONNECTION
        | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | 0x0008_0000 // CLIENT_PLUGIN_AUTH
        | 0x0000_0008; // CLIENT_CONNECT_WITH_DB

    fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        [header(payload.len(), seq).as_slice(), payload].concat()
    }

    #[test]
    fn names() {
        assert_eq!(mysql_user(SA), "connector-sa");
        assert_eq!(mysql_user(USER), "dev-user");
        assert_eq!(mysql_user("nobody"), "nobody");
    }

    #[test]
    fn parses_handshake_responses() {
        assert_eq!(
            parse_client_hello(&response(CAPS, "connector-sa", b"")),
            Ok(ClientHello::Response {
                capabilities: CAPS,
                user: "connector-sa".into(),
                with_password: false
            })
        );
        for caps in [
            CAPS,
            CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION,
            CLIENT_PROTOCOL_41,
        ] {
            let Ok(ClientHello::Response {
                user,
                with_password,
                ..
            }) = parse_client_hello(&response(caps, "root", b"secret-scramble"))
            else {
                panic!("caps {caps:#x}");
            };
            assert_eq!(user, "root");
            assert!(with_password, "caps {caps:#x}");
        }
        // An SSLRequest: the 32 fixed bytes only, CLIENT_SSL set.
        let mut ssl = (CAPS | CLIENT_SSL).to_le_bytes().to_vec();
        ssl.extend_from_slice(&16_777_216u32.to_le_bytes());
        ssl.push(45);
        ssl.extend_from_slice(&[0; 23]);
        assert_eq!(ssl.len(), FIXED_LEN);
        assert_eq!(parse_client_hello(&ssl), Ok(ClientHello::SslRequest));

        assert!(parse_client_hello(&[1, 2]).is_err());
        assert!(parse_client_hello(&response(CAPS, "u", b"")[..31]).is_err());
        let mut unterminated = response(CAPS, "u", b"")[..FIXED_LEN].to_vec();
        unterminated.extend_from_slice(b"user");
        assert!(parse_client_hello(&unterminated).is_err());
        assert!(parse_client_hello(&response(CLIENT_SECURE_CONNECTION, "u", b"")).is_err());
    }

    #[test]
    fn err_packet_bytes() {
        let message = access_denied_message("dev-user", &proxy_host(LOCAL), false);
        assert_eq!(
            message,
            "Access denied for user 'dev-user'@'cloudsqlproxy~127.0.0.1' (using password: NO)"
        );
        let p = err_packet(2, ER_ACCESS_DENIED_ERROR, "28000", &message);
        let mut want = vec![(9 + message.len()) as u8, 0, 0, 2, 0xff, 0x15, 0x04, b'#'];
        want.extend_from_slice(b"28000");
        want.extend_from_slice(message.as_bytes());
        assert_eq!(p, want);
    }

    #[test]
    fn checks_the_user() {
        let now = SystemTime::now();
        let sa = binding(SA, 600);
        assert_eq!(
            check_login(&sa, &response(CAPS, "connector-sa", b""), LOCAL, now),
            Ok("connector-sa".into())
        );
        for user in ["dev-user", SA, "root", "Connector-SA"] {
            let (code, state, message, _) =
                check_login(&sa, &response(CAPS, user, b""), LOCAL, now).unwrap_err();
            assert_eq!((code, state), (1045, "28000"));
            assert_eq!(
                message,
                format!(
                    "Access denied for user '{user}'@'cloudsqlproxy~127.0.0.1' (using password: NO)"
                )
            );
        }
        let (_, _, message, _) =
            check_login(&sa, &response(CAPS, "root", b"x"), LOCAL, now).unwrap_err();
        assert!(message.ends_with("(using password: YES)"), "{message}");
        let user = binding(USER, 600);
        assert!(check_login(&user, &response(CAPS, "dev-user", b""), LOCAL, now).is_ok());
        let expired = binding(USER, -1);
        let (code, _, _, reason) =
            check_login(&expired, &response(CAPS, "dev-user", b""), LOCAL, now).unwrap_err();
        assert_eq!(code, 1045);
        assert!(reason.contains("expired"), "{reason}");
    }

    async fn run(client_sends: &[u8], b: &IamBinding) -> (Login, Vec<u8>, Vec<u8>) {
        let greeting = packet(0, b"\x0a8.0.36\0greeting-rest");
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(client_sends).await.unwrap();
        let mut inbound = Inbound::new(server);
        let mut upstream: &[u8] = &greeting;
        let result = login(&mut inbound, &mut upstream, b, LOCAL).await.unwrap();
        let (_, rest) = inbound.into_parts();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(&answer[..greeting.len()], greeting.as_slice());
        (result, answer[greeting.len()..].to_vec(), rest)
    }

    #[tokio::test]
    async fn admits_and_keeps_the_packet_for_the_backend() {
        let b = binding(SA, 600);
        let hello = packet(1, &response(CAPS, "connector-sa", b""));
        let sent = [hello.clone(), packet(0, b"\x03select 1")].concat();
        let (result, answer, rest) = run(&sent, &b).await;
        assert_eq!(
            result,
            Login::Admitted {
                user: "connector-sa".into(),
                greeting_len: 25
            }
        );
        assert!(answer.is_empty());
        assert_eq!(rest, sent);
    }

    #[tokio::test]
    async fn refuses_with_an_err_packet() {
        let b = binding(SA, 600);
        let (result, answer, _) = run(&packet(1, &response(CAPS, "dev-user", b"")), &b).await;
        let Login::Refused { message, .. } = result else {
            panic!("{result:?}");
        };
        assert_eq!(answer, err_packet(2, 1045, "28000", &message));

        let mut ssl = (CAPS | CLIENT_SSL).to_le_bytes().to_vec();
        ssl.extend_from_slice(&[0; 28]);
        let (result, answer, _) = run(&packet(1, &ssl), &b).await;
        assert!(matches!(result, Login::Refused { .. }), "{result:?}");
        assert_eq!(&answer[3..8], &[2, 0xff, 0x13, 0x04, b'#']);
    }
}
