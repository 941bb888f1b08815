//! State shared by every HTTP handler.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::alloydb::certs::ClusterCa;
use crate::alloydb::instance::AlloyDbInstance;
use crate::calls::Calls;
use crate::credentials::Credentials;
use crate::faults::Faults;
use crate::iam::IamBindings;
use crate::instance::Instance;
use crate::tamper::Tampering;
use crate::tokens::TokenStore;

/// Google's own token endpoint; assertions addressed to it are accepted too.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// Cloud SQL instances by `project:instance` (the key the Admin API paths give).
    pub instances: HashMap<String, Arc<Instance>>,
    /// AlloyDB instances by URI.
    pub alloydb: HashMap<String, Arc<AlloyDbInstance>>,
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
    /// The token endpoint URL the emulator advertises (`http://127.0.0.1:P/token`).
    pub token_uri: String,
    /// Accepted JWT audiences: `token_uri` and Google's.
    pub audiences: Vec<String>,
    /// The IAM login token (principal, expiry) behind each ephemeral certificate, by serial.
    pub ephemeral_principals: IamBindings,
}

impl AppState {
    /// Shared state for `instances` (Cloud SQL) and `alloydb`.
    pub fn new(
        instances: Vec<Arc<Instance>>,
        alloydb: Vec<Arc<AlloyDbInstance>>,
        tokens: TokenStore,
        credentials: Credentials,
        token_uri: String,
    ) -> Self {
        let projects = instances
            .iter()
            .map(|i| i.spec.project.clone())
            .chain(alloydb.iter().map(|i| i.uri().project.clone()))
            .collect();
        let instances = instances
            .into_iter()
            .map(|i| (i.spec.api_key(), i))
            .collect();
        let alloydb = alloydb
            .into_iter()
            .map(|i| (i.uri().to_string(), i))
            .collect();
        Self {
            instances,
            alloydb,
            projects,
            tokens,
            calls: Calls::default(),
            faults: Faults::default(),
            tampering: Tampering::default(),
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

    /// The CA of AlloyDB cluster `parent` (`projects/P/locations/R/clusters/C`), if the
    /// emulator has an instance in it.
    pub fn alloydb_cluster(&self, parent: &str) -> Option<&Arc<ClusterCa>> {
        self.alloydb
            .values()
            .find(|i| i.uri().cluster_parent() == parent)
            .map(|i| &i.ca)
    }

    /// The instance a control path names: a Cloud SQL connection name or an AlloyDB URI.
    pub fn instance_by_name(&self, name: &str) -> Option<NamedInstance<'_>> {
        if let Some(i) = self.alloydb.get(name) {
            return Some(NamedInstance::AlloyDb(i));
        }
        self.instance_by_connection_name(name)
            .map(NamedInstance::CloudSql)
    }

    /// The IAM principal recorded for the ephemeral certificate with serial `serial`.
    pub fn principal_for_serial(&self, serial: &str) -> Option<String> {
        self.ephemeral_principals.get(serial).map(|b| b.principal)
    }
}

/// An instance of either kind, as the control endpoints find it by name.
#[derive(Debug, Clone, Copy)]
pub enum NamedInstance<'a> {
    /// A Cloud SQL instance.
    CloudSql(&'a Arc<Instance>),
    /// An AlloyDB instance.
    AlloyDb(&'a Arc<AlloyDbInstance>),
}

impl NamedInstance<'_> {
    /// Its proxy's certificates and faults.
    pub fn controls(&self) -> &crate::proxy::ProxyControls {
        match self {
            Self::CloudSql(i) => &i.controls,
            Self::AlloyDb(i) => &i.controls,
        }
    }
}

/// The state as handlers receive it.
pub type SharedState = Arc<AppState>;
