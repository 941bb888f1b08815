//! AlloyDB's PKI, modelled on Google's connector test fakes (spec §9.1, §9.5): per cluster
//! a root CA `root.alloydb` and an intermediate `client.alloydb` that signs client
//! certificates; per instance a server leaf signed by the root whose SANs are the
//! instance's addresses. Unlike Google's Go fake, the leaf is a proper end-entity
//! certificate (cA=false, EKU serverAuth, non-zero serial), so webpki accepts it.
//!
//! A cluster's instances share its CA: `generateClientCertificate` is a cluster method,
//! and a client certificate it issues must work at every instance of the cluster.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose, SanType,
    SubjectPublicKeyInfo,
};
use rsa::RsaPrivateKey;
use time::{Duration, OffsetDateTime};

use crate::certs::{
    ca_params, decode_rsa_public_key_der, dns_san, leaf_params, rsa_bits, rsa_spki, CertAuthority,
    CertInfo, ChainSpec, ServerChain, ServerChains, SigningKeyMaterial, BACKDATE, CA_LIFETIME,
};

/// Subject CN of every cluster's root CA.
pub const ROOT_CN: &str = "root.alloydb";
/// Subject CN of every cluster's intermediate (client-signing) CA.
pub const INTERMEDIATE_CN: &str = "client.alloydb";
/// The smallest RSA key `generateClientCertificate` accepts.
pub const MIN_RSA_BITS: usize = 2048;
/// The address in the `wrong-cn` certificate: right CA, someone else's identity.
pub const OTHER_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 255, 255, 1));
/// The DNS name in the `wrong-cn` certificate.
pub const OTHER_DNS: &str = "other.alloydb-psc.goog";

/// A DN with just a CN, as Google's AlloyDB fakes use.
fn cn_only(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// A cluster's certificate authorities.
#[derive(Debug)]
pub struct ClusterCa {
    /// `root.alloydb`: the only CA clients trust (`caCert`) and the proxy trusts.
    pub root: CertAuthority,
    /// `client.alloydb`, signed by the root: signs client certificates.
    pub intermediate: CertAuthority,
}

impl ClusterCa {
    /// Builds the root (from `root_key`) and the intermediate (from `intermediate_key`).
    pub fn build(
        root_key: &RsaPrivateKey,
        intermediate_key: &RsaPrivateKey,
    ) -> Result<Self, String> {
        let now = OffsetDateTime::now_utc();
        let (not_before, not_after) = (now - BACKDATE, now + CA_LIFETIME);
        let root_key = SigningKeyMaterial::from_rsa(root_key)?;
        let (p, serial) = ca_params(
            cn_only(ROOT_CN),
            not_before,
            not_after,
            BasicConstraints::Unconstrained,
        );
        let root = CertAuthority::self_signed(p, root_key.key_pair, serial)?;
        let int_key = SigningKeyMaterial::from_rsa(intermediate_key)?;
        let (p, serial) = ca_params(
            cn_only(INTERMEDIATE_CN),
            not_before,
            not_after,
            BasicConstraints::Constrained(0),
        );
        let intermediate = CertAuthority::signed_by(p, int_key.key_pair, serial, &root)?;
        Ok(Self { root, intermediate })
    }
}

/// What an instance's proxy can present: `[leaf, root]` for the instance's addresses,
/// signed by the cluster root (valid, expired, not yet valid); `[leaf, unrelated root]`
/// with the same names (`wrong_ca`); `[leaf, root]` signed by the right root for
/// [`OTHER_IP`] and [`OTHER_DNS`] only (`wrong_cn`); the leaf signed by itself. `ips` are
/// the instance's addresses and `psc_dns` (trailing dot allowed; the SAN has none) its
/// PSC name.
pub fn server_chains(
    ca: &ClusterCa,
    uid: &str,
    ips: &[IpAddr],
    psc_dns: Option<&str>,
    leaf_key: &RsaPrivateKey,
    unrelated: &CertAuthority,
) -> Result<ServerChains, String> {
    let now = OffsetDateTime::now_utc();
    let (not_before, not_after) = (now - BACKDATE, now + Duration::days(365));
    let key = SigningKeyMaterial::from_rsa(leaf_key)?;
    let mut sans: Vec<SanType> = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
    if let Some(dns) = psc_dns {
        sans.push(dns_san(dns.trim_end_matches('.'))?);
    }
    let cn = format!("{uid}.server.alloydb");
    let params = |cn: &str, sans: Vec<SanType>, nb, na| {
        leaf_params(
            cn_only(cn),
            sans,
            nb,
            na,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    };
    let (p, serial) = params(&cn, sans.clone(), not_before, not_after);
    let wrong_ca = unrelated.sign(&p, &key.key_pair, serial)?;
    let other_sans = vec![SanType::IpAddress(OTHER_IP), dns_san(OTHER_DNS)?];
    let leaf = |nb, na| params(&cn, sans.clone(), nb, na);
    ServerChains::build(
        &ChainSpec {
            leaf: &leaf,
            valid_until: not_after,
            issuer: &ca.root,
            tail: vec![ca.root.cert.der.clone()],
            key: &key,
        },
        ServerChain {
            certs: vec![wrong_ca.der, unrelated.cert.der.clone()],
        },
        params("other.server.alloydb", other_sans, not_before, not_after),
    )
}

/// Decodes `generateClientCertificate`'s `publicKey`: a PEM holding an RSA key of at least
/// [`MIN_RSA_BITS`], PKCS#1 (`RSA PUBLIC KEY`, what Go sends) or SubjectPublicKeyInfo
/// (`PUBLIC KEY`, what Python and Java send). Either body is accepted under either label.
pub fn decode_public_key(pem_text: &str) -> Result<SubjectPublicKeyInfo, String> {
    let block = pem::parse(pem_text.trim())
        .map_err(|e| format!("publicKey is not a PEM-encoded public key: {e}"))?;
    let key = decode_rsa_public_key_der(block.contents()).ok_or_else(|| {
        format!(
            "publicKey (PEM label {:?}) is not an RSA public key in PKCS#1 or \
             SubjectPublicKeyInfo form",
            block.tag()
        )
    })?;
    let bits = rsa_bits(&key);
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "publicKey is a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits are required"
        ));
    }
    rsa_spki(&key)
}

/// Issues a client certificate for `public_key`, signed by the cluster's intermediate:
/// empty subject (as Google's fakes), KeyUsage digitalSignature, EKU clientAuth,
/// NotBefore = now − 1 min, NotAfter = `not_after`.
pub fn issue_client_cert(
    ca: &ClusterCa,
    public_key: &SubjectPublicKeyInfo,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertInfo, String> {
    let (mut p, serial) = leaf_params(
        DistinguishedName::new(),
        vec![],
        now - Duration::minutes(1),
        not_after,
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    ca.intermediate.sign(&p, public_key, serial)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::certs::checks::{cn, parse};
    use crate::certs::generate_rsa_keys;
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::RootCertStore;
    use std::sync::{Arc, OnceLock};
    use x509_parser::prelude::*;

    /// Keys are slow to make; share a few between tests (also used by other modules').
    pub(crate) fn keys() -> &'static Vec<RsaPrivateKey> {
        static KEYS: OnceLock<Vec<RsaPrivateKey>> = OnceLock::new();
        KEYS.get_or_init(|| generate_rsa_keys(5).unwrap())
    }

    pub(crate) fn cluster_ca() -> &'static ClusterCa {
        static CA: OnceLock<ClusterCa> = OnceLock::new();
        CA.get_or_init(|| ClusterCa::build(&keys()[0], &keys()[1]).unwrap())
    }

    const UID: &str = "4a4e2d8a-36d6-4d7e-9b1c-0d1c9b7d0e11";
    const PSC: &str = "0123456789ab.abcdefghij123.us-central1.alloydb-psc.goog.";

    fn ips() -> Vec<IpAddr> {
        vec!["127.1.2.3".parse().unwrap(), "127.4.5.6".parse().unwrap()]
    }

    fn server() -> ServerChains {
        let unrelated = CertAuthority::unrelated(&keys()[3]).unwrap();
        server_chains(cluster_ca(), UID, &ips(), Some(PSC), &keys()[2], &unrelated).unwrap()
    }

    fn signed_by(child: &X509Certificate<'_>, parent: &X509Certificate<'_>) -> bool {
        child.issuer() == parent.subject()
            && child.verify_signature(Some(parent.public_key())).is_ok()
    }

    fn serial_nonzero(c: &X509Certificate<'_>) -> bool {
        c.tbs_certificate.raw_serial().iter().any(|b| *b != 0)
    }

    #[test]
    fn cluster_hierarchy() {
        let ca = cluster_ca();
        let root = parse(&ca.root.cert.der);
        let int = parse(&ca.intermediate.cert.der);
        assert_eq!(cn(&root).as_deref(), Some(ROOT_CN));
        assert_eq!(cn(&int).as_deref(), Some(INTERMEDIATE_CN));
        assert!(root.is_ca() && int.is_ca());
        assert!(signed_by(&root, &root));
        assert!(signed_by(&int, &root));
        let ku = int.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert!(serial_nonzero(&root) && serial_nonzero(&int));
    }

    #[test]
    fn server_leaf_is_a_proper_end_entity() {
        let s = server();
        let root = parse(&cluster_ca().root.cert.der);
        assert_eq!(s.valid.certs.len(), 2);
        assert_eq!(s.valid.certs[1], cluster_ca().root.cert.der);
        let leaf = parse(&s.valid.certs[0]);
        assert_eq!(cn(&leaf), Some(format!("{UID}.server.alloydb")));
        assert!(signed_by(&leaf, &root));
        assert!(!leaf.is_ca());
        let bc = leaf.basic_constraints().unwrap().unwrap().value;
        assert!(!bc.ca);
        let ku = leaf.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        assert!(serial_nonzero(&leaf));
        let san = leaf.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(
            san.general_names,
            vec![
                GeneralName::IPAddress(&[127, 1, 2, 3]),
                GeneralName::IPAddress(&[127, 4, 5, 6]),
                GeneralName::DNSName(PSC.trim_end_matches('.')),
            ]
        );

        // Same names, unrelated issuer.
        let bad_ca = parse(&s.wrong_ca.certs[0]);
        assert!(!signed_by(&bad_ca, &root));
        assert_eq!(
            bad_ca.subject_alternative_name().unwrap().unwrap().value,
            san
        );
        // Right issuer, other names.
        let bad_cn = parse(&s.wrong_cn.certs[0]);
        assert!(signed_by(&bad_cn, &root));
        assert_eq!(
            bad_cn
                .subject_alternative_name()
                .unwrap()
                .unwrap()
                .value
                .general_names,
            vec![
                GeneralName::IPAddress(&[10, 255, 255, 1]),
                GeneralName::DNSName(OTHER_DNS),
            ]
        );
    }

    /// What a client verifying with webpki (rustls) against `caCert` concludes.
    fn webpki_verifies(chain: &ServerChain, name: ServerName<'_>) -> Result<(), rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(cluster_ca().root.cert.der.clone()).unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        let intermediates: Vec<CertificateDer<'_>> = chain.certs[1..].to_vec();
        verifier
            .verify_server_cert(&chain.certs[0], &intermediates, &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn webpki_accepts_the_leaf_for_each_address_only() {
        let s = server();
        let ip = |t: &str| ServerName::IpAddress(t.parse::<IpAddr>().unwrap().into());
        let dns = |t: &str| ServerName::try_from(t.to_string()).unwrap();
        for name in [
            ip("127.1.2.3"),
            ip("127.4.5.6"),
            dns(PSC.trim_end_matches('.')),
        ] {
            webpki_verifies(&s.valid, name.clone()).unwrap();
            assert!(webpki_verifies(&s.wrong_ca, name.clone()).is_err());
            assert!(webpki_verifies(&s.wrong_cn, name).is_err());
        }
        assert!(webpki_verifies(&s.valid, ip("127.9.9.9")).is_err());
        for (chain, want) in [
            (&s.expired, "Expired"),
            (&s.not_yet_valid, "NotValidYet"),
            (&s.self_signed, "UnknownIssuer"),
        ] {
            let e = webpki_verifies(chain, ip("127.1.2.3")).unwrap_err();
            assert!(format!("{e:?}").contains(want), "{e:?}");
        }
        webpki_verifies(&s.wrong_cn, ip("10.255.255.1")).unwrap();
        webpki_verifies(&s.wrong_cn, dns(OTHER_DNS)).unwrap();
    }

    #[test]
    fn client_certs_chain_through_the_intermediate() {
        let client = keys()[4].to_public_key();
        let spki = client.to_public_key_der().unwrap().into_vec();
        let now = OffsetDateTime::now_utc();
        let not_after = now + Duration::seconds(600);
        for pem_text in [
            client.to_pkcs1_pem(LineEnding::LF).unwrap(),
            client.to_public_key_pem(LineEnding::LF).unwrap(),
        ] {
            let key = decode_public_key(&pem_text).unwrap();
            let info = issue_client_cert(cluster_ca(), &key, now, not_after).unwrap();
            let cert = parse(&info.der);
            assert!(signed_by(
                &cert,
                &parse(&cluster_ca().intermediate.cert.der)
            ));
            assert!(!signed_by(&cert, &parse(&cluster_ca().root.cert.der)));
            assert_eq!(cert.public_key().raw, spki.as_slice());
            assert!(!cert.is_ca());
            let ku = cert.key_usage().unwrap().unwrap().value;
            assert!(ku.digital_signature() && !ku.key_encipherment());
            let eku = cert.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.client_auth && !eku.server_auth);
            assert_eq!(
                cert.validity().not_after.timestamp(),
                not_after.unix_timestamp()
            );
            assert!(serial_nonzero(&cert));
        }
    }

    #[test]
    fn rejects_bad_public_keys() {
        assert!(decode_public_key("nonsense")
            .unwrap_err()
            .contains("not a PEM"));
        let junk = ::pem::encode(&::pem::Pem::new("PUBLIC KEY", vec![1, 2, 3]));
        assert!(decode_public_key(&junk)
            .unwrap_err()
            .contains("not an RSA public key"));
        let small = RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024)
            .unwrap()
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let e = decode_public_key(&small).unwrap_err();
        assert!(e.contains("1024-bit") && e.contains("2048"), "{e}");
    }
}
