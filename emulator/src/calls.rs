//! Per-method call counters, read and reset through the control endpoints so tests can
//! assert how often a connector called Google (e.g. that it caches and refreshes), and
//! each proxy's traffic: connections, handshakes, bytes from clients, connections open.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// A method of a Google API the emulator serves: the Cloud SQL and AlloyDB Admin APIs, STS
/// and IAM Credentials. Counters, faults and broken answers are kept per method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiMethod {
    /// Cloud SQL `GET .../connectSettings`.
    ConnectSettings,
    /// Cloud SQL `POST ...:generateEphemeralCert`.
    GenerateEphemeralCert,
    /// AlloyDB `GET .../instances/I/connectionInfo`.
    ConnectionInfo,
    /// AlloyDB `POST .../clusters/C:generateClientCertificate`.
    GenerateClientCertificate,
    /// STS `POST /v1/token` (token exchange).
    Sts,
    /// IAM Credentials `POST /v1/projects/-/serviceAccounts/SA:generateAccessToken`.
    GenerateAccessToken,
    /// Cloud SQL `GET .../locations/R/dns/NAME:resolveConnectSettings`.
    ResolveConnectSettings,
}

impl ApiMethod {
    /// Every method, for parsing.
    pub const ALL: [Self; 7] = [
        Self::ConnectSettings,
        Self::GenerateEphemeralCert,
        Self::ConnectionInfo,
        Self::GenerateClientCertificate,
        Self::Sts,
        Self::GenerateAccessToken,
        Self::ResolveConnectSettings,
    ];

    /// The name the counters and the fault endpoint use (the REST method's name).
    pub fn name(self) -> &'static str {
        match self {
            Self::ConnectSettings => "connectSettings",
            Self::GenerateEphemeralCert => "generateEphemeralCert",
            Self::ConnectionInfo => "connectionInfo",
            Self::GenerateClientCertificate => "generateClientCertificate",
            Self::Sts => "sts",
            Self::GenerateAccessToken => "generateAccessToken",
            Self::ResolveConnectSettings => "resolveConnectSettings",
        }
    }

    /// The method called `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The Google service the method belongs to.
    pub fn service(self) -> &'static str {
        match self {
            Self::ConnectSettings | Self::GenerateEphemeralCert | Self::ResolveConnectSettings => {
                "sqladmin.googleapis.com"
            }
            Self::ConnectionInfo | Self::GenerateClientCertificate => "alloydb.googleapis.com",
            Self::Sts => "sts.googleapis.com",
            Self::GenerateAccessToken => "iamcredentials.googleapis.com",
        }
    }

    /// True for the APIs that answer errors in Google's newer shape (no `errors` list):
    /// all but the Cloud SQL Admin API.
    pub fn modern_errors(self) -> bool {
        !matches!(
            self,
            Self::ConnectSettings | Self::GenerateEphemeralCert | Self::ResolveConnectSettings
        )
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
    connection_info: BTreeMap<String, u64>,
    generate_client_certificate: BTreeMap<String, u64>,
    alloydb_mdx: BTreeMap<String, u64>,
    alloydb_mdx_auth_types: BTreeMap<String, Vec<String>>,
    sts: BTreeMap<String, u64>,
    generate_access_token: BTreeMap<String, u64>,
    resolve_connect_settings: BTreeMap<String, u64>,
    dns_query: BTreeMap<String, u64>,
    dns_query_types: BTreeMap<String, Vec<String>>,
}

/// What one proxy listener (one address) saw. Counters are zeroed by a reset; the number
/// of open connections is a state, not a count, and is not.
#[derive(Debug, Default)]
pub struct ProxyStats {
    accepted: AtomicU64,
    handshakes: AtomicU64,
    client_bytes: AtomicU64,
    open: AtomicU64,
}

impl ProxyStats {
    /// Counts an accepted TCP connection, open until the returned guard drops.
    pub fn accepted(self: &Arc<Self>) -> OpenConnection {
        self.accepted.fetch_add(1, Ordering::SeqCst);
        self.open.fetch_add(1, Ordering::SeqCst);
        OpenConnection(self.clone())
    }

    /// Counts a completed TLS handshake.
    pub fn handshake_done(&self) {
        self.handshakes.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts `n` application bytes received from a client after its handshake.
    pub fn received(&self, n: u64) {
        self.client_bytes.fetch_add(n, Ordering::SeqCst);
    }

    fn reset(&self) {
        for c in [&self.accepted, &self.handshakes, &self.client_bytes] {
            c.store(0, Ordering::SeqCst);
        }
    }
}

/// A proxy connection that is open (see [`ProxyStats::accepted`]).
#[derive(Debug)]
pub struct OpenConnection(Arc<ProxyStats>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts every request received, failed ones included.
#[derive(Debug, Default)]
pub struct Calls {
    counts: Mutex<Counts>,
    proxies: Mutex<BTreeMap<String, Arc<ProxyStats>>>,
}

impl Calls {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one API call for `key`: `project:instance` for Cloud SQL, the instance URI
    /// for `connectionInfo`, the cluster (`projects/P/locations/R/clusters/C`) for
    /// `generateClientCertificate`, the `audience` asked for (`sts`), the service account
    /// in the path (`generateAccessToken`), the DNS name asked about, lowercase without
    /// the trailing dot (`resolveConnectSettings`).
    pub fn record_call(&self, method: ApiMethod, key: &str) {
        let mut c = self.lock();
        let map = match method {
            ApiMethod::ConnectSettings => &mut c.connect_settings,
            ApiMethod::GenerateEphemeralCert => &mut c.generate_ephemeral_cert,
            ApiMethod::ConnectionInfo => &mut c.connection_info,
            ApiMethod::GenerateClientCertificate => &mut c.generate_client_certificate,
            ApiMethod::Sts => &mut c.sts,
            ApiMethod::GenerateAccessToken => &mut c.generate_access_token,
            ApiMethod::ResolveConnectSettings => &mut c.resolve_connect_settings,
        };
        *map.entry(key.to_string()).or_default() += 1;
    }

    /// Counts one DNS-over-HTTPS query for `name` (lowercase, no trailing dot) of type
    /// `qtype` (`TXT`, `CNAME`, …), noting the types in query order.
    pub fn record_dns_query(&self, name: &str, qtype: &str) {
        let mut c = self.lock();
        *c.dns_query.entry(name.to_string()).or_default() += 1;
        c.dns_query_types
            .entry(name.to_string())
            .or_default()
            .push(qtype.to_string());
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

    /// The traffic of the proxy listening on `addr` (so tests can tell which of an
    /// instance's addresses a client dialled, and what it sent).
    pub fn proxy(&self, addr: &str) -> Arc<ProxyStats> {
        let mut proxies = self.proxies.lock().unwrap_or_else(|e| e.into_inner());
        proxies.entry(addr.to_string()).or_default().clone()
    }

    /// One figure of every proxy, by address; zeros left out, as for other counters.
    fn per_proxy(&self, figure: impl Fn(&ProxyStats) -> &AtomicU64) -> BTreeMap<String, u64> {
        let proxies = self.proxies.lock().unwrap_or_else(|e| e.into_inner());
        proxies
            .iter()
            .map(|(addr, stats)| (addr.clone(), figure(stats).load(Ordering::SeqCst)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// The counters as served by `GET /emulator/v1/calls`.
    pub fn snapshot(&self) -> Value {
        let proxy_connections = self.per_proxy(|p| &p.accepted);
        let proxy_handshakes = self.per_proxy(|p| &p.handshakes);
        let proxy_client_bytes = self.per_proxy(|p| &p.client_bytes);
        let proxy_open = self.per_proxy(|p| &p.open);
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
            "proxyConnections": proxy_connections,
            "proxyHandshakes": proxy_handshakes,
            "proxyClientBytes": proxy_client_bytes,
            "proxyOpenConnections": proxy_open,
            "connectionInfo": c.connection_info,
            "generateClientCertificate": c.generate_client_certificate,
            "alloydbMdx": c.alloydb_mdx,
            "alloydbMdxAuthType": c.alloydb_mdx_auth_types,
            "sts": c.sts,
            "generateAccessToken": c.generate_access_token,
            "resolveConnectSettings": c.resolve_connect_settings,
            "dnsQuery": c.dns_query,
            "dnsQueryType": c.dns_query_types,
        })
    }

    /// Zeroes every counter.
    pub fn reset(&self) {
        *self.lock() = Counts::default();
        let proxies = self.proxies.lock().unwrap_or_else(|e| e.into_inner());
        proxies.values().for_each(|p| p.reset());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_resets() {
        let calls = Calls::default();
        calls.record_call(ApiMethod::ConnectSettings, "p:i");
        calls.record_call(ApiMethod::ConnectSettings, "p:i");
        calls.record_call(ApiMethod::GenerateEphemeralCert, "p:j");
        calls.record_token(Grant::JwtBearer);
        calls.record_token(Grant::Metadata);
        calls.record_mdx("p:i", Some("TCP"));
        calls.record_mdx("p:i", None);
        calls.record_mdx("p:i", Some("UDS"));
        let proxy = calls.proxy("127.0.0.9");
        let open = proxy.accepted();
        proxy.handshake_done();
        proxy.received(12);
        calls.proxy("127.0.0.9").received(30);
        let closed = calls.proxy("127.0.0.8").accepted();
        drop(closed);
        let uri = "projects/p/locations/r/clusters/c/instances/i";
        calls.record_call(ApiMethod::ConnectionInfo, uri);
        calls.record_call(
            ApiMethod::GenerateClientCertificate,
            "projects/p/locations/r/clusters/c",
        );
        calls.record_alloydb_mdx(uri, Some("DB_NATIVE"));
        calls.record_alloydb_mdx(uri, None);
        calls.record_alloydb_mdx(uri, Some("AUTO_IAM"));
        calls.record_call(ApiMethod::Sts, "//iam.googleapis.com/aud");
        calls.record_call(
            ApiMethod::GenerateAccessToken,
            "t@p.iam.gserviceaccount.com",
        );
        calls.record_call(
            ApiMethod::GenerateAccessToken,
            "t@p.iam.gserviceaccount.com",
        );
        calls.record_call(ApiMethod::ResolveConnectSettings, "a.b.r.sql-psc.goog");
        calls.record_dns_query("orders.example.com", "TXT");
        calls.record_dns_query("orders.example.com", "CNAME");
        assert_eq!(
            calls.snapshot(),
            json!({"connectSettings":{"p:i":2},"generateEphemeralCert":{"p:j":1},
                   "token":{"jwt-bearer":1,"refresh_token":0,"metadata":1},
                   "mdx":{"p:i":3},"mdxClientProtocolType":{"p:i":["TCP","UDS"]},
                   "proxyConnections":{"127.0.0.8":1,"127.0.0.9":1},
                   "proxyHandshakes":{"127.0.0.9":1},
                   "proxyClientBytes":{"127.0.0.9":42},
                   "proxyOpenConnections":{"127.0.0.9":1},
                   "connectionInfo":{uri:1},
                   "generateClientCertificate":{"projects/p/locations/r/clusters/c":1},
                   "alloydbMdx":{uri:3},
                   "alloydbMdxAuthType":{uri:["DB_NATIVE","AUTO_IAM"]},
                   "sts":{"//iam.googleapis.com/aud":1},
                   "generateAccessToken":{"t@p.iam.gserviceaccount.com":2},
                   "resolveConnectSettings":{"a.b.r.sql-psc.goog":1},
                   "dnsQuery":{"orders.example.com":2},
                   "dnsQueryType":{"orders.example.com":["TXT","CNAME"]}})
        );
        calls.reset();
        assert_eq!(
            calls.snapshot(),
            json!({"connectSettings":{},"generateEphemeralCert":{},
                   "token":{"jwt-bearer":0,"refresh_token":0,"metadata":0},
                   "mdx":{},"mdxClientProtocolType":{},"proxyConnections":{},
                   "proxyHandshakes":{},"proxyClientBytes":{},
                   "proxyOpenConnections":{"127.0.0.9":1},
                   "connectionInfo":{},"generateClientCertificate":{},
                   "alloydbMdx":{},"alloydbMdxAuthType":{},
                   "sts":{},"generateAccessToken":{},
                   "resolveConnectSettings":{},"dnsQuery":{},"dnsQueryType":{}})
        );
        drop(open);
        assert_eq!(calls.snapshot()["proxyOpenConnections"], json!({}));
    }

    #[test]
    fn method_names_round_trip() {
        for m in ApiMethod::ALL {
            assert_eq!(ApiMethod::parse(m.name()), Some(m));
        }
        assert_eq!(ApiMethod::parse("getConnectionInfo"), None);
        assert_eq!(
            ApiMethod::ConnectionInfo.service(),
            "alloydb.googleapis.com"
        );
        assert_eq!(ApiMethod::parse("sts"), Some(ApiMethod::Sts));
        assert!(ApiMethod::GenerateAccessToken.modern_errors());
        assert!(!ApiMethod::ConnectSettings.modern_errors());
    }
}
