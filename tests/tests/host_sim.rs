//! host-sim on a real TAP device in a private network namespace, spoken to through the
//! kernel's TCP from a thread inside that namespace. The conformance checks
//! (`p2p_tests::conformance`) run against p2p-core's embedded-io adapter too
//! (`tests/io_adapter.rs`).

use p2p_core::wire::Request;
use p2p_tests::{
    Answer, Conn, SAMPLE, Scratch, binary, conformance, connect, cpu_share, download_concurrently,
    start_host_sim, test_net, whole_file,
};
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn every_message_is_answered() {
    let Some(mut net) = test_net(1) else { return };
    let (_, addr) = start_host_sim(
        &mut net,
        0,
        &[
            "--blocks",
            "0-99,200-292",
            "--peer",
            "10.0.0.3",
            "--peer",
            "10.0.0.4:9000",
        ],
    );
    net.run_inside(move || conformance::every_message_is_answered(addr))
        .expect("inside");
}

#[test]
fn requests_split_byte_by_byte_and_pipelined_are_answered_in_order() {
    let Some(mut net) = test_net(1) else { return };
    let (_, addr) = start_host_sim(&mut net, 0, &[]);
    net.run_inside(move || conformance::requests_split_byte_by_byte_and_pipelined(addr))
        .expect("inside");
}

#[test]
fn malformed_input_gets_failure_or_error() {
    let Some(mut net) = test_net(1) else { return };
    let (_, addr) = start_host_sim(&mut net, 0, &["--blocks", "0-9"]);
    net.run_inside(move || conformance::malformed_input_gets_failure_or_error(addr))
        .expect("inside");
}

#[test]
fn eight_concurrent_whole_file_downloads() {
    let Some(mut net) = test_net(1) else { return };
    let scratch = Scratch::new("concurrent");
    let (path, data) = scratch.file("two-mib.bin", 2 << 20);
    let (_, addr) = start_host_sim(
        &mut net,
        0,
        &[
            "--file",
            path.to_str().expect("path"),
            "--max-connections",
            "8",
        ],
    );
    let data = std::sync::Arc::new(data);
    net.run_inside(move || download_concurrently(addr, 8, &data))
        .expect("inside");
}

#[test]
fn three_hundred_sequential_connections_leak_nothing() {
    let Some(mut net) = test_net(1) else { return };
    let (_, addr) = start_host_sim(&mut net, 0, &["--max-connections", "4"]);
    net.run_inside(move || {
        for round in 0..300 {
            let mut conn = connect(addr).unwrap_or_else(|e| panic!("connection {round}: {e}"));
            assert_eq!(
                conn.ask(&[Request::FileSize]).expect("answer"),
                [Answer::Size(300_000)],
                "round {round}"
            );
        }
        // Every socket came back: the full number of connections can still be served at once.
        let mut open: Vec<Conn> = (0..4).map(|_| connect(addr).expect("connect")).collect();
        for conn in &mut open {
            assert_eq!(
                conn.ask(&[Request::FileSize]).expect("answer"),
                [Answer::Size(300_000)]
            );
        }
    })
    .expect("inside");
}

#[test]
fn a_silent_half_request_does_not_delay_others() {
    let Some(mut net) = test_net(1) else { return };
    let (_, addr) = start_host_sim(&mut net, 0, &[]);
    net.run_inside(move || {
        let mut silent = connect(addr).expect("connect");
        silent
            .stream_mut()
            .write_all(&[0x04, 0x00])
            .expect("half a request");
        let started = Instant::now();
        let mut other = connect(addr).expect("connect");
        other.set_file_size(SAMPLE.len() as u32);
        assert_eq!(
            other.ask(&[whole_file(SAMPLE.len())]).expect("download"),
            [Answer::Data(SAMPLE.to_vec())]
        );
        // Generous bound: the point is not waiting for the silent one's 30 s idle timeout.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
    })
    .expect("inside");
}

#[test]
fn one_mib_survives_drop_and_corruption() {
    let Some(mut net) = test_net(1) else { return };
    let scratch = Scratch::new("lossy");
    let (path, data) = scratch.file("one-mib.bin", 1 << 20);
    let (_, addr) = start_host_sim(
        &mut net,
        0,
        &[
            "--file",
            path.to_str().expect("path"),
            "--drop-chance",
            "2",
            "--corrupt-chance",
            "1",
            // smoltcp's loss recovery can stall a connection for over 30 s (every loss waits
            // out an RTO that doubles from 1 s; see BENCHMARKS.md), and host-sim's idle timeout
            // then resets it: this test is about the bytes arriving intact, not how fast.
            "--idle-timeout",
            "300",
        ],
    );
    net.run_inside(move || {
        let mut conn = connect(addr).expect("connect");
        conn.set_stall_timeout(Duration::from_secs(180))
            .expect("timeout");
        conn.set_file_size(data.len() as u32);
        let answers = conn
            .ask(&[whole_file(data.len())])
            .expect("download under loss");
        assert!(
            answers == [Answer::Data(data.clone())],
            "the download is not byte-identical"
        );
    })
    .expect("inside");
}

#[test]
fn jumbo_frames_carry_a_whole_file_intact() {
    let Some(mut net) = test_net(1) else { return };
    for link in ["tap0", "br0"] {
        net.ip(&["link", "set", link, "mtu", "9000"]).expect("MTU");
    }
    let scratch = Scratch::new("jumbo");
    let (path, data) = scratch.file("eight-mib.bin", 8 << 20);
    let (_, addr) = start_host_sim(
        &mut net,
        0,
        &["--file", path.to_str().expect("path"), "--mtu", "9000"],
    );
    let data = std::sync::Arc::new(data);
    net.run_inside(move || download_concurrently(addr, 2, &data))
        .expect("inside");
    // The frames really were jumbo: the kernel counted what host-sim wrote to the TAP as
    // received on it.
    let stats = net
        .command("ip")
        .args(["-s", "-j", "link", "show", "tap0"])
        .output()
        .expect("ip -s link");
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("ip's JSON");
    let (bytes, packets) = (
        stats[0]["stats64"]["rx"]["bytes"].as_u64().expect("bytes"),
        stats[0]["stats64"]["rx"]["packets"]
            .as_u64()
            .expect("packets"),
    );
    assert!(
        bytes / packets > 4000,
        "{bytes} bytes in {packets} frames from host-sim: not jumbo"
    );
}

#[test]
fn host_sim_sleeps_when_idle_and_while_shaped() {
    let Some(mut net) = test_net(1) else { return };
    let scratch = Scratch::new("shaped");
    let (path, data) = scratch.file("one-mib.bin", 1 << 20);
    // 8000 kbit/s: 1 MB/s, so the download takes about a second.
    let (index, addr) = start_host_sim(
        &mut net,
        0,
        &["--file", path.to_str().expect("path"), "--rate", "8000"],
    );
    let pid = net.child(index).expect("host-sim").id();
    let (idle, ()) = cpu_share(pid, || std::thread::sleep(Duration::from_secs(2)));
    assert!(
        idle < 0.02,
        "idle host-sim used {:.0}% of a core",
        idle * 100.0
    );

    let started = Instant::now();
    let (shaped, answers) = cpu_share(pid, || {
        net.run_inside(move || {
            let mut conn = connect(addr).expect("connect");
            conn.set_file_size(data.len() as u32);
            let answers = conn
                .ask(&[whole_file(data.len())])
                .expect("shaped download");
            answers == [Answer::Data(data)]
        })
        .expect("inside")
    });
    assert!(answers, "the shaped download is not byte-identical");
    assert!(
        started.elapsed() > Duration::from_millis(800),
        "1 MiB at 1 MB/s took only {:?}: not shaped",
        started.elapsed()
    );
    // Waiting for the bucket to refill is sleeping, not spinning.
    assert!(
        shaped < 0.3,
        "host-sim used {:.0}% of a core while shaped",
        shaped * 100.0
    );
}

#[test]
fn a_missing_tap_is_a_clear_error_and_is_not_created() {
    let Some(net) = test_net(0) else { return };
    let output = net
        .command(binary("host-sim").to_str().expect("utf-8 path"))
        .args(["--tap", "tap7"])
        .output()
        .expect("run host-sim");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("no network device tap7") && stderr.contains("ip tuntap add tap7"),
        "{stderr}"
    );
    let shown = net
        .command("ip")
        .args(["link", "show", "tap7"])
        .output()
        .expect("ip link");
    assert!(!shown.status.success(), "host-sim made tap7");
}
