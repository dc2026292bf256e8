//! Faults on the private TAP network: lossy, corrupting, delaying and reordering links at
//! several levels, peers killed and restarted during a swarm download, p2p-fetch killed and
//! resumed. Every case ends byte-identical or with a clear failure, and nothing hangs. (The
//! kernels these run on may lack sch_netem, so the faults come from host-sim, both directions:
//! loss and corruption from smoltcp's FaultInjector, delay and reordering from its own link.)

use p2p_tests::{
    Scratch, TestNet, fetch_exactly, fetched_exactly, p2p_fetch, start_host_sim, test_net,
    wait_for_progress,
};
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
fn a_swarm_of_delaying_and_reordering_links_still_gives_the_exact_file() {
    let Some(mut net) = test_net(3) else { return };
    let scratch = Scratch::new("reordering-swarm");
    let (path, data) = scratch.file("two-mib.bin", 2 << 20);
    let file = path.to_str().expect("path");
    let levels: [&[&str]; 3] = [
        &["--delay-ms", "40"],
        &["--reorder-chance", "20"],
        &[
            "--delay-ms",
            "10",
            "--reorder-chance",
            "5",
            "--drop-chance",
            "1",
        ],
    ];
    for (index, faults) in levels.iter().enumerate() {
        // A chain of peer lists, so discovery itself crosses the impaired links.
        let next = TestNet::host_addr((index + 1) % 3);
        let args = [&["--file", file, "--peer", next.as_str()][..], faults].concat();
        start_host_sim(&mut net, index, &args);
    }
    let output = scratch.0.join("fetched.bin");
    let mut fetch = fetch_from_first(&net, &output, &["--json"]);
    let summary: serde_json::Value =
        serde_json::from_slice(&fetch_exactly(&mut fetch, &output, &data)).expect("JSON summary");
    let peers = summary["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 3, "every impaired peer was found: {summary}");
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
    let mut child = fetch_from_first(&net, &output, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    wait_for_progress(&output);
    net.kill(first_index);
    assert!(
        child.try_wait().expect("p2p-fetch state").is_none(),
        "the kill must land mid-download"
    );
    // The peer stays away for a while before it comes back.
    std::thread::sleep(Duration::from_millis(700));
    start_host_sim(&mut net, 0, &first);
    fetched_exactly(child.wait_with_output().expect("p2p-fetch"), &output, &data);
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
    wait_for_progress(&output);
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
