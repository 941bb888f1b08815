//! The AlloyDB Admin API calls the connectors make (spec §3), under `/v1alpha/`, `/v1beta/`
//! and `/v1/`, as REST/JSON with camelCase fields: `GET …/instances/I/connectionInfo` and
//! `POST …/clusters/C:generateClientCertificate`. Served by the same HTTP server as the
//! Cloud SQL Admin API; errors use the newer Google shape (`code`, `message`, `status`,
//! `details`).

use std::time::Duration;

use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use super::certs::{decode_public_key, issue_client_cert};
use super::instance::{AlloyDbInstance, Instances};
use super::spec::{cluster_parent, valid_id, valid_project};
use crate::admin::{bearer, caller, parse_duration, path_segments, prelude, respond};
use crate::calls::ApiMethod;
use crate::errors::GoogleError;
use crate::state::AppState;
use crate::tamper::{Issue, Tamper};
use crate::tokens::SCOPE_CLOUD_PLATFORM;

/// `certDuration` when the request has none (the connectors ask for this anyway).
pub const DEFAULT_CERT_DURATION: Duration = Duration::from_secs(3600);
/// The shortest client certificate issued. Google documents 1 h to 24 h and treats the
/// value as a hint; the emulator honours shorter ones down to this, so tests can reach a
/// connector's "refresh now" path (under 4 minutes left) without waiting an hour.
pub const MIN_CERT_DURATION: Duration = Duration::from_secs(60);
/// The longest client certificate issued.
pub const MAX_CERT_DURATION: Duration = Duration::from_secs(24 * 3600);

/// An AlloyDB Admin API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// `v1alpha` (the Go connector's).
    V1Alpha,
    /// `v1beta` (the Python connector's).
    V1Beta,
    /// `v1`, whose ConnectionInfo has no `pscDnsName`.
    V1,
}

impl ApiVersion {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "v1alpha" => Some(Self::V1Alpha),
            "v1beta" => Some(Self::V1Beta),
            "v1" => Some(Self::V1),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::V1Alpha => "v1alpha",
            Self::V1Beta => "v1beta",
            Self::V1 => "v1",
        }
    }
}

/// A parsed AlloyDB Admin API path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The API version in the path.
    pub version: ApiVersion,
    /// [`ApiMethod::ConnectionInfo`] or [`ApiMethod::GenerateClientCertificate`].
    pub method: ApiMethod,
    /// Percent-decoded project (may be domain-scoped).
    pub project: String,
    /// Region.
    pub region: String,
    /// Cluster id.
    pub cluster: String,
    /// Instance id (`connectionInfo` only).
    pub instance: Option<String>,
}

impl Route {
    /// `projects/P/locations/R/clusters/C`.
    pub fn cluster_parent(&self) -> String {
        cluster_parent(&self.project, &self.region, &self.cluster)
    }

    /// The resource the call is about: the instance URI or the cluster.
    pub fn resource(&self) -> String {
        match &self.instance {
            Some(i) => format!("{}/instances/{i}", self.cluster_parent()),
            None => self.cluster_parent(),
        }
    }

    /// The gRPC method name Google reports in error details.
    fn rpc_method(&self) -> String {
        let rpc = match self.method {
            ApiMethod::ConnectionInfo => "GetConnectionInfo",
            _ => "GenerateClientCertificate",
        };
        format!(
            "google.cloud.alloydb.{}.AlloyDBAdmin.{rpc}",
            self.version.as_str()
        )
    }

    /// The IAM permission the call needs.
    fn permission(&self) -> &'static str {
        match self.method {
            ApiMethod::ConnectionInfo => "alloydb.instances.connect",
            _ => "alloydb.clusters.generateClientCertificate",
        }
    }
}

/// Parses `/{v}/projects/P/locations/R/clusters/C/instances/I/connectionInfo` and
/// `/{v}/projects/P/locations/R/clusters/C:generateClientCertificate`, `{v}` one of
/// `v1alpha`, `v1beta`, `v1`. The query string must already be gone; empty segments (from
/// a trailing `/` on the configured endpoint) are ignored; segments are percent-decoded.
pub fn parse_path(path: &str) -> Option<Route> {
    let segs = path_segments(path)?;
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let (version, rest) = segs.split_first()?;
    let version = ApiVersion::parse(version)?;
    let (p, r, c, i, method) = match rest {
        ["projects", p, "locations", r, "clusters", c, "instances", i, "connectionInfo"] => {
            (*p, *r, *c, Some(*i), ApiMethod::ConnectionInfo)
        }
        ["projects", p, "locations", r, "clusters", c] => {
            let c = c.strip_suffix(":generateClientCertificate")?;
            (*p, *r, c, None, ApiMethod::GenerateClientCertificate)
        }
        _ => return None,
    };
    if !valid_project(p) || !valid_id(r) || !valid_id(c) || !i.is_none_or(valid_id) {
        return None;
    }
    Some(Route {
        version,
        method,
        project: p.to_string(),
        region: r.to_string(),
        cluster: c.to_string(),
        instance: i.map(str::to_string),
    })
}

/// 401: no bearer token, or one the emulator did not issue or that has expired.
fn unauthenticated(route: &Route, missing: bool) -> GoogleError {
    GoogleError::unauthenticated_modern(missing, route.method.service(), &route.rpc_method())
}

/// 403: the token lacks the cloud-platform scope.
fn insufficient_scopes(route: &Route) -> GoogleError {
    GoogleError::insufficient_scopes_modern(route.method.service(), &route.rpc_method())
}

/// 403: a project the emulator does not know (Google cannot tell "no access" from "no such
/// project" either).
fn permission_denied(route: &Route) -> GoogleError {
    let resource = route.resource();
    GoogleError::new(
        403,
        format!(
            "Permission '{}' denied on resource '//alloydb.googleapis.com/{resource}' (or it \
             may not exist).",
            route.permission()
        ),
        "forbidden",
        "PERMISSION_DENIED",
    )
    .modern()
    .with_detail(json!({
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "IAM_PERMISSION_DENIED",
        "domain": "alloydb.googleapis.com",
        "metadata": {"permission": route.permission(), "resource": resource},
    }))
}

/// 404 naming `resource`.
fn not_found(resource: &str) -> GoogleError {
    GoogleError::new(
        404,
        format!("Resource '{resource}' was not found"),
        "notFound",
        "NOT_FOUND",
    )
    .modern()
    .with_detail(json!({
        "@type": "type.googleapis.com/google.rpc.ResourceInfo",
        "resourceName": resource,
    }))
}

fn invalid_argument(message: impl Into<String>) -> GoogleError {
    GoogleError::invalid_argument(message).modern()
}

/// Serves one AlloyDB Admin API call on `route`.
pub async fn handle(
    state: &AppState,
    instances: &Instances,
    method: &Method,
    route: Route,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let want = match route.method {
        ApiMethod::ConnectionInfo => Method::GET,
        _ => Method::POST,
    };
    if method != want {
        let path = format!("/{}/{}", route.version.as_str(), route.resource());
        return GoogleError::route_not_found(method.as_str(), &path)
            .modern()
            .into_response();
    }
    let key = route.resource();
    if let Some(fault) = prelude(state, route.method, &key).await {
        return fault.modern().into_response();
    }
    let tamper = state.tampering.take(route.method);
    let issue = tamper.as_ref().map_or(Issue::Normal, Tamper::issue);
    let result = answer(state, instances, &route, headers, body, issue);
    respond(route.method, result, tamper)
}

/// The answer to `route`; `issue` says how a test wants the certificate broken.
fn answer(
    state: &AppState,
    instances: &Instances,
    route: &Route,
    headers: &HeaderMap,
    body: &[u8],
    issue: Issue,
) -> Result<Value, GoogleError> {
    let token = bearer(headers).ok_or_else(|| unauthenticated(route, true))?;
    let token = caller(state, token, route.method).ok_or_else(|| unauthenticated(route, false))?;
    if !token.has_scope(SCOPE_CLOUD_PLATFORM) {
        return Err(insufficient_scopes(route));
    }
    if !state.projects.contains(&route.project) {
        return Err(permission_denied(route));
    }
    let parent = route.cluster_parent();
    let Some(cluster) = instances.cluster_ca(&parent) else {
        return Err(not_found(&parent));
    };
    match route.method {
        ApiMethod::ConnectionInfo => {
            let uri = route.resource();
            let inst = instances.get(&uri).ok_or_else(|| not_found(&uri))?;
            Ok(connection_info_body(inst, route.version))
        }
        _ => {
            let req = CertRequest::parse(body)?;
            if let Some(p) = req.parent.as_deref().filter(|p| !p.is_empty()) {
                if p != parent {
                    return Err(invalid_argument(format!(
                        "parent {p:?} in the request body does not match the cluster in the \
                         URL, {parent:?}"
                    )));
                }
            }
            let public_key =
                match (req.public_key.as_deref(), req.pem_csr.as_deref()) {
                    (Some(k), _) if !k.trim().is_empty() => k,
                    (_, Some(csr)) if !csr.trim().is_empty() => return Err(invalid_argument(
                        "pemCsr is deprecated and not supported by this emulator; send publicKey",
                    )),
                    _ => return Err(invalid_argument("publicKey is required")),
                };
            let key = decode_public_key(public_key).map_err(invalid_argument)?;
            let requested =
                match req.cert_duration.as_deref() {
                    None => None,
                    Some(d) => Some(parse_duration(d).map_err(|e| {
                        invalid_argument(format!("invalid certDuration {d:?}: {e}"))
                    })?),
                };
            let duration = client_cert_duration(requested, state.cert_lifetime);
            let now = OffsetDateTime::now_utc();
            let (key, issued_at, not_after) = issue
                .apply(key, now, now + duration)
                .map_err(GoogleError::internal)?;
            let ca = cluster.as_ref();
            let cert =
                issue_client_cert(ca, &key, issued_at, not_after).map_err(GoogleError::internal)?;
            let root = &ca.root.cert.pem;
            Ok(json!({
                "pemCertificateChain": [cert.pem, ca.intermediate.cert.pem, root],
                "caCert": root,
            }))
        }
    }
}

/// The `ConnectionInfo` of `inst`: camelCase, absent fields omitted (proto3 JSON), no
/// `pscDnsName` in `v1`, whose message lacks it.
pub fn connection_info_body(inst: &AlloyDbInstance, version: ApiVersion) -> Value {
    let mut body = json!({
        "name": format!("{}/connectionInfo", inst.uri()),
        "ipAddress": inst.private_ip.to_string(),
        "instanceUid": inst.uid,
    });
    if let Some(ip) = inst.public_ip {
        body["publicIpAddress"] = json!(ip.to_string());
    }
    if let (Some(psc), false) = (&inst.psc, version == ApiVersion::V1) {
        body["pscDnsName"] = json!(psc.dns_name);
    }
    body
}

/// `GenerateClientCertificateRequest`. Proto3 JSON parsers accept both the camelCase and
/// the original field names.
#[derive(Debug, Default, Deserialize)]
struct CertRequest {
    parent: Option<String>,
    #[serde(rename = "publicKey", alias = "public_key")]
    public_key: Option<String>,
    #[serde(rename = "certDuration", alias = "cert_duration")]
    cert_duration: Option<String>,
    #[serde(rename = "pemCsr", alias = "pem_csr")]
    pem_csr: Option<String>,
    #[serde(rename = "requestId", alias = "request_id")]
    #[allow(dead_code)] // Accepted, as Google does; retries need no deduplication here.
    request_id: Option<String>,
    #[serde(rename = "useMetadataExchange", alias = "use_metadata_exchange")]
    #[allow(dead_code)] // The proxy always runs the exchange.
    use_metadata_exchange: Option<bool>,
}

const REQUEST_FIELDS: &[&str] = &[
    "parent",
    "publicKey",
    "public_key",
    "certDuration",
    "cert_duration",
    "pemCsr",
    "pem_csr",
    "requestId",
    "request_id",
    "useMetadataExchange",
    "use_metadata_exchange",
];

impl CertRequest {
    /// Parses the body as Google does: JSON, an object, no unknown fields. An empty body is
    /// an empty request.
    fn parse(body: &[u8]) -> Result<Self, GoogleError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let bad = |e: String| invalid_argument(format!("Invalid JSON payload received. {e}"));
        let value: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
        let Value::Object(map) = &value else {
            return Err(bad("Expected a JSON object.".into()));
        };
        if let Some(unknown) = map.keys().find(|k| !REQUEST_FIELDS.contains(&k.as_str())) {
            return Err(bad(format!(
                "Unknown name \"{unknown}\": Cannot find field."
            )));
        }
        // `null` means absent in proto3 JSON.
        let map: Map<String, Value> = map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        serde_json::from_value(Value::Object(map)).map_err(|e| bad(e.to_string()))
    }
}

/// `d` within [[`MIN_CERT_DURATION`], [`MAX_CERT_DURATION`]].
pub fn clamp_cert_duration(d: Duration) -> Duration {
    d.clamp(MIN_CERT_DURATION, MAX_CERT_DURATION)
}

/// The lifetime of a client certificate: the `certDuration` asked (else
/// [`DEFAULT_CERT_DURATION`]) within Google's bounds, and at most `cap`
/// (`--cert-lifetime-secs`, which may go under [`MIN_CERT_DURATION`]).
pub fn client_cert_duration(requested: Option<Duration>, cap: Option<Duration>) -> Duration {
    let duration = clamp_cert_duration(requested.unwrap_or(DEFAULT_CERT_DURATION));
    cap.map_or(duration, |cap| duration.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(v: ApiVersion, m: ApiMethod, p: &str, c: &str, i: Option<&str>) -> Option<Route> {
        Some(Route {
            version: v,
            method: m,
            project: p.into(),
            region: "us-central1".into(),
            cluster: c.into(),
            instance: i.map(Into::into),
        })
    }

    #[test]
    fn parses_paths() {
        use ApiMethod::{ConnectionInfo as Info, GenerateClientCertificate as Gen};
        use ApiVersion::*;
        assert_eq!(
            parse_path(
                "/v1alpha/projects/p/locations/us-central1/clusters/c/instances/i/connectionInfo"
            ),
            route(V1Alpha, Info, "p", "c", Some("i"))
        );
        assert_eq!(
            parse_path(
                "/v1beta/projects/p/locations/us-central1/clusters/c:generateClientCertificate"
            ),
            route(V1Beta, Gen, "p", "c", None)
        );
        // Domain-scoped projects, raw or percent-encoded; double slashes; v1.
        assert_eq!(
            parse_path("//v1/projects/example.com%3Aproj/locations/us-central1/clusters/c%3AgenerateClientCertificate"),
            route(V1, Gen, "example.com:proj", "c", None)
        );
        assert_eq!(
            parse_path("/v1/projects/example.com:proj/locations/us-central1/clusters/c/instances/i/connectionInfo"),
            route(V1, Info, "example.com:proj", "c", Some("i"))
        );
        let r = route(V1, Info, "p", "c", Some("i")).unwrap();
        assert_eq!(
            r.cluster_parent(),
            "projects/p/locations/us-central1/clusters/c"
        );
        assert_eq!(
            r.resource(),
            "projects/p/locations/us-central1/clusters/c/instances/i"
        );
        for bad in [
            "/v2/projects/p/locations/r/clusters/c/instances/i/connectionInfo",
            "/v1beta/projects/p/locations/r/clusters/c/instances/i",
            "/v1beta/projects/p/locations/r/clusters/c/instances/i/other",
            "/v1beta/projects/p/locations/r/clusters/c:other",
            "/v1beta/projects/p/locations/r/clusters/c",
            "/v1beta/projects/p/locations/r/clusters/c%2Fx:generateClientCertificate",
            "/v1beta/projects/a:b:c/locations/r/clusters/c:generateClientCertificate",
            "/v1beta/projects/p/locations/r/clusters/:generateClientCertificate",
            "/v1beta/projects/p%ff/locations/r/clusters/c:generateClientCertificate",
            "/v1/projects/p/instances/i/connectSettings",
            "/sql/v1beta4/projects/p/instances/i/connectSettings",
        ] {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn clamps_durations() {
        assert_eq!(
            clamp_cert_duration(Duration::from_secs(1)),
            MIN_CERT_DURATION
        );
        assert_eq!(
            clamp_cert_duration(Duration::from_secs(90)),
            Duration::from_secs(90)
        );
        assert_eq!(
            clamp_cert_duration(Duration::from_secs(100_000)),
            MAX_CERT_DURATION
        );
    }

    #[test]
    fn cert_lifetime_caps_the_duration_asked() {
        let s = Duration::from_secs;
        // Without --cert-lifetime-secs: Google's, as before.
        assert_eq!(client_cert_duration(None, None), DEFAULT_CERT_DURATION);
        assert_eq!(client_cert_duration(Some(s(600)), None), s(600));
        assert_eq!(client_cert_duration(Some(s(1)), None), MIN_CERT_DURATION);
        assert_eq!(
            client_cert_duration(Some(s(172_800)), None),
            MAX_CERT_DURATION
        );
        // With it: at most that long, under Google's one-minute floor too; a shorter
        // certDuration still wins.
        assert_eq!(client_cert_duration(None, Some(s(200))), s(200));
        assert_eq!(client_cert_duration(Some(s(3600)), Some(s(200))), s(200));
        assert_eq!(client_cert_duration(Some(s(3600)), Some(s(30))), s(30));
        assert_eq!(client_cert_duration(Some(s(100)), Some(s(200))), s(100));
        assert_eq!(
            client_cert_duration(Some(s(1)), Some(s(200))),
            MIN_CERT_DURATION
        );
        assert_eq!(client_cert_duration(None, Some(s(7200))), s(3600));
    }

    #[test]
    fn parses_requests_like_proto_json() {
        let r = CertRequest::parse(
            br#"{"parent":"projects/p/locations/r/clusters/c","certDuration":"3600s",
                "publicKey":"k","useMetadataExchange":true,"requestId":"x"}"#,
        )
        .unwrap();
        assert_eq!(r.public_key.as_deref(), Some("k"));
        assert_eq!(r.cert_duration.as_deref(), Some("3600s"));
        let r = CertRequest::parse(br#"{"public_key":"k","cert_duration":null}"#).unwrap();
        assert_eq!(r.public_key.as_deref(), Some("k"));
        assert_eq!(r.cert_duration, None);
        assert!(CertRequest::parse(b"").unwrap().public_key.is_none());
        for bad in [
            &br#"{"publicKey":"k","colour":1}"#[..],
            b"[]",
            b"{",
            br#"{"certDuration":3600}"#,
        ] {
            let e = CertRequest::parse(bad).unwrap_err();
            assert_eq!((e.code, e.status), (400, "INVALID_ARGUMENT"));
            assert!(
                e.message.starts_with("Invalid JSON payload received."),
                "{}",
                e.message
            );
        }
        let e = CertRequest::parse(br#"{"colour":1}"#).unwrap_err();
        assert!(
            e.message.contains("Unknown name \"colour\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn error_shapes() {
        let r = route(
            ApiVersion::V1Beta,
            ApiMethod::ConnectionInfo,
            "p",
            "c",
            Some("i"),
        )
        .unwrap();
        let body = not_found(&r.resource()).body();
        assert_eq!(body["error"]["code"], 404);
        assert_eq!(body["error"]["status"], "NOT_FOUND");
        assert_eq!(
            body["error"]["message"],
            "Resource 'projects/p/locations/us-central1/clusters/c/instances/i' was not found"
        );
        assert!(body["error"].get("errors").is_none());
        let body = insufficient_scopes(&r).body();
        assert_eq!(body["error"]["code"], 403);
        assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
        assert_eq!(
            body["error"]["details"][0]["reason"],
            "ACCESS_TOKEN_SCOPE_INSUFFICIENT"
        );
        assert_eq!(
            body["error"]["details"][0]["metadata"]["method"],
            "google.cloud.alloydb.v1beta.AlloyDBAdmin.GetConnectionInfo"
        );
        let body = unauthenticated(&r, true).body();
        assert_eq!(
            (
                body["error"]["code"].as_u64(),
                body["error"]["status"].as_str()
            ),
            (Some(401), Some("UNAUTHENTICATED"))
        );
        let body = permission_denied(&r).body();
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Permission 'alloydb.instances.connect' denied on resource"));
    }
}
