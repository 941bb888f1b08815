//! The signatures the connector checks the server with: its certificate
//! chain's and TLS 1.3's CertificateVerify. The same algorithms and schemes
//! as rustls-rustcrypto's table, in its order, but RSA on rsa 0.10 (the crate
//! the client key signs with) rather than rsa 0.9: no rsa 0.9 code is left
//! in the component, and an RSA check costs about a quarter as much in wasm
//! (crypto-bigint rather than num-bigint-dig). ECDSA and Ed25519 on the
//! crates rustls-rustcrypto uses for them.

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::sha2::{Digest, Sha256, Sha384, Sha512};
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, PublicKey};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{
    alg_id, AlgorithmIdentifier, InvalidSignature, SignatureVerificationAlgorithm,
};
use rustls::SignatureScheme;

/// The smallest RSA modulus accepted, as webpki's own RSA verifiers
/// (`RSA_*_2048_8192_*`); rsa's decoder refuses above 8192 bits.
const MIN_RSA_BITS: u32 = 2048;

#[derive(Debug, Clone, Copy)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest(self, message: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(message).to_vec(),
            Hash::Sha384 => Sha384::digest(message).to_vec(),
            Hash::Sha512 => Sha512::digest(message).to_vec(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    RsaPkcs1v15(Hash),
    /// RSASSA-PSS with MGF1 of the same hash and a salt as long as the hash:
    /// what TLS 1.3 (RFC 8446 §4.2.3) and webpki's PSS identifiers allow.
    RsaPss(Hash),
    /// ASN.1 DER signatures of the message's hash (X.509 and TLS both).
    EcdsaP256(Hash),
    EcdsaP384(Hash),
    Ed25519,
}

/// One signature algorithm of an X.509 certificate or a TLS 1.3 scheme.
#[derive(Debug)]
struct Algorithm {
    kind: Kind,
    signature_alg_id: AlgorithmIdentifier,
}

impl SignatureVerificationAlgorithm for Algorithm {
    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        match self.kind {
            Kind::RsaPkcs1v15(_) | Kind::RsaPss(_) => alg_id::RSA_ENCRYPTION,
            Kind::EcdsaP256(_) => alg_id::ECDSA_P256,
            Kind::EcdsaP384(_) => alg_id::ECDSA_P384,
            Kind::Ed25519 => alg_id::ED25519,
        }
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        self.signature_alg_id
    }

    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        match self.kind {
            Kind::RsaPkcs1v15(hash) => {
                let padding = match hash {
                    Hash::Sha256 => Pkcs1v15Sign::new::<Sha256>(),
                    Hash::Sha384 => Pkcs1v15Sign::new::<Sha384>(),
                    Hash::Sha512 => Pkcs1v15Sign::new::<Sha512>(),
                };
                rsa_key(public_key)?
                    .verify(padding, &hash.digest(message), signature)
                    .map_err(|_| InvalidSignature)
            }
            Kind::RsaPss(hash) => {
                let key = rsa_key(public_key)?;
                // A salt as long as the hash, as `Kind::RsaPss` says.
                match hash {
                    Hash::Sha256 => key.pss_verify::<Sha256>(message, signature),
                    Hash::Sha384 => key.pss_verify::<Sha384>(message, signature),
                    Hash::Sha512 => key.pss_verify::<Sha512>(message, signature),
                }
                .map_err(|_| InvalidSignature)
            }
            Kind::EcdsaP256(hash) => {
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(public_key)
                    .map_err(|_| InvalidSignature)?;
                let signature =
                    p256::ecdsa::DerSignature::try_from(signature).map_err(|_| InvalidSignature)?;
                key.verify_prehash(&hash.digest(message), &signature)
                    .map_err(|_| InvalidSignature)
            }
            Kind::EcdsaP384(hash) => {
                let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(public_key)
                    .map_err(|_| InvalidSignature)?;
                let signature =
                    p384::ecdsa::DerSignature::try_from(signature).map_err(|_| InvalidSignature)?;
                key.verify_prehash(&hash.digest(message), &signature)
                    .map_err(|_| InvalidSignature)
            }
            Kind::Ed25519 => {
                let key = public_key.try_into().map_err(|_| InvalidSignature)?;
                let signature = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| InvalidSignature)?;
                let key =
                    ed25519_dalek::VerifyingKey::from_bytes(key).map_err(|_| InvalidSignature)?;
                ed25519_dalek::Verifier::verify(&key, message, &signature)
                    .map_err(|_| InvalidSignature)
            }
        }
    }
}

/// An RSAPublicKey (PKCS #1, the certificate's subjectPublicKey) of at
/// least [`MIN_RSA_BITS`].
fn rsa_key(der: &[u8]) -> Result<PublicKey, InvalidSignature> {
    let key = PublicKey::from_pkcs1_der(der).map_err(|_| InvalidSignature)?;
    if key.n().bit_width_vartime() < MIN_RSA_BITS {
        return Err(InvalidSignature);
    }
    Ok(key)
}

const fn algorithm(kind: Kind, signature_alg_id: AlgorithmIdentifier) -> Algorithm {
    Algorithm {
        kind,
        signature_alg_id,
    }
}

static ECDSA_P256_SHA256: Algorithm =
    algorithm(Kind::EcdsaP256(Hash::Sha256), alg_id::ECDSA_SHA256);
static ECDSA_P256_SHA384: Algorithm =
    algorithm(Kind::EcdsaP256(Hash::Sha384), alg_id::ECDSA_SHA384);
static ECDSA_P384_SHA256: Algorithm =
    algorithm(Kind::EcdsaP384(Hash::Sha256), alg_id::ECDSA_SHA256);
static ECDSA_P384_SHA384: Algorithm =
    algorithm(Kind::EcdsaP384(Hash::Sha384), alg_id::ECDSA_SHA384);
static ED25519: Algorithm = algorithm(Kind::Ed25519, alg_id::ED25519);
static RSA_PKCS1_SHA256: Algorithm =
    algorithm(Kind::RsaPkcs1v15(Hash::Sha256), alg_id::RSA_PKCS1_SHA256);
static RSA_PKCS1_SHA384: Algorithm =
    algorithm(Kind::RsaPkcs1v15(Hash::Sha384), alg_id::RSA_PKCS1_SHA384);
static RSA_PKCS1_SHA512: Algorithm =
    algorithm(Kind::RsaPkcs1v15(Hash::Sha512), alg_id::RSA_PKCS1_SHA512);
static RSA_PSS_SHA256: Algorithm = algorithm(Kind::RsaPss(Hash::Sha256), alg_id::RSA_PSS_SHA256);
static RSA_PSS_SHA384: Algorithm = algorithm(Kind::RsaPss(Hash::Sha384), alg_id::RSA_PSS_SHA384);
static RSA_PSS_SHA512: Algorithm = algorithm(Kind::RsaPss(Hash::Sha512), alg_id::RSA_PSS_SHA512);

/// The provider's verifiers: rustls-rustcrypto's table (a test holds them
/// equal), with these implementations.
pub(crate) static ALGORITHMS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[
        &ECDSA_P256_SHA256,
        &ECDSA_P256_SHA384,
        &ECDSA_P384_SHA256,
        &ECDSA_P384_SHA384,
        &ED25519,
        &RSA_PKCS1_SHA256,
        &RSA_PKCS1_SHA384,
        &RSA_PKCS1_SHA512,
        &RSA_PSS_SHA256,
        &RSA_PSS_SHA384,
        &RSA_PSS_SHA512,
    ],
    mapping: &[
        (
            SignatureScheme::ECDSA_NISTP384_SHA384,
            &[&ECDSA_P384_SHA384, &ECDSA_P256_SHA384],
        ),
        (
            SignatureScheme::ECDSA_NISTP256_SHA256,
            &[&ECDSA_P256_SHA256, &ECDSA_P384_SHA256],
        ),
        (SignatureScheme::ED25519, &[&ED25519]),
        (SignatureScheme::RSA_PKCS1_SHA256, &[&RSA_PKCS1_SHA256]),
        (SignatureScheme::RSA_PKCS1_SHA384, &[&RSA_PKCS1_SHA384]),
        (SignatureScheme::RSA_PKCS1_SHA512, &[&RSA_PKCS1_SHA512]),
        (SignatureScheme::RSA_PSS_SHA256, &[&RSA_PSS_SHA256]),
        (SignatureScheme::RSA_PSS_SHA384, &[&RSA_PSS_SHA384]),
        (SignatureScheme::RSA_PSS_SHA512, &[&RSA_PSS_SHA512]),
    ],
};

#[cfg(test)]
mod tests {
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
    use rsa::{pkcs1v15, pss, PrivateKey};

    use super::*;
    use crate::testing::certs::client_key;

    const MESSAGE: &[u8] = b"TLS 1.3, server CertificateVerify";

    type Dyn = &'static dyn SignatureVerificationAlgorithm;

    /// The one algorithm of `scheme` whose public key is `key_alg`.
    fn verifier(scheme: SignatureScheme, key_alg: AlgorithmIdentifier) -> Dyn {
        let (_, algorithms) = ALGORITHMS
            .mapping
            .iter()
            .find(|(s, _)| *s == scheme)
            .expect("scheme offered");
        let mut of_key = algorithms
            .iter()
            .filter(|a| a.public_key_alg_id() == key_alg);
        let found = *of_key.next().expect("an algorithm for the key");
        assert!(of_key.next().is_none());
        found
    }

    /// Each signature verifies with its own algorithm and no other, and not
    /// for another message, with a bit flipped or a byte missing.
    fn check_signatures(public: &[u8], signatures: &[(Dyn, Vec<u8>)]) {
        for (algorithm, signature) in signatures {
            let name = format!("{algorithm:?}");
            assert!(
                algorithm
                    .verify_signature(public, MESSAGE, signature)
                    .is_ok(),
                "{name}"
            );
            assert!(algorithm
                .verify_signature(public, b"another message", signature)
                .is_err());
            let mut flipped = signature.clone();
            flipped[signature.len() / 2] ^= 0x01;
            assert!(algorithm
                .verify_signature(public, MESSAGE, &flipped)
                .is_err());
            assert!(algorithm
                .verify_signature(public, MESSAGE, &signature[1..])
                .is_err());
            assert!(algorithm
                .verify_signature(b"\x30\x03\x02\x01\x01", MESSAGE, signature)
                .is_err());
            for (other, other_signature) in signatures {
                if !std::ptr::addr_eq(*other, *algorithm) {
                    assert!(
                        algorithm
                            .verify_signature(public, MESSAGE, other_signature)
                            .is_err(),
                        "{name} took {other:?}'s signature"
                    );
                }
            }
        }
    }

    fn rsa_public(key: &PrivateKey) -> Vec<u8> {
        key.as_public_key()
            .to_pkcs1_der()
            .unwrap()
            .as_bytes()
            .to_vec()
    }

    #[test]
    fn rsa_signatures_verify_with_their_own_scheme_only() {
        use rsa::sha2::{Sha256, Sha384, Sha512};
        let key = PrivateKey::clone(client_key().private_key());
        let rsa = alg_id::RSA_ENCRYPTION;
        let mut rng = getrandom::SysRng;
        let pkcs1 = |s: pkcs1v15::Signature| s.to_vec();
        let pss = |s: pss::Signature| s.to_vec();
        let signatures = vec![
            (
                verifier(SignatureScheme::RSA_PKCS1_SHA256, rsa),
                pkcs1(pkcs1v15::SigningKey::<Sha256>::new(key.clone()).sign(MESSAGE)),
            ),
            (
                verifier(SignatureScheme::RSA_PKCS1_SHA384, rsa),
                pkcs1(pkcs1v15::SigningKey::<Sha384>::new(key.clone()).sign(MESSAGE)),
            ),
            (
                verifier(SignatureScheme::RSA_PKCS1_SHA512, rsa),
                pkcs1(pkcs1v15::SigningKey::<Sha512>::new(key.clone()).sign(MESSAGE)),
            ),
            (
                verifier(SignatureScheme::RSA_PSS_SHA256, rsa),
                pss(pss::SigningKey::<Sha256>::new(key.clone())
                    .try_sign_with_rng(&mut rng, MESSAGE)
                    .unwrap()),
            ),
            (
                verifier(SignatureScheme::RSA_PSS_SHA384, rsa),
                pss(pss::SigningKey::<Sha384>::new(key.clone())
                    .try_sign_with_rng(&mut rng, MESSAGE)
                    .unwrap()),
            ),
            (
                verifier(SignatureScheme::RSA_PSS_SHA512, rsa),
                pss(pss::SigningKey::<Sha512>::new(key.clone())
                    .try_sign_with_rng(&mut rng, MESSAGE)
                    .unwrap()),
            ),
        ];
        check_signatures(&rsa_public(&key), &signatures);
        // Another key.
        let other = PrivateKey::new(&mut rng, 2048).unwrap();
        for (algorithm, signature) in &signatures {
            assert!(algorithm
                .verify_signature(&rsa_public(&other), MESSAGE, signature)
                .is_err());
        }
    }

    #[test]
    fn a_pss_salt_not_as_long_as_the_hash_is_refused() {
        let key = PrivateKey::clone(client_key().private_key());
        let algorithm = verifier(SignatureScheme::RSA_PSS_SHA256, alg_id::RSA_ENCRYPTION);
        for salt in [0, 20, 64] {
            let signature =
                pss::SigningKey::<rsa::sha2::Sha256>::new_with_salt_len(key.clone(), salt)
                    .try_sign_with_rng(&mut getrandom::SysRng, MESSAGE)
                    .unwrap()
                    .to_vec();
            assert!(
                algorithm
                    .verify_signature(&rsa_public(&key), MESSAGE, &signature)
                    .is_err(),
                "salt of {salt} bytes"
            );
        }
    }

    #[test]
    fn an_rsa_modulus_under_2048_bits_is_refused() {
        let small = PrivateKey::new(&mut getrandom::SysRng, 1536).unwrap();
        let signature = pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(small.clone())
            .sign(MESSAGE)
            .to_vec();
        let algorithm = verifier(SignatureScheme::RSA_PKCS1_SHA256, alg_id::RSA_ENCRYPTION);
        assert!(algorithm
            .verify_signature(&rsa_public(&small), MESSAGE, &signature)
            .is_err());
    }

    #[test]
    fn ecdsa_signatures_verify_with_their_own_curve_and_hash_only() {
        let p256_key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let p384_key = p384::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let p256_sign = |hash: Hash| -> Vec<u8> {
            let signature: p256::ecdsa::Signature =
                p256_key.sign_prehash(&hash.digest(MESSAGE)).unwrap();
            signature.to_der().as_bytes().to_vec()
        };
        let p384_sign = |hash: Hash| -> Vec<u8> {
            let signature: p384::ecdsa::Signature =
                p384_key.sign_prehash(&hash.digest(MESSAGE)).unwrap();
            signature.to_der().as_bytes().to_vec()
        };
        let p256_public = p256_key.verifying_key().to_encoded_point(false);
        let p384_public = p384_key.verifying_key().to_encoded_point(false);
        type Sign<'a> = &'a dyn Fn(Hash) -> Vec<u8>;
        let curves: [(&[u8], _, Sign); 2] = [
            (p256_public.as_bytes(), alg_id::ECDSA_P256, &p256_sign),
            (p384_public.as_bytes(), alg_id::ECDSA_P384, &p384_sign),
        ];
        // Each curve with each hash.
        for (public, curve, sign) in curves {
            check_signatures(
                public,
                &[
                    (
                        verifier(SignatureScheme::ECDSA_NISTP256_SHA256, curve),
                        sign(Hash::Sha256),
                    ),
                    (
                        verifier(SignatureScheme::ECDSA_NISTP384_SHA384, curve),
                        sign(Hash::Sha384),
                    ),
                ],
            );
        }
        // A key of the other curve.
        let algorithm = verifier(SignatureScheme::ECDSA_NISTP256_SHA256, alg_id::ECDSA_P256);
        assert!(algorithm
            .verify_signature(p384_public.as_bytes(), MESSAGE, &p384_sign(Hash::Sha256))
            .is_err());
    }

    #[test]
    fn ed25519_signatures_verify() {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let signature = ed25519_dalek::Signer::sign(&key, MESSAGE).to_vec();
        check_signatures(
            key.verifying_key().as_bytes(),
            &[(
                verifier(SignatureScheme::ED25519, alg_id::ED25519),
                signature,
            )],
        );
    }

    /// The same algorithms, schemes and order as rustls-rustcrypto's table,
    /// all of them this module's.
    #[test]
    fn the_table_is_rustcryptos_on_these_implementations() {
        let theirs = rustls_rustcrypto::provider().signature_verification_algorithms;
        let ids = |algorithms: &[Dyn]| -> Vec<(AlgorithmIdentifier, AlgorithmIdentifier)> {
            algorithms
                .iter()
                .map(|a| (a.public_key_alg_id(), a.signature_alg_id()))
                .collect()
        };
        assert_eq!(ids(ALGORITHMS.all), ids(theirs.all));
        assert_eq!(ALGORITHMS.mapping.len(), theirs.mapping.len());
        for ((scheme, ours), (their_scheme, their_algorithms)) in
            ALGORITHMS.mapping.iter().zip(theirs.mapping)
        {
            assert_eq!(scheme, their_scheme);
            assert_eq!(ids(ours), ids(their_algorithms), "{scheme:?}");
        }
        for algorithm in ALGORITHMS
            .all
            .iter()
            .chain(ALGORITHMS.mapping.iter().flat_map(|m| m.1))
        {
            let debug = format!("{algorithm:?}");
            assert!(debug.starts_with("Algorithm {"), "{debug}");
        }
    }
}
