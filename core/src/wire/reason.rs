//! The text of a Block Response Failure or an Error.

use super::{WireError, put};
use core::fmt;

/// Longest reason text, in bytes before the NUL.
pub const MAX_REASON_LEN: usize = 255;

/// A valid reason: UTF-8, 1 to 255 bytes, no NUL. Sent followed by a NUL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Reason<'a>(&'a str);

impl<'a> Reason<'a> {
    /// Checks `text`: empty, over 255 bytes, or holding a NUL is an error.
    pub const fn new(text: &'a str) -> Result<Self, WireError> {
        let bytes = text.as_bytes();
        if bytes.is_empty() {
            return Err(WireError::EmptyReason);
        }
        if bytes.len() > MAX_REASON_LEN {
            return Err(WireError::ReasonTooLong);
        }
        let mut rest = bytes;
        while let [first, tail @ ..] = rest {
            if *first == 0 {
                return Err(WireError::ReasonHasNul);
            }
            rest = tail;
        }
        Ok(Self(text))
    }

    /// Validates the bytes before a NUL as they arrived.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, WireError> {
        let text = core::str::from_utf8(bytes).map_err(|_| WireError::ReasonNotUtf8)?;
        Self::new(text)
    }

    /// The text, without its NUL.
    pub const fn as_str(&self) -> &'a str {
        self.0
    }

    /// Bytes on the wire: the text and its NUL.
    pub const fn wire_len(&self) -> usize {
        self.0.len() + 1
    }

    /// Writes the text and its NUL.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        if out.len() < self.wire_len() {
            return Err(WireError::BufferTooSmall);
        }
        let len = put(out, self.0.as_bytes())?;
        put(out.get_mut(len..).unwrap_or_default(), &[0])?;
        Ok(self.wire_len())
    }
}

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}
