//! Cloud SQL for MySQL end to end: the mysql-query example guest (a blocking
//! MySQL client on `mysql_common` over the connector's `Connection`) in the
//! embedded wasmtime host, the emulator of Google's side, and a real MariaDB
//! standing in for the instance's MySQL.

mod support;

use gcp_db_host::{CommandOptions, CommandOutput};
use support::{host, mysql_query, Emulator};

const PROJECT_INSTANCE: &str = "proj:my";
const INSTANCE: &str = "proj:us-central1:my";
const ROWS: &str = "id\tbody\n1\thello from Cloud SQL\n2\tthrough a wasm component\n";
const SQL: &str = "SELECT id, body FROM messages ORDER BY id";

fn start(extra: &str) -> Emulator {
    Emulator::start(&[&format!(
        "{INSTANCE},backend={{mysql}},version=MYSQL_8_0{extra}"
    )])
}

/// Runs mysql-query against `emu` with its service-account key file and
/// `login` (flags such as `--user app --password …`), on database appdb.
async fn mysql_query_run(emu: &Emulator, login: &[&str], sql: &str) -> CommandOutput {
    let admin = emu.admin_endpoint();
    let mut args = vec![
        "--admin-endpoint",
        &admin,
        "--credentials-file",
        "/creds/service-account.json",
        "--database",
        "appdb",
    ];
    args.extend_from_slice(login);
    args.extend([INSTANCE, sql]);
    host()
        .run_command(
            &mysql_query(),
            &CommandOptions {
                args: args.into_iter().map(String::from).collect(),
                dirs: vec![(emu.state_dir.clone(), "/creds".into())],
                ..CommandOptions::default()
            },
        )
        .await
        .unwrap()
}

fn assert_rows(out: &CommandOutput) {
    assert!(
        out.success,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    assert_eq!(out.stdout, ROWS, "stderr: {}", out.stderr);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn the_mysql_guest_prints_rows_with_a_password_login() {
    let emu = start("");
    let out = mysql_query_run(&emu, &["--user", "app", "--password", "app-password"], SQL).await;
    assert_rows(&out);
    assert!(out.stderr.contains("connect (cold"), "{}", out.stderr);
    assert!(
        out.stderr.contains("with mysql_native_password"),
        "{}",
        out.stderr
    );
    assert_eq!(emu.count("connectSettings", PROJECT_INSTANCE), 1);
    assert_eq!(emu.count("generateEphemeralCert", PROJECT_INSTANCE), 1);
    // Not advertised, so not attempted.
    assert_eq!(emu.calls()["mdx"], serde_json::json!({}));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn the_connector_sends_the_metadata_exchange_when_advertised() {
    let emu = start(",mdx=true");
    let out = mysql_query_run(&emu, &["--user", "app", "--password", "app-password"], SQL).await;
    assert_rows(&out);
    let calls = emu.calls();
    assert_eq!(calls["mdx"], serde_json::json!({ PROJECT_INSTANCE: 1 }));
    assert_eq!(
        calls["mdxClientProtocolType"],
        serde_json::json!({ PROJECT_INSTANCE: ["TLS"] })
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn a_wrong_password_gets_the_servers_access_denied() {
    let emu = start("");
    let out = mysql_query_run(&emu, &["--user", "app", "--password", "wrong"], SQL).await;
    assert!(!out.success, "stdout: {}", out.stdout);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("MySQL login failed: ERROR 1045 (28000)")
            && out.stderr.contains("Access denied for user 'app'"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("wrong"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn the_server_reports_sql_errors_and_nulls_print_as_null() {
    let emu = start("");
    let login = ["--user", "app", "--password", "app-password"];
    let out = mysql_query_run(&emu, &login, "SELECT NULL AS n, 40 + 2 AS answer").await;
    assert!(out.success, "{}", out.stderr);
    assert_eq!(out.stdout, "n\tanswer\nNULL\t42\n");

    let out = mysql_query_run(&emu, &login, "SELECT * FROM no_such_table").await;
    assert!(!out.success);
    assert!(
        out.stderr.contains("query failed: ERROR 1146 (42S02)"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn automatic_iam_authentication_logs_the_principal_in_without_a_password() {
    let emu = start("");
    // The service account's MySQL user is its email up to the @.
    let out = mysql_query_run(
        &emu,
        &["--iam", "--user", "connector-sa"],
        "SELECT current_user() AS who, count(*) AS n FROM messages",
    )
    .await;
    assert!(
        out.success,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    assert_eq!(out.stdout, "who\tn\nconnector-sa@%\t2\n");

    // The certificate carries the principal: another user is refused by the proxy.
    let out = mysql_query_run(&emu, &["--iam", "--user", "app"], SQL).await;
    assert!(!out.success, "stdout: {}", out.stdout);
    assert!(
        out.stderr.contains("ERROR 1045 (28000)") && out.stderr.contains("'app'"),
        "{}",
        out.stderr
    );
}
