//! One DER certificate as a server, the Admin API or a host store presents
//! it: the facts the connector reads, the ephemeral-certificate check, the
//! identity check and the full server verifier (trust anchors: the seed CA
//! and the certificate itself). A certificate is accepted for the CN, IP
//! and DNS names it presents, and the verifier never accepts what the
//! identity check refuses.
#![no_main]

use gcp_db_connector::fuzzing::{self, Identity};
use gcp_db_connector_fuzz::{key, SEED_CA};
use libfuzzer_sys::fuzz_target;

/// Any address: Cloud SQL's identity does not depend on it.
const DIALLED: &str = "10.0.0.2";

fn verify(der: &[u8], expected: Identity<'_>, dialled: &str) {
    let verified = fuzzing::verify_server(&[SEED_CA, der], der, &[], expected, dialled);
    if verified.is_ok() {
        assert_eq!(fuzzing::server_identity(der, expected, dialled), Ok(()));
    }
}

fuzz_target!(|der: &[u8]| {
    if let Ok(facts) = fuzzing::certificate_facts(der, key()) {
        if let Some(cn) = facts.common_name.as_deref().filter(|cn| !cn.is_empty()) {
            let by_cn = Identity::CloudSql {
                dns_name: None,
                common_name: cn,
            };
            assert_eq!(fuzzing::server_identity(der, by_cn, DIALLED), Ok(()));
        }
        for ip in &facts.ip_addresses {
            let dialled = ip.to_string();
            assert_eq!(
                fuzzing::server_identity(der, Identity::Address, &dialled),
                Ok(())
            );
        }
        for name in &facts.dns_names {
            let n = name.strip_suffix('.').unwrap_or(name);
            let matchable = !n.is_empty() && n.strip_prefix("*.").is_none_or(|r| r.contains('.'));
            if matchable {
                let by_san = Identity::CloudSql {
                    dns_name: Some(name),
                    common_name: "",
                };
                assert_eq!(fuzzing::server_identity(der, by_san, DIALLED), Ok(()));
            }
        }
        if let Ok(not_after) = facts.as_client_cert {
            assert_eq!(not_after, facts.not_after);
            assert!(not_after > fuzzing::now());
        }
    }
    let cloudsql = Identity::CloudSql {
        dns_name: Some("db.example.com"),
        common_name: "proj:db",
    };
    verify(der, cloudsql, DIALLED);
    verify(der, Identity::Address, DIALLED);
    verify(der, Identity::Address, "db.example.com");
});
