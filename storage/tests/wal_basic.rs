//! Basic write-ahead log behaviour: append, read, rotate, reopen, truncate, compact.

mod common;
use common::*;
use shmraft_storage::*;

#[test]
fn append_read_reopen_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut st = Storage::open(dir.path(), opts("never", 64 << 10)).unwrap();
        append_range(&mut st.wal, 1, 2000, 1, 100);
        assert!(st.wal.segments().len() > 2, "small segments rotate");
        check_range(&st.wal, 1, 2000, 1, 100);
        assert_eq!(st.wal.term_at(LogIndex(1500)).unwrap(), Some(LogTerm(1)));
        st.close().unwrap();
    }
    let st = Storage::open(dir.path(), opts("never", 64 << 10)).unwrap();
    assert_eq!(st.wal.first_index(), LogIndex(1));
    assert_eq!(st.wal.last_index(), LogIndex(2000));
    assert_eq!(
        st.wal.durable_index(),
        LogIndex(2000),
        "open syncs what it recovered"
    );
    check_range(&st.wal, 1, 2000, 1, 100);
}

#[test]
fn truncate_suffix_then_append_new_term_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut st = Storage::open(dir.path(), opts("always", 64 << 10)).unwrap();
        append_range(&mut st.wal, 1, 1500, 1, 100);
        st.wal.truncate_suffix(LogIndex(300)).unwrap();
        assert_eq!(st.wal.last_index(), LogIndex(299));
        append_range(&mut st.wal, 300, 400, 2, 100);
        check_range(&st.wal, 1, 299, 1, 100);
        check_range(&st.wal, 300, 400, 2, 100);
    }
    let st = Storage::open(dir.path(), opts("always", 64 << 10)).unwrap();
    assert_eq!(st.wal.last_index(), LogIndex(400));
    check_range(&st.wal, 300, 400, 2, 100);
    assert_eq!(st.wal.term_at(LogIndex(299)).unwrap(), Some(LogTerm(1)));
}

#[test]
fn compact_prefix_and_beyond_the_end() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut st = Storage::open(dir.path(), opts("batch:100:4096", 64 << 10)).unwrap();
        append_range(&mut st.wal, 1, 2000, 1, 100);
        st.wal.compact(LogIndex(1000), LogTerm(1)).unwrap();
        assert_eq!(st.wal.first_index(), LogIndex(1001));
        assert!(st.wal.read(LogIndex(999), 1, 1).is_err());
        check_range(&st.wal, 1001, 2000, 1, 100);
        assert_eq!(st.wal.term_at(LogIndex(1000)).unwrap(), Some(LogTerm(1)));
        st.close().unwrap();
    }
    {
        let mut st = Storage::open(dir.path(), opts("always", 64 << 10)).unwrap();
        assert_eq!(st.wal.first_index(), LogIndex(1001));
        check_range(&st.wal, 1001, 2000, 1, 100);
        st.wal.compact(LogIndex(5000), LogTerm(3)).unwrap();
        assert_eq!(st.wal.last_index(), LogIndex(5000));
        assert_eq!(st.wal.first_index(), LogIndex(5001));
        append_range(&mut st.wal, 5001, 5010, 3, 10);
    }
    let st = Storage::open(dir.path(), opts("always", 64 << 10)).unwrap();
    assert_eq!(st.wal.first_index(), LogIndex(5001));
    assert_eq!(st.wal.last_index(), LogIndex(5010));
    assert_eq!(st.wal.term_at(LogIndex(5000)).unwrap(), Some(LogTerm(3)));
    check_range(&st.wal, 5001, 5010, 3, 10);
}

#[test]
fn missing_ledger_reopens_trusting_sealed_footers_and_keeps_the_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut st = Storage::open(dir.path(), opts("always", 64 << 10)).unwrap();
        append_range(&mut st.wal, 1, 1500, 1, 100);
    }
    std::fs::remove_file(dir.path().join(format::LEDGER_FILE)).unwrap();
    let st = Storage::open(dir.path(), opts("always", 64 << 10)).unwrap();
    // The open segment is treated leniently (synced up to its header), but its records are all
    // intact, so nothing is lost; sealed segments are trusted from their footers.
    assert_eq!(st.wal.last_index(), LogIndex(1500));
    check_range(&st.wal, 1, 1500, 1, 100);
    assert!(
        dir.path().join(format::LEDGER_FILE).exists(),
        "ledger recreated"
    );
}

#[test]
fn batch_policy_acknowledges_only_up_to_the_durable_index_and_listener_sees_syncs() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let mut st = Storage::open(dir.path(), opts("batch:500:4096", 64 << 10)).unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let s2 = seen.clone();
    st.wal.set_sync_listener(move |ev| {
        if let SyncEvent::Durable(i) = ev {
            s2.fetch_max(i.0, Ordering::SeqCst);
        }
    });
    append_range(&mut st.wal, 1, 200, 1, 100);
    assert!(st.wal.ack_index() <= st.wal.durable_index());
    assert!(wait_until(10, || st.wal.durable_index() == LogIndex(200)));
    assert_eq!(st.wal.ack_index(), LogIndex(200));
    assert!(wait_until(10, || seen.load(Ordering::SeqCst) == 200));
    // A dedicated sync thread through the handle.
    append_range(&mut st.wal, 201, 210, 1, 100);
    let h = st.wal.sync_handle();
    let d = std::thread::spawn(move || h.sync().unwrap())
        .join()
        .unwrap();
    assert_eq!(d, LogIndex(210));
}

#[test]
fn append_rejects_gaps_term_regressions_and_oversized_entries_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = Storage::open(dir.path(), opts("never", 64 << 10)).unwrap();
    append_range(&mut st.wal, 1, 3, 2, 10);
    let e = |i, t| EntryRef {
        index: LogIndex(i),
        term: LogTerm(t),
        kind: EntryKind(0),
        payload: b"p",
    };
    assert!(matches!(
        st.wal.append(&[e(5, 2)]),
        Err(StorageError::NotContiguous { .. })
    ));
    assert!(matches!(
        st.wal.append(&[e(4, 2), e(5, 1)]),
        Err(StorageError::TermRegression { .. })
    ));
    let big = vec![0u8; (st.wal.entry_bytes_max() + 1) as usize];
    let r = st.wal.append(&[EntryRef {
        index: LogIndex(4),
        term: LogTerm(2),
        kind: EntryKind(0),
        payload: &big,
    }]);
    assert!(matches!(r, Err(StorageError::EntryTooLarge { .. })));
    assert_eq!(
        st.wal.last_index(),
        LogIndex(3),
        "a rejected batch writes nothing"
    );
    // The largest entry fits an empty segment.
    let max = vec![7u8; st.wal.entry_bytes_max() as usize];
    st.wal
        .append_one(LogIndex(4), LogTerm(2), EntryKind(0), &max)
        .unwrap();
    assert_eq!(st.wal.entry(LogIndex(4)).unwrap().payload, max);
}

#[test]
fn empty_unsealed_segment_without_ledger_slot_after_a_sealed_one_is_not_corruption() {
    // The state a crash leaves between activating a prepared segment and giving it a ledger
    // slot: the last sealed segment is followed by an empty segment the ledger does not know.
    let dir = tempfile::tempdir().unwrap();
    let first_of_second;
    {
        let mut st = Storage::open(dir.path(), opts("always", 64 << 10)).unwrap();
        append_range(&mut st.wal, 1, 700, 1, 100);
        first_of_second = st.wal.segments()[1].1;
        st.wal.truncate_suffix(first_of_second).unwrap();
    }
    // Free every ledger slot (seq fields at 64 + 32k).
    let ledger = dir.path().join(format::LEDGER_FILE);
    let mut img = std::fs::read(&ledger).unwrap();
    for k in 0..format::LEDGER_SLOTS {
        let at = format::LEDGER_HEADER_BYTES + k * format::LEDGER_SLOT_BYTES;
        img[at..at + 8].fill(0);
    }
    std::fs::write(&ledger, &img).unwrap();
    let st = Storage::open(dir.path(), opts("always", 64 << 10)).unwrap();
    assert_eq!(st.wal.last_index(), first_of_second.prev());
    check_range(&st.wal, 1, first_of_second.0 - 1, 1, 100);
}

#[test]
fn truncating_into_a_segment_sealed_before_this_open_then_appending_works() {
    // Sealed segments found at open keep no file descriptor; writing into one again after a
    // truncation goes through the mapping.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut st = Storage::open(dir.path(), opts("always", 256 << 10)).unwrap();
        append_range(&mut st.wal, 1, 60, 1, 20_000);
        assert!(st.wal.segments().len() >= 3);
    }
    {
        let mut st = Storage::open(dir.path(), opts("always", 256 << 10)).unwrap();
        st.wal.truncate_suffix(LogIndex(5)).unwrap();
        append_range(&mut st.wal, 5, 30, 2, 20_000);
        append_range(&mut st.wal, 31, 40, 2, 100);
        check_range(&st.wal, 5, 30, 2, 20_000);
    }
    let st = Storage::open(dir.path(), opts("always", 256 << 10)).unwrap();
    assert_eq!(st.wal.last_index(), LogIndex(40));
    check_range(&st.wal, 1, 4, 1, 20_000);
    check_range(&st.wal, 5, 30, 2, 20_000);
    assert!(
        inspect::verify(dir.path())
            .unwrap()
            .iter()
            .all(|p| p.severity != inspect::Severity::Corruption)
    );
}

/// Under `always` the records of one append are gathered and written with one pwrite: batches
/// that cross segment rotations and mix small records with large ones (written on their own)
/// read back exactly, are all durable when `append` returns, and survive a power cut.
#[test]
fn always_batches_across_rotations_with_large_records_are_durable_and_exact() {
    let dir = tempfile::tempdir().unwrap();
    let len_of = |i: u64| {
        if i % 97 == 0 {
            20_000
        } else {
            50 + (i % 300) as usize
        }
    };
    let mut next = 1u64;
    {
        let mut st = Storage::open(dir.path(), opts("always", 64 << 10)).unwrap();
        for batch in [1usize, 7, 250, 3, 600, 64] {
            let payloads: Vec<Vec<u8>> = (next..next + batch as u64)
                .map(|i| payload(i, len_of(i)))
                .collect();
            let refs: Vec<EntryRef<'_>> = payloads
                .iter()
                .enumerate()
                .map(|(k, p)| EntryRef {
                    index: LogIndex(next + k as u64),
                    term: LogTerm(1),
                    kind: EntryKind(0),
                    payload: p,
                })
                .collect();
            let last = st.wal.append(&refs).unwrap();
            next += batch as u64;
            assert_eq!(last, LogIndex(next - 1));
            assert_eq!(st.wal.durable_index(), last, "durable when append returns");
        }
        assert!(st.wal.segments().len() > 3, "the batches crossed rotations");
    }
    power_cut(dir.path(), 7).unwrap();
    let st = Storage::open(dir.path(), opts("always", 64 << 10)).unwrap();
    assert_eq!(st.wal.last_index(), LogIndex(next - 1));
    let got = st.wal.read(LogIndex(1), usize::MAX, u64::MAX).unwrap();
    assert_eq!(got.len() as u64, next - 1);
    for e in got {
        assert_eq!(
            e.payload,
            payload(e.index.0, len_of(e.index.0)),
            "at {}",
            e.index
        );
    }
}
