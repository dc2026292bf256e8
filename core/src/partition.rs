//! A window of a NOR flash: offset 0 of the partition is `start` of the flash. A board keeps
//! its program at the start of its flash and gives the store a partition past it.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// `len` bytes of `flash` from `start`, both multiples of its erase size.
pub struct Partition<F> {
    flash: F,
    start: u32,
    len: u32,
}

/// The partition does not lie within the flash on erase-unit boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PartitionError;

/// An access outside the partition, or the flash's own error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionAccessError(pub NorFlashErrorKind);

impl NorFlashError for PartitionAccessError {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}

impl<F: NorFlash> Partition<F> {
    /// The `len` bytes of `flash` from byte `start`; `PartitionError` unless both are multiples of
    /// the erase size and the window fits in the flash.
    pub fn new(flash: F, start: u32, len: u32) -> Result<Self, PartitionError> {
        let erase = u32::try_from(F::ERASE_SIZE).map_err(|_| PartitionError)?;
        let end = start.checked_add(len).ok_or(PartitionError)?;
        if !start.is_multiple_of(erase)
            || !len.is_multiple_of(erase)
            || end as usize > flash.capacity()
        {
            return Err(PartitionError);
        }
        Ok(Self { flash, start, len })
    }

    fn at(&self, offset: u32, len: usize) -> Result<u32, PartitionAccessError> {
        let end = u64::from(offset) + len as u64;
        if end > u64::from(self.len) {
            return Err(PartitionAccessError(NorFlashErrorKind::OutOfBounds));
        }
        Ok(self.start + offset)
    }
}

fn flash_error<E: NorFlashError>(error: E) -> PartitionAccessError {
    PartitionAccessError(error.kind())
}

impl<F: NorFlash> ErrorType for Partition<F> {
    type Error = PartitionAccessError;
}

impl<F: NorFlash> ReadNorFlash for Partition<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let at = self.at(offset, bytes.len())?;
        self.flash.read(at, bytes).map_err(flash_error)
    }

    fn capacity(&self) -> usize {
        self.len as usize
    }
}

impl<F: NorFlash> NorFlash for Partition<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let len = to
            .checked_sub(from)
            .ok_or(PartitionAccessError(NorFlashErrorKind::OutOfBounds))?;
        let at = self.at(from, len as usize)?;
        self.flash.erase(at, at + len).map_err(flash_error)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let at = self.at(offset, bytes.len())?;
        self.flash.write(at, bytes).map_err(flash_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ram_flash::RamFlash;

    #[test]
    fn offsets_are_shifted_and_bounded() {
        let mut bytes = [0u8; 4 * 4096];
        let flash = RamFlash::new(&mut bytes);
        assert!(Partition::new(flash, 100, 4096).is_err());
        {
            let flash = RamFlash::new(&mut bytes);
            let mut part = Partition::new(flash, 4096, 8192).unwrap();
            assert_eq!(part.capacity(), 8192);
            part.erase(0, 4096).unwrap();
            part.write(0, &[1, 2, 3, 4]).unwrap();
            assert_eq!(
                part.write(8192, &[0; 4]),
                Err(PartitionAccessError(NorFlashErrorKind::OutOfBounds))
            );
            assert!(part.erase(4096, 12288).is_err());
        }
        assert_eq!(&bytes[4096..4100], &[1, 2, 3, 4]);
        assert_eq!(bytes[4100], 0xFF);
    }
}
