//! State machine apply cost: one committed client write through exactly-once sessions into the
//! built-in key-value machine, as every node of a cluster applies it (decode the session
//! envelope, deduplicate, apply the put, cache and encode the result), and the snapshot capture
//! the node performs on its loop thread. Baseline in the same run: copying the same command bytes
//! with memcpy.
//!
//! ```text
//! cargo bench --bench apply_throughput
//! ```

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shmraft_consensus::session::{ClientRequest, SessionConfig, Sessions};
use shmraft_consensus::{Index, KvCommand, KvStateMachine, StateMachine};
use std::hint::black_box;

/// Commands per measured iteration.
const OPS: usize = 4096;

/// `clients` sessions, each putting 256-byte values to its own `keys` keys in turn, like the
/// load generator of `shmraft bench`.
fn commands(clients: u64, keys: u64, rounds: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for seq in 1..=rounds {
        for c in 0..clients {
            let cmd = KvCommand::Put {
                key: format!("c0-{c}-{}", seq % keys).into_bytes(),
                value: vec![seq as u8; 256],
            }
            .encode()
            .unwrap();
            out.push(
                ClientRequest {
                    client_id: c + 1,
                    seq,
                    first_unacked_seq: seq,
                    log_time_ms: 1,
                    command: cmd,
                }
                .encode()
                .unwrap(),
            );
        }
    }
    out
}

fn apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply");
    g.throughput(Throughput::Elements(OPS as u64));
    let mut captures = Vec::new();
    for (clients, keys) in [(64u64, 1000u64), (256, 1000)] {
        // Enough rounds to fill every key once, then measure overwrites (the steady state).
        let cmds = commands(clients, keys, keys + (OPS as u64 / clients) * 8);
        let mut sm = Sessions::new(KvStateMachine::new(), SessionConfig::default());
        let warm = (clients * keys) as usize;
        let mut i = 0usize;
        for cmd in &cmds[..warm] {
            i += 1;
            black_box(sm.apply(Index(i as u64), cmd));
        }
        let mut at = warm;
        g.bench_with_input(
            BenchmarkId::new("session_kv_put_256B", format!("{clients}x{keys}_keys")),
            &(),
            |b, _| {
                b.iter(|| {
                    for _ in 0..OPS {
                        if at == cmds.len() {
                            at = warm;
                        }
                        i += 1;
                        black_box(sm.apply(Index(i as u64), &cmds[at]));
                        at += 1;
                    }
                })
            },
        );
        captures.push((format!("{clients}x{keys}_keys"), sm));
    }
    // Baseline: copying the same bytes, command by command.
    let cmds = commands(64, 1000, OPS as u64 / 64);
    let mut dst = vec![0u8; 4096];
    g.bench_function("baseline_memcpy_commands", |b| {
        b.iter(|| {
            for c in &cmds {
                dst[..c.len()].copy_from_slice(black_box(c));
            }
            black_box(&dst);
        })
    });
    g.finish();
    // What the node's loop thread pays when a snapshot starts (the rest runs on another thread).
    let mut g = c.benchmark_group("snapshot_capture");
    for (name, sm) in &captures {
        g.bench_function(name.as_str(), |b| b.iter(|| black_box(sm.snapshot_job())));
    }
    g.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);
