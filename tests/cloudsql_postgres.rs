//! Cloud SQL Postgres end to end: the connector component in the embedded
//! wasmtime host, the emulator of Google's side, and a real PostgreSQL.

mod support;

use std::time::{Duration, Instant};

use gcp_db_host::connector::{
    AccessTokens, Config, ConnectOptions, ConnectTimings, Credentials, Error, IpType, ResourceAny,
    VerificationCheck,
};
use gcp_db_host::pgwire::QueryResult;
use gcp_db_host::query::{connect_and_query, Login, QueryError};
use gcp_db_host::CommandOptions;
use gcp_db_host::ConnectorInstance;
use support::{component, connect_error, connector, host, pg_query, superuser, via, Emulator};

const PROJECT_INSTANCE: &str = "proj:db";
const INSTANCE: &str = "proj:us-central1:db";

/// `connect_and_query` as the trust-auth superuser.
async fn run_with(
    inst: &mut ConnectorInstance,
    connector: ResourceAny,
    instance: &str,
    options: ConnectOptions,
    sql: &str,
) -> Result<(QueryResult, ConnectTimings), QueryError> {
    connect_and_query(inst, connector, instance, options, &superuser(), sql).await
}

/// [`run_with`] with default options.
async fn run(
    inst: &mut ConnectorInstance,
    connector: ResourceAny,
    instance: &str,
    sql: &str,
) -> Result<(QueryResult, ConnectTimings), QueryError> {
    run_with(inst, connector, instance, ConnectOptions::default(), sql).await
}

/// Connects with a new connector in a fresh component instance and queries.
async fn query(
    config: Config,
    instance: &str,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, QueryError> {
    let (mut inst, connector) = connector(config).await;
    run(&mut inst, connector, instance, sql)
        .await
        .map(|(r, _)| r.rows)
}

async fn rows_and_cache_hit(ca: &str) {
    let emu = Emulator::start(&[&format!("{INSTANCE},backend={{pg}},ca={ca}")]);
    let (mut inst, connector) = connector(emu.config()).await;

    let sql = "SELECT 40 + 2 AS answer, current_user AS who";
    let (cold, t1) = run(&mut inst, connector, INSTANCE, sql).await.unwrap();
    assert_eq!(cold.columns, ["answer", "who"]);
    assert_eq!(
        cold.rows,
        [[Some("42".to_string()), Some("postgres".to_string())]]
    );
    assert!(
        !t1.cached && t1.admin_api_us > 0 && t1.key_generation_us > 0 && t1.token_us > 0,
        "{t1:?}"
    );

    // The second connect reuses the certificate: no Admin API call, no key.
    let (warm, t2) = run(&mut inst, connector, INSTANCE, sql).await.unwrap();
    assert_eq!(warm.rows, cold.rows);
    assert!(
        t2.cached && t2.admin_api_us == 0 && t2.key_generation_us == 0 && t2.token_us == 0,
        "{t2:?}"
    );
    assert_eq!(emu.count("connectSettings", PROJECT_INSTANCE), 1);
    assert_eq!(emu.count("generateEphemeralCert", PROJECT_INSTANCE), 1);
    // Not advertised, so not attempted.
    assert_eq!(emu.calls()["mdx"], serde_json::json!({}));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn queries_through_the_component_with_a_cas_instance() {
    rows_and_cache_hit("cas").await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn queries_through_the_component_with_a_legacy_instance() {
    rows_and_cache_hit("legacy").await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn domain_scoped_projects_connect() {
    let name = "example.com:proj:europe-west1:db";
    let emu = Emulator::start(&[&format!("{name},backend={{pg}},ca=legacy")]);
    let rows = query(emu.config(), name, "SELECT 'ok'").await.unwrap();
    assert_eq!(rows, [[Some("ok".to_string())]]);
    assert_eq!(emu.count("connectSettings", "example.com:proj:db"), 1);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn the_example_guest_prints_rows_with_a_password_login() {
    let emu = Emulator::start(&[&format!("{INSTANCE},backend={{pg}}")]);
    let out = host()
        .run_command(
            &pg_query(),
            &CommandOptions {
                args: [
                    "--admin-endpoint",
                    &emu.admin_endpoint(),
                    "--credentials-file",
                    "/creds/service-account.json",
                    "--user",
                    "app",
                    "--password",
                    "app-password",
                    "--connects",
                    "2",
                    INSTANCE,
                    "SELECT id, body FROM messages ORDER BY id LIMIT 2",
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
    assert_eq!(
        out.stdout,
        "id\tbody\n1\thello from Cloud SQL\n2\tthrough a wasm component\n"
    );
    assert!(out.stderr.contains("connect #1 (cold"), "{}", out.stderr);
    assert!(out.stderr.contains("connect #2 (warm"), "{}", out.stderr);
    assert_eq!(emu.count("generateEphemeralCert", PROJECT_INSTANCE), 1);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn a_token_google_never_issued_is_refused_without_leaking_it() {
    let emu = Emulator::start(&[&format!("{INSTANCE},backend={{pg}}")]);
    let out = host()
        .run_command(
            &pg_query(),
            &CommandOptions {
                args: [
                    "--admin-endpoint",
                    &emu.admin_endpoint(),
                    "--access-token",
                    "ya29.not-issued",
                    INSTANCE,
                    "SELECT 1",
                ]
                .map(String::from)
                .to_vec(),
                ..CommandOptions::default()
            },
        )
        .await
        .unwrap();
    assert!(!out.success);
    // A token the emulator never issued is refused by the Admin API with 401.
    assert!(
        out.stderr.contains("HTTP 401") && out.stderr.contains("UNAUTHENTICATED"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("ya29.not-issued"),
        "the token leaked: {}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn server_certificates_from_another_ca_or_instance_are_refused() {
    for ca in ["legacy", "cas"] {
        let emu = Emulator::start(&[&format!("{INSTANCE},backend={{pg}},ca={ca}")]);
        for (mode, check) in [
            ("wrong-ca", VerificationCheck::Chain),
            ("wrong-cn", VerificationCheck::Identity),
        ] {
            let (mut inst, connector) = connector(emu.config()).await;
            let before = emu.count("generateEphemeralCert", PROJECT_INSTANCE);

            emu.set_server_cert(INSTANCE, mode);
            let r = run(&mut inst, connector, INSTANCE, "SELECT 1")
                .await
                .map(|(r, _)| r.rows);
            match connect_error(r) {
                Error::ServerVerification(v) => {
                    assert_eq!(v.check, check, "{ca} {mode}: {}", v.message)
                }
                other => panic!("{ca} {mode}: {other:?}"),
            }

            // The refusal dropped the cached certificate: the next connect
            // refreshes (exactly once) and, with the right server back, works.
            emu.set_server_cert(INSTANCE, "valid");
            let rows = run(&mut inst, connector, INSTANCE, "SELECT 1")
                .await
                .unwrap()
                .0
                .rows;
            assert_eq!(rows, [[Some("1".to_string())]]);
            assert_eq!(
                emu.count("generateEphemeralCert", PROJECT_INSTANCE) - before,
                2,
                "{ca} {mode}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn bad_names_unknown_instances_and_region_mismatches_are_typed_errors() {
    let emu = Emulator::start(&[&format!("{INSTANCE},backend={{pg}}")]);

    match connect_error(query(emu.config(), "proj/us-central1/db", "SELECT 1").await) {
        Error::InvalidInstanceName(m) => assert!(m.contains("PROJECT:REGION:INSTANCE"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        emu.calls()["connectSettings"]
            .as_object()
            .map_or(0, |m| m.len()),
        0
    );

    match connect_error(query(emu.config(), "proj:us-central1:nope", "SELECT 1").await) {
        Error::AdminApi(e) => {
            assert_eq!(e.status, 404);
            assert_eq!(e.code, "NOT_FOUND");
            assert_eq!(e.message, "The Cloud SQL instance does not exist.");
        }
        other => panic!("{other:?}"),
    }

    match connect_error(query(emu.config(), "proj:europe-west1:db", "SELECT 1").await) {
        Error::RegionMismatch(m) => assert!(
            m.contains("europe-west1") && m.contains("us-central1"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }

    let config = Config {
        ip_type: Some(IpType::Private),
        ..emu.config()
    };
    match connect_error(query(config, INSTANCE, "SELECT 1").await) {
        Error::IpTypeNotAvailable(m) => assert!(m.contains("private"), "{m}"),
        other => panic!("{other:?}"),
    }

    let config = Config {
        admin_endpoint: Some("ftp://x".into()),
        ..emu.config()
    };
    match connect_error(query(config, INSTANCE, "SELECT 1").await) {
        Error::InvalidConfig(m) => assert!(m.contains("admin-endpoint"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn server_errors_are_retried_with_backoff_and_then_succeed() {
    let emu = Emulator::start(&[&format!("{INSTANCE},backend={{pg}}")]);
    emu.fail("connectSettings", 503, 2);
    emu.fail("generateEphemeralCert", 500, 1);
    let (mut inst, connector) = connector(emu.config()).await;
    let (rows, t) = run(&mut inst, connector, INSTANCE, "SELECT 1")
        .await
        .unwrap();
    assert_eq!(rows.rows, [[Some("1".to_string())]]);
    assert_eq!(emu.count("connectSettings", PROJECT_INSTANCE), 3);
    assert_eq!(emu.count("generateEphemeralCert", PROJECT_INSTANCE), 2);
    // Two pauses of Google's backoff (at least 323.6 ms, then 523.6 ms) were taken.
    assert!(t.admin_api_us + t.key_generation_us >= 847_000, "{t:?}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn client_errors_fail_fast_and_server_errors_give_up_after_five_attempts() {
    let emu = Emulator::start(&[&format!("{INSTANCE},backend={{pg}}")]);
    emu.fail("connectSettings", 429, 1);
    match connect_error(query(emu.config(), INSTANCE, "SELECT 1").await) {
        Error::QuotaExceeded(m) => {
            assert!(m.contains("HTTP 429 RESOURCE_EXHAUSTED"), "{m}");
            assert!(m.contains("Quota exceeded"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        emu.count("connectSettings", PROJECT_INSTANCE),
        1,
        "429 is not retried"
    );

    emu.fail("connectSettings", 500, 10);
    match connect_error(query(emu.config(), INSTANCE, "SELECT 1").await) {
        Error::AdminApi(e) => assert_eq!((e.status, e.code.as_str()), (500, "INTERNAL")),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        emu.count("connectSettings", PROJECT_INSTANCE),
        1 + 5,
        "five attempts, no more"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn automatic_iam_authentication_logs_in_the_principal_without_a_password() {
    let emu = Emulator::start(&[&format!("{INSTANCE},backend={{pg}}")]);
    for (credentials, user, refusal) in [
        (
            emu.service_account_json(),
            "connector-sa@emulator-project.iam",
            "Cloud SQL IAM service account authentication failed for user \"postgres\"",
        ),
        (
            emu.authorized_user_json(),
            "dev-user@example.com",
            "Cloud SQL IAM user authentication failed for user \"postgres\"",
        ),
    ] {
        let mut inst = host()
            .instantiate_connector(&component(), vec![], vec![])
            .await
            .unwrap();
        let config = Config {
            credentials: Some(Credentials::Json(credentials)),
            enable_iam_auth: true,
            ..emu.config()
        };
        let connector = inst.new_connector(config).await.unwrap();
        let login = Login {
            user: user.into(),
            password: None,
            database: "postgres".into(),
        };
        let (rows, _) = connect_and_query(
            &mut inst,
            connector,
            INSTANCE,
            ConnectOptions::default(),
            &login,
            "SELECT current_user",
        )
        .await
        .unwrap();
        assert_eq!(rows.rows, [[Some(user.to_string())]]);

        // The certificate binds the principal: another database user is refused.
        match run(&mut inst, connector, INSTANCE, "SELECT 1").await {
            Err(QueryError::Other(m)) => assert!(m.contains(refusal), "{m}"),
            other => panic!("{other:?}"),
        }

        // Turning IAM off for one connect uses a separate certificate (no token
        // inside), with which the password-less principal is just a plain role.
        let no_iam = ConnectOptions {
            enable_iam_auth: Some(false),
            ..ConnectOptions::default()
        };
        let (rows, _) = run_with(&mut inst, connector, INSTANCE, no_iam, "SELECT 2")
            .await
            .unwrap();
        assert_eq!(rows.rows, [[Some("2".to_string())]]);
    }
    assert_eq!(emu.count("generateEphemeralCert", PROJECT_INSTANCE), 4);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn the_metadata_exchange_runs_when_the_instance_advertises_it() {
    let emu = Emulator::start(&[&format!("{INSTANCE},backend={{pg}},mdx=true")]);
    // The blocking path (the component) ...
    let rows = query(emu.config(), INSTANCE, "SELECT 'mdx'").await.unwrap();
    assert_eq!(rows, [[Some("mdx".to_string())]]);
    // ... and the tokio path (the example guest).
    let out = host()
        .run_command(
            &pg_query(),
            &CommandOptions {
                args: [
                    "--admin-endpoint",
                    &emu.admin_endpoint(),
                    "--credentials-file",
                    "/creds/service-account.json",
                    INSTANCE,
                    "SELECT 'async'",
                ]
                .map(String::from)
                .to_vec(),
                dirs: vec![(emu.state_dir.clone(), "/creds".into())],
                ..CommandOptions::default()
            },
        )
        .await
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    assert_eq!(out.stdout, "?column?\nasync\n");
    let calls = emu.calls();
    assert_eq!(calls["mdx"][PROJECT_INSTANCE], 2);
    assert_eq!(
        calls["mdxClientProtocolType"][PROJECT_INSTANCE],
        serde_json::json!(["TLS", "TLS"])
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn the_ip_type_chooses_the_address_dialled() {
    let emu = Emulator::start(&[&format!("{INSTANCE},backend={{pg}},private-ip=auto")]);
    let (public, private) = emu.ips();
    let private = private.expect("the emulator gave the instance a private IP");
    // The connector's default is Google's: public.
    let (mut inst, connector) = connector(emu.config()).await;
    for (ip_type, dialled) in [
        (None, &public),
        (Some(IpType::Private), &private),
        (Some(IpType::Public), &public),
    ] {
        let before = emu.proxy_connections(dialled);
        let options = ip_type.map_or_else(ConnectOptions::default, via);
        let (rows, _) = run_with(&mut inst, connector, INSTANCE, options, "SELECT 1")
            .await
            .unwrap();
        assert_eq!(rows.rows, [[Some("1".to_string())]]);
        assert_eq!(
            emu.proxy_connections(dialled) - before,
            1,
            "{ip_type:?} dialled {dialled}"
        );
    }
    // One certificate served all three: the IP type is not part of the cache key.
    assert_eq!(emu.count("generateEphemeralCert", PROJECT_INSTANCE), 1);

    // The config's default IP type applies when the connect does not say.
    let config = Config {
        ip_type: Some(IpType::Private),
        ..emu.config()
    };
    let before = emu.proxy_connections(&private);
    query(config, INSTANCE, "SELECT 1").await.unwrap();
    assert_eq!(emu.proxy_connections(&private) - before, 1);

    // No PSC on this instance: a typed error, no dial (see also
    // psc_dials_the_psc_dns_name).
    let psc = via(IpType::Psc);
    match run_with(&mut inst, connector, INSTANCE, psc, "SELECT 1").await {
        Err(QueryError::Connect(Error::IpTypeNotAvailable(m))) => assert!(m.contains("PSC"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn a_slow_admin_api_gives_a_timeout_error_not_a_hang() {
    let emu = Emulator::start(&[&format!("{INSTANCE},backend={{pg}}")]);
    emu.slow("connectSettings", 5_000);
    let config = Config {
        refresh_timeout_ms: Some(1_000),
        // A caller's key: no key generation inside the bound.
        rsa_private_key: Some(emu.service_account_key_pem()),
        ..emu.config()
    };
    match connect_error(query(config, INSTANCE, "SELECT 1").await) {
        Error::Timeout(m) => assert!(m.contains("connectSettings"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Within the bound, the same latency is just slow.
    emu.slow("connectSettings", 300);
    let rows = query(emu.config(), INSTANCE, "SELECT 1").await.unwrap();
    assert_eq!(rows, [[Some("1".to_string())]]);
}

/// Every wait of a connect has a deadline, through the component: an Admin
/// API answer whose body stalls or trickles in, and a server whose TLS flight
/// trickles in a byte at a time, each end in a `timeout` error within the
/// configured bound (plus a margin for the component's start), not when the
/// peer is done.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn stalled_and_trickled_answers_time_out_within_the_bound() {
    const BOUND_MS: u32 = 1_500;
    const MARGIN: Duration = Duration::from_secs(5);
    let emu = Emulator::start(&[&format!("{INSTANCE},backend={{pg}}")]);
    let config = Config {
        refresh_timeout_ms: Some(BOUND_MS),
        dial_timeout_ms: Some(BOUND_MS),
        dns_resolver: None,
        failover_period_ms: None,
        rsa_private_key: Some(emu.service_account_key_pem()),
        ..emu.config()
    };
    let bound = Duration::from_millis(BOUND_MS.into());
    // Each case's connect, with a fresh component instance (no cache).
    let timed = |what: &'static str| {
        let config = config.clone();
        async move {
            let started = Instant::now();
            let outcome =
                tokio::time::timeout(bound + MARGIN, query(config, INSTANCE, "SELECT 1")).await;
            let took = started.elapsed();
            eprintln!("{what}: ended after {took:?} (bound {bound:?})");
            let result = outcome.unwrap_or_else(|_| panic!("{what}: still waiting after {took:?}"));
            (connect_error(result), took)
        }
    };
    // Headers at once, then no body (the connect's own Admin API call).
    emu.slow_body("connectSettings", "stall", None, 1);
    match timed("stalled body").await {
        (Error::Timeout(m), took) => {
            assert!(m.contains("connectSettings"), "{m}");
            assert!(took >= bound, "{took:?}");
        }
        other => panic!("{other:?}"),
    }
    // A byte every 100 ms: the whole answer would take minutes.
    emu.slow_body("connectSettings", "trickle", Some(100), 1);
    match timed("trickled body").await {
        (Error::Timeout(m), _) => assert!(m.contains("connectSettings"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The server's TLS flight a byte every 20 ms: each read is quick, the
    // handshake as a whole is not.
    emu.reset_faults();
    emu.trickle_handshake(INSTANCE, 20);
    match timed("trickled handshake").await {
        (Error::Timeout(m), _) => assert!(m.contains("handshake"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The same instance, once the proxy is itself again, just works.
    emu.set_proxy_fault(INSTANCE, "normal");
    let rows = query(config.clone(), INSTANCE, "SELECT 1").await.unwrap();
    assert_eq!(rows, [[Some("1".to_string())]]);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn psc_dials_the_psc_dns_name() {
    let emu = Emulator::start(&[&format!("{INSTANCE},backend={{pg}},psc=true")]);
    let i = &emu.ready["instances"][0];
    let ip = i["psc_ip"].as_str().unwrap();
    let name = i["psc_dns_name"].as_str().unwrap();
    assert!(name.ends_with(".sql-psc.goog."), "{name}");
    let _hosts = support::HostsEntry::add(ip, name.trim_end_matches('.'));

    let (mut inst, connector) = connector(emu.config()).await;
    let before = emu.proxy_connections(ip);
    let psc = via(IpType::Psc);
    let (rows, _) = run_with(&mut inst, connector, INSTANCE, psc, "SELECT 'psc'")
        .await
        .unwrap();
    assert_eq!(rows.rows, [[Some("psc".to_string())]]);
    assert_eq!(
        emu.proxy_connections(ip) - before,
        1,
        "dialled the PSC endpoint"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn every_credential_source_connects() {
    let emu = Emulator::start(&[&format!("{INSTANCE},backend={{pg}}")]);
    let sql = "SELECT 'ok'";
    let ok = [[Some("ok".to_string())]];

    let au = Config {
        credentials: Some(Credentials::Json(emu.authorized_user_json())),
        ..emu.config()
    };
    assert_eq!(
        query(au, INSTANCE, sql).await.unwrap(),
        ok,
        "authorized_user"
    );

    let md = Config {
        credentials: Some(Credentials::MetadataServer),
        metadata_host: Some(emu.metadata_host()),
        ..emu.config()
    };
    assert_eq!(
        query(md, INSTANCE, sql).await.unwrap(),
        ok,
        "metadata server"
    );

    // Application Default Credentials: the file GOOGLE_APPLICATION_CREDENTIALS names.
    let mut inst = host()
        .instantiate_connector(
            &component(),
            vec![(
                "GOOGLE_APPLICATION_CREDENTIALS".into(),
                "/creds/service-account.json".into(),
            )],
            vec![(emu.state_dir.clone(), "/creds".into())],
        )
        .await
        .unwrap();
    let adc = Config {
        credentials: None,
        ..emu.config()
    };
    let connector = inst.new_connector(adc).await.unwrap();
    let (rows, _) = run(&mut inst, connector, INSTANCE, sql).await.unwrap();
    assert_eq!(rows.rows, ok, "ADC file");
    // The login token for manual IAM authentication comes from the same source.
    let login = inst.login_token(connector).await.unwrap().unwrap();
    assert!(login.starts_with("ya29."), "not a token");

    // ADC with nothing configured falls back to the metadata server.
    let mut inst = host()
        .instantiate_connector(
            &component(),
            vec![("GCE_METADATA_HOST".into(), emu.metadata_host())],
            vec![],
        )
        .await
        .unwrap();
    let connector = inst
        .new_connector(Config {
            credentials: None,
            ..emu.config()
        })
        .await
        .unwrap();
    let (rows, _) = run(&mut inst, connector, INSTANCE, sql).await.unwrap();
    assert_eq!(rows.rows, ok, "ADC metadata server");

    // A caller's token that is not one: the Admin API's 401 passes through.
    let bad = Config {
        credentials: Some(Credentials::AccessToken(AccessTokens {
            api_token: "ya29.bogus".into(),
            login_token: None,
        })),
        ..emu.config()
    };
    match connect_error(query(bad, INSTANCE, sql).await) {
        Error::AdminApi(e) => assert_eq!(e.status, 401),
        other => panic!("{other:?}"),
    }
}

/// wasi:http through the component, at least 200 Admin API calls in a row,
/// every one answered: 100 connectors (each its own refresh: two Admin API
/// calls) sharing a caller-supplied RSA key so no key is generated.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn two_hundred_admin_api_calls_in_a_row_are_all_answered() {
    let emu = Emulator::start(&[&format!("{INSTANCE},backend={{pg}}")]);
    let mut inst = host()
        .instantiate_connector(&component(), vec![], vec![])
        .await
        .unwrap();
    let key = emu.service_account_key_pem();
    for i in 0..100 {
        let config = Config {
            credentials: Some(Credentials::MetadataServer),
            metadata_host: Some(emu.metadata_host()),
            rsa_private_key: Some(key.clone()),
            ..emu.config()
        };
        let connector = inst.new_connector(config).await.unwrap();
        let conn = inst
            .connect(connector, INSTANCE, ConnectOptions::default())
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("connect {i}: {e:?}"));
        let t = inst.timings(conn).await.unwrap();
        assert!(!t.cached && t.key_generation_us == 0, "connect {i}: {t:?}");
        inst.drop_resource(conn).await.unwrap();
        inst.drop_resource(connector).await.unwrap();
    }
    assert_eq!(emu.count("connectSettings", PROJECT_INSTANCE), 100);
    assert_eq!(emu.count("generateEphemeralCert", PROJECT_INSTANCE), 100);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn the_component_imports_only_what_it_needs() {
    let imports = host().imports(&component()).unwrap();
    let allowed = [
        "wasi:http/outgoing-handler@",
        "wasi:http/types@",
        "wasi:sockets/",
        "wasi:random/",
        "wasi:clocks/",
        "wasi:io/",
        "wasi:cli/environment@",
        "wasi:cli/exit@",
        "wasi:cli/stdin@",
        "wasi:cli/stdout@",
        "wasi:cli/stderr@",
        // Rust's std links these in; nothing in the connector uses them.
        "wasi:cli/terminal-",
        "wasi:filesystem/",
    ];
    for i in &imports {
        assert!(
            allowed.iter().any(|a| i.starts_with(a)),
            "unexpected import {i} in {imports:?}"
        );
    }
    for needed in ["wasi:http/outgoing-handler@", "wasi:sockets/tcp@"] {
        assert!(
            imports.iter().any(|i| i.starts_with(needed)),
            "{needed} missing from {imports:?}"
        );
    }
    let exports = host().exports(&component()).unwrap();
    assert!(
        exports
            .iter()
            .any(|e| e.starts_with("gcp:db-connector/connector@")),
        "{exports:?}"
    );
}
