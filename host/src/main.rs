//! `gcp-db-host`: run a WebAssembly command with the project's WASI policy, or
//! list a component's imports.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use gcp_db_host::connector::{self, Config, ConnectOptions, ConnectTimings, Credentials, IpType};
use gcp_db_host::query::{connect_and_query, Login};
use gcp_db_host::{CommandOptions, Host};

const USAGE: &str = "\
usage:
  gcp-db-host run [--env K=V]... [--dir HOST::GUEST]... <file.wasm> [args...]
      Run a wasi:cli command with inherited stdio and exit with its status.
      Network: TCP and HTTP to loopback only. --env K without =V passes the
      host's value of K. --dir preopens HOST read-only as GUEST.
  gcp-db-host query [--component FILE] [--admin-endpoint URL] [--alloydb-admin-endpoint URL]
                    [--credentials-file PATH] [--ip-type public|private|psc] [--iam]
                    [--user U] [--password P] [--database D] [--connects N] INSTANCE SQL
      Connect to a Cloud SQL or AlloyDB instance through the connector
      component (WIT exports, called by the host) N times with one connector,
      print each connect's timings, then the rows of SQL (Postgres). --iam:
      automatic IAM database authentication (no password). Component: --component, $GCP_DB_CONNECTOR_WASM
      or the build output.
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
        "query" => query(rest).await,
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

async fn run_command(args: &[String]) -> Result<ExitCode, String> {
    let mut opts = CommandOptions {
        inherit_stdio: true,
        ..Default::default()
    };
    let mut rest = args.iter();
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
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            file => break PathBuf::from(file),
        }
    };
    opts.args = rest.cloned().collect();

    let host = Host::new().map_err(|e| format!("{e:#}"))?;
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
}
