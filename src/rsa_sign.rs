//! The connector's RSA signatures, on rsa 0.10: RSASSA-PSS for TLS 1.3's
//! CertificateVerify, PKCS #1 v1.5 with SHA-256 (RS256) for
//! service-account assertions.
//!
//! Unblinded. rsa 0.10's private-key operation runs on crypto-bigint's
//! constant-time arithmetic, which is what closes RUSTSEC-2023-0071 (timing);
//! its optional blinding (base, exponent and a widened modulus) is a second
//! layer that makes each signature about 1.6 times as slow in wasm. Go's
//! crypto/rsa, which Google's Go connector signs with, has not blinded since
//! its constant-time backend (Go 1.20; the random argument of its
//! private-key operations is "legacy and ignored"). The PSS salt comes from
//! the system's randomness, and rsa checks each result against the public
//! key before it is used (a CRT fault check).

use rsa::sha2::digest::FixedOutputReset;
use rsa::sha2::{Digest, Sha256};
use rsa::traits::SignatureScheme;
use rsa::{pss, Pkcs1v15Sign, PrivateKey};

/// RSASSA-PSS with `D`, MGF1 of `D` and a salt as long as `D`'s output (what
/// TLS 1.3 requires), without blinding.
pub(crate) fn pss<D>(key: &PrivateKey, message: &[u8]) -> rsa::Result<Vec<u8>>
where
    D: Digest + FixedOutputReset,
{
    let mut scheme = pss::Pss::<D>::new();
    scheme.blinded = false;
    let hashed = D::digest(message);
    key.sign_with_rng(&mut getrandom::SysRng, scheme, &hashed)
}

/// RSASSA-PKCS1-v1_5 with SHA-256 (JWS `RS256`), without blinding.
pub(crate) fn pkcs1v15_sha256(key: &PrivateKey, message: &[u8]) -> rsa::Result<Vec<u8>> {
    let hashed = Sha256::digest(message);
    // No RNG: the operation is not blinded, whichever features rsa has.
    Pkcs1v15Sign::new::<Sha256>().sign(None::<&mut getrandom::SysRng>, key, &hashed)
}

#[cfg(test)]
mod tests {
    use rsa::sha2::{Sha384, Sha512};
    use rsa::signature::Verifier;
    use rsa::{pkcs1v15, PublicKey};

    use super::*;
    use crate::testing::certs::client_key;

    const MESSAGE: &[u8] = b"signed without blinding";

    fn key() -> &'static PrivateKey {
        client_key().private_key()
    }

    fn public() -> PublicKey {
        key().as_public_key().clone()
    }

    /// Each signature verifies with rsa's own verifier (the salt as long as
    /// the hash); PSS signatures of one message differ (a fresh salt).
    #[test]
    fn pss_signatures_verify_and_are_salted() {
        fn check<D>()
        where
            D: Digest + FixedOutputReset + rsa::sha2::digest::const_oid::AssociatedOid,
            pss::VerifyingKey<D>: Verifier<pss::Signature>,
        {
            let a = pss::<D>(key(), MESSAGE).unwrap();
            let b = pss::<D>(key(), MESSAGE).unwrap();
            assert_ne!(a, b);
            for signature in [a, b] {
                let signature = pss::Signature::try_from(signature.as_slice()).unwrap();
                pss::VerifyingKey::<D>::new(public())
                    .verify(MESSAGE, &signature)
                    .unwrap();
                assert!(pss::VerifyingKey::<D>::new(public())
                    .verify(b"another message", &signature)
                    .is_err());
            }
        }
        check::<Sha256>();
        check::<Sha384>();
        check::<Sha512>();
    }

    /// RS256 is deterministic: the same bytes as rsa's blinded signer, and
    /// they verify.
    #[test]
    fn rs256_signatures_verify_and_match_the_blinded_signers() {
        use rsa::signature::{RandomizedSigner, SignatureEncoding};
        let ours = pkcs1v15_sha256(key(), MESSAGE).unwrap();
        let blinded = pkcs1v15::SigningKey::<Sha256>::new(key().clone())
            .try_sign_with_rng(&mut getrandom::SysRng, MESSAGE)
            .unwrap();
        assert_eq!(ours, blinded.to_vec());
        let signature = pkcs1v15::Signature::try_from(ours.as_slice()).unwrap();
        pkcs1v15::VerifyingKey::<Sha256>::new(public())
            .verify(MESSAGE, &signature)
            .unwrap();
    }
}
