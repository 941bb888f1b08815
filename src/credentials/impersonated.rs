//! Service-account impersonation: the IAM Credentials API's
//! `generateAccessToken` makes a token of a target service account from a
//! token of the caller's, along a delegate chain. It sits on top of other
//! credentials: an `impersonated_service_account` file (what `gcloud auth
//! application-default login --impersonate-service-account` writes), the
//! config's impersonation (as the Auth Proxy's `--impersonate-service-account`),
//! or an external account's `service_account_impersonation_url`. No I/O here.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::token::{from_json_object, Scope, Token};
use crate::error::Error;
use crate::http::{redact_url, Request, Response};
use crate::redact;
use crate::secret::Secret;

/// How long an impersonated token lasts unless a file says otherwise: an hour,
/// the longest IAM Credentials grants without an organisation policy.
pub(crate) const DEFAULT_LIFETIME_SECS: u64 = 3600;
/// The lifetimes IAM Credentials accepts (without the organisation policy
/// that allows up to 12 hours).
const LIFETIME_SECS: std::ops::RangeInclusive<u64> = 1..=43_200;

/// Whom to impersonate, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Impersonation {
    /// The `generateAccessToken` URL of the target.
    pub url: String,
    /// The target service account's email.
    pub target: String,
    /// The chain between the caller and the target, as IAM names them
    /// (`projects/-/serviceAccounts/EMAIL`).
    pub delegates: Vec<String>,
    pub lifetime_secs: u64,
}

impl Impersonation {
    /// Impersonation of `target` through `delegates` (emails or resource
    /// names) at the IAM Credentials API `iam_endpoint`.
    pub(crate) fn of(
        iam_endpoint: &str,
        target: &str,
        delegates: &[String],
    ) -> Result<Self, Error> {
        let target = target.trim();
        if !is_email(target) {
            return Err(Error::invalid_config(format!(
                "impersonation target {target:?} is not a service account's email \
                 (NAME@PROJECT.iam.gserviceaccount.com)"
            )));
        }
        let delegates = delegates
            .iter()
            .map(|d| resource_name(d.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            url: format!(
                "{}/v1/projects/-/serviceAccounts/{target}:generateAccessToken",
                iam_endpoint.trim_end_matches('/')
            ),
            target: target.to_string(),
            delegates,
            lifetime_secs: DEFAULT_LIFETIME_SECS,
        })
    }

    /// Impersonation through a `generateAccessToken` URL as a credentials
    /// file gives it; `origin` and `field` name it in errors.
    pub(crate) fn from_url(
        url: &str,
        delegates: Vec<String>,
        lifetime_secs: Option<u64>,
        origin: &str,
        field: &str,
    ) -> Result<Self, Error> {
        let target = url
            .rsplit_once("/serviceAccounts/")
            .and_then(|(_, rest)| rest.strip_suffix(":generateAccessToken"))
            .filter(|t| is_email(t))
            .ok_or_else(|| {
                Error::credentials(format!(
                    "{origin}: \"{field}\" is not an IAM Credentials generateAccessToken URL \
                     (…/serviceAccounts/EMAIL:generateAccessToken)"
                ))
            })?;
        super::file::check_secure_url(url, origin, field)?;
        let lifetime_secs = lifetime_secs.unwrap_or(DEFAULT_LIFETIME_SECS);
        if !LIFETIME_SECS.contains(&lifetime_secs) {
            return Err(Error::credentials(format!(
                "{origin}: the impersonated token's lifetime {lifetime_secs} s is out of \
                 IAM's range ({} to {} s)",
                LIFETIME_SECS.start(),
                LIFETIME_SECS.end()
            )));
        }
        let delegates = delegates
            .iter()
            .map(|d| resource_name(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::credentials(format!("{origin}: {}", e.message())))?;
        Ok(Self {
            url: url.to_string(),
            target: target.to_string(),
            delegates,
            lifetime_secs,
        })
    }

    /// The `generateAccessToken` request for a token of `scope`, made with
    /// the caller's token `caller`.
    pub(crate) fn request(&self, caller: &Secret, scope: Scope) -> Request {
        #[derive(Serialize)]
        struct Body<'a> {
            delegates: &'a [String],
            scope: [&'a str; 1],
            lifetime: String,
        }
        let body = serde_json::to_vec(&Body {
            delegates: &self.delegates,
            scope: [scope.url],
            lifetime: format!("{}s", self.lifetime_secs),
        })
        .unwrap_or_default();
        Request::post(self.url.clone(), "application/json", body)
            .header("authorization", format!("Bearer {}", caller.expose()))
    }

    /// The impersonated token in `generateAccessToken`'s answer `resp`, or a
    /// `credentials` error with IAM's words (never the body, the caller's
    /// token, `secrets`, or anything token-shaped).
    pub(crate) fn token(&self, resp: &Response, secrets: &[&str]) -> Result<Token, Error> {
        let url = redact_url(&self.url);
        if !resp.is_success() {
            #[derive(Deserialize)]
            struct Body {
                error: Detail,
            }
            #[derive(Deserialize)]
            struct Detail {
                status: Option<String>,
                message: Option<String>,
            }
            let detail = serde_json::from_slice::<Body>(&resp.body)
                .map(|b| {
                    format!(
                        "{}: {}",
                        redact::server_text(&b.error.status.unwrap_or_default(), secrets),
                        redact::server_text(&b.error.message.unwrap_or_default(), secrets)
                    )
                })
                .unwrap_or_else(|_| "no Google error in the body".into());
            return Err(Error::credentials(format!(
                "IAM Credentials ({url}) refused to impersonate {} with HTTP {}: {detail}",
                self.target, resp.status
            )));
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Answer {
            access_token: String,
            expire_time: String,
        }
        let a: Answer = from_json_object(&resp.body).map_err(|e| {
            Error::credentials(format!(
                "IAM Credentials ({url}) answered without a usable accessToken and \
                 expireTime: {e}"
            ))
        })?;
        if a.access_token.is_empty() {
            return Err(Error::credentials(format!(
                "IAM Credentials ({url}) answered an empty accessToken"
            )));
        }
        let expiry = parse_rfc3339(&a.expire_time).ok_or_else(|| {
            Error::credentials(format!(
                "IAM Credentials ({url}) answered an expireTime that is not an RFC 3339 time"
            ))
        })?;
        Ok(Token {
            secret: Secret::new(a.access_token),
            expiry: Some(expiry),
        })
    }
}

/// `projects/-/serviceAccounts/EMAIL` for an email or that resource name.
fn resource_name(delegate: &str) -> Result<String, Error> {
    let email = delegate
        .strip_prefix("projects/-/serviceAccounts/")
        .unwrap_or(delegate);
    if !is_email(email) {
        return Err(Error::invalid_config(format!(
            "delegate {delegate:?} is neither a service account's email nor \
             projects/-/serviceAccounts/EMAIL"
        )));
    }
    Ok(format!("projects/-/serviceAccounts/{email}"))
}

/// An email as IAM names service accounts: one `@`, no characters that would
/// change a URL path.
fn is_email(s: &str) -> bool {
    let Some((user, domain)) = s.split_once('@') else {
        return false;
    };
    !user.is_empty()
        && domain.contains('.')
        && s.len() <= 254
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '-' | '_' | '+'))
}

/// An RFC 3339 time, as Google's APIs write them.
pub(crate) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    let secs = u64::try_from(t.unix_timestamp()).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, t.nanosecond()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::token::Role;
    use crate::error::ErrorKind;

    const LOGIN: Scope = Scope {
        url: "https://www.googleapis.com/auth/sqlservice.login",
        role: Role::Login {
            api_token_will_do: false,
        },
    };
    const SA: &str = "target-sa@p.iam.gserviceaccount.com";

    fn resp(status: u16, body: &str) -> Response {
        Response {
            status,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_config_names_a_target_and_delegates_by_email_or_resource() {
        let i = Impersonation::of(
            "https://iamcredentials.googleapis.com/",
            SA,
            &[
                "d1@p.iam.gserviceaccount.com".into(),
                "projects/-/serviceAccounts/d2@p.iam.gserviceaccount.com".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            i.url,
            format!("https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{SA}:generateAccessToken")
        );
        assert_eq!(
            i.delegates,
            [
                "projects/-/serviceAccounts/d1@p.iam.gserviceaccount.com",
                "projects/-/serviceAccounts/d2@p.iam.gserviceaccount.com"
            ]
        );
        for bad in ["", "no-at-sign", "a@b/../x.com", "a@b?x=.com"] {
            let e = Impersonation::of("https://i", bad, &[]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{bad}");
        }
        let e = Impersonation::of("https://i", SA, &["not an email".into()]).unwrap_err();
        assert!(e.message().contains("delegate \"not an email\""), "{e}");
    }

    #[test]
    fn a_file_url_names_the_target() {
        let url =
            format!("https://iam.example/v1/projects/-/serviceAccounts/{SA}:generateAccessToken");
        let i = Impersonation::from_url(&url, vec![], None, "the file", "url").unwrap();
        assert_eq!((i.target.as_str(), i.lifetime_secs), (SA, 3600));
        for bad in [
            "https://iam.example/v1/x",
            "https://iam.example/serviceAccounts/nobody:generateAccessToken",
        ] {
            let e = Impersonation::from_url(bad, vec![], None, "the file", "url").unwrap_err();
            assert!(
                e.message().contains("\"url\" is not an IAM Credentials"),
                "{e}"
            );
        }
        let e = Impersonation::from_url(&url, vec![], Some(0), "the file", "url").unwrap_err();
        assert!(e.message().contains("lifetime 0 s"), "{e}");
        let e =
            Impersonation::from_url(&url, vec!["x".into()], None, "the file", "url").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Credentials);
    }

    #[test]
    fn the_request_carries_the_chain_the_scope_and_the_lifetime() {
        let i =
            Impersonation::of("https://i", SA, &["d@p.iam.gserviceaccount.com".into()]).unwrap();
        let req = i.request(&Secret::new("caller-token".into()), LOGIN);
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "delegates": ["projects/-/serviceAccounts/d@p.iam.gserviceaccount.com"],
                "scope": [LOGIN.url],
                "lifetime": "3600s",
            })
        );
        assert!(req
            .headers
            .contains(&("authorization".into(), "Bearer caller-token".to_string())));
    }

    #[test]
    fn answers_become_tokens_or_errors_with_iams_words() {
        let i = Impersonation::of("https://i", SA, &[]).unwrap();
        let t = i
            .token(
                &resp(
                    200,
                    r#"{"accessToken":"ya29.imp","expireTime":"2099-01-02T03:04:05Z"}"#,
                ),
                &[],
            )
            .unwrap();
        assert_eq!(t.secret.expose(), "ya29.imp");
        assert_eq!(t.expiry, parse_rfc3339("2099-01-02T03:04:05Z"));
        let e = i
            .token(&resp(
                403,
                r#"{"error":{"code":403,"message":"Permission 'iam.serviceAccounts.getAccessToken' denied","status":"PERMISSION_DENIED"}}"#,
            ), &[])
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Credentials);
        assert!(e.message().contains("refused to impersonate target-sa@p.iam.gserviceaccount.com with HTTP 403: PERMISSION_DENIED: Permission"), "{e}");
        for (body, want) in [
            ("<html>ya29.secret</html>", "no Google error"),
            ("", "no Google error"),
        ] {
            let e = i.token(&resp(500, body), &[]).unwrap_err();
            assert!(e.message().contains(want), "{e}");
            assert!(!e.message().contains("ya29"), "{e}");
        }
        for body in [
            r#"{"accessToken":"ya29.x"}"#,
            r#"{"expireTime":"2099-01-02T03:04:05Z"}"#,
            r#"{"accessToken":"","expireTime":"2099-01-02T03:04:05Z"}"#,
            r#"{"accessToken":"ya29.x","expireTime":"tomorrow"}"#,
            r#""ya29.x""#,
            "[]",
        ] {
            let e = i.token(&resp(200, body), &[]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Credentials, "{body}");
            assert!(!e.message().contains("ya29"), "{e}");
        }
    }
}
