//! End-to-end AlloyDB: the emulator in-process (one test runs the binary) in front of the
//! real test PostgreSQL (`GCPDB_TEST_PG`), reached over real HTTP and real TLS the way the
//! AlloyDB connectors reach Google (the project's shared/spec/alloydb-protocol.md).

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use support::{
    alloydb_mdx_request, dial_verified, eventually, http, now, read_alloydb_mdx_response, sa_token,
    start_emulator, start_in_process, test_postgres, InProcess, Pg, Resp,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use x509_parser::prelude::*;

const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const ALLOYDB_LOGIN: &str = "https://www.googleapis.com/auth/alloydb.login";
const CLUSTER: &str = "projects/emu-project/locations/us-central1/clusters/c1";
const I1: &str = "projects/emu-project/locations/us-central1/clusters/c1/instances/i1";
const I2: &str = "projects/emu-project/locations/us-central1/clusters/c1/instances/i2";
const SA_DB_USER: &str = "connector-sa@emulator-project.iam";
const DB_NATIVE: u8 = 1;
const AUTO_IAM: u8 = 2;
const OK: u64 = 1;
const ERROR: u64 = 2;

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// i1: every address; i2: the same cluster, private IP only; plus a Cloud SQL instance.
async fn emulator() -> InProcess {
    let pg = test_postgres();
    start_in_process(
        &[
            format!("{I1},backend={pg},public-ip=auto,psc=true"),
            format!("{I2},backend={pg}"),
            format!("emu-project:us-central1:csql,backend={pg}"),
        ],
        600,
    )
    .await
}

fn instance<'a>(ready: &'a Value, name: &str) -> &'a Value {
    ready["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {ready}"))
}

/// The AlloyDB Admin API as a connector calls it.
struct Api {
    base: String,
    auth: String,
}

impl Api {
    async fn new(emu: &InProcess, scopes: &[&str]) -> Self {
        Self {
            base: emu.ready["alloydb_admin_endpoint"]
                .as_str()
                .unwrap()
                .to_string(),
            auth: format!("Bearer {}", sa_token(&emu.ready, scopes).await),
        }
    }

    async fn info(&self, version: &str, uri: &str) -> Resp {
        // The Go REST client's query string, which must be ignored.
        let url = format!(
            "{}/{version}/{uri}/connectionInfo?%24alt=json%3Benum-encoding%3Dint",
            self.base
        );
        http("GET", &url, &[("Authorization", &self.auth)], b"").await
    }

    async fn generate(&self, cluster: &str, body: Value) -> Resp {
        let url = format!("{}/v1beta/{cluster}:generateClientCertificate", self.base);
        http(
            "POST",
            &url,
            &[
                ("Authorization", &self.auth),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
        .await
    }

    /// A client chain and CA for `key`, PKCS#1 PEM as the Go connector sends.
    async fn cert(&self, key: &RsaPrivateKey) -> (Vec<String>, String) {
        let pem = key.to_public_key().to_pkcs1_pem(LineEnding::LF).unwrap();
        let r = self
            .generate(
                CLUSTER,
                json!({"parent": CLUSTER, "publicKey": pem, "certDuration": "3600s",
                       "useMetadataExchange": true}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        let chain = v["pemCertificateChain"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        (chain, v["caCert"].as_str().unwrap().to_string())
    }
}

fn error_of(r: &Resp) -> (u64, String, String) {
    let e = &r.json()["error"];
    assert!(e.get("errors").is_none(), "{}", r.body);
    (
        e["code"].as_u64().unwrap(),
        e["status"].as_str().unwrap().to_string(),
        e["message"].as_str().unwrap().to_string(),
    )
}

/// One metadata exchange: the request in one write, as the connectors do; the answer.
async fn mdx(tls: &mut Tls, auth_type: u8, token: &str) -> (u64, String) {
    let req = alloydb_mdx_request("alloydb-test/1.0", auth_type, token);
    tls.write_all(&req).await.unwrap();
    read_alloydb_mdx_response(tls).await.unwrap()
}

fn key() -> RsaPrivateKey {
    RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap()
}

fn ip_name(ip: &str) -> ServerName<'static> {
    ServerName::IpAddress(ip.parse::<IpAddr>().unwrap().into())
}

fn at_5433(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), 5433)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the PostgreSQL scripts/test starts (GCPDB_TEST_PG)"]
async fn ready_line_and_admin_api() {
    let emu = emulator().await;
    let ready = &emu.ready;
    assert_eq!(ready["alloydb_admin_endpoint"], ready["admin_endpoint"]);

    // --- Ready line.
    let i1 = instance(ready, I1);
    assert_eq!(i1["kind"], "alloydb");
    assert_eq!(i1["port"], 5433);
    assert!(i1["dns_name"].is_null() && i1["ca_mode"].is_null());
    let uid = i1["instance_uid"].as_str().unwrap();
    assert_eq!(uid.len(), 36);
    let psc_dns = i1["psc_dns_name"].as_str().unwrap();
    let parts: Vec<&str> = psc_dns.split('.').collect();
    assert_eq!(parts.len(), 6, "{psc_dns}");
    assert!(parts[0].len() == 12 && parts[1].len() == 13, "{psc_dns}");
    assert!(
        psc_dns.ends_with(".us-central1.alloydb-psc.goog."),
        "{psc_dns}"
    );
    let ips: Vec<&str> = ["private_ip", "public_ip", "psc_ip"]
        .iter()
        .map(|k| i1[k].as_str().unwrap())
        .collect();
    for ip in &ips {
        assert!(ip.starts_with("127."), "{ip}");
    }
    assert_eq!(
        ips.iter().collect::<std::collections::HashSet<_>>().len(),
        3,
        "each address has its own IP"
    );
    let i2 = instance(ready, I2);
    assert!(i2["public_ip"].is_null() && i2["psc_ip"].is_null() && i2["psc_dns_name"].is_null());
    assert!(i2["private_ip"].is_string());
    let csql = instance(ready, "emu-project:us-central1:csql");
    assert_eq!(
        (&csql["kind"], &csql["port"]),
        (&json!("cloudsql"), &json!(3307))
    );
    assert!(csql["public_ip"].is_string() && csql["ca_mode"] == "cas");

    // --- connectionInfo in each version; v1 has no pscDnsName.
    let api = Api::new(&emu, &[CLOUD_PLATFORM]).await;
    for version in ["v1alpha", "v1beta", "v1"] {
        let r = api.info(version, I1).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let mut want = json!({
            "name": format!("{I1}/connectionInfo"),
            "ipAddress": i1["private_ip"],
            "publicIpAddress": i1["public_ip"],
            "pscDnsName": psc_dns,
            "instanceUid": uid,
        });
        if version == "v1" {
            want.as_object_mut().unwrap().remove("pscDnsName");
        }
        assert_eq!(r.json(), want, "{version}");
    }
    let r = api.info("v1beta", I2).await;
    assert_eq!(
        r.json(),
        json!({"name": format!("{I2}/connectionInfo"), "ipAddress": i2["private_ip"],
               "instanceUid": i2["instance_uid"]})
    );

    // --- generateClientCertificate: PKCS#1 and SPKI keys, certDuration honoured.
    let k = key();
    let pkcs1 = k.to_public_key().to_pkcs1_pem(LineEnding::LF).unwrap();
    let spki = k.to_public_key().to_public_key_pem(LineEnding::LF).unwrap();
    for (pem, duration, secs) in [
        (&pkcs1, Some("600s"), 600),
        (&spki, None, 3600),
        (&spki, Some("1.5s"), 60),
        (&spki, Some("172800s"), 86400),
    ] {
        let mut body = json!({"parent": CLUSTER, "publicKey": pem, "useMetadataExchange": true,
                              "requestId": "r-1"});
        if let Some(d) = duration {
            body["certDuration"] = json!(d);
        }
        let r = api.generate(CLUSTER, body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(
            v.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["caCert", "pemCertificateChain"]
        );
        let chain = v["pemCertificateChain"].as_array().unwrap();
        assert_eq!(chain.len(), 3);
        assert_eq!(chain[2], v["caCert"]);
        let ders: Vec<Vec<u8>> = chain
            .iter()
            .map(|c| ::pem::parse(c.as_str().unwrap()).unwrap().into_contents())
            .collect();
        let certs: Vec<X509Certificate<'_>> = ders
            .iter()
            .map(|d| X509Certificate::from_der(d).unwrap().1)
            .collect();
        let cn = |c: &X509Certificate<'_>| {
            c.subject()
                .iter_common_name()
                .next()
                .map(|a| a.as_str().unwrap().to_string())
        };
        assert_eq!(cn(&certs[1]).as_deref(), Some("client.alloydb"));
        assert_eq!(cn(&certs[2]).as_deref(), Some("root.alloydb"));
        certs[0]
            .verify_signature(Some(certs[1].public_key()))
            .unwrap();
        certs[1]
            .verify_signature(Some(certs[2].public_key()))
            .unwrap();
        assert_eq!(
            certs[0].public_key().raw,
            k.to_public_key().to_public_key_der().unwrap().as_bytes()
        );
        let left = certs[0].validity().not_after.timestamp() - now();
        assert!((secs - 5..=secs + 1).contains(&left), "{left} vs {secs}");
    }
    // The second instance of the cluster has the same CA.
    let (_, ca) = api.cert(&k).await;
    assert_eq!(ca, {
        let r = api.generate(CLUSTER, json!({"publicKey": spki})).await;
        r.json()["caCert"].as_str().unwrap().to_string()
    });

    // --- Errors.
    let unauth = http(
        "GET",
        &format!("{}/v1beta/{I1}/connectionInfo", api.base),
        &[],
        b"",
    )
    .await;
    assert_eq!(error_of(&unauth).0, 401);
    assert_eq!(error_of(&unauth).1, "UNAUTHENTICATED");
    let bad = Api {
        base: api.base.clone(),
        auth: "Bearer ya29.not-issued".into(),
    };
    assert_eq!(error_of(&bad.info("v1beta", I1).await).0, 401);
    let login_only = Api::new(&emu, &[ALLOYDB_LOGIN]).await;
    let r = login_only.info("v1beta", I1).await;
    assert_eq!(
        error_of(&r),
        (
            403,
            "PERMISSION_DENIED".into(),
            "Request had insufficient authentication scopes.".into()
        )
    );
    assert_eq!(
        r.json()["error"]["details"][0]["reason"],
        "ACCESS_TOKEN_SCOPE_INSUFFICIENT"
    );
    let r = api
        .info(
            "v1beta",
            "projects/nope/locations/us-central1/clusters/c1/instances/i1",
        )
        .await;
    assert_eq!(
        (error_of(&r).0, error_of(&r).1.as_str()),
        (403, "PERMISSION_DENIED")
    );
    let missing = format!("{CLUSTER}/instances/nope");
    let r = api.info("v1beta", &missing).await;
    assert_eq!(
        error_of(&r),
        (
            404,
            "NOT_FOUND".into(),
            format!("Resource '{missing}' was not found")
        )
    );
    // The instance exists, but in another cluster.
    let elsewhere = "projects/emu-project/locations/us-central1/clusters/c9/instances/i1";
    let r = api.info("v1beta", elsewhere).await;
    assert_eq!(error_of(&r).0, 404);
    assert!(error_of(&r).2.contains("clusters/c9"), "{}", r.body);
    let r = api
        .generate(
            "projects/emu-project/locations/us-central1/clusters/c9",
            json!({"publicKey": spki}),
        )
        .await;
    assert_eq!(error_of(&r).0, 404);
    let small = RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024)
        .unwrap()
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    for (body, says) in [
        (
            json!({"parent": "projects/emu-project/locations/us-central1/clusters/c2", "publicKey": spki}),
            "does not match",
        ),
        (json!({"parent": CLUSTER}), "publicKey is required"),
        (json!({"publicKey": "garbage"}), "not a PEM"),
        (json!({"publicKey": small}), "1024-bit"),
        (
            json!({"publicKey": spki, "certDuration": "-5s"}),
            "certDuration",
        ),
        (json!({"publicKey": spki, "colour": "red"}), "Unknown name"),
    ] {
        let r = api.generate(CLUSTER, body).await;
        let (code, status, message) = error_of(&r);
        assert_eq!(
            (code, status.as_str()),
            (400, "INVALID_ARGUMENT"),
            "{}",
            r.body
        );
        assert!(message.contains(says), "{message}");
    }
    let r = http(
        "POST",
        &format!("{}/v1beta/{I1}/connectionInfo", api.base),
        &[("Authorization", &api.auth)],
        b"",
    )
    .await;
    assert_eq!(r.status, 404);

    // --- Faults and latency apply to the new methods by name.
    let faults = format!("{}/faults", emu.control());
    let r = http(
        "POST",
        &faults,
        &[],
        json!({"method": "connectionInfo", "status": 503, "count": 1})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api.info("v1beta", I1).await;
    assert_eq!(
        error_of(&r),
        (
            503,
            "UNAVAILABLE".into(),
            "The service is currently unavailable.".into()
        )
    );
    assert_eq!(api.info("v1beta", I1).await.status, 200);
    let r = http(
        "POST",
        &faults,
        &[],
        json!({"method": "generateClientCertificate", "latency_ms": 400})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    let started = std::time::Instant::now();
    assert_eq!(
        api.generate(CLUSTER, json!({"publicKey": spki}))
            .await
            .status,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    http("POST", &format!("{faults}/reset"), &[], b"").await;

    // --- Counters, keyed by instance URI and by cluster.
    let calls = emu.calls().await;
    assert_eq!(calls["connectionInfo"][I1], 8);
    assert_eq!(calls["connectionInfo"][I2], 1);
    assert_eq!(calls["generateClientCertificate"][CLUSTER], 13);
    assert_eq!(calls["connectSettings"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the PostgreSQL scripts/test starts (GCPDB_TEST_PG)"]
async fn proxy_logins() {
    let emu = emulator().await;
    let api = Api::new(&emu, &[CLOUD_PLATFORM, ALLOYDB_LOGIN]).await;
    let login_token = sa_token(&emu.ready, &[ALLOYDB_LOGIN]).await;
    let k = key();
    let (chain, ca) = api.cert(&k).await;
    let i1 = instance(&emu.ready, I1).clone();
    let private = i1["private_ip"].as_str().unwrap().to_string();
    let dial = |ip: String, name: ServerName<'static>, chain: Vec<String>| {
        let (ca, k) = (ca.clone(), k.clone());
        async move { dial_verified(at_5433(&ip), name, &ca, &chain, &k).await }
    };

    // --- DB_NATIVE: password login as app, through each address of i1.
    let psc_dns = i1["psc_dns_name"].as_str().unwrap().trim_end_matches('.');
    for (ip, name) in [
        (private.clone(), ip_name(&private)),
        (
            i1["public_ip"].as_str().unwrap().to_string(),
            ip_name(i1["public_ip"].as_str().unwrap()),
        ),
        (
            i1["psc_ip"].as_str().unwrap().to_string(),
            ServerName::try_from(psc_dns.to_string()).unwrap(),
        ),
    ] {
        let mut tls = dial(ip.clone(), name, chain.clone())
            .await
            .expect("handshake");
        assert_eq!(
            mdx(&mut tls, DB_NATIVE, &login_token).await,
            (OK, String::new())
        );
        let mut pg = Pg::new(tls);
        pg.login("app", Some("app-password")).await.unwrap();
        assert_eq!(pg.query("SELECT 1").await, ["1"]);
        assert_eq!(pg.query("SELECT current_user").await, ["app"]);
        pg.terminate().await;
    }
    // A wrong password is the database's business.
    let mut tls = dial(private.clone(), ip_name(&private), chain.clone())
        .await
        .unwrap();
    assert_eq!(mdx(&mut tls, DB_NATIVE, &login_token).await.0, OK);
    let refused = Pg::new(tls).login("app", Some("wrong")).await.unwrap_err();
    assert!(refused.contains(&('C', "28P01".into())), "{refused:?}");

    // The cluster's other instance takes the same client certificate.
    let i2_ip = instance(&emu.ready, I2)["private_ip"]
        .as_str()
        .unwrap()
        .to_string();
    let mut tls = dial(i2_ip.clone(), ip_name(&i2_ip), chain.clone())
        .await
        .unwrap();
    assert_eq!(mdx(&mut tls, DB_NATIVE, &login_token).await.0, OK);
    let mut pg = Pg::new(tls);
    pg.login("app", Some("app-password")).await.unwrap();
    assert_eq!(pg.query("SELECT 1").await, ["1"]);

    // --- AUTO_IAM: the service account's database user, no password.
    let mut tls = dial(private.clone(), ip_name(&private), chain.clone())
        .await
        .unwrap();
    assert_eq!(
        mdx(&mut tls, AUTO_IAM, &login_token).await,
        (OK, String::new())
    );
    let mut pg = Pg::new(tls);
    pg.login(SA_DB_USER, None).await.unwrap();
    assert_eq!(pg.query("SELECT current_user").await, [SA_DB_USER]);
    pg.terminate().await;

    // A cloud-platform token works for MDX too.
    let platform = sa_token(&emu.ready, &[CLOUD_PLATFORM]).await;
    let mut tls = dial(private.clone(), ip_name(&private), chain.clone())
        .await
        .unwrap();
    assert_eq!(mdx(&mut tls, AUTO_IAM, &platform).await.0, OK);
    Pg::new(tls).login(SA_DB_USER, None).await.unwrap();

    // --- AUTO_IAM as someone else: FATAL 28000 naming both users.
    let mut tls = dial(private.clone(), ip_name(&private), chain.clone())
        .await
        .unwrap();
    assert_eq!(mdx(&mut tls, AUTO_IAM, &login_token).await.0, OK);
    let refused = Pg::new(tls).login("app", None).await.unwrap_err();
    let get = |c: char| {
        refused
            .iter()
            .find(|(t, _)| *t == c)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get('S').as_deref(), Some("FATAL"));
    assert_eq!(get('C').as_deref(), Some("28000"));
    let message = get('M').unwrap();
    assert!(
        message.contains("\"app\"") && message.contains(SA_DB_USER),
        "{message}"
    );

    // --- Bad tokens: an ERROR that names the problem, then the end.
    let other_scope = sa_token(
        &emu.ready,
        &["https://www.googleapis.com/auth/userinfo.email"],
    )
    .await;
    for (token, says) in [
        ("", "no OAuth2 token"),
        ("ya29.not-issued", "invalid"),
        (other_scope.as_str(), "alloydb.login"),
    ] {
        let mut tls = dial(private.clone(), ip_name(&private), chain.clone())
            .await
            .unwrap();
        let (code, error) = mdx(&mut tls, AUTO_IAM, token).await;
        assert_eq!(code, ERROR);
        assert!(error.contains(says), "{error}");
        assert!(!error.contains("ya29"), "the token leaked: {error}");
        let mut rest = Vec::new();
        let _ = tls.read_to_end(&mut rest).await;
        assert!(rest.is_empty());
    }

    // --- A client that sends only its leaf cannot complete the handshake.
    let before = emu.calls().await["alloydbMdx"][I1].as_u64().unwrap();
    let leaf_only = dial(private.clone(), ip_name(&private), chain[..1].to_vec()).await;
    let refused = match leaf_only {
        Err(_) => true,
        // TLS 1.3: the client learns of the refusal at its first read.
        Ok(mut tls) => {
            let _ = tls
                .write_all(&alloydb_mdx_request("x", DB_NATIVE, &login_token))
                .await;
            let mut b = [0u8; 1];
            !matches!(tls.read(&mut b).await, Ok(1))
        }
    };
    assert!(refused, "a leaf-only client chain was accepted");
    // Once the proxy is done with that connection, an exchange on it would be counted.
    eventually("the proxy closed the leaf-only connection", || async {
        emu.calls().await["proxyOpenConnections"]
            .get(&private)
            .is_none()
    })
    .await;

    // --- Counters: every exchange at i1, the auth types of the well-formed ones in order.
    let calls = emu.calls().await;
    assert_eq!(
        calls["alloydbMdx"][I1], before,
        "no exchange without a handshake"
    );
    assert_eq!(calls["alloydbMdx"][I1], 10);
    assert_eq!(
        calls["alloydbMdxAuthType"][I1],
        json!([
            "DB_NATIVE",
            "DB_NATIVE",
            "DB_NATIVE",
            "DB_NATIVE",
            "AUTO_IAM",
            "AUTO_IAM",
            "AUTO_IAM",
            "AUTO_IAM",
            "AUTO_IAM",
            "AUTO_IAM"
        ])
    );
    assert_eq!(calls["alloydbMdx"][I2], 1);
    assert_eq!(calls["proxyConnections"][&private], 9);
    assert_eq!(calls["proxyConnections"][i1["psc_ip"].as_str().unwrap()], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the PostgreSQL scripts/test starts (GCPDB_TEST_PG)"]
async fn control_knobs() {
    let emu = emulator().await;
    let api = Api::new(&emu, &[CLOUD_PLATFORM, ALLOYDB_LOGIN]).await;
    let token = sa_token(&emu.ready, &[ALLOYDB_LOGIN]).await;
    let k = key();
    let (chain, ca) = api.cert(&k).await;
    let ip = instance(&emu.ready, I1)["private_ip"]
        .as_str()
        .unwrap()
        .to_string();
    let dial = || {
        let (ip, ca, chain, k) = (ip.clone(), ca.clone(), chain.clone(), k.clone());
        async move { dial_verified(at_5433(&ip), ip_name(&ip), &ca, &chain, &k).await }
    };
    let ask = |mut tls: Tls| {
        let req = alloydb_mdx_request("alloydb-test/1.0", DB_NATIVE, &token);
        async move {
            tls.write_all(&req).await.unwrap();
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer))
                .await
                .expect("the proxy did not close");
            answer
        }
    };

    // --- Bad requests: unknown names and modes; mdx is AlloyDB's.
    assert_eq!(
        emu.knob(
            "projects/x/locations/r/clusters/c/instances/i",
            "mdx",
            json!({"mode": "error"})
        )
        .await
        .status,
        404
    );
    assert_eq!(
        emu.knob(I1, "mdx", json!({"mode": "explode"})).await.status,
        400
    );
    assert_eq!(emu.knob(I1, "mdx", json!({})).await.status, 400);
    let r = emu
        .knob(
            "emu-project:us-central1:csql",
            "mdx",
            json!({"mode": "error"}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);

    // --- MDX modes.
    assert_eq!(
        emu.knob(I1, "mdx", json!({"mode": "error", "message": "denied"}))
            .await
            .status,
        200
    );
    assert_eq!(
        ask(dial().await.unwrap()).await,
        [0x00, 0x00, 0x00, 0x0a, 0x08, 0x02, 0x12, 0x06, b'd', b'e', b'n', b'i', b'e', b'd']
    );
    emu.knob(I1, "mdx", json!({"mode": "error"})).await;
    let mut tls = dial().await.unwrap();
    tls.write_all(&alloydb_mdx_request("", DB_NATIVE, &token))
        .await
        .unwrap();
    assert_eq!(
        read_alloydb_mdx_response(&mut tls).await.unwrap(),
        (ERROR, "emulated metadata exchange failure".into())
    );

    emu.knob(I1, "mdx", json!({"mode": "truncated"})).await;
    assert_eq!(
        ask(dial().await.unwrap()).await,
        [0, 0, 0, 10, 0x08, 0x01, 0x12]
    );

    emu.knob(I1, "mdx", json!({"mode": "oversized"})).await;
    let answer = ask(dial().await.unwrap()).await;
    assert_eq!(answer[..4], [0x00, 0x10, 0x00, 0x00]);
    assert_eq!(answer.len(), 4 + 64 * 1024);

    emu.knob(I1, "mdx", json!({"mode": "not-mdx"})).await;
    let answer = ask(dial().await.unwrap()).await;
    assert_eq!(answer[0], b'E');
    let mut buf = bytes::BytesMut::from(&answer[..]);
    let Some(postgres_protocol::message::backend::Message::ErrorResponse(body)) =
        postgres_protocol::message::backend::Message::parse(&mut buf).unwrap()
    else {
        panic!("not an ErrorResponse: {answer:?}");
    };
    let fields = support::pg_error_fields(&body);
    assert!(fields.contains(&('S', "FATAL".into())), "{fields:?}");

    emu.knob(I1, "mdx", json!({"mode": "silent"})).await;
    let mut tls = dial().await.unwrap();
    tls.write_all(&alloydb_mdx_request("", DB_NATIVE, &token))
        .await
        .unwrap();
    let mut b = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(700), tls.read(&mut b))
            .await
            .is_err(),
        "silent mode answered"
    );
    drop(tls);

    emu.knob(I1, "mdx", json!({"mode": "normal"})).await;
    let mut tls = dial().await.unwrap();
    tls.write_all(&alloydb_mdx_request("", DB_NATIVE, &token))
        .await
        .unwrap();
    assert_eq!(read_alloydb_mdx_response(&mut tls).await.unwrap().0, OK);
    let mut pg = Pg::new(tls);
    pg.login("app", Some("app-password")).await.unwrap();
    assert_eq!(pg.query("SELECT 1").await, ["1"]);

    // --- Server certificate modes, by percent-encoded URI.
    for (mode, fails) in [("wrong-ca", true), ("wrong-cn", true), ("valid", false)] {
        let r = emu.knob(I1, "server-cert", json!({"mode": mode})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let result = dial().await;
        assert_eq!(result.is_err(), fails, "{mode}: {:?}", result.err());
        if let Err(e) = result {
            let e = e.to_string();
            let want = if mode == "wrong-ca" {
                "UnknownIssuer"
            } else {
                "not valid for name"
            };
            assert!(e.contains(want), "{mode}: {e}");
        }
    }

    // --- Proxy faults, by URI too.
    assert_eq!(
        emu.knob(I1, "proxy", json!({"mode": "refuse"}))
            .await
            .status,
        200
    );
    assert!(dial().await.is_err());
    emu.knob(I1, "proxy", json!({"mode": "drop-after-bytes", "bytes": 5}))
        .await;
    let mut tls = dial().await.unwrap();
    tls.write_all(&alloydb_mdx_request("", DB_NATIVE, &token))
        .await
        .unwrap();
    assert_eq!(read_alloydb_mdx_response(&mut tls).await.unwrap().0, OK);
    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::startup_message(
        [("user", "app"), ("database", "postgres")],
        &mut out,
    )
    .unwrap();
    tls.write_all(&out).await.unwrap();
    let mut got = Vec::new();
    let _ = tls.read_to_end(&mut got).await;
    assert_eq!(got.len(), 5, "{got:?}");
    emu.knob(I1, "proxy", json!({"mode": "normal"})).await;
    assert!(dial().await.is_ok());
    // Cloud SQL names still work.
    assert_eq!(
        emu.knob(
            "emu-project:us-central1:csql",
            "proxy",
            json!({"mode": "normal"})
        )
        .await
        .status,
        200
    );
}

/// The binary: its ready line, and its log, which must never show a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the PostgreSQL scripts/test starts (GCPDB_TEST_PG)"]
async fn binary_logs_without_secrets() {
    let pg = test_postgres();
    let emu = start_emulator(&[format!("{I1},backend={pg},private-ip=auto")], 600).await;
    let i1 = &emu.ready["instances"][0];
    assert_eq!(
        (i1["kind"].as_str(), i1["name"].as_str()),
        (Some("alloydb"), Some(I1))
    );
    assert!(i1["public_ip"].is_null());
    let base = emu.ready["alloydb_admin_endpoint"]
        .as_str()
        .unwrap()
        .to_string();
    let admin_token = sa_token(&emu.ready, &[CLOUD_PLATFORM]).await;
    let login_token = sa_token(&emu.ready, &[ALLOYDB_LOGIN]).await;
    let k = key();
    let r = http(
        "POST",
        &format!("{base}/v1alpha/{CLUSTER}:generateClientCertificate"),
        &[("Authorization", &format!("Bearer {admin_token}"))],
        json!({"publicKey": k.to_public_key().to_public_key_pem(LineEnding::LF).unwrap()})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let chain: Vec<String> = v["pemCertificateChain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let ip = i1["private_ip"].as_str().unwrap();
    for token in [login_token.as_str(), "ya29.emu-forged-token"] {
        let mut tls = dial_verified(
            at_5433(ip),
            ip_name(ip),
            v["caCert"].as_str().unwrap(),
            &chain,
            &k,
        )
        .await
        .unwrap();
        tls.write_all(&alloydb_mdx_request("ua", AUTO_IAM, token))
            .await
            .unwrap();
        let (code, _) = read_alloydb_mdx_response(&mut tls).await.unwrap();
        if code == OK {
            let mut pg = Pg::new(tls);
            pg.login(SA_DB_USER, None).await.unwrap();
            pg.terminate().await;
        }
    }
    // Every connection's handler is done (so has logged all it will), and the log says
    // what happened.
    let calls_url = format!("{}/calls", emu.ready["control_endpoint"].as_str().unwrap());
    eventually("the proxy closed every connection", || async {
        let calls = http("GET", &calls_url, &[], b"").await.json();
        calls["proxyOpenConnections"].get(ip).is_none()
    })
    .await;
    let log = emu
        .log_containing(&[
            "metadata exchange: auth_type=AUTO_IAM",
            "metadata exchange refused",
            &format!("IAM login as \"{SA_DB_USER}\""),
        ])
        .await;
    for secret in [admin_token.as_str(), login_token.as_str(), "ya29."] {
        assert!(!log.contains(secret), "log leaks a secret: {log}");
    }
}
