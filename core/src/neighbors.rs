//! What a node knows of its peers' Ethernet addresses, beyond what smoltcp learns alone.
//!
//! smoltcp sends at most one ARP request a second for the whole interface, and fills its
//! neighbor cache only from ARP packets aimed at it. On a segment of many nodes that connect to
//! one another both cost: a node that finds several peers at once waits up to a second for
//! each, and every request is a broadcast that reaches every node (64 simulated nodes, each
//! connecting to about 30 peers in a run, put 2100 of them on every downlink). So the fetch
//! driver asks for a peer itself, once a neighbor lifetime, and the
//! interface is polled through [`Overhearing`], which lets smoltcp learn the address of every
//! known peer whose request to anyone it hears: a peer heard is then asked by a request to it
//! alone, which only tells it this node's address.

use smoltcp::iface::Interface;
use smoltcp::phy::{Device, DeviceCapabilities, RxToken, TxToken};
use smoltcp::time::Instant as NetInstant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, IpCidr, Ipv4Address,
};

/// Peers remembered as asked for by ARP (or heard asking). smoltcp keeps a neighbor's answer
/// for a minute (longer while it talks), so asking again for a peer reconnected to only floods
/// the segment: every broadcast reaches every node, and 64 simulated nodes that asked on every
/// connection spent 85 % of each downlink on ARP requests in the first half second.
const ASKED_NEIGHBORS: usize = 32;
/// Seconds an ARP request is taken to have been answered for: smoltcp's neighbor lifetime.
const NEIGHBOR_LIFETIME_SECS: u32 = 60;
/// An Ethernet frame carrying an ARP packet for IPv4.
const ARP_FRAME_LEN: usize = 42;

/// A peer the fetch driver asked for by ARP, or heard from.
#[derive(Debug, Clone, Copy)]
struct Neighbor {
    ip: Ipv4Address,
    /// When this node last asked for it, or it asked for this node (whole seconds): either
    /// way both ends have each other's address for a neighbor lifetime.
    asked: Option<u32>,
    /// Its address, from its own request to someone else, and when that was heard.
    heard: Option<(EthernetAddress, u32)>,
}

impl Neighbor {
    fn last(&self) -> u32 {
        self.asked.max(self.heard.map(|(_, at)| at)).unwrap_or(0)
    }
}

/// The peers asked for by ARP lately, and the addresses of peers heard asking for others, so
/// that each is asked for at most once a neighbor lifetime, and by a request to it alone when
/// its address is known.
#[derive(Default)]
pub(crate) struct AskedNeighbors {
    entries: heapless::Vec<Neighbor, ASKED_NEIGHBORS>,
}

impl AskedNeighbors {
    /// Lets the next connection to `target` ask for it again.
    pub(crate) fn forget(&mut self, target: Ipv4Address) {
        self.entries.retain(|n| n.ip != target);
    }

    /// Whether to ask for `target` now, and where to send the request: `None` if it was
    /// asked for (or asked for this node) within the neighbor lifetime; its own address if it
    /// was heard within it (smoltcp has that from [`Overhearing`], and the request is only to
    /// tell the peer this node's), the broadcast address otherwise. Records the ask.
    pub(crate) fn first_ask(
        &mut self,
        target: Ipv4Address,
        now: NetInstant,
    ) -> Option<EthernetAddress> {
        let secs = whole_seconds(now);
        let fresh = |at: u32| secs < at.saturating_add(NEIGHBOR_LIFETIME_SECS);
        let entry = self.entry(target)?;
        if entry.asked.is_some_and(fresh) {
            return None;
        }
        entry.asked = Some(secs);
        Some(match entry.heard {
            Some((mac, at)) if fresh(at) => mac,
            _ => EthernetAddress::BROADCAST,
        })
    }

    /// `target` asked for this node: both ends have each other's address.
    pub(crate) fn asked_by(&mut self, target: Ipv4Address, now: NetInstant) {
        if let Some(entry) = self.entry(target) {
            entry.asked = Some(whole_seconds(now));
        }
    }

    /// `target`, at `mac`, was heard asking for another node.
    pub(crate) fn heard(&mut self, target: Ipv4Address, mac: EthernetAddress, now: NetInstant) {
        if let Some(entry) = self.entry(target) {
            entry.heard = Some((mac, whole_seconds(now)));
        }
    }

    /// The entry of `target`, made if need be; when full, the one least recently asked for
    /// or heard from is forgotten.
    fn entry(&mut self, target: Ipv4Address) -> Option<&mut Neighbor> {
        if !self.entries.iter().any(|n| n.ip == target) {
            if self.entries.is_full()
                && let Some(oldest) =
                    (0..self.entries.len()).min_by_key(|&i| self.entries.get(i).map(Neighbor::last))
            {
                self.entries.swap_remove(oldest);
            }
            let _ = self.entries.push(Neighbor {
                ip: target,
                asked: None,
                heard: None,
            });
        }
        self.entries.iter_mut().find(|n| n.ip == target)
    }
}

fn whole_seconds(now: NetInstant) -> u32 {
    u32::try_from(now.secs()).unwrap_or(u32::MAX)
}

/// Sends an ARP request for `target` to `to` (the broadcast address, or the target's own when
/// it is known) through `device`, if the target is on one of the interface's subnets (a peer
/// behind a router needs the router's address, which smoltcp resolves).
pub(crate) fn request_neighbor<D: Device>(
    iface: &Interface,
    device: &mut D,
    now: NetInstant,
    target: Ipv4Address,
    to: EthernetAddress,
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
    let Some(token) = device.transmit(now) else {
        // The device is busy: smoltcp's own request will do, at its pace.
        return;
    };
    token.consume(ARP_FRAME_LEN, |buffer| emit_arp(buffer, to, mac, &arp));
}

fn emit_arp(buffer: &mut [u8], dst: EthernetAddress, src: EthernetAddress, arp: &ArpRepr) {
    let ethernet = EthernetRepr {
        src_addr: src,
        dst_addr: dst,
        ethertype: EthernetProtocol::Arp,
    };
    let mut frame = EthernetFrame::new_unchecked(buffer);
    ethernet.emit(&mut frame);
    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
}

/// A device the interface is polled through so that smoltcp learns the address of every known
/// peer whose ARP request reaches this node, not only of those asking for it: such a request is
/// handed to smoltcp as a reply aimed at this node, from which it fills its neighbor cache (and
/// answers nothing). Connecting to the peer then sends the SYN at once, and the fetch driver's
/// own request, which tells the peer this node's address, goes to the peer alone instead of to
/// every node. Only known peers are learnt: a board's cache holds a few entries, and strangers
/// must not push out the peers it talks to.
pub struct Overhearing<'d, D> {
    device: &'d mut D,
    own_ip: Ipv4Address,
    own_mac: EthernetAddress,
    asked: &'d mut AskedNeighbors,
    known: &'d dyn Fn([u8; 4]) -> bool,
}

impl<'d, D: Device> Overhearing<'d, D> {
    pub(crate) fn new(
        device: &'d mut D,
        iface: &Interface,
        asked: &'d mut AskedNeighbors,
        known: &'d dyn Fn([u8; 4]) -> bool,
    ) -> Self {
        // Reachable where another crate turns on smoltcp's other media.
        #[allow(unreachable_patterns)]
        let own_mac = match iface.hardware_addr() {
            HardwareAddress::Ethernet(mac) => mac,
            _ => EthernetAddress::BROADCAST,
        };
        Self {
            device,
            own_ip: iface.ipv4_addr().unwrap_or(Ipv4Address::UNSPECIFIED),
            own_mac,
            asked,
            known,
        }
    }
}

impl<D: Device> Device for Overhearing<'_, D> {
    type RxToken<'a>
        = OverheardRx<'a, D::RxToken<'a>>
    where
        Self: 'a;
    type TxToken<'a>
        = D::TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, now: NetInstant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let (rx, tx) = self.device.receive(now)?;
        let rx = OverheardRx {
            inner: rx,
            now,
            own_ip: self.own_ip,
            own_mac: self.own_mac,
            asked: &mut *self.asked,
            known: self.known,
        };
        Some((rx, tx))
    }

    fn transmit(&mut self, now: NetInstant) -> Option<Self::TxToken<'_>> {
        self.device.transmit(now)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.device.capabilities()
    }
}

/// A received frame, handed to smoltcp rewritten if it is an overheard ARP request.
pub struct OverheardRx<'a, R> {
    inner: R,
    now: NetInstant,
    own_ip: Ipv4Address,
    own_mac: EthernetAddress,
    asked: &'a mut AskedNeighbors,
    known: &'a dyn Fn([u8; 4]) -> bool,
}

impl<R: RxToken> RxToken for OverheardRx<'_, R> {
    fn consume<T, F: FnOnce(&[u8]) -> T>(self, f: F) -> T {
        let Self {
            inner,
            now,
            own_ip,
            own_mac,
            asked,
            known,
        } = self;
        inner.consume(|frame| {
            let Some((sender, for_us)) =
                arp_request(frame, own_ip).filter(|((ip, _), _)| known(ip.octets()))
            else {
                return f(frame);
            };
            let (ip, mac) = sender;
            if for_us {
                // smoltcp learns the asker from it and answers it.
                asked.asked_by(ip, now);
                return f(frame);
            }
            asked.heard(ip, mac, now);
            let reply = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: mac,
                source_protocol_addr: ip,
                target_hardware_addr: own_mac,
                target_protocol_addr: own_ip,
            };
            let mut rewritten = [0u8; ARP_FRAME_LEN];
            emit_arp(&mut rewritten, own_mac, mac, &reply);
            f(&rewritten)
        })
    }

    fn meta(&self) -> smoltcp::phy::PacketMeta {
        self.inner.meta()
    }
}

/// The sender of an ARP request in `frame`, and whether it asks for `own`; `None` for any
/// other frame, and for requests from this node's own address or from no unicast address.
fn arp_request(frame: &[u8], own: Ipv4Address) -> Option<((Ipv4Address, EthernetAddress), bool)> {
    let ethernet = EthernetFrame::new_checked(frame).ok()?;
    if ethernet.ethertype() != EthernetProtocol::Arp {
        return None;
    }
    let packet = ArpPacket::new_checked(ethernet.payload()).ok()?;
    match ArpRepr::parse(&packet).ok()? {
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } if source_hardware_addr.is_unicast()
            && !source_protocol_addr.is_unspecified()
            && !source_protocol_addr.is_broadcast()
            && !source_protocol_addr.is_multicast()
            && source_protocol_addr != own =>
        {
            let for_us = target_protocol_addr == own;
            Some(((source_protocol_addr, source_hardware_addr), for_us))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use smoltcp::iface::{Config, SocketSet};
    use smoltcp::phy::Medium;
    use smoltcp::socket::tcp;
    use smoltcp::wire::{IpAddress, IpEndpoint};
    use std::collections::VecDeque;
    use std::vec::Vec;

    fn at(secs: i64) -> NetInstant {
        NetInstant::from_secs(secs)
    }

    fn asked_for(asked: &mut AskedNeighbors, target: Ipv4Address, now: NetInstant) -> bool {
        asked.first_ask(target, now).is_some()
    }

    #[test]
    fn a_peer_is_asked_for_once_a_neighbor_lifetime() {
        let mut asked = AskedNeighbors::default();
        let peer = Ipv4Address::new(10, 0, 0, 7);
        assert!(asked_for(&mut asked, peer, at(1)));
        assert!(!asked_for(&mut asked, peer, at(1)));
        assert!(!asked_for(&mut asked, peer, at(60)));
        assert!(asked_for(&mut asked, peer, at(61)));
        assert!(!asked_for(&mut asked, peer, at(62)));
        assert!(asked_for(&mut asked, Ipv4Address::new(10, 0, 0, 8), at(62)));
    }

    #[test]
    fn when_full_the_oldest_ask_is_forgotten() {
        let mut asked = AskedNeighbors::default();
        let peer = |n: usize| Ipv4Address::new(10, 0, 1, n as u8);
        for n in 0..ASKED_NEIGHBORS {
            assert!(asked_for(&mut asked, peer(n), at(n as i64)));
        }
        assert!(asked_for(&mut asked, peer(200), at(40)));
        // Peer 0 was the oldest: forgotten, so asked again; the others are still known.
        assert!(asked_for(&mut asked, peer(0), at(41)));
        assert!(!asked_for(&mut asked, peer(ASKED_NEIGHBORS - 1), at(41)));
    }

    #[test]
    fn a_forgotten_peer_is_asked_for_again_at_once() {
        let mut asked = AskedNeighbors::default();
        let (peer, other) = (Ipv4Address::new(10, 0, 0, 7), Ipv4Address::new(10, 0, 0, 8));
        assert!(asked_for(&mut asked, peer, at(1)));
        assert!(asked_for(&mut asked, other, at(1)));
        asked.forget(peer);
        assert!(asked_for(&mut asked, peer, at(2)));
        assert!(!asked_for(&mut asked, other, at(2)));
    }

    /// Frames in and out of a node, as a device.
    #[derive(Default)]
    struct Wire {
        inbox: VecDeque<Vec<u8>>,
        sent: Vec<Vec<u8>>,
    }

    struct Rx(Vec<u8>);
    struct Tx<'a>(&'a mut Vec<Vec<u8>>);

    impl RxToken for Rx {
        fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
            f(&self.0)
        }
    }

    impl TxToken for Tx<'_> {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
            let mut frame = std::vec![0u8; len];
            let result = f(&mut frame);
            self.0.push(frame);
            result
        }
    }

    impl Device for Wire {
        type RxToken<'a> = Rx;
        type TxToken<'a> = Tx<'a>;

        fn receive(&mut self, _: NetInstant) -> Option<(Rx, Tx<'_>)> {
            let frame = self.inbox.pop_front()?;
            Some((Rx(frame), Tx(&mut self.sent)))
        }

        fn transmit(&mut self, _: NetInstant) -> Option<Tx<'_>> {
            Some(Tx(&mut self.sent))
        }

        fn capabilities(&self) -> DeviceCapabilities {
            let mut caps = DeviceCapabilities::default();
            caps.medium = Medium::Ethernet;
            caps.max_transmission_unit = 1514;
            caps
        }
    }

    const OWN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x09];

    /// 10.0.0.9 (02:00:00:00:00:09) asks who has 10.0.0.5, to everyone.
    const OVERHEARD: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x09, 0x08, 0x06, //
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, //
        0x02, 0x00, 0x00, 0x00, 0x00, 0x09, 10, 0, 0, 9, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 5,
    ];

    fn node() -> (Interface, Wire) {
        let mut wire = Wire::default();
        let config = Config::new(EthernetAddress(OWN_MAC).into());
        let mut iface = Interface::new(config, &mut wire, at(0));
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::v4(10, 0, 0, 2), 24));
        });
        (iface, wire)
    }

    /// Hears `OVERHEARD` through `Overhearing` (knowing 10.0.0.9 or not), then connects to
    /// 10.0.0.9 and returns what the node sent, and where the fetch driver would send its
    /// ARP request.
    fn overhear_then_connect(known: bool) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, Option<EthernetAddress>) {
        let (mut iface, mut wire) = node();
        let mut sockets = SocketSet::new(Vec::new());
        let socket = tcp::Socket::new(
            tcp::SocketBuffer::new(std::vec![0u8; 1024]),
            tcp::SocketBuffer::new(std::vec![0u8; 1024]),
        );
        let handle = sockets.add(socket);
        let mut asked = AskedNeighbors::default();
        let knows = move |ip: [u8; 4]| known && ip == [10, 0, 0, 9];
        wire.inbox.push_back(OVERHEARD.to_vec());
        {
            let mut device = Overhearing::new(&mut wire, &iface, &mut asked, &knows);
            iface.poll(at(1), &mut device, &mut sockets);
        }
        let on_hearing = core::mem::take(&mut wire.sent);
        let remote = IpEndpoint::new(IpAddress::v4(10, 0, 0, 9), 8888);
        let connected =
            sockets
                .get_mut::<tcp::Socket>(handle)
                .connect(iface.context(), remote, 49152);
        assert!(connected.is_ok());
        iface.poll(at(1), &mut wire, &mut sockets);
        let ask_to = asked.first_ask(Ipv4Address::new(10, 0, 0, 9), at(2));
        (on_hearing, wire.sent, ask_to)
    }

    #[test]
    fn an_overheard_request_from_a_known_peer_teaches_its_address() {
        let (on_hearing, on_connect, ask_to) = overhear_then_connect(true);
        // Nothing answers the rewritten request...
        assert!(on_hearing.is_empty());
        // ...and the SYN goes straight to the peer's address: no ARP request first.
        let first = on_connect.first().expect("a frame");
        let frame = EthernetFrame::new_checked(first.as_slice()).expect("ethernet");
        assert_eq!(frame.dst_addr(), EthernetAddress(PEER_MAC));
        assert_eq!(frame.ethertype(), EthernetProtocol::Ipv4);
        // The fetch driver's request, which tells the peer this node's address, goes to the
        // peer alone: no broadcast.
        assert_eq!(ask_to, Some(EthernetAddress(PEER_MAC)));
    }

    #[test]
    fn a_request_from_a_stranger_is_not_learnt() {
        let (on_hearing, on_connect, ask_to) = overhear_then_connect(false);
        assert!(on_hearing.is_empty());
        let first = on_connect.first().expect("a frame");
        let frame = EthernetFrame::new_checked(first.as_slice()).expect("ethernet");
        assert_eq!(frame.dst_addr(), EthernetAddress::BROADCAST);
        assert_eq!(frame.ethertype(), EthernetProtocol::Arp);
        assert_eq!(ask_to, Some(EthernetAddress::BROADCAST));
    }

    #[test]
    fn a_request_for_this_node_is_answered_and_recorded() {
        let (mut iface, mut wire) = node();
        let mut sockets = SocketSet::new(Vec::new());
        let mut asked = AskedNeighbors::default();
        let mut for_us = OVERHEARD;
        for_us[41] = 2;
        wire.inbox.push_back(for_us.to_vec());
        let knows = |ip: [u8; 4]| ip == [10, 0, 0, 9];
        {
            let mut device = Overhearing::new(&mut wire, &iface, &mut asked, &knows);
            iface.poll(at(1), &mut device, &mut sockets);
        }
        let reply = wire.sent.first().expect("an ARP reply");
        assert_eq!(&reply[..6], &PEER_MAC);
        assert_eq!(&reply[20..22], &[0x00, 0x02]);
        assert!(!asked_for(&mut asked, Ipv4Address::new(10, 0, 0, 9), at(2)));
    }

    #[test]
    fn other_frames_pass_unchanged() {
        assert_eq!(
            arp_request(&OVERHEARD[..41], Ipv4Address::new(10, 0, 0, 2)),
            None
        );
        let mut reply = OVERHEARD;
        reply[21] = 2;
        assert_eq!(arp_request(&reply, Ipv4Address::new(10, 0, 0, 2)), None);
        let mut own = OVERHEARD;
        own[28..32].copy_from_slice(&[10, 0, 0, 2]);
        assert_eq!(arp_request(&own, Ipv4Address::new(10, 0, 0, 2)), None);
        assert_eq!(
            arp_request(&OVERHEARD, Ipv4Address::new(10, 0, 0, 2)),
            Some((
                (Ipv4Address::new(10, 0, 0, 9), EthernetAddress(PEER_MAC)),
                false
            ))
        );
    }
}
