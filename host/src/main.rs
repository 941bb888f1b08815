//! `gcp-db-host`: run a WebAssembly command or serve a wasi:http component
//! with the project's WASI policy, query through the connector component,
//! compose components, or list a component's imports.

#![forbid(unsafe_code)]

use std::iter::Peekable;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::slice::Iter;

use gcp_db_host::bench::BenchOptions;
use gcp_db_host::connector::{self, Config, ConnectOptions, ConnectTimings, Credentials, IpType};
use gcp_db_host::keyvalue::DEFAULT_BUCKETS;
use gcp_db_host::query::{connect_and_query, Login};
use gcp_db_host::redis_store::DEFAULT_PREFIX;
use gcp_db_host::{CommandOptions, Host, KeyValueStore, RedisOptions, RedisStore, ServeOptions};

const USAGE: &str = "\
usage:
  gcp-db-host run [--env K=V]... [--dir HOST::GUEST]... [--keyvalue [BUCKET,...]]
                  [--redis URL [--redis-prefix PREFIX]] <file.wasm> [args...]
      Run a wasi:cli command with inherited stdio and exit with its status.
      Network: TCP and HTTP to loopback only. --env K without =V passes the
      host's value of K. --dir preopens HOST read-only as GUEST. --keyvalue
      provides wasi:keyvalue/store and atomics (0.2.0-draft) and Spin's
      spin:key-value@3.0.0 (a store label names a bucket), in memory, with
      the buckets named (default: \"default\" and \"gcp-db-connector\"); an argument after --keyvalue
      that ends in .wasm is the component, not a bucket list (or write
      --keyvalue=BUCKET,...). --redis URL (redis://[user:password@]host:port[/db],
      or env:NAME to read it from the host's variable NAME, out of the process
      list): the store on that Redis server instead of in memory (implies --keyvalue),
      shared by every host process given the same server and prefix: bucket B's
      key K is the Redis string PREFIX:B:K (--redis-prefix, default
      \"gcp-db-host\"), increment is INCRBY. Redis down or slow (timeouts: 1 s
      to connect, 500 ms per command) is a store error for the guest, not a
      failed run.
  gcp-db-host serve [--addr 127.0.0.1:8080] [--env K=V]... [--dir HOST::GUEST]...
                    [--keyvalue [BUCKET,...]] [--redis URL [--redis-prefix PREFIX]] <app.wasm>
      Serve a wasi:http/proxy component over HTTP/1.1 like `wasmtime serve`
      (WASI 0.2 incoming-handler, or a WASI 0.3 wasi:http/handler such as a
      Spin spin-sdk 7 app, as with -W component-model-async=y -S p3=y):
      a fresh instance per request, requests concurrently, until Ctrl-C.
      --addr: a loopback address (default 127.0.0.1:8080; port 0 picks one).
      --env, --dir and the network policy as for run. --keyvalue: one store
      shared by every request's instance (what the connector's certificate
      cache needs); without it a component importing wasi:keyvalue or
      spin:key-value is refused at start. --redis: as for run, so that several
      serve processes (on several machines) share the store. A request the
      guest cannot answer gets a 500 with the error.
  gcp-db-host compose <app.wasm> --plug <plug.wasm> -o <out.wasm>
      Plug the plug's exports into the app's matching imports, like `wac plug`
      (e.g. the connector component into an app importing
      gcp:db-connector/connector). All other imports of both stay imports.
  gcp-db-host query [--component FILE] [--admin-endpoint URL] [--alloydb-admin-endpoint URL]
                    [--credentials-file PATH] [--ip-type public|private|psc] [--iam]
                    [--user U] [--password P] [--database D] [--connects N] INSTANCE SQL
      Connect to a Cloud SQL or AlloyDB instance through the connector
      component (WIT exports, called by the host) N times with one connector,
      print each connect's timings, then the rows of SQL (Postgres). --iam:
      automatic IAM database authentication (no password). Component: --component, $GCP_DB_CONNECTOR_WASM
      or the build output.
  gcp-db-host bench --instance NAME [--throughput-instance LABEL=NAME]... [--direct HOST:PORT]
                    [--admin-endpoint URL] [--credentials-file PATH] [--user U] [--password P]
                    [--database D] [--runs N] [--cold-runs N] [--throughput-runs N]
                    [--throughput-mb N] [--component FILE] [--component-kv FILE]
      The connector's side of scripts/bench: cold connects in fresh instances
      (--cold-runs of them, default --runs), warm connects, fresh instances
      with the store warm (with the _kv build), and a COPY of N MB through
      each throughput instance and direct (with the process's CPU time over
      it); prints the raw samples as JSON on stdout (bench/run.py makes the
      table).
  gcp-db-host imports <file.wasm>
      Print the component's imports, one per line.
  gcp-db-host exports <file.wasm>
      Print the component's exports, one per line.";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(args).await {
        Ok(code) => code,
        Err(message) => {
            eprintln!("gcp-db-host: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Vec<String>) -> Result<ExitCode, String> {
    let Some((sub, rest)) = args.split_first() else {
        return Err(format!("missing command\n{USAGE}"));
    };
    match sub.as_str() {
        "run" => run_command(rest).await,
        "serve" => serve(rest).await,
        "compose" => compose(rest),
        "query" => query(rest).await,
        "bench" => bench(rest).await,
        "imports" | "exports" => {
            let [wasm] = rest else {
                return Err(format!("{sub} takes exactly one file\n{USAGE}"));
            };
            let host = Host::new().map_err(|e| format!("{e:#}"))?;
            let path = PathBuf::from(wasm);
            let names = if sub == "imports" {
                host.imports(&path)
            } else {
                host.exports(&path)
            }
            .map_err(|e| format!("{e:#}"))?;
            for name in names {
                println!("{name}");
            }
            Ok(ExitCode::SUCCESS)
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    }
}

/// `run`'s command line.
#[derive(Debug)]
struct RunArgs {
    wasm: PathBuf,
    opts: CommandOptions,
    store: StoreArgs,
}

/// The store flags of `run` and `serve`.
#[derive(Debug, Default, PartialEq, Eq)]
struct StoreArgs {
    /// The buckets of `--keyvalue`, when given.
    buckets: Option<Vec<String>>,
    /// `--redis URL`.
    redis: Option<String>,
    /// `--redis-prefix PREFIX`.
    prefix: Option<String>,
}

impl StoreArgs {
    /// Whether a store was asked for (`--keyvalue` or `--redis`).
    fn enabled(&self) -> bool {
        self.buckets.is_some() || self.redis.is_some()
    }

    /// Takes `arg` (and its value from `rest`) if it is a store flag.
    fn parse(&mut self, arg: &str, rest: &mut Peekable<Iter<'_, String>>) -> Result<bool, String> {
        match arg {
            flag if is_keyvalue_flag(flag) => self.buckets = Some(parse_keyvalue(flag, rest)?),
            "--redis" => self.redis = Some(rest.next().ok_or("--redis needs a URL")?.clone()),
            "--redis-prefix" => {
                let prefix = rest.next().ok_or("--redis-prefix needs a prefix")?;
                if prefix.is_empty() {
                    return Err("--redis-prefix: empty".into());
                }
                self.prefix = Some(prefix.clone());
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// A check of the combination, once all flags are read.
    fn check(&self) -> Result<(), String> {
        if self.prefix.is_some() && self.redis.is_none() {
            return Err("--redis-prefix needs --redis".into());
        }
        Ok(())
    }
}

fn parse_run(args: &[String]) -> Result<RunArgs, String> {
    let mut opts = CommandOptions {
        inherit_stdio: true,
        ..Default::default()
    };
    let mut store = StoreArgs::default();
    let mut rest = args.iter().peekable();
    let wasm = loop {
        let Some(arg) = rest.next() else {
            return Err(format!("run: missing <file.wasm>\n{USAGE}"));
        };
        match arg.as_str() {
            "--env" => {
                let spec = rest.next().ok_or("--env needs K=V")?;
                opts.env.push(parse_env(spec)?);
            }
            "--dir" => {
                let spec = rest.next().ok_or("--dir needs HOST::GUEST")?;
                opts.dirs.push(parse_dir(spec)?);
            }
            flag if store.parse(flag, &mut rest)? => {}
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            file => break PathBuf::from(file),
        }
    };
    store.check()?;
    opts.args = rest.cloned().collect();
    opts.keyvalue = store.enabled();
    Ok(RunArgs { wasm, opts, store })
}

/// A host whose shared store is what `store` says: in memory with its
/// buckets (the default store without), or on Redis.
async fn new_host(store: StoreArgs) -> Result<Host, String> {
    let buckets = store
        .buckets
        .unwrap_or_else(|| DEFAULT_BUCKETS.map(str::to_string).to_vec());
    let Some(url) = store.redis else {
        let host = Host::new().map_err(|e| format!("{e:#}"))?;
        return Ok(host.with_keyvalue_store(KeyValueStore::new(buckets)));
    };
    let options = RedisOptions {
        prefix: store.prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_string()),
        buckets,
        ..RedisOptions::default()
    };
    // `env:NAME` keeps a password out of the process list.
    let url = match url.strip_prefix("env:") {
        Some(name) => std::env::var(name)
            .map_err(|_| format!("--redis env:{name}: not set in the host environment"))?,
        None => url,
    };
    let redis = RedisStore::open(&url, options).map_err(|e| format!("--redis: {e}"))?;
    // Only a warning: the store connects on use, and until Redis answers
    // the connector merely refreshes more.
    if let Err(e) = redis.ping().await {
        eprintln!("gcp-db-host: warning: {e}; going on, store calls fail until it answers");
    }
    let host = Host::new().map_err(|e| format!("{e:#}"))?;
    Ok(host.with_redis_store(redis))
}

async fn run_command(args: &[String]) -> Result<ExitCode, String> {
    let RunArgs { wasm, opts, store } = parse_run(args)?;
    let host = new_host(store).await?;
    let output = host
        .run_command(&wasm, &opts)
        .await
        .map_err(|e| format!("{}: {e:?}", wasm.display()))?;
    Ok(match (output.success, output.exit_code) {
        (true, _) => ExitCode::SUCCESS,
        // Exit statuses are 0..=255 on Unix; anything else is just a failure.
        (false, Some(code)) => u8::try_from(code).map_or(ExitCode::FAILURE, ExitCode::from),
        (false, None) => ExitCode::FAILURE,
    })
}

/// `serve`'s command line.
#[derive(Debug)]
struct ServeArgs {
    wasm: PathBuf,
    opts: ServeOptions,
    store: StoreArgs,
}

/// `serve`'s port when `--addr` is not given (wasmtime serve's default port,
/// on loopback).
const DEFAULT_SERVE_ADDR: &str = "127.0.0.1:8080";

fn parse_serve(args: &[String]) -> Result<ServeArgs, String> {
    let mut opts = ServeOptions {
        addr: DEFAULT_SERVE_ADDR
            .parse()
            .map_err(|_| "bad default address".to_string())?,
        ..Default::default()
    };
    let mut store = StoreArgs::default();
    let mut wasm = None;
    let mut rest = args.iter().peekable();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--addr" => {
                let spec = rest.next().ok_or("--addr needs HOST:PORT")?;
                opts.addr = spec
                    .parse::<SocketAddr>()
                    .map_err(|_| format!("--addr {spec:?}: expected e.g. 127.0.0.1:8080"))?;
            }
            "--env" => {
                let spec = rest.next().ok_or("--env needs K=V")?;
                opts.env.push(parse_env(spec)?);
            }
            "--dir" => {
                let spec = rest.next().ok_or("--dir needs HOST::GUEST")?;
                opts.dirs.push(parse_dir(spec)?);
            }
            flag if store.parse(flag, &mut rest)? => {}
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            file if wasm.is_none() => wasm = Some(PathBuf::from(file)),
            extra => return Err(format!("serve takes one component, not also {extra:?}")),
        }
    }
    let wasm = wasm.ok_or(format!("serve: missing <app.wasm>\n{USAGE}"))?;
    store.check()?;
    opts.keyvalue = store.enabled();
    Ok(ServeArgs { wasm, opts, store })
}

async fn serve(args: &[String]) -> Result<ExitCode, String> {
    let ServeArgs { wasm, opts, store } = parse_serve(args)?;
    let keyvalue = opts.keyvalue;
    let host = new_host(store).await?;
    let server = host
        .serve(&wasm, opts)
        .await
        .map_err(|e| format!("{}: {e:#}", wasm.display()))?;
    if keyvalue {
        let shared = host.shared_store();
        eprintln!(
            "key-value store {}, buckets {:?}",
            shared.describe(),
            shared.bucket_names()
        );
    }
    eprintln!("serving http://{}", server.addr());
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// `compose`'s command line.
#[derive(Debug, PartialEq, Eq)]
struct ComposeArgs {
    app: PathBuf,
    plug: PathBuf,
    out: PathBuf,
}

fn parse_compose(args: &[String]) -> Result<ComposeArgs, String> {
    let (mut app, mut plug, mut out) = (None, None, None);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let mut value = || {
            rest.next()
                .map(PathBuf::from)
                .ok_or(format!("{arg} needs a file"))
        };
        match arg.as_str() {
            "--plug" if plug.is_none() => plug = Some(value()?),
            "--plug" => return Err("compose takes one --plug".into()),
            "-o" | "--output" => out = Some(value()?),
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            file if app.is_none() => app = Some(PathBuf::from(file)),
            extra => return Err(format!("compose takes one app, not also {extra:?}")),
        }
    }
    let missing = |what: &str| format!("compose: missing {what}\n{USAGE}");
    Ok(ComposeArgs {
        app: app.ok_or_else(|| missing("<app.wasm>"))?,
        plug: plug.ok_or_else(|| missing("--plug <plug.wasm>"))?,
        out: out.ok_or_else(|| missing("-o <out.wasm>"))?,
    })
}

fn compose(args: &[String]) -> Result<ExitCode, String> {
    let ComposeArgs { app, plug, out } = parse_compose(args)?;
    let read = |path: &PathBuf| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    let composed = gcp_db_host::compose::compose(&read(&app)?, &read(&plug)?)?;
    std::fs::write(&out, composed).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(ExitCode::SUCCESS)
}

fn is_keyvalue_flag(arg: &str) -> bool {
    arg == "--keyvalue" || arg.starts_with("--keyvalue=")
}

/// The buckets of `--keyvalue`, `--keyvalue=A,B` or `--keyvalue A,B`; a
/// following argument that is an option or a `.wasm` file is left alone, and
/// the buckets are then just the default one.
fn parse_keyvalue(
    flag: &str,
    rest: &mut Peekable<Iter<'_, String>>,
) -> Result<Vec<String>, String> {
    let list = match flag.strip_prefix("--keyvalue=") {
        Some(list) => list,
        None => match rest.next_if(|next| !next.starts_with('-') && !next.ends_with(".wasm")) {
            Some(list) => list.as_str(),
            None => return Ok(DEFAULT_BUCKETS.map(str::to_string).to_vec()),
        },
    };
    let names: Vec<String> = list.split(',').map(str::to_string).collect();
    if names.iter().any(String::is_empty) {
        return Err(format!("--keyvalue {list:?}: expected BUCKET[,BUCKET...]"));
    }
    Ok(names)
}

async fn query(args: &[String]) -> Result<ExitCode, String> {
    let mut component = connector::find_component();
    let mut config = Config::default();
    let mut login = Login {
        user: "postgres".into(),
        password: None,
        database: "postgres".into(),
    };
    let mut connects = 1u32;
    let mut options = ConnectOptions::default();
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--component" => component = Some(PathBuf::from(value()?)),
            "--admin-endpoint" => config.admin_endpoint = Some(value()?),
            "--alloydb-admin-endpoint" => config.alloydb_admin_endpoint = Some(value()?),
            "--ip-type" => {
                options.ip_type = Some(match value()?.as_str() {
                    "public" => IpType::Public,
                    "private" => IpType::Private,
                    "psc" => IpType::Psc,
                    other => return Err(format!("--ip-type {other:?}: public, private or psc")),
                })
            }
            "--iam" => options.enable_iam_auth = Some(true),
            "--credentials-file" => {
                let path = value()?;
                let json = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
                config.credentials = Some(Credentials::Json(json));
            }
            "--user" => login.user = value()?,
            "--password" => login.password = Some(value()?),
            "--database" => login.database = value()?,
            "--connects" => {
                connects = value()?
                    .parse()
                    .map_err(|_| "--connects needs a whole number".to_string())?
            }
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            _ => positional.push(arg.clone()),
        }
    }
    let [instance, sql] = <[String; 2]>::try_from(positional)
        .map_err(|_| format!("query needs INSTANCE and SQL\n{USAGE}"))?;
    let component = component.ok_or("no component: pass --component or build it")?;

    let host = Host::new().map_err(|e| format!("{e:#}"))?;
    let mut inst = host
        .instantiate_connector(&component, vec![], vec![])
        .await
        .map_err(|e| format!("{e:#}"))?;
    let connector = inst
        .new_connector(config)
        .await
        .map_err(|e| format!("{e:#}"))?;
    for n in 1..=connects.max(1) {
        let (rows, timings) =
            connect_and_query(&mut inst, connector, &instance, options, &login, &sql)
                .await
                .map_err(|e| format!("{e:?}"))?;
        print_timings(n, &timings);
        if n == connects.max(1) {
            println!("{}", rows.columns.join("\t"));
            for row in &rows.rows {
                let cells: Vec<&str> = row.iter().map(|c| c.as_deref().unwrap_or("NULL")).collect();
                println!("{}", cells.join("\t"));
            }
            eprintln!("({})", rows.command);
        }
    }
    if let Some(kib) = peak_memory_kib() {
        eprintln!("peak memory: {kib} KiB");
    }
    Ok(ExitCode::SUCCESS)
}

/// This process's peak resident set (Linux `VmHWM`), for scripts/bench. Not
/// `getrusage`: across `exec` Linux carries the forking parent's peak into it.
fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

async fn bench(args: &[String]) -> Result<ExitCode, String> {
    let mut opts = BenchOptions {
        component: connector::find_component().unwrap_or_default(),
        component_kv: connector::find_component_kv(),
        config: Config::default(),
        instance: String::new(),
        throughput_instances: Vec::new(),
        direct: None,
        login: Login {
            user: "postgres".into(),
            password: None,
            database: "postgres".into(),
        },
        runs: 30,
        cold_runs: None,
        throughput_runs: 3,
        throughput_bytes: 100_000_000,
    };
    let number = |flag: &str, v: String| {
        v.parse::<u64>()
            .map_err(|_| format!("{flag} needs a whole number, not {v:?}"))
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--instance" => opts.instance = value()?,
            "--throughput-instance" => {
                let spec = value()?;
                let (label, name) = spec.split_once('=').ok_or(format!(
                    "--throughput-instance {spec:?}: expected LABEL=INSTANCE"
                ))?;
                opts.throughput_instances.push((label.into(), name.into()));
            }
            "--direct" => {
                let spec = value()?;
                opts.direct = Some(
                    spec.parse()
                        .map_err(|_| format!("--direct {spec:?}: expected HOST:PORT"))?,
                );
            }
            "--admin-endpoint" => opts.config.admin_endpoint = Some(value()?),
            "--credentials-file" => {
                let path = value()?;
                let json = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
                opts.config.credentials = Some(Credentials::Json(json));
            }
            "--user" => opts.login.user = value()?,
            "--password" => opts.login.password = Some(value()?),
            "--database" => opts.login.database = value()?,
            "--runs" => opts.runs = number(arg, value()?)? as usize,
            "--cold-runs" => opts.cold_runs = Some(number(arg, value()?)? as usize),
            "--throughput-runs" => opts.throughput_runs = number(arg, value()?)? as usize,
            "--throughput-mb" => opts.throughput_bytes = number(arg, value()?)? * 1_000_000,
            "--component" => opts.component = PathBuf::from(value()?),
            "--component-kv" => opts.component_kv = Some(PathBuf::from(value()?)),
            other => return Err(format!("bench: unknown argument {other:?}\n{USAGE}")),
        }
    }
    if opts.instance.is_empty() {
        return Err(format!("bench: --instance is required\n{USAGE}"));
    }
    if opts.component.as_os_str().is_empty() {
        return Err("no component: pass --component or build it".into());
    }
    let report = gcp_db_host::bench::run(&opts).await?;
    println!("{}", report.to_json());
    Ok(ExitCode::SUCCESS)
}

fn print_timings(n: u32, t: &ConnectTimings) {
    let ms = |us: u64| format!("{:.1}", us as f64 / 1000.0);
    eprintln!(
        "connect #{n} ({}): total {} ms = token {} + admin API {} + key generation {} + TCP {} + TLS {} ms",
        if t.cached { "warm, cached certificate" } else { "cold, refreshed" },
        ms(t.total_us),
        ms(t.token_us),
        ms(t.admin_api_us),
        ms(t.key_generation_us),
        ms(t.tcp_us),
        ms(t.tls_us),
    );
}

fn parse_env(spec: &str) -> Result<(String, String), String> {
    match spec.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        Some(_) => Err(format!("--env {spec:?}: empty name")),
        None => std::env::var(spec)
            .map(|value| (spec.to_string(), value))
            .map_err(|_| format!("--env {spec:?}: not set in the host environment")),
    }
}

fn parse_dir(spec: &str) -> Result<(PathBuf, String), String> {
    match spec.split_once("::") {
        Some((host, guest)) if !host.is_empty() && !guest.is_empty() => {
            Ok((PathBuf::from(host), guest.to_string()))
        }
        // A bare directory is visible under the same path in the guest.
        None if !spec.is_empty() => Ok((PathBuf::from(spec), spec.to_string())),
        _ => Err(format!("--dir {spec:?}: expected HOST::GUEST")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_and_dir_specs() {
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(parse_env("=x").is_err());
        assert_eq!(
            parse_dir("/tmp/x::/certs").unwrap(),
            (PathBuf::from("/tmp/x"), "/certs".to_string())
        );
        assert_eq!(
            parse_dir("/data").unwrap(),
            (PathBuf::from("/data"), "/data".to_string())
        );
        assert!(parse_dir("/a::").is_err());
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn run_flags() {
        let run = parse_run(&args(&[
            "--env",
            "A=1",
            "--dir",
            "/d::/g",
            "app.wasm",
            "--keyvalue",
            "x",
        ]))
        .unwrap();
        assert_eq!(run.wasm, PathBuf::from("app.wasm"));
        assert_eq!(run.opts.env, [("A".to_string(), "1".to_string())]);
        assert_eq!(run.opts.dirs, [(PathBuf::from("/d"), "/g".to_string())]);
        // After the component, everything is the guest's.
        assert_eq!(run.opts.args, ["--keyvalue", "x"]);
        assert!(!run.opts.keyvalue);
        assert!(run.store.buckets.is_none());
        assert!(run.opts.inherit_stdio);

        let run = parse_run(&args(&["--keyvalue", "app.wasm", "a"])).unwrap();
        assert!(run.opts.keyvalue);
        assert_eq!(run.store.buckets.unwrap(), DEFAULT_BUCKETS);
        assert_eq!(run.opts.args, ["a"]);

        let run = parse_run(&args(&["--keyvalue", "one,two", "app.wasm"])).unwrap();
        assert_eq!(run.store.buckets.unwrap(), ["one", "two"]);
        assert!(parse_run(&args(&["--keyvalue"])).is_err());
        assert!(parse_run(&args(&["--bogus", "app.wasm"])).is_err());
    }

    #[test]
    fn serve_flags() {
        let serve = parse_serve(&args(&["app.wasm"])).unwrap();
        assert_eq!(serve.wasm, PathBuf::from("app.wasm"));
        assert_eq!(serve.opts.addr, DEFAULT_SERVE_ADDR.parse().unwrap());
        assert!(!serve.opts.keyvalue);
        assert!(serve.store.buckets.is_none());

        let serve = parse_serve(&args(&[
            "--addr",
            "127.0.0.1:0",
            "--env",
            "K=V",
            "--dir",
            "/certs",
            "--keyvalue",
            "app.wasm",
        ]))
        .unwrap();
        assert_eq!(serve.opts.addr, "127.0.0.1:0".parse().unwrap());
        assert_eq!(serve.opts.env, [("K".to_string(), "V".to_string())]);
        assert_eq!(
            serve.opts.dirs,
            [(PathBuf::from("/certs"), "/certs".to_string())]
        );
        assert!(serve.opts.keyvalue);
        assert_eq!(serve.store.buckets.unwrap(), DEFAULT_BUCKETS);

        // Flags may follow the component; buckets by `=` or as the next word.
        let serve = parse_serve(&args(&["app.wasm", "--keyvalue=a,b"])).unwrap();
        assert_eq!(serve.store.buckets.unwrap(), ["a", "b"]);
        let serve = parse_serve(&args(&["--keyvalue", "cache", "app.wasm"])).unwrap();
        assert_eq!(serve.store.buckets.unwrap(), ["cache"]);
        let serve = parse_serve(&args(&["--keyvalue", "--addr", "[::1]:9", "app.wasm"])).unwrap();
        assert_eq!(serve.store.buckets.unwrap(), DEFAULT_BUCKETS);
        assert_eq!(serve.opts.addr, "[::1]:9".parse().unwrap());

        for bad in [
            &[][..],
            &["--addr", "localhost", "app.wasm"],
            &["--addr"],
            &["--keyvalue=a,,b", "app.wasm"],
            &["--keyvalue="],
            &["a.wasm", "b.wasm"],
            &["--port", "80", "app.wasm"],
        ] {
            assert!(parse_serve(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn redis_flags() {
        // --redis alone: the store on Redis, default buckets and prefix.
        let serve = parse_serve(&args(&["--redis", "redis://127.0.0.1:6379", "app.wasm"])).unwrap();
        assert!(serve.opts.keyvalue);
        assert_eq!(
            serve.store,
            StoreArgs {
                buckets: None,
                redis: Some("redis://127.0.0.1:6379".into()),
                prefix: None,
            }
        );
        let serve = parse_serve(&args(&[
            "--keyvalue",
            "cache",
            "--redis",
            "redis://h:1/2",
            "--redis-prefix",
            "app-a",
            "app.wasm",
        ]))
        .unwrap();
        assert_eq!(serve.store.buckets.unwrap(), ["cache"]);
        assert_eq!(serve.store.prefix.as_deref(), Some("app-a"));
        let run = parse_run(&args(&[
            "--redis",
            "redis://h:1",
            "app.wasm",
            "--redis",
            "x",
        ]))
        .unwrap();
        assert!(run.opts.keyvalue);
        assert_eq!(run.store.redis.as_deref(), Some("redis://h:1"));
        assert_eq!(run.opts.args, ["--redis", "x"]);

        for bad in [
            &["--redis"][..],
            &["--redis", "redis://h:1", "--redis-prefix"],
            &["--redis", "redis://h:1", "--redis-prefix", "", "app.wasm"],
            &["--redis-prefix", "p", "app.wasm"],
        ] {
            assert!(parse_serve(&args(bad)).is_err(), "{bad:?}");
            assert!(parse_run(&args(bad)).is_err(), "{bad:?}");
        }
    }

    /// A bad URL is refused at start, without repeating it (it may hold a
    /// password).
    #[tokio::test]
    async fn a_bad_redis_url_is_refused_without_echoing_it() {
        let store = StoreArgs {
            buckets: None,
            redis: Some("http://user:hunter2@example/".into()),
            prefix: None,
        };
        let err = new_host(store).await.err().expect("refused");
        assert!(err.starts_with("--redis: not a Redis URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let store = StoreArgs {
            buckets: None,
            redis: Some("env:GCPDB_TEST_NO_SUCH_VARIABLE".into()),
            prefix: None,
        };
        let err = new_host(store).await.err().expect("refused");
        assert_eq!(
            err,
            "--redis env:GCPDB_TEST_NO_SUCH_VARIABLE: not set in the host environment"
        );
    }

    #[test]
    fn compose_flags() {
        let expected = ComposeArgs {
            app: "app.wasm".into(),
            plug: "plug.wasm".into(),
            out: "out.wasm".into(),
        };
        let parsed = parse_compose(&args(&[
            "app.wasm",
            "--plug",
            "plug.wasm",
            "-o",
            "out.wasm",
        ]));
        assert_eq!(parsed.unwrap(), expected);
        let parsed = parse_compose(&args(&[
            "--output",
            "out.wasm",
            "--plug",
            "plug.wasm",
            "app.wasm",
        ]));
        assert_eq!(parsed.unwrap(), expected);
        for bad in [
            &["app.wasm", "--plug", "plug.wasm"][..],
            &["app.wasm", "-o", "out.wasm"],
            &["--plug", "plug.wasm", "-o", "out.wasm"],
            &["app.wasm", "--plug"],
            &[
                "app.wasm", "--plug", "a.wasm", "--plug", "b.wasm", "-o", "o.wasm",
            ],
            &["app.wasm", "more.wasm", "--plug", "p.wasm", "-o", "o.wasm"],
            &["app.wasm", "--plug", "p.wasm", "-o", "o.wasm", "--validate"],
        ] {
            assert!(parse_compose(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
