//! End to end: the Spin example (`examples/spin-messages`, spin-sdk 7, a WASI
//! 0.3 `wasi:http/handler@0.3.0` component that also imports WASI 0.2)
//! served by `Host::serve`.
//!
//! There is no database here, so the requests stop at the connector's
//! settings: that is enough to prove the p3 handler is instantiated per
//! request, reads the request body, and streams a JSON response back.
//!
//! The example is built twice, into its own target directory so these
//! builds never fight over the workspace's: without its `spin-kv` feature,
//! and with it (the default: the component imports `spin:key-value@3.0.0`,
//! which `Host::serve` provides with `keyvalue` on). A tiny spin-sdk 7 counter
//! guest shows the host's `spin:key-value` keeps values across the fresh
//! instance of every request, in the host's shared `KeyValueStore`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use gcp_db_host::{Host, ServeOptions, Server};

mod support;

/// `spin_messages.wasm` without `spin-kv`.
fn spin_guest() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| build_spin_messages(false)).as_path()
}

/// `spin_messages.wasm` with its default features (`spin-kv`).
fn spin_kv_guest() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| build_spin_messages(true)).as_path()
}

/// Builds the example, each feature set into its own target directory (the
/// two builds may run at once from parallel tests).
fn build_spin_messages(spin_kv: bool) -> PathBuf {
    {
        support::require_wasip2();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let name = if spin_kv {
            "spin-kv-target"
        } else {
            "spin-target"
        };
        let target_dir = std::env::temp_dir()
            .join("gcp-db-host-test-guests")
            .join(name);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut args = vec![
            "build",
            "--release",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "-p",
            "spin-messages",
        ];
        if !spin_kv {
            args.push("--no-default-features");
        }
        let status = Command::new(cargo)
            .current_dir(&workspace)
            .args(args)
            .arg("--target-dir")
            .arg(&target_dir)
            // The outer build's settings are not meant for this guest (the
            // workspace's .cargo/config.toml still applies).
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("run cargo for spin-messages");
        assert!(status.success(), "building spin-messages failed");
        target_dir.join("wasm32-wasip2/release/spin_messages.wasm")
    }
}

/// A spin-sdk 7 counter: every request opens Spin's `default` store, reads
/// `n`, answers and stores `n + 1`; it also lists the keys and opens a store
/// with no bucket, so every `spin:key-value` function is called.
const COUNTER_SOURCE: &str = r#"
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::key_value::Store;

async fn count() -> Result<String, String> {
    let store = Store::open_default().await.map_err(|e| format!("open: {e}"))?;
    let n = match store.get("n").await.map_err(|e| format!("get: {e}"))? {
        None => 0,
        Some(bytes) => String::from_utf8(bytes)
            .map_err(|e| e.to_string())?
            .parse::<u64>()
            .map_err(|e| e.to_string())?,
    };
    let next = n + 1;
    store
        .set("n", next.to_string())
        .await
        .map_err(|e| format!("set: {e}"))?;
    let exists = store.exists("n").await.map_err(|e| format!("exists: {e}"))?;
    store.set("gone", b"x").await.map_err(|e| format!("set: {e}"))?;
    store.delete("gone").await.map_err(|e| format!("delete: {e}"))?;
    let keys = store
        .get_keys()
        .await
        .collect()
        .await
        .map_err(|e| format!("get-keys: {e}"))?;
    let other = match Store::open("nope").await {
        Ok(_) => "opened".to_string(),
        Err(e) => format!("{e:?}"),
    };
    Ok(format!("{next}\nexists={exists}\nkeys={}\nnope={other}\n", keys.join(",")))
}

#[spin_sdk::http_service]
async fn handle(_req: Request) -> impl IntoResponse {
    match count().await {
        Ok(body) => (spin_sdk::http::StatusCode::OK, body),
        Err(e) => (spin_sdk::http::StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
"#;

/// The counter guest. It starts from the workspace's `Cargo.lock`, so it resolves
/// the spin-sdk the example already uses.
fn counter_guest() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
        let lock = std::fs::read_to_string(lock).expect("the workspace Cargo.lock");
        support::build(&support::Guest {
            name: "spin-kv-counter",
            kind: support::Kind::Cdylib,
            dependencies: "spin-sdk = { version = \"7\", default-features = false, \
                           features = [\"http\", \"key-value\"] }",
            files: &[("src/lib.rs", COUNTER_SOURCE), ("Cargo.lock", &lock)],
        })
    })
    .as_path()
}

async fn serve(host: &Host, wasm: &Path, env: &[(&str, &str)]) -> Server {
    serve_with(host, wasm, env, false)
        .await
        .expect("serve the spin app")
}

async fn serve_with(
    host: &Host,
    wasm: &Path,
    env: &[(&str, &str)],
    keyvalue: bool,
) -> wasmtime::Result<Server> {
    let opts = ServeOptions {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        keyvalue,
        ..Default::default()
    };
    host.serve(wasm, opts).await
}

/// `(status, content-type, body)` of a request, on a blocking thread.
async fn request(method: &'static str, url: String, body: &'static str) -> (u16, String, String) {
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(60)))
            .build()
            .new_agent();
        let mut response = match method {
            "GET" => agent.get(&url).call(),
            "POST" => agent.post(&url).send(body),
            "PUT" => agent.put(&url).send(body),
            other => panic!("no {other}"),
        }
        .expect("request");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = response.body_mut().read_to_string().expect("body");
        (status, content_type, text)
    })
    .await
    .unwrap()
}

fn error_of(body: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {body}");
    });
    json["error"].as_str().expect("an error string").to_string()
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn the_component_is_a_wasi_0_3_handler() {
    let wasm = spin_guest();
    let host = Host::new().unwrap();
    let exports = host.exports(wasm).unwrap();
    assert!(
        exports.iter().any(|e| e == "wasi:http/handler@0.3.0"),
        "{exports:?}"
    );
    let imports = host.imports(wasm).unwrap();
    assert!(
        !imports.iter().any(|i| i.starts_with("spin:key-value")),
        "built without spin-kv: {imports:?}"
    );
    // A mixed component: p3 wasi:http, p2 std underneath.
    assert!(
        imports.iter().any(|i| i.starts_with("wasi:http/types@0.3")),
        "{imports:?}"
    );
    assert!(
        imports
            .iter()
            .any(|i| i.starts_with("wasi:cli/environment@0.2")),
        "{imports:?}"
    );
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn without_instance_it_answers_500_json() {
    let wasm = spin_guest();
    let host = Host::new().unwrap();
    let server = serve(&host, wasm, &[]).await;
    let base = format!("http://{}/", server.addr());

    for method in ["GET", "POST"] {
        let (status, content_type, body) = request(method, base.clone(), "hello").await;
        assert_eq!(status, 500, "{method}: {body}");
        assert_eq!(content_type, "application/json");
        assert_eq!(error_of(&body), "INSTANCE is not set", "{method}");
    }
    // The body was read: an empty POST is refused before any connect.
    let (status, _, body) = request("POST", base.clone(), "  ").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_of(&body), "POST a non-empty UTF-8 text body");
    let (status, _, body) = request("PUT", base, "x").await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(error_of(&body), "PUT is not GET or POST");
    server.shutdown().await;
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn a_malformed_instance_is_a_typed_error() {
    let wasm = spin_guest();
    let host = Host::new().unwrap();
    let server = serve(&host, wasm, &[("INSTANCE", "not-an-instance")]).await;
    let (status, _, body) = request("GET", format!("http://{}/", server.addr()), "").await;
    assert_eq!(status, 500, "{body}");
    let error = error_of(&body);
    assert!(
        error.starts_with("invalid instance connection name \"not-an-instance\""),
        "{error}"
    );
    server.shutdown().await;
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn concurrent_requests_each_get_an_answer() {
    let wasm = spin_guest();
    let host = Host::new().unwrap();
    let server = serve(&host, wasm, &[]).await;
    let url = format!("http://{}/", server.addr());
    let answers: Vec<_> = (0..8)
        .map(|_| tokio::spawn(request("GET", url.clone(), "")))
        .collect();
    for answer in answers {
        let (status, _, body) = answer.await.unwrap();
        assert_eq!(
            (status, error_of(&body).as_str()),
            (500, "INSTANCE is not set")
        );
    }
    server.shutdown().await;
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn spin_key_value_keeps_a_counter_across_instances() {
    let wasm = counter_guest();
    let host = Host::new().unwrap();
    let imports = host.imports(wasm).unwrap();
    assert!(
        imports
            .iter()
            .any(|i| i == "spin:key-value/key-value@3.0.0"),
        "{imports:?}"
    );
    // Without the store, serve refuses the import by name.
    let err = serve_with(&host, wasm, &[], false).await.unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("spin:key-value/key-value@3.0.0") && err.contains("--keyvalue"),
        "{err}"
    );

    let server = serve_with(&host, wasm, &[], true).await.unwrap();
    let url = format!("http://{}/", server.addr());
    // Sequential requests, a fresh instance each: only the host's store
    // carries the count from one to the next.
    for expected in 1..=10u64 {
        let (status, _, body) = request("GET", url.clone(), "").await;
        assert_eq!(status, 200, "{body}");
        let mut lines = body.lines();
        assert_eq!(lines.next(), Some(expected.to_string().as_str()), "{body}");
        assert_eq!(lines.next(), Some("exists=true"), "{body}");
        assert_eq!(lines.next(), Some("keys=n"), "{body}");
        assert_eq!(lines.next(), Some("nope=Error::NoSuchStore"), "{body}");
    }
    server.shutdown().await;
    let store = host.keyvalue_store();
    assert_eq!(store.get("default", "n"), Ok(Some(b"10".to_vec())));
    assert_eq!(store.keys("default"), Ok(vec!["n".to_string()]));
}

/// Two hosts (as two processes would) with their store on one Redis: the
/// counter goes on from one host's instance to the other's; with Redis
/// stopped, a call is the guest's store error, not a trap.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "builds wasm32-wasip2 guests and needs redis-server: scripts/test runs it"]
async fn spin_key_value_on_redis_is_one_store_for_two_hosts() {
    use gcp_db_host::redis_store::RedisServer;
    use gcp_db_host::{RedisOptions, RedisStore};

    let wasm = counter_guest();
    let mut redis = RedisServer::start().expect("redis-server (scripts/test installs it)");
    let store = || RedisStore::open(&redis.url(), RedisOptions::default()).unwrap();
    let hosts = [
        Host::new().unwrap().with_redis_store(store()),
        Host::new().unwrap().with_redis_store(store()),
    ];
    let mut servers = Vec::new();
    for host in &hosts {
        servers.push(serve_with(host, wasm, &[], true).await.unwrap());
    }
    for expected in 1..=10u64 {
        let server = &servers[expected as usize % 2];
        let (status, _, body) = request("GET", format!("http://{}/", server.addr()), "").await;
        assert_eq!(status, 200, "{body}");
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(
            lines,
            [
                expected.to_string().as_str(),
                "exists=true",
                "keys=n",
                "nope=Error::NoSuchStore"
            ],
            "{body}"
        );
    }
    assert_eq!(
        hosts[0].shared_store().get("default", "n").await,
        Ok(Some(b"10".to_vec()))
    );

    redis.stop();
    let url = format!("http://{}/", servers[0].addr());
    let (status, _, body) = request("GET", url, "").await;
    assert_eq!(status, 500, "{body}");
    // The guest's own error text: `get` answered Error::Other with the
    // host's reason, which names the server and nothing secret.
    assert!(body.starts_with("get: "), "{body}");
    assert!(
        body.contains(&format!("127.0.0.1:{}", redis.port())),
        "{body}"
    );
    for server in servers {
        server.shutdown().await;
    }
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn the_spin_kv_example_is_served_with_keyvalue_only() {
    let wasm = spin_kv_guest();
    let host = Host::new().unwrap();
    let imports = host.imports(wasm).unwrap();
    assert!(
        imports
            .iter()
            .any(|i| i == "spin:key-value/key-value@3.0.0"),
        "{imports:?}"
    );
    let err = serve_with(&host, wasm, &[], false).await.unwrap_err();
    assert!(format!("{err:#}").contains("--keyvalue"), "{err:#}");
    let server = serve_with(&host, wasm, &[], true).await.unwrap();
    let (status, _, body) = request("GET", format!("http://{}/", server.addr()), "").await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(error_of(&body), "INSTANCE is not set");
    server.shutdown().await;
}
