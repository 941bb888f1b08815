//! The last source of connection info: a refresh by the instance's own
//! service (its Admin API), with the connector's tokens and key.

use std::sync::Arc;
use std::time::Instant;

use super::{CacheKey, Found, Origin, Prepared, Source};
use crate::config::Config;
use crate::credentials::TokenSource;
use crate::error::Error;
use crate::http::Transport;
use crate::key::KeySlot;
use crate::refresh::RefreshContext;

/// Refreshes through the instance's service.
pub(crate) struct Refresher {
    pub config: Config,
    pub user_agent: String,
    pub tokens: Arc<TokenSource>,
    pub keys: Arc<KeySlot>,
    pub transport: Arc<dyn Transport>,
}

impl Source for Refresher {
    fn get(&self, key: &CacheKey, deadline: Instant) -> Result<Found, Error> {
        let ctx = RefreshContext {
            config: &self.config,
            user_agent: &self.user_agent,
            tokens: &self.tokens,
            key: &self.keys,
            transport: self.transport.as_ref(),
        };
        let refreshed = key.name.service().refresh(&ctx, key.iam, deadline)?;
        let prepared = Prepared::new(refreshed.info, refreshed.key, &key.name)?;
        Ok(Found {
            prepared: Arc::new(prepared),
            origin: Origin::Refresh(refreshed.timings),
        })
    }

    /// Nothing is kept here.
    fn invalidate(&self, _key: &CacheKey) {}
}
