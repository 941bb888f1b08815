//! What the host store holds, as JSON, each value sealed ([`seal`]): per
//! instance and IAM setting an [`Entry`] (what a refresh learned, and the
//! public key its certificate is for), beside it the record of the Admin
//! API's refusals ([`Refusals`]), and per principal the connector's key
//! ([`KeyRecord`]). All of it is read back as untrusted input: a value that
//! does not open, decode or check is ignored, and nothing is taken from it
//! that a refresh would not give (the facts of the service, port, identity
//! rule, SNI, come from the instance's service, never from the store).
//!
//! With a store secret configured, every value carries an HMAC-SHA-256 over
//! its key and body, and one without a valid one is ignored: a writer of the
//! store who lacks the secret can then make the connector refresh, nothing
//! more. Without a secret, such a writer can plant an entry naming its own
//! CA and address, and so stand between the app and its database.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::is_fresh;
use crate::certs::{self, CertInfo};
use crate::connection_info::{Addresses, InstanceFacts};
use crate::error::{ApiError, Error};
use crate::mdx::ExchangeRecord;
use crate::rate_limit::{Bucket, Outcome};
use crate::secret::Secret;

/// The format of stored values; another version is ignored.
pub(crate) const FORMAT: u32 = 3;
/// Every key the connector writes starts with this.
pub(crate) const PREFIX: &str = "gcp-db-connector/v3";
/// How far ahead of this instance's clock another's may run: a refusal
/// stamped later than that is not believed.
const CLOCK_SKEW: Duration = Duration::from_secs(30);

type HmacSha256 = Hmac<Sha256>;

/// A short, stable name for `parts`: 16 hex digits of their SHA-256.
pub(crate) fn fingerprint(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The time `ms` after the Unix epoch, if the clock can hold it.
fn from_unix_ms(ms: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

/// A stored value: the body, and its MAC when a secret is configured.
#[derive(Serialize, Deserialize)]
struct Envelope {
    format: u32,
    mac: Option<String>,
    body: String,
}

/// `body` as stored at `key`: sealed with an HMAC over both when there is a
/// `secret`.
pub(crate) fn seal(key: &str, body: &impl Serialize, secret: Option<&Secret>) -> Option<Vec<u8>> {
    let body = serde_json::to_string(body).ok()?;
    let mac = secret.map(|s| B64.encode(mac(s, key, &body).finalize().into_bytes()));
    serde_json::to_vec(&Envelope {
        format: FORMAT,
        mac,
        body,
    })
    .ok()
}

/// The body of the value stored at `key`, if it is of this format and, when
/// there is a `secret`, its MAC is right.
pub(crate) fn open<T: for<'de> Deserialize<'de>>(
    key: &str,
    bytes: &[u8],
    secret: Option<&Secret>,
) -> Option<T> {
    // A value no entry could be is not parsed (a host store, unlike the
    // directory store, hands over whatever it holds).
    if bytes.len() > crate::store::MAX_VALUE {
        return None;
    }
    let envelope: Envelope = serde_json::from_slice(bytes).ok()?;
    if envelope.format != FORMAT {
        return None;
    }
    if let Some(secret) = secret {
        let tag = B64.decode(envelope.mac?).ok()?;
        // Constant time, so a forger learns nothing from how long it took.
        mac(secret, key, &envelope.body).verify_slice(&tag).ok()?;
    }
    serde_json::from_str(&envelope.body).ok()
}

fn mac(secret: &Secret, key: &str, body: &str) -> HmacSha256 {
    // HMAC takes a key of any length.
    let mut m = HmacSha256::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    m.update(key.as_bytes());
    m.update(&[0]);
    m.update(body.as_bytes());
    m
}

/// What a refresh learned, and the public key its certificate is for.
#[derive(Serialize, Deserialize)]
pub(crate) struct Entry {
    expiry_unix_ms: u64,
    public_ip: Option<IpAddr>,
    private_ip: Option<IpAddr>,
    psc_name: Option<String>,
    trust_anchors: Vec<String>,
    dns_name: Option<String>,
    client_chain: Vec<String>,
    exchange: Option<StoredExchange>,
    public_key: String,
}

#[derive(Serialize, Deserialize)]
struct StoredExchange {
    login_token: Option<String>,
    auto_iam: bool,
}

impl Entry {
    pub(crate) fn encode(facts: &InstanceFacts, spki_der: &[u8]) -> Self {
        let der = |c: &CertificateDer<'_>| B64.encode(c.as_ref());
        Self {
            expiry_unix_ms: unix_ms(facts.expiry),
            public_ip: facts.addresses.public,
            private_ip: facts.addresses.private,
            psc_name: facts.addresses.psc.clone(),
            trust_anchors: facts.trust_anchors.iter().map(der).collect(),
            dns_name: facts.dns_name.clone(),
            client_chain: facts.client_chain.iter().map(der).collect(),
            exchange: facts.exchange.as_ref().map(|e| StoredExchange {
                login_token: e.login_token.as_ref().map(|t| t.expose().to_string()),
                auto_iam: e.auto_iam,
            }),
            public_key: B64.encode(spki_der),
        }
    }

    /// The facts and the public key (SubjectPublicKeyInfo DER), if the entry
    /// holds up as a fresh refresh's would at `now`: its trust anchors are
    /// certificates and have not expired, its client certificate parses and
    /// is for the public key, its addresses can be dialled, and it is fresh.
    /// Its expiry is no later than its client certificate's, whatever it
    /// says.
    pub(crate) fn decode(self, now: SystemTime) -> Option<(InstanceFacts, Vec<u8>)> {
        let public_key = B64.decode(&self.public_key).ok()?;
        let ders = |list: &[String]| -> Option<Vec<CertificateDer<'static>>> {
            list.iter()
                .map(|c| B64.decode(c).ok().map(CertificateDer::from))
                .collect()
        };
        let trust_anchors = ders(&self.trust_anchors)?;
        certs::check_trust_anchors(&trust_anchors, now).ok()?;
        let client_chain = ders(&self.client_chain)?;
        let client = CertInfo::parse(client_chain.first()?).ok()?;
        if client.public_key_der()? != public_key {
            return None;
        }
        let expiry = from_unix_ms(self.expiry_unix_ms)?.min(client.not_after());
        if !is_fresh(expiry, now) {
            return None;
        }
        let addresses = Addresses {
            public: self.public_ip,
            private: self.private_ip,
            psc: self.psc_name,
        };
        if addresses.problem().is_some() {
            return None;
        }
        let facts = InstanceFacts {
            addresses,
            trust_anchors,
            dns_name: self.dns_name,
            client_chain,
            expiry,
            exchange: self.exchange.map(|e| ExchangeRecord {
                login_token: e.login_token.map(Secret::new),
                auto_iam: e.auto_iam,
            }),
        };
        Some((facts, public_key))
    }
}

/// The connector's key, kept once per principal and reused by every refresh
/// of every instance (as Google's connectors keep one per process).
#[derive(Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    /// PKCS#8 DER.
    pub(crate) private_key: String,
}

/// The Admin API's refusals of one instance's refreshes, shared by every
/// instance of the app (`cache::store`). The last refusal is kept as the
/// Admin API gave it, whose message has the call's token blanked out.
#[derive(Serialize, Deserialize)]
pub(crate) struct Refusals {
    /// Refreshes left in the bucket at `at_unix_ms`.
    tokens: f64,
    /// When the last refresh was refused, in ms since the Unix epoch.
    pub(crate) at_unix_ms: u64,
    /// Whether it was refused for quota.
    quota: bool,
    call: String,
    status: u16,
    code: String,
    message: String,
}

impl Refusals {
    /// The record after `e` ended a refresh at `now`, if the shared bucket
    /// counts `e` (the Admin API's refusals; see `rate_limit`).
    pub(crate) fn after(before: Option<&Self>, e: &Error, now: SystemTime) -> Option<Self> {
        let api = e.api_error()?;
        let quota = match e.refresh_outcome() {
            Outcome::Refused { quota } => quota,
            _ => return None,
        };
        let before = before.and_then(|b| b.bucket_at(now));
        let bucket = Bucket::after_shared(before, Outcome::Refused { quota })?;
        Some(Self {
            tokens: bucket.tokens(),
            at_unix_ms: unix_ms(now),
            quota,
            call: api.call.clone(),
            status: api.status,
            code: api.code.clone(),
            message: api.message.clone(),
        })
    }

    /// The bucket at `now`; `None` for a record stamped further ahead of
    /// `now` than clocks drift (a corrupt or hostile one: believed, it would
    /// hold refreshes back until its stamp). One stamped a little ahead has
    /// earned nothing yet.
    pub(crate) fn bucket_at(&self, now: SystemTime) -> Option<Bucket> {
        let at = from_unix_ms(self.at_unix_ms)?;
        if at > now + CLOCK_SKEW {
            return None;
        }
        let elapsed = now.duration_since(at).unwrap_or_default();
        Some(Bucket::from_stored(self.tokens).refilled(elapsed))
    }

    /// How long the record holds refreshes back from `now`, if it does: until
    /// its bucket has a refresh again, counted from its stamp (which another
    /// host's clock may have put a little after `now`).
    pub(crate) fn holds(&self, now: SystemTime) -> Option<Duration> {
        let bucket = self.bucket_at(now)?;
        if bucket.allows() {
            return None;
        }
        let ahead = from_unix_ms(self.at_unix_ms)?
            .duration_since(now)
            .unwrap_or_default();
        Some(ahead + bucket.wait())
    }

    /// The last refusal, as the error its refresh returned.
    pub(crate) fn error(&self) -> Error {
        Error::api(ApiError {
            call: self.call.clone(),
            status: self.status,
            code: self.code.clone(),
            message: self.message.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::rate_limit::INTERVAL;
    use crate::testing::certs::Ca;
    use crate::testing::{self, client_key_copy, refused};

    const KEY: &str = "gcp-db-connector/v3/0123/p:r:i/native";

    fn secret() -> Secret {
        Secret::new("the store secret".into())
    }

    fn stored(facts: &InstanceFacts) -> Vec<u8> {
        seal(
            KEY,
            &Entry::encode(facts, &client_key_copy().spki_der),
            Some(&secret()),
        )
        .unwrap()
    }

    fn decode(bytes: &[u8]) -> Option<(InstanceFacts, Vec<u8>)> {
        open::<Entry>(KEY, bytes, Some(&secret()))?.decode(SystemTime::now())
    }

    #[test]
    fn an_entry_reads_back_as_written() {
        let facts = testing::alloydb_info(60).facts();
        let (back, spki) = decode(&stored(&facts)).unwrap();
        assert_eq!(spki, client_key_copy().spki_der);
        assert_eq!(back.addresses, facts.addresses);
        assert_eq!(back.trust_anchors, facts.trust_anchors);
        assert_eq!(back.client_chain, facts.client_chain);
        assert_eq!(back.exchange, facts.exchange);
        assert_eq!(back.dns_name, facts.dns_name);
    }

    #[test]
    fn a_value_sealed_otherwise_is_not_opened() {
        let facts = testing::alloydb_info(60).facts();
        let body = Entry::encode(&facts, &client_key_copy().spki_der);
        let good = seal(KEY, &body, Some(&secret())).unwrap();
        assert!(open::<Entry>(KEY, &good, Some(&secret())).is_some());
        // Another secret, another key, no MAC, a changed body.
        let other = Secret::new("another secret".into());
        assert!(open::<Entry>(KEY, &good, Some(&other)).is_none());
        assert!(open::<Entry>(
            "gcp-db-connector/v3/0123/p:r:j/native",
            &good,
            Some(&secret())
        )
        .is_none());
        let unsealed = seal(KEY, &body, None).unwrap();
        assert!(open::<Entry>(KEY, &unsealed, Some(&secret())).is_none());
        let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
        v["body"] = v["body"]
            .as_str()
            .unwrap()
            .replace("10.0.0.2", "10.6.6.6")
            .into();
        assert!(open::<Entry>(KEY, v.to_string().as_bytes(), Some(&secret())).is_none());
        // Without a secret, anything of the format opens: the README says so.
        assert!(open::<Entry>(KEY, &good, None).is_some());
        assert!(open::<Entry>(KEY, &unsealed, None).is_some());
        // Another format.
        v["format"] = 2.into();
        assert!(open::<Entry>(KEY, v.to_string().as_bytes(), None).is_none());
    }

    #[test]
    fn a_value_over_the_bound_is_not_parsed() {
        let facts = testing::alloydb_info(60).facts();
        let body = Entry::encode(&facts, &client_key_copy().spki_der);
        let mut padded = seal(KEY, &body, None).unwrap();
        // JSON allows trailing blanks: at the bound the entry still opens.
        padded.resize(crate::store::MAX_VALUE, b' ');
        assert!(open::<Entry>(KEY, &padded, None).is_some());
        padded.push(b' ');
        assert!(open::<Entry>(KEY, &padded, None).is_none());
    }

    /// Edits the stored entry's body and seals it again (as a writer with
    /// the secret could, or anyone without one).
    fn edited(facts: &InstanceFacts, f: &dyn Fn(&mut serde_json::Value)) -> Vec<u8> {
        let mut body =
            serde_json::to_value(Entry::encode(facts, &client_key_copy().spki_der)).unwrap();
        f(&mut body);
        seal(KEY, &body, Some(&secret())).unwrap()
    }

    #[test]
    fn an_entry_is_checked_like_a_fresh_refresh() {
        let facts = testing::alloydb_info(60).facts();
        let expired_ca = Ca::expired("an expired CA");
        let other_key = crate::key::ClientKey::generate().unwrap();
        for (what, bad) in [
            (
                "a trust anchor that is no certificate",
                edited(&facts, &|v| {
                    v["trust_anchors"] = serde_json::json!(["AAAA"])
                }),
            ),
            (
                "no trust anchor",
                edited(&facts, &|v| v["trust_anchors"] = serde_json::json!([])),
            ),
            (
                "an expired trust anchor",
                edited(&facts, &|v| {
                    v["trust_anchors"] = serde_json::json!([B64.encode(expired_ca.der())])
                }),
            ),
            (
                "a client chain that is no certificate",
                edited(&facts, &|v| v["client_chain"] = serde_json::json!(["%%%"])),
            ),
            (
                "no client chain",
                edited(&facts, &|v| v["client_chain"] = serde_json::json!([])),
            ),
            (
                "a certificate for another key",
                edited(&facts, &|v| {
                    v["public_key"] = B64.encode(&other_key.spki_der).into()
                }),
            ),
            (
                "an unspecified address",
                edited(&facts, &|v| v["private_ip"] = "0.0.0.0".into()),
            ),
            (
                "a multicast address",
                edited(&facts, &|v| v["private_ip"] = "224.0.0.1".into()),
            ),
            (
                "a PSC name that is no DNS name",
                edited(&facts, &|v| v["psc_name"] = "not a name".into()),
            ),
            (
                "no address",
                edited(&facts, &|v| {
                    v["private_ip"] = serde_json::Value::Null;
                    v["psc_name"] = serde_json::Value::Null;
                }),
            ),
            ("a stale entry", stored(&testing::alloydb_info(3).facts())),
        ] {
            assert!(decode(&bad).is_none(), "{what} was taken");
        }
        assert!(decode(&stored(&facts)).is_some());
        // An expiry past the certificate's is the certificate's.
        let forever = edited(&facts, &|v| v["expiry_unix_ms"] = u64::MAX.into());
        let (back, _) = decode(&forever).unwrap();
        let cert = CertInfo::parse(&back.client_chain[0]).unwrap();
        assert_eq!(back.expiry, cert.not_after());
    }

    #[test]
    fn a_refusal_record_counts_refusals() {
        let now = SystemTime::now();
        let denied = refused(403, "PERMISSION_DENIED");
        let once = Refusals::after(None, &denied, now).unwrap();
        assert!(once.bucket_at(now).unwrap().allows());
        let twice = Refusals::after(Some(&once), &denied, now).unwrap();
        assert!(!twice.bucket_at(now).unwrap().allows());
        assert_eq!(twice.error().kind(), ErrorKind::AdminApi);
        assert_eq!(twice.error().api_error(), denied.api_error());

        let quota = Refusals::after(None, &refused(429, "RESOURCE_EXHAUSTED"), now).unwrap();
        assert!(!quota.bucket_at(now).unwrap().allows());
        assert_eq!(quota.error().kind(), ErrorKind::QuotaExceeded);

        // Other failures are not the shared bucket's.
        assert!(Refusals::after(None, &Error::credentials("refused"), now).is_none());
    }

    fn record(tokens: f64, at: SystemTime) -> Refusals {
        Refusals {
            tokens,
            at_unix_ms: unix_ms(at),
            quota: false,
            call: "c".into(),
            status: 403,
            code: String::new(),
            message: "m".into(),
        }
    }

    #[test]
    fn a_refusal_record_from_the_future_holds_back_one_interval_at_most() {
        let now = SystemTime::now();
        // An hour ahead: not believed at all.
        assert!(record(0.0, now + Duration::from_secs(3600))
            .bucket_at(now)
            .is_none());
        // A little ahead (another host's clock): one interval after its
        // stamp, and the hold says so.
        let ahead = Duration::from_secs(20);
        let skewed = record(0.0, now + ahead);
        let hold = skewed.holds(now).unwrap();
        // Stamps are whole milliseconds.
        let want = ahead + INTERVAL;
        assert!(
            hold <= want && hold > want - Duration::from_millis(1),
            "{hold:?}"
        );
        assert!(skewed.holds(now + ahead + INTERVAL).is_none());
        assert!(record(0.0, now + Duration::from_secs(3600))
            .holds(now)
            .is_none());
        // An empty record of the past refills as time passes.
        let past = record(0.0, now - Duration::from_secs(10));
        let wait = past.bucket_at(now).unwrap().wait();
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(past
            .bucket_at(now + Duration::from_secs(20))
            .unwrap()
            .allows());
        // A count out of range is clamped.
        assert!(record(-1e300, now).bucket_at(now).unwrap().wait() <= INTERVAL);
        assert!(record(1e300, now).bucket_at(now).unwrap().allows());
    }

    #[test]
    fn fingerprints_tell_parts_apart() {
        assert_eq!(fingerprint(&["a", "b"]).len(), 16);
        assert_eq!(fingerprint(&["a", "b"]), fingerprint(&["a", "b"]));
        assert_ne!(fingerprint(&["ab", ""]), fingerprint(&["a", "b"]));
    }
}
