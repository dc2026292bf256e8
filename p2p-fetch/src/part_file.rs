//! The download on disk: block data goes into `OUTPUT.part` at its offset, and
//! `OUTPUT.part.blocks` records which blocks are safely there, so `--continue` refetches
//! nothing that was saved. When all is done the part is synced and renamed to `OUTPUT`.

use crate::blockset::BlockSet;
use crate::exit::{ExitCode, Failure};
use crate::log::Log;
use p2p_core::{BlockRange, Digest, Geometry};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The record's first bytes; then the file size (u32, big-endian) and the bitmap of blocks
/// done (block n is bit n % 8 of byte n / 8).
const RECORD_MAGIC: &[u8; 8] = b"p2pfblk1";
const RECORD_HEADER_LEN: usize = RECORD_MAGIC.len() + 4;

/// `OUTPUT` with `suffix` added to its file name.
pub fn with_suffix(output: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(output.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// The part file and its record, shared by every connection.
pub struct PartFile {
    output: PathBuf,
    part_path: PathBuf,
    record_path: PathBuf,
    part: File,
    record: Mutex<Record>,
}

struct Record {
    file: File,
    done: BlockSet,
    /// Blocks written since the record was last saved.
    dirty: bool,
}

impl PartFile {
    /// Opens the part file for a file of `geometry`, resuming from the record when `resume`
    /// and it matches; returns the blocks already done. An earlier partial download that is
    /// not resumed is discarded only with `force`: otherwise that is an error, so no fetched
    /// data is thrown away unasked.
    pub fn open(
        output: &Path,
        geometry: Geometry,
        resume: bool,
        force: bool,
        log: &Log,
    ) -> Result<(Self, BlockSet), Failure> {
        let part_path = with_suffix(output, ".part");
        let record_path = with_suffix(output, ".part.blocks");
        let earlier = part_path.exists();
        let not_resumed = if !earlier {
            None
        } else if !resume {
            Some(format!(
                "{} holds an earlier partial download; --continue resumes it, --force discards it",
                part_path.display()
            ))
        } else {
            match read_record(&record_path, geometry) {
                Ok(done) => {
                    return Self::create(output, geometry, part_path, record_path, Some(done));
                }
                Err(reason) => Some(format!(
                    "cannot resume: {reason}; --force discards {} and starts over",
                    part_path.display()
                )),
            }
        };
        if let Some(reason) = not_resumed {
            if !force {
                return Err(Failure::new(ExitCode::Io, reason));
            }
            log.warn(&format!(
                "discarding the earlier partial download {} (--force)",
                part_path.display()
            ));
        } else if resume {
            log.warn(&format!(
                "nothing to resume: {} does not exist; starting afresh",
                part_path.display()
            ));
        }
        Self::create(output, geometry, part_path, record_path, None)
    }

    /// Opens (or truncates, when `resumed` is `None`) the part file and writes its record.
    fn create(
        output: &Path,
        geometry: Geometry,
        part_path: PathBuf,
        record_path: PathBuf,
        resumed: Option<BlockSet>,
    ) -> Result<(Self, BlockSet), Failure> {
        let count = geometry.block_count();
        let part = OpenOptions::new()
            .write(true)
            .read(true)
            .create(true)
            .truncate(resumed.is_none())
            .open(&part_path)
            .map_err(|error| Failure::io(format!("cannot open {}", part_path.display()), error))?;
        check_free_space(&part, &part_path, geometry.file_size())?;
        part.set_len(u64::from(geometry.file_size()))
            .map_err(|error| Failure::io(format!("cannot size {}", part_path.display()), error))?;
        let done = resumed.unwrap_or_else(|| BlockSet::new(count));
        let record_file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&record_path)
            .map_err(|error| {
                Failure::io(format!("cannot open {}", record_path.display()), error)
            })?;
        let mut header = RECORD_MAGIC.to_vec();
        header.extend_from_slice(&geometry.file_size().to_be_bytes());
        header.extend_from_slice(done.as_bytes());
        record_file.write_all_at(&header, 0).map_err(|error| {
            Failure::io(format!("cannot write {}", record_path.display()), error)
        })?;
        let part_file = Self {
            output: output.to_owned(),
            part_path,
            record_path,
            part,
            record: Mutex::new(Record {
                file: record_file,
                done: done.clone(),
                dirty: false,
            }),
        };
        Ok((part_file, done))
    }

    pub fn part_path(&self) -> &Path {
        &self.part_path
    }

    /// Writes block data at its offset in the file.
    pub fn write_at(&self, offset: u32, data: &[u8]) -> Result<(), Failure> {
        self.part
            .write_all_at(data, u64::from(offset))
            .map_err(|error| {
                Failure::io(format!("cannot write {}", self.part_path.display()), error)
            })
    }

    /// Checks every block of `done` against `digests`, reading it back from the part file;
    /// those that do not match are taken out of `done` and the record, and returned.
    pub fn recheck(
        &self,
        geometry: Geometry,
        done: &mut BlockSet,
        digests: &[Digest],
    ) -> Result<BlockSet, Failure> {
        let mut bad = BlockSet::new(geometry.block_count());
        let mut bytes = vec![0u8; geometry.block_size() as usize];
        for block in (0..geometry.block_count()).map(|b| b as u16) {
            let Some(span) = geometry.span(BlockRange::single(block)) else {
                continue;
            };
            if !done.contains(block) {
                continue;
            }
            let bytes = &mut bytes[..span.len as usize];
            self.part
                .read_exact_at(bytes, u64::from(span.offset))
                .map_err(|error| {
                    Failure::io(format!("cannot read {}", self.part_path.display()), error)
                })?;
            if digests.get(usize::from(block)) != Some(&Digest::of(bytes)) {
                bad.insert(block);
                done.remove(block);
                let mut record = self.lock();
                record.done.remove(block);
                record.dirty = true;
            }
        }
        Ok(bad)
    }

    /// Notes that the blocks of `range` are written whole; the record is saved by
    /// [`PartFile::save_record`].
    pub fn mark_done(&self, range: BlockRange) {
        let mut record = self.lock();
        for block in range.start()..=range.end() {
            record.dirty |= record.done.insert(block);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes the blocks done so far durable, then records them: a crash never leaves the
    /// record claiming data that is not on disk.
    pub fn save_record(&self) -> Result<(), Failure> {
        let snapshot = {
            let mut record = self.lock();
            if !record.dirty {
                return Ok(());
            }
            record.dirty = false;
            record.done.clone()
        };
        self.part.sync_data().map_err(|error| {
            Failure::io(format!("cannot sync {}", self.part_path.display()), error)
        })?;
        let record = self.lock();
        record
            .file
            .write_all_at(snapshot.as_bytes(), RECORD_HEADER_LEN as u64)
            .map_err(|error| {
                Failure::io(
                    format!("cannot write {}", self.record_path.display()),
                    error,
                )
            })
    }

    /// Checks the size, syncs and renames the part to the output, and removes the record.
    pub fn finish(self, expected_size: u32) -> Result<(), Failure> {
        let size = self
            .part
            .metadata()
            .map_err(|error| {
                Failure::io(format!("cannot stat {}", self.part_path.display()), error)
            })?
            .len();
        if size != u64::from(expected_size) {
            return Err(Failure::new(
                crate::exit::ExitCode::Io,
                format!(
                    "{} is {size} bytes, not the {expected_size} bytes expected",
                    self.part_path.display()
                ),
            ));
        }
        self.part.sync_all().map_err(|error| {
            Failure::io(format!("cannot sync {}", self.part_path.display()), error)
        })?;
        fs::rename(&self.part_path, &self.output).map_err(|error| {
            Failure::io(
                format!(
                    "cannot rename {} to {}",
                    self.part_path.display(),
                    self.output.display()
                ),
                error,
            )
        })?;
        if let Some(directory) = self.output.parent() {
            let directory = if directory.as_os_str().is_empty() {
                Path::new(".")
            } else {
                directory
            };
            if let Ok(handle) = File::open(directory) {
                let _ = handle.sync_all();
            }
        }
        self.discard_record()
    }

    /// Removes the record (the part is complete or not worth resuming).
    pub fn discard_record(&self) -> Result<(), Failure> {
        match fs::remove_file(&self.record_path) {
            Err(error) if error.kind() != ErrorKind::NotFound => Err(Failure::io(
                format!("cannot remove {}", self.record_path.display()),
                error,
            )),
            _ => Ok(()),
        }
    }
}

/// Reads a record made for a file of `geometry`, or says why it cannot be used.
fn read_record(path: &Path, geometry: Geometry) -> Result<BlockSet, String> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|file| {
            // At most 65536 blocks: the record is never longer than this.
            file.take((RECORD_HEADER_LEN + 8192 + 1) as u64)
                .read_to_end(&mut bytes)
        })
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let (header, bitmap) = bytes.split_at(RECORD_HEADER_LEN.min(bytes.len()));
    let size = header
        .strip_prefix(RECORD_MAGIC.as_slice())
        .and_then(|size| <[u8; 4]>::try_from(size).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| format!("{} is not a p2p-fetch block record", path.display()))?;
    if size != geometry.file_size() {
        return Err(format!(
            "{} is for a {size}-byte file, but the swarm's file is {} bytes",
            path.display(),
            geometry.file_size()
        ));
    }
    BlockSet::from_bytes(geometry.block_count(), bitmap.to_vec())
        .ok_or_else(|| format!("{} is truncated or too long", path.display()))
}

/// Fails before any block is fetched when the disk cannot hold the rest of the file (the part
/// file is sparse: `set_len` alone would succeed, and the download would fail part-way).
fn check_free_space(part: &File, part_path: &Path, file_size: u32) -> Result<(), Failure> {
    let allocated = part
        .metadata()
        .map(|metadata| std::os::unix::fs::MetadataExt::blocks(&metadata) * 512)
        .unwrap_or(0);
    let stats = rustix::fs::fstatvfs(part).map_err(|error| {
        Failure::io(
            format!("cannot read the free space for {}", part_path.display()),
            error.into(),
        )
    })?;
    let free = stats.f_bavail.saturating_mul(stats.f_frsize);
    space_shortfall(u64::from(file_size), allocated, free).map_or(Ok(()), |missing| {
        Err(Failure::new(
            ExitCode::Io,
            format!(
                "not enough disk space for {}: the file is {file_size} bytes and {missing} more \
                 are needed than the {free} free",
                part_path.display()
            ),
        ))
    })
}

/// How many bytes short the disk is of holding a file of `size` whose part file already has
/// `allocated` bytes, with `free` bytes free; `None` when it fits.
fn space_shortfall(size: u64, allocated: u64, free: u64) -> Option<u64> {
    let needed = size.saturating_sub(allocated);
    (needed > free).then(|| needed - free)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_must_hold_what_is_not_yet_allocated() {
        assert_eq!(space_shortfall(1000, 0, 1000), None);
        assert_eq!(space_shortfall(1000, 0, 999), Some(1));
        // Resuming: what the part file already holds needs no new room.
        assert_eq!(space_shortfall(1000, 600, 400), None);
        assert_eq!(space_shortfall(1000, 4096, 0), None);
    }

    /// `file.bin` in a fresh directory; the directory is removed when the guard drops.
    fn scratch(name: &str) -> (PathBuf, impl Drop) {
        struct Remove(PathBuf);
        impl Drop for Remove {
            fn drop(&mut self) {
                let _ = fs::remove_dir_all(&self.0);
            }
        }
        let dir =
            std::env::temp_dir().join(format!("p2p-fetch-unit-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::create_dir_all(&dir);
        (dir.join("file.bin"), Remove(dir))
    }

    fn quiet() -> Log {
        Log {
            quiet: true,
            ..Log::default()
        }
    }

    #[test]
    fn saved_blocks_are_resumed_and_others_are_discarded_only_when_forced() {
        let (output, _cleanup) = scratch("resume");
        let geometry = Geometry::new(10 * 1024 + 5);
        let (part, done) = PartFile::open(&output, geometry, false, false, &quiet()).unwrap();
        assert!(done.is_empty());
        part.write_at(1024, &[7; 2048]).unwrap();
        part.mark_done(BlockRange::new(1, 2).unwrap());
        part.save_record().unwrap();
        drop(part);

        let (_, done) = PartFile::open(&output, geometry, true, false, &quiet()).unwrap();
        assert_eq!(done.ranges(), vec![BlockRange::new(1, 2).unwrap()]);
        // A record for another size cannot be resumed, and is not thrown away unasked.
        let other = Geometry::new(20 * 1024);
        let refused = PartFile::open(&output, other, true, false, &quiet())
            .err()
            .expect("refused");
        assert_eq!(refused.code, ExitCode::Io);
        assert!(
            refused.message.contains("cannot resume") && refused.message.contains("--force"),
            "{}",
            refused.message
        );
        // Nor without --continue.
        let refused = PartFile::open(&output, geometry, false, false, &quiet())
            .err()
            .expect("refused");
        assert!(
            refused.message.contains("--continue resumes it"),
            "{}",
            refused.message
        );
        assert_eq!(
            fs::metadata(with_suffix(&output, ".part")).unwrap().len(),
            10 * 1024 + 5,
            "the earlier part is untouched"
        );
        // --force starts over.
        let (part, done) = PartFile::open(&output, other, true, true, &quiet()).unwrap();
        assert!(done.is_empty());
        part.finish(other.file_size()).unwrap();
        assert_eq!(fs::metadata(&output).unwrap().len(), 20 * 1024);
        assert!(!with_suffix(&output, ".part").exists());
        assert!(!with_suffix(&output, ".part.blocks").exists());
    }

    #[test]
    fn garbage_records_are_refused() {
        let (output, _cleanup) = scratch("garbage");
        let record = with_suffix(&output, ".part.blocks");
        let geometry = Geometry::new(4096);
        fs::write(&record, b"not a record").unwrap();
        assert!(
            read_record(&record, geometry)
                .unwrap_err()
                .contains("not a p2p-fetch block record")
        );
        let mut truncated = RECORD_MAGIC.to_vec();
        truncated.extend_from_slice(&4096u32.to_be_bytes());
        fs::write(&record, &truncated).unwrap();
        assert!(
            read_record(&record, geometry)
                .unwrap_err()
                .contains("truncated")
        );
        truncated.push(0b1111_0101);
        fs::write(&record, &truncated).unwrap();
        assert_eq!(
            read_record(&record, geometry).map(|done| done.count()),
            Ok(2)
        );
    }
}
