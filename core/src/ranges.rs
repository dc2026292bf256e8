//! Sets of block numbers as sorted, coalesced inclusive ranges, and their text form
//! `0-99,200-299` used on command lines.

use core::fmt;
use core::str::FromStr;

/// Blocks `start..=end`, with `start <= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BlockRange {
    start: u16,
    end: u16,
}

impl BlockRange {
    /// `None` when `start > end`.
    pub const fn new(start: u16, end: u16) -> Option<Self> {
        if start <= end {
            Some(Self { start, end })
        } else {
            None
        }
    }

    /// The one block `block`.
    pub const fn single(block: u16) -> Self {
        Self {
            start: block,
            end: block,
        }
    }

    /// First block number.
    pub const fn start(&self) -> u16 {
        self.start
    }

    /// Last block number, inclusive.
    pub const fn end(&self) -> u16 {
        self.end
    }

    /// Number of blocks, 1 to 65536.
    pub const fn len(&self) -> u32 {
        self.end as u32 - self.start as u32 + 1
    }

    /// A range is never empty; provided for API symmetry with `len`.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// Whether `block` is in the range.
    pub const fn contains(&self, block: u16) -> bool {
        self.start <= block && block <= self.end
    }

    /// Whether `self` covers every block of `other`.
    pub const fn covers(&self, other: BlockRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// Whether the two ranges overlap or touch, so their union is one range.
    const fn joins(&self, other: BlockRange) -> bool {
        (self.start as u32) <= other.end as u32 + 1 && (other.start as u32) <= self.end as u32 + 1
    }
}

impl fmt::Display for BlockRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// There is no room for another range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CapacityError;

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("too many separate block ranges")
    }
}

/// A set of blocks held in at most `N` ranges, kept sorted and coalesced: no two ranges
/// overlap or touch. This is exactly the form a Block List Response carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockRanges<const N: usize> {
    ranges: heapless::Vec<BlockRange, N>,
}

impl<const N: usize> BlockRanges<N> {
    /// The empty set.
    pub const fn new() -> Self {
        Self {
            ranges: heapless::Vec::new(),
        }
    }

    /// All blocks `0..count`; empty for `count == 0`.
    pub fn all(count: u32) -> Result<Self, CapacityError> {
        let mut set = Self::new();
        if let Some(last) = count.checked_sub(1) {
            let end = u16::try_from(last).unwrap_or(u16::MAX);
            set.insert(BlockRange { start: 0, end })?;
        }
        Ok(set)
    }

    /// The ranges, sorted by start.
    pub fn as_slice(&self) -> &[BlockRange] {
        &self.ranges
    }

    /// The ranges in order, lowest first.
    pub fn iter(&self) -> core::slice::Iter<'_, BlockRange> {
        self.ranges.iter()
    }

    /// Whether the set holds no block.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Total number of blocks in the set.
    pub fn block_count(&self) -> u32 {
        self.ranges.iter().map(BlockRange::len).sum()
    }

    /// Whether every block of `range` is in the set.
    pub fn covers(&self, range: BlockRange) -> bool {
        // Coalesced: a covered range lies inside a single stored range.
        self.ranges.iter().any(|held| held.covers(range))
    }

    /// Whether `block` is in the set.
    pub fn contains(&self, block: u16) -> bool {
        self.covers(BlockRange::single(block))
    }

    /// The highest block in the set.
    pub fn last_block(&self) -> Option<u16> {
        self.ranges.last().map(BlockRange::end)
    }

    /// Adds `range`, merging it with every range it overlaps or touches. On
    /// `CapacityError` the set is unchanged.
    pub fn insert(&mut self, range: BlockRange) -> Result<(), CapacityError> {
        let mut merged = range;
        let mut first = self.ranges.len();
        let mut count = 0;
        for (index, held) in self.ranges.iter().enumerate() {
            if held.joins(merged) {
                if count == 0 {
                    first = index;
                }
                merged.start = merged.start.min(held.start);
                merged.end = merged.end.max(held.end);
                count += 1;
            } else if held.start > merged.end {
                if count == 0 {
                    first = index;
                }
                break;
            }
        }
        if count == 0 {
            return self.ranges.insert(first, merged).map_err(|_| CapacityError);
        }
        if let Some(slot) = self.ranges.get_mut(first) {
            *slot = merged;
        }
        for _ in 1..count {
            self.ranges.remove(first + 1);
        }
        Ok(())
    }
}

impl<const N: usize> fmt::Display for BlockRanges<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, range) in self.ranges.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{range}")?;
        }
        Ok(())
    }
}

#[cfg(feature = "defmt")]
impl<const N: usize> defmt::Format for BlockRanges<N> {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{=[?]}", self.as_slice())
    }
}

/// Why a block-range text such as `0-99,200-299` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ParseRangesError {
    /// The text, or one item between commas, is empty.
    Empty,
    /// An item is not `N` or `N-M` with block numbers from 0 to 65535.
    NotABlockNumber,
    /// An item's start is after its end, as in `9-3`.
    Reversed {
        /// The item's first number.
        start: u16,
        /// The item's second number, below `start`.
        end: u16,
    },
    /// More separate ranges than the set can hold.
    TooManyRanges,
}

impl fmt::Display for ParseRangesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty block range (expected e.g. 0-99,200-299)"),
            Self::NotABlockNumber => f.write_str(
                "block ranges are N or N-M separated by commas, block numbers 0 to 65535",
            ),
            Self::Reversed { start, end } => {
                write!(f, "block range {start}-{end} starts after it ends")
            }
            Self::TooManyRanges => f.write_str("too many separate block ranges"),
        }
    }
}

impl<const N: usize> FromStr for BlockRanges<N> {
    type Err = ParseRangesError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut set = Self::new();
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(ParseRangesError::Empty);
            }
            let (start, end) = match item.split_once('-') {
                Some((start, end)) => (parse_block(start)?, parse_block(end)?),
                None => {
                    let block = parse_block(item)?;
                    (block, block)
                }
            };
            let range =
                BlockRange::new(start, end).ok_or(ParseRangesError::Reversed { start, end })?;
            set.insert(range)
                .map_err(|CapacityError| ParseRangesError::TooManyRanges)?;
        }
        Ok(set)
    }
}

fn parse_block(text: &str) -> Result<u16, ParseRangesError> {
    let text = text.trim();
    // u16::from_str accepts a leading '+'; block numbers are plain digits.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseRangesError::NotABlockNumber);
    }
    text.parse().map_err(|_| ParseRangesError::NotABlockNumber)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::string::ToString;
    use std::vec::Vec;

    type Set = BlockRanges<8>;

    fn r(start: u16, end: u16) -> BlockRange {
        BlockRange::new(start, end).unwrap()
    }

    #[test]
    fn insert_keeps_sorted_and_coalesced() {
        let mut set = Set::new();
        set.insert(r(10, 20)).unwrap();
        set.insert(r(0, 3)).unwrap();
        set.insert(r(30, 40)).unwrap();
        assert_eq!(set.as_slice(), &[r(0, 3), r(10, 20), r(30, 40)]);
        set.insert(r(4, 9)).unwrap(); // touches both neighbours
        assert_eq!(set.as_slice(), &[r(0, 20), r(30, 40)]);
        set.insert(r(15, 35)).unwrap();
        assert_eq!(set.as_slice(), &[r(0, 40)]);
        set.insert(r(65535, 65535)).unwrap();
        assert_eq!(set.as_slice(), &[r(0, 40), r(65535, 65535)]);
        assert_eq!(set.block_count(), 42);
        assert!(set.covers(r(5, 40)));
        assert!(!set.covers(r(40, 41)));
    }

    #[test]
    fn full_set_is_unchanged_on_capacity_error() {
        let mut set = BlockRanges::<2>::new();
        set.insert(r(0, 0)).unwrap();
        set.insert(r(2, 2)).unwrap();
        assert_eq!(set.insert(r(4, 4)), Err(CapacityError));
        assert_eq!(set.as_slice(), &[r(0, 0), r(2, 2)]);
        set.insert(r(1, 1)).unwrap(); // merging still works when full
        assert_eq!(set.as_slice(), &[r(0, 2)]);
    }

    #[test]
    fn text_form_round_trips() {
        let set: Set = "200-299, 0-99,100,7".parse().unwrap();
        assert_eq!(set.as_slice(), &[r(0, 100), r(200, 299)]);
        assert_eq!(set.to_string(), "0-100,200-299");
        assert_eq!("5".parse::<Set>().unwrap().to_string(), "5");
    }

    #[test]
    fn text_form_errors_name_the_problem() {
        assert_eq!("".parse::<Set>(), Err(ParseRangesError::Empty));
        assert_eq!("1,,2".parse::<Set>(), Err(ParseRangesError::Empty));
        assert_eq!(
            "9-3".parse::<Set>(),
            Err(ParseRangesError::Reversed { start: 9, end: 3 })
        );
        assert_eq!(
            "65536".parse::<Set>(),
            Err(ParseRangesError::NotABlockNumber)
        );
        assert_eq!("+5".parse::<Set>(), Err(ParseRangesError::NotABlockNumber));
        assert_eq!(
            "1-2-3".parse::<Set>(),
            Err(ParseRangesError::NotABlockNumber)
        );
        assert_eq!("a".parse::<Set>(), Err(ParseRangesError::NotABlockNumber));
        assert_eq!(
            "0,2,4".parse::<BlockRanges<2>>(),
            Err(ParseRangesError::TooManyRanges)
        );
    }

    proptest! {
        #[test]
        fn insert_matches_a_plain_bitmap(ranges in proptest::collection::vec((0u16..300, 0u16..20), 0..12)) {
            let mut set = BlockRanges::<16>::new();
            let mut bitmap = [false; 320];
            for (start, extra) in ranges {
                set.insert(r(start, start + extra)).unwrap();
                for block in start..=start + extra {
                    bitmap[usize::from(block)] = true;
                }
            }
            let slice = set.as_slice();
            for pair in slice.windows(2) {
                prop_assert!(u32::from(pair[0].end()) + 1 < u32::from(pair[1].start()));
            }
            let expected: Vec<u16> = (0..320u16).filter(|&b| bitmap[usize::from(b)]).collect();
            let got: Vec<u16> = slice.iter().flat_map(|x| x.start()..=x.end()).collect();
            prop_assert_eq!(got, expected);
            let text = set.to_string();
            if !set.is_empty() {
                prop_assert_eq!(text.parse::<BlockRanges<16>>().unwrap(), set);
            }
        }
    }
}
