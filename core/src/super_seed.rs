//! Super-seeding (BitTorrent's BEP 16, in Block List terms): a node that holds the whole file
//! lists to its clients only the blocks it has not yet served in the current round, so every
//! client that asks it fetches blocks nobody got from it before, and the clients spread those
//! among themselves. Without this, every client of the only seed asks it for the blocks that
//! look rarest to that client alone, the same blocks over and over, and the seed's upload,
//! the one scarce resource when a fleet starts, carries the file many times (5.4 copies for
//! 64 nodes in the fleet simulation) instead of about once.
//!
//! A round ends when all but a sixteenth of the blocks have been served once, or when nothing
//! new was served for a while (a client still missing a block this seed hides must not wait for clients that are
//! gone); the next round lists them all again. A block served this round is not held for the
//! rest of it: a request for it, made from an older listing, gets a Block Response Failure
//! instead of the block again. A store that is not complete is served as it is.
//!
//! Only a node that starts with the whole file should super-seed: if every node that finished
//! did, the last block a late node needs could be hidden by all of them at once.

use crate::bitmap::BlockBitmap;
use crate::geometry::Geometry;
use crate::manifest::Digest;
use crate::ranges::BlockRange;
use crate::store::{BlockStore, StoreError};
use crate::time::{Duration, Instant};
use core::cell::RefCell;

/// A round ends once at most one block in this many is still unserved.
const ROUND_TAIL_DIVISOR: u32 = 16;

/// A round with nothing new served for this long ends early. A block is counted served when
/// its bytes go into a connection's transmit buffer; if that connection is then aborted (its
/// client gave up on it), nobody has the block and the seed hides it until the round ends:
/// with 500 ms, 64 simulated nodes all sat 0.4 s at 995 of 1024 blocks.
pub const IDLE_ROUND_END: Duration = Duration::from_millis(100);

/// Blocks served this round: what listings subtract, and what was served since it changed.
struct Rounds<const B: usize> {
    listed: BlockBitmap<B>,
    pending: BlockBitmap<B>,
    /// Whether listings are filtered, as of the last publish (listings read it per range).
    seeding: bool,
    /// When a block was last served that the round had not served before.
    progressed: Option<Instant>,
}

/// `store` served with super-seeding, for files of up to `8 * B` blocks (larger files are
/// served without it).
pub struct SuperSeed<'s, S: ?Sized, const B: usize> {
    store: &'s S,
    rounds: RefCell<Rounds<B>>,
}

impl<'s, S: BlockStore + ?Sized, const B: usize> SuperSeed<'s, S, B> {
    /// `store` super-seeded, starting a first round with nothing served.
    pub fn new(store: &'s S) -> Self {
        Self {
            store,
            rounds: RefCell::new(Rounds {
                listed: BlockBitmap::new(),
                pending: BlockBitmap::new(),
                seeding: is_seeding::<S, B>(store),
                progressed: None,
            }),
        }
    }

    fn block_count(&self) -> u32 {
        Geometry::new(self.store.file_size()).block_count()
    }

    /// Whether listings are filtered, as of the last [`publish`](Self::publish).
    fn seeding(&self) -> bool {
        self.rounds.try_borrow().is_ok_and(|rounds| rounds.seeding)
    }

    /// Makes what was served since the last call show in listings, and starts a new round
    /// once every block was served or the round made no progress for [`IDLE_ROUND_END`]. Like
    /// [`crate::flash_store::FlashStore::publish`], call it only while no Block List Response
    /// is being sent ([`crate::driver::Server::listing`]).
    pub fn publish(&self, now: Instant) {
        let Ok(mut rounds) = self.rounds.try_borrow_mut() else {
            return;
        };
        rounds.seeding = is_seeding::<S, B>(self.store);
        let Rounds {
            listed,
            pending,
            progressed,
            ..
        } = &mut *rounds;
        let count = self.block_count().min(BlockBitmap::<B>::CAPACITY);
        let mut fresh = false;
        for block in (0..count).map(|block| block as u16) {
            if pending.contains(block) && !listed.contains(block) {
                listed.insert(block);
                fresh = true;
            }
        }
        pending.clear();
        if fresh || progressed.is_none() {
            *progressed = Some(now);
        }
        let unserved = (0..count)
            .filter(|&block| !listed.contains(block as u16))
            .count();
        // The last few blocks of a round are not worth hiding the rest for: with only they
        // listed, the seed's upload would idle while its clients have nothing to ask for.
        let nearly_done = unserved as u32 <= count / ROUND_TAIL_DIVISOR;
        let stalled = progressed.is_some_and(|at| now.saturating_since(at) >= IDLE_ROUND_END);
        if nearly_done || stalled {
            listed.clear();
            *progressed = Some(now);
        }
    }

    /// Blocks served in the round so far, as listings see them.
    pub fn served_this_round(&self) -> u32 {
        self.rounds.try_borrow().map_or(0, |rounds| {
            (0..self.block_count())
                .filter(|&block| rounds.listed.contains(block as u16))
                .count() as u32
        })
    }
}

/// Whether `store` is served super-seeding: it holds every block, and they fit the bitmap.
fn is_seeding<S: BlockStore + ?Sized, const B: usize>(store: &S) -> bool {
    let count = Geometry::new(store.file_size()).block_count();
    count > 0
        && count <= BlockBitmap::<B>::CAPACITY
        && u16::try_from(count - 1)
            .ok()
            .and_then(|last| BlockRange::new(0, last))
            .is_some_and(|all| store.holds(all))
}

impl<S: BlockStore + ?Sized, const B: usize> BlockStore for SuperSeed<'_, S, B> {
    fn file_size(&self) -> u32 {
        self.store.file_size()
    }

    fn held_after(&self, after: Option<u16>) -> Option<BlockRange> {
        if !self.seeding() {
            return self.store.held_after(after);
        }
        let rounds = self.rounds.try_borrow().ok()?;
        let last = u16::try_from(self.block_count().checked_sub(1)?).ok()?;
        let from = match after {
            None => 0,
            Some(after) => after.checked_add(1)?,
        };
        let unserved = |block: u16| !rounds.listed.contains(block);
        let start = (from..=last).find(|&block| unserved(block))?;
        let end = (start..=last)
            .take_while(|&block| unserved(block))
            .last()
            .unwrap_or(start);
        BlockRange::new(start, end)
    }

    /// While seeding, a block served this round is not held: a client asking for it from a
    /// list it read earlier gets a Block Response Failure (a few bytes, not the block again)
    /// and takes it from the peer that has it now.
    fn holds(&self, range: BlockRange) -> bool {
        if !self.seeding() {
            return self.store.holds(range);
        }
        self.rounds.try_borrow().is_ok_and(|rounds| {
            (range.start()..=range.end()).all(|block| !rounds.listed.contains(block))
        }) && self.store.holds(range)
    }

    fn read_at(&self, offset: u32, buf: &mut [u8]) -> Result<(), StoreError> {
        // A read may span several blocks (a Block Response for a range): each is served.
        let block_size = Geometry::new(self.store.file_size()).block_size();
        let last_byte = offset.saturating_add(u32::try_from(buf.len()).unwrap_or(u32::MAX));
        if let (Some(first), Some(last), Ok(mut rounds)) = (
            offset.checked_div(block_size),
            last_byte.saturating_sub(1).checked_div(block_size),
            self.rounds.try_borrow_mut(),
        ) && !buf.is_empty()
        {
            for block in first..=last {
                if let Ok(block) = u16::try_from(block) {
                    rounds.pending.insert(block);
                }
            }
        }
        self.store.read_at(offset, buf)
    }

    fn has_file(&self) -> bool {
        self.store.has_file()
    }

    fn receiving_manifest(&self) -> bool {
        self.store.receiving_manifest()
    }

    fn digest(&self, block: u16) -> Option<Digest> {
        self.store.digest(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SliceStore;
    use crate::store::held;
    use std::vec::Vec;

    extern crate std;

    fn listed<S: BlockStore>(store: &S) -> Vec<(u16, u16)> {
        held(store).map(|r| (r.start(), r.end())).collect()
    }

    fn serve(seed: &SuperSeed<'_, SliceStore<'_>, 4>, block: u32) {
        let mut buf = [0u8; 16];
        seed.read_at(block * 1024, &mut buf).unwrap();
    }

    #[test]
    fn a_seed_lists_only_blocks_not_served_this_round() {
        let data = std::vec![7u8; 8 * 1024];
        let store: SliceStore<'_> = SliceStore::new(&data).unwrap();
        let seed = SuperSeed::<_, 4>::new(&store);
        assert_eq!(listed(&seed), [(0, 7)]);
        serve(&seed, 2);
        serve(&seed, 3);
        // Nothing changes until published: a listing in progress stays consistent.
        assert_eq!(listed(&seed), [(0, 7)]);
        seed.publish(Instant::from_millis(0));
        assert_eq!(listed(&seed), [(0, 1), (4, 7)]);
        assert_eq!(seed.served_this_round(), 2);
        // Served blocks are refused for the rest of the round.
        assert!(!seed.holds(BlockRange::single(2)));
        assert!(!seed.holds(BlockRange::new(1, 2).unwrap()));
        assert!(seed.holds(BlockRange::single(1)));
        for block in [0, 1, 4, 5, 6] {
            serve(&seed, block);
        }
        seed.publish(Instant::from_millis(0));
        assert_eq!(listed(&seed), [(7, 7)]);
        serve(&seed, 7);
        seed.publish(Instant::from_millis(0));
        // Every block went out once: the next round lists them all again.
        assert_eq!(listed(&seed), [(0, 7)]);
        assert_eq!(seed.served_this_round(), 0);
        assert!(seed.holds(BlockRange::new(0, 7).unwrap()));
    }

    #[test]
    fn a_read_across_blocks_serves_each() {
        let data = std::vec![7u8; 8 * 1024];
        let store: SliceStore<'_> = SliceStore::new(&data).unwrap();
        let seed = SuperSeed::<_, 4>::new(&store);
        let mut buf = std::vec![0u8; 2048 + 1];
        seed.read_at(1024 + 512, &mut buf).unwrap();
        seed.publish(Instant::from_millis(0));
        assert_eq!(listed(&seed), [(0, 0), (4, 7)]);
    }

    #[test]
    fn a_round_ends_with_a_sixteenth_left() {
        let data = std::vec![7u8; 32 * 1024];
        let store: SliceStore<'_> = SliceStore::new(&data).unwrap();
        let seed = SuperSeed::<_, 4>::new(&store);
        for block in 0..29 {
            serve(&seed, block);
        }
        seed.publish(Instant::from_millis(0));
        assert_eq!(listed(&seed), [(29, 31)]);
        serve(&seed, 29);
        seed.publish(Instant::from_millis(0));
        assert_eq!(listed(&seed), [(0, 31)]);
    }

    #[test]
    fn a_round_without_progress_ends_early() {
        let data = std::vec![7u8; 8 * 1024];
        let store: SliceStore<'_> = SliceStore::new(&data).unwrap();
        let seed = SuperSeed::<_, 4>::new(&store);
        serve(&seed, 5);
        seed.publish(Instant::from_millis(1000));
        assert_eq!(listed(&seed), [(0, 4), (6, 7)]);
        // Serving block 5 again is no progress.
        serve(&seed, 5);
        let idle = IDLE_ROUND_END.millis();
        seed.publish(Instant::from_millis(1000 + idle - 1));
        assert_eq!(listed(&seed), [(0, 4), (6, 7)]);
        seed.publish(Instant::from_millis(1000 + idle));
        assert_eq!(listed(&seed), [(0, 7)]);
    }

    #[test]
    fn a_partial_store_is_listed_as_it_is() {
        let data = std::vec![7u8; 8 * 1024];
        let mut held = crate::BlockRanges::<8>::new();
        held.insert(BlockRange::new(1, 3).unwrap()).unwrap();
        let store: SliceStore<'_> = SliceStore::with_held(&data, held).unwrap();
        let seed = SuperSeed::<_, 4>::new(&store);
        serve(&seed, 1);
        seed.publish(Instant::from_millis(0));
        assert_eq!(listed(&seed), [(1, 3)]);
    }
}
