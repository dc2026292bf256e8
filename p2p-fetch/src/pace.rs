//! How much one connection asks for: request size and pipeline depth follow the peer's
//! measured speed, so a fast peer is kept busy and a slow one never holds much of the file.

use crate::connection::MAX_PIPELINE;
use std::time::{Duration, Instant};

/// Requests are at least this big once the peer's speed is known...
const MIN_REQUEST_BYTES: u64 = 64 * 1024;
/// ...and never bigger than this.
const MAX_REQUEST_BYTES: u64 = 1024 * 1024;
/// Each request should take about this long to arrive.
const REQUEST_TIME: Duration = Duration::from_millis(250);
/// The pipeline should hold about this much transfer time.
const PIPELINE_TIME: Duration = Duration::from_millis(500);
/// Speed is measured over windows at least this long: data arrives in bursts, and one
/// quick response says little about the peer.
const WINDOW: Duration = Duration::from_millis(50);
/// Weight of the newest window's speed.
const SMOOTHING: f64 = 0.5;
/// Depth before the speed is known.
const START_DEPTH: usize = 2;

/// One connection's speed estimate.
#[derive(Debug)]
pub struct Pace {
    block_size: u32,
    bytes_per_second: Option<f64>,
    window_start: Instant,
    window_bytes: u64,
    depth: usize,
}

impl Pace {
    pub fn new(block_size: u32) -> Self {
        Self {
            block_size,
            bytes_per_second: None,
            window_start: Instant::now(),
            window_bytes: 0,
            depth: START_DEPTH,
        }
    }

    /// Starts a new measuring window (after the connection sat idle).
    pub fn restart(&mut self) {
        self.window_start = Instant::now();
        self.window_bytes = 0;
    }

    /// A response of `bytes` just completed.
    pub fn completed(&mut self, bytes: u64) {
        self.window_bytes += bytes;
        let elapsed = self.window_start.elapsed();
        if elapsed >= WINDOW {
            let sample = self.window_bytes as f64 / elapsed.as_secs_f64();
            self.bytes_per_second = Some(match self.bytes_per_second {
                Some(rate) => rate + SMOOTHING * (sample - rate),
                None => sample,
            });
            self.restart();
        }
        // Deeper by one request at a time, shallower at once.
        self.depth = self.wanted_depth().min(self.depth + 1);
    }

    fn request_bytes(&self) -> u64 {
        match self.bytes_per_second {
            Some(rate) => ((rate * REQUEST_TIME.as_secs_f64()) as u64)
                .clamp(MIN_REQUEST_BYTES, MAX_REQUEST_BYTES),
            None => MIN_REQUEST_BYTES,
        }
    }

    fn wanted_depth(&self) -> usize {
        let wanted = self.bytes_per_second.map_or(START_DEPTH as f64, |rate| {
            rate * PIPELINE_TIME.as_secs_f64() / self.request_bytes() as f64
        });
        (wanted.ceil() as usize).clamp(START_DEPTH, MAX_PIPELINE)
    }

    /// Blocks per Block Request.
    pub fn request_blocks(&self) -> u32 {
        (self.request_bytes() / u64::from(self.block_size)).max(1) as u32
    }

    /// Requests to keep outstanding: 2 for a peer of unknown or low speed, more for a fast one.
    pub fn depth(&self) -> usize {
        self.depth
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_peer_gets_big_deep_requests_and_a_slow_one_small_shallow_ones() {
        let mut fast = Pace::new(1024);
        assert_eq!((fast.request_blocks(), fast.depth()), (64, 2));
        fast.bytes_per_second = Some(1e9);
        assert_eq!(fast.request_blocks(), 1024);
        // The depth grows one request at a time.
        fast.completed(1);
        assert_eq!(fast.depth(), 3);
        for _ in 0..20 {
            fast.completed(1);
        }
        assert_eq!(fast.depth(), MAX_PIPELINE);
        let mut slow = Pace::new(4096);
        slow.bytes_per_second = Some(100_000.0);
        assert_eq!((slow.request_blocks(), slow.depth()), (16, 2));
    }

    #[test]
    fn a_burst_within_one_window_is_not_taken_for_speed() {
        let mut pace = Pace::new(1024);
        pace.completed(64 * 1024);
        assert_eq!(pace.bytes_per_second, None);
        assert_eq!((pace.request_blocks(), pace.depth()), (64, 2));
    }
}
