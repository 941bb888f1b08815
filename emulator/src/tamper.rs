//! Tampered API answers (the Admin APIs, STS, generateAccessToken), for tests: "answer the next N calls of this
//! method with a broken success". Google never sends these; each is a way a
//! broken proxy, a bug or an attacker on the path could, and a connector must
//! refuse every one with a clear error instead of trusting it.
//!
//! Modes: `malformed` JSON (a syntax error), `truncated` JSON (cut in half,
//! with a matching Content-Length), `oversized` (the answer followed by
//! [`OVERSIZED_BYTES`] of whitespace: still valid JSON, only too big),
//! `drop-field` (a dotted path such as `serverCaCert.cert` left out),
//! `ca-not-pem` (the CA certificate replaced by text), `cert-other-key` (the
//! client certificate issued for another RSA key) and `cert-expired` (the
//! client certificate expired an hour ago).

use std::sync::Mutex;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use rcgen::SubjectPublicKeyInfo;
use rsa::RsaPublicKey;
use serde_json::Value;
use time::{Duration, OffsetDateTime};

use crate::calls::ApiMethod;
use crate::certs::{generate_rsa_keys, rsa_spki};

/// How much whitespace `oversized` appends: well past any client's bound on
/// an Admin API answer (a few KiB in real life).
pub const OVERSIZED_BYTES: usize = 4 << 20;

/// What `ca-not-pem` puts where the CA certificate belongs.
pub const NOT_PEM: &str = "this is not a PEM certificate";

/// One way to break an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tamper {
    /// JSON with a syntax error.
    Malformed,
    /// The first half of the JSON.
    Truncated,
    /// Valid JSON followed by [`OVERSIZED_BYTES`] of whitespace.
    Oversized,
    /// The field at this dotted path removed.
    DropField(String),
    /// The CA certificate (`serverCaCert.cert`, `caCert`) replaced by [`NOT_PEM`].
    CaNotPem,
    /// The client certificate issued for this key instead of the caller's.
    CertOtherKey(RsaPublicKey),
    /// The client certificate already expired.
    CertExpired,
}

/// How the client certificate of a tampered answer is issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issue {
    /// As asked.
    Normal,
    /// For another key.
    OtherKey(RsaPublicKey),
    /// Valid from two hours ago to one hour ago.
    Expired,
}

impl Issue {
    /// The key and the validity (issue time, NotAfter) to issue with, given
    /// those asked for.
    pub fn apply(
        self,
        key: SubjectPublicKeyInfo,
        now: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<(SubjectPublicKeyInfo, OffsetDateTime, OffsetDateTime), String> {
        Ok(match self {
            Self::Normal => (key, now, not_after),
            Self::OtherKey(other) => (rsa_spki(&other)?, now, not_after),
            Self::Expired => (key, now - Duration::hours(2), now - Duration::hours(1)),
        })
    }
}

impl Tamper {
    /// The mode named `mode` (with `field` for `drop-field`), if it applies to
    /// `method`.
    pub fn parse(mode: &str, field: Option<&str>, method: ApiMethod) -> Result<Self, String> {
        let issues_cert = matches!(
            method,
            ApiMethod::GenerateEphemeralCert | ApiMethod::GenerateClientCertificate
        );
        let tamper = match mode {
            "malformed" => Self::Malformed,
            "truncated" => Self::Truncated,
            "oversized" => Self::Oversized,
            "drop-field" => match field.filter(|f| !f.is_empty()) {
                Some(f) => Self::DropField(f.to_string()),
                None => return Err("drop-field needs \"field\", e.g. \"serverCaCert.cert\"".into()),
            },
            "ca-not-pem" if ca_path(method).is_some() => Self::CaNotPem,
            "ca-not-pem" => {
                return Err(format!(
                    "{} has no CA certificate; ca-not-pem applies to connectSettings and \
                     generateClientCertificate",
                    method.name()
                ))
            }
            "cert-other-key" | "cert-expired" if !issues_cert => {
                return Err(format!(
                    "{} issues no certificate; {mode} applies to generateEphemeralCert and \
                     generateClientCertificate",
                    method.name()
                ))
            }
            "cert-other-key" => {
                let key = generate_rsa_keys(1)?
                    .pop()
                    .ok_or("RSA key generation gave no key")?;
                Self::CertOtherKey(key.to_public_key())
            }
            "cert-expired" => Self::CertExpired,
            _ => {
                return Err(format!(
                    "unknown mode {mode:?}: expected malformed, truncated, oversized, drop-field, \
                     ca-not-pem, cert-other-key or cert-expired"
                ))
            }
        };
        Ok(tamper)
    }

    /// How to issue the certificate of the tampered answer.
    pub fn issue(&self) -> Issue {
        match self {
            Self::CertOtherKey(k) => Issue::OtherKey(k.clone()),
            Self::CertExpired => Issue::Expired,
            _ => Issue::Normal,
        }
    }

    /// The response to send for `method` instead of `answer`: 200 and JSON's
    /// content type, as a real answer.
    pub fn response(&self, method: ApiMethod, answer: Value) -> Response {
        (
            [(header::CONTENT_TYPE, "application/json")],
            self.body(method, answer),
        )
            .into_response()
    }

    /// The body to send for `method` instead of `answer`.
    pub fn body(&self, method: ApiMethod, mut answer: Value) -> Vec<u8> {
        match self {
            Self::DropField(path) => drop_path(&mut answer, path),
            Self::CaNotPem => {
                if let Some(slot) = ca_path(method).and_then(|p| answer.pointer_mut(p)) {
                    *slot = Value::String(NOT_PEM.into());
                }
            }
            _ => {}
        }
        let text = answer.to_string();
        match self {
            // `{"a":1}` becomes `{"a" 1}`: the colon a parser needs is gone.
            Self::Malformed => text.replacen(':', " ", 1).into_bytes(),
            Self::Truncated => text.as_bytes()[..text.len() / 2].to_vec(),
            Self::Oversized => {
                let mut body = text.into_bytes();
                body.resize(body.len() + OVERSIZED_BYTES, b' ');
                body
            }
            _ => text.into_bytes(),
        }
    }
}

/// Where `method`'s answer carries the CA certificate (a JSON pointer).
fn ca_path(method: ApiMethod) -> Option<&'static str> {
    match method {
        ApiMethod::ConnectSettings => Some("/serverCaCert/cert"),
        ApiMethod::GenerateClientCertificate => Some("/caCert"),
        ApiMethod::GenerateEphemeralCert
        | ApiMethod::ConnectionInfo
        | ApiMethod::Sts
        | ApiMethod::GenerateAccessToken
        | ApiMethod::ResolveConnectSettings => None,
    }
}

/// Removes the field at the dotted `path` (`serverCaCert.cert`), if present.
fn drop_path(value: &mut Value, path: &str) {
    let (parent, last) = match path.rsplit_once('.') {
        Some((parent, last)) => (Some(parent), last),
        None => (None, path),
    };
    let parent = match parent {
        None => Some(value),
        Some(p) => p.split('.').try_fold(value, |v, k| v.get_mut(k)),
    };
    if let Some(Value::Object(map)) = parent {
        map.remove(last);
    }
}

/// One queued tampering.
#[derive(Debug)]
struct Entry {
    method: ApiMethod,
    tamper: Tamper,
    remaining: u32,
}

/// The queue of tamperings, consumed in order per method.
#[derive(Debug, Default)]
pub struct Tampering {
    queue: Mutex<Vec<Entry>>,
}

impl Tampering {
    /// Tampers with the next `count` answers of `method`.
    pub fn push(&self, method: ApiMethod, tamper: Tamper, count: u32) {
        if count > 0 {
            self.lock().push(Entry {
                method,
                tamper,
                remaining: count,
            });
        }
    }

    /// The tampering for this call of `method`, if one is queued.
    pub fn take(&self, method: ApiMethod) -> Option<Tamper> {
        let mut queue = self.lock();
        let i = queue.iter().position(|e| e.method == method)?;
        queue[i].remaining -= 1;
        let tamper = queue[i].tamper.clone();
        if queue[i].remaining == 0 {
            queue.remove(i);
        }
        Some(tamper)
    }

    /// Drops every queued tampering.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use ApiMethod::*;

    fn settings() -> Value {
        json!({
            "kind": "sql#connectSettings",
            "serverCaCert": {"kind": "sql#sslCert", "cert": "PEM"},
            "ipAddresses": [{"type": "PRIMARY", "ipAddress": "127.0.0.2"}],
            "region": "us-central1",
        })
    }

    fn parsed(body: &[u8]) -> Value {
        serde_json::from_slice(body).unwrap()
    }

    #[test]
    fn broken_json_does_not_parse_and_oversized_json_does() {
        let bad = Tamper::Malformed.body(ConnectSettings, settings());
        assert!(serde_json::from_slice::<Value>(&bad).is_err());
        let cut = Tamper::Truncated.body(ConnectSettings, settings());
        assert!(serde_json::from_slice::<Value>(&cut).is_err());
        assert_eq!(cut.len(), settings().to_string().len() / 2);
        let big = Tamper::Oversized.body(ConnectSettings, settings());
        assert!(big.len() > OVERSIZED_BYTES);
        assert_eq!(parsed(&big), settings(), "only the size is wrong");
    }

    #[test]
    fn fields_are_dropped_by_dotted_path() {
        let body = Tamper::DropField("serverCaCert.cert".into()).body(ConnectSettings, settings());
        let v = parsed(&body);
        assert_eq!(v["serverCaCert"], json!({"kind": "sql#sslCert"}));
        assert_eq!(v["region"], "us-central1");
        let v = parsed(&Tamper::DropField("ipAddresses".into()).body(ConnectSettings, settings()));
        assert!(v.get("ipAddresses").is_none());
        // A path that is not there changes nothing.
        let v = parsed(&Tamper::DropField("no.such".into()).body(ConnectSettings, settings()));
        assert_eq!(v, settings());
    }

    #[test]
    fn the_ca_is_replaced_where_each_api_has_it() {
        let v = parsed(&Tamper::CaNotPem.body(ConnectSettings, settings()));
        assert_eq!(v["serverCaCert"]["cert"], NOT_PEM);
        let chain = json!({"pemCertificateChain": ["a", "b"], "caCert": "PEM"});
        let v = parsed(&Tamper::CaNotPem.body(GenerateClientCertificate, chain));
        assert_eq!(v["caCert"], NOT_PEM);
        assert_eq!(v["pemCertificateChain"], json!(["a", "b"]));
    }

    #[test]
    fn modes_parse_only_where_they_apply() {
        assert_eq!(
            Tamper::parse("drop-field", Some("region"), ConnectSettings),
            Ok(Tamper::DropField("region".into()))
        );
        assert!(Tamper::parse("drop-field", None, ConnectSettings).is_err());
        assert!(Tamper::parse("ca-not-pem", None, GenerateEphemeralCert).is_err());
        assert!(Tamper::parse("ca-not-pem", None, ConnectionInfo).is_err());
        assert!(Tamper::parse("cert-expired", None, ConnectSettings).is_err());
        assert!(Tamper::parse("cert-other-key", None, ConnectionInfo).is_err());
        assert!(Tamper::parse("sideways", None, ConnectSettings).is_err());
        assert_eq!(
            Tamper::parse("cert-expired", None, GenerateClientCertificate)
                .unwrap()
                .issue(),
            Issue::Expired
        );
        let other = Tamper::parse("cert-other-key", None, GenerateEphemeralCert).unwrap();
        assert!(matches!(other.issue(), Issue::OtherKey(_)));
        assert_eq!(Tamper::Malformed.issue(), Issue::Normal);
        // Certificate modes leave the body alone.
        assert_eq!(
            parsed(&other.body(GenerateEphemeralCert, settings())),
            settings()
        );
    }

    #[test]
    fn tamperings_are_consumed_per_method_in_order() {
        let t = Tampering::default();
        t.push(ConnectSettings, Tamper::Malformed, 2);
        t.push(ConnectSettings, Tamper::Truncated, 1);
        t.push(GenerateEphemeralCert, Tamper::CertExpired, 0);
        assert_eq!(t.take(GenerateEphemeralCert), None);
        assert_eq!(t.take(ConnectSettings), Some(Tamper::Malformed));
        assert_eq!(t.take(ConnectSettings), Some(Tamper::Malformed));
        assert_eq!(t.take(ConnectSettings), Some(Tamper::Truncated));
        assert_eq!(t.take(ConnectSettings), None);
        t.push(ConnectionInfo, Tamper::Oversized, 5);
        t.clear();
        assert_eq!(t.take(ConnectionInfo), None);
    }
}
