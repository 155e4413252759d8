//! `shmraft wal bench` and `shmraft wal open-bench` as a user runs them.

use std::process::{Command, Output};

const SHMRAFT: &str = env!("CARGO_BIN_EXE_shmraft");
const RAFT_DUMP: &str = env!("CARGO_BIN_EXE_raft-dump");

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .output()
        .expect("running the binary")
}

fn json(o: &Output) -> serde_json::Value {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

const REQUIRED: [&str; 8] = [
    "entries_per_s",
    "mb_per_s",
    "syncs",
    "entries_per_sync",
    "latency_us_p50",
    "latency_us_p99",
    "baseline_fdatasync_us_p50",
    "baseline_memcpy_gb_per_s",
];

#[test]
fn bench_never_json_has_the_required_fields_and_leaves_a_clean_log() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("log");
    let dir_s = dir.to_str().unwrap();
    let v = json(&run(
        SHMRAFT,
        &[
            "wal",
            "bench",
            "--dir",
            dir_s,
            "--entries",
            "3000",
            "--size",
            "256",
            "--fsync",
            "never",
            "--baseline-syncs",
            "20",
            "--json",
        ],
    ));
    for f in REQUIRED {
        assert!(v.get(f).is_some(), "missing field {f} in {v}");
    }
    assert_eq!(v["entries"], 3000);
    assert_eq!(v["last_index"], 3000);
    assert_eq!(v["syncs"], 0);
    assert_eq!(v["latency_kind"], "acknowledged-not-durable");
    assert!(v["entries_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["baseline_fdatasync_us_p50"].as_f64().unwrap() > 0.0);
    assert!(v["baseline_memcpy_gb_per_s"].as_f64().unwrap() > 0.0);
    // The log is left for raft-dump, and it verifies clean.
    let o = run(RAFT_DUMP, &[dir_s, "--verify", "--json"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let dv: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(dv["last_index"], 3000);
    // A second run continues the same log.
    let v = json(&run(
        SHMRAFT,
        &[
            "wal",
            "bench",
            "--dir",
            dir_s,
            "--entries",
            "100",
            "--size",
            "64",
            "--fsync",
            "never",
            "--no-baselines",
            "--json",
        ],
    ));
    assert_eq!(v["first_index"], 3001);
    assert_eq!(v["last_index"], 3100);
    assert!(v["baseline_fdatasync_us_p50"].is_null());
}

#[test]
fn bench_batch_with_one_appender_waits_for_each_entry_to_be_durable() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("log");
    let v = json(&run(
        SHMRAFT,
        &[
            "wal",
            "bench",
            "--dir",
            dir.to_str().unwrap(),
            "--entries",
            "30",
            "--size",
            "4096",
            "--fsync",
            "batch:100:65536",
            "--baseline-syncs",
            "10",
            "--json",
        ],
    ));
    assert_eq!(v["latency_kind"], "durable");
    assert_eq!(v["durable_index_at_end"], 30);
    let syncs = v["syncs"].as_u64().unwrap();
    // One appender that waits for durability: every entry needs its own sync.
    assert_eq!(syncs, 30, "{v}");
    assert_eq!(v["entries_per_sync"].as_f64(), Some(1.0));
}

#[test]
fn bench_always_counts_one_sync_per_entry() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("log");
    let v = json(&run(
        SHMRAFT,
        &[
            "wal",
            "bench",
            "--dir",
            dir.to_str().unwrap(),
            "--entries",
            "20",
            "--size",
            "256",
            "--fsync",
            "always",
            "--no-baselines",
            "--json",
        ],
    ));
    assert_eq!(v["syncs"], 20);
    assert_eq!(v["durable_index_at_end"], 20);
    assert_eq!(v["latency_kind"], "durable");
}

#[test]
fn bench_interval_acknowledges_before_durable_and_syncs_in_the_background() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("log");
    let v = json(&run(
        SHMRAFT,
        &[
            "wal",
            "bench",
            "--dir",
            dir.to_str().unwrap(),
            "--entries",
            "500",
            "--size",
            "128",
            "--fsync",
            "interval:1",
            "--no-baselines",
            "--json",
        ],
    ));
    assert_eq!(v["latency_kind"], "acknowledged-not-durable");
    assert_eq!(v["policy"], "interval:1");
    assert_eq!(v["last_index"], 500);
    // Closing syncs what is left, so the log verifies clean and is fully durable.
    let o = run(RAFT_DUMP, &[dir.to_str().unwrap(), "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["durable_index"], 500, "{s}");
}

#[test]
fn open_bench_reports_recovery_time_of_an_existing_log() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("log");
    let dir_s = dir.to_str().unwrap();
    json(&run(
        SHMRAFT,
        &[
            "wal",
            "bench",
            "--dir",
            dir_s,
            "--entries",
            "2000",
            "--size",
            "1000",
            "--fsync",
            "never",
            "--segment-mib",
            "1",
            "--no-baselines",
            "--json",
        ],
    ));
    let v = json(&run(
        SHMRAFT,
        &["wal", "open-bench", "--dir", dir_s, "--runs", "2", "--json"],
    ));
    assert_eq!(v["last_index"], 2000);
    assert!(v["segments"].as_u64().unwrap() >= 2, "{v}");
    assert!(v["open_ms_median"].as_f64().unwrap() > 0.0);
    // Opening is recovery only: the log still holds the same entries.
    let o = run(RAFT_DUMP, &[dir_s, "--verify"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn bench_usage_errors_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_str().unwrap();
    for args in [
        vec!["wal", "bench", "--dir", dir, "--fsync", "sometimes"],
        vec!["wal", "bench", "--dir", dir, "--entries", "-3"],
        vec!["wal", "bench", "--dir", dir, "--size", "0"],
        vec!["wal", "bench"],
        vec!["wal", "open-bench", "--dir", "/nonexistent/shmraft"],
        vec!["no-such-command"],
    ] {
        let o = run(SHMRAFT, &args);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let o = run(SHMRAFT, &["wal", "bench", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("acknowledged-not-durable"));
}
