//! What each service (`cloudsql`, `alloydb`) contributes to a connect,
//! behind one trait: its default address, its refresh, which yields the
//! service-neutral plan of a dial, and its metadata exchange made again from
//! what a host store kept. The instance name picks the service once
//! (`instance`); nothing else asks which it is.

use std::sync::Arc;
use std::time::Instant;

use crate::connection_info::ConnectionInfo;
use crate::error::Error;
use crate::ip_type::IpType;
use crate::key::ClientKey;
use crate::mdx::{ExchangeRecord, MetadataExchange};
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

    /// The exchange a host store kept as `record`, for `user_agent`; `None`
    /// if the record cannot be the service's.
    fn restore_exchange(
        &self,
        record: ExchangeRecord,
        user_agent: &str,
    ) -> Option<Arc<dyn MetadataExchange>>;
}

/// What a refresh yields.
#[derive(Debug)]
pub(crate) struct Refreshed {
    pub info: ConnectionInfo,
    /// The key the client certificate is for.
    pub key: Arc<ClientKey>,
    pub timings: RefreshTimings,
}
