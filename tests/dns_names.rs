//! Instances named by DNS names, end to end: the connector component in the
//! embedded wasmtime host resolving TXT records through the emulator's
//! DNS-over-HTTPS endpoint (and Cloud SQL instance DNS names through its
//! Admin API), then connecting to a real PostgreSQL behind the emulator's
//! proxies; the name moved mid-run; fresh instances sharing the host's
//! key-value store; and every bad answer a resolver can give.

mod support;

use std::time::{Duration, Instant};

use gcp_db_host::connector::ResourceAny;
use gcp_db_host::connector::{Config, ConnectOptions, ConnectTimings, Error};
use gcp_db_host::pgwire::Session;
use gcp_db_host::query::{connect_and_query, ComponentConnection, QueryError};
use gcp_db_host::ConnectorInstance;
use support::{connect_error, connector, kv_connector, superuser, Emulator};

const DB1: &str = "proj:us-central1:db1";
const DB2: &str = "proj:us-central1:db2";
const URI: &str = "projects/proj/locations/us-central1/clusters/cl/instances/inst";

/// The emulator's resolver, the service account's key (no test waits for
/// key generation), and `failover_ms` as the failover period.
fn config(emu: &Emulator, failover_ms: Option<u32>) -> Config {
    Config {
        dns_resolver: Some(emu.dns_url()),
        failover_period_ms: failover_ms,
        rsa_private_key: Some(emu.service_account_key_pem()),
        ..emu.config()
    }
}

async fn select(
    inst: &mut ConnectorInstance,
    c: ResourceAny,
    name: &str,
) -> Result<ConnectTimings, QueryError> {
    let (rows, t) = connect_and_query(
        inst,
        c,
        name,
        ConnectOptions::default(),
        &superuser(),
        "SELECT 'ok'",
    )
    .await?;
    assert_eq!(rows.rows, [[Some("ok".to_string())]]);
    Ok(t)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn txt_named_cloud_sql_and_alloydb_instances_connect_and_the_answer_is_kept() {
    let emu = Emulator::start(&[
        &format!("{DB1},backend={{pg}},psc=true"),
        &format!("{URI},backend={{pg}}"),
    ]);
    emu.set_dns_txt("orders.example.test", &["v=spf1 -all", DB1], 300);
    emu.set_dns_txt("analytics.example.test", &[URI], 300);
    emu.set_dns_cname("alias.example.test", "orders.example.test", 300);
    let (mut inst, c) = connector(config(&emu, None)).await;

    let cold = select(&mut inst, c, "orders.example.test").await.unwrap();
    let warm = select(&mut inst, c, "orders.example.test").await.unwrap();
    assert!(cold.name_resolution_us > 0, "{cold:?}");
    assert!(warm.cached);
    assert_eq!(emu.dns_queries("orders.example.test"), 1);
    assert_eq!(emu.count("connectSettings", "proj:db1"), 1);
    eprintln!(
        "name resolution: cold {} us (connect {} us), cached {} us (connect {} us)",
        cold.name_resolution_us, cold.total_us, warm.name_resolution_us, warm.total_us
    );

    // AlloyDB by its URI in TXT; a CNAME to the Cloud SQL name.
    let t = select(&mut inst, c, "analytics.example.test")
        .await
        .unwrap();
    assert!(t.name_resolution_us > 0);
    assert_eq!(emu.calls()["connectionInfo"][URI], 1);
    select(&mut inst, c, "alias.example.test").await.unwrap();
    assert_eq!(emu.dns_queries("alias.example.test"), 1);
    assert_eq!(
        emu.count("connectSettings", "proj:db1"),
        1,
        "the same instance's certificate"
    );

    // Cloud SQL's own instance DNS name: the Admin API, not DNS.
    let psc_name = emu.psc_dns_name(DB1);
    let psc_name = psc_name.trim_end_matches('.');
    select(&mut inst, c, psc_name).await.unwrap();
    assert_eq!(emu.resolve_connect_settings_calls(), 1);
    assert_eq!(emu.dns_queries(psc_name), 0);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn a_changed_record_moves_new_connects_and_closes_the_old_connection_on_its_next_use() {
    let emu = Emulator::start(&[
        &format!("{DB1},backend={{pg}}"),
        &format!("{DB2},backend={{pg}}"),
    ]);
    emu.set_dns_txt("orders.example.test", &[DB1], 300);
    // Period 0: every connect asks again (Go's `WithFailoverPeriod(0)`).
    let (mut inst, c) = connector(config(&emu, Some(0))).await;

    // A connection left open, in use.
    let old = inst
        .connect(c, "orders.example.test", ConnectOptions::default())
        .await
        .unwrap()
        .unwrap();
    let mut session = Session::start(
        ComponentConnection::new(&mut inst, old),
        "postgres",
        "postgres",
        None,
    )
    .await
    .unwrap();
    session.query("SELECT 1").await.unwrap();
    drop(session);

    emu.set_dns_txt("orders.example.test", &[DB2], 300);
    select(&mut inst, c, "orders.example.test").await.unwrap();
    assert_eq!(
        emu.count("connectSettings", "proj:db2"),
        1,
        "the new connect went to db2"
    );
    assert_eq!(emu.count("connectSettings", "proj:db1"), 1);

    let e = inst
        .write(old, b"Q\0\0\0\rSELECT 1\0")
        .await
        .unwrap()
        .unwrap_err();
    let Error::Io(message) = e else {
        panic!("expected an I/O error, got {e:?}")
    };
    assert!(
        message.contains(&format!("orders.example.test moved from {DB1} to {DB2}")),
        "{message}"
    );
    assert!(inst.read(old, 16).await.unwrap().is_err(), "reads fail too");
    // New connects keep going to db2.
    select(&mut inst, c, "orders.example.test").await.unwrap();
    assert_eq!(emu.count("connectSettings", "proj:db2"), 1);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn fresh_instances_sharing_a_store_share_the_answer_and_follow_a_move() {
    let emu = Emulator::start(&[
        &format!("{DB1},backend={{pg}}"),
        &format!("{DB2},backend={{pg}}"),
    ]);
    // A short TTL: the move is seen once the stored answer is out of date.
    emu.set_dns_txt("orders.example.test", &[DB1], 2);
    let kv = || Config {
        store_bucket: Some("default".into()),
        ..config(&emu, None)
    };
    for _ in 0..3 {
        let (mut inst, c) = kv_connector(kv()).await;
        select(&mut inst, c, "orders.example.test").await.unwrap();
    }
    assert_eq!(
        emu.dns_queries("orders.example.test"),
        1,
        "one query for three instances"
    );
    assert_eq!(emu.count("connectSettings", "proj:db1"), 1);

    emu.set_dns_txt("orders.example.test", &[DB2], 300);
    // Fresh instances keep the stored answer until its TTL is up, then move.
    let bound = Instant::now() + Duration::from_secs(20);
    while emu.count("connectSettings", "proj:db2") == 0 {
        assert!(Instant::now() < bound, "no instance moved to db2");
        let (mut inst, c) = kv_connector(kv()).await;
        select(&mut inst, c, "orders.example.test").await.unwrap();
    }
    let queries = emu.dns_queries("orders.example.test");
    for _ in 0..3 {
        let (mut inst, c) = kv_connector(kv()).await;
        let t = select(&mut inst, c, "orders.example.test").await.unwrap();
        assert!(t.from_store, "{t:?}");
        eprintln!(
            "name resolution from the store in a fresh instance: {} us (connect {} us)",
            t.name_resolution_us, t.total_us
        );
    }
    assert_eq!(
        emu.dns_queries("orders.example.test"),
        queries,
        "the new answer is shared"
    );
    assert_eq!(emu.count("connectSettings", "proj:db2"), 1);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn bad_answers_are_typed_errors_naming_the_name_and_the_cause() {
    let emu = Emulator::start(&[&format!("{DB1},backend={{pg}}")]);
    for name in ["servfail", "empty", "malformed", "http500", "slow"] {
        emu.set_dns_txt(&format!("{name}.example.test"), &[DB1], 300);
    }
    emu.set_dns_txt("text.example.test", &["hello world"], 300);
    emu.set_dns_cname("loop-a.example.test", "loop-b.example.test", 300);
    emu.set_dns_cname("loop-b.example.test", "loop-a.example.test", 300);
    emu.dns_fault("servfail.example.test", "servfail", None, None);
    emu.dns_fault("empty.example.test", "empty", None, None);
    emu.dns_fault("malformed.example.test", "malformed", None, None);
    emu.dns_fault("http500.example.test", "http-500", None, None);
    emu.dns_fault("slow.example.test", "slow", Some(30_000), None);
    const BOUND_MS: u32 = 1_500;
    let (mut inst, c) = connector(Config {
        refresh_timeout_ms: Some(BOUND_MS),
        ..config(&emu, None)
    })
    .await;

    // (name, whether a timeout rather than a DNS error, the cause named)
    let cases: [(&str, bool, &str); 8] = [
        ("gone.example.test", false, "does not exist (NXDOMAIN)"),
        ("servfail.example.test", false, "SERVFAIL"),
        ("empty.example.test", false, "has no TXT record"),
        ("malformed.example.test", false, "malformed DNS message"),
        ("http500.example.test", false, "HTTP 500"),
        (
            "text.example.test",
            false,
            "no TXT record is an instance name; the first, \\\"hello world\\\", is not",
        ),
        ("loop-a.example.test", false, "CNAMEs loop"),
        ("slow.example.test", true, "not answered in time"),
    ];
    for (name, timeout, cause) in cases {
        let started = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_millis(u64::from(BOUND_MS) + 5_000),
            select(&mut inst, c, name),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: still waiting 5 s past the bound"));
        let e = connect_error(r);
        let text = format!("{e:?}");
        let kind_ok = if timeout {
            matches!(e, Error::Timeout(_))
        } else {
            matches!(e, Error::Dns(_))
        };
        assert!(kind_ok, "{name}: {text}");
        assert!(
            text.contains(name) && text.contains(cause),
            "{name}: {text}"
        );
        eprintln!("{name}: {:?}: {text}", started.elapsed());
    }
    assert_eq!(emu.count("connectSettings", "proj:db1"), 0);

    // No storm: a failing name is asked twice, then once per 30 s.
    for _ in 0..5 {
        let e = connect_error(select(&mut inst, c, "servfail.example.test").await);
        assert!(matches!(e, Error::Dns(_)), "{e:?}");
    }
    assert_eq!(emu.dns_queries("servfail.example.test"), 2);
    let e = connect_error(select(&mut inst, c, "servfail.example.test").await);
    assert!(format!("{e:?}").contains("not resolved again for"), "{e:?}");
}
