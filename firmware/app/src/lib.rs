//! The board-independent firmware: everything but the Ethernet driver, the clock and the
//! wake-up hardware (the sleep itself is [`sleep`]'s, for every board).
//! Each board crate implements [`Board`] and calls [`run`]; the serving itself is p2p-core's
//! smoltcp driver, the same code host-sim runs.
#![no_std]

#[cfg(feature = "bench-raw-tcp")]
mod bench_raw;
pub mod network;
mod serve;
pub mod settings;
mod sleep;
pub mod stack;

pub use serve::{CONNECTIONS, run};

use embedded_storage::nor_flash::NorFlash;
use smoltcp::phy::Device;
use smoltcp::time::{Duration, Instant};

/// What the firmware needs from a board.
pub trait Board {
    type Device: Device;
    /// NOR flash that keeps a filling node's file across resets (`P2P_MANIFEST`).
    type Storage: NorFlash;
    /// The longest the board sleeps at once, whatever the deadline: within its wake-up timer's
    /// range and its watchdog's timeout.
    const MAX_SLEEP: Duration;

    /// For the log.
    fn name(&self) -> &'static str;
    /// The Ethernet MAC address.
    fn mac(&self) -> [u8; 6];
    fn device(&mut self) -> &mut Self::Device;
    /// The storage, taken once by a filling node.
    fn take_storage(&mut self) -> Option<Self::Storage>;
    /// Milliseconds since start-up.
    fn now(&mut self) -> Instant;
    /// Whether a received frame is waiting (or its interrupt came since the last poll), with
    /// the receive interrupt armed again so that the next frame ends a WFI. Called with
    /// interrupts masked, right before the main loop sleeps (see `sleep::sleep_until`).
    fn rx_pending(&mut self) -> bool;
    /// Makes an interrupt wake the core by `at` (later than `now`) at the latest: boards with
    /// a one-shot timer arm it here; boards whose periodic tick wakes the core anyway need
    /// nothing. Called with interrupts masked, right before the WFI.
    fn wake_at(&mut self, now: Instant, at: Instant) {
        let _ = (now, at);
    }
    /// Called every time round the main loop, before polling: boards with a watchdog feed it,
    /// boards with a PHY follow its link.
    fn housekeeping(&mut self, now: Instant) {
        let _ = now;
    }
}
