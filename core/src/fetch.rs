//! The fetcher: fills a [`FlashStore`] from peers, sans-IO like the sessions.
//!
//! It keeps a table of peers (given, and found through Peer List Responses), asks the caller to
//! open connections to them ([`Fetcher::poll_connect`]), and on each connection runs a
//! [`ClientSession`]: it learns the file size, peers and held blocks, fetches the manifest in
//! parts from one peer and checks it against the manifest digest, then requests the blocks it
//! lacks from every connected peer at once, rarest first. Each block is hashed as it streams
//! in and written to the store only when its digest matches; a peer that sends a bad block, a
//! bad manifest, a wrong file size or garbage is dropped for good, and one that stalls, refuses
//! or goes away is retried later while its blocks go to others. When the connections would
//! otherwise idle near the end, blocks already requested elsewhere are requested again
//! (BitTorrent's endgame), so one slow peer does not hold up completion.
//!
//! The caller moves bytes ([`Fetcher::transmit`], [`Fetcher::receive`]), reports connection
//! state ([`Fetcher::connected`], [`Fetcher::closed`]), closes what [`Fetcher::wants_close`]
//! names, and calls [`Fetcher::poll`] at [`Fetcher::poll_at`]. Nothing here reads a clock or
//! a socket.

use crate::DEFAULT_PORT;
use crate::bitmap::BlockBitmap;
use crate::client::{ClientError, ClientEvent, ClientLimits, ClientSession};
use crate::flash_store::{FillError, FlashStore};
use crate::geometry::Geometry;
use crate::manifest::{BlockAssembler, ManifestHasher};
use crate::ranges::BlockRange;
use crate::store::BlockStore;
use crate::time::{Duration, Instant};
use crate::wire::{PeerAddr, Request};
use core::fmt;
use embedded_storage::nor_flash::NorFlash;

/// Requests a connection may have outstanding (pipelined).
pub const PIPELINE: usize = 8;
/// Probes a silent connection sends (see [`FetchConfig::probe_after`]): smoltcp resends
/// after three duplicate ACKs without payload.
pub const PROBES: u8 = 3;
/// Digests asked for in one Digest Request: 4 KiB of response.
const MANIFEST_PART: u32 = 128;
/// How many candidate blocks the rarest-first choice looks at before taking the rarest seen.
const SCAN_WINDOW: u32 = 512;
/// A busy connection asks for its peer's Block List again every this many refresh intervals
/// (an idle one every interval): what a peer holds changes while its blocks keep coming
/// (64 simulated nodes: 8 intervals 2.07x t_min, 2 intervals 2.00x).
const BUSY_REFRESH_FACTOR: u64 = 2;
/// Candidates held by one peer only that the choice compares before taking the best.
const TIE_WINDOW: u32 = 32;

/// A fixed pseudo-random order of blocks, different for each `salt` (a 32-bit mix).
fn tie_break(block: u16, salt: u32) -> u32 {
    let mut x = u32::from(block) ^ salt.rotate_left(16);
    x = (x ^ (x >> 16)).wrapping_mul(0x7feb_352d);
    x = (x ^ (x >> 15)).wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// How the fetcher paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FetchConfig {
    /// A connection with requests outstanding that receives nothing for this long is closed
    /// and its blocks go to other peers (also the time a connection may take to open).
    pub stall_timeout: Duration,
    /// A peer that closed, stalled or refused a connection is tried again after this long,
    /// doubled for each failure in a row (at most 8 times).
    pub retry_after: Duration,
    /// How often an otherwise idle connection asks its peer's Block List again: a peer that
    /// is itself filling gains blocks.
    pub refresh: Duration,
    /// A connection whose peer has had nothing this node wants for this long is closed when
    /// another known peer waits to be tried, so the connection goes to a peer that may have
    /// something (the peer is tried again later).
    pub rotate_after: Duration,
    /// How often, while every connection is in use and another known peer waits, the one
    /// that verified fewest blocks since the last look is closed for it (BitTorrent's
    /// optimistic unchoke): otherwise connections stay with the first peers found, and nodes
    /// found later are never asked (64 simulated nodes: 14 served nothing).
    pub review_every: Duration,
    /// A connection with Block, Digest or Block List Requests outstanding that receives
    /// nothing for this long lets the other connections ask for those blocks too (and another
    /// connection for the rest of the manifest), and a quarter of it later makes way for a
    /// waiting peer: a lost segment costs smoltcp at least its 1 s minimum retransmission
    /// timeout, which must not hold blocks that other peers could send now. The first copy
    /// verified wins.
    pub block_lag: Duration,
    /// How long a connection may take to open before it makes way for a waiting peer: an
    /// answer to a SYN takes a round trip, and a lost SYN, SYN-ACK or ARP reply is retried by
    /// smoltcp only after a second. Longer than the block lag where queues are deep: among
    /// 256 simulated nodes, a quarter of a 200 ms lag gave up on connections that were merely
    /// slow (2.5x -> 3.9x t_min), and so did 25 ms with a 50 ms lag (2.3x -> 3.7x).
    pub open_lag: Duration,
    /// A connection awaiting data that receives nothing for this long sends [`PROBES`] File
    /// Size Requests, a millisecond apart, whose answers nobody waits for. If a request of
    /// this connection was lost, they reach the peer after the hole, it acknowledges each
    /// again, and those three duplicate ACKs make smoltcp here resend the request at once
    /// instead of after its 1 s minimum retransmission timeout. (They do not rescue the lost
    /// tail of an answer: each probe carries data, which resets the peer's count of this
    /// end's duplicate ACKs; the block lag covers that.) Half the block lag: the resent
    /// request is answered before the lag gives the connection's blocks away. `None`: no
    /// probes.
    pub probe_after: Option<Duration>,
    /// Most blocks asked for in one Block Request, and the size of the aligned pieces the
    /// block choice takes whole (so that requests can ask for that many at once).
    pub max_run: u16,
    /// Block Requests a connection keeps outstanding (at most [`PIPELINE`] - 2: the rest of
    /// the pipeline is for the manifest and list refreshes). With `max_run`, what is in flight
    /// per peer: match it to the receive window.
    pub requests: usize,
    /// This node's own address, never connected to even if a peer lists it.
    pub own_addr: Option<PeerAddr>,
    /// Where the search for blocks starts, so nodes filling at once start apart.
    pub start_hint: u32,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            stall_timeout: Duration::from_millis(2000),
            retry_after: Duration::from_millis(1000),
            refresh: Duration::from_millis(500),
            rotate_after: Duration::from_millis(2000),
            review_every: Duration::from_millis(5000),
            block_lag: Duration::from_millis(500),
            open_lag: Duration::from_millis(250),
            probe_after: Some(Duration::from_millis(250)),
            max_run: 4,
            requests: 4,
            own_addr: None,
            start_hint: 0,
        }
    }
}

/// Why a peer was dropped for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DropReason {
    /// It sent a block whose SHA-256 is not the manifest's.
    BadBlock(u16),
    /// The size and digests it sent do not hash to the manifest digest.
    BadManifest,
    /// Its File Size Response disagrees with the verified manifest.
    WrongFileSize(u32),
    /// It claims a file larger than this node can store.
    TooLarge(u32),
    /// It broke the protocol.
    Protocol(ClientError),
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadBlock(block) => write!(f, "block {block} does not match its digest"),
            Self::BadManifest => f.write_str("its manifest does not match the manifest digest"),
            Self::WrongFileSize(size) => {
                write!(f, "it claims {size} bytes, not the manifest's file size")
            }
            Self::TooLarge(size) => write!(f, "it claims {size} bytes, more than fits here"),
            Self::Protocol(error) => write!(f, "protocol violation: {error}"),
        }
    }
}

/// What the fetcher did, for the caller's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FetchEvent {
    /// A new peer, from a Peer List Response.
    PeerFound(PeerAddr),
    /// The manifest hashed to the manifest digest; blocks can be fetched.
    ManifestVerified {
        /// The file size in bytes, now trusted.
        file_size: u32,
        /// The peer the manifest was fetched from.
        from: PeerAddr,
    },
    /// A peer refused Digest Requests or predates them; blocks may still come from it.
    NoDigests(PeerAddr),
    /// The peer sending the manifest lagged (a lost segment waits out smoltcp's 1 s
    /// retransmission timeout): the rest of the digests are asked of another.
    ManifestMoved {
        /// The peer that lagged.
        from: PeerAddr,
        /// The peer asked for the rest.
        to: PeerAddr,
    },
    /// A block matched its manifest digest and was written to the store.
    BlockVerified {
        /// The block number.
        block: u16,
        /// The peer it came from.
        from: PeerAddr,
    },
    /// A peer was dropped: it is not asked again.
    PeerDropped {
        /// The dropped peer.
        peer: PeerAddr,
        /// What it did wrong.
        reason: DropReason,
    },
    /// A connection with requests outstanding received nothing for the stall timeout.
    Stalled(PeerAddr),
    /// The peer sent an Error (busy, say) and closed.
    PeerError(PeerAddr),
    /// Writing to the store failed; the block or manifest is fetched again.
    StoreFailed(FillError),
    /// Every block is verified and stored, this long after the manifest was verified (or, for
    /// a store that resumed with its manifest, after the fetcher started).
    Complete {
        /// Time from the manifest's verification (or the start) to the last block.
        fill_time: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerState {
    /// Not connected; may be tried from `retry_at`.
    Idle {
        retry_at: Instant,
    },
    /// Connected, or connecting, on this slot.
    Busy(usize),
    Dropped,
}

struct Peer<const B: usize> {
    addr: PeerAddr,
    state: PeerState,
    has: BlockBitmap<B>,
    /// A whole Block List Response has filled `has`.
    list_known: bool,
    claimed_size: Option<u32>,
    no_digests: bool,
    failures: u32,
}

/// What a sent request asked for, mirroring the session's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Info,
    BlockList,
    Digests,
    Blocks(BlockRange),
}

struct Conn<const K: usize> {
    peer: usize,
    open: bool,
    close: bool,
    session: ClientSession<PIPELINE>,
    asked: heapless::Deque<Asked, PIPELINE>,
    /// Encoded requests not yet handed to the caller.
    out: heapless::Vec<u8, { PIPELINE * Request::MAX_LEN }>,
    /// The block being received, hashed as it arrives.
    assembler: BlockAssembler<K>,
    since: Instant,
    listed_at: Instant,
    /// When a block was last asked of this peer (or the connection opened).
    useful_at: Instant,
    greeted: bool,
    /// Blocks verified from this connection since the fetcher last reviewed them.
    verified: u32,
    /// Nothing arrived for the block lag: its outstanding blocks are offered to the others.
    lagging: bool,
    /// Closed to make way for a waiting peer: not the peer's failure.
    made_way: bool,
    /// Probes sent since anything last arrived, and when the last one was.
    probes: u8,
    probed_at: Instant,
}

impl<const K: usize> Conn<K> {
    fn new(peer: usize, now: Instant) -> Self {
        Self {
            peer,
            open: false,
            close: false,
            session: ClientSession::new(ClientLimits::default()),
            asked: heapless::Deque::new(),
            out: heapless::Vec::new(),
            assembler: BlockAssembler::new(),
            since: now,
            listed_at: now,
            useful_at: now,
            greeted: false,
            verified: 0,
            lagging: false,
            made_way: false,
            probes: 0,
            probed_at: now,
        }
    }

    fn has_room(&self) -> bool {
        !self.asked.is_full() && self.out.capacity() - self.out.len() >= Request::MAX_LEN
    }

    fn ask(&mut self, request: Request, asked: Asked) -> bool {
        let mut buf = [0u8; Request::MAX_LEN];
        let Ok(len) = self.session.send(request, &mut buf) else {
            return false;
        };
        let sent = self
            .out
            .extend_from_slice(buf.get(..len).unwrap_or_default())
            .is_ok()
            && self.asked.push_back(asked).is_ok();
        if !sent {
            // The session took a request this connection cannot track: nothing after it can
            // be matched up, so end the connection rather than guess.
            self.close = true;
        }
        sent
    }

    /// When to ask the peer's Block List again: after `refresh` when idle, and less often
    /// while blocks are still coming (each listing costs the peer upload, four bytes a range,
    /// and a filling peer's held set has many ranges).
    fn list_due(&self, refresh: Duration) -> Instant {
        if self.block_requests() == 0 {
            self.listed_at + refresh
        } else {
            self.listed_at
                + Duration::from_millis(refresh.millis().saturating_mul(BUSY_REFRESH_FACTOR))
        }
    }

    /// When the block lag next acts on this connection: it starts lagging (its blocks are
    /// offered to the others), or, lagging, makes way for a waiting peer. `None` while no
    /// Block, Digest or Block List Request is outstanding. A lost Block List answer (or
    /// request) on a connection with nothing else asked would otherwise hold it for the
    /// retransmission timeout: one of 64 simulated nodes under 1 % loss sat 0.9 s that way.
    fn lag_deadline(&self, lag: Duration) -> Option<Instant> {
        self.awaits_data().then(|| {
            if self.lagging {
                self.since + lag + Duration::from_millis(lag.millis() / 4)
            } else {
                self.since + lag
            }
        })
    }

    /// Whether it is open with a Block, Digest or Block List Request outstanding: what the
    /// block lag and the probes watch.
    fn awaits_data(&self) -> bool {
        self.open
            && self
                .asked
                .iter()
                .any(|a| matches!(a, Asked::Blocks(_) | Asked::Digests | Asked::BlockList))
    }

    /// When this connection sends its next probe: `None` unless it awaits data and has
    /// probes left.
    fn probe_due(&self, probe_after: Option<Duration>) -> Option<Instant> {
        let after = probe_after?;
        if self.probes >= PROBES || !self.awaits_data() {
            return None;
        }
        let first = self.since + after;
        Some(if self.probes == 0 {
            first
        } else {
            first.max(self.probed_at + Duration::from_millis(1))
        })
    }

    fn block_requests(&self) -> usize {
        self.asked
            .iter()
            .filter(|a| matches!(a, Asked::Blocks(_)))
            .count()
    }

    fn asked_for(&self, block: u16) -> bool {
        self.asked
            .iter()
            .any(|a| matches!(a, Asked::Blocks(r) if r.contains(block)))
    }
}

enum Manifest {
    Unknown,
    Fetching {
        slot: usize,
        file_size: u32,
        hasher: ManifestHasher,
        requested: u32,
        /// The digests came from more than one peer (the first source lagged): a manifest
        /// that does not verify then names no liar, and is fetched again from the start.
        mixed: bool,
    },
    Verified,
}

/// A one-line outcome of a response piece, owned so the session can be borrowed again.
enum Seen {
    Nothing,
    FileSize(u32),
    Peer(PeerAddr),
    RangeCount,
    Range(BlockRange),
    Data { offset: u32, len: usize },
    Digest(u16, crate::manifest::Digest),
    Failure,
    Error,
}

/// Fills a store with up to `8 * B` blocks of up to `K` bytes, from at most `P` known peers
/// over at most `C` connections at once.
pub struct Fetcher<const P: usize, const C: usize, const B: usize, const K: usize> {
    config: FetchConfig,
    peers: heapless::Vec<Peer<B>, P>,
    conns: [Option<Conn<K>>; C],
    in_flight: BlockBitmap<B>,
    manifest: Manifest,
    cursor: u32,
    /// Connections opened so far, which varies the choice of peer.
    connects: u32,
    /// When the slowest connection is next considered for replacement.
    next_review: Instant,
    complete: bool,
    /// The time of the latest call, for the events that report durations.
    now: Instant,
    /// When blocks could first be fetched: the manifest verified, or found in the store.
    fill_started: Option<Instant>,
}

impl<const P: usize, const C: usize, const B: usize, const K: usize> Fetcher<P, C, B, K> {
    /// A fetcher that starts from `peers`.
    pub fn new(config: FetchConfig, peers: &[PeerAddr], now: Instant) -> Self {
        let mut fetcher = Self {
            config,
            peers: heapless::Vec::new(),
            conns: core::array::from_fn(|_| None),
            in_flight: BlockBitmap::new(),
            manifest: Manifest::Unknown,
            cursor: config.start_hint,
            connects: 0,
            next_review: now + config.review_every,
            complete: false,
            now,
            fill_started: None,
        };
        for &peer in peers {
            fetcher.add_peer(peer, now);
        }
        fetcher
    }

    /// Tells the fetcher this node's address once it is known (a board learns it by DHCP), so
    /// that it never connects to itself.
    pub fn set_own_addr(&mut self, addr: PeerAddr) {
        self.config.own_addr = Some(addr);
        for peer in self.peers.iter_mut().filter(|p| p.addr == addr) {
            peer.state = PeerState::Dropped;
        }
    }

    /// Whether a peer at `ip` (any port) is known and not dropped: one whose network address
    /// is worth remembering.
    pub fn knows_host(&self, ip: [u8; 4]) -> bool {
        self.peers
            .iter()
            .any(|p| p.addr.ip == ip && p.state != PeerState::Dropped)
    }

    /// Adds a peer to try; `false` if it is already known, unusable, this node, or the table
    /// is full.
    pub fn add_peer(&mut self, addr: PeerAddr, now: Instant) -> bool {
        if !addr.is_usable()
            || Some(addr) == self.config.own_addr
            || self.peers.iter().any(|p| p.addr == addr)
        {
            return false;
        }
        self.peers
            .push(Peer {
                addr,
                state: PeerState::Idle { retry_at: now },
                has: BlockBitmap::new(),
                list_known: false,
                claimed_size: None,
                no_digests: false,
                failures: 0,
            })
            .is_ok()
    }

    /// A client at `ip` connected to this node's server (or was refused as busy). Nodes serve
    /// on the protocol's port, so the client is most likely a peer too, and is added as one at
    /// [`DEFAULT_PORT`] (`false` if known, or no room). Peer Lists name only the peers each
    /// node was configured with: without this a node that no list names is never fetched
    /// from (among 64 simulated nodes, one served nobody for the whole run and three others
    /// one or two connections, 2.23x t_min; 1.87x with it). A client that serves nothing
    /// (p2p-fetch) only fails to connect, and is tried last from then on.
    pub fn client_seen(&mut self, ip: [u8; 4], now: Instant) -> bool {
        self.add_peer(PeerAddr::new(ip, DEFAULT_PORT), now)
    }

    /// Peers known, and of them how many are dropped for good.
    pub fn peer_counts(&self) -> (usize, usize) {
        let dropped = self
            .peers
            .iter()
            .filter(|p| p.state == PeerState::Dropped)
            .count();
        (self.peers.len(), dropped)
    }

    /// Whether every block is in the store.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The next connection to open, on a free slot: the slot and the peer. Report the outcome
    /// with [`connected`](Self::connected) or [`closed`](Self::closed).
    pub fn poll_connect(&mut self, now: Instant) -> Option<(usize, PeerAddr)> {
        if self.complete {
            return None;
        }
        let slot = self.conns.iter().position(Option::is_none)?;
        // Among the peers that failed least, a pseudo-random one, different at each connect:
        // taking the first listed made every node connect to the same few, and left others
        // with nobody to serve.
        self.connects = self.connects.wrapping_add(1);
        let salt = self.config.start_hint ^ self.connects.wrapping_mul(0x9e37_79b9);
        let (index, peer) = self
            .peers
            .iter_mut()
            .enumerate()
            .filter(|(_, p)| matches!(p.state, PeerState::Idle { retry_at } if retry_at <= now))
            .min_by_key(|(index, p)| (p.failures, tie_break(*index as u16, salt)))?;
        peer.state = PeerState::Busy(slot);
        let addr = peer.addr;
        if let Some(conn) = self.conns.get_mut(slot) {
            *conn = Some(Conn::new(index, now));
        }
        Some((slot, addr))
    }

    /// The connection on `slot` is established.
    pub fn connected(&mut self, slot: usize, now: Instant) {
        if let Some(conn) = self.conn_mut(slot) {
            conn.open = true;
            conn.since = now;
            conn.useful_at = now;
        }
    }

    /// The connection on `slot` is over (closed by either side, reset, or never opened). Its
    /// outstanding blocks go back to the pool.
    pub fn closed(&mut self, slot: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        for asked in &conn.asked {
            if let Asked::Blocks(range) = asked {
                (range.start()..=range.end()).for_each(|b| self.in_flight.remove(b));
            }
        }
        // Another connection may still have some of those blocks outstanding (endgame), unless
        // it lags and gave them up.
        for other in self.conns.iter().flatten().filter(|other| !other.lagging) {
            for asked in &other.asked {
                if let Asked::Blocks(range) = asked {
                    self.in_flight.insert_range(*range);
                }
            }
        }
        if matches!(self.manifest, Manifest::Fetching { slot: s, .. } if s == slot) {
            self.manifest = Manifest::Unknown;
        }
        if let Some(peer) = self.peers.get_mut(conn.peer)
            && peer.state != PeerState::Dropped
        {
            if (!conn.close || !conn.open) && !conn.made_way {
                peer.failures = peer.failures.saturating_add(1);
            }
            let backoff = self.config.retry_after.millis() << peer.failures.min(3);
            peer.state = PeerState::Idle {
                retry_at: now + Duration::from_millis(backoff),
            };
            peer.list_known = false;
        }
    }

    /// Whether the caller should close the connection on `slot` (after sending what
    /// [`transmit`](Self::transmit) wrote).
    pub fn wants_close(&self, slot: usize) -> bool {
        self.conn(slot).is_some_and(|conn| conn.close)
    }

    /// Writes requests for the connection on `slot` into `out`; returns the bytes written.
    pub fn transmit<F: NorFlash, const SB: usize>(
        &mut self,
        slot: usize,
        out: &mut [u8],
        now: Instant,
        store: &FlashStore<F, SB>,
    ) -> usize {
        self.plan(slot, now, store);
        let Some(conn) = self.conn_mut(slot) else {
            return 0;
        };
        let len = conn.out.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..len), conn.out.get(..len)) {
            dst.copy_from_slice(src);
        }
        // What was handed out leaves the front; the rest moves up, in order.
        conn.out.rotate_left(len);
        conn.out.truncate(conn.out.len() - len);
        len
    }

    /// Whether [`transmit`](Self::transmit) has bytes for `slot` now.
    pub fn wants_transmit<F: NorFlash, const SB: usize>(
        &mut self,
        slot: usize,
        now: Instant,
        store: &FlashStore<F, SB>,
    ) -> bool {
        self.plan(slot, now, store);
        self.conn(slot).is_some_and(|conn| !conn.out.is_empty())
    }

    /// Takes bytes received on `slot`; returns how many were used (all of them unless the
    /// connection is to be closed).
    pub fn receive<F: NorFlash, const SB: usize>(
        &mut self,
        slot: usize,
        input: &[u8],
        now: Instant,
        store: &FlashStore<F, SB>,
        on_event: &mut dyn FnMut(FetchEvent),
    ) -> usize {
        self.now = now;
        let mut used = 0;
        while used < input.len() {
            let Some(conn) = self.conn_mut(slot) else {
                return input.len();
            };
            if conn.close {
                return input.len();
            }
            let rest = input.get(used..).unwrap_or_default();
            let (consumed, seen, completed) = match conn.session.receive(rest) {
                Ok(step) => {
                    let seen = match step.event {
                        None => Seen::Nothing,
                        Some(ClientEvent::FileSize(size)) => Seen::FileSize(size),
                        Some(ClientEvent::Peer(peer)) => Seen::Peer(peer),
                        Some(ClientEvent::PeerCount(_)) => Seen::Nothing,
                        Some(ClientEvent::RangeCount(_)) => Seen::RangeCount,
                        Some(ClientEvent::Range(range)) => Seen::Range(range),
                        Some(ClientEvent::BlockData { offset, data }) => Seen::Data {
                            offset,
                            len: data.len(),
                        },
                        Some(ClientEvent::Digest { block, digest }) => Seen::Digest(block, digest),
                        Some(ClientEvent::BlockFailure(_)) => Seen::Failure,
                        Some(ClientEvent::Error(_)) => Seen::Error,
                    };
                    (step.consumed, seen, step.completed)
                }
                Err(error) => {
                    self.drop_peer(slot, DropReason::Protocol(error), on_event);
                    return input.len();
                }
            };
            if consumed > 0 {
                conn.since = now;
                conn.lagging = false;
                conn.probes = 0;
            }
            // Block data is the last `len` bytes of what the step consumed.
            let data = match seen {
                Seen::Data { len, .. } => rest
                    .get(consumed.saturating_sub(len)..consumed)
                    .unwrap_or_default(),
                _ => &[],
            };
            used += consumed;
            let refused = matches!(seen, Seen::Failure);
            self.take(slot, seen, data, now, store, on_event);
            if completed.is_some() {
                self.complete_request(slot, refused, store, on_event);
            }
            if consumed == 0 {
                break;
            }
        }
        used
    }

    /// Acts on timers: closes stalled connections. Call at [`poll_at`](Self::poll_at).
    pub fn poll<F: NorFlash, const SB: usize>(
        &mut self,
        now: Instant,
        store: &FlashStore<F, SB>,
        on_event: &mut dyn FnMut(FetchEvent),
    ) {
        self.now = now;
        if self.fill_started.is_none() && store.manifest_verified() {
            self.fill_started = Some(now);
        }
        self.check_complete(store, on_event);
        self.start_manifest(store, on_event);
        let stall = self.config.stall_timeout;
        let rotate = self.config.rotate_after;
        let waiting_peer = self
            .peers
            .iter()
            .any(|peer| matches!(peer.state, PeerState::Idle { retry_at } if retry_at <= now));
        for conn in self.conns.iter_mut().flatten() {
            // A connection not open after the open lag has lost its SYN, its SYN-ACK or the
            // ARP exchange before them, each of which smoltcp retries only after a second:
            // another peer is tried meanwhile (this one again after `retry_after`: a lost
            // frame is not the peer's failure).
            let opening_lags = !conn.open && now >= conn.since + self.config.open_lag;
            if opening_lags && waiting_peer && !conn.close {
                conn.close = true;
                conn.made_way = true;
                continue;
            }
            let idle = conn.open
                && conn
                    .asked
                    .iter()
                    .all(|asked| matches!(asked, Asked::Info | Asked::BlockList));
            if idle && waiting_peer && !conn.close && now >= conn.useful_at + rotate {
                // Not a failure: the peer simply has nothing for us now.
                conn.close = true;
                continue;
            }
            // A connection that lags twice the block lag (a retransmission timeout, most
            // likely) makes way for a waiting peer; not a failure either.
            let lagged_out = conn
                .lag_deadline(self.config.block_lag)
                .is_some_and(|at| now >= at);
            if conn.lagging && waiting_peer && !conn.close && lagged_out {
                conn.close = true;
                continue;
            }
            let waiting = !conn.open || !conn.asked.is_empty();
            if waiting && !conn.close && now >= conn.since + stall {
                conn.close = true;
                if let Some(peer) = self.peers.get_mut(conn.peer) {
                    peer.failures = peer.failures.saturating_add(1);
                    on_event(FetchEvent::Stalled(peer.addr));
                }
            }
        }
        if now >= self.next_review {
            self.next_review = now + self.config.review_every;
            self.replace_slowest(waiting_peer);
        }
        self.release_lagging(now, on_event);
    }

    /// Offers the outstanding blocks of every connection that received nothing for the block
    /// lag to the other connections.
    fn release_lagging(&mut self, now: Instant, on_event: &mut dyn FnMut(FetchEvent)) {
        let lag = self.config.block_lag;
        let mut lagging_manifest = None;
        for (slot, conn) in self.conns.iter_mut().enumerate() {
            let Some(conn) = conn.as_mut() else { continue };
            if !conn.close && !conn.lagging && conn.lag_deadline(lag).is_some_and(|at| now >= at) {
                conn.lagging = true;
                for asked in &conn.asked {
                    if let Asked::Blocks(range) = asked {
                        (range.start()..=range.end()).for_each(|b| self.in_flight.remove(b));
                    }
                }
                if matches!(self.manifest, Manifest::Fetching { slot: s, .. } if s == slot) {
                    lagging_manifest = Some(slot);
                }
            }
        }
        if let Some(slot) = lagging_manifest {
            self.move_manifest(slot, on_event);
        }
    }

    /// Open connections whose peers could send the manifest (they serve digests and claimed
    /// a file size), with that size: where a manifest starts, and where it moves on to.
    fn manifest_sources(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.conns.iter().enumerate().filter_map(|(slot, conn)| {
            let conn = conn.as_ref().filter(|c| c.open && !c.close)?;
            let peer = self.peers.get(conn.peer).filter(|p| !p.no_digests)?;
            Some((slot, peer.claimed_size?))
        })
    }

    /// The manifest's source on `slot` lags: the rest of the digests are asked of another
    /// open connection whose peer claims the same size, from the first digest not yet
    /// received (what the laggard sends later is ignored). Without one, the source keeps it.
    fn move_manifest(&mut self, slot: usize, on_event: &mut dyn FnMut(FetchEvent)) {
        let Manifest::Fetching {
            file_size,
            hasher,
            requested,
            ..
        } = &self.manifest
        else {
            return;
        };
        let (file_size, received) = (*file_size, hasher.digests().min(*requested));
        let other = self
            .manifest_sources()
            .find(|&(other, size)| {
                other != slot && size == file_size && self.conn(other).is_some_and(|c| !c.lagging)
            })
            .map(|(other, _)| other);
        let Some(other) = other else {
            return;
        };
        if let Some(conn) = self.conn_mut(other) {
            conn.session.set_file_size(file_size);
        }
        if let Manifest::Fetching {
            slot: source,
            requested,
            mixed,
            ..
        } = &mut self.manifest
        {
            *source = other;
            *requested = received;
            *mixed = true;
        }
        on_event(FetchEvent::ManifestMoved {
            from: self.peer_addr(slot),
            to: self.peer_addr(other),
        });
    }

    /// Closes the open connection that verified fewest blocks since the last review, when
    /// every slot is taken and a known peer waits (not a failure: it is tried again later).
    fn replace_slowest(&mut self, waiting_peer: bool) {
        let all_busy = self.conns.iter().all(Option::is_some);
        let slowest = self
            .conns
            .iter_mut()
            .flatten()
            .filter(|conn| conn.open && !conn.close)
            .min_by_key(|conn| conn.verified);
        if let Some(conn) = slowest
            && all_busy
            && waiting_peer
        {
            conn.close = true;
        }
        for conn in self.conns.iter_mut().flatten() {
            conn.verified = 0;
        }
    }

    /// When [`poll`](Self::poll), [`poll_connect`](Self::poll_connect) or a transmit next has
    /// something to do even if no bytes arrive.
    pub fn poll_at(&self) -> Option<Instant> {
        if self.complete {
            return None;
        }
        let conns = self
            .conns
            .iter()
            .flatten()
            .filter(|c| !c.close)
            .map(|conn| {
                // Deadlines already past that poll could not act on (no peer waiting to take
                // the place of a lagging or unopened connection) must not wake it at once
                // again: the caller would spin.
                let ahead = |at: Instant| (at > self.now).then_some(at);
                let stall = conn.since + self.config.stall_timeout;
                let stall = conn
                    .lag_deadline(self.config.block_lag)
                    .and_then(ahead)
                    .map_or(stall, |at| stall.min(at));
                // Not open after the open lag: it makes way for a waiting peer then.
                let opening = (!conn.open)
                    .then(|| conn.since + self.config.open_lag)
                    .and_then(ahead);
                let stall = opening.map_or(stall, |at| stall.min(at));
                let probe = conn.probe_due(self.config.probe_after).and_then(ahead);
                let stall = probe.map_or(stall, |at| stall.min(at));
                let listing = conn.asked.iter().any(|a| *a == Asked::BlockList);
                match (conn.open && conn.has_room() && !listing)
                    .then(|| conn.list_due(self.config.refresh))
                {
                    Some(due) if conn.asked.is_empty() => due,
                    Some(due) => stall.min(due),
                    None => stall,
                }
            });
        // A peer's retry time opens a free slot for it, and lets a lagging or unopened
        // connection make way for it.
        let free_slot = self.conns.iter().any(Option::is_none);
        let retries = self.peers.iter().filter_map(|peer| match peer.state {
            PeerState::Idle { retry_at } if free_slot || retry_at > self.now => Some(retry_at),
            _ => None,
        });
        conns.chain(retries).min()
    }

    fn conn(&self, slot: usize) -> Option<&Conn<K>> {
        self.conns.get(slot).and_then(Option::as_ref)
    }

    fn conn_mut(&mut self, slot: usize) -> Option<&mut Conn<K>> {
        self.conns.get_mut(slot).and_then(Option::as_mut)
    }

    fn peer_of(&self, slot: usize) -> Option<&Peer<B>> {
        self.conn(slot).and_then(|conn| self.peers.get(conn.peer))
    }

    fn peer_addr(&self, slot: usize) -> PeerAddr {
        self.peer_of(slot)
            .map_or(PeerAddr::new([0; 4], 0), |peer| peer.addr)
    }

    fn drop_peer(&mut self, slot: usize, reason: DropReason, on_event: &mut dyn FnMut(FetchEvent)) {
        let Some(conn) = self.conn_mut(slot) else {
            return;
        };
        conn.close = true;
        let index = conn.peer;
        if let Some(peer) = self.peers.get_mut(index)
            && peer.state != PeerState::Dropped
        {
            peer.state = PeerState::Dropped;
            on_event(FetchEvent::PeerDropped {
                peer: peer.addr,
                reason,
            });
        }
        if matches!(self.manifest, Manifest::Fetching { slot: s, .. } if s == slot) {
            self.manifest = Manifest::Unknown;
        }
    }

    /// Queues what the connection on `slot` should ask next.
    fn plan<F: NorFlash, const SB: usize>(
        &mut self,
        slot: usize,
        now: Instant,
        store: &FlashStore<F, SB>,
    ) {
        let geometry = store.geometry();
        let manifest_source = match self.manifest {
            Manifest::Fetching {
                slot: s,
                file_size,
                requested,
                ..
            } if s == slot => Some((file_size, requested)),
            _ => None,
        };
        let refresh = self.config.refresh;
        let probe_after = self.config.probe_after;
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if !conn.open || conn.close {
            return;
        }
        if !conn.greeted {
            conn.greeted = true;
            if let Some(geometry) = geometry {
                conn.session.set_file_size(geometry.file_size());
            }
            // Peer List first: a peer still fetching its manifest answers only that, then
            // closes with an Error. Digest Requests go after these: a peer that predates them
            // closes on the first.
            let _ = conn.ask(Request::PeerList, Asked::Info)
                && conn.ask(Request::FileSize, Asked::Info)
                && conn.ask(Request::BlockList, Asked::BlockList);
            conn.listed_at = now;
        }
        if let Some((file_size, mut requested)) = manifest_source {
            let count = Geometry::new(file_size).block_count();
            while requested < count && conn.has_room() {
                let end = (requested + MANIFEST_PART).min(count) - 1;
                let (Ok(start), Ok(end)) = (u16::try_from(requested), u16::try_from(end)) else {
                    break;
                };
                if !conn.ask(Request::Digest { start, end }, Asked::Digests) {
                    break;
                }
                requested = u32::from(end) + 1;
            }
            if let Manifest::Fetching { requested: r, .. } = &mut self.manifest {
                *r = requested;
            }
        }
        if let Some(geometry) = geometry {
            self.plan_blocks(slot, geometry, store);
        }
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let list_outstanding = conn.asked.iter().any(|a| *a == Asked::BlockList);
        // Refreshed between block requests too: a peer's list learnt once goes stale while the
        // connection stays busy, and a super-seed's shrinks as it serves.
        if !list_outstanding && now >= conn.list_due(refresh) && !conn.close && conn.has_room() {
            conn.ask(Request::BlockList, Asked::BlockList);
            conn.listed_at = now;
        }
        let probe = conn.probe_due(probe_after).is_some_and(|at| now >= at);
        if probe && !conn.close && conn.has_room() && conn.ask(Request::FileSize, Asked::Info) {
            conn.probes += 1;
            conn.probed_at = now;
        }
    }

    fn plan_blocks<F: NorFlash, const SB: usize>(
        &mut self,
        slot: usize,
        geometry: Geometry,
        store: &FlashStore<F, SB>,
    ) {
        let Some(conn) = self.conns.get(slot).and_then(Option::as_ref) else {
            return;
        };
        let Some(peer) = self.peers.get(conn.peer) else {
            return;
        };
        if !peer.list_known {
            return;
        }
        if peer.claimed_size != Some(geometry.file_size()) {
            return;
        }
        // Nothing to choose from this peer: skip the block-by-block search, which every poll
        // would otherwise run over the whole file for it.
        if !store.lacks_any(&peer.has) {
            return;
        }
        loop {
            let Some(conn) = self.conns.get(slot).and_then(Option::as_ref) else {
                return;
            };
            let limit = self.config.requests.clamp(1, PIPELINE - 2);
            if conn.block_requests() >= limit || !conn.has_room() {
                return;
            }
            let Some(range) = self.choose(slot, geometry, store) else {
                return;
            };
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            let request = Request::Block {
                start: range.start(),
                end: range.end(),
            };
            if !conn.ask(request, Asked::Blocks(range)) {
                return;
            }
            self.in_flight.insert_range(range);
            if let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) {
                conn.useful_at = self.now;
            }
        }
    }

    /// The blocks to ask the peer on `slot` for next: the rarest it has that nobody is
    /// fetching, extended to a run; near the end, one being fetched elsewhere.
    fn choose<F: NorFlash, const SB: usize>(
        &mut self,
        slot: usize,
        geometry: Geometry,
        store: &FlashStore<F, SB>,
    ) -> Option<BlockRange> {
        let conn = self.conn(slot)?;
        let peer = self.peers.get(conn.peer)?;
        let count = geometry.block_count();
        if count == 0 {
            return None;
        }
        let wanted = |block: u16| !store.is_verified(block) && peer.has.contains(block);
        let rarity = |block: u16| {
            self.peers
                .iter()
                .filter(|p| p.list_known && p.state != PeerState::Dropped && p.has.contains(block))
                .count()
        };
        // Ties go to a pseudo-random piece (`max_run` aligned blocks) of this node's own order:
        // taking the first rare block after a cursor makes nodes that scan the same list
        // converge on the same blocks, which the one seed then sends to each of them. Whole
        // pieces, not single blocks, so that the blocks a node gets and lists lie in runs a
        // request can ask for at once (one request a block was 5.5 % of the fleet's wire, and
        // scattered blocks made Block Lists of hundreds of ranges).
        let salt = self.config.start_hint;
        let piece = self.config.max_run.max(1);
        let mut best: Option<((usize, u32, u16), u16)> = None;
        let mut scanned = 0;
        for step in 0..count {
            let block = ((self.cursor + step) % count) as u16;
            if !wanted(block) || self.in_flight.contains(block) {
                continue;
            }
            let key = (rarity(block), tie_break(block / piece, salt), block % piece);
            if best.is_none_or(|(best_key, _)| key < best_key) {
                best = Some((key, block));
            }
            scanned += 1;
            if scanned >= SCAN_WINDOW || (key.0 <= 1 && scanned >= TIE_WINDOW) {
                break;
            }
        }
        if let Some((_, start)) = best {
            let mut end = start;
            while u32::from(end) + 1 < count
                && (end + 1) % piece != 0
                && wanted(end + 1)
                && !self.in_flight.contains(end + 1)
            {
                end += 1;
            }
            self.cursor = (u32::from(end) + 1) % count;
            return BlockRange::new(start, end);
        }
        // Endgame (BitTorrent's): once every block missing here is asked for somewhere, ask
        // this peer too for one that is being fetched elsewhere; the first copy verified
        // wins. Not before: while other blocks are still to be asked for, a copy asked twice
        // takes a link's time from a block nobody sends (64 simulated nodes received 4 000
        // blocks twice, 5 % of the wire). A connection that lags gives its blocks up anyway
        // (`block_lag`).
        if !store.all_verified_or_in(&self.in_flight) {
            return None;
        }
        (0..count)
            .map(|b| b as u16)
            .find(|&b| wanted(b) && !conn.asked_for(b))
            .map(BlockRange::single)
    }

    fn take<F: NorFlash, const SB: usize>(
        &mut self,
        slot: usize,
        seen: Seen,
        data: &[u8],
        now: Instant,
        store: &FlashStore<F, SB>,
        on_event: &mut dyn FnMut(FetchEvent),
    ) {
        let Some(index) = self.conn(slot).map(|c| c.peer) else {
            return;
        };
        match seen {
            Seen::Nothing | Seen::Failure => {}
            Seen::FileSize(size) => {
                if let Some(peer) = self.peers.get_mut(index) {
                    peer.claimed_size = Some(size);
                }
                self.on_file_size(slot, size, store, on_event);
            }
            Seen::Peer(addr) => {
                if self.add_peer(addr, now) {
                    on_event(FetchEvent::PeerFound(addr));
                }
            }
            Seen::RangeCount => {
                if let Some(peer) = self.peers.get_mut(index) {
                    peer.has.clear();
                    peer.list_known = false;
                }
            }
            Seen::Range(range) => {
                if let Some(peer) = self.peers.get_mut(index) {
                    peer.has.insert_range(range);
                }
            }
            Seen::Data { offset, .. } => self.on_block_data(slot, offset, data, store, on_event),
            Seen::Digest(block, digest) => {
                let Manifest::Fetching {
                    slot: source,
                    file_size,
                    hasher,
                    ..
                } = &mut self.manifest
                else {
                    return;
                };
                if *source != slot || u32::from(block) != hasher.digests() {
                    return;
                }
                hasher.push(&digest);
                let file_size = *file_size;
                if let Err(error) = store.put_manifest_digest(file_size, block, &digest) {
                    on_event(FetchEvent::StoreFailed(error));
                    self.manifest = Manifest::Unknown;
                    if let Some(conn) = self.conn_mut(slot) {
                        conn.close = true;
                    }
                }
            }
            Seen::Error => {
                let addr = self.peer_addr(slot);
                let Some(conn) = self.conn_mut(slot) else {
                    return;
                };
                conn.close = true;
                let digests_refused = conn.asked.front() == Some(&Asked::Digests);
                on_event(FetchEvent::PeerError(addr));
                if digests_refused {
                    self.refuse_digests(slot, on_event);
                }
            }
        }
    }

    fn on_file_size<F: NorFlash, const SB: usize>(
        &mut self,
        slot: usize,
        size: u32,
        store: &FlashStore<F, SB>,
        on_event: &mut dyn FnMut(FetchEvent),
    ) {
        if let Some(geometry) = store.geometry() {
            if geometry.file_size() != size {
                self.drop_peer(slot, DropReason::WrongFileSize(size), on_event);
            }
            return;
        }
        self.start_manifest(store, on_event);
    }

    /// With no manifest yet and none being fetched, starts fetching it from a connected peer
    /// that has told its file size and has not refused digests.
    fn start_manifest<F: NorFlash, const SB: usize>(
        &mut self,
        store: &FlashStore<F, SB>,
        on_event: &mut dyn FnMut(FetchEvent),
    ) {
        if !matches!(self.manifest, Manifest::Unknown) || store.manifest_verified() {
            return;
        }
        let Some((slot, size)) = self.manifest_sources().next() else {
            return;
        };
        if Geometry::new(size).block_size() as usize > K {
            self.drop_peer(slot, DropReason::TooLarge(size), on_event);
            return;
        }
        match store.begin_manifest(size) {
            Ok(()) => {}
            Err(FillError::FileTooLarge { .. }) => {
                self.drop_peer(slot, DropReason::TooLarge(size), on_event);
                return;
            }
            Err(error) => {
                on_event(FetchEvent::StoreFailed(error));
                return;
            }
        }
        if let Some(conn) = self.conn_mut(slot) {
            conn.session.set_file_size(size);
        }
        self.manifest = Manifest::Fetching {
            slot,
            file_size: size,
            hasher: ManifestHasher::new(size),
            requested: 0,
            mixed: false,
        };
        // An empty file's manifest is its size alone: nothing more to fetch.
        if Geometry::new(size).block_count() == 0 {
            self.finish_manifest(slot, store, on_event);
        }
    }

    fn refuse_digests(&mut self, slot: usize, on_event: &mut dyn FnMut(FetchEvent)) {
        let Some(index) = self.conn(slot).map(|c| c.peer) else {
            return;
        };
        if let Some(peer) = self.peers.get_mut(index)
            && !peer.no_digests
        {
            peer.no_digests = true;
            on_event(FetchEvent::NoDigests(peer.addr));
        }
        if matches!(self.manifest, Manifest::Fetching { slot: s, .. } if s == slot) {
            self.manifest = Manifest::Unknown;
        }
    }

    fn finish_manifest<F: NorFlash, const SB: usize>(
        &mut self,
        slot: usize,
        store: &FlashStore<F, SB>,
        on_event: &mut dyn FnMut(FetchEvent),
    ) {
        let Manifest::Fetching {
            file_size,
            hasher,
            mixed,
            ..
        } = core::mem::replace(&mut self.manifest, Manifest::Unknown)
        else {
            return;
        };
        if hasher.finish() != store.manifest_digest() {
            // Not passed on any further, now that it is known to be wrong.
            store.abandon_manifest();
            // From one peer, that peer lied; from two, either did: start again.
            if !mixed {
                self.drop_peer(slot, DropReason::BadManifest, on_event);
            }
            return;
        }
        match store.commit_manifest(file_size) {
            Ok(()) => {
                self.manifest = Manifest::Verified;
                self.fill_started = Some(self.now);
                on_event(FetchEvent::ManifestVerified {
                    file_size,
                    from: self.peer_addr(slot),
                });
                for conn in self.conns.iter_mut().flatten() {
                    conn.session.set_file_size(file_size);
                }
                self.check_complete(store, on_event);
            }
            Err(error) => on_event(FetchEvent::StoreFailed(error)),
        }
    }

    fn on_block_data<F: NorFlash, const SB: usize>(
        &mut self,
        slot: usize,
        mut offset: u32,
        mut data: &[u8],
        store: &FlashStore<F, SB>,
        on_event: &mut dyn FnMut(FetchEvent),
    ) {
        let Some(geometry) = store.geometry() else {
            return;
        };
        let from = self.peer_addr(slot);
        while !data.is_empty() {
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            let index = conn.peer;
            // What became of the block, decided while the assembler holds its bytes.
            let outcome = match conn.assembler.push(geometry, offset, data) {
                // Unreachable for a server that keeps to its requests: blocks larger than K
                // are refused with the manifest, and data comes in order.
                Err(error) => Err(error.block),
                Ok((used, whole)) => {
                    offset += used as u32;
                    data = data.get(used..).unwrap_or_default();
                    match whole {
                        None => Ok(None),
                        Some(whole) if store.digest(whole.block) != Some(whole.digest) => {
                            Err(whole.block)
                        }
                        Some(whole) => {
                            let fresh = !store.is_verified(whole.block);
                            Ok(Some((
                                whole.block,
                                fresh,
                                store.put_block(whole.block, whole.bytes),
                            )))
                        }
                    }
                }
            };
            match outcome {
                Ok(None) => {}
                Err(block) => {
                    self.drop_peer(slot, DropReason::BadBlock(block), on_event);
                    return;
                }
                Ok(Some((block, fresh, written))) => {
                    self.in_flight.remove(block);
                    match written {
                        Ok(()) if fresh => {
                            if let Some(peer) = self.peers.get_mut(index) {
                                peer.failures = 0;
                            }
                            if let Some(conn) = self.conn_mut(slot) {
                                conn.verified = conn.verified.saturating_add(1);
                            }
                            on_event(FetchEvent::BlockVerified { block, from });
                            self.check_complete(store, on_event);
                        }
                        Ok(()) => {}
                        Err(error) => on_event(FetchEvent::StoreFailed(error)),
                    }
                }
            }
        }
    }

    /// The oldest request on `slot` has been fully answered.
    fn complete_request<F: NorFlash, const SB: usize>(
        &mut self,
        slot: usize,
        refused: bool,
        store: &FlashStore<F, SB>,
        on_event: &mut dyn FnMut(FetchEvent),
    ) {
        let Some(conn) = self.conn_mut(slot) else {
            return;
        };
        let Some(asked) = conn.asked.pop_front() else {
            return;
        };
        let index = conn.peer;
        match asked {
            Asked::Info => {}
            Asked::BlockList => {
                if let Some(peer) = self.peers.get_mut(index) {
                    peer.list_known = true;
                }
            }
            Asked::Digests if refused => self.refuse_digests(slot, on_event),
            Asked::Digests => {
                let done = match &self.manifest {
                    Manifest::Fetching {
                        slot: s,
                        file_size,
                        hasher,
                        ..
                    } if *s == slot => {
                        Some(hasher.digests() == Geometry::new(*file_size).block_count())
                    }
                    _ => None,
                };
                if done == Some(true) {
                    self.finish_manifest(slot, store, on_event);
                }
            }
            Asked::Blocks(range) => {
                // Whatever of the range is not verified now was refused: the peer does not
                // hold it after all.
                for block in range.start()..=range.end() {
                    if !store.is_verified(block) {
                        self.in_flight.remove(block);
                        if let Some(peer) = self.peers.get_mut(index) {
                            peer.has.remove(block);
                        }
                    }
                }
            }
        }
    }

    fn check_complete<F: NorFlash, const SB: usize>(
        &mut self,
        store: &FlashStore<F, SB>,
        on_event: &mut dyn FnMut(FetchEvent),
    ) {
        if !self.complete && store.is_complete() {
            self.complete = true;
            for conn in self.conns.iter_mut().flatten() {
                conn.close = true;
            }
            let started = self.fill_started.unwrap_or(self.now);
            on_event(FetchEvent::Complete {
                fill_time: self.now.saturating_since(started),
            });
        }
    }
}
