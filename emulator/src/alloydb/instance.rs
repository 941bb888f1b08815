//! One emulated AlloyDB instance at run time: its addresses (each with a proxy listener on
//! port 5433), its uid, its cluster's CA, the server certificates its proxy presents and
//! how its metadata exchange behaves.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use rsa::RsaPrivateKey;
use tokio::net::TcpListener;

use super::certs::{server_chains, ClusterCa};
use super::mdx::MdxMode;
use super::proxy::ALLOYDB_PROXY_PORT;
use super::spec::{AlloyDbSpec, InstanceUri};
use crate::certs::{hex_lower, CertAuthority};
use crate::instance::{generate_name, PscEndpoint};
use crate::proxy::{self, ProxyControls};

/// A running AlloyDB instance.
pub struct AlloyDbInstance {
    /// How it was configured.
    pub spec: AlloyDbSpec,
    /// `instanceUid`: a random UUID, also in the server certificate's CN.
    pub uid: String,
    /// `ipAddress`.
    pub private_ip: IpAddr,
    /// `publicIpAddress`, if enabled.
    pub public_ip: Option<IpAddr>,
    /// Its PSC endpoint (`pscDnsName`), if enabled.
    pub psc: Option<PscEndpoint>,
    /// Its cluster's CA, shared with the cluster's other instances.
    pub ca: Arc<ClusterCa>,
    /// The server certificate its proxy presents, and the proxy's faults.
    pub controls: ProxyControls,
    mdx_mode: RwLock<MdxMode>,
}

impl std::fmt::Debug for AlloyDbInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlloyDbInstance")
            .field("uri", &self.spec.uri.to_string())
            .field("private_ip", &self.private_ip)
            .field("public_ip", &self.public_ip)
            .field("psc", &self.psc)
            .finish_non_exhaustive()
    }
}

impl AlloyDbInstance {
    /// Binds a proxy listener on port 5433 of each of the instance's addresses and prepares
    /// its certificates. The listeners come back for the caller to serve.
    pub async fn launch(
        spec: AlloyDbSpec,
        ca: Arc<ClusterCa>,
        leaf_key: &RsaPrivateKey,
        unrelated: &CertAuthority,
    ) -> Result<(Self, Vec<TcpListener>), String> {
        let ip_of = |l: &TcpListener| l.local_addr().map(|a| a.ip()).map_err(|e| e.to_string());
        let private = proxy::bind(spec.private_ip.fixed(), ALLOYDB_PROXY_PORT).await?;
        let private_ip = ip_of(&private)?;
        let mut listeners = vec![private];
        let mut ips = vec![private_ip];
        let public_ip = match spec.public_ip {
            Some(choice) => {
                let l = proxy::bind(choice.fixed(), ALLOYDB_PROXY_PORT).await?;
                let ip = ip_of(&l)?;
                listeners.push(l);
                ips.push(ip);
                Some(ip)
            }
            None => None,
        };
        let psc = match spec.psc {
            true => {
                let l = proxy::bind(None, ALLOYDB_PROXY_PORT).await?;
                let ip = ip_of(&l)?;
                listeners.push(l);
                ips.push(ip);
                Some(PscEndpoint {
                    ip,
                    dns_name: generate_psc_dns_name(&spec.uri.region),
                })
            }
            false => None,
        };
        let uid = generate_uid();
        let psc_dns = psc.as_ref().map(|p| p.dns_name.as_str());
        let chains = server_chains(&ca, &uid, &ips, psc_dns, leaf_key, unrelated)?;
        let controls = ProxyControls::new(&chains, &ca.root.cert.der, None)?;
        let instance = Self {
            spec,
            uid,
            private_ip,
            public_ip,
            psc,
            ca,
            controls,
            mdx_mode: RwLock::new(MdxMode::Normal),
        };
        Ok((instance, listeners))
    }

    /// Its URI.
    pub fn uri(&self) -> &InstanceUri {
        &self.spec.uri
    }

    /// How the proxy answers the next metadata exchange.
    pub fn mdx_mode(&self) -> MdxMode {
        self.mdx_mode
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets how the proxy answers metadata exchanges from now on.
    pub fn set_mdx_mode(&self, mode: MdxMode) {
        *self.mdx_mode.write().unwrap_or_else(|e| e.into_inner()) = mode;
    }
}

/// A PSC DNS name shaped like AlloyDB's: `<12 hex>.<13 alnum>.<region>.alloydb-psc.goog.`
pub fn generate_psc_dns_name(region: &str) -> String {
    generate_name(region, "alloydb-psc.goog.")
}

/// A random (version 4) UUID, as `instanceUid`.
pub fn generate_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex_lower(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psc_dns_name_shape() {
        let n = generate_psc_dns_name("europe-west1");
        let parts: Vec<&str> = n.split('.').collect();
        assert_eq!(parts.len(), 6, "{n}");
        assert_eq!(parts[0].len(), 12);
        assert!(parts[0].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(parts[1].len(), 13);
        assert!(parts[1]
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert!(n.ends_with(".europe-west1.alloydb-psc.goog."), "{n}");
    }

    #[test]
    fn uid_is_a_v4_uuid() {
        let u = generate_uid();
        let groups: Vec<&str> = u.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(groups[2].starts_with('4'));
        assert!(matches!(
            groups[3].chars().next(),
            Some('8' | '9' | 'a' | 'b')
        ));
        assert_ne!(u, generate_uid());
    }
}
