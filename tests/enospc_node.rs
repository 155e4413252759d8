//! A node whose disk fills up (a real full file system, not the fault seam): one follower of a
//! 3-node cluster runs with its data directory on a small tmpfs that is then filled. The node
//! stops with a clear disk-full error in its log while the other two keep committing; once
//! space is freed and the node is restarted it catches up, and no acknowledged write is lost.
//!
//! Mounting needs root (CI runs as root); as another user the test prints
//! "skipped: needs root to mount tmpfs" and returns.

mod cluster_support;

use cluster_support::{TestCluster, wait_until};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(15);

/// A tmpfs mounted on `at`, unmounted on drop (lazily if a process still uses it).
struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs on {} failed: {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            at: at.to_path_buf(),
        }
    }

    /// Fills the file system with a filler file, then frees `leave` bytes of it again.
    fn fill_leaving(&self, leave: u64) -> PathBuf {
        let filler = self.at.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0x5Au8; 64 << 10];
        loop {
            match f.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", filler.display()),
            }
        }
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(leave)).unwrap();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        }
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    let mut v = format!("value {i} ").into_bytes();
    v.resize(4096, b'v');
    v
}

/// Moves node `id`'s (stopped) data directory onto a fresh tmpfs of `size` mounted in its place.
fn data_dir_onto_tmpfs(c: &TestCluster, id: u64, size: &str) -> Tmpfs {
    let dir = c.data_dir(id);
    let aside = c.path().join(format!("node{id}.before-tmpfs"));
    std::fs::rename(&dir, &aside).unwrap();
    std::fs::create_dir(&dir).unwrap();
    let fs = Tmpfs::mount(&dir, size);
    for e in std::fs::read_dir(&aside).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
    fs
}

#[test]
fn a_node_on_a_full_disk_stops_clearly_and_catches_up_after_space_is_freed() {
    // SAFETY: geteuid has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: needs root to mount tmpfs");
        return;
    }
    let c = TestCluster::start(3, "always", &[]);
    let mut client = c.client();
    for i in 0..50 {
        client.put(&key(i), &value(i), T).unwrap();
    }
    let l = c.leader().unwrap();
    let f = (1..=3).find(|&i| i != l).unwrap();
    c.nemesis(&["kill", "--node", &f.to_string()]);
    wait_until("the follower to be down", T, || {
        c.node_status(f)["alive"] == false
    });
    let fs = data_dir_onto_tmpfs(&c, f, "16m");
    // Room for the node's small files, not for another 1 MiB segment.
    let filler = fs.fill_leaving(256 << 10);
    c.nemesis(&["restart", "--node", &f.to_string()]);

    // The others keep committing; the follower's log needs a new segment and cannot get one.
    for i in 50..500 {
        client.put(&key(i), &value(i), T).unwrap();
    }
    let log = c.path().join("logs").join(format!("node-{f}.log"));
    wait_until(
        "the follower to stop with a disk-full error",
        Duration::from_secs(60),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("disk full") && c.node_status(f)["alive"] == false
        },
    );
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines().filter(|l| l.contains("disk full")) {
        println!("node {f} log: {line}");
    }
    assert!(
        text.contains(&format!("shmraft node {f}: stopped:")),
        "{text}"
    );
    assert!(text.contains("free space and retry"), "{text}");

    // Space is freed: the node starts again, catches up, and nothing acknowledged is lost.
    std::fs::remove_file(&filler).unwrap();
    c.nemesis(&["restart", "--node", &f.to_string()]);
    for i in 500..520 {
        client.put(&key(i), &value(i), T).unwrap();
    }
    // Converged: the restarted node applied the same entries, with the same state digest.
    c.wait_converged(Duration::from_secs(60));
    for i in 0..520 {
        assert_eq!(client.get(&key(i), T).unwrap(), value(i), "key {i}");
    }
    drop(client);
    drop(c); // stop every node before the tmpfs goes
    drop(fs);
}
