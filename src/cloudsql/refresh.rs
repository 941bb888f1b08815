//! One certificate refresh: tokens, the two Admin API calls in flight together,
//! the key generated while they travel, and every field of the answers checked
//! before it is trusted.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use rustls_pki_types::CertificateDer;

use super::admin::{self, AdminClient, ConnectSettings};
use crate::certs::{self, CertInfo};
use crate::credentials::{Scope, TokenSource};
use crate::key::{ClientKey, KeySlot};
use crate::{http, retry, ConnectTimings, Error, InstanceName, IpType};

/// Everything a dial needs, valid until `expiry`.
#[derive(Debug)]
pub(crate) struct ConnectionInfo {
    pub addresses: Addresses,
    /// Trust anchors: every certificate of `serverCaCert`.
    pub server_ca: Vec<CertificateDer<'static>>,
    /// The DNS name the server certificate's SAN should carry, if the
    /// instance has one (trailing dot removed).
    pub server_name: Option<String>,
    pub client_cert: CertificateDer<'static>,
    /// The certificate's NotAfter, capped by the IAM login token's expiry.
    pub expiry: SystemTime,
    /// connectSettings lists the metadata exchange: run it after the handshake.
    pub mdx: bool,
}

/// The instance's addresses by IP type.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Addresses {
    pub public: Option<IpAddr>,
    pub private: Option<IpAddr>,
    pub psc: Option<String>,
}

/// Where to dial: an IP, or the PSC DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Ip(IpAddr),
    Dns(String),
}

impl ConnectionInfo {
    /// The address of `ip_type`, or a typed error naming what is missing.
    pub(crate) fn target(&self, ip_type: IpType, name: &InstanceName) -> Result<Target, Error> {
        let target = match ip_type {
            IpType::Public => self.addresses.public.map(Target::Ip),
            IpType::Private => self.addresses.private.map(Target::Ip),
            IpType::Psc => self.addresses.psc.clone().map(Target::Dns),
        };
        target.ok_or_else(|| Error::IpTypeNotAvailable {
            instance: name.to_string(),
            ip_type,
        })
    }
}

/// What a refresh uses, borrowed from the connector.
pub(crate) struct Refresher<'a> {
    pub admin: &'a AdminClient,
    pub tokens: &'a TokenSource,
    pub key: &'a KeySlot,
}

impl Refresher<'_> {
    /// Fetches a fresh certificate and the instance's connect settings.
    pub(crate) fn refresh(
        &self,
        name: &InstanceName,
        iam: bool,
        deadline: Instant,
        timings: &mut ConnectTimings,
    ) -> Result<(ConnectionInfo, Arc<ClientKey>), Error> {
        let started = Instant::now();
        let api = self.tokens.token(Scope::Admin, deadline)?;
        let login = if iam {
            Some(self.tokens.fresh_token(Scope::Login, deadline)?)
        } else {
            None
        };
        timings.token = started.elapsed();

        // connectSettings needs no key: send it first, so the key is generated
        // while it travels.
        let admin_started = Instant::now();
        let settings_req = self.admin.connect_settings(name, api.secret.expose());
        let settings_pending = http::start(&settings_req, deadline)?;

        let key_started = Instant::now();
        let (key, generated) = self.key.get()?;
        let key_time = key_started.elapsed();
        if generated {
            timings.key_generation = key_time;
        }

        let cert_req = self.admin.generate_ephemeral_cert(
            name,
            api.secret.expose(),
            &key.public_pem,
            login.as_ref().map(|t| t.secret.expose()),
        )?;
        let cert_pending = http::start(&cert_req, deadline)?;

        // On a metadata failure the certificate request is dropped (cancelled).
        let settings = retry::finish_with_retry(settings_pending, &settings_req, deadline)
            .and_then(|r| admin::check_status(format!("connectSettings for {name}"), r))
            .and_then(|r| admin::parse_connect_settings(&r.body))?;
        let cert_pem = retry::finish_with_retry(cert_pending, &cert_req, deadline)
            .and_then(|r| admin::check_status(format!("generateEphemeralCert for {name}"), r))
            .and_then(|r| admin::parse_ephemeral_cert(&r.body))?;
        // The Admin API's own share: what was not hidden behind key generation.
        timings.admin_api = admin_started.elapsed().saturating_sub(key_time);

        let info = connection_info(
            name,
            iam,
            settings,
            &cert_pem,
            &key,
            login.and_then(|t| t.expiry),
            SystemTime::now(),
        )?;
        Ok((info, key))
    }
}

/// Checks the two answers against the name, the key and the clock, and
/// assembles the [`ConnectionInfo`].
pub(crate) fn connection_info(
    name: &InstanceName,
    iam: bool,
    s: ConnectSettings,
    cert_pem: &str,
    key: &ClientKey,
    login_expiry: Option<SystemTime>,
    now: SystemTime,
) -> Result<ConnectionInfo, Error> {
    let meta = |m: &str| Error::InstanceMetadata(format!("{name}: {m}"));

    let region = s
        .region
        .ok_or_else(|| meta("connectSettings has no region"))?;
    if region != name.region() {
        return Err(Error::RegionMismatch {
            instance: name.to_string(),
            given: name.region().to_string(),
            actual: region,
        });
    }
    if let Some(b) = s.backend_type.as_deref() {
        if b != "SECOND_GEN" {
            return Err(Error::Unsupported(format!(
                "{name} has backendType {b}; only second-generation instances are supported"
            )));
        }
    }
    let database_version = s.database_version.unwrap_or_default();
    if iam && !(database_version.starts_with("POSTGRES") || database_version.starts_with("MYSQL")) {
        return Err(Error::Unsupported(format!(
            "{name} runs {database_version:?}, which does not support automatic IAM database \
             authentication (Postgres and MySQL do)"
        )));
    }

    let mut addresses = Addresses::default();
    for m in &s.ip_addresses {
        let slot = match m.kind.as_deref() {
            Some("PRIMARY") => &mut addresses.public,
            Some("PRIVATE") => &mut addresses.private,
            _ => continue, // OUTGOING, MIGRATED_1ST_GEN: not for clients
        };
        let ip = m.ip_address.as_deref().unwrap_or_default();
        *slot = Some(
            ip.parse()
                .map_err(|_| meta(&format!("ipAddresses has {ip:?}, not an IP address")))?,
        );
    }
    if s.psc_enabled {
        addresses.psc = s
            .dns_names
            .iter()
            .find(|d| {
                d.connection_type.as_deref() == Some("PRIVATE_SERVICE_CONNECT")
                    && d.dns_scope.as_deref() == Some("INSTANCE")
            })
            .and_then(|d| d.name.as_deref())
            .or(s.dns_name.as_deref())
            .map(strip_dot);
    }
    let server_name = s
        .dns_names
        .first()
        .and_then(|d| d.name.as_deref())
        .or(s.dns_name.as_deref())
        .map(strip_dot)
        .filter(|n| !n.is_empty());

    let ca_pem = s
        .server_ca_cert
        .and_then(|c| c.cert)
        .ok_or_else(|| meta("the instance has no server CA certificate (serverCaCert)"))?;
    let server_ca = certs::parse_pem_list(&ca_pem)
        .ok_or_else(|| meta("serverCaCert.cert is not a list of PEM certificates"))?;

    let client_cert = certs::parse_pem_list(cert_pem)
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| meta("the ephemeral certificate is not a PEM certificate"))?;
    let parsed = CertInfo::parse(&client_cert)
        .map_err(|e| meta(&format!("the ephemeral certificate is {e}")))?;
    if parsed.public_key_der().as_deref() != Some(key.spki_der.as_slice()) {
        return Err(meta(
            "the ephemeral certificate is for another public key than the one sent",
        ));
    }
    let not_after = parsed.not_after();
    if not_after <= now {
        return Err(meta("the ephemeral certificate is already expired"));
    }
    // An unknown token expiry (a caller's static token) does not cap it.
    let expiry = login_expiry.map_or(not_after, |t| t.min(not_after));

    Ok(ConnectionInfo {
        addresses,
        server_ca,
        server_name,
        client_cert,
        expiry,
        mdx: s
            .mdx_protocol_support
            .iter()
            .any(|p| p == "CLIENT_PROTOCOL_TYPE"),
    })
}

/// Google's DNS names end with a dot; names are compared without it.
fn strip_dot(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::test_certs::{client_key as key, Ca};

    fn name() -> InstanceName {
        InstanceName::parse("proj:us-central1:db").unwrap()
    }

    fn settings(ca_pem: &str) -> ConnectSettings {
        admin::parse_connect_settings(
            serde_json::json!({
                "kind": "sql#connectSettings",
                "serverCaCert": {"cert": ca_pem},
                "ipAddresses": [
                    {"type": "PRIMARY", "ipAddress": "34.1.2.3"},
                    {"type": "OUTGOING", "ipAddress": "34.9.9.9"},
                    {"type": "PRIVATE", "ipAddress": "10.0.0.5"}
                ],
                "region": "us-central1",
                "databaseVersion": "POSTGRES_15",
                "backendType": "SECOND_GEN",
                "pscEnabled": true,
                "dnsNames": [
                    {"name": "abc.def.us-central1.sql.goog.", "connectionType": "PUBLIC", "dnsScope": "INSTANCE"},
                    {"name": "xyz.psc.us-central1.sql-psc.goog.", "connectionType": "PRIVATE_SERVICE_CONNECT", "dnsScope": "INSTANCE"}
                ]
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    fn build(
        s: ConnectSettings,
        cert: &str,
        login: Option<SystemTime>,
    ) -> Result<ConnectionInfo, Error> {
        connection_info(&name(), false, s, cert, key(), login, SystemTime::now())
    }

    #[test]
    fn assembles_addresses_names_and_expiry() {
        let ca = Ca::new("Google Cloud SQL Server CA");
        let cert = ca.client_cert_pem(&key().spki_der, 60);
        let info = build(settings(&ca.pem()), &cert, None).unwrap();
        assert_eq!(info.addresses.public, Some("34.1.2.3".parse().unwrap()));
        assert_eq!(info.addresses.private, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(
            info.addresses.psc.as_deref(),
            Some("xyz.psc.us-central1.sql-psc.goog")
        );
        assert_eq!(
            info.server_name.as_deref(),
            Some("abc.def.us-central1.sql.goog")
        );
        assert_eq!(info.server_ca.len(), 1);
        assert!(!info.mdx);
        let left = info.expiry.duration_since(SystemTime::now()).unwrap();
        assert!(
            left > Duration::from_secs(58 * 60) && left <= Duration::from_secs(3600),
            "{left:?}"
        );

        assert_eq!(
            info.target(IpType::Public, &name()).unwrap(),
            Target::Ip("34.1.2.3".parse().unwrap())
        );
        assert_eq!(
            info.target(IpType::Psc, &name()).unwrap(),
            Target::Dns("xyz.psc.us-central1.sql-psc.goog".into())
        );
    }

    #[test]
    fn login_token_expiry_caps_the_certificate() {
        let ca = Ca::new("CA");
        let cert = ca.client_cert_pem(&key().spki_der, 60);
        let token_expiry = SystemTime::now() + Duration::from_secs(600);
        let info = build(settings(&ca.pem()), &cert, Some(token_expiry)).unwrap();
        assert_eq!(info.expiry, token_expiry);
    }

    #[test]
    fn missing_ip_type_is_a_typed_error() {
        let ca = Ca::new("CA");
        let cert = ca.client_cert_pem(&key().spki_der, 60);
        let mut s = settings(&ca.pem());
        s.ip_addresses
            .retain(|m| m.kind.as_deref() != Some("PRIVATE"));
        s.psc_enabled = false;
        let info = build(s, &cert, None).unwrap();
        for t in [IpType::Private, IpType::Psc] {
            match info.target(t, &name()) {
                Err(Error::IpTypeNotAvailable { ip_type, instance }) => {
                    assert_eq!(ip_type, t);
                    assert_eq!(instance, "proj:us-central1:db");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn rejects_what_google_rejects() {
        let ca = Ca::new("CA");
        let good = ca.client_cert_pem(&key().spki_der, 60);

        let mut s = settings(&ca.pem());
        s.region = Some("europe-west1".into());
        match build(s, &good, None) {
            Err(Error::RegionMismatch { given, actual, .. }) => {
                assert_eq!(
                    (given.as_str(), actual.as_str()),
                    ("us-central1", "europe-west1")
                )
            }
            other => panic!("{other:?}"),
        }

        let mut s = settings(&ca.pem());
        s.backend_type = Some("FIRST_GEN".into());
        assert!(matches!(build(s, &good, None), Err(Error::Unsupported(_))));

        let mut s = settings(&ca.pem());
        s.database_version = Some("SQLSERVER_2019_STANDARD".into());
        let r = connection_info(&name(), true, s, &good, key(), None, SystemTime::now());
        assert!(matches!(r, Err(Error::Unsupported(m)) if m.contains("IAM")));
    }

    #[test]
    fn rejects_unusable_certificates_with_the_reason() {
        let ca = Ca::new("CA");
        let good = ca.client_cert_pem(&key().spki_der, 60);
        let metadata_error = |r: Result<ConnectionInfo, Error>, want: &str| match r {
            Err(Error::InstanceMetadata(m)) => assert!(m.contains(want), "{m:?} lacks {want:?}"),
            other => panic!("{other:?}"),
        };

        let mut s = settings(&ca.pem());
        s.server_ca_cert = None;
        metadata_error(build(s, &good, None), "no server CA certificate");
        metadata_error(
            build(settings("not pem"), &good, None),
            "serverCaCert.cert is not",
        );
        metadata_error(
            build(
                settings(&ca.pem()),
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                None,
            ),
            "ephemeral certificate is not",
        );

        let other_key = ClientKey::generate().unwrap();
        let foreign = ca.client_cert_pem(&other_key.spki_der, 60);
        metadata_error(
            build(settings(&ca.pem()), &foreign, None),
            "another public key",
        );

        let expired = ca.client_cert_pem(&key().spki_der, -5);
        metadata_error(
            build(settings(&ca.pem()), &expired, None),
            "already expired",
        );

        let mut s = settings(&ca.pem());
        s.ip_addresses[0].ip_address = Some("not-an-ip".into());
        metadata_error(build(s, &good, None), "not an IP address");

        let mut s = settings(&ca.pem());
        s.region = None;
        metadata_error(build(s, &good, None), "no region");
    }
}
