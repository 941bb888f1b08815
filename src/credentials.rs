//! OAuth2 access tokens: where they come from (Application Default Credentials
//! order) and how long they are reused.
//!
//! Sources, in ADC order: a token handed in by the caller; a credentials JSON
//! handed in, or the file `GOOGLE_APPLICATION_CREDENTIALS` names, or gcloud's
//! ADC file (a service-account key, exchanged through a signed JWT, or an
//! authorized_user refresh token); the metadata server.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::RsaPrivateKey;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::http::{self, redact_url, Request};
use crate::{jwt, Error};

/// Google's OAuth2 token endpoint.
pub const DEFAULT_TOKEN_ENDPOINT: &str = "https://oauth2.googleapis.com/token";
/// The metadata server's host name on Google Cloud.
pub const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";

/// A token is reused until this long before it expires (Google's libraries
/// refresh 3 min 45 s ahead; the connector's certificate buffer is 4 min).
const TOKEN_EXPIRY_BUFFER: Duration = Duration::from_secs(4 * 60);

/// Where the connector gets OAuth2 tokens. `None` in the config means
/// Application Default Credentials.
#[derive(Clone)]
pub enum Credentials {
    /// Tokens obtained by the caller, used as they are. The login token is
    /// needed only for automatic IAM database authentication.
    AccessToken {
        /// A token with the cloud-platform scope (sqlservice.admin suffices
        /// for Cloud SQL).
        api_token: String,
        /// A token with the sqlservice.login (Cloud SQL) or alloydb.login
        /// (AlloyDB) scope. AlloyDB falls back to `api_token`.
        login_token: Option<String>,
    },
    /// The JSON of a service-account key or an authorized_user credentials file.
    Json(String),
    /// The metadata server (Cloud Run, GCE, GKE).
    MetadataServer,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AccessToken { .. } => "Credentials::AccessToken(<redacted>)",
            Self::Json(_) => "Credentials::Json(<redacted>)",
            Self::MetadataServer => "Credentials::MetadataServer",
        })
    }
}

/// A secret string that never shows itself in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(secret: String) -> Self {
        Self(secret)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The scopes the connector asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    /// Cloud SQL Admin API calls.
    Admin,
    /// Cloud SQL automatic or manual IAM database login.
    Login,
    /// AlloyDB Admin API calls (AlloyDB takes only cloud-platform).
    AlloyDbAdmin,
    /// AlloyDB's metadata exchange: the instances.connect check and AUTO_IAM.
    AlloyDbLogin,
}

impl Scope {
    pub(crate) fn url(self) -> &'static str {
        match self {
            Self::Admin => "https://www.googleapis.com/auth/sqlservice.admin",
            Self::Login => "https://www.googleapis.com/auth/sqlservice.login",
            Self::AlloyDbAdmin => "https://www.googleapis.com/auth/cloud-platform",
            Self::AlloyDbLogin => "https://www.googleapis.com/auth/alloydb.login",
        }
    }
}

/// An access token and, when known, its expiry.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub secret: Secret,
    pub expiry: Option<SystemTime>,
}

impl Token {
    fn fresh_at(&self, now: SystemTime) -> bool {
        self.expiry.is_none_or(|e| now + TOKEN_EXPIRY_BUFFER < e)
    }
}

/// Endpoint overrides from the connector's config.
#[derive(Debug, Clone, Default)]
pub(crate) struct Endpoints {
    pub token_endpoint: Option<String>,
    pub metadata_host: Option<String>,
}

/// Resolves the credentials once, then hands out tokens, reusing each until
/// shortly before it expires.
pub(crate) struct TokenSource {
    configured: Option<Credentials>,
    endpoints: Endpoints,
    source: Mutex<Option<Arc<Source>>>,
    cache: Mutex<HashMap<Scope, Token>>,
}

impl TokenSource {
    pub(crate) fn new(configured: Option<Credentials>, endpoints: Endpoints) -> Self {
        Self {
            configured,
            endpoints,
            source: Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// A token of `scope`, from the cache when still fresh.
    pub(crate) fn token(&self, scope: Scope, deadline: Instant) -> Result<Token, Error> {
        self.start(scope, Freshness::Cached, deadline).wait()
    }

    /// Sends the request for a token of `scope` (none when the cache has a
    /// fresh one and `freshness` allows it) without waiting for the answer,
    /// so a refresh can generate its key while the token travels. Errors
    /// come from [`PendingToken::wait`].
    pub(crate) fn start(
        &self,
        scope: Scope,
        freshness: Freshness,
        deadline: Instant,
    ) -> PendingToken<'_> {
        if freshness == Freshness::Cached {
            if let Some(t) = lock(&self.cache).get(&scope) {
                if t.fresh_at(SystemTime::now()) {
                    return PendingToken {
                        tokens: self,
                        scope,
                        fetch: Ok(Fetch::Ready(t.clone())),
                    };
                }
            }
        }
        let fetch = self.source().and_then(|s| s.start(scope, deadline));
        PendingToken {
            tokens: self,
            scope,
            fetch,
        }
    }

    fn source(&self) -> Result<Arc<Source>, Error> {
        let mut slot = lock(&self.source);
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let s = Arc::new(Source::resolve(self.configured.as_ref(), &self.endpoints)?);
        *slot = Some(s.clone());
        Ok(s)
    }
}

/// Whether a cached token will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// A cached token still fresh is reused.
    Cached,
    /// Always fetched anew: the IAM login token embedded in a certificate
    /// caps its lifetime, so a refresh takes a new one (as Google's Python
    /// connector does).
    New,
}

/// A token on its way, from [`TokenSource::start`].
pub(crate) struct PendingToken<'a> {
    tokens: &'a TokenSource,
    scope: Scope,
    fetch: Result<Fetch, Error>,
}

impl PendingToken<'_> {
    /// Waits for the token and caches it.
    pub(crate) fn wait(self) -> Result<Token, Error> {
        let token = self.fetch?.wait()?;
        lock(&self.tokens.cache).insert(self.scope, token.clone());
        Ok(token)
    }
}

/// A token request: answered already, or in flight.
enum Fetch {
    Ready(Token),
    Http {
        pending: http::Pending,
        url: String,
        kind: &'static str,
    },
}

impl Fetch {
    fn http(req: &Request, kind: &'static str, deadline: Instant) -> Result<Self, Error> {
        let pending = http::start(req, deadline).map_err(|e| unreachable_metadata(kind, e))?;
        Ok(Self::Http {
            pending,
            url: req.url.clone(),
            kind,
        })
    }

    fn wait(self) -> Result<Token, Error> {
        match self {
            Self::Ready(token) => Ok(token),
            Self::Http { pending, url, kind } => {
                let resp = pending.wait().map_err(|e| unreachable_metadata(kind, e))?;
                parse_token_response(&resp, &url, kind)
            }
        }
    }
}

const METADATA_SERVER: &str = "metadata server";

/// Outside Google Cloud the metadata server is absent: say what to do instead.
fn unreachable_metadata(kind: &str, e: Error) -> Error {
    match e {
        Error::Http(m) if kind == METADATA_SERVER => Error::Credentials(format!(
            "the metadata server is unreachable ({m}); outside Google Cloud, pass \
             credentials or set GOOGLE_APPLICATION_CREDENTIALS"
        )),
        other => other,
    }
}

/// A poisoned lock only means another caller panicked; the data (a cache) is
/// still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A resolved credential.
#[derive(Debug)]
pub(crate) enum Source {
    Static {
        api: Secret,
        login: Option<Secret>,
    },
    ServiceAccount {
        email: String,
        key: Box<RsaPrivateKey>,
        key_id: Option<String>,
        token_uri: String,
    },
    AuthorizedUser {
        client_id: String,
        client_secret: Secret,
        refresh_token: Secret,
        token_uri: String,
    },
    Metadata {
        host: String,
    },
}

/// The fields of a credentials JSON file that the connector reads.
#[derive(Deserialize)]
struct CredentialsFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
}

impl Source {
    fn resolve(configured: Option<&Credentials>, endpoints: &Endpoints) -> Result<Self, Error> {
        match configured {
            Some(Credentials::AccessToken {
                api_token,
                login_token,
            }) => {
                if api_token.trim().is_empty() {
                    return Err(Error::InvalidConfig(
                        "credentials access-token: the API token is empty".into(),
                    ));
                }
                Ok(Self::Static {
                    api: Secret(api_token.clone()),
                    login: login_token.clone().map(Secret),
                })
            }
            Some(Credentials::Json(json)) => {
                Self::from_json(json, "the credentials JSON", endpoints)
            }
            Some(Credentials::MetadataServer) => Ok(Self::metadata(endpoints)),
            None => Self::application_default(endpoints),
        }
    }

    /// Application Default Credentials: GOOGLE_APPLICATION_CREDENTIALS, then
    /// gcloud's well-known file, then the metadata server.
    fn application_default(endpoints: &Endpoints) -> Result<Self, Error> {
        if let Some(path) = env("GOOGLE_APPLICATION_CREDENTIALS") {
            // Named explicitly, so an unreadable file is an error, not a fallback.
            let json = std::fs::read_to_string(&path).map_err(|e| {
                Error::Credentials(format!(
                    "cannot read GOOGLE_APPLICATION_CREDENTIALS file {path:?}: {e} \
                     (a wasm host must grant its directory, e.g. `wasmtime run --dir`)"
                ))
            })?;
            return Self::from_json(&json, &format!("the file {path:?}"), endpoints);
        }
        let gcloud_dir =
            env("CLOUDSDK_CONFIG").or_else(|| env("HOME").map(|h| format!("{h}/.config/gcloud")));
        if let Some(dir) = gcloud_dir {
            let path = format!("{dir}/application_default_credentials.json");
            if let Ok(json) = std::fs::read_to_string(&path) {
                return Self::from_json(&json, &format!("the file {path:?}"), endpoints);
            }
        }
        Ok(Self::metadata(endpoints))
    }

    fn metadata(endpoints: &Endpoints) -> Self {
        let host = endpoints
            .metadata_host
            .clone()
            .or_else(|| env("GCE_METADATA_HOST"))
            .unwrap_or_else(|| DEFAULT_METADATA_HOST.to_string());
        Self::Metadata { host }
    }

    pub(crate) fn from_json(
        json: &str,
        origin: &str,
        endpoints: &Endpoints,
    ) -> Result<Self, Error> {
        let f: CredentialsFile = from_json_object(json.as_bytes()).map_err(|e| {
            Error::Credentials(format!("{origin} is not a credentials JSON object: {e}"))
        })?;
        let need = |v: Option<String>, field: &str| {
            v.filter(|s| !s.is_empty())
                .ok_or_else(|| Error::Credentials(format!("{origin} has no \"{field}\" field")))
        };
        let token_uri = |file_uri: Option<String>| {
            endpoints
                .token_endpoint
                .clone()
                .or(file_uri)
                .unwrap_or_else(|| DEFAULT_TOKEN_ENDPOINT.to_string())
        };
        match f.kind.as_deref() {
            Some("service_account") => {
                let pem = need(f.private_key, "private_key")?;
                let key = RsaPrivateKey::from_pkcs8_pem(&pem)
                    .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
                    .map_err(|_| {
                        Error::Credentials(format!(
                            "{origin}: \"private_key\" is not an RSA private key in PEM"
                        ))
                    })?;
                Ok(Self::ServiceAccount {
                    email: need(f.client_email, "client_email")?,
                    key: Box::new(key),
                    key_id: f.private_key_id.filter(|s| !s.is_empty()),
                    token_uri: token_uri(f.token_uri),
                })
            }
            Some("authorized_user") => Ok(Self::AuthorizedUser {
                client_id: need(f.client_id, "client_id")?,
                client_secret: Secret(need(f.client_secret, "client_secret")?),
                refresh_token: Secret(need(f.refresh_token, "refresh_token")?),
                token_uri: token_uri(f.token_uri),
            }),
            Some(other) => Err(Error::Credentials(format!(
                "{origin} has type {other:?}; supported: \"service_account\", \"authorized_user\" \
                 (or pass an access token)"
            ))),
            None => Err(Error::Credentials(format!(
                "{origin} has no \"type\" field"
            ))),
        }
    }

    /// A token of `scope`, waited for.
    #[cfg(test)]
    fn fetch(&self, scope: Scope, deadline: Instant) -> Result<Token, Error> {
        self.start(scope, deadline)?.wait()
    }

    /// Sends the request for a token of `scope` (signing the JWT first for
    /// a service account).
    fn start(&self, scope: Scope, deadline: Instant) -> Result<Fetch, Error> {
        match self {
            Self::Static { api, login } => {
                let secret = match scope {
                    Scope::Admin | Scope::AlloyDbAdmin => api.clone(),
                    // As Go's WithTokenSource: one token for both jobs.
                    Scope::AlloyDbLogin => login.clone().unwrap_or_else(|| api.clone()),
                    Scope::Login => login.clone().ok_or_else(|| {
                        Error::InvalidConfig(
                            "IAM database authentication with a caller-supplied token needs a \
                             login token (scope sqlservice.login) in access-tokens.login-token"
                                .into(),
                        )
                    })?,
                };
                Ok(Fetch::Ready(Token {
                    secret,
                    expiry: None,
                }))
            }
            Self::ServiceAccount {
                email,
                key,
                key_id,
                token_uri,
            } => {
                let issued_at = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let assertion = jwt::sign(
                    key,
                    &jwt::Assertion {
                        issuer: email,
                        key_id: key_id.as_deref(),
                        scope: scope.url(),
                        audience: token_uri,
                        issued_at,
                    },
                )?;
                let body = form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", &assertion),
                ]);
                exchange(token_uri, body, "service-account", deadline)
            }
            Self::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
            } => {
                let body = form(&[
                    ("grant_type", "refresh_token"),
                    ("client_id", client_id),
                    ("client_secret", client_secret.expose()),
                    ("refresh_token", refresh_token.expose()),
                    ("scope", scope.url()),
                ]);
                exchange(token_uri, body, "authorized_user", deadline)
            }
            Self::Metadata { host } => {
                let url = format!(
                    "http://{host}/computeMetadata/v1/instance/service-accounts/default/token?scopes={}",
                    scope.url()
                );
                let req = Request::get(url).header("metadata-flavor", "Google");
                Fetch::http(&req, METADATA_SERVER, deadline)
            }
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
        .into_bytes()
}

fn exchange(
    url: &str,
    body: Vec<u8>,
    kind: &'static str,
    deadline: Instant,
) -> Result<Fetch, Error> {
    let req = Request::post(url.to_string(), "application/x-www-form-urlencoded", body);
    Fetch::http(&req, kind, deadline)
}

/// Decodes a JSON object. serde_json's message quotes a string it did not
/// expect whole, and a double-encoded credentials file is one such string
/// holding the private key: a value that is not an object is named, not shown.
fn from_json_object<T: DeserializeOwned>(json: &[u8]) -> Result<T, String> {
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
    resp: &http::Response,
    url: &str,
    kind: &str,
) -> Result<Token, Error> {
    let url = redact_url(url);
    if !resp.is_success() {
        let detail = serde_json::from_slice::<OAuthError>(&resp.body)
            .ok()
            .map(|e| {
                format!(
                    "{}: {}",
                    e.error.unwrap_or_default(),
                    e.error_description.unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "no OAuth error in the body".into());
        return Err(Error::Credentials(format!(
            "{url} refused the {kind} credentials with HTTP {}: {detail}",
            resp.status
        )));
    }
    let t: TokenResponse = from_json_object(&resp.body).map_err(|e| {
        Error::Credentials(format!("{url} answered without a usable access_token: {e}"))
    })?;
    if t.access_token.is_empty() {
        return Err(Error::Credentials(format!(
            "{url} answered an empty access_token"
        )));
    }
    let expiry = match t.expires_in {
        None => None,
        // Adding it unchecked panics past the clock's range.
        Some(s) => Some(
            SystemTime::now()
                .checked_add(Duration::from_secs(s))
                .ok_or_else(|| {
                    Error::Credentials(format!(
                        "{url} answered an expires_in of {s} seconds, past any date"
                    ))
                })?,
        ),
    };
    Ok(Token {
        secret: Secret(t.access_token),
        expiry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> http::Response {
        http::Response {
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
        )
        .unwrap();
        assert_eq!(t.secret.expose(), "ya29.x");
        let left = t.expiry.unwrap().duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3599));
    }

    #[test]
    fn oauth_errors_are_reported_without_the_body() {
        let e = parse_token_response(
            &resp(400, r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature.","secret":"ya29.leak"}"#),
            "http://t/token?x=1",
            "service-account",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("invalid_grant: Invalid JWT Signature."), "{e}");
        assert!(e.contains("HTTP 400"), "{e}");
        assert!(!e.contains("ya29.leak") && !e.contains("x=1"), "{e}");
    }

    /// Found by fuzzing (fuzz/corpus/{credentials_json,token_response}/
    /// found-bare-string): serde_json quoted a bare JSON string whole.
    #[test]
    fn a_bare_json_string_is_refused_without_being_shown() {
        let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----\n";
        let double_encoded = serde_json::to_string(
            &serde_json::json!({"type": "service_account", "private_key": key}).to_string(),
        )
        .unwrap();
        let e = Source::from_json(&double_encoded, "the file", &Endpoints::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("it is a string, not an object"), "{e}");
        assert!(!e.contains("MIIEvQIBADANBg"), "{e}");

        let e = parse_token_response(&resp(200, r#""ya29.bare-token""#), "http://t/token", "k")
            .unwrap_err()
            .to_string();
        assert!(e.contains("it is a string, not an object"), "{e}");
        assert!(!e.contains("ya29.bare-token"), "{e}");

        for (body, want) in [("[1]", "an array"), ("7", "a number"), ("null", "null")] {
            let e = parse_token_response(&resp(200, body), "http://t/token", "k")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
        let e = parse_token_response(&resp(200, "{\"access_token\": 5"), "http://t/token", "k")
            .unwrap_err()
            .to_string();
        assert!(e.contains("EOF while parsing"), "{e}");
    }

    /// Found writing the fuzz target (fuzz/corpus/token_response/
    /// found-expires-in-overflow): `now + expires_in` panicked.
    #[test]
    fn an_expiry_past_the_clocks_range_is_an_error() {
        let body = r#"{"access_token":"ya29.x","expires_in":18446744073709551615}"#;
        let e = parse_token_response(&resp(200, body), "http://t/token", "k")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expires_in of 18446744073709551615"), "{e}");
        assert!(!e.contains("ya29.x"), "{e}");
    }

    #[test]
    fn freshness_respects_the_buffer() {
        let now = SystemTime::now();
        let t = |secs| Token {
            secret: Secret("t".into()),
            expiry: Some(now + Duration::from_secs(secs)),
        };
        assert!(t(600).fresh_at(now));
        assert!(!t(200).fresh_at(now));
        assert!(Token {
            secret: Secret("t".into()),
            expiry: None
        }
        .fresh_at(now));
    }

    #[test]
    fn credentials_json_kinds_and_errors() {
        let eps = Endpoints::default();
        let au =
            r#"{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"r"}"#;
        match Source::from_json(au, "x", &eps).unwrap() {
            Source::AuthorizedUser { token_uri, .. } => {
                assert_eq!(token_uri, DEFAULT_TOKEN_ENDPOINT)
            }
            other => panic!("{other:?}"),
        }
        let override_eps = Endpoints {
            token_endpoint: Some("http://127.0.0.1:9/token".into()),
            ..Default::default()
        };
        match Source::from_json(au, "x", &override_eps).unwrap() {
            Source::AuthorizedUser { token_uri, .. } => {
                assert_eq!(token_uri, "http://127.0.0.1:9/token")
            }
            other => panic!("{other:?}"),
        }

        let missing = r#"{"type":"authorized_user","client_id":"c","client_secret":"s"}"#;
        let e = Source::from_json(missing, "the file \"a.json\"", &eps)
            .unwrap_err()
            .to_string();
        assert!(e.contains("refresh_token") && e.contains("a.json"), "{e}");

        let bad_key = r#"{"type":"service_account","client_email":"e","private_key":"-----BEGIN PRIVATE KEY-----\nnotakey\n-----END PRIVATE KEY-----\n"}"#;
        let e = Source::from_json(bad_key, "x", &eps)
            .unwrap_err()
            .to_string();
        assert!(e.contains("private_key") && !e.contains("notakey"), "{e}");

        let e = Source::from_json(r#"{"type":"external_account"}"#, "x", &eps)
            .unwrap_err()
            .to_string();
        assert!(e.contains("external_account"), "{e}");

        let e = Source::from_json("not json {", "x", &eps)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a credentials JSON"), "{e}");
    }

    #[test]
    fn static_tokens_need_a_login_token_for_iam() {
        let s = Source::resolve(
            Some(&Credentials::AccessToken {
                api_token: "a".into(),
                login_token: None,
            }),
            &Endpoints::default(),
        )
        .unwrap();
        let far = Instant::now() + Duration::from_secs(5);
        assert_eq!(s.fetch(Scope::Admin, far).unwrap().secret.expose(), "a");
        assert!(matches!(
            s.fetch(Scope::Login, far),
            Err(Error::InvalidConfig(_))
        ));
        // AlloyDB's exchange uses the one token, as Go's WithTokenSource does.
        let alloydb = s.fetch(Scope::AlloyDbLogin, far).unwrap();
        assert_eq!(alloydb.secret.expose(), "a");

        let both = Source::resolve(
            Some(&Credentials::AccessToken {
                api_token: "a".into(),
                login_token: Some("l".into()),
            }),
            &Endpoints::default(),
        )
        .unwrap();
        for (scope, want) in [
            (Scope::AlloyDbAdmin, "a"),
            (Scope::AlloyDbLogin, "l"),
            (Scope::Login, "l"),
        ] {
            assert_eq!(both.fetch(scope, far).unwrap().secret.expose(), want);
        }
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let c = Credentials::AccessToken {
            api_token: "ya29.secret".into(),
            login_token: None,
        };
        assert!(!format!("{c:?}").contains("ya29"));
        assert!(!format!("{:?}", Secret("ya29.secret".into())).contains("ya29"));
    }
}
