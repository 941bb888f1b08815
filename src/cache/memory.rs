//! The lazy cache in the connector's memory: connection info is fetched
//! only when a connect needs it, never in the background.
//!
//! Each instance has a slot whose lock is held across a fetch, so callers
//! that arrive meanwhile wait for it instead of starting their own (single
//! flight). Info is reused until [`REFRESH_BUFFER`](super::REFRESH_BUFFER)
//! before it expires and dropped after a failed dial; fetches are
//! rate-limited per instance (`rate_limit`), as Google's connectors do.
//! At most [`MAX_INSTANCES`] instances are kept; the one used longest ago
//! makes room for a new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use super::{is_fresh, CacheKey, Found, Origin, Prepared, Source};
use crate::error::Error;
use crate::rate_limit::{Limiter, Outcome};

/// How many instances (and IAM settings) one connector keeps info for: far
/// more than an app connects to, few enough that a caller cycling through
/// names cannot grow the connector without bound.
pub(crate) const MAX_INSTANCES: usize = 256;

/// The lazy cache in front of `inner`.
pub(crate) struct MemoryCache {
    slots: Mutex<Slots>,
    capacity: usize,
    inner: Box<dyn Source>,
}

/// Each instance's slot, with when it was last asked for (a counter).
#[derive(Default)]
struct Slots {
    map: HashMap<CacheKey, (Arc<Mutex<Slot>>, u64)>,
    uses: u64,
}

struct Slot {
    current: Option<Arc<Prepared>>,
    limiter: Limiter,
    /// Why the last fetch failed, until one succeeds: a rate-limited caller
    /// is told the cause.
    last_error: Option<Error>,
}

impl MemoryCache {
    pub(crate) fn new(inner: Box<dyn Source>) -> Self {
        Self::with_capacity(inner, MAX_INSTANCES)
    }

    fn with_capacity(inner: Box<dyn Source>, capacity: usize) -> Self {
        Self {
            slots: Mutex::default(),
            capacity: capacity.max(1),
            inner,
        }
    }

    fn slot(&self, key: &CacheKey) -> Arc<Mutex<Slot>> {
        let mut slots = lock(&self.slots);
        slots.uses += 1;
        let now = slots.uses;
        if !slots.map.contains_key(key) && slots.map.len() >= self.capacity {
            // A caller still holding the evicted slot keeps it until done.
            let oldest = slots
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                slots.map.remove(&oldest);
            }
        }
        let (slot, used) = slots.map.entry(key.clone()).or_insert_with(|| {
            let slot = Slot {
                current: None,
                limiter: Limiter::new(Instant::now()),
                last_error: None,
            };
            (Arc::new(Mutex::new(slot)), now)
        });
        *used = now;
        slot.clone()
    }
}

impl Source for MemoryCache {
    /// The cached info if it is good for at least the refresh buffer more,
    /// else what `inner` gives (which is then cached), if the rate limit
    /// allows a fetch before `deadline`.
    fn get(&self, key: &CacheKey, deadline: Instant) -> Result<Found, Error> {
        let slot = self.slot(key);
        // Held across the fetch: single flight.
        let mut slot = lock(&slot);
        if let Some(p) = &slot.current {
            if is_fresh(p.info.expiry, SystemTime::now()) {
                return Ok(Found {
                    prepared: p.clone(),
                    origin: Origin::Memory,
                });
            }
        }
        loop {
            match slot.limiter.try_acquire(Instant::now()) {
                Ok(()) => break,
                Err(wait) if Instant::now() + wait < deadline => std::thread::sleep(wait),
                Err(wait) => {
                    return Err(Error::rate_limited(
                        &key.name,
                        wait,
                        slot.last_error.clone(),
                    ))
                }
            }
        }
        let result = self.inner.get(key, deadline);
        let outcome = match &result {
            Ok(found) => {
                slot.current = Some(found.prepared.clone());
                slot.last_error = None;
                Outcome::Refreshed
            }
            Err(e) => {
                slot.last_error = Some(e.clone());
                e.refresh_outcome()
            }
        };
        slot.limiter.ended(outcome, Instant::now());
        result
    }

    /// Drops the slot's info and tells `inner`. The rate limiter is kept, so
    /// a broken instance cannot hammer the Admin API.
    fn invalidate(&self, key: &CacheKey) {
        let slot = lock(&self.slots).map.get(key).map(|(s, _)| s.clone());
        if let Some(slot) = slot {
            lock(&slot).current = None;
        }
        self.inner.invalidate(key);
    }
}

/// A poisoned lock only means another caller panicked mid-fetch; the slot
/// is still consistent (values are swapped in whole).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::{ApiError, ErrorKind};
    use crate::testing::{cache_key, ScriptedSource};

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(50)
    }

    fn origin(r: Result<Found, Error>) -> Origin {
        r.unwrap().origin
    }

    #[test]
    fn reuses_until_the_buffer_then_refreshes() {
        let inner = ScriptedSource::lasting(Duration::from_secs(3600));
        let cache = MemoryCache::new(Box::new(inner.clone()));
        assert!(matches!(
            origin(cache.get(&cache_key(), soon())),
            Origin::Refresh(_)
        ));
        assert_eq!(origin(cache.get(&cache_key(), soon())), Origin::Memory);
        assert_eq!(inner.gets(), 1);

        // Info inside the buffer is fetched again on the next get.
        let short = ScriptedSource::lasting(Duration::from_secs(200));
        let cache = MemoryCache::new(Box::new(short.clone()));
        cache.get(&cache_key(), soon()).unwrap();
        assert!(matches!(
            origin(cache.get(&cache_key(), soon())),
            Origin::Refresh(_)
        ));
        assert_eq!(short.gets(), 2);
    }

    #[test]
    fn what_the_store_gave_is_memory_the_next_time() {
        let inner = ScriptedSource::lasting(Duration::from_secs(3600)).stored();
        let cache = MemoryCache::new(Box::new(inner));
        assert_eq!(origin(cache.get(&cache_key(), soon())), Origin::Store);
        assert_eq!(origin(cache.get(&cache_key(), soon())), Origin::Memory);
    }

    #[test]
    fn concurrent_callers_share_one_fetch() {
        use std::sync::Barrier;

        let inner = ScriptedSource::lasting(Duration::from_secs(3600))
            // Long enough that every other caller arrives meanwhile.
            .taking(Duration::from_millis(200));
        let cache = Arc::new(MemoryCache::new(Box::new(inner.clone())));
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, barrier) = (cache.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let deadline = Instant::now() + Duration::from_secs(5);
                    cache.get(&cache_key(), deadline).unwrap().origin
                })
            })
            .collect();
        let origins: Vec<Origin> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(inner.gets(), 1);
        let memory = origins.iter().filter(|o| **o == Origin::Memory).count();
        assert_eq!(memory, 7, "{origins:?}");
    }

    #[test]
    fn invalidate_forces_exactly_one_fetch_and_reaches_the_inner_source() {
        let inner = ScriptedSource::lasting(Duration::from_secs(3600));
        let cache = MemoryCache::new(Box::new(inner.clone()));
        cache.get(&cache_key(), soon()).unwrap();
        cache.invalidate(&cache_key());
        assert_eq!(inner.invalidations(), 1);
        assert!(matches!(
            origin(cache.get(&cache_key(), soon())),
            Origin::Refresh(_)
        ));
        assert_eq!(origin(cache.get(&cache_key(), soon())), Origin::Memory);
        assert_eq!(inner.gets(), 2);
    }

    #[test]
    fn a_failed_fetch_is_not_cached() {
        let inner = ScriptedSource::lasting(Duration::from_secs(3600));
        inner.fail_next(Error::dial("x"));
        let cache = MemoryCache::new(Box::new(inner.clone()));
        assert_eq!(
            cache.get(&cache_key(), soon()).unwrap_err().kind(),
            ErrorKind::Dial
        );
        assert!(matches!(
            origin(cache.get(&cache_key(), soon())),
            Origin::Refresh(_)
        ));
    }

    #[test]
    fn third_fetch_in_a_burst_is_rate_limited_with_retry_after() {
        let inner = ScriptedSource::lasting(Duration::ZERO);
        let cache = MemoryCache::new(Box::new(inner.clone()));
        cache.get(&cache_key(), soon()).unwrap();
        cache.get(&cache_key(), soon()).unwrap();
        let e = cache.get(&cache_key(), soon()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert_eq!(e.instance(), Some(cache_key().name.to_string().as_str()));
        assert!(e.last_error().is_none(), "both fetches succeeded");
        let wait = e.retry_after().unwrap();
        assert!(wait > Duration::from_secs(29) && wait <= Duration::from_secs(30));
        assert_eq!(inner.gets(), 2);
    }

    fn quota_error() -> Error {
        Error::api(ApiError {
            call: "connectSettings for p:r:i".into(),
            status: 429,
            code: "RESOURCE_EXHAUSTED".into(),
            message: "Quota exceeded".into(),
        })
    }

    #[test]
    fn a_quota_error_holds_the_next_fetch_and_is_named_when_limited() {
        let inner = ScriptedSource::lasting(Duration::from_secs(3600));
        inner.fail_always(quota_error());
        let cache = MemoryCache::new(Box::new(inner.clone()));
        let first = cache.get(&cache_key(), soon()).unwrap_err();
        assert_eq!(first.kind(), ErrorKind::QuotaExceeded);
        // The burst had a second token, but after a quota error nothing is
        // fetched again within the interval.
        for _ in 0..9 {
            let e = cache.get(&cache_key(), soon()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::RateLimited);
            assert!(e.retry_after().unwrap() > Duration::from_secs(29), "{e:?}");
            assert_eq!(
                e.last_error().map(Error::kind),
                Some(ErrorKind::QuotaExceeded)
            );
        }
        assert_eq!(inner.gets(), 1);
    }

    #[test]
    fn other_fetch_errors_keep_the_burst() {
        let inner = ScriptedSource::lasting(Duration::ZERO);
        inner.fail_next(Error::instance_metadata("x"));
        let cache = MemoryCache::new(Box::new(inner.clone()));
        assert!(cache.get(&cache_key(), soon()).is_err());
        // The second token of the burst is still there, and a success
        // forgets the failure.
        assert!(matches!(
            origin(cache.get(&cache_key(), soon())),
            Origin::Refresh(_)
        ));
        let e = cache.get(&cache_key(), soon()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert!(e.last_error().is_none());
    }

    #[test]
    fn the_instance_used_longest_ago_makes_room() {
        let inner = ScriptedSource::lasting(Duration::from_secs(3600));
        let cache = MemoryCache::with_capacity(Box::new(inner.clone()), 2);
        let key = |i: &str| CacheKey {
            name: crate::instance::Instance::parse(&format!("proj:us-central1:{i}")).unwrap(),
            iam: false,
        };
        let from = |i: &str| origin(cache.get(&key(i), soon()));
        assert!(matches!(from("a"), Origin::Refresh(_)));
        assert!(matches!(from("b"), Origin::Refresh(_)));
        assert_eq!(from("a"), Origin::Memory);
        // A third instance: "b", used longest ago, goes.
        assert!(matches!(from("c"), Origin::Refresh(_)));
        assert_eq!(lock(&cache.slots).map.len(), 2);
        assert_eq!(from("a"), Origin::Memory);
        assert!(matches!(from("b"), Origin::Refresh(_)));
        assert_eq!(inner.gets(), 4);
    }
}
