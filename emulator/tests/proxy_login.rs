//! End-to-end: the proxy's metadata exchange and its automatic IAM database
//! authentication for Postgres, with a fake backend that records what reaches it.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use support::{dial, eventually, form, http, sa_token, start_emulator, startup_message, FORM};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ADMIN_SCOPE: &str = "https://www.googleapis.com/auth/sqlservice.admin";
const LOGIN_SCOPE: &str = "https://www.googleapis.com/auth/sqlservice.login";
const SA_DB_USER: &str = "connector-sa@emulator-project.iam";
const USER_DB_USER: &str = "dev-user@example.com";
const MDX_OK: &[u8] = b"CSQLMDEX\x00\x00\x00\x02\x08\x01";
const SSL_REQUEST: &[u8] = &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// What one backend session received.
type Session = Arc<Mutex<Vec<u8>>>;

/// A stand-in database that echoes and keeps every byte each session sent it.
struct Backend {
    addr: String,
    sessions: Arc<Mutex<Vec<Session>>>,
    /// Sessions whose client (the proxy) has closed or reset them.
    ended: Arc<AtomicUsize>,
}

impl Backend {
    async fn start() -> Self {
        Self::greeting_with(&[]).await
    }

    /// Writes `greeting` (if any) at the start of each session, then echoes.
    async fn greeting_with(greeting: &'static [u8]) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let sessions: Arc<Mutex<Vec<Session>>> = Arc::default();
        let ended = Arc::new(AtomicUsize::new(0));
        let all = sessions.clone();
        let all_ended = ended.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let seen = Session::default();
                all.lock().unwrap().push(seen.clone());
                let ended = all_ended.clone();
                tokio::spawn(async move {
                    if s.write_all(greeting).await.is_ok() {
                        let mut buf = [0u8; 4096];
                        while let Ok(n @ 1..) = s.read(&mut buf).await {
                            seen.lock().unwrap().extend_from_slice(&buf[..n]);
                            if s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            sessions,
            ended,
        }
    }

    /// How many sessions have ended.
    fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }

    fn connections(&self) -> usize {
        self.sessions.lock().unwrap().len()
    }

    fn last_session(&self) -> Vec<u8> {
        let sessions = self.sessions.lock().unwrap();
        let last = sessions.last().expect("no backend session");
        let bytes = last.lock().unwrap().clone();
        bytes
    }
}

/// `CSQLMDEX` + length + `MetadataExchangeRequest{user_agent, client_protocol_type}`,
/// encoded by hand here so the test does not trust the emulator's encoder.
fn mdx_request(user_agent: &str, client_protocol_type: u8) -> Vec<u8> {
    let mut payload = vec![0x0a, user_agent.len() as u8];
    payload.extend_from_slice(user_agent.as_bytes());
    payload.extend_from_slice(&[0x10, client_protocol_type]);
    let mut out = b"CSQLMDEX".to_vec();
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The (type, value) fields of the single ErrorResponse that makes up `bytes`.
fn error_fields(bytes: &[u8]) -> Vec<(char, String)> {
    let mut buf = BytesMut::from(bytes);
    let Some(Message::ErrorResponse(body)) = Message::parse(&mut buf).unwrap() else {
        panic!("not an ErrorResponse: {bytes:?}");
    };
    assert!(buf.is_empty(), "bytes after the ErrorResponse");
    body.fields()
        .map(|f| {
            let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
            Ok((f.type_() as char, value))
        })
        .collect()
        .unwrap()
}

fn fatal(message: &str) -> Vec<(char, String)> {
    vec![
        ('S', "FATAL".into()),
        ('V', "FATAL".into()),
        ('C', "28000".into()),
        ('M', message.into()),
    ]
}

async fn read_all(tls: &mut Tls) -> Vec<u8> {
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.unwrap();
    out
}

async fn echoes(tls: &mut Tls, bytes: &[u8]) {
    let mut back = vec![0u8; bytes.len()];
    tls.read_exact(&mut back).await.unwrap();
    assert_eq!(back, bytes);
}

struct Google {
    admin: String,
    bearer: String,
}

impl Google {
    async fn connect_settings(&self, instance: &str) -> Value {
        let r = http(
            "GET",
            &format!(
                "{}/sql/v1beta4/projects/p/instances/{instance}/connectSettings",
                self.admin
            ),
            &[("Authorization", &self.bearer)],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    async fn cert(&self, instance: &str, public_key: &str, login: Option<&str>) -> String {
        let mut body = json!({ "public_key": public_key });
        if let Some(t) = login {
            body["access_token"] = json!(t);
        }
        let r = http(
            "POST",
            &format!(
                "{}/sql/v1beta4/projects/p/instances/{instance}:generateEphemeralCert",
                self.admin
            ),
            &[
                ("Authorization", &self.bearer),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["ephemeralCert"]["cert"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// A login+admin token of the service account and a login token of the user.
async fn login_tokens(ready: &Value) -> (String, String) {
    let token_uri = ready["token_endpoint"].as_str().unwrap();
    // The service account's token does both jobs; the user's is login-only.
    let sa_token = sa_token(ready, &[ADMIN_SCOPE, LOGIN_SCOPE]).await;
    let user: Value = serde_json::from_str(
        &std::fs::read_to_string(ready["authorized_user_file"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let r = http(
        "POST",
        token_uri,
        &[FORM],
        &form(&[
            ("grant_type", "refresh_token"),
            ("client_id", user["client_id"].as_str().unwrap()),
            ("client_secret", user["client_secret"].as_str().unwrap()),
            ("refresh_token", user["refresh_token"].as_str().unwrap()),
            ("scope", LOGIN_SCOPE),
        ]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let user_token = r.json()["access_token"].as_str().unwrap().to_string();
    (sa_token, user_token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_login_and_metadata_exchange() {
    let backend = Backend::start().await;
    let b = &backend.addr;
    let emu = start_emulator(
        &[
            format!("p:r:pg,backend={b},ca=legacy"),
            format!("p:r:pgmdx,backend={b},ca=legacy,mdx=true"),
        ],
        600,
    )
    .await;
    let ready = emu.ready.clone();
    let admin = ready["admin_endpoint"].as_str().unwrap().to_string();

    let (sa_token, user_token) = login_tokens(&ready).await;

    let google = Google {
        admin,
        bearer: format!("Bearer {sa_token}"),
    };
    let pg = google.connect_settings("pg").await;
    let pgmdx = google.connect_settings("pgmdx").await;
    assert!(pg.get("mdxProtocolSupport").is_none());
    assert_eq!(pgmdx["mdxProtocolSupport"], json!(["CLIENT_PROTOCOL_TYPE"]));
    let ip = |cs: &Value| {
        cs["ipAddresses"][0]["ipAddress"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let ca = |cs: &Value| cs["serverCaCert"]["cert"].as_str().unwrap().to_string();

    let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let public_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let pg_sa = google.cert("pg", &public_pem, Some(&sa_token)).await;
    let pg_user = google.cert("pg", &public_pem, Some(&user_token)).await;
    let pg_plain = google.cert("pg", &public_pem, None).await;
    let mdx_sa = google.cert("pgmdx", &public_pem, Some(&sa_token)).await;
    let mdx_plain = google.cert("pgmdx", &public_pem, None).await;
    let connect = |cs: &Value, cert: &str| {
        let (ip, ca, cert, key) = (ip(cs), ca(cs), cert.to_string(), key.clone());
        async move {
            dial(&ip, &ca, Some((&cert, &key)))
                .await
                .result
                .expect("handshake")
        }
    };

    // --- IAM: the service account's database user, after a refused SSLRequest. The
    // backend gets the StartupMessage exactly as sent, and nothing before it.
    let before = backend.connections();
    let mut tls = connect(&pg, &pg_sa).await;
    tls.write_all(SSL_REQUEST).await.unwrap();
    let mut n = [0u8; 1];
    tls.read_exact(&mut n).await.unwrap();
    assert_eq!(&n, b"N");
    let hello = startup_message(SA_DB_USER);
    tls.write_all(&hello).await.unwrap();
    echoes(&mut tls, &hello).await;
    assert_eq!(backend.connections(), before + 1);
    assert_eq!(backend.last_session(), hello);
    drop(tls);

    // The authorized user's certificate admits the user's email.
    let mut tls = connect(&pg, &pg_user).await;
    let hello = startup_message(USER_DB_USER);
    tls.write_all(&hello).await.unwrap();
    echoes(&mut tls, &hello).await;
    drop(tls);

    // --- Wrong users get Cloud SQL's FATAL and the backend never hears of them.
    let before = backend.connections();
    for (cert, user, message) in [
        (
            &pg_sa,
            USER_DB_USER,
            "Cloud SQL IAM user authentication failed for user \"dev-user@example.com\"",
        ),
        (
            &pg_sa,
            "connector-sa@emulator-project.iam.gserviceaccount.com",
            "Cloud SQL IAM service account authentication failed for user \
             \"connector-sa@emulator-project.iam.gserviceaccount.com\"",
        ),
        (
            &pg_user,
            SA_DB_USER,
            "Cloud SQL IAM service account authentication failed for user \
             \"connector-sa@emulator-project.iam\"",
        ),
        (
            &pg_user,
            "postgres",
            "Cloud SQL IAM user authentication failed for user \"postgres\"",
        ),
    ] {
        let mut tls = connect(&pg, cert).await;
        tls.write_all(&startup_message(user)).await.unwrap();
        assert_eq!(error_fields(&read_all(&mut tls).await), fatal(message));
    }
    assert_eq!(
        backend.connections(),
        before,
        "a refused login reached the backend"
    );

    // --- Certificates without a login token are for password logins: bytes pass as they are.
    let mut tls = connect(&pg, &pg_plain).await;
    tls.write_all(b"anything at all").await.unwrap();
    echoes(&mut tls, b"anything at all").await;
    drop(tls);

    // --- MDX: request and StartupMessage in one write, as the Go connector may send them.
    let hello = startup_message(SA_DB_USER);
    let mut tls = connect(&pgmdx, &mdx_sa).await;
    tls.write_all(&[mdx_request("test-agent/1.0", 1), hello.clone()].concat())
        .await
        .unwrap();
    let mut answer = [0u8; 14];
    tls.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer, MDX_OK);
    echoes(&mut tls, &hello).await;
    assert_eq!(
        backend.last_session(),
        hello,
        "MDX bytes reached the backend"
    );
    drop(tls);

    // MDX, then a wrong user: OK first, then the FATAL.
    let before = backend.connections();
    let mut tls = connect(&pgmdx, &mdx_sa).await;
    tls.write_all(&[mdx_request("ua", 3), startup_message("nobody@example.com")].concat())
        .await
        .unwrap();
    let answer = read_all(&mut tls).await;
    assert_eq!(&answer[..14], MDX_OK);
    assert_eq!(
        error_fields(&answer[14..]),
        fatal("Cloud SQL IAM user authentication failed for user \"nobody@example.com\"")
    );
    assert_eq!(backend.connections(), before);

    // A client that does not speak MDX: its first bytes are kept for the backend.
    let mut tls = connect(&pgmdx, &mdx_plain).await;
    let hello = startup_message("postgres");
    tls.write_all(&hello).await.unwrap();
    echoes(&mut tls, &hello).await;
    assert_eq!(backend.last_session(), hello);
    drop(tls);

    // A malformed request: an ERROR response, then the end.
    let before = backend.connections();
    let mut tls = connect(&pgmdx, &mdx_plain).await;
    tls.write_all(b"CSQLMDEX\x00\x00\x00\x02\x12\x05")
        .await
        .unwrap();
    let answer = read_all(&mut tls).await;
    let message = "invalid MetadataExchangeRequest: field 2: length 5 past the end";
    let mut want = b"CSQLMDEX\x00\x00\x00\x43\x08\x02\x12\x3f".to_vec();
    want.extend_from_slice(message.as_bytes());
    assert_eq!(answer, want);
    // Too long to be a real request: closed without an answer.
    let mut tls = connect(&pgmdx, &mdx_plain).await;
    tls.write_all(b"CSQLMDEX\x00\x00\x40\x01").await.unwrap();
    assert!(read_all(&mut tls).await.is_empty());
    assert_eq!(backend.connections(), before);

    // --- Counters: every exchange, and the protocol type of each valid one.
    let control = ready["control_endpoint"].as_str().unwrap();
    let calls = http("GET", &format!("{control}/calls"), &[], b"")
        .await
        .json();
    assert_eq!(calls["mdx"], json!({"p:pgmdx": 4}));
    assert_eq!(
        calls["mdxClientProtocolType"],
        json!({"p:pgmdx": ["TCP", "UDS"]})
    );

    // --- The log tells what happened, without the tokens (once every connection's
    // handler is done, so has logged all it will).
    eventually("the proxies closed every connection", || async {
        let calls = http("GET", &format!("{control}/calls"), &[], b"")
            .await
            .json();
        calls["proxyOpenConnections"] == json!({})
    })
    .await;
    let log = emu
        .log_containing(&[
            "metadata exchange: client_protocol_type=TCP",
            "IAM login refused",
        ])
        .await;
    for secret in [sa_token.as_str(), user_token.as_str(), "ya29."] {
        assert!(!log.contains(secret), "log leaks a secret: {log}");
    }
}

/// A stand-in MySQL server: greets each session with `MYSQL_GREETING`, then echoes and
/// keeps every byte the session sent it.
async fn mysql_backend() -> Backend {
    Backend::greeting_with(MYSQL_GREETING).await
}

/// A HandshakeV10 packet (sequence 0), shortened but well framed.
const MYSQL_GREETING: &[u8] =
    b"\x1e\x00\x00\x00\x0a8.0.36-emulated\x00\x01\x00\x00\x00abcdefgh\x00";

const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_SSL: u32 = 0x800;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;

/// A HandshakeResponse41 packet (sequence 1) for `user` without a password, laid out by
/// hand from the MySQL docs.
fn mysql_login(user: &str) -> Vec<u8> {
    let caps = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH;
    let mut p = caps.to_le_bytes().to_vec();
    p.extend_from_slice(&(1u32 << 24).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    p.push(0); // empty auth response
    p.extend_from_slice(b"mysql_clear_password\0");
    let mut out = (p.len() as u32).to_le_bytes()[..3].to_vec();
    out.push(1);
    out.extend_from_slice(&p);
    out
}

/// Splits a single ERR packet into (sequence id, error code, SQL state, message).
fn mysql_err(bytes: &[u8]) -> (u8, u16, String, String) {
    assert!(bytes.len() > 13, "not an ERR packet: {bytes:?}");
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], 0]) as usize;
    assert_eq!(len + 4, bytes.len(), "one packet expected: {bytes:?}");
    assert_eq!(bytes[4], 0xff);
    assert_eq!(bytes[7], b'#');
    (
        bytes[3],
        u16::from_le_bytes([bytes[5], bytes[6]]),
        String::from_utf8_lossy(&bytes[8..13]).into_owned(),
        String::from_utf8_lossy(&bytes[13..]).into_owned(),
    )
}

/// Reads the MySQL greeting; returns how long it took (it must come at once, without a
/// wait for an MDX request that never comes).
async fn greeted(tls: &mut Tls) -> std::time::Duration {
    let started = std::time::Instant::now();
    let mut greeting = vec![0u8; MYSQL_GREETING.len()];
    tls.read_exact(&mut greeting).await.unwrap();
    assert_eq!(greeting, MYSQL_GREETING);
    started.elapsed()
}

/// Reads until EOF or an error (a cut connection), returning what arrived.
async fn read_until_cut(tls: &mut Tls) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("connection not cut; got {out:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_iam_login() {
    let backend = mysql_backend().await;
    let b = &backend.addr;
    let emu = start_emulator(
        &[
            format!("p:r:my,backend={b},ca=legacy,version=MYSQL_8_0"),
            format!("p:r:mymdx,backend={b},ca=legacy,version=MYSQL_8_0,mdx=true"),
        ],
        600,
    )
    .await;
    let ready = emu.ready.clone();
    let (sa_token, user_token) = login_tokens(&ready).await;
    let google = Google {
        admin: ready["admin_endpoint"].as_str().unwrap().to_string(),
        bearer: format!("Bearer {sa_token}"),
    };
    let my = google.connect_settings("my").await;
    let mymdx = google.connect_settings("mymdx").await;
    let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let public_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let sa = google.cert("my", &public_pem, Some(&sa_token)).await;
    let user = google.cert("my", &public_pem, Some(&user_token)).await;
    let plain = google.cert("my", &public_pem, None).await;
    let mdx_sa = google.cert("mymdx", &public_pem, Some(&sa_token)).await;
    let connect = |cs: &Value, cert: &str| {
        let ip = cs["ipAddresses"][0]["ipAddress"]
            .as_str()
            .unwrap()
            .to_string();
        let ca = cs["serverCaCert"]["cert"].as_str().unwrap().to_string();
        let (cert, key) = (cert.to_string(), key.clone());
        async move {
            dial(&ip, &ca, Some((&cert, &key)))
                .await
                .result
                .expect("handshake")
        }
    };
    // --- Password logins (no login token): bytes pass as they are, greeting first.
    let mut tls = connect(&my, &plain).await;
    assert!(greeted(&mut tls).await < std::time::Duration::from_millis(400));
    let login = mysql_login("root");
    tls.write_all(&login).await.unwrap();
    echoes(&mut tls, &login).await;
    assert_eq!(backend.last_session(), login);
    drop(tls);

    // --- IAM: the part of the principal before '@', relayed unchanged.
    for (cert, db_user) in [(&sa, "connector-sa"), (&user, "dev-user")] {
        let mut tls = connect(&my, cert).await;
        assert!(greeted(&mut tls).await < std::time::Duration::from_millis(400));
        let login = mysql_login(db_user);
        tls.write_all(&login).await.unwrap();
        echoes(&mut tls, &login).await;
        tls.write_all(b"\x01\x00\x00\x00\x0e").await.unwrap(); // COM_PING
        echoes(&mut tls, b"\x01\x00\x00\x00\x0e").await;
        assert_eq!(
            backend.last_session(),
            [login.as_slice(), b"\x01\x00\x00\x00\x0e"].concat()
        );
        drop(tls);
    }

    // --- Wrong users: MySQL's access-denied ERR, and the backend gets nothing.
    for (cert, db_user) in [
        (&sa, "dev-user"),
        (&sa, "connector-sa@emulator-project.iam.gserviceaccount.com"),
        (&user, "connector-sa"),
        (&user, "root"),
    ] {
        let mut tls = connect(&my, cert).await;
        greeted(&mut tls).await;
        tls.write_all(&mysql_login(db_user)).await.unwrap();
        let (seq, code, state, message) = mysql_err(&read_all(&mut tls).await);
        assert_eq!((seq, code, state.as_str()), (2, 1045, "28000"));
        let prefix = format!("Access denied for user '{db_user}'@'cloudsqlproxy~");
        assert!(message.starts_with(&prefix), "{message}");
        assert!(message.ends_with("' (using password: NO)"), "{message}");
        // Once the backend saw its session end, it has seen all the proxy sent.
        eventually("the backend session ended", || {
            std::future::ready(backend.ended() == backend.connections())
        })
        .await;
        assert!(
            backend.last_session().is_empty(),
            "a refused login reached the backend"
        );
    }

    // --- An SSLRequest inside the tunnel is refused.
    let mut tls = connect(&my, &sa).await;
    greeted(&mut tls).await;
    let mut ssl = (CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION)
        .to_le_bytes()
        .to_vec();
    ssl.extend_from_slice(&(1u32 << 24).to_le_bytes());
    ssl.push(45);
    ssl.extend_from_slice(&[0; 23]);
    tls.write_all(&[&[32, 0, 0, 1], ssl.as_slice()].concat())
        .await
        .unwrap();
    let (seq, code, state, _) = mysql_err(&read_all(&mut tls).await);
    assert_eq!((seq, code, state.as_str()), (2, 1043, "08S01"));

    // --- MDX first (the client writes it before the greeting), then the IAM login.
    let mut tls = connect(&mymdx, &mdx_sa).await;
    tls.write_all(&mdx_request("test-agent/1.0", 1))
        .await
        .unwrap();
    let mut answer = [0u8; 14];
    tls.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer, MDX_OK);
    greeted(&mut tls).await;
    let login = mysql_login("connector-sa");
    tls.write_all(&login).await.unwrap();
    echoes(&mut tls, &login).await;
    assert_eq!(
        backend.last_session(),
        login,
        "MDX bytes reached the backend"
    );
    drop(tls);

    emu.log_containing(&["IAM login as \"connector-sa\"", "IAM login refused"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_faults() {
    let backend = Backend::start().await;
    let mysql = mysql_backend().await;
    let emu = start_emulator(
        &[
            format!("p:r:pg,backend={},ca=legacy", backend.addr),
            format!("p:r:my,backend={},ca=legacy,version=MYSQL_8_0", mysql.addr),
        ],
        600,
    )
    .await;
    let ready = emu.ready.clone();
    let (sa_token, _) = login_tokens(&ready).await;
    let google = Google {
        admin: ready["admin_endpoint"].as_str().unwrap().to_string(),
        bearer: format!("Bearer {sa_token}"),
    };
    let control = ready["control_endpoint"].as_str().unwrap().to_string();
    let set = |instance: &str, body: Value| {
        let url = format!("{control}/instances/{instance}/proxy");
        async move {
            http(
                "POST",
                &url,
                &[("Content-Type", "application/json")],
                body.to_string().as_bytes(),
            )
            .await
        }
    };
    let pg = google.connect_settings("pg").await;
    let my = google.connect_settings("my").await;
    let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let public_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let pg_cert = google.cert("pg", &public_pem, None).await;
    let my_cert = google.cert("my", &public_pem, Some(&sa_token)).await;
    let dial_to = |cs: &Value, cert: &str| {
        let ip = cs["ipAddresses"][0]["ipAddress"]
            .as_str()
            .unwrap()
            .to_string();
        let ca = cs["serverCaCert"]["cert"].as_str().unwrap().to_string();
        let (cert, key) = (cert.to_string(), key.clone());
        async move { dial(&ip, &ca, Some((&cert, &key))).await.result }
    };

    // Bad requests.
    assert_eq!(set("p:r:nope", json!({"mode": "refuse"})).await.status, 404);
    assert_eq!(set("p:r:pg", json!({"mode": "explode"})).await.status, 400);
    assert_eq!(
        set("p:r:pg", json!({"mode": "drop-after-bytes"}))
            .await
            .status,
        400
    );
    assert_eq!(set("p:r:pg", json!({})).await.status, 400);

    // refuse: no TLS handshake at all.
    assert_eq!(set("p:r:pg", json!({"mode": "refuse"})).await.status, 200);
    let before = backend.connections();
    assert!(dial_to(&pg, &pg_cert).await.is_err());
    assert!(dial_to(&pg, &pg_cert).await.is_err());
    assert_eq!(backend.connections(), before);

    // drop-after-handshake: TLS completes, then the connection dies.
    assert_eq!(
        set("p:r:pg", json!({"mode": "drop-after-handshake"}))
            .await
            .status,
        200
    );
    let mut tls = dial_to(&pg, &pg_cert).await.expect("handshake");
    let _ = tls.write_all(b"hello").await;
    assert!(read_until_cut(&mut tls).await.is_empty());
    assert_eq!(backend.connections(), before);

    // drop-after-bytes: exactly N bytes reach the client, then both sides are cut.
    assert_eq!(
        set("p:r:pg", json!({"mode": "drop-after-bytes", "bytes": 5}))
            .await
            .status,
        200
    );
    let mut tls = dial_to(&pg, &pg_cert).await.expect("handshake");
    tls.write_all(b"hello world").await.unwrap();
    assert_eq!(read_until_cut(&mut tls).await, b"hello");
    assert_eq!(backend.connections(), before + 1);

    // The MySQL greeting of an IAM login counts too.
    let n = MYSQL_GREETING.len() + 4;
    assert_eq!(
        set("p:r:my", json!({"mode": "drop-after-bytes", "bytes": n}))
            .await
            .status,
        200
    );
    let mut tls = dial_to(&my, &my_cert).await.expect("handshake");
    let mut greeting = vec![0u8; MYSQL_GREETING.len()];
    tls.read_exact(&mut greeting).await.unwrap();
    let login = mysql_login("connector-sa");
    tls.write_all(&login).await.unwrap();
    assert_eq!(read_until_cut(&mut tls).await, login[..4]);

    // normal again.
    assert_eq!(set("p:r:pg", json!({"mode": "normal"})).await.status, 200);
    let mut tls = dial_to(&pg, &pg_cert).await.expect("handshake");
    tls.write_all(b"hello world").await.unwrap();
    echoes(&mut tls, b"hello world").await;
}
