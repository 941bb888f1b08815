//! What the unit tests share, away from the product: certificates
//! ([`certs`]), a scripted Google ([`google`]: token endpoint and both Admin
//! APIs, as a [`Transport`](crate::http::Transport)), fake instances with a
//! real TLS server-side proxy on loopback ([`fake`]), and scripted info
//! sources and stores for the cache layers.

pub(crate) mod certs;
pub(crate) mod fake;
pub(crate) mod google;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::cache::{CacheKey, Found, Origin, Prepared, Source};
use crate::connection_info::{Addresses, ConnectionInfo, ServerIdentity};
use crate::error::{ApiError, Error};
use crate::instance::Instance;
use crate::key::ClientKey;
use crate::refresh::RefreshTimings;
use crate::secret::Secret;
use crate::store::Store;
use certs::{client_key, Ca};

/// The tests' RSA key, as a value of its own.
pub(crate) fn client_key_copy() -> ClientKey {
    ClientKey::from_pkcs8_der(client_key().pkcs8_der()).unwrap()
}

/// A Cloud SQL cache key.
pub(crate) fn cache_key() -> CacheKey {
    CacheKey {
        name: Instance::parse("proj:us-central1:db").unwrap(),
        iam: false,
    }
}

/// An AlloyDB cache key, with IAM login.
pub(crate) fn alloydb_key() -> CacheKey {
    CacheKey {
        name: Instance::parse("projects/p/locations/r/clusters/c/instances/i").unwrap(),
        iam: true,
    }
}

/// Cloud SQL-shaped info for the tests' key, expiring in `lasting`.
pub(crate) fn cloudsql_info(lasting: Duration) -> ConnectionInfo {
    let ca = Ca::new("Google Cloud SQL Server CA");
    let pem = ca.client_cert_pem(&client_key().spki_der, 60);
    ConnectionInfo {
        addresses: Addresses {
            public: Some("127.0.0.1".parse().unwrap()),
            ..Addresses::default()
        },
        port: 3307,
        trust_anchors: vec![ca.der()],
        identity: ServerIdentity::DnsNameOrCommonName {
            dns_name: None,
            common_name: "proj:db".into(),
        },
        sni: false,
        client_chain: crate::certs::parse_pem_list(&pem).unwrap(),
        expiry: SystemTime::now() + lasting,
        exchange: None,
    }
}

/// AlloyDB-shaped info for the tests' key, its certificate expiring in
/// `minutes`, with an exchange carrying `login-token`.
pub(crate) fn alloydb_info(minutes: i64) -> ConnectionInfo {
    let root = Ca::new("root.alloydb");
    let inter = root.intermediate("client.alloydb");
    let mut client_chain =
        crate::certs::parse_pem_list(&inter.client_cert_pem(&client_key().spki_der, minutes))
            .unwrap();
    client_chain.push(inter.der());
    ConnectionInfo {
        addresses: Addresses {
            public: None,
            private: Some("10.0.0.2".parse().unwrap()),
            psc: Some("x.alloydb-psc.goog".into()),
        },
        port: 5433,
        trust_anchors: vec![root.der()],
        identity: ServerIdentity::AddressDialled,
        sni: true,
        client_chain,
        expiry: SystemTime::now() + Duration::from_secs(60 * minutes.max(0) as u64),
        exchange: Some(Arc::new(crate::alloydb::mdx::AlloyDbExchange {
            user_agent: "ua".into(),
            token: Secret::new("login-token".into()),
            iam: true,
        })),
    }
}

/// The Admin API's refusal of an AlloyDB call, with `status` and `code`.
pub(crate) fn refused(status: u16, code: &str) -> Error {
    Error::api(ApiError {
        call: "connectionInfo for projects/p/locations/r/clusters/c/instances/i".into(),
        status,
        code: code.into(),
        message: "the caller does not have permission".into(),
    })
}

/// Waits for `done` to hold, checking every millisecond; panics naming
/// `what` if it does not within 10 s.
pub(crate) fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not happen in 10 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// An info source that answers from a script and counts what it is asked.
#[derive(Clone)]
pub(crate) struct ScriptedSource(Arc<Scripted>);

pub(crate) struct Scripted {
    make: fn(Duration) -> ConnectionInfo,
    lasting: Duration,
    origin_store: bool,
    taking: Duration,
    state: Mutex<ScriptState>,
}

#[derive(Default)]
struct ScriptState {
    gets: u32,
    invalidations: u32,
    fail_next: VecDeque<Error>,
    fail_always: Option<Error>,
}

impl ScriptedSource {
    /// Cloud SQL-shaped info lasting `lasting`, as a refresh.
    pub(crate) fn lasting(lasting: Duration) -> Self {
        Self::of(cloudsql_info, lasting)
    }

    /// AlloyDB-shaped info lasting `lasting` (whole minutes), as a refresh.
    pub(crate) fn alloydb(lasting: Duration) -> Self {
        Self::of(
            |d| alloydb_info(i64::try_from(d.as_secs() / 60).unwrap_or(60)),
            lasting,
        )
    }

    fn of(make: fn(Duration) -> ConnectionInfo, lasting: Duration) -> Self {
        Self(Arc::new(Scripted {
            make,
            lasting,
            origin_store: false,
            taking: Duration::ZERO,
            state: Mutex::default(),
        }))
    }

    /// Saying it came from the store.
    pub(crate) fn stored(self) -> Self {
        self.with(|s| s.origin_store = true)
    }

    /// Each get taking `taking` (for the single-flight tests, where the
    /// other callers must arrive meanwhile).
    pub(crate) fn taking(self, taking: Duration) -> Self {
        self.with(|s| s.taking = taking)
    }

    fn with(self, f: impl FnOnce(&mut Scripted)) -> Self {
        let mut s = Arc::try_unwrap(self.0)
            .ok()
            .expect("configured before it is shared");
        f(&mut s);
        Self(Arc::new(s))
    }

    /// The next get fails with `e`.
    pub(crate) fn fail_next(&self, e: Error) {
        self.0.state.lock().unwrap().fail_next.push_back(e);
    }

    /// Every get fails with `e`.
    pub(crate) fn fail_always(&self, e: Error) {
        self.0.state.lock().unwrap().fail_always = Some(e);
    }

    pub(crate) fn gets(&self) -> u32 {
        self.0.state.lock().unwrap().gets
    }

    pub(crate) fn invalidations(&self) -> u32 {
        self.0.state.lock().unwrap().invalidations
    }
}

impl Source for ScriptedSource {
    fn get(&self, key: &CacheKey, _deadline: std::time::Instant) -> Result<Found, Error> {
        let failure = {
            let mut state = self.0.state.lock().unwrap();
            state.gets += 1;
            state
                .fail_next
                .pop_front()
                .or_else(|| state.fail_always.clone())
        };
        std::thread::sleep(self.0.taking);
        if let Some(e) = failure {
            return Err(e);
        }
        let info = (self.0.make)(self.0.lasting);
        let prepared = Prepared::new(info, Arc::new(client_key_copy()), &key.name)?;
        Ok(Found {
            prepared: Arc::new(prepared),
            origin: if self.0.origin_store {
                Origin::Store
            } else {
                Origin::Refresh(RefreshTimings::default())
            },
        })
    }

    fn invalidate(&self, _key: &CacheKey) {
        self.0.state.lock().unwrap().invalidations += 1;
    }
}

/// An in-memory host store, optionally without atomics or failing; it
/// counts the reads of each key.
#[derive(Default)]
pub(crate) struct MemoryStore {
    pub map: Mutex<HashMap<String, Vec<u8>>>,
    pub no_atomics: bool,
    /// Every call fails, as an unreachable store would.
    pub broken: bool,
    pub gets: Mutex<HashMap<String, u32>>,
}

impl MemoryStore {
    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }

    /// How many times `key` was read.
    pub(crate) fn gets_of(&self, key: &str) -> u32 {
        self.gets.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    fn check(&self) -> Result<(), String> {
        if self.broken {
            Err("the store is unreachable".into())
        } else {
            Ok(())
        }
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.check()?;
        *self.gets.lock().unwrap().entry(key.into()).or_default() += 1;
        Ok(self.map.lock().unwrap().get(key).cloned())
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.check()?;
        self.map.lock().unwrap().insert(key.into(), value.into());
        Ok(())
    }
    fn delete(&self, key: &str) -> Result<(), String> {
        self.check()?;
        self.map.lock().unwrap().remove(key);
        Ok(())
    }
    fn increment(&self, key: &str, delta: u64) -> Result<Option<u64>, String> {
        self.check()?;
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
