//! A fleet of p2p-blocks nodes in one process, deterministic, on a virtual clock.
//!
//! Every node is the real node code (p2p-core's server and fetch drivers, fetcher and
//! `FlashStore`, over a real smoltcp `Interface`), on a port of a simulated switch with per-link
//! rates, latency, drop-tail queues and loss ([`switch`]). Time jumps from one event to the
//! next (a frame due, or a node's `poll_at`), so simulated minutes take seconds, and one seed
//! fixes every random choice: the same seed and code give the same event log and result.
//!
//! Node 0 is the seed, holding the whole file; the others start empty and know the seed and a
//! few random others (or, in client-server mode, only the seed).

pub mod census;
pub mod node;
pub mod rng;
pub mod switch;

use node::{Node, NodeEvent, ip_of};
use p2p_core::manifest::manifest_digest;
use p2p_core::{DEFAULT_PORT, Digest, Geometry, PeerAddr};
use rng::Rng;
use switch::{Link, Micros, Switch, SwitchConfig};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Nodes besides the seed.
    pub nodes: usize,
    pub file_size: u32,
    pub seed: u64,
    /// Each node's upload and download rate, bits per second.
    pub node_bps: u64,
    /// The seed's upload and download rate.
    pub seed_bps: u64,
    /// Frames lost on each hop, percent.
    pub loss_percent: f64,
    /// Nodes that go away once and come back (reset, resuming from their store), percent.
    pub churn_percent: f64,
    /// Peers each node is told of besides the seed.
    pub known_peers: usize,
    /// Every node fetches from the seed only (the anchor).
    pub client_server: bool,
    /// One-way latency of a hop, microseconds.
    pub hop_latency: Micros,
    /// Give up after this much simulated time.
    pub limit: Micros,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            nodes: 16,
            file_size: 1 << 20,
            seed: 1,
            node_bps: 10_000_000,
            seed_bps: 10_000_000,
            loss_percent: 0.0,
            churn_percent: 0.0,
            known_peers: 4,
            client_server: false,
            hop_latency: 250,
            limit: 3_600_000_000,
        }
    }
}

/// What a run found.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub nodes: usize,
    pub seed: u64,
    /// Nodes (besides the seed) that hold the verified file at the end.
    pub completed: usize,
    /// Simulated time until the last node completed (or the limit), seconds.
    pub t_seconds: f64,
    /// Kumar and Ross's lower bound: max(F / u_s, N F / (u_s + sum u_i)).
    pub t_min_seconds: f64,
    /// Each node's completion time, seconds, in node order (`None`: never).
    pub completion: Vec<Option<f64>>,
    /// When each node (first) verified its manifest, seconds, in node order.
    pub manifest: Vec<Option<f64>>,
    /// Bytes the seed sent (all frames, headers included).
    pub bytes_from_seed: u64,
    pub frames: u64,
    pub queue_drops: u64,
    pub lost: u64,
    /// Broadcast frames sent (ARP requests), each delivered to every other port.
    pub broadcasts: u64,
    /// Peers dropped for a bad block or the like, across the fleet (none in an honest fleet).
    pub peers_dropped: usize,
    /// Nodes reset by churn.
    pub resets: usize,
    /// FNV-1a of the event log: equal for equal runs.
    pub log_digest: u64,
    /// Wall-clock seconds the simulation took.
    pub wall_seconds: f64,
}

impl Report {
    pub fn t_over_tmin(&self) -> f64 {
        self.t_seconds / self.t_min_seconds
    }

    /// The completion time below which `percent` of the nodes that completed did.
    pub fn percentile(&self, percent: f64) -> Option<f64> {
        percentile(&self.completion, percent)
    }

    /// The time by which `percent` of the nodes that verified a manifest had it.
    pub fn manifest_percentile(&self, percent: f64) -> Option<f64> {
        percentile(&self.manifest, percent)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "nodes": self.nodes,
            "seed": self.seed,
            "completed": self.completed,
            "t_seconds": self.t_seconds,
            "t_min_seconds": self.t_min_seconds,
            "t_over_tmin": self.t_over_tmin(),
            "bytes_from_seed": self.bytes_from_seed,
            "completion_seconds": {
                "p50": self.percentile(50.0),
                "p90": self.percentile(90.0),
                "p99": self.percentile(99.0),
                "max": self.percentile(100.0),
            },
            "completion_per_node": self.completion,
            "manifest_seconds": {
                "p50": self.manifest_percentile(50.0),
                "max": self.manifest_percentile(100.0),
            },
            "frames": self.frames,
            "queue_drops": self.queue_drops,
            "lost": self.lost,
            "broadcasts": self.broadcasts,
            "peers_dropped": self.peers_dropped,
            "resets": self.resets,
            "log_digest": format!("{:016x}", self.log_digest),
            "wall_seconds": self.wall_seconds,
        })
    }
}

/// The time below which `percent` of the `Some` times are.
fn percentile(times: &[Option<f64>], percent: f64) -> Option<f64> {
    let mut times: Vec<f64> = times.iter().flatten().copied().collect();
    times.sort_by(f64::total_cmp);
    let index = ((times.len() as f64 * percent / 100.0).ceil() as usize).max(1) - 1;
    times.get(index).copied()
}

/// The test file: `len` bytes of a pattern from the seed.
pub fn file_of(len: u32, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed ^ 0x4649_4C45);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Flash for a node holding a file of `len` bytes: header, manifest, record and data.
fn flash_size(len: u32) -> usize {
    let blocks = Geometry::new(len).block_count() as usize;
    (4096 + 4096 + blocks * 36 + 4096 + blocks * 1024 + 4096).next_multiple_of(4096)
}

/// A churn event: node `node` goes away at `down` and comes back at `up`.
#[derive(Debug, Clone, Copy)]
struct Outage {
    node: usize,
    down: Micros,
    up: Micros,
}

/// With `FLEET_UTIL` set, a line on stderr every simulated 100 ms: how busy the seed's and
/// all uplinks were, the blocks the average node holds, the blocks some node other than the
/// seed holds (how far the seed's first copies have gone), and the super-seed's round.
#[derive(Default)]
struct Utilization {
    next: Micros,
    seed_sent: u64,
    all_sent: u64,
}

impl Utilization {
    const EVERY: Micros = 100_000;

    fn sample(
        &mut self,
        now: Micros,
        config: &FleetConfig,
        switch: &Switch,
        nodes: &[Option<Node>],
        done: usize,
    ) {
        if now < self.next {
            return;
        }
        let seconds = Self::EVERY as f64 / 1e6;
        let seed_sent = switch.stats.sent_bytes.first().copied().unwrap_or(0);
        let all_sent: u64 = switch.stats.sent_bytes.iter().sum();
        let capacity = config.seed_bps + config.node_bps * config.nodes as u64;
        let held: usize = nodes.iter().skip(1).flatten().map(Node::held_count).sum();
        let blocks = Geometry::new(config.file_size).block_count();
        let anywhere = (0..blocks)
            .filter_map(|block| u16::try_from(block).ok())
            .filter(|&block| nodes.iter().skip(1).flatten().any(|node| node.holds(block)))
            .count();
        let served = nodes
            .first()
            .and_then(Option::as_ref)
            .map_or(0, Node::served_count);
        eprintln!(
            "{:>6.2} s  seed uplink {:>5.1} %  all uplinks {:>5.1} %  blocks a node {:>6.1}  held anywhere {anywhere:>5}  complete {done}  super-seed round {served}",
            now as f64 / 1e6,
            (seed_sent - self.seed_sent) as f64 * 8.0 / (config.seed_bps as f64 * seconds) * 100.0,
            (all_sent - self.all_sent) as f64 * 8.0 / (capacity as f64 * seconds) * 100.0,
            held as f64 / config.nodes.max(1) as f64,
        );
        self.seed_sent = seed_sent;
        self.all_sent = all_sent;
        self.next = now + Self::EVERY;
    }
}

/// Runs the fleet; `progress` is called about once a simulated second with the time and the
/// nodes complete.
pub fn run(config: &FleetConfig, progress: &mut dyn FnMut(f64, usize)) -> Report {
    let started = std::time::Instant::now();
    let mut rng = Rng::new(config.seed);
    let total = config.nodes + 1;
    let data = file_of(config.file_size, config.seed);
    let geometry = Geometry::new(config.file_size);
    let digests: Vec<Digest> = data
        .chunks(geometry.block_size() as usize)
        .map(Digest::of)
        .collect();
    let manifest = manifest_digest(config.file_size, &digests);
    let addr = |index: usize| PeerAddr::new(ip_of(index), DEFAULT_PORT);

    let links: Vec<Link> = (0..total)
        .map(|index| {
            let bps = if index == 0 {
                config.seed_bps
            } else {
                config.node_bps
            };
            Link {
                up_bps: bps,
                down_bps: bps,
            }
        })
        .collect();
    let switch_config = SwitchConfig {
        hop_latency: config.hop_latency,
        queue_bytes: 64 * 1024,
        loss_ppm: (config.loss_percent * 10_000.0) as u32,
    };
    let mut switch = Switch::new(switch_config, links, config.seed);

    // Who knows whom: every node the seed and `known_peers` others; the seed lists a few.
    let known: Vec<Vec<PeerAddr>> = (0..total)
        .map(|index| {
            let mut peers = Vec::new();
            if index != 0 {
                peers.push(addr(0));
            }
            if !config.client_server {
                // Nodes other than the seed and this one.
                let others = if index == 0 { total - 1 } else { total - 2 };
                let wanted = peers.len() + config.known_peers.min(others);
                while peers.len() < wanted {
                    let other = 1 + rng.below(total as u64 - 1) as usize;
                    if other != index && !peers.contains(&addr(other)) {
                        peers.push(addr(other));
                    }
                }
            }
            peers
        })
        .collect();

    let size = flash_size(config.file_size);
    let mut nodes: Vec<Option<Node>> = (0..total)
        .map(|index| {
            let flash: &'static mut [u8] = vec![0u8; size].leak();
            if index == 0 {
                fill_seed(flash, manifest, &data, &digests);
            }
            Some(Node::start(index, flash, manifest, &known[index], 0))
        })
        .collect();

    // Each outage starts within the first 80 % of the minimum time and lasts up to half of it.
    let span = t_min(config) * 1e6;
    let mut outages = Vec::new();
    for node in 1..total {
        if rng.below(10_000) < (config.churn_percent * 100.0) as u64 {
            let down = (rng.below(1000) as f64 / 1000.0 * span * 0.8) as Micros + 1;
            let up = down + (rng.below(1000) as f64 / 1000.0 * span * 0.5) as Micros + 1;
            outages.push(Outage { node, down, up });
        }
    }
    let mut log = Log::default();
    let mut completion: Vec<Option<f64>> = vec![None; total];
    let mut manifest_at: Vec<Option<f64>> = vec![None; total];
    let mut peers_dropped = 0;
    let mut resets = 0;
    let mut images: Vec<Option<Vec<u8>>> = vec![None; total];
    let mut now: Micros = 0;
    let mut next_progress = 1_000_000;
    let mut utilization = std::env::var_os("FLEET_UTIL").map(|_| Utilization::default());
    if std::env::var_os("FLEET_WIRE").is_some() {
        switch.census = Some(census::WireCensus::default());
    }
    loop {
        for to in switch.advance(now) {
            while let Some(frame) = switch.receive(to) {
                if let Some(node) = nodes[to].as_mut() {
                    node.egress.link_mut().inbox.push_back(frame);
                }
            }
        }
        for outage in &outages {
            if outage.down == now
                && let Some(node) = nodes[outage.node].take()
            {
                images[outage.node] = Some(node.flash_image());
                switch.flush(outage.node);
                log.record(now, outage.node, "down");
            }
            if outage.up == now
                && let Some(image) = images[outage.node].take()
            {
                let flash: &'static mut [u8] = image.leak();
                nodes[outage.node] = Some(Node::start(
                    outage.node,
                    flash,
                    manifest,
                    &known[outage.node],
                    now,
                ));
                resets += 1;
                log.record(now, outage.node, "up");
            }
        }
        for (index, slot) in nodes.iter_mut().enumerate() {
            let Some(node) = slot.as_mut() else { continue };
            if node.egress.link().inbox.is_empty() && node.next_poll > now {
                continue;
            }
            node.egress.link_mut().wire_idle = switch.uplink_free_at(index) <= now;
            node.poll(now);
            for frame in node.egress.link_mut().outbox.drain(..) {
                switch.send(now, index, frame);
            }
            if node.egress.pending() {
                // The NIC's transmit-complete: the next frame goes when the wire is free. A
                // full queue leaves frames in the sockets, which smoltcp would retry at once.
                let free = switch.uplink_free_at(index).max(now + 1);
                node.next_poll = if node.egress.is_full() {
                    free
                } else {
                    node.next_poll.min(free)
                };
            }
            for event in node.events.drain(..) {
                match event {
                    NodeEvent::Complete => {
                        if completion[index].is_none() && index != 0 {
                            completion[index] = Some(now as f64 / 1e6);
                        }
                        log.record(now, index, "complete");
                    }
                    NodeEvent::ManifestVerified => {
                        if manifest_at[index].is_none() {
                            manifest_at[index] = Some(now as f64 / 1e6);
                        }
                        log.record(now, index, "manifest verified");
                    }
                    NodeEvent::Dropped { peer, reason } => {
                        peers_dropped += 1;
                        log.record(now, index, &format!("dropped {peer}: {reason}"));
                    }
                    NodeEvent::Stalled(peer) => log.record(now, index, &format!("stalled {peer}")),
                    NodeEvent::Other(what) => {
                        if std::env::var_os("FLEET_TRACE").is_some() {
                            log.record(now, index, &what);
                        }
                    }
                }
            }
        }
        let done = (1..total)
            .filter(|&i| nodes[i].as_ref().is_some_and(Node::is_complete))
            .count();
        if let Some(utilization) = utilization.as_mut() {
            utilization.sample(now, config, &switch, &nodes, done);
        }
        if now >= next_progress {
            progress(now as f64 / 1e6, done);
            next_progress += 1_000_000;
        }
        let pending_outage = outages
            .iter()
            .flat_map(|o| [o.down, o.up])
            .filter(|&t| t > now)
            .min();
        if done == config.nodes && pending_outage.is_none() {
            break;
        }
        let next = [
            switch.next_event(),
            nodes.iter().flatten().map(|n| n.next_poll).min(),
            pending_outage,
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(at) if at > now && at <= config.limit => now = at,
            Some(_) if now < config.limit => now += 1,
            _ => break,
        }
    }
    let completed = (1..total)
        .filter(|&i| nodes[i].as_ref().is_some_and(Node::is_complete))
        .count();
    let last = completion.iter().flatten().copied().fold(0.0, f64::max);
    if let Some(census) = &switch.census {
        eprint!("{}", census.report());
    }
    Report {
        nodes: config.nodes,
        seed: config.seed,
        completed,
        t_seconds: if completed == config.nodes {
            last
        } else {
            now as f64 / 1e6
        },
        t_min_seconds: t_min(config),
        completion: completion.into_iter().skip(1).collect(),
        manifest: manifest_at.into_iter().skip(1).collect(),
        bytes_from_seed: switch.stats.sent_bytes.first().copied().unwrap_or(0),
        frames: switch.stats.frames,
        queue_drops: switch.stats.queue_drops,
        lost: switch.stats.lost,
        broadcasts: switch.stats.broadcasts,
        peers_dropped,
        resets,
        log_digest: log.digest,
        wall_seconds: started.elapsed().as_secs_f64(),
    }
}

/// Kumar and Ross's minimum distribution time, seconds.
pub fn t_min(config: &FleetConfig) -> f64 {
    let bits = f64::from(config.file_size) * 8.0;
    let seed = config.seed_bps as f64;
    let all = seed + config.node_bps as f64 * config.nodes as f64;
    (bits / seed).max(config.nodes as f64 * bits / all)
}

/// The seed's flash: the whole file, verified, as a node that filled would hold it.
fn fill_seed(flash: &mut [u8], manifest: Digest, data: &[u8], digests: &[Digest]) {
    let store = p2p_core::flash_store::FlashStore::<_, { node::BITMAP_BYTES }>::open(
        p2p_core::ram_flash::RamFlash::new(flash),
        manifest,
    )
    .unwrap_or_else(|error| panic!("seed storage: {error}"));
    let size = data.len() as u32;
    let result = store.begin_manifest(size).and_then(|()| {
        for (block, digest) in digests.iter().enumerate() {
            store.put_manifest_digest(size, block as u16, digest)?;
        }
        store.commit_manifest(size)?;
        let block_size = Geometry::new(size).block_size() as usize;
        for (block, bytes) in data.chunks(block_size).enumerate() {
            store.put_block(block as u16, bytes)?;
        }
        Ok(())
    });
    if let Err(error) = result {
        panic!("seed storage: {error}");
    }
}

/// The event log, kept as a running FNV-1a digest (and nothing else: hundreds of nodes).
#[derive(Default)]
struct Log {
    digest: u64,
}

impl Log {
    fn record(&mut self, at: Micros, node: usize, what: &str) {
        if std::env::var_os("FLEET_TRACE").is_some() {
            eprintln!("{:>10.6} node {node}: {what}", at as f64 / 1e6);
        }
        if self.digest == 0 {
            self.digest = 0xcbf2_9ce4_8422_2325;
        }
        for byte in format!("{at} {node} {what}\n").bytes() {
            self.digest = (self.digest ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}
