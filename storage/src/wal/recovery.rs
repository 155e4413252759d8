//! Recovery of the log at open, in named phases: list the segment files, recover each segment
//! in sequence order, remove what lies after the log, apply the compaction point, make what was
//! kept durable. The active segment is opened by [`super::Wal::open`].
//!
//! Every crash case of docs/FORMAT.md ("Crash cases", R1-R14) is decided in exactly one place,
//! named with its number; per segment, [`decide_segment`] is the table.

use super::{Scan, SegEntry, corrupt, scan_records};
use crate::error::{Result, StorageError};
use crate::format::{self, SEGMENT_HEADER_BYTES, TRAILER_BYTES, Trailer};
use crate::ledger::LedgerView;
use crate::segment::Segment;
use crate::sys::{self, Faults};
use crate::types::{LogIndex, LogTerm};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

/// Phase 1: the segment files of `dir` in sequence order. R1: a segment still being prepared
/// (`*.tmp`) when the process died was never acknowledged and is removed.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| StorageError::io("listing", dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| StorageError::io("listing", dir, e))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if name.starts_with("seg-") && name.ends_with(format::TMP_SUFFIX) {
            tracing::info!(file = %name, "removing a segment that was being prepared");
            let _ = std::fs::remove_file(ent.path());
            continue;
        }
        if let Some(seq) = format::parse_segment_file_name(&name) {
            found.push((seq, ent.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// How far each segment was synced, from the sync ledger read at open.
pub(super) struct SyncedPoints<'a> {
    ledger: Option<&'a LedgerView>,
}

impl<'a> SyncedPoints<'a> {
    pub(super) fn new(ledger: Option<&'a LedgerView>) -> Self {
        SyncedPoints { ledger }
    }

    /// Whether the durable point is known (R11: it is not when the ledger was missing).
    fn known(&self) -> bool {
        self.ledger.is_some()
    }

    /// Bytes of segment `seq` covered by a completed sync: the ledger's offset, the whole file
    /// for a segment without a slot. With no ledger (R11), open segments count as synced up to
    /// their header only (sealed footers still prove themselves).
    fn of(&self, seq: u64, bytes: u64) -> u64 {
        match self.ledger {
            Some(v) => v.segment_synced_bytes.get(&seq).copied().unwrap_or(bytes),
            None => SEGMENT_HEADER_BYTES,
        }
    }

    fn has_slot(&self, seq: u64) -> bool {
        self.ledger
            .is_some_and(|v| v.segment_synced_bytes.contains_key(&seq))
    }
}

/// Where recovery stands while it walks the segments in order.
struct Cursor {
    /// Index the next record must carry (`None` before the first record).
    expect: Option<LogIndex>,
    prev_term: LogTerm,
    /// Set once a segment was recovered by scanning (the log ends in it): the file and the
    /// first index not kept.
    torn_at: Option<(PathBuf, LogIndex)>,
}

/// The crash case one segment is in (docs/FORMAT.md "Crash cases"); refusals (R2, R5, R7 and
/// synced records after a torn tail) are the errors of [`decide_segment`].
enum SegmentCase {
    /// R3 (sealed and synced to its end, or no ledger: R11), or R4 with a footer that every
    /// record agrees with: trusted from its footer.
    Sealed { trailer: Trailer, synced: u64 },
    /// An open segment, or R4 with a footer not backed by its records: the records were
    /// scanned and the log ends where the scan stopped, after the synced offset (R6 when it
    /// stopped at a damaged record: a torn tail).
    Scanned { scan: Scan, synced: u64 },
    /// R6: a segment after the torn tail, holding no synced records: removed.
    AfterTornTail,
}

/// Reads and checks a segment's header (R2: headers are synced before the file is renamed into
/// place, so a bad one is corruption) and maps the file.
fn map_segment(path: &Path, seq: u64) -> Result<Segment> {
    let file = std::fs::File::open(path).map_err(|e| StorageError::io("opening", path, e))?;
    let mut hb = [0u8; 64];
    let n = sys::pread_full(&file, &mut hb, 0).map_err(|e| StorageError::io("reading", path, e))?;
    let header = format::decode_segment_header(&hb[..n]).map_err(|p| {
        corrupt(
            path,
            0,
            None,
            "a valid segment header (it is synced before the file is renamed into place)".into(),
            p.to_string(),
        )
    })?;
    if header.seq != seq {
        return Err(corrupt(
            path,
            format::SEG_HDR_SEQ as u64,
            None,
            format!("segment sequence {seq} (from the file name)"),
            header.seq.to_string(),
        ));
    }
    drop(file);
    Segment::map_existing(path, seq, header.segment_bytes, header.seed)
}

/// Whether `scan` backs footer `t` completely: every record, the chain checksum and the offset
/// index agree (R4).
fn footer_agrees(seg: &Segment, t: &Trailer, scan: &Scan) -> bool {
    let mut idx = Vec::with_capacity(scan.offsets.len() * 4);
    for o in &scan.offsets {
        idx.extend_from_slice(&o.to_le_bytes());
    }
    scan.offsets.len() as u64 == t.record_count as u64
        && scan.end == t.records_end
        && scan.chain.clone().finalize() == t.chain_crc
        && format::crc_seeded(seg.seed, &idx) == t.offsets_crc
        && seg.slice(t.offsets_start(seg.bytes), idx.len() as u64) == Some(&idx[..])
        && scan.last == Some((t.last_index, t.last_term))
}

/// The crash-case table, per segment: decides which case of docs/FORMAT.md ("Crash cases")
/// `seg` is in, given what recovery found before it.
///
/// | case | state | decision |
/// |---|---|---|
/// | R6 (later) | after a torn tail | no synced records: removed; synced records: refused |
/// | R3 | valid trailer, synced to its end (or no ledger, R11) | sealed, trusted |
/// | R4 | valid trailer, not synced to its end | scanned: sealed if the records back the footer, else as open |
/// | R7 | damaged trailer, synced to its end | refused |
/// | R5 | scan stopped before the synced offset | refused |
/// | R6 | scan stopped at or after the synced offset | the log ends there (torn tail) |
fn decide_segment(seg: &Segment, points: &SyncedPoints<'_>, cur: &Cursor) -> Result<SegmentCase> {
    let synced = points.of(seg.seq, seg.bytes);
    if let Some((tp, ti)) = &cur.torn_at {
        // R6, later segments: a sync covers older segments first, so everything after a torn
        // tail is unsynced debris or an empty prepared segment; synced records here would
        // mean a hole in the log.
        let scan = scan_records(seg, None, LogTerm(0));
        if !scan.offsets.is_empty() && synced > SEGMENT_HEADER_BYTES {
            return Err(corrupt(
                &seg.path,
                SEGMENT_HEADER_BYTES,
                Some(*ti),
                format!(
                    "no synced records after the torn tail in {} (index {ti})",
                    tp.display()
                ),
                format!("segment synced up to byte {synced}"),
            ));
        }
        return Ok(SegmentCase::AfterTornTail);
    }
    let tb = seg
        .slice(seg.bytes - TRAILER_BYTES, TRAILER_BYTES)
        .unwrap_or(&[]);
    let trailer_problem = match format::decode_trailer(seg.seed, tb, seg.bytes) {
        // R3, and R11: with no ledger the footer is trusted as before the ledger existed.
        Ok(trailer) if !points.known() || synced >= seg.bytes => {
            let synced = if points.known() { synced } else { seg.bytes };
            return Ok(SegmentCase::Sealed { trailer, synced });
        }
        // R4: the footer page may have reached the disk while an earlier page did not
        // (fault-matrix rows S2, S3 of docs/FAULTS.md); it proves the segment only if every record
        // agrees with it.
        Ok(trailer) => {
            let scan = scan_records(seg, cur.expect, cur.prev_term);
            if footer_agrees(seg, &trailer, &scan) {
                return Ok(SegmentCase::Sealed { trailer, synced });
            }
            return decide_scanned(seg, synced, scan, cur);
        }
        Err(why) => why,
    };
    // A segment the ledger does not know and that was never sealed (trailer area all zeros)
    // is a prepared segment whose activation had not reached the ledger: only its header was
    // synced (records need a slot first).
    let never_sealed = tb.iter().all(|&b| b == 0);
    let synced = if never_sealed && !points.has_slot(seg.seq) {
        SEGMENT_HEADER_BYTES
    } else {
        synced
    };
    if points.known() && synced >= seg.bytes {
        // R7.
        return Err(corrupt(
            &seg.path,
            seg.bytes - TRAILER_BYTES,
            cur.expect,
            "the footer of a sealed, synced segment".into(),
            trailer_problem,
        ));
    }
    let scan = scan_records(seg, cur.expect, cur.prev_term);
    decide_scanned(seg, synced, scan, cur)
}

/// R5 or R6 for a scanned segment: where the scan stopped against the synced offset.
fn decide_scanned(seg: &Segment, synced: u64, scan: Scan, cur: &Cursor) -> Result<SegmentCase> {
    if scan.end < synced {
        // R5: damage in synced bytes is never a torn write.
        return Err(corrupt(
            &seg.path,
            scan.end,
            cur.expect
                .or(Some(LogIndex(1)))
                .map(|e| LogIndex(e.0 + scan.offsets.len() as u64)),
            scan.stop_reason
                .clone()
                .unwrap_or_else(|| "a record (this byte range was synced)".into()),
            "zeros or an invalid record".into(),
        ));
    }
    Ok(SegmentCase::Scanned { scan, synced })
}

/// Keeps a sealed segment (R3, R4 backed), after checking it continues the log.
fn keep_sealed(
    mut seg: Segment,
    trailer: Trailer,
    synced: u64,
    cur: &mut Cursor,
) -> Result<SegEntry> {
    if let Some(e) = cur.expect {
        if trailer.first_index != e || trailer.first_term < cur.prev_term {
            return Err(corrupt(
                &seg.path,
                seg.bytes - TRAILER_BYTES,
                Some(e),
                format!(
                    "a segment starting at index {e} with term >= {}",
                    cur.prev_term
                ),
                format!("index {} term {}", trailer.first_index, trailer.first_term),
            ));
        }
    }
    cur.expect = Some(trailer.last_index.next());
    cur.prev_term = trailer.last_term;
    seg.release_fd();
    seg.sealed.store(true, Ordering::Release);
    seg.publish(seg.bytes, trailer.last_index.0);
    seg.synced.store(synced.min(seg.bytes), Ordering::Release);
    Ok(SegEntry {
        seg: std::sync::Arc::new(seg),
        first: trailer.first_index,
        last: trailer.last_index,
        sealed_offsets: OnceLock::new(),
        trailer: Some(trailer),
    })
}

/// Keeps a scanned segment: the log ends where its scan stopped (R6 when at a damaged record).
fn keep_scanned(
    seg: Segment,
    scan: &Scan,
    synced: u64,
    cur: &mut Cursor,
    compacted_index: LogIndex,
) -> SegEntry {
    let first = match (scan.offsets.is_empty(), cur.expect) {
        (_, Some(e)) => e,
        (false, None) => {
            LogIndex(scan.last.map(|l| l.0.0).unwrap_or(1) + 1 - scan.offsets.len() as u64)
        }
        (true, None) => compacted_index.next(),
    };
    let last = scan.last.map(|l| l.0).unwrap_or(first.prev());
    if let Some(r) = &scan.stop_reason {
        tracing::warn!(file = %seg.path.display(), offset = scan.end, reason = %r,
            "torn tail after the durable point: truncating the log at index {}", last.next());
    }
    if let Some((_, t)) = scan.last {
        cur.prev_term = t;
    }
    cur.expect = Some(last.next());
    cur.torn_at = Some((seg.path.clone(), last.next()));
    seg.synced.store(synced.min(scan.end), Ordering::Release);
    seg.publish(scan.end, last.0);
    SegEntry {
        seg: std::sync::Arc::new(seg),
        first,
        last,
        sealed_offsets: OnceLock::new(),
        trailer: None,
    }
}

/// What phase 2 recovered.
pub(super) struct Recovered {
    pub(super) segs: Vec<SegEntry>,
    /// The scan of the segment the log ends in, when it has no trusted footer: it becomes the
    /// active segment.
    pub(super) active_scan: Option<Scan>,
    /// Term of the last record kept.
    pub(super) prev_term: LogTerm,
    /// Files removed after the log (R6, R10).
    pub(super) removed: Vec<PathBuf>,
}

/// Phase 2: recovers each segment in order (storage rules 12, 13 of docs/RULES.md), deciding its
/// crash case, then removes the segments after the log (R6) and the empty ones at its end (R10).
pub(super) fn recover_segments(
    dir: &Path,
    found: Vec<(u64, PathBuf)>,
    points: &SyncedPoints<'_>,
    compacted_index: LogIndex,
    faults: &Faults,
) -> Result<Recovered> {
    let mut cur = Cursor {
        expect: None,
        prev_term: LogTerm(0),
        torn_at: None,
    };
    let mut rec = Recovered {
        segs: Vec::new(),
        active_scan: None,
        prev_term: LogTerm(0),
        removed: Vec::new(),
    };
    for (seq, path) in found {
        let seg = map_segment(&path, seq)?;
        match decide_segment(&seg, points, &cur)? {
            SegmentCase::AfterTornTail => rec.removed.push(path),
            SegmentCase::Sealed { trailer, synced } => {
                rec.segs.push(keep_sealed(seg, trailer, synced, &mut cur)?)
            }
            SegmentCase::Scanned { scan, synced } => {
                rec.segs
                    .push(keep_scanned(seg, &scan, synced, &mut cur, compacted_index));
                rec.active_scan = Some(scan);
            }
        }
    }
    rec.prev_term = cur.prev_term;
    for p in &rec.removed {
        tracing::info!(file = %p.display(), "removing an unsynced segment after the torn tail");
        std::fs::remove_file(p).map_err(|e| StorageError::io("removing", p, e))?;
    }
    // R10: empty segments (prepared but never used) are removed; a fresh one is prepared.
    while rec
        .segs
        .last()
        .is_some_and(|s| s.last < s.first && s.trailer.is_none())
    {
        let s = rec.segs.pop().expect("checked non-empty");
        std::fs::remove_file(&s.seg.path)
            .map_err(|e| StorageError::io("removing", &s.seg.path, e))?;
        rec.removed.push(s.seg.path.clone());
        rec.active_scan = None;
    }
    if !rec.removed.is_empty() {
        sys::fsync_dir(dir, faults).map_err(StorageError::Fatal)?;
    }
    Ok(rec)
}

/// Phase 3: applies the compaction point. R8: the log must start at or before
/// `compacted + 1`. R9: segments wholly at or below it are removed (storage rule 14
/// of docs/RULES.md: it was recorded before segments were deleted, so finishing an interrupted
/// compaction is safe).
pub(super) fn apply_compaction_point(
    rec: &mut Recovered,
    compacted_index: LogIndex,
    dir: &Path,
    faults: &Faults,
) -> Result<()> {
    if let Some(first_seg) = rec.segs.first() {
        if first_seg.first > compacted_index.next() {
            return Err(corrupt(
                &first_seg.seg.path,
                SEGMENT_HEADER_BYTES,
                Some(first_seg.first),
                format!(
                    "the log to start at or before index {} (compaction point {compacted_index})",
                    compacted_index.next()
                ),
                format!("first record index {}", first_seg.first),
            ));
        }
    }
    let log_last = rec.segs.last().map(|s| s.last);
    let mut below = Vec::new();
    if log_last.is_some_and(|l| l <= compacted_index) {
        below = std::mem::take(&mut rec.segs);
        rec.active_scan = None;
    } else {
        while rec.segs.len() > 1 && rec.segs[0].last <= compacted_index {
            below.push(rec.segs.remove(0));
        }
    }
    for s in &below {
        std::fs::remove_file(&s.seg.path)
            .map_err(|e| StorageError::io("removing", &s.seg.path, e))?;
    }
    if !below.is_empty() {
        sys::fsync_dir(dir, faults).map_err(StorageError::Fatal)?;
    }
    Ok(())
}

/// Phase 4: zeroes the torn area (R6) and makes what recovery kept durable (R14: after a
/// process crash it may be only in the page cache).
pub(super) fn make_durable(rec: &Recovered, faults: &Faults) -> Result<()> {
    if let (Some(scan), Some(last)) = (&rec.active_scan, rec.segs.last()) {
        // SAFETY: we are the only writer (directory locked, no other thread has the
        // segment yet) and hold no borrow of the range.
        unsafe { last.seg.zero_range(scan.end, last.seg.bytes) };
    }
    for s in &rec.segs {
        let written = s.seg.written.load(Ordering::Acquire);
        let to = s.seg.bytes;
        let from = s.seg.synced.load(Ordering::Acquire).min(written);
        sys::msync(s.seg.map(), from, to - from, &s.seg.path, faults)
            .map_err(StorageError::Fatal)?;
        s.seg.synced.store(written, Ordering::Release);
    }
    Ok(())
}
