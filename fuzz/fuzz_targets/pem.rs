//! PEM certificate lists as the Admin APIs send them (`serverCaCert`,
//! `caCert`, `pemCertificateChain[]`, the ephemeral certificate). Whatever
//! parses re-armors to the same DER, and each certificate's facts decode
//! without a panic.
#![no_main]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use gcp_db_connector::fuzzing;
use gcp_db_connector_fuzz::key;
use libfuzzer_sys::fuzz_target;

fn armor(der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

fuzz_target!(|data: &[u8]| {
    let Ok(pem) = std::str::from_utf8(data) else {
        return;
    };
    let Some(ders) = fuzzing::pem_certificates(pem) else {
        return;
    };
    assert!(!ders.is_empty());
    let again: String = ders.iter().map(|d| armor(d)).collect();
    assert_eq!(fuzzing::pem_certificates(&again), Some(ders.clone()));
    for der in &ders {
        let _ = fuzzing::certificate_facts(der, key());
    }
});
