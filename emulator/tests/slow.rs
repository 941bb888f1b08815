//! The stall knobs, seen from a client's socket: an Admin API answer whose headers come and
//! whose body never does, a token endpoint answer trickled a byte at a time, and a proxy
//! that trickles its TLS server flight. Assertions are about the bytes received by a
//! deadline, never about how long something took.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{dial, form, http, now, sa_token, start_in_process, InProcess, FORM};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

const INSTANCE: &str = "slow-project:us-central1:slow";
const ADMIN_SCOPE: &str = "https://www.googleapis.com/auth/sqlservice.admin";
/// The wait for something that must happen.
const DEADLINE: Duration = Duration::from_secs(30);

/// No database behind it: these tests never get that far.
async fn emulator() -> InProcess {
    start_in_process(&[format!("{INSTANCE},backend=127.0.0.1:1")], 600).await
}

async fn fault(emu: &InProcess, body: Value) {
    let r = http(
        "POST",
        &format!("{}/faults", emu.control()),
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{body}: {}", r.body);
}

/// Bytes read from `tcp` until `until` (or the end of the stream), and how many reads
/// brought them.
async fn read_until(tcp: &mut TcpStream, until: Instant, buf: &mut Vec<u8>) -> usize {
    let mut reads = 0;
    let mut chunk = [0u8; 4096];
    while let Ok(Ok(n @ 1..)) = timeout_at(until, tcp.read(&mut chunk)).await {
        buf.extend_from_slice(&chunk[..n]);
        reads += 1;
    }
    reads
}

/// Sends `request` and reads the status line and headers (within [`DEADLINE`]): the status,
/// the Content-Length, and any body bytes that came with them.
async fn head(tcp: &mut TcpStream, request: &[u8]) -> (u16, usize, Vec<u8>) {
    tcp.write_all(request).await.unwrap();
    let until = Instant::now() + DEADLINE;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = timeout_at(until, tcp.read(&mut chunk))
            .await
            .expect("no headers by the deadline")
            .unwrap();
        assert!(
            n > 0,
            "closed before the headers: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8(buf[..end].to_vec()).unwrap();
    let status = text[9..12].parse().unwrap();
    let length = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no Content-Length in {text}"));
    (status, length, buf[end..].to_vec())
}

fn connect_settings_request(emu: &InProcess, token: &str) -> (String, Vec<u8>) {
    let base = emu.ready["admin_endpoint"].as_str().unwrap();
    let addr = base.trim_start_matches("http://").to_string();
    let req = format!(
        "GET /sql/v1beta4/projects/slow-project/instances/slow/connectSettings HTTP/1.1\r\n\
         Host: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    (addr, req.into_bytes())
}

#[tokio::test]
async fn admin_api_answer_stalls_after_its_headers() {
    let emu = emulator().await;
    let token = sa_token(&emu.ready, &[ADMIN_SCOPE]).await;
    fault(
        &emu,
        json!({"method": "connectSettings", "body": "stall", "count": 1}),
    )
    .await;
    let (addr, req) = connect_settings_request(&emu, &token);

    let mut stalled = TcpStream::connect(&addr).await.unwrap();
    let (status, length, mut body) = head(&mut stalled, &req).await;
    assert_eq!(status, 200);
    assert!(length > 100, "the real answer's length: {length}");

    // The next answer (the fault was for one) comes whole: the server is not stuck, and
    // the stalled connection is still owed its body.
    let mut next = TcpStream::connect(&addr).await.unwrap();
    let (status, next_length, mut next_body) = head(&mut next, &req).await;
    assert_eq!(status, 200);
    read_until(&mut next, Instant::now() + DEADLINE, &mut next_body).await;
    assert_eq!(next_body.len(), next_length);
    let settings: Value = serde_json::from_slice(&next_body).unwrap();
    assert_eq!(settings["kind"], "sql#connectSettings");

    // By now the stalled body would long be there: nothing of it came, and the
    // connection is still open.
    let reads = read_until(
        &mut stalled,
        Instant::now() + Duration::from_millis(500),
        &mut body,
    )
    .await;
    assert_eq!((reads, body.len()), (0, 0), "{body:?}");
    let calls = emu.calls().await;
    assert_eq!(calls["connectSettings"]["slow-project:slow"], 2, "{calls}");
}

#[tokio::test]
async fn token_answer_trickles_a_byte_at_a_time() {
    let emu = emulator().await;
    fault(
        &emu,
        json!({"method": "token", "body": "trickle", "delay_ms": 25}),
    )
    .await;
    // A JWT-bearer grant, as sa_token makes one (its own call comes after the fault).
    let sa: Value = serde_json::from_str(
        &std::fs::read_to_string(emu.ready["service_account_file"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let token_uri = emu.ready["token_endpoint"].as_str().unwrap();
    let key = {
        use rsa::pkcs8::DecodePrivateKey;
        rsa::RsaPrivateKey::from_pkcs8_pem(sa["private_key"].as_str().unwrap()).unwrap()
    };
    let jwt = gcp_emulator::jwt::sign_for_tests(
        &key,
        sa["private_key_id"].as_str(),
        &json!({"iss": sa["client_email"], "aud": token_uri, "iat": now(),
                "exp": now() + 3600, "scope": ADMIN_SCOPE}),
    );
    let body = form(&[
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("assertion", &jwt),
    ]);
    let addr = token_uri
        .trim_start_matches("http://")
        .trim_end_matches("/token");
    let mut req = format!(
        "POST /token HTTP/1.1\r\nHost: {addr}\r\n{}: {}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        FORM.0,
        FORM.1,
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);

    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let (status, length, mut got) = head(&mut tcp, &req).await;
    assert_eq!(status, 200);
    // At 25 ms a byte the whole answer takes over 2 s: by a 1 s deadline some of it has
    // come, not all.
    assert!(length > 80, "{length}");
    let mut reads = read_until(&mut tcp, Instant::now() + Duration::from_secs(1), &mut got).await;
    assert!(
        !got.is_empty() && got.len() < length,
        "{} of {length}",
        got.len()
    );
    // Then the rest, in small pieces, and it is the real answer.
    reads += read_until(&mut tcp, Instant::now() + DEADLINE, &mut got).await;
    assert_eq!(got.len(), length);
    assert!(reads >= length / 4, "{reads} reads for {length} bytes");
    let answer: Value = serde_json::from_slice(&got).unwrap();
    assert!(
        answer["access_token"]
            .as_str()
            .unwrap()
            .starts_with("ya29."),
        "{answer}"
    );
    // One slow answer: the next comes at once.
    let quick = sa_token(&emu.ready, &[ADMIN_SCOPE]).await;
    assert!(quick.starts_with("ya29."));
}

/// A ClientHello, as any TLS 1.3 client sends it.
fn client_hello() -> Vec<u8> {
    use std::sync::Arc;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("slow.example").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    hello
}

#[tokio::test]
async fn proxy_trickles_its_server_flight() {
    let emu = emulator().await;
    let ip = emu.ready["instances"][0]["public_ip"]
        .as_str()
        .unwrap()
        .to_string();
    let r = emu
        .knob(
            INSTANCE,
            "proxy",
            json!({"mode": "trickle-server-flight", "delay_ms": 5}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        emu.knob(INSTANCE, "proxy", json!({"mode": "trickle-server-flight"}))
            .await
            .status,
        400,
        "delay_ms is required"
    );

    let mut tcp = TcpStream::connect((ip.as_str(), 3307)).await.unwrap();
    tcp.write_all(&client_hello()).await.unwrap();
    // The flight (ServerHello, then the encrypted certificate chain, ~2 KB) at 5 ms a
    // byte: by a 1 s deadline it has begun, a byte a read, and is far from done.
    let mut got = Vec::new();
    let reads = read_until(&mut tcp, Instant::now() + Duration::from_secs(1), &mut got).await;
    assert!(!got.is_empty() && got.len() <= 400, "{} bytes", got.len());
    assert_eq!(got[0], 0x16, "a handshake record: {got:?}");
    assert!(
        reads >= got.len() / 4,
        "{reads} reads for {} bytes",
        got.len()
    );
    drop(tcp);

    // Trickled fast, the whole flight arrives and a client finishes its side of the
    // handshake with it: the bytes are the real flight.
    let token = sa_token(&emu.ready, &[ADMIN_SCOPE]).await;
    let settings = http(
        "GET",
        &format!(
            "{}/sql/v1beta4/projects/slow-project/instances/slow/connectSettings",
            emu.ready["admin_endpoint"].as_str().unwrap()
        ),
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    )
    .await
    .json();
    let ca = settings["serverCaCert"]["cert"].as_str().unwrap();
    emu.knob(
        INSTANCE,
        "proxy",
        json!({"mode": "trickle-server-flight", "delay_ms": 1}),
    )
    .await;
    let dialled = tokio::time::timeout(DEADLINE, dial(&ip, ca, None))
        .await
        .expect("the trickled flight did not complete by the deadline");
    dialled.result.expect("client side of the handshake");
    assert!(dialled.leaf.is_some());
    // No handshake completed on the server's side: it never reads past its flight.
    let calls = emu.calls().await;
    assert_eq!(calls["proxyHandshakes"].get(&ip), None, "{calls}");
    assert_eq!(calls["proxyConnections"][&ip], 2, "{calls}");
}
