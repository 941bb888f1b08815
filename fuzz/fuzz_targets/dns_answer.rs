//! A DoH resolver's answer, to every query of a resolution (CNAME steps
//! included): it resolves to an instance name that parses, or fails with a
//! DNS, Admin API or instance-metadata error naming the name, never with the
//! Admin API token in its text.
#![no_main]

use gcp_db_connector::{fuzzing, ErrorKind, Instance};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match fuzzing::dns_resolution(data) {
        Ok(name) => {
            Instance::parse(&name).unwrap_or_else(|e| panic!("{name:?} does not parse: {e}"));
        }
        Err(e) => {
            let text = e.to_string();
            assert!(!text.contains(fuzzing::ADMIN_API_TOKEN), "{text}");
            match e.kind() {
                ErrorKind::Dns => assert!(text.contains(fuzzing::DNS_NAME), "{text}"),
                ErrorKind::AdminApi | ErrorKind::QuotaExceeded | ErrorKind::InstanceMetadata => {}
                other => panic!("unexpected {other:?}: {text}"),
            }
        }
    }
});
