//! Instance names as a caller gives them: Cloud SQL `project:region:instance`
//! (domain-scoped too) and AlloyDB URIs. A name that parses formats back to
//! itself and holds only URL-path-safe characters; one that does not is an
//! `InvalidInstanceName` naming the input.
#![no_main]

use gcp_db_connector::{AlloyDbInstanceUri, Error, ErrorKind, Instance, InstanceName};
use libfuzzer_sys::fuzz_target;

fn url_safe(part: &str) -> bool {
    !part.is_empty()
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
}

fn refused(name: &str, e: Error) {
    assert_eq!(
        e.kind(),
        ErrorKind::InvalidInstanceName,
        "{name:?}: not an InvalidInstanceName: {e:?}"
    );
    assert_eq!(e.instance(), Some(name));
    assert!(!e.message().is_empty());
}

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    match InstanceName::parse(name) {
        Ok(n) => {
            assert_eq!(n.to_string(), name);
            assert_eq!(InstanceName::parse(&n.to_string()).ok(), Some(n.clone()));
            assert!(url_safe(n.project()) && url_safe(n.region()) && url_safe(n.instance()));
            assert!(!n.region().contains(':') && !n.instance().contains(':'));
        }
        Err(e) => refused(name, e),
    }
    match AlloyDbInstanceUri::parse(name) {
        Ok(u) => {
            assert_eq!(u.to_string(), name);
            assert_eq!(
                AlloyDbInstanceUri::parse(&u.to_string()).ok(),
                Some(u.clone())
            );
            assert!(u.project().matches(':').count() <= 1);
            for part in [u.project(), u.region(), u.cluster(), u.instance()] {
                assert!(url_safe(part));
            }
            assert!(!u.cluster_path().ends_with('/'));
        }
        Err(e) => refused(name, e),
    }
    match Instance::parse(name) {
        Ok(i) => {
            assert_eq!(i.to_string(), name);
            let alloydb = name.starts_with("projects/");
            assert_eq!(matches!(i, Instance::AlloyDb(_)), alloydb);
        }
        Err(e) => refused(name, e),
    }
});
