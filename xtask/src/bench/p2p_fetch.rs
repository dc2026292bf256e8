//! `cargo xtask bench p2p-fetch`: p2p-fetch from host-sim on loopback beside curl from
//! nginx, and p2p-fetch's peak memory downloading 1 GiB.

use super::{READY_LIMIT, Rows, write_file};
use crate::run::{ScratchDir, cargo, root, run};
use p2p_testnet::harness;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// Where host-sim serves on loopback.
const HOST_SIM: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 18891);
/// Where nginx serves on loopback.
const NGINX: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 18892);

/// p2p-fetch vs curl+nginx on loopback, medians of 7, and p2p-fetch's peak RSS on 1 GiB.
pub fn p2p_fetch() -> Result<Rows, String> {
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
    let mut server = listening_host_sim(&bin.join("host-sim"), &file)?;
    let conf = work.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\npid {w}/nginx.pid;\nerror_log {w}/logs/error.log;\nevents {{ worker_connections 64; }}\n\
             http {{ access_log off; sendfile on; tcp_nopush on; server {{ listen {NGINX}; root {w}; }} }}\n",
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
    if let Err(error) = crate::demo::wait_for_port(NGINX, READY_LIMIT.as_secs()) {
        let _ = server.kill();
        return Err(error);
    }
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
                    .arg(format!("http://{NGINX}/file")),
                &curl_out,
            )?);
            ours.push(timed(
                std::process::Command::new(bin.join("p2p-fetch"))
                    .args([&HOST_SIM.to_string(), "-q", "--force", "-o"])
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
    let mut server = listening_host_sim(&bin.join("host-sim"), &big)?;
    let measured = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(bin.join("p2p-fetch"))
        .args([&HOST_SIM.to_string(), "-q", "--force", "-o"])
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

/// host-sim serving `file` on loopback at [`HOST_SIM`], once it answers a File Size Request.
fn listening_host_sim(host_sim: &Path, file: &Path) -> Result<std::process::Child, String> {
    let mut server = std::process::Command::new(host_sim)
        .args(["--listen", &HOST_SIM.to_string(), "--file"])
        .arg(file)
        .env("RUST_LOG", "warn")
        .spawn()
        .map_err(|e| format!("host-sim: {e}"))?;
    if let Err(error) = harness::wait_until_answering(HOST_SIM, READY_LIMIT) {
        let _ = server.kill();
        let _ = server.wait();
        return Err(error.into());
    }
    Ok(server)
}
