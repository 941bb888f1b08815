//! RS256 JWTs: verification of the JWT-bearer assertions (RFC 7523) that service accounts
//! send to the token endpoint, with Google's error texts; the signature check alone, for
//! the identity provider's subject tokens; and signing.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier as _;
use rsa::RsaPublicKey;
use serde_json::Value;
use sha2::Sha256;

/// Longest assertion lifetime Google accepts.
pub const MAX_LIFETIME_SECS: i64 = 3600;
/// Clock skew tolerated on `iat` / `exp`.
pub const SKEW_SECS: i64 = 60;

/// base64url, with or without padding (libraries differ).
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What an assertion must match.
#[derive(Debug)]
pub struct Expected<'a> {
    /// The service account's public key.
    pub public_key: &'a RsaPublicKey,
    /// `private_key_id`; the header `kid`, when present, must equal it.
    pub key_id: &'a str,
    /// `client_email`; the `iss` claim.
    pub issuer: &'a str,
    /// Accepted `aud` values; the first is named in the error text.
    pub audiences: &'a [String],
}

/// Why an assertion was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Bad structure, algorithm, key id or signature.
    Signature,
    /// `iat`/`exp` missing, expired, in the future or more than an hour apart.
    Timeframe,
    /// `aud` is not the token endpoint.
    Audience(String),
    /// `iss` is not the emulator's service account.
    Issuer,
    /// No `scope` claim.
    Scope,
}

impl JwtError {
    /// The OAuth2 `error` and `error_description` Google answers with (HTTP 400).
    pub fn oauth_error(&self) -> (&'static str, String) {
        match self {
            Self::Signature => ("invalid_grant", "Invalid JWT Signature.".into()),
            Self::Timeframe => (
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
                 timeframe. Check your iat and exp values in the JWT claim."
                    .into(),
            ),
            Self::Audience(right) => (
                "invalid_grant",
                format!("Invalid JWT: Failed audience check. The right audience is {right}"),
            ),
            Self::Issuer => ("invalid_grant", "Invalid grant: account not found".into()),
            Self::Scope => (
                "invalid_scope",
                "Invalid OAuth scope or ID token audience provided.".into(),
            ),
        }
    }
}

/// A verified assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Scopes from the space-separated `scope` claim.
    pub scopes: Vec<String>,
}

/// The claims of `jwt` if it is an RS256 JWT signed by `public_key` whose header `kid`,
/// when present, is `key_id`; `Err(JwtError::Signature)` for anything else.
pub fn verified_claims(
    jwt: &str,
    public_key: &RsaPublicKey,
    key_id: &str,
) -> Result<Value, JwtError> {
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Signature);
    };
    let header: Value = decode_json(h)?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(JwtError::Signature);
    }
    if let Some(kid) = header.get("kid") {
        if kid.as_str() != Some(key_id) {
            return Err(JwtError::Signature);
        }
    }
    let sig_bytes = B64.decode(s).map_err(|_| JwtError::Signature)?;
    let signature = Signature::try_from(sig_bytes.as_slice()).map_err(|_| JwtError::Signature)?;
    let signing_input = &jwt[..h.len() + 1 + c.len()];
    VerifyingKey::<Sha256>::new(public_key.clone())
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| JwtError::Signature)?;
    decode_json(c)
}

/// Verifies `jwt` against `expected` at `now` (Unix seconds).
pub fn verify(jwt: &str, expected: &Expected<'_>, now: i64) -> Result<Verified, JwtError> {
    let claims = verified_claims(jwt, expected.public_key, expected.key_id)?;
    if claims.get("iss").and_then(Value::as_str) != Some(expected.issuer) {
        return Err(JwtError::Issuer);
    }
    let aud_ok = claims
        .get("aud")
        .and_then(Value::as_str)
        .is_some_and(|a| expected.audiences.iter().any(|e| e == a));
    if !aud_ok {
        let right = expected.audiences.first().cloned().unwrap_or_default();
        return Err(JwtError::Audience(right));
    }
    let (Some(iat), Some(exp)) = (
        claims.get("iat").and_then(Value::as_i64),
        claims.get("exp").and_then(Value::as_i64),
    ) else {
        return Err(JwtError::Timeframe);
    };
    if exp <= iat
        || exp - iat > MAX_LIFETIME_SECS
        || exp + SKEW_SECS <= now
        || iat > now + SKEW_SECS
    {
        return Err(JwtError::Timeframe);
    }
    let scopes: Vec<String> = claims
        .get("scope")
        .and_then(Value::as_str)
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    if scopes.is_empty() {
        return Err(JwtError::Scope);
    }
    Ok(Verified { scopes })
}

/// What a self-signed JWT used as an access token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfSigned {
    /// The scopes it carries: its `scope` claim, or, for one with the API's audience and no
    /// `scope`, cloud-platform (it is good for that whole API).
    pub scopes: Vec<String>,
    /// Its `exp` (Unix seconds).
    pub exp: i64,
}

/// Checks `jwt` as Google checks a service account's self-signed JWT sent as a bearer
/// token instead of an OAuth2 access token (AIP-4111, "service account authorization
/// without OAuth"; google-auth sends one whenever a GAPIC client has service-account
/// credentials): RS256, signed by `public_key` (header `kid`, when present, `key_id`),
/// `iss` and `sub` the service account `email`, at most an hour long and current at `now`,
/// and either a `scope` claim or `aud` the API's URL, `https://{service}/`. `None` for
/// anything else, which the API answers as it answers an unknown token.
pub fn self_signed_access(
    jwt: &str,
    public_key: &RsaPublicKey,
    key_id: &str,
    email: &str,
    service: &str,
    now: i64,
) -> Option<SelfSigned> {
    let claims = verified_claims(jwt, public_key, key_id).ok()?;
    let text = |k: &str| claims.get(k).and_then(Value::as_str);
    if text("iss") != Some(email) || text("sub") != Some(email) {
        return None;
    }
    let iat = claims.get("iat").and_then(Value::as_i64)?;
    let exp = claims.get("exp").and_then(Value::as_i64)?;
    if exp <= iat
        || exp - iat > MAX_LIFETIME_SECS
        || exp + SKEW_SECS <= now
        || iat > now + SKEW_SECS
    {
        return None;
    }
    let scopes: Vec<String> = text("scope")
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    if !scopes.is_empty() {
        return Some(SelfSigned { scopes, exp });
    }
    let audience = format!("https://{service}/");
    (text("aud") == Some(audience.as_str())).then(|| SelfSigned {
        scopes: vec![crate::tokens::SCOPE_CLOUD_PLATFORM.to_string()],
        exp,
    })
}

fn decode_json(part: &str) -> Result<Value, JwtError> {
    let bytes = B64.decode(part).map_err(|_| JwtError::Signature)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| JwtError::Signature)?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(JwtError::Signature)
    }
}

/// Test helper: signs `claims` with RS256 (used by unit and integration tests).
#[doc(hidden)]
pub fn sign_for_tests(key: &rsa::RsaPrivateKey, kid: Option<&str>, claims: &Value) -> String {
    sign(key, kid, claims)
}

/// An RS256 JWT of `claims` signed with `key`, with `kid` in its header if given.
pub fn sign(key: &rsa::RsaPrivateKey, kid: Option<&str>, claims: &Value) -> String {
    use rsa::pkcs1v15::SigningKey;
    use rsa::signature::{SignatureEncoding, Signer};
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = Value::from(kid);
    }
    let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let input = format!(
        "{}.{}",
        enc.encode(header.to_string()),
        enc.encode(claims.to_string())
    );
    let sig = SigningKey::<Sha256>::new(key.clone()).sign(input.as_bytes());
    format!("{input}.{}", enc.encode(sig.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::OnceLock;

    const AUD: &str = "http://127.0.0.1:1/token";
    const ISS: &str = "sa@p.iam.gserviceaccount.com";

    fn keys() -> &'static (rsa::RsaPrivateKey, rsa::RsaPrivateKey) {
        static KEYS: OnceLock<(rsa::RsaPrivateKey, rsa::RsaPrivateKey)> = OnceLock::new();
        KEYS.get_or_init(|| {
            let mut rng = rand::rngs::OsRng;
            (
                rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap(),
                rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap(),
            )
        })
    }

    fn check(jwt: &str, now: i64) -> Result<Verified, JwtError> {
        let public = keys().0.to_public_key();
        let auds = [
            AUD.to_string(),
            "https://oauth2.googleapis.com/token".to_string(),
        ];
        verify(
            jwt,
            &Expected {
                public_key: &public,
                key_id: "kid1",
                issuer: ISS,
                audiences: &auds,
            },
            now,
        )
    }

    fn claims(aud: &str, iat: i64, exp: i64) -> Value {
        json!({"iss": ISS, "aud": aud, "iat": iat, "exp": exp,
               "scope": "https://www.googleapis.com/auth/sqlservice.admin x"})
    }

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn good_assertion_passes() {
        let jwt = sign_for_tests(&keys().0, Some("kid1"), &claims(AUD, NOW, NOW + 3600));
        let v = check(&jwt, NOW).unwrap();
        assert_eq!(
            v.scopes,
            vec!["https://www.googleapis.com/auth/sqlservice.admin", "x"]
        );
        // No kid and Google's own audience are fine too.
        let jwt = sign_for_tests(
            &keys().0,
            None,
            &claims("https://oauth2.googleapis.com/token", NOW, NOW + 60),
        );
        assert!(check(&jwt, NOW).is_ok());
    }

    #[test]
    fn bad_signature_rejected() {
        let jwt = sign_for_tests(&keys().1, Some("kid1"), &claims(AUD, NOW, NOW + 3600));
        assert_eq!(check(&jwt, NOW), Err(JwtError::Signature));
        let good = sign_for_tests(&keys().0, Some("kid1"), &claims(AUD, NOW, NOW + 3600));
        let (input, _) = good.rsplit_once('.').unwrap();
        assert_eq!(
            check(&format!("{input}.AAAA"), NOW),
            Err(JwtError::Signature)
        );
        assert_eq!(check("not-a-jwt", NOW), Err(JwtError::Signature));
        let wrong_kid = sign_for_tests(&keys().0, Some("other"), &claims(AUD, NOW, NOW + 3600));
        assert_eq!(check(&wrong_kid, NOW), Err(JwtError::Signature));
        let (e, d) = JwtError::Signature.oauth_error();
        assert_eq!((e, d.as_str()), ("invalid_grant", "Invalid JWT Signature."));
    }

    #[test]
    fn wrong_audience_rejected() {
        let jwt = sign_for_tests(
            &keys().0,
            None,
            &claims("https://example.com/token", NOW, NOW + 3600),
        );
        assert_eq!(check(&jwt, NOW), Err(JwtError::Audience(AUD.into())));
    }

    #[test]
    fn expired_rejected() {
        let jwt = sign_for_tests(&keys().0, None, &claims(AUD, NOW - 7200, NOW - 3600));
        assert_eq!(check(&jwt, NOW), Err(JwtError::Timeframe));
        // Within the skew still passes.
        let jwt = sign_for_tests(&keys().0, None, &claims(AUD, NOW - 3630, NOW - 30));
        assert!(check(&jwt, NOW).is_ok());
    }

    #[test]
    fn long_lived_rejected() {
        let jwt = sign_for_tests(&keys().0, None, &claims(AUD, NOW, NOW + 3601));
        assert_eq!(check(&jwt, NOW), Err(JwtError::Timeframe));
        let (e, d) = JwtError::Timeframe.oauth_error();
        assert_eq!(e, "invalid_grant");
        assert!(d.starts_with("Invalid JWT: Token must be a short-lived token (60 minutes)"));
    }

    #[test]
    fn missing_scope_or_issuer_rejected() {
        let mut c = claims(AUD, NOW, NOW + 60);
        c.as_object_mut().unwrap().remove("scope");
        let jwt = sign_for_tests(&keys().0, None, &c);
        assert_eq!(check(&jwt, NOW), Err(JwtError::Scope));
        assert_eq!(JwtError::Scope.oauth_error().0, "invalid_scope");
        let mut c = claims(AUD, NOW, NOW + 60);
        c["iss"] = json!("someone@else");
        let jwt = sign_for_tests(&keys().0, None, &c);
        assert_eq!(check(&jwt, NOW), Err(JwtError::Issuer));
        let mut c = claims(AUD, NOW, NOW + 60);
        c.as_object_mut().unwrap().remove("iat");
        let jwt = sign_for_tests(&keys().0, None, &c);
        assert_eq!(check(&jwt, NOW), Err(JwtError::Timeframe));
    }

    #[test]
    fn self_signed_access_tokens() {
        let public = keys().0.to_public_key();
        let svc = "alloydb.googleapis.com";
        let check = |jwt: &str| self_signed_access(jwt, &public, "kid1", ISS, svc, NOW);
        // google-auth's: iss = sub, a scope claim, no aud.
        let scoped = json!({"iss": ISS, "sub": ISS, "iat": NOW, "exp": NOW + 3600,
                            "scope": "https://www.googleapis.com/auth/cloud-platform"});
        let jwt = sign_for_tests(&keys().0, Some("kid1"), &scoped);
        assert_eq!(
            check(&jwt),
            Some(SelfSigned {
                scopes: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
                exp: NOW + 3600
            })
        );
        // Or the API's audience instead of a scope: good for that API only.
        let aud = json!({"iss": ISS, "sub": ISS, "iat": NOW, "exp": NOW + 60,
                         "aud": "https://alloydb.googleapis.com/"});
        let jwt = sign_for_tests(&keys().0, None, &aud);
        assert!(check(&jwt).is_some());
        assert_eq!(
            self_signed_access(&jwt, &public, "kid1", ISS, "sqladmin.googleapis.com", NOW),
            None
        );
        // Everything else: another key or kid, another subject, too long, expired, neither
        // scope nor audience, an access token.
        let refused = [
            sign_for_tests(&keys().1, Some("kid1"), &scoped),
            sign_for_tests(&keys().0, Some("kid2"), &scoped),
            sign_for_tests(&keys().0, None, &{
                let mut c = scoped.clone();
                c["sub"] = json!("other@p.iam.gserviceaccount.com");
                c
            }),
            sign_for_tests(&keys().0, None, &{
                let mut c = scoped.clone();
                c["exp"] = json!(NOW + 3601);
                c
            }),
            sign_for_tests(&keys().0, None, &{
                let mut c = scoped.clone();
                c["iat"] = json!(NOW - 7200);
                c["exp"] = json!(NOW - 3600);
                c
            }),
            sign_for_tests(
                &keys().0,
                None,
                &json!({"iss": ISS, "sub": ISS, "iat": NOW,
                                                    "exp": NOW + 60}),
            ),
            "ya29.emu-abc".to_string(),
        ];
        for jwt in refused {
            assert_eq!(check(&jwt), None, "{jwt}");
        }
    }
}
