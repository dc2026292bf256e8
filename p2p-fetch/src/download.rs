//! The parallel download: for every peer, `--connections-per-peer` threads, each with one
//! connection that keeps a pipeline of Block Requests full. A connection that fails hands
//! its blocks back; its peer is retried with backoff, then dropped.

use crate::blockset::BlockSet;
use crate::connection::{Connection, PeerError, printable};
use crate::control::Control;
use crate::discovery::LIMITS;
use crate::log::Log;
use crate::pace::Pace;
use crate::part_file::PartFile;
use crate::scheduler::{Assignment, Scheduler};
use p2p_core::client::ClientEvent;
use p2p_core::manifest::BlockAssembler;
use p2p_core::{BlockRange, Digest, Geometry, Request};
use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Failures a peer may have before it is dropped: with the backoff, a board that reboots
/// within about 3.5 s is kept.
const MAX_FAILURES: u32 = 4;
/// The first retry waits this long; each next one twice as long.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// How long an idle connection waits for blocks to come free before looking again.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// An idle connection sends a File Size Request this often, so the server (which closes
/// connections idle for 30 s by default) keeps it open while blocks may still come free.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// What became of a peer during the download.
#[derive(Debug, Default)]
pub struct PeerStats {
    /// Bytes of blocks whose first copy came from this peer.
    pub bytes: AtomicU64,
    /// Bytes of endgame duplicates that arrived second.
    pub duplicate_bytes: AtomicU64,
    pub connections: AtomicUsize,
    pub dropped: AtomicBool,
    pub errors: Mutex<Vec<String>>,
    live_workers: AtomicUsize,
}

impl PeerStats {
    fn note_error(&self, error: &PeerError) {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(error.to_string());
    }
}

/// Everything the connections share.
pub struct Download<'a> {
    pub geometry: Geometry,
    pub scheduler: &'a Scheduler,
    pub part: &'a PartFile,
    pub control: &'a Control,
    pub log: &'a Log,
    pub timeout: Duration,
    /// Every block's digest: each block is then checked before it is saved.
    pub digests: Option<&'a [Digest]>,
}

/// The block a connection is receiving, hashed as it arrives and saved only once whole and
/// verified: up to the largest block (64 KiB, of a file near 4 GiB).
type Assembly = BlockAssembler<65536>;

impl Download<'_> {
    /// Downloads from one peer over `connections` connections until nothing is left for it.
    pub fn run_peer(
        &self,
        addr: SocketAddrV4,
        held: &BlockSet,
        stats: &PeerStats,
        connections: usize,
    ) {
        stats.live_workers.store(connections, Ordering::SeqCst);
        std::thread::scope(|scope| {
            for _ in 0..connections {
                scope.spawn(|| {
                    let gave_up = self.run_worker(addr, held, stats);
                    let last = stats.live_workers.fetch_sub(1, Ordering::SeqCst) == 1;
                    if gave_up && last {
                        stats.dropped.store(true, Ordering::SeqCst);
                        self.scheduler.drop_holder(held);
                    }
                });
            }
        });
    }

    /// One connection's life, reconnecting after transient failures; returns whether it
    /// gave up on the peer.
    fn run_worker(&self, addr: SocketAddrV4, held: &BlockSet, stats: &PeerStats) -> bool {
        let mut failures = 0;
        loop {
            if self.control.is_stopped() {
                return false;
            }
            let error = match self.fetch_over_connection(addr, held, stats) {
                Ok(()) => return false,
                Err(_) if self.control.is_stopped() => return false,
                Err(error) => error,
            };
            stats.note_error(&error);
            failures += 1;
            if !error.is_transient() || failures >= MAX_FAILURES {
                self.log
                    .warn(&format!("{addr}: {error}; dropping this peer"));
                return true;
            }
            let backoff = FIRST_BACKOFF * 2u32.pow(failures - 1);
            self.log.warn(&format!(
                "{addr}: {error}; retrying in {} ms",
                backoff.as_millis()
            ));
            let until = Instant::now() + backoff;
            while Instant::now() < until && !self.control.is_stopped() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn fetch_over_connection(
        &self,
        addr: SocketAddrV4,
        held: &BlockSet,
        stats: &PeerStats,
    ) -> Result<(), PeerError> {
        let mut connection: Connection = Connection::open(addr, self.timeout, LIMITS)?;
        let id = connection
            .try_clone_stream()
            .map(|stream| self.control.register(stream))
            .map_err(PeerError::Io)?;
        stats.connections.fetch_add(1, Ordering::SeqCst);
        let mut in_flight = VecDeque::new();
        let result = self.pipeline(&mut connection, held, stats, &mut in_flight);
        for range in in_flight {
            self.scheduler.release(range);
        }
        stats.connections.fetch_sub(1, Ordering::SeqCst);
        self.control.unregister(id);
        result
    }

    /// Keeps the connection's pipeline full and its answers flowing to disk; returns when
    /// the download is complete or stopped, or needs nothing more from this peer.
    fn pipeline(
        &self,
        connection: &mut Connection,
        held: &BlockSet,
        stats: &PeerStats,
        in_flight: &mut VecDeque<BlockRange>,
    ) -> Result<(), PeerError> {
        let expected_size = self.geometry.file_size();
        connection.set_file_size(expected_size);
        // The peer's file may have changed since discovery; check before trusting its data.
        connection.send(&[Request::FileSize])?;
        let mut pace = Pace::new(self.geometry.block_size());
        let mut assembly = Box::new(Assembly::new());
        let mut nothing_left = false;
        let mut last_send = Instant::now();
        loop {
            if self.control.is_stopped() || self.scheduler.is_finished() {
                return Ok(());
            }
            let mut batch = Vec::new();
            while !nothing_left && connection.outstanding() + batch.len() < pace.depth() {
                let own: Vec<BlockRange> = in_flight.iter().chain(&batch).copied().collect();
                match self.scheduler.assign(held, &own, pace.request_blocks()) {
                    Assignment::Fetch(range) => batch.push(range),
                    Assignment::Wait => break,
                    Assignment::NothingLeft => nothing_left = true,
                }
            }
            if !batch.is_empty() {
                let requests: Vec<Request> = batch
                    .iter()
                    .map(|range| Request::Block {
                        start: range.start(),
                        end: range.end(),
                    })
                    .collect();
                in_flight.extend(batch);
                connection.send(&requests)?;
                last_send = Instant::now();
            }
            if connection.outstanding() == 0 {
                if nothing_left {
                    return Ok(());
                }
                if last_send.elapsed() >= KEEPALIVE {
                    connection.send(&[Request::FileSize])?;
                    last_send = Instant::now();
                } else {
                    self.scheduler.wait(IDLE_WAIT);
                    // Time spent waiting for blocks is not the peer's slowness.
                    pace.restart();
                    continue;
                }
            }
            connection.receive(&mut |event, completed| {
                match event {
                    Some(ClientEvent::BlockData { offset, data }) => {
                        self.store(&mut assembly, offset, data, stats)?
                    }
                    Some(ClientEvent::FileSize(size)) if size != expected_size => {
                        return Err(PeerError::SizeMismatch {
                            expected: expected_size,
                            got: size,
                        });
                    }
                    Some(ClientEvent::BlockFailure(reason)) => {
                        let range = in_flight.front().copied().unwrap_or(BlockRange::single(0));
                        return Err(PeerError::BlockFailure {
                            range,
                            reason: printable(reason),
                        });
                    }
                    _ => {}
                }
                if let Some(Request::Block { .. }) = completed
                    && let Some(range) = in_flight.pop_front()
                {
                    self.scheduler.release(range);
                    let bytes = self
                        .geometry
                        .span(range)
                        .map_or(0, |span| u64::from(span.len));
                    pace.completed(bytes);
                }
                Ok(())
            })?;
        }
    }

    /// Gathers block data into whole blocks and saves each one unless another connection
    /// saved it first: the check and the write are one decision (`complete_with`), so an
    /// endgame duplicate never overwrites a block already done. With a manifest, a block whose
    /// SHA-256 is not its digest ends the connection (and drops the peer).
    fn store(
        &self,
        assembly: &mut Assembly,
        mut offset: u32,
        mut data: &[u8],
        stats: &PeerStats,
    ) -> Result<(), PeerError> {
        while !data.is_empty() {
            let (used, whole) = assembly
                .push(self.geometry, offset, data)
                .map_err(|error| PeerError::BadBlock(error.block))?;
            offset += used as u32;
            data = data.get(used..).unwrap_or_default();
            let Some(whole) = whole else { continue };
            if let Some(digests) = self.digests
                && digests.get(usize::from(whole.block)) != Some(&whole.digest)
            {
                return Err(PeerError::BadBlock(whole.block));
            }
            let span = self
                .geometry
                .span(BlockRange::single(whole.block))
                .ok_or(PeerError::BadBlock(whole.block))?;
            let first = self
                .scheduler
                .complete_with(whole.block, || self.part.write_at(span.offset, whole.bytes))
                .map_err(|failure| {
                    let error = PeerError::Io(std::io::Error::other(failure.message.clone()));
                    self.control.fail(failure);
                    error
                })?;
            if first {
                self.part.mark_done(BlockRange::single(whole.block));
                stats
                    .bytes
                    .fetch_add(u64::from(span.len), Ordering::Relaxed);
            } else {
                stats
                    .duplicate_bytes
                    .fetch_add(u64::from(span.len), Ordering::Relaxed);
            }
        }
        Ok(())
    }
}
