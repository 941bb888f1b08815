//! What every Google API call shares: the base URL, the headers (token, user
//! agent, quota project), and the reading of Google's error answers.

use serde::Deserialize;

use std::time::Instant;

use crate::error::{ApiError, Error};
use crate::http::{Pending, Request, Response, Transport};
use crate::{redact, retry};

/// A Google API at `base` (no trailing slash), called with these headers.
#[derive(Debug, Clone)]
pub(crate) struct ApiClient {
    base: String,
    user_agent: String,
    quota_project: Option<String>,
}

impl ApiClient {
    pub(crate) fn new(base: &str, user_agent: String, quota_project: Option<String>) -> Self {
        Self {
            // Google's clients build `{endpoint}/{version}/...`.
            base: base.trim_end_matches('/').to_string(),
            user_agent,
            quota_project,
        }
    }

    /// `{base}/{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// `req` with the token, the user agent and the quota project.
    pub(crate) fn authorize(&self, mut req: Request, api_token: &str) -> Request {
        req = req
            .header("authorization", format!("Bearer {api_token}"))
            .header("user-agent", self.user_agent.clone())
            .header("x-goog-api-client", self.user_agent.clone());
        if let Some(p) = &self.quota_project {
            req = req.header("x-goog-user-project", p.clone());
        }
        req
    }

    /// A JSON POST of `body` to `path`.
    pub(crate) fn post_json(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        api_token: &str,
    ) -> Result<Request, Error> {
        let body = serde_json::to_vec(body)
            .map_err(|e| Error::invalid_config(format!("cannot encode the request: {e}")))?;
        Ok(self.authorize(
            Request::post(self.url(path), "application/json", body),
            api_token,
        ))
    }

    /// A GET of `path`.
    pub(crate) fn get(&self, path: &str, api_token: &str) -> Request {
        self.authorize(Request::get(self.url(path)), api_token)
    }
}

/// Google's JSON error body.
#[derive(Deserialize)]
struct GoogleErrorBody {
    error: GoogleError,
}

#[derive(Deserialize)]
struct GoogleError {
    message: Option<String>,
    status: Option<String>,
}

/// Waits for the call `req` already in flight (retrying 5xx answers on
/// `transport`, see `retry`) and returns its successful response; an error
/// status becomes an Admin API error for `call`.
pub(crate) fn finish(
    pending: Box<dyn Pending>,
    req: &Request,
    transport: &dyn Transport,
    deadline: Instant,
    call: impl FnOnce() -> String,
) -> Result<Response, Error> {
    let secrets = redact::request_secrets(req);
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    retry::finish_with_retry(pending, req, transport, deadline)
        .and_then(|r| check_status(call(), r, &secrets))
}

/// Passes a success through; turns an error status into an
/// [`ErrorKind::AdminApi`](crate::ErrorKind::AdminApi) error with Google's
/// `error.message` and `error.status`, or
/// [`ErrorKind::QuotaExceeded`](crate::ErrorKind::QuotaExceeded) when Google
/// says the quota is spent. `token`, the one the call was made with, is
/// blanked out of the message.
pub(crate) fn check_status(
    call: String,
    resp: Response,
    secrets: &[&str],
) -> Result<Response, Error> {
    if resp.is_success() {
        return Ok(resp);
    }
    let (code, message) = match serde_json::from_slice::<GoogleErrorBody>(&resp.body) {
        Ok(b) => (
            redact::server_text(&b.error.status.unwrap_or_default(), secrets),
            redact::server_text(&b.error.message.unwrap_or_default(), secrets),
        ),
        Err(_) => (
            String::new(),
            redact::server_text(&String::from_utf8_lossy(&resp.body), secrets),
        ),
    };
    // Google answers a spent quota with 429 RESOURCE_EXHAUSTED.
    Err(Error::api(ApiError {
        call,
        status: resp.status,
        code,
        message,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    /// The kind of `e` and Google's answer in it.
    fn refusal(r: Result<Response, Error>) -> (ErrorKind, ApiError) {
        let e = r.unwrap_err();
        let api = e
            .api_error()
            .expect("an Admin API error carries Google's answer");
        (e.kind(), api.clone())
    }

    #[test]
    fn sends_googles_headers() {
        let api = ApiClient::new("http://127.0.0.1:9/", "ua/1".into(), Some("quota-p".into()));
        let r = api.get("v1/x", "tok");
        assert_eq!(r.url, "http://127.0.0.1:9/v1/x");
        assert!(r
            .headers
            .contains(&("authorization".into(), "Bearer tok".into())));
        assert!(r
            .headers
            .contains(&("x-goog-user-project".into(), "quota-p".into())));
        assert!(r.headers.contains(&("user-agent".into(), "ua/1".into())));
    }

    #[test]
    fn passes_googles_error_message_through() {
        let resp = Response {
            status: 404,
            body: br#"{"error":{"code":404,"message":"The Cloud SQL instance does not exist.","errors":[{"reason":"instanceDoesNotExist"}],"status":"NOT_FOUND"}}"#.to_vec(),
        };
        let (kind, e) = refusal(check_status("connectSettings for p:r:i".into(), resp, &[]));
        assert_eq!(kind, ErrorKind::AdminApi);
        assert_eq!(e.status, 404);
        assert_eq!(e.code, "NOT_FOUND");
        assert_eq!(e.message, "The Cloud SQL instance does not exist.");
        let resp = Response {
            status: 502,
            body: b"Bad Gateway\n".to_vec(),
        };
        let (kind, e) = refusal(check_status("c".into(), resp, &[]));
        assert_eq!(kind, ErrorKind::AdminApi);
        assert_eq!(e.message, "Bad Gateway");
        let ok = Response {
            status: 200,
            body: vec![],
        };
        assert!(check_status("c".into(), ok, &[]).is_ok());
    }

    #[test]
    fn a_spent_quota_is_its_own_error_saying_what_to_do() {
        let resp = Response {
            status: 429,
            body: br#"{"error":{"code":429,"message":"Quota exceeded for quota metric 'Queries'.","status":"RESOURCE_EXHAUSTED"}}"#.to_vec(),
        };
        let e = check_status("connectSettings for p:r:i".into(), resp, &[]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::QuotaExceeded);
        let api = e.api_error().unwrap();
        assert_eq!((api.status, api.code.as_str()), (429, "RESOURCE_EXHAUSTED"));
        let text = e.to_string();
        for want in [
            "quota exhausted",
            "connectSettings for p:r:i failed with HTTP 429 RESOURCE_EXHAUSTED",
            "Quota exceeded for quota metric",
            "not retried",
            "Wait a minute",
            "reuse one connector",
        ] {
            assert!(text.contains(want), "{text:?} lacks {want:?}");
        }
        // A 429 without Google's body is still a quota error.
        let bare = Response {
            status: 429,
            body: b"Too Many Requests".to_vec(),
        };
        let (kind, _) = refusal(check_status("c".into(), bare, &[]));
        assert_eq!(kind, ErrorKind::QuotaExceeded);
    }

    #[test]
    fn an_echoed_token_is_blanked_out_of_the_error() {
        let token = "ya29.a0-the-secret-token";
        let req = ApiClient::new("http://127.0.0.1:9", "ua/1".into(), None).get("v1/x", token);
        let secrets = redact::request_secrets(&req);
        assert_eq!(secrets, [token]);
        // A proxy's error page repeating the request, the token astride the
        // message's cut and split by a control character; and Google's JSON,
        // should it ever quote it.
        let split = token.replacen("secret", "sec\u{7}ret", 1);
        let page = format!("{} Authorization: Bearer {split}\r\n", "x".repeat(280));
        let json =
            format!(r#"{{"error":{{"message":"bad token {token}","status":"UNAUTHENTICATED"}}}}"#);
        for body in [page, json] {
            let resp = Response {
                status: 401,
                body: body.into_bytes(),
            };
            let e = check_status("c".into(), resp, &[secrets[0].as_str()]).unwrap_err();
            let text = e.to_string();
            assert!(!text.contains("secret"), "{text}");
            assert!(!text.contains("ya29."), "{text}");
        }
    }
}
