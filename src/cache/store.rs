//! The cross-request cache: connection info kept in a host key-value store
//! (`wasi:keyvalue`, Spin's key-value store), so that a fresh component
//! instance, which serverless hosts make for every request, reuses the last
//! certificate instead of generating a key and calling the Admin API.
//!
//! What is stored, per instance and IAM setting ([`stored`](super::stored)):
//! the addresses, the server CA certificates and identity rule, the client
//! certificate chain and its expiry, the metadata exchange to run (for AlloyDB
//! with its login token), the public key, and, unless `store_private_key` is
//! off, the RSA private key. The key and the token are short-lived credentials
//! (an hour): the store must be as private as the app's own secrets. Without
//! the private key in the store, an entry serves only instances whose
//! connector has the same key (`rsa_private_key`, e.g. from a secret); others
//! generate their own key and certificate.
//!
//! An entry that does not decode, is of another format version, is within
//! [`REFRESH_BUFFER`](crate::REFRESH_BUFFER) of expiry, or whose key is not at
//! hand is ignored and refreshed over. A failing store never fails a connect:
//! it only costs the refresh it could have saved.
//!
//! Refreshes are single-flight across instances as far as the store allows:
//! with an atomic increment, the first instance to take the lease refreshes
//! while the others wait (at most [`LEASE_WAIT`]) for the entry it writes;
//! without one, every instance that misses refreshes.
//!
//! The Admin API's refusals (an error status, quota included) are shared too
//! (`rate_limit`): each connector's own rate limiter dies with its instance,
//! so without them a broken instance would cost a refresh on every request.
//! While the shared bucket is empty, instances fail at once with a rate-limit
//! error naming the last refusal.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::stored::{entry_key, unix_ms, Entry, Refusals};
use super::{CacheKey, Found, Origin, Prepared, Source};
use crate::connection_info::ConnectionInfo;
use crate::error::Error;
use crate::key::{ClientKey, KeySlot};
use crate::store::Store;

/// How long an instance waits for another's refresh before doing its own.
pub const LEASE_WAIT: Duration = Duration::from_secs(5);
/// How often a waiting instance looks for the entry.
const POLL: Duration = Duration::from_millis(25);

/// The host store in front of `inner` (the refresh).
pub(crate) struct HostStore {
    pub store: Arc<dyn Store>,
    pub store_private_key: bool,
    /// The connector's key: an entry without its private key serves only it.
    pub keys: Arc<KeySlot>,
    /// The connector's user agent, for exchanges made again from entries.
    pub user_agent: String,
    pub inner: Box<dyn Source>,
}

impl Source for HostStore {
    /// A fresh stored entry for `key`, else what `inner` gives, which is then
    /// stored; with a lease so concurrent instances refresh once.
    fn get(&self, key: &CacheKey, deadline: Instant) -> Result<Found, Error> {
        let entry_key = entry_key(key);
        if let Some(found) = self.load(key, &entry_key) {
            return Ok(found);
        }
        let refusals_key = format!("{entry_key}/refusals");
        let refused = self.refusals(&refusals_key);
        if let Some(r) = &refused {
            let bucket = r.bucket_at(SystemTime::now());
            if !bucket.allows() {
                // Not slept off, unlike the connector's own limiter: the
                // Admin API said no, and a request should not hang on it.
                return Err(Error::rate_limited(
                    &key.name,
                    bucket.wait(),
                    Some(r.error()),
                ));
            }
        }
        let lease_key = format!("{entry_key}/lease");
        let leased = match self.store.increment(&lease_key, 1) {
            Ok(Some(1)) => true,
            Ok(Some(_)) => {
                // Another instance is refreshing: wait for its entry, or
                // share its refusal.
                let waiting_since = unix_ms(SystemTime::now());
                let until = deadline.min(Instant::now() + LEASE_WAIT);
                while Instant::now() + POLL < until {
                    std::thread::sleep(POLL);
                    if let Some(found) = self.load(key, &entry_key) {
                        return Ok(found);
                    }
                    if let Some(r) = self.refusals(&refusals_key) {
                        if r.at_unix_ms >= waiting_since {
                            return Err(r.error());
                        }
                    }
                }
                // It died or is slow: take over, and free the lease for later.
                true
            }
            Ok(None) | Err(_) => false,
        };
        let result = self.inner.get(key, deadline);
        match &result {
            Ok(found) => {
                self.save(&entry_key, &found.prepared.info, &found.prepared.key);
                if refused.is_some() {
                    let _ = self.store.delete(&refusals_key);
                }
            }
            Err(e) => {
                // Read again: another instance may have been refused meanwhile.
                let before = self.refusals(&refusals_key);
                let after = Refusals::after(before.as_ref(), e, SystemTime::now());
                if let Some(bytes) = after.as_ref().and_then(Refusals::encode) {
                    let _ = self.store.set(&refusals_key, &bytes);
                }
            }
        }
        if leased {
            let _ = self.store.delete(&lease_key);
        }
        result
    }

    /// Drops the stored entry, so no instance reuses it.
    fn invalidate(&self, key: &CacheKey) {
        let _ = self.store.delete(&entry_key(key));
        self.inner.invalidate(key);
    }
}

impl HostStore {
    fn load(&self, key: &CacheKey, entry_key: &str) -> Option<Found> {
        let bytes = self.store.get(entry_key).ok()??;
        let entry: Entry = serde_json::from_slice(&bytes).ok()?;
        let (info, client_key) = entry.decode(
            key.name.service(),
            &self.user_agent,
            &self.keys,
            SystemTime::now(),
        )?;
        let prepared = Prepared::new(info, client_key, &key.name).ok()?;
        Some(Found {
            prepared: Arc::new(prepared),
            origin: Origin::Store,
        })
    }

    fn refusals(&self, refusals_key: &str) -> Option<Refusals> {
        Refusals::decode(&self.store.get(refusals_key).ok()??)
    }

    fn save(&self, entry_key: &str, info: &ConnectionInfo, key: &ClientKey) {
        let entry = Entry::encode(info, key, self.store_private_key);
        if let Ok(bytes) = serde_json::to_vec(&entry) {
            let _ = self.store.set(entry_key, &bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::testing::{alloydb_key, client_key_copy, refused, MemoryStore, ScriptedSource};

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    /// A fresh instance's view of `store`: an empty key slot, over `inner`.
    fn instance(store: &Arc<MemoryStore>, inner: &ScriptedSource, private_key: bool) -> HostStore {
        HostStore {
            store: store.clone(),
            store_private_key: private_key,
            keys: Arc::new(KeySlot::default()),
            user_agent: "ua".into(),
            inner: Box::new(inner.clone()),
        }
    }

    /// A connect's lookup by a fresh instance keeping keys in `store`.
    fn fresh_get(store: &Arc<MemoryStore>, refresh: &ScriptedSource) -> Found {
        instance(store, refresh, true)
            .get(&alloydb_key(), soon())
            .unwrap()
    }

    #[test]
    fn a_second_instance_reuses_the_first_ones_refresh() {
        let store = Arc::new(MemoryStore::default());
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        assert!(matches!(
            fresh_get(&store, &refresh).origin,
            Origin::Refresh(_)
        ));
        let found = fresh_get(&store, &refresh);
        assert_eq!(found.origin, Origin::Store);
        assert_eq!(refresh.gets(), 1);
        let info = &found.prepared.info;
        assert_eq!(info.client_chain.len(), 2);
        assert_eq!(info.addresses.private, Some("10.0.0.2".parse().unwrap()));
        let record = info.exchange.as_ref().unwrap().record();
        assert_eq!(record.login_token.unwrap().expose(), "login-token");
        assert_eq!(found.prepared.key.spki_der, client_key_copy().spki_der);
        // No lease is left behind.
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn reading_an_entry_leaves_the_connectors_key_alone() {
        let store = Arc::new(MemoryStore::default());
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        fresh_get(&store, &refresh);
        let second = instance(&store, &refresh, true);
        assert_eq!(
            second.get(&alloydb_key(), soon()).unwrap().origin,
            Origin::Store
        );
        // Adopting the stored key is the connector's decision, not the store's.
        assert!(second.keys.current().is_none());
    }

    #[test]
    fn without_the_private_key_only_the_same_key_can_reuse_an_entry() {
        let store = Arc::new(MemoryStore::default());
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        instance(&store, &refresh, false)
            .get(&alloydb_key(), soon())
            .unwrap();
        // Another instance without the key: the entry is of no use.
        let found = instance(&store, &refresh, false)
            .get(&alloydb_key(), soon())
            .unwrap();
        assert!(matches!(found.origin, Origin::Refresh(_)));
        // The same key (as from rsa_private_key): reused.
        let same = instance(&store, &refresh, false);
        same.keys.offer(Arc::new(client_key_copy()));
        assert_eq!(
            same.get(&alloydb_key(), soon()).unwrap().origin,
            Origin::Store
        );
        assert_eq!(refresh.gets(), 2);
    }

    #[test]
    fn a_corrupt_entry_is_refreshed_over() {
        let store = Arc::new(MemoryStore::default());
        let k = entry_key(&alloydb_key());
        store.set(&k, b"{not json").unwrap();
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        assert!(matches!(
            fresh_get(&store, &refresh).origin,
            Origin::Refresh(_)
        ));
        // And the refresh replaced it with a good entry.
        assert_eq!(fresh_get(&store, &refresh).origin, Origin::Store);
    }

    #[test]
    fn an_invalidated_entry_is_not_reused() {
        let store = Arc::new(MemoryStore::default());
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        let first = instance(&store, &refresh, true);
        first.get(&alloydb_key(), soon()).unwrap();
        first.invalidate(&alloydb_key());
        assert_eq!(refresh.invalidations(), 1);
        assert!(matches!(
            fresh_get(&store, &refresh).origin,
            Origin::Refresh(_)
        ));
    }

    #[test]
    fn concurrent_instances_refresh_once_with_atomics() {
        for (no_atomics, want) in [(false, 1), (true, 4)] {
            let store = Arc::new(MemoryStore {
                no_atomics,
                ..MemoryStore::default()
            });
            let refresh = ScriptedSource::alloydb(Duration::from_secs(3600))
                .taking(Duration::from_millis(200));
            let barrier = Arc::new(std::sync::Barrier::new(4));
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let (barrier, cache) = (barrier.clone(), instance(&store, &refresh, true));
                    std::thread::spawn(move || {
                        barrier.wait();
                        cache.get(&alloydb_key(), soon()).unwrap();
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(refresh.gets(), want, "no_atomics={no_atomics}");
        }
    }

    /// Connects, each by a fresh instance on `store`, while every refresh
    /// fails with `error`: how many refreshed, and the last connect's error.
    fn fresh_instances_failing(store: &Arc<MemoryStore>, n: u32, error: &Error) -> (u32, Error) {
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        refresh.fail_always(error.clone());
        let mut last = None;
        for _ in 0..n {
            let e = instance(store, &refresh, true)
                .get(&alloydb_key(), soon())
                .unwrap_err();
            last = Some(e);
        }
        (refresh.gets(), last.unwrap())
    }

    #[test]
    fn admin_api_refusals_are_rate_limited_across_instances() {
        let store = Arc::new(MemoryStore::default());
        let denied = refused(403, "PERMISSION_DENIED");
        let (refreshes, last) = fresh_instances_failing(&store, 10, &denied);
        // Burst 2, then the bucket is empty for fresh instances too.
        assert_eq!(refreshes, 2);
        assert_eq!(last.kind(), ErrorKind::RateLimited);
        assert_eq!(
            last.last_error().and_then(Error::api_error),
            denied.api_error()
        );
        let wait = last.retry_after().unwrap();
        assert!(wait > Duration::from_secs(25), "{wait:?}");
        assert!(wait <= Duration::from_secs(30), "{wait:?}");

        // A quota refusal empties the bucket at once.
        let store = Arc::new(MemoryStore::default());
        let quota = refused(429, "RESOURCE_EXHAUSTED");
        let (refreshes, last) = fresh_instances_failing(&store, 10, &quota);
        assert_eq!(refreshes, 1);
        assert_eq!(
            last.last_error().map(Error::kind),
            Some(ErrorKind::QuotaExceeded)
        );
    }

    #[test]
    fn other_refresh_failures_are_left_to_each_connector() {
        let store = Arc::new(MemoryStore::default());
        let error = Error::credentials("the token endpoint refused the key");
        let (refreshes, last) = fresh_instances_failing(&store, 5, &error);
        assert_eq!(refreshes, 5);
        assert_eq!(last.kind(), ErrorKind::Credentials);
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn the_bucket_refills_and_a_success_clears_it() {
        let store = Arc::new(MemoryStore::default());
        fresh_instances_failing(&store, 3, &refused(404, "NOT_FOUND"));
        let refusals_key = format!("{}/refusals", entry_key(&alloydb_key()));
        // Age the refusal by one interval: one more refresh is allowed.
        let mut r: serde_json::Value =
            serde_json::from_slice(&store.get(&refusals_key).unwrap().unwrap()).unwrap();
        assert!(r["tokens"].as_f64().unwrap() < 0.01, "{r}");
        r["at_unix_ms"] = (r["at_unix_ms"].as_u64().unwrap() - 31_000).into();
        store.set(&refusals_key, r.to_string().as_bytes()).unwrap();
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        assert!(matches!(
            fresh_get(&store, &refresh).origin,
            Origin::Refresh(_)
        ));
        assert!(store.get(&refusals_key).unwrap().is_none());
    }

    #[test]
    fn a_failing_store_only_costs_the_refresh() {
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        let broken = HostStore {
            store: Arc::new(MemoryStore {
                broken: true,
                ..MemoryStore::default()
            }),
            store_private_key: true,
            keys: Arc::new(KeySlot::default()),
            user_agent: "ua".into(),
            inner: Box::new(refresh.clone()),
        };
        for _ in 0..2 {
            let found = broken.get(&alloydb_key(), soon()).unwrap();
            assert!(matches!(found.origin, Origin::Refresh(_)));
        }
        assert_eq!(refresh.gets(), 2);
    }
}
