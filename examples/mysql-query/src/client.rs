//! A minimal blocking MySQL/MariaDB client over any `Read + Write` stream, such
//! as [`gcp_db_connector::Connection`].
//!
//! No maintained MySQL driver accepts a caller's stream on wasm32-wasip2
//! (mysql_async opens its own socket, mysql does not build for WASI, sqlx-mysql
//! keeps `establish` private), so this drives `mysql_common` (the protocol crate
//! under mysql and mysql_async) directly: its packet framing, handshake and
//! column codecs, and its sans-IO authentication plugins
//! (`mysql_native_password`, `caching_sha2_password`, `sha256_password`,
//! `mysql_clear_password`).
//!
//! It does what a command-line query needs: log in, run text-protocol queries
//! (`COM_QUERY`) and read their first result set, quit. Everything read from the
//! network is checked: a malformed or truncated packet is an error, never a panic.

use std::fmt;
use std::io::{self, Read, Write};

use mysql_common::auth::plugins::{AuthProc, ChallengeResponsePlugin, Context};
use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{
    AuthPlugin, AuthSwitchRequest, Column, ErrPacket, HandshakePacket, HandshakeResponse,
};
use mysql_common::proto::codec::error::PacketCodecError;
use mysql_common::proto::sync_framed::MySyncFramed;
use mysql_common::proto::MySerialize;

/// Largest packet the client announces it accepts (as the mysql client's default).
const MAX_PACKET_SIZE: u32 = 16 * 1024 * 1024;

/// `SERVER_MORE_RESULTS_EXISTS` in a status word: another result set follows.
const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;

const OK: u8 = 0x00;
const AUTH_MORE_DATA: u8 = 0x01;
const LOCAL_INFILE: u8 = 0xfb;
const NULL_VALUE: u8 = 0xfb;
const EOF: u8 = 0xfe;
const ERR: u8 = 0xff;

const COM_QUIT: u8 = 0x01;
const COM_QUERY: u8 = 0x03;

/// How to log in.
#[derive(Debug, Clone, Copy)]
pub struct LoginOptions<'a> {
    /// The database user.
    pub user: &'a str,
    /// The password; empty for none (IAM logins through the connector send none).
    pub password: &'a str,
    /// The default database, if any.
    pub database: Option<&'a str>,
    /// The stream is already encrypted end to end. Through gcp-db-connector it
    /// is: the connector's mutual TLS is the tunnel, so the driver must not start
    /// TLS of its own. `caching_sha2_password` and `sha256_password` then send the
    /// password over it instead of asking for the server's RSA key.
    pub secure_transport: bool,
}

/// An error from the client: I/O, a server error packet, or a protocol violation.
#[derive(Debug)]
pub enum Error {
    /// Reading or writing the stream failed, or it closed early.
    Io(io::Error),
    /// The server answered with an error packet.
    Server {
        /// MySQL error number, e.g. 1045 (access denied).
        code: u16,
        /// The five-character SQLSTATE, when the server sent one.
        state: Option<String>,
        /// The server's message.
        message: String,
    },
    /// The server sent something this client does not understand or support.
    Protocol(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Server {
                code,
                state: Some(state),
                message,
            } => write!(f, "ERROR {code} ({state}): {message}"),
            Error::Server {
                code,
                state: None,
                message,
            } => write!(f, "ERROR {code}: {message}"),
            Error::Protocol(m) => write!(f, "protocol error: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

fn protocol(msg: impl Into<String>) -> Error {
    Error::Protocol(msg.into())
}

/// One result set of the text protocol: column names and rows of optional
/// (SQL NULL) values, as the server formatted them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultSet {
    /// Column names (aliases where given).
    pub columns: Vec<String>,
    /// The rows; `None` is SQL NULL.
    pub rows: Vec<Vec<Option<String>>>,
}

/// What the plugins may ask about the login.
struct AuthContext<'a> {
    password: &'a [u8],
    scramble: &'a [u8],
    secure: bool,
}

impl Context for &AuthContext<'_> {
    fn pass(&self) -> &[u8] {
        self.password
    }
    fn is_ipc_transport(&self) -> bool {
        false
    }
    fn is_tls_transport(&self) -> bool {
        self.secure
    }
    fn scramble(&self) -> &[u8] {
        self.scramble
    }
    fn server_key_pem(&self) -> Option<&[u8]> {
        None
    }
}

/// A logged-in connection.
pub struct Client<S> {
    framed: MySyncFramed<S>,
    caps: CapabilityFlags,
    server_version: String,
    auth_plugin: String,
}

impl<S: Read + Write> Client<S> {
    /// Reads the server's handshake from `stream` (already open) and logs in.
    pub fn connect(stream: S, login: &LoginOptions<'_>) -> Result<Self, Error> {
        let mut client = Client {
            framed: MySyncFramed::new(stream),
            caps: CapabilityFlags::empty(),
            server_version: String::new(),
            auth_plugin: String::new(),
        };
        let pkt = client.read_packet()?;
        if pkt.first() == Some(&ERR) {
            // E.g. "Host is not allowed to connect", sent before any handshake.
            return Err(client.server_error(&pkt));
        }
        let handshake: HandshakePacket = ParseBuf(&pkt)
            .parse(())
            .map_err(|e| protocol(format!("bad handshake packet: {e}")))?;
        client.server_version = handshake.server_version_str().into_owned();
        let mut scramble = handshake.nonce();
        let mut plugin = handshake
            .auth_plugin()
            .unwrap_or(AuthPlugin::MysqlNativePassword)
            .into_owned();

        let wanted = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
            | CapabilityFlags::CLIENT_LONG_PASSWORD
            | CapabilityFlags::CLIENT_LONG_FLAG
            | CapabilityFlags::CLIENT_TRANSACTIONS
            | CapabilityFlags::CLIENT_MULTI_RESULTS
            | CapabilityFlags::CLIENT_CONNECT_WITH_DB;
        client.caps = wanted & handshake.capabilities();
        if !client.caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
            return Err(protocol("the server does not speak protocol 4.1"));
        }

        let password = login.password.as_bytes();
        let mut auth = AuthProc::init(&plugin).map_err(auth_error)?;
        let first = {
            let ctx = AuthContext {
                password,
                scramble: &scramble,
                secure: login.secure_transport,
            };
            auth.run(&ctx, &scramble).map_err(auth_error)?
        };
        let response = HandshakeResponse::new(
            Some(first.data().unwrap_or_default().to_vec()),
            handshake.server_version_parsed().unwrap_or((5, 7, 0)),
            Some(login.user.as_bytes()),
            login.database.map(str::as_bytes),
            Some(plugin.clone()),
            client.caps,
            None,
            MAX_PACKET_SIZE,
        );
        let mut out = Vec::new();
        response.serialize(&mut out);
        // Without a database, the response drops CLIENT_CONNECT_WITH_DB.
        client.caps = response.capabilities();
        client.send_packet(&out)?;

        // The server answers OK, ERR, an auth switch or more plugin data.
        loop {
            let pkt = client.read_packet()?;
            match pkt.first() {
                Some(&OK) => break,
                Some(&ERR) => return Err(client.server_error(&pkt)),
                Some(&EOF) => {
                    let switch: AuthSwitchRequest = ParseBuf(&pkt)
                        .parse(())
                        .map_err(|e| protocol(format!("bad auth switch request: {e}")))?;
                    plugin = switch.auth_plugin().into_owned();
                    scramble = switch.plugin_data().to_vec();
                    auth = AuthProc::init(&plugin).map_err(auth_error)?;
                    let ctx = AuthContext {
                        password,
                        scramble: &scramble,
                        secure: login.secure_transport,
                    };
                    let reply = auth.run(&ctx, &scramble).map_err(auth_error)?;
                    // After a switch the server waits for a reply, even an empty one.
                    client.send_packet(reply.data().unwrap_or_default())?;
                }
                Some(&AUTH_MORE_DATA) => {
                    let ctx = AuthContext {
                        password,
                        scramble: &scramble,
                        secure: login.secure_transport,
                    };
                    let reply = auth.run(&ctx, &pkt[1..]).map_err(auth_error)?;
                    if let Some(data) = reply.data() {
                        client.send_packet(data)?;
                    }
                }
                Some(other) => {
                    return Err(protocol(format!(
                        "unexpected packet 0x{other:02x} during authentication"
                    )))
                }
                None => return Err(protocol("empty packet during authentication")),
            }
        }
        client.auth_plugin = String::from_utf8_lossy(plugin.as_bytes()).into_owned();
        Ok(client)
    }

    /// The server's version string, e.g. `8.0.36` or `10.11.6-MariaDB-0+deb12u1`.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// The authentication plugin the login finished with.
    pub fn auth_plugin(&self) -> &str {
        &self.auth_plugin
    }

    /// Runs `sql` with the text protocol (`COM_QUERY`) and returns its first
    /// result set; statements without one (`INSERT`, `SET`) give an empty set.
    /// Any further result sets (a `CALL`, multi-statements) are read and
    /// dropped, so the connection stays usable.
    pub fn query(&mut self, sql: &str) -> Result<ResultSet, Error> {
        self.framed.codec_mut().reset_seq_id();
        let mut command = Vec::with_capacity(sql.len() + 1);
        command.push(COM_QUERY);
        command.extend_from_slice(sql.as_bytes());
        self.send_packet(&command)?;

        let (first, mut more) = self.read_result()?;
        while more {
            (_, more) = self.read_result()?;
        }
        Ok(first)
    }

    /// Sends `COM_QUIT` and hands the stream back.
    pub fn quit(mut self) -> Result<S, Error> {
        self.framed.codec_mut().reset_seq_id();
        self.send_packet(&[COM_QUIT])?;
        Ok(self.framed.destruct().3)
    }

    /// One response to `COM_QUERY`; `true` when another result set follows.
    fn read_result(&mut self) -> Result<(ResultSet, bool), Error> {
        let pkt = self.read_packet()?;
        match pkt.first() {
            Some(&OK) => return Ok((ResultSet::default(), ok_more_results(&pkt)?)),
            Some(&ERR) => return Err(self.server_error(&pkt)),
            Some(&LOCAL_INFILE) => return Err(protocol("LOAD DATA LOCAL INFILE is not supported")),
            None => return Err(protocol("empty response to a query")),
            _ => {}
        }
        let count = ParseBuf(&pkt)
            .checked_eat_lenenc_int()
            .ok_or_else(|| protocol("truncated column count"))?;
        let count = usize::try_from(count).map_err(|_| protocol("absurd column count"))?;

        let mut columns = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            let pkt = self.read_packet()?;
            let column: Column = ParseBuf(&pkt)
                .parse(())
                .map_err(|e| protocol(format!("bad column definition: {e}")))?;
            columns.push(column.name_str().into_owned());
        }
        // Without CLIENT_DEPRECATE_EOF an EOF packet ends the column definitions.
        let pkt = self.read_packet()?;
        if !is_eof(&pkt) {
            return Err(protocol("expected EOF after the column definitions"));
        }

        let mut rows = Vec::new();
        loop {
            let pkt = self.read_packet()?;
            if is_eof(&pkt) {
                let more = eof_more_results(&pkt)?;
                return Ok((ResultSet { columns, rows }, more));
            }
            if pkt.first() == Some(&ERR) {
                return Err(self.server_error(&pkt));
            }
            let mut buf = ParseBuf(&pkt);
            let mut row = Vec::with_capacity(count);
            for _ in 0..count {
                if buf.0.first() == Some(&NULL_VALUE) {
                    buf.skip(1);
                    row.push(None);
                } else {
                    let value = buf
                        .checked_eat_lenenc_str()
                        .ok_or_else(|| protocol("truncated row"))?;
                    row.push(Some(String::from_utf8_lossy(value).into_owned()));
                }
            }
            rows.push(row);
        }
    }

    fn read_packet(&mut self) -> Result<Vec<u8>, Error> {
        let mut buf = Vec::new();
        match self.framed.next_packet(&mut buf) {
            Ok(true) => Ok(buf),
            Ok(false) => Err(Error::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ))),
            Err(e) => Err(packet_error(e)),
        }
    }

    fn send_packet(&mut self, data: &[u8]) -> Result<(), Error> {
        self.framed.send(&mut &data[..]).map_err(packet_error)
    }

    fn server_error(&self, pkt: &[u8]) -> Error {
        match ParseBuf(pkt).parse::<ErrPacket>(self.caps) {
            Ok(ErrPacket::Error(e)) => Error::Server {
                code: e.error_code(),
                state: e.sql_state_ref().map(|s| s.as_str().into_owned()),
                message: e.message_str().into_owned(),
            },
            Ok(ErrPacket::Progress(_)) => protocol("unexpected progress report"),
            Err(e) => protocol(format!("malformed error packet: {e}")),
        }
    }
}

/// An EOF packet (a row or column definition starting with 0xfe is longer).
fn is_eof(pkt: &[u8]) -> bool {
    pkt.first() == Some(&EOF) && pkt.len() < 9
}

/// The more-results flag of an EOF packet: 0xfe, warnings (2), status (2).
fn eof_more_results(pkt: &[u8]) -> Result<bool, Error> {
    match pkt.get(3..5) {
        Some(&[lo, hi]) => Ok(u16::from_le_bytes([lo, hi]) & SERVER_MORE_RESULTS_EXISTS != 0),
        // A pre-4.1 EOF has no status: no more results.
        _ => Ok(false),
    }
}

/// The more-results flag of an OK packet: 0x00, affected rows and last insert
/// id (length-encoded), status (2).
fn ok_more_results(pkt: &[u8]) -> Result<bool, Error> {
    let mut buf = ParseBuf(pkt);
    buf.checked_skip(1);
    let status = buf
        .checked_eat_lenenc_int()
        .and_then(|_| buf.checked_eat_lenenc_int())
        .and_then(|_| buf.checked_eat(2))
        .ok_or_else(|| protocol("truncated OK packet"))?;
    Ok(u16::from_le_bytes([status[0], status[1]]) & SERVER_MORE_RESULTS_EXISTS != 0)
}

fn packet_error(e: PacketCodecError) -> Error {
    match e {
        PacketCodecError::Io(e) => Error::Io(e),
        other => protocol(format!("bad packet framing: {other}")),
    }
}

fn auth_error(e: impl fmt::Display) -> Error {
    protocol(format!("authentication plugin: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_flags_are_read_from_eof_and_ok_packets() {
        assert!(eof_more_results(&[0xfe, 0, 0, 0x08, 0]).unwrap());
        assert!(!eof_more_results(&[0xfe, 0, 0, 0x02, 0]).unwrap());
        assert!(!eof_more_results(&[0xfe]).unwrap());
        assert!(ok_more_results(&[0x00, 0, 0, 0x0a, 0x00, 0, 0]).unwrap());
        assert!(!ok_more_results(&[0x00, 1, 0, 0x02, 0x00, 0, 0]).unwrap());
        assert!(ok_more_results(&[0x00, 0xfc]).is_err());
        assert!(is_eof(&[0xfe, 0, 0, 2, 0]));
        assert!(!is_eof(&[0xfe, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
    }
}
