//! A fresh RSA-2048 key (e = 65537), fast in wasm.
//!
//! The rsa crate's own generator (num-bigint-dig) takes most of a second of
//! CPU in wasm32. Here crypto-primes (on crypto-bigint, 32-bit limbs in wasm
//! through `.cargo/config.toml`) finds the primes behind a sieve of 2048 small
//! primes and a BPSW'21 test, which cuts the candidates that reach the costly
//! tests; each prime it finds then passes every test the rsa crate's generator
//! applies (see [`passes_rsa_crate_tests`]). The key is put together and
//! checked by the rsa crate, as its generator does. About 2.8 times less CPU
//! per key in wasm, 2.2 times natively.

use crypto_bigint::{Odd, U1024};
use crypto_primes::hazmat::{
    lucas_test, BruteForceBase, LucasCheck, MillerRabin, SetBits, SmallFactorsSieveFactory,
};
use crypto_primes::{is_prime, sieve_and_find, Flavor};
use getrandom::rand_core::{TryRng, UnwrapErr};
use getrandom::SysRng;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey};

use crate::error::Error;

/// Google's connectors use RSA-2048 with e = 65537; the Admin API signs it.
pub(crate) const KEY_BITS: usize = 2048;
const PRIME_BITS: u32 = 1024;
const PUBLIC_EXPONENT: u32 = 65537;
/// As num-bigint-dig's `probably_prime(p, 20)`, which rsa 0.9 uses.
const MILLER_RABIN_RANDOM_BASES: usize = 20;

type Rng = UnwrapErr<SysRng>;

/// A new key from the system's randomness (wasi:random in wasm).
pub(crate) fn rsa_2048() -> Result<RsaPrivateKey, Error> {
    // The generator below cannot return an error from its RNG; try it once
    // here so a host without randomness gets an error, not a panic.
    SysRng
        .try_fill_bytes(&mut [0u8; 16])
        .map_err(|e| failed(format!("no system randomness: {e}")))?;
    let mut rng = UnwrapErr(SysRng);
    loop {
        let p = random_prime(&mut rng)?;
        let q = random_prime(&mut rng)?;
        // As rsa's generator: new primes if p == q or if e divides
        // (p-1)(q-1) (1 in 32768), then rsa's own key checks (validate).
        match RsaPrivateKey::from_primes(vec![p, q], BigUint::from(PUBLIC_EXPONENT)) {
            Ok(key) if key.n().bits() == KEY_BITS => return Ok(key),
            Ok(_) | Err(rsa::Error::InvalidPrime) => continue,
            Err(e) => return Err(failed(e)),
        }
    }
}

/// A 1024-bit prime with its two top bits set, so that p·q has 2048 bits.
fn random_prime(rng: &mut Rng) -> Result<BigUint, Error> {
    let sieve = SmallFactorsSieveFactory::<U1024>::new(Flavor::Any, PRIME_BITS, SetBits::TwoMsb)
        .map_err(failed)?;
    let prime = sieve_and_find(rng, sieve, |rng, candidate| {
        // BPSW'21 first: it rejects composites at the cost of about one
        // Miller-Rabin round; the rsa crate's tests run on its primes only.
        is_prime(Flavor::Any, candidate) && passes_rsa_crate_tests(rng, candidate)
    })
    .map_err(failed)?
    .ok_or_else(|| failed("the prime sieve ran out of candidates"))?;
    Ok(BigUint::from_bytes_be(&prime.to_be_bytes()))
}

/// The rest of what rsa 0.9 asks of a prime (num-bigint-dig's
/// `probably_prime(p, 20)`: Miller-Rabin with base 2 and 20 pseudo-random
/// bases, and an almost extra strong Lucas test with Baillie's parameters
/// P = 3, 4, ..., Q = 1), each at least as strict here: base 2 was in
/// `is_prime`; 20 bases from the system RNG rather than a generator seeded
/// with the candidate; the extra strong Lucas test (its pseudoprimes are a
/// subset of the almost extra strong ones) with the same parameters.
fn passes_rsa_crate_tests(rng: &mut Rng, candidate: &U1024) -> bool {
    let Some(odd) = Odd::new(*candidate).into_option() else {
        return false;
    };
    let mr = MillerRabin::new(odd);
    (0..MILLER_RABIN_RANDOM_BASES).all(|_| mr.test_random_base(rng).is_probably_prime())
        && lucas_test(odd, BruteForceBase, LucasCheck::ExtraStrong).is_probably_prime()
}

fn failed(e: impl std::fmt::Display) -> Error {
    Error::invalid_config(format!("RSA key generation failed: {e}"))
}

#[cfg(test)]
mod tests {
    use rsa::pkcs1v15::{SigningKey, VerifyingKey};
    use rsa::signature::{RandomizedSigner, Verifier};
    use rsa::traits::PrivateKeyParts;

    use super::*;

    #[test]
    fn makes_valid_rsa_2048_keys_with_strong_primes() {
        let a = rsa_2048().unwrap();
        let b = rsa_2048().unwrap();
        for key in [&a, &b] {
            assert_eq!(key.n().bits(), 2048);
            assert_eq!(key.e(), &BigUint::from(65537u32));
            key.validate().unwrap();
            let [p, q] = key.primes() else {
                panic!("{} primes", key.primes().len())
            };
            assert_ne!(p, q);
            for prime in [p, q] {
                assert_eq!(prime.bits(), 1024);
                // rsa 0.9's own test, as its generator runs it.
                assert!(num_bigint_dig::prime::probably_prime(prime, 20));
            }
            let message = b"client certificate";
            let signature = SigningKey::<sha2::Sha256>::new(key.clone())
                .sign_with_rng(&mut rand_core::OsRng, message);
            VerifyingKey::<sha2::Sha256>::new(key.to_public_key())
                .verify(message, &signature)
                .unwrap();
        }
        assert_ne!(a.n(), b.n());
        assert!(!a.primes().iter().any(|p| b.primes().contains(p)));
    }

    /// Composites that fool one part of the rsa crate's tests fail the whole.
    #[test]
    fn rsa_crate_tests_reject_pseudoprimes() {
        let mut rng = UnwrapErr(SysRng);
        let odd = |v: u64| Odd::new(U1024::from_u64(v)).unwrap();

        // 151·751·28351: a strong pseudoprime to the bases 2, 3, 5 and 7.
        let spsp = odd(3_215_031_751);
        assert!(MillerRabin::new(spsp).test_base_two().is_probably_prime());
        assert!(!passes_rsa_crate_tests(&mut rng, &spsp));

        // 23·43: an extra strong Lucas pseudoprime with Baillie's parameters
        // (OEIS A217719).
        let eslpsp = odd(989);
        assert!(lucas_test(eslpsp, BruteForceBase, LucasCheck::ExtraStrong).is_probably_prime());
        assert!(!passes_rsa_crate_tests(&mut rng, &eslpsp));

        assert!(passes_rsa_crate_tests(&mut rng, &odd(2_147_483_647)));
    }
}
