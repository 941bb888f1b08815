//! Calls the connector component's exports through `ConnectorInstance`.
//!
//! Uses the component `gcp_db_host::connector::find_component` finds
//! (`$GCP_DB_CONNECTOR_WASM`, else the wasm32-wasip2 release build in the
//! target directory); fails, saying so, when there is none. scripts/test
//! builds it.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use gcp_db_host::connector::{
    find_component, find_component_kv, AccessTokens, Config, ConnectOptions, Credentials, Error,
};
use gcp_db_host::kv_imports::KeyValueImportError;
use gcp_db_host::{ConnectorOptions, Host};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn connector_wasm() -> PathBuf {
    find_component().expect(
        "the connector component is not built: run scripts/test, or build it \
         (cargo build --profile wasm --target wasm32-wasip2 -p gcp-db-connector-component)",
    )
}

/// The `connector-component-kv` build (`$GCP_DB_CONNECTOR_KV_WASM` or the
/// build output).
fn connector_kv_wasm() -> PathBuf {
    find_component_kv().expect(
        "the connector component's keyvalue build is not built: run scripts/test, which \
         builds it (GCP_DB_CONNECTOR_KV_WASM)",
    )
}

fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| Host::new().expect("Host::new"))
}

fn token_config(admin_endpoint: &str) -> Config {
    Config {
        credentials: Some(Credentials::AccessToken(AccessTokens {
            api_token: "test-token".into(),
            login_token: None,
        })),
        admin_endpoint: Some(admin_endpoint.into()),
        refresh_timeout_ms: Some(10_000),
        dial_timeout_ms: Some(10_000),
        dns_resolver: None,
        failover_period_ms: None,
        ..Default::default()
    }
}

#[test]
#[ignore = "needs the connector component built: scripts/test runs it"]
fn exports_the_connector_interface() {
    let wasm = connector_wasm();
    let exports = host().exports(&wasm).unwrap();
    assert!(
        exports
            .iter()
            .any(|e| e.starts_with("gcp:db-connector/connector@")),
        "{exports:?}"
    );
    let imports = host().imports(&wasm).unwrap();
    assert!(
        imports.iter().all(|i| i.starts_with("wasi:")),
        "{imports:?}"
    );
}

#[tokio::test]
#[ignore = "needs the connector component built: scripts/test runs it"]
async fn invalid_instance_name_is_reported() {
    let wasm = connector_wasm();
    let mut inst = host()
        .instantiate_connector(&wasm, vec![], vec![])
        .await
        .unwrap();
    let connector = inst
        .new_connector(token_config("http://127.0.0.1:9"))
        .await
        .unwrap();
    let result = inst
        .connect(connector, "not-an-instance-name", ConnectOptions::default())
        .await
        .unwrap();
    assert!(
        matches!(result, Err(Error::InvalidInstanceName(_))),
        "{result:?}"
    );
    inst.drop_resource(connector).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the connector component built: scripts/test runs it"]
async fn admin_api_errors_come_from_a_loopback_server() {
    let wasm = connector_wasm();
    // A stand-in Admin API that refuses everything with Google's error shape.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let body = r#"{"error":{"code":403,"message":"denied by test","status":"PERMISSION_DENIED"}}"#;
                let response = format!(
                    "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(response.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });

    let mut inst = host()
        .instantiate_connector(&wasm, vec![], vec![])
        .await
        .unwrap();
    let connector = inst
        .new_connector(token_config(&format!("http://127.0.0.1:{port}")))
        .await
        .unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        inst.connect(connector, "proj:region:inst", ConnectOptions::default()),
    )
    .await
    .expect("connect timed out")
    .unwrap();
    match result {
        Err(Error::AdminApi(api)) => {
            assert_eq!(api.status, 403, "{api:?}");
            assert_eq!(api.code, "PERMISSION_DENIED", "{api:?}");
        }
        other => panic!("expected an Admin API error, got {other:?}"),
    }
    server.abort();
}

#[tokio::test]
#[ignore = "needs the connector component built: scripts/test runs it"]
async fn non_loopback_endpoints_are_denied_without_network() {
    let wasm = connector_wasm();
    let mut inst = host()
        .instantiate_connector(&wasm, vec![], vec![])
        .await
        .unwrap();
    let connector = inst
        .new_connector(token_config("https://sqladmin.googleapis.com"))
        .await
        .unwrap();
    // Denied by the host's wasi:http hook, so this fails fast even offline.
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        inst.connect(connector, "proj:region:inst", ConnectOptions::default()),
    )
    .await
    .expect("connect timed out")
    .unwrap();
    assert!(matches!(result, Err(Error::Http(_))), "{result:?}");
}

#[tokio::test]
#[ignore = "needs the connector component built: scripts/test runs it"]
async fn the_plain_build_instantiates_with_or_without_the_store() {
    let wasm = connector_wasm();
    let opts = ConnectorOptions {
        keyvalue: true,
        ..Default::default()
    };
    let mut inst = host()
        .instantiate_connector_with(&wasm, &opts)
        .await
        .unwrap();
    let connector = inst
        .new_connector(token_config("http://127.0.0.1:9"))
        .await
        .unwrap();
    inst.drop_resource(connector).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the connector component built: scripts/test runs it"]
async fn the_keyvalue_build_needs_the_store() {
    let wasm = connector_kv_wasm();
    let err = match host().instantiate_connector(&wasm, vec![], vec![]).await {
        Ok(_) => panic!("the keyvalue build instantiated without a store"),
        Err(err) => err,
    };
    assert!(
        matches!(
            err.downcast_ref::<KeyValueImportError>(),
            Some(KeyValueImportError::NotEnabled { .. })
        ),
        "{err:?}"
    );

    let opts = ConnectorOptions {
        keyvalue: true,
        ..Default::default()
    };
    let mut inst = host()
        .instantiate_connector_with(&wasm, &opts)
        .await
        .unwrap();
    let connector = inst
        .new_connector(Config {
            store_bucket: Some("default".into()),
            ..token_config("http://127.0.0.1:9")
        })
        .await
        .unwrap();
    let result = inst
        .connect(connector, "not-an-instance-name", ConnectOptions::default())
        .await
        .unwrap();
    assert!(
        matches!(result, Err(Error::InvalidInstanceName(_))),
        "{result:?}"
    );
}
