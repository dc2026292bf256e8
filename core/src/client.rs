//! The client session: encodes requests and decodes the responses, sans-IO.
//!
//! Responses carry no length of their own where lists and block data are concerned, so the
//! session remembers what it asked ([`ClientSession::send`]) and, for block data, the file
//! size ([`ClientSession::set_file_size`]). [`ClientSession::receive`] takes bytes split
//! anywhere and returns one [`ClientEvent`] at a time; block data is handed out as a slice of
//! the input, never copied. Counts above the caller's [`ClientLimits`] are refused before
//! anything is read into memory.

use crate::geometry::{ByteSpan, Geometry};
use crate::manifest::{DIGEST_LEN, Digest};
use crate::ranges::BlockRange;
use crate::wire::{
    MAX_LIST_COUNT, MessageType, Parsed, PeerAddr, RANGE_ENTRY_LEN, Reason, Request,
    ResponseHeader, WireError, field, parse_range_entry,
};
use core::fmt;

/// Caps on what a server may make this client accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ClientLimits {
    /// Largest Peer List Response count accepted.
    pub max_peers: u16,
    /// Largest Block List Response count accepted.
    pub max_ranges: u16,
}

impl Default for ClientLimits {
    /// What the protocol allows: 32767 of each.
    fn default() -> Self {
        Self {
            max_peers: MAX_LIST_COUNT,
            max_ranges: MAX_LIST_COUNT,
        }
    }
}

/// One piece of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ClientEvent<'a> {
    /// A Peer List Response begins; this many [`ClientEvent::Peer`] follow.
    PeerCount(u16),
    /// One entry of a Peer List Response, as sent (check [`PeerAddr::is_usable`]).
    Peer(PeerAddr),
    /// A Block List Response begins; this many [`ClientEvent::Range`] follow.
    RangeCount(u16),
    /// A held range; ranges come sorted and coalesced (checked).
    Range(BlockRange),
    /// Block data at `offset` in the file, in order; the pieces of one response are
    /// contiguous.
    BlockData {
        /// Byte offset of `data` in the file.
        offset: u32,
        /// The bytes, a slice of the input.
        data: &'a [u8],
    },
    /// The Block or Digest Request was refused, for this reason.
    BlockFailure(&'a str),
    /// A File Size Response: the whole file's size in bytes.
    FileSize(u32),
    /// One digest of a Digest Response, as the peer sent it (not yet verified against
    /// anything): the manifest's digest of `block`.
    Digest {
        /// The block the digest is of.
        block: u16,
        /// The SHA-256 the peer claims for it.
        digest: Digest,
    },
    /// The server reported an error and closes the connection.
    Error(&'a str),
}

/// The result of one [`ClientSession::receive`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step<'a> {
    /// Bytes of the input used; offer the rest again.
    pub consumed: usize,
    /// The event decoded, `None` when the input ran out first.
    pub event: Option<ClientEvent<'a>>,
    /// The request whose response ended with this step.
    pub completed: Option<Request>,
}

/// The server broke the protocol, or the client was misused; either way the connection cannot
/// go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ClientError {
    /// A malformed message: unknown type, bad reason text or a count above the limit.
    Wire(WireError),
    /// A response type that does not answer the oldest outstanding request.
    UnexpectedResponse {
        /// The success type of the oldest outstanding request.
        expected: MessageType,
        /// The type byte received.
        got: u8,
    },
    /// A response arrived when no request was outstanding.
    Unsolicited(u8),
    /// Block Response Success or Digest Response to a request that is not inside the known
    /// file.
    UnexpectedBlockData,
    /// A held range past the last block of the file whose size this session knows.
    RangeBeyondFile {
        /// The range's last block.
        end: u16,
        /// Blocks in the file.
        block_count: u32,
    },
    /// A range with start after end, or not after the previous range with a gap.
    MisorderedRange {
        /// The range's first block, as sent.
        start: u16,
        /// The range's last block, as sent.
        end: u16,
    },
    /// More requests outstanding than the session tracks.
    TooManyOutstanding,
    /// The server sent an Error earlier; the connection is over.
    Closed,
    /// The session's own bookkeeping broke (a field outgrew its buffer): a bug, reported
    /// rather than decoded past with the stream out of step. The fuzz target fails on it.
    Desync,
}

impl From<WireError> for ClientError {
    fn from(error: WireError) -> Self {
        Self::Wire(error)
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wire(error) => error.fmt(f),
            Self::UnexpectedResponse { expected, got } => write!(
                f,
                "expected a {} but got message type 0x{got:02x}",
                expected.name()
            ),
            Self::Unsolicited(got) => {
                write!(
                    f,
                    "message type 0x{got:02x} arrived with no request outstanding"
                )
            }
            Self::UnexpectedBlockData => f.write_str("block data for a range outside the file"),
            Self::RangeBeyondFile { end, block_count } => write!(
                f,
                "Block List Response names block {end}, beyond the file's {block_count} blocks"
            ),
            Self::MisorderedRange { start, end } => write!(
                f,
                "block range {start}-{end} is reversed or out of order in a Block List Response"
            ),
            Self::TooManyOutstanding => f.write_str("too many requests outstanding"),
            Self::Closed => f.write_str("the connection was closed after an Error"),
            Self::Desync => f.write_str("internal error: the client session lost its place"),
        }
    }
}

/// What a whole header started. A reason's event borrows the header, so the caller makes it
/// once the state has moved on.
struct Started {
    event: Option<ClientEvent<'static>>,
    completed: Option<Request>,
    /// Set for a Block Response Failure (`false`) or an Error (`true`).
    reason: Option<bool>,
}

impl Started {
    fn reason(error: bool, completed: Option<Request>) -> Self {
        Self {
            event: None,
            completed,
            reason: Some(error),
        }
    }
}

/// A request sent and not yet fully answered.
#[derive(Debug, Clone, Copy)]
struct Outstanding {
    request: Request,
    /// For a Block Request inside the known file: the bytes a success carries.
    span: Option<ByteSpan>,
    /// For a Digest Request inside the known file: the blocks whose digests a success carries.
    digests: Option<BlockRange>,
    /// The file's block count when the request was sent, or as learnt from a File Size
    /// Response answered before it: a Block List Response names no block beyond it.
    block_count: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    Peers,
    Ranges,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Between responses: the next byte is a type.
    Idle,
    /// Reading a response's header (type, count, size or reason), whose type answers the
    /// oldest outstanding request or is an Error.
    Header,
    /// Reading list entries.
    Entries {
        list: List,
        remaining: u16,
    },
    Data {
        offset: u32,
        remaining: u32,
    },
    /// Reading digests, of blocks `next` onwards, `remaining` of them.
    Digests {
        next: u16,
        remaining: u32,
    },
    Closed,
}

/// One connection's client side; `Q` is how many requests may be outstanding (pipelined).
pub struct ClientSession<const Q: usize> {
    limits: ClientLimits,
    geometry: Option<Geometry>,
    outstanding: heapless::Deque<Outstanding, Q>,
    state: State,
    /// The header of the response being read, so far.
    header: heapless::Vec<u8, { ResponseHeader::MAX_LEN }>,
    /// The bytes of a list entry or digest read so far.
    fixed: heapless::Vec<u8, DIGEST_LEN>,
    /// End of the previous range of the Block List Response being read.
    previous_range_end: Option<u16>,
    /// The block count the Block List Response being read is checked against.
    list_block_count: Option<u32>,
}

impl<const Q: usize> ClientSession<Q> {
    /// A session with nothing outstanding and no file size yet, accepting counts up to `limits`.
    pub fn new(limits: ClientLimits) -> Self {
        Self {
            limits,
            geometry: None,
            outstanding: heapless::Deque::new(),
            state: State::Idle,
            header: heapless::Vec::new(),
            fixed: heapless::Vec::new(),
            previous_range_end: None,
            list_block_count: None,
        }
    }

    /// The file size the caller trusts (a verified manifest's, or the first peer's): it fixes
    /// how long block data is, and which blocks a Block List Response may name. Without it,
    /// the session takes the size from the first File Size Response it decodes.
    pub fn set_file_size(&mut self, size: u32) {
        self.geometry = Some(Geometry::new(size));
    }

    /// The geometry of the file size in use, once set or learnt from a File Size Response.
    pub fn geometry(&self) -> Option<Geometry> {
        self.geometry
    }

    /// Requests sent and not yet fully answered.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Encodes `request` into `out` and remembers it; returns the bytes written.
    pub fn send(&mut self, request: Request, out: &mut [u8]) -> Result<usize, ClientError> {
        if self.outstanding.is_full() {
            return Err(ClientError::TooManyOutstanding);
        }
        if matches!(self.state, State::Closed) {
            return Err(ClientError::Closed);
        }
        let len = request.emit(out)?;
        let inside_file = |start, end| {
            self.geometry
                .zip(BlockRange::new(start, end))
                .filter(|(geometry, range)| geometry.contains(*range))
        };
        let (span, digests) = match request {
            Request::Block { start, end } => (
                inside_file(start, end).and_then(|(geometry, range)| geometry.span(range)),
                None,
            ),
            Request::Digest { start, end } => (None, inside_file(start, end).map(|(_, r)| r)),
            _ => (None, None),
        };
        self.outstanding
            .push_back(Outstanding {
                request,
                span,
                digests,
                block_count: self.geometry.map(|g| g.block_count()),
            })
            .map_err(|_| ClientError::TooManyOutstanding)?;
        Ok(len)
    }

    /// Decodes from the front of `input` until one event is ready or the input is used up.
    pub fn receive<'a>(&'a mut self, input: &'a [u8]) -> Result<Step<'a>, ClientError> {
        let mut consumed = 0;
        loop {
            let rest = input.get(consumed..).unwrap_or_default();
            match self.state {
                State::Closed => return Err(ClientError::Closed),
                State::Data { offset, remaining } => {
                    let len = rest.len().min(remaining as usize);
                    if len == 0 {
                        return Ok(self.step(consumed, None, None));
                    }
                    let data = rest.get(..len).unwrap_or_default();
                    // len <= remaining, a u32.
                    let remaining = remaining - len as u32;
                    self.state = State::Data {
                        offset: offset + len as u32,
                        remaining,
                    };
                    let completed = if remaining == 0 { self.finish() } else { None };
                    let event = ClientEvent::BlockData { offset, data };
                    return Ok(self.step(consumed + len, Some(event), completed));
                }
                _ => {}
            }
            let Some(&byte) = rest.first() else {
                return Ok(self.step(consumed, None, None));
            };
            consumed += 1;
            match self.state {
                State::Idle | State::Header => {
                    if matches!(self.state, State::Idle) {
                        self.check_type(byte)?;
                        self.header.clear();
                        self.state = State::Header;
                    }
                    self.header.push(byte).map_err(|_| ClientError::Desync)?;
                    if let Some(started) = self.start_body()? {
                        let event = match started.reason {
                            Some(error) => Some(self.reason_event(error)?),
                            None => started.event,
                        };
                        return Ok(self.step(consumed, event, started.completed));
                    }
                }
                State::Entries { list, remaining } => {
                    self.push_fixed(byte)?;
                    let event = match list {
                        List::Peers => match self.take_fixed::<{ PeerAddr::WIRE_LEN }>() {
                            Some(bytes) => PeerAddr::parse(&bytes).map(ClientEvent::Peer),
                            None => continue,
                        },
                        List::Ranges => match self.take_fixed::<RANGE_ENTRY_LEN>() {
                            Some(bytes) => Some(ClientEvent::Range(self.check_range(&bytes)?)),
                            None => continue,
                        },
                    };
                    let remaining = remaining.saturating_sub(1);
                    self.state = State::Entries { list, remaining };
                    let completed = if remaining == 0 { self.finish() } else { None };
                    return Ok(self.step(consumed, event, completed));
                }
                State::Digests { next, remaining } => {
                    self.push_fixed(byte)?;
                    if let Some(bytes) = self.take_fixed::<DIGEST_LEN>() {
                        let remaining = remaining.saturating_sub(1);
                        self.state = State::Digests {
                            next: next.saturating_add(1),
                            remaining,
                        };
                        let completed = if remaining == 0 { self.finish() } else { None };
                        let event = ClientEvent::Digest {
                            block: next,
                            digest: Digest(bytes),
                        };
                        return Ok(self.step(consumed, Some(event), completed));
                    }
                }
                State::Data { .. } | State::Closed => {}
            }
        }
    }

    /// Checks a response's type byte against the oldest outstanding request, before the rest
    /// of its header arrives.
    fn check_type(&self, type_byte: u8) -> Result<(), ClientError> {
        let kind = MessageType::from_byte(type_byte).ok_or(WireError::UnknownType(type_byte))?;
        if kind == MessageType::Error {
            return Ok(());
        }
        let oldest = self
            .outstanding
            .front()
            .ok_or(ClientError::Unsolicited(type_byte))?;
        let expected = oldest.request.response_type();
        let answers = kind == expected
            || (kind == MessageType::BlockResponseFailure
                && matches!(
                    oldest.request,
                    Request::Block { .. } | Request::Digest { .. }
                ));
        if !answers {
            return Err(ClientError::UnexpectedResponse {
                expected,
                got: type_byte,
            });
        }
        Ok(())
    }

    /// Once the header is whole, starts what follows it; `None` while the header is
    /// incomplete, or when block data or digests follow with nothing to report yet.
    fn start_body(&mut self) -> Result<Option<Started>, ClientError> {
        let header = match ResponseHeader::parse(&self.header)? {
            Parsed::Incomplete => return Ok(None),
            Parsed::Complete { value, .. } => value,
        };
        let oldest = self.outstanding.front().copied();
        let (event, completed): (ClientEvent<'static>, _) = match header {
            ResponseHeader::PeerList { count } | ResponseHeader::BlockList { count } => {
                let (list, limit) = match header {
                    ResponseHeader::PeerList { .. } => (List::Peers, self.limits.max_peers),
                    _ => (List::Ranges, self.limits.max_ranges),
                };
                let limit = limit.min(MAX_LIST_COUNT);
                if count > limit {
                    return Err(WireError::CountTooLarge { count, limit }.into());
                }
                if list == List::Ranges {
                    self.previous_range_end = None;
                    self.list_block_count = oldest.and_then(|o| o.block_count);
                }
                self.fixed.clear();
                self.state = State::Entries {
                    list,
                    remaining: count,
                };
                let completed = if count == 0 { self.finish() } else { None };
                let event = match list {
                    List::Peers => ClientEvent::PeerCount(count),
                    List::Ranges => ClientEvent::RangeCount(count),
                };
                (event, completed)
            }
            ResponseHeader::BlockSuccess => {
                let span = oldest
                    .and_then(|o| o.span)
                    .ok_or(ClientError::UnexpectedBlockData)?;
                self.state = State::Data {
                    offset: span.offset,
                    remaining: span.len,
                };
                return Ok(None);
            }
            ResponseHeader::DigestSuccess => {
                let range = oldest
                    .and_then(|o| o.digests)
                    .ok_or(ClientError::UnexpectedBlockData)?;
                self.fixed.clear();
                self.state = State::Digests {
                    next: range.start(),
                    remaining: range.len(),
                };
                return Ok(None);
            }
            ResponseHeader::FileSize(size) => {
                let completed = self.finish();
                self.learn_file_size(size);
                (ClientEvent::FileSize(size), completed)
            }
            ResponseHeader::BlockFailure(_) => {
                let completed = self.finish();
                return Ok(Some(Started::reason(false, completed)));
            }
            ResponseHeader::Error(_) => {
                self.state = State::Closed;
                return Ok(Some(Started::reason(true, None)));
            }
        };
        Ok(Some(Started {
            event: Some(event),
            completed,
            reason: None,
        }))
    }

    /// The Block Response Failure (or with `error`, the Error) whose whole header was read.
    fn reason_event(&self, error: bool) -> Result<ClientEvent<'_>, ClientError> {
        let text_end = self.header.len().saturating_sub(1);
        let text = self.header.get(field::REASON..text_end).unwrap_or_default();
        let reason = Reason::from_bytes(text)?.as_str();
        Ok(if error {
            ClientEvent::Error(reason)
        } else {
            ClientEvent::BlockFailure(reason)
        })
    }

    /// Without a size from the caller, the first File Size Response decoded sets it, for
    /// the Block Lists asked after it too.
    fn learn_file_size(&mut self, size: u32) {
        if self.geometry.is_some() {
            return;
        }
        let geometry = Geometry::new(size);
        self.geometry = Some(geometry);
        for outstanding in self.outstanding.iter_mut() {
            if outstanding.request == Request::BlockList {
                outstanding.block_count = Some(geometry.block_count());
            }
        }
    }

    fn check_range(&mut self, bytes: &[u8]) -> Result<BlockRange, ClientError> {
        let (start, end) = parse_range_entry(bytes).ok_or(ClientError::Desync)?;
        let after_previous = self
            .previous_range_end
            .is_none_or(|previous| u32::from(start) > u32::from(previous) + 1);
        if let Some(block_count) = self.list_block_count
            && u32::from(end) >= block_count
        {
            return Err(ClientError::RangeBeyondFile { end, block_count });
        }
        match BlockRange::new(start, end) {
            Some(range) if after_previous => {
                self.previous_range_end = Some(end);
                Ok(range)
            }
            _ => Err(ClientError::MisorderedRange { start, end }),
        }
    }

    fn push_fixed(&mut self, byte: u8) -> Result<(), ClientError> {
        self.fixed.push(byte).map_err(|_| ClientError::Desync)
    }

    /// The `N` bytes read so far, once there are `N`, leaving the buffer empty.
    fn take_fixed<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = <[u8; N]>::try_from(self.fixed.as_slice()).ok()?;
        self.fixed.clear();
        Some(bytes)
    }

    /// Ends the response to the oldest request.
    fn finish(&mut self) -> Option<Request> {
        self.state = State::Idle;
        self.outstanding.pop_front().map(|o| o.request)
    }

    fn step<'a>(
        &self,
        consumed: usize,
        event: Option<ClientEvent<'a>>,
        completed: Option<Request>,
    ) -> Step<'a> {
        Step {
            consumed,
            event,
            completed,
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    type Client = ClientSession<8>;

    /// Everything `client` makes of `input`, fed `chunk` bytes at a time, events as text.
    fn decode(
        client: &mut Client,
        input: &[u8],
        chunk: usize,
    ) -> Result<Vec<std::string::String>, ClientError> {
        let mut seen = Vec::new();
        for piece in input.chunks(chunk) {
            let mut offset = 0;
            while offset < piece.len() {
                let step = client.receive(&piece[offset..])?;
                assert!(step.consumed > 0 || step.event.is_some());
                offset += step.consumed;
                if let Some(event) = step.event {
                    seen.push(std::format!("{event:?}"));
                }
                if let Some(request) = step.completed {
                    seen.push(std::format!("done {request}"));
                }
            }
        }
        Ok(seen)
    }

    fn sent(client: &mut Client, request: Request) {
        let mut out = [0u8; 8];
        client.send(request, &mut out).unwrap();
    }

    #[test]
    fn decodes_the_protocol_examples_split_anywhere() {
        let mut input = Vec::new();
        input.extend_from_slice(&[
            0x01, 0x00, 0x02, 0x0a, 0x00, 0x00, 0x03, 0x22, 0xb8, 0x0a, 0x00, 0x00, 0x04, 0x23,
            0x28,
        ]);
        input.extend_from_slice(&[
            0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x63, 0x00, 0xc8, 0x01, 0x2b,
        ]);
        input.extend_from_slice(&[0x08, 0x00, 0x00, 0x09, 0xc4]);
        input.extend_from_slice(b"\x06blocks 1-2 are not all held here\0");
        input.extend_from_slice(&[0x05, 1, 2, 3]);
        for chunk in [1, 2, 3, 5, 100] {
            let mut client = Client::new(ClientLimits::default());
            sent(&mut client, Request::PeerList);
            sent(&mut client, Request::BlockList);
            sent(&mut client, Request::FileSize);
            sent(&mut client, Request::Block { start: 1, end: 2 });
            client.set_file_size(2048 + 3);
            sent(&mut client, Request::Block { start: 2, end: 2 });
            let seen = decode(&mut client, &input, chunk).unwrap();
            let seen: Vec<_> = seen
                .into_iter()
                .filter(|s| !s.starts_with("BlockData"))
                .collect();
            assert_eq!(
                seen,
                [
                    "PeerCount(2)",
                    "Peer(PeerAddr { ip: [10, 0, 0, 3], port: 8888 })",
                    "Peer(PeerAddr { ip: [10, 0, 0, 4], port: 9000 })",
                    "done Peer List Request",
                    "RangeCount(2)",
                    "Range(BlockRange { start: 0, end: 99 })",
                    "Range(BlockRange { start: 200, end: 299 })",
                    "done Block List Request",
                    "FileSize(2500)",
                    "done File Size Request",
                    "BlockFailure(\"blocks 1-2 are not all held here\")",
                    "done Block Request 1-2",
                    "done Block Request 2-2",
                ]
            );
            assert_eq!(client.outstanding(), 0);
        }
    }

    #[test]
    fn digests_are_read_one_event_per_block_split_anywhere() {
        let mut input = std::vec![0x0a];
        input.extend((0..64u8).map(|i| i ^ 0x5a));
        input.extend_from_slice(b"\x06no manifest here: digests are not served\0");
        for chunk in [1, 3, 31, 33, 200] {
            let mut client = Client::new(ClientLimits::default());
            client.set_file_size(2500);
            sent(&mut client, Request::Digest { start: 1, end: 2 });
            sent(&mut client, Request::Digest { start: 0, end: 0 });
            let seen = decode(&mut client, &input, chunk).unwrap();
            let first = Digest(core::array::from_fn(|i| (i as u8) ^ 0x5a));
            let second = Digest(core::array::from_fn(|i| (i as u8 + 32) ^ 0x5a));
            assert_eq!(
                seen,
                [
                    std::format!(
                        "{:?}",
                        ClientEvent::Digest {
                            block: 1,
                            digest: first
                        }
                    ),
                    std::format!(
                        "{:?}",
                        ClientEvent::Digest {
                            block: 2,
                            digest: second
                        }
                    ),
                    "done Digest Request 1-2".into(),
                    "BlockFailure(\"no manifest here: digests are not served\")".into(),
                    "done Digest Request 0-0".into(),
                ]
            );
        }
    }

    #[test]
    fn digests_need_a_known_file_and_ranges_its_bounds() {
        let mut client = Client::new(ClientLimits::default());
        sent(&mut client, Request::Digest { start: 0, end: 0 });
        assert_eq!(
            client.receive(&[0x0a]).unwrap_err(),
            ClientError::UnexpectedBlockData
        );
        let mut client = Client::new(ClientLimits::default());
        client.set_file_size(2500);
        sent(&mut client, Request::BlockList);
        assert_eq!(
            decode(&mut client, &[0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x03], 7).unwrap_err(),
            ClientError::RangeBeyondFile {
                end: 3,
                block_count: 3
            }
        );
    }

    #[test]
    fn a_block_list_after_a_file_size_response_is_checked_against_it() {
        // Pipelined as discovery does: the size is learnt from the first response.
        let mut client = Client::new(ClientLimits::default());
        sent(&mut client, Request::FileSize);
        sent(&mut client, Request::BlockList);
        let mut input = std::vec![0x08, 0x00, 0x00, 0x09, 0xc4]; // 2500 bytes: blocks 0-2
        input.extend([0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x03]);
        assert_eq!(
            decode(&mut client, &input, 100).unwrap_err(),
            ClientError::RangeBeyondFile {
                end: 3,
                block_count: 3
            }
        );
    }

    #[test]
    fn block_data_is_handed_out_in_place_with_offsets() {
        let mut client = Client::new(ClientLimits::default());
        client.set_file_size(2500);
        sent(&mut client, Request::Block { start: 1, end: 2 });
        let mut input = std::vec![0x05];
        input.extend((0..1476u32).map(|i| i as u8));
        input.push(0x7f); // the next response's first byte is not consumed with the data
        let step = client.receive(&input[..600]).unwrap();
        assert_eq!(step.consumed, 1 + 599);
        assert_eq!(
            step.event,
            Some(ClientEvent::BlockData {
                offset: 1024,
                data: &input[1..600]
            })
        );
        assert_eq!(step.completed, None);
        let step = client.receive(&input[600..]).unwrap();
        assert_eq!(step.consumed, 877);
        assert_eq!(
            step.event,
            Some(ClientEvent::BlockData {
                offset: 1623,
                data: &input[600..1477]
            })
        );
        assert_eq!(step.completed, Some(Request::Block { start: 1, end: 2 }));
    }

    #[test]
    fn an_error_ends_the_connection() {
        let mut client = Client::new(ClientLimits::default());
        let mut input = std::vec![0x7f];
        input.extend_from_slice(b"unknown message type 0x42; closing the connection\0");
        let step = client.receive(&input).unwrap();
        assert_eq!(
            step.event,
            Some(ClientEvent::Error(
                "unknown message type 0x42; closing the connection"
            ))
        );
        assert_eq!(client.receive(&[0x08]), Err(ClientError::Closed));
        let mut out = [0u8; 1];
        assert_eq!(
            client.send(Request::FileSize, &mut out),
            Err(ClientError::Closed)
        );
    }

    #[test]
    fn hostile_responses_are_refused() {
        let limits = ClientLimits {
            max_peers: 100,
            max_ranges: 10,
        };
        let cases: [(Request, &[u8], ClientError); 9] = [
            (
                Request::PeerList,
                &[0x01, 0x7f, 0xff],
                WireError::CountTooLarge {
                    count: 32767,
                    limit: 100,
                }
                .into(),
            ),
            (
                Request::PeerList,
                &[0x01, 0x80, 0x00],
                WireError::CountTooLarge {
                    count: 32768,
                    limit: 100,
                }
                .into(),
            ),
            (
                Request::BlockList,
                &[0x03, 0x00, 0x0b],
                WireError::CountTooLarge {
                    count: 11,
                    limit: 10,
                }
                .into(),
            ),
            (
                Request::BlockList,
                &[0x03, 0x00, 0x01, 0x00, 0x09, 0x00, 0x03],
                ClientError::MisorderedRange { start: 9, end: 3 },
            ),
            (
                Request::BlockList,
                &[
                    0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x05,
                ],
                ClientError::MisorderedRange { start: 4, end: 5 },
            ),
            (
                Request::FileSize,
                &[0x05],
                ClientError::UnexpectedResponse {
                    expected: MessageType::FileSizeResponse,
                    got: 0x05,
                },
            ),
            (
                Request::FileSize,
                &[0x99],
                WireError::UnknownType(0x99).into(),
            ),
            (
                Request::Block { start: 0, end: 0 },
                &[0x05],
                ClientError::UnexpectedBlockData,
            ),
            (
                Request::Block { start: 0, end: 0 },
                &[0x06, 0x00],
                WireError::EmptyReason.into(),
            ),
        ];
        for (request, input, error) in cases {
            let mut client = Client::new(limits);
            sent(&mut client, request);
            assert_eq!(decode(&mut client, input, 1), Err(error), "{input:?}");
        }
        let mut client = Client::new(limits);
        assert_eq!(client.receive(&[0x08]), Err(ClientError::Unsolicited(0x08)));
        let mut client = Client::new(limits);
        sent(&mut client, Request::Block { start: 0, end: 0 });
        let mut long = std::vec![0x06];
        long.extend_from_slice(&[b'x'; 256]);
        assert_eq!(
            decode(&mut client, &long, 7),
            Err(WireError::ReasonTooLong.into())
        );
        let mut client = Client::new(limits);
        sent(&mut client, Request::Block { start: 0, end: 0 });
        assert_eq!(
            decode(&mut client, &[0x06, 0xff, 0x00], 7),
            Err(WireError::ReasonNotUtf8.into())
        );
    }

    #[test]
    fn pipeline_depth_is_bounded() {
        let mut client = ClientSession::<2>::new(ClientLimits::default());
        let mut out = [0u8; 8];
        client.send(Request::FileSize, &mut out).unwrap();
        client.send(Request::FileSize, &mut out).unwrap();
        assert_eq!(
            client.send(Request::FileSize, &mut out),
            Err(ClientError::TooManyOutstanding)
        );
    }
}
