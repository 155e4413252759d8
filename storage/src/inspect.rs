//! Read-only inspection of a data directory, a segment, a snapshot or a hard-state file, for
//! `raft-dump`.
//!
//! **API Boundary:** safe on a live node's directory: takes no lock, maps nothing, writes
//! nothing. Files are read with `pread` into owned buffers and every length is bounds-checked
//! before it is used, so a file that is truncated, zeroed, random or shrinking while it is read
//! produces problems, never a panic (storage-rules 3, 7).
//!
//! [`verify`] checks every record checksum, every footer checksum, every padding byte and every
//! byte that must be zero, so a single flipped bit anywhere in a log is reported with its file,
//! byte offset and (when known) log index.

use crate::error::{Result, StorageError};
use crate::format::{
    self, HARD_STATE_FILE, HARD_STATE_MAGIC, LOG_META_FILE, LOG_META_MAGIC, OFFSET_ENTRY_BYTES,
    RECORD_HEADER_BYTES, RECORD_MARKER, SEGMENT_HEADER_BYTES, SLOT_FILE_BYTES, SegmentHeader,
    TRAILER_BYTES, Trailer,
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

/// Decodes the record at `at`; `Err` says why it is not a plausible record (length or header).
fn record_at(buf: &[u8], seed: u32, at: u64, limit: u64) -> Result<(RecordInfo, u64), String> {
    let h = buf
        .get(at as usize..(at + RECORD_HEADER_BYTES) as usize)
        .filter(|_| at + RECORD_HEADER_BYTES <= limit)
        .ok_or("record header runs past the end of the record area")?;
    if h.iter().all(|&b| b == 0) {
        return Err("zeros (no record)".into());
    }
    let rh = format::decode_record_header(h).ok_or("short header")?;
    if rh.marker != RECORD_MARKER || !rh.reserved_zero {
        return Err(format!("not a record header (marker {:#04x})", rh.marker));
    }
    let len = rh.payload_len as u64;
    let rec = format::record_bytes(len);
    if at + rec > limit {
        return Err(format!(
            "payload length {len} runs past the end of the record area"
        ));
    }
    let payload =
        &buf[(at + RECORD_HEADER_BYTES) as usize..(at + RECORD_HEADER_BYTES + len) as usize];
    let crc = format::record_crc(seed, h, payload);
    Ok((
        RecordInfo {
            offset: at,
            index: rh.index,
            term: rh.term,
            kind: rh.kind,
            payload_len: rh.payload_len,
            payload: payload.to_vec(),
            stored_crc: rh.crc,
            checksum_ok: crc == rh.crc,
        },
        rec,
    ))
}

fn first_nonzero(b: &[u8]) -> Option<usize> {
    b.iter().position(|&x| x != 0)
}

fn parse_segment(
    path: &Path,
    buf: &[u8],
    synced: Option<u64>,
    keep_payloads: bool,
    expect_first: Option<LogIndex>,
) -> Parsed {
    let mut problems = Vec::new();
    let file_bytes = buf.len() as u64;
    let mut prob = |severity, offset: Option<u64>, index: Option<LogIndex>, reason: String| {
        problems.push(Problem {
            severity,
            file: path.to_path_buf(),
            offset,
            index,
            reason,
        })
    };
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
            prob(
                Severity::Corruption,
                Some(0),
                None,
                format!("bad segment header: {p}"),
            );
            return Parsed {
                info,
                records: Vec::new(),
                problems,
            };
        }
    };
    info.header = Ok(h);
    if file_bytes != h.segment_bytes {
        prob(
            Severity::Corruption,
            Some(file_bytes.min(h.segment_bytes)),
            None,
            format!(
                "file is {file_bytes} bytes, header says {}",
                h.segment_bytes
            ),
        );
    }
    let seg_bytes = h.segment_bytes.min(file_bytes);
    let (footer, trailer) = trailer_of(buf, &h);
    info.footer = footer.clone();
    let mut records = Vec::new();
    if let Some(t) = trailer {
        // A decoded trailer: walk the records by their lengths and compare every offset-index
        // entry with the true position, so a flipped bit in the index is reported at its byte.
        // When a record is unreadable, a valid index says where the next one starts.
        let offsets_ok = footer == FooterStatus::Valid;
        info.sealed = offsets_ok;
        let start = t.offsets_start(h.segment_bytes);
        let mut expect_at = SEGMENT_HEADER_BYTES;
        let mut chain = crc32fast::Hasher::new_with_initial(h.seed);
        let mut prev_term = t.first_term;
        let mut index_mismatch = false;
        for k in 0..t.record_count as u64 {
            let entry_at = start + k * 4;
            let o = format::get_u32(buf, entry_at as usize) as u64;
            let index = LogIndex(t.first_index.0 + k);
            if o != expect_at {
                index_mismatch = true;
                let want = (expect_at as u32).to_le_bytes();
                let have = (o as u32).to_le_bytes();
                let byte = (0..4).find(|&i| want[i] != have[i]).unwrap_or(0) as u64;
                prob(
                    Severity::Corruption,
                    Some(entry_at + byte),
                    Some(index),
                    format!(
                        "offset index entry says record {index} is at byte {o}, it is at {expect_at}"
                    ),
                );
            }
            match record_at(buf, h.seed, expect_at, t.records_end) {
                Ok((r, rec)) => {
                    chain.update(&r.stored_crc.to_le_bytes());
                    if !r.checksum_ok {
                        prob(
                            Severity::Corruption,
                            Some(expect_at),
                            Some(index),
                            format!("record checksum mismatch (stored {:#010x})", r.stored_crc),
                        );
                    }
                    if r.index != index {
                        prob(
                            Severity::Corruption,
                            Some(expect_at),
                            Some(index),
                            format!(
                                "record carries index {}, expected {index} (misplaced record)",
                                r.index
                            ),
                        );
                    }
                    if r.term < prev_term || r.term > t.last_term {
                        prob(
                            Severity::Corruption,
                            Some(expect_at),
                            Some(index),
                            format!(
                                "term {} outside {}..={} or decreasing",
                                r.term, prev_term, t.last_term
                            ),
                        );
                    }
                    prev_term = r.term;
                    let crc_ok = r.checksum_ok;
                    let pad_from = expect_at + RECORD_HEADER_BYTES + r.payload_len as u64;
                    if let Some(p) =
                        first_nonzero(&buf[pad_from as usize..(expect_at + rec) as usize])
                    {
                        prob(
                            Severity::Corruption,
                            Some(pad_from + p as u64),
                            Some(index),
                            "non-zero padding byte after the payload".into(),
                        );
                    }
                    if keep_payloads || records.is_empty() {
                        records.push(r);
                    } else {
                        records.push(RecordInfo {
                            payload: Vec::new(),
                            ..r
                        });
                    }
                    // A corrupt length field would misplace the walk: trust the index when
                    // it is intact.
                    expect_at = if offsets_ok && !crc_ok && k + 1 < t.record_count as u64 {
                        format::get_u32(buf, (entry_at + 4) as usize) as u64
                    } else {
                        expect_at + rec
                    };
                }
                Err(why) => {
                    prob(
                        Severity::Corruption,
                        Some(expect_at),
                        Some(index),
                        format!("unreadable record: {why}"),
                    );
                    if !offsets_ok {
                        prob(
                            Severity::Corruption,
                            Some(expect_at),
                            Some(index),
                            "offset index damaged too: the rest of this segment is unchecked"
                                .into(),
                        );
                        return Parsed {
                            info,
                            records,
                            problems,
                        };
                    }
                    chain.update(&format::get_u32(buf, expect_at as usize).to_le_bytes());
                    expect_at = if k + 1 < t.record_count as u64 {
                        format::get_u32(buf, (entry_at + 4) as usize) as u64
                    } else {
                        t.records_end
                    };
                }
            }
        }
        if !offsets_ok && !index_mismatch {
            prob(
                Severity::Corruption,
                Some(start),
                None,
                "offset index checksum mismatch".into(),
            );
        }
        if expect_at != t.records_end {
            prob(
                Severity::Corruption,
                Some(h.segment_bytes - TRAILER_BYTES),
                None,
                format!(
                    "trailer says records end at {}, they end at {expect_at}",
                    t.records_end
                ),
            );
        }
        let chain = chain.finalize();
        if chain != t.chain_crc {
            prob(
                Severity::Corruption,
                Some(h.segment_bytes - TRAILER_BYTES + format::TRL_CHAIN_CRC as u64),
                None,
                format!(
                    "segment checksum (chain of record checksums) {chain:#010x}, trailer says {:#010x}",
                    t.chain_crc
                ),
            );
        }
        let gap = t.records_end.min(start) as usize..start as usize;
        if let Some(p) = first_nonzero(&buf[gap.clone()]) {
            prob(
                Severity::Corruption,
                Some(gap.start as u64 + p as u64),
                None,
                "non-zero byte between the last record and the footer".into(),
            );
        }
        info.first = Some((t.first_index, t.first_term));
        info.last = Some((t.last_index, t.last_term));
        info.record_count = t.record_count as u64;
        info.records_end = t.records_end;
        return Parsed {
            info,
            records,
            problems,
        };
    }
    if let FooterStatus::Invalid(why) = &footer {
        let sev = if synced.is_some_and(|s| s >= seg_bytes) {
            Severity::Corruption
        } else {
            Severity::TornTail
        };
        prob(
            sev,
            Some(seg_bytes.saturating_sub(TRAILER_BYTES)),
            None,
            format!("damaged footer: {why}"),
        );
    }
    // Open (or footer-less): scan records in order.
    let limit = seg_bytes.saturating_sub(TRAILER_BYTES);
    let mut at = SEGMENT_HEADER_BYTES;
    let mut expect: Option<LogIndex> = expect_first;
    let mut prev_term = LogTerm(0);
    let synced_at = synced.unwrap_or(SEGMENT_HEADER_BYTES);
    let sev_at = |o: u64| {
        if o < synced_at {
            Severity::Corruption
        } else {
            Severity::TornTail
        }
    };
    let stop_reason: Option<String>;
    // Not even a plausible record header where the next record would start.
    let mut garbage = false;
    loop {
        match record_at(buf, h.seed, at, limit) {
            Ok((r, rec)) => {
                let mut why = None;
                if !r.checksum_ok {
                    why = Some(format!(
                        "record checksum mismatch (stored {:#010x})",
                        r.stored_crc
                    ));
                } else if r.index.0 == 0 || expect.is_some_and(|e| e != r.index) {
                    why = Some(format!(
                        "record carries index {}, expected {} (misplaced record)",
                        r.index,
                        expect.unwrap_or(LogIndex(1))
                    ));
                } else if r.term < prev_term {
                    why = Some(format!(
                        "term {} below the previous term {prev_term}",
                        r.term
                    ));
                } else if let Some(p) = first_nonzero(
                    &buf[(at + RECORD_HEADER_BYTES + r.payload_len as u64) as usize
                        ..(at + rec) as usize],
                ) {
                    // Recovery ignores padding (the record checks out), so keep scanning.
                    let o = at + RECORD_HEADER_BYTES + r.payload_len as u64 + p as u64;
                    prob(
                        sev_at(o),
                        Some(o),
                        Some(r.index),
                        "non-zero padding byte after the payload".into(),
                    );
                }
                if let Some(w) = why {
                    records.push(r);
                    stop_reason = Some(w);
                    break;
                }
                if info.first.is_none() {
                    info.first = Some((r.index, r.term));
                }
                info.last = Some((r.index, r.term));
                info.record_count += 1;
                expect = Some(r.index.next());
                prev_term = r.term;
                records.push(if keep_payloads {
                    r
                } else {
                    RecordInfo {
                        payload: Vec::new(),
                        ..r
                    }
                });
                at += rec;
            }
            Err(why) => {
                stop_reason = if why.starts_with("zeros") {
                    None
                } else {
                    garbage = true;
                    Some(why)
                };
                break;
            }
        }
    }
    info.records_end = at;
    if let Some(why) = stop_reason {
        // For garbage, point at its first non-zero byte (exact for a flipped bit).
        let at = if garbage {
            at + buf
                .get(at as usize..seg_bytes as usize)
                .and_then(first_nonzero)
                .unwrap_or(0) as u64
        } else {
            at
        };
        let sev = sev_at(at);
        let what = if sev == Severity::Corruption {
            "before the durable point"
        } else {
            "after the durable point: a torn tail recovery truncates"
        };
        prob(sev, Some(at), expect, format!("{why} ({what})"));
    } else if let Some(p) = first_nonzero(&buf[at as usize..seg_bytes as usize]) {
        let o = at + p as u64;
        let sev = sev_at(o);
        prob(
            sev,
            Some(o),
            None,
            if sev == Severity::Corruption {
                "non-zero byte after the last record, inside the synced range".into()
            } else {
                "non-zero byte after the last record (unsynced debris recovery zeroes)".into()
            },
        );
    }
    Parsed {
        info,
        records,
        problems,
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
            });
        }
    }
    v
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
        });
    }
    let mut prev: Option<(PathBuf, LogIndex, LogTerm)> = None;
    let mut first_index: Option<LogIndex> = None;
    for (_, p) in segment_paths(dir)? {
        let buf = read_file(&p)?;
        let h = format::decode_segment_header(&buf).map_err(|e| e.to_string());
        let synced = ledger_synced(&ledger, &h);
        let expect_first = prev.as_ref().map(|(_, li, _)| li.next());
        let parsed = parse_segment(
            &p,
            &buf,
            synced.or(Some(SEGMENT_HEADER_BYTES)),
            false,
            expect_first,
        );
        problems.extend(parsed.problems);
        let info = parsed.info;
        if let Some((fi, ft)) = info.first {
            first_index.get_or_insert(fi);
            if let Some((pp, pi, pt)) = &prev {
                if fi != pi.next() || ft < *pt {
                    problems.push(Problem { severity: Severity::Corruption, file: p.clone(), offset: Some(SEGMENT_HEADER_BYTES), index: Some(fi),
                        reason: format!("segment starts at index {fi} term {ft}, but {} ends at index {pi} term {pt}", pp.display()) });
                }
            }
        }
        if let Some((li, lt)) = info.last {
            prev = Some((p.clone(), li, lt));
        }
    }
    let meta_path = dir.join(LOG_META_FILE);
    if meta_path.exists() {
        match log_meta(&meta_path) {
            Ok((ci, _)) => {
                if let Some(fi) = first_index {
                    if fi > ci.next() {
                        problems.push(Problem { severity: Severity::Corruption, file: meta_path.clone(), offset: None, index: Some(ci.next()),
                            reason: format!("log starts at {fi} but is compacted only up to {ci}: entries missing") });
                    }
                }
            }
            Err(why) => problems.push(Problem {
                severity: Severity::Corruption,
                file: meta_path.clone(),
                offset: Some(0),
                index: None,
                reason: why,
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
            }),
        }
    }
    Ok(problems)
}
