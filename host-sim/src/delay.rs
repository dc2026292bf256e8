//! `--delay-ms` and `--reorder-chance`: a link that delays frames, both directions.
//!
//! The kernels these tests run on may lack `sch_netem`, and smoltcp's FaultInjector only drops
//! and corrupts, so delay and reordering are made here, like netem: every frame waits the
//! delay, and a frame picked for reordering waits [`REORDER_HOLD`] longer, so the frames sent
//! after it overtake it. Frames are copied only when the link impairs them; with neither option
//! the tokens pass straight through.

use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::time::{Duration, Instant};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Extra wait of a frame picked for reordering: long enough for a few later frames to pass.
pub const REORDER_HOLD: Duration = Duration::from_millis(5);
/// Frames delayed per direction, as netem's default queue limit; more are dropped, as a full
/// queue drops them.
const QUEUE_LIMIT: usize = 1000;

/// A delayed frame, ordered by release time, then by arrival among frames due at once.
type Delayed = Reverse<(Instant, u64, Vec<u8>)>;

pub struct Delay<D> {
    inner: D,
    delay: Duration,
    /// Percent of frames delayed further, for reordering.
    reorder_chance: u8,
    rng: u32,
    /// Frames counted in arrival order, so equal release times keep their order.
    arrivals: u64,
    inbound: BinaryHeap<Delayed>,
    outbound: BinaryHeap<Delayed>,
}

impl<D: Device> Delay<D> {
    pub fn new(inner: D, delay: Duration, reorder_chance: u8, seed: u32) -> Self {
        Self {
            inner,
            delay,
            reorder_chance: reorder_chance.min(100),
            rng: seed.max(1),
            arrivals: 0,
            inbound: BinaryHeap::new(),
            outbound: BinaryHeap::new(),
        }
    }

    fn impaired(&self) -> bool {
        self.delay > Duration::ZERO || self.reorder_chance > 0
    }

    /// When a frame arriving now is to be delivered.
    fn release_time(&mut self, now: Instant) -> (Instant, u64) {
        // xorshift32: a reproducible coin, as FaultInjector's.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 17;
        self.rng ^= self.rng << 5;
        let reordered = self.rng % 100 < u32::from(self.reorder_chance);
        let hold = if reordered {
            self.delay + REORDER_HOLD
        } else {
            self.delay
        };
        self.arrivals += 1;
        (now + hold, self.arrivals)
    }

    /// How long until a delayed frame is due; `None` when none is waiting.
    pub fn next_release(&self, now: Instant) -> Option<Duration> {
        let first = |queue: &BinaryHeap<Delayed>| queue.peek().map(|Reverse((at, _, _))| *at);
        let at = match (first(&self.inbound), first(&self.outbound)) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(if at > now { at - now } else { Duration::ZERO })
    }

    /// Puts every due outbound frame on the wire, and moves every frame waiting on the wire
    /// into the inbound queue.
    fn exchange(&mut self, now: Instant) {
        while self
            .outbound
            .peek()
            .is_some_and(|Reverse((at, _, _))| *at <= now)
        {
            let Some(token) = self.inner.transmit(now) else {
                break;
            };
            if let Some(Reverse((_, _, frame))) = self.outbound.pop() {
                phy::TxToken::consume(token, frame.len(), |buf| buf.copy_from_slice(&frame));
            }
        }
        loop {
            let Some((rx, _)) = self.inner.receive(now) else {
                break;
            };
            let frame = phy::RxToken::consume(rx, <[u8]>::to_vec);
            let (at, order) = self.release_time(now);
            if self.inbound.len() < QUEUE_LIMIT {
                self.inbound.push(Reverse((at, order, frame)));
            }
        }
    }

    fn delayed_tx(&mut self, now: Instant) -> Option<TxToken<'_, D::TxToken<'_>>> {
        if self.outbound.len() >= QUEUE_LIMIT {
            return None;
        }
        let (at, order) = self.release_time(now);
        Some(TxToken::Delayed {
            queue: &mut self.outbound,
            at,
            order,
        })
    }
}

pub enum RxToken<T> {
    Direct(T),
    Delayed(Vec<u8>),
}

impl<T: phy::RxToken> phy::RxToken for RxToken<T> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        match self {
            Self::Direct(token) => token.consume(f),
            Self::Delayed(frame) => f(&frame),
        }
    }
}

pub enum TxToken<'a, T> {
    Direct(T),
    Delayed {
        queue: &'a mut BinaryHeap<Delayed>,
        at: Instant,
        order: u64,
    },
}

impl<T: phy::TxToken> phy::TxToken for TxToken<'_, T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        match self {
            Self::Direct(token) => token.consume(len, f),
            Self::Delayed { queue, at, order } => {
                let mut frame = vec![0u8; len];
                let result = f(&mut frame);
                queue.push(Reverse((at, order, frame)));
                result
            }
        }
    }
}

impl<D: Device> Device for Delay<D> {
    type RxToken<'a>
        = RxToken<D::RxToken<'a>>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, D::TxToken<'a>>
    where
        Self: 'a;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if !self.impaired() {
            let (rx, tx) = self.inner.receive(now)?;
            return Some((RxToken::Direct(rx), TxToken::Direct(tx)));
        }
        self.exchange(now);
        if self
            .inbound
            .peek()
            .is_none_or(|Reverse((at, _, _))| *at > now)
        {
            return None;
        }
        if self.outbound.len() >= QUEUE_LIMIT {
            // No room for a reply: leave the frame queued until the wire drains.
            return None;
        }
        let Reverse((_, _, frame)) = self.inbound.pop()?;
        let tx = self.delayed_tx(now)?;
        Some((RxToken::Delayed(frame), tx))
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        if !self.impaired() {
            return self.inner.transmit(now).map(TxToken::Direct);
        }
        self.exchange(now);
        self.delayed_tx(now)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.inner.capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{Loopback, Medium, RxToken as _, TxToken as _};

    /// Sends frames numbered `first..first + count` (one byte each) at `now`.
    fn send(link: &mut Delay<Loopback>, now: Instant, numbers: std::ops::Range<u8>) {
        for number in numbers {
            link.transmit(now)
                .expect("token")
                .consume(1, |buf| buf[0] = number);
        }
    }

    /// Frame numbers the far end has received by `now` (the loopback's far end is the link's
    /// own receive side, through the same delay).
    fn delivered(link: &mut Delay<Loopback>, now: Instant) -> Vec<u8> {
        let mut numbers = Vec::new();
        while let Some((rx, _)) = link.receive(now) {
            numbers.push(rx.consume(|buf| buf[0]));
        }
        numbers
    }

    #[test]
    fn frames_wait_the_delay_each_way_and_keep_their_order() {
        let delay = Duration::from_millis(10);
        let mut link = Delay::new(Loopback::new(Medium::Ethernet), delay, 0, 1);
        let start = Instant::from_millis(100);
        send(&mut link, start, 0..20);
        assert_eq!(delivered(&mut link, start + Duration::from_millis(9)), []);
        assert_eq!(link.next_release(start), Some(delay));
        // Out on the wire after 10 ms, then delayed 10 ms more on the way back in.
        assert_eq!(delivered(&mut link, start + delay), []);
        assert_eq!(
            link.next_release(start + delay),
            Some(delay),
            "now delayed inbound"
        );
        let numbers = delivered(&mut link, start + delay + delay);
        assert_eq!(numbers, (0..20).collect::<Vec<_>>());
        assert_eq!(link.next_release(start + delay + delay), None);
    }

    #[test]
    fn reordering_lets_later_frames_overtake_and_loses_none() {
        let mut link = Delay::new(Loopback::new(Medium::Ethernet), Duration::ZERO, 30, 7);
        let start = Instant::from_millis(0);
        for step in 0..100u8 {
            send(
                &mut link,
                start + Duration::from_micros(u64::from(step) * 10),
                step..step + 1,
            );
        }
        // Out on the wire once every frame is due, then back in after the inbound holds.
        let mut numbers = delivered(&mut link, start + REORDER_HOLD + REORDER_HOLD);
        numbers.extend(delivered(&mut link, start + REORDER_HOLD * 4));
        let mut sorted = numbers.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..100).collect::<Vec<_>>(),
            "every frame arrives once"
        );
        assert_ne!(numbers, sorted, "some frames arrive out of order");
    }

    #[test]
    fn an_unimpaired_link_passes_frames_straight_through() {
        let mut link = Delay::new(Loopback::new(Medium::Ethernet), Duration::ZERO, 0, 1);
        send(&mut link, Instant::ZERO, 0..5);
        assert_eq!(link.next_release(Instant::ZERO), None);
        assert_eq!(delivered(&mut link, Instant::ZERO), [0, 1, 2, 3, 4]);
    }
}
