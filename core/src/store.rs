//! Where served bytes come from: flash, memory or a file on disk.

use crate::geometry::Geometry;
use crate::ranges::{BlockRange, BlockRanges, CapacityError};
use core::fmt;

/// Reading from the store failed (an I/O error on disk, say). The connection that was being
/// served cannot continue, since a Block Response Success has no way to report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StoreError;

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("reading the served file failed")
    }
}

/// A file, or part of one, that a server serves.
pub trait BlockStore {
    /// Size of the whole file in bytes, even where only some blocks are held.
    fn file_size(&self) -> u32;

    /// The blocks held, sorted and coalesced, all within the file's block count.
    fn held(&self) -> &[BlockRange];

    /// Fills `buf` with the file's bytes from `offset`. Only called for bytes of held blocks,
    /// and never past the end of the file.
    fn read_at(&self, offset: u32, buf: &mut [u8]) -> Result<(), StoreError>;
}

/// Why a store could not be made from its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StoreSetupError {
    /// Files are at most 4 GiB - 1 bytes (the File Size Response has 32 bits).
    FileTooLarge,
    /// A held range reaches past the file's last block.
    RangeBeyondFile { range: BlockRange, block_count: u32 },
    /// More separate ranges than the store can hold.
    TooManyRanges,
}

impl fmt::Display for StoreSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FileTooLarge => f.write_str("file is larger than 4 GiB - 1 bytes"),
            Self::RangeBeyondFile { range, block_count } => write!(
                f,
                "block range {range} is beyond the file's {block_count} blocks (0-{})",
                block_count.saturating_sub(1)
            ),
            Self::TooManyRanges => f.write_str("too many separate block ranges"),
        }
    }
}

impl From<CapacityError> for StoreSetupError {
    fn from(_: CapacityError) -> Self {
        Self::TooManyRanges
    }
}

/// Checks that `held` lies inside a file of `file_size` bytes, or says which range does not.
pub fn check_held(file_size: u32, held: &[BlockRange]) -> Result<(), StoreSetupError> {
    let geometry = Geometry::new(file_size);
    match held.iter().find(|range| !geometry.contains(**range)) {
        Some(&range) => Err(StoreSetupError::RangeBeyondFile {
            range,
            block_count: geometry.block_count(),
        }),
        None => Ok(()),
    }
}

/// A file held in memory or flash, with up to `N` separate held ranges.
#[derive(Debug, Clone)]
pub struct SliceStore<'a, const N: usize = 8> {
    data: &'a [u8],
    file_size: u32,
    held: BlockRanges<N>,
}

impl<'a, const N: usize> SliceStore<'a, N> {
    /// Serves every block of `data`.
    pub fn new(data: &'a [u8]) -> Result<Self, StoreSetupError> {
        let file_size = u32::try_from(data.len()).map_err(|_| StoreSetupError::FileTooLarge)?;
        let held = BlockRanges::all(Geometry::new(file_size).block_count())?;
        Ok(Self {
            data,
            file_size,
            held,
        })
    }

    /// Serves only the blocks in `held`, which must lie inside the file.
    pub fn with_held(data: &'a [u8], held: BlockRanges<N>) -> Result<Self, StoreSetupError> {
        let mut store = Self::new(data)?;
        check_held(store.file_size, held.as_slice())?;
        store.held = held;
        Ok(store)
    }
}

impl<const N: usize> BlockStore for SliceStore<'_, N> {
    fn file_size(&self) -> u32 {
        self.file_size
    }

    fn held(&self) -> &[BlockRange] {
        self.held.as_slice()
    }

    fn read_at(&self, offset: u32, buf: &mut [u8]) -> Result<(), StoreError> {
        let start = usize::try_from(offset).map_err(|_| StoreError)?;
        let end = start.checked_add(buf.len()).ok_or(StoreError)?;
        buf.copy_from_slice(self.data.get(start..end).ok_or(StoreError)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_store_serves_all_or_a_checked_part() {
        let data = [7u8; 3000];
        let store = SliceStore::<4>::new(&data).unwrap();
        assert_eq!(store.file_size(), 3000);
        assert_eq!(store.held(), &[BlockRange::new(0, 2).unwrap()]);
        let mut buf = [0u8; 10];
        store.read_at(2990, &mut buf).unwrap();
        assert_eq!(buf, [7; 10]);
        assert_eq!(store.read_at(2991, &mut buf), Err(StoreError));

        let part: BlockRanges<4> = "1-2".parse().unwrap();
        assert_eq!(
            SliceStore::with_held(&data, part).unwrap().held(),
            &[BlockRange::new(1, 2).unwrap()]
        );
        let beyond: BlockRanges<4> = "2-3".parse().unwrap();
        assert_eq!(
            SliceStore::with_held(&data, beyond).unwrap_err(),
            StoreSetupError::RangeBeyondFile {
                range: BlockRange::new(2, 3).unwrap(),
                block_count: 3
            }
        );
    }

    #[test]
    fn empty_file_holds_no_blocks() {
        let store = SliceStore::<1>::new(&[]).unwrap();
        assert!(store.held().is_empty());
    }
}
