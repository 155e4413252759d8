//! Core CPU cost: entries per second through a 3-node cluster of production drivers
//! (`node::driver::Driver`, the code every node process and every simulator seed runs) with no
//! I/O and no faults (the in-memory `MemDisk` seam, messages handed over directly, persistence
//! completing at once). This is the ceiling the real cluster is measured against. Baseline in the same run: copying the
//! same payload bytes with memcpy.
//!
//! ```text
//! cargo bench --bench core_throughput
//! ```

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shmraft_consensus::node::driver::{Driver, MemDisk, Network};
use shmraft_consensus::node::wire::ServerFrame;
use shmraft_consensus::{Config, Index, LogStore, MemLogStore, Message, NodeId, Payload, Raft};
use std::hint::black_box;
use std::io::{self, Read, Write};

/// Entries proposed per `propose_batch` call (client batching).
const BATCH: usize = 256;
/// Entries per measured iteration.
const ENTRIES_PER_ITER: usize = 8192;

/// Messages leave through this network seam into the cluster's wire; there are no clients.
#[derive(Default)]
struct Wire {
    out: Vec<Message>,
}

impl Network for Wire {
    type Client = u32;
    fn send(&mut self, m: Message) {
        self.out.push(m);
    }
    fn respond(&mut self, _: u32, _: ServerFrame) {}
    fn flush(&mut self) {}
    fn now_ms(&self) -> u64 {
        0
    }
}

/// Counts applied commands and touches their bytes; its snapshot is empty.
#[derive(Default)]
struct Counter {
    applied: u64,
}

impl shmraft_consensus::StateMachine for Counter {
    fn apply(&mut self, _: Index, command: &[u8]) -> Vec<u8> {
        self.applied += 1;
        black_box(command);
        Vec::new()
    }
    fn query(&self, _: &[u8]) -> Vec<u8> {
        Vec::new()
    }
    fn snapshot(&self, _: &mut dyn Write) -> io::Result<()> {
        Ok(())
    }
    fn restore(&mut self, _: &mut dyn Read) -> io::Result<()> {
        Ok(())
    }
    fn digest(&self) -> u64 {
        self.applied
    }
}

/// The production driver over an in-memory disk and a direct wire.
type BenchDriver = Driver<MemDisk, Wire, Counter>;

struct Cluster {
    nodes: Vec<BenchDriver>,
    leader: usize,
}

impl Cluster {
    fn new() -> Cluster {
        let voters: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let nodes = (1..=3u64)
            .map(|id| {
                let mut c = Config::new(NodeId(id), voters.clone());
                // Snapshot (empty: the machine only counts) and compact often, so the heap holds
                // a bounded log as the mmapped WAL would, and the allocator reuses memory
                // instead of faulting in fresh pages.
                c.snapshot_entries = 4096;
                c.compaction_retain_entries = 256;
                let store = MemLogStore::new();
                let hs = store.hard_state;
                let raft = Raft::new(c, store, hs, id).expect("valid config");
                Driver::new(raft, MemDisk, Wire::default(), Counter::default(), 1000)
            })
            .collect();
        let mut cl = Cluster { nodes, leader: 0 };
        // Elect a leader: tick until one appears.
        for _ in 0..1000 {
            for n in cl.nodes.iter_mut() {
                n.tick(1);
            }
            cl.settle();
            if let Some(l) = cl.nodes.iter().position(|n| n.raft().is_leader()) {
                cl.leader = l;
                return cl;
            }
        }
        panic!("no leader elected");
    }

    fn applied(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| n.state_machine().applied)
            .collect()
    }

    /// Runs every node's driver and delivers messages until nothing moves.
    fn settle(&mut self) {
        let mut wire = Vec::new();
        loop {
            for n in self.nodes.iter_mut() {
                n.process().expect("an in-memory disk does not fail");
                wire.append(&mut n.net_mut().out);
            }
            if wire.is_empty() {
                return;
            }
            for m in wire.drain(..) {
                let to = m.to.0 as usize - 1;
                self.nodes[to].step(m).expect("well-formed");
            }
        }
    }

    /// Proposes `n` entries of `payload` bytes in batches and waits until every node applied them.
    fn replicate(&mut self, n: usize, payload: &[u8]) {
        let target: Vec<u64> = self.applied().iter().map(|a| a + n as u64).collect();
        let mut batch = Vec::with_capacity(BATCH);
        let mut left = n;
        while left > 0 {
            batch.clear();
            for _ in 0..BATCH.min(left) {
                batch.push(Payload::from_slice(payload));
            }
            left -= batch.len();
            self.nodes[self.leader]
                .raft_mut()
                .propose_batch(&batch)
                .expect("the leader accepts");
            self.settle();
        }
        // Followers learn the final commit index from a heartbeat.
        while self.applied().iter().zip(&target).any(|(a, t)| a < t) {
            self.nodes[self.leader].tick(3);
            self.settle();
        }
        debug_assert!(self.nodes[self.leader].raft().store().last_index() >= Index(n as u64));
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
