//! One test per storage row (S1-S15) of docs/FAULTS.md, named after the row.
//! Each injects the fault on real files (or through the `FaultInjector` seam) and checks the
//! expected behaviour; each fails if that behaviour breaks.

mod common;
use common::*;
use shmraft_storage::*;
use std::path::Path;

const SEG: u64 = 64 << 10;

/// Builds a log with entries 1..=synced synced (term 1), then synced+1..=last unsynced, and
/// drops it without syncing (a process crash: the page cache keeps everything).
fn synced_prefix_then_unsynced(dir: &Path, synced: u64, last: u64, len: usize) {
    let mut st = Storage::open(dir, opts("never", SEG)).unwrap();
    append_range(&mut st.wal, 1, synced, 1, len);
    assert_eq!(st.wal.sync().unwrap(), LogIndex(synced));
    append_range(&mut st.wal, synced + 1, last, 1, len);
    assert_eq!(st.wal.durable_index(), LogIndex(synced));
    drop(st);
}

fn expect_corrupt(r: Result<Storage, StorageError>) -> Corruption {
    match r {
        Err(StorageError::Corrupt(c)) => c,
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("expected corruption, open succeeded"),
    }
}

#[test]
fn s01_torn_last_record_is_truncated_at_the_tail_only() {
    let dir = tempfile::tempdir().unwrap();
    synced_prefix_then_unsynced(dir.path(), 50, 60, 300);
    let (seg, rec) = find_record(dir.path(), 60);
    // Tear the last record: its second half never reached the disk.
    fill(&seg, rec.offset + 32 + 150, 150, 0);
    {
        let mut st = Storage::open(dir.path(), opts("never", SEG)).unwrap();
        assert_eq!(
            st.wal.last_index(),
            LogIndex(59),
            "only the torn record is cut"
        );
        check_range(&st.wal, 1, 59, 1, 300);
        // The cut area was zeroed: a new, shorter record 60 is the only thing there.
        st.wal
            .append_one(LogIndex(60), LogTerm(2), EntryKind(0), b"new")
            .unwrap();
        st.wal.sync().unwrap();
    }
    let st = Storage::open(dir.path(), opts("never", SEG)).unwrap();
    assert_eq!(st.wal.last_index(), LogIndex(60));
    assert_eq!(st.wal.entry(LogIndex(60)).unwrap().payload, b"new");
    assert!(inspect::verify(dir.path()).unwrap().is_empty());
}

#[test]
fn s02_record_spanning_pages_with_earlier_page_lost_is_detected_and_nothing_after_replayed() {
    let dir = tempfile::tempdir().unwrap();
    synced_prefix_then_unsynced(dir.path(), 5, 12, 6000);
    let (seg, rec) = find_record(dir.path(), 9);
    // Record 9 spans pages; lose the page holding its start, keep the later ones (with the
    // rest of 9 and records 10..12).
    let page = rec.offset / 4096 * 4096;
    fill(&seg, page, 4096, 0);
    let st = Storage::open(dir.path(), opts("never", SEG)).unwrap();
    let last = st.wal.last_index();
    assert!(
        last >= LogIndex(5) && last < LogIndex(9),
        "last index {last}"
    );
    check_range(&st.wal, 1, last.0, 1, 6000);
    // 10..12 were intact on disk but follow the hole: never replayed.
    assert!(st.wal.read(LogIndex(10), 1, u64::MAX).is_err());
}

#[test]
fn s03_unsynced_pages_persisted_out_of_order_stop_at_first_bad_record() {
    for seed in 0..24u64 {
        let dir = tempfile::tempdir().unwrap();
        synced_prefix_then_unsynced(dir.path(), 40, 160, 700);
        let report = power_cut(dir.path(), seed).unwrap();
        assert!(report.ledger_found);
        let st = Storage::open(dir.path(), opts("never", SEG))
            .unwrap_or_else(|e| panic!("seed {seed} ({}): {e}", report.mode));
        let last = st.wal.last_index();
        assert!(
            last >= LogIndex(40),
            "seed {seed}: durable prefix lost (last {last})"
        );
        assert!(last <= LogIndex(160));
        check_range(&st.wal, 1, last.0, 1, 700);
        if report.mode == "keep-all" {
            assert_eq!(last, LogIndex(160), "seed {seed}: nothing was lost");
        }
    }
}

#[test]
fn s04_zero_filled_preallocated_tail_is_never_parsed_as_a_record() {
    let dir = tempfile::tempdir().unwrap();
    synced_prefix_then_unsynced(dir.path(), 3, 3, 10);
    let st = Storage::open(dir.path(), opts("never", SEG)).unwrap();
    assert_eq!(st.wal.last_index(), LogIndex(3));
    drop(st);
    let seg = &segment_files(dir.path())[0];
    let info = inspect::segment_info(seg).unwrap();
    assert_eq!(info.record_count, 3);
    assert!(
        read_bytes(seg, info.records_end, SEG - info.records_end)
            .iter()
            .all(|&b| b == 0)
    );
    assert!(inspect::verify(dir.path()).unwrap().is_empty());
}

#[test]
fn s05_recycled_segment_with_stale_valid_looking_records_is_rejected_by_seed() {
    // Log A holds 1..=20; log B holds the same 1..=10. Copy A's record 11 (index 11, a valid
    // record of another segment) right after B's last record: the per-segment seed rejects it.
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    synced_prefix_then_unsynced(a.path(), 20, 20, 100);
    synced_prefix_then_unsynced(b.path(), 10, 10, 100);
    let (seg_a, rec_a) = find_record(a.path(), 11);
    let bytes = read_bytes(&seg_a, rec_a.offset, 32 + 104);
    let seg_b = &segment_files(b.path())[0];
    let end_b = inspect::segment_info(seg_b).unwrap().records_end;
    std::fs::OpenOptions::new()
        .write(true)
        .open(seg_b)
        .map(|f| {
            use std::os::unix::fs::FileExt;
            f.write_all_at(&bytes, end_b).unwrap();
        })
        .unwrap();
    let st = Storage::open(b.path(), opts("never", SEG)).unwrap();
    assert_eq!(
        st.wal.last_index(),
        LogIndex(10),
        "stale record must not be replayed"
    );
    drop(st);
    // Recovery zeroed it (it was after the durable point).
    assert!(read_bytes(seg_b, end_b, 136).iter().all(|&x| x == 0));
}

#[test]
fn s06_bit_flip_before_durable_point_is_reported_with_file_offset_index() {
    // Open segment: refused at open.
    let dir = tempfile::tempdir().unwrap();
    synced_prefix_then_unsynced(dir.path(), 30, 30, 200);
    let (seg, rec) = find_record(dir.path(), 17);
    flip_bit(&seg, rec.offset + 32 + 77, 3);
    let c = expect_corrupt(Storage::open(dir.path(), opts("never", SEG)));
    assert_eq!(c.file, seg);
    assert_eq!(c.offset, rec.offset);
    assert_eq!(c.index, Some(LogIndex(17)));
    assert!(c.to_string().contains("checksum"), "{c}");
    let problems = inspect::verify(dir.path()).unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.severity == inspect::Severity::Corruption
                && p.file == seg
                && p.offset == Some(rec.offset)
                && p.index == Some(LogIndex(17))),
        "{problems:?}"
    );

    // Sealed segment: open reads only footers, so the read of that entry fails, and verify
    // reports the exact record.
    let dir = tempfile::tempdir().unwrap();
    synced_prefix_then_unsynced(dir.path(), 600, 600, 200);
    let (seg, rec) = find_record(dir.path(), 5);
    assert_ne!(
        seg,
        *segment_files(dir.path()).last().unwrap(),
        "index 5 is in a sealed segment"
    );
    flip_bit(&seg, rec.offset + 32 + 5, 0);
    let st = Storage::open(dir.path(), opts("never", SEG)).unwrap();
    match st.wal.read(LogIndex(5), 1, u64::MAX) {
        Err(StorageError::Corrupt(c)) => {
            assert_eq!(
                (c.file.clone(), c.offset, c.index),
                (seg.clone(), rec.offset, Some(LogIndex(5)))
            );
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    drop(st);
    let problems = inspect::verify(dir.path()).unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.file == seg && p.offset == Some(rec.offset) && p.index == Some(LogIndex(5))),
        "{problems:?}"
    );
}

#[test]
fn s07_misdirected_write_is_detected_by_the_records_own_index() {
    let dir = tempfile::tempdir().unwrap();
    synced_prefix_then_unsynced(dir.path(), 30, 30, 64);
    let (seg, r20) = find_record(dir.path(), 20);
    let (_, r25) = find_record(dir.path(), 25);
    // Record 20 lands where record 25 belongs (same segment, same seed: its checksum is valid).
    let bytes = read_bytes(&seg, r20.offset, 32 + 64);
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .write_all_at(&bytes, r25.offset)
        .unwrap();
    let c = expect_corrupt(Storage::open(dir.path(), opts("never", SEG)));
    assert_eq!((c.offset, c.index), (r25.offset, Some(LogIndex(25))));
    assert!(c.to_string().contains("misplaced"), "{c}");
}

#[test]
fn s08_zeroed_sector_in_synced_range_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    synced_prefix_then_unsynced(dir.path(), 40, 40, 300);
    let (seg, rec) = find_record(dir.path(), 22);
    let sector = (rec.offset + 100) / 512 * 512;
    fill(&seg, sector, 512, 0);
    let c = expect_corrupt(Storage::open(dir.path(), opts("never", SEG)));
    assert_eq!(c.file, seg);
    assert!(c.index.is_some_and(|i| i <= LogIndex(22)));
    let problems = inspect::verify(dir.path()).unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.severity == inspect::Severity::Corruption),
        "{problems:?}"
    );
}

#[test]
fn s09_fsync_eio_poisons_the_log_and_acknowledges_nothing_past_the_last_good_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (o, faults) = opts_with_faults("always", SEG);
    let mut st = Storage::open(dir.path(), o).unwrap();
    append_range(&mut st.wal, 1, 10, 1, 32);
    assert_eq!(st.wal.durable_index(), LogIndex(10));
    faults.fail_syncs_after(0, libc::EIO);
    let e = st
        .wal
        .append_one(LogIndex(11), LogTerm(1), EntryKind(0), b"x")
        .unwrap_err();
    assert!(e.is_fatal(), "{e}");
    assert!(e.to_string().contains("msync"), "{e}");
    assert_eq!(st.wal.durable_index(), LogIndex(10));
    assert_eq!(st.wal.ack_index(), LogIndex(10));
    faults.clear();
    // Retrying proves nothing (storage rule 10 of docs/RULES.md): every later call returns the
    // fatal error.
    assert!(
        st.wal
            .append_one(LogIndex(12), LogTerm(1), EntryKind(0), b"x")
            .unwrap_err()
            .is_fatal()
    );
    assert!(st.wal.read(LogIndex(1), 1, 1).unwrap_err().is_fatal());
    assert!(st.wal.sync().unwrap_err().is_fatal());
    assert!(st.wal.sync_handle().sync().unwrap_err().is_fatal());
    drop(st);

    // Group commit: the background sync fails; the log says so and the ack index stays put.
    let dir = tempfile::tempdir().unwrap();
    let (o, faults) = opts_with_faults("batch:100:1000000", SEG);
    let st = Storage::open(dir.path(), o).unwrap();
    let mut st = st;
    append_range(&mut st.wal, 1, 5, 1, 32);
    assert!(wait_until(10, || st.wal.durable_index() == LogIndex(5)));
    faults.fail_syncs_after(0, libc::EIO);
    append_range(&mut st.wal, 6, 8, 1, 32);
    assert!(wait_until(10, || st.wal.fatal_error().is_some()));
    assert_eq!(st.wal.ack_index(), LogIndex(5));
    assert!(
        st.wal
            .append_one(LogIndex(9), LogTerm(1), EntryKind(0), b"x")
            .unwrap_err()
            .is_fatal()
    );

    // Hard state: a failed sync of a vote is an error, so the vote is never sent.
    let hs = HardState {
        current_term: LogTerm(3),
        voted_for: 2,
        commit_index: LogIndex(0),
    };
    assert!(st.hard_state.save(&hs).unwrap_err().is_fatal());
}

#[test]
fn s10_crash_before_directory_sync_after_create_rename_unlink_recovers_consistently() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut st = Storage::open(dir.path(), opts("always", SEG)).unwrap();
        append_range(&mut st.wal, 1, 1200, 1, 100);
        st.wal.compact(LogIndex(700), LogTerm(1)).unwrap();
    }
    // Leftovers of interrupted creates/renames: a segment being prepared, a slot file being
    // created, a snapshot being written.
    let d = dir.path();
    std::fs::write(d.join("seg-00000000000000ff.wal.tmp"), b"half-prepared").unwrap();
    std::fs::write(d.join("hardstate.tmp"), b"junk").unwrap();
    std::fs::write(
        d.join("snap-00000000000000000001-00000000000000000001.snap.partial"),
        b"x",
    )
    .unwrap();
    // An unlink whose directory sync was lost: a compacted segment reappears.
    let gone_seq = 1u64;
    let first = &segment_files(d)[0];
    assert_ne!(
        first.file_name().unwrap(),
        format::segment_file_name(gone_seq).as_str()
    );
    let mut st = Storage::open(d, opts("always", SEG)).unwrap();
    // Put a copy of a live sealed segment back under the old name of a deleted one.
    drop(st);
    std::fs::copy(first, d.join(format::segment_file_name(gone_seq))).unwrap();
    let e = Storage::open(d, opts("always", SEG));
    // The copy's header names another sequence number: refused, with the file named.
    match e {
        Err(StorageError::Corrupt(c)) => {
            assert!(c.file.ends_with(format::segment_file_name(gone_seq)))
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    std::fs::remove_file(d.join(format::segment_file_name(gone_seq))).unwrap();
    st = Storage::open(d, opts("always", SEG)).unwrap();
    assert_eq!(st.wal.first_index(), LogIndex(701));
    assert_eq!(st.wal.last_index(), LogIndex(1200));
    check_range(&st.wal, 701, 1200, 1, 100);
    assert!(!d.join("seg-00000000000000ff.wal.tmp").exists());
    assert!(
        !d.join("snap-00000000000000000001-00000000000000000001.snap.partial")
            .exists()
    );
    assert!(st.snapshots.latest().is_none());
}

#[test]
fn s10_compacted_segment_reappearing_after_lost_unlink_is_removed_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let saved;
    {
        let mut st = Storage::open(d, opts("always", SEG)).unwrap();
        append_range(&mut st.wal, 1, 1200, 1, 100);
        let first = segment_files(d)[0].clone();
        saved = (first.clone(), std::fs::read(&first).unwrap());
        st.wal.compact(LogIndex(700), LogTerm(1)).unwrap();
        st.wal.wait_for_removals();
        assert!(!first.exists());
    }
    std::fs::write(&saved.0, &saved.1).unwrap();
    let st = Storage::open(d, opts("always", SEG)).unwrap();
    assert_eq!(st.wal.first_index(), LogIndex(701));
    assert!(
        !saved.0.exists(),
        "the compaction point was durable first, so the unlink is redone"
    );
}

#[test]
fn s11_vote_is_synced_before_save_returns_so_a_power_cut_cannot_lose_it() {
    for (policy, seed) in ["never", "always"]
        .into_iter()
        .flat_map(|p| (0..4u64).map(move |s| (p, s)))
    {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut st = Storage::open(dir.path(), opts(policy, SEG)).unwrap();
            let hs = HardState {
                current_term: LogTerm(5),
                voted_for: 3,
                commit_index: LogIndex(0),
            };
            assert!(
                st.hard_state.save(&hs).unwrap(),
                "term/vote changes are synced under every policy"
            );
            // A commit-index-only change is not synced under any policy (advisory; a sync
            // would put a second fdatasync on every commit's path).
            let hs2 = HardState {
                commit_index: LogIndex(9),
                ..hs
            };
            assert!(!st.hard_state.save(&hs2).unwrap());
        }
        power_cut(dir.path(), seed).unwrap();
        let st = Storage::open(dir.path(), opts(policy, SEG)).unwrap();
        let hs = st.hard_state.get();
        assert_eq!(
            (hs.current_term, hs.voted_for),
            (LogTerm(5), 3),
            "{policy} seed {seed}"
        );
        assert!(hs.commit_index == LogIndex(0) || hs.commit_index == LogIndex(9));
    }
}

#[test]
fn s12_crash_during_or_after_conflict_truncation_never_brings_truncated_entries_back() {
    for seed in 0..16u64 {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut st = Storage::open(dir.path(), opts("never", SEG)).unwrap();
            append_range(&mut st.wal, 1, 900, 1, 100);
            st.wal.sync().unwrap();
            st.wal.truncate_suffix(LogIndex(300)).unwrap();
            assert_eq!(st.wal.durable_index(), LogIndex(299));
            // Same term as the removed entries (storage knows no Raft rule that would tell them
            // apart), different payloads: only the zeroing keeps the old 351.. from returning.
            for i in 300..=350u64 {
                let p = payload(i + 1_000_000, 100);
                st.wal
                    .append_one(LogIndex(i), LogTerm(1), EntryKind(0), &p)
                    .unwrap();
            }
        }
        power_cut(dir.path(), seed).unwrap();
        let st = Storage::open(dir.path(), opts("never", SEG)).unwrap();
        let last = st.wal.last_index();
        assert!(
            last >= LogIndex(299) && last <= LogIndex(350),
            "seed {seed}: last {last}"
        );
        for e in st.wal.read(LogIndex(1), usize::MAX, u64::MAX).unwrap() {
            let want = if e.index < LogIndex(300) {
                e.index.0
            } else {
                e.index.0 + 1_000_000
            };
            assert_eq!(
                e.payload,
                payload(want, 100),
                "seed {seed}: truncated entry {} came back",
                e.index
            );
        }
    }
}

#[test]
fn s13_crash_during_snapshot_write_around_rename_and_before_compaction_stays_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    {
        let mut st = Storage::open(d, opts("always", SEG)).unwrap();
        append_range(&mut st.wal, 1, 100, 1, 50);
        st.snapshots
            .install(LogIndex(40), LogTerm(1), b"members-a", &b"state-at-40"[..])
            .unwrap();
        st.wal.compact(LogIndex(40), LogTerm(1)).unwrap();
        // Crash while writing the next snapshot: the writer is never finished.
        let mut w = st
            .snapshots
            .begin(LogIndex(80), LogTerm(1), b"members-b")
            .unwrap();
        w.write_chunk(b"partial state").unwrap();
        std::mem::forget(w);
    }
    {
        let mut st = Storage::open(d, opts("always", SEG)).unwrap();
        let latest = st.snapshots.latest().unwrap().clone();
        assert_eq!(
            (latest.last_index, latest.membership.as_slice()),
            (LogIndex(40), &b"members-a"[..])
        );
        assert_eq!(st.wal.first_index(), LogIndex(41));
        assert!(std::fs::read_dir(d).unwrap().all(|e| {
            !e.unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".partial")
        }));
        // Crash after the rename, before compaction: new snapshot and the full log both present.
        st.snapshots
            .install(LogIndex(80), LogTerm(1), b"members-b", &b"state-at-80"[..])
            .unwrap();
    }
    {
        let st = Storage::open(d, opts("always", SEG)).unwrap();
        assert_eq!(st.snapshots.latest().unwrap().last_index, LogIndex(80));
        assert_eq!(st.wal.first_index(), LogIndex(41));
        check_range(&st.wal, 41, 100, 1, 50);
        let data = st
            .snapshots
            .open_latest()
            .unwrap()
            .unwrap()
            .read_all()
            .unwrap();
        assert_eq!(data, b"state-at-80");
    }
    // A corrupt snapshot is kept aside as .broken; there is no older one left, so none is latest.
    let snap = d.join(format::snapshot_file_name(LogIndex(80), LogTerm(1)));
    flip_bit(&snap, 64 + 9 + 2, 1);
    let st = Storage::open(d, opts("always", SEG)).unwrap();
    assert!(st.snapshots.latest().is_none());
    assert!(
        d.join(format!(
            "{}.broken",
            snap.file_name().unwrap().to_string_lossy()
        ))
        .exists()
    );
}

#[test]
fn s14_disk_full_on_preallocation_append_and_snapshot_is_a_clear_error_with_nothing_corrupted() {
    let dir = tempfile::tempdir().unwrap();
    let (o, faults) = opts_with_faults("always", SEG);
    let mut st = Storage::open(dir.path(), o.clone()).unwrap();
    append_range(&mut st.wal, 1, 100, 1, 100);
    faults.fail_allocations(libc::ENOSPC);
    // The prepared next segment already exists; drain it, then the next rotation needs a new one.
    let mut i = 101;
    let err = loop {
        match st.wal.append_one(
            LogIndex(i),
            LogTerm(1),
            EntryKind((i % 3) as u8),
            &payload(i, 100),
        ) {
            Ok(_) => i += 1,
            Err(e) => break e,
        }
        assert!(i < 10_000, "ENOSPC never surfaced");
    };
    assert!(matches!(err, StorageError::DiskFull { .. }), "{err}");
    assert!(err.to_string().contains("disk full"), "{err}");
    assert!(!err.is_fatal());
    assert_eq!(
        st.wal.last_index(),
        LogIndex(i - 1),
        "the refused append changed nothing"
    );
    check_range(&st.wal, 1, i - 1, 1, 100);
    // Snapshot writes on a full disk: error, no partial file left, nothing else changed.
    faults.fail_snapshot_writes(libc::ENOSPC);
    let r = st
        .snapshots
        .install(LogIndex(10), LogTerm(1), b"m", &b"data"[..]);
    assert!(matches!(r, Err(StorageError::DiskFull { .. })), "{r:?}");
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".partial")
    }));
    // Space is back: the same append succeeds.
    faults.clear();
    append_range(&mut st.wal, i, i + 500, 1, 100);
    drop(st);
    let st = Storage::open(dir.path(), o.clone()).unwrap();
    check_range(&st.wal, 1, i + 500, 1, 100);
    drop(st);
    // Preallocating the first segment of a new log.
    let dir2 = tempfile::tempdir().unwrap();
    faults.fail_allocations(libc::ENOSPC);
    let r = Storage::open(dir2.path(), o);
    assert!(matches!(r, Err(StorageError::DiskFull { .. })), "{r:?}");
    assert!(segment_files(dir2.path()).is_empty());
}

#[test]
fn s15_each_fsync_policy_meets_its_documented_loss_bound() {
    for policy in ["always", "batch:200:8192", "interval:5", "never"] {
        for seed in 0..6u64 {
            let dir = tempfile::tempdir().unwrap();
            let (acked, appended);
            {
                let mut st = Storage::open(dir.path(), opts(policy, SEG)).unwrap();
                append_range(&mut st.wal, 1, 300, 1, 200);
                if policy.starts_with("batch") || policy.starts_with("interval") {
                    // Let the background sync run at least once.
                    assert!(
                        wait_until(10, || st.wal.durable_index() > LogIndex(0)),
                        "{policy}"
                    );
                }
                acked = st.wal.durable_index();
                appended = st.wal.last_index();
                if policy == "always" {
                    assert_eq!(acked, appended, "always: every append is durable on return");
                    assert_eq!(st.wal.ack_index(), appended);
                }
            }
            // Process crash alone loses nothing under any policy (page cache).
            if seed == 0 {
                let st = Storage::open(dir.path(), opts(policy, SEG)).unwrap();
                assert_eq!(
                    st.wal.last_index(),
                    appended,
                    "{policy}: kill -9 lost entries"
                );
                continue;
            }
            power_cut(dir.path(), seed).unwrap();
            let st = Storage::open(dir.path(), opts(policy, SEG)).unwrap();
            let last = st.wal.last_index();
            assert!(
                last >= acked,
                "{policy} seed {seed}: durable {acked} but only {last} survived"
            );
            check_range(&st.wal, 1, last.0, 1, 200);
        }
    }
}

#[test]
fn second_opener_gets_locked_error_naming_the_holder_pid() {
    let dir = tempfile::tempdir().unwrap();
    let _st = Storage::open(dir.path(), opts("never", SEG)).unwrap();
    match Storage::open(dir.path(), opts("never", SEG)) {
        Err(StorageError::Locked { holder_pid, .. }) => {
            assert_eq!(holder_pid, Some(std::process::id()))
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let e = power_cut(dir.path(), 1).unwrap_err();
    assert!(
        e.to_string().contains(&std::process::id().to_string()),
        "{e}"
    );
}

/// Compacted segments are unlinked by the WAL's background remover: gone after
/// `wait_for_removals`, and after a clean close without waiting.
#[test]
fn compacted_segments_are_removed_in_the_background_and_by_close() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut st = Storage::open(d, opts("always", SEG)).unwrap();
    append_range(&mut st.wal, 1, 1200, 1, 100);
    let before = segment_files(d);
    st.wal.compact(LogIndex(700), LogTerm(1)).unwrap();
    st.wal.wait_for_removals();
    let after = segment_files(d);
    assert!(after.len() < before.len(), "{before:?} -> {after:?}");
    assert!(!after.contains(&before[0]), "the first segment is gone");
    append_range(&mut st.wal, 1201, 2400, 1, 100);
    let before = segment_files(d);
    st.wal.compact(LogIndex(2000), LogTerm(1)).unwrap();
    st.close().unwrap();
    let after = segment_files(d);
    assert!(after.len() < before.len(), "{before:?} -> {after:?}");
    let st = Storage::open(d, opts("always", SEG)).unwrap();
    assert_eq!(st.wal.first_index(), LogIndex(2001));
    check_range(&st.wal, 2001, 2400, 1, 100);
}

/// A failed directory sync on the remover thread poisons the log like any failed sync
/// (storage rule 10 of docs/RULES.md): later calls return the fatal error, and the next start
/// finishes the compaction.
#[test]
fn a_failed_directory_sync_while_removing_compacted_segments_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (o, faults) = opts_with_faults("always", SEG);
    let mut st = Storage::open(d, o).unwrap();
    append_range(&mut st.wal, 1, 1200, 1, 100);
    // Recording the compaction point is an fdatasync of the meta file, which succeeds; the
    // remover's directory sync fails.
    faults.fail_directory_syncs(libc::EIO);
    st.wal.compact(LogIndex(700), LogTerm(1)).unwrap();
    st.wal.wait_for_removals();
    let fatal = st
        .wal
        .fatal_error()
        .expect("the failed directory sync poisons the log");
    assert!(fatal.to_string().contains("fsync(directory)"), "{fatal}");
    assert!(
        st.wal
            .append_one(LogIndex(1201), LogTerm(1), EntryKind(0), b"x")
            .unwrap_err()
            .is_fatal()
    );
    faults.clear();
    drop(st);
    let st = Storage::open(d, opts("always", SEG)).unwrap();
    assert_eq!(st.wal.first_index(), LogIndex(701));
    check_range(&st.wal, 701, 1200, 1, 100);
}
