//! Sleeping until the next deadline or frame: one race-free loop for every board, which
//! provides only the hardware bits ([`Board::rx_pending`], [`Board::wake_at`]).

use crate::Board;
use smoltcp::time::Instant;

/// Sleeps in WFI until a frame arrives or `deadline` passes (`None`: no deadline), and for at
/// most the board's [`Board::MAX_SLEEP`]; returns at once if the deadline has already passed
/// or a frame is waiting.
///
/// The check for work and the WFI run in one critical section (PRIMASK set): an interrupt
/// that comes after the check still ends the WFI, which wakes on any pending interrupt whatever
/// PRIMASK says, and its handler runs as the critical section ends. So no wake-up is lost
/// between the check and the sleep. Any wake-up (a frame, the board's timer or tick) goes
/// round the loop again, and only work or the deadline ends it.
pub fn sleep_until<B: Board>(board: &mut B, deadline: Option<Instant>) {
    let limit = board.now() + B::MAX_SLEEP;
    let until = deadline.map_or(limit, |at| at.min(limit));
    while cortex_m::interrupt::free(|_| {
        let now = board.now();
        // Compared, never subtracted: smoltcp's `Instant - Instant` is the absolute
        // difference, so a deadline already passed would become a sleep of that long.
        if now >= until || board.rx_pending() {
            return false;
        }
        board.wake_at(now, until);
        cortex_m::asm::wfi();
        true
    }) {}
}
