//! The few facts the connector reads from certificates: PEM lists, NotAfter,
//! the public key, the CN and the DNS and IP SANs. Chain and signature checks are
//! webpki's, in [`crate::verify`].

use std::net::IpAddr;
use std::time::SystemTime;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

use crate::key::ClientKey;

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

/// Checks trust anchors the Admin API (or a host store) gave: each is a
/// certificate, none has expired at `now` (as Go's connector checks). The
/// error completes "the CA certificates …" without echoing bytes.
pub(crate) fn check_trust_anchors(
    anchors: &[CertificateDer<'_>],
    now: SystemTime,
) -> Result<(), String> {
    if anchors.is_empty() {
        return Err("are missing".into());
    }
    for (i, anchor) in anchors.iter().enumerate() {
        let parsed = CertInfo::parse(anchor).map_err(|e| format!("[{i}] is {e}"))?;
        if parsed.not_after() <= now {
            return Err(format!(
                "[{i}] expired at {}; the instance's CA must be rotated",
                unix_seconds(parsed.not_after())
            ));
        }
    }
    Ok(())
}

/// Seconds since the Unix epoch, for messages.
fn unix_seconds(t: SystemTime) -> String {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => format!("{} (Unix time)", d.as_secs()),
        Err(_) => "a time before 1970".into(),
    }
}

/// Checks a client certificate the Admin API issued for `key`: it parses, is
/// for that key, and has not expired at `now`. Returns its NotAfter; the
/// error completes "the certificate …" without echoing bytes.
pub(crate) fn check_client_cert(
    der: &[u8],
    key: &ClientKey,
    now: SystemTime,
) -> Result<SystemTime, String> {
    let parsed = CertInfo::parse(der).map_err(|e| format!("is {e}"))?;
    if parsed.public_key_der().as_deref() != Some(key.spki_der.as_slice()) {
        return Err("is for another public key than the one sent".into());
    }
    let not_after = parsed.not_after();
    if not_after <= now {
        return Err("is already expired".into());
    }
    Ok(not_after)
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
        self.alt_names()
            .filter_map(|n| match n {
                GeneralName::DnsName(d) => Some(d.as_str().to_string()),
                _ => None,
            })
            .collect()
    }

    /// The IP addresses of the subjectAltName extension (4 or 16 bytes each;
    /// anything else is not an address and is skipped).
    pub(crate) fn ip_addresses(&self) -> Vec<IpAddr> {
        self.alt_names()
            .filter_map(|n| match n {
                GeneralName::IpAddress(ip) => match ip.as_bytes() {
                    &[a, b, c, d] => Some(IpAddr::from([a, b, c, d])),
                    bytes => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
                },
                _ => None,
            })
            .collect()
    }

    fn alt_names(&self) -> impl Iterator<Item = GeneralName> + '_ {
        self.0
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .filter(|e| e.extn_id == OID_SUBJECT_ALT_NAME)
            .filter_map(|e| SubjectAltName::from_der(e.extn_value.as_bytes()).ok())
            .flat_map(|san| san.0)
    }
}
