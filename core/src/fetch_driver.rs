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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    //! A fetcher and a server on one smoltcp interface, over a loopback device that loses the
    //! frames a test picks: the TCP the boards run, without a network.
    extern crate std;
    use super::*;
    use crate::driver::Server;
    use crate::fetch::FetchConfig;
    use crate::manifest::{Digest, manifest_digest};
    use crate::ram_flash::RamFlash;
    use crate::server::ServerConfig;
    use crate::store::SliceStore;
    use crate::time::Duration;
    use crate::{DEFAULT_PORT, PeerAddr};
    use smoltcp::iface::{Config, SocketStorage};
    use smoltcp::phy::{self, DeviceCapabilities, Loopback, Medium};
    use smoltcp::wire::{EthernetAddress, EthernetFrame, IpCidr, Ipv4Packet, TcpPacket};
    use std::vec::Vec;

    /// The segments a test loses, by source port and payload.
    type Pick = fn(u16, &[u8]) -> bool;

    /// smoltcp's loopback, losing the first segment `lose` picks.
    struct Lossy {
        inner: Loopback,
        lose: Pick,
        lost: bool,
    }

    struct LossyTx<'a> {
        inner: <Loopback as Device>::TxToken<'a>,
        lose: Pick,
        lost: &'a mut bool,
    }

    impl phy::TxToken for LossyTx<'_> {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
            let mut frame = std::vec![0u8; len];
            let result = f(&mut frame);
            let lose = !*self.lost
                && segment(&frame).is_some_and(|(port, payload)| (self.lose)(port, payload));
            *self.lost |= lose;
            if !lose {
                self.inner.consume(len, |buf| buf.copy_from_slice(&frame));
            }
            result
        }
    }

    impl Device for Lossy {
        type RxToken<'a> = <Loopback as Device>::RxToken<'a>;
        type TxToken<'a> = LossyTx<'a>;

        fn receive(&mut self, now: NetInstant) -> Option<(Self::RxToken<'_>, LossyTx<'_>)> {
            let (rx, tx) = self.inner.receive(now)?;
            Some((
                rx,
                LossyTx {
                    inner: tx,
                    lose: self.lose,
                    lost: &mut self.lost,
                },
            ))
        }

        fn transmit(&mut self, now: NetInstant) -> Option<LossyTx<'_>> {
            Some(LossyTx {
                inner: self.inner.transmit(now)?,
                lose: self.lose,
                lost: &mut self.lost,
            })
        }

        fn capabilities(&self) -> DeviceCapabilities {
            let mut caps = self.inner.capabilities();
            caps.max_transmission_unit = 1514;
            caps
        }
    }

    /// A TCP segment's source port and payload, if `frame` holds one.
    fn segment(frame: &[u8]) -> Option<(u16, &[u8])> {
        let ethernet = EthernetFrame::new_checked(frame).ok()?;
        let ip = Ipv4Packet::new_checked(ethernet.payload()).ok()?;
        let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
        Some((tcp.src_port(), tcp.payload()))
    }

    /// A Block Request (type 0x04, 5 bytes), with no request after it to draw duplicate ACKs.
    fn a_block_request(port: u16, payload: &[u8]) -> bool {
        port != DEFAULT_PORT && payload.first() == Some(&0x04)
    }

    /// Fetches a 128-block file from a server on the same interface, one Block Request of 8
    /// blocks at a time, losing the first segment `lost` picks (by source port and payload);
    /// returns the milliseconds until the file is complete.
    fn fill_losing(lost: Pick, probe_after: Option<Duration>) -> u64 {
        let data: Vec<u8> = (0..128 * 1024u32).map(|i| (i % 251) as u8).collect();
        let digests: Vec<Digest> = data.chunks(1024).map(Digest::of).collect();
        let served = SliceStore::<1>::new(&data)
            .unwrap()
            .with_digests(&digests)
            .unwrap();
        let mut flash = std::vec![0u8; 256 * 1024];
        let store = FlashStore::<_, 16>::open(
            RamFlash::new(&mut flash),
            manifest_digest(data.len() as u32, &digests),
        )
        .unwrap();

        let mut device = Lossy {
            inner: Loopback::new(Medium::Ethernet),
            lose: lost,
            lost: false,
        };
        let config = Config::new(EthernetAddress([2, 0, 0, 0, 0, 1]).into());
        let mut now = NetInstant::from_millis(0);
        let mut iface = Interface::new(config, &mut device, now);
        iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8))
                .unwrap();
        });
        let mut storage: [SocketStorage; 4] = Default::default();
        let mut sockets = SocketSet::new(&mut storage[..]);
        let buffers = |rx: usize, tx: usize| SocketBuffers {
            rx: std::vec![0u8; rx].leak(),
            tx: std::vec![0u8; tx].leak(),
        };
        let mut server = Server::<3>::new(
            ServerConfig::new(&served, &[]),
            DEFAULT_PORT,
            &mut sockets,
            [(); 3].map(|()| buffers(256, 16 * 1024)),
        );
        let mut driver = FetchDriver::<1>::new(&mut sockets, [buffers(16 * 1024, 512)], 0);
        let config = FetchConfig {
            probe_after,
            max_run: 8,
            requests: 1,
            ..FetchConfig::default()
        };
        let peer = PeerAddr::new([127, 0, 0, 1], DEFAULT_PORT);
        let mut fetcher = Fetcher::<2, 1, 16, 1024>::new(config, &[peer], protocol_time(now));
        for ms in 0..5_000 {
            iface.poll(now, &mut device, &mut sockets);
            driver.poll(
                now,
                &mut iface,
                &mut device,
                &mut sockets,
                &mut fetcher,
                &store,
                &mut |_| {},
            );
            server.poll(now, &mut sockets, &mut |_| {});
            iface.poll(now, &mut device, &mut sockets);
            if store.is_complete() {
                return ms;
            }
            now += smoltcp::time::Duration::from_millis(1);
        }
        panic!("not complete after 5 s");
    }

    #[test]
    fn probes_draw_the_resend_of_a_lost_request_before_the_retransmission_timeout() {
        // Without probes the request waits out smoltcp's 1 s minimum retransmission timeout.
        let waited = fill_losing(a_block_request, None);
        assert!(waited >= 1_000, "{waited} ms");
        // The three File Size Requests reach the server after the hole: it acknowledges each
        // again, and the fetcher's end resends the request.
        let probed = fill_losing(a_block_request, Some(Duration::from_millis(25)));
        assert!(probed < 100, "{probed} ms");
    }
}
