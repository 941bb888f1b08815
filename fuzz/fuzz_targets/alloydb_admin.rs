//! An AlloyDB refresh from hostile Admin API answers: `connectionInfo`, NUL,
//! `generateClientCertificate`. Either a typed error, or connection info that
//! holds a trust anchor and a client chain led by a certificate for the
//! connector's key, expires after now, and comes back whole from a host
//! store.
#![no_main]

use gcp_db_connector::fuzzing;
use gcp_db_connector_fuzz::{alloydb_instance, check_refresh, key, two_parts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (info, cert) = two_parts(data);
    check_refresh(fuzzing::alloydb_refresh(
        alloydb_instance(),
        false,
        info,
        cert,
        key(),
    ));
});
