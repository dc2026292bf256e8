//! Properties of the two sessions talking to each other, and of a server fed anything.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use p2p_core::client::{ClientEvent, ClientLimits, ClientSession};
use p2p_core::server::{CloseReason, ServerConfig, ServerSession};
use p2p_core::store::held;
use p2p_core::wire::{Parsed, PeerAddr, Request};
use p2p_core::{BlockRanges, BlockStore, Digest, Geometry, Instant, SliceStore};
use proptest::prelude::*;

const NOW: Instant = Instant::from_millis(0);

fn request_strategy() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::PeerList),
        Just(Request::BlockList),
        Just(Request::FileSize),
        (0u16..8, 0u16..8).prop_map(|(start, end)| Request::Block { start, end }),
        (0u16..8, 0u16..8).prop_map(|(start, end)| Request::Digest { start, end }),
    ]
}

/// What a client should make of the answer to `request`, as text.
fn expected_answer(store: &dyn BlockStore, peers: &[PeerAddr], request: Request) -> Vec<String> {
    let geometry = Geometry::new(store.file_size());
    match request {
        Request::PeerList => std::iter::once(format!("peers {}", peers.len()))
            .chain(peers.iter().map(|p| format!("peer {p}")))
            .collect(),
        Request::BlockList => std::iter::once(format!("ranges {}", held(store).count()))
            .chain(held(store).map(|r| format!("range {r}")))
            .collect(),
        Request::FileSize => vec![format!("size {}", store.file_size())],
        Request::Block { start, end } => {
            let range = p2p_core::BlockRange::new(start, end);
            let held = range.is_some_and(|r| store.holds(r));
            match range.and_then(|r| geometry.span(r)).filter(|_| held) {
                Some(span) => {
                    let mut data = vec![0u8; span.len as usize];
                    store.read_at(span.offset, &mut data).unwrap();
                    vec![format!("data {} {:?}", span.offset, data)]
                }
                None => vec!["failure".to_string()],
            }
        }
        Request::Digest { start, end } => {
            match p2p_core::BlockRange::new(start, end).filter(|r| geometry.contains(*r)) {
                Some(range) => (range.start()..=range.end())
                    .map(|block| format!("digest {block} {}", store.digest(block).unwrap()))
                    .collect(),
                None => vec!["failure".to_string()],
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every request, pipelined, answered by a server and decoded by a client, with both
    /// directions cut into arbitrary pieces, gives exactly what the store holds.
    #[test]
    fn sessions_round_trip_under_any_fragmentation(
        file_len in 0usize..6000,
        held_text in prop_oneof![Just("0-5"), Just("1,3"), Just("0"), Just("2-3,5")],
        requests in proptest::collection::vec(request_strategy(), 1..12),
        peer_count in 0usize..4,
        up_cut in 1usize..7,
        down_cuts in proptest::collection::vec(1usize..3000, 1..8),
    ) {
        let data: Vec<u8> = (0..file_len).map(|i| (i * 7 % 253) as u8).collect();
        let geometry = Geometry::new(file_len as u32);
        let held: BlockRanges<4> = held_text.parse().unwrap();
        let mut clipped = BlockRanges::<4>::new();
        for range in held.iter() {
            if let Some(end) = geometry.block_count().checked_sub(1)
                && u32::from(range.start()) <= end
            {
                let end = u32::from(range.end()).min(end) as u16;
                clipped.insert(p2p_core::BlockRange::new(range.start(), end).unwrap()).unwrap();
            }
        }
        let digests: Vec<Digest> = data.chunks(1024).map(Digest::of).collect();
        let store = SliceStore::with_held(&data, clipped).unwrap().with_digests(&digests).unwrap();
        let peers: Vec<PeerAddr> = (0..peer_count).map(|i| PeerAddr::new([10, 0, 0, i as u8], 8888)).collect();
        let mut server = ServerSession::new(ServerConfig::new(&store, &peers), NOW);
        let mut client = ClientSession::<16>::new(ClientLimits::default());
        client.set_file_size(file_len as u32);

        let mut upstream = Vec::new();
        let mut expected = Vec::new();
        for &request in &requests {
            let mut buf = [0u8; Request::MAX_LEN];
            let len = client.send(request, &mut buf).unwrap();
            upstream.extend_from_slice(&buf[..len]);
            expected.extend(expected_answer(&store, &peers, request));
            expected.push(format!("done {request}"));
        }

        let mut seen: Vec<String> = Vec::new();
        let mut data_run: Option<(u32, Vec<u8>)> = None;
        let mut sent = 0;
        let mut cut = 0;
        loop {
            let end = (sent + up_cut).min(upstream.len());
            sent += server.receive(&upstream[sent..end], NOW, &mut |_| {});
            let window = down_cuts[cut % down_cuts.len()];
            cut += 1;
            let mut out = vec![0u8; window];
            let len = server.transmit(&mut out, NOW);
            prop_assert!(len <= window);
            let mut offset = 0;
            while offset < len {
                let step = client.receive(&out[offset..len]).unwrap();
                offset += step.consumed;
                match step.event {
                    Some(ClientEvent::BlockData { offset: at, data }) => {
                        let run = data_run.get_or_insert((at, Vec::new()));
                        prop_assert_eq!(run.0 as usize + run.1.len(), at as usize);
                        run.1.extend_from_slice(data);
                    }
                    Some(ClientEvent::PeerCount(n)) => seen.push(format!("peers {n}")),
                    Some(ClientEvent::Peer(p)) => seen.push(format!("peer {p}")),
                    Some(ClientEvent::RangeCount(n)) => seen.push(format!("ranges {n}")),
                    Some(ClientEvent::Range(r)) => seen.push(format!("range {r}")),
                    Some(ClientEvent::FileSize(n)) => seen.push(format!("size {n}")),
                    Some(ClientEvent::Digest { block, digest }) => {
                        seen.push(format!("digest {block} {digest}"))
                    }
                    Some(ClientEvent::BlockFailure(_)) => seen.push("failure".to_string()),
                    Some(ClientEvent::Error(e)) => prop_assert!(false, "error {}", e),
                    None => {}
                }
                if let Some(done) = step.completed {
                    if let Some((at, bytes)) = data_run.take() {
                        seen.push(format!("data {at} {bytes:?}"));
                    }
                    seen.push(format!("done {done}"));
                }
            }
            if len == 0 && sent == upstream.len() {
                break;
            }
        }
        prop_assert_eq!(seen, expected);
        prop_assert_eq!(client.outstanding(), 0);
        prop_assert_eq!(server.poll_timeouts(NOW), None);
    }

    /// A server fed any bytes never panics, never claims more than the space it was given, and
    /// answers every whole request before the first bad byte, then either waits for the rest
    /// of a request or sends an Error and closes.
    #[test]
    fn server_survives_any_input(
        input in proptest::collection::vec(any::<u8>(), 0..200),
        cuts in proptest::collection::vec(1usize..40, 1..6),
    ) {
        let data = [0x5au8; 3000];
        let store = SliceStore::<4>::with_held(&data, "0,2".parse().unwrap()).unwrap();
        let peers = [PeerAddr::new([10, 0, 0, 9], 8888)];
        let mut server = ServerSession::new(ServerConfig::new(&store, &peers), NOW);
        let mut client = ClientSession::<256>::new(ClientLimits::default());
        client.set_file_size(3000);

        // The requests a correct server must answer, up to the first byte that is not one.
        let mut offset = 0;
        let mut bad = false;
        while offset < input.len() {
            match Request::parse(&input[offset..]) {
                Ok(Parsed::Complete { value, len }) => {
                    client.send(value, &mut [0u8; 8]).unwrap();
                    offset += len;
                }
                Ok(Parsed::Incomplete) => break,
                Err(_) => { bad = true; break; }
            }
        }

        let mut fed = 0;
        let mut got_error = false;
        for round in 0..10_000 {
            let window = cuts[round % cuts.len()];
            let end = (fed + window).min(input.len());
            fed += server.receive(&input[fed..end], NOW, &mut |_| {});
            let mut out = vec![0u8; window];
            let len = server.transmit(&mut out, NOW);
            prop_assert!(len <= window);
            let mut at = 0;
            while at < len {
                let step = client.receive(&out[at..len]).unwrap();
                at += step.consumed;
                if matches!(step.event, Some(ClientEvent::Error(_))) {
                    got_error = true;
                }
            }
            if len == 0 && fed == input.len() && !server.wants_transmit() {
                break;
            }
        }
        prop_assert_eq!(fed, input.len());
        prop_assert_eq!(client.outstanding(), 0, "every request before a bad byte is answered");
        prop_assert_eq!(got_error, bad);
        let closing = server.poll_timeouts(NOW);
        prop_assert_eq!(closing, bad.then_some(CloseReason::ProtocolError));
    }
}
