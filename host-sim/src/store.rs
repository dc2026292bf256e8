//! What host-sim serves: the built-in sample from memory or a file read at offsets.

use p2p_core::{BlockRange, BlockStore, SliceStore, StoreError};
use p2p_serve::{FileStore, HeldRanges, MAX_HELD_RANGES, SAMPLE_FILE};
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
            None => match held {
                Some(held) => SliceStore::with_held(SAMPLE_FILE, held),
                None => SliceStore::new(SAMPLE_FILE),
            }
            .map(Self::Sample)
            .map_err(|error| format!("the built-in sample: {error}")),
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

    fn held(&self) -> &[BlockRange] {
        self.inner().held()
    }

    fn read_at(&self, offset: u32, buf: &mut [u8]) -> Result<(), StoreError> {
        self.inner().read_at(offset, buf)
    }
}
