//! A server session fed any byte stream, cut and drained through windows the input chooses:
//! never panics, never claims more than the space it was given, makes progress every round,
//! and ends every run with nothing left to send or a reason to close that is not a broken
//! invariant.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2p_core::server::{CloseReason, ServerConfig, ServerSession};
use p2p_core::wire::PeerAddr;
use p2p_core::{Duration, Instant, SliceStore};

static FILE: [u8; 5000] = [0x5a; 5000];
const PEERS: [PeerAddr; 2] = [PeerAddr::new([10, 0, 0, 3], 8888), PeerAddr::new([10, 0, 0, 4], 1)];

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, stream)) = data.split_first() else { return };
    let store = SliceStore::<4>::with_held(&FILE, "0-1,3".parse().unwrap()).unwrap();
    let mut config = ServerConfig::new(&store, &PEERS);
    config.idle_timeout = Duration::from_millis(1000);
    let mut session = ServerSession::new(config, Instant::from_millis(0));
    let window = usize::from(cuts % 16) + 1;
    let mut out = [0u8; 64];
    let mut fed = 0;
    let mut round = 0u64;
    // Every round must move bytes until the session is done or wants to close: space is
    // offered each round, so a round that neither consumes nor writes means it is stuck.
    loop {
        let now = Instant::from_millis(round);
        round += 1;
        let end = (fed + window).min(stream.len());
        let consumed = session.receive(&stream[fed..end], now, &mut |_| {});
        fed += consumed;
        let space = &mut out[..(window * 3).min(64)];
        let written = session.transmit(space, now);
        assert!(written <= space.len());
        let closing = session.poll_timeouts(now);
        assert_ne!(closing, Some(CloseReason::Broken), "a session invariant broke");
        if closing.is_some() || (fed == stream.len() && !session.wants_transmit()) {
            return;
        }
        assert!(consumed > 0 || written > 0, "no progress in round {round}");
    }
});
