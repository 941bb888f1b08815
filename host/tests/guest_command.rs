//! End to end: compiles a tiny `wasm32-wasip2` command (std only) and runs it
//! through `Host::run_command`, checking output capture, exit statuses,
//! env/preopens and the TCP policy as the guest sees it.
//!
//! Needs the `wasm32-wasip2` target (scripts/test installs it), and fails
//! saying so without it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use gcp_db_host::{CommandOptions, CommandOutput, Host};

mod support;

const GUEST_MAIN: &str = r#"
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("echo") => {
            println!("argv0={} rest={:?}", args[0], &args[2..]);
            println!("GREETING={:?}", std::env::var("GREETING").ok());
            eprintln!("this goes to stderr");
        }
        Some("exit") => std::process::exit(args[2].parse().unwrap()),
        Some("fail") => {
            eprintln!("failing");
            std::process::exit(1);
        }
        Some("panic") => panic!("guest panicked on purpose"),
        Some("cat") => print!("{}", std::fs::read_to_string(&args[2]).unwrap()),
        Some("write") => match std::fs::write(&args[2], b"x") {
            Ok(()) => println!("write ok"),
            Err(e) => println!("write err {:?}", e.kind()),
        },
        Some("connect") => {
            for addr in &args[2..] {
                match TcpStream::connect(addr.as_str()) {
                    Ok(mut s) => {
                        s.write_all(b"ping\n").unwrap();
                        let mut line = String::new();
                        BufReader::new(&s).read_line(&mut line).unwrap();
                        println!("connect {addr}: ok {}", line.trim());
                    }
                    Err(e) => println!("connect {addr}: err {:?}", e.kind()),
                }
            }
        }
        other => {
            eprintln!("unknown mode {other:?}");
            std::process::exit(2);
        }
    }
}
"#;

/// Builds the guest once per test process; `None` when wasm32-wasip2 is not
/// installed.
fn guest() -> &'static Path {
    static GUEST: OnceLock<PathBuf> = OnceLock::new();
    GUEST
        .get_or_init(|| {
            support::build(&support::Guest {
                name: "policy-guest",
                kind: support::Kind::Bin,
                dependencies: "",
                files: &[("src/main.rs", GUEST_MAIN)],
            })
        })
        .as_path()
}

fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| Host::new().expect("Host::new"))
}

async fn run(args: &[&str], configure: impl FnOnce(&mut CommandOptions)) -> CommandOutput {
    let mut opts = CommandOptions {
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    };
    configure(&mut opts);
    let wasm = guest();
    // A policy bug could leave a connect hanging on a blackholed address.
    tokio::time::timeout(Duration::from_secs(60), host().run_command(wasm, &opts))
        .await
        .expect("guest run timed out")
        .expect("guest run")
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn captures_output_args_and_env() {
    let out = run(&["echo", "a b", "c"], |o| {
        o.env.push(("GREETING".into(), "hi".into()));
    })
    .await;
    assert!(out.success, "{out:?}");
    assert_eq!(out.exit_code, None);
    assert_eq!(
        out.stdout,
        "argv0=policy-guest.wasm rest=[\"a b\", \"c\"]\nGREETING=Some(\"hi\")\n"
    );
    assert_eq!(out.stderr, "this goes to stderr\n");
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn exit_statuses_are_results_not_errors() {
    let out = run(&["fail"], |_| {}).await;
    assert!(!out.success);
    assert_eq!(out.exit_code, Some(1));
    assert_eq!(out.stderr, "failing\n");

    // WASI 0.2's `exit` carries only ok/err (`exit-with-code` is unstable and
    // Rust's std does not use it), so any non-zero status arrives as 1.
    let out = run(&["exit", "3"], |_| {}).await;
    assert!(!out.success);
    assert_eq!(out.exit_code, Some(1));

    let out = run(&["exit", "0"], |_| {}).await;
    assert!(out.success, "{out:?}");
    assert_eq!(out.exit_code, Some(0));
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn a_trap_is_an_error_carrying_stderr() {
    let wasm = guest();
    let opts = CommandOptions {
        args: vec!["panic".into()],
        ..Default::default()
    };
    let err = host().run_command(wasm, &opts).await.unwrap_err();
    let text = format!("{err:?}");
    assert!(text.contains("guest panicked on purpose"), "{text}");
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn preopens_are_read_only() {
    let dir = std::env::temp_dir().join(format!("gcp-db-host-preopen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("key.json"), "{\"type\":\"service_account\"}").unwrap();
    let preopen = |o: &mut CommandOptions| o.dirs.push((dir.clone(), "/creds".into()));

    let out = run(&["cat", "/creds/key.json"], preopen).await;
    assert!(out.success, "{out:?}");
    assert_eq!(out.stdout, "{\"type\":\"service_account\"}");

    let out = run(&["write", "/creds/new.txt"], preopen).await;
    assert!(out.success, "{out:?}");
    assert!(out.stdout.starts_with("write err"), "{out:?}");
    assert!(!dir.join("new.txt").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn tcp_only_to_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Answers the two loopback connects below (by IP and by name).
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (sock, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&sock).read_line(&mut line).unwrap();
            assert_eq!(line, "ping\n");
            (&sock).write_all(b"pong\n").unwrap();
        }
    });

    let loopback = format!("127.0.0.1:{port}");
    let by_name = format!("localhost:{port}");
    let out = run(
        &[
            "connect",
            "10.255.255.1:80",
            &loopback,
            "8.8.8.8:53",
            &by_name,
        ],
        |_| {},
    )
    .await;
    assert!(out.success, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{out:?}");
    assert_eq!(lines[0], "connect 10.255.255.1:80: err PermissionDenied");
    assert_eq!(lines[1], format!("connect {loopback}: ok pong"));
    assert_eq!(lines[2], "connect 8.8.8.8:53: err PermissionDenied");
    assert_eq!(lines[3], format!("connect {by_name}: ok pong"));
    server.join().unwrap();
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn imports_are_listed() {
    let imports = host().imports(guest()).unwrap();
    assert!(
        imports
            .iter()
            .any(|i| i.starts_with("wasi:cli/environment@0.2")),
        "{imports:?}"
    );
    assert!(
        imports
            .iter()
            .any(|i| i.starts_with("wasi:sockets/tcp@0.2")),
        "{imports:?}"
    );
    let exports = host().exports(guest()).unwrap();
    assert!(
        exports.iter().any(|e| e.starts_with("wasi:cli/run@0.2")),
        "{exports:?}"
    );
}
