//! An AlloyDB refresh from hostile Admin API answers: `connectionInfo`, NUL,
//! `generateClientCertificate`. Either a typed error, or connection info that
//! holds a trust anchor and a client chain led by a certificate for the
//! connector's key, expires after now, and comes back whole from a host
//! store.
#![no_main]

use gcp_db_connector::fuzzing;
use gcp_db_connector::REFRESH_BUFFER;
use gcp_db_connector_fuzz::{alloydb_instance, key, two_parts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (info, cert) = two_parts(data);
    let a = match fuzzing::alloydb_refresh(alloydb_instance(), false, info, cert, key()) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.to_string();
            return;
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
});
