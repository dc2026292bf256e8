//! A swarm on loopback for the tests: honest peers are p2p-serve's TCP server over a
//! `SliceStore` holding part of a generated file; hostile peers are scripted here.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use p2p_core::server::DEFAULT_IDLE_TIMEOUT;
use p2p_core::wire::{Parsed, PeerAddr, ResponseHeader, emit_range_entry};
use p2p_core::{BlockRanges, Geometry, Request, SliceStore};
use p2p_serve::tcp::TcpServer;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The test file: 5 MiB, 5120 blocks of 1024 bytes.
pub const FILE_SIZE: usize = 5 << 20;
pub const BLOCKS: u16 = 5120;

/// The same pseudo-random 5 MiB for every test.
pub fn file() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        (0..FILE_SIZE)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    })
}

pub fn peer_addr(addr: SocketAddrV4) -> PeerAddr {
    PeerAddr::from(addr)
}

fn listen() -> (TcpListener, SocketAddrV4) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let std::net::SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
        panic!("IPv4 listener");
    };
    (listener, addr)
}

/// An honest peer: p2p-serve's server holding `held` (e.g. "0-3071") and listing `peers`.
pub fn honest(held: &str, peers: &[SocketAddrV4]) -> SocketAddrV4 {
    let (listener, addr) = listen();
    serve_honestly(listener, held, peers);
    addr
}

/// An honest peer on `listener`, as [`honest`].
pub fn serve_honestly(listener: TcpListener, held: &str, peers: &[SocketAddrV4]) {
    let held: BlockRanges<8> = held.parse().unwrap();
    let peers: Vec<PeerAddr> = peers.iter().copied().map(peer_addr).collect();
    std::thread::spawn(move || {
        let store = SliceStore::with_held(file(), held).unwrap();
        let server = TcpServer {
            store: &store,
            peers: &peers,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: 64,
        };
        let _ = server.serve(&listener);
    });
}

/// The digest of every block of the test file, and the file's manifest digest.
pub fn manifest() -> (&'static [p2p_core::Digest], p2p_core::Digest) {
    static DIGESTS: OnceLock<Vec<p2p_core::Digest>> = OnceLock::new();
    let digests = DIGESTS.get_or_init(|| p2p_serve::block_digests(file()));
    let digest = p2p_core::manifest::manifest_digest(FILE_SIZE as u32, digests.iter());
    (digests, digest)
}

/// A peer that serves the whole file and its manifest, listing `peers`; with `corrupt`, every
/// block it sends has one byte wrong (while its digests are the true ones).
pub fn with_digests(peers: &[SocketAddrV4], corrupt: bool) -> SocketAddrV4 {
    let (listener, addr) = listen();
    let peers: Vec<PeerAddr> = peers.iter().copied().map(peer_addr).collect();
    let data: &'static [u8] = if corrupt {
        let mut bad = file().to_vec();
        bad.iter_mut().step_by(1024).for_each(|byte| *byte ^= 0x01);
        Box::leak(bad.into_boxed_slice())
    } else {
        file()
    };
    std::thread::spawn(move || {
        let store = SliceStore::<1>::new(data)
            .unwrap()
            .with_digests(manifest().0)
            .unwrap();
        let server = TcpServer {
            store: &store,
            peers: &peers,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: 64,
        };
        let _ = server.serve(&listener);
    });
    addr
}

/// How a scripted peer answers Block Requests.
#[derive(Debug, Clone, Copy)]
pub enum Blocks {
    Honest,
    /// Never answers.
    Stall,
    /// Answers with bytes that are not a response.
    Garbage,
    /// Sends half of the response, then closes the connection.
    CloseMidResponse,
    /// Honest, at this many bytes per second.
    Throttled(usize),
    /// Honest for this many bytes of block data, then closes everything and stops listening.
    DieAfter(usize),
}

/// A peer scripted by the test: holds the whole file (or says so).
#[derive(Debug, Clone)]
pub struct Scripted {
    pub blocks: Blocks,
    /// The file size it claims (the true one when `None`).
    pub claimed_size: Option<u32>,
    /// Sends a 32767-entry peer list.
    pub huge_peer_list: bool,
    pub peers: Vec<SocketAddrV4>,
}

impl Scripted {
    pub fn new(blocks: Blocks) -> Self {
        Self {
            blocks,
            claimed_size: None,
            huge_peer_list: false,
            peers: Vec::new(),
        }
    }

    pub fn start(self) -> SocketAddrV4 {
        let (listener, addr) = listen();
        listener.set_nonblocking(true).unwrap();
        let script = Arc::new(self);
        let dead = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            while !dead.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (script, dead, sent) = (script.clone(), dead.clone(), sent.clone());
                        std::thread::spawn(move || {
                            let _ = script.serve(stream, &dead, &sent);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            // The listener is dropped here: the peer is gone.
        });
        addr
    }

    fn serve(
        &self,
        mut stream: TcpStream,
        dead: &AtomicBool,
        sent: &AtomicUsize,
    ) -> std::io::Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_millis(50)))?;
        let data = file();
        let geometry = Geometry::new(data.len() as u32);
        let mut input = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            if dead.load(Ordering::SeqCst) {
                let _ = stream.shutdown(Shutdown::Both);
                return Ok(());
            }
            match stream.read(&mut buffer) {
                Ok(0) => return Ok(()),
                Ok(len) => input.extend_from_slice(&buffer[..len]),
                Err(_) => continue,
            }
            while let Ok(Parsed::Complete { value, len }) = Request::parse(&input) {
                input.drain(..len);
                let mut out = Vec::new();
                match value {
                    // As a peer that predates digests: an Error, then close.
                    Request::Digest { .. } => {
                        header(
                            &mut out,
                            ResponseHeader::Error(
                                p2p_core::wire::Reason::new("unknown message type 0x09").unwrap(),
                            ),
                        );
                        stream.write_all(&out)?;
                        let _ = stream.shutdown(Shutdown::Both);
                        return Ok(());
                    }
                    Request::FileSize => {
                        let size = self.claimed_size.unwrap_or(data.len() as u32);
                        header(&mut out, ResponseHeader::FileSize(size));
                    }
                    Request::BlockList => {
                        header(&mut out, ResponseHeader::BlockList { count: 1 });
                        let mut entry = [0u8; 4];
                        let all = geometry.all_blocks().unwrap();
                        emit_range_entry(all, &mut entry).unwrap();
                        out.extend_from_slice(&entry);
                    }
                    Request::PeerList => {
                        let peers: Vec<PeerAddr> = if self.huge_peer_list {
                            (1..=32767u16)
                                .map(|port| PeerAddr::new([127, 0, 0, 2], port))
                                .collect()
                        } else {
                            self.peers.iter().copied().map(peer_addr).collect()
                        };
                        header(
                            &mut out,
                            ResponseHeader::PeerList {
                                count: peers.len() as u16,
                            },
                        );
                        for peer in peers {
                            let mut entry = [0u8; 6];
                            peer.emit(&mut entry).unwrap();
                            out.extend_from_slice(&entry);
                        }
                    }
                    Request::Block { start, end } => {
                        let span = p2p_core::BlockRange::new(start, end)
                            .and_then(|range| geometry.span(range))
                            .unwrap();
                        let bytes = &data[span.offset as usize..(span.offset + span.len) as usize];
                        match self.blocks {
                            Blocks::Stall => loop {
                                if dead.load(Ordering::SeqCst) {
                                    return Ok(());
                                }
                                std::thread::sleep(Duration::from_millis(50));
                                // Keep reading so the client sees a live but silent peer.
                                if let Ok(0) = stream.read(&mut buffer) {
                                    return Ok(());
                                }
                            },
                            Blocks::Garbage => {
                                stream.write_all(&[0x99; 64])?;
                                continue;
                            }
                            Blocks::CloseMidResponse => {
                                stream.write_all(&[0x05])?;
                                stream.write_all(&bytes[..bytes.len() / 2])?;
                                stream.shutdown(Shutdown::Both)?;
                                return Ok(());
                            }
                            Blocks::Throttled(rate) => {
                                stream.write_all(&[0x05])?;
                                let started = Instant::now();
                                let mut written = 0;
                                for chunk in bytes.chunks(rate / 20) {
                                    stream.write_all(chunk)?;
                                    written += chunk.len();
                                    let due = Duration::from_secs_f64(written as f64 / rate as f64);
                                    std::thread::sleep(due.saturating_sub(started.elapsed()));
                                }
                                continue;
                            }
                            Blocks::DieAfter(limit) => {
                                out.push(0x05);
                                let total =
                                    sent.fetch_add(bytes.len(), Ordering::SeqCst) + bytes.len();
                                if total > limit {
                                    out.extend_from_slice(&bytes[..bytes.len() / 2]);
                                    let _ = stream.write_all(&out);
                                    dead.store(true, Ordering::SeqCst);
                                    let _ = stream.shutdown(Shutdown::Both);
                                    return Ok(());
                                }
                                out.extend_from_slice(bytes);
                            }
                            Blocks::Honest => {
                                out.push(0x05);
                                out.extend_from_slice(bytes);
                            }
                        }
                    }
                }
                stream.write_all(&out)?;
            }
        }
    }
}

fn header(out: &mut Vec<u8>, header: ResponseHeader<'_>) {
    let mut bytes = [0u8; 8];
    let len = header.emit(&mut bytes).unwrap();
    out.extend_from_slice(&bytes[..len]);
}

/// A fresh directory for one test's output, removed when dropped.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("p2p-fetch-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

pub fn p2p_fetch() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_p2p-fetch"));
    command.stdin(Stdio::null());
    command
}

/// Runs p2p-fetch to the end; a run longer than a minute is a hang and fails the test.
pub fn run(command: &mut Command) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "p2p-fetch hung; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The `--json` summary of a run.
pub fn summary(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("no JSON summary ({error}): {}", stderr(output)))
}

/// The summary's entry for the peer at `addr`.
pub fn peer_summary(summary: &serde_json::Value, addr: SocketAddrV4) -> serde_json::Value {
    summary["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|peer| peer["address"] == addr.to_string())
        .cloned()
        .unwrap_or_else(|| panic!("{addr} missing from {summary}"))
}

pub fn assert_is_the_file(path: &Path) {
    let got = std::fs::read(path).unwrap();
    assert_eq!(got.len(), FILE_SIZE, "size of {}", path.display());
    assert!(
        got == file(),
        "{} differs from the served file",
        path.display()
    );
}
