//! A fresh RSA-2048 key (e = 65537) to FIPS 186-5: probable primes as
//! Appendix A.1.3 makes them, tested as Appendix B.3 and Table B.1 ask.
//!
//! Each prime candidate is a fresh random 1024-bit odd number (no incremental
//! search), kept only if p ≥ √2·2^1023, |p − q| > 2^924 and gcd(p − 1, e) = 1,
//! then trial division by the odd primes below 2^16 (here: one remainder of
//! the candidate per run of primes whose product fits 32 bits), a base-2
//! Fermat test (a constant-time filter cheaper than a round) and Miller-Rabin
//! with random bases (crypto-primes, on crypto-bigint: 32-bit limbs in wasm
//! through `.cargo/config.toml`). The rsa crate (0.10, constant-time) puts
//! the key together from p and q, d modulo λ(n), and checks it.

use std::num::{NonZeroU32, NonZeroU64};
use std::sync::OnceLock;

use crypto_bigint::modular::{FixedMontyForm, FixedMontyParams};
use crypto_bigint::{CtAssign, CtEq, Limb, MontyForm, MontyMultiplier, NonZero, Odd, U1024, U2048};
use crypto_primes::hazmat::MillerRabin;
use getrandom::rand_core::{TryRng, UnwrapErr};
use getrandom::SysRng;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BoxedUint, PrivateKey};

use crate::error::Error;

/// Google's connectors use RSA-2048 with e = 65537; the Admin API signs it.
pub(crate) const KEY_BITS: usize = 2048;
/// nlen / 2.
const PRIME_BITS: u32 = 1024;
const PUBLIC_EXPONENT: u32 = 65537;
/// FIPS 186-5 Table B.1, p and q of 1024 bits, Miller-Rabin alone: 5 rounds
/// (error 2^-112), as Go's crypto/rsa does. The other column, 4 rounds and a
/// Lucas test, is slower (crypto-primes' strong Lucas test costs several
/// rounds) and that test branches on the bits of the prime it keeps.
const MILLER_RABIN_ROUNDS: usize = 5;
/// A.1.3 steps 4.7 and 5.8: candidates tried before the search fails.
const MAX_P_CANDIDATES: usize = 5 * PRIME_BITS as usize;
const MAX_Q_CANDIDATES: usize = 10 * PRIME_BITS as usize;
/// A.1.3 step 5.4: |p − q| must exceed 2^(nlen/2 − 100).
const MIN_DISTANCE: U1024 = U1024::ONE.shl_vartime(PRIME_BITS - 100);
/// Random draws allowed per candidate tried (see [`random_prime`]).
const DRAWS_PER_CANDIDATE: usize = 20;
/// A failed search (A.1.3's FAILURE, about once in two million keys) or a
/// d too small (about 2^-1000) starts over; this many times at most.
const MAX_ATTEMPTS: usize = 4;

type Rng = UnwrapErr<SysRng>;

/// A new key from the system's randomness (wasi:random in wasm).
pub(crate) fn rsa_2048() -> Result<PrivateKey, Error> {
    // The primality tests take an infallible RNG; try the system's once
    // here so that a host without randomness gets an error, not a panic.
    SysRng
        .try_fill_bytes(&mut [0u8; 16])
        .map_err(|e| failed(format!("no system randomness: {e}")))?;
    let mut rng = UnwrapErr(SysRng);
    for _ in 0..MAX_ATTEMPTS {
        let Some(p) = random_prime(&mut rng, None)? else {
            continue;
        };
        let Some(q) = random_prime(&mut rng, Some(&p))? else {
            continue;
        };
        if let Some(key) = key_from_primes(&p, &q)? {
            return Ok(key);
        }
    }
    Err(failed("no suitable primes found"))
}

/// A.1.3 step 4 (`other` = None) or step 5 (`other` = the first prime):
/// a probable prime of [`PRIME_BITS`] bits, or `None` (FAILURE) after the
/// standard's number of candidates.
fn random_prime(rng: &mut Rng, other: Option<&U1024>) -> Result<Option<U1024>, Error> {
    let limit = if other.is_some() {
        MAX_Q_CANDIDATES
    } else {
        MAX_P_CANDIDATES
    };
    let mut tried = 0;
    // Steps 4.4 and 5.4-5.5 draw again without counting; about 4 draws in 10
    // fail them, so this bound only stops a broken RNG from looping forever.
    for _ in 0..DRAWS_PER_CANDIDATE * limit {
        if tried == limit {
            break;
        }
        let candidate = random_odd()?;
        if !at_least_sqrt2_half(&candidate) || other.is_some_and(|p| !far_apart(p, &candidate)) {
            continue;
        }
        if coprime_to_e(&candidate) && probably_prime(rng, &candidate) {
            return Ok(Some(candidate));
        }
        tried += 1;
    }
    Ok(None)
}

/// Steps 4.2-4.3: nlen/2 random bits, made odd. The top bit is set too: a
/// candidate without it is below √2·2^1023 and would be drawn again.
fn random_odd() -> Result<U1024, Error> {
    let mut bytes = [0u8; PRIME_BITS as usize / 8];
    SysRng.try_fill_bytes(&mut bytes).map_err(failed)?;
    bytes[0] |= 0x80;
    bytes[bytes.len() - 1] |= 1;
    Ok(U1024::from_be_slice(&bytes))
}

/// floor(√2·2^(nlen/2 − 1)) = floor(√(2^(nlen − 1))), worked out at compile
/// time.
const SQRT2_HALF_FLOOR: U1024 = U2048::ONE
    .shl_vartime(2 * PRIME_BITS - 1)
    .floor_sqrt_vartime()
    .resize();

/// p ≥ √2·2^(nlen/2 − 1), that is p > its floor (√2 is irrational): then
/// p·q has exactly nlen bits.
fn at_least_sqrt2_half(p: &U1024) -> bool {
    p > &SQRT2_HALF_FLOOR
}

/// |p − q| > 2^(nlen/2 − 100).
fn far_apart(p: &U1024, q: &U1024) -> bool {
    let distance = if p > q {
        p.wrapping_sub(q)
    } else {
        q.wrapping_sub(p)
    };
    distance > MIN_DISTANCE
}

/// gcd(p − 1, e) = 1, as gcd(e, (p − 1) mod e).
fn coprime_to_e(p: &U1024) -> bool {
    const E: NonZero<Limb> = match NonZeroU32::new(PUBLIC_EXPONENT) {
        Some(e) => NonZero::<Limb>::from_u32(e),
        None => panic!("e is not zero"),
    };
    let mut a = E.get().0;
    let mut b = p.wrapping_sub(&U1024::ONE).rem_limb(E).0;
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a == 1
}

/// Appendix B.3 with Table B.1's rounds: trial division by small primes (a
/// shortcut B.3 allows) and a base-2 Fermat test, which only ever reject
/// composites, then B.3.1's [`MILLER_RABIN_ROUNDS`] Miller-Rabin rounds with
/// random bases in [2, p − 2].
fn probably_prime(rng: &mut Rng, candidate: &U1024) -> bool {
    let Some(odd) = Odd::new(*candidate).into_option() else {
        return false;
    };
    !has_small_factor(candidate) && fermat_base_two(&odd) && miller_rabin(rng, &odd)
}

/// Whether 2^(n − 1) ≡ 1 (mod n), as it is for every odd prime n: a filter
/// for the candidates trial division lets through, nearly all of them
/// composite. It costs less than a Miller-Rabin round, which it stands in
/// front of: the power of 2 is built left to right over the bits of n − 1,
/// each a Montgomery squaring and then a doubling kept or not in constant
/// time, so there is no table of powers and no multiplication. Hand-written
/// on crypto-bigint's constant-time operations; like trial division it can
/// only reject composites, so the tests after it keep their guarantees.
fn fermat_base_two(n: &Odd<U1024>) -> bool {
    let params = FixedMontyParams::new(*n);
    let one = FixedMontyForm::one(&params);
    let mut multiplier = <FixedMontyForm<{ U1024::LIMBS }> as MontyForm>::Multiplier::from(&params);
    let exponent = n.get().wrapping_sub(&U1024::ONE);
    let mut power = one;
    for bit in (0..U1024::BITS).rev() {
        multiplier.square_assign(&mut power);
        let doubled = power.as_montgomery().double_mod(n.as_nz_ref());
        power
            .as_montgomery_mut()
            .ct_assign(&doubled, exponent.bit(bit));
    }
    power.as_montgomery().ct_eq(one.as_montgomery()).to_bool()
}

/// The largest prime below 2^16: any two table primes multiply within a
/// u32, so they share a remainder. Dividing by p pays while it costs less
/// than 1/p of the Fermat filter it may spare. In wasm a remainder costs
/// about a fifty-thousandth of the filter, so every pair below 2^16 pays;
/// a prime beyond would have a remainder to itself, and does not.
const TRIAL_DIVISION_BOUND: u16 = 65521;
/// Odd n ≤ bound at index n / 2.
const SIEVE_LEN: usize = TRIAL_DIVISION_BOUND as usize / 2 + 1;
/// Sieve of Eratosthenes over the odd numbers (index i for 2i + 1), run at
/// compile time.
const fn odd_composites() -> [bool; SIEVE_LEN] {
    let mut composite = [false; SIEVE_LEN];
    composite[0] = true; // 1
    let mut i = 1;
    while (2 * i + 1) * (2 * i + 1) < 2 * SIEVE_LEN {
        if !composite[i] {
            let p = 2 * i + 1;
            let mut m = p * p / 2;
            while m < SIEVE_LEN {
                composite[m] = true;
                m += p;
            }
        }
        i += 1;
    }
    composite
}
const SMALL_PRIME_COUNT: usize = {
    let composite = odd_composites();
    let (mut count, mut i) = (0, 0);
    while i < SIEVE_LEN {
        if !composite[i] {
            count += 1;
        }
        i += 1;
    }
    count
};
/// The odd primes up to [`TRIAL_DIVISION_BOUND`], ascending.
static SMALL_PRIMES: [u16; SMALL_PRIME_COUNT] = {
    let composite = odd_composites();
    let mut primes = [0; SMALL_PRIME_COUNT];
    let (mut n, mut i) = (0, 0);
    while i < SIEVE_LEN {
        if !composite[i] {
            primes[n] = (2 * i + 1) as u16;
            n += 1;
        }
        i += 1;
    }
    primes
};

/// Whether a table prime other than the candidate itself divides it; then
/// it is composite. Hand-written rather than crypto-primes' trial division
/// (one constant-time 32-limb remainder per prime, 10× slower in wasm): it
/// can only reject composites, never pass one, so the primality tests after
/// it keep their guarantees. Variable time, as crypto-primes' Miller-Rabin
/// set-up and Go's trial division are on the prime kept.
fn has_small_factor(candidate: &U1024) -> bool {
    let digits = digits(candidate);
    // Ascending primes: most candidates go at the first product (3·5·…·29).
    runs().iter().any(|run| {
        let rest = run.remainder(&digits);
        run.primes
            .iter()
            .any(|&p| rest.is_multiple_of(u64::from(p)) && *candidate != U1024::from(p))
    })
}

/// 32-bit digits in a candidate.
const DIGITS: usize = PRIME_BITS as usize / 32;

/// The candidate's 32-bit digits, least significant first, whatever the
/// limb size.
fn digits(candidate: &U1024) -> [u32; DIGITS] {
    let bytes = candidate.to_le_bytes();
    let mut digits = [0; DIGITS];
    for (digit, chunk) in digits.iter_mut().zip(bytes.as_chunks::<4>().0) {
        *digit = u32::from_le_bytes(*chunk);
    }
    digits
}

/// A run of [`prime_runs`], with the weight of each digit modulo its
/// product.
struct Run {
    primes: &'static [u16],
    product: NonZeroU64,
    /// 2^(32·k) mod product for digit k (0: the least significant).
    weights: [u32; DIGITS],
}

impl Run {
    fn new((product, primes): (NonZeroU32, &'static [u16])) -> Self {
        let product = NonZeroU64::from(product);
        let mut weights = [0; DIGITS];
        let mut weight = 1 % product;
        for (k, w) in weights.iter_mut().enumerate() {
            if k > 0 {
                weight = (weight << 32) % product;
            }
            // Always converts: the weight is below the product, a u32.
            *w = u32::try_from(weight).unwrap_or_default();
        }
        Self {
            primes,
            product,
            weights,
        }
    }

    /// The number (32-bit digits, least significant first) modulo the
    /// product, as the sum of each digit times its weight: 32 products
    /// below 2^64, added as their low and high halves (each sum below 2^37),
    /// then two divisions. Dividing digit by digit (Horner) takes 32, and
    /// wasm's 64-bit division costs as much as several multiplications.
    fn remainder(&self, digits: &[u32; DIGITS]) -> u64 {
        let (mut low, mut high) = (0u64, 0u64);
        for (&digit, &weight) in digits.iter().zip(&self.weights) {
            let product = u64::from(digit) * u64::from(weight);
            low += product & u64::from(u32::MAX);
            high += product >> 32;
        }
        // The sum is high·2^32 + low = (high + low / 2^32)·2^32 + low mod 2^32.
        let high = (high + (low >> 32)) % self.product;
        ((high << 32) | (low & u64::from(u32::MAX))) % self.product
    }
}

/// The runs with their weights, worked out once per instance, at the first
/// key: 3222 runs of 32 weights, about 0.5 MB.
fn runs() -> &'static [Run] {
    static RUNS: OnceLock<Box<[Run]>> = OnceLock::new();
    RUNS.get_or_init(|| {
        // At its exact size: a growing Vec would leave wasm's linear memory
        // (which never shrinks) grown by its discarded buffers.
        let mut runs = Vec::with_capacity(prime_runs().count());
        runs.extend(prime_runs().map(Run::new));
        runs.into_boxed_slice()
    })
}

/// [`SMALL_PRIMES`] cut into runs of consecutive primes, each as long as
/// their product fits a u32, with that product.
fn prime_runs() -> impl Iterator<Item = (NonZeroU32, &'static [u16])> {
    let mut rest: &'static [u16] = &SMALL_PRIMES;
    std::iter::from_fn(move || {
        let (mut product, mut len) = (1u32, 0);
        while let Some(next) = rest
            .get(len)
            .and_then(|&p| product.checked_mul(u32::from(p)))
        {
            product = next;
            len += 1;
        }
        let (run, tail) = rest.split_at_checked(len)?;
        rest = tail;
        (!run.is_empty()).then_some((NonZeroU32::new(product)?, run))
    })
}

fn miller_rabin(rng: &mut Rng, odd: &Odd<U1024>) -> bool {
    let mr = MillerRabin::new(*odd);
    (0..MILLER_RABIN_ROUNDS).all(|_| mr.test_random_base(rng).is_probably_prime())
}

/// The key from its primes (A.1.3 step 6 onwards): n = p·q, d = e^-1 mod
/// λ(n) (rsa's `from_p_q`), which FIPS 186-5 wants above 2^(nlen/2); `None`
/// when it is not (new primes then). rsa checks the key and precomputes
/// its CRT values.
fn key_from_primes(p: &U1024, q: &U1024) -> Result<Option<PrivateKey>, Error> {
    let key = PrivateKey::from_p_q(
        BoxedUint::from(p),
        BoxedUint::from(q),
        BoxedUint::from(PUBLIC_EXPONENT),
    )
    .map_err(failed)?;
    if key.n().bit_width() as usize != KEY_BITS {
        return Err(failed("the modulus is not 2048 bits"));
    }
    Ok((key.d().bit_width() > PRIME_BITS).then_some(key))
}

fn failed(e: impl std::fmt::Display) -> Error {
    Error::invalid_config(format!("RSA key generation failed: {e}"))
}

#[cfg(test)]
mod tests {
    use crypto_primes::fips::{self, FipsOptions};
    use crypto_primes::hazmat::minimum_mr_iterations;
    use crypto_primes::Flavor;
    use num_bigint_dig::BigUint;
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::LineEnding;
    use rsa::signature::{RandomizedSigner, Verifier};
    use rsa::{pkcs1v15, pss};

    use super::*;

    fn rng() -> Rng {
        UnwrapErr(SysRng)
    }

    fn u1024(v: u64) -> U1024 {
        U1024::from_u64(v)
    }

    /// 2^k − 1.
    fn mersenne(k: u32) -> U1024 {
        U1024::ONE.shl_vartime(k).wrapping_sub(&U1024::ONE)
    }

    /// Table B.1 (p, q of 1024 bits), as Appendix C.1 computes it: error
    /// 2^-112 with Miller-Rabin alone.
    #[test]
    fn miller_rabin_rounds_are_table_b1s() {
        assert_eq!(
            minimum_mr_iterations(PRIME_BITS, 112),
            Some(MILLER_RABIN_ROUNDS)
        );
        assert_eq!(MILLER_RABIN_ROUNDS, 5);
    }

    #[test]
    fn candidates_below_sqrt2_times_2_1023_are_refused() {
        // floor(√2·2^1023) = floor(√(2^2047)): its square is below 2^2047,
        // the next number's is not.
        let floor = SQRT2_HALF_FLOOR;
        assert_eq!(floor.concatenating_mul(&floor).bit_width(), 2047);
        let next = floor.wrapping_add(&U1024::ONE);
        assert_eq!(next.concatenating_mul(&next).bit_width(), 2048);
        assert!(!at_least_sqrt2_half(&floor));
        assert!(at_least_sqrt2_half(&next));
        assert!(!at_least_sqrt2_half(&U1024::ONE.shl_vartime(1023)));
        assert!(at_least_sqrt2_half(&U1024::MAX));
    }

    #[test]
    fn primes_within_2_924_of_each_other_are_refused() {
        let p = U1024::MAX.shr_vartime(1).wrapping_sub(&u1024(12345));
        let at = p.wrapping_add(&MIN_DISTANCE);
        let beyond = at.wrapping_add(&U1024::ONE);
        for (a, b, apart) in [(&p, &at, false), (&p, &beyond, true), (&p, &p, false)] {
            assert_eq!(far_apart(a, b), apart);
            assert_eq!(far_apart(b, a), apart);
        }
    }

    #[test]
    fn candidates_with_e_dividing_p_minus_1_are_refused() {
        let e = u64::from(PUBLIC_EXPONENT);
        let base = 1u64 << 40;
        let k = base / e;
        assert!(!coprime_to_e(&u1024(k * e + 1)));
        assert!(coprime_to_e(&u1024(k * e + 2)));
        assert!(coprime_to_e(&u1024(k * e)));
    }

    /// Each part of the test catches what fools another.
    #[test]
    fn primality_tests_reject_each_others_pseudoprimes() {
        let odd = |v: u64| Odd::new(u1024(v)).unwrap();
        // 151·751·28351, a Carmichael number and a strong pseudoprime to
        // the bases 2, 3, 5 and 7: fixed bases are not enough. Trial
        // division finds 151.
        let spsp = odd(3_215_031_751);
        for base in [2u64, 3, 5, 7] {
            assert!(MillerRabin::new(spsp)
                .test(&u1024(base))
                .is_probably_prime());
        }
        assert!(has_small_factor(spsp.as_ref()));
        assert!(!probably_prime(&mut rng(), &spsp));

        // 101653·500177: no factor below 2^16, and a strong pseudoprime to
        // base 2, so trial division, the Fermat filter and a base-2 round
        // all pass it. About 1 base in 4.6 million lies for it (Monier's
        // count), so the random bases find it out: all 5 would lie with
        // odds below 2^-100.
        let spsp2 = odd(50_844_492_581);
        assert!(!has_small_factor(spsp2.as_ref()));
        assert!(fermat_base_two(&spsp2));
        assert!(MillerRabin::new(spsp2).test_base_two().is_probably_prime());
        assert!(!miller_rabin(&mut rng(), &spsp2));
        assert!(!probably_prime(&mut rng(), &spsp2));

        // 65521 (the largest table prime) times a prime: trial division.
        assert!(!probably_prime(&mut rng(), &u1024(65521 * 2_147_483_647)));
        // (2^61 − 1)(2^89 − 1), no small factors: Fermat and Miller-Rabin.
        let (m61, m89) = (mersenne(61), mersenne(89));
        let product = Odd::new(m61.wrapping_mul(&m89)).unwrap();
        assert!(!fermat_base_two(&product));
        assert!(!miller_rabin(&mut rng(), &product));
        assert!(!probably_prime(&mut rng(), product.as_ref()));
        // The Fermat filter's liars, left to the tests after it.
        assert!(fermat_base_two(&spsp));
        assert!(fermat_base_two(&odd(561)));
        assert!(!probably_prime(&mut rng(), &u1024(561)));

        for prime in [m61, m89, mersenne(521)] {
            assert!(probably_prime(&mut rng(), &prime));
        }
    }

    fn naive_is_prime(n: u32) -> bool {
        n >= 2
            && (2..)
                .take_while(|d| d * d <= n)
                .all(|d| !n.is_multiple_of(d))
    }

    #[test]
    fn small_primes_are_the_odd_primes_below_2_16() {
        let naive: Vec<u16> = (3..=u16::MAX)
            .filter(|&n| naive_is_prime(n.into()))
            .collect();
        assert_eq!(SMALL_PRIMES.as_slice(), naive.as_slice());
        assert_eq!(SMALL_PRIMES.last(), Some(&TRIAL_DIVISION_BOUND));
        // crypto-primes' table, which the bound extends, ends at 17863.
        assert_eq!(SMALL_PRIMES.get(2046), Some(&17863));
    }

    /// Each run's primes multiply to its product, which fits a u32, and one
    /// more prime would not fit; the runs cover the table in order.
    #[test]
    fn prime_runs_are_maximal_and_cover_the_table() {
        let mut covered = Vec::new();
        for (product, primes) in prime_runs() {
            let exact: u64 = primes.iter().map(|&p| u64::from(p)).product();
            assert_eq!(exact, u64::from(product.get()));
            if let Some(&next) = SMALL_PRIMES.get(covered.len() + primes.len()) {
                assert!(exact * u64::from(next) > u64::from(u32::MAX));
                assert!(primes.len() >= 2, "two primes below 2^16 fit a u32");
            }
            covered.extend_from_slice(primes);
        }
        assert_eq!(covered, SMALL_PRIMES);
        assert_eq!(prime_runs().next().map(|run| run.1.len()), Some(9));
    }

    /// Each run's remainder, summed from weighted digits, is the number
    /// modulo the run's product as num-bigint-dig computes it: for 2^1024 − 1
    /// (every digit, and so every sum, at its largest), 0, 1, powers of
    /// 2^32 and random candidates.
    #[test]
    fn run_remainders_agree_with_num_bigint() {
        let edges = [U1024::MAX, U1024::ZERO, U1024::ONE].into_iter();
        let powers = (0..PRIME_BITS)
            .step_by(32)
            .map(|b| U1024::ONE.shl_vartime(b));
        let random = (0..10).map(|_| random_odd().unwrap());
        for n in edges.chain(powers).chain(random) {
            let big = BigUint::from_bytes_be(&n.to_be_bytes());
            let digits = digits(&n);
            for run in runs() {
                let expected = &big % BigUint::from(run.product.get());
                assert_eq!(
                    BigUint::from(run.remainder(&digits)),
                    expected,
                    "{n} mod {}",
                    run.product
                );
            }
        }
        assert_eq!(runs().len(), prime_runs().count());
    }

    /// crypto-primes' trial division, which rejects a number of 1024 bits
    /// with a factor up to 17863.
    fn crypto_primes_rejects(c: &U1024) -> bool {
        let trial_division_only = FipsOptions::with_mr_iterations(0).with_trial_division_test();
        !fips::is_prime(&mut rng(), Flavor::Any, c, trial_division_only)
    }

    /// `has_small_factor` by definition: crypto-primes' trial division, or a
    /// prime between 17863 and the bound found with crypto-bigint.
    fn has_small_factor_reference(c: &U1024) -> bool {
        static BEYOND: std::sync::LazyLock<Vec<NonZero<Limb>>> = std::sync::LazyLock::new(|| {
            (17864..=u32::from(TRIAL_DIVISION_BOUND))
                .filter(|&p| naive_is_prime(p))
                .map(|p| NonZero::<Limb>::from_u32(p.try_into().unwrap()))
                .collect()
        });
        crypto_primes_rejects(c) || BEYOND.iter().any(|&p| c.rem_limb(p) == Limb::ZERO)
    }

    /// 2^(n − 1) mod n by num-bigint-dig, the reference for the filter.
    fn fermat_reference(n: &U1024) -> bool {
        let n = BigUint::from_bytes_be(&n.to_be_bytes());
        let one = BigUint::from(1u8);
        BigUint::from(2u8).modpow(&(n.clone() - &one), &n) == one
    }

    #[test]
    fn the_fermat_filter_passes_every_prime_and_agrees_with_modpow() {
        // RFC 3526's 1024-bit MODP prime (top bit set, as candidates are),
        // Mersenne primes, and table primes at both ends.
        let modp = U1024::from_be_hex(concat!(
            "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
            "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
            "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
            "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF",
        ));
        let table = SMALL_PRIMES
            .iter()
            .take(40)
            .chain(SMALL_PRIMES.iter().rev().take(40));
        let primes = [
            modp,
            mersenne(61),
            mersenne(89),
            mersenne(521),
            mersenne(607),
        ]
        .into_iter()
        .chain(table.map(|&p| u1024(p.into())));
        for prime in primes {
            assert!(fermat_base_two(&Odd::new(prime).unwrap()), "{prime}");
        }
        // Small composites, among them base-2 liars (341 = 11·31, 561,
        // 1105), and random 1024-bit candidates (nearly all composite):
        // the same answers as num-bigint-dig's modpow.
        let small = [9u64, 15, 91, 341, 561, 1105, 3_215_031_751, 65521 * 65519].map(u1024);
        let random = (0..100).map(|_| random_odd().unwrap());
        let (mut passed, mut refused) = (0, 0);
        for n in small.into_iter().chain(random) {
            let filtered = fermat_base_two(&Odd::new(n).unwrap());
            assert_eq!(filtered, fermat_reference(&n), "{n}");
            if filtered {
                passed += 1;
            } else {
                refused += 1;
            }
        }
        assert!(
            passed >= 4 && refused >= 90,
            "{passed} passed, {refused} refused"
        );
    }

    #[test]
    fn small_factors_are_found_as_crypto_primes_finds_them() {
        for _ in 0..3000 {
            let c = random_odd().unwrap();
            assert_eq!(has_small_factor(&c), has_small_factor_reference(&c), "{c}");
        }
        // Without a factor up to 17863, only the primes beyond it decide.
        let mut unfactored = 0;
        while unfactored < 300 {
            let c = random_odd().unwrap();
            if !crypto_primes_rejects(&c) {
                assert_eq!(has_small_factor(&c), has_small_factor_reference(&c), "{c}");
                unfactored += 1;
            }
        }
    }

    /// A large prime times each table prime, times primes just past either
    /// bound, and multiples of the edge primes of every run.
    #[test]
    fn crafted_multiples_of_small_primes() {
        // 2^1023 + 1155 is prime; 2^521 − 1 too.
        let p1024 = U1024::ONE.shl_vartime(1023).wrapping_add(&u1024(1155));
        assert!(probably_prime(&mut rng(), &p1024));
        let m521 = mersenne(521);
        for big_prime in [p1024, m521] {
            assert!(!has_small_factor(&big_prime));
        }
        for &p in &SMALL_PRIMES {
            assert!(
                has_small_factor(&m521.wrapping_mul(&u1024(p.into()))),
                "{p}"
            );
        }
        for (factors, found) in [
            (&[17863][..], true),
            (&[17881], true),
            (&[65521, 65521], true),
            (&[65537], false),
            (&[65537, 65539, 4_294_967_291], false),
            (&[4_294_967_291, 17863], true),
        ] {
            let c = factors.iter().fold(m521, |c, &f| c.wrapping_mul(&u1024(f)));
            assert_eq!(has_small_factor(&c), found, "{factors:?}");
            assert_eq!(has_small_factor_reference(&c), found, "{factors:?}");
        }
        // Random 1024-bit multiples of each run's first and last primes.
        for (_, primes) in prime_runs() {
            for &p in [primes.first(), primes.last()].into_iter().flatten() {
                let q = random_odd().unwrap().shr_vartime(17);
                let c = q.wrapping_mul(&u1024(p.into()));
                assert!(has_small_factor(&c), "{p}·{q}");
                assert!(has_small_factor_reference(&c), "{p}·{q}");
                assert!(!has_small_factor(&u1024(p.into())), "{p} itself");
            }
        }
        assert!(!has_small_factor(&U1024::ONE));
        assert!(!has_small_factor(&u1024(1 << 40)), "2 is not in the table");
    }

    fn big(v: &BoxedUint) -> BigUint {
        BigUint::from_bytes_be(&v.to_be_bytes())
    }

    fn gcd(mut a: BigUint, mut b: BigUint) -> BigUint {
        while b != BigUint::from(0u8) {
            let r = &a % &b;
            a = b;
            b = r;
        }
        a
    }

    /// Every condition of A.1.3 and of d, checked on real keys with tools
    /// independent of the generator.
    #[test]
    fn keys_meet_fips_186_5_and_validate_with_rsa_and_openssl() {
        let a = rsa_2048().unwrap();
        let b = rsa_2048().unwrap();
        for key in [&a, &b] {
            assert_eq!(key.n().bit_width(), 2048);
            assert_eq!(key.e(), &BoxedUint::from(PUBLIC_EXPONENT));
            key.validate().unwrap();
            let [p, q] = key.primes() else {
                panic!("{} primes", key.primes().len())
            };
            let (p, q) = (
                U1024::from_be_slice(&p.to_be_bytes()),
                U1024::from_be_slice(&q.to_be_bytes()),
            );
            for prime in [&p, &q] {
                assert!(at_least_sqrt2_half(prime));
                assert!(coprime_to_e(prime));
                assert_eq!(prime.bit_width(), 1024);
                // rsa 0.9's primality test, independent of crypto-primes.
                let prime = BigUint::from_bytes_be(&prime.to_be_bytes());
                assert!(num_bigint_dig::prime::probably_prime(&prime, 20));
            }
            assert!(far_apart(&p, &q));

            // d = e^-1 mod λ(n), λ(n) = lcm(p − 1, q − 1), and d > 2^1024.
            let one = BigUint::from(1u8);
            let (p1, q1) = (big(&key.primes()[0]) - &one, big(&key.primes()[1]) - &one);
            let lambda = &p1 * &q1 / gcd(p1.clone(), q1.clone());
            let d = big(key.d());
            assert!(d < lambda, "d is reduced modulo λ(n), not φ(n)");
            assert_eq!(d.clone() * BigUint::from(PUBLIC_EXPONENT) % &lambda, one);
            assert!(d.bits() > 1024);

            openssl_checks(key);

            let message = b"client certificate";
            let pss = pss::SigningKey::<rsa::sha2::Sha256>::new(key.clone())
                .sign_with_rng(&mut rng(), message);
            pss::VerifyingKey::<rsa::sha2::Sha256>::new(key.to_public_key())
                .verify(message, &pss)
                .unwrap();
            let pkcs1 = pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(key.clone())
                .sign_with_rng(&mut rng(), message);
            pkcs1v15::VerifyingKey::<rsa::sha2::Sha256>::new(key.to_public_key())
                .verify(message, &pkcs1)
                .unwrap();
        }
        assert_ne!(a.n(), b.n());
        assert!(!a.primes().iter().any(|p| b.primes().contains(p)));
    }

    /// OpenSSL's RSA_check_key: p and q prime, n = p·q, d·e ≡ 1 modulo
    /// p − 1 and q − 1, and the CRT values.
    fn openssl_checks(key: &PrivateKey) {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "gcp-db-connector-keygen-{}-{seq}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key.pem");
        std::fs::write(&path, key.to_pkcs1_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["rsa", "-check", "-noout", "-in"])
            .arg(&path)
            .output();
        std::fs::remove_dir_all(&dir).unwrap();
        let out = out.expect("the openssl command (Debian: apt-get install openssl)");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.contains("RSA key ok"),
            "openssl: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
