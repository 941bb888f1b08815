//! An Admin API answer: two bytes of HTTP status, then the body. A 2xx passes
//! through; a 429 or Google's `RESOURCE_EXHAUSTED` is a `QuotaExceeded`
//! error and anything else an `AdminApi` error, with that status, and never
//! with the call's token in its text.
#![no_main]

use gcp_db_connector::{fuzzing, ErrorKind};
use gcp_db_connector_fuzz::status_and_body;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((status, body)) = status_and_body(data) else {
        return;
    };
    match fuzzing::admin_api_answer(status, body) {
        Ok(()) => assert!((200..300).contains(&status)),
        Err(e) => {
            let api = e
                .api_error()
                .unwrap_or_else(|| panic!("not an Admin API error: {e:?}"));
            assert_eq!(api.status, status);
            match e.kind() {
                ErrorKind::QuotaExceeded => {
                    assert!(status == 429 || api.code == "RESOURCE_EXHAUSTED")
                }
                ErrorKind::AdminApi => {
                    assert!(!(200..300).contains(&status) && status != 429);
                    assert_ne!(api.code, "RESOURCE_EXHAUSTED");
                }
                other => panic!("not an AdminApi or QuotaExceeded error: {other:?}"),
            }
            let text = e.to_string();
            assert!(!text.contains(fuzzing::ADMIN_API_TOKEN), "{text}");
        }
    }
});
