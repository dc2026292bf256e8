//! Which blocks each connection fetches next: rarest first, contiguous runs merged into one
//! request, and in the endgame (everything left is in flight) the remaining requests
//! duplicated on idle connections, the first copy of each block winning.

use crate::blockset::BlockSet;
use p2p_core::{BlockRange, Geometry};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Most connections fetching the same block at once, in the endgame.
const MAX_COPIES: u8 = 2;
/// A request takes at most 1/SHARE_SPLIT of each connection's fair share of the free
/// blocks (a pipeline holds two or more requests): early requests are big, the last ones
/// small, so no peer is left holding a large tail while the others are idle.
const SHARE_SPLIT: u32 = 4;

/// What a connection should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    Fetch(BlockRange),
    /// Blocks this peer holds are in flight elsewhere; they may come back.
    Wait,
    /// Every block this peer holds is done.
    NothingLeft,
}

/// The download's shared block state.
pub struct Scheduler {
    geometry: Geometry,
    /// Connections downloading at once (for the fair share of free blocks).
    connections: u32,
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    done: BlockSet,
    /// Requests in flight for each block.
    copies: Vec<u8>,
    /// Live peers holding each block.
    holders: Vec<u16>,
    done_bytes: u64,
}

impl State {
    fn is_free(&self, block: u16) -> bool {
        let index = usize::from(block);
        !self.done.contains(block)
            && self.copies.get(index) == Some(&0)
            && self.holders.get(index).is_some_and(|&holders| holders > 0)
    }

    fn holders_of(&self, block: u16) -> u16 {
        self.holders.get(usize::from(block)).copied().unwrap_or(0)
    }

    fn can_duplicate(&self, block: u16, own: &[BlockRange]) -> bool {
        !self.done.contains(block)
            && self
                .copies
                .get(usize::from(block))
                .is_some_and(|&copies| copies > 0 && copies < MAX_COPIES)
            && !own.iter().any(|range| range.contains(block))
    }

    /// The longest run from `start`, up to `max_blocks`, of blocks in `held` that `fits`.
    fn run_from(
        &self,
        start: u16,
        held: &BlockSet,
        max_blocks: u32,
        fits: impl Fn(&Self, u16) -> bool,
    ) -> BlockRange {
        let mut end = start;
        while end - start + 1 < max_blocks.min(u32::from(u16::MAX)) as u16 {
            match end.checked_add(1) {
                Some(next) if held.contains(next) && fits(self, next) => end = next,
                _ => break,
            }
        }
        BlockRange::new(start, end).unwrap_or(BlockRange::single(start))
    }

    fn claim(&mut self, range: BlockRange) {
        for block in range.start()..=range.end() {
            if let Some(copies) = self.copies.get_mut(usize::from(block)) {
                *copies = copies.saturating_add(1);
            }
        }
    }
}

impl Scheduler {
    /// `done` are the blocks already on disk; `holdings` what each live peer holds;
    /// `connections` how many connections will ask for blocks.
    pub fn new(
        geometry: Geometry,
        done: BlockSet,
        holdings: &[BlockSet],
        connections: usize,
    ) -> Self {
        let count = geometry.block_count() as usize;
        let mut holders = vec![0u16; count];
        for held in holdings {
            for (block, holders) in holders.iter_mut().enumerate() {
                if u16::try_from(block).is_ok_and(|block| held.contains(block)) {
                    *holders = holders.saturating_add(1);
                }
            }
        }
        let done_bytes = done
            .ranges()
            .iter()
            .filter_map(|range| geometry.span(*range))
            .map(|span| u64::from(span.len))
            .sum();
        Self {
            geometry,
            connections: u32::try_from(connections).unwrap_or(u32::MAX).max(1),
            state: Mutex::new(State {
                done,
                copies: vec![0; count],
                holders,
                done_bytes,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next request for a connection to a peer holding `held`, of at most `max_blocks`
    /// blocks. `own` are the requests the connection already has in flight; duplicates are
    /// only handed to a connection with none.
    pub fn assign(&self, held: &BlockSet, own: &[BlockRange], max_blocks: u32) -> Assignment {
        let mut state = self.lock();
        let mut rarest: Option<(u16, u16)> = None;
        let mut free_count = 0u32;
        for block in 0..self.geometry.block_count() {
            let Ok(block) = u16::try_from(block) else {
                break;
            };
            if !state.is_free(block) {
                continue;
            }
            free_count += 1;
            if !held.contains(block) {
                continue;
            }
            let holders = state.holders_of(block);
            if rarest.is_none_or(|(fewest, _)| holders < fewest) {
                rarest = Some((holders, block));
            }
        }
        if let Some((fewest, start)) = rarest {
            // Rare blocks are not bundled with commoner ones that other peers could send.
            let share = free_count / (SHARE_SPLIT * self.connections);
            let max_blocks = max_blocks.min(share.max(1));
            let range = state.run_from(start, held, max_blocks, |state, block| {
                state.is_free(block) && state.holders_of(block) <= fewest
            });
            state.claim(range);
            return Assignment::Fetch(range);
        }
        if free_count == 0 && own.is_empty() {
            // Endgame: take the back half of the longest run in flight elsewhere; its peer
            // sends from the front, so the two copies meet in the middle.
            let longest = runs_of(self.geometry.block_count(), |block| {
                held.contains(block) && state.can_duplicate(block, own)
            })
            .into_iter()
            .max_by_key(BlockRange::len);
            if let Some(run) = longest {
                let take = run.len().div_ceil(2).min(max_blocks.max(1));
                let start = u32::from(run.end()) + 1 - take;
                let range = u16::try_from(start)
                    .ok()
                    .and_then(|start| BlockRange::new(start, run.end()))
                    .unwrap_or(run);
                state.claim(range);
                return Assignment::Fetch(range);
            }
        }
        if held.minus(&state.done).is_empty() {
            Assignment::NothingLeft
        } else {
            Assignment::Wait
        }
    }

    /// Saves one verified block unless another copy already did: `write` runs under the same
    /// lock as the check, so an endgame duplicate never overwrites a block already done.
    /// Returns whether this copy was the first.
    pub fn complete_with<E>(
        &self,
        block: u16,
        write: impl FnOnce() -> Result<(), E>,
    ) -> Result<bool, E> {
        let mut state = self.lock();
        if state.done.contains(block) {
            return Ok(false);
        }
        write()?;
        state.done.insert(block);
        state.done_bytes += self
            .geometry
            .span(BlockRange::single(block))
            .map_or(0, |span| u64::from(span.len));
        self.changed.notify_all();
        Ok(true)
    }

    /// A request was answered or abandoned: its blocks not done are free again.
    pub fn release(&self, range: BlockRange) {
        let mut state = self.lock();
        for block in range.start()..=range.end() {
            if let Some(copies) = state.copies.get_mut(usize::from(block)) {
                *copies = copies.saturating_sub(1);
            }
        }
        self.changed.notify_all();
    }

    /// A peer holding `held` is gone for good.
    pub fn drop_holder(&self, held: &BlockSet) {
        let mut state = self.lock();
        for (block, holders) in state.holders.iter_mut().enumerate() {
            if u16::try_from(block).is_ok_and(|block| held.contains(block)) {
                *holders = holders.saturating_sub(1);
            }
        }
        self.changed.notify_all();
    }

    /// Waits up to `timeout` for any block to finish or come free.
    pub fn wait(&self, timeout: Duration) {
        let state = self.lock();
        let _ = self.changed.wait_timeout(state, timeout);
    }

    /// Waits up to `timeout` for the last block to arrive.
    pub fn wait_finished(&self, timeout: Duration) {
        let state = self.lock();
        let _ = self
            .changed
            .wait_timeout_while(state, timeout, |state| !state.done.is_full());
    }

    pub fn is_finished(&self) -> bool {
        self.lock().done.is_full()
    }

    pub fn done(&self) -> BlockSet {
        self.lock().done.clone()
    }

    pub fn done_bytes(&self) -> u64 {
        self.lock().done_bytes
    }
}

/// The maximal runs of blocks in `range` for which `wanted` holds.
fn runs(range: BlockRange, wanted: impl Fn(u16) -> bool) -> Vec<BlockRange> {
    let mut runs = Vec::new();
    let mut start = None;
    for block in range.start()..=range.end() {
        match (wanted(block), start) {
            (true, None) => start = Some(block),
            (false, Some(first)) => {
                runs.extend(BlockRange::new(first, block - 1));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(first) = start {
        runs.extend(BlockRange::new(first, range.end()));
    }
    runs
}

/// The maximal runs among blocks `0..count` for which `wanted` holds.
fn runs_of(count: u32, wanted: impl Fn(u16) -> bool) -> Vec<BlockRange> {
    count
        .checked_sub(1)
        .and_then(|last| u16::try_from(last).ok())
        .and_then(|last| BlockRange::new(0, last))
        .map_or_else(Vec::new, |all| runs(all, wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: u16, end: u16) -> BlockRange {
        BlockRange::new(start, end).unwrap_or(BlockRange::single(start))
    }

    /// 10 blocks of 1024 bytes.
    fn geometry() -> Geometry {
        Geometry::new(10 * 1024)
    }

    /// Hands out every free block `held` can take, as a busy connection (no duplicates).
    fn assign_all(scheduler: &Scheduler, held: &BlockSet) -> Vec<BlockRange> {
        let mut ranges = Vec::new();
        while let Assignment::Fetch(range) = scheduler.assign(held, &[range(0, 0)], 100) {
            ranges.push(range);
        }
        ranges
    }

    #[test]
    fn rarest_blocks_come_first_in_shrinking_shares() {
        let geometry = Geometry::new(40 * 1024);
        let everything = BlockSet::from_ranges(40, &[range(0, 39)]);
        let tail = BlockSet::from_ranges(40, &[range(24, 39)]);
        let scheduler = Scheduler::new(geometry, BlockSet::new(40), &[everything.clone(), tail], 1);
        let ranges = assign_all(&scheduler, &everything);
        // Blocks 0-23 have one holder, 24-39 two: the rare ones go first, never bundled
        // with common ones, in requests that shrink as the free blocks run out.
        let rare = ranges.iter().take_while(|range| range.end() <= 23);
        assert_eq!(rare.map(|range| range.len()).sum::<u32>(), 24);
        assert!(
            ranges
                .iter()
                .all(|range| range.end() <= 23 || range.start() >= 24)
        );
        assert_eq!(ranges.first(), Some(&range(0, 9)));
        assert_eq!(ranges.last().map(BlockRange::len), Some(1));
        assert_eq!(ranges.iter().map(|range| range.len()).sum::<u32>(), 40);
    }

    #[test]
    fn endgame_duplicates_back_halves_on_idle_connections_and_first_copy_wins() {
        let everything = BlockSet::from_ranges(10, &[range(0, 9)]);
        let scheduler = Scheduler::new(
            geometry(),
            BlockSet::new(10),
            &[everything.clone(), everything.clone()],
            2,
        );
        let handed_out: u32 = assign_all(&scheduler, &everything)
            .iter()
            .map(BlockRange::len)
            .sum();
        assert_eq!(handed_out, 10);
        // All is in flight: a busy connection waits, idle ones take back halves.
        assert_eq!(
            scheduler.assign(&everything, &[range(0, 1)], 100),
            Assignment::Wait
        );
        assert_eq!(
            scheduler.assign(&everything, &[], 100),
            Assignment::Fetch(range(5, 9))
        );
        assert_eq!(
            scheduler.assign(&everything, &[], 100),
            Assignment::Fetch(range(2, 4))
        );
        assert_eq!(
            scheduler.assign(&everything, &[], 100),
            Assignment::Fetch(range(1, 1))
        );
        assert_eq!(
            scheduler.assign(&everything, &[], 100),
            Assignment::Fetch(range(0, 0))
        );
        // No third copy.
        assert_eq!(scheduler.assign(&everything, &[], 100), Assignment::Wait);
        let mut written = Vec::new();
        let mut complete = |blocks: std::ops::RangeInclusive<u16>| -> Vec<u16> {
            blocks
                .filter(|&block| {
                    let save = || {
                        written.push(block);
                        Ok::<(), ()>(())
                    };
                    scheduler.complete_with(block, save) == Ok(true)
                })
                .collect()
        };
        assert_eq!(complete(2..=3), vec![2, 3]);
        // The first copy wins: blocks already done are neither written nor counted again.
        assert_eq!(complete(0..=9), vec![0, 1, 4, 5, 6, 7, 8, 9]);
        assert!(complete(0..=9).is_empty());
        assert_eq!(written, vec![2, 3, 0, 1, 4, 5, 6, 7, 8, 9]);
        assert!(scheduler.is_finished());
        assert_eq!(scheduler.done_bytes(), 10 * 1024);
        assert_eq!(
            scheduler.assign(&everything, &[], 100),
            Assignment::NothingLeft
        );
    }

    #[test]
    fn released_blocks_are_free_again_and_dropped_ones_are_not() {
        let head = BlockSet::from_ranges(10, &[range(0, 4)]);
        let done = BlockSet::from_ranges(10, &[range(9, 9)]);
        let scheduler = Scheduler::new(geometry(), done, std::slice::from_ref(&head), 1);
        assert_eq!(
            scheduler.assign(&head, &[], 1),
            Assignment::Fetch(range(0, 0))
        );
        scheduler.release(range(0, 0));
        assert_eq!(
            scheduler.assign(&head, &[], 1),
            Assignment::Fetch(range(0, 0))
        );
        scheduler.release(range(0, 0));
        scheduler.drop_holder(&head);
        assert_eq!(scheduler.assign(&head, &[], 100), Assignment::Wait);
    }
}
