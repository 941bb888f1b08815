//! How the server is checked: its chain must lead to one of the instance's
//! trust anchors (Cloud SQL: every certificate of `serverCaCert`, the CAS
//! intermediate included; AlloyDB: `caCert`), validity dates count, and then
//! its identity must be the instance's:
//!
//! - Cloud SQL, with the Go connector's algorithm: if the instance has a DNS
//!   name, a SAN DNS name must match it; otherwise, or if no SAN matches, the
//!   subject CN must be `project:instance` (legacy certificates carry no SAN).
//! - AlloyDB: the address dialled must be a SAN, an IP SAN for an IP, a DNS SAN
//!   for a PSC name (Go sets `ServerName` to the address).
//!
//! Stock hostname checks cannot do the first (the CN fallback, names with
//! `:`, SANs with a trailing dot), hence a custom [`ServerCertVerifier`].
//!
//! Last, the server must have asked for the client certificate: every Cloud
//! SQL and AlloyDB server-side proxy does, as the certificate is how it
//! authorizes the client. rustls asks the [`ClientCertResolver`] for it only
//! when the server's CertificateRequest arrives, which in TLS 1.3 comes before
//! the server's certificate; so the verifier, the last callback before the
//! client's Finished and its first data, knows and can refuse.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, ResolvesClientCert};
use rustls::crypto::{verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

use crate::certs::CertInfo;
use crate::connection_info::ServerIdentity;

/// The certificate names someone else: the error carried inside rustls's
/// `CertificateError::Other`, so the connector can report the identity check.
#[derive(Debug, Clone)]
pub(crate) struct IdentityMismatch {
    presented_cn: Option<String>,
    presented_dns: Vec<String>,
    presented_ips: Vec<IpAddr>,
    expected: String,
}

impl fmt::Display for IdentityMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server certificate has CN {:?}, DNS names {:?} and IP addresses {:?}; expected {}",
            self.presented_cn.as_deref().unwrap_or(""),
            self.presented_dns,
            self.presented_ips,
            self.expected
        )
    }
}

impl std::error::Error for IdentityMismatch {}

/// The server did not ask for the client certificate: the error carried
/// inside rustls's `CertificateError::Other`, so the connector can report it.
#[derive(Debug, Clone)]
pub(crate) struct ClientCertNotRequested;

impl fmt::Display for ClientCertNotRequested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the server did not ask for the client certificate; every Cloud SQL and AlloyDB \
             server does, so this is not the instance's server",
        )
    }
}

impl std::error::Error for ClientCertNotRequested {}

/// Whether the server of one connection asked for the client certificate.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientAuthProbe(Arc<AtomicBool>);

impl ClientAuthProbe {
    /// Notes that the server asked (its CertificateRequest arrived).
    pub(crate) fn note(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn asked(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Gives rustls the client certificate when the server asks for it, and
/// notes the ask in the connection's [`ClientAuthProbe`].
#[derive(Debug)]
pub(crate) struct ClientCertResolver {
    cert: Arc<CertifiedKey>,
    asked: ClientAuthProbe,
}

impl ClientCertResolver {
    pub(crate) fn new(cert: Arc<CertifiedKey>, asked: ClientAuthProbe) -> Self {
        Self { cert, asked }
    }
}

impl ResolvesClientCert for ClientCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.asked.note();
        Some(self.cert.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Checks the leaf's identity (not its chain); `dialled` is the name rustls
/// was given for the address dialled.
pub(crate) fn check_identity(
    leaf: &CertificateDer<'_>,
    expected: &ServerIdentity,
    dialled: &ServerName<'_>,
) -> Result<(), IdentityMismatch> {
    let info = CertInfo::parse(leaf).ok();
    let presented_dns = info.as_ref().map(CertInfo::dns_names).unwrap_or_default();
    let presented_ips = info
        .as_ref()
        .map(CertInfo::ip_addresses)
        .unwrap_or_default();
    let presented_cn = info.as_ref().and_then(CertInfo::common_name);
    let (matched, expected) = match expected {
        ServerIdentity::DnsNameOrCommonName {
            dns_name,
            common_name,
        } => {
            let san = dns_name
                .as_ref()
                .is_some_and(|name| presented_dns.iter().any(|p| dns_name_matches(p, name)));
            let cn = presented_cn
                .as_ref()
                .is_some_and(|cn| !cn.is_empty() && cn == common_name);
            let expected = match dns_name {
                Some(d) => format!("DNS name {d:?} or CN {common_name:?}"),
                None => format!("CN {common_name:?}"),
            };
            (san || cn, expected)
        }
        ServerIdentity::AddressDialled => match dialled {
            ServerName::IpAddress(ip) => {
                let ip = IpAddr::from(*ip);
                (
                    presented_ips.contains(&ip),
                    format!("the IP address dialled, {ip}, as an IP SAN"),
                )
            }
            ServerName::DnsName(name) => (
                presented_dns
                    .iter()
                    .any(|p| dns_name_matches(p, name.as_ref())),
                format!("the name dialled, {:?}, as a DNS SAN", name.as_ref()),
            ),
            _ => (false, "a name rustls does not know".to_string()),
        },
    };
    if matched {
        Ok(())
    } else {
        Err(IdentityMismatch {
            presented_cn,
            presented_dns,
            presented_ips,
            expected,
        })
    }
}

/// RFC 6125 matching as Go's `VerifyHostname` does it: case-insensitive, a
/// trailing dot ignored on either side, `*` only as the whole leftmost label.
pub(crate) fn dns_name_matches(presented: &str, reference: &str) -> bool {
    let norm = |s: &str| s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    let (presented, reference) = (norm(presented), norm(reference));
    if presented.is_empty() || reference.is_empty() {
        return false;
    }
    match presented.strip_prefix("*.") {
        Some(rest) => reference
            .split_once('.')
            .is_some_and(|(first, tail)| !first.is_empty() && tail == rest && rest.contains('.')),
        None => presented == reference,
    }
}

/// The connector's [`ServerCertVerifier`] for one connection: chain to the
/// trust anchors, then identity, then that the server asked for the client
/// certificate. rustls's own hostname check is replaced, not skipped.
#[derive(Debug)]
pub(crate) struct ServerVerifier {
    roots: Arc<RootCertStore>,
    expected: ServerIdentity,
    algorithms: WebPkiSupportedAlgorithms,
    client_auth: ClientAuthProbe,
}

impl ServerVerifier {
    pub(crate) fn new(
        roots: Arc<RootCertStore>,
        expected: ServerIdentity,
        algorithms: WebPkiSupportedAlgorithms,
        client_auth: ClientAuthProbe,
    ) -> Self {
        Self {
            roots,
            expected,
            algorithms,
            client_auth,
        }
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let refuse = |e: Arc<dyn std::error::Error + Send + Sync>| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(e)))
        };
        check_identity(end_entity, &self.expected, server_name).map_err(|e| refuse(Arc::new(e)))?;
        if !self.client_auth.asked() {
            return Err(refuse(Arc::new(ClientCertNotRequested)));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The config offers TLS 1.3 only; a TLS 1.2 signature is never valid.
        Err(rustls::Error::General("TLS 1.2 is not allowed".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::certs::Ca;

    fn expected(dns: Option<&str>) -> ServerIdentity {
        ServerIdentity::DnsNameOrCommonName {
            dns_name: dns.map(str::to_string),
            common_name: "example.com:proj:db".into(),
        }
    }

    fn ip(s: &str) -> ServerName<'static> {
        ServerName::IpAddress(s.parse::<IpAddr>().unwrap().into())
    }

    /// (what, presented CN, presented SANs, instance DNS name, accepted)
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        &'a [&'a str],
        Option<&'a str>,
        bool,
    );

    /// The Go connector's tls_verify_test matrix.
    #[test]
    fn identity_matrix_of_the_go_connector() {
        let ca = Ca::new("CA");
        let days = (-1, 1);
        let cases: [Case; 7] = [
            ("CN match", Some("example.com:proj:db"), &[], None, true),
            (
                "SAN match",
                None,
                &["db.example.com"],
                Some("db.example.com"),
                true,
            ),
            (
                "SAN mismatch, good CN",
                Some("example.com:proj:db"),
                &["other.example.com"],
                Some("db.example.com"),
                true,
            ),
            (
                "no SAN, good CN",
                Some("example.com:proj:db"),
                &[],
                Some("db.example.com"),
                true,
            ),
            ("CN mismatch", Some("proj:other"), &[], None, false),
            ("empty CN, no server name", None, &[], None, false),
            (
                "SAN mismatch, empty CN",
                None,
                &["other.example.com"],
                Some("db.example.com"),
                false,
            ),
        ];
        for (what, cn, sans, dns, ok) in cases {
            let leaf = ca.server(cn, sans, days);
            let r = check_identity(&leaf.cert, &expected(dns), &ip("10.0.0.1"));
            assert_eq!(r.is_ok(), ok, "{what}: {r:?}");
            if let Err(e) = r {
                assert!(e.to_string().contains("example.com:proj:db"), "{what}: {e}");
            }
        }
    }

    #[test]
    fn alloydb_servers_must_name_the_address_dialled() {
        let ca = Ca::new("root.alloydb");
        let leaf = ca.server(
            Some("uid.server.alloydb"),
            &["10.0.0.2", "34.1.2.3", "x.y.alloydb-psc.goog"],
            (-1, 1),
        );
        let psc = |n: &str| ServerName::try_from(n.to_string()).unwrap();
        for (dialled, ok) in [
            (ip("10.0.0.2"), true),
            (ip("34.1.2.3"), true),
            (psc("x.y.alloydb-psc.goog"), true),
            (psc("X.Y.alloydb-psc.goog"), true),
            (ip("10.0.0.3"), false),
            (psc("other.alloydb-psc.goog"), false),
            // The CN is not an identity for AlloyDB, nor an IP as a DNS name.
            (psc("uid.server.alloydb"), false),
            (psc("10.0.0.2.example"), false),
        ] {
            let r = check_identity(&leaf.cert, &ServerIdentity::AddressDialled, &dialled);
            assert_eq!(r.is_ok(), ok, "{dialled:?}: {r:?}");
            if let Err(e) = r {
                assert!(e.to_string().contains("dialled"), "{e}");
            }
        }
    }

    #[test]
    fn dns_names_match_like_go() {
        assert!(dns_name_matches(
            "a.b.us-central1.sql.goog.",
            "a.b.us-central1.sql.goog"
        ));
        assert!(dns_name_matches("A.B.sql.goog", "a.b.sql.goog."));
        assert!(dns_name_matches("*.b.sql.goog", "a.b.sql.goog"));
        assert!(!dns_name_matches("*.b.sql.goog", "x.a.b.sql.goog"));
        assert!(!dns_name_matches("*.b.sql.goog", "b.sql.goog"));
        assert!(
            !dns_name_matches("*.goog", "sql.goog"),
            "wildcard needs two labels after it"
        );
        assert!(!dns_name_matches("a.b.sql.goog", "c.b.sql.goog"));
        assert!(!dns_name_matches("", ""));
        assert!(!dns_name_matches("a*.b.goog", "ab.b.goog"));
    }
}
