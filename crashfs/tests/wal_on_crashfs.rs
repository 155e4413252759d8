//! A real `shmraft_storage` log in a child process on a crash file system: the child appends
//! and reports what its log acknowledged as durable; the parent kills it (SIGKILL), crashes
//! the mount (every crash mode, seeded), mounts again and checks that every acknowledged entry
//! is there, intact. The file system decides what survives, not the log's own sync ledger.

use shmraft_crashfs::{CrashFsMount, CrashMode, CrashPlan};
use shmraft_storage::{EntryKind, LogIndex, LogTerm, Storage, StorageOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

const CHILD_ENV: &str = "SHMRAFT_CRASHFS_WAL_CHILD";
const SEGMENT_BYTES: u64 = 64 << 10;

fn options(policy: &str) -> StorageOptions {
    let mut o = StorageOptions::default();
    o.wal.segment_bytes = SEGMENT_BYTES;
    o.wal.fsync_policy = policy.parse().expect("policy");
    o
}

/// Payload of entry `i`: deterministic, so the parent can check every byte.
fn payload(i: u64) -> Vec<u8> {
    let len = 100 + (i % 300) as usize;
    (0..len).map(|k| (i as usize * 31 + k * 7) as u8).collect()
}

/// The child: opens the log in `dir`, appends after whatever is there, and prints the durable
/// index after every append.
fn child(dir: &Path, policy: &str) {
    let mut st = Storage::open(dir, options(policy)).expect("child opens the log");
    let out = std::io::stdout();
    let mut i = st.wal.last_index().0;
    loop {
        i += 1;
        st.wal
            .append_one(LogIndex(i), LogTerm(1), EntryKind(0), &payload(i))
            .expect("append");
        let mut o = out.lock();
        writeln!(o, "durable {}", st.wal.durable_index().0).unwrap();
        o.flush().unwrap();
    }
}

/// Runs a child on `dir` until its log acknowledged `more` entries beyond `from`, kills it,
/// and returns the last acknowledged (durable) index.
fn run_child_until(test: &str, dir: &Path, policy: &str, from: u64, more: u64) -> u64 {
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{policy} {}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(proc.stdout.take().unwrap()).lines();
    let mut durable = from;
    while durable < from + more {
        let Some(Ok(line)) = lines.next() else {
            panic!("the child ended before acknowledging {more} entries")
        };
        if let Some(d) = line.strip_prefix("durable ") {
            durable = d.parse().unwrap();
        }
    }
    proc.kill().unwrap(); // SIGKILL: the power cut comes with the process's death
    proc.wait().unwrap();
    durable
}

fn crash_rounds(test: &str, policy: &str) {
    if let Ok(v) = std::env::var(CHILD_ENV) {
        let (policy, dir) = v.split_once(' ').unwrap();
        child(Path::new(dir), policy);
        return;
    }
    let backing = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let data = mnt.path().join("data");
    let mut acked = 0;
    let mut lost_ops = 0;
    for round in 0..8u64 {
        let m = CrashFsMount::mount(backing.path(), mnt.path()).unwrap();
        acked = run_child_until(test, &data, policy, acked, 150);
        let mode = CrashMode::ALL[round as usize % 4];
        let report = m
            .crash(CrashPlan {
                seed: round,
                mode: Some(mode),
            })
            .unwrap();
        lost_ops += report.ops_lost + report.ops_torn;

        let m = CrashFsMount::mount(backing.path(), mnt.path()).unwrap();
        let st = Storage::open(&data, options(policy))
            .unwrap_or_else(|e| panic!("round {round} ({report}): reopening failed: {e}"));
        assert!(
            st.wal.last_index().0 >= acked,
            "round {round} ({report}): acknowledged {acked}, log ends at {}",
            st.wal.last_index()
        );
        for i in 1..=acked {
            let e = st.wal.entry(LogIndex(i)).unwrap_or_else(|e| {
                panic!("round {round} ({report}): entry {i}: {e}\n{report:#?}")
            });
            assert_eq!(e.payload, payload(i), "round {round} ({report}): entry {i}");
        }
        acked = st.wal.last_index().0;
        st.close().unwrap();
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
