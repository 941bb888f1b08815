//! What each domain name resolved to, kept for the shorter of its TTL and
//! the failover period, in the connector and (with a host store) for later
//! instances; and the [`Moved`] mark of the connections made through it.
//!
//! Resolution is lazy like everything else: a connect after the name's time
//! is up resolves it again. If it now names another instance, new connects
//! go there at once, the connector forgets the old instance's connection
//! info, and every connection made through the name to the old instance
//! fails its next read or write with an error saying the name moved (Go's
//! and Python's connectors close them from a background check every 30 s;
//! a lazy one cannot, and a connection nobody uses needs no closing).
//!
//! A resolver that cannot answer (timeout, SERVFAIL, HTTP error) leaves the
//! last answer in use, as Python's connector does; a name that no longer
//! resolves (NXDOMAIN, no instance in its TXT records) is forgotten and its
//! connections marked. Failed resolutions of a name are rate-limited like
//! refreshes (`rate_limit`: burst 2, then one per 30 s), so a broken name
//! costs the resolver a query per 30 s, not one per connect.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::resolve::Resolver;
use super::DomainName;
use crate::cache::store::Shelf;
use crate::cache::stored::{fingerprint, unix_ms};
use crate::error::Error;
use crate::instance::Instance;
use crate::rate_limit::{self, Limiter};

/// How far ahead of this instance's clock another's may run: a stored answer
/// good until later than the failover period plus this is not believed.
const CLOCK_SKEW: Duration = Duration::from_secs(5);

/// Names kept at most; the least recently resolved goes first.
const MAX_NAMES: usize = 256;

/// Set on the connections made through a name when it moves: their next
/// read or write fails with the reason.
#[derive(Debug, Default)]
pub(crate) struct Moved(Mutex<Option<String>>);

impl Moved {
    /// Why the connection must not be used, once the name has moved.
    pub(crate) fn reason(&self) -> Option<String> {
        lock(&self.0).clone()
    }

    fn mark(&self, reason: String) {
        lock(&self.0).get_or_insert(reason);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connect's way to its instance through a name.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub instance: Instance,
    /// Shared by every connection made through the name to this instance.
    pub moved: Arc<Moved>,
    /// The instance the name named before, when this connect found it moved.
    pub moved_from: Option<Instance>,
    /// How long finding the instance took (a lookup in memory when the
    /// answer was at hand).
    pub took: Duration,
}

/// Domain names and what they resolve to.
pub(crate) struct Names {
    resolver: Resolver,
    shelf: Option<Arc<Shelf>>,
    failover_period: Duration,
    slots: Mutex<HashMap<DomainName, Arc<Mutex<Slot>>>>,
}

#[derive(Default)]
struct Slot {
    current: Option<Current>,
    /// The last failure and the limiter of further tries, while failing.
    failing: Option<(Error, Limiter)>,
    used: Option<Instant>,
}

struct Current {
    instance: Instance,
    until: Instant,
    moved: Arc<Moved>,
}

/// A resolution in the host store.
#[derive(Serialize, Deserialize)]
struct Stored {
    instance: String,
    until_unix_ms: u64,
}

impl Names {
    pub(crate) fn new(
        resolver: Resolver,
        shelf: Option<Arc<Shelf>>,
        failover_period: Duration,
    ) -> Self {
        Self {
            resolver,
            shelf,
            failover_period,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The instance `name` names now, resolved within `deadline` if its time
    /// is up.
    pub(crate) fn route(&self, name: &DomainName, deadline: Instant) -> Result<Route, Error> {
        let started = Instant::now();
        let slot = self.slot(name, started);
        let mut slot = lock(&slot);
        slot.used = Some(started);
        if let Some(c) = slot.current.as_ref().filter(|c| started < c.until) {
            return Ok(route(c, None, started.elapsed()));
        }
        if let Some((instance, left)) = self.load(name, deadline) {
            slot.failing = None;
            return Ok(adopt(&mut slot, name, instance, started + left, started));
        }
        let slot = &mut *slot;
        if let Some((last, limiter)) = slot.failing.as_mut() {
            if let Err(wait) = limiter.try_acquire(started) {
                if let Some(c) = &slot.current {
                    return Ok(route(c, None, started.elapsed()));
                }
                return Err(Error::dns(format!(
                    "{name} is not resolved again for {} s ({}); the last try failed: {last}",
                    wait.as_secs().max(1),
                    rate_limit::POLICY
                )));
            }
        }
        match self.resolver.resolve(name, deadline) {
            Ok(r) => {
                slot.failing = None;
                let left = r.ttl.min(self.failover_period);
                self.save(name, &r.instance, left, deadline);
                Ok(adopt(
                    slot,
                    name,
                    r.instance,
                    Instant::now() + left,
                    started,
                ))
            }
            Err(f) => {
                match slot.failing.as_mut() {
                    Some((last, _)) => *last = f.error.clone(),
                    None => {
                        let mut limiter = Limiter::new(started);
                        // This try is the first of the burst.
                        let _ = limiter.try_acquire(started);
                        slot.failing = Some((f.error.clone(), limiter));
                    }
                }
                match slot.current.take() {
                    Some(c) if f.transient => {
                        let r = route(&c, None, started.elapsed());
                        slot.current = Some(c);
                        Ok(r)
                    }
                    Some(c) => {
                        c.moved.mark(format!(
                            "{name} no longer names {}: {}; connect again",
                            c.instance, f.error
                        ));
                        Err(f.error)
                    }
                    None => Err(f.error),
                }
            }
        }
    }

    fn slot(&self, name: &DomainName, now: Instant) -> Arc<Mutex<Slot>> {
        let mut slots = lock(&self.slots);
        if !slots.contains_key(name) && slots.len() >= MAX_NAMES {
            // The least recently used name goes (`try_lock`: one in use stays).
            let oldest = slots
                .iter()
                .filter_map(|(n, s)| Some((s.try_lock().ok()?.used.unwrap_or(now), n.clone())))
                .min();
            if let Some((_, n)) = oldest {
                slots.remove(&n);
            }
        }
        slots.entry(name.clone()).or_default().clone()
    }

    /// `…/<principal>/dns/<resolver>/<name>`: who asks and which resolver
    /// answered are part of the key, as for certificates.
    fn key(&self, shelf: &Shelf, name: &DomainName, deadline: Instant) -> Option<String> {
        let prefix = shelf.principal_prefix(deadline)?;
        let resolver = fingerprint(&[&self.resolver.url, &self.resolver.admin.url("")]);
        Some(format!("{prefix}/dns/{resolver}/{name}"))
    }

    /// Another instance's answer for `name`, and how long it is good for, if
    /// it is an instance name good for no longer than a fresh answer would
    /// be.
    fn load(&self, name: &DomainName, deadline: Instant) -> Option<(Instance, Duration)> {
        let shelf = self.shelf.as_ref()?;
        let stored: Stored = shelf.get(&self.key(shelf, name, deadline)?)?;
        let now = unix_ms(SystemTime::now());
        let left = Duration::from_millis(stored.until_unix_ms.checked_sub(now)?);
        if left.is_zero() || left > self.failover_period + CLOCK_SKEW {
            return None;
        }
        let instance = Instance::parse(&stored.instance).ok()?;
        Some((instance, left.min(self.failover_period)))
    }

    fn save(&self, name: &DomainName, instance: &Instance, left: Duration, deadline: Instant) {
        let Some(shelf) = &self.shelf else { return };
        if left.is_zero() {
            return;
        }
        if let Some(key) = self.key(shelf, name, deadline) {
            shelf.set(
                &key,
                &Stored {
                    instance: instance.to_string(),
                    until_unix_ms: unix_ms(SystemTime::now() + left),
                },
            );
        }
    }
}

/// `instance` as what `name` names until `until`, and the route to it
/// (with the instance it named before, if another: its connections are
/// marked).
fn adopt(
    slot: &mut Slot,
    name: &DomainName,
    instance: Instance,
    until: Instant,
    started: Instant,
) -> Route {
    let (moved, moved_from) = match slot.current.take() {
        Some(old) if old.instance == instance => (old.moved, None),
        Some(old) => {
            old.moved.mark(format!(
                "{name} moved from {} to {instance}; this connection was to the old \
                 instance: connect again",
                old.instance
            ));
            (Arc::default(), Some(old.instance))
        }
        None => (Arc::default(), None),
    };
    let current = Current {
        instance,
        until,
        moved,
    };
    let route = route(&current, moved_from, started.elapsed());
    slot.current = Some(current);
    route
}

fn route(c: &Current, moved_from: Option<Instance>, took: Duration) -> Route {
    Route {
        instance: c.instance.clone(),
        moved: c.moved.clone(),
        moved_from,
        took,
    }
}
