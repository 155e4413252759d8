//! `shmraft bench` as a user runs it: real node processes, the JSON report, the SVG plot, and
//! clear refusals of bad flags.

use std::process::{Command, Output};

const SHMRAFT: &str = env!("CARGO_BIN_EXE_shmraft");

fn run(args: &[&str]) -> Output {
    Command::new(SHMRAFT)
        .args(args)
        .output()
        .expect("running shmraft")
}

fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("field {k} missing or not a number in {v}"))
}

#[test]
fn bench_measures_every_configuration_and_writes_json_and_svg() {
    let d = tempfile::tempdir().unwrap();
    let json = d.path().join("bench.json");
    let svg = d.path().join("bench.svg");
    let o = run(&[
        "bench",
        "--fsync",
        "never,always",
        "--clients",
        "1,8",
        "--duration-s",
        "0.4",
        "--warmup-ms",
        "100",
        "--dir",
        d.path().to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("ops/s") && stdout.contains("p99.9 us"),
        "{stdout}"
    );

    let rep: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let b = &rep["baselines"];
    for k in ["fdatasync_us_p50", "pipe_rtt_us_p50", "memcpy_gb_per_s"] {
        assert!(f(b, k) > 0.0, "baseline {k}: {b}");
    }
    assert!(rep["machine"]["cpus"].as_u64().unwrap() >= 1);
    let results = rep["results"].as_array().unwrap();
    let configs: Vec<(String, u64)> = results
        .iter()
        .map(|r| {
            (
                r["fsync"].as_str().unwrap().to_string(),
                r["clients"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        configs,
        [
            ("never".to_string(), 1),
            ("never".to_string(), 8),
            ("always".to_string(), 1),
            ("always".to_string(), 8)
        ]
    );
    for r in results {
        assert!(f(r, "ops") >= 1.0, "{r}");
        assert_eq!(f(r, "errors"), 0.0, "{r}");
        assert!(f(r, "ops_per_s") > 0.0 && f(r, "mb_per_s") > 0.0, "{r}");
        let p = [
            "latency_us_p50",
            "latency_us_p90",
            "latency_us_p99",
            "latency_us_p999",
        ];
        let lat: Vec<f64> = p.iter().map(|k| f(r, k)).collect();
        assert!(lat[0] > 0.0, "{r}");
        assert!(
            lat.windows(2).all(|w| w[0] <= w[1]),
            "percentiles in order: {r}"
        );
        assert!(lat[3] <= f(r, "latency_us_max") + 1.0, "{r}");
        assert!(f(r, "cpu_us_per_op") > 0.0, "{r}");
        let nodes = r["per_node"].as_array().unwrap();
        assert_eq!(nodes.len(), 3, "{r}");
        assert_eq!(
            nodes.iter().filter(|n| n["role"] == "leader").count(),
            1,
            "one leader: {r}"
        );
        // What the window committed was appended by a majority during it. The counters are
        // sampled as the window opens and closes, so up to `clients` writes already appended
        // before it opened (in flight) complete inside it; a follower may also trail by a
        // batch, which is why a majority, not every node, is asserted.
        let slack = f(r, "clients");
        let holding = nodes
            .iter()
            .filter(|n| f(n, "entries_appended") + slack >= f(r, "writes"))
            .count();
        assert!(holding >= 2, "a majority appended the window's writes: {r}");
        let leader = nodes.iter().find(|n| n["role"] == "leader").unwrap();
        assert!(
            f(leader, "entries_appended") + slack >= f(r, "writes"),
            "the leader appended the window's writes: {r}"
        );
        for n in nodes {
            if r["fsync"] == "always" {
                assert!(
                    f(n, "syncs") >= 1.0 && f(n, "entries_per_sync") >= 1.0,
                    "{n}"
                );
            }
        }
    }
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg"), "{}", &plot[..plot.len().min(200)]);
    assert!(plot.contains("never") && plot.contains("always"));
    // Nothing is left behind: the clusters' directories are removed.
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("shmraft-bench-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bench_refuses_bad_flags_with_a_clear_message() {
    // A bad policy is refused while parsing, naming the flag, the value and the accepted forms.
    let fsync_needles = &["--fsync", "sometimes", "batch:<delay_us>:<bytes>"][..];
    for (args, needles) in [
        (&["bench", "--fsync", "sometimes"][..], fsync_needles),
        (&["bench", "--fsync", "always,sometimes"][..], fsync_needles),
        (&["bench", "--clients", "0"][..], &["--clients"][..]),
        (&["bench", "--size", "0"][..], &["--size"][..]),
        (&["bench", "--duration-s=0"][..], &["--duration-s"][..]),
    ] {
        let o = run(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "usage errors exit 2: {args:?}");
        for needle in needles {
            assert!(
                err.contains(needle),
                "{args:?}: {needle:?} missing from {err}"
            );
        }
    }
}

/// The node processes whose parent is `pid`.
fn node_children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let ppid: u32 = rest.split_whitespace().nth(1).unwrap().parse().unwrap();
        let cmd = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
        if ppid == pid && cmd.split(|&b| b == 0).any(|a| a == b"node") {
            out.push(child);
        }
    }
    out
}

#[test]
fn a_bench_killed_with_sigkill_leaves_no_node_running() {
    let d = tempfile::tempdir().unwrap();
    let mut bench = Command::new(SHMRAFT)
        .args([
            "bench",
            "--fsync",
            "never",
            "--clients",
            "4",
            "--duration-s",
            "60",
        ])
        .arg("--dir")
        .arg(d.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let nodes = loop {
        let n = node_children(bench.id());
        if n.len() == 3 {
            break n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cluster never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    bench.kill().unwrap();
    bench.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while nodes
        .iter()
        .any(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "nodes {nodes:?} outlived their killed parent"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
