//! The host-sim conformance checks against p2p-core's blocking embedded-io adapter instead:
//! servers on std `TcpListener`s on loopback, a thread per connection, each connection served
//! by `p2p_core::io::blocking::serve_connection`. Loopback only, so no root is needed.

use embedded_io_adapters::std::FromStd;
use p2p_core::io::{IoBuffers, blocking};
use p2p_core::server::ServerConfig;
use p2p_core::wire::PeerAddr;
use p2p_core::{BlockRanges, Instant, SliceStore};
use p2p_tests::{SAMPLE, conformance, download_concurrently};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

/// Serves `data` holding `held` (all if empty) and listing `peers` on a loopback port, for as
/// long as the test process runs.
fn serve(data: &'static [u8], held: &str, peers: &'static [PeerAddr]) -> SocketAddr {
    let store: &'static SliceStore<'static> = Box::leak(Box::new(
        if held.is_empty() {
            SliceStore::new(data)
        } else {
            SliceStore::with_held(data, held.parse::<BlockRanges<8>>().expect("held"))
        }
        .expect("store"),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let started = std::time::Instant::now();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                // Wakes the adapter now and then, so a silent peer cannot hold the thread.
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                let _ = stream.set_nodelay(true);
                let mut stream = FromStd::new(stream);
                let (mut rx, mut tx) = ([0u8; 64], vec![0u8; 4096]);
                let mut now = || Instant::from_millis(started.elapsed().as_millis() as u64);
                let _ = blocking::serve_connection(
                    &mut stream,
                    ServerConfig::new(store, peers),
                    IoBuffers {
                        rx: &mut rx,
                        tx: &mut tx,
                    },
                    &mut now,
                    &mut |_| {},
                );
            });
        }
    });
    addr
}

#[test]
fn every_message_is_answered() {
    static PEERS: [PeerAddr; 2] = [
        PeerAddr::new([10, 0, 0, 3], 8888),
        PeerAddr::new([10, 0, 0, 4], 9000),
    ];
    conformance::every_message_is_answered(serve(SAMPLE, "0-99,200-292", &PEERS));
}

#[test]
fn requests_split_byte_by_byte_and_pipelined_are_answered_in_order() {
    conformance::requests_split_byte_by_byte_and_pipelined(serve(SAMPLE, "", &[]));
}

#[test]
fn malformed_input_gets_failure_or_error() {
    conformance::malformed_input_gets_failure_or_error(serve(SAMPLE, "0-9", &[]));
}

#[test]
fn eight_concurrent_whole_file_downloads() {
    let data: &'static [u8] = (0..2u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect::<Vec<u8>>()
        .leak();
    let addr = serve(data, "", &[]);
    download_concurrently(addr, 8, &Arc::new(data.to_vec()));
}
