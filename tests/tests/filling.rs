//! Filling nodes over real TAP devices: host-sims that start empty, fill themselves from the
//! swarm, verify every block, keep it in their store and serve it onward.

use p2p_tests::{
    SAMPLE, Scratch, fetch_exactly, manifest_of, p2p_fetch, start_filling_node, start_host_sim,
    test_net, wait_for_log, wait_until_answering,
};
use std::time::Duration;

const FILL_LIMIT: Duration = Duration::from_secs(60);

fn complete(line: &str) -> bool {
    line.contains("file complete")
}

#[test]
fn an_empty_node_fills_then_serves_alone_after_its_source_is_gone() {
    let Some(mut net) = test_net(2) else { return };
    let scratch = Scratch::new("fill-alone");
    let manifest = manifest_of(None);
    let (source, _) = start_host_sim(&mut net, 0, &[]);
    let log = scratch.0.join("filling.log");
    start_filling_node(
        &mut net,
        1,
        &manifest,
        &scratch.0.join("store"),
        &["10.0.0.2"],
        &log,
    );
    assert!(
        wait_for_log(&log, FILL_LIMIT, complete).is_some(),
        "never complete: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    net.kill(source);
    let output = scratch.0.join("sample.txt");
    // Its peer list still names the source, which is gone: p2p-fetch warns and goes on.
    fetch_exactly(
        &mut p2p_fetch(&net, "10.0.0.3", &output, &[]),
        &output,
        SAMPLE,
    );
}

#[test]
fn a_corrupting_source_is_dropped_and_never_served_onward() {
    let Some(mut net) = test_net(3) else { return };
    let scratch = Scratch::new("fill-corrupt");
    let manifest = manifest_of(None);
    // The same file with one byte changed in every tenth block: its digests do not match.
    let mut corrupted = SAMPLE.to_vec();
    for block in (0..corrupted.len() / 1024).step_by(10) {
        corrupted[block * 1024 + 5] ^= 0x20;
    }
    let bad = scratch.0.join("corrupted.txt");
    std::fs::write(&bad, &corrupted).unwrap();
    let bad_arg = bad.to_str().unwrap();
    start_host_sim(&mut net, 0, &["--file", bad_arg]);
    start_host_sim(&mut net, 1, &[]);
    let log = scratch.0.join("filling.log");
    let store = scratch.0.join("store");
    start_filling_node(
        &mut net,
        2,
        &manifest,
        &store,
        &["10.0.0.2", "10.0.0.3"],
        &log,
    );
    assert!(
        wait_for_log(&log, FILL_LIMIT, complete).is_some(),
        "never complete: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("dropped 10.0.0.2:8888"),
        "the corrupting source was not dropped: {text}"
    );
    let output = scratch.0.join("sample.txt");
    // Only from the filled node: what it serves is the sample, not one corrupted byte.
    fetch_exactly(
        &mut p2p_fetch(&net, "10.0.0.4", &output, &["--max-peers", "1"]),
        &output,
        SAMPLE,
    );
}

#[test]
fn a_chain_fills_through_a_node_that_is_itself_filling() {
    let Some(mut net) = test_net(3) else { return };
    let scratch = Scratch::new("fill-chain");
    let (file, data) = scratch.file("big.bin", 2_000_000);
    let manifest = manifest_of(Some(&file));
    // A slow source (8 Mbit/s: 2 s for the file), so B is still filling when C asks it.
    start_host_sim(
        &mut net,
        0,
        &["--file", file.to_str().unwrap(), "--rate", "8000"],
    );
    let b_log = scratch.0.join("b.log");
    start_filling_node(
        &mut net,
        1,
        &manifest,
        &scratch.0.join("b"),
        &["10.0.0.2"],
        &b_log,
    );
    let verifying = |line: &str| line.contains("blocks verified") && !line.contains(" 0 of");
    assert!(wait_for_log(&b_log, FILL_LIMIT, verifying).is_some());
    let c_log = scratch.0.join("c.log");
    start_filling_node(
        &mut net,
        2,
        &manifest,
        &scratch.0.join("c"),
        &["10.0.0.3"],
        &c_log,
    );
    assert!(
        wait_for_log(&b_log, Duration::from_millis(1), complete).is_none(),
        "B finished before C started: the chain was not tested"
    );
    assert!(
        wait_for_log(&c_log, FILL_LIMIT, complete).is_some(),
        "C never completed: {}",
        std::fs::read_to_string(&c_log).unwrap_or_default()
    );
    let output = scratch.0.join("from-c.bin");
    fetch_exactly(
        &mut p2p_fetch(&net, "10.0.0.4", &output, &["--max-peers", "1"]),
        &output,
        &data,
    );
}

#[test]
fn a_killed_filling_node_resumes_from_its_store() {
    let Some(mut net) = test_net(2) else { return };
    let scratch = Scratch::new("fill-resume");
    let (file, data) = scratch.file("big.bin", 3_000_000);
    let manifest = manifest_of(Some(&file));
    start_host_sim(
        &mut net,
        0,
        &["--file", file.to_str().unwrap(), "--rate", "8000"],
    );
    let store = scratch.0.join("store");
    let first_log = scratch.0.join("first.log");
    let first = start_filling_node(&mut net, 1, &manifest, &store, &["10.0.0.2"], &first_log);
    let part_way = |line: &str| {
        line.contains("blocks verified") && !line.contains(" 0 of") && !line.contains("store")
    };
    assert!(wait_for_log(&first_log, FILL_LIMIT, part_way).is_some());
    net.kill(first);
    assert!(
        wait_for_log(&first_log, Duration::from_millis(1), complete).is_none(),
        "complete before the kill"
    );
    let second_log = scratch.0.join("second.log");
    start_filling_node(&mut net, 1, &manifest, &store, &["10.0.0.2"], &second_log);
    let resumed = wait_for_log(&second_log, FILL_LIMIT, |l| l.contains("store ")).unwrap();
    let held: u32 = resumed
        .split(", ")
        .find_map(|part| part.strip_suffix(" blocks verified"))
        .and_then(|part| part.split(" of ").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {resumed:?}"));
    assert!(held > 0, "nothing kept: {resumed}");
    assert!(wait_for_log(&second_log, FILL_LIMIT, complete).is_some());
    wait_until_answering(
        &net,
        "10.0.0.3:8888".parse().unwrap(),
        Duration::from_secs(5),
    );
    let output = scratch.0.join("resumed.bin");
    fetch_exactly(
        &mut p2p_fetch(&net, "10.0.0.3", &output, &["--max-peers", "1"]),
        &output,
        &data,
    );
}
