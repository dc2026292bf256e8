//! The firmware's main loop: poll the interface, keep the address, serve, sleep.

use crate::Board;
use crate::network::Network;
use crate::settings::{self, MAX_HELD_RANGES};
use crate::{sleep, stack};
use embedded_storage::nor_flash::NorFlash;
use p2p_core::driver::{DriverEvent, Ended, LISTENERS, Server, SocketBuffers};
use p2p_core::fetch::{FetchConfig, FetchEvent, Fetcher};
use p2p_core::fetch_driver::{FetchDriver, learn_client};
use p2p_core::flash_store::FlashStore;
use p2p_core::server::{ServerConfig, SessionEvent};
use p2p_core::{BlockRanges, DEFAULT_PORT, PeerAddr, SliceStore};
use smoltcp::iface::{Config, Interface, PollResult, SocketSet, SocketStorage};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress};
use static_cell::ConstStaticCell;

/// Connections served at once; two more sockets always listen.
pub const CONNECTIONS: usize = 4;
const SOCKETS: usize = CONNECTIONS + LISTENERS;
/// Requests are at most 5 bytes, so a small receive buffer (and window) is enough; it also
/// keeps what a client can push at the board within QEMU's ~10 KiB RX FIFO.
pub(crate) const RX_BUFFER: usize = 512;
/// Bounds the block data in flight per connection.
pub(crate) const TX_BUFFER: usize = 4096;
/// A filling node serves with smaller buffers, to leave room for fetching within the RAM
/// budget: 256 bytes still hold 51 pipelined requests.
const FILL_RX_BUFFER: usize = 256;
const FILL_TX_BUFFER: usize = 2048;
/// A filling node's connections fetching at once, one per peer.
const FETCHES: usize = 2;
/// A fetching socket's receive window: block data in flight per fetch (both together stay
/// within QEMU's LAN9118 RX FIFO). It sends only requests.
const FETCH_RX_BUFFER: usize = 3072;
const FETCH_TX_BUFFER: usize = 128;
/// Peers a filling node keeps track of.
const FETCH_PEERS: usize = 4;
/// A filling node's file has at most 8 x this many blocks (1024: 1 MiB at 1 KiB blocks).
const FILL_BITMAP: usize = 128;
/// Blocks of files up to 64 MiB.
const FILL_BLOCK: usize = 1024;

type FillStore<F> = FlashStore<F, FILL_BITMAP>;
type NodeFetcher = Fetcher<FETCH_PEERS, FETCHES, FILL_BITMAP, FILL_BLOCK>;

pub fn run<B: Board>(board: &mut B) -> ! {
    match settings::FILL_MANIFEST {
        Some(manifest) => {
            let Some(flash) = board.take_storage() else {
                defmt::panic!(
                    "P2P_MANIFEST: {} has no storage for a filling node",
                    board.name()
                )
            };
            let store = FillStore::open(flash, manifest)
                .unwrap_or_else(|error| defmt::panic!("storage: {}", error));
            defmt::info!(
                "{}: MAC {=[u8]:02x}, filling node for manifest {=[u8]:02x}, {=usize} peers",
                board.name(),
                board.mac(),
                manifest.0,
                settings::PEERS.len()
            );
            match store.geometry() {
                Some(geometry) => defmt::info!(
                    "storage: {=u32} bytes, {=u32} of {=u32} blocks verified",
                    geometry.file_size(),
                    store.verified_count(),
                    geometry.block_count()
                ),
                None => defmt::info!("storage: empty; fetching the manifest first"),
            }
            serve_filling(board, &store)
        }
        #[cfg(not(feature = "bench-raw-tcp"))]
        None => serve_built_in(board),
        #[cfg(feature = "bench-raw-tcp")]
        None => crate::bench_raw::run(board),
    }
}

/// Serves the file built into flash.
#[cfg_attr(
    feature = "bench-raw-tcp",
    expect(dead_code, reason = "the benchmark build sends raw TCP instead")
)]
fn serve_built_in<B: Board>(board: &mut B) -> ! {
    let held: BlockRanges<MAX_HELD_RANGES> = match settings::HELD {
        "" => BlockRanges::new(),
        text => text
            .parse()
            .unwrap_or_else(|_| defmt::panic!("P2P_BLOCKS was checked at build time")),
    };
    let store = if held.is_empty() {
        SliceStore::new(settings::FILE)
    } else {
        SliceStore::with_held(settings::FILE, held)
    }
    .and_then(|store| store.with_digests(&settings::DIGESTS))
    .unwrap_or_else(|error| defmt::panic!("served file: {}", error));
    let mac = board.mac();
    defmt::info!(
        "{}: MAC {=[u8]:02x}, serving {=usize} bytes, blocks {=str}, {=usize} peers",
        board.name(),
        mac,
        settings::FILE.len(),
        if settings::HELD.is_empty() {
            "all"
        } else {
            settings::HELD
        },
        settings::PEERS.len()
    );
    if settings::TEST_PANIC {
        panic!("P2P_TEST_PANIC: panicking on purpose, as this test build was told to");
    }
    if settings::BENCH_SHA256 {
        time_block_hashing(board);
    }

    let now = board.now();
    let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    let mut iface = Interface::new(config, board.device(), now);
    let mut storage: [SocketStorage<'_>; SOCKETS + 1] = Default::default();
    // In .bss, where the linker counts them against the RAM; taken once, as this never
    // returns.
    static MEMORY: ConstStaticCell<SocketMemory<SOCKETS, RX_BUFFER, TX_BUFFER>> =
        ConstStaticCell::new(SocketMemory::new());
    let mut sockets = SocketSet::new(&mut storage[..]);
    let mut network = Network::new(&mut iface, &mut sockets, mac, now);
    let buffers = MEMORY.take().buffers();
    defmt::info!(
        "serving on port {=u16} with {=usize} connections",
        DEFAULT_PORT,
        CONNECTIONS
    );
    let server_config = ServerConfig::new(&store, settings::PEERS);
    let mut server = Server::new(server_config, DEFAULT_PORT, &mut sockets, buffers);
    poll_forever(
        board,
        &mut iface,
        &mut sockets,
        &mut network,
        &mut |now, iface, sockets, board| {
            let polled = iface.poll(now, board.device(), sockets);
            (polled, server.poll(now, sockets, &mut log))
        },
    )
}

/// Fetches the file into `store` from the peers, and serves what is verified once the
/// manifest is.
fn serve_filling<B: Board>(board: &mut B, store: &FillStore<B::Storage>) -> ! {
    let mac = board.mac();
    let now = board.now();
    let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    let mut iface = Interface::new(config, board.device(), now);
    let mut storage: [SocketStorage<'_>; SOCKETS + FETCHES + 1] = Default::default();
    // As in `serve_built_in`: statics, taken once (one static, so one `take`).
    type Serving = SocketMemory<SOCKETS, FILL_RX_BUFFER, FILL_TX_BUFFER>;
    type Fetching = SocketMemory<FETCHES, FETCH_RX_BUFFER, FETCH_TX_BUFFER>;
    static MEMORY: ConstStaticCell<(Serving, Fetching)> =
        ConstStaticCell::new((SocketMemory::new(), SocketMemory::new()));
    let (serving, fetching) = MEMORY.take();
    let mut sockets = SocketSet::new(&mut storage[..]);
    let mut network = Network::new(&mut iface, &mut sockets, mac, now);
    let mut serve_buffers = Some(serving.buffers());
    let mut driver = FetchDriver::new(&mut sockets, fetching.buffers(), u16::from(mac[5]));
    let config = FetchConfig {
        // Boards filling at once start their search apart.
        start_hint: u32::from(mac[5]).wrapping_mul(7919),
        ..FetchConfig::default()
    };
    let started = p2p_core::Instant::from_millis(u64::try_from(now.total_millis()).unwrap_or(0));
    let mut fetcher = NodeFetcher::new(config, settings::PEERS, started);
    let mut server: Option<Server<'_, SOCKETS>> = None;
    let mut own: Option<PeerAddr> = None;
    poll_forever(
        board,
        &mut iface,
        &mut sockets,
        &mut network,
        &mut |now, iface, sockets, board| {
            // Peers' addresses are learnt from their ARP requests to anyone, too.
            let known = |ip| fetcher.knows_host(ip);
            let device = &mut driver.overhearing(board.device(), iface, &known);
            let polled = iface.poll(now, device, sockets);
            // Fetch once the node has an address (DHCP may take a while).
            let fetch_at = match iface.ipv4_addr() {
                Some(ip) => {
                    let addr = PeerAddr::new(ip.octets(), DEFAULT_PORT);
                    if own != Some(addr) {
                        own = Some(addr);
                        fetcher.set_own_addr(addr);
                    }
                    driver.poll(
                        now,
                        iface,
                        board.device(),
                        sockets,
                        &mut fetcher,
                        store,
                        &mut |event| log_fetch(event, store),
                    )
                }
                None => None,
            };
            // Serving from the start: until the manifest is verified only Peer Lists, so
            // peers find each other through a node that is still starting.
            if server.is_none()
                && let Some(buffers) = serve_buffers.take()
            {
                defmt::info!(
                    "serving on port {=u16} with {=usize} connections (verified blocks only)",
                    DEFAULT_PORT,
                    CONNECTIONS
                );
                let config = ServerConfig::new(store, settings::PEERS);
                server = Some(Server::new(config, DEFAULT_PORT, sockets, buffers));
            }
            let serve_at = server.as_mut().and_then(|server| {
                server.poll(now, sockets, &mut |event| {
                    learn_client(&mut fetcher, &event, now);
                    log(event);
                })
            });
            // New blocks become visible only between Block List Responses.
            if server.as_ref().is_none_or(|server| !server.listing()) {
                store.publish();
            }
            (polled, [fetch_at, serve_at].into_iter().flatten().min())
        },
    )
}

/// `P2P_BENCH_SHA256`: the time the fetcher's verification takes per block (streaming SHA-256
/// of each 1 KiB block of the file, as a block arrives), by the board's clock.
fn time_block_hashing<B: Board>(board: &mut B) {
    // Enough hashes that the board's millisecond clock resolves one to about 1 %.
    const HASHES: usize = 1024;
    let started = board.now();
    let mut matched = 0;
    let blocks = settings::FILE.chunks(1024).zip(&settings::DIGESTS).cycle();
    for (block, digest) in blocks.take(HASHES) {
        let mut hasher = p2p_core::manifest::BlockHasher::new();
        hasher.update(block);
        matched += usize::from(hasher.finish() == *digest);
    }
    let micros = (board.now() - started).total_micros();
    defmt::info!(
        "sha256: {=usize} hashes of a block in {=u64} us ({=u64} ns a block), {=usize} matched",
        HASHES,
        micros,
        micros * 1000 / HASHES as u64,
        matched
    );
}

/// The receive and transmit buffers of `N` sockets, `R` and `T` bytes each: the memory of a
/// static.
pub(crate) struct SocketMemory<const N: usize, const R: usize, const T: usize> {
    rx: [[u8; R]; N],
    tx: [[u8; T]; N],
}

impl<const N: usize, const R: usize, const T: usize> SocketMemory<N, R, T> {
    pub(crate) const fn new() -> Self {
        Self {
            rx: [[0; R]; N],
            tx: [[0; T]; N],
        }
    }

    /// The buffers of each socket.
    pub(crate) fn buffers(&mut self) -> [SocketBuffers<'_>; N] {
        let mut rx_parts = self.rx.iter_mut();
        let mut tx_parts = self.tx.iter_mut();
        [(); N].map(|()| SocketBuffers {
            rx: rx_parts.next().map(|b| &mut b[..]).unwrap_or_default(),
            tx: tx_parts.next().map(|b| &mut b[..]).unwrap_or_default(),
        })
    }
}

/// What runs each round: polls the interface (a filling node through the fetch driver's
/// `overhearing`), then the services on the sockets; returns what the interface poll did and
/// when the services next need a poll.
pub(crate) type Round<'r, 'a, B> =
    dyn FnMut(Instant, &mut Interface, &mut SocketSet<'a>, &mut B) -> Polled + 'r;

/// What a round's interface poll did, and when its services next need a poll.
pub(crate) type Polled = (PollResult, Option<Instant>);

/// Runs `round` (which polls the interface) and the address until quiet, then sleeps until the
/// next deadline or frame; forever.
pub(crate) fn poll_forever<'a, B: Board>(
    board: &mut B,
    iface: &mut Interface,
    sockets: &mut SocketSet<'a>,
    network: &mut Network,
    round: &mut Round<'_, 'a, B>,
) -> ! {
    loop {
        let now = board.now();
        board.housekeeping(now);
        // Poll until quiet (a few rounds at most): what the services queue goes out in the
        // same round, and its acknowledgements make room for more.
        let mut round_at = None;
        for _ in 0..8 {
            let polled;
            (polled, round_at) = round(now, iface, sockets, board);
            network.poll(iface, sockets, now);
            if polled == PollResult::None {
                break;
            }
        }
        let deadline = [iface.poll_at(now, sockets), network.poll_at(), round_at]
            .into_iter()
            .flatten()
            .min();
        sleep::sleep_until(board, deadline);
    }
}

fn log_fetch<F: NorFlash>(event: FetchEvent, store: &FillStore<F>) {
    let blocks = store.geometry().map_or(0, |g| g.block_count());
    match event {
        FetchEvent::PeerFound(peer) => defmt::info!("fetch: found peer {}", peer),
        FetchEvent::ManifestVerified { file_size, from } => defmt::info!(
            "fetch: manifest verified (from {}): {=u32} bytes, {=u32} blocks",
            from,
            file_size,
            blocks
        ),
        FetchEvent::NoDigests(peer) => defmt::warn!("fetch: {} serves no digests", peer),
        FetchEvent::ManifestMoved { from, to } => {
            defmt::info!("fetch: {} lags with the manifest; asking {}", from, to)
        }
        FetchEvent::BlockVerified { block, from } => {
            defmt::debug!("fetch: block {=u16} verified (from {})", block, from);
            let done = store.verified_count();
            if done.is_multiple_of((blocks / 10).max(1)) {
                defmt::info!("fetch: {=u32} of {=u32} blocks verified", done, blocks);
            }
        }
        FetchEvent::PeerDropped { peer, reason } => {
            defmt::warn!("fetch: dropped {}: {}", peer, reason)
        }
        FetchEvent::Stalled(peer) => defmt::warn!("fetch: {} stalled", peer),
        FetchEvent::PeerError(peer) => defmt::info!("fetch: {} sent an Error", peer),
        FetchEvent::StoreFailed(error) => defmt::error!("fetch: storage: {}", error),
        FetchEvent::Complete { fill_time } => defmt::info!(
            "fetch: file complete: all {=u32} blocks verified, {=u64} ms after the manifest; serving all of it",
            blocks,
            fill_time.millis()
        ),
    }
}

fn log(event: DriverEvent) {
    match event {
        DriverEvent::Connected { slot, remote } => {
            defmt::info!("[{}] connected from {}", slot, remote)
        }
        DriverEvent::Session { slot, event } => match event {
            SessionEvent::Accepted(request) => defmt::debug!("[{}] {}", slot, request),
            SessionEvent::Refused { request, refusal } => {
                defmt::info!("[{}] {} refused: {}", slot, request, refusal)
            }
            SessionEvent::ProtocolError(error) => {
                defmt::warn!("[{}] protocol error: {}", slot, error)
            }
            SessionEvent::NoFileYet(request) => {
                defmt::info!("[{}] {}: no file yet, closing", slot, request)
            }
            SessionEvent::ListTooLong => defmt::error!("[{}] block list too long, closing", slot),
        },
        DriverEvent::Busy { remote } => defmt::warn!("busy: refused {}", remote),
        DriverEvent::Closed { slot, ended } => {
            match ended {
                Ended::Peer => defmt::info!("[{}] closed by peer", slot),
                Ended::Turn => defmt::info!("[{}] closed: a turn for a waiting client", slot),
                Ended::Session(reason) => defmt::info!("[{}] closed: {}", slot, reason),
            }
            defmt::info!("stack peak {=usize} bytes", stack::peak_use());
        }
    }
}
