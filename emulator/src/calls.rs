//! Per-method call counters, read and reset through the control endpoints so tests can
//! assert how often a connector called Google (e.g. that it caches and refreshes).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{json, Value};

/// An Admin API method (Cloud SQL or AlloyDB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminMethod {
    /// Cloud SQL `GET .../connectSettings`.
    ConnectSettings,
    /// Cloud SQL `POST ...:generateEphemeralCert`.
    GenerateEphemeralCert,
    /// AlloyDB `GET .../instances/I/connectionInfo`.
    ConnectionInfo,
    /// AlloyDB `POST .../clusters/C:generateClientCertificate`.
    GenerateClientCertificate,
}

impl AdminMethod {
    /// Every method, for parsing.
    pub const ALL: [Self; 4] = [
        Self::ConnectSettings,
        Self::GenerateEphemeralCert,
        Self::ConnectionInfo,
        Self::GenerateClientCertificate,
    ];

    /// The name the counters and the fault endpoint use (the REST method's name).
    pub fn name(self) -> &'static str {
        match self {
            Self::ConnectSettings => "connectSettings",
            Self::GenerateEphemeralCert => "generateEphemeralCert",
            Self::ConnectionInfo => "connectionInfo",
            Self::GenerateClientCertificate => "generateClientCertificate",
        }
    }

    /// The method called `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The Google service the method belongs to.
    pub fn service(self) -> &'static str {
        match self {
            Self::ConnectSettings | Self::GenerateEphemeralCert => "sqladmin.googleapis.com",
            Self::ConnectionInfo | Self::GenerateClientCertificate => "alloydb.googleapis.com",
        }
    }
}

/// A way of getting an access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Service-account JWT assertion at the token endpoint.
    JwtBearer,
    /// Authorized-user refresh token at the token endpoint.
    RefreshToken,
    /// Metadata server token request.
    Metadata,
}

impl Grant {
    fn key(self) -> &'static str {
        match self {
            Self::JwtBearer => "jwt-bearer",
            Self::RefreshToken => "refresh_token",
            Self::Metadata => "metadata",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    connect_settings: BTreeMap<String, u64>,
    generate_ephemeral_cert: BTreeMap<String, u64>,
    token: BTreeMap<&'static str, u64>,
    mdx: BTreeMap<String, u64>,
    mdx_client_protocol_types: BTreeMap<String, Vec<String>>,
    proxy_connections: BTreeMap<String, u64>,
    connection_info: BTreeMap<String, u64>,
    generate_client_certificate: BTreeMap<String, u64>,
    alloydb_mdx: BTreeMap<String, u64>,
    alloydb_mdx_auth_types: BTreeMap<String, Vec<String>>,
}

/// Counts every request received, failed ones included.
#[derive(Debug, Default)]
pub struct Calls {
    counts: Mutex<Counts>,
}

impl Calls {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one Admin API call for `key`: `project:instance` for Cloud SQL, the instance
    /// URI for `connectionInfo`, the cluster (`projects/P/locations/R/clusters/C`) for
    /// `generateClientCertificate`.
    pub fn record_admin(&self, method: AdminMethod, key: &str) {
        let mut c = self.lock();
        let map = match method {
            AdminMethod::ConnectSettings => &mut c.connect_settings,
            AdminMethod::GenerateEphemeralCert => &mut c.generate_ephemeral_cert,
            AdminMethod::ConnectionInfo => &mut c.connection_info,
            AdminMethod::GenerateClientCertificate => &mut c.generate_client_certificate,
        };
        *map.entry(key.to_string()).or_default() += 1;
    }

    /// Counts one token request.
    pub fn record_token(&self, grant: Grant) {
        *self.lock().token.entry(grant.key()).or_default() += 1;
    }

    /// Counts one metadata exchange at an instance's proxy, and notes the client protocol
    /// type of a well-formed request (`None` for a rejected one), in connection order.
    pub fn record_mdx(&self, instance_key: &str, client_protocol_type: Option<&str>) {
        let mut c = self.lock();
        *c.mdx.entry(instance_key.to_string()).or_default() += 1;
        if let Some(t) = client_protocol_type {
            c.mdx_client_protocol_types
                .entry(instance_key.to_string())
                .or_default()
                .push(t.to_string());
        }
    }

    /// Counts one AlloyDB metadata exchange at the proxy of instance `uri`, and notes the
    /// `auth_type` of a well-formed request (`None` for a bad or missing one), in
    /// connection order.
    pub fn record_alloydb_mdx(&self, uri: &str, auth_type: Option<&str>) {
        let mut c = self.lock();
        *c.alloydb_mdx.entry(uri.to_string()).or_default() += 1;
        if let Some(t) = auth_type {
            c.alloydb_mdx_auth_types
                .entry(uri.to_string())
                .or_default()
                .push(t.to_string());
        }
    }

    /// Counts a TCP connection accepted by a proxy listening on `addr` (so
    /// tests can tell which of an instance's addresses a client dialled).
    pub fn record_proxy_connection(&self, addr: &str) {
        *self
            .lock()
            .proxy_connections
            .entry(addr.to_string())
            .or_default() += 1;
    }

    /// The counters as served by `GET /emulator/v1/calls`.
    pub fn snapshot(&self) -> Value {
        let c = self.lock();
        let mut token = json!({"jwt-bearer": 0, "refresh_token": 0, "metadata": 0});
        for (k, v) in &c.token {
            token[*k] = json!(v);
        }
        json!({
            "connectSettings": c.connect_settings,
            "generateEphemeralCert": c.generate_ephemeral_cert,
            "token": token,
            "mdx": c.mdx,
            "mdxClientProtocolType": c.mdx_client_protocol_types,
            "proxyConnections": c.proxy_connections,
            "connectionInfo": c.connection_info,
            "generateClientCertificate": c.generate_client_certificate,
            "alloydbMdx": c.alloydb_mdx,
            "alloydbMdxAuthType": c.alloydb_mdx_auth_types,
        })
    }

    /// Zeroes every counter.
    pub fn reset(&self) {
        *self.lock() = Counts::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_resets() {
        let calls = Calls::default();
        calls.record_admin(AdminMethod::ConnectSettings, "p:i");
        calls.record_admin(AdminMethod::ConnectSettings, "p:i");
        calls.record_admin(AdminMethod::GenerateEphemeralCert, "p:j");
        calls.record_token(Grant::JwtBearer);
        calls.record_token(Grant::Metadata);
        calls.record_mdx("p:i", Some("TCP"));
        calls.record_mdx("p:i", None);
        calls.record_mdx("p:i", Some("UDS"));
        calls.record_proxy_connection("127.0.0.9");
        let uri = "projects/p/locations/r/clusters/c/instances/i";
        calls.record_admin(AdminMethod::ConnectionInfo, uri);
        calls.record_admin(
            AdminMethod::GenerateClientCertificate,
            "projects/p/locations/r/clusters/c",
        );
        calls.record_alloydb_mdx(uri, Some("DB_NATIVE"));
        calls.record_alloydb_mdx(uri, None);
        calls.record_alloydb_mdx(uri, Some("AUTO_IAM"));
        assert_eq!(
            calls.snapshot(),
            json!({"connectSettings":{"p:i":2},"generateEphemeralCert":{"p:j":1},
                   "token":{"jwt-bearer":1,"refresh_token":0,"metadata":1},
                   "mdx":{"p:i":3},"mdxClientProtocolType":{"p:i":["TCP","UDS"]},
                   "proxyConnections":{"127.0.0.9":1},
                   "connectionInfo":{uri:1},
                   "generateClientCertificate":{"projects/p/locations/r/clusters/c":1},
                   "alloydbMdx":{uri:3},
                   "alloydbMdxAuthType":{uri:["DB_NATIVE","AUTO_IAM"]}})
        );
        calls.reset();
        assert_eq!(
            calls.snapshot(),
            json!({"connectSettings":{},"generateEphemeralCert":{},
                   "token":{"jwt-bearer":0,"refresh_token":0,"metadata":0},
                   "mdx":{},"mdxClientProtocolType":{},"proxyConnections":{},
                   "connectionInfo":{},"generateClientCertificate":{},
                   "alloydbMdx":{},"alloydbMdxAuthType":{}})
        );
    }

    #[test]
    fn method_names_round_trip() {
        for m in AdminMethod::ALL {
            assert_eq!(AdminMethod::parse(m.name()), Some(m));
        }
        assert_eq!(AdminMethod::parse("getConnectionInfo"), None);
        assert_eq!(
            AdminMethod::ConnectionInfo.service(),
            "alloydb.googleapis.com"
        );
    }
}
