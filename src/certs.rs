//! The few facts the connector reads from certificates: PEM lists, NotAfter,
//! the public key, the CN and the DNS SANs. Chain and signature checks are
//! webpki's, in [`crate::verify`].

use std::time::SystemTime;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

const OID_COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const OID_SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");

/// Every certificate in a PEM string, in order. `None` if a block is not a
/// well-formed certificate PEM or there is none.
pub(crate) fn parse_pem_list(pem: &str) -> Option<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .ok()?;
    (!certs.is_empty()).then_some(certs)
}

/// A decoded certificate and the fields the connector reads from it.
pub(crate) struct CertInfo(Certificate);

impl CertInfo {
    /// Decodes DER; the message says why it failed without echoing bytes.
    pub(crate) fn parse(der: &[u8]) -> Result<Self, String> {
        Certificate::from_der(der)
            .map(Self)
            .map_err(|e| format!("not an X.509 certificate: {e}"))
    }

    pub(crate) fn not_after(&self) -> SystemTime {
        self.0.tbs_certificate.validity.not_after.to_system_time()
    }

    /// The DER SubjectPublicKeyInfo, to compare with the key that was sent.
    pub(crate) fn public_key_der(&self) -> Option<Vec<u8>> {
        self.0.tbs_certificate.subject_public_key_info.to_der().ok()
    }

    /// The subject's first common name, if any.
    pub(crate) fn common_name(&self) -> Option<String> {
        self.0
            .tbs_certificate
            .subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .find(|atv| atv.oid == OID_COMMON_NAME)
            .and_then(|atv| std::str::from_utf8(atv.value.value()).ok())
            .map(str::to_string)
    }

    /// The DNS names of the subjectAltName extension.
    pub(crate) fn dns_names(&self) -> Vec<String> {
        let Some(exts) = &self.0.tbs_certificate.extensions else {
            return Vec::new();
        };
        exts.iter()
            .filter(|e| e.extn_id == OID_SUBJECT_ALT_NAME)
            .filter_map(|e| SubjectAltName::from_der(e.extn_value.as_bytes()).ok())
            .flat_map(|san| san.0)
            .filter_map(|n| match n {
                GeneralName::DnsName(d) => Some(d.as_str().to_string()),
                _ => None,
            })
            .collect()
    }
}
