//! The dial core driven in memory against a real TLS server (each action
//! answered by the test, as a pump would), then both pumps over loopback
//! sockets against a fake instance's proxy; the invalidation rule in each.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConnection;

use super::*;
use crate::cache::{CacheKey, Prepared};
use crate::connection_info::ConnectionInfo;
use crate::error::{ErrorKind, VerificationCheck};
use crate::testing::certs::Ca;
use crate::testing::fake::{FakeInstance, Kind, Mode};
use crate::testing::{alloydb_key, cache_key, client_key_copy, wait_until, ScriptedSource};

const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn key_of(kind: Kind) -> CacheKey {
    match kind {
        Kind::CloudSql { .. } => cache_key(),
        Kind::AlloyDb => alloydb_key(),
    }
}

/// A plan to dial `target` with `info`.
fn plan(kind: Kind, info: ConnectionInfo, target: Target) -> Plan {
    let key = key_of(kind);
    let prepared = Prepared::new(info, Arc::new(client_key_copy()), &key.name).unwrap();
    Plan {
        target,
        port: prepared.info.port,
        tls: prepared.tls.for_connection().unwrap(),
        exchange: prepared.info.exchange.clone(),
        origin: Origin::Memory,
        key,
        started: Instant::now(),
    }
}

/// A dial of `fake` at `target` (its address by default), with `source`
/// told of failures.
fn dial(fake: &FakeInstance, ip: IpAddr, target: Option<Target>, source: &ScriptedSource) -> Dial {
    let target = target.unwrap_or(Target::Ip(ip));
    let plan = plan(fake.kind, fake.info(ip), target);
    Dial::new(plan, Duration::from_secs(10), Arc::new(source.clone()))
}

/// The server side, in memory.
struct Peer {
    fake: Arc<FakeInstance>,
    server: ServerConnection,
    exchanged: bool,
    /// What the database says first, right after the exchange (MySQL's
    /// greeting).
    greeting: &'static [u8],
}

impl Peer {
    fn new(fake: &Arc<FakeInstance>, ip: IpAddr) -> Self {
        Self {
            fake: fake.clone(),
            server: ServerConnection::new(fake.server_config(ip)).unwrap(),
            exchanged: false,
            greeting: b"GREETING",
        }
    }

    fn take(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            self.server.read_tls(&mut bytes).unwrap();
            if self.server.process_new_packets().is_err() {
                return;
            }
        }
        if !self.server.is_handshaking() && !self.exchanged {
            self.exchanged = true;
            let fake = self.fake.clone();
            fake.answer_exchange(&mut Plain(&mut self.server)).unwrap();
            self.server.writer().write_all(self.greeting).unwrap();
        }
    }

    fn output(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while self.server.wants_write() {
            self.server.write_tls(&mut out).unwrap();
        }
        out
    }
}

/// The plaintext side of a server connection.
struct Plain<'a>(&'a mut ServerConnection);

impl Read for Plain<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.reader().read(buf)
    }
}

impl Write for Plain<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.writer().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a step of the drive was.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Resolve,
    Connect,
    Send,
    Receive,
}

/// Drives `dial` against `peer` as a pump would: lookups find `ip`, the
/// connect succeeds, bytes go to and come from the peer. The steps taken,
/// and how it ended.
fn drive(dial: &mut Dial, peer: &mut Peer, ip: IpAddr) -> (Vec<Step>, Result<(), Error>) {
    let mut steps = Vec::new();
    loop {
        let action = match dial.next() {
            Ok(a) => a,
            Err(e) => return (steps, Err(e)),
        };
        match action {
            Action::Resolve { port, .. } => {
                steps.push(Step::Resolve);
                dial.resolved(Ok(vec![SocketAddr::new(ip, port)]));
            }
            Action::Connect { addr, .. } => {
                steps.push(Step::Connect);
                assert_eq!(addr.ip(), ip);
                dial.connected(Ok(()));
            }
            Action::Send { bytes, .. } => {
                steps.push(Step::Send);
                peer.take(&bytes);
                dial.sent(Ok(()));
            }
            Action::Receive { .. } => {
                steps.push(Step::Receive);
                let out = peer.output();
                assert!(
                    !out.is_empty(),
                    "the dial waits for a server with nothing to say"
                );
                dial.received(Ok(&out));
            }
            Action::Done => return (steps, Ok(())),
        }
    }
}

#[test]
fn a_cloud_sql_dial_runs_tcp_the_handshake_and_the_exchange_in_order() {
    let fake = FakeInstance::new(Kind::CloudSql { mdx: true });
    let source = ScriptedSource::lasting(Duration::from_secs(3600));
    let mut d = dial(&fake, LOCALHOST, None, &source);
    let mut peer = Peer::new(&fake, LOCALHOST);
    let (steps, end) = drive(&mut d, &mut peer, LOCALHOST);
    end.unwrap();
    use Step::*;
    // ClientHello; the server's flight; Finished with the exchange request
    // in one send; the exchange response.
    assert_eq!(steps, [Connect, Send, Receive, Send, Receive]);
    assert_eq!(fake.exchanges.lock().unwrap().len(), 1);
    let (mut tls, _, timings) = d.finish().unwrap();
    assert!(timings.cached, "the plan's info came from memory");
    assert!(timings.tls > Duration::ZERO && timings.total >= timings.tls);
    // The database's first bytes, which came right after the response, are
    // left for the driver.
    let mut buf = [0u8; 64];
    let mut inbox = records::Inbox::default();
    let read = records::read_plaintext(&mut tls, &mut inbox, &mut buf[..]).unwrap();
    let records::Plain::Read(n) = read else {
        panic!("{read:?}")
    };
    assert_eq!(&buf[..n], b"GREETING");
    assert_eq!(source.invalidations(), 0);
    // No SNI for Cloud SQL.
    assert_eq!(peer.server.server_name(), None);
}

#[test]
fn an_alloydb_psc_dial_looks_the_name_up_and_sends_it_as_sni() {
    let fake = FakeInstance::new(Kind::AlloyDb);
    let source = ScriptedSource::alloydb(Duration::from_secs(3600));
    let name = "x.y.alloydb-psc.goog";
    let mut info = fake.info(LOCALHOST);
    info.addresses.psc = Some(name.into());
    // The server certificate names the PSC name.
    let server = {
        let root = &fake.server_ca;
        let leaf = root.server(Some("uid"), &[name], (-1, 365));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root.der()).unwrap();
        let provider = Arc::new(rustls_rustcrypto::provider());
        let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(clients)
            .with_single_cert(vec![leaf.cert, root.der()], leaf.key)
            .unwrap()
    };
    let plan = plan(fake.kind, info, Target::Dns(name.into()));
    let mut d = Dial::new(plan, Duration::from_secs(10), Arc::new(source.clone()));
    let mut peer = Peer::new(&fake, LOCALHOST);
    peer.server = ServerConnection::new(Arc::new(server)).unwrap();
    let (steps, end) = drive(&mut d, &mut peer, LOCALHOST);
    end.unwrap();
    assert_eq!(steps[..2], [Step::Resolve, Step::Connect]);
    assert_eq!(peer.server.server_name(), Some(name));
    let request = fake.exchanges.lock().unwrap()[0].clone();
    assert!(request.windows(11).any(|w| w == b"login-token"));
    d.finish().unwrap();
    assert_eq!(source.invalidations(), 0);
}

/// The dial ends in `kind`, and its info is invalidated once.
fn fails_and_invalidates(
    d: Dial,
    source: &ScriptedSource,
    end: Result<(), Error>,
    kind: ErrorKind,
) -> Error {
    let e = end.unwrap_err();
    assert_eq!(e.kind(), kind, "{e:?}");
    assert_eq!(source.invalidations(), 0, "not before the dial is given up");
    drop(d);
    assert_eq!(source.invalidations(), 1);
    e
}

#[test]
fn a_deadline_passing_between_steps_is_a_timeout_and_invalidates() {
    let fake = FakeInstance::new(Kind::CloudSql { mdx: true });
    for (steps_before, want) in [
        (0, "TCP connect"),
        (1, "TLS handshake"),
        (4, "metadata exchange"),
    ] {
        let source = ScriptedSource::lasting(Duration::from_secs(3600));
        let mut d = dial(&fake, LOCALHOST, None, &source);
        let mut peer = Peer::new(&fake, LOCALHOST);
        let mut taken = 0;
        // Take the first steps, then let the deadline pass.
        while taken < steps_before {
            match d.next().unwrap() {
                Action::Connect { .. } => d.connected(Ok(())),
                Action::Send { bytes, .. } => {
                    peer.take(&bytes);
                    d.sent(Ok(()));
                }
                Action::Receive { .. } => {
                    let out = peer.output();
                    d.received(Ok(&out));
                }
                other => panic!("{other:?}"),
            }
            taken += 1;
        }
        d.expire();
        let end = d.next().map(drop);
        let e = fails_and_invalidates(d, &source, end, ErrorKind::Timeout);
        assert!(e.message().contains(want), "{want}: {e}");
    }
}

#[test]
fn a_psc_name_rustls_cannot_take_is_an_error_and_invalidates() {
    let fake = FakeInstance::new(Kind::AlloyDb);
    let source = ScriptedSource::alloydb(Duration::from_secs(3600));
    let mut d = dial(
        &fake,
        LOCALHOST,
        Some(Target::Dns("not a name".into())),
        &source,
    );
    let mut peer = Peer::new(&fake, LOCALHOST);
    let (steps, end) = drive(&mut d, &mut peer, LOCALHOST);
    assert_eq!(steps, [Step::Resolve, Step::Connect]);
    fails_and_invalidates(d, &source, end, ErrorKind::InstanceMetadata);
}

#[test]
fn a_server_closing_mid_handshake_is_a_tls_error_and_invalidates() {
    let fake = FakeInstance::new(Kind::CloudSql { mdx: false });
    let source = ScriptedSource::lasting(Duration::from_secs(3600));
    let mut d = dial(&fake, LOCALHOST, None, &source);
    assert!(matches!(d.next().unwrap(), Action::Connect { .. }));
    d.connected(Ok(()));
    assert!(matches!(d.next().unwrap(), Action::Send { .. }));
    d.sent(Ok(()));
    assert!(matches!(d.next().unwrap(), Action::Receive { .. }));
    d.received(Ok(&[]));
    let end = d.next().map(drop);
    let e = fails_and_invalidates(d, &source, end, ErrorKind::Tls);
    assert!(e.message().contains("closed the connection"), "{e}");
}

#[test]
fn a_refused_server_gets_an_alert_and_the_check_is_named() {
    let fake = FakeInstance::new(Kind::CloudSql { mdx: true });
    let source = ScriptedSource::lasting(Duration::from_secs(3600));
    // The client trusts another CA than the one that made the server's leaf.
    let mut info = fake.info(LOCALHOST);
    info.trust_anchors = vec![Ca::new("someone else").der()];
    let mut d = Dial::new(
        plan(fake.kind, info, Target::Ip(LOCALHOST)),
        Duration::from_secs(10),
        Arc::new(source.clone()),
    );
    let mut peer = Peer::new(&fake, LOCALHOST);
    let (steps, end) = drive(&mut d, &mut peer, LOCALHOST);
    // The last send is the alert, after the server's flight was refused.
    assert_eq!(steps.last(), Some(&Step::Send));
    assert!(
        peer.server.is_handshaking(),
        "the server never saw a Finished"
    );
    let e = fails_and_invalidates(d, &source, end, ErrorKind::ServerVerification);
    assert_eq!(e.verification_check(), Some(VerificationCheck::Chain));
    assert!(fake.exchanges.lock().unwrap().is_empty());
}

#[test]
fn socket_errors_are_named_by_the_step_they_hit() {
    let fake = FakeInstance::new(Kind::CloudSql { mdx: false });
    let source = ScriptedSource::lasting(Duration::from_secs(3600));
    let mut d = dial(&fake, LOCALHOST, None, &source);
    d.next().unwrap();
    d.connected(Err(io::ErrorKind::ConnectionRefused.into()));
    let end = d.next().map(drop);
    let e = fails_and_invalidates(d, &source, end, ErrorKind::Dial);
    assert!(
        e.message().contains("TCP connect to 127.0.0.1:3307 failed"),
        "{e}"
    );
    assert!(std::error::Error::source(&e).is_some());

    let source = ScriptedSource::lasting(Duration::from_secs(3600));
    let mut d = dial(&fake, LOCALHOST, None, &source);
    d.next().unwrap();
    d.connected(Err(io::ErrorKind::TimedOut.into()));
    let end = d.next().map(drop);
    fails_and_invalidates(d, &source, end, ErrorKind::Timeout);

    let source = ScriptedSource::lasting(Duration::from_secs(3600));
    let mut d = dial(&fake, LOCALHOST, None, &source);
    d.next().unwrap();
    d.connected(Ok(()));
    d.next().unwrap();
    d.sent(Err(io::ErrorKind::ConnectionReset.into()));
    let end = d.next().map(drop);
    fails_and_invalidates(d, &source, end, ErrorKind::Tls);

    // A PSC name whose lookup fails, or outlasts its bound.
    let psc = Some(Target::Dns("x.psc.example".into()));
    for (error, kind) in [
        (io::ErrorKind::NotFound, ErrorKind::Dial),
        (io::ErrorKind::TimedOut, ErrorKind::Timeout),
    ] {
        let source = ScriptedSource::lasting(Duration::from_secs(3600));
        let mut d = dial(&fake, LOCALHOST, psc.clone(), &source);
        assert!(matches!(d.next().unwrap(), Action::Resolve { .. }));
        d.resolved(Err(error.into()));
        let end = d.next().map(drop);
        let e = fails_and_invalidates(d, &source, end, kind);
        assert!(e.message().contains("x.psc.example"), "{e}");
    }
}

#[test]
fn a_pump_out_of_order_fails_the_dial() {
    let fake = FakeInstance::new(Kind::CloudSql { mdx: false });
    let source = ScriptedSource::lasting(Duration::from_secs(3600));
    let mut d = dial(&fake, LOCALHOST, None, &source);
    // A receive reported before TCP is even up.
    d.received(Ok(b"x"));
    let end = d.next().map(drop);
    fails_and_invalidates(d, &source, end, ErrorKind::Dial);

    // Finishing before done.
    let source = ScriptedSource::lasting(Duration::from_secs(3600));
    let d = dial(&fake, LOCALHOST, None, &source);
    assert!(d.finish().is_err());
    assert_eq!(source.invalidations(), 1);
}

/// Both pumps, over loopback, against the fake's proxy: the connection
/// works, and each failure invalidates once.
mod pumps {
    use super::*;

    fn served(kind: Kind) -> Arc<FakeInstance> {
        let fake = FakeInstance::new(kind);
        fake.serve();
        fake
    }

    fn pump_dial(fake: &FakeInstance, target: Option<Target>, source: &ScriptedSource) -> Dial {
        let ip = fake.ip();
        let target = target.unwrap_or(Target::Ip(ip));
        let plan = plan(fake.kind, fake.info(ip), target);
        Dial::new(plan, Duration::from_millis(500), Arc::new(source.clone()))
    }

    #[test]
    fn the_blocking_pump_connects_and_echoes() {
        for kind in [Kind::CloudSql { mdx: true }, Kind::AlloyDb] {
            let fake = served(kind);
            let source = ScriptedSource::lasting(Duration::from_secs(3600));
            let mut conn = blocking::run(pump_dial(&fake, None, &source)).unwrap();
            conn.write_all(b"ping").unwrap();
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"ping");
            conn.shutdown().unwrap();
            assert_eq!(source.invalidations(), 0);
            assert_eq!(fake.exchanges.lock().unwrap().len(), 1);
        }
    }

    /// The drift cases: a deadline passing (a proxy that never answers) and
    /// a bad PSC name, then a proxy that refuses.
    fn blocking_failure(fake: &Arc<FakeInstance>, mode: Mode, target: Option<Target>) -> Error {
        fake.set_mode(mode);
        let source = ScriptedSource::lasting(Duration::from_secs(3600));
        let e = blocking::run(pump_dial(fake, target, &source))
            .map(drop)
            .unwrap_err();
        assert_eq!(source.invalidations(), 1, "{e:?}");
        e
    }

    #[test]
    fn the_blocking_pump_invalidates_on_each_failure() {
        let fake = served(Kind::CloudSql { mdx: false });
        let e = blocking_failure(&fake, Mode::Stall, None);
        assert_eq!(e.kind(), ErrorKind::Timeout);
        let bad = Some(Target::Dns("bad psc name.invalid".into()));
        let e = blocking_failure(&fake, Mode::Normal, bad);
        assert_eq!(e.kind(), ErrorKind::Dial);
        let e = blocking_failure(&fake, Mode::Refuse, None);
        assert_eq!(e.kind(), ErrorKind::Tls);
    }

    #[cfg(feature = "tokio")]
    mod tokio_pump {
        use ::tokio::io::{AsyncReadExt, AsyncWriteExt};

        use super::*;

        fn block_on<F: std::future::Future>(f: F) -> F::Output {
            ::tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f)
        }

        #[test]
        fn the_tokio_pump_connects_and_echoes() {
            for kind in [Kind::CloudSql { mdx: true }, Kind::AlloyDb] {
                let fake = served(kind);
                let source = ScriptedSource::lasting(Duration::from_secs(3600));
                block_on(async {
                    let mut conn = crate::connect::tokio::run(pump_dial(&fake, None, &source))
                        .await
                        .unwrap();
                    // More than one TLS record each way.
                    let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
                    conn.write_all(&big).await.unwrap();
                    conn.flush().await.unwrap();
                    let mut back = vec![0u8; big.len()];
                    conn.read_exact(&mut back).await.unwrap();
                    assert_eq!(back, big);
                    conn.shutdown().await.unwrap();
                });
                assert_eq!(source.invalidations(), 0);
            }
        }

        fn tokio_failure(fake: &Arc<FakeInstance>, mode: Mode, target: Option<Target>) -> Error {
            fake.set_mode(mode);
            let source = ScriptedSource::lasting(Duration::from_secs(3600));
            let e = block_on(crate::connect::tokio::run(pump_dial(fake, target, &source)))
                .map(drop)
                .unwrap_err();
            assert_eq!(source.invalidations(), 1, "{e:?}");
            e
        }

        #[test]
        fn the_tokio_connection_takes_a_fast_stream_in_small_reads() {
            let fake = served(Kind::AlloyDb);
            let source = ScriptedSource::lasting(Duration::from_secs(3600));
            block_on(async {
                let mut conn = crate::connect::tokio::run(pump_dial(&fake, None, &source))
                    .await
                    .unwrap();
                let size = 1 << 20;
                conn.write_all(format!("BLAST {size}").as_bytes())
                    .await
                    .unwrap();
                conn.flush().await.unwrap();
                wait_until("a quarter of the stream", || {
                    fake.blasted.load(std::sync::atomic::Ordering::SeqCst) >= size / 4
                });
                let mut got = Vec::with_capacity(size);
                let mut small = [0u8; 1000];
                while got.len() < size {
                    let n = conn.read(&mut small).await.unwrap();
                    assert!(n > 0, "closed after {} bytes", got.len());
                    got.extend_from_slice(&small[..n]);
                }
                assert_eq!(got, crate::testing::fake::blast_bytes(size));
            });
        }

        #[test]
        fn the_tokio_pump_invalidates_on_each_failure() {
            let fake = served(Kind::CloudSql { mdx: false });
            let e = tokio_failure(&fake, Mode::Stall, None);
            assert_eq!(e.kind(), ErrorKind::Timeout);
            let bad = Some(Target::Dns("bad psc name.invalid".into()));
            let e = tokio_failure(&fake, Mode::Normal, bad);
            assert_eq!(e.kind(), ErrorKind::Dial);
            let e = tokio_failure(&fake, Mode::Refuse, None);
            assert_eq!(e.kind(), ErrorKind::Tls);
        }

        #[test]
        fn a_dropped_dial_future_invalidates() {
            let fake = served(Kind::CloudSql { mdx: false });
            fake.set_mode(Mode::Stall);
            let source = ScriptedSource::lasting(Duration::from_secs(3600));
            let dial = pump_dial(&fake, None, &source);
            block_on(async {
                let run = crate::connect::tokio::run(dial);
                // Given up on from outside before the dial's own deadline.
                let r = ::tokio::time::timeout(Duration::from_millis(50), run).await;
                assert!(r.is_err());
            });
            assert_eq!(source.invalidations(), 1);
        }
    }

    /// A blocking connection to a new Cloud SQL fake that has been sent
    /// `command` (`BLAST n`, `GARBLE n`) and has counted `sent` bytes of its
    /// answer in `blasted`: written to the socket before the first read.
    fn blocking_after(command: &str, sent: usize) -> (Arc<FakeInstance>, blocking::Connection) {
        let fake = served(Kind::CloudSql { mdx: false });
        let source = ScriptedSource::lasting(Duration::from_secs(3600));
        let mut conn = blocking::run(pump_dial(&fake, None, &source)).unwrap();
        conn.write_all(command.as_bytes()).unwrap();
        wait_until(&format!("{sent} bytes of {command:?} sent"), || {
            fake.blasted.load(std::sync::atomic::Ordering::SeqCst) >= sent
        });
        (fake, conn)
    }

    /// A server streaming faster than the driver reads (a COPY out): the
    /// socket brings more records than rustls holds at once.
    #[test]
    fn the_blocking_connection_takes_a_fast_stream_in_small_reads() {
        let size = 1 << 20;
        // Records pile up in the socket before the first read.
        let (_fake, mut conn) = blocking_after(&format!("BLAST {size}"), size / 4);
        let mut got = Vec::with_capacity(size);
        let mut small = [0u8; 1000];
        while got.len() < size {
            let n = conn.read(&mut small).unwrap();
            assert!(n > 0, "closed after {} bytes", got.len());
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, crate::testing::fake::blast_bytes(size));
    }

    /// `read_available` hands back what has arrived, more than rustls holds
    /// at once, without waiting for more, and never more than asked for.
    #[test]
    fn the_blocking_connection_hands_back_what_has_arrived() {
        let size = 1 << 20;
        let (_fake, mut conn) = blocking_after(&format!("BLAST {size}"), size / 4);
        let mut got = vec![b'!'];
        let mut largest = 0;
        for max in [5000, 200_000].into_iter().cycle() {
            if got.len() > size {
                break;
            }
            let before = got.len();
            let n = conn.read_available(&mut got, max).unwrap();
            assert!(n > 0, "closed after {before} bytes");
            assert!(n <= max, "{n} bytes asked for at most {max}");
            assert_eq!(got.len(), before + n, "appended, not overwritten");
            largest = largest.max(n);
        }
        assert_eq!(got[0], b'!');
        assert_eq!(got[1..], crate::testing::fake::blast_bytes(size));
        // rustls holds at most 16 KiB of plaintext (records of 1000 bytes
        // here): more in one call was taken from what the socket had brought.
        assert!(largest > 17 * 1024, "at most {largest} bytes in one call");
        assert_eq!(conn.read_available(&mut got, 0).unwrap_or(1), 0);
        conn.shutdown().unwrap();
    }

    /// A record that does not decrypt, behind good ones that one socket
    /// read brought: `read_available` hands back good bytes, and the next
    /// read the error, without waiting on the socket for more.
    #[test]
    fn an_error_behind_available_bytes_comes_with_the_next_read() {
        let size = 5000;
        // The stream and its bad record.
        let (_fake, mut conn) = blocking_after(&format!("GARBLE {size}"), size + 1);
        let (done, reads) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let first = conn.read_available(&mut got, 1 << 20).map(|_| got);
            let second = conn.read_available(&mut Vec::new(), 1 << 20);
            let _ = done.send((first, second));
        });
        // The server sends nothing more: a read waiting on the socket would
        // wait for ever.
        let (first, second) = reads
            .recv_timeout(Duration::from_secs(20))
            .expect("a read waited on the socket");
        // What rustls decrypted before the bad record, in order.
        let first = first.unwrap();
        let sent = crate::testing::fake::blast_bytes(size);
        assert!(
            !first.is_empty() && sent.starts_with(&first),
            "{} bytes",
            first.len()
        );
        let e = second.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }

    #[test]
    fn the_blocking_connection_carries_big_writes_whole() {
        let fake = served(Kind::AlloyDb);
        let source = ScriptedSource::lasting(Duration::from_secs(3600));
        let mut conn = blocking::run(pump_dial(&fake, None, &source)).unwrap();
        // More than one TLS record each way; the echo fits the socket
        // buffers, so writing it all before reading cannot stall.
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        conn.write_all(&big).unwrap();
        conn.flush().unwrap();
        let mut back = vec![0u8; big.len()];
        conn.read_exact(&mut back).unwrap();
        assert_eq!(back, big);
    }
}
