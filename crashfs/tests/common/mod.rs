//! A real log in a child process (the test binary run again): it appends and reports the
//! durable index after every append, until the parent kills it.

use shmraft_storage::{EntryKind, FaultInjector, LogIndex, LogTerm, Storage, StorageOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// Environment variable that makes the test binary a child: `<policy> <bug|ok> <dir>`.
pub const CHILD_ENV: &str = "SHMRAFT_CRASHFS_WAL_CHILD";
pub const SEGMENT_BYTES: u64 = 64 << 10;

pub fn options(policy: &str) -> StorageOptions {
    let mut o = StorageOptions::default();
    o.wal.segment_bytes = SEGMENT_BYTES;
    o.wal.fsync_policy = policy.parse().expect("policy");
    o
}

/// Payload of entry `i`: deterministic, so the parent can check every byte.
pub fn payload(i: u64) -> Vec<u8> {
    let len = 100 + (i % 300) as usize;
    (0..len).map(|k| (i as usize * 31 + k * 7) as u8).collect()
}

/// If this process is a child, runs the child and returns true (it never returns otherwise:
/// the parent kills it).
pub fn run_child_if_asked() -> bool {
    let Ok(v) = std::env::var(CHILD_ENV) else {
        return false;
    };
    let mut words = v.splitn(3, ' ');
    let (policy, bug, dir) = (
        words.next().unwrap(),
        words.next().unwrap(),
        words.next().unwrap(),
    );
    let mut opts = options(policy);
    if bug == "bug" {
        let f = FaultInjector::new();
        f.skip_directory_syncs();
        opts.faults = Some(f);
    }
    let mut st = Storage::open(Path::new(dir), opts).expect("child opens the log");
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

/// Runs a child (test `test` of this binary) on `dir` until its log acknowledged `more`
/// entries beyond `from`, kills it (SIGKILL) and returns the last acknowledged index.
pub fn run_child_until(
    test: &str,
    dir: &Path,
    policy: &str,
    bug: bool,
    from: u64,
    more: u64,
) -> u64 {
    let mode = if bug { "bug" } else { "ok" };
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{policy} {mode} {}", dir.display()))
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
    proc.kill().unwrap();
    proc.wait().unwrap();
    durable
}

/// Whether entries `1..=acked` are all in the log of `dir` with their payloads; `Err` says
/// what is missing or why the log did not open.
pub fn acknowledged_entries_present(dir: &Path, policy: &str, acked: u64) -> Result<u64, String> {
    let st = Storage::open(dir, options(policy)).map_err(|e| format!("reopening failed: {e}"))?;
    let last = st.wal.last_index().0;
    if last < acked {
        return Err(format!("acknowledged {acked}, log ends at {last}"));
    }
    for i in 1..=acked {
        let e = st
            .wal
            .entry(LogIndex(i))
            .map_err(|e| format!("entry {i}: {e}"))?;
        if e.payload != payload(i) {
            return Err(format!("entry {i}: wrong payload"));
        }
    }
    st.close().map_err(|e| format!("closing: {e}"))?;
    Ok(last)
}
