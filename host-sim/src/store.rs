//! What host-sim serves: the built-in sample from memory or a file read at offsets.

use p2p_core::{BlockRange, BlockStore, Digest, SliceStore, StoreError};
use p2p_serve::{FileStore, HeldRanges, MAX_HELD_RANGES, SAMPLE_FILE, block_digests};
use std::path::Path;

pub enum HostStore {
    Sample(SliceStore<'static, MAX_HELD_RANGES>),
    File(FileStore),
}

impl HostStore {
    pub fn open(file: Option<&Path>, held: Option<HeldRanges>) -> Result<Self, String> {
        match file {
            Some(path) => FileStore::open(path, held)
                .map(Self::File)
                .map_err(|error| error.to_string()),
            None => {
                // Lives as long as the process, like the sample itself.
                let digests: &'static [Digest] = block_digests(SAMPLE_FILE).leak();
                match held {
                    Some(held) => SliceStore::with_held(SAMPLE_FILE, held),
                    None => SliceStore::new(SAMPLE_FILE),
                }
                .and_then(|store| store.with_digests(digests))
                .map(Self::Sample)
                .map_err(|error| format!("the built-in sample: {error}"))
            }
        }
    }

    fn inner(&self) -> &dyn BlockStore {
        match self {
            Self::Sample(store) => store,
            Self::File(store) => store,
        }
    }
}

impl BlockStore for HostStore {
    fn file_size(&self) -> u32 {
        self.inner().file_size()
    }

    fn held_after(&self, after: Option<u16>) -> Option<BlockRange> {
        self.inner().held_after(after)
    }

    fn read_at(&self, offset: u32, buf: &mut [u8]) -> Result<(), StoreError> {
        self.inner().read_at(offset, buf)
    }

    fn digest(&self, block: u16) -> Option<Digest> {
        self.inner().digest(block)
    }
}
