//! The connector as composed, natively: a scripted Google as its transport
//! (token endpoint and both Admin APIs) and fake instances whose proxies run
//! real TLS on loopback, as Go's dialer tests run against its mock.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::credentials::Credentials;
use crate::error::ErrorKind;
use crate::ip_type::IpType;
use crate::store::Store;
use crate::testing::fake::{FakeInstance, Kind, Mode};
use crate::testing::google::ScriptedGoogle;
use crate::testing::MemoryStore;

fn served(kind: Kind) -> Arc<FakeInstance> {
    let fake = FakeInstance::new(kind);
    fake.serve();
    fake
}

fn config(google: &ScriptedGoogle) -> Config {
    Config::default()
        .with_credentials(Credentials::Json(google.authorized_user_json()))
        .with_dial_timeout(Duration::from_secs(5))
        // Shorter than the rate limit's interval: a limited refresh fails
        // at once instead of waiting for its turn.
        .with_refresh_timeout(Duration::from_secs(5))
}

fn connector(google: &Arc<ScriptedGoogle>, config: Config) -> Connector {
    Connector::with_transport(config, google.clone()).unwrap()
}

fn echo(conn: &mut Connection) {
    conn.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
}

#[test]
fn cloud_sql_connects_then_reuses_the_certificate() {
    let fake = served(Kind::CloudSql { mdx: true });
    let google = Arc::new(ScriptedGoogle::new().with(&fake));
    let c = connector(&google, config(&google));

    let mut conn = c.connect(fake.name(), &ConnectOptions::default()).unwrap();
    echo(&mut conn);
    let t = conn.timings();
    assert!(!t.cached && !t.from_store);
    assert!(
        t.key_generation > Duration::ZERO,
        "the first connect made the key"
    );
    assert_eq!(
        (
            google.calls("connectSettings"),
            google.calls("generateEphemeralCert")
        ),
        (1, 1)
    );
    assert_eq!(fake.exchanges.lock().unwrap().len(), 1);

    let mut conn = c.connect(fake.name(), &ConnectOptions::default()).unwrap();
    echo(&mut conn);
    let t = conn.timings();
    assert!(t.cached && !t.from_store);
    assert_eq!((t.token, t.admin_api), (Duration::ZERO, Duration::ZERO));
    assert_eq!(google.admin_calls(), 2);
    assert_eq!(google.calls("token"), 1);
}

#[test]
fn alloydb_sends_its_login_token_in_the_exchange() {
    let fake = served(Kind::AlloyDb);
    let google = Arc::new(ScriptedGoogle::new().with(&fake));
    let c = connector(&google, config(&google));
    let mut conn = c.connect(fake.name(), &ConnectOptions::default()).unwrap();
    echo(&mut conn);
    assert_eq!(
        (
            google.calls("connectionInfo"),
            google.calls("generateClientCertificate")
        ),
        (1, 1)
    );
    // The admin token and a new login token.
    assert_eq!(google.calls("token"), 2);
    let request = fake.exchanges.lock().unwrap()[0].clone();
    assert!(request.windows(13).any(|w| w == b"ya29.scripted"));
}

#[test]
fn a_failed_dial_makes_the_next_connect_refresh_once() {
    let fake = served(Kind::CloudSql { mdx: false });
    let google = Arc::new(ScriptedGoogle::new().with(&fake));
    let c = connector(&google, config(&google));
    c.connect(fake.name(), &ConnectOptions::default()).unwrap();
    fake.set_mode(Mode::Refuse);
    let e = c
        .connect(fake.name(), &ConnectOptions::default())
        .map(drop)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls);
    assert_eq!(e.instance(), Some(fake.name()));
    assert_eq!(
        google.admin_calls(),
        2,
        "the failed dial used the cached certificate"
    );
    fake.set_mode(Mode::Normal);
    let conn = c.connect(fake.name(), &ConnectOptions::default()).unwrap();
    assert!(!conn.timings().cached);
    assert_eq!(google.admin_calls(), 4);
    let conn = c.connect(fake.name(), &ConnectOptions::default()).unwrap();
    assert!(conn.timings().cached);
}

#[test]
fn an_address_the_instance_lacks_fails_without_refreshing_again() {
    let fake = served(Kind::CloudSql { mdx: false });
    let google = Arc::new(ScriptedGoogle::new().with(&fake));
    let c = connector(&google, config(&google));
    let psc = ConnectOptions::default().with_ip_type(IpType::Psc);
    let e = c.connect(fake.name(), &psc).map(drop).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::IpTypeNotAvailable);
    assert_eq!(e.ip_type(), Some(IpType::Psc));
    // The info is sound: it stays cached.
    let conn = c.connect(fake.name(), &ConnectOptions::default()).unwrap();
    assert!(conn.timings().cached);
    assert_eq!(google.admin_calls(), 2);
}

#[test]
fn a_fresh_connector_on_the_store_needs_no_refresh_and_a_stale_entry_is_retried_once() {
    let old = served(Kind::CloudSql { mdx: true });
    let google = Arc::new(ScriptedGoogle::new().with(&old));
    let store = Arc::new(MemoryStore::default());
    let with_store = || config(&google).with_store(store.clone());

    connector(&google, with_store())
        .connect(old.name(), &ConnectOptions::default())
        .unwrap();
    assert_eq!(google.admin_calls(), 2);

    // A fresh instance: the entry, no key generation, no Admin API call.
    let fresh = connector(&google, with_store());
    let mut conn = fresh
        .connect(old.name(), &ConnectOptions::default())
        .unwrap();
    echo(&mut conn);
    let t = conn.timings();
    assert!(t.cached && t.from_store);
    assert_eq!(t.key_generation, Duration::ZERO);
    assert_eq!(google.admin_calls(), 2);

    // The instance moves: the stored entry points at a dead address.
    old.set_mode(Mode::Refuse);
    let new = served(Kind::CloudSql { mdx: true });
    let google_now = Arc::new(ScriptedGoogle::new().with(&new));
    let moved = Connector::with_transport(
        config(&google_now).with_store(store.clone()),
        google_now.clone(),
    )
    .unwrap();
    let mut conn = moved
        .connect(old.name(), &ConnectOptions::default())
        .unwrap();
    echo(&mut conn);
    let t = conn.timings();
    assert!(!t.cached && !t.from_store, "retried once, refreshed");
    // With the key the first instance kept: one key per deployment.
    assert_eq!(t.key_generation, Duration::ZERO);
    assert_eq!(google_now.admin_calls(), 2);
    assert_eq!(new.handshakes.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn without_keys_in_the_store_a_stored_key_is_never_taken() {
    let fake = served(Kind::CloudSql { mdx: false });
    let google = Arc::new(ScriptedGoogle::new().with(&fake));
    let store = Arc::new(MemoryStore::default());
    // Written by a connector that keeps its key in the store...
    connector(&google, config(&google).with_store(store.clone()))
        .connect(fake.name(), &ConnectOptions::default())
        .unwrap();
    // ... read by one that does not: it makes and uses its own key, so the
    // entry is of no use to it.
    let strict = connector(
        &google,
        config(&google)
            .with_store(store.clone())
            .with_store_private_key(false),
    );
    let conn = strict
        .connect(fake.name(), &ConnectOptions::default())
        .unwrap();
    let t = conn.timings();
    assert!(!t.from_store && t.key_generation > Duration::ZERO);
    assert_eq!(google.admin_calls(), 4);
}

#[test]
fn a_store_secret_seals_what_is_stored() {
    let fake = served(Kind::CloudSql { mdx: true });
    let google = Arc::new(ScriptedGoogle::new().with(&fake));
    let store = Arc::new(MemoryStore::default());
    let sealed = || {
        config(&google)
            .with_store(store.clone())
            .with_store_secret("s3cret")
    };
    connector(&google, sealed())
        .connect(fake.name(), &ConnectOptions::default())
        .unwrap();
    // The same secret reads it; another does not, and refreshes over it.
    let t = connector(&google, sealed())
        .connect(fake.name(), &ConnectOptions::default())
        .unwrap()
        .timings();
    assert!(t.from_store);
    let other = config(&google)
        .with_store(store.clone())
        .with_store_secret("guess");
    let t = connector(&google, other)
        .connect(fake.name(), &ConnectOptions::default())
        .unwrap()
        .timings();
    assert!(
        !t.from_store,
        "a value sealed under another secret is not opened"
    );
    // Neither its entry nor its key: it made a key of its own.
    assert!(t.key_generation > Duration::ZERO);
}

#[test]
fn an_instance_that_does_not_exist_is_refused_then_rate_limited() {
    let fake = served(Kind::CloudSql { mdx: false });
    let google = Arc::new(ScriptedGoogle::new().with(&fake));
    google.fail("connectSettings", 404, 10);
    let c = connector(&google, config(&google));
    for _ in 0..2 {
        let e = c
            .connect(fake.name(), &ConnectOptions::default())
            .map(drop)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AdminApi);
        assert_eq!(e.api_error().map(|a| a.status), Some(404));
        assert_eq!(e.instance(), Some(fake.name()));
    }
    let e = c
        .connect(fake.name(), &ConnectOptions::default())
        .map(drop)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(e.last_error().map(Error::kind), Some(ErrorKind::AdminApi));
    assert_eq!(google.calls("connectSettings"), 2);
}

#[test]
fn a_bad_name_and_a_bad_config_are_typed() {
    let google = Arc::new(ScriptedGoogle::new());
    let c = connector(&google, config(&google));
    let e = c
        .connect("nope", &ConnectOptions::default())
        .map(drop)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInstanceName);
    assert_eq!(e.instance(), Some("nope"));
    let every_form = "or a DNS name whose TXT record holds one";
    assert!(e.to_string().contains(every_form), "{e}");
    let e = Connector::with_transport(
        Config::default().with_admin_endpoint("sqladmin"),
        google.clone(),
    )
    .map(drop)
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
}

#[test]
fn the_login_token_is_the_credentials_one() {
    let google = Arc::new(ScriptedGoogle::new());
    let c = connector(
        &google,
        Config::default().with_credentials(Credentials::AccessToken {
            api_token: "api".into(),
            login_token: Some("login".into()),
        }),
    );
    assert_eq!(c.login_token().unwrap(), "login");
}

#[cfg(feature = "tokio")]
#[test]
fn the_async_connect_reuses_and_refreshes_like_the_blocking_one() {
    use ::tokio::io::{AsyncReadExt, AsyncWriteExt};

    let fake = served(Kind::AlloyDb);
    let google = Arc::new(ScriptedGoogle::new().with(&fake));
    let c = connector(&google, config(&google));
    let rt = ::tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conn = c
            .connect_async(fake.name(), &ConnectOptions::default())
            .await
            .unwrap();
        conn.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        assert!(!conn.timings().cached);

        let slow = Connector::with_transport(
            config(&google).with_dial_timeout(Duration::from_millis(300)),
            google.clone(),
        )
        .unwrap();
        slow.connect_async(fake.name(), &ConnectOptions::default())
            .await
            .unwrap();
        fake.set_mode(Mode::Stall);
        let e = slow
            .connect_async(fake.name(), &ConnectOptions::default())
            .await
            .map(drop)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout);
        fake.set_mode(Mode::Normal);
        let conn = slow
            .connect_async(fake.name(), &ConnectOptions::default())
            .await
            .unwrap();
        assert!(!conn.timings().cached, "the timed-out dial invalidated");
    });
}

#[cfg(feature = "tokio")]
#[test]
fn an_async_connection_through_a_moved_name_fails_its_next_use() {
    use ::tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (sql, alloy, google, c) = named(Duration::ZERO);
    let rt = ::tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conn = c
            .connect_async("orders.example.com", &ConnectOptions::default())
            .await
            .unwrap();
        conn.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await.unwrap();
        assert!(conn.timings().name_resolution > Duration::ZERO);
        google.set_txt("orders.example.com", &[alloy.name()], 300);
        c.connect_async("orders.example.com", &ConnectOptions::default())
            .await
            .unwrap();
        let e = conn.write_all(b"ping").await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionAborted);
        assert!(
            e.to_string()
                .contains(&format!("moved from {}", sql.name())),
            "{e}"
        );
        assert!(conn.read(&mut buf).await.is_err());
    });
}

/// A connector is shared across threads and tasks; its connections and
/// its async connect move between them.
#[test]
fn connectors_connections_and_connects_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Connector>();
    send_sync::<Error>();
    let google = Arc::new(ScriptedGoogle::new());
    let c = connector(&google, config(&google));
    let options = ConnectOptions::default();
    let blocking = c.connect("p:r:i", &options);
    send(&blocking);
    #[cfg(feature = "tokio")]
    {
        let connect = c.connect_async("p:r:i", &options);
        send(&connect);
    }
}

#[test]
fn warming_up_makes_the_first_connect_a_cached_one() {
    let fake = served(Kind::CloudSql { mdx: false });
    let google = Arc::new(ScriptedGoogle::new().with(&fake));
    let c = connector(&google, config(&google));
    c.warmup(fake.name(), &ConnectOptions::default()).unwrap();
    assert_eq!(google.admin_calls(), 2);
    assert_eq!(fake.handshakes.load(std::sync::atomic::Ordering::SeqCst), 0);
    let conn = c.connect(fake.name(), &ConnectOptions::default()).unwrap();
    assert!(conn.timings().cached);
    assert_eq!(google.admin_calls(), 2);
    // It fails as a connect would before the dial.
    let psc = ConnectOptions::default().with_ip_type(IpType::Psc);
    let e = c.warmup(fake.name(), &psc).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::IpTypeNotAvailable);
}

#[test]
fn a_stored_entry_that_cannot_be_planned_with_is_refreshed_over_once() {
    let fake = served(Kind::CloudSql { mdx: false });
    let google = Arc::new(ScriptedGoogle::new().with(&fake));
    let store = Arc::new(MemoryStore::default());
    let with_store = || config(&google).with_store(store.clone());
    connector(&google, with_store())
        .connect(fake.name(), &ConnectOptions::default())
        .unwrap();
    // Another instance's view, or a planted one: the entry knows only a
    // private address, which the public dial cannot use.
    let entry_key = store
        .map
        .lock()
        .unwrap()
        .keys()
        .find(|k| k.ends_with("/native"))
        .cloned()
        .unwrap();
    let envelope: serde_json::Value =
        serde_json::from_slice(&store.get(&entry_key).unwrap().unwrap()).unwrap();
    let mut body: serde_json::Value =
        serde_json::from_str(envelope["body"].as_str().unwrap()).unwrap();
    body["public_ip"] = serde_json::Value::Null;
    body["private_ip"] = "10.9.9.9".into();
    let resealed = crate::cache::stored::seal(&entry_key, &body, None).unwrap();
    store.set(&entry_key, &resealed).unwrap();

    let conn = connector(&google, with_store())
        .connect(fake.name(), &ConnectOptions::default())
        .unwrap();
    assert!(!conn.timings().from_store, "refreshed over the entry");
    assert_eq!(google.admin_calls(), 4);
}

/// The TXT-named instances' tests: a Cloud SQL and an AlloyDB fake, the name
/// pointing at the first.
fn named(
    failover: Duration,
) -> (
    Arc<FakeInstance>,
    Arc<FakeInstance>,
    Arc<ScriptedGoogle>,
    Connector,
) {
    let sql = served(Kind::CloudSql { mdx: false });
    let alloy = served(Kind::AlloyDb);
    let google = Arc::new(ScriptedGoogle::new().with(&sql).with(&alloy));
    google.set_txt("orders.example.com", &[sql.name()], 300);
    let c = connector(&google, config(&google).with_failover_period(failover));
    (sql, alloy, google, c)
}

#[test]
fn a_dns_name_connects_to_the_instance_its_txt_record_names_and_is_kept() {
    let (sql, _alloy, google, c) = named(Duration::from_secs(30));
    let mut conn = c
        .connect("Orders.Example.com.", &ConnectOptions::default())
        .unwrap();
    echo(&mut conn);
    assert!(conn.timings().name_resolution > Duration::ZERO);
    assert_eq!(
        sql.exchanges.lock().unwrap().len(),
        0,
        "no exchange for this fake"
    );
    assert_eq!(
        (google.calls("dns"), google.calls("connectSettings")),
        (1, 1)
    );
    // Within the failover period the answer is reused, and so is the certificate.
    let mut conn = c
        .connect("orders.example.com", &ConnectOptions::default())
        .unwrap();
    echo(&mut conn);
    assert!(conn.timings().cached);
    assert_eq!(
        (google.calls("dns"), google.calls("connectSettings")),
        (1, 1)
    );
}

#[test]
fn a_moved_name_sends_new_connects_to_the_new_instance_and_fails_old_connections() {
    // Period 0: every connect asks again (Go's `WithFailoverPeriod(0)`).
    let (sql, alloy, google, c) = named(Duration::ZERO);
    let mut first = c
        .connect("orders.example.com", &ConnectOptions::default())
        .unwrap();
    let mut second = c
        .connect("orders.example.com", &ConnectOptions::default())
        .unwrap();
    echo(&mut first);
    echo(&mut second);
    assert_eq!(google.calls("dns"), 2);
    assert_eq!(
        google.calls("connectSettings"),
        1,
        "same instance, same certificate"
    );

    google.set_txt("orders.example.com", &[alloy.name()], 300);
    let mut moved = c
        .connect("orders.example.com", &ConnectOptions::default())
        .unwrap();
    echo(&mut moved);
    assert_eq!(
        google.calls("connectionInfo"),
        1,
        "the new connect went to AlloyDB"
    );
    assert_eq!(alloy.exchanges.lock().unwrap().len(), 1);
    for conn in [&mut first, &mut second] {
        let e = conn.write_all(b"ping").map(drop).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionAborted);
        let text = e.to_string();
        assert!(
            text.contains(&format!(
                "orders.example.com moved from {} to {}",
                sql.name(),
                alloy.name()
            )),
            "{text}"
        );
        let mut buf = [0u8; 1];
        assert!(conn.read(&mut buf).is_err(), "reads fail too");
    }
    echo(&mut moved);

    // Moving back: the old instance's certificate was forgotten.
    google.set_txt("orders.example.com", &[sql.name()], 300);
    let mut back = c
        .connect("orders.example.com", &ConnectOptions::default())
        .unwrap();
    echo(&mut back);
    assert_eq!(google.calls("connectSettings"), 2);
    assert!(moved.write_all(b"ping").is_err());
}

#[test]
fn a_name_that_stops_resolving_fails_and_its_failures_are_rate_limited() {
    let (_sql, _alloy, google, c) = named(Duration::ZERO);
    let mut conn = c
        .connect("orders.example.com", &ConnectOptions::default())
        .unwrap();
    echo(&mut conn);
    google.set_txt("orders.example.com", &["not an instance"], 300);
    let e = c
        .connect("orders.example.com", &ConnectOptions::default())
        .map(drop)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Dns);
    assert!(e.to_string().contains("\"not an instance\""), "{e}");
    assert_eq!(e.instance(), Some("orders.example.com"));
    // The connection made through it is told why.
    let text = conn.write_all(b"ping").unwrap_err().to_string();
    assert!(text.contains("no longer names"), "{text}");
    // Burst 2: one more query, then none for 30 s.
    let _ = c
        .connect("orders.example.com", &ConnectOptions::default())
        .map(drop)
        .unwrap_err();
    let e = c
        .connect("orders.example.com", &ConnectOptions::default())
        .map(drop)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Dns);
    assert!(e.to_string().contains("not resolved again for"), "{e}");
    assert!(e.to_string().contains("not an instance"), "{e}");
    assert_eq!(google.calls("dns"), 3);
}

#[test]
fn a_resolver_that_fails_leaves_the_last_answer_in_use() {
    let (sql, _alloy, google, c) = named(Duration::ZERO);
    echo(
        &mut c
            .connect("orders.example.com", &ConnectOptions::default())
            .unwrap(),
    );
    google.fail("dns", 500, 1);
    let mut conn = c
        .connect("orders.example.com", &ConnectOptions::default())
        .unwrap();
    echo(&mut conn);
    assert_eq!(google.calls("dns"), 2);
    assert_eq!(google.calls("connectSettings"), 1, "still {}", sql.name());
    // A resolver failing from the first connect is an error naming it.
    google.fail("dns", 500, 1);
    let other = connector(&google, config(&google));
    let e = other
        .connect("orders.example.com", &ConnectOptions::default())
        .map(drop)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Dns);
    assert!(e.to_string().contains("HTTP 500"), "{e}");
    echo(&mut conn);
}

#[test]
fn fresh_connectors_sharing_a_store_share_the_answer_but_not_a_planted_one() {
    let (sql, _alloy, google, _) = named(Duration::from_secs(30));
    let store = Arc::new(MemoryStore::default());
    let fresh = || connector(&google, config(&google).with_store(store.clone()));
    echo(
        &mut fresh()
            .connect("orders.example.com", &ConnectOptions::default())
            .unwrap(),
    );
    let mut conn = fresh()
        .connect("orders.example.com", &ConnectOptions::default())
        .unwrap();
    echo(&mut conn);
    assert!(conn.timings().from_store);
    assert_eq!(
        google.calls("dns"),
        1,
        "the second connector took the stored answer"
    );
    assert_eq!(sql.name(), "proj:us-central1:db");

    // An answer good for longer than a fresh one could be is not believed.
    let key = {
        let map = store.map.lock().unwrap();
        map.keys().find(|k| k.contains("/dns/")).unwrap().clone()
    };
    let planted = crate::cache::stored::seal(
        &key,
        &serde_json::json!({"instance": "evil:us-central1:db", "until_unix_ms": u64::MAX / 2}),
        None,
    )
    .unwrap();
    store.set(&key, &planted).unwrap();
    echo(
        &mut fresh()
            .connect("orders.example.com", &ConnectOptions::default())
            .unwrap(),
    );
    assert_eq!(google.calls("dns"), 2, "the planted answer was asked over");
}

#[test]
fn a_domain_name_that_does_not_exist_says_so() {
    let google = Arc::new(ScriptedGoogle::new());
    let c = connector(&google, config(&google));
    let e = c
        .connect("gone.example.com", &ConnectOptions::default())
        .map(drop)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Dns);
    assert!(
        e.to_string()
            .contains("gone.example.com does not exist (NXDOMAIN)"),
        "{e}"
    );
}
