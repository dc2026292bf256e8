//! The fixed front of each response; list entries and block data follow it.

use super::{
    MAX_REASON_LEN, MessageType, Parsed, Reason, WireError, field, put, read_u16, read_u32,
};
use crate::ranges::BlockRange;

/// Bytes of one Block List Response entry: start and end block numbers.
pub const RANGE_ENTRY_LEN: usize = 4;

/// Everything of a response before its list entries or block data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ResponseHeader<'a> {
    /// Followed by `count` 6-byte [`PeerAddr`](super::PeerAddr) entries.
    PeerList {
        /// Number of peer entries that follow.
        count: u16,
    },
    /// Followed by `count` 4-byte range entries.
    BlockList {
        /// Number of range entries that follow.
        count: u16,
    },
    /// Followed by the bytes of the requested blocks; their length is known from the request
    /// and the file size, not sent.
    BlockSuccess,
    /// Block Response Failure: why a Block or Digest Request was refused.
    BlockFailure(Reason<'a>),
    /// File Size Response: the size of the whole file in bytes.
    FileSize(u32),
    /// Followed by 32 bytes for each block asked for: the manifest's digests, in order.
    DigestSuccess,
    /// Error: why the connection is being closed (3.7).
    Error(Reason<'a>),
}

impl<'a> ResponseHeader<'a> {
    /// Longest header on the wire: a type byte, a 255-byte reason and its NUL.
    pub const MAX_LEN: usize = field::REASON + MAX_REASON_LEN + 1;

    /// Parses one header from the front of `input`; a reason is borrowed from it.
    ///
    /// An unknown type byte, a request's type and a reason that is empty, not UTF-8 or still
    /// without its NUL after 255 bytes can never become a valid header: each is an error at
    /// once. A list count is returned as sent: the receiver checks it against its own limit
    /// (32767 at most, [`MAX_LIST_COUNT`](super::MAX_LIST_COUNT)), which names the limit in its error.
    pub fn parse(input: &'a [u8]) -> Result<Parsed<ResponseHeader<'a>>, WireError> {
        let Some(&type_byte) = input.get(field::TYPE) else {
            return Ok(Parsed::Incomplete);
        };
        let kind = MessageType::from_byte(type_byte).ok_or(WireError::UnknownType(type_byte))?;
        let value = match kind {
            MessageType::PeerListResponse | MessageType::BlockListResponse => {
                let Some(count) = read_u16(input, field::LIST_COUNT) else {
                    return Ok(Parsed::Incomplete);
                };
                if kind == MessageType::PeerListResponse {
                    Self::PeerList { count }
                } else {
                    Self::BlockList { count }
                }
            }
            MessageType::BlockResponseSuccess => Self::BlockSuccess,
            MessageType::DigestResponse => Self::DigestSuccess,
            MessageType::FileSizeResponse => match read_u32(input, field::FILE_SIZE) {
                Some(size) => Self::FileSize(size),
                None => return Ok(Parsed::Incomplete),
            },
            MessageType::BlockResponseFailure | MessageType::Error => {
                let text = input.get(field::REASON..).unwrap_or_default();
                let Some(nul) = text.iter().position(|&byte| byte == 0) else {
                    if text.len() > MAX_REASON_LEN {
                        return Err(WireError::ReasonTooLong);
                    }
                    return Ok(Parsed::Incomplete);
                };
                let reason = Reason::from_bytes(text.get(..nul).unwrap_or_default())?;
                if kind == MessageType::Error {
                    Self::Error(reason)
                } else {
                    Self::BlockFailure(reason)
                }
            }
            request => return Err(WireError::UnexpectedType(request)),
        };
        Ok(Parsed::Complete {
            value,
            len: value.buffer_len(),
        })
    }

    /// The type byte this header starts with.
    pub const fn message_type(&self) -> MessageType {
        match self {
            Self::PeerList { .. } => MessageType::PeerListResponse,
            Self::BlockList { .. } => MessageType::BlockListResponse,
            Self::BlockSuccess => MessageType::BlockResponseSuccess,
            Self::BlockFailure(_) => MessageType::BlockResponseFailure,
            Self::FileSize(_) => MessageType::FileSizeResponse,
            Self::DigestSuccess => MessageType::DigestResponse,
            Self::Error(_) => MessageType::Error,
        }
    }

    /// Bytes of the header on the wire, reason and NUL included.
    pub const fn buffer_len(&self) -> usize {
        match self {
            Self::PeerList { .. } | Self::BlockList { .. } => field::LIST_COUNT.end,
            Self::BlockSuccess | Self::DigestSuccess => 1,
            Self::BlockFailure(reason) | Self::Error(reason) => field::REASON + reason.wire_len(),
            Self::FileSize(_) => field::FILE_SIZE.end,
        }
    }

    /// Writes the header; returns the bytes written, or `BufferTooSmall` having written nothing.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        if out.len() < self.buffer_len() {
            return Err(WireError::BufferTooSmall);
        }
        let type_byte = self.message_type() as u8;
        match *self {
            Self::PeerList { count } | Self::BlockList { count } => {
                let [hi, lo] = count.to_be_bytes();
                put(out, &[type_byte, hi, lo])
            }
            Self::BlockSuccess | Self::DigestSuccess => put(out, &[type_byte]),
            Self::BlockFailure(reason) | Self::Error(reason) => {
                put(out, &[type_byte])?;
                let rest = out
                    .get_mut(field::REASON..)
                    .ok_or(WireError::BufferTooSmall)?;
                Ok(field::REASON + reason.emit(rest)?)
            }
            Self::FileSize(size) => {
                let [a, b, c, d] = size.to_be_bytes();
                put(out, &[type_byte, a, b, c, d])
            }
        }
    }
}

/// Writes one Block List Response entry.
pub fn emit_range_entry(range: BlockRange, out: &mut [u8]) -> Result<usize, WireError> {
    let [s0, s1] = range.start().to_be_bytes();
    let [e0, e1] = range.end().to_be_bytes();
    put(out, &[s0, s1, e0, e1])
}

/// Reads one Block List Response entry as sent, `(start, end)`; `None` if `input` is shorter.
pub fn parse_range_entry(input: &[u8]) -> Option<(u16, u16)> {
    let bytes: [u8; RANGE_ENTRY_LEN] = input.get(..RANGE_ENTRY_LEN)?.try_into().ok()?;
    let [s0, s1, e0, e1] = bytes;
    Some((u16::from_be_bytes([s0, s1]), u16::from_be_bytes([e0, e1])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::PeerAddr;

    fn emitted(header: ResponseHeader<'_>) -> ([u8; 300], usize) {
        let mut out = [0u8; 300];
        let len = header.emit(&mut out).unwrap();
        assert_eq!(len, header.buffer_len());
        (out, len)
    }

    #[test]
    fn headers_match_the_protocol_examples() {
        let (out, len) = emitted(ResponseHeader::PeerList { count: 2 });
        assert_eq!(&out[..len], &[0x01, 0x00, 0x02]);
        let (out, len) = emitted(ResponseHeader::BlockList { count: 2 });
        assert_eq!(&out[..len], &[0x03, 0x00, 0x02]);
        let (out, len) = emitted(ResponseHeader::BlockSuccess);
        assert_eq!(&out[..len], &[0x05]);
        let (out, len) = emitted(ResponseHeader::DigestSuccess);
        assert_eq!(&out[..len], &[0x0a]);
        let (out, len) = emitted(ResponseHeader::FileSize(2500));
        assert_eq!(&out[..len], &[0x08, 0x00, 0x00, 0x09, 0xc4]);
        let (out, len) = emitted(ResponseHeader::BlockFailure(
            Reason::new("not held").unwrap(),
        ));
        assert_eq!(&out[..len], b"\x06not held\0");
        let (out, len) = emitted(ResponseHeader::Error(Reason::new("bad type").unwrap()));
        assert_eq!(&out[..len], b"\x7fbad type\0");
    }

    #[test]
    fn headers_parse_as_emitted() {
        let reason = Reason::new("not held").unwrap();
        for header in [
            ResponseHeader::PeerList { count: 2 },
            ResponseHeader::BlockList { count: 32767 },
            ResponseHeader::BlockSuccess,
            ResponseHeader::DigestSuccess,
            ResponseHeader::FileSize(2500),
            ResponseHeader::BlockFailure(reason),
            ResponseHeader::Error(reason),
        ] {
            let (out, len) = emitted(header);
            for short in 0..len {
                assert_eq!(ResponseHeader::parse(&out[..short]), Ok(Parsed::Incomplete));
            }
            let parsed = ResponseHeader::parse(&out[..len + 3]);
            assert_eq!(parsed, Ok(Parsed::Complete { value: header, len }));
        }
    }

    #[test]
    fn headers_that_can_never_be_valid_are_errors_at_once() {
        assert_eq!(
            ResponseHeader::parse(&[0x42]),
            Err(WireError::UnknownType(0x42))
        );
        assert_eq!(
            ResponseHeader::parse(&[0x04]),
            Err(WireError::UnexpectedType(MessageType::BlockRequest))
        );
        assert_eq!(
            ResponseHeader::parse(b"\x7f\0"),
            Err(WireError::EmptyReason)
        );
        assert_eq!(
            ResponseHeader::parse(b"\x06\xff\0"),
            Err(WireError::ReasonNotUtf8)
        );
        let mut long = [b'x'; 257];
        long[0] = 0x7f;
        assert_eq!(ResponseHeader::parse(&long[..256]), Ok(Parsed::Incomplete));
        assert_eq!(ResponseHeader::parse(&long), Err(WireError::ReasonTooLong));
        long[256] = 0;
        assert!(matches!(
            ResponseHeader::parse(&long),
            Ok(Parsed::Complete { len: 257, .. })
        ));
    }

    #[test]
    fn entries_match_the_protocol_examples() {
        let mut out = [0u8; 6];
        PeerAddr::new([10, 0, 0, 3], 8888).emit(&mut out).unwrap();
        assert_eq!(out, [0x0a, 0x00, 0x00, 0x03, 0x22, 0xb8]);
        assert_eq!(
            PeerAddr::parse(&out),
            Some(PeerAddr::new([10, 0, 0, 3], 8888))
        );
        assert_eq!(PeerAddr::parse(&out[..5]), None);
        let mut out = [0u8; 4];
        emit_range_entry(BlockRange::new(200, 299).unwrap(), &mut out).unwrap();
        assert_eq!(out, [0x00, 0xc8, 0x01, 0x2b]);
        assert_eq!(parse_range_entry(&out), Some((200, 299)));
    }

    #[test]
    fn reasons_are_checked() {
        assert_eq!(Reason::new(""), Err(WireError::EmptyReason));
        assert_eq!(Reason::new("a\0b"), Err(WireError::ReasonHasNul));
        let long = [b'x'; 256];
        assert_eq!(
            Reason::new(core::str::from_utf8(&long).unwrap()),
            Err(WireError::ReasonTooLong)
        );
        assert!(Reason::new(core::str::from_utf8(&long[..255]).unwrap()).is_ok());
        assert_eq!(Reason::from_bytes(&[0xff]), Err(WireError::ReasonNotUtf8));
    }

    #[test]
    fn emit_never_writes_past_the_buffer() {
        let header = ResponseHeader::Error(Reason::new("bad").unwrap());
        let mut out = [0u8; 4];
        assert_eq!(header.emit(&mut out), Err(WireError::BufferTooSmall));
        assert_eq!(out, [0; 4]);
    }
}
