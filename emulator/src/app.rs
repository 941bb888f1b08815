//! The admin server's state and its catch-all route: what every handler shares
//! ([`AppState`]) next to both services' instances, the instance a control path names,
//! and the fallback that hands each path to its service: IAM Credentials, AlloyDB's Admin
//! API or Cloud SQL's.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;

use crate::alloydb::instance::AlloyDbInstance;
use crate::calls::ApiMethod;
use crate::cloudsql::instance::Instance;
use crate::proxy::ProxyControls;
use crate::state::{AppState, SharedState};
use crate::{alloydb, cloudsql, faults, iamcredentials};

/// Both services' instances.
#[derive(Debug, Default)]
pub struct Instances {
    /// Cloud SQL's, by `project:instance` (the key the Admin API paths give).
    pub cloudsql: cloudsql::instance::Instances,
    /// AlloyDB's, by URI.
    pub alloydb: alloydb::instance::Instances,
}

impl Instances {
    /// `cloudsql` and `alloydb`, keyed.
    pub fn new(cloudsql: &[Arc<Instance>], alloydb: &[Arc<AlloyDbInstance>]) -> Self {
        Self {
            cloudsql: cloudsql.iter().cloned().collect(),
            alloydb: alloydb.iter().cloned().collect(),
        }
    }

    /// The projects that have at least one instance, of either kind.
    pub fn projects(&self) -> HashSet<String> {
        self.cloudsql
            .iter()
            .map(|i| i.spec.project.clone())
            .chain(self.alloydb.iter().map(|i| i.uri().project.clone()))
            .collect()
    }

    /// The instance a control path names: a Cloud SQL connection name or an AlloyDB URI.
    pub fn by_name(&self, name: &str) -> Option<NamedInstance<'_>> {
        if let Some(i) = self.alloydb.get(name) {
            return Some(NamedInstance::AlloyDb(i));
        }
        self.cloudsql
            .by_connection_name(name)
            .map(NamedInstance::CloudSql)
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
    pub fn controls(&self) -> &ProxyControls {
        match self {
            Self::CloudSql(i) => &i.controls,
            Self::AlloyDb(i) => &i.controls,
        }
    }
}

/// What the admin server's handlers receive: the shared state and the instances.
#[derive(Debug, Clone)]
pub struct App {
    /// What every handler shares.
    pub state: SharedState,
    /// Both services' instances.
    pub instances: Arc<Instances>,
}

/// Lets handlers that need only the shared state (the token endpoint) take it alone.
impl FromRef<App> for SharedState {
    fn from_ref(app: &App) -> Self {
        app.state.clone()
    }
}

/// The API handler: every path not claimed by another route lands here, and goes to IAM
/// Credentials or AlloyDB's Admin API if it has one of their paths, else to Cloud SQL's.
pub async fn admin_api(
    State(app): State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let state: &AppState = &app.state;
    let path = uri.path();
    if let Some(route) = iamcredentials::parse_path(path) {
        let resp = iamcredentials::handle(state, &method, path, route, &headers, &body).await;
        return slow_down(state, ApiMethod::GenerateAccessToken, resp).await;
    }
    if let Some(route) = alloydb::admin::parse_path(path) {
        let instances = &app.instances.alloydb;
        let api = route.method;
        let resp = alloydb::admin::handle(state, instances, &method, route, &headers, &body).await;
        return slow_down(state, api, resp).await;
    }
    let instances = &app.instances.cloudsql;
    let resp = cloudsql::admin::handle(state, instances, &method, path, &headers, &body).await;
    match cloudsql::admin::api_method(path) {
        Some(api) => slow_down(state, api, resp).await,
        None => resp,
    }
}

/// `resp` to a call of `api`, its body stalled or trickled if a test asked for that.
async fn slow_down(state: &AppState, api: ApiMethod, resp: Response) -> Response {
    faults::slow_down(state.faults.take_slow(api.name()), resp).await
}
