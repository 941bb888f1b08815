//! Running `wasi:cli/run` commands (test guests, the demo, benchmarks).

use std::path::{Path, PathBuf};

use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::I32Exit;

use crate::{wasi_builder, Host};

/// Captured stdout or stderr larger than this traps the guest; far above what
/// a test or benchmark prints, and it bounds a runaway guest's memory use.
const CAPTURE_LIMIT: usize = 64 * 1024 * 1024;

/// How to run a command.
#[derive(Debug, Clone, Default)]
pub struct CommandOptions {
    /// Arguments after `argv[0]`; the host passes the file name of the
    /// component as `argv[0]`.
    pub args: Vec<String>,
    /// Environment variables, the only ones the guest sees.
    pub env: Vec<(String, String)>,
    /// Directories preopened read-only: `(host path, guest path)`.
    pub dirs: Vec<(PathBuf, String)>,
    /// Let the guest use the host's stdin, stdout and stderr. When false,
    /// stdout and stderr are captured into [`CommandOutput`] and stdin is
    /// empty.
    pub inherit_stdio: bool,
    /// Link the host's [`SharedStore`](crate::SharedStore)
    /// (`wasi:keyvalue/store` and `atomics`). A command importing
    /// `wasi:keyvalue` runs only with this on.
    pub keyvalue: bool,
}

/// What a command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// Captured stdout (lossy UTF-8); empty when stdio was inherited.
    pub stdout: String,
    /// Captured stderr (lossy UTF-8); empty when stdio was inherited.
    pub stderr: String,
    /// `run` returned `ok`, or the guest called `exit(0)`.
    pub success: bool,
    /// The status passed to `exit`, if the guest called it.
    pub exit_code: Option<i32>,
}

impl Host {
    /// Runs the `wasi:cli/run` command at `wasm` to completion.
    ///
    /// A guest failure (`run` returning `err`, `exit(n)` with `n != 0`, which
    /// includes a Rust `main` returning `Err`) gives `success == false`. Traps
    /// (a panic with `panic = "abort"`, `unreachable`) and host problems
    /// (missing file, unsatisfied imports, a `wasi:keyvalue` import without
    /// [`CommandOptions::keyvalue`]) are `Err`.
    pub async fn run_command(
        &self,
        wasm: &Path,
        opts: &CommandOptions,
    ) -> wasmtime::Result<CommandOutput> {
        let component = self.component(wasm)?;
        let pre = CommandPre::new(self.instance_pre(&component, opts.keyvalue)?)?;

        let argv0 = wasm
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| wasm.display().to_string());
        let mut builder = wasi_builder(&opts.env, &opts.dirs)?;
        builder.arg(argv0).args(&opts.args);
        let captured = if opts.inherit_stdio {
            builder.inherit_stdio();
            None
        } else {
            let stdout = MemoryOutputPipe::new(CAPTURE_LIMIT);
            let stderr = MemoryOutputPipe::new(CAPTURE_LIMIT);
            builder.stdout(stdout.clone()).stderr(stderr.clone());
            Some((stdout, stderr))
        };

        let mut store = self.new_store(builder.build(), opts.keyvalue);
        let command = pre.instantiate_async(&mut store).await?;
        let result = command.wasi_cli_run().call_run(&mut store).await;
        // Release the store (and its clones of the pipes) before reading them.
        drop(store);

        let (stdout, stderr) = match captured {
            Some((out, err)) => (lossy(&out), lossy(&err)),
            None => (String::new(), String::new()),
        };
        let (success, exit_code) = match result {
            Ok(Ok(())) => (true, None),
            Ok(Err(())) => (false, None),
            Err(err) => match err.downcast_ref::<I32Exit>() {
                Some(exit) => (exit.0 == 0, Some(exit.0)),
                // A trap: keep what the guest said (e.g. its panic message),
                // which is otherwise lost with the captured output.
                None if !stderr.is_empty() => {
                    return Err(err.context(format!("guest stderr:\n{}", tail(&stderr))))
                }
                None => return Err(err),
            },
        };
        Ok(CommandOutput {
            stdout,
            stderr,
            success,
            exit_code,
        })
    }

    /// [`Host::run_command`] for callers without an async runtime: runs it on
    /// a fresh multi-threaded tokio runtime.
    ///
    /// # Panics
    ///
    /// When called from within a tokio runtime (use `run_command` there).
    pub fn run_command_blocking(
        &self,
        wasm: &Path,
        opts: &CommandOptions,
    ) -> wasmtime::Result<CommandOutput> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(self.run_command(wasm, opts))
    }
}

fn lossy(pipe: &MemoryOutputPipe) -> String {
    String::from_utf8_lossy(&pipe.contents()).into_owned()
}

/// The last few KiB of `text`, cut at a character boundary.
fn tail(text: &str) -> &str {
    const MAX: usize = 4096;
    let mut start = text.len().saturating_sub(MAX);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
