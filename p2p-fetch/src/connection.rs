//! One TCP connection to a peer, framed by p2p-core's client session: requests go out
//! pipelined, responses come back as events, or gathered into whole [`Answer`]s. Every wait
//! is bounded by the stall timeout. The end-to-end tests use this same connection.

use p2p_core::client::{ClientError, ClientEvent, ClientLimits, ClientSession};
use p2p_core::{BlockRange, Digest, PeerAddr, Request};
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

/// Most requests one connection keeps outstanding.
pub const MAX_PIPELINE: usize = 16;

/// Bytes read from the socket at a time.
const READ_BUFFER: usize = 256 * 1024;

/// Why a connection to a peer ended badly.
#[derive(Debug)]
pub enum PeerError {
    Connect(io::Error),
    /// Nothing arrived for the stall timeout while an answer was due.
    Stalled(Duration),
    /// The peer closed the connection; `mid_response` when answers were still due.
    Closed {
        mid_response: bool,
    },
    Io(io::Error),
    /// The peer broke the protocol (garbage, an oversized list, misordered ranges...).
    Protocol(ClientError),
    /// The peer sent an Error message and closed.
    SentError(String),
    /// The peer refused blocks it said it holds.
    BlockFailure {
        range: BlockRange,
        reason: String,
    },
    /// The peer's file is not the same size as the swarm's.
    SizeMismatch {
        expected: u32,
        got: u32,
    },
    /// A block whose SHA-256 is not its digest in the manifest.
    BadBlock(u16),
}

impl PeerError {
    /// Errors a peer may recover from (restart, overload); the others drop it at once.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Connect(_) | Self::Closed { .. } | Self::Io(_) | Self::SentError(_)
        )
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(error) => write!(f, "cannot connect: {error}"),
            Self::Stalled(timeout) => write!(f, "stalled: nothing received for {timeout:?}"),
            Self::Closed { mid_response: true } => {
                f.write_str("closed the connection mid-response")
            }
            Self::Closed {
                mid_response: false,
            } => f.write_str("closed the connection"),
            Self::Io(error) => write!(f, "connection failed: {error}"),
            Self::Protocol(error) => write!(f, "protocol violation: {error}"),
            Self::SentError(reason) => write!(f, "sent Error: {reason}"),
            Self::BlockFailure { range, reason } => {
                write!(f, "refused blocks {range} it said it holds: {reason}")
            }
            Self::SizeMismatch { expected, got } => write!(
                f,
                "says the file is {got} bytes, but the swarm's file is {expected} bytes"
            ),
            Self::BadBlock(block) => write!(
                f,
                "sent block {block}, which does not match its digest in the manifest"
            ),
        }
    }
}

impl From<ClientError> for PeerError {
    fn from(error: ClientError) -> Self {
        Self::Protocol(error)
    }
}

/// Takes each decoded event, with the request it completes, if any.
pub type EventHandler<'h> =
    dyn FnMut(Option<ClientEvent<'_>>, Option<Request>) -> Result<(), PeerError> + 'h;

/// A whole response, gathered from its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Peers(Vec<PeerAddr>),
    Ranges(Vec<BlockRange>),
    Data(Vec<u8>),
    Size(u32),
    /// A Digest Response: the digests as sent.
    Digests(Vec<Digest>),
    /// A Block Response Failure's reason.
    Failure(String),
    /// The peer sent Error, with this reason, and closes.
    Error(String),
}

/// Whole answers built from a session's events, in order.
#[derive(Default)]
struct Gathered {
    current: Option<Answer>,
    answers: Vec<Answer>,
}

impl Gathered {
    fn take(&mut self, event: Option<ClientEvent<'_>>, completed: Option<Request>) {
        match event {
            Some(ClientEvent::PeerCount(_)) => self.current = Some(Answer::Peers(Vec::new())),
            Some(ClientEvent::RangeCount(_)) => self.current = Some(Answer::Ranges(Vec::new())),
            Some(ClientEvent::Peer(peer)) => {
                if let Some(Answer::Peers(peers)) = self.current.as_mut() {
                    peers.push(peer);
                }
            }
            Some(ClientEvent::Range(range)) => {
                if let Some(Answer::Ranges(ranges)) = self.current.as_mut() {
                    ranges.push(range);
                }
            }
            Some(ClientEvent::BlockData { data, .. }) => match self.current.as_mut() {
                Some(Answer::Data(bytes)) => bytes.extend_from_slice(data),
                _ => self.current = Some(Answer::Data(data.to_vec())),
            },
            Some(ClientEvent::Digest { digest, .. }) => match self.current.as_mut() {
                Some(Answer::Digests(digests)) => digests.push(digest),
                _ => self.current = Some(Answer::Digests(vec![digest])),
            },
            Some(ClientEvent::FileSize(size)) => self.current = Some(Answer::Size(size)),
            Some(ClientEvent::BlockFailure(reason)) => {
                self.current = Some(Answer::Failure(printable(reason)));
            }
            // Connection::receive turns an Error into PeerError::SentError.
            Some(ClientEvent::Error(_)) | None => {}
        }
        if completed.is_some()
            && let Some(answer) = self.current.take()
        {
            self.answers.push(answer);
        }
    }
}

/// A connection to one peer, with up to `Q` requests outstanding.
pub struct Connection<const Q: usize = MAX_PIPELINE> {
    stream: TcpStream,
    session: ClientSession<Q>,
    buffer: Box<[u8]>,
    stall_timeout: Duration,
}

impl<const Q: usize> Connection<Q> {
    /// Connects within `timeout`, which also bounds every later wait for an answer.
    pub fn open(
        addr: SocketAddrV4,
        timeout: Duration,
        limits: ClientLimits,
    ) -> Result<Self, PeerError> {
        let stream = TcpStream::connect_timeout(&SocketAddr::V4(addr), timeout)
            .map_err(PeerError::Connect)?;
        stream.set_nodelay(true).map_err(PeerError::Io)?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(PeerError::Io)?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(PeerError::Io)?;
        Ok(Self {
            stream,
            session: ClientSession::new(limits),
            buffer: vec![0; READ_BUFFER].into_boxed_slice(),
            stall_timeout: timeout,
        })
    }

    /// A handle on the socket, to shut it down from another thread.
    pub fn try_clone_stream(&self) -> io::Result<TcpStream> {
        self.stream.try_clone()
    }

    /// The socket, to write bytes the session does not make (a test's malformed request).
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// How long any one wait for the peer may take.
    pub fn set_stall_timeout(&mut self, timeout: Duration) -> Result<(), PeerError> {
        self.stream
            .set_read_timeout(Some(timeout))
            .map_err(PeerError::Io)?;
        self.stall_timeout = timeout;
        Ok(())
    }

    /// The file size, which block data lengths are computed from.
    pub fn set_file_size(&mut self, size: u32) {
        self.session.set_file_size(size);
    }

    pub fn outstanding(&self) -> usize {
        self.session.outstanding()
    }

    /// Encodes `requests` and records them as sent, without writing them.
    pub fn encode(&mut self, requests: &[Request]) -> Result<Vec<u8>, PeerError> {
        let mut bytes = vec![0u8; Request::MAX_LEN * requests.len()];
        let mut len = 0;
        for request in requests {
            let rest = bytes.get_mut(len..).unwrap_or_default();
            len += self.session.send(*request, rest)?;
        }
        bytes.truncate(len);
        Ok(bytes)
    }

    /// Sends `requests` in one write, pipelined.
    pub fn send(&mut self, requests: &[Request]) -> Result<(), PeerError> {
        let bytes = self.encode(requests)?;
        self.stream
            .write_all(&bytes)
            .map_err(|error| self.io_error(error))
    }

    /// Sends `requests` pipelined and gathers their answers (see [`gather`](Self::gather)).
    pub fn ask(&mut self, requests: &[Request]) -> Result<Vec<Answer>, PeerError> {
        self.send(requests)?;
        self.gather(requests.len(), None)
    }

    /// Reads until `count` answers are whole, or until an Error arrives: that is the last
    /// answer then. Past `deadline`, if given, the peer counts as stalled even if it trickles
    /// bytes.
    pub fn gather(
        &mut self,
        count: usize,
        deadline: Option<Instant>,
    ) -> Result<Vec<Answer>, PeerError> {
        let started = Instant::now();
        let mut gathered = Gathered::default();
        while gathered.answers.len() < count {
            if let Some(deadline) = deadline
                && Instant::now() > deadline
            {
                return Err(PeerError::Stalled(started.elapsed()));
            }
            match self.receive(&mut |event, completed| {
                gathered.take(event, completed);
                Ok(())
            }) {
                Ok(()) => {}
                Err(PeerError::SentError(reason)) => {
                    gathered.answers.push(Answer::Error(reason));
                    break;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(gathered.answers)
    }

    /// Reads once (waiting at most the stall timeout) and hands every decoded event to
    /// `on_event`, with the request that the event completes, if any.
    pub fn receive(&mut self, on_event: &mut EventHandler<'_>) -> Result<(), PeerError> {
        let len = loop {
            match self.stream.read(&mut self.buffer) {
                Ok(0) => {
                    return Err(PeerError::Closed {
                        mid_response: self.session.outstanding() > 0,
                    });
                }
                Ok(len) => break len,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(self.io_error(error)),
            }
        };
        let mut input = self.buffer.get(..len).unwrap_or_default();
        while !input.is_empty() {
            let step = self.session.receive(input)?;
            if step.consumed == 0 && step.event.is_none() {
                break;
            }
            input = input.get(step.consumed..).unwrap_or_default();
            if let Some(ClientEvent::Error(reason)) = step.event {
                return Err(PeerError::SentError(printable(reason)));
            }
            if step.event.is_some() || step.completed.is_some() {
                on_event(step.event, step.completed)?;
            }
        }
        Ok(())
    }

    fn io_error(&self, error: io::Error) -> PeerError {
        match error.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => PeerError::Stalled(self.stall_timeout),
            _ => PeerError::Io(error),
        }
    }
}

/// A peer's reason text (already at most 255 bytes) made safe to print: control
/// characters, such as a terminal's escape sequences, are replaced.
pub fn printable(reason: &str) -> String {
    reason
        .chars()
        .map(|c| {
            if c.is_control() {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_cannot_drive_the_terminal() {
        assert_eq!(printable("busy \x1b[2J now"), "busy \u{fffd}[2J now");
        assert_eq!(printable("plain"), "plain");
    }
}
