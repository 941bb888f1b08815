//! Credentials files, as `gcloud` and IAM write them: a service-account key
//! (exchanged for tokens through a signed JWT) or an authorized_user refresh
//! token; and the token request each makes. No I/O here.

use std::time::SystemTime;

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::PrivateKey as RsaPrivateKey;
use serde::Deserialize;

use super::jwt;
use super::token::{from_json_object, Scope};
use super::DEFAULT_UNIVERSE_DOMAIN;
use crate::error::Error;
use crate::http::Request;
use crate::secret::Secret;

/// Google's OAuth2 token endpoint.
pub const DEFAULT_TOKEN_ENDPOINT: &str = "https://oauth2.googleapis.com/token";

/// A parsed credentials file.
#[derive(Debug)]
pub(crate) enum CredentialsFile {
    ServiceAccount(ServiceAccount),
    AuthorizedUser(AuthorizedUser),
}

/// A service-account key.
pub(crate) struct ServiceAccount {
    email: String,
    key: Box<RsaPrivateKey>,
    key_id: Option<String>,
    token_uri: String,
    universe_domain: String,
}

/// A user's refresh token (`gcloud auth application-default login`).
pub(crate) struct AuthorizedUser {
    client_id: String,
    client_secret: Secret,
    refresh_token: Secret,
    token_uri: String,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("email", &self.email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AuthorizedUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizedUser")
            .field("client_id", &self.client_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// The fields of a credentials JSON file that the connector reads.
#[derive(Deserialize)]
struct FileFields {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
    universe_domain: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
}

impl CredentialsFile {
    /// Parses the JSON of a credentials file; `origin` names it in errors
    /// (which never show its secrets), `token_endpoint` overrides the file's
    /// `token_uri`, `default_token_endpoint` (the universe's) stands in for
    /// a missing one.
    pub(crate) fn parse(
        json: &str,
        origin: &str,
        token_endpoint: Option<&str>,
        default_token_endpoint: &str,
    ) -> Result<Self, Error> {
        let f: FileFields = from_json_object(json.as_bytes()).map_err(|e| {
            Error::credentials(format!("{origin} is not a credentials JSON object: {e}"))
        })?;
        let need = |v: Option<String>, field: &str| {
            v.filter(|s| !s.is_empty())
                .ok_or_else(|| Error::credentials(format!("{origin} has no \"{field}\" field")))
        };
        let token_uri = |file_uri: Option<String>| -> Result<String, Error> {
            if let Some(uri) = token_endpoint {
                return Ok(uri.to_string());
            }
            match file_uri.filter(|u| !u.is_empty()) {
                Some(uri) => check_secure_url(&uri, origin, "token_uri").map(|()| uri),
                None => Ok(default_token_endpoint.to_string()),
            }
        };
        match f.kind.as_deref() {
            Some("service_account") => {
                let pem = need(f.private_key, "private_key")?;
                let key = RsaPrivateKey::from_pkcs8_pem(&pem)
                    .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
                    .map_err(|_| {
                        Error::credentials(format!(
                            "{origin}: \"private_key\" is not an RSA private key in PEM"
                        ))
                    })?;
                Ok(Self::ServiceAccount(ServiceAccount {
                    email: need(f.client_email, "client_email")?,
                    key: Box::new(key),
                    key_id: f.private_key_id.filter(|s| !s.is_empty()),
                    token_uri: token_uri(f.token_uri)?,
                    universe_domain: f
                        .universe_domain
                        .filter(|u| !u.is_empty())
                        .unwrap_or_else(|| DEFAULT_UNIVERSE_DOMAIN.to_string()),
                }))
            }
            Some("authorized_user") => Ok(Self::AuthorizedUser(AuthorizedUser {
                client_id: need(f.client_id, "client_id")?,
                client_secret: Secret::new(need(f.client_secret, "client_secret")?),
                refresh_token: Secret::new(need(f.refresh_token, "refresh_token")?),
                token_uri: token_uri(f.token_uri)?,
            })),
            Some(other) => Err(Error::credentials(format!(
                "{origin} has type {other:?}; supported: \"service_account\", \"authorized_user\", \
                 \"impersonated_service_account\", \"external_account\" (or pass an access token)"
            ))),
            None => Err(Error::credentials(format!(
                "{origin} has no \"type\" field"
            ))),
        }
    }

    /// The universe the file's credentials belong to: a key's
    /// `universe_domain` (Google's by default); a user's is always Google's.
    pub(crate) fn universe_domain(&self) -> &str {
        match self {
            Self::ServiceAccount(sa) => &sa.universe_domain,
            Self::AuthorizedUser(_) => DEFAULT_UNIVERSE_DOMAIN,
        }
    }

    /// Who the file lets the connector act as: the service account's email,
    /// or the user's OAuth client and a fingerprint of the refresh token.
    pub(crate) fn principal(&self) -> String {
        match self {
            Self::ServiceAccount(sa) => format!("service-account:{}", sa.email),
            Self::AuthorizedUser(au) => format!(
                "user:{}:{}",
                au.client_id,
                fingerprint(au.refresh_token.expose())
            ),
        }
    }

    /// The token endpoint's request for a token of `scope` (signing the JWT
    /// first for a service account), and what kind of credentials asked.
    pub(crate) fn token_request(&self, scope: Scope) -> Result<(Request, &'static str), Error> {
        match self {
            Self::ServiceAccount(sa) => Ok((sa.token_request(scope)?, "service-account")),
            Self::AuthorizedUser(au) => Ok((au.token_request(scope), "authorized_user")),
        }
    }
}

impl ServiceAccount {
    fn token_request(&self, scope: Scope) -> Result<Request, Error> {
        let issued_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let assertion = jwt::sign(
            &self.key,
            &jwt::Assertion {
                issuer: &self.email,
                key_id: self.key_id.as_deref(),
                scope: scope.url,
                audience: &self.token_uri,
                issued_at,
            },
        )?;
        Ok(form_post(
            &self.token_uri,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &assertion),
            ],
        ))
    }
}

impl AuthorizedUser {
    fn token_request(&self, scope: Scope) -> Request {
        form_post(
            &self.token_uri,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", &self.client_id),
                ("client_secret", self.client_secret.expose()),
                ("refresh_token", self.refresh_token.expose()),
                ("scope", scope.url),
            ],
        )
    }
}

/// Checks a URL a credentials file names for a call that carries a secret
/// (a token endpoint, STS, IAM Credentials): https, or plain http only to a
/// loopback address (an emulator on this machine).
pub(crate) fn check_secure_url(url: &str, origin: &str, field: &str) -> Result<(), Error> {
    if url.parse::<http::Uri>().is_err() {
        return Err(Error::credentials(format!(
            "{origin}: \"{field}\" is not a URL"
        )));
    }
    if crate::http::is_https_or_loopback(url) {
        return Ok(());
    }
    Err(Error::credentials(format!(
        "{origin}: \"{field}\" is {}: it must be https (plain http only to a loopback \
         address), since the call carries a credential",
        crate::http::redact_url(url)
    )))
}

/// A short name for a secret that does not show it: 16 hex digits of its
/// SHA-256.
pub(crate) fn fingerprint(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(secret.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn form_post(url: &str, pairs: &[(&str, &str)]) -> Request {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
        .into_bytes();
    Request::post(url.to_string(), "application/x-www-form-urlencoded", body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::token::Role;
    use crate::error::ErrorKind;

    const SCOPE: Scope = Scope {
        url: "https://www.googleapis.com/auth/sqlservice.admin",
        role: Role::Api,
    };

    fn message(r: Result<CredentialsFile, Error>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Credentials);
        e.to_string()
    }

    /// Found by fuzzing (fuzz/corpus/credentials_json/found-bare-string):
    /// serde_json quoted a bare JSON string whole.
    #[test]
    fn a_bare_json_string_is_refused_without_being_shown() {
        let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----\n";
        let double_encoded = serde_json::to_string(
            &serde_json::json!({"type": "service_account", "private_key": key}).to_string(),
        )
        .unwrap();
        let e = message(CredentialsFile::parse(
            &double_encoded,
            "the file",
            None,
            DEFAULT_TOKEN_ENDPOINT,
        ));
        assert!(e.contains("it is a string, not an object"), "{e}");
        assert!(!e.contains("MIIEvQIBADANBg"), "{e}");
    }

    #[test]
    fn credentials_json_kinds_and_errors() {
        let au =
            r#"{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"r"}"#;
        let file = CredentialsFile::parse(au, "x", None, DEFAULT_TOKEN_ENDPOINT).unwrap();
        let (req, kind) = file.token_request(SCOPE).unwrap();
        assert_eq!(
            (req.url.as_str(), kind),
            (DEFAULT_TOKEN_ENDPOINT, "authorized_user")
        );
        let body = String::from_utf8(req.body).unwrap();
        assert!(
            body.contains("grant_type=refresh_token") && body.contains("scope=https"),
            "{body}"
        );

        let file = CredentialsFile::parse(
            au,
            "x",
            Some("http://127.0.0.1:9/token"),
            DEFAULT_TOKEN_ENDPOINT,
        )
        .unwrap();
        let (req, _) = file.token_request(SCOPE).unwrap();
        assert_eq!(req.url, "http://127.0.0.1:9/token");

        // A file's token_uri: https, or http only to this machine.
        for (uri, ok) in [
            ("https://oauth2.googleapis.com/token", true),
            ("http://127.0.0.1:8080/token", true),
            ("http://[::1]:8080/token", true),
            ("http://localhost/token", true),
            ("http://oauth2.googleapis.com/token", false),
            ("http://10.0.0.1/token", false),
            ("ftp://x/token", false),
            ("not a url", false),
        ] {
            let json = format!(
                r#"{{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"r","token_uri":"{uri}"}}"#
            );
            let r = CredentialsFile::parse(&json, "x", None, DEFAULT_TOKEN_ENDPOINT);
            assert_eq!(r.is_ok(), ok, "{uri}");
            if !ok {
                let e = message(r);
                assert!(e.contains("\"token_uri\""), "{e}");
            }
        }

        let missing = r#"{"type":"authorized_user","client_id":"c","client_secret":"s"}"#;
        let e = message(CredentialsFile::parse(
            missing,
            "the file \"a.json\"",
            None,
            DEFAULT_TOKEN_ENDPOINT,
        ));
        assert!(e.contains("refresh_token") && e.contains("a.json"), "{e}");

        let bad_key = r#"{"type":"service_account","client_email":"e","private_key":"-----BEGIN PRIVATE KEY-----\nnotakey\n-----END PRIVATE KEY-----\n"}"#;
        let e = message(CredentialsFile::parse(
            bad_key,
            "x",
            None,
            DEFAULT_TOKEN_ENDPOINT,
        ));
        assert!(e.contains("private_key") && !e.contains("notakey"), "{e}");

        let e = message(CredentialsFile::parse(
            r#"{"type":"gdch_service_account"}"#,
            "x",
            None,
            DEFAULT_TOKEN_ENDPOINT,
        ));
        assert!(
            e.contains("\"gdch_service_account\"") && e.contains("\"external_account\""),
            "{e}"
        );

        let e = message(CredentialsFile::parse(
            "not json {",
            "x",
            None,
            DEFAULT_TOKEN_ENDPOINT,
        ));
        assert!(e.contains("not a credentials JSON"), "{e}");
    }

    #[test]
    fn a_service_account_signs_a_jwt_for_the_scope() {
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        let key = crate::keygen::rsa_2048().unwrap();
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let json = serde_json::json!({
            "type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com",
            "private_key": pem.as_str(), "private_key_id": "kid", "token_uri": "https://t/token"
        })
        .to_string();
        let file = CredentialsFile::parse(&json, "x", None, DEFAULT_TOKEN_ENDPOINT).unwrap();
        let (req, kind) = file.token_request(SCOPE).unwrap();
        assert_eq!(
            (req.url.as_str(), kind),
            ("https://t/token", "service-account")
        );
        let body = String::from_utf8(req.body).unwrap();
        assert!(body.contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"));
        assert!(body.contains("assertion=ey"), "{body}");
        let debug = format!("{file:?}");
        assert!(
            debug.contains("sa@p.iam") && !debug.contains("key"),
            "{debug}"
        );
    }
}
