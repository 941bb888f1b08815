//! Test control endpoints under `/emulator/v1`: call counters and proxy traffic, the access
//! tokens issued (so tests can check no client leaks one), injected API failures and
//! broken answers (Admin APIs, STS, generateAccessToken), what each proxy presents in the
//! handshake, proxy faults, how an AlloyDB proxy answers the metadata exchange, and the
//! identity provider's subject token (rewritten on demand). Also here, though no test
//! control: the subject token's URL source (`GET /subject-token`, what
//! `external-account-url.json` reads) and the identity provider's OIDC discovery document
//! and keys under `/oidc`, its issuer URL.
//!
//! `{name}` is a Cloud SQL connection name (`project:region:name`) or an AlloyDB instance
//! URI, percent-encoded into one path segment (`projects%2Fp%2Flocations%2F…`); axum decodes
//! it.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::alloydb::mdx::MdxMode;
use crate::app::{App, NamedInstance};
use crate::calls::ApiMethod;
use crate::certs::ServerCertMode;
use crate::dns::{normalize_name, DnsAnswer, DnsRecords, DEFAULT_TTL, MAX_TXT_BYTES};
use crate::faults::{slow_target, SlowBody};
use crate::idp::SubjectTokenMode;
use crate::proxy::ProxyFault;
use crate::state::SharedState;
use crate::tamper::Tamper;
use crate::workload_identity::{DEFAULT_SUBJECT, SUBJECT_TOKEN_FIELD, SUBJECT_TOKEN_HEADER};

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
        .route("/dns", get(dns_zone).post(set_dns))
        .route("/dns/faults", post(add_dns_fault))
        .route("/dns/faults/reset", post(reset_dns_faults))
        .route(
            "/subject-token",
            get(subject_token).post(rewrite_subject_token),
        )
        .route(
            "/oidc/.well-known/openid-configuration",
            get(oidc_discovery),
        )
        .route("/oidc/jwks", get(oidc_jwks))
}

/// The issuer URL of the identity provider, under the control endpoint `control`.
pub fn oidc_issuer(control: &str) -> String {
    format!("{control}/oidc")
}

/// The subject token's URL source, under the control endpoint `control`.
pub fn subject_token_url(control: &str) -> String {
    format!("{control}/subject-token")
}

/// `GET /subject-token` with `Metadata: True`: `{"id_token":"…","token_type":"Bearer"}`,
/// the current subject token, as an instance metadata service serves one. Without the
/// header, Azure's refusal.
async fn subject_token(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    let (name, value) = SUBJECT_TOKEN_HEADER;
    let ok = headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(value));
    if !ok {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_request",
                        "error_description": "Required metadata header not specified"})),
        )
            .into_response();
    }
    Json(json!({SUBJECT_TOKEN_FIELD: state.idp.current(), "token_type": "Bearer"})).into_response()
}

#[derive(Debug, Deserialize)]
struct SubjectTokenRequest {
    sub: Option<String>,
    mode: Option<String>,
}

/// `POST /subject-token {"sub":"…","mode":"valid"|"expired"|"bad-signature"|
/// "wrong-audience"|"wrong-issuer"}` (both optional: `wasm-workload`, `valid`): a new
/// subject token, in the file and at the URL.
async fn rewrite_subject_token(State(state): State<SharedState>, body: Bytes) -> Response {
    let modes: Vec<String> = SubjectTokenMode::ALL
        .iter()
        .map(|m| format!("{:?}", m.name()))
        .collect();
    let usage = format!("expected {{\"sub\":\"…\",\"mode\":{}}}", modes.join("|"));
    let req = if body.iter().all(u8::is_ascii_whitespace) {
        SubjectTokenRequest {
            sub: None,
            mode: None,
        }
    } else {
        match serde_json::from_slice::<SubjectTokenRequest>(&body) {
            Ok(r) => r,
            Err(_) => return error(StatusCode::BAD_REQUEST, usage),
        }
    };
    let mode = match req.mode.as_deref() {
        None => SubjectTokenMode::Valid,
        Some(m) => match SubjectTokenMode::parse(m) {
            Some(mode) => mode,
            None => return error(StatusCode::BAD_REQUEST, usage),
        },
    };
    let sub = req.sub.unwrap_or_else(|| DEFAULT_SUBJECT.to_string());
    if sub.is_empty() {
        return error(StatusCode::BAD_REQUEST, "sub must not be empty".into());
    }
    match state.idp.rewrite(&sub, mode) {
        Ok(()) => done(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write the subject token: {e}"),
        ),
    }
}

/// The identity provider's OpenID Connect discovery document.
async fn oidc_discovery(State(state): State<SharedState>) -> Response {
    Json(state.idp.discovery()).into_response()
}

/// The identity provider's signing keys (JWKS).
async fn oidc_jwks(State(state): State<SharedState>) -> Response {
    Json(state.idp.jwks()).into_response()
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
    /// `generateClientCertificate`, `sts`, `generateAccessToken`, or absent for any.
    method: Option<String>,
    /// With `count`: fail that many calls with this status.
    status: Option<u16>,
    count: Option<u32>,
    /// Answer every later call of the method after this delay (0 removes it).
    latency_ms: Option<u64>,
    /// `stall` or `trickle`: the next `count` (default 1) answers send their headers, then
    /// no body, or the body a byte per `delay_ms`. The method may also be `token`.
    body: Option<String>,
    /// The delay between two bytes of a trickled body.
    delay_ms: Option<u64>,
}

/// `POST /faults {"method":"connectSettings","status":503,"count":2}`: the next
/// `count` calls of that method fail with `status`, as Google answers it.
/// `{"method":…,"latency_ms":N}`: later calls are answered after N ms.
/// `{"method":…,"body":"stall","count":N}` / `{"method":…,"body":"trickle","delay_ms":D,
/// "count":N}`: the next N answers (default 1) send their status and headers, then no body
/// until the client gives up, or the body a byte every D ms; `method` may also be `token`
/// (the OAuth2 token endpoint).
async fn add_fault(State(state): State<SharedState>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<FaultRequest>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {\"method\":\"connectSettings\"|\"generateEphemeralCert\"|\"connectionInfo\"|\"generateClientCertificate\"|\"sts\"|\"generateAccessToken\",\"status\":503,\"count\":N}, {\"method\":…,\"latency_ms\":N} or {\"method\":…|\"token\",\"body\":\"stall\"|\"trickle\",\"delay_ms\":N,\"count\":N}".into(),
        );
    };
    if let Some(mode) = req.body.as_deref() {
        return add_slow_body(&state, &req, mode);
    }
    let method = match req.method.as_deref() {
        None => None,
        Some(name) => match ApiMethod::parse(name) {
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

/// A slow-body fault (`"body":"stall"|"trickle"`).
fn add_slow_body(state: &SharedState, req: &FaultRequest, mode: &str) -> Response {
    if req.status.is_some() || req.latency_ms.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "give body without status or latency_ms".into(),
        );
    }
    let target = match req.method.as_deref() {
        None => None,
        Some(name) => match slow_target(name) {
            Some(t) => Some(t),
            None => return error(StatusCode::BAD_REQUEST, format!("unknown method {name:?}")),
        },
    };
    let slow = match (mode, req.delay_ms) {
        ("stall", None) => SlowBody::Stall,
        ("trickle", Some(ms)) if ms > 0 => SlowBody::Trickle(std::time::Duration::from_millis(ms)),
        ("stall", Some(_)) => {
            return error(StatusCode::BAD_REQUEST, "stall takes no delay_ms".into())
        }
        ("trickle", _) => {
            return error(
                StatusCode::BAD_REQUEST,
                "trickle needs \"delay_ms\" (at least 1)".into(),
            )
        }
        (other, _) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown body {other:?}: expected stall or trickle"),
            )
        }
    };
    state.faults.push_slow(target, slow, req.count.unwrap_or(1));
    done()
}

/// Clears the faults and the broken answers, the DNS faults too.
async fn reset_faults(State(state): State<SharedState>) -> Response {
    state.faults.clear();
    state.tampering.clear();
    state.dns.clear_faults();
    done()
}

/// `GET /dns`: the DoH resolver's zone, `{"name":{"txt":[…],"cname":…,"ttl":N},…}`.
async fn dns_zone(State(state): State<SharedState>) -> Response {
    Json(state.dns.snapshot()).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetDnsRequest {
    name: String,
    txt: Option<Vec<String>>,
    cname: Option<String>,
    ttl: Option<u32>,
    #[serde(default)]
    delete: bool,
}

/// `POST /dns {"name":"orders.example.com","txt":["p:r:i"],"cname":null,"ttl":30}`:
/// replaces that name's records (no `txt`: none; no `ttl`: 30 s); `"delete":true`
/// removes the name, so that it answers NXDOMAIN.
async fn set_dns(State(state): State<SharedState>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<SetDnsRequest>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {\"name\":\"…\",\"txt\":[\"…\"],\"cname\":\"…\"|null,\"ttl\":N} or {\"name\":\"…\",\"delete\":true}".into(),
        );
    };
    let name = match normalize_name(&req.name) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if req.delete {
        if req.txt.is_some() || req.cname.is_some() || req.ttl.is_some() {
            return error(StatusCode::BAD_REQUEST, "delete takes only the name".into());
        }
        state.dns.set(name, None);
        return done();
    }
    let cname = match req.cname.as_deref().map(normalize_name).transpose() {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let txt = req.txt.unwrap_or_default();
    if let Some(t) = txt.iter().find(|t| t.len() > MAX_TXT_BYTES) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("a TXT value is {} bytes, over {MAX_TXT_BYTES}", t.len()),
        );
    }
    let records = DnsRecords {
        txt,
        cname,
        ttl: req.ttl.unwrap_or(DEFAULT_TTL),
    };
    state.dns.set(name, Some(records));
    done()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DnsFaultRequest {
    name: String,
    answer: String,
    delay_ms: Option<u64>,
    count: Option<u32>,
}

/// `POST /dns/faults {"name":"orders.example.com","answer":"servfail","delay_ms":D,
/// "count":N}`: the next N DoH queries of that name (without `count`: all, until reset)
/// are answered `servfail` (RCODE 2), `nxdomain` (RCODE 3), `empty` (NOERROR, no
/// records), `malformed` (HTTP 200 with a body that is no DNS message), `http-500`, or
/// `slow` (the normal answer), each after `delay_ms` if given (`slow` needs it).
async fn add_dns_fault(State(state): State<SharedState>, body: Bytes) -> Response {
    let answers: Vec<String> = DnsAnswer::ALL
        .iter()
        .map(|a| format!("{:?}", a.name()))
        .collect();
    let usage = format!(
        "expected {{\"name\":\"…\",\"answer\":{},\"delay_ms\":N,\"count\":N}}",
        answers.join("|")
    );
    let Ok(req) = serde_json::from_slice::<DnsFaultRequest>(&body) else {
        return error(StatusCode::BAD_REQUEST, usage);
    };
    let Some(answer) = DnsAnswer::parse(&req.answer) else {
        return error(StatusCode::BAD_REQUEST, usage);
    };
    let name = match normalize_name(&req.name) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if req.count == Some(0) {
        return error(StatusCode::BAD_REQUEST, "count must be at least 1".into());
    }
    let delay = std::time::Duration::from_millis(req.delay_ms.unwrap_or(0));
    if answer == DnsAnswer::Slow && delay.is_zero() {
        return error(
            StatusCode::BAD_REQUEST,
            "slow needs \"delay_ms\" (at least 1)".into(),
        );
    }
    state.dns.push_fault(name, answer, delay, req.count);
    done()
}

/// `POST /dns/faults/reset`: drops the DNS faults only (the zone stays).
async fn reset_dns_faults(State(state): State<SharedState>) -> Response {
    state.dns.clear_faults();
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
            "expected {\"method\":\"connectSettings\"|\"generateEphemeralCert\"|\"connectionInfo\"|\"generateClientCertificate\"|\"sts\"|\"generateAccessToken\",\"mode\":\"malformed\"|\"truncated\"|\"oversized\"|\"drop-field\"|\"ca-not-pem\"|\"cert-other-key\"|\"cert-expired\",\"field\":\"…\",\"count\":N}".into(),
        );
    };
    let Some(method) = ApiMethod::parse(&req.method) else {
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
    delay_ms: Option<u64>,
}

/// `POST /instances/{name}/proxy {"mode":"drop-after-bytes","bytes":N}` (or
/// `{"mode":"trickle-server-flight","delay_ms":D}`, …): how that instance's proxy treats
/// new connections, until set back to `normal`.
async fn proxy_fault(State(app): State<App>, Path(name): Path<String>, body: Bytes) -> Response {
    let Some(inst) = app.instances.by_name(&name) else {
        return unknown_instance(&name);
    };
    let Ok(req) = serde_json::from_slice::<ProxyFaultRequest>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {\"mode\":\"normal\"|\"refuse\"|\"drop-after-handshake\"|\"drop-after-bytes\"|\"cut-after-client-hello\"|\"cut-mid-server-flight\"|\"trickle-server-flight\",\"bytes\":N,\"delay_ms\":N}".into(),
        );
    };
    match ProxyFault::parse(&req.mode, req.bytes, req.delay_ms) {
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
