//! smoltcp's `phy::Device` over stm32-eth's Ethernet DMA, after stm32-eth's own
//! `dma/smoltcp_phy.rs` (whose `smoltcp-phy` feature pins an older smoltcp than ours).

use core::sync::atomic::{AtomicBool, Ordering};
use smoltcp::phy::{ChecksumCapabilities, Device, DeviceCapabilities, RxToken, TxToken};
use smoltcp::time::Instant;
use stm32_eth::dma::{EthernetDMA, RxError, RxRing, TxRing};

/// Receive descriptors (and so the most frames a peer may send in one burst: smoltcp limits
/// the advertised window to it). Each descriptor holds a 1.5 KiB buffer in RAM, and the board's
/// budget is 48 KiB with 4 connections (BENCHMARKS.md): two suffice for tiny requests and ACKs.
pub const RX_DESCRIPTORS: usize = 2;
/// Two transmit descriptors: the DMA sends one frame while the next is written.
pub const TX_DESCRIPTORS: usize = 2;

/// Set by the ETH interrupt (a frame arrived, one was sent, or a DMA error); taken by the
/// main loop before it sleeps.
static EVENT: AtomicBool = AtomicBool::new(false);

/// Called from the ETH interrupt handler: acknowledges the DMA's interrupt bits (otherwise the
/// interrupt fires again at once) and notes that the main loop has work.
pub fn on_interrupt() {
    let reason = stm32_eth::eth_interrupt_handler();
    if reason.dma_error {
        defmt::warn!("ETH: DMA error interrupt");
    }
    EVENT.store(true, Ordering::Release);
}

/// Takes the note left by [`on_interrupt`].
pub fn take_event() -> bool {
    EVENT.swap(false, Ordering::Acquire)
}

pub struct Eth {
    dma: EthernetDMA<'static, 'static>,
}

impl Eth {
    pub fn new(dma: EthernetDMA<'static, 'static>) -> Self {
        dma.enable_interrupt();
        Self { dma }
    }

    /// A received frame is waiting in the ring.
    pub fn frame_waiting(&mut self) -> bool {
        self.dma.rx_available()
    }
}

impl Device for Eth {
    type RxToken<'a>
        = EthRxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = EthTxToken<'a>
    where
        Self: 'a;

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        // A standard Ethernet frame without FCS; the DMA's buffers (1522 bytes) take more.
        caps.max_transmission_unit = 1514;
        caps.max_burst_size = Some(RX_DESCRIPTORS);
        // The MAC inserts IPv4/TCP/UDP/ICMP checksums on transmit (the driver sets the
        // descriptors' checksum insertion bits) and checks them on receive (IPCO), as in
        // stm32-eth's own smoltcp adapter.
        caps.checksum = ChecksumCapabilities::ignored();
        caps
    }

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if self.dma.rx_available() && self.dma.tx_available() {
            let (rx, tx) = self.dma.split();
            Some((EthRxToken { rx }, EthTxToken { tx }))
        } else {
            None
        }
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        if self.dma.tx_available() {
            let (_, tx) = self.dma.split();
            Some(EthTxToken { tx })
        } else {
            None
        }
    }
}

pub struct EthRxToken<'a> {
    rx: &'a mut RxRing<'static>,
}

impl RxToken for EthRxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        match self.rx.recv_next(None) {
            Ok(packet) => {
                let result = f(&packet);
                packet.free();
                result
            }
            // A frame with an error (truncated, bad checksum, ...) was dropped from the ring;
            // an empty one is what smoltcp discards quietly.
            Err(RxError::WouldBlock) => f(&[]),
            Err(error) => {
                defmt::debug!("ETH: dropped a received frame: {}", error);
                f(&[])
            }
        }
    }
}

pub struct EthTxToken<'a> {
    tx: &'a mut TxRing<'static>,
}

impl TxToken for EthTxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        // A token is only made when a descriptor is free, and only its owner sends on the
        // ring, so this cannot fail; `len` is at most the MTU above, within the buffer.
        match self.tx.send_next(len, None) {
            Ok(mut packet) => {
                let result = f(&mut packet);
                packet.send();
                result
            }
            Err(_) => defmt::panic!("ETH: no TX descriptor for a token"),
        }
    }
}
