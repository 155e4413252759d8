//! Informal throughput/latency check of the write-ahead log (the official benches live in
//! benches/ and `shmraft wal bench`). Run:
//!   cargo run --release -p shmraft-storage --example wal_quick -- [dir]
//! Prints entries/s for 256 B appends under `never`, GB/s for 64 KiB appends, the p50 of an
//! `always` 4 KiB append against a raw pwrite+fdatasync p50 in the same directory, and the time
//! to open a ~1 GiB log.

use shmraft_storage::*;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::Instant;

fn p50(mut v: Vec<u128>) -> u128 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let base = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let zero_fill = std::env::var("ZERO_FILL").ok().map(|v| v != "0");
    let tmp = tempfile::tempdir_in(&base).unwrap();
    let mk = |policy: &str| {
        let mut o = StorageOptions::default();
        o.wal.fsync_policy = policy.parse().unwrap();
        o.wal.zero_fill_segments = zero_fill;
        o
    };

    // `always` 4 KiB: durable append p50 vs raw fdatasync p50.
    if std::env::var("ONLY_NEVER").is_err() {
        let dir = tmp.path().join("always");
        let mut st = Storage::open(&dir, mk("always")).unwrap();
        // Let the preparer finish the next segment (its zero fill competes for the disk).
        std::thread::sleep(std::time::Duration::from_millis(
            std::env::var("SETTLE_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(3000),
        ));
        let payload = vec![3u8; 4096];
        let mut lat = Vec::new();
        for i in 1..=2000u64 {
            let t = Instant::now();
            st.wal
                .append_one(LogIndex(i), LogTerm(1), EntryKind(0), &payload)
                .unwrap();
            lat.push(t.elapsed().as_nanos());
        }
        let wal_p50 = p50(lat);
        let raw = tmp.path().join("raw");
        let mut f = std::fs::File::create(&raw).unwrap();
        f.write_all(&vec![0u8; 64 << 20]).unwrap();
        f.sync_all().unwrap();
        let mut lat = Vec::new();
        for i in 0..2000u64 {
            let t = Instant::now();
            f.write_all_at(&payload, i * 4128).unwrap();
            f.sync_data().unwrap();
            lat.push(t.elapsed().as_nanos());
        }
        let raw_p50 = p50(lat);
        println!(
            "always 4KiB: p50 {:.1} us; raw pwrite+fdatasync p50 {:.1} us; ratio {:.2}",
            wal_p50 as f64 / 1e3,
            raw_p50 as f64 / 1e3,
            wal_p50 as f64 / raw_p50 as f64
        );
    }
    if std::env::var("ONLY_ALWAYS").is_ok() {
        return;
    }
    // 256 B, one entry per call, `never`.
    {
        let dir = tmp.path().join("small");
        let mut st = Storage::open(&dir, mk("never")).unwrap();
        let payload = vec![7u8; 256];
        let n = 2_000_000u64;
        let t = Instant::now();
        for i in 1..=n {
            st.wal
                .append_one(LogIndex(i), LogTerm(1), EntryKind(0), &payload)
                .unwrap();
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "never 256B x1: {:.2} M entries/s ({n} in {s:.3}s)",
            n as f64 / s / 1e6
        );
        // memcpy baseline of the same bytes.
        let mut dst = vec![0u8; 64 << 20];
        let t = Instant::now();
        let mut at = 0;
        for _ in 0..n {
            if at + 288 > dst.len() {
                at = 0;
            }
            dst[at..at + 256].copy_from_slice(&payload);
            at += 288;
        }
        std::hint::black_box(&dst);
        let s = t.elapsed().as_secs_f64();
        println!(
            "  baseline memcpy 256B: {:.2} M copies/s",
            n as f64 / s / 1e6
        );
        drop(st);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // 64 KiB entries, `never`.
    if std::env::var("ONLY_NEVER").is_err() {
        let dir = tmp.path().join("big");
        let mut st = Storage::open(&dir, mk("never")).unwrap();
        let payload = vec![9u8; 64 << 10];
        let n = 16_000u64;
        let t = Instant::now();
        for i in 1..=n {
            st.wal
                .append_one(LogIndex(i), LogTerm(1), EntryKind(0), &payload)
                .unwrap();
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "never 64KiB x1: {:.2} GB/s",
            (n * (64 << 10)) as f64 / s / 1e9
        );
        drop(st);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // Open a ~1 GiB log.
    if std::env::var("ONLY_NEVER").is_err() {
        let dir = tmp.path().join("open");
        {
            let mut st = Storage::open(&dir, mk("never")).unwrap();
            let payload = vec![5u8; 4000];
            for i in 1..=260_000u64 {
                st.wal
                    .append_one(LogIndex(i), LogTerm(1), EntryKind(0), &payload)
                    .unwrap();
            }
            // A clean shutdown under `never` leaves the data to the OS; sync it so the open
            // below measures reading footers, not flushing 1 GiB.
            st.wal.sync().unwrap();
            st.close().unwrap();
        }
        let t = Instant::now();
        let st = Storage::open(&dir, mk("never")).unwrap();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "open ~1 GiB log ({} segments): {ms:.1} ms",
            st.wal.segments().len()
        );
        let t = Instant::now();
        let problems = inspect::verify(&dir).unwrap();
        println!(
            "verify ~1 GiB: {:.0} ms, {} problems",
            t.elapsed().as_secs_f64() * 1e3,
            problems.len()
        );
    }
}
