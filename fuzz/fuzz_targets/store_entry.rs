//! An entry read back from a host key-value store: untrusted, since anyone
//! who can write the store can write it. An entry the connector would use is
//! written anew the same way it reads (a fixed point after one pass), and
//! the TLS config built from it takes it or refuses it without a panic. The
//! same bytes as a record of the Admin API's refusals hold refreshes back
//! for one rate-limit interval (30 s) at most.
#![no_main]

use std::time::Duration;

use gcp_db_connector::fuzzing;
use gcp_db_connector_fuzz::key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((hold, _)) = fuzzing::store_refusals(data) {
        assert!(hold <= Duration::from_secs(30), "held back {hold:?}");
    }
    if let Some(written) = fuzzing::store_entry(data, key()) {
        assert_eq!(
            fuzzing::store_entry(&written, key()).as_deref(),
            Some(written.as_slice()),
            "an entry written anew does not read back as written"
        );
    }
});
