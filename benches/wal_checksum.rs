//! Record checksum throughput (crc32fast, as the log computes it: seeded per segment, over the
//! record header and payload).
//!
//! Run: `cargo bench --bench wal_checksum` (not part of the test suite).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shmraft::storage::format::{self, RECORD_HEADER_BYTES};
use std::hint::black_box;

fn wal_checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_checksum");
    let header = [0x11u8; RECORD_HEADER_BYTES as usize];
    for size in [256usize, 4096, 65536, 1 << 20] {
        let payload = vec![0xa7u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("record_crc", size), &size, |b, _| {
            b.iter(|| format::record_crc(black_box(0x1234_5678), &header, black_box(&payload)))
        });
        g.bench_with_input(BenchmarkId::new("crc_seeded", size), &size, |b, _| {
            b.iter(|| format::crc_seeded(black_box(0x1234_5678), black_box(&payload)))
        });
    }
    g.finish();
}

criterion_group!(benches, wal_checksum);
criterion_main!(benches);
