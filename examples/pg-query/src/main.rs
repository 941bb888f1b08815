//! `pg-query`: connect to a Cloud SQL Postgres instance through
//! gcp-db-connector and print the rows of a SQL statement.
//!
//! ```text
//! pg-query [options] PROJECT:REGION:INSTANCE 'SELECT ...'
//!   --admin-endpoint URL     Admin API base URL          (env GCP_DB_ADMIN_ENDPOINT)
//!   --token-endpoint URL     OAuth2 token endpoint       (env GCP_DB_TOKEN_ENDPOINT)
//!   --metadata-host HOST     metadata server host        (env GCE_METADATA_HOST)
//!   --credentials-file PATH  service-account or authorized_user JSON
//!                            (default: Application Default Credentials)
//!   --access-token TOKEN     use this OAuth2 token       (env GCP_DB_ACCESS_TOKEN)
//!   --ip-type TYPE           public | private | psc      (default public)
//!   --user NAME              database user               (env DB_USER, default postgres)
//!   --password PASS          database password           (env DB_PASS)
//!   --database NAME          database                    (env DB_NAME, default postgres)
//!   --connects N             connect N times with one connector, printing timings
//! ```
//!
//! Rows go to stdout, tab-separated with a header line; timings to stderr.

use std::process::ExitCode;
use std::time::Duration;

use gcp_db_connector::{Config, ConnectOptions, ConnectTimings, Connector, Credentials, IpType};
use tokio_postgres::{NoTls, SimpleQueryMessage};

struct Args {
    instance: String,
    sql: String,
    config: Config,
    options: ConnectOptions,
    user: String,
    password: Option<String>,
    database: String,
    connects: u32,
}

fn usage() -> String {
    "usage: pg-query [--admin-endpoint URL] [--alloydb-admin-endpoint URL] [--token-endpoint URL] \
     [--metadata-host HOST] \
     [--credentials-file PATH | --access-token TOKEN] [--ip-type public|private|psc] \
     [--user U] [--password P] [--database D] [--connects N] INSTANCE SQL"
        .into()
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parse_args() -> Result<Args, String> {
    let mut config = Config::default();
    config.admin_endpoint = env("GCP_DB_ADMIN_ENDPOINT");
    config.alloydb_admin_endpoint = env("GCP_DB_ALLOYDB_ADMIN_ENDPOINT");
    config.token_endpoint = env("GCP_DB_TOKEN_ENDPOINT");
    config.credentials = env("GCP_DB_ACCESS_TOKEN").map(|t| Credentials::AccessToken {
        api_token: t,
        login_token: None,
    });
    let mut options = ConnectOptions::default();
    let mut user = env("DB_USER").unwrap_or_else(|| "postgres".into());
    let mut password = env("DB_PASS");
    let mut database = env("DB_NAME").unwrap_or_else(|| "postgres".into());
    let mut connects = 1;
    let mut positional = Vec::new();

    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))
        };
        match arg.as_str() {
            "--admin-endpoint" => config.admin_endpoint = Some(value(&arg)?),
            "--alloydb-admin-endpoint" => config.alloydb_admin_endpoint = Some(value(&arg)?),
            "--token-endpoint" => config.token_endpoint = Some(value(&arg)?),
            "--metadata-host" => config.metadata_host = Some(value(&arg)?),
            "--credentials-file" => {
                let path = value(&arg)?;
                let json = std::fs::read_to_string(&path).map_err(|e| {
                    format!("cannot read {path}: {e} (did the host grant its directory?)")
                })?;
                config.credentials = Some(Credentials::Json(json));
            }
            "--access-token" => {
                config.credentials = Some(Credentials::AccessToken {
                    api_token: value(&arg)?,
                    login_token: None,
                })
            }
            "--ip-type" => {
                let t: IpType = value(&arg)?.parse().map_err(|e| format!("{e}"))?;
                options.ip_type = Some(t);
            }
            "--user" => user = value(&arg)?,
            "--password" => password = Some(value(&arg)?),
            "--database" => database = value(&arg)?,
            "--connects" => {
                connects = value(&arg)?
                    .parse()
                    .map_err(|_| "--connects needs a whole number".to_string())?
            }
            "-h" | "--help" => return Err(usage()),
            s if s.starts_with("--") => return Err(format!("unknown option {s}\n{}", usage())),
            _ => positional.push(arg),
        }
    }
    let [instance, sql] = <[String; 2]>::try_from(positional).map_err(|_| usage())?;
    Ok(Args {
        instance,
        sql,
        config,
        options,
        user,
        password,
        database,
        connects: connects.max(1),
    })
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn print_timings(n: u32, t: &ConnectTimings) {
    eprintln!(
        "connect #{n} ({}): total {} ms = token {} + admin API {} + key generation {} + TCP {} + TLS {} ms",
        if t.cached { "warm, cached certificate" } else { "cold, refreshed" },
        ms(t.total),
        ms(t.token),
        ms(t.admin_api),
        ms(t.key_generation),
        ms(t.tcp),
        ms(t.tls),
    );
}

async fn run(args: Args) -> Result<(), String> {
    let connector = Connector::new(args.config).map_err(|e| e.to_string())?;
    for n in 1..=args.connects {
        let stream = connector
            .connect_async(&args.instance, &args.options)
            .await
            .map_err(|e| e.to_string())?;
        print_timings(n, &stream.timings());

        let mut pg = tokio_postgres::Config::new();
        pg.user(&args.user).dbname(&args.database);
        if let Some(p) = &args.password {
            pg.password(p);
        }
        // The connector's TLS is the tunnel: the driver must not start its own.
        let (client, connection) = pg
            .connect_raw(stream, NoTls)
            .await
            .map_err(|e| format!("Postgres login failed: {e}"))?;
        let driver = tokio::spawn(connection);

        let messages = client
            .simple_query(&args.sql)
            .await
            .map_err(|e| format!("query failed: {e}"))?;
        if n == args.connects {
            print_rows(&messages);
        }
        drop(client);
        driver
            .await
            .map_err(|e| format!("driver task failed: {e}"))?
            .map_err(|e| format!("connection failed: {e}"))?;
    }
    Ok(())
}

fn print_rows(messages: &[SimpleQueryMessage]) {
    let mut header_done = false;
    for m in messages {
        match m {
            SimpleQueryMessage::Row(row) => {
                if !header_done {
                    let names: Vec<&str> = row.columns().iter().map(|c| c.name()).collect();
                    println!("{}", names.join("\t"));
                    header_done = true;
                }
                let values: Vec<&str> = (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL"))
                    .collect();
                println!("{}", values.join("\t"));
            }
            SimpleQueryMessage::CommandComplete(n) => eprintln!("({n} rows)"),
            _ => {}
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pg-query: {e}");
            ExitCode::FAILURE
        }
    }
}
