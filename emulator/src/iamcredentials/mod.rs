//! IAM Credentials (`iamcredentials.googleapis.com`), the one method connectors call:
//! `POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken` with the caller's
//! token, `{"delegates":[…],"scope":[…],"lifetime":"3600s"}`. The caller must be allowed to
//! impersonate along `caller → delegates[0] → … → target` by the emulator's fixed
//! [`policy`]; the token it gets stands for the target, for the Admin APIs and for
//! automatic IAM database authentication alike. Errors in Google's newer shape.

pub mod policy;

use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::admin::{bearer, caller, parse_duration, path_segments, prelude, respond};
use crate::calls::ApiMethod;
use crate::errors::GoogleError;
use crate::state::AppState;
use crate::tokens::{is_valid_scope, SCOPE_CLOUD_PLATFORM, SCOPE_IAM};
use policy::{exists, PERMISSION};

/// The RPC Google names in error details.
pub const RPC_METHOD: &str = "google.iam.credentials.v1.IAMCredentials.GenerateAccessToken";
/// The longest lifetime Google grants without an organization policy extending it.
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// The shortest lifetime accepted.
pub const MIN_LIFETIME: Duration = Duration::from_secs(1);
/// The lifetime when the request gives none.
pub const DEFAULT_LIFETIME: Duration = MAX_LIFETIME;

/// What a delegate's resource name starts with.
const DELEGATE_PREFIX: &str = "projects/-/serviceAccounts/";

/// A parsed `generateAccessToken` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The project segment: Google requires `-`.
    pub project: String,
    /// The service account to impersonate (percent-decoded).
    pub account: String,
}

/// Parses `/v1/projects/{p}/serviceAccounts/{account}:generateAccessToken` (query string
/// already gone; empty segments ignored; segments percent-decoded).
pub fn parse_path(path: &str) -> Option<Route> {
    let segs = path_segments(path)?;
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let ["v1", "projects", project, "serviceAccounts", last] = segs.as_slice() else {
        return None;
    };
    let account = last.strip_suffix(":generateAccessToken")?;
    if project.is_empty() || account.is_empty() {
        return None;
    }
    Some(Route {
        project: project.to_string(),
        account: account.to_string(),
    })
}

fn invalid_argument(message: impl Into<String>) -> GoogleError {
    GoogleError::invalid_argument(message).modern()
}

/// 404 for a service account that does not exist.
fn not_found(account: &str) -> GoogleError {
    GoogleError::new(
        404,
        format!("Not found; Gaia id not found for email {account}"),
        "notFound",
        "NOT_FOUND",
    )
    .modern()
}

/// 403: a link of the chain is not allowed (Google does not say which).
fn permission_denied() -> GoogleError {
    GoogleError::new(
        403,
        format!("Permission '{PERMISSION}' denied on resource (or it may not exist)."),
        "forbidden",
        "PERMISSION_DENIED",
    )
    .modern()
    .with_detail(json!({
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "IAM_PERMISSION_DENIED",
        "domain": "iam.googleapis.com",
        "metadata": {"permission": PERMISSION},
    }))
}

/// Serves one `generateAccessToken` call.
pub async fn handle(
    state: &AppState,
    method: &Method,
    path: &str,
    route: Route,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if method != Method::POST {
        return GoogleError::route_not_found(method.as_str(), path)
            .modern()
            .into_response();
    }
    if let Some(fault) = prelude(state, ApiMethod::GenerateAccessToken, &route.account).await {
        return fault.into_response();
    }
    let tamper = state.tampering.take(ApiMethod::GenerateAccessToken);
    let result = generate_access_token(state, &route, headers, body);
    respond(ApiMethod::GenerateAccessToken, result, tamper)
}

/// `GenerateAccessTokenRequest`, as proto3 JSON parsers read it: an object, no unknown
/// fields, `null` for absent, both camelCase and original names (the same here).
#[derive(Debug, Default, PartialEq, Eq)]
struct Request {
    delegates: Vec<String>,
    scope: Vec<String>,
    lifetime: Option<String>,
}

impl Request {
    fn parse(body: &[u8]) -> Result<Self, GoogleError> {
        let bad = |e: String| invalid_argument(format!("Invalid JSON payload received. {e}"));
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(bad("Expected a JSON object.".into()));
        };
        let mut req = Self::default();
        for (name, v) in map.into_iter().filter(|(_, v)| !v.is_null()) {
            match name.as_str() {
                "delegates" => req.delegates = strings(&name, v).map_err(bad)?,
                "scope" => req.scope = strings(&name, v).map_err(bad)?,
                "lifetime" => match v {
                    Value::String(s) => req.lifetime = Some(s),
                    _ => return Err(bad("Invalid value at 'lifetime': expected a string.".into())),
                },
                _ => return Err(bad(format!("Unknown name \"{name}\": Cannot find field."))),
            }
        }
        Ok(req)
    }
}

/// A repeated string field.
fn strings(name: &str, v: Value) -> Result<Vec<String>, String> {
    let bad = || format!("Invalid value at '{name}': expected a list of strings.");
    match v {
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::String(s) => Ok(s),
                _ => Err(bad()),
            })
            .collect(),
        _ => Err(bad()),
    }
}

/// The email of a delegate named `projects/-/serviceAccounts/EMAIL`.
fn delegate_email(name: &str) -> Result<&str, GoogleError> {
    match name.strip_prefix(DELEGATE_PREFIX) {
        Some(email) if !email.is_empty() && !email.contains('/') => Ok(email),
        _ => Err(invalid_argument(format!(
            "Invalid delegate {name:?}: delegates must have the format \
             projects/-/serviceAccounts/{{ACCOUNT_EMAIL_OR_UNIQUEID}}."
        ))),
    }
}

/// An account id as Google takes it: an email or a numeric unique id.
fn check_account_id(id: &str) -> Result<(), GoogleError> {
    let email = id
        .split_once('@')
        .is_some_and(|(u, d)| !u.is_empty() && !d.is_empty());
    let unique_id = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
    if email || unique_id {
        Ok(())
    } else {
        Err(invalid_argument(format!(
            "Invalid form of account ID {id}. Should be [Gaia ID |Email |Unique ID |] of the \
             account"
        )))
    }
}

/// `expireTime` as Google writes it: RFC 3339, UTC, whole seconds (google-auth parses it
/// with `%Y-%m-%dT%H:%M:%SZ`, which takes no fraction).
fn expire_time(expiry: SystemTime) -> String {
    let secs = expiry
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Checks the call and issues the token.
fn generate_access_token(
    state: &AppState,
    route: &Route,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, GoogleError> {
    let service = ApiMethod::GenerateAccessToken.service();
    let token = bearer(headers)
        .ok_or_else(|| GoogleError::unauthenticated_modern(true, service, RPC_METHOD))?;
    let caller = caller(state, token, ApiMethod::GenerateAccessToken)
        .ok_or_else(|| GoogleError::unauthenticated_modern(false, service, RPC_METHOD))?;
    if !caller.has_scope(SCOPE_CLOUD_PLATFORM) && !caller.has_scope(SCOPE_IAM) {
        return Err(GoogleError::insufficient_scopes_modern(service, RPC_METHOD));
    }
    if route.project != "-" {
        return Err(invalid_argument(format!(
            "The project in projects/{}/serviceAccounts/{} must be the - wildcard; \
             replacing it with a project ID is invalid.",
            route.project, route.account
        )));
    }
    check_account_id(&route.account)?;
    let req = Request::parse(body)?;
    if req.scope.is_empty() {
        return Err(invalid_argument("Scope required."));
    }
    if let Some(bad) = req.scope.iter().find(|s| !is_valid_scope(s)) {
        return Err(invalid_argument(format!("Invalid scope {bad:?}.")));
    }
    let lifetime = match req.lifetime.as_deref() {
        None => DEFAULT_LIFETIME,
        Some(l) => parse_duration(l)
            .map_err(|e| invalid_argument(format!("Invalid lifetime {l:?}: {e}.")))?,
    };
    if !(MIN_LIFETIME..=MAX_LIFETIME).contains(&lifetime) {
        return Err(invalid_argument(format!(
            "The lifetime must be between {}s and {}s; {:?} was requested.",
            MIN_LIFETIME.as_secs(),
            MAX_LIFETIME.as_secs(),
            req.lifetime.unwrap_or_default()
        )));
    }
    let mut chain = Vec::with_capacity(req.delegates.len() + 1);
    for d in &req.delegates {
        let email = delegate_email(d)?;
        check_account_id(email)?;
        chain.push(email.to_string());
    }
    chain.push(route.account.clone());
    if let Some(unknown) = chain.iter().find(|sa| !exists(sa)) {
        return Err(not_found(unknown));
    }
    if let Some((member, sa)) = state.policy.first_denied(&caller.principal, &chain) {
        // The refused link, for the log (principals are not secrets; the token is).
        eprintln!("generateAccessToken: {member} may not impersonate {sa}");
        return Err(permission_denied());
    }
    let (access_token, info) = state.tokens.issue_for(&route.account, req.scope, lifetime);
    let mut answer = Map::new();
    answer.insert("accessToken".into(), json!(access_token));
    answer.insert("expireTime".into(), json!(expire_time(info.expiry)));
    Ok(Value::Object(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths() {
        assert_eq!(
            parse_path(
                "/v1/projects/-/serviceAccounts/a@p.iam.gserviceaccount.com:generateAccessToken"
            ),
            Some(Route {
                project: "-".into(),
                account: "a@p.iam.gserviceaccount.com".into()
            })
        );
        assert_eq!(
            parse_path("/v1/projects/-/serviceAccounts/a%40p:generateAccessToken")
                .map(|r| r.account),
            Some("a@p".into())
        );
        for bad in [
            "/v1/projects/-/serviceAccounts/a@p",
            "/v1/projects/-/serviceAccounts/a@p:signBlob",
            "/v1/projects/-/serviceAccounts/:generateAccessToken",
            "/v2/projects/-/serviceAccounts/a@p:generateAccessToken",
            "/v1/projects/p/instances/i:generateEphemeralCert",
            "/v1/token",
        ] {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn parses_requests_as_proto3_json() {
        let r = Request::parse(br#"{"delegates":null,"scope":["s"],"lifetime":"60s"}"#).unwrap();
        assert_eq!(
            r,
            Request {
                delegates: vec![],
                scope: vec!["s".into()],
                lifetime: Some("60s".into())
            }
        );
        assert_eq!(Request::parse(b"  ").unwrap(), Request::default());
        for bad in [
            &b"[]"[..],
            b"{\"scope\":\"s\"}",
            b"{\"scope\":[1]}",
            b"{\"lifetime\":60}",
            b"{\"other\":1}",
            b"{",
        ] {
            let e = Request::parse(bad).unwrap_err();
            assert_eq!((e.code, e.status), (400, "INVALID_ARGUMENT"));
        }
    }

    #[test]
    fn names_and_times() {
        assert_eq!(
            delegate_email("projects/-/serviceAccounts/d@p").unwrap(),
            "d@p"
        );
        for bad in [
            "d@p",
            "projects/p/serviceAccounts/d@p",
            "projects/-/serviceAccounts/",
        ] {
            assert!(delegate_email(bad).is_err(), "{bad}");
        }
        assert!(check_account_id("123456").is_ok());
        assert!(check_account_id("no-at-sign").is_err());
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
        assert_eq!(expire_time(t), "2023-11-14T22:13:20Z");
    }
}
