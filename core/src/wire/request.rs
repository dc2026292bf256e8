//! The four requests a client sends.

use super::{MessageType, Parsed, WireError, field, put, read_u16};
use core::fmt;

/// A request, as a server receives it.
///
/// A Block Request keeps its two numbers as sent: `start > end` is well-formed on the wire
/// and answered with a Block Response Failure, so it is not a parse error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Request {
    /// Peer List Request (3.1).
    PeerList,
    /// Block List Request (3.2).
    BlockList,
    /// Block Request (3.3): the bytes of blocks `start..=end`.
    Block {
        /// First block number.
        start: u16,
        /// Last block number, inclusive.
        end: u16,
    },
    /// File Size Request (3.4).
    FileSize,
    /// The manifest's digests of blocks `start..=end`; kept as sent, like a Block Request.
    Digest {
        /// First block number.
        start: u16,
        /// Last block number, inclusive.
        end: u16,
    },
}

impl Request {
    /// Longest request on the wire (a Block Request).
    pub const MAX_LEN: usize = 5;

    /// The type byte this request is sent with.
    pub const fn message_type(&self) -> MessageType {
        match self {
            Self::PeerList => MessageType::PeerListRequest,
            Self::BlockList => MessageType::BlockListRequest,
            Self::Block { .. } => MessageType::BlockRequest,
            Self::FileSize => MessageType::FileSizeRequest,
            Self::Digest { .. } => MessageType::DigestRequest,
        }
    }

    /// The response type that answers this request with success.
    pub const fn response_type(&self) -> MessageType {
        match self {
            Self::PeerList => MessageType::PeerListResponse,
            Self::BlockList => MessageType::BlockListResponse,
            Self::Block { .. } => MessageType::BlockResponseSuccess,
            Self::FileSize => MessageType::FileSizeResponse,
            Self::Digest { .. } => MessageType::DigestResponse,
        }
    }

    /// Parses one request from the front of `input`.
    ///
    /// An unknown type byte, or a known type that is not a request, can never become a valid
    /// request, whatever follows: it is an error at once, without waiting for more bytes.
    pub fn parse(input: &[u8]) -> Result<Parsed<Request>, WireError> {
        let Some(&type_byte) = input.get(field::TYPE) else {
            return Ok(Parsed::Incomplete);
        };
        let kind = MessageType::from_byte(type_byte).ok_or(WireError::UnknownType(type_byte))?;
        let value = match kind {
            MessageType::PeerListRequest => Self::PeerList,
            MessageType::BlockListRequest => Self::BlockList,
            MessageType::FileSizeRequest => Self::FileSize,
            MessageType::BlockRequest | MessageType::DigestRequest => {
                match (
                    read_u16(input, field::BLOCK_START),
                    read_u16(input, field::BLOCK_END),
                ) {
                    (Some(start), Some(end)) if kind == MessageType::BlockRequest => {
                        Self::Block { start, end }
                    }
                    (Some(start), Some(end)) => Self::Digest { start, end },
                    _ => return Ok(Parsed::Incomplete),
                }
            }
            other => return Err(WireError::UnexpectedType(other)),
        };
        Ok(Parsed::Complete {
            value,
            len: value.buffer_len(),
        })
    }

    /// Bytes on the wire: 5 for a Block or Digest Request, 1 for the others.
    pub const fn buffer_len(&self) -> usize {
        match self {
            Self::Block { .. } | Self::Digest { .. } => field::BLOCK_END.end,
            _ => 1,
        }
    }

    /// Writes the request; returns the bytes written, or `BufferTooSmall`.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let type_byte = self.message_type() as u8;
        match *self {
            Self::Block { start, end } | Self::Digest { start, end } => {
                let [s0, s1] = start.to_be_bytes();
                let [e0, e1] = end.to_be_bytes();
                put(out, &[type_byte, s0, s1, e0, e1])
            }
            _ => put(out, &[type_byte]),
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Block { start, end } => write!(f, "Block Request {start}-{end}"),
            Self::Digest { start, end } => write!(f, "Digest Request {start}-{end}"),
            other => f.write_str(other.message_type().name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of PROTOCOL.md, byte for byte.
    const EXAMPLES: [(&[u8], Request); 6] = [
        (&[0x00], Request::PeerList),
        (&[0x02], Request::BlockList),
        (
            &[0x04, 0x00, 0x00, 0x00, 0x63],
            Request::Block { start: 0, end: 99 },
        ),
        (
            &[0x04, 0x01, 0x00, 0xff, 0xff],
            Request::Block {
                start: 256,
                end: 65535,
            },
        ),
        (&[0x07], Request::FileSize),
        (
            &[0x09, 0x00, 0x00, 0x00, 0x02],
            Request::Digest { start: 0, end: 2 },
        ),
    ];

    #[test]
    fn examples_parse_and_emit() {
        for (bytes, request) in EXAMPLES {
            assert_eq!(
                Request::parse(bytes),
                Ok(Parsed::Complete {
                    value: request,
                    len: bytes.len()
                })
            );
            let mut out = [0xAA; 8];
            assert_eq!(request.emit(&mut out), Ok(bytes.len()));
            assert_eq!(&out[..bytes.len()], bytes);
            assert_eq!(request.buffer_len(), bytes.len());
        }
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let bytes = [0x04, 0x00, 0x05, 0x00, 0x09];
        for cut in 0..bytes.len() {
            assert_eq!(Request::parse(&bytes[..cut]), Ok(Parsed::Incomplete));
        }
    }

    #[test]
    fn trailing_bytes_are_left_alone() {
        assert_eq!(
            Request::parse(&[0x07, 0x00, 0x04]),
            Ok(Parsed::Complete {
                value: Request::FileSize,
                len: 1
            })
        );
    }

    #[test]
    fn non_requests_are_refused_at_the_type_byte() {
        assert_eq!(Request::parse(&[0x42]), Err(WireError::UnknownType(0x42)));
        assert_eq!(
            Request::parse(&[0xff, 1, 2]),
            Err(WireError::UnknownType(0xff))
        );
        for response in [0x01, 0x03, 0x05, 0x06, 0x08, 0x0a, 0x7f] {
            let kind = MessageType::from_byte(response).unwrap();
            assert_eq!(
                Request::parse(&[response]),
                Err(WireError::UnexpectedType(kind))
            );
        }
    }

    #[test]
    fn emit_refuses_a_short_buffer() {
        let mut out = [0u8; 4];
        assert_eq!(
            Request::Block { start: 1, end: 2 }.emit(&mut out),
            Err(WireError::BufferTooSmall)
        );
        assert_eq!(
            Request::FileSize.emit(&mut []),
            Err(WireError::BufferTooSmall)
        );
    }
}
