//! Append cost per fsync policy and entry size, one entry per append call.
//!
//! `never`: the cost of copying into the mapping plus the record checksum. `always`: append
//! returns after the msync covering the entry (a durable append). `batch`: append, then wait
//! until the group-commit thread's sync covers the entry (one appender: durable latency).
//! To keep disk use bounded the log is compacted (untimed) every 64 MiB of appends.
//!
//! Run: `cargo bench --bench wal_append` (not part of the test suite).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shmraft::storage::{EntryKind, FsyncPolicy, LogIndex, LogTerm, Storage, StorageOptions};
use std::time::{Duration, Instant};

const SIZES: [usize; 3] = [256, 4096, 65536];
const COMPACT_EVERY_BYTES: u64 = 64 << 20;

fn bench_policy(c: &mut Criterion, policy: FsyncPolicy) {
    let mut g = c.benchmark_group(format!("wal_append/{policy}"));
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    if policy != FsyncPolicy::Never {
        g.sample_size(20);
    }
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut opts = StorageOptions::default();
            opts.wal.fsync_policy = policy;
            let mut st = Storage::open(dir.path(), opts).expect("open");
            let payload = vec![0x5au8; size];
            let wait_durable = matches!(policy, FsyncPolicy::Batch { .. });
            let mut since_compact = 0u64;
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let i = st.wal.last_index().next();
                    let t0 = Instant::now();
                    st.wal
                        .append_one(i, LogTerm(1), EntryKind(0), &payload)
                        .expect("append");
                    if wait_durable {
                        while st.wal.durable_index() < i {
                            std::thread::yield_now();
                        }
                    }
                    total += t0.elapsed();
                    since_compact += size as u64;
                    if since_compact >= COMPACT_EVERY_BYTES {
                        // Untimed: drop whole old segments so the bench does not fill the disk.
                        let last = st.wal.last_index();
                        st.wal
                            .compact(LogIndex(last.0 - 1), LogTerm(1))
                            .expect("compact");
                        since_compact = 0;
                    }
                }
                total
            });
            st.close().expect("close");
        });
    }
    g.finish();
}

fn wal_append(c: &mut Criterion) {
    bench_policy(c, FsyncPolicy::Never);
    bench_policy(c, FsyncPolicy::Always);
    bench_policy(c, FsyncPolicy::batch_default());
}

criterion_group!(benches, wal_append);
criterion_main!(benches);
