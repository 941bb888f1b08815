//! One emulated Cloud SQL instance at run time: its settings, certificates, public IP and
//! the server certificate its proxy currently presents.

use std::net::IpAddr;

use rand::distributions::{Alphanumeric, DistString};

use crate::certs::{hex_lower, InstanceCerts};
use crate::config::InstanceSpec;
use crate::proxy::ProxyControls;

/// A running instance.
pub struct Instance {
    /// How it was configured.
    pub spec: InstanceSpec,
    /// The address its proxy listens on (port 3307).
    pub public_ip: IpAddr,
    /// Its private address, if it has one (the same proxy listens there too).
    pub private_ip: Option<IpAddr>,
    /// Its Private Service Connect endpoint, if enabled.
    pub psc: Option<PscEndpoint>,
    /// `<12 hex>.<13 alnum>.<region>.sql.goog.` for CAS instances (with the trailing dot).
    pub dns_name: Option<String>,
    /// Its certificates.
    pub certs: InstanceCerts,
    /// The server certificate its proxy presents, and the proxy's faults.
    pub controls: ProxyControls,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("name", &self.spec.connection_name())
            .field("public_ip", &self.public_ip)
            .field("private_ip", &self.private_ip)
            .field("dns_name", &self.dns_name)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// Prepares the proxy's TLS server configurations up front, so switching the
    /// presented certificate is instant.
    pub fn new(
        spec: InstanceSpec,
        public_ip: IpAddr,
        private_ip: Option<IpAddr>,
        psc: Option<PscEndpoint>,
        dns_name: Option<String>,
        certs: InstanceCerts,
    ) -> Result<Self, String> {
        let controls =
            ProxyControls::new(&certs.server, &certs.client_ca.cert.der, spec.tls_suite)?;
        Ok(Self {
            controls,
            spec,
            public_ip,
            private_ip,
            psc,
            dns_name,
            certs,
        })
    }
}

/// A Private Service Connect endpoint: an address and the DNS name that
/// should resolve to it (clients resolve it themselves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PscEndpoint {
    /// Where the proxy listens for it (port 3307, or 5433 for AlloyDB).
    pub ip: IpAddr,
    /// `<12 hex>.<13 alnum>.<region>.sql-psc.goog.` (AlloyDB: `….alloydb-psc.goog.`),
    /// with the trailing dot.
    pub dns_name: String,
}

/// A DNS name shaped like Google's: `<12 hex>.<13 lowercase alnum>.<region>.sql.goog.`
pub fn generate_dns_name(region: &str) -> String {
    generate_name(region, "sql.goog.")
}

/// A PSC DNS name shaped like Google's: `….<region>.sql-psc.goog.`
pub fn generate_psc_dns_name(region: &str) -> String {
    generate_name(region, "sql-psc.goog.")
}

/// `<12 hex>.<13 lowercase alnum>.<region>.<domain>`.
pub(crate) fn generate_name(region: &str, domain: &str) -> String {
    let a: [u8; 6] = rand::random();
    let b = Alphanumeric
        .sample_string(&mut rand::thread_rng(), 13)
        .to_ascii_lowercase();
    format!("{}.{b}.{region}.{domain}", hex_lower(&a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_name_shape() {
        let n = generate_dns_name("us-central1");
        let parts: Vec<&str> = n.split('.').collect();
        assert_eq!(parts.len(), 6, "{n}");
        assert_eq!(parts[0].len(), 12);
        assert!(parts[0].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(parts[1].len(), 13);
        assert!(parts[1]
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert!(n.ends_with(".us-central1.sql.goog."));
    }
}
