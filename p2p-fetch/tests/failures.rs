//! How p2p-fetch ends when it cannot deliver the file: each way has its own exit code and a
//! message naming the problem. And resuming after it was killed.

mod common;

use common::*;
use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

#[test]
fn an_unreachable_host_is_a_clear_error() {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = scratch("unreachable");
    let result = run(p2p_fetch()
        .arg(format!("127.0.0.1:{port}"))
        .args(["--timeout", "1", "-o"])
        .arg(dir.join("file.bin")));
    assert_eq!(result.status.code(), Some(3), "{}", stderr(&result));
    assert!(
        stderr(&result).contains(&format!("127.0.0.1:{port}: cannot connect")),
        "{}",
        stderr(&result)
    );
    assert!(!dir.join("file.bin.part").exists());
    // With --json the failure is a summary too.
    let result = run(p2p_fetch()
        .arg(format!("127.0.0.1:{port}"))
        .args(["--timeout", "1", "--json", "-o"])
        .arg(dir.join("file.bin")));
    assert_eq!(result.status.code(), Some(3));
    let summary = summary(&result);
    assert_eq!(summary["ok"], false);
    assert_eq!(summary["exit_code"], 3);
    assert!(
        summary["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{summary}"
    );
}

#[test]
fn a_host_that_accepts_but_never_answers_is_unreachable_after_the_timeout() {
    // The kernel accepts the connection into the backlog; nobody ever answers.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = silent.local_addr().unwrap();
    let dir = scratch("silent");
    let result = run(p2p_fetch()
        .arg(addr.to_string())
        .args(["--timeout", "1", "-o"])
        .arg(dir.join("file.bin")));
    assert_eq!(result.status.code(), Some(3), "{}", stderr(&result));
    assert!(stderr(&result).contains("stalled"), "{}", stderr(&result));
    drop(silent);
}

#[test]
fn blocks_held_by_nobody_are_named_before_anything_is_downloaded() {
    let b = honest("1024-2047", &[]);
    let a = honest("0-511", &[b]);
    let dir = scratch("nobody");
    let output = dir.join("file.bin");
    let result = run(p2p_fetch().arg(a.to_string()).arg("-o").arg(&output));
    assert_eq!(result.status.code(), Some(4), "{}", stderr(&result));
    assert!(
        stderr(&result).contains("blocks 512-1023,2048-5119 are held by no reachable peer"),
        "{}",
        stderr(&result)
    );
    assert!(!output.exists());
    assert!(!dir.join("file.bin.part").exists());
}

#[test]
fn a_checksum_mismatch_has_its_own_exit_code_and_leaves_no_output() {
    let host = honest("0-5119", &[]);
    let dir = scratch("checksum");
    let output = dir.join("file.bin");
    let result = run(p2p_fetch()
        .arg(host.to_string())
        .args(["--sha256", &"ab".repeat(32), "-o"])
        .arg(&output));
    assert_eq!(result.status.code(), Some(5), "{}", stderr(&result));
    assert!(
        stderr(&result).contains("checksum mismatch"),
        "{}",
        stderr(&result)
    );
    assert!(stderr(&result).contains(&"ab".repeat(32)));
    assert!(!output.exists());
}

#[test]
fn a_matching_checksum_passes() {
    let host = honest("0-5119", &[]);
    let dir = scratch("checksum-ok");
    let output = dir.join("file.bin");
    let first = run(p2p_fetch()
        .arg(host.to_string())
        .args(["--json", "-o"])
        .arg(dir.join("first.bin")));
    let sha = summary(&first)["sha256"].as_str().unwrap().to_string();
    let result = run(p2p_fetch()
        .arg(host.to_string())
        .args(["--sha256", &sha, "-o"])
        .arg(&output));
    assert!(result.status.success(), "{}", stderr(&result));
    assert_is_the_file(&output);
}

#[test]
fn an_existing_output_is_kept_unless_forced() {
    let host = honest("0-5119", &[]);
    let dir = scratch("overwrite");
    let output = dir.join("file.bin");
    std::fs::write(&output, b"precious").unwrap();
    let refused = run(p2p_fetch().arg(host.to_string()).arg("-o").arg(&output));
    assert_eq!(refused.status.code(), Some(6), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("exists; use --force"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(std::fs::read(&output).unwrap(), b"precious");
    let forced = run(p2p_fetch()
        .arg(host.to_string())
        .args(["--force", "-o"])
        .arg(&output));
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_is_the_file(&output);
}

#[test]
fn a_directory_as_output_is_refused_before_downloading_even_forced() {
    let host = honest("0-5119", &[]);
    let dir = scratch("output-dir");
    let refused = run(p2p_fetch()
        .arg(host.to_string())
        .args(["--force", "-o"])
        .arg(&*dir));
    assert_eq!(refused.status.code(), Some(6), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("is a directory"),
        "{}",
        stderr(&refused)
    );
    // Nothing was written beside it either.
    let part = dir.with_extension("part");
    assert!(!part.exists(), "{} was written", part.display());
}

#[test]
fn bad_command_lines_are_usage_errors() {
    for args in [
        vec!["127.0.0.1:notaport"],
        vec!["127.0.0.1", "--sha256", "xyz"],
        vec!["127.0.0.1", "--max-peers", "0"],
        vec!["127.0.0.1", "--listen", "127.0.0.1:9"],
        vec![],
    ] {
        let result = run(p2p_fetch().args(&args));
        assert_eq!(
            result.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&result)
        );
        assert!(!stderr(&result).is_empty());
    }
}

#[test]
fn the_help_documents_the_exit_codes() {
    let result = run(p2p_fetch().arg("--help"));
    let help = stdout(&result);
    for code in ["2 ", "3 ", "4 ", "5 ", "6 ", "130 "] {
        assert!(
            help.contains(&format!("\n  {code}")),
            "exit code {code} not in:\n{help}"
        );
    }
}

/// Blocks recorded done in a `.part.blocks` record (after its 12-byte header).
fn recorded_blocks(path: &std::path::Path) -> u32 {
    std::fs::read(path)
        .map(|bytes| bytes.iter().skip(12).map(|byte| byte.count_ones()).sum())
        .unwrap_or(0)
}

#[test]
fn a_killed_download_resumes_without_fetching_saved_blocks_again() {
    let slow = Scripted::new(Blocks::Throttled(2 << 20)).start();
    let dir = scratch("resume");
    let output = dir.join("file.bin");
    let record = dir.join("file.bin.part.blocks");
    let mut child = p2p_fetch()
        .arg(slow.to_string())
        .arg("-q")
        .arg("-o")
        .arg(&output)
        .spawn()
        .unwrap();
    let started = Instant::now();
    while recorded_blocks(&record) < 1024 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no progress recorded"
        );
        assert!(child.try_wait().unwrap().is_none(), "p2p-fetch ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let saved = recorded_blocks(&record);
    assert!(
        saved < u32::from(BLOCKS),
        "the download finished before it was killed"
    );

    let fast = honest("0-5119", &[]);
    let result = run(p2p_fetch()
        .arg(fast.to_string())
        .args(["--continue", "--json", "-o"])
        .arg(&output));
    assert!(result.status.success(), "{}", stderr(&result));
    assert_is_the_file(&output);
    let summary = summary(&result);
    let resumed = summary["bytes_resumed"].as_u64().unwrap();
    assert!(resumed >= u64::from(saved) * 1024, "{summary}");
    assert_eq!(
        summary["bytes_downloaded"].as_u64().unwrap(),
        FILE_SIZE as u64 - resumed
    );
    assert!(!record.exists());
}

#[test]
fn ctrl_c_keeps_the_partial_download_for_continue() {
    let slow = Scripted::new(Blocks::Throttled(2 << 20)).start();
    let dir = scratch("interrupt");
    let output = dir.join("file.bin");
    let record = dir.join("file.bin.part.blocks");
    let child = p2p_fetch()
        .arg(slow.to_string())
        .arg("-o")
        .arg(&output)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while recorded_blocks(&record) < 256 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no progress recorded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let signal = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signal.success());
    let result = child.wait_with_output().unwrap();
    assert_eq!(result.status.code(), Some(130), "{}", stderr(&result));
    assert!(
        stderr(&result).contains("resume with --continue"),
        "{}",
        stderr(&result)
    );
    assert!(recorded_blocks(&record) >= 256);
    assert!(!output.exists());
}

#[test]
fn a_dead_sole_holder_is_retried_with_backoff_then_dropped() {
    let doomed = Scripted::new(Blocks::DieAfter(64 * 1024)).start();
    let host = honest("0-3071", &[doomed]);
    let dir = scratch("dead");
    let output = dir.join("file.bin");
    let result = run(p2p_fetch()
        .arg(host.to_string())
        .args(["--continue", "-o"])
        .arg(&output));
    let errors = stderr(&result);
    assert_eq!(result.status.code(), Some(4), "{errors}");
    assert!(
        errors.contains(&format!("{doomed}: cannot connect")),
        "{errors}"
    );
    assert!(errors.contains("retrying in 500 ms"), "{errors}");
    assert!(errors.contains("dropping this peer"), "{errors}");
    assert!(errors.contains("are held by no reachable peer"), "{errors}");
}

#[test]
fn a_peer_that_restarts_is_used_again_after_a_backoff() {
    let rebooting = Scripted::new(Blocks::DieAfter(64 * 1024)).start();
    let host = honest("0-3071", &[rebooting]);
    let dir = scratch("reboot");
    let output = dir.join("file.bin");
    let child = p2p_fetch()
        .arg(host.to_string())
        .args(["--json", "-o"])
        .arg(&output)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once it is gone, it comes back on the same port, honest and whole.
    let started = Instant::now();
    while std::net::TcpStream::connect(rebooting).is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the peer never died"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let listener = TcpListener::bind(rebooting).unwrap();
    serve_honestly(listener, "0-5119", &[]);
    let result = child.wait_with_output().unwrap();
    assert!(result.status.success(), "{}", stderr(&result));
    assert_is_the_file(&output);
    assert!(
        stderr(&result).contains(&format!("{rebooting}: ")),
        "{}",
        stderr(&result)
    );
    assert!(
        stderr(&result).contains("retrying in"),
        "{}",
        stderr(&result)
    );
    let entry = peer_summary(&summary(&result), rebooting);
    assert_eq!(entry["dropped"], false, "{entry}");
    assert!(entry["bytes"].as_u64().unwrap() > 64 * 1024, "{entry}");
}
