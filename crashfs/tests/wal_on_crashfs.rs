//! A real `shmraft_storage` log in a child process on a crash file system: the child appends
//! and reports what its log acknowledged as durable; the parent kills it (SIGKILL), crashes
//! the mount (every crash mode, seeded), mounts again and checks that every acknowledged entry
//! is there, intact. The file system decides what survives, not the log's own sync ledger.

mod common;
use common::*;
use shmraft_crashfs::{CrashFsMount, CrashMode, CrashPlan};

fn crash_rounds(test: &str, policy: &str) {
    if run_child_if_asked() {
        return;
    }
    let backing = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let data = mnt.path().join("data");
    let mut acked = 0;
    let mut lost_ops = 0;
    for round in 0..8u64 {
        let m = CrashFsMount::mount(backing.path(), mnt.path()).unwrap();
        acked = run_child_until(test, &data, policy, false, acked, 150);
        let mode = CrashMode::ALL[round as usize % 4];
        let report = m
            .crash(CrashPlan {
                seed: round,
                mode: Some(mode),
            })
            .unwrap();
        lost_ops += report.ops_lost + report.ops_torn;
        let m = CrashFsMount::mount(backing.path(), mnt.path()).unwrap();
        acked = acknowledged_entries_present(&data, policy, acked)
            .unwrap_or_else(|e| panic!("round {round}: {e}\n{report:#?}"));
        m.unmount().unwrap();
    }
    // Under `always` nothing acknowledged is ever unsynced, so there may be nothing to drop;
    // under `batch` the unsynced tail must have been torn by some crash.
    if policy != "always" {
        assert!(
            lost_ops > 0,
            "no crash dropped an unsynced write: the test would prove nothing"
        );
    }
}

#[test]
fn acknowledged_appends_survive_crashes_under_always() {
    crash_rounds(
        "acknowledged_appends_survive_crashes_under_always",
        "always",
    );
}

#[test]
fn acknowledged_appends_survive_crashes_under_batch() {
    crash_rounds("acknowledged_appends_survive_crashes_under_batch", "batch");
}
