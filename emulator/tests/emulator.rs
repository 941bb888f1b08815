//! End-to-end: runs the real `gcp-emulator` binary and talks to it over real HTTP and TLS,
//! the way a connector would.

mod support;

use std::time::Duration;

use gcp_emulator::jwt::sign_for_tests;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use support::{dial, form, http, now, start_emulator, startup_message, FORM};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use x509_parser::prelude::*;

const ADMIN_SCOPE: &str = "https://www.googleapis.com/auth/sqlservice.admin";
const LOGIN_SCOPE: &str = "https://www.googleapis.com/auth/sqlservice.login";
const TOKEN_LIFETIME: u64 = 600;

/// A tiny echo server standing in for the database.
async fn echo_backend() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// The leaf's identity per spec §6.3: a SAN equal to `dns` (trailing dot ignored), else CN.
fn identity_ok(leaf_der: &[u8], dns: Option<&str>, cn: &str) -> bool {
    let (_, leaf) = X509Certificate::from_der(leaf_der).unwrap();
    if let Some(dns) = dns {
        let want = dns.trim_end_matches('.');
        if let Ok(Some(san)) = leaf.subject_alternative_name() {
            if san.value.general_names.iter().any(|g| {
                matches!(g, GeneralName::DNSName(n) if n.trim_end_matches('.').eq_ignore_ascii_case(want))
            }) {
                return true;
            }
        }
    }
    let got = leaf
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string);
    got.as_deref() == Some(cn)
}

async fn echo_roundtrip(
    tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
) -> std::io::Result<Vec<u8>> {
    tls.write_all(b"hello through the tunnel").await?;
    tls.flush().await?;
    let mut buf = vec![0u8; 24];
    tls.read_exact(&mut buf).await?;
    Ok(buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_end_to_end() {
    let backend = echo_backend().await;
    let mut emu = start_emulator(
        &[
            format!("my-project:us-central1:legacy-db,backend={backend},ca=legacy"),
            format!(
                "example.com:my-project:europe-west1:cas-db,backend={backend},version=POSTGRES_16"
            ),
        ],
        TOKEN_LIFETIME,
    )
    .await;
    let ready = emu.ready.clone();
    let admin = ready["admin_endpoint"].as_str().unwrap().to_string();
    let token_uri = ready["token_endpoint"].as_str().unwrap().to_string();
    let control = ready["control_endpoint"].as_str().unwrap().to_string();
    assert_eq!(token_uri, format!("{admin}/token"));
    assert_eq!(control, format!("{admin}/emulator/v1"));
    assert_eq!(
        ready["service_account_email"],
        "connector-sa@emulator-project.iam.gserviceaccount.com"
    );
    let insts = ready["instances"].as_array().unwrap();
    assert_eq!(insts.len(), 2);
    let legacy = &insts[0];
    let cas = &insts[1];
    assert_eq!(legacy["name"], "my-project:us-central1:legacy-db");
    assert_eq!(legacy["ca_mode"], "legacy");
    assert!(legacy["dns_name"].is_null());
    assert_eq!(cas["name"], "example.com:my-project:europe-west1:cas-db");
    assert_eq!(cas["ca_mode"], "cas");
    assert_eq!(ready["alloydb_admin_endpoint"], ready["admin_endpoint"]);
    for i in insts {
        assert_eq!(
            (i["kind"].as_str(), i["port"].as_u64()),
            (Some("cloudsql"), Some(3307))
        );
        assert!(i.get("instance_uid").is_none(), "{i}");
    }
    let cas_dns = cas["dns_name"].as_str().unwrap().to_string();
    assert!(cas_dns.ends_with(".europe-west1.sql.goog."), "{cas_dns}");
    for i in insts {
        let ip: std::net::Ipv4Addr = i["public_ip"].as_str().unwrap().parse().unwrap();
        assert_eq!(ip.octets()[0], 127);
        assert_ne!(ip, std::net::Ipv4Addr::LOCALHOST);
    }

    // --- Credentials files.
    let sa: Value = serde_json::from_str(
        &std::fs::read_to_string(ready["service_account_file"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(sa["type"], "service_account");
    assert_eq!(sa["token_uri"], token_uri.as_str());
    assert_eq!(sa["private_key_id"].as_str().unwrap().len(), 40);
    assert_eq!(sa["client_id"].as_str().unwrap().len(), 21);
    assert_eq!(sa["universe_domain"], "googleapis.com");
    let sa_key = RsaPrivateKey::from_pkcs8_pem(sa["private_key"].as_str().unwrap()).unwrap();
    let kid = sa["private_key_id"].as_str().unwrap();
    let email = sa["client_email"].as_str().unwrap();
    let user: Value = serde_json::from_str(
        &std::fs::read_to_string(ready["authorized_user_file"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(user["type"], "authorized_user");

    // --- Token endpoint: JWT bearer.
    let jwt = sign_for_tests(
        &sa_key,
        Some(kid),
        &json!({"iss": email, "aud": token_uri, "iat": now(), "exp": now() + 3600,
                "scope": format!("{ADMIN_SCOPE} {LOGIN_SCOPE}")}),
    );
    let r = http(
        "POST",
        &token_uri,
        &[FORM],
        &form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &jwt),
        ]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let tok = r.json();
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["expires_in"], TOKEN_LIFETIME - 1);
    let access = tok["access_token"].as_str().unwrap().to_string();
    assert!(access.starts_with("ya29.emu-"));

    // A key the emulator does not know.
    let stranger = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let bad = sign_for_tests(
        &stranger,
        None,
        &json!({"iss": email, "aud": token_uri, "iat": now(), "exp": now() + 3600, "scope": ADMIN_SCOPE}),
    );
    let r = http(
        "POST",
        &token_uri,
        &[FORM],
        &form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &bad),
        ]),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error":"invalid_grant","error_description":"Invalid JWT Signature."})
    );
    let r = http(
        "POST",
        &token_uri,
        &[FORM],
        &form(&[("grant_type", "password")]),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error":"unsupported_grant_type","error_description":"Invalid grant_type: password"})
    );

    // --- Token endpoint: refresh token.
    let r = http(
        "POST",
        &token_uri,
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
    assert_eq!(r.json()["scope"], LOGIN_SCOPE);
    let login_only = r.json()["access_token"].as_str().unwrap().to_string();
    let r = http(
        "POST",
        &token_uri,
        &[FORM],
        &form(&[
            ("grant_type", "refresh_token"),
            ("client_id", user["client_id"].as_str().unwrap()),
            ("client_secret", "wrong"),
            ("refresh_token", user["refresh_token"].as_str().unwrap()),
        ]),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_client");

    // --- Metadata server.
    let md = format!("http://{}", ready["metadata_host"].as_str().unwrap());
    let r = http(
        "GET",
        &format!("{md}/computeMetadata/v1/project/project-id"),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("Metadata-Flavor"), Some("Google"));
    let flavor = ("Metadata-Flavor", "Google");
    let r = http(
        "GET",
        &format!("{md}/computeMetadata/v1/instance/service-accounts/default/email"),
        &[flavor],
        b"",
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, email));
    let r = http(
        "GET",
        &format!(
            "{md}/computeMetadata/v1/instance/service-accounts/default/token?scopes={ADMIN_SCOPE}"
        ),
        &[flavor],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Metadata-Flavor"), Some("Google"));
    let md_token = r.json()["access_token"].as_str().unwrap().to_string();

    // --- Admin API: connectSettings.
    let auth = format!("Bearer {access}");
    let bearer = ("Authorization", auth.as_str());
    let legacy_url = format!("{admin}/sql/v1beta4/projects/my-project/instances/legacy-db");
    let cas_url = format!("{admin}/sql/v1beta4/projects/example.com%3Amy-project/instances/cas-db");
    let r = http(
        "GET",
        &format!("{legacy_url}/connectSettings?alt=json&prettyPrint=false"),
        &[bearer],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let legacy_cs = r.json();
    assert_eq!(legacy_cs["kind"], "sql#connectSettings");
    assert_eq!(legacy_cs["region"], "us-central1");
    assert_eq!(legacy_cs["databaseVersion"], "POSTGRES_15");
    assert_eq!(legacy_cs["backendType"], "SECOND_GEN");
    assert_eq!(legacy_cs["pscEnabled"], false);
    assert_eq!(legacy_cs["serverCaMode"], "GOOGLE_MANAGED_INTERNAL_CA");
    assert_eq!(
        legacy_cs["ipAddresses"],
        json!([{"type":"PRIMARY","ipAddress": legacy["public_ip"]}])
    );
    assert!(legacy_cs.get("dnsName").is_none());
    assert!(legacy_cs.get("mdxProtocolSupport").is_none());
    let sc = &legacy_cs["serverCaCert"];
    assert_eq!(sc["kind"], "sql#sslCert");
    assert_eq!(sc["instance"], "legacy-db");
    assert_eq!(sc["commonName"], "Google Cloud SQL Server CA");
    assert_eq!(sc["sha1Fingerprint"].as_str().unwrap().len(), 40);
    assert!(sc["certSerialNumber"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .is_ok());
    for f in ["createTime", "expirationTime"] {
        ::time::OffsetDateTime::parse(
            sc[f].as_str().unwrap(),
            &::time::format_description::well_known::Rfc3339,
        )
        .unwrap();
    }
    let legacy_ca = sc["cert"].as_str().unwrap().to_string();

    // The metadata token (cloud-platform) works for the Admin API too; /v1/ too.
    let md_auth = format!("Bearer {md_token}");
    let r = http(
        "GET",
        &format!("{admin}/v1/projects/example.com:my-project/instances/cas-db/connectSettings"),
        &[("Authorization", md_auth.as_str())],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let cas_cs = r.json();
    assert_eq!(cas_cs["region"], "europe-west1");
    assert_eq!(cas_cs["databaseVersion"], "POSTGRES_16");
    assert_eq!(cas_cs["serverCaMode"], "GOOGLE_MANAGED_CAS_CA");
    assert_eq!(cas_cs["dnsName"], cas_dns.as_str());
    assert_eq!(
        cas_cs["dnsNames"],
        json!([{"name": cas_dns, "connectionType":"PUBLIC","dnsScope":"INSTANCE"}])
    );
    let cas_ca = cas_cs["serverCaCert"]["cert"].as_str().unwrap().to_string();
    assert_eq!(::pem::parse_many(&cas_ca).unwrap().len(), 2);

    // --- Admin API errors.
    let r = http("GET", &format!("{legacy_url}/connectSettings"), &[], b"").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(r.json()["error"]["errors"][0]["reason"], "authError");
    let r = http(
        "GET",
        &format!("{legacy_url}/connectSettings"),
        &[("Authorization", "Bearer ya29.not-issued")],
        b"",
    )
    .await;
    assert_eq!(r.status, 401);
    let login_auth = format!("Bearer {login_only}");
    let r = http(
        "GET",
        &format!("{legacy_url}/connectSettings"),
        &[("Authorization", login_auth.as_str())],
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["error"]["errors"][0]["reason"],
        "insufficientPermissions"
    );
    let r = http(
        "GET",
        &format!("{admin}/sql/v1beta4/projects/my-project/instances/nope/connectSettings"),
        &[bearer],
        b"",
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"error":{"code":404,"message":"The Cloud SQL instance does not exist.",
            "errors":[{"message":"The Cloud SQL instance does not exist.","domain":"global",
            "reason":"instanceDoesNotExist"}],"status":"NOT_FOUND"}})
    );
    let r = http(
        "GET",
        &format!("{admin}/sql/v1beta4/projects/other/instances/legacy-db/connectSettings"),
        &[bearer],
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["errors"][0]["reason"], "notAuthorized");
    let r = http(
        "GET",
        &format!("{admin}/sql/v1beta4/nothing"),
        &[bearer],
        b"",
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["status"], "NOT_FOUND");

    // --- generateEphemeralCert.
    let client_key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let spki_der = client_key.to_public_key().to_public_key_der().unwrap();
    // Go's mislabelled PEM.
    let go_pem = ::pem::encode(&::pem::Pem::new(
        "RSA PUBLIC KEY",
        spki_der.as_bytes().to_vec(),
    ));
    let py_pem = client_key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let json_ct = ("Content-Type", "application/json");
    let gen = |url: String, body: Value| async move {
        http(
            "POST",
            &format!("{url}:generateEphemeralCert"),
            &[bearer, json_ct],
            body.to_string().as_bytes(),
        )
        .await
    };
    let r = gen(legacy_url.clone(), json!({"public_key": go_pem})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let eph = r.json()["ephemeralCert"].clone();
    assert_eq!(eph["kind"], "sql#sslCert");
    assert_eq!(eph["commonName"], "Google Cloud SQL Client");
    assert_eq!(eph["instance"], "legacy-db");
    let legacy_client_cert = eph["cert"].as_str().unwrap().to_string();
    {
        let der = ::pem::parse(&legacy_client_cert).unwrap().into_contents();
        let (_, c) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(c.public_key().raw, spki_der.as_bytes());
        let left = c.validity().not_after.timestamp() - now();
        assert!((3500..=3600).contains(&left), "{left}");
        assert_eq!(
            c.serial.to_string(),
            eph["certSerialNumber"].as_str().unwrap()
        );
    }
    // With an IAM login token the certificate ends when the token does.
    let r = gen(
        cas_url.clone(),
        json!({"public_key": py_pem, "access_token": login_only}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let cas_client_cert = r.json()["ephemeralCert"]["cert"]
        .as_str()
        .unwrap()
        .to_string();
    {
        let der = ::pem::parse(&cas_client_cert).unwrap().into_contents();
        let (_, c) = X509Certificate::from_der(&der).unwrap();
        let left = c.validity().not_after.timestamp() - now();
        assert!(
            left <= TOKEN_LIFETIME as i64 && left > TOKEN_LIFETIME as i64 - 60,
            "{left}"
        );
    }
    // A token without the login scope, and bad keys, are refused.
    let r = gen(
        cas_url.clone(),
        json!({"public_key": py_pem, "access_token": md_token}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["status"], "INVALID_ARGUMENT");
    let r = gen(cas_url.clone(), json!({"public_key": "garbage"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["errors"][0]["reason"], "invalid");
    let r = gen(cas_url.clone(), json!({})).await;
    assert_eq!(r.status, 400);

    // --- Counters.
    let r = http("GET", &format!("{control}/calls"), &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({
            "connectSettings": {"my-project:legacy-db": 4, "example.com:my-project:cas-db": 1,
                                "my-project:nope": 1, "other:legacy-db": 1},
            "generateEphemeralCert": {"my-project:legacy-db": 1, "example.com:my-project:cas-db": 4},
            "token": {"jwt-bearer": 2, "refresh_token": 2, "metadata": 1},
            "mdx": {}, "mdxClientProtocolType": {}, "proxyConnections": {},
            "proxyHandshakes": {}, "proxyClientBytes": {}, "proxyOpenConnections": {},
            "connectionInfo": {}, "generateClientCertificate": {},
            "alloydbMdx": {}, "alloydbMdxAuthType": {},
            "sts": {}, "generateAccessToken": {},
            "resolveConnectSettings": {}, "dnsQuery": {}, "dnsQueryType": {}
        })
    );
    let r = http("POST", &format!("{control}/calls/reset"), &[], b"").await;
    assert_eq!(r.status, 200);
    let r = http("GET", &format!("{control}/calls"), &[], b"").await;
    assert_eq!(
        r.json(),
        json!({"connectSettings":{},"generateEphemeralCert":{},
               "token":{"jwt-bearer":0,"refresh_token":0,"metadata":0},
               "mdx":{},"mdxClientProtocolType":{},"proxyConnections":{},
               "proxyHandshakes":{},"proxyClientBytes":{},"proxyOpenConnections":{},
               "connectionInfo":{},"generateClientCertificate":{},
               "alloydbMdx":{},"alloydbMdxAuthType":{},
               "sts":{},"generateAccessToken":{},
               "resolveConnectSettings":{},"dnsQuery":{},"dnsQueryType":{}})
    );

    // --- TLS proxies: legacy (CN check) and CAS (SAN check, intermediate in the roots).
    let legacy_ip = legacy["public_ip"].as_str().unwrap();
    let cas_ip = cas["public_ip"].as_str().unwrap();
    let mut d = dial(
        legacy_ip,
        &legacy_ca,
        Some((legacy_client_cert.as_str(), &client_key)),
    )
    .await;
    let mut tls = d.result.expect("legacy handshake");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert!(identity_ok(
        d.leaf.as_ref().unwrap(),
        None,
        "my-project:legacy-db"
    ));
    assert_eq!(
        echo_roundtrip(&mut tls).await.unwrap(),
        b"hello through the tunnel"
    );
    drop(tls);

    d = dial(
        cas_ip,
        &cas_ca,
        Some((cas_client_cert.as_str(), &client_key)),
    )
    .await;
    let mut tls = d.result.expect("cas handshake");
    assert!(identity_ok(
        d.leaf.as_ref().unwrap(),
        Some(cas_dns.as_str()),
        "example.com:my-project:cas-db"
    ));
    // The certificate carries the authorized user's IAM login, so the proxy wants a
    // Postgres StartupMessage for that user first; it reaches the (echo) backend unchanged.
    let hello = startup_message("dev-user@example.com");
    tls.write_all(&hello).await.unwrap();
    let mut back = vec![0u8; hello.len()];
    tls.read_exact(&mut back).await.unwrap();
    assert_eq!(back, hello);
    drop(tls);

    // A client certificate from another instance's CA, or none, is refused.
    let d = dial(
        legacy_ip,
        &legacy_ca,
        Some((cas_client_cert.as_str(), &client_key)),
    )
    .await;
    let refused = match d.result {
        Err(_) => true,
        Ok(mut tls) => echo_roundtrip(&mut tls).await.is_err(),
    };
    assert!(refused, "proxy accepted a foreign client certificate");
    let d = dial(legacy_ip, &legacy_ca, None).await;
    let refused = match d.result {
        Err(_) => true,
        Ok(mut tls) => echo_roundtrip(&mut tls).await.is_err(),
    };
    assert!(refused, "proxy accepted a client without a certificate");

    // --- Server certificate modes.
    let set_mode = |name: &str, mode: &str| {
        let url = format!("{control}/instances/{name}/server-cert");
        let body = json!({ "mode": mode }).to_string();
        async move { http("POST", &url, &[json_ct], body.as_bytes()).await.status }
    };
    assert_eq!(
        set_mode("example.com:my-project:europe-west1:cas-db", "wrong-ca").await,
        200
    );
    let d = dial(
        cas_ip,
        &cas_ca,
        Some((cas_client_cert.as_str(), &client_key)),
    )
    .await;
    assert!(d.result.is_err(), "wrong-ca chain was accepted");
    assert_eq!(
        set_mode("example.com:my-project:europe-west1:cas-db", "wrong-cn").await,
        200
    );
    let d = dial(
        cas_ip,
        &cas_ca,
        Some((cas_client_cert.as_str(), &client_key)),
    )
    .await;
    assert!(d.result.is_ok(), "wrong-cn chain must still verify");
    assert!(!identity_ok(
        d.leaf.as_ref().unwrap(),
        Some(cas_dns.as_str()),
        "example.com:my-project:cas-db"
    ));
    assert_eq!(
        set_mode("my-project:us-central1:legacy-db", "wrong-cn").await,
        200
    );
    let d = dial(
        legacy_ip,
        &legacy_ca,
        Some((legacy_client_cert.as_str(), &client_key)),
    )
    .await;
    assert!(d.result.is_ok());
    assert!(!identity_ok(
        d.leaf.as_ref().unwrap(),
        None,
        "my-project:legacy-db"
    ));
    assert_eq!(
        set_mode("my-project:us-central1:legacy-db", "valid").await,
        200
    );
    let d = dial(
        legacy_ip,
        &legacy_ca,
        Some((legacy_client_cert.as_str(), &client_key)),
    )
    .await;
    assert!(identity_ok(
        d.leaf.as_ref().unwrap(),
        None,
        "my-project:legacy-db"
    ));
    // The hostile modes, as an independent TLS 1.3 client sees them.
    let legacy_name = "my-project:us-central1:legacy-db";
    for (mode, want) in [
        ("expired", "Expired"),
        ("not-yet-valid", "NotValidYet"),
        ("self-signed", "UnknownIssuer"),
        ("tls12-only", "ProtocolVersion"),
    ] {
        assert_eq!(set_mode(legacy_name, mode).await, 200);
        let d = dial(
            legacy_ip,
            &legacy_ca,
            Some((legacy_client_cert.as_str(), &client_key)),
        )
        .await;
        let e = d
            .result
            .err()
            .unwrap_or_else(|| panic!("{mode} was accepted"));
        let inner = e.get_ref().map(|i| format!("{i:?}")).unwrap_or_default();
        assert!(inner.contains(want), "{mode}: {inner}");
    }
    // Without asking for a client certificate, the server completes a handshake with a
    // client that has none.
    assert_eq!(set_mode(legacy_name, "no-client-auth").await, 200);
    let d = dial(legacy_ip, &legacy_ca, None).await;
    assert!(d.result.is_ok(), "no-client-auth asked for a certificate");
    assert_eq!(set_mode(legacy_name, "valid").await, 200);
    assert_eq!(set_mode("p:r:unknown", "valid").await, 404);
    assert_eq!(
        set_mode("my-project:us-central1:legacy-db", "sideways").await,
        400
    );

    // --- Clean shutdown on SIGTERM, and no secrets in the log.
    let pid = emu.child.id().unwrap().to_string();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(st.success());
    let status = tokio::time::timeout(Duration::from_secs(20), emu.child.wait())
        .await
        .expect("emulator did not stop")
        .unwrap();
    assert!(status.success(), "{status}");
    let log = emu.final_log().await;
    assert!(log.contains("POST /token 200"), "{log}");
    for secret in [
        access.as_str(),
        login_only.as_str(),
        "ya29.",
        "PRIVATE KEY",
        &jwt[..40],
    ] {
        assert!(!log.contains(secret), "log leaks a secret: {log}");
    }
}
