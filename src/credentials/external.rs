//! Workload Identity Federation: an `external_account` credentials file. A
//! subject token the workload already has (read from a file or fetched from a
//! URL, anew for every exchange) is exchanged at Google's Security Token
//! Service for a federated access token (RFC 8693, as Google's STS takes it),
//! which may then impersonate a service account. Executable- and AWS-sourced
//! files are refused with what is missing: a component cannot run a program,
//! and AWS needs request signing this connector does not do.

use std::io::Read;
use std::time::Instant;

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use super::file::{check_secure_url, fingerprint};
use super::impersonated::Impersonation;
use super::token::from_json_object;
use crate::error::Error;
use crate::http::{redact_url, Request, Transport};
use crate::secret::Secret;

/// The largest subject token read from a file or a URL: OIDC tokens and SAML
/// assertions are a few kB.
pub(crate) const MAX_SUBJECT_TOKEN: usize = 64 * 1024;

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A parsed `external_account` file.
pub(crate) struct ExternalAccount {
    pub audience: String,
    subject_token_type: String,
    /// Google's STS token endpoint.
    pub token_url: String,
    source: SubjectSource,
    /// The service account the federated token impersonates, if any.
    pub impersonation: Option<Impersonation>,
    /// OAuth client authentication at STS (HTTP Basic), when the file has one.
    client: Option<(String, Secret)>,
    /// A workforce pool's project to bill, sent when no client authenticates.
    workforce_pool_user_project: Option<String>,
    /// The file's universe (googleapis.com unless it says).
    pub universe_domain: String,
    /// Names the credential source without showing it, for the principal.
    source_fingerprint: String,
}

impl std::fmt::Debug for ExternalAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalAccount")
            .field("audience", &self.audience)
            .field("token_url", &self.token_url)
            .field("impersonation", &self.impersonation)
            .finish_non_exhaustive()
    }
}

/// Where the subject token comes from.
enum SubjectSource {
    File {
        path: String,
        format: Format,
    },
    Url {
        url: String,
        headers: Vec<(String, String)>,
        format: Format,
    },
}

/// How the subject token is written.
enum Format {
    Text,
    /// A JSON object, the token in this field.
    Json(String),
}

#[derive(Deserialize)]
struct Fields {
    audience: Option<String>,
    subject_token_type: Option<String>,
    token_url: Option<String>,
    credential_source: Option<Value>,
    service_account_impersonation_url: Option<String>,
    service_account_impersonation: Option<ImpersonationFields>,
    client_id: Option<String>,
    client_secret: Option<String>,
    workforce_pool_user_project: Option<String>,
    universe_domain: Option<String>,
}

#[derive(Deserialize)]
struct ImpersonationFields {
    token_lifetime_seconds: Option<u64>,
}

#[derive(Deserialize)]
struct SourceFields {
    file: Option<String>,
    url: Option<String>,
    headers: Option<std::collections::BTreeMap<String, String>>,
    format: Option<FormatFields>,
    executable: Option<Value>,
    environment_id: Option<String>,
}

#[derive(Deserialize)]
struct FormatFields {
    #[serde(rename = "type")]
    kind: Option<String>,
    subject_token_field_name: Option<String>,
}

impl ExternalAccount {
    /// Parses an `external_account` file's JSON; `origin` names it in errors,
    /// `default_sts` is the STS endpoint of the connector's universe.
    pub(crate) fn parse(json: &str, origin: &str, default_sts: &str) -> Result<Self, Error> {
        let f: Fields = from_json_object(json.as_bytes()).map_err(|e| {
            Error::credentials(format!(
                "{origin} is not a usable external_account file: {e}"
            ))
        })?;
        let need = |v: Option<String>, field: &str| {
            v.filter(|s| !s.trim().is_empty())
                .ok_or_else(|| Error::credentials(format!("{origin} has no \"{field}\" field")))
        };
        let raw_source = f.credential_source.ok_or_else(|| {
            Error::credentials(format!("{origin} has no \"credential_source\" field"))
        })?;
        let source_fingerprint = fingerprint(&raw_source.to_string());
        let source = subject_source(raw_source, origin)?;
        let impersonation = match f
            .service_account_impersonation_url
            .filter(|u| !u.is_empty())
        {
            None => None,
            Some(url) => Some(Impersonation::from_url(
                &url,
                Vec::new(),
                f.service_account_impersonation
                    .and_then(|i| i.token_lifetime_seconds),
                origin,
                "service_account_impersonation_url",
            )?),
        };
        let client = match (f.client_id.filter(|s| !s.is_empty()), f.client_secret) {
            (Some(id), secret) => Some((id, Secret::new(secret.unwrap_or_default()))),
            (None, _) => None,
        };
        Ok(Self {
            audience: need(f.audience, "audience")?,
            subject_token_type: need(f.subject_token_type, "subject_token_type")?,
            token_url: match f.token_url.filter(|u| !u.trim().is_empty()) {
                Some(url) => check_secure_url(&url, origin, "token_url").map(|()| url)?,
                None => default_sts.to_string(),
            },
            source,
            impersonation,
            client,
            workforce_pool_user_project: f.workforce_pool_user_project.filter(|s| !s.is_empty()),
            universe_domain: f
                .universe_domain
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| super::DEFAULT_UNIVERSE_DOMAIN.to_string()),
            source_fingerprint,
        })
    }

    /// Who the file acts as: the impersonated service account, else the
    /// pool (audience) and which credential source.
    pub(crate) fn principal(&self) -> String {
        match &self.impersonation {
            Some(i) => format!("impersonated:{}", i.target),
            None => format!("external:{}:{}", self.audience, self.source_fingerprint),
        }
    }

    /// The subject token, read anew (a workload's token rotates).
    pub(crate) fn subject_token(
        &self,
        transport: &dyn Transport,
        deadline: Instant,
    ) -> Result<Secret, Error> {
        let (raw, format, from) = match &self.source {
            SubjectSource::File { path, format } => (
                read_bounded(path)?,
                format,
                format!("the subject token file {path:?}"),
            ),
            SubjectSource::Url {
                url,
                headers,
                format,
            } => {
                let req = headers
                    .iter()
                    .fold(Request::get(url.clone()), |req, (name, value)| {
                        req.header(name.to_ascii_lowercase(), value.clone())
                    });
                let shown = redact_url(url).to_string();
                let resp = transport.send(&req, deadline).map_err(|e| {
                    Error::credentials(format!(
                        "fetching the subject token from {shown} failed: {}",
                        e.message()
                    ))
                    .with_source(e)
                })?;
                if !resp.is_success() {
                    return Err(Error::credentials(format!(
                        "the subject token URL {shown} answered HTTP {}",
                        resp.status
                    )));
                }
                if resp.body.len() > MAX_SUBJECT_TOKEN {
                    return Err(Error::credentials(format!(
                        "the subject token from {shown} is over {MAX_SUBJECT_TOKEN} bytes"
                    )));
                }
                (resp.body, format, format!("the subject token from {shown}"))
            }
        };
        let token = match format {
            Format::Text => String::from_utf8(raw).ok(),
            Format::Json(field) => serde_json::from_slice::<Value>(&raw)
                .ok()
                .and_then(|v| v.get(field)?.as_str().map(str::to_string)),
        };
        let token = token.map(|t| t.trim().to_string()).unwrap_or_default();
        if token.is_empty() {
            return Err(Error::credentials(match format {
                Format::Text => format!("{from} is empty or not text"),
                Format::Json(field) => format!("{from} has no string field {field:?}"),
            }));
        }
        Ok(Secret::new(token))
    }

    /// The token exchange at STS for a token of `scope`.
    pub(crate) fn sts_request(&self, subject: &Secret, scope: &str) -> Request {
        let options;
        let mut pairs = vec![
            ("grant_type", TOKEN_EXCHANGE),
            ("audience", self.audience.as_str()),
            ("scope", scope),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("subject_token", subject.expose()),
            ("subject_token_type", self.subject_token_type.as_str()),
        ];
        // Google's libraries send the workforce pool's billing project only
        // when no client authenticates (the client's project is billed then).
        if let (Some(project), None) = (&self.workforce_pool_user_project, &self.client) {
            options = serde_json::json!({ "userProject": project }).to_string();
            pairs.push(("options", options.as_str()));
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let req = Request::post(
            self.token_url.clone(),
            "application/x-www-form-urlencoded",
            body.into_bytes(),
        );
        match &self.client {
            Some((id, secret)) => {
                let basic = base64::engine::general_purpose::STANDARD
                    .encode(format!("{id}:{}", secret.expose()));
                req.header("authorization", format!("Basic {basic}"))
            }
            None => req,
        }
    }
}

/// The credential source, or a clear refusal of the kinds a component cannot use.
fn subject_source(raw: Value, origin: &str) -> Result<SubjectSource, Error> {
    let s: SourceFields = serde_json::from_value(raw).map_err(|e| {
        Error::credentials(format!(
            "{origin}: \"credential_source\" is not usable: {e}"
        ))
    })?;
    if s.executable.is_some() {
        return Err(Error::credentials(format!(
            "{origin}: an executable-sourced external account is not supported: a wasm \
             component cannot run a program; have the host write the subject token to a \
             file (credential_source.file) or serve it at a URL (credential_source.url)"
        )));
    }
    if s.environment_id
        .as_deref()
        .is_some_and(|e| e.starts_with("aws"))
    {
        return Err(Error::credentials(format!(
            "{origin}: an AWS-sourced external account is not supported: it needs AWS \
             credentials (from the environment or the EC2 metadata service, IMDSv2) and an \
             AWS Signature Version 4 signed GetCallerIdentity request as the subject token; \
             use an OIDC or SAML provider with a file or URL credential source"
        )));
    }
    let format = match s.format {
        None => Format::Text,
        Some(f) => match f.kind.as_deref() {
            None | Some("text") => Format::Text,
            Some("json") => Format::Json(
                f.subject_token_field_name
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        Error::credentials(format!(
                            "{origin}: a json credential_source.format needs \
                             \"subject_token_field_name\""
                        ))
                    })?,
            ),
            Some(other) => {
                return Err(Error::credentials(format!(
                    "{origin}: credential_source.format type {other:?} is neither \"text\" \
                     nor \"json\""
                )))
            }
        },
    };
    match (
        s.file.filter(|f| !f.is_empty()),
        s.url.filter(|u| !u.is_empty()),
    ) {
        (Some(path), None) => Ok(SubjectSource::File { path, format }),
        (None, Some(url)) => {
            let headers = s.headers.unwrap_or_default().into_iter().collect();
            Ok(SubjectSource::Url {
                url,
                headers,
                format,
            })
        }
        (Some(_), Some(_)) => Err(Error::credentials(format!(
            "{origin}: credential_source has both \"file\" and \"url\"; give one"
        ))),
        (None, None) => Err(Error::credentials(format!(
            "{origin}: credential_source has neither \"file\" nor \"url\" (nor a supported \
             \"environment_id\")"
        ))),
    }
}

/// Reads at most [`MAX_SUBJECT_TOKEN`] bytes of `path`.
fn read_bounded(path: &str) -> Result<Vec<u8>, Error> {
    let file = std::fs::File::open(path).map_err(|e| {
        Error::credentials(format!(
            "cannot read the subject token file {path:?}: {e} (a wasm host must grant its \
             directory, e.g. `wasmtime run --dir`)"
        ))
    })?;
    let mut raw = Vec::new();
    file.take(MAX_SUBJECT_TOKEN as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|e| {
            Error::credentials(format!("cannot read the subject token file {path:?}: {e}"))
        })?;
    if raw.len() > MAX_SUBJECT_TOKEN {
        return Err(Error::credentials(format!(
            "the subject token file {path:?} is over {MAX_SUBJECT_TOKEN} bytes"
        )));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use serde_json::json;

    const STS: &str = "https://sts.googleapis.com/v1/token";

    fn file() -> Value {
        json!({
            "type": "external_account",
            "audience": "//iam.googleapis.com/locations/global/workforcePools/w/providers/p",
            "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
            "token_url": "https://sts.example/v1/token",
            "credential_source": {"file": "/var/run/token"},
        })
    }

    fn parse(v: &Value) -> Result<ExternalAccount, Error> {
        ExternalAccount::parse(&v.to_string(), "the file", STS)
    }

    fn refusal(v: &Value) -> String {
        let e = parse(v).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Credentials, "{e}");
        e.message().to_string()
    }

    #[test]
    fn each_required_field_missing_or_mistyped_is_named() {
        for field in ["audience", "subject_token_type", "credential_source"] {
            let mut f = file();
            f.as_object_mut().unwrap().remove(field);
            assert!(refusal(&f).contains(&format!("no \"{field}\"")), "{field}");
            let mut f = file();
            f[field] = json!(7);
            assert!(!refusal(&f).is_empty(), "{field} as a number");
        }
        let mut f = file();
        f["token_url"] = json!(["x"]);
        assert!(refusal(&f).contains("not a usable external_account file"));
        let mut f = file();
        f["credential_source"] = json!({});
        assert!(refusal(&f).contains("neither \"file\" nor \"url\""));
        let mut f = file();
        f["credential_source"] = json!({"file": "/a", "url": "https://b"});
        assert!(refusal(&f).contains("both"));
        let mut f = file();
        f["credential_source"]["format"] = json!({"type": "json"});
        assert!(refusal(&f).contains("subject_token_field_name"));
        let mut f = file();
        f["credential_source"]["format"] = json!({"type": "xml"});
        assert!(refusal(&f).contains("\"xml\""));
        let mut f = file();
        f["service_account_impersonation_url"] = json!("https://iam.example/nothing");
        assert!(refusal(&f).contains("service_account_impersonation_url"));
        // Absent: Google's STS of the universe.
        let mut f = file();
        f.as_object_mut().unwrap().remove("token_url");
        assert_eq!(parse(&f).unwrap().token_url, STS);
    }

    #[test]
    fn executable_and_aws_sources_say_what_is_missing() {
        let mut f = file();
        f["credential_source"] = json!({"executable": {"command": "/bin/get-token"}});
        let m = refusal(&f);
        assert!(
            m.contains("executable-sourced") && m.contains("cannot run a program"),
            "{m}"
        );
        let mut f = file();
        f["credential_source"] =
            json!({"environment_id": "aws1", "region_url": "http://169.254.169.254/x"});
        let m = refusal(&f);
        assert!(
            m.contains("AWS-sourced") && m.contains("Signature Version 4"),
            "{m}"
        );
    }

    #[test]
    fn the_exchange_is_rfc_8693_as_googles_sts_takes_it() {
        let a = parse(&file()).unwrap();
        let req = a.sts_request(&Secret::new("subject".into()), "https://scope");
        assert_eq!(req.url, "https://sts.example/v1/token");
        let form: std::collections::HashMap<String, String> =
            form_urlencoded::parse(&req.body).into_owned().collect();
        assert_eq!(form["grant_type"], TOKEN_EXCHANGE);
        assert_eq!(form["requested_token_type"], ACCESS_TOKEN_TYPE);
        assert_eq!(
            form["subject_token_type"],
            "urn:ietf:params:oauth:token-type:id_token"
        );
        assert_eq!(form["scope"], "https://scope");
        assert!(!form.contains_key("options"));
        assert!(!req.headers.iter().any(|(n, _)| n == "authorization"));

        // A workforce pool's billing project when no client authenticates …
        let mut f = file();
        f["workforce_pool_user_project"] = json!("billing-project");
        let req = parse(&f)
            .unwrap()
            .sts_request(&Secret::new("s".into()), "x");
        let form: std::collections::HashMap<String, String> =
            form_urlencoded::parse(&req.body).into_owned().collect();
        assert_eq!(form["options"], r#"{"userProject":"billing-project"}"#);
        // … and HTTP Basic when one does.
        f["client_id"] = json!("id");
        f["client_secret"] = json!("secret");
        let req = parse(&f)
            .unwrap()
            .sts_request(&Secret::new("s".into()), "x");
        assert!(req
            .headers
            .contains(&("authorization".into(), "Basic aWQ6c2VjcmV0".into())));
        assert!(!String::from_utf8_lossy(&req.body).contains("options"));
    }

    #[test]
    fn a_json_subject_token_is_read_from_its_field() {
        let dir = std::env::temp_dir().join(format!("gcpdb-ext-json-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token.json");
        let mut f = file();
        f["credential_source"] = json!({"file": path, "format": {"type": "json", "subject_token_field_name": "id_token"}});
        let a = parse(&f).unwrap();
        let transport = crate::testing::google::ScriptedGoogle::new();
        let far = Instant::now() + std::time::Duration::from_secs(5);
        std::fs::write(&path, r#"{"id_token": "eyJ.subject"}"#).unwrap();
        assert_eq!(
            a.subject_token(&transport, far).unwrap().expose(),
            "eyJ.subject"
        );
        for bad in [r#"{"other": "x"}"#, r#"{"id_token": 5}"#, "not json"] {
            std::fs::write(&path, bad).unwrap();
            let e = a.subject_token(&transport, far).unwrap_err();
            assert!(e.message().contains("no string field \"id_token\""), "{e}");
            assert!(!e.message().contains("eyJ"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
