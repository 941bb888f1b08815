//! The Cloud SQL Admin API (v1beta4) calls a connect needs, as Google's
//! connectors make them: `connectSettings` and `generateEphemeralCert`.

use serde::{Deserialize, Serialize};

use super::instance_name::InstanceName;
use crate::error::Error;
use crate::google_api::ApiClient;
use crate::http::Request;

/// Google's Admin API endpoint.
pub const DEFAULT_ADMIN_ENDPOINT: &str = "https://sqladmin.googleapis.com";

/// The SQL Admin API.
#[derive(Debug, Clone)]
pub(crate) struct AdminClient(pub ApiClient);

impl AdminClient {
    fn instance_path(name: &InstanceName) -> String {
        format!(
            "sql/v1beta4/projects/{}/instances/{}",
            name.project(),
            name.instance()
        )
    }

    /// `GET …/instances/{i}/connectSettings`.
    pub(crate) fn connect_settings(&self, name: &InstanceName, api_token: &str) -> Request {
        let path = format!("{}/connectSettings", Self::instance_path(name));
        self.0.get(&path, api_token)
    }

    /// `POST …/instances/{i}:generateEphemeralCert` for `public_key_pem`; with a
    /// login token for automatic IAM database authentication.
    pub(crate) fn generate_ephemeral_cert(
        &self,
        name: &InstanceName,
        api_token: &str,
        public_key_pem: &str,
        login_token: Option<&str>,
    ) -> Result<Request, Error> {
        #[derive(Serialize)]
        struct Body<'a> {
            public_key: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            access_token: Option<&'a str>,
        }
        let body = Body {
            public_key: public_key_pem,
            access_token: login_token,
        };
        let path = format!("{}:generateEphemeralCert", Self::instance_path(name));
        self.0.post_json(&path, &body, api_token)
    }
}

/// The fields of `connectSettings` the connector uses (`sql#connectSettings`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConnectSettings {
    pub region: Option<String>,
    pub backend_type: Option<String>,
    pub database_version: Option<String>,
    #[serde(default)]
    pub ip_addresses: Vec<IpMapping>,
    pub server_ca_cert: Option<SslCert>,
    #[serde(default)]
    pub psc_enabled: bool,
    pub dns_name: Option<String>,
    #[serde(default)]
    pub dns_names: Vec<DnsNameMapping>,
    #[serde(default)]
    pub mdx_protocol_support: Vec<String>,
}

/// One `ipAddresses[]` entry.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IpMapping {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub ip_address: Option<String>,
}

/// One `dnsNames[]` entry.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DnsNameMapping {
    pub name: Option<String>,
    pub connection_type: Option<String>,
    pub dns_scope: Option<String>,
}

/// An `sql#sslCert`; only its PEM is used.
#[derive(Debug, Deserialize)]
pub(crate) struct SslCert {
    pub cert: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EphemeralCertResponse {
    ephemeral_cert: Option<SslCert>,
}

/// Parses a `connectSettings` answer (after `check_status`).
pub(crate) fn parse_connect_settings(body: &[u8]) -> Result<ConnectSettings, Error> {
    serde_json::from_slice(body).map_err(|e| {
        Error::instance_metadata(format!("connectSettings is not valid JSON: {e}")).with_source(e)
    })
}

/// The PEM of a `generateEphemeralCert` answer (after `check_status`).
pub(crate) fn parse_ephemeral_cert(body: &[u8]) -> Result<String, Error> {
    let r: EphemeralCertResponse = serde_json::from_slice(body).map_err(|e| {
        Error::instance_metadata(format!("generateEphemeralCert is not valid JSON: {e}"))
            .with_source(e)
    })?;
    r.ephemeral_cert
        .and_then(|c| c.cert)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            Error::instance_metadata("generateEphemeralCert answered without ephemeralCert.cert")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> InstanceName {
        InstanceName::parse("example.com:proj:us-central1:db").unwrap()
    }

    fn client() -> AdminClient {
        AdminClient(ApiClient::new(
            "http://127.0.0.1:9/",
            "ua/1".into(),
            Some("quota-p".into()),
        ))
    }

    #[test]
    fn builds_googles_paths_and_headers() {
        let r = client().connect_settings(&name(), "tok");
        assert_eq!(
            r.url,
            "http://127.0.0.1:9/sql/v1beta4/projects/example.com:proj/instances/db/connectSettings"
        );
        assert!(r
            .headers
            .contains(&("authorization".into(), "Bearer tok".into())));
        assert!(r
            .headers
            .contains(&("x-goog-user-project".into(), "quota-p".into())));
        assert!(r.headers.contains(&("user-agent".into(), "ua/1".into())));

        let r = client()
            .generate_ephemeral_cert(&name(), "tok", "PEM", Some("login"))
            .unwrap();
        assert_eq!(
            r.url,
            "http://127.0.0.1:9/sql/v1beta4/projects/example.com:proj/instances/db:generateEphemeralCert"
        );
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"public_key": "PEM", "access_token": "login"})
        );
        let r = client()
            .generate_ephemeral_cert(&name(), "t", "PEM", None)
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body, serde_json::json!({"public_key": "PEM"}));
    }

    #[test]
    fn parses_connect_settings_as_google_sends_them() {
        let s = parse_connect_settings(br#"{
            "kind": "sql#connectSettings",
            "serverCaCert": {"kind": "sql#sslCert", "cert": "PEM", "certSerialNumber": "0"},
            "ipAddresses": [{"type": "PRIMARY", "ipAddress": "1.2.3.4"}, {"type": "PRIVATE", "ipAddress": "10.0.0.2"}],
            "region": "us-central1", "databaseVersion": "POSTGRES_15", "backendType": "SECOND_GEN",
            "dnsNames": [{"name": "a.b.us-central1.sql.goog.", "connectionType": "PUBLIC", "dnsScope": "INSTANCE"}],
            "pscEnabled": true, "serverCaMode": "GOOGLE_MANAGED_CAS_CA", "somethingNew": 1
        }"#).unwrap();
        assert_eq!(s.region.as_deref(), Some("us-central1"));
        assert_eq!(s.ip_addresses.len(), 2);
        assert_eq!(s.server_ca_cert.unwrap().cert.as_deref(), Some("PEM"));
        assert!(s.psc_enabled);
        assert_eq!(s.dns_names[0].connection_type.as_deref(), Some("PUBLIC"));

        for bad in [&b"{\"region\": 5}"[..], b"<html>"] {
            let e = parse_connect_settings(bad).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::InstanceMetadata);
        }
    }

    #[test]
    fn parses_the_ephemeral_cert() {
        assert_eq!(
            parse_ephemeral_cert(br#"{"ephemeralCert":{"kind":"sql#sslCert","cert":"PEM"}}"#)
                .unwrap(),
            "PEM"
        );
        for bad in [
            &b"{}"[..],
            br#"{"ephemeralCert":{}}"#,
            br#"{"ephemeralCert":{"cert":""}}"#,
            b"[]",
        ] {
            let e = parse_ephemeral_cert(bad).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::InstanceMetadata);
        }
    }
}
