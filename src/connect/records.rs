//! The bytes between the socket and rustls, both ways, as the dial and both
//! pumps' connections move them. What is read from the socket waits in an
//! [`Inbox`] until rustls will take it: rustls holds at most 16 KiB of
//! decrypted bytes the reader has not taken and refuses more TLS until it
//! has, so a read from the socket can bring more records than rustls takes
//! at once. What rustls encrypts leaves as one buffer ([`outgoing`]).

use std::io::{self, Read};

use rustls::ClientConnection;

/// How much a pump reads from the socket at once: a whole TLS record.
pub(crate) const READ_CHUNK: usize = 18 * 1024;

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
    bytes: Vec<u8>,
    taken: usize,
    /// The socket is at its end ...
    eof: bool,
    /// ... and rustls has been told.
    eof_told: bool,
}

impl Inbox {
    /// Whether every byte read has been taken by rustls.
    pub(crate) fn is_empty(&self) -> bool {
        self.taken == self.bytes.len()
    }

    /// Reads once from the socket with `read` into the room after what
    /// waits; 0 bytes is the end of the stream. Returns what `read` did.
    pub(crate) fn read_from(
        &mut self,
        read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if self.taken > 0 {
            self.bytes.drain(..self.taken);
            self.taken = 0;
        }
        let len = self.bytes.len();
        self.bytes.resize(len + READ_CHUNK, 0);
        let result = read(&mut self.bytes[len..]);
        let n = *result.as_ref().unwrap_or(&0);
        self.bytes.truncate(len + n.min(READ_CHUNK));
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
        self.bytes.extend_from_slice(bytes);
    }

    /// Hands rustls what it will take now, processing each part; at the end
    /// of the stream, tells it so. Whether it took anything.
    pub(crate) fn feed(&mut self, tls: &mut ClientConnection) -> Result<bool, FeedError> {
        let mut progress = false;
        while !self.is_empty() && tls.wants_read() {
            let mut rest = &self.bytes[self.taken..];
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

/// Reads plaintext into `buf`, handing rustls what waits in `inbox` as it
/// makes room. A close without close_notify is an `UnexpectedEof` error.
pub(crate) fn read_plaintext(
    tls: &mut ClientConnection,
    inbox: &mut Inbox,
    buf: &mut [u8],
) -> io::Result<Plain> {
    loop {
        match tls.reader().read(buf) {
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
