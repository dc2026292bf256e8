//! The MPS2's two CMSDK APB timers: TIMER0 free-running as the clock, TIMER1 as a one-shot
//! wake-up, so the CPU sleeps in WFI until the network stack next needs it and no periodic
//! tick wakes an idle board (or QEMU's host CPU).

use core::ptr::{read_volatile, write_volatile};
use smoltcp::time::Instant;

/// The timers count the 25 MHz system clock.
const TICKS_PER_MS: u64 = 25_000;
/// TIMER1 must fire before TIMER0 wraps (171 s) so no wrap goes unseen.
pub const MAX_SLEEP_MS: u64 = 60_000;

const TIMER0_BASE: usize = 0x4000_0000;
const TIMER1_BASE: usize = 0x4000_1000;
/// TIMER1's interrupt line.
pub const WAKE_IRQ: u16 = 9;

const CTRL: usize = 0x0;
const VALUE: usize = 0x4;
const RELOAD: usize = 0x8;
const INT_CLEAR: usize = 0xC;
const CTRL_ENABLE: u32 = 1 << 0;
const CTRL_IRQ_ENABLE: u32 = 1 << 3;

fn write(base: usize, offset: usize, value: u32) {
    // SAFETY: `base` is one of the two fixed CMSDK timer blocks of this board and `offset`
    // one of its 4-byte registers; only this module touches them.
    unsafe { write_volatile((base + offset) as *mut u32, value) }
}

fn read(base: usize, offset: usize) -> u32 {
    // SAFETY: as in `write`.
    unsafe { read_volatile((base + offset) as *const u32) }
}

/// Milliseconds since start-up, from TIMER0's down-count.
pub struct Clock {
    last_value: u32,
    ticks: u64,
}

impl Clock {
    pub fn start() -> Self {
        write(TIMER0_BASE, CTRL, 0);
        write(TIMER0_BASE, RELOAD, u32::MAX);
        write(TIMER0_BASE, VALUE, u32::MAX);
        write(TIMER0_BASE, CTRL, CTRL_ENABLE);
        Self {
            last_value: u32::MAX,
            ticks: 0,
        }
    }

    pub fn now(&mut self) -> Instant {
        let value = read(TIMER0_BASE, VALUE);
        // A down-counter: elapsed ticks are last - now, modulo the wrap.
        self.ticks += u64::from(self.last_value.wrapping_sub(value));
        self.last_value = value;
        Instant::from_millis((self.ticks / TICKS_PER_MS) as i64)
    }
}

/// Arms TIMER1 to interrupt after `ms` milliseconds (at most a minute).
pub fn wake_after(ms: u64) {
    let ticks = (ms.clamp(1, MAX_SLEEP_MS) * TICKS_PER_MS) as u32;
    write(TIMER1_BASE, CTRL, 0);
    write(TIMER1_BASE, INT_CLEAR, 1);
    write(TIMER1_BASE, RELOAD, ticks);
    write(TIMER1_BASE, VALUE, ticks);
    write(TIMER1_BASE, CTRL, CTRL_ENABLE | CTRL_IRQ_ENABLE);
}

/// Stops TIMER1 and acknowledges its interrupt; called from its handler.
pub fn acknowledge_wake() {
    write(TIMER1_BASE, CTRL, 0);
    write(TIMER1_BASE, INT_CLEAR, 1);
}
