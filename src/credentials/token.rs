//! Access tokens: what a scope asks for, what a token endpoint (or the
//! metadata server) answers, and how long a token is reused.

use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::Error;
use crate::http::{redact_url, Response};
use crate::redact;
use crate::secret::Secret;

/// A token is reused until this long before it expires (Google's libraries
/// refresh 3 min 45 s ahead; the connector's certificate buffer is 4 min).
pub(crate) const TOKEN_EXPIRY_BUFFER: Duration = Duration::from_secs(4 * 60);

/// How long a token whose answer gives no `expires_in` is taken to last: it is
/// reused for the minute before the expiry buffer, then fetched again.
pub(crate) const UNSTATED_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// An OAuth2 scope a service asks for (each service folder names its own),
/// and what the token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Scope {
    /// The scope's URL.
    pub url: &'static str,
    /// What the token is for.
    pub role: Role,
}

/// What a token of a [`Scope`] is for: which of a caller's own tokens
/// stands for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    /// Admin API calls: the caller's API token.
    Api,
    /// Logging in to the database: the caller's login token, or, where the
    /// service accepts it (`api_token_will_do`), the API token, as Go's
    /// `WithTokenSource` does.
    Login { api_token_will_do: bool },
}

/// What IAM Credentials and STS ask of the token that calls them (and what a
/// token exchanged there for another is asked with).
pub(crate) const CLOUD_PLATFORM: Scope = Scope {
    url: "https://www.googleapis.com/auth/cloud-platform",
    role: Role::Api,
};

impl Scope {
    /// The scope's last path segment, e.g. `sqlservice.login`, for messages.
    pub(crate) fn short_name(self) -> &'static str {
        self.url.rsplit('/').next().unwrap_or(self.url)
    }
}

/// An access token and, when known, its expiry.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub secret: Secret,
    pub expiry: Option<SystemTime>,
}

impl Token {
    /// Whether it may still be handed out at `now`.
    pub(crate) fn fresh_at(&self, now: SystemTime) -> bool {
        self.expiry.is_none_or(|e| now + TOKEN_EXPIRY_BUFFER < e)
    }
}

/// Decodes a JSON object. serde_json's message quotes a string it did not
/// expect whole, and a double-encoded credentials file is one such string
/// holding the private key: a value that is not an object is named, not shown.
pub(crate) fn from_json_object<T: DeserializeOwned>(json: &[u8]) -> Result<T, String> {
    let kind = match serde_json::from_slice(json).map_err(|e| e.to_string())? {
        serde_json::Value::Object(o) => {
            return serde_json::from_value(serde_json::Value::Object(o)).map_err(|e| e.to_string())
        }
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Null => "null",
    };
    Err(format!("it is {kind}, not an object"))
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: Option<String>,
    error_description: Option<String>,
}

/// Parses a token endpoint's (or the metadata server's) answer. On error the
/// message carries OAuth's `error` and `error_description`, never the body.
pub(crate) fn parse_token_response(
    resp: &Response,
    url: &str,
    kind: &str,
    secrets: &[&str],
) -> Result<Token, Error> {
    let url = redact_url(url);
    if !resp.is_success() {
        let detail = serde_json::from_slice::<OAuthError>(&resp.body)
            .ok()
            .map(|e| {
                redact::server_text(
                    &format!(
                        "{}: {}",
                        e.error.unwrap_or_default(),
                        e.error_description.unwrap_or_default()
                    ),
                    secrets,
                )
            })
            .unwrap_or_else(|| "no OAuth error in the body".into());
        return Err(Error::credentials(format!(
            "{url} refused the {kind} credentials with HTTP {}: {detail}",
            resp.status
        )));
    }
    let t: TokenResponse = from_json_object(&resp.body).map_err(|e| {
        Error::credentials(format!("{url} answered without a usable access_token: {e}"))
    })?;
    if t.access_token.is_empty() {
        return Err(Error::credentials(format!(
            "{url} answered an empty access_token"
        )));
    }
    let expiry = match t.expires_in {
        // Google always says; an answer that does not is reused only briefly.
        None => Some(SystemTime::now() + UNSTATED_LIFETIME),
        // Adding it unchecked panics past the clock's range.
        Some(s) => Some(
            SystemTime::now()
                .checked_add(Duration::from_secs(s))
                .ok_or_else(|| {
                    Error::credentials(format!(
                        "{url} answered an expires_in of {s} seconds, past any date"
                    ))
                })?,
        ),
    };
    Ok(Token {
        secret: Secret::new(t.access_token),
        expiry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn resp(status: u16, body: &str) -> Response {
        Response {
            status,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn token_response_is_parsed_with_its_expiry() {
        let t = parse_token_response(
            &resp(
                200,
                r#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#,
            ),
            "http://t/token",
            "k",
            &[],
        )
        .unwrap();
        assert_eq!(t.secret.expose(), "ya29.x");
        let left = t.expiry.unwrap().duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3599));

        // No expires_in: a bounded lifetime, not forever.
        let t = parse_token_response(
            &resp(200, r#"{"access_token":"ya29.y"}"#),
            "http://t",
            "k",
            &[],
        )
        .unwrap();
        let left = t.expiry.unwrap().duration_since(SystemTime::now()).unwrap();
        assert!(left <= UNSTATED_LIFETIME, "{left:?}");
        assert!(t.fresh_at(SystemTime::now()));
        assert!(!t.fresh_at(SystemTime::now() + UNSTATED_LIFETIME));
    }

    #[test]
    fn oauth_errors_are_reported_without_the_body() {
        let e = parse_token_response(
            &resp(400, r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature.","secret":"ya29.leak"}"#),
            "http://t/token?x=1",
            "service-account",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Credentials);
        let e = e.to_string();
        assert!(e.contains("invalid_grant: Invalid JWT Signature."), "{e}");
        assert!(e.contains("HTTP 400"), "{e}");
        assert!(!e.contains("ya29.leak") && !e.contains("x=1"), "{e}");
    }

    /// Found by fuzzing (fuzz/corpus/token_response/found-bare-string):
    /// serde_json quoted a bare JSON string whole.
    #[test]
    fn a_bare_json_string_is_refused_without_being_shown() {
        let e = parse_token_response(
            &resp(200, r#""ya29.bare-token""#),
            "http://t/token",
            "k",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("it is a string, not an object"), "{e}");
        assert!(!e.contains("ya29.bare-token"), "{e}");

        for (body, want) in [("[1]", "an array"), ("7", "a number"), ("null", "null")] {
            let e = parse_token_response(&resp(200, body), "http://t/token", "k", &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
        let e = parse_token_response(
            &resp(200, "{\"access_token\": 5"),
            "http://t/token",
            "k",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("EOF while parsing"), "{e}");
    }

    /// Found writing the fuzz target (fuzz/corpus/token_response/
    /// found-expires-in-overflow): `now + expires_in` panicked.
    #[test]
    fn an_expiry_past_the_clocks_range_is_an_error() {
        let body = r#"{"access_token":"ya29.x","expires_in":18446744073709551615}"#;
        let e = parse_token_response(&resp(200, body), "http://t/token", "k", &[]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Credentials);
        let e = e.to_string();
        assert!(e.contains("expires_in of 18446744073709551615"), "{e}");
        assert!(!e.contains("ya29.x"), "{e}");
    }

    #[test]
    fn freshness_respects_the_buffer() {
        let now = SystemTime::now();
        let t = |secs| Token {
            secret: Secret::new("t".into()),
            expiry: Some(now + Duration::from_secs(secs)),
        };
        assert!(t(600).fresh_at(now));
        assert!(!t(200).fresh_at(now));
        assert!(Token {
            secret: Secret::new("t".into()),
            expiry: None
        }
        .fresh_at(now));
    }

    #[test]
    fn a_scope_is_named_by_its_last_segment() {
        let s = Scope {
            url: "https://www.googleapis.com/auth/sqlservice.login",
            role: Role::Login {
                api_token_will_do: false,
            },
        };
        assert_eq!(s.short_name(), "sqlservice.login");
    }
}
