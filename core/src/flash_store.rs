//! A writable store in NOR flash (any `embedded-storage` [`NorFlash`]): where a node keeps the
//! manifest and the blocks it fetches, so that a reset resumes where it stopped.
//!
//! Layout, every region starting on an erase unit:
//!
//! | region | contents |
//! |---|---|
//! | header (first erase unit) | at 0: `P2PB`, format version (u32), the manifest digest; at 64: the file size and `MOK!` once the manifest is verified |
//! | manifest | the 32-byte digest of each block, in order |
//! | held record | one `WRITE_SIZE` slot per block, programmed to zero once the block is verified and written |
//! | data | block *n* at *n* × block size |
//!
//! Only verified blocks are written: a block is hashed in RAM as it arrives and written whole
//! once its digest matches, so flash never holds an unverified block that would need an erase
//! (a sector erase could take verified neighbours with it). Every write programs erased flash
//! once; nothing is rewritten in place.
//!
//! Shared by the server sessions (reading) and the fetcher (writing) on one thread: the flash
//! and the held sets live in `RefCell`s. New blocks become visible to servers only at
//! [`FlashStore::publish`], which the caller invokes while no Block List Response is part-way
//! out.

use crate::bitmap::BlockBitmap;
use crate::geometry::Geometry;
use crate::manifest::{DIGEST_LEN, Digest};
use crate::ranges::BlockRange;
use crate::store::{BlockStore, StoreError};
use crate::wire::MAX_LIST_COUNT;
use core::cell::{Cell, RefCell};
use core::fmt;
use embedded_storage::nor_flash::NorFlash;

const MAGIC: [u8; 4] = *b"P2PB";
const FORMAT_VERSION: u32 = 1;
const COMMIT_MARK: [u8; 4] = *b"MOK!";
/// Header records are written in slots this long, so any `WRITE_SIZE` up to it divides them.
const RECORD_LEN: usize = 64;
const COMMIT_OFFSET: u32 = RECORD_LEN as u32;

/// Why the store could not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FillError {
    /// The flash cannot hold a file this large (or the held sets have no room for its blocks).
    FileTooLarge {
        /// The size asked for, in bytes.
        file_size: u32,
    },
    /// The flash's geometry does not suit the layout: `READ_SIZE` 1, `WRITE_SIZE` dividing 32,
    /// an erase unit of at least 128 bytes.
    UnsuitableFlash,
    /// The flash reported an error.
    Flash,
    /// The manifest is not verified yet, or a block is beyond the file.
    NoManifest,
}

impl fmt::Display for FillError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FileTooLarge { file_size } => {
                write!(f, "a {file_size}-byte file does not fit this storage")
            }
            Self::UnsuitableFlash => f.write_str("flash geometry unsuited to the store layout"),
            Self::Flash => f.write_str("flash error"),
            Self::NoManifest => f.write_str("no verified manifest for that block"),
        }
    }
}

/// Where each region lies for a file of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    geometry: Geometry,
    manifest: u32,
    record: u32,
    data: u32,
    end: u32,
}

impl Layout {
    fn new<F: NorFlash>(file_size: u32, capacity: usize) -> Option<Self> {
        let geometry = Geometry::new(file_size);
        let blocks = geometry.block_count();
        let erase = u32::try_from(F::ERASE_SIZE).ok()?;
        let align = |at: u32| at.checked_next_multiple_of(erase);
        let manifest = erase;
        let record = align(manifest.checked_add(blocks.checked_mul(DIGEST_LEN as u32)?)?)?;
        let data = align(record.checked_add(blocks.checked_mul(F::WRITE_SIZE as u32)?)?)?;
        let end = align(data.checked_add(blocks.checked_mul(geometry.block_size())?)?)?;
        (usize::try_from(end).ok()? <= capacity).then_some(Self {
            geometry,
            manifest,
            record,
            data,
            end,
        })
    }
}

/// A node's file in flash, up to `8 * B` blocks.
pub struct FlashStore<F: NorFlash, const B: usize> {
    flash: RefCell<F>,
    manifest_digest: Digest,
    layout: Cell<Option<Layout>>,
    /// Blocks verified and written, and how many.
    verified: RefCell<BlockBitmap<B>>,
    verified_count: Cell<u32>,
    /// Blocks servers see: `verified` as of the last [`FlashStore::publish`].
    held: RefCell<BlockBitmap<B>>,
    /// The manifest being received, and how many of its digests (from block 0) are stored.
    receiving: Cell<Option<(Layout, u32)>>,
}

impl<F: NorFlash, const B: usize> FlashStore<F, B> {
    /// Opens the store for the file whose manifest digest is `manifest_digest`: resumes what
    /// `flash` holds for that file, or starts empty (erasing the header) when it holds another
    /// file or nothing.
    pub fn open(mut flash: F, manifest_digest: Digest) -> Result<Self, FillError> {
        if F::READ_SIZE != 1
            || F::WRITE_SIZE == 0
            || !DIGEST_LEN.is_multiple_of(F::WRITE_SIZE)
            || F::ERASE_SIZE < 2 * RECORD_LEN
        {
            return Err(FillError::UnsuitableFlash);
        }
        let mut header = [0u8; 2 * RECORD_LEN];
        flash.read(0, &mut header).map_err(|_| FillError::Flash)?;
        let ours = header.get(..4) == Some(&MAGIC)
            && header.get(4..8) == Some(&FORMAT_VERSION.to_be_bytes())
            && header.get(8..8 + DIGEST_LEN) == Some(manifest_digest.as_bytes());
        let store = Self {
            flash: RefCell::new(flash),
            manifest_digest,
            layout: Cell::new(None),
            verified: RefCell::new(BlockBitmap::new()),
            verified_count: Cell::new(0),
            receiving: Cell::new(None),
            held: RefCell::new(BlockBitmap::new()),
        };
        if !ours {
            store.write_init_record()?;
            return Ok(store);
        }
        let commit = header.get(RECORD_LEN..RECORD_LEN + 8).unwrap_or_default();
        if commit.get(4..8) == Some(&COMMIT_MARK) {
            let size = commit
                .get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                .ok_or(FillError::Flash)?;
            let layout = store.layout_for(size)?;
            store.layout.set(Some(layout));
            store.read_held_record(layout)?;
            store.publish();
        }
        Ok(store)
    }

    /// The digest this store's file must hash to.
    pub fn manifest_digest(&self) -> Digest {
        self.manifest_digest
    }

    /// Whether the manifest is verified (the file size and block digests are known).
    pub fn manifest_verified(&self) -> bool {
        self.layout.get().is_some()
    }

    /// The file's geometry, once the manifest is verified.
    pub fn geometry(&self) -> Option<Geometry> {
        self.layout.get().map(|layout| layout.geometry)
    }

    /// Blocks verified so far.
    pub fn verified_count(&self) -> u32 {
        self.verified_count.get()
    }

    /// Whether every block is verified (true for an empty file once its manifest is).
    pub fn is_complete(&self) -> bool {
        self.geometry()
            .is_some_and(|g| self.verified_count() == g.block_count())
    }

    /// Whether `block` is verified and stored, so it may be served.
    pub fn is_verified(&self, block: u16) -> bool {
        self.verified.borrow().contains(block)
    }

    /// Whether `blocks` (what a peer holds) has any block not verified here.
    pub fn lacks_any<const C: usize>(&self, blocks: &BlockBitmap<C>) -> bool {
        blocks.any_missing_from(&self.verified.borrow())
    }

    /// Whether every block of the file is verified or in `asked` (blocks requested and not yet
    /// received): then nothing is left to ask for that is not already coming.
    pub fn all_verified_or_in<const C: usize>(&self, asked: &BlockBitmap<C>) -> bool {
        self.geometry().is_some_and(|geometry| {
            self.verified
                .borrow()
                .covers_first_with(asked, geometry.block_count())
        })
    }

    /// Prepares to receive the manifest of a `file_size`-byte file (as a peer claims): checks
    /// it fits and erases the manifest region.
    pub fn begin_manifest(&self, file_size: u32) -> Result<(), FillError> {
        let layout = self.layout_for(file_size)?;
        self.receiving.set(None);
        self.erase(layout.manifest, layout.record)?;
        self.receiving.set(Some((layout, 0)));
        Ok(())
    }

    /// Forgets the manifest being received, which did not hash to the manifest digest: it is
    /// no longer served onward (until [`begin_manifest`](Self::begin_manifest) again).
    pub fn abandon_manifest(&self) {
        self.receiving.set(None);
    }

    /// The manifest being received (its file size, as the peer sending it claims) and the
    /// digests of it stored so far, from block 0: what the node serves onward before the
    /// manifest is verified (PROTOCOL.md 3.5). `None` before it begins and once verified.
    pub fn manifest_received(&self) -> Option<(u32, u32)> {
        self.receiving
            .get()
            .map(|(layout, digests)| (layout.geometry.file_size(), digests))
    }

    /// Stores the (not yet trusted) digest of `block` of the manifest being received.
    pub fn put_manifest_digest(
        &self,
        file_size: u32,
        block: u16,
        digest: &Digest,
    ) -> Result<(), FillError> {
        let layout = self.layout_for(file_size)?;
        if u32::from(block) >= layout.geometry.block_count() {
            return Err(FillError::NoManifest);
        }
        let at = layout.manifest + u32::from(block) * DIGEST_LEN as u32;
        self.write(at, digest.as_bytes())?;
        if let Some((receiving, digests)) = self.receiving.get()
            && receiving == layout
            && u32::from(block) == digests
        {
            self.receiving.set(Some((receiving, digests + 1)));
        }
        Ok(())
    }

    /// Makes the received manifest the store's, once the caller has checked that it hashes to
    /// the manifest digest: erases the held record and data regions and records the size.
    pub fn commit_manifest(&self, file_size: u32) -> Result<(), FillError> {
        let layout = self.layout_for(file_size)?;
        self.erase(layout.record, layout.end)?;
        let mut record = [0xFF; RECORD_LEN];
        if let Some(size) = record.get_mut(..4) {
            size.copy_from_slice(&file_size.to_be_bytes());
        }
        if let Some(mark) = record.get_mut(4..8) {
            mark.copy_from_slice(&COMMIT_MARK);
        }
        self.write(COMMIT_OFFSET, &record)?;
        self.verified.borrow_mut().clear();
        self.verified_count.set(0);
        self.held.borrow_mut().clear();
        self.receiving.set(None);
        self.layout.set(Some(layout));
        Ok(())
    }

    /// Writes `block`, whose bytes the caller has verified against its digest, and records it
    /// held. A block already held is left as it is (the first verified copy wins).
    pub fn put_block(&self, block: u16, data: &[u8]) -> Result<(), FillError> {
        let layout = self.layout.get().ok_or(FillError::NoManifest)?;
        let span = layout
            .geometry
            .span(BlockRange::single(block))
            .ok_or(FillError::NoManifest)?;
        if self.is_verified(block) {
            return Ok(());
        }
        if data.len() != span.len as usize {
            return Err(FillError::NoManifest);
        }
        let at = layout.data + span.offset;
        // Whole WRITE_SIZE words; a short last block is padded with erased bytes.
        let whole = data.len() - data.len() % F::WRITE_SIZE;
        let (body, tail) = data.split_at(whole);
        if !body.is_empty() {
            self.write(at, body)?;
        }
        if !tail.is_empty() {
            let mut word = [0xFF; DIGEST_LEN];
            let word = word.get_mut(..F::WRITE_SIZE).ok_or(FillError::Flash)?;
            word.get_mut(..tail.len())
                .ok_or(FillError::Flash)?
                .copy_from_slice(tail);
            self.write(at + whole as u32, word)?;
        }
        let slot = layout.record + u32::from(block) * F::WRITE_SIZE as u32;
        let zeros = [0u8; DIGEST_LEN];
        self.write(slot, zeros.get(..F::WRITE_SIZE).ok_or(FillError::Flash)?)?;
        self.verified.borrow_mut().insert(block);
        self.verified_count.set(self.verified_count.get() + 1);
        Ok(())
    }

    /// Lets servers see every block verified so far. Call only while no Block List Response
    /// is part-way out (see [`crate::driver::Server::listing`]).
    pub fn publish(&self) {
        let verified = self.verified.borrow();
        self.held.borrow_mut().clone_from(&verified);
    }

    /// Gives the flash back, for a simulated reset.
    pub fn into_flash(self) -> F {
        self.flash.into_inner()
    }

    /// The flash, to read (an image of it, say); no store operation may run meanwhile.
    pub fn flash(&self) -> core::cell::Ref<'_, F> {
        self.flash.borrow()
    }

    fn layout_for(&self, file_size: u32) -> Result<Layout, FillError> {
        let capacity = self.flash.borrow().capacity();
        // Held blocks of more than 2 x 32767 could make more ranges than a Block List carries.
        let listable = 2 * u32::from(MAX_LIST_COUNT);
        Layout::new::<F>(file_size, capacity)
            .filter(|layout| layout.geometry.block_count() <= BlockBitmap::<B>::CAPACITY)
            .filter(|layout| layout.geometry.block_count() <= listable)
            .ok_or(FillError::FileTooLarge { file_size })
    }

    fn write_init_record(&self) -> Result<(), FillError> {
        let erase = F::ERASE_SIZE as u32;
        self.erase(0, erase)?;
        let mut record = [0xFF; RECORD_LEN];
        let digest = self.manifest_digest;
        for (slot, bytes) in [
            (0..4, &MAGIC[..]),
            (4..8, &FORMAT_VERSION.to_be_bytes()[..]),
            (8..8 + DIGEST_LEN, &digest.as_bytes()[..]),
        ] {
            record
                .get_mut(slot)
                .ok_or(FillError::Flash)?
                .copy_from_slice(bytes);
        }
        self.write(0, &record)
    }

    fn read_held_record(&self, layout: Layout) -> Result<(), FillError> {
        let mut slot = [0u8; DIGEST_LEN];
        let slot = slot.get_mut(..F::WRITE_SIZE).ok_or(FillError::Flash)?;
        let mut verified = self.verified.borrow_mut();
        for block in 0..layout.geometry.block_count() {
            let at = layout.record + block * F::WRITE_SIZE as u32;
            self.flash
                .borrow_mut()
                .read(at, slot)
                .map_err(|_| FillError::Flash)?;
            // A slot half-programmed by a reset mid-write is not all zero: not held, so the
            // block is fetched again (its data slot was fully written before its record).
            if slot.iter().all(|&byte| byte == 0) {
                verified.insert(block as u16);
                self.verified_count.set(self.verified_count.get() + 1);
            }
        }
        Ok(())
    }

    fn erase(&self, from: u32, to: u32) -> Result<(), FillError> {
        if from >= to {
            return Ok(());
        }
        self.flash
            .borrow_mut()
            .erase(from, to)
            .map_err(|_| FillError::Flash)
    }

    fn write(&self, at: u32, bytes: &[u8]) -> Result<(), FillError> {
        self.flash
            .borrow_mut()
            .write(at, bytes)
            .map_err(|_| FillError::Flash)
    }
}

impl<F: NorFlash, const B: usize> BlockStore for FlashStore<F, B> {
    fn file_size(&self) -> u32 {
        match (self.geometry(), self.manifest_received()) {
            (Some(geometry), _) => geometry.file_size(),
            (None, Some((file_size, _))) => file_size,
            (None, None) => 0,
        }
    }

    fn has_file(&self) -> bool {
        self.manifest_verified()
    }

    fn receiving_manifest(&self) -> bool {
        !self.manifest_verified() && self.receiving.get().is_some()
    }

    fn held_after(&self, after: Option<u16>) -> Option<BlockRange> {
        let blocks = self.geometry()?.block_count();
        self.held
            .borrow()
            .run_after(after)
            .filter(|range| u32::from(range.end()) < blocks)
    }

    fn holds(&self, range: BlockRange) -> bool {
        self.held.borrow().covers(range)
    }

    fn read_at(&self, offset: u32, buf: &mut [u8]) -> Result<(), StoreError> {
        let layout = self.layout.get().ok_or(StoreError)?;
        let at = layout.data.checked_add(offset).ok_or(StoreError)?;
        self.flash
            .try_borrow_mut()
            .map_err(|_| StoreError)?
            .read(at, buf)
            .map_err(|_| StoreError)
    }

    /// Digests of the verified manifest, or while it is being received, those stored so far.
    fn digest(&self, block: u16) -> Option<Digest> {
        let (layout, stored) = match (self.layout.get(), self.receiving.get()) {
            (Some(layout), _) => (layout, layout.geometry.block_count()),
            (None, Some(receiving)) => receiving,
            (None, None) => return None,
        };
        if u32::from(block) >= stored {
            return None;
        }
        let mut digest = [0u8; DIGEST_LEN];
        let at = layout.manifest + u32::from(block) * DIGEST_LEN as u32;
        self.flash
            .try_borrow_mut()
            .ok()?
            .read(at, &mut digest)
            .ok()?;
        Some(Digest(digest))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::manifest::manifest_digest;
    use crate::ram_flash::RamFlash;
    use crate::store::held;
    use std::vec::Vec;

    fn file() -> Vec<u8> {
        (0..2500u32).map(|i| (i % 251) as u8).collect()
    }

    fn filled(store: &FlashStore<RamFlash<'_>, 4>, data: &[u8], blocks: &[u16]) {
        let digests: Vec<Digest> = data.chunks(1024).map(Digest::of).collect();
        store.begin_manifest(2500).unwrap();
        for (block, digest) in digests.iter().enumerate() {
            store
                .put_manifest_digest(2500, block as u16, digest)
                .unwrap();
        }
        store.commit_manifest(2500).unwrap();
        for &block in blocks {
            let start = usize::from(block) * 1024;
            store
                .put_block(block, &data[start..(start + 1024).min(data.len())])
                .unwrap();
        }
    }

    #[test]
    fn fills_serves_only_what_is_published_and_resumes_after_a_reset() {
        let data = file();
        let digests: Vec<Digest> = data.chunks(1024).map(Digest::of).collect();
        let id = manifest_digest(2500, &digests);
        let mut bytes = std::vec![0u8; 64 * 1024];
        let store = FlashStore::<_, 4>::open(RamFlash::new(&mut bytes), id).unwrap();
        assert!(!store.manifest_verified());
        assert_eq!(store.file_size(), 0);
        assert_eq!(store.digest(0), None);
        filled(&store, &data, &[2, 0]);
        assert_eq!(store.digest(1), Some(digests[1]));
        assert_eq!(held(&store).count(), 0, "nothing published yet");
        store.publish();
        assert!(held(&store).eq([BlockRange::single(0), BlockRange::single(2)]));
        let mut out = std::vec![0u8; 452];
        store.read_at(2048, &mut out).unwrap();
        assert_eq!(out, data[2048..]);
        // A second copy of a held block changes nothing.
        store.put_block(0, &[0u8; 1024]).unwrap();
        assert!(!store.is_complete());

        let flash = store.into_flash();
        let store = FlashStore::<_, 4>::open(flash, id).unwrap();
        assert_eq!(store.file_size(), 2500);
        assert_eq!(store.verified_count(), 2);
        assert!(held(&store).eq([BlockRange::single(0), BlockRange::single(2)]));
        let mut out = std::vec![0u8; 1024];
        store.read_at(0, &mut out).unwrap();
        assert_eq!(out, data[..1024]);
        store.put_block(1, &data[1024..2048]).unwrap();
        assert!(store.is_complete());

        // Another file's digest: the store starts empty.
        let flash = store.into_flash();
        let other = FlashStore::<_, 4>::open(flash, Digest::of(b"other")).unwrap();
        assert!(!other.manifest_verified());
        assert_eq!(other.verified_count(), 0);
    }

    #[test]
    fn a_manifest_not_committed_is_not_trusted_after_a_reset() {
        let data = file();
        let digests: Vec<Digest> = data.chunks(1024).map(Digest::of).collect();
        let id = manifest_digest(2500, &digests);
        let mut bytes = std::vec![0u8; 64 * 1024];
        let store = FlashStore::<_, 4>::open(RamFlash::new(&mut bytes), id).unwrap();
        store.begin_manifest(2500).unwrap();
        store.put_manifest_digest(2500, 0, &digests[0]).unwrap();
        let store = FlashStore::<_, 4>::open(store.into_flash(), id).unwrap();
        assert!(!store.manifest_verified());
        // begin_manifest erases what the first attempt wrote.
        filled(&store, &data, &[1]);
        assert_eq!(store.verified_count(), 1);
    }

    #[test]
    fn a_manifest_being_received_shows_its_size_and_the_digests_stored_in_order() {
        let data = file();
        let digests: Vec<Digest> = data.chunks(1024).map(Digest::of).collect();
        let id = manifest_digest(2500, &digests);
        let mut bytes = std::vec![0u8; 64 * 1024];
        let store = FlashStore::<_, 4>::open(RamFlash::new(&mut bytes), id).unwrap();
        assert!(!store.receiving_manifest());
        assert_eq!((store.file_size(), store.manifest_received()), (0, None));
        store.begin_manifest(2500).unwrap();
        assert!(store.receiving_manifest() && !store.has_file());
        assert_eq!(
            (store.file_size(), store.manifest_received()),
            (2500, Some((2500, 0)))
        );
        assert_eq!(store.digest(0), None);
        store.put_manifest_digest(2500, 0, &digests[0]).unwrap();
        // Out of order: stored, but not served before the one it follows.
        store.put_manifest_digest(2500, 2, &digests[2]).unwrap();
        assert_eq!(store.manifest_received(), Some((2500, 1)));
        assert_eq!((store.digest(0), store.digest(2)), (Some(digests[0]), None));
        // Nothing is held before the manifest is verified.
        assert_eq!(held(&store).count(), 0);
        // One that did not verify is no longer served.
        store.abandon_manifest();
        assert!(!store.receiving_manifest());
        assert_eq!((store.file_size(), store.digest(0)), (0, None));
        // Beginning again (another source) starts from nothing.
        store.begin_manifest(2500).unwrap();
        assert_eq!(store.manifest_received(), Some((2500, 0)));
        assert_eq!(store.digest(0), None);
        filled(&store, &data, &[]);
        assert!(!store.receiving_manifest() && store.has_file());
        assert_eq!(store.manifest_received(), None);
        assert_eq!(store.digest(2), Some(digests[2]));
    }

    #[test]
    fn files_too_large_and_unsuitable_flash_are_refused() {
        let mut bytes = std::vec![0u8; 16 * 1024];
        let store = FlashStore::<_, 4>::open(RamFlash::new(&mut bytes), Digest::of(b"x")).unwrap();
        assert_eq!(
            store.begin_manifest(10_000),
            Err(FillError::FileTooLarge { file_size: 10_000 })
        );
        // 33 blocks need more than a 4-byte bitmap.
        let mut bytes = std::vec![0u8; 256 * 1024];
        let store = FlashStore::<_, 4>::open(RamFlash::new(&mut bytes), Digest::of(b"x")).unwrap();
        assert_eq!(
            store.begin_manifest(33 * 1024),
            Err(FillError::FileTooLarge {
                file_size: 33 * 1024
            })
        );
        assert_eq!(store.put_block(0, &[0; 1024]), Err(FillError::NoManifest));
    }
}
