//! NOR flash in RAM, strict about NOR rules: for tests, simulations and boards that keep the
//! store in a RAM region that survives a reset.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash, check_erase, check_read,
    check_write,
};

/// A misuse a real flash would punish silently or with corruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RamFlashError {
    /// Out of bounds or misaligned, as `embedded-storage` defines it.
    Nor(NorFlashErrorKind),
    /// A write to bytes that are not erased: NOR can only clear bits.
    NotErased {
        /// Flash offset of the first byte that is not 0xFF.
        offset: u32,
    },
}

impl NorFlashError for RamFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::Nor(kind) => *kind,
            Self::NotErased { .. } => NorFlashErrorKind::Other,
        }
    }
}

/// `bytes` as NOR flash with 4-byte writes and 4 KiB erase units (a common SPI NOR geometry).
pub struct RamFlash<'a> {
    bytes: &'a mut [u8],
}

impl<'a> RamFlash<'a> {
    /// Uses `bytes` as they are: erased where they are 0xFF. Its length should be a multiple of
    /// [`RamFlash::ERASE_SIZE`].
    pub fn new(bytes: &'a mut [u8]) -> Self {
        Self { bytes }
    }

    /// The flash contents as they stand.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes
    }
}

impl ErrorType for RamFlash<'_> {
    type Error = RamFlashError;
}

impl ReadNorFlash for RamFlash<'_> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, out: &mut [u8]) -> Result<(), Self::Error> {
        check_read(self, offset, out.len()).map_err(RamFlashError::Nor)?;
        let start = offset as usize;
        let src = self
            .bytes
            .get(start..start + out.len())
            .ok_or(RamFlashError::Nor(NorFlashErrorKind::OutOfBounds))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.bytes.len()
    }
}

impl NorFlash for RamFlash<'_> {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 4096;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        check_erase(self, from, to).map_err(RamFlashError::Nor)?;
        self.bytes
            .get_mut(from as usize..to as usize)
            .ok_or(RamFlashError::Nor(NorFlashErrorKind::OutOfBounds))?
            .fill(0xFF);
        Ok(())
    }

    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), Self::Error> {
        check_write(self, offset, data.len()).map_err(RamFlashError::Nor)?;
        let start = offset as usize;
        let dst = self
            .bytes
            .get_mut(start..start + data.len())
            .ok_or(RamFlashError::Nor(NorFlashErrorKind::OutOfBounds))?;
        if let Some(at) = dst.iter().position(|&byte| byte != 0xFF) {
            return Err(RamFlashError::NotErased {
                offset: offset + at as u32,
            });
        }
        dst.copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_erased_bytes() {
        let mut bytes = [0u8; 8192];
        let mut flash = RamFlash::new(&mut bytes);
        assert_eq!(
            flash.write(0, &[1, 2, 3, 4]),
            Err(RamFlashError::NotErased { offset: 0 })
        );
        flash.erase(0, 4096).unwrap();
        flash.write(4, &[1, 2, 3, 4]).unwrap();
        assert!(flash.write(4, &[1, 2, 3, 4]).is_err());
        assert_eq!(
            flash.write(2, &[0; 4]),
            Err(RamFlashError::Nor(NorFlashErrorKind::NotAligned))
        );
        let mut out = [0u8; 6];
        flash.read(3, &mut out).unwrap();
        assert_eq!(out, [0xFF, 1, 2, 3, 4, 0xFF]);
    }
}
