//! A Cloud SQL refresh from hostile Admin API answers: `connectSettings`,
//! NUL, `generateEphemeralCert`. Either a typed error, or connection info
//! that holds a trust anchor and one client certificate for the connector's
//! key, expires after now, and comes back whole from a host store.
#![no_main]

use gcp_db_connector::fuzzing::{self, Accepted};
use gcp_db_connector::{Error, REFRESH_BUFFER};
use gcp_db_connector_fuzz::{cloudsql_instance, key, two_parts};
use libfuzzer_sys::fuzz_target;

fn check(r: Result<Accepted, Error>) {
    let a = match r {
        Ok(a) => a,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(a.trust_anchors >= 1);
    assert_eq!(a.client_chain, 1);
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
}

fuzz_target!(|data: &[u8]| {
    let (settings, cert) = two_parts(data);
    for iam in [false, true] {
        check(fuzzing::cloudsql_refresh(
            cloudsql_instance(),
            iam,
            settings,
            cert,
            key(),
        ));
    }
});
