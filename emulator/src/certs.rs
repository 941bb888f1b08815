//! Certificate authorities and certificates, shaped like Google's, as both services make
//! them: keys, CAs, leaf parameters, the unrelated CA behind every `wrong-ca` server
//! certificate, and the chains a proxy can present (valid, and the deliberately wrong
//! variants of [`ServerCertMode`]: another CA, another instance, expired, not yet valid,
//! self-signed). Each service builds its own hierarchy from these (`cloudsql::certs`,
//! `alloydb::certs`). Every key is RSA-2048, as Google's are.

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

/// Organisation in Google's older certificate names (Cloud SQL's legacy CA and client
/// certificates, and the unrelated CA): `O=Google\, Inc`.
pub const ORG_LEGACY: &str = "Google, Inc";
/// How far every CA and server certificate is backdated, for clock skew.
pub(crate) const BACKDATE: Duration = Duration::minutes(5);
/// How long every CA the emulator makes is valid.
pub(crate) const CA_LIFETIME: Duration = Duration::days(3650);

/// Lowercase hex of `bytes`.
pub fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `bytes` in the 8-4-4-4-12 lowercase hex groups of a UUID.
pub fn hex_uuid(bytes: &[u8; 16]) -> String {
    let h = hex_lower(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
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

/// The next of the keys made up front by [`generate_rsa_keys`].
pub(crate) fn take_key(keys: &mut Vec<RsaPrivateKey>) -> Result<RsaPrivateKey, String> {
    keys.pop().ok_or_else(|| "not enough RSA keys".to_string())
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
            now + CA_LIFETIME,
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
pub(crate) fn name(org: &str, cn: Option<&str>, dn_qualifier: Option<&str>) -> DistinguishedName {
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

impl ChainSpec<'_> {
    /// The leaf of `params` issued with the leaf key, followed by the tail.
    fn issue(&self, (params, serial): (CertificateParams, u64)) -> Result<ServerChain, String> {
        let leaf = self.issuer.sign(&params, &self.key.key_pair, serial)?;
        let mut certs = vec![leaf.der];
        certs.extend(self.tail.iter().cloned());
        Ok(ServerChain { certs })
    }
}

impl ServerChains {
    /// The valid, expired, not-yet-valid and self-signed chains of `spec`; `wrong_cn`
    /// issued the same way for `other`, the parameters of a leaf with someone else's
    /// names; and `wrong_ca` as the caller made it.
    pub(crate) fn build(
        spec: &ChainSpec<'_>,
        wrong_ca: ServerChain,
        other: (CertificateParams, u64),
    ) -> Result<Self, String> {
        let now = OffsetDateTime::now_utc();
        let day = Duration::days(1);
        let issued = |not_before, not_after| spec.issue((spec.leaf)(not_before, not_after));
        let (p, _) = (spec.leaf)(now - BACKDATE, spec.valid_until);
        let self_signed = p.self_signed(&spec.key.key_pair).map_err(cert_err)?;
        Ok(Self {
            valid: issued(now - BACKDATE, spec.valid_until)?,
            wrong_ca,
            wrong_cn: spec.issue(other)?,
            expired: issued(now - 2 * day, now - day)?,
            not_yet_valid: issued(now + day, spec.valid_until)?,
            self_signed: ServerChain {
                certs: vec![self_signed.der().clone()],
            },
            key_pkcs8: spec.key.pkcs8_der.clone(),
        })
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

/// Readers shared by the services' certificate tests.
#[cfg(test)]
pub(crate) mod checks {
    use x509_parser::prelude::*;

    /// `der`, parsed.
    pub(crate) fn parse(der: &[u8]) -> X509Certificate<'_> {
        X509Certificate::from_der(der).unwrap().1
    }

    /// The subject CN of `c`, if it has one.
    pub(crate) fn cn(c: &X509Certificate<'_>) -> Option<String> {
        c.subject()
            .iter_common_name()
            .next()
            .map(|a| a.as_str().unwrap().to_string())
    }
}
