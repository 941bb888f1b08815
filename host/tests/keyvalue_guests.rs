//! End to end: guests that count in `wasi:keyvalue`, served by `Host::serve`
//! (a fresh instance per request, real HTTP) and run by `Host::run_command`,
//! show that the host's store is one store shared by every instance.
//!
//! Needs the `wasm32-wasip2` target (scripts/test installs it), and fails
//! saying so without it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gcp_db_host::kv_imports::KeyValueImportError;
use gcp_db_host::{CommandOptions, Host, KeyValueStore, ServeOptions, Server};

mod support;

/// The `wasi:keyvalue` bindings both guests generate, from this repository's
/// vendored WIT (the path is filled in at test time).
const KEYVALUE_BINDINGS: &str = r#"
mod kv {
    wit_bindgen::generate!({
        path: "@KEYVALUE_WIT@",
        inline: "
            package test:kv-guest;
            world counter {
                import wasi:keyvalue/store@0.2.0-draft;
                import wasi:keyvalue/atomics@0.2.0-draft;
            }
        ",
        // Bindings for the wasi:keyvalue package itself, which lives in
        // the vendored WIT rather than in a crate.
        generate_all,
    });
}
use kv::wasi::keyvalue::{atomics, store};

/// Adds one to "requests" in `bucket` and returns the new count.
fn count(bucket: &str) -> Result<u64, String> {
    let bucket = store::open(bucket).map_err(|e| format!("open: {e:?}"))?;
    atomics::increment(&bucket, "requests", 1).map_err(|e| format!("increment: {e:?}"))
}
"#;

/// A wasi:http proxy answering `kv=N local=M`: N from the shared store
/// (bucket "default"; `/empty-bucket`: bucket "", the only one wasmtime's
/// `-S keyvalue` opens), M from the instance's own memory (always 1 with a
/// fresh instance per request). `/slow` waits 500 ms first; `/trap` panics.
const PROXY_LIB: &str = r#"
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

@KEYVALUE_BINDINGS@

static LOCAL: AtomicU64 = AtomicU64::new(0);

struct Counter;

wasip2::http::proxy::export!(Counter);

impl wasip2::exports::http::incoming_handler::Guest for Counter {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        if path == "/trap" {
            panic!("trapping on purpose");
        }
        if path == "/slow" {
            wasip2::clocks::monotonic_clock::subscribe_duration(500_000_000).block();
        }
        let local = LOCAL.fetch_add(1, Ordering::SeqCst) + 1;
        let bucket = if path == "/empty-bucket" { "" } else { "default" };
        let (status, text) = match count(bucket) {
            Ok(n) => (200, format!("kv={n} local={local}")),
            Err(e) => (500, e),
        };
        let response = OutgoingResponse::new(Fields::new());
        response.set_status_code(status).unwrap();
        let body = response.body().unwrap();
        ResponseOutparam::set(out, Ok(response));
        let mut stream = body.write().unwrap();
        stream.write_all(text.as_bytes()).unwrap();
        stream.flush().unwrap();
        drop(stream);
        OutgoingBody::finish(body, None).unwrap();
    }
}
"#;

/// A command printing the count after its increment.
const COMMAND_MAIN: &str = r#"
@KEYVALUE_BINDINGS@

fn main() {
    match count("default") {
        Ok(n) => println!("{n}"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
"#;

const DEPENDENCIES: &str = "wasip2 = \"=1.0.4\"\nwit-bindgen = \"=0.61.1\"";

fn source(template: &str) -> String {
    let wit = support::keyvalue_wit_dir();
    let wit = std::fs::canonicalize(&wit).unwrap_or(wit);
    let bindings = KEYVALUE_BINDINGS.replace("@KEYVALUE_WIT@", &wit.display().to_string());
    template.replace("@KEYVALUE_BINDINGS@", &bindings)
}

fn proxy_guest() -> &'static Path {
    static GUEST: OnceLock<PathBuf> = OnceLock::new();
    GUEST
        .get_or_init(|| {
            support::build(&support::Guest {
                name: "kv-counter-proxy",
                kind: support::Kind::Cdylib,
                dependencies: DEPENDENCIES,
                files: &[("src/lib.rs", &source(PROXY_LIB))],
            })
        })
        .as_path()
}

fn command_guest() -> &'static Path {
    static GUEST: OnceLock<PathBuf> = OnceLock::new();
    GUEST
        .get_or_init(|| {
            support::build(&support::Guest {
                name: "kv-counter-command",
                kind: support::Kind::Bin,
                dependencies: DEPENDENCIES,
                files: &[("src/main.rs", &source(COMMAND_MAIN))],
            })
        })
        .as_path()
}

/// One `GET` with a real HTTP client: (status, body). Blocking, so call it
/// off the runtime's threads.
fn get(url: &str) -> (u16, String) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent();
    let mut response = agent.get(url).call().expect("HTTP request");
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().expect("response body");
    (status, body)
}

/// `get` on a blocking thread.
async fn get_async(url: String) -> (u16, String) {
    tokio::task::spawn_blocking(move || get(&url))
        .await
        .expect("client thread")
}

/// The shared count in a `kv=N local=M` answer, checking M is 1: every
/// request met a fresh instance.
fn shared_count(body: &str) -> u64 {
    let (kv, local) = body
        .strip_prefix("kv=")
        .and_then(|rest| rest.split_once(" local="))
        .unwrap_or_else(|| panic!("unexpected answer {body:?}"));
    assert_eq!(local, "1", "an instance served two requests: {body}");
    kv.parse().unwrap()
}

async fn serve(host: &Host, wasm: &Path, keyvalue: bool) -> Server {
    let opts = ServeOptions {
        keyvalue,
        ..Default::default()
    };
    host.serve(wasm, opts).await.expect("serve")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn served_instances_share_one_store() {
    let wasm = proxy_guest();
    let host = Host::new().unwrap();
    let server = serve(&host, wasm, true).await;
    let base = format!("http://{}", server.addr());

    let mut seen = Vec::new();
    for _ in 0..20 {
        let (status, body) = get_async(format!("{base}/")).await;
        assert_eq!(status, 200, "{body}");
        seen.push(shared_count(&body));
    }
    // Sequential requests count up one by one.
    assert_eq!(seen, (1..=20).collect::<Vec<u64>>());

    let concurrent: Vec<_> = (0..20)
        .map(|_| tokio::spawn(get_async(format!("{base}/"))))
        .collect();
    for request in concurrent {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        seen.push(shared_count(&body));
    }
    // Concurrent ones in any order, but none lost or repeated.
    seen.sort_unstable();
    assert_eq!(seen, (1..=40).collect::<Vec<u64>>());

    // The host sees what the guests stored.
    let store = host.keyvalue_store();
    assert_eq!(store.get("default", "requests"), Ok(Some(b"40".to_vec())));
    assert_eq!(store.len(), 1);
    server.shutdown().await;
}

/// Two hosts (as two processes would) with their store on one Redis:
/// concurrent increments from both lose nothing (`INCRBY`); with Redis
/// stopped, `increment` is the guest's error, not a trap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "builds wasm32-wasip2 guests and needs redis-server: scripts/test runs it"]
async fn served_instances_of_two_hosts_share_one_redis_store() {
    use gcp_db_host::redis_store::RedisServer;
    use gcp_db_host::{RedisOptions, RedisStore};

    let wasm = proxy_guest();
    let mut redis = RedisServer::start().expect("redis-server (scripts/test installs it)");
    let store = || RedisStore::open(&redis.url(), RedisOptions::default()).unwrap();
    let hosts = [
        Host::new().unwrap().with_redis_store(store()),
        Host::new().unwrap().with_redis_store(store()),
    ];
    let mut bases = Vec::new();
    let mut servers = Vec::new();
    for host in &hosts {
        let server = serve(host, wasm, true).await;
        bases.push(format!("http://{}", server.addr()));
        servers.push(server);
    }
    let concurrent: Vec<_> = (0..40)
        .map(|i| tokio::spawn(get_async(format!("{}/", bases[i % 2]))))
        .collect();
    let mut seen = Vec::new();
    for request in concurrent {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        seen.push(shared_count(&body));
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=40).collect::<Vec<u64>>());
    assert_eq!(
        hosts[1].shared_store().get("default", "requests").await,
        Ok(Some(b"40".to_vec()))
    );
    // The in-memory store was not used.
    assert!(hosts[0].keyvalue_store().is_empty());

    redis.stop();
    let (status, body) = get_async(format!("{}/", bases[0])).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.starts_with("increment: Error::Other("), "{body}");
    assert!(
        body.contains(&format!("127.0.0.1:{}", redis.port())),
        "{body}"
    );
    for server in servers {
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn requests_run_concurrently() {
    let wasm = proxy_guest();
    let host = Host::new().unwrap();
    let server = serve(&host, wasm, true).await;
    let url = format!("http://{}/slow", server.addr());
    // Warm up the connection path so the timing measures the guests.
    assert_eq!(get_async(url.clone()).await.0, 200);

    let started = Instant::now();
    let requests: Vec<_> = (0..10)
        .map(|_| tokio::spawn(get_async(url.clone())))
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap().0, 200);
    }
    let elapsed = started.elapsed();
    // One after the other they would take 10 × 500 ms.
    assert!(
        elapsed < Duration::from_millis(3500),
        "10 slow requests took {elapsed:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn a_trapping_request_is_a_500_and_the_next_one_works() {
    let wasm = proxy_guest();
    let host = Host::new().unwrap();
    let server = serve(&host, wasm, true).await;
    let base = format!("http://{}", server.addr());
    let (status, body) = get_async(format!("{base}/trap")).await;
    assert_eq!(status, 500);
    assert!(
        body.contains("wasm trap") || body.contains("unreachable"),
        "{body}"
    );
    let (status, body) = get_async(format!("{base}/")).await;
    assert_eq!((status, body.as_str()), (200, "kv=1 local=1"));
    server.shutdown().await;
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn without_keyvalue_serve_refuses_a_keyvalue_guest() {
    let wasm = proxy_guest();
    let host = Host::new().unwrap();
    let err = host
        .serve(wasm, ServeOptions::default())
        .await
        .expect_err("serve without the store");
    let import_error = err
        .downcast_ref::<KeyValueImportError>()
        .unwrap_or_else(|| panic!("{err:?}"));
    assert!(
        matches!(import_error, KeyValueImportError::NotEnabled { import }
            if import.starts_with("wasi:keyvalue/")),
        "{import_error:?}"
    );
    let text = format!("{err:#}");
    assert!(text.contains("--keyvalue"), "{text}");
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn a_stopped_server_stops_listening() {
    let wasm = proxy_guest();
    let host = Host::new().unwrap();
    let server = serve(&host, wasm, true).await;
    let addr = server.addr();
    assert!(addr.ip().is_loopback());
    server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let server = serve(&host, wasm, true).await;
    let addr = server.addr();
    drop(server);
    // Dropping aborts the accept loop; give the runtime a moment to run it.
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "{addr} still accepts after the server was dropped");
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn commands_share_the_store_across_runs() {
    let wasm = command_guest();
    let host = Host::new()
        .unwrap()
        .with_keyvalue_store(KeyValueStore::new(["default", "other"]));
    let opts = CommandOptions {
        keyvalue: true,
        ..Default::default()
    };
    for expected in ["1\n", "2\n", "3\n"] {
        let out = host.run_command(wasm, &opts).await.unwrap();
        assert!(out.success, "{out:?}");
        assert_eq!(out.stdout, expected);
    }
    assert_eq!(
        host.keyvalue_store().get("default", "requests"),
        Ok(Some(b"3".to_vec()))
    );
    host.keyvalue_store().clear();
    let out = host.run_command(wasm, &opts).await.unwrap();
    assert_eq!(out.stdout, "1\n");

    // A non-numeric value is the guest's error, not a trap.
    host.keyvalue_store()
        .set("default", "requests", b"many".to_vec())
        .unwrap();
    let out = host.run_command(wasm, &opts).await.unwrap();
    assert!(!out.success);
    // The host's message reaches the guest as `other`.
    assert!(
        out.stderr.starts_with("increment: Error::Other("),
        "{out:?}"
    );
    assert!(out.stderr.contains("is not a decimal u64"), "{out:?}");

    // Without the store the command does not start.
    let err = host
        .run_command(wasm, &CommandOptions::default())
        .await
        .unwrap_err();
    assert!(
        err.downcast_ref::<KeyValueImportError>().is_some(),
        "{err:?}"
    );
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn a_store_without_the_bucket_answers_no_such_store() {
    let wasm = command_guest();
    let host = Host::new()
        .unwrap()
        .with_keyvalue_store(KeyValueStore::new(["cache"]));
    let opts = CommandOptions {
        keyvalue: true,
        ..Default::default()
    };
    let out = host.run_command(wasm, &opts).await.unwrap();
    assert!(!out.success);
    assert_eq!(out.stderr, "open: Error::NoSuchStore\n");
    assert!(host.keyvalue_store().is_empty());
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn a_command_is_not_a_proxy() {
    let wasm = command_guest();
    let host = Host::new().unwrap();
    let opts = ServeOptions {
        keyvalue: true,
        ..Default::default()
    };
    let err = host.serve(wasm, opts).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("not a wasi:http/proxy component"), "{text}");
}

/// wasmtime's own `-S keyvalue` (the real wasmtime CLI, `$GCPDB_WASMTIME`):
/// the count never passes 1, because each request's instance gets a fresh
/// copy of the preset data, and any bucket but "" does not exist. Hence the
/// project's host provides the shared store the connector's cache needs.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn wasmtime_serves_own_keyvalue_store_does_not_outlive_a_request() {
    let wasm = proxy_guest();
    let wasmtime = std::env::var("GCPDB_WASMTIME")
        .expect("GCPDB_WASMTIME is not set: run the tests with scripts/test");
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let mut child = std::process::Command::new(wasmtime)
        .args([
            "serve",
            "-S",
            "cli",
            "-S",
            "keyvalue",
            "--addr",
            &addr.to_string(),
        ])
        .arg(wasm)
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start wasmtime serve");
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "wasmtime serve exited");
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "wasmtime serve did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let base = format!("http://{addr}");
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (status, body) = get_async(format!("{base}/empty-bucket")).await;
        assert_eq!(status, 200, "{body}");
        seen.push(shared_count(&body));
    }
    let (status, body) = get_async(format!("{base}/")).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        seen,
        [1, 1, 1],
        "wasmtime's store kept a write across requests"
    );
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("NoSuchStore"), "{body}");
}
