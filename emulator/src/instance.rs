//! What both services' instances share: a Private Service Connect endpoint and the shape
//! of the DNS names Google generates for them.

use std::net::IpAddr;

use rand::distributions::{Alphanumeric, DistString};

use crate::certs::hex_lower;

/// A Private Service Connect endpoint: an address and the DNS name that
/// should resolve to it (clients resolve it themselves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PscEndpoint {
    /// Where the proxy listens for it (on the service's proxy port).
    pub ip: IpAddr,
    /// `<12 hex>.<13 alnum>.<region>.sql-psc.goog.` (AlloyDB: `….alloydb-psc.goog.`),
    /// with the trailing dot.
    pub dns_name: String,
}

/// `<12 hex>.<13 lowercase alnum>.<region>.<domain>`.
pub(crate) fn generate_name(region: &str, domain: &str) -> String {
    let a: [u8; 6] = rand::random();
    let b = Alphanumeric
        .sample_string(&mut rand::thread_rng(), 13)
        .to_ascii_lowercase();
    format!("{}.{b}.{region}.{domain}", hex_lower(&a))
}

/// Checks shared by the services' name tests.
#[cfg(test)]
pub(crate) mod checks {
    /// Asserts that `name` is `<12 hex>.<13 lowercase alnum>.` followed by `suffix`
    /// (`<region>.<domain>`, one dot inside the domain).
    pub(crate) fn assert_google_name(name: &str, suffix: &str) {
        let parts: Vec<&str> = name.split('.').collect();
        assert_eq!(parts.len(), 6, "{name}");
        assert_eq!(parts[0].len(), 12);
        assert!(parts[0].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(parts[1].len(), 13);
        assert!(parts[1]
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert!(name.ends_with(suffix), "{name}");
    }
}
