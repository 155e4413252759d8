//! Read-only inspection of a data directory, a segment, a snapshot or a hard-state file, for
//! `raft-dump`.
//!
//! **API Boundary:** safe on a live node's directory: takes no lock, maps nothing, writes
//! nothing. Files are read with `pread` into owned buffers and every length is bounds-checked
//! before it is used, so a file that is truncated, zeroed, random or shrinking while it is read
//! produces problems, never a panic (storage rules 3, 7 of docs/RULES.md).
//!
//! [`verify`] checks every record checksum, every footer checksum, every padding byte and every
//! byte that must be zero, so a single flipped bit anywhere in a log is reported with its file,
//! byte offset and (when known) log index.

use crate::error::{Result, StorageError};
use crate::format::{
    self, HARD_STATE_FILE, HARD_STATE_MAGIC, LOG_META_FILE, LOG_META_MAGIC, OFFSET_ENTRY_BYTES,
    RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, SLOT_FILE_BYTES, SegmentHeader, TRAILER_BYTES,
    Trailer,
};
use crate::ledger::{LedgerView, read_ledger};
use crate::lock::parse_lock_pid;
use crate::slotfile;
use crate::snapshot::{SnapshotMeta, read_snapshot_meta};
use crate::sys;
use crate::types::{EntryKind, LogIndex, LogTerm};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Largest file the inspector reads whole (a segment is at most 2 GiB).
const FILE_BYTES_MAX: u64 = crate::wal::SEGMENT_BYTES_MAX;

/// Reads a whole file (bounded), tolerating it shrinking meanwhile.
fn read_file(path: &Path) -> Result<Vec<u8>> {
    let f = File::open(path).map_err(|e| StorageError::io("opening", path, e))?;
    let len = f
        .metadata()
        .map_err(|e| StorageError::io("stat", path, e))?
        .len();
    let mut buf = vec![0u8; len.min(FILE_BYTES_MAX) as usize];
    let n = sys::pread_full(&f, &mut buf, 0).map_err(|e| StorageError::io("reading", path, e))?;
    buf.truncate(n);
    Ok(buf)
}

/// How serious a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Damage recovery refuses to start with (or a broken structure).
    Corruption,
    /// Unsynced bytes after the durable point that recovery will truncate (a torn tail).
    TornTail,
    /// Recovery would end the log at unsynced damage (or a torn write: nothing after that point
    /// was synced, so the two cannot be told apart) and discard intact records that follow it.
    /// The problem's `discards` says how many.
    WouldDiscard,
    /// Worth knowing, harmless (an unsynced hard-state slot, a `.broken` snapshot kept aside).
    Notice,
}

/// One finding of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub file: PathBuf,
    /// Byte offset in `file`, when the problem has one.
    pub offset: Option<u64>,
    /// Log index concerned, when known.
    pub index: Option<LogIndex>,
    pub reason: String,
    /// For [`Severity::WouldDiscard`]: the intact records recovery would throw away.
    pub discards: Option<Discards>,
}

/// Intact records recovery would discard after the point where it ends the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discards {
    /// How many records (valid checksum and header) follow the cut.
    pub records: u64,
    /// Lowest and highest index among them.
    pub first_index: Option<LogIndex>,
    pub last_index: Option<LogIndex>,
    /// Segment files they lie in.
    pub files: usize,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.severity, self.file.display())?;
        if let Some(o) = self.offset {
            write!(f, " at byte {o}")?;
        }
        if let Some(i) = self.index {
            write!(f, " (index {i})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Whether a segment has a valid footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FooterStatus {
    /// Sealed: the trailer and its offset index check out.
    Valid,
    /// No footer (the trailer area is zero): an open segment.
    Missing,
    /// A damaged footer: why.
    Invalid(String),
}

/// Summary of one segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub path: PathBuf,
    pub file_bytes: u64,
    /// The decoded header, or why it is invalid.
    pub header: Result<SegmentHeader, String>,
    pub footer: FooterStatus,
    /// Whether the segment is sealed (valid footer).
    pub sealed: bool,
    /// First and last index/term of its valid records (from the footer when sealed).
    pub first: Option<(LogIndex, LogTerm)>,
    pub last: Option<(LogIndex, LogTerm)>,
    pub record_count: u64,
    /// End of the last valid record.
    pub records_end: u64,
    /// Synced bytes according to the sync ledger (None: no ledger information; for a segment
    /// absent from a readable ledger this is its full size).
    pub synced_bytes: Option<u64>,
}

/// One record as found in a segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordInfo {
    pub offset: u64,
    pub index: LogIndex,
    pub term: LogTerm,
    pub kind: EntryKind,
    pub payload_len: u32,
    pub payload: Vec<u8>,
    pub stored_crc: u32,
    pub checksum_ok: bool,
}

/// A snapshot file and its verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub path: PathBuf,
    /// Metadata, or why the file is not a valid snapshot.
    pub meta: Result<SnapshotMeta, String>,
    /// `.partial` (being written or left by a crash) or `.broken` (kept aside).
    pub partial: bool,
    pub broken: bool,
}

/// The hard state as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardStateInfo {
    pub path: PathBuf,
    pub current: Option<crate::hardstate::HardState>,
    pub generation: u64,
    /// Each slot: generation or why it is invalid.
    pub slots: [Result<u64, String>; 2],
}

/// Everything about a data directory.
#[derive(Debug, Clone)]
pub struct DirInfo {
    pub dir: PathBuf,
    /// Pid written in the lock file and whether a process holds the lock now.
    pub lock_pid: Option<u32>,
    pub lock_held: bool,
    pub segments: Vec<SegmentInfo>,
    /// The sync ledger (None: absent), or why it is unreadable.
    pub ledger: Result<Option<LedgerView>, String>,
    pub hard_state: Option<Result<HardStateInfo, String>>,
    /// Compaction point (index, term) from `log.meta`.
    pub compacted: Option<Result<(LogIndex, LogTerm), String>>,
    pub snapshots: Vec<SnapshotInfo>,
    /// Last index of the log covered by a completed sync, per the ledger.
    pub durable_index: Option<LogIndex>,
}

// ---------------------------------------------------------------------------------------------
// Segment parsing over an owned buffer.
// ---------------------------------------------------------------------------------------------

struct Parsed {
    info: SegmentInfo,
    records: Vec<RecordInfo>,
    problems: Vec<Problem>,
    /// Where recovery would end the log in this segment as a torn tail, if it would.
    cut: Option<Cut>,
}

fn trailer_of(buf: &[u8], h: &SegmentHeader) -> (FooterStatus, Option<Trailer>) {
    let len = buf.len() as u64;
    if len < h.segment_bytes || h.segment_bytes < SEGMENT_HEADER_BYTES + TRAILER_BYTES {
        return (FooterStatus::Missing, None);
    }
    let tb = &buf[(h.segment_bytes - TRAILER_BYTES) as usize..h.segment_bytes as usize];
    if tb.iter().all(|&b| b == 0) {
        return (FooterStatus::Missing, None);
    }
    match format::decode_trailer(h.seed, tb, h.segment_bytes) {
        Ok(t) => {
            let start = t.offsets_start(h.segment_bytes) as usize;
            let idx = &buf[start..start + (OFFSET_ENTRY_BYTES * t.record_count as u64) as usize];
            let crc = format::crc_seeded(h.seed, idx);
            if crc != t.offsets_crc {
                (
                    FooterStatus::Invalid(format!(
                        "offset index checksum {crc:#010x}, trailer says {:#010x}",
                        t.offsets_crc
                    )),
                    Some(t),
                )
            } else {
                (FooterStatus::Valid, Some(t))
            }
        }
        Err(e) => (FooterStatus::Invalid(e), None),
    }
}

fn record_info(v: &format::RecordView<'_>, checksum_ok: bool, keep_payload: bool) -> RecordInfo {
    RecordInfo {
        offset: v.offset,
        index: v.header.index,
        term: v.header.term,
        kind: v.header.kind,
        payload_len: v.header.payload_len,
        payload: if keep_payload {
            v.payload.to_vec()
        } else {
            Vec::new()
        },
        stored_crc: v.header.crc,
        checksum_ok,
    }
}

fn first_nonzero(b: &[u8]) -> Option<usize> {
    b.iter().position(|&x| x != 0)
}

/// Where recovery would end the log inside a segment without taking it as damage (a torn tail
/// after the durable point), and what it would throw away after that point in this segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cut {
    /// Byte offset of the first record recovery would not keep.
    offset: u64,
    /// The index that record should have carried.
    index: Option<LogIndex>,
    /// Intact records found after the cut in this segment.
    intact: Intact,
}

/// Intact (self-consistent, checksum-valid) records found in a byte range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Intact {
    count: u64,
    first: Option<LogIndex>,
    last: Option<LogIndex>,
}

impl Intact {
    fn add(&mut self, other: Intact) {
        self.count += other.count;
        self.first = self.first.or(other.first);
        self.last = other.last.or(self.last);
    }
}

/// Counts the records after `from` that are valid on their own (checksum, header, length;
/// [`format::check_record`] with no expected index): what recovery would discard if it ended
/// the log at `from`. Resynchronises on 8-byte boundaries after anything that is not a record.
fn intact_records_after(buf: &[u8], seed: u32, from: u64, area_end: u64) -> Intact {
    let mut found = Intact::default();
    let mut at = from;
    while at + RECORD_HEADER_BYTES <= area_end {
        let rules = format::RecordRules {
            expect: None,
            prev_term: LogTerm(0),
            area_end,
            index_room: 0,
        };
        match format::check_record(buf, seed, at, &rules) {
            format::RecordCheck::Valid(v) => {
                found.count += 1;
                found.first.get_or_insert(v.header.index);
                found.last = Some(v.header.index);
                at += v.bytes;
            }
            _ => {
                // Skip zeros quickly: the next candidate is the next non-zero aligned word.
                let rest = buf.get(at as usize + 8..area_end.min(buf.len() as u64) as usize);
                match rest.and_then(first_nonzero) {
                    Some(p) => at = (at + 8 + p as u64) & !(format::RECORD_ALIGN - 1),
                    None => break,
                }
            }
        }
    }
    found
}

/// State of parsing one segment buffer.
struct SegParse<'a> {
    path: &'a Path,
    buf: &'a [u8],
    h: SegmentHeader,
    /// Bytes covered by a completed sync: damage before it is corruption, after it a torn tail.
    synced: u64,
    keep_payloads: bool,
    info: SegmentInfo,
    records: Vec<RecordInfo>,
    problems: Vec<Problem>,
    cut: Option<Cut>,
}

impl SegParse<'_> {
    fn prob(&mut self, severity: Severity, offset: u64, index: Option<LogIndex>, reason: String) {
        self.problems.push(Problem {
            severity,
            file: self.path.to_path_buf(),
            offset: Some(offset),
            index,
            reason,
            discards: None,
        });
    }

    fn severity_at(&self, offset: u64) -> Severity {
        if offset < self.synced {
            Severity::Corruption
        } else {
            Severity::TornTail
        }
    }

    /// Reports what is wrong with record `v` of a sealed segment walked by its footer (which
    /// says it holds `index` and that no term exceeds `last_term`); records where recovery
    /// would cut the log for it.
    fn sealed_record_faults(
        &mut self,
        v: &format::RecordView<'_>,
        fault: Option<format::RecordFault>,
        index: LogIndex,
        last_term: LogTerm,
        area_end: u64,
    ) {
        let mut faults: Vec<String> = fault.iter().map(|f| f.to_string()).collect();
        if v.header.term > last_term {
            faults.push(format!(
                "term {} above the trailer's last term {last_term}",
                v.header.term
            ));
        }
        for f in faults {
            self.prob(self.severity_at(v.offset), v.offset, Some(index), f);
            self.cut_at(v.offset, v.offset + v.bytes, Some(index), area_end);
        }
    }

    /// Reports a non-zero padding byte after the payload of `v`.
    fn check_padding(&mut self, v: &format::RecordView<'_>) {
        let pad_from = v.offset + RECORD_HEADER_BYTES + v.header.payload_len as u64;
        let pad = &self.buf[pad_from as usize..(v.offset + v.bytes) as usize];
        if let Some(z) = first_nonzero(pad) {
            let o = pad_from + z as u64;
            self.prob(
                self.severity_at(o),
                o,
                Some(v.header.index),
                "non-zero padding byte after the payload".into(),
            );
        }
    }

    /// Compares the offset-index entry at `entry_at` with the true position of record
    /// `index`; reports the first differing byte. Returns whether they agree.
    fn check_offset_entry(&mut self, entry_at: u64, index: LogIndex, real_at: u64) -> bool {
        let o = format::get_u32(self.buf, entry_at as usize) as u64;
        if o == real_at {
            return true;
        }
        let want = (real_at as u32).to_le_bytes();
        let have = (o as u32).to_le_bytes();
        let byte = (0..4).find(|&i| want[i] != have[i]).unwrap_or(0) as u64;
        self.prob(
            self.severity_at(entry_at + byte),
            entry_at + byte,
            Some(index),
            format!("offset index entry says record {index} is at byte {o}, it is at {real_at}"),
        );
        false
    }

    fn done(self) -> Parsed {
        Parsed {
            info: self.info,
            records: self.records,
            problems: self.problems,
            cut: self.cut,
        }
    }

    /// Records where recovery would cut the log at `offset` (a torn tail), counting what
    /// follows it up to `area_end`.
    fn cut_at(&mut self, offset: u64, resume: u64, index: Option<LogIndex>, area_end: u64) {
        if self.cut.is_none() && self.severity_at(offset) == Severity::TornTail {
            let intact = intact_records_after(self.buf, self.h.seed, resume, area_end);
            self.cut = Some(Cut {
                offset,
                index,
                intact,
            });
        }
    }
}

fn parse_segment(
    path: &Path,
    buf: &[u8],
    synced: Option<u64>,
    keep_payloads: bool,
    expect_first: Option<LogIndex>,
) -> Parsed {
    let file_bytes = buf.len() as u64;
    let mut info = SegmentInfo {
        path: path.to_path_buf(),
        file_bytes,
        header: Err(String::new()),
        footer: FooterStatus::Missing,
        sealed: false,
        first: None,
        last: None,
        record_count: 0,
        records_end: SEGMENT_HEADER_BYTES,
        synced_bytes: synced,
    };
    let h = match format::decode_segment_header(buf) {
        Ok(h) => h,
        Err(p) => {
            info.header = Err(p.to_string());
            let problems = vec![Problem {
                severity: Severity::Corruption,
                file: path.to_path_buf(),
                offset: Some(0),
                index: None,
                reason: format!("bad segment header: {p}"),
                discards: None,
            }];
            return Parsed {
                info,
                records: Vec::new(),
                problems,
                cut: None,
            };
        }
    };
    info.header = Ok(h);
    let mut p = SegParse {
        path,
        buf,
        h,
        synced: synced.unwrap_or(SEGMENT_HEADER_BYTES),
        keep_payloads,
        info,
        records: Vec::new(),
        problems: Vec::new(),
        cut: None,
    };
    if file_bytes != h.segment_bytes {
        p.prob(
            Severity::Corruption,
            file_bytes.min(h.segment_bytes),
            None,
            format!(
                "file is {file_bytes} bytes, header says {}",
                h.segment_bytes
            ),
        );
    }
    let (footer, trailer) = trailer_of(buf, &h);
    p.info.footer = footer.clone();
    match trailer {
        Some(t) => walk_sealed(&mut p, &t, footer == FooterStatus::Valid, synced),
        None => {
            if let FooterStatus::Invalid(why) = &footer {
                let seg_bytes = h.segment_bytes.min(file_bytes);
                let sev = if synced.is_some_and(|s| s >= seg_bytes) {
                    Severity::Corruption
                } else {
                    Severity::TornTail
                };
                p.prob(
                    sev,
                    seg_bytes.saturating_sub(TRAILER_BYTES),
                    None,
                    format!("damaged footer: {why}"),
                );
            }
            scan_open(&mut p, expect_first);
        }
    }
    p.done()
}

/// Walks a segment with a decoded trailer by record lengths and compares every offset-index
/// entry with the true position, so a flipped bit in the index is reported at its byte. When a
/// record is unreadable, a valid index says where the next one starts.
fn walk_sealed(p: &mut SegParse<'_>, t: &Trailer, offsets_ok: bool, synced: Option<u64>) {
    let (buf, h) = (p.buf, p.h);
    // Recovery trusts a footer when the segment was synced to its end or the durable point is
    // unknown (R3, R11): damage anywhere in it is corruption. Otherwise it scans the records
    // (R4), and damage after the synced offset is a torn tail.
    p.synced = synced.unwrap_or(u64::MAX);
    p.info.sealed = offsets_ok;
    let start = t.offsets_start(h.segment_bytes);
    let mut expect_at = SEGMENT_HEADER_BYTES;
    let mut chain = crc32fast::Hasher::new_with_initial(h.seed);
    let mut prev_term = t.first_term;
    let mut index_mismatch = false;
    for k in 0..t.record_count as u64 {
        let entry_at = start + k * 4;
        let index = LogIndex(t.first_index.0 + k);
        index_mismatch |= !p.check_offset_entry(entry_at, index, expect_at);
        let next_by_index = (k + 1 < t.record_count as u64)
            .then(|| format::get_u32(buf, (entry_at + 4) as usize) as u64);
        let rules = format::RecordRules {
            expect: Some(index),
            prev_term,
            area_end: t.records_end,
            index_room: 0,
        };
        let (view, fault) = match format::check_record(buf, h.seed, expect_at, &rules) {
            format::RecordCheck::Valid(v) => (Some(v), None),
            format::RecordCheck::Invalid { fault, record } => (record, Some(fault)),
            format::RecordCheck::End => (None, None),
        };
        let Some(v) = view else {
            let why = fault.map_or_else(
                || "zeros or no room for a record header".to_string(),
                |f| f.to_string(),
            );
            let sev = p.severity_at(expect_at);
            p.prob(
                sev,
                expect_at,
                Some(index),
                format!("unreadable record: {why}"),
            );
            p.cut_at(
                expect_at,
                expect_at + format::RECORD_ALIGN,
                Some(index),
                start,
            );
            if !offsets_ok {
                p.prob(
                    sev,
                    expect_at,
                    Some(index),
                    "offset index damaged too: the rest of this segment is unchecked".into(),
                );
                return;
            }
            chain.update(&format::get_u32(buf, expect_at as usize).to_le_bytes());
            expect_at = next_by_index.unwrap_or(t.records_end);
            continue;
        };
        chain.update(&v.header.crc.to_le_bytes());
        let crc_ok = !matches!(fault, Some(format::RecordFault::Checksum { .. }));
        p.sealed_record_faults(&v, fault, index, t.last_term, start);
        prev_term = v.header.term;
        p.check_padding(&v);
        let keep = p.keep_payloads || p.records.is_empty();
        p.records.push(record_info(&v, crc_ok, keep));
        // A corrupt length field would misplace the walk: trust the index when it is intact.
        expect_at = match next_by_index {
            Some(n) if offsets_ok && !crc_ok => n,
            _ => expect_at + v.bytes,
        };
    }
    sealed_footer_checks(
        p,
        t,
        offsets_ok && !index_mismatch,
        expect_at,
        chain.finalize(),
    );
}

/// The checks of a sealed segment's footer against the records walked.
fn sealed_footer_checks(
    p: &mut SegParse<'_>,
    t: &Trailer,
    report_offsets_crc: bool,
    records_end: u64,
    chain: u32,
) {
    let h = p.h;
    let start = t.offsets_start(h.segment_bytes);
    let trailer_at = h.segment_bytes - TRAILER_BYTES;
    if !p.info.sealed && report_offsets_crc {
        p.prob(
            p.severity_at(start),
            start,
            None,
            "offset index checksum mismatch".into(),
        );
    }
    if records_end != t.records_end {
        p.prob(
            p.severity_at(trailer_at),
            trailer_at,
            None,
            format!(
                "trailer says records end at {}, they end at {records_end}",
                t.records_end
            ),
        );
    }
    if chain != t.chain_crc {
        let at = trailer_at + format::TRL_CHAIN_CRC as u64;
        p.prob(
            p.severity_at(at),
            at,
            None,
            format!(
                "segment checksum (chain of record checksums) {chain:#010x}, trailer says {:#010x}",
                t.chain_crc
            ),
        );
    }
    let gap = t.records_end.min(start) as usize..start as usize;
    if let Some(z) = first_nonzero(&p.buf[gap.clone()]) {
        let o = gap.start as u64 + z as u64;
        p.prob(
            p.severity_at(o),
            o,
            None,
            "non-zero byte between the last record and the footer".into(),
        );
    }
    p.info.first = Some((t.first_index, t.first_term));
    p.info.last = Some((t.last_index, t.last_term));
    p.info.record_count = t.record_count as u64;
    p.info.records_end = t.records_end;
}

/// Scans an open (or footer-less) segment record by record, as recovery does, and says where
/// and why the records end.
fn scan_open(p: &mut SegParse<'_>, expect_first: Option<LogIndex>) {
    let (buf, h) = (p.buf, p.h);
    let seg_bytes = h.segment_bytes.min(buf.len() as u64);
    let area_end = seg_bytes.saturating_sub(TRAILER_BYTES);
    let mut at = SEGMENT_HEADER_BYTES;
    let mut expect = expect_first;
    let mut prev_term = LogTerm(0);
    let stop = loop {
        let rules = format::RecordRules {
            expect,
            prev_term,
            area_end,
            index_room: format::open_segment_index_room(p.info.record_count),
        };
        let v = match format::check_record(buf, h.seed, at, &rules) {
            format::RecordCheck::Valid(v) => v,
            format::RecordCheck::End => break None,
            format::RecordCheck::Invalid { fault, record } => break Some((fault, record)),
        };
        // Recovery ignores padding (the record checks out), so keep scanning.
        p.check_padding(&v);
        p.info.first.get_or_insert((v.header.index, v.header.term));
        p.info.last = Some((v.header.index, v.header.term));
        p.info.record_count += 1;
        expect = Some(v.header.index.next());
        prev_term = v.header.term;
        p.records.push(record_info(&v, true, p.keep_payloads));
        at += v.bytes;
    };
    p.info.records_end = at;
    report_scan_stop(p, stop, expect, seg_bytes, area_end);
}

/// Reports why and where the records of a scanned segment end (`stop`: the fault at
/// `records_end`, or `None` for zeros), and where recovery would cut the log.
fn report_scan_stop(
    p: &mut SegParse<'_>,
    stop: Option<(format::RecordFault, Option<format::RecordView<'_>>)>,
    expect: Option<LogIndex>,
    seg_bytes: u64,
    area_end: u64,
) {
    let buf = p.buf;
    let at = p.info.records_end;
    match stop {
        Some((fault, record)) => {
            let resume = match &record {
                Some(v) => at + v.bytes,
                None => at + format::RECORD_ALIGN,
            };
            // A damaged record header (several non-zero bytes: a record always has a checksum
            // and an index) is reported at its start; a lone non-zero byte in zeros at its own
            // offset (exact for a flipped bit).
            let header = buf
                .get(at as usize..(at + RECORD_HEADER_BYTES).min(seg_bytes) as usize)
                .unwrap_or(&[]);
            let lone_byte = header.iter().filter(|&&b| b != 0).count() < 2;
            let report_at = match &record {
                Some(_) => at,
                None if !lone_byte => at,
                None => {
                    at + buf
                        .get(at as usize..seg_bytes as usize)
                        .and_then(first_nonzero)
                        .unwrap_or(0) as u64
                }
            };
            if let Some(v) = record {
                let crc_ok = !matches!(fault, format::RecordFault::Checksum { .. });
                p.records.push(record_info(&v, crc_ok, true));
            }
            let sev = p.severity_at(report_at);
            let what = if sev == Severity::Corruption {
                "before the durable point"
            } else {
                "after the durable point: a torn tail recovery truncates"
            };
            p.prob(sev, report_at, expect, format!("{fault} ({what})"));
            p.cut_at(at, resume, expect, area_end);
        }
        None => {
            if let Some(z) = first_nonzero(&buf[at as usize..seg_bytes as usize]) {
                let o = at + z as u64;
                let sev = p.severity_at(o);
                p.prob(
                    sev,
                    o,
                    None,
                    if sev == Severity::Corruption {
                        "non-zero byte after the last record, inside the synced range".into()
                    } else {
                        "non-zero byte after the last record (unsynced debris recovery zeroes)"
                            .into()
                    },
                );
                p.cut_at(at, at + format::RECORD_ALIGN, expect, area_end);
            }
        }
    }
}

fn ledger_synced(
    ledger: &Result<Option<LedgerView>, String>,
    h: &Result<SegmentHeader, String>,
) -> Option<u64> {
    let (Ok(Some(l)), Ok(h)) = (ledger, h) else {
        return None;
    };
    Some(
        l.segment_synced_bytes
            .get(&h.seq)
            .copied()
            .unwrap_or(h.segment_bytes),
    )
}

/// Summary of one segment file (no ledger information).
pub fn segment_info(path: &Path) -> Result<SegmentInfo> {
    let buf = read_file(path)?;
    Ok(parse_segment(path, &buf, None, false, None).info)
}

/// Every record of a segment file, in order. For a sealed segment the footer's offset index is
/// followed (records after a damaged one are still listed); otherwise the scan stops at the
/// first thing that is not a plausible record (a record with a bad checksum is listed with
/// `checksum_ok: false`).
pub fn records(path: &Path) -> Result<Vec<RecordInfo>> {
    let buf = read_file(path)?;
    Ok(parse_segment(path, &buf, None, true, None).records)
}

fn segment_paths(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| StorageError::io("listing", dir, e))? {
        let e = e.map_err(|e| StorageError::io("listing", dir, e))?;
        if let Some(seq) = format::parse_segment_file_name(&e.file_name().to_string_lossy()) {
            v.push((seq, e.path()));
        }
    }
    v.sort();
    Ok(v)
}

/// Reads the hard-state file.
pub fn hard_state(path: &Path) -> Result<HardStateInfo> {
    let mut buf = read_file(path)?;
    buf.truncate(SLOT_FILE_BYTES as usize);
    let (s0, s1) = slotfile::decode_both(&HARD_STATE_MAGIC, &buf);
    let cur = slotfile::pick(&s0, &s1);
    Ok(HardStateInfo {
        path: path.to_path_buf(),
        current: cur.map(|(_, s)| crate::hardstate::HardState {
            current_term: LogTerm(s.a),
            voted_for: s.b,
            commit_index: LogIndex(s.c),
        }),
        generation: cur.map(|(_, s)| s.generation).unwrap_or(0),
        slots: [s0.map(|s| s.generation), s1.map(|s| s.generation)],
    })
}

fn log_meta(path: &Path) -> Result<(LogIndex, LogTerm), String> {
    let mut buf = read_file(path).map_err(|e| e.to_string())?;
    buf.truncate(SLOT_FILE_BYTES as usize);
    let (s0, s1) = slotfile::decode_both(&LOG_META_MAGIC, &buf);
    match slotfile::pick(&s0, &s1) {
        Some((_, s)) => Ok((LogIndex(s.a), LogTerm(s.b))),
        None => Err(format!(
            "no valid slot ({}; {})",
            s0.err().unwrap_or_default(),
            s1.err().unwrap_or_default()
        )),
    }
}

/// Everything about a data directory (segments, ledger, durable point, hard state, compaction
/// point, snapshots, lock). Reads footers, and scans only segments without one.
pub fn inspect_dir(dir: &Path) -> Result<DirInfo> {
    let lock_path = dir.join(format::LOCK_FILE);
    let lock_pid = std::fs::read_to_string(&lock_path)
        .ok()
        .and_then(|s| parse_lock_pid(&s));
    let lock_held = crate::lock::DirLock::is_held(dir);
    let ledger = read_ledger(dir);
    let mut segments = Vec::new();
    let mut durable_index: Option<LogIndex> = None;
    for (_, p) in segment_paths(dir)? {
        let buf = read_file(&p)?;
        let h = format::decode_segment_header(&buf).map_err(|e| e.to_string());
        let synced = ledger_synced(&ledger, &h);
        let parsed = parse_segment(&p, &buf, synced, false, None);
        if let (Ok(Some(_)), Some(synced)) = (&ledger, synced) {
            // Last index whose whole record lies below the segment's synced offset.
            if parsed.info.sealed && synced >= parsed.info.file_bytes {
                durable_index = durable_index.max(parsed.info.last.map(|l| l.0));
            } else {
                let covered = parsed
                    .records
                    .iter()
                    .filter(|r| r.checksum_ok)
                    .take_while(|r| r.offset + format::record_bytes(r.payload_len as u64) <= synced)
                    .last()
                    .map(|r| r.index);
                durable_index = durable_index.max(covered);
            }
        }
        segments.push(parsed.info);
    }
    let hs_path = dir.join(HARD_STATE_FILE);
    let hard_state = hs_path
        .exists()
        .then(|| hard_state(&hs_path).map_err(|e| e.to_string()));
    let meta_path = dir.join(LOG_META_FILE);
    let compacted = meta_path.exists().then(|| log_meta(&meta_path));
    let mut snapshots = Vec::new();
    for e in std::fs::read_dir(dir)
        .map_err(|e| StorageError::io("listing", dir, e))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("snap-") {
            continue;
        }
        let partial = name.ends_with(format::PARTIAL_SUFFIX);
        let broken = name.ends_with(format::BROKEN_SUFFIX);
        snapshots.push(SnapshotInfo {
            path: e.path(),
            meta: read_snapshot_meta(&e.path()),
            partial,
            broken,
        });
    }
    snapshots.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(DirInfo {
        dir: dir.to_path_buf(),
        lock_pid,
        lock_held,
        segments,
        ledger,
        hard_state,
        compacted,
        snapshots,
        durable_index,
    })
}

/// Verifies `path`: a data directory, a segment file (`.wal`), a snapshot (`.snap`, also
/// `.partial`/`.broken`) or a hard-state file, and lists every problem found. A directory's
/// segments are also checked for index continuity across files and against the compaction
/// point.
pub fn verify(path: &Path) -> Result<Vec<Problem>> {
    let meta = std::fs::metadata(path).map_err(|e| StorageError::io("stat", path, e))?;
    if meta.is_dir() {
        return verify_dir(path);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.ends_with(".wal") || format::parse_segment_file_name(&name).is_some() {
        let buf = read_file(path)?;
        // Without the directory's ledger, treat everything as synced: report all damage.
        return Ok(parse_segment(path, &buf, Some(u64::MAX), false, None).problems);
    }
    if name.starts_with("snap-") {
        return Ok(match read_snapshot_meta(path) {
            Ok(_) => Vec::new(),
            Err(reason) => vec![Problem {
                severity: Severity::Corruption,
                file: path.to_path_buf(),
                offset: None,
                index: None,
                reason,
                discards: None,
            }],
        });
    }
    if name == HARD_STATE_FILE {
        let hs = hard_state(path)?;
        return Ok(hard_state_problems(&hs, None));
    }
    Err(StorageError::InvalidOptions(format!(
        "{} is not a data directory, segment (.wal), snapshot (snap-*) or hardstate file",
        path.display()
    )))
}

fn hard_state_problems(hs: &HardStateInfo, synced_gen: Option<u64>) -> Vec<Problem> {
    let mut v = Vec::new();
    if hs.current.is_none() {
        v.push(Problem {
            severity: Severity::Corruption,
            file: hs.path.clone(),
            offset: Some(0),
            index: None,
            reason: "no valid hard-state slot".into(),
            discards: None,
        });
        return v;
    }
    for (i, s) in hs.slots.iter().enumerate() {
        if let Err(why) = s {
            // One damaged slot is expected after a torn unsynced write; the other one holds
            // the last synced value.
            let _ = synced_gen;
            v.push(Problem {
                severity: Severity::Notice,
                file: hs.path.clone(),
                offset: Some(i as u64 * format::SLOT_BYTES),
                index: None,
                reason: format!("slot {i} invalid ({why}); the other slot is current"),
                discards: None,
            });
        }
    }
    v
}

/// Where recovery would end the log (a torn tail in an unsynced range) and the intact records
/// it would discard after that point, over every later segment too (R6: they are removed).
struct DiscardTally {
    file: PathBuf,
    offset: u64,
    index: Option<LogIndex>,
    /// The segment's synced offset (what makes this a torn tail rather than corruption).
    synced: u64,
    intact: Intact,
    files: usize,
}

impl DiscardTally {
    /// A segment after the point where recovery ends the log: debris it removes (R6), whose
    /// records it discards, unless something in it was synced, which recovery refuses.
    fn add_later_segment(
        &mut self,
        path: &Path,
        info: &SegmentInfo,
        synced_at: u64,
    ) -> Option<Problem> {
        if info.record_count == 0 {
            return None;
        }
        if synced_at > SEGMENT_HEADER_BYTES {
            return Some(Problem {
                severity: Severity::Corruption,
                file: path.to_path_buf(),
                offset: Some(SEGMENT_HEADER_BYTES),
                index: info.first.map(|f| f.0),
                reason: format!(
                    "synced records after the torn tail in {} (recovery refuses to open)",
                    self.file.display()
                ),
                discards: None,
            });
        }
        self.intact.add(Intact {
            count: info.record_count,
            first: info.first.map(|f| f.0),
            last: info.last.map(|l| l.0),
        });
        self.files += 1;
        None
    }

    fn problem(&self) -> Option<Problem> {
        if self.intact.count == 0 {
            return None;
        }
        let range = match (self.intact.first, self.intact.last) {
            (Some(f), Some(l)) => format!(" (indexes {f}..={l})"),
            _ => String::new(),
        };
        Some(Problem {
            severity: Severity::WouldDiscard,
            file: self.file.clone(),
            offset: Some(self.offset),
            index: self.index,
            reason: format!(
                "recovery would end the log here and discard {} intact records after this \
                 point{range} in {} segment file(s): nothing after byte {} of this segment was \
                 synced, so damage here cannot be told apart from a torn write and recovery \
                 treats it as a torn tail; copy the directory aside before restarting the node \
                 if those records matter",
                self.intact.count, self.files, self.synced
            ),
            discards: Some(Discards {
                records: self.intact.count,
                first_index: self.intact.first,
                last_index: self.intact.last,
                files: self.files,
            }),
        })
    }
}

/// Verifies the segments of `dir` in order (records, continuity across files, what recovery
/// would discard); returns the first index of the log.
fn verify_segments(
    dir: &Path,
    ledger: &Result<Option<LedgerView>, String>,
    problems: &mut Vec<Problem>,
) -> Result<Option<LogIndex>> {
    let mut prev: Option<(PathBuf, LogIndex, LogTerm)> = None;
    let mut first_index: Option<LogIndex> = None;
    let mut tally: Option<DiscardTally> = None;
    for (_, p) in segment_paths(dir)? {
        let buf = read_file(&p)?;
        let h = format::decode_segment_header(&buf).map_err(|e| e.to_string());
        let synced = ledger_synced(ledger, &h);
        // Past the point where recovery ends the log, each segment is read on its own.
        let expect_first = prev
            .as_ref()
            .filter(|_| tally.is_none())
            .map(|(_, li, _)| li.next());
        let parsed = parse_segment(&p, &buf, synced, false, expect_first);
        problems.extend(parsed.problems);
        let info = parsed.info;
        let synced_at = synced.unwrap_or(SEGMENT_HEADER_BYTES);
        if let Some(t) = &mut tally {
            problems.extend(t.add_later_segment(&p, &info, synced_at));
            continue;
        }
        if let Some((fi, ft)) = info.first {
            first_index.get_or_insert(fi);
            if let Some((pp, pi, pt)) = &prev {
                if fi != pi.next() || ft < *pt {
                    problems.push(Problem {
                        severity: Severity::Corruption,
                        file: p.clone(),
                        offset: Some(SEGMENT_HEADER_BYTES),
                        index: Some(fi),
                        reason: format!(
                            "segment starts at index {fi} term {ft}, but {} ends at index {pi} term {pt}",
                            pp.display()
                        ),
                        discards: None,
                    });
                }
            }
        }
        if let Some((li, lt)) = info.last {
            prev = Some((p.clone(), li, lt));
        }
        // Recovery ends the log in this segment when it reads it record by record (no trusted
        // footer) and stops in the unsynced range; later segments are then removed.
        let scanned = !info.sealed
            || parsed.cut.is_some()
            || problems
                .iter()
                .any(|q| q.file == p && q.severity == Severity::TornTail);
        if scanned {
            let cut = parsed.cut.unwrap_or(Cut {
                offset: info.records_end,
                index: info.last.map(|l| l.0.next()),
                intact: Intact::default(),
            });
            tally = Some(DiscardTally {
                file: p.clone(),
                offset: cut.offset,
                index: cut.index,
                synced: synced_at,
                intact: cut.intact,
                files: usize::from(cut.intact.count > 0),
            });
        }
    }
    if let Some(prob) = tally.as_ref().and_then(DiscardTally::problem) {
        problems.push(prob);
    }
    Ok(first_index)
}

fn verify_dir(dir: &Path) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    let ledger = read_ledger(dir);
    if let Err(why) = &ledger {
        problems.push(Problem {
            severity: Severity::Notice,
            file: dir.join(format::LEDGER_FILE),
            offset: None,
            index: None,
            reason: format!("sync ledger unreadable ({why}): durable point unknown"),
            discards: None,
        });
    }
    let first_index = verify_segments(dir, &ledger, &mut problems)?;
    let meta_path = dir.join(LOG_META_FILE);
    if meta_path.exists() {
        match log_meta(&meta_path) {
            Ok((ci, _)) => {
                if let Some(fi) = first_index {
                    if fi > ci.next() {
                        problems.push(Problem { severity: Severity::Corruption, file: meta_path.clone(), offset: None, index: Some(ci.next()),
                            reason: format!("log starts at {fi} but is compacted only up to {ci}: entries missing"), discards: None });
                    }
                }
            }
            Err(why) => problems.push(Problem {
                severity: Severity::Corruption,
                file: meta_path.clone(),
                offset: Some(0),
                index: None,
                reason: why,
                discards: None,
            }),
        }
    }
    let hs_path = dir.join(HARD_STATE_FILE);
    if hs_path.exists() {
        let hs = hard_state(&hs_path)?;
        let synced_gen = ledger
            .as_ref()
            .ok()
            .and_then(|l| l.as_ref())
            .map(|l| l.hard_state_synced_generation);
        problems.extend(hard_state_problems(&hs, synced_gen));
    }
    for e in std::fs::read_dir(dir)
        .map_err(|e| StorageError::io("listing", dir, e))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("snap-") {
            continue;
        }
        let partial = name.ends_with(format::PARTIAL_SUFFIX);
        let broken = name.ends_with(format::BROKEN_SUFFIX);
        match read_snapshot_meta(&e.path()) {
            Ok(_) if !partial && !broken => {}
            Ok(_) => problems.push(Problem {
                severity: Severity::Notice,
                file: e.path(),
                offset: None,
                index: None,
                reason: if partial {
                    "partial snapshot (being written, or swept at next start)".into()
                } else {
                    "snapshot kept aside as broken".into()
                },
                discards: None,
            }),
            Err(why) => problems.push(Problem {
                severity: if partial || broken {
                    Severity::Notice
                } else {
                    Severity::Corruption
                },
                file: e.path(),
                offset: None,
                index: None,
                reason: why,
                discards: None,
            }),
        }
    }
    Ok(problems)
}
