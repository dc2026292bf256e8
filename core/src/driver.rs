//! Serving the protocol on a pool of smoltcp TCP sockets: the code firmware and host-sim share.
//!
//! smoltcp has no accept backlog: a socket in `Listen` takes one connection, and a SYN that
//! finds no listener is reset. So the pool keeps every socket that is not serving listening,
//! and serves at most `N - 2` connections at once: at least two sockets listen at all times,
//! so a client connecting while another connection closes is not turned away. A connection
//! beyond that limit gets an Error saying the server is busy and is closed.
//!
//! Bytes move between the sessions and the sockets' own buffers through smoltcp's in-place
//! `recv`/`send` closures: block data is read from the store straight into the transmit buffer.

pub use crate::server::Ended;
use crate::server::{CloseReason, ServerConfig, ServerSession, SessionEvent, busy_error};
use crate::time::{Duration, Instant};
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as NetInstant;
use smoltcp::wire::{IpAddress, IpEndpoint};

/// Sockets that always listen; the rest serve.
pub const LISTENERS: usize = 2;

/// How long a connection refused as busy may take to close before it is reset.
const BUSY_LINGER: Duration = Duration::from_millis(1000);
/// How long a served connection may be quiet before a TCP keep-alive probe asks whether the
/// client is still there.
const KEEP_ALIVE: smoltcp::time::Duration = smoltcp::time::Duration::from_millis(1000);

/// What the driver saw, for the caller's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DriverEvent {
    /// A connection was accepted and its session started.
    Connected {
        /// Index of the socket in the pool, `0..N`.
        slot: usize,
        /// The client's address and port, as smoltcp knows it.
        remote: Option<IpEndpoint>,
    },
    /// An event of the session serving a connection.
    Session {
        /// Index of the socket in the pool, `0..N`.
        slot: usize,
        /// What the session reported.
        event: SessionEvent,
    },
    /// A connection beyond the limit, told the server is busy and closed.
    Busy {
        /// The client's address and port, as smoltcp knows it.
        remote: Option<IpEndpoint>,
    },
    /// A served connection ended; its socket listens again once the connection is over.
    Closed {
        /// Index of the socket in the pool, `0..N`.
        slot: usize,
        /// Why it ended.
        ended: Ended,
    },
}

impl DriverEvent {
    /// The IPv4 address of the client of a connection accepted or refused as busy, which a
    /// node that fetches too may learn as a peer ([`crate::fetch::Fetcher::client_seen`]).
    pub fn client_ipv4(&self) -> Option<[u8; 4]> {
        let (Self::Connected { remote, .. } | Self::Busy { remote }) = self else {
            return None;
        };
        match remote.as_ref()?.addr {
            IpAddress::Ipv4(ip) => Some(ip.octets()),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
}

/// The receive and transmit buffers of one socket, owned by the caller (static arrays on
/// firmware). The server only receives requests of at most 5 bytes: a small receive buffer
/// suffices, while the transmit buffer bounds how much block data is in flight.
pub struct SocketBuffers<'a> {
    /// Receive buffer: requests from the client.
    pub rx: &'a mut [u8],
    /// Transmit buffer: responses and block data on their way out.
    pub tx: &'a mut [u8],
}

#[allow(
    clippy::large_enum_variant,
    reason = "no heap to box into: every slot has room for a session, as it had with an Option"
)]
enum SlotState<'a> {
    /// Listening, or not yet re-armed.
    Idle,
    Serving(ServerSession<'a>),
    /// Closed by us (or refused as busy); waits for the connection to be over, and is
    /// reset at this deadline if the peer has not finished closing by then, so a peer that
    /// never closes cannot hold a socket of the pool.
    Draining(Instant),
}

struct Slot<'a> {
    handle: SocketHandle,
    state: SlotState<'a>,
    /// When its current connection began to be served.
    served_since: Instant,
}

/// Times a client is turned away as busy before the server makes room for it (see
/// [`Server::set_turns`]).
pub const TURN_AFTER_REFUSALS: u8 = 4;

/// Clients turned away as busy, and how often, since the server last made room for one.
type Refused = heapless::Vec<([u8; 4], u8), 8>;

/// A pool of `N` TCP sockets serving the protocol on one port.
pub struct Server<'a, const N: usize> {
    config: ServerConfig<'a>,
    port: u16,
    /// Connections served at once, at most `N - LISTENERS`.
    limit: usize,
    slots: [Slot<'a>; N],
    /// At most one turn this often; `None`: no turns.
    turn_every: Option<Duration>,
    next_turn: Instant,
    refused: Refused,
}

/// Protocol time from the network stack's clock.
pub(crate) fn protocol_time(now: NetInstant) -> Instant {
    Instant::from_millis(u64::try_from(now.total_millis()).unwrap_or(0))
}

/// The network stack's clock at a protocol time.
pub(crate) fn network_time(at: Instant) -> NetInstant {
    NetInstant::from_millis(i64::try_from(at.millis()).unwrap_or(i64::MAX))
}

impl<'a, const N: usize> Server<'a, N> {
    /// Adds `N` sockets built on `buffers` to `sockets`, all listening on `port`.
    /// `N` must be at least 3 (two listeners and one connection); smaller pools serve nothing.
    pub fn new(
        config: ServerConfig<'a>,
        port: u16,
        sockets: &mut SocketSet<'a>,
        buffers: [SocketBuffers<'a>; N],
    ) -> Self {
        let slots = buffers.map(|buffers| {
            let mut socket = tcp::Socket::new(
                tcp::SocketBuffer::new(buffers.rx),
                tcp::SocketBuffer::new(buffers.tx),
            );
            // Responses are written whole; waiting to coalesce small ones only adds delay.
            socket.set_nagle_enabled(false);
            // A client that went away without its reset arriving (a lost frame) would hold the
            // slot until the idle timeout; a probe on a quiet connection draws the reset
            // from the client's stack, which has no such connection any more.
            socket.set_keep_alive(Some(KEEP_ALIVE));
            Slot {
                handle: sockets.add(socket),
                state: SlotState::Idle,
                served_since: Instant::from_millis(0),
            }
        });
        let mut server = Self {
            config,
            port,
            limit: N.saturating_sub(LISTENERS),
            slots,
            turn_every: None,
            next_turn: Instant::from_millis(0),
            refused: Refused::new(),
        };
        for slot in &mut server.slots {
            let _ = sockets.get_mut::<tcp::Socket>(slot.handle).listen(port);
        }
        server
    }

    /// Serves at most `limit` connections at once (never more than `N - 2`); the rest are told
    /// the server is busy.
    pub fn set_connection_limit(&mut self, limit: usize) {
        self.limit = limit.min(N.saturating_sub(LISTENERS));
    }

    /// Takes turns, at most one every `every`: a client turned away as busy
    /// [`TURN_AFTER_REFUSALS`] times makes the server close the connection it has served
    /// longest, so that the client's next try finds a listener (BitTorrent's optimistic
    /// unchoke, from the server's side). Without turns a node that joins or comes back while
    /// every peer serves its limit waits until some client leaves: in the fleet simulation
    /// such nodes verified nothing for 0.85 s, until the first nodes completed. `None` (the
    /// default): no turns.
    pub fn set_turns(&mut self, every: Option<Duration>) {
        self.turn_every = every;
    }

    /// The sockets' handles, for tuning them (congestion control, keep-alive ...).
    pub fn handles(&self) -> impl Iterator<Item = SocketHandle> + '_ {
        self.slots.iter().map(|slot| slot.handle)
    }

    /// Whether some connection is part-way through a Block List Response: a store that gains
    /// blocks must not change what it lists until this is false.
    pub fn listing(&self) -> bool {
        self.slots
            .iter()
            .any(|slot| matches!(&slot.state, SlotState::Serving(session) if session.listing()))
    }

    /// Connections being served now.
    pub fn serving(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| matches!(slot.state, SlotState::Serving(_)))
            .count()
    }

    /// Moves bytes between every socket and its session, opens sessions for new connections,
    /// closes ended ones and re-arms their sockets. Call after every interface poll, then poll
    /// the interface again to send what was queued. Returns when the driver next needs a poll
    /// even if no packet arrives.
    pub fn poll(
        &mut self,
        now: NetInstant,
        sockets: &mut SocketSet<'a>,
        on_event: &mut dyn FnMut(DriverEvent),
    ) -> Option<NetInstant> {
        let time = protocol_time(now);
        let limit = self.limit;
        let mut serving = self.serving();
        let mut next: Option<Instant> = None;
        let mut turn = false;
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let socket = sockets.get_mut::<tcp::Socket>(slot.handle);
            match slot.state {
                SlotState::Idle if connection_over(socket) => {
                    let _ = socket.listen(self.port);
                }
                SlotState::Idle
                    if socket.is_active() && socket.state() != tcp::State::SynReceived =>
                {
                    if serving >= limit {
                        let remote = socket.remote_endpoint();
                        on_event(DriverEvent::Busy { remote });
                        refuse_busy(socket);
                        slot.state = SlotState::Draining(time + BUSY_LINGER);
                        if let Some(every) = self.turn_every
                            && let Some(IpAddress::Ipv4(ip)) = remote.map(|r| r.addr)
                        {
                            turn |= count_refusal(&mut self.refused, ip.octets())
                                && time >= self.next_turn;
                            if turn {
                                self.next_turn = time + every;
                            }
                        }
                        continue;
                    }
                    serving += 1;
                    slot.served_since = time;
                    slot.state = SlotState::Serving(ServerSession::new(self.config, time));
                    on_event(DriverEvent::Connected {
                        slot: index,
                        remote: socket.remote_endpoint(),
                    });
                }
                SlotState::Draining(deadline)
                    if connection_over(socket)
                        || (socket.state() == tcp::State::Closed && time >= deadline) =>
                {
                    slot.state = SlotState::Idle;
                    let _ = socket.listen(self.port);
                }
                SlotState::Draining(deadline) => {
                    // TIME-WAIT would hold the socket for 10 s; with a pool this small the
                    // socket is worth more than the protection from stray old segments.
                    if time >= deadline || socket.state() == tcp::State::TimeWait {
                        // Its reset goes out on the next interface poll; re-armed after that.
                        socket.abort();
                    } else {
                        next = Some(next.map_or(deadline, |n| n.min(deadline)));
                    }
                }
                _ => {}
            }
            let SlotState::Serving(session) = &mut slot.state else {
                continue;
            };
            let ended = serve(session, socket, time, index, on_event);
            if let Some(ended) = ended {
                on_event(DriverEvent::Closed { slot: index, ended });
                slot.state = if connection_over(socket) {
                    let _ = socket.listen(self.port);
                    SlotState::Idle
                } else {
                    SlotState::Draining(time + self.config.idle_timeout)
                };
                serving = serving.saturating_sub(1);
                continue;
            }
            if let Some(at) = session.poll_at() {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        if turn {
            self.make_room(time, sockets, on_event);
        }
        next.map(network_time)
    }

    /// Closes the connection served longest (a turn): its socket listens again once the
    /// reset is out.
    fn make_room(
        &mut self,
        time: Instant,
        sockets: &mut SocketSet<'a>,
        on_event: &mut dyn FnMut(DriverEvent),
    ) {
        let longest = self
            .slots
            .iter_mut()
            .enumerate()
            .filter(|(_, slot)| matches!(slot.state, SlotState::Serving(_)))
            .min_by_key(|(_, slot)| slot.served_since);
        if let Some((index, slot)) = longest {
            sockets.get_mut::<tcp::Socket>(slot.handle).abort();
            slot.state = SlotState::Draining(time);
            on_event(DriverEvent::Closed {
                slot: index,
                ended: Ended::Turn,
            });
        }
    }
}

/// Counts a refusal of `ip`; true once it reaches [`TURN_AFTER_REFUSALS`], and then forgets
/// every count (the turn is taken for whoever asks next).
fn count_refusal(refused: &mut Refused, ip: [u8; 4]) -> bool {
    let count = match refused.iter_mut().find(|(known, _)| *known == ip) {
        Some((_, count)) => {
            *count = count.saturating_add(1);
            *count
        }
        None => {
            if refused.is_full() {
                refused.clear();
            }
            let _ = refused.push((ip, 1));
            1
        }
    };
    let due = count >= TURN_AFTER_REFUSALS;
    if due {
        refused.clear();
    }
    due
}

/// Whether the socket's last connection is over, so it may listen again. An aborted socket
/// is `Closed` at once but keeps its peer until the next interface poll sends the reset:
/// listening before that would forget the reset and leave the peer waiting on a dead
/// connection.
fn connection_over(socket: &tcp::Socket<'_>) -> bool {
    socket.state() == tcp::State::Closed && socket.remote_endpoint().is_none()
}

/// One round of moving bytes for one connection; `Some` once it has ended.
fn serve(
    session: &mut ServerSession<'_>,
    socket: &mut tcp::Socket<'_>,
    now: Instant,
    slot: usize,
    on_event: &mut dyn FnMut(DriverEvent),
) -> Option<Ended> {
    if !socket.is_open() || socket.state() == tcp::State::TimeWait {
        return Some(Ended::Peer);
    }
    // Two rounds each way: a ring buffer hands out its contiguous part first.
    for _ in 0..2 {
        if !(socket.can_recv() && session.wants_receive()) {
            break;
        }
        let _ = socket.recv(|received| {
            let used = session.receive(received, now, &mut |event| {
                on_event(DriverEvent::Session { slot, event })
            });
            (used, ())
        });
    }
    for _ in 0..2 {
        if !(socket.can_send() && session.wants_transmit()) {
            break;
        }
        let _ = socket.send(|space| (session.transmit(space, now), ()));
    }
    if let Some(reason) = session.poll_timeouts(now) {
        match reason {
            // The Error must reach the peer: close after it is sent.
            CloseReason::ProtocolError | CloseReason::NoFileYet | CloseReason::ListTooLong => {
                socket.close()
            }
            // Nobody is reading, or nothing correct can follow: drop the connection.
            CloseReason::IdleTimeout | CloseReason::StoreFailed | CloseReason::Broken => {
                socket.abort()
            }
        }
        return Some(Ended::Session(reason));
    }
    // The peer finished sending and has every answer: finish our side too.
    if !socket.may_recv() && !session.wants_transmit() {
        socket.close();
        return Some(Ended::Peer);
    }
    None
}

/// Tells a connection over the limit that the server is busy, and closes it.
fn refuse_busy(socket: &mut tcp::Socket<'_>) {
    let _ = socket.send_slice(&busy_error());
    socket.close();
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::SliceStore;
    use crate::client::{ClientEvent, ClientLimits, ClientSession};
    use crate::wire::Request;
    use smoltcp::iface::{Config, Interface, SocketStorage};
    use smoltcp::phy::{Loopback, Medium};
    use smoltcp::time::Duration as NetDuration;
    use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};
    use std::vec::Vec;

    /// An interface on smoltcp's loopback device with a served pool of 3 sockets (so one
    /// connection at a time) and room for client sockets.
    struct Net<'a> {
        device: Loopback,
        iface: Interface,
        sockets: SocketSet<'a>,
        server: Server<'a, 3>,
        now: NetInstant,
        events: Vec<DriverEvent>,
    }

    impl<'a> Net<'a> {
        fn new(store: &'a SliceStore<'a, 1>, storage: &'a mut [SocketStorage<'a>]) -> Self {
            let mut device = Loopback::new(Medium::Ethernet);
            let config = Config::new(EthernetAddress([2, 0, 0, 0, 0, 1]).into());
            let now = NetInstant::from_millis(0);
            let mut iface = Interface::new(config, &mut device, now);
            iface.update_ip_addrs(|addrs| {
                addrs
                    .push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8))
                    .unwrap();
            });
            let mut sockets = SocketSet::new(storage);
            let buffers = [(); 3].map(|()| SocketBuffers {
                rx: std::vec![0u8; 64].leak(),
                tx: std::vec![0u8; 4096].leak(),
            });
            let server = Server::new(ServerConfig::new(store, &[]), 8888, &mut sockets, buffers);
            Self {
                device,
                iface,
                sockets,
                server,
                now,
                events: Vec::new(),
            }
        }

        fn connect(&mut self, local_port: u16) -> SocketHandle {
            let socket = tcp::Socket::new(
                tcp::SocketBuffer::new(std::vec![0u8; 8192]),
                tcp::SocketBuffer::new(std::vec![0u8; 256]),
            );
            let handle = self.sockets.add(socket);
            let cx = self.iface.context();
            self.sockets
                .get_mut::<tcp::Socket>(handle)
                .connect(cx, (IpAddress::v4(127, 0, 0, 1), 8888), local_port)
                .unwrap();
            handle
        }

        /// Runs the network for `ms` milliseconds of simulated time.
        fn run(&mut self, ms: i64) {
            for _ in 0..ms {
                self.iface
                    .poll(self.now, &mut self.device, &mut self.sockets);
                let events = &mut self.events;
                self.server
                    .poll(self.now, &mut self.sockets, &mut |e| events.push(e));
                self.iface
                    .poll(self.now, &mut self.device, &mut self.sockets);
                self.now += NetDuration::from_millis(1);
            }
        }

        /// Sends `requests` on `client` and decodes what comes back until every one is answered
        /// or an Error arrives; returns the events as text.
        fn exchange(
            &mut self,
            client: SocketHandle,
            bytes: &[u8],
            requests: &[Request],
        ) -> Vec<std::string::String> {
            let mut decoder = ClientSession::<8>::new(ClientLimits::default());
            decoder.set_file_size(3000);
            for request in requests {
                decoder.send(*request, &mut [0u8; 8]).unwrap();
            }
            self.sockets
                .get_mut::<tcp::Socket>(client)
                .send_slice(bytes)
                .unwrap();
            let mut seen = Vec::new();
            for _ in 0..2000 {
                self.run(1);
                let socket = self.sockets.get_mut::<tcp::Socket>(client);
                let mut received = [0u8; 8192];
                let len = socket.recv_slice(&mut received).unwrap_or(0);
                let mut at = 0;
                while at < len {
                    let step = decoder.receive(&received[at..len]).unwrap();
                    at += step.consumed;
                    match step.event {
                        Some(ClientEvent::BlockData { data, .. }) => {
                            seen.push(std::format!("{} bytes", data.len()))
                        }
                        Some(event) => seen.push(std::format!("{event:?}")),
                        None => {}
                    }
                }
                if decoder.outstanding() == 0 || seen.iter().any(|s| s.starts_with("Error")) {
                    break;
                }
            }
            seen
        }
    }

    fn listening(net: &Net<'_>) -> usize {
        net.server
            .handles()
            .filter(|h| net.sockets.get::<tcp::Socket>(*h).state() == tcp::State::Listen)
            .count()
    }

    fn data() -> Vec<u8> {
        (0..3000u32).map(|i| i as u8).collect()
    }

    #[test]
    fn serves_requests_and_rearms_after_close() {
        let data = data();
        let store = SliceStore::<1>::new(&data).unwrap();
        let mut storage: [SocketStorage; 6] = Default::default();
        let mut net = Net::new(&store, &mut storage);
        for round in 0..3u16 {
            let client = net.connect(40000 + round);
            net.run(5);
            let seen = net.exchange(
                client,
                &[0x07, 0x04, 0x00, 0x00, 0x00, 0x02],
                &[Request::FileSize, Request::Block { start: 0, end: 2 }],
            );
            let total: usize = seen
                .iter()
                .filter_map(|s| s.strip_suffix(" bytes")?.parse::<usize>().ok())
                .sum();
            assert_eq!(
                seen.first().map(std::string::String::as_str),
                Some("FileSize(3000)")
            );
            assert_eq!(total, 3000, "{seen:?}");
            net.sockets.get_mut::<tcp::Socket>(client).close();
            net.run(50);
            net.sockets.remove(client);
            assert_eq!(net.server.serving(), 0, "round {round}: {:?}", net.events);
        }
        let connected = net
            .events
            .iter()
            .filter(|e| matches!(e, DriverEvent::Connected { .. }))
            .count();
        assert_eq!(connected, 3);
        // Each names its client, which a node that fetches too may learn as a peer.
        let clients: Vec<_> = net
            .events
            .iter()
            .filter_map(DriverEvent::client_ipv4)
            .collect();
        assert_eq!(clients, [[127, 0, 0, 1]; 3]);
    }

    #[test]
    fn a_bad_byte_gets_an_error_and_a_close() {
        let data = data();
        let store = SliceStore::<1>::new(&data).unwrap();
        let mut storage: [SocketStorage; 6] = Default::default();
        let mut net = Net::new(&store, &mut storage);
        let client = net.connect(40100);
        net.run(5);
        let seen = net.exchange(client, &[0x07, 0x42], &[Request::FileSize]);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(
            seen[1].starts_with("Error(\"unknown message type 0x42"),
            "{seen:?}"
        );
        net.run(50);
        assert!(
            !net.sockets.get_mut::<tcp::Socket>(client).may_recv(),
            "server closed its side"
        );
        assert!(
            net.events.contains(&DriverEvent::Closed {
                slot: 0,
                ended: Ended::Session(CloseReason::ProtocolError)
            }),
            "{:?}",
            net.events
        );
    }

    #[test]
    fn connections_over_the_limit_are_told_busy_and_two_sockets_keep_listening() {
        let data = data();
        let store = SliceStore::<1>::new(&data).unwrap();
        let mut storage: [SocketStorage; 6] = Default::default();
        let mut net = Net::new(&store, &mut storage);
        let first = net.connect(40200);
        net.run(5);
        assert_eq!(net.server.serving(), 1);
        let second = net.connect(40201);
        net.run(5);
        let seen = net.exchange(second, &[0x07], &[Request::FileSize]);
        assert_eq!(
            seen,
            ["Error(\"server busy: too many connections; try again later\")"]
        );
        // The refused client does not close: its socket is reclaimed within a second.
        net.run(1100);
        // The first connection is still served.
        assert_eq!(
            net.exchange(first, &[0x07], &[Request::FileSize]),
            ["FileSize(3000)"]
        );
        let listening = net
            .server
            .handles()
            .filter(|h| net.sockets.get::<tcp::Socket>(*h).state() == tcp::State::Listen)
            .count();
        net.run(50);
        assert!(listening >= 1);
        let listening = net
            .server
            .handles()
            .filter(|h| net.sockets.get::<tcp::Socket>(*h).state() == tcp::State::Listen)
            .count();
        assert_eq!(listening, 2, "{:?}", net.events);
    }

    /// Connects from `port`, and returns what a File Size Request gets (the client then
    /// resets the connection).
    fn try_once(net: &mut Net<'_>, port: u16) -> Vec<std::string::String> {
        let client = net.connect(port);
        net.run(5);
        let seen = net.exchange(client, &[0x07], &[Request::FileSize]);
        net.sockets.get_mut::<tcp::Socket>(client).abort();
        net.run(5);
        seen
    }

    #[test]
    fn a_client_turned_away_again_and_again_gets_a_turn() {
        let busy = ["Error(\"server busy: too many connections; try again later\")"];
        for turns in [false, true] {
            let data = data();
            let store = SliceStore::<1>::new(&data).unwrap();
            let mut storage: [SocketStorage; 12] = Default::default();
            let mut net = Net::new(&store, &mut storage);
            if turns {
                net.server.set_turns(Some(Duration::from_millis(250)));
            }
            let first = net.connect(40400);
            net.run(5);
            assert_eq!(net.server.serving(), 1);
            for attempt in 0..TURN_AFTER_REFUSALS {
                assert_eq!(try_once(&mut net, 40401 + u16::from(attempt)), busy);
            }
            if turns {
                // The longest-served connection made room (reset), and the next try is
                // served.
                assert!(net.events.iter().any(|e| matches!(
                    e,
                    DriverEvent::Closed {
                        ended: Ended::Turn,
                        ..
                    }
                )));
                assert!(!net.sockets.get::<tcp::Socket>(first).is_active());
                assert_eq!(try_once(&mut net, 40410), ["FileSize(3000)"]);
            } else {
                assert_eq!(
                    net.exchange(first, &[0x07], &[Request::FileSize]),
                    ["FileSize(3000)"]
                );
                assert_eq!(try_once(&mut net, 40410), busy);
            }
        }
    }

    #[test]
    fn two_connects_at_once_both_find_a_listener() {
        let data = data();
        let store = SliceStore::<1>::new(&data).unwrap();
        let mut storage: [SocketStorage; 6] = Default::default();
        let mut net = Net::new(&store, &mut storage);
        // Both SYNs arrive in one interface poll, before the driver can re-arm anything.
        let first = net.connect(40500);
        let second = net.connect(40501);
        net.run(5);
        // Neither was reset: the first is served, the second accepted, told busy and closed.
        assert_eq!(
            net.sockets.get::<tcp::Socket>(first).state(),
            tcp::State::Established
        );
        assert_eq!(
            net.sockets.get::<tcp::Socket>(second).state(),
            tcp::State::CloseWait
        );
        assert_eq!(
            net.exchange(first, &[0x07], &[Request::FileSize]),
            ["FileSize(3000)"]
        );
        assert_eq!(
            net.exchange(second, &[0x07], &[Request::FileSize]),
            ["Error(\"server busy: too many connections; try again later\")"]
        );
    }

    #[test]
    fn a_client_gone_without_its_reset_frees_its_slot_within_the_keep_alive() {
        let data = data();
        let store = SliceStore::<1>::new(&data).unwrap();
        let mut storage: [SocketStorage; 6] = Default::default();
        let mut net = Net::new(&store, &mut storage);
        let client = net.connect(40310);
        net.run(5);
        let seen = net.exchange(client, &[0x07], &[Request::FileSize]);
        assert_eq!(seen, ["FileSize(3000)"]);
        // Quiet, everything acknowledged.
        net.run(50);
        assert_eq!(net.server.serving(), 1);
        // The client's stack forgets the connection and no reset reaches the server (it was
        // lost, or the client rebooted): only the keep-alive probe draws one.
        net.sockets.remove(client);
        net.run(800);
        assert_eq!(
            net.server.serving(),
            1,
            "a quiet second is not yet a dead client"
        );
        net.run(300);
        assert_eq!(net.server.serving(), 0, "{:?}", net.events);
        assert_eq!(listening(&net), 3);
    }

    #[test]
    fn idle_connections_are_dropped() {
        let data = data();
        let store = SliceStore::<1>::new(&data).unwrap();
        let mut storage: [SocketStorage; 6] = Default::default();
        let mut net = Net::new(&store, &mut storage);
        let client = net.connect(40300);
        net.run(5);
        net.sockets
            .get_mut::<tcp::Socket>(client)
            .send_slice(&[0x04, 0x00])
            .unwrap();
        // Long enough for the server's delayed ACK: the client has nothing left to send.
        net.run(50);
        let deadline = net
            .server
            .poll(net.now, &mut net.sockets, &mut |_| {})
            .unwrap();
        // Half a request is not progress: the deadline counts from the connection's start.
        assert!(
            (30_000..30_010).contains(&deadline.total_millis()),
            "{deadline}"
        );
        net.now = deadline;
        net.run(5);
        assert!(
            net.events.iter().any(|e| matches!(
                e,
                DriverEvent::Closed {
                    ended: Ended::Session(CloseReason::IdleTimeout),
                    ..
                }
            )),
            "{:?}",
            net.events
        );
        assert_eq!(net.server.serving(), 0);
        // The client learns at once: the abort's reset went out before the socket listened
        // again.
        assert_eq!(
            net.sockets.get::<tcp::Socket>(client).state(),
            tcp::State::Closed
        );
        assert_eq!(listening(&net), 3, "{:?}", net.events);
    }

    #[test]
    fn a_socket_closed_by_the_server_listens_again_without_waiting_out_time_wait() {
        let data = data();
        let store = SliceStore::<1>::new(&data).unwrap();
        let mut storage: [SocketStorage; 6] = Default::default();
        let mut net = Net::new(&store, &mut storage);
        let client = net.connect(40400);
        net.run(5);
        let seen = net.exchange(client, &[0x07, 0x42], &[Request::FileSize]);
        assert_eq!(seen.len(), 2, "{seen:?}");
        // The server's FIN arrives and is acknowledged before the client closes: the server
        // side ends in TIME-WAIT.
        net.run(50);
        net.sockets.get_mut::<tcp::Socket>(client).close();
        // Far less than smoltcp's 10 s TIME-WAIT.
        net.run(100);
        assert_eq!(listening(&net), 3, "{:?}", net.events);
    }
}
