//! The messages service of `messages-http` as a Spin HTTP app built with
//! spin-sdk 7 (WASIp3: `#[http_service]` exports `wasi:http/handler@0.3.0`):
//! `GET /` lists the messages as JSON, `POST /` with a text body adds one and
//! answers `201 {"id": ...}`.
//!
//! Spin (and `wasmtime serve`) may give every request a fresh instance, so
//! with the default `spin-kv` feature the connector keeps its certificate and
//! key in a Spin key-value store of its own (`key_value_stores =
//! ["gcp-db-connector"]` in spin.toml, declared in runtime-config.toml),
//! sealed with `GCP_DB_STORE_SECRET` when it is set: only the first request
//! of a certificate's lifetime calls the Admin API, and only the first after
//! a deployment generates a key. Without the feature there is no store and
//! the component does not import `spin:key-value`.
//!
//! The database work is the library's `Connector::connect_async` and
//! tokio-postgres on a current-thread tokio runtime driven to completion
//! inside the async handler. Its sockets are WASIp2 (std and tokio on
//! `wasm32-wasip2`), so it blocks this instance while it runs: requests that
//! share an instance are served one after the other.
//!
//! Settings come from the environment, as in `messages-http`: `INSTANCE`
//! (Cloud SQL `project:region:instance` or an AlloyDB URI), `DB_USER`,
//! `DB_PASS`, `DB_NAME`, `IP_TYPE`, `GOOGLE_APPLICATION_CREDENTIALS` (or the
//! metadata server), and for the local emulator `GCP_DB_ADMIN_ENDPOINT`,
//! `GCP_DB_ALLOYDB_ADMIN_ENDPOINT`, `GCP_DB_TOKEN_ENDPOINT`. Each answer
//! carries the connect's cost in `x-connect-ms` and `x-certificate`
//! (`refreshed`, `store` or `cached`).

#![cfg_attr(not(target_os = "wasi"), allow(dead_code))]

use std::time::Duration;

use gcp_db_connector::{Config, ConnectOptions, ConnectTimings, Connector};
use tokio_postgres::{NoTls, SimpleQueryMessage};

/// Rows as text; `None` is SQL NULL.
type Rows = Vec<Vec<Option<String>>>;

/// The answer: status, JSON body, the connect's timings.
struct Answer {
    status: u16,
    body: serde_json::Value,
    timings: Option<ConnectTimings>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn config() -> Config {
    let mut config = Config::default();
    config.admin_endpoint = env("GCP_DB_ADMIN_ENDPOINT");
    config.alloydb_admin_endpoint = env("GCP_DB_ALLOYDB_ADMIN_ENDPOINT");
    config.token_endpoint = env("GCP_DB_TOKEN_ENDPOINT");
    config.store = store();
    config.store_secret = env("GCP_DB_STORE_SECRET");
    config
}

#[cfg(all(feature = "spin-kv", target_os = "wasi"))]
fn store() -> Option<std::sync::Arc<dyn gcp_db_connector::Store>> {
    match spin_kv::SpinKv::open_connectors() {
        Ok(kv) => Some(std::sync::Arc::new(kv)),
        Err(e) => {
            // Serve without the cross-request cache rather than fail.
            eprintln!("spin-messages: no key-value store ({e}); every instance refreshes");
            None
        }
    }
}

#[cfg(not(all(feature = "spin-kv", target_os = "wasi")))]
fn store() -> Option<std::sync::Arc<dyn gcp_db_connector::Store>> {
    None
}

/// Connects, logs in, runs `sql` (simple query protocol), returns the rows.
async fn query(sql: &str) -> Result<(Rows, ConnectTimings), String> {
    let instance = env("INSTANCE").ok_or("INSTANCE is not set")?;
    let mut options = ConnectOptions::default();
    options.ip_type = env("IP_TYPE")
        .map(|t| t.parse())
        .transpose()
        .map_err(|e| format!("IP_TYPE: {e}"))?;
    let connector = Connector::new(config()).map_err(|e| e.to_string())?;
    let stream = connector
        .connect_async(&instance, &options)
        .await
        .map_err(|e| e.to_string())?;
    let timings = stream.timings();

    let mut pg = tokio_postgres::Config::new();
    pg.user(env("DB_USER").as_deref().unwrap_or("postgres"))
        .dbname(env("DB_NAME").as_deref().unwrap_or("postgres"));
    if let Some(p) = env("DB_PASS") {
        pg.password(p);
    }
    // The connector's TLS is the tunnel: the driver must not start its own.
    let (client, connection) = pg
        .connect_raw(stream, NoTls)
        .await
        .map_err(|e| format!("Postgres login failed: {e}"))?;
    let driver = tokio::spawn(connection);
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| format!("query failed: {e}"))?;
    drop(client);
    let _ = driver.await;
    let rows = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    Ok((rows, timings))
}

/// A SQL string literal: the body is data, never SQL.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// What `messages-http` does for one request.
async fn answer(method: &str, body: Vec<u8>) -> Answer {
    let result = match method {
        "GET" => query("SELECT id, body FROM messages ORDER BY id")
            .await
            .map(|(rows, t)| {
                let list: Vec<_> = rows
                    .into_iter()
                    .map(|r| serde_json::json!({"id": r[0], "body": r[1]}))
                    .collect();
                (200, serde_json::Value::from(list), t)
            }),
        "POST" => match String::from_utf8(body) {
            Ok(text) if !text.trim().is_empty() => query(&format!(
                "INSERT INTO messages (body) VALUES ({}) RETURNING id",
                literal(text.trim())
            ))
            .await
            .map(|(rows, t)| (201, serde_json::json!({"id": rows[0][0]}), t)),
            _ => Ok((
                400,
                serde_json::json!({"error": "POST a non-empty UTF-8 text body"}),
                ConnectTimings::default(),
            )),
        },
        other => Ok((
            405,
            serde_json::json!({"error": format!("{other} is not GET or POST")}),
            ConnectTimings::default(),
        )),
    };
    match result {
        Ok((status, body, t)) => Answer {
            status,
            body,
            timings: (t.total > Duration::ZERO).then_some(t),
        },
        Err(e) => Answer {
            status: 500,
            body: serde_json::json!({ "error": e }),
            timings: None,
        },
    }
}

/// Runs [`answer`] to completion on a current-thread tokio runtime (the
/// connector's and tokio-postgres's sockets are tokio's WASIp2 ones).
fn run(method: &str, body: Vec<u8>) -> Answer {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(answer(method, body)),
        Err(e) => Answer {
            status: 500,
            body: serde_json::json!({"error": format!("no runtime: {e}")}),
            timings: None,
        },
    }
}

/// The `x-connect-ms` and `x-certificate` values of `t`.
fn timing_headers(t: &ConnectTimings) -> [(&'static str, String); 2] {
    let how = if t.from_store {
        "store"
    } else if t.cached {
        "cached"
    } else {
        "refreshed"
    };
    [
        (
            "x-connect-ms",
            format!("{:.3}", t.total.as_secs_f64() * 1000.0),
        ),
        ("x-certificate", how.to_string()),
    ]
}

#[cfg(all(feature = "spin-kv", target_os = "wasi"))]
mod spin_kv {
    //! [`gcp_db_connector::Store`] over Spin's key-value store.
    //!
    //! spin-sdk 7's store is async (`spin:key-value@3.0.0` is a WASIp3
    //! interface) while the connector's trait is blocking, so each call is
    //! driven to completion with `wit_bindgen::block_on`. Spin's store has
    //! no atomic increment, so `increment` stays unsupported (`None`): the
    //! connector then skips its refresh lease.

    use std::sync::Arc;

    use spin_sdk::key_value::Store;
    use spin_sdk::wit_bindgen::block_on;

    /// The connector's Spin key-value store label (`spin.toml`'s
    /// `key_value_stores`).
    const STORE_LABEL: &str = "gcp-db-connector";

    /// The connector's own Spin store (`gcp-db-connector`), opened once per
    /// instance.
    pub struct SpinKv(Arc<Store>);

    impl SpinKv {
        pub fn open_connectors() -> Result<SpinKv, String> {
            block_on(async { Store::open(STORE_LABEL).await })
                .map(|s| SpinKv(Arc::new(s)))
                .map_err(|e| format!("opening the key-value store {}: {e}", STORE_LABEL))
        }
    }

    impl gcp_db_connector::Store for SpinKv {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            let (store, key) = (Arc::clone(&self.0), key.to_string());
            block_on(async move { store.get(key).await }).map_err(|e| e.to_string())
        }

        fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
            let (store, key, value) = (Arc::clone(&self.0), key.to_string(), value.to_vec());
            block_on(async move { store.set(key, value).await }).map_err(|e| e.to_string())
        }

        fn delete(&self, key: &str) -> Result<(), String> {
            let (store, key) = (Arc::clone(&self.0), key.to_string());
            block_on(async move { store.delete(key).await }).map_err(|e| e.to_string())
        }
    }
}

#[cfg(target_os = "wasi")]
mod spin_http {
    //! The Spin glue: read the request, run [`super::run`], answer JSON.

    use spin_sdk::http::body::IncomingBodyExt as _;
    use spin_sdk::http::{HeaderMap, HeaderName, HeaderValue, IntoResponse, Request, StatusCode};

    /// Requests larger than this are refused.
    const MAX_BODY: usize = 64 * 1024;

    fn json(status: u16, body: &serde_json::Value, extra: &[(&str, String)]) -> impl IntoResponse {
        let mut headers = HeaderMap::new();
        headers.insert(
            spin_sdk::http::HeaderName::from_static("content-type"),
            HeaderValue::from_static("application/json"),
        );
        for (k, v) in extra {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(*k), HeaderValue::try_from(v.as_str())) {
                headers.insert(k, v);
            }
        }
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, headers, body.to_string())
    }

    #[spin_sdk::http_service]
    async fn handle(req: Request) -> impl IntoResponse {
        let method = req.method().as_str().to_string();
        let body = match req.into_body().bytes().await {
            Ok(b) if b.len() > MAX_BODY => {
                let e = serde_json::json!({"error": "request body over 64 KiB"});
                return json(400, &e, &[]);
            }
            Ok(b) => b.to_vec(),
            Err(e) => {
                let e = serde_json::json!({"error": format!("reading the request failed: {e:?}")});
                return json(400, &e, &[]);
            }
        };
        let answer = super::run(&method, body);
        let extra = answer
            .timings
            .as_ref()
            .map(|t| super::timing_headers(t).to_vec())
            .unwrap_or_default();
        json(answer.status, &answer.body, &extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_quoted_as_data() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(
            literal("'); DROP TABLE messages; --"),
            "'''); DROP TABLE messages; --'"
        );
    }

    #[test]
    fn timing_headers_say_where_the_certificate_came_from() {
        let mut t = ConnectTimings::default();
        t.total = Duration::from_millis(12);
        t.from_store = true;
        let [(ms_name, ms), (cert_name, cert)] = timing_headers(&t);
        assert_eq!((ms_name, ms.as_str()), ("x-connect-ms", "12.000"));
        assert_eq!((cert_name, cert.as_str()), ("x-certificate", "store"));
    }
}
