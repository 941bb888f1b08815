//! The host builds, and the wasi:http policy hook denies and allows the right
//! requests. (The bindgen'd connector types are exercised by
//! connector_component.rs, which connects through them.)

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use gcp_db_host::policy::LoopbackHttpHooks;
use gcp_db_host::Host;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmtime_wasi_http::{WasiBody, WasiHttpHooks};

#[test]
fn host_new_works() {
    let host = Host::new().expect("Host::new");
    let _ = host.engine();
    Host::with_cache_dir(None).expect("host without disk cache");
    assert!(gcp_db_host::default_cache_dir().is_some());
}

#[test]
fn missing_component_is_an_error() {
    let host = Host::with_cache_dir(None).unwrap();
    let err = host
        .imports("/nonexistent/gcp_db_connector.wasm".as_ref())
        .unwrap_err();
    assert!(format!("{err:#}").contains("not found"), "{err:#}");
}

fn empty_request(uri: &str) -> http::Request<WasiBody> {
    let body = Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync();
    http::Request::builder().uri(uri).body(body).unwrap()
}

type Io = Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>;

async fn send(uri: &str) -> wasmtime_wasi_http::Result<(http::Response<WasiBody>, Io)> {
    let fut = LoopbackHttpHooks.send_request(empty_request(uri), None, Box::new(async { Ok(()) }));
    tokio::time::timeout(Duration::from_secs(10), Pin::from(fut))
        .await
        .expect("the hook must answer promptly")
}

#[tokio::test]
async fn http_hook_denies_non_loopback_hosts() {
    for uri in [
        "https://sqladmin.googleapis.com/v1/projects/p/instances/i/connectSettings",
        "https://oauth2.googleapis.com/token",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://169.254.169.254/",
        // A blackhole address: a connect attempt would hang, a denial is instant.
        "http://10.255.255.1/",
    ] {
        match send(uri).await {
            Err(wasmtime_wasi_http::Error::HttpRequestDenied) => {}
            Err(other) => panic!("{uri}: expected HttpRequestDenied, got {other:?}"),
            Ok(_) => panic!("{uri}: request was sent"),
        }
    }
}

#[tokio::test]
async fn http_hook_sends_loopback_requests() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        // Two requests: by IP literal and by `localhost`.
        for _ in 0..2 {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut buf).await.unwrap();
                assert!(n > 0, "client closed early");
                got.extend_from_slice(&buf[..n]);
            }
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await
                .unwrap();
            sock.shutdown().await.unwrap();
        }
    });

    for uri in [
        format!("http://127.0.0.1:{port}/token"),
        format!("http://localhost:{port}/token"),
    ] {
        let (response, io) = match send(&uri).await {
            Ok(ok) => ok,
            Err(err) => panic!("{uri}: {err:?}"),
        };
        let io = tokio::spawn(Pin::from(io));
        assert_eq!(response.status(), 200, "{uri}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        let _ = io.await;
    }
    server.await.unwrap();
}
