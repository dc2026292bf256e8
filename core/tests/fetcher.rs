//! The fetcher against real server sessions in one process: bytes move between them by hand,
//! time is a number, and some servers lie.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use p2p_core::fetch::{DropReason, FetchConfig, FetchEvent, Fetcher};
use p2p_core::flash_store::FlashStore;
use p2p_core::manifest::manifest_digest;
use p2p_core::ram_flash::RamFlash;
use p2p_core::server::{ServerConfig, ServerSession};
use p2p_core::store::held;
use p2p_core::{BlockRange, BlockRanges, BlockStore, Digest, Duration, Instant, SliceStore};
use p2p_core::{PeerAddr, StoreError};

type TestFetcher = Fetcher<8, 4, 64, 1024>;
type Store<'a> = FlashStore<RamFlash<'a>, 64>;

fn file(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 253) as u8).collect()
}

fn digests(data: &[u8]) -> Vec<Digest> {
    data.chunks(1024).map(Digest::of).collect()
}

/// How a simulated peer misbehaves.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Honest,
    /// Flips a byte in every block it serves.
    Corrupt,
    /// Reads requests and never answers.
    Silent,
    /// Answers Digest Requests with an Error, as a peer that predates them.
    NoDigests,
    /// Its digests are not the manifest's.
    WrongDigests,
    /// Answers until it has sent this many bytes on a connection, then nothing (a lost
    /// segment waiting out a retransmission timeout).
    StallsAfter(usize),
    /// Its connections never open (a lost SYN, or no ARP reply).
    Unreachable,
}

/// A store that serves `data` but lies about it as `kind` says.
struct PeerStore<'a> {
    inner: SliceStore<'a, 8>,
    kind: Kind,
}

impl BlockStore for PeerStore<'_> {
    fn file_size(&self) -> u32 {
        self.inner.file_size()
    }
    fn held_after(&self, after: Option<u16>) -> Option<BlockRange> {
        self.inner.held_after(after)
    }
    fn read_at(&self, offset: u32, buf: &mut [u8]) -> Result<(), StoreError> {
        self.inner.read_at(offset, buf)?;
        if self.kind == Kind::Corrupt
            && let Some(byte) = buf.first_mut()
        {
            *byte ^= 0xFF;
        }
        Ok(())
    }
    fn digest(&self, block: u16) -> Option<Digest> {
        match self.kind {
            Kind::NoDigests => None,
            Kind::WrongDigests => Some(Digest::of(&block.to_be_bytes())),
            _ => self.inner.digest(block),
        }
    }
}

fn peers<'a>(
    data: &'a [u8],
    digests: &'a [Digest],
    kinds: &[(Kind, &str)],
) -> Vec<(PeerAddr, PeerStore<'a>)> {
    kinds
        .iter()
        .enumerate()
        .map(|(i, (kind, blocks))| {
            let held: BlockRanges<8> = match *blocks {
                "" => BlockRanges::new(),
                text => text.parse().unwrap(),
            };
            let inner = SliceStore::with_held(data, held)
                .unwrap()
                .with_digests(digests)
                .unwrap();
            let addr = PeerAddr::new([10, 0, 0, 10 + i as u8], 8888);
            (addr, PeerStore { inner, kind: *kind })
        })
        .collect()
}

/// `data` and peers serving it as `kinds` say, kept for the whole test, and the manifest
/// digest a fetcher of it is given.
fn swarm_of(
    data: &[u8],
    kinds: &[(Kind, &str)],
) -> (
    &'static [u8],
    &'static [(PeerAddr, PeerStore<'static>)],
    Digest,
) {
    let data: &'static [u8] = Box::leak(data.to_vec().into_boxed_slice());
    let digests: &'static [Digest] = Box::leak(digests(data).into_boxed_slice());
    let peers = Box::leak(peers(data, digests, kinds).into_boxed_slice());
    (data, peers, manifest_digest(data.len() as u32, digests))
}

/// Moves bytes between a fetcher and one server session per connection, 1 ms a round.
struct Swarm<'a> {
    peers: &'a [(PeerAddr, PeerStore<'a>)],
    /// Per fetcher slot: the peer index, its server session and the bytes it has sent.
    links: Vec<Option<(usize, ServerSession<'a>, usize)>>,
    now: u64,
    events: Vec<FetchEvent>,
    /// Bytes every server session has sent.
    served: usize,
    /// Every Block Request sent, as (start, end).
    block_requests: Vec<(u16, u16)>,
    /// When each File Size Request was sent, in ms (one byte, 0x07, sent on its own).
    file_size_requests: Vec<u64>,
}

impl<'a> Swarm<'a> {
    fn new(peers: &'a [(PeerAddr, PeerStore<'a>)]) -> Self {
        Self {
            peers,
            links: (0..4).map(|_| None).collect(),
            now: 0,
            events: Vec::new(),
            served: 0,
            block_requests: Vec::new(),
            file_size_requests: Vec::new(),
        }
    }

    fn addrs(&self) -> Vec<PeerAddr> {
        self.peers.iter().map(|(addr, _)| *addr).collect()
    }

    /// Runs until the fetcher completes or `limit_ms` of simulated time passes.
    fn run(&mut self, fetcher: &mut TestFetcher, store: &Store<'_>, limit_ms: u64) {
        let peers = self.peers;
        while self.now < limit_ms && !fetcher.is_complete() {
            let now = Instant::from_millis(self.now);
            let events = &mut self.events;
            fetcher.poll(now, store, &mut |e| events.push(e));
            while let Some((slot, addr)) = fetcher.poll_connect(now) {
                let index = peers.iter().position(|(a, _)| *a == addr).unwrap();
                let session = ServerSession::new(ServerConfig::new(&peers[index].1, &[]), now);
                self.links[slot] = Some((index, session, 0));
                if peers[index].1.kind != Kind::Unreachable {
                    fetcher.connected(slot, now);
                }
            }
            for slot in 0..self.links.len() {
                let Some((index, session, sent)) = self.links[slot].as_mut() else {
                    continue;
                };
                let kind = peers[*index].1.kind;
                let mut out = [0u8; 512];
                let len = fetcher.transmit(slot, &mut out, now, store);
                self.block_requests.extend(block_requests_in(&out[..len]));
                if out[..len] == [0x07] {
                    self.file_size_requests.push(self.now);
                }
                if !matches!(kind, Kind::Silent | Kind::Unreachable) {
                    let used = session.receive(&out[..len], now, &mut |_| {});
                    assert_eq!(used, len, "the test server keeps up");
                    let mut back = [0u8; 700];
                    let room = match kind {
                        Kind::StallsAfter(limit) => limit.saturating_sub(*sent).min(back.len()),
                        _ => back.len(),
                    };
                    let len = session.transmit(&mut back[..room], now);
                    *sent += len;
                    self.served += len;
                    let used =
                        fetcher.receive(slot, &back[..len], now, store, &mut |e| events.push(e));
                    assert!(used == len || fetcher.wants_close(slot));
                    if session.poll_timeouts(now).is_some() && !session.wants_transmit() {
                        fetcher.closed(slot, now);
                        self.links[slot] = None;
                        continue;
                    }
                }
                if fetcher.wants_close(slot) {
                    fetcher.closed(slot, now);
                    self.links[slot] = None;
                }
            }
            store.publish();
            self.now += 1;
        }
    }

    /// Runs a millisecond at a time until `count` blocks are verified: part of a fill.
    fn run_until_verified(&mut self, fetcher: &mut TestFetcher, store: &Store<'_>, count: u32) {
        while store.verified_count() < count {
            let limit = self.now + 1;
            self.run(fetcher, store, limit);
        }
    }

    fn dropped(&self) -> Vec<(PeerAddr, DropReason)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                FetchEvent::PeerDropped { peer, reason } => Some((*peer, *reason)),
                _ => None,
            })
            .collect()
    }
}

/// The Block Requests among `requests` (whole requests, as the fetcher sends them).
fn block_requests_in(mut requests: &[u8]) -> Vec<(u16, u16)> {
    let mut found = Vec::new();
    while let Some(&kind) = requests.first() {
        let len = match kind {
            0x04 | 0x09 => 5,
            _ => 1,
        };
        if kind == 0x04 {
            let field = |at: usize| u16::from_be_bytes([requests[at], requests[at + 1]]);
            found.push((field(1), field(3)));
        }
        requests = &requests[len..];
    }
    found
}

fn stored(store: &Store<'_>, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    store.read_at(0, &mut out).unwrap();
    out
}

fn config() -> FetchConfig {
    FetchConfig {
        stall_timeout: Duration::from_millis(200),
        retry_after: Duration::from_millis(50),
        refresh: Duration::from_millis(20),
        ..FetchConfig::default()
    }
}

/// Fetches `data` with the given peers; returns the store's bytes and the swarm's events.
fn fill(data: &[u8], kinds: &[(Kind, &str)], limit_ms: u64) -> (Option<Vec<u8>>, Swarm<'static>) {
    fill_with(config(), data, kinds, limit_ms)
}

/// [`fill`] with a configuration of its own.
fn fill_with(
    config: FetchConfig,
    data: &[u8],
    kinds: &[(Kind, &str)],
    limit_ms: u64,
) -> (Option<Vec<u8>>, Swarm<'static>) {
    let (data, peers, id) = swarm_of(data, kinds);
    let mut bytes = vec![0u8; 256 * 1024];
    let store = Store::open(RamFlash::new(&mut bytes), id).unwrap();
    let mut swarm = Swarm::new(peers);
    let mut fetcher = TestFetcher::new(config, &swarm.addrs(), Instant::from_millis(0));
    swarm.run(&mut fetcher, &store, limit_ms);
    let complete = fetcher.is_complete();
    assert_eq!(complete, store.is_complete());
    (complete.then(|| stored(&store, data.len())), swarm)
}

#[test]
fn fills_from_two_peers_that_each_hold_part() {
    let data = file(40_000);
    let (got, swarm) = fill(
        &data,
        &[(Kind::Honest, "0-20"), (Kind::Honest, "15-39")],
        5_000,
    );
    assert_eq!(got.as_deref(), Some(&data[..]));
    assert!(swarm.dropped().is_empty());
    let from: Vec<PeerAddr> = swarm
        .events
        .iter()
        .filter_map(|e| match e {
            FetchEvent::BlockVerified { from, .. } => Some(*from),
            _ => None,
        })
        .collect();
    assert_eq!(from.len(), 40, "every block verified once");
    assert!(from.contains(&swarm.peers[0].0) && from.contains(&swarm.peers[1].0));
}

#[test]
fn a_corrupting_peer_is_dropped_and_its_blocks_come_from_the_honest_one() {
    let data = file(30_000);
    let (got, swarm) = fill(
        &data,
        &[(Kind::Corrupt, "0-29"), (Kind::Honest, "0-29")],
        5_000,
    );
    assert_eq!(got.as_deref(), Some(&data[..]));
    let dropped = swarm.dropped();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].0, swarm.peers[0].0);
    assert!(matches!(dropped[0].1, DropReason::BadBlock(_)));
}

#[test]
fn a_wrong_manifest_is_refused_and_fetched_from_another_peer() {
    let data = file(10_000);
    let (got, swarm) = fill(
        &data,
        &[(Kind::WrongDigests, "0-9"), (Kind::Honest, "0-9")],
        5_000,
    );
    assert_eq!(got.as_deref(), Some(&data[..]));
    assert!(
        swarm
            .dropped()
            .contains(&(swarm.peers[0].0, DropReason::BadManifest))
            || swarm.events.iter().any(|e| matches!(
                e,
                FetchEvent::ManifestVerified { from, .. } if *from == swarm.peers[1].0
            ))
    );
}

#[test]
fn a_peer_without_digests_still_serves_blocks() {
    let data = file(10_000);
    let (got, swarm) = fill(
        &data,
        &[(Kind::NoDigests, "0-9"), (Kind::Honest, "0")],
        5_000,
    );
    assert_eq!(got.as_deref(), Some(&data[..]));
    assert!(
        swarm
            .events
            .iter()
            .any(|e| *e == FetchEvent::NoDigests(swarm.peers[0].0))
    );
    let from_old = swarm
        .events
        .iter()
        .any(|e| matches!(e, FetchEvent::BlockVerified { from, .. } if *from == swarm.peers[0].0));
    assert!(from_old, "blocks 1-9 only the old peer holds");
}

#[test]
fn a_silent_peer_costs_a_stall_timeout_not_the_download() {
    let data = file(20_000);
    let (got, swarm) = fill(
        &data,
        &[(Kind::Silent, "0-19"), (Kind::Honest, "0-19")],
        5_000,
    );
    assert_eq!(got.as_deref(), Some(&data[..]));
    assert!(swarm.now < 1_000, "done at {} ms", swarm.now);
}

#[test]
fn a_silent_connection_sends_three_probes_a_millisecond_apart_then_waits() {
    let data = file(20_000);
    // Answers its greeting and part of the first Block Response, then nothing: a lost
    // segment, as the fetcher sees it.
    let config = FetchConfig {
        probe_after: Some(Duration::from_millis(25)),
        ..patient()
    };
    let (_, swarm) = fill_with(config, &data, &[(Kind::StallsAfter(2_000), "0-19")], 400);
    // The greeting's File Size Request goes out with its other requests, not on its own.
    let probes = &swarm.file_size_requests;
    assert_eq!(probes.len(), 3, "{probes:?}");
    assert_eq!(probes[1], probes[0] + 1);
    assert_eq!(probes[2], probes[0] + 2);
    // The peer sent its last bytes in the first milliseconds.
    assert!((25..40).contains(&probes[0]), "{probes:?}");
}

/// A stall timeout long enough that only the block lag can explain finishing early.
fn patient() -> FetchConfig {
    FetchConfig {
        stall_timeout: Duration::from_millis(5_000),
        block_lag: Duration::from_millis(50),
        open_lag: Duration::from_millis(25),
        ..config()
    }
}

#[test]
fn connections_that_do_not_open_make_way_after_the_open_lag() {
    let data = file(20_000);
    // Twice as many peers as connections, all but one unreachable, the honest one in every
    // place of the order: where it is not among the first tried, it would wait for a stall
    // timeout unless the others are given up on early.
    for honest in 0..8 {
        let mut kinds = vec![(Kind::Unreachable, "0-19"); 8];
        kinds[honest] = (Kind::Honest, "0-19");
        let (got, swarm) = fill_with(patient(), &data, &kinds, 20_000);
        assert_eq!(got.as_deref(), Some(&data[..]));
        assert!(
            swarm.now < 1_000,
            "honest peer {honest}: done at {} ms",
            swarm.now
        );
    }
}

#[test]
fn a_manifest_source_that_lags_hands_the_rest_to_another_peer() {
    // 40 blocks: 1284 manifest bytes; the stalling peer stops 600 bytes in (its Peer List,
    // File Size and Block List answers are short). Both orders, whichever is tried first.
    let data = file(40_000);
    let mut moved = 0;
    for kinds in [
        [(Kind::StallsAfter(600), "0-39"), (Kind::Honest, "0-39")],
        [(Kind::Honest, "0-39"), (Kind::StallsAfter(600), "0-39")],
    ] {
        let (got, swarm) = fill_with(patient(), &data, &kinds, 20_000);
        assert_eq!(got.as_deref(), Some(&data[..]));
        assert!(swarm.now < 2_000, "done at {} ms", swarm.now);
        assert!(swarm.dropped().is_empty(), "{:?}", swarm.dropped());
        moved += swarm
            .events
            .iter()
            .filter(|e| matches!(e, FetchEvent::ManifestMoved { .. }))
            .count();
    }
    assert!(
        moved >= 1,
        "the lagging source never handed the manifest on"
    );
}

#[test]
fn a_lag_nobody_can_relieve_does_not_make_poll_at_spin() {
    // One peer, which stops sending part-way through the blocks: its connection lags, and with
    // no other peer to make way for, the next thing to wake for is the stall timeout.
    let data = file(40_000);
    let (_, peers, id) = swarm_of(&data, &[(Kind::StallsAfter(6_000), "0-39")]);
    let mut bytes = vec![0u8; 256 * 1024];
    let store = Store::open(RamFlash::new(&mut bytes), id).unwrap();
    let mut swarm = Swarm::new(peers);
    let mut fetcher = TestFetcher::new(patient(), &swarm.addrs(), Instant::from_millis(0));
    swarm.run(&mut fetcher, &store, 1_000);
    assert!(!fetcher.is_complete());
    let now = Instant::from_millis(swarm.now);
    fetcher.poll(now, &store, &mut |_| {});
    let next = fetcher.poll_at().unwrap();
    assert!(next > now, "poll_at {next:?} is not after now {now:?}");
}

#[test]
fn nothing_is_stored_when_no_peer_has_the_right_file() {
    let data = file(5_000);
    let (got, swarm) = fill(
        &data,
        &[(Kind::WrongDigests, "0-4"), (Kind::Corrupt, "0-4")],
        2_000,
    );
    assert_eq!(got, None);
    assert!(!swarm.dropped().is_empty());
}

#[test]
fn an_empty_file_completes_with_its_manifest() {
    let (got, _) = fill(&[], &[(Kind::Honest, "")], 1_000);
    assert_eq!(got.as_deref(), Some(&[][..]));
}

#[test]
fn a_reset_resumes_from_the_store() {
    let data = file(30_000);
    let (data, peers, id) = swarm_of(&data, &[(Kind::Honest, "0-29")]);
    let mut bytes = vec![0u8; 256 * 1024];
    let store = Store::open(RamFlash::new(&mut bytes), id).unwrap();
    let mut swarm = Swarm::new(peers);
    let mut fetcher = TestFetcher::new(config(), &swarm.addrs(), Instant::from_millis(0));
    // Long enough for the manifest and some blocks, not for all.
    swarm.run_until_verified(&mut fetcher, &store, 10);
    let before = store.verified_count();
    assert!(before < 30);
    drop(fetcher);
    let store = Store::open(store.into_flash(), id).unwrap();
    assert_eq!(store.verified_count(), before);
    let mut swarm = Swarm::new(peers);
    let mut fetcher = TestFetcher::new(config(), &swarm.addrs(), Instant::from_millis(0));
    swarm.run(&mut fetcher, &store, 5_000);
    assert!(store.is_complete());
    assert_eq!(stored(&store, data.len()), data);
    let fetched = swarm
        .events
        .iter()
        .filter(|e| matches!(e, FetchEvent::BlockVerified { .. }))
        .count();
    assert_eq!(fetched, 30 - before as usize, "only the missing blocks");
    assert!(held(&store).eq([BlockRange::new(0, 29).unwrap()]));
}

mod arbitrary_responses {
    use super::*;
    use proptest::prelude::*;

    /// A response stream that starts correct and turns arbitrary: real answers to the
    /// greeting, then whatever the case supplies.
    fn garbage() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
        proptest::collection::vec(
            (0u8..4, proptest::collection::vec(any::<u8>(), 0..80)),
            1..40,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Whatever peers send, the fetcher neither panics nor keeps a byte that is not the
        /// file's.
        #[test]
        fn nothing_unverified_is_ever_held(chunks in garbage(), honest_prefix in 0usize..3000) {
            let data = file(6_000);
            let sums = digests(&data);
            let id = manifest_digest(6_000, &sums);
            let mut bytes = vec![0u8; 256 * 1024];
            let store = Store::open(RamFlash::new(&mut bytes), id).unwrap();
            let peers: Vec<PeerAddr> = (0..4).map(|i| PeerAddr::new([10, 0, 0, 20 + i], 8888)).collect();
            let mut fetcher = TestFetcher::new(config(), &peers, Instant::from_millis(0));
            // A correct beginning: the true size, the manifest, part of the file.
            let mut honest = vec![0x08];
            honest.extend_from_slice(&6_000u32.to_be_bytes());
            honest.extend_from_slice(&[0x01, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05]);
            honest.push(0x0a);
            sums.iter().for_each(|d| honest.extend_from_slice(d.as_bytes()));
            honest.push(0x05);
            honest.extend_from_slice(&data);
            honest.truncate(honest_prefix.max(1));
            let mut now = 0;
            let mut slots = Vec::new();
            while let Some((slot, _)) = fetcher.poll_connect(Instant::from_millis(now)) {
                fetcher.connected(slot, Instant::from_millis(now));
                slots.push(slot);
            }
            let mut out = [0u8; 256];
            for &slot in &slots {
                fetcher.transmit(slot, &mut out, Instant::from_millis(now), &store);
                fetcher.receive(slot, &honest, Instant::from_millis(now), &store, &mut |_| {});
            }
            for (which, chunk) in chunks {
                now += 7;
                let at = Instant::from_millis(now);
                let slot = usize::from(which) % 4;
                fetcher.transmit(slot, &mut out, at, &store);
                let used = fetcher.receive(slot, &chunk, at, &store, &mut |_| {});
                prop_assert!(used <= chunk.len());
                fetcher.poll(at, &store, &mut |_| {});
                if fetcher.wants_close(slot) {
                    fetcher.closed(slot, at);
                }
                store.publish();
            }
            for range in held(&store) {
                let span = p2p_core::Geometry::new(6_000).span(range).unwrap();
                let mut got = vec![0u8; span.len as usize];
                store.read_at(span.offset, &mut got).unwrap();
                let at = span.offset as usize;
                prop_assert_eq!(&got[..], &data[at..at + got.len()]);
            }
        }
    }
}

#[test]
fn a_client_of_this_node_is_learnt_as_a_peer_at_the_default_port() {
    let data = file(20_000);
    let (data, peers, id) = swarm_of(&data, &[(Kind::Honest, "0-19")]);
    let mut bytes = vec![0u8; 256 * 1024];
    let store = Store::open(RamFlash::new(&mut bytes), id).unwrap();
    let mut swarm = Swarm::new(peers);
    // Configured with no peer at all: only the client that connected to it is known.
    let mut fetcher = TestFetcher::new(config(), &[], Instant::from_millis(0));
    swarm.run(&mut fetcher, &store, 100);
    assert_eq!(store.verified_count(), 0);
    let client = peers[0].0;
    assert_eq!(client.port, p2p_core::DEFAULT_PORT);
    let now = Instant::from_millis(swarm.now);
    assert!(fetcher.client_seen(client.ip, now));
    assert!(!fetcher.client_seen(client.ip, now), "known already");
    swarm.run(&mut fetcher, &store, 5_000);
    assert!(store.is_complete());
    assert_eq!(stored(&store, data.len()), data);
}

#[test]
fn a_peer_that_never_sends_its_block_list_makes_way_after_the_block_lag() {
    let data = file(30_000);
    let (_, honest_only, id) = swarm_of(&data, &[(Kind::Honest, "0-29")]);
    // Twice as many peers as connections; all but one answer the greeting's Peer List (3
    // bytes) and File Size (5), then never their Block List (a lost segment waiting out a
    // retransmission timeout). The honest one is in every place of the order.
    for honest in 0..8 {
        let mut kinds = vec![(Kind::StallsAfter(8), "0-29"); 8];
        kinds[honest] = (Kind::Honest, "0-29");
        let (_, peers, _) = swarm_of(&data, &kinds);
        let mut bytes = vec![0u8; 256 * 1024];
        let store = Store::open(RamFlash::new(&mut bytes), id).unwrap();
        // The manifest and a few blocks first, so that connections wait only on Block Lists.
        let mut swarm = Swarm::new(honest_only);
        let mut fetcher = TestFetcher::new(patient(), &swarm.addrs(), Instant::from_millis(0));
        swarm.run_until_verified(&mut fetcher, &store, 5);
        let started = swarm.now;
        let mut swarm = Swarm::new(peers);
        swarm.now = started;
        let mut fetcher =
            TestFetcher::new(patient(), &swarm.addrs(), Instant::from_millis(started));
        swarm.run(&mut fetcher, &store, started + 20_000);
        assert!(store.is_complete(), "honest peer {honest}");
        assert_eq!(stored(&store, data.len()), data);
        assert!(
            swarm.now - started < 1_000,
            "honest peer {honest}: done {} ms after starting",
            swarm.now - started
        );
    }
}

#[test]
fn blocks_are_not_asked_twice_while_others_wait_to_be_asked() {
    // The first two peers run out of blocks to offer early; their connections must not ask
    // for blocks already coming from the other while the third's are still to be asked for.
    let data = file(200 * 1024);
    let (got, swarm) = fill(
        &data,
        &[
            (Kind::Honest, "0-49"),
            (Kind::Honest, "0-49"),
            (Kind::Honest, "50-199"),
        ],
        20_000,
    );
    assert_eq!(got.as_deref(), Some(&data[..]));
    // The file, its 200 digests, and under a block's worth of small answers (lists, file
    // sizes, headers): no block twice (asking for those sent 4 blocks again).
    let manifest = 200 * 32;
    assert!(
        swarm.served < data.len() + manifest + 1024,
        "{} bytes served for a {}-byte file",
        swarm.served,
        data.len()
    );
}

#[test]
fn blocks_are_asked_for_in_whole_aligned_pieces() {
    // 202 blocks: 50 pieces of 4 and a last one of 2.
    let data = file(202 * 1024 - 100);
    let config = FetchConfig {
        max_run: 4,
        ..config()
    };
    let (got, swarm) = fill_with(config, &data, &[(Kind::Honest, "0-201")], 20_000);
    assert_eq!(got.as_deref(), Some(&data[..]));
    let mut asked = swarm.block_requests.clone();
    asked.sort_unstable();
    let pieces: Vec<(u16, u16)> = (0..51).map(|p| (p * 4, (p * 4 + 3).min(201))).collect();
    assert_eq!(asked, pieces, "one request a piece, each piece once");
    assert_ne!(
        swarm.block_requests, pieces,
        "pieces are taken in this node's own order, not the file's"
    );
}

/// A node in [`a_relay_that_passed_on_a_liars_manifest_costs_its_client_a_restart_only`]:
/// a fetcher over its own store, and the server sessions of its connections.
struct Filler<'a> {
    fetcher: TestFetcher,
    store: &'a Store<'a>,
    links: Vec<Option<(PeerAddr, ServerSession<'a>)>>,
    events: Vec<FetchEvent>,
}

impl<'a> Filler<'a> {
    /// A node over `store` that knows `peers`; `start_hint` sets its block order apart.
    fn new(store: &'a Store<'a>, peers: &[PeerAddr], start_hint: u32) -> Self {
        let config = FetchConfig {
            start_hint,
            ..config()
        };
        Self {
            fetcher: TestFetcher::new(config, peers, Instant::from_millis(0)),
            store,
            links: (0..4).map(|_| None).collect(),
            events: Vec::new(),
        }
    }

    /// One millisecond: connects where the fetcher asks, moves up to 512 bytes of requests
    /// and 700 of answers on each connection. `server` gives a peer's store and Peer List.
    fn step(&mut self, now: Instant, server: &dyn Fn(PeerAddr) -> ServerConfig<'a>) {
        let events = &mut self.events;
        self.fetcher.poll(now, self.store, &mut |e| events.push(e));
        while let Some((slot, addr)) = self.fetcher.poll_connect(now) {
            self.links[slot] = Some((addr, ServerSession::new(server(addr), now)));
            self.fetcher.connected(slot, now);
        }
        for slot in 0..self.links.len() {
            let Some((_, session)) = self.links[slot].as_mut() else {
                continue;
            };
            let mut out = [0u8; 512];
            let len = self.fetcher.transmit(slot, &mut out, now, self.store);
            assert_eq!(session.receive(&out[..len], now, &mut |_| {}), len);
            let mut back = [0u8; 700];
            let len = session.transmit(&mut back, now);
            let store = self.store;
            let used = self
                .fetcher
                .receive(slot, &back[..len], now, store, &mut |e| events.push(e));
            let ended = session.poll_timeouts(now).is_some() && !session.wants_transmit();
            assert!(used == len || self.fetcher.wants_close(slot) || ended);
            if ended || self.fetcher.wants_close(slot) {
                self.fetcher.closed(slot, now);
                self.links[slot] = None;
            }
        }
        self.store.publish();
    }

    fn dropped(&self, peer: PeerAddr) -> Option<DropReason> {
        self.events.iter().find_map(|e| match e {
            FetchEvent::PeerDropped { peer: p, reason } if *p == peer => Some(*reason),
            _ => None,
        })
    }
}

/// A relay passes a manifest on while it receives it (PROTOCOL.md 3.5). Here the relay gets
/// it from a liar, and its client gets it from the relay: the relay finds the lie when the
/// last digest is in, drops the liar, stops passing the manifest on (which ends its client's
/// Digest Response) and fetches it again from the honest peer the liar listed. The client,
/// part-way through the wrong digests, starts again from the honest peer without blaming the
/// relay, and still fetches blocks from it once the relay has the file. Both end with the
/// right file, and neither ever trusts a wrong digest.
#[test]
fn a_relay_that_passed_on_a_liars_manifest_costs_its_client_a_restart_only() {
    // 400 blocks: 12.8 KB of digests at 700 bytes a millisecond, so the relay is still
    // receiving the liar's manifest when its client asks it.
    let data = file(400 * 1024);
    let (data, peers, id) = swarm_of(
        &data,
        &[(Kind::WrongDigests, "0-399"), (Kind::Honest, "0-399")],
    );
    let (liar, honest) = (peers[0].0, peers[1].0);
    let relay_addr = PeerAddr::new([10, 0, 0, 30], 8888);
    let store = || -> &'static Store<'static> {
        Box::leak(Box::new(
            Store::open(RamFlash::new(vec![0u8; 1024 * 1024].leak()), id).unwrap(),
        ))
    };
    let (relay_store, client_store) = (store(), store());
    // The liar lists the honest peer, and so does the relay; the client knows only the relay.
    let lists: &'static [PeerAddr] = Box::leak(Box::new([honest]));
    let server = |addr: PeerAddr| -> ServerConfig<'static> {
        if addr == relay_addr {
            return ServerConfig::new(relay_store, lists);
        }
        let (_, store) = peers.iter().find(|(a, _)| *a == addr).unwrap();
        ServerConfig::new(store, if addr == liar { lists } else { &[] })
    };
    let mut relay = Filler::new(relay_store, &[liar], 0);
    let mut client = Filler::new(client_store, &[relay_addr], 7919);
    let mut relayed_before_the_lie_was_found = 0;
    for ms in 0..10_000 {
        let now = Instant::from_millis(ms);
        relay.step(now, &server);
        if ms >= 3 {
            client.step(now, &server);
        }
        if relay.dropped(liar).is_none()
            && let Some((_, digests)) = client_store.manifest_received()
        {
            relayed_before_the_lie_was_found = digests;
        }
        if relay.fetcher.is_complete() && client.fetcher.is_complete() {
            break;
        }
    }
    assert!(
        relayed_before_the_lie_was_found > 0,
        "the client took the liar's digests through the relay"
    );
    assert_eq!(relay.dropped(liar), Some(DropReason::BadManifest));
    assert!(relay.fetcher.is_complete() && client.fetcher.is_complete());
    assert_eq!(stored(relay_store, data.len()), data);
    assert_eq!(stored(client_store, data.len()), data);
    let verified_from = |filler: &Filler<'_>| {
        filler.events.iter().find_map(|e| match e {
            FetchEvent::ManifestVerified { from, .. } => Some(*from),
            _ => None,
        })
    };
    assert_eq!(verified_from(&relay), Some(honest));
    assert_eq!(verified_from(&client), Some(honest));
    // Nobody was blamed but the liar, and the relay still served its client blocks.
    assert_eq!(client.dropped(relay_addr), None);
    assert_eq!(client.dropped(honest), None);
    assert_eq!(relay.dropped(honest), None);
    assert!(client.events.iter().any(|e| matches!(
        e,
        FetchEvent::BlockVerified { from, .. } if *from == relay_addr
    )));
}
