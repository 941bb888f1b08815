//! A service account's self-signed JWT as the bearer token of an API call (AIP-4111), as
//! Google's APIs take one and google-auth sends one for every GAPIC client with
//! service-account credentials (the AlloyDB Python connector's Admin API client among
//! them): signed by the key file's key, `iss` = `sub` = its email, and a `scope` claim or
//! the API's own audience.

mod support;

use rsa::pkcs8::DecodePrivateKey;
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use support::{http, now, start_in_process, InProcess};

const CLOUD_SQL: &str = "jwt-project:us-central1:csql";
const ALLOYDB: &str = "projects/jwt-project/locations/us-central1/clusters/c/instances/i";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const SQL_ADMIN: &str = "https://www.googleapis.com/auth/sqlservice.admin";

async fn emulator() -> InProcess {
    start_in_process(
        &[
            format!("{CLOUD_SQL},backend=127.0.0.1:1"),
            format!("{ALLOYDB},backend=127.0.0.1:1"),
        ],
        600,
    )
    .await
}

/// The service-account key file: its key, key id and email.
fn key_file(emu: &InProcess) -> (RsaPrivateKey, String, String) {
    let path = emu.ready["service_account_file"].as_str().unwrap();
    let sa: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let key = RsaPrivateKey::from_pkcs8_pem(sa["private_key"].as_str().unwrap()).unwrap();
    let id = sa["private_key_id"].as_str().unwrap().to_string();
    (key, id, sa["client_email"].as_str().unwrap().to_string())
}

/// The status of connectSettings and of connectionInfo with `bearer`.
async fn statuses(emu: &InProcess, bearer: &str) -> (u16, u16) {
    let base = emu.ready["admin_endpoint"].as_str().unwrap();
    let auth = [("Authorization", format!("Bearer {bearer}"))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sql = http(
        "GET",
        &format!("{base}/sql/v1beta4/projects/jwt-project/instances/csql/connectSettings"),
        &auth,
        b"",
    )
    .await;
    let alloydb = http(
        "GET",
        &format!("{base}/v1beta/{ALLOYDB}/connectionInfo"),
        &auth,
        b"",
    )
    .await;
    (sql.status, alloydb.status)
}

#[tokio::test]
async fn self_signed_jwts_are_taken_like_google_takes_them() {
    let emu = emulator().await;
    let (key, kid, email) = key_file(&emu);
    let sign = |claims: Value| gcp_emulator::jwt::sign_for_tests(&key, Some(&kid), &claims);
    let base = |extra: Value| {
        let mut c = json!({"iss": email, "sub": email, "iat": now(), "exp": now() + 3600});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };

    // google-auth's: a scope claim, no audience. Good for every API that scope opens.
    let scoped = sign(base(json!({"scope": CLOUD_PLATFORM})));
    assert_eq!(statuses(&emu, &scoped).await, (200, 200));
    // Cloud SQL's own scope: Cloud SQL takes it, AlloyDB says the scope is not enough.
    let sql_only = sign(base(json!({"scope": SQL_ADMIN})));
    assert_eq!(statuses(&emu, &sql_only).await, (200, 403));
    // An audience instead: only that API.
    let alloydb_aud = sign(base(json!({"aud": "https://alloydb.googleapis.com/"})));
    assert_eq!(statuses(&emu, &alloydb_aud).await, (401, 200));

    // Refused as an unknown token: another key, another subject, expired, too long.
    let other_key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let forged = gcp_emulator::jwt::sign_for_tests(
        &other_key,
        Some(&kid),
        &base(json!({"scope": CLOUD_PLATFORM})),
    );
    let other_sub = sign(base(json!({"scope": CLOUD_PLATFORM,
                                     "sub": "target-sa@emulator-project.iam.gserviceaccount.com"})));
    let expired = sign(base(json!({"scope": CLOUD_PLATFORM,
                                   "iat": now() - 7200, "exp": now() - 3600})));
    let too_long = sign(base(json!({"scope": CLOUD_PLATFORM, "exp": now() + 7200})));
    for bad in [forged, other_sub, expired, too_long] {
        assert_eq!(statuses(&emu, &bad).await, (401, 401), "{bad}");
    }
}
