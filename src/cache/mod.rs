//! Where a connect's connection info comes from, each a [`Source`] in front
//! of the next, stacked once when the connector is made: the connector's
//! memory ([`memory`]: the lazy cache, single flight, rate limit), then, if
//! the host gives one, a store shared by every instance of the app
//! ([`store`], entries in the format of [`stored`]), then a refresh by the
//! instance's own service ([`refresh`]). What a connect got says where it
//! came from ([`Origin`]): the retry rule and the timings read it.

pub(crate) mod memory;
pub(crate) mod refresh;
pub(crate) mod store;
pub(crate) mod stored;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::connection_info::ConnectionInfo;
use crate::error::Error;
use crate::instance::Instance;
use crate::key::ClientKey;
use crate::refresh::RefreshTimings;
use crate::tls::TlsConfig;

/// Refresh this long before the certificate expires (Google: 4 min).
pub const REFRESH_BUFFER: Duration = Duration::from_secs(4 * 60);

/// Whether info expiring at `expiry` may still be handed out at `now`.
pub(crate) fn is_fresh(expiry: SystemTime, now: SystemTime) -> bool {
    now + REFRESH_BUFFER < expiry
}

/// What connection info is cached under: the instance and whether IAM
/// authentication is on (a Cloud SQL certificate carries the login token;
/// AlloyDB's exchange says AUTO_IAM).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    pub name: Instance,
    pub iam: bool,
}

/// Connection info ready to dial: the plan, the key its certificate is for,
/// and the TLS config built from both (once per certificate).
#[derive(Debug)]
pub(crate) struct Prepared {
    pub info: ConnectionInfo,
    pub key: Arc<ClientKey>,
    pub tls: TlsConfig,
}

impl Prepared {
    /// Checks the certificates and builds the TLS config.
    pub(crate) fn new(
        info: ConnectionInfo,
        key: Arc<ClientKey>,
        name: &Instance,
    ) -> Result<Self, Error> {
        let tls = TlsConfig::new(&info, &key, name)?;
        Ok(Self { info, key, tls })
    }
}

/// Where connection info came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The connector's own memory.
    Memory,
    /// The host store: another instance's (or an earlier one's) refresh.
    Store,
    /// A refresh just now, which took this long.
    Refresh(RefreshTimings),
}

impl Origin {
    /// Whether a failed dial is tried once more, refreshed: info from the
    /// store may be another instance's out-of-date view (the instance moved,
    /// its CA rotated), which the failure has just made it forget.
    pub(crate) fn retries_a_failed_dial(self) -> bool {
        self == Self::Store
    }
}

/// Connection info and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub prepared: Arc<Prepared>,
    pub origin: Origin,
}

/// A source of connection info.
pub(crate) trait Source: Send + Sync {
    /// Info for `key` good for at least [`REFRESH_BUFFER`] more, fetched
    /// within `deadline`.
    fn get(&self, key: &CacheKey, deadline: Instant) -> Result<Found, Error>;

    /// Forgets the info for `key` after a failed dial, so that the next
    /// connect refreshes (here and in every source behind this one).
    fn invalidate(&self, key: &CacheKey);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_keeps_a_four_minute_buffer() {
        let now = SystemTime::now();
        assert!(is_fresh(now + Duration::from_secs(241), now));
        assert!(!is_fresh(now + Duration::from_secs(240), now));
        assert!(!is_fresh(now + Duration::from_secs(60), now));
        assert!(!is_fresh(now - Duration::from_secs(1), now));
    }

    #[test]
    fn only_stored_info_retries_a_failed_dial() {
        assert!(Origin::Store.retries_a_failed_dial());
        assert!(!Origin::Memory.retries_a_failed_dial());
        assert!(!Origin::Refresh(RefreshTimings::default()).retries_a_failed_dial());
    }
}
