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
/// Weight of the newest rate sample.
const SMOOTHING: f64 = 0.3;

/// One connection's speed estimate.
#[derive(Debug)]
pub struct Pace {
    block_size: u32,
    bytes_per_second: Option<f64>,
    last_completion: Instant,
}

impl Pace {
    pub fn new(block_size: u32) -> Self {
        Self {
            block_size,
            bytes_per_second: None,
            last_completion: Instant::now(),
        }
    }

    /// The pipeline just went from empty to busy: idle time is not the peer's slowness.
    pub fn restart(&mut self) {
        self.last_completion = Instant::now();
    }

    /// A response of `bytes` just completed.
    pub fn completed(&mut self, bytes: u64) {
        let now = Instant::now();
        let elapsed = now
            .duration_since(self.last_completion)
            .as_secs_f64()
            .max(1e-4);
        self.last_completion = now;
        let sample = bytes as f64 / elapsed;
        self.bytes_per_second = Some(match self.bytes_per_second {
            Some(rate) => rate + SMOOTHING * (sample - rate),
            None => sample,
        });
    }

    fn request_bytes(&self) -> u64 {
        match self.bytes_per_second {
            Some(rate) => ((rate * REQUEST_TIME.as_secs_f64()) as u64)
                .clamp(MIN_REQUEST_BYTES, MAX_REQUEST_BYTES),
            None => MIN_REQUEST_BYTES,
        }
    }

    /// Blocks per Block Request.
    pub fn request_blocks(&self) -> u32 {
        (self.request_bytes() / u64::from(self.block_size)).max(1) as u32
    }

    /// Requests to keep outstanding: 2 for a peer of unknown or low speed, more for a fast one.
    pub fn depth(&self) -> usize {
        let wanted = self.bytes_per_second.map_or(2.0, |rate| {
            rate * PIPELINE_TIME.as_secs_f64() / self.request_bytes() as f64
        });
        (wanted.ceil() as usize).clamp(2, MAX_PIPELINE)
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
        assert_eq!((fast.request_blocks(), fast.depth()), (1024, MAX_PIPELINE));
        let mut slow = Pace::new(4096);
        slow.bytes_per_second = Some(100_000.0);
        assert_eq!((slow.request_blocks(), slow.depth()), (16, 2));
        slow.completed(1_000_000);
        assert!(slow.bytes_per_second.is_some_and(|rate| rate > 100_000.0));
    }
}
