//! Where served bytes come from: flash, memory or a file on disk.

use crate::geometry::Geometry;
use crate::manifest::{Digest, ManifestHasher};
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

    /// The first held range that starts after block `after` (the first of all for `None`).
    /// Held ranges are sorted, coalesced and within the file's block count, and only verified
    /// blocks are held. A store that gains blocks while serving keeps this stable while any
    /// Block List Response is being sent (see [`crate::driver::Server::listing`]).
    fn held_after(&self, after: Option<u16>) -> Option<BlockRange>;

    /// Whether every block of `range` is held.
    fn holds(&self, range: BlockRange) -> bool {
        held(self).any(|held| held.covers(range))
    }

    /// Fills `buf` with the file's bytes from `offset`. Only called for bytes of held blocks,
    /// and never past the end of the file.
    fn read_at(&self, offset: u32, buf: &mut [u8]) -> Result<(), StoreError>;

    /// Whether the store knows its file. A filling store does not until its manifest is
    /// verified; a server then answers only Peer List Requests, so a node is already useful
    /// for discovery while it fetches its manifest.
    fn has_file(&self) -> bool {
        true
    }

    /// Whether the store is still receiving its manifest, for a file of
    /// [`file_size`](Self::file_size) bytes as the peer sending it claims: a server then
    /// answers File Size and Block List Requests (nothing held), and sends digests as they
    /// arrive ([`digest`](Self::digest) gives those stored so far), so nodes pass a manifest
    /// on while they receive it (PROTOCOL.md 3.5).
    fn receiving_manifest(&self) -> bool {
        false
    }

    /// The manifest's digest of `block`, for Digest Responses: `None` for a store without a
    /// verified manifest, or for a block beyond the file. While
    /// [`receiving_manifest`](Self::receiving_manifest), the digests received so far.
    fn digest(&self, _block: u16) -> Option<Digest> {
        None
    }
}

/// The held ranges of `store`, in order.
pub fn held<S: BlockStore + ?Sized>(store: &S) -> impl Iterator<Item = BlockRange> + '_ {
    let mut after = None;
    core::iter::from_fn(move || {
        let range = store.held_after(after)?;
        after = Some(range.end());
        Some(range)
    })
}

/// Why a store could not be made from its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StoreSetupError {
    /// Files are at most 4 GiB - 1 bytes (the File Size Response has 32 bits).
    FileTooLarge,
    /// A held range reaches past the file's last block.
    RangeBeyondFile {
        /// The range that does not fit.
        range: BlockRange,
        /// Blocks in the file.
        block_count: u32,
    },
    /// More separate ranges than the store can hold.
    TooManyRanges,
    /// Not one digest for every block.
    DigestCount {
        /// Digests given.
        digests: usize,
        /// Blocks in the file.
        block_count: u32,
    },
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
            Self::DigestCount {
                digests,
                block_count,
            } => write!(f, "{digests} digests for a file of {block_count} blocks"),
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

/// The digest of `store`'s manifest, `None` unless it has the digest of every block.
pub fn manifest_digest_of<S: BlockStore + ?Sized>(store: &S) -> Option<Digest> {
    let file_size = store.file_size();
    let mut hasher = ManifestHasher::new(file_size);
    for block in 0..Geometry::new(file_size).block_count() {
        hasher.push(&store.digest(u16::try_from(block).ok()?)?);
    }
    Some(hasher.finish())
}

/// The first range of `ranges` that starts after block `after`.
pub fn range_after(ranges: &[BlockRange], after: Option<u16>) -> Option<BlockRange> {
    ranges
        .iter()
        .find(|range| after.is_none_or(|after| range.start() > after))
        .copied()
}

/// A file held in memory or flash, with up to `N` separate held ranges, and optionally the
/// digests of its manifest.
#[derive(Debug, Clone)]
pub struct SliceStore<'a, const N: usize = 8> {
    data: &'a [u8],
    file_size: u32,
    held: BlockRanges<N>,
    digests: &'a [Digest],
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
            digests: &[],
        })
    }

    /// Also answers Digest Requests, with `digests`, one per block of the file.
    pub fn with_digests(mut self, digests: &'a [Digest]) -> Result<Self, StoreSetupError> {
        let block_count = Geometry::new(self.file_size).block_count();
        if digests.len() != block_count as usize {
            return Err(StoreSetupError::DigestCount {
                digests: digests.len(),
                block_count,
            });
        }
        self.digests = digests;
        Ok(self)
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

    fn held_after(&self, after: Option<u16>) -> Option<BlockRange> {
        range_after(self.held.as_slice(), after)
    }

    fn read_at(&self, offset: u32, buf: &mut [u8]) -> Result<(), StoreError> {
        let start = usize::try_from(offset).map_err(|_| StoreError)?;
        let end = start.checked_add(buf.len()).ok_or(StoreError)?;
        buf.copy_from_slice(self.data.get(start..end).ok_or(StoreError)?);
        Ok(())
    }

    fn digest(&self, block: u16) -> Option<Digest> {
        self.digests.get(usize::from(block)).copied()
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
        assert!(held(&store).eq([BlockRange::new(0, 2).unwrap()]));
        assert!(store.holds(BlockRange::new(1, 2).unwrap()));
        assert_eq!(store.digest(0), None);
        let mut buf = [0u8; 10];
        store.read_at(2990, &mut buf).unwrap();
        assert_eq!(buf, [7; 10]);
        assert_eq!(store.read_at(2991, &mut buf), Err(StoreError));

        let part: BlockRanges<4> = "1-2".parse().unwrap();
        let part = SliceStore::with_held(&data, part).unwrap();
        assert!(held(&part).eq([BlockRange::new(1, 2).unwrap()]));
        assert!(!part.holds(BlockRange::new(0, 1).unwrap()));
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
        assert_eq!(held(&store).count(), 0);
    }

    #[test]
    fn digests_come_one_per_block() {
        let data = [7u8; 3000];
        let digests = [Digest::of(&data[..1024]); 3];
        let store = SliceStore::<4>::new(&data).unwrap();
        assert_eq!(
            store.clone().with_digests(&digests[..2]).unwrap_err(),
            StoreSetupError::DigestCount {
                digests: 2,
                block_count: 3
            }
        );
        assert_eq!(manifest_digest_of(&store), None);
        let store = store.with_digests(&digests).unwrap();
        assert_eq!(store.digest(2), Some(digests[2]));
        assert_eq!(
            manifest_digest_of(&store),
            Some(crate::manifest::manifest_digest(3000, &digests))
        );
        assert_eq!(store.digest(3), None);
    }

    #[test]
    fn held_walks_every_range_up_to_the_last_block() {
        let ranges = [
            BlockRange::new(0, 3).unwrap(),
            BlockRange::new(9, 9).unwrap(),
            BlockRange::new(100, 65535).unwrap(),
        ];
        assert_eq!(range_after(&ranges, None), Some(ranges[0]));
        assert_eq!(range_after(&ranges, Some(3)), Some(ranges[1]));
        assert_eq!(range_after(&ranges, Some(65535)), None);
    }
}
