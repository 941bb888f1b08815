//! What the host store holds, as JSON: one entry per instance and IAM
//! setting ([`Entry`]: connection info and its key) and, beside it, the
//! record of the Admin API's refusals of its refreshes ([`Refusals`]).
//! Both are read back as untrusted input: anything that does not decode, is
//! of another format version, or is out of range is ignored.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::{is_fresh, CacheKey};
use crate::certs::CertInfo;
use crate::connection_info::{Addresses, ConnectionInfo, ServerIdentity};
use crate::error::{ApiError, Error};
use crate::key::{ClientKey, KeySlot};
use crate::mdx::ExchangeRecord;
use crate::rate_limit::{Bucket, Outcome};
use crate::secret::Secret;
use crate::service::Service;

/// The format of stored values; another version is ignored.
pub(crate) const FORMAT: u32 = 2;

/// `gcp-db-connector/v2/<instance>/<iam|native>`.
pub(crate) fn entry_key(key: &CacheKey) -> String {
    let auth = if key.iam { "iam" } else { "native" };
    format!("gcp-db-connector/v{FORMAT}/{}/{auth}", key.name)
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A stored [`ConnectionInfo`] and its key, DER in base64.
#[derive(Serialize, Deserialize)]
pub(crate) struct Entry {
    format: u32,
    expiry_unix_ms: u64,
    port: u16,
    public_ip: Option<IpAddr>,
    private_ip: Option<IpAddr>,
    psc_name: Option<String>,
    trust_anchors: Vec<String>,
    identity: StoredIdentity,
    sni: bool,
    client_chain: Vec<String>,
    exchange: Option<StoredExchange>,
    public_key: String,
    pub(crate) private_key: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum StoredIdentity {
    DnsNameOrCommonName {
        dns_name: Option<String>,
        common_name: String,
    },
    AddressDialled,
}

#[derive(Serialize, Deserialize)]
struct StoredExchange {
    login_token: Option<String>,
    auto_iam: bool,
}

impl Entry {
    pub(crate) fn encode(info: &ConnectionInfo, key: &ClientKey, store_private_key: bool) -> Self {
        let der = |c: &CertificateDer<'_>| B64.encode(c.as_ref());
        Self {
            format: FORMAT,
            expiry_unix_ms: unix_ms(info.expiry),
            port: info.port,
            public_ip: info.addresses.public,
            private_ip: info.addresses.private,
            psc_name: info.addresses.psc.clone(),
            trust_anchors: info.trust_anchors.iter().map(der).collect(),
            identity: match &info.identity {
                ServerIdentity::DnsNameOrCommonName {
                    dns_name,
                    common_name,
                } => StoredIdentity::DnsNameOrCommonName {
                    dns_name: dns_name.clone(),
                    common_name: common_name.clone(),
                },
                ServerIdentity::AddressDialled => StoredIdentity::AddressDialled,
            },
            sni: info.sni,
            client_chain: info.client_chain.iter().map(der).collect(),
            exchange: info.exchange.as_ref().map(|ex| {
                let record = ex.record();
                StoredExchange {
                    login_token: record.login_token.map(|t| t.expose().to_string()),
                    auto_iam: record.auto_iam,
                }
            }),
            public_key: B64.encode(&key.spki_der),
            private_key: store_private_key.then(|| B64.encode(key.pkcs8_der())),
        }
    }

    /// The entry as connection info and key, if it is of this format, fresh
    /// at `now`, well-formed, its exchange one that `service` makes (for
    /// `user_agent`), and its key at hand (stored, or the one in `keys`). Its
    /// expiry is no later than its client certificate's, whatever it says.
    pub(crate) fn decode(
        self,
        service: &dyn Service,
        user_agent: &str,
        keys: &KeySlot,
        now: SystemTime,
    ) -> Option<(ConnectionInfo, Arc<ClientKey>)> {
        if self.format != FORMAT {
            return None;
        }
        let expiry = UNIX_EPOCH.checked_add(Duration::from_millis(self.expiry_unix_ms))?;
        if !is_fresh(expiry, now) {
            return None;
        }
        let public_key = B64.decode(&self.public_key).ok()?;
        let key = match &self.private_key {
            Some(pkcs8) => Arc::new(ClientKey::from_pkcs8_der(&B64.decode(pkcs8).ok()?).ok()?),
            None => keys.current()?,
        };
        if key.spki_der != public_key {
            return None;
        }
        let ders = |list: &[String]| -> Option<Vec<CertificateDer<'static>>> {
            list.iter()
                .map(|c| B64.decode(c).ok().map(CertificateDer::from))
                .collect()
        };
        let client_chain = ders(&self.client_chain)?;
        let not_after = CertInfo::parse(client_chain.first()?).ok()?.not_after();
        let expiry = expiry.min(not_after);
        if !is_fresh(expiry, now) {
            return None;
        }
        let exchange = match self.exchange {
            None => None,
            Some(e) => Some(service.restore_exchange(
                ExchangeRecord {
                    login_token: e.login_token.map(Secret::new),
                    auto_iam: e.auto_iam,
                },
                user_agent,
            )?),
        };
        let info = ConnectionInfo {
            addresses: Addresses {
                public: self.public_ip,
                private: self.private_ip,
                psc: self.psc_name,
            },
            port: self.port,
            trust_anchors: ders(&self.trust_anchors)?,
            identity: match self.identity {
                StoredIdentity::DnsNameOrCommonName {
                    dns_name,
                    common_name,
                } => ServerIdentity::DnsNameOrCommonName {
                    dns_name,
                    common_name,
                },
                StoredIdentity::AddressDialled => ServerIdentity::AddressDialled,
            },
            sni: self.sni,
            client_chain,
            expiry,
            exchange,
        };
        Some((info, key))
    }
}

/// The Admin API's refusals of one instance's refreshes, shared by every
/// instance of the app (`cache::store`). The last refusal is kept as the
/// Admin API gave it, whose message has the call's token blanked out.
#[derive(Serialize, Deserialize)]
pub(crate) struct Refusals {
    format: u32,
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
    /// A record read back from the store, if it is one of this format.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let r: Self = serde_json::from_slice(bytes).ok()?;
        (r.format == FORMAT).then_some(r)
    }

    /// The record after `e` ended a refresh at `now`, if the shared bucket
    /// counts `e` (the Admin API's refusals; see `rate_limit`).
    pub(crate) fn after(before: Option<&Self>, e: &Error, now: SystemTime) -> Option<Self> {
        let api = e.api_error()?;
        let quota = match e.refresh_outcome() {
            Outcome::Refused { quota } => quota,
            _ => return None,
        };
        let bucket =
            Bucket::after_shared(before.map(|b| b.bucket_at(now)), Outcome::Refused { quota })?;
        Some(Self {
            format: FORMAT,
            tokens: bucket.tokens(),
            at_unix_ms: unix_ms(now),
            quota,
            call: api.call.clone(),
            status: api.status,
            code: api.code.clone(),
            message: api.message.clone(),
        })
    }

    /// The bucket at `now`. A refusal stamped later than `now` (another
    /// host's clock) has earned nothing yet.
    pub(crate) fn bucket_at(&self, now: SystemTime) -> Bucket {
        let elapsed = UNIX_EPOCH
            .checked_add(Duration::from_millis(self.at_unix_ms))
            .and_then(|at| now.duration_since(at).ok());
        Bucket::from_stored(self.tokens).refilled(elapsed.unwrap_or_default())
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

    /// The record as stored.
    pub(crate) fn encode(&self) -> Option<Vec<u8>> {
        serde_json::to_vec(self).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::instance::Instance;
    use crate::testing::{self, alloydb_key, client_key_copy, refused};

    fn decode(bytes: &[u8], keys: &KeySlot) -> Option<(ConnectionInfo, Arc<ClientKey>)> {
        let entry: Entry = serde_json::from_slice(bytes).ok()?;
        entry.decode(alloydb_key().name.service(), "ua", keys, SystemTime::now())
    }

    #[test]
    fn an_entry_reads_back_as_written() {
        let info = testing::alloydb_info(60);
        let bytes = serde_json::to_vec(&Entry::encode(&info, &client_key_copy(), true)).unwrap();
        let (back, key) = decode(&bytes, &KeySlot::default()).unwrap();
        assert_eq!(key.spki_der, client_key_copy().spki_der);
        assert_eq!(back.addresses, info.addresses);
        assert_eq!(back.identity, info.identity);
        assert_eq!((back.port, back.sni), (5433, true));
        assert_eq!(back.client_chain, info.client_chain);
        assert_eq!(
            back.exchange.unwrap().record(),
            info.exchange.unwrap().record()
        );
    }

    #[test]
    fn corrupt_stale_and_foreign_entries_are_not_used() {
        let good = serde_json::to_vec(&Entry::encode(
            &testing::alloydb_info(60),
            &client_key_copy(),
            true,
        ))
        .unwrap();
        let edit = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
            f(&mut v);
            v.to_string().into_bytes()
        };
        let stale = serde_json::to_vec(&Entry::encode(
            &testing::alloydb_info(3),
            &client_key_copy(),
            true,
        ))
        .unwrap();
        for bad in [
            b"{not json".to_vec(),
            b"null".to_vec(),
            edit(&|v| v["format"] = 1.into()),
            edit(&|v| v["client_chain"] = serde_json::json!(["%%%"])),
            edit(&|v| v["client_chain"] = serde_json::json!([])),
            // AlloyDB's exchange always carries its token.
            edit(&|v| v["exchange"]["login_token"] = serde_json::Value::Null),
            stale,
        ] {
            assert!(
                decode(&bad, &KeySlot::default()).is_none(),
                "{}",
                String::from_utf8_lossy(&bad)
            );
        }
        assert!(decode(&good, &KeySlot::default()).is_some());
        // An expiry past the certificate's is the certificate's.
        let forever = edit(&|v| v["expiry_unix_ms"] = u64::MAX.into());
        let (info, _) = decode(&forever, &KeySlot::default()).unwrap();
        let cert = CertInfo::parse(&info.client_chain[0]).unwrap();
        assert_eq!(info.expiry, cert.not_after());
        // A Cloud SQL instance does not take AlloyDB's exchange.
        let entry: Entry = serde_json::from_slice(&good).unwrap();
        let sql = Instance::parse("p:r:i").unwrap();
        assert!(entry
            .decode(sql.service(), "ua", &KeySlot::default(), SystemTime::now())
            .is_none());
    }

    #[test]
    fn without_the_private_key_only_the_same_key_reads_an_entry() {
        let bytes = serde_json::to_vec(&Entry::encode(
            &testing::alloydb_info(60),
            &client_key_copy(),
            false,
        ))
        .unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains("\"private_key\":null"));
        assert!(decode(&bytes, &KeySlot::default()).is_none());
        let other = KeySlot::default();
        other.offer(Arc::new(ClientKey::generate().unwrap()));
        assert!(decode(&bytes, &other).is_none());
        let same = KeySlot::default();
        same.offer(Arc::new(client_key_copy()));
        assert!(decode(&bytes, &same).is_some());
    }

    #[test]
    fn a_refusal_record_counts_refusals_and_reads_back() {
        let now = SystemTime::now();
        let denied = refused(403, "PERMISSION_DENIED");
        let once = Refusals::after(None, &denied, now).unwrap();
        assert!(once.bucket_at(now).allows());
        let twice = Refusals::after(Some(&once), &denied, now).unwrap();
        assert!(!twice.bucket_at(now).allows());
        let back = Refusals::decode(&twice.encode().unwrap()).unwrap();
        assert_eq!(back.error().kind(), ErrorKind::AdminApi);
        assert_eq!(back.error().api_error(), denied.api_error());

        let quota = Refusals::after(None, &refused(429, "RESOURCE_EXHAUSTED"), now).unwrap();
        assert!(!quota.bucket_at(now).allows());
        assert_eq!(quota.error().kind(), ErrorKind::QuotaExceeded);

        // Other failures are not the shared bucket's.
        assert!(Refusals::after(None, &Error::credentials("refused"), now).is_none());
    }

    #[test]
    fn a_corrupt_or_future_refusal_record_holds_back_one_interval_at_most() {
        for (tokens, at) in [
            ("-1e300", 0u64),
            ("1e300", 0),
            ("0.0", u64::MAX),
            ("0.5", u64::MAX / 2),
        ] {
            let record = format!(
                r#"{{"format":{FORMAT},"tokens":{tokens},"at_unix_ms":{at},"quota":false,"call":"c","status":403,"code":"","message":"m"}}"#
            );
            let r = Refusals::decode(record.as_bytes()).unwrap();
            let wait = r.bucket_at(SystemTime::now()).wait();
            assert!(
                wait <= crate::rate_limit::INTERVAL,
                "{tokens} {at}: {wait:?}"
            );
        }
        assert!(Refusals::decode(b"{\"format\":1}").is_none());
    }
}
