//! Retries of Google API calls: 5xx only, up to five attempts, with the
//! exponential backoff of Google's connectors (`retry50x`):
//! 200 ms × 1.618^(attempt + 1 + jitter), jitter uniform in [0, 1).
//!
//! A 429 is not retried, as in Go's `retry50x` (`Code < 500`: give up): the
//! quota is per minute, so retrying within a refresh only spends more of it.
//! The rate limit holds the instance's next refresh instead (`rate_limit`).

use std::time::{Duration, Instant};

use rand_core::RngCore;

use crate::error::Error;
use crate::http::{Pending, Request, Response, Transport};

/// Attempts per call, the first included.
pub(crate) const MAX_ATTEMPTS: u32 = 5;

/// Whether an answer with `status` is tried again: server errors only.
pub(crate) fn is_retried(status: u16) -> bool {
    (500..600).contains(&status)
}

/// The pause after failed attempt `attempt` (0-based).
pub(crate) fn backoff(attempt: u32, jitter: f64) -> Duration {
    let exp = f64::from(attempt) + 1.0 + jitter.clamp(0.0, 1.0);
    Duration::from_secs_f64(0.2 * 1.618f64.powf(exp))
}

fn jitter() -> f64 {
    f64::from(rand_core::OsRng.next_u32()) / (f64::from(u32::MAX) + 1.0)
}

/// Waits for `first` (an attempt already in flight) and retries `req` on
/// `transport` while the answer is a 5xx, within `deadline`. Returns the last
/// response; the caller turns a non-success status into an error.
pub(crate) fn finish_with_retry(
    first: Box<dyn Pending>,
    req: &Request,
    transport: &dyn Transport,
    deadline: Instant,
) -> Result<Response, Error> {
    let mut resp = first.wait()?;
    for attempt in 0..MAX_ATTEMPTS - 1 {
        if !is_retried(resp.status) {
            break;
        }
        let pause = backoff(attempt, jitter());
        if Instant::now() + pause >= deadline {
            break;
        }
        std::thread::sleep(pause);
        resp = transport.send(req, deadline)?;
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_matches_googles_schedule() {
        // 200ms * 1.618^1 = 323.6ms, * 1.618^2 = 523.6ms, 1.618^3 = 847.2ms
        let ms = |a, j| backoff(a, j).as_secs_f64() * 1000.0;
        assert!((ms(0, 0.0) - 323.6).abs() < 0.5);
        assert!((ms(0, 1.0) - 523.6).abs() < 0.5);
        assert!((ms(1, 0.0) - 523.6).abs() < 0.5);
        assert!((ms(2, 0.0) - 847.2).abs() < 0.5);
        assert!(ms(3, 0.5) > ms(3, 0.0));
        // Out-of-range jitter is clamped, never negative or huge.
        assert_eq!(backoff(0, -3.0), backoff(0, 0.0));
        assert_eq!(backoff(0, 9.0), backoff(0, 1.0));
    }

    #[test]
    fn only_server_errors_are_retried() {
        for status in [500, 502, 503, 504, 599] {
            assert!(is_retried(status), "{status}");
        }
        for status in [200, 400, 401, 403, 404, 429, 600] {
            assert!(!is_retried(status), "{status}");
        }
    }

    #[test]
    fn jitter_stays_in_unit_interval() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
