//! Block geometry: both sides derive the block size from the file size alone.

use crate::ranges::BlockRange;

/// The smallest block size, in bytes.
pub const MIN_BLOCK_SIZE: u32 = 1024;
/// A file never has more blocks than this, so every block number fits in 16 bits.
pub const MAX_BLOCK_COUNT: u32 = 65536;

/// How a file of a given size is cut into blocks.
///
/// The block size is the smallest power of two, at least [`MIN_BLOCK_SIZE`], for which the
/// file fits in [`MAX_BLOCK_COUNT`] blocks: 1 KiB up to 64 MiB, 64 KiB for 4 GiB - 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Geometry {
    file_size: u32,
    block_shift: u32,
}

/// A run of bytes of the file: `len` bytes from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ByteSpan {
    /// First byte, from the start of the file.
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
}

impl Geometry {
    /// The geometry of a file of `file_size` bytes.
    pub const fn new(file_size: u32) -> Self {
        let mut block_shift = MIN_BLOCK_SIZE.trailing_zeros();
        // ceil(size / 2^shift) > 65536  <=>  size > 65536 << shift, computed in u64.
        while (file_size as u64) > ((MAX_BLOCK_COUNT as u64) << block_shift) {
            block_shift += 1;
        }
        Self {
            file_size,
            block_shift,
        }
    }

    /// The file size in bytes.
    pub const fn file_size(&self) -> u32 {
        self.file_size
    }

    /// The block size in bytes: a power of two, 1024 to 65536.
    pub const fn block_size(&self) -> u32 {
        1 << self.block_shift
    }

    /// ceil(file size / block size); 0 for an empty file, at most 65536.
    pub const fn block_count(&self) -> u32 {
        let size = self.file_size as u64;
        ((size + (1u64 << self.block_shift) - 1) >> self.block_shift) as u32
    }

    /// Whether every block of `range` exists in the file.
    pub const fn contains(&self, range: BlockRange) -> bool {
        (range.end() as u32) < self.block_count()
    }

    /// The bytes blocks `range` cover, the last block of the file at its true length.
    /// `None` when the range reaches past the last block.
    pub const fn span(&self, range: BlockRange) -> Option<ByteSpan> {
        if !self.contains(range) {
            return None;
        }
        let start = (range.start() as u64) << self.block_shift;
        let block_end = (range.end() as u64 + 1) << self.block_shift;
        let file_end = self.file_size as u64;
        let end = if block_end < file_end {
            block_end
        } else {
            file_end
        };
        // start < end <= file_size <= u32::MAX: both fit.
        Some(ByteSpan {
            offset: start as u32,
            len: (end - start) as u32,
        })
    }

    /// The whole file as one range, `None` for an empty file.
    pub const fn all_blocks(&self) -> Option<BlockRange> {
        match self.block_count() {
            0 => None,
            count => BlockRange::new(0, (count - 1) as u16),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: u16, end: u16) -> BlockRange {
        BlockRange::new(start, end).unwrap()
    }

    #[test]
    fn block_size_rule() {
        assert_eq!(Geometry::new(0).block_size(), 1024);
        assert_eq!(Geometry::new(0).block_count(), 0);
        assert_eq!(Geometry::new(1).block_count(), 1);
        assert_eq!(Geometry::new(1024).block_count(), 1);
        assert_eq!(Geometry::new(1025).block_count(), 2);
        let sixty_four_mib = 64 << 20;
        assert_eq!(Geometry::new(sixty_four_mib).block_size(), 1024);
        assert_eq!(Geometry::new(sixty_four_mib).block_count(), 65536);
        assert_eq!(Geometry::new(sixty_four_mib + 1).block_size(), 2048);
        assert_eq!(Geometry::new(sixty_four_mib + 1).block_count(), 32769);
        assert_eq!(Geometry::new(u32::MAX).block_size(), 65536);
        assert_eq!(Geometry::new(u32::MAX).block_count(), 65536);
    }

    #[test]
    fn spans_count_the_last_block_at_its_true_length() {
        let g = Geometry::new(2500);
        assert_eq!(g.block_count(), 3);
        assert_eq!(
            g.span(range(0, 0)),
            Some(ByteSpan {
                offset: 0,
                len: 1024
            })
        );
        assert_eq!(
            g.span(range(2, 2)),
            Some(ByteSpan {
                offset: 2048,
                len: 452
            })
        );
        assert_eq!(
            g.span(range(0, 2)),
            Some(ByteSpan {
                offset: 0,
                len: 2500
            })
        );
        assert_eq!(g.span(range(1, 3)), None);
        assert_eq!(Geometry::new(0).span(range(0, 0)), None);
    }

    #[test]
    fn largest_file_spans_fit() {
        let g = Geometry::new(u32::MAX);
        assert_eq!(g.all_blocks(), Some(range(0, 65535)));
        assert_eq!(
            g.span(range(0, 65535)),
            Some(ByteSpan {
                offset: 0,
                len: u32::MAX
            })
        );
        assert_eq!(
            g.span(range(65535, 65535)),
            Some(ByteSpan {
                offset: 65535 << 16,
                len: 65535
            })
        );
    }
}
