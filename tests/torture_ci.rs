//! A short `shmraft torture` run per fsync policy, sized for CI (a few seconds each). Long runs
//! are the ignored test below and the documented command (README, "Torture").

use serde_json::Value;
use std::process::Command;
use std::sync::Mutex;

/// One torture cluster at a time: three of them at once on a 2-core CI machine measure the
/// machine, not shmraft.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn torture(policy: &str, seconds: u64, faults: &str, seed: u64) -> Value {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_shmraft"))
        .args(["torture", "--json", "--nodes", "3", "--clients", "3"])
        .args(["--duration-s", &seconds.to_string(), "--fsync", policy])
        .args(["--faults", faults, "--seed", &seed.to_string()])
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
        "torture under {policy} (seed {seed}) failed: {report:#}"
    );
    assert_eq!(report["linearizable"], "yes", "{report:#}");
    assert_eq!(report["converged"], true, "{report:#}");
    assert!(report["ops_ok"].as_u64().unwrap() > 0, "{report:#}");
    report
}

/// Checks that acknowledged appends were checked (on the append-only keys, every one is) and
/// none was lost, duplicated or reordered; the per-fault counts add up to the totals.
fn assert_no_append_lost(r: &Value) {
    let checked = r["acknowledged_appends_checked"].as_u64().unwrap();
    assert!(checked > 0, "no acknowledged append was checked: {r:#}");
    for field in ["lost", "duplicated", "misordered"] {
        assert_eq!(r[format!("acknowledged_appends_{field}")], 0, "{r:#}");
    }
    let by_fault = r["acknowledged_appends_by_fault"].as_object().unwrap();
    for kind in ["none", "kill", "pause", "partition", "powercut"] {
        assert!(by_fault.contains_key(kind), "{kind} missing: {r:#}");
    }
    let sum: u64 = by_fault
        .values()
        .map(|c| c["checked"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, checked, "{r:#}");
}

#[test]
fn torture_always_loses_nothing_under_kills_pauses_partitions_and_power_cuts() {
    let r = torture("always", 5, "kill,pause,partition,powercut", 1);
    assert_no_append_lost(&r);
}

#[test]
fn torture_batch_loses_nothing_under_kills_pauses_partitions_and_power_cuts() {
    let r = torture("batch", 5, "kill,pause,partition,powercut", 2);
    assert_no_append_lost(&r);
}

#[test]
fn torture_interval_stays_linearizable_under_kills_pauses_and_partitions() {
    torture("interval:10", 5, "kill,pause,partition", 3);
}

#[test]
fn torture_never_stays_linearizable_under_kills_pauses_and_partitions() {
    torture("never", 5, "kill,pause,partition", 4);
}

#[test]
#[ignore = "soak: several minutes; run with `cargo test --release --test torture_ci -- --ignored`"]
fn torture_soak_every_policy() {
    for (i, p) in ["always", "batch", "interval:10", "never"]
        .iter()
        .enumerate()
    {
        torture(p, 120, "kill,pause,partition,powercut", 100 + i as u64);
    }
}
