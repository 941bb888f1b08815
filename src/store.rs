//! The cross-request cache: connection info kept in a host key-value store
//! (`wasi:keyvalue`, Spin's key-value store), so that a fresh component
//! instance, which serverless hosts make for every request, reuses the last
//! certificate instead of generating a key and calling the Admin API.
//!
//! What is stored, per instance and IAM setting, as one JSON value: the
//! addresses, the server CA certificates and identity rule, the client
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
//! The Admin API's refusals (an error status, quota included) are shared too:
//! each connector's own rate limiter dies with its instance, so without them
//! a broken instance would cost a refresh on every request. Refused refreshes
//! spend a bucket in the store (burst 2, one per 30 s, emptied by a quota
//! error, as each connector's limiter); while it is empty, instances fail at
//! once with [`Error::RateLimited`] naming the last refusal. A successful
//! refresh clears it, and only refusals spend it, so healthy refreshes never
//! wait on it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::cache::{is_fresh, refill, until_a_token, CacheKey, RATE_BURST};
use crate::connection_info::{Addresses, ConnectionInfo, MdxKind, ServerIdentity};
use crate::credentials::Secret;
use crate::key::{ClientKey, KeySlot};
use crate::{ApiError, Error};

/// A host key-value store that outlives a component instance. Keys are at
/// most a few hundred bytes of `[A-Za-z0-9:/._@-]`; values a few KiB.
pub trait Store: Send + Sync {
    /// The value at `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Sets `key` to `value`.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String>;
    /// Removes `key` (absent is fine).
    fn delete(&self, key: &str) -> Result<(), String>;
    /// Atomically adds `delta` to the counter at `key` (absent counts as 0)
    /// and returns the new value; `Ok(None)` if the store has no atomics.
    fn increment(&self, key: &str, delta: u64) -> Result<Option<u64>, String> {
        let _ = (key, delta);
        Ok(None)
    }
}

/// The format of stored entries; another version is ignored.
const FORMAT: u32 = 1;
/// How long an instance waits for another's refresh before doing its own.
pub const LEASE_WAIT: Duration = Duration::from_secs(5);
/// How often a waiting instance looks for the entry.
const POLL: Duration = Duration::from_millis(25);

/// The connector's view of its store.
pub(crate) struct SharedCache {
    store: Arc<dyn Store>,
    store_private_key: bool,
}

/// Where a connect's connection info came from.
pub(crate) struct Found {
    pub info: ConnectionInfo,
    pub key: Arc<ClientKey>,
    /// From the store, written by another instance (or an earlier one).
    pub from_store: bool,
}

impl SharedCache {
    pub(crate) fn new(store: Arc<dyn Store>, store_private_key: bool) -> Self {
        Self {
            store,
            store_private_key,
        }
    }

    /// A fresh stored entry for `key`, else the result of `refresh`, which
    /// is then stored; with a lease so concurrent instances refresh once.
    pub(crate) fn get_or_refresh(
        &self,
        key: &CacheKey,
        keys: &KeySlot,
        deadline: Instant,
        refresh: impl FnOnce() -> Result<(ConnectionInfo, Arc<ClientKey>), Error>,
    ) -> Result<Found, Error> {
        let entry_key = entry_key(key);
        if let Some(found) = self.load(&entry_key, keys) {
            return Ok(found);
        }
        let refusals_key = format!("{entry_key}/refusals");
        let refused = self.refusals(&refusals_key);
        if let Some(r) = &refused {
            let tokens = r.tokens_at(SystemTime::now());
            if tokens < 1.0 {
                // Not slept off, unlike the connector's own limiter: the
                // Admin API said no, and a request should not hang on it.
                return Err(Error::RateLimited {
                    instance: key.name.to_string(),
                    retry_after: until_a_token(tokens),
                    last_error: Some(Box::new(r.error())),
                });
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
                    if let Some(found) = self.load(&entry_key, keys) {
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
        let result = refresh();
        match &result {
            Ok((info, client_key)) => {
                self.save(&entry_key, info, client_key);
                if refused.is_some() {
                    let _ = self.store.delete(&refusals_key);
                }
            }
            Err(e) => {
                // Read again: another instance may have been refused meanwhile.
                let before = self.refusals(&refusals_key);
                if let Some(r) = Refusals::after(before.as_ref(), e, SystemTime::now()) {
                    if let Ok(bytes) = serde_json::to_vec(&r) {
                        let _ = self.store.set(&refusals_key, &bytes);
                    }
                }
            }
        }
        if leased {
            let _ = self.store.delete(&lease_key);
        }
        result.map(|(info, key)| Found {
            info,
            key,
            from_store: false,
        })
    }

    /// Drops the stored entry (after a failed dial), so no instance reuses it.
    pub(crate) fn forget(&self, key: &CacheKey) {
        let _ = self.store.delete(&entry_key(key));
    }

    fn load(&self, entry_key: &str, keys: &KeySlot) -> Option<Found> {
        let bytes = self.store.get(entry_key).ok()??;
        let entry: Entry = serde_json::from_slice(&bytes).ok()?;
        let (info, key) = entry.decode(keys, SystemTime::now())?;
        keys.offer(key.clone());
        Some(Found {
            info,
            key,
            from_store: true,
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

/// `gcp-db-connector/v1/<instance>/<iam|native>`.
fn entry_key(key: &CacheKey) -> String {
    let auth = if key.iam { "iam" } else { "native" };
    format!("gcp-db-connector/v{FORMAT}/{}/{auth}", key.name)
}

/// Milliseconds since the Unix epoch (0 before it).
fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The Admin API's refusals of one instance's refreshes, shared by every
/// instance of the app (see the module's docs). The last refusal is kept as
/// the Admin API gave it, whose message has the call's token blanked out.
#[derive(Serialize, Deserialize)]
pub(crate) struct Refusals {
    format: u32,
    /// Refreshes left in the bucket at `at_unix_ms`.
    tokens: f64,
    /// When the last refresh was refused, in ms since the Unix epoch.
    at_unix_ms: u64,
    /// Whether it was refused for quota.
    quota: bool,
    call: String,
    status: u16,
    code: String,
    message: String,
}

impl Refusals {
    /// A record read back from the store, if it is one of this format.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let r: Self = serde_json::from_slice(bytes).ok()?;
        (r.format == FORMAT).then_some(r)
    }

    /// The bucket after `e` ended a refresh at `now`, if `e` is the Admin
    /// API's refusal (other failures, such as the token endpoint's or the
    /// network's, are left to each connector's own limiter).
    fn after(before: Option<&Self>, e: &Error, now: SystemTime) -> Option<Self> {
        let (api, quota) = match e {
            Error::AdminApi(api) => (api, false),
            Error::QuotaExceeded(api) => (api, true),
            _ => return None,
        };
        let tokens = if quota {
            0.0
        } else {
            before.map_or(RATE_BURST, |b| b.tokens_at(now)) - 1.0
        };
        Some(Self {
            format: FORMAT,
            tokens: tokens.max(0.0),
            at_unix_ms: unix_ms(now),
            quota,
            call: api.call.clone(),
            status: api.status,
            code: api.code.clone(),
            message: api.message.clone(),
        })
    }

    /// The refreshes the bucket allows at `now`. A refusal stamped later than
    /// `now` (another host's clock) has earned nothing yet.
    pub(crate) fn tokens_at(&self, now: SystemTime) -> f64 {
        let elapsed = UNIX_EPOCH
            .checked_add(Duration::from_millis(self.at_unix_ms))
            .and_then(|at| now.duration_since(at).ok());
        refill(self.tokens, elapsed.unwrap_or_default())
    }

    /// The last refusal, as the error its refresh returned.
    pub(crate) fn error(&self) -> Error {
        let api = ApiError {
            call: self.call.clone(),
            status: self.status,
            code: self.code.clone(),
            message: self.message.clone(),
        };
        if self.quota {
            Error::QuotaExceeded(api)
        } else {
            Error::AdminApi(api)
        }
    }
}

/// A stored [`ConnectionInfo`] and its key, DER in base64.
#[derive(Serialize, Deserialize)]
pub(crate) struct Entry {
    format: u32,
    expiry_unix_ms: u64,
    port: u16,
    public_ip: Option<IpAddr>,
    private_ip: Option<IpAddr>,
    psc_name: Option<String>,
    trust_anchors: Vec<String>,
    identity: StoredIdentity,
    client_chain: Vec<String>,
    mdx: StoredMdx,
    public_key: String,
    pub(crate) private_key: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum StoredIdentity {
    CloudSql {
        dns_name: Option<String>,
        common_name: String,
    },
    Address,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum StoredMdx {
    None,
    CloudSql,
    AlloyDb { token: String, iam: bool },
}

impl Entry {
    pub(crate) fn encode(info: &ConnectionInfo, key: &ClientKey, store_private_key: bool) -> Self {
        let der = |c: &CertificateDer<'_>| B64.encode(c.as_ref());
        Self {
            format: FORMAT,
            expiry_unix_ms: unix_ms(info.expiry),
            port: info.port,
            public_ip: info.addresses.public,
            private_ip: info.addresses.private,
            psc_name: info.addresses.psc.clone(),
            trust_anchors: info.trust_anchors.iter().map(der).collect(),
            identity: match &info.identity {
                ServerIdentity::CloudSql {
                    dns_name,
                    common_name,
                } => StoredIdentity::CloudSql {
                    dns_name: dns_name.clone(),
                    common_name: common_name.clone(),
                },
                ServerIdentity::Address => StoredIdentity::Address,
            },
            client_chain: info.client_chain.iter().map(der).collect(),
            mdx: match &info.mdx {
                MdxKind::None => StoredMdx::None,
                MdxKind::CloudSql => StoredMdx::CloudSql,
                MdxKind::AlloyDb { token, iam } => StoredMdx::AlloyDb {
                    token: token.expose().to_string(),
                    iam: *iam,
                },
            },
            public_key: B64.encode(&key.spki_der),
            private_key: store_private_key.then(|| B64.encode(key.pkcs8_der())),
        }
    }

    /// The entry as connection info and key, if it is of this format, fresh
    /// at `now`, well-formed, and its key is at hand (stored, or the one in
    /// `keys`).
    pub(crate) fn decode(
        self,
        keys: &KeySlot,
        now: SystemTime,
    ) -> Option<(ConnectionInfo, Arc<ClientKey>)> {
        if self.format != FORMAT {
            return None;
        }
        let expiry = UNIX_EPOCH + Duration::from_millis(self.expiry_unix_ms);
        if !is_fresh(expiry, now) {
            return None;
        }
        let public_key = B64.decode(&self.public_key).ok()?;
        let key = match &self.private_key {
            Some(pkcs8) => Arc::new(ClientKey::from_pkcs8_der(&B64.decode(pkcs8).ok()?).ok()?),
            None => keys.current()?,
        };
        if key.spki_der != public_key {
            return None;
        }
        let ders = |list: &[String]| -> Option<Vec<CertificateDer<'static>>> {
            list.iter()
                .map(|c| B64.decode(c).ok().map(CertificateDer::from))
                .collect()
        };
        let client_chain = ders(&self.client_chain)?;
        if client_chain.is_empty() {
            return None;
        }
        let info = ConnectionInfo {
            addresses: Addresses {
                public: self.public_ip,
                private: self.private_ip,
                psc: self.psc_name,
            },
            trust_anchors: ders(&self.trust_anchors)?,
            identity: match self.identity {
                StoredIdentity::CloudSql {
                    dns_name,
                    common_name,
                } => ServerIdentity::CloudSql {
                    dns_name,
                    common_name,
                },
                StoredIdentity::Address => ServerIdentity::Address,
            },
            client_chain,
            expiry,
            mdx: match self.mdx {
                StoredMdx::None => MdxKind::None,
                StoredMdx::CloudSql => MdxKind::CloudSql,
                StoredMdx::AlloyDb { token, iam } => MdxKind::AlloyDb {
                    token: Secret::new(token),
                    iam,
                },
            },
            port: self.port,
        };
        Some((info, key))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    use super::*;
    use crate::test_certs::{client_key, Ca};
    use crate::{certs, Instance};

    /// An in-memory store, optionally without atomics.
    #[derive(Default)]
    pub(crate) struct MemoryStore {
        pub map: Mutex<HashMap<String, Vec<u8>>>,
        pub no_atomics: bool,
    }

    impl Store for MemoryStore {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(self.map.lock().unwrap().get(key).cloned())
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
            self.map.lock().unwrap().insert(key.into(), value.into());
            Ok(())
        }
        fn delete(&self, key: &str) -> Result<(), String> {
            self.map.lock().unwrap().remove(key);
            Ok(())
        }
        fn increment(&self, key: &str, delta: u64) -> Result<Option<u64>, String> {
            if self.no_atomics {
                return Ok(None);
            }
            let mut map = self.map.lock().unwrap();
            let v = map
                .get(key)
                .and_then(|b| std::str::from_utf8(b).ok()?.parse::<u64>().ok())
                .unwrap_or(0)
                + delta;
            map.insert(key.into(), v.to_string().into_bytes());
            Ok(Some(v))
        }
    }

    fn cache_key() -> CacheKey {
        CacheKey {
            name: Instance::parse("projects/p/locations/r/clusters/c/instances/i").unwrap(),
            iam: true,
        }
    }

    fn info(minutes: i64) -> ConnectionInfo {
        let root = Ca::new("root.alloydb");
        let inter = root.intermediate("client.alloydb");
        let mut client_chain =
            certs::parse_pem_list(&inter.client_cert_pem(&client_key().spki_der, minutes)).unwrap();
        client_chain.push(inter.der());
        ConnectionInfo {
            addresses: Addresses {
                public: None,
                private: Some("10.0.0.2".parse().unwrap()),
                psc: Some("x.alloydb-psc.goog".into()),
            },
            trust_anchors: vec![root.der()],
            identity: ServerIdentity::Address,
            client_chain,
            expiry: SystemTime::now() + Duration::from_secs(60 * minutes.max(0) as u64),
            mdx: MdxKind::AlloyDb {
                token: Secret::new("login-token".into()),
                iam: true,
            },
            port: 5433,
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    fn key_of(k: &ClientKey) -> Arc<ClientKey> {
        Arc::new(ClientKey::from_pkcs8_der(k.pkcs8_der()).unwrap())
    }

    #[test]
    fn a_second_instance_reuses_the_first_ones_refresh() {
        let store = Arc::new(MemoryStore::default());
        let refreshes = AtomicU32::new(0);
        let refresh = || {
            refreshes.fetch_add(1, Ordering::SeqCst);
            Ok((info(60), key_of(client_key())))
        };

        let first = SharedCache::new(store.clone(), true);
        let found = first
            .get_or_refresh(&cache_key(), &KeySlot::default(), soon(), refresh)
            .unwrap();
        assert!(!found.from_store);

        // A fresh instance: empty key slot, same store.
        let keys = KeySlot::default();
        let second = SharedCache::new(store.clone(), true);
        let found = second
            .get_or_refresh(&cache_key(), &keys, soon(), refresh)
            .unwrap();
        assert!(found.from_store);
        assert_eq!(refreshes.load(Ordering::SeqCst), 1);
        assert_eq!(found.info.client_chain.len(), 2);
        assert_eq!(
            found.info.addresses.private,
            Some("10.0.0.2".parse().unwrap())
        );
        assert!(
            matches!(&found.info.mdx, MdxKind::AlloyDb { token, iam: true } if token.expose() == "login-token")
        );
        // The stored key now serves this instance's own refreshes too.
        assert_eq!(keys.current().unwrap().spki_der, client_key().spki_der);
        // No lease is left behind.
        assert_eq!(store.map.lock().unwrap().len(), 1);
    }

    #[test]
    fn without_the_private_key_only_the_same_key_can_reuse_an_entry() {
        let store = Arc::new(MemoryStore::default());
        let cache = SharedCache::new(store.clone(), false);
        cache
            .get_or_refresh(&cache_key(), &KeySlot::default(), soon(), || {
                Ok((info(60), key_of(client_key())))
            })
            .unwrap();
        let stored =
            String::from_utf8(store.map.lock().unwrap().values().next().unwrap().clone()).unwrap();
        assert!(stored.contains("\"private_key\":null"), "{stored}");

        // Another key: the entry is of no use, so it refreshes.
        let other = KeySlot::default();
        let r = cache.get_or_refresh(&cache_key(), &other, soon(), || {
            Err(Error::Dial("refreshed".into()))
        });
        assert!(matches!(r, Err(Error::Dial(_))));
        // The same key (as from rsa_private_key): reused.
        let same = KeySlot::with_key(ClientKey::from_pkcs8_der(client_key().pkcs8_der()).unwrap());
        let found = cache
            .get_or_refresh(&cache_key(), &same, soon(), || unreachable!())
            .unwrap();
        assert!(found.from_store);
    }

    #[test]
    fn corrupt_stale_and_foreign_entries_are_refreshed_over() {
        let store = Arc::new(MemoryStore::default());
        let cache = SharedCache::new(store.clone(), true);
        let k = entry_key(&cache_key());
        let good = serde_json::to_vec(&Entry::encode(&info(60), client_key(), true)).unwrap();
        let mut other_format: serde_json::Value = serde_json::from_slice(&good).unwrap();
        other_format["format"] = 99.into();
        let mut bad_cert: serde_json::Value = serde_json::from_slice(&good).unwrap();
        bad_cert["client_chain"] = serde_json::json!(["%%%"]);
        let stale = serde_json::to_vec(&Entry::encode(&info(3), client_key(), true)).unwrap();
        for bad in [
            b"{not json".to_vec(),
            b"null".to_vec(),
            other_format.to_string().into_bytes(),
            bad_cert.to_string().into_bytes(),
            stale,
        ] {
            store.set(&k, &bad).unwrap();
            let found = cache
                .get_or_refresh(&cache_key(), &KeySlot::default(), soon(), || {
                    Ok((info(60), key_of(client_key())))
                })
                .unwrap();
            assert!(!found.from_store);
            // And the refresh replaced it with a good entry.
            let entry: Entry = serde_json::from_slice(&store.get(&k).unwrap().unwrap()).unwrap();
            assert!(entry
                .decode(&KeySlot::default(), SystemTime::now())
                .is_some());
        }
    }

    #[test]
    fn a_forgotten_entry_is_not_reused() {
        let store = Arc::new(MemoryStore::default());
        let cache = SharedCache::new(store.clone(), true);
        let hour = || Ok((info(60), key_of(client_key())));
        cache
            .get_or_refresh(&cache_key(), &KeySlot::default(), soon(), hour)
            .unwrap();
        cache.forget(&cache_key());
        let found = cache
            .get_or_refresh(&cache_key(), &KeySlot::default(), soon(), hour)
            .unwrap();
        assert!(!found.from_store);
    }

    #[test]
    fn concurrent_instances_refresh_once_with_atomics() {
        for (no_atomics, want) in [(false, 1), (true, 4)] {
            let store = Arc::new(MemoryStore {
                no_atomics,
                ..MemoryStore::default()
            });
            let refreshes = Arc::new(AtomicU32::new(0));
            let barrier = Arc::new(std::sync::Barrier::new(4));
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let (store, refreshes, barrier) =
                        (store.clone(), refreshes.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        let cache = SharedCache::new(store, true);
                        barrier.wait();
                        cache
                            .get_or_refresh(&cache_key(), &KeySlot::default(), soon(), || {
                                refreshes.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(Duration::from_millis(200));
                                Ok((info(60), key_of(client_key())))
                            })
                            .unwrap();
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(
                refreshes.load(Ordering::SeqCst),
                want,
                "no_atomics={no_atomics}"
            );
        }
    }

    fn refused(status: u16, code: &str) -> Error {
        let api = ApiError {
            call: "connectionInfo for projects/p/locations/r/clusters/c/instances/i".into(),
            status,
            code: code.into(),
            message: "the caller does not have permission".into(),
        };
        if status == 429 {
            Error::QuotaExceeded(api)
        } else {
            Error::AdminApi(api)
        }
    }

    /// Connects, each by a fresh instance on `store`, while every refresh
    /// fails with `error`: how many refreshed, and the last connect's error.
    fn fresh_instances_failing(store: &Arc<MemoryStore>, n: u32, error: &Error) -> (u32, Error) {
        let refreshes = AtomicU32::new(0);
        let mut last = None;
        for _ in 0..n {
            let cache = SharedCache::new(store.clone(), true);
            let e = cache
                .get_or_refresh(&cache_key(), &KeySlot::default(), soon(), || {
                    refreshes.fetch_add(1, Ordering::SeqCst);
                    Err(error.clone())
                })
                .map(|_| ())
                .unwrap_err();
            last = Some(e);
        }
        (refreshes.load(Ordering::SeqCst), last.unwrap())
    }

    #[test]
    fn admin_api_refusals_are_rate_limited_across_instances() {
        let store = Arc::new(MemoryStore::default());
        let denied = refused(403, "PERMISSION_DENIED");
        let (refreshes, last) = fresh_instances_failing(&store, 10, &denied);
        // Burst 2, then the bucket is empty for fresh instances too.
        assert_eq!(refreshes, 2);
        match last {
            Error::RateLimited {
                retry_after,
                last_error: Some(e),
                ..
            } => {
                assert_eq!(*e, denied);
                assert!(retry_after > Duration::from_secs(25), "{retry_after:?}");
                assert!(retry_after <= Duration::from_secs(30), "{retry_after:?}");
            }
            other => panic!("{other:?}"),
        }

        // A quota refusal empties the bucket at once.
        let store = Arc::new(MemoryStore::default());
        let quota = refused(429, "RESOURCE_EXHAUSTED");
        let (refreshes, last) = fresh_instances_failing(&store, 10, &quota);
        assert_eq!(refreshes, 1);
        assert!(
            matches!(&last, Error::RateLimited { last_error: Some(e), .. } if **e == quota),
            "{last:?}"
        );
    }

    #[test]
    fn other_refresh_failures_are_left_to_each_connector() {
        let store = Arc::new(MemoryStore::default());
        let error = Error::Credentials("the token endpoint refused the key".into());
        let (refreshes, last) = fresh_instances_failing(&store, 5, &error);
        assert_eq!(refreshes, 5);
        assert_eq!(last, error);
        assert!(store.map.lock().unwrap().is_empty());
    }

    #[test]
    fn the_bucket_refills_and_a_success_clears_it() {
        let store = Arc::new(MemoryStore::default());
        fresh_instances_failing(&store, 3, &refused(404, "NOT_FOUND"));
        let refusals_key = format!("{}/refusals", entry_key(&cache_key()));
        // Age the refusal by one interval: one more refresh is allowed.
        let mut r: Refusals =
            serde_json::from_slice(&store.map.lock().unwrap()[&refusals_key]).unwrap();
        assert!(r.tokens < 0.01, "{}", r.tokens);
        r.at_unix_ms -= 31_000;
        store
            .set(&refusals_key, &serde_json::to_vec(&r).unwrap())
            .unwrap();
        let found = SharedCache::new(store.clone(), true)
            .get_or_refresh(&cache_key(), &KeySlot::default(), soon(), || {
                Ok((info(60), key_of(client_key())))
            })
            .unwrap();
        assert!(!found.from_store);
        assert!(!store.map.lock().unwrap().contains_key(&refusals_key));
    }

    #[test]
    fn a_corrupt_or_future_refusal_record_neither_panics_nor_blocks_forever() {
        let refusals_key = format!("{}/refusals", entry_key(&cache_key()));
        for (tokens, at) in [
            ("-1e300", 0u64),
            ("1e300", 0),
            ("0.0", u64::MAX),
            ("0.5", u64::MAX / 2),
        ] {
            let store = Arc::new(MemoryStore::default());
            let record = format!(
                r#"{{"format":{FORMAT},"tokens":{tokens},"at_unix_ms":{at},"quota":false,"call":"c","status":403,"code":"","message":"m"}}"#
            );
            store.set(&refusals_key, record.as_bytes()).unwrap();
            let result = SharedCache::new(store.clone(), true).get_or_refresh(
                &cache_key(),
                &KeySlot::default(),
                soon(),
                || Ok((info(60), key_of(client_key()))),
            );
            match result {
                Ok(_) => {}
                Err(Error::RateLimited { retry_after, .. }) => {
                    assert!(retry_after <= Duration::from_secs(30), "{retry_after:?}")
                }
                Err(e) => panic!("tokens {tokens}, at {at}: {e:?}"),
            }
        }
    }
}
