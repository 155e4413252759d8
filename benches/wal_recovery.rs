//! Recovery (open) time against log size: 16, 64 and 256 MiB of 4 KiB entries in 64 MiB
//! segments, synced and closed, reopened with a warm page cache. storage rule 13 of docs/RULES.md:
//! sealed segments are opened through their footers, so the time should follow the open segment,
//! not the total size. Only `Storage::open` is timed.
//!
//! Run: `cargo bench --bench wal_recovery` (not part of the test suite).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shmraft::storage::{EntryKind, FsyncPolicy, LogIndex, LogTerm, Storage, StorageOptions};
use std::time::{Duration, Instant};

const ENTRY_BYTES: usize = 4096;

fn opts() -> StorageOptions {
    let mut o = StorageOptions::default();
    o.wal.fsync_policy = FsyncPolicy::Never;
    o
}

fn wal_recovery(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_recovery");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    for log_mib in [16u64, 64, 256] {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let mut st = Storage::open(dir.path(), opts()).expect("open");
            let payload = vec![0x33u8; ENTRY_BYTES];
            let n = (log_mib << 20) / ENTRY_BYTES as u64;
            for i in 1..=n {
                st.wal
                    .append_one(LogIndex(i), LogTerm(1), EntryKind(0), &payload)
                    .expect("append");
            }
            st.wal.sync().expect("sync");
            st.close().expect("close");
        }
        g.throughput(Throughput::Bytes(log_mib << 20));
        g.bench_with_input(BenchmarkId::new("open_mib", log_mib), &log_mib, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    let st = Storage::open(dir.path(), opts()).expect("open");
                    total += t0.elapsed();
                    st.close().expect("close");
                }
                total
            });
        });
    }
    g.finish();
}

criterion_group!(benches, wal_recovery);
criterion_main!(benches);
