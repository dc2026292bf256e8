//! `--rate`: a token bucket on what host-sim sends, acting like a slow board's link.
//!
//! smoltcp's FaultInjector has a rate limit too, but it drops frames over the budget, and
//! smoltcp's TCP recovers from loss only by its 1 s retransmission timeout (see
//! BENCHMARKS.md): a policed link collapses to a trickle. A shaper delays instead: when the
//! bucket is empty, `transmit` offers no token, smoltcp keeps the segment queued, and the main
//! loop sleeps until the bucket has refilled.

use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::time::{Duration, Instant};

/// Bytes the link may send at once after being idle: a few frames, as a NIC's queue would.
const BURST: i64 = 16 * 1514;

pub struct Shaper<D> {
    inner: D,
    /// Bytes per second; `None` for an unshaped link.
    rate: Option<i64>,
    /// Bytes that may be sent now; negative after a frame larger than what was left.
    tokens: i64,
    refilled_at: Instant,
}

impl<D> Shaper<D> {
    pub fn new(inner: D, kbit_per_second: Option<u64>) -> Self {
        Self {
            inner,
            rate: kbit_per_second.map(|kbit| {
                i64::try_from(kbit.saturating_mul(125))
                    .unwrap_or(i64::MAX)
                    .max(1)
            }),
            tokens: BURST,
            refilled_at: Instant::ZERO,
        }
    }

    /// The shaped link.
    pub fn link(&self) -> &D {
        &self.inner
    }

    fn refill(&mut self, now: Instant) {
        let Some(rate) = self.rate else { return };
        let elapsed = (now - self.refilled_at).total_micros();
        let earned = i64::try_from(u128::from(elapsed) * rate as u128 / 1_000_000).unwrap_or(BURST);
        if earned > 0 {
            self.tokens = (self.tokens + earned).min(BURST);
            self.refilled_at = now;
        }
    }

    /// How long until the link may send again; `None` when it may send now.
    pub fn blocked_for(&mut self, now: Instant) -> Option<Duration> {
        let rate = self.rate?;
        self.refill(now);
        if self.tokens > 0 {
            return None;
        }
        let missing = u64::try_from(1 - self.tokens).unwrap_or(1);
        Some(Duration::from_micros(
            missing * 1_000_000 / u64::try_from(rate).unwrap_or(1) + 1,
        ))
    }
}

pub struct TxToken<'a, T> {
    token: T,
    tokens: Option<&'a mut i64>,
}

impl<T: phy::TxToken> phy::TxToken for TxToken<'_, T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        if let Some(tokens) = self.tokens {
            *tokens -= i64::try_from(len).unwrap_or(BURST);
        }
        self.token.consume(len, f)
    }
}

impl<D: Device> Device for Shaper<D> {
    type RxToken<'a>
        = D::RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, D::TxToken<'a>>
    where
        Self: 'a;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        // A reply to a received frame is charged like any other; when the bucket is empty
        // the frame waits in the TAP's queue.
        if self.blocked_for(now).is_some() {
            return None;
        }
        let shaped = self.rate.is_some();
        let Self { inner, tokens, .. } = self;
        let (rx, tx) = inner.receive(now)?;
        Some((
            rx,
            TxToken {
                token: tx,
                tokens: shaped.then_some(tokens),
            },
        ))
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        if self.blocked_for(now).is_some() {
            return None;
        }
        let shaped = self.rate.is_some();
        let Self { inner, tokens, .. } = self;
        let token = inner.transmit(now)?;
        Some(TxToken {
            token,
            tokens: shaped.then_some(tokens),
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.inner.capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{Loopback, Medium, TxToken as _};

    #[test]
    fn an_empty_bucket_delays_instead_of_dropping() {
        // 8000 kbit/s = 1 MB/s: a 1514-byte frame earns back in about 1.5 ms.
        let mut link = Shaper::new(Loopback::new(Medium::Ethernet), Some(8000));
        let start = Instant::from_millis(1);
        let mut sent = 0;
        while let Some(token) = link.transmit(start) {
            token.consume(1514, |buf| buf.fill(0));
            sent += 1;
        }
        assert_eq!(sent, 16, "a burst of 16 frames, then the bucket is empty");
        let wait = link.blocked_for(start).expect("blocked");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(2),
            "{wait}"
        );
        assert!(
            link.transmit(start + wait).is_some(),
            "sending resumes once refilled"
        );
        // Every frame offered was delivered: nothing was dropped.
        let mut delivered = 0;
        while link.inner.receive(start).is_some() {
            delivered += 1;
        }
        assert_eq!(delivered, 16);
    }

    #[test]
    fn an_unshaped_link_never_blocks() {
        let mut link = Shaper::new(Loopback::new(Medium::Ethernet), None);
        for _ in 0..100 {
            link.transmit(Instant::ZERO)
                .expect("token")
                .consume(1514, |buf| buf.fill(0));
        }
        assert_eq!(link.blocked_for(Instant::ZERO), None);
    }
}
