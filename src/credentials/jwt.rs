//! The JWT-bearer assertion a service-account key signs to get an access token
//! (RFC 7523, as Google's auth libraries build it).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rsa::PrivateKey;
use serde::Serialize;

use crate::error::Error;
use crate::rsa_sign;

/// Google accepts assertions valid for at most one hour.
const ASSERTION_LIFETIME_SECS: u64 = 3600;

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

/// What a service account asserts about itself.
pub(crate) struct Assertion<'a> {
    pub issuer: &'a str,
    pub key_id: Option<&'a str>,
    pub scope: &'a str,
    pub audience: &'a str,
    /// Seconds since the Unix epoch.
    pub issued_at: u64,
}

/// Signs the assertion with RS256: PKCS#1 v1.5 over SHA-256, on rsa 0.10
/// (constant-time; see [`crate::rsa_sign`]).
pub(crate) fn sign(key: &PrivateKey, a: &Assertion<'_>) -> Result<String, Error> {
    let header = Header {
        alg: "RS256",
        typ: "JWT",
        kid: a.key_id,
    };
    let claims = Claims {
        iss: a.issuer,
        scope: a.scope,
        aud: a.audience,
        iat: a.issued_at,
        exp: a.issued_at + ASSERTION_LIFETIME_SECS,
    };
    let signing_input = format!("{}.{}", encode(&header)?, encode(&claims)?);
    let signature = rsa_sign::pkcs1v15_sha256(key, signing_input.as_bytes())
        .map_err(|e| Error::credentials(format!("cannot sign the JWT: {e}")))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

fn encode<T: Serialize>(part: &T) -> Result<String, Error> {
    let json = serde_json::to_vec(part)
        .map_err(|e| Error::credentials(format!("cannot encode the JWT: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

#[cfg(test)]
mod tests {
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::sha2::Sha256;
    use rsa::signature::Verifier;

    use super::*;

    #[test]
    fn signs_a_verifiable_rs256_assertion() {
        let key = PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap();
        let jwt = sign(
            &key,
            &Assertion {
                issuer: "sa@p.iam.gserviceaccount.com",
                key_id: Some("abc123"),
                scope: "https://www.googleapis.com/auth/sqlservice.admin",
                audience: "https://oauth2.googleapis.com/token",
                issued_at: 1_700_000_000,
            },
        )
        .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);

        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], "abc123");

        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "sa@p.iam.gserviceaccount.com");
        assert_eq!(claims["aud"], "https://oauth2.googleapis.com/token");
        assert_eq!(
            claims["scope"],
            "https://www.googleapis.com/auth/sqlservice.admin"
        );
        assert_eq!(claims["iat"], 1_700_000_000u64);
        assert_eq!(claims["exp"], 1_700_003_600u64);

        let sig =
            Signature::try_from(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().as_slice()).unwrap();
        let verifier = VerifyingKey::<Sha256>::new(key.to_public_key());
        let signed = format!("{}.{}", parts[0], parts[1]);
        verifier.verify(signed.as_bytes(), &sig).unwrap();
        // A changed claim no longer verifies.
        assert!(verifier.verify(b"x.y", &sig).is_err());
    }

    #[test]
    fn omits_kid_when_the_key_has_no_id() {
        let key = PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap();
        let jwt = sign(
            &key,
            &Assertion {
                issuer: "i",
                key_id: None,
                scope: "s",
                audience: "a",
                issued_at: 1,
            },
        )
        .unwrap();
        let header = URL_SAFE_NO_PAD
            .decode(jwt.split('.').next().unwrap())
            .unwrap();
        assert!(!String::from_utf8(header).unwrap().contains("kid"));
    }
}
