//! Simulated power cut for tests and `shmraft nemesis powercut`.
//!
//! A process killed with SIGKILL loses nothing written to a shared mapping (the page cache keeps
//! it), so durability has to be tested by tearing the files as a power cut would
//! (docs/FAULTS.md, "Power cut"): everything covered by a completed sync survives; every byte
//! after it is, per 512-byte sector, either kept or lost (reverted to the zeros the
//! preallocated file held), chosen by a seed. The sync ledger says what was synced.
//!
//! Model limits (docs/DURABILITY.md): a lost sector becomes zeros (the prior content of a
//! preallocated, zero-filled segment), not older data; directory operations are treated as
//! durable (segment creation, renames and unlinks are all followed by a directory fsync).

use crate::error::{Result, StorageError};
use crate::format::{
    self, HARD_STATE_FILE, HARD_STATE_MAGIC, PARTIAL_SUFFIX, SLOT_BYTES, SLOT_FILE_BYTES,
    TMP_SUFFIX,
};
use crate::ledger::read_ledger;
use crate::lock::DirLock;
use crate::slotfile;
use crate::sys;
use rand::{Rng, SeedableRng};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Sector size of the simulated medium: writes are atomic per sector, not beyond.
pub const SECTOR_BYTES: u64 = 512;

/// What a power cut did to one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentTear {
    pub path: PathBuf,
    /// Bytes `[0, synced_bytes)` were covered by a completed sync and kept.
    pub synced_bytes: u64,
    /// Unsynced non-zero 512-byte sectors that survived.
    pub sectors_kept: u64,
    /// Unsynced non-zero sectors lost (now zeros).
    pub sectors_lost: u64,
}

/// What a power cut did to a directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PowerCutReport {
    /// The seed used.
    pub seed: u64,
    /// How unsynced sectors were chosen: "drop-all", "keep-all" or "random".
    pub mode: &'static str,
    /// False if the ledger was missing or unreadable (nothing was torn then).
    pub ledger_found: bool,
    /// What happened to each segment with unsynced bytes.
    pub segments: Vec<SegmentTear>,
    /// Whether an unsynced hard-state slot was lost.
    pub hard_state_slot_lost: bool,
    /// Partial files (snapshots, prepared segments) removed or cut short.
    pub partial_files_torn: Vec<PathBuf>,
}

/// Tears the data directory `dir` of a dead process as a power cut would, chosen by `seed`.
/// Refuses ([`StorageError::Locked`]) if a live process holds the directory; a stale lock file
/// left by a killed process is ignored (the kernel released its flock).
pub fn power_cut(dir: &Path, seed: u64) -> Result<PowerCutReport> {
    let _lock = DirLock::acquire(dir)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mode = match rng.random_range(0..4u32) {
        0 => "drop-all",
        1 => "keep-all",
        _ => "random",
    };
    let mut report = PowerCutReport {
        seed,
        mode,
        ..PowerCutReport::default()
    };
    let ledger = match read_ledger(dir) {
        Ok(Some(l)) => l,
        Ok(None) | Err(_) => {
            tracing::warn!(dir = %dir.display(), "power cut: no readable sync ledger; nothing torn");
            return Ok(report);
        }
    };
    report.ledger_found = true;
    let lose = |rng: &mut rand_chacha::ChaCha8Rng| match mode {
        "drop-all" => true,
        "keep-all" => false,
        _ => rng.random_bool(0.5),
    };

    let mut names: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| StorageError::io("listing", dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    names.sort();
    for (name, path) in &names {
        if let Some(seq) = format::parse_segment_file_name(name) {
            let Some(&synced) = ledger.segment_synced_bytes.get(&seq) else {
                continue;
            };
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| StorageError::io("opening", path, e))?;
            let len = f
                .metadata()
                .map_err(|e| StorageError::io("stat", path, e))?
                .len();
            let (mut kept, mut lost) = (0u64, 0u64);
            let mut sector = [0u8; SECTOR_BYTES as usize];
            let mut at = synced;
            while at < len {
                let end = ((at / SECTOR_BYTES) + 1) * SECTOR_BYTES;
                let end = end.min(len);
                let n = (end - at) as usize;
                let got = sys::pread_full(&f, &mut sector[..n], at)
                    .map_err(|e| StorageError::io("reading", path, e))?;
                if sector[..got].iter().any(|&b| b != 0) {
                    if lose(&mut rng) {
                        let zeros = [0u8; SECTOR_BYTES as usize];
                        f.write_all_at(&zeros[..got], at)
                            .map_err(|e| StorageError::io("tearing", path, e))?;
                        lost += 1;
                    } else {
                        kept += 1;
                    }
                }
                at = end;
            }
            f.sync_all()
                .map_err(|e| StorageError::io("fsync", path, e))?;
            report.segments.push(SegmentTear {
                path: path.clone(),
                synced_bytes: synced,
                sectors_kept: kept,
                sectors_lost: lost,
            });
        } else if name == HARD_STATE_FILE {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| StorageError::io("opening", path, e))?;
            let mut img = vec![0u8; SLOT_FILE_BYTES as usize];
            let n = sys::pread_full(&f, &mut img, 0)
                .map_err(|e| StorageError::io("reading", path, e))?;
            img.truncate(n);
            let (s0, s1) = slotfile::decode_both(&HARD_STATE_MAGIC, &img);
            for (i, s) in [s0, s1].iter().enumerate() {
                if let Ok(s) = s {
                    if s.generation > ledger.hard_state_synced_generation && lose(&mut rng) {
                        let zeros = [0u8; SLOT_BYTES as usize];
                        f.write_all_at(&zeros, i as u64 * SLOT_BYTES)
                            .map_err(|e| StorageError::io("tearing", path, e))?;
                        report.hard_state_slot_lost = true;
                    }
                }
            }
            f.sync_all()
                .map_err(|e| StorageError::io("fsync", path, e))?;
        } else if name.ends_with(PARTIAL_SUFFIX) || name.ends_with(TMP_SUFFIX) {
            // Never synced: it may be gone, short, or complete.
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            match rng.random_range(0..3u32) {
                0 => {
                    std::fs::remove_file(path)
                        .map_err(|e| StorageError::io("removing", path, e))?;
                }
                1 => {
                    let cut = rng.random_range(0..=len / SECTOR_BYTES) * SECTOR_BYTES;
                    let f = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(|e| StorageError::io("opening", path, e))?;
                    f.set_len(cut)
                        .map_err(|e| StorageError::io("truncating", path, e))?;
                }
                _ => {}
            }
            report.partial_files_torn.push(path.clone());
        }
    }
    tracing::info!(dir = %dir.display(), seed, mode, "power cut simulated");
    Ok(report)
}
