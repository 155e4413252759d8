#![allow(dead_code)]
//! Helpers shared by the storage integration tests.

use shmraft_storage::*;
use std::path::Path;
use std::sync::Arc;

/// Options with small segments so tests rotate often.
pub fn opts(policy: &str, segment_bytes: u64) -> StorageOptions {
    let mut o = StorageOptions::default();
    o.wal.segment_bytes = segment_bytes;
    o.wal.fsync_policy = policy.parse().unwrap();
    o
}

pub fn opts_with_faults(policy: &str, segment_bytes: u64) -> (StorageOptions, Arc<FaultInjector>) {
    let f = FaultInjector::new();
    let mut o = opts(policy, segment_bytes);
    o.faults = Some(f.clone());
    (o, f)
}

/// Deterministic payload of entry `i`, `len` bytes.
pub fn payload(i: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA5A5;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

/// Appends entries `from..=to` with term `term`, one append call each.
pub fn append_range(wal: &mut Wal, from: u64, to: u64, term: u64, len: usize) {
    for i in from..=to {
        let p = payload(i, len);
        wal.append_one(LogIndex(i), LogTerm(term), EntryKind((i % 3) as u8), &p)
            .unwrap();
    }
}

/// Checks that entries `from..=to` read back as written with `term`.
pub fn check_range(wal: &Wal, from: u64, to: u64, term: u64, len: usize) {
    if from > to {
        return;
    }
    let got = wal.read(LogIndex(from), usize::MAX, u64::MAX).unwrap();
    assert_eq!(got.len() as u64, wal.last_index().0 - from + 1);
    for e in got.iter().take((to - from + 1) as usize) {
        assert_eq!(e.term, LogTerm(term), "term at {}", e.index);
        assert_eq!(e.payload, payload(e.index.0, len), "payload at {}", e.index);
        assert_eq!(e.kind, EntryKind((e.index.0 % 3) as u8));
    }
}

pub fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

/// Flips one bit of a file.
pub fn flip_bit(path: &Path, offset: u64, bit: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 1 << bit;
    f.write_all_at(&b, offset).unwrap();
}

/// Overwrites `[offset, offset+len)` of a file with `byte`.
pub fn fill(path: &Path, offset: u64, len: u64, byte: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    f.write_all_at(&vec![byte; len as usize], offset).unwrap();
}

/// Reads `[offset, offset+len)` of a file.
pub fn read_bytes(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut v = vec![0u8; len as usize];
    f.read_exact_at(&mut v, offset).unwrap();
    v
}

/// (segment path, record offset, record info) of the record with `index`.
pub fn find_record(dir: &Path, index: u64) -> (std::path::PathBuf, inspect::RecordInfo) {
    for p in segment_files(dir) {
        for r in inspect::records(&p).unwrap() {
            if r.index == LogIndex(index) && r.checksum_ok {
                return (p, r);
            }
        }
    }
    panic!("record {index} not found");
}

/// Every entry of the log, checking contiguity.
pub fn all_entries(wal: &Wal) -> Vec<Entry> {
    if wal.last_index() < wal.first_index() {
        return Vec::new();
    }
    let v = wal.read(wal.first_index(), usize::MAX, u64::MAX).unwrap();
    assert_eq!(v.len() as u64, wal.last_index().0 - wal.first_index().0 + 1);
    v
}

/// Polls `cond` until it holds or `secs` pass (no fixed sleeps in tests).
pub fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::yield_now();
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    cond()
}
