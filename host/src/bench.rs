//! `gcp-db-host bench`: the connector's side of the benchmark (scripts/bench).
//! It drives the component through its WIT exports against the emulator and a
//! real PostgreSQL and returns raw samples; bench/run.py turns them, with the
//! Python connector's samples from the same run, into the table.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::connector::{Config, ConnectOptions, ConnectTimings, ConnectorOptions, ResourceAny};
use crate::pgwire::{Session, Transport};
use crate::query::{ComponentConnection, Login};
use crate::{ConnectorInstance, Host};

/// What to measure, and against what.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The connector component (no store).
    pub component: PathBuf,
    /// The `connector-component-kv` build, for the store-warm row.
    pub component_kv: Option<PathBuf>,
    /// Connector configuration shared by every instance (endpoints, credentials).
    pub config: Config,
    /// The Cloud SQL instance of the connect rows.
    pub instance: String,
    /// Instances for the throughput row, each with a label (e.g. the one TLS
    /// cipher suite its proxy offers).
    pub throughput_instances: Vec<(String, String)>,
    /// The database itself, in plain text, for the throughput baseline.
    pub direct: Option<SocketAddr>,
    /// Database login.
    pub login: Login,
    /// Samples per connect row.
    pub runs: usize,
    /// Samples of the cold row, if not `runs`: its key generation varies a
    /// lot from key to key (how many candidates a prime takes), so its
    /// median and p90 need more.
    pub cold_runs: Option<usize>,
    /// Samples per throughput row.
    pub throughput_runs: usize,
    /// Size of the throughput result in bytes.
    pub throughput_bytes: u64,
}

/// One connect, in microseconds, split into its parts.
#[derive(Debug, Clone, Default)]
pub struct ConnectSample {
    /// Instantiating the component (0 when the instance was reused).
    pub instantiate_us: u64,
    /// The connector's own timings.
    pub token_us: u64,
    /// Admin API time not hidden behind key generation.
    pub admin_api_us: u64,
    /// RSA key generation.
    pub key_generation_us: u64,
    /// TCP connect.
    pub tcp_us: u64,
    /// TLS handshake (and metadata exchange).
    pub tls_us: u64,
    /// `connect` as the connector measured it.
    pub connect_us: u64,
    /// Database login and `SELECT 1` through the connection.
    pub first_query_us: u64,
    /// Everything: instantiate, connector, connect, login, query.
    pub total_us: u64,
    /// The certificate came from the instance's cache.
    pub cached: bool,
    /// It came from the host store.
    pub from_store: bool,
}

/// One throughput measurement.
#[derive(Debug, Clone)]
pub struct ThroughputSample {
    /// `direct` (plain text to the database) or an instance's label.
    pub label: String,
    /// Bytes of result data received.
    pub bytes: u64,
    /// Seconds from sending the query to its end.
    pub secs: f64,
    /// CPU seconds the host process spent over those `secs`: the wasm guest,
    /// the Postgres client reading the result and the socket reads.
    pub cpu_secs: f64,
}

/// Everything one bench run measured.
#[derive(Debug, Default)]
pub struct BenchReport {
    /// A fresh component instance, no cache, per sample.
    pub cold: Vec<ConnectSample>,
    /// One instance, certificate cached.
    pub warm: Vec<ConnectSample>,
    /// A fresh instance per sample, the host store warm.
    pub store_warm: Vec<ConnectSample>,
    /// The large result, through the connector and direct.
    pub throughput: Vec<ThroughputSample>,
}

impl BenchReport {
    /// The report as one JSON object (what bench/run.py reads).
    pub fn to_json(&self) -> String {
        let connects = |samples: &[ConnectSample]| {
            samples
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "instantiate_us": s.instantiate_us,
                        "token_us": s.token_us,
                        "admin_api_us": s.admin_api_us,
                        "key_generation_us": s.key_generation_us,
                        "tcp_us": s.tcp_us,
                        "tls_us": s.tls_us,
                        "connect_us": s.connect_us,
                        "first_query_us": s.first_query_us,
                        "total_us": s.total_us,
                        "cached": s.cached,
                        "from_store": s.from_store,
                    })
                })
                .collect::<Vec<_>>()
        };
        let throughput: Vec<_> = self
            .throughput
            .iter()
            .map(|t| {
                serde_json::json!({
                    "label": t.label,
                    "bytes": t.bytes,
                    "secs": t.secs,
                    "cpu_secs": t.cpu_secs,
                })
            })
            .collect();
        serde_json::json!({
            "cold": connects(&self.cold),
            "warm": connects(&self.warm),
            "store_warm": connects(&self.store_warm),
            "throughput": throughput,
        })
        .to_string()
    }
}

/// Runs every row of the benchmark; progress goes to stderr.
pub async fn run(opts: &BenchOptions) -> Result<BenchReport, String> {
    let host = Host::new().map_err(|e| format!("{e:#}"))?;
    // Compiled once up front, as a serverless host does before any request.
    host.component(&opts.component)
        .map_err(|e| format!("{e:#}"))?;
    let mut report = BenchReport::default();

    let cold_runs = opts.cold_runs.unwrap_or(opts.runs);
    eprintln!("bench: {cold_runs} cold connects, a fresh instance each");
    for _ in 0..cold_runs {
        let plain = ConnectorOptions::default();
        report.cold.push(
            fresh_instance_connect(&host, &opts.component, &plain, opts, opts.config.clone())
                .await?,
        );
    }

    eprintln!("bench: {} warm connects in one instance", opts.runs);
    let mut inst = instantiate(&host, &opts.component, &ConnectorOptions::default()).await?;
    let connector = new_connector(&mut inst, opts.config.clone()).await?;
    connect_query(&mut inst, connector, opts).await?; // fills the cache
    for _ in 0..opts.runs {
        let started = Instant::now();
        let mut s = connect_query(&mut inst, connector, opts).await?;
        s.total_us = micros(started.elapsed());
        report.warm.push(s);
    }
    drop(inst);

    if let Some(kv) = &opts.component_kv {
        host.component(kv).map_err(|e| format!("{e:#}"))?;
        eprintln!(
            "bench: {} connects in fresh instances, the store warm",
            opts.runs
        );
        let shared = ConnectorOptions {
            keyvalue: true,
            ..Default::default()
        };
        let mut config = opts.config.clone();
        config.store_bucket = Some(crate::keyvalue::CONNECTOR_BUCKET.to_string());
        // The first instance refreshes and fills the store.
        fresh_instance_connect(&host, kv, &shared, opts, config.clone()).await?;
        for _ in 0..opts.runs {
            let s = fresh_instance_connect(&host, kv, &shared, opts, config.clone()).await?;
            if !s.from_store {
                return Err("a store-warm connect did not come from the store".into());
            }
            report.store_warm.push(s);
        }
    }

    let sql = copy_sql(opts.throughput_bytes);
    for _ in 0..opts.throughput_runs {
        if let Some(addr) = opts.direct {
            let transport = Plain(
                TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("direct connection to {addr}: {e}"))?,
            );
            let sample = stream_result("direct", transport, &opts.login, &sql).await?;
            eprintln!("bench: direct {}", rate(sample.bytes, sample.secs));
            report.throughput.push(sample);
        }
        for (label, instance) in &opts.throughput_instances {
            let mut inst =
                instantiate(&host, &opts.component, &ConnectorOptions::default()).await?;
            let connector = new_connector(&mut inst, opts.config.clone()).await?;
            let conn = connect(&mut inst, connector, instance).await?;
            let transport = ComponentConnection::new(&mut inst, conn);
            let sample = stream_result(label, transport, &opts.login, &sql).await?;
            eprintln!("bench: {label} {}", rate(sample.bytes, sample.secs));
            report.throughput.push(sample);
        }
    }
    Ok(report)
}

/// `COPY … TO STDOUT` of about `bytes` bytes: rows of 1000 `x` and a newline.
fn copy_sql(bytes: u64) -> String {
    let rows = bytes.div_ceil(1001).max(1);
    format!("COPY (SELECT repeat('x', 1000) FROM generate_series(1, {rows})) TO STDOUT")
}

fn rate(bytes: u64, secs: f64) -> String {
    format!(
        "{:.1} MB in {secs:.2} s = {:.1} MB/s",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs
    )
}

/// Instantiate + connector + connect + login + `SELECT 1`, timed as a whole.
async fn fresh_instance_connect(
    host: &Host,
    wasm: &std::path::Path,
    copts: &ConnectorOptions,
    opts: &BenchOptions,
    config: Config,
) -> Result<ConnectSample, String> {
    let started = Instant::now();
    let mut inst = instantiate(host, wasm, copts).await?;
    let instantiate_us = micros(started.elapsed());
    let connector = new_connector(&mut inst, config).await?;
    let mut s = connect_query(&mut inst, connector, opts).await?;
    s.instantiate_us = instantiate_us;
    s.total_us = micros(started.elapsed());
    Ok(s)
}

async fn instantiate(
    host: &Host,
    wasm: &std::path::Path,
    copts: &ConnectorOptions,
) -> Result<ConnectorInstance, String> {
    host.instantiate_connector_with(wasm, copts)
        .await
        .map_err(|e| format!("instantiate {}: {e:#}", wasm.display()))
}

async fn new_connector(
    inst: &mut ConnectorInstance,
    config: Config,
) -> Result<ResourceAny, String> {
    inst.new_connector(config)
        .await
        .map_err(|e| format!("connector: {e:#}"))
}

async fn connect(
    inst: &mut ConnectorInstance,
    connector: ResourceAny,
    instance: &str,
) -> Result<ResourceAny, String> {
    inst.connect(connector, instance, ConnectOptions::default())
        .await
        .map_err(|e| format!("host: {e:#}"))?
        .map_err(|e| format!("connect {instance}: {e:?}"))
}

/// Connect, log in, `SELECT 1`, close: the connector's timings and the
/// first query's time.
async fn connect_query(
    inst: &mut ConnectorInstance,
    connector: ResourceAny,
    opts: &BenchOptions,
) -> Result<ConnectSample, String> {
    let conn = connect(inst, connector, &opts.instance).await?;
    let t: ConnectTimings = inst.timings(conn).await.map_err(|e| format!("{e:#}"))?;
    let query_started = Instant::now();
    let transport = ComponentConnection::new(inst, conn);
    let login = &opts.login;
    let mut session = Session::start(
        transport,
        &login.user,
        &login.database,
        login.password.as_deref(),
    )
    .await?;
    let rows = session.query("SELECT 1").await?;
    if rows.rows != [vec![Some("1".to_string())]] {
        return Err(format!("SELECT 1 returned {:?}", rows.rows));
    }
    let first_query_us = micros(query_started.elapsed());
    session.terminate().await?;
    inst.shutdown(conn)
        .await
        .map_err(|e| format!("{e:#}"))?
        .map_err(|e| format!("shutdown: {e:?}"))?;
    inst.drop_resource(conn)
        .await
        .map_err(|e| format!("{e:#}"))?;
    Ok(ConnectSample {
        token_us: t.token_us,
        admin_api_us: t.admin_api_us,
        key_generation_us: t.key_generation_us,
        tcp_us: t.tcp_us,
        tls_us: t.tls_us,
        connect_us: t.total_us,
        first_query_us,
        cached: t.cached,
        from_store: t.from_store,
        ..Default::default()
    })
}

/// Logs in over `transport`, runs the `COPY` and measures it as `label`'s
/// sample.
async fn stream_result<T: Transport>(
    label: &str,
    transport: T,
    login: &Login,
    sql: &str,
) -> Result<ThroughputSample, String> {
    let mut session = Session::start(
        transport,
        &login.user,
        &login.database,
        login.password.as_deref(),
    )
    .await?;
    let started = Instant::now();
    let cpu_started = process_cpu();
    let bytes = session.copy_out(sql).await?;
    let secs = started.elapsed().as_secs_f64();
    let cpu_secs = process_cpu().saturating_sub(cpu_started).as_secs_f64();
    session.terminate().await?;
    Ok(ThroughputSample {
        label: label.into(),
        bytes,
        secs,
        cpu_secs,
    })
}

/// CPU time of this process so far, all threads.
fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(t.tv_nsec).unwrap_or(0);
    Duration::new(secs, nanos)
}

/// A plain TCP connection to the database (the baseline).
struct Plain(TcpStream);

impl Transport for Plain {
    async fn send(&mut self, data: Vec<u8>) -> Result<(), String> {
        self.0.write_all(&data).await.map_err(|e| e.to_string())
    }

    async fn recv(&mut self, max: u32) -> Result<Vec<u8>, String> {
        let mut buf = vec![0; max as usize];
        let n = self.0.read(&mut buf).await.map_err(|e| e.to_string())?;
        buf.truncate(n);
        Ok(buf)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_returns_at_least_the_bytes_asked_for_and_at_most_a_row_more() {
        for bytes in [0, 1, 1001, 1002, 100_000_000] {
            let sql = copy_sql(bytes);
            let rows: u64 = sql
                .split("generate_series(1, ")
                .nth(1)
                .and_then(|rest| rest.split(')').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{sql}"));
            assert!(rows * 1001 >= bytes, "{bytes}: {sql}");
            assert!(rows == 1 || (rows - 1) * 1001 < bytes, "{bytes}: {sql}");
        }
    }
}
