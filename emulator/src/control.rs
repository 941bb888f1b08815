//! Test control endpoints under `/emulator/v1`: call counters and proxy traffic, the access
//! tokens issued (so tests can check no client leaks one), injected Admin API failures and
//! broken answers, what each proxy presents in the handshake, proxy faults, and how an
//! AlloyDB proxy answers the metadata exchange.
//!
//! `{name}` is a Cloud SQL connection name (`project:region:name`) or an AlloyDB instance
//! URI, percent-encoded into one path segment (`projects%2Fp%2Flocations%2F…`); axum decodes
//! it.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::alloydb::mdx::MdxMode;
use crate::app::{App, NamedInstance};
use crate::calls::AdminMethod;
use crate::certs::ServerCertMode;
use crate::proxy::ProxyFault;
use crate::state::SharedState;
use crate::tamper::Tamper;

/// Routes, to be nested under `/emulator/v1`.
pub fn router() -> Router<App> {
    Router::new()
        .route("/calls", get(calls))
        .route("/calls/reset", post(reset))
        .route("/tokens", get(tokens))
        .route("/instances/{name}/server-cert", post(server_cert))
        .route("/instances/{name}/proxy", post(proxy_fault))
        .route("/instances/{name}/mdx", post(mdx_mode))
        .route("/faults", post(add_fault))
        .route("/faults/response", post(tamper_response))
        .route("/faults/reset", post(reset_faults))
}

async fn calls(State(state): State<SharedState>) -> Response {
    Json(state.calls.snapshot()).into_response()
}

async fn reset(State(state): State<SharedState>) -> Response {
    state.calls.reset();
    done()
}

/// `GET /tokens`: `{"issued":["ya29.emu-…",…]}`, every access token the emulator
/// issued (and has not forgotten).
async fn tokens(State(state): State<SharedState>) -> Response {
    Json(json!({"issued": state.tokens.issued()})).into_response()
}

#[derive(Debug, Deserialize)]
struct ServerCertRequest {
    mode: String,
}

/// The empty success body of every control call.
fn done() -> Response {
    Json(json!({})).into_response()
}

/// The answer when a control path names no instance.
fn unknown_instance(name: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("unknown instance {name:?}"))
}

fn error(status: StatusCode, message: String) -> Response {
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message}})),
    )
        .into_response()
}

async fn server_cert(State(app): State<App>, Path(name): Path<String>, body: Bytes) -> Response {
    let Some(inst) = app.instances.by_name(&name) else {
        return unknown_instance(&name);
    };
    let mode = serde_json::from_slice::<ServerCertRequest>(&body)
        .ok()
        .and_then(|r| ServerCertMode::parse(&r.mode));
    let Some(mode) = mode else {
        let modes: Vec<String> = ServerCertMode::ALL
            .iter()
            .map(|m| format!("{:?}", m.name()))
            .collect();
        return error(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"mode\":{}}}", modes.join("|")),
        );
    };
    inst.controls().set_server_cert_mode(mode);
    done()
}

#[derive(Debug, Deserialize)]
struct FaultRequest {
    /// `connectSettings`, `generateEphemeralCert`, `connectionInfo`,
    /// `generateClientCertificate`, or absent for any.
    method: Option<String>,
    /// With `count`: fail that many calls with this status.
    status: Option<u16>,
    count: Option<u32>,
    /// Answer every later call of the method after this delay (0 removes it).
    latency_ms: Option<u64>,
}

/// `POST /faults {"method":"connectSettings","status":503,"count":2}`: the next
/// `count` calls of that method fail with `status`, as Google answers it.
/// `{"method":…,"latency_ms":N}`: later calls are answered after N ms.
async fn add_fault(State(state): State<SharedState>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<FaultRequest>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {\"method\":\"connectSettings\"|\"generateEphemeralCert\"|\"connectionInfo\"|\"generateClientCertificate\",\"status\":503,\"count\":N}".into(),
        );
    };
    let method = match req.method.as_deref() {
        None => None,
        Some(name) => match AdminMethod::parse(name) {
            Some(m) => Some(m),
            None => return error(StatusCode::BAD_REQUEST, format!("unknown method {name:?}")),
        },
    };
    if let Some(ms) = req.latency_ms {
        state
            .faults
            .set_latency(method, std::time::Duration::from_millis(ms));
    }
    match (req.status, req.count) {
        (Some(status), Some(count)) => match state.faults.push(method, status, count) {
            Ok(()) => done(),
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        },
        (None, None) if req.latency_ms.is_some() => done(),
        _ => error(
            StatusCode::BAD_REQUEST,
            "give status and count together, or latency_ms".into(),
        ),
    }
}

/// Clears the faults and the broken answers.
async fn reset_faults(State(state): State<SharedState>) -> Response {
    state.faults.clear();
    state.tampering.clear();
    done()
}

#[derive(Debug, Deserialize)]
struct TamperRequest {
    method: String,
    mode: String,
    field: Option<String>,
    count: Option<u32>,
}

/// `POST /faults/response {"method":"connectSettings","mode":"drop-field",
/// "field":"serverCaCert.cert","count":N}`: the next `count` (default 1) calls of that
/// method are answered broken that way (see `tamper`); one that fails anyway (401,
/// 404) gets its error. Modes: `malformed`, `truncated`, `oversized`, `drop-field`,
/// `ca-not-pem`, `cert-other-key`, `cert-expired`.
async fn tamper_response(State(state): State<SharedState>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<TamperRequest>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {\"method\":\"connectSettings\"|\"generateEphemeralCert\"|\"connectionInfo\"|\"generateClientCertificate\",\"mode\":\"malformed\"|\"truncated\"|\"oversized\"|\"drop-field\"|\"ca-not-pem\"|\"cert-other-key\"|\"cert-expired\",\"field\":\"…\",\"count\":N}".into(),
        );
    };
    let Some(method) = AdminMethod::parse(&req.method) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown method {:?}", req.method),
        );
    };
    // cert-other-key makes an RSA key: off the async workers.
    let parsed =
        tokio::task::spawn_blocking(move || Tamper::parse(&req.mode, req.field.as_deref(), method))
            .await
            .unwrap_or_else(|e| Err(format!("parsing the mode failed: {e}")));
    match parsed {
        Ok(tamper) => {
            state.tampering.push(method, tamper, req.count.unwrap_or(1));
            done()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Debug, Deserialize)]
struct ProxyFaultRequest {
    mode: String,
    bytes: Option<u64>,
}

/// `POST /instances/{name}/proxy {"mode":"drop-after-bytes","bytes":N}`:
/// how that instance's proxy treats new connections, until set back to `normal`.
async fn proxy_fault(State(app): State<App>, Path(name): Path<String>, body: Bytes) -> Response {
    let Some(inst) = app.instances.by_name(&name) else {
        return unknown_instance(&name);
    };
    let Ok(req) = serde_json::from_slice::<ProxyFaultRequest>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {\"mode\":\"normal\"|\"refuse\"|\"drop-after-handshake\"|\"drop-after-bytes\"|\"cut-after-client-hello\"|\"cut-mid-server-flight\",\"bytes\":N}".into(),
        );
    };
    match ProxyFault::parse(&req.mode, req.bytes) {
        Ok(fault) => {
            inst.controls().set_proxy_fault(fault);
            done()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Debug, Deserialize)]
struct MdxModeRequest {
    mode: String,
    message: Option<String>,
}

/// `POST /instances/{alloydb uri}/mdx {"mode":"error","message":"…"}`: how that AlloyDB
/// instance's proxy answers metadata exchanges, until set back to `normal`.
async fn mdx_mode(State(app): State<App>, Path(name): Path<String>, body: Bytes) -> Response {
    let inst = match app.instances.by_name(&name) {
        Some(NamedInstance::AlloyDb(i)) => i,
        Some(NamedInstance::CloudSql(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{name:?} is a Cloud SQL instance; metadata exchange modes apply to \
                     AlloyDB instances"
                ),
            )
        }
        None => return unknown_instance(&name),
    };
    let Ok(req) = serde_json::from_slice::<MdxModeRequest>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {\"mode\":\"normal\"|\"error\"|\"truncated\"|\"oversized\"|\"not-mdx\"|\"silent\",\"message\":\"…\"}".into(),
        );
    };
    match MdxMode::parse(&req.mode, req.message) {
        Ok(mode) => {
            inst.set_mdx_mode(mode);
            done()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}
