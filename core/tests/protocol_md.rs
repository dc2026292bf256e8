//! PROTOCOL.md's examples are checked against the implementation, so the two cannot drift.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use p2p_core::client::{ClientEvent, ClientLimits, ClientSession};
use p2p_core::manifest::manifest_digest;
use p2p_core::server::{ServerConfig, ServerSession};
use p2p_core::wire::{Parsed, PeerAddr, Request};
use p2p_core::{BlockRanges, Digest, Instant, SliceStore};

/// The example table of section 5: (message name, bytes) for every row whose bytes are pure hex
/// or hex, quoted text and hex.
fn examples() -> Vec<(String, Vec<u8>)> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../PROTOCOL.md")).unwrap();
    let section = text.split("## 5. Examples").nth(1).unwrap();
    let mut rows = Vec::new();
    for line in section
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains('`'))
    {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (name, bytes) = (cells[1], cells[2]);
        // "followed by" rows describe data rather than spell it out.
        let spelled = bytes.split(" = ").last().unwrap();
        if spelled.contains("followed by") {
            continue;
        }
        let mut out = Vec::new();
        for piece in spelled.split('`').filter(|p| !p.trim().is_empty()) {
            let hex: Vec<&str> = piece.split_whitespace().collect();
            if hex
                .iter()
                .all(|h| h.len() == 2 && u8::from_str_radix(h, 16).is_ok())
            {
                out.extend(hex.iter().map(|h| u8::from_str_radix(h, 16).unwrap()));
            } else {
                out.extend_from_slice(piece.as_bytes());
            }
        }
        rows.push((name.to_string(), out));
    }
    rows
}

fn file() -> Vec<u8> {
    (0..2500u32).map(|i| (i % 251) as u8).collect()
}

#[test]
fn every_request_example_parses_and_emits_back() {
    let requests: Vec<_> = examples()
        .into_iter()
        .filter(|(name, _)| name.contains("Request") && !name.contains("Response"))
        .collect();
    assert_eq!(requests.len(), 9, "{requests:?}");
    for (name, bytes) in requests {
        let Ok(Parsed::Complete { value, len }) = Request::parse(&bytes) else {
            panic!("{name}: {bytes:02x?} does not parse");
        };
        assert_eq!(len, bytes.len(), "{name}");
        assert!(
            name.starts_with(value.message_type().name()),
            "{name} parsed as {value}"
        );
        let mut out = [0u8; 8];
        let len = value.emit(&mut out).unwrap();
        assert_eq!(&out[..len], bytes, "{name}");
    }
}

#[test]
fn our_server_sends_exactly_the_response_examples() {
    let data = file();
    let held: BlockRanges<2> = "0-1".parse().unwrap();
    let store = SliceStore::with_held(&data, held).unwrap();
    let peers = [
        PeerAddr::new([10, 0, 0, 3], 8888),
        PeerAddr::new([10, 0, 0, 4], 9000),
    ];
    let answer = |request: &[u8]| {
        let now = Instant::from_millis(0);
        let mut session = ServerSession::new(ServerConfig::new(&store, &peers), now);
        session.receive(request, now, &mut |_| {});
        let mut out = vec![0u8; 4096];
        let len = session.transmit(&mut out, now);
        out.truncate(len);
        out
    };
    let table = examples();
    let example = |name: &str| {
        table
            .iter()
            .find(|(n, _)| n.starts_with(name))
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(answer(&[0x00]), example("Peer List Response"));
    assert_eq!(answer(&[0x02]), example("Block List Response (0-1)"));
    assert_eq!(answer(&[0x07]), example("File Size Response"));
    assert_eq!(
        answer(&example("Block Request 1-2")),
        example("Block Response Failure to 1-2")
    );
    assert_eq!(answer(&[0x42]), example("Error for a stray byte 0x42"));
    let mut block_1 = vec![0x05];
    block_1.extend_from_slice(&data[1024..2048]);
    assert_eq!(answer(&example("Block Request 1-1")), block_1);

    let digests: Vec<Digest> = data.chunks(1024).map(Digest::of).collect();
    let store = SliceStore::<1>::new(&data)
        .unwrap()
        .with_digests(&digests)
        .unwrap();
    let now = Instant::from_millis(0);
    let answer = |request: &[u8]| {
        let mut session = ServerSession::new(ServerConfig::new(&store, &[]), now);
        session.receive(request, now, &mut |_| {});
        let mut out = vec![0u8; 4096];
        let len = session.transmit(&mut out, now);
        out.truncate(len);
        out
    };
    assert_eq!(
        answer(&[0x09, 0x00, 0x01, 0x00, 0x01]),
        example("Digest Response to 1-1")
    );
    assert_eq!(
        answer(&example("Digest Request 1-3")),
        example("Block Response Failure to Digest Request 1-3")
    );
}

#[test]
fn the_manifest_example_is_the_example_file_s_and_hashes_to_its_digest() {
    let table = examples();
    let example = |name: &str| &table.iter().find(|(n, _)| n.starts_with(name)).unwrap().1;
    let data = file();
    let digests: Vec<Digest> = data.chunks(1024).map(Digest::of).collect();
    let mut manifest = 2500u32.to_be_bytes().to_vec();
    digests
        .iter()
        .for_each(|d| manifest.extend_from_slice(d.as_bytes()));
    assert_eq!(example("Manifest of the example file"), &manifest);
    let digest = manifest_digest(2500, &digests);
    assert_eq!(
        example("Manifest digest of the example file"),
        digest.as_bytes()
    );
    assert_eq!(Digest::of(&manifest), digest);
}

#[test]
fn every_response_example_decodes_whole() {
    let pairs = [
        ("Peer List Response", Request::PeerList),
        ("Block List Response (0-1)", Request::BlockList),
        ("Block List Response (0-99", Request::BlockList),
        (
            "Block Response Failure",
            Request::Block { start: 1, end: 2 },
        ),
        ("File Size Response", Request::FileSize),
        ("Error", Request::FileSize),
        (
            "Digest Response to 1-1",
            Request::Digest { start: 1, end: 1 },
        ),
    ];
    let table = examples();
    for (name, request) in pairs {
        let bytes = &table.iter().find(|(n, _)| n.starts_with(name)).unwrap().1;
        let mut client = ClientSession::<1>::new(ClientLimits::default());
        if let Request::Digest { .. } = request {
            // Digest data, like block data, is as long as the request within the file.
            client.set_file_size(2500);
        }
        client.send(request, &mut [0u8; 8]).unwrap();
        let mut offset = 0;
        let mut finished = false;
        while offset < bytes.len() {
            let step = client.receive(&bytes[offset..]).unwrap();
            offset += step.consumed;
            finished |=
                step.completed.is_some() || matches!(step.event, Some(ClientEvent::Error(_)));
        }
        assert!(finished, "{name} did not end a response");
    }
}
