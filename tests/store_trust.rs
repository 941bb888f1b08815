//! The cross-request store as an attacker and an operator see it, through
//! the `connector-component-kv` build on the host's store, with a fresh
//! instance per request as a serverless host makes them, the emulator and a
//! real PostgreSQL.
//!
//! A writer of the store without the store secret plants entries naming
//! another CA, identity, address or key, corrupt trust anchors, refusals
//! stamped in the future, a lease whose holder died: every request still
//! reaches the instance's real proxy and nothing else (an impostor listening
//! where a planted entry points counts no connection), each planted value
//! costs one refresh at most, and the requests that follow load the entry
//! the refresh wrote. Two principals sharing the store never share an entry.

mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use gcp_db_host::connector::{Config, ConnectOptions, ConnectTimings, Credentials, ResourceAny};
use gcp_db_host::keyvalue::CONNECTOR_BUCKET;
use gcp_db_host::query::{connect_and_query, QueryError};
use gcp_db_host::ConnectorInstance;
use serde_json::Value;
use support::{host, kv_connector, superuser, Emulator};

const SECRET: &str = "the store secret, from outside the store";

/// A fresh instance of the key-value build with a connector on the host's
/// store, sealed with [`SECRET`].
async fn fresh(config: Config) -> (ConnectorInstance, ResourceAny) {
    kv_connector(Config {
        store_bucket: Some(CONNECTOR_BUCKET.into()),
        store_secret: Some(SECRET.into()),
        refresh_timeout_ms: Some(20_000),
        ..config
    })
    .await
}

/// One request: a fresh instance connects and runs `SELECT 1`.
async fn request(config: &Config, instance: &str) -> ConnectTimings {
    let (mut inst, connector) = fresh(config.clone()).await;
    match connect_and_query(
        &mut inst,
        connector,
        instance,
        ConnectOptions::default(),
        &superuser(),
        "SELECT 1",
    )
    .await
    {
        Ok((r, timings)) => {
            assert_eq!(r.rows, [[Some("1".to_string())]]);
            timings
        }
        Err(QueryError::Connect(e)) => panic!("{instance}: {e:?}"),
        Err(QueryError::Other(m)) => panic!("{instance}: {m}"),
    }
}

/// Certificate refreshes of `project_instance` so far.
fn refreshes(emu: &Emulator, project_instance: &str) -> u64 {
    emu.count("generateEphemeralCert", project_instance)
}

/// The store's keys for `instance`: (entry, refusals, lease, lease-until).
fn keys_of(instance: &str) -> (String, String, String, String) {
    let entry = host()
        .keyvalue_store()
        .keys(CONNECTOR_BUCKET)
        .unwrap()
        .into_iter()
        .find(|k| k.ends_with(&format!("/{instance}/native")))
        .unwrap_or_else(|| panic!("no entry for {instance} in the store"));
    let refusals = format!("{entry}/refusals");
    let lease = format!("{entry}/lease");
    let until = format!("{entry}/lease-until");
    (entry, refusals, lease, until)
}

fn get(key: &str) -> Option<Vec<u8>> {
    host().keyvalue_store().get(CONNECTOR_BUCKET, key).unwrap()
}

fn set(key: &str, value: Vec<u8>) {
    host()
        .keyvalue_store()
        .set(CONNECTOR_BUCKET, key, value)
        .unwrap();
}

/// An impostor's proxy: counts the connections it is offered and closes
/// them, on port 3307 of a loopback address of its own.
struct Impostor {
    ip: Ipv4Addr,
    connections: Arc<AtomicU32>,
}

impl Impostor {
    fn start() -> Impostor {
        let listener = (200..250)
            .find_map(|n| TcpListener::bind((Ipv4Addr::new(127, 66, 0, n), 3307)).ok())
            .expect("a free loopback address for the impostor");
        let SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
            unreachable!("bound to IPv4")
        };
        let connections = Arc::new(AtomicU32::new(0));
        let counted = connections.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(conn);
            }
        });
        Impostor {
            ip: *addr.ip(),
            connections,
        }
    }
}

/// A self-signed CA and a key of an attacker's, base64 DER, as an entry
/// holds them.
fn attackers_ca_and_key() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    use rcgen::PublicKeyData;
    (
        b64.encode(ca.der()),
        b64.encode(key.subject_public_key_info()),
    )
}

/// A change to an entry's body.
type Edit<'a> = Box<dyn Fn(&mut Value) + 'a>;

/// `entry`'s envelope with its body edited by `edit` and sealed as an
/// attacker without the secret can: with no MAC, a MAC of a guessed secret,
/// or the old MAC over the new body.
fn planted(entry: &[u8], how: usize, edit: &dyn Fn(&mut Value)) -> Vec<u8> {
    use hmac::Mac;
    let mut envelope: Value = serde_json::from_slice(entry).unwrap();
    let mut body: Value = serde_json::from_str(envelope["body"].as_str().unwrap()).unwrap();
    edit(&mut body);
    let body = body.to_string();
    envelope["body"] = body.clone().into();
    envelope["mac"] = match how % 3 {
        0 => Value::Null,
        1 => {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"a guess").unwrap();
            mac.update(body.as_bytes());
            base64::engine::general_purpose::STANDARD
                .encode(mac.finalize().into_bytes())
                .into()
        }
        _ => envelope["mac"].clone(),
    };
    envelope.to_string().into_bytes()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn a_writer_of_the_store_without_the_secret_gets_no_connection_and_costs_a_refresh() {
    let instance = "proj:us-central1:trust-planted";
    let project_instance = "proj:trust-planted";
    let emu = Emulator::start(&[&format!("{instance},backend={{pg}}")]);
    let config = emu.config();
    let impostor = Impostor::start();
    let proxy_ip = emu.instance(instance)["public_ip"]
        .as_str()
        .unwrap()
        .to_string();

    request(&config, instance).await;
    assert_eq!(refreshes(&emu, project_instance), 1);
    let t = request(&config, instance).await;
    assert!(t.from_store, "a fresh instance loads the entry");
    assert_eq!(refreshes(&emu, project_instance), 1);

    let (entry_key, refusals_key, lease_key, until_key) = keys_of(instance);
    let (ca, public_key) = attackers_ca_and_key();
    let impostor_ip = impostor.ip.to_string();
    let plants: Vec<(&str, Edit<'_>)> = vec![
        (
            "the impostor's address",
            Box::new(|b| b["public_ip"] = impostor_ip.clone().into()),
        ),
        (
            "the impostor's CA",
            Box::new(|b| b["trust_anchors"] = serde_json::json!([ca.clone()])),
        ),
        (
            "the impostor's address and CA",
            Box::new(|b| {
                b["public_ip"] = impostor_ip.clone().into();
                b["trust_anchors"] = serde_json::json!([ca.clone()]);
            }),
        ),
        (
            "another identity",
            Box::new(|b| b["dns_name"] = "impostor.example.com".into()),
        ),
        (
            "another key",
            Box::new(|b| b["public_key"] = public_key.clone().into()),
        ),
        (
            "corrupt trust anchors",
            Box::new(|b| b["trust_anchors"] = serde_json::json!(["AAAA"])),
        ),
    ];
    for (i, (what, edit)) in plants.iter().enumerate() {
        let good = get(&entry_key).expect("the entry is there");
        set(&entry_key, planted(&good, i, edit.as_ref()));
        let before = refreshes(&emu, project_instance);
        let t = request(&config, instance).await;
        assert!(!t.from_store, "{what}: the planted entry was used");
        assert_eq!(
            refreshes(&emu, project_instance),
            before + 1,
            "{what}: one refresh"
        );
        // The refresh wrote an entry that serves the next request.
        assert!(request(&config, instance).await.from_store, "{what}");
        assert_eq!(refreshes(&emu, project_instance), before + 1, "{what}");
    }
    assert_eq!(impostor.connections.load(Ordering::SeqCst), 0);
    // Every connection went to the real proxy.
    assert!(emu.proxy_connections(&proxy_ip) >= 2 + 2 * plants.len() as u64);

    // Refusals stamped an hour ahead, unsealed: not believed, not waited on.
    set(&entry_key, b"gone".to_vec());
    let refusals = serde_json::json!({
        "tokens": 0.0, "at_unix_ms": unix_ms(SystemTime::now() + Duration::from_secs(3600)),
        "quota": true, "call": "connectSettings", "status": 429, "code": "RESOURCE_EXHAUSTED",
        "message": "planted",
    });
    set(
        &refusals_key,
        serde_json::json!({"format": 3, "mac": null, "body": refusals.to_string()})
            .to_string()
            .into_bytes(),
    );
    let before = refreshes(&emu, project_instance);
    request(&config, instance).await;
    assert_eq!(refreshes(&emu, project_instance), before + 1);

    // A lease whose holder died an hour ago, and one that claims the next
    // hour: the request takes over, after one lease wait at most.
    for until in [
        SystemTime::now() - Duration::from_secs(3600),
        SystemTime::now() + Duration::from_secs(3600),
    ] {
        set(&entry_key, b"gone".to_vec());
        set(&lease_key, b"1".to_vec());
        set(&until_key, unix_ms(until).to_string().into_bytes());
        let before = refreshes(&emu, project_instance);
        let started = Instant::now();
        request(&config, instance).await;
        println!(
            "a request behind a lease held until {until:?}: {:?}",
            started.elapsed()
        );
        assert_eq!(refreshes(&emu, project_instance), before + 1);
        assert!(get(&lease_key).is_none(), "the lease was freed");
    }
    assert_eq!(impostor.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn two_principals_on_one_store_never_share_an_entry() {
    let instance = "proj:us-central1:trust-principals";
    let project_instance = "proj:trust-principals";
    let emu = Emulator::start(&[&format!("{instance},backend={{pg}}")]);
    let service_account = emu.config();
    let user = Config {
        credentials: Some(Credentials::Json(emu.authorized_user_json())),
        ..emu.config()
    };
    for (who, config, refreshes_after) in [
        ("the service account", &service_account, 1),
        ("the user", &user, 2),
    ] {
        let t = request(config, instance).await;
        assert!(!t.from_store, "{who} read another principal's entry");
        assert_eq!(refreshes(&emu, project_instance), refreshes_after, "{who}");
        assert!(request(config, instance).await.from_store, "{who}");
    }
    let entries = host()
        .keyvalue_store()
        .keys(CONNECTOR_BUCKET)
        .unwrap()
        .into_iter()
        .filter(|k| k.ends_with(&format!("/{instance}/native")))
        .count();
    assert_eq!(entries, 2, "an entry per principal");
}
