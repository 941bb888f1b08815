//! The workload identity pool the emulator's STS trusts, and what a workload needs to use
//! it: the pool's one OIDC provider (the emulator's own identity provider, `idp`), the
//! audiences, the principal a subject becomes, and the two `external_account` credential
//! files, shaped as `gcloud iam workload-identity-pools create-cred-config` writes them.

use serde_json::{json, Value};

use crate::credentials::UNIVERSE_DOMAIN;

/// The project number of `emulator-project`, where the pool lives.
pub const PROJECT_NUMBER: &str = "428716093512";
/// The workload identity pool's id.
pub const POOL_ID: &str = "emulator-pool";
/// Its OIDC provider's id.
pub const PROVIDER_ID: &str = "emulator-oidc";
/// The `sub` of the subject token the emulator writes at start.
pub const DEFAULT_SUBJECT: &str = "wasm-workload";
/// `subject_token_type` of an OIDC JWT, as the credential files name it.
pub const SUBJECT_TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// The other name STS takes for an OIDC ID token.
pub const SUBJECT_TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// File name of the subject token (a JWT, as text) in the state dir.
pub const SUBJECT_TOKEN_FILE: &str = "subject-token.jwt";
/// File name of the `external_account` file with a file source (impersonating the target).
pub const EXTERNAL_ACCOUNT_FILE: &str = "external-account-file.json";
/// File name of the `external_account` file with a URL source (no impersonation).
pub const EXTERNAL_ACCOUNT_URL_FILE: &str = "external-account-url.json";
/// The header the subject-token URL requires, as Azure's instance metadata service does.
pub const SUBJECT_TOKEN_HEADER: (&str, &str) = ("Metadata", "True");
/// The field of the URL source's JSON answer that holds the subject token.
pub const SUBJECT_TOKEN_FIELD: &str = "id_token";

/// `projects/N/locations/global/workloadIdentityPools/POOL`.
fn pool_name() -> String {
    format!("projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/{POOL_ID}")
}

/// The STS `audience` of the provider: `//iam.googleapis.com/projects/N/locations/global/
/// workloadIdentityPools/POOL/providers/PROVIDER`.
pub fn audience() -> String {
    format!(
        "//iam.googleapis.com/{}/providers/{PROVIDER_ID}",
        pool_name()
    )
}

/// The `aud` a subject token must carry: the provider's default allowed audience, its
/// resource name as an `https://iam.googleapis.com/…` URL.
pub fn token_audience() -> String {
    format!(
        "https://iam.googleapis.com/{}/providers/{PROVIDER_ID}",
        pool_name()
    )
}

/// The principal a federated token of `subject` stands for, as IAM policies name it.
pub fn principal(subject: &str) -> String {
    format!(
        "principal://iam.googleapis.com/{}/subject/{subject}",
        pool_name()
    )
}

/// The `external_account` file with a file source: the subject token read as text from
/// `subject_token_path`, exchanged at `token_url`, then the target service account
/// impersonated at `impersonation_url`.
pub fn external_account_file_json(
    token_url: &str,
    subject_token_path: &str,
    impersonation_url: &str,
) -> Value {
    json!({
        "type": "external_account",
        "audience": audience(),
        "subject_token_type": SUBJECT_TOKEN_TYPE_JWT,
        "token_url": token_url,
        "credential_source": {"file": subject_token_path},
        "service_account_impersonation_url": impersonation_url,
        "universe_domain": UNIVERSE_DOMAIN,
    })
}

/// The `external_account` file with a URL source: the subject token fetched from
/// `subject_token_url` (with the header it requires, the token in the JSON answer's
/// `id_token`), exchanged at `token_url` with STS client authentication; the federated
/// token is used as it is, without impersonation.
pub fn external_account_url_json(
    token_url: &str,
    subject_token_url: &str,
    client_id: &str,
    client_secret: &str,
) -> Value {
    let (header, value) = SUBJECT_TOKEN_HEADER;
    json!({
        "type": "external_account",
        "audience": audience(),
        "subject_token_type": SUBJECT_TOKEN_TYPE_JWT,
        "token_url": token_url,
        "credential_source": {
            "url": subject_token_url,
            "headers": {header: value},
            "format": {"type": "json", "subject_token_field_name": SUBJECT_TOKEN_FIELD},
        },
        "client_id": client_id,
        "client_secret": client_secret,
        "universe_domain": UNIVERSE_DOMAIN,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let provider = "projects/428716093512/locations/global/workloadIdentityPools/\
                        emulator-pool/providers/emulator-oidc";
        assert_eq!(audience(), format!("//iam.googleapis.com/{provider}"));
        assert_eq!(
            token_audience(),
            format!("https://iam.googleapis.com/{provider}")
        );
        assert_eq!(
            principal("w"),
            "principal://iam.googleapis.com/projects/428716093512/locations/global/\
             workloadIdentityPools/emulator-pool/subject/w"
        );
    }

    #[test]
    fn files() {
        let f = external_account_file_json("http://e/v1/token", "/s/t.jwt", "http://e/imp");
        assert_eq!(f["credential_source"], json!({"file": "/s/t.jwt"}));
        assert_eq!(f["service_account_impersonation_url"], "http://e/imp");
        assert_eq!(f["universe_domain"], "googleapis.com");
        let u = external_account_url_json("http://e/v1/token", "http://e/st", "id", "secret");
        assert!(u.get("service_account_impersonation_url").is_none());
        assert_eq!(
            u["credential_source"]["headers"],
            json!({"Metadata": "True"})
        );
        assert_eq!(
            u["credential_source"]["format"],
            json!({"type": "json", "subject_token_field_name": "id_token"})
        );
        assert_eq!(
            (&u["client_id"], &u["client_secret"]),
            (&json!("id"), &json!("secret"))
        );
    }
}
