//! State shared by every HTTP handler and proxy, whichever service: tokens, call counters,
//! injected faults, credentials, the identity provider and IAM policy behind workload
//! identity federation and impersonation, and the IAM logins behind ephemeral certificates. Each
//! service keeps its own instances (`cloudsql::instance`, `alloydb::instance`); `app`
//! holds both next to this.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::calls::Calls;
use crate::credentials::Credentials;
use crate::dns::{Dns, DnsZone};
use crate::faults::Faults;
use crate::iam::IamBindings;
use crate::iamcredentials::policy::Policy;
use crate::idp::Idp;
use crate::tamper::Tampering;
use crate::tokens::TokenStore;

/// Google's own token endpoint; assertions addressed to it are accepted too.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// Projects that have at least one instance, of either kind.
    pub projects: HashSet<String>,
    /// Issued access tokens.
    pub tokens: TokenStore,
    /// Call counters.
    pub calls: Calls,
    /// Injected Admin API failures.
    pub faults: Faults,
    /// Injected broken Admin API answers.
    pub tampering: Tampering,
    /// Principals' secrets.
    pub credentials: Credentials,
    /// The external identity provider the workload identity pool trusts.
    pub idp: Idp,
    /// Who may impersonate which service account.
    pub policy: Policy,
    /// The token endpoint URL the emulator advertises (`http://127.0.0.1:P/token`).
    pub token_uri: String,
    /// Accepted JWT audiences: `token_uri` and Google's.
    pub audiences: Vec<String>,
    /// The IAM login token (principal, expiry) behind each ephemeral certificate, by serial.
    pub ephemeral_principals: IamBindings,
    /// `--cert-lifetime-secs`: `None` issues client certificates as Google does.
    pub cert_lifetime: Option<Duration>,
    /// The DNS-over-HTTPS resolver's zone and faults.
    pub dns: Dns,
}

impl AppState {
    /// Shared state for instances in `projects`.
    pub fn new(
        projects: HashSet<String>,
        tokens: TokenStore,
        credentials: Credentials,
        idp: Idp,
        token_uri: String,
    ) -> Self {
        Self {
            projects,
            tokens,
            calls: Calls::default(),
            faults: Faults::default(),
            tampering: Tampering::default(),
            credentials,
            idp,
            policy: Policy::emulator(),
            audiences: vec![token_uri.clone(), GOOGLE_TOKEN_URI.to_string()],
            token_uri,
            ephemeral_principals: IamBindings::default(),
            cert_lifetime: None,
            dns: Dns::default(),
        }
    }

    /// The same, its DNS-over-HTTPS resolver serving `zone`.
    pub fn with_dns(mut self, zone: &DnsZone) -> Self {
        self.dns = Dns::new(zone);
        self
    }

    /// The same, issuing client certificates that last `lifetime` (`None`: as Google does).
    pub fn with_cert_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.cert_lifetime = lifetime;
        self
    }

    /// The IAM principal recorded for the ephemeral certificate with serial `serial`.
    pub fn principal_for_serial(&self, serial: &str) -> Option<String> {
        self.ephemeral_principals.get(serial).map(|b| b.principal)
    }
}

/// The state as handlers receive it.
pub type SharedState = Arc<AppState>;
