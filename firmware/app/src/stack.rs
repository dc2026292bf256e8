//! Measuring the peak stack, the same on every board: the free stack is painted with a pattern
//! at start-up, and the lowest overwritten word tells how much was ever used.
//!
//! The stack runs from `_stack_start` (its top) down to `_stack_end` (its lowest address), as
//! the link placed it: with flip-link it lies at the bottom of RAM, below the statics, and
//! `_stack_end` is the start of RAM; with cortex-m-rt's default layout it lies above the
//! statics, down to their end. Either way the paint never touches a static.

/// At most this much below the top of the stack is painted, and so measured: twice the RAM
/// budget (48 KiB), so a build over budget shows by how much instead of reading as exactly the
/// painted size, and a board with much more RAM does not scan all of it on every measurement.
const PAINTED: usize = 96 * 1024;
const PAINT: u32 = 0xDEAD_C0DE;

unsafe extern "C" {
    static _stack_start: u32;
    static _stack_end: u32;
}

/// The stack's top and the lowest address painted.
fn bounds() -> (usize, usize) {
    // Only the addresses of the linker-provided symbols are taken, never their values.
    let top = core::ptr::addr_of!(_stack_start) as usize;
    let end = core::ptr::addr_of!(_stack_end) as usize;
    (top, top.saturating_sub(PAINTED).max(end))
}

/// Paints the free stack below the current frame. Call it first thing in `main`, before any
/// interrupt is enabled.
pub fn paint() {
    let (_, bottom) = bounds();
    let here = cortex_m::register::msp::read() as usize;
    // Leave 256 bytes below the current frame alone: this function's own frame lives there.
    let mut address = (here - 256) & !3;
    while address >= bottom {
        // SAFETY: the words between `bottom` (within the stack) and the current stack pointer
        // are unused stack of this single-threaded program; nothing lives there yet, and no
        // interrupt is enabled this early.
        unsafe { core::ptr::write_volatile(address as *mut u32, PAINT) };
        address -= 4;
    }
}

/// The most stack ever used, in bytes, as far down as the paint reaches.
pub fn peak_use() -> usize {
    let (top, bottom) = bounds();
    let mut address = bottom;
    // SAFETY: reads of the painted region, which is within RAM and word-aligned.
    while address < top && unsafe { core::ptr::read_volatile(address as *const u32) } == PAINT {
        address += 4;
    }
    top - address
}
