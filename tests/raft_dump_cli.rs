//! `raft-dump` as a user runs it: the real binary on real data directories, clean, damaged,
//! random, zeroed, truncated and live (fault-matrix rows S6, S8 of docs/FAULTS.md; storage rules 3,
//! 7 of docs/RULES.md).

use shmraft::storage::inspect;
use shmraft::storage::{EntryKind, FsyncPolicy, LogIndex, LogTerm, Storage, StorageOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const RAFT_DUMP: &str = env!("CARGO_BIN_EXE_raft-dump");

fn raft_dump(args: &[&str]) -> Output {
    Command::new(RAFT_DUMP)
        .args(args)
        .output()
        .expect("running raft-dump")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("raft-dump was killed by a signal")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn opts(policy: FsyncPolicy) -> StorageOptions {
    let mut o = StorageOptions::default();
    o.wal.fsync_policy = policy;
    o.wal.segment_bytes = 64 << 10; // several sealed segments and an open one
    o
}

fn payload(i: u64) -> Vec<u8> {
    format!("entry {i} {}", "p".repeat((i % 200) as usize)).into_bytes()
}

/// A closed data directory with `n` entries (terms 1 then 2), all synced.
fn make_log(dir: &Path, n: u64) {
    let mut st = Storage::open(dir, opts(FsyncPolicy::Always)).unwrap();
    for i in 1..=n {
        let term = if i <= n / 2 { 1 } else { 2 };
        st.wal
            .append_one(LogIndex(i), LogTerm(term), EntryKind(0), &payload(i))
            .unwrap();
    }
    st.close().unwrap();
}

fn find_record(dir: &Path, index: u64) -> (PathBuf, u64) {
    for s in inspect::inspect_dir(dir).unwrap().segments {
        for r in inspect::records(&s.path).unwrap() {
            if r.index == LogIndex(index) {
                return (s.path.clone(), r.offset);
            }
        }
    }
    panic!("index {index} not found");
}

fn flip_bit(path: &Path, offset: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x10;
    f.write_all_at(&b, offset).unwrap();
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

#[test]
fn clean_directory_summary_and_verify_exit_0() {
    let d = tempfile::tempdir().unwrap();
    make_log(d.path(), 600);
    let p = d.path().to_str().unwrap();
    let o = raft_dump(&[p]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let s = stdout(&o);
    assert!(s.contains("log: indexes 1..600"), "{s}");
    assert!(s.contains("sealed") && s.contains("open"), "{s}");
    assert!(s.contains("durable index 600"), "{s}");
    let o = raft_dump(&[p, "--verify"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(stdout(&o).contains("result: clean"), "{}", stdout(&o));
}

#[test]
fn flipped_bit_is_reported_with_file_offset_and_index_exit_1() {
    let d = tempfile::tempdir().unwrap();
    make_log(d.path(), 600);
    let (file, off) = find_record(d.path(), 123);
    flip_bit(&file, off + 32 + 3); // a payload byte of index 123
    let o = raft_dump(&[d.path().to_str().unwrap(), "--verify"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let want = format!("file {}, offset {off}, index 123:", file.display());
    assert!(
        stdout(&o).contains(&want),
        "missing {want:?} in {}",
        stdout(&o)
    );
    // The segment alone says the same.
    let o = raft_dump(&[file.to_str().unwrap(), "--verify", "--json"]);
    assert_eq!(code(&o), 1);
    let v = json(&o);
    assert_eq!(v["clean"], false);
    let probs = v["problems"].as_array().unwrap();
    assert!(
        probs
            .iter()
            .any(|p| p["offset"] == off && p["index"] == 123),
        "{v}"
    );
    // --entries marks the record's checksum as bad.
    let o = raft_dump(&[
        d.path().to_str().unwrap(),
        "--entries",
        "--from",
        "123",
        "--to",
        "123",
    ]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("BAD"), "{}", stdout(&o));
}

#[test]
fn every_mode_prints_json_that_parses() {
    let d = tempfile::tempdir().unwrap();
    make_log(d.path(), 600);
    let p = d.path().to_str().unwrap();
    let v = json(&raft_dump(&[p, "--json"]));
    assert_eq!(v["kind"], "dir");
    assert_eq!(v["last_index"], 600);
    let v = json(&raft_dump(&[
        p,
        "--entries",
        "--from",
        "10",
        "--to",
        "19",
        "--json",
    ]));
    assert_eq!(v["listed"], 10);
    let e = v["entries"].as_array().unwrap();
    assert_eq!(e.len(), 10);
    assert_eq!(e[0]["index"], 10);
    assert_eq!(e[0]["checksum_ok"], true);
    assert_eq!(e[0]["payload_bytes"], payload(10).len());
    let v = json(&raft_dump(&[p, "--stats", "--json"]));
    assert_eq!(v["entries"], 600);
    let payload_bytes: usize = (1..=600).map(|i| payload(i).len()).sum();
    assert_eq!(v["space"]["payload_bytes"], payload_bytes);
    assert_eq!(v["space"]["record_header_bytes"], 600 * 32);
    let per_term = v["per_term"].as_array().unwrap();
    assert_eq!(per_term.len(), 2);
    assert_eq!(per_term[0]["entries"], 300);
    let v = json(&raft_dump(&[p, "--verify", "--json"]));
    assert_eq!(v["clean"], true);
    assert_eq!(v["records"], 600);
    let seg = inspect::inspect_dir(d.path()).unwrap().segments[0]
        .path
        .clone();
    let v = json(&raft_dump(&[seg.to_str().unwrap(), "--json"]));
    assert_eq!(v["kind"], "segment");
    assert_eq!(v["sealed"], true);
}

#[test]
fn entries_range_payload_printers_and_stats_text() {
    let d = tempfile::tempdir().unwrap();
    make_log(d.path(), 100);
    let p = d.path().to_str().unwrap();
    let o = raft_dump(&[p, "--from", "5", "--to", "7", "--payload", "hex"]);
    assert_eq!(code(&o), 0);
    let s = stdout(&o);
    assert!(s.contains("3 entries listed"), "{s}");
    // "entry 5 " in hex.
    assert!(s.contains("656e7472792035"), "{s}");
    let o = raft_dump(&[p, "--entries", "--to", "2", "--payload", "kv"]);
    // Not KV payloads: the kv printer falls back to hex.
    assert!(stdout(&o).contains("hex 656e747279"), "{}", stdout(&o));
    let o = raft_dump(&[p, "--stats"]);
    assert_eq!(code(&o), 0);
    let s = stdout(&o);
    assert!(
        s.contains("entry-size histogram") && s.contains("term        2"),
        "{s}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let d = tempfile::tempdir().unwrap();
    make_log(d.path(), 10);
    let p = d.path().to_str().unwrap();
    for args in [
        vec![p, "--no-such-flag"],
        vec![p, "--from", "9", "--to", "3"],
        vec![p, "--from", "x"],
        vec![p, "--payload", "yaml"],
        vec![p, "--verify", "--stats"],
        vec!["/nonexistent/shmraft/dir"],
        vec![],
    ] {
        let o = raft_dump(&args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).is_empty(), "{args:?}: no message");
    }
    // A file raft-dump does not know, named nothing in particular.
    let other = d.path().join("notes.txt");
    std::fs::write(&other, b"hello").unwrap();
    let o = raft_dump(&[other.to_str().unwrap()]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("is not a data directory"),
        "{}",
        stderr(&o)
    );
    let o = raft_dump(&["--help"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("--verify"));
}

/// Runs every mode on `path`; none may panic, and each exits 0, 1, (for modes that do not
/// apply to that kind of file) 2 with a message, or (verify only) 3.
fn no_panic_in_any_mode(path: &Path) -> Vec<i32> {
    let p = path.to_str().unwrap();
    let mut codes = Vec::new();
    for extra in [
        vec![],
        vec!["--json"],
        vec!["--entries", "--payload", "kv"],
        vec!["--entries", "--json", "--payload", "hex"],
        vec!["--stats"],
        vec!["--stats", "--json"],
        vec!["--verify"],
        vec!["--verify", "--json"],
    ] {
        let mut args = vec![p];
        args.extend(extra.iter().copied());
        let o = raft_dump(&args);
        let c = code(&o);
        assert!(
            !stderr(&o).contains("panicked"),
            "{args:?} panicked: {}",
            stderr(&o)
        );
        // 3 (recovery would discard records) is a verify outcome only.
        let allowed = if extra.contains(&"--verify") {
            0..=3
        } else {
            0..=2
        };
        assert!(allowed.contains(&c), "{args:?}: exit {c}");
        if c == 2 {
            assert!(!stderr(&o).is_empty(), "{args:?}: exit 2 without a message");
        }
        if extra.contains(&"--json") && c != 2 {
            json(&o);
        }
        codes.push(c);
    }
    codes
}

#[test]
fn random_zeroed_and_truncated_files_never_panic() {
    use rand::{Rng, SeedableRng};
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("log");
    make_log(&log, 400);
    let seg = inspect::inspect_dir(&log).unwrap().segments[0].path.clone();
    let bytes = std::fs::read(&seg).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let bad = d.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    let random: Vec<u8> = (0..bytes.len()).map(|_| rng.random()).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random", random.clone()),
        ("zeroed", vec![0u8; bytes.len()]),
        ("truncated-header", bytes[..40].to_vec()),
        ("truncated-mid", bytes[..bytes.len() / 3].to_vec()),
        ("truncated-footer", bytes[..bytes.len() - 10].to_vec()),
        ("empty", Vec::new()),
        ("random-after-header", {
            let mut b = bytes.clone();
            for x in &mut b[64..] {
                *x = rng.random();
            }
            b
        }),
    ];
    for (i, (name, content)) in cases.iter().enumerate() {
        let f = bad.join(format!("seg-{:016x}.wal", i + 1));
        std::fs::write(&f, content).unwrap();
        let codes = no_panic_in_any_mode(&f);
        // --verify on a damaged segment reports corruption.
        assert_eq!(codes[6], 1, "{name}: verify should find corruption");
        assert_eq!(codes[7], 1, "{name}: verify --json should find corruption");
    }
    // Random bytes in every other kind of file a data directory holds.
    for name in ["hardstate", "log.meta", "sync.ledger", "LOCK"] {
        std::fs::write(bad.join(name), &random[..1024]).unwrap();
    }
    std::fs::write(
        bad.join("snap-00000000000000000001-00000000000000000001.snap"),
        &random[..4096],
    )
    .unwrap();
    let codes = no_panic_in_any_mode(&bad);
    assert_eq!(codes[6], 1, "verify of the damaged directory");
    let snap = bad.join("snap-00000000000000000001-00000000000000000001.snap");
    let codes = no_panic_in_any_mode(&snap);
    assert_eq!(codes[0], 1, "summary of a random snapshot");
    assert_eq!(codes[6], 1, "verify of a random snapshot");
    let codes = no_panic_in_any_mode(&bad.join("hardstate"));
    assert_eq!(codes[6], 1, "verify of a random hardstate file");
}

#[test]
fn live_node_directory_is_readable_while_locked_and_appending() {
    let d = tempfile::tempdir().unwrap();
    let mut st = Storage::open(d.path(), opts(FsyncPolicy::Never)).unwrap();
    for i in 1..=500 {
        st.wal
            .append_one(LogIndex(i), LogTerm(1), EntryKind(0), &payload(i))
            .unwrap();
    }
    st.wal.sync().unwrap();
    for i in 501..=700 {
        st.wal
            .append_one(LogIndex(i), LogTerm(1), EntryKind(0), &payload(i))
            .unwrap();
    }
    let p = d.path().to_str().unwrap();
    let o = raft_dump(&[p]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let s = stdout(&o);
    assert!(
        s.contains(&format!("held by pid {}", std::process::id())),
        "{s}"
    );
    assert!(s.contains("durable index 500"), "{s}");
    // Unsynced but intact records are not corruption.
    let o = raft_dump(&[p, "--verify"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let v = json(&raft_dump(&[p, "--entries", "--json"]));
    assert_eq!(v["listed"], 700);
    // The node still works after being inspected.
    st.wal
        .append_one(LogIndex(701), LogTerm(1), EntryKind(0), b"x")
        .unwrap();
    st.close().unwrap();
}

#[test]
fn snapshots_hard_state_and_compaction_are_summarised_and_verified() {
    use shmraft::storage::HardState;
    let d = tempfile::tempdir().unwrap();
    {
        let mut st = Storage::open(d.path(), opts(FsyncPolicy::Always)).unwrap();
        for i in 1..=900 {
            st.wal
                .append_one(LogIndex(i), LogTerm(3), EntryKind(0), &payload(i))
                .unwrap();
        }
        st.hard_state
            .save(&HardState {
                current_term: LogTerm(3),
                voted_for: 2,
                commit_index: LogIndex(880),
            })
            .unwrap();
        let meta = st
            .snapshots
            .install(LogIndex(500), LogTerm(3), b"members", &b"state"[..])
            .unwrap();
        st.wal.compact(LogIndex(500), LogTerm(3)).unwrap();
        st.close().unwrap();
        let o = raft_dump(&[meta.path.to_str().unwrap()]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert!(
            stdout(&o).contains("last index 500 term 3"),
            "{}",
            stdout(&o)
        );
        let o = raft_dump(&[meta.path.to_str().unwrap(), "--verify"]);
        assert_eq!(code(&o), 0, "{}", stdout(&o));
        // A flipped bit in the snapshot body is corruption.
        let len = std::fs::metadata(&meta.path).unwrap().len();
        flip_bit(&meta.path, len - 64 - 2);
        let o = raft_dump(&[meta.path.to_str().unwrap(), "--verify"]);
        assert_eq!(code(&o), 1, "{}", stdout(&o));
        assert!(stdout(&o).contains("checksum"), "{}", stdout(&o));
    }
    let p = d.path().to_str().unwrap();
    let o = raft_dump(&[p]);
    let s = stdout(&o);
    assert!(s.contains("term 3, voted for 2, commit index 880"), "{s}");
    assert!(s.contains("compacted: up to index 500 term 3"), "{s}");
    assert!(s.contains("snapshots: 1"), "{s}");
    let v = json(&raft_dump(&[p, "--json"]));
    assert_eq!(v["hard_state"]["commit_index"], 880);
    assert_eq!(v["compacted"]["index"], 500);
    assert_eq!(v["snapshots"][0]["valid"], false);
    let o = raft_dump(&[d.path().join("hardstate").to_str().unwrap()]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("voted for 2"), "{}", stdout(&o));
}

#[test]
fn live_node_appending_and_compacting_meanwhile_never_breaks_raft_dump() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let writer = {
        let (dir, stop, progress) = (dir.clone(), stop.clone(), progress.clone());
        std::thread::spawn(move || {
            let mut st = Storage::open(&dir, opts(FsyncPolicy::batch_default())).unwrap();
            let mut i = 0u64;
            // Keep the node busy until raft-dump has run enough times (bounded either way).
            while !stop.load(Ordering::Acquire) && i < 2_000_000 {
                i += 1;
                st.wal
                    .append_one(LogIndex(i), LogTerm(1), EntryKind(0), &payload(i))
                    .unwrap();
                if i % 1500 == 0 {
                    // A snapshot at i - 500 lets the node drop whole old segments.
                    st.wal.compact(LogIndex(i - 500), LogTerm(1)).unwrap();
                }
                progress.store(i, Ordering::Release);
            }
            st.close().unwrap();
        })
    };
    // Wait until the node has compacted at least twice (a condition, not a fixed sleep).
    while progress.load(Ordering::Acquire) < 3000 {
        assert!(!writer.is_finished(), "the writer stopped early");
        std::thread::yield_now();
    }
    let p = dir.to_str().unwrap();
    for _ in 0..5 {
        for args in [
            vec![p],
            vec![p, "--entries", "--json"],
            vec![p, "--verify"],
            vec![p, "--stats"],
        ] {
            let o = raft_dump(&args);
            let out = stdout(&o);
            let tail = &out[out.len().saturating_sub(2000)..];
            assert_eq!(code(&o), 0, "{args:?}: ...{tail}{}", stderr(&o));
        }
    }
    stop.store(true, Ordering::Release);
    writer.join().unwrap();
    assert!(progress.load(Ordering::Acquire) >= 3000);
}

#[test]
fn a_directory_without_shmraft_files_is_not_a_data_directory_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let foreign = d.path().join("etc-like");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::create_dir(foreign.join("seg-dir")).unwrap();
    for dir in [&empty, &foreign, Path::new("/etc")] {
        let p = dir.to_str().unwrap();
        for args in [vec![p, "--verify"], vec![p, "--verify", "--json"], vec![p]] {
            let o = raft_dump(&args);
            assert_eq!(code(&o), 2, "{args:?}: {}{}", stdout(&o), stderr(&o));
            assert!(
                stderr(&o).contains(
                    "not a shmraft data directory: no hardstate, log.meta or segments found"
                ),
                "{args:?}: {}",
                stderr(&o)
            );
            assert!(!stdout(&o).contains("clean"), "{args:?}: {}", stdout(&o));
        }
    }
}

/// A log written under `never` (nothing synced after the segment header), `n` entries.
fn unsynced_log(dir: &Path, n: u64, segment_bytes: u64) {
    let mut o = opts(FsyncPolicy::Never);
    o.wal.segment_bytes = segment_bytes;
    let mut st = Storage::open(dir, o).unwrap();
    for i in 1..=n {
        st.wal
            .append_one(LogIndex(i), LogTerm(1), EntryKind(0), &payload(i))
            .unwrap();
    }
    assert_eq!(st.wal.durable_index(), LogIndex(0), "nothing synced");
    drop(st); // no sync: a process crash under `never`
}

/// Flips a payload bit of `index` in an unsynced log of `n` entries; raft-dump --verify must
/// say recovery would discard exactly the intact records that recovery then does discard.
fn unsynced_flip_is_reported_as_would_discard(n: u64, index: u64, segment_bytes: u64) {
    let d = tempfile::tempdir().unwrap();
    unsynced_log(d.path(), n, segment_bytes);
    let (file, off) = find_record(d.path(), index);
    flip_bit(&file, off + 32 + 2);
    let p = d.path().to_str().unwrap();
    let o = raft_dump(&[p, "--verify"]);
    let out = stdout(&o);
    assert_eq!(code(&o), 3, "{out}{}", stderr(&o));
    let after = n - index;
    let want = format!(
        "result: RECOVERY WOULD DISCARD {after} RECORDS after {} offset {off} (exit 3)",
        file.display()
    );
    assert!(out.contains(&want), "missing {want:?} in {out}");
    assert!(
        out.contains("cannot be told whether this is corruption or a torn write"),
        "{out}"
    );
    let line = format!(
        "would-discard: file {}, offset {off}, index {index}:",
        file.display()
    );
    assert!(out.contains(&line), "missing {line:?} in {out}");
    assert!(
        out.contains(&format!("indexes {}..={n}", index + 1)),
        "{out}"
    );
    let v = json(&raft_dump(&[p, "--verify", "--json"]));
    assert_eq!(v["verdict"], "would-discard");
    assert_eq!(v["exit_status"], 3);
    assert_eq!(v["clean"], false);
    assert_eq!(v["corruption_count"], 0);
    let w = &v["would_discard"];
    assert_eq!(w["records"], after);
    assert_eq!(w["file"], file.display().to_string());
    assert_eq!(w["offset"], off);
    assert_eq!(w["index"], index);
    assert_eq!(w["first_index"], index + 1);
    assert_eq!(w["last_index"], n);
    // What recovery really does: the log ends before the damaged record.
    let st = Storage::open(d.path(), opts(FsyncPolicy::Never)).unwrap();
    assert_eq!(st.wal.last_index(), LogIndex(index - 1));
    drop(st);
    // After recovery cut it, the log verifies clean.
    let o = raft_dump(&[p, "--verify"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
}

#[test]
fn unsynced_damage_followed_by_intact_records_exits_3_in_one_open_segment() {
    // One open segment of many records (the case, scaled down).
    unsynced_flip_is_reported_as_would_discard(20_000, 10_000, 8 << 20);
}

#[test]
fn unsynced_damage_in_a_sealed_segment_counts_the_later_segments_too() {
    // 64 KiB segments: the flip lands in a sealed, unsynced segment; recovery removes every
    // later segment as well.
    unsynced_flip_is_reported_as_would_discard(3000, 700, 64 << 10);
}

#[test]
fn synced_damage_stays_corruption_exit_1_and_a_torn_last_record_stays_clean() {
    let d = tempfile::tempdir().unwrap();
    unsynced_log(d.path(), 300, 64 << 10);
    // The last record damaged, nothing intact after it: a plain torn tail, exit 0.
    let (file, off) = find_record(d.path(), 300);
    flip_bit(&file, off + 32 + 1);
    let o = raft_dump(&[d.path().to_str().unwrap(), "--verify"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(stdout(&o).contains("torn-tail:"), "{}", stdout(&o));
    // Synced damage with intact records after it: corruption wins (recovery refuses).
    let d = tempfile::tempdir().unwrap();
    make_log(d.path(), 300);
    let (file, off) = find_record(d.path(), 150);
    flip_bit(&file, off + 32 + 1);
    let v = json(&raft_dump(&[
        d.path().to_str().unwrap(),
        "--verify",
        "--json",
    ]));
    assert_eq!(v["verdict"], "corrupt");
    assert_eq!(v["exit_status"], 1);
    assert!(v["would_discard"].is_null());
}
