//! The snapshot store: `snap-<index>-<term>.snap` files written in chunks to a `.partial` file,
//! then synced, renamed and the directory synced (storage rules 2, 15 of docs/RULES.md). Partial
//! files are swept at open; a snapshot that fails its checksum is renamed `.broken` and kept.

use crate::error::{Result, StorageError};
use crate::format::{
    self, BROKEN_SUFFIX, PARTIAL_SUFFIX, SNAPSHOT_HEADER_BYTES, SNAPSHOT_MEMBERSHIP_BYTES_MAX,
    SNAPSHOT_TRAILER_BYTES,
};
use crate::sys::{self, Faults};
use crate::types::{LogIndex, LogTerm};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What a snapshot covers and how to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Last log index the snapshot includes.
    pub last_index: LogIndex,
    /// Term of that entry.
    pub last_term: LogTerm,
    /// Cluster membership at `last_index`, opaque to storage.
    pub membership: Vec<u8>,
    /// Bytes of state-machine data.
    pub data_bytes: u64,
    /// CRC32 over membership and data.
    pub checksum: u32,
    /// Size of the file.
    pub file_bytes: u64,
    /// Where it is.
    pub path: PathBuf,
}

/// Reads and fully verifies a snapshot file with `pread` (never trusts its lengths).
pub fn read_snapshot_meta(path: &Path) -> Result<SnapshotMeta, String> {
    let f = File::open(path).map_err(|e| format!("open: {e}"))?;
    let len = f.metadata().map_err(|e| format!("stat: {e}"))?.len();
    let mut hb = [0u8; 64];
    let n = sys::pread_full(&f, &mut hb, 0).map_err(|e| format!("read: {e}"))?;
    let (last_index, last_term, mlen) = format::decode_snapshot_header(&hb[..n])?;
    if len < SNAPSHOT_HEADER_BYTES + mlen as u64 + SNAPSHOT_TRAILER_BYTES {
        return Err(format!(
            "file is {len} bytes, too short for its header and trailer"
        ));
    }
    let mut tb = [0u8; 64];
    let n = sys::pread_full(&f, &mut tb, len - SNAPSHOT_TRAILER_BYTES)
        .map_err(|e| format!("read: {e}"))?;
    let (data_bytes, checksum) = format::decode_snapshot_trailer(&tb[..n])?;
    let expect_len = SNAPSHOT_HEADER_BYTES
        .checked_add(mlen as u64)
        .and_then(|x| x.checked_add(data_bytes))
        .and_then(|x| x.checked_add(SNAPSHOT_TRAILER_BYTES));
    if expect_len != Some(len) {
        return Err(format!(
            "file is {len} bytes but its trailer says {data_bytes} data bytes"
        ));
    }
    let mut membership = vec![0u8; mlen as usize];
    sys::pread_full(&f, &mut membership, SNAPSHOT_HEADER_BYTES)
        .map_err(|e| format!("read: {e}"))?;
    let mut h = crc32fast::Hasher::new();
    h.update(&membership);
    let mut buf = vec![0u8; 1 << 20];
    let mut at = SNAPSHOT_HEADER_BYTES + mlen as u64;
    let end = at + data_bytes;
    while at < end {
        let want = ((end - at) as usize).min(buf.len());
        let got = sys::pread_full(&f, &mut buf[..want], at).map_err(|e| format!("read: {e}"))?;
        if got == 0 {
            return Err(format!("file shrank while reading at byte {at}"));
        }
        h.update(&buf[..got]);
        at += got as u64;
    }
    let computed = h.finalize();
    if computed != checksum {
        return Err(format!(
            "body checksum mismatch (trailer {checksum:#010x}, computed {computed:#010x})"
        ));
    }
    Ok(SnapshotMeta {
        last_index,
        last_term,
        membership,
        data_bytes,
        checksum,
        file_bytes: len,
        path: path.to_path_buf(),
    })
}

/// The snapshot files of an open data directory.
#[derive(Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
    faults: Faults,
    latest: Option<SnapshotMeta>,
}

impl SnapshotStore {
    /// Opens the store: removes partial snapshots, verifies snapshots newest first, keeps the
    /// first valid one as the latest and renames corrupt ones `.broken`.
    pub(crate) fn open(dir: &Path, faults: Faults) -> Result<SnapshotStore> {
        let mut found = Vec::new();
        let rd = std::fs::read_dir(dir).map_err(|e| StorageError::io("listing", dir, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| StorageError::io("listing", dir, e))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            if name.starts_with("snap-") && name.ends_with(PARTIAL_SUFFIX) {
                tracing::info!(file = %name, "removing a partial snapshot left by a crash");
                std::fs::remove_file(ent.path())
                    .map_err(|e| StorageError::io("removing", ent.path(), e))?;
                continue;
            }
            if let Some((i, t)) = format::parse_snapshot_file_name(&name) {
                found.push((i, t, ent.path()));
            }
        }
        found.sort();
        let mut latest = None;
        while let Some((_, _, path)) = found.pop() {
            match read_snapshot_meta(&path) {
                Ok(m) => {
                    latest = Some(m);
                    break;
                }
                Err(reason) => {
                    let broken = PathBuf::from(format!("{}{BROKEN_SUFFIX}", path.display()));
                    tracing::error!(file = %path.display(), %reason, kept_as = %broken.display(),
                        "snapshot is corrupt: kept aside, falling back to an older snapshot");
                    std::fs::rename(&path, &broken)
                        .map_err(|e| StorageError::io("renaming", &path, e))?;
                    sys::fsync_dir(dir, &faults).map_err(StorageError::Fatal)?;
                }
            }
        }
        Ok(SnapshotStore {
            dir: dir.to_path_buf(),
            faults,
            latest,
        })
    }

    /// The latest complete snapshot.
    pub fn latest(&self) -> Option<&SnapshotMeta> {
        self.latest.as_ref()
    }

    /// Starts writing a snapshot covering the log up to (`last_index`, `last_term`); used both
    /// for a locally taken snapshot and for one received from a leader (InstallSnapshot, Raft
    /// §7): nothing is visible until [`SnapshotStore::finish`].
    pub fn begin(
        &self,
        last_index: LogIndex,
        last_term: LogTerm,
        membership: &[u8],
    ) -> Result<SnapshotWriter> {
        if membership.len() as u64 > SNAPSHOT_MEMBERSHIP_BYTES_MAX as u64 {
            return Err(StorageError::Snapshot(format!(
                "membership of {} bytes exceeds the maximum {SNAPSHOT_MEMBERSHIP_BYTES_MAX}",
                membership.len()
            )));
        }
        let final_path = self
            .dir
            .join(format::snapshot_file_name(last_index, last_term));
        let partial = PathBuf::from(format!("{}{PARTIAL_SUFFIX}", final_path.display()));
        let _ = std::fs::remove_file(&partial);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .map_err(|e| StorageError::io("creating snapshot", &partial, e))?;
        let mut w = SnapshotWriter {
            file: Some(file),
            partial,
            final_path,
            last_index,
            last_term,
            membership: membership.to_vec(),
            hasher: crc32fast::Hasher::new(),
            written: 0,
            data_bytes: 0,
            faults: self.faults.clone(),
            sealed: false,
        };
        w.put(&format::encode_snapshot_header(
            last_index,
            last_term,
            membership.len() as u32,
        ))?;
        w.put(membership)?;
        w.hasher.update(membership);
        Ok(w)
    }

    /// Completes a snapshot: trailer, fsync, rename into place, directory fsync; then deletes
    /// older snapshots. Only after this may the log be compacted up to its index
    /// (storage rule 15 of docs/RULES.md).
    pub fn finish(&mut self, mut w: SnapshotWriter) -> Result<SnapshotMeta> {
        if let Some(l) = &self.latest {
            if w.last_index < l.last_index {
                return Err(StorageError::Snapshot(format!(
                    "snapshot at index {} is older than the latest one at {}",
                    w.last_index, l.last_index
                )));
            }
        }
        if !w.sealed {
            w.seal()?;
        }
        let checksum = w.hasher.clone().finalize();
        drop(w.file.take());
        std::fs::rename(&w.partial, &w.final_path)
            .map_err(|e| StorageError::io("renaming snapshot", &w.final_path, e))?;
        sys::fsync_dir(&self.dir, &self.faults).map_err(StorageError::Fatal)?;
        let meta = SnapshotMeta {
            last_index: w.last_index,
            last_term: w.last_term,
            membership: std::mem::take(&mut w.membership),
            data_bytes: w.data_bytes,
            checksum,
            file_bytes: w.written,
            path: w.final_path.clone(),
        };
        if let Some(old) = self.latest.replace(meta.clone()) {
            if old.path != meta.path {
                std::fs::remove_file(&old.path)
                    .map_err(|e| StorageError::io("removing old snapshot", &old.path, e))?;
                sys::fsync_dir(&self.dir, &self.faults).map_err(StorageError::Fatal)?;
            }
        }
        Ok(meta)
    }

    /// Writes a whole snapshot from `data` and finishes it (e.g. a received one, atomically).
    pub fn install(
        &mut self,
        last_index: LogIndex,
        last_term: LogTerm,
        membership: &[u8],
        mut data: impl Read,
    ) -> Result<SnapshotMeta> {
        let mut w = self.begin(last_index, last_term, membership)?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = data
                .read(&mut buf)
                .map_err(|e| StorageError::io("reading snapshot source", &w.partial, e))?;
            if n == 0 {
                break;
            }
            w.write_chunk(&buf[..n])?;
        }
        self.finish(w)
    }

    /// Opens the latest snapshot for reading (it was verified at open or when finished).
    pub fn open_latest(&self) -> Result<Option<SnapshotReader>> {
        let Some(meta) = self.latest.clone() else {
            return Ok(None);
        };
        let file = File::open(&meta.path)
            .map_err(|e| StorageError::io("opening snapshot", &meta.path, e))?;
        Ok(Some(SnapshotReader { file, meta }))
    }
}

/// A snapshot being written. Dropping it without [`SnapshotStore::finish`] removes the partial
/// file.
#[derive(Debug)]
pub struct SnapshotWriter {
    file: Option<File>,
    partial: PathBuf,
    final_path: PathBuf,
    last_index: LogIndex,
    last_term: LogTerm,
    membership: Vec<u8>,
    hasher: crc32fast::Hasher,
    written: u64,
    data_bytes: u64,
    faults: Faults,
    /// The trailer is written and the file synced ([`SnapshotWriter::seal`]).
    sealed: bool,
}

impl SnapshotWriter {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some(e) = self.faults.as_ref().and_then(|f| f.snapshot_write_fault()) {
            return Err(StorageError::io("writing snapshot", &self.partial, e));
        }
        let f = self
            .file
            .as_mut()
            .expect("writer file present until finish");
        f.write_all(bytes)
            .map_err(|e| StorageError::io("writing snapshot", &self.partial, e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Appends a chunk of state-machine data.
    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<()> {
        assert!(!self.sealed, "no data after the trailer");
        self.put(chunk)?;
        self.hasher.update(chunk);
        self.data_bytes += chunk.len() as u64;
        Ok(())
    }

    /// Data bytes written so far.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Syncs the data written so far (fdatasync of the partial file). Optional: it lets a
    /// writer on another thread take the long sync of a large snapshot, so the sync inside
    /// [`SnapshotStore::finish`] only covers the trailer. A failure is fatal (storage rule 10
    /// of docs/RULES.md).
    pub fn sync_data(&mut self) -> Result<()> {
        let f = self
            .file
            .as_ref()
            .expect("writer file present until finish");
        sys::fdatasync(f, &self.partial, &self.faults).map_err(StorageError::Fatal)
    }

    /// Writes the trailer and syncs the whole file, so [`SnapshotStore::finish`] only renames it
    /// into place. Optional: it lets a writer on another thread take every sync of a snapshot
    /// (with the trailer written by `finish`, its sync also flushed the file's new size, a
    /// journal commit, on the caller's thread). No data may be written after it. A sync
    /// failure is fatal (storage rule 10 of docs/RULES.md).
    pub fn seal(&mut self) -> Result<()> {
        assert!(!self.sealed, "a snapshot is sealed once");
        let checksum = self.hasher.clone().finalize();
        self.put(&format::encode_snapshot_trailer(self.data_bytes, checksum))?;
        self.sync_data()?;
        self.sealed = true;
        Ok(())
    }

    /// Abandons the snapshot (same as dropping it).
    pub fn abort(self) {}
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// Reads the data of a complete snapshot.
#[derive(Debug)]
pub struct SnapshotReader {
    file: File,
    meta: SnapshotMeta,
}

impl SnapshotReader {
    /// The snapshot's metadata.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// Reads data bytes at `offset` (relative to the start of the data) into `buf`; returns how
    /// many were read (0 at the end). For sending in chunks.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= self.meta.data_bytes {
            return Ok(0);
        }
        let want = ((self.meta.data_bytes - offset) as usize).min(buf.len());
        let base = SNAPSHOT_HEADER_BYTES + self.meta.membership.len() as u64;
        let n = sys::pread_full(&self.file, &mut buf[..want], base + offset)
            .map_err(|e| StorageError::io("reading snapshot", &self.meta.path, e))?;
        Ok(n)
    }

    /// Reads all data bytes, checking the checksum again.
    pub fn read_all(&self) -> Result<Vec<u8>> {
        let mut v = vec![0u8; self.meta.data_bytes as usize];
        let n = self.read_at(0, &mut v)?;
        let mut h = crc32fast::Hasher::new();
        h.update(&self.meta.membership);
        h.update(&v[..n]);
        if n as u64 != self.meta.data_bytes || h.finalize() != self.meta.checksum {
            return Err(StorageError::Corrupt(crate::error::Corruption {
                file: self.meta.path.clone(),
                offset: SNAPSHOT_HEADER_BYTES,
                index: Some(self.meta.last_index),
                expected: format!(
                    "{} data bytes with checksum {:#010x}",
                    self.meta.data_bytes, self.meta.checksum
                ),
                found: "different content (changed since it was verified)".into(),
            }));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_write_then_read_back_with_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SnapshotStore::open(dir.path(), None).unwrap();
        assert!(store.latest().is_none());
        let mut w = store
            .begin(LogIndex(10), LogTerm(2), b"nodes=1,2,3")
            .unwrap();
        for chunk in [&b"abc"[..], b"", b"defgh"] {
            w.write_chunk(chunk).unwrap();
        }
        let meta = store.finish(w).unwrap();
        assert_eq!(
            (meta.last_index, meta.last_term, meta.data_bytes),
            (LogIndex(10), LogTerm(2), 8)
        );
        assert_eq!(read_snapshot_meta(&meta.path).unwrap(), meta);
        let r = store.open_latest().unwrap().unwrap();
        assert_eq!(r.read_all().unwrap(), b"abcdefgh");
        let mut buf = [0u8; 3];
        assert_eq!(r.read_at(6, &mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"gh");
        // An older snapshot is refused; a newer one replaces the old file.
        assert!(
            store
                .install(LogIndex(5), LogTerm(1), b"", &b""[..])
                .is_err()
        );
        let m2 = store
            .install(LogIndex(20), LogTerm(2), b"m", &b"x"[..])
            .unwrap();
        assert!(!meta.path.exists());
        let store = SnapshotStore::open(dir.path(), None).unwrap();
        assert_eq!(store.latest(), Some(&m2));
    }

    #[test]
    fn a_sealed_snapshot_finishes_to_the_same_file_and_a_dropped_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SnapshotStore::open(dir.path(), None).unwrap();
        let mut w = store.begin(LogIndex(7), LogTerm(1), b"m").unwrap();
        w.write_chunk(b"sealed data").unwrap();
        w.seal().unwrap();
        let sealed = store.finish(w).unwrap();
        let sealed_bytes = std::fs::read(&sealed.path).unwrap();
        assert_eq!(read_snapshot_meta(&sealed.path).unwrap(), sealed);
        let other = tempfile::tempdir().unwrap();
        let mut store2 = SnapshotStore::open(other.path(), None).unwrap();
        let mut w = store2.begin(LogIndex(7), LogTerm(1), b"m").unwrap();
        w.write_chunk(b"sealed data").unwrap();
        let plain = store2.finish(w).unwrap();
        assert_eq!(std::fs::read(&plain.path).unwrap(), sealed_bytes);
        // Sealed but never finished (a crash before the rename): nothing is left behind.
        let mut w = store.begin(LogIndex(9), LogTerm(1), b"m").unwrap();
        w.write_chunk(b"x").unwrap();
        w.seal().unwrap();
        drop(w);
        let store = SnapshotStore::open(dir.path(), None).unwrap();
        assert_eq!(store.latest(), Some(&sealed));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn dropped_writer_leaves_no_partial_file_and_truncated_snapshot_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SnapshotStore::open(dir.path(), None).unwrap();
        let mut w = store.begin(LogIndex(3), LogTerm(1), b"").unwrap();
        w.write_chunk(b"half").unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let m = store
            .install(LogIndex(4), LogTerm(1), b"", &b"payload"[..])
            .unwrap();
        let f = OpenOptions::new().write(true).open(&m.path).unwrap();
        f.set_len(m.file_bytes - 1).unwrap();
        let store = SnapshotStore::open(dir.path(), None).unwrap();
        assert!(store.latest().is_none());
        assert!(PathBuf::from(format!("{}{BROKEN_SUFFIX}", m.path.display())).exists());
    }
}
