//! Crash-safe small records in two alternating checksummed 512-byte slots: the hard state
//! (`hardstate`) and the compaction point (`log.meta`).
//!
//! Each slot owns a sector, so a torn write damages at most one. A write always goes to the slot
//! that does *not* hold the last synced generation, so an unsynced write can never damage the
//! last synced value; reading picks the valid slot with the highest generation.

use crate::error::{Corruption, FatalError, Result, StorageError};
use crate::format::{self, SLOT_BYTES, SLOT_FILE_BYTES, Slot, TMP_SUFFIX};
use crate::sys::{self, Faults};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Decodes both slots of a two-slot file image: (slot 0, slot 1), each `Err(reason)` if invalid.
pub(crate) fn decode_both(
    magic: &[u8; 8],
    image: &[u8],
) -> (Result<Slot, String>, Result<Slot, String>) {
    let s0 = decode_at(magic, image, 0);
    let s1 = decode_at(magic, image, 1);
    (s0, s1)
}

fn decode_at(magic: &[u8; 8], image: &[u8], slot: usize) -> Result<Slot, String> {
    let start = slot * SLOT_BYTES as usize;
    match image.get(start..start + SLOT_BYTES as usize) {
        Some(b) => format::decode_slot(magic, b),
        None => Err("file too short for this slot".into()),
    }
}

/// Picks the current value: the valid slot with the highest generation.
pub(crate) fn pick(s0: &Result<Slot, String>, s1: &Result<Slot, String>) -> Option<(usize, Slot)> {
    match (s0, s1) {
        (Ok(a), Ok(b)) => Some(if b.generation > a.generation {
            (1, *b)
        } else {
            (0, *a)
        }),
        (Ok(a), Err(_)) => Some((0, *a)),
        (Err(_), Ok(b)) => Some((1, *b)),
        (Err(_), Err(_)) => None,
    }
}

/// An open two-slot file.
#[derive(Debug)]
pub(crate) struct SlotFile {
    file: File,
    path: PathBuf,
    magic: [u8; 8],
    current: Slot,
    /// Slot holding the last synced generation: writes go to the other one.
    synced_slot: usize,
    synced_generation: u64,
    faults: Faults,
}

impl SlotFile {
    /// Opens `dir/name`, creating it (temp, sync, rename, directory sync: storage rule 2
    /// of docs/RULES.md) with `initial` in both slots if absent.
    pub(crate) fn open(dir: &Path, name: &str, magic: [u8; 8], faults: Faults) -> Result<SlotFile> {
        let path = dir.join(name);
        if !path.exists() {
            let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
            let _ = std::fs::remove_file(&tmp);
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| StorageError::io("creating", &tmp, e))?;
            let slot = format::encode_slot(&magic, &Slot::default());
            f.write_all_at(&slot, 0)
                .and_then(|_| f.write_all_at(&slot, SLOT_BYTES))
                .map_err(|e| StorageError::io("writing", &tmp, e))?;
            sys::fdatasync(&f, &tmp, &faults).map_err(StorageError::Fatal)?;
            std::fs::rename(&tmp, &path).map_err(|e| StorageError::io("renaming", &path, e))?;
            sys::fsync_dir(dir, &faults).map_err(StorageError::Fatal)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io("opening", &path, e))?;
        let mut image = vec![0u8; SLOT_FILE_BYTES as usize];
        let n = sys::pread_full(&file, &mut image, 0)
            .map_err(|e| StorageError::io("reading", &path, e))?;
        image.truncate(n);
        let (s0, s1) = decode_both(&magic, &image);
        let Some((slot, current)) = pick(&s0, &s1) else {
            return Err(StorageError::Corrupt(Corruption {
                file: path,
                offset: 0,
                index: None,
                expected: "at least one valid checksummed slot".into(),
                found: format!(
                    "slot 0: {}; slot 1: {}",
                    s0.err().unwrap_or_default(),
                    s1.err().unwrap_or_default()
                ),
            }));
        };
        // After a crash the chosen slot may only be in the page cache: sync it before relying
        // on it as the "synced" slot.
        sys::fdatasync(&file, &path, &faults).map_err(StorageError::Fatal)?;
        Ok(SlotFile {
            file,
            path,
            magic,
            current,
            synced_slot: slot,
            synced_generation: current.generation,
            faults,
        })
    }

    pub(crate) fn current(&self) -> Slot {
        self.current
    }

    pub(crate) fn synced_generation(&self) -> u64 {
        self.synced_generation
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a new value; syncs it when `sync` (then it becomes the protected slot).
    pub(crate) fn write(&mut self, a: u64, b: u64, c: u64, sync: bool) -> Result<()> {
        let slot = Slot {
            generation: self.current.generation + 1,
            a,
            b,
            c,
        };
        let target = 1 - self.synced_slot;
        let bytes = format::encode_slot(&self.magic, &slot);
        self.file
            .write_all_at(&bytes, target as u64 * SLOT_BYTES)
            .map_err(|e| StorageError::io("writing", &self.path, e))?;
        self.current = slot;
        if sync {
            self.sync_inner()?;
            self.synced_slot = target;
        }
        Ok(())
    }

    fn sync_inner(&mut self) -> Result<(), StorageError> {
        sys::fdatasync(&self.file, &self.path, &self.faults).map_err(StorageError::Fatal)?;
        self.synced_generation = self.current.generation;
        Ok(())
    }

    /// Syncs the current value if it is not yet synced.
    pub(crate) fn sync(&mut self) -> Result<(), Arc<FatalError>> {
        if self.synced_generation == self.current.generation {
            return Ok(());
        }
        sys::fdatasync(&self.file, &self.path, &self.faults)?;
        self.synced_generation = self.current.generation;
        self.synced_slot = 1 - self.synced_slot;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::HARD_STATE_MAGIC;

    #[test]
    fn torn_write_of_one_slot_falls_back_to_the_last_synced_value() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = SlotFile::open(dir.path(), "hs", HARD_STATE_MAGIC, None).unwrap();
        f.write(1, 2, 3, true).unwrap();
        f.write(4, 5, 6, false).unwrap(); // unsynced: goes to the other slot
        f.write(7, 8, 9, false).unwrap(); // unsynced again: same slot, synced one untouched
        drop(f);
        // Tear the unsynced slot.
        let path = dir.path().join("hs");
        let mut img = std::fs::read(&path).unwrap();
        let (s0, s1) = decode_both(&HARD_STATE_MAGIC, &img);
        let unsynced = if s0.as_ref().map(|s| s.a) == Ok(7) {
            0
        } else {
            1
        };
        assert_eq!([s0, s1][1 - unsynced].as_ref().map(|s| s.a), Ok(1));
        img[unsynced * 512 + 30] ^= 0xff;
        std::fs::write(&path, &img).unwrap();
        let f = SlotFile::open(dir.path(), "hs", HARD_STATE_MAGIC, None).unwrap();
        assert_eq!((f.current().a, f.current().b, f.current().c), (1, 2, 3));
    }

    #[test]
    fn both_slots_invalid_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        drop(SlotFile::open(dir.path(), "hs", HARD_STATE_MAGIC, None).unwrap());
        std::fs::write(dir.path().join("hs"), vec![0x5a; 1024]).unwrap();
        let e = SlotFile::open(dir.path(), "hs", HARD_STATE_MAGIC, None).unwrap_err();
        assert!(matches!(e, StorageError::Corrupt(_)), "{e}");
    }

    #[test]
    fn newest_valid_generation_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = SlotFile::open(dir.path(), "hs", HARD_STATE_MAGIC, None).unwrap();
        for i in 1..=5 {
            f.write(i, 0, 0, true).unwrap();
        }
        drop(f);
        let f = SlotFile::open(dir.path(), "hs", HARD_STATE_MAGIC, None).unwrap();
        assert_eq!(f.current().a, 5);
        assert_eq!(f.current().generation, 5);
    }
}
