//! Measuring the peak stack: the free stack is painted with a pattern at start-up, and the
//! deepest overwritten word tells how much was ever used.

/// Bytes painted below the stack pointer at start-up; the firmware's stack must stay within
/// it for the measurement to count. Twice the RAM budget (48 KiB, for 64 KiB parts), so a
/// build over budget shows by how much instead of reading as exactly the painted size.
const PAINTED: usize = 96 * 1024;
const PAINT: u32 = 0xDEAD_C0DE;

unsafe extern "C" {
    static _stack_start: u32;
}

fn stack_top() -> usize {
    // Only the address of the linker-provided symbol is taken, never its value.
    core::ptr::addr_of!(_stack_start) as usize
}

/// Paints the stack below the current frame. Called first thing in `main`.
pub fn paint() {
    let here = cortex_m::register::msp::read() as usize;
    let bottom = stack_top() - PAINTED;
    // Leave 256 bytes below the current frame alone: this function's own frame lives there.
    let mut address = (here - 256) & !3;
    while address >= bottom {
        // SAFETY: the words between `bottom` and the current stack pointer are unused stack
        // of this single-threaded program; nothing lives there yet.
        unsafe { core::ptr::write_volatile(address as *mut u32, PAINT) };
        address -= 4;
    }
}

/// The most stack ever used, in bytes, as far down as the paint reaches.
pub fn peak_use() -> usize {
    let bottom = stack_top() - PAINTED;
    let mut address = bottom;
    // SAFETY: reads of the painted region, which is within RAM and word-aligned.
    while address < stack_top()
        && unsafe { core::ptr::read_volatile(address as *const u32) } == PAINT
    {
        address += 4;
    }
    stack_top() - address
}
