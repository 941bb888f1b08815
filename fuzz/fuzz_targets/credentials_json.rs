//! A credentials JSON as a caller or a file hands it in. A `Credentials`
//! error never shows the private key, client secret or refresh token.
#![no_main]

use gcp_db_connector::{fuzzing, ErrorKind};
use gcp_db_connector_fuzz::{assert_no_secret, with_sentinel_secrets};
use libfuzzer_sys::fuzz_target;

fn check(json: &[u8], sentinel: bool) {
    let Ok(json) = std::str::from_utf8(json) else {
        return;
    };
    match fuzzing::credentials_json(json) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::Credentials => {
            if sentinel {
                assert_no_secret(&e.to_string());
            }
        }
        Err(other) => panic!("not a Credentials error: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, false);
    if let Some(json) = with_sentinel_secrets(data) {
        check(&json, true);
    }
});
