//! What the Cloud SQL and AlloyDB Admin APIs share: the segments of a call's path, its
//! bearer token, the prelude every call goes through (counting, injected latency and
//! failures), and the answer, broken as a test asked if it did. Each service serves its own paths
//! (`cloudsql::admin`, `alloydb::admin`); `app` hands each path to its service.

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use percent_encoding::percent_decode_str;
use serde_json::Value;

use crate::calls::AdminMethod;
use crate::errors::GoogleError;
use crate::state::AppState;
use crate::tamper::Tamper;

/// The token of an `Authorization: Bearer …` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The non-empty `/`-separated segments of `path`, percent-decoded; `None` if one is not
/// UTF-8. Empty segments come from a trailing `/` on a client's configured endpoint.
pub(crate) fn path_segments(path: &str) -> Option<Vec<String>> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8().map(|c| c.into_owned()))
        .collect::<Result<_, _>>()
        .ok()
}

/// What every Admin API call (Cloud SQL or AlloyDB) goes through first: it is counted
/// under `key`, held for any injected latency, and failed if a fault is queued for it.
pub(crate) async fn prelude(
    state: &AppState,
    method: AdminMethod,
    key: &str,
) -> Option<GoogleError> {
    state.calls.record_admin(method, key);
    let delay = state.faults.latency(method);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    state.faults.take(method)
}

/// The response to a call of `method` that came to `result`: the body as JSON, broken
/// the way `tamper` says if a test asked for that; an error as Google words it.
pub(crate) fn respond(
    method: AdminMethod,
    result: Result<Value, GoogleError>,
    tamper: Option<Tamper>,
) -> Response {
    match (result, tamper) {
        (Ok(v), Some(t)) => t.response(method, v),
        (Ok(v), None) => Json(v).into_response(),
        (Err(e), _) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
