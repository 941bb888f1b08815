//! The README's `wasmtime serve` command lines, run with the real wasmtime CLI
//! (`$GCPDB_WASMTIME`, wasmtime-cli 48.0.8 as scripts/common.sh installs it),
//! against the emulator and a real PostgreSQL: the Rust handler on WASI 0.2,
//! the Spin app on WASI 0.3, and the app composed with the connector.
//! wasmtime's own store (`-S keyvalue`) is checked in
//! host/tests/keyvalue_guests.rs.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{artifact, Emulator, WasmtimeServe};

/// The README's `wasmtime serve` flags for the Rust handler (WASI 0.2). It
/// imports wasi:keyvalue, so it needs `-S keyvalue` to link, though it opens
/// no bucket (wasmtime's store does not outlive a request).
const README_P2_FLAGS: &[&str] = &[
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
];

/// [`serve_with`] without a store: wasmtime's own (`-S keyvalue`) does not
/// outlive a request.
fn serve(emu: &Emulator, flags: &[&str], app: &Path, instance: &str) -> WasmtimeServe {
    serve_with(emu, flags, app, instance, &[("GCP_DB_KV_BUCKET", "")], &[])
}

/// `wasmtime serve` of a Rust example with the app's settings for the
/// emulator (as `app`/`app-password`), more settings (`env`) and directories
/// (`dirs`, host path and guest path).
fn serve_with(
    emu: &Emulator,
    flags: &[&str],
    app: &Path,
    instance: &str,
    env: &[(&str, &str)],
    dirs: &[(&Path, &str)],
) -> WasmtimeServe {
    let admin = emu.admin_endpoint();
    let common = [
        ("INSTANCE", instance),
        ("DB_USER", "app"),
        ("DB_PASS", "app-password"),
        (
            "GOOGLE_APPLICATION_CREDENTIALS",
            "/creds/service-account.json",
        ),
        ("GCP_DB_ADMIN_ENDPOINT", &admin),
    ];
    let env: Vec<_> = common.iter().chain(env).copied().collect();
    let mut all_dirs = vec![(emu.state_dir.as_path(), "/creds")];
    all_dirs.extend_from_slice(dirs);
    WasmtimeServe::start(flags, app, &env, &all_dirs)
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
fn post_then_list(emu: &Emulator, server: &WasmtimeServe, key: &str, what: &str) {
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

/// README, "wasmtime serve": the Rust handler (WASI 0.2).
#[test]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
fn the_rust_handler_runs_under_wasmtime_serve() {
    let emu = Emulator::start(&["proj:us-central1:cli-http,backend={pg}"]);
    let server = serve(
        &emu,
        README_P2_FLAGS,
        &artifact("GCPDB_MESSAGES_HTTP"),
        "proj:us-central1:cli-http",
    );
    post_then_list(&emu, &server, "proj:cli-http", "rust handler");
}

/// README, "wasmtime serve" as it is written: the Rust handler with the
/// connector's cache in a directory wasmtime grants, sealed with a secret.
/// 50 requests at once, each a fresh instance, make one refresh between them;
/// every file the store wrote reads whole.
#[test]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
fn the_directory_store_makes_one_refresh_for_fifty_fresh_instances() {
    let emu = Emulator::start(&["proj:us-central1:cli-dir,backend={pg}"]);
    let cache = std::env::temp_dir().join(format!("gcpdb-cli-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache).unwrap();
    let server = serve_with(
        &emu,
        README_P2_FLAGS,
        &artifact("GCPDB_MESSAGES_HTTP"),
        "proj:us-central1:cli-dir",
        &[
            ("GCP_DB_KV_BUCKET", ""),
            ("GCP_DB_STORE_DIR", "/cache"),
            ("GCP_DB_STORE_SECRET", "a secret from outside the store"),
        ],
        &[(&cache, "/cache")],
    );
    let started = Instant::now();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let requests: Vec<_> = (0..50)
            .map(|_| s.spawn(|| request(server.addr, None).0))
            .collect();
        requests.into_iter().map(|r| r.join().unwrap()).collect()
    });
    println!(
        "50 requests at once on a cold directory store: {:?}",
        started.elapsed()
    );
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let refreshes = emu.count("generateEphemeralCert", "proj:cli-dir");
    assert_eq!(refreshes, 1, "one refresh for fifty fresh instances");
    // The next request loads the entry too.
    let (status, _) = request(server.addr, None);
    assert_eq!(status, 200);
    assert_eq!(emu.count("generateEphemeralCert", "proj:cli-dir"), 1);
    drop(server);
    // No torn file: every value is a whole sealed envelope (the entry and
    // the key), and no lease or lock was left behind.
    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    for file in &files {
        let value: Value = serde_json::from_slice(&std::fs::read(file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(value["format"], 3, "{}", file.display());
        assert!(value["mac"].is_string(), "{}: not sealed", file.display());
    }
    std::fs::remove_dir_all(&cache).unwrap();
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
