//! Certificates for unit tests, shaped like Google's: a CA, server leaves
//! with a CN and/or SANs, and an ephemeral client certificate for a key.

use std::sync::OnceLock;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SubjectPublicKeyInfo,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::key::ClientKey;

/// One RSA key for all unit tests (generating one costs ~100 ms).
pub(crate) fn client_key() -> &'static ClientKey {
    static KEY: OnceLock<ClientKey> = OnceLock::new();
    KEY.get_or_init(|| ClientKey::generate().unwrap())
}

pub(crate) struct Ca(pub CertifiedIssuer<'static, KeyPair>);

impl Ca {
    pub(crate) fn new(cn: &str) -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = name(Some(cn));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Self(CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap())
    }

    /// A self-signed CA whose validity ended yesterday.
    pub(crate) fn expired(cn: &str) -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = name(Some(cn));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::days(30);
        p.not_after = now - Duration::days(1);
        Self(CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap())
    }

    /// A CA signed by this one (CAS's intermediate).
    pub(crate) fn intermediate(&self, cn: &str) -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = name(Some(cn));
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Self(CertifiedIssuer::signed_by(p, KeyPair::generate().unwrap(), &self.0).unwrap())
    }

    pub(crate) fn der(&self) -> CertificateDer<'static> {
        self.0.der().clone()
    }

    pub(crate) fn pem(&self) -> String {
        self.0.pem()
    }

    /// A server leaf; `valid` is (days from now of NotBefore, of NotAfter).
    pub(crate) fn server(&self, cn: Option<&str>, sans: &[&str], valid: (i64, i64)) -> Leaf {
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name = name(cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        p.not_before = now + Duration::days(valid.0);
        p.not_after = now + Duration::days(valid.1);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.0).unwrap();
        Leaf {
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }

    /// An ephemeral client certificate for `spki_der`, expiring in `minutes`.
    pub(crate) fn client_cert_pem(&self, spki_der: &[u8], minutes: i64) -> String {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = name(Some("Google Cloud SQL Client"));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::minutes(1);
        p.not_after = now + Duration::minutes(minutes);
        let spki = SubjectPublicKeyInfo::from_der(spki_der).unwrap();
        p.signed_by(&spki, &self.0).unwrap().pem()
    }
}

pub(crate) struct Leaf {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
}

fn name(cn: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "US");
    dn.push(DnType::OrganizationName, "Google, Inc");
    if let Some(cn) = cn {
        dn.push(DnType::CommonName, cn);
    }
    dn
}
