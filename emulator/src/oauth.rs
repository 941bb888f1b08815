//! The OAuth2 token endpoint (`POST /token`): JWT-bearer assertions from the service
//! account and refresh-token grants from the authorized user, answered as Google does.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::calls::Grant;
use crate::credentials::{SERVICE_ACCOUNT_EMAIL, USER_EMAIL};
use crate::faults::{self, TOKEN_ENDPOINT};
use crate::jwt::{self, Expected};
use crate::state::SharedState;
use crate::tokens::{SCOPE_CLOUD_PLATFORM, SCOPE_SQLSERVICE_LOGIN, SCOPE_USERINFO_EMAIL};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// An OAuth2 error response (`{"error","error_description"}`).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    with_no_store(
        (
            status,
            Json(json!({"error": error, "error_description": description})),
        )
            .into_response(),
    )
}

fn with_no_store(mut resp: Response) -> Response {
    // Token responses must not be cached (RFC 6749 §5.1).
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `POST /token`, its body stalled or trickled if a test asked for that.
pub async fn token(State(state): State<SharedState>, body: Bytes) -> Response {
    let slow = state.faults.take_slow(TOKEN_ENDPOINT);
    faults::slow_down(slow, answer(&state, &body)).await
}

/// The token endpoint's answer to `body`.
fn answer(state: &SharedState, body: &[u8]) -> Response {
    let form: HashMap<String, String> =
        match serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) {
            Ok(pairs) => pairs.into_iter().collect(),
            Err(_) => {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "Bad Request")
            }
        };
    let grant_type = form.get("grant_type").map(String::as_str).unwrap_or("");
    match grant_type {
        JWT_BEARER => {
            state.calls.record_token(Grant::JwtBearer);
            jwt_bearer(state, &form)
        }
        "refresh_token" => {
            state.calls.record_token(Grant::RefreshToken);
            refresh_token(state, &form)
        }
        "" => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Invalid grant_type: ",
        ),
        other => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("Invalid grant_type: {other}"),
        ),
    }
}

fn jwt_bearer(state: &SharedState, form: &HashMap<String, String>) -> Response {
    let Some(assertion) = form.get("assertion") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: assertion",
        );
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let expected = Expected {
        public_key: &state.credentials.public_key,
        key_id: &state.credentials.private_key_id,
        issuer: SERVICE_ACCOUNT_EMAIL,
        audiences: &state.audiences,
    };
    match jwt::verify(assertion, &expected, now) {
        Ok(v) => issue(state, SERVICE_ACCOUNT_EMAIL, v.scopes, false),
        Err(e) => {
            let (error, description) = e.oauth_error();
            oauth_error(StatusCode::BAD_REQUEST, error, &description)
        }
    }
}

fn refresh_token(state: &SharedState, form: &HashMap<String, String>) -> Response {
    let creds = &state.credentials;
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if get("client_id") != creds.user_client_id || get("client_secret") != creds.user_client_secret
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The OAuth client was not found.",
        );
    }
    if get("refresh_token") != creds.refresh_token {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Bad Request");
    }
    let scopes: Vec<String> = match form.get("scope") {
        Some(s) if !s.trim().is_empty() => s.split_whitespace().map(str::to_string).collect(),
        // gcloud's user credentials carry these; sqlservice.login lets IAM login work too.
        _ => vec![
            SCOPE_CLOUD_PLATFORM.to_string(),
            SCOPE_SQLSERVICE_LOGIN.to_string(),
            SCOPE_USERINFO_EMAIL.to_string(),
        ],
    };
    issue(state, USER_EMAIL, scopes, true)
}

fn issue(state: &SharedState, principal: &str, scopes: Vec<String>, echo_scope: bool) -> Response {
    let scope = scopes.join(" ");
    let (token, _) = state.tokens.issue(principal, scopes);
    let mut body: Value = json!({
        "access_token": token,
        "expires_in": state.tokens.expires_in(),
        "token_type": "Bearer",
    });
    if echo_scope {
        body["scope"] = json!(scope);
    }
    with_no_store((StatusCode::OK, Json(body)).into_response())
}
