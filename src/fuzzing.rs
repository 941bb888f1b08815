//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`):
//! thin calls into the code that reads untrusted input — instance names, the
//! Admin APIs' and OAuth's answers, certificates, the metadata exchange, and
//! entries read back from a host store. Hidden, unstable, and absent without
//! the feature; not part of the connector's API.
//!
//! Every entry point runs at the fixed clock [`now`], so a crash reproduces
//! whenever it is replayed.

use std::io::Read;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::RootCertStore;

use crate::alloydb::instance_uri::AlloyDbInstanceUri;
use crate::cache::stored::{self, Entry, Refusals};
use crate::certs::{self, CertInfo};
use crate::cloudsql::instance_name::InstanceName;
use crate::connection_info::{ConnectionInfo, ServerIdentity};
use crate::credentials::impersonated::Impersonation;
use crate::credentials::source::{Endpoints, Source};
use crate::credentials::token::{parse_token_response, Token};
use crate::credentials::Credentials;
use crate::error::Error;
use crate::http::Response;
use crate::ip_type::IpType;
use crate::key::ClientKey;
use crate::mdx::{self as exchange, MetadataExchange};
use crate::secret::Secret;
use crate::service::Service;
use crate::verify::{check_identity, ClientAuthProbe, ServerVerifier};
use crate::{alloydb, cloudsql, google_api, tls};

/// The user agent the targets' exchanges send.
const USER_AGENT: &str = "fuzz";

/// The fuzz clock: 2026-01-01T00:00:00Z.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

/// The connector's RSA key for the targets: a fixed one, so that seed
/// certificates can be issued for it.
pub struct FuzzKey(Arc<ClientKey>);

impl FuzzKey {
    /// The key from a PEM (PKCS#8 or PKCS#1, at least 2048 bits).
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        ClientKey::from_pem(pem).map(|k| Self(Arc::new(k)))
    }

    /// Its SubjectPublicKeyInfo, DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.0.spki_der
    }
}

/// What an accepted refresh came to, for the targets' invariants.
#[derive(Debug)]
pub struct Accepted {
    /// Trust anchors (server CA certificates).
    pub trust_anchors: usize,
    /// Client certificate chain length.
    pub client_chain: usize,
    /// When the entry expires.
    pub expiry: SystemTime,
    /// Whether `tls::TlsConfig::new` took the certificates.
    pub tls_config: Result<(), Error>,
    /// The entry as a host store keeps it (unsealed).
    pub stored: Vec<u8>,
}

/// A Cloud SQL refresh from the two answers: `connectSettings` and
/// `generateEphemeralCert` bodies, checked for `name`, then the TLS config
/// and each dial target built from the result.
pub fn cloudsql_refresh(
    name: &InstanceName,
    iam: bool,
    connect_settings: &[u8],
    ephemeral_cert: &[u8],
    key: &FuzzKey,
) -> Result<Accepted, Error> {
    let settings = cloudsql::admin::parse_connect_settings(connect_settings)?;
    let cert = cloudsql::admin::parse_ephemeral_cert(ephemeral_cert)?;
    let info = cloudsql::refresh::connection_info(
        name,
        iam,
        settings,
        &cert,
        &key.0,
        None,
        now(),
        USER_AGENT,
    )?;
    Ok(accepted(info, key, name))
}

/// An AlloyDB refresh from `connectionInfo` and `generateClientCertificate`
/// bodies, then the TLS config and each dial target.
pub fn alloydb_refresh(
    uri: &AlloyDbInstanceUri,
    iam: bool,
    connection_info: &[u8],
    client_certificate: &[u8],
    key: &FuzzKey,
) -> Result<Accepted, Error> {
    let info = alloydb::admin::parse_connection_info(connection_info)?;
    let cert = alloydb::admin::parse_client_certificate(client_certificate)?;
    let login = Token {
        secret: Secret::new("fuzz-login-token".into()),
        expiry: None,
    };
    let info =
        alloydb::refresh::connection_info(uri, iam, info, cert, &key.0, login, now(), USER_AGENT)?;
    Ok(accepted(info, key, uri))
}

fn accepted(info: ConnectionInfo, key: &FuzzKey, instance: &impl std::fmt::Display) -> Accepted {
    let tls_config = tls::TlsConfig::new(&info, &key.0, instance).map(drop);
    for ip_type in [IpType::Public, IpType::Private, IpType::Psc] {
        if let Ok(target) = info.target(ip_type, instance) {
            let _ = tls::server_name(&target);
        }
    }
    let stored = seal_entry(&Entry::encode(&info.facts(), &key.0.spki_der));
    Accepted {
        trust_anchors: info.trust_anchors.len(),
        client_chain: info.client_chain.len(),
        expiry: info.expiry,
        tls_config,
        stored,
    }
}

/// Where the targets' entries are stored (a value's MAC covers its key).
const STORE_KEY: &str = "gcp-db-connector/v3/fuzz/entry";

fn seal_entry(entry: &Entry) -> Vec<u8> {
    stored::seal(STORE_KEY, entry, None).unwrap_or_default()
}

/// An entry read back from a host store, as a connector for `service` with
/// `key` loads it at [`now`]; the entry sealed anew if it would be used.
/// Also builds the TLS config from it, as a dial would.
fn store_entry_for(service: &dyn Service, bytes: &[u8], key: &FuzzKey) -> Option<Vec<u8>> {
    let entry: Entry = stored::open(STORE_KEY, bytes, None)?;
    let (facts, public_key) = entry.decode(now())?;
    if public_key != key.0.spki_der {
        return None;
    }
    let info = service.plan(facts, USER_AGENT).ok()?;
    let _ = tls::TlsConfig::new(&info, &key.0, &"stored entry");
    Some(seal_entry(&Entry::encode(&info.facts(), &key.0.spki_der)))
}

/// An entry read back from a host store (unsealed), as a connector with
/// `key` loads it at [`now`], for a Cloud SQL instance and else for an
/// AlloyDB one (whose plans differ); `Some` with the entry sealed anew if
/// either would use it. Also builds the TLS config from it, as a dial would.
pub fn store_entry(bytes: &[u8], key: &FuzzKey) -> Option<Vec<u8>> {
    let cloudsql = InstanceName::parse("proj:us-central1:db").ok()?;
    let alloydb =
        AlloyDbInstanceUri::parse("projects/proj/locations/us-central1/clusters/c/instances/i")
            .ok()?;
    store_entry_for(&cloudsql, bytes, key).or_else(|| store_entry_for(&alloydb, bytes, key))
}

/// What a connector makes of a record of the Admin API's refusals read back
/// from a host store (unsealed) at [`now`].
#[derive(Debug)]
pub enum StoredRefusals {
    /// Not a record: ignored.
    Unreadable,
    /// Stamped too far after [`now`] to be believed: ignored.
    FromTheFuture {
        /// Its stamp.
        at: SystemTime,
    },
    /// Believed: refreshes are held back this long, with this error.
    Holds(Duration, String),
}

/// A record of the Admin API's refusals read back from a host store.
pub fn store_refusals(bytes: &[u8]) -> StoredRefusals {
    let Some(r) = stored::open::<Refusals>(STORE_KEY, bytes, None) else {
        return StoredRefusals::Unreadable;
    };
    match r.bucket_at(now()) {
        Some(_) => StoredRefusals::Holds(r.holds(now()).unwrap_or_default(), r.error().to_string()),
        None => StoredRefusals::FromTheFuture {
            at: UNIX_EPOCH
                .checked_add(Duration::from_millis(r.at_unix_ms))
                .unwrap_or(UNIX_EPOCH),
        },
    }
}

/// The token [`admin_api_answer`] says its call was made with.
pub const ADMIN_API_TOKEN: &str = "fuzz-token";

/// Google's error body in an Admin API answer of HTTP `status`, to a call
/// made with [`ADMIN_API_TOKEN`].
pub fn admin_api_answer(status: u16, body: &[u8]) -> Result<(), Error> {
    let resp = Response {
        status,
        body: body.to_vec(),
    };
    google_api::check_status("fuzz call".into(), resp, &[ADMIN_API_TOKEN]).map(drop)
}

/// A token endpoint's (or the metadata server's) answer of HTTP `status`;
/// the token's expiry if it has one.
pub fn token_response(status: u16, body: &[u8]) -> Result<Option<SystemTime>, Error> {
    let resp = Response {
        status,
        body: body.to_vec(),
    };
    parse_token_response(&resp, "https://oauth2.invalid/token", "fuzz", &[]).map(|t| t.expiry)
}

/// A credentials JSON (service account, authorized user, impersonated
/// service account, external account) as a caller or a file hands it in,
/// resolved as a connector would (no call is made).
pub fn credentials_json(json: &str) -> Result<(), Error> {
    Source::resolve(
        Some(&Credentials::Json(json.to_string())),
        &Endpoints::default(),
    )
    .map(drop)
}

/// IAM Credentials' `generateAccessToken` answer of HTTP `status`; the
/// impersonated token's expiry.
pub fn impersonation_response(status: u16, body: &[u8]) -> Result<Option<SystemTime>, Error> {
    let resp = Response {
        status,
        body: body.to_vec(),
    };
    Impersonation::of(
        "https://iamcredentials.invalid",
        "fuzz@p.iam.gserviceaccount.com",
        &[],
    )?
    .token(&resp, &[])
    .map(|t| t.expiry)
}

/// Every certificate of a PEM string (`serverCaCert`, `caCert`, a chain
/// entry, an ephemeral certificate), DER.
pub fn pem_certificates(pem: &str) -> Option<Vec<Vec<u8>>> {
    certs::parse_pem_list(pem).map(|l| l.into_iter().map(|c| c.to_vec()).collect())
}

/// What the connector reads from one certificate.
#[derive(Debug)]
pub struct CertificateFacts {
    /// The subject's CN.
    pub common_name: Option<String>,
    /// The DNS SANs.
    pub dns_names: Vec<String>,
    /// The IP SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// NotAfter.
    pub not_after: SystemTime,
    /// The check of an ephemeral certificate for `key` at [`now`].
    pub as_client_cert: Result<SystemTime, String>,
}

/// Decodes a DER certificate as the refresh and the identity check do.
pub fn certificate_facts(der: &[u8], key: &FuzzKey) -> Result<CertificateFacts, String> {
    let info = CertInfo::parse(der)?;
    let _ = info.public_key_der();
    Ok(CertificateFacts {
        common_name: info.common_name(),
        dns_names: info.dns_names(),
        ip_addresses: info.ip_addresses(),
        not_after: info.not_after(),
        as_client_cert: certs::check_client_cert(der, &key.0, now()),
    })
}

/// Whom the server certificate must name.
#[derive(Debug, Clone, Copy)]
pub enum Identity<'a> {
    /// Cloud SQL: the instance's DNS name as a SAN, else the CN.
    CloudSql {
        /// The instance's DNS name.
        dns_name: Option<&'a str>,
        /// `project:instance`.
        common_name: &'a str,
    },
    /// AlloyDB: the address dialled as a SAN.
    Address,
}

impl Identity<'_> {
    fn server_identity(self) -> ServerIdentity {
        match self {
            Self::CloudSql {
                dns_name,
                common_name,
            } => ServerIdentity::DnsNameOrCommonName {
                dns_name: dns_name.map(str::to_string),
                common_name: common_name.to_string(),
            },
            Self::Address => ServerIdentity::AddressDialled,
        }
    }
}

fn server_name(dialled: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(dialled.to_string()).map_err(|e| e.to_string())
}

/// The identity check alone, on any leaf.
pub fn server_identity(leaf: &[u8], expected: Identity<'_>, dialled: &str) -> Result<(), String> {
    check_identity(
        &CertificateDer::from(leaf),
        &expected.server_identity(),
        &server_name(dialled)?,
    )
    .map_err(|e| e.to_string())
}

/// The connector's server certificate verifier at [`now`], as a handshake
/// calls it after the server asked for the client certificate: `leaf` and `intermediates` from the server, `anchors` from the
/// Admin API (those webpki cannot take are left out).
pub fn verify_server(
    anchors: &[&[u8]],
    leaf: &[u8],
    intermediates: &[&[u8]],
    expected: Identity<'_>,
    dialled: &str,
) -> Result<(), String> {
    use rustls::client::danger::ServerCertVerifier;
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(anchors.iter().map(|a| CertificateDer::from(a.to_vec())));
    let provider = rustls_rustcrypto::provider();
    let client_auth = ClientAuthProbe::default();
    client_auth.note();
    let verifier = ServerVerifier::new(
        Arc::new(roots),
        expected.server_identity(),
        provider.signature_verification_algorithms,
        client_auth,
    );
    let intermediates: Vec<_> = intermediates
        .iter()
        .map(|c| CertificateDer::from(*c))
        .collect();
    let now = UnixTime::since_unix_epoch(now().duration_since(UNIX_EPOCH).unwrap_or_default());
    verifier
        .verify_server_cert(
            &CertificateDer::from(leaf),
            &intermediates,
            &server_name(dialled)?,
            &[],
            now,
        )
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Which service's metadata exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mdx {
    /// `CSQLMDEX` framing, `cloud.sql.connector.v1`.
    CloudSql,
    /// Length framing, `google.cloud.alloydb.connectors.v1`.
    AlloyDb,
}

/// A service's exchange and its response codec, as the targets use them.
struct Codec {
    exchange: Box<dyn MetadataExchange>,
    decode: fn(&[u8]) -> Option<(i32, String)>,
    encode: fn(i32, &str) -> Vec<u8>,
}

impl Mdx {
    fn codec(self) -> Codec {
        match self {
            Self::CloudSql => Codec {
                exchange: Box::new(cloudsql::mdx::CloudSqlExchange {
                    user_agent: USER_AGENT.into(),
                }),
                decode: cloudsql::mdx::decode_response,
                encode: cloudsql::mdx::encode_response,
            },
            Self::AlloyDb => Codec {
                exchange: Box::new(alloydb::mdx::AlloyDbExchange {
                    user_agent: USER_AGENT.into(),
                    token: Secret::new("fuzz-token".into()),
                    iam: false,
                }),
                decode: alloydb::mdx::decode_response,
                encode: alloydb::mdx::encode_response,
            },
        }
    }

    /// The response header's length.
    pub fn header_len(self) -> usize {
        self.codec().exchange.header_len()
    }
}

/// Reads and checks a metadata exchange response from `stream`, as a dial
/// does right after the handshake.
pub fn mdx_read_response(mdx: Mdx, stream: &mut impl Read) -> Result<(), Error> {
    exchange::read_response(stream, mdx.codec().exchange.as_ref())
}

/// The body length a response header announces.
pub fn mdx_response_length(mdx: Mdx, header: &[u8]) -> Result<usize, Error> {
    mdx.codec().exchange.body_len(header)
}

/// Decodes a response body into (status code, server message), without
/// judging it.
pub fn mdx_decode(mdx: Mdx, body: &[u8]) -> Option<(i32, String)> {
    (mdx.codec().decode)(body)
}

/// Encodes a response body, as the server-side proxy would.
pub fn mdx_encode(mdx: Mdx, code: i32, message: &str) -> Vec<u8> {
    (mdx.codec().encode)(code, message)
}

/// Judges a response body: `Ok` if the server accepted.
pub fn mdx_check_response(mdx: Mdx, body: &[u8]) -> Result<(), Error> {
    mdx.codec().exchange.check(body)
}

/// The name [`dns_resolution`] resolves.
pub const DNS_NAME: &str = "fuzz.example.com";

/// What [`DNS_NAME`] resolves to when the DoH resolver answers every query
/// with `answer` (and the Admin API, for a CNAME to a Cloud SQL instance DNS
/// name, with it as its body): the instance name, or the error.
pub fn dns_resolution(answer: &[u8]) -> Result<String, Error> {
    use crate::dns::resolve::Resolver;
    use crate::http::{Answered, Pending, Request, Transport};

    struct Same(Vec<u8>);
    impl Transport for Same {
        fn start(&self, _: &Request, _: std::time::Instant) -> Result<Box<dyn Pending>, Error> {
            Ok(Box::new(Answered(Ok(Response {
                status: 200,
                body: self.0.clone(),
            }))))
        }
    }

    let transport = Arc::new(Same(answer.to_vec()));
    let tokens = Arc::new(crate::credentials::TokenSource::new(
        Some(Credentials::AccessToken {
            api_token: ADMIN_API_TOKEN.into(),
            login_token: None,
        }),
        Endpoints::default(),
        transport.clone(),
    ));
    let resolver = Resolver {
        transport,
        url: "https://dns.fuzz/dns-query".into(),
        tokens,
        admin: google_api::ApiClient::new("https://sqladmin.fuzz", USER_AGENT.into(), None),
    };
    let name = crate::dns::DomainName::parse(DNS_NAME).expect("a domain name");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    resolver
        .resolve(&name, deadline)
        .map(|r| r.instance.to_string())
        .map_err(|f| f.error)
}
