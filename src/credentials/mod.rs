//! OAuth2 access tokens: where they come from ([`source`], in Application
//! Default Credentials order, and [`file`] for credentials files), what an
//! answer holds ([`token`]), and how long each is reused (here).

pub(crate) mod file;
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
            .and_then(|s| s.start(scope, self.transport.as_ref(), deadline));
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

    #[test]
    fn debug_output_redacts_secrets() {
        let c = Credentials::AccessToken {
            api_token: "ya29.secret".into(),
            login_token: None,
        };
        assert!(!format!("{c:?}").contains("ya29"));
    }
}
