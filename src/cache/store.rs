//! The cross-request cache: connection info kept in a host key-value store
//! (`wasi:keyvalue`, Spin's key-value store, a directory), so that a fresh
//! component instance, which serverless hosts make for every request, reuses
//! the last certificate instead of calling the Admin API, and the
//! connector's key instead of generating one.
//!
//! What is stored ([`stored`](super::stored)), under keys scoped by who asks
//! (the credentials' principal) and which Admin API answered: per instance
//! and IAM setting, what the last refresh learned (addresses, server CA
//! certificates, the server's DNS name, the client certificate chain and its
//! expiry, the metadata exchange's token for AlloyDB) and the public key the
//! certificate is for; per principal, unless `store_private_key` is off, the
//! connector's RSA key. The key and the token are credentials for an hour:
//! the store must be as private as the app's other secrets. With a store
//! secret, every value is sealed with an HMAC and one that is not is ignored.
//!
//! An entry that does not open, decode or check out as a fresh refresh would
//! ([`Entry::decode`]), or whose key is not at hand, is refreshed over; one
//! that fails to dial is forgotten by the connector (the `Source` contract)
//! and the connect refreshes once. A failing store never fails a connect: it
//! only costs the refresh it could have saved.
//!
//! Refreshes are single-flight across instances as far as the store allows:
//! with an atomic increment, the first instance to take the lease refreshes
//! while the others wait for the entry it writes, until the lease's deadline
//! (at most [`LEASE_WAIT`] after it was taken, so a holder that died delays
//! the others at most that long); without atomics, every instance that
//! misses refreshes.
//!
//! The Admin API's refusals (an error status, quota included) are shared too
//! (`rate_limit`): each connector's own rate limiter dies with its instance,
//! so without them a broken instance would cost a refresh on every request.
//! While the shared bucket is empty, instances fail at once with a rate-limit
//! error naming the last refusal.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::stored::{self, fingerprint, unix_ms, Entry, KeyRecord, Refusals, PREFIX};
use super::{CacheKey, Found, Origin, Prepared, Source};
use crate::config::Config;
use crate::credentials::TokenSource;
use crate::error::Error;
use crate::key::{ClientKey, KeyKeeper, KeySlot};
use crate::secret::Secret;
use crate::store::Store;

/// How long an instance waits for another's refresh before doing its own.
pub const LEASE_WAIT: Duration = Duration::from_secs(5);
/// How often a waiting instance looks for the entry.
const POLL: Duration = Duration::from_millis(25);

/// The store and what scopes and seals its values, shared by the entries'
/// source and the connector's key keeper.
pub(crate) struct Shelf {
    pub store: Arc<dyn Store>,
    pub secret: Option<Secret>,
    pub tokens: Arc<TokenSource>,
    pub config: Config,
}

impl Shelf {
    /// `gcp-db-connector/v3/<principal>`: what the credentials' principal
    /// keeps, whatever instance it is for.
    fn principal_prefix(&self, deadline: Instant) -> Option<String> {
        let principal = self.tokens.principal(deadline).ok()?;
        Some(format!("{PREFIX}/{}", fingerprint(&[&principal])))
    }

    /// `…/<principal and Admin API>/<instance>/<iam|native>`: one principal's
    /// entry for `key` from one Admin API, apart from every other's.
    fn entry_key(&self, key: &CacheKey, deadline: Instant) -> Option<String> {
        let principal = self.tokens.principal(deadline).ok()?;
        let endpoint = key.name.service().admin_endpoint(&self.config);
        let scope = fingerprint(&[&principal, &endpoint]);
        let auth = if key.iam { "iam" } else { "native" };
        Some(format!("{PREFIX}/{scope}/{}/{auth}", key.name))
    }

    fn get<T: for<'de> serde::Deserialize<'de>>(&self, key: &str) -> Option<T> {
        stored::open(key, &self.store.get(key).ok()??, self.secret.as_ref())
    }

    fn set(&self, key: &str, body: &impl serde::Serialize) {
        if let Some(bytes) = stored::seal(key, body, self.secret.as_ref()) {
            let _ = self.store.set(key, &bytes);
        }
    }
}

/// Keeps the connector's key in the store, once per principal.
pub(crate) struct StoredKey(pub Arc<Shelf>);

impl StoredKey {
    fn key(&self, deadline: Instant) -> Option<String> {
        Some(format!("{}/key", self.0.principal_prefix(deadline)?))
    }
}

impl KeyKeeper for StoredKey {
    fn load(&self, deadline: Instant) -> Option<ClientKey> {
        let record: KeyRecord = self.0.get(&self.key(deadline)?)?;
        let der = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            record.private_key,
        )
        .ok()?;
        ClientKey::from_pkcs8_der(&der).ok()
    }

    /// With a lease on the key record: the first instance makes the key,
    /// the others wait for it until the lease lapses (at most
    /// [`LEASE_WAIT`]) and then make their own.
    fn claim(&self, deadline: Instant) -> Option<ClientKey> {
        let key = self.key(deadline)?;
        let Taken::Held { until } = Lease::on(&*self.0.store, &key).take() else {
            return None;
        };
        let until = until.min(deadline);
        while Instant::now() + POLL < until {
            std::thread::sleep(POLL);
            if let Some(kept) = self.load(until) {
                return Some(kept);
            }
        }
        None
    }

    fn keep(&self, key: ClientKey, deadline: Instant) -> ClientKey {
        let Some(k) = self.key(deadline) else {
            return key;
        };
        let private_key =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key.pkcs8_der());
        self.0.set(&k, &KeyRecord { private_key });
        Lease::on(&*self.0.store, &k).release();
        // Without atomics two instances may both have made one: the last
        // kept is everyone's from now on.
        match self.load(deadline) {
            Some(kept) if kept.spki_der != key.spki_der => kept,
            _ => key,
        }
    }
}

/// A lease in the store on what `base` names, so that concurrent instances
/// make it once: `<base>/lease` counts the takers, `<base>/lease-until` is
/// when the first one's lapses.
struct Lease<'a> {
    store: &'a dyn Store,
    count: String,
    until: String,
}

/// What [`Lease::take`] found.
enum Taken {
    /// This instance holds the lease: make the thing, then release it.
    First,
    /// Another instance does: wait for its result until `until` (at most
    /// [`LEASE_WAIT`] from now; now, if the holder's deadline has passed).
    Held { until: Instant },
    /// The store has no atomic increment: every instance makes its own.
    Unshared,
}

impl<'a> Lease<'a> {
    fn on(store: &'a dyn Store, base: &str) -> Self {
        Self {
            store,
            count: format!("{base}/lease"),
            until: format!("{base}/lease-until"),
        }
    }

    fn take(&self) -> Taken {
        match self.store.increment(&self.count, 1) {
            Ok(Some(1)) => {
                let until = unix_ms(SystemTime::now() + LEASE_WAIT);
                let _ = self.store.set(&self.until, until.to_string().as_bytes());
                Taken::First
            }
            Ok(Some(_)) => {
                let lapses = self
                    .store
                    .get(&self.until)
                    .ok()
                    .flatten()
                    .and_then(|b| String::from_utf8(b).ok()?.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                let left = lapses.saturating_sub(unix_ms(SystemTime::now()));
                let left = Duration::from_millis(left).min(LEASE_WAIT);
                Taken::Held {
                    until: Instant::now() + left,
                }
            }
            Ok(None) | Err(_) => Taken::Unshared,
        }
    }

    /// Frees the lease, for whoever needs the thing made again.
    fn release(&self) {
        let _ = self.store.delete(&self.until);
        let _ = self.store.delete(&self.count);
    }
}

/// The host store in front of `inner` (the refresh).
pub(crate) struct HostStore {
    pub shelf: Arc<Shelf>,
    /// The connector's key: an entry serves only the key it is for.
    pub keys: Arc<KeySlot>,
    /// The connector's user agent, for exchanges made again from entries.
    pub user_agent: String,
    pub inner: Box<dyn Source>,
}

impl Source for HostStore {
    /// A stored entry for `key` that holds up, else what `inner` gives, which
    /// is then stored; with a lease so concurrent instances refresh once.
    fn get(&self, key: &CacheKey, deadline: Instant) -> Result<Found, Error> {
        // Without a principal (the metadata server unreachable) the refresh
        // fails the same way, and says so.
        let Some(entry_key) = self.shelf.entry_key(key, deadline) else {
            return self.inner.get(key, deadline);
        };
        if let Some(found) = self.load(key, &entry_key, deadline) {
            return Ok(found);
        }
        let refusals_key = format!("{entry_key}/refusals");
        let refused: Option<Refusals> = self.shelf.get(&refusals_key);
        if let Some(r) = &refused {
            if let Some(wait) = r.holds(SystemTime::now()) {
                // Not slept off, unlike the connector's own limiter: the
                // Admin API said no, and a request should not hang on it.
                return Err(Error::rate_limited(&key.name, wait, Some(r.error())));
            }
        }
        let lease = Lease::on(&*self.shelf.store, &entry_key);
        let leased = match lease.take() {
            Taken::First => true,
            Taken::Held { until } => {
                if let Some(found) = self.wait_for_holder(key, &entry_key, until.min(deadline))? {
                    return Ok(found);
                }
                // It died or is slow: take over, and free the lease for later.
                true
            }
            Taken::Unshared => false,
        };
        let result = self.inner.get(key, deadline);
        match &result {
            Ok(found) => {
                self.save(&entry_key, &found.prepared);
                if refused.is_some() {
                    let _ = self.shelf.store.delete(&refusals_key);
                }
            }
            Err(e) => {
                // Read again: another instance may have been refused meanwhile.
                let before: Option<Refusals> = self.shelf.get(&refusals_key);
                if let Some(after) = Refusals::after(before.as_ref(), e, SystemTime::now()) {
                    self.shelf.set(&refusals_key, &after);
                }
            }
        }
        if leased {
            lease.release();
        }
        result
    }

    /// Drops the stored entry, so no instance reuses it.
    fn invalidate(&self, key: &CacheKey) {
        // The principal is known by now (the entry was read under it).
        let deadline = Instant::now() + Duration::from_secs(1);
        if let Some(entry_key) = self.shelf.entry_key(key, deadline) {
            let _ = self.shelf.store.delete(&entry_key);
        }
        self.inner.invalidate(key);
    }
}

impl HostStore {
    fn load(&self, key: &CacheKey, entry_key: &str, deadline: Instant) -> Option<Found> {
        let entry: Entry = self.shelf.get(entry_key)?;
        let (facts, public_key) = entry.decode(SystemTime::now())?;
        let client_key = self.keys.existing(deadline)?;
        if client_key.spki_der != public_key {
            return None;
        }
        let info = key.name.service().plan(facts, &self.user_agent).ok()?;
        let prepared = Prepared::new(info, client_key, &key.name).ok()?;
        Some(Found {
            prepared: Arc::new(prepared),
            origin: Origin::Store,
        })
    }

    /// Waits for the lease holder's entry, or shares its refusal, until
    /// `until`; `None` to take over. Does not wait when an entry would be of
    /// no use: with no key of its own and none shared through the store, no
    /// entry another instance writes can be this one's.
    fn wait_for_holder(
        &self,
        key: &CacheKey,
        entry_key: &str,
        until: Instant,
    ) -> Result<Option<Found>, Error> {
        if !self.keys.shares() {
            return Ok(None);
        }
        let refusals_key = format!("{entry_key}/refusals");
        let waiting_since = unix_ms(SystemTime::now());
        while Instant::now() + POLL < until {
            std::thread::sleep(POLL);
            if let Some(found) = self.load(key, entry_key, until) {
                return Ok(Some(found));
            }
            let refused: Option<Refusals> = self.shelf.get(&refusals_key);
            if let Some(r) = refused.filter(|r| r.at_unix_ms >= waiting_since) {
                return Err(r.error());
            }
        }
        Ok(None)
    }

    fn save(&self, entry_key: &str, prepared: &Prepared) {
        let entry = Entry::encode(&prepared.info.facts(), &prepared.key.spki_der);
        self.shelf.set(entry_key, &entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::source::Endpoints;
    use crate::credentials::Credentials;
    use crate::error::ErrorKind;
    use crate::testing::google::ScriptedGoogle;
    use crate::testing::{alloydb_key, client_key_copy, refused, MemoryStore, ScriptedSource};

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    /// What the connector of a principal (known by its API token) keeps in
    /// `store`, sealed with `secret` if given.
    fn shelf(store: &Arc<MemoryStore>, token: &str, secret: Option<&str>) -> Arc<Shelf> {
        let config = Config::default();
        Arc::new(Shelf {
            store: store.clone(),
            secret: secret.map(|s| Secret::new(s.into())),
            tokens: Arc::new(TokenSource::new(
                Some(Credentials::AccessToken {
                    api_token: token.into(),
                    login_token: None,
                }),
                Endpoints::default(),
                Arc::new(ScriptedGoogle::new()),
            )),
            config,
        })
    }

    /// A fresh instance's view of `shelf`, over `refresh`, holding the key
    /// the scripted source's certificates are for (as from `rsa_private_key`).
    fn instance(shelf: &Arc<Shelf>, refresh: &ScriptedSource) -> HostStore {
        instance_with(shelf, refresh, KeySlot::with_key(client_key_copy()))
    }

    fn instance_with(shelf: &Arc<Shelf>, refresh: &ScriptedSource, keys: KeySlot) -> HostStore {
        HostStore {
            shelf: shelf.clone(),
            keys: Arc::new(keys),
            user_agent: "ua".into(),
            inner: Box::new(refresh.clone()),
        }
    }

    fn origin(store: &HostStore) -> Origin {
        store.get(&alloydb_key(), soon()).unwrap().origin
    }

    fn refreshed(o: Origin) -> bool {
        matches!(o, Origin::Refresh(_))
    }

    fn entry_key(shelf: &Shelf) -> String {
        shelf.entry_key(&alloydb_key(), soon()).unwrap()
    }

    #[test]
    fn a_second_instance_reuses_the_first_ones_refresh() {
        let store = Arc::new(MemoryStore::default());
        let shelf = shelf(&store, "api", None);
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        assert!(refreshed(origin(&instance(&shelf, &refresh))));
        let found = instance(&shelf, &refresh)
            .get(&alloydb_key(), soon())
            .unwrap();
        assert_eq!(found.origin, Origin::Store);
        assert_eq!(refresh.gets(), 1);
        let info = &found.prepared.info;
        assert_eq!(info.client_chain.len(), 2);
        assert_eq!(info.addresses.private, Some("10.0.0.2".parse().unwrap()));
        // The facts of the service come from the service, not the store.
        assert_eq!(info.port, crate::alloydb::ALLOYDB_PORT);
        let record = info.exchange.as_ref().unwrap().record();
        assert_eq!(record.login_token.unwrap().expose(), "login-token");
        // No lease is left behind: the entry alone.
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn an_entry_serves_only_the_key_it_is_for() {
        let store = Arc::new(MemoryStore::default());
        let shelf = shelf(&store, "api", None);
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        origin(&instance(&shelf, &refresh));
        // No key at hand, none kept: the entry is of no use.
        let keyless = instance_with(&shelf, &refresh, KeySlot::default());
        assert!(refreshed(origin(&keyless)));
        // Another key.
        let other = KeySlot::with_key(ClientKey::generate().unwrap());
        assert!(refreshed(origin(&instance_with(&shelf, &refresh, other))));
        assert_eq!(refresh.gets(), 3);
    }

    #[test]
    fn the_kept_key_is_every_fresh_instances() {
        let store = Arc::new(MemoryStore::default());
        let shelf = shelf(&store, "api", Some("s3cret"));
        let kept = StoredKey(shelf.clone());
        assert!(kept.load(soon()).is_none());
        let first = KeySlot::with_keeper(Arc::new(StoredKey(shelf.clone())));
        let (made, generated) = first.get(soon()).unwrap();
        assert!(generated);
        let fresh = KeySlot::with_keeper(Arc::new(StoredKey(shelf.clone())));
        let (loaded, generated) = fresh.get(soon()).unwrap();
        assert!(!generated);
        assert_eq!(loaded.spki_der, made.spki_der);
        // Another principal has a key of its own.
        let other = KeySlot::with_keeper(Arc::new(StoredKey(self::shelf(
            &store,
            "other",
            Some("s3cret"),
        ))));
        assert!(other.existing(soon()).is_none());
    }

    #[test]
    fn instances_starting_together_make_one_key_between_them() {
        let store = Arc::new(MemoryStore::default());
        let shelf = shelf(&store, "api", Some("s3cret"));
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (barrier, shelf) = (barrier.clone(), shelf.clone());
                std::thread::spawn(move || {
                    let slot = KeySlot::with_keeper(Arc::new(StoredKey(shelf)));
                    barrier.wait();
                    let (key, generated) = slot.get(soon()).unwrap();
                    (key.spki_der.clone(), generated)
                })
            })
            .collect();
        let got: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(got.iter().filter(|(_, generated)| *generated).count(), 1);
        assert!(got.iter().all(|(spki, _)| *spki == got[0].0));
        let kept = StoredKey(shelf.clone()).load(soon()).unwrap();
        assert_eq!(kept.spki_der, got[0].0);
    }

    #[test]
    fn a_dead_claim_on_the_key_is_taken_over_and_freed() {
        let store = Arc::new(MemoryStore::default());
        let shelf = shelf(&store, "api", None);
        let record = StoredKey(shelf.clone()).key(soon()).unwrap();
        // A holder that died before writing its deadline or the key.
        store.increment(&format!("{record}/lease"), 1).unwrap();
        let slot = KeySlot::with_keeper(Arc::new(StoredKey(shelf.clone())));
        let (made, generated) = slot.get(soon()).unwrap();
        assert!(generated);
        assert_eq!(
            StoredKey(shelf.clone()).load(soon()).unwrap().spki_der,
            made.spki_der
        );
        assert_eq!(store.get(&format!("{record}/lease")).unwrap(), None);
    }

    #[test]
    fn a_corrupt_or_foreign_entry_is_refreshed_over() {
        let store = Arc::new(MemoryStore::default());
        let sealed = shelf(&store, "api", Some("s3cret"));
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        for planted in [
            b"{not json".to_vec(),
            // A good entry sealed under another secret (or none at all).
            {
                let other = shelf(&store, "api", Some("not the secret"));
                origin(&instance(
                    &other,
                    &ScriptedSource::alloydb(Duration::from_secs(3600)),
                ));
                store.get(&entry_key(&other)).unwrap().unwrap()
            },
        ] {
            store.set(&entry_key(&sealed), &planted).unwrap();
            assert!(refreshed(origin(&instance(&sealed, &refresh))));
            // And the refresh replaced it with an entry that serves.
            assert_eq!(origin(&instance(&sealed, &refresh)), Origin::Store);
        }
    }

    #[test]
    fn two_principals_never_share_an_entry_or_a_refusal() {
        let store = Arc::new(MemoryStore::default());
        let (alice, bob) = (shelf(&store, "alice", None), shelf(&store, "bob", None));
        assert_ne!(entry_key(&alice), entry_key(&bob));
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        origin(&instance(&alice, &refresh));
        assert!(refreshed(origin(&instance(&bob, &refresh))));
        // On another store, Alice is refused twice: her bucket is empty,
        // Bob's untouched.
        let store = Arc::new(MemoryStore::default());
        let (alice, bob) = (shelf(&store, "alice", None), shelf(&store, "bob", None));
        let denied = ScriptedSource::alloydb(Duration::from_secs(3600));
        denied.fail_always(refused(403, "PERMISSION_DENIED"));
        let error_of = |shelf: &Arc<Shelf>| {
            instance(shelf, &denied)
                .get(&alloydb_key(), soon())
                .map(drop)
                .unwrap_err()
        };
        for _ in 0..2 {
            error_of(&alice);
        }
        assert_eq!(error_of(&alice).kind(), ErrorKind::RateLimited);
        let e = error_of(&bob);
        assert_eq!(e.kind(), ErrorKind::AdminApi, "Bob is refused, not limited");
    }

    #[test]
    fn an_invalidated_entry_is_not_reused() {
        let store = Arc::new(MemoryStore::default());
        let shelf = shelf(&store, "api", None);
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        let first = instance(&shelf, &refresh);
        first.get(&alloydb_key(), soon()).unwrap();
        first.invalidate(&alloydb_key());
        assert_eq!(refresh.invalidations(), 1);
        assert!(refreshed(origin(&instance(&shelf, &refresh))));
    }

    #[test]
    fn concurrent_instances_refresh_once_with_atomics() {
        for (no_atomics, want) in [(false, 1), (true, 4)] {
            let store = Arc::new(MemoryStore {
                no_atomics,
                ..MemoryStore::default()
            });
            let shelf = shelf(&store, "api", None);
            let refresh = ScriptedSource::alloydb(Duration::from_secs(3600))
                .taking(Duration::from_millis(200));
            let barrier = Arc::new(std::sync::Barrier::new(4));
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let (barrier, cache) = (barrier.clone(), instance(&shelf, &refresh));
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

    #[test]
    fn a_dead_lease_holder_and_a_useless_entry_are_not_waited_for() {
        let store = Arc::new(MemoryStore::default());
        let shelf = shelf(&store, "api", None);
        let key = entry_key(&shelf);
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        // A holder that died: its lease is taken, its deadline past.
        store.increment(&format!("{key}/lease"), 1).unwrap();
        let past = unix_ms(SystemTime::now() - Duration::from_secs(1));
        store
            .set(&format!("{key}/lease-until"), past.to_string().as_bytes())
            .unwrap();
        assert!(refreshed(origin(&instance(&shelf, &refresh))));
        // The entry was looked for once, not polled for.
        assert_eq!(store.gets_of(&key), 1);

        // A live lease, but no key that could use its entry: no waiting.
        let store = Arc::new(MemoryStore::default());
        let shelf = self::shelf(&store, "api", None);
        let key = entry_key(&shelf);
        store.increment(&format!("{key}/lease"), 1).unwrap();
        let later = unix_ms(SystemTime::now() + LEASE_WAIT);
        store
            .set(&format!("{key}/lease-until"), later.to_string().as_bytes())
            .unwrap();
        let keyless = instance_with(&shelf, &refresh, KeySlot::default());
        assert!(refreshed(origin(&keyless)));
        assert_eq!(store.gets_of(&key), 1);
    }

    /// Connects, each by a fresh instance on `shelf`, while every refresh
    /// fails with `error`: how many refreshed, and the last connect's error.
    fn fresh_instances_failing(shelf: &Arc<Shelf>, n: u32, error: &Error) -> (u32, Error) {
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        refresh.fail_always(error.clone());
        let mut last = None;
        for _ in 0..n {
            let e = instance(shelf, &refresh)
                .get(&alloydb_key(), soon())
                .map(drop)
                .unwrap_err();
            last = Some(e);
        }
        (refresh.gets(), last.unwrap())
    }

    #[test]
    fn admin_api_refusals_are_rate_limited_across_instances() {
        let store = Arc::new(MemoryStore::default());
        let denied = refused(403, "PERMISSION_DENIED");
        let (refreshes, last) = fresh_instances_failing(&shelf(&store, "api", None), 10, &denied);
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
        let (refreshes, last) = fresh_instances_failing(&shelf(&store, "api", None), 10, &quota);
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
        let (refreshes, last) = fresh_instances_failing(&shelf(&store, "api", None), 5, &error);
        assert_eq!(refreshes, 5);
        assert_eq!(last.kind(), ErrorKind::Credentials);
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn the_bucket_refills_and_a_success_clears_it() {
        let store = Arc::new(MemoryStore::default());
        let shelf = shelf(&store, "api", Some("s3cret"));
        fresh_instances_failing(&shelf, 3, &refused(404, "NOT_FOUND"));
        let refusals_key = format!("{}/refusals", entry_key(&shelf));
        // Age the refusal by one interval (as a writer with the secret):
        // one more refresh is allowed.
        let mut r: serde_json::Value = shelf.get(&refusals_key).unwrap();
        assert!(r["tokens"].as_f64().unwrap() < 0.01, "{r}");
        r["at_unix_ms"] = (r["at_unix_ms"].as_u64().unwrap() - 31_000).into();
        shelf.set(&refusals_key, &r);
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        assert!(refreshed(origin(&instance(&shelf, &refresh))));
        assert!(store.get(&refusals_key).unwrap().is_none());
    }

    #[test]
    fn a_refusal_record_without_the_seal_holds_nothing_back() {
        let store = Arc::new(MemoryStore::default());
        let sealed = shelf(&store, "api", Some("s3cret"));
        let forger = shelf(&store, "api", Some("a guess"));
        fresh_instances_failing(&forger, 3, &refused(404, "NOT_FOUND"));
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        assert!(refreshed(origin(&instance(&sealed, &refresh))));
    }

    #[test]
    fn a_failing_store_only_costs_the_refresh() {
        let broken = Arc::new(MemoryStore {
            broken: true,
            ..MemoryStore::default()
        });
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        let shelf = shelf(&broken, "api", None);
        for _ in 0..2 {
            assert!(refreshed(origin(&instance(&shelf, &refresh))));
        }
        assert_eq!(refresh.gets(), 2);
    }
}
