//! A Cloud SQL refresh from hostile Admin API answers: `connectSettings`,
//! NUL, `generateEphemeralCert`. Either a typed error, or connection info
//! that holds a trust anchor and one client certificate for the connector's
//! key, expires after now, and comes back whole from a host store.
#![no_main]

use gcp_db_connector::fuzzing;
use gcp_db_connector_fuzz::{check_refresh, cloudsql_instance, key, two_parts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (settings, cert) = two_parts(data);
    for iam in [false, true] {
        let r = fuzzing::cloudsql_refresh(cloudsql_instance(), iam, settings, cert, key());
        if let Some(a) = check_refresh(r) {
            assert_eq!(a.client_chain, 1);
        }
    }
});
