//! Writes the seed corpora (`corpus/<target>/`) and the seed CA
//! (`seeds/ca.der`): answers shaped like Google's (the protocol specs and the
//! emulator), with certificates issued for the fuzz key (`seeds/key.pem`),
//! valid from 2025 to 2045 around the fuzz clock, MDX responses encoded by
//! the connector's own prost messages, and store entries written by the
//! connector from accepted answers.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds`; run it
//! again only to change the seeds (it issues a new CA each time).

use std::fs;
use std::path::{Path, PathBuf};

use gcp_db_connector::fuzzing::{self, Mdx};
use gcp_db_connector_fuzz::{alloydb_instance, cloudsql_instance, key, ALLOYDB_INSTANCE};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SubjectPublicKeyInfo,
};
use serde_json::json;
use time::OffsetDateTime;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let d = dir().join("corpus").join(target);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(name), bytes).unwrap();
}

fn params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "US");
    dn.push(DnType::OrganizationName, "Google, Inc");
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    // 2025-01-01 and 2045-01-01: around the fuzz clock (2026-01-01).
    p.not_before = OffsetDateTime::from_unix_timestamp(1_735_689_600).unwrap();
    p.not_after = OffsetDateTime::from_unix_timestamp(2_366_841_600).unwrap();
    p
}

fn ca_params(cn: &str, path_len: Option<u8>) -> CertificateParams {
    let mut p = params(cn);
    p.is_ca = IsCa::Ca(path_len.map_or(
        BasicConstraints::Unconstrained,
        BasicConstraints::Constrained,
    ));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

struct Certs {
    root: CertifiedIssuer<'static, KeyPair>,
    inter: CertifiedIssuer<'static, KeyPair>,
    /// For the fuzz key, by the root (Cloud SQL) and by the intermediate (AlloyDB).
    client_by_root: String,
    client_by_inter: String,
    client_der: Vec<u8>,
    server_der: Vec<u8>,
    legacy_server_der: Vec<u8>,
}

fn issue() -> Certs {
    let root = CertifiedIssuer::self_signed(
        ca_params("Google Cloud SQL Server CA", None),
        KeyPair::generate().unwrap(),
    )
    .unwrap();
    let inter = CertifiedIssuer::signed_by(
        ca_params("client.alloydb", Some(0)),
        KeyPair::generate().unwrap(),
        &root,
    )
    .unwrap();
    let spki = SubjectPublicKeyInfo::from_der(key().spki_der()).unwrap();
    let client = |issuer: &CertifiedIssuer<'static, KeyPair>| {
        let mut p = params("Google Cloud SQL Client");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.signed_by(&spki, issuer).unwrap()
    };
    let by_root = client(&root);
    let server = |sans: Vec<SanType>| {
        let mut p = params("proj:db");
        p.subject_alt_names = sans;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.signed_by(&KeyPair::generate().unwrap(), &root)
            .unwrap()
            .der()
            .to_vec()
    };
    Certs {
        client_by_root: by_root.pem(),
        client_by_inter: client(&inter).pem(),
        client_der: by_root.der().to_vec(),
        server_der: server(vec![
            SanType::DnsName("db.example.com".try_into().unwrap()),
            SanType::IpAddress("10.0.0.2".parse().unwrap()),
        ]),
        legacy_server_der: server(vec![]),
        root,
        inter,
    }
}

fn two(a: &serde_json::Value, b: &serde_json::Value) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(a).unwrap();
    v.push(0);
    v.extend(serde_json::to_vec_pretty(b).unwrap());
    v
}

fn with_status(status: u16, body: &[u8]) -> Vec<u8> {
    let mut v = status.to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn main() {
    let c = issue();
    fs::write(dir().join("seeds/ca.der"), c.root.der()).unwrap();
    let root_pem = c.root.pem();
    let inter_pem = c.inter.pem();

    for (i, name) in [
        "my-proj:us-central1:my-db",
        "example.com:my-proj:europe-west1:db",
        "projects/my-proj/locations/us-central1/clusters/my-cluster/instances/my-inst",
        "projects/example.com:p/locations/r/clusters/c/instances/i",
        "proj:region:inst/../x",
        "projects/p/locations/r/clusters/c",
    ]
    .iter()
    .enumerate()
    {
        write("instance_name", &format!("seed-{i}"), name.as_bytes());
    }

    // Cloud SQL: the spec's connectSettings (§3.1) and generateEphemeralCert (§3.2).
    let ephemeral = json!({"ephemeralCert": {
        "kind": "sql#sslCert", "cert": c.client_by_root, "certSerialNumber": "1",
        "commonName": "Google Cloud SQL Client", "createTime": "2026-01-01T00:00:00Z",
        "expirationTime": "2045-01-01T00:00:00Z", "instance": "db"}});
    let cloudsql = [
        json!({
            "kind": "sql#connectSettings",
            "serverCaCert": {"kind": "sql#sslCert", "cert": root_pem, "certSerialNumber": "0"},
            "ipAddresses": [
                {"type": "PRIMARY", "ipAddress": "34.1.2.3"},
                {"type": "OUTGOING", "ipAddress": "34.9.9.9"},
                {"type": "PRIVATE", "ipAddress": "10.0.0.5"}],
            "region": "us-central1", "databaseVersion": "POSTGRES_15", "backendType": "SECOND_GEN",
            "pscEnabled": true,
            "dnsNames": [
                {"name": "abc.def.us-central1.sql.goog.", "connectionType": "PUBLIC", "dnsScope": "INSTANCE"},
                {"name": "xyz.psc.us-central1.sql-psc.goog.", "connectionType": "PRIVATE_SERVICE_CONNECT", "dnsScope": "INSTANCE"}],
            "serverCaMode": "GOOGLE_MANAGED_INTERNAL_CA"
        }),
        json!({
            "kind": "sql#connectSettings",
            "serverCaCert": {"cert": format!("{inter_pem}{root_pem}")},
            "ipAddresses": [{"type": "PRIVATE", "ipAddress": "fd00::5"}],
            "region": "us-central1", "databaseVersion": "MYSQL_8_0", "backendType": "SECOND_GEN",
            "pscEnabled": true, "dnsName": "xyz.psc.us-central1.sql-psc.goog.",
            "serverCaMode": "GOOGLE_MANAGED_CAS_CA", "mdxProtocolSupport": ["CLIENT_PROTOCOL_TYPE"]
        }),
        json!({
            "serverCaCert": {"cert": root_pem},
            "ipAddresses": [{"type": "PRIMARY", "ipAddress": "34.1.2.3"}],
            "region": "us-central1", "databaseVersion": "SQLSERVER_2019_STANDARD"
        }),
    ];
    let mut stored = Vec::new();
    for (i, settings) in cloudsql.iter().enumerate() {
        let input = two(settings, &ephemeral);
        let (s, e) = gcp_db_connector_fuzz::two_parts(&input);
        let a = fuzzing::cloudsql_refresh(cloudsql_instance(), false, s, e, key())
            .expect("the Cloud SQL seeds are accepted");
        a.tls_config
            .expect("the seed certificates make a TLS config");
        stored.push(a.stored);
        write("cloudsql_admin", &format!("seed-{i}"), &input);
    }

    // AlloyDB: connectionInfo and generateClientCertificate, camelCase and
    // the snake_case Go's mock sends.
    let chain = [
        c.client_by_inter.clone(),
        inter_pem.clone(),
        root_pem.clone(),
    ];
    let alloydb = [
        (
            json!({"name": format!("{ALLOYDB_INSTANCE}/connectionInfo"), "ipAddress": "10.0.0.2",
                   "publicIpAddress": "34.1.2.3", "pscDnsName": "x.y.us-central1.alloydb-psc.goog.",
                   "instanceUid": "uid"}),
            json!({"pemCertificateChain": chain, "caCert": root_pem}),
        ),
        (
            json!({"ip_address": "", "public_ip_address": "", "psc_dns_name": "x.y.us-central1.alloydb-psc.goog."}),
            json!({"pem_certificate_chain": chain, "ca_cert": root_pem}),
        ),
    ];
    for (i, (info, cert)) in alloydb.iter().enumerate() {
        let input = two(info, cert);
        let (a, b) = gcp_db_connector_fuzz::two_parts(&input);
        let accepted = fuzzing::alloydb_refresh(alloydb_instance(), false, a, b, key())
            .expect("the AlloyDB seeds are accepted");
        accepted
            .tls_config
            .expect("the seed certificates make a TLS config");
        stored.push(accepted.stored);
        write("alloydb_admin", &format!("seed-{i}"), &input);
    }

    // Store entries as the connector writes them (unsealed), and a record
    // of the Admin API's refusals of 10 s before the fuzz clock.
    for (i, entry) in stored.iter().enumerate() {
        assert!(
            fuzzing::store_entry(entry, key()).is_some(),
            "store seed {i} is used"
        );
        write("store_entry", &format!("seed-{i}"), entry);
    }
    let refusals = json!({
        "tokens": 0.0, "at_unix_ms": 1_767_225_590_000u64, "quota": true,
        "call": "connectSettings for proj:us-central1:db", "status": 429,
        "code": "RESOURCE_EXHAUSTED", "message": "Quota exceeded for quota metric 'Queries'.",
    });
    let refusals = json!({"format": 3, "mac": null, "body": refusals.to_string()});
    write(
        "store_entry",
        "seed-refusals",
        refusals.to_string().as_bytes(),
    );

    // Google's error bodies (the emulator's and the spec's).
    for (i, (status, body)) in [
        (404, json!({"error": {"code": 404, "message": "The Cloud SQL instance does not exist.", "errors": [{"message": "The Cloud SQL instance does not exist.", "domain": "global", "reason": "instanceDoesNotExist"}], "status": "NOT_FOUND"}}).to_string()),
        (403, json!({"error": {"code": 403, "message": "The client is not authorized to make this request.", "errors": [{"message": "The client is not authorized to make this request.", "domain": "global", "reason": "notAuthorized"}], "status": "PERMISSION_DENIED"}}).to_string()),
        (429, json!({"error": {"code": 429, "message": "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute'.", "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED"}]}}).to_string()),
        (502, "<html><body>Bad Gateway</body></html>\n".to_string()),
        (200, json!({"kind": "sql#connectSettings"}).to_string()),
    ]
    .iter()
    .enumerate()
    {
        write("google_error", &format!("seed-{i}"), &with_status(*status, body.as_bytes()));
    }

    // OAuth: the token endpoint's and the metadata server's answers.
    for (i, (status, body)) in [
        (200, json!({"access_token": "ya29.c.a0AfB_byC-fuzz-token", "expires_in": 3599, "token_type": "Bearer"})),
        (200, json!({"access_token": "ya29.metadata-token", "expires_in": 3599, "token_type": "Bearer", "id_token": "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"})),
        (400, json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})),
        (401, json!({"error": "unauthorized_client", "error_description": "Client is unauthorized to retrieve access tokens using this method."})),
        // IAM Credentials' generateAccessToken and its refusal; STS's answer.
        (200, json!({"accessToken": "ya29.c.impersonated", "expireTime": "2026-12-06T22:00:00Z"})),
        (403, json!({"error": {"code": 403, "message": "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).", "status": "PERMISSION_DENIED"}})),
        (200, json!({"access_token": "ya29.federated", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer", "expires_in": 3600})),
    ]
    .iter()
    .enumerate()
    {
        write("token_response", &format!("seed-{i}"), &with_status(*status, body.to_string().as_bytes()));
    }

    // Credentials files: a service-account key (the fuzz key) and gcloud's ADC file.
    let sa = json!({
        "type": "service_account", "project_id": "proj", "private_key_id": "0123456789abcdef",
        "private_key": include_str!("../seeds/key.pem"),
        "client_email": "connector@proj.iam.gserviceaccount.com", "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token"
    });
    let user = json!({
        "type": "authorized_user", "client_id": "764086051850-6qr4p6gpi6hn506pt8ejuq83di341hur.apps.googleusercontent.com",
        "client_secret": "d-FL95Q19q7MQmFpd7hHD0Ty", "refresh_token": "1//0fuzz-refresh-token",
        "quota_project_id": "proj"
    });
    // gcloud's impersonated ADC file, and Workload Identity Federation files
    // (file and URL sources) as `gcloud iam workload-identity-pools
    // create-cred-config` writes them.
    let impersonated = json!({
        "type": "impersonated_service_account",
        "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/target@proj.iam.gserviceaccount.com:generateAccessToken",
        "delegates": ["projects/-/serviceAccounts/delegate@proj.iam.gserviceaccount.com"],
        "source_credentials": user.clone(),
    });
    let audience = "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/oidc";
    let external_file = json!({
        "type": "external_account", "audience": audience,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": "https://sts.googleapis.com/v1/token",
        "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/target@proj.iam.gserviceaccount.com:generateAccessToken",
        "service_account_impersonation": {"token_lifetime_seconds": 1800},
        "credential_source": {"file": "/var/run/secrets/token"},
        "universe_domain": "googleapis.com"
    });
    let external_url = json!({
        "type": "external_account", "audience": audience,
        "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
        "token_url": "https://sts.googleapis.com/v1/token",
        "credential_source": {"url": "http://169.254.169.254/token", "headers": {"Metadata": "True"},
            "format": {"type": "json", "subject_token_field_name": "access_token"}},
        "workforce_pool_user_project": "proj"
    });
    for (i, v) in [sa, user, impersonated, external_file, external_url]
        .iter()
        .enumerate()
    {
        assert!(
            fuzzing::credentials_json(&v.to_string()).is_ok(),
            "credentials seed {i}"
        );
        write(
            "credentials_json",
            &format!("seed-{i}"),
            serde_json::to_string_pretty(v).unwrap().as_bytes(),
        );
    }

    // PEM lists and single DER certificates.
    for (i, pem) in [
        root_pem.clone(),
        format!("{}{inter_pem}{root_pem}", c.client_by_inter),
        c.client_by_root.clone(),
    ]
    .iter()
    .enumerate()
    {
        write("pem", &format!("seed-{i}"), pem.as_bytes());
    }
    for (i, der) in [
        c.root.der().to_vec(),
        c.inter.der().to_vec(),
        c.client_der.clone(),
        c.server_der.clone(),
        c.legacy_server_der.clone(),
    ]
    .iter()
    .enumerate()
    {
        write("certificate", &format!("seed-{i}"), der);
    }

    // Metadata exchange responses: the first byte picks the service (bit 0)
    // and the read size; then header, body, and database bytes after.
    let frame = |mdx: Mdx, first: u8, code: i32, message: &str, after: &[u8]| {
        let body = fuzzing::mdx_encode(mdx, code, message);
        let mut v = vec![first];
        if mdx == Mdx::CloudSql {
            v.extend_from_slice(b"CSQLMDEX");
        }
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(&body);
        v.extend_from_slice(after);
        v
    };
    for (i, seed) in [
        frame(
            Mdx::CloudSql,
            0xfe,
            1,
            "",
            b"R\x00\x00\x00\x08\x00\x00\x00\x00",
        ),
        frame(
            Mdx::CloudSql,
            0x00,
            2,
            "the client protocol type is not supported",
            b"",
        ),
        frame(Mdx::AlloyDb, 0xff, 1, "", b"R"),
        frame(
            Mdx::AlloyDb,
            0x01,
            2,
            "permission denied: alloydb.instances.connect",
            b"",
        ),
    ]
    .iter()
    .enumerate()
    {
        write("mdx", &format!("seed-{i}"), seed);
    }
    dns_seeds();
    println!("seeds written under {}", dir().join("corpus").display());
}

/// DoH answers to the TXT query for `fuzzing::DNS_NAME`: TXT records (an
/// instance name among others, an AlloyDB URI), a CNAME chain, a loop, a
/// CNAME to a Cloud SQL instance DNS name, NXDOMAIN, SERVFAIL, no data.
fn dns_seeds() {
    fn name(n: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in n.split('.') {
            out.push(label.len() as u8);
            out.extend(label.as_bytes());
        }
        out.push(0);
        out
    }
    fn rr(owner: &str, kind: u16, ttl: u32, data: &[u8]) -> Vec<u8> {
        let mut out = name(owner);
        out.extend(kind.to_be_bytes());
        out.extend(1u16.to_be_bytes());
        out.extend(ttl.to_be_bytes());
        out.extend((data.len() as u16).to_be_bytes());
        out.extend(data);
        out
    }
    fn txt(strings: &[&str]) -> Vec<u8> {
        strings
            .iter()
            .flat_map(|s| std::iter::once(s.len() as u8).chain(s.bytes()))
            .collect()
    }
    fn answer(rcode: u16, records: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for field in [0, 0x8180 | rcode, 1, records.len() as u16, 0, 0] {
            out.extend(field.to_be_bytes());
        }
        out.extend(name(fuzzing::DNS_NAME));
        out.extend([0, 16, 0, 1]);
        out.extend(records.concat());
        out
    }
    let me = fuzzing::DNS_NAME;
    for (seed, bytes) in [
        (
            "txt",
            answer(
                0,
                &[
                    rr(me, 16, 60, &txt(&["proj:us-central1:db"])),
                    rr(me, 16, 30, &txt(&["v=spf1 -all"])),
                ],
            ),
        ),
        (
            "alloydb",
            answer(0, &[rr(me, 16, 60, &txt(&[ALLOYDB_INSTANCE]))]),
        ),
        (
            "cname",
            answer(
                0,
                &[
                    rr(me, 5, 60, &name("db.example.net")),
                    rr("db.example.net", 16, 60, &txt(&["p:r:", "i"])),
                ],
            ),
        ),
        ("loop", answer(0, &[rr(me, 5, 60, &name(me))])),
        (
            "psc",
            answer(0, &[rr(me, 5, 60, &name("a.b.us-central1.sql-psc.goog"))]),
        ),
        ("nxdomain", answer(3, &[])),
        ("servfail", answer(2, &[])),
        ("nodata", answer(0, &[])),
    ] {
        write("dns_answer", seed, &bytes);
    }
}
