//! AlloyDB end to end: the connector component in the embedded wasmtime host,
//! the emulator's AlloyDB Admin API and server-side proxy (port 5433, metadata
//! exchange), and a real PostgreSQL behind it.

mod support;

use gcp_db_host::connector::ResourceAny;
use gcp_db_host::connector::{
    AccessTokens, Config, ConnectOptions, ConnectTimings, Credentials, Error, IpType,
    VerificationCheck,
};
use gcp_db_host::pgwire::QueryResult;
use gcp_db_host::query::{connect_and_query, Login, QueryError};
use gcp_db_host::{CommandOptions, ConnectorInstance};
use serde_json::json;
use support::{connect_error, connector, host, pg_query, superuser, via, Emulator, HostsEntry};

const URI: &str = "projects/proj/locations/us-central1/clusters/cl/instances/inst";
const CLUSTER: &str = "projects/proj/locations/us-central1/clusters/cl";
/// The emulator's service account as a Postgres IAM user.
const SA_USER: &str = "connector-sa@emulator-project.iam";

fn app() -> Login {
    Login {
        user: "app".into(),
        password: Some("app-password".into()),
        database: "postgres".into(),
    }
}

fn iam() -> ConnectOptions {
    ConnectOptions {
        enable_iam_auth: Some(true),
        ..ConnectOptions::default()
    }
}

async fn query_as(
    inst: &mut ConnectorInstance,
    connector: ResourceAny,
    options: ConnectOptions,
    login: &Login,
    sql: &str,
) -> Result<(QueryResult, ConnectTimings), QueryError> {
    connect_and_query(inst, connector, URI, options, login, sql).await
}

/// One connect and query in a fresh connector; the connector reuses the
/// service account's key, so no test waits for key generation.
async fn once(
    emu: &Emulator,
    config: Config,
    options: ConnectOptions,
    login: &Login,
) -> Result<QueryResult, QueryError> {
    let config = Config {
        rsa_private_key: Some(emu.service_account_key_pem()),
        ..config
    };
    let (mut inst, c) = connector(config).await;
    query_as(&mut inst, c, options, login, "SELECT current_user")
        .await
        .map(|(r, _)| r)
}

fn counters(emu: &Emulator) -> serde_json::Value {
    let c = emu.calls();
    json!({
        "connectionInfo": c["connectionInfo"][URI],
        "generateClientCertificate": c["generateClientCertificate"][CLUSTER],
        "mdx": c["alloydbMdx"][URI],
    })
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn native_auth_queries_through_the_exchange_and_reuses_the_certificate() {
    let emu = Emulator::start(&[&format!("{URI},backend={{pg}}")]);
    let private = emu.instance(URI)["private_ip"]
        .as_str()
        .unwrap()
        .to_string();
    let (mut inst, c) = connector(emu.config()).await;

    let sql = "SELECT 40 + 2 AS answer, current_user AS who";
    let (cold, t1) = query_as(&mut inst, c, ConnectOptions::default(), &app(), sql)
        .await
        .unwrap();
    assert_eq!(
        cold.rows,
        [[Some("42".to_string()), Some("app".to_string())]]
    );
    assert!(
        !t1.cached && t1.admin_api_us > 0 && t1.key_generation_us > 0,
        "{t1:?}"
    );
    // AlloyDB's default address is the private one.
    assert_eq!(emu.proxy_connections(&private), 1);

    let (warm, t2) = query_as(&mut inst, c, ConnectOptions::default(), &app(), sql)
        .await
        .unwrap();
    assert_eq!(warm.rows, cold.rows);
    assert!(
        t2.cached && t2.admin_api_us == 0 && t2.token_us == 0,
        "{t2:?}"
    );
    // Two connects, one refresh; the exchange runs on every connect.
    assert_eq!(
        counters(&emu),
        json!({"connectionInfo": 1, "generateClientCertificate": 1, "mdx": 2})
    );
    assert_eq!(
        emu.calls()["alloydbMdxAuthType"][URI],
        json!(["DB_NATIVE", "DB_NATIVE"])
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn auto_iam_logs_in_the_tokens_principal_without_a_password() {
    let emu = Emulator::start(&[&format!("{URI},backend={{pg}}")]);
    let sa = Login {
        user: SA_USER.into(),
        password: None,
        database: "postgres".into(),
    };
    let rows = once(&emu, emu.config(), iam(), &sa).await.unwrap().rows;
    assert_eq!(rows, [[Some(SA_USER.to_string())]]);
    assert_eq!(emu.calls()["alloydbMdxAuthType"][URI], json!(["AUTO_IAM"]));

    // The token admits its own principal only.
    match once(&emu, emu.config(), iam(), &superuser()).await {
        Err(QueryError::Other(m)) => {
            assert!(m.contains("28000") || m.contains(SA_USER), "{m}")
        }
        other => panic!("another user than the token's got in: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn the_ip_type_chooses_the_address_dialled() {
    let emu = Emulator::start(&[
        &format!("{URI},backend={{pg}},public-ip=auto,psc=true"),
        &format!("{CLUSTER}/instances/private-only,backend={{pg}}"),
    ]);
    let i = emu.instance(URI);
    let ip = |k: &str| i[k].as_str().unwrap().to_string();
    let (private, public, psc) = (ip("private_ip"), ip("public_ip"), ip("psc_ip"));
    let psc_name = ip("psc_dns_name");
    assert!(psc_name.ends_with(".alloydb-psc.goog."), "{psc_name}");
    let _hosts = HostsEntry::add(&psc, psc_name.trim_end_matches('.'));

    // One connector: one refresh serves every IP type.
    let (mut inst, c) = connector(emu.config()).await;
    for (options, dialled) in [
        (ConnectOptions::default(), &private),
        (via(IpType::Public), &public),
        (via(IpType::Private), &private),
        (via(IpType::Psc), &psc),
    ] {
        let before = emu.proxy_connections(dialled);
        let (r, _) = query_as(&mut inst, c, options, &app(), "SELECT 1")
            .await
            .unwrap_or_else(|e| panic!("{options:?}: {e:?}"));
        assert_eq!(r.rows, [[Some("1".to_string())]]);
        assert_eq!(emu.proxy_connections(dialled), before + 1, "{options:?}");
    }
    assert_eq!(counters(&emu)["generateClientCertificate"], 1);

    // An instance without the type asked for says so.
    let other = format!("{CLUSTER}/instances/private-only");
    for t in [IpType::Public, IpType::Psc] {
        let r = connect_and_query(&mut inst, c, &other, via(t), &app(), "SELECT 1").await;
        match connect_error(r) {
            Error::IpTypeNotAvailable(m) => assert!(m.contains("private-only"), "{m}"),
            e => panic!("{t:?}: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn a_bad_exchange_token_is_refused_with_the_servers_message() {
    let emu = Emulator::start(&[&format!("{URI},backend={{pg}}")]);
    let api_token = emu.metadata_token("cloud-platform");
    for bad in [
        "ya29.never-issued".to_string(),
        // Issued, but for a scope that grants no AlloyDB connect.
        emu.metadata_token("sqlservice.login"),
    ] {
        let config = Config {
            credentials: Some(Credentials::AccessToken(AccessTokens {
                api_token: api_token.clone(),
                login_token: Some(bad.clone()),
            })),
            ..emu.config()
        };
        let before = counters(&emu);
        match connect_error(once(&emu, config, ConnectOptions::default(), &app()).await) {
            Error::MetadataExchange(m) => {
                let server = m
                    .strip_prefix("metadata exchange: the server refused the connection: ")
                    .unwrap_or_else(|| panic!("{m}"));
                assert!(!server.is_empty(), "{m}");
                assert!(!m.contains(&bad), "the token leaked: {m}");
            }
            e => panic!("{e:?}"),
        }
        // The Admin API took the API token; only the exchange refused.
        assert_eq!(
            counters(&emu)["generateClientCertificate"],
            before["generateClientCertificate"].as_u64().unwrap_or(0) + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn an_exchange_error_forces_a_refresh() {
    let emu = Emulator::start(&[&format!("{URI},backend={{pg}}")]);
    let config = Config {
        rsa_private_key: Some(emu.service_account_key_pem()),
        ..emu.config()
    };
    let (mut inst, c) = connector(config).await;
    let opts = ConnectOptions::default();
    query_as(&mut inst, c, opts, &app(), "SELECT 1")
        .await
        .unwrap();

    emu.set_mdx(URI, "error", Some("instance is being maintained"));
    match connect_error(query_as(&mut inst, c, opts, &app(), "SELECT 1").await) {
        Error::MetadataExchange(m) => assert!(m.ends_with("instance is being maintained"), "{m}"),
        e => panic!("{e:?}"),
    }
    emu.set_mdx(URI, "normal", None);
    let (_, t) = query_as(&mut inst, c, opts, &app(), "SELECT 1")
        .await
        .unwrap();
    assert!(!t.cached, "the refused entry was reused: {t:?}");
    assert_eq!(counters(&emu)["generateClientCertificate"], 2);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn a_wrong_server_certificate_is_refused_before_the_exchange() {
    let emu = Emulator::start(&[&format!("{URI},backend={{pg}}")]);
    for (mode, check) in [
        ("wrong-ca", VerificationCheck::Chain),
        ("wrong-cn", VerificationCheck::Identity),
    ] {
        emu.set_server_cert(URI, mode);
        match connect_error(once(&emu, emu.config(), ConnectOptions::default(), &app()).await) {
            Error::ServerVerification(v) => assert_eq!(v.check, check, "{mode}: {}", v.message),
            e => panic!("{mode}: {e:?}"),
        }
    }
    // Nothing, the token least of all, went to a server that failed the checks.
    assert_eq!(counters(&emu)["mdx"], json!(null));
    emu.set_server_cert(URI, "valid");
    once(&emu, emu.config(), ConnectOptions::default(), &app())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn broken_exchange_responses_are_typed_errors() {
    let emu = Emulator::start(&[&format!("{URI},backend={{pg}}")]);
    for (mode, want) in [
        ("truncated", "closed the connection"),
        ("oversized", "more than 16384"),
        ("not-mdx", "Postgres error"),
    ] {
        emu.set_mdx(URI, mode, None);
        match connect_error(once(&emu, emu.config(), ConnectOptions::default(), &app()).await) {
            Error::MetadataExchange(m) => assert!(m.contains(want), "{mode}: {m}"),
            e => panic!("{mode}: {e:?}"),
        }
    }
    // A server that never answers is bounded by the dial timeout.
    emu.set_mdx(URI, "silent", None);
    let config = Config {
        dial_timeout_ms: Some(1500),
        dns_resolver: None,
        failover_period_ms: None,
        ..emu.config()
    };
    match connect_error(once(&emu, config, ConnectOptions::default(), &app()).await) {
        Error::Timeout(m) => assert!(m.contains("metadata exchange"), "{m}"),
        e => panic!("silent: {e:?}"),
    }
    emu.set_mdx(URI, "normal", None);
    once(&emu, emu.config(), ConnectOptions::default(), &app())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn malformed_uris_and_unknown_instances_fail_clearly() {
    let emu = Emulator::start(&[&format!("{URI},backend={{pg}}")]);
    let (mut inst, c) = connector(emu.config()).await;
    let r = connect_and_query(&mut inst, c, CLUSTER, ConnectOptions::default(), &app(), "").await;
    match connect_error(r) {
        Error::InvalidInstanceName(m) => {
            assert!(
                m.contains("projects/PROJECT/locations/REGION/clusters/CLUSTER/instances/INSTANCE"),
                "{m}"
            )
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(emu.calls()["connectionInfo"], json!({}));

    let missing = format!("{CLUSTER}/instances/nope");
    let r = connect_and_query(
        &mut inst,
        c,
        &missing,
        ConnectOptions::default(),
        &app(),
        "",
    )
    .await;
    match connect_error(r) {
        Error::AdminApi(e) => {
            assert_eq!((e.status, e.code.as_str()), (404, "NOT_FOUND"));
            assert!(e.message.contains("nope"), "{}", e.message);
        }
        e => panic!("{e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn the_tokio_guest_connects_to_alloydb() {
    let emu = Emulator::start(&[&format!("{URI},backend={{pg}}")]);
    let out = host()
        .run_command(
            &pg_query(),
            &CommandOptions {
                args: [
                    "--alloydb-admin-endpoint",
                    &emu.admin_endpoint(),
                    "--credentials-file",
                    "/creds/service-account.json",
                    "--user",
                    "app",
                    "--password",
                    "app-password",
                    "--connects",
                    "2",
                    URI,
                    "SELECT id, body FROM messages ORDER BY id LIMIT 1",
                ]
                .map(String::from)
                .to_vec(),
                dirs: vec![(emu.state_dir.clone(), "/creds".into())],
                ..CommandOptions::default()
            },
        )
        .await
        .unwrap();
    assert!(
        out.success,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    assert_eq!(out.stdout, "id\tbody\n1\thello from Cloud SQL\n");
    assert!(out.stderr.contains("connect #2 (warm"), "{}", out.stderr);
    assert_eq!(
        counters(&emu),
        json!({"connectionInfo": 1, "generateClientCertificate": 1, "mdx": 2})
    );
}
