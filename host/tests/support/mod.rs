//! Test guests: tiny cargo projects written to a temp directory and compiled
//! for `wasm32-wasip2` at test time, so each test binary drives real
//! components without checked-in wasm.
//!
//! All guests share one target directory, so their common dependencies
//! (wasip2, wit-bindgen) build once, and reruns rebuild incrementally.

#![allow(dead_code)] // Each test binary uses part of this.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What cargo builds from a guest project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `src/main.rs`: a `wasi:cli/run` command.
    Bin,
    /// `src/lib.rs` as a `cdylib`: a component of whatever its exports are
    /// (a `wasi:http` proxy, a library component).
    Cdylib,
}

/// A guest project.
#[derive(Debug, Clone, Copy)]
pub struct Guest<'a> {
    /// The package name, also its directory's name.
    pub name: &'a str,
    pub kind: Kind,
    /// The lines of its `[dependencies]` section.
    pub dependencies: &'a str,
    /// Files relative to the project, e.g. `("src/main.rs", source)`.
    pub files: &'a [(&'a str, &'a str)],
}

/// `wit/deps/keyvalue` of this repository, for guests generating
/// `wasi:keyvalue` bindings.
pub fn keyvalue_wit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/deps/keyvalue")
}

/// Panics, saying what to do, unless the `wasm32-wasip2` target is
/// installed: a test that builds a guest cannot pass without it.
pub fn require_wasip2() {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-wasip2"))
        .unwrap_or(false);
    assert!(
        installed,
        "the wasm32-wasip2 target is not installed: run scripts/test, or \
         `rustup target add wasm32-wasip2`"
    );
}

/// Builds `guest` (release, `wasm32-wasip2`) and returns its `.wasm`.
/// Panics if the target is missing or the build fails.
pub fn build(guest: &Guest<'_>) -> PathBuf {
    require_wasip2();
    // Fixed directories so reruns rebuild incrementally.
    let root = std::env::temp_dir().join("gcp-db-host-test-guests");
    let dir = root.join(guest.name);
    let lib = match guest.kind {
        Kind::Bin => "",
        Kind::Cdylib => "[lib]\ncrate-type = [\"cdylib\"]\n\n",
    };
    let manifest = format!(
        "[package]\nname = \"{}\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n{lib}\
         [dependencies]\n{}\n\n[workspace]\n\n[profile.release]\nopt-level = 1\n",
        guest.name, guest.dependencies
    );
    write_if_changed(&dir.join("Cargo.toml"), &manifest);
    for (path, contents) in guest.files {
        write_if_changed(&dir.join(path), contents);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = root.join("target");
    let status = Command::new(cargo)
        .current_dir(&dir)
        .args(["build", "--release", "--quiet", "--target", "wasm32-wasip2"])
        .arg("--target-dir")
        .arg(&target_dir)
        // The outer build's settings are not meant for this guest.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("run cargo for the guest");
    assert!(
        status.success(),
        "building the test guest {} failed",
        guest.name
    );
    let file = match guest.kind {
        Kind::Bin => format!("{}.wasm", guest.name),
        Kind::Cdylib => format!("{}.wasm", guest.name.replace('-', "_")),
    };
    target_dir.join("wasm32-wasip2/release").join(file)
}

fn write_if_changed(path: &Path, contents: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(contents) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, contents).unwrap();
    }
}
