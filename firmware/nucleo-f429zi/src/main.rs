//! p2p-blocks firmware for the ST Nucleo-F429ZI (STM32F429ZI, LAN8742A PHY over RMII). Logs
//! go out as defmt over RTT; `cargo run --release` flashes it with probe-rs.
#![no_std]
#![no_main]

mod eth;
mod storage;

use core::sync::atomic::{AtomicU32, Ordering};
use cortex_m::peripheral::SCB;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{ExceptionFrame, entry, exception};
use defmt_rtt as _;
use eth::Eth;
use p2p_core::partition::Partition;
use panic_probe as _;
use smoltcp::time::{Duration, Instant};
use stm32_eth::dma::{RxRingEntry, TxRingEntry};
use stm32_eth::hal::gpio::{Alternate, GpioExt, PA2, PC1, Speed as PinSpeed};
use stm32_eth::hal::prelude::*;
use stm32_eth::hal::watchdog::IndependentWatchdog;
use stm32_eth::mac::phy::PhySpeed;
use stm32_eth::mac::phy::lan87xxa::LAN8742A;
use stm32_eth::mac::{EthernetMACWithMii, Phy, Speed};
use stm32_eth::stm32::{CorePeripherals, Peripherals, interrupt};
use stm32_eth::{EthPins, PartsIn};
use storage::InternalFlash;

/// The LAN8742A's MDIO address on the Nucleo (PHYAD0 strapped low).
const PHY_ADDR: u8 = 0;
/// The core clock: HSE 8 MHz from the ST-LINK, through the PLL.
const SYSCLK_MHZ: u32 = 180;
/// The independent watchdog resets the chip if the main loop stops for this long.
const WATCHDOG_MS: u32 = 3000;
/// The longest sleep, well within the watchdog's timeout.
const MAX_SLEEP: Duration = Duration::from_millis(1000);
/// How often the PHY is asked about the link.
const LINK_CHECK: Duration = Duration::from_millis(500);
/// The STM32F4's 96-bit unique device ID.
const UID_ADDRESS: usize = 0x1FFF_7A10;

type Mdio = PA2<Alternate<11>>;
type Mdc = PC1<Alternate<11>>;
type Mac = EthernetMACWithMii<Mdio, Mdc>;

/// Milliseconds since start-up, counted by SysTick (wraps after 49 days; `Clock` widens it).
static MILLIS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    MILLIS.fetch_add(1, Ordering::Relaxed);
}

#[interrupt]
fn ETH() {
    eth::on_interrupt();
}

/// The SysTick count, widened to 64 bits.
struct Clock {
    last: u32,
    ms: u64,
}

impl Clock {
    fn now(&mut self) -> Instant {
        let count = MILLIS.load(Ordering::Relaxed);
        self.ms += u64::from(count.wrapping_sub(self.last));
        self.last = count;
        Instant::from_millis(self.ms as i64)
    }
}

struct Nucleo {
    eth: Eth,
    phy: LAN8742A<Mac>,
    link: Option<PhySpeed>,
    next_link_check: Instant,
    mac: [u8; 6],
    clock: Clock,
    watchdog: IndependentWatchdog,
    storage: Option<Partition<InternalFlash>>,
}

impl Nucleo {
    /// Follows the PHY's link: logs changes and sets the MAC to the negotiated speed.
    fn check_link(&mut self, now: Instant) {
        if now < self.next_link_check {
            return;
        }
        self.next_link_check = now + LINK_CHECK;
        let link = if self.phy.link_established() {
            self.phy.link_speed()
        } else {
            None
        };
        if link == self.link {
            return;
        }
        self.link = link;
        match link {
            Some(speed) => {
                defmt::info!(
                    "Ethernet link up: {=str}",
                    match speed {
                        PhySpeed::HalfDuplexBase10T => "10 Mbit/s half duplex",
                        PhySpeed::FullDuplexBase10T => "10 Mbit/s full duplex",
                        PhySpeed::HalfDuplexBase100Tx => "100 Mbit/s half duplex",
                        PhySpeed::FullDuplexBase100Tx => "100 Mbit/s full duplex",
                    }
                );
                self.phy.get_miim().set_speed(match speed {
                    PhySpeed::HalfDuplexBase10T => Speed::HalfDuplexBase10T,
                    PhySpeed::FullDuplexBase10T => Speed::FullDuplexBase10T,
                    PhySpeed::HalfDuplexBase100Tx => Speed::HalfDuplexBase100Tx,
                    PhySpeed::FullDuplexBase100Tx => Speed::FullDuplexBase100Tx,
                });
            }
            None => defmt::warn!("Ethernet link down"),
        }
    }
}

impl p2p_firmware::Board for Nucleo {
    type Device = Eth;
    type Storage = Partition<InternalFlash>;
    /// Well within the watchdog's timeout.
    const MAX_SLEEP: Duration = MAX_SLEEP;

    fn name(&self) -> &'static str {
        "nucleo-f429zi"
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn device(&mut self) -> &mut Eth {
        &mut self.eth
    }

    fn take_storage(&mut self) -> Option<Partition<InternalFlash>> {
        self.storage.take()
    }

    fn now(&mut self) -> Instant {
        self.clock.now()
    }

    /// Frames the last poll left in the ring, or an ETH interrupt since it. No `wake_at`:
    /// SysTick wakes the core every millisecond to look at the clock.
    fn rx_pending(&mut self) -> bool {
        eth::take_event() || self.eth.frame_waiting()
    }

    fn housekeeping(&mut self, now: Instant) {
        self.watchdog.feed();
        self.check_link(now);
    }
}

/// A locally administered unicast MAC from the chip's unique ID: 02 and 40 bits of an FNV-1a
/// hash of its 96 bits.
fn mac_from_uid() -> [u8; 6] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for word in 0..3 {
        // SAFETY: the unique ID is three read-only words in the system memory of every
        // STM32F4, at a fixed, aligned address.
        let value = unsafe { core::ptr::read_volatile((UID_ADDRESS as *const u32).add(word)) };
        for byte in value.to_le_bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    let [a, b, c, d, e, ..] = hash.to_le_bytes();
    [0x02, a, b, c, d, e]
}

#[entry]
fn main() -> ! {
    p2p_firmware::stack::paint();
    defmt::info!("p2p-blocks firmware on nucleo-f429zi");
    let (Some(p), Some(mut cp)) = (Peripherals::take(), CorePeripherals::take()) else {
        defmt::panic!("peripherals taken twice");
    };

    // HCLK must be at least 25 MHz for the Ethernet MAC; the HAL turns on over-drive for 180.
    let rcc = p.RCC.constrain();
    let clocks = rcc
        .cfgr
        .use_hse(8.MHz())
        .bypass_hse_oscillator()
        .sysclk(SYSCLK_MHZ.MHz())
        .hclk(SYSCLK_MHZ.MHz())
        .freeze();
    defmt::info!(
        "clocks: sysclk {} Hz, hclk {} Hz",
        clocks.sysclk().raw(),
        clocks.hclk().raw()
    );

    cp.SYST.set_clock_source(SystClkSource::Core);
    cp.SYST.set_reload(clocks.hclk().raw() / 1000 - 1);
    cp.SYST.clear_current();
    cp.SYST.enable_counter();
    cp.SYST.enable_interrupt();

    // The Nucleo-F429ZI's RMII pins (stm32-eth's examples with `pins = "nucleo"`).
    let gpioa = p.GPIOA.split();
    let gpiob = p.GPIOB.split();
    let gpioc = p.GPIOC.split();
    let gpiog = p.GPIOG.split();
    let pins = EthPins {
        ref_clk: gpioa.pa1.into_floating_input(),
        crs: gpioa.pa7.into_floating_input(),
        tx_en: gpiog.pg11.into_floating_input(),
        tx_d0: gpiog.pg13.into_floating_input(),
        tx_d1: gpiob.pb13.into_floating_input(),
        rx_d0: gpioc.pc4.into_floating_input(),
        rx_d1: gpioc.pc5.into_floating_input(),
    };
    let mut mdio: Mdio = gpioa.pa2.into_alternate();
    mdio.set_speed(PinSpeed::VeryHigh);
    let mut mdc: Mdc = gpioc.pc1.into_alternate();
    mdc.set_speed(PinSpeed::VeryHigh);

    // The descriptor rings live in SRAM (statics), which the Ethernet DMA can reach.
    let rx_ring = cortex_m::singleton!(
        : [RxRingEntry; eth::RX_DESCRIPTORS] = [RxRingEntry::INIT; eth::RX_DESCRIPTORS]
    );
    let tx_ring = cortex_m::singleton!(
        : [TxRingEntry; eth::TX_DESCRIPTORS] = [TxRingEntry::INIT; eth::TX_DESCRIPTORS]
    );
    let (Some(rx_ring), Some(tx_ring)) = (rx_ring, tx_ring) else {
        defmt::panic!("descriptor rings taken twice");
    };
    let parts = PartsIn {
        mac: p.ETHERNET_MAC,
        mmc: p.ETHERNET_MMC,
        dma: p.ETHERNET_DMA,
    };
    let ethernet = match stm32_eth::new_with_mii(
        parts,
        &mut rx_ring[..],
        &mut tx_ring[..],
        clocks,
        pins,
        mdio,
        mdc,
    ) {
        Ok(ethernet) => ethernet,
        Err(_) => defmt::panic!("Ethernet: HCLK is below 25 MHz"),
    };

    let mut phy = LAN8742A::new(ethernet.mac, PHY_ADDR);
    // A soft reset of the PHY takes well under a millisecond; bounded, so a PHY that does not
    // answer on MDIO shows in the log instead of hanging the board.
    let mut clock = Clock { last: 0, ms: 0 };
    phy.reset();
    let reset_by = clock.now() + Duration::from_millis(500);
    while phy.is_resetting() {
        if clock.now() > reset_by {
            defmt::error!("PHY: no answer on MDIO at address {=u8}", PHY_ADDR);
            break;
        }
    }
    phy.phy_init();
    let mac = mac_from_uid();

    let mut watchdog = IndependentWatchdog::new(p.IWDG);
    // A core halted by the debugger stops the watchdog too; and the debugger keeps its access
    // (for RTT) while the core sleeps in WFI.
    watchdog.stop_on_debug(&p.DBGMCU, true);
    p.DBGMCU.cr.modify(|_, w| w.dbg_sleep().set_bit());
    watchdog.start(WATCHDOG_MS.millis());

    let mut board = Nucleo {
        eth: Eth::new(ethernet.dma),
        phy,
        link: None,
        next_link_check: Instant::ZERO,
        mac,
        clock,
        watchdog,
        storage: InternalFlash::storage(p.FLASH),
    };
    let now = board.clock.now();
    board.check_link(now);
    p2p_firmware::run(&mut board)
}

/// Every fault, and the end of every panic: panic-probe logs the panic's message and location
/// over defmt, then raises a HardFault. Gives a debugger a moment to read the last of the log
/// from RTT, then resets the chip.
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    defmt::error!("hard fault at pc {=u32:#x}", frame.pc());
    cortex_m::asm::delay(SYSCLK_MHZ * 100_000);
    SCB::sys_reset()
}

/// `defmt::panic!` has already logged its message: straight to the HardFault, as panic-probe's
/// own handler ends.
#[defmt::panic_handler]
fn defmt_panic() -> ! {
    panic_probe::hard_fault()
}
