//! The bytes between the socket and rustls, both ways, as the dial and both
//! pumps' connections move them. What is read from the socket waits in an
//! [`Inbox`] until rustls will take it: rustls holds at most 16 KiB of
//! decrypted bytes the reader has not taken and refuses more TLS until it
//! has, so a read from the socket can bring more records than rustls takes
//! at once. What rustls encrypts leaves as one buffer ([`outgoing`]).

use std::io::{self, BufRead, Read};

use rustls::ClientConnection;

/// How much a pump reads from the socket at once: a few whole TLS records,
/// so that a fast stream (a COPY out) costs fewer socket reads and, through
/// [`Append`], fewer reads of the connection (BENCHMARKS.md row 4).
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// What went wrong handing bytes to rustls.
#[derive(Debug)]
pub(crate) enum FeedError {
    /// rustls refused what the server sent.
    Tls(rustls::Error),
    Io(io::Error),
}

impl From<FeedError> for io::Error {
    /// For a driver's read, where a refusal is invalid data.
    fn from(e: FeedError) -> Self {
        match e {
            FeedError::Tls(e) => io::Error::new(io::ErrorKind::InvalidData, e),
            FeedError::Io(e) => e,
        }
    }
}

/// TLS bytes read from the socket that rustls has not taken yet, and
/// whether the socket has reached its end.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    /// `bytes[taken..filled]` waits for rustls; the room after `filled` is
    /// kept between reads so that it is not cleared again for each one.
    bytes: Vec<u8>,
    taken: usize,
    filled: usize,
    /// The socket is at its end ...
    eof: bool,
    /// ... and rustls has been told.
    eof_told: bool,
}

impl Inbox {
    /// Whether every byte read has been taken by rustls.
    pub(crate) fn is_empty(&self) -> bool {
        self.taken == self.filled
    }

    /// Moves what waits to the front and makes room for `n` more bytes
    /// after it; returns that room.
    fn room(&mut self, n: usize) -> &mut [u8] {
        if self.taken > 0 {
            self.bytes.copy_within(self.taken..self.filled, 0);
            self.filled -= self.taken;
            self.taken = 0;
        }
        let end = self.filled + n;
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        &mut self.bytes[self.filled..end]
    }

    /// Reads once from the socket with `read` into the room after what
    /// waits; 0 bytes is the end of the stream. Returns what `read` did.
    pub(crate) fn read_from(
        &mut self,
        read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let result = read(self.room(READ_CHUNK));
        self.filled += (*result.as_ref().unwrap_or(&0)).min(READ_CHUNK);
        if matches!(result, Ok(0)) {
            self.eof = true;
        }
        result
    }

    /// Adds bytes a pump read itself; an empty slice is the end of the
    /// stream.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            self.eof = true;
        }
        self.room(bytes.len()).copy_from_slice(bytes);
        self.filled += bytes.len();
    }

    /// Hands rustls what it will take now, processing each part; at the end
    /// of the stream, tells it so. Whether it took anything.
    pub(crate) fn feed(&mut self, tls: &mut ClientConnection) -> Result<bool, FeedError> {
        let mut progress = false;
        while !self.is_empty() && tls.wants_read() {
            let mut rest = &self.bytes[self.taken..self.filled];
            let n = tls.read_tls(&mut rest).map_err(FeedError::Io)?;
            self.taken += n;
            tls.process_new_packets().map_err(FeedError::Tls)?;
            if n == 0 {
                break;
            }
            progress = true;
        }
        if self.is_empty() && self.eof && !self.eof_told {
            self.eof_told = true;
            tls.read_tls(&mut io::empty()).map_err(FeedError::Io)?;
            tls.process_new_packets().map_err(FeedError::Tls)?;
            progress = true;
        }
        Ok(progress)
    }
}

/// Every TLS record rustls has to send, as one buffer.
pub(crate) fn outgoing(tls: &mut ClientConnection) -> Vec<u8> {
    let mut out = Vec::new();
    while tls.wants_write() {
        // Writing into a Vec cannot fail.
        if tls.write_tls(&mut out).is_err() {
            break;
        }
    }
    out
}

/// What a read of plaintext got.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plain {
    /// This many bytes (0: the server closed with close_notify).
    Read(usize),
    /// Nothing until more is read from the socket.
    NeedSocket,
}

/// Where a read of plaintext puts what rustls has decrypted.
pub(crate) trait Sink {
    /// Takes what `reader` has ready: how many bytes (0: the server closed
    /// with close_notify), or `WouldBlock` when nothing is ready.
    fn take(&mut self, reader: rustls::Reader<'_>) -> io::Result<usize>;
}

/// A caller's buffer, filled from the front.
impl Sink for [u8] {
    fn take(&mut self, mut reader: rustls::Reader<'_>) -> io::Result<usize> {
        reader.read(self)
    }
}

/// Plaintext appended to a vector until it holds `limit` bytes: nothing is
/// cleared beforehand for bytes that may never come. Its callers stop once
/// it is full, so that taking 0 bytes still means the server closed.
pub(crate) struct Append<'a> {
    pub(crate) out: &'a mut Vec<u8>,
    pub(crate) limit: usize,
}

impl Sink for Append<'_> {
    fn take(&mut self, mut reader: rustls::Reader<'_>) -> io::Result<usize> {
        let ready = reader.fill_buf()?;
        let n = ready.len().min(self.limit.saturating_sub(self.out.len()));
        self.out.extend_from_slice(&ready[..n]);
        reader.consume(n);
        Ok(n)
    }
}

/// Reads plaintext into `sink`, handing rustls what waits in `inbox` as it
/// makes room. A close without close_notify is an `UnexpectedEof` error.
pub(crate) fn read_plaintext<S: Sink + ?Sized>(
    tls: &mut ClientConnection,
    inbox: &mut Inbox,
    sink: &mut S,
) -> io::Result<Plain> {
    loop {
        match sink.take(tls.reader()) {
            Ok(n) => return Ok(Plain::Read(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if !inbox.feed(tls)? {
            if !inbox.is_empty() {
                // rustls takes nothing, yet has nothing to read: reading
                // more from the socket would only pile up.
                return Err(io::Error::other(
                    "TLS records are waiting that the connection will not take",
                ));
            }
            return Ok(Plain::NeedSocket);
        }
    }
}
