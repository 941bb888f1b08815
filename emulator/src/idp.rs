//! The external OpenID Connect identity provider the workload identity pool trusts: an
//! RSA signing key made at start, an issuer URL (with its discovery document and JWKS), and
//! the subject token (an ID token for the pool's provider) it hands the workload, kept in a
//! file in the state dir and served at a URL. Tests rewrite it (another subject, expired,
//! signed by a stranger, for another audience or issuer) to see a client read it again.
//! STS verifies subject tokens against this provider.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Value};

use crate::credentials::write_private_text;
use crate::jwt::{self, SKEW_SECS};
use crate::workload_identity::token_audience;

/// How long the subject tokens the provider issues last.
pub const SUBJECT_TOKEN_LIFETIME_SECS: i64 = 3600;

/// How a rewritten subject token is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectTokenMode {
    /// Valid for an hour from now.
    Valid,
    /// Issued two hours ago, expired an hour ago.
    Expired,
    /// Its signature is not over its own header and claims.
    BadSignature,
    /// For an audience other than the pool's provider.
    WrongAudience,
    /// From an issuer other than the provider.
    WrongIssuer,
}

impl SubjectTokenMode {
    /// Every mode, for parsing and error texts.
    pub const ALL: [Self; 5] = [
        Self::Valid,
        Self::Expired,
        Self::BadSignature,
        Self::WrongAudience,
        Self::WrongIssuer,
    ];

    /// The name the control call takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Expired => "expired",
            Self::BadSignature => "bad-signature",
            Self::WrongAudience => "wrong-audience",
            Self::WrongIssuer => "wrong-issuer",
        }
    }

    /// The mode called `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Why a subject token was refused. None of these carries the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectTokenError {
    /// Not a JWT, not RS256, an unknown key id, or a bad signature.
    Signature,
    /// `iss` is not the provider (the value found).
    Issuer(String),
    /// `aud` is not the provider's audience (the value found).
    Audience(String),
    /// `exp` has passed (the token's `iat`).
    Expired(i64),
    /// `iat` or `exp` missing, or `iat` in the future.
    Timeframe,
    /// No `sub`.
    Subject,
}

/// A verified subject token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// Its `sub`.
    pub subject: String,
}

/// The identity provider.
pub struct Idp {
    key: RsaPrivateKey,
    public_key: RsaPublicKey,
    key_id: String,
    issuer: String,
    token_file: PathBuf,
    /// The current subject token; the lock also serializes rewrites of the file.
    current: Mutex<String>,
}

impl std::fmt::Debug for Idp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key or the token.
        f.debug_struct("Idp")
            .field("key_id", &self.key_id)
            .field("issuer", &self.issuer)
            .field("token_file", &self.token_file)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Idp {
    /// The provider at `issuer` signing with `key`; it writes a valid subject token for
    /// `subject` to `token_file` at once.
    pub fn new(
        key: RsaPrivateKey,
        issuer: String,
        token_file: PathBuf,
        subject: &str,
    ) -> std::io::Result<Self> {
        let public_key = key.to_public_key();
        let idp = Self {
            key,
            public_key,
            key_id: crate::certs::hex_lower(&rand::random::<[u8; 20]>()),
            issuer,
            token_file,
            current: Mutex::new(String::new()),
        };
        idp.rewrite(subject, SubjectTokenMode::Valid)?;
        Ok(idp)
    }

    /// The issuer URL (`iss` of its tokens).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Where the subject token is written.
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// The current subject token.
    pub fn current(&self) -> String {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, String> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A subject token for `subject`, made as `mode` says.
    pub fn mint(&self, subject: &str, mode: SubjectTokenMode) -> String {
        let now = unix_now();
        let (iat, exp) = match mode {
            SubjectTokenMode::Expired => (now - 2 * SUBJECT_TOKEN_LIFETIME_SECS, now - 3600),
            _ => (now, now + SUBJECT_TOKEN_LIFETIME_SECS),
        };
        let mut claims = json!({
            "iss": self.issuer,
            "aud": token_audience(),
            "sub": subject,
            "iat": iat,
            "exp": exp,
        });
        match mode {
            SubjectTokenMode::WrongAudience => {
                claims["aud"] = json!("https://iam.googleapis.com/projects/0/locations/global/workloadIdentityPools/other-pool/providers/other");
            }
            SubjectTokenMode::WrongIssuer => {
                claims["iss"] = json!("https://issuer.invalid");
            }
            _ => {}
        }
        let token = jwt::sign(&self.key, Some(&self.key_id), &claims);
        if mode != SubjectTokenMode::BadSignature {
            return token;
        }
        // A genuine signature by the provider's key, but over other claims.
        claims["jti"] = json!("other");
        let other = jwt::sign(&self.key, Some(&self.key_id), &claims);
        let (input, _) = token.rsplit_once('.').unwrap_or((&token, ""));
        let (_, signature) = other.rsplit_once('.').unwrap_or(("", ""));
        format!("{input}.{signature}")
    }

    /// Replaces the subject token (file and URL) with a new one for `subject`, made as
    /// `mode` says.
    pub fn rewrite(&self, subject: &str, mode: SubjectTokenMode) -> std::io::Result<()> {
        let token = self.mint(subject, mode);
        let mut current = self.lock();
        write_private_text(&self.token_file, &token)?;
        *current = token;
        Ok(())
    }

    /// Verifies `token` as STS does: signed by this provider, from its issuer, for the
    /// pool's provider, not expired (with [`SKEW_SECS`] of leeway), with a subject.
    pub fn verify(&self, token: &str) -> Result<Subject, SubjectTokenError> {
        let claims = jwt::verified_claims(token, &self.public_key, &self.key_id)
            .map_err(|_| SubjectTokenError::Signature)?;
        let str_claim = |k: &str| claims.get(k).and_then(Value::as_str);
        let iss = str_claim("iss").unwrap_or_default();
        if iss != self.issuer {
            return Err(SubjectTokenError::Issuer(iss.to_string()));
        }
        let want = token_audience();
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == want,
            Some(Value::Array(all)) => all.iter().any(|a| a.as_str() == Some(&want)),
            _ => false,
        };
        if !aud_ok {
            let found = match claims.get("aud") {
                Some(Value::String(a)) => a.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            return Err(SubjectTokenError::Audience(found));
        }
        let (Some(iat), Some(exp)) = (
            claims.get("iat").and_then(Value::as_i64),
            claims.get("exp").and_then(Value::as_i64),
        ) else {
            return Err(SubjectTokenError::Timeframe);
        };
        let now = unix_now();
        if exp + SKEW_SECS <= now {
            return Err(SubjectTokenError::Expired(iat));
        }
        if iat > now + SKEW_SECS || exp <= iat {
            return Err(SubjectTokenError::Timeframe);
        }
        match str_claim("sub") {
            Some(s) if !s.is_empty() => Ok(Subject {
                subject: s.to_string(),
            }),
            _ => Err(SubjectTokenError::Subject),
        }
    }

    /// The OpenID Connect discovery document (`{issuer}/.well-known/openid-configuration`).
    pub fn discovery(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/jwks", self.issuer),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })
    }

    /// The provider's public keys as a JWK set (`{issuer}/jwks`).
    pub fn jwks(&self) -> Value {
        let b64 = |bytes: Vec<u8>| URL_SAFE_NO_PAD.encode(bytes);
        json!({"keys": [{
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.key_id,
            "n": b64(self.public_key.n().to_bytes_be()),
            "e": b64(self.public_key.e().to_bytes_be()),
        }]})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn key() -> RsaPrivateKey {
        static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap())
            .clone()
    }

    fn idp() -> (Idp, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("gcp-emulator-idp-{:x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("subject-token.jwt");
        let idp = Idp::new(key(), "http://127.0.0.1:1/oidc".into(), file, "w").unwrap();
        (idp, dir)
    }

    fn claims(token: &str) -> Value {
        let part = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn writes_and_verifies_its_tokens() {
        let (idp, dir) = idp();
        let token = std::fs::read_to_string(idp.token_file()).unwrap();
        assert_eq!(token, idp.current());
        assert_eq!(
            idp.verify(&token),
            Ok(Subject {
                subject: "w".into()
            })
        );
        let c = claims(&token);
        assert_eq!(c["iss"], "http://127.0.0.1:1/oidc");
        assert_eq!(c["aud"], token_audience());
        assert_eq!(
            c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
            SUBJECT_TOKEN_LIFETIME_SECS
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(idp.token_file())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        idp.rewrite("other", SubjectTokenMode::Valid).unwrap();
        let token = std::fs::read_to_string(idp.token_file()).unwrap();
        assert_eq!(idp.verify(&token).unwrap().subject, "other");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_broken_tokens() {
        let (idp, dir) = idp();
        let expired = idp.mint("w", SubjectTokenMode::Expired);
        let iat = claims(&expired)["iat"].as_i64().unwrap();
        assert_eq!(idp.verify(&expired), Err(SubjectTokenError::Expired(iat)));
        let bad = idp.mint("w", SubjectTokenMode::BadSignature);
        assert_eq!(claims(&bad)["sub"], "w", "only the signature is wrong");
        assert_eq!(idp.verify(&bad), Err(SubjectTokenError::Signature));
        assert!(matches!(
            idp.verify(&idp.mint("w", SubjectTokenMode::WrongAudience)),
            Err(SubjectTokenError::Audience(a)) if a.contains("other-pool")
        ));
        assert_eq!(
            idp.verify(&idp.mint("w", SubjectTokenMode::WrongIssuer)),
            Err(SubjectTokenError::Issuer("https://issuer.invalid".into()))
        );
        assert_eq!(idp.verify("not a jwt"), Err(SubjectTokenError::Signature));
        // Signed by the key, but without a subject or times.
        let no_sub = jwt::sign(
            &idp.key,
            Some(&idp.key_id),
            &json!({"iss": idp.issuer(), "aud": token_audience(), "iat": unix_now(),
                    "exp": unix_now() + 60}),
        );
        assert_eq!(idp.verify(&no_sub), Err(SubjectTokenError::Subject));
        let no_exp = jwt::sign(
            &idp.key,
            Some(&idp.key_id),
            &json!({"iss": idp.issuer(), "aud": [token_audience()], "sub": "w"}),
        );
        assert_eq!(idp.verify(&no_exp), Err(SubjectTokenError::Timeframe));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn modes_round_trip_and_keys_are_published() {
        for m in SubjectTokenMode::ALL {
            assert_eq!(SubjectTokenMode::parse(m.name()), Some(m));
        }
        assert_eq!(SubjectTokenMode::parse("stale"), None);
        let (idp, dir) = idp();
        let jwks = idp.jwks();
        assert_eq!(jwks["keys"][0]["kid"], idp.key_id.as_str());
        assert_eq!(jwks["keys"][0]["e"], "AQAB");
        assert_eq!(idp.discovery()["jwks_uri"], "http://127.0.0.1:1/oidc/jwks");
        assert!(!format!("{idp:?}").contains(&idp.current()));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
