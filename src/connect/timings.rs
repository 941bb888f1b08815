//! What a connect cost, step by step, derived from where its connection
//! info came from and how long the dial took.

use std::time::Duration;

use crate::cache::Origin;

/// How long each step of a connect took. A step that did not run (cached
/// certificate or token) is zero.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectTimings {
    /// Getting OAuth2 tokens.
    pub token: Duration,
    /// The Admin API calls, less the time hidden behind key generation.
    pub admin_api: Duration,
    /// Generating the RSA key (first connect of a connector only).
    pub key_generation: Duration,
    /// Finding what the DNS name the instance was named by names: a DoH
    /// query, the host store, or memory (0 when it was not named by one).
    pub name_resolution: Duration,
    /// The TCP connect.
    pub tcp: Duration,
    /// The TLS handshake, server verification and metadata exchange included.
    pub tls: Duration,
    /// The whole connect.
    pub total: Duration,
    /// The certificate came from the cache: no Admin API call was made.
    pub cached: bool,
    /// It came from the host store (another instance's refresh).
    pub from_store: bool,
}

impl ConnectTimings {
    pub(crate) fn new(origin: Origin, tcp: Duration, tls: Duration, total: Duration) -> Self {
        let refresh = match origin {
            Origin::Refresh(t) => t,
            Origin::Memory | Origin::Store => Default::default(),
        };
        Self {
            token: refresh.token,
            admin_api: refresh.admin_api,
            key_generation: refresh.key_generation,
            name_resolution: Duration::ZERO,
            tcp,
            tls,
            total,
            cached: !matches!(origin, Origin::Refresh(_)),
            from_store: origin == Origin::Store,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refresh::RefreshTimings;

    #[test]
    fn the_origin_says_what_ran() {
        let ms = Duration::from_millis;
        let refreshed = RefreshTimings {
            token: ms(1),
            admin_api: ms(2),
            key_generation: ms(3),
        };
        let t = ConnectTimings::new(Origin::Refresh(refreshed), ms(4), ms(5), ms(20));
        assert_eq!(
            (
                t.token,
                t.admin_api,
                t.key_generation,
                t.tcp,
                t.tls,
                t.total
            ),
            (ms(1), ms(2), ms(3), ms(4), ms(5), ms(20))
        );
        assert!(!t.cached && !t.from_store);
        let t = ConnectTimings::new(Origin::Store, ms(4), ms(5), ms(9));
        assert!(t.cached && t.from_store);
        assert_eq!(t.token, Duration::ZERO);
        let t = ConnectTimings::new(Origin::Memory, ms(4), ms(5), ms(9));
        assert!(t.cached && !t.from_store);
    }
}
