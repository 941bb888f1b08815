//! Where tokens come from, resolved once in Application Default Credentials
//! order: a token handed in by the caller; a credentials JSON handed in, or
//! the file `GOOGLE_APPLICATION_CREDENTIALS` names, or gcloud's ADC file;
//! the metadata server. A file may be a key, a user's refresh token, an
//! impersonation of a service account or an external account (Workload
//! Identity Federation); the config's impersonation goes on top of any of
//! them. And the requests each makes for a token.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::Deserialize;

use super::external::ExternalAccount;
use super::file::{fingerprint, CredentialsFile};
use super::impersonated::Impersonation;
use super::token::{from_json_object, parse_token_response, Role, Scope, Token, CLOUD_PLATFORM};
use super::Credentials;
use super::{ServiceAccountImpersonation, DEFAULT_UNIVERSE_DOMAIN};
use crate::error::{Error, ErrorKind};
use crate::http::{Pending, Request, Transport};
use crate::redact;
use crate::secret::Secret;

/// The metadata server's host name on Google Cloud.
pub const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";

/// What of the connector's config decides where tokens come from.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    pub token_endpoint: Option<String>,
    pub metadata_host: Option<String>,
    pub iam_credentials_endpoint: Option<String>,
    /// The connector's universe (see `Config::universe`).
    pub universe_domain: String,
    pub impersonation: Option<ServiceAccountImpersonation>,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            token_endpoint: None,
            metadata_host: None,
            iam_credentials_endpoint: None,
            universe_domain: DEFAULT_UNIVERSE_DOMAIN.to_string(),
            impersonation: None,
        }
    }
}

impl Endpoints {
    fn default_token_endpoint(&self) -> String {
        format!("https://oauth2.{}/token", self.universe_domain)
    }

    fn default_sts_endpoint(&self) -> String {
        format!("https://sts.{}/v1/token", self.universe_domain)
    }

    fn iam_credentials(&self) -> String {
        self.iam_credentials_endpoint
            .clone()
            .unwrap_or_else(|| format!("https://iamcredentials.{}", self.universe_domain))
    }
}

/// A resolved credential.
#[derive(Debug)]
pub(crate) enum Source {
    Static {
        api: Secret,
        login: Option<Secret>,
    },
    File(CredentialsFile),
    Metadata {
        host: String,
    },
    /// Another source's token exchanged at IAM Credentials for a service
    /// account's.
    Impersonated(Arc<Impersonated>),
    /// Workload Identity Federation.
    External(Arc<External>),
}

/// A source whose token impersonates a service account.
#[derive(Debug)]
pub(crate) struct Impersonated {
    caller: Source,
    impersonation: Impersonation,
    /// The caller's cloud-platform token, reused until near its expiry.
    caller_token: Cached,
}

/// An external account, and its federated token when it impersonates.
#[derive(Debug)]
pub(crate) struct External {
    account: ExternalAccount,
    /// The federated cloud-platform token an impersonation is made with.
    federated: Cached,
}

/// One token kept between refreshes.
#[derive(Debug, Default)]
struct Cached(Mutex<Option<Token>>);

impl Cached {
    fn fresh(&self) -> Option<Token> {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref()
            .filter(|t| t.fresh_at(SystemTime::now()))
            .cloned()
    }

    fn keep(&self, token: &Token) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(token.clone());
    }
}

impl Source {
    /// The configured credentials (else Application Default Credentials),
    /// checked to be of the connector's universe, with the config's
    /// impersonation on top.
    pub(crate) fn resolve(
        configured: Option<&Credentials>,
        endpoints: &Endpoints,
    ) -> Result<Self, Error> {
        let source = Self::configured(configured, endpoints)?;
        if let Some(theirs) = source.universe_domain() {
            if theirs != endpoints.universe_domain {
                return Err(Error::credentials(format!(
                    "the credentials are for the universe domain {theirs:?}, but the \
                     connector's is {:?} (config universe-domain, else \
                     GOOGLE_CLOUD_UNIVERSE_DOMAIN, else googleapis.com): use credentials of \
                     that universe, or set the universe domain to {theirs:?}",
                    endpoints.universe_domain
                )));
            }
        }
        match &endpoints.impersonation {
            None => Ok(source),
            Some(i) => Ok(Self::Impersonated(Arc::new(Impersonated {
                caller: source,
                impersonation: Impersonation::of(
                    &endpoints.iam_credentials(),
                    &i.target_principal,
                    &i.delegates,
                )?,
                caller_token: Cached::default(),
            }))),
        }
    }

    fn configured(configured: Option<&Credentials>, endpoints: &Endpoints) -> Result<Self, Error> {
        match configured {
            Some(Credentials::AccessToken {
                api_token,
                login_token,
            }) => {
                if api_token.trim().is_empty() {
                    return Err(Error::invalid_config(
                        "credentials access-token: the API token is empty",
                    ));
                }
                Ok(Self::Static {
                    api: Secret::new(api_token.clone()),
                    login: login_token.clone().map(Secret::new),
                })
            }
            Some(Credentials::Json(json)) => Self::file(json, "the credentials JSON", endpoints),
            Some(Credentials::MetadataServer) => Ok(Self::metadata(endpoints)),
            None => Self::application_default(endpoints),
        }
    }

    /// Application Default Credentials: GOOGLE_APPLICATION_CREDENTIALS, then
    /// gcloud's well-known file, then the metadata server.
    fn application_default(endpoints: &Endpoints) -> Result<Self, Error> {
        if let Some(path) = env("GOOGLE_APPLICATION_CREDENTIALS") {
            // Named explicitly, so an unreadable file is an error, not a fallback.
            let json = std::fs::read_to_string(&path).map_err(|e| {
                Error::credentials(format!(
                    "cannot read GOOGLE_APPLICATION_CREDENTIALS file {path:?}: {e} \
                     (a wasm host must grant its directory, e.g. `wasmtime run --dir`)"
                ))
            })?;
            return Self::file(&json, &format!("the file {path:?}"), endpoints);
        }
        let gcloud_dir =
            env("CLOUDSDK_CONFIG").or_else(|| env("HOME").map(|h| format!("{h}/.config/gcloud")));
        if let Some(dir) = gcloud_dir {
            let path = format!("{dir}/application_default_credentials.json");
            if let Ok(json) = std::fs::read_to_string(&path) {
                return Self::file(&json, &format!("the file {path:?}"), endpoints);
            }
        }
        Ok(Self::metadata(endpoints))
    }

    fn file(json: &str, origin: &str, endpoints: &Endpoints) -> Result<Self, Error> {
        #[derive(Deserialize)]
        struct Kind {
            #[serde(rename = "type")]
            kind: Option<String>,
        }
        let kind = from_json_object::<Kind>(json.as_bytes())
            .ok()
            .and_then(|k| k.kind);
        match kind.as_deref() {
            Some("impersonated_service_account") => {
                Self::impersonated_file(json, origin, endpoints)
            }
            Some("external_account") => Ok(Self::External(Arc::new(External {
                account: ExternalAccount::parse(json, origin, &endpoints.default_sts_endpoint())?,
                federated: Cached::default(),
            }))),
            _ => CredentialsFile::parse(
                json,
                origin,
                endpoints.token_endpoint.as_deref(),
                &endpoints.default_token_endpoint(),
            )
            .map(Self::File),
        }
    }

    /// An `impersonated_service_account` file: its source credentials (a
    /// key, a user's refresh token or an external account), the target's
    /// `generateAccessToken` URL and the delegates.
    fn impersonated_file(json: &str, origin: &str, endpoints: &Endpoints) -> Result<Self, Error> {
        #[derive(Deserialize)]
        struct Fields {
            service_account_impersonation_url: Option<String>,
            source_credentials: Option<serde_json::Value>,
            delegates: Option<Vec<String>>,
        }
        let f: Fields = from_json_object(json.as_bytes()).map_err(|e| {
            Error::credentials(format!(
                "{origin} is not a usable impersonated_service_account file: {e}"
            ))
        })?;
        let url = f
            .service_account_impersonation_url
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                Error::credentials(format!(
                    "{origin} has no \"service_account_impersonation_url\" field"
                ))
            })?;
        let source_json = match f.source_credentials {
            Some(v @ serde_json::Value::Object(_)) => v.to_string(),
            Some(_) => {
                return Err(Error::credentials(format!(
                    "{origin}: \"source_credentials\" is not a JSON object"
                )))
            }
            None => {
                return Err(Error::credentials(format!(
                    "{origin} has no \"source_credentials\" field"
                )))
            }
        };
        let source_origin = format!("{origin}'s source_credentials");
        let caller = Self::file(&source_json, &source_origin, endpoints)?;
        if matches!(caller, Self::Impersonated(_)) {
            return Err(Error::credentials(format!(
                "{source_origin} is itself an impersonation; name the delegates in \
                 \"delegates\" instead"
            )));
        }
        Ok(Self::Impersonated(Arc::new(Impersonated {
            caller,
            impersonation: Impersonation::from_url(
                &url,
                f.delegates.unwrap_or_default(),
                None,
                origin,
                "service_account_impersonation_url",
            )?,
            caller_token: Cached::default(),
        })))
    }

    /// The universe the credentials belong to, where they say (files do;
    /// the metadata server and a caller's token do not).
    fn universe_domain(&self) -> Option<&str> {
        match self {
            Self::Static { .. } | Self::Metadata { .. } => None,
            Self::File(file) => Some(file.universe_domain()),
            Self::Impersonated(i) => i.caller.universe_domain(),
            Self::External(e) => Some(&e.account.universe_domain),
        }
    }

    fn metadata(endpoints: &Endpoints) -> Self {
        let host = endpoints
            .metadata_host
            .clone()
            .or_else(|| env("GCE_METADATA_HOST"))
            .unwrap_or_else(|| DEFAULT_METADATA_HOST.to_string());
        Self::Metadata { host }
    }

    /// Who these credentials act as, for keeping what is learned with them
    /// apart from what other principals learn: the account's email (asked of
    /// the metadata server there), else a fingerprint of the credential.
    pub(crate) fn principal(
        &self,
        transport: &dyn Transport,
        deadline: Instant,
    ) -> Result<String, Error> {
        match self {
            Self::Static { api, .. } => Ok(format!("token:{}", fingerprint(api.expose()))),
            Self::File(file) => Ok(file.principal()),
            Self::Impersonated(i) => Ok(format!("impersonated:{}", i.impersonation.target)),
            Self::External(e) => Ok(e.account.principal()),
            Self::Metadata { host } => {
                let url = format!(
                    "http://{host}/computeMetadata/v1/instance/service-accounts/default/email"
                );
                let req = Request::get(url).header("metadata-flavor", "Google");
                let resp = transport
                    .send(&req, deadline)
                    .map_err(|e| unreachable_metadata(METADATA_SERVER, e))?;
                let email = String::from_utf8(resp.body).unwrap_or_default();
                let email = email.trim();
                if resp.status != 200 || email.is_empty() || email.len() > 256 {
                    return Err(Error::credentials(format!(
                        "the metadata server did not name its service account (HTTP {})",
                        resp.status
                    )));
                }
                Ok(format!("metadata:{email}"))
            }
        }
    }

    /// Sends the (first) request for a token of `scope` on `transport`.
    pub(crate) fn start(
        &self,
        scope: Scope,
        transport: &Arc<dyn Transport>,
        deadline: Instant,
    ) -> Result<Fetch, Error> {
        match self {
            Self::Impersonated(i) => i.clone().start(scope, transport, deadline),
            Self::External(e) => e.clone().start(scope, transport, deadline),
            Self::Static { api, login } => {
                let secret = match (scope.role, login) {
                    (Role::Api, _) => api.clone(),
                    (Role::Login { .. }, Some(login)) => login.clone(),
                    (
                        Role::Login {
                            api_token_will_do: true,
                        },
                        None,
                    ) => api.clone(),
                    (
                        Role::Login {
                            api_token_will_do: false,
                        },
                        None,
                    ) => {
                        return Err(Error::invalid_config(format!(
                            "IAM database authentication with a caller-supplied token needs a \
                             login token (scope {}) in access-tokens.login-token",
                            scope.short_name()
                        )))
                    }
                };
                Ok(Fetch::Ready(Token {
                    secret,
                    expiry: None,
                }))
            }
            Self::File(file) => {
                let (req, kind) = file.token_request(scope)?;
                Fetch::http(&req, kind, transport.as_ref(), deadline)
            }
            Self::Metadata { host } => {
                let url = format!(
                    "http://{host}/computeMetadata/v1/instance/service-accounts/default/token?scopes={}",
                    scope.url
                );
                let req = Request::get(url).header("metadata-flavor", "Google");
                Fetch::http(&req, METADATA_SERVER, transport.as_ref(), deadline)
            }
        }
    }
}

impl Impersonated {
    /// The caller's token (cached, or on its way), then, once it is in, the
    /// target's.
    fn start(
        self: Arc<Self>,
        scope: Scope,
        transport: &Arc<dyn Transport>,
        deadline: Instant,
    ) -> Result<Fetch, Error> {
        let first = match self.caller_token.fresh() {
            Some(t) => Fetch::Ready(t),
            None => self.caller.start(CLOUD_PLATFORM, transport, deadline)?,
        };
        let transport = transport.clone();
        Ok(Fetch::Then {
            first: Box::new(first),
            then: Box::new(move |caller: Token| {
                self.caller_token.keep(&caller);
                let req = self.impersonation.request(&caller.secret, scope);
                let resp = transport.send(&req, deadline)?;
                self.impersonation.token(&resp, &[caller.secret.expose()])
            }),
        })
    }
}

impl External {
    /// The subject token exchanged at STS (for the token itself, or for a
    /// cloud-platform one to impersonate with, cached), then the
    /// impersonation.
    fn start(
        self: Arc<Self>,
        scope: Scope,
        transport: &Arc<dyn Transport>,
        deadline: Instant,
    ) -> Result<Fetch, Error> {
        let exchange = |scope: &str| -> Result<Fetch, Error> {
            let subject = self.account.subject_token(transport.as_ref(), deadline)?;
            let req = self.account.sts_request(&subject, scope);
            Fetch::http(&req, EXTERNAL_ACCOUNT, transport.as_ref(), deadline)
        };
        if self.account.impersonation.is_none() {
            return exchange(scope.url);
        }
        let first = match self.federated.fresh() {
            Some(t) => Fetch::Ready(t),
            None => exchange(CLOUD_PLATFORM.url)?,
        };
        let transport = transport.clone();
        Ok(Fetch::Then {
            first: Box::new(first),
            then: Box::new(move |federated: Token| {
                self.federated.keep(&federated);
                let Some(imp) = &self.account.impersonation else {
                    return Ok(federated);
                };
                let req = imp.request(&federated.secret, scope);
                let resp = transport.send(&req, deadline)?;
                imp.token(&resp, &[federated.secret.expose()])
            }),
        })
    }
}

const EXTERNAL_ACCOUNT: &str = "external_account";

/// A token request: answered already, in flight, or a first step whose
/// token the next one needs.
pub(crate) enum Fetch {
    Ready(Token),
    Http {
        pending: Box<dyn Pending>,
        url: String,
        kind: &'static str,
        /// What the request carried, kept out of error messages.
        secrets: Vec<String>,
    },
    Then {
        first: Box<Fetch>,
        then: Box<dyn FnOnce(Token) -> Result<Token, Error>>,
    },
}

impl Fetch {
    fn http(
        req: &Request,
        kind: &'static str,
        transport: &dyn Transport,
        deadline: Instant,
    ) -> Result<Self, Error> {
        let pending = transport
            .start(req, deadline)
            .map_err(|e| unreachable_metadata(kind, e))?;
        Ok(Self::Http {
            pending,
            url: req.url.clone(),
            kind,
            secrets: redact::request_secrets(req),
        })
    }

    /// The token, once its answer is in.
    pub(crate) fn wait(self) -> Result<Token, Error> {
        match self {
            Self::Ready(token) => Ok(token),
            Self::Http {
                pending,
                url,
                kind,
                secrets,
            } => {
                let resp = pending.wait().map_err(|e| unreachable_metadata(kind, e))?;
                let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
                parse_token_response(&resp, &url, kind, &secrets)
            }
            Self::Then { first, then } => then(first.wait()?),
        }
    }
}

const METADATA_SERVER: &str = "metadata server";

/// Outside Google Cloud the metadata server is absent: say what to do instead.
fn unreachable_metadata(kind: &str, e: Error) -> Error {
    if kind == METADATA_SERVER && e.kind() == ErrorKind::Http {
        let message = format!(
            "the metadata server is unreachable ({}); outside Google Cloud, pass \
             credentials or set GOOGLE_APPLICATION_CREDENTIALS",
            e.message()
        );
        Error::credentials(message).with_source(e)
    } else {
        e
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}
