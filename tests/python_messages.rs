//! `examples/python-messages`: the Cloud Run tutorial's Flask + SQLAlchemy +
//! pg8000 app, built into a component by componentize-py
//! (`$GCPDB_PYTHON_MESSAGES`), composed here with the connector component, and
//! served with a fresh instance per request by the real wasmtime CLI (the
//! plain build, its cache in a directory) and by the project's host (the
//! key-value build on the host's store), against the emulator and a real
//! PostgreSQL. Each test has a database of its own, with the tutorial's table.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use gcp_db_host::{ServeOptions, Server};
use serde_json::{json, Value};
use support::{artifact, assert_no_secrets, host, postgres, Emulator, HostsEntry, WasmtimeServe};

/// The README's `wasmtime serve` flags for a component that imports no store.
const CLI_FLAGS: &[&str] = &[
    "-S",
    "cli",
    "-S",
    "http",
    "-S",
    "inherit-network",
    "-S",
    "allow-ip-name-lookup",
];
/// The emulator's service account as Cloud SQL names its IAM database user.
const IAM_USER: &str = "connector-sa@emulator-project.iam";

/// The Python app composed with the connector build `connector_var` names
/// (`GCP_DB_CONNECTOR_WASM` or `GCP_DB_CONNECTOR_KV_WASM`), once per test
/// binary, as `gcp-db-host compose` does it.
fn composed(connector_var: &'static str) -> PathBuf {
    static PLAIN: OnceLock<PathBuf> = OnceLock::new();
    static KV: OnceLock<PathBuf> = OnceLock::new();
    let cell = if connector_var == "GCP_DB_CONNECTOR_KV_WASM" {
        &KV
    } else {
        &PLAIN
    };
    cell.get_or_init(|| {
        let read = |p: &Path| std::fs::read(p).unwrap();
        let app = read(&artifact("GCPDB_PYTHON_MESSAGES"));
        let wasm = gcp_db_host::compose::compose(&app, &read(&artifact(connector_var)))
            .unwrap_or_else(|e| panic!("composing the Python app: {e}"));
        let path = std::env::temp_dir().join(format!(
            "python-messages-{connector_var}-{}.wasm",
            std::process::id()
        ));
        std::fs::write(&path, wasm).unwrap();
        path
    })
    .clone()
}

/// A database of the test's own on the test PostgreSQL, with the tutorial's
/// `messages (content)` table, which `app` and the IAM user may use.
fn database(name: &str) -> String {
    let (host, port) = postgres()
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .unwrap();
    let psql = |db: &str, sql: &str| {
        let out = Command::new("psql")
            .args([
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                &host,
                "-p",
                &port,
                "-U",
                "postgres",
            ])
            .args(["-d", db, "-c", sql])
            .output()
            .expect("psql (PostgreSQL's client, which scripts/test installs)");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    psql("postgres", &format!("DROP DATABASE IF EXISTS {name}"));
    psql("postgres", &format!("CREATE DATABASE {name}"));
    psql(
        name,
        &format!("CREATE TABLE messages (content text); GRANT SELECT, INSERT ON messages TO app, \"{IAM_USER}\""),
    );
    name.to_string()
}

/// Inserts a message of `bytes` bytes straight into `db`.
fn insert_large_message(db: &str, bytes: usize) {
    let (host, port) = postgres()
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .unwrap();
    let sql = format!("INSERT INTO messages (content) VALUES (repeat('x', {bytes}))");
    let out = Command::new("psql")
        .args([
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            &host,
            "-p",
            &port,
            "-U",
            "postgres",
        ])
        .args(["-d", db, "-c", &sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How the app logs in to the database.
enum Login<'a> {
    /// As `app`, with its password.
    Password,
    /// Automatic IAM database authentication as this user, no password.
    Iam(&'a str),
}

/// The app's settings (the tutorial's names, and the connector's for the
/// emulator).
fn settings(
    emu: &Emulator,
    instance: &str,
    db: &str,
    login: Login,
    ip_type: &str,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("INSTANCE_CONNECTION_NAME", instance.to_string()),
        ("DB_NAME", db.to_string()),
        ("IP_TYPE", ip_type.to_string()),
        (
            "GOOGLE_APPLICATION_CREDENTIALS",
            "/creds/service-account.json".to_string(),
        ),
        ("GCP_DB_ADMIN_ENDPOINT", emu.admin_endpoint()),
    ];
    match login {
        Login::Password => {
            env.push(("DB_USER", "app".into()));
            env.push(("DB_PASS", "app-password".into()));
        }
        Login::Iam(user) => env.push(("DB_USER", user.into())),
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// `wasmtime serve` of the plain build with `env` and `/creds` (and `dirs`).
fn wasmtime_serve(
    emu: &Emulator,
    env: &[(String, String)],
    dirs: &[(&Path, &str)],
) -> WasmtimeServe {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut all_dirs = vec![(emu.state_dir.as_path(), "/creds")];
    all_dirs.extend_from_slice(dirs);
    WasmtimeServe::start(
        CLI_FLAGS,
        &composed("GCP_DB_CONNECTOR_WASM"),
        &env,
        &all_dirs,
    )
}

/// The project's host serving the key-value build on its store.
async fn host_serve(emu: &Emulator, mut env: Vec<(String, String)>) -> Server {
    env.push(("GCP_DB_KV_BUCKET".into(), "gcp-db-connector".into()));
    env.push((
        "GCP_DB_STORE_SECRET".into(),
        "a secret from outside the store".into(),
    ));
    host()
        .serve(
            &composed("GCP_DB_CONNECTOR_KV_WASM"),
            ServeOptions {
                env,
                dirs: vec![(emu.state_dir.clone(), "/creds".into())],
                keyvalue: true,
                ..ServeOptions::default()
            },
        )
        .await
        .unwrap()
}

/// One request (`POST /` with `{"content": post}`, else `GET /`): its status
/// and JSON answer.
fn request(addr: SocketAddr, post: Option<&str>) -> (u16, Value) {
    let url = format!("http://{addr}/");
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .new_agent();
    let mut resp = match post {
        Some(content) => agent
            .post(&url)
            .content_type("application/json")
            .send(json!({ "content": content }).to_string()),
        None => agent.get(&url).call(),
    }
    .unwrap_or_else(|e| panic!("{url}: {e}"));
    let text = resp.body_mut().read_to_string().unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    (resp.status().as_u16(), json)
}

/// The `error` an answer of the app's error handler carries.
fn error_of(json: &Value) -> String {
    json["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {json}"))
        .to_string()
}

/// [`request`] off the async runtime (ureq blocks).
async fn request_async(addr: SocketAddr, post: Option<&str>) -> (u16, Value) {
    let post = post.map(str::to_string);
    tokio::task::spawn_blocking(move || request(addr, post.as_deref()))
        .await
        .unwrap()
}

/// POSTs a message the way the tutorial's client does, then finds it in the
/// list.
fn post_then_find(addr: SocketAddr, content: &str) {
    let (status, json) = request(addr, Some(content));
    assert_eq!((status, &json), (200, &json!({"status": "Message added!"})));
    let (status, json) = request(addr, None);
    assert_eq!(status, 200, "{json}");
    let messages = json["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{json}"));
    assert!(messages.contains(&json!(content)), "{json}");
}

/// README, "A Python app": the plain build under `wasmtime serve` with the
/// cache in a directory, logging in with a password. Every request is a
/// fresh instance; the first refreshes, the others load the certificate
/// (and the key) from the directory.
#[test]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
fn the_python_app_runs_under_wasmtime_serve_with_its_cache_in_a_directory() {
    let emu = Emulator::start(&["proj:us-central1:py-cli,backend={pg}"]);
    let db = database("py_cli");
    let cache = std::env::temp_dir().join(format!("gcpdb-py-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache).unwrap();
    let mut env = settings(
        &emu,
        "proj:us-central1:py-cli",
        &db,
        Login::Password,
        "public",
    );
    env.push(("GCP_DB_STORE_DIR".into(), "/cache".into()));
    env.push((
        "GCP_DB_STORE_SECRET".into(),
        "a secret from outside the store".into(),
    ));
    let server = wasmtime_serve(&emu, &env, &[(&cache, "/cache")]);

    post_then_find(server.addr, "posted through Flask in wasm");
    for _ in 0..3 {
        let (status, json) = request(server.addr, None);
        assert_eq!(status, 200, "{json}");
    }
    let (ip, _) = emu.ips();
    assert_eq!(emu.proxy_connections(&ip), 5, "one connection per request");
    assert_eq!(
        emu.count("generateEphemeralCert", "proj:py-cli"),
        1,
        "the first request refreshes; the next four load its certificate from the directory"
    );
    assert_eq!(emu.count("connectSettings", "proj:py-cli"), 1);
    drop(server);
    std::fs::remove_dir_all(&cache).unwrap();
}

/// The tutorial's own setting: the IAM service account's database user, no
/// password, over Private Service Connect (`ip_type="psc"`), under `wasmtime
/// serve`.
#[test]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
fn the_python_app_logs_in_with_iam_over_psc() {
    let emu = Emulator::start(&["proj:us-central1:py-psc,backend={pg},psc=true"]);
    let i = &emu.ready["instances"][0];
    let psc_ip = i["psc_ip"].as_str().unwrap().to_string();
    let name = i["psc_dns_name"].as_str().unwrap();
    let _hosts = HostsEntry::add(&psc_ip, name.trim_end_matches('.'));
    let db = database("py_psc");
    let env = settings(
        &emu,
        "proj:us-central1:py-psc",
        &db,
        Login::Iam(IAM_USER),
        "psc",
    );
    let server = wasmtime_serve(&emu, &env, &[]);

    post_then_find(server.addr, "posted as the service account");
    assert_eq!(
        emu.proxy_connections(&psc_ip),
        2,
        "both requests dialled the PSC endpoint"
    );
    let (public_ip, _) = emu.ips();
    assert_eq!(emu.proxy_connections(&public_ip), 0);
}

/// The key-value build on the project's host: fresh instances share one
/// certificate through the host's store.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn fresh_instances_share_the_certificate_through_the_hosts_store() {
    let emu = Emulator::start(&["proj:us-central1:py-kv,backend={pg}"]);
    let db = database("py_kv");
    let server = host_serve(
        &emu,
        settings(
            &emu,
            "proj:us-central1:py-kv",
            &db,
            Login::Password,
            "public",
        ),
    )
    .await;
    let addr = server.addr();
    tokio::task::spawn_blocking(move || post_then_find(addr, "posted on the project's host"))
        .await
        .unwrap();
    for _ in 0..8 {
        let (status, json) = request_async(addr, None).await;
        assert_eq!(status, 200, "{json}");
    }
    assert_eq!(
        emu.count("generateEphemeralCert", "proj:py-kv"),
        1,
        "ten fresh instances, one refresh"
    );
}

/// A wrong instance name, an instance that cannot be reached, a refused IAM
/// login and a connection cut mid-query: each request is answered with an
/// error status and a message naming the cause, no token in it, and the next
/// request with the fault gone works.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn failures_answer_with_a_status_naming_the_cause() {
    const INSTANCE: &str = "proj:us-central1:py-bad";
    let emu = Emulator::start(&[&format!("{INSTANCE},backend={{pg}}")]);
    let db = database("py_bad");
    let answer = |env: Vec<(String, String)>| {
        let emu = &emu;
        async move {
            let server = host_serve(emu, env).await;
            let answer = request_async(server.addr(), None).await;
            server.shutdown().await;
            answer
        }
    };
    let mut failures = vec![];

    // A name that is not project:region:instance.
    let env = settings(&emu, "proj-only", &db, Login::Password, "public");
    let (status, json) = answer(env).await;
    let error = error_of(&json);
    assert_eq!(status, 500, "{json}");
    assert!(
        error.starts_with("connector error (invalid-instance-name): "),
        "{error}"
    );
    assert!(error.contains("proj-only"), "{error}");
    failures.push(error);

    // The instance's proxy closes every connection before TLS.
    emu.set_proxy(INSTANCE, "refuse", None);
    let password = || settings(&emu, INSTANCE, &db, Login::Password, "public");
    let (status, json) = answer(password()).await;
    let error = error_of(&json);
    assert_eq!(status, 502, "{json}");
    assert!(
        error.starts_with("connector error (tls): ")
            || error.starts_with("connector error (dial): "),
        "{error}"
    );
    failures.push(error);
    emu.set_proxy(INSTANCE, "normal", None);
    assert_eq!(answer(password()).await.0, 200);

    // IAM login as a user the certificate is not for: the server refuses it.
    let env = settings(
        &emu,
        INSTANCE,
        &db,
        Login::Iam("dev-user@example.com"),
        "public",
    );
    let (status, json) = answer(env).await;
    let error = error_of(&json);
    assert_eq!(status, 502, "{json}");
    assert!(
        error.starts_with("database error 28000: Cloud SQL IAM ")
            && error.ends_with("authentication failed for user \"dev-user@example.com\""),
        "{error}"
    );
    failures.push(error);
    let env = settings(&emu, INSTANCE, &db, Login::Iam(IAM_USER), "public");
    assert_eq!(
        answer(env).await.0,
        200,
        "the certificate's own user logs in"
    );

    // The connection dies while the answer to the SELECT streams in: a
    // 300 kB message, cut after 100 kB from the server.
    insert_large_message(&db, 300_000);
    emu.set_proxy(INSTANCE, "drop-after-bytes", Some(100_000));
    let (status, json) = answer(password()).await;
    let error = error_of(&json);
    assert_eq!(status, 502, "{json}");
    assert!(
        error.starts_with("connector error (closed): ")
            || error.starts_with("connector error (io): "),
        "{error}"
    );
    failures.push(error);
    emu.set_proxy(INSTANCE, "normal", None);
    assert_eq!(answer(password()).await.0, 200);

    let tokens = emu.issued_tokens();
    let secrets: Vec<&str> = tokens
        .iter()
        .map(String::as_str)
        .chain(["app-password"])
        .collect();
    for error in &failures {
        println!("{error}");
        assert_no_secrets(error, &secrets);
    }
}
