//! A fixed-capacity set of block numbers, one bit a block: what a filling node holds, or what
//! it knows a peer holds. Out-of-order arrival fragments a held set into many ranges, which a
//! bitmap stores in constant room.

use crate::ranges::BlockRange;

/// Blocks `0..8 * B`, each present or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockBitmap<const B: usize> {
    bits: [u8; B],
}

impl<const B: usize> Default for BlockBitmap<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const B: usize> BlockBitmap<B> {
    /// How many blocks the bitmap can hold.
    pub const CAPACITY: u32 = (B as u32).saturating_mul(8);

    /// An empty bitmap.
    pub const fn new() -> Self {
        Self { bits: [0; B] }
    }

    /// Removes every block.
    pub fn clear(&mut self) {
        self.bits = [0; B];
    }

    /// Whether `block` is present; `false` beyond the capacity.
    pub fn contains(&self, block: u16) -> bool {
        let index = usize::from(block);
        self.bits
            .get(index / 8)
            .is_some_and(|byte| byte & (1 << (index % 8)) != 0)
    }

    /// Adds `block`; `false` when it is beyond the capacity.
    pub fn insert(&mut self, block: u16) -> bool {
        let index = usize::from(block);
        match self.bits.get_mut(index / 8) {
            Some(byte) => {
                *byte |= 1 << (index % 8);
                true
            }
            None => false,
        }
    }

    /// Removes `block`; nothing happens beyond the capacity.
    pub fn remove(&mut self, block: u16) {
        let index = usize::from(block);
        if let Some(byte) = self.bits.get_mut(index / 8) {
            *byte &= !(1 << (index % 8));
        }
    }

    /// Adds every block of `range` that fits.
    pub fn insert_range(&mut self, range: BlockRange) {
        for block in range.start()..=range.end() {
            if !self.insert(block) {
                break;
            }
        }
    }

    /// Whether some block of this set is not in `other`: a byte at a time, where asking
    /// block by block would cost a call per block of the file.
    pub fn any_missing_from<const C: usize>(&self, other: &BlockBitmap<C>) -> bool {
        self.bits
            .iter()
            .enumerate()
            .any(|(index, &byte)| byte & !other.bits.get(index).copied().unwrap_or(0) != 0)
    }

    /// Whether every block below `count` is in this set or in `other`, a byte at a time.
    pub fn covers_first_with<const C: usize>(&self, other: &BlockBitmap<C>, count: u32) -> bool {
        let count = count.min(Self::CAPACITY) as usize;
        let byte = |index: usize| {
            self.bits.get(index).copied().unwrap_or(0) | other.bits.get(index).copied().unwrap_or(0)
        };
        let tail_mask = (1u16 << (count % 8)) as u8 - 1;
        (0..count / 8).all(|index| byte(index) == 0xFF) && byte(count / 8) & tail_mask == tail_mask
    }

    /// Whether every block of `range` is present.
    pub fn covers(&self, range: BlockRange) -> bool {
        (range.start()..=range.end()).all(|block| self.contains(block))
    }

    /// The first run of present blocks that starts after `after` (from block 0 for `None`).
    pub fn run_after(&self, after: Option<u16>) -> Option<BlockRange> {
        let from = after.map_or(0, |block| u32::from(block) + 1);
        let start = (from..Self::CAPACITY).find(|&b| self.contains(b as u16))?;
        let end = (start..Self::CAPACITY)
            .take_while(|&b| self.contains(b as u16))
            .last()
            .unwrap_or(start);
        // Both are below CAPACITY and block numbers, so at most 65535 for any B <= 8192.
        BlockRange::new(u16::try_from(start).ok()?, u16::try_from(end).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_found_in_order() {
        let mut set = BlockBitmap::<4>::new();
        assert_eq!(BlockBitmap::<4>::CAPACITY, 32);
        for block in [0, 1, 2, 5, 9, 10, 31] {
            assert!(set.insert(block));
        }
        assert!(!set.insert(32));
        assert_eq!(set.run_after(None), BlockRange::new(0, 2));
        assert_eq!(set.run_after(Some(2)), BlockRange::new(5, 5));
        assert_eq!(set.run_after(Some(5)), BlockRange::new(9, 10));
        assert_eq!(set.run_after(Some(10)), BlockRange::new(31, 31));
        assert_eq!(set.run_after(Some(31)), None);
        set.remove(1);
        assert!(!set.contains(1));
        assert!(!set.covers(BlockRange::new(0, 2).unwrap()));
        set.insert_range(BlockRange::new(28, 40).unwrap());
        assert_eq!(set.run_after(Some(10)), BlockRange::new(28, 31));
    }

    #[test]
    fn a_set_knows_whether_another_lacks_any_of_it() {
        let mut peer = BlockBitmap::<4>::new();
        let mut held = BlockBitmap::<2>::new();
        assert!(!peer.any_missing_from(&held), "an empty set lacks nothing");
        peer.insert_range(BlockRange::new(3, 12).unwrap());
        assert!(peer.any_missing_from(&held));
        held.insert_range(BlockRange::new(0, 15).unwrap());
        assert!(!peer.any_missing_from(&held));
        // Beyond the smaller set's capacity, every block counts as lacking there.
        peer.insert(20);
        assert!(peer.any_missing_from(&held));
    }

    #[test]
    fn two_sets_together_cover_the_first_blocks_or_not() {
        let mut verified = BlockBitmap::<4>::new();
        let mut asked = BlockBitmap::<2>::new();
        assert!(
            verified.covers_first_with(&asked, 0),
            "no blocks: nothing to cover"
        );
        assert!(!verified.covers_first_with(&asked, 1));
        verified.insert_range(BlockRange::new(0, 6).unwrap());
        assert!(!verified.covers_first_with(&asked, 11));
        asked.insert_range(BlockRange::new(7, 9).unwrap());
        assert!(
            !verified.covers_first_with(&asked, 11),
            "block 10 is in neither"
        );
        assert!(verified.covers_first_with(&asked, 10));
        // Blocks from `count` on do not matter, nor does the smaller set's capacity.
        verified.insert(10);
        assert!(verified.covers_first_with(&asked, 11));
        verified.insert_range(BlockRange::new(11, 31).unwrap());
        assert!(verified.covers_first_with(&asked, 32));
        assert!(
            verified.covers_first_with(&asked, 40),
            "counted up to the capacity"
        );
    }

    #[test]
    fn the_largest_bitmap_holds_block_65535() {
        let mut set = BlockBitmap::<8192>::new();
        assert!(set.insert(65535));
        assert_eq!(set.run_after(Some(65534)), Some(BlockRange::single(65535)));
    }
}
