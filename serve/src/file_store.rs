//! A served file on disk, read at offsets.

use p2p_core::store::{StoreSetupError, check_held, range_after};
use p2p_core::{BlockRange, BlockRanges, BlockStore, Digest, Geometry, StoreError};
use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// How many separate held ranges a server built on this crate accepts (`--blocks`).
pub const MAX_HELD_RANGES: usize = 256;

/// The held blocks of a std server.
pub type HeldRanges = BlockRanges<MAX_HELD_RANGES>;

/// A file served from disk; its size, held ranges and manifest (32 bytes a block) are kept in
/// memory.
#[derive(Debug)]
pub struct FileStore {
    file: File,
    size: u32,
    held: HeldRanges,
    digests: Vec<Digest>,
}

/// Why a file cannot be served.
#[derive(Debug)]
pub enum OpenError {
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    TooLarge {
        path: PathBuf,
        size: u64,
    },
    Held(StoreSetupError),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            Self::TooLarge { path, size } => write!(
                f,
                "{} is {size} bytes; the protocol serves files of at most 4294967295 bytes",
                path.display()
            ),
            Self::Held(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for OpenError {}

impl FileStore {
    /// Opens `path` to serve the blocks in `held`, or every block when `None`.
    pub fn open(path: &Path, held: Option<HeldRanges>) -> Result<Self, OpenError> {
        let io = |error| OpenError::Io {
            path: path.to_owned(),
            error,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let size = u32::try_from(len).map_err(|_| OpenError::TooLarge {
            path: path.to_owned(),
            size: len,
        })?;
        let held = match held {
            Some(held) => {
                check_held(size, held.as_slice()).map_err(OpenError::Held)?;
                held
            }
            None => HeldRanges::all(Geometry::new(size).block_count())
                .map_err(|e| OpenError::Held(e.into()))?,
        };
        let digests = block_digests_of(&file, size).map_err(io)?;
        Ok(Self {
            file,
            size,
            held,
            digests,
        })
    }
}

/// The SHA-256 of every block of the `size`-byte `file`, read once from start to end.
fn block_digests_of(file: &File, size: u32) -> std::io::Result<Vec<Digest>> {
    let geometry = Geometry::new(size);
    let mut block = vec![0u8; geometry.block_size() as usize];
    (0..geometry.block_count())
        .map(|index| {
            let span = geometry
                .span(BlockRange::single(index as u16))
                .ok_or_else(|| std::io::Error::other("block beyond the file"))?;
            let bytes = &mut block[..span.len as usize];
            file.read_exact_at(bytes, u64::from(span.offset))?;
            Ok(Digest::of(bytes))
        })
        .collect()
}

/// The SHA-256 of every block of `data`, a whole file in memory.
pub fn block_digests(data: &[u8]) -> Vec<Digest> {
    let geometry = Geometry::new(u32::try_from(data.len()).unwrap_or(u32::MAX));
    data.chunks(geometry.block_size() as usize)
        .map(Digest::of)
        .collect()
}

impl BlockStore for FileStore {
    fn file_size(&self) -> u32 {
        self.size
    }

    fn held_after(&self, after: Option<u16>) -> Option<BlockRange> {
        range_after(self.held.as_slice(), after)
    }

    fn read_at(&self, offset: u32, buf: &mut [u8]) -> Result<(), StoreError> {
        self.file
            .read_exact_at(buf, u64::from(offset))
            .map_err(|error| {
                log::error!("reading {} bytes at {offset}: {error}", buf.len());
                StoreError
            })
    }

    fn digest(&self, block: u16) -> Option<Digest> {
        self.digests.get(usize::from(block)).copied()
    }
}
