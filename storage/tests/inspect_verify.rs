//! The read-only inspector: a flipped bit anywhere in a log is reported exactly (file, byte
//! offset, index), and listing works on a live directory.

mod common;
use common::*;
use shmraft_storage::*;
use std::path::{Path, PathBuf};

const SEG: u64 = 64 << 10;

/// A log with a sealed and an open segment, records of many sizes (so padding varies).
fn build(dir: &Path) -> Vec<PathBuf> {
    let mut st = Storage::open(dir, opts("never", SEG)).unwrap();
    for i in 1..=400u64 {
        let len = (i * 37 % 301) as usize;
        st.wal
            .append_one(
                LogIndex(i),
                LogTerm(1 + i / 150),
                EntryKind(2),
                &payload(i, len),
            )
            .unwrap();
    }
    st.wal.sync().unwrap();
    drop(st);
    let segs = segment_files(dir);
    assert!(segs.len() >= 2);
    segs
}

/// Where verify must report a flip of the byte at `at` in a segment: the record's start for a
/// byte of a record's header or payload, the trailer start for a trailer byte, the exact byte
/// anywhere else (padding, zero areas, offset index), 0 for the header.
fn expected_offsets(path: &Path, records: &[inspect::RecordInfo], at: u64) -> Vec<u64> {
    let size = std::fs::metadata(path).unwrap().len();
    if at < 64 {
        return vec![0];
    }
    if at >= size - 64 {
        return vec![size - 64, at];
    }
    for r in records {
        let end = r.offset + 32 + r.payload_len as u64;
        if at >= r.offset && at < end {
            return vec![r.offset];
        }
    }
    vec![at]
}

#[test]
fn every_sampled_bit_flip_in_a_log_is_reported_at_its_file_offset_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let segs = build(dir.path());
    assert!(
        inspect::verify(dir.path())
            .unwrap()
            .iter()
            .all(|p| p.severity == inspect::Severity::Notice)
    );
    let mut checked = 0;
    for seg in &segs {
        let size = std::fs::metadata(seg).unwrap().len();
        let records = inspect::records(seg).unwrap();
        // Every 53rd byte, plus every byte of the first record, the offset index and trailer
        // of the sealed segment.
        let mut offsets: Vec<u64> = (0..size).step_by(53).collect();
        offsets.extend(64..64 + 40);
        offsets.extend(size - 64 - 4 * records.len() as u64..size);
        for at in offsets {
            let bit = (at % 8) as u8;
            let want = expected_offsets(seg, &records, at);
            flip_bit(seg, at, bit);
            let problems = inspect::verify(dir.path()).unwrap();
            let hit = problems
                .iter()
                .find(|p| p.file == *seg && p.offset.is_some_and(|o| want.contains(&o)));
            flip_bit(seg, at, bit);
            let Some(hit) = hit else {
                panic!(
                    "flip at {}:{at} not reported at {want:?}; got {problems:#?}",
                    seg.display()
                );
            };
            // A flip inside a record names the record's index.
            if let Some(r) = records.iter().find(|r| r.offset == want[0] && at >= 64) {
                assert_eq!(hit.index, Some(r.index), "flip at {at}: {hit}");
            }
            checked += 1;
        }
    }
    assert!(checked > 2000, "{checked}");
    assert!(
        inspect::verify(dir.path())
            .unwrap()
            .iter()
            .all(|p| p.severity == inspect::Severity::Notice)
    );
}

#[test]
fn inspect_dir_lists_segments_durable_point_hard_state_and_snapshots_of_a_live_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = Storage::open(dir.path(), opts("never", SEG)).unwrap();
    append_range(&mut st.wal, 1, 600, 1, 200);
    st.wal.sync().unwrap();
    append_range(&mut st.wal, 601, 610, 1, 200);
    st.hard_state
        .save(&HardState {
            current_term: LogTerm(4),
            voted_for: 2,
            commit_index: LogIndex(7),
        })
        .unwrap();
    st.snapshots
        .install(LogIndex(100), LogTerm(1), b"m", &b"data"[..])
        .unwrap();
    // The node is live (lock held): the inspector neither needs nor takes the lock.
    let info = inspect::inspect_dir(dir.path()).unwrap();
    assert!(info.lock_held);
    assert_eq!(info.lock_pid, Some(std::process::id()));
    assert_eq!(info.durable_index, Some(LogIndex(600)));
    let first = &info.segments[0];
    assert!(first.sealed && first.footer == inspect::FooterStatus::Valid);
    assert_eq!(first.first.map(|f| f.0), Some(LogIndex(1)));
    let open = info
        .segments
        .iter()
        .find(|s| !s.sealed && s.record_count > 0)
        .unwrap();
    assert_eq!(open.last.map(|l| l.0), Some(LogIndex(610)));
    let hs = info.hard_state.unwrap().unwrap().current.unwrap();
    assert_eq!(
        (hs.current_term, hs.voted_for, hs.commit_index),
        (LogTerm(4), 2, LogIndex(7))
    );
    assert_eq!(info.snapshots.len(), 1);
    assert_eq!(
        info.snapshots[0].meta.as_ref().unwrap().last_index,
        LogIndex(100)
    );
    // Records of a segment with their payloads and checksums.
    let recs = inspect::records(&first.path).unwrap();
    assert_eq!(recs[0].payload, payload(1, 200));
    assert!(recs.iter().all(|r| r.checksum_ok));
    // Live directory: unsynced tail present but not a problem beyond a torn-tail note at most.
    let problems = inspect::verify(dir.path()).unwrap();
    assert!(
        problems
            .iter()
            .all(|p| p.severity != inspect::Severity::Corruption),
        "{problems:?}"
    );
}
