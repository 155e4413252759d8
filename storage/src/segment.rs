//! One segment file: creation (off the append path), its shared read-write mapping, and the
//! state the writer publishes to syncers.

use crate::error::{Result, StorageError};
use crate::format::{self, SEGMENT_HEADER_BYTES, TMP_SUFFIX};
use crate::sys::{self, Faults};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// No ledger slot.
pub(crate) const NO_SLOT: usize = usize::MAX;

/// A mapped segment, shared by the writer (the `Wal`) and syncers (`SyncHandle`, background
/// threads).
#[derive(Debug)]
pub(crate) struct Segment {
    pub seq: u64,
    pub path: PathBuf,
    pub bytes: u64,
    /// Checksum seed of every record in this segment (the header CRC).
    pub seed: u32,
    map: memmap2::MmapRaw,
    /// Kept for `pwritev` on writable segments; dropped for sealed segments found at open, so a
    /// long log does not hold one descriptor per segment (the mapping stays valid).
    file: Option<File>,
    /// End of the bytes the writer has produced (records, or the whole file once sealed).
    /// Stored by the writer with Release *before* `written_last`.
    pub written: AtomicU64,
    /// Last log index contained in `[0, written)` (or the previous segment's last index).
    pub written_last: AtomicU64,
    /// Bytes `[0, synced)` are covered by a completed sync. Changed only under the sync lock.
    pub synced: AtomicU64,
    /// Ledger slot of this segment, or [`NO_SLOT`]. Changed only under the sync lock.
    pub ledger_slot: AtomicUsize,
    /// The footer is written (`written == bytes`).
    pub sealed: AtomicBool,
}

impl Segment {
    /// Maps an existing segment file read-write.
    pub(crate) fn map_existing(path: &Path, seq: u64, bytes: u64, seed: u32) -> Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StorageError::io("opening segment", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| StorageError::io("stat", path, e))?
            .len();
        if len != bytes {
            return Err(StorageError::Corrupt(crate::error::Corruption {
                file: path.to_path_buf(),
                offset: len.min(bytes),
                index: None,
                expected: format!("a segment file of {bytes} bytes (from its header)"),
                found: format!("{len} bytes"),
            }));
        }
        // No MAP_POPULATE: measured slower (pre-faulting a 64 MiB zero-filled segment read-only
        // still leaves one write fault per page on the append path).
        let map = memmap2::MmapOptions::new()
            .len(bytes as usize)
            .map_raw(&file)
            .map_err(|e| StorageError::io("mapping segment", path, e))?;
        Ok(Segment {
            seq,
            path: path.to_path_buf(),
            bytes,
            seed,
            map,
            file: Some(file),
            written: AtomicU64::new(SEGMENT_HEADER_BYTES),
            written_last: AtomicU64::new(0),
            synced: AtomicU64::new(SEGMENT_HEADER_BYTES),
            ledger_slot: AtomicUsize::new(NO_SLOT),
            sealed: AtomicBool::new(false),
        })
    }

    /// Creates segment `seq` following storage rule 1 of docs/RULES.md: create a temp file
    /// exclusively, preallocate real blocks (fallocate, or zeros), optionally zero-fill (so later
    /// fdatasyncs need no extent conversion), write the header, sync the file, rename it into
    /// place, sync the directory. Runs on the preparer thread, off the append path.
    pub(crate) fn create(
        dir: &Path,
        seq: u64,
        bytes: u64,
        zero_fill: bool,
        faults: &Faults,
    ) -> Result<Segment> {
        let name = format::segment_file_name(seq);
        let path = dir.join(&name);
        let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
        let _ = std::fs::remove_file(&tmp);
        let result = (|| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| StorageError::io("creating segment", &tmp, e))?;
            sys::allocate(&file, bytes, &tmp, faults)?;
            if zero_fill {
                sys::write_zeros(&file, 0, bytes, &tmp, faults)?;
            }
            let salt: u32 = rand::random();
            let header = format::encode_segment_header(seq, bytes, salt);
            file.write_all_at(&header, 0)
                .map_err(|e| StorageError::io("writing segment header", &tmp, e))?;
            sys::fdatasync(&file, &tmp, faults).map_err(StorageError::Fatal)?;
            std::fs::rename(&tmp, &path)
                .map_err(|e| StorageError::io("renaming segment", &path, e))?;
            sys::fsync_dir(dir, faults).map_err(StorageError::Fatal)?;
            let seed = format::decode_segment_header(&header)
                .map(|h| h.seed)
                .map_err(|p| StorageError::InvalidOptions(p.to_string()))?;
            let seg = Segment::map_existing(&path, seq, bytes, seed)?;
            if !zero_fill {
                // Without a zero fill, the first touch of each page on the append path would
                // fault, allocate a page-cache folio and zero it (measured: more than half of
                // the time of 256 B appends under `never`). Pre-fault the mapping writable here,
                // on the preparer thread, instead (MADV_POPULATE_WRITE, Linux 5.14+). The pages
                // become dirty zeros, which the kernel writes back in the background: the same
                // bytes as the preallocated extent, so nothing changes on disk. Best effort:
                // an older kernel just takes the faults later.
                let _ = seg.map.advise(memmap2::Advice::PopulateWrite);
            }
            Ok(seg)
        })();
        if result.is_err() {
            // Nothing was acknowledged in this file: remove it so a full disk leaves no debris.
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Pointer to the start of the mapping (for writes by the single writer).
    #[inline]
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Borrows `[offset, offset+len)` of the mapping, or `None` when out of bounds.
    #[inline]
    pub(crate) fn slice(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        if end > self.bytes {
            return None;
        }
        // SAFETY: the range is within the mapping (checked above), which lives as long as
        // `self`. The data directory is locked (storage rule 4 of docs/RULES.md), so no other
        // process writes the file; in this process the only writer is the `Wal`, which never writes
        // a range while a shared borrow from `&Wal` exists (writes need `&mut Wal`), and syncers
        // never write. The file is never truncated while mapped (storage rule 3 of docs/RULES.md).
        Some(unsafe { std::slice::from_raw_parts(self.ptr().add(offset as usize), len as usize) })
    }

    /// Copies `src` into the mapping at `offset`.
    ///
    /// # Safety
    /// The caller is the single writer (`&mut Wal`), holds no borrow of this range, and
    /// `offset + src.len() <= self.bytes`.
    #[inline]
    pub(crate) unsafe fn write_at(&self, offset: u64, src: &[u8]) {
        debug_assert!(offset + src.len() as u64 <= self.bytes);
        // SAFETY: in bounds by the caller's contract; `src` is a separate allocation, so the
        // ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr().add(offset as usize), src.len())
        };
    }

    /// Zeroes `[from, to)` of the mapping, touching only pages that are not already zero.
    ///
    /// # Safety
    /// Same contract as [`Segment::write_at`] for the range `[from, to)`.
    pub(crate) unsafe fn zero_range(&self, from: u64, to: u64) {
        let to = to.min(self.bytes);
        let mut at = from;
        while at < to {
            let chunk_end = ((at / 4096) + 1) * 4096;
            let end = chunk_end.min(to);
            let nonzero = self
                .slice(at, end - at)
                .is_some_and(|s| s.iter().any(|&b| b != 0));
            if nonzero {
                // SAFETY: in bounds (`end <= self.bytes`); single writer by the caller's contract.
                unsafe {
                    std::ptr::write_bytes(self.ptr().add(at as usize), 0, (end - at) as usize)
                };
            }
            at = end;
        }
    }

    /// Writes `header` then `payload` contiguously at `offset` with one `pwritev` (same page
    /// cache as the mapping, so reads through the mapping see the bytes). Used under the
    /// `always` policy and for large payloads: see `Wal::write_record` for why.
    pub(crate) fn pwrite_record(
        &self,
        offset: u64,
        header: &[u8],
        payload: &[u8],
    ) -> std::io::Result<()> {
        let total = header.len() + payload.len();
        if offset + total as u64 > self.bytes {
            return Err(std::io::Error::other("write beyond the end of the segment"));
        }
        let iov = [
            std::io::IoSlice::new(header),
            std::io::IoSlice::new(payload),
        ];
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| std::io::Error::other("segment has no open descriptor"))?;
        let n = nix::sys::uio::pwritev(file, &iov, offset as libc::off_t)
            .map_err(std::io::Error::from)?;
        // Short write: finish it byte-exactly from where it stopped.
        if n < header.len() {
            file.write_all_at(&header[n..], offset + n as u64)?;
            file.write_all_at(payload, offset + header.len() as u64)?;
        } else if n < total {
            let done = n - header.len();
            file.write_all_at(&payload[done..], offset + n as u64)?;
        }
        Ok(())
    }

    /// Writes `bytes` at `offset` with pwrite (finishing short writes): gathered records under
    /// `always`, in the same page cache as the mapping.
    pub(crate) fn pwrite_all(&self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        if offset + bytes.len() as u64 > self.bytes {
            return Err(std::io::Error::other("write beyond the end of the segment"));
        }
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| std::io::Error::other("segment has no open descriptor"))?;
        file.write_all_at(bytes, offset)
    }

    /// Whether records can be written with `pwritev` (the descriptor is open).
    pub(crate) fn has_fd(&self) -> bool {
        self.file.is_some()
    }

    /// Closes the descriptor of a sealed segment (the mapping stays valid).
    pub(crate) fn release_fd(&mut self) {
        self.file = None;
    }

    /// The mapping (for msync).
    pub(crate) fn map(&self) -> &memmap2::MmapRaw {
        &self.map
    }

    /// Publishes what the writer produced: bytes first, then the index they cover (a syncer
    /// reads them in the opposite order, so it never claims an index it did not sync).
    #[inline]
    pub(crate) fn publish(&self, written: u64, last: u64) {
        self.written.store(written, Ordering::Release);
        self.written_last.store(last, Ordering::Release);
    }
}
