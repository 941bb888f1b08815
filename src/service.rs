//! What each service (`cloudsql`, `alloydb`) contributes to a connect,
//! behind one trait: its default address and Admin API, its refresh, and the
//! service-neutral plan of a dial it makes from what a refresh learned (the
//! facts of the service, port, identity rule, SNI and exchange, are never
//! taken from a host store). The instance name picks the service once
//! (`instance`); nothing else asks which it is.

use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::connection_info::{ConnectionInfo, InstanceFacts};
use crate::error::Error;
use crate::ip_type::IpType;
use crate::key::ClientKey;
use crate::refresh::{RefreshContext, RefreshTimings};

/// One service's part of a connect to one of its instances.
pub(crate) trait Service {
    /// The address dialled when the caller does not say.
    fn default_ip_type(&self) -> IpType;

    /// Asks the Admin API for a certificate for the connector's key and the
    /// instance's connection info; `iam` for automatic IAM database
    /// authentication.
    fn refresh(
        &self,
        ctx: &RefreshContext<'_>,
        iam: bool,
        deadline: Instant,
    ) -> Result<Refreshed, Error>;

    /// The base URL of the service's Admin API for `config`.
    fn admin_endpoint(&self, config: &Config) -> String;

    /// The plan of a dial from what a refresh learned (just now, or kept in
    /// a host store); its exchange sends `user_agent`. An error if the facts
    /// cannot be this instance's.
    fn plan(&self, facts: InstanceFacts, user_agent: &str) -> Result<ConnectionInfo, Error>;
}

/// What a refresh yields.
#[derive(Debug)]
pub(crate) struct Refreshed {
    pub info: ConnectionInfo,
    /// The key the client certificate is for.
    pub key: Arc<ClientKey>,
    pub timings: RefreshTimings,
}
