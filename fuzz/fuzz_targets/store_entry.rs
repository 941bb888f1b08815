//! An entry read back from a host key-value store: untrusted, since anyone
//! who can write the store can write it. An entry the connector would use is
//! written anew the same way it reads (a fixed point after one pass), and
//! the TLS config built from it takes it or refuses it without a panic. The
//! same bytes as a record of the Admin API's refusals are not believed when
//! stamped more than 30 s after now (another host's clock), and otherwise
//! hold refreshes back at most one rate-limit interval (30 s) after their
//! stamp.
#![no_main]

use std::time::Duration;

use gcp_db_connector::fuzzing::{self, StoredRefusals};
use gcp_db_connector_fuzz::key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let interval = Duration::from_secs(30);
    let skew = Duration::from_secs(30);
    match fuzzing::store_refusals(data) {
        StoredRefusals::Unreadable => {}
        StoredRefusals::FromTheFuture { at } => {
            assert!(
                at > fuzzing::now() + skew,
                "a record of {at:?} was not believed"
            )
        }
        StoredRefusals::Holds(hold, _) => {
            assert!(hold <= skew + interval, "held back {hold:?}")
        }
    }
    if let Some(written) = fuzzing::store_entry(data, key()) {
        assert_eq!(
            fuzzing::store_entry(&written, key()).as_deref(),
            Some(written.as_slice()),
            "an entry written anew does not read back as written"
        );
    }
});
