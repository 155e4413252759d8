//! Bug seeding: each classic Raft bug, switched back on through `Config::bugs` (cargo feature
//! `bug-seeding`, enabled for this crate's tests), must be caught by the simulator within a
//! bounded number of seeds. Each test also re-runs the failing seed without the bug, to show the
//! catch is the bug's doing.
//!
//! Two measurements where they differ: with the full simulator (including the durability oracle
//! that checks, when a vote or acknowledgement leaves a node, that its disk already holds what it
//! vouches for), and end to end (oracle off: only the safety properties, the history and the final
//! state can catch it).

use shmraft_consensus::Config;
use shmraft_consensus::sim::scenarios::{self, CrashWho};
use shmraft_consensus::sim::{FaultMix, Violation, first_failing_seed, with_durability_oracle};

/// Finds the first failing seed of `scenario` with `bug` and checks that seed passes with `fixed`.
fn caught(
    what: &str,
    max_seeds: u64,
    bug: fn(&mut Config),
    fixed: fn(&mut Config),
    scenario: impl Fn(u64, fn(&mut Config)) -> Result<(), Violation>,
) -> (u64, String) {
    let Some((seed, msg)) = first_failing_seed(max_seeds, |s| scenario(s, bug)) else {
        panic!("{what}: not caught within {max_seeds} seeds");
    };
    if let Err(v) = scenario(seed, fixed) {
        panic!("{what}: seed {seed} also fails without the bug: {v}");
    }
    eprintln!(
        "{what}: caught at seed {seed}: {}",
        msg.lines().next().unwrap_or("")
    );
    (seed, msg)
}

fn none(_: &mut Config) {}

fn vote_without_persisting(c: &mut Config) {
    c.bugs.vote_without_persisting = true;
}

#[test]
fn vote_without_persisting_is_caught() {
    let (_, msg) = caught(
        "vote without persisting (full)",
        5,
        vote_without_persisting,
        none,
        |s, t| scenarios::random(s, FaultMix::crashes(), 5, 3000, t),
    );
    assert!(msg.contains("before it was durable"), "{msg}");
    let (_, msg) = with_durability_oracle(false, || {
        caught(
            "vote without persisting (end to end)",
            200,
            vote_without_persisting,
            none,
            scenarios::elections_under_power_cuts,
        )
    });
    assert!(msg.contains("two leaders"), "{msg}");
}

fn commit_previous_term(c: &mut Config) {
    c.bugs.commit_previous_term_by_counting = true;
    fig8_shape(c);
}

/// One entry per AppendEntries and one in flight, so followers' match indexes stop on old-term
/// entries before the new leader's own entry arrives: the Figure 8 window.
fn fig8_shape(c: &mut Config) {
    c.max_msg_entries = 1;
    c.max_inflight_msgs = 1;
}

#[test]
fn commit_previous_term_by_counting_is_caught() {
    caught(
        "commit previous term by counting (Figure 8)",
        100,
        commit_previous_term,
        fig8_shape,
        |s, t| scenarios::figure8(s, true, t),
    );
}

fn ack_before_sync(c: &mut Config) {
    c.bugs.ack_before_sync = true;
}

#[test]
fn ack_before_sync_is_caught() {
    let (_, msg) = caught(
        "ack before sync (full)",
        5,
        ack_before_sync,
        none,
        |s, t| scenarios::random(s, FaultMix::crashes(), 5, 3000, t),
    );
    assert!(msg.contains("before they were durable"), "{msg}");
    with_durability_oracle(false, || {
        caught(
            "ack before sync (end to end)",
            60,
            ack_before_sync,
            none,
            |s, t| scenarios::persistence(s, CrashWho::All, t),
        )
    });
}

fn read_without_read_index(c: &mut Config) {
    c.bugs.read_without_read_index = true;
}

#[test]
fn read_without_read_index_is_caught() {
    let (_, msg) = caught(
        "read without ReadIndex",
        30,
        read_without_read_index,
        none,
        scenarios::leader_pause_no_stale_reads,
    );
    assert!(
        msg.contains("stale read") || msg.contains("not linearizable"),
        "{msg}"
    );
}

fn compact_early(c: &mut Config) {
    scenarios::snapshot_tweak(c);
    c.bugs.compact_before_snapshot_durable = true;
}

#[test]
fn compacting_before_the_snapshot_is_durable_is_caught() {
    with_durability_oracle(false, || {
        caught(
            "compaction before the snapshot is durable",
            10,
            compact_early,
            scenarios::snapshot_tweak,
            scenarios::all_nodes_crash_after_snapshots,
        )
    });
}

fn forget_snapshot(c: &mut Config) {
    scenarios::snapshot_tweak(c);
    c.bugs.forget_snapshot_on_restart = true;
}

#[test]
fn forgetting_the_snapshot_on_restart_is_caught() {
    with_durability_oracle(false, || {
        caught(
            "forgetting the snapshot on restart",
            10,
            forget_snapshot,
            scenarios::snapshot_tweak,
            scenarios::all_nodes_crash_after_snapshots,
        )
    });
}

// ---------------------------------------------------------------------------------------------
// Driver bugs. The core is correct; the code that runs it (`node::driver::Driver`, which every
// node process and every simulator seed runs) is not. The simulator before the driver was shared
// ran its own copy of the Ready loop, so none of these could be seen there: seeding them into the
// production driver and catching them is what the shared driver buys.

fn driver_vote_before_sync(c: &mut Config) {
    c.bugs.driver_vote_before_sync = true;
}

#[test]
fn driver_sending_a_vote_before_the_hard_state_is_synced_is_caught() {
    let (_, msg) = caught(
        "driver: vote before the hard state is synced",
        5,
        driver_vote_before_sync,
        none,
        |s, t| scenarios::random(s, FaultMix::crashes(), 5, 3000, t),
    );
    assert!(
        msg.contains("granted its vote") && msg.contains("before it was durable"),
        "{msg}"
    );
}

fn driver_ack_before_sync(c: &mut Config) {
    c.bugs.driver_ack_before_sync = true;
}

#[test]
fn driver_follower_acknowledging_before_its_append_is_durable_is_caught() {
    let (_, msg) = caught(
        "driver: follower acknowledges before its append is durable",
        5,
        driver_ack_before_sync,
        none,
        |s, t| scenarios::random(s, FaultMix::crashes(), 5, 3000, t),
    );
    assert!(msg.contains("before they were durable"), "{msg}");
}

fn driver_client_ack_before_commit(c: &mut Config) {
    c.bugs.driver_client_ack_before_commit = true;
}

#[test]
fn driver_acknowledging_a_client_before_commit_is_caught() {
    // End to end: only the history and the final state can see a premature acknowledgement.
    let (_, msg) = with_durability_oracle(false, || {
        caught(
            "driver: client acknowledged before its entry is on a majority",
            20,
            driver_client_ack_before_commit,
            none,
            |s, t| scenarios::random(s, FaultMix::partitions(), 5, 3000, t),
        )
    });
    assert!(
        msg.contains("acknowledged write")
            || msg.contains("not linearizable")
            || msg.contains("stale read"),
        "{msg}"
    );
}

fn driver_apply_twice(c: &mut Config) {
    scenarios::snapshot_tweak(c);
    c.bugs.driver_apply_twice_after_restart = true;
}

#[test]
fn driver_applying_an_entry_twice_after_a_restart_is_caught() {
    let (_, msg) = caught(
        "driver: entries applied twice after a restart",
        5,
        driver_apply_twice,
        scenarios::snapshot_tweak,
        scenarios::all_nodes_crash_after_snapshots,
    );
    assert!(msg.contains("applied twice"), "{msg}");
}

fn driver_read_before_apply(c: &mut Config) {
    c.bugs.driver_read_before_apply = true;
}

/// Partitions move leadership around while every node's apply stage lags its commit index far
/// behind (a few entries per step, steps up to 300 ms apart), so a new leader confirms reads at
/// an index it has not applied yet. Only a simulator that steps the apply stage on its own can
/// show this bug: applied right after commit, as the old simulator's loop did, nothing lags.
fn partitions_with_lagging_apply() -> FaultMix {
    FaultMix {
        apply_lag_ms: 300,
        ..FaultMix::partitions()
    }
}

#[test]
fn driver_answering_a_read_before_its_read_index_is_applied_is_caught() {
    let (_, msg) = caught(
        "driver: read answered before its ReadIndex is applied",
        20,
        driver_read_before_apply,
        none,
        |s, t| scenarios::random(s, partitions_with_lagging_apply(), 5, 3000, t),
    );
    assert!(
        msg.contains("stale read") || msg.contains("not linearizable"),
        "{msg}"
    );
}
