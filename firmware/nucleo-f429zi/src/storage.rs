//! A filling node's storage: the top 896 KiB of the STM32F429ZI's internal flash (bank 2,
//! sectors 17 to 23, 128 KiB each), as `embedded-storage` NOR flash through stm32f4xx-hal.
//!
//! The program lives in bank 1 and is never touched. The flash is unlocked only for each
//! erase or write. A 128 KiB sector erase takes 1 to 2 s (up to 4 s at byte parallelism), so
//! erases go one sector at a time with the watchdog fed before each.

use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use p2p_core::partition::Partition;
use stm32_eth::hal::flash::{Error, FlashExt, LockedFlash};
use stm32_eth::stm32::{FLASH, IWDG};

/// Bank 2 sectors 17-23: from 1 MiB + 128 KiB to the end of the 2 MiB flash.
pub const STORAGE_START: u32 = 0x12_0000;
pub const STORAGE_LEN: u32 = 0xE_0000;
/// What IWDG_KR takes to restart the countdown.
const WATCHDOG_RELOAD_KEY: u16 = 0xAAAA;

/// The whole internal flash (offset 0 at 0x0800_0000), unlocked per operation.
pub struct InternalFlash {
    flash: LockedFlash,
}

impl InternalFlash {
    /// The storage partition of the flash.
    pub fn storage(flash: FLASH) -> Option<Partition<Self>> {
        Partition::new(
            Self {
                flash: LockedFlash::new(flash),
            },
            STORAGE_START,
            STORAGE_LEN,
        )
        .ok()
    }
}

fn feed_watchdog() {
    // SAFETY: writing the reload key to IWDG_KR is one store that only restarts the
    // watchdog's countdown; it cannot change its configuration, whoever else feeds it.
    unsafe {
        (*IWDG::ptr())
            .kr
            .write(|w| w.key().bits(WATCHDOG_RELOAD_KEY))
    }
}

impl ErrorType for InternalFlash {
    type Error = Error;
}

impl ReadNorFlash for InternalFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Error> {
        ReadNorFlash::read(&mut self.flash, offset, bytes)
    }

    fn capacity(&self) -> usize {
        ReadNorFlash::capacity(&self.flash)
    }
}

impl NorFlash for InternalFlash {
    const WRITE_SIZE: usize = 1;
    const ERASE_SIZE: usize = 128 * 1024;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Error> {
        let mut sector = from;
        while sector < to {
            feed_watchdog();
            let end = sector + Self::ERASE_SIZE as u32;
            NorFlash::erase(&mut self.flash.unlocked(), sector, end)?;
            sector = end;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Error> {
        NorFlash::write(&mut self.flash.unlocked(), offset, bytes)
    }
}
