//! One emulated AlloyDB instance at run time: its addresses (each with a proxy listener on
//! port 5433), its uid, its cluster's CA, the server certificates its proxy presents and
//! how its metadata exchange behaves; and the instances by URI.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use rsa::RsaPrivateKey;
use tokio::net::TcpListener;

use super::certs::{server_chains, ClusterCa};
use super::mdx::MdxMode;
use super::spec::{AlloyDbSpec, InstanceUri};
use crate::certs::{hex_uuid, take_key, CertAuthority};
use crate::instance::{generate_name, PscEndpoint};
use crate::proxy::{self, ProxyControls};

/// AlloyDB's server-side proxy port; clients always dial `<ip>:5433`.
pub const ALLOYDB_PROXY_PORT: u16 = 5433;

/// The CAs of the clusters launched so far, by cluster (`projects/P/locations/R/clusters/C`):
/// a cluster's instances share one.
pub type ClusterCas = HashMap<String, Arc<ClusterCa>>;

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
    /// How many RSA keys [`AlloyDbInstance::launch`] takes for `spec`: one for its server
    /// leaf, plus its cluster's root and intermediate if the cluster is not in `clusters`
    /// (the clusters counted so far), which it then joins.
    pub fn keys_needed(spec: &AlloyDbSpec, clusters: &mut HashSet<String>) -> usize {
        1 + 2 * usize::from(clusters.insert(spec.uri.cluster_parent()))
    }

    /// Takes the CA of the instance's cluster from `clusters`, or builds it; binds a proxy
    /// listener on port 5433 of each of the instance's addresses and prepares its
    /// certificates. Keys come from `keys`. The listeners come back for the caller to serve.
    pub async fn launch(
        spec: &AlloyDbSpec,
        keys: &mut Vec<RsaPrivateKey>,
        clusters: &mut ClusterCas,
        unrelated: &CertAuthority,
    ) -> Result<(Self, Vec<TcpListener>), String> {
        let ca = cluster_ca(spec, keys, clusters)?;
        let leaf_key = take_key(keys)?;
        let (private, private_ip) =
            proxy::bind_ip(spec.private_ip.fixed(), ALLOYDB_PROXY_PORT).await?;
        let mut listeners = vec![private];
        let mut ips = vec![private_ip];
        let public_ip = match spec.public_ip {
            Some(choice) => {
                let (l, ip) = proxy::bind_ip(choice.fixed(), ALLOYDB_PROXY_PORT).await?;
                listeners.push(l);
                ips.push(ip);
                Some(ip)
            }
            None => None,
        };
        let psc = match spec.psc {
            true => {
                let (l, ip) = proxy::bind_ip(None, ALLOYDB_PROXY_PORT).await?;
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
        let chains = server_chains(&ca, &uid, &ips, psc_dns, &leaf_key, unrelated)?;
        let controls = ProxyControls::new(&chains, &ca.root.cert.der, None)?;
        let instance = Self {
            spec: spec.clone(),
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

/// The CA of `spec`'s cluster: from `clusters`, or built from the next two of `keys` and
/// added.
fn cluster_ca(
    spec: &AlloyDbSpec,
    keys: &mut Vec<RsaPrivateKey>,
    clusters: &mut ClusterCas,
) -> Result<Arc<ClusterCa>, String> {
    let parent = spec.uri.cluster_parent();
    if let Some(ca) = clusters.get(&parent) {
        return Ok(ca.clone());
    }
    let root_key = take_key(keys)?;
    let ca = Arc::new(ClusterCa::build(&root_key, &take_key(keys)?)?);
    clusters.insert(parent, ca.clone());
    Ok(ca)
}

/// The AlloyDB instances by URI.
#[derive(Debug, Default)]
pub struct Instances(HashMap<String, Arc<AlloyDbInstance>>);

impl FromIterator<Arc<AlloyDbInstance>> for Instances {
    fn from_iter<I: IntoIterator<Item = Arc<AlloyDbInstance>>>(iter: I) -> Self {
        Self(iter.into_iter().map(|i| (i.uri().to_string(), i)).collect())
    }
}

impl Instances {
    /// The instance with URI `uri`, if any.
    pub fn get(&self, uri: &str) -> Option<&Arc<AlloyDbInstance>> {
        self.0.get(uri)
    }

    /// The CA of cluster `parent` (`projects/P/locations/R/clusters/C`), if the emulator has
    /// an instance in it.
    pub fn cluster_ca(&self, parent: &str) -> Option<&Arc<ClusterCa>> {
        self.0
            .values()
            .find(|i| i.uri().cluster_parent() == parent)
            .map(|i| &i.ca)
    }

    /// Every instance, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<AlloyDbInstance>> {
        self.0.values()
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
    hex_uuid(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::checks::assert_google_name;

    #[test]
    fn psc_dns_name_shape() {
        let n = generate_psc_dns_name("europe-west1");
        assert_google_name(&n, ".europe-west1.alloydb-psc.goog.");
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
