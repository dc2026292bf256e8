//! p2p-fetch against swarms of host-sims on a private TAP network: the real peers, the real
//! kernel TCP on the client side.

use p2p_tests::{
    Scratch, TestNet, fetch_exactly, fetched_exactly, p2p_fetch, start_host_sim, test_net,
    wait_for_progress,
};
use std::process::{Command, Stdio};

/// 5 MiB: 5120 blocks of 1 KiB.
const FILE_LEN: usize = 5 << 20;

/// p2p-fetch from the first host-sim with a JSON summary and a short stall timeout.
fn fetch_from_first(net: &TestNet, output: &std::path::Path) -> Command {
    p2p_fetch(
        net,
        &TestNet::host_addr(0),
        output,
        &["--json", "-q", "--timeout", "2"],
    )
}

fn bytes_by_peer(summary: &serde_json::Value) -> Vec<(String, u64)> {
    summary["peers"]
        .as_array()
        .expect("peers in the summary")
        .iter()
        .map(|peer| {
            (
                peer["address"].as_str().unwrap_or_default().to_string(),
                peer["bytes"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn a_chain_of_three_host_sims_gives_the_whole_file() {
    let Some(mut net) = test_net(3) else { return };
    let scratch = Scratch::new("swarm-chain");
    let (path, data) = scratch.file("five-mib.bin", FILE_LEN);
    let file = path.to_str().expect("path");
    // A lists B, B lists C; each holds a different, overlapping part.
    start_host_sim(
        &mut net,
        0,
        &["--file", file, "--blocks", "0-2499", "--peer", "10.0.0.3"],
    );
    start_host_sim(
        &mut net,
        1,
        &[
            "--file",
            file,
            "--blocks",
            "2000-4499",
            "--peer",
            "10.0.0.4",
        ],
    );
    start_host_sim(&mut net, 2, &["--file", file, "--blocks", "4000-5119"]);
    let output = scratch.0.join("fetched.bin");
    let stdout = fetch_exactly(&mut fetch_from_first(&net, &output), &output, &data);
    let summary: serde_json::Value = serde_json::from_slice(&stdout).expect("JSON summary");
    let peers = bytes_by_peer(&summary);
    assert_eq!(peers.len(), 3, "{summary}");
    for (address, bytes) in &peers {
        assert!(*bytes > 0, "{address} sent nothing: {summary}");
    }
    // Bytes counted per peer are the useful ones (endgame duplicates are counted apart).
    assert_eq!(peers.iter().map(|(_, b)| b).sum::<u64>(), FILE_LEN as u64);
}

#[test]
fn a_host_sim_killed_mid_download_leaves_the_rest_to_the_others() {
    let Some(mut net) = test_net(3) else { return };
    let scratch = Scratch::new("swarm-kill");
    let (path, data) = scratch.file("five-mib.bin", FILE_LEN);
    let file = path.to_str().expect("path");
    // Slow links (5 Mbit/s each, about 3 s for the file) so the download is still running
    // when B dies; A and C together hold everything.
    let slow = ["--rate", "5000"];
    start_host_sim(
        &mut net,
        0,
        &[
            &[
                "--file", file, "--blocks", "0-3999", "--peer", "10.0.0.3", "--peer", "10.0.0.4",
            ][..],
            &slow,
        ]
        .concat(),
    );
    let (victim, _) = start_host_sim(
        &mut net,
        1,
        &[&["--file", file, "--blocks", "1000-4999"][..], &slow].concat(),
    );
    start_host_sim(
        &mut net,
        2,
        &[&["--file", file, "--blocks", "3000-5119"][..], &slow].concat(),
    );
    let output = scratch.0.join("fetched.bin");
    let mut child = fetch_from_first(&net, &output)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start p2p-fetch");
    wait_for_progress(&output);
    net.kill(victim);
    assert!(
        child.try_wait().expect("p2p-fetch state").is_none(),
        "the kill must land mid-download"
    );
    let stdout = fetched_exactly(child.wait_with_output().expect("p2p-fetch"), &output, &data);
    let summary: serde_json::Value = serde_json::from_slice(&stdout).expect("JSON summary");
    // The kill came mid-download: the victim sent less than its share, the others the rest.
    let victim_bytes = bytes_by_peer(&summary)
        .into_iter()
        .find(|(address, _)| address == "10.0.0.3:8888")
        .map(|(_, bytes)| bytes)
        .expect("the victim is in the summary");
    assert!(victim_bytes < FILE_LEN as u64 / 3, "{summary}");
}
