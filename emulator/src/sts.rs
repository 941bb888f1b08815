//! Security Token Service (`sts.googleapis.com`) at `POST /v1/token`: OAuth 2.0 token
//! exchange (RFC 8693) as Google's STS takes it. A form with `grant_type`
//! (`urn:ietf:params:oauth:grant-type:token-exchange`), `audience` (the workload identity
//! pool provider), `scope` (space separated), `requested_token_type` (an access token),
//! `subject_token` and `subject_token_type` (a JWT from the pool's identity provider, `idp`),
//! optionally `options` (URL-encoded JSON) and client authentication (HTTP Basic, or
//! `client_id`/`client_secret` in the form). The answer is a federated access token for
//! `principal://…/subject/SUB`; errors are OAuth 2.0 errors as Google words them.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

use crate::admin::prelude;
use crate::calls::ApiMethod;
use crate::idp::SubjectTokenError;
use crate::state::SharedState;
use crate::tokens::is_valid_scope;
use crate::workload_identity::{
    audience, principal, SUBJECT_TOKEN_TYPE_ID_TOKEN, SUBJECT_TOKEN_TYPE_JWT,
};

/// The token-exchange grant type.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The only `requested_token_type` (and `issued_token_type`): an access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// An OAuth 2.0 error answer (`{"error","error_description"}`), not to be cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsError {
    /// HTTP status.
    pub status: StatusCode,
    /// `error`, e.g. `invalid_grant`.
    pub error: &'static str,
    /// `error_description`; never holds a token or secret.
    pub description: String,
}

impl StsError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
        }
    }

    fn bad_request(error: &'static str, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, description)
    }

    fn missing(field: &str) -> Self {
        Self::bad_request(
            "invalid_request",
            format!("Missing required field \"{field}\"."),
        )
    }
}

impl IntoResponse for StsError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "error_description": self.description});
        no_store((self.status, Json(body)).into_response())
    }
}

/// Token responses must not be cached (RFC 6749 §5.1).
fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// How a subject token's refusal is worded.
fn subject_token_error(e: SubjectTokenError) -> StsError {
    let description = match e {
        SubjectTokenError::Signature => {
            "The ID Token's signature is invalid, or it is not a JWT signed by the \
             provider's keys."
                .to_string()
        }
        SubjectTokenError::Issuer(iss) => {
            format!("The issuer in ID Token [{iss}] does not match the provider's issuer.")
        }
        SubjectTokenError::Audience(aud) => {
            format!("The audience in ID Token [{aud}] does not match the expected audience.")
        }
        SubjectTokenError::Expired(iat) => format!("ID Token issued at {iat} is stale to sign-in."),
        SubjectTokenError::Timeframe => {
            "The ID Token's iat and exp claims are missing or not a valid timeframe.".to_string()
        }
        SubjectTokenError::Subject => "The ID Token has no subject (sub) claim.".to_string(),
    };
    StsError::bad_request("invalid_grant", description)
}

/// The OAuth client of the request, if it authenticates one: HTTP Basic
/// (`base64(id:secret)`, each part possibly form-encoded) or form fields.
fn client_credentials(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<Option<(String, String)>, StsError> {
    let invalid = || {
        StsError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The client credentials are malformed.",
        )
    };
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| invalid())?;
        let Some((scheme, creds)) = v.split_once(' ') else {
            return Err(invalid());
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(invalid());
        }
        let decoded = STANDARD.decode(creds.trim()).map_err(|_| invalid())?;
        let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
        let (id, secret) = decoded.split_once(':').ok_or_else(invalid)?;
        let dec = |s: &str| {
            percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| invalid())
        };
        return Ok(Some((dec(id)?, dec(secret)?)));
    }
    Ok(form.get("client_id").map(|id| {
        (
            id.clone(),
            form.get("client_secret").cloned().unwrap_or_default(),
        )
    }))
}

/// `POST /v1/token`, its body stalled or trickled if a test asked for that.
pub async fn token(State(state): State<SharedState>, headers: HeaderMap, body: Bytes) -> Response {
    let resp = answer(&state, &headers, &body).await;
    let slow = state.faults.take_slow(ApiMethod::Sts.name());
    crate::faults::slow_down(slow, resp).await
}

/// STS's answer to `body`.
async fn answer(state: &SharedState, headers: &HeaderMap, body: &[u8]) -> Response {
    let form = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .map(|pairs| pairs.into_iter().collect::<HashMap<_, _>>());
    let key = form
        .as_ref()
        .ok()
        .and_then(|f| f.get("audience").cloned())
        .unwrap_or_default();
    if let Some(fault) = prelude(state, ApiMethod::Sts, &key).await {
        return fault.into_response();
    }
    let tamper = state.tampering.take(ApiMethod::Sts);
    let result = match form {
        Ok(form) => exchange(state, headers, &form),
        Err(_) => Err(StsError::bad_request(
            "invalid_request",
            "The request body is not a valid form.",
        )),
    };
    match (result, tamper) {
        (Ok(answer), Some(t)) => no_store(t.response(ApiMethod::Sts, answer)),
        (Ok(answer), None) => no_store((StatusCode::OK, Json(answer)).into_response()),
        (Err(e), _) => e.into_response(),
    }
}

/// Checks the exchange and issues the federated token.
fn exchange(
    state: &SharedState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<Value, StsError> {
    let field = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
    if let Some((id, secret)) = client_credentials(headers, form)? {
        let creds = &state.credentials;
        if id != creds.sts_client_id || secret != creds.sts_client_secret {
            return Err(StsError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "The OAuth client was not found.",
            ));
        }
    }
    match field("grant_type") {
        Some(GRANT_TYPE) => {}
        None => return Err(StsError::missing("grant_type")),
        Some(other) => {
            return Err(StsError::bad_request(
                "unsupported_grant_type",
                format!("Invalid value for \"grant_type\": {other:?}. Expected \"{GRANT_TYPE}\"."),
            ))
        }
    }
    let Some(asked) = field("audience") else {
        return Err(StsError::missing("audience"));
    };
    if asked != audience() {
        return Err(StsError::bad_request(
            "invalid_target",
            "The target service indicated by the \"audience\" parameters is invalid. This \
             might either be because the pool or provider is disabled or deleted or because it \
             doesn't exist.",
        ));
    }
    match field("requested_token_type") {
        Some(ACCESS_TOKEN_TYPE) => {}
        None => return Err(StsError::missing("requested_token_type")),
        Some(other) => {
            return Err(StsError::bad_request(
                "invalid_request",
                format!(
                    "Invalid value for \"requested_token_type\": {other:?}. Expected \
                     \"{ACCESS_TOKEN_TYPE}\"."
                ),
            ))
        }
    }
    match field("subject_token_type") {
        Some(SUBJECT_TOKEN_TYPE_JWT | SUBJECT_TOKEN_TYPE_ID_TOKEN) => {}
        None => return Err(StsError::missing("subject_token_type")),
        Some(other) => {
            return Err(StsError::bad_request(
                "invalid_request",
                format!(
                    "Invalid value for \"subject_token_type\": {other:?}. The provider is an \
                     OIDC provider: expected \"{SUBJECT_TOKEN_TYPE_JWT}\" or \
                     \"{SUBJECT_TOKEN_TYPE_ID_TOKEN}\"."
                ),
            ))
        }
    }
    let Some(subject_token) = field("subject_token") else {
        return Err(StsError::missing("subject_token"));
    };
    let Some(scope) = field("scope") else {
        return Err(StsError::missing("scope"));
    };
    let scopes: Vec<String> = scope.split_whitespace().map(str::to_string).collect();
    if let Some(bad) = scopes.iter().find(|s| !is_valid_scope(s)) {
        return Err(StsError::bad_request(
            "invalid_scope",
            format!("Invalid value for \"scope\": {bad:?} is not a valid scope."),
        ));
    }
    if let Some(options) = field("options") {
        check_options(options)?;
    }
    let subject = state
        .idp
        .verify(subject_token)
        .map_err(subject_token_error)?;
    let (access_token, _) = state.tokens.issue(&principal(&subject.subject), scopes);
    Ok(json!({
        "access_token": access_token,
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": state.tokens.lifetime().as_secs(),
    }))
}

/// `options`: URL-encoded JSON (google-auth quotes it once more before form encoding).
/// `userProject` is for workforce pools only; the emulator's pool is a workload pool.
fn check_options(options: &str) -> Result<(), StsError> {
    let bad = |why: &str| {
        StsError::bad_request(
            "invalid_request",
            format!("Invalid value for \"options\": {why}"),
        )
    };
    let json_text = percent_decode_str(options)
        .decode_utf8()
        .map_err(|_| bad("not URL-encoded UTF-8."))?;
    let value: Value = serde_json::from_str(&json_text).map_err(|_| bad("not JSON."))?;
    let Value::Object(map) = value else {
        return Err(bad("not a JSON object."));
    };
    if map.contains_key("userProject") {
        return Err(bad(
            "userProject is only supported for workforce pools, and the audience is a \
             workload identity pool provider.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn client_credentials_from_basic_or_form() {
        let mut h = HeaderMap::new();
        assert_eq!(client_credentials(&h, &form(&[])), Ok(None));
        assert_eq!(
            client_credentials(&h, &form(&[("client_id", "a"), ("client_secret", "b")])),
            Ok(Some(("a".into(), "b".into())))
        );
        let basic = format!("Basic {}", STANDARD.encode("id%3Ax:s%20t"));
        h.insert(header::AUTHORIZATION, basic.parse().unwrap());
        assert_eq!(
            client_credentials(&h, &form(&[])),
            Ok(Some(("id:x".into(), "s t".into())))
        );
        for bad in [
            "Basic !!!",
            "Bearer x",
            "Basic",
            &format!("Basic {}", STANDARD.encode("nocolon")),
        ] {
            h.insert(header::AUTHORIZATION, bad.parse().unwrap());
            let e = client_credentials(&h, &form(&[])).unwrap_err();
            assert_eq!(
                (e.status, e.error),
                (StatusCode::UNAUTHORIZED, "invalid_client")
            );
        }
    }

    #[test]
    fn options_are_url_encoded_json() {
        assert_eq!(check_options("%7B%7D"), Ok(()));
        assert_eq!(check_options("{}"), Ok(()));
        for bad in [
            "%7B",
            "%5B%5D",
            "%ff",
            "%7B%22userProject%22%3A%22123%22%7D",
        ] {
            let e = check_options(bad).unwrap_err();
            assert_eq!(e.error, "invalid_request", "{bad}");
        }
    }

    #[test]
    fn subject_token_errors_are_invalid_grant() {
        for e in [
            SubjectTokenError::Signature,
            SubjectTokenError::Issuer("i".into()),
            SubjectTokenError::Audience("a".into()),
            SubjectTokenError::Expired(5),
            SubjectTokenError::Timeframe,
            SubjectTokenError::Subject,
        ] {
            let s = subject_token_error(e);
            assert_eq!(
                (s.status, s.error),
                (StatusCode::BAD_REQUEST, "invalid_grant")
            );
        }
        assert_eq!(
            subject_token_error(SubjectTokenError::Expired(5)).description,
            "ID Token issued at 5 is stale to sign-in."
        );
    }
}
