//! The manifest: a file's size and the SHA-256 of every block, and its digest, the file's
//! identity and a node's one trust root.
//!
//! Manifest bytes are the size (u32, big-endian) followed by the 32-byte SHA-256 of each block
//! in order. A node is given only the 32-byte SHA-256 of those bytes, the **manifest digest**;
//! the size and the block digests it fetches from peers are trusted only once they hash to it,
//! and every block only once it hashes to its digest.

use crate::geometry::Geometry;
use crate::ranges::BlockRange;
use core::fmt;
use sha2::{Digest as _, Sha256};

/// Bytes of a SHA-256 digest.
pub const DIGEST_LEN: usize = 32;

/// A SHA-256 digest: of one block, or of a whole manifest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Digest(pub [u8; DIGEST_LEN]);

impl Digest {
    /// The SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// The 32 digest bytes.
    pub const fn as_bytes(&self) -> &[u8; DIGEST_LEN] {
        &self.0
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(text: &str) -> Result<Self, HexError> {
        let bytes = text.as_bytes();
        if bytes.len() != 2 * DIGEST_LEN {
            return Err(HexError::Length(bytes.len()));
        }
        let mut out = [0u8; DIGEST_LEN];
        for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let (hi, lo) = match pair {
                [hi, lo] => (hex_value(*hi)?, hex_value(*lo)?),
                _ => return Err(HexError::Length(bytes.len())),
            };
            *byte = hi << 4 | lo;
        }
        Ok(Self(out))
    }
}

fn hex_value(digit: u8) -> Result<u8, HexError> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        other => Err(HexError::Digit(other)),
    }
}

/// Lower-case hex, as printed by `host-sim --print-manifest` and taken by `--manifest`.
impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// A manifest digest that is not 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum HexError {
    /// Not 64 characters long.
    Length(usize),
    /// A character that is not a hex digit.
    Digit(u8),
}

impl fmt::Display for HexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length(len) => write!(f, "a digest is 64 hex digits, not {len} characters"),
            Self::Digit(byte) => write!(f, "{:?} is not a hex digit", char::from(*byte)),
        }
    }
}

/// Streaming SHA-256 of one block as its bytes arrive, checked against the manifest's digest.
#[derive(Clone, Default)]
pub struct BlockHasher(Sha256);

impl BlockHasher {
    /// A hasher that has seen no bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hashes the next bytes of the block.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The SHA-256 of every byte fed in.
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

/// Block data of one connection, gathered into whole blocks and hashed as it arrives: block
/// data comes in order per connection, so one block at a time is enough. `K` is the largest
/// block it holds.
pub struct BlockAssembler<const K: usize> {
    block: Option<u16>,
    hasher: BlockHasher,
    bytes: heapless::Vec<u8, K>,
}

/// A block gathered whole: its number, its bytes' SHA-256 and the bytes (not yet checked
/// against anything).
pub struct WholeBlock<'a> {
    /// The block number.
    pub block: u16,
    /// The SHA-256 of `bytes`.
    pub digest: Digest,
    /// The block's bytes, the last block of the file at its true length.
    pub bytes: &'a [u8],
}

/// Block data that cannot be gathered: beyond the file, not continuing the block being
/// gathered (nor starting one), or a block larger than the assembler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AssemblyError {
    /// The block the refused data falls in.
    pub block: u16,
}

impl<const K: usize> Default for BlockAssembler<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const K: usize> BlockAssembler<K> {
    /// An assembler gathering no block yet.
    pub fn new() -> Self {
        Self {
            block: None,
            hasher: BlockHasher::new(),
            bytes: heapless::Vec::new(),
        }
    }

    /// Takes block data at `offset` of a file of `geometry`, up to the end of the block it is
    /// in; returns how much of `data` it used, and the block once it is whole.
    pub fn push(
        &mut self,
        geometry: Geometry,
        offset: u32,
        data: &[u8],
    ) -> Result<(usize, Option<WholeBlock<'_>>), AssemblyError> {
        let block = (offset / geometry.block_size()) as u16;
        let span = geometry
            .span(BlockRange::single(block))
            .ok_or(AssemblyError { block })?;
        if self.block != Some(block) {
            self.block = Some(block);
            self.hasher = BlockHasher::new();
            self.bytes.clear();
        }
        if offset != span.offset + self.bytes.len() as u32 {
            self.block = None;
            return Err(AssemblyError { block });
        }
        let missing = span.len as usize - self.bytes.len();
        let piece = data.get(..missing.min(data.len())).unwrap_or_default();
        self.bytes
            .extend_from_slice(piece)
            .map_err(|_| AssemblyError { block })?;
        self.hasher.update(piece);
        if self.bytes.len() < span.len as usize {
            return Ok((piece.len(), None));
        }
        self.block = None;
        let digest = core::mem::take(&mut self.hasher).finish();
        Ok((
            piece.len(),
            Some(WholeBlock {
                block,
                digest,
                bytes: &self.bytes,
            }),
        ))
    }
}

/// Streaming SHA-256 of manifest bytes: the size first, then each block digest in order, so a
/// manifest fetched in parts needs no memory beyond the digest being read. Nothing fed to it is
/// trusted until [`ManifestHasher::finish`] equals the manifest digest.
#[derive(Clone)]
pub struct ManifestHasher {
    hasher: Sha256,
    digests: u32,
}

impl ManifestHasher {
    /// A manifest hash begun with the size bytes of a file of `file_size` bytes.
    pub fn new(file_size: u32) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(file_size.to_be_bytes());
        Self { hasher, digests: 0 }
    }

    /// Adds the next block digest.
    pub fn push(&mut self, block_digest: &Digest) {
        self.hasher.update(block_digest.0);
        self.digests += 1;
    }

    /// Block digests pushed so far.
    pub fn digests(&self) -> u32 {
        self.digests
    }

    /// The manifest digest of everything pushed: trusted only if it equals the one given.
    pub fn finish(self) -> Digest {
        Digest(self.hasher.finalize().into())
    }
}

/// The manifest digest of a file whose block digests are `digests`, in order.
pub fn manifest_digest<'a>(
    file_size: u32,
    digests: impl IntoIterator<Item = &'a Digest>,
) -> Digest {
    let mut hasher = ManifestHasher::new(file_size);
    digests.into_iter().for_each(|d| hasher.push(d));
    hasher.finish()
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::geometry::Geometry;
    use std::string::ToString;
    use std::vec::Vec;

    /// The 2500-byte example file of PROTOCOL.md: byte i is i mod 251.
    fn example_file() -> Vec<u8> {
        (0..2500u32).map(|i| (i % 251) as u8).collect()
    }

    fn block_digests(data: &[u8]) -> Vec<Digest> {
        let geometry = Geometry::new(data.len() as u32);
        data.chunks(geometry.block_size() as usize)
            .map(Digest::of)
            .collect()
    }

    #[test]
    fn the_protocol_md_manifest_example() {
        let digests = block_digests(&example_file());
        assert_eq!(
            digests[0].to_string(),
            "2bce1ba628720664be4b9fdd77aae0678e5f0f3f02fc6ff641ec879094f6a404"
        );
        let digest = manifest_digest(2500, &digests);
        let mut bytes = Vec::from(2500u32.to_be_bytes());
        digests.iter().for_each(|d| bytes.extend_from_slice(&d.0));
        assert_eq!(bytes.len(), 4 + 3 * 32);
        assert_eq!(Digest::of(&bytes), digest);
        assert_eq!(
            digest.to_string(),
            "4b6424f68b42d054170689d8aea338220d35e2492137c1ef348045c31df0046e"
        );
    }

    #[test]
    fn an_empty_file_has_a_manifest_of_its_size_alone() {
        assert_eq!(manifest_digest(0, &[]), Digest::of(&[0, 0, 0, 0]));
    }

    #[test]
    fn blocks_are_gathered_whole_across_pieces() {
        let data = example_file();
        let geometry = Geometry::new(2500);
        let mut assembler = BlockAssembler::<1024>::new();
        let mut whole = Vec::new();
        let (mut offset, mut rest) = (0u32, &data[..]);
        while !rest.is_empty() {
            let chunk = &rest[..rest.len().min(300)];
            let (used, block) = assembler.push(geometry, offset, chunk).unwrap();
            if let Some(block) = block {
                assert_eq!(block.digest, Digest::of(block.bytes));
                whole.push((block.block, block.bytes.len()));
            }
            offset += used as u32;
            rest = &rest[used..];
        }
        assert_eq!(whole, [(0, 1024), (1, 1024), (2, 452)]);
        // Joined part-way through a block: nothing to hash it from.
        assert_eq!(
            assembler.push(geometry, 1000, &data[1000..1100]).err(),
            Some(AssemblyError { block: 0 })
        );
        let mut small = BlockAssembler::<100>::new();
        assert_eq!(
            small.push(geometry, 0, &data[..200]).err(),
            Some(AssemblyError { block: 0 })
        );
        assert_eq!(
            assembler.push(geometry, 3072, &[0]).err(),
            Some(AssemblyError { block: 3 })
        );
    }

    #[test]
    fn streaming_hashes_match_whole_ones() {
        let data = example_file();
        let mut hasher = BlockHasher::new();
        data[..1024].chunks(7).for_each(|c| hasher.update(c));
        assert_eq!(hasher.finish(), Digest::of(&data[..1024]));
    }

    #[test]
    fn hex_round_trips_and_names_bad_input() {
        let digest = Digest::of(b"x");
        let text = std::format!("{digest}");
        assert_eq!(Digest::from_hex(&text), Ok(digest));
        assert_eq!(Digest::from_hex(&text.to_uppercase()), Ok(digest));
        assert_eq!(Digest::from_hex("ab"), Err(HexError::Length(2)));
        let mut bad = text.clone();
        bad.replace_range(10..11, "g");
        assert_eq!(Digest::from_hex(&bad), Err(HexError::Digit(b'g')));
        assert_eq!(HexError::Digit(b'g').to_string(), "'g' is not a hex digit");
    }
}
