//! What every instance's server-side proxy shares, whichever service: the listeners (a
//! random loopback address per endpoint), TLS 1.3 with a required, verified client
//! certificate, the accept loop, the handshake faults, and the relay to and from the
//! instance's backend. A test can make the proxy misbehave ([`ProxyFault`]) or present a
//! wrong server certificate or hostile TLS settings ([`ProxyControls`]), and read what each
//! proxy saw ([`crate::calls::ProxyStats`]).
//!
//! Each service implements [`Endpoint`] for what follows the handshake: Cloud SQL's proxy
//! (`cloudsql::proxy`) runs the metadata exchange where configured and the IAM login check,
//! AlloyDB's (`alloydb::proxy`) its mandatory metadata exchange and IAM login.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::Rng;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::calls::ProxyStats;
use crate::certs::{ServerCertMode, ServerChains};
pub use crate::client_tls::ClientTls;
use crate::inbound::Inbound;
use crate::spec::TlsSuite;
use crate::state::SharedState;

/// Give up on a TLS handshake or backend dial after this long.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The crypto provider everything in the emulator uses (ring).
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// [`crypto_provider`] offering only `suite` among TLS 1.3 cipher suites, when
/// an instance spec names one.
fn server_provider(suite: Option<TlsSuite>) -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    let Some(suite) = suite else {
        return crypto_provider();
    };
    let only = match suite {
        TlsSuite::Aes128Gcm => cipher_suite::TLS13_AES_128_GCM_SHA256,
        TlsSuite::Aes256Gcm => cipher_suite::TLS13_AES_256_GCM_SHA384,
        TlsSuite::Chacha20Poly1305 => cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    };
    Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![only],
        ..rustls::crypto::ring::default_provider()
    })
}

/// The server configuration of `mode`: TLS 1.3 (only TLS 1.2 in `tls12-only`),
/// presenting the mode's chain from `chains`, requiring a client certificate issued by
/// `client_ca` (asking for none in `no-client-auth`), with every cipher suite or
/// only `suite`. No SNI is needed.
pub fn build_server_config(
    mode: ServerCertMode,
    chains: &ServerChains,
    client_ca: &CertificateDer<'static>,
    suite: Option<TlsSuite>,
) -> Result<Arc<ServerConfig>, String> {
    let chain = match mode {
        ServerCertMode::Valid | ServerCertMode::Tls12Only | ServerCertMode::NoClientAuth => {
            &chains.valid
        }
        ServerCertMode::WrongCa => &chains.wrong_ca,
        ServerCertMode::WrongCn => &chains.wrong_cn,
        ServerCertMode::Expired => &chains.expired,
        ServerCertMode::NotYetValid => &chains.not_yet_valid,
        ServerCertMode::SelfSigned => &chains.self_signed,
    };
    let version = match mode {
        ServerCertMode::Tls12Only => &rustls::version::TLS12,
        _ => &rustls::version::TLS13,
    };
    // A suite restricts TLS 1.3 only; tls12-only keeps its TLS 1.2 suites.
    let provider = match mode {
        ServerCertMode::Tls12Only => crypto_provider(),
        _ => server_provider(suite),
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[version])
        .map_err(|e| format!("{version:?} unavailable: {e}"))?;
    let builder = match mode {
        ServerCertMode::NoClientAuth => builder.with_no_client_auth(),
        _ => {
            let mut roots = RootCertStore::empty();
            roots
                .add(client_ca.clone())
                .map_err(|e| format!("bad client CA: {e}"))?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("cannot build the client verifier: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chains.key_pkcs8.clone()));
    let config = builder
        .with_single_cert(chain.certs.clone(), key)
        .map_err(|e| format!("bad server certificate: {e}"))?;
    Ok(Arc::new(config))
}

/// Binds `<ip>:<port>` (the service's proxy port). Without a fixed IP, picks a random
/// `127.a.b.c` (a in 2..=254) and tries others while the port is taken.
pub async fn bind(fixed: Option<IpAddr>, port: u16) -> Result<TcpListener, String> {
    if let Some(ip) = fixed {
        return TcpListener::bind(SocketAddr::new(ip, port))
            .await
            .map_err(|e| format!("cannot listen on {ip}:{port}: {e}"));
    }
    let mut last_err = String::new();
    for _ in 0..64 {
        let ip = random_loopback();
        match TcpListener::bind(SocketAddr::new(ip, port)).await {
            Ok(l) => return Ok(l),
            Err(e) => last_err = format!("{ip}:{port}: {e}"),
        }
    }
    Err(format!(
        "no free loopback address for a proxy (last: {last_err})"
    ))
}

/// [`bind`], and the address it bound.
pub async fn bind_ip(fixed: Option<IpAddr>, port: u16) -> Result<(TcpListener, IpAddr), String> {
    let listener = bind(fixed, port).await?;
    let ip = listener.local_addr().map_err(|e| e.to_string())?.ip();
    Ok((listener, ip))
}

fn random_loopback() -> IpAddr {
    let mut rng = rand::thread_rng();
    IpAddr::V4(Ipv4Addr::new(
        127,
        rng.gen_range(2..=254),
        rng.gen_range(0..=255),
        rng.gen_range(1..=254),
    ))
}

/// How the proxy treats new connections (`POST /emulator/v1/instances/{name}/proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyFault {
    /// Serve them.
    Normal,
    /// Close the TCP connection right after accepting it, before TLS.
    Refuse,
    /// Complete the TLS handshake, then close (no close_notify).
    DropAfterHandshake,
    /// Relay, but cut both sides once this many backend bytes reached the client.
    DropAfterBytes(u64),
    /// Read the client's ClientHello, then close the TCP connection.
    CutAfterClientHello,
    /// Answer the ClientHello with the first half of the server's flight, then close.
    CutMidServerFlight,
    /// Answer the ClientHello with the server's whole flight one byte at a time, each after
    /// this delay, then hold the connection (no more TLS) until the client closes it.
    TrickleServerFlight(Duration),
}

impl ProxyFault {
    /// After how many backend bytes the relay cuts both sides, if at all.
    pub fn cut_after(self) -> Option<u64> {
        match self {
            Self::DropAfterBytes(n) => Some(n),
            _ => None,
        }
    }

    /// `normal`, `refuse`, `drop-after-handshake`, `drop-after-bytes` with `bytes`,
    /// `cut-after-client-hello`, `cut-mid-server-flight` or `trickle-server-flight` with
    /// `delay_ms` (at least 1).
    pub fn parse(mode: &str, bytes: Option<u64>, delay_ms: Option<u64>) -> Result<Self, String> {
        match (mode, bytes) {
            ("normal", _) => Ok(Self::Normal),
            ("refuse", _) => Ok(Self::Refuse),
            ("drop-after-handshake", _) => Ok(Self::DropAfterHandshake),
            ("drop-after-bytes", Some(n)) => Ok(Self::DropAfterBytes(n)),
            ("drop-after-bytes", None) => Err("drop-after-bytes needs \"bytes\"".into()),
            ("cut-after-client-hello", _) => Ok(Self::CutAfterClientHello),
            ("cut-mid-server-flight", _) => Ok(Self::CutMidServerFlight),
            ("trickle-server-flight", _) => match delay_ms {
                Some(ms) if ms > 0 => Ok(Self::TrickleServerFlight(Duration::from_millis(ms))),
                _ => Err("trickle-server-flight needs \"delay_ms\" (at least 1)".into()),
            },
            (other, _) => Err(format!(
                "unknown mode {other:?}: expected normal, refuse, drop-after-handshake, \
                 drop-after-bytes, cut-after-client-hello, cut-mid-server-flight or \
                 trickle-server-flight"
            )),
        }
    }
}

/// What a test can change about an instance's proxy: what it presents in the handshake
/// (a TLS configuration per [`ServerCertMode`], prepared up front, so switching is
/// instant) and how it treats new connections.
pub struct ProxyControls {
    /// One per mode, in the order of [`ServerCertMode::ALL`].
    configs: Vec<Arc<ServerConfig>>,
    mode: RwLock<ServerCertMode>,
    fault: RwLock<ProxyFault>,
}

impl std::fmt::Debug for ProxyControls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyControls")
            .field("mode", &self.server_cert_mode())
            .field("fault", &self.proxy_fault())
            .finish_non_exhaustive()
    }
}

impl ProxyControls {
    /// Controls presenting `chains` (the valid one until told otherwise), requiring
    /// client certificates that chain to `client_ca`, and offering every TLS 1.3
    /// cipher suite or only `suite`.
    pub fn new(
        chains: &ServerChains,
        client_ca: &CertificateDer<'static>,
        suite: Option<TlsSuite>,
    ) -> Result<Self, String> {
        let configs = ServerCertMode::ALL
            .into_iter()
            .map(|mode| build_server_config(mode, chains, client_ca, suite))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            configs,
            mode: RwLock::new(ServerCertMode::Valid),
            fault: RwLock::new(ProxyFault::Normal),
        })
    }

    /// Chooses what new connections are presented.
    pub fn set_server_cert_mode(&self, mode: ServerCertMode) {
        *self.mode.write().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    /// What new connections are presented.
    pub fn server_cert_mode(&self) -> ServerCertMode {
        *self.mode.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets how the proxy treats new connections.
    pub fn set_proxy_fault(&self, fault: ProxyFault) {
        *self.fault.write().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// How the proxy treats the next connection.
    pub fn proxy_fault(&self) -> ProxyFault {
        *self.fault.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The TLS configuration for the next connection.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let mode = self.server_cert_mode();
        // `configs` holds one per mode of ALL, in order, so the position exists.
        let i = ServerCertMode::ALL
            .iter()
            .position(|m| *m == mode)
            .unwrap_or_default();
        self.configs[i].clone()
    }
}

/// An instance behind proxy listeners: its name, its [`ProxyControls`], and what happens on
/// a connection once the TLS handshake is done (Cloud SQL: MDX if enabled, IAM login;
/// AlloyDB: the mandatory MDX, IAM login).
pub trait Endpoint: Send + Sync + 'static {
    /// The instance's name, for the log.
    fn name(&self) -> String;
    /// Its certificates and faults.
    fn controls(&self) -> &ProxyControls;
    /// Serves one connection after its TLS handshake, up to its end.
    fn serve_tls(
        self: Arc<Self>,
        tls: ClientTls,
        peer: SocketAddr,
        fault: ProxyFault,
        state: SharedState,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// Accepts connections forever, each in its own task.
pub async fn serve<E: Endpoint>(listener: TcpListener, endpoint: Arc<E>, state: SharedState) {
    let name = endpoint.name();
    let local = listener
        .local_addr()
        .map_or_else(|_| "unknown".to_string(), |a| a.ip().to_string());
    let stats = state.calls.proxy(&local);
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let open = stats.accepted();
                let fault = endpoint.controls().proxy_fault();
                if fault == ProxyFault::Refuse {
                    eprintln!("proxy {name}: fault: refusing the connection from {peer}");
                    drop(tcp);
                    continue;
                }
                let endpoint = endpoint.clone();
                let state = state.clone();
                let name = name.clone();
                let stats = stats.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(tcp, peer, fault, endpoint, stats, state).await {
                        eprintln!("proxy {name}: connection from {peer}: {e}");
                    }
                    drop(open);
                });
            }
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                eprintln!("proxy {name}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The TLS handshake and the handshake faults, then the endpoint's own work.
async fn handle<E: Endpoint>(
    tcp: TcpStream,
    peer: SocketAddr,
    fault: ProxyFault,
    endpoint: Arc<E>,
    stats: Arc<ProxyStats>,
    state: SharedState,
) -> Result<(), String> {
    let _ = tcp.set_nodelay(true);
    let config = endpoint.controls().server_config();
    let flight = match fault {
        ProxyFault::CutAfterClientHello => Some(Flight::None),
        ProxyFault::CutMidServerFlight => Some(Flight::Half),
        ProxyFault::TrickleServerFlight(delay) => Some(Flight::Trickle(delay)),
        _ => None,
    };
    if let Some(flight) = flight {
        eprintln!(
            "proxy {}: fault: breaking the TLS handshake with {peer} ({fault:?})",
            endpoint.name()
        );
        return cut_handshake(tcp, config, flight).await;
    }
    let acceptor = TlsAcceptor::from(config);
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    stats.handshake_done();
    let tls = ClientTls::new(tls, stats);
    if fault == ProxyFault::DropAfterHandshake {
        eprintln!(
            "proxy {}: fault: dropping the connection from {peer} after the TLS handshake",
            endpoint.name()
        );
        // No close_notify: the connection just dies.
        drop(tls);
        return Ok(());
    }
    endpoint.serve_tls(tls, peer, fault, state).await
}

/// How much of its first flight a broken handshake sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flight {
    /// None.
    None,
    /// The first half, at once.
    Half,
    /// All of it, a byte per delay.
    Trickle(Duration),
}

/// Plays the server's side of a handshake up to its first flight, then closes the TCP
/// connection (no alert, no close_notify): right after the ClientHello, or having sent
/// the first half of the flight, which ends inside an encrypted record. The close is a
/// FIN, and what the client sends meanwhile (its ChangeCipherSpec) is read, so it sees the
/// server close rather than a reset. A trickled flight is sent whole, a byte at a time;
/// then the connection is held, with no more TLS, until the client closes it (or the
/// handshake timeout passes).
async fn cut_handshake(
    mut tcp: TcpStream,
    config: Arc<ServerConfig>,
    flight: Flight,
) -> Result<(), String> {
    let mut conn =
        rustls::ServerConnection::new(config).map_err(|e| format!("cannot start TLS: {e}"))?;
    let mut buf = vec![0u8; 16 * 1024];
    // The server has something to say once the whole ClientHello is in.
    while !conn.wants_write() {
        let n = tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.read(&mut buf))
            .await
            .map_err(|_| "no ClientHello in time".to_string())?
            .map_err(|e| format!("reading the ClientHello: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        conn.read_tls(&mut &buf[..n])
            .map_err(|e| format!("reading the ClientHello: {e}"))?;
        conn.process_new_packets()
            .map_err(|e| format!("bad ClientHello: {e}"))?;
    }
    let mut bytes = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut bytes)
            .map_err(|e| format!("writing the server's flight: {e}"))?;
    }
    match flight {
        Flight::None => {}
        Flight::Half => tcp
            .write_all(&bytes[..bytes.len() / 2])
            .await
            .map_err(|e| format!("sending half the server's flight: {e}"))?,
        Flight::Trickle(delay) => {
            for byte in bytes.chunks(1) {
                tokio::time::sleep(delay).await;
                if tcp.write_all(byte).await.is_err() {
                    return Ok(()); // The client gave up.
                }
            }
            // Hold the connection: whatever the client sends next is read and dropped.
            let hold = async { while let Ok(1..) = tcp.read(&mut buf).await {} };
            let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, hold).await;
            return Ok(());
        }
    }
    close_after_refusal(Inbound::new(tcp)).await;
    Ok(())
}

/// Closes a connection whose refusal (or cut) is already written: close_notify (on TLS)
/// and FIN, then whatever the client still sends is read and dropped for a moment, so that
/// closing with unread bytes does not reset the connection before the client read it all.
pub(crate) async fn close_after_refusal<S: AsyncRead + AsyncWrite + Unpin>(
    mut inbound: Inbound<S>,
) {
    let stream = inbound.stream_mut();
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async { while let Ok(1..) = stream.read(&mut sink).await {} };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// How long [`close_after_refusal`] waits for the client to close.
const LINGER: Duration = Duration::from_secs(2);

/// Connects to `backend` (`HOST:PORT`) within the handshake timeout.
pub(crate) async fn connect_backend(backend: &str) -> Result<TcpStream, String> {
    let upstream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(backend))
        .await
        .map_err(|_| format!("connecting to backend {backend} timed out"))?
        .map_err(|e| format!("cannot connect to backend {backend}: {e}"))?;
    let _ = upstream.set_nodelay(true);
    Ok(upstream)
}

/// Connects to the backend unless already connected, hands it the client's bytes read so
/// far, then copies both ways (cutting both sides after `cut_after` backend bytes, counting
/// those already relayed, if set).
pub(crate) async fn relay(
    inbound: Inbound<ClientTls>,
    upstream: Option<(TcpStream, u64)>,
    backend: &str,
    cut_after: Option<u64>,
) -> Result<(), String> {
    let (mut upstream, sent) = match upstream {
        Some(u) => u,
        None => (connect_backend(backend).await?, 0),
    };
    let (mut tls, pending) = inbound.into_parts();
    if !pending.is_empty() {
        upstream
            .write_all(&pending)
            .await
            .map_err(|e| format!("writing to backend {backend}: {e}"))?;
    }
    let result = match cut_after {
        None => tokio::io::copy_bidirectional(&mut tls, &mut upstream)
            .await
            .map(|_| ()),
        Some(limit) => relay_until(&mut tls, &mut upstream, limit.saturating_sub(sent)).await,
    };
    match result {
        Ok(()) => Ok(()),
        // Many clients (OpenSSL users among them) just close the socket without a TLS
        // close_notify; that is an ordinary end of the session, not an error.
        Err(e) if is_plain_close(&e) => Ok(()),
        Err(e) => Err(format!("relay ended with an error: {e}")),
    }
}

/// Relays until `remaining` more backend bytes reached the client, then cuts the client
/// off (TCP FIN, no close_notify); the backend connection closes when dropped.
async fn relay_until(
    tls: &mut ClientTls,
    upstream: &mut TcpStream,
    mut remaining: u64,
) -> std::io::Result<()> {
    let mut from_client = vec![0u8; 16 * 1024];
    let mut from_server = vec![0u8; 16 * 1024];
    while remaining > 0 {
        let room = from_server
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        tokio::select! {
            r = tls.read(&mut from_client) => {
                let n = r?;
                if n == 0 {
                    return Ok(());
                }
                upstream.write_all(&from_client[..n]).await?;
            }
            r = upstream.read(&mut from_server[..room]) => {
                let n = r?;
                if n == 0 {
                    return Ok(());
                }
                tls.write_all(&from_server[..n]).await?;
                tls.flush().await?;
                remaining -= n as u64;
            }
        }
    }
    tls.tls_mut().get_mut().0.shutdown().await
}

/// True for the ways a peer ends a connection without saying goodbye.
pub(crate) fn is_plain_close(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fault_modes() {
        assert_eq!(
            ProxyFault::parse("normal", None, None),
            Ok(ProxyFault::Normal)
        );
        assert_eq!(
            ProxyFault::parse("refuse", Some(3), None),
            Ok(ProxyFault::Refuse)
        );
        assert_eq!(
            ProxyFault::parse("drop-after-handshake", None, None),
            Ok(ProxyFault::DropAfterHandshake)
        );
        assert_eq!(
            ProxyFault::parse("drop-after-bytes", Some(10), None),
            Ok(ProxyFault::DropAfterBytes(10))
        );
        assert!(ProxyFault::parse("drop-after-bytes", None, None).is_err());
        assert_eq!(
            ProxyFault::parse("cut-after-client-hello", None, None),
            Ok(ProxyFault::CutAfterClientHello)
        );
        assert_eq!(
            ProxyFault::parse("cut-mid-server-flight", None, None),
            Ok(ProxyFault::CutMidServerFlight)
        );
        assert_eq!(
            ProxyFault::parse("trickle-server-flight", None, Some(20)),
            Ok(ProxyFault::TrickleServerFlight(Duration::from_millis(20)))
        );
        assert!(ProxyFault::parse("trickle-server-flight", None, None).is_err());
        assert!(ProxyFault::parse("trickle-server-flight", None, Some(0)).is_err());
        assert!(ProxyFault::parse("explode", None, None).is_err());
    }
}
