//! Certificate authorities and certificates, shaped like Google's: the per-instance server
//! CA hierarchy (legacy or CAS), the server leaves the proxy presents (valid and the
//! deliberately wrong variants: another CA, another instance, expired, not yet valid,
//! self-signed), the client signing CA, and ephemeral client certificates.
//! Every key is RSA-2048, as Google's are.

use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::{DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::config::{CaMode, InstanceSpec};

/// Organisation in legacy (and client) certificate names: `O=Google\, Inc`.
pub const ORG_LEGACY: &str = "Google, Inc";
/// Organisation in CAS certificate names.
pub const ORG_CAS: &str = "Google LLC";
/// Subject CN of every ephemeral client certificate.
pub const CLIENT_CERT_CN: &str = "Google Cloud SQL Client";
/// How far every CA and server certificate is backdated, for clock skew.
pub(crate) const BACKDATE: Duration = Duration::minutes(5);

/// Lowercase hex of `bytes`.
pub fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Generates `n` RSA-2048 keys, in parallel because each takes a noticeable moment.
pub fn generate_rsa_keys(n: usize) -> Result<Vec<RsaPrivateKey>, String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| s.spawn(|| RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| "RSA key generation panicked".to_string())?
                    .map_err(|e| format!("RSA key generation failed: {e}"))
            })
            .collect()
    })
}

/// An RSA private key in the two forms the emulator needs: rcgen (signing certificates)
/// and PKCS#8 DER (rustls).
pub struct SigningKeyMaterial {
    /// PKCS#8 DER of the key.
    pub pkcs8_der: Vec<u8>,
    /// The same key, for rcgen.
    pub key_pair: KeyPair,
}

impl SigningKeyMaterial {
    /// Converts an `rsa` key (ring cannot generate RSA keys, so the `rsa` crate does).
    pub fn from_rsa(key: &RsaPrivateKey) -> Result<Self, String> {
        let pkcs8_der = key
            .to_pkcs8_der()
            .map_err(|e| format!("cannot encode RSA key: {e}"))?
            .as_bytes()
            .to_vec();
        let key_pair = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8_der.as_slice()),
            &rcgen::PKCS_RSA_SHA256,
        )
        .map_err(|e| format!("cannot load RSA key into rcgen: {e}"))?;
        Ok(Self {
            pkcs8_der,
            key_pair,
        })
    }
}

/// An issued certificate and the facts the Admin API reports about it (`sql#sslCert`).
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// DER.
    pub der: CertificateDer<'static>,
    /// PEM.
    pub pem: String,
    /// Serial number in decimal, as `certSerialNumber`.
    pub serial: String,
    /// Lowercase hex SHA-1 of the DER, as `sha1Fingerprint`.
    pub sha1: String,
    /// Subject CN (may be empty).
    pub common_name: String,
    /// NotBefore.
    pub not_before: OffsetDateTime,
    /// NotAfter.
    pub not_after: OffsetDateTime,
}

impl CertInfo {
    fn new(cert: &rcgen::Certificate, params: &CertificateParams, serial: u64) -> Self {
        let der = cert.der().clone();
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
        let common_name = match params.distinguished_name.get(&DnType::CommonName) {
            Some(rcgen::DnValue::Utf8String(s)) => s.clone(),
            Some(rcgen::DnValue::PrintableString(s)) => s.as_str().to_string(),
            _ => String::new(),
        };
        Self {
            pem: cert.pem(),
            der,
            serial: serial.to_string(),
            sha1: hex_lower(digest.as_ref()),
            common_name,
            not_before: params.not_before,
            not_after: params.not_after,
        }
    }
}

/// A certificate authority: its certificate and what it needs to sign more.
pub struct CertAuthority {
    /// The CA's own certificate.
    pub cert: CertInfo,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAuthority")
            .field("common_name", &self.cert.common_name)
            .finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// A self-signed root.
    pub(crate) fn self_signed(
        params: CertificateParams,
        key: KeyPair,
        serial: u64,
    ) -> Result<Self, String> {
        let cert = params.self_signed(&key).map_err(cert_err)?;
        Ok(Self {
            cert: CertInfo::new(&cert, &params, serial),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA signed by `parent`.
    pub(crate) fn signed_by(
        params: CertificateParams,
        key: KeyPair,
        serial: u64,
        parent: &CertAuthority,
    ) -> Result<Self, String> {
        let cert = params.signed_by(&key, &parent.issuer).map_err(cert_err)?;
        Ok(Self {
            cert: CertInfo::new(&cert, &params, serial),
            issuer: Issuer::new(params, key),
        })
    }

    /// Signs a leaf for `public_key`.
    pub(crate) fn sign(
        &self,
        params: &CertificateParams,
        public_key: &impl rcgen::PublicKeyData,
        serial: u64,
    ) -> Result<CertInfo, String> {
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(cert_err)?;
        Ok(CertInfo::new(&cert, params, serial))
    }

    /// The unrelated CA the `wrong-ca` server certificates chain to. It is in no
    /// `serverCaCert`, so clients must refuse what it signs.
    pub fn unrelated(key: &RsaPrivateKey) -> Result<Self, String> {
        let now = OffsetDateTime::now_utc();
        let key = SigningKeyMaterial::from_rsa(key)?;
        let (params, serial) = ca_params(
            name(ORG_LEGACY, Some("Emulator Unrelated CA"), None),
            now - BACKDATE,
            now + Duration::days(3650),
            BasicConstraints::Unconstrained,
        );
        Self::self_signed(params, key.key_pair, serial)
    }
}

fn cert_err(e: rcgen::Error) -> String {
    format!("certificate generation failed: {e}")
}

/// A random positive serial (63 bits, never zero) and its rcgen form.
fn random_serial() -> (SerialNumber, u64) {
    let n: u64 = rand::thread_rng().gen_range(1..=i64::MAX as u64);
    (SerialNumber::from_slice(&n.to_be_bytes()), n)
}

/// `C=US, O=<org>[, CN=<cn>][, dnQualifier=<q>]`, in Google's order.
fn name(org: &str, cn: Option<&str>, dn_qualifier: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "US");
    dn.push(DnType::OrganizationName, org);
    if let Some(cn) = cn {
        dn.push(DnType::CommonName, cn);
    }
    if let Some(q) = dn_qualifier {
        // id-at-dnQualifier (2.5.4.46).
        dn.push(DnType::CustomDnType(vec![2, 5, 4, 46]), q);
    }
    dn
}

fn base_params(
    dn: DistinguishedName,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> (CertificateParams, u64) {
    let (serial_number, serial) = random_serial();
    let mut p = CertificateParams::default();
    p.distinguished_name = dn;
    // X.509 times have whole seconds; truncate so the reported times match the certificate.
    p.not_before = not_before.replace_nanosecond(0).unwrap_or(not_before);
    p.not_after = not_after.replace_nanosecond(0).unwrap_or(not_after);
    p.serial_number = Some(serial_number);
    (p, serial)
}

/// Parameters of a CA certificate: KeyUsage keyCertSign + cRLSign, with an authority key id.
pub(crate) fn ca_params(
    dn: DistinguishedName,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    constraints: BasicConstraints,
) -> (CertificateParams, u64) {
    let (mut p, serial) = base_params(dn, not_before, not_after);
    p.is_ca = IsCa::Ca(constraints);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.use_authority_key_identifier_extension = true;
    (p, serial)
}

/// A DNS subject alternative name.
pub(crate) fn dns_san(name: &str) -> Result<SanType, String> {
    let dns = name
        .to_string()
        .try_into()
        .map_err(|e| format!("bad SAN {name:?}: {e}"))?;
    Ok(SanType::DnsName(dns))
}

/// Parameters of an end-entity certificate: not a CA, KeyUsage digitalSignature +
/// keyEncipherment, the one EKU `eku`, and `sans`.
pub(crate) fn leaf_params(
    dn: DistinguishedName,
    sans: Vec<SanType>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    eku: ExtendedKeyUsagePurpose,
) -> (CertificateParams, u64) {
    let (mut p, serial) = base_params(dn, not_before, not_after);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![eku];
    p.use_authority_key_identifier_extension = true;
    p.subject_alt_names = sans;
    (p, serial)
}

/// What the proxy presents in the TLS handshake (set by the control endpoint): a
/// certificate, or the valid certificate with hostile TLS settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCertMode {
    /// The normal chain.
    Valid,
    /// Right subject/SAN, but issued by a CA that is not in `serverCaCert` (AlloyDB:
    /// not the cluster root in `caCert`).
    WrongCa,
    /// Issued by the right CA, but for `<project>:other-instance` / `other.<dns>` (AlloyDB:
    /// only for IP 10.255.255.1 and `other.alloydb-psc.goog`).
    WrongCn,
    /// The normal leaf, but its NotAfter is a day ago.
    Expired,
    /// The normal leaf, but its NotBefore is a day ahead.
    NotYetValid,
    /// The normal leaf's names and key, signed by itself.
    SelfSigned,
    /// The normal chain, over TLS 1.2 only.
    Tls12Only,
    /// The normal chain, without asking for a client certificate.
    NoClientAuth,
}

impl ServerCertMode {
    /// Every mode.
    pub const ALL: [Self; 8] = [
        Self::Valid,
        Self::WrongCa,
        Self::WrongCn,
        Self::Expired,
        Self::NotYetValid,
        Self::SelfSigned,
        Self::Tls12Only,
        Self::NoClientAuth,
    ];

    /// Its name at the control endpoint.
    pub fn name(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::WrongCa => "wrong-ca",
            Self::WrongCn => "wrong-cn",
            Self::Expired => "expired",
            Self::NotYetValid => "not-yet-valid",
            Self::SelfSigned => "self-signed",
            Self::Tls12Only => "tls12-only",
            Self::NoClientAuth => "no-client-auth",
        }
    }

    /// Parses a [`ServerCertMode::name`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// A chain the proxy can present, leaf first.
#[derive(Debug, Clone)]
pub struct ServerChain {
    /// `[leaf]` or `[leaf, intermediate]`.
    pub certs: Vec<CertificateDer<'static>>,
}

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
        let mut next = || keys.pop().ok_or_else(|| "not enough RSA keys".to_string());
        Ok(Self {
            server_root: next()?,
            server_intermediate: match mode {
                CaMode::Legacy => None,
                CaMode::Cas => Some(next()?),
            },
            server_leaf: next()?,
            client_ca: next()?,
        })
    }
}

/// Every chain a proxy can present, leaf first, and the leaf key they share.
pub struct ServerChains {
    /// The normal chain.
    pub valid: ServerChain,
    /// A chain to an unrelated CA.
    pub wrong_ca: ServerChain,
    /// A chain to the right CA for another instance's name.
    pub wrong_cn: ServerChain,
    /// The normal chain with a leaf that expired a day ago.
    pub expired: ServerChain,
    /// The normal chain with a leaf valid from tomorrow.
    pub not_yet_valid: ServerChain,
    /// The normal leaf signed by its own key, alone.
    pub self_signed: ServerChain,
    /// PKCS#8 DER of the leaf key.
    pub key_pkcs8: Vec<u8>,
}

impl std::fmt::Debug for ServerChains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerChains").finish_non_exhaustive()
    }
}

/// The parameters of a server leaf valid from the first time to the second.
pub(crate) type LeafParams<'a> =
    &'a dyn Fn(OffsetDateTime, OffsetDateTime) -> (CertificateParams, u64);

/// How a server's chains are made: its leaf, who issues it, what follows it.
pub(crate) struct ChainSpec<'a> {
    /// The leaf's parameters for given dates.
    pub leaf: LeafParams<'a>,
    /// NotAfter of the valid leaf.
    pub valid_until: OffsetDateTime,
    /// The instance's CA, which issues the valid leaf.
    pub issuer: &'a CertAuthority,
    /// What follows the leaf in the valid chain (intermediates, AlloyDB's root).
    pub tail: Vec<CertificateDer<'static>>,
    /// The leaf key.
    pub key: &'a SigningKeyMaterial,
}

impl ServerChains {
    /// The valid, expired, not-yet-valid and self-signed chains of `spec`, with
    /// `wrong_ca` and `wrong_cn` as the caller made them.
    pub(crate) fn build(
        spec: &ChainSpec<'_>,
        wrong_ca: ServerChain,
        wrong_cn: ServerChain,
    ) -> Result<Self, String> {
        let now = OffsetDateTime::now_utc();
        let day = Duration::days(1);
        let issued = |not_before, not_after| -> Result<ServerChain, String> {
            let (p, serial) = (spec.leaf)(not_before, not_after);
            let leaf = spec.issuer.sign(&p, &spec.key.key_pair, serial)?;
            let mut certs = vec![leaf.der];
            certs.extend(spec.tail.iter().cloned());
            Ok(ServerChain { certs })
        };
        let (p, _) = (spec.leaf)(now - BACKDATE, spec.valid_until);
        let self_signed = p.self_signed(&spec.key.key_pair).map_err(cert_err)?;
        Ok(Self {
            valid: issued(now - BACKDATE, spec.valid_until)?,
            wrong_ca,
            wrong_cn,
            expired: issued(now - 2 * day, now - day)?,
            not_yet_valid: issued(now + day, spec.valid_until)?,
            self_signed: ServerChain {
                certs: vec![self_signed.der().clone()],
            },
            key_pkcs8: spec.key.pkcs8_der.clone(),
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
        let not_before = now - BACKDATE;
        let ten_years = now + Duration::days(3650);
        let leaf_key = SigningKeyMaterial::from_rsa(&keys.server_leaf)?;
        let leaf_pub = &leaf_key.key_pair;
        let server_eku = ExtendedKeyUsagePurpose::ServerAuth;

        let (server_ca_pem, server_ca, server) = match spec.ca_mode {
            CaMode::Legacy => {
                let root_key = SigningKeyMaterial::from_rsa(&keys.server_root)?;
                let (p, serial) = ca_params(
                    name(
                        ORG_LEGACY,
                        Some("Google Cloud SQL Server CA"),
                        Some(&dn_qualifier()),
                    ),
                    not_before,
                    ten_years,
                    BasicConstraints::Unconstrained,
                );
                let root = CertAuthority::self_signed(p, root_key.key_pair, serial)?;
                let cn = format!("{}:{}", spec.project, spec.name);
                let leaf = |nb, na| {
                    leaf_params(
                        name(ORG_LEGACY, Some(&cn), None),
                        vec![],
                        nb,
                        na,
                        server_eku.clone(),
                    )
                };
                let (p, serial) = leaf(not_before, ten_years);
                let bad_ca_leaf = unrelated.sign(&p, leaf_pub, serial)?;
                let other_cn = format!("{}:other-instance", spec.project);
                let (p, serial) = leaf_params(
                    name(ORG_LEGACY, Some(&other_cn), None),
                    vec![],
                    not_before,
                    ten_years,
                    server_eku.clone(),
                );
                let bad_cn_leaf = root.sign(&p, leaf_pub, serial)?;
                let chains = ServerChains::build(
                    &ChainSpec {
                        leaf: &leaf,
                        valid_until: ten_years,
                        issuer: &root,
                        tail: vec![],
                        key: &leaf_key,
                    },
                    ServerChain {
                        certs: vec![bad_ca_leaf.der],
                    },
                    ServerChain {
                        certs: vec![bad_cn_leaf.der],
                    },
                )?;
                (root.cert.pem.clone(), root.cert.clone(), chains)
            }
            CaMode::Cas => {
                let dns = dns_name.ok_or("a CAS instance needs a DNS name")?;
                let root_key = SigningKeyMaterial::from_rsa(&keys.server_root)?;
                let int_key = SigningKeyMaterial::from_rsa(
                    keys.server_intermediate
                        .as_ref()
                        .ok_or("a CAS instance needs an intermediate key")?,
                )?;
                let (p, serial) = ca_params(
                    name(ORG_CAS, Some("Google Cloud SQL Server CA Root"), None),
                    not_before,
                    ten_years,
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
                    ten_years,
                    BasicConstraints::Constrained(0),
                );
                let inter = CertAuthority::signed_by(p, int_key.key_pair, serial, &root)?;
                let one_year = now + Duration::days(365);
                let san = dns_san(dns)?;
                let leaf = |nb, na| {
                    leaf_params(
                        name(ORG_CAS, None, None),
                        vec![san.clone()],
                        nb,
                        na,
                        server_eku.clone(),
                    )
                };
                let (p, serial) = leaf(not_before, one_year);
                let bad_ca_leaf = unrelated.sign(&p, leaf_pub, serial)?;
                let other_cn = format!("{}:other-instance", spec.project);
                let other_dns = match dns.split_once('.') {
                    Some((_, rest)) => format!("other.{rest}"),
                    None => format!("other.{dns}"),
                };
                let (p, serial) = leaf_params(
                    name(ORG_CAS, Some(&other_cn), None),
                    vec![dns_san(&other_dns)?],
                    not_before,
                    one_year,
                    server_eku.clone(),
                );
                let bad_cn_leaf = inter.sign(&p, leaf_pub, serial)?;
                let chains = ServerChains::build(
                    &ChainSpec {
                        leaf: &leaf,
                        valid_until: one_year,
                        issuer: &inter,
                        tail: vec![inter.cert.der.clone()],
                        key: &leaf_key,
                    },
                    ServerChain {
                        certs: vec![bad_ca_leaf.der],
                    },
                    ServerChain {
                        certs: vec![bad_cn_leaf.der, inter.cert.der.clone()],
                    },
                )?;
                (
                    format!("{}{}", inter.cert.pem, root.cert.pem),
                    inter.cert.clone(),
                    chains,
                )
            }
        };

        let client_key = SigningKeyMaterial::from_rsa(&keys.client_ca)?;
        let (p, serial) = ca_params(
            name(
                ORG_LEGACY,
                Some(&format!(
                    "Google Cloud SQL Signing CA {}:{}",
                    spec.project, spec.name
                )),
                None,
            ),
            not_before,
            ten_years,
            BasicConstraints::Unconstrained,
        );
        let client_ca = CertAuthority::self_signed(p, client_key.key_pair, serial)?;

        Ok(Self {
            server_ca_pem,
            server_ca,
            client_ca,
            server,
        })
    }
}

/// A uuid-shaped random string for the legacy root's `dnQualifier`.
fn dn_qualifier() -> String {
    let b: [u8; 16] = rand::random();
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

/// An RSA public key from SubjectPublicKeyInfo or PKCS#1 DER, whichever it is.
pub fn decode_rsa_public_key_der(der: &[u8]) -> Option<RsaPublicKey> {
    RsaPublicKey::from_public_key_der(der)
        .or_else(|_| RsaPublicKey::from_pkcs1_der(der))
        .ok()
}

/// An RSA public key as rcgen wants it. Re-encoding normalises the AlgorithmIdentifier so
/// rcgen recognises it.
pub fn rsa_spki(key: &RsaPublicKey) -> Result<SubjectPublicKeyInfo, String> {
    let der = key.to_public_key_der().map_err(|e| e.to_string())?;
    SubjectPublicKeyInfo::from_der(der.as_bytes())
        .map_err(|e| format!("unsupported public key: {e}"))
}

/// The modulus size of `key` in bits.
pub fn rsa_bits(key: &RsaPublicKey) -> usize {
    key.n().bits()
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

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        X509Certificate::from_der(der).unwrap().1
    }

    fn cn(c: &X509Certificate<'_>) -> Option<String> {
        c.subject()
            .iter_common_name()
            .next()
            .map(|a| a.as_str().unwrap().to_string())
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
