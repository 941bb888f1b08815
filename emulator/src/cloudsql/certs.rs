//! Cloud SQL's PKI, shaped like Google's: per instance a server CA hierarchy (legacy: one
//! self-signed root; CAS: root and intermediate), the server leaves its proxy presents
//! (valid and the deliberately wrong variants), and a client CA that signs ephemeral client
//! certificates.

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, SanType, SubjectPublicKeyInfo,
};
use rsa::RsaPrivateKey;
use time::{Duration, OffsetDateTime};

use super::spec::{CaMode, InstanceSpec};
use crate::certs::{
    ca_params, decode_rsa_public_key_der, dns_san, hex_uuid, leaf_params, name, rsa_spki, take_key,
    CertAuthority, CertInfo, ChainSpec, ServerChain, ServerChains, SigningKeyMaterial, BACKDATE,
    CA_LIFETIME, ORG_LEGACY,
};

/// Organisation in CAS certificate names.
pub const ORG_CAS: &str = "Google LLC";
/// Subject CN of every ephemeral client certificate.
pub const CLIENT_CERT_CN: &str = "Google Cloud SQL Client";

/// The keys one instance needs.
pub struct InstanceKeys {
    /// Server CA root.
    pub server_root: RsaPrivateKey,
    /// CAS intermediate (unused for legacy).
    pub server_intermediate: Option<RsaPrivateKey>,
    /// Server leaf (shared by every server-certificate variant).
    pub server_leaf: RsaPrivateKey,
    /// Client signing CA.
    pub client_ca: RsaPrivateKey,
}

impl InstanceKeys {
    /// How many RSA keys an instance in `mode` needs.
    pub fn count(mode: CaMode) -> usize {
        match mode {
            CaMode::Legacy => 3,
            CaMode::Cas => 4,
        }
    }

    /// Takes the keys for `mode` from `keys`.
    pub fn take(mode: CaMode, keys: &mut Vec<RsaPrivateKey>) -> Result<Self, String> {
        Ok(Self {
            server_root: take_key(keys)?,
            server_intermediate: match mode {
                CaMode::Legacy => None,
                CaMode::Cas => Some(take_key(keys)?),
            },
            server_leaf: take_key(keys)?,
            client_ca: take_key(keys)?,
        })
    }
}

/// Everything certificate-related about one instance.
pub struct InstanceCerts {
    /// `serverCaCert.cert`: the root (legacy) or intermediate + root (CAS).
    pub server_ca_pem: String,
    /// The certificate `serverCaCert`'s other fields describe (the first in the PEM).
    pub server_ca: CertInfo,
    /// Signs ephemeral client certificates; the proxy trusts only it.
    pub client_ca: CertAuthority,
    /// What the proxy can present.
    pub server: ServerChains,
}

impl std::fmt::Debug for InstanceCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceCerts")
            .field("server_ca", &self.server_ca.common_name)
            .finish_non_exhaustive()
    }
}

impl InstanceCerts {
    /// Builds the server CA hierarchy, the server leaves and the client CA for `spec`.
    /// `dns_name` is the instance DNS name (with its trailing dot) for CAS instances.
    pub fn build(
        spec: &InstanceSpec,
        dns_name: Option<&str>,
        keys: InstanceKeys,
        unrelated: &CertAuthority,
    ) -> Result<Self, String> {
        let now = OffsetDateTime::now_utc();
        let leaf_key = SigningKeyMaterial::from_rsa(&keys.server_leaf)?;
        let server = match spec.ca_mode {
            CaMode::Legacy => legacy_server(spec, &keys, &leaf_key, unrelated, now)?,
            CaMode::Cas => {
                let dns = dns_name.ok_or("a CAS instance needs a DNS name")?;
                cas_server(spec, dns, &keys, &leaf_key, unrelated, now)?
            }
        };
        Ok(Self {
            server_ca_pem: server.ca_pem,
            server_ca: server.ca,
            client_ca: client_ca(spec, &keys.client_ca, now)?,
            server: server.chains,
        })
    }
}

/// An instance's server side: what `serverCaCert` reports and what the proxy presents.
struct ServerSide {
    /// `serverCaCert.cert`.
    ca_pem: String,
    /// The first certificate in `ca_pem`.
    ca: CertInfo,
    /// What the proxy can present.
    chains: ServerChains,
}

/// The legacy server side: a self-signed root with a `dnQualifier` signs a leaf whose CN
/// is `project:instance`, valid as long as the root.
fn legacy_server(
    spec: &InstanceSpec,
    keys: &InstanceKeys,
    leaf_key: &SigningKeyMaterial,
    unrelated: &CertAuthority,
    now: OffsetDateTime,
) -> Result<ServerSide, String> {
    let (not_before, not_after) = (now - BACKDATE, now + CA_LIFETIME);
    let root_key = SigningKeyMaterial::from_rsa(&keys.server_root)?;
    let (p, serial) = ca_params(
        name(
            ORG_LEGACY,
            Some("Google Cloud SQL Server CA"),
            Some(&dn_qualifier()),
        ),
        not_before,
        not_after,
        BasicConstraints::Unconstrained,
    );
    let root = CertAuthority::self_signed(p, root_key.key_pair, serial)?;
    let cn = format!("{}:{}", spec.project, spec.name);
    let leaf = |nb, na| server_leaf(ORG_LEGACY, Some(&cn), vec![], nb, na);
    let other = server_leaf(
        ORG_LEGACY,
        Some(&other_instance_cn(spec)),
        vec![],
        not_before,
        not_after,
    );
    let chain = ChainSpec {
        leaf: &leaf,
        valid_until: not_after,
        issuer: &root,
        tail: vec![],
        key: leaf_key,
    };
    Ok(ServerSide {
        ca_pem: root.cert.pem.clone(),
        ca: root.cert.clone(),
        chains: server_chains(&chain, not_before, unrelated, other)?,
    })
}

/// The CAS server side: a root and an intermediate (both reported, intermediate first)
/// sign a one-year leaf with no CN whose one SAN is the instance's DNS name `dns`.
fn cas_server(
    spec: &InstanceSpec,
    dns: &str,
    keys: &InstanceKeys,
    leaf_key: &SigningKeyMaterial,
    unrelated: &CertAuthority,
    now: OffsetDateTime,
) -> Result<ServerSide, String> {
    let (not_before, one_year) = (now - BACKDATE, now + Duration::days(365));
    let (root, inter) = cas_authorities(keys, not_before, now + CA_LIFETIME)?;
    let san = dns_san(dns)?;
    let leaf = |nb, na| server_leaf(ORG_CAS, None, vec![san.clone()], nb, na);
    let other = server_leaf(
        ORG_CAS,
        Some(&other_instance_cn(spec)),
        vec![dns_san(&other_dns_name(dns))?],
        not_before,
        one_year,
    );
    let chain = ChainSpec {
        leaf: &leaf,
        valid_until: one_year,
        issuer: &inter,
        tail: vec![inter.cert.der.clone()],
        key: leaf_key,
    };
    Ok(ServerSide {
        ca_pem: format!("{}{}", inter.cert.pem, root.cert.pem),
        ca: inter.cert.clone(),
        chains: server_chains(&chain, not_before, unrelated, other)?,
    })
}

/// The CAS root and the intermediate it signs (path length 0), valid from `not_before` to
/// `not_after`.
fn cas_authorities(
    keys: &InstanceKeys,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(CertAuthority, CertAuthority), String> {
    let root_key = SigningKeyMaterial::from_rsa(&keys.server_root)?;
    let int_key = SigningKeyMaterial::from_rsa(
        keys.server_intermediate
            .as_ref()
            .ok_or("a CAS instance needs an intermediate key")?,
    )?;
    let (p, serial) = ca_params(
        name(ORG_CAS, Some("Google Cloud SQL Server CA Root"), None),
        not_before,
        not_after,
        BasicConstraints::Unconstrained,
    );
    let root = CertAuthority::self_signed(p, root_key.key_pair, serial)?;
    let (p, serial) = ca_params(
        name(
            ORG_CAS,
            Some("Google Cloud SQL Server CA Intermediate"),
            None,
        ),
        not_before,
        not_after,
        BasicConstraints::Constrained(0),
    );
    let inter = CertAuthority::signed_by(p, int_key.key_pair, serial, &root)?;
    Ok((root, inter))
}

/// The parameters of a server leaf: `C=US, O=<org>[, CN=<cn>]`, `sans`, EKU serverAuth.
fn server_leaf(
    org: &str,
    cn: Option<&str>,
    sans: Vec<SanType>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> (CertificateParams, u64) {
    leaf_params(
        name(org, cn, None),
        sans,
        not_before,
        not_after,
        ExtendedKeyUsagePurpose::ServerAuth,
    )
}

/// The CN of the `wrong-cn` leaf: another instance of the same project.
fn other_instance_cn(spec: &InstanceSpec) -> String {
    format!("{}:other-instance", spec.project)
}

/// The DNS name of the `wrong-cn` CAS leaf: `dns` with its first label made `other`.
fn other_dns_name(dns: &str) -> String {
    match dns.split_once('.') {
        Some((_, rest)) => format!("other.{rest}"),
        None => format!("other.{dns}"),
    }
}

/// Every chain of `spec`, with `wrong_cn` for `other` and, as `wrong_ca`, the valid leaf
/// (from `not_before`) signed by `unrelated`, alone.
fn server_chains(
    spec: &ChainSpec<'_>,
    not_before: OffsetDateTime,
    unrelated: &CertAuthority,
    other: (CertificateParams, u64),
) -> Result<ServerChains, String> {
    let (p, serial) = (spec.leaf)(not_before, spec.valid_until);
    let wrong_ca = unrelated.sign(&p, &spec.key.key_pair, serial)?;
    let wrong_ca = ServerChain {
        certs: vec![wrong_ca.der],
    };
    ServerChains::build(spec, wrong_ca, other)
}

/// The client CA, `Google Cloud SQL Signing CA project:instance`: self-signed, from `key`.
fn client_ca(
    spec: &InstanceSpec,
    key: &RsaPrivateKey,
    now: OffsetDateTime,
) -> Result<CertAuthority, String> {
    let key = SigningKeyMaterial::from_rsa(key)?;
    let cn = format!("Google Cloud SQL Signing CA {}:{}", spec.project, spec.name);
    let (p, serial) = ca_params(
        name(ORG_LEGACY, Some(&cn), None),
        now - BACKDATE,
        now + CA_LIFETIME,
        BasicConstraints::Unconstrained,
    );
    CertAuthority::self_signed(p, key.key_pair, serial)
}

/// A uuid-shaped random string for the legacy root's `dnQualifier`.
fn dn_qualifier() -> String {
    hex_uuid(&rand::random())
}

/// Decodes the `public_key` of a generateEphemeralCert request. The body is read as
/// SubjectPublicKeyInfo whatever the PEM label says (Go labels SPKI `RSA PUBLIC KEY`),
/// falling back to a PKCS#1 RSAPublicKey.
pub fn parse_public_key_pem(pem_text: &str) -> Result<SubjectPublicKeyInfo, String> {
    let block = pem::parse(pem_text.trim()).map_err(|e| format!("not a PEM block: {e}"))?;
    match decode_rsa_public_key_der(block.contents()) {
        Some(key) => rsa_spki(&key),
        // Possibly a non-RSA SPKI (e.g. EC); let rcgen decide.
        None => SubjectPublicKeyInfo::from_der(block.contents())
            .map_err(|e| format!("unsupported public key: {e}")),
    }
}

/// Issues an ephemeral client certificate for `public_key`, signed by the instance's client
/// CA: NotBefore = now − 1 min, NotAfter = `not_after`, EKU clientAuth, not a CA.
pub fn issue_ephemeral(
    client_ca: &CertAuthority,
    public_key: &SubjectPublicKeyInfo,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertInfo, String> {
    let (p, serial) = leaf_params(
        name(ORG_LEGACY, Some(CLIENT_CERT_CN), None),
        vec![],
        now - Duration::minutes(1),
        not_after,
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    client_ca.sign(&p, public_key, serial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::checks::{cn, parse};
    use crate::certs::generate_rsa_keys;
    use rsa::pkcs8::EncodePublicKey;
    use std::sync::OnceLock;
    use x509_parser::prelude::*;

    /// Keys are slow to make; share a few between tests.
    fn keys() -> &'static Vec<RsaPrivateKey> {
        static KEYS: OnceLock<Vec<RsaPrivateKey>> = OnceLock::new();
        KEYS.get_or_init(|| generate_rsa_keys(6).unwrap())
    }

    fn spec(mode: CaMode) -> InstanceSpec {
        InstanceSpec {
            project: "example.com:proj".into(),
            region: "us-central1".into(),
            name: "db".into(),
            backend: "127.0.0.1:1".into(),
            database_version: "POSTGRES_15".into(),
            ca_mode: mode,
            public_ip: None,
            private_ip: None,
            mdx: false,
            psc: false,
            tls_suite: None,
        }
    }

    fn build(mode: CaMode, dns: Option<&str>) -> InstanceCerts {
        let k = keys();
        let ik = InstanceKeys {
            server_root: k[0].clone(),
            server_intermediate: Some(k[1].clone()),
            server_leaf: k[2].clone(),
            client_ca: k[3].clone(),
        };
        let unrelated = CertAuthority::unrelated(&k[4]).unwrap();
        InstanceCerts::build(&spec(mode), dns, ik, &unrelated).unwrap()
    }

    fn verify_signed_by(child: &X509Certificate<'_>, parent: &X509Certificate<'_>) {
        child.verify_signature(Some(parent.public_key())).unwrap();
        assert_eq!(child.issuer(), parent.subject());
    }

    #[test]
    fn legacy_hierarchy() {
        let c = build(CaMode::Legacy, None);
        let ca_blocks = ::pem::parse_many(&c.server_ca_pem).unwrap();
        assert_eq!(ca_blocks.len(), 1);
        let root = parse(ca_blocks[0].contents());
        assert_eq!(cn(&root).as_deref(), Some("Google Cloud SQL Server CA"));
        assert!(root.subject().to_string().contains("O=Google, Inc"));
        assert!(root.is_ca());
        assert_eq!(c.server.valid.certs.len(), 1);
        let leaf = parse(&c.server.valid.certs[0]);
        assert_eq!(cn(&leaf).as_deref(), Some("example.com:proj:db"));
        assert!(leaf.subject_alternative_name().unwrap().is_none());
        assert!(
            leaf.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .server_auth
        );
        verify_signed_by(&leaf, &root);
        assert!(
            leaf.validity().not_before.timestamp()
                < OffsetDateTime::now_utc().unix_timestamp() - 60
        );

        let wrong_cn = parse(&c.server.wrong_cn.certs[0]);
        assert_eq!(
            cn(&wrong_cn).as_deref(),
            Some("example.com:proj:other-instance")
        );
        verify_signed_by(&wrong_cn, &root);
        let wrong_ca = parse(&c.server.wrong_ca.certs[0]);
        assert_eq!(cn(&wrong_ca).as_deref(), Some("example.com:proj:db"));
        assert!(wrong_ca.verify_signature(Some(root.public_key())).is_err());
    }

    #[test]
    fn cas_hierarchy() {
        let dns = "0123456789ab.abcdefghij123.us-central1.sql.goog.";
        let c = build(CaMode::Cas, Some(dns));
        let ca_blocks = ::pem::parse_many(&c.server_ca_pem).unwrap();
        assert_eq!(ca_blocks.len(), 2);
        let inter = parse(ca_blocks[0].contents());
        let root = parse(ca_blocks[1].contents());
        assert_eq!(
            cn(&inter).as_deref(),
            Some("Google Cloud SQL Server CA Intermediate")
        );
        assert_eq!(
            cn(&root).as_deref(),
            Some("Google Cloud SQL Server CA Root")
        );
        let bc = inter.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        verify_signed_by(&inter, &root);
        assert_eq!(
            c.server_ca.common_name,
            "Google Cloud SQL Server CA Intermediate"
        );

        assert_eq!(c.server.valid.certs.len(), 2);
        let leaf = parse(&c.server.valid.certs[0]);
        assert_eq!(cn(&leaf), None);
        let san = leaf.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(san.general_names, vec![GeneralName::DNSName(dns)]);
        verify_signed_by(&leaf, &inter);

        let wrong_cn = parse(&c.server.wrong_cn.certs[0]);
        let san = wrong_cn.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(
            san.general_names,
            vec![GeneralName::DNSName(
                "other.abcdefghij123.us-central1.sql.goog."
            )]
        );
        verify_signed_by(&wrong_cn, &inter);
        let wrong_ca = parse(&c.server.wrong_ca.certs[0]);
        assert!(wrong_ca.verify_signature(Some(inter.public_key())).is_err());
    }

    #[test]
    fn expired_not_yet_valid_and_self_signed_leaves() {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        for (mode, dns) in [
            (CaMode::Legacy, None),
            (
                CaMode::Cas,
                Some("0123456789ab.abcdefghij123.us-central1.sql.goog."),
            ),
        ] {
            let c = build(mode, dns);
            let valid = parse(&c.server.valid.certs[0]);
            let issuer = &c.server.valid.certs[1..];
            for (chain, past, future) in [
                (&c.server.expired, true, false),
                (&c.server.not_yet_valid, false, true),
            ] {
                // The same leaf, issuer and chain as the valid one, other dates.
                assert_eq!(&chain.certs[1..], issuer);
                let leaf = parse(&chain.certs[0]);
                assert_eq!(leaf.subject(), valid.subject());
                assert_eq!(leaf.issuer(), valid.issuer());
                assert_eq!(leaf.public_key().raw, valid.public_key().raw);
                assert_eq!(leaf.validity().not_after.timestamp() < now, past);
                assert_eq!(leaf.validity().not_before.timestamp() > now, future);
            }
            assert_eq!(c.server.self_signed.certs.len(), 1);
            let own = parse(&c.server.self_signed.certs[0]);
            assert_eq!(own.subject(), valid.subject());
            assert_eq!(own.public_key().raw, valid.public_key().raw);
            verify_signed_by(&own, &own);
            assert!(!own.is_ca());
        }
    }

    #[test]
    fn ephemeral_cert_chains_to_client_ca_and_carries_the_key() {
        let c = build(CaMode::Legacy, None);
        let client_key = &keys()[5];
        let spki_der = client_key
            .to_public_key()
            .to_public_key_der()
            .unwrap()
            .into_vec();
        let now = OffsetDateTime::now_utc();
        let token_expiry = now + Duration::minutes(10);
        let not_after = std::cmp::min(now + Duration::hours(1), token_expiry);

        // Both labels, and PKCS#1, are accepted.
        let pkcs1 = rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_der(&client_key.to_public_key())
            .unwrap()
            .into_vec();
        for (label, der) in [
            ("PUBLIC KEY", &spki_der),
            ("RSA PUBLIC KEY", &spki_der),
            ("RSA PUBLIC KEY", &pkcs1),
        ] {
            let pem_text = ::pem::encode(&::pem::Pem::new(label, der.clone()));
            let key = parse_public_key_pem(&pem_text).unwrap();
            let info = issue_ephemeral(&c.client_ca, &key, now, not_after).unwrap();
            let cert = parse(&info.der);
            let ca = parse(&c.client_ca.cert.der);
            verify_signed_by(&cert, &ca);
            assert_eq!(cert.public_key().raw, spki_der.as_slice());
            assert_eq!(cn(&cert).as_deref(), Some(CLIENT_CERT_CN));
            assert!(cert.subject().to_string().contains("O=Google, Inc"));
            assert!(!cert.is_ca());
            assert!(
                cert.extended_key_usage()
                    .unwrap()
                    .unwrap()
                    .value
                    .client_auth
            );
            assert_eq!(
                cert.validity().not_after.timestamp(),
                token_expiry.unix_timestamp()
            );
            assert_eq!(
                cert.validity().not_before.timestamp(),
                (now - Duration::minutes(1)).unix_timestamp()
            );
            assert_eq!(info.common_name, CLIENT_CERT_CN);
            assert_eq!(info.sha1.len(), 40);
        }
        assert!(parse_public_key_pem("nonsense").is_err());
        let junk = ::pem::encode(&::pem::Pem::new("PUBLIC KEY", vec![1, 2, 3]));
        assert!(parse_public_key_pem(&junk).is_err());
    }
}
