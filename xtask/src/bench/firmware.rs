//! `cargo xtask bench firmware`: each board's flash and RAM (static plus the QEMU board's
//! measured peak stack), and the QEMU board's download throughput beside the same firmware
//! sending raw TCP.

use super::{
    BOARD_MAC, Rows, best_of, connect_retrying, connect_retrying_for, encode, ensure_defmt_print,
    read_exactly, whole_file, write_file,
};
use crate::run::{ScratchDir, root, run};
use p2p_core::Request;
use p2p_testnet::{TestNet, harness};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The file the firmware throughput runs serve: large enough to time, small enough for flash.
const FIRMWARE_BENCH_FILE: u64 = 2 << 20;

pub fn firmware() -> Result<Rows, String> {
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

/// The board takes its fallback address after DHCP's 3 s, and then boots in QEMU.
const BOARD_READY_LIMIT: Duration = Duration::from_secs(30);

/// Boots `elf` on a fresh test network and times one download from it. With an empty
/// `request` the board sends raw TCP: it speaks no protocol, so it is ready once it accepts.
fn time_board_download(elf: &Path, request: &[u8], expect: u64) -> Result<Duration, String> {
    let mut net = TestNet::new(1).map_err(|e| e.to_string())?;
    let mut command = net.qemu_board(0, BOARD_MAC, elf);
    command.stdout(Stdio::null());
    let addr = harness::board_addr(BOARD_MAC);
    if request.is_empty() {
        net.spawn(&mut command).map_err(|e| e.to_string())?;
    } else {
        net.start_server(&mut command, addr, BOARD_READY_LIMIT)?;
    }
    let request = request.to_vec();
    net.run_inside(move || -> Result<Duration, String> {
        let mut stream = connect_retrying_for(addr, BOARD_READY_LIMIT)?;
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
    let mut command = net.qemu_board(0, BOARD_MAC, &elf);
    command.stdout(Stdio::from(log));
    let addr = harness::board_addr(BOARD_MAC);
    let (qemu, _) = net.start_server(&mut command, addr, BOARD_READY_LIMIT)?;
    net.run_inside(move || -> Result<(), String> {
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
