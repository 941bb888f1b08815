//! End-to-end identity: STS token exchange against the emulator's OIDC identity provider
//! (workload identity federation), IAM Credentials `generateAccessToken` under the fixed
//! IAM policy (impersonation, delegate chains), the credential files that drive them, the
//! subject-token controls, faults and broken answers, and the impersonated principal's
//! automatic IAM database login. The emulator runs in-process (one test runs the binary,
//! to read its log) in front of an echo server standing in for the database.

mod support;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use support::{
    alloydb_mdx_request, dial, dial_verified, form, http, read_alloydb_mdx_response, sa_token,
    start_emulator, start_in_process, startup_message, InProcess, Resp, FORM,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const IAM: &str = "https://www.googleapis.com/auth/iam";
const ADMIN: &str = "https://www.googleapis.com/auth/sqlservice.admin";
const LOGIN: &str = "https://www.googleapis.com/auth/sqlservice.login";
const TARGET: &str = "target-sa@emulator-project.iam.gserviceaccount.com";
const DELEGATE: &str = "delegate-sa@emulator-project.iam.gserviceaccount.com";
const TARGET_DB_USER: &str = "target-sa@emulator-project.iam";
const PROVIDER: &str = "projects/428716093512/locations/global/workloadIdentityPools/\
                        emulator-pool/providers/emulator-oidc";
const WORKLOAD: &str = "principal://iam.googleapis.com/projects/428716093512/locations/global/\
                        workloadIdentityPools/emulator-pool/subject/wasm-workload";
const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const PERMISSION_DENIED: &str =
    "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).";
const INSTANCE: &str = "p:r:pg";

fn audience() -> String {
    format!("//iam.googleapis.com/{PROVIDER}")
}

/// A stand-in database that echoes.
async fn echo_backend() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn emulator() -> InProcess {
    let backend = echo_backend().await;
    start_in_process(&[format!("{INSTANCE},backend={backend},ca=legacy")], 600).await
}

fn read_json(path: &Value) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path.as_str().unwrap()).unwrap()).unwrap()
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("no {k} in {v}"))
}

/// The claims of a JWT, decoded here without the emulator's code.
fn jwt_claims(token: &str) -> Value {
    let part = token.trim().split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// The current subject token, from the file the emulator writes.
fn subject_token(ready: &Value) -> String {
    std::fs::read_to_string(str_of(ready, "subject_token_file")).unwrap()
}

/// The form google-auth sends for a token exchange of `subject` with `scope`.
fn exchange_form(subject: &str, scope: &str) -> Vec<(String, String)> {
    [
        ("grant_type", GRANT),
        ("audience", &audience()),
        ("scope", scope),
        ("requested_token_type", ACCESS_TOKEN),
        ("subject_token", subject),
        ("subject_token_type", JWT),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

async fn sts(ready: &Value, pairs: &[(String, String)], headers: &[(&str, &str)]) -> Resp {
    let body = serde_urlencoded::to_string(pairs).unwrap();
    let mut h = vec![FORM];
    h.extend_from_slice(headers);
    http("POST", str_of(ready, "sts_endpoint"), &h, body.as_bytes()).await
}

/// Expects an OAuth error answer.
fn assert_oauth_error(r: &Resp, status: u16, error: &str, description: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"error": error, "error_description": description}),
        "{}",
        r.body
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

/// A federated token for the subject token in the file.
async fn federated_token(ready: &Value, scope: &str) -> String {
    let r = sts(ready, &exchange_form(&subject_token(ready), scope), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    str_of(&r.json(), "access_token").to_string()
}

/// An access token of the authorized user (the refresh grant's default scopes).
async fn user_token(ready: &Value) -> String {
    let user = read_json(&ready["authorized_user_file"]);
    let r = http(
        "POST",
        str_of(ready, "token_endpoint"),
        &[FORM],
        &form(&[
            ("grant_type", "refresh_token"),
            ("client_id", str_of(&user, "client_id")),
            ("client_secret", str_of(&user, "client_secret")),
            ("refresh_token", str_of(&user, "refresh_token")),
        ]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    str_of(&r.json(), "access_token").to_string()
}

/// `generateAccessToken` of `target` with `caller`'s token and `body`.
async fn generate(ready: &Value, caller: Option<&str>, target: &str, body: Value) -> Resp {
    let url = format!(
        "{}/v1/projects/-/serviceAccounts/{target}:generateAccessToken",
        str_of(ready, "iam_credentials_endpoint")
    );
    let bearer = caller.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b));
    }
    http("POST", &url, &headers, body.to_string().as_bytes()).await
}

/// Expects Google's newer error shape with `code`, `status` and `message`.
fn assert_google_error(r: &Resp, code: u16, status: &str, message: &str) {
    assert_eq!(r.status, code, "{}", r.body);
    let e = &r.json()["error"];
    assert_eq!(
        (&e["code"], &e["status"], e["message"].as_str()),
        (&json!(code), &json!(status), Some(message)),
        "{}",
        r.body
    );
    assert!(
        e.get("errors").is_none(),
        "no legacy errors list: {}",
        r.body
    );
}

/// `connectSettings` of the instance with `token`: its status.
async fn connect_settings_status(ready: &Value, token: &str) -> u16 {
    let url = format!(
        "{}/sql/v1beta4/projects/p/instances/pg/connectSettings",
        str_of(ready, "admin_endpoint")
    );
    http(
        "GET",
        &url,
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    )
    .await
    .status
}

async fn post_json(url: String, body: Value) -> Resp {
    http(
        "POST",
        &url,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_line_and_credential_files() {
    let emu = emulator().await;
    let ready = &emu.ready;
    let admin = str_of(ready, "admin_endpoint");
    let control = emu.control();
    assert_eq!(str_of(ready, "sts_endpoint"), format!("{admin}/v1/token"));
    assert_eq!(str_of(ready, "iam_credentials_endpoint"), admin);
    assert_eq!(
        str_of(ready, "subject_token_url"),
        format!("{control}/subject-token")
    );
    assert_eq!(str_of(ready, "oidc_issuer"), format!("{control}/oidc"));
    assert_eq!(str_of(ready, "workload_identity_audience"), audience());
    assert_eq!(str_of(ready, "workload_principal"), WORKLOAD);
    assert_eq!(str_of(ready, "target_service_account_email"), TARGET);
    assert_eq!(str_of(ready, "delegate_service_account_email"), DELEGATE);
    assert_eq!(str_of(ready, "universe_domain"), "googleapis.com");

    let target_url = format!("{admin}/v1/projects/-/serviceAccounts/{TARGET}:generateAccessToken");
    let key = read_json(&ready["service_account_file"]);
    let user = read_json(&ready["authorized_user_file"]);
    assert_eq!(
        read_json(&ready["impersonated_service_account_file"]),
        json!({
            "delegates": [],
            "service_account_impersonation_url": target_url,
            "source_credentials": key,
            "type": "impersonated_service_account",
        })
    );
    assert_eq!(
        read_json(&ready["impersonated_user_file"]),
        json!({
            "delegates": [format!("projects/-/serviceAccounts/{DELEGATE}")],
            "service_account_impersonation_url": target_url,
            "source_credentials": user,
            "type": "impersonated_service_account",
        })
    );
    let subject_file = str_of(ready, "subject_token_file");
    assert!(
        subject_file.ends_with("/subject-token.jwt"),
        "{subject_file}"
    );
    assert_eq!(
        read_json(&ready["external_account_file"]),
        json!({
            "type": "external_account",
            "audience": audience(),
            "subject_token_type": JWT,
            "token_url": format!("{admin}/v1/token"),
            "credential_source": {"file": subject_file},
            "service_account_impersonation_url": target_url,
            "universe_domain": "googleapis.com",
        })
    );
    let url_file = read_json(&ready["external_account_url_file"]);
    let client_id = str_of(&url_file, "client_id");
    let client_secret = str_of(&url_file, "client_secret");
    assert!(
        client_id.ends_with(".apps.googleusercontent.com"),
        "{client_id}"
    );
    assert!(client_secret.starts_with("GOCSPX-"));
    assert_eq!(
        url_file,
        json!({
            "type": "external_account",
            "audience": audience(),
            "subject_token_type": JWT,
            "token_url": format!("{admin}/v1/token"),
            "credential_source": {
                "url": format!("{control}/subject-token"),
                "headers": {"Metadata": "True"},
                "format": {"type": "json", "subject_token_field_name": "id_token"},
            },
            "client_id": client_id,
            "client_secret": client_secret,
            "universe_domain": "googleapis.com",
        })
    );
    #[cfg(unix)]
    for f in [
        "impersonated_service_account_file",
        "impersonated_user_file",
        "external_account_file",
        "external_account_url_file",
        "subject_token_file",
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(str_of(ready, f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }

    // The subject token: an ID token of the emulator's issuer for the provider, an hour
    // long, and the same at the URL (which wants its header).
    let token = subject_token(ready);
    let claims = jwt_claims(&token);
    assert_eq!(claims["iss"], str_of(ready, "oidc_issuer"));
    assert_eq!(
        claims["aud"],
        format!("https://iam.googleapis.com/{PROVIDER}")
    );
    assert_eq!(claims["sub"], "wasm-workload");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    let url = str_of(ready, "subject_token_url");
    let r = http("GET", url, &[("Metadata", "True")], b"").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["id_token"], token.as_str());
    let r = http("GET", url, &[], b"").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": "invalid_request",
               "error_description": "Required metadata header not specified"})
    );

    // The issuer publishes the key the token's header names.
    let issuer = str_of(ready, "oidc_issuer");
    let disc = http(
        "GET",
        &format!("{issuer}/.well-known/openid-configuration"),
        &[],
        b"",
    )
    .await
    .json();
    assert_eq!(
        (disc["issuer"].as_str(), disc["jwks_uri"].as_str()),
        (Some(issuer), Some(format!("{issuer}/jwks").as_str()))
    );
    let jwks = http("GET", &format!("{issuer}/jwks"), &[], b"")
        .await
        .json();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    emu.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_token_exchange() {
    let emu = emulator().await;
    let ready = &emu.ready;
    let subject = subject_token(ready);

    // --- Success, as google-auth asks: a federated token for the workload's principal.
    let r = sts(
        ready,
        &exchange_form(&subject, &format!("{ADMIN} {LOGIN}")),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    let federated = str_of(&v, "access_token").to_string();
    assert!(federated.starts_with("ya29.emu-"), "{federated}");
    assert_eq!(
        v,
        json!({"access_token": federated, "issued_token_type": ACCESS_TOKEN,
               "token_type": "Bearer", "expires_in": 600})
    );
    // The Admin API takes it, for password logins.
    assert_eq!(connect_settings_status(ready, &federated).await, 200);

    // The id_token type, an `options` without userProject, and client authentication
    // (HTTP Basic, as google-auth sends it, or form fields) are fine too.
    let url_file = read_json(&ready["external_account_url_file"]);
    let (id, secret) = (
        str_of(&url_file, "client_id"),
        str_of(&url_file, "client_secret"),
    );
    let mut f = exchange_form(&subject, CLOUD_PLATFORM);
    f[5].1 = "urn:ietf:params:oauth:token-type:id_token".into();
    f.push(("options".into(), "%7B%7D".into()));
    let basic = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
    let r = sts(ready, &f, &[("Authorization", &basic)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut f = exchange_form(&subject, CLOUD_PLATFORM);
    f.push(("client_id".into(), id.into()));
    f.push(("client_secret".into(), secret.into()));
    assert_eq!(sts(ready, &f, &[]).await.status, 200);

    // --- Refusals, as Google words them.
    let wrong = |k: &str, v: &str| {
        let mut f = exchange_form(&subject, CLOUD_PLATFORM);
        match f.iter_mut().find(|(name, _)| name == k) {
            Some(slot) => slot.1 = v.to_string(),
            None => f.push((k.to_string(), v.to_string())),
        }
        f
    };
    let without = |k: &str| {
        let mut f = exchange_form(&subject, CLOUD_PLATFORM);
        f.retain(|(name, _)| name != k);
        f
    };
    let r = sts(
        ready,
        &wrong("audience", &format!("//iam.googleapis.com/{PROVIDER}x")),
        &[],
    )
    .await;
    assert_oauth_error(
        &r,
        400,
        "invalid_target",
        "The target service indicated by the \"audience\" parameters is invalid. This might \
         either be because the pool or provider is disabled or deleted or because it doesn't \
         exist.",
    );
    for field in [
        "grant_type",
        "audience",
        "requested_token_type",
        "subject_token_type",
        "subject_token",
        "scope",
    ] {
        let r = sts(ready, &without(field), &[]).await;
        assert_oauth_error(
            &r,
            400,
            "invalid_request",
            &format!("Missing required field \"{field}\"."),
        );
    }
    let r = sts(ready, &wrong("grant_type", "refresh_token"), &[]).await;
    assert_oauth_error(
        &r,
        400,
        "unsupported_grant_type",
        &format!("Invalid value for \"grant_type\": \"refresh_token\". Expected \"{GRANT}\"."),
    );
    let r = sts(ready, &wrong("requested_token_type", JWT), &[]).await;
    assert_eq!(
        (r.status, str_of(&r.json(), "error")),
        (400, "invalid_request")
    );
    let saml = "urn:ietf:params:oauth:token-type:saml2";
    let r = sts(ready, &wrong("subject_token_type", saml), &[]).await;
    assert_oauth_error(
        &r,
        400,
        "invalid_request",
        &format!(
            "Invalid value for \"subject_token_type\": \"{saml}\". The provider is an OIDC \
             provider: expected \"{JWT}\" or \"urn:ietf:params:oauth:token-type:id_token\"."
        ),
    );
    let r = sts(ready, &wrong("scope", "cloud-platform"), &[]).await;
    assert_oauth_error(
        &r,
        400,
        "invalid_scope",
        "Invalid value for \"scope\": \"cloud-platform\" is not a valid scope.",
    );
    let user_project = "%7B%22userProject%22%3A%22123%22%7D";
    let r = sts(ready, &wrong("options", user_project), &[]).await;
    assert_eq!(
        (r.status, str_of(&r.json(), "error")),
        (400, "invalid_request")
    );
    assert!(str_of(&r.json(), "error_description").contains("workforce pools"));
    let r = sts(ready, &wrong("options", "%7B"), &[]).await;
    assert_eq!(
        (r.status, str_of(&r.json(), "error")),
        (400, "invalid_request")
    );
    let bad_client = format!("Basic {}", STANDARD.encode(format!("{id}:wrong")));
    let r = sts(
        ready,
        &exchange_form(&subject, CLOUD_PLATFORM),
        &[("Authorization", &bad_client)],
    )
    .await;
    assert_oauth_error(&r, 401, "invalid_client", "The OAuth client was not found.");
    let r = http("POST", str_of(ready, "sts_endpoint"), &[FORM], b"").await;
    assert_oauth_error(
        &r,
        400,
        "invalid_request",
        "Missing required field \"grant_type\".",
    );

    // Subject tokens: a stranger's signature, expired, another audience or issuer, not a JWT.
    let stranger_signed = {
        let (input, _) = subject.trim().rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.encode([7u8; 256]);
        format!("{input}.{sig}")
    };
    let signature = "The ID Token's signature is invalid, or it is not a JWT signed by the \
                     provider's keys.";
    for token in [stranger_signed.as_str(), "not-a-jwt"] {
        let r = sts(ready, &exchange_form(token, CLOUD_PLATFORM), &[]).await;
        assert_oauth_error(&r, 400, "invalid_grant", signature);
    }
    let control = emu.control();
    let rewrite = |body: Value| post_json(format!("{control}/subject-token"), body);
    for (mode, want) in [
        ("bad-signature", signature.to_string()),
        (
            "wrong-audience",
            "The audience in ID Token [https://iam.googleapis.com/projects/0/locations/global/\
             workloadIdentityPools/other-pool/providers/other] does not match the expected \
             audience."
                .to_string(),
        ),
        (
            "wrong-issuer",
            "The issuer in ID Token [https://issuer.invalid] does not match the provider's \
             issuer."
                .to_string(),
        ),
    ] {
        assert_eq!(rewrite(json!({"mode": mode})).await.status, 200, "{mode}");
        let token = subject_token(ready);
        assert_ne!(token, subject, "{mode}: the file was rewritten");
        let r = sts(ready, &exchange_form(&token, CLOUD_PLATFORM), &[]).await;
        assert_oauth_error(&r, 400, "invalid_grant", &want);
    }
    assert_eq!(rewrite(json!({"mode": "expired"})).await.status, 200);
    let expired = subject_token(ready);
    let iat = jwt_claims(&expired)["iat"].as_i64().unwrap();
    assert!(jwt_claims(&expired)["exp"].as_i64().unwrap() < support::now());
    let r = sts(ready, &exchange_form(&expired, CLOUD_PLATFORM), &[]).await;
    assert_oauth_error(
        &r,
        400,
        "invalid_grant",
        &format!("ID Token issued at {iat} is stale to sign-in."),
    );
    // Back to valid: the URL serves what the file holds.
    assert_eq!(rewrite(json!({})).await.status, 200);
    let fresh = subject_token(ready);
    let served = http(
        "GET",
        str_of(ready, "subject_token_url"),
        &[("Metadata", "True")],
        b"",
    )
    .await
    .json();
    assert_eq!(served["id_token"], fresh.as_str());
    assert_eq!(
        sts(ready, &exchange_form(&fresh, CLOUD_PLATFORM), &[])
            .await
            .status,
        200
    );
    for bad in [json!({"mode": "stale"}), json!({"sub": ""}), json!([1])] {
        assert_eq!(rewrite(bad.clone()).await.status, 400, "{bad}");
    }

    // Every call counted, by audience.
    let calls = emu.calls().await;
    let by_audience = calls["sts"][audience()].as_u64().unwrap();
    assert!(by_audience >= 20, "{calls}");
    emu.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_access_token() {
    let emu = emulator().await;
    let ready = &emu.ready;
    let sa_iam = sa_token(ready, &[IAM]).await;
    let sa_platform = sa_token(ready, &[CLOUD_PLATFORM]).await;
    let user = user_token(ready).await;
    let workload = federated_token(ready, IAM).await;
    let body = |scope: &[&str]| json!({"delegates": null, "scope": scope, "lifetime": "3600s"});

    // --- Success: the key file's account, directly, with either scope.
    for caller in [&sa_iam, &sa_platform] {
        let before = support::now();
        let r = generate(ready, Some(caller), TARGET, body(&[CLOUD_PLATFORM])).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["accessToken", "expireTime"]);
        let expire = str_of(&v, "expireTime");
        // Whole seconds, UTC: what google-auth's strptime("%Y-%m-%dT%H:%M:%SZ") takes.
        assert_eq!(expire.len(), 20, "{expire}");
        assert!(expire.ends_with('Z') && !expire.contains('.'), "{expire}");
        let at =
            time::OffsetDateTime::parse(expire, &time::format_description::well_known::Rfc3339)
                .unwrap()
                .unix_timestamp();
        // --token-lifetime-secs 600 caps the hour asked for.
        assert!(
            (before + 599..=support::now() + 600).contains(&at),
            "{expire}"
        );
        let impersonated = str_of(&v, "accessToken");
        assert!(impersonated.starts_with("ya29.emu-"));
        assert_eq!(connect_settings_status(ready, impersonated).await, 200);
    }
    // A shorter lifetime is honoured.
    let r = generate(
        ready,
        Some(&sa_iam),
        TARGET,
        json!({"scope": [ADMIN], "lifetime": "60s"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let at = time::OffsetDateTime::parse(
        str_of(&r.json(), "expireTime"),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    assert!((support::now() + 55..=support::now() + 60).contains(&at));
    // The user, through the delegate; the delegate's own token when the chain is the key's.
    let via_delegate = json!({
        "delegates": [format!("projects/-/serviceAccounts/{DELEGATE}")],
        "scope": [ADMIN],
    });
    let r = generate(ready, Some(&user), TARGET, via_delegate.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = generate(ready, Some(&sa_iam), TARGET, via_delegate.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = generate(ready, Some(&sa_iam), DELEGATE, body(&[CLOUD_PLATFORM])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let delegate_token = str_of(&r.json(), "accessToken").to_string();
    let r = generate(ready, Some(&delegate_token), TARGET, body(&[ADMIN])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The federated workload, and the percent-encoded email google-cloud-rust may send.
    let r = generate(ready, Some(&workload), TARGET, body(&[ADMIN])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = generate(
        ready,
        Some(&workload),
        &TARGET.replace('@', "%40"),
        body(&[ADMIN]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // --- Not allowed, along any link.
    for (caller, target, b) in [
        (&user, TARGET, body(&[ADMIN])),
        (&delegate_token, DELEGATE, body(&[ADMIN])),
        (
            &sa_iam,
            DELEGATE,
            json!({"delegates": [format!("projects/-/serviceAccounts/{TARGET}")], "scope": [ADMIN]}),
        ),
        (&workload, DELEGATE, body(&[ADMIN])),
    ] {
        let r = generate(ready, Some(caller), target, b).await;
        assert_google_error(&r, 403, "PERMISSION_DENIED", PERMISSION_DENIED);
        assert_eq!(
            r.json()["error"]["details"],
            json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "IAM_PERMISSION_DENIED", "domain": "iam.googleapis.com",
                    "metadata": {"permission": "iam.serviceAccounts.getAccessToken"}}])
        );
    }
    // Another federated subject is not the workload the policy names.
    let control = emu.control();
    let r = post_json(
        format!("{control}/subject-token"),
        json!({"sub": "other-workload"}),
    )
    .await;
    assert_eq!(r.status, 200);
    let other = federated_token(ready, IAM).await;
    let r = generate(ready, Some(&other), TARGET, body(&[ADMIN])).await;
    assert_google_error(&r, 403, "PERMISSION_DENIED", PERMISSION_DENIED);

    // --- Unknown service accounts, as target or delegate.
    let nobody = "nobody@emulator-project.iam.gserviceaccount.com";
    let r = generate(ready, Some(&sa_iam), nobody, body(&[ADMIN])).await;
    let gaia = format!("Not found; Gaia id not found for email {nobody}");
    assert_google_error(&r, 404, "NOT_FOUND", &gaia);
    let r = generate(
        ready,
        Some(&sa_iam),
        TARGET,
        json!({"delegates": [format!("projects/-/serviceAccounts/{nobody}")], "scope": [ADMIN]}),
    )
    .await;
    assert_google_error(&r, 404, "NOT_FOUND", &gaia);

    // --- Bad arguments.
    for (b, message) in [
        (json!({"scope": []}), "Scope required.".to_string()),
        (json!({"lifetime": "60s"}), "Scope required.".to_string()),
        (
            json!({"scope": ["cloud-platform"]}),
            "Invalid scope \"cloud-platform\".".to_string(),
        ),
        (
            json!({"scope": [ADMIN], "lifetime": "3601s"}),
            "The lifetime must be between 1s and 3600s; \"3601s\" was requested.".to_string(),
        ),
        (
            json!({"scope": [ADMIN], "lifetime": "0.5s"}),
            "The lifetime must be between 1s and 3600s; \"0.5s\" was requested.".to_string(),
        ),
        (
            json!({"scope": [ADMIN], "lifetime": "1h"}),
            "Invalid lifetime \"1h\": a Duration is seconds with an \"s\" suffix, e.g. \
             \"3600s\"."
                .to_string(),
        ),
        (
            json!({"scope": [ADMIN], "delegates": [DELEGATE]}),
            format!(
                "Invalid delegate \"{DELEGATE}\": delegates must have the format \
                 projects/-/serviceAccounts/{{ACCOUNT_EMAIL_OR_UNIQUEID}}."
            ),
        ),
        (
            json!({"scope": [ADMIN], "other": 1}),
            "Invalid JSON payload received. Unknown name \"other\": Cannot find field.".to_string(),
        ),
    ] {
        let r = generate(ready, Some(&sa_iam), TARGET, b.clone()).await;
        assert_google_error(&r, 400, "INVALID_ARGUMENT", &message);
    }
    let r = generate(ready, Some(&sa_iam), "not-an-email", body(&[ADMIN])).await;
    assert_google_error(
        &r,
        400,
        "INVALID_ARGUMENT",
        "Invalid form of account ID not-an-email. Should be [Gaia ID |Email |Unique ID |] of \
         the account",
    );
    let url = format!(
        "{}/v1/projects/emulator-project/serviceAccounts/{TARGET}:generateAccessToken",
        str_of(ready, "iam_credentials_endpoint")
    );
    let r = http(
        "POST",
        &url,
        &[("Authorization", &format!("Bearer {sa_iam}"))],
        body(&[ADMIN]).to_string().as_bytes(),
    )
    .await;
    assert_eq!(
        (r.status, &r.json()["error"]["status"]),
        (400, &json!("INVALID_ARGUMENT"))
    );

    // --- The caller's token: missing, unknown, expired-or-forged, without the scope.
    let r = generate(ready, None, TARGET, body(&[ADMIN])).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(
        r.json()["error"]["details"][0]["reason"],
        "CREDENTIALS_MISSING"
    );
    let r = generate(ready, Some("ya29.emu-forged"), TARGET, body(&[ADMIN])).await;
    assert_google_error(
        &r,
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, \
         login cookie or other valid authentication credential. See \
         https://developers.google.com/identity/sign-in/web/devconsole-project.",
    );
    assert_eq!(
        r.json()["error"]["details"][0]["metadata"],
        json!({"service": "iamcredentials.googleapis.com",
               "method": "google.iam.credentials.v1.IAMCredentials.GenerateAccessToken"})
    );
    let admin_only = sa_token(ready, &[ADMIN]).await;
    let r = generate(ready, Some(&admin_only), TARGET, body(&[ADMIN])).await;
    assert_google_error(
        &r,
        403,
        "PERMISSION_DENIED",
        "Request had insufficient authentication scopes.",
    );
    assert_eq!(
        r.json()["error"]["details"][0]["reason"],
        "ACCESS_TOKEN_SCOPE_INSUFFICIENT"
    );
    let r = http(
        "GET",
        &format!(
            "{}/v1/projects/-/serviceAccounts/{TARGET}:generateAccessToken",
            str_of(ready, "iam_credentials_endpoint")
        ),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 404);

    let calls = emu.calls().await;
    assert!(
        calls["generateAccessToken"][TARGET].as_u64().unwrap() >= 20,
        "{calls}"
    );
    assert_eq!(calls["generateAccessToken"][DELEGATE], 4, "{calls}");
    emu.running.shutdown().await;
}

/// The impersonated token's principal is the target's, for automatic IAM database
/// authentication as for the Admin API: its login certificate admits the target's
/// database user only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonated_iam_database_login() {
    let emu = emulator().await;
    let ready = &emu.ready;
    let caller = sa_token(ready, &[IAM]).await;
    let r = generate(
        ready,
        Some(&caller),
        TARGET,
        json!({"scope": [ADMIN, LOGIN]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let token = str_of(&r.json(), "accessToken").to_string();
    let admin = str_of(ready, "admin_endpoint");
    let bearer = format!("Bearer {token}");
    let cs = http(
        "GET",
        &format!("{admin}/sql/v1beta4/projects/p/instances/pg/connectSettings"),
        &[("Authorization", &bearer)],
        b"",
    )
    .await
    .json();
    let ip = cs["ipAddresses"][0]["ipAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let ca = cs["serverCaCert"]["cert"].as_str().unwrap().to_string();
    let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let r = http(
        "POST",
        &format!("{admin}/sql/v1beta4/projects/p/instances/pg:generateEphemeralCert"),
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        json!({"public_key": pem, "access_token": token})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let cert = r.json()["ephemeralCert"]["cert"]
        .as_str()
        .unwrap()
        .to_string();

    // The target's database user is admitted: the backend (an echo) gets the StartupMessage.
    let mut tls = dial(&ip, &ca, Some((&cert, &key))).await.result.unwrap();
    let hello = startup_message(TARGET_DB_USER);
    tls.write_all(&hello).await.unwrap();
    let mut back = vec![0u8; hello.len()];
    tls.read_exact(&mut back).await.unwrap();
    assert_eq!(back, hello);
    drop(tls);

    // The caller's own user is not: the certificate stands for the target.
    for user in ["connector-sa@emulator-project.iam", TARGET] {
        let mut tls = dial(&ip, &ca, Some((&cert, &key))).await.result.unwrap();
        tls.write_all(&startup_message(user)).await.unwrap();
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await.unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.contains(&format!(
                "Cloud SQL IAM service account authentication failed for user \"{user}\""
            )),
            "{text}"
        );
    }
    emu.running.shutdown().await;
}

/// The same for AlloyDB: the impersonated token's metadata exchange under `AUTO_IAM`
/// admits the target's database user only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonated_alloydb_auto_iam() {
    const AUTO_IAM: u8 = 2;
    let backend = echo_backend().await;
    let cluster = "projects/p/locations/r/clusters/c";
    let emu = start_in_process(&[format!("{cluster}/instances/i,backend={backend}")], 600).await;
    let ready = &emu.ready;
    let caller = sa_token(ready, &[CLOUD_PLATFORM]).await;
    let r = generate(
        ready,
        Some(&caller),
        TARGET,
        json!({"scope": [CLOUD_PLATFORM]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let token = str_of(&r.json(), "accessToken").to_string();
    let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let r = http(
        "POST",
        &format!(
            "{}/v1beta/{cluster}:generateClientCertificate",
            str_of(ready, "alloydb_admin_endpoint")
        ),
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Content-Type", "application/json"),
        ],
        json!({"publicKey": pem, "useMetadataExchange": true})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let chain: Vec<String> = v["pemCertificateChain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let ip: std::net::IpAddr = str_of(&ready["instances"][0], "private_ip")
        .parse()
        .unwrap();
    for (user, admitted) in [
        (TARGET_DB_USER, true),
        ("connector-sa@emulator-project.iam", false),
    ] {
        let mut tls = dial_verified(
            std::net::SocketAddr::new(ip, 5433),
            rustls::pki_types::ServerName::IpAddress(ip.into()),
            str_of(&v, "caCert"),
            &chain,
            &key,
        )
        .await
        .unwrap();
        tls.write_all(&alloydb_mdx_request("identity-test/1.0", AUTO_IAM, &token))
            .await
            .unwrap();
        let answer = read_alloydb_mdx_response(&mut tls).await.unwrap();
        assert_eq!(answer, (1, String::new()), "the exchange is OK");
        let hello = startup_message(user);
        tls.write_all(&hello).await.unwrap();
        if admitted {
            let mut back = vec![0u8; hello.len()];
            tls.read_exact(&mut back).await.unwrap();
            assert_eq!(back, hello);
        } else {
            let mut answer = Vec::new();
            tls.read_to_end(&mut answer).await.unwrap();
            let text = String::from_utf8_lossy(&answer);
            assert!(
                text.contains(&format!(
                    "AlloyDB IAM authentication failed for user \"{user}\": the IAM token \
                     belongs to database user \"{TARGET_DB_USER}\""
                )),
                "{text}"
            );
        }
    }
    assert_eq!(
        emu.calls().await["alloydbMdxAuthType"][format!("{cluster}/instances/i")],
        json!(["AUTO_IAM", "AUTO_IAM"])
    );
    emu.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_and_broken_answers() {
    let emu = emulator().await;
    let ready = &emu.ready;
    let control = emu.control();
    let caller = sa_token(ready, &[IAM]).await;
    let subject = subject_token(ready);
    let body = json!({"scope": [ADMIN]});

    // Status faults, in Google's newer error shape, consumed in order.
    for method in ["sts", "generateAccessToken"] {
        let r = post_json(
            format!("{control}/faults"),
            json!({"method": method, "status": 503, "count": 1}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = sts(ready, &exchange_form(&subject, CLOUD_PLATFORM), &[]).await;
    assert_google_error(
        &r,
        503,
        "UNAVAILABLE",
        "The service is currently unavailable.",
    );
    assert_eq!(
        sts(ready, &exchange_form(&subject, CLOUD_PLATFORM), &[])
            .await
            .status,
        200
    );
    let r = generate(ready, Some(&caller), TARGET, body.clone()).await;
    assert_google_error(
        &r,
        503,
        "UNAVAILABLE",
        "The service is currently unavailable.",
    );
    assert_eq!(
        generate(ready, Some(&caller), TARGET, body.clone())
            .await
            .status,
        200
    );
    let r = post_json(
        format!("{control}/faults"),
        json!({"method": "sts", "status": 429, "count": 1}),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = sts(ready, &exchange_form(&subject, CLOUD_PLATFORM), &[]).await;
    assert_eq!(r.status, 429);
    assert!(str_of(&r.json()["error"], "message").contains("'sts.googleapis.com'"));

    // Latency.
    for method in ["sts", "generateAccessToken"] {
        let r = post_json(
            format!("{control}/faults"),
            json!({"method": method, "latency_ms": 400}),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let started = Instant::now();
    assert_eq!(
        sts(ready, &exchange_form(&subject, CLOUD_PLATFORM), &[])
            .await
            .status,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    let started = Instant::now();
    assert_eq!(
        generate(ready, Some(&caller), TARGET, body.clone())
            .await
            .status,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(
        http("POST", &format!("{control}/faults/reset"), &[], b"")
            .await
            .status,
        200
    );

    // Broken successes.
    let tamper = |method: &str, mode: &str, field: Option<&str>| {
        let mut b = json!({"method": method, "mode": mode, "count": 1});
        if let Some(f) = field {
            b["field"] = json!(f);
        }
        post_json(format!("{control}/faults/response"), b)
    };
    assert_eq!(
        tamper("sts", "drop-field", Some("access_token"))
            .await
            .status,
        200
    );
    let r = sts(ready, &exchange_form(&subject, CLOUD_PLATFORM), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.json().get("access_token").is_none(), "{}", r.body);
    assert_eq!(r.json()["token_type"], "Bearer");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(
        tamper("generateAccessToken", "drop-field", Some("expireTime"))
            .await
            .status,
        200
    );
    let r = generate(ready, Some(&caller), TARGET, body.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json().as_object().unwrap().len(), 1, "{}", r.body);
    assert_eq!(
        tamper("generateAccessToken", "malformed", None)
            .await
            .status,
        200
    );
    let r = generate(ready, Some(&caller), TARGET, body.clone()).await;
    assert_eq!(r.status, 200);
    assert!(
        serde_json::from_str::<Value>(&r.body).is_err(),
        "{}",
        r.body
    );
    assert_eq!(tamper("sts", "truncated", None).await.status, 200);
    let r = sts(ready, &exchange_form(&subject, CLOUD_PLATFORM), &[]).await;
    assert!(
        serde_json::from_str::<Value>(&r.body).is_err(),
        "{}",
        r.body
    );
    // Certificate modes do not apply.
    for mode in ["cert-expired", "cert-other-key", "ca-not-pem"] {
        assert_eq!(tamper("sts", mode, None).await.status, 400, "{mode}");
        assert_eq!(
            tamper("generateAccessToken", mode, None).await.status,
            400,
            "{mode}"
        );
    }
    emu.running.shutdown().await;
}

/// The binary logs the identity calls (method, path, status) and never a token, subject
/// token, key or client secret, whatever the outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_logs_without_secrets() {
    let backend = echo_backend().await;
    let emu = start_emulator(&[format!("{INSTANCE},backend={backend}")], 600).await;
    let ready = &emu.ready;
    let subject = subject_token(ready);
    let caller = sa_token(ready, &[IAM]).await;
    let user = user_token(ready).await;
    let workload = federated_token(ready, IAM).await;
    let mut secrets = vec![
        subject.trim().to_string(),
        caller.clone(),
        user,
        workload.clone(),
    ];
    for b in [json!({"scope": [ADMIN]}), json!({"scope": []})] {
        let r = generate(ready, Some(&caller), TARGET, b).await;
        if let Some(t) = r.json()["accessToken"].as_str() {
            secrets.push(t.to_string());
        }
    }
    let r = generate(ready, Some(&workload), DELEGATE, json!({"scope": [ADMIN]})).await;
    assert_eq!(r.status, 403);
    let url_file = read_json(&ready["external_account_url_file"]);
    secrets.push(str_of(&url_file, "client_secret").to_string());
    let bad_client = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:wrong", str_of(&url_file, "client_id")))
    );
    let r = sts(
        ready,
        &exchange_form(&subject, IAM),
        &[("Authorization", &bad_client)],
    )
    .await;
    assert_eq!(r.status, 401);
    let r = sts(ready, &exchange_form("not-a-jwt", IAM), &[]).await;
    assert_eq!(r.status, 400);
    assert!(
        !r.body.contains("not-a-jwt"),
        "an error echoes the subject token: {}",
        r.body
    );

    // The last request's log line is there once the binary has written it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = emu.stderr.lock().unwrap().clone();
        if log.contains("POST /v1/token 400") || Instant::now() > deadline {
            break log;
        }
        // Polling the captured log until the line or the deadline.
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(log.contains("POST /v1/token 200"), "{log}");
    assert!(log.contains("POST /v1/token 401"), "{log}");
    assert!(log.contains("POST /v1/token 400"), "{log}");
    assert!(
        log.contains(&format!(
            "POST /v1/projects/-/serviceAccounts/{TARGET}:generateAccessToken 200"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("{WORKLOAD} may not impersonate {DELEGATE}")),
        "{log}"
    );
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "a secret leaked into the log");
    }
    assert!(!log.contains("ya29."), "a token leaked into the log");
}
