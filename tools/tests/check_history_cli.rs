//! `shmraft check-history FILE` wired into the CLI: exit 0 linearizable, 1 not, 2 bad input.

use std::process::ExitCode;

fn check(lines: &[&str]) -> ExitCode {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("history.jsonl");
    std::fs::write(&f, lines.join("\n")).unwrap();
    shmraft_tools::run_cli(["shmraft", "check-history", f.to_str().unwrap()])
}

#[test]
fn linearizable_history_exits_0() {
    let c = check(&[
        r#"{"client":1,"kind":"put","key":"k","value":"a","call":1,"return":2,"ok":true}"#,
        r#"{"client":2,"kind":"get","key":"k","output":"a","call":3,"return":4,"ok":true}"#,
        r#"{"client":1,"kind":"append","key":"k","value":"b","call":5,"return":8,"ok":true}"#,
        r#"{"client":2,"kind":"get","key":"k","output":"ab","call":6,"return":9,"ok":true}"#,
    ]);
    assert_eq!(c, ExitCode::from(0));
}

#[test]
fn stale_read_exits_1() {
    // The put completed before the get started, yet the get saw the old (empty) value.
    let c = check(&[
        r#"{"client":1,"kind":"put","key":"k","value":"a","call":1,"return":2,"ok":true}"#,
        r#"{"client":2,"kind":"get","key":"k","output":"","call":3,"return":4,"ok":true}"#,
    ]);
    assert_eq!(c, ExitCode::from(1));
}

#[test]
fn malformed_history_and_usage_errors_exit_2() {
    let c =
        check(&[r#"{"client":1,"kind":"put","key":"k","call":1,"return":2,"ok":true,"typo":0}"#]);
    assert_eq!(c, ExitCode::from(2));
    let c = shmraft_tools::run_cli(["shmraft", "check-history", "/nonexistent/history.jsonl"]);
    assert_eq!(c, ExitCode::from(2));
    let c = shmraft_tools::run_cli(["shmraft", "check-history"]);
    assert_eq!(c, ExitCode::from(2));
}
