//! Calls the connector component's exports through `ConnectorInstance`.
//!
//! Uses the component `gcp_db_host::connector::find_component` finds
//! (`$GCP_DB_CONNECTOR_WASM`, else the wasm32-wasip2 release build in the
//! target directory) and is skipped with a note on stderr when there is none.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use gcp_db_host::connector::{
    find_component, find_component_kv, AccessTokens, Config, ConnectOptions, Credentials, Error,
};
use gcp_db_host::keyvalue::KeyValueImportError;
use gcp_db_host::{ConnectorOptions, Host};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn connector_wasm() -> Option<PathBuf> {
    let found = find_component();
    if found.is_none() {
        eprintln!("skipping: the connector component is not built");
    }
    found
}

/// The `connector-component-kv` build (`$GCP_DB_CONNECTOR_KV_WASM` or the
/// build output), or a skip note.
fn connector_kv_wasm() -> Option<PathBuf> {
    let found = find_component_kv();
    if found.is_none() {
        eprintln!("skipping: the connector component's keyvalue build is not built");
    }
    found
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
        ..Default::default()
    }
}

#[test]
fn exports_the_connector_interface() {
    let Some(wasm) = connector_wasm() else { return };
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
async fn invalid_instance_name_is_reported() {
    let Some(wasm) = connector_wasm() else { return };
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
async fn admin_api_errors_come_from_a_loopback_server() {
    let Some(wasm) = connector_wasm() else { return };
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
async fn non_loopback_endpoints_are_denied_without_network() {
    let Some(wasm) = connector_wasm() else { return };
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
async fn the_plain_build_instantiates_with_or_without_the_store() {
    let Some(wasm) = connector_wasm() else { return };
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
async fn the_keyvalue_build_needs_the_store() {
    let Some(wasm) = connector_kv_wasm() else {
        return;
    };
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
