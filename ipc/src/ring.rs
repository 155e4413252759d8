//! A single-producer/single-consumer byte ring in a shared file (ipc rules 1-3, 6, 7
//! of docs/RULES.md). Layout: docs/FORMAT.md, "IPC: ring file". Offsets here mirror that document.
//!
//! Index protocol. `tail` (written only by the writer) and `head` (written only by the reader)
//! are byte positions that only grow; the byte at position `p` lives at data offset
//! `p & (capacity - 1)`. The writer fills [tail, head + capacity) privately, then publishes with
//! one store-release of `tail` per batch. The reader acquire-loads `tail`, copies and checks the
//! frames in [head, tail), then store-releases `head`. Invariant checked on every load:
//! `head <= tail <= head + capacity`, both multiples of 16.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{Ordering, fence};

use crate::Endpoint;
use crate::crc32c::crc32c;
use crate::error::{HeaderError, ProtocolError};
use crate::frame::{
    FLAG_PAD, FRAME_ALIGN, FRAME_HEADER_BYTES, FrameHeader, frame_checksum, frame_checksum_parts,
    frame_checksum_words, header_word0, record_bytes,
};
use crate::shm::SharedRegion;

/// Magic number at offset 0 of every ring file: "SHMRRING" little-endian.
pub const RING_MAGIC: u64 = u64::from_le_bytes(*b"SHMRRING");
/// Layout version of the ring file; bump with every change to docs/FORMAT.md's ring section.
pub const RING_LAYOUT_VERSION: u32 = 1;
/// Bytes of the static header (read once at attach).
pub const RING_HEADER_BYTES: usize = 128;
/// Offset of the data area (one page, so data is page-aligned).
pub const RING_DATA_OFFSET: usize = 4096;
/// Smallest accepted ring capacity.
pub const RING_MIN_BYTES: usize = 4096;
/// Largest accepted ring capacity.
pub const RING_MAX_BYTES: usize = 1 << 30;

const OFF_HEADER_CRC: usize = 124;
// Writer-owned cache line.
const OFF_TAIL: usize = 128;
const OFF_WRITER_STATE: usize = 136;
const OFF_SPACE_WAIT_SEQ: usize = 144;
// Reader-owned cache line, written per drain (128 bytes from the tail: ipc rule 2
// of docs/RULES.md).
const OFF_HEAD: usize = 256;
const OFF_READER_FLAGS: usize = 264;
// Reader-owned line written only at attach and park; the writer reads it after every publish,
// so it must not share a line with `head`.
const OFF_PARK_SEQ: usize = 384;
const OFF_READER_EPOCH: usize = 392;
const OFF_READER_PID: usize = 400;

/// `writer_state`: the writer is live and this file is current.
pub const WRITER_ACTIVE: u64 = 0;
/// `writer_state`: the writer replaced or removed this file; readers must re-open the path.
pub const WRITER_RETIRED: u64 = 1;
/// `reader_flags`: the reader found the ring corrupt and asks the writer to recreate it.
pub const READER_BROKEN: u32 = 1;

/// Bytes copied out of a ring per memcpy while draining (fits in L2 with room to spare).
const DRAIN_CHUNK_BYTES: u64 = 64 << 10;

const _: () = assert!(RING_HEADER_BYTES <= OFF_TAIL);
const _: () = assert!(OFF_HEAD - OFF_TAIL >= 128 && OFF_PARK_SEQ - OFF_HEAD >= 128);
const _: () = assert!(OFF_READER_PID + 4 <= RING_DATA_OFFSET);
const _: () = assert!(RING_MIN_BYTES % FRAME_ALIGN == 0);

/// The static ring header, written once by the creator before the file is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingHeader {
    /// Data area bytes (power of two).
    pub capacity: u64,
    /// Cluster this ring belongs to.
    pub cluster_id: u64,
    /// The writer.
    pub from: Endpoint,
    /// The reader.
    pub to: Endpoint,
    /// Pid of the writing process.
    pub writer_pid: u32,
    /// The writer's epoch: unique per process incarnation, nonzero.
    pub writer_epoch: u64,
    /// Creation time, nanoseconds since the Unix epoch (diagnostics only).
    pub created_unix_ns: u64,
}

fn encode_endpoint(e: Endpoint) -> (u8, u32) {
    match e {
        Endpoint::Node(id) => (0, id),
        Endpoint::Client(id) => (1, id),
    }
}

fn decode_endpoint(kind: u8, id: u32) -> Result<Endpoint, HeaderError> {
    match kind {
        0 => Ok(Endpoint::Node(id)),
        1 => Ok(Endpoint::Client(id)),
        k => Err(HeaderError::BadField {
            field: "endpoint_kind",
            value: u64::from(k),
        }),
    }
}

fn le_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn le_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

impl RingHeader {
    /// Encodes the 128-byte static header including its checksum.
    pub fn encode(&self) -> [u8; RING_HEADER_BYTES] {
        let mut b = [0u8; RING_HEADER_BYTES];
        b[0..8].copy_from_slice(&RING_MAGIC.to_le_bytes());
        b[8..12].copy_from_slice(&RING_LAYOUT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(RING_DATA_OFFSET as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.capacity.to_le_bytes());
        b[24..32].copy_from_slice(&self.cluster_id.to_le_bytes());
        let (fk, fi) = encode_endpoint(self.from);
        let (tk, ti) = encode_endpoint(self.to);
        b[32] = fk;
        b[33] = tk;
        b[36..40].copy_from_slice(&fi.to_le_bytes());
        b[40..44].copy_from_slice(&ti.to_le_bytes());
        b[44..48].copy_from_slice(&self.writer_pid.to_le_bytes());
        b[48..56].copy_from_slice(&self.writer_epoch.to_le_bytes());
        b[56..64].copy_from_slice(&self.created_unix_ns.to_le_bytes());
        let crc = crc32c(0, &[&b[..OFF_HEADER_CRC]]);
        b[OFF_HEADER_CRC..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header from untrusted bytes. Never panics.
    pub fn decode(b: &[u8]) -> Result<Self, HeaderError> {
        if b.len() < RING_HEADER_BYTES {
            return Err(HeaderError::Truncated { len: b.len() });
        }
        let magic = le_u64(b, 0);
        if magic != RING_MAGIC {
            return Err(HeaderError::BadMagic { found: magic });
        }
        let version = le_u32(b, 8);
        if version != RING_LAYOUT_VERSION {
            return Err(HeaderError::BadVersion {
                found: version,
                supported: RING_LAYOUT_VERSION,
            });
        }
        let stored = le_u32(b, OFF_HEADER_CRC);
        let computed = crc32c(0, &[&b[..OFF_HEADER_CRC]]);
        if stored != computed {
            return Err(HeaderError::BadChecksum { stored, computed });
        }
        let data_offset = le_u32(b, 12);
        if data_offset as usize != RING_DATA_OFFSET {
            return Err(HeaderError::BadField {
                field: "data_offset",
                value: data_offset.into(),
            });
        }
        let capacity = le_u64(b, 16);
        if !capacity.is_power_of_two()
            || capacity < RING_MIN_BYTES as u64
            || capacity > RING_MAX_BYTES as u64
        {
            return Err(HeaderError::BadField {
                field: "capacity",
                value: capacity,
            });
        }
        if b[34] != 0 || b[35] != 0 || b[64..OFF_HEADER_CRC].iter().any(|&x| x != 0) {
            return Err(HeaderError::BadField {
                field: "reserved",
                value: 0,
            });
        }
        let from = decode_endpoint(b[32], le_u32(b, 36))?;
        let to = decode_endpoint(b[33], le_u32(b, 40))?;
        let writer_pid = le_u32(b, 44);
        if writer_pid == 0 || writer_pid > i32::MAX as u32 {
            return Err(HeaderError::BadField {
                field: "writer_pid",
                value: writer_pid.into(),
            });
        }
        let writer_epoch = le_u64(b, 48);
        if writer_epoch == 0 {
            return Err(HeaderError::BadField {
                field: "writer_epoch",
                value: 0,
            });
        }
        Ok(RingHeader {
            capacity,
            cluster_id: le_u64(b, 24),
            from,
            to,
            writer_pid,
            writer_epoch,
            created_unix_ns: le_u64(b, 56),
        })
    }

    /// Total file size implied by the header.
    pub fn file_bytes(&self) -> u64 {
        RING_DATA_OFFSET as u64 + self.capacity
    }
}

/// Reads and checks the static header of the ring file at `path` without mapping it.
pub fn read_ring_header(path: &Path) -> std::io::Result<Result<RingHeader, HeaderError>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut b = [0u8; RING_HEADER_BYTES];
    let mut got = 0;
    while got < b.len() {
        let n = f.read(&mut b[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(RingHeader::decode(&b[..got]).and_then(|h| {
        if h.file_bytes() != len {
            Err(HeaderError::SizeMismatch {
                file_bytes: len,
                declared_bytes: h.file_bytes(),
            })
        } else {
            Ok(h)
        }
    }))
}

/// Test-only fault hook (fault-matrix row C9 of docs/FAULTS.md): when set to `k > 0`, the writer
/// raises SIGSTOP on itself when it reaches step `k` of a frame write, so a parent can SIGKILL it
/// exactly there. Steps: 1 space reserved, 2 half the payload written, 3 whole payload written, 4
/// header (with checksum) written, 5 batch complete but tail not yet published, 6 tail published
/// but wake-up not yet sent.
#[cfg(feature = "fault-injection")]
pub static FAULT_STOP_AT_STEP: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Test-only: the signal the writer raises at `FAULT_STOP_AT_STEP` (default SIGSTOP; SIGKILL
/// makes a process die mid-frame by itself).
#[cfg(feature = "fault-injection")]
pub static FAULT_SIGNAL: std::sync::atomic::AtomicI32 =
    std::sync::atomic::AtomicI32::new(libc::SIGSTOP);

/// Whether a test armed a fault point (always false without the `fault-injection` feature).
#[inline]
fn fault_armed() -> bool {
    #[cfg(feature = "fault-injection")]
    if FAULT_STOP_AT_STEP.load(Ordering::Relaxed) != 0 {
        return true;
    }
    false
}

#[inline]
fn fault_point(_step: u32) {
    #[cfg(feature = "fault-injection")]
    if FAULT_STOP_AT_STEP.load(Ordering::Relaxed) == _step {
        FAULT_STOP_AT_STEP.store(0, Ordering::Relaxed);
        // SAFETY: raise(2) has no memory-safety preconditions.
        unsafe { libc::raise(FAULT_SIGNAL.load(Ordering::Relaxed)) };
    }
}

/// The writing side of a ring: owns the file (created it, removes it).
pub(crate) struct RingWriter {
    region: SharedRegion,
    path: PathBuf,
    header: RingHeader,
    mask: u64,
    /// Last published tail (equals the shared `tail`: we are its only writer).
    tail: u64,
    /// End of what has been written but not yet published.
    pending: u64,
    /// Last head we loaded; `head` only grows, so a stale value is safe (less room).
    head_cache: u64,
    space_wait_seq: u64,
    /// The reader's park sequence we last woke; we wake each park at most once.
    last_woken_park: u64,
}

impl RingWriter {
    /// Creates the ring file at `dir/name` (exclusive create of a temporary name, header
    /// written, pages pre-faulted, then renamed into place: ipc rule 4 of docs/RULES.md). An
    /// existing file at the final name (our previous incarnation's) is marked retired first so its
    /// reader re-opens.
    pub(crate) fn create(dir: &Path, name: &str, header: RingHeader) -> std::io::Result<Self> {
        let path = dir.join(name);
        let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), name));
        let _ = std::fs::remove_file(&tmp);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let result = (|| {
            file.set_len(header.file_bytes())?;
            let region = SharedRegion::map(&file, header.file_bytes() as usize)?;
            region.zero(0, region.len());
            region.copy_in(0, &header.encode());
            retire_file(&path);
            std::fs::rename(&tmp, &path)?;
            Ok(region)
        })();
        let region = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        Ok(Self {
            region,
            path,
            header,
            mask: header.capacity - 1,
            tail: 0,
            pending: 0,
            head_cache: 0,
            space_wait_seq: 0,
            last_woken_park: 0,
        })
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.header.capacity
    }

    /// Reloads `head` and checks the index invariant. A violation means the reader line was
    /// corrupted: the caller recreates the ring.
    fn refresh_head(&mut self) -> Result<(), ProtocolError> {
        let head = self.region.atomic_u64(OFF_HEAD).load(Ordering::Acquire);
        if head > self.tail || self.tail - head > self.header.capacity || head % 16 != 0 {
            return Err(ProtocolError::BadIndices {
                head,
                tail: self.tail,
                capacity: self.header.capacity,
            });
        }
        // A reader that restarted may move head forward past our cache; never backward.
        self.head_cache = head.max(self.head_cache);
        Ok(())
    }

    /// Whether the reader has consumed everything before position `mark` (after refreshing
    /// head): then the ring holds nothing written before `mark`.
    pub(crate) fn reader_reached(&mut self, mark: u64) -> Result<bool, ProtocolError> {
        self.refresh_head()?;
        Ok(self.head_cache == mark)
    }

    /// Bytes the writer can still fill before publishing, after refreshing head.
    pub(crate) fn free_bytes(&mut self) -> Result<u64, ProtocolError> {
        self.refresh_head()?;
        Ok(self.header.capacity - (self.pending - self.head_cache))
    }

    fn room(&mut self, end: u64) -> Result<bool, ProtocolError> {
        if end - self.head_cache <= self.header.capacity {
            return Ok(true);
        }
        self.refresh_head()?;
        Ok(end - self.head_cache <= self.header.capacity)
    }

    /// Whether frames with these payload lengths all fit after the pending end (padding at the
    /// wrap included). Lets a batch that cannot fit fail before anything is copied or
    /// checksummed (a sender retrying on a full ring must not burn CPU its reader needs).
    /// `bound` is the caller's upper bound on the bytes they take: their records plus the
    /// largest one (a pad is shorter than the record that does not fit before the end, and a
    /// batch that fits crosses the end at most once). Within the cached free space that
    /// answers at once; otherwise the records are walked.
    pub(crate) fn fits(
        &mut self,
        bound: u64,
        lens: impl Iterator<Item = usize>,
    ) -> Result<bool, ProtocolError> {
        let cap = self.header.capacity;
        let mut pos = self.pending;
        if pos + bound - self.head_cache <= cap {
            return Ok(true);
        }
        for len in lens {
            let rec = record_bytes(len) as u64;
            let to_end = cap - (pos & self.mask);
            if rec > to_end {
                pos += to_end;
            }
            pos += rec;
            if pos - self.head_cache > cap {
                // Only now pay for a load of the reader's line.
                self.refresh_head()?;
                if pos - self.head_cache > cap {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Writes unfragmented frames after the pending end, without publishing: the batch form
    /// of `write_frame`, one call per batch (the per-frame path's call, fault-hook checks and
    /// header byte shuffling cost as much as the frame's checksum). Same bytes in the same
    /// order: per frame the payload, then the header; padding where a frame would cross the
    /// end. Returns `Ok(false)` if a frame did not fit; the caller then rolls back to its
    /// mark (frames before it were written). With a fault point armed (tests) each frame goes
    /// through `write_frame`, whose steps the tests stop at.
    pub(crate) fn write_unfragmented<'f>(
        &mut self,
        frames: impl Iterator<Item = (u16, &'f [u8])>,
    ) -> Result<bool, ProtocolError> {
        if fault_armed() {
            for (kind, payload) in frames {
                if !self.write_frame(kind, 0, 0, &[], payload)? {
                    return Ok(false);
                }
            }
            return Ok(true);
        }
        let cap = self.header.capacity;
        let epoch = self.header.writer_epoch;
        for (kind, payload) in frames {
            let len = payload.len();
            let rec = record_bytes(len) as u64;
            debug_assert!(
                rec <= cap / 2,
                "frame record {rec} too large for ring {cap}"
            );
            let mut pos = self.pending;
            let to_end = cap - (pos & self.mask);
            if rec > to_end || pos + rec - self.head_cache > cap {
                // The rare cases (padding at the end, or the cached head says full) go
                // through the general path.
                if !self.write_frame(kind, 0, 0, &[], payload)? {
                    return Ok(false);
                }
                continue;
            }
            let w0 = header_word0(len as u32, kind, 0);
            let checksum = frame_checksum_words(epoch, pos, w0, 0, payload);
            let off = RING_DATA_OFFSET + (pos & self.mask) as usize;
            // Payload first, header last (as in `write_frame`); neither is visible before
            // `publish` stores the tail.
            self.region.copy_in(off + FRAME_HEADER_BYTES, payload);
            let mut header = [0u8; FRAME_HEADER_BYTES];
            header[..8].copy_from_slice(&w0.to_le_bytes());
            header[12..].copy_from_slice(&checksum.to_le_bytes());
            self.region.copy_in(off, &header);
            pos += rec;
            self.pending = pos;
        }
        Ok(true)
    }

    /// Writes one frame after the pending end, without publishing. Returns `Ok(false)` (and
    /// writes nothing) when it does not fit. `payload` is gathered from two slices so a
    /// fragment's length prefix needs no copy.
    pub(crate) fn write_frame(
        &mut self,
        kind: u16,
        flags: u8,
        fragment_index: u32,
        prefix: &[u8],
        payload: &[u8],
    ) -> Result<bool, ProtocolError> {
        let len = prefix.len() + payload.len();
        let rec = record_bytes(len) as u64;
        let cap = self.header.capacity;
        debug_assert!(
            rec <= cap / 2,
            "frame record {rec} too large for ring {cap}"
        );
        let mut pos = self.pending;
        let to_end = cap - (pos & self.mask);
        let pad = if rec > to_end { to_end } else { 0 };
        if !self.room(pos + pad + rec)? {
            return Ok(false);
        }
        fault_point(1);
        if pad > 0 {
            // Padding record up to the end of the data area; frames never wrap (FORMAT.md).
            let mut h = FrameHeader {
                payload_len: (pad - FRAME_HEADER_BYTES as u64) as u32,
                kind: 0,
                flags: FLAG_PAD,
                fragment_index: 0,
                checksum: 0,
            };
            let b = h.encode();
            h.checksum = frame_checksum(self.header.writer_epoch, pos, &b, &[]);
            self.region
                .copy_in(RING_DATA_OFFSET + (pos & self.mask) as usize, &h.encode());
            pos += pad;
        }
        let off = RING_DATA_OFFSET + (pos & self.mask) as usize;
        let mut header = FrameHeader {
            payload_len: len as u32,
            kind,
            flags,
            fragment_index,
            checksum: 0,
        }
        .encode();
        // Checksum over header[0..12] + prefix + payload, seeded by epoch and position,
        // computed from private memory (never from the shared copy), then stored in the
        // header's last 4 bytes (FrameHeader::encode's layout).
        let checksum =
            frame_checksum_parts(self.header.writer_epoch, pos, &header, prefix, payload);
        header[12..16].copy_from_slice(&checksum.to_le_bytes());
        // Payload first, header last; neither is visible before `publish` stores the tail.
        let body = off + FRAME_HEADER_BYTES;
        if !prefix.is_empty() {
            self.region.copy_in(body, prefix);
        }
        if fault_armed() {
            // Two halves, so a test can stop us with half the payload written (step 2).
            let half = payload.len() / 2;
            self.region.copy_in(body + prefix.len(), &payload[..half]);
            fault_point(2);
            self.region
                .copy_in(body + prefix.len() + half, &payload[half..]);
        } else {
            self.region.copy_in(body + prefix.len(), payload);
        }
        fault_point(3);
        self.region.copy_in(off, &header);
        fault_point(4);
        self.pending = pos + rec;
        Ok(true)
    }

    /// The end of what has been written so far (a mark for `rollback_to`).
    pub(crate) fn pending_end(&self) -> u64 {
        self.pending
    }

    /// Forgets what was written after `mark` (from `pending_end`), which must not be before
    /// the published tail.
    pub(crate) fn rollback_to(&mut self, mark: u64) {
        assert!(
            self.tail <= mark && mark <= self.pending,
            "rollback mark {mark} outside [{}, {}]",
            self.tail,
            self.pending
        );
        self.pending = mark;
    }

    /// Whether anything is written but unpublished.
    pub(crate) fn has_pending(&self) -> bool {
        self.pending != self.tail
    }

    /// Publishes everything written so far with one store-release (ipc rule 6 of docs/RULES.md),
    /// then checks whether the reader is parked. Returns true when the caller must send a wake-up.
    pub(crate) fn publish(&mut self) -> bool {
        if self.pending == self.tail {
            return false;
        }
        fault_point(5);
        self.tail = self.pending;
        self.region
            .atomic_u64(OFF_TAIL)
            .store(self.tail, Ordering::Release);
        // Dekker-style handshake with the reader's park (ipc rule 5 of docs/RULES.md): our tail
        // store and its park store are both followed by a SeqCst fence before loading the other's
        // word, so at least one side sees the other.
        fence(Ordering::SeqCst);
        fault_point(6);
        let park = self.region.atomic_u64(OFF_PARK_SEQ).load(Ordering::Relaxed);
        if park % 2 == 1 && park != self.last_woken_park {
            self.last_woken_park = park;
            return true;
        }
        false
    }

    /// Announces that we wait for space, then re-checks. Returns true if space appeared
    /// meanwhile (retry now); otherwise the reader will wake us after it frees space.
    pub(crate) fn wait_for_space(&mut self, need: u64) -> Result<bool, ProtocolError> {
        self.space_wait_seq += 1;
        self.region
            .atomic_u64(OFF_SPACE_WAIT_SEQ)
            .store(self.space_wait_seq, Ordering::Release);
        fence(Ordering::SeqCst);
        Ok(self.free_bytes()? >= need)
    }

    /// The reader's epoch and flags, for the slow-path health check.
    pub(crate) fn reader_status(&self) -> (u64, u32, u32) {
        (
            self.region
                .atomic_u64(OFF_READER_EPOCH)
                .load(Ordering::Acquire),
            self.region
                .atomic_u32(OFF_READER_FLAGS)
                .load(Ordering::Acquire),
            self.region
                .atomic_u32(OFF_READER_PID)
                .load(Ordering::Acquire),
        )
    }

    /// Retires and removes the file (clean shutdown, or replacement).
    pub(crate) fn retire_and_remove(&self) {
        self.region
            .atomic_u64(OFF_WRITER_STATE)
            .store(WRITER_RETIRED, Ordering::Release);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Marks the ring file at `path` retired, if there is a valid one, so a reader still attached
/// to it re-opens the path. Best effort: a missing or invalid file needs no notice.
pub(crate) fn retire_file(path: &Path) {
    let Ok(Ok(h)) = read_ring_header(path) else {
        return;
    };
    let Ok(file) = OpenOptions::new().read(true).write(true).open(path) else {
        return;
    };
    if let Ok(region) = SharedRegion::map(&file, h.file_bytes() as usize) {
        region
            .atomic_u64(OFF_WRITER_STATE)
            .store(WRITER_RETIRED, Ordering::Release);
    }
}

/// What a reader expects of a ring before attaching.
pub(crate) struct Expect {
    pub(crate) cluster_id: u64,
    pub(crate) from: Endpoint,
    pub(crate) to: Endpoint,
}

/// One record handed up by `RingReader::drain`.
pub(crate) struct Record<'a> {
    pub(crate) kind: u16,
    pub(crate) flags: u8,
    pub(crate) fragment_index: u32,
    pub(crate) payload: &'a [u8],
}

/// Outcome of attaching to a ring file.
pub(crate) enum AttachError {
    /// No file (the writer is not running).
    Missing,
    /// An I/O error other than "missing".
    Io(std::io::Error),
    /// The file is not a ring we may read.
    Rejected(HeaderError),
}

/// The reading side of a ring.
pub(crate) struct RingReader {
    region: SharedRegion,
    pub(crate) header: RingHeader,
    mask: u64,
    head: u64,
    space_seen_seq: u64,
    park_seq: u64,
    /// Holds the file open so the mapping's inode is not reused while we read it.
    _file: File,
}

impl RingReader {
    /// Opens, validates and maps the ring at `path` (ipc rule 4 of docs/RULES.md), then registers
    /// us as its reader. If a previous reader incarnation existed, we start at the current tail:
    /// frames it left behind belong to the dead incarnation's view.
    pub(crate) fn attach(
        path: &Path,
        expect: &Expect,
        my_pid: u32,
        my_epoch: u64,
    ) -> Result<Self, AttachError> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(AttachError::Missing),
            Err(e) => return Err(AttachError::Io(e)),
        };
        let len = file.metadata().map_err(AttachError::Io)?.len();
        let mut b = [0u8; RING_HEADER_BYTES];
        {
            use std::os::unix::fs::FileExt;
            file.read_exact_at(&mut b, 0)
                .map_err(|_| AttachError::Rejected(HeaderError::Truncated { len: len as usize }))?;
        }
        let header = RingHeader::decode(&b).map_err(AttachError::Rejected)?;
        if header.file_bytes() != len {
            return Err(AttachError::Rejected(HeaderError::SizeMismatch {
                file_bytes: len,
                declared_bytes: header.file_bytes(),
            }));
        }
        if header.cluster_id != expect.cluster_id {
            return Err(AttachError::Rejected(HeaderError::WrongCluster {
                found: header.cluster_id,
                expected: expect.cluster_id,
            }));
        }
        if header.from != expect.from || header.to != expect.to {
            return Err(AttachError::Rejected(HeaderError::WrongEndpoints {
                found_from: header.from,
                found_to: header.to,
                expected_from: expect.from,
                expected_to: expect.to,
            }));
        }
        if !crate::dir::pid_alive(header.writer_pid) {
            return Err(AttachError::Rejected(HeaderError::WriterDead {
                pid: header.writer_pid,
            }));
        }
        let region = SharedRegion::map(&file, len as usize).map_err(AttachError::Io)?;
        let tail = region.atomic_u64(OFF_TAIL).load(Ordering::Acquire);
        let prev_reader = region.atomic_u64(OFF_READER_EPOCH).load(Ordering::Acquire);
        let shared_head = region.atomic_u64(OFF_HEAD).load(Ordering::Acquire);
        let capacity = header.capacity;
        let sane = shared_head <= tail && tail - shared_head <= capacity && tail % 16 == 0;
        let head = if prev_reader == 0 && sane && shared_head % 16 == 0 {
            shared_head
        } else if tail % 16 == 0 {
            tail
        } else {
            return Err(AttachError::Rejected(HeaderError::BadField {
                field: "tail",
                value: tail,
            }));
        };
        let park_seq = region.atomic_u64(OFF_PARK_SEQ).load(Ordering::Acquire);
        // Keep the park sequence monotonic across reader incarnations, and even (= awake).
        let park_seq = park_seq.wrapping_add(park_seq % 2);
        region
            .atomic_u64(OFF_PARK_SEQ)
            .store(park_seq, Ordering::Release);
        region.atomic_u64(OFF_HEAD).store(head, Ordering::Release);
        region
            .atomic_u32(OFF_READER_FLAGS)
            .store(0, Ordering::Release);
        region
            .atomic_u32(OFF_READER_PID)
            .store(my_pid, Ordering::Release);
        region
            .atomic_u64(OFF_READER_EPOCH)
            .store(my_epoch, Ordering::Release);
        let space_seen_seq = region
            .atomic_u64(OFF_SPACE_WAIT_SEQ)
            .load(Ordering::Acquire);
        Ok(Self {
            region,
            header,
            mask: capacity - 1,
            head,
            space_seen_seq,
            park_seq,
            _file: file,
        })
    }

    /// Whether the writer published anything we have not consumed (one acquire load; the
    /// spin loop's probe).
    #[inline]
    pub(crate) fn has_data(&self) -> bool {
        self.region.atomic_u64(OFF_TAIL).load(Ordering::Acquire) != self.head
    }

    /// Whether the writer retired this file (replaced it with a new epoch, or removed it).
    pub(crate) fn retired(&self) -> bool {
        self.region
            .atomic_u64(OFF_WRITER_STATE)
            .load(Ordering::Acquire)
            != WRITER_ACTIVE
    }

    /// Sets `parked` (an odd park sequence), so the writer wakes us after its next publish.
    pub(crate) fn park(&mut self) {
        self.park_seq = self.park_seq.wrapping_add(1) | 1;
        self.region
            .atomic_u64(OFF_PARK_SEQ)
            .store(self.park_seq, Ordering::SeqCst);
    }

    /// Clears `parked`.
    pub(crate) fn unpark(&mut self) {
        if self.park_seq % 2 == 1 {
            self.park_seq = self.park_seq.wrapping_add(1);
            self.region
                .atomic_u64(OFF_PARK_SEQ)
                .store(self.park_seq, Ordering::Release);
        }
    }

    /// Asks the writer to recreate the ring (indices corrupt beyond local repair).
    pub(crate) fn mark_broken(&self) {
        self.region
            .atomic_u32(OFF_READER_FLAGS)
            .store(READER_BROKEN, Ordering::Release);
    }

    /// Copies out and checks every published frame, hands each to `on_record`, then releases
    /// the space with one store-release of `head`. On a protocol error, frames before the bad
    /// one have been delivered, the rest of the published data is skipped (head = tail) and the
    /// error is returned so the link can be reset and the cause logged (ipc rule 3
    /// of docs/RULES.md). Returns the number of records delivered.
    pub(crate) fn drain(
        &mut self,
        scratch: &mut Vec<u8>,
        mut on_record: impl FnMut(Record<'_>),
    ) -> Result<usize, ProtocolError> {
        let tail = self.region.atomic_u64(OFF_TAIL).load(Ordering::Acquire);
        if tail == self.head {
            return Ok(0);
        }
        let cap = self.header.capacity;
        if tail < self.head || tail - self.head > cap || tail % 16 != 0 {
            return Err(ProtocolError::BadIndices {
                head: self.head,
                tail,
                capacity: cap,
            });
        }
        let epoch = self.header.writer_epoch;
        let mut pos = self.head;
        let mut released = self.head;
        let mut delivered = 0usize;
        let mut result = Ok(());
        // Each frame is copied out once (header, then payload into `scratch`) and checked in
        // private memory before it is handed up: no reference into shared memory, and no
        // check-then-use race with a hostile writer (ipc rule 3 of docs/RULES.md).
        // Published bytes are copied out in chunks of up to DRAIN_CHUNK_BYTES (one memcpy for
        // many small frames), then each frame is checked in that private copy.
        let mut chunk_start = pos;
        let mut chunk_len = 0u64;
        while pos < tail {
            let off = pos & self.mask;
            let avail = tail - pos;
            let to_end = cap - off;
            // Fast path: an unfragmented frame whose header and payload are already in the
            // copied chunk. Same checks as `FrameHeader::decode` (flags, reserved byte and
            // fragment index all zero) on two words, then length and checksum.
            let chunk_end = chunk_start + chunk_len;
            if pos + FRAME_HEADER_BYTES as u64 <= chunk_end {
                let at = (pos - chunk_start) as usize;
                let (hb, rest) = scratch[at..].split_at(FRAME_HEADER_BYTES);
                let w0 = u64::from_le_bytes(hb[0..8].try_into().expect("8 bytes"));
                let w1 = u64::from_le_bytes(hb[8..16].try_into().expect("8 bytes"));
                let len = u64::from(w0 as u32);
                let rec = FRAME_HEADER_BYTES as u64 + len.next_multiple_of(FRAME_ALIGN as u64);
                if w0 >> 48 == 0
                    && w1 as u32 == 0
                    && pos + FRAME_HEADER_BYTES as u64 + len <= chunk_end
                    && rec <= avail
                    && rec <= to_end
                {
                    let payload = &rest[..len as usize];
                    if frame_checksum_words(epoch, pos, w0, w1 as u32, payload) != (w1 >> 32) as u32
                    {
                        result = Err(ProtocolError::ChecksumMismatch { pos });
                        break;
                    }
                    on_record(Record {
                        kind: (w0 >> 32) as u16,
                        flags: 0,
                        fragment_index: 0,
                        payload,
                    });
                    delivered += 1;
                    pos += rec;
                    self.release_quarter(pos, &mut released);
                    continue;
                }
            }
            if avail < FRAME_HEADER_BYTES as u64 {
                result = Err(ProtocolError::BadFrame {
                    pos,
                    reason: "header past tail",
                });
                break;
            }
            if pos + FRAME_HEADER_BYTES as u64 > chunk_start + chunk_len {
                chunk_start = pos;
                chunk_len = avail.min(to_end).min(DRAIN_CHUNK_BYTES);
                self.copy_chunk(scratch, off, chunk_len);
            }
            let at = (pos - chunk_start) as usize;
            let h = match FrameHeader::decode(&scratch[at..at + FRAME_HEADER_BYTES], pos) {
                Ok(h) => h,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let (rec, len) = if h.flags == FLAG_PAD {
                if u64::from(h.payload_len) + FRAME_HEADER_BYTES as u64 != to_end || to_end > avail
                {
                    result = Err(ProtocolError::BadFrame {
                        pos,
                        reason: "pad length",
                    });
                    break;
                }
                (to_end, 0)
            } else {
                let len = h.payload_len as usize;
                let rec = record_bytes(len) as u64;
                if rec > to_end || rec > avail {
                    result = Err(ProtocolError::BadFrame {
                        pos,
                        reason: "length past tail",
                    });
                    break;
                }
                (rec, len)
            };
            let end = pos + FRAME_HEADER_BYTES as u64 + len as u64;
            if end > chunk_start + chunk_len {
                // A frame longer than what the chunk holds: copy it (from its header) whole.
                chunk_start = pos;
                chunk_len = avail.min(to_end).min(DRAIN_CHUNK_BYTES.max(rec));
                self.copy_chunk(scratch, off, chunk_len);
            }
            let at = (pos - chunk_start) as usize;
            let (hb, rest) = scratch[at..].split_at(FRAME_HEADER_BYTES);
            let payload = &rest[..len];
            if frame_checksum(epoch, pos, hb, payload) != h.checksum {
                result = Err(ProtocolError::ChecksumMismatch { pos });
                break;
            }
            if h.flags != FLAG_PAD {
                on_record(Record {
                    kind: h.kind,
                    flags: h.flags,
                    fragment_index: h.fragment_index,
                    payload,
                });
                delivered += 1;
            }
            pos += rec;
            self.release_quarter(pos, &mut released);
        }
        // On error, skip everything published: the writer's next frames start at `tail`.
        self.head = tail;
        self.region
            .atomic_u64(OFF_HEAD)
            .store(self.head, Ordering::Release);
        result.map(|()| delivered)
    }

    /// During a long drain, releases the space up to `pos` once a quarter of the ring has
    /// been consumed since `released`, so the writer can keep going while we process.
    #[inline(always)]
    fn release_quarter(&mut self, pos: u64, released: &mut u64) {
        if pos - *released >= self.header.capacity / 4 {
            *released = pos;
            self.head = pos;
            self.region
                .atomic_u64(OFF_HEAD)
                .store(pos, Ordering::Release);
        }
    }

    /// Copies `len` published bytes at data offset `off` into the start of `scratch`.
    fn copy_chunk(&self, scratch: &mut Vec<u8>, off: u64, len: u64) {
        let len = len as usize;
        if scratch.len() < len {
            scratch.resize(len, 0);
        }
        self.region
            .copy_out(RING_DATA_OFFSET + off as usize, &mut scratch[..len]);
    }

    /// After releasing space: whether the writer announced it waits for space since we last
    /// looked (then the caller sends it a wake-up).
    pub(crate) fn writer_wants_space(&mut self) -> bool {
        fence(Ordering::SeqCst);
        let seq = self
            .region
            .atomic_u64(OFF_SPACE_WAIT_SEQ)
            .load(Ordering::Acquire);
        if seq != self.space_seen_seq {
            self.space_seen_seq = seq;
            return true;
        }
        false
    }
}
