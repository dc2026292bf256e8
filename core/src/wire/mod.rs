//! The wire format: every message is a one-byte type followed by its fields, every integer
//! big-endian. See `PROTOCOL.md` for the byte layouts and examples.
//!
//! Parsing never panics and never reads past the input: a message cut short is
//! [`Parsed::Incomplete`], not an error. Emitting writes into the caller's buffer and returns
//! [`WireError::BufferTooSmall`] rather than writing past it.

mod peer;
mod reason;
mod request;
mod response;

use core::fmt;

pub use peer::PeerAddr;
pub use reason::{MAX_REASON_LEN, Reason};
pub use request::Request;
pub use response::{RANGE_ENTRY_LEN, ResponseHeader, emit_range_entry, parse_range_entry};

/// Largest count in a Peer List or Block List Response.
pub const MAX_LIST_COUNT: u16 = 32767;

/// The first byte of every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum MessageType {
    /// Peer List Request (3.1): asks for other peers of the file.
    PeerListRequest = 0x00,
    /// Peer List Response (3.1): a count, then that many 6-byte peer entries.
    PeerListResponse = 0x01,
    /// Block List Request (3.2): asks which blocks the peer holds.
    BlockListRequest = 0x02,
    /// Block List Response (3.2): a count, then that many 4-byte block ranges.
    BlockListResponse = 0x03,
    /// Block Request (3.3): asks for the bytes of blocks `start..=end`.
    BlockRequest = 0x04,
    /// Block Response Success (3.3): the bytes of the requested blocks, no length field.
    BlockResponseSuccess = 0x05,
    /// Block Response Failure (3.3, 3.5): a reason; the connection stays usable.
    BlockResponseFailure = 0x06,
    /// File Size Request (3.4): asks for the size of the whole file.
    FileSizeRequest = 0x07,
    /// File Size Response (3.4): the file size in bytes, a u32.
    FileSizeResponse = 0x08,
    /// Digest Request (3.5): asks for the manifest's digests of blocks `start..=end`.
    DigestRequest = 0x09,
    /// Digest Response (3.5): 32 bytes of SHA-256 per requested block, no length field.
    DigestResponse = 0x0A,
    /// Error (3.7): a reason, after which the sender closes the connection.
    Error = 0x7F,
}

impl MessageType {
    /// The message type of a type byte; `None` for a byte that starts no message.
    pub const fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0x00 => Self::PeerListRequest,
            0x01 => Self::PeerListResponse,
            0x02 => Self::BlockListRequest,
            0x03 => Self::BlockListResponse,
            0x04 => Self::BlockRequest,
            0x05 => Self::BlockResponseSuccess,
            0x06 => Self::BlockResponseFailure,
            0x07 => Self::FileSizeRequest,
            0x08 => Self::FileSizeResponse,
            0x09 => Self::DigestRequest,
            0x0A => Self::DigestResponse,
            0x7F => Self::Error,
            _ => return None,
        })
    }

    /// Whether a client sends this type to a server (0x00, 0x02, 0x04, 0x07, 0x09).
    pub const fn is_request(self) -> bool {
        matches!(
            self,
            Self::PeerListRequest
                | Self::BlockListRequest
                | Self::BlockRequest
                | Self::FileSizeRequest
                | Self::DigestRequest
        )
    }

    /// The message's name as `PROTOCOL.md` spells it, for logs and error texts.
    pub const fn name(self) -> &'static str {
        match self {
            Self::PeerListRequest => "Peer List Request",
            Self::PeerListResponse => "Peer List Response",
            Self::BlockListRequest => "Block List Request",
            Self::BlockListResponse => "Block List Response",
            Self::BlockRequest => "Block Request",
            Self::BlockResponseSuccess => "Block Response Success",
            Self::BlockResponseFailure => "Block Response Failure",
            Self::FileSizeRequest => "File Size Request",
            Self::FileSizeResponse => "File Size Response",
            Self::DigestRequest => "Digest Request",
            Self::DigestResponse => "Digest Response",
            Self::Error => "Error",
        }
    }
}

/// Byte positions of the fields, as in smoltcp's `wire::*::field` modules.
pub mod field {
    use core::ops::Range;

    /// Every message: the type byte.
    pub const TYPE: usize = 0;
    /// Block Request and Digest Request: first block number.
    pub const BLOCK_START: Range<usize> = 1..3;
    /// Block Request and Digest Request: last block number (inclusive).
    pub const BLOCK_END: Range<usize> = 3..5;
    /// Peer List and Block List Responses: the entry count.
    pub const LIST_COUNT: Range<usize> = 1..3;
    /// File Size Response: the size in bytes.
    pub const FILE_SIZE: Range<usize> = 1..5;
    /// Block Response Failure and Error: the reason text, then a NUL.
    pub const REASON: usize = 1;
    /// Digest Response: one block's SHA-256, repeated for every block asked for.
    pub const DIGEST: Range<usize> = 0..32;
}

/// The outcome of parsing the front of an input that may hold only part of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Parsed<T> {
    /// A whole message: its value and how many bytes of the input it took.
    Complete {
        /// The parsed message.
        value: T,
        /// Bytes of the input the message took.
        len: usize,
    },
    /// The input is a correct beginning; more bytes are needed.
    Incomplete,
}

/// A message that can never become valid, or a buffer too small to emit into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WireError {
    /// The type byte is none of the twelve message types.
    UnknownType(u8),
    /// A known type, but not one accepted here (a response sent to a server, say).
    UnexpectedType(MessageType),
    /// A Failure or Error text with nothing before its NUL.
    EmptyReason,
    /// A Failure or Error text of more than 255 bytes before its NUL.
    ReasonTooLong,
    /// A Failure or Error text that is not UTF-8.
    ReasonNotUtf8,
    /// A reason to send that holds a NUL, which would end it early.
    ReasonHasNul,
    /// A list count above 32767 or above the receiver's limit.
    CountTooLarge {
        /// The count as received.
        count: u16,
        /// The largest count accepted.
        limit: u16,
    },
    /// Emitting needs more room than the buffer has.
    BufferTooSmall,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownType(byte) => write!(f, "unknown message type 0x{byte:02x}"),
            Self::UnexpectedType(kind) => {
                write!(
                    f,
                    "unexpected message type 0x{:02x} ({})",
                    *kind as u8,
                    kind.name()
                )
            }
            Self::EmptyReason => f.write_str("empty reason text"),
            Self::ReasonTooLong => f.write_str("reason text longer than 255 bytes"),
            Self::ReasonNotUtf8 => f.write_str("reason text is not UTF-8"),
            Self::ReasonHasNul => f.write_str("reason text holds a NUL byte"),
            Self::CountTooLarge { count, limit } => {
                write!(f, "list count {count} above the limit of {limit}")
            }
            Self::BufferTooSmall => f.write_str("buffer too small"),
        }
    }
}

/// Reads a big-endian u16 at `range`, `None` if the input is too short.
fn read_u16(input: &[u8], range: core::ops::Range<usize>) -> Option<u16> {
    let bytes: [u8; 2] = input.get(range)?.try_into().ok()?;
    Some(u16::from_be_bytes(bytes))
}

fn read_u32(input: &[u8], range: core::ops::Range<usize>) -> Option<u32> {
    let bytes: [u8; 4] = input.get(range)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// Copies `bytes` to the front of `out`, or `BufferTooSmall`.
fn put(out: &mut [u8], bytes: &[u8]) -> Result<usize, WireError> {
    out.get_mut(..bytes.len())
        .ok_or(WireError::BufferTooSmall)?
        .copy_from_slice(bytes);
    Ok(bytes.len())
}
