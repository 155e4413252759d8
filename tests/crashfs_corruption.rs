//! End-to-end corruption through real processes: one node of a running cluster has its data
//! directory on a crash file system; a fault corrupts its synced log data (a zeroed sector, a
//! misdirected write), a crash of its mount exposes it, and then the node refuses to start
//! naming the file, byte offset and index, `raft-dump --verify` reports the same location,
//! and the other two nodes go on. Needs /dev/fuse and root (or fusermount3).

#[path = "cluster_support/mod.rs"]
mod cluster_support;
use cluster_support::*;
use shmraft_crashfs::{CrashFsMount, CrashMode, CrashPlan};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);
const RAFT_DUMP: &str = env!("CARGO_BIN_EXE_raft-dump");

/// Kills follower `victim`, moves its data directory onto a crash file system mount and
/// restarts it there.
fn move_onto_crashfs(c: &TestCluster, victim: u64) -> CrashFsMount {
    c.nemesis(&["kill", "--node", &victim.to_string()]);
    wait_until("the victim to die", T, || {
        c.node_status(victim)["alive"] == false
    });
    let data = c.data_dir(victim);
    let backing = c.path().join(format!("crashfs-node{victim}"));
    std::fs::create_dir(&backing).unwrap();
    for e in std::fs::read_dir(&data).unwrap() {
        let e = e.unwrap();
        std::fs::rename(e.path(), backing.join(e.file_name())).unwrap();
    }
    let m = CrashFsMount::mount(&backing, &data).unwrap();
    c.nemesis(&["restart", "--node", &victim.to_string()]);
    wait_until("the victim to run on crashfs", T, || {
        c.node_status(victim)["alive"] == true
    });
    m
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seg-") && n.ends_with(".wal"))
        })
        .collect();
    v.sort();
    v
}

/// Writes `n` puts of 2 KiB values and waits until every node applied them.
fn write_load(c: &TestCluster, from: u32, n: u32) {
    let mut client = c.client();
    for i in from..from + n {
        client
            .put(format!("k{i}").as_bytes(), &vec![b'v'; 2 << 10], T)
            .unwrap();
    }
    c.wait_converged(Duration::from_secs(30));
}

/// Power-cuts the victim (kill, crash of its mount keeping every unsynced write: only the
/// injected fault damages anything), remounts, and runs the node by hand: it must refuse to
/// start. Returns its error message.
fn power_cut_and_restart(c: &TestCluster, m: CrashFsMount, victim: u64) -> (String, CrashFsMount) {
    c.nemesis(&["kill", "--node", &victim.to_string()]);
    wait_until("the victim to die", T, || {
        c.node_status(victim)["alive"] == false
    });
    let (backing, data) = (m.backing().to_path_buf(), m.mountpoint().to_path_buf());
    m.crash(CrashPlan {
        seed: 1,
        mode: Some(CrashMode::KeepAll),
    })
    .unwrap();
    let m = CrashFsMount::mount(&backing, &data).unwrap();
    let out = Command::new(BIN)
        .args(["node", "--dir", c.path().to_str().unwrap(), "--id"])
        .arg(victim.to_string())
        .output()
        .unwrap();
    let msg = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "the node did not refuse: {msg}");
    (msg, m)
}

/// `raft-dump --verify` of the data directory: its report.
fn verify(dir: &Path) -> String {
    let out = Command::new(RAFT_DUMP)
        .arg("--verify")
        .arg(dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "raft-dump found no corruption");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The file name and byte offset a corruption message names ("... in <path> at byte <n> ...").
fn location(msg: &str) -> (String, u64) {
    let file = msg
        .split_whitespace()
        .find(|w| w.contains("seg-"))
        .map(|w| {
            let name = w.rsplit('/').next().unwrap();
            name.trim_matches(|ch: char| !ch.is_ascii_alphanumeric() && ch != '.' && ch != '-')
                .to_string()
        })
        .unwrap_or_else(|| panic!("no segment file named in: {msg}"));
    let byte = msg
        .split("byte ")
        .nth(1)
        .and_then(|r| r.split(|ch: char| !ch.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte offset in: {msg}"));
    (file, byte)
}

#[test]
fn a_zeroed_sector_in_synced_log_data_stops_the_node_and_raft_dump_finds_it() {
    let c = TestCluster::start(3, "always", &[]);
    let victim = (1..=3).find(|&i| Some(i) != c.leader()).unwrap();
    let m = move_onto_crashfs(&c, victim);
    write_load(&c, 0, 60);
    let data = c.data_dir(victim);
    let seg = segments(&data).into_iter().next().unwrap();
    let name = seg.file_name().unwrap().to_str().unwrap().to_string();
    m.zero_sector(Path::new(&name), 8192).unwrap();
    let (msg, m) = power_cut_and_restart(&c, m, victim);
    assert!(msg.contains("index"), "{msg}");
    let (file, byte) = location(&msg);
    assert_eq!(file, name, "{msg}");
    let report = verify(&data);
    assert!(
        report.contains(&name) && report.contains(&byte.to_string()),
        "raft-dump --verify does not name {name} at byte {byte}:\n{report}\nnode said: {msg}"
    );
    c.client().put(b"after", b"1", T).expect("the others go on");
    drop(m);
}

#[test]
fn a_misdirected_synced_write_stops_the_node_and_raft_dump_finds_it() {
    let c = TestCluster::start(3, "always", &[]);
    let victim = (1..=3).find(|&i| Some(i) != c.leader()).unwrap();
    let m = move_onto_crashfs(&c, victim);
    write_load(&c, 0, 50);
    let data = c.data_dir(victim);
    let active = segments(&data).into_iter().last().unwrap();
    let name = active.file_name().unwrap().to_str().unwrap().to_string();
    // The next record write lands 64 KiB further on (where later records will overwrite it):
    // the place it was aimed at keeps zeros on the medium, though the log synced it.
    m.misdirect_next_write(Path::new(&name), 64 << 10).unwrap();
    write_load(&c, 50, 10);
    let (msg, m) = power_cut_and_restart(&c, m, victim);
    let (file, _byte) = location(&msg);
    assert_eq!(file, name, "{msg}");
    let index: u64 = msg
        .split("(index ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no index in: {msg}"));
    // raft-dump --verify finds the same hole: valid records end just before the node's index,
    // and the damage is inside the synced range of the same file. (It names the first non-zero
    // byte after the hole, where the next records were written, not the hole's own offset.)
    let report = verify(&data);
    assert!(
        report.contains(&name)
            && report.contains(&format!("..{})", index - 1))
            && report.contains("inside the synced range"),
        "raft-dump --verify does not report the hole before index {index} in {name}:\n{report}\nnode said: {msg}"
    );
    c.client().put(b"after", b"1", T).expect("the others go on");
    drop(m);
}
