//! The Wireshark dissector (tools/wireshark/p2pblocks.lua) decodes a real session captured
//! with host-sim's --pcap: every message type with its fields, including a response split
//! across many TCP segments.

use p2p_core::wire::Request;
use p2p_tests::{Answer, Scratch, connect, start_host_sim, test_net};
use std::io::Write;
use std::process::Command;
use std::time::Duration;

fn tshark_available() -> bool {
    if Command::new("tshark").arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set, and this test needs tshark (apt-get install tshark)"
    );
    p2p_testnet::report_skip("tshark is not installed (apt-get install tshark)");
    false
}

#[test]
fn tshark_decodes_every_message_of_a_captured_session() {
    if !tshark_available() {
        return;
    }
    let Some(mut net) = test_net(1) else { return };
    let scratch = Scratch::new("wireshark");
    let pcap = scratch.0.join("session.pcap");
    let (host_sim, addr) = start_host_sim(
        &mut net,
        0,
        &[
            "--blocks",
            "0-99,200-292",
            "--peer",
            "10.0.0.3",
            "--peer",
            "10.0.0.4:9000",
            "--pcap",
            pcap.to_str().expect("path"),
        ],
    );
    net.run_inside(move || {
        let mut conn = connect(addr).expect("connect");
        conn.set_file_size(300_000);
        conn.ask(&[Request::FileSize]).expect("size");
        conn.ask(&[Request::PeerList, Request::BlockList])
            .expect("lists");
        let answers = conn
            .ask(&[Request::Block { start: 0, end: 99 }])
            .expect("blocks");
        assert!(matches!(&answers[0], Answer::Data(data) if data.len() == 102_400));
        conn.ask(&[Request::Block {
            start: 99,
            end: 100,
        }])
        .expect("failure");
        let answers = conn
            .ask(&[Request::Digest { start: 5, end: 7 }])
            .expect("digests");
        assert!(matches!(&answers[0], Answer::Digests(digests) if digests.len() == 3));
        conn.stream_mut().write_all(&[0x42]).expect("stray byte");
        std::thread::sleep(Duration::from_millis(200));
    })
    .expect("inside");
    std::thread::sleep(Duration::from_millis(300));
    net.kill(host_sim);

    let dissector = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tools/wireshark/p2pblocks.lua"
    );
    let fields = [
        "p2pblocks.type",
        "p2pblocks.count",
        "p2pblocks.peer.ip",
        "p2pblocks.peer.port",
        "p2pblocks.range.start",
        "p2pblocks.range.end",
        "p2pblocks.file_size",
        "p2pblocks.start",
        "p2pblocks.end",
        "p2pblocks.data_len",
        "p2pblocks.reason",
        "tcp.reassembled.length",
        "p2pblocks.digest",
    ];
    let mut command = Command::new("tshark");
    command
        .args(["-X", &format!("lua_script:{dissector}"), "-r"])
        .arg(&pcap);
    command.args(["-Y", "p2pblocks", "-T", "fields", "-E", "separator=|"]);
    for field in fields {
        command.args(["-e", field]);
    }
    let output = command.output().expect("run tshark");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<Vec<String>> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.split('|').map(str::to_string).collect())
        .collect();
    let row = |kind: &str| -> Vec<String> {
        rows.iter()
            .find(|r| r[0].split(',').any(|t| t == kind))
            .unwrap_or_else(|| panic!("no {kind} in {rows:?}"))
            .clone()
    };
    assert_eq!(row("0x07")[0], "0x07");
    assert_eq!(row("0x08")[6], "300000");
    assert!(
        row("0x00")[0].contains("0x02"),
        "pipelined requests in one segment"
    );
    let lists = row("0x01");
    assert_eq!(lists[1], "2,2");
    assert_eq!(lists[2], "10.0.0.3,10.0.0.4");
    assert_eq!(lists[3], "8888,9000");
    assert_eq!(lists[4], "0,200");
    assert_eq!(lists[5], "99,292");
    let request = rows
        .iter()
        .find(|r| r[0] == "0x04" && r[7] == "0")
        .expect("block request 0-99");
    assert_eq!(request[8], "99");
    let data = row("0x05");
    assert_eq!(data[9], "102400");
    assert!(
        data[11].parse::<u32>().expect("reassembled length") > 102_400 / 1460,
        "split across segments"
    );
    assert_eq!(row("0x06")[10], "blocks 99-100 are not all held here");
    assert_eq!(
        row("0x7f")[10],
        "unknown message type 0x42; closing the connection"
    );
    let digest_request = rows
        .iter()
        .find(|r| r[0] == "0x09")
        .expect("digest request");
    assert_eq!((&*digest_request[7], &*digest_request[8]), ("5", "7"));
    // The SHA-256 of the sample's blocks 5, 6 and 7.
    assert_eq!(
        row("0x0a")[12],
        "11fd2ad97128175d32750be7bb80906f044ef7f97e85afe7f8fa2e389ad71e64,6dc6487901b6a00f072a1936479dd1d18974252006afb2e049722b506fb32f8a,05c6c99bd2550ebf5b0ccf41dc805a5225704358ec7825084e6b9fdffd5cc774"
    );
}
