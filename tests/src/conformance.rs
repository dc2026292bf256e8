//! Conformance checks of a server through kernel TCP, by address: the same checks run against
//! host-sim on a TAP device (`tests/host_sim.rs`) and against p2p-core's embedded-io adapter on
//! loopback (`tests/io_adapter.rs`). Each names the server setup it expects.

use crate::{Answer, SAMPLE, ask_byte_by_byte, closed_by_server, connect, pipelined_sample_blocks};
use p2p_core::BlockRange;
use p2p_core::wire::{PeerAddr, Request};
use std::io::Write;
use std::net::SocketAddr;

fn range(start: u16, end: u16) -> BlockRange {
    BlockRange::new(start, end).expect("range")
}

/// Every message type, answered. The server serves [`SAMPLE`] holding blocks `0-99,200-292`
/// and lists the peers 10.0.0.3 and 10.0.0.4:9000.
pub fn every_message_is_answered(addr: SocketAddr) {
    let mut conn = connect(addr).expect("connect");
    conn.set_file_size(SAMPLE.len() as u32);
    let answers = conn
        .ask(&[
            Request::PeerList,
            Request::BlockList,
            Request::FileSize,
            Request::Block { start: 5, end: 6 },
            Request::Block {
                start: 292,
                end: 292,
            },
            Request::Block {
                start: 99,
                end: 100,
            },
        ])
        .expect("answers");
    assert_eq!(
        answers,
        [
            Answer::Peers(vec![
                PeerAddr::new([10, 0, 0, 3], 8888),
                PeerAddr::new([10, 0, 0, 4], 9000)
            ]),
            Answer::Ranges(vec![range(0, 99), range(200, 292)]),
            Answer::Size(300_000),
            Answer::Data(SAMPLE[5 * 1024..7 * 1024].to_vec()),
            Answer::Data(SAMPLE[292 * 1024..].to_vec()),
            Answer::Failure("blocks 99-100 are not all held here".into()),
        ]
    );
}

/// Requests split byte by byte, then pipelined, answered in order. The server serves all of
/// [`SAMPLE`].
pub fn requests_split_byte_by_byte_and_pipelined(addr: SocketAddr) {
    let mut conn = connect(addr).expect("connect");
    conn.set_file_size(SAMPLE.len() as u32);
    let requests = [
        Request::FileSize,
        Request::Block { start: 1, end: 1 },
        Request::BlockList,
    ];
    let answers = ask_byte_by_byte(&mut conn, &requests).expect("answers");
    assert_eq!(
        answers,
        [
            Answer::Size(300_000),
            Answer::Data(SAMPLE[1024..2048].to_vec()),
            Answer::Ranges(vec![range(0, 292)])
        ]
    );

    let (requests, expected) =
        pipelined_sample_blocks(60, 7, (Request::FileSize, Answer::Size(300_000)));
    assert_eq!(conn.ask(&requests).expect("pipelined answers"), expected);
}

/// Refused Block Requests leave the connection usable; an unknown type or a response type
/// gets an Error and a close. The server serves [`SAMPLE`] holding blocks `0-9`.
pub fn malformed_input_gets_failure_or_error(addr: SocketAddr) {
    let mut conn = connect(addr).expect("connect");
    conn.set_file_size(SAMPLE.len() as u32);
    let answers = conn
        .ask(&[
            Request::Block { start: 9, end: 3 },
            Request::Block { start: 0, end: 400 },
            Request::Block { start: 5, end: 12 },
            Request::Block { start: 2, end: 2 },
        ])
        .expect("answers");
    assert_eq!(
        answers,
        [
            Answer::Failure("start block 9 is after end block 3".into()),
            Answer::Failure("block 400 is beyond the last block 292".into()),
            Answer::Failure("blocks 5-12 are not all held here".into()),
            Answer::Data(SAMPLE[2048..3072].to_vec()),
        ],
        "failures leave the connection usable"
    );
    // An unknown type: the request before it is answered, then Error, then close.
    conn.encode(&[Request::FileSize]).expect("encode");
    conn.stream_mut()
        .write_all(&[0x07, 0x42, 0x07])
        .expect("write");
    let answers = conn.gather(2, None).expect("answers");
    assert_eq!(answers[0], Answer::Size(300_000));
    assert_eq!(
        answers[1],
        Answer::Error("unknown message type 0x42; closing the connection".into())
    );
    assert!(closed_by_server(&mut conn));
    // A response type sent to the server is refused the same way.
    let mut conn = connect(addr).expect("connect");
    conn.stream_mut()
        .write_all(&[0x08, 0, 0, 0, 1])
        .expect("write");
    let answers = conn.gather(1, None).expect("answers");
    assert!(
        matches!(&answers[0], Answer::Error(text) if text.contains("0x08")),
        "{answers:?}"
    );
    assert!(closed_by_server(&mut conn));
}
