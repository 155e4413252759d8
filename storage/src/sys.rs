//! Thin wrappers over the syscalls storage makes, with the test seam for fault injection.
//!
//! Every sync and every allocation goes through here, so a [`FaultInjector`] can make one fail
//! (fault-matrix rows S9 and S14 of docs/FAULTS.md: fsync/msync EIO, ENOSPC). Appends into the
//! mapping make no syscall and do not pass through this module.

use crate::error::{FatalError, Result, StorageError};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// Test seam: makes syncs, allocations or snapshot writes fail with a chosen errno.
///
/// Pass one in [`crate::StorageOptions::faults`]; a default (no faults) costs one relaxed load
/// per sync or allocation and nothing on the append path.
#[derive(Debug, Default)]
pub struct FaultInjector {
    sync_errno: AtomicI32,
    syncs_before_failure: AtomicU64,
    alloc_errno: AtomicI32,
    snapshot_write_errno: AtomicI32,
    dir_sync_errno: AtomicI32,
    skip_dir_syncs: std::sync::atomic::AtomicBool,
}

impl FaultInjector {
    /// A new injector with no faults armed.
    pub fn new() -> Arc<FaultInjector> {
        Arc::new(FaultInjector::default())
    }
    /// Every sync (msync, fsync, fdatasync, directory fsync) after the next `successes` ones
    /// fails with `errno`.
    pub fn fail_syncs_after(&self, successes: u64, errno: i32) {
        self.syncs_before_failure.store(successes, Ordering::SeqCst);
        self.sync_errno.store(errno, Ordering::SeqCst);
    }
    /// Every directory fsync fails with `errno` (other syncs are unaffected).
    pub fn fail_directory_syncs(&self, errno: i32) {
        self.dir_sync_errno.store(errno, Ordering::SeqCst);
    }
    /// A deliberate bookkeeping bug: every directory fsync returns success without syncing.
    /// The ledger-based [`crate::power_cut`] cannot see it; the crash file system can
    /// (crashfs/tests/bookkeeping_bug.rs).
    pub fn skip_directory_syncs(&self) {
        self.skip_dir_syncs.store(true, Ordering::SeqCst);
    }
    /// Every space allocation (fallocate or zero fill of a new segment) fails with `errno`.
    pub fn fail_allocations(&self, errno: i32) {
        self.alloc_errno.store(errno, Ordering::SeqCst);
    }
    /// Every snapshot chunk write fails with `errno`.
    pub fn fail_snapshot_writes(&self, errno: i32) {
        self.snapshot_write_errno.store(errno, Ordering::SeqCst);
    }
    /// Disarms every fault.
    pub fn clear(&self) {
        self.sync_errno.store(0, Ordering::SeqCst);
        self.alloc_errno.store(0, Ordering::SeqCst);
        self.snapshot_write_errno.store(0, Ordering::SeqCst);
        self.dir_sync_errno.store(0, Ordering::SeqCst);
        self.skip_dir_syncs.store(false, Ordering::SeqCst);
    }

    fn sync_fault(&self) -> Option<io::Error> {
        let errno = self.sync_errno.load(Ordering::SeqCst);
        if errno == 0 {
            return None;
        }
        let left = self.syncs_before_failure.load(Ordering::SeqCst);
        if left > 0 {
            self.syncs_before_failure.store(left - 1, Ordering::SeqCst);
            return None;
        }
        Some(io::Error::from_raw_os_error(errno))
    }
    fn alloc_fault(&self) -> Option<io::Error> {
        match self.alloc_errno.load(Ordering::SeqCst) {
            0 => None,
            e => Some(io::Error::from_raw_os_error(e)),
        }
    }
    pub(crate) fn snapshot_write_fault(&self) -> Option<io::Error> {
        match self.snapshot_write_errno.load(Ordering::SeqCst) {
            0 => None,
            e => Some(io::Error::from_raw_os_error(e)),
        }
    }
}

/// Shared handle to the injector (None: no faults).
pub(crate) type Faults = Option<Arc<FaultInjector>>;

fn fatal(op: &'static str, path: &Path, e: &io::Error) -> StorageError {
    StorageError::Fatal(Arc::new(FatalError {
        op,
        path: path.to_path_buf(),
        errno: e.raw_os_error(),
        message: e.to_string(),
    }))
}

/// Builds the fatal error of a failed sync.
pub(crate) fn fatal_error(op: &'static str, path: &Path, e: &io::Error) -> Arc<FatalError> {
    match fatal(op, path, e) {
        StorageError::Fatal(f) => f,
        _ => unreachable!("fatal() builds a Fatal variant"),
    }
}

/// `msync(MS_SYNC)` on `[offset, offset+len)` of a mapping: a durability barrier for those
/// bytes (storage rule 9 of docs/RULES.md). An error is fatal (storage rule 10 of docs/RULES.md).
pub(crate) fn msync(
    map: &memmap2::MmapRaw,
    offset: u64,
    len: u64,
    path: &Path,
    faults: &Faults,
) -> Result<(), Arc<FatalError>> {
    if let Some(e) = faults.as_ref().and_then(|f| f.sync_fault()) {
        return Err(fatal_error("msync", path, &e));
    }
    if len == 0 {
        return Ok(());
    }
    map.flush_range(offset as usize, len as usize)
        .map_err(|e| fatal_error("msync", path, &e))?;
    Ok(())
}

/// `fdatasync` of a file; fatal on error.
pub(crate) fn fdatasync(file: &File, path: &Path, faults: &Faults) -> Result<(), Arc<FatalError>> {
    if let Some(e) = faults.as_ref().and_then(|f| f.sync_fault()) {
        return Err(fatal_error("fdatasync", path, &e));
    }
    file.sync_data()
        .map_err(|e| fatal_error("fdatasync", path, &e))
}

/// `fsync` of a directory, so a create/rename/unlink in it is durable (storage rule 2
/// of docs/RULES.md).
pub(crate) fn fsync_dir(dir: &Path, faults: &Faults) -> Result<(), Arc<FatalError>> {
    if faults
        .as_ref()
        .is_some_and(|f| f.skip_dir_syncs.load(Ordering::SeqCst))
    {
        return Ok(());
    }
    let dir_fault = faults.as_ref().and_then(|f| {
        let errno = f.dir_sync_errno.load(Ordering::SeqCst);
        (errno != 0).then(|| io::Error::from_raw_os_error(errno))
    });
    if let Some(e) = dir_fault.or_else(|| faults.as_ref().and_then(|f| f.sync_fault())) {
        return Err(fatal_error("fsync(directory)", dir, &e));
    }
    let d = File::open(dir).map_err(|e| fatal_error("open(directory)", dir, &e))?;
    d.sync_all()
        .map_err(|e| fatal_error("fsync(directory)", dir, &e))
}

/// Reserves real blocks for `[0, len)` of `file` (storage rule 1 of docs/RULES.md): `fallocate`,
/// or, where the file system does not support it, writing zeros. Never `ftruncate` alone (a sparse
/// file would SIGBUS through the mapping on a full disk).
pub(crate) fn allocate(file: &File, len: u64, path: &Path, faults: &Faults) -> Result<()> {
    if let Some(e) = faults.as_ref().and_then(|f| f.alloc_fault()) {
        return Err(StorageError::io("preallocating", path, e));
    }
    // SAFETY: fallocate takes an fd we own (borrowed from `file`, alive for the call) and
    // integer arguments; it touches no memory of ours.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => {
            write_zeros(file, 0, len, path, faults)
        }
        _ => Err(StorageError::io("preallocating (fallocate)", path, e)),
    }
}

/// Writes zeros over `[offset, offset+len)` with `pwrite` (allocates blocks, turns unwritten
/// extents into written ones so later fdatasyncs need no metadata journal commit).
pub(crate) fn write_zeros(
    file: &File,
    offset: u64,
    len: u64,
    path: &Path,
    faults: &Faults,
) -> Result<()> {
    if let Some(e) = faults.as_ref().and_then(|f| f.alloc_fault()) {
        return Err(StorageError::io("zero-filling", path, e));
    }
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK.min(len as usize).max(1)];
    let mut at = offset;
    let end = offset + len;
    while at < end {
        let n = ((end - at) as usize).min(zeros.len());
        file.write_all_at(&zeros[..n], at)
            .map_err(|e| StorageError::io("zero-filling", path, e))?;
        at += n as u64;
    }
    Ok(())
}

/// Reads up to `buf.len()` bytes at `offset`, returning how many were read (short at EOF).
pub(crate) fn pread_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
