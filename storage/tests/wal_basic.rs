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
