//! The scaling measurement of BENCHMARKS.md, run by hand (it takes ~10 s and reports
//! times, which tests must not assert on):
//! `cargo test --release -p p2p-fetch --test scaling -- --ignored --nocapture`
//!
//! Peers limited to 20 Mbit/s each (2.5 MB/s, the scripted peers of tests/common standing
//! in for `host-sim --rate 20000`): the 5 MiB file from one of them, then from four.

mod common;

use common::*;
use std::time::{Duration, Instant};

const RATE: usize = 2_500_000;
const RUNS: usize = 3;

/// Median time to fetch the file from `peers` rate-limited peers.
fn fetch_time(peers: usize) -> Duration {
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|run_index| {
            let others: Vec<_> = (1..peers)
                .map(|_| Scripted::new(Blocks::Throttled(RATE)).start())
                .collect();
            let host = Scripted {
                peers: others,
                ..Scripted::new(Blocks::Throttled(RATE))
            }
            .start();
            let dir = scratch(&format!("scaling-{peers}-{run_index}"));
            let output = dir.join("file.bin");
            let started = Instant::now();
            let result = run(p2p_fetch()
                .arg(host.to_string())
                .arg("-q")
                .arg("-o")
                .arg(&output));
            let elapsed = started.elapsed();
            assert!(result.status.success(), "{}", stderr(&result));
            assert_is_the_file(&output);
            elapsed
        })
        .collect();
    times.sort();
    times[RUNS / 2]
}

#[test]
#[ignore = "a measurement for BENCHMARKS.md, run by hand"]
fn four_rate_limited_peers_against_one() {
    let one = fetch_time(1);
    let four = fetch_time(4);
    println!(
        "5 MiB at 20 Mbit/s per peer, median of {RUNS}: one peer {:.3} s, four peers {:.3} s, speed-up {:.2}x",
        one.as_secs_f64(),
        four.as_secs_f64(),
        one.as_secs_f64() / four.as_secs_f64()
    );
}
