//! Injected API faults, for tests: "answer the next N calls of this method with this
//! status", in the body Google sends for that status, "answer this method only after
//! this delay", and "send the next N answers' headers at once, then stall the body (or
//! trickle it a byte at a time)". Any method of [`ApiMethod`]: the Admin APIs', STS,
//! generateAccessToken; slow bodies also for the OAuth2 token endpoint ([`TOKEN_ENDPOINT`]).

use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;

use crate::calls::ApiMethod;
use crate::errors::GoogleError;

/// The name slow-body faults give the OAuth2 token endpoint (`POST /token`), next to the
/// names of [`ApiMethod`].
pub const TOKEN_ENDPOINT: &str = "token";

/// How a slowed answer's body goes out. Its status and headers (`Content-Length` the real
/// body's) are sent at once either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowBody {
    /// No byte of the body, ever: the client must give up.
    Stall,
    /// The body one byte at a time, each after this delay.
    Trickle(Duration),
}

/// One queued slow-body fault.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slow {
    /// An [`ApiMethod`] name or [`TOKEN_ENDPOINT`]; `None`: any.
    target: Option<&'static str>,
    body: SlowBody,
    remaining: u32,
}

/// `name` if it is an [`ApiMethod`]'s or [`TOKEN_ENDPOINT`].
pub fn slow_target(name: &str) -> Option<&'static str> {
    if name == TOKEN_ENDPOINT {
        return Some(TOKEN_ENDPOINT);
    }
    ApiMethod::parse(name).map(ApiMethod::name)
}

/// `resp` with its body sent as `slow` says (unchanged for `None`): the status and headers
/// first, then nothing or a byte per delay.
pub async fn slow_down(slow: Option<SlowBody>, resp: Response) -> Response {
    let Some(slow) = slow else {
        return resp;
    };
    let (mut parts, body) = resp.into_parts();
    // The emulator's own answers: small, already in memory (4 MiB when oversized).
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    // Sent with the headers, as for a whole answer: the client knows what it is owed.
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    let body = match slow {
        SlowBody::Stall => {
            Body::from_stream(futures_util::stream::pending::<Result<Bytes, Infallible>>())
        }
        SlowBody::Trickle(delay) => Body::from_stream(futures_util::stream::unfold(
            (bytes, 0usize),
            move |(bytes, at)| async move {
                if at >= bytes.len() {
                    return None;
                }
                tokio::time::sleep(delay).await;
                let byte = bytes.slice(at..at + 1);
                Some((Ok::<_, Infallible>(byte), (bytes, at + 1)))
            },
        )),
    };
    Response::from_parts(parts, body)
}

/// One queued fault.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fault {
    /// `None`: any method.
    method: Option<ApiMethod>,
    status: u16,
    remaining: u32,
}

/// The queue of faults, consumed in order, and the configured latencies.
#[derive(Debug, Default)]
pub struct Faults {
    queue: Mutex<Vec<Fault>>,
    /// Delay per method (`None`: any), until cleared.
    latency: Mutex<Vec<(Option<ApiMethod>, Duration)>>,
    /// Slow-body faults, consumed in order.
    slow: Mutex<Vec<Slow>>,
}

impl Faults {
    /// Every later call of `method` (`None`: any) is answered after `delay`;
    /// a zero delay removes the setting.
    pub fn set_latency(&self, method: Option<ApiMethod>, delay: Duration) {
        let mut l = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        l.retain(|(m, _)| *m != method);
        if !delay.is_zero() {
            l.push((method, delay));
        }
    }

    /// How long to hold an answer to `method`.
    pub fn latency(&self, method: ApiMethod) -> Duration {
        let l = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        l.iter()
            .filter(|(m, _)| m.is_none_or(|m| m == method))
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default()
    }

    /// Queues `count` failures with `status` for `method` (`None`: any).
    /// Only statuses Google's APIs really answer with are accepted.
    pub fn push(&self, method: Option<ApiMethod>, status: u16, count: u32) -> Result<(), String> {
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

    /// The next `count` answers of `target` (an [`ApiMethod`] name or [`TOKEN_ENDPOINT`],
    /// see [`slow_target`]; `None`: any) send their body as `body` says.
    pub fn push_slow(&self, target: Option<&'static str>, body: SlowBody, count: u32) {
        if count > 0 {
            self.slow
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Slow {
                    target,
                    body,
                    remaining: count,
                });
        }
    }

    /// How this answer of `target` must send its body, if a slow-body fault is queued.
    pub fn take_slow(&self, target: &str) -> Option<SlowBody> {
        let mut slow = self.slow.lock().unwrap_or_else(|e| e.into_inner());
        let i = slow
            .iter()
            .position(|s| s.target.is_none_or(|t| t == target))?;
        slow[i].remaining -= 1;
        let body = slow[i].body;
        if slow[i].remaining == 0 {
            slow.remove(i);
        }
        Some(body)
    }

    /// Drops every queued fault, latency and slow body.
    pub fn clear(&self) {
        self.lock().clear();
        self.slow.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The error the next call of `method` must get, if a fault is queued.
    pub fn take(&self, method: ApiMethod) -> Option<GoogleError> {
        let mut faults = self.lock();
        let i = faults
            .iter()
            .position(|f| f.remaining > 0 && f.method.is_none_or(|m| m == method))?;
        faults[i].remaining -= 1;
        let status = faults[i].status;
        if faults[i].remaining == 0 {
            faults.remove(i);
        }
        let error = error_for(status, method.service())?;
        Some(if method.modern_errors() {
            error.modern()
        } else {
            error
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Fault>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Google's bodies for the failure statuses of an API (`service`, e.g.
/// `sqladmin.googleapis.com`), in the Cloud SQL Admin API's shape.
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
        f.push(Some(ApiMethod::ConnectSettings), 503, 2).unwrap();
        f.push(None, 429, 1).unwrap();
        assert!(f.push(None, 404, 1).is_err());

        assert_eq!(f.take(ApiMethod::GenerateEphemeralCert).unwrap().code, 429);
        assert_eq!(f.take(ApiMethod::GenerateEphemeralCert), None);
        let e = f.take(ApiMethod::ConnectSettings).unwrap();
        assert_eq!((e.code, e.status), (503, "UNAVAILABLE"));
        assert_eq!(f.take(ApiMethod::ConnectSettings).unwrap().code, 503);
        assert_eq!(f.take(ApiMethod::ConnectSettings), None);

        f.push(Some(ApiMethod::GenerateClientCertificate), 429, 1)
            .unwrap();
        assert_eq!(f.take(ApiMethod::GenerateEphemeralCert), None);
        let e = f.take(ApiMethod::GenerateClientCertificate).unwrap();
        assert!(
            e.message.contains("'alloydb.googleapis.com'"),
            "{}",
            e.message
        );

        // STS and IAM Credentials answer in Google's newer shape (no `errors` list).
        f.push(Some(ApiMethod::Sts), 503, 1).unwrap();
        let e = f.take(ApiMethod::Sts).unwrap();
        assert!(e.body()["error"].get("errors").is_none(), "{}", e.body());
        assert_eq!(e.body()["error"]["status"], "UNAVAILABLE");
        f.push(Some(ApiMethod::GenerateAccessToken), 429, 1)
            .unwrap();
        let e = f.take(ApiMethod::GenerateAccessToken).unwrap();
        assert!(e.message.contains("'iamcredentials.googleapis.com'"));
        assert!(e.body()["error"].get("errors").is_none());
        let e = f.take(ApiMethod::ConnectSettings);
        assert_eq!(e, None);
        f.push(Some(ApiMethod::ConnectSettings), 500, 1).unwrap();
        let e = f.take(ApiMethod::ConnectSettings).unwrap();
        assert!(
            e.body()["error"]["errors"].is_array(),
            "Cloud SQL keeps its shape"
        );

        f.push(None, 500, 5).unwrap();
        f.clear();
        assert_eq!(f.take(ApiMethod::ConnectSettings), None);
    }

    #[test]
    fn latency_applies_per_method_until_cleared() {
        let f = Faults::default();
        assert_eq!(f.latency(ApiMethod::ConnectSettings), Duration::ZERO);
        f.set_latency(Some(ApiMethod::ConnectSettings), Duration::from_millis(300));
        f.set_latency(None, Duration::from_millis(100));
        assert_eq!(
            f.latency(ApiMethod::ConnectSettings),
            Duration::from_millis(300)
        );
        assert_eq!(
            f.latency(ApiMethod::GenerateEphemeralCert),
            Duration::from_millis(100)
        );
        f.set_latency(None, Duration::ZERO);
        assert_eq!(f.latency(ApiMethod::GenerateEphemeralCert), Duration::ZERO);
        f.clear();
        assert_eq!(f.latency(ApiMethod::ConnectSettings), Duration::ZERO);
    }

    #[test]
    fn slow_bodies_are_consumed_per_target_in_order() {
        let f = Faults::default();
        assert_eq!(slow_target("token"), Some(TOKEN_ENDPOINT));
        assert_eq!(slow_target("connectionInfo"), Some("connectionInfo"));
        assert_eq!(slow_target("nope"), None);
        let trickle = SlowBody::Trickle(Duration::from_millis(5));
        f.push_slow(Some("connectionInfo"), SlowBody::Stall, 1);
        f.push_slow(Some(TOKEN_ENDPOINT), trickle, 2);
        f.push_slow(None, SlowBody::Stall, 0);
        assert_eq!(f.take_slow("connectSettings"), None);
        assert_eq!(f.take_slow("token"), Some(trickle));
        assert_eq!(f.take_slow("connectionInfo"), Some(SlowBody::Stall));
        assert_eq!(f.take_slow("connectionInfo"), None);
        assert_eq!(f.take_slow("token"), Some(trickle));
        assert_eq!(f.take_slow("token"), None);
        f.push_slow(None, SlowBody::Stall, 3);
        assert_eq!(f.take_slow("sts"), Some(SlowBody::Stall));
        f.clear();
        assert_eq!(f.take_slow("sts"), None);
    }
}
