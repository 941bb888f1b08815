//! Automatic IAM database authentication, Postgres flavour. `generateEphemeralCert` with a
//! login-scoped `access_token` binds the token's principal to the certificate it issues;
//! the proxy then admits a connection made with that certificate only if the driver's
//! StartupMessage names that principal's database user, and the backend (which trusts
//! those roles) logs it in without a password. Everyone else gets the FATAL that Cloud SQL
//! sends, and the backend never hears of them.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::inbound::Inbound;
use crate::pgwire::{
    error_response, peek_first_packet, FirstPacket, PgError, SQLSTATE_INVALID_AUTHORIZATION,
};

/// The domain of service-account emails, which Postgres user names leave out.
pub const SERVICE_ACCOUNT_SUFFIX: &str = ".gserviceaccount.com";

/// The IAM login behind one ephemeral certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamBinding {
    /// The login token's principal (an email).
    pub principal: String,
    /// When the login token expires; the certificate never outlives it.
    pub token_expiry: SystemTime,
}

/// IAM bindings by certificate serial (decimal, as in `certSerialNumber`).
#[derive(Debug, Default)]
pub struct IamBindings(Mutex<HashMap<String, IamBinding>>);

impl IamBindings {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, IamBinding>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `binding` for the certificate with `serial`.
    pub fn bind(&self, serial: String, binding: IamBinding) {
        let now = SystemTime::now();
        let mut map = self.lock();
        // A certificate is dead once its token is, so its binding can go.
        map.retain(|_, b| b.token_expiry > now);
        map.insert(serial, binding);
    }

    /// The binding of the certificate with `serial`, if it was issued for an IAM login.
    pub fn get(&self, serial: &str) -> Option<IamBinding> {
        self.lock().get(serial).cloned()
    }
}

/// The decimal serial of a DER certificate (how the Admin API reports it), if it parses.
pub fn certificate_serial(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.serial.to_string())
}

/// True for `databaseVersion`s of Postgres instances.
pub fn is_postgres(database_version: &str) -> bool {
    database_version.starts_with("POSTGRES")
}

/// The Postgres user of an IAM principal: the email, without `.gserviceaccount.com` for
/// service accounts (`sa@project.iam`).
pub fn postgres_user(principal: &str) -> &str {
    principal
        .strip_suffix(SERVICE_ACCOUNT_SUFFIX)
        .unwrap_or(principal)
}

/// Cloud SQL's FATAL message for a refused IAM login as `user`. Cloud SQL words it by the
/// kind of database user; names shaped like neither kind fall back to the principal's.
pub fn refusal_message(user: &str, principal: &str) -> String {
    let service_account = if user.ends_with(".iam") || user.ends_with(SERVICE_ACCOUNT_SUFFIX) {
        true
    } else if user.contains('@') {
        false
    } else {
        principal.ends_with(SERVICE_ACCOUNT_SUFFIX)
    };
    let kind = if service_account {
        "service account"
    } else {
        "user"
    };
    format!("Cloud SQL IAM {kind} authentication failed for user \"{user}\"")
}

/// Why a login was refused: `reason` for the emulator's log, `message` for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What went wrong, for the log (no secrets).
    pub reason: String,
    /// The ErrorResponse message.
    pub message: String,
}

/// Decides a Postgres login as `user` (from the StartupMessage) at `now`.
pub fn check_postgres_login(
    binding: &IamBinding,
    user: Option<&str>,
    now: SystemTime,
) -> Result<(), Refusal> {
    let Some(user) = user else {
        return Err(Refusal {
            reason: "no user in the startup message".into(),
            message: "no PostgreSQL user name specified in startup packet".into(),
        });
    };
    let want = postgres_user(&binding.principal);
    let reason = if binding.token_expiry <= now {
        format!("the login token of {} has expired", binding.principal)
    } else if user != want {
        format!("user \"{user}\" is not \"{want}\", the principal of the certificate's login token")
    } else {
        return Ok(());
    };
    Err(Refusal {
        reason,
        message: refusal_message(user, &binding.principal),
    })
}

/// What became of a connection made with an IAM-bound certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// The StartupMessage names the right user: relay it (still buffered) and the rest.
    Admitted(String),
    /// A CancelRequest, which needs no login: relay it.
    Cancel,
    /// Refused and answered; close without contacting the backend.
    Refused(Refusal),
}

/// Reads the client's opening packets, answering SSLRequest and GSSENCRequest with `N`
/// (the connection is already TLS), and decides the StartupMessage's user with `check`
/// (Cloud SQL: [`check_postgres_login`]; AlloyDB has its own wording). A refusal is
/// answered with a FATAL 28000 carrying [`Refusal::message`].
pub async fn postgres_login<S, F>(inbound: &mut Inbound<S>, check: F) -> io::Result<Login>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn(Option<&str>) -> Result<(), Refusal>,
{
    let (mut ssl_done, mut gss_done) = (false, false);
    loop {
        let packet = match peek_first_packet(inbound).await? {
            // Each negotiation at most once, as Postgres allows; a repeat reads as the
            // bogus protocol version its code is.
            Ok((FirstPacket::SslRequest, _)) if ssl_done => {
                Err(PgError::UnsupportedProtocol(1234, 5679))
            }
            Ok((FirstPacket::GssEncRequest, _)) if gss_done => {
                Err(PgError::UnsupportedProtocol(1234, 5680))
            }
            other => other,
        };
        let refusal = match packet {
            Ok((kind @ (FirstPacket::SslRequest | FirstPacket::GssEncRequest), len)) => {
                // Answered here, so not relayed.
                inbound.take(len);
                if kind == FirstPacket::SslRequest {
                    ssl_done = true;
                } else {
                    gss_done = true;
                }
                let stream = inbound.stream_mut();
                stream.write_all(b"N").await?;
                stream.flush().await?;
                continue;
            }
            Ok((FirstPacket::CancelRequest, _)) => return Ok(Login::Cancel),
            Ok((FirstPacket::Startup(msg), _)) => match check(msg.user()) {
                Ok(()) => return Ok(Login::Admitted(msg.user().unwrap_or_default().into())),
                Err(r) => r,
            },
            Err(e) => {
                let message = e.to_string();
                if let Some(response) = e.response() {
                    let stream = inbound.stream_mut();
                    stream.write_all(&response).await?;
                    stream.flush().await?;
                }
                return Ok(Login::Refused(Refusal {
                    reason: message.clone(),
                    message,
                }));
            }
        };
        let stream = inbound.stream_mut();
        let response = error_response("FATAL", SQLSTATE_INVALID_AUTHORIZATION, &refusal.message);
        stream.write_all(&response).await?;
        stream.flush().await?;
        return Ok(Login::Refused(refusal));
    }
}

/// Test fixtures shared by the IAM login tests (Postgres here, MySQL in
/// `mysql.rs`).
#[cfg(test)]
pub(crate) mod fixtures {
    use std::time::{Duration, SystemTime};

    use super::IamBinding;

    /// The emulator's service account.
    pub const SA: &str = "connector-sa@emulator-project.iam.gserviceaccount.com";
    /// The emulator's authorized user.
    pub const USER: &str = "dev-user@example.com";

    /// `principal` bound with a token expiring `secs` from now (negative: past).
    pub fn binding(principal: &str, secs: i64) -> IamBinding {
        let now = SystemTime::now();
        let d = Duration::from_secs(secs.unsigned_abs());
        IamBinding {
            principal: principal.into(),
            token_expiry: if secs >= 0 { now + d } else { now - d },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{binding, SA, USER};
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn user_names() {
        assert_eq!(postgres_user(SA), "connector-sa@emulator-project.iam");
        assert_eq!(postgres_user(USER), USER);
        assert!(is_postgres("POSTGRES_15"));
        assert!(!is_postgres("MYSQL_8_0"));
    }

    #[test]
    fn matches_only_the_principal() {
        let now = SystemTime::now();
        let sa = binding(SA, 600);
        assert_eq!(
            check_postgres_login(&sa, Some("connector-sa@emulator-project.iam"), now),
            Ok(())
        );
        for (user, message) in [
            // The email itself is not the Postgres user of a service account.
            (
                SA,
                "Cloud SQL IAM service account authentication failed for user \
                 \"connector-sa@emulator-project.iam.gserviceaccount.com\"",
            ),
            (
                "other@emulator-project.iam",
                "Cloud SQL IAM service account authentication failed for user \
                 \"other@emulator-project.iam\"",
            ),
            (
                "Connector-SA@emulator-project.iam",
                "Cloud SQL IAM service account authentication failed for user \
                 \"Connector-SA@emulator-project.iam\"",
            ),
            (
                USER,
                "Cloud SQL IAM user authentication failed for user \"dev-user@example.com\"",
            ),
            (
                "postgres",
                "Cloud SQL IAM service account authentication failed for user \"postgres\"",
            ),
        ] {
            let r = check_postgres_login(&sa, Some(user), now).unwrap_err();
            assert_eq!(r.message, message);
        }

        let user = binding(USER, 600);
        assert_eq!(check_postgres_login(&user, Some(USER), now), Ok(()));
        let r = check_postgres_login(&user, Some("postgres"), now).unwrap_err();
        assert_eq!(
            r.message,
            "Cloud SQL IAM user authentication failed for user \"postgres\""
        );
        let r = check_postgres_login(&user, None, now).unwrap_err();
        assert_eq!(
            r.message,
            "no PostgreSQL user name specified in startup packet"
        );
    }

    #[test]
    fn expired_tokens_are_refused() {
        let expired = binding(USER, -1);
        let r = check_postgres_login(&expired, Some(USER), SystemTime::now()).unwrap_err();
        assert_eq!(
            r.message,
            "Cloud SQL IAM user authentication failed for user \"dev-user@example.com\""
        );
        assert!(r.reason.contains("expired"), "{}", r.reason);
    }

    #[test]
    fn bindings_forget_dead_tokens() {
        let b = IamBindings::default();
        b.bind("1".into(), binding(SA, -10));
        assert_eq!(b.get("1").map(|x| x.principal), Some(SA.to_string()));
        b.bind("2".into(), binding(USER, 600));
        assert_eq!(b.get("1"), None);
        assert_eq!(b.get("2").map(|x| x.principal), Some(USER.to_string()));
        assert_eq!(b.get("3"), None);
    }

    async fn login(sent: &[u8], b: &IamBinding) -> (Login, Vec<u8>, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(sent).await.unwrap();
        let mut inbound = Inbound::new(server);
        let check = |user: Option<&str>| check_postgres_login(b, user, SystemTime::now());
        let result = postgres_login(&mut inbound, check).await.unwrap();
        let (_, rest) = inbound.into_parts();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        (result, answer, rest)
    }

    fn startup(user: &str) -> Vec<u8> {
        let mut buf = bytes::BytesMut::new();
        postgres_protocol::message::frontend::startup_message(
            [("user", user), ("database", "postgres")],
            &mut buf,
        )
        .unwrap();
        buf.to_vec()
    }

    const SSL_REQUEST: &[u8] = &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    const GSSENC_REQUEST: &[u8] = &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];

    #[tokio::test]
    async fn admits_after_refusing_nested_encryption() {
        let b = binding(USER, 600);
        let mut sent = [GSSENC_REQUEST, SSL_REQUEST].concat();
        sent.extend_from_slice(&startup(USER));
        sent.extend_from_slice(b"Q\0\0\0\x0dselect 1\0");
        let (result, answer, rest) = login(&sent, &b).await;
        assert_eq!(result, Login::Admitted(USER.into()));
        assert_eq!(answer, b"NN");
        // The startup message and whatever followed go to the backend untouched.
        assert_eq!(
            rest,
            [startup(USER), b"Q\0\0\0\x0dselect 1\0".to_vec()].concat()
        );
    }

    #[tokio::test]
    async fn refuses_the_wrong_user_with_a_fatal() {
        let b = binding(SA, 600);
        let (result, answer, _) = login(&startup(USER), &b).await;
        let Login::Refused(r) = result else {
            panic!("{result:?}");
        };
        assert_eq!(
            answer,
            error_response("FATAL", "28000", &r.message),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(
            r.message,
            "Cloud SQL IAM user authentication failed for user \"dev-user@example.com\""
        );
    }

    #[tokio::test]
    async fn relays_cancels_and_refuses_junk() {
        let b = binding(SA, 600);
        let cancel = [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 2];
        let (result, answer, rest) = login(&cancel, &b).await;
        assert_eq!(result, Login::Cancel);
        assert!(answer.is_empty());
        assert_eq!(rest, cancel);

        let (result, answer, _) = login(&[SSL_REQUEST, SSL_REQUEST].concat(), &b).await;
        assert!(matches!(result, Login::Refused(_)), "{result:?}");
        assert_eq!(answer[0], b'N');
        assert_eq!(answer[1], b'E');
        assert!(
            String::from_utf8_lossy(&answer).contains("unsupported frontend protocol 1234.5679")
        );

        let (result, answer, _) = login(b"hello through the tunnel", &b).await;
        assert!(matches!(result, Login::Refused(_)), "{result:?}");
        assert!(answer.is_empty(), "Postgres says nothing to a bad length");
    }
}
