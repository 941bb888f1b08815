//! The only code that calls WASI directly. Everything else in the crate is
//! plain Rust over std (which itself reaches `wasi:sockets`, `wasi:clocks`,
//! `wasi:random` and `wasi:filesystem` on wasm32-wasip2), so a move to WASI 0.3
//! touches this folder alone.

#[cfg(target_os = "wasi")]
#[path = "http_p2.rs"]
pub(crate) mod http;

#[cfg(not(target_os = "wasi"))]
#[path = "http_unsupported.rs"]
pub(crate) mod http;
