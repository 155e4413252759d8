//! `shmraft wal demo` (the storage demo) end to end, in its quick form.

use std::process::Command;

#[test]
fn demo_quick_runs_every_section_and_finds_the_flipped_bit() {
    let d = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_shmraft"))
        .args([
            "wal",
            "demo",
            "--quick",
            "--dir",
            d.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for section in [
        "=== 1a. WAL benchmark, fsync never",
        "=== 1b. WAL benchmark, fsync always",
        "=== 2. Simulated power cut",
        "=== 3. raft-dump on the recovered log",
        "=== 4. Flip one bit",
    ] {
        assert!(out.contains(section), "missing {section:?} in {out}");
    }
    assert!(out.contains("every durable entry survived"), "{out}");
    assert!(out.contains("nothing acknowledged was lost"), "{out}");
    assert!(out.contains("result: clean"), "{out}");
    assert!(
        out.contains("result: CORRUPT (1 corruption problems)"),
        "{out}"
    );
    assert!(out.contains("=> reported exactly"), "{out}");
    // raft-dump's kv payload printer reads the session envelope around the KV command.
    assert!(
        out.contains("client 42 seq") && out.contains("put \"key-"),
        "{out}"
    );
    // It cleans up after itself.
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
}
