//! The mps2-an386 firmware in QEMU on a TAP of a private network: the same protocol tests as
//! host-sim's, p2p-fetch against the board, and a mixed swarm of the board and two host-sims.

use p2p_core::wire::{PeerAddr, Request};
use p2p_tests::{
    Answer, Conn, Firmware, SAMPLE, Scratch, ask_byte_by_byte, boot_board, boot_board_with_monitor,
    closed_by_server, connect, download_concurrently, fetch_exactly, p2p_fetch,
    pipelined_sample_blocks, qemu_available, start_board, start_host_sim, test_net,
};
use std::io::Write;
use std::time::Duration;

/// The board's MAC ends in this byte, so it falls back to 10.0.0.16.
const BOARD: u8 = 0x10;

#[test]
fn p2p_fetch_downloads_the_file_from_the_board() {
    if !qemu_available(Firmware::Default) {
        return;
    }
    let Some(mut net) = test_net(1) else { return };
    let scratch = Scratch::new("board-fetch");
    let (_, addr) = start_board(
        &mut net,
        0,
        BOARD,
        Firmware::Default,
        &scratch.0.join("board.defmt"),
    );
    let output = scratch.0.join("fetched.txt");
    fetch_exactly(
        &mut p2p_fetch(&net, &addr.ip().to_string(), &output, &["-q"]),
        &output,
        SAMPLE,
    );
}

#[test]
fn a_mixed_swarm_of_the_board_and_two_host_sims_gives_the_whole_file() {
    if !qemu_available(Firmware::Swarm) {
        return;
    }
    let Some(mut net) = test_net(3) else { return };
    let scratch = Scratch::new("board-swarm");
    // The swarm build holds 0-99 and lists 10.0.0.3 and 10.0.0.4: the host-sims on tap1, tap2.
    start_host_sim(&mut net, 1, &["--blocks", "90-199"]);
    start_host_sim(&mut net, 2, &["--blocks", "190-292"]);
    let (_, addr) = start_board(
        &mut net,
        0,
        BOARD,
        Firmware::Swarm,
        &scratch.0.join("board.defmt"),
    );
    let listed = net
        .run_inside(move || {
            connect(addr)
                .expect("connect")
                .ask(&[Request::PeerList])
                .expect("peers")
        })
        .expect("inside");
    assert_eq!(
        listed,
        [Answer::Peers(vec![
            PeerAddr::new([10, 0, 0, 3], 8888),
            PeerAddr::new([10, 0, 0, 4], 8888)
        ])]
    );
    let output = scratch.0.join("fetched.txt");
    // No peer holds it all: a whole, identical file needs blocks from all three.
    fetch_exactly(
        &mut p2p_fetch(&net, &addr.ip().to_string(), &output, &["-q"]),
        &output,
        SAMPLE,
    );
}

#[test]
fn the_board_answers_pipelined_split_and_malformed_requests() {
    if !qemu_available(Firmware::Default) {
        return;
    }
    let Some(mut net) = test_net(1) else { return };
    let scratch = Scratch::new("board-protocol");
    let (_, addr) = start_board(
        &mut net,
        0,
        BOARD,
        Firmware::Default,
        &scratch.0.join("board.defmt"),
    );
    net.run_inside(move || {
        let mut conn = connect(addr).expect("connect");
        conn.set_file_size(SAMPLE.len() as u32);
        // Split byte by byte.
        assert_eq!(
            ask_byte_by_byte(
                &mut conn,
                &[Request::FileSize, Request::Block { start: 3, end: 3 }]
            )
            .expect("answers"),
            [
                Answer::Size(300_000),
                Answer::Data(SAMPLE[3072..4096].to_vec())
            ]
        );
        // Pipelined.
        let all = Answer::Ranges(vec![p2p_core::BlockRange::new(0, 292).expect("range")]);
        let (requests, expected) = pipelined_sample_blocks(40, 11, (Request::BlockList, all));
        assert_eq!(conn.ask(&requests).expect("pipelined"), expected);
        // Refusals keep the connection; an unknown type ends it.
        let answers = conn
            .ask(&[
                Request::Block { start: 7, end: 2 },
                Request::Block { start: 0, end: 293 },
                Request::FileSize,
            ])
            .expect("answers");
        assert_eq!(
            answers,
            [
                Answer::Failure("start block 7 is after end block 2".into()),
                Answer::Failure("block 293 is beyond the last block 292".into()),
                Answer::Size(300_000),
            ]
        );
        conn.stream_mut().write_all(&[0x99]).expect("write");
        let answers = conn.gather(1, None).expect("error");
        assert_eq!(
            answers,
            [Answer::Error(
                "unknown message type 0x99; closing the connection".into()
            )]
        );
        assert!(closed_by_server(&mut conn));
    })
    .expect("inside");
}

#[test]
fn the_board_serves_four_at_once_refuses_a_fifth_and_survives_churn() {
    if !qemu_available(Firmware::Default) {
        return;
    }
    let Some(mut net) = test_net(1) else { return };
    let scratch = Scratch::new("board-load");
    let (_, addr) = start_board(
        &mut net,
        0,
        BOARD,
        Firmware::Default,
        &scratch.0.join("board.defmt"),
    );
    net.run_inside(move || {
        download_concurrently(addr, 4, &std::sync::Arc::new(SAMPLE.to_vec()));
        // Four held open: a fifth is told the board is busy.
        let mut held: Vec<Conn> = (0..4).map(|_| connect(addr).expect("connect")).collect();
        for conn in &mut held {
            assert_eq!(
                conn.ask(&[Request::FileSize]).expect("answer"),
                [Answer::Size(300_000)]
            );
        }
        let mut fifth = connect(addr).expect("connect");
        let answers = fifth.ask(&[Request::FileSize]).expect("busy answer");
        assert_eq!(
            answers,
            [Answer::Error(
                "server busy: too many connections; try again later".into()
            )]
        );
        drop(held);
        drop(fifth);
        std::thread::sleep(Duration::from_millis(1500));
        for round in 0..100 {
            let mut conn = connect(addr).unwrap_or_else(|e| panic!("connection {round}: {e}"));
            assert_eq!(
                conn.ask(&[Request::FileSize]).expect("answer"),
                [Answer::Size(300_000)],
                "round {round}"
            );
        }
    })
    .expect("inside");
}

#[test]
fn a_panic_is_logged_and_ends_qemu_with_a_failure_code() {
    if !qemu_available(Firmware::Panic) {
        return;
    }
    let Some(mut net) = test_net(1) else { return };
    let scratch = Scratch::new("board-panic");
    let log = scratch.0.join("board.defmt");
    let index = boot_board(&mut net, 0, BOARD, Firmware::Panic, &log);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let board = net.child(index).expect("qemu");
        if let Some(status) = board.try_wait().expect("qemu status") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the panicking board did not end QEMU within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(1), "QEMU's exit: {status}");
    // panic-probe's message: "panicked at FILE:LINE:COLUMN:", then the panic's own.
    let messages = Firmware::Panic.decode_log(&log);
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("panicked at ")
                && m.contains("P2P_TEST_PANIC: panicking on purpose")),
        "{messages:?}"
    );
}

/// Waits until the board's decoded log has a message for which `wanted` holds.
fn wait_for_board_log(
    log: &std::path::Path,
    limit: Duration,
    wanted: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(line) = Firmware::Filling
            .decode_log(log)
            .into_iter()
            .find(|line| wanted(line))
        {
            return Some(line);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn the_board_fills_from_two_host_sims_resumes_after_a_reset_and_serves() {
    if !qemu_available(Firmware::Filling) {
        return;
    }
    let Some(mut net) = test_net(3) else { return };
    let scratch = Scratch::new("board-filling");
    // Slow sources, so the reset lands part-way: about 200 KB/s together.
    start_host_sim(&mut net, 0, &["--rate", "800"]);
    start_host_sim(&mut net, 1, &["--rate", "800"]);
    let log = scratch.0.join("board.defmt");
    let monitor = scratch.0.join("monitor.sock");
    boot_board_with_monitor(&mut net, 2, BOARD, Firmware::Filling, &log, Some(&monitor));
    let part_way = |line: &str| line.starts_with("fetch: ") && line.contains(" of 293 blocks");
    let seen = wait_for_board_log(&log, Duration::from_secs(60), part_way)
        .unwrap_or_else(|| panic!("no progress: {:?}", Firmware::Filling.decode_log(&log)));
    assert!(
        !seen.contains("293 of 293"),
        "complete before the reset: {seen}"
    );
    // Reset the board, as its button would: the program restarts; the storage stays.
    let mut control = std::os::unix::net::UnixStream::connect(&monitor).expect("QEMU monitor");
    control.write_all(b"system_reset\n").expect("reset");
    let resumed = wait_for_board_log(&log, Duration::from_secs(30), |line| {
        line.starts_with("storage: 300000 bytes")
    })
    .unwrap_or_else(|| panic!("no resume: {:?}", Firmware::Filling.decode_log(&log)));
    let kept: u32 = resumed
        .split(", ")
        .nth(1)
        .and_then(|part| part.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {resumed:?}"));
    assert!(kept > 0 && kept < 293, "kept {kept} blocks: {resumed}");
    assert!(
        wait_for_board_log(&log, Duration::from_secs(60), |line| line
            .contains("file complete"))
        .is_some(),
        "never complete: {:?}",
        Firmware::Filling.decode_log(&log)
    );
    let output = scratch.0.join("from-board.txt");
    fetch_exactly(
        &mut p2p_fetch(&net, "10.0.0.16", &output, &["-q", "--max-peers", "1"]),
        &output,
        SAMPLE,
    );
    let peak = wait_for_board_log(&log, Duration::from_secs(5), |l| {
        l.starts_with("stack peak")
    });
    eprintln!("filling board: {}", peak.unwrap_or_default());
}
