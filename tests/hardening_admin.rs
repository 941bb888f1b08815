//! Hardening against Google's side, end to end through the embedded wasmtime
//! host, the connector component, the emulator and a real PostgreSQL:
//!
//! - every Admin API fault as a matrix (5xx retried, 429 not retried and held,
//!   403/404 at once with Google's words, slowness past the bound, broken
//!   answers: malformed, truncated, oversized, fields left out, a CA that is
//!   not PEM, a certificate for another key or already expired), each a typed
//!   error, each followed by a connect that works;
//! - refresh discipline: one refresh for many concurrent connects, exactly
//!   one after a failed dial, burst 2 then one per 30 s, and a persistent 429
//!   costing one call, not a storm, in one connector and across fresh
//!   instances sharing the host's store;
//! - no token, private key or JWT in any error or log line of all that.
//!
//! Call counts are exact where the protocol makes them so. When the first of
//! the two concurrent Admin API calls fails outright, the second is dropped
//! in flight and may or may not have reached the emulator: it is then
//! counted as "at most one".

mod support;

use std::sync::Arc;

use gcp_db_host::connector::{
    AccessTokens, Config, ConnectOptions, Credentials, Error, ResourceAny,
};
use gcp_db_host::query::{connect_and_query, Login, QueryError};
use gcp_db_host::{CommandOptions, ConnectorInstance};
use support::{assert_no_secrets, host, pg_query, superuser, Emulator};

const INSTANCE: &str = "proj:us-central1:db";
const PROJECT_INSTANCE: &str = "proj:db";
const CS: &str = "connectSettings";
const GEC: &str = "generateEphemeralCert";

const URI: &str = "projects/proj/locations/us-central1/clusters/cl/instances/inst";
const CLUSTER: &str = "projects/proj/locations/us-central1/clusters/cl";
const CI: &str = "connectionInfo";
const GCC: &str = "generateClientCertificate";

/// The service's two Admin API methods, and the keys the emulator counts
/// their calls under, for one instance.
#[derive(Clone, Copy)]
struct Api {
    instance: &'static str,
    first: (&'static str, &'static str),
    second: (&'static str, &'static str),
    login: fn() -> Login,
}

const CLOUD_SQL: Api = Api {
    instance: INSTANCE,
    first: (CS, PROJECT_INSTANCE),
    second: (GEC, PROJECT_INSTANCE),
    login: superuser,
};

const ALLOYDB: Api = Api {
    instance: URI,
    first: (CI, URI),
    second: (GCC, CLUSTER),
    login: app,
};

fn app() -> Login {
    Login {
        user: "app".into(),
        password: Some("app-password".into()),
        database: "postgres".into(),
    }
}

impl Api {
    /// Calls so far of the first and the second method.
    fn calls(&self, emu: &Emulator) -> (u64, u64) {
        (
            emu.count(self.first.0, self.first.1),
            emu.count(self.second.0, self.second.1),
        )
    }
}

/// A connector config for `emu`: the service account's key as the
/// connector's (no key generation inside the bounds) and a refresh bound
/// under the 30 s rate-limit interval, so a limited refresh fails at once
/// instead of waiting.
fn config(emu: &Emulator) -> Config {
    Config {
        rsa_private_key: Some(emu.service_account_key_pem()),
        refresh_timeout_ms: Some(10_000),
        ..emu.config()
    }
}

/// Connects to `instance`, runs `SELECT 1`, closes. A connect error is
/// returned; anything failing later is a test failure.
async fn connect(
    inst: &mut ConnectorInstance,
    connector: ResourceAny,
    instance: &str,
    login: &Login,
) -> Result<(), Error> {
    match connect_and_query(
        inst,
        connector,
        instance,
        ConnectOptions::default(),
        login,
        "SELECT 1",
    )
    .await
    {
        Ok((r, _)) => {
            assert_eq!(r.rows, [[Some("1".to_string())]]);
            Ok(())
        }
        Err(QueryError::Connect(e)) => Err(e),
        Err(QueryError::Other(m)) => panic!("failed after the connect: {m}"),
    }
}

/// Everything a test saw that a secret could leak into.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    fn error(&mut self, e: &Error) {
        self.0.push(format!("{e:?}"));
    }

    /// Checks every error seen and the emulator's log against every token
    /// the emulator issued, the credentials' keys and `extra`.
    fn assert_no_secrets(&self, emu: &Emulator, extra: &[&str]) {
        let tokens = emu.issued_tokens();
        assert!(!tokens.is_empty(), "the test got no token: nothing checked");
        let key = emu.service_account_key_pem();
        let au: serde_json::Value = serde_json::from_str(&emu.authorized_user_json()).unwrap();
        let mut secrets: Vec<&str> = tokens.iter().map(String::as_str).collect();
        secrets.push(&key);
        secrets.push(au["refresh_token"].as_str().unwrap());
        secrets.push(au["client_secret"].as_str().unwrap());
        secrets.extend_from_slice(extra);
        for text in self.0.iter().chain([&emu.log()]) {
            assert_no_secrets(text, &secrets);
        }
    }
}

/// A fault to set before a case.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The next N calls of the method fail with the status.
    Status(&'static str, u16, u32),
    /// The next call of the method gets a broken answer (mode, field).
    Tamper(&'static str, &'static str, Option<&'static str>),
    /// Calls of the method are answered after this many milliseconds.
    Slow(&'static str, u64),
}

/// How a case must end.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    /// The connect works (after retries).
    Works,
    /// `instance-metadata` naming this.
    Metadata(&'static str),
    /// `http` saying this.
    Http(&'static str),
    /// `quota-exceeded`.
    Quota,
    /// `admin-api` with this status and Google's `error.status`.
    Api(u16, &'static str),
    /// `timeout` naming this.
    Timeout(&'static str),
}

/// The Admin API calls a case makes: both exact, or the first exact and
/// the second (dropped in flight) at most one.
#[derive(Clone, Copy, Debug)]
enum Calls {
    Exact(u64, u64),
    FirstFails(u64),
}

struct Case {
    what: &'static str,
    faults: &'static [Fault],
    outcome: Outcome,
    calls: Calls,
    refresh_timeout_ms: Option<u32>,
}

const fn case(
    what: &'static str,
    faults: &'static [Fault],
    outcome: Outcome,
    calls: Calls,
) -> Case {
    Case {
        what,
        faults,
        outcome,
        calls,
        refresh_timeout_ms: None,
    }
}

fn set(emu: &Emulator, fault: Fault) {
    match fault {
        Fault::Status(method, status, count) => emu.fail(method, status, count),
        Fault::Tamper(method, mode, field) => emu.tamper(method, mode, field, 1),
        Fault::Slow(method, ms) => emu.slow(method, ms),
    }
}

/// Checks that `e` is what `outcome` says.
fn check(what: &str, outcome: Outcome, e: &Error) {
    let ok = match (outcome, e) {
        (Outcome::Metadata(want), Error::InstanceMetadata(m)) => m.contains(want),
        (Outcome::Http(want), Error::Http(m)) => m.contains(want),
        (Outcome::Timeout(want), Error::Timeout(m)) => m.contains(want),
        (Outcome::Quota, Error::QuotaExceeded(m)) => [
            "quota exhausted",
            "HTTP 429 RESOURCE_EXHAUSTED",
            "Quota exceeded",
            "Wait a minute",
        ]
        .iter()
        .all(|w| m.contains(w)),
        (Outcome::Api(status, code), Error::AdminApi(a)) => {
            a.status == status && a.code == code && !a.message.is_empty()
        }
        _ => false,
    };
    assert!(ok, "{what}: expected {outcome:?}, got {e:?}");
}

/// Runs each case with a fresh connector: the faults, one connect that must
/// end as the case says with exactly the calls it says, then (faults
/// cleared) a connect that works with exactly one more refresh (nothing
/// broken was cached), except after a quota error, where the instance's
/// next refresh is held: a rate-limited error naming the quota, no call,
/// and a new connector works.
async fn run_matrix(emu: &Emulator, api: Api, cases: &[Case], seen: &mut Seen) -> usize {
    let mut inst = host()
        .instantiate_connector(&support::component(), vec![], vec![])
        .await
        .unwrap();
    let login = (api.login)();
    for c in cases {
        let cfg = Config {
            refresh_timeout_ms: c.refresh_timeout_ms.or(Some(10_000)),
            ..config(emu)
        };
        let connector = inst.new_connector(cfg).await.unwrap();
        let before = api.calls(emu);
        for f in c.faults {
            set(emu, *f);
        }
        let result = connect(&mut inst, connector, api.instance, &login).await;
        let after = api.calls(emu);
        let made = (after.0 - before.0, after.1 - before.1);
        match c.calls {
            Calls::Exact(a, b) => assert_eq!(made, (a, b), "{}: calls", c.what),
            Calls::FirstFails(a) => {
                assert!(made.0 == a && made.1 <= 1, "{}: calls {made:?}", c.what)
            }
        }
        emu.reset_faults();
        match (c.outcome, result) {
            (Outcome::Works, Ok(())) => {
                // Cached now: no more calls.
                connect(&mut inst, connector, api.instance, &login)
                    .await
                    .unwrap_or_else(|e| panic!("{}: second connect: {e:?}", c.what));
                assert_eq!(api.calls(emu), after, "{}: cached", c.what);
            }
            (Outcome::Works, Err(e)) => panic!("{}: {e:?}", c.what),
            (outcome, Ok(())) => panic!("{}: worked, expected {outcome:?}", c.what),
            (Outcome::Quota, Err(e)) => {
                check(c.what, Outcome::Quota, &e);
                seen.error(&e);
                match connect(&mut inst, connector, api.instance, &login).await {
                    Err(Error::RateLimited(m)) => assert!(
                        m.contains("the last refresh failed: Admin API quota exhausted"),
                        "{}: {m}",
                        c.what
                    ),
                    other => panic!("{}: after a 429: {other:?}", c.what),
                }
                assert_eq!(api.calls(emu), after, "{}: held, no call", c.what);
                let fresh = inst.new_connector(config(emu)).await.unwrap();
                connect(&mut inst, fresh, api.instance, &login)
                    .await
                    .unwrap_or_else(|e| panic!("{}: new connector: {e:?}", c.what));
                inst.drop_resource(fresh).await.unwrap();
            }
            (outcome, Err(e)) => {
                check(c.what, outcome, &e);
                seen.error(&e);
                connect(&mut inst, connector, api.instance, &login)
                    .await
                    .unwrap_or_else(|e| panic!("{}: after clearing: {e:?}", c.what));
                let again = api.calls(emu);
                assert_eq!(
                    (again.0 - after.0, again.1 - after.1),
                    (1, 1),
                    "{}: one fresh refresh",
                    c.what
                );
            }
        }
        inst.drop_resource(connector).await.unwrap();
    }
    cases.len()
}

use Calls::{Exact, FirstFails};
use Fault::{Slow, Status, Tamper};
use Outcome::{Api as ApiErr, Http, Metadata, Quota, Timeout, Works};

/// The Admin API answers larger than this are refused (the library's bound).
const TOO_LARGE: &str = "response body larger than 1048576 bytes";

const CLOUD_SQL_CASES: &[Case] = &[
    case(
        "503 twice and 500 once: retried with backoff, then works",
        &[Status(CS, 503, 2), Status(GEC, 500, 1)],
        Works,
        Exact(3, 2),
    ),
    case(
        "502 and 504: retried, then works",
        &[Status(CS, 502, 1), Status(GEC, 504, 1)],
        Works,
        Exact(2, 2),
    ),
    case(
        "500 on every attempt: five attempts, then Google's error",
        &[Status(CS, 500, 10)],
        ApiErr(500, "INTERNAL"),
        FirstFails(5),
    ),
    case(
        "429 on connectSettings: not retried, a quota error",
        &[Status(CS, 429, 10)],
        Quota,
        FirstFails(1),
    ),
    case(
        "429 on generateEphemeralCert: not retried, a quota error",
        &[Status(GEC, 429, 10)],
        Quota,
        Exact(1, 1),
    ),
    Case {
        refresh_timeout_ms: Some(2_000),
        ..case(
            "connectSettings slower than the refresh bound: a timeout",
            &[Slow(CS, 6_000)],
            Timeout("connectSettings"),
            FirstFails(1),
        )
    },
    case(
        "malformed connectSettings",
        &[Tamper(CS, "malformed", None)],
        Metadata("connectSettings is not valid JSON"),
        Exact(1, 1),
    ),
    case(
        "truncated connectSettings",
        &[Tamper(CS, "truncated", None)],
        Metadata("connectSettings is not valid JSON: EOF"),
        Exact(1, 1),
    ),
    case(
        "oversized connectSettings",
        &[Tamper(CS, "oversized", None)],
        Http(TOO_LARGE),
        FirstFails(1),
    ),
    case(
        "malformed generateEphemeralCert",
        &[Tamper(GEC, "malformed", None)],
        Metadata("generateEphemeralCert is not valid JSON"),
        Exact(1, 1),
    ),
    case(
        "truncated generateEphemeralCert",
        &[Tamper(GEC, "truncated", None)],
        Metadata("generateEphemeralCert is not valid JSON: EOF"),
        Exact(1, 1),
    ),
    case(
        "oversized generateEphemeralCert",
        &[Tamper(GEC, "oversized", None)],
        Http(TOO_LARGE),
        Exact(1, 1),
    ),
    case(
        "no ipAddresses",
        &[Tamper(CS, "drop-field", Some("ipAddresses"))],
        Metadata("no PRIMARY or PRIVATE address in ipAddresses"),
        Exact(1, 1),
    ),
    case(
        "no serverCaCert",
        &[Tamper(CS, "drop-field", Some("serverCaCert"))],
        Metadata("no server CA certificate (serverCaCert.cert)"),
        Exact(1, 1),
    ),
    case(
        "no serverCaCert.cert",
        &[Tamper(CS, "drop-field", Some("serverCaCert.cert"))],
        Metadata("no server CA certificate (serverCaCert.cert)"),
        Exact(1, 1),
    ),
    case(
        "no region",
        &[Tamper(CS, "drop-field", Some("region"))],
        Metadata("connectSettings has no region"),
        Exact(1, 1),
    ),
    case(
        "a serverCaCert that is not PEM",
        &[Tamper(CS, "ca-not-pem", None)],
        Metadata("serverCaCert.cert is not a list of PEM certificates"),
        Exact(1, 1),
    ),
    case(
        "no ephemeralCert",
        &[Tamper(GEC, "drop-field", Some("ephemeralCert"))],
        Metadata("without ephemeralCert.cert"),
        Exact(1, 1),
    ),
    case(
        "no ephemeralCert.cert",
        &[Tamper(GEC, "drop-field", Some("ephemeralCert.cert"))],
        Metadata("without ephemeralCert.cert"),
        Exact(1, 1),
    ),
    case(
        "an ephemeral certificate for another key",
        &[Tamper(GEC, "cert-other-key", None)],
        Metadata("ephemeralCert.cert is for another public key"),
        Exact(1, 1),
    ),
    case(
        "an ephemeral certificate already expired",
        &[Tamper(GEC, "cert-expired", None)],
        Metadata("ephemeralCert.cert is already expired"),
        Exact(1, 1),
    ),
];

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn cloud_sql_admin_api_faults_are_typed_errors_and_leave_nothing_broken() {
    let emu = Emulator::start(&[&format!("{INSTANCE},backend={{pg}}")]);
    let mut seen = Seen::default();
    let n = run_matrix(&emu, CLOUD_SQL, CLOUD_SQL_CASES, &mut seen).await;

    // 403 and 404 come from the name, not a fault: at once, Google's words.
    let (mut inst, connector) = support::connector(config(&emu)).await;
    for (name, counted, status, code, message) in [
        (
            "other:us-central1:db",
            "other:db",
            403,
            "PERMISSION_DENIED",
            "The client is not authorized to make this request.",
        ),
        (
            "proj:us-central1:nope",
            "proj:nope",
            404,
            "NOT_FOUND",
            "The Cloud SQL instance does not exist.",
        ),
    ] {
        match connect(&mut inst, connector, name, &superuser()).await {
            Err(Error::AdminApi(e)) => {
                assert_eq!(
                    (e.status, e.code.as_str(), e.message.as_str()),
                    (status, code, message)
                );
                seen.error(&Error::AdminApi(e));
            }
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(emu.count(CS, counted), 1, "{name}: not retried");
    }
    connect(&mut inst, connector, INSTANCE, &superuser())
        .await
        .unwrap();
    seen.assert_no_secrets(&emu, &[]);
    eprintln!("Cloud SQL Admin API fault cases: {}", n + 2);
}

const ALLOYDB_CASES: &[Case] = &[
    case(
        "503 on connectionInfo: retried, then works",
        &[Status(CI, 503, 1)],
        Works,
        Exact(2, 1),
    ),
    case(
        "429 on generateClientCertificate: not retried, a quota error",
        &[Status(GCC, 429, 10)],
        Quota,
        Exact(1, 1),
    ),
    case(
        "malformed connectionInfo",
        &[Tamper(CI, "malformed", None)],
        Metadata("connectionInfo is not valid JSON"),
        Exact(1, 1),
    ),
    case(
        "truncated generateClientCertificate",
        &[Tamper(GCC, "truncated", None)],
        Metadata("generateClientCertificate is not valid JSON: EOF"),
        Exact(1, 1),
    ),
    case(
        "oversized connectionInfo",
        &[Tamper(CI, "oversized", None)],
        Http(TOO_LARGE),
        FirstFails(1),
    ),
    case(
        "no ipAddress",
        &[Tamper(CI, "drop-field", Some("ipAddress"))],
        Metadata("no supported IP addresses"),
        Exact(1, 1),
    ),
    case(
        "no caCert",
        &[Tamper(GCC, "drop-field", Some("caCert"))],
        Metadata("without caCert"),
        Exact(1, 1),
    ),
    case(
        "no pemCertificateChain",
        &[Tamper(GCC, "drop-field", Some("pemCertificateChain"))],
        Metadata("without pemCertificateChain"),
        Exact(1, 1),
    ),
    case(
        "a caCert that is not PEM",
        &[Tamper(GCC, "ca-not-pem", None)],
        Metadata("caCert is not a PEM certificate"),
        Exact(1, 1),
    ),
    case(
        "a client certificate for another key",
        &[Tamper(GCC, "cert-other-key", None)],
        Metadata("pemCertificateChain[0] is for another public key"),
        Exact(1, 1),
    ),
    case(
        "a client certificate already expired",
        &[Tamper(GCC, "cert-expired", None)],
        Metadata("pemCertificateChain[0] is already expired"),
        Exact(1, 1),
    ),
];

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn alloydb_admin_api_faults_are_typed_errors_and_leave_nothing_broken() {
    let emu = Emulator::start(&[&format!("{URI},backend={{pg}}")]);
    let mut seen = Seen::default();
    let n = run_matrix(&emu, ALLOYDB, ALLOYDB_CASES, &mut seen).await;
    seen.assert_no_secrets(&emu, &[]);
    eprintln!("AlloyDB Admin API fault cases: {n}");
}

/// Persistent 429: ten connects in a row on one connector make one refresh
/// (its calls are not retried; the quota error empties the instance's rate
/// limiter), and ten fresh connectors make one call each, never five.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn a_persistent_429_costs_one_call_per_refresh_and_no_storm() {
    let emu = Emulator::start(&[&format!("{INSTANCE},backend={{pg}}")]);
    emu.fail(CS, 429, 1_000);
    emu.fail(GEC, 429, 1_000);
    let mut seen = Seen::default();

    let (mut inst, connector) = support::connector(config(&emu)).await;
    let mut quota = 0;
    let mut limited = 0;
    for i in 0..10 {
        match connect(&mut inst, connector, INSTANCE, &superuser()).await {
            Err(e @ Error::QuotaExceeded(_)) if i == 0 => {
                check("first connect", Outcome::Quota, &e);
                seen.error(&e);
                quota += 1;
            }
            Err(Error::RateLimited(m)) if i > 0 => {
                assert!(
                    m.contains("rate-limited") && m.contains("RESOURCE_EXHAUSTED"),
                    "{m}"
                );
                seen.0.push(m);
                limited += 1;
            }
            other => panic!("connect {i}: {other:?}"),
        }
    }
    let (settings, certs) = CLOUD_SQL.calls(&emu);
    assert_eq!((quota, limited), (1, 9));
    assert_eq!(settings, 1, "one refresh, its call not retried");
    assert!(certs <= 1, "{certs}");
    eprintln!(
        "10 connects on one connector under persistent 429: {settings} connectSettings + \
         {certs} generateEphemeralCert calls (1 quota error, 9 rate-limited)"
    );

    // A stampede of fresh connectors (each its own limiter): one call each.
    for i in 0..10 {
        let (mut inst, connector) = support::connector(config(&emu)).await;
        match connect(&mut inst, connector, INSTANCE, &superuser()).await {
            Err(e @ Error::QuotaExceeded(_)) => seen.error(&e),
            other => panic!("connector {i}: {other:?}"),
        }
    }
    let (settings2, certs2) = CLOUD_SQL.calls(&emu);
    assert_eq!(
        settings2 - settings,
        10,
        "one call per connector, no retries"
    );
    eprintln!(
        "10 fresh connectors under persistent 429: {} connectSettings + {} \
         generateEphemeralCert calls",
        settings2 - settings,
        certs2 - certs
    );
    seen.assert_no_secrets(&emu, &[]);
}

/// Eight connects at once on a cold connector: one refresh. The host runs
/// one call into a component instance at a time, so the first connect
/// refreshes and the other seven find its certificate; the cache's own
/// lock (several threads in one process) is unit-tested in `cache::memory`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn concurrent_connects_on_one_connector_make_one_refresh() {
    let emu = Emulator::start(&[&format!("{INSTANCE},backend={{pg}}")]);
    let (inst, connector) = support::connector(config(&emu)).await;
    let inst = Arc::new(tokio::sync::Mutex::new(inst));
    let start = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (inst, start) = (inst.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                let mut inst = inst.lock().await;
                connect(&mut inst, connector, INSTANCE, &superuser()).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(CLOUD_SQL.calls(&emu), (1, 1));
}

/// A connector from `config` in a fresh instance of the
/// `connector-component-kv` build, on the host's store, as a serverless host
/// makes one per request. The store outlives the emulator: each test that
/// uses it has an instance name of its own.
async fn kv_connector(config: Config) -> (ConnectorInstance, ResourceAny) {
    support::kv_connector(Config {
        store_bucket: Some("default".into()),
        ..config
    })
    .await
}

/// A broken instance behind a serverless host, which makes a fresh connector
/// (with a fresh rate limiter) per request: the Admin API's refusals are
/// shared through the host's store, so ten requests cost the burst of two
/// refreshes for an instance that does not exist (404), and one under a
/// persistent 429, then fail at once, rate-limited, naming Google's refusal.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn refusals_are_rate_limited_across_fresh_instances_sharing_a_store() {
    let quota = "proj:us-central1:kv-quota";
    let emu = Emulator::start(&[&format!("{quota},backend={{pg}}")]);
    let mut seen = Seen::default();
    for (name, status, code, refreshes) in [
        ("proj:us-central1:kv-missing", 404, "NOT_FOUND", 2),
        (quota, 429, "RESOURCE_EXHAUSTED", 1),
    ] {
        if status == 429 {
            emu.fail(CS, 429, 1_000);
        }
        let project_instance = name.replacen(":us-central1", "", 1);
        let mut limited = 0;
        for i in 0..10 {
            let (mut inst, connector) = kv_connector(config(&emu)).await;
            match connect(&mut inst, connector, name, &superuser()).await {
                Err(e @ (Error::AdminApi(_) | Error::QuotaExceeded(_))) if i < refreshes => {
                    assert!(format!("{e:?}").contains(code), "{e:?}");
                    seen.error(&e);
                }
                Err(Error::RateLimited(m)) if i >= refreshes => {
                    assert!(m.contains("rate-limited") && m.contains(code), "{m}");
                    seen.0.push(m);
                    limited += 1;
                }
                other => panic!("{name}, request {i}: {other:?}"),
            }
        }
        let calls = emu.count(CS, &project_instance);
        eprintln!(
            "10 fresh instances sharing a store under a persistent {status}: {calls} \
             connectSettings calls, {limited} rate-limited at once"
        );
        assert_eq!((calls, limited), (refreshes as u64, 10 - refreshes));
    }
    seen.assert_no_secrets(&emu, &[]);
}

/// Eight component instances at once, cold, sharing the host's store (the
/// `connector-component-kv` build), as a serverless host runs concurrent
/// requests: one refresh, the others wait for its entry.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn concurrent_instances_sharing_a_store_make_one_refresh() {
    // Its own instance name: the host's store outlives the emulator.
    let name = "proj:us-central1:hardening-kv";
    let emu = Emulator::start(&[&format!("{name},backend={{pg}}")]);
    let start = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let start = start.clone();
            let config = config(&emu);
            tokio::spawn(async move {
                let (mut inst, connector) = kv_connector(config).await;
                start.wait().await;
                connect(&mut inst, connector, name, &superuser()).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        (
            emu.count(CS, "proj:hardening-kv"),
            emu.count(GEC, "proj:hardening-kv")
        ),
        (1, 1)
    );
}

/// A dial that fails (the proxy accepts and closes at once) marks the
/// certificate stale: exactly one refresh follows, and only one.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn a_failed_dial_forces_exactly_one_refresh() {
    let emu = Emulator::start(&[&format!("{INSTANCE},backend={{pg}}")]);
    let (mut inst, connector) = support::connector(config(&emu)).await;
    connect(&mut inst, connector, INSTANCE, &superuser())
        .await
        .unwrap();
    assert_eq!(CLOUD_SQL.calls(&emu), (1, 1));

    emu.set_proxy_fault(INSTANCE, "refuse");
    let e = connect(&mut inst, connector, INSTANCE, &superuser())
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Tls(_) | Error::Dial(_) | Error::Io(_)),
        "{e:?}"
    );
    assert_eq!(
        CLOUD_SQL.calls(&emu),
        (1, 1),
        "the failed dial used the cache"
    );

    emu.set_proxy_fault(INSTANCE, "normal");
    connect(&mut inst, connector, INSTANCE, &superuser())
        .await
        .unwrap();
    assert_eq!(CLOUD_SQL.calls(&emu), (2, 2), "exactly one refresh");
    connect(&mut inst, connector, INSTANCE, &superuser())
        .await
        .unwrap();
    assert_eq!(CLOUD_SQL.calls(&emu), (2, 2), "and then the cache again");
}

/// Refreshes forced by failed dials: two go through (the burst), the third
/// is refused at once with a typed rate-limit error and no Admin API call,
/// even once the instance is healthy again, until the bucket refills (one
/// per 30 s; the refill is unit-tested on the limiter with its own clock).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn refreshes_are_rate_limited_burst_two_then_one_per_thirty_seconds() {
    let emu = Emulator::start(&[&format!("{INSTANCE},backend={{pg}}")]);
    let (mut inst, connector) = support::connector(config(&emu)).await;
    let mut seen = Seen::default();
    connect(&mut inst, connector, INSTANCE, &superuser())
        .await
        .unwrap();

    emu.set_proxy_fault(INSTANCE, "refuse");
    // Cached certificate, failed dial; then a refresh (the burst's second)
    // and another failed dial.
    for _ in 0..2 {
        let e = connect(&mut inst, connector, INSTANCE, &superuser())
            .await
            .unwrap_err();
        assert!(!matches!(e, Error::RateLimited(_)), "{e:?}");
        seen.error(&e);
    }
    assert_eq!(CLOUD_SQL.calls(&emu), (2, 2));

    for healthy in [false, true] {
        if healthy {
            emu.set_proxy_fault(INSTANCE, "normal");
        }
        match connect(&mut inst, connector, INSTANCE, &superuser()).await {
            Err(Error::RateLimited(m)) => {
                assert!(
                    m.contains(INSTANCE)
                        && m.contains("burst 2, one per 30 s")
                        && m.contains("retry in"),
                    "{m}"
                );
                seen.0.push(m);
            }
            other => panic!("third refresh (healthy {healthy}): {other:?}"),
        }
    }
    assert_eq!(
        CLOUD_SQL.calls(&emu),
        (2, 2),
        "two refreshes' worth of calls"
    );

    // Another connector has its own bucket.
    let (mut inst2, other) = support::connector(config(&emu)).await;
    connect(&mut inst2, other, INSTANCE, &superuser())
        .await
        .unwrap();
    assert_eq!(CLOUD_SQL.calls(&emu), (3, 3));
    seen.assert_no_secrets(&emu, &[]);
}

/// No token, private key or JWT in any error, in the example guest's
/// stderr, or in the emulator's log, across credential kinds and faults.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn no_token_key_or_jwt_appears_in_errors_or_logs() {
    let emu = Emulator::start(&[
        &format!("{INSTANCE},backend={{pg}}"),
        &format!("{URI},backend={{pg}}"),
    ]);
    let mut seen = Seen::default();
    let caller_api = "ya29.caller-api-token-never-issued-0123456789";
    let caller_login = "ya29.caller-login-token-never-issued-0123456789";

    // A caller's own tokens that Google refuses (401), for both services.
    let bad_tokens = Config {
        credentials: Some(Credentials::AccessToken(AccessTokens {
            api_token: caller_api.into(),
            login_token: Some(caller_login.into()),
        })),
        enable_iam_auth: true,
        ..config(&emu)
    };
    for (instance, login) in [(INSTANCE, superuser()), (URI, app())] {
        let (mut inst, c) = support::connector(bad_tokens.clone()).await;
        match connect(&mut inst, c, instance, &login).await {
            Err(e @ Error::AdminApi(_)) => seen.error(&e),
            other => panic!("{instance}: {other:?}"),
        }
    }

    // Each credential kind through faults that end in errors: the tokens
    // and assertions are then in flight when the error is made.
    let issued = emu.metadata_token("cloud-platform");
    let kinds = [
        (
            "service account",
            Credentials::Json(emu.service_account_json()),
        ),
        (
            "authorized user",
            Credentials::Json(emu.authorized_user_json()),
        ),
        (
            "caller's token",
            Credentials::AccessToken(AccessTokens {
                api_token: issued.clone(),
                login_token: None,
            }),
        ),
    ];
    for (kind, credentials) in kinds {
        for (fault, iam) in [
            (Fault::Status(CS, 429, 1), false),
            (Fault::Status(GEC, 503, 5), true),
            (Fault::Tamper(CS, "malformed", None), false),
            (Fault::Tamper(GEC, "cert-other-key", None), true),
            (Fault::Tamper(CI, "truncated", None), false),
        ] {
            let cfg = Config {
                credentials: Some(credentials.clone()),
                enable_iam_auth: iam,
                ..config(&emu)
            };
            let (mut inst, c) = support::connector(cfg).await;
            set(&emu, fault);
            let instance = if matches!(fault, Fault::Tamper(CI, ..)) {
                URI
            } else {
                INSTANCE
            };
            let login = if instance == URI { app() } else { superuser() };
            match connect(&mut inst, c, instance, &login).await {
                Err(e) => seen.error(&e),
                Ok(()) => panic!("{kind} {fault:?}: worked"),
            }
            emu.reset_faults();
        }
    }

    // The example guest prints its errors: its stderr is a log too.
    emu.fail(CS, 429, 1);
    let stderr = failing_pg_query(&emu, &["--access-token", &issued]).await;
    assert!(stderr.contains("RESOURCE_EXHAUSTED"), "{stderr}");
    seen.0.push(stderr);
    emu.tamper(GEC, "malformed", None, 1);
    let creds = ["--credentials-file", "/creds/service-account.json"];
    let stderr = failing_pg_query(&emu, &creds).await;
    assert!(
        stderr.contains("generateEphemeralCert is not valid JSON"),
        "{stderr}"
    );
    seen.0.push(stderr);

    assert!(seen.0.len() >= 15, "{}", seen.0.len());
    seen.assert_no_secrets(&emu, &[caller_api, caller_login]);
}

/// The stderr of the pg-query example run with `credentials` against
/// `emu` (its state dir at /creds), which must fail.
async fn failing_pg_query(emu: &Emulator, credentials: &[&str]) -> String {
    let endpoint = emu.admin_endpoint();
    let args = [
        &["--admin-endpoint", endpoint.as_str()],
        credentials,
        &[INSTANCE, "SELECT 1"],
    ];
    let out = host()
        .run_command(
            &pg_query(),
            &CommandOptions {
                args: args.concat().into_iter().map(String::from).collect(),
                dirs: vec![(emu.state_dir.clone(), "/creds".into())],
                ..CommandOptions::default()
            },
        )
        .await
        .unwrap();
    assert!(!out.success, "{}", out.stdout);
    out.stderr
}

/// The secrets check fails on what it must catch.
#[test]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
fn the_secrets_check_catches_tokens_keys_and_jwts() {
    fn caught(text: &str, secrets: &[&str]) -> bool {
        std::panic::catch_unwind(|| assert_no_secrets(text, secrets)).is_err()
    }
    let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n";
    let jwt = "assertion=eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJhQGIifQ.c2lnbmF0dXJl&x=1";
    assert!(caught(jwt, &[]));
    assert!(caught("Bearer ya29.a0Af-secret", &[]));
    assert!(caught("token s3cr3t-t0k3n in a message", &["s3cr3t-t0k3n"]));
    // One line of a key is enough.
    assert!(caught("… MIIEvQIBADANBgkqhkiG9w0BAQEFAASC …", &[key]));
    assert!(caught("-----BEGIN RSA PRIVATE KEY-----", &[]));
    // Clean text passes, including a lone `eyJ`, a JWT header alone and dotted words.
    assert!(!caught(
        "Admin API connectSettings for p:r:i failed with HTTP 429 RESOURCE_EXHAUSTED: eyJ. a.b.c",
        &["s3cr3t-t0k3n", key]
    ));
    assert!(!caught(
        "a version like 1.2.3, eyJhbGciOiJSUzI1NiJ9 and one dot.",
        &[]
    ));
}
