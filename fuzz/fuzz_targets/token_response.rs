//! A token endpoint's (or the metadata server's, or STS's) answer, and IAM
//! Credentials' `generateAccessToken` answer: two bytes of HTTP status, then
//! the body. A token only from a 2xx; errors are `Credentials` errors that
//! never show the token or another secret of the body.
#![no_main]

use gcp_db_connector::{fuzzing, ErrorKind};
use gcp_db_connector_fuzz::{assert_no_secret, status_and_body, with_sentinel_secrets};
use libfuzzer_sys::fuzz_target;

fn check(status: u16, body: &[u8], sentinel: bool) {
    for answer in [
        fuzzing::token_response(status, body),
        fuzzing::impersonation_response(status, body),
    ] {
        match answer {
            Ok(_) => assert!((200..300).contains(&status)),
            Err(e) if e.kind() == ErrorKind::Credentials => {
                if sentinel {
                    assert_no_secret(&e.to_string());
                }
            }
            Err(other) => panic!("not a Credentials error: {other:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((status, body)) = status_and_body(data) else {
        return;
    };
    check(status, body, false);
    if let Some(body) = with_sentinel_secrets(body) {
        check(status, &body, true);
    }
});
