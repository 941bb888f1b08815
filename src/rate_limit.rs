//! How often an instance's certificate may be refreshed, as Google's
//! connectors limit it: a token bucket of [`BURST`] refreshes, refilled by one
//! every [`INTERVAL`]; a refresh the Admin API refused for quota empties it,
//! since the quota is per minute and the next try would only spend more of it.
//!
//! Two buckets follow this policy. Each connector's memory cache spends one
//! for every refresh it starts (`cache::memory`). The bucket shared through a
//! host store spends one only for a refresh the Admin API refused and is
//! cleared by a success (`cache::store`), so healthy refreshes never wait on
//! it while a broken instance is limited across every instance of the app.

use std::time::{Duration, Instant};

/// Refreshes allowed at once per instance.
pub(crate) const BURST: f64 = 2.0;
/// One more refresh allowed per this interval.
pub(crate) const INTERVAL: Duration = Duration::from_secs(30);
/// The policy in words, for error messages.
pub(crate) const POLICY: &str = "burst 2, one per 30 s";

/// How a refresh ended, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It succeeded.
    Refreshed,
    /// The Admin API refused it (an error status); `quota` when for quota.
    Refused { quota: bool },
    /// It failed otherwise (token endpoint, network, a broken answer).
    Failed,
}

/// A bucket's level: how many refreshes it allows now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bucket {
    tokens: f64,
}

impl Bucket {
    /// A bucket allowing the whole burst.
    pub(crate) fn full() -> Self {
        Self { tokens: BURST }
    }

    /// A level read back from outside (a host store): clamped to the
    /// bucket's range, anything not a number counted as empty.
    pub(crate) fn from_stored(tokens: f64) -> Self {
        let tokens = if tokens.is_finite() {
            tokens.clamp(0.0, BURST)
        } else {
            0.0
        };
        Self { tokens }
    }

    /// The level, to store.
    pub(crate) fn tokens(self) -> f64 {
        self.tokens
    }

    /// The level after `elapsed` more of refilling.
    pub(crate) fn refilled(self, elapsed: Duration) -> Self {
        let refill = elapsed.as_secs_f64() / INTERVAL.as_secs_f64();
        Self {
            tokens: (Self::from_stored(self.tokens).tokens + refill).min(BURST),
        }
    }

    /// Whether a refresh is allowed.
    pub(crate) fn allows(self) -> bool {
        self.tokens >= 1.0
    }

    /// How long until a whole refresh is allowed.
    pub(crate) fn wait(self) -> Duration {
        INTERVAL.mul_f64((1.0 - self.tokens).clamp(0.0, 1.0))
    }

    /// Takes one refresh, or says how long until one is allowed.
    pub(crate) fn take(&mut self) -> Result<(), Duration> {
        if self.allows() {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.wait())
        }
    }

    /// The shared bucket after a refresh ended with `outcome`: a refusal
    /// spends one (a quota refusal all), a success clears the bucket
    /// (`None`), other failures leave it as it was (each connector's own
    /// limiter holds those back).
    pub(crate) fn after_shared(before: Option<Self>, outcome: Outcome) -> Option<Self> {
        match outcome {
            Outcome::Refreshed => None,
            Outcome::Refused { quota: true } => Some(Self { tokens: 0.0 }),
            Outcome::Refused { quota: false } => {
                let tokens = before.unwrap_or_else(Self::full).tokens - 1.0;
                Some(Self::from_stored(tokens))
            }
            Outcome::Failed => before,
        }
    }
}

/// One connector's limiter for one instance: every refresh it starts takes
/// from the bucket, refilled against the monotonic clock.
#[derive(Debug)]
pub(crate) struct Limiter {
    bucket: Bucket,
    last: Instant,
}

impl Limiter {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            bucket: Bucket::full(),
            last: now,
        }
    }

    /// Takes a refresh, or says how long until one is allowed.
    pub(crate) fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        self.bucket = self
            .bucket
            .refilled(now.saturating_duration_since(self.last));
        self.last = now;
        self.bucket.take()
    }

    /// Notes how the refresh it allowed ended: a quota refusal spends every
    /// refresh, so the next one is a whole interval after `now`.
    pub(crate) fn ended(&mut self, outcome: Outcome, now: Instant) {
        if outcome == (Outcome::Refused { quota: true }) {
            self.bucket = Bucket { tokens: 0.0 };
            self.last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_text_says_what_the_constants_do() {
        assert_eq!(
            POLICY,
            format!("burst {BURST}, one per {} s", INTERVAL.as_secs())
        );
    }

    #[test]
    fn limiter_refills_one_token_per_thirty_seconds_up_to_two() {
        let t0 = Instant::now();
        let mut l = Limiter::new(t0);
        assert!(l.try_acquire(t0).is_ok());
        assert!(l.try_acquire(t0).is_ok());
        assert_eq!(l.try_acquire(t0), Err(Duration::from_secs(30)));
        let wait = l.try_acquire(t0 + Duration::from_secs(10)).unwrap_err();
        assert!((wait.as_secs_f64() - 20.0).abs() < 1e-6);
        assert!(l.try_acquire(t0 + Duration::from_secs(30)).is_ok());
        // A long idle period refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(3600);
        assert!(l.try_acquire(later).is_ok());
        assert!(l.try_acquire(later).is_ok());
        assert!(l.try_acquire(later).is_err());
    }

    #[test]
    fn a_quota_refusal_empties_the_limiter_for_a_whole_interval() {
        let t0 = Instant::now();
        let mut l = Limiter::new(t0);
        assert!(l.try_acquire(t0).is_ok());
        l.ended(Outcome::Refused { quota: true }, t0);
        assert_eq!(l.try_acquire(t0), Err(Duration::from_secs(30)));
        let wait = l.try_acquire(t0 + Duration::from_secs(29)).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6);
        assert!(l.try_acquire(t0 + Duration::from_secs(30)).is_ok());
        assert!(l.try_acquire(t0 + Duration::from_secs(30)).is_err());

        // Other endings keep what is left of the burst.
        let mut l = Limiter::new(t0);
        assert!(l.try_acquire(t0).is_ok());
        l.ended(Outcome::Refused { quota: false }, t0);
        l.ended(Outcome::Failed, t0);
        assert!(l.try_acquire(t0).is_ok());
    }

    #[test]
    fn the_shared_bucket_counts_refusals_only() {
        let refused = Outcome::Refused { quota: false };
        let once = Bucket::after_shared(None, refused).unwrap();
        assert!((once.tokens() - 1.0).abs() < 1e-9);
        assert!(once.allows());
        let twice = Bucket::after_shared(Some(once), refused).unwrap();
        assert!(!twice.allows());
        assert_eq!(twice.wait(), INTERVAL);
        // Never below empty.
        let thrice = Bucket::after_shared(Some(twice), refused).unwrap();
        assert_eq!(thrice.tokens(), 0.0);

        let quota = Bucket::after_shared(None, Outcome::Refused { quota: true }).unwrap();
        assert_eq!(quota.tokens(), 0.0);
        assert_eq!(Bucket::after_shared(Some(quota), Outcome::Refreshed), None);
        assert_eq!(Bucket::after_shared(None, Outcome::Failed), None);
        assert_eq!(
            Bucket::after_shared(Some(once), Outcome::Failed),
            Some(once)
        );
    }

    #[test]
    fn a_stored_level_is_clamped() {
        for (stored, want) in [
            (-1e300, 0.0),
            (1e300, BURST),
            (f64::NAN, 0.0),
            (f64::INFINITY, 0.0),
            (0.5, 0.5),
        ] {
            assert_eq!(Bucket::from_stored(stored).tokens(), want, "{stored}");
        }
        // Refilling a level read from outside clamps it first.
        let b = Bucket { tokens: -50.0 }.refilled(INTERVAL);
        assert!((b.tokens() - 1.0).abs() < 1e-9);
        assert!(Bucket::from_stored(0.0).wait() <= INTERVAL);
    }
}
