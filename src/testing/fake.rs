//! Fake instances for unit tests: each has its own CAs (a Cloud SQL server
//! CA and client CA, or an AlloyDB cluster root and intermediate), a server
//! certificate naming it, and a real TLS 1.3 server-side proxy that requires
//! the client certificate, answers the metadata exchange and then echoes
//! what it gets. The proxy listens on the service's real port (3307, 5433)
//! at a loopback address of its own, so that the connector dials it exactly
//! as it dials Google's.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use super::certs::{client_key, Ca};
use crate::connection_info::{Addresses, ConnectionInfo, ServerIdentity};
use crate::secret::Secret;

/// Which service a fake instance is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Cloud SQL, with or without the metadata exchange.
    CloudSql {
        mdx: bool,
    },
    AlloyDb,
}

/// What the proxy does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Mode {
    /// Handshake, exchange, echo.
    Normal = 0,
    /// Close it at once.
    Refuse = 1,
    /// Accept it and never answer.
    Stall = 2,
}

/// One fake instance.
pub(crate) struct FakeInstance {
    pub kind: Kind,
    /// Cloud SQL's server CA, AlloyDB's cluster root.
    pub server_ca: Ca,
    /// Cloud SQL's client CA, AlloyDB's intermediate (under the root).
    pub client_issuer: Ca,
    ip: OnceLock<IpAddr>,
    mode: AtomicU8,
    /// TLS handshakes completed.
    pub handshakes: AtomicU32,
    /// Bytes of `BLAST` sent so far (`GARBLE`'s bad record counts 1).
    pub blasted: AtomicUsize,
    /// Metadata exchange requests received, whole.
    pub exchanges: Mutex<Vec<Vec<u8>>>,
    /// Connections held open without an answer (`Mode::Stall`).
    stalled: Mutex<Vec<TcpStream>>,
}

/// The instance's names for the Admin API answers.
pub(crate) const CLOUDSQL_NAME: &str = "proj:us-central1:db";
pub(crate) const ALLOYDB_NAME: &str = "projects/proj/locations/us-central1/clusters/c/instances/i";

impl FakeInstance {
    pub(crate) fn new(kind: Kind) -> Arc<Self> {
        let (server_ca, client_issuer) = match kind {
            Kind::CloudSql { .. } => (
                Ca::new("Google Cloud SQL Server CA"),
                Ca::new("Google Cloud SQL Signing CA proj:db"),
            ),
            Kind::AlloyDb => {
                let root = Ca::new("root.alloydb");
                let inter = root.intermediate("client.alloydb");
                (root, inter)
            }
        };
        Arc::new(Self {
            kind,
            server_ca,
            client_issuer,
            ip: OnceLock::new(),
            mode: AtomicU8::new(Mode::Normal as u8),
            handshakes: AtomicU32::new(0),
            blasted: AtomicUsize::new(0),
            exchanges: Mutex::new(Vec::new()),
            stalled: Mutex::new(Vec::new()),
        })
    }

    /// The name to connect to.
    pub(crate) fn name(&self) -> &'static str {
        match self.kind {
            Kind::CloudSql { .. } => CLOUDSQL_NAME,
            Kind::AlloyDb => ALLOYDB_NAME,
        }
    }

    /// The address its proxy listens on, once [`FakeInstance::serve`]d.
    pub(crate) fn ip(&self) -> IpAddr {
        *self.ip.get().expect("the fake instance serves")
    }

    fn port(&self) -> u16 {
        match self.kind {
            Kind::CloudSql { .. } => crate::cloudsql::CLOUD_SQL_PORT,
            Kind::AlloyDb => crate::alloydb::ALLOYDB_PORT,
        }
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// The plan of a dial to it at `ip`, for the tests' key, as its
    /// service's refresh would make it.
    pub(crate) fn info(&self, ip: IpAddr) -> ConnectionInfo {
        let client = client_key();
        let leaf =
            crate::certs::parse_pem_list(&self.client_issuer.client_cert_pem(&client.spki_der, 60))
                .unwrap();
        let expiry = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        match self.kind {
            Kind::CloudSql { mdx } => ConnectionInfo {
                addresses: Addresses {
                    public: Some(ip),
                    ..Addresses::default()
                },
                port: self.port(),
                trust_anchors: vec![self.server_ca.der()],
                identity: ServerIdentity::DnsNameOrCommonName {
                    dns_name: None,
                    common_name: "proj:db".into(),
                },
                sni: false,
                client_chain: leaf,
                expiry,
                exchange: mdx.then(|| {
                    Arc::new(crate::cloudsql::mdx::CloudSqlExchange {
                        user_agent: "ua".into(),
                    }) as _
                }),
            },
            Kind::AlloyDb => ConnectionInfo {
                addresses: Addresses {
                    private: Some(ip),
                    ..Addresses::default()
                },
                port: self.port(),
                trust_anchors: vec![self.server_ca.der()],
                identity: ServerIdentity::AddressDialled,
                sni: true,
                client_chain: [leaf, vec![self.client_issuer.der()]].concat(),
                expiry,
                exchange: Some(Arc::new(crate::alloydb::mdx::AlloyDbExchange {
                    user_agent: "ua".into(),
                    token: Secret::new("login-token".into()),
                    iam: false,
                })),
            },
        }
    }

    /// The server side of TLS, as the instance's proxy configures it.
    pub(crate) fn server_config(&self, ip: IpAddr) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls_rustcrypto::provider());
        let mut roots = RootCertStore::empty();
        let (leaf, chain_tail) = match self.kind {
            Kind::CloudSql { .. } => {
                roots.add(self.client_issuer.der()).unwrap();
                (
                    self.server_ca.server(Some("proj:db"), &[], (-1, 365)),
                    vec![],
                )
            }
            Kind::AlloyDb => {
                roots.add(self.server_ca.der()).unwrap();
                let ip = ip.to_string();
                let leaf =
                    self.server_ca
                        .server(Some("uid.server.alloydb"), &[ip.as_str()], (-1, 365));
                (leaf, vec![self.server_ca.der()])
            }
        };
        let clients =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let mut chain = vec![leaf.cert];
        chain.extend(chain_tail);
        Arc::new(
            ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_client_cert_verifier(clients)
                .with_single_cert(chain, leaf.key)
                .unwrap(),
        )
    }

    /// Starts the proxy on the service's port at a loopback address no
    /// other test uses.
    pub(crate) fn serve(self: &Arc<Self>) {
        let listener = bind_loopback(self.port());
        let ip = listener.local_addr().unwrap().ip();
        self.ip.set(ip).expect("served once");
        let config = self.server_config(ip);
        let me = self.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let (me, config) = (me.clone(), config.clone());
                std::thread::spawn(move || me.handle(tcp, config));
            }
        });
    }

    fn handle(&self, tcp: TcpStream, config: Arc<ServerConfig>) {
        match self.mode.load(Ordering::SeqCst) {
            m if m == Mode::Refuse as u8 => return,
            m if m == Mode::Stall as u8 => return self.stalled.lock().unwrap().push(tcp),
            _ => {}
        }
        let Ok(conn) = ServerConnection::new(config) else {
            return;
        };
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            if tls.conn.complete_io(&mut tls.sock).is_err() {
                return;
            }
        }
        self.handshakes.fetch_add(1, Ordering::SeqCst);
        if self.answer_exchange(&mut tls).is_err() {
            return;
        }
        let mut buf = [0u8; 4096];
        while let Ok(n) = tls.read(&mut buf) {
            // `BLAST n`: n bytes in small records sent as fast as they come
            // (a COPY streaming out: a socket read then holds more records
            // than rustls takes at once); `GARBLE n`: the same, then a
            // record no key sealed; else an echo.
            let command = std::str::from_utf8(&buf[..n]).unwrap_or("");
            let size = |prefix: &str| {
                command
                    .strip_prefix(prefix)
                    .and_then(|n| n.trim().parse::<usize>().ok())
            };
            let sent = match (size("BLAST "), size("GARBLE ")) {
                (Some(size), _) => self.blast(&mut tls, size),
                (_, Some(size)) => self.garble(&mut tls, size),
                _ => tls.write_all(&buf[..n]),
            };
            if n == 0 || sent.is_err() {
                break;
            }
        }
    }

    /// `BLAST size`: the bytes in records of 1000, each written as it is
    /// sealed.
    fn blast(
        &self,
        tls: &mut StreamOwned<ServerConnection, TcpStream>,
        size: usize,
    ) -> io::Result<()> {
        blast_bytes(size).chunks(1000).try_for_each(|record| {
            tls.write_all(record)?;
            self.blasted.fetch_add(record.len(), Ordering::SeqCst);
            Ok(())
        })
    }

    /// `GARBLE size`: the same records, then one no key sealed, in one
    /// write so that one socket read brings them all.
    fn garble(
        &self,
        tls: &mut StreamOwned<ServerConnection, TcpStream>,
        size: usize,
    ) -> io::Result<()> {
        for record in blast_bytes(size).chunks(1000) {
            tls.conn.writer().write_all(record)?;
        }
        let mut wire = Vec::new();
        while tls.conn.wants_write() {
            tls.conn.write_tls(&mut wire)?;
        }
        // Application data, 32 bytes that are no AEAD output.
        wire.extend([0x17, 0x03, 0x03, 0x00, 0x20]);
        wire.extend([0xAA; 32]);
        tls.sock.write_all(&wire)?;
        self.blasted.fetch_add(size + 1, Ordering::SeqCst);
        Ok(())
    }

    /// Reads the client's exchange request (if the instance has one) and
    /// answers OK, as Google's proxies frame it.
    pub(crate) fn answer_exchange(&self, tls: &mut impl ReadWrite) -> io::Result<()> {
        let (signature, ok): (&[u8], &[u8]) = match self.kind {
            Kind::CloudSql { mdx: false } => return Ok(()),
            Kind::CloudSql { mdx: true } => (b"CSQLMDEX", b"CSQLMDEX\x00\x00\x00\x02\x08\x01"),
            Kind::AlloyDb => (b"", b"\x00\x00\x00\x02\x08\x01"),
        };
        let mut header = vec![0u8; signature.len() + 4];
        tls.read_exact(&mut header)?;
        let len = u32::from_be_bytes(header[signature.len()..].try_into().unwrap());
        let mut body = vec![0u8; len as usize];
        tls.read_exact(&mut body)?;
        self.exchanges.lock().unwrap().push(body);
        tls.write_all(ok)?;
        tls.flush()
    }
}

/// What `BLAST size` sends: a pattern a test can check.
pub(crate) fn blast_bytes(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// A stream both ways.
pub(crate) trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A listener on `port` at an address in 127.0.0.0/8 that is free, so that
/// tests running at once each have their own.
fn bind_loopback(port: u16) -> TcpListener {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id() % 200;
    for _ in 0..256 {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let ip = Ipv4Addr::new(
            127,
            100 + (base as u8 % 50),
            (n / 250) as u8,
            (n % 250 + 2) as u8,
        );
        if let Ok(l) = TcpListener::bind((ip, port)) {
            return l;
        }
    }
    panic!("no loopback address has port {port} free")
}
