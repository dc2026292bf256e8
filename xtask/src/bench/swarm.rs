//! `cargo xtask bench swarm`: p2p-fetch from four host-sims shaped to 20 Mbit/s each,
//! against from one of them.

use super::{READY_LIMIT, Rows, write_file};
use crate::run::{ScratchDir, cargo, root, run};
use p2p_testnet::{TestNet, harness};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The file each swarm run fetches: 10 MiB, about 4 s over one 20 Mbit/s link.
const SWARM_FILE: u64 = 10 << 20;

pub fn swarm() -> Result<Rows, String> {
    run(cargo().args(["build", "--release", "-p", "host-sim", "-p", "p2p-fetch"]))?;
    let bin = root().join("target/release");
    let scratch = ScratchDir::new("swarm-bench")?;
    let file = scratch.join("ten-mib.bin");
    write_file(&file, SWARM_FILE)?;
    let mut net = TestNet::new(4).map_err(|e| e.to_string())?;
    for index in 0..4 {
        let mut command = net.host_sim(&bin.join("host-sim"), index);
        command
            .args(["--rate", "20000", "--file"])
            .arg(&file)
            .stdout(Stdio::null());
        // The first lists the other three.
        if index == 0 {
            for other in 1..4 {
                command.args(["--peer", &TestNet::host_addr(other)]);
            }
        }
        net.start_server(&mut command, harness::host_sim_addr(index), READY_LIMIT)?;
    }
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
