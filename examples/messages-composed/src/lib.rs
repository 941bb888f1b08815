//! The messages service of `examples/messages-http`, written against the
//! connector's WIT interface instead of the Rust library: this component
//! imports `gcp:db-connector/connector` and is composed with the connector
//! component (the `connector-component-kv` build) into one `wasi:http`
//! handler:
//!
//! ```sh
//! gcp-db-host compose messages_composed.wasm --plug gcp_db_connector_component_kv.wasm -o app.wasm
//! # or: wac plug messages_composed.wasm --plug gcp_db_connector_component_kv.wasm -o app.wasm
//! ```
//!
//! `GET /` lists the messages as JSON, `POST /` with a text body adds one.
//! Settings come from the environment as in messages-http. Any language with
//! WIT bindings can be the app; the Postgres client here is a small blocking
//! one (`pg`), because the WIT connection's reads block.

#![cfg_attr(not(target_os = "wasi"), allow(dead_code))]

mod pg;

/// Rows as text; `None` is SQL NULL.
type Rows = Vec<Vec<Option<String>>>;

/// A SQL string literal: the body is data, never SQL.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[cfg(target_os = "wasi")]
mod app {
    use wasip2::exports::http::incoming_handler::Guest;
    use wasip2::http::types::{
        Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
    };
    use wasip2::io::streams::StreamError;

    use super::{env, literal, pg, Rows};

    wit_bindgen::generate!({
        world: "connector-user",
        path: "../../wit",
        generate_all,
    });

    use gcp::db_connector::connector::{
        Config, ConnectOptions, ConnectTimings, Connector, Credentials, Impersonation, IpType,
    };

    struct Handler;

    wasip2::http::proxy::export!(Handler);

    fn config() -> Config {
        let store_dir = env("GCP_DB_STORE_DIR");
        Config {
            credentials: env("GCP_DB_CREDENTIALS_JSON").map(Credentials::Json),
            // As the Auth Proxy's --impersonate-service-account: the target
            // first, then delegates, each delegating to the one before it.
            impersonation: env("GCP_DB_IMPERSONATE_SERVICE_ACCOUNT").map(|chain| {
                let mut accounts: Vec<String> =
                    chain.split(',').map(|a| a.trim().to_string()).collect();
                let target_principal = accounts.remove(0);
                accounts.reverse();
                Impersonation {
                    target_principal,
                    delegates: accounts,
                }
            }),
            universe_domain: None,
            ip_type: None,
            enable_iam_auth: false,
            admin_endpoint: env("GCP_DB_ADMIN_ENDPOINT"),
            alloydb_admin_endpoint: env("GCP_DB_ALLOYDB_ADMIN_ENDPOINT"),
            token_endpoint: env("GCP_DB_TOKEN_ENDPOINT"),
            iam_credentials_endpoint: env("GCP_DB_IAM_CREDENTIALS_ENDPOINT"),
            metadata_host: None,
            quota_project: None,
            user_agent: Some("messages-composed".into()),
            rsa_private_key: None,
            // A bucket of the connector's own, unless a directory is given.
            store_bucket: Some(
                std::env::var("GCP_DB_KV_BUCKET").unwrap_or_else(|_| "gcp-db-connector".into()),
            )
            .filter(|b| !b.is_empty() && store_dir.is_none()),
            store_dir,
            store_private_key: None,
            store_secret: env("GCP_DB_STORE_SECRET"),
            refresh_timeout_ms: None,
            dial_timeout_ms: None,
            dns_resolver: None,
            failover_period_ms: None,
        }
    }

    /// Connects through the imported connector, logs in, runs `sql`.
    fn query(sql: &str) -> Result<(Rows, ConnectTimings), String> {
        let instance = env("INSTANCE").ok_or("INSTANCE is not set")?;
        let ip_type = match env("IP_TYPE").as_deref() {
            None => None,
            Some("public") => Some(IpType::Public),
            Some("private") => Some(IpType::Private),
            Some("psc") => Some(IpType::Psc),
            Some(other) => return Err(format!("IP_TYPE {other:?} is not public, private or psc")),
        };
        let connector = Connector::new(&config());
        let conn = connector
            .connect(
                &instance,
                ConnectOptions {
                    ip_type,
                    enable_iam_auth: None,
                },
            )
            .map_err(|e| format!("connect failed: {e:?}"))?;
        let timings = conn.timings();
        let transport = |data: Option<&[u8]>, max: u32| -> Result<Vec<u8>, String> {
            match data {
                Some(d) => conn.write(d).map(|()| Vec::new()),
                None => conn.read(max),
            }
            .map_err(|e| format!("{e:?}"))
        };
        let mut session = pg::Session::start(
            transport,
            env("DB_USER").as_deref().unwrap_or("postgres"),
            env("DB_NAME").as_deref().unwrap_or("postgres"),
            env("DB_PASS").as_deref(),
        )?;
        let rows = session.query(sql)?;
        drop(session);
        let _ = conn.shutdown();
        Ok((rows, timings))
    }

    fn handle(method: &str, body: Vec<u8>) -> (u16, serde_json::Value, Option<ConnectTimings>) {
        let result = match method {
            "GET" => query("SELECT id, body FROM messages ORDER BY id").map(|(rows, t)| {
                let list: Vec<_> = rows
                    .into_iter()
                    .map(|r| serde_json::json!({"id": r[0], "body": r[1]}))
                    .collect();
                (200, serde_json::Value::from(list), Some(t))
            }),
            "POST" => match String::from_utf8(body) {
                Ok(text) if !text.trim().is_empty() => query(&format!(
                    "INSERT INTO messages (body) VALUES ({}) RETURNING id",
                    literal(text.trim())
                ))
                .map(|(rows, t)| (201, serde_json::json!({"id": rows[0][0]}), Some(t))),
                _ => Ok((
                    400,
                    serde_json::json!({"error": "POST a non-empty UTF-8 text body"}),
                    None,
                )),
            },
            other => Ok((
                405,
                serde_json::json!({"error": format!("{other} is not GET or POST")}),
                None,
            )),
        };
        result.unwrap_or_else(|e| (500, serde_json::json!({ "error": e }), None))
    }

    impl Guest for Handler {
        fn handle(request: IncomingRequest, out: ResponseOutparam) {
            let method = match request.method() {
                Method::Get => "GET".to_string(),
                Method::Post => "POST".to_string(),
                other => format!("{other:?}"),
            };
            let mut body = Vec::new();
            if let Ok(incoming) = request.consume() {
                if let Ok(stream) = incoming.stream() {
                    loop {
                        match stream.blocking_read(16 * 1024) {
                            Ok(chunk) if body.len() + chunk.len() <= 64 * 1024 => {
                                body.extend_from_slice(&chunk)
                            }
                            Ok(_) | Err(StreamError::Closed) | Err(_) => break,
                        }
                    }
                }
            }
            let (status, json, timings) = handle(&method, body);

            let headers = Fields::new();
            let _ = headers.append("content-type", b"application/json");
            if let Some(t) = timings {
                let how = if t.from_store {
                    "store"
                } else if t.cached {
                    "cached"
                } else {
                    "refreshed"
                };
                let ms = format!("{:.3}", t.total_us as f64 / 1000.0);
                let _ = headers.append("x-connect-ms", ms.as_bytes());
                let _ = headers.append("x-certificate", how.as_bytes());
            }
            let response = OutgoingResponse::new(headers);
            let _ = response.set_status_code(status);
            let Ok(body) = response.body() else { return };
            ResponseOutparam::set(out, Ok(response));
            if let Ok(stream) = body.write() {
                for chunk in json.to_string().as_bytes().chunks(4096) {
                    if stream.blocking_write_and_flush(chunk).is_err() {
                        return;
                    }
                }
                drop(stream);
            }
            let _ = OutgoingBody::finish(body, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_quoted_as_data() {
        assert_eq!(literal("it's"), "'it''s'");
    }
}
