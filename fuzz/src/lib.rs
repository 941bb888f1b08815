//! What the fuzz targets share: the fixed key and CA the seeds were issued
//! with, the fixed instances, input splitting, and the secret-leak check.

use std::sync::OnceLock;

use gcp_db_connector::fuzzing::{self, Accepted, FuzzKey};
use gcp_db_connector::{AlloyDbInstanceUri, Error, InstanceName, REFRESH_BUFFER};

/// The connector's RSA key in every target (the seed certificates are for
/// it): `seeds/key.pem`, a fixture made for fuzzing, guarding nothing.
pub fn key() -> &'static FuzzKey {
    static KEY: OnceLock<FuzzKey> = OnceLock::new();
    KEY.get_or_init(|| {
        FuzzKey::from_pem(include_str!("../seeds/key.pem")).expect("seeds/key.pem is an RSA key")
    })
}

/// The CA (DER) that issued the seed certificates.
pub const SEED_CA: &[u8] = include_bytes!("../seeds/ca.der");

/// The Cloud SQL instance the seed answers are for.
pub fn cloudsql_instance() -> &'static InstanceName {
    static NAME: OnceLock<InstanceName> = OnceLock::new();
    NAME.get_or_init(|| InstanceName::parse(CLOUDSQL_INSTANCE).expect("a valid name"))
}

/// Its connection name.
pub const CLOUDSQL_INSTANCE: &str = "proj:us-central1:db";

/// The AlloyDB instance the seed answers are for.
pub fn alloydb_instance() -> &'static AlloyDbInstanceUri {
    static URI: OnceLock<AlloyDbInstanceUri> = OnceLock::new();
    URI.get_or_init(|| AlloyDbInstanceUri::parse(ALLOYDB_INSTANCE).expect("a valid URI"))
}

/// Its URI.
pub const ALLOYDB_INSTANCE: &str = "projects/proj/locations/us-central1/clusters/c/instances/i";

/// What every accepted refresh must be: at least one trust anchor and one
/// client certificate, an expiry after now, and, when fresh enough to be
/// stored, an entry that reads back from the store as written. Returns it
/// for the service's own checks; an error is only displayed.
pub fn check_refresh(result: Result<Accepted, Error>) -> Option<Accepted> {
    let a = match result {
        Ok(a) => a,
        Err(e) => {
            let _ = e.to_string();
            return None;
        }
    };
    assert!(a.trust_anchors >= 1);
    assert!(a.client_chain >= 1);
    assert!(a.expiry > fuzzing::now());
    if let Err(e) = &a.tls_config {
        let _ = e.to_string();
    }
    if a.expiry > fuzzing::now() + REFRESH_BUFFER {
        assert_eq!(
            fuzzing::store_entry(&a.stored, key()).as_deref(),
            Some(a.stored.as_slice()),
            "the stored entry does not read back as written"
        );
    }
    Some(a)
}

/// Two answers in one input, split at the first NUL (JSON never holds a raw
/// NUL, so seeds stay readable).
pub fn two_parts(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// An HTTP status from the first two bytes (big-endian), and the body after.
pub fn status_and_body(data: &[u8]) -> Option<(u16, &[u8])> {
    match data {
        [a, b, body @ ..] => Some((u16::from_be_bytes([*a, *b]), body)),
        _ => None,
    }
}

/// Stands in for every secret of an input in [`with_sentinel_secrets`].
pub const SENTINEL: &str = "SENTINEL-secret-5f3a9c";

/// `body` with the value of each secret field (and a bare JSON string, which
/// is what a double-encoded credentials file is) replaced by [`SENTINEL`];
/// `None` if it holds none (or the sentinel itself). An error message about the result that shows the
/// sentinel would show a real secret: the check has no false alarm when a
/// secret happens to equal words of the message.
pub fn with_sentinel_secrets(body: &[u8]) -> Option<Vec<u8>> {
    const SECRET_FIELDS: [&str; 5] = [
        "access_token",
        "private_key",
        "client_secret",
        "refresh_token",
        "id_token",
    ];
    let sentinel = || serde_json::Value::String(SENTINEL.into());
    if body
        .windows(SENTINEL.len())
        .any(|w| w == SENTINEL.as_bytes())
    {
        return None;
    }
    match serde_json::from_slice::<serde_json::Value>(body).ok()? {
        serde_json::Value::String(_) => serde_json::to_vec(&sentinel()).ok(),
        serde_json::Value::Object(mut map) => {
            let mut any = false;
            for field in SECRET_FIELDS {
                if let Some(v @ serde_json::Value::String(_)) = map.get_mut(field) {
                    *v = sentinel();
                    any = true;
                }
            }
            any.then(|| serde_json::to_vec(&map).ok()).flatten()
        }
        _ => None,
    }
}

/// Panics if an error message shows the [`SENTINEL`].
pub fn assert_no_secret(message: &str) {
    assert!(
        !message.contains(SENTINEL),
        "an error message shows a secret of the input: {message:?}"
    );
}
