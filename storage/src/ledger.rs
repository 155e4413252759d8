//! The sync ledger (`sync.ledger`): a small shared file mapping that records, after every
//! completed sync, how far each segment is synced and which hard-state generation is synced.
//!
//! Why a mapping: a store into a shared file mapping reaches the page cache at once and survives
//! the process being killed with SIGKILL, without a syscall. So after a `kill -9`, the ledger
//! still says exactly what was synced, and [`crate::power_cut`] can tear the directory as a power
//! cut would. Recovery also uses it as the durable point (storage rule 12 of docs/RULES.md): bytes
//! below a segment's synced offset must be valid. After a *real* power cut the ledger itself may be
//! older than the last sync (it is not synced on every sync): that can only make it report *less*
//! as synced, never more, so recovery stays lenient-but-safe (see docs/DURABILITY.md).
//!
//! A segment without a ledger slot is fully synced (its slot is freed once a sealed segment is
//! synced to its end).

use crate::error::{FatalError, Result, StorageError};
use crate::format::{
    self, LDG_HARD_STATE_SYNCED_GEN, LDG_HEADER_CRC, LDG_SLOT_COUNT, LDG_SLOT_SEQ, LDG_SLOT_SYNCED,
    LDG_VERSION, LEDGER_FILE, LEDGER_FILE_BYTES, LEDGER_HEADER_BYTES, LEDGER_MAGIC,
    LEDGER_SLOT_BYTES, LEDGER_SLOTS,
};
use crate::sys::{self, Faults};
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A parsed ledger image (read-only view, used by recovery, power cuts and the inspector).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerView {
    /// Hard-state generation covered by the last completed hard-state sync.
    pub hard_state_synced_generation: u64,
    /// Per segment sequence number: bytes `[0, synced)` are covered by a completed sync.
    /// Segments absent from the map are fully synced.
    pub segment_synced_bytes: BTreeMap<u64, u64>,
}

/// Parses a ledger image; `Err` says why it cannot be trusted.
pub fn parse_ledger(b: &[u8]) -> Result<LedgerView, String> {
    if b.len() < LEDGER_FILE_BYTES {
        return Err(format!(
            "ledger is {} bytes, expected {LEDGER_FILE_BYTES}",
            b.len()
        ));
    }
    if b[..8] != LEDGER_MAGIC {
        return Err("ledger magic is not SHMRLDG".into());
    }
    let stored = format::get_u32(b, LDG_HEADER_CRC);
    let computed = format::crc_seeded(0, &b[..16]);
    if stored != computed {
        return Err(format!(
            "ledger header checksum mismatch ({stored:#010x} vs {computed:#010x})"
        ));
    }
    let v = format::get_u32(b, LDG_VERSION);
    if v != format::FORMAT_VERSION {
        return Err(format!("ledger version {v}"));
    }
    let n = format::get_u32(b, LDG_SLOT_COUNT) as usize;
    if n != LEDGER_SLOTS {
        return Err(format!("ledger slot count {n}, expected {LEDGER_SLOTS}"));
    }
    let mut view = LedgerView {
        hard_state_synced_generation: format::get_u64(b, LDG_HARD_STATE_SYNCED_GEN),
        ..LedgerView::default()
    };
    for i in 0..n {
        let at = LEDGER_HEADER_BYTES + i * LEDGER_SLOT_BYTES;
        let seq = format::get_u64(b, at + LDG_SLOT_SEQ);
        if seq != 0 {
            view.segment_synced_bytes
                .insert(seq, format::get_u64(b, at + LDG_SLOT_SYNCED));
        }
    }
    Ok(view)
}

/// Reads and parses the ledger of `dir` with `pread` (no mapping: safe on a live directory).
pub fn read_ledger(dir: &Path) -> Result<Option<LedgerView>, String> {
    let path = dir.join(LEDGER_FILE);
    let Ok(f) = std::fs::File::open(&path) else {
        return Ok(None);
    };
    let mut b = vec![0u8; LEDGER_FILE_BYTES];
    let n = sys::pread_full(&f, &mut b, 0).map_err(|e| e.to_string())?;
    b.truncate(n);
    parse_ledger(&b).map(Some)
}

/// The live, writable ledger of an open data directory.
#[derive(Debug)]
pub(crate) struct Ledger {
    map: memmap2::MmapRaw,
    path: PathBuf,
}

impl Ledger {
    /// Opens (or creates, or replaces an unreadable) ledger. Returns the ledger and what it said
    /// before this open (`None` when it was missing or unreadable: durable point unknown).
    pub(crate) fn open(dir: &Path, faults: &Faults) -> Result<(Ledger, Option<LedgerView>)> {
        let path = dir.join(LEDGER_FILE);
        let before = match read_ledger(dir) {
            Ok(v) => v,
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason,
                    "sync ledger unreadable: recreating it; the durable point of the open segment is unknown");
                None
            }
        };
        if before.is_none() {
            let tmp = dir.join(format!("{LEDGER_FILE}{}", format::TMP_SUFFIX));
            let _ = std::fs::remove_file(&tmp);
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| StorageError::io("creating", &tmp, e))?;
            sys::allocate(&f, LEDGER_FILE_BYTES as u64, &tmp, faults)?;
            let mut hdr = [0u8; LEDGER_HEADER_BYTES];
            hdr[..8].copy_from_slice(&LEDGER_MAGIC);
            format::put_u32(&mut hdr, LDG_VERSION, format::FORMAT_VERSION);
            format::put_u32(&mut hdr, LDG_SLOT_COUNT, LEDGER_SLOTS as u32);
            let crc = format::crc_seeded(0, &hdr[..16]);
            format::put_u32(&mut hdr, LDG_HEADER_CRC, crc);
            f.write_all_at(&hdr, 0)
                .map_err(|e| StorageError::io("writing", &tmp, e))?;
            sys::fdatasync(&f, &tmp, faults).map_err(StorageError::Fatal)?;
            std::fs::rename(&tmp, &path).map_err(|e| StorageError::io("renaming", &path, e))?;
            sys::fsync_dir(dir, faults).map_err(StorageError::Fatal)?;
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io("opening", &path, e))?;
        let map = memmap2::MmapOptions::new()
            .len(LEDGER_FILE_BYTES)
            .map_raw(&f)
            .map_err(|e| StorageError::io("mapping", &path, e))?;
        Ok((Ledger { map, path }, before))
    }

    fn word(&self, at: usize) -> &AtomicU64 {
        assert!(at % 8 == 0 && at + 8 <= LEDGER_FILE_BYTES);
        // SAFETY: `at` is 8-aligned and in bounds of the mapping (asserted; the mapping is
        // page-aligned), the mapping lives as long as `self`, and every access to ledger words
        // goes through atomics, so there is no data race with other threads of this process.
        unsafe { &*(self.map.as_mut_ptr().add(at) as *const AtomicU64) }
    }

    fn slot_at(slot: usize) -> usize {
        LEDGER_HEADER_BYTES + slot * LEDGER_SLOT_BYTES
    }

    /// Records the hard-state generation covered by a completed sync.
    pub(crate) fn set_hard_state_synced(&self, generation: u64) {
        self.word(LDG_HARD_STATE_SYNCED_GEN)
            .store(generation, Ordering::Release);
    }

    /// Clears every slot (after recovery synced everything it kept).
    pub(crate) fn clear_segments(&self) {
        for i in 0..LEDGER_SLOTS {
            self.word(Self::slot_at(i) + LDG_SLOT_SEQ)
                .store(0, Ordering::Release);
            self.word(Self::slot_at(i) + LDG_SLOT_SYNCED)
                .store(0, Ordering::Release);
        }
    }

    /// Takes a free slot for segment `seq`, synced up to `synced`. `None` when all are taken.
    pub(crate) fn alloc(&self, seq: u64, synced: u64) -> Option<usize> {
        for i in 0..LEDGER_SLOTS {
            let s = self.word(Self::slot_at(i) + LDG_SLOT_SEQ);
            if s.load(Ordering::Acquire) == 0 {
                // Synced offset first, so a reader never sees the seq with a stale offset.
                self.word(Self::slot_at(i) + LDG_SLOT_SYNCED)
                    .store(synced, Ordering::Release);
                s.store(seq, Ordering::Release);
                return Some(i);
            }
        }
        None
    }

    /// Makes the slots durable (msync of the ledger). Called after a slot is taken, before its
    /// segment holds records: a ledger image older than the allocation would not name the
    /// segment, and a segment absent from the ledger counts as fully synced (found by the crash
    /// file system, docs/CRASHFS.md). Stale *offsets* only under-report, which is safe.
    pub(crate) fn sync_slots(&self) -> Result<(), Arc<FatalError>> {
        sys::msync(&self.map, 0, LEDGER_FILE_BYTES as u64, &self.path, &None)
    }

    /// Records that segment slot `slot` is synced up to `synced` bytes.
    pub(crate) fn set_synced(&self, slot: usize, synced: u64) {
        self.word(Self::slot_at(slot) + LDG_SLOT_SYNCED)
            .store(synced, Ordering::Release);
    }

    /// Frees a slot: its segment is fully synced (or deleted).
    pub(crate) fn free(&self, slot: usize) {
        self.word(Self::slot_at(slot) + LDG_SLOT_SEQ)
            .store(0, Ordering::Release);
    }

    #[allow(dead_code)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_free_slots_mean_fully_synced() {
        let dir = tempfile::tempdir().unwrap();
        let (l, before) = Ledger::open(dir.path(), &None).unwrap();
        assert!(before.is_none());
        let a = l.alloc(7, 64).unwrap();
        let b = l.alloc(8, 64).unwrap();
        l.set_synced(a, 4096);
        l.set_hard_state_synced(3);
        l.free(b);
        let v = read_ledger(dir.path()).unwrap().unwrap();
        assert_eq!(v.hard_state_synced_generation, 3);
        assert_eq!(v.segment_synced_bytes.get(&7), Some(&4096));
        assert_eq!(v.segment_synced_bytes.get(&8), None);
        drop(l);
        let (_l, before) = Ledger::open(dir.path(), &None).unwrap();
        assert_eq!(before.unwrap().segment_synced_bytes.get(&7), Some(&4096));
    }

    #[test]
    fn damaged_ledger_is_rejected_not_trusted() {
        let mut img = vec![0u8; LEDGER_FILE_BYTES];
        assert!(parse_ledger(&img).is_err());
        img[..8].copy_from_slice(&LEDGER_MAGIC);
        assert!(parse_ledger(&img).unwrap_err().contains("checksum"));
        assert!(parse_ledger(&img[..100]).is_err());
    }
}
