//! The Cloud SQL Admin API (v1beta4, and the same handlers under `/v1/`):
//! `connectSettings`, `generateEphemeralCert` and `resolveConnectSettings` (an instance's
//! connection name from one of its DNS names).

use std::time::SystemTime;

use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::certs::{issue_ephemeral, parse_public_key_pem};
use super::instance::{Instance, Instances};
use crate::admin::{bearer, caller, path_segments, prelude, respond};
use crate::calls::ApiMethod;
use crate::certs::CertInfo;
use crate::errors::GoogleError;
use crate::iam::IamBinding;
use crate::state::AppState;
use crate::tamper::{Issue, Tamper};
use crate::tokens::{SCOPE_CLOUD_PLATFORM, SCOPE_SQLSERVICE_ADMIN, SCOPE_SQLSERVICE_LOGIN};

/// A parsed Admin API path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminRoute {
    /// Which method.
    pub method: ApiMethod,
    /// Percent-decoded project (may be domain-scoped, `example.com:proj`).
    pub project: String,
    /// Percent-decoded instance name.
    pub instance: String,
}

/// Parses `/sql/v1beta4/projects/{p}/instances/{i}/connectSettings` and
/// `/sql/v1beta4/projects/{p}/instances/{i}:generateEphemeralCert` (or the `/v1/` forms).
/// The query string must already be gone. Empty segments (from a trailing `/` on the
/// configured endpoint) are ignored.
pub fn parse_admin_path(path: &str) -> Option<AdminRoute> {
    let segs = api_segments(path)?;
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let (project, instance, method) = match segs.as_slice() {
        ["projects", p, "instances", i, "connectSettings"] => (*p, *i, ApiMethod::ConnectSettings),
        ["projects", p, "instances", i] => {
            let i = i.strip_suffix(":generateEphemeralCert")?;
            (*p, i, ApiMethod::GenerateEphemeralCert)
        }
        _ => return None,
    };
    if project.is_empty() || instance.is_empty() || instance.contains(':') {
        return None;
    }
    Some(AdminRoute {
        method,
        project: project.to_string(),
        instance: instance.to_string(),
    })
}

/// The percent-decoded segments of an Admin API path after `sql/v1beta4/` (or `v1/`).
fn api_segments(path: &str) -> Option<Vec<String>> {
    let path = path.trim_start_matches('/');
    let rest = path
        .strip_prefix("sql/v1beta4/")
        .or_else(|| path.strip_prefix("v1/"))?;
    path_segments(rest)
}

/// A parsed `resolveConnectSettings` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveRoute {
    /// The location (region) in the path.
    pub region: String,
    /// The DNS name asked about, as given (Google's connectors send a trailing dot).
    pub dns_name: String,
}

/// Parses `/sql/v1beta4/locations/{region}/dns/{dnsName}:resolveConnectSettings` (or the
/// `/v1/` form), the query string gone.
pub fn parse_resolve_path(path: &str) -> Option<ResolveRoute> {
    let segs = api_segments(path)?;
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let ["locations", region, "dns", name] = segs.as_slice() else {
        return None;
    };
    let name = name.strip_suffix(":resolveConnectSettings")?;
    if region.is_empty() || name.is_empty() {
        return None;
    }
    Some(ResolveRoute {
        region: region.to_string(),
        dns_name: name.to_string(),
    })
}

/// The Admin API method `path` calls, if it is a Cloud SQL one.
pub fn api_method(path: &str) -> Option<ApiMethod> {
    parse_resolve_path(path)
        .map(|_| ApiMethod::ResolveConnectSettings)
        .or_else(|| parse_admin_path(path).map(|r| r.method))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// `sql#sslCert` JSON for `cert`.
fn ssl_cert(cert: &CertInfo, pem: &str, instance: &str) -> Value {
    json!({
        "kind": "sql#sslCert",
        "certSerialNumber": cert.serial,
        "cert": pem,
        "commonName": cert.common_name,
        "sha1Fingerprint": cert.sha1,
        "instance": instance,
        "createTime": rfc3339(cert.not_before),
        "expirationTime": rfc3339(cert.not_after),
    })
}

/// The `connectSettings` body for `inst`.
pub fn connect_settings_body(inst: &Instance) -> Value {
    let certs = &inst.certs;
    let mut body = json!({
        "kind": "sql#connectSettings",
        "serverCaCert": ssl_cert(&certs.server_ca, &certs.server_ca_pem, &inst.spec.name),
        "ipAddresses": ip_addresses(inst),
        "region": inst.spec.region,
        "databaseVersion": inst.spec.database_version,
        "backendType": "SECOND_GEN",
        "pscEnabled": inst.psc.is_some(),
        "serverCaMode": inst.spec.ca_mode.server_ca_mode(),
    });
    if inst.spec.mdx {
        // Makes Go connectors (and the Auth Proxy) send a metadata exchange (spec §6.6).
        body["mdxProtocolSupport"] = json!(["CLIENT_PROTOCOL_TYPE"]);
    }
    let mut dns_names = Vec::new();
    if let Some(dns) = &inst.dns_name {
        body["dnsName"] = json!(dns);
        dns_names.push(json!({"name": dns, "connectionType": "PUBLIC", "dnsScope": "INSTANCE"}));
    }
    if let Some(psc) = &inst.psc {
        dns_names.push(json!({
            "name": psc.dns_name,
            "connectionType": "PRIVATE_SERVICE_CONNECT",
            "dnsScope": "INSTANCE",
        }));
    }
    if !dns_names.is_empty() {
        body["dnsNames"] = Value::Array(dns_names);
    }
    body
}

/// `ipAddresses`: the public IP as `PRIMARY`, then the private one, as Google
/// lists them.
fn ip_addresses(inst: &Instance) -> Value {
    let mut list = vec![json!({"type": "PRIMARY", "ipAddress": inst.public_ip.to_string()})];
    if let Some(ip) = inst.private_ip {
        list.push(json!({"type": "PRIVATE", "ipAddress": ip.to_string()}));
    }
    Value::Array(list)
}

/// Serves one Cloud SQL Admin API call on `path` (the query string gone).
pub async fn handle(
    state: &AppState,
    instances: &Instances,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if let Some(route) = parse_resolve_path(path) {
        if method != Method::GET {
            return GoogleError::route_not_found(method.as_str(), path).into_response();
        }
        return resolve_connect_settings(state, instances, &route, headers).await;
    }
    let route = match parse_admin_path(path) {
        Some(r)
            if (r.method == ApiMethod::ConnectSettings && method == Method::GET)
                || (r.method == ApiMethod::GenerateEphemeralCert && method == Method::POST) =>
        {
            r
        }
        _ => return GoogleError::route_not_found(method.as_str(), path).into_response(),
    };
    let key = format!("{}:{}", route.project, route.instance);
    if let Some(fault) = prelude(state, route.method, &key).await {
        return fault.into_response();
    }
    let tamper = state.tampering.take(route.method);

    if let Err(e) = authorize(state, headers, route.method) {
        return e.into_response();
    }
    if !state.projects.contains(&route.project) {
        return GoogleError::not_authorized().into_response();
    }
    let Some(inst) = instances.get(&key) else {
        return GoogleError::instance_not_found().into_response();
    };
    let issue = tamper.as_ref().map_or(Issue::Normal, Tamper::issue);
    let result = match route.method {
        ApiMethod::ConnectSettings => Ok(connect_settings_body(inst)),
        ApiMethod::GenerateEphemeralCert => generate_ephemeral_cert(state, inst, body, issue),
        // parse_admin_path yields only the two Cloud SQL methods.
        ApiMethod::ConnectionInfo
        | ApiMethod::GenerateClientCertificate
        | ApiMethod::Sts
        | ApiMethod::GenerateAccessToken
        | ApiMethod::ResolveConnectSettings => {
            Err(GoogleError::route_not_found(method.as_str(), path))
        }
    };
    respond(route.method, result, tamper)
}

/// What every Cloud SQL Admin API call checks of its caller: a valid bearer token (401)
/// with an Admin API scope (403).
fn authorize(state: &AppState, headers: &HeaderMap, method: ApiMethod) -> Result<(), GoogleError> {
    let token = bearer(headers)
        .and_then(|t| caller(state, t, method))
        .ok_or_else(GoogleError::unauthenticated)?;
    if !token.has_scope(SCOPE_SQLSERVICE_ADMIN) && !token.has_scope(SCOPE_CLOUD_PLATFORM) {
        return Err(GoogleError::insufficient_scopes());
    }
    Ok(())
}

/// `resolveConnectSettings`: `{"kind":"sql#connectSettings","connectionName":"p:r:i"}` of
/// the instance in `route.region` one of whose DNS names (`dnsNames[].name`) is
/// `route.dns_name`; Google's 404 for an unknown name or another region. Counted, faulted
/// and tampered with as the other methods are.
async fn resolve_connect_settings(
    state: &AppState,
    instances: &Instances,
    route: &ResolveRoute,
    headers: &HeaderMap,
) -> Response {
    let api = ApiMethod::ResolveConnectSettings;
    let name = route.dns_name.strip_suffix('.').unwrap_or(&route.dns_name);
    if let Some(fault) = prelude(state, api, &name.to_ascii_lowercase()).await {
        return fault.into_response();
    }
    let tamper = state.tampering.take(api);
    let result = authorize(state, headers, api).and_then(|()| {
        let inst = instances
            .by_dns_name(&route.dns_name, &route.region)
            .ok_or_else(GoogleError::instance_not_found)?;
        Ok(json!({
            "kind": "sql#connectSettings",
            "connectionName": inst.spec.connection_name(),
        }))
    });
    respond(api, result, tamper)
}

/// How long Google's ephemeral certificates last (an IAM login token's expiry may cut
/// one shorter).
pub const EPHEMERAL_CERT_LIFETIME: Duration = Duration::hours(1);

/// The lifetime of the certificates `generateEphemeralCert` issues: `configured`
/// (`--cert-lifetime-secs`), else [`EPHEMERAL_CERT_LIFETIME`].
pub fn ephemeral_cert_lifetime(configured: Option<std::time::Duration>) -> Duration {
    configured
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or(EPHEMERAL_CERT_LIFETIME)
}

/// `GenerateEphemeralCertRequest`; Google accepts both the proto and the JSON field names.
#[derive(Debug, Deserialize)]
struct GenerateRequest {
    #[serde(alias = "publicKey")]
    public_key: Option<String>,
    #[serde(alias = "accessToken")]
    access_token: Option<String>,
}

/// Issues the certificate; `issue` says how a test wants it broken.
fn generate_ephemeral_cert(
    state: &AppState,
    inst: &Instance,
    body: &[u8],
    issue: Issue,
) -> Result<Value, GoogleError> {
    let req: GenerateRequest = serde_json::from_slice(body).map_err(|e| {
        GoogleError::invalid_argument(format!("Invalid JSON payload received. {e}"))
    })?;
    let public_key = req
        .public_key
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| GoogleError::invalid_argument("Missing public key."))?;
    let key = parse_public_key_pem(&public_key).map_err(|_| {
        GoogleError::invalid_argument(
            "Provided public key was in an invalid or unsupported format.",
        )
    })?;

    let now = OffsetDateTime::now_utc();
    let mut not_after = now + ephemeral_cert_lifetime(state.cert_lifetime);
    let mut binding = None;
    if let Some(login) = req.access_token.filter(|t| !t.is_empty()) {
        let info = state
            .tokens
            .lookup_valid(&login)
            .filter(|t| t.has_scope(SCOPE_SQLSERVICE_LOGIN))
            .ok_or_else(|| GoogleError::invalid_argument("Invalid access token"))?;
        let token_expiry = info
            .expiry
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .and_then(|d| OffsetDateTime::from_unix_timestamp(d.as_secs() as i64).ok())
            .unwrap_or(now);
        not_after = not_after.min(token_expiry);
        binding = Some(IamBinding {
            principal: info.principal,
            token_expiry: info.expiry,
        });
    }
    let (key, issued_at, not_after) = issue
        .apply(key, now, not_after)
        .map_err(GoogleError::internal)?;
    let cert = issue_ephemeral(&inst.certs.client_ca, &key, issued_at, not_after)
        .map_err(GoogleError::internal)?;
    if let Some(b) = binding {
        state.ephemeral_principals.bind(cert.serial.clone(), b);
    }
    Ok(json!({"ephemeralCert": ssl_cert(&cert, &cert.pem, &inst.spec.name)}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(m: ApiMethod, p: &str, i: &str) -> Option<AdminRoute> {
        Some(AdminRoute {
            method: m,
            project: p.into(),
            instance: i.into(),
        })
    }

    #[test]
    fn ephemeral_certs_last_an_hour_or_the_configured_lifetime() {
        assert_eq!(ephemeral_cert_lifetime(None), Duration::hours(1));
        assert_eq!(
            ephemeral_cert_lifetime(Some(std::time::Duration::from_secs(200))),
            Duration::seconds(200)
        );
        assert_eq!(
            ephemeral_cert_lifetime(Some(std::time::Duration::from_secs(86_400))),
            Duration::hours(24)
        );
    }

    #[test]
    fn parses_resolve_paths() {
        let want = |r: &str, n: &str| {
            Some(ResolveRoute {
                region: r.into(),
                dns_name: n.into(),
            })
        };
        assert_eq!(
            parse_resolve_path(
                "/sql/v1beta4/locations/us-central1/dns/a.b.us-central1.sql-psc.goog.:resolveConnectSettings"
            ),
            want("us-central1", "a.b.us-central1.sql-psc.goog.")
        );
        assert_eq!(
            parse_resolve_path("/v1/locations/r/dns/x.example%3AresolveConnectSettings"),
            want("r", "x.example")
        );
        for bad in [
            "/sql/v1beta4/locations/r/dns/x",
            "/sql/v1beta4/locations/r/dns/:resolveConnectSettings",
            "/sql/v1beta4/locations//dns/x:resolveConnectSettings",
            "/sql/v1beta4/projects/p/instances/i/connectSettings",
        ] {
            assert_eq!(parse_resolve_path(bad), None, "{bad}");
        }
        assert_eq!(
            api_method("/sql/v1beta4/locations/r/dns/x:resolveConnectSettings"),
            Some(ApiMethod::ResolveConnectSettings)
        );
        assert_eq!(
            api_method("/sql/v1beta4/projects/p/instances/i/connectSettings"),
            Some(ApiMethod::ConnectSettings)
        );
    }

    #[test]
    fn parses_paths() {
        use ApiMethod::*;
        assert_eq!(
            parse_admin_path("/sql/v1beta4/projects/p/instances/i/connectSettings"),
            route(ConnectSettings, "p", "i")
        );
        assert_eq!(
            parse_admin_path("/v1/projects/p/instances/i:generateEphemeralCert"),
            route(GenerateEphemeralCert, "p", "i")
        );
        // Domain-scoped projects, raw or percent-encoded.
        assert_eq!(
            parse_admin_path("/sql/v1beta4/projects/example.com:proj/instances/db/connectSettings"),
            route(ConnectSettings, "example.com:proj", "db")
        );
        assert_eq!(
            parse_admin_path(
                "/sql/v1beta4/projects/example.com%3Aproj/instances/db%3AgenerateEphemeralCert"
            ),
            route(GenerateEphemeralCert, "example.com:proj", "db")
        );
        // A trailing slash on the configured endpoint gives a double slash.
        assert_eq!(
            parse_admin_path("//sql/v1beta4/projects/p/instances/i/connectSettings"),
            route(ConnectSettings, "p", "i")
        );
        for bad in [
            "/sql/v1beta4/projects/p/instances/i",
            "/sql/v1beta4/projects/p/instances/i/other",
            "/sql/v1/projects/p/instances/i/connectSettings",
            "/sql/v1beta4/projects/p/instances/i:other",
            "/token",
            "/sql/v1beta4/projects/p%ff/instances/i/connectSettings",
        ] {
            assert_eq!(parse_admin_path(bad), None, "{bad}");
        }
    }
}
