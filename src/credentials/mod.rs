//! OAuth2 access tokens: where they come from ([`source`], in Application
//! Default Credentials order, and [`file`] for credentials files), what an
//! answer holds ([`token`]), and how long each is reused (here).

pub(crate) mod external;
pub(crate) mod file;
pub(crate) mod impersonated;
pub(crate) mod jwt;
pub(crate) mod source;
pub(crate) mod token;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use source::{Endpoints, Fetch, Source};
use token::{Scope, Token};

use crate::error::Error;
use crate::http::Transport;

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

/// Google's universe: `googleapis.com`.
pub const DEFAULT_UNIVERSE_DOMAIN: &str = "googleapis.com";

/// A service account to act as, through a chain of delegates (see
/// [`Config::impersonation`]).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountImpersonation {
    /// The target's email, e.g. `sa@project.iam.gserviceaccount.com`.
    pub target_principal: String,
    /// The service accounts between the caller and the target, in order
    /// (emails or `projects/-/serviceAccounts/EMAIL`): each may impersonate
    /// the next, the last the target.
    pub delegates: Vec<String>,
}

impl ServiceAccountImpersonation {
    /// Impersonation of `target_principal` directly.
    pub fn new(target_principal: impl Into<String>) -> Self {
        Self {
            target_principal: target_principal.into(),
            delegates: Vec::new(),
        }
    }

    /// The same, through `delegates`.
    pub fn with_delegates(mut self, delegates: Vec<String>) -> Self {
        self.delegates = delegates;
        self
    }

    /// The Auth Proxy's `--impersonate-service-account` form: emails,
    /// comma-separated, the target first; each later one delegates to the
    /// one before it (`sa1,sa2,sa3`: the caller's token acts as sa3, which
    /// acts as sa2, which impersonates sa1).
    ///
    /// ```
    /// use gcp_db_connector::ServiceAccountImpersonation;
    /// let i = ServiceAccountImpersonation::from_chain("sa1@p.iam.gserviceaccount.com,sa2@p.iam.gserviceaccount.com,sa3@p.iam.gserviceaccount.com");
    /// assert_eq!(i.target_principal, "sa1@p.iam.gserviceaccount.com");
    /// assert_eq!(i.delegates, ["sa3@p.iam.gserviceaccount.com", "sa2@p.iam.gserviceaccount.com"]);
    /// ```
    pub fn from_chain(chain: &str) -> Self {
        let mut accounts: Vec<String> = chain.split(',').map(|a| a.trim().to_string()).collect();
        let target = accounts.remove(0);
        accounts.reverse();
        Self::new(target).with_delegates(accounts)
    }
}

/// Resolves the credentials once, then hands out tokens, reusing each until
/// shortly before it expires.
pub(crate) struct TokenSource {
    configured: Option<Credentials>,
    endpoints: Endpoints,
    transport: Arc<dyn Transport>,
    source: Mutex<Option<Arc<Source>>>,
    cache: Mutex<HashMap<Scope, Token>>,
    principal: Mutex<Option<String>>,
}

/// Whether a cached token will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// A cached token still fresh is reused.
    Cached,
    /// Always fetched anew: a login token caps the lifetime of what it goes
    /// into (a certificate, an exchange), so a refresh takes a new one (as
    /// Google's Python connector does).
    New,
}

impl TokenSource {
    pub(crate) fn new(
        configured: Option<Credentials>,
        endpoints: Endpoints,
        transport: Arc<dyn Transport>,
    ) -> Self {
        Self {
            configured,
            endpoints,
            transport,
            source: Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
            principal: Mutex::new(None),
        }
    }

    /// Who the credentials act as (see `Source::principal`), found once.
    pub(crate) fn principal(&self, deadline: Instant) -> Result<String, Error> {
        if let Some(p) = lock(&self.principal).as_ref() {
            return Ok(p.clone());
        }
        let p = self
            .source()?
            .principal(self.transport.as_ref(), deadline)?;
        *lock(&self.principal) = Some(p.clone());
        Ok(p)
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
        let fetch = self
            .source()
            .and_then(|s| s.start(scope, &self.transport, deadline));
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

/// A poisoned lock only means another caller panicked; the data (a cache) is
/// still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::token::Role;
    use super::*;
    use crate::error::ErrorKind;
    use crate::testing::google::ScriptedGoogle;

    const API: Scope = Scope {
        url: "https://www.googleapis.com/auth/cloud-platform",
        role: Role::Api,
    };
    const LOGIN: Scope = Scope {
        url: "https://www.googleapis.com/auth/sqlservice.login",
        role: Role::Login {
            api_token_will_do: false,
        },
    };
    const LOGIN_OR_API: Scope = Scope {
        url: "https://www.googleapis.com/auth/alloydb.login",
        role: Role::Login {
            api_token_will_do: true,
        },
    };

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    fn tokens(credentials: Credentials) -> TokenSource {
        TokenSource::new(
            Some(credentials),
            Endpoints::default(),
            Arc::new(ScriptedGoogle::new()),
        )
    }

    #[test]
    fn static_tokens_need_a_login_token_for_iam() {
        let s = tokens(Credentials::AccessToken {
            api_token: "a".into(),
            login_token: None,
        });
        assert_eq!(s.token(API, far()).unwrap().secret.expose(), "a");
        let e = s.token(LOGIN, far()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert!(e.message().contains("sqlservice.login"), "{e}");
        // AlloyDB's exchange uses the one token, as Go's WithTokenSource does.
        assert_eq!(s.token(LOGIN_OR_API, far()).unwrap().secret.expose(), "a");

        let both = tokens(Credentials::AccessToken {
            api_token: "a".into(),
            login_token: Some("l".into()),
        });
        for (scope, want) in [(API, "a"), (LOGIN_OR_API, "l"), (LOGIN, "l")] {
            assert_eq!(both.token(scope, far()).unwrap().secret.expose(), want);
        }
    }

    #[test]
    fn an_empty_api_token_is_refused() {
        let e = tokens(Credentials::AccessToken {
            api_token: " ".into(),
            login_token: None,
        })
        .token(API, far())
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    }

    #[test]
    fn a_file_token_is_fetched_once_and_reused_until_near_expiry() {
        let google = Arc::new(ScriptedGoogle::new());
        let s = TokenSource::new(
            Some(Credentials::Json(google.authorized_user_json())),
            Endpoints::default(),
            google.clone(),
        );
        let first = s.token(API, far()).unwrap();
        let again = s.token(API, far()).unwrap();
        assert_eq!(first.secret, again.secret);
        assert_eq!(google.calls("token"), 1);
        // A new one when asked for.
        let fresh = s.start(API, Freshness::New, far()).wait().unwrap();
        assert_ne!(fresh.secret, first.secret);
        assert_eq!(google.calls("token"), 2);
    }

    #[test]
    fn an_unreachable_metadata_server_says_what_to_do() {
        let s = TokenSource::new(
            Some(Credentials::MetadataServer),
            Endpoints {
                metadata_host: Some("metadata.invalid".into()),
                ..Endpoints::default()
            },
            Arc::new(ScriptedGoogle::new()),
        );
        let e = s.token(API, far()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Credentials);
        assert!(
            e.message().contains("GOOGLE_APPLICATION_CREDENTIALS"),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    const TARGET: &str = "target-sa@p.iam.gserviceaccount.com";

    fn form(req: &crate::http::Request) -> HashMap<String, String> {
        form_urlencoded::parse(&req.body).into_owned().collect()
    }

    fn bearer(req: &crate::http::Request) -> String {
        let (_, v) = req
            .headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap();
        v.strip_prefix("Bearer ").unwrap().to_string()
    }

    fn impersonated_file(source: &str, delegates: &[&str]) -> String {
        serde_json::json!({
            "type": "impersonated_service_account",
            "service_account_impersonation_url": format!(
                "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{TARGET}:generateAccessToken"),
            "source_credentials": serde_json::from_str::<serde_json::Value>(source).unwrap(),
            "delegates": delegates,
        })
        .to_string()
    }

    #[test]
    fn an_impersonated_file_trades_the_source_token_for_the_targets() {
        let google = Arc::new(ScriptedGoogle::new());
        let json = impersonated_file(
            &google.authorized_user_json(),
            &["d@p.iam.gserviceaccount.com"],
        );
        let s = TokenSource::new(
            Some(Credentials::Json(json)),
            Endpoints::default(),
            google.clone(),
        );
        let login = s.start(LOGIN, Freshness::New, far()).wait().unwrap();
        assert!(
            login
                .secret
                .expose()
                .starts_with(&format!("ya29.{TARGET}-sqlservice.login-")),
            "{login:?}"
        );
        let req = google.last_request("generateAccessToken").unwrap();
        assert_eq!(
            bearer(&req),
            "ya29.scripted-1",
            "the source's token calls IAM"
        );
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            body["delegates"],
            serde_json::json!(["projects/-/serviceAccounts/d@p.iam.gserviceaccount.com"])
        );
        assert_eq!(body["scope"], serde_json::json!([LOGIN.url]));
        // Every login token is new; the source's token is reused meanwhile.
        let again = s.start(LOGIN, Freshness::New, far()).wait().unwrap();
        assert_ne!(again.secret, login.secret);
        assert_eq!(
            (google.calls("token"), google.calls("generateAccessToken")),
            (1, 2)
        );
        assert_eq!(
            s.principal(far()).unwrap(),
            format!("impersonated:{TARGET}")
        );
    }

    #[test]
    fn the_configs_impersonation_goes_on_top_of_any_credentials() {
        let google = Arc::new(ScriptedGoogle::new());
        let s = TokenSource::new(
            Some(Credentials::AccessToken {
                api_token: "caller".into(),
                login_token: None,
            }),
            Endpoints {
                impersonation: Some(crate::ServiceAccountImpersonation::new(TARGET)),
                ..Endpoints::default()
            },
            google.clone(),
        );
        let api = s.token(API, far()).unwrap();
        assert!(api
            .secret
            .expose()
            .starts_with(&format!("ya29.{TARGET}-cloud-platform-")));
        assert_eq!(
            bearer(&google.last_request("generateAccessToken").unwrap()),
            "caller"
        );
        // A login token, which a caller's token alone could not give.
        assert!(s.token(LOGIN, far()).is_ok());
        assert_eq!(google.calls("generateAccessToken"), 2);
    }

    #[test]
    fn an_impersonation_refused_is_a_credentials_error_with_iams_words() {
        let google = Arc::new(ScriptedGoogle::new());
        google.fail("generateAccessToken", 403, 1);
        let json = impersonated_file(&google.authorized_user_json(), &[]);
        let s = TokenSource::new(
            Some(Credentials::Json(json)),
            Endpoints::default(),
            google.clone(),
        );
        let e = s.token(API, far()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Credentials);
        assert!(
            e.message()
                .contains(&format!("refused to impersonate {TARGET} with HTTP 403")),
            "{e}"
        );
        assert!(!e.message().contains("ya29"), "{e}");
    }

    /// A subject token file in a fresh directory.
    fn subject_file(test: &str, token: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("gcpdb-subject-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, token).unwrap();
        path
    }

    fn external_file(path: &std::path::Path, impersonate: bool) -> String {
        let mut f = serde_json::json!({
            "type": "external_account",
            "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": "https://sts.googleapis.com/v1/token",
            "credential_source": {"file": path},
        });
        if impersonate {
            f["service_account_impersonation_url"] = format!(
                "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{TARGET}:generateAccessToken"
            )
            .into();
        }
        f.to_string()
    }

    #[test]
    fn an_external_account_reads_its_subject_token_anew_for_each_exchange() {
        let path = subject_file("anew", "subject-1");
        let google = Arc::new(ScriptedGoogle::new());
        let s = TokenSource::new(
            Some(Credentials::Json(external_file(&path, false))),
            Endpoints::default(),
            google.clone(),
        );
        let first = s.token(API, far()).unwrap();
        assert!(first.secret.expose().starts_with("ya29.federated-"));
        let sts = form(&google.last_request("sts").unwrap());
        assert_eq!(sts["subject_token"], "subject-1");
        assert_eq!(sts["scope"], API.url);
        assert_eq!(
            sts["grant_type"],
            "urn:ietf:params:oauth:grant-type:token-exchange"
        );
        assert_eq!(
            sts["subject_token_type"],
            "urn:ietf:params:oauth:token-type:jwt"
        );
        std::fs::write(&path, "subject-2\n").unwrap();
        s.start(API, Freshness::New, far()).wait().unwrap();
        assert_eq!(
            form(&google.last_request("sts").unwrap())["subject_token"],
            "subject-2"
        );
        assert_eq!(google.calls("generateAccessToken"), 0);
        assert!(s
            .principal(far())
            .unwrap()
            .starts_with("external://iam.googleapis.com/projects/1/"));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn an_external_account_impersonates_with_a_cloud_platform_federated_token() {
        let path = subject_file("imp", "subject");
        let google = Arc::new(ScriptedGoogle::new());
        let s = TokenSource::new(
            Some(Credentials::Json(external_file(&path, true))),
            Endpoints::default(),
            google.clone(),
        );
        let login = s.start(LOGIN, Freshness::New, far()).wait().unwrap();
        assert!(login
            .secret
            .expose()
            .starts_with(&format!("ya29.{TARGET}-sqlservice.login-")));
        assert_eq!(form(&google.last_request("sts").unwrap())["scope"], API.url);
        let federated = bearer(&google.last_request("generateAccessToken").unwrap());
        assert!(federated.starts_with("ya29.federated-"), "{federated}");
        // The federated token is reused until near its expiry.
        s.start(LOGIN, Freshness::New, far()).wait().unwrap();
        assert_eq!(
            (google.calls("sts"), google.calls("generateAccessToken")),
            (1, 2)
        );
        assert_eq!(
            s.principal(far()).unwrap(),
            format!("impersonated:{TARGET}")
        );

        // A subject token that is gone, empty or huge: a credentials error
        // naming the file, no call made.
        let s = TokenSource::new(
            Some(Credentials::Json(external_file(&path, false))),
            Endpoints::default(),
            google.clone(),
        );
        for (content, want) in [
            (None, "cannot read the subject token file"),
            (Some(String::new()), "is empty"),
            (Some("x".repeat(external::MAX_SUBJECT_TOKEN + 1)), "is over"),
        ] {
            match &content {
                Some(c) => std::fs::write(&path, c).unwrap(),
                None => std::fs::remove_file(&path).unwrap(),
            }
            let e = s.start(API, Freshness::New, far()).wait().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Credentials);
            assert!(e.message().contains(want), "{e}");
        }
        assert_eq!(google.calls("sts"), 1);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn credentials_of_another_universe_are_refused_before_any_call() {
        let google = Arc::new(ScriptedGoogle::new());
        let path = subject_file("universe", "subject");
        let mut file: serde_json::Value =
            serde_json::from_str(&external_file(&path, false)).unwrap();
        file["universe_domain"] = "example-universe.test".into();
        let s = TokenSource::new(
            Some(Credentials::Json(file.to_string())),
            Endpoints::default(),
            google.clone(),
        );
        let e = s.token(API, far()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Credentials);
        assert!(
            e.message().contains("\"example-universe.test\"")
                && e.message().contains("\"googleapis.com\""),
            "{e}"
        );
        assert_eq!(google.calls("sts"), 0);
        // The same file in its own universe resolves.
        let s = TokenSource::new(
            Some(Credentials::Json(file.to_string())),
            Endpoints {
                universe_domain: "example-universe.test".into(),
                ..Endpoints::default()
            },
            google.clone(),
        );
        assert!(s.principal(far()).is_ok());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let c = Credentials::AccessToken {
            api_token: "ya29.secret".into(),
            login_token: None,
        };
        assert!(!format!("{c:?}").contains("ya29"));
    }
}
