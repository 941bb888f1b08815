//! One Cloud SQL refresh: the tokens (the key generated while they travel),
//! then `connectSettings` and `generateEphemeralCert` in flight together
//! (`crate::refresh`), and every field of the answers checked before it is
//! trusted.

use std::time::{Instant, SystemTime};

use super::admin::{self, AdminClient, ConnectSettings};
use super::instance_name::InstanceName;
use super::{ADMIN_SCOPE, LOGIN_SCOPE};
use crate::certs;
use crate::connection_info::{strip_dot, Addresses, ConnectionInfo, InstanceFacts};
use crate::credentials::{Freshness, PendingToken};
use crate::error::Error;
use crate::key::ClientKey;
use crate::mdx::ExchangeRecord;
use crate::refresh::{Call, RefreshContext, RefreshTimings};
use crate::service::{Refreshed, Service};

/// Fetches a fresh certificate and the instance's connect settings.
pub(crate) fn refresh(
    name: &InstanceName,
    ctx: &RefreshContext<'_>,
    iam: bool,
    deadline: Instant,
) -> Result<Refreshed, Error> {
    let mut timings = RefreshTimings::default();
    let admin = AdminClient(ctx.admin_api(&name.admin_endpoint(ctx.config)));
    let ((api, login), key) = ctx.tokens_and_key(
        || {
            let api = ctx.tokens.start(ADMIN_SCOPE, Freshness::Cached, deadline);
            let login = iam.then(|| ctx.tokens.start(LOGIN_SCOPE, Freshness::New, deadline));
            (api, login)
        },
        |(api, login)| Ok((api.wait()?, login.map(PendingToken::wait).transpose()?)),
        deadline,
        &mut timings,
    )?;

    let settings = Call {
        req: admin.connect_settings(name, api.secret.expose()),
        name: format!("connectSettings for {name}"),
    };
    let cert = Call {
        req: admin.generate_ephemeral_cert(
            name,
            api.secret.expose(),
            &key.public_pem,
            login.as_ref().map(|t| t.secret.expose()),
        )?,
        name: format!("generateEphemeralCert for {name}"),
    };
    let (settings, cert) = ctx.two_calls(settings, cert, deadline, &mut timings)?;
    let settings = admin::parse_connect_settings(&settings.body)?;
    let cert_pem = admin::parse_ephemeral_cert(&cert.body)?;

    let info = connection_info(
        name,
        iam,
        settings,
        &cert_pem,
        &key,
        login.and_then(|t| t.expiry),
        SystemTime::now(),
        ctx.user_agent,
    )?;
    Ok(Refreshed { info, key, timings })
}

/// Checks the two answers against the name, the key and the clock, and
/// assembles the [`ConnectionInfo`]; its exchange, if the instance wants one,
/// sends `user_agent`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn connection_info(
    name: &InstanceName,
    iam: bool,
    s: ConnectSettings,
    cert_pem: &str,
    key: &ClientKey,
    login_expiry: Option<SystemTime>,
    now: SystemTime,
    user_agent: &str,
) -> Result<ConnectionInfo, Error> {
    let meta = |m: &str| Error::instance_metadata(format!("{name}: {m}"));

    let region = s
        .region
        .ok_or_else(|| meta("connectSettings has no region"))?;
    if region != name.region() {
        return Err(Error::region_mismatch(name, name.region(), &region));
    }
    if let Some(b) = s.backend_type.as_deref() {
        if b != "SECOND_GEN" {
            return Err(Error::unsupported(format!(
                "{name} has backendType {b}; only second-generation instances are supported"
            ))
            .for_instance(name));
        }
    }
    let database_version = s.database_version.unwrap_or_default();
    if iam && !(database_version.starts_with("POSTGRES") || database_version.starts_with("MYSQL")) {
        return Err(Error::unsupported(format!(
            "{name} runs {database_version:?}, which does not support automatic IAM database \
             authentication (Postgres and MySQL do)"
        ))
        .for_instance(name));
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
    if addresses == Addresses::default() {
        return Err(meta(
            "connectSettings lists no PRIMARY or PRIVATE address in ipAddresses and no PSC DNS \
             name: the instance has no supported IP addresses",
        ));
    }
    if let Some(problem) = addresses.problem() {
        return Err(meta(&format!("connectSettings lists {problem}")));
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
        .ok_or_else(|| meta("connectSettings has no server CA certificate (serverCaCert.cert)"))?;
    let server_ca = certs::parse_pem_list(&ca_pem)
        .ok_or_else(|| meta("serverCaCert.cert is not a list of PEM certificates"))?;
    certs::check_trust_anchors(&server_ca, now)
        .map_err(|e| meta(&format!("serverCaCert.cert {e}")))?;

    let client_cert = certs::parse_pem_list(cert_pem)
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| meta("ephemeralCert.cert is not a PEM certificate"))?;
    let not_after = certs::check_client_cert(&client_cert, key, now)
        .map_err(|e| meta(&format!("ephemeralCert.cert {e}")))?;
    // An unknown token expiry (a caller's static token) does not cap it.
    let expiry = login_expiry.map_or(not_after, |t| t.min(not_after));

    let exchange = s
        .mdx_protocol_support
        .iter()
        .any(|p| p == "CLIENT_PROTOCOL_TYPE")
        .then_some(ExchangeRecord {
            login_token: None,
            auto_iam: false,
        });
    let facts = InstanceFacts {
        addresses,
        trust_anchors: server_ca,
        dns_name: server_name,
        client_chain: vec![client_cert],
        expiry,
        exchange,
    };
    name.plan(facts, user_agent)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cloudsql::mdx::CloudSqlExchange;
    use crate::connection_info::ServerIdentity;
    use crate::connection_info::Target;
    use crate::error::ErrorKind;
    use crate::ip_type::IpType;
    use crate::testing::certs::{client_key as key, Ca};

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
        connection_info(
            &name(),
            false,
            s,
            cert,
            key(),
            login,
            SystemTime::now(),
            "ua",
        )
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
            info.identity,
            ServerIdentity::DnsNameOrCommonName {
                dns_name: Some("abc.def.us-central1.sql.goog".into()),
                common_name: "proj:db".into()
            }
        );
        assert_eq!(info.trust_anchors.len(), 1);
        assert_eq!(info.client_chain.len(), 1);
        assert!(info.exchange.is_none());
        assert!(!info.sni);
        assert_eq!(info.port, 3307);
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
    fn an_instance_listing_the_exchange_gets_one_with_the_user_agent() {
        use crate::mdx::MetadataExchange;
        let ca = Ca::new("CA");
        let cert = ca.client_cert_pem(&key().spki_der, 60);
        let mut s = settings(&ca.pem());
        s.mdx_protocol_support = vec!["CLIENT_PROTOCOL_TYPE".into()];
        let exchange = build(s, &cert, None).unwrap().exchange.unwrap();
        let want = CloudSqlExchange {
            user_agent: "ua".into(),
        };
        assert_eq!(exchange.request(), want.request());
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
            let e = info.target(t, &name()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::IpTypeNotAvailable);
            assert_eq!(e.ip_type(), Some(t));
            assert_eq!(e.instance(), Some("proj:us-central1:db"));
        }
    }

    #[test]
    fn an_address_no_instance_can_have_is_refused_as_a_store_entry_would_be() {
        let ca = Ca::new("CA");
        let cert = ca.client_cert_pem(&key().spki_der, 60);
        let mut s = settings(&ca.pem());
        s.dns_names[1].name = Some("xyz.psc.:us-central1.sql-psc.goog.".into());
        let e = build(s, &cert, None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InstanceMetadata);
        assert!(e.message().contains("which is not a DNS name"), "{e}");
        let mut s = settings(&ca.pem());
        s.ip_addresses[0].ip_address = Some("0.0.0.0".into());
        let e = build(s, &cert, None).unwrap_err();
        assert!(e.message().contains("the address 0.0.0.0"), "{e}");
    }

    #[test]
    fn rejects_what_google_rejects() {
        let ca = Ca::new("CA");
        let good = ca.client_cert_pem(&key().spki_der, 60);

        let mut s = settings(&ca.pem());
        s.region = Some("europe-west1".into());
        let e = build(s, &good, None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::RegionMismatch);
        assert_eq!(e.regions(), Some(("us-central1", "europe-west1")));

        let mut s = settings(&ca.pem());
        s.backend_type = Some("FIRST_GEN".into());
        assert_eq!(
            build(s, &good, None).unwrap_err().kind(),
            ErrorKind::Unsupported
        );

        let mut s = settings(&ca.pem());
        s.database_version = Some("SQLSERVER_2019_STANDARD".into());
        let r = connection_info(
            &name(),
            true,
            s,
            &good,
            key(),
            None,
            SystemTime::now(),
            "ua",
        );
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.message().contains("IAM"), "{e}");
    }

    #[test]
    fn rejects_unusable_certificates_with_the_reason() {
        let ca = Ca::new("CA");
        let good = ca.client_cert_pem(&key().spki_der, 60);
        let metadata_error = |r: Result<ConnectionInfo, Error>, want: &str| {
            let e = r.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InstanceMetadata, "{want}: {e}");
            assert!(e.message().contains(want), "{e:?} lacks {want:?}");
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
            "ephemeralCert.cert is not",
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

        // OUTGOING is not for clients; PSC alone would do.
        let mut s = settings(&ca.pem());
        s.ip_addresses
            .retain(|m| m.kind.as_deref() == Some("OUTGOING"));
        build(s, &good, None).unwrap();
        let mut s = settings(&ca.pem());
        s.ip_addresses
            .retain(|m| m.kind.as_deref() == Some("OUTGOING"));
        s.psc_enabled = false;
        metadata_error(
            build(s, &good, None),
            "no PRIMARY or PRIVATE address in ipAddresses",
        );
    }
}
