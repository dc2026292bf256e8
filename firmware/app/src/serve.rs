//! The firmware's main loop: poll the interface, keep the address, serve, sleep.

use crate::Board;
use crate::network::Network;
use crate::settings::{self, MAX_HELD_RANGES};
use p2p_core::driver::{DriverEvent, Ended, LISTENERS, Server, SocketBuffers};
use p2p_core::server::{ServerConfig, SessionEvent};
use p2p_core::{BlockRanges, DEFAULT_PORT, SliceStore};
use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet, SocketStorage};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress};

/// Connections served at once; two more sockets always listen.
pub const CONNECTIONS: usize = 4;
const SOCKETS: usize = CONNECTIONS + LISTENERS;
/// Requests are at most 5 bytes, so a small receive buffer (and window) is enough; it also
/// keeps what a client can push at the board within QEMU's ~10 KiB RX FIFO.
const RX_BUFFER: usize = 512;
/// Bounds the block data in flight per connection.
const TX_BUFFER: usize = 4096;

pub fn run<B: Board>(board: &mut B) -> ! {
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

    let now = board.now();
    let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    let mut iface = Interface::new(config, board.device(), now);
    let mut storage: [SocketStorage<'_>; SOCKETS + 1] = Default::default();
    let mut rx = [[0u8; RX_BUFFER]; SOCKETS];
    let mut tx = [[0u8; TX_BUFFER]; SOCKETS];
    let mut sockets = SocketSet::new(&mut storage[..]);
    let mut network = Network::new(&mut iface, &mut sockets, mac, now);
    let mut rx_parts = rx.iter_mut();
    let mut tx_parts = tx.iter_mut();
    let buffers = [(); SOCKETS].map(|()| SocketBuffers {
        rx: rx_parts.next().map(|b| &mut b[..]).unwrap_or_default(),
        tx: tx_parts.next().map(|b| &mut b[..]).unwrap_or_default(),
    });
    let mut service = if settings::BENCH_RAW_TCP {
        defmt::warn!(
            "benchmark build: raw TCP on port {=u16}, not the protocol",
            DEFAULT_PORT
        );
        let [first, ..] = buffers;
        Service::Raw(RawSender::new(&mut sockets, first, settings::FILE.len()))
    } else {
        let server_config = ServerConfig::new(&store, settings::PEERS);
        defmt::info!(
            "serving on port {=u16} with {=usize} connections",
            DEFAULT_PORT,
            CONNECTIONS
        );
        Service::Protocol(Server::new(
            server_config,
            DEFAULT_PORT,
            &mut sockets,
            buffers,
        ))
    };

    loop {
        board.feed_watchdog();
        let now = board.now();
        // Poll until quiet (a few rounds at most): what the server queues goes out in the
        // same round, and its acknowledgements make room for more.
        let mut server_at = None;
        for _ in 0..8 {
            let polled = iface.poll(now, board.device(), &mut sockets);
            network.poll(&mut iface, &mut sockets, now);
            server_at = match &mut service {
                Service::Protocol(server) => {
                    server.poll(now, &mut sockets, &mut |event| log(event, &*board))
                }
                Service::Raw(raw) => raw.poll(&mut sockets),
            };
            if polled == PollResult::None {
                break;
            }
        }
        let deadline = [iface.poll_at(now, &sockets), network.poll_at(), server_at]
            .into_iter()
            .flatten()
            .min();
        board.sleep_until(deadline);
    }
}

/// One of these lives on the main loop's stack for the firmware's lifetime; with no heap
/// there is nothing to box the larger variant into.
#[expect(
    clippy::large_enum_variant,
    reason = "a single value, and no heap to box into"
)]
enum Service<'a> {
    Protocol(Server<'a, SOCKETS>),
    Raw(RawSender),
}

/// The benchmark anchor (`P2P_BENCH_RAW_TCP`): one socket with the server's buffers that sends
/// `total` bytes of raw TCP to whoever connects, then closes.
struct RawSender {
    handle: SocketHandle,
    total: usize,
    sent: usize,
}

impl RawSender {
    fn new<'a>(sockets: &mut SocketSet<'a>, buffers: SocketBuffers<'a>, total: usize) -> Self {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(buffers.rx),
            tcp::SocketBuffer::new(buffers.tx),
        );
        socket.set_nagle_enabled(false);
        let _ = socket.listen(DEFAULT_PORT);
        Self {
            handle: sockets.add(socket),
            total,
            sent: 0,
        }
    }

    fn poll(&mut self, sockets: &mut SocketSet<'_>) -> Option<Instant> {
        let socket = sockets.get_mut::<tcp::Socket>(self.handle);
        if socket.state() == tcp::State::Closed {
            self.sent = 0;
            let _ = socket.listen(DEFAULT_PORT);
        }
        while self.sent < self.total && socket.can_send() {
            let left = self.total - self.sent;
            match socket.send(|space| {
                let len = space.len().min(left);
                (len, len)
            }) {
                Ok(0) | Err(_) => break,
                Ok(len) => self.sent += len,
            }
        }
        if self.sent >= self.total && socket.may_send() {
            socket.close();
        }
        None
    }
}

fn log<B: Board>(event: DriverEvent, board: &B) {
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
        },
        DriverEvent::Busy { remote } => defmt::warn!("busy: refused {}", remote),
        DriverEvent::Closed { slot, ended } => {
            match ended {
                Ended::Peer => defmt::info!("[{}] closed by peer", slot),
                Ended::Session(reason) => defmt::info!("[{}] closed: {}", slot, reason),
            }
            defmt::info!("stack peak {=usize} bytes", board.stack_peak());
        }
    }
}
