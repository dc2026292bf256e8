//! A simulated Ethernet switch: every node has a port with an uplink (node to switch) and a
//! downlink (switch to node), each with its own rate and a drop-tail queue, and a one-way
//! latency; frames may be lost at random. Everything is on the fleet's virtual clock and every
//! random choice comes from one seed, so the same inputs give the same deliveries.

use crate::census::WireCensus;
use crate::rng::Rng;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Virtual time in microseconds.
pub type Micros = u64;

/// One port's link.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// Node to switch, bits per second.
    pub up_bps: u64,
    /// Switch to node, bits per second.
    pub down_bps: u64,
}

/// How the switch treats frames.
#[derive(Debug, Clone, Copy)]
pub struct SwitchConfig {
    /// One-way latency of each hop (node to switch, switch to node), microseconds.
    pub hop_latency: Micros,
    /// Bytes a queue holds before it drops what arrives (per direction, per port).
    pub queue_bytes: u64,
    /// Chance of losing a frame, in millionths, on each hop.
    pub loss_ppm: u32,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Hop {
    /// The frame reaches the switch, to go out of the destination's port.
    AtSwitch,
    /// The frame reaches node `to`.
    AtNode,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    at: Micros,
    /// Order of scheduling, so simultaneous events keep a fixed order.
    seq: u64,
    hop: Hop,
    from: usize,
    to: usize,
    frame: Vec<u8>,
}

/// Frames sent and lost, for the report.
#[derive(Debug, Default, Clone)]
pub struct SwitchStats {
    pub frames: u64,
    /// Bytes each port sent onto its uplink.
    pub sent_bytes: Vec<u64>,
    pub queue_drops: u64,
    pub lost: u64,
    /// Frames sent to every port (ARP requests): each costs every downlink.
    pub broadcasts: u64,
}

pub struct Switch {
    config: SwitchConfig,
    links: Vec<Link>,
    /// When each uplink and downlink is free again.
    up_free: Vec<Micros>,
    down_free: Vec<Micros>,
    events: BinaryHeap<Reverse<Event>>,
    seq: u64,
    rng: Rng,
    /// Frames delivered to each node, not yet taken by it.
    inbox: Vec<VecDeque<Vec<u8>>>,
    pub stats: SwitchStats,
    /// What the uplinks carried, by kind of frame, when asked for (`FLEET_WIRE`).
    pub census: Option<WireCensus>,
}

/// What a frame of `len` bytes takes on the wire: Ethernet's 8 bytes of preamble and 12 of
/// inter-frame gap besides the frame.
pub fn wire_bytes(len: usize) -> u64 {
    len as u64 + 20
}

/// Serialization time of a `len`-byte frame at `bps`.
fn wire_time(len: usize, bps: u64) -> Micros {
    (wire_bytes(len) * 8 * 1_000_000).div_ceil(bps.max(1))
}

impl Switch {
    pub fn new(config: SwitchConfig, links: Vec<Link>, seed: u64) -> Self {
        let ports = links.len();
        Self {
            config,
            links,
            up_free: vec![0; ports],
            down_free: vec![0; ports],
            events: BinaryHeap::new(),
            seq: 0,
            rng: Rng::new(seed ^ 0x5357_4954_4348),
            inbox: vec![VecDeque::new(); ports],
            stats: SwitchStats {
                sent_bytes: vec![0; ports],
                ..SwitchStats::default()
            },
            census: None,
        }
    }

    /// Node `from` sends `frame` at `now`; its destination is read from the frame (a broadcast
    /// goes to every other port).
    pub fn send(&mut self, now: Micros, from: usize, frame: Vec<u8>) {
        self.stats.frames += 1;
        let Some(link) = self.links.get(from).copied() else {
            return;
        };
        let free = self.up_free[from].max(now);
        // Bytes already waiting on the uplink, at its rate.
        let backlog = (free - now) * link.up_bps / 8_000_000;
        if backlog + frame.len() as u64 > self.config.queue_bytes {
            self.stats.queue_drops += 1;
            return;
        }
        let done = free + wire_time(frame.len(), link.up_bps);
        self.up_free[from] = done;
        self.stats.sent_bytes[from] += frame.len() as u64;
        if let Some(census) = self.census.as_mut() {
            census.count(&frame);
        }
        if frame.get(..6) == Some(&[0xFF; 6]) {
            self.stats.broadcasts += 1;
        }
        if self.lose() {
            return;
        }
        let at = done + self.config.hop_latency;
        for to in self.destinations(from, &frame) {
            self.schedule(at, Hop::AtSwitch, from, to, frame.clone());
        }
    }

    /// When node `from`'s uplink has sent everything it was given.
    pub fn uplink_free_at(&self, from: usize) -> Micros {
        self.up_free.get(from).copied().unwrap_or(0)
    }

    /// The earliest pending event's time.
    pub fn next_event(&self) -> Option<Micros> {
        self.events.peek().map(|Reverse(event)| event.at)
    }

    /// Moves every frame due by `now` along; returns the nodes that received frames.
    pub fn advance(&mut self, now: Micros) -> Vec<usize> {
        let mut touched = Vec::new();
        while self.events.peek().is_some_and(|Reverse(e)| e.at <= now) {
            let Some(Reverse(event)) = self.events.pop() else {
                break;
            };
            match event.hop {
                Hop::AtSwitch => {
                    let link = self.links[event.to];
                    let free = self.down_free[event.to].max(event.at);
                    let backlog = (free - event.at) * link.down_bps / 8_000_000;
                    if backlog + event.frame.len() as u64 > self.config.queue_bytes {
                        self.stats.queue_drops += 1;
                        continue;
                    }
                    let done = free + wire_time(event.frame.len(), link.down_bps);
                    self.down_free[event.to] = done;
                    if self.lose() {
                        continue;
                    }
                    let at = done + self.config.hop_latency;
                    self.schedule(at, Hop::AtNode, event.from, event.to, event.frame);
                }
                Hop::AtNode => {
                    self.inbox[event.to].push_back(event.frame);
                    if touched.last() != Some(&event.to) {
                        touched.push(event.to);
                    }
                }
            }
        }
        touched
    }

    /// The next frame delivered to `node`.
    pub fn receive(&mut self, node: usize) -> Option<Vec<u8>> {
        self.inbox.get_mut(node)?.pop_front()
    }

    pub fn has_frames(&self, node: usize) -> bool {
        self.inbox.get(node).is_some_and(|inbox| !inbox.is_empty())
    }

    /// Drops whatever is queued for `node` (it went away).
    pub fn flush(&mut self, node: usize) {
        if let Some(inbox) = self.inbox.get_mut(node) {
            inbox.clear();
        }
    }

    fn lose(&mut self) -> bool {
        let lost =
            self.config.loss_ppm > 0 && self.rng.below(1_000_000) < u64::from(self.config.loss_ppm);
        if lost {
            self.stats.lost += 1;
        }
        lost
    }

    fn schedule(&mut self, at: Micros, hop: Hop, from: usize, to: usize, frame: Vec<u8>) {
        self.seq += 1;
        self.events.push(Reverse(Event {
            at,
            seq: self.seq,
            hop,
            from,
            to,
            frame,
        }));
    }

    /// The ports a frame from `from` goes to: the one its destination MAC names, or all others
    /// for a broadcast.
    fn destinations(&self, from: usize, frame: &[u8]) -> Vec<usize> {
        let Some(dst) = frame.get(..6) else {
            return Vec::new();
        };
        if dst == [0xFF; 6] {
            return (0..self.links.len()).filter(|&to| to != from).collect();
        }
        match port_of_mac(dst) {
            Some(to) if to < self.links.len() && to != from => vec![to],
            _ => Vec::new(),
        }
    }
}

/// Node `index`'s MAC: 02:00:00 and the index.
pub fn mac_of(index: usize) -> [u8; 6] {
    let [_, b, c, d] = (index as u32).to_be_bytes();
    [0x02, 0x00, 0x00, b, c, d]
}

fn port_of_mac(mac: &[u8]) -> Option<usize> {
    match mac {
        [0x02, 0x00, 0x00, b, c, d] => Some(u32::from_be_bytes([0, *b, *c, *d]) as usize),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(to: usize, len: usize) -> Vec<u8> {
        let mut frame = mac_of(to).to_vec();
        frame.resize(len, 0);
        frame
    }

    #[test]
    fn a_frame_takes_two_serializations_and_two_latencies() {
        let links = vec![
            Link {
                up_bps: 10_000_000,
                down_bps: 10_000_000,
            };
            2
        ];
        let config = SwitchConfig {
            hop_latency: 100,
            queue_bytes: 100_000,
            loss_ppm: 0,
        };
        let mut switch = Switch::new(config, links, 1);
        switch.send(0, 0, frame(1, 1230));
        // 1250 bytes at 10 Mbit/s: 1000 us a hop.
        assert_eq!(switch.next_event(), Some(1100));
        assert!(switch.advance(1100).is_empty());
        assert_eq!(switch.next_event(), Some(2200));
        assert_eq!(switch.advance(2200), vec![1]);
        assert_eq!(switch.receive(1).map(|f| f.len()), Some(1230));
    }

    #[test]
    fn a_full_queue_drops_the_tail() {
        let links = vec![
            Link {
                up_bps: 1_000_000,
                down_bps: 1_000_000,
            };
            2
        ];
        let config = SwitchConfig {
            hop_latency: 0,
            queue_bytes: 3000,
            loss_ppm: 0,
        };
        let mut switch = Switch::new(config, links, 1);
        for _ in 0..5 {
            switch.send(0, 0, frame(1, 1000));
        }
        // The backlog counts the frame on the wire with its preamble and gap (1020 bytes):
        // two frames fit in 3000 bytes, the other three are dropped.
        assert_eq!(switch.stats.queue_drops, 3);
        assert_eq!(switch.stats.sent_bytes[0], 2000);
    }
}
