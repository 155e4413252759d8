//! `shmraft bench failover` and `shmraft bench catchup` as a user runs them, with tiny
//! parameters: the commands finish, and their JSON has the promised structure and sane values.
//! Behaviour only: no figure is compared with a time bound.

use std::process::Command;

const SHMRAFT: &str = env!("CARGO_BIN_EXE_shmraft");

fn run_json(args: &[&str], json: &std::path::Path) -> serde_json::Value {
    let o = Command::new(SHMRAFT)
        .args(args)
        .arg("--json")
        .arg(json)
        .output()
        .expect("running shmraft");
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let b = std::fs::read(json).expect("the JSON file was written");
    serde_json::from_slice(&b).expect("the JSON file parses")
}

fn num(v: &serde_json::Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is missing or not a number in {v}"))
}

#[test]
fn failover_two_kills_report_two_samples_with_new_leaders_in_higher_terms() {
    let d = tempfile::tempdir().unwrap();
    let json = d.path().join("failover.json");
    let v = run_json(
        &[
            "bench",
            "failover",
            "--kills",
            "2",
            "--election-timeout-ms",
            "10-20",
            "--pause-ms",
            "20",
            "--dir",
            d.path().to_str().unwrap(),
        ],
        &json,
    );
    assert_eq!(v["kills"], 2);
    assert_eq!(v["nodes"], 3);
    assert_eq!(v["election_timeout_ms_min"], 10);
    assert_eq!(v["tick_ms"], 1, "timeouts under 100 ms use 1 ms ticks");
    let samples = v["samples"].as_array().expect("samples is a list");
    assert_eq!(samples.len(), 2);
    for s in samples {
        let killed = s["killed_node"].as_u64().unwrap();
        let new_leader = s["new_leader"].as_u64().unwrap();
        assert_ne!(
            killed, new_leader,
            "the killed node cannot be the new leader: {s}"
        );
        assert!((1..=3).contains(&new_leader));
        assert!(s["new_term"].as_u64().unwrap() > s["old_term"].as_u64().unwrap());
        let nl = num(s, "new_leader_ms");
        let fc = num(s, "first_commit_ms");
        assert!(nl > 0.0 && fc > 0.0, "{s}");
        assert!(s["polls"].as_u64().unwrap() >= 1);
    }
    for p in ["new_leader_ms", "first_commit_ms"] {
        let (min, p50, p90, max) = (
            num(&v, &format!("{p}_min")),
            num(&v, &format!("{p}_p50")),
            num(&v, &format!("{p}_p90")),
            num(&v, &format!("{p}_max")),
        );
        assert!(
            0.0 < min && min <= p50 && p50 <= p90 && p90 <= max,
            "{p}: {v}"
        );
    }
    assert!(v["writes_acked"].as_u64().unwrap() >= 2, "{v}");
    assert!(v["target_met"].is_boolean(), "10-20 ms has a target");
    // Nothing is left behind in the benchmark's directory but the JSON file.
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("failover.json")]);
}

#[test]
fn catchup_of_a_small_state_installs_a_snapshot_and_reports_its_rate() {
    let d = tempfile::tempdir().unwrap();
    let json = d.path().join("catchup.json");
    let v = run_json(
        &[
            "bench",
            "catchup",
            "--state-mib",
            "4",
            "--value-bytes",
            "4096",
            "--runs",
            "1",
            "--dir",
            d.path().to_str().unwrap(),
        ],
        &json,
    );
    assert_eq!(v["state_mib"], 4);
    assert!(num(&v, "baseline_memcpy_gb_per_s") > 0.0);
    assert!(num(&v, "baseline_write_fdatasync_gb_per_s") > 0.0);
    assert!(v["target_met"].is_null(), "the target is for 256 MiB only");
    let runs = v["runs"].as_array().expect("runs is a list");
    assert_eq!(runs.len(), 1);
    let r = &runs[0];
    assert_eq!(r["writes"], 1024, "4 MiB of 4 KiB values");
    assert!(r["snapshots_installed"].as_u64().unwrap() >= 1, "{r}");
    assert!(
        r["snapshot_index"].as_u64().unwrap() >= 1024,
        "the snapshot covers the writes: {r}"
    );
    assert!(r["leader_commit_at_t0"].as_u64() >= r["snapshot_index"].as_u64());
    assert_ne!(r["follower"], r["leader"]);
    // The snapshot holds at least the values written.
    assert!(r["snapshot_file_bytes"].as_u64().unwrap() >= 4 << 20, "{r}");
    for f in ["catchup_s", "gb_per_s", "write_s", "offline_restore_ms"] {
        assert!(num(r, f) > 0.0, "{f}: {r}");
    }
    let parts = num(r, "startup_ms") + num(r, "snapshot_ms") + num(r, "tail_ms");
    assert!(
        (parts / 1e3 - num(r, "catchup_s")).abs() < 1e-6,
        "start-up + snapshot + tail = catch-up: {r}"
    );
    // The follower's status gives the transfer and install phases, whatever its log level.
    for f in [
        "transfer_start_ms",
        "transfer_ms",
        "install_ms",
        "restore_ms",
    ] {
        assert!(num(r, f) >= 0.0, "{f}: {r}");
    }
    assert!(
        num(r, "transfer_start_ms") + num(r, "transfer_ms") + num(r, "install_ms")
            <= num(r, "catchup_s") * 1e3,
        "the phases fit in the catch-up: {r}"
    );
    assert!(num(&v, "gb_per_s_median") > 0.0);
}

#[test]
fn impossible_settings_are_usage_errors_that_start_nothing() {
    for args in [
        &["bench", "catchup", "--state-mib", "0"][..],
        &[
            "bench",
            "catchup",
            "--state-mib",
            "1",
            "--value-bytes",
            "1048576",
        ],
        &["bench", "failover", "--kills", "0"],
        &["bench", "failover", "--fsync", "sometimes"],
    ] {
        let o = Command::new(SHMRAFT).args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("--"),
            "{args:?}: the message names the flag: {err}"
        );
    }
}
