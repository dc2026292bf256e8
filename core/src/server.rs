//! The server session: one per connection, sans-IO.
//!
//! The caller hands it received bytes ([`ServerSession::receive`]) and transmit space
//! ([`ServerSession::transmit`]), with the current time, and asks it when to close
//! ([`ServerSession::poll_timeouts`]) and when it next needs attention
//! ([`ServerSession::poll_at`]). Requests are answered in order; block data is read from the
//! [`BlockStore`] straight into the transmit space, in pieces as large as that space, so a
//! 4 GiB response needs no more memory than a 1 KiB one.

use crate::geometry::Geometry;
use crate::manifest::Digest;
use crate::ranges::BlockRange;
use crate::store::{BlockStore, held};
use crate::time::{Duration, Instant};
use crate::wire::{
    MAX_LIST_COUNT, MAX_REASON_LEN, Parsed, PeerAddr, Reason, Request, ResponseHeader, WireError,
    emit_range_entry, field,
};
use core::fmt::{self, Write as _};

/// How many received requests may wait for their answer; further input is left unread (and
/// so held back by TCP flow control) until answers go out.
pub const PIPELINE_DEPTH: usize = 8;

/// The idle time after which a server closes a connection that makes no progress.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A response's type byte, reason text and NUL: the most a session stages at once.
const STAGE_LEN: usize = 1 + MAX_REASON_LEN + 1;

/// The Error's reason for any request but Peer List while the store has no file yet.
pub const NO_FILE_YET_REASON: &str =
    "no file here yet: still fetching its manifest; ask again later";

/// The Error's reason for a Block List Request when the held blocks make more ranges than
/// the 32767 a Block List Response carries.
pub const LIST_TOO_LONG_REASON: &str =
    "the held blocks make more than 32767 ranges: no Block List can carry them";

/// Why a connection over a server's limit is closed, in the Error it gets first.
pub const BUSY_REASON: &str = "server busy: too many connections; try again later";

/// The Error message a connection over a server's limit gets before it is closed, the same
/// from every server (smoltcp pools and the std one).
pub fn busy_error() -> heapless::Vec<u8, { BUSY_REASON.len() + 2 }> {
    let mut message = [0u8; BUSY_REASON.len() + 2];
    let mut encoded = heapless::Vec::new();
    if let Ok(reason) = Reason::new(BUSY_REASON)
        && let Ok(len) = ResponseHeader::Error(reason).emit(&mut message)
        && let Some(bytes) = message.get(..len)
    {
        // Fits by construction: the type byte, the reason and its NUL.
        let _ = encoded.extend_from_slice(bytes);
    }
    encoded
}

/// What every session of a server shares.
#[derive(Clone, Copy)]
pub struct ServerConfig<'a> {
    /// The file served: its size, held blocks, bytes and digests.
    pub store: &'a dyn BlockStore,
    /// The peers listed in a Peer List Response (the first 32767 of them).
    pub peers: &'a [PeerAddr],
    /// A connection on which nothing progresses for this long is closed.
    pub idle_timeout: Duration,
}

impl<'a> ServerConfig<'a> {
    /// Serves `store` and lists `peers`, with the default idle timeout of 30 s.
    pub fn new(store: &'a dyn BlockStore, peers: &'a [PeerAddr]) -> Self {
        Self {
            store,
            peers,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// Why a Block Request was answered with a Block Response Failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Refusal {
    /// `start > end`.
    Reversed,
    /// `end` is not a block of the file; `block_count` blocks exist.
    BeyondFile {
        /// Blocks in the file.
        block_count: u32,
    },
    /// Some block of the range is not held here.
    NotHeld,
    /// A Digest Request to a store without a verified manifest.
    NoManifest,
}

/// What a session saw, for the caller's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SessionEvent {
    /// A request that will be answered with success.
    Accepted(Request),
    /// A Block or Digest Request that will be answered with a Block Response Failure.
    Refused {
        /// The request as received.
        request: Request,
        /// Why it is refused.
        refusal: Refusal,
    },
    /// Input that is not a request: an Error will be sent and the connection closed.
    ProtocolError(WireError),
    /// A request other than Peer List to a store with no file yet (a node still fetching its
    /// manifest): an Error will be sent and the connection closed.
    NoFileYet(Request),
    /// A Block List Request whose answer would need more than 32767 ranges: an Error will be
    /// sent and the connection closed.
    ListTooLong,
}

/// Why a session wants its connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CloseReason {
    /// The peer sent something that is not a request; the Error has been sent.
    ProtocolError,
    /// Nothing progressed for the idle timeout.
    IdleTimeout,
    /// The store failed in the middle of a response.
    StoreFailed,
    /// The store has no file yet; the Error saying so has been sent.
    NoFileYet,
    /// The held blocks make more than 32767 ranges; the Error saying so has been sent (a
    /// Block List is never cut short).
    ListTooLong,
    /// A rule the session relies on broke (a request longer than any request, an answer
    /// that did not fit its buffer): a bug, reported instead of sending a stream out of step.
    Broken,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ProtocolError => "protocol error",
            Self::IdleTimeout => "idle timeout",
            Self::StoreFailed => "reading the served file failed",
            Self::NoFileYet => "no file yet",
            Self::ListTooLong => "block list too long",
            Self::Broken => "internal error in the session",
        })
    }
}

/// Why a served connection ended, whatever carried it (smoltcp socket or byte stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Ended {
    /// The session ended it: after an Error was sent, on a store failure, or on the idle
    /// timeout.
    Session(CloseReason),
    /// The peer finished sending (or closed or reset the connection) and every answer it
    /// could still take was sent.
    Peer,
    /// The server closed it, the one it had served longest, for a client it kept turning
    /// away ([`crate::driver::Server::set_turns`]).
    Turn,
}

/// An answer waiting its turn.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Success(Request),
    Failure {
        start: u16,
        end: u16,
        refusal: Refusal,
    },
    Error(WireError),
    /// An Error saying the store has no file yet; the connection closes after it.
    NoFileYet,
    /// An Error saying the held blocks make more ranges than a Block List carries; the
    /// connection closes after it.
    ListTooLong,
}

/// What remains of the answer being sent, after its staged bytes.
#[derive(Debug, Clone, Copy)]
enum Body {
    Done,
    Peers {
        next: u16,
        count: u16,
    },
    /// Held ranges after block `after` (from the first with `None`), `remaining` of them.
    Ranges {
        after: Option<u16>,
        remaining: u16,
    },
    Data {
        offset: u32,
        remaining: u32,
    },
    /// Digests of blocks from `next`, `remaining` of them.
    Digests {
        next: u16,
        remaining: u32,
    },
}

/// One connection's server side.
pub struct ServerSession<'a> {
    config: ServerConfig<'a>,
    /// The front of a request that has not fully arrived.
    partial: heapless::Vec<u8, { Request::MAX_LEN }>,
    pending: heapless::Deque<Answer, PIPELINE_DEPTH>,
    /// Bytes of the current answer ready to go out, sent from `staged_sent` on.
    staged: heapless::Vec<u8, STAGE_LEN>,
    staged_sent: usize,
    body: Body,
    /// Set once an Error is queued: input is discarded and the connection closes, for this
    /// reason, once it is sent.
    closing: Option<CloseReason>,
    failed: Option<CloseReason>,
    last_progress: Instant,
}

impl<'a> ServerSession<'a> {
    /// A session for a connection accepted at `now`, which starts its idle time.
    pub fn new(config: ServerConfig<'a>, now: Instant) -> Self {
        Self {
            config,
            partial: heapless::Vec::new(),
            pending: heapless::Deque::new(),
            staged: heapless::Vec::new(),
            staged_sent: 0,
            body: Body::Done,
            closing: None,
            failed: None,
            last_progress: now,
        }
    }

    /// Takes received bytes; returns how many it consumed. It stops early only when
    /// [`PIPELINE_DEPTH`] answers are waiting: offer the rest again after transmitting.
    pub fn receive(
        &mut self,
        input: &[u8],
        now: Instant,
        on_event: &mut dyn FnMut(SessionEvent),
    ) -> usize {
        if self.closing.is_some() || self.failed.is_some() {
            return input.len();
        }
        let mut consumed = 0;
        for &byte in input {
            if self.pending.is_full() {
                break;
            }
            consumed += 1;
            if self.partial.push(byte).is_err() {
                // Every request is complete at MAX_LEN bytes, so this is a parser bug.
                self.failed = Some(CloseReason::Broken);
                return input.len();
            }
            match Request::parse(&self.partial) {
                Ok(Parsed::Incomplete) => continue,
                Ok(Parsed::Complete { value, .. }) => {
                    self.partial.clear();
                    self.last_progress = now;
                    let answer = self.judge(value);
                    on_event(match answer {
                        Answer::Failure { refusal, .. } => SessionEvent::Refused {
                            request: value,
                            refusal,
                        },
                        Answer::NoFileYet => SessionEvent::NoFileYet(value),
                        Answer::ListTooLong => SessionEvent::ListTooLong,
                        _ => SessionEvent::Accepted(value),
                    });
                    self.queue(answer);
                    let closing = match answer {
                        Answer::NoFileYet => Some(CloseReason::NoFileYet),
                        Answer::ListTooLong => Some(CloseReason::ListTooLong),
                        _ => None,
                    };
                    if closing.is_some() {
                        self.closing = closing;
                        return input.len();
                    }
                }
                Err(error) => {
                    self.partial.clear();
                    on_event(SessionEvent::ProtocolError(error));
                    self.queue(Answer::Error(error));
                    self.closing = Some(CloseReason::ProtocolError);
                    return input.len();
                }
            }
        }
        consumed
    }

    /// Writes as much of the pending answers as fits into `out`; returns the bytes written.
    pub fn transmit(&mut self, out: &mut [u8], now: Instant) -> usize {
        let mut written = 0;
        while self.failed.is_none() {
            let space = out.get_mut(written..).unwrap_or_default();
            if space.is_empty() {
                break;
            }
            if let Some(unsent) = self
                .staged
                .get(self.staged_sent..)
                .filter(|s| !s.is_empty())
            {
                let len = unsent.len().min(space.len());
                if let (Some(dst), Some(src)) = (space.get_mut(..len), unsent.get(..len)) {
                    dst.copy_from_slice(src);
                }
                self.staged_sent += len;
                written += len;
                continue;
            }
            match self.body {
                Body::Peers { next, count } if next < count => {
                    self.body = Body::Peers {
                        next: next + 1,
                        count,
                    };
                    if let Some(peer) = self.config.peers.get(usize::from(next)) {
                        self.stage_with(|buf| peer.emit(buf));
                    }
                }
                Body::Ranges { after, remaining } if remaining > 0 => {
                    // The count went out with the header: a range that has gone would put the
                    // stream out of step, so it ends the connection instead.
                    let Some(range) = self.config.store.held_after(after) else {
                        self.failed = Some(CloseReason::StoreFailed);
                        break;
                    };
                    self.body = Body::Ranges {
                        after: Some(range.end()),
                        remaining: remaining - 1,
                    };
                    self.stage_with(|buf| emit_range_entry(range, buf));
                }
                Body::Digests { next, remaining } if remaining > 0 => {
                    let Some(digest) = self.config.store.digest(next) else {
                        // Not received yet: the rest follows as it arrives.
                        if !self.config.store.receiving_manifest() {
                            self.failed = Some(CloseReason::StoreFailed);
                        }
                        break;
                    };
                    self.body = Body::Digests {
                        next: next.saturating_add(1),
                        remaining: remaining - 1,
                    };
                    self.stage_with(|buf| put_digest(&digest, buf));
                }
                Body::Data { offset, remaining } if remaining > 0 => {
                    let len = space.len().min(remaining as usize);
                    let Some(chunk) = space.get_mut(..len) else {
                        break;
                    };
                    if self.config.store.read_at(offset, chunk).is_err() {
                        self.failed = Some(CloseReason::StoreFailed);
                        break;
                    }
                    // len <= remaining, a u32.
                    let len32 = len as u32;
                    self.body = Body::Data {
                        offset: offset + len32,
                        remaining: remaining - len32,
                    };
                    written += len;
                }
                _ => match self.pending.pop_front() {
                    Some(answer) => self.start(answer),
                    None => break,
                },
            }
        }
        if written > 0 {
            self.last_progress = now;
        }
        written
    }

    /// Whether [`transmit`](Self::transmit) has bytes to write.
    pub fn wants_transmit(&self) -> bool {
        self.failed.is_none()
            && (self.staged_sent < self.staged.len()
                || !self.pending.is_empty()
                || match self.body {
                    Body::Done => false,
                    Body::Peers { next, count } => next < count,
                    Body::Ranges { remaining, .. } => remaining > 0,
                    Body::Data { remaining, .. } | Body::Digests { remaining, .. } => remaining > 0,
                })
    }

    /// Whether a Block List Response is part-way out: its count is sent, so the store's held
    /// ranges must not change until it is done.
    pub fn listing(&self) -> bool {
        matches!(self.body, Body::Ranges { remaining, .. } if remaining > 0)
    }

    /// Whether the session has room for more requests.
    pub fn wants_receive(&self) -> bool {
        self.closing.is_none() && self.failed.is_none() && !self.pending.is_full()
    }

    /// Where the session's timeouts fire, at the time the caller passes in (it reads no clock):
    /// `Some` once the connection should be closed: after an Error has gone out, after a store
    /// failure, or once nothing has progressed for the idle timeout. Send what was written
    /// before closing.
    pub fn poll_timeouts(&mut self, now: Instant) -> Option<CloseReason> {
        if self.failed.is_none() {
            if let Some(reason) = self.closing
                && !self.wants_transmit()
            {
                self.failed = Some(reason);
            } else if now >= self.idle_deadline() {
                self.failed = Some(CloseReason::IdleTimeout);
            }
        }
        self.failed
    }

    /// When the session must be asked again even if no bytes move: its idle deadline.
    pub fn poll_at(&self) -> Option<Instant> {
        match self.failed {
            Some(_) => None,
            None => Some(self.idle_deadline()),
        }
    }

    /// The file's geometry as the store has it now: a filling store learns its file while
    /// connections are open.
    fn geometry(&self) -> Geometry {
        Geometry::new(self.config.store.file_size())
    }

    fn idle_deadline(&self) -> Instant {
        self.last_progress + self.config.idle_timeout
    }

    fn queue(&mut self, answer: Answer) {
        // Callers check for room first; a full queue would mean a lost answer.
        if self.pending.push_back(answer).is_err() {
            self.failed = Some(CloseReason::Broken);
        }
    }

    fn judge(&self, request: Request) -> Answer {
        let store = self.config.store;
        if !store.has_file() && !store.receiving_manifest() && request != Request::PeerList {
            return Answer::NoFileYet;
        }
        if request == Request::BlockList
            && held(self.config.store).count() > usize::from(MAX_LIST_COUNT)
        {
            return Answer::ListTooLong;
        }
        let (start, end, digests) = match request {
            Request::Block { start, end } => (start, end, false),
            Request::Digest { start, end } => (start, end, true),
            _ => return Answer::Success(request),
        };
        let refusal = match BlockRange::new(start, end) {
            None => Refusal::Reversed,
            Some(range) if !self.geometry().contains(range) => Refusal::BeyondFile {
                block_count: self.geometry().block_count(),
            },
            // Digests still being received are sent as they arrive.
            Some(_) if digests && !store.receiving_manifest() && store.digest(start).is_none() => {
                Refusal::NoManifest
            }
            Some(range) if !digests && !store.holds(range) => Refusal::NotHeld,
            Some(_) => return Answer::Success(request),
        };
        Answer::Failure {
            start,
            end,
            refusal,
        }
    }

    fn start(&mut self, answer: Answer) {
        self.body = Body::Done;
        match answer {
            Answer::Success(Request::PeerList) => {
                let count = list_count(self.config.peers.len());
                self.stage_with(|buf| ResponseHeader::PeerList { count }.emit(buf));
                self.body = Body::Peers { next: 0, count };
            }
            Answer::Success(Request::BlockList) => {
                let count = list_count(held(self.config.store).count());
                self.stage_with(|buf| ResponseHeader::BlockList { count }.emit(buf));
                self.body = Body::Ranges {
                    after: None,
                    remaining: count,
                };
            }
            Answer::Success(Request::Digest { start, end }) => {
                self.stage_with(|buf| ResponseHeader::DigestSuccess.emit(buf));
                self.body = Body::Digests {
                    next: start,
                    // judge() accepted only start <= end.
                    remaining: u32::from(end.saturating_sub(start)) + 1,
                };
            }
            Answer::Success(Request::FileSize) => {
                let size = self.geometry().file_size();
                self.stage_with(|buf| ResponseHeader::FileSize(size).emit(buf));
            }
            Answer::Success(Request::Block { start, end }) => {
                let span = BlockRange::new(start, end).and_then(|r| self.geometry().span(r));
                match span {
                    Some(span) => {
                        self.stage_with(|buf| ResponseHeader::BlockSuccess.emit(buf));
                        self.body = Body::Data {
                            offset: span.offset,
                            remaining: span.len,
                        };
                    }
                    // judge() accepted only ranges inside the file.
                    None => self.failed = Some(CloseReason::StoreFailed),
                }
            }
            Answer::Failure {
                start,
                end,
                refusal,
            } => {
                let mut text = heapless::String::<96>::new();
                match write_refusal(&mut text, start, end, refusal) {
                    Ok(()) => self.stage_reason(&text, false),
                    Err(_) => self.failed = Some(CloseReason::Broken),
                }
            }
            Answer::Error(error) => {
                let mut text = heapless::String::<96>::new();
                match write!(text, "{error}; closing the connection") {
                    Ok(()) => self.stage_reason(&text, true),
                    Err(_) => self.failed = Some(CloseReason::Broken),
                }
            }
            Answer::NoFileYet => self.stage_reason(NO_FILE_YET_REASON, true),
            Answer::ListTooLong => self.stage_reason(LIST_TOO_LONG_REASON, true),
        }
    }

    /// Stages a Block Response Failure, or with `error` an Error, carrying `text`.
    fn stage_reason(&mut self, text: &str, error: bool) {
        let Ok(reason) = Reason::new(text) else {
            // Every text here is short, non-empty and free of NULs.
            self.failed = Some(CloseReason::Broken);
            return;
        };
        let header = if error {
            ResponseHeader::Error(reason)
        } else {
            ResponseHeader::BlockFailure(reason)
        };
        self.stage_with(|buf| header.emit(buf));
    }

    /// Replaces the staged bytes with what `emit` writes. Every staged item fits
    /// `STAGE_LEN`; one that did not would leave the stream out of step, so it ends the session.
    fn stage_with(&mut self, emit: impl FnOnce(&mut [u8]) -> Result<usize, WireError>) {
        let mut buf = [0u8; STAGE_LEN];
        self.staged.clear();
        self.staged_sent = 0;
        let staged = emit(&mut buf)
            .ok()
            .and_then(|len| buf.get(..len))
            .map(|bytes| self.staged.extend_from_slice(bytes));
        if !matches!(staged, Some(Ok(()))) {
            self.failed = Some(CloseReason::Broken);
        }
    }
}

fn put_digest(digest: &Digest, out: &mut [u8]) -> Result<usize, WireError> {
    out.get_mut(field::DIGEST)
        .ok_or(WireError::BufferTooSmall)?
        .copy_from_slice(digest.as_bytes());
    Ok(field::DIGEST.len())
}

fn list_count(len: usize) -> u16 {
    u16::try_from(len).unwrap_or(u16::MAX).min(MAX_LIST_COUNT)
}

fn write_refusal(out: &mut impl fmt::Write, start: u16, end: u16, refusal: Refusal) -> fmt::Result {
    match refusal {
        Refusal::Reversed => write!(out, "start block {start} is after end block {end}"),
        Refusal::BeyondFile { block_count: 0 } => out.write_str("the file is empty: no blocks"),
        Refusal::BeyondFile { block_count } => write!(
            out,
            "block {end} is beyond the last block {}",
            block_count - 1
        ),
        Refusal::NotHeld => write!(out, "blocks {start}-{end} are not all held here"),
        Refusal::NoManifest => out.write_str("no manifest here: digests are not served"),
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Reversed => "start after end",
            Self::BeyondFile { .. } => "beyond the file",
            Self::NotHeld => "not held",
            Self::NoManifest => "no manifest",
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::ranges::BlockRanges;
    use crate::store::SliceStore;
    use std::vec::Vec;

    const PEERS: [PeerAddr; 2] = [
        PeerAddr::new([10, 0, 0, 3], 8888),
        PeerAddr::new([10, 0, 0, 4], 9000),
    ];

    fn file() -> Vec<u8> {
        (0..2500u32).map(|i| (i % 251) as u8).collect()
    }

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// Feeds `input` and collects everything the session sends through `chunk`-byte windows.
    fn exchange(session: &mut ServerSession<'_>, input: &[u8], chunk: usize) -> Vec<u8> {
        let mut output = Vec::new();
        let mut offered = 0;
        loop {
            offered += session.receive(&input[offered..], t(0), &mut |_| {});
            let mut out = std::vec![0u8; chunk];
            let len = session.transmit(&mut out, t(0));
            output.extend_from_slice(&out[..len]);
            if len == 0 && offered == input.len() {
                return output;
            }
        }
    }

    fn answer(store: &dyn BlockStore, input: &[u8]) -> Vec<u8> {
        let mut session = ServerSession::new(ServerConfig::new(store, &PEERS), t(0));
        exchange(&mut session, input, 4096)
    }

    #[test]
    fn a_block_list_too_long_to_carry_is_an_error_not_cut_short() {
        /// Every other block of 65536: 32768 ranges, one more than a Block List carries.
        struct Alternate;
        impl BlockStore for Alternate {
            fn file_size(&self) -> u32 {
                64 << 20
            }
            fn held_after(&self, after: Option<u16>) -> Option<BlockRange> {
                let next = after.map_or(Some(0), |block| (block / 2 * 2).checked_add(2))?;
                Some(BlockRange::single(next))
            }
            fn read_at(&self, _: u32, _: &mut [u8]) -> Result<(), crate::StoreError> {
                Err(crate::StoreError)
            }
        }
        let mut session = ServerSession::new(ServerConfig::new(&Alternate, &[]), t(0));
        let mut events = std::vec::Vec::new();
        session.receive(&[0x02], t(0), &mut |event| events.push(event));
        assert_eq!(events, [SessionEvent::ListTooLong]);
        let mut out = [0u8; 256];
        let len = session.transmit(&mut out, t(0));
        assert_eq!(out[0], 0x7f);
        assert_eq!(&out[1..len - 1], LIST_TOO_LONG_REASON.as_bytes());
        assert_eq!(session.poll_timeouts(t(0)), Some(CloseReason::ListTooLong));
    }

    #[test]
    fn the_busy_error_is_an_error_message_with_its_reason() {
        let message = busy_error();
        assert_eq!(
            crate::wire::MessageType::from_byte(message[0]),
            Some(crate::wire::MessageType::Error)
        );
        assert_eq!(&message[1..message.len() - 1], BUSY_REASON.as_bytes());
        assert_eq!(message.last(), Some(&0));
    }

    #[test]
    fn answers_every_request_as_in_protocol_md() {
        let data = file();
        let held: BlockRanges<4> = "0-1".parse().unwrap();
        let store = SliceStore::with_held(&data, held).unwrap();
        assert_eq!(
            answer(&store, &[0x00]),
            [
                0x01, 0x00, 0x02, 0x0a, 0x00, 0x00, 0x03, 0x22, 0xb8, 0x0a, 0x00, 0x00, 0x04, 0x23,
                0x28
            ]
        );
        assert_eq!(
            answer(&store, &[0x02]),
            [0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01]
        );
        assert_eq!(answer(&store, &[0x07]), [0x08, 0x00, 0x00, 0x09, 0xc4]);
        let mut expected = std::vec![0x05];
        expected.extend_from_slice(&data[1024..2048]);
        assert_eq!(answer(&store, &[0x04, 0x00, 0x01, 0x00, 0x01]), expected);
        assert_eq!(
            answer(&store, &[0x04, 0x00, 0x01, 0x00, 0x02]),
            b"\x06blocks 1-2 are not all held here\0"
        );
    }

    #[test]
    fn digests_are_served_as_in_protocol_md() {
        use crate::manifest::Digest;
        let data = file();
        let digests: Vec<Digest> = data.chunks(1024).map(Digest::of).collect();
        let store = SliceStore::<1>::new(&data)
            .unwrap()
            .with_digests(&digests)
            .unwrap();
        let mut expected = std::vec![0x0a];
        expected.extend_from_slice(&digests[1].0);
        expected.extend_from_slice(&digests[2].0);
        assert_eq!(answer(&store, &[0x09, 0x00, 0x01, 0x00, 0x02]), expected);
        assert_eq!(&expected[1..5], &[0x50, 0xdf, 0x58, 0xae]);
        assert_eq!(
            answer(&store, &[0x09, 0x00, 0x01, 0x00, 0x03]),
            b"\x06block 3 is beyond the last block 2\0"
        );
        let plain = SliceStore::<1>::new(&data).unwrap();
        assert_eq!(
            answer(&plain, &[0x09, 0x00, 0x00, 0x00, 0x00]),
            b"\x06no manifest here: digests are not served\0"
        );
    }

    #[test]
    fn a_node_receiving_its_manifest_passes_the_digests_on_as_they_arrive() {
        use crate::flash_store::FlashStore;
        use crate::manifest::{Digest, manifest_digest};
        use crate::ram_flash::RamFlash;
        let data = file();
        let digests: Vec<Digest> = data.chunks(1024).map(Digest::of).collect();
        let mut bytes = std::vec![0u8; 64 * 1024];
        let id = manifest_digest(2500, &digests);
        let store = FlashStore::<_, 4>::open(RamFlash::new(&mut bytes), id).unwrap();
        // Before it knows the file's size: Peer Lists only.
        let no_file = [b"\x7f", NO_FILE_YET_REASON.as_bytes(), b"\0"].concat();
        assert_eq!(answer(&store, &[0x07]), no_file);
        store.begin_manifest(2500).unwrap();
        store.put_manifest_digest(2500, 0, &digests[0]).unwrap();
        // The size it is fetching, nothing held, blocks refused.
        assert_eq!(
            answer(&store, &[0x07, 0x02]),
            [0x08, 0x00, 0x00, 0x09, 0xc4, 0x03, 0x00, 0x00]
        );
        assert_eq!(
            answer(&store, &[0x04, 0x00, 0x00, 0x00, 0x00]),
            b"\x06blocks 0-0 are not all held here\0"
        );
        // Digests: those stored go out at once, the rest as they arrive.
        let mut session = ServerSession::new(ServerConfig::new(&store, &PEERS), t(0));
        let mut sent = exchange(&mut session, &[0x09, 0x00, 0x00, 0x00, 0x02], 4096);
        assert_eq!(sent, [&[0x0a][..], &digests[0].0].concat());
        assert!(session.wants_transmit(), "the rest is still owed");
        store.put_manifest_digest(2500, 1, &digests[1]).unwrap();
        sent.extend(exchange(&mut session, &[], 4096));
        store.put_manifest_digest(2500, 2, &digests[2]).unwrap();
        sent.extend(exchange(&mut session, &[0x07], 4096));
        let mut expected = std::vec![0x0a];
        digests
            .iter()
            .for_each(|d| expected.extend_from_slice(&d.0));
        expected.extend_from_slice(&[0x08, 0x00, 0x00, 0x09, 0xc4]);
        assert_eq!(sent, expected);
        assert!(!session.wants_transmit());
    }

    #[test]
    fn listing_lasts_until_the_last_range_is_staged() {
        let data = file();
        let held: BlockRanges<4> = "0,2".parse().unwrap();
        let store = SliceStore::with_held(&data, held).unwrap();
        let mut session = ServerSession::new(ServerConfig::new(&store, &[]), t(0));
        session.receive(&[0x02], t(0), &mut |_| {});
        assert!(!session.listing(), "nothing is sent yet");
        let mut out = [0u8; 4];
        assert_eq!(session.transmit(&mut out, t(0)), 4);
        assert!(session.listing());
        let mut out = [0u8; 16];
        assert_eq!(session.transmit(&mut out, t(0)), 7);
        assert!(!session.listing());
    }

    #[test]
    fn last_block_is_sent_at_its_true_length() {
        let data = file();
        let store = SliceStore::<1>::new(&data).unwrap();
        let mut expected = std::vec![0x05];
        expected.extend_from_slice(&data);
        assert_eq!(answer(&store, &[0x04, 0x00, 0x00, 0x00, 0x02]), expected);
        assert_eq!(
            answer(&store, &[0x04, 0x00, 0x02, 0x00, 0x02]).len(),
            1 + 452
        );
    }

    #[test]
    fn refusals_name_the_problem_and_keep_the_connection() {
        let data = file();
        let store = SliceStore::<1>::new(&data).unwrap();
        let mut session = ServerSession::new(ServerConfig::new(&store, &[]), t(0));
        let out = exchange(&mut session, &[0x04, 0x00, 0x02, 0x00, 0x01], 64);
        assert_eq!(out, b"\x06start block 2 is after end block 1\0");
        let out = exchange(&mut session, &[0x04, 0x00, 0x00, 0x00, 0x03], 64);
        assert_eq!(out, b"\x06block 3 is beyond the last block 2\0");
        assert_eq!(session.poll_timeouts(t(1)), None);
        assert_eq!(
            exchange(&mut session, &[0x07], 64),
            [0x08, 0x00, 0x00, 0x09, 0xc4]
        );
        let empty = SliceStore::<1>::new(&[]).unwrap();
        assert_eq!(
            answer(&empty, &[0x04, 0x00, 0x00, 0x00, 0x00]),
            b"\x06the file is empty: no blocks\0"
        );
        assert_eq!(answer(&empty, &[0x02]), [0x03, 0x00, 0x00]);
    }

    #[test]
    fn unknown_type_gets_an_error_after_earlier_answers_then_close() {
        let data = file();
        let store = SliceStore::<1>::new(&data).unwrap();
        let mut session = ServerSession::new(ServerConfig::new(&store, &[]), t(0));
        let mut events = Vec::new();
        let input = [0x07, 0x42, 0x07];
        assert_eq!(session.receive(&input, t(0), &mut |e| events.push(e)), 3);
        assert_eq!(
            events,
            [
                SessionEvent::Accepted(Request::FileSize),
                SessionEvent::ProtocolError(WireError::UnknownType(0x42))
            ]
        );
        assert_eq!(
            session.poll_timeouts(t(0)),
            None,
            "the error is not sent yet"
        );
        let mut out = [0u8; 256];
        let len = session.transmit(&mut out, t(0));
        let mut expected = std::vec![0x08, 0x00, 0x00, 0x09, 0xc4, 0x7f];
        expected.extend_from_slice(b"unknown message type 0x42; closing the connection\0");
        assert_eq!(&out[..len], expected);
        assert_eq!(
            session.poll_timeouts(t(0)),
            Some(CloseReason::ProtocolError)
        );
        // Nothing after the bad byte is answered.
        assert_eq!(session.receive(&[0x07], t(0), &mut |_| {}), 1);
        assert!(!session.wants_transmit());
    }

    #[test]
    fn a_response_type_sent_to_a_server_is_an_error() {
        let data = file();
        let store = SliceStore::<1>::new(&data).unwrap();
        let mut expected = std::vec![0x7f];
        expected.extend_from_slice(
            b"unexpected message type 0x05 (Block Response Success); closing the connection\0",
        );
        assert_eq!(answer(&store, &[0x05]), expected);
    }

    #[test]
    fn pipelined_requests_are_answered_in_order_through_tiny_windows() {
        let data = file();
        let store = SliceStore::<1>::new(&data).unwrap();
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for round in 0..20u16 {
            let block = round % 3;
            input.extend_from_slice(&[0x04, 0, block as u8, 0, block as u8]);
            expected.push(0x05);
            let start = usize::from(block) * 1024;
            expected.extend_from_slice(&data[start..(start + 1024).min(data.len())]);
            input.push(0x07);
            expected.extend_from_slice(&[0x08, 0x00, 0x00, 0x09, 0xc4]);
        }
        for window in [1, 2, 7, 1000] {
            let mut session = ServerSession::new(ServerConfig::new(&store, &[]), t(0));
            assert_eq!(exchange(&mut session, &input, window), expected);
        }
    }

    #[test]
    fn backpressure_stops_reading_when_the_pipeline_is_full() {
        let data = file();
        let store = SliceStore::<1>::new(&data).unwrap();
        let mut session = ServerSession::new(ServerConfig::new(&store, &[]), t(0));
        let input = [0x07; 20];
        assert_eq!(session.receive(&input, t(0), &mut |_| {}), PIPELINE_DEPTH);
        assert!(!session.wants_receive());
        let mut out = [0u8; 5];
        assert_eq!(session.transmit(&mut out, t(0)), 5);
        assert!(session.wants_receive());
        assert_eq!(
            session.receive(&input[PIPELINE_DEPTH..], t(0), &mut |_| {}),
            1
        );
    }

    #[test]
    fn idle_connections_close_and_progress_resets_the_clock() {
        let data = file();
        let store = SliceStore::<1>::new(&data).unwrap();
        let mut config = ServerConfig::new(&store, &[]);
        config.idle_timeout = Duration::from_millis(100);
        let mut session = ServerSession::new(config, t(0));
        assert_eq!(session.poll_at(), Some(t(100)));
        assert_eq!(session.receive(&[0x04, 0x00], t(90), &mut |_| {}), 2);
        assert_eq!(session.poll_timeouts(t(99)), None);
        // Half a request is not progress.
        assert_eq!(
            session.poll_timeouts(t(100)),
            Some(CloseReason::IdleTimeout)
        );

        let mut session = ServerSession::new(config, t(0));
        session.receive(&[0x07], t(50), &mut |_| {});
        assert_eq!(session.poll_at(), Some(t(150)));
        // An answer nobody reads is not progress either.
        assert_eq!(
            session.poll_timeouts(t(150)),
            Some(CloseReason::IdleTimeout)
        );
        assert_eq!(session.poll_at(), None);
    }

    #[test]
    fn a_store_failure_closes_the_connection() {
        struct Broken;
        impl BlockStore for Broken {
            fn file_size(&self) -> u32 {
                4096
            }
            fn held_after(&self, after: Option<u16>) -> Option<BlockRange> {
                after.is_none().then_some(BlockRange::single(0))
            }
            fn read_at(&self, _: u32, _: &mut [u8]) -> Result<(), crate::store::StoreError> {
                Err(crate::store::StoreError)
            }
        }
        let mut session = ServerSession::new(ServerConfig::new(&Broken, &[]), t(0));
        session.receive(&[0x04, 0, 0, 0, 0], t(0), &mut |_| {});
        let mut out = [0u8; 64];
        assert_eq!(
            session.transmit(&mut out, t(0)),
            1,
            "only the type byte went out"
        );
        assert_eq!(session.poll_timeouts(t(0)), Some(CloseReason::StoreFailed));
    }

    #[test]
    fn every_fixed_reason_is_valid() {
        let refusals = [
            (0, 0, Refusal::Reversed),
            (65535, 65535, Refusal::BeyondFile { block_count: 65536 }),
            (65535, 65535, Refusal::BeyondFile { block_count: 0 }),
            (0, 65535, Refusal::NotHeld),
            (0, 65535, Refusal::NoManifest),
        ];
        for (start, end, refusal) in refusals {
            let mut text = heapless::String::<96>::new();
            write_refusal(&mut text, start, end, refusal).unwrap();
            assert!(Reason::new(&text).is_ok());
        }
        let mut text = heapless::String::<96>::new();
        let worst = WireError::UnexpectedType(crate::wire::MessageType::BlockResponseSuccess);
        write!(text, "{worst}; closing the connection").unwrap();
        assert!(Reason::new(&text).is_ok());
        for fixed in [NO_FILE_YET_REASON, LIST_TOO_LONG_REASON, BUSY_REASON] {
            assert!(Reason::new(fixed).is_ok());
        }
    }
}
