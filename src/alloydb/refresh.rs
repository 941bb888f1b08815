//! One AlloyDB refresh: the tokens (the key generated while they travel),
//! then `connectionInfo` and `generateClientCertificate` in flight together
//! (`crate::refresh`), and every field of the answers checked before it is
//! trusted.

use std::time::{Instant, SystemTime};

use super::admin::{self, AdminClient, ClientCertificate, InstanceConnectionInfo};
use super::instance_uri::AlloyDbInstanceUri;
use super::{ADMIN_SCOPE, LOGIN_SCOPE};
use crate::certs;
use crate::connection_info::{strip_dot, Addresses, ConnectionInfo, InstanceFacts};
use crate::credentials::token::Token;
use crate::credentials::Freshness;
use crate::error::Error;
use crate::key::ClientKey;
use crate::mdx::ExchangeRecord;
use crate::refresh::{Call, RefreshContext, RefreshTimings};
use crate::service::{Refreshed, Service};

/// Fetches the instance's connection info, a fresh client certificate and
/// the token for the metadata exchange.
pub(crate) fn refresh(
    uri: &AlloyDbInstanceUri,
    ctx: &RefreshContext<'_>,
    iam: bool,
    deadline: Instant,
) -> Result<Refreshed, Error> {
    let mut timings = RefreshTimings::default();
    let admin = AdminClient(ctx.admin_api(&uri.admin_endpoint(ctx.config)));
    let ((api, login), key) = ctx.tokens_and_key(
        || {
            let api = ctx.tokens.start(ADMIN_SCOPE, Freshness::Cached, deadline);
            // New, so the cached entry lives as long as the certificate does.
            let login = ctx.tokens.start(LOGIN_SCOPE, Freshness::New, deadline);
            (api, login)
        },
        |(api, login)| Ok((api.wait()?, login.wait()?)),
        deadline,
        &mut timings,
    )?;

    let info = Call {
        req: admin.connection_info(uri, api.secret.expose()),
        name: format!("connectionInfo for {uri}"),
    };
    let cert = Call {
        req: admin.generate_client_certificate(uri, api.secret.expose(), &key.public_pem)?,
        name: format!("generateClientCertificate for {uri}"),
    };
    let (info, cert) = ctx.two_calls(info, cert, deadline, &mut timings)?;
    let info = admin::parse_connection_info(&info.body)?;
    let cert = admin::parse_client_certificate(&cert.body)?;

    let info = connection_info(
        uri,
        iam,
        info,
        cert,
        &key,
        login,
        SystemTime::now(),
        ctx.user_agent,
    )?;
    Ok(Refreshed { info, key, timings })
}

/// Checks the two answers against the key and the clock, and assembles the
/// [`ConnectionInfo`]; its exchange carries `login` and `user_agent`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn connection_info(
    uri: &AlloyDbInstanceUri,
    iam: bool,
    info: InstanceConnectionInfo,
    cert: ClientCertificate,
    key: &ClientKey,
    login: Token,
    now: SystemTime,
    user_agent: &str,
) -> Result<ConnectionInfo, Error> {
    let meta = |m: &str| Error::instance_metadata(format!("{uri}: {m}"));
    let present = |s: Option<String>| s.filter(|s| !s.is_empty());
    let ip = |what: &str, s: Option<String>| {
        present(s)
            .map(|ip| {
                ip.parse().map_err(|_| {
                    meta(&format!(
                        "connectionInfo has {what} {ip:?}, not an IP address"
                    ))
                })
            })
            .transpose()
    };
    let addresses = Addresses {
        private: ip("ipAddress", info.ip_address)?,
        public: ip("publicIpAddress", info.public_ip_address)?,
        psc: present(info.psc_dns_name).map(|n| strip_dot(&n)),
    };
    if addresses == Addresses::default() {
        return Err(meta(
            "connectionInfo lists no IP address and no PSC DNS name: the instance has no \
             supported IP addresses",
        ));
    }
    if let Some(problem) = addresses.problem() {
        return Err(meta(&format!("connectionInfo lists {problem}")));
    }

    let ca_pem = present(cert.ca_cert)
        .ok_or_else(|| meta("generateClientCertificate answered without caCert"))?;
    let trust_anchors =
        certs::parse_pem_list(&ca_pem).ok_or_else(|| meta("caCert is not a PEM certificate"))?;
    certs::check_trust_anchors(&trust_anchors, now).map_err(|e| meta(&format!("caCert {e}")))?;

    if cert.pem_certificate_chain.is_empty() {
        return Err(meta(
            "generateClientCertificate answered without pemCertificateChain",
        ));
    }
    let mut client_chain = Vec::new();
    for (i, pem) in cert.pem_certificate_chain.iter().enumerate() {
        client_chain.extend(certs::parse_pem_list(pem).ok_or_else(|| {
            meta(&format!(
                "pemCertificateChain[{i}] is not a PEM certificate"
            ))
        })?);
    }
    let not_after = certs::check_client_cert(&client_chain[0], key, now)
        .map_err(|e| meta(&format!("pemCertificateChain[0] {e}")))?;
    // The exchange token must outlive the entry, or connects would fail on
    // an expired token while the certificate is still cached.
    let expiry = login.expiry.map_or(not_after, |t| t.min(not_after));

    let facts = InstanceFacts {
        addresses,
        trust_anchors,
        dns_name: None,
        client_chain,
        expiry,
        exchange: Some(ExchangeRecord {
            login_token: Some(login.secret),
            auto_iam: iam,
        }),
    };
    uri.plan(facts, user_agent)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::connection_info::ServerIdentity;
    use crate::connection_info::Target;
    use crate::error::ErrorKind;
    use crate::ip_type::IpType;
    use crate::mdx::ExchangeRecord;
    use crate::secret::Secret;
    use crate::testing::certs::{client_key as key, Ca};

    fn uri() -> AlloyDbInstanceUri {
        AlloyDbInstanceUri::parse("projects/p/locations/us-central1/clusters/c/instances/i")
            .unwrap()
    }

    fn answers(root: &Ca, inter: &Ca, minutes: i64) -> (InstanceConnectionInfo, ClientCertificate) {
        let info = admin::parse_connection_info(
            br#"{"ipAddress":"10.0.0.2","publicIpAddress":"34.1.2.3","pscDnsName":"x.y.us-central1.alloydb-psc.goog.","instanceUid":"u"}"#,
        )
        .unwrap();
        let cert = ClientCertificate {
            pem_certificate_chain: vec![
                inter.client_cert_pem(&key().spki_der, minutes),
                inter.pem(),
                root.pem(),
            ],
            ca_cert: Some(root.pem()),
        };
        (info, cert)
    }

    fn token(expiry: Option<SystemTime>) -> Token {
        Token {
            secret: Secret::new("login".into()),
            expiry,
        }
    }

    fn build(
        info: InstanceConnectionInfo,
        cert: ClientCertificate,
        login: Token,
    ) -> Result<ConnectionInfo, Error> {
        connection_info(
            &uri(),
            true,
            info,
            cert,
            key(),
            login,
            SystemTime::now(),
            "ua",
        )
    }

    #[test]
    fn assembles_addresses_chain_and_exchange() {
        let root = Ca::new("root.alloydb");
        let inter = root.intermediate("client.alloydb");
        let (info, cert) = answers(&root, &inter, 60);
        let c = build(info, cert, token(None)).unwrap();
        assert_eq!(c.addresses.private, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(c.addresses.public, Some("34.1.2.3".parse().unwrap()));
        assert_eq!(
            c.target(IpType::Psc, &uri()).unwrap(),
            Target::Dns("x.y.us-central1.alloydb-psc.goog".into())
        );
        assert_eq!(c.client_chain.len(), 3);
        assert_eq!(c.trust_anchors, vec![root.der()]);
        assert_eq!(c.identity, ServerIdentity::AddressDialled);
        assert!(c.sni);
        assert_eq!(c.port, 5433);
        let exchange = c.exchange.unwrap();
        assert_eq!(
            exchange.record(),
            ExchangeRecord {
                login_token: Some(Secret::new("login".into())),
                auto_iam: true
            }
        );
        let left = c.expiry.duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(58 * 60), "{left:?}");
    }

    #[test]
    fn the_exchange_tokens_expiry_caps_the_entry() {
        let root = Ca::new("root.alloydb");
        let inter = root.intermediate("client.alloydb");
        let (info, cert) = answers(&root, &inter, 60);
        let soon = SystemTime::now() + Duration::from_secs(600);
        let c = build(info, cert, token(Some(soon))).unwrap();
        assert_eq!(c.expiry, soon);
    }

    #[test]
    fn absent_addresses_are_typed_errors() {
        let root = Ca::new("root.alloydb");
        let inter = root.intermediate("client.alloydb");
        let (_, cert) = answers(&root, &inter, 60);
        let private_only = admin::parse_connection_info(
            br#"{"ipAddress":"10.0.0.2","publicIpAddress":"","pscDnsName":""}"#,
        )
        .unwrap();
        let c = build(private_only, cert, token(None)).unwrap();
        for t in [IpType::Public, IpType::Psc] {
            let e = c.target(t, &uri()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::IpTypeNotAvailable);
            assert_eq!(e.ip_type(), Some(t));
        }
    }

    #[test]
    fn rejects_unusable_answers_with_the_reason() {
        let root = Ca::new("root.alloydb");
        let inter = root.intermediate("client.alloydb");
        let metadata_error = |r: Result<ConnectionInfo, Error>, want: &str| {
            let e = r.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InstanceMetadata, "{want}: {e}");
            assert!(e.message().contains(want), "{e:?} lacks {want:?}");
        };

        let (_, cert) = answers(&root, &inter, 60);
        metadata_error(
            build(InstanceConnectionInfo::default(), cert, token(None)),
            "no supported IP addresses",
        );

        let (mut info, cert) = answers(&root, &inter, 60);
        info.ip_address = Some("10.0.0.300".into());
        metadata_error(build(info, cert, token(None)), "not an IP address");

        let (info, mut cert) = answers(&root, &inter, 60);
        cert.ca_cert = None;
        metadata_error(build(info, cert, token(None)), "without caCert");

        let (info, mut cert) = answers(&root, &inter, 60);
        cert.ca_cert = Some("not pem".into());
        metadata_error(build(info, cert, token(None)), "caCert is not");

        let (info, mut cert) = answers(&root, &inter, 60);
        cert.pem_certificate_chain.clear();
        metadata_error(
            build(info, cert, token(None)),
            "without pemCertificateChain",
        );

        let (info, mut cert) = answers(&root, &inter, 60);
        cert.pem_certificate_chain[1] = "garbage".into();
        metadata_error(build(info, cert, token(None)), "pemCertificateChain[1]");

        let (info, mut cert) = answers(&root, &inter, 60);
        let other = ClientKey::generate().unwrap();
        cert.pem_certificate_chain[0] = inter.client_cert_pem(&other.spki_der, 60);
        metadata_error(build(info, cert, token(None)), "another public key");

        let (info, cert) = answers(&root, &inter, -5);
        metadata_error(build(info, cert, token(None)), "already expired");
    }
}
