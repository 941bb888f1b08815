//! The principals the emulator knows and the credentials it hands out: a service-account
//! key file and an authorized-user (refresh token) file, both pointing at the emulator's
//! token endpoint, and two `impersonated_service_account` files (one per source) that
//! impersonate the target service account through the emulator's IAM Credentials API.
//! The workload identity federation files are `workload_identity`'s.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::distributions::{Alphanumeric, DistString};
use rand::Rng;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Value};

/// The project the emulator's own principals live in.
pub const PROJECT_ID: &str = "emulator-project";
/// The service account (key file and metadata server principal).
pub const SERVICE_ACCOUNT_EMAIL: &str = "connector-sa@emulator-project.iam.gserviceaccount.com";
/// The principal behind the authorized-user refresh token.
pub const USER_EMAIL: &str = "dev-user@example.com";
/// The service account the impersonation files impersonate (no key of its own).
pub const TARGET_SA_EMAIL: &str = "target-sa@emulator-project.iam.gserviceaccount.com";
/// A service account that only serves as a delegate in impersonation chains.
pub const DELEGATE_SA_EMAIL: &str = "delegate-sa@emulator-project.iam.gserviceaccount.com";
/// Every service account that exists, for IAM Credentials.
pub const SERVICE_ACCOUNTS: [&str; 3] = [SERVICE_ACCOUNT_EMAIL, TARGET_SA_EMAIL, DELEGATE_SA_EMAIL];
/// The universe domain every file names: Google's public cloud.
pub const UNIVERSE_DOMAIN: &str = "googleapis.com";
/// File name of the impersonation file whose source is the service-account key.
pub const IMPERSONATED_SA_FILE: &str = "impersonated-sa.json";
/// File name of the impersonation file whose source is the authorized user.
pub const IMPERSONATED_USER_FILE: &str = "impersonated-user.json";
/// File name of the service-account key in the state dir.
pub const SERVICE_ACCOUNT_FILE: &str = "service-account.json";
/// File name of the authorized-user credentials in the state dir.
pub const AUTHORIZED_USER_FILE: &str = "authorized-user.json";

/// Secrets of the two principals the token endpoint accepts.
pub struct Credentials {
    /// `private_key_id` of the service-account key (the JWT `kid`).
    pub private_key_id: String,
    /// PKCS#8 PEM of the service-account key.
    private_key_pem: String,
    /// Public half, used to verify JWT assertions.
    pub public_key: RsaPublicKey,
    /// Numeric `client_id` of the service account.
    pub sa_client_id: String,
    /// OAuth client of the authorized user.
    pub user_client_id: String,
    /// OAuth client secret of the authorized user.
    pub user_client_secret: String,
    /// The authorized user's refresh token.
    pub refresh_token: String,
    /// The OAuth client STS accepts as client authentication (HTTP Basic or form fields).
    pub sts_client_id: String,
    /// Its secret.
    pub sts_client_secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets.
        f.debug_struct("Credentials")
            .field("private_key_id", &self.private_key_id)
            .field("user_client_id", &self.user_client_id)
            .finish_non_exhaustive()
    }
}

fn digits(n: usize) -> String {
    let mut rng = rand::thread_rng();
    // First digit non-zero so it reads as a real id.
    let mut s = rng.gen_range(1..=9u8).to_string();
    for _ in 1..n {
        s.push(char::from(b'0' + rng.gen_range(0..=9u8)));
    }
    s
}

fn lower_alnum(n: usize) -> String {
    Alphanumeric
        .sample_string(&mut rand::thread_rng(), n)
        .to_ascii_lowercase()
}

fn hex(n_bytes: usize) -> String {
    let bytes: Vec<u8> = (0..n_bytes).map(|_| rand::random::<u8>()).collect();
    crate::certs::hex_lower(&bytes)
}

impl Credentials {
    /// Fresh random credentials around the given service-account key.
    pub fn generate(key: &RsaPrivateKey) -> Result<Self, String> {
        let private_key_pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| format!("cannot encode the service account key: {e}"))?
            .to_string();
        let mut rng = rand::thread_rng();
        Ok(Self {
            private_key_id: hex(20),
            private_key_pem,
            public_key: key.to_public_key(),
            sa_client_id: digits(21),
            user_client_id: format!(
                "{}-{}.apps.googleusercontent.com",
                digits(12),
                lower_alnum(32)
            ),
            user_client_secret: format!("GOCSPX-{}", Alphanumeric.sample_string(&mut rng, 28)),
            refresh_token: format!("1//0{}", Alphanumeric.sample_string(&mut rng, 98)),
            sts_client_id: format!(
                "{}-{}.apps.googleusercontent.com",
                digits(12),
                lower_alnum(32)
            ),
            sts_client_secret: format!("GOCSPX-{}", Alphanumeric.sample_string(&mut rng, 28)),
        })
    }

    /// The service-account key file, with `token_uri` pointing at the emulator.
    pub fn service_account_json(&self, token_uri: &str) -> Value {
        json!({
            "type": "service_account",
            "project_id": PROJECT_ID,
            "private_key_id": self.private_key_id,
            "private_key": self.private_key_pem,
            "client_email": SERVICE_ACCOUNT_EMAIL,
            "client_id": self.sa_client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!(
                "https://www.googleapis.com/robot/v1/metadata/x509/{}",
                SERVICE_ACCOUNT_EMAIL.replace('@', "%40")
            ),
            "universe_domain": UNIVERSE_DOMAIN,
        })
    }

    /// The authorized-user file. It carries `token_uri` too (google-auth and the Go
    /// libraries honour it) so the refresh goes to the emulator, not to Google.
    pub fn authorized_user_json(&self, token_uri: &str) -> Value {
        json!({
            "type": "authorized_user",
            "client_id": self.user_client_id,
            "client_secret": self.user_client_secret,
            "refresh_token": self.refresh_token,
            "token_uri": token_uri,
            "universe_domain": UNIVERSE_DOMAIN,
        })
    }

    /// Writes the service-account key, the authorized-user file and the two impersonation
    /// files into `dir` (mode 0600): their token endpoint is `token_uri`, their
    /// `generateAccessToken` URLs are under `iam_base`.
    pub fn write_files(
        &self,
        dir: &Path,
        token_uri: &str,
        iam_base: &str,
    ) -> std::io::Result<CredentialFiles> {
        std::fs::create_dir_all(dir)?;
        let files = CredentialFiles {
            service_account: dir.join(SERVICE_ACCOUNT_FILE),
            authorized_user: dir.join(AUTHORIZED_USER_FILE),
            impersonated_sa: dir.join(IMPERSONATED_SA_FILE),
            impersonated_user: dir.join(IMPERSONATED_USER_FILE),
        };
        let key = self.service_account_json(token_uri);
        let user = self.authorized_user_json(token_uri);
        let target = impersonation_url(iam_base, TARGET_SA_EMAIL);
        write_private(&files.service_account, &key)?;
        write_private(&files.authorized_user, &user)?;
        write_private(
            &files.impersonated_sa,
            &impersonated_json(key, &target, &[]),
        )?;
        let via_delegate = impersonated_json(user, &target, &[DELEGATE_SA_EMAIL]);
        write_private(&files.impersonated_user, &via_delegate)?;
        Ok(files)
    }
}

/// Where [`Credentials::write_files`] put each file.
#[derive(Debug, Clone)]
pub struct CredentialFiles {
    /// `service-account.json`.
    pub service_account: PathBuf,
    /// `authorized-user.json`.
    pub authorized_user: PathBuf,
    /// `impersonated-sa.json`: the key impersonating the target service account.
    pub impersonated_sa: PathBuf,
    /// `impersonated-user.json`: the user impersonating it through the delegate.
    pub impersonated_user: PathBuf,
}

/// The `impersonated_service_account` file `gcloud auth application-default login
/// --impersonate-service-account` writes, around `source` (a key or authorized-user
/// JSON object): the target in `impersonation_url`, `delegates` as the API takes them
/// (`projects/-/serviceAccounts/EMAIL`).
pub fn impersonated_json(source: Value, impersonation_url: &str, delegates: &[&str]) -> Value {
    let delegates: Vec<String> = delegates.iter().map(|d| delegate_name(d)).collect();
    json!({
        "delegates": delegates,
        "service_account_impersonation_url": impersonation_url,
        "source_credentials": source,
        "type": "impersonated_service_account",
    })
}

/// The resource name IAM Credentials takes for a service account in `delegates`.
pub fn delegate_name(email: &str) -> String {
    format!("projects/-/serviceAccounts/{email}")
}

/// The `generateAccessToken` URL of `email` under the IAM Credentials base URL `base`.
pub fn impersonation_url(base: &str, email: &str) -> String {
    format!("{base}/v1/projects/-/serviceAccounts/{email}:generateAccessToken")
}

/// Writes `value` as pretty JSON to `path`, readable by its owner only (it holds secrets).
pub(crate) fn write_private(path: &Path, value: &Value) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    write_private_text(path, &format!("{text}\n"))
}

/// Writes `text` to `path`, readable by its owner only, replacing the file in one step (a
/// new file renamed over it) so a reader never sees half of it.
pub(crate) fn write_private_text(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?
        .to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    write_new_private(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn write_new_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())
}
