//! `--cert-lifetime-secs`: the client certificates of both Admin APIs last as long as
//! asked, and without the flag as long as Google's. No database needed: the Admin API
//! never dials the backend.

mod support;

use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use support::{http, now, sa_token, start_in_process, start_in_process_with, InProcess};
use x509_parser::prelude::*;

const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const CLUSTER: &str = "projects/emu-project/locations/us-central1/clusters/c1";

fn specs() -> Vec<String> {
    vec![
        "emu-project:us-central1:csql,backend=127.0.0.1:1".to_string(),
        format!("{CLUSTER}/instances/i1,backend=127.0.0.1:1"),
    ]
}

/// Seconds from now to the NotAfter of the PEM certificate `pem`.
fn secs_left(pem: &str) -> i64 {
    let der = ::pem::parse(pem).unwrap().into_contents();
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    cert.validity().not_after.timestamp() - now()
}

/// Seconds left on the certificates `generateEphemeralCert` and `generateClientCertificate`
/// (with `cert_duration`, if any) issue for a fresh key.
async fn lifetimes(emu: &InProcess, cert_duration: Option<&str>) -> (i64, i64) {
    let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let auth = format!("Bearer {}", sa_token(&emu.ready, &[CLOUD_PLATFORM]).await);
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let admin = emu.ready["admin_endpoint"].as_str().unwrap();

    let url =
        format!("{admin}/sql/v1beta4/projects/emu-project/instances/csql:generateEphemeralCert");
    let r = http(
        "POST",
        &url,
        &headers,
        json!({"public_key": pem}).to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let eph = r.json()["ephemeralCert"].clone();
    let cloudsql = secs_left(eph["cert"].as_str().unwrap());
    // expirationTime says the same as the certificate.
    let expiry = ::time::OffsetDateTime::parse(
        eph["expirationTime"].as_str().unwrap(),
        &::time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(expiry.unix_timestamp() - now(), cloudsql);

    let mut body = json!({"parent": CLUSTER, "publicKey": pem});
    if let Some(d) = cert_duration {
        body["certDuration"] = Value::from(d);
    }
    let url = format!(
        "{}/v1beta/{CLUSTER}:generateClientCertificate",
        emu.ready["alloydb_admin_endpoint"].as_str().unwrap()
    );
    let r = http("POST", &url, &headers, body.to_string().as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let alloydb = secs_left(r.json()["pemCertificateChain"][0].as_str().unwrap());
    (cloudsql, alloydb)
}

/// Within a few seconds of `want` (the clock ticks between issue and check).
fn about(got: i64, want: i64) -> bool {
    (want - 5..=want).contains(&got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flag_shortens_both_admin_apis_certificates() {
    let emu = start_in_process_with(&specs(), 600, &["--cert-lifetime-secs", "200"]).await;
    let (cloudsql, alloydb) = lifetimes(&emu, Some("3600s")).await;
    assert!(about(cloudsql, 200), "generateEphemeralCert: {cloudsql} s");
    assert!(
        about(alloydb, 200),
        "generateClientCertificate: {alloydb} s"
    );
    // No certDuration: the flag's; a shorter certDuration than the flag: the request's.
    let (_, alloydb) = lifetimes(&emu, None).await;
    assert!(about(alloydb, 200), "no certDuration: {alloydb} s");
    let (_, alloydb) = lifetimes(&emu, Some("90s")).await;
    assert!(about(alloydb, 90), "certDuration 90s: {alloydb} s");
    emu.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_flag_certificates_last_as_long_as_googles() {
    let emu = start_in_process(&specs(), 600).await;
    let (cloudsql, alloydb) = lifetimes(&emu, None).await;
    assert!(about(cloudsql, 3600), "generateEphemeralCert: {cloudsql} s");
    assert!(
        about(alloydb, 3600),
        "generateClientCertificate: {alloydb} s"
    );
    let (_, alloydb) = lifetimes(&emu, Some("172800s")).await;
    assert!(about(alloydb, 86_400), "certDuration 48 h: {alloydb} s");
    emu.running.shutdown().await;
}
