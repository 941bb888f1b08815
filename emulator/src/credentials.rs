//! The credentials the emulator hands out: a service-account key file and an
//! authorized-user (refresh token) file, both pointing at the emulator's token endpoint.

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
            "universe_domain": "googleapis.com",
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
            "universe_domain": "googleapis.com",
        })
    }

    /// Writes both files into `dir` (mode 0600) and returns their paths.
    pub fn write_files(&self, dir: &Path, token_uri: &str) -> std::io::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let sa = dir.join(SERVICE_ACCOUNT_FILE);
        let user = dir.join(AUTHORIZED_USER_FILE);
        write_private(&sa, &self.service_account_json(token_uri))?;
        write_private(&user, &self.authorized_user_json(token_uri))?;
        Ok((sa, user))
    }
}

fn write_private(path: &Path, value: &Value) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")
}
