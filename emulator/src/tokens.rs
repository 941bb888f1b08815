//! The access-token store shared by the token endpoint, the metadata server and the Admin API.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rand::distributions::{Alphanumeric, DistString};

/// Scope that allows every Google Cloud API.
pub const SCOPE_CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Scope for the Cloud SQL Admin API.
pub const SCOPE_SQLSERVICE_ADMIN: &str = "https://www.googleapis.com/auth/sqlservice.admin";
/// Scope for IAM database login (`generateEphemeralCert` `access_token`).
pub const SCOPE_SQLSERVICE_LOGIN: &str = "https://www.googleapis.com/auth/sqlservice.login";
/// Scope for AlloyDB IAM database login (the metadata exchange's `oauth2_token`).
pub const SCOPE_ALLOYDB_LOGIN: &str = "https://www.googleapis.com/auth/alloydb.login";
/// Scope for the caller's email.
pub const SCOPE_USERINFO_EMAIL: &str = "https://www.googleapis.com/auth/userinfo.email";
/// Scope of the IAM APIs; google-auth scopes an impersonation's source credentials to it.
pub const SCOPE_IAM: &str = "https://www.googleapis.com/auth/iam";

/// Where Google's OAuth 2.0 scope URLs start.
const SCOPE_URL_PREFIX: &str = "https://www.googleapis.com/auth/";

/// True for a scope Google could grant: a `https://www.googleapis.com/auth/…` URL or one of
/// the OpenID Connect names. Token requests with anything else are refused.
pub fn is_valid_scope(scope: &str) -> bool {
    let url_rest = scope.strip_prefix(SCOPE_URL_PREFIX);
    let well_formed = url_rest.is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
    });
    well_formed || matches!(scope, "openid" | "email" | "profile")
}

/// What the emulator knows about an access token it issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Who the token stands for (an email).
    pub principal: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// When the token stops working.
    pub expiry: SystemTime,
}

impl TokenInfo {
    /// True when the token carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Issued tokens, looked up by value.
#[derive(Debug)]
pub struct TokenStore {
    lifetime: Duration,
    tokens: Mutex<HashMap<String, TokenInfo>>,
}

impl TokenStore {
    /// A store whose tokens live `lifetime`.
    pub fn new(lifetime: Duration) -> Self {
        Self {
            lifetime,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The configured token lifetime.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Issues a fresh `ya29.emu-…` token that lives the store's lifetime and returns it
    /// with its info.
    pub fn issue(&self, principal: &str, scopes: Vec<String>) -> (String, TokenInfo) {
        self.issue_for(principal, scopes, self.lifetime)
    }

    /// Issues a fresh `ya29.emu-…` token that lives `lifetime`, but never longer than the
    /// store's lifetime (`--token-lifetime-secs` shortens every token), and returns it
    /// with its info.
    pub fn issue_for(
        &self,
        principal: &str,
        scopes: Vec<String>,
        lifetime: Duration,
    ) -> (String, TokenInfo) {
        let token = format!(
            "ya29.emu-{}",
            Alphanumeric.sample_string(&mut rand::thread_rng(), 32)
        );
        let now = SystemTime::now();
        let info = TokenInfo {
            principal: principal.to_string(),
            scopes,
            expiry: now + lifetime.min(self.lifetime),
        };
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        // Drop long-expired tokens so a long-running emulator does not grow without bound.
        tokens.retain(|_, t| t.expiry + Duration::from_secs(3600) > now);
        tokens.insert(token.clone(), info.clone());
        (token, info)
    }

    /// The info of `token` if the emulator issued it and it has not expired.
    pub fn lookup_valid(&self, token: &str) -> Option<TokenInfo> {
        self.lookup(token).filter(|t| t.expiry > SystemTime::now())
    }

    /// The info of `token` if the emulator issued it, expired or not (expired tokens are
    /// forgotten an hour after their expiry), so callers can say which it is.
    pub fn lookup(&self, token: &str) -> Option<TokenInfo> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.get(token).cloned()
    }

    /// Every token issued and not yet forgotten, for tests that check no client
    /// leaks one.
    pub fn issued(&self) -> Vec<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<String> = tokens.keys().cloned().collect();
        all.sort();
        all
    }

    /// Seconds the client is told in `expires_in`: one less than the lifetime, as Google does.
    pub fn expires_in(&self) -> u64 {
        self.lifetime.as_secs().saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_and_looks_up() {
        let store = TokenStore::new(Duration::from_secs(60));
        let (tok, info) = store.issue("a@b", vec![SCOPE_CLOUD_PLATFORM.into()]);
        assert!(tok.starts_with("ya29.emu-"));
        assert_eq!(tok.len(), "ya29.emu-".len() + 32);
        assert_eq!(store.lookup_valid(&tok), Some(info.clone()));
        assert!(info.has_scope(SCOPE_CLOUD_PLATFORM));
        assert!(!info.has_scope(SCOPE_SQLSERVICE_LOGIN));
        assert_eq!(store.lookup_valid("ya29.other"), None);
        assert_eq!(store.expires_in(), 59);
        let (other, _) = store.issue("c@d", vec![]);
        let mut both = vec![tok, other];
        both.sort();
        assert_eq!(store.issued(), both);
    }

    #[test]
    fn lifetimes_are_capped_by_the_store() {
        let store = TokenStore::new(Duration::from_secs(600));
        let before = SystemTime::now();
        let (_, short) = store.issue_for("a@b", vec![], Duration::from_secs(60));
        let (_, long) = store.issue_for("a@b", vec![], Duration::from_secs(3600));
        let after = SystemTime::now();
        assert!(short.expiry >= before + Duration::from_secs(60));
        assert!(short.expiry <= after + Duration::from_secs(60));
        assert!(long.expiry >= before + Duration::from_secs(600));
        assert!(long.expiry <= after + Duration::from_secs(600));
    }

    #[test]
    fn scopes_are_checked() {
        for good in [
            SCOPE_CLOUD_PLATFORM,
            SCOPE_IAM,
            SCOPE_SQLSERVICE_LOGIN,
            "https://www.googleapis.com/auth/devstorage.read_only",
            "openid",
            "email",
        ] {
            assert!(is_valid_scope(good), "{good}");
        }
        for bad in [
            "",
            "cloud-platform",
            "https://www.googleapis.com/auth/",
            "https://example.com/auth/x",
            "https://www.googleapis.com/auth/a b",
            "https://www.googleapis.com/auth/x?y",
        ] {
            assert!(!is_valid_scope(bad), "{bad:?}");
        }
    }

    #[test]
    fn expired_tokens_are_invalid() {
        let store = TokenStore::new(Duration::from_millis(1));
        let (tok, _) = store.issue("a@b", vec![]);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.lookup_valid(&tok), None);
        assert!(store.lookup(&tok).is_some_and(|t| t.principal == "a@b"));
        assert_eq!(store.lookup("ya29.other"), None);
    }
}
