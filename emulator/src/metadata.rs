//! A GCE metadata server (its own listener): enough for google-auth, the Go libraries and
//! the connector to get the service account's email and tokens.

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::calls::Grant;
use crate::credentials::{PROJECT_ID, SERVICE_ACCOUNT_EMAIL};
use crate::state::SharedState;
use crate::tokens::SCOPE_CLOUD_PLATFORM;

const FLAVOR: &str = "Metadata-Flavor";

/// The metadata server's routes.
pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/computeMetadata/v1/", get(root))
        .route("/computeMetadata/v1/project/project-id", get(project_id))
        .route(
            "/computeMetadata/v1/universe/universe-domain",
            get(universe),
        )
        .route(
            "/computeMetadata/v1/instance/service-accounts/",
            get(account_list),
        )
        .route(
            "/computeMetadata/v1/instance/service-accounts/{account}/",
            get(account_info),
        )
        .route(
            "/computeMetadata/v1/instance/service-accounts/{account}/email",
            get(email),
        )
        .route(
            "/computeMetadata/v1/instance/service-accounts/{account}/scopes",
            get(scopes),
        )
        .route(
            "/computeMetadata/v1/instance/service-accounts/{account}/token",
            get(token),
        )
        .fallback(not_found)
        .layer(middleware::from_fn(flavor))
        .with_state(state)
}

/// Requires `Metadata-Flavor: Google` and stamps it on every response, like GCE does.
async fn flavor(req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(FLAVOR)
        .is_some_and(|v| v.as_bytes() == b"Google");
    let mut resp = if ok {
        next.run(req).await
    } else {
        (
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header.\n",
        )
            .into_response()
    };
    resp.headers_mut()
        .insert(FLAVOR, HeaderValue::from_static("Google"));
    resp
}

fn text(body: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, "application/text")],
        body.to_string(),
    )
        .into_response()
}

async fn root() -> Response {
    text("computeMetadata/\n")
}

async fn project_id() -> Response {
    text(PROJECT_ID)
}

async fn universe() -> Response {
    text("googleapis.com")
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not Found\n").into_response()
}

fn known_account(account: &str) -> bool {
    account == "default" || account == SERVICE_ACCOUNT_EMAIL
}

async fn account_list() -> Response {
    text("default/\nconnector-sa@emulator-project.iam.gserviceaccount.com/\n")
}

async fn account_info(Path(account): Path<String>) -> Response {
    if !known_account(&account) {
        return not_found().await;
    }
    // What google-auth reads with `?recursive=true` before asking for a token.
    Json(json!({
        "aliases": ["default"],
        "email": SERVICE_ACCOUNT_EMAIL,
        "scopes": [SCOPE_CLOUD_PLATFORM],
    }))
    .into_response()
}

async fn email(Path(account): Path<String>) -> Response {
    if !known_account(&account) {
        return not_found().await;
    }
    text(SERVICE_ACCOUNT_EMAIL)
}

async fn scopes(Path(account): Path<String>) -> Response {
    if !known_account(&account) {
        return not_found().await;
    }
    text("https://www.googleapis.com/auth/cloud-platform\n")
}

/// Query of the token request: `scopes=a,b`.
#[derive(Debug, Deserialize)]
struct TokenQuery {
    scopes: Option<String>,
}

async fn token(
    State(state): State<SharedState>,
    Path(account): Path<String>,
    Query(q): Query<TokenQuery>,
) -> Response {
    state.calls.record_token(Grant::Metadata);
    if !known_account(&account) {
        return not_found().await;
    }
    let scopes: Vec<String> = match q.scopes.as_deref() {
        Some(s) if !s.trim().is_empty() => s
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => vec![SCOPE_CLOUD_PLATFORM.to_string()],
    };
    let (token, _) = state.tokens.issue(SERVICE_ACCOUNT_EMAIL, scopes);
    Json(json!({
        "access_token": token,
        "expires_in": state.tokens.expires_in(),
        "token_type": "Bearer",
    }))
    .into_response()
}
