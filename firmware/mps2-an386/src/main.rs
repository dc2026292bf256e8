//! p2p-blocks firmware for the ARM MPS2 AN386 board (Cortex-M4, SMSC LAN9118 Ethernet), the
//! board QEMU emulates as `mps2-an386`. Logs go out as defmt over semihosting.
#![no_std]
#![no_main]

mod lan9118;
mod timer;

use cortex_m::peripheral::NVIC;
use cortex_m_rt::{ExceptionFrame, entry, exception};
use cortex_m_semihosting::debug;
use defmt_semihosting as _;
use lan9118::Lan9118;
use p2p_core::ram_flash::RamFlash;
use panic_probe as _;
use smoltcp::time::{Duration, Instant};

const LAN9118_BASE: usize = 0x4020_0000;
/// A filling node's storage: the last 1 MiB of the SRAM, outside the program (memory.x).
const STORAGE_BASE: usize = 0x2030_0000;
const STORAGE_LEN: usize = 1 << 20;
const LAN9118_IRQ: u16 = 13;

/// An interrupt line number, as the NVIC wants it.
#[derive(Clone, Copy)]
struct Irq(u16);

// SAFETY: the numbers are this board's interrupt lines (LAN9118 and TIMER1), below the
// Cortex-M4's 240.
unsafe impl cortex_m::interrupt::InterruptNumber for Irq {
    fn number(self) -> u16 {
        self.0
    }
}

/// The device part of the vector table (cortex-m-rt's `device` feature, which a PAC in the
/// same workspace turns on): this board has no PAC, so every line goes to `DefaultHandler`.
// SAFETY: the section and symbol are the ones cortex-m-rt's link.x places after the
// exceptions; the NVIC of this board has 32 lines, each pointing at the handler below.
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
static __INTERRUPTS: [unsafe extern "C" fn(); 32] = [DefaultHandler; 32];

unsafe extern "C" {
    fn DefaultHandler();
}

struct Mps2 {
    eth: Lan9118,
    clock: timer::Clock,
    storage_taken: bool,
}

impl p2p_firmware::Board for Mps2 {
    type Device = Lan9118;
    type Storage = RamFlash<'static>;
    /// TIMER1's one-shot range.
    const MAX_SLEEP: Duration = Duration::from_millis(timer::MAX_SLEEP_MS);

    fn name(&self) -> &'static str {
        "mps2-an386"
    }

    fn mac(&self) -> [u8; 6] {
        self.eth.mac()
    }

    fn device(&mut self) -> &mut Lan9118 {
        &mut self.eth
    }

    fn take_storage(&mut self) -> Option<RamFlash<'static>> {
        if core::mem::replace(&mut self.storage_taken, true) {
            return None;
        }
        // SAFETY: STORAGE_BASE..+STORAGE_LEN is SRAM that memory.x keeps out of every section
        // (so nothing else of the program reads or writes it), and `storage_taken` makes this
        // the only slice of it.
        let bytes =
            unsafe { core::slice::from_raw_parts_mut(STORAGE_BASE as *mut u8, STORAGE_LEN) };
        Some(RamFlash::new(bytes))
    }

    fn now(&mut self) -> Instant {
        self.clock.now()
    }

    fn rx_pending(&mut self) -> bool {
        // The LAN9118 handler masks its line so a pending frame does not re-enter it; the
        // frames are drained by the next interface poll, then the line is unmasked here.
        // Acknowledging first, then looking at the FIFO: a frame that arrives after the look
        // raises the line again, which ends the WFI.
        self.eth.clear_interrupts();
        // SAFETY: unmasking lines whose handlers (DefaultHandler below) only mask them again
        // or acknowledge the timer; no data is shared with them.
        unsafe {
            NVIC::unmask(Irq(LAN9118_IRQ));
            NVIC::unmask(Irq(timer::WAKE_IRQ));
        }
        self.eth.frame_waiting()
    }

    fn wake_at(&mut self, now: Instant, at: Instant) {
        // Rounded up: the clock counts whole milliseconds, and a wake-up before `at` only
        // goes round the sleep loop again.
        timer::wake_after((at - now).total_micros().div_ceil(1000));
    }
}

#[entry]
fn main() -> ! {
    p2p_firmware::stack::paint();
    defmt::info!("p2p-blocks firmware on mps2-an386");
    // SAFETY: 0x4020_0000 is the MPS2's LAN9118 register block, and only this driver uses it.
    let eth = match unsafe { Lan9118::new(LAN9118_BASE) } {
        Ok(eth) => eth,
        Err(error) => defmt::panic!("LAN9118: {}", error),
    };
    let mut board = Mps2 {
        eth,
        clock: timer::Clock::start(),
        storage_taken: false,
    };
    p2p_firmware::run(&mut board)
}

/// Every device interrupt lands here (the board has no PAC): the LAN9118's line is masked
/// until the main loop has drained the frames; the wake-up timer is acknowledged.
#[exception]
unsafe fn DefaultHandler(irq: i16) {
    match u16::try_from(irq) {
        Ok(LAN9118_IRQ) => NVIC::mask(Irq(LAN9118_IRQ)),
        Ok(timer::WAKE_IRQ) => timer::acknowledge_wake(),
        _ => defmt::panic!("unexpected interrupt {}", irq),
    }
}

/// Every fault, and the end of every panic: panic-probe logs the panic's message and location
/// over defmt, then raises a HardFault. Under QEMU this ends the emulation with a failure code
/// the tests see; on a board without a debugger attached the semihosting call traps, and the
/// fault resets it.
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    defmt::error!("hard fault at pc {=u32:#x}", frame.pc());
    debug::exit(debug::EXIT_FAILURE);
    cortex_m::peripheral::SCB::sys_reset()
}

/// `defmt::panic!` has already logged its message: straight to the HardFault, as panic-probe's
/// own handler ends.
#[defmt::panic_handler]
fn defmt_panic() -> ! {
    panic_probe::hard_fault()
}
