//! The rustls client configuration for an instance: TLS 1.3 only, a pure-Rust
//! crypto provider, the client certificate chain with the connector's own
//! signing key, and the [`ServerVerifier`]; plus the mapping of rustls's
//! handshake failures to [`Error`].

use std::fmt;
use std::sync::Arc;

use rsa::PrivateKey;
use rustls::client::Resumption;
use rustls::crypto::{CipherSuiteCommon, CryptoProvider, KeyProvider};
use rustls::pki_types::{PrivateKeyDer, ServerName, SubjectPublicKeyInfoDer};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, PeerIncompatible, RootCertStore,
    SignatureAlgorithm, SignatureScheme, SupportedCipherSuite, Tls13CipherSuite,
};

use crate::connection_info::{ConnectionInfo, ServerIdentity, Target};

mod chacha;
mod signatures;
use crate::error::{Error, VerificationCheck};
use crate::key::ClientKey;
use crate::rsa_sign;
use crate::verify::{
    ClientAuthProbe, ClientCertNotRequested, ClientCertResolver, IdentityMismatch, ServerVerifier,
};

/// What the TLS client needs for one certificate lifetime, checked and parsed
/// once; [`TlsConfig::for_connection`] makes each connection's config.
#[derive(Debug, Clone)]
pub(crate) struct TlsConfig {
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    identity: ServerIdentity,
    sni: bool,
    client_cert: Arc<CertifiedKey>,
}

impl TlsConfig {
    /// Checks the trust anchors and the client certificate and key.
    pub(crate) fn new(
        info: &ConnectionInfo,
        key: &ClientKey,
        instance: &impl fmt::Display,
    ) -> Result<Self, Error> {
        let provider = Arc::new(provider());
        let mut roots = RootCertStore::empty();
        for ca in &info.trust_anchors {
            roots.add(ca.clone()).map_err(|e| {
                Error::instance_metadata(format!(
                    "{instance}: the server CA certificate cannot be a trust anchor: {e}"
                ))
                .with_source(e)
            })?;
        }
        let client_cert = CertifiedKey::new(
            info.client_chain.clone(),
            Arc::new(RsaPssKey::new(key.private_key().clone(), &key.spki_der)),
        );
        client_cert.keys_match().map_err(|e| {
            Error::tls(format!("the client certificate is unusable: {e}")).with_source(e)
        })?;
        let config = Self {
            provider,
            roots: Arc::new(roots),
            identity: info.identity.clone(),
            sni: info.sni,
            client_cert: Arc::new(client_cert),
        };
        // Fails here, once, rather than at every connect.
        config.for_connection()?;
        Ok(config)
    }

    /// The rustls config of one connection. Its own, because the check that
    /// the server asked for the client certificate is per connection (see
    /// [`crate::verify`]); and without session resumption, because a resumed
    /// handshake runs no verifier: every connection checks the server, as Go's
    /// connector (no session cache) does.
    pub(crate) fn for_connection(&self) -> Result<Arc<ClientConfig>, Error> {
        let client_auth = ClientAuthProbe::default();
        let verifier = ServerVerifier::new(
            self.roots.clone(),
            self.identity.clone(),
            self.provider.signature_verification_algorithms,
            client_auth.clone(),
        );
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| {
                Error::tls(format!("the crypto provider cannot do TLS 1.3: {e}")).with_source(e)
            })?
            // Not a relaxation: ServerVerifier checks chain, identity and client auth itself.
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(ClientCertResolver::new(
                self.client_cert.clone(),
                client_auth,
            )));
        config.resumption = Resumption::disabled();
        // rustls sends no SNI for an IP target; for a DNS name the plan says.
        config.enable_sni = self.sni;
        Ok(Arc::new(config))
    }
}

/// The pure-Rust provider with TLS 1.3's suites in the order that is
/// fastest in wasm: ChaCha20-Poly1305 first (several times AES-GCM's
/// throughput in wasm without AES instructions, BENCHMARKS.md row 4; Go
/// servers, Cloud SQL's proxy among them, honour a client that puts it
/// first), its records protected by libcrux ([`chacha`]), then AES-GCM.
/// X25519 is already its first key exchange group.
///
/// Private keys load through [`ConnectorKeys`], never rustls-rustcrypto's
/// loader, which would sign with rsa 0.9 (RUSTSEC-2023-0071, not
/// constant-time); the server's signatures are checked by [`signatures`],
/// RSA on rsa 0.10 too, so no rsa 0.9 code is reached at all.
pub(crate) fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            tls13_chacha20_poly1305_sha256(),
            rustls_rustcrypto::TLS13_AES_128_GCM_SHA256,
            rustls_rustcrypto::TLS13_AES_256_GCM_SHA384,
        ],
        key_provider: &ConnectorKeys,
        signature_verification_algorithms: signatures::ALGORITHMS,
        ..rustls_rustcrypto::provider()
    }
}

/// rustls-rustcrypto's ChaCha20-Poly1305 suite (its SHA-256 and HKDF) with
/// libcrux's record protection.
fn tls13_chacha20_poly1305_sha256() -> SupportedCipherSuite {
    static SUITE: std::sync::OnceLock<Option<Tls13CipherSuite>> = std::sync::OnceLock::new();
    let base = rustls_rustcrypto::TLS13_CHACHA20_POLY1305_SHA256;
    let suite = SUITE.get_or_init(|| {
        base.tls13().map(|b| Tls13CipherSuite {
            common: CipherSuiteCommon {
                suite: b.common.suite,
                hash_provider: b.common.hash_provider,
                confidentiality_limit: b.common.confidentiality_limit,
            },
            hkdf_provider: b.hkdf_provider,
            aead_alg: &chacha::ChaCha20Poly1305,
            quic: None,
        })
    });
    suite.as_ref().map_or(base, SupportedCipherSuite::Tls13)
}

/// The provider's private-key loader: RSA keys on rsa 0.10 ([`RsaPssKey`]);
/// ECDSA and Ed25519 keys (which no connect uses; a TLS server in tests may)
/// through rustls-rustcrypto's loaders for them, which involve no RSA.
#[derive(Debug)]
pub(crate) struct ConnectorKeys;

impl KeyProvider for ConnectorKeys {
    fn load_private_key(
        &self,
        key_der: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, rustls::Error> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};

        let rsa = match &key_der {
            PrivateKeyDer::Pkcs8(der) => PrivateKey::from_pkcs8_der(der.secret_pkcs8_der()).ok(),
            PrivateKeyDer::Pkcs1(der) => PrivateKey::from_pkcs1_der(der.secret_pkcs1_der()).ok(),
            _ => None,
        };
        if let Some(key) = rsa {
            let spki = key
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| rustls::Error::General(format!("RSA key encoding failed: {e}")))?;
            return Ok(Arc::new(RsaPssKey::new(Arc::new(key), spki.as_bytes())));
        }
        rustls_rustcrypto::sign::any_ecdsa_type(&key_der)
            .or_else(|_| rustls_rustcrypto::sign::any_eddsa_type(&key_der))
            .map_err(|_| rustls::Error::General("unsupported private key".into()))
    }
}

/// An RSA private key as rustls's signing key: RSASSA-PSS, the only RSA
/// signatures TLS 1.3 has, on rsa 0.10 (constant-time, blinded).
pub(crate) struct RsaPssKey {
    key: Arc<PrivateKey>,
    spki_der: Vec<u8>,
}

impl RsaPssKey {
    /// `spki_der` is the key's SubjectPublicKeyInfo, which rustls compares
    /// with the certificate's.
    pub(crate) fn new(key: Arc<PrivateKey>, spki_der: &[u8]) -> Self {
        Self {
            key,
            spki_der: spki_der.to_vec(),
        }
    }
}

impl fmt::Debug for RsaPssKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RsaPssKey(rsa 0.10, <redacted>)")
    }
}

/// What a TLS 1.3 peer may ask of an RSA key, in the connector's order.
const RSA_PSS_SCHEMES: [SignatureScheme; 3] = [
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
];

impl SigningKey for RsaPssKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = RSA_PSS_SCHEMES.into_iter().find(|s| offered.contains(s))?;
        Some(Box::new(RsaPssSigner {
            key: self.key.clone(),
            scheme,
        }))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.spki_der.as_slice()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::RSA
    }
}

struct RsaPssSigner {
    key: Arc<PrivateKey>,
    scheme: SignatureScheme,
}

impl fmt::Debug for RsaPssSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaPssSigner({:?}, <redacted>)", self.scheme)
    }
}

impl Signer for RsaPssSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        use rsa::sha2::{Sha256, Sha384, Sha512};
        match self.scheme {
            SignatureScheme::RSA_PSS_SHA256 => rsa_sign::pss::<Sha256>(&self.key, message),
            SignatureScheme::RSA_PSS_SHA384 => rsa_sign::pss::<Sha384>(&self.key, message),
            _ => rsa_sign::pss::<Sha512>(&self.key, message),
        }
        .map_err(|e| rustls::Error::General(format!("RSA-PSS signing failed: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// The name rustls is given for the target (whether it goes out as SNI is
/// the config's `enable_sni`).
pub(crate) fn server_name(target: &Target) -> Result<ServerName<'static>, Error> {
    match target {
        Target::Ip(ip) => Ok(ServerName::IpAddress((*ip).into())),
        Target::Dns(name) => ServerName::try_from(name.clone()).map_err(|e| {
            Error::instance_metadata(format!("the PSC DNS name {name:?} is not valid"))
                .with_source(e)
        }),
    }
}

/// Maps a failed handshake to the error that says which step failed: a
/// check of the server, or TLS itself.
pub(crate) fn from_rustls(e: &rustls::Error) -> Error {
    let rustls::Error::InvalidCertificate(ce) = e else {
        return match e {
            rustls::Error::AlertReceived(AlertDescription::ProtocolVersion)
            | rustls::Error::PeerIncompatible(
                PeerIncompatible::ServerDoesNotSupportTls12Or13
                | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
                | PeerIncompatible::SupportedVersionsExtensionRequired,
            ) => Error::verification(
                VerificationCheck::ProtocolVersion,
                format!(
                    "the server does not speak TLS 1.3 ({e}); Cloud SQL and AlloyDB servers \
                     do, and the connector accepts nothing older"
                ),
            ),
            _ => Error::tls(e.to_string()),
        }
        .with_source(e.clone());
    };
    let check = match ce {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            VerificationCheck::Expired
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            VerificationCheck::NotYetValid
        }
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            VerificationCheck::Chain
        }
        CertificateError::Other(o) if o.0.downcast_ref::<IdentityMismatch>().is_some() => {
            VerificationCheck::Identity
        }
        CertificateError::Other(o) if o.0.downcast_ref::<ClientCertNotRequested>().is_some() => {
            VerificationCheck::ClientAuth
        }
        _ => VerificationCheck::Other,
    };
    let message = match ce {
        CertificateError::Other(o) => o.0.to_string(),
        CertificateError::UnknownIssuer => {
            "the server certificate was not issued by the instance's server CA".into()
        }
        other => other.to_string(),
    };
    Error::verification(check, message).with_source(e.clone())
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::time::SystemTime;

    use rustls::{ClientConnection, ServerConfig, ServerConnection};

    use rsa::pss;

    use super::*;
    use crate::certs;
    use crate::connection_info::Addresses;
    use crate::error::ErrorKind;
    use crate::testing::certs::{client_key as key, Ca, Leaf};

    fn name() -> &'static str {
        "proj:us-central1:db"
    }

    /// The CA of the client certificates in [`info`].
    fn client_ca() -> &'static Ca {
        static CA: std::sync::OnceLock<Ca> = std::sync::OnceLock::new();
        CA.get_or_init(|| Ca::new("Google Cloud SQL Signing CA proj:db"))
    }

    fn info(
        server_ca: Vec<rustls_pki_types::CertificateDer<'static>>,
        dns: Option<&str>,
    ) -> ConnectionInfo {
        let pem = client_ca().client_cert_pem(&key().spki_der, 60);
        ConnectionInfo {
            addresses: Addresses::default(),
            port: 3307,
            trust_anchors: server_ca,
            identity: ServerIdentity::DnsNameOrCommonName {
                dns_name: dns.map(str::to_string),
                common_name: "proj:db".into(),
            },
            sni: false,
            client_chain: certs::parse_pem_list(&pem).unwrap(),
            expiry: SystemTime::now(),
            exchange: None,
        }
    }

    /// A real TLS 1.3 handshake in memory with a Cloud SQL-shaped server
    /// presenting `chain` and requiring a client certificate from
    /// [`client_ca`]; the client's error, if any.
    fn handshake(
        info: &ConnectionInfo,
        chain: Vec<rustls_pki_types::CertificateDer<'static>>,
        leaf: Leaf,
    ) -> Result<(), Error> {
        let provider = Arc::new(provider());
        let mut roots = RootCertStore::empty();
        roots.add(client_ca().der()).unwrap();
        let clients =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let server = server_builder()
            .with_client_cert_verifier(clients)
            .with_single_cert(chain, leaf.key)
            .unwrap();
        handshake_with(info, server, &localhost())
    }

    fn server_builder() -> rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier> {
        ServerConfig::builder_with_provider(Arc::new(rustls_rustcrypto::provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
    }

    fn localhost() -> Target {
        Target::Ip("127.0.0.1".parse().unwrap())
    }

    /// A real TLS 1.3 handshake in memory with `server`, dialling `target`;
    /// the client's error, or the server's refusal of the client (which in
    /// TLS 1.3 comes after the client has finished) as [`Error::Tls`].
    fn handshake_with(
        info: &ConnectionInfo,
        server: ServerConfig,
        target: &Target,
    ) -> Result<(), Error> {
        let client_cfg = TlsConfig::new(info, key(), &name())?.for_connection()?;
        let mut c = ClientConnection::new(client_cfg, server_name(target)?).unwrap();
        let mut s = ServerConnection::new(Arc::new(server)).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            s.read_tls(&mut buf.as_slice()).unwrap();
            let server_state = s.process_new_packets();
            if !c.is_handshaking() {
                server_state.map_err(|e| Error::tls(format!("server refused: {e}")))?;
                assert!(!s.is_handshaking());
                assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
                return Ok(());
            }
            buf.clear();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets().map_err(|e| from_rustls(&e))?;
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn chacha20_and_x25519_are_offered_first_and_only_tls_1_3_suites() {
        use rustls::CipherSuite::*;
        let p = provider();
        let suites: Vec<_> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(
            suites,
            [
                TLS13_CHACHA20_POLY1305_SHA256,
                TLS13_AES_128_GCM_SHA256,
                TLS13_AES_256_GCM_SHA384
            ]
        );
        assert_eq!(p.kx_groups[0].name(), rustls::NamedGroup::X25519);
    }

    /// TLS 1.3 signs with RSA-PSS only; the client key offers the three
    /// schemes in its order, and each signature verifies.
    #[test]
    fn the_client_key_signs_rsa_pss_as_tls_1_3_asks_and_nothing_else() {
        use rsa::sha2::{Sha256, Sha384, Sha512};
        use rsa::signature::Verifier;
        use SignatureScheme::*;

        let signing = RsaPssKey::new(key().private_key().clone(), &key().spki_der);
        assert_eq!(signing.algorithm(), SignatureAlgorithm::RSA);
        assert_eq!(
            signing.public_key().unwrap().as_ref(),
            key().spki_der.as_slice()
        );
        assert!(signing
            .choose_scheme(&[RSA_PKCS1_SHA256, ECDSA_NISTP256_SHA256, ED25519])
            .is_none());
        let all = [
            RSA_PSS_SHA512,
            RSA_PKCS1_SHA256,
            RSA_PSS_SHA384,
            RSA_PSS_SHA256,
        ];
        assert_eq!(
            signing.choose_scheme(&all).unwrap().scheme(),
            RSA_PSS_SHA256
        );

        let public = key().private_key().to_public_key();
        let message = b"TLS 1.3, client CertificateVerify";
        for scheme in [RSA_PSS_SHA256, RSA_PSS_SHA384, RSA_PSS_SHA512] {
            let signer = signing.choose_scheme(&[scheme]).unwrap();
            assert_eq!(signer.scheme(), scheme);
            let sig = signer.sign(message).unwrap();
            let sig = pss::Signature::try_from(sig.as_slice()).unwrap();
            let ok = match scheme {
                RSA_PSS_SHA256 => {
                    pss::VerifyingKey::<Sha256>::new(public.clone()).verify(message, &sig)
                }
                RSA_PSS_SHA384 => {
                    pss::VerifyingKey::<Sha384>::new(public.clone()).verify(message, &sig)
                }
                _ => pss::VerifyingKey::<Sha512>::new(public.clone()).verify(message, &sig),
            };
            ok.unwrap();
        }
        assert!(!format!("{signing:?}").contains("PrivateKey"));
    }

    /// No RSA operation of the component goes through rsa 0.9
    /// (RUSTSEC-2023-0071). The connector's crate depends on rsa 0.10 only;
    /// the client key signs as an [`RsaPssKey`] and the provider loads RSA
    /// keys as one; the provider's verifiers are [`signatures`]'s; and
    /// in the component's dependency graph rsa 0.9 is rustls-rustcrypto's
    /// alone, whose RSA code (its key loader and verifiers) the provider
    /// replaces.
    #[test]
    fn no_rsa_operation_goes_through_rsa_0_9() {
        let p = provider();
        let verifiers = p.signature_verification_algorithms;
        assert!(std::ptr::eq(verifiers.all, signatures::ALGORITHMS.all));
        assert!(std::ptr::eq(
            verifiers.mapping,
            signatures::ALGORITHMS.mapping
        ));
        assert_eq!(format!("{:?}", p.key_provider), "ConnectorKeys");
        let der = PrivateKeyDer::Pkcs8(key().pkcs8_der().to_vec().into());
        let loaded = p.key_provider.load_private_key(der).unwrap();
        assert!(format!("{loaded:?}").starts_with("RsaPssKey"), "{loaded:?}");
        let ca = Ca::new("Google Cloud SQL Server CA");
        let config = TlsConfig::new(&info(vec![ca.der()], None), key(), &name()).unwrap();
        let client_key = format!("{:?}", config.client_cert.key);
        assert!(client_key.starts_with("RsaPssKey"), "{client_key}");

        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        for features in [&[][..], &["--all-features"][..]] {
            let out = std::process::Command::new(&cargo)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .args([
                    "tree",
                    "--locked",
                    "-e",
                    "normal",
                    "--target",
                    "wasm32-wasip2",
                ])
                .args(["-p", "gcp-db-connector-component", "--prefix", "none"])
                .args(["-i", "rsa@0.9", "--depth", "1"])
                .args(features)
                .output()
                .expect("cargo tree");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() {
                // rsa 0.9 gone from the graph altogether.
                assert!(stderr.contains("did not match any packages"), "{stderr}");
                continue;
            }
            let dependents: Vec<&str> = stdout
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            assert_eq!(
                dependents,
                ["rustls-rustcrypto"],
                "rsa 0.9 in the component {features:?}:\n{stdout}"
            );
        }
    }

    fn check_of(r: Result<(), Error>) -> VerificationCheck {
        match r {
            Err(e) if e.kind() == ErrorKind::ServerVerification => e
                .verification_check()
                .expect("a verification error names its check"),
            other => panic!("expected a verification error, got {other:?}"),
        }
    }

    #[test]
    fn legacy_ca_with_cn_only_is_accepted() {
        let ca = Ca::new("Google Cloud SQL Server CA");
        let leaf = ca.server(Some("proj:db"), &[], (-1, 365));
        let chain = vec![leaf.cert.clone()];
        handshake(&info(vec![ca.der()], None), chain, leaf).unwrap();
    }

    #[test]
    fn cas_chain_through_an_intermediate_with_san_is_accepted() {
        let root = Ca::new("Google Cloud SQL Server CA Root");
        let inter = root.intermediate("Google Cloud SQL Server CA Intermediate");
        let leaf = inter.server(None, &["abc.def.us-central1.sql.goog"], (-1, 365));
        let chain = vec![leaf.cert.clone(), inter.der()];
        let server_ca = vec![inter.der(), root.der()];
        handshake(
            &info(server_ca, Some("abc.def.us-central1.sql.goog")),
            chain,
            leaf,
        )
        .unwrap();
    }

    /// An AlloyDB-shaped server: leaf from `root` with `sans`, requiring a
    /// client certificate that chains to `root`.
    fn alloydb_server(root: &Ca, sans: &[&str]) -> ServerConfig {
        let provider = Arc::new(provider());
        let leaf = root.server(Some("uid.server.alloydb"), sans, (-1, 365));
        let mut roots = RootCertStore::empty();
        roots.add(root.der()).unwrap();
        let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(clients)
            .with_single_cert(vec![leaf.cert, root.der()], leaf.key)
            .unwrap()
    }

    fn alloydb_info(
        root: &Ca,
        client_chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    ) -> ConnectionInfo {
        ConnectionInfo {
            addresses: Addresses::default(),
            port: 5433,
            trust_anchors: vec![root.der()],
            identity: ServerIdentity::AddressDialled,
            sni: true,
            client_chain,
            expiry: SystemTime::now(),
            exchange: None,
        }
    }

    #[test]
    fn alloydb_sends_its_chain_and_checks_the_address_dialled() {
        let root = Ca::new("root.alloydb");
        let inter = root.intermediate("client.alloydb");
        let client = certs::parse_pem_list(&inter.client_cert_pem(&key().spki_der, 60)).unwrap();
        let chain = vec![client[0].clone(), inter.der(), root.der()];
        let ip = |s: &str| Target::Ip(s.parse().unwrap());

        let server = alloydb_server(&root, &["10.0.0.2", "x.y.alloydb-psc.goog"]);
        handshake_with(
            &alloydb_info(&root, chain.clone()),
            server.clone(),
            &ip("10.0.0.2"),
        )
        .unwrap();
        let psc = Target::Dns("x.y.alloydb-psc.goog".into());
        handshake_with(&alloydb_info(&root, chain.clone()), server.clone(), &psc).unwrap();

        // Another address of the same CA's making is someone else.
        let r = handshake_with(&alloydb_info(&root, chain.clone()), server, &ip("10.0.0.3"));
        assert_eq!(check_of(r), VerificationCheck::Identity);

        // Another cluster's CA.
        let other = Ca::new("root.alloydb");
        let r = handshake_with(
            &alloydb_info(&root, chain),
            alloydb_server(&other, &["10.0.0.2"]),
            &ip("10.0.0.2"),
        );
        assert_eq!(check_of(r), VerificationCheck::Chain);

        // Without the intermediate the server cannot chain the client.
        let r = handshake_with(
            &alloydb_info(&root, vec![client[0].clone()]),
            alloydb_server(&root, &["10.0.0.2"]),
            &ip("10.0.0.2"),
        );
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Tls);
        assert!(e.message().contains("server refused"), "{e}");
    }

    #[test]
    fn each_failed_check_is_named() {
        let ca = Ca::new("Google Cloud SQL Server CA");
        let other = Ca::new("Somebody else's CA");

        let leaf = other.server(Some("proj:db"), &[], (-1, 365));
        let chain = vec![leaf.cert.clone()];
        assert_eq!(
            check_of(handshake(&info(vec![ca.der()], None), chain, leaf)),
            VerificationCheck::Chain
        );

        let leaf = ca.server(Some("proj:other-db"), &[], (-1, 365));
        let chain = vec![leaf.cert.clone()];
        assert_eq!(
            check_of(handshake(&info(vec![ca.der()], None), chain, leaf)),
            VerificationCheck::Identity
        );

        let leaf = ca.server(None, &["x.other.sql.goog"], (-1, 365));
        let chain = vec![leaf.cert.clone()];
        let r = handshake(&info(vec![ca.der()], Some("abc.def.sql.goog")), chain, leaf);
        assert_eq!(check_of(r), VerificationCheck::Identity);

        let leaf = ca.server(Some("proj:db"), &[], (-10, -1));
        let chain = vec![leaf.cert.clone()];
        assert_eq!(
            check_of(handshake(&info(vec![ca.der()], None), chain, leaf)),
            VerificationCheck::Expired
        );

        let leaf = ca.server(Some("proj:db"), &[], (1, 10));
        let chain = vec![leaf.cert.clone()];
        assert_eq!(
            check_of(handshake(&info(vec![ca.der()], None), chain, leaf)),
            VerificationCheck::NotYetValid
        );

        // A self-signed leaf naming the instance is still not from the CA.
        let selfsigned = Ca::new("proj:db");
        let leaf = selfsigned.server(Some("proj:db"), &[], (-1, 365));
        let chain = vec![leaf.cert.clone()];
        assert_eq!(
            check_of(handshake(&info(vec![ca.der()], None), chain, leaf)),
            VerificationCheck::Chain
        );
    }

    /// A server that does not ask for the client certificate is not the
    /// instance's; the client refuses it before its Finished, so data queued
    /// before the handshake (as the metadata exchange is) never leaves.
    #[test]
    fn a_server_asking_for_no_client_certificate_is_refused_before_any_data() {
        let ca = Ca::new("Google Cloud SQL Server CA");
        let leaf = ca.server(Some("proj:db"), &[], (-1, 365));
        let server = server_builder()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.cert.clone()], leaf.key)
            .unwrap();
        let config = TlsConfig::new(&info(vec![ca.der()], None), key(), &name()).unwrap();
        let mut c = ClientConnection::new(
            config.for_connection().unwrap(),
            server_name(&localhost()).unwrap(),
        )
        .unwrap();
        io::Write::write_all(&mut c.writer(), b"queued before the handshake").unwrap();
        let mut s = ServerConnection::new(Arc::new(server)).unwrap();
        let mut refused = None;
        for _ in 0..10 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            s.read_tls(&mut buf.as_slice()).unwrap();
            let _ = s.process_new_packets();
            if refused.is_some() {
                break;
            }
            buf.clear();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            c.read_tls(&mut buf.as_slice()).unwrap();
            refused = c.process_new_packets().err();
        }
        let refused = from_rustls(&refused.expect("the client went on"));
        assert_eq!(
            check_of(Err(refused.clone())),
            VerificationCheck::ClientAuth
        );
        assert!(refused
            .to_string()
            .contains("did not ask for the client certificate"));
        // The client's last flight (its alert included) reached the server,
        // which never saw a client Finished, so no data was ever readable.
        assert!(s.is_handshaking());
        let mut sink = [0u8; 64];
        assert!(io::Read::read(&mut s.reader(), &mut sink).is_err());
    }

    #[test]
    fn a_server_without_tls_1_3_fails_the_protocol_version_check() {
        for e in [
            rustls::Error::AlertReceived(AlertDescription::ProtocolVersion),
            rustls::Error::PeerIncompatible(
                PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig,
            ),
        ] {
            let refused = from_rustls(&e);
            assert!(refused.to_string().contains("TLS 1.3"), "{refused}");
            assert_eq!(check_of(Err(refused)), VerificationCheck::ProtocolVersion);
        }
        assert_eq!(
            from_rustls(&rustls::Error::AlertReceived(
                AlertDescription::HandshakeFailure
            ))
            .kind(),
            ErrorKind::Tls
        );
    }
}
