//! `shmraft check-history FILE`: checks a client history (the JSON-lines format of
//! `shmraft_consensus::history`) for linearizability.
//!
//! Exit status: 0 linearizable; 1 not linearizable, or the checker timed out (the report says
//! which: a timeout is "unknown", never "linearizable"); 2 the file could not be read or a line is
//! malformed (the message names the line).

use crate::args::JsonFlag;
use clap::Args;
use serde_json::json;
use shmraft_consensus::lincheck::{
    CheckFileError, CheckLimits, CheckOutcome, CheckedFile, GiveUp, check_history_file_with,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Check a client history for linearizability.
#[derive(Args, Debug, Clone)]
pub struct CheckHistoryArgs {
    /// The history file: one JSON object per line.
    pub file: PathBuf,
    /// Give up after this many seconds and report "unknown" (exit 1). 0 means no limit.
    #[arg(long = "timeout-s", default_value_t = 300)]
    pub timeout_s: u64,
    /// Give up on a key (report "unknown", exit 1) when the search's memo of visited
    /// configurations for it would need more than this many MiB.
    #[arg(long = "max-memo-mb", default_value_t = 1024)]
    pub max_memo_mb: usize,
    #[command(flatten)]
    pub output: JsonFlag,
}

/// Exit status: linearizable.
pub const EXIT_LINEARIZABLE: u8 = 0;
/// Exit status: not linearizable, or unknown (timeout).
pub const EXIT_NOT_LINEARIZABLE_OR_UNKNOWN: u8 = 1;
/// Exit status: unreadable or malformed input.
pub const EXIT_BAD_INPUT: u8 = 2;

/// Runs the check and prints the report. See the module docs for the exit status.
pub fn run(args: &CheckHistoryArgs) -> ExitCode {
    let limits = CheckLimits {
        timeout: (args.timeout_s > 0).then(|| Duration::from_secs(args.timeout_s)),
        max_memo_bytes: args.max_memo_mb.saturating_mul(1 << 20),
    };
    let checked = match check_history_file_with(&args.file, limits) {
        Ok(r) => r,
        Err(e) => {
            if args.output.json {
                println!("{}", bad_input_json(&e));
            } else {
                eprintln!("check-history: {e}");
            }
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    if args.output.json {
        println!("{}", report_json(args, &checked));
    } else {
        print!("{}", report_text(args, &checked));
    }
    ExitCode::from(match checked.report.outcome {
        CheckOutcome::Linearizable => EXIT_LINEARIZABLE,
        CheckOutcome::NotLinearizable(_) | CheckOutcome::Unknown { .. } => {
            EXIT_NOT_LINEARIZABLE_OR_UNKNOWN
        }
    })
}

fn bad_input_json(e: &CheckFileError) -> serde_json::Value {
    json!({ "outcome": "bad_input", "error": e.to_string(), "line": e.line() })
}

/// The human report.
pub fn report_text(args: &CheckHistoryArgs, checked: &CheckedFile) -> String {
    let report = &checked.report;
    let mut out = format!(
        "history {}: {} operations ({} with unknown outcome), {} keys, checked in {:.3} s\n",
        args.file.display(),
        report.ops,
        report.unknown_outcome_ops,
        report.keys,
        report.elapsed.as_secs_f64()
    );
    match &report.outcome {
        CheckOutcome::Linearizable => out.push_str("outcome: LINEARIZABLE\n"),
        CheckOutcome::NotLinearizable(v) => {
            out.push_str(&format!("outcome: NOT LINEARIZABLE on key {:?}\n", v.key));
            out.push_str(&v.explanation);
            out.push_str("\noperations involved (line: operation):\n");
            for &i in &v.ops {
                out.push_str(&format!(
                    "  {}: {}\n",
                    checked.lines[i],
                    checked.ops[i].describe()
                ));
            }
        }
        CheckOutcome::Unknown { keys, reason } => {
            let hint = match reason {
                GiveUp::Timeout => format!(
                    "it timed out (--timeout-s {}); rerun with a larger limit",
                    args.timeout_s
                ),
                GiveUp::MemoryLimit => format!(
                    "its memory budget ran out (--max-memo-mb {}): too many operations on one key \
                     overlap in time for an exhaustive search",
                    args.max_memo_mb
                ),
            };
            out.push_str(&format!(
                "outcome: UNKNOWN (not checked, NOT a pass): the checker gave up on {} key(s) \
                 ({}): {hint}; no violation was found in the keys it finished\n",
                keys.len(),
                preview(keys)
            ));
        }
    }
    out
}

fn preview(keys: &[String]) -> String {
    let mut s: Vec<String> = keys.iter().take(5).map(|k| format!("{k:?}")).collect();
    if keys.len() > 5 {
        s.push(format!("... {} more", keys.len() - 5));
    }
    s.join(", ")
}

/// The machine-readable report.
pub fn report_json(args: &CheckHistoryArgs, checked: &CheckedFile) -> serde_json::Value {
    let report = &checked.report;
    let mut v = json!({
        "file": args.file.display().to_string(),
        "ops": report.ops,
        "unknown_outcome_ops": report.unknown_outcome_ops,
        "keys": report.keys,
        "elapsed_s": report.elapsed.as_secs_f64(),
    });
    match &report.outcome {
        CheckOutcome::Linearizable => v["outcome"] = json!("linearizable"),
        CheckOutcome::NotLinearizable(violation) => {
            v["outcome"] = json!("not_linearizable");
            v["key"] = json!(violation.key);
            v["explanation"] = json!(violation.explanation);
            v["ops_involved"] = json!(
                violation
                    .ops
                    .iter()
                    .map(|&i| json!({ "line": checked.lines[i], "operation": checked.ops[i] }))
                    .collect::<Vec<_>>()
            );
        }
        CheckOutcome::Unknown { keys, reason } => {
            v["outcome"] = json!(match reason {
                GiveUp::Timeout => "timeout",
                GiveUp::MemoryLimit => "memory_limit",
            });
            v["timeout_s"] = json!(args.timeout_s);
            v["unfinished_keys"] = json!(keys);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use shmraft_consensus::lincheck::check_history_file;
    use std::io::Write;

    fn write(lines: &[&str]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
        f
    }

    fn args(f: &tempfile::NamedTempFile, json: bool) -> CheckHistoryArgs {
        CheckHistoryArgs {
            file: f.path().to_owned(),
            timeout_s: 0,
            max_memo_mb: 1024,
            output: crate::args::JsonFlag { json },
        }
    }

    const PUT_A: &str =
        r#"{"client":1,"kind":"put","key":"k","value":"a","call":0,"return":1,"ok":true}"#;
    const PUT_B: &str =
        r#"{"client":1,"kind":"put","key":"k","value":"b","call":2,"return":3,"ok":true}"#;
    const GET_A: &str =
        r#"{"client":2,"kind":"get","key":"k","output":"a","call":4,"return":5,"ok":true}"#;

    #[test]
    fn exit_codes_follow_the_outcome() {
        let ok = write(&[PUT_A, GET_A]);
        assert_eq!(run(&args(&ok, false)), ExitCode::from(EXIT_LINEARIZABLE));
        let stale = write(&[PUT_A, PUT_B, GET_A]);
        assert_eq!(
            run(&args(&stale, true)),
            ExitCode::from(EXIT_NOT_LINEARIZABLE_OR_UNKNOWN)
        );
        let bad = write(&[PUT_A, "{"]);
        assert_eq!(run(&args(&bad, false)), ExitCode::from(EXIT_BAD_INPUT));
    }

    #[test]
    fn reports_name_the_key_and_the_operations() {
        let stale = write(&[PUT_A, PUT_B, GET_A]);
        let a = args(&stale, false);
        let checked = check_history_file(&a.file, None).unwrap();
        let text = report_text(&a, &checked);
        assert!(text.contains("NOT LINEARIZABLE on key \"k\""), "{text}");
        assert!(text.contains("  3: client 2 get \"k\" -> \"a\""), "{text}");
        let j = report_json(&a, &checked);
        assert_eq!(j["outcome"], "not_linearizable");
        assert_eq!(j["key"], "k");
        assert!(
            j["ops_involved"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["line"] == 3)
        );
    }

    #[test]
    fn a_search_out_of_budget_is_unknown_with_exit_1_never_a_pass() {
        // Concurrent appends and a put of "" (which defeats the prefix rule), then a read that no
        // order produces: exhaustive, so a 1 MiB memo runs out.
        let mut lines = vec![
            r#"{"client":0,"kind":"put","key":"k","value":"","call":0,"return":1000,"ok":true}"#
                .to_owned(),
        ];
        let mut all = String::new();
        for i in 1..16 {
            all.push_str(&format!("{i},"));
            lines.push(format!(
                r#"{{"client":{i},"kind":"append","key":"k","value":"{i},","call":0,"return":1000,"ok":true}}"#
            ));
        }
        lines.push(format!(
            r#"{{"client":99,"kind":"get","key":"k","output":"{all}!","call":2000,"return":2001,"ok":true}}"#
        ));
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let f = write(&refs);
        let mut a = args(&f, false);
        a.max_memo_mb = 1;
        assert_eq!(run(&a), ExitCode::from(EXIT_NOT_LINEARIZABLE_OR_UNKNOWN));
        let limits = CheckLimits {
            timeout: None,
            max_memo_bytes: 1 << 20,
        };
        let checked = check_history_file_with(f.path(), limits).unwrap();
        let text = report_text(&a, &checked);
        assert!(text.contains("UNKNOWN (not checked, NOT a pass)"), "{text}");
        assert!(text.contains("--max-memo-mb 1"), "{text}");
        assert_eq!(report_json(&a, &checked)["outcome"], "memory_limit");
    }

    #[test]
    fn bad_input_json_carries_the_line() {
        let bad = write(&[PUT_A, PUT_B, r#"{"client":1,"kind":"nope"}"#]);
        let e = check_history_file(bad.path(), None).unwrap_err();
        assert_eq!(bad_input_json(&e)["line"], 3);
    }
}
