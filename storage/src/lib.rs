//! shmraft-storage: the durable half of a shmraft node.
//!
//! This crate knows nothing of Raft's rules: it stores records that carry an index and a term,
//! a small hard-state record and snapshot files, and it says exactly what is durable.
//! See `docs/FORMAT.md` for every byte on disk, `docs/DURABILITY.md` for what each fsync policy
//! can lose, and `docs/RULES.md` for the rules each part upholds.
//!
//! # Parts
//! - [`Storage::open`] locks a data directory (storage rule 4 of docs/RULES.md), recovers it and
//!   returns the three stores: [`Wal`] (segmented write-ahead log), [`HardStateStore`] and
//!   [`SnapshotStore`].
//! - [`FsyncPolicy`]: `always`, `batch[:<delay_us>:<bytes>]`, `interval:<ms>`, `never`.
//! - [`inspect`]: read-only inspection for `raft-dump` (safe on a live node's directory).
//! - [`power_cut`]: tears a dead node's directory as a power cut would (tests, nemesis).
//! - [`FaultInjector`]: makes syncs, allocations or snapshot writes fail (tests).
//!
//! # Driving the log from a node's event loop (group commit off the loop thread)
//!
//! Raft thesis 10.2.1: a leader may send entries to its followers before its own sync
//! completes, and counts itself in the commit quorum only up to its durable index. With the
//! `batch` policy the log runs that sync on its own `wal-sync` thread; a driver does:
//!
//! 1. `wal.append(&entries)?` (memcpy into the mapping and a CRC: no syscall under `batch`,
//!    `interval`, `never`; under `always` it returns after the msync covering the batch).
//! 2. Send AppendEntries with those entries to the followers at once.
//! 3. The group-commit thread msyncs exactly the unsynced range when the oldest unsynced entry
//!    is `delay_us` old or `bytes` are pending. Observe completion without blocking: poll
//!    [`Wal::durable_index`] on each loop turn, or register [`Wal::set_sync_listener`] to write
//!    a byte to the loop's wake-up pipe when a sync completes (or fails).
//! 4. Count the leader's own match index as `wal.durable_index()`; acknowledge clients, votes
//!    and AppendEntries successes only up to [`Wal::ack_index`] (the durable index under
//!    `always`/`batch`).
//! 5. Save term and vote with [`HardStateStore::save`] (always synced) *before* sending the
//!    message that depends on them (storage rule 8 of docs/RULES.md).
//! 6. On [`StorageError::Fatal`] (a failed sync: storage rule 10 of docs/RULES.md) stop the node;
//!    every later call returns the same error.
//!
//! A driver that prefers its own sync thread can use any policy and call
//! [`SyncHandle::sync`] (from [`Wal::sync_handle`]) on that thread: syncs are serialised,
//! each covers everything appended before it started, and it publishes the durable index.
//!
//! ```
//! # fn main() -> Result<(), shmraft_storage::StorageError> {
//! use shmraft_storage::*;
//! let dir = tempfile::tempdir().unwrap();
//! let mut opts = StorageOptions::default();
//! opts.wal.segment_bytes = 1 << 20;
//! opts.wal.fsync_policy = "batch:200:65536".parse().unwrap();
//! let mut st = Storage::open(dir.path(), opts)?;
//! st.hard_state.save(&HardState { current_term: LogTerm(1), voted_for: 1, commit_index: LogIndex(0) })?;
//! let last = st.wal.append(&[EntryRef { index: LogIndex(1), term: LogTerm(1), kind: EntryKind(0), payload: b"x" }])?;
//! let sync = st.wal.sync_handle();
//! let t = std::thread::spawn(move || sync.sync());    // e.g. a dedicated sync thread
//! assert!(t.join().unwrap()? >= last);
//! assert_eq!(st.wal.durable_index(), last);
//! # Ok(()) }
//! ```
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![allow(clippy::new_without_default)]

#[cfg(not(target_os = "linux"))]
compile_error!("shmraft-storage supports Linux only (msync durability, fallocate, flock)");

mod error;
pub mod format;
mod hardstate;
pub mod inspect;
mod ledger;
mod lock;
mod policy;
mod powercut;
mod segment;
mod slotfile;
mod snapshot;
mod sys;
mod types;
mod wal;

pub use error::{Corruption, FatalError, Result, StorageError};
pub use hardstate::{HardState, HardStateStore};
pub use ledger::{LedgerView, parse_ledger, read_ledger};
pub use lock::{DirLock, parse_lock_pid};
pub use policy::{FsyncPolicy, ParsePolicyError};
pub use powercut::{PowerCutReport, SECTOR_BYTES, SegmentTear, power_cut};
pub use snapshot::{
    SnapshotMeta, SnapshotReader, SnapshotStore, SnapshotWriter, read_snapshot_meta,
};
pub use sys::FaultInjector;
pub use types::{Entry, EntryKind, EntryRef, LogIndex, LogTerm};
pub use wal::{
    PWRITE_PAYLOAD_BYTES_MIN, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SyncEvent, SyncHandle, Wal,
    WalOptions,
};

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Options of [`Storage::open`].
#[derive(Debug, Clone, Default)]
pub struct StorageOptions {
    /// Write-ahead log options (segment size, fsync policy, ...).
    pub wal: WalOptions,
    /// Test seam: syncs, allocations or snapshot writes that should fail.
    pub faults: Option<Arc<FaultInjector>>,
}

/// An open, locked data directory.
#[derive(Debug)]
pub struct Storage {
    /// The write-ahead log.
    pub wal: Wal,
    /// Current term, vote and commit index.
    pub hard_state: HardStateStore,
    /// Snapshot files.
    pub snapshots: SnapshotStore,
    dir: PathBuf,
    _lock: DirLock,
}

impl Storage {
    /// Opens `dir` (creating it 0700 if needed): takes the lock (a second opener gets
    /// [`StorageError::Locked`] with the holder's pid), sweeps partial files, recovers the log
    /// (torn tail after the durable point: truncated and zeroed; damage before it:
    /// [`StorageError::Corrupt`]) and starts the segment preparer and, under `batch` and
    /// `interval`, the sync thread.
    pub fn open(dir: &Path, opts: StorageOptions) -> Result<Storage> {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| StorageError::io("creating data directory", dir, e))?;
            // The new directory's own name must be durable before anything in it is acknowledged
            // (storage rule 2 of docs/RULES.md; found by the crash file system, docs/CRASHFS.md).
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
            sys::fsync_dir(parent.unwrap_or(Path::new(".")), &opts.faults)
                .map_err(StorageError::Fatal)?;
        }
        let lock = DirLock::acquire(dir)?;
        let (ledger, before) = ledger::Ledger::open(dir, &opts.faults)?;
        let ledger = Arc::new(ledger);
        let hard_state = HardStateStore::open(dir, ledger.clone(), opts.faults.clone())?;
        let snapshots = SnapshotStore::open(dir, opts.faults.clone())?;
        let wal = Wal::open(dir, opts.wal.clone(), ledger, before, opts.faults.clone())?;
        let (ci, _) = wal.compacted();
        if ci.0 > 0 && snapshots.latest().is_none_or(|s| s.last_index < ci) {
            tracing::error!(dir = %dir.display(), compacted = %ci,
                "the log is compacted up to {ci} but no snapshot covers it: entries up to {ci} must come from a peer");
        }
        Ok(Storage {
            wal,
            hard_state,
            snapshots,
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops background threads, syncs the log (unless the policy is `never`) and releases the
    /// lock.
    pub fn close(self) -> Result<()> {
        let Storage { wal, .. } = self;
        wal.close()
    }
}
