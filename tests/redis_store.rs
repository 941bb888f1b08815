//! Many hosts, one store: the cross-request cache on Redis, shared by several
//! host *processes*, as a real deployment runs (Spin's runtime config offers
//! Redis for its key-value stores; `gcp-db-host serve --redis URL` here).
//!
//! Each test starts three `gcp-db-host serve --keyvalue --redis …` processes
//! (`$GCPDB_HOST`) serving examples/messages-http (`$GCPDB_MESSAGES_HTTP`, a
//! fresh instance per request) against one Redis (`$GCPDB_TEST_REDIS`, or
//! a server of the test's own where it stops it), the emulator and the test
//! PostgreSQL, and spreads requests over the three. They show across
//! processes what tests/serverless.rs and tests/hardening_admin.rs show in
//! one: one certificate refresh per certificate lifetime, the Admin API's
//! refusals shared, a lease holder that dies delaying the others at most one
//! lease wait, and a store that fails costing refreshes, never a request.
//! Figures are printed, not asserted.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gcp_db_host::keyvalue::CONNECTOR_BUCKET;
use gcp_db_host::redis_store::RedisServer;
use gcp_db_host::{RedisOptions, RedisStore};
use serde_json::Value;
use support::{artifact, assert_no_secrets, Emulator};

const CS: &str = "connectSettings";
const GEC: &str = "generateEphemeralCert";
const STORE_SECRET: &str = "redis-e2e: a secret from outside the store";
const DB_PASS: &str = "app-password";

/// One test at a time: each runs three host processes and up to 50
/// concurrent instances; side by side on two cores they would slow each
/// other past the lease wait and measure each other.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// A key prefix of this test's own on a shared Redis.
fn prefix(test: &str) -> String {
    format!("redis-e2e-{test}-{}", std::process::id())
}

/// `gcp-db-host serve` in a process of its own, killed on drop.
struct HostProcess {
    child: Child,
    addr: SocketAddr,
    /// Its stderr so far (the host's and the guests' lines).
    log: Arc<Mutex<String>>,
}

impl HostProcess {
    /// Starts `count` host processes serving messages-http for `instance`
    /// with the store on `redis` under `prefix`, and waits until each
    /// listens (compiling the component may take minutes on a cold cache).
    fn start_many(
        count: usize,
        redis: &str,
        prefix: &str,
        emu: &Emulator,
        instance: &str,
    ) -> Vec<HostProcess> {
        let app = artifact("GCPDB_MESSAGES_HTTP");
        let admin = emu.admin_endpoint();
        let env = [
            ("INSTANCE", instance),
            ("DB_USER", "app"),
            ("DB_PASS", DB_PASS),
            ("GCP_DB_ADMIN_ENDPOINT", &admin),
            ("GCP_DB_ALLOYDB_ADMIN_ENDPOINT", &admin),
            (
                "GOOGLE_APPLICATION_CREDENTIALS",
                "/creds/service-account.json",
            ),
            ("GCP_DB_KV_BUCKET", CONNECTOR_BUCKET),
            ("GCP_DB_STORE_SECRET", STORE_SECRET),
        ];
        let started: Vec<_> = (0..count)
            .map(|_| {
                let mut cmd = Command::new(artifact("GCPDB_HOST"));
                cmd.args(["serve", "--keyvalue", "--redis", redis])
                    .args(["--redis-prefix", prefix, "--addr", "127.0.0.1:0"])
                    .arg("--dir")
                    .arg(format!("{}::/creds", emu.state_dir.display()));
                for (k, v) in env {
                    cmd.arg("--env").arg(format!("{k}={v}"));
                }
                let mut child = cmd
                    .arg(&app)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start gcp-db-host serve");
                let (tx, rx) = std::sync::mpsc::channel();
                let log = Arc::new(Mutex::new(String::new()));
                let sink = log.clone();
                let stderr = BufReader::new(child.stderr.take().unwrap());
                std::thread::spawn(move || {
                    for line in stderr.lines().map_while(Result::ok) {
                        if let Some(addr) = line.strip_prefix("serving http://") {
                            let _ = tx.send(addr.to_string());
                        }
                        let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                        log.push_str(&line);
                        log.push('\n');
                    }
                });
                (child, rx, log)
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(300);
        started
            .into_iter()
            .map(|(mut child, rx, log)| {
                let left = deadline.saturating_duration_since(Instant::now());
                let addr = match rx.recv_timeout(left) {
                    Ok(addr) => addr.parse().unwrap(),
                    Err(_) => {
                        let _ = child.kill();
                        let status = child.wait().unwrap();
                        let log = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        panic!("gcp-db-host serve did not listen within 300 s ({status}):\n{log}");
                    }
                };
                HostProcess { child, addr, log }
            })
            .collect()
    }

    /// SIGKILL, as a machine or process dying would.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One answer: status, JSON, how the connect got its certificate, latency.
#[derive(Debug)]
struct Answer {
    status: u16,
    json: Value,
    certificate: String,
    elapsed: Duration,
}

/// `GET /` with a real HTTP client (on a blocking thread), or why it got no
/// answer (the server died).
async fn try_get(server: SocketAddr) -> Result<Answer, String> {
    let url = format!("http://{server}/");
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        let mut resp = agent.get(&url).call().map_err(|e| format!("{url}: {e}"))?;
        let certificate = resp
            .headers()
            .get("x-certificate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        Ok(Answer {
            status: resp.status().as_u16(),
            json: serde_json::from_str(&text).map_err(|e| format!("{text:?}: {e}"))?,
            certificate,
            elapsed: started.elapsed(),
        })
    })
    .await
    .unwrap()
}

async fn get(server: SocketAddr) -> Answer {
    try_get(server).await.unwrap_or_else(|e| panic!("{e}"))
}

/// `GET /` on each of `servers`, all at once.
async fn get_all(servers: Vec<SocketAddr>) -> Vec<Answer> {
    let tasks: Vec<_> = servers.into_iter().map(|s| tokio::spawn(get(s))).collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    answers
}

/// `n` requests by `workers` concurrent clients, request `i` to
/// `hosts[i % len]`; every one must be a 200 listing the messages.
async fn run_requests(hosts: &[SocketAddr], n: usize, workers: usize) -> Vec<Answer> {
    let next = Arc::new(AtomicUsize::new(0));
    let hosts: Arc<[SocketAddr]> = hosts.into();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (next, hosts) = (next.clone(), hosts.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        return mine;
                    }
                    let a = get(hosts[i % hosts.len()]).await;
                    assert_eq!(a.status, 200, "request {i}: {}", a.json);
                    assert!(a.json.is_array(), "request {i}: {}", a.json);
                    mine.push(a);
                }
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    answers
}

fn count_certificates(answers: &[Answer], how: &str) -> usize {
    answers.iter().filter(|a| a.certificate == how).count()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, answers: &[Answer], admin_calls: u64) {
    let mut times: Vec<Duration> = answers.iter().map(|a| a.elapsed).collect();
    times.sort();
    eprintln!(
        "{what}: {} requests, median {:.1} ms, p99 {:.1} ms, {admin_calls} Admin API calls \
         ({:.0} per 1000 requests)",
        times.len(),
        percentile(&times, 0.5).as_secs_f64() * 1000.0,
        percentile(&times, 0.99).as_secs_f64() * 1000.0,
        admin_calls as f64 * 1000.0 / times.len() as f64,
    );
}

fn admin_calls(emu: &Emulator, project_instance: &str) -> u64 {
    emu.count(CS, project_instance) + emu.count(GEC, project_instance)
}

/// The test's view of the store the hosts share.
fn store_view(redis: &str, prefix: &str) -> RedisStore {
    let options = RedisOptions {
        prefix: prefix.into(),
        ..RedisOptions::default()
    };
    RedisStore::open(redis, options).unwrap()
}

/// Panics if a lease is still held: each `…/lease` key must be gone, or its
/// `…/lease-until` deadline past.
async fn assert_no_live_lease(store: &RedisStore) {
    let keys = store.keys(CONNECTOR_BUCKET).await.unwrap();
    assert!(
        keys.iter().any(|k| k.ends_with("/native")),
        "no entry in the store: {keys:?}"
    );
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for lease in keys.iter().filter(|k| k.ends_with("/lease")) {
        let until = store
            .get(CONNECTOR_BUCKET, &format!("{lease}-until"))
            .await
            .unwrap()
            .and_then(|v| String::from_utf8(v).ok()?.parse::<u64>().ok());
        assert!(
            until.is_some_and(|ms| ms < now_ms),
            "a live lease is left behind: {lease} until {until:?} (now {now_ms})"
        );
    }
}

/// The host processes' logs hold none of the app's secrets.
fn assert_logs_clean(hosts: &[HostProcess], emu: &Emulator) {
    let key = emu.service_account_key_pem();
    for h in hosts {
        assert_no_secrets(&h.log(), &[STORE_SECRET, DB_PASS, &key]);
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the builds, the emulator, PostgreSQL and the Redis scripts/test starts"]
async fn three_host_processes_share_one_refresh_through_redis() {
    let _one = one_at_a_time().await;
    let (name, key) = ("proj:us-central1:redis-shared", "proj:redis-shared");
    let emu = Emulator::start(&[&format!("{name},backend={{pg}}")]);
    let (redis, prefix) = (support::redis(), prefix("shared"));
    let hosts = HostProcess::start_many(3, &redis, &prefix, &emu, name);
    let addrs: Vec<SocketAddr> = hosts.iter().map(|h| h.addr).collect();

    // 50 fresh instances at once on a cold store, spread over the three
    // processes: one refreshes under the lease, the others wait for its entry.
    let cold = get_all((0..50).map(|i| addrs[i % 3]).collect()).await;
    for (i, a) in cold.iter().enumerate() {
        assert_eq!(a.status, 200, "cold request {i}: {}", a.json);
    }
    assert_eq!(
        (emu.count(CS, key), emu.count(GEC, key)),
        (1, 1),
        "50 cold concurrent requests over 3 processes, one refresh; more means some \
         instance took the lease for lapsed (src/cache/store.rs, Lease)"
    );
    assert_eq!(count_certificates(&cold, "refreshed"), 1);
    assert_eq!(count_certificates(&cold, "store"), 49);
    report(
        "50 cold concurrent requests, 3 host processes",
        &cold,
        admin_calls(&emu, key),
    );

    // Then 1000 more, each in a fresh instance of any of the processes.
    let warm = run_requests(&addrs, 1000, 4).await;
    assert_eq!(count_certificates(&warm, "store"), 1000);
    assert_eq!(
        (emu.count(CS, key), emu.count(GEC, key)),
        (1, 1),
        "1050 requests over 3 processes, one certificate refresh in all"
    );
    report(
        "1000 requests, 3 host processes sharing Redis",
        &warm,
        admin_calls(&emu, key) - 2,
    );
    assert_no_live_lease(&store_view(&redis, &prefix)).await;
    assert_logs_clean(&hosts, &emu);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the builds, the emulator, PostgreSQL and the Redis scripts/test starts"]
async fn refusals_are_rate_limited_across_host_processes() {
    let _one = one_at_a_time().await;
    let quota = "proj:us-central1:redis-quota";
    let emu = Emulator::start(&[&format!("{quota},backend={{pg}}")]);
    let redis = support::redis();
    for (name, status, code, refreshes) in [
        ("proj:us-central1:redis-missing", 404, "NOT_FOUND", 2),
        (quota, 429, "RESOURCE_EXHAUSTED", 1),
    ] {
        if status == 429 {
            emu.fail(CS, 429, 1_000);
        }
        let project_instance = name.replacen(":us-central1", "", 1);
        let prefix = prefix(&format!("refusals-{status}"));
        let hosts = HostProcess::start_many(3, &redis, &prefix, &emu, name);
        let mut limited = 0;
        // One after the other, round the three processes.
        for i in 0..12 {
            let a = get(hosts[i % 3].addr).await;
            assert_eq!(a.status, 500, "{name}, request {i}: {}", a.json);
            let error = a.json["error"].as_str().unwrap_or_default();
            assert!(error.contains(code), "{name}, request {i}: {error}");
            if i < refreshes {
                assert!(
                    !error.contains("rate-limited"),
                    "{name}, request {i}: {error}"
                );
            } else {
                assert!(
                    error.contains("rate-limited"),
                    "{name}, request {i}: {error}"
                );
                limited += 1;
            }
        }
        let calls = emu.count(CS, &project_instance);
        eprintln!(
            "12 requests over 3 host processes sharing Redis, under a persistent {status}: \
             {calls} connectSettings calls, {limited} rate-limited at once"
        );
        assert_eq!((calls, limited), (refreshes as u64, 12 - refreshes));
        assert_logs_clean(&hosts, &emu);
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the builds, the emulator, PostgreSQL and the Redis scripts/test starts"]
async fn a_killed_lease_holder_delays_the_others_at_most_one_lease_wait() {
    let _one = one_at_a_time().await;
    let (name, key) = ("proj:us-central1:redis-lease", "proj:redis-lease");
    let emu = Emulator::start(&[&format!("{name},backend={{pg}}")]);
    let (redis, prefix) = (support::redis(), prefix("lease"));
    let store = store_view(&redis, &prefix);
    let mut hosts = HostProcess::start_many(3, &redis, &prefix, &emu, name);

    // The first process takes the lease and refreshes; its certificate call
    // hangs in the emulator, so it certainly holds the lease when killed.
    emu.slow(GEC, 120_000);
    let holder = tokio::spawn(try_get(hosts[0].addr));
    let deadline = Instant::now() + Duration::from_secs(60);
    let lease = loop {
        let keys = store.keys(CONNECTOR_BUCKET).await.unwrap_or_default();
        let lease = keys.into_iter().find(|k| k.ends_with("/native/lease"));
        if let Some(lease) = lease.filter(|_| emu.count(GEC, key) == 1) {
            break lease;
        }
        assert!(
            Instant::now() < deadline,
            "the first request never took the lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    hosts[0].kill();
    let killed = Instant::now();
    let lost = holder.await.unwrap();
    assert!(lost.is_err(), "the killed process answered: {lost:?}");
    emu.reset_faults();
    assert!(store.exists(CONNECTOR_BUCKET, &lease).await.unwrap());

    // Six requests to the two others: they find the dead holder's lease,
    // wait until it lapses, and one of them takes over.
    let others = vec![hosts[1].addr, hosts[2].addr];
    let answers = get_all((0..6).map(|i| others[i % 2]).collect()).await;
    let mut waited: Vec<Duration> = Vec::new();
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a.status, 200, "request {i} after the kill: {}", a.json);
        assert!(
            a.certificate == "refreshed" || a.certificate == "store",
            "{a:?}"
        );
        waited.push(a.elapsed);
    }
    let refreshed = count_certificates(&answers, "refreshed");
    // One of them takes over the lapsed lease; the others wait for its entry.
    assert_eq!(refreshed, 1, "takers of the dead lease");
    // Every refresh is an answered request, but the killed one's.
    assert_eq!(emu.count(GEC, key), 1 + refreshed as u64);
    waited.sort();
    eprintln!(
        "a lease holder killed: 6 requests on the other processes answered {:.2}–{:.2} s after \
         they were sent ({:.2} s after the kill at most; lease wait {} s); {refreshed} took over \
         the refresh, {} loaded its entry",
        waited[0].as_secs_f64(),
        waited[waited.len() - 1].as_secs_f64(),
        killed.elapsed().as_secs_f64(),
        gcp_db_connector::LEASE_WAIT.as_secs(),
        6 - refreshed,
    );

    // From now on the store serves everyone, and no lease is left held.
    let after = run_requests(&others, 20, 2).await;
    assert_eq!(count_certificates(&after, "store"), 20);
    assert_eq!(emu.count(GEC, key), 1 + refreshed as u64);
    assert_no_live_lease(&store).await;
    assert_logs_clean(&hosts[1..], &emu);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the builds, the emulator, PostgreSQL and redis-server"]
async fn a_stopped_redis_costs_refreshes_but_no_request() {
    let _one = one_at_a_time().await;
    let (name, key) = ("proj:us-central1:redis-down", "proj:redis-down");
    let emu = Emulator::start(&[&format!("{name},backend={{pg}}")]);
    // A server of this test's own, since it stops it.
    let mut redis = RedisServer::start().expect("redis-server (scripts/test installs it)");
    let prefix = prefix("down");
    let hosts = HostProcess::start_many(3, &redis.url(), &prefix, &emu, name);
    let addrs: Vec<SocketAddr> = hosts.iter().map(|h| h.addr).collect();
    let mut all = Vec::new();

    // Up: one refresh, then the store.
    let up = run_requests(&addrs, 1, 1).await;
    assert_eq!(up[0].certificate, "refreshed");
    let warm = run_requests(&addrs, 9, 3).await;
    assert_eq!(count_certificates(&warm, "store"), 9);
    all.extend(up);
    all.extend(warm);

    // Stopped mid-run: four clients keep going; Redis dies under them
    // after the first eight answers.
    let n = 40;
    let done = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..4)
        .map(|w| {
            let (done, addrs) = (done.clone(), addrs.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in (w..n).step_by(4) {
                    let a = get(addrs[i % 3]).await;
                    assert_eq!(a.status, 200, "request {i} around the stop: {}", a.json);
                    done.fetch_add(1, Ordering::SeqCst);
                    mine.push(a);
                }
                mine
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while done.load(Ordering::SeqCst) < 8 {
        assert!(Instant::now() < deadline, "no 8 answers in 120 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    redis.stop();
    let stopped_after = done.load(Ordering::SeqCst);
    let mut around = Vec::new();
    for t in tasks {
        around.extend(t.await.unwrap());
    }
    // Down: every request refreshes, and succeeds.
    let down = run_requests(&addrs, 12, 3).await;
    assert_eq!(count_certificates(&down, "refreshed"), 12);
    let refreshes_around = count_certificates(&around, "refreshed");
    eprintln!(
        "Redis stopped after {stopped_after} of {n} requests: all {n} answered 200, \
         {refreshes_around} refreshed; then 12 more with Redis down, all refreshed"
    );
    report("with Redis down", &down, 0);

    // Back (empty): a refresh fills it again, and each process, once it has
    // reconnected (after its pause), is served by the store again.
    redis.restart().unwrap();
    let mut back = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for addr in &addrs {
        loop {
            let a = get(*addr).await;
            assert_eq!(a.status, 200, "after the restart: {}", a.json);
            let served = a.certificate == "store";
            back.push(a);
            if served {
                break;
            }
            assert!(
                Instant::now() < deadline && back.len() < 100,
                "the store never served {addr} again after Redis came back"
            );
        }
    }
    let again = run_requests(&addrs, 9, 3).await;
    assert_eq!(count_certificates(&again, "store"), 9);
    eprintln!(
        "Redis back: {} request(s) until the store served each process again",
        back.len()
    );

    all.extend(around);
    all.extend(down);
    all.extend(back);
    all.extend(again);
    // Every refresh was a request that got its answer.
    assert_eq!(
        emu.count(GEC, key),
        count_certificates(&all, "refreshed") as u64
    );
    report(
        "the whole run, Redis stopped and restarted",
        &all,
        admin_calls(&emu, key),
    );
    assert_logs_clean(&hosts, &emu);
}
