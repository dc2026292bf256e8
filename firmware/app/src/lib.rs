//! The board-independent firmware: everything but the Ethernet driver, the clock and sleeping.
//! Each board crate implements [`Board`] and calls [`run`]; the serving itself is p2p-core's
//! smoltcp driver, the same code host-sim runs.
#![no_std]

pub mod network;
mod serve;
pub mod settings;

pub use serve::{CONNECTIONS, run};

use embedded_storage::nor_flash::NorFlash;
use smoltcp::phy::Device;
use smoltcp::time::Instant;

/// What the firmware needs from a board.
pub trait Board {
    type Device: Device;
    /// NOR flash that keeps a filling node's file across resets (`P2P_MANIFEST`).
    type Storage: NorFlash;

    /// For the log.
    fn name(&self) -> &'static str;
    /// The Ethernet MAC address.
    fn mac(&self) -> [u8; 6];
    fn device(&mut self) -> &mut Self::Device;
    /// The storage, taken once by a filling node.
    fn take_storage(&mut self) -> Option<Self::Storage>;
    /// Milliseconds since start-up.
    fn now(&mut self) -> Instant;
    /// Sleeps until an interrupt (a frame arrived) or until `deadline`, whichever is first;
    /// `None`: until an interrupt (boards may still wake now and then).
    fn sleep_until(&mut self, deadline: Option<Instant>);
    /// Called every time round the loop: boards with a watchdog feed it here.
    fn feed_watchdog(&mut self) {}
    /// The most stack used so far, in bytes, where the board measures it.
    fn stack_peak(&self) -> usize {
        0
    }
}
