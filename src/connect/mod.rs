//! The dial, once the connector has its plan: TCP to the server-side proxy,
//! the TLS 1.3 handshake and the metadata exchange, as one sans-IO state
//! machine, [`Dial`], the way rustls itself is built. It never touches a
//! socket: it says what to do next ([`Action`]) and is told what happened.
//! Two thin pumps drive it, [`blocking`] (std sockets) and `tokio`, and carry
//! the bytes of the established connection with the helpers below; so the
//! error mapping, the deadline and the rule for when a cached entry is
//! invalidated live here once.
//!
//! The rule: a dial that does not end in a connection (any error, the
//! deadline, a pump giving up, a future dropped) marks the instance's cached
//! info stale, here and in the host store, so the next connect refreshes.
//!
//! Each flight of TLS records goes out in one write: `wasi:sockets` has no
//! vectored write and a guest cannot turn Nagle off (no TCP_NODELAY), so a
//! flight split over several small sends would wait for the peer's delayed
//! ACK (about 40 ms) between them.

pub(crate) mod blocking;
pub(crate) mod records;
pub(crate) mod timings;
#[cfg(feature = "tokio")]
pub(crate) mod tokio;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConfig, ClientConnection};

use crate::cache::{CacheKey, Origin, Source};
use crate::connection_info::Target;
use crate::error::Error;
use crate::mdx::{self, MetadataExchange, Progress, ResponseReader};
use crate::tls;
use records::{outgoing, FeedError, Inbox};
use timings::ConnectTimings;

/// A connect resolved up to the dial.
pub(crate) struct Plan {
    /// What the info is cached under, to invalidate.
    pub key: CacheKey,
    pub target: Target,
    pub port: u16,
    /// This connection's TLS config.
    pub tls: Arc<ClientConfig>,
    pub exchange: Option<Arc<dyn MetadataExchange>>,
    pub origin: Origin,
    /// When the connect started.
    pub started: Instant,
}

/// What a pump does next for a [`Dial`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Look up `host` (a PSC DNS name); report with [`Dial::resolved`].
    Resolve {
        host: String,
        port: u16,
        timeout: Duration,
    },
    /// Open TCP to `addr`; report with [`Dial::connected`].
    Connect { addr: SocketAddr, timeout: Duration },
    /// Send all of `bytes` in one write; report with [`Dial::sent`].
    Send { bytes: Vec<u8>, timeout: Duration },
    /// Receive what the server sends next; report with [`Dial::received`].
    Receive { timeout: Duration },
    /// The connection is ready: take it with [`Dial::finish`].
    Done,
}

/// Where a dial is.
enum State {
    Start,
    /// Waiting for the lookup of `host`.
    Resolving {
        host: String,
    },
    /// Looked up, to connect to `addr`.
    Resolved {
        addr: SocketAddr,
    },
    /// Waiting for the TCP connect to `addr`.
    Connecting {
        addr: SocketAddr,
    },
    /// TCP is up; the handshake (and then the exchange) runs.
    Tls,
    Done,
    /// It failed: `farewell` (a TLS alert) is sent if it can be, then
    /// `error` is returned.
    Failed {
        error: Error,
        farewell: Option<Vec<u8>>,
    },
}

/// One dial, from TCP to a ready connection.
pub(crate) struct Dial {
    plan: Plan,
    deadline: Instant,
    state: State,
    tls: Option<ClientConnection>,
    /// What the server sent that rustls has not taken yet.
    inbox: Inbox,
    response: Option<ResponseReader>,
    /// The source the plan's info came from, told if the dial fails.
    source: Arc<dyn Source>,
    tcp_started: Option<Instant>,
    tcp: Duration,
    tls_started: Option<Instant>,
    finished: bool,
}

impl Dial {
    /// A dial of `plan`, bounded as a whole by `timeout`. If it does not end
    /// in [`Dial::finish`], `source` forgets the plan's info.
    pub(crate) fn new(plan: Plan, timeout: Duration, source: Arc<dyn Source>) -> Self {
        Self {
            deadline: Instant::now() + timeout,
            plan,
            state: State::Start,
            tls: None,
            inbox: Inbox::default(),
            response: None,
            source,
            tcp_started: None,
            tcp: Duration::ZERO,
            tls_started: None,
            finished: false,
        }
    }

    /// Where the plan's info came from.
    pub(crate) fn origin(&self) -> Origin {
        self.plan.origin
    }

    /// What to do next, or why the dial failed.
    pub(crate) fn next(&mut self) -> Result<Action, Error> {
        if let State::Failed { farewell, error } = &mut self.state {
            return match (farewell.take(), remaining(self.deadline)) {
                (Some(bytes), Some(timeout)) => Ok(Action::Send { bytes, timeout }),
                _ => Err(error.clone()),
            };
        }
        let Some(timeout) = remaining(self.deadline) else {
            return Err(self.timed_out());
        };
        match &self.state {
            State::Start => match &self.plan.target {
                Target::Ip(ip) => Ok(self.connect(SocketAddr::new(*ip, self.plan.port), timeout)),
                Target::Dns(host) => {
                    self.state = State::Resolving { host: host.clone() };
                    Ok(Action::Resolve {
                        host: host.clone(),
                        port: self.plan.port,
                        timeout,
                    })
                }
            },
            State::Resolved { addr } => Ok(self.connect(*addr, timeout)),
            State::Resolving { .. } | State::Connecting { .. } => Err(self.fail(Error::dial(
                "the dial was driven out of order: a lookup or connect was not reported",
            ))),
            State::Tls => self.next_tls(timeout),
            State::Done => Ok(Action::Done),
            State::Failed { .. } => unreachable!("handled above"),
        }
    }

    fn connect(&mut self, addr: SocketAddr, timeout: Duration) -> Action {
        self.tcp_started = Some(Instant::now());
        self.state = State::Connecting { addr };
        Action::Connect { addr, timeout }
    }

    fn next_tls(&mut self, timeout: Duration) -> Result<Action, Error> {
        loop {
            let tls = self
                .tls
                .as_mut()
                .ok_or_else(|| Error::tls("TLS never started"))?;
            if tls.wants_write() {
                return Ok(Action::Send {
                    bytes: outgoing(tls),
                    timeout,
                });
            }
            let need_more = if tls.is_handshaking() {
                true
            } else if let (Some(exchange), Some(response)) =
                (&self.plan.exchange, &mut self.response)
            {
                match response.read_from(exchange.as_ref(), &mut tls.reader()) {
                    Ok(Progress::Accepted) => false,
                    Ok(Progress::NeedMore) => true,
                    Err(e) => return Err(self.fail(e)),
                }
            } else {
                false
            };
            if !need_more {
                self.state = State::Done;
                return Ok(Action::Done);
            }
            // What arrived already may be enough.
            match self.inbox.feed(tls) {
                Ok(true) => continue,
                Ok(false) => return Ok(Action::Receive { timeout }),
                Err(e) => return Err(self.refuse(e)),
            }
        }
    }

    /// The lookup's answer.
    pub(crate) fn resolved(&mut self, addrs: io::Result<Vec<SocketAddr>>) {
        let State::Resolving { host } = &self.state else {
            return self.out_of_order("a lookup");
        };
        let host = host.clone();
        match addrs {
            Ok(addrs) => match addrs.first() {
                Some(addr) => self.state = State::Resolved { addr: *addr },
                None => self.fail_with(Error::dial(format!("{host} resolves to no address"))),
            },
            Err(e) => {
                let error = if e.kind() == io::ErrorKind::TimedOut {
                    Error::timeout(format!("looking up {host} did not finish in time"))
                } else {
                    Error::dial(format!("cannot resolve {host}: {e}"))
                };
                self.fail_with(error.with_source(e));
            }
        }
    }

    /// How the TCP connect ended.
    pub(crate) fn connected(&mut self, result: io::Result<()>) {
        let State::Connecting { addr } = self.state else {
            return self.out_of_order("a connect");
        };
        if let Some(started) = self.tcp_started {
            self.tcp = started.elapsed();
        }
        if let Err(e) = result {
            let error = if e.kind() == io::ErrorKind::TimedOut {
                Error::timeout(format!("TCP connect to {addr} did not finish in time"))
            } else {
                Error::dial(format!("TCP connect to {addr} failed: {e}"))
            };
            return self.fail_with(error.with_source(e));
        }
        self.tls_started = Some(Instant::now());
        match self.start_tls() {
            Ok(()) => self.state = State::Tls,
            Err(e) => self.fail_with(e),
        }
    }

    /// The client side of TLS, with the exchange's request queued: rustls
    /// holds it until the handshake is done, then sends it with the
    /// client's last flight.
    fn start_tls(&mut self) -> Result<(), Error> {
        let name = tls::server_name(&self.plan.target)?;
        let mut conn = ClientConnection::new(self.plan.tls.clone(), name)
            .map_err(|e| Error::tls(format!("cannot start TLS: {e}")).with_source(e))?;
        if let Some(exchange) = &self.plan.exchange {
            conn.writer().write_all(&exchange.request()).map_err(|e| {
                Error::tls(format!("cannot queue the metadata exchange: {e}")).with_source(e)
            })?;
            self.response = Some(ResponseReader::new(exchange.as_ref()));
        }
        self.tls = Some(conn);
        Ok(())
    }

    /// How sending the bytes of [`Action::Send`] ended.
    pub(crate) fn sent(&mut self, result: io::Result<()>) {
        match (&self.state, result) {
            (State::Tls, Err(e)) => {
                let error = io_error(e, self.exchanging());
                self.fail_with(error);
            }
            // A farewell that did not go out changes nothing.
            (State::Tls | State::Failed { .. }, Ok(())) | (State::Failed { .. }, Err(_)) => {}
            _ => self.out_of_order("a send"),
        }
    }

    /// What [`Action::Receive`] got: bytes, an empty slice at end of
    /// stream, or an error.
    pub(crate) fn received(&mut self, result: io::Result<&[u8]>) {
        if !matches!(self.state, State::Tls) {
            return self.out_of_order("a receive");
        }
        let handshake_done = self.handshake_done();
        let exchanging = self.exchanging();
        let Some(tls) = self.tls.as_mut() else {
            return self.out_of_order("a receive");
        };
        match result {
            Err(e) => self.fail_with(io_error(e, exchanging)),
            Ok(bytes) if bytes.is_empty() && !handshake_done => self.fail_with(handshake_closed()),
            // After the handshake, the end of the stream is told to rustls,
            // whose reader then reports the close.
            Ok(bytes) => {
                self.inbox.push(bytes);
                if let Err(e) = self.inbox.feed(tls) {
                    self.refuse(e);
                }
            }
        }
    }

    /// Fails with what rustls refused, sending the alert it queued (it tells
    /// the server why).
    fn refuse(&mut self, e: FeedError) -> Error {
        let farewell = self.tls.as_mut().filter(|t| t.wants_write()).map(outgoing);
        let error = feed_error(e);
        self.state = State::Failed {
            error: error.clone(),
            farewell,
        };
        error
    }

    /// The established connection, what the server sent that it has not
    /// taken yet, and what the connect cost, once [`Action::Done`] was given.
    pub(crate) fn finish(mut self) -> Result<(ClientConnection, Inbox, ConnectTimings), Error> {
        if !matches!(self.state, State::Done) {
            return Err(Error::tls("the dial was finished before it was done"));
        }
        let conn = self
            .tls
            .take()
            .ok_or_else(|| Error::tls("the dial has no TLS connection"))?;
        self.finished = true;
        let tls = self.tls_started.map(|t| t.elapsed()).unwrap_or_default();
        let timings =
            ConnectTimings::new(self.plan.origin, self.tcp, tls, self.plan.started.elapsed());
        Ok((conn, std::mem::take(&mut self.inbox), timings))
    }

    /// Lets the deadline pass now (the tests' clock).
    #[cfg(test)]
    pub(crate) fn expire(&mut self) {
        self.deadline = Instant::now();
    }

    /// Ends a dial that was only planned (a warm-up): nothing failed, so
    /// nothing is invalidated.
    pub(crate) fn finish_unused(mut self) {
        self.finished = true;
    }

    /// The error for the deadline passing in the current step.
    fn timed_out(&self) -> Error {
        match &self.state {
            State::Start => match &self.plan.target {
                Target::Ip(ip) => Error::timeout(format!(
                    "TCP connect to {} did not finish in time",
                    SocketAddr::new(*ip, self.plan.port)
                )),
                Target::Dns(host) => {
                    Error::timeout(format!("looking up {host} did not finish in time"))
                }
            },
            State::Resolving { host } => {
                Error::timeout(format!("looking up {host} did not finish in time"))
            }
            State::Resolved { addr } | State::Connecting { addr } => {
                Error::timeout(format!("TCP connect to {addr} did not finish in time"))
            }
            State::Tls if self.exchanging() => mdx::timed_out(),
            _ => Error::timeout("the TLS handshake did not finish in time"),
        }
    }

    /// Whether the handshake is over.
    fn handshake_done(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| !t.is_handshaking())
    }

    /// Whether the metadata exchange runs: the handshake is over and the
    /// plan has one.
    fn exchanging(&self) -> bool {
        self.plan.exchange.is_some() && self.handshake_done()
    }

    fn fail(&mut self, error: Error) -> Error {
        self.state = State::Failed {
            error: error.clone(),
            farewell: None,
        };
        error
    }

    fn fail_with(&mut self, error: Error) {
        self.fail(error);
    }

    fn out_of_order(&mut self, what: &str) {
        self.fail_with(Error::dial(format!(
            "the dial was driven out of order: {what} was reported unasked"
        )));
    }
}

/// The error for a failed socket read or write: of the exchange while it
/// runs, else of the handshake.
fn io_error(e: io::Error, exchanging: bool) -> Error {
    if exchanging {
        return mdx::io_error(e);
    }
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            Error::timeout("the TLS handshake did not finish in time")
        }
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted => handshake_closed(),
        _ => Error::tls(format!("the TLS handshake failed: {e}")),
    }
    .with_source(e)
}

fn feed_error(e: FeedError) -> Error {
    match e {
        FeedError::Tls(e) => tls::from_rustls(&e),
        FeedError::Io(e) => Error::tls(format!("the TLS handshake failed: {e}")).with_source(e),
    }
}

fn handshake_closed() -> Error {
    Error::tls("the server closed the connection during the TLS handshake")
}

impl Drop for Dial {
    /// The invalidation rule: a dial that did not end in a connection
    /// leaves its info stale.
    fn drop(&mut self) {
        if !self.finished {
            self.source.invalidate(&self.plan.key);
        }
    }
}

/// Time left before `deadline`, if any.
fn remaining(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then_some(left)
}

/// The error of a read or write on a connection whose DNS name has moved:
/// `ConnectionAborted`, with the reason (the name, the old and the new
/// instance).
pub(crate) fn moved_error(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, reason)
}

#[cfg(test)]
mod tests;
