//! Core CPU cost: entries per second through a 3-node cluster of `Raft` cores with no I/O and no
//! faults (in-memory stores, messages handed over directly, persistence completing at once). This
//! is the ceiling the real cluster is measured against. Baseline in the same run: copying the
//! same payload bytes with memcpy.
//!
//! ```text
//! cargo bench --bench core_throughput
//! ```

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shmraft_consensus::{
    Config, EntryKind, Index, LogStore, MemLogStore, Membership, Message, NodeId, Payload, Raft,
    SnapshotMeta,
};
use std::collections::VecDeque;
use std::hint::black_box;

/// Entries proposed per `propose_batch` call (client batching).
const BATCH: usize = 256;
/// Entries per measured iteration.
const ENTRIES_PER_ITER: usize = 8192;

struct Cluster {
    nodes: Vec<Raft<MemLogStore>>,
    wire: VecDeque<Message>,
    applied: Vec<u64>,
    leader: usize,
}

impl Cluster {
    fn new() -> Cluster {
        let voters: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let nodes = (1..=3u64)
            .map(|id| {
                let mut c = Config::new(NodeId(id), voters.clone());
                // Snapshot (empty: there is no state machine) and compact often, so the heap
                // holds a bounded log as the mmapped WAL would, and the allocator reuses memory
                // instead of faulting in fresh pages.
                c.snapshot_entries = 4096;
                c.compaction_retain_entries = 256;
                let store = MemLogStore::new();
                let hs = store.hard_state;
                Raft::new(c, store, hs, id).expect("valid config")
            })
            .collect();
        let mut cl = Cluster {
            nodes,
            wire: VecDeque::new(),
            applied: vec![0; 3],
            leader: 0,
        };
        // Elect a leader: tick until one appears.
        for _ in 0..1000 {
            for n in cl.nodes.iter_mut() {
                n.tick();
            }
            cl.settle();
            if let Some(l) = cl.nodes.iter().position(|n| n.is_leader()) {
                cl.leader = l;
                return cl;
            }
        }
        panic!("no leader elected");
    }

    /// Runs every node's Ready loop and delivers messages until nothing moves.
    fn settle(&mut self) {
        loop {
            let mut progressed = false;
            for i in 0..self.nodes.len() {
                while self.nodes[i].has_ready() {
                    progressed = true;
                    let rd = self.nodes[i].ready();
                    self.wire.extend(rd.messages);
                    if let Some(p) = rd.persist {
                        let store = self.nodes[i].store_mut();
                        if let Some(hs) = p.hard_state {
                            store.hard_state = hs;
                        }
                        store.append(&p.entries).expect("appendable");
                        self.wire.extend(p.messages);
                        self.nodes[i].on_persisted(p.id);
                    }
                    for e in &rd.committed {
                        if e.kind == EntryKind::Normal {
                            self.applied[i] += 1;
                            black_box(e.data.as_slice());
                        }
                    }
                    if let Some(at) = rd.snapshot_request {
                        let term = self.nodes[i].term_of(at).expect("applied entry");
                        let meta = SnapshotMeta {
                            last_included_index: at,
                            last_included_term: term,
                            membership: Membership::default(),
                        };
                        self.nodes[i]
                            .store_mut()
                            .set_snapshot(meta.clone(), Payload::default());
                        self.nodes[i].on_snapshot_written(&meta);
                    }
                    if let Some(to) = rd.compact_to {
                        self.nodes[i].store_mut().compact(to);
                    }
                }
            }
            while let Some(m) = self.wire.pop_front() {
                progressed = true;
                let to = m.to.0 as usize - 1;
                self.nodes[to].step(m).expect("well-formed");
            }
            if !progressed {
                return;
            }
        }
    }

    /// Proposes `n` entries of `payload` bytes in batches and waits until every node applied them.
    fn replicate(&mut self, n: usize, payload: &[u8]) {
        let target: Vec<u64> = self.applied.iter().map(|a| a + n as u64).collect();
        let mut batch = Vec::with_capacity(BATCH);
        let mut left = n;
        while left > 0 {
            batch.clear();
            for _ in 0..BATCH.min(left) {
                batch.push(Payload::from_slice(payload));
            }
            left -= batch.len();
            self.nodes[self.leader]
                .propose_batch(&batch)
                .expect("the leader accepts");
            self.settle();
        }
        // Followers learn the final commit index from a heartbeat.
        while self.applied.iter().zip(&target).any(|(a, t)| a < t) {
            for _ in 0..3 {
                self.nodes[self.leader].tick();
            }
            self.settle();
        }
        debug_assert!(self.nodes[self.leader].store().last_index() >= Index(n as u64));
    }
}

fn core_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("core_throughput");
    group.throughput(Throughput::Elements(ENTRIES_PER_ITER as u64));
    for &size in &[64usize, 1024] {
        let payload = vec![0xabu8; size];
        let mut cluster = Cluster::new();
        group.bench_with_input(BenchmarkId::new("3_nodes_entries", size), &size, |b, _| {
            b.iter(|| cluster.replicate(ENTRIES_PER_ITER, &payload))
        });
        // Baseline: copying the same bytes (one memcpy per entry into a reused buffer).
        let mut dst = vec![0u8; size];
        group.bench_with_input(
            BenchmarkId::new("baseline_memcpy_entries", size),
            &size,
            |b, _| {
                b.iter(|| {
                    for _ in 0..ENTRIES_PER_ITER {
                        dst.copy_from_slice(black_box(&payload));
                        black_box(&dst);
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, core_throughput);
criterion_main!(benches);
