//! A deliberate bookkeeping bug in the log (`FaultInjector::skip_directory_syncs`: every
//! directory fsync reports success without syncing, so new segments and renames are never
//! durable) is invisible to the ledger-based power cut, which trusts the log's own account of
//! what was synced and treats directory operations as durable, and caught by a crash of the
//! crash file system, which forgets directory entries no fsync of the directory covered.

mod common;
use common::*;
use shmraft_crashfs::{CrashFsMount, CrashMode, CrashPlan};

const TEST: &str =
    "a_log_that_skips_directory_fsyncs_is_caught_by_crashfs_not_by_the_ledger_power_cut";

#[test]
fn a_log_that_skips_directory_fsyncs_is_caught_by_crashfs_not_by_the_ledger_power_cut() {
    if run_child_if_asked() {
        return;
    }
    // The ledger-based power cut: every seed keeps every acknowledged entry.
    for seed in 0..4u64 {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let acked = run_child_until(TEST, &data, "always", true, 0, 300);
        let report = shmraft_storage::power_cut(&data, seed).unwrap();
        acknowledged_entries_present(&data, "always", acked).unwrap_or_else(|e| {
            panic!("the ledger power cut caught the bug after all (seed {seed}): {e} {report:?}")
        });
    }
    // The crash file system: a crash loses the never-durable names, and with them acknowledged
    // entries (or the whole log).
    let backing = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let data = mnt.path().join("data");
    let m = CrashFsMount::mount(backing.path(), mnt.path()).unwrap();
    let acked = run_child_until(TEST, &data, "always", true, 0, 300);
    let report = m
        .crash(CrashPlan {
            seed: 1,
            mode: Some(CrashMode::KeepNone),
        })
        .unwrap();
    let m = CrashFsMount::mount(backing.path(), mnt.path()).unwrap();
    let found = acknowledged_entries_present(&data, "always", acked);
    m.unmount().unwrap();
    assert!(
        found.is_err(),
        "crashfs did not catch the skipped directory fsyncs: {found:?} ({report})"
    );
    // The same run without the bug keeps everything through the same crash.
    let backing = tempfile::tempdir().unwrap();
    let m = CrashFsMount::mount(backing.path(), mnt.path()).unwrap();
    let acked = run_child_until(TEST, &data, "always", false, 0, 300);
    m.crash(CrashPlan {
        seed: 1,
        mode: Some(CrashMode::KeepNone),
    })
    .unwrap();
    let m = CrashFsMount::mount(backing.path(), mnt.path()).unwrap();
    acknowledged_entries_present(&data, "always", acked).expect("without the bug");
    m.unmount().unwrap();
}
