//! Injected Admin API faults, for tests: "answer the next N calls of this
//! method with this status", in the body Google sends for that status, and
//! "answer this method only after this delay".

use std::sync::Mutex;
use std::time::Duration;

use crate::calls::AdminMethod;
use crate::errors::GoogleError;

/// One queued fault.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fault {
    /// `None`: any Admin API method.
    method: Option<AdminMethod>,
    status: u16,
    remaining: u32,
}

/// The queue of faults, consumed in order, and the configured latencies.
#[derive(Debug, Default)]
pub struct Faults {
    queue: Mutex<Vec<Fault>>,
    /// Delay per method (`None`: any), until cleared.
    latency: Mutex<Vec<(Option<AdminMethod>, Duration)>>,
}

impl Faults {
    /// Every later call of `method` (`None`: any) is answered after `delay`;
    /// a zero delay removes the setting.
    pub fn set_latency(&self, method: Option<AdminMethod>, delay: Duration) {
        let mut l = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        l.retain(|(m, _)| *m != method);
        if !delay.is_zero() {
            l.push((method, delay));
        }
    }

    /// How long to hold an answer to `method`.
    pub fn latency(&self, method: AdminMethod) -> Duration {
        let l = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        l.iter()
            .filter(|(m, _)| m.is_none_or(|m| m == method))
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default()
    }

    /// Queues `count` failures with `status` for `method` (`None`: any).
    /// Only statuses Google's Admin API really answers with are accepted.
    pub fn push(&self, method: Option<AdminMethod>, status: u16, count: u32) -> Result<(), String> {
        if error_for(status, "").is_none() {
            return Err(format!(
                "status {status} is not one of 429, 500, 502, 503, 504"
            ));
        }
        self.lock().push(Fault {
            method,
            status,
            remaining: count,
        });
        Ok(())
    }

    /// Drops every queued fault and latency.
    pub fn clear(&self) {
        self.lock().clear();
        self.latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The error the next call of `method` must get, if a fault is queued.
    pub fn take(&self, method: AdminMethod) -> Option<GoogleError> {
        let mut faults = self.lock();
        let i = faults
            .iter()
            .position(|f| f.remaining > 0 && f.method.is_none_or(|m| m == method))?;
        faults[i].remaining -= 1;
        let status = faults[i].status;
        if faults[i].remaining == 0 {
            faults.remove(i);
        }
        error_for(status, method.service())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Fault>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Google's bodies for the failure statuses of an Admin API (`service`, e.g.
/// `sqladmin.googleapis.com`).
fn error_for(status: u16, service: &str) -> Option<GoogleError> {
    Some(match status {
        429 => GoogleError::new(
            429,
            format!(
                "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per \
                 user' of service '{service}' for consumer 'project_number:000000000000'."
            ),
            "rateLimitExceeded",
            "RESOURCE_EXHAUSTED",
        ),
        500 => GoogleError::new(
            500,
            "Internal error encountered.",
            "backendError",
            "INTERNAL",
        ),
        502 => GoogleError::new(502, "Bad Gateway", "backendError", "UNAVAILABLE"),
        503 => GoogleError::new(
            503,
            "The service is currently unavailable.",
            "backendError",
            "UNAVAILABLE",
        ),
        504 => GoogleError::new(
            504,
            "The request timed out. Please try again.",
            "backendError",
            "DEADLINE_EXCEEDED",
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_consumed_per_method_in_order() {
        let f = Faults::default();
        f.push(Some(AdminMethod::ConnectSettings), 503, 2).unwrap();
        f.push(None, 429, 1).unwrap();
        assert!(f.push(None, 404, 1).is_err());

        assert_eq!(
            f.take(AdminMethod::GenerateEphemeralCert).unwrap().code,
            429
        );
        assert_eq!(f.take(AdminMethod::GenerateEphemeralCert), None);
        let e = f.take(AdminMethod::ConnectSettings).unwrap();
        assert_eq!((e.code, e.status), (503, "UNAVAILABLE"));
        assert_eq!(f.take(AdminMethod::ConnectSettings).unwrap().code, 503);
        assert_eq!(f.take(AdminMethod::ConnectSettings), None);

        f.push(Some(AdminMethod::GenerateClientCertificate), 429, 1)
            .unwrap();
        assert_eq!(f.take(AdminMethod::GenerateEphemeralCert), None);
        let e = f.take(AdminMethod::GenerateClientCertificate).unwrap();
        assert!(
            e.message.contains("'alloydb.googleapis.com'"),
            "{}",
            e.message
        );

        f.push(None, 500, 5).unwrap();
        f.clear();
        assert_eq!(f.take(AdminMethod::ConnectSettings), None);
    }

    #[test]
    fn latency_applies_per_method_until_cleared() {
        let f = Faults::default();
        assert_eq!(f.latency(AdminMethod::ConnectSettings), Duration::ZERO);
        f.set_latency(
            Some(AdminMethod::ConnectSettings),
            Duration::from_millis(300),
        );
        f.set_latency(None, Duration::from_millis(100));
        assert_eq!(
            f.latency(AdminMethod::ConnectSettings),
            Duration::from_millis(300)
        );
        assert_eq!(
            f.latency(AdminMethod::GenerateEphemeralCert),
            Duration::from_millis(100)
        );
        f.set_latency(None, Duration::ZERO);
        assert_eq!(
            f.latency(AdminMethod::GenerateEphemeralCert),
            Duration::ZERO
        );
        f.clear();
        assert_eq!(f.latency(AdminMethod::ConnectSettings), Duration::ZERO);
    }
}
