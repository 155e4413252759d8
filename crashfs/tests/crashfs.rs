//! The crash file system's semantics, through real system calls on a real FUSE mount:
//! what a crash keeps (synced data, fsynced directory entries, msynced mapped pages) and loses
//! (the rest), each fault injection, and deterministic replay of a crash seed.
//!
//! Needs /dev/fuse and root (or fusermount3); `.ci/run` installs fuse3 where it is missing.

use shmraft_crashfs::{CrashFsMount, CrashMode, CrashPlan};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

struct Fixture {
    backing: tempfile::TempDir,
    mnt: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            backing: tempfile::tempdir().unwrap(),
            mnt: tempfile::tempdir().unwrap(),
        }
    }
    fn mount(&self) -> CrashFsMount {
        CrashFsMount::mount(self.backing.path(), self.mnt.path()).expect("mount crashfs")
    }
    fn at(&self, name: &str) -> PathBuf {
        self.mnt.path().join(name)
    }
    /// The durable image of `name` (valid while not mounted).
    fn backing_file(&self, name: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.backing.path().join(name))
    }
}

fn crash(m: CrashFsMount, mode: CrashMode, seed: u64) -> shmraft_crashfs::CrashReport {
    m.crash(CrashPlan {
        seed,
        mode: Some(mode),
    })
    .expect("crash")
}

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

/// A durable file of `len` zero bytes (created, sized, synced, directory synced).
fn durable_file(path: &Path, len: u64) -> File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap();
    f.set_len(len).unwrap();
    f.sync_all().unwrap();
    sync_dir(path.parent().unwrap());
    f
}

#[test]
fn a_mapped_write_survives_only_when_an_msync_covered_it() {
    let fx = Fixture::new();
    let m = fx.mount();
    let f = durable_file(&fx.at("seg"), 8192);
    let mut map = map_shared(&f);
    map[..5].copy_from_slice(b"kept!");
    map[4096..4101].copy_from_slice(b"lost!");
    map.flush_range(0, 4096).unwrap(); // msync(MS_SYNC) of the first page only
    // keep-all: the file system keeps everything it saw; the second page never reached it.
    let report = crash(m, CrashMode::KeepAll, 1);
    drop(map);
    let img = fx.backing_file("seg").unwrap();
    assert_eq!(&img[..5], b"kept!", "{report}");
    assert_eq!(
        &img[4096..4101],
        &[0; 5],
        "an unsynced mapped page survived: {report}"
    );
}

/// A shared read-write mapping of the whole file.
fn map_shared(f: &File) -> memmap2::MmapMut {
    // SAFETY: the file is private to this test and nothing truncates it while mapped.
    unsafe { memmap2::MmapMut::map_mut(f).unwrap() }
}

#[test]
fn a_write_survives_only_when_an_fsync_covered_it() {
    let fx = Fixture::new();
    let m = fx.mount();
    let f = durable_file(&fx.at("f"), 0);
    f.write_all_at(b"synced", 0).unwrap();
    f.sync_data().unwrap();
    f.write_all_at(b"UNSYNC", 0).unwrap();
    f.write_all_at(b"tail", 6).unwrap();
    let mut now = [0u8; 10];
    f.read_exact_at(&mut now, 0).unwrap();
    assert_eq!(
        &now, b"UNSYNCtail",
        "readers see unsynced writes before a crash"
    );
    let report = crash(m, CrashMode::KeepNone, 2);
    drop(f);
    assert_eq!(fx.backing_file("f").unwrap(), b"synced", "{report}");
    assert_eq!(report.ops_lost, 2);
    // The next mount serves the surviving image.
    let m = fx.mount();
    assert_eq!(std::fs::read(fx.at("f")).unwrap(), b"synced");
    m.unmount().unwrap();
}

#[test]
fn a_created_file_survives_only_when_its_directory_was_fsynced() {
    let fx = Fixture::new();
    let m = fx.mount();
    std::fs::create_dir(fx.at("d")).unwrap();
    sync_dir(fx.mnt.path());
    let _named = File::create(fx.at("d/b")).unwrap();
    sync_dir(&fx.at("d"));
    let synced_but_unnamed = File::create(fx.at("d/a")).unwrap();
    synced_but_unnamed.sync_all().unwrap(); // the file is synced, its name is not
    let _late = File::create(fx.at("d/c")).unwrap();
    crash(m, CrashMode::KeepNone, 3);
    let names = names(&fx.backing.path().join("d"));
    assert_eq!(names, vec!["b".to_string()]);
    // keep-all keeps unsynced directory entries too.
    let m = fx.mount();
    File::create(fx.at("d/e")).unwrap();
    crash(m, CrashMode::KeepAll, 4);
    assert_eq!(names_of(&fx, "d"), vec!["b", "e"]);
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn names_of(fx: &Fixture, dir: &str) -> Vec<String> {
    names(&fx.backing.path().join(dir))
}

#[test]
fn a_rename_is_durable_only_after_the_directory_fsync() {
    let fx = Fixture::new();
    let m = fx.mount();
    let f = durable_file(&fx.at("a.tmp"), 0);
    f.write_all_at(b"content", 0).unwrap();
    f.sync_all().unwrap();
    drop(f);
    std::fs::rename(fx.at("a.tmp"), fx.at("a")).unwrap();
    assert!(fx.at("a").exists() && !fx.at("a.tmp").exists());
    crash(m, CrashMode::KeepNone, 5);
    assert_eq!(names(fx.backing.path()), vec!["a.tmp"]);
    assert_eq!(fx.backing_file("a.tmp").unwrap(), b"content");

    let m = fx.mount();
    std::fs::rename(fx.at("a.tmp"), fx.at("a")).unwrap();
    sync_dir(fx.mnt.path());
    crash(m, CrashMode::KeepNone, 6);
    assert_eq!(names(fx.backing.path()), vec!["a"]);
    assert_eq!(fx.backing_file("a").unwrap(), b"content");
}

#[test]
fn an_unlink_is_undone_by_a_crash_before_the_directory_fsync() {
    let fx = Fixture::new();
    let m = fx.mount();
    let f = durable_file(&fx.at("x"), 0);
    f.write_all_at(b"still here", 0).unwrap();
    f.sync_all().unwrap();
    drop(f);
    std::fs::remove_file(fx.at("x")).unwrap();
    crash(m, CrashMode::KeepNone, 7);
    assert_eq!(fx.backing_file("x").unwrap(), b"still here");
}

#[test]
fn eio_on_reads_of_a_range_until_cleared() {
    let fx = Fixture::new();
    let m = fx.mount();
    let f = durable_file(&fx.at("r"), 0);
    f.write_all_at(&[9u8; 8192], 0).unwrap();
    f.sync_all().unwrap();
    drop(f);
    m.unmount().unwrap(); // a fresh mount: nothing cached in the kernel
    let m = fx.mount();
    m.fail_reads(Path::new("r"), 4096, 10).unwrap();
    let f = File::open(fx.at("r")).unwrap();
    let mut b = [0u8; 4096];
    let e = f.read_exact_at(&mut b, 4096).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    f.read_exact_at(&mut b, 0).expect("outside the range");
    assert!(m.status().counters.faults_fired >= 1);
    m.clear_faults();
    f.read_exact_at(&mut b, 4096).expect("cleared");
    assert_eq!(b, [9u8; 4096]);
    drop(f);
    m.unmount().unwrap();
}

#[test]
fn eio_on_a_sync_loses_the_writes_in_its_range() {
    let fx = Fixture::new();
    let m = fx.mount();
    let f = durable_file(&fx.at("s"), 0);
    f.write_all_at(b"AAAA", 0).unwrap();
    f.write_all_at(b"BBBB", 1024).unwrap();
    m.fail_next_sync(Path::new("s"), 1024, 4).unwrap();
    let e = f.sync_data().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    // Even keeping everything unsynced, the failed range is gone; the rest of that sync held.
    let report = crash(m, CrashMode::KeepAll, 8);
    drop(f);
    let img = fx.backing_file("s").unwrap();
    assert_eq!(&img[..4], b"AAAA", "{report}");
    assert!(img.len() < 1024 || img[1024..1028] == [0; 4], "{report}");
}

#[test]
fn a_misdirected_write_is_right_in_the_cache_and_wrong_on_the_medium() {
    let fx = Fixture::new();
    let m = fx.mount();
    let f = durable_file(&fx.at("w"), 8192);
    m.misdirect_next_write(Path::new("w"), 4096).unwrap();
    f.write_all_at(b"record", 0).unwrap();
    f.sync_data().unwrap();
    let mut b = [0u8; 6];
    f.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(&b, b"record", "the cache has it where it was aimed");
    crash(m, CrashMode::KeepNone, 9);
    drop(f);
    let img = fx.backing_file("w").unwrap();
    assert_eq!(&img[..6], &[0; 6]);
    assert_eq!(&img[4096..4102], b"record");
}

#[test]
fn a_zeroed_sector_of_synced_data_shows_after_the_crash() {
    let fx = Fixture::new();
    let m = fx.mount();
    let f = durable_file(&fx.at("z"), 0);
    f.write_all_at(&[7u8; 2048], 0).unwrap();
    f.sync_data().unwrap();
    m.zero_sector(Path::new("z"), 700).unwrap();
    assert!(
        m.zero_sector(Path::new("z"), 4096).is_err(),
        "beyond the synced data"
    );
    crash(m, CrashMode::KeepNone, 10);
    drop(f);
    let img = fx.backing_file("z").unwrap();
    assert!(img[..512].iter().all(|&b| b == 7));
    assert!(img[512..1024].iter().all(|&b| b == 0));
    assert!(img[1024..].iter().all(|&b| b == 7));
}

/// The same operations and the same seed give the same image; another seed (most likely) not.
#[test]
fn a_crash_seed_replays_deterministically() {
    let run = |seed: u64| -> (Vec<u8>, String) {
        let fx = Fixture::new();
        let m = fx.mount();
        let f = durable_file(&fx.at("d"), 0);
        for i in 0..64u64 {
            f.write_all_at(&[i as u8 + 1; 1000], i * 1000).unwrap();
        }
        let report = crash(m, CrashMode::TornSubset, seed);
        drop(f);
        (fx.backing_file("d").unwrap(), format!("{report:?}"))
    };
    let a = run(42);
    let b = run(42);
    assert_eq!(a, b);
    let c = run(43);
    assert_ne!(a.0, c.0, "two seeds tore 125 sectors the same way");
    // A seeded plan picks its mode from the seed, also deterministically.
    let fx = Fixture::new();
    let m = fx.mount();
    let r1 = m.crash(CrashPlan::seeded(5)).unwrap();
    let m = fx.mount();
    let r2 = m.crash(CrashPlan::seeded(5)).unwrap();
    assert_eq!(r1.mode, r2.mode);
}

#[test]
fn a_clean_unmount_keeps_everything_and_a_remount_sees_it() {
    let fx = Fixture::new();
    let m = fx.mount();
    std::fs::create_dir(fx.at("sub")).unwrap();
    std::fs::write(fx.at("sub/f"), b"hello").unwrap();
    let report = m.unmount().unwrap();
    assert_eq!(report.mode, CrashMode::KeepAll);
    assert_eq!(
        std::fs::read(fx.backing.path().join("sub/f")).unwrap(),
        b"hello"
    );
    assert!(!fx.backing.path().join(shmraft_crashfs::META_DIR).exists());
    let m = fx.mount();
    assert_eq!(std::fs::read(fx.at("sub/f")).unwrap(), b"hello");
    m.unmount().unwrap();
}
