//! Serverless end to end: the example `wasi:http` handlers served by the
//! embedded host with a fresh component instance per request (as `wasmtime
//! serve` and Spin do), the emulator and a real PostgreSQL, and the
//! cross-request cache in the host's shared `wasi:keyvalue` store.
//!
//! (b) `examples/messages-http` uses the Rust library; (c)
//! `examples/messages-composed` imports `gcp:db-connector/connector` and is
//! composed with the connector component here. Each takes 50 concurrent
//! requests on a cold store, then 200 sequential ones, all checked, and the
//! emulator must have seen one certificate refresh. The figures (time per
//! request, Admin API calls per 1000 requests) are printed, not asserted.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use gcp_db_host::{ServeOptions, Server};
use serde_json::Value;
use support::{artifact, host, Emulator};

/// The instance of a test: its own name, because the host's store (one per
/// test binary) outlives each test's emulator.
fn instance(test: &str) -> (String, String) {
    (format!("proj:us-central1:{test}"), format!("proj:{test}"))
}

/// Serves `component` for `instance` as `app`/`app-password`; `bucket` is
/// the store the guest opens ("" for none).
async fn serve(emu: &Emulator, component: &Path, instance: &str, bucket: &str) -> Server {
    let admin = emu.admin_endpoint();
    let env = [
        ("INSTANCE", instance),
        ("DB_USER", "app"),
        ("DB_PASS", "app-password"),
        ("GCP_DB_ADMIN_ENDPOINT", &admin),
        ("GCP_DB_ALLOYDB_ADMIN_ENDPOINT", &admin),
        (
            "GOOGLE_APPLICATION_CREDENTIALS",
            "/creds/service-account.json",
        ),
        ("GCP_DB_KV_BUCKET", bucket),
    ];
    host()
        .serve(
            component,
            ServeOptions {
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                dirs: vec![(emu.state_dir.clone(), "/creds".into())],
                keyvalue: true,
                ..ServeOptions::default()
            },
        )
        .await
        .unwrap()
}

/// One answer: status, JSON, how the connect got its certificate, latency.
struct Answer {
    status: u16,
    json: Value,
    certificate: String,
    elapsed: Duration,
}

/// A real HTTP request (on a blocking thread: ureq is synchronous).
async fn request(server: SocketAddr, post: Option<String>) -> Answer {
    let url = format!("http://{server}/");
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        let mut resp = match post {
            Some(body) => agent.post(&url).send(body),
            None => agent.get(&url).call(),
        }
        .unwrap_or_else(|e| panic!("{url}: {e}"));
        let certificate = resp
            .headers()
            .get("x-certificate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp.body_mut().read_to_string().unwrap();
        Answer {
            status: resp.status().as_u16(),
            json: serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}")),
            certificate,
            elapsed: started.elapsed(),
        }
    })
    .await
    .unwrap()
}

/// The first request refreshes; the next `n`, each in a fresh instance, load
/// the certificate from the store.
async fn one_refresh_then_the_store(server: &Server, n: usize) {
    let first = request(server.addr(), None).await;
    assert_eq!(
        (first.status, first.certificate.as_str()),
        (200, "refreshed"),
        "{}",
        first.json
    );
    for _ in 0..n {
        let a = request(server.addr(), None).await;
        assert_eq!(
            (a.status, a.certificate.as_str()),
            (200, "store"),
            "{}",
            a.json
        );
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut times: Vec<Duration>, admin_calls: u64, requests: usize) {
    times.sort();
    eprintln!(
        "{what}: {requests} requests, median {:.1} ms, p99 {:.1} ms, {admin_calls} Admin API calls \
         ({:.0} per 1000 requests)",
        percentile(&times, 0.5).as_secs_f64() * 1000.0,
        percentile(&times, 0.99).as_secs_f64() * 1000.0,
        admin_calls as f64 * 1000.0 / requests as f64,
    );
}

fn admin_calls(emu: &Emulator, project_instance: &str) -> u64 {
    emu.count("connectSettings", project_instance)
        + emu.count("generateEphemeralCert", project_instance)
}

/// 50 concurrent requests on a cold store, then 200 sequential ones, each
/// checked; one certificate refresh in all.
async fn load(what: &str, component: &Path) {
    let (name, key) = instance(what);
    let emu = Emulator::start(&[&format!("{name},backend={{pg}}")]);
    let server = serve(&emu, component, &name, "default").await;
    let tag = format!("{what}-{}", std::process::id());

    // Concurrent, cold: one instance refreshes, the others wait for its entry.
    let concurrent: Vec<_> = (0..50)
        .map(|i| {
            let body = (i % 2 == 0).then(|| format!("{tag} concurrent {i}"));
            request(server.addr(), body)
        })
        .collect();
    let mut posted = Vec::new();
    for (i, a) in futures_join(concurrent).await.into_iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(a.status, 201, "{i}: {}", a.json);
            assert!(
                a.json["id"]
                    .as_str()
                    .is_some_and(|id| id.parse::<u64>().is_ok()),
                "{}",
                a.json
            );
            posted.push(format!("{tag} concurrent {i}"));
        } else {
            assert_eq!(a.status, 200, "{i}: {}", a.json);
            assert!(a.json.is_array(), "{}", a.json);
        }
    }
    assert_eq!(
        admin_calls(&emu, &key),
        2,
        "50 cold concurrent requests, one refresh"
    );

    // Sequential, warm store: every instance loads the certificate.
    let mut times = Vec::new();
    for i in 0..200 {
        let post = (i % 4 == 0).then(|| format!("{tag} sequential {i}"));
        let a = request(server.addr(), post.clone()).await;
        assert_eq!(
            a.status,
            if post.is_some() { 201 } else { 200 },
            "{i}: {}",
            a.json
        );
        assert_eq!(a.certificate, "store", "request {i} refreshed");
        posted.extend(post);
        times.push(a.elapsed);
    }
    let all = request(server.addr(), None).await;
    let bodies: Vec<&str> = all
        .json
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["body"].as_str())
        .collect();
    for p in &posted {
        assert_eq!(
            bodies.iter().filter(|b| *b == p).count(),
            1,
            "{p} stored once"
        );
    }
    let calls = admin_calls(&emu, &key);
    assert_eq!(
        calls, 2,
        "one certificate lifetime, one refresh (2 Admin API calls)"
    );
    report(&format!("{what} with the store"), times, calls, 251);
    server.shutdown().await;
}

/// Joins futures without a futures crate: spawn each on the runtime.
async fn futures_join<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn the_rust_handler_shares_one_certificate_across_instances() {
    load("messages-http", &artifact("GCPDB_MESSAGES_HTTP")).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn the_composed_app_shares_one_certificate_across_instances() {
    let app = std::fs::read(artifact("GCPDB_MESSAGES_COMPOSED")).unwrap();
    let connector = std::fs::read(artifact("GCP_DB_CONNECTOR_KV_WASM")).unwrap();
    let composed = gcp_db_host::compose::compose(&app, &connector).unwrap();
    let path = std::env::temp_dir().join(format!("messages-composed-{}.wasm", std::process::id()));
    std::fs::write(&path, composed).unwrap();
    load("messages-composed", &path).await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn without_the_store_every_request_refreshes() {
    let (name, key) = instance("no-store");
    let emu = Emulator::start(&[&format!("{name},backend={{pg}}")]);
    let server = serve(&emu, &artifact("GCPDB_MESSAGES_HTTP"), &name, "").await;
    let mut times = Vec::new();
    for i in 0..10 {
        let a = request(server.addr(), None).await;
        assert_eq!(a.status, 200, "{i}: {}", a.json);
        assert_eq!(a.certificate, "refreshed");
        times.push(a.elapsed);
    }
    let calls = admin_calls(&emu, &key);
    assert_eq!(calls, 20, "a fresh instance has nothing cached");
    report("messages-http without the store", times, calls, 10);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn the_rust_handler_serves_alloydb_from_the_store() {
    let uri = "projects/proj/locations/us-central1/clusters/cl/instances/inst";
    let emu = Emulator::start(&[&format!("{uri},backend={{pg}}")]);
    let server = serve(&emu, &artifact("GCPDB_MESSAGES_HTTP"), uri, "default").await;
    one_refresh_then_the_store(&server, 5).await;
    let calls = emu.calls();
    assert_eq!(
        calls["generateClientCertificate"]["projects/proj/locations/us-central1/clusters/cl"],
        1
    );
    // The stored exchange token served every connect.
    assert_eq!(calls["alloydbMdx"][uri], 6);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn an_out_of_date_stored_entry_costs_one_refresh_not_a_failed_request() {
    let (name, key) = instance("moved");
    let app = artifact("GCPDB_MESSAGES_HTTP");
    {
        let before = Emulator::start(&[&format!("{name},backend={{pg}}")]);
        let server = serve(&before, &app, &name, "default").await;
        assert_eq!(request(server.addr(), None).await.status, 200);
    }
    // The instance is now elsewhere (a new emulator, new address and CA); the
    // store still holds the old entry.
    let after = Emulator::start(&[&format!("{name},backend={{pg}}")]);
    let server = serve(&after, &app, &name, "default").await;
    let a = request(server.addr(), None).await;
    assert_eq!(
        (a.status, a.certificate.as_str()),
        (200, "refreshed"),
        "{}",
        a.json
    );
    assert_eq!(admin_calls(&after, &key), 2);
    let b = request(server.addr(), None).await;
    assert_eq!(
        (b.status, b.certificate.as_str()),
        (200, "store"),
        "{}",
        b.json
    );
}

/// (a) The Spin app (spin-sdk 7, a WASI 0.3 `wasi:http/handler`), served
/// with WASI 0.3 as `wasmtime serve -W component-model-async=y -S p3=y` would.
/// Its build without `spin-kv` (wasmtime has no `spin:key-value`), so each
/// request refreshes.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn the_spin_app_runs_with_wasi_0_3() {
    let (name, key) = instance("spin");
    let emu = Emulator::start(&[&format!("{name},backend={{pg}}")]);
    let server = serve(&emu, &artifact("GCPDB_SPIN_MESSAGES"), &name, "").await;
    let body = format!("from spin {}", std::process::id());
    let posted = request(server.addr(), Some(body.clone())).await;
    assert_eq!(posted.status, 201, "{}", posted.json);
    assert_eq!(posted.certificate, "refreshed");
    let listed = request(server.addr(), None).await;
    assert_eq!(listed.status, 200, "{}", listed.json);
    let bodies: Vec<&str> = listed
        .json
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["body"].as_str())
        .collect();
    assert!(bodies.contains(&body.as_str()), "{bodies:?}");
    assert_eq!(
        admin_calls(&emu, &key),
        4,
        "no store: a refresh per request"
    );
}

/// The Spin app with its cache in Spin's key-value store (`spin-kv`), which
/// the project's host provides over the same shared store: the second
/// request's fresh instance loads the certificate.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn the_spin_app_keeps_its_certificate_in_spins_key_value_store() {
    let (name, key) = instance("spin-kv");
    let emu = Emulator::start(&[&format!("{name},backend={{pg}}")]);
    let server = serve(&emu, &artifact("GCPDB_SPIN_MESSAGES_KV"), &name, "").await;
    one_refresh_then_the_store(&server, 5).await;
    assert_eq!(admin_calls(&emu, &key), 2, "one refresh for six requests");
}
