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

/// A minimal HTTP/1.1 client (one request per connection).
pub async fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
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
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Resp {
        status,
        headers,
        body,
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
    _dir: TempDir,
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
    tokio::spawn(async move {
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
