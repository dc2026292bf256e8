//! SMSC LAN9118 Ethernet controller, as on the ARM MPS2 boards (and QEMU's model of it), as a
//! smoltcp `phy::Device`. Frames move through the chip's FIFOs with programmed I/O; the driver
//! keeps one frame buffer each way (statics) and no queue.

use core::ptr::{read_volatile, write_volatile};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use static_cell::ConstStaticCell;

/// Largest Ethernet frame without CRC that the driver moves.
pub const MAX_FRAME: usize = 1514;

mod reg {
    pub const RX_DATA_FIFO: usize = 0x00;
    pub const TX_DATA_FIFO: usize = 0x20;
    pub const RX_STATUS_FIFO: usize = 0x40;
    pub const IRQ_CFG: usize = 0x54;
    pub const INT_STS: usize = 0x58;
    pub const INT_EN: usize = 0x5C;
    pub const BYTE_TEST: usize = 0x64;
    pub const TX_CFG: usize = 0x70;
    pub const HW_CFG: usize = 0x74;
    pub const RX_FIFO_INF: usize = 0x7C;
    pub const TX_FIFO_INF: usize = 0x80;
    pub const PMT_CTRL: usize = 0x84;
    pub const MAC_CSR_CMD: usize = 0xA4;
    pub const MAC_CSR_DATA: usize = 0xA8;
}

mod mac_reg {
    pub const MAC_CR: u32 = 1;
    pub const ADDRH: u32 = 2;
    pub const ADDRL: u32 = 3;
}

const BYTE_TEST_VALUE: u32 = 0x8765_4321;
const HW_CFG_SRST: u32 = 1 << 0;
const PMT_CTRL_READY: u32 = 1 << 0;
const MAC_CSR_BUSY: u32 = 1 << 31;
const MAC_CSR_READ: u32 = 1 << 30;
const MAC_CR_RXEN: u32 = 1 << 2;
const MAC_CR_TXEN: u32 = 1 << 3;
const TX_CFG_TX_ON: u32 = 1 << 1;
/// Let the TX status FIFO overrun: nothing here reads TX statuses.
const TX_CFG_TXSAO: u32 = 1 << 2;
const IRQ_CFG_TYPE_PUSH_PULL: u32 = 1 << 0;
const IRQ_CFG_POL_HIGH: u32 = 1 << 4;
const IRQ_CFG_EN: u32 = 1 << 8;
/// RX status FIFO level: a received frame is waiting.
const INT_RSFL: u32 = 1 << 3;
const TX_CMD_A_FIRST: u32 = 1 << 13;
const TX_CMD_A_LAST: u32 = 1 << 12;
const RX_STATUS_ERROR: u32 = 1 << 15;

/// Why the controller could not be brought up.
#[derive(Debug, Clone, Copy, defmt::Format)]
pub enum InitError {
    /// BYTE_TEST did not read back its fixed pattern: no LAN9118 at this address.
    NotPresent(u32),
    /// The chip did not become ready after a soft reset.
    ResetTimeout,
}

pub struct Lan9118 {
    regs: Registers,
    mac: [u8; 6],
    rx: &'static mut [u8; MAX_FRAME + 4],
    tx: &'static mut [u8; MAX_FRAME],
}

/// The chip's register block.
struct Registers {
    base: usize,
}

impl Lan9118 {
    /// Resets the controller at `base` and starts its MAC and transmitter. The MAC address is
    /// the one the chip holds (on QEMU, what `-nic ...,mac=` gave).
    ///
    /// # Safety
    /// `base` must be the address of a LAN9118's register block, used by nothing else.
    ///
    /// # Panics
    /// If called a second time: the frame buffers are statics, taken once.
    pub unsafe fn new(base: usize) -> Result<Self, InitError> {
        /// One static for both, so one `take`.
        struct Frames {
            rx: [u8; MAX_FRAME + 4],
            tx: [u8; MAX_FRAME],
        }
        static FRAMES: ConstStaticCell<Frames> = ConstStaticCell::new(Frames {
            rx: [0; MAX_FRAME + 4],
            tx: [0; MAX_FRAME],
        });
        let mut regs = Registers { base };
        let pattern = regs.read(reg::BYTE_TEST);
        if pattern != BYTE_TEST_VALUE {
            return Err(InitError::NotPresent(pattern));
        }
        regs.write(reg::HW_CFG, HW_CFG_SRST);
        let mut spins = 0u32;
        while regs.read(reg::PMT_CTRL) & PMT_CTRL_READY == 0
            || regs.read(reg::HW_CFG) & HW_CFG_SRST != 0
        {
            spins += 1;
            if spins > 1_000_000 {
                return Err(InitError::ResetTimeout);
            }
        }
        let low = regs.mac_read(mac_reg::ADDRL).to_le_bytes();
        let high = regs.mac_read(mac_reg::ADDRH).to_le_bytes();
        let mac = [low[0], low[1], low[2], low[3], high[0], high[1]];
        regs.mac_write(mac_reg::MAC_CR, MAC_CR_TXEN | MAC_CR_RXEN);
        regs.write(reg::TX_CFG, TX_CFG_TX_ON | TX_CFG_TXSAO);
        regs.write(
            reg::IRQ_CFG,
            IRQ_CFG_EN | IRQ_CFG_POL_HIGH | IRQ_CFG_TYPE_PUSH_PULL,
        );
        regs.write(reg::INT_STS, u32::MAX);
        regs.write(reg::INT_EN, INT_RSFL);
        let Frames { rx, tx } = FRAMES.take();
        Ok(Self { regs, mac, rx, tx })
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Acknowledges the controller's pending interrupts, so its line falls again.
    pub fn clear_interrupts(&mut self) {
        let pending = self.regs.read(reg::INT_STS);
        self.regs.write(reg::INT_STS, pending);
    }

    /// Whether a received frame is waiting. Checked after acknowledging, before sleeping: a
    /// frame that arrived since the last drain has had its interrupt acknowledged with the
    /// rest and would otherwise wait for the next timer wake-up.
    pub fn frame_waiting(&self) -> bool {
        (self.regs.read(reg::RX_FIFO_INF) >> 16) & 0xFF != 0
    }
}

impl Registers {
    fn read(&self, offset: usize) -> u32 {
        // SAFETY: `Lan9118::new`'s caller vouched that `base` is this chip's register block;
        // every offset used is a 4-byte-aligned register inside it.
        unsafe { read_volatile((self.base + offset) as *const u32) }
    }

    fn write(&mut self, offset: usize, value: u32) {
        // SAFETY: as in `read`.
        unsafe { write_volatile((self.base + offset) as *mut u32, value) }
    }

    fn mac_wait(&self) {
        while self.read(reg::MAC_CSR_CMD) & MAC_CSR_BUSY != 0 {}
    }

    fn mac_read(&mut self, index: u32) -> u32 {
        self.mac_wait();
        self.write(reg::MAC_CSR_CMD, MAC_CSR_BUSY | MAC_CSR_READ | index);
        self.mac_wait();
        self.read(reg::MAC_CSR_DATA)
    }

    fn mac_write(&mut self, index: u32, value: u32) {
        self.mac_wait();
        self.write(reg::MAC_CSR_DATA, value);
        self.write(reg::MAC_CSR_CMD, MAC_CSR_BUSY | index);
        self.mac_wait();
    }

    /// Moves the next good received frame into `buf`; its length without CRC, or `None`.
    /// Frames with errors or too long are read out and dropped: QEMU's RX fast-forward does
    /// not work, so every frame is drained by reading it.
    fn receive_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        loop {
            if (self.read(reg::RX_FIFO_INF) >> 16) & 0xFF == 0 {
                return None;
            }
            let status = self.read(reg::RX_STATUS_FIFO);
            let len = ((status >> 16) & 0x3FFF) as usize;
            let fits = (4..=buf.len()).contains(&len) && status & RX_STATUS_ERROR == 0;
            for index in 0..len.div_ceil(4) {
                let word = self.read(reg::RX_DATA_FIFO).to_le_bytes();
                if fits && let Some(slot) = buf.get_mut(index * 4..index * 4 + 4) {
                    slot.copy_from_slice(&word);
                }
            }
            if fits {
                return Some(len - 4);
            }
        }
    }

    /// Whether the TX data FIFO has room for a whole frame and its two command words.
    fn can_transmit(&self) -> bool {
        (self.read(reg::TX_FIFO_INF) & 0xFFFF) as usize >= MAX_FRAME + 8
    }

    fn transmit_frame(&mut self, frame: &[u8]) {
        while !self.can_transmit() {}
        let len = frame.len() as u32;
        self.write(reg::TX_DATA_FIFO, TX_CMD_A_FIRST | TX_CMD_A_LAST | len);
        self.write(reg::TX_DATA_FIFO, (len << 16) | len);
        for chunk in frame.chunks(4) {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write(reg::TX_DATA_FIFO, u32::from_le_bytes(word));
        }
    }
}

pub struct RxToken<'a> {
    frame: &'a [u8],
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

pub struct TxToken<'a> {
    regs: &'a mut Registers,
    buf: &'a mut [u8; MAX_FRAME],
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let frame = &mut self.buf[..len.min(MAX_FRAME)];
        let result = f(frame);
        self.regs.transmit_frame(frame);
        result
    }
}

impl Device for Lan9118 {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let Self { regs, rx, tx, .. } = self;
        let len = regs.receive_frame(&mut rx[..])?;
        Some((RxToken { frame: &rx[..len] }, TxToken { regs, buf: tx }))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<TxToken<'_>> {
        let Self { regs, tx, .. } = self;
        regs.can_transmit().then_some(TxToken { regs, buf: tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps.max_burst_size = Some(1);
        caps
    }
}
