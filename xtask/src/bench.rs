//! `cargo xtask bench ...`: measurements side by side with their anchors, in one run, one
//! module a benchmark. Each prints a Markdown table for BENCHMARKS.md; servers are started
//! and measured through p2p-testnet's harness, as the end-to-end tests do.

mod fill;
mod firmware;
mod host_sim;
mod p2p_fetch;
mod session;
mod swarm;

use crate::run::root;
use p2p_core::{Geometry, Request};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a started server may take to answer its first File Size Request (a large file's
/// blocks are hashed at start-up).
const READY_LIMIT: Duration = Duration::from_secs(20);

/// The QEMU board's MAC ends in this byte, and its fallback address is 10.0.0.(this).
const BOARD_MAC: u8 = 0x10;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// One benchmark; all of them, with BENCHMARKS.md's summary rewritten, when omitted.
    #[command(subcommand)]
    what: Option<BenchWhat>,
}

#[derive(clap::Subcommand)]
enum BenchWhat {
    /// host-sim over its TAP vs raw smoltcp on the same TAP vs kernel TCP over veth; loss,
    /// memory and idle CPU.
    HostSim {
        /// Size of the downloaded file, MiB.
        #[arg(long, default_value_t = 256)]
        mib: u64,
    },
    /// p2p-fetch of 256 MiB from host-sim --listen vs curl from nginx on loopback; p2p-fetch's
    /// peak RSS downloading 1 GiB.
    P2pFetch,
    /// p2p-core's server session vs a plain copy (criterion).
    Core,
    /// p2p-fetch from four host-sims shaped to 20 Mbit/s each, against from one of them.
    Swarm,
    /// Each board's flash and RAM (static plus measured peak stack), and the QEMU board's
    /// download throughput beside the same firmware sending raw TCP.
    Firmware,
    /// An empty host-sim filling itself from two host-sims against p2p-fetch from the same
    /// two; the QEMU board filling against the same board serving.
    Fill,
}

pub fn run_bench(args: BenchArgs) -> Result<(), String> {
    let rows = match args.what {
        Some(BenchWhat::HostSim { mib }) => host_sim::host_sim(mib << 20)?,
        Some(BenchWhat::Firmware) => firmware::firmware()?,
        Some(BenchWhat::Swarm) => swarm::swarm()?,
        Some(BenchWhat::P2pFetch) => p2p_fetch::p2p_fetch()?,
        Some(BenchWhat::Core) => session::session()?,
        Some(BenchWhat::Fill) => fill::fill()?,
        None => {
            let mut all = Rows::default();
            for rows in [
                session::session()?,
                host_sim::host_sim(256 << 20)?,
                p2p_fetch::p2p_fetch()?,
                swarm::swarm()?,
                firmware::firmware()?,
                fill::fill()?,
            ] {
                all.0.extend(rows.0);
            }
            write_summary(&all)?;
            all
        }
    };
    rows.print();
    Ok(())
}

const SUMMARY_START: &str = "<!-- summary: written by cargo xtask bench -->";
const SUMMARY_END: &str = "<!-- end of summary -->";

/// Replaces the summary table at the top of BENCHMARKS.md; the sections below it explain each
/// figure and are kept.
fn write_summary(rows: &Rows) -> Result<(), String> {
    let path = root().join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let table = format!(
        "{SUMMARY_START}\nEvery row from one run of `cargo xtask bench` (as root).\n\n{}\n{SUMMARY_END}",
        rows.table()
    );
    let updated = match (text.find(SUMMARY_START), text.find(SUMMARY_END)) {
        (Some(start), Some(end)) if start < end => {
            format!(
                "{}{table}{}",
                &text[..start],
                &text[end + SUMMARY_END.len()..]
            )
        }
        _ => match text.find("\n## ") {
            Some(at) => format!("{}\n{table}\n{}", &text[..at], &text[at..]),
            None => format!("{text}\n{table}\n"),
        },
    };
    std::fs::write(&path, updated).map_err(|e| e.to_string())
}

/// Result rows: each is shown as soon as it is measured, and all of them as a table at the end.
#[derive(Default)]
struct Rows(Vec<String>);

impl Rows {
    fn push(&mut self, row: String) {
        eprintln!("measured: {row}");
        self.0.push(row);
    }

    fn table(&self) -> String {
        let mut table =
            String::from("| what | ours | anchor | ratio | goal |\n|---|---|---|---|---|\n");
        for row in &self.0 {
            table.push_str(row);
            table.push('\n');
        }
        table
    }

    fn print(&self) {
        println!("\n{}", self.table());
    }
}

/// `requests` as they go on the wire, one after another.
pub(crate) fn encode(requests: &[Request]) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    for request in requests {
        let mut out = [0u8; Request::MAX_LEN];
        let len = request
            .emit(&mut out)
            .map_err(|e| format!("{request}: {e}"))?;
        bytes.extend_from_slice(&out[..len]);
    }
    Ok(bytes)
}

/// A Block Request for every block of a file of `size` bytes.
pub(crate) fn whole_file(size: u64) -> Result<Vec<u8>, String> {
    first_bytes(size, size)
}

/// A Block Request for the blocks holding the first `bytes` bytes of a file of `size` bytes
/// (whole blocks of that file's own geometry).
fn first_bytes(size: u64, bytes: u64) -> Result<Vec<u8>, String> {
    let geometry = Geometry::new(u32::try_from(size).map_err(|_| "file over 4 GiB")?);
    let blocks = bytes.div_ceil(u64::from(geometry.block_size())).max(1);
    let end = u16::try_from(blocks - 1).map_err(|_| "more than 65536 blocks")?;
    encode(&[Request::Block { start: 0, end }])
}

fn gbit(bytes: u64, time: Duration) -> f64 {
    bytes as f64 * 8.0 / time.as_secs_f64() / 1e9
}

fn best_of(mut measure: impl FnMut() -> Result<Duration, String>) -> Result<Duration, String> {
    let mut best = Duration::MAX;
    for _ in 0..RUNS {
        best = best.min(measure()?);
    }
    Ok(best)
}

/// A file of `size` bytes of varied content, written once.
fn write_file(path: &Path, size: u64) -> Result<(), String> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| e.to_string())?);
    let chunk: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let mut left = size;
    while left > 0 {
        let len = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..len]).map_err(|e| e.to_string())?;
        left -= len as u64;
    }
    file.flush().map_err(|e| e.to_string())
}

/// Best of this many runs for each throughput figure.
const RUNS: usize = 3;

fn connect_retrying(addr: SocketAddr) -> Result<TcpStream, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(stream) => {
                stream
                    .set_read_timeout(Some(Duration::from_secs(60)))
                    .map_err(|e| e.to_string())?;
                return Ok(stream);
            }
            Err(error) if Instant::now() > deadline => {
                return Err(format!("connect {addr}: {error}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn read_exactly(stream: &mut TcpStream, expect: u64) -> Result<(), String> {
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    while got < expect {
        match stream.read(&mut buf) {
            Ok(0) => return Err(format!("closed after {got} of {expect} bytes")),
            Ok(len) => got += len as u64,
            Err(error) => return Err(format!("after {got} of {expect} bytes: {error}")),
        }
    }
    Ok(())
}

fn ensure_defmt_print() -> Result<(), String> {
    crate::check::install_cargo_binary("defmt-print", &["defmt-print"])
}

fn connect_retrying_for(addr: SocketAddr, limit: Duration) -> Result<TcpStream, String> {
    let deadline = Instant::now() + limit;
    loop {
        match connect_retrying(addr) {
            Ok(stream) => return Ok(stream),
            Err(error) if Instant::now() > deadline => return Err(error),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_the_protocols_bytes() {
        // The built-in sample: 300000 bytes, blocks 0-292.
        assert_eq!(whole_file(300_000).unwrap(), [0x04, 0x00, 0x00, 0x01, 0x24]);
        assert_eq!(
            encode(&[Request::FileSize, Request::BlockList]).unwrap(),
            [0x07, 0x02]
        );
        // The first 16 MiB of a 128 MiB file: blocks of 2 KiB, 0-8191.
        assert_eq!(
            first_bytes(128 << 20, 16 << 20).unwrap(),
            [0x04, 0x00, 0x00, 0x1f, 0xff]
        );
    }
}
