//! `cargo xtask bench ...`: measurements side by side with their anchors, in one run.
//! Each prints a Markdown table for BENCHMARKS.md.

mod fill;

use crate::run::{ScratchDir, cargo, root, run};
use p2p_core::{Geometry, Request};
use p2p_testnet::TestNet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

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
        Some(BenchWhat::HostSim { mib }) => host_sim(mib << 20)?,
        Some(BenchWhat::Firmware) => firmware()?,
        Some(BenchWhat::Swarm) => swarm()?,
        Some(BenchWhat::P2pFetch) => p2p_fetch()?,
        Some(BenchWhat::Core) => core()?,
        Some(BenchWhat::Fill) => fill::fill()?,
        None => {
            let mut all = Rows::default();
            for rows in [
                core()?,
                host_sim(256 << 20)?,
                p2p_fetch()?,
                swarm()?,
                firmware()?,
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

/// Best of this many runs for each throughput figure.
const RUNS: usize = 3;

fn host_sim(size: u64) -> Result<Rows, String> {
    run(cargo().args(["build", "--release", "-p", "host-sim"]))?;
    let host_sim = root().join("target/release/host-sim");
    let scratch = ScratchDir::new("bench")?;
    let file = scratch.join("bench.bin");
    write_file(&file, size)?;
    let request = whole_file(size)?;

    let mut rows = Rows::default();
    let protocol = best_of(|| {
        download_from_host_sim(
            &host_sim,
            &[&"--file".into(), &file.display().to_string()],
            &request,
            size + 1,
            1500,
        )
    })?;
    let raw = best_of(|| {
        download_from_host_sim(
            &host_sim,
            &[&"--raw-tcp-bytes".into(), &size.to_string()],
            &[],
            size,
            1500,
        )
    })?;
    // Jumbo frames: the same pair at MTU 9000, six times the data per system call.
    let protocol_jumbo = best_of(|| {
        download_from_host_sim(
            &host_sim,
            &[&"--file".into(), &file.display().to_string()],
            &request,
            size + 1,
            9000,
        )
    })?;
    let raw_jumbo = best_of(|| {
        download_from_host_sim(
            &host_sim,
            &[&"--raw-tcp-bytes".into(), &size.to_string()],
            &[],
            size,
            9000,
        )
    })?;
    let kernel = best_of(|| kernel_over_veth(size))?;
    rows.push(format!(
        "| host-sim over TAP, MTU 1500 (ours) | {:.2} Gbit/s | raw smoltcp, same TAP and buffers: {:.2} Gbit/s | {:.2} | >= 0.90 |",
        gbit(size, protocol),
        gbit(size, raw),
        raw.as_secs_f64() / protocol.as_secs_f64()
    ));
    rows.push(format!(
        "| host-sim over TAP, MTU 9000 (ours) | {:.2} Gbit/s | raw smoltcp, same TAP and buffers: {:.2} Gbit/s | {:.2} | |",
        gbit(size, protocol_jumbo),
        gbit(size, raw_jumbo),
        raw_jumbo.as_secs_f64() / protocol_jumbo.as_secs_f64()
    ));
    rows.push(format!(
        "| host-sim over TAP (ours) | {:.2} Gbit/s | kernel TCP over veth (the machine's ceiling): {:.2} Gbit/s | {:.2} | |",
        gbit(size, protocol),
        gbit(size, kernel),
        kernel.as_secs_f64() / protocol.as_secs_f64()
    ));

    // Loss recovery is slow (see BENCHMARKS.md): a smaller file keeps the run short.
    let lossy_size = size.min(16 << 20);
    let lossy_request = first_bytes(size, lossy_size)?;
    let lossy = best_of(|| {
        download_from_host_sim(
            &host_sim,
            &[
                &"--file".into(),
                &file.display().to_string(),
                &"--drop-chance".into(),
                &"1".into(),
            ],
            &lossy_request,
            lossy_size + 1,
            1500,
        )
    })?;
    let lossless = best_of(|| {
        download_from_host_sim(
            &host_sim,
            &[&"--file".into(), &file.display().to_string()],
            &lossy_request,
            lossy_size + 1,
            1500,
        )
    })?;
    rows.push(format!(
        "| host-sim under 1% drop each way (ours, CUBIC) | {:.3} Gbit/s | host-sim without loss: {:.2} Gbit/s | {:.2} | |",
        gbit(lossy_size, lossy),
        gbit(lossy_size, lossless),
        lossless.as_secs_f64() / lossy.as_secs_f64()
    ));

    let (peak_kib, served) = memory_serving_eight(&host_sim, &scratch)?;
    rows.push(format!(
        "| host-sim peak RSS serving a 1 GiB file to 8 clients ({} MiB each) | {:.1} MiB | | | < 16 MiB |",
        served >> 20,
        peak_kib as f64 / 1024.0
    ));
    let idle = idle_cpu(&host_sim)?;
    rows.push(format!(
        "| host-sim CPU with no clients for 10 s | {idle:.2}% of a core | | | < 1% |"
    ));

    Ok(rows)
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

/// Starts host-sim with `extra` on a fresh test network whose links have `mtu`, sends
/// `request` from kernel TCP inside the namespace and times reading `expect` bytes.
fn download_from_host_sim(
    host_sim: &Path,
    extra: &[&String],
    request: &[u8],
    expect: u64,
    mtu: u16,
) -> Result<Duration, String> {
    let mut net = TestNet::new(1).map_err(|e| e.to_string())?;
    let mtu = mtu.to_string();
    // The bridge takes the smallest MTU of its ports: the TAP first.
    for link in ["tap0", "br0"] {
        net.ip(&["link", "set", link, "mtu", &mtu])
            .map_err(|e| e.to_string())?;
    }
    let mut command = net.command(host_sim.to_str().unwrap_or("host-sim"));
    command
        .args(["--tap", "tap0", "--ip", "10.0.0.2/24", "--mtu", &mtu])
        .args(extra.iter().map(|s| s.as_str()));
    command.env("RUST_LOG", "warn").stdout(Stdio::null());
    net.spawn(&mut command).map_err(|e| e.to_string())?;
    let request = request.to_vec();
    net.run_inside(move || -> Result<Duration, String> {
        let addr: SocketAddr = "10.0.0.2:8888".parse().map_err(|e| format!("{e}"))?;
        let mut stream = connect_retrying(addr)?;
        let started = Instant::now();
        stream.write_all(&request).map_err(|e| e.to_string())?;
        read_exactly(&mut stream, expect)?;
        Ok(started.elapsed())
    })
    .map_err(|e| e.to_string())?
}

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

/// Kernel TCP between two namespaces joined by a veth pair: the machine's ceiling.
fn kernel_over_veth(size: u64) -> Result<Duration, String> {
    let sender = TestNet::new(0).map_err(|e| e.to_string())?;
    let receiver = TestNet::new(0).map_err(|e| e.to_string())?;
    receiver
        .ip(&[
            "link",
            "add",
            "va",
            "type",
            "veth",
            "peer",
            "name",
            "vb",
            "netns",
            sender.name(),
        ])
        .map_err(|e| e.to_string())?;
    receiver
        .ip(&["addr", "add", "10.9.0.1/24", "dev", "va"])
        .map_err(|e| e.to_string())?;
    receiver
        .ip(&["link", "set", "va", "up"])
        .map_err(|e| e.to_string())?;
    sender
        .ip(&["addr", "add", "10.9.0.2/24", "dev", "vb"])
        .map_err(|e| e.to_string())?;
    sender
        .ip(&["link", "set", "vb", "up"])
        .map_err(|e| e.to_string())?;
    let listener = sender
        .run_inside(|| TcpListener::bind("10.9.0.2:9000").map_err(|e| e.to_string()))
        .map_err(|e| e.to_string())??;
    let serving = std::thread::spawn(move || -> Result<(), String> {
        let (mut stream, _) = listener.accept().map_err(|e| e.to_string())?;
        let chunk = vec![0x5au8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let len = left.min(chunk.len() as u64) as usize;
            stream.write_all(&chunk[..len]).map_err(|e| e.to_string())?;
            left -= len as u64;
        }
        Ok(())
    });
    let elapsed = receiver
        .run_inside(move || -> Result<Duration, String> {
            let mut stream =
                connect_retrying("10.9.0.2:9000".parse().map_err(|e| format!("{e}"))?)?;
            let started = Instant::now();
            read_exactly(&mut stream, size)?;
            Ok(started.elapsed())
        })
        .map_err(|e| e.to_string())??;
    serving.join().map_err(|_| "sender thread panicked")??;
    Ok(elapsed)
}

/// host-sim serving a 1 GiB file (sparse, so the page cache is not the question) to 8 clients
/// at once, each fetching its own 128 MiB; returns host-sim's peak RSS in KiB and bytes per client.
fn memory_serving_eight(host_sim: &Path, scratch: &Path) -> Result<(u64, u64), String> {
    let big: PathBuf = scratch.join("one-gib.bin");
    let file = std::fs::File::create(&big).map_err(|e| e.to_string())?;
    file.set_len(1 << 30).map_err(|e| e.to_string())?;
    let mut net = TestNet::new(1).map_err(|e| e.to_string())?;
    let mut command = net.command(host_sim.to_str().unwrap_or("host-sim"));
    command
        .args(["--tap", "tap0", "--ip", "10.0.0.2/24", "--file"])
        .arg(&big)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    let index = net.spawn(&mut command).map_err(|e| e.to_string())?;
    // Each client takes an eighth of the blocks.
    let geometry = p2p_core::Geometry::new(1 << 30);
    let blocks_each = u16::try_from(geometry.block_count() / 8).map_err(|_| "block count")?;
    let per_client = u64::from(blocks_each) * u64::from(geometry.block_size());
    net.run_inside(move || -> Result<(), String> {
        let addr: SocketAddr = "10.0.0.2:8888".parse().map_err(|e| format!("{e}"))?;
        drop(connect_retrying(addr)?);
        let clients: Vec<_> = (0..8u16)
            .map(|client| {
                std::thread::spawn(move || -> Result<(), String> {
                    let mut stream = connect_retrying(addr)?;
                    let start = client * blocks_each;
                    let request = encode(&[Request::Block {
                        start,
                        end: start + (blocks_each - 1),
                    }])?;
                    stream.write_all(&request).map_err(|e| e.to_string())?;
                    read_exactly(&mut stream, per_client + 1)
                })
            })
            .collect();
        for client in clients {
            client.join().map_err(|_| "client panicked")??;
        }
        Ok(())
    })
    .map_err(|e| e.to_string())??;
    // The process started by `ip netns exec` is host-sim itself (exec), so its pid is the child's.
    let pid = net.child(index).map(|c| c.id()).ok_or("host-sim is gone")?;
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let peak = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .ok_or("no VmHWM in /proc/PID/status")?;
    Ok((peak, per_client))
}

/// host-sim's CPU use over 10 s with no clients, in percent of one core.
fn idle_cpu(host_sim: &Path) -> Result<f64, String> {
    let mut net = TestNet::new(1).map_err(|e| e.to_string())?;
    let mut command = net.command(host_sim.to_str().unwrap_or("host-sim"));
    command
        .args(["--tap", "tap0", "--ip", "10.0.0.2/24"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    let index = net.spawn(&mut command).map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_secs(1));
    let pid = net.child(index).map(|c| c.id()).ok_or("host-sim is gone")?;
    let ticks = || -> Result<u64, String> {
        let stat =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // After the command name: utime and stime are fields 14 and 15 of the line, 11 and 12
        // counted from 0 here.
        Ok(field(11) + field(12))
    };
    let before = ticks()?;
    std::thread::sleep(Duration::from_secs(10));
    let after = ticks()?;
    // Clock ticks are 1/100 s on Linux.
    Ok((after - before) as f64 / 100.0 / 10.0 * 100.0)
}

/// The file the firmware throughput runs serve: large enough to time, small enough for flash.
const FIRMWARE_BENCH_FILE: u64 = 2 << 20;

fn firmware() -> Result<Rows, String> {
    crate::firmware::build()?;
    let mut rows = Rows::default();
    let peak_stack = firmware_peak_stack()?;
    for board in crate::firmware::BOARDS {
        if !crate::firmware::elf(board).is_file() {
            rows.push(format!("| {board} | not built | | | |"));
            continue;
        }
        let footprint = crate::firmware::footprint(board)?;
        let stack = if board == "mps2-an386" {
            Some(peak_stack)
        } else {
            None
        };
        rows.push(format!(
            "| {board} flash (text + rodata + data, without the {} B file and block digests) | {:.1} KiB | | | <= 64 KiB |",
            footprint.file,
            footprint.flash as f64 / 1024.0
        ));
        match stack {
            Some(stack) => rows.push(format!(
                "| {board} RAM with 4 connections (static {} B + peak stack {} B, buffers included) | {:.1} KiB | | | <= 48 KiB |",
                footprint.static_ram,
                stack,
                (footprint.static_ram + stack as u64) as f64 / 1024.0
            )),
            None => rows.push(format!(
                "| {board} static RAM (its peak stack needs the board: not measured here) | {:.1} KiB | | | |",
                footprint.static_ram as f64 / 1024.0
            )),
        }
    }

    for footprint in crate::firmware::filling_footprints()? {
        rows.push(format!(
            "| {} flash (no file: fetches it; text + rodata + data) | {:.1} KiB | | | <= 64 KiB |",
            footprint.board,
            footprint.flash as f64 / 1024.0
        ));
    }

    let scratch = ScratchDir::new("fw-bench")?;
    let file = scratch.join("two-mib.bin");
    write_file(&file, FIRMWARE_BENCH_FILE)?;
    let protocol_elf = build_firmware_variant("bench-protocol", &file, false)?;
    let raw_elf = build_firmware_variant("bench-raw", &file, true)?;
    let request = whole_file(FIRMWARE_BENCH_FILE)?;
    let protocol =
        best_of(|| time_board_download(&protocol_elf, &request, FIRMWARE_BENCH_FILE + 1))?;
    let raw = best_of(|| time_board_download(&raw_elf, &[], FIRMWARE_BENCH_FILE))?;
    let mib_s =
        |time: Duration| FIRMWARE_BENCH_FILE as f64 / time.as_secs_f64() / f64::from(1 << 20);
    rows.push(format!(
        "| QEMU mps2-an386 download of 2 MiB over TAP (ours) | {:.1} MiB/s | same firmware sending raw TCP: {:.1} MiB/s | {:.2} | >= 0.80 |",
        mib_s(protocol),
        mib_s(raw),
        raw.as_secs_f64() / protocol.as_secs_f64()
    ));
    Ok(rows)
}

/// Builds the QEMU board serving `file` (or, with `raw`, its `bench-raw-tcp` feature: sending
/// that many raw TCP bytes) into firmware/target/NAME; returns the ELF.
fn build_firmware_variant(name: &str, file: &Path, raw: bool) -> Result<PathBuf, String> {
    crate::firmware::install_tools()?;
    let target = root().join("firmware/target").join(name);
    let mut cargo = crate::run::command(&std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(root().join("firmware"))
        .args(["build", "--release", "-p", "mps2-an386"])
        .env("CARGO_TARGET_DIR", &target)
        .env("P2P_FILE", file)
        .env_remove("P2P_BLOCKS")
        .env_remove("P2P_PEERS");
    if raw {
        cargo.args(["--features", "bench-raw-tcp"]);
    }
    run(&mut cargo)?;
    Ok(target.join("thumbv7em-none-eabihf/release/mps2-an386"))
}

fn qemu_on_tap0(net: &mut TestNet, elf: &Path, log: Stdio) -> Result<usize, String> {
    let mut command = net.qemu_board(0, 0x10, elf);
    command.stdout(log);
    net.spawn(&mut command).map_err(|e| e.to_string())
}

/// Boots `elf` on a fresh test network and times one download from it.
fn time_board_download(elf: &Path, request: &[u8], expect: u64) -> Result<Duration, String> {
    let mut net = TestNet::new(1).map_err(|e| e.to_string())?;
    qemu_on_tap0(&mut net, elf, Stdio::null())?;
    let request = request.to_vec();
    net.run_inside(move || -> Result<Duration, String> {
        let addr: SocketAddr = "10.0.0.16:8888".parse().map_err(|e| format!("{e}"))?;
        // The board takes its fallback address after DHCP's 3 s.
        let mut stream = connect_retrying_for(addr, Duration::from_secs(20))?;
        let started = Instant::now();
        stream.write_all(&request).map_err(|e| e.to_string())?;
        read_exactly(&mut stream, expect)?;
        Ok(started.elapsed())
    })
    .map_err(|e| e.to_string())?
}

/// The QEMU board's peak stack, in bytes, after four concurrent whole-file downloads: read
/// from its defmt log ("stack peak N bytes"), decoded with defmt-print.
fn firmware_peak_stack() -> Result<usize, String> {
    ensure_defmt_print()?;
    let sample_len = std::fs::metadata(root().join("assets/sample.txt"))
        .map_err(|e| format!("assets/sample.txt: {e}"))?
        .len();
    let elf = crate::firmware::elf("mps2-an386");
    let log_path = std::env::temp_dir().join(format!("p2p-fw-stack-{}.defmt", std::process::id()));
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let mut net = TestNet::new(1).map_err(|e| e.to_string())?;
    let qemu = qemu_on_tap0(&mut net, &elf, Stdio::from(log))?;
    net.run_inside(move || -> Result<(), String> {
        let addr: SocketAddr = "10.0.0.16:8888".parse().map_err(|e| format!("{e}"))?;
        drop(connect_retrying_for(addr, Duration::from_secs(20))?);
        let clients: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || -> Result<(), String> {
                    let mut stream = connect_retrying(addr)?;
                    // What a client asks first, then the whole built-in sample.
                    let mut request = encode(&[Request::FileSize, Request::BlockList])?;
                    request.extend(whole_file(sample_len)?);
                    stream.write_all(&request).map_err(|e| e.to_string())?;
                    let mut sink = Vec::new();
                    stream
                        .shutdown(std::net::Shutdown::Write)
                        .map_err(|e| e.to_string())?;
                    stream.read_to_end(&mut sink).map_err(|e| e.to_string())?;
                    Ok(())
                })
            })
            .collect();
        for client in clients {
            client.join().map_err(|_| "client panicked")??;
        }
        Ok(())
    })
    .map_err(|e| e.to_string())??;
    std::thread::sleep(Duration::from_millis(500));
    net.kill(qemu);
    let decoded = std::process::Command::new("defmt-print")
        .arg("-e")
        .arg(&elf)
        .stdin(std::fs::File::open(&log_path).map_err(|e| e.to_string())?)
        .output()
        .map_err(|e| format!("defmt-print: {e}"))?;
    let _ = std::fs::remove_file(&log_path);
    String::from_utf8_lossy(&decoded.stdout)
        .lines()
        .filter_map(|line| {
            line.split("stack peak ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .ok_or_else(|| "the board logged no stack peak".to_string())
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

/// The file each swarm run fetches: 10 MiB, about 4 s over one 20 Mbit/s link.
const SWARM_FILE: u64 = 10 << 20;

fn swarm() -> Result<Rows, String> {
    run(cargo().args(["build", "--release", "-p", "host-sim", "-p", "p2p-fetch"]))?;
    let bin = root().join("target/release");
    let scratch = ScratchDir::new("swarm-bench")?;
    let file = scratch.join("ten-mib.bin");
    write_file(&file, SWARM_FILE)?;
    let mut net = TestNet::new(4).map_err(|e| e.to_string())?;
    for index in 0..4 {
        let mut command = net.command(bin.join("host-sim").to_str().unwrap_or("host-sim"));
        command
            .args([
                "--tap",
                &TestNet::tap(index),
                "--ip",
                &format!("{}/24", TestNet::host_addr(index)),
            ])
            .args(["--rate", "20000", "--file"])
            .arg(&file)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        // The first lists the other three.
        if index == 0 {
            for other in 1..4 {
                command.args(["--peer", &TestNet::host_addr(other)]);
            }
        }
        net.spawn(&mut command).map_err(|e| e.to_string())?;
    }
    std::thread::sleep(Duration::from_millis(800));
    let output = scratch.join("fetched.bin");
    let fetch = |max_peers: &str| -> Result<Duration, String> {
        let _ = std::fs::remove_file(&output);
        let started = Instant::now();
        let status = net
            .command(bin.join("p2p-fetch").to_str().unwrap_or("p2p-fetch"))
            .args([&TestNet::host_addr(0), "-q", "--max-peers", max_peers, "-o"])
            .arg(&output)
            .status()
            .map_err(|e| format!("p2p-fetch: {e}"))?;
        let elapsed = started.elapsed();
        if !status.success() {
            return Err(format!(
                "p2p-fetch --max-peers {max_peers} failed: {status}"
            ));
        }
        if std::fs::read(&output).map_err(|e| e.to_string())?
            != std::fs::read(&file).map_err(|e| e.to_string())?
        {
            return Err("the fetched file differs".into());
        }
        Ok(elapsed)
    };
    let median = |mut runs: Vec<Duration>| {
        runs.sort();
        runs[runs.len() / 2]
    };
    let one = median((0..3).map(|_| fetch("1")).collect::<Result<_, _>>()?);
    let four = median((0..3).map(|_| fetch("4")).collect::<Result<_, _>>()?);
    let mut rows = Rows::default();
    rows.push(format!(
        "| p2p-fetch of 10 MiB from four host-sims at --rate 20000 (ours) | {:.2} s | from one of them: {:.2} s | {:.2}x faster | >= 3.5x |",
        four.as_secs_f64(),
        one.as_secs_f64(),
        one.as_secs_f64() / four.as_secs_f64()
    ));
    Ok(rows)
}

fn core() -> Result<Rows, String> {
    let output = crate::run::command(&std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["bench", "-p", "p2p-core", "--bench", "session"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cargo bench: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    print!("{text}");
    // The bench's last line: "session A GiB/s, memcpy B GiB/s, ratio C (goal >= 0.70)".
    let line = text
        .lines()
        .find(|l| l.starts_with("session "))
        .ok_or("the session bench printed no summary")?;
    let number = |after: &str| -> Result<f64, String> {
        line.split(after)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.trim_end_matches(',').parse().ok())
            .ok_or_else(|| format!("no {after}in {line}"))
    };
    let mut rows = Rows::default();
    rows.push(format!(
        "| p2p-core session serving 64 MiB into a 64 KiB transmit buffer | {:.1} GiB/s | plain copy through the same buffer: {:.1} GiB/s | {:.2} | >= 0.70 |",
        number("session ")?,
        number("memcpy ")?,
        number("ratio ")?
    ));
    Ok(rows)
}

/// p2p-fetch vs curl+nginx on loopback, medians of 7, and p2p-fetch's peak RSS on 1 GiB.
fn p2p_fetch() -> Result<Rows, String> {
    for (program, package) in [
        ("nginx", "nginx"),
        ("curl", "curl"),
        ("/usr/bin/time", "time"),
    ] {
        if crate::run::command(program).arg("-V").output().is_err()
            && crate::run::command(program)
                .arg("--version")
                .output()
                .is_err()
        {
            return Err(format!("{program} is missing: apt-get install {package}"));
        }
    }
    run(cargo().args(["build", "--release", "-p", "host-sim", "-p", "p2p-fetch"]))?;
    let bin = root().join("target/release");
    let work = ScratchDir::new("fetch-bench")?;
    std::fs::create_dir_all(work.join("logs")).map_err(|e| e.to_string())?;
    // nginx's worker reads the file as an unprivileged user.
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&*work)
        .status()
        .map_err(|e| e.to_string())?;
    let file = work.join("file");
    write_file(&file, 256 << 20)?;
    let mut server = std::process::Command::new(bin.join("host-sim"))
        .args(["--listen", "127.0.0.1:18891", "--file"])
        .arg(&file)
        .env("RUST_LOG", "warn")
        .spawn()
        .map_err(|e| format!("host-sim: {e}"))?;
    let conf = work.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\npid {w}/nginx.pid;\nerror_log {w}/logs/error.log;\nevents {{ worker_connections 64; }}\n\
             http {{ access_log off; sendfile on; tcp_nopush on; server {{ listen 127.0.0.1:18892; root {w}; }} }}\n",
            w = work.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let nginx = std::process::Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&*work)
        .status()
        .map_err(|e| format!("nginx: {e}"))?;
    if !nginx.success() {
        let _ = server.kill();
        return Err("nginx did not start".into());
    }
    std::thread::sleep(Duration::from_millis(500));
    let original = std::fs::read(&file).map_err(|e| e.to_string())?;
    let timed = |command: &mut std::process::Command, output: &Path| -> Result<Duration, String> {
        let _ = std::fs::remove_file(output);
        let started = Instant::now();
        let status = command.status().map_err(|e| e.to_string())?;
        let elapsed = started.elapsed();
        if !status.success() || std::fs::read(output).map_err(|e| e.to_string())? != original {
            return Err(format!("{command:?} failed or saved a different file"));
        }
        Ok(elapsed)
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let p2p_out = work.join("p2p.out");
    let curl_out = work.join("curl.out");
    let result = (|| -> Result<(), String> {
        for _ in 0..7 {
            theirs.push(timed(
                std::process::Command::new("curl")
                    .args(["-sf", "-o"])
                    .arg(&curl_out)
                    .arg("http://127.0.0.1:18892/file"),
                &curl_out,
            )?);
            ours.push(timed(
                std::process::Command::new(bin.join("p2p-fetch"))
                    .args(["127.0.0.1:18891", "-q", "--force", "-o"])
                    .arg(&p2p_out),
                &p2p_out,
            )?);
        }
        Ok(())
    })();
    let _ = std::process::Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&*work)
        .args(["-s", "stop"])
        .status();
    let _ = server.kill();
    let _ = server.wait();
    result?;
    ours.sort();
    theirs.sort();
    let (ours, theirs) = (ours[3], theirs[3]);

    // Peak RSS on 1 GiB (sparse: the page cache is not the question).
    let big = work.join("big");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len(1 << 30))
        .map_err(|e| e.to_string())?;
    let mut server = std::process::Command::new(bin.join("host-sim"))
        .args(["--listen", "127.0.0.1:18891", "--file"])
        .arg(&big)
        .env("RUST_LOG", "warn")
        .spawn()
        .map_err(|e| format!("host-sim: {e}"))?;
    std::thread::sleep(Duration::from_millis(500));
    let measured = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(bin.join("p2p-fetch"))
        .args(["127.0.0.1:18891", "-q", "--force", "-o"])
        .arg(work.join("big.out"))
        .output()
        .map_err(|e| e.to_string());
    let _ = server.kill();
    let _ = server.wait();
    let measured = measured?;
    let peak_kib: u64 = String::from_utf8_lossy(&measured.stderr)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .ok_or("no peak RSS from /usr/bin/time")?;

    let mut rows = Rows::default();
    rows.push(format!(
        "| p2p-fetch of 256 MiB from host-sim --listen on loopback, fsync included (ours) | {:.3} s | curl from nginx (sendfile): {:.3} s | {:.2} | <= 1.10 |",
        ours.as_secs_f64(),
        theirs.as_secs_f64(),
        ours.as_secs_f64() / theirs.as_secs_f64()
    ));
    rows.push(format!(
        "| p2p-fetch peak RSS downloading a 1 GiB file | {:.1} MiB | | | < 32 MiB |",
        peak_kib as f64 / 1024.0
    ));
    Ok(rows)
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
