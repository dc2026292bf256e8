//! Serving and fetching over `std::net` TCP through the blocking `embedded-io` adapter.
//!
//! ```text
//! cargo run -p p2p-core --features embedded-io --example serve_std            # self-check
//! cargo run -p p2p-core --features embedded-io --example serve_std -- --serve  # keep serving
//! ```
//!
//! It serves a generated 100 000-byte file on 127.0.0.1 (port 8888 with `--serve`, any free
//! port otherwise), one thread per connection, each connection served by
//! `p2p_core::io::blocking::serve_connection`. Without `--serve` it then connects to itself
//! with `p2p_core::io::blocking::Client`, asks the file size, the held blocks and every
//! block, checks the bytes against the file, and exits.

use embedded_io_adapters::std::FromStd;
use p2p_core::client::{ClientEvent, ClientLimits};
use p2p_core::io::{IoBuffers, blocking};
use p2p_core::server::ServerConfig;
use p2p_core::wire::Request;
use p2p_core::{Geometry, Instant, SliceStore};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let forever = std::env::args().any(|arg| arg == "--serve");
    // Leaked once: every connection's thread borrows the file and the store.
    let data: &'static [u8] = (0..100_000u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .leak();
    let store: &'static SliceStore<'static> = Box::leak(Box::new(
        SliceStore::new(data).map_err(|e| format!("{e:?}"))?,
    ));
    let port = if forever { p2p_core::DEFAULT_PORT } else { 0 };
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    let addr = listener.local_addr()?;
    println!("serving {} bytes on {addr}", data.len());
    let server = std::thread::spawn(move || serve(listener, store));
    if forever {
        let _ = server.join();
        return Ok(());
    }

    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut rx = [0u8; 4096];
    let mut client: blocking::Client<'_, _> =
        blocking::Client::new(FromStd::new(stream), ClientLimits::default(), &mut rx);
    let size = client.file_size().map_err(|e| e.to_string())?;
    let mut held = Vec::new();
    client
        .request(Request::BlockList, &mut |event| {
            if let ClientEvent::Range(range) = event {
                held.push(range);
            }
        })
        .map_err(|e| e.to_string())?;
    println!("file size {size}, held {held:?}");
    let last = u16::try_from(Geometry::new(size).block_count() - 1)?;
    let mut fetched = Vec::with_capacity(data.len());
    client
        .fetch_blocks(0, last, &mut |offset, bytes| {
            assert_eq!(offset as usize, fetched.len(), "block data in order");
            fetched.extend_from_slice(bytes);
        })
        .map_err(|e| e.to_string())?;
    if fetched != data {
        return Err("fetched bytes differ from the served file".into());
    }
    println!(
        "fetched blocks 0-{last}: {} bytes, identical",
        fetched.len()
    );
    Ok(())
}

/// Accepts connections for ever, each served on its own thread.
fn serve(listener: TcpListener, store: &'static SliceStore<'static>) {
    let started = std::time::Instant::now();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        std::thread::spawn(move || {
            // The adapter checks the idle timeout when it wakes; the read timeout wakes it.
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            let peer = stream.peer_addr().ok();
            let mut stream = FromStd::new(stream);
            let (mut rx, mut tx) = ([0u8; 64], [0u8; 1460]);
            let mut now = || Instant::from_millis(started.elapsed().as_millis() as u64);
            let ended = blocking::serve_connection(
                &mut stream,
                ServerConfig::new(store, &[]),
                IoBuffers {
                    rx: &mut rx,
                    tx: &mut tx,
                },
                &mut now,
                &mut |_| {},
            );
            println!("{peer:?}: {ended:?}");
        });
    }
}
