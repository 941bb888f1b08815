//! Per-method call counters, read and reset through the control endpoints so tests can
//! assert how often a connector called Google (e.g. that it caches and refreshes).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{json, Value};

/// An Admin API method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminMethod {
    /// `GET .../connectSettings`.
    ConnectSettings,
    /// `POST ...:generateEphemeralCert`.
    GenerateEphemeralCert,
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

    /// Counts one Admin API call for `instance_key` (`project:instance`).
    pub fn record_admin(&self, method: AdminMethod, instance_key: &str) {
        let mut c = self.lock();
        let map = match method {
            AdminMethod::ConnectSettings => &mut c.connect_settings,
            AdminMethod::GenerateEphemeralCert => &mut c.generate_ephemeral_cert,
        };
        *map.entry(instance_key.to_string()).or_default() += 1;
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
        assert_eq!(
            calls.snapshot(),
            json!({"connectSettings":{"p:i":2},"generateEphemeralCert":{"p:j":1},
                   "token":{"jwt-bearer":1,"refresh_token":0,"metadata":1},
                   "mdx":{"p:i":3},"mdxClientProtocolType":{"p:i":["TCP","UDS"]},
                   "proxyConnections":{"127.0.0.9":1}})
        );
        calls.reset();
        assert_eq!(
            calls.snapshot(),
            json!({"connectSettings":{},"generateEphemeralCert":{},
                   "token":{"jwt-bearer":0,"refresh_token":0,"metadata":0},
                   "mdx":{},"mdxClientProtocolType":{},"proxyConnections":{}})
        );
    }
}
