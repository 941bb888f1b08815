//! `gcp-emulator`: command line and process lifetime. Prints one JSON "ready" line when
//! every listener is up, then runs until SIGTERM/SIGINT.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use gcp_emulator::config::{parse_args, Command, USAGE};

fn write_ready_file(path: &Path, line: &str) -> std::io::Result<()> {
    // Write then rename, so a watcher never reads half a line.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{line}\n"))?;
    std::fs::rename(&tmp, path)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(o)) => o,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("gcp-emulator: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let ready_file = opts.ready_file.clone();
    let running = match gcp_emulator::start(opts).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gcp-emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let line = match serde_json::to_string(&running.ready) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("gcp-emulator: cannot encode the ready line: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The file first: whoever sees either signal can rely on both.
    if let Some(path) = ready_file {
        if let Err(e) = write_ready_file(&path, &line) {
            eprintln!("gcp-emulator: cannot write {}: {e}", path.display());
            running.shutdown().await;
            return ExitCode::FAILURE;
        }
    }
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    wait_for_signal().await;
    eprintln!("gcp-emulator: shutting down");
    running.shutdown().await;
    ExitCode::SUCCESS
}
