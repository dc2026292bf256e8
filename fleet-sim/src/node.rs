//! One simulated node: a smoltcp interface on a switch port with the same serve-and-fetch loop
//! host-sim and the boards run (p2p-core's server driver, fetch driver, fetcher and
//! `FlashStore`), its flash in RAM so that a reset keeps it.

use crate::switch::{Micros, mac_of};
use p2p_core::driver::{LISTENERS, Server, SocketBuffers};
use p2p_core::egress::FairEgress;
use p2p_core::fetch::{FetchConfig, FetchEvent, Fetcher};
use p2p_core::fetch_driver::{FetchDriver, learn_client};
use p2p_core::flash_store::FlashStore;
use p2p_core::ram_flash::RamFlash;
use p2p_core::server::ServerConfig;
use p2p_core::super_seed::SuperSeed;
use p2p_core::{BlockStore, DEFAULT_PORT, Digest, Duration, Instant, PeerAddr};
use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as NetInstant;
use smoltcp::wire::{EthernetAddress, IpCidr, Ipv4Address};
use std::collections::VecDeque;

/// Connections a node serves at once (two more sockets listen): as many as the boards serve
/// (`CONNECTIONS` in firmware/app) and as many as a node fetches over, so each uplink is
/// shared by about as many peers as download from it. With 8, 12 of 64 nodes served nobody
/// for the first second while 11 served 8 each, and the seed's uplink was split eight ways
/// (t / t_min 2.4 -> 2.0).
const SERVING: usize = 4;
const SOCKETS: usize = SERVING + LISTENERS;
/// Connections a node fetches over at once, one per peer.
const FETCHES: usize = 4;
/// Peers a node keeps track of.
const KNOWN_PEERS: usize = 32;
/// Files of up to 8192 blocks (8 MiB at 1 KiB blocks).
pub const BITMAP_BYTES: usize = 1024;
const BLOCK_BUFFER: usize = 1024;
const SERVE_RX: usize = 1024;
const SERVE_TX: usize = 16 * 1024;
const FETCH_RX: usize = 8 * 1024;
const FETCH_TX: usize = 512;

/// Frames a node's transmit queue holds: more than its sockets have in flight at once (four
/// served 8 KiB windows and its own requests and ACKs), so that it is seldom full.
const EGRESS_FRAMES: usize = 64;

type NodeStore = FlashStore<RamFlash<'static>, BITMAP_BYTES>;
type Served = SuperSeed<'static, NodeStore, BITMAP_BYTES>;
type NodeFetcher = Fetcher<KNOWN_PEERS, FETCHES, BITMAP_BYTES, BLOCK_BUFFER>;

/// The port's side of the link: frames the switch delivered, and frames to hand it.
#[derive(Default)]
pub struct Port {
    pub inbox: VecDeque<Vec<u8>>,
    pub outbox: Vec<Vec<u8>>,
    /// Whether the uplink is idle and takes a frame: a NIC hands the wire one frame at a
    /// time, and what it cannot send yet waits in the node's [`FairEgress`].
    pub wire_idle: bool,
}

pub struct PortRx(Vec<u8>);
pub struct PortTx<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for PortRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for PortTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let result = f(&mut frame);
        self.0.push(frame);
        result
    }
}

impl phy::Device for Port {
    type RxToken<'a> = PortRx;
    type TxToken<'a> = PortTx<'a>;

    fn receive(&mut self, _: NetInstant) -> Option<(PortRx, PortTx<'_>)> {
        let frame = self.inbox.pop_front()?;
        Some((PortRx(frame), PortTx(&mut self.outbox)))
    }

    fn transmit(&mut self, _: NetInstant) -> Option<PortTx<'_>> {
        if !core::mem::take(&mut self.wire_idle) {
            return None;
        }
        Some(PortTx(&mut self.outbox))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

/// The boards build smoltcp without congestion control (no `socket-tcp-cubic` or `-reno`),
/// so a socket sends whatever the window allows; the fleet's sockets do the same, whatever
/// features the rest of the workspace turns on (Cubic's cuts at every loss cost 1 % loss
/// 2.79x -> 2.64x t_min that the boards would not pay).
fn like_the_boards(sockets: &mut SocketSet<'static>, handles: impl Iterator<Item = SocketHandle>) {
    for handle in handles {
        sockets
            .get_mut::<tcp::Socket>(handle)
            .set_congestion_control(tcp::CongestionControl::None);
    }
}

/// Node `index`'s address: 10.0.0.0/8, from 10.0.0.2 on.
pub fn ip_of(index: usize) -> [u8; 4] {
    let host = index as u32 + 2;
    let [_, b, c, d] = host.to_be_bytes();
    [10, b, c, d]
}

/// What the fleet learns from a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    Complete,
    /// The node verified its manifest (and serves blocks from now on).
    ManifestVerified,
    Dropped {
        peer: PeerAddr,
        reason: String,
    },
    Stalled(PeerAddr),
    /// Anything else the fetcher reported, for the trace.
    Other(String),
}

/// One incarnation of a node (a reset makes a new one over the same flash).
pub struct Node {
    pub index: usize,
    /// The switch port, behind the node's transmit queue.
    pub egress: Box<FairEgress<Port, EGRESS_FRAMES>>,
    iface: Interface,
    sockets: SocketSet<'static>,
    server: Option<Server<'static, SOCKETS>>,
    serve_buffers: Option<[SocketBuffers<'static>; SOCKETS]>,
    driver: FetchDriver<FETCHES>,
    fetcher: Box<NodeFetcher>,
    store: &'static NodeStore,
    /// Set when the node started with the whole file: it super-seeds.
    super_seed: Option<&'static Served>,
    listed: &'static [PeerAddr],
    pub next_poll: Micros,
    pub events: Vec<NodeEvent>,
}

fn leak(len: usize) -> &'static mut [u8] {
    vec![0u8; len].leak()
}

fn buffers<const N: usize>(rx: usize, tx: usize) -> [SocketBuffers<'static>; N] {
    [(); N].map(|()| SocketBuffers {
        rx: leak(rx),
        tx: leak(tx),
    })
}

impl Node {
    /// A node on port `index` whose flash is `flash` (kept across resets), for the file of
    /// `manifest`, knowing `peers`.
    pub fn start(
        index: usize,
        flash: &'static mut [u8],
        manifest: Digest,
        peers: &[PeerAddr],
        now: Micros,
    ) -> Self {
        let store: &'static NodeStore = Box::leak(Box::new(
            FlashStore::open(RamFlash::new(flash), manifest)
                .unwrap_or_else(|error| panic!("node {index}: storage: {error}")),
        ));
        let super_seed: Option<&'static Served> = store
            .is_complete()
            .then(|| &*Box::leak(Box::new(SuperSeed::new(store))));
        let mac = mac_of(index);
        let mut port = Port {
            wire_idle: true,
            ..Port::default()
        };
        let mut config = Config::new(EthernetAddress(mac).into());
        config.random_seed = index as u64 + 1;
        let at = NetInstant::from_micros(now as i64);
        let mut iface = Interface::new(config, &mut port, at);
        let [a, b, c, d] = ip_of(index);
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(Ipv4Address::new(a, b, c, d).into(), 8));
        });
        let mut sockets = SocketSet::new(Vec::new());
        let driver = FetchDriver::new(&mut sockets, buffers(FETCH_RX, FETCH_TX), index as u16);
        like_the_boards(&mut sockets, driver.handles());
        let own = PeerAddr::new(ip_of(index), DEFAULT_PORT);
        let fetch_config = FetchConfig {
            own_addr: Some(own),
            start_hint: (index as u32).wrapping_mul(7919),
            stall_timeout: Duration::from_millis(2000),
            // Every 5 ms (10 while blocks come): what a filling peer holds changes by the
            // millisecond. With probes (below), means of 8 seeds: 64 nodes 1.63x t_min with
            // 20 ms, 1.62x with 10, 1.58x with 5; under 1 % loss 1.87x, 1.85x, 1.86x; churn
            // (seeds 1 to 4) 2.52x, 2.43x, 2.60x. Without probes, faster refreshes cost the
            // runs under loss more than they gained.
            refresh: Duration::from_millis(5),
            retry_after: Duration::from_millis(100),
            rotate_after: Duration::from_millis(100),
            review_every: Duration::from_millis(1000),
            // Round trips are a millisecond or two plus queueing: 50 ms with nothing received
            // is a lost segment waiting out smoltcp's 1 s retransmission timeout (1 % loss:
            // 2.66x t_min with 200 ms, 2.30x with 50; 25 ms gave false alarms, 2.5x).
            block_lag: Duration::from_millis(50),
            open_lag: Duration::from_millis(100),
            // Half the block lag (1 % loss, means over seeds 1 to 8 and 9 to 16: 1.94x and
            // 1.98x t_min without probes, 1.87x and 1.90x with; 10 ms: 1.94x, 30 ms: 1.90x).
            probe_after: Some(Duration::from_millis(25)),
            ..FetchConfig::default()
        };
        let millis = Instant::from_millis(now / 1000);
        let fetcher = Box::new(NodeFetcher::new(fetch_config, peers, millis));
        Self {
            index,
            egress: Box::new(FairEgress::new(port, DEFAULT_PORT)),
            iface,
            sockets,
            server: None,
            serve_buffers: Some(buffers(SERVE_RX, SERVE_TX)),
            driver,
            fetcher,
            store,
            super_seed,
            listed: peers.to_vec().leak(),
            next_poll: now,
            events: Vec::new(),
        }
    }

    /// A copy of this node's flash, to start its next incarnation from after a reset.
    pub fn flash_image(&self) -> Vec<u8> {
        self.store.flash().as_bytes().to_vec()
    }

    pub fn served_count(&self) -> u32 {
        self.super_seed.map_or(0, SuperSeed::served_this_round)
    }

    pub fn held_count(&self) -> usize {
        self.store.verified_count() as usize
    }

    /// Whether this node holds `block`, verified.
    pub fn holds(&self, block: u16) -> bool {
        p2p_core::BlockRange::new(block, block).is_some_and(|range| self.store.holds(range))
    }

    pub fn is_complete(&self) -> bool {
        self.store.is_complete()
    }

    /// Runs the node's loop until it is quiet at `now`.
    pub fn poll(&mut self, now: Micros) {
        let at = NetInstant::from_micros(now as i64);
        let store = self.store;
        let events = &mut self.events;
        let mut next: Option<NetInstant> = None;
        for _ in 0..32 {
            self.egress.flush(at);
            let fetcher = &self.fetcher;
            let known = |ip| fetcher.knows_host(ip);
            let mut device = self
                .driver
                .overhearing(&mut *self.egress, &self.iface, &known);
            let polled = self.iface.poll(at, &mut device, &mut self.sockets);
            let fetch_at = self.driver.poll(
                at,
                &mut self.iface,
                &mut *self.egress,
                &mut self.sockets,
                &mut self.fetcher,
                store,
                &mut |event| match event {
                    FetchEvent::Complete { .. } => events.push(NodeEvent::Complete),
                    FetchEvent::ManifestVerified { .. } => events.push(NodeEvent::ManifestVerified),
                    FetchEvent::PeerDropped { peer, reason } => events.push(NodeEvent::Dropped {
                        peer,
                        reason: reason.to_string(),
                    }),
                    FetchEvent::Stalled(peer) => events.push(NodeEvent::Stalled(peer)),
                    other => events.push(NodeEvent::Other(format!("{other:?}"))),
                },
            );
            // Serving from the start: until the manifest is verified, only Peer Lists.
            if self.server.is_none()
                && let Some(buffers) = self.serve_buffers.take()
            {
                let served: &'static dyn BlockStore = match self.super_seed {
                    Some(seed) => seed,
                    None => store,
                };
                let config = ServerConfig::new(served, self.listed);
                let mut server = Server::new(config, DEFAULT_PORT, &mut self.sockets, buffers);
                // A node that comes back while every peer serves four clients would wait
                // until some client leaves (churn seeds 1 to 4: 2.55x, 2.64x, 2.57x, 2.66x
                // t_min without turns; 2.36x, 2.38x, 2.04x, 2.43x with them, no change
                // without churn).
                server.set_turns(Some(Duration::from_millis(250)));
                like_the_boards(&mut self.sockets, server.handles());
                self.server = Some(server);
            }
            let fetcher = &mut self.fetcher;
            let serve_at = self.server.as_mut().and_then(|server| {
                server.poll(at, &mut self.sockets, &mut |event| {
                    learn_client(fetcher, &event, at);
                })
            });
            if self.server.as_ref().is_none_or(|server| !server.listing()) {
                store.publish();
                if let Some(seed) = self.super_seed {
                    seed.publish(Instant::from_millis(now / 1000));
                }
            }
            next = [self.iface.poll_at(at, &self.sockets), fetch_at, serve_at]
                .into_iter()
                .flatten()
                .min();
            if polled == PollResult::None {
                break;
            }
        }
        self.egress.flush(at);
        self.next_poll = next.map_or(Micros::MAX, |t| t.total_micros().max(0) as Micros);
    }
}
