//! A set of block numbers as a bitmap: what is done, what a peer holds, what is missing.

use p2p_core::BlockRange;
use std::fmt;

/// Blocks `0..len` of a file, each in or out of the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSet {
    bits: Vec<u8>,
    len: u32,
}

impl BlockSet {
    /// An empty set over `len` blocks (at most 65536).
    pub fn new(len: u32) -> Self {
        Self {
            bits: vec![0; len.div_ceil(8) as usize],
            len,
        }
    }

    /// A set over `len` blocks from its bitmap bytes (block n is bit n % 8 of byte n / 8);
    /// `None` when the length does not match.
    pub fn from_bytes(len: u32, mut bits: Vec<u8>) -> Option<Self> {
        if bits.len() != len.div_ceil(8) as usize {
            return None;
        }
        // Bits past the last block mean nothing; clear them so counts stay true.
        if let (Some(last), 1..=7) = (bits.last_mut(), len % 8) {
            *last &= (1u8 << (len % 8)) - 1;
        }
        Some(Self { bits, len })
    }

    pub fn from_ranges(len: u32, ranges: &[BlockRange]) -> Self {
        let mut set = Self::new(len);
        for range in ranges {
            for block in range.start()..=range.end() {
                set.insert(block);
            }
        }
        set
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// How many blocks the set is over (in it or not).
    pub fn block_count(&self) -> u32 {
        self.len
    }

    /// Whether every block of `0..block_count` is in the set.
    pub fn is_full(&self) -> bool {
        self.count() == self.len
    }

    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    pub fn contains(&self, block: u16) -> bool {
        let block = usize::from(block);
        self.bits
            .get(block / 8)
            .is_some_and(|byte| byte & (1 << (block % 8)) != 0)
    }

    /// Adds `block`; returns whether it was new.
    pub fn insert(&mut self, block: u16) -> bool {
        let index = usize::from(block);
        let was_in = self.contains(block);
        if let Some(byte) = self.bits.get_mut(index / 8) {
            *byte |= 1 << (index % 8);
        }
        !was_in
    }

    pub fn remove(&mut self, block: u16) {
        let index = usize::from(block);
        if let Some(byte) = self.bits.get_mut(index / 8) {
            *byte &= !(1 << (index % 8));
        }
    }

    pub fn count(&self) -> u32 {
        self.bits.iter().map(|byte| byte.count_ones()).sum()
    }

    /// Every block of `0..len` not in this set.
    pub fn complement(&self) -> Self {
        let mut all = Self::new(self.len);
        for block in (0..self.len).filter_map(|block| u16::try_from(block).ok()) {
            all.insert(block);
        }
        all.minus(self)
    }

    /// Blocks in this set and not in `other`.
    pub fn minus(&self, other: &BlockSet) -> Self {
        let mut result = self.clone();
        for (byte, other_byte) in result.bits.iter_mut().zip(&other.bits) {
            *byte &= !other_byte;
        }
        result
    }

    /// Adds every block of `other`.
    pub fn union_with(&mut self, other: &BlockSet) {
        for (byte, other_byte) in self.bits.iter_mut().zip(&other.bits) {
            *byte |= other_byte;
        }
    }

    /// The set as sorted, coalesced ranges.
    pub fn ranges(&self) -> Vec<BlockRange> {
        let mut ranges = Vec::new();
        let mut start: Option<u16> = None;
        for block in 0..self.len {
            let Ok(block) = u16::try_from(block) else {
                break;
            };
            match (self.contains(block), start) {
                (true, None) => start = Some(block),
                (false, Some(first)) => {
                    ranges.extend(BlockRange::new(first, block - 1));
                    start = None;
                }
                _ => {}
            }
        }
        if let (Some(first), Some(last)) = (start, self.len.checked_sub(1)) {
            ranges.extend(
                u16::try_from(last)
                    .ok()
                    .and_then(|last| BlockRange::new(first, last)),
            );
        }
        ranges
    }
}

/// Ranges in their text form, `0-99,200-299`, or `none`.
pub struct RangesText<'a>(pub &'a [BlockRange]);

impl fmt::Display for RangesText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (index, range) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{range}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: u16, end: u16) -> BlockRange {
        BlockRange::new(start, end).unwrap_or(BlockRange::single(start))
    }

    #[test]
    fn ranges_round_trip_and_complement() {
        let set = BlockSet::from_ranges(20, &[range(0, 3), range(5, 5), range(18, 19)]);
        assert_eq!(set.count(), 7);
        assert_eq!(set.ranges(), vec![range(0, 3), range(5, 5), range(18, 19)]);
        assert_eq!(set.complement().ranges(), vec![range(4, 4), range(6, 17)]);
        assert_eq!(RangesText(&set.ranges()).to_string(), "0-3,5,18-19");
        assert_eq!(RangesText(&[]).to_string(), "none");
    }

    #[test]
    fn minus_and_union() {
        let all = BlockSet::from_ranges(10, &[range(0, 9)]);
        let some = BlockSet::from_ranges(10, &[range(2, 4)]);
        assert_eq!(all.minus(&some).ranges(), vec![range(0, 1), range(5, 9)]);
        let mut union = some.clone();
        union.union_with(&BlockSet::from_ranges(10, &[range(5, 6)]));
        assert_eq!(union.ranges(), vec![range(2, 6)]);
        assert!(BlockSet::from_bytes(10, vec![0; 1]).is_none());
        assert_eq!(
            BlockSet::from_bytes(10, vec![0xff, 0xff]).map(|set| set.count()),
            Some(10)
        );
        assert!(BlockSet::new(0).ranges().is_empty());
    }
}
