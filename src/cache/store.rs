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
//! while the others wait for the entry it writes; a holder that died delays
//! them by at most [`LEASE_WAIT`], after which one of them takes over
//! ([`Lease`]). Without atomics, every instance that misses refreshes.
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
    pub(crate) fn principal_prefix(&self, deadline: Instant) -> Option<String> {
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

    pub(crate) fn get<T: for<'de> serde::Deserialize<'de>>(&self, key: &str) -> Option<T> {
        stored::open(key, &self.store.get(key).ok()??, self.secret.as_ref())
    }

    pub(crate) fn set(&self, key: &str, body: &impl serde::Serialize) {
        if let Some(bytes) = stored::seal(key, body, self.secret.as_ref()) {
            let _ = self.store.set(key, &bytes);
        }
    }
}

/// Keeps the connector's key in the store, once per principal.
pub(crate) struct StoredKey {
    shelf: Arc<Shelf>,
    /// The lease this instance holds on the key record while it makes the
    /// key, if it holds one.
    lease: std::sync::Mutex<Option<Lease>>,
}

impl StoredKey {
    pub(crate) fn new(shelf: Arc<Shelf>) -> Self {
        Self {
            shelf,
            lease: std::sync::Mutex::new(None),
        }
    }

    fn key(&self, deadline: Instant) -> Option<String> {
        Some(format!("{}/key", self.shelf.principal_prefix(deadline)?))
    }
}

impl KeyKeeper for StoredKey {
    fn load(&self, deadline: Instant) -> Option<ClientKey> {
        let record: KeyRecord = self.shelf.get(&self.key(deadline)?)?;
        let der = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            record.private_key,
        )
        .ok()?;
        ClientKey::from_pkcs8_der(&der).ok()
    }

    /// With a lease on the key record: the first instance makes the key,
    /// the others wait for it (see [`Lease`]) and make their own only if
    /// nobody does.
    fn claim(&self, deadline: Instant) -> Option<ClientKey> {
        let key = self.key(deadline)?;
        let mut lease = Lease::on(&key);
        match lease.take(&*self.shelf.store, deadline, |until| self.load(until)) {
            Turn::Done(kept) => Some(kept),
            Turn::Make { held } => {
                if held {
                    *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(lease);
                }
                None
            }
        }
    }

    fn keep(&self, key: ClientKey, deadline: Instant) -> ClientKey {
        let Some(k) = self.key(deadline) else {
            return key;
        };
        let private_key =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key.pkcs8_der());
        self.shelf.set(&k, &KeyRecord { private_key });
        let held = self.lease.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(lease) = held {
            lease.release(&*self.shelf.store);
        }
        // Without atomics two instances may both have made one: the last
        // kept is everyone's from now on.
        match self.load(deadline) {
            Some(kept) if kept.spki_der != key.spki_der => kept,
            _ => key,
        }
    }
}

/// A lease in the store on what `base` names, so that concurrent instances
/// make it once, with nothing but get, set, delete and an atomic increment.
///
/// `<base>/lease` counts the takers: the one that makes it 1 holds the lease
/// and stamps `<base>/lease-until` with when it lapses, [`LEASE_WAIT`] on.
/// The others wait for the thing, or for the lease to be let go (then they
/// take it afresh) or to lapse: a holder that died, or that did not get as
/// far as its stamp within [`LEASE_WAIT`]. A stamp is honoured for
/// [`LEASE_WAIT`] at most from when a waiter first sees it, whatever it says
/// (whoever can write the store cannot hold the lease for longer). A lapsed
/// lease is taken over by the one waiter that makes
/// `<base>/lease-over-<stamp>` 1, so that it too is made once; nobody waits
/// longer than twice [`LEASE_WAIT`] (the holder's, then its taker's).
struct Lease {
    count: String,
    until: String,
    /// The take-over counter, once this instance has taken a lapsed lease.
    over: Option<String>,
}

/// What an instance is to do about the thing a lease is on.
enum Turn<T> {
    /// Make it; then, if `held`, [`Lease::release`] the lease.
    Make { held: bool },
    /// Another instance made it (or was refused it): this.
    Done(T),
}

impl Lease {
    fn on(base: &str) -> Self {
        Self {
            count: format!("{base}/lease"),
            until: format!("{base}/lease-until"),
            over: None,
        }
    }

    /// Takes the lease, or waits until `deadline` for whoever holds it to
    /// make the thing, which `look` finds (given how long it may take).
    fn take<T>(
        &mut self,
        store: &dyn Store,
        deadline: Instant,
        mut look: impl FnMut(Instant) -> Option<T>,
    ) -> Turn<T> {
        match store.increment(&self.count, 1) {
            Ok(Some(1)) => {}
            Ok(Some(_)) => return self.wait(store, deadline, look),
            // Without atomics every instance makes its own.
            Ok(None) | Err(_) => return Turn::Make { held: false },
        }
        self.stamp(store);
        self.held(store, deadline, &mut look)
    }

    /// Now that this instance holds the lease: the last holder may have
    /// made the thing and let go since it was looked for; else make it.
    fn held<T>(
        &self,
        store: &dyn Store,
        deadline: Instant,
        look: &mut impl FnMut(Instant) -> Option<T>,
    ) -> Turn<T> {
        if let Some(found) = look(deadline) {
            self.release(store);
            return Turn::Done(found);
        }
        Turn::Make { held: true }
    }

    fn wait<T>(
        &mut self,
        store: &dyn Store,
        deadline: Instant,
        mut look: impl FnMut(Instant) -> Option<T>,
    ) -> Turn<T> {
        let give_up = (Instant::now() + 2 * LEASE_WAIT).min(deadline);
        // The holder's stamp and when this instance first saw it (no stamp
        // is honoured for longer than LEASE_WAIT from then, whatever it
        // says), and since when there has been none.
        let (mut stamp, mut unstamped) = (None::<(u64, Instant)>, Instant::now());
        loop {
            match self.stamp_of(store) {
                Some(lapses) => {
                    let seen = match stamp {
                        Some((s, seen)) if s == lapses => seen,
                        _ => Instant::now(),
                    };
                    stamp = Some((lapses, seen));
                    let lapsed =
                        lapses <= unix_ms(SystemTime::now()) || seen.elapsed() >= LEASE_WAIT;
                    if lapsed && self.take_over(store, lapses) {
                        return Turn::Make { held: true };
                    }
                    // Else held, or taken over by another waiter that is
                    // about to stamp it anew.
                }
                // Let go: the holder's refresh failed, or it stored the
                // thing after this instance's last look. A new lease.
                None if stamp.is_some() => {
                    (stamp, unstamped) = (None, Instant::now());
                    if let Ok(Some(1)) = store.increment(&self.count, 1) {
                        self.stamp(store);
                        return self.held(store, give_up, &mut look);
                    }
                }
                // Taken, never stamped: the holder died between the two.
                None if unstamped.elapsed() >= LEASE_WAIT && self.take_over(store, 0) => {
                    return Turn::Make { held: true };
                }
                // Taken a moment ago and about to be stamped (or taken
                // over by another waiter).
                None => {}
            }
            if Instant::now() + POLL >= give_up {
                return Turn::Make { held: false };
            }
            std::thread::sleep(POLL);
            if let Some(found) = look(give_up) {
                return Turn::Done(found);
            }
        }
    }

    /// Whether this instance is the one to take over the lease that lapsed
    /// at `lapsed`.
    fn take_over(&mut self, store: &dyn Store, lapsed: u64) -> bool {
        let over = format!("{}-over-{lapsed}", self.count);
        if let Ok(Some(1)) = store.increment(&over, 1) {
            self.over = Some(over);
            self.stamp(store);
            return true;
        }
        false
    }

    fn stamp(&self, store: &dyn Store) {
        let until = unix_ms(SystemTime::now() + LEASE_WAIT);
        let _ = store.set(&self.until, until.to_string().as_bytes());
    }

    fn stamp_of(&self, store: &dyn Store) -> Option<u64> {
        let bytes = store.get(&self.until).ok()??;
        std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
    }

    /// Lets the lease go, for whoever needs the thing made again. The count
    /// goes first, so that a waiter that finds the stamp gone can take it.
    fn release(&self, store: &dyn Store) {
        let _ = store.delete(&self.count);
        let _ = store.delete(&self.until);
        if let Some(over) = &self.over {
            let _ = store.delete(over);
        }
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
        // With no key shared through the store, no entry another instance
        // writes could be this one's: nothing to wait for.
        let mut lease = Lease::on(&entry_key);
        let held = if self.keys.shares() {
            let seen = refused.as_ref().map(|r| r.at_unix_ms);
            let store = &*self.shelf.store;
            match lease.take(store, deadline, |until| {
                self.holders_result(key, &entry_key, seen, until)
            }) {
                Turn::Done(result) => return result,
                Turn::Make { held } => held,
            }
        } else {
            false
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
        if held {
            lease.release(&*self.shelf.store);
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

    /// What the lease holder left for this instance: its entry, or the
    /// Admin API's refusal of it (one other than the refusal already seen,
    /// made at `seen`).
    fn holders_result(
        &self,
        key: &CacheKey,
        entry_key: &str,
        seen: Option<u64>,
        deadline: Instant,
    ) -> Option<Result<Found, Error>> {
        if let Some(found) = self.load(key, entry_key, deadline) {
            return Some(Ok(found));
        }
        let refused: Option<Refusals> = self.shelf.get(&format!("{entry_key}/refusals"));
        refused
            .filter(|r| Some(r.at_unix_ms) != seen)
            .map(|r| Err(r.error()))
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
    fn shelf<S: Store + 'static>(store: &Arc<S>, token: &str, secret: Option<&str>) -> Arc<Shelf> {
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
        let kept = StoredKey::new(shelf.clone());
        assert!(kept.load(soon()).is_none());
        let first = KeySlot::with_keeper(Arc::new(StoredKey::new(shelf.clone())));
        let (made, generated) = first.get(soon()).unwrap();
        assert!(generated);
        let fresh = KeySlot::with_keeper(Arc::new(StoredKey::new(shelf.clone())));
        let (loaded, generated) = fresh.get(soon()).unwrap();
        assert!(!generated);
        assert_eq!(loaded.spki_der, made.spki_der);
        // Another principal has a key of its own.
        let other = KeySlot::with_keeper(Arc::new(StoredKey::new(self::shelf(
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
                    let slot = KeySlot::with_keeper(Arc::new(StoredKey::new(shelf)));
                    barrier.wait();
                    let (key, generated) = slot.get(soon()).unwrap();
                    (key.spki_der.clone(), generated)
                })
            })
            .collect();
        let got: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(got.iter().filter(|(_, generated)| *generated).count(), 1);
        assert!(got.iter().all(|(spki, _)| *spki == got[0].0));
        let kept = StoredKey::new(shelf.clone()).load(soon()).unwrap();
        assert_eq!(kept.spki_der, got[0].0);
    }

    #[test]
    fn a_dead_claim_on_the_key_is_taken_over_and_freed() {
        let store = Arc::new(MemoryStore::default());
        let shelf = shelf(&store, "api", None);
        let record = StoredKey::new(shelf.clone()).key(soon()).unwrap();
        // A holder that died before writing its deadline or the key.
        store.increment(&format!("{record}/lease"), 1).unwrap();
        let slot = KeySlot::with_keeper(Arc::new(StoredKey::new(shelf.clone())));
        let (made, generated) = slot.get(soon()).unwrap();
        assert!(generated);
        assert_eq!(
            StoredKey::new(shelf.clone()).load(soon()).unwrap().spki_der,
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

    /// A lease on `key` as a holder leaves it: taken, stamped to lapse at
    /// `until`; the stamp, in ms since the epoch.
    fn held(store: &MemoryStore, key: &str, until: SystemTime) -> u64 {
        store.increment(&format!("{key}/lease"), 1).unwrap();
        let stamp = unix_ms(until);
        store
            .set(&format!("{key}/lease-until"), stamp.to_string().as_bytes())
            .unwrap();
        stamp
    }

    #[test]
    fn a_dead_lease_holder_and_a_useless_entry_are_not_waited_for() {
        let store = Arc::new(MemoryStore::default());
        let shelf = shelf(&store, "api", None);
        let key = entry_key(&shelf);
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        // A holder that died: its lease is taken, its deadline past.
        held(&store, &key, SystemTime::now() - Duration::from_secs(1));
        assert!(refreshed(origin(&instance(&shelf, &refresh))));
        // The entry was looked for once, not polled for.
        assert_eq!(store.gets_of(&key), 1);

        // A live lease, but no key that could use its entry: no waiting.
        let store = Arc::new(MemoryStore::default());
        let shelf = self::shelf(&store, "api", None);
        let key = entry_key(&shelf);
        held(&store, &key, SystemTime::now() + LEASE_WAIT);
        let keyless = instance_with(&shelf, &refresh, KeySlot::default());
        assert!(refreshed(origin(&keyless)));
        assert_eq!(store.gets_of(&key), 1);
    }

    /// A store on which another instance's step lands at one point of this
    /// one's work: `hook` runs once, on the store underneath.
    struct Hooked {
        inner: Arc<MemoryStore>,
        at: At,
        looks: std::sync::atomic::AtomicUsize,
        hook: std::sync::Mutex<Option<Hook>>,
    }

    type Hook = Box<dyn FnOnce(&MemoryStore) + Send>;

    enum At {
        /// Just before the first lease is taken.
        Lease,
        /// Just after the `nth` look for `key`.
        Look { key: String, nth: usize },
    }

    impl Hooked {
        fn new(
            inner: &Arc<MemoryStore>,
            at: At,
            hook: impl FnOnce(&MemoryStore) + Send + 'static,
        ) -> Arc<Self> {
            Arc::new(Hooked {
                inner: inner.clone(),
                at,
                looks: Default::default(),
                hook: std::sync::Mutex::new(Some(Box::new(hook))),
            })
        }

        fn run(&self) {
            let hook = self.hook.lock().unwrap().take();
            if let Some(hook) = hook {
                hook(&self.inner);
            }
        }
    }

    impl Store for Hooked {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            let found = self.inner.get(key);
            if let At::Look { key: looked, nth } = &self.at {
                let order = std::sync::atomic::Ordering::SeqCst;
                if key == looked && self.looks.fetch_add(1, order) + 1 == *nth {
                    self.run();
                }
            }
            found
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
            self.inner.set(key, value)
        }
        fn delete(&self, key: &str) -> Result<(), String> {
            self.inner.delete(key)
        }
        fn increment(&self, key: &str, delta: u64) -> Result<Option<u64>, String> {
            if matches!(self.at, At::Lease) && key.ends_with("/lease") {
                self.run();
            }
            self.inner.increment(key, delta)
        }
    }

    #[test]
    fn an_entry_made_while_the_lease_is_taken_is_used() {
        let store = Arc::new(MemoryStore::default());
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        let holder = instance(&shelf(&store, "api", None), &refresh);
        // Another instance refreshes, stores and lets go of the lease after
        // this one looked for the entry and before it takes the lease.
        let racing = Hooked::new(&store, At::Lease, move |_| {
            assert!(refreshed(origin(&holder)));
        });
        let late = instance(&shelf(&racing, "api", None), &refresh);
        assert_eq!(origin(&late), Origin::Store);
        assert_eq!(refresh.gets(), 1);
        assert_eq!(store.len(), 1, "the entry alone, no lease left behind");
    }

    /// Waits, up to a deadline, until `what` holds.
    fn until(what: impl Fn() -> bool) {
        let deadline = soon();
        while !what() {
            assert!(Instant::now() < deadline, "not reached before the deadline");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_lease_taken_and_not_yet_stamped_is_waited_for() {
        let store = Arc::new(MemoryStore::default());
        let shelf = shelf(&store, "api", None);
        let key = entry_key(&shelf);
        // The entry a holder is about to write (made on another store).
        let scratch = Arc::new(MemoryStore::default());
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        origin(&instance(&self::shelf(&scratch, "api", None), &refresh));
        let entry = scratch.get(&key).unwrap().unwrap();
        // The holder has taken the lease and not stamped it yet.
        store.increment(&format!("{key}/lease"), 1).unwrap();
        let waiter = {
            let (shelf, refresh) = (shelf.clone(), refresh.clone());
            std::thread::spawn(move || origin(&instance(&shelf, &refresh)))
        };
        // Once the waiter has looked for the entry twice (before and while
        // waiting), the holder writes it and lets go.
        until(|| store.gets_of(&key) >= 2);
        store.set(&key, &entry).unwrap();
        assert_eq!(waiter.join().unwrap(), Origin::Store);
        assert_eq!(refresh.gets(), 1, "the scratch refresh alone");
    }

    /// A waiter that finds the lease let go takes a new one, and then looks
    /// once more: the holder may have stored the entry between the waiter's
    /// last look and its finding the stamp gone (50 instances over three
    /// host processes refreshed twice so, tests/redis_store.rs).
    #[test]
    fn an_entry_stored_as_the_lease_is_let_go_is_used() {
        let store = Arc::new(MemoryStore::default());
        let key = entry_key(&shelf(&store, "api", None));
        let scratch = Arc::new(MemoryStore::default());
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        origin(&instance(&shelf(&scratch, "api", None), &refresh));
        let entry = scratch.get(&key).unwrap().unwrap();
        held(&store, &key, SystemTime::now() + LEASE_WAIT);
        // The holder finishes just after the waiter's second look (the
        // first is before it tries the lease, the second while it waits):
        // it writes the entry and lets go of the lease.
        let at = At::Look {
            key: key.clone(),
            nth: 2,
        };
        let finishing = Hooked::new(&store, at, move |store| {
            store.set(&key, &entry).unwrap();
            store.delete(&format!("{key}/lease")).unwrap();
            store.delete(&format!("{key}/lease-until")).unwrap();
        });
        let waiter = instance(&shelf(&finishing, "api", None), &refresh);
        assert_eq!(origin(&waiter), Origin::Store);
        assert_eq!(refresh.gets(), 1, "the scratch refresh alone");
        assert_eq!(store.len(), 1, "the entry alone, no lease left behind");
    }

    #[test]
    fn a_lapsed_lease_is_taken_over_by_one_waiter() {
        let store = Arc::new(MemoryStore::default());
        let shelf = shelf(&store, "api", None);
        let key = entry_key(&shelf);
        // A holder that died: its lease taken, its stamp past.
        let past = held(&store, &key, SystemTime::now() - Duration::from_millis(1));
        let refresh =
            ScriptedSource::alloydb(Duration::from_secs(3600)).taking(Duration::from_millis(200));
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (barrier, cache) = (barrier.clone(), instance(&shelf, &refresh));
                std::thread::spawn(move || {
                    barrier.wait();
                    cache.get(&alloydb_key(), soon()).unwrap().origin
                })
            })
            .collect();
        let origins: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(refresh.gets(), 1, "{origins:?}");
        assert_eq!(origins.iter().filter(|o| refreshed(**o)).count(), 1);
        // The taker let go of everything: the lease, its stamp, the take-over.
        for left in ["lease", "lease-until", &format!("lease-over-{past}")] {
            assert_eq!(store.get(&format!("{key}/{left}")).unwrap(), None, "{left}");
        }
    }

    #[test]
    fn a_stamp_is_honoured_one_lease_wait_at_most_whatever_it_says() {
        let store = Arc::new(MemoryStore::default());
        let shelf = shelf(&store, "api", None);
        let key = entry_key(&shelf);
        // Written by someone who can write the store: held for the next hour.
        let hour = held(&store, &key, SystemTime::now() + Duration::from_secs(3600));
        let refresh = ScriptedSource::alloydb(Duration::from_secs(3600));
        let started = Instant::now();
        assert!(refreshed(origin(&instance(&shelf, &refresh))));
        assert!(started.elapsed() >= LEASE_WAIT, "{:?}", started.elapsed());
        for left in ["lease", "lease-until", &format!("lease-over-{hour}")] {
            assert_eq!(store.get(&format!("{key}/{left}")).unwrap(), None, "{left}");
        }
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
