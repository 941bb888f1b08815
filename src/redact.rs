//! Text from a server (an Admin API's, a token endpoint's, IAM's, STS's, a
//! proxy's message) made fit for an error: no control characters (which could
//! forge log lines), no secret the request carried and none that merely looks
//! like one (a JWT, an OAuth access token), and no more than a few hundred
//! characters.

use crate::http::Request;

/// At most this many characters of a server's text go into a message.
const MAX_CHARS: usize = 300;

/// `text` for an error message: control characters dropped, each of
/// `secrets` (the request's tokens) and every JWT- or token-shaped word
/// blanked, then cut to a few hundred characters.
pub(crate) fn server_text(text: &str, secrets: &[&str]) -> String {
    // Controls go first, so that none can split a secret and survive it.
    let mut text: String = text.chars().filter(|c| !c.is_control()).collect();
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        if text.contains(secret) {
            text = text.replace(secret, "<token>");
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find(|c: char| token_char(c)) {
        out.push_str(&rest[..i]);
        let end = rest[i..]
            .find(|c: char| !token_char(c))
            .map_or(rest.len(), |e| i + e);
        let word = &rest[i..end];
        out.push_str(if looks_secret(word) { "<token>" } else { word });
        rest = &rest[end..];
    }
    out.push_str(rest);
    // The cut comes last, so no part of a blanked secret is left.
    if out.chars().count() > MAX_CHARS {
        out = out.chars().take(MAX_CHARS).collect();
        out.push('…');
    }
    out
}

/// The secrets `req` carries, for [`server_text`]: its bearer or basic
/// credentials, and the secret fields of its form or JSON body (a login
/// token, a JWT assertion, a refresh token, a client secret, a subject token).
pub(crate) fn request_secrets(req: &Request) -> Vec<String> {
    const FIELDS: [&str; 5] = [
        "access_token",
        "assertion",
        "refresh_token",
        "client_secret",
        "subject_token",
    ];
    let mut secrets: Vec<String> = req
        .headers
        .iter()
        .filter(|(name, _)| name == "authorization")
        .filter_map(|(_, v)| v.split_once(' ').map(|(_, cred)| cred.to_string()))
        .collect();
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_slice(&req.body) {
        secrets.extend(
            FIELDS
                .iter()
                .filter_map(|f| o.get(*f)?.as_str().map(str::to_string)),
        );
    } else {
        secrets.extend(
            form_urlencoded::parse(&req.body)
                .filter(|(k, _)| FIELDS.contains(&k.as_ref()))
                .map(|(_, v)| v.into_owned()),
        );
    }
    secrets.retain(|s| !s.is_empty());
    secrets
}

fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '+' | '=')
}

/// A JWT (three base64url parts, the first a JSON header) or a Google OAuth
/// access token (`ya29.`).
fn looks_secret(word: &str) -> bool {
    let jwt = word.starts_with("eyJ") && word.split('.').filter(|p| !p.is_empty()).count() >= 2;
    jwt || word.contains("ya29.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_secrets_and_token_shapes_are_removed() {
        assert_eq!(
            server_text("bad\r\n[ERROR] forged line\u{1b}[0m", &[]),
            "bad[ERROR] forged line[0m"
        );
        assert_eq!(
            server_text("echo: login=s3cret-login-token!", &["s3cret-login-token"]),
            "echo: login=<token>!"
        );
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
        assert_eq!(
            server_text(&format!("assertion {jwt} rejected"), &[]),
            "assertion <token> rejected"
        );
        assert_eq!(
            server_text("token ya29.a0AfB_by-x, then", &[]),
            "token <token>, then"
        );
        // A control character inside a secret does not save it.
        assert_eq!(
            server_text("s3cret-\nlogin-token", &["s3cret-login-token"]),
            "<token>"
        );
        // Ordinary words and Google's messages stay.
        let m = "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).";
        assert_eq!(server_text(m, &[]), m);
        let long = "x ".repeat(400);
        assert_eq!(server_text(&long, &[]).chars().count(), MAX_CHARS + 1);
    }

    #[test]
    fn a_requests_secrets_are_its_credentials_and_secret_fields() {
        let json = Request::post(
            "https://x".into(),
            "application/json",
            br#"{"public_key":"pk","access_token":"login-tok"}"#.to_vec(),
        )
        .header("authorization", "Bearer api-tok");
        assert_eq!(request_secrets(&json), ["api-tok", "login-tok"]);
        let form = Request::post(
            "https://x".into(),
            "application/x-www-form-urlencoded",
            b"grant_type=refresh_token&client_id=c&client_secret=cs&refresh_token=1%2F%2Frt"
                .to_vec(),
        )
        .header("authorization", "Basic aWQ6c2VjcmV0");
        assert_eq!(request_secrets(&form), ["aWQ6c2VjcmV0", "cs", "1//rt"]);
    }
}
