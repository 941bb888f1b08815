//! `mysql-query`: connect to a Cloud SQL for MySQL instance through
//! gcp-db-connector and print the rows of a SQL statement.
//!
//! ```text
//! mysql-query [options] PROJECT:REGION:INSTANCE 'SELECT ...'
//!   --admin-endpoint URL     Admin API base URL          (env GCP_DB_ADMIN_ENDPOINT)
//!   --token-endpoint URL     OAuth2 token endpoint       (env GCP_DB_TOKEN_ENDPOINT)
//!   --metadata-host HOST     metadata server host        (env GCE_METADATA_HOST)
//!   --credentials-file PATH  service-account or authorized_user JSON
//!                            (default: Application Default Credentials)
//!   --access-token TOKEN     use this OAuth2 token       (env GCP_DB_ACCESS_TOKEN)
//!   --ip-type TYPE           public | private | psc      (default public)
//!   --user NAME              database user               (env DB_USER, default root)
//!   --password PASS          database password           (env DB_PASS)
//!   --database NAME          default database            (env DB_NAME)
//!   --iam                    automatic IAM database authentication: the
//!                            certificate carries the principal, no password is sent
//! ```
//!
//! Rows go to stdout, tab-separated with a header line (NULL for SQL NULL);
//! timings and the row count to stderr.
//!
//! The MySQL protocol is spoken by [`client`], a small blocking client on
//! `mysql_common`, over the connector's blocking [`gcp_db_connector::Connection`].

mod client;

use std::process::ExitCode;
use std::time::Duration;

use gcp_db_connector::{Config, ConnectOptions, ConnectTimings, Connector, Credentials, IpType};

use client::{Client, LoginOptions};

struct Args {
    instance: String,
    sql: String,
    config: Config,
    options: ConnectOptions,
    user: String,
    password: Option<String>,
    database: Option<String>,
}

fn usage() -> String {
    "usage: mysql-query [--admin-endpoint URL] [--token-endpoint URL] [--metadata-host HOST] \
     [--credentials-file PATH | --access-token TOKEN] [--ip-type public|private|psc] \
     [--user U] [--password P | --iam] [--database D] INSTANCE SQL"
        .into()
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parse_args() -> Result<Args, String> {
    let mut config = Config::default();
    config.admin_endpoint = env("GCP_DB_ADMIN_ENDPOINT");
    config.token_endpoint = env("GCP_DB_TOKEN_ENDPOINT");
    config.credentials = env("GCP_DB_ACCESS_TOKEN").map(|t| Credentials::AccessToken {
        api_token: t,
        login_token: None,
    });
    let mut options = ConnectOptions::default();
    let mut user = env("DB_USER").unwrap_or_else(|| "root".into());
    let mut password = env("DB_PASS");
    let mut database = env("DB_NAME");
    let mut positional = Vec::new();

    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))
        };
        match arg.as_str() {
            "--admin-endpoint" => config.admin_endpoint = Some(value(&arg)?),
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
            "--database" => database = Some(value(&arg)?),
            "--iam" => options.enable_iam_auth = Some(true),
            "-h" | "--help" => return Err(usage()),
            s if s.starts_with("--") => return Err(format!("unknown option {s}\n{}", usage())),
            _ => positional.push(arg),
        }
    }
    let [instance, sql] = <[String; 2]>::try_from(positional).map_err(|_| usage())?;
    if options.enable_iam_auth == Some(true) {
        // The ephemeral certificate proves who logs in; Cloud SQL wants no password.
        password = None;
    }
    Ok(Args {
        instance,
        sql,
        config,
        options,
        user,
        password,
        database,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn print_timings(t: &ConnectTimings) {
    eprintln!(
        "connect ({}): total {} ms = token {} + admin API {} + key generation {} + TCP {} + TLS {} ms",
        if t.cached { "warm, cached certificate" } else { "cold, refreshed" },
        ms(t.total),
        ms(t.token),
        ms(t.admin_api),
        ms(t.key_generation),
        ms(t.tcp),
        ms(t.tls),
    );
}

fn run(args: Args) -> Result<(), String> {
    let connector = Connector::new(args.config).map_err(|e| e.to_string())?;
    let connection = connector
        .connect(&args.instance, &args.options)
        .map_err(|e| e.to_string())?;
    print_timings(&connection.timings());

    let login = LoginOptions {
        user: &args.user,
        password: args.password.as_deref().unwrap_or(""),
        database: args.database.as_deref(),
        // The connector's TLS is the tunnel: the driver must not start its own.
        secure_transport: true,
    };
    let mut mysql =
        Client::connect(connection, &login).map_err(|e| format!("MySQL login failed: {e}"))?;
    eprintln!(
        "logged in to {} with {}",
        mysql.server_version(),
        mysql.auth_plugin()
    );
    let result = mysql
        .query(&args.sql)
        .map_err(|e| format!("query failed: {e}"))?;
    if !result.columns.is_empty() {
        println!("{}", result.columns.join("\t"));
        for row in &result.rows {
            let values: Vec<&str> = row.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect();
            println!("{}", values.join("\t"));
        }
    }
    eprintln!("({} rows)", result.rows.len());
    let mut connection = mysql.quit().map_err(|e| format!("quit failed: {e}"))?;
    // Best effort: the server may close first after COM_QUIT.
    let _ = connection.shutdown();
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mysql-query: {e}");
            ExitCode::FAILURE
        }
    }
}
