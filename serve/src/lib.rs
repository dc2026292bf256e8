//! The std side of serving p2p-blocks, shared by `host-sim` and `p2p-fetch --seed`:
//! a [`FileStore`] that reads a file on disk at offsets (a 4 GiB - 1 file costs no memory),
//! the built-in [`SAMPLE_FILE`], and [`tcp`], the server session over the kernel's TCP.

mod file_store;
pub mod tcp;

pub use file_store::{FileStore, HeldRanges, MAX_HELD_RANGES, OpenError, block_digests};

/// The file every server serves when given none: 300000 bytes of numbered text lines, so a
/// corrupted or misplaced block shows at a glance. Its last block is short (300000 is not a
/// multiple of 1024).
pub const SAMPLE_FILE: &[u8] = include_bytes!("../../assets/sample.txt");
