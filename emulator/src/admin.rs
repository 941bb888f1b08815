//! What the Google APIs the emulator serves share (the Cloud SQL and AlloyDB Admin APIs,
//! STS, IAM Credentials): the segments of a call's path, its bearer token, proto3 JSON
//! durations, the prelude every call goes through (counting, injected latency and
//! failures), and the answer, broken as a test asked if it did. Each service serves its
//! own paths (`cloudsql::admin`, `alloydb::admin`, `sts`, `iamcredentials`); `app` and the
//! admin server's router hand each path to its service.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use percent_encoding::percent_decode_str;
use serde_json::Value;

use crate::calls::ApiMethod;
use crate::credentials::SERVICE_ACCOUNT_EMAIL;
use crate::errors::GoogleError;
use crate::jwt;
use crate::state::AppState;
use crate::tamper::Tamper;
use crate::tokens::TokenInfo;

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

/// Who a bearer `token` sent to `method`'s API stands for, if the API takes it: an access
/// token the emulator issued and that has not expired, or, as Google's APIs also take, a
/// self-signed JWT of the service account's key ([`jwt::self_signed_access`]).
pub(crate) fn caller(state: &AppState, token: &str, method: ApiMethod) -> Option<TokenInfo> {
    if let Some(info) = state.tokens.lookup_valid(token) {
        return Some(info);
    }
    let now = SystemTime::now();
    let unix = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let creds = &state.credentials;
    let jwt = jwt::self_signed_access(
        token,
        &creds.public_key,
        &creds.private_key_id,
        SERVICE_ACCOUNT_EMAIL,
        method.service(),
        unix,
    )?;
    Some(TokenInfo {
        principal: SERVICE_ACCOUNT_EMAIL.to_string(),
        scopes: jwt.scopes,
        expiry: UNIX_EPOCH + Duration::from_secs(u64::try_from(jwt.exp).ok()?),
    })
}

/// What every API call goes through first: it is counted under `key`, held for any
/// injected latency, and failed if a fault is queued for it (in the error shape of the
/// method's API).
pub(crate) async fn prelude(state: &AppState, method: ApiMethod, key: &str) -> Option<GoogleError> {
    state.calls.record_call(method, key);
    let delay = state.faults.latency(method);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    state.faults.take(method)
}

/// Parses a proto3 JSON `google.protobuf.Duration`: decimal seconds with at most nine
/// fractional digits and an `s` suffix (`"3600s"`, `"1.5s"`). Negative durations are
/// refused: nothing the emulator is asked for can end before it starts.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    /// The proto's own limit, about 10 000 years.
    const MAX_SECONDS: u64 = 315_576_000_000;
    let body = s
        .strip_suffix('s')
        .ok_or("a Duration is seconds with an \"s\" suffix, e.g. \"3600s\"")?;
    if body.starts_with('-') {
        return Err("must not be negative".into());
    }
    let (whole, frac) = match body.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (body, None),
    };
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || frac.is_some_and(|f| !digits(f) || f.len() > 9) {
        return Err("not a decimal number of seconds with at most 9 fractional digits".into());
    }
    let secs: u64 = whole
        .parse()
        .ok()
        .filter(|n| *n <= MAX_SECONDS)
        .ok_or("out of range")?;
    let nanos = match frac {
        Some(f) => format!("{f:0<9}")
            .parse::<u32>()
            .map_err(|e| e.to_string())?,
        None => 0,
    };
    Ok(Duration::new(secs, nanos))
}

/// The response to a call of `method` that came to `result`: the body as JSON, broken
/// the way `tamper` says if a test asked for that; an error as Google words it.
pub(crate) fn respond(
    method: ApiMethod,
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

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("3600s"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.000000001s"), Ok(Duration::from_nanos(1)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in [
            "3600",
            "-1s",
            "1.s",
            ".5s",
            "1.0000000001s",
            "abc",
            "s",
            "1e3s",
            " 1s",
            "315576000001s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
