//! Byte layouts of every file in a data directory, mirroring `docs/FORMAT.md` ("Storage").
//!
//! Everything here is a pure function over byte slices: the write path (mmap), recovery and the
//! read-only inspector (`pread`) share these encoders and decoders, so one layout has one
//! implementation. All integers are little-endian. Every decoder bounds-checks its input and
//! returns `None`/an error on anything it does not recognise (storage rule 7 of docs/RULES.md);
//! none panics.

use crate::types::{EntryKind, LogIndex, LogTerm};

/// On-disk format version of every file below. Bumped together with docs/FORMAT.md.
pub const FORMAT_VERSION: u32 = 1;

// ---------------------------------------------------------------------------------------------
// Segment header (64 bytes at offset 0 of every segment file).
// ---------------------------------------------------------------------------------------------

/// Magic at offset 0 of a segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SHMRWAL\0";
/// Length of the segment header; the first record starts here.
pub const SEGMENT_HEADER_BYTES: u64 = 64;
/// Offsets inside the segment header.
pub const SEG_HDR_VERSION: usize = 8;
pub const SEG_HDR_HEADER_BYTES: usize = 12;
pub const SEG_HDR_SEQ: usize = 16;
pub const SEG_HDR_SEGMENT_BYTES: usize = 24;
pub const SEG_HDR_SALT: usize = 32;
pub const SEG_HDR_CRC: usize = 60;

// ---------------------------------------------------------------------------------------------
// Record (32-byte header, payload, zero padding to 8 bytes).
// ---------------------------------------------------------------------------------------------

/// Length of a record header.
pub const RECORD_HEADER_BYTES: u64 = 32;
/// Records start on this alignment; the gap after a payload is zero padding.
pub const RECORD_ALIGN: u64 = 8;
/// Byte 25 of every record header: a zeroed region can never carry it (storage rule 5
/// of docs/RULES.md).
pub const RECORD_MARKER: u8 = 0xA5;
pub const REC_CRC: usize = 0;
pub const REC_LEN: usize = 4;
pub const REC_INDEX: usize = 8;
pub const REC_TERM: usize = 16;
pub const REC_KIND: usize = 24;
pub const REC_MARKER: usize = 25;

// ---------------------------------------------------------------------------------------------
// Footer of a sealed segment: offset index (u32 per record) then a 64-byte trailer at file end.
// ---------------------------------------------------------------------------------------------

/// Magic of the trailer in the last 64 bytes of a sealed segment.
pub const TRAILER_MAGIC: [u8; 8] = *b"SHMRFTR\0";
/// Length of the trailer.
pub const TRAILER_BYTES: u64 = 64;
/// Bytes of offset index per record.
pub const OFFSET_ENTRY_BYTES: u64 = 4;
pub const TRL_FIRST_INDEX: usize = 8;
pub const TRL_FIRST_TERM: usize = 16;
pub const TRL_LAST_INDEX: usize = 24;
pub const TRL_LAST_TERM: usize = 32;
pub const TRL_RECORDS_END: usize = 40;
pub const TRL_RECORD_COUNT: usize = 48;
pub const TRL_CHAIN_CRC: usize = 52;
pub const TRL_OFFSETS_CRC: usize = 56;
pub const TRL_CRC: usize = 60;

// ---------------------------------------------------------------------------------------------
// Two-slot files: `hardstate` and `log.meta` (two 512-byte slots, 64 bytes used in each).
// ---------------------------------------------------------------------------------------------

/// Magic of a hard-state slot.
pub const HARD_STATE_MAGIC: [u8; 8] = *b"SHMRHST\0";
/// Magic of a log-meta slot (the compaction point).
pub const LOG_META_MAGIC: [u8; 8] = *b"SHMRLMT\0";
/// Each slot owns one 512-byte sector, so a torn write damages at most one slot.
pub const SLOT_BYTES: u64 = 512;
/// Bytes of a slot that carry data; the rest of the sector is zero.
pub const SLOT_USED_BYTES: usize = 64;
/// Size of a two-slot file.
pub const SLOT_FILE_BYTES: u64 = 2 * SLOT_BYTES;
pub const SLOT_VERSION: usize = 8;
pub const SLOT_GENERATION: usize = 16;
pub const SLOT_A: usize = 24;
pub const SLOT_B: usize = 32;
pub const SLOT_C: usize = 40;
pub const SLOT_CRC: usize = 60;

// ---------------------------------------------------------------------------------------------
// Sync ledger (`sync.ledger`): what a completed sync covered, for simulated power cuts.
// ---------------------------------------------------------------------------------------------

/// Magic of the sync ledger.
pub const LEDGER_MAGIC: [u8; 8] = *b"SHMRLDG\0";
/// Number of segment slots in the ledger.
pub const LEDGER_SLOTS: usize = 255;
/// Header bytes of the ledger; slots follow.
pub const LEDGER_HEADER_BYTES: usize = 64;
/// Bytes per ledger slot.
pub const LEDGER_SLOT_BYTES: usize = 32;
/// Size of the ledger file (a whole number of pages).
pub const LEDGER_FILE_BYTES: usize = 12288;
pub const LDG_VERSION: usize = 8;
pub const LDG_SLOT_COUNT: usize = 12;
pub const LDG_HARD_STATE_SYNCED_GEN: usize = 16;
/// CRC32 of header bytes 0..16 (magic, version, slot count); the synced generation at 16 changes.
pub const LDG_HEADER_CRC: usize = 60;
/// Offsets inside a ledger slot.
pub const LDG_SLOT_SEQ: usize = 0;
pub const LDG_SLOT_SYNCED: usize = 8;

const _: () = assert!(LEDGER_HEADER_BYTES + LEDGER_SLOTS * LEDGER_SLOT_BYTES <= LEDGER_FILE_BYTES);
const _: () = assert!(SLOT_USED_BYTES as u64 <= SLOT_BYTES);
const _: () = assert!(RECORD_HEADER_BYTES % RECORD_ALIGN == 0);
const _: () = assert!(SEGMENT_HEADER_BYTES % RECORD_ALIGN == 0);

// ---------------------------------------------------------------------------------------------
// Snapshot file: 64-byte header, membership bytes, data bytes, 64-byte trailer.
// ---------------------------------------------------------------------------------------------

/// Magic at offset 0 of a snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"SHMRSNP\0";
/// Magic of the snapshot trailer (last 64 bytes).
pub const SNAPSHOT_TRAILER_MAGIC: [u8; 8] = *b"SHMRSNE\0";
pub const SNAPSHOT_HEADER_BYTES: u64 = 64;
pub const SNAPSHOT_TRAILER_BYTES: u64 = 64;
/// Largest membership blob accepted (storage rule 7 of docs/RULES.md: bound lengths before
/// allocating).
pub const SNAPSHOT_MEMBERSHIP_BYTES_MAX: u32 = 1 << 20;
pub const SNP_VERSION: usize = 8;
pub const SNP_LAST_INDEX: usize = 16;
pub const SNP_LAST_TERM: usize = 24;
pub const SNP_MEMBERSHIP_LEN: usize = 32;
pub const SNP_HEADER_CRC: usize = 60;
pub const SNT_DATA_LEN: usize = 8;
pub const SNT_BODY_CRC: usize = 16;
pub const SNT_TRAILER_CRC: usize = 60;

// ---------------------------------------------------------------------------------------------
// Lock file.
// ---------------------------------------------------------------------------------------------

/// Name of the lock file; its content is `pid <decimal pid>\n`.
pub const LOCK_FILE: &str = "LOCK";
/// Name of the hard-state file.
pub const HARD_STATE_FILE: &str = "hardstate";
/// Name of the log-meta file (compaction point).
pub const LOG_META_FILE: &str = "log.meta";
/// Name of the sync ledger.
pub const LEDGER_FILE: &str = "sync.ledger";
/// Suffix of a temporary file (segment being prepared, slot file being created).
pub const TMP_SUFFIX: &str = ".tmp";
/// Suffix of a snapshot being written.
pub const PARTIAL_SUFFIX: &str = ".partial";
/// Suffix of a snapshot found corrupt and kept aside.
pub const BROKEN_SUFFIX: &str = ".broken";

/// File name of segment `seq`.
pub fn segment_file_name(seq: u64) -> String {
    format!("seg-{seq:016x}.wal")
}

/// Parses a segment file name back to its sequence number.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".wal")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// File name of the snapshot whose last included entry is (`index`, `term`).
pub fn snapshot_file_name(index: LogIndex, term: LogTerm) -> String {
    format!("snap-{:020}-{:020}.snap", index.get(), term.get())
}

/// Parses a snapshot file name back to (last index, last term).
pub fn parse_snapshot_file_name(name: &str) -> Option<(LogIndex, LogTerm)> {
    let rest = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    let (i, t) = rest.split_once('-')?;
    if i.len() != 20 || t.len() != 20 {
        return None;
    }
    Some((LogIndex(i.parse().ok()?), LogTerm(t.parse().ok()?)))
}

// ---------------------------------------------------------------------------------------------
// Little-endian helpers (bounds are the caller's fixed-size arrays or checked slices).
// ---------------------------------------------------------------------------------------------

#[inline]
pub fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

#[inline]
pub fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[inline]
pub fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[inline]
pub fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// CRC32 (IEEE, crc32fast) of `bytes` starting from state `seed`.
#[inline]
pub fn crc_seeded(seed: u32, bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(seed);
    h.update(bytes);
    h.finalize()
}

/// Rounds `n` up to the record alignment.
#[inline]
pub const fn align_record(n: u64) -> u64 {
    (n + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// Bytes a record with `payload_len` bytes of payload occupies in a segment.
#[inline]
pub const fn record_bytes(payload_len: u64) -> u64 {
    align_record(RECORD_HEADER_BYTES + payload_len)
}

// ---------------------------------------------------------------------------------------------
// Segment header.
// ---------------------------------------------------------------------------------------------

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub seq: u64,
    pub segment_bytes: u64,
    pub salt: u32,
    /// CRC of the header; also the seed of every record checksum in this segment, so a record
    /// copied from another segment (or left over in a recycled file) never validates
    /// (storage rule 5 of docs/RULES.md).
    pub seed: u32,
}

/// Encodes a segment header.
pub fn encode_segment_header(seq: u64, segment_bytes: u64, salt: u32) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[..8].copy_from_slice(&SEGMENT_MAGIC);
    put_u32(&mut b, SEG_HDR_VERSION, FORMAT_VERSION);
    put_u32(&mut b, SEG_HDR_HEADER_BYTES, SEGMENT_HEADER_BYTES as u32);
    put_u64(&mut b, SEG_HDR_SEQ, seq);
    put_u64(&mut b, SEG_HDR_SEGMENT_BYTES, segment_bytes);
    put_u32(&mut b, SEG_HDR_SALT, salt);
    let crc = crc_seeded(0, &b[..SEG_HDR_CRC]);
    put_u32(&mut b, SEG_HDR_CRC, crc);
    b
}

/// Why a segment header was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderProblem {
    Short,
    BadMagic,
    BadChecksum { stored: u32, computed: u32 },
    UnsupportedVersion(u32),
    BadHeaderLength(u32),
}

impl std::fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderProblem::Short => write!(f, "file shorter than the 64-byte segment header"),
            HeaderProblem::BadMagic => write!(f, "segment magic is not SHMRWAL"),
            HeaderProblem::BadChecksum { stored, computed } => write!(
                f,
                "segment header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            HeaderProblem::UnsupportedVersion(v) => {
                write!(
                    f,
                    "segment format version {v} (this build reads {FORMAT_VERSION})"
                )
            }
            HeaderProblem::BadHeaderLength(l) => {
                write!(f, "segment header length {l}, expected 64")
            }
        }
    }
}

/// Decodes a segment header.
pub fn decode_segment_header(b: &[u8]) -> Result<SegmentHeader, HeaderProblem> {
    if b.len() < SEGMENT_HEADER_BYTES as usize {
        return Err(HeaderProblem::Short);
    }
    if b[..8] != SEGMENT_MAGIC {
        return Err(HeaderProblem::BadMagic);
    }
    let stored = get_u32(b, SEG_HDR_CRC);
    let computed = crc_seeded(0, &b[..SEG_HDR_CRC]);
    if stored != computed {
        return Err(HeaderProblem::BadChecksum { stored, computed });
    }
    let version = get_u32(b, SEG_HDR_VERSION);
    if version != FORMAT_VERSION {
        return Err(HeaderProblem::UnsupportedVersion(version));
    }
    let hl = get_u32(b, SEG_HDR_HEADER_BYTES);
    if hl as u64 != SEGMENT_HEADER_BYTES {
        return Err(HeaderProblem::BadHeaderLength(hl));
    }
    Ok(SegmentHeader {
        seq: get_u64(b, SEG_HDR_SEQ),
        segment_bytes: get_u64(b, SEG_HDR_SEGMENT_BYTES),
        salt: get_u32(b, SEG_HDR_SALT),
        seed: stored,
    })
}

// ---------------------------------------------------------------------------------------------
// Records.
// ---------------------------------------------------------------------------------------------

/// Fills a record header (all fields but the CRC) and returns the CRC over header and payload.
#[inline]
pub fn encode_record_header(
    seed: u32,
    index: LogIndex,
    term: LogTerm,
    kind: EntryKind,
    payload: &[u8],
) -> [u8; 32] {
    let mut h = [0u8; 32];
    put_u32(&mut h, REC_LEN, payload.len() as u32);
    put_u64(&mut h, REC_INDEX, index.0);
    put_u64(&mut h, REC_TERM, term.0);
    h[REC_KIND] = kind.0;
    h[REC_MARKER] = RECORD_MARKER;
    let mut hasher = crc32fast::Hasher::new_with_initial(seed);
    hasher.update(&h[4..]);
    hasher.update(payload);
    put_u32(&mut h, REC_CRC, hasher.finalize());
    h
}

/// A record header as read from disk, before its payload is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub crc: u32,
    pub payload_len: u32,
    pub index: LogIndex,
    pub term: LogTerm,
    pub kind: EntryKind,
    pub marker: u8,
    pub reserved_zero: bool,
}

/// Decodes the fixed fields of a record header (no checksum check).
#[inline]
pub fn decode_record_header(h: &[u8]) -> Option<RecordHeader> {
    if h.len() < RECORD_HEADER_BYTES as usize {
        return None;
    }
    Some(RecordHeader {
        crc: get_u32(h, REC_CRC),
        payload_len: get_u32(h, REC_LEN),
        index: LogIndex(get_u64(h, REC_INDEX)),
        term: LogTerm(get_u64(h, REC_TERM)),
        kind: EntryKind(h[REC_KIND]),
        marker: h[REC_MARKER],
        reserved_zero: h[26..32].iter().all(|&b| b == 0),
    })
}

/// The CRC a record with this header and payload must carry.
#[inline]
pub fn record_crc(seed: u32, header: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(seed);
    hasher.update(&header[4..RECORD_HEADER_BYTES as usize]);
    hasher.update(payload);
    hasher.finalize()
}

/// What the record at one offset must agree with besides its own bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRules {
    /// The index the record must carry (`None`: any index but 0, e.g. the first record of a
    /// segment read on its own).
    pub expect: Option<LogIndex>,
    /// The previous record's term (terms never decrease); `LogTerm(0)` for the first.
    pub prev_term: LogTerm,
    /// End of the record area: the record header and the whole record must lie before it.
    pub area_end: u64,
    /// Bytes that must stay free between the record's end and `area_end` (the offset index
    /// entries an open segment reserves for its footer: [`open_segment_index_room`]).
    pub index_room: u64,
}

/// Room an open segment keeps for the offset index of its records when it holds
/// `records_before` records and places one more (FORMAT.md "Offset index": a record is placed
/// only if `end + 4*(n+1) + 64 <= S`).
#[inline]
pub fn open_segment_index_room(records_before: u64) -> u64 {
    OFFSET_ENTRY_BYTES * (records_before + 1)
}

/// A record whose header and length are plausible, with its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: u64,
    pub header: RecordHeader,
    pub payload: &'a [u8],
    /// Whole record length, padding included.
    pub bytes: u64,
}

/// Why the bytes at an offset are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordFault {
    /// Marker byte not `0xA5`, or non-zero reserved bytes.
    NotAHeader { marker: u8 },
    /// The payload length runs past the record area (or leaves no room for the offset index).
    TooLong { len: u64 },
    /// The stored CRC does not match header and payload.
    Checksum { computed: u32, stored: u32 },
    /// The record carries another index than the one expected here (misplaced, or index 0).
    Index { expected: LogIndex, found: LogIndex },
    /// The record's term is below the previous record's.
    Term { prev: LogTerm, found: LogTerm },
}

impl std::fmt::Display for RecordFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordFault::NotAHeader { marker } => write!(
                f,
                "not a record header (marker {marker:#04x}, expected 0xa5 and zero reserved bytes)"
            ),
            RecordFault::TooLong { len } => write!(
                f,
                "payload length {len} runs past the end of the record area"
            ),
            RecordFault::Checksum { computed, stored } => write!(
                f,
                "record checksum mismatch (computed {computed:#010x}, stored {stored:#010x})"
            ),
            RecordFault::Index { expected, found } => write!(
                f,
                "record carries index {found}, expected {expected} (misplaced record)"
            ),
            RecordFault::Term { prev, found } => {
                write!(f, "record term {found} below the previous term {prev}")
            }
        }
    }
}

/// The verdict of [`check_record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordCheck<'a> {
    /// A valid record.
    Valid(RecordView<'a>),
    /// No record starts here: zeros, or no room left for a record header. The clean end of the
    /// records of a segment.
    End,
    /// Not a valid record. `record` is the decoded record when only its checksum, index or
    /// term is wrong (its length is plausible, so a reader may step over it).
    Invalid {
        fault: RecordFault,
        record: Option<RecordView<'a>>,
    },
}

/// **The** rule for whether the bytes at `at` of a segment are a valid record (FORMAT.md
/// "Record": marker, zero bytes, length, CRC, index, term). Recovery (`wal`) and `raft-dump`
/// (`inspect`) both decide with this function, so they cannot disagree about a record.
/// `segment` is the segment's bytes from offset 0 (a mapping or a buffer, possibly short).
pub fn check_record<'a>(
    segment: &'a [u8],
    seed: u32,
    at: u64,
    rules: &RecordRules,
) -> RecordCheck<'a> {
    let header_end = at.saturating_add(RECORD_HEADER_BYTES);
    let Some(h) = segment
        .get(at as usize..header_end as usize)
        .filter(|_| header_end <= rules.area_end)
    else {
        return RecordCheck::End;
    };
    if h.iter().all(|&b| b == 0) {
        return RecordCheck::End;
    }
    let Some(rh) = decode_record_header(h) else {
        return RecordCheck::End;
    };
    let invalid = |fault, record| RecordCheck::Invalid { fault, record };
    if rh.marker != RECORD_MARKER || !rh.reserved_zero {
        return invalid(RecordFault::NotAHeader { marker: rh.marker }, None);
    }
    let len = rh.payload_len as u64;
    let bytes = record_bytes(len);
    let fits = at
        .checked_add(bytes)
        .and_then(|e| e.checked_add(rules.index_room))
        .is_some_and(|e| e <= rules.area_end);
    let payload = segment.get(header_end as usize..(header_end + len) as usize);
    let (true, Some(payload)) = (fits, payload) else {
        return invalid(RecordFault::TooLong { len }, None);
    };
    let view = RecordView {
        offset: at,
        header: rh,
        payload,
        bytes,
    };
    let computed = record_crc(seed, h, payload);
    let fault = if computed != rh.crc {
        Some(RecordFault::Checksum {
            computed,
            stored: rh.crc,
        })
    } else if rh.index.0 == 0 || rules.expect.is_some_and(|e| e != rh.index) {
        Some(RecordFault::Index {
            expected: rules.expect.unwrap_or(LogIndex(1)),
            found: rh.index,
        })
    } else if rh.term < rules.prev_term {
        Some(RecordFault::Term {
            prev: rules.prev_term,
            found: rh.term,
        })
    } else {
        None
    };
    match fault {
        Some(f) => invalid(f, Some(view)),
        None => RecordCheck::Valid(view),
    }
}

// ---------------------------------------------------------------------------------------------
// Trailer.
// ---------------------------------------------------------------------------------------------

/// A decoded sealed-segment trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub first_index: LogIndex,
    pub first_term: LogTerm,
    pub last_index: LogIndex,
    pub last_term: LogTerm,
    pub records_end: u64,
    pub record_count: u32,
    pub chain_crc: u32,
    pub offsets_crc: u32,
}

impl Trailer {
    /// Byte offset of the offset index in a segment of `segment_bytes`.
    pub fn offsets_start(&self, segment_bytes: u64) -> u64 {
        segment_bytes - TRAILER_BYTES - OFFSET_ENTRY_BYTES * self.record_count as u64
    }
}

/// Encodes a trailer; its CRC is seeded with the segment seed.
pub fn encode_trailer(seed: u32, t: &Trailer) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[..8].copy_from_slice(&TRAILER_MAGIC);
    put_u64(&mut b, TRL_FIRST_INDEX, t.first_index.0);
    put_u64(&mut b, TRL_FIRST_TERM, t.first_term.0);
    put_u64(&mut b, TRL_LAST_INDEX, t.last_index.0);
    put_u64(&mut b, TRL_LAST_TERM, t.last_term.0);
    put_u64(&mut b, TRL_RECORDS_END, t.records_end);
    put_u32(&mut b, TRL_RECORD_COUNT, t.record_count);
    put_u32(&mut b, TRL_CHAIN_CRC, t.chain_crc);
    put_u32(&mut b, TRL_OFFSETS_CRC, t.offsets_crc);
    let crc = crc_seeded(seed, &b[..TRL_CRC]);
    put_u32(&mut b, TRL_CRC, crc);
    b
}

/// Decodes a trailer and checks its own consistency against the segment size. `None` means the
/// segment is not sealed (or its trailer is damaged: recovery then scans the records).
pub fn decode_trailer(seed: u32, b: &[u8], segment_bytes: u64) -> Result<Trailer, String> {
    if b.len() < TRAILER_BYTES as usize {
        return Err("trailer shorter than 64 bytes".into());
    }
    if b[..8] != TRAILER_MAGIC {
        return Err("no trailer magic".into());
    }
    let stored = get_u32(b, TRL_CRC);
    let computed = crc_seeded(seed, &b[..TRL_CRC]);
    if stored != computed {
        return Err(format!(
            "trailer checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    let t = Trailer {
        first_index: LogIndex(get_u64(b, TRL_FIRST_INDEX)),
        first_term: LogTerm(get_u64(b, TRL_FIRST_TERM)),
        last_index: LogIndex(get_u64(b, TRL_LAST_INDEX)),
        last_term: LogTerm(get_u64(b, TRL_LAST_TERM)),
        records_end: get_u64(b, TRL_RECORDS_END),
        record_count: get_u32(b, TRL_RECORD_COUNT),
        chain_crc: get_u32(b, TRL_CHAIN_CRC),
        offsets_crc: get_u32(b, TRL_OFFSETS_CRC),
    };
    let count = t.record_count as u64;
    let span_ok = t.first_index.0 >= 1
        && t.last_index.0 >= t.first_index.0
        && t.last_index.0 - t.first_index.0 + 1 == count
        && t.last_term.0 >= t.first_term.0;
    let room = segment_bytes
        .checked_sub(TRAILER_BYTES)
        .and_then(|r| r.checked_sub(OFFSET_ENTRY_BYTES.checked_mul(count)?));
    match room {
        Some(r) if span_ok && t.records_end >= SEGMENT_HEADER_BYTES && t.records_end <= r => Ok(t),
        _ => Err(format!(
            "trailer fields inconsistent (indexes {}..={}, count {}, records end {})",
            t.first_index.0, t.last_index.0, t.record_count, t.records_end
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Two-slot files.
// ---------------------------------------------------------------------------------------------

/// A decoded slot: a generation and three u64 values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Slot {
    pub generation: u64,
    pub a: u64,
    pub b: u64,
    pub c: u64,
}

/// Encodes one 512-byte slot.
pub fn encode_slot(magic: &[u8; 8], s: &Slot) -> [u8; SLOT_BYTES as usize] {
    let mut b = [0u8; SLOT_BYTES as usize];
    b[..8].copy_from_slice(magic);
    put_u32(&mut b, SLOT_VERSION, FORMAT_VERSION);
    put_u64(&mut b, SLOT_GENERATION, s.generation);
    put_u64(&mut b, SLOT_A, s.a);
    put_u64(&mut b, SLOT_B, s.b);
    put_u64(&mut b, SLOT_C, s.c);
    let crc = crc_seeded(0, &b[..SLOT_CRC]);
    put_u32(&mut b, SLOT_CRC, crc);
    b
}

/// Decodes one slot; `Err` says why it is not valid.
pub fn decode_slot(magic: &[u8; 8], b: &[u8]) -> Result<Slot, String> {
    if b.len() < SLOT_USED_BYTES {
        return Err("slot truncated".into());
    }
    if b[..SLOT_USED_BYTES].iter().all(|&x| x == 0) {
        return Err("slot is zero-filled".into());
    }
    if &b[..8] != magic {
        return Err("slot magic mismatch".into());
    }
    let stored = get_u32(b, SLOT_CRC);
    let computed = crc_seeded(0, &b[..SLOT_CRC]);
    if stored != computed {
        return Err(format!(
            "slot checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    let v = get_u32(b, SLOT_VERSION);
    if v != FORMAT_VERSION {
        return Err(format!(
            "slot format version {v}, expected {FORMAT_VERSION}"
        ));
    }
    Ok(Slot {
        generation: get_u64(b, SLOT_GENERATION),
        a: get_u64(b, SLOT_A),
        b: get_u64(b, SLOT_B),
        c: get_u64(b, SLOT_C),
    })
}

// ---------------------------------------------------------------------------------------------
// Snapshot header and trailer.
// ---------------------------------------------------------------------------------------------

/// Encodes a snapshot header.
pub fn encode_snapshot_header(index: LogIndex, term: LogTerm, membership_len: u32) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[..8].copy_from_slice(&SNAPSHOT_MAGIC);
    put_u32(&mut b, SNP_VERSION, FORMAT_VERSION);
    put_u64(&mut b, SNP_LAST_INDEX, index.0);
    put_u64(&mut b, SNP_LAST_TERM, term.0);
    put_u32(&mut b, SNP_MEMBERSHIP_LEN, membership_len);
    let crc = crc_seeded(0, &b[..SNP_HEADER_CRC]);
    put_u32(&mut b, SNP_HEADER_CRC, crc);
    b
}

/// Decodes a snapshot header into (last index, last term, membership length).
pub fn decode_snapshot_header(b: &[u8]) -> Result<(LogIndex, LogTerm, u32), String> {
    if b.len() < SNAPSHOT_HEADER_BYTES as usize {
        return Err("file shorter than the 64-byte snapshot header".into());
    }
    if b[..8] != SNAPSHOT_MAGIC {
        return Err("snapshot magic is not SHMRSNP".into());
    }
    let stored = get_u32(b, SNP_HEADER_CRC);
    let computed = crc_seeded(0, &b[..SNP_HEADER_CRC]);
    if stored != computed {
        return Err(format!(
            "snapshot header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    let v = get_u32(b, SNP_VERSION);
    if v != FORMAT_VERSION {
        return Err(format!(
            "snapshot format version {v}, expected {FORMAT_VERSION}"
        ));
    }
    let mlen = get_u32(b, SNP_MEMBERSHIP_LEN);
    if mlen > SNAPSHOT_MEMBERSHIP_BYTES_MAX {
        return Err(format!(
            "membership length {mlen} exceeds the maximum {SNAPSHOT_MEMBERSHIP_BYTES_MAX}"
        ));
    }
    Ok((
        LogIndex(get_u64(b, SNP_LAST_INDEX)),
        LogTerm(get_u64(b, SNP_LAST_TERM)),
        mlen,
    ))
}

/// Encodes a snapshot trailer.
pub fn encode_snapshot_trailer(data_len: u64, body_crc: u32) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[..8].copy_from_slice(&SNAPSHOT_TRAILER_MAGIC);
    put_u64(&mut b, SNT_DATA_LEN, data_len);
    put_u32(&mut b, SNT_BODY_CRC, body_crc);
    let crc = crc_seeded(0, &b[..SNT_TRAILER_CRC]);
    put_u32(&mut b, SNT_TRAILER_CRC, crc);
    b
}

/// Decodes a snapshot trailer into (data length, body CRC).
pub fn decode_snapshot_trailer(b: &[u8]) -> Result<(u64, u32), String> {
    if b.len() < SNAPSHOT_TRAILER_BYTES as usize {
        return Err("snapshot trailer truncated".into());
    }
    if b[..8] != SNAPSHOT_TRAILER_MAGIC {
        return Err("snapshot trailer magic missing (file incomplete?)".into());
    }
    let stored = get_u32(b, SNT_TRAILER_CRC);
    let computed = crc_seeded(0, &b[..SNT_TRAILER_CRC]);
    if stored != computed {
        return Err(format!(
            "snapshot trailer checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    Ok((get_u64(b, SNT_DATA_LEN), get_u32(b, SNT_BODY_CRC)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_filled_record_header_never_validates_s04() {
        let zeros = [0u8; 64];
        for seed in [0u32, 1, 0xdead_beef, u32::MAX] {
            let h = decode_record_header(&zeros).unwrap();
            assert_ne!(h.marker, RECORD_MARKER);
            assert_ne!(
                record_crc(seed, &zeros[..32], &[]),
                0,
                "a zero crc would match zeros"
            );
        }
    }

    #[test]
    fn segment_header_round_trips_and_rejects_flips() {
        let h = encode_segment_header(7, 1 << 20, 0x1234_5678);
        let d = decode_segment_header(&h).unwrap();
        assert_eq!((d.seq, d.segment_bytes, d.salt), (7, 1 << 20, 0x1234_5678));
        for bit in 0..(64 * 8) {
            let mut c = h;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_segment_header(&c).is_err(),
                "bit {bit} flip accepted"
            );
        }
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(parse_segment_file_name("seg-xyz.wal"), None);
        let n = snapshot_file_name(LogIndex(5), LogTerm(3));
        assert_eq!(
            parse_snapshot_file_name(&n),
            Some((LogIndex(5), LogTerm(3)))
        );
    }
}
