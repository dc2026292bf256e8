//! Filling nodes: how long an empty node takes to fill itself from two full peers, against
//! p2p-fetch pulling the same file from the same peers in the same run; and the QEMU board
//! filling, against the same board serving the file it filled.

use super::{
    BOARD_MAC, READY_LIMIT, Rows, best_of, connect_retrying_for, ensure_defmt_print, read_exactly,
    whole_file, write_file,
};
use crate::run::{ScratchDir, cargo, root, run};
use p2p_testnet::{TestNet, harness};
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// host-sim's file: 32 MiB, long enough that start-up does not count.
const HOST_FILE: u64 = 32 << 20;
/// The board's file: 900 KiB, about what its 1 MiB storage holds.
const BOARD_FILE: u64 = 900 << 10;

pub fn fill() -> Result<Rows, String> {
    let mut rows = host_sim_fill()?;
    rows.0.extend(board_fill()?.0);
    rows.0.extend(board_sha256()?.0);
    Ok(rows)
}

/// What verifying a block costs the board: the firmware built with P2P_BENCH_SHA256 hashes
/// 1024 blocks at start-up by its own clock, under QEMU's `-icount shift=0`, where the clock
/// advances 1 ns per instruction: the figure is instructions per block.
fn board_sha256() -> Result<Rows, String> {
    crate::firmware::install_tools()?;
    ensure_defmt_print()?;
    let target = root().join("firmware/target/bench-sha256");
    let mut cargo = crate::run::command(&std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(root().join("firmware"))
        .args(["build", "--release", "-p", "mps2-an386"])
        .env("CARGO_TARGET_DIR", &target)
        .env("P2P_BENCH_SHA256", "1")
        .env_remove("P2P_FILE")
        .env_remove("P2P_BLOCKS")
        .env_remove("P2P_MANIFEST")
        .env_remove("P2P_TEST_PANIC");
    run(&mut cargo)?;
    let elf = target.join("thumbv7em-none-eabihf/release/mps2-an386");
    let scratch = ScratchDir::new("sha256-bench")?;
    let log = scratch.join("board.defmt");
    let mut net = TestNet::new(1).map_err(|e| e.to_string())?;
    let mut command = net.qemu_board(0, BOARD_MAC, &elf);
    command
        .args(["-icount", "shift=0"])
        .stdout(std::fs::File::create(&log).map_err(|e| e.to_string())?);
    net.spawn(&mut command).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let line = loop {
        if let Some(line) = decode(&elf, &log)?
            .into_iter()
            .find(|m| m.contains("sha256:"))
        {
            break line;
        }
        if Instant::now() > deadline {
            return Err("the board logged no sha256 figure".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let per_block: u64 = line
        .split(" ns a block")
        .next()
        .and_then(|head| head.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("no figure in {line:?}"))?;
    if !line.contains("1024 matched") {
        return Err(format!(
            "the board's hashes did not match its digests: {line}"
        ));
    }
    let mut rows = Rows::default();
    rows.push(format!(
        "| SHA-256 of a 1 KiB block on mps2-an386 (QEMU -icount shift=0: instructions, not cycles) | {per_block} instructions | at 1 instruction a cycle, 180 MHz: {:.0} us | | |",
        per_block as f64 / 180.0
    ));
    Ok(rows)
}

/// Starts a host-sim serving `file` on TAP `tap`, listing `peer`.
fn start_source(
    net: &mut TestNet,
    host_sim: &Path,
    tap: usize,
    file: &Path,
    peer: Option<String>,
) -> Result<(), String> {
    let mut command = net.host_sim(host_sim, tap);
    command.arg("--file").arg(file).stdout(Stdio::null());
    if let Some(peer) = peer {
        command.args(["--peer", &peer]);
    }
    net.start_server(&mut command, harness::host_sim_addr(tap), READY_LIMIT)?;
    Ok(())
}

fn host_sim_fill() -> Result<Rows, String> {
    run(cargo().args(["build", "--release", "-p", "host-sim", "-p", "p2p-fetch"]))?;
    let bin = root().join("target/release");
    let host_sim = bin.join("host-sim");
    let scratch = ScratchDir::new("fill-bench")?;
    let file = scratch.join("file.bin");
    write_file(&file, HOST_FILE)?;
    let manifest = manifest_of(&host_sim, &file)?;
    let mut net = TestNet::new(3).map_err(|e| e.to_string())?;
    start_source(&mut net, &host_sim, 0, &file, Some(TestNet::host_addr(1)))?;
    start_source(&mut net, &host_sim, 1, &file, None)?;

    let output = scratch.join("fetched.bin");
    let expected = std::fs::read(&file).map_err(|e| e.to_string())?;
    let fetch = best_of(|| {
        let _ = std::fs::remove_file(&output);
        let started = Instant::now();
        let status = net
            .command(bin.join("p2p-fetch").to_str().unwrap_or("p2p-fetch"))
            .args([&TestNet::host_addr(0), "-q", "--manifest", &manifest, "-o"])
            .arg(&output)
            .status()
            .map_err(|e| format!("p2p-fetch: {e}"))?;
        let elapsed = started.elapsed();
        if !status.success() {
            return Err(format!("p2p-fetch failed: {status}"));
        }
        if std::fs::read(&output).map_err(|e| e.to_string())? != expected {
            return Err("p2p-fetch saved a different file".into());
        }
        Ok(elapsed)
    })?;

    let mut run_number = 0;
    let filled = best_of(|| {
        run_number += 1;
        let store = scratch.join(format!("store-{run_number}"));
        let log = scratch.join(format!("fill-{run_number}.log"));
        let mut command = net.host_sim(&host_sim, 2);
        command
            .args([
                "--manifest",
                &manifest,
                "--fetch-from",
                &TestNet::host_addr(0),
            ])
            .arg("--store")
            .arg(&store)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?);
        let index = net.spawn(&mut command).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let text = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("file complete") {
                break text;
            }
            if Instant::now() > deadline {
                net.kill(index);
                return Err(format!("the filling node did not complete:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        net.kill(index);
        let _ = std::fs::remove_file(&store);
        // From its first log line (the store opened) to "file complete", by its own clock.
        let first = text.lines().next().and_then(log_millis);
        let done = text
            .lines()
            .find(|line| line.contains("file complete"))
            .and_then(log_millis);
        match (first, done) {
            (Some(first), Some(done)) if done >= first => Ok(Duration::from_millis(done - first)),
            _ => Err(format!("no timestamps in the filling node's log:\n{text}")),
        }
    })?;
    let mib_s = |time: Duration| HOST_FILE as f64 / time.as_secs_f64() / f64::from(1 << 20);
    let mut rows = Rows::default();
    rows.push(format!(
        "| empty host-sim filling 32 MiB from two host-sims, every block verified (ours) | {:.2} s ({:.0} MiB/s) | p2p-fetch --manifest from the same two: {:.2} s ({:.0} MiB/s) | {:.2} of p2p-fetch's speed | >= 0.80 |",
        filled.as_secs_f64(),
        mib_s(filled),
        fetch.as_secs_f64(),
        mib_s(fetch),
        fetch.as_secs_f64() / filled.as_secs_f64()
    ));
    Ok(rows)
}

fn board_fill() -> Result<Rows, String> {
    ensure_defmt_print()?;
    run(cargo().args(["build", "--release", "-p", "host-sim"]))?;
    let host_sim = root().join("target/release/host-sim");
    let scratch = ScratchDir::new("board-fill-bench")?;
    let file = scratch.join("file.bin");
    write_file(&file, BOARD_FILE)?;
    let manifest = manifest_of(&host_sim, &file)?;
    let elf = build_filling_board(&manifest)?;
    let mut net = TestNet::new(3).map_err(|e| e.to_string())?;
    start_source(&mut net, &host_sim, 0, &file, None)?;
    start_source(&mut net, &host_sim, 1, &file, None)?;
    let log = scratch.join("board.defmt");
    // Each boot starts empty (the storage is RAM, and QEMU starts afresh); the last stays up
    // to be timed serving.
    let mut board = None;
    let filled = best_of(|| {
        if let Some(index) = board.take() {
            net.kill(index);
        }
        let mut command = net.qemu_board(2, BOARD_MAC, &elf);
        command.stdout(std::fs::File::create(&log).map_err(|e| e.to_string())?);
        board = Some(net.spawn(&mut command).map_err(|e| e.to_string())?);
        // The board times the fill itself, from its manifest verified to its file complete.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let messages = decode(&elf, &log)?;
            if let Some(done) = messages.iter().find(|m| m.contains("file complete")) {
                let millis = done
                    .split(" ms after")
                    .next()
                    .and_then(|head| head.rsplit(' ').next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .ok_or_else(|| format!("no fill time in {done:?}"))?;
                return Ok(Duration::from_millis(millis));
            }
            if Instant::now() > deadline {
                return Err(format!("the board did not fill: {messages:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })?;
    // The same board serving what it filled, whole, in the same run.
    let request = whole_file(BOARD_FILE)?;
    let serving = best_of(|| {
        let request = request.clone();
        net.run_inside(move || -> Result<Duration, String> {
            let addr = harness::board_addr(BOARD_MAC);
            let mut stream = connect_retrying_for(addr, Duration::from_secs(10))?;
            let started = Instant::now();
            stream.write_all(&request).map_err(|e| e.to_string())?;
            read_exactly(&mut stream, BOARD_FILE + 1)?;
            Ok(started.elapsed())
        })
        .map_err(|e| e.to_string())?
    })?;
    let kib_s = |time: Duration| BOARD_FILE as f64 / time.as_secs_f64() / 1024.0;
    let mut rows = Rows::default();
    rows.push(format!(
        "| QEMU mps2-an386 filling 900 KiB from two host-sims, every block verified (ours, by its clock) | {:.2} s ({:.0} KiB/s) | the same board serving it: {:.2} s ({:.0} KiB/s) | {:.2} of its serving speed | >= 0.80 |",
        filled.as_secs_f64(),
        kib_s(filled),
        serving.as_secs_f64(),
        kib_s(serving),
        serving.as_secs_f64() / filled.as_secs_f64()
    ));
    Ok(rows)
}

/// The manifest digest host-sim prints for `file`.
fn manifest_of(host_sim: &Path, file: &Path) -> Result<String, String> {
    let output = std::process::Command::new(host_sim)
        .arg("--file")
        .arg(file)
        .arg("--print-manifest")
        .output()
        .map_err(|e| format!("host-sim --print-manifest: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The QEMU board as a filling node for `manifest`, fetching from 10.0.0.2 and 10.0.0.3.
fn build_filling_board(manifest: &str) -> Result<std::path::PathBuf, String> {
    crate::firmware::install_tools()?;
    let target = root().join("firmware/target/bench-fill");
    let mut cargo = crate::run::command(&std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(root().join("firmware"))
        .args(["build", "--release", "-p", "mps2-an386"])
        .env("CARGO_TARGET_DIR", &target)
        .env("P2P_MANIFEST", manifest)
        .env("P2P_PEERS", "10.0.0.2,10.0.0.3")
        .env_remove("P2P_FILE")
        .env_remove("P2P_BLOCKS")
        .env_remove("P2P_TEST_PANIC");
    run(&mut cargo)?;
    Ok(target.join("thumbv7em-none-eabihf/release/mps2-an386"))
}

/// The board's defmt log so far, decoded.
fn decode(elf: &Path, log: &Path) -> Result<Vec<String>, String> {
    let decoded = std::process::Command::new("defmt-print")
        .arg("-e")
        .arg(elf)
        .stdin(std::fs::File::open(log).map_err(|e| e.to_string())?)
        .output()
        .map_err(|e| format!("defmt-print: {e}"))?;
    Ok(String::from_utf8_lossy(&decoded.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// Milliseconds since midnight of an env_logger line `[2026-12-02T14:02:43.110Z ...`.
fn log_millis(line: &str) -> Option<u64> {
    let time = line.split('T').nth(1)?.get(..12)?;
    let mut parts = time.split([':', '.']);
    let mut next = || parts.next()?.parse::<u64>().ok();
    let (h, m, s, ms) = (next()?, next()?, next()?, next()?);
    Some(((h * 60 + m) * 60 + s) * 1000 + ms)
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_times_are_read_to_the_millisecond() {
        assert_eq!(
            super::log_millis("[2026-12-02T14:02:43.110Z INFO  host_sim] x"),
            Some(((14 * 60 + 2) * 60 + 43) * 1000 + 110)
        );
        assert_eq!(super::log_millis("no time"), None);
    }
}
