//! Helpers shared by the end-to-end tests: a minimal HTTP client, starting the emulator
//! binary, and dialling a proxy the way a connector does.

// Each test binary uses a different subset.
#![allow(dead_code)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rsa::pkcs8::EncodePrivateKey;
use rsa::RsaPrivateKey;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An answer whose body may be binary.
pub struct RawResp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client (one request per connection).
pub async fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let raw = http_raw(method, url, headers, body).await;
    let text = String::from_utf8(raw.body).unwrap();
    let chunked = raw
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(&text) } else { text };
    Resp {
        status: raw.status,
        headers: raw.headers,
        body,
    }
}

/// [`http`] with the body as it came (chunks not undone).
pub async fn http_raw(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> RawResp {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, format!("/{p}")),
        None => (rest, "/".to_string()),
    };
    let mut s = TcpStream::connect(host).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(buf[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    RawResp {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    }
}

pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

pub fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    serde_urlencoded::to_string(pairs).unwrap().into_bytes()
}

pub const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A running `gcp-emulator` process, killed on drop.
pub struct Emulator {
    pub child: Child,
    pub ready: Value,
    /// Everything it logged so far.
    pub stderr: Arc<Mutex<String>>,
    /// The task copying its stderr into `stderr`; it ends when the process closes it.
    stderr_reader: Option<tokio::task::JoinHandle<()>>,
    _dir: TempDir,
}

/// How long a test waits for something that must happen.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(20);

/// Waits until `check` holds, looking again every few milliseconds, and panics naming
/// `what` if it does not by [`EVENT_DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + EVENT_DEADLINE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not by the deadline: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Emulator {
    /// The log, once it has every line of `needles` (waits up to [`EVENT_DEADLINE`]).
    pub async fn log_containing(&self, needles: &[&str]) -> String {
        let has_all = || {
            let log = self.stderr.lock().unwrap();
            needles.iter().all(|n| log.contains(n))
        };
        eventually(&format!("the log contains {needles:?}"), || {
            std::future::ready(has_all())
        })
        .await;
        self.stderr.lock().unwrap().clone()
    }

    /// The whole log of a process that has exited: waits (up to [`EVENT_DEADLINE`]) for
    /// its stderr to be read to the end.
    pub async fn final_log(&mut self) -> String {
        if let Some(reader) = self.stderr_reader.take() {
            tokio::time::timeout(EVENT_DEADLINE, reader)
                .await
                .expect("the emulator's stderr did not close")
                .unwrap();
        }
        self.stderr.lock().unwrap().clone()
    }
}

pub struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the binary with one `--instance` per entry of `instances` and waits for its
/// ready line.
pub async fn start_emulator(instances: &[String], token_lifetime_secs: u64) -> Emulator {
    let dir = TempDir(std::env::temp_dir().join(format!(
        "gcp-emulator-test-{}-{:x}",
        std::process::id(),
        rand::random::<u32>()
    )));
    let ready_file = dir.0.join("ready.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gcp-emulator"))
        .args(instances.iter().flat_map(|i| ["--instance", i.as_str()]))
        .args([
            "--state-dir",
            dir.0.to_str().unwrap(),
            "--ready-file",
            ready_file.to_str().unwrap(),
            "--token-lifetime-secs",
            &token_lifetime_secs.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut err_lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = stderr.clone();
    let stderr_reader = tokio::spawn(async move {
        while let Ok(Some(l)) = err_lines.next_line().await {
            let mut s = sink.lock().unwrap();
            s.push_str(&l);
            s.push('\n');
        }
    });
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(120), out.next_line())
        .await
        .expect("emulator did not get ready in time")
        .unwrap()
        .unwrap_or_else(|| panic!("emulator exited: {}", stderr.lock().unwrap()));
    let ready: Value = serde_json::from_str(&line).unwrap();
    let from_file = std::fs::read_to_string(&ready_file).unwrap();
    assert_eq!(from_file.trim_end(), line);
    Emulator {
        child,
        ready,
        stderr,
        stderr_reader: Some(stderr_reader),
        _dir: dir,
    }
}

/// Verifies the chain like the Go connector (every serverCaCert certificate is a root, no
/// intermediates used), leaving the identity check to the caller, since Cloud SQL names
/// are not what webpki checks (CN `project:instance`, SANs with a trailing dot).
#[derive(Debug)]
pub struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
    seen_leaf: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen_leaf.lock().unwrap() = Some(end_entity.to_vec());
        match self
            .inner
            .verify_server_cert(end_entity, &[], server_name, ocsp, now)
        {
            Ok(v) => Ok(v),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            Err(e) => Err(e),
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

pub struct Dialled {
    pub result: std::io::Result<tokio_rustls::client::TlsStream<TcpStream>>,
    /// The server leaf the client saw.
    pub leaf: Option<Vec<u8>>,
}

pub async fn dial(
    ip: &str,
    server_ca_pem: &str,
    client: Option<(&str, &RsaPrivateKey)>,
) -> Dialled {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for block in ::pem::parse_many(server_ca_pem).unwrap() {
        roots
            .add(CertificateDer::from(block.contents().to_vec()))
            .unwrap();
    }
    let verifier = Arc::new(ChainOnly {
        inner: WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap(),
        seen_leaf: Mutex::new(None),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone());
    let config = match client {
        Some((cert_pem, key)) => {
            let cert = CertificateDer::from(::pem::parse(cert_pem).unwrap().into_contents());
            let key_der = key.to_pkcs8_der().unwrap().as_bytes().to_vec();
            builder
                .with_client_auth_cert(
                    vec![cert],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
                )
                .unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect((ip, 3307)).await.unwrap();
    let name = ServerName::IpAddress(ip.parse::<std::net::IpAddr>().unwrap().into());
    let result = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await;
    let leaf = verifier.seen_leaf.lock().unwrap().clone();
    Dialled { result, leaf }
}

/// A Postgres StartupMessage (protocol 3.0) for `user`, from an independent encoder.
pub fn startup_message(user: &str) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    postgres_protocol::message::frontend::startup_message(
        [("user", user), ("database", "postgres")],
        &mut buf,
    )
    .unwrap();
    buf.to_vec()
}

/// The test PostgreSQL (`GCPDB_TEST_PG`, `127.0.0.1:PORT`) that scripts/test starts: roles
/// `postgres` (trust), `app`/`app-password` (SCRAM) and the emulator's IAM principals
/// `connector-sa@emulator-project.iam`, `dev-user@example.com` and
/// `target-sa@emulator-project.iam` (trust).
pub fn test_postgres() -> String {
    std::env::var("GCPDB_TEST_PG").unwrap_or_else(|_| {
        panic!(
            "GCPDB_TEST_PG is not set: run scripts/test, or start a PostgreSQL as it does \
             (source scripts/common.sh; start_postgres DIR; export GCPDB_TEST_PG=127.0.0.1:$PGPORT)"
        )
    })
}

/// An emulator started inside the test process (its listeners run on the test's runtime).
pub struct InProcess {
    pub running: gcp_emulator::Running,
    pub ready: Value,
    _dir: TempDir,
}

impl InProcess {
    pub fn control(&self) -> String {
        self.ready["control_endpoint"].as_str().unwrap().to_string()
    }

    /// `GET /emulator/v1/calls`.
    pub async fn calls(&self) -> Value {
        http("GET", &format!("{}/calls", self.control()), &[], b"")
            .await
            .json()
    }

    /// `POST /emulator/v1/instances/{name}/{knob}` with `body`; `name` is percent-encoded
    /// into one path segment.
    pub async fn knob(&self, name: &str, knob: &str, body: Value) -> Resp {
        let name = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
        http(
            "POST",
            &format!("{}/instances/{name}/{knob}", self.control()),
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
        .await
    }
}

/// Starts the emulator in-process with these instance specs (as given to `--instance`).
pub async fn start_in_process(specs: &[String], token_lifetime_secs: u64) -> InProcess {
    start_in_process_with(specs, token_lifetime_secs, &[]).await
}

/// [`start_in_process`] with more command-line arguments (`extra`).
pub async fn start_in_process_with(
    specs: &[String],
    token_lifetime_secs: u64,
    extra: &[&str],
) -> InProcess {
    let dir = TempDir(std::env::temp_dir().join(format!(
        "gcp-emulator-inproc-{}-{:x}",
        std::process::id(),
        rand::random::<u32>()
    )));
    let mut args: Vec<String> = specs
        .iter()
        .flat_map(|s| ["--instance".to_string(), s.clone()])
        .collect();
    args.extend([
        "--state-dir".to_string(),
        dir.0.display().to_string(),
        "--token-lifetime-secs".to_string(),
        token_lifetime_secs.to_string(),
    ]);
    args.extend(extra.iter().map(|a| a.to_string()));
    let gcp_emulator::config::Command::Run(opts) = gcp_emulator::config::parse_args(args).unwrap()
    else {
        panic!("not a run command");
    };
    let running = gcp_emulator::start(opts).await.unwrap();
    let ready = serde_json::to_value(&running.ready).unwrap();
    InProcess {
        running,
        ready,
        _dir: dir,
    }
}

/// An access token of the emulator's service account with `scopes`, through the
/// service-account JWT flow at the token endpoint.
pub async fn sa_token(ready: &Value, scopes: &[&str]) -> String {
    use rsa::pkcs8::DecodePrivateKey;
    let token_uri = ready["token_endpoint"].as_str().unwrap();
    let sa: Value = serde_json::from_str(
        &std::fs::read_to_string(ready["service_account_file"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let key = RsaPrivateKey::from_pkcs8_pem(sa["private_key"].as_str().unwrap()).unwrap();
    let jwt = gcp_emulator::jwt::sign_for_tests(
        &key,
        sa["private_key_id"].as_str(),
        &serde_json::json!({"iss": sa["client_email"], "aud": token_uri, "iat": now(),
                            "exp": now() + 3600, "scope": scopes.join(" ")}),
    );
    let r = http(
        "POST",
        token_uri,
        &[FORM],
        &form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &jwt),
        ]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["access_token"].as_str().unwrap().to_string()
}

/// Dials `addr` as the AlloyDB connectors do (spec §6): TLS 1.3, only `ca_pem` trusted,
/// standard webpki verification of the server for `name`, and `chain` (PEMs, leaf first)
/// with `key` as the client identity.
pub async fn dial_verified(
    addr: std::net::SocketAddr,
    name: ServerName<'static>,
    ca_pem: &str,
    chain: &[String],
    key: &RsaPrivateKey,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for block in ::pem::parse_many(ca_pem).unwrap() {
        roots
            .add(CertificateDer::from(block.contents().to_vec()))
            .unwrap();
    }
    let certs: Vec<CertificateDer<'static>> = chain
        .iter()
        .map(|p| CertificateDer::from(::pem::parse(p).unwrap().into_contents()))
        .collect();
    let key_der = key.to_pkcs8_der().unwrap().as_bytes().to_vec();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            certs,
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
        )
        .unwrap();
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// An AlloyDB `MetadataExchangeRequest{user_agent=1, auth_type=2, oauth2_token=3}` with its
/// big-endian length, encoded by hand here so the tests do not trust the emulator's encoder.
pub fn alloydb_mdx_request(user_agent: &str, auth_type: u8, token: &str) -> Vec<u8> {
    let mut payload = Vec::new();
    if !user_agent.is_empty() {
        payload.push(0x0a);
        put_varint(&mut payload, user_agent.len());
        payload.extend_from_slice(user_agent.as_bytes());
    }
    if auth_type != 0 {
        payload.extend_from_slice(&[0x10, auth_type]);
    }
    if !token.is_empty() {
        payload.push(0x1a);
        put_varint(&mut payload, token.len());
        payload.extend_from_slice(token.as_bytes());
    }
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&payload);
    out
}

/// Reads one AlloyDB `MetadataExchangeResponse` (length-prefixed; at most 16 KiB, as the
/// connectors allow) and returns (response_code, error), decoded by hand.
pub async fn read_alloydb_mdx_response<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
) -> std::io::Result<(u64, String)> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 16 * 1024 {
        return Err(std::io::Error::other(format!("response of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    let (mut code, mut error, mut i) = (0u64, String::new(), 0usize);
    let varint = |i: &mut usize| {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let b = body[*i];
            *i += 1;
            v |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                return v;
            }
        }
    };
    while i < body.len() {
        match varint(&mut i) {
            0x08 => code = varint(&mut i),
            0x12 => {
                let n = varint(&mut i) as usize;
                error = String::from_utf8(body[i..i + n].to_vec()).unwrap();
                i += n;
            }
            other => panic!("unexpected field key {other:#x} in {body:?}"),
        }
    }
    Ok((code, error))
}

/// The (type, value) fields of an ErrorResponse body.
pub fn pg_error_fields(
    body: &postgres_protocol::message::backend::ErrorResponseBody,
) -> Vec<(char, String)> {
    use fallible_iterator::FallibleIterator;
    body.fields()
        .map(|f| {
            Ok((
                f.type_() as char,
                String::from_utf8_lossy(f.value_bytes()).into_owned(),
            ))
        })
        .collect()
        .unwrap()
}

/// A Postgres session over any stream, from an independent codec (`postgres-protocol`).
pub struct Pg<S> {
    pub stream: S,
    buf: bytes::BytesMut,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Pg<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: bytes::BytesMut::new(),
        }
    }

    /// The next backend message (panics on EOF).
    pub async fn next(&mut self) -> postgres_protocol::message::backend::Message {
        loop {
            if let Some(m) =
                postgres_protocol::message::backend::Message::parse(&mut self.buf).unwrap()
            {
                return m;
            }
            let n = self.stream.read_buf(&mut self.buf).await.unwrap();
            assert!(n > 0, "the server closed the connection");
        }
    }

    async fn send(&mut self, buf: bytes::BytesMut) {
        self.stream.write_all(&buf).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Logs in as `user` to database `postgres`, answering a SCRAM-SHA-256 challenge with
    /// `password`, up to ReadyForQuery. `Err` holds the fields of an ErrorResponse.
    pub async fn login(
        &mut self,
        user: &str,
        password: Option<&str>,
    ) -> Result<(), Vec<(char, String)>> {
        use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
        use postgres_protocol::message::backend::Message;
        use postgres_protocol::message::frontend;
        let mut out = bytes::BytesMut::new();
        frontend::startup_message([("user", user), ("database", "postgres")], &mut out).unwrap();
        self.send(out).await;
        let mut scram = None;
        loop {
            match self.next().await {
                Message::AuthenticationSasl(_) => {
                    let password = password.expect("the server asked for a password");
                    let s = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                    let mut out = bytes::BytesMut::new();
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out).unwrap();
                    self.send(out).await;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram.as_mut().unwrap();
                    s.update(body.data()).unwrap();
                    let mut out = bytes::BytesMut::new();
                    frontend::sasl_response(s.message(), &mut out).unwrap();
                    self.send(out).await;
                }
                Message::AuthenticationSaslFinal(body) => {
                    scram.take().unwrap().finish(body.data()).unwrap();
                }
                Message::AuthenticationOk
                | Message::ParameterStatus(_)
                | Message::BackendKeyData(_)
                | Message::NoticeResponse(_) => {}
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(body) => return Err(pg_error_fields(&body)),
                _ => panic!("unexpected message during login"),
            }
        }
    }

    /// Runs `sql` with the simple query protocol; returns the first column of each row.
    pub async fn query(&mut self, sql: &str) -> Vec<String> {
        use fallible_iterator::FallibleIterator;
        use postgres_protocol::message::backend::Message;
        let mut out = bytes::BytesMut::new();
        postgres_protocol::message::frontend::query(sql, &mut out).unwrap();
        self.send(out).await;
        let mut rows = Vec::new();
        loop {
            match self.next().await {
                Message::RowDescription(_) | Message::CommandComplete(_) => {}
                Message::DataRow(body) => {
                    let first = body.ranges().next().unwrap().unwrap().unwrap();
                    rows.push(String::from_utf8(body.buffer()[first].to_vec()).unwrap());
                }
                Message::ReadyForQuery(_) => return rows,
                Message::ErrorResponse(body) => {
                    panic!("query failed: {:?}", pg_error_fields(&body))
                }
                _ => panic!("unexpected message after a query"),
            }
        }
    }

    /// Sends Terminate.
    pub async fn terminate(mut self) {
        let mut out = bytes::BytesMut::new();
        postgres_protocol::message::frontend::terminate(&mut out);
        self.send(out).await;
    }
}
