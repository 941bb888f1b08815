//! End to end: the Spin example (`examples/spin-messages`, spin-sdk 7, a WASI
//! 0.3 `wasi:http/handler@0.3.0` component that also imports WASI 0.2)
//! served by `Host::serve`.
//!
//! There is no database here, so the requests stop at the connector's
//! settings: that is enough to prove the p3 handler is instantiated per
//! request, reads the request body, and streams a JSON response back.
//!
//! The example is built without its `spin-kv` feature (this host has no
//! `spin:key-value`), into its own target directory so this build never
//! fights over the workspace's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use gcp_db_host::{Host, ServeOptions, Server};

mod support;

/// `spin_messages.wasm` without `spin-kv`, or `None` when the wasm32-wasip2
/// target is not installed.
fn spin_guest() -> Option<&'static Path> {
    static WASM: OnceLock<Option<PathBuf>> = OnceLock::new();
    WASM.get_or_init(|| {
        if !support::wasip2_installed() {
            return None;
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target_dir = std::env::temp_dir().join("gcp-db-host-test-guests/spin-target");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&workspace)
            .args([
                "build",
                "--release",
                "--quiet",
                "--target",
                "wasm32-wasip2",
                "-p",
                "spin-messages",
                "--no-default-features",
            ])
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
        Some(target_dir.join("wasm32-wasip2/release/spin_messages.wasm"))
    })
    .as_deref()
}

async fn serve(host: &Host, wasm: &Path, env: &[(&str, &str)]) -> Server {
    let opts = ServeOptions {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    host.serve(wasm, opts).await.expect("serve the spin app")
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
async fn the_component_is_a_wasi_0_3_handler() {
    let Some(wasm) = spin_guest() else { return };
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
async fn without_instance_it_answers_500_json() {
    let Some(wasm) = spin_guest() else { return };
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
async fn a_malformed_instance_is_a_typed_error() {
    let Some(wasm) = spin_guest() else { return };
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
async fn concurrent_requests_each_get_an_answer() {
    let Some(wasm) = spin_guest() else { return };
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
