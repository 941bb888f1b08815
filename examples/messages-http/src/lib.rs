//! A messages service as a `wasi:http` handler, the job a small Flask +
//! SQLAlchemy app does on Cloud Run: `GET /` lists the messages as JSON,
//! `POST /` with a text body adds one and answers its id.
//!
//! The host makes a fresh instance per request (`wasmtime serve`, Spin), so
//! the connector keeps its certificate and key in a store that outlives the
//! instance: the host's `wasi:keyvalue` bucket (`GCP_DB_KV_BUCKET`, default
//! `gcp-db-connector`, a bucket of its own; empty: no store), or a directory
//! the host grants (`GCP_DB_STORE_DIR`, e.g. `/cache` with `wasmtime serve
//! --dir ./cache::/cache`), sealed with `GCP_DB_STORE_SECRET` when set: only
//! the first request of a certificate's lifetime calls the Admin API, and
//! only the first after a deployment generates a key. `GET /warmup` gets the
//! connection info ready without a query, for a deploy hook or a health
//! check to pay the first request's cost.
//!
//! Settings come from the environment: `INSTANCE` (Cloud SQL
//! `project:region:instance` or an AlloyDB URI), `DB_USER`, `DB_PASS`,
//! `DB_NAME`, `IP_TYPE`, `GOOGLE_APPLICATION_CREDENTIALS` (or the metadata
//! server), and for the local emulator `GCP_DB_ADMIN_ENDPOINT`,
//! `GCP_DB_ALLOYDB_ADMIN_ENDPOINT`, `GCP_DB_TOKEN_ENDPOINT`. Each answer
//! carries the connect's cost in `x-connect-ms` and `x-certificate`
//! (`refreshed`, `store` or `cached`).

#![cfg_attr(not(target_os = "wasi"), allow(dead_code))]

use std::time::Duration;

use gcp_db_connector::{Config, ConnectOptions, ConnectTimings, Connector};
use tokio_postgres::{NoTls, SimpleQueryMessage};

/// Rows as text; `None` is SQL NULL.
type Rows = Vec<Vec<Option<String>>>;

/// The request, as the handler needs it.
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// The answer: status, JSON body, the connect's timings.
struct Response {
    status: u16,
    body: serde_json::Value,
    timings: Option<ConnectTimings>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn config() -> Result<Config, String> {
    let bucket = std::env::var("GCP_DB_KV_BUCKET").unwrap_or_else(|_| "gcp-db-connector".into());
    let mut config = Config::default();
    config.admin_endpoint = env("GCP_DB_ADMIN_ENDPOINT");
    config.alloydb_admin_endpoint = env("GCP_DB_ALLOYDB_ADMIN_ENDPOINT");
    config.token_endpoint = env("GCP_DB_TOKEN_ENDPOINT");
    // As the Auth Proxy's --impersonate-service-account: target[,delegate…].
    config.impersonation = env("GCP_DB_IMPERSONATE_SERVICE_ACCOUNT")
        .map(|chain| gcp_db_connector::ServiceAccountImpersonation::from_chain(&chain));
    config.iam_credentials_endpoint = env("GCP_DB_IAM_CREDENTIALS_ENDPOINT");
    config.store_secret = env("GCP_DB_STORE_SECRET");
    config.store = match (env("GCP_DB_STORE_DIR"), bucket.as_str()) {
        (Some(dir), _) => Some(std::sync::Arc::new(
            gcp_db_connector::DirectoryStore::open(&dir).map_err(|e| e.to_string())?,
        )),
        (None, "") => None,
        #[cfg(target_os = "wasi")]
        (None, b) => Some(gcp_db_connector::open_wasi_keyvalue(b).map_err(|e| e.to_string())?),
        #[cfg(not(target_os = "wasi"))]
        (None, _) => None,
    };
    Ok(config)
}

/// The instance and how to reach it, from the environment.
fn target() -> Result<(String, ConnectOptions), String> {
    let instance = env("INSTANCE").ok_or("INSTANCE is not set")?;
    let mut options = ConnectOptions::default();
    options.ip_type = env("IP_TYPE")
        .map(|t| t.parse())
        .transpose()
        .map_err(|e| format!("IP_TYPE: {e}"))?;
    Ok((instance, options))
}

/// Refreshes or loads the connection info without a query.
fn warmup() -> Result<(), String> {
    let (instance, options) = target()?;
    let connector = Connector::new(config()?).map_err(|e| e.to_string())?;
    connector
        .warmup(&instance, &options)
        .map_err(|e| e.to_string())
}

/// Connects, logs in, runs `sql` (simple query protocol), returns the rows.
async fn query(sql: &str) -> Result<(Rows, ConnectTimings), String> {
    let (instance, options) = target()?;
    let connector = Connector::new(config()?).map_err(|e| e.to_string())?;
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

async fn handle(req: Request) -> Response {
    let result = match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/warmup") => warmup().map(|()| {
            (
                200,
                serde_json::json!({"warm": true}),
                ConnectTimings::default(),
            )
        }),
        ("GET", _) => query("SELECT id, body FROM messages ORDER BY id")
            .await
            .map(|(rows, t)| {
                let list: Vec<_> = rows
                    .into_iter()
                    .map(|r| serde_json::json!({"id": r[0], "body": r[1]}))
                    .collect();
                (200, serde_json::Value::from(list), t)
            }),
        ("POST", _) => match String::from_utf8(req.body) {
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
        (other, _) => Ok((
            405,
            serde_json::json!({"error": format!("{other} is not GET or POST")}),
            ConnectTimings::default(),
        )),
    };
    match result {
        Ok((status, body, t)) => Response {
            status,
            body,
            timings: (t.total > Duration::ZERO).then_some(t),
        },
        Err(e) => Response {
            status: 500,
            body: serde_json::json!({ "error": e }),
            timings: None,
        },
    }
}

#[cfg(target_os = "wasi")]
mod wasi_http {
    //! The wasi:http glue: read the request, run [`super::handle`] on a
    //! current-thread tokio runtime, write the response.

    use wasip2::exports::http::incoming_handler::Guest;
    use wasip2::http::types::{
        Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
    };
    use wasip2::io::streams::StreamError;

    use super::{handle, Request, Response};

    struct Handler;

    wasip2::http::proxy::export!(Handler);

    /// Requests larger than this are refused.
    const MAX_BODY: usize = 64 * 1024;

    fn read(req: &IncomingRequest) -> Result<Request, String> {
        let method = match req.method() {
            Method::Get => "GET".to_string(),
            Method::Post => "POST".to_string(),
            Method::Other(m) => m,
            other => format!("{other:?}").to_uppercase(),
        };
        let mut body = Vec::new();
        let incoming = req.consume().map_err(|()| "no request body")?;
        let stream = incoming.stream().map_err(|()| "no request body stream")?;
        loop {
            match stream.blocking_read(16 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => return Err(format!("reading the request failed: {e:?}")),
            }
            if body.len() > MAX_BODY {
                return Err("request body over 64 KiB".into());
            }
        }
        let path = req
            .path_with_query()
            .map(|p| p.split('?').next().unwrap_or_default().to_string())
            .unwrap_or_else(|| "/".into());
        Ok(Request { method, path, body })
    }

    fn write(out: ResponseOutparam, resp: Response) {
        let headers = Fields::new();
        let mut pairs = vec![("content-type", b"application/json".to_vec())];
        if let Some(t) = resp.timings {
            let how = if t.from_store {
                "store"
            } else if t.cached {
                "cached"
            } else {
                "refreshed"
            };
            pairs.push((
                "x-connect-ms",
                format!("{:.3}", t.total.as_secs_f64() * 1000.0).into_bytes(),
            ));
            pairs.push(("x-certificate", how.as_bytes().to_vec()));
        }
        for (k, v) in pairs {
            let _ = headers.append(k, &v);
        }
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(resp.status);
        let Ok(body) = response.body() else { return };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = body.write() {
            let text = resp.body.to_string();
            for chunk in text.as_bytes().chunks(4096) {
                if stream.blocking_write_and_flush(chunk).is_err() {
                    return;
                }
            }
            drop(stream);
        }
        let _ = OutgoingBody::finish(body, None);
    }

    impl Guest for Handler {
        fn handle(request: IncomingRequest, out: ResponseOutparam) {
            let resp = match read(&request) {
                Ok(req) => match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(handle(req)),
                    Err(e) => Response {
                        status: 500,
                        body: serde_json::json!({"error": format!("no runtime: {e}")}),
                        timings: None,
                    },
                },
                Err(e) => Response {
                    status: 400,
                    body: serde_json::json!({ "error": e }),
                    timings: None,
                },
            };
            write(out, resp);
        }
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
}
