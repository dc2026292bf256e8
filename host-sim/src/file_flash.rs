//! A file as NOR flash, for `--store`: what the board keeps in its flash, host-sim keeps in a
//! file, through the same `FlashStore`.
//!
//! Bytes are stored inverted, so that a hole in a sparse file (and anything past its end) reads
//! as erased flash (0xFF) and an erase is a hole punched in the file: erasing the data region
//! of a 1 GiB file costs nothing, and the file takes only the room of what was written.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash, check_erase, check_read,
    check_write,
};
use nix::fcntl::{FallocateFlags, fallocate};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// What the file flash spans: the u32 offsets of `NorFlash`, less one erase unit.
const CAPACITY: usize = 0xFFFF_F000;

#[derive(Debug)]
pub struct FileFlashError(pub NorFlashErrorKind);

impl NorFlashError for FileFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}

pub struct FileFlash {
    file: File,
}

impl FileFlash {
    /// Opens `path`, creating an empty (erased) one if there is none.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(Self { file })
    }
}

fn io_error(error: std::io::Error) -> FileFlashError {
    log::error!("store file: {error}");
    FileFlashError(NorFlashErrorKind::Other)
}

impl ErrorType for FileFlash {
    type Error = FileFlashError;
}

impl ReadNorFlash for FileFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        check_read(self, offset, bytes.len()).map_err(FileFlashError)?;
        let mut done = 0;
        while done < bytes.len() {
            let at = u64::from(offset) + done as u64;
            match self.file.read_at(&mut bytes[done..], at) {
                // Past the end of the file: never written, so erased.
                Ok(0) => {
                    bytes[done..].fill(0);
                    break;
                }
                Ok(len) => done += len,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(io_error(error)),
            }
        }
        bytes.iter_mut().for_each(|byte| *byte = !*byte);
        Ok(())
    }

    fn capacity(&self) -> usize {
        CAPACITY
    }
}

impl NorFlash for FileFlash {
    const WRITE_SIZE: usize = 1;
    const ERASE_SIZE: usize = 4096;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        check_erase(self, from, to).map_err(FileFlashError)?;
        let len = i64::from(to - from);
        let mode = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        if fallocate(&self.file, mode, i64::from(from), len).is_ok() {
            return Ok(());
        }
        // A file system without holes: write the zeros out, but only within the file.
        let size = self.file.metadata().map_err(io_error)?.len();
        let end = u64::from(to).min(size);
        let zeros = vec![0u8; 64 * 1024];
        let mut at = u64::from(from);
        while at < end {
            let len = (end - at).min(zeros.len() as u64) as usize;
            self.file
                .write_all_at(&zeros[..len], at)
                .map_err(io_error)?;
            at += len as u64;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        check_write(self, offset, bytes.len()).map_err(FileFlashError)?;
        let inverted: Vec<u8> = bytes.iter().map(|byte| !byte).collect();
        self.file
            .write_all_at(&inverted, u64::from(offset))
            .map_err(io_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwritten_and_erased_bytes_read_as_erased() {
        let dir = std::env::temp_dir().join(format!("file-flash-{}", std::process::id()));
        let mut flash = FileFlash::open(&dir).unwrap();
        let mut out = [0u8; 8];
        flash.read(10_000, &mut out).unwrap();
        assert_eq!(out, [0xFF; 8]);
        flash.write(8192, &[1, 2, 3]).unwrap();
        flash.read(8190, &mut out).unwrap();
        assert_eq!(out, [0xFF, 0xFF, 1, 2, 3, 0xFF, 0xFF, 0xFF]);
        flash.erase(8192, 12288).unwrap();
        flash.read(8190, &mut out).unwrap();
        assert_eq!(out, [0xFF; 8]);
        drop(flash);
        let _ = std::fs::remove_file(&dir);
    }
}
