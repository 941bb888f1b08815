//! Credentials without long-lived keys, through the component against the
//! emulator (which serves STS, IAM Credentials and an OIDC issuer, and writes
//! the files `gcloud` would) and a real PostgreSQL: an
//! `impersonated_service_account` file (a key or a user as its source, with a
//! delegate), the config's impersonation on top of a key (Cloud SQL and
//! AlloyDB), and `external_account` files (Workload Identity Federation) with
//! a subject token from a file and from a URL. Each logs in with a password
//! and, where a service account is impersonated, as that account by automatic
//! IAM authentication. Then what must fail: a refused delegate chain, STS and
//! IAM refusals, a missing subject token, a universe mismatch.

mod support;

use gcp_db_host::connector::{
    Config, ConnectOptions, Credentials, Error, Impersonation, ResourceAny,
};
use gcp_db_host::query::{connect_and_query, Login, QueryError};
use gcp_db_host::ConnectorInstance;
use serde_json::Value;
use support::{assert_no_secrets, Emulator};

const INSTANCE: &str = "proj:us-central1:creds";
const PROJECT_INSTANCE: &str = "proj:creds";
const ALLOYDB: &str = "projects/proj/locations/us-central1/clusters/cl/instances/creds";
/// The service account the emulator's files impersonate, as a Postgres IAM
/// user.
const TARGET_USER: &str = "target-sa@emulator-project.iam";
const TARGET: &str = "target-sa@emulator-project.iam.gserviceaccount.com";

fn emulator() -> Emulator {
    Emulator::start(&[
        &format!("{INSTANCE},backend={{pg}}"),
        &format!("{ALLOYDB},backend={{pg}}"),
    ])
}

/// The JSON of a file the emulator wrote (named by its ready line's `field`).
fn file(emu: &Emulator, field: &str) -> String {
    let path = emu.ready[field]
        .as_str()
        .unwrap_or_else(|| panic!("the emulator's ready line has no {field}"));
    std::fs::read_to_string(path).unwrap()
}

/// An `external_account` file as the component sees it: its subject token
/// file under `/creds`, where the host grants the emulator's state directory.
fn external_file(emu: &Emulator) -> String {
    let mut f: Value = serde_json::from_str(&file(emu, "external_account_file")).unwrap();
    let host_path = f["credential_source"]["file"].as_str().unwrap().to_string();
    let name = std::path::Path::new(&host_path).file_name().unwrap();
    f["credential_source"]["file"] = format!("/creds/{}", name.to_string_lossy()).into();
    f.to_string()
}

/// The config's impersonation of `target_principal` through `delegates`, at
/// the emulator's IAM Credentials.
fn impersonating(emu: &Emulator, target_principal: &str, delegates: &[&str]) -> Config {
    Config {
        impersonation: Some(Impersonation {
            target_principal: target_principal.into(),
            delegates: delegates.iter().map(|d| d.to_string()).collect(),
        }),
        iam_credentials_endpoint: Some(
            emu.ready["iam_credentials_endpoint"]
                .as_str()
                .unwrap()
                .to_string(),
        ),
        ..emu.config()
    }
}

fn with(emu: &Emulator, credentials: String) -> Config {
    Config {
        credentials: Some(Credentials::Json(credentials)),
        ..emu.config()
    }
}

fn app() -> Login {
    Login {
        user: "app".into(),
        password: Some("app-password".into()),
        database: "postgres".into(),
    }
}

fn iam_as(user: &str) -> Login {
    Login {
        user: user.into(),
        password: None,
        database: "postgres".into(),
    }
}

fn iam() -> ConnectOptions {
    ConnectOptions {
        enable_iam_auth: Some(true),
        ..ConnectOptions::default()
    }
}

/// A connector in a fresh instance of the component, with the emulator's
/// state directory granted as `/creds` (for subject token files).
async fn fresh(emu: &Emulator, config: Config) -> (ConnectorInstance, ResourceAny) {
    let mut inst = support::host()
        .instantiate_connector(
            &support::component(),
            vec![],
            vec![(emu.state_dir.clone(), "/creds".into())],
        )
        .await
        .unwrap();
    let c = inst.new_connector(config).await.unwrap();
    (inst, c)
}

/// `SELECT current_user` on `instance` as `login`, through a fresh connector.
async fn whoami(
    emu: &Emulator,
    config: Config,
    instance: &str,
    options: ConnectOptions,
    login: &Login,
) -> Result<String, QueryError> {
    let (mut inst, c) = fresh(emu, config).await;
    let (rows, _) = connect_and_query(
        &mut inst,
        c,
        instance,
        options,
        login,
        "SELECT current_user",
    )
    .await?;
    Ok(rows.rows[0][0].clone().unwrap_or_default())
}

/// The message of the `credentials` error a connect to [`INSTANCE`] must
/// fail with, before the dial.
async fn refusal(emu: &Emulator, config: Config, options: ConnectOptions, login: &Login) -> String {
    let e = refused(whoami(emu, config, INSTANCE, options, login).await);
    credentials_message(&e).to_string()
}

/// The connector's error of a connect that must fail before the dial.
fn refused(r: Result<String, QueryError>) -> Error {
    match r {
        Err(QueryError::Connect(e)) => e,
        other => panic!("expected a connect error, got {other:?}"),
    }
}

fn credentials_message(e: &Error) -> &str {
    match e {
        Error::Credentials(m) => m,
        other => panic!("expected a credentials error, got {other:?}"),
    }
}

fn count(emu: &Emulator, call: &str) -> u64 {
    emu.calls()[call]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn impersonated_service_account_files_connect_as_their_target() {
    let emu = emulator();
    for (field, via) in [
        ("impersonated_service_account_file", "a key"),
        ("impersonated_user_file", "a user, through the delegate"),
    ] {
        let config = with(&emu, file(&emu, field));
        let user = whoami(
            &emu,
            config.clone(),
            INSTANCE,
            ConnectOptions::default(),
            &app(),
        )
        .await
        .unwrap_or_else(|e| panic!("{via}: {e:?}"));
        assert_eq!(user, "app", "{via}");
        let user = whoami(&emu, config.clone(), INSTANCE, iam(), &iam_as(TARGET_USER))
            .await
            .unwrap_or_else(|e| panic!("{via}: {e:?}"));
        assert_eq!(user, TARGET_USER, "{via}: the IAM login is the target's");
        let user = whoami(&emu, config, ALLOYDB, iam(), &iam_as(TARGET_USER))
            .await
            .unwrap_or_else(|e| panic!("{via}, AlloyDB: {e:?}"));
        assert_eq!(
            user, TARGET_USER,
            "{via}: AlloyDB's AUTO_IAM login is the target's"
        );
    }
    assert!(emu.calls()["generateAccessToken"][TARGET].as_u64().unwrap() >= 4);
    assert_eq!(count(&emu, "sts"), 0);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn the_configs_impersonation_applies_to_a_key_for_cloud_sql_and_alloydb() {
    let emu = emulator();
    let config = impersonating(&emu, TARGET, &[]);
    let user = whoami(&emu, config.clone(), INSTANCE, iam(), &iam_as(TARGET_USER))
        .await
        .unwrap();
    assert_eq!(user, TARGET_USER);
    // AlloyDB: the exchange carries the target's login token (AUTO_IAM).
    let user = whoami(&emu, config.clone(), ALLOYDB, iam(), &iam_as(TARGET_USER))
        .await
        .unwrap();
    assert_eq!(user, TARGET_USER);
    let user = whoami(&emu, config, ALLOYDB, ConnectOptions::default(), &app())
        .await
        .unwrap();
    assert_eq!(user, "app");

    // A delegate chain IAM refuses (the key's account may not act as
    // target-sa through dev-user): a credentials error with IAM's words.
    let chain = impersonating(&emu, TARGET, &["dev-user@example.com"]);
    let m = refusal(&emu, chain, ConnectOptions::default(), &app()).await;
    assert!(
        m.contains(&format!("refused to impersonate {TARGET}")),
        "{m}"
    );
    assert!(m.contains("HTTP 40"), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn workload_identity_federation_from_a_file_and_from_a_url() {
    let emu = emulator();
    // A subject token file, exchanged at STS, impersonating target-sa.
    let config = with(&emu, external_file(&emu));
    let user = whoami(&emu, config.clone(), INSTANCE, iam(), &iam_as(TARGET_USER))
        .await
        .unwrap();
    assert_eq!(user, TARGET_USER);
    let user = whoami(
        &emu,
        config.clone(),
        INSTANCE,
        ConnectOptions::default(),
        &app(),
    )
    .await
    .unwrap();
    assert_eq!(user, "app");
    let user = whoami(&emu, config, ALLOYDB, iam(), &iam_as(TARGET_USER))
        .await
        .unwrap();
    assert_eq!(
        user, TARGET_USER,
        "AlloyDB's AUTO_IAM login is the target's"
    );
    // A subject token from a URL (JSON, with the header it needs and the
    // file's client authentication), the federated token used as it is.
    let config = with(&emu, file(&emu, "external_account_url_file"));
    let user = whoami(
        &emu,
        config.clone(),
        INSTANCE,
        ConnectOptions::default(),
        &app(),
    )
    .await
    .unwrap();
    assert_eq!(user, "app");
    let user = whoami(&emu, config, ALLOYDB, ConnectOptions::default(), &app())
        .await
        .unwrap();
    assert_eq!(user, "app");
    assert!(count(&emu, "sts") >= 3);
    assert!(emu.count("generateEphemeralCert", PROJECT_INSTANCE) >= 3);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end to end: needs the wasm builds, the emulator and the databases scripts/test starts"]
async fn refusals_are_credentials_errors_that_name_the_cause_and_show_no_secret() {
    let emu = emulator();
    let mut messages = vec![];

    // The subject token is gone: said before any call to STS.
    let mut f: Value = serde_json::from_str(&external_file(&emu)).unwrap();
    f["credential_source"]["file"] = "/creds/no-such-token.jwt".into();
    let m = refusal(&emu, with(&emu, f.to_string()), iam(), &iam_as(TARGET_USER)).await;
    assert!(
        m.contains("cannot read the subject token file \"/creds/no-such-token.jwt\""),
        "{m}"
    );
    assert_eq!(count(&emu, "sts"), 0);
    messages.push(m);

    // A subject token STS does not trust (expired): STS's error.
    post_subject_token(&emu, "expired");
    let m = refusal(
        &emu,
        with(&emu, external_file(&emu)),
        iam(),
        &iam_as(TARGET_USER),
    )
    .await;
    assert!(
        m.contains("refused the external_account credentials with HTTP 400: invalid_grant"),
        "{m}"
    );
    messages.push(m);
    post_subject_token(&emu, "valid");

    // IAM refuses the user's file without its delegate (dev-user may act
    // only as delegate-sa): IAM's 403 and words; with it, the connect works.
    let mut f: Value = serde_json::from_str(&file(&emu, "impersonated_user_file")).unwrap();
    f["delegates"] = serde_json::json!([]);
    let m = refusal(
        &emu,
        with(&emu, f.to_string()),
        ConnectOptions::default(),
        &app(),
    )
    .await;
    assert!(
        m.contains(&format!(
            "refused to impersonate {TARGET} with HTTP 403: PERMISSION_DENIED"
        )),
        "{m}"
    );
    messages.push(m);
    // A 503 from IAM Credentials: said, and the next connect works.
    emu.fail("generateAccessToken", 503, 1);
    let config = with(&emu, file(&emu, "impersonated_user_file"));
    let m = refusal(&emu, config.clone(), ConnectOptions::default(), &app()).await;
    assert!(m.contains("with HTTP 503"), "{m}");
    messages.push(m);
    assert_eq!(
        whoami(&emu, config, INSTANCE, ConnectOptions::default(), &app())
            .await
            .unwrap(),
        "app"
    );

    // Credentials of another universe: refused before any call.
    let before = count(&emu, "token");
    let other = Config {
        universe_domain: Some("example-universe.test".into()),
        ..emu.config()
    };
    let m = refusal(&emu, other, ConnectOptions::default(), &app()).await;
    assert!(
        m.contains("\"googleapis.com\"") && m.contains("\"example-universe.test\""),
        "{m}"
    );
    assert_eq!(count(&emu, "token"), before);
    messages.push(m);

    // An executable-sourced file: what is unsupported and why.
    let mut f: Value = serde_json::from_str(&external_file(&emu)).unwrap();
    f["credential_source"] = serde_json::json!({"executable": {"command": "/usr/bin/token"}});
    let m = refusal(
        &emu,
        with(&emu, f.to_string()),
        ConnectOptions::default(),
        &app(),
    )
    .await;
    assert!(m.contains("cannot run a program"), "{m}");
    messages.push(m);

    let tokens = emu.issued_tokens();
    let subject =
        std::fs::read_to_string(emu.ready["subject_token_file"].as_str().unwrap()).unwrap();
    let key = emu.service_account_key_pem();
    let mut secrets: Vec<&str> = tokens.iter().map(String::as_str).collect();
    secrets.push(&subject);
    secrets.push(&key);
    for m in &messages {
        assert_no_secrets(m, &secrets);
    }
    assert_no_secrets(&emu.log(), &secrets);
}

/// Rewrites the emulator's subject token (file and URL) as `mode` says.
fn post_subject_token(emu: &Emulator, mode: &str) {
    let control = emu.ready["control_endpoint"].as_str().unwrap();
    ureq::post(&format!("{control}/subject-token"))
        .content_type("application/json")
        .send(serde_json::json!({ "mode": mode }).to_string())
        .unwrap();
}
