//! `cargo xtask demo`: the project's main job, end to end. Builds everything, makes a private
//! test network, starts three host-sims that each hold a different part of the built-in sample
//! file and list each other in a chain, runs p2p-fetch against the first, and checks that what
//! it saved is the sample, byte for byte.

use crate::run::{cargo, root, run};
use p2p_testnet::TestNet;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Block ranges of the 293-block sample each host-sim holds: overlapping, together all of it.
const PARTS: [&str; 3] = ["0-119", "100-219", "200-292"];

pub fn run_demo() -> Result<(), String> {
    run(cargo().args(["build", "--release", "-p", "host-sim", "-p", "p2p-fetch"]))?;
    let bin = root().join("target/release");
    let sample = root().join("assets/sample.txt");
    let expected = std::fs::read(&sample).map_err(|e| format!("{}: {e}", sample.display()))?;

    let mut net = TestNet::new(PARTS.len()).map_err(|e| {
        format!("{e}\nThe demo needs a private network namespace with TAP devices.")
    })?;
    println!(
        "test network {}: bridge 10.0.0.1/24, {} TAP devices",
        net.name(),
        PARTS.len()
    );
    for (index, blocks) in PARTS.iter().enumerate() {
        let ip = TestNet::host_addr(index);
        let mut command = net.command(bin.join("host-sim").to_str().unwrap_or("host-sim"));
        command.args([
            "--tap",
            &TestNet::tap(index),
            "--ip",
            &format!("{ip}/24"),
            "--blocks",
            blocks,
        ]);
        // A chain of peer lists: the first lists the second, the second the third.
        if let Some(next) = PARTS.get(index + 1).map(|_| TestNet::host_addr(index + 1)) {
            command.args(["--peer", &next]);
        }
        command.env("RUST_LOG", "warn").stdout(Stdio::null());
        net.spawn(&mut command).map_err(|e| e.to_string())?;
        println!(
            "host-sim {ip} on {} holds blocks {blocks}",
            TestNet::tap(index)
        );
    }
    wait_until_serving(&net, &TestNet::host_addr(0))?;

    let output = std::env::temp_dir().join(format!("p2p-demo-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&output);
    let sha256 = sha256_hex(&expected)?;
    println!(
        "\np2p-fetch {} -o {}\n",
        TestNet::host_addr(0),
        output.display()
    );
    let started = Instant::now();
    let status = net
        .command(bin.join("p2p-fetch").to_str().unwrap_or("p2p-fetch"))
        .args([
            &TestNet::host_addr(0),
            "-o",
            output.to_str().unwrap_or_default(),
            "--sha256",
            &sha256,
        ])
        .status()
        .map_err(|e| format!("cannot run p2p-fetch: {e}"))?;
    let elapsed = started.elapsed();
    if !status.success() {
        return Err(format!("p2p-fetch failed ({status})"));
    }
    let fetched = std::fs::read(&output).map_err(|e| format!("{}: {e}", output.display()))?;
    let _ = std::fs::remove_file(&output);
    if fetched != expected {
        return Err(format!(
            "the downloaded file differs from {} ({} bytes, expected {})",
            sample.display(),
            fetched.len(),
            expected.len()
        ));
    }
    println!(
        "\ndemo passed: {} bytes from three host-sims in {:.2} s, byte-identical to {} (sha256 {sha256})",
        fetched.len(),
        elapsed.as_secs_f64(),
        sample.display()
    );
    Ok(())
}

/// Waits, inside the namespace, until host-sim at `ip` accepts connections. The probe is this
/// xtask itself run there (`wait-for-port`): a thread of ours can join the namespace only as
/// root, a command can always.
fn wait_until_serving(net: &TestNet, ip: &str) -> Result<(), String> {
    let xtask = std::env::current_exe().map_err(|e| format!("cannot find xtask itself: {e}"))?;
    let status = net
        .command(xtask.to_str().ok_or("xtask's path is not UTF-8")?)
        .args(["wait-for-port", &format!("{ip}:8888")])
        .status()
        .map_err(|e| format!("cannot run the readiness probe: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("host-sim at {ip} did not start serving"))
    }
}

/// `cargo xtask wait-for-port ADDR`: succeeds once ADDR accepts a TCP connection.
pub fn wait_for_port(addr: std::net::SocketAddr, seconds: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("{addr} accepted no connection within {seconds} s"))
}

/// The file's SHA-256 in hex, from the system's sha256sum (coreutils).
fn sha256_hex(data: &[u8]) -> Result<String, String> {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run sha256sum: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("sha256sum has no stdin")?
        .write_all(data)
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| "sha256sum printed nothing".to_string())
}
