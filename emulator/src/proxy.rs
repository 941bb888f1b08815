//! The server-side proxy of each instance: TLS 1.3 on `<public_ip>:3307` with a required,
//! verified client certificate; then, where configured, the metadata exchange (`mdx`) and
//! the IAM login check (`iam`); then plain bytes to and from the instance's backend.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::certs::ServerChain;
use crate::inbound::Inbound;
use crate::instance::Instance;
use crate::state::{AppState, SharedState};
use crate::{iam, mdx};

/// Google's server-side proxy port; clients always dial `<ip>:3307`.
pub const SERVER_PROXY_PORT: u16 = 3307;
/// Give up on a TLS handshake or backend dial after this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The crypto provider everything in the emulator uses (ring).
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS 1.3-only server configuration presenting `chain` and requiring a client
/// certificate issued by `client_ca`. No SNI is needed.
pub fn build_server_config(
    chain: &ServerChain,
    key_pkcs8: &[u8],
    client_ca: &CertificateDer<'static>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = crypto_provider();
    let mut roots = RootCertStore::empty();
    roots
        .add(client_ca.clone())
        .map_err(|e| format!("bad client CA: {e}"))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("cannot build the client verifier: {e}"))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8.to_vec()));
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS 1.3 unavailable: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.certs.clone(), key)
        .map_err(|e| format!("bad server certificate: {e}"))?;
    Ok(Arc::new(config))
}

/// Binds `<ip>:3307`. Without a fixed IP, picks a random `127.a.b.c` (a in 2..=254) and
/// tries others while the port is taken.
pub async fn bind(fixed: Option<IpAddr>) -> Result<TcpListener, String> {
    if let Some(ip) = fixed {
        return TcpListener::bind(SocketAddr::new(ip, SERVER_PROXY_PORT))
            .await
            .map_err(|e| format!("cannot listen on {ip}:{SERVER_PROXY_PORT}: {e}"));
    }
    let mut last_err = String::new();
    for _ in 0..64 {
        let ip = random_loopback();
        match TcpListener::bind(SocketAddr::new(ip, SERVER_PROXY_PORT)).await {
            Ok(l) => return Ok(l),
            Err(e) => last_err = format!("{ip}:{SERVER_PROXY_PORT}: {e}"),
        }
    }
    Err(format!(
        "no free loopback address for a proxy (last: {last_err})"
    ))
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

/// Accepts connections forever, each in its own task.
pub async fn serve(listener: TcpListener, instance: Arc<Instance>, state: SharedState) {
    let name = instance.spec.connection_name();
    let local = listener
        .local_addr()
        .map_or_else(|_| "unknown".to_string(), |a| a.ip().to_string());
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                state.calls.record_proxy_connection(&local);
                let instance = instance.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    let name = instance.spec.connection_name();
                    if let Err(e) = handle(tcp, &instance, &state).await {
                        eprintln!("proxy {name}: connection from {peer}: {e}");
                    }
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

type ClientTls = tokio_rustls::server::TlsStream<TcpStream>;

async fn handle(tcp: TcpStream, instance: &Instance, state: &AppState) -> Result<(), String> {
    let _ = tcp.set_nodelay(true);
    let acceptor = TlsAcceptor::from(instance.server_config());
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let serial = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|leaf| iam::certificate_serial(leaf));
    let mut inbound = Inbound::new(tls);
    // Google's proxy finishes these before it opens the database connection, and a
    // refused client must never reach the backend.
    let admitted = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        before_relay(&mut inbound, instance, state, serial.as_deref()),
    )
    .await
    .map_err(|_| "client stalled before its login".to_string());
    match admitted {
        Ok(Ok(true)) => relay(inbound, &instance.spec.backend).await,
        Ok(Ok(false)) => {
            // The refusal is already written; close_notify lets the client read all of it.
            let _ = inbound.stream_mut().shutdown().await;
            Ok(())
        }
        Ok(Err(e)) if is_plain_close(&e) => Ok(()),
        Ok(Err(e)) => Err(format!("reading the client's first bytes: {e}")),
        Err(e) => Err(e),
    }
}

/// The metadata exchange and the IAM login check. `false`: the client was refused (and
/// told), so the connection ends here.
async fn before_relay(
    inbound: &mut Inbound<ClientTls>,
    instance: &Instance,
    state: &AppState,
    serial: Option<&str>,
) -> std::io::Result<bool> {
    let name = instance.spec.connection_name();
    if instance.spec.mdx {
        match mdx::serve(inbound).await? {
            mdx::Outcome::Absent => {}
            mdx::Outcome::Accepted(req) => {
                let protocol = req.client_protocol_type.name();
                state
                    .calls
                    .record_mdx(&instance.spec.api_key(), Some(&protocol));
                eprintln!(
                    "proxy {name}: metadata exchange: client_protocol_type={protocol} \
                     user_agent={:?}",
                    req.user_agent
                );
            }
            mdx::Outcome::Rejected(why) => {
                state.calls.record_mdx(&instance.spec.api_key(), None);
                eprintln!("proxy {name}: metadata exchange refused: {why}");
                return Ok(false);
            }
        }
    }
    if !iam::is_postgres(&instance.spec.database_version) {
        return Ok(true);
    }
    // Certificates without an IAM login are for password logins: nothing to check.
    let Some(binding) = serial.and_then(|s| state.ephemeral_principals.get(s)) else {
        return Ok(true);
    };
    match iam::postgres_login(inbound, &binding).await? {
        iam::Login::Admitted(user) => {
            eprintln!("proxy {name}: IAM login as {user:?}");
            Ok(true)
        }
        iam::Login::Cancel => Ok(true),
        iam::Login::Refused(r) => {
            eprintln!("proxy {name}: IAM login refused: {}", r.reason);
            Ok(false)
        }
    }
}

/// Connects to the backend, hands it the client's bytes read so far, then copies both ways.
async fn relay(inbound: Inbound<ClientTls>, backend: &str) -> Result<(), String> {
    let mut upstream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(backend))
        .await
        .map_err(|_| format!("connecting to backend {backend} timed out"))?
        .map_err(|e| format!("cannot connect to backend {backend}: {e}"))?;
    let _ = upstream.set_nodelay(true);
    let (mut tls, pending) = inbound.into_parts();
    if !pending.is_empty() {
        upstream
            .write_all(&pending)
            .await
            .map_err(|e| format!("writing to backend {backend}: {e}"))?;
    }
    match tokio::io::copy_bidirectional(&mut tls, &mut upstream).await {
        Ok(_) => Ok(()),
        // Many clients (OpenSSL users among them) just close the socket without a TLS
        // close_notify; that is an ordinary end of the session, not an error.
        Err(e) if is_plain_close(&e) => Ok(()),
        Err(e) => Err(format!("relay ended with an error: {e}")),
    }
}

fn is_plain_close(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
    )
}
