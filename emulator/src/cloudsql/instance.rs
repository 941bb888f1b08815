//! One emulated Cloud SQL instance at run time: its settings, certificates, addresses
//! (each with a proxy listener on port 3307) and the server certificate its proxy currently
//! presents; and the instances by the key the Admin API paths give.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use rsa::RsaPrivateKey;
use tokio::net::TcpListener;

use super::certs::{InstanceCerts, InstanceKeys};
use super::spec::{CaMode, InstanceSpec};
use crate::certs::CertAuthority;
use crate::instance::{generate_name, PscEndpoint};
use crate::proxy::{self, ProxyControls};

/// Google's server-side proxy port for Cloud SQL; clients always dial `<ip>:3307`.
pub const SERVER_PROXY_PORT: u16 = 3307;

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
    /// Builds the instance's certificates (taking its keys from `keys`), then binds a proxy
    /// listener on port 3307 of each of its addresses. The listeners come back for the
    /// caller to serve.
    pub async fn launch(
        spec: &InstanceSpec,
        keys: &mut Vec<RsaPrivateKey>,
        unrelated: &CertAuthority,
    ) -> Result<(Self, Vec<TcpListener>), String> {
        let dns_name = (spec.ca_mode == CaMode::Cas).then(|| generate_dns_name(&spec.region));
        let ikeys = InstanceKeys::take(spec.ca_mode, keys)?;
        let certs = InstanceCerts::build(spec, dns_name.as_deref(), ikeys, unrelated)?;
        let (public, public_ip) = proxy::bind_ip(spec.public_ip, SERVER_PROXY_PORT).await?;
        let private = match spec.private_ip {
            Some(choice) => Some(proxy::bind_ip(choice.fixed(), SERVER_PROXY_PORT).await?),
            None => None,
        };
        let psc = match spec.psc {
            true => Some(proxy::bind_ip(None, SERVER_PROXY_PORT).await?),
            false => None,
        };
        let private_ip = private.as_ref().map(|(_, ip)| *ip);
        let psc_endpoint = psc.as_ref().map(|(_, ip)| PscEndpoint {
            ip: *ip,
            dns_name: generate_psc_dns_name(&spec.region),
        });
        let inst = Self::new(
            spec.clone(),
            public_ip,
            private_ip,
            psc_endpoint,
            dns_name,
            certs,
        )?;
        let listeners = [Some(public), private.map(|(l, _)| l), psc.map(|(l, _)| l)]
            .into_iter()
            .flatten()
            .collect();
        Ok((inst, listeners))
    }

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

/// The Cloud SQL instances by `project:instance`, the key the Admin API paths give.
#[derive(Debug, Default)]
pub struct Instances(HashMap<String, Arc<Instance>>);

impl FromIterator<Arc<Instance>> for Instances {
    fn from_iter<I: IntoIterator<Item = Arc<Instance>>>(iter: I) -> Self {
        Self(iter.into_iter().map(|i| (i.spec.api_key(), i)).collect())
    }
}

impl Instances {
    /// The instance with Admin API key `project:instance`, if any.
    pub fn get(&self, api_key: &str) -> Option<&Arc<Instance>> {
        self.0.get(api_key)
    }

    /// The instance with connection name `project:region:name`, if any.
    pub fn by_connection_name(&self, name: &str) -> Option<&Arc<Instance>> {
        self.0.values().find(|i| i.spec.connection_name() == name)
    }

    /// The instance in `region` one of whose DNS names (its `sql.goog.` name if it has a
    /// CAS CA, its PSC name if PSC is on) is `dns_name`, compared case-insensitively with
    /// a trailing dot ignored.
    pub fn by_dns_name(&self, dns_name: &str, region: &str) -> Option<&Arc<Instance>> {
        let bare = |n: &str| n.strip_suffix('.').unwrap_or(n).to_ascii_lowercase();
        let want = bare(dns_name);
        self.0.values().find(|i| {
            i.spec.region == region
                && i.dns_name
                    .iter()
                    .chain(i.psc.as_ref().map(|p| &p.dns_name))
                    .any(|n| bare(n) == want)
        })
    }

    /// Every instance, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Instance>> {
        self.0.values()
    }
}

/// A DNS name shaped like Google's: `<12 hex>.<13 lowercase alnum>.<region>.sql.goog.`
pub fn generate_dns_name(region: &str) -> String {
    generate_name(region, "sql.goog.")
}

/// A PSC DNS name shaped like Google's: `….<region>.sql-psc.goog.`
pub fn generate_psc_dns_name(region: &str) -> String {
    generate_name(region, "sql-psc.goog.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::checks::assert_google_name;

    #[test]
    fn dns_name_shape() {
        assert_google_name(&generate_dns_name("us-central1"), ".us-central1.sql.goog.");
    }
}
