//! Test environment for the end-to-end tests: the emulator binary (one per
//! test), the PostgreSQL started by scripts/test, the embedded wasmtime host and
//! the built wasm artifacts.

#![allow(dead_code)] // each test binary uses a part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use gcp_db_host::connector::{Config, ConnectOptions, Credentials, Error, IpType, ResourceAny};
use gcp_db_host::query::{Login, QueryError};
use gcp_db_host::{ConnectorInstance, Host};
use serde_json::Value;

/// A value the environment must provide, with the way to provide it.
fn required_env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the end-to-end tests with scripts/test"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// A built artifact named by the environment variable `var` (scripts/test
/// sets them); panics, naming the fix, when it is unset or missing.
pub fn artifact(var: &str) -> PathBuf {
    let p = PathBuf::from(required_env(var));
    assert!(
        p.exists(),
        "{} ({var}) is missing: scripts/test builds it",
        p.display()
    );
    p
}

/// The real `wasmtime serve` (`$GCPDB_WASMTIME`), killed on drop.
pub struct WasmtimeServe {
    child: Child,
    pub addr: std::net::SocketAddr,
}

impl WasmtimeServe {
    /// `wasmtime serve FLAGS --addr <a free port> --dir HOST::GUEST…
    /// --env K=V… app`; returns once the port accepts connections (compiling
    /// a large component takes a while: up to 5 minutes).
    pub fn start(
        flags: &[&str],
        app: &Path,
        env: &[(&str, &str)],
        dirs: &[(&Path, &str)],
    ) -> WasmtimeServe {
        use std::collections::HashSet;
        use std::net::{TcpListener, TcpStream};
        use std::time::{Duration, Instant};
        // Two tests starting servers at once could be handed the same free
        // port (the listener is closed before wasmtime binds it): one would
        // fail to bind, and its test would talk to the other's server.
        static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
        let addr = loop {
            let addr = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap();
            let mut ports = HANDED_OUT.lock().unwrap();
            if ports.get_or_insert_with(HashSet::new).insert(addr.port()) {
                break addr;
            }
        };
        let mut cmd = Command::new(artifact("GCPDB_WASMTIME"));
        cmd.arg("serve")
            .args(flags)
            .arg("--addr")
            .arg(addr.to_string());
        for (host, guest) in dirs {
            cmd.arg("--dir").arg(format!("{}::{guest}", host.display()));
        }
        for (k, v) in env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        let child = cmd
            .arg(app)
            .stdin(Stdio::null())
            .spawn()
            .expect("start wasmtime serve");
        let mut server = WasmtimeServe { child, addr };
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("wasmtime serve exited with {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "wasmtime serve did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Listening, and not another process on the port it failed to bind.
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("wasmtime serve exited with {status}");
        }
        server
    }
}

impl Drop for WasmtimeServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The connector component.
pub fn component() -> PathBuf {
    artifact("GCP_DB_CONNECTOR_WASM")
}

/// The connector component built with `wasi:keyvalue`.
pub fn component_kv() -> PathBuf {
    artifact("GCP_DB_CONNECTOR_KV_WASM")
}

/// The pg-query example command.
pub fn pg_query() -> PathBuf {
    artifact("GCPDB_PG_QUERY")
}

/// `127.0.0.1:PORT` of the test PostgreSQL (roles postgres/trust and
/// app/app-password, table messages).
pub fn postgres() -> String {
    required_env("GCPDB_TEST_PG")
}

/// The mysql-query example command.
pub fn mysql_query() -> PathBuf {
    artifact("GCPDB_MYSQL_QUERY")
}

/// `127.0.0.1:PORT` of the test MariaDB, standing in for Cloud SQL for MySQL
/// (users app/app-password and the passwordless IAM users connector-sa and
/// dev-user, database appdb with table messages).
pub fn mysql() -> String {
    required_env("GCPDB_TEST_MYSQL")
}

/// One wasmtime host for the whole test binary (the engine and the compiled
/// components are shared; every instance gets a fresh store).
pub fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| Host::new().expect("wasmtime host"))
}

/// A connector made from `config` in a fresh component instance.
pub async fn connector(config: Config) -> (ConnectorInstance, ResourceAny) {
    let mut inst = host()
        .instantiate_connector(&component(), vec![], vec![])
        .await
        .unwrap();
    let connector = inst.new_connector(config).await.unwrap();
    (inst, connector)
}

/// A connector made from `config` in a fresh instance of the
/// `connector-component-kv` build on the host's store (one per test binary,
/// outliving each test's emulator), as a serverless host makes one per
/// request.
pub async fn kv_connector(config: Config) -> (ConnectorInstance, ResourceAny) {
    let wasm = component_kv();
    let opts = gcp_db_host::ConnectorOptions {
        keyvalue: true,
        ..gcp_db_host::ConnectorOptions::default()
    };
    let mut inst = host()
        .instantiate_connector_with(&wasm, &opts)
        .await
        .unwrap();
    let connector = inst.new_connector(config).await.unwrap();
    (inst, connector)
}

/// The test PostgreSQL's trust-auth superuser.
pub fn superuser() -> Login {
    Login {
        user: "postgres".into(),
        password: None,
        database: "postgres".into(),
    }
}

/// Connect options choosing `ip_type`.
pub fn via(ip_type: IpType) -> ConnectOptions {
    ConnectOptions {
        ip_type: Some(ip_type),
        ..ConnectOptions::default()
    }
}

/// The connector's error of a query that must fail at connect.
pub fn connect_error<T: std::fmt::Debug>(r: Result<T, QueryError>) -> Error {
    match r {
        Err(QueryError::Connect(e)) => e,
        other => panic!("expected a connect error, got {other:?}"),
    }
}

/// A running emulator, killed on drop.
pub struct Emulator {
    child: Child,
    pub ready: Value,
    pub state_dir: PathBuf,
    /// Its stderr (the request log), also passed through to the test's.
    log: Arc<Mutex<String>>,
}

impl Emulator {
    /// Starts the emulator with these `--instance` specs; `{pg}` in a spec is
    /// replaced by the test PostgreSQL's address, `{mysql}` by the test MariaDB's.
    pub fn start(specs: &[&str]) -> Emulator {
        let bin = std::env::var_os("GCPDB_EMULATOR")
            .map(PathBuf::from)
            .unwrap_or_else(|| target_dir().join("release/gcp-emulator"));
        let state_dir = std::env::temp_dir().join(format!(
            "gcpdb-e2e-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&state_dir).unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg("--state-dir").arg(&state_dir);
        for s in specs {
            let mut spec = s.to_string();
            if spec.contains("{pg}") {
                spec = spec.replace("{pg}", &postgres());
            }
            if spec.contains("{mysql}") {
                spec = spec.replace("{mysql}", &mysql());
            }
            cmd.arg("--instance").arg(spec);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("emulator ready line {line:?}: {e}"));
        Emulator {
            child,
            ready,
            state_dir,
            log,
        }
    }

    /// Everything the emulator wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every access token the emulator issued.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.control_json("/tokens")["issued"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    }

    pub fn admin_endpoint(&self) -> String {
        self.ready["admin_endpoint"].as_str().unwrap().to_string()
    }

    pub fn metadata_host(&self) -> String {
        self.ready["metadata_host"].as_str().unwrap().to_string()
    }

    pub fn service_account_json(&self) -> String {
        std::fs::read_to_string(self.ready["service_account_file"].as_str().unwrap()).unwrap()
    }

    pub fn authorized_user_json(&self) -> String {
        std::fs::read_to_string(self.ready["authorized_user_file"].as_str().unwrap()).unwrap()
    }

    /// The service account's RSA private key (PEM), reusable as a connector key.
    pub fn service_account_key_pem(&self) -> String {
        let v: Value = serde_json::from_str(&self.service_account_json()).unwrap();
        v["private_key"].as_str().unwrap().to_string()
    }

    /// A connector config using the service-account key and this emulator
    /// (both Admin APIs).
    pub fn config(&self) -> Config {
        Config {
            credentials: Some(Credentials::Json(self.service_account_json())),
            admin_endpoint: Some(self.admin_endpoint()),
            alloydb_admin_endpoint: Some(
                self.ready["alloydb_admin_endpoint"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ),
            ..Config::default()
        }
    }

    /// The ready line's entry for `name`.
    pub fn instance(&self, name: &str) -> &Value {
        self.ready["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("no instance {name} in {}", self.ready))
    }

    /// A token for `scope` (e.g. `cloud-platform`) from the emulator's
    /// metadata server, as a caller holding its own token would have.
    pub fn metadata_token(&self, scope: &str) -> String {
        let url = format!(
            "http://{}/computeMetadata/v1/instance/service-accounts/default/token?scopes=https://www.googleapis.com/auth/{scope}",
            self.metadata_host()
        );
        let body = ureq::get(&url)
            .header("Metadata-Flavor", "Google")
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        v["access_token"].as_str().unwrap().to_string()
    }

    fn control(&self, path: &str) -> String {
        format!("{}{path}", self.ready["control_endpoint"].as_str().unwrap())
    }

    /// The Admin API call counters.
    pub fn calls(&self) -> Value {
        self.control_json("/calls")
    }

    /// The JSON a control endpoint answers a GET of `path` with.
    fn control_json(&self, path: &str) -> Value {
        let body = ureq::get(&self.control(path))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        serde_json::from_str(&body).unwrap()
    }

    /// The public and private IPs of the first instance.
    pub fn ips(&self) -> (String, Option<String>) {
        let i = &self.ready["instances"][0];
        (
            i["public_ip"].as_str().unwrap().to_string(),
            i["private_ip"].as_str().map(str::to_string),
        )
    }

    /// TCP connections the proxy accepted on `ip`.
    pub fn proxy_connections(&self, ip: &str) -> u64 {
        self.calls()["proxyConnections"][ip].as_u64().unwrap_or(0)
    }

    /// How often `method` was called for `project:instance`.
    pub fn count(&self, method: &str, project_instance: &str) -> u64 {
        self.calls()[method][project_instance].as_u64().unwrap_or(0)
    }

    /// The next `count` calls of `method` (`connectSettings`,
    /// `generateEphemeralCert`) fail with `status`.
    pub fn fail(&self, method: &str, status: u16, count: u32) {
        ureq::post(&self.control("/faults"))
            .content_type("application/json")
            .send(format!(
                r#"{{"method":"{method}","status":{status},"count":{count}}}"#
            ))
            .unwrap();
    }

    /// The next `count` calls of `method` get a broken answer: `mode` is
    /// `malformed`, `truncated`, `oversized`, `drop-field` (with `field`, a
    /// dotted path), `ca-not-pem`, `cert-other-key` or `cert-expired`.
    pub fn tamper(&self, method: &str, mode: &str, field: Option<&str>, count: u32) {
        ureq::post(&self.control("/faults/response"))
            .content_type("application/json")
            .send(
                serde_json::json!({"method": method, "mode": mode, "field": field, "count": count})
                    .to_string(),
            )
            .unwrap();
    }

    /// Clears every queued failure, latency and broken answer.
    pub fn reset_faults(&self) {
        ureq::post(&self.control("/faults/reset"))
            .send_empty()
            .unwrap();
    }

    /// Makes the proxy of `instance` treat new connections `normal`ly, or
    /// `refuse` them (accept, then close at once), or drop them after the
    /// handshake (`drop-after-handshake`).
    pub fn set_proxy_fault(&self, instance: &str, mode: &str) {
        self.instance_control(instance, "proxy", serde_json::json!({"mode": mode}));
    }

    /// Every later call of `method` is answered after `ms` milliseconds.
    pub fn slow(&self, method: &str, ms: u64) {
        ureq::post(&self.control("/faults"))
            .content_type("application/json")
            .send(format!(r#"{{"method":"{method}","latency_ms":{ms}}}"#))
            .unwrap();
    }

    /// The next `count` answers of `method` (or `token`) send their status
    /// and headers at once, then their body never (`stall`) or a byte every
    /// `delay_ms` (`trickle`).
    pub fn slow_body(&self, method: &str, body: &str, delay_ms: Option<u64>, count: u32) {
        ureq::post(&self.control("/faults"))
            .content_type("application/json")
            .send(
                serde_json::json!({"method": method, "body": body, "delay_ms": delay_ms, "count": count})
                    .to_string(),
            )
            .unwrap();
    }

    /// Makes the proxy of `instance` send its TLS server flight a byte
    /// every `delay_ms` to new connections.
    pub fn trickle_handshake(&self, instance: &str, delay_ms: u64) {
        self.instance_control(
            instance,
            "proxy",
            serde_json::json!({"mode": "trickle-server-flight", "delay_ms": delay_ms}),
        );
    }

    /// Makes the proxy of `instance` present a `valid`, `wrong-ca` or
    /// `wrong-cn` certificate.
    pub fn set_server_cert(&self, instance: &str, mode: &str) {
        self.instance_control(instance, "server-cert", serde_json::json!({"mode": mode}));
    }

    /// Makes the proxy of `instance` treat new connections as `mode` says
    /// (`normal`, `refuse`, `drop-after-handshake`, `drop-after-bytes` with
    /// `bytes`, `cut-after-client-hello`, `cut-mid-server-flight`).
    pub fn set_proxy(&self, instance: &str, mode: &str, bytes: Option<u64>) {
        self.instance_control(
            instance,
            "proxy",
            serde_json::json!({"mode": mode, "bytes": bytes}),
        );
    }

    /// What every proxy of the emulator saw, summed over their addresses.
    pub fn proxy_traffic(&self) -> ProxyTraffic {
        let calls = self.calls();
        let sum = |key: &str| {
            calls[key]
                .as_object()
                .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
        };
        ProxyTraffic {
            connections: sum("proxyConnections"),
            handshakes: sum("proxyHandshakes"),
            client_bytes: sum("proxyClientBytes"),
            open: sum("proxyOpenConnections"),
        }
    }

    /// Makes the AlloyDB proxy of `instance` answer the metadata exchange
    /// `normal`ly, with an `error` (`message`), `truncated`, `oversized`,
    /// `not-mdx` or `silent`.
    pub fn set_mdx(&self, instance: &str, mode: &str, message: Option<&str>) {
        self.instance_control(
            instance,
            "mdx",
            serde_json::json!({"mode": mode, "message": message}),
        );
    }

    /// The emulator's DNS-over-HTTPS (RFC 8484) URL,
    /// `http://127.0.0.1:P/dns-query` (GET `?dns=` or POST
    /// `application/dns-message`).
    pub fn dns_url(&self) -> String {
        self.ready["dns_endpoint"].as_str().unwrap().to_string()
    }

    /// Replaces the DoH records of `name` with these TXT values (one record
    /// each, no CNAME), all with `ttl` seconds.
    pub fn set_dns_txt(&self, name: &str, txt: &[&str], ttl: u32) {
        self.control_post(
            "/dns",
            serde_json::json!({"name": name, "txt": txt, "ttl": ttl}),
        );
    }

    /// Replaces the DoH records of `name` with a CNAME to `target` (no TXT).
    pub fn set_dns_cname(&self, name: &str, target: &str, ttl: u32) {
        self.control_post(
            "/dns",
            serde_json::json!({"name": name, "cname": target, "ttl": ttl}),
        );
    }

    /// Removes `name` from the DoH zone: it answers NXDOMAIN.
    pub fn delete_dns(&self, name: &str) {
        self.control_post("/dns", serde_json::json!({"name": name, "delete": true}));
    }

    /// The next `count` DoH queries of `name` (`None`: all, until
    /// [`Emulator::reset_faults`] or [`Emulator::reset_dns_faults`]) get
    /// `answer`: `servfail`, `nxdomain`, `empty` (NOERROR, no records),
    /// `malformed` (200, not a DNS message), `http-500`, or `slow` (the real
    /// answer; needs `delay_ms`), each after `delay_ms` if given.
    pub fn dns_fault(&self, name: &str, answer: &str, delay_ms: Option<u64>, count: Option<u32>) {
        self.control_post(
            "/dns/faults",
            serde_json::json!({"name": name, "answer": answer, "delay_ms": delay_ms, "count": count}),
        );
    }

    /// Drops the DNS faults only.
    pub fn reset_dns_faults(&self) {
        self.control_post("/dns/faults/reset", serde_json::json!({}));
    }

    /// How many DoH queries (of any type) asked about `name` (any case,
    /// trailing dot or not).
    pub fn dns_queries(&self, name: &str) -> u64 {
        let key = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        self.calls()["dnsQuery"][key.as_str()].as_u64().unwrap_or(0)
    }

    /// The types (`TXT`, `CNAME`, `A`, …) of the DoH queries about `name`,
    /// in order.
    pub fn dns_query_types(&self, name: &str) -> Vec<String> {
        let key = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        self.calls()["dnsQueryType"][key.as_str()]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many `resolveConnectSettings` calls the Admin API got, for any
    /// DNS name (failed ones too).
    pub fn resolve_connect_settings_calls(&self) -> u64 {
        self.calls()["resolveConnectSettings"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
    }

    /// The PSC DNS name of Cloud SQL `instance` (`….<region>.sql-psc.goog.`,
    /// trailing dot), as its `connectSettings` `dnsNames` lists it; the
    /// instance must have been started with `psc=true`.
    pub fn psc_dns_name(&self, instance: &str) -> String {
        self.instance(instance)["psc_dns_name"]
            .as_str()
            .unwrap_or_else(|| panic!("{instance} has no PSC DNS name: start it with psc=true"))
            .to_string()
    }

    /// POSTs `body` to the control endpoint `path`, which must accept it.
    fn control_post(&self, path: &str, body: Value) {
        ureq::post(&self.control(path))
            .content_type("application/json")
            .send(body.to_string())
            .unwrap();
    }

    /// POSTs `body` to the control endpoint `what` of `instance` (an AlloyDB
    /// URI travels as one path segment).
    fn instance_control(&self, instance: &str, what: &str, body: Value) {
        let segment = instance.replace('/', "%2F");
        ureq::post(&self.control(&format!("/instances/{segment}/{what}")))
            .content_type("application/json")
            .send(body.to_string())
            .unwrap();
    }
}

/// What the emulator's proxies saw (see [`Emulator::proxy_traffic`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyTraffic {
    /// TCP connections accepted.
    pub connections: u64,
    /// TLS handshakes completed.
    pub handshakes: u64,
    /// Application bytes received from clients after their handshakes.
    pub client_bytes: u64,
    /// Connections open now.
    pub open: u64,
}

impl ProxyTraffic {
    /// What happened between `before` and `self` (`open` is `self`'s).
    pub fn since(self, before: ProxyTraffic) -> ProxyTraffic {
        ProxyTraffic {
            connections: self.connections - before.connections,
            handshakes: self.handshakes - before.handshakes,
            client_bytes: self.client_bytes - before.client_bytes,
            open: self.open,
        }
    }
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// A line in /etc/hosts, removed on drop: the only way to make a PSC DNS name
/// resolve to the emulator's loopback address for every resolver (wasmtime's
/// `ip-name-lookup` and Python's) without a DNS server. Needs root, as
/// scripts/test has in CI.
pub struct HostsEntry {
    line: String,
}

const HOSTS: &str = "/etc/hosts";

impl HostsEntry {
    pub fn add(ip: &str, name: &str) -> HostsEntry {
        let line = format!("{ip} {name} # gcp-db-connector test {}", std::process::id());
        let mut hosts = std::fs::read_to_string(HOSTS).unwrap_or_default();
        if !hosts.is_empty() && !hosts.ends_with('\n') {
            hosts.push('\n');
        }
        hosts.push_str(&line);
        hosts.push('\n');
        std::fs::write(HOSTS, hosts).unwrap_or_else(|e| {
            panic!("cannot map {name} in {HOSTS}: {e} (the PSC test needs root, as in CI)")
        });
        HostsEntry { line }
    }
}

impl Drop for HostsEntry {
    fn drop(&mut self) {
        if let Ok(hosts) = std::fs::read_to_string(HOSTS) {
            let kept: String = hosts
                .lines()
                .filter(|l| *l != self.line)
                .map(|l| format!("{l}\n"))
                .collect();
            let _ = std::fs::write(HOSTS, kept);
        }
    }
}

/// Panics if `text` (an error message or a log line) holds a secret: any of
/// `secrets` (a PEM counts line by line, so part of a key is caught too; empty
/// ones are ignored), a PEM private key, a Google OAuth access token (`ya29.`),
/// or a JWT (`eyJ….….…`). The panic message shows `text` with the secrets
/// blanked out.
pub fn assert_no_secrets(text: &str, secrets: &[&str]) {
    let parts: Vec<&str> = secrets
        .iter()
        .flat_map(|secret| {
            if secret.contains("-----BEGIN") {
                secret
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                    .collect()
            } else {
                vec![secret.trim()]
            }
        })
        .filter(|p| !p.is_empty())
        .collect();
    let redacted = parts
        .iter()
        .fold(text.to_string(), |t, p| t.replace(p, "<SECRET>"));
    for part in &parts {
        assert!(
            !text.contains(part),
            "a secret ({} characters) leaked into: {redacted}",
            part.len()
        );
    }
    assert!(
        !text.contains("PRIVATE KEY"),
        "a private key leaked into: {redacted}"
    );
    assert!(
        !text.contains("ya29."),
        "an access token leaked into: {redacted}"
    );
    if let Some(jwt) = find_jwt(text) {
        panic!("a JWT ({} characters) leaked into: {redacted}", jwt.len());
    }
}

/// The first JWT-shaped run in `text`: `eyJ` (base64url of `{"`) and three
/// non-empty base64url parts joined by dots.
fn find_jwt(text: &str) -> Option<&str> {
    let b64url = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices("eyJ").find_map(|(start, _)| {
        let run = &text[start..];
        let end = run
            .find(|c: char| !(b64url(c) || c == '.'))
            .unwrap_or(run.len());
        let candidate = &run[..end];
        let parts: Vec<&str> = candidate.split('.').collect();
        (parts.len() >= 3 && parts[..3].iter().all(|p| !p.is_empty())).then_some(candidate)
    })
}

/// `redis://127.0.0.1:PORT` of the test Redis scripts/test starts (no
/// persistence; tests keep apart by key prefix).
pub fn redis() -> String {
    required_env("GCPDB_TEST_REDIS")
}
