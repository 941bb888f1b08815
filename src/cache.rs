//! The lazy cache: connection info is refreshed only when a connect needs it,
//! never in the background.
//!
//! Each instance has a slot whose lock is held across a refresh, so callers
//! that arrive meanwhile wait for that refresh instead of starting their own
//! (single flight). Entries are reused until [`REFRESH_BUFFER`] before they
//! expire, marked stale after a failed dial, and refreshes are rate-limited per
//! instance as Google's connectors do. A refresh refused for quota empties the
//! instance's bucket: the next one waits a whole interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::{Error, Instance};

/// Refresh this long before the certificate expires (Google: 4 min).
pub const REFRESH_BUFFER: Duration = Duration::from_secs(4 * 60);
/// Refreshes allowed at once per instance.
pub(crate) const RATE_BURST: f64 = 2.0;
/// One more refresh allowed per this interval.
pub(crate) const RATE_INTERVAL: Duration = Duration::from_secs(30);

/// What the cache is keyed by: the instance and whether IAM authentication is
/// on (a Cloud SQL certificate carries the login token; AlloyDB's exchange
/// says AUTO_IAM).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    pub name: Instance,
    pub iam: bool,
}

/// A cached value that knows when it expires.
pub(crate) trait Expiring {
    fn expiry(&self) -> SystemTime;
}

/// The lazy cache over values of type `T`.
pub(crate) struct Cache<T> {
    slots: Mutex<HashMap<CacheKey, Arc<Mutex<Slot<T>>>>>,
}

struct Slot<T> {
    current: Option<Arc<T>>,
    stale: bool,
    limiter: RateLimiter,
    /// Why the last refresh failed, until one succeeds: a rate-limited
    /// caller is told the cause.
    last_error: Option<Error>,
}

impl<T: Expiring> Cache<T> {
    pub(crate) fn new() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The cached value if it is good for at least [`REFRESH_BUFFER`] more,
    /// else the result of `refresh` (which is then cached). Returns whether the
    /// value came from the cache.
    pub(crate) fn get_or_refresh(
        &self,
        key: &CacheKey,
        deadline: Instant,
        refresh: impl FnOnce() -> Result<T, Error>,
    ) -> Result<(Arc<T>, bool), Error> {
        let slot = lock(&self.slots)
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Slot {
                    current: None,
                    stale: false,
                    limiter: RateLimiter::new(Instant::now()),
                    last_error: None,
                }))
            })
            .clone();
        // Held across the refresh: single flight.
        let mut slot = lock(&slot);
        if let Some(v) = &slot.current {
            if !slot.stale && is_fresh(v.expiry(), SystemTime::now()) {
                return Ok((v.clone(), true));
            }
        }
        loop {
            match slot.limiter.try_acquire(Instant::now()) {
                Ok(()) => break,
                Err(wait) if Instant::now() + wait < deadline => std::thread::sleep(wait),
                Err(wait) => {
                    return Err(Error::RateLimited {
                        instance: key.name.to_string(),
                        retry_after: wait,
                        last_error: slot.last_error.clone().map(Box::new),
                    })
                }
            }
        }
        match refresh() {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                slot.current = Some(fresh.clone());
                slot.stale = false;
                slot.last_error = None;
                Ok((fresh, false))
            }
            Err(e) => {
                // Google's quota is per minute: the next try would only be
                // refused again and spend more of it.
                if matches!(e, Error::QuotaExceeded(_)) {
                    slot.limiter.drain(Instant::now());
                }
                slot.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Makes the next connect refresh (after a failed dial or handshake). The
    /// rate limiter is kept, so a broken instance cannot hammer the Admin API.
    pub(crate) fn invalidate(&self, key: &CacheKey) {
        let slot = lock(&self.slots).get(key).cloned();
        if let Some(slot) = slot {
            lock(&slot).stale = true;
        }
    }
}

/// Whether a value expiring at `expiry` may still be handed out at `now`.
pub(crate) fn is_fresh(expiry: SystemTime, now: SystemTime) -> bool {
    now + REFRESH_BUFFER < expiry
}

/// A poisoned lock only means another caller panicked mid-refresh; the slot
/// is still consistent (values are swapped in whole).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A token bucket: [`RATE_BURST`] tokens, one more every [`RATE_INTERVAL`].
#[derive(Debug)]
pub(crate) struct RateLimiter {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            tokens: RATE_BURST,
            last: now,
        }
    }

    /// Takes a token, or says how long until one is available.
    pub(crate) fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        self.tokens = refill(self.tokens, now.saturating_duration_since(self.last));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(until_a_token(self.tokens))
        }
    }

    /// Spends every token: the next one is a whole interval after `now`.
    pub(crate) fn drain(&mut self, now: Instant) {
        self.tokens = 0.0;
        self.last = now;
    }
}

/// A bucket of `tokens` after `elapsed` more of refilling: one token per
/// [`RATE_INTERVAL`], at most [`RATE_BURST`]. A count read from a host store
/// may be anything, so it is clamped first.
pub(crate) fn refill(tokens: f64, elapsed: Duration) -> f64 {
    let tokens = if tokens.is_finite() {
        tokens.clamp(0.0, RATE_BURST)
    } else {
        0.0
    };
    (tokens + elapsed.as_secs_f64() / RATE_INTERVAL.as_secs_f64()).min(RATE_BURST)
}

/// How long a bucket of `tokens` (from [`refill`]) waits for a whole one.
pub(crate) fn until_a_token(tokens: f64) -> Duration {
    RATE_INTERVAL.mul_f64((1.0 - tokens).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    struct V(SystemTime);
    impl Expiring for V {
        fn expiry(&self) -> SystemTime {
            self.0
        }
    }

    fn key() -> CacheKey {
        CacheKey {
            name: Instance::parse("p:r:i").unwrap(),
            iam: false,
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(50)
    }

    #[test]
    fn freshness_keeps_a_four_minute_buffer() {
        let now = SystemTime::now();
        assert!(is_fresh(now + Duration::from_secs(241), now));
        assert!(!is_fresh(now + Duration::from_secs(240), now));
        assert!(!is_fresh(now + Duration::from_secs(60), now));
        assert!(!is_fresh(now - Duration::from_secs(1), now));
    }

    #[test]
    fn reuses_until_the_buffer_then_refreshes() {
        let cache = Cache::new();
        let calls = Cell::new(0);
        let hour = || {
            calls.set(calls.get() + 1);
            Ok(V(SystemTime::now() + Duration::from_secs(3600)))
        };
        let (_, cached) = cache.get_or_refresh(&key(), soon(), hour).unwrap();
        assert!(!cached);
        let (_, cached) = cache.get_or_refresh(&key(), soon(), hour).unwrap();
        assert!(cached);
        assert_eq!(calls.get(), 1);

        // A value inside the buffer is refreshed on the next get.
        let other = CacheKey { iam: true, ..key() };
        let short = || Ok(V(SystemTime::now() + Duration::from_secs(200)));
        cache.get_or_refresh(&other, soon(), short).unwrap();
        let (_, cached) = cache.get_or_refresh(&other, soon(), hour).unwrap();
        assert!(!cached);
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn concurrent_callers_share_one_refresh() {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::Barrier;

        let cache = Arc::new(Cache::new());
        let calls = Arc::new(AtomicU32::new(0));
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, calls, barrier) = (cache.clone(), calls.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let deadline = Instant::now() + Duration::from_secs(5);
                    cache
                        .get_or_refresh(&key(), deadline, || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            // Long enough that every other caller arrives meanwhile.
                            std::thread::sleep(Duration::from_millis(200));
                            Ok(V(SystemTime::now() + Duration::from_secs(3600)))
                        })
                        .map(|(_, cached)| cached)
                        .unwrap()
                })
            })
            .collect();
        let cached: Vec<bool> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(cached.iter().filter(|c| !**c).count(), 1, "{cached:?}");
    }

    #[test]
    fn invalidate_forces_exactly_one_refresh() {
        let cache = Cache::new();
        let calls = Cell::new(0);
        let hour = || {
            calls.set(calls.get() + 1);
            Ok(V(SystemTime::now() + Duration::from_secs(3600)))
        };
        cache.get_or_refresh(&key(), soon(), hour).unwrap();
        cache.invalidate(&key());
        let (_, cached) = cache.get_or_refresh(&key(), soon(), hour).unwrap();
        assert!(!cached);
        let (_, cached) = cache.get_or_refresh(&key(), soon(), hour).unwrap();
        assert!(cached);
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn a_failed_refresh_is_not_cached() {
        let cache: Cache<V> = Cache::new();
        let r = cache.get_or_refresh(&key(), soon(), || Err(Error::Dial("x".into())));
        assert!(r.is_err());
        let (_, cached) = cache
            .get_or_refresh(&key(), soon(), || {
                Ok(V(SystemTime::now() + Duration::from_secs(3600)))
            })
            .unwrap();
        assert!(!cached);
    }

    #[test]
    fn third_refresh_in_a_burst_is_rate_limited_with_retry_after() {
        let cache = Cache::new();
        let stale = || Ok(V(SystemTime::now()));
        cache.get_or_refresh(&key(), soon(), stale).unwrap();
        cache.get_or_refresh(&key(), soon(), stale).unwrap();
        match cache.get_or_refresh(&key(), soon(), stale) {
            Err(Error::RateLimited {
                retry_after,
                instance,
                last_error,
            }) => {
                assert_eq!(instance, "p:r:i");
                assert_eq!(last_error, None, "both refreshes succeeded");
                assert!(
                    retry_after > Duration::from_secs(29) && retry_after <= Duration::from_secs(30)
                );
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn limiter_refills_one_token_per_thirty_seconds_up_to_two() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(t0);
        assert!(l.try_acquire(t0).is_ok());
        assert!(l.try_acquire(t0).is_ok());
        assert_eq!(l.try_acquire(t0), Err(Duration::from_secs(30)));
        let wait = l.try_acquire(t0 + Duration::from_secs(10)).unwrap_err();
        assert!((wait.as_secs_f64() - 20.0).abs() < 1e-6);
        assert!(l.try_acquire(t0 + Duration::from_secs(30)).is_ok());
        // A long idle period refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(3600);
        assert!(l.try_acquire(later).is_ok());
        assert!(l.try_acquire(later).is_ok());
        assert!(l.try_acquire(later).is_err());
    }

    #[test]
    fn a_drained_limiter_waits_a_whole_interval() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(t0);
        l.drain(t0);
        assert_eq!(l.try_acquire(t0), Err(Duration::from_secs(30)));
        let wait = l.try_acquire(t0 + Duration::from_secs(29)).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6);
        assert!(l.try_acquire(t0 + Duration::from_secs(30)).is_ok());
        assert!(l.try_acquire(t0 + Duration::from_secs(30)).is_err());
    }

    fn quota_error() -> Error {
        Error::QuotaExceeded(crate::ApiError {
            call: "connectSettings for p:r:i".into(),
            status: 429,
            code: "RESOURCE_EXHAUSTED".into(),
            message: "Quota exceeded".into(),
        })
    }

    #[test]
    fn a_quota_error_holds_the_next_refresh_and_is_named_when_limited() {
        let cache: Cache<V> = Cache::new();
        let calls = Cell::new(0);
        let quota = || {
            calls.set(calls.get() + 1);
            Err(quota_error())
        };
        let first = cache.get_or_refresh(&key(), soon(), quota).map(|_| ());
        assert_eq!(first, Err(quota_error()));
        // The burst had a second token, but after a quota error nothing is
        // called again within the interval.
        for _ in 0..9 {
            match cache.get_or_refresh(&key(), soon(), quota) {
                Err(Error::RateLimited {
                    retry_after,
                    last_error,
                    ..
                }) => {
                    assert!(retry_after > Duration::from_secs(29), "{retry_after:?}");
                    assert_eq!(last_error.as_deref(), Some(&quota_error()));
                }
                other => panic!("{:?}", other.map(|_| ())),
            }
        }
        assert_eq!(calls.get(), 1);
        let text = Error::RateLimited {
            instance: "p:r:i".into(),
            retry_after: Duration::from_secs(30),
            last_error: Some(Box::new(quota_error())),
        }
        .to_string();
        assert!(
            text.contains("retry in 30 s")
                && text.contains("the last refresh failed: Admin API quota exhausted"),
            "{text}"
        );
    }

    #[test]
    fn other_refresh_errors_keep_the_burst() {
        let cache: Cache<V> = Cache::new();
        let failed = || Err(Error::InstanceMetadata("x".into()));
        assert!(cache.get_or_refresh(&key(), soon(), failed).is_err());
        // The second token of the burst is still there, and a success
        // forgets the failure.
        let (_, cached) = cache
            .get_or_refresh(&key(), soon(), || Ok(V(SystemTime::now())))
            .unwrap();
        assert!(!cached);
        match cache.get_or_refresh(&key(), soon(), || Ok(V(SystemTime::now()))) {
            Err(Error::RateLimited { last_error, .. }) => assert_eq!(last_error, None),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
