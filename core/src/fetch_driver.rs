//! Fetching over a pool of smoltcp TCP sockets: the [`Fetcher`]'s connections as client
//! sockets, beside the server [`crate::driver::Server`] on the same interface, so one loop
//! serves and fetches.

use crate::driver::SocketBuffers;
use crate::fetch::{FetchEvent, Fetcher};
use crate::flash_store::FlashStore;
use crate::time::Instant;
use embedded_storage::nor_flash::NorFlash;
use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as NetInstant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Address,
};

/// First local port for outgoing connections (the IANA dynamic range).
const FIRST_LOCAL_PORT: u16 = 49152;

/// Peers remembered as asked for by ARP. smoltcp keeps a neighbor's answer for a minute
/// (longer while it talks), so asking again for a peer reconnected to only floods the segment:
/// every broadcast reaches every node, and 64 simulated nodes that asked on every connection
/// spent 85 % of each downlink on ARP requests in the first half second.
const ASKED_NEIGHBORS: usize = 32;
/// Seconds an ARP request is taken to have been answered for: smoltcp's neighbor lifetime.
const NEIGHBOR_LIFETIME_SECS: u32 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Free,
    /// Opening a connection to this address.
    Connecting(Ipv4Address),
    Open,
    /// We reset it; freed at the next poll, once the interface has sent the reset (a socket
    /// reused before that would never send it).
    Closing,
}

/// `C` client sockets, one per fetcher connection slot.
pub struct FetchDriver<const C: usize> {
    handles: [SocketHandle; C],
    links: [Link; C],
    next_port: u16,
    asked: AskedNeighbors,
}

fn protocol_time(now: NetInstant) -> Instant {
    Instant::from_millis(u64::try_from(now.total_millis()).unwrap_or(0))
}

impl<const C: usize> FetchDriver<C> {
    /// Adds `C` client sockets built on `buffers` to `sockets`. `seed` spreads the local ports
    /// of nodes that start at once.
    pub fn new<'a>(
        sockets: &mut SocketSet<'a>,
        buffers: [SocketBuffers<'a>; C],
        seed: u16,
    ) -> Self {
        let handles = buffers.map(|buffers| {
            let mut socket = tcp::Socket::new(
                tcp::SocketBuffer::new(buffers.rx),
                tcp::SocketBuffer::new(buffers.tx),
            );
            socket.set_nagle_enabled(false);
            sockets.add(socket)
        });
        Self {
            handles,
            links: [Link::Free; C],
            next_port: FIRST_LOCAL_PORT + seed % 8192,
            asked: AskedNeighbors::default(),
        }
    }

    /// The sockets' handles, for tuning them.
    pub fn handles(&self) -> impl Iterator<Item = SocketHandle> + '_ {
        self.handles.iter().copied()
    }

    /// Moves bytes between the sockets and the fetcher, opens the connections it asks for and
    /// closes the ones it is done with. Call after every interface poll (and poll the interface
    /// again to send what was queued). Returns when it next needs a poll if nothing arrives.
    ///
    /// `device` is the interface's own: a connection to a peer not asked for in the last
    /// minute also sends an ARP request for it straight through it. smoltcp sends at most one
    /// neighbor request a second for the whole interface, so a node that finds several peers
    /// at once would otherwise wait up to a second for each; the replies fill smoltcp's cache
    /// like its own.
    #[allow(clippy::too_many_arguments)]
    pub fn poll<
        D: Device,
        F: NorFlash,
        const P: usize,
        const B: usize,
        const K: usize,
        const SB: usize,
    >(
        &mut self,
        now: NetInstant,
        iface: &mut Interface,
        device: &mut D,
        sockets: &mut SocketSet<'_>,
        fetcher: &mut Fetcher<P, C, B, K>,
        store: &FlashStore<F, SB>,
        on_event: &mut dyn FnMut(FetchEvent),
    ) -> Option<NetInstant> {
        let time = protocol_time(now);
        fetcher.poll(time, store, on_event);
        for (slot, (&handle, link)) in self.handles.iter().zip(self.links.iter_mut()).enumerate() {
            let socket = sockets.get_mut::<tcp::Socket>(handle);
            match *link {
                Link::Free => {}
                Link::Connecting(_) if socket.state() == tcp::State::Established => {
                    fetcher.connected(slot, time);
                    *link = Link::Open;
                }
                Link::Connecting(_) | Link::Open if !socket.is_active() => {
                    // Refused, reset, or closed by the peer.
                    socket.abort();
                    fetcher.closed(slot, time);
                    *link = Link::Free;
                    continue;
                }
                Link::Closing => {
                    if matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait) {
                        socket.abort();
                        fetcher.closed(slot, time);
                        *link = Link::Free;
                    }
                    continue;
                }
                Link::Connecting(_) | Link::Open => {}
            }
            if *link == Link::Open {
                exchange(socket, slot, time, fetcher, store, on_event);
                if socket.state() == tcp::State::CloseWait && !socket.can_recv() {
                    // The peer finished sending (an Error, or it is going away).
                    socket.close();
                }
            }
            if *link != Link::Free && fetcher.wants_close(slot) {
                if let Link::Connecting(target) = *link {
                    // Given up before it opened: the ARP request or its reply may be what was
                    // lost, and smoltcp asks again only after a second; the next connection
                    // to this peer asks itself.
                    self.asked.forget(target);
                }
                // A reset, not a close: the peer may still have answers queued for us, and a
                // closing socket that no longer reads would hold both ends (and this slot)
                // until the peer's idle timeout.
                socket.abort();
                *link = Link::Closing;
            }
        }
        while let Some((slot, peer)) = fetcher.poll_connect(time) {
            let (Some(&handle), Some(link)) = (self.handles.get(slot), self.links.get_mut(slot))
            else {
                fetcher.closed(slot, time);
                break;
            };
            let socket = sockets.get_mut::<tcp::Socket>(handle);
            let [a, b, c, d] = peer.ip;
            let remote = IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::new(a, b, c, d)), peer.port);
            let local = self.next_port;
            self.next_port = if local == u16::MAX {
                FIRST_LOCAL_PORT
            } else {
                local + 1
            };
            socket.abort();
            match socket.connect(iface.context(), remote, local) {
                Ok(()) => {
                    let target = Ipv4Address::new(a, b, c, d);
                    *link = Link::Connecting(target);
                    if self.asked.first_ask(target, now) {
                        request_neighbor(iface, device, now, target);
                    }
                }
                Err(_) => fetcher.closed(slot, time),
            }
        }
        fetcher
            .poll_at()
            .map(|at| NetInstant::from_millis(i64::try_from(at.millis()).unwrap_or(i64::MAX)))
    }
}

/// The peers asked for by ARP lately, so each is asked once a neighbor lifetime.
#[derive(Default)]
struct AskedNeighbors {
    /// Who was asked for, and when (whole seconds: 8 bytes an entry on a board).
    entries: heapless::Vec<(Ipv4Address, u32), ASKED_NEIGHBORS>,
}

impl AskedNeighbors {
    /// Lets the next connection to `target` ask for it again.
    fn forget(&mut self, target: Ipv4Address) {
        self.entries.retain(|(ip, _)| *ip != target);
    }

    /// Whether `target` was not asked for within the neighbor lifetime; records the ask.
    /// When full, the oldest ask is forgotten.
    fn first_ask(&mut self, target: Ipv4Address, now: NetInstant) -> bool {
        let secs = u32::try_from(now.secs()).unwrap_or(u32::MAX);
        if let Some(entry) = self.entries.iter_mut().find(|(ip, _)| *ip == target) {
            if secs < entry.1.saturating_add(NEIGHBOR_LIFETIME_SECS) {
                return false;
            }
            entry.1 = secs;
            return true;
        }
        if self.entries.is_full()
            && let Some(oldest) =
                (0..self.entries.len()).min_by_key(|&i| self.entries.get(i).map(|e| e.1))
        {
            self.entries.swap_remove(oldest);
        }
        let _ = self.entries.push((target, secs));
        true
    }
}

/// Sends an ARP request for `target` through `device`, if it is on one of the interface's
/// subnets (a peer behind a router needs the router's address, which smoltcp resolves).
fn request_neighbor<D: Device>(
    iface: &Interface,
    device: &mut D,
    now: NetInstant,
    target: Ipv4Address,
) {
    // Refutable where another crate turns on smoltcp's other media.
    #[allow(irrefutable_let_patterns)]
    let HardwareAddress::Ethernet(mac) = iface.hardware_addr() else {
        return;
    };
    let Some(own) = iface.ip_addrs().iter().find_map(|cidr| match cidr {
        IpCidr::Ipv4(v4) if v4.contains_addr(&target) => Some(v4.address()),
        _ => None,
    }) else {
        return;
    };
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: mac,
        source_protocol_addr: own,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let ethernet = EthernetRepr {
        src_addr: mac,
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    let Some(token) = device.transmit(now) else {
        // The device is busy: smoltcp's own request will do, at its pace.
        return;
    };
    token.consume(ethernet.buffer_len() + arp.buffer_len(), |buffer| {
        let mut frame = EthernetFrame::new_unchecked(buffer);
        ethernet.emit(&mut frame);
        arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    });
}

/// One round of bytes both ways on an open connection.
fn exchange<
    F: NorFlash,
    const P: usize,
    const C: usize,
    const B: usize,
    const K: usize,
    const SB: usize,
>(
    socket: &mut tcp::Socket<'_>,
    slot: usize,
    time: Instant,
    fetcher: &mut Fetcher<P, C, B, K>,
    store: &FlashStore<F, SB>,
    on_event: &mut dyn FnMut(FetchEvent),
) {
    // Two rounds each way: a ring buffer hands out its contiguous part first.
    for _ in 0..2 {
        if !socket.can_recv() {
            break;
        }
        let _ = socket.recv(|received| {
            let used = fetcher.receive(slot, received, time, store, on_event);
            (used, ())
        });
    }
    for _ in 0..2 {
        if !(socket.can_send() && fetcher.wants_transmit(slot, time, store)) {
            break;
        }
        let _ = socket.send(|space| (fetcher.transmit(slot, space, time, store), ()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> NetInstant {
        NetInstant::from_secs(secs)
    }

    #[test]
    fn a_peer_is_asked_for_once_a_neighbor_lifetime() {
        let mut asked = AskedNeighbors::default();
        let peer = Ipv4Address::new(10, 0, 0, 7);
        assert!(asked.first_ask(peer, at(1)));
        assert!(!asked.first_ask(peer, at(1)));
        assert!(!asked.first_ask(peer, at(60)));
        assert!(asked.first_ask(peer, at(61)));
        assert!(!asked.first_ask(peer, at(62)));
        assert!(asked.first_ask(Ipv4Address::new(10, 0, 0, 8), at(62)));
    }

    #[test]
    fn when_full_the_oldest_ask_is_forgotten() {
        let mut asked = AskedNeighbors::default();
        let peer = |n: usize| Ipv4Address::new(10, 0, 1, n as u8);
        for n in 0..ASKED_NEIGHBORS {
            assert!(asked.first_ask(peer(n), at(n as i64)));
        }
        assert!(asked.first_ask(peer(200), at(40)));
        // Peer 0 was the oldest: forgotten, so asked again; the others are still known.
        assert!(asked.first_ask(peer(0), at(41)));
        assert!(!asked.first_ask(peer(ASKED_NEIGHBORS - 1), at(41)));
    }

    #[test]
    fn a_forgotten_peer_is_asked_for_again_at_once() {
        let mut asked = AskedNeighbors::default();
        let (peer, other) = (Ipv4Address::new(10, 0, 0, 7), Ipv4Address::new(10, 0, 0, 8));
        assert!(asked.first_ask(peer, at(1)));
        assert!(asked.first_ask(other, at(1)));
        asked.forget(peer);
        assert!(asked.first_ask(peer, at(2)));
        assert!(!asked.first_ask(other, at(2)));
    }
}
