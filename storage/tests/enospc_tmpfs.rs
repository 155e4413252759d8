//! A real full disk (fault-matrix row S14 of docs/FAULTS.md without the fault seam): each test
//! mounts a size-limited tmpfs of its own, fills it, and checks that preparing a segment, appending
//! across a rotation and writing a snapshot each fail with a clear `DiskFull` error naming the
//! file, that nothing acknowledged is lost (also across a reopen while the disk is still full), and
//! that the log works again once space is freed.
//!
//! Mounting needs root (CI runs as root). As another user each test prints
//! "skipped: needs root to mount tmpfs" and returns; as root a failed mount fails the test.

mod common;
use common::*;
use shmraft_storage::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const SEG: u64 = 256 << 10;

/// The tests of this file run one at a time: a `mount` spawned by one test forks the process
/// while another may be reopening its data directory, and the child's inherited copy of the
/// lock file descriptor (until it execs) would make that reopen see the lock as held.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A tmpfs mounted on a fresh temporary directory, unmounted on drop (lazily if something
/// still holds it, so nothing is left mounted).
struct Tmpfs {
    dir: tempfile::TempDir,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (a mount option value such as `2m`), or returns `None` (after
    /// saying so) when not root.
    fn mount(size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped: needs root to mount tmpfs");
            return None;
        }
        let serial = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs on {} failed: {}",
            dir.path().display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Tmpfs {
            dir,
            _serial: serial,
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A data directory inside the mount.
    fn data_dir(&self) -> PathBuf {
        let d = self.path().join("data");
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Grows the file system to `size` (frees space without touching the data).
    fn remount(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.path())
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "remount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Fills the file system with `filler`, then frees `leave` bytes of it again.
    fn fill_leaving(&self, leave: u64) -> PathBuf {
        let filler = self.path().join("filler");
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
            .arg(self.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        }
    }
}

fn assert_disk_full(err: &StorageError, file_part: &str) {
    assert!(matches!(err, StorageError::DiskFull { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("disk full"), "{msg}");
    assert!(
        msg.contains(file_part),
        "error does not name {file_part:?}: {msg}"
    );
    assert!(
        !err.is_fatal(),
        "a full disk must not poison the log: {msg}"
    );
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || n.ends_with(".partial"))
        .collect()
}

#[test]
fn preparing_the_first_segment_on_a_full_tmpfs_is_disk_full_then_works_after_remount() {
    let Some(fs) = Tmpfs::mount("1m") else {
        return;
    };
    let dir = fs.data_dir();
    fs.fill_leaving(96 << 10); // room for the small files, not for a 256 KiB segment
    let err = Storage::open(&dir, opts("always", SEG)).expect_err("a segment cannot fit");
    assert_disk_full(&err, "seg-0000000000000001.wal");
    assert!(segment_files(&dir).is_empty(), "no segment left behind");
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    // Space is back: the same directory opens and works.
    fs.remount("4m");
    let mut st = Storage::open(&dir, opts("always", SEG)).unwrap();
    append_range(&mut st.wal, 1, 50, 1, 100);
    drop(st);
    let st = Storage::open(&dir, opts("always", SEG)).unwrap();
    check_range(&st.wal, 1, 50, 1, 100);
}

#[test]
fn appending_across_a_rotation_on_a_full_tmpfs_is_disk_full_and_loses_nothing() {
    let Some(fs) = Tmpfs::mount("2m") else {
        return;
    };
    let dir = fs.data_dir();
    let mut st = Storage::open(&dir, opts("always", SEG)).unwrap();
    append_range(&mut st.wal, 1, 20, 1, 500);
    let filler = fs.fill_leaving(16 << 10);
    // Appends go into the preallocated active segment until it is full; the rotation then
    // needs a new segment, which cannot be allocated.
    let mut i = 21;
    let err = loop {
        match st.wal.append_one(
            LogIndex(i),
            LogTerm(1),
            EntryKind((i % 3) as u8),
            &payload(i, 500),
        ) {
            Ok(_) => i += 1,
            Err(e) => break e,
        }
        assert!(i < 10_000, "ENOSPC never surfaced");
    };
    assert_disk_full(&err, "seg-0000000000000002.wal");
    let acked = i - 1;
    assert_eq!(
        st.wal.last_index(),
        LogIndex(acked),
        "the refused append changed nothing"
    );
    assert_eq!(st.wal.durable_index(), LogIndex(acked));
    check_range(&st.wal, 1, acked, 1, 500);
    // Retrying while the disk is still full fails the same way and changes nothing.
    let again = st
        .wal
        .append_one(
            LogIndex(i),
            LogTerm(1),
            EntryKind((i % 3) as u8),
            &payload(i, 500),
        )
        .unwrap_err();
    assert_disk_full(&again, "seg-0000000000000002.wal");
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    // Reopening on the still-full disk recovers every acknowledged entry.
    drop(st);
    let mut st = Storage::open(&dir, opts("always", SEG)).unwrap();
    assert_eq!(st.wal.last_index(), LogIndex(acked));
    check_range(&st.wal, 1, acked, 1, 500);
    // Space is freed: the same append succeeds, and the log keeps rotating.
    std::fs::remove_file(&filler).unwrap();
    append_range(&mut st.wal, i, i + 1500, 1, 500);
    drop(st);
    let st = Storage::open(&dir, opts("always", SEG)).unwrap();
    check_range(&st.wal, 1, i + 1500, 1, 500);
    assert!(segment_files(&dir).len() >= 3);
}

#[test]
fn writing_a_snapshot_on_a_full_tmpfs_is_disk_full_and_keeps_the_previous_one() {
    let Some(fs) = Tmpfs::mount("2m") else {
        return;
    };
    let dir = fs.data_dir();
    let mut st = Storage::open(&dir, opts("always", SEG)).unwrap();
    append_range(&mut st.wal, 1, 100, 1, 100);
    let old = st
        .snapshots
        .install(LogIndex(50), LogTerm(1), b"members", &b"state at 50"[..])
        .unwrap();
    let filler = fs.fill_leaving(32 << 10);
    let big = vec![7u8; 300 << 10];
    let err = st
        .snapshots
        .install(LogIndex(100), LogTerm(1), b"members", &big[..])
        .expect_err("300 KiB cannot fit in 32 KiB");
    assert_disk_full(&err, ".partial");
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    assert_eq!(
        st.snapshots.latest().map(|m| m.path.clone()),
        Some(old.path.clone())
    );
    let r = st
        .snapshots
        .open_latest()
        .unwrap()
        .expect("the old snapshot");
    assert_eq!(r.read_all().unwrap(), b"state at 50");
    check_range(&st.wal, 1, 100, 1, 100);
    // Space is freed: the same snapshot is written, and survives a reopen.
    std::fs::remove_file(&filler).unwrap();
    let new = st
        .snapshots
        .install(LogIndex(100), LogTerm(1), b"members", &big[..])
        .unwrap();
    drop(st);
    let st = Storage::open(&dir, opts("always", SEG)).unwrap();
    assert_eq!(
        st.snapshots.latest().map(|m| m.path.clone()),
        Some(new.path)
    );
    let r = st.snapshots.open_latest().unwrap().unwrap();
    assert_eq!(r.read_all().unwrap(), big);
    check_range(&st.wal, 1, 100, 1, 100);
}
