//! Serving and fetching over any byte stream: the sessions behind the `embedded-io` traits.
//!
//! [`blocking`] (feature `embedded-io`) works on [`embedded_io::Read`] + [`embedded_io::Write`]
//! streams, [`asynch`] (feature `embedded-io-async`, which implies `embedded-io`) on their `async`
//! twins in `embedded_io_async`. So an embassy-net `TcpSocket`, a W5500's hardware socket, a UART, or a
//! `std::net::TcpStream` (through `embedded-io-adapters`) all carry the protocol, driven by
//! the very same [`ServerSession`] and [`ClientSession`] the smoltcp drivers run. Nothing here
//! allocates or depends on a network stack.
//!
//! On the server side, [`blocking::serve_connection`] and [`asynch::serve_connection`] serve
//! one accepted connection until it ends. On the client side, [`blocking::Client`] and
//! [`asynch::Client`] send requests and hand each piece of the answers to a closure
//! (block data straight from the receive buffer, never copied), and
//! [`blocking::fetch_connection`] and [`asynch::fetch_connection`] run one connection of a
//! [`Fetcher`](crate::fetch::Fetcher), which verifies every block against the manifest and
//! fills a [`FlashStore`](crate::flash_store::FlashStore).
//!
//! # Time
//!
//! Like everything in this crate the adapters never read a clock: the server takes the time
//! from a closure the caller passes (`|| Instant::from_millis(0)` if there is no clock). The
//! session's idle timeout ([`ServerConfig::idle_timeout`]) is checked each time the adapter
//! wakes: after every read and write, and after a read that fails with
//! [`ErrorKind::TimedOut`](embedded_io::ErrorKind::TimedOut) (or `Interrupted`), which the
//! adapter takes as a wakeup and retries. While it waits in a read it cannot notice the
//! deadline by itself, so a stream that may go quiet needs a read timeout of its own:
//!
//! - one that reports `TimedOut` (a short timeout, say a quarter of the idle timeout) lets
//!   the session enforce its idle timeout, which counts writes as progress too;
//! - one whose timeout is an error of another kind ends the connection at once as
//!   [`ServeError::Read`]. embassy-net's `TcpSocket::set_timeout` is of this kind (it resets
//!   the connection), and so is `std::net::TcpStream::set_read_timeout` through
//!   `embedded-io-adapters` on Unix (`WouldBlock`, which it maps to `Other`).
//!
//! # Flushing
//!
//! The server flushes the stream whenever it has written everything it has to say for now,
//! before it waits for more requests or returns: so a buffered writer's bytes reach the peer.
//! On embassy-net, `flush` waits until the peer has acknowledged the data, which costs a round
//! trip per batch of answers, not per write. The client flushes after every request it sends.
//!
//! # Buffers
//!
//! The caller owns the buffers, as [`IoBuffers`]: the server reads requests into `rx` (a
//! request is at most 5 bytes, so 64 bytes is plenty) and has the session write responses
//! into `tx` before writing that to the stream (its size is the largest single write; block
//! data is read from the store straight into it). The client reads responses into its receive
//! buffer; any size works, larger means fewer reads.

#[cfg(feature = "embedded-io-async")]
pub mod asynch;
pub mod blocking;

use crate::client::{ClientError, ClientEvent, ClientSession};
pub use crate::server::Ended;
use crate::server::{ServerConfig, ServerSession, SessionEvent};
use crate::time::Instant;
use crate::wire::Request;
use core::fmt;

/// Whether a read error only means "nothing yet": a read timeout or an interrupted call.
fn is_wakeup<E: embedded_io::Error>(error: &E) -> bool {
    matches!(
        error.kind(),
        embedded_io::ErrorKind::TimedOut | embedded_io::ErrorKind::Interrupted
    )
}

/// The caller's buffers for serving one connection.
pub struct IoBuffers<'b> {
    /// Where received requests are read to; at least 1 byte, 64 is plenty.
    pub rx: &'b mut [u8],
    /// Where responses are put together before they are written; at least 1 byte. Its size
    /// is the largest single write to the stream.
    pub tx: &'b mut [u8],
}

/// A stream error that ended a served connection (or a fetcher's connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ServeError<E> {
    /// Reading failed (including a read timeout of the stream's own).
    Read(E),
    /// Writing or flushing failed.
    Write(E),
    /// The stream accepted no bytes of a write: it can take no more.
    WriteZero,
    /// An empty buffer in [`IoBuffers`]: nothing could be read or written.
    NoBuffer,
}

impl<E: fmt::Debug> fmt::Display for ServeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read(error) => write!(f, "reading the connection failed: {error:?}"),
            Self::Write(error) => write!(f, "writing the connection failed: {error:?}"),
            Self::WriteZero => f.write_str("the connection accepted no bytes of a write"),
            Self::NoBuffer => f.write_str("an empty receive or transmit buffer"),
        }
    }
}

/// Why a client exchange failed. After any of these but [`RequestError::Session`] with
/// [`ClientError::TooManyOutstanding`], the connection cannot be used further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RequestError<E> {
    /// Reading failed (including a read timeout of the stream's own).
    Read(E),
    /// Writing or flushing failed.
    Write(E),
    /// The stream accepted no bytes of a write.
    WriteZero,
    /// The server closed the connection with requests still unanswered.
    Eof,
    /// The server sent an Error response (handed to the event closure as
    /// [`ClientEvent::Error`]) and closes the connection.
    ServerError,
    /// The server refused the request with a Block Response Failure (its reason went to the
    /// event closure as [`ClientEvent::BlockFailure`]); the connection goes on.
    Refused,
    /// The server broke the protocol, or the session refused the request.
    Session(ClientError),
    /// [`receive`](blocking::Client::receive) was called with no request outstanding.
    NothingOutstanding,
    /// The receive buffer is empty: nothing can be read.
    NoBuffer,
}

impl<E> From<ClientError> for RequestError<E> {
    fn from(error: ClientError) -> Self {
        Self::Session(error)
    }
}

impl<E: fmt::Debug> fmt::Display for RequestError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read(error) => write!(f, "reading the connection failed: {error:?}"),
            Self::Write(error) => write!(f, "writing the connection failed: {error:?}"),
            Self::WriteZero => f.write_str("the connection accepted no bytes of a write"),
            Self::Eof => f.write_str("the server closed the connection before answering"),
            Self::ServerError => f.write_str("the server sent an Error and closes the connection"),
            Self::Refused => f.write_str("the server refused the request"),
            Self::Session(error) => error.fmt(f),
            Self::NothingOutstanding => f.write_str("no request is waiting for an answer"),
            Self::NoBuffer => f.write_str("an empty receive buffer"),
        }
    }
}

/// What the serving loop does next: the only part that differs between the blocking and the
/// async adapter is how they carry these out.
pub(crate) enum ServeStep<'x> {
    /// Write all of these bytes, then call [`ServeLoop::written`].
    Write(&'x [u8]),
    /// Flush the stream, then call [`ServeLoop::flushed`].
    Flush,
    /// Read into this buffer, then call [`ServeLoop::read`] with the count (0: end of stream).
    Read(&'x mut [u8]),
    /// The connection is over.
    Done(Ended),
}

/// One connection's [`ServerSession`] and the unconsumed part of its receive buffer.
pub(crate) struct ServeLoop<'a, 'b> {
    session: ServerSession<'a>,
    rx: &'b mut [u8],
    tx: &'b mut [u8],
    /// Received bytes `start..end` of `rx` are not yet taken by the session.
    start: usize,
    end: usize,
    eof: bool,
    /// Bytes were written since the last flush.
    unflushed: bool,
}

impl<'a, 'b> ServeLoop<'a, 'b> {
    pub(crate) fn new(config: ServerConfig<'a>, buffers: IoBuffers<'b>, now: Instant) -> Self {
        Self {
            session: ServerSession::new(config, now),
            rx: buffers.rx,
            tx: buffers.tx,
            start: 0,
            end: 0,
            eof: false,
            unflushed: false,
        }
    }

    /// Whether both buffers can hold at least a byte.
    pub(crate) fn has_buffers(&self) -> bool {
        !self.rx.is_empty() && !self.tx.is_empty()
    }

    /// Feeds the session what it has received, and says what to do next.
    pub(crate) fn next(
        &mut self,
        now: Instant,
        on_event: &mut dyn FnMut(SessionEvent),
    ) -> ServeStep<'_> {
        // The session takes everything unless its pipeline is full, and then it has answers
        // to transmit: the rest is offered again after they are written.
        while self.start < self.end && self.session.wants_receive() {
            let input = self.rx.get(self.start..self.end).unwrap_or_default();
            let used = self.session.receive(input, now, on_event);
            if used == 0 {
                break;
            }
            self.start = self.start.saturating_add(used).min(self.end);
        }
        if self.session.wants_transmit() {
            let written = self.session.transmit(self.tx, now);
            if written > 0 {
                self.unflushed = true;
                return ServeStep::Write(self.tx.get(..written).unwrap_or_default());
            }
        }
        // Nothing more to write for now: what was written must reach the peer before waiting
        // for it, or before the connection ends.
        if self.unflushed {
            return ServeStep::Flush;
        }
        if let Some(reason) = self.session.poll_timeouts(now) {
            return ServeStep::Done(Ended::Session(reason));
        }
        if self.eof || self.start < self.end {
            // At the end of the stream with every answer out; or input the session will not
            // take though it has nothing to send, which cannot happen with a working session
            // and would otherwise spin.
            return ServeStep::Done(Ended::Peer);
        }
        self.start = 0;
        self.end = 0;
        ServeStep::Read(self.rx)
    }

    pub(crate) fn written(&mut self) {}

    pub(crate) fn flushed(&mut self) {
        self.unflushed = false;
    }

    pub(crate) fn read(&mut self, len: usize) {
        if len == 0 {
            self.eof = true;
        } else {
            self.start = 0;
            self.end = len.min(self.rx.len());
        }
    }
}

/// What decoding buffered bytes came to.
pub(crate) enum Decoded {
    /// The response to this request is complete.
    Completed(Request),
    /// Every buffered byte is decoded: read more.
    NeedInput,
    /// The server sent an Error.
    ServerError,
}

/// The client side's [`ClientSession`] and the undecoded part of its receive buffer.
pub(crate) struct ClientCore<'b, const Q: usize> {
    pub(crate) session: ClientSession<Q>,
    rx: &'b mut [u8],
    start: usize,
    end: usize,
}

impl<'b, const Q: usize> ClientCore<'b, Q> {
    pub(crate) fn new(session: ClientSession<Q>, rx: &'b mut [u8]) -> Self {
        Self {
            session,
            rx,
            start: 0,
            end: 0,
        }
    }

    /// Encodes `request` into `out` (at least [`Request::MAX_LEN`] bytes) and remembers it.
    pub(crate) fn encode(
        &mut self,
        request: Request,
        out: &mut [u8],
    ) -> Result<usize, ClientError> {
        self.session.send(request, out)
    }

    /// Decodes buffered bytes, handing every event to `on_event`, until a response completes,
    /// an Error arrives, or the buffer is used up. A File Size Response also tells the session
    /// the file size, so block data that follows can be decoded.
    pub(crate) fn decode(
        &mut self,
        on_event: &mut dyn FnMut(ClientEvent<'_>),
    ) -> Result<Decoded, ClientError> {
        while self.start < self.end {
            let input = self.rx.get(self.start..self.end).unwrap_or_default();
            let step = self.session.receive(input)?;
            let consumed = step.consumed;
            self.start = self.start.saturating_add(consumed).min(self.end);
            let completed = step.completed;
            let mut size = None;
            let mut server_error = false;
            if let Some(event) = step.event {
                match event {
                    ClientEvent::FileSize(bytes) => size = Some(bytes),
                    ClientEvent::Error(_) => server_error = true,
                    _ => {}
                }
                on_event(event);
            }
            if let Some(bytes) = size {
                self.session.set_file_size(bytes);
            }
            if server_error {
                return Ok(Decoded::ServerError);
            }
            if let Some(request) = completed {
                return Ok(Decoded::Completed(request));
            }
            if consumed == 0 {
                break;
            }
        }
        Ok(Decoded::NeedInput)
    }

    /// The buffer to read into: everything was decoded.
    pub(crate) fn read_buffer(&mut self) -> &mut [u8] {
        self.start = 0;
        self.end = 0;
        self.rx
    }

    pub(crate) fn read(&mut self, len: usize) {
        self.start = 0;
        self.end = len.min(self.rx.len());
    }
}
