//! The AlloyDB Admin API (v1beta, REST) calls a connect needs, as Google's
//! connectors make them: `connectionInfo` of the instance and
//! `generateClientCertificate` of its cluster.
//!
//! v1beta, not v1: v1's ConnectionInfo has no `pscDnsName`. The real API
//! answers in camelCase; Go's own mock in snake_case, which Go's protojson
//! accepts too, so both spellings are read.

use serde::{Deserialize, Serialize};

use super::instance_uri::AlloyDbInstanceUri;
use crate::error::Error;
use crate::google_api::ApiClient;
use crate::http::Request;

/// Google's AlloyDB Admin API endpoint.
pub const DEFAULT_ALLOYDB_ADMIN_ENDPOINT: &str = "https://alloydb.googleapis.com";

/// The certificate lifetime asked for (a hint; Google's connectors ask 1 h).
const CERT_DURATION: &str = "3600s";

/// The AlloyDB Admin API.
#[derive(Debug, Clone)]
pub(crate) struct AdminClient(pub ApiClient);

impl AdminClient {
    /// `GET v1beta/projects/P/locations/R/clusters/C/instances/I/connectionInfo`.
    pub(crate) fn connection_info(&self, uri: &AlloyDbInstanceUri, api_token: &str) -> Request {
        self.0
            .get(&format!("v1beta/{uri}/connectionInfo"), api_token)
    }

    /// `POST v1beta/projects/P/locations/R/clusters/C:generateClientCertificate`
    /// for `public_key_pem`, asking for a certificate usable with the
    /// metadata exchange.
    pub(crate) fn generate_client_certificate(
        &self,
        uri: &AlloyDbInstanceUri,
        api_token: &str,
        public_key_pem: &str,
    ) -> Result<Request, Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            parent: &'a str,
            public_key: &'a str,
            cert_duration: &'a str,
            use_metadata_exchange: bool,
        }
        let parent = uri.cluster_path();
        let body = Body {
            parent: &parent,
            public_key: public_key_pem,
            cert_duration: CERT_DURATION,
            use_metadata_exchange: true,
        };
        self.0.post_json(
            &format!("v1beta/{parent}:generateClientCertificate"),
            &body,
            api_token,
        )
    }
}

/// The fields of `ConnectionInfo` the connector uses. Empty strings mean
/// absent, as in Go.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InstanceConnectionInfo {
    /// The private (PSA) IP.
    #[serde(alias = "ip_address")]
    pub ip_address: Option<String>,
    #[serde(alias = "public_ip_address")]
    pub public_ip_address: Option<String>,
    /// With a trailing dot.
    #[serde(alias = "psc_dns_name")]
    pub psc_dns_name: Option<String>,
}

/// A `GenerateClientCertificateResponse`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClientCertificate {
    /// `[client, intermediate, root]`, each a PEM.
    #[serde(default, alias = "pem_certificate_chain")]
    pub pem_certificate_chain: Vec<String>,
    /// The cluster CA, the only trust anchor.
    #[serde(alias = "ca_cert")]
    pub ca_cert: Option<String>,
}

/// Parses a `connectionInfo` answer.
pub(crate) fn parse_connection_info(body: &[u8]) -> Result<InstanceConnectionInfo, Error> {
    serde_json::from_slice(body).map_err(|e| {
        Error::instance_metadata(format!("connectionInfo is not valid JSON: {e}")).with_source(e)
    })
}

/// Parses a `generateClientCertificate` answer.
pub(crate) fn parse_client_certificate(body: &[u8]) -> Result<ClientCertificate, Error> {
    serde_json::from_slice(body).map_err(|e| {
        Error::instance_metadata(format!("generateClientCertificate is not valid JSON: {e}"))
            .with_source(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri() -> AlloyDbInstanceUri {
        AlloyDbInstanceUri::parse(
            "projects/example.com:p/locations/us-central1/clusters/c/instances/i",
        )
        .unwrap()
    }

    fn client() -> AdminClient {
        AdminClient(ApiClient::new("http://127.0.0.1:9", "ua/1".into(), None))
    }

    #[test]
    fn builds_googles_paths_and_bodies() {
        let r = client().connection_info(&uri(), "tok");
        assert_eq!(r.method, crate::http::Method::Get);
        assert_eq!(
            r.url,
            "http://127.0.0.1:9/v1beta/projects/example.com:p/locations/us-central1/clusters/c/instances/i/connectionInfo"
        );
        assert!(r
            .headers
            .contains(&("authorization".into(), "Bearer tok".into())));

        let r = client()
            .generate_client_certificate(&uri(), "tok", "PEM")
            .unwrap();
        assert_eq!(
            r.url,
            "http://127.0.0.1:9/v1beta/projects/example.com:p/locations/us-central1/clusters/c:generateClientCertificate"
        );
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "parent": "projects/example.com:p/locations/us-central1/clusters/c",
                "publicKey": "PEM",
                "certDuration": "3600s",
                "useMetadataExchange": true
            })
        );
    }

    #[test]
    fn reads_camel_and_snake_case() {
        let camel = parse_connection_info(
            br#"{"name":"x/connectionInfo","ipAddress":"10.0.0.2","publicIpAddress":"34.1.2.3",
                "pscDnsName":"abc.alloydb-psc.goog.","instanceUid":"u","pemCertificateChain":[],"new":1}"#,
        )
        .unwrap();
        let snake = parse_connection_info(
            br#"{"ip_address":"10.0.0.2","public_ip_address":"34.1.2.3","psc_dns_name":"abc.alloydb-psc.goog."}"#,
        )
        .unwrap();
        for c in [camel, snake] {
            assert_eq!(c.ip_address.as_deref(), Some("10.0.0.2"));
            assert_eq!(c.public_ip_address.as_deref(), Some("34.1.2.3"));
            assert_eq!(c.psc_dns_name.as_deref(), Some("abc.alloydb-psc.goog."));
        }

        let camel =
            parse_client_certificate(br#"{"pemCertificateChain":["a","b"],"caCert":"c"}"#).unwrap();
        let snake =
            parse_client_certificate(br#"{"pem_certificate_chain":["a","b"],"ca_cert":"c"}"#)
                .unwrap();
        for c in [camel, snake] {
            assert_eq!(c.pem_certificate_chain, ["a", "b"]);
            assert_eq!(c.ca_cert.as_deref(), Some("c"));
        }
    }

    #[test]
    fn malformed_answers_are_metadata_errors() {
        for bad in [&b"<html>"[..], br#"{"ipAddress": 5}"#, b"[]"] {
            let e = parse_connection_info(bad).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::InstanceMetadata);
        }
        for bad in [&b"{"[..], br#"{"pemCertificateChain": "x"}"#] {
            let e = parse_client_certificate(bad).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::InstanceMetadata);
        }
    }
}
