//! Faults on the private TAP network: lossy and corrupting links at several levels, peers
//! killed and restarted during a swarm download, p2p-fetch killed and resumed. Every case ends
//! byte-identical or with a clear failure, and nothing hangs. (This kernel has no sch_netem, so
//! loss and corruption come from host-sim's smoltcp FaultInjector, both directions.)

use p2p_tests::{Scratch, TestNet, fetch_exactly, p2p_fetch, start_host_sim, test_net};
use std::process::{Command, Stdio};
use std::time::Duration;

/// p2p-fetch from the first host-sim, quietly, with a short stall timeout.
fn fetch_from_first(net: &TestNet, output: &std::path::Path, extra: &[&str]) -> Command {
    let mut command = p2p_fetch(
        net,
        &TestNet::host_addr(0),
        output,
        &["-q", "--timeout", "3"],
    );
    command.args(extra);
    command
}
#[test]
fn a_swarm_of_faulty_links_at_several_levels_still_gives_the_exact_file() {
    let Some(mut net) = test_net(3) else { return };
    let scratch = Scratch::new("faulty-swarm");
    let (path, data) = scratch.file("one-mib.bin", 1 << 20);
    let file = path.to_str().expect("path");
    let levels: [&[&str]; 3] = [
        &["--drop-chance", "1"],
        &["--corrupt-chance", "2"],
        &["--drop-chance", "3", "--corrupt-chance", "1"],
    ];
    for (index, faults) in levels.iter().enumerate() {
        let mut args = vec!["--file", file];
        let peers: Vec<String> = (0..3)
            .filter(|&i| i != index)
            .map(TestNet::host_addr)
            .collect();
        for peer in &peers {
            args.extend(["--peer", peer.as_str()]);
        }
        args.extend_from_slice(faults);
        start_host_sim(&mut net, index, &args);
    }
    let output = scratch.0.join("fetched.bin");
    fetch_exactly(&mut fetch_from_first(&net, &output, &[]), &output, &data);
}

#[test]
fn a_peer_killed_and_restarted_mid_download_is_used_again_or_replaced() {
    let Some(mut net) = test_net(2) else { return };
    let scratch = Scratch::new("restart");
    let (path, data) = scratch.file("three-mib.bin", 3 << 20);
    let file = path.to_str().expect("path");
    let slow = ["--rate", "8000"];
    let first = [&["--file", file, "--peer", "10.0.0.3"][..], &slow].concat();
    let (first_index, _) = start_host_sim(&mut net, 0, &first);
    start_host_sim(&mut net, 1, &[&["--file", file][..], &slow].concat());
    let output = scratch.0.join("fetched.bin");
    let child = fetch_from_first(&net, &output, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    std::thread::sleep(Duration::from_millis(800));
    net.kill(first_index);
    std::thread::sleep(Duration::from_millis(700));
    start_host_sim(&mut net, 0, &first);
    let result = child.wait_with_output().expect("p2p-fetch");
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        std::fs::read(&output).expect("output") == data,
        "not byte-identical"
    );
}

#[test]
fn p2p_fetch_killed_mid_download_resumes_without_refetching() {
    let Some(mut net) = test_net(1) else { return };
    let scratch = Scratch::new("resume");
    let (path, data) = scratch.file("four-mib.bin", 4 << 20);
    // 16 Mbit/s: about 2 s for the file, so the kill lands mid-way.
    start_host_sim(
        &mut net,
        0,
        &["--file", path.to_str().expect("path"), "--rate", "16000"],
    );
    let output = scratch.0.join("fetched.bin");
    let mut child = fetch_from_first(&net, &output, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    std::thread::sleep(Duration::from_millis(1200));
    // SIGKILL: no chance to tidy up, as after a crash or power loss.
    child.kill().expect("kill p2p-fetch");
    child.wait().expect("reap");
    assert!(
        !output.exists(),
        "no output before the download is complete"
    );
    let resume = &mut fetch_from_first(&net, &output, &["--continue", "--json"]);
    let summary: serde_json::Value =
        serde_json::from_slice(&fetch_exactly(resume, &output, &data)).expect("JSON summary");
    let resumed = summary["bytes_resumed"].as_u64().expect("bytes_resumed");
    let fetched = summary["bytes_downloaded"]
        .as_u64()
        .expect("bytes_downloaded");
    assert!(
        resumed > 0,
        "nothing was kept from the first run: {summary}"
    );
    assert_eq!(resumed + fetched, data.len() as u64, "{summary}");
}
