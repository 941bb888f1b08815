//! End to end: composes two guests built from Rust (a command importing a
//! tiny custom interface, and a library component exporting it) with
//! `gcp_db_host::compose::compose` and with the `compose` CLI, then runs the
//! result.
//!
//! Needs the `wasm32-wasip2` target (scripts/test installs it), and fails
//! saying so without it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use gcp_db_host::compose::compose;
use gcp_db_host::{CommandOptions, Host};

mod support;

const GREET_WIT: &str = "
package test:greet@0.1.0;

interface greeter {
    greet: func(name: string) -> string;
}

world app {
    import greeter;
}

world plug {
    export greeter;
}
";

const IMPORT: &str = "test:greet/greeter@0.1.0";

const APP_MAIN: &str = r#"
wit_bindgen::generate!({ path: "wit", world: "app" });

fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| "world".into());
    println!("{}", test::greet::greeter::greet(&name));
}
"#;

const PLUG_LIB: &str = r#"
wit_bindgen::generate!({ path: "wit", world: "plug" });

struct Plug;

impl exports::test::greet::greeter::Guest for Plug {
    fn greet(name: String) -> String {
        format!("hello, {name}!")
    }
}

export!(Plug);
"#;

const DEPENDENCIES: &str = "wit-bindgen = \"=0.61.1\"";

/// (app, plug), built once per test process.
fn guests() -> &'static (PathBuf, PathBuf) {
    static GUESTS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    GUESTS.get_or_init(|| {
        let app = support::build(&support::Guest {
            name: "greet-app",
            kind: support::Kind::Bin,
            dependencies: DEPENDENCIES,
            files: &[("src/main.rs", APP_MAIN), ("wit/greet.wit", GREET_WIT)],
        });
        let plug = support::build(&support::Guest {
            name: "greet-plug",
            kind: support::Kind::Cdylib,
            dependencies: DEPENDENCIES,
            files: &[("src/lib.rs", PLUG_LIB), ("wit/greet.wit", GREET_WIT)],
        });
        (app, plug)
    })
}

fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| Host::new().expect("Host::new"))
}

fn out_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("gcp-db-host-{name}-{}.wasm", std::process::id()))
}

async fn run(wasm: &Path, arg: &str) -> String {
    let opts = CommandOptions {
        args: vec![arg.into()],
        ..Default::default()
    };
    let out = host().run_command(wasm, &opts).await.expect("run");
    assert!(out.success, "{out:?}");
    out.stdout
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn composed_app_no_longer_imports_the_interface_and_runs() {
    let (app, plug) = guests();
    assert!(host().imports(app).unwrap().iter().any(|i| i == IMPORT));
    // Uncomposed, nothing provides the interface.
    let err = host()
        .run_command(app, &CommandOptions::default())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains(IMPORT), "{err:#}");

    let composed =
        compose(&std::fs::read(app).unwrap(), &std::fs::read(plug).unwrap()).expect("compose");
    let path = out_path("composed");
    std::fs::write(&path, composed).unwrap();
    let imports = host().imports(&path).unwrap();
    assert!(!imports.iter().any(|i| i == IMPORT), "{imports:?}");
    // The app's WASI imports stay imports.
    assert!(
        imports
            .iter()
            .any(|i| i.starts_with("wasi:cli/environment@0.2")),
        "{imports:?}"
    );
    let exports = host().exports(&path).unwrap();
    assert!(
        exports.iter().any(|e| e.starts_with("wasi:cli/run@0.2")),
        "{exports:?}"
    );
    assert_eq!(run(&path, "composed").await, "hello, composed!\n");
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 guests: scripts/test runs it"]
async fn the_cli_composes_too() {
    let (app, plug) = guests();
    let path = out_path("cli-composed");
    let status = Command::new(env!("CARGO_BIN_EXE_gcp-db-host"))
        .arg("compose")
        .arg(app)
        .arg("--plug")
        .arg(plug)
        .arg("-o")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(run(&path, "cli").await, "hello, cli!\n");
    std::fs::remove_file(&path).unwrap();

    // Plugging the wrong way round satisfies nothing.
    let output = Command::new(env!("CARGO_BIN_EXE_gcp-db-host"))
        .arg("compose")
        .arg(plug)
        .arg("--plug")
        .arg(app)
        .arg("-o")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("exports nothing the app imports"),
        "{stderr}"
    );
    assert!(!path.exists());
}
