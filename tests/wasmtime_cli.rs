//! The README's `wasmtime serve` command lines, run with the real wasmtime CLI
//! (`$GCPDB_WASMTIME`, wasmtime-cli 48.0.8 as scripts/common.sh installs it),
//! against the emulator and a real PostgreSQL: the Rust handler on WASI 0.2,
//! the Spin app on WASI 0.3, and the app composed with the connector.
//! wasmtime's own store (`-S keyvalue`) is checked in
//! host/tests/keyvalue_guests.rs.

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Emulator;

fn artifact(var: &str) -> PathBuf {
    let p = PathBuf::from(
        std::env::var(var)
            .unwrap_or_else(|_| panic!("{var} is not set: run the tests with scripts/test")),
    );
    assert!(
        p.exists(),
        "{} is missing: scripts/test provides it",
        p.display()
    );
    p
}

/// `wasmtime serve` until dropped.
struct Wasmtime {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Wasmtime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `wasmtime serve FLAGS --addr … ENV… --dir … app`: the README's flags, the
/// app's settings for the emulator, and a free port. Returns once the port
/// accepts connections.
fn serve(emu: &Emulator, flags: &[&str], app: &Path, instance: &str) -> Wasmtime {
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let admin = emu.admin_endpoint();
    let mut cmd = Command::new(artifact("GCPDB_WASMTIME"));
    cmd.arg("serve")
        .args(flags)
        .arg("--addr")
        .arg(addr.to_string());
    cmd.arg("--dir")
        .arg(format!("{}::/creds", emu.state_dir.display()));
    for (k, v) in [
        ("INSTANCE", instance),
        ("DB_USER", "app"),
        ("DB_PASS", "app-password"),
        (
            "GOOGLE_APPLICATION_CREDENTIALS",
            "/creds/service-account.json",
        ),
        ("GCP_DB_ADMIN_ENDPOINT", &admin),
        // wasmtime's store does not outlive a request: no store.
        ("GCP_DB_KV_BUCKET", ""),
    ] {
        cmd.arg("--env").arg(format!("{k}={v}"));
    }
    let child = cmd
        .arg(app)
        .stdin(Stdio::null())
        .spawn()
        .expect("start wasmtime serve");
    let mut server = Wasmtime { child, addr };
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("wasmtime serve exited with {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "wasmtime serve did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// One request: (status, JSON answer).
fn request(addr: SocketAddr, post: Option<&str>) -> (u16, Value) {
    let url = format!("http://{addr}/");
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
    let text = resp.body_mut().read_to_string().unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    (resp.status().as_u16(), json)
}

/// POSTs a message, GETs the list, and finds it there; each request is a
/// fresh instance, so each refreshes (no store): 2 Admin API calls each.
fn post_then_list(emu: &Emulator, server: &Wasmtime, key: &str, what: &str) {
    let body = format!("{what} via wasmtime-cli {}", std::process::id());
    let (status, json) = request(server.addr, Some(&body));
    assert_eq!(status, 201, "{json}");
    let (status, json) = request(server.addr, None);
    assert_eq!(status, 200, "{json}");
    let bodies: Vec<&str> = json
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {json}"))
        .iter()
        .filter_map(|m| m["body"].as_str())
        .collect();
    assert!(bodies.contains(&body.as_str()), "{bodies:?}");
    let admin_calls = emu.count("connectSettings", key) + emu.count("generateEphemeralCert", key);
    assert_eq!(admin_calls, 4, "a refresh per request without a store");
}

/// README, "wasmtime serve": the Rust handler (WASI 0.2). It imports
/// wasi:keyvalue, so it needs `-S keyvalue` to link, though it opens no
/// bucket (wasmtime's store does not outlive a request).
#[test]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
fn the_rust_handler_runs_under_wasmtime_serve() {
    let emu = Emulator::start(&["proj:us-central1:cli-http,backend={pg}"]);
    let server = serve(
        &emu,
        &[
            "-S",
            "cli",
            "-S",
            "http",
            "-S",
            "inherit-network",
            "-S",
            "allow-ip-name-lookup",
            "-S",
            "keyvalue",
        ],
        &artifact("GCPDB_MESSAGES_HTTP"),
        "proj:us-central1:cli-http",
    );
    post_then_list(&emu, &server, "proj:cli-http", "rust handler");
}

/// README, "Spin": the Spin app's build without `spin-kv` on WASI 0.3, with
/// the flags the README gives.
#[test]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
fn the_spin_app_runs_under_wasmtime_serve_with_wasi_0_3() {
    let emu = Emulator::start(&["proj:us-central1:cli-spin,backend={pg}"]);
    let server = serve(
        &emu,
        &[
            "-W",
            "component-model-async=y",
            "-S",
            "p3=y",
            "-S",
            "cli=y",
            "-S",
            "inherit-network=y",
        ],
        &artifact("GCPDB_SPIN_MESSAGES"),
        "proj:us-central1:cli-spin",
    );
    post_then_list(&emu, &server, "proj:cli-spin", "spin app");
}

/// README, "A component composed with the connector": the app importing
/// `gcp:db-connector/connector`, plugged with the plain connector component.
#[test]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
fn the_composed_app_runs_under_wasmtime_serve() {
    let emu = Emulator::start(&["proj:us-central1:cli-composed,backend={pg}"]);
    let read = |p: &Path| std::fs::read(p).unwrap();
    let composed = gcp_db_host::compose::compose(
        &read(&artifact("GCPDB_MESSAGES_COMPOSED")),
        &read(&artifact("GCP_DB_CONNECTOR_WASM")),
    )
    .unwrap();
    let path = std::env::temp_dir().join(format!("cli-composed-{}.wasm", std::process::id()));
    std::fs::write(&path, composed).unwrap();
    let server = serve(
        &emu,
        &[
            "-S",
            "cli",
            "-S",
            "http",
            "-S",
            "inherit-network",
            "-S",
            "allow-ip-name-lookup",
        ],
        &path,
        "proj:us-central1:cli-composed",
    );
    post_then_list(&emu, &server, "proj:cli-composed", "composed app");
    drop(server);
    let _ = std::fs::remove_file(path);
}
