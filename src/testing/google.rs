//! A scripted Google for unit tests, as the connector's HTTP transport: the
//! OAuth2 token endpoint, STS and IAM Credentials' generateAccessToken, and
//! the Cloud SQL and AlloyDB Admin API calls of a refresh, at Google's default URLs, answering for the fake instances it
//! was given; Google Public DNS's DoH endpoint answering TXT queries from a
//! table; with call counts and scripted error answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::SubjectPublicKeyInfoDer;
use serde_json::{json, Value};

use super::fake::{FakeInstance, Kind};
use crate::error::Error;
use crate::http::{Answered, Method, Pending, Request, Response, Transport};

/// The scripted Google.
#[derive(Default)]
pub(crate) struct ScriptedGoogle {
    instances: Mutex<Vec<Arc<FakeInstance>>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    calls: HashMap<&'static str, u32>,
    tokens_issued: u32,
    /// Error answers to give, per call: (status, how many more).
    faults: HashMap<&'static str, (u16, u32)>,
    /// The last request of each call that tests look into.
    requests: HashMap<&'static str, Request>,
    /// TXT records and their TTL, per name.
    txt: HashMap<String, (Vec<String>, u32)>,
}

/// Google's STS token endpoint.
const STS: &str = "https://sts.googleapis.com/v1/token";
/// Where IAM Credentials names service accounts.
const IAM_CREDENTIALS: &str =
    "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/";

impl ScriptedGoogle {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Answers for `instance` (in place of an earlier one of its service).
    pub(crate) fn with(self, instance: &Arc<FakeInstance>) -> Self {
        self.instances.lock().unwrap().push(instance.clone());
        self
    }

    /// The last request of `call` (`sts`, `generateAccessToken`).
    pub(crate) fn last_request(&self, call: &str) -> Option<Request> {
        self.state.lock().unwrap().requests.get(call).cloned()
    }

    /// How many times `call` was made (`token`, `sts`, `generateAccessToken`,
    /// `connectSettings`, `generateEphemeralCert`, `connectionInfo`,
    /// `generateClientCertificate`).
    pub(crate) fn calls(&self, call: &str) -> u32 {
        self.state
            .lock()
            .unwrap()
            .calls
            .get(call)
            .copied()
            .unwrap_or(0)
    }

    /// The Admin API calls made so far, of both services.
    pub(crate) fn admin_calls(&self) -> u32 {
        [
            "connectSettings",
            "generateEphemeralCert",
            "connectionInfo",
            "generateClientCertificate",
        ]
        .iter()
        .map(|c| self.calls(c))
        .sum()
    }

    /// The next `count` calls of `call` answer `status` with Google's error
    /// body.
    pub(crate) fn fail(&self, call: &'static str, status: u16, count: u32) {
        self.state
            .lock()
            .unwrap()
            .faults
            .insert(call, (status, count));
    }

    /// An authorized_user credentials file its token endpoint accepts.
    pub(crate) fn authorized_user_json(&self) -> String {
        json!({
            "type": "authorized_user", "client_id": "c", "client_secret": "s",
            "refresh_token": "r"
        })
        .to_string()
    }

    /// `name`'s TXT records are `txt` from now on (none: NXDOMAIN).
    pub(crate) fn set_txt(&self, name: &str, txt: &[&str], ttl: u32) {
        let txt = txt.iter().map(|t| t.to_string()).collect();
        self.state
            .lock()
            .unwrap()
            .txt
            .insert(name.to_string(), (txt, ttl));
    }

    /// A DoH answer from the TXT table, counted as call `dns`.
    fn dns(&self, req: &Request) -> Response {
        use crate::dns::message::build::{answer, Rr};
        let query = simple_dns::Packet::parse(&req.body).expect("a DNS query");
        let name = query.questions[0].qname.to_string();
        let mut state = self.state.lock().unwrap();
        *state.calls.entry("dns").or_default() += 1;
        if let Some((status, left)) = state.faults.get_mut("dns").filter(|(_, left)| *left > 0) {
            *left -= 1;
            return Response {
                status: *status,
                body: b"scripted resolver failure".to_vec(),
            };
        }
        let body = match state.txt.get(&name) {
            Some((txt, ttl)) => {
                let txt: Vec<&str> = txt.iter().map(String::as_str).collect();
                let records: Vec<Rr<'_>> = txt
                    .iter()
                    .map(|t| Rr::Txt(&name, std::slice::from_ref(t), *ttl))
                    .collect();
                answer(&name, simple_dns::RCODE::NoError, &records)
            }
            None => answer(&name, simple_dns::RCODE::NameError, &[]),
        };
        Response { status: 200, body }
    }

    fn answer(&self, req: &Request) -> Result<Response, Error> {
        let url = req.url.as_str();
        if url == crate::config::DEFAULT_DNS_RESOLVER {
            return Ok(self.dns(req));
        }
        let (call, body) = if url == crate::credentials::file::DEFAULT_TOKEN_ENDPOINT {
            let mut state = self.state.lock().unwrap();
            state.tokens_issued += 1;
            let token = format!("ya29.scripted-{}", state.tokens_issued);
            ("token", json!({"access_token": token, "expires_in": 3599}))
        } else if url == STS {
            let mut state = self.state.lock().unwrap();
            state.tokens_issued += 1;
            let token = format!("ya29.federated-{}", state.tokens_issued);
            state.requests.insert("sts", req.clone());
            let answer = json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer",
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"});
            ("sts", answer)
        } else if let Some(rest) = url.strip_prefix(IAM_CREDENTIALS) {
            let target = rest
                .strip_suffix(":generateAccessToken")
                .ok_or_else(|| Error::http(format!("{url}: no such method")))?;
            let body: Value = serde_json::from_slice(&req.body)
                .map_err(|e| Error::http(format!("generateAccessToken body: {e}")))?;
            let scope = body["scope"][0]
                .as_str()
                .unwrap_or("none")
                .rsplit('/')
                .next();
            let mut state = self.state.lock().unwrap();
            state.tokens_issued += 1;
            let token = format!(
                "ya29.{target}-{}-{}",
                scope.unwrap_or(""),
                state.tokens_issued
            );
            state.requests.insert("generateAccessToken", req.clone());
            let answer = json!({"accessToken": token, "expireTime": "2999-01-01T00:00:00Z"});
            ("generateAccessToken", answer)
        } else if let Some(path) = url.strip_prefix(crate::cloudsql::admin::DEFAULT_ADMIN_ENDPOINT)
        {
            self.cloudsql(path, req)?
        } else if let Some(path) =
            url.strip_prefix(crate::alloydb::admin::DEFAULT_ALLOYDB_ADMIN_ENDPOINT)
        {
            self.alloydb(path, req)?
        } else {
            return Err(Error::http(format!("{url}: no such host")));
        };
        let mut state = self.state.lock().unwrap();
        *state.calls.entry(call).or_default() += 1;
        if let Some((status, left)) = state.faults.get_mut(call) {
            if *left > 0 {
                *left -= 1;
                let body = json!({"error": {"code": status, "message": "scripted refusal",
                    "status": if *status == 429 { "RESOURCE_EXHAUSTED" } else { "NOT_FOUND" }}});
                return Ok(Response {
                    status: *status,
                    body: body.to_string().into_bytes(),
                });
            }
        }
        Ok(Response {
            status: 200,
            body: body.to_string().into_bytes(),
        })
    }

    fn instance(&self, kind: fn(Kind) -> bool) -> Result<Arc<FakeInstance>, Error> {
        let instances = self.instances.lock().unwrap();
        instances
            .iter()
            .rev()
            .find(|i| kind(i.kind))
            .cloned()
            .ok_or_else(|| Error::http("the scripted Google knows no such instance"))
    }

    fn cloudsql(&self, path: &str, req: &Request) -> Result<(&'static str, Value), Error> {
        let instance = self.instance(|k| matches!(k, Kind::CloudSql { .. }))?;
        let base = "/sql/v1beta4/projects/proj/instances/db";
        if path == format!("{base}/connectSettings") && req.method == Method::Get {
            let mdx: &[&str] = match instance.kind {
                Kind::CloudSql { mdx: true } => &["CLIENT_PROTOCOL_TYPE"],
                _ => &[],
            };
            return Ok((
                "connectSettings",
                json!({
                    "kind": "sql#connectSettings",
                    "serverCaCert": {"cert": instance.server_ca.pem()},
                    "ipAddresses": [{"type": "PRIMARY", "ipAddress": instance.ip().to_string()}],
                    "region": "us-central1",
                    "databaseVersion": "POSTGRES_15",
                    "backendType": "SECOND_GEN",
                    "mdxProtocolSupport": mdx,
                }),
            ));
        }
        if path == format!("{base}:generateEphemeralCert") && req.method == Method::Post {
            let cert = instance
                .client_issuer
                .client_cert_pem(&public_key(req, "public_key")?, 60);
            return Ok((
                "generateEphemeralCert",
                json!({"ephemeralCert": {"kind": "sql#sslCert", "cert": cert}}),
            ));
        }
        Err(Error::http(format!("no such Cloud SQL call: {path}")))
    }

    fn alloydb(&self, path: &str, req: &Request) -> Result<(&'static str, Value), Error> {
        let instance = self.instance(|k| k == Kind::AlloyDb)?;
        let cluster = "/v1beta/projects/proj/locations/us-central1/clusters/c";
        if path == format!("{cluster}/instances/i/connectionInfo") && req.method == Method::Get {
            return Ok((
                "connectionInfo",
                json!({"ipAddress": instance.ip().to_string(), "instanceUid": "u"}),
            ));
        }
        if path == format!("{cluster}:generateClientCertificate") && req.method == Method::Post {
            let leaf = instance
                .client_issuer
                .client_cert_pem(&public_key(req, "publicKey")?, 60);
            return Ok((
                "generateClientCertificate",
                json!({
                    "pemCertificateChain": [leaf, instance.client_issuer.pem(), instance.server_ca.pem()],
                    "caCert": instance.server_ca.pem(),
                }),
            ));
        }
        Err(Error::http(format!("no such AlloyDB call: {path}")))
    }
}

/// The SubjectPublicKeyInfo DER of the PEM in the request body's `field`.
fn public_key(req: &Request, field: &str) -> Result<Vec<u8>, Error> {
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| Error::http(format!("the request body is not JSON: {e}")))?;
    let pem = body[field]
        .as_str()
        .ok_or_else(|| Error::http(format!("the request has no {field}")))?;
    SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
        .map(|k| k.to_vec())
        .map_err(|e| Error::http(format!("{field} is not a PEM public key: {e:?}")))
}

impl Transport for ScriptedGoogle {
    fn start(&self, req: &Request, _deadline: Instant) -> Result<Box<dyn Pending>, Error> {
        Ok(Box::new(Answered(self.answer(req))))
    }
}
