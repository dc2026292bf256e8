//! Fetching over a pool of smoltcp TCP sockets: the [`Fetcher`]'s connections as client
//! sockets, beside the server [`crate::driver::Server`] on the same interface, so one loop
//! serves and fetches.

use crate::driver::{DriverEvent, SocketBuffers, network_time, protocol_time};
use crate::fetch::{FetchEvent, Fetcher};
use crate::flash_store::FlashStore;
use crate::neighbors::{AskedNeighbors, Overhearing, request_neighbor};
use crate::time::Instant;
use embedded_storage::nor_flash::NorFlash;
use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::tcp;
use smoltcp::time::Instant as NetInstant;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address};

/// First local port for outgoing connections (the IANA dynamic range).
const FIRST_LOCAL_PORT: u16 = 49152;

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

/// Hands `fetcher` the client a server event names ([`DriverEvent::client_ipv4`]) as a peer
/// ([`Fetcher::client_seen`]): a node that serves and fetches calls it for every event of its
/// server.
pub fn learn_client<const P: usize, const C: usize, const B: usize, const K: usize>(
    fetcher: &mut Fetcher<P, C, B, K>,
    event: &DriverEvent,
    now: NetInstant,
) {
    if let Some(ip) = event.client_ipv4() {
        fetcher.client_seen(ip, protocol_time(now));
    }
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

    /// `device`, to poll `iface` through so that smoltcp learns the addresses of the peers
    /// `known` accepts from their ARP requests to anyone; connecting to such a peer then
    /// sends its ARP request to the peer alone, not to every node (see [`Overhearing`]).
    pub fn overhearing<'d, D: Device>(
        &'d mut self,
        device: &'d mut D,
        iface: &Interface,
        known: &'d dyn Fn([u8; 4]) -> bool,
    ) -> Overhearing<'d, D> {
        Overhearing::new(device, iface, &mut self.asked, known)
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
    /// like its own. The request goes to the peer alone if it was heard through
    /// [`overhearing`](Self::overhearing) (see [`crate::neighbors`]).
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
                    if let Some(to) = self.asked.first_ask(target, now) {
                        request_neighbor(iface, device, now, target, to);
                    }
                }
                Err(_) => fetcher.closed(slot, time),
            }
        }
        fetcher.poll_at().map(network_time)
    }
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
