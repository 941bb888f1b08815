//! A small blocking PostgreSQL client: startup (trust, cleartext, MD5,
//! SCRAM-SHA-256) and the simple query protocol, on the `postgres-protocol`
//! codec, over any byte transport.

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::{backend, frontend};

/// `Some(bytes)`: write them all; `None`: read up to `max` bytes (empty: the
/// server closed).
pub trait Transport: FnMut(Option<&[u8]>, u32) -> Result<Vec<u8>, String> {}
impl<F: FnMut(Option<&[u8]>, u32) -> Result<Vec<u8>, String>> Transport for F {}

/// A logged-in session.
pub struct Session<T> {
    io: T,
    buf: BytesMut,
}

impl<T: Transport> Session<T> {
    /// Sends the startup message and authenticates.
    pub fn start(
        io: T,
        user: &str,
        database: &str,
        password: Option<&str>,
    ) -> Result<Self, String> {
        let mut s = Self {
            io,
            buf: BytesMut::new(),
        };
        let mut out = BytesMut::new();
        frontend::startup_message([("user", user), ("database", database)], &mut out)
            .map_err(|e| e.to_string())?;
        s.send(&out)?;
        let password = || password.ok_or("the server asks for a password".to_string());
        let mut scram = None;
        loop {
            let mut out = BytesMut::new();
            match s.next()? {
                backend::Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password()?.as_bytes(), &mut out)
                        .map_err(|e| e.to_string())?
                }
                backend::Message::AuthenticationMd5Password(b) => {
                    let hash = md5_hash(user.as_bytes(), password()?.as_bytes(), b.salt());
                    frontend::password_message(hash.as_bytes(), &mut out)
                        .map_err(|e| e.to_string())?
                }
                backend::Message::AuthenticationSasl(_) => {
                    let sc = sasl::ScramSha256::new(
                        password()?.as_bytes(),
                        sasl::ChannelBinding::unsupported(),
                    );
                    frontend::sasl_initial_response(sasl::SCRAM_SHA_256, sc.message(), &mut out)
                        .map_err(|e| e.to_string())?;
                    scram = Some(sc);
                }
                backend::Message::AuthenticationSaslContinue(b) => {
                    let sc = scram.as_mut().ok_or("SASL continue before SASL start")?;
                    sc.update(b.data()).map_err(|e| e.to_string())?;
                    frontend::sasl_response(sc.message(), &mut out).map_err(|e| e.to_string())?;
                }
                backend::Message::AuthenticationSaslFinal(b) => {
                    let sc = scram.as_mut().ok_or("SASL final before SASL start")?;
                    sc.finish(b.data()).map_err(|e| e.to_string())?;
                }
                backend::Message::ErrorResponse(b) => return Err(error(&b)),
                backend::Message::ReadyForQuery(_) => return Ok(s),
                _ => {} // AuthenticationOk, ParameterStatus, BackendKeyData, notices
            }
            if !out.is_empty() {
                s.send(&out)?;
            }
        }
    }

    /// Runs `sql`; the rows of its last statement, as text.
    pub fn query(&mut self, sql: &str) -> Result<super::Rows, String> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(|e| e.to_string())?;
        self.send(&out)?;
        let (mut rows, mut failed) = (Vec::new(), None);
        loop {
            match self.next()? {
                backend::Message::RowDescription(_) => rows.clear(),
                backend::Message::DataRow(b) => {
                    let buf = b.buffer();
                    rows.push(
                        b.ranges()
                            .map(|r| Ok(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned())))
                            .collect()
                            .map_err(|e| e.to_string())?,
                    );
                }
                backend::Message::ErrorResponse(b) => failed = Some(error(&b)),
                backend::Message::ReadyForQuery(_) => return failed.map_or(Ok(rows), Err),
                _ => {}
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        (self.io)(Some(bytes), 0).map(|_| ())
    }

    fn next(&mut self) -> Result<backend::Message, String> {
        loop {
            if let Some(m) = backend::Message::parse(&mut self.buf).map_err(|e| e.to_string())? {
                return Ok(m);
            }
            let chunk = (self.io)(None, 64 * 1024)?;
            if chunk.is_empty() {
                return Err("the server closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk);
        }
    }
}

fn error(body: &backend::ErrorResponseBody) -> String {
    let mut fields = body.fields();
    let mut message = String::from("database error");
    while let Ok(Some(f)) = fields.next() {
        if f.type_() == b'M' {
            message = String::from_utf8_lossy(f.value_bytes()).into_owned();
        }
    }
    message
}
