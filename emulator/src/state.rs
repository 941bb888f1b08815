//! State shared by every HTTP handler.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::calls::Calls;
use crate::credentials::Credentials;
use crate::faults::Faults;
use crate::iam::IamBindings;
use crate::instance::Instance;
use crate::tokens::TokenStore;

/// Google's own token endpoint; assertions addressed to it are accepted too.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// Instances by `project:instance` (the key the Admin API paths give).
    pub instances: HashMap<String, Arc<Instance>>,
    /// Projects that have at least one instance.
    pub projects: HashSet<String>,
    /// Issued access tokens.
    pub tokens: TokenStore,
    /// Call counters.
    pub calls: Calls,
    /// Injected Admin API failures.
    pub faults: Faults,
    /// Principals' secrets.
    pub credentials: Credentials,
    /// The token endpoint URL the emulator advertises (`http://127.0.0.1:P/token`).
    pub token_uri: String,
    /// Accepted JWT audiences: `token_uri` and Google's.
    pub audiences: Vec<String>,
    /// The IAM login token (principal, expiry) behind each ephemeral certificate, by serial.
    pub ephemeral_principals: IamBindings,
}

impl AppState {
    /// Shared state for `instances`.
    pub fn new(
        instances: Vec<Arc<Instance>>,
        tokens: TokenStore,
        credentials: Credentials,
        token_uri: String,
    ) -> Self {
        let projects = instances.iter().map(|i| i.spec.project.clone()).collect();
        let instances = instances
            .into_iter()
            .map(|i| (i.spec.api_key(), i))
            .collect();
        Self {
            instances,
            projects,
            tokens,
            calls: Calls::default(),
            faults: Faults::default(),
            credentials,
            audiences: vec![token_uri.clone(), GOOGLE_TOKEN_URI.to_string()],
            token_uri,
            ephemeral_principals: IamBindings::default(),
        }
    }

    /// The instance with connection name `project:region:name`, if any.
    pub fn instance_by_connection_name(&self, name: &str) -> Option<&Arc<Instance>> {
        self.instances
            .values()
            .find(|i| i.spec.connection_name() == name)
    }

    /// The IAM principal recorded for the ephemeral certificate with serial `serial`.
    pub fn principal_for_serial(&self, serial: &str) -> Option<String> {
        self.ephemeral_principals.get(serial).map(|b| b.principal)
    }
}

/// The state as handlers receive it.
pub type SharedState = Arc<AppState>;
