//! Serving a 64 MiB in-memory file through the server session into a 64 KiB transmit buffer,
//! beside a plain copy of the same bytes through the same buffer. Goal: session >= 0.7x copy.
//!
//! `cargo bench -p p2p-core --bench session` prints both and their ratio.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use criterion::{Criterion, Throughput};
use p2p_core::server::{ServerConfig, ServerSession};
use p2p_core::{Instant, SliceStore};
use std::hint::black_box;

const FILE_LEN: usize = 64 << 20;
const TRANSMIT_LEN: usize = 64 << 10;
const GROUP: &str = "serve_64MiB";

/// The whole file as one Block Request, answered into `out` chunk by chunk.
fn serve_through_session(store: &SliceStore<'_, 1>, out: &mut [u8]) -> usize {
    let now = Instant::from_millis(0);
    let mut session = ServerSession::new(ServerConfig::new(store, &[]), now);
    session.receive(&[0x04, 0x00, 0x00, 0xff, 0xff], now, &mut |_| {});
    let mut total = 0;
    loop {
        let len = session.transmit(out, now);
        if len == 0 {
            return total;
        }
        black_box(&out[..len]);
        total += len;
    }
}

/// The anchor: the same bytes copied through the same buffer.
fn plain_copy(data: &[u8], out: &mut [u8]) -> usize {
    let mut total = 0;
    for chunk in data.chunks(out.len()) {
        out[..chunk.len()].copy_from_slice(chunk);
        black_box(&out[..chunk.len()]);
        total += chunk.len();
    }
    total
}

fn mean_ns(id: &str) -> Option<f64> {
    let path = format!("{}/criterion/{GROUP}/{id}/new/estimates.json", target_dir());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn target_dir() -> String {
    std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_string())
}

fn main() {
    let data: Vec<u8> = (0..FILE_LEN).map(|i| (i * 31 % 251) as u8).collect();
    let store = SliceStore::<1>::new(&data).unwrap();
    let mut out = vec![0u8; TRANSMIT_LEN];
    assert_eq!(serve_through_session(&store, &mut out), FILE_LEN + 1);

    let mut criterion = Criterion::default().configure_from_args().sample_size(30);
    let mut group = criterion.benchmark_group(GROUP);
    group.throughput(Throughput::Bytes(FILE_LEN as u64));
    group.bench_function("session", |b| {
        b.iter(|| serve_through_session(&store, &mut out))
    });
    group.bench_function("memcpy", |b| b.iter(|| plain_copy(&data, &mut out)));
    group.finish();
    criterion.final_summary();

    if let (Some(session), Some(copy)) = (mean_ns("session"), mean_ns("memcpy")) {
        let gib_s = |ns: f64| FILE_LEN as f64 / ns * 1e9 / f64::from(1 << 30);
        println!(
            "session {:.2} GiB/s, memcpy {:.2} GiB/s, ratio {:.2} (goal >= 0.70)",
            gib_s(session),
            gib_s(copy),
            copy / session
        );
    }
}
