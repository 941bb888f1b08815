//! A minimal PostgreSQL client (startup with trust/cleartext/MD5/SCRAM, simple
//! query) on the `postgres-protocol` codec, speaking over any byte transport.
//!
//! The host uses it to run queries through the connector component's WIT
//! `connection` (whose blocking read/write calls go through the wasm store),
//! where a full async driver cannot be plugged in. Guests use tokio-postgres.

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::{backend, frontend};

/// A byte transport: the component's connection, or a socket.
#[allow(async_fn_in_trait)] // used generically within this crate's callers
pub trait Transport {
    /// Writes all of `data`.
    async fn send(&mut self, data: Vec<u8>) -> Result<(), String>;
    /// Reads up to `max` bytes; empty means the peer closed.
    async fn recv(&mut self, max: u32) -> Result<Vec<u8>, String>;
}

/// The rows of one simple query, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryResult {
    /// Column names.
    pub columns: Vec<String>,
    /// Values as text; `None` is SQL NULL.
    pub rows: Vec<Vec<Option<String>>>,
    /// The command tag, e.g. `SELECT 2`.
    pub command: String,
}

/// A Postgres session over a transport.
pub struct Session<T> {
    transport: T,
    buf: BytesMut,
}

impl<T: Transport> Session<T> {
    /// Sends the startup message and authenticates.
    pub async fn start(
        transport: T,
        user: &str,
        database: &str,
        password: Option<&str>,
    ) -> Result<Self, String> {
        let mut s = Self {
            transport,
            buf: BytesMut::new(),
        };
        let mut out = BytesMut::new();
        frontend::startup_message([("user", user), ("database", database)], &mut out)
            .map_err(|e| e.to_string())?;
        s.transport.send(out.to_vec()).await?;

        let need_password = || password.ok_or("the server asks for a password".to_string());
        let mut scram: Option<sasl::ScramSha256> = None;
        loop {
            let mut out = BytesMut::new();
            match s.next().await? {
                backend::Message::AuthenticationOk => {}
                backend::Message::AuthenticationCleartextPassword => {
                    frontend::password_message(need_password()?.as_bytes(), &mut out)
                        .map_err(|e| e.to_string())?;
                }
                backend::Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(user.as_bytes(), need_password()?.as_bytes(), body.salt());
                    frontend::password_message(hash.as_bytes(), &mut out)
                        .map_err(|e| e.to_string())?;
                }
                backend::Message::AuthenticationSasl(_) => {
                    let sc = sasl::ScramSha256::new(
                        need_password()?.as_bytes(),
                        sasl::ChannelBinding::unsupported(),
                    );
                    frontend::sasl_initial_response(sasl::SCRAM_SHA_256, sc.message(), &mut out)
                        .map_err(|e| e.to_string())?;
                    scram = Some(sc);
                }
                backend::Message::AuthenticationSaslContinue(body) => {
                    let sc = scram.as_mut().ok_or("SASL continue without SASL start")?;
                    sc.update(body.data()).map_err(|e| e.to_string())?;
                    frontend::sasl_response(sc.message(), &mut out).map_err(|e| e.to_string())?;
                }
                backend::Message::AuthenticationSaslFinal(body) => {
                    let sc = scram.as_mut().ok_or("SASL final without SASL start")?;
                    sc.finish(body.data()).map_err(|e| e.to_string())?;
                }
                backend::Message::ErrorResponse(body) => return Err(error_message(&body)),
                backend::Message::ReadyForQuery(_) => return Ok(s),
                _ => {} // ParameterStatus, BackendKeyData, notices
            }
            if !out.is_empty() {
                s.transport.send(out.to_vec()).await?;
            }
        }
    }

    /// Runs `sql` with the simple query protocol; the last statement's rows.
    pub async fn query(&mut self, sql: &str) -> Result<QueryResult, String> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(|e| e.to_string())?;
        self.transport.send(out.to_vec()).await?;
        let mut result = QueryResult::default();
        let mut error = None;
        loop {
            match self.next().await? {
                backend::Message::RowDescription(body) => {
                    result = QueryResult::default();
                    result.columns = body
                        .fields()
                        .map(|f| Ok(f.name().to_string()))
                        .collect()
                        .map_err(|e| e.to_string())?;
                }
                backend::Message::DataRow(body) => {
                    let buf = body.buffer();
                    let row = body
                        .ranges()
                        .map(|r| Ok(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned())))
                        .collect()
                        .map_err(|e| e.to_string())?;
                    result.rows.push(row);
                }
                backend::Message::CommandComplete(body) => {
                    result.command = body.tag().map_err(|e| e.to_string())?.to_string();
                }
                backend::Message::ErrorResponse(body) => error = Some(error_message(&body)),
                backend::Message::ReadyForQuery(_) => {
                    return match error {
                        Some(e) => Err(e),
                        None => Ok(result),
                    }
                }
                _ => {}
            }
        }
    }

    /// Runs `COPY … TO STDOUT` and returns how many data bytes came back,
    /// without keeping them (the benchmark's large result).
    pub async fn copy_out(&mut self, sql: &str) -> Result<u64, String> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(|e| e.to_string())?;
        self.transport.send(out.to_vec()).await?;
        let mut bytes = 0u64;
        let mut error = None;
        loop {
            match self.next().await? {
                backend::Message::CopyData(body) => bytes += body.data().len() as u64,
                backend::Message::ErrorResponse(body) => error = Some(error_message(&body)),
                backend::Message::ReadyForQuery(_) => {
                    return match error {
                        Some(e) => Err(e),
                        None => Ok(bytes),
                    }
                }
                _ => {}
            }
        }
    }

    /// Says goodbye to the server and returns the transport.
    pub async fn terminate(mut self) -> Result<T, String> {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        self.transport.send(out.to_vec()).await?;
        Ok(self.transport)
    }

    async fn next(&mut self) -> Result<backend::Message, String> {
        loop {
            if let Some(m) = backend::Message::parse(&mut self.buf).map_err(|e| e.to_string())? {
                return Ok(m);
            }
            let chunk = self.transport.recv(64 * 1024).await?;
            if chunk.is_empty() {
                return Err("the server closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk);
        }
    }
}

fn error_message(body: &backend::ErrorResponseBody) -> String {
    let mut fields = body.fields();
    let mut severity = String::new();
    let mut message = String::new();
    while let Ok(Some(f)) = fields.next() {
        match f.type_() {
            b'S' => severity = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            b'M' => message = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            _ => {}
        }
    }
    format!("postgres {severity}: {message}")
}
