//! A real process killed with SIGKILL mid-append: nothing it wrote is lost (page cache), and
//! after a simulated power cut of its directory everything its log reported durable survives.
//! The sync ledger is what lets `power_cut` know, after the kill, what was synced.

mod common;
use common::*;
use shmraft_storage::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const CHILD_ENV: &str = "SHMRAFT_STORAGE_CRASH_CHILD_DIR";
const SEG: u64 = 64 << 10;

/// The child: appends forever under group commit, reporting progress on stdout.
fn child(dir: &str) {
    let mut st = Storage::open(std::path::Path::new(dir), opts("batch:300:16384", SEG)).unwrap();
    let out = std::io::stdout();
    for i in 1..=2_000_000u64 {
        st.wal
            .append_one(
                LogIndex(i),
                LogTerm(1),
                EntryKind((i % 3) as u8),
                &payload(i, 120),
            )
            .unwrap();
        if i % 64 == 0 {
            let mut o = out.lock();
            writeln!(o, "appended {i} durable {}", st.wal.durable_index()).unwrap();
            o.flush().unwrap();
        }
    }
}

#[test]
fn sigkill_mid_append_loses_nothing_and_power_cut_keeps_the_durable_prefix() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    let mut sectors_lost = 0;
    for seed in [1u64, 2, 3, 4] {
        let dir = tempfile::tempdir().unwrap();
        let mut proc = Command::new(std::env::current_exe().unwrap())
            .args([
                "sigkill_mid_append_loses_nothing_and_power_cut_keeps_the_durable_prefix",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(proc.stdout.take().unwrap()).lines();
        let (mut appended, mut durable) = (0u64, 0u64);
        while durable < 3000 {
            let Some(Ok(line)) = lines.next() else {
                panic!("child ended early")
            };
            let w: Vec<&str> = line.split_whitespace().collect();
            if let ["appended", a, "durable", d] = w.as_slice() {
                appended = a.parse().unwrap();
                durable = d.parse().unwrap();
            }
        }
        proc.kill().unwrap(); // SIGKILL
        proc.wait().unwrap();

        // Process crash only: everything the child had appended is there.
        let copy = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
        }
        {
            let st = Storage::open(copy.path(), opts("batch:300:16384", SEG)).unwrap();
            assert!(
                st.wal.last_index() >= LogIndex(appended),
                "kill -9 lost appended entries"
            );
            check_range(&st.wal, 1, st.wal.last_index().0, 1, 120);
        }

        // Power cut of the dead node's directory (its stale LOCK file is ignored).
        let report = power_cut(dir.path(), seed).unwrap();
        assert!(report.ledger_found);
        sectors_lost += report.segments.iter().map(|s| s.sectors_lost).sum::<u64>();
        let st = Storage::open(dir.path(), opts("batch:300:16384", SEG)).unwrap();
        assert!(
            st.wal.last_index() >= LogIndex(durable),
            "seed {seed}: durable {durable} lost ({:?})",
            report.mode
        );
        check_range(&st.wal, 1, st.wal.last_index().0, 1, 120);
    }
    assert!(
        sectors_lost > 0,
        "no seed tore anything: the test would prove nothing"
    );
}
