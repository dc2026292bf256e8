//! Measuring the peak stack (as on mps2-an386): the free stack is painted with a pattern at
//! start-up, and the deepest overwritten word tells how much was ever used.

/// Bytes painted below the top of the stack at start-up, at most: the same budget as the
/// other boards, so the figures compare. The paint never reaches below the statics.
const PAINTED: usize = 48 * 1024;
const PAINT: u32 = 0xDEAD_C0DE;

unsafe extern "C" {
    static _stack_start: u32;
    /// cortex-m-rt's end of the statics (.data, .bss, .uninit).
    static __sheap: u32;
}

fn stack_top() -> usize {
    // Only the address of the linker-provided symbol is taken, never its value.
    core::ptr::addr_of!(_stack_start) as usize
}

fn paint_bottom() -> usize {
    // As above: an address only.
    let statics_end = core::ptr::addr_of!(__sheap) as usize;
    (stack_top() - PAINTED).max(statics_end)
}

/// Paints the stack below the current frame. Called first thing in `main`.
pub fn paint() {
    let here = cortex_m::register::msp::read() as usize;
    let bottom = paint_bottom();
    // Leave 256 bytes below the current frame alone: this function's own frame lives there.
    let mut address = (here - 256) & !3;
    while address >= bottom {
        // SAFETY: the words between `bottom` (at or above the end of the statics) and the
        // current stack pointer are unused stack of this single-threaded program; nothing
        // lives there yet, and no interrupt is enabled this early.
        unsafe { core::ptr::write_volatile(address as *mut u32, PAINT) };
        address -= 4;
    }
}

/// The most stack ever used, in bytes, as far down as the paint reaches.
pub fn peak_use() -> usize {
    let mut address = paint_bottom();
    // SAFETY: reads of the painted region, which is within RAM and word-aligned.
    while address < stack_top()
        && unsafe { core::ptr::read_volatile(address as *const u32) } == PAINT
    {
        address += 4;
    }
    stack_top() - address
}
