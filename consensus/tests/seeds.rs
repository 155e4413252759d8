//! Thousands of seeded random simulations across fault mixes: clients and a nemesis for 3 s of
//! virtual time, then heal and check (see `shmraft_consensus::sim`). A failure prints its seed;
//! `SEED=<n> cargo test -p shmraft-consensus --test seeds <name>` replays it, `SEEDS=<n>` changes
//! the count. The long soak:
//!
//! ```text
//! SEEDS=20000 cargo test -p shmraft-consensus --release --test seeds soak -- --ignored
//! ```

use shmraft_consensus::Config;
use shmraft_consensus::sim::scenarios::random;
use shmraft_consensus::sim::{FaultMix, run_seeds};

fn plain(_: &mut Config) {}
fn snapshots(c: &mut Config) {
    c.snapshot_entries = 16;
    c.compaction_retain_entries = 4;
}
fn tiny_windows(c: &mut Config) {
    c.max_msg_entries = 1;
    c.max_inflight_msgs = 2;
    c.max_inflight_bytes = 256;
}
fn snapshots_and_tiny_chunks(c: &mut Config) {
    snapshots(c);
    c.snapshot_chunk_bytes = 32;
    c.max_uncommitted_bytes = 2048;
}

/// Seeds rotate through configurations so each mix also covers snapshots and tiny windows.
const TWEAKS: [fn(&mut Config); 4] = [plain, snapshots, tiny_windows, snapshots_and_tiny_chunks];

fn run(name: &str, seeds: u64, mix: fn() -> FaultMix) {
    run_seeds(name, seeds, |seed| {
        let nodes = if seed % 3 == 0 { 3 } else { 5 };
        random(seed, mix(), nodes, 3000, TWEAKS[(seed % 4) as usize])
    });
}

#[test]
fn seeds_reliable() {
    run("seeds_reliable", 150, FaultMix::none);
}

#[test]
fn seeds_unreliable_network() {
    run("seeds_unreliable_network", 350, FaultMix::unreliable);
}

#[test]
fn seeds_partitions() {
    run("seeds_partitions", 350, FaultMix::partitions);
}

#[test]
fn seeds_crashes_and_power_cuts() {
    run("seeds_crashes_and_power_cuts", 400, FaultMix::crashes);
}

#[test]
fn seeds_pauses() {
    run("seeds_pauses", 350, FaultMix::pauses);
}

#[test]
fn seeds_chaos() {
    run("seeds_chaos", 400, FaultMix::chaos);
}

#[test]
#[ignore = "long soak; run with: SEEDS=20000 cargo test -p shmraft-consensus --release --test seeds soak -- --ignored"]
fn soak() {
    let mixes: [fn() -> FaultMix; 6] = [
        FaultMix::none,
        FaultMix::unreliable,
        FaultMix::partitions,
        FaultMix::crashes,
        FaultMix::pauses,
        FaultMix::chaos,
    ];
    run_seeds("soak", 2000, |seed| {
        let nodes = [3, 5, 7][(seed % 3) as usize];
        let mix = mixes[((seed / 3) % 6) as usize];
        random(seed, mix(), nodes, 8000, TWEAKS[((seed / 18) % 4) as usize])
    });
}
