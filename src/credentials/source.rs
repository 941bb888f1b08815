//! Where tokens come from, resolved once in Application Default Credentials
//! order: a token handed in by the caller; a credentials JSON handed in, or
//! the file `GOOGLE_APPLICATION_CREDENTIALS` names, or gcloud's ADC file;
//! the metadata server. And the request each makes for a token.

use std::time::Instant;

use super::file::{fingerprint, CredentialsFile};
use super::token::{parse_token_response, Role, Scope, Token};
use super::Credentials;
use crate::error::{Error, ErrorKind};
use crate::http::{Pending, Request, Transport};
use crate::secret::Secret;

/// The metadata server's host name on Google Cloud.
pub const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";

/// Endpoint overrides from the connector's config.
#[derive(Debug, Clone, Default)]
pub(crate) struct Endpoints {
    pub token_endpoint: Option<String>,
    pub metadata_host: Option<String>,
}

/// A resolved credential.
#[derive(Debug)]
pub(crate) enum Source {
    Static { api: Secret, login: Option<Secret> },
    File(CredentialsFile),
    Metadata { host: String },
}

impl Source {
    pub(crate) fn resolve(
        configured: Option<&Credentials>,
        endpoints: &Endpoints,
    ) -> Result<Self, Error> {
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
        CredentialsFile::parse(json, origin, endpoints.token_endpoint.as_deref()).map(Self::File)
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

    /// Sends the request for a token of `scope` on `transport`.
    pub(crate) fn start(
        &self,
        scope: Scope,
        transport: &dyn Transport,
        deadline: Instant,
    ) -> Result<Fetch, Error> {
        match self {
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
                Fetch::http(&req, kind, transport, deadline)
            }
            Self::Metadata { host } => {
                let url = format!(
                    "http://{host}/computeMetadata/v1/instance/service-accounts/default/token?scopes={}",
                    scope.url
                );
                let req = Request::get(url).header("metadata-flavor", "Google");
                Fetch::http(&req, METADATA_SERVER, transport, deadline)
            }
        }
    }
}

/// A token request: answered already, or in flight.
pub(crate) enum Fetch {
    Ready(Token),
    Http {
        pending: Box<dyn Pending>,
        url: String,
        kind: &'static str,
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
        })
    }

    /// The token, once its answer is in.
    pub(crate) fn wait(self) -> Result<Token, Error> {
        match self {
            Self::Ready(token) => Ok(token),
            Self::Http { pending, url, kind } => {
                let resp = pending.wait().map_err(|e| unreachable_metadata(kind, e))?;
                parse_token_response(&resp, &url, kind)
            }
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
