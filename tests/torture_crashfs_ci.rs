//! CI-sized torture with crash file system power cuts (tens of them, about half a minute per
//! policy): a power cut crashes the node's FUSE mount, so what survives is decided below the
//! log, not by its own sync ledger. Fails if any acknowledged append is lost under `always` or
//! `batch`. Needs /dev/fuse and root (or fusermount3; `.ci/run` installs fuse3). The soak is
//! `shmraft crashfs-soak` (README, docs/CRASHFS.md).

use serde_json::Value;
use std::process::Command;
use std::sync::Mutex;

/// One torture cluster at a time (2-core CI machines).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn crashfs_torture(policy: &str, seed: u64) -> Value {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_shmraft"))
        .args([
            "torture",
            "--json",
            "--crash-fs",
            "--nodes",
            "3",
            "--clients",
            "3",
        ])
        .args([
            "--duration-s",
            "25",
            "--fsync",
            policy,
            "--faults",
            "powercut",
        ])
        .args(["--seed", &seed.to_string()])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "torture printed no JSON report ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success(),
        "crash-fs torture under {policy} (seed {seed}) failed: {report:#}"
    );
    assert!(
        report["power_cut_model"]
            .as_str()
            .is_some_and(|m| m.starts_with("crash-fs")),
        "{report:#}"
    );
    assert!(
        report["crash_fs"]["power_cuts"].as_u64().unwrap() >= 8,
        "too few power cuts to mean anything: {report:#}"
    );
    assert_eq!(report["acknowledged_appends_lost"], 0, "{report:#}");
    assert!(
        report["acknowledged_appends_checked"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    assert_eq!(report["linearizable"], "yes", "{report:#}");
    assert_eq!(report["converged"], true, "{report:#}");
    report
}

#[test]
fn crashfs_power_cuts_lose_no_acknowledged_append_under_always() {
    crashfs_torture("always", 11);
}

#[test]
fn crashfs_power_cuts_lose_no_acknowledged_append_under_batch() {
    crashfs_torture("batch", 12);
}
