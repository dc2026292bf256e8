//! `cargo xtask demo`: the project's main job, end to end. Builds everything, makes a private
//! test network, starts three host-sims that each hold a different part of the built-in sample
//! file and list each other in a chain, and a fourth that starts empty and fills itself from
//! them (verifying every block against the sample's manifest digest). Then p2p-fetch downloads
//! from the filled node and the swarm it lists, checking every block against the manifest, and
//! the saved file is compared with the sample byte for byte.

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

    let mut net = TestNet::new(PARTS.len() + 1).map_err(|e| {
        format!("{e}\nThe demo needs a private network namespace with TAP devices.")
    })?;
    println!(
        "test network {}: bridge 10.0.0.1/24, {} TAP devices",
        net.name(),
        PARTS.len() + 1
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

    // The filling node: empty, told only the manifest digest and one peer.
    let manifest = crate::firmware::sample_manifest().to_string();
    let filling = PARTS.len();
    let filling_ip = TestNet::host_addr(filling);
    let scratch = std::env::temp_dir().join(format!("p2p-demo-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let log_path = scratch.join("filling.log");
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let mut command = net.command(bin.join("host-sim").to_str().unwrap_or("host-sim"));
    command
        .args([
            "--tap",
            &TestNet::tap(filling),
            "--ip",
            &format!("{filling_ip}/24"),
        ])
        .args([
            "--manifest",
            &manifest,
            "--fetch-from",
            &TestNet::host_addr(0),
        ])
        .arg("--store")
        .arg(scratch.join("store"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    println!(
        "
host-sim {filling_ip} on {} starts empty: --manifest {manifest} --fetch-from {}",
        TestNet::tap(filling),
        TestNet::host_addr(0)
    );
    let filling_started = Instant::now();
    net.spawn(&mut command).map_err(|e| e.to_string())?;
    let filled = wait_for_line(&log_path, "file complete", Duration::from_secs(60));
    let fill_time = filling_started.elapsed();
    let shown = std::fs::read_to_string(&log_path).unwrap_or_default();
    for line in shown.lines().filter(|l| l.contains("fetch:")) {
        println!("  {}", line.split("] ").nth(1).unwrap_or(line));
    }
    if !filled {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(format!("the filling node did not complete:\n{shown}"));
    }
    println!(
        "host-sim {filling_ip} filled itself in {:.2} s (including start-up)",
        fill_time.as_secs_f64()
    );

    let output = std::env::temp_dir().join(format!("p2p-demo-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&output);
    let sha256 = sha256_hex(&expected)?;
    println!(
        "\np2p-fetch {filling_ip} -o {} --manifest {manifest} --sha256 {sha256}\n",
        output.display()
    );
    let started = Instant::now();
    let status = net
        .command(bin.join("p2p-fetch").to_str().unwrap_or("p2p-fetch"))
        .args([
            &filling_ip,
            "-o",
            output.to_str().unwrap_or_default(),
            "--manifest",
            &manifest,
            "--sha256",
            &sha256,
        ])
        .status()
        .map_err(|e| format!("cannot run p2p-fetch: {e}"))?;
    let _ = std::fs::remove_dir_all(&scratch);
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
        "\ndemo passed: {} bytes from the filled node and its swarm in {:.2} s, every block verified, byte-identical to {} (sha256 {sha256})",
        fetched.len(),
        elapsed.as_secs_f64(),
        sample.display()
    );
    Ok(())
}

/// Waits, inside the namespace, until host-sim at `ip` answers a File Size Request. The probe
/// is this xtask itself run there (`wait-until-answering`, p2p-testnet's harness): a thread of
/// ours can join the namespace only as root, a command can always.
pub fn wait_until_serving(net: &TestNet, ip: &str) -> Result<(), String> {
    let xtask = std::env::current_exe().map_err(|e| format!("cannot find xtask itself: {e}"))?;
    let status = net
        .command(xtask.to_str().ok_or("xtask's path is not UTF-8")?)
        .args(["wait-until-answering", &format!("{ip}:8888")])
        .status()
        .map_err(|e| format!("cannot run the readiness probe: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("host-sim at {ip} did not start serving"))
    }
}

/// Whether `path` gets a line containing `needle` within `limit`.
fn wait_for_line(path: &std::path::Path, needle: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::fs::read_to_string(path).is_ok_and(|text| text.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Succeeds once ADDR accepts a TCP connection (a server that speaks no p2p-blocks, as nginx).
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
