//! The segmented write-ahead log.
//!
//! Layout and crash handling are specified in docs/FORMAT.md ("Storage"). In short: segment
//! files `seg-<seq>.wal` of a fixed size, preallocated and prepared ahead of time by a
//! background thread; records appended by copying into a shared read-write mapping; the active
//! segment is synced with `msync(MS_SYNC)` on exactly the range written since the last sync; a
//! full segment is sealed with a footer (offset index and trailer) so opening a large log reads
//! footers, not records.

use crate::error::{Corruption, FatalError, Result, StorageError};
use crate::format::{
    self, OFFSET_ENTRY_BYTES, RECORD_HEADER_BYTES, RECORD_MARKER, RecordCheck, RecordRules,
    SEGMENT_HEADER_BYTES, TRAILER_BYTES, Trailer,
};
use crate::ledger::{Ledger, LedgerView};
use crate::policy::FsyncPolicy;
use crate::segment::{NO_SLOT, Segment};
use crate::slotfile::SlotFile;
use crate::sys::{self, Faults};
use crate::types::{Entry, EntryKind, EntryRef, LogIndex, LogTerm};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod recovery;

/// Options of the write-ahead log (part of [`crate::StorageOptions`]).
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Size of every segment file, bytes (default 64 MiB; 64 KiB ..= 2 GiB, multiple of 4096).
    pub segment_bytes: u64,
    /// Largest payload accepted, bytes (default 16 MiB; clamped to what fits in a segment).
    pub entry_bytes_max: u64,
    /// When appended entries are synced and acknowledged.
    pub fsync_policy: FsyncPolicy,
    /// Zero-fill new segments after fallocate: turns unwritten extents into written ones on the
    /// preparer thread, so an append-path sync flushes data only (no extent-conversion journal
    /// commit), at the price of writing every segment byte twice. `None` (default): on under
    /// `always` and `batch` (sync latency matters), off under `interval` and `never`
    /// (throughput matters). Without zero fill the preparer pre-faults the mapping writable
    /// (MADV_POPULATE_WRITE) so page allocation and zeroing stay off the append path; the kernel
    /// then writes those zero pages back in the background.
    pub zero_fill_segments: Option<bool>,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            entry_bytes_max: 16 << 20,
            fsync_policy: FsyncPolicy::Always,
            zero_fill_segments: None,
        }
    }
}

/// Payloads at least this large enter the page cache by `pwritev` whatever the policy: one
/// syscall per >= 16 KiB is cheap next to the write faults (and kernel page zeroing) a memcpy
/// into fresh mapping pages costs, one per 4 KiB page (measured: 64 KiB entries ~1.2 GB/s by
/// memcpy, see BENCHMARKS.md / `examples/wal_quick.rs`).
pub const PWRITE_PAYLOAD_BYTES_MIN: u64 = 16 << 10;

/// Under `always`, consecutive records of one append are gathered and written with one
/// `pwrite` of at most this many bytes (see `Wal::write_record`).
const PWRITE_RUN_BYTES_MAX: usize = 1 << 20;

impl WalOptions {
    /// Whether new segments are zero-filled (resolving the `None` default by policy).
    pub fn zero_fill(&self) -> bool {
        self.zero_fill_segments
            .unwrap_or(self.fsync_policy.acknowledges_after_sync())
    }
}

/// Smallest and largest segment sizes accepted.
pub const SEGMENT_BYTES_MIN: u64 = 64 << 10;
pub const SEGMENT_BYTES_MAX: u64 = 2 << 30;

/// What a completed (or failed) sync reports to a listener.
#[derive(Debug, Clone)]
pub enum SyncEvent {
    /// Every entry up to this index is durable.
    Durable(LogIndex),
    /// A sync failed: the log is poisoned.
    Failed(Arc<FatalError>),
}

type Listener = Arc<dyn Fn(SyncEvent) + Send + Sync>;

#[derive(Debug, Default)]
struct BatchCtl {
    pending_bytes: u64,
    dirty_since: Option<Instant>,
}

struct SyncState {
    /// Segments that may hold unsynced bytes, oldest first (always includes the active one).
    dirty: Vec<Arc<Segment>>,
}

/// State shared by the writer, [`SyncHandle`]s and the background threads.
struct WalShared {
    dir: PathBuf,
    state: Mutex<SyncState>,
    ledger: Arc<Ledger>,
    durable: AtomicU64,
    /// Completed msync calls (one per dirty segment per sync), for statistics.
    syncs: AtomicU64,
    fatal: OnceLock<Arc<FatalError>>,
    faults: Faults,
    listener: Mutex<Option<Listener>>,
    batch: Mutex<BatchCtl>,
    batch_cv: Condvar,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WalShared {
    /// State shared with the sync threads of a log recovered up to (and durable at)
    /// `durable`.
    fn new(dir: &Path, ledger: Arc<Ledger>, durable: LogIndex, faults: Faults) -> WalShared {
        WalShared {
            dir: dir.to_path_buf(),
            state: Mutex::new(SyncState { dirty: Vec::new() }),
            ledger,
            durable: AtomicU64::new(durable.0),
            syncs: AtomicU64::new(0),
            fatal: OnceLock::new(),
            faults,
            listener: Mutex::new(None),
            batch: Mutex::new(BatchCtl::default()),
            batch_cv: Condvar::new(),
            stop: AtomicBool::new(false),
        }
    }

    fn fatal_err(&self) -> Option<StorageError> {
        self.fatal.get().map(|f| StorageError::Fatal(f.clone()))
    }

    fn poison(&self, f: Arc<FatalError>) -> StorageError {
        let _ = self.fatal.set(f);
        let f = self.fatal.get().cloned().expect("fatal error was just set");
        tracing::error!(error = %f, "write-ahead log poisoned by a failed sync");
        self.notify(SyncEvent::Failed(f.clone()));
        StorageError::Fatal(f)
    }

    fn notify(&self, ev: SyncEvent) {
        let l = lock(&self.listener).clone();
        if let Some(l) = l {
            l(ev);
        }
    }

    /// Syncs every dirty segment with the lock held; returns the new durable index.
    fn sync_locked(&self, st: &mut SyncState) -> Result<LogIndex> {
        if let Some(e) = self.fatal_err() {
            return Err(e);
        }
        let mut covered = 0u64;
        for seg in &st.dirty {
            // Index first, then bytes: `publish` stores them in the other order, so the bytes
            // read here cover at least the index read (never claim an unsynced index).
            let last = seg.written_last.load(Ordering::Acquire);
            let end = seg.written.load(Ordering::Acquire);
            let synced = seg.synced.load(Ordering::Acquire);
            if end > synced {
                if let Err(f) = sys::msync(seg.map(), synced, end - synced, &seg.path, &self.faults)
                {
                    return Err(self.poison(f));
                }
                self.syncs.fetch_add(1, Ordering::Relaxed);
                seg.synced.store(end, Ordering::Release);
                let slot = seg.ledger_slot.load(Ordering::Acquire);
                if slot != NO_SLOT {
                    self.ledger.set_synced(slot, end);
                }
            }
            covered = covered.max(last);
        }
        // A sealed segment synced to its end needs no ledger slot any more.
        let ledger = &self.ledger;
        let n = st.dirty.len();
        st.dirty.retain(|s| {
            let done = s.sealed.load(Ordering::Acquire)
                && s.synced.load(Ordering::Acquire) >= s.bytes
                && n > 1;
            if done {
                let slot = s.ledger_slot.swap(NO_SLOT, Ordering::AcqRel);
                if slot != NO_SLOT {
                    ledger.free(slot);
                }
            }
            !done
        });
        let prev = self.durable.fetch_max(covered, Ordering::AcqRel);
        Ok(LogIndex(prev.max(covered)))
    }

    fn sync(&self) -> Result<LogIndex> {
        let r = {
            let mut st = lock(&self.state);
            self.sync_locked(&mut st)
        };
        if let Ok(d) = r {
            self.notify(SyncEvent::Durable(d));
        }
        r
    }
}

/// A cloneable, `Send + Sync` handle that syncs the log from any thread, so a node's event loop
/// can run its group commit on a dedicated sync thread (Raft thesis 10.2.1: the leader sends
/// entries to followers while its own sync runs).
#[derive(Clone)]
pub struct SyncHandle {
    shared: Arc<WalShared>,
}

impl std::fmt::Debug for SyncHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncHandle")
            .field("dir", &self.shared.dir)
            .finish()
    }
}

impl SyncHandle {
    /// Makes everything appended so far durable (`msync(MS_SYNC)` on the unsynced range of each
    /// segment that has one) and returns the durable index. Syncs are serialised. A failure is
    /// fatal and poisons the log (storage rule 10 of docs/RULES.md).
    pub fn sync(&self) -> Result<LogIndex> {
        self.shared.sync()
    }

    /// Highest index covered by a completed sync (storage rule 11 of docs/RULES.md).
    pub fn durable_index(&self) -> LogIndex {
        LogIndex(self.shared.durable.load(Ordering::Acquire))
    }

    /// The fatal error that poisoned the log, if any.
    pub fn fatal_error(&self) -> Option<Arc<FatalError>> {
        self.shared.fatal.get().cloned()
    }
}

/// One segment of the log, as the writer sees it.
#[derive(Debug)]
struct SegEntry {
    seg: Arc<Segment>,
    /// First index stored in this segment (for an empty segment: the index its first record
    /// will have).
    first: LogIndex,
    /// Last index stored (`first - 1` when empty).
    last: LogIndex,
    /// Record offsets of a sealed segment, loaded from its footer on first read.
    sealed_offsets: OnceLock<Vec<u32>>,
    /// Offset index position of a sealed segment (from its trailer).
    trailer: Option<Trailer>,
}

/// Writer state of the active (last) segment.
#[derive(Debug)]
struct Active {
    write_pos: u64,
    offsets: Vec<u32>,
    /// CRC32 chain over the record CRCs, seeded with the segment seed (the footer's segment
    /// checksum).
    chain: crc32fast::Hasher,
    first_term: LogTerm,
}

/// Background segment preparer (storage rule 1 of docs/RULES.md: prepare the next segment off the
/// hot path).
struct Preparer {
    tx: Option<mpsc::Sender<u64>>,
    rx: mpsc::Receiver<Result<Segment>>,
    pending: bool,
    /// Ask for the next segment only once the active one is half full (zero-filling policies):
    /// a 64 MiB zero fill competes for the disk with the append path's syncs, so it should not
    /// run right after open or rotation, when a burst of synced appends is likely.
    defer: bool,
    next_seq: u64,
    handle: Option<JoinHandle<()>>,
}

impl Preparer {
    fn start(dir: PathBuf, bytes: u64, zero_fill: bool, faults: Faults, next_seq: u64) -> Self {
        let (tx, req_rx) = mpsc::channel::<u64>();
        let (res_tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("wal-preparer".into())
            .spawn(move || {
                if zero_fill {
                    set_io_priority_idle();
                }
                while let Ok(seq) = req_rx.recv() {
                    let r = Segment::create(&dir, seq, bytes, zero_fill, &faults);
                    if res_tx.send(r).is_err() {
                        break;
                    }
                }
            })
            .ok();
        let mut p = Preparer {
            tx: Some(tx),
            rx,
            pending: false,
            defer: zero_fill,
            next_seq,
            handle,
        };
        if !p.defer {
            p.request();
        }
        p
    }

    fn request(&mut self) {
        if !self.pending {
            if let Some(tx) = &self.tx {
                if tx.send(self.next_seq).is_ok() {
                    self.pending = true;
                }
            }
        }
    }

    /// Takes the prepared segment (waits if it is not ready yet) and asks for the next one.
    fn take(
        &mut self,
        dir: &Path,
        bytes: u64,
        zero_fill: bool,
        faults: &Faults,
    ) -> Result<Segment> {
        let r = if self.pending {
            self.pending = false;
            match self.rx.recv() {
                // The background attempt found the disk full, possibly long ago (it runs
                // ahead of need): space may have been freed since, so try once more now.
                Ok(Err(StorageError::DiskFull { .. })) => {
                    Segment::create(dir, self.next_seq, bytes, zero_fill, faults)
                }
                Ok(r) => r,
                // The thread is gone (spawn failed): prepare inline.
                Err(_) => Segment::create(dir, self.next_seq, bytes, zero_fill, faults),
            }
        } else {
            Segment::create(dir, self.next_seq, bytes, zero_fill, faults)
        };
        if r.is_ok() {
            self.next_seq += 1;
            if !self.defer {
                self.request();
            }
        }
        r
    }
}

/// Background removal of compacted segments. `compact` makes the compaction point durable
/// first (storage rule 14 of docs/RULES.md) and takes the segments out of the log; unlinking them
/// and syncing the directory can then happen off the caller's thread (the node's event loop), where
/// an unlink of a large file plus a directory sync cost milliseconds. A crash before they finish
/// leaves segments wholly below the durable compaction point, which recovery removes.
struct Remover {
    tx: Option<mpsc::Sender<RemoverMsg>>,
    handle: Option<JoinHandle<()>>,
}

enum RemoverMsg {
    /// Segments out of the log: unlinked, then dropped here (the last reference unmaps them,
    /// another cost kept off the caller's thread).
    Remove(Vec<Arc<Segment>>),
    /// Answered once every earlier removal is done (`Wal::wait_for_removals`).
    Flush(mpsc::SyncSender<()>),
}

impl Remover {
    fn start(shared: Arc<WalShared>) -> Self {
        let (tx, rx) = mpsc::channel::<RemoverMsg>();
        let handle = std::thread::Builder::new()
            .name("wal-remover".into())
            .spawn(move || {
                while let Ok(msg) = rx.recv() {
                    match msg {
                        RemoverMsg::Remove(segs) => remove_segments(&shared, &segs),
                        RemoverMsg::Flush(ack) => {
                            let _ = ack.send(());
                        }
                    }
                }
            })
            .ok();
        Remover {
            tx: handle.is_some().then_some(tx),
            handle,
        }
    }

    /// Hands `segs` to the thread (or removes them here if it could not be started).
    fn remove(&self, shared: &WalShared, segs: Vec<Arc<Segment>>) {
        if segs.is_empty() {
            return;
        }
        match &self.tx {
            Some(tx) => {
                if let Err(mpsc::SendError(RemoverMsg::Remove(segs))) =
                    tx.send(RemoverMsg::Remove(segs))
                {
                    remove_segments(shared, &segs);
                }
            }
            None => remove_segments(shared, &segs),
        }
    }

    fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (ack_tx, ack_rx) = mpsc::sync_channel(1);
            if tx.send(RemoverMsg::Flush(ack_tx)).is_ok() {
                let _ = ack_rx.recv();
            }
        }
    }

    /// Finishes the queued removals and stops the thread.
    fn stop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Unlinks compacted segments, then syncs the directory once. An unlink that fails is logged
/// and left to recovery (the segment lies below the durable compaction point); a failed
/// directory sync poisons the log (storage rule 10 of docs/RULES.md).
fn remove_segments(shared: &WalShared, segs: &[Arc<Segment>]) {
    for seg in segs {
        let p = &seg.path;
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                file = %p.display(), error = %e,
                "cannot remove a compacted segment; recovery removes it at the next start"
            ),
        }
    }
    if let Err(f) = sys::fsync_dir(&shared.dir, &shared.faults) {
        let _ = shared.poison(f);
    }
}

/// Puts the calling thread in the idle I/O class (ioprio_set(2); honoured by the mq-deadline
/// and BFQ schedulers), so a segment's zero fill yields the disk to the append path's syncs.
/// Best effort: ignored where unsupported.
fn set_io_priority_idle() {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
    // SAFETY: ioprio_set takes three integers (who = 0: the calling thread); no memory of ours.
    let _ = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        )
    };
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The segmented write-ahead log. Obtain it from [`crate::Storage::open`].
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    entry_bytes_max: u64,
    segs: Vec<SegEntry>,
    active: Active,
    first_index: LogIndex,
    last_index: LogIndex,
    last_term: LogTerm,
    compacted_index: LogIndex,
    compacted_term: LogTerm,
    meta: SlotFile,
    shared: Arc<WalShared>,
    preparer: Preparer,
    remover: Remover,
    background: Option<JoinHandle<()>>,
    /// Records enter the page cache by `pwrite` instead of a memcpy (under `always`).
    write_by_pwrite: bool,
    /// Records gathered for one `pwrite` (`write_record`, `flush_run`), and where they start in
    /// the active segment.
    run_buf: Vec<u8>,
    run_start: u64,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("first_index", &self.first_index)
            .field("last_index", &self.last_index)
            .field("durable_index", &self.durable_index())
            .field("segments", &self.segs.len())
            .finish()
    }
}

/// Result of scanning the records of one segment.
struct Scan {
    offsets: Vec<u32>,
    chain: crc32fast::Hasher,
    end: u64,
    first_term: LogTerm,
    last: Option<(LogIndex, LogTerm)>,
    /// Why the scan stopped before `end` of the segment (None: clean end / zeros).
    stop_reason: Option<String>,
}

/// Scans records from the header on; stops at the first record that is not valid here
/// ([`format::check_record`] decides, the same rule `raft-dump` applies).
fn scan_records(seg: &Segment, mut expect: Option<LogIndex>, mut prev_term: LogTerm) -> Scan {
    let mut s = Scan {
        offsets: Vec::new(),
        chain: crc32fast::Hasher::new_with_initial(seg.seed),
        end: SEGMENT_HEADER_BYTES,
        first_term: LogTerm(0),
        last: None,
        stop_reason: None,
    };
    let bytes = seg.slice(0, seg.bytes).unwrap_or(&[]);
    loop {
        let rules = RecordRules {
            expect,
            prev_term,
            area_end: seg.bytes - TRAILER_BYTES,
            index_room: format::open_segment_index_room(s.offsets.len() as u64),
        };
        let r = match format::check_record(bytes, seg.seed, s.end, &rules) {
            RecordCheck::Valid(r) => r,
            RecordCheck::End => break,
            RecordCheck::Invalid { fault, .. } => {
                s.stop_reason = Some(fault.to_string());
                break;
            }
        };
        if s.offsets.is_empty() {
            s.first_term = r.header.term;
        }
        s.offsets.push(s.end as u32);
        s.chain.update(&r.header.crc.to_le_bytes());
        s.last = Some((r.header.index, r.header.term));
        expect = Some(r.header.index.next());
        prev_term = r.header.term;
        s.end += r.bytes;
    }
    s
}

fn corrupt(
    path: &Path,
    offset: u64,
    index: Option<LogIndex>,
    expected: String,
    found: String,
) -> StorageError {
    StorageError::Corrupt(Corruption {
        file: path.to_path_buf(),
        offset,
        index,
        expected,
        found,
    })
}

/// Checks the segment size and returns the largest payload one record may carry: the
/// configured maximum, capped by what fits an empty segment.
fn entry_bytes_max_for(opts: &WalOptions) -> Result<u64> {
    if opts.segment_bytes < SEGMENT_BYTES_MIN
        || opts.segment_bytes > SEGMENT_BYTES_MAX
        || opts.segment_bytes % 4096 != 0
    {
        return Err(StorageError::InvalidOptions(format!(
            "segment_bytes {} must be a multiple of 4096 in {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
            opts.segment_bytes
        )));
    }
    let fit = opts.segment_bytes
        - SEGMENT_HEADER_BYTES
        - TRAILER_BYTES
        - OFFSET_ENTRY_BYTES
        - RECORD_HEADER_BYTES
        - format::RECORD_ALIGN;
    Ok(opts.entry_bytes_max.min(fit).min(u32::MAX as u64))
}

/// First index, last index and last term of the recovered log (the compaction point when it
/// holds no entry).
fn log_bounds(
    rec: &recovery::Recovered,
    (compacted_index, compacted_term): (LogIndex, LogTerm),
) -> (LogIndex, LogIndex, LogTerm) {
    let segs = &rec.segs;
    let (first_index, last_index, last_term) = match segs.last() {
        Some(l) if l.last >= l.first || segs.len() > 1 => {
            let first = segs[0].first.max(compacted_index.next());
            (first, l.last, rec.prev_term)
        }
        _ => (compacted_index.next(), compacted_index, compacted_term),
    };
    let last_term = if last_index == compacted_index {
        compacted_term
    } else {
        last_term
    };
    (first_index, last_index, last_term)
}

/// Phase 5 of open: the active segment is the recovered open one, or a fresh one from the
/// preparer; it takes a ledger slot and joins the segments the syncer covers.
fn open_active_segment(
    segs: &mut Vec<SegEntry>,
    active_scan: Option<Scan>,
    preparer: &mut Preparer,
    shared: &WalShared,
    opts: &WalOptions,
    last_index: LogIndex,
) -> Result<Active> {
    let active = match (active_scan, segs.last()) {
        (Some(scan), Some(_)) => Active {
            write_pos: scan.end,
            first_term: scan.first_term,
            offsets: scan.offsets,
            chain: scan.chain,
        },
        _ => {
            let seg = preparer.take(
                &shared.dir,
                opts.segment_bytes,
                opts.zero_fill(),
                &shared.faults,
            )?;
            seg.publish(SEGMENT_HEADER_BYTES, last_index.0);
            let chain = crc32fast::Hasher::new_with_initial(seg.seed);
            segs.push(SegEntry {
                seg: Arc::new(seg),
                first: last_index.next(),
                last: last_index,
                sealed_offsets: OnceLock::new(),
                trailer: None,
            });
            Active {
                write_pos: SEGMENT_HEADER_BYTES,
                first_term: LogTerm(0),
                offsets: Vec::new(),
                chain,
            }
        }
    };
    let act = segs.last().expect("an active segment exists");
    let mut st = lock(&shared.state);
    let slot = shared
        .ledger
        .alloc(act.seg.seq, act.seg.synced.load(Ordering::Acquire));
    act.seg
        .ledger_slot
        .store(slot.unwrap_or(NO_SLOT), Ordering::Release);
    // A segment missing from the ledger counts as synced to its end: the slot must be on disk
    // before the segment can hold anything unsynced (docs/DURABILITY.md, the sync ledger).
    shared.ledger.sync_slots().map_err(StorageError::Fatal)?;
    st.dirty.push(act.seg.clone());
    Ok(active)
}

impl Wal {
    /// Opens (recovering) or creates the log in `dir`. Called by [`crate::Storage::open`] with
    /// the directory lock held.
    pub(crate) fn open(
        dir: &Path,
        opts: WalOptions,
        ledger: Arc<Ledger>,
        ledger_before: Option<LedgerView>,
        faults: Faults,
    ) -> Result<Wal> {
        let entry_bytes_max = entry_bytes_max_for(&opts)?;
        let meta = SlotFile::open(
            dir,
            format::LOG_META_FILE,
            format::LOG_META_MAGIC,
            faults.clone(),
        )?;
        let compacted = (LogIndex(meta.current().a), LogTerm(meta.current().b));

        // Recovery, in the phases of `recovery` (each crash case of docs/FORMAT.md is decided
        // there, in one place): list, recover each segment, apply the compaction point, make
        // durable.
        let found = recovery::list_segments(dir)?;
        let max_seq = found.last().map(|(s, _)| *s).unwrap_or(0);
        let points = recovery::SyncedPoints::new(ledger_before.as_ref());
        let mut rec = recovery::recover_segments(dir, found, &points, compacted.0, &faults)?;
        recovery::apply_compaction_point(&mut rec, compacted.0, dir, &faults)?;
        recovery::make_durable(&rec, &faults)?;
        ledger.clear_segments();
        let (first_index, last_index, last_term) = log_bounds(&rec, compacted);

        let shared = Arc::new(WalShared::new(dir, ledger, last_index, faults.clone()));
        let mut preparer = Preparer::start(
            dir.to_path_buf(),
            opts.segment_bytes,
            opts.zero_fill(),
            faults.clone(),
            max_seq + 1,
        );
        let recovery::Recovered {
            mut segs,
            active_scan,
            ..
        } = rec;
        let active = open_active_segment(
            &mut segs,
            active_scan,
            &mut preparer,
            &shared,
            &opts,
            last_index,
        )?;

        let mut wal = Wal {
            dir: dir.to_path_buf(),
            entry_bytes_max,
            segs,
            active,
            first_index,
            last_index,
            last_term,
            compacted_index: compacted.0,
            compacted_term: compacted.1,
            meta,
            remover: Remover::start(shared.clone()),
            shared,
            preparer,
            background: None,
            write_by_pwrite: opts.fsync_policy == FsyncPolicy::Always,
            run_buf: Vec::new(),
            run_start: 0,
            opts,
        };
        wal.active
            .offsets
            .reserve((wal.opts.segment_bytes / 256) as usize);
        if wal.active.write_pos > wal.opts.segment_bytes / 2 {
            wal.preparer.request();
        }
        wal.start_background();
        tracing::debug!(dir = %dir.display(), first = %wal.first_index, last = %wal.last_index,
            segments = wal.segs.len(), "write-ahead log opened");
        Ok(wal)
    }

    fn start_background(&mut self) {
        let shared = self.shared.clone();
        let policy = self.opts.fsync_policy;
        let body: Box<dyn FnOnce() + Send> = match policy {
            FsyncPolicy::Batch { delay_us, bytes } => {
                Box::new(move || batch_loop(&shared, delay_us, bytes))
            }
            FsyncPolicy::Interval { ms } => Box::new(move || interval_loop(&shared, ms)),
            FsyncPolicy::Always | FsyncPolicy::Never => return,
        };
        self.background = std::thread::Builder::new()
            .name("wal-sync".into())
            .spawn(body)
            .ok();
    }

    // -----------------------------------------------------------------------------------------
    // Queries.
    // -----------------------------------------------------------------------------------------

    /// First index readable from the log (`last_index() + 1` when the log is empty).
    pub fn first_index(&self) -> LogIndex {
        self.first_index
    }

    /// Last index in the log (the compaction point when empty, 0 for a new log).
    pub fn last_index(&self) -> LogIndex {
        self.last_index
    }

    /// Term of the last entry (or of the compaction point).
    pub fn last_term(&self) -> LogTerm {
        self.last_term
    }

    /// Highest index covered by a completed sync (storage rule 11 of docs/RULES.md). Never above
    /// `last_index`.
    pub fn durable_index(&self) -> LogIndex {
        LogIndex(
            self.shared
                .durable
                .load(Ordering::Acquire)
                .min(self.last_index.0),
        )
    }

    /// How many data syncs (msync of a segment's dirty range) completed since the log was
    /// opened; with the caller's count of appended entries it gives entries per sync.
    pub fn sync_count(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// Highest index the fsync policy allows to count as acknowledged: the durable index under
    /// `always` and `batch`, the last index under `interval` and `never`.
    pub fn ack_index(&self) -> LogIndex {
        if self.opts.fsync_policy.acknowledges_after_sync() {
            self.durable_index()
        } else {
            self.last_index
        }
    }

    /// The compaction point: (last index, term) covered by a snapshot, (0, 0) if none.
    pub fn compacted(&self) -> (LogIndex, LogTerm) {
        (self.compacted_index, self.compacted_term)
    }

    /// The fsync policy in force.
    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.opts.fsync_policy
    }

    /// Largest payload an append accepts.
    pub fn entry_bytes_max(&self) -> u64 {
        self.entry_bytes_max
    }

    /// A handle that syncs from another thread.
    pub fn sync_handle(&self) -> SyncHandle {
        SyncHandle {
            shared: self.shared.clone(),
        }
    }

    /// Registers a function called after every completed or failed sync, from the thread that
    /// ran it (e.g. write a byte to the event loop's wake-up pipe). Keep it short; it must not
    /// call back into this `Wal`.
    pub fn set_sync_listener(&self, f: impl Fn(SyncEvent) + Send + Sync + 'static) {
        *lock(&self.shared.listener) = Some(Arc::new(f));
    }

    /// The fatal error that poisoned the log, if any.
    pub fn fatal_error(&self) -> Option<Arc<FatalError>> {
        self.shared.fatal.get().cloned()
    }

    #[inline]
    fn check_fatal(&self) -> Result<()> {
        match self.shared.fatal.get() {
            None => Ok(()),
            Some(f) => Err(StorageError::Fatal(f.clone())),
        }
    }

    /// Term of the entry at `index`: also answers for the compaction point and for index 0
    /// (term 0). `None` outside the log.
    pub fn term_at(&self, index: LogIndex) -> Result<Option<LogTerm>> {
        self.check_fatal()?;
        if index == self.compacted_index {
            return Ok(Some(self.compacted_term));
        }
        if index.0 == 0 {
            return Ok(Some(LogTerm(0)));
        }
        if index < self.first_index || index > self.last_index {
            return Ok(None);
        }
        if index == self.last_index {
            return Ok(Some(self.last_term));
        }
        let (si, off) = self.locate(index)?;
        let seg = &self.segs[si].seg;
        let h = seg
            .slice(off, RECORD_HEADER_BYTES)
            .ok_or_else(|| self.bad_offset(si, off, index))?;
        let rh = format::decode_record_header(h).ok_or_else(|| self.bad_offset(si, off, index))?;
        if rh.index != index || rh.marker != RECORD_MARKER {
            return Err(corrupt(
                &seg.path,
                off,
                Some(index),
                format!("record of index {index}"),
                format!("index {}", rh.index),
            ));
        }
        Ok(Some(rh.term))
    }

    fn bad_offset(&self, si: usize, off: u64, index: LogIndex) -> StorageError {
        corrupt(
            &self.segs[si].seg.path,
            off,
            Some(index),
            "a record inside the segment".into(),
            "an offset beyond its end".into(),
        )
    }

    /// Segment position and byte offset of `index` (which must be in the log).
    fn locate(&self, index: LogIndex) -> Result<(usize, u64)> {
        let si = self.segs.partition_point(|s| s.last < index);
        let s = self.segs.get(si).ok_or(StorageError::OutOfRange {
            index,
            first: self.first_index,
            last: self.last_index,
        })?;
        let k = (index.0 - s.first.0) as usize;
        let off = if si + 1 == self.segs.len() {
            self.active.offsets.get(k).copied()
        } else {
            self.sealed_offsets(si)?.get(k).copied()
        };
        off.map(|o| (si, o as u64)).ok_or(StorageError::OutOfRange {
            index,
            first: self.first_index,
            last: self.last_index,
        })
    }

    /// Loads (once) and checks the offset index of sealed segment `si`.
    fn sealed_offsets(&self, si: usize) -> Result<&Vec<u32>> {
        let s = &self.segs[si];
        if let Some(v) = s.sealed_offsets.get() {
            return Ok(v);
        }
        let t = s.trailer.ok_or_else(|| {
            corrupt(
                &s.seg.path,
                0,
                None,
                "a sealed segment".into(),
                "no footer".into(),
            )
        })?;
        let start = t.offsets_start(s.seg.bytes);
        let bytes = s
            .seg
            .slice(start, OFFSET_ENTRY_BYTES * t.record_count as u64)
            .unwrap_or(&[]);
        let crc = format::crc_seeded(s.seg.seed, bytes);
        if crc != t.offsets_crc {
            return Err(corrupt(
                &s.seg.path,
                start,
                Some(t.first_index),
                format!("offset index checksum {:#010x}", t.offsets_crc),
                format!("{crc:#010x}"),
            ));
        }
        let v: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let _ = s.sealed_offsets.set(v);
        Ok(s.sealed_offsets.get().expect("just set"))
    }

    /// Reads the entry at `index`, checking its checksum.
    pub fn entry(&self, index: LogIndex) -> Result<Entry> {
        let mut v = self.read(index, 1, u64::MAX)?;
        v.pop().ok_or(StorageError::OutOfRange {
            index,
            first: self.first_index,
            last: self.last_index,
        })
    }

    /// Reads entries from `from` on: at most `count_max` entries and at most `bytes_max` payload
    /// bytes, but always at least one entry when `from` is in the log. Every record's checksum
    /// is checked right after reading it.
    pub fn read(&self, from: LogIndex, count_max: usize, bytes_max: u64) -> Result<Vec<Entry>> {
        self.check_fatal()?;
        if from < self.first_index || from > self.last_index {
            return Err(StorageError::OutOfRange {
                index: from,
                first: self.first_index,
                last: self.last_index,
            });
        }
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let mut index = from;
        while index <= self.last_index && out.len() < count_max {
            let (si, off) = self.locate(index)?;
            let seg = &self.segs[si].seg;
            let h = seg
                .slice(off, RECORD_HEADER_BYTES)
                .ok_or_else(|| self.bad_offset(si, off, index))?;
            let rh =
                format::decode_record_header(h).ok_or_else(|| self.bad_offset(si, off, index))?;
            let payload = seg
                .slice(off + RECORD_HEADER_BYTES, rh.payload_len as u64)
                .ok_or_else(|| self.bad_offset(si, off, index))?;
            let crc = format::record_crc(seg.seed, h, payload);
            if crc != rh.crc || rh.index != index || rh.marker != RECORD_MARKER {
                return Err(corrupt(
                    &seg.path,
                    off,
                    Some(index),
                    format!("record of index {index} with checksum {crc:#010x}"),
                    format!("index {} checksum {:#010x}", rh.index, rh.crc),
                ));
            }
            if !out.is_empty() && bytes + payload.len() as u64 > bytes_max {
                break;
            }
            bytes += payload.len() as u64;
            out.push(Entry {
                index,
                term: rh.term,
                kind: rh.kind,
                payload: payload.to_vec(),
            });
            index = index.next();
        }
        Ok(out)
    }

    // -----------------------------------------------------------------------------------------
    // Appends.
    // -----------------------------------------------------------------------------------------

    /// Appends one entry. See [`Wal::append`].
    #[inline]
    pub fn append_one(
        &mut self,
        index: LogIndex,
        term: LogTerm,
        kind: EntryKind,
        payload: &[u8],
    ) -> Result<LogIndex> {
        self.append(&[EntryRef {
            index,
            term,
            kind,
            payload,
        }])
    }

    /// Appends a batch of entries whose indexes continue the log (`last_index() + 1, ...`) and
    /// whose terms do not decrease. The whole batch is validated before anything is written.
    /// Returns the new last index.
    ///
    /// Under `always` it returns after the sync covering the batch; otherwise at once (the
    /// entries are durable once [`Wal::durable_index`] reaches them).
    pub fn append(&mut self, entries: &[EntryRef<'_>]) -> Result<LogIndex> {
        self.check_fatal()?;
        let mut expect = self.last_index.next();
        let mut prev_term = self.last_term;
        let mut total = 0u64;
        for e in entries {
            if e.index != expect {
                return Err(StorageError::NotContiguous {
                    expected: expect,
                    got: e.index,
                });
            }
            if e.term < prev_term {
                return Err(StorageError::TermRegression {
                    index: e.index,
                    term: e.term.0,
                    prev_term: prev_term.0,
                });
            }
            if e.payload.len() as u64 > self.entry_bytes_max {
                return Err(StorageError::EntryTooLarge {
                    index: e.index,
                    len: e.payload.len() as u64,
                    max: self.entry_bytes_max,
                });
            }
            total += format::record_bytes(e.payload.len() as u64);
            expect = expect.next();
            prev_term = e.term;
        }
        for e in entries {
            self.write_record(e)?;
        }
        self.flush_run()?;
        let act = self.segs.last().expect("active segment");
        act.seg.publish(self.active.write_pos, self.last_index.0);
        match self.opts.fsync_policy {
            FsyncPolicy::Always => {
                self.shared.sync()?;
            }
            FsyncPolicy::Batch { bytes, .. } => {
                let mut b = lock(&self.shared.batch);
                let was_clean = b.dirty_since.is_none();
                if was_clean {
                    b.dirty_since = Some(Instant::now());
                }
                b.pending_bytes += total;
                let full = b.pending_bytes >= bytes;
                drop(b);
                if was_clean || full {
                    self.shared.batch_cv.notify_one();
                }
            }
            FsyncPolicy::Interval { .. } | FsyncPolicy::Never => {}
        }
        Ok(self.last_index)
    }

    /// Writes the records gathered by `write_record` (under `always`) with one `pwrite` at
    /// their start. Called before anything that needs them in the file: a rotation (which
    /// seals the segment), a large record, the end of an append (before `publish`).
    fn flush_run(&mut self) -> Result<()> {
        if self.run_buf.is_empty() {
            return Ok(());
        }
        let seg = self.segs.last().expect("active segment").seg.clone();
        let r = seg.pwrite_all(self.run_start, &self.run_buf);
        self.run_buf.clear();
        if let Err(err) = r {
            // The bytes of the run are now unknown, so the "zero past write_pos" invariant no
            // longer holds: treat it like a failed sync.
            let f = sys::fatal_error("pwrite", &seg.path, &err);
            return Err(self.shared.poison(f));
        }
        Ok(())
    }

    /// Writes one validated record into the active segment, rotating first if it does not fit.
    #[inline]
    fn write_record(&mut self, e: &EntryRef<'_>) -> Result<()> {
        let len = e.payload.len() as u64;
        let need = format::record_bytes(len);
        let seg_bytes = self.opts.segment_bytes;
        let footer = OFFSET_ENTRY_BYTES * (self.active.offsets.len() as u64 + 1) + TRAILER_BYTES;
        if self.active.write_pos + need + footer > seg_bytes {
            self.flush_run()?;
            self.rotate()?;
        }
        let gather = self.write_by_pwrite && len < PWRITE_PAYLOAD_BYTES_MIN;
        if !gather || self.run_buf.len() + need as usize > PWRITE_RUN_BYTES_MAX {
            self.flush_run()?;
        }
        let act = self.segs.last_mut().expect("active segment");
        let seg = &act.seg;
        let pos = self.active.write_pos;
        let header = format::encode_record_header(seg.seed, e.index, e.term, e.kind, e.payload);
        if gather && seg.has_fd() {
            // Under `always` every append pays a sync anyway, and a page dirtied through a
            // shared mapping costs more to sync than one dirtied by pwrite: writeback must
            // write-protect the mapping again (page_mkclean, a TLB shootdown) and the next
            // append takes a write fault (measured on the dev VM: msync after memcpy ~2.3x a
            // raw fdatasync, msync after pwrite ~1.0x). One pwrite per record, though, made the
            // kernel's buffered-write path (ext4 write_begin/commit, per call) a fifth of a busy
            // node's CPU: so the records of an append are gathered, padding included, and
            // written with one pwrite (`flush_run`).
            if self.run_buf.is_empty() {
                self.run_start = pos;
            }
            debug_assert_eq!(self.run_start + self.run_buf.len() as u64, pos);
            self.run_buf.extend_from_slice(&header);
            self.run_buf.extend_from_slice(e.payload);
            let pad = need as usize - header.len() - e.payload.len();
            self.run_buf.resize(self.run_buf.len() + pad, 0);
        } else if (self.write_by_pwrite || len >= PWRITE_PAYLOAD_BYTES_MIN) && seg.has_fd() {
            // Under `always` every append pays a sync anyway, and a page dirtied through a
            // shared mapping costs more to sync than one dirtied by pwrite: writeback must
            // write-protect the mapping again (page_mkclean, a TLB shootdown) and the next
            // append takes a write fault. Measured on the dev VM: msync after memcpy ~2.3x a raw
            // fdatasync, msync after pwritev ~1.0x. Same page cache, same bytes, same barrier.
            if let Err(err) = seg.pwrite_record(pos, &header, e.payload) {
                // The bytes at `pos` are now unknown, so the "zero past write_pos" invariant no
                // longer holds: treat it like a failed sync.
                let f = sys::fatal_error("pwritev", &seg.path, &err);
                return Err(self.shared.poison(f));
            }
        } else {
            // SAFETY: `&mut self` makes us the single writer with no outstanding borrow of the
            // mapping; `pos + need + footer <= segment bytes` was ensured above (after a
            // rotation the new segment is empty, and `entry_bytes_max` guarantees one record
            // fits an empty one).
            unsafe {
                seg.write_at(pos, &header);
                seg.write_at(pos + RECORD_HEADER_BYTES, e.payload);
            }
        }
        // The padding after the payload is already zero: the area past `write_pos` is kept
        // zeroed (new segments are zero, truncation and recovery zero what they cut).
        if self.active.offsets.is_empty() {
            self.active.first_term = e.term;
            act.first = e.index;
        }
        self.active.offsets.push(pos as u32);
        self.active.chain.update(&header[..4]);
        self.active.write_pos = pos + need;
        if self.preparer.defer && !self.preparer.pending && self.active.write_pos > seg_bytes / 2 {
            self.preparer.request();
        }
        act.last = e.index;
        self.last_index = e.index;
        self.last_term = e.term;
        Ok(())
    }

    /// Seals the active segment and activates the prepared next one.
    fn rotate(&mut self) -> Result<()> {
        let next = self.preparer.take(
            &self.dir,
            self.opts.segment_bytes,
            self.opts.zero_fill(),
            &self.shared.faults,
        )?;
        debug_assert!(
            !self.active.offsets.is_empty(),
            "a record always fits an empty segment"
        );
        // Seal: offset index + trailer at the end of the file (docs/FORMAT.md "footer").
        let act = self.segs.last_mut().expect("active segment");
        let seg = act.seg.clone();
        let count = self.active.offsets.len() as u64;
        let mut idx = Vec::with_capacity(count as usize * 4);
        for o in &self.active.offsets {
            idx.extend_from_slice(&o.to_le_bytes());
        }
        let t = Trailer {
            first_index: act.first,
            first_term: self.active.first_term,
            last_index: act.last,
            last_term: self.last_term,
            records_end: self.active.write_pos,
            record_count: count as u32,
            chain_crc: self.active.chain.clone().finalize(),
            offsets_crc: format::crc_seeded(seg.seed, &idx),
        };
        let start = t.offsets_start(seg.bytes);
        // SAFETY: single writer (`&mut self`); the footer area lies beyond `write_pos` (the
        // space check in `write_record` reserves it) and inside the mapping.
        unsafe {
            seg.write_at(start, &idx);
            seg.write_at(
                seg.bytes - TRAILER_BYTES,
                &format::encode_trailer(seg.seed, &t),
            );
        }
        let offsets = std::mem::replace(
            &mut self.active.offsets,
            Vec::with_capacity((self.opts.segment_bytes / 256) as usize),
        );
        let _ = act.sealed_offsets.set(offsets);
        act.trailer = Some(t);
        seg.sealed.store(true, Ordering::Release);
        seg.publish(seg.bytes, act.last.0);

        next.publish(SEGMENT_HEADER_BYTES, self.last_index.0);
        let next = Arc::new(next);
        {
            let mut st = lock(&self.shared.state);
            let mut slot = self.shared.ledger.alloc(next.seq, SEGMENT_HEADER_BYTES);
            if slot.is_none() {
                // Every ledger slot holds an unsynced segment (possible under `never`): sync so
                // sealed segments release theirs.
                self.shared.sync_locked(&mut st)?;
                slot = self.shared.ledger.alloc(next.seq, SEGMENT_HEADER_BYTES);
            }
            next.ledger_slot
                .store(slot.unwrap_or(NO_SLOT), Ordering::Release);
            self.shared
                .ledger
                .sync_slots()
                .map_err(|f| self.shared.poison(f))?;
            st.dirty.push(next.clone());
        }
        self.segs.push(SegEntry {
            first: self.last_index.next(),
            last: self.last_index,
            seg: next.clone(),
            sealed_offsets: OnceLock::new(),
            trailer: None,
        });
        self.active.write_pos = SEGMENT_HEADER_BYTES;
        self.active.chain = crc32fast::Hasher::new_with_initial(next.seed);
        self.active.first_term = LogTerm(0);
        Ok(())
    }

    /// Makes everything appended so far durable, whatever the policy; returns the durable index.
    pub fn sync(&mut self) -> Result<LogIndex> {
        self.shared.sync()
    }

    // -----------------------------------------------------------------------------------------
    // Truncation and compaction.
    // -----------------------------------------------------------------------------------------

    /// Removes every entry from `from` on (conflict resolution, Raft §5.3). Synced before it
    /// returns, whatever the policy (storage rule 14 of docs/RULES.md): later segments are unlinked
    /// newest first (so a crash leaves a prefix of the old log), then the cut area is zeroed and
    /// synced, so the removed entries never come back.
    pub fn truncate_suffix(&mut self, from: LogIndex) -> Result<()> {
        self.check_fatal()?;
        if from > self.last_index {
            return Ok(());
        }
        if from < self.first_index || from.0 == 0 {
            return Err(StorageError::OutOfRange {
                index: from,
                first: self.first_index,
                last: self.last_index,
            });
        }
        let new_last = from.prev();
        let new_last_term = if new_last >= self.first_index {
            self.term_at(new_last)?.unwrap_or(LogTerm(0))
        } else {
            self.compacted_term
        };
        let (si, cut) = self.locate(from)?;
        let shared = self.shared.clone();
        let mut st = lock(&shared.state);
        // Everything before the cut must be synced before the cut area is zeroed and synced,
        // so the ledger's "synced up to" stays a true statement.
        shared.sync_locked(&mut st)?;
        // 1. Unlink later segments, newest first.
        let mut unlinked = false;
        while self.segs.len() > si + 1 {
            let s = self.segs.pop().expect("len checked");
            let slot = s.seg.ledger_slot.swap(NO_SLOT, Ordering::AcqRel);
            if slot != NO_SLOT {
                shared.ledger.free(slot);
            }
            st.dirty.retain(|d| !Arc::ptr_eq(d, &s.seg));
            std::fs::remove_file(&s.seg.path)
                .map_err(|e| StorageError::io("removing segment", &s.seg.path, e))?;
            unlinked = true;
        }
        if unlinked {
            sys::fsync_dir(&self.dir, &shared.faults).map_err(|f| shared.poison(f))?;
        }
        // 2. Segment `si` becomes the active one, cut at `cut`.
        let was_active = self.segs[si].trailer.is_none();
        let mut offsets = if was_active {
            std::mem::take(&mut self.active.offsets)
        } else {
            self.sealed_offsets(si)?.clone()
        };
        let ent = &mut self.segs[si];
        let keep = (from.0 - ent.first.0) as usize;
        offsets.truncate(keep);
        let seg = ent.seg.clone();
        let mut chain = crc32fast::Hasher::new_with_initial(seg.seed);
        let mut first_term = LogTerm(0);
        for (i, o) in offsets.iter().enumerate() {
            let h = seg
                .slice(*o as u64, RECORD_HEADER_BYTES)
                .unwrap_or(&[0; 32]);
            chain.update(&h[..4]);
            if i == 0 {
                first_term = format::decode_record_header(h)
                    .map(|r| r.term)
                    .unwrap_or_default();
            }
        }
        // SAFETY: single writer (`&mut self`), no borrow of the mapping outstanding, syncs are
        // excluded by the state lock we hold.
        unsafe { seg.zero_range(cut, seg.bytes) };
        let synced_before = seg.synced.load(Ordering::Acquire).min(cut);
        if let Err(f) = sys::msync(seg.map(), cut, seg.bytes - cut, &seg.path, &shared.faults) {
            return Err(shared.poison(f));
        }
        debug_assert_eq!(synced_before, cut.min(synced_before));
        seg.sealed.store(false, Ordering::Release);
        seg.synced.store(cut, Ordering::Release);
        seg.publish(cut, new_last.0);
        if seg.ledger_slot.load(Ordering::Acquire) == NO_SLOT {
            let slot = shared.ledger.alloc(seg.seq, cut);
            seg.ledger_slot
                .store(slot.unwrap_or(NO_SLOT), Ordering::Release);
            shared.ledger.sync_slots().map_err(|f| shared.poison(f))?;
        } else {
            shared
                .ledger
                .set_synced(seg.ledger_slot.load(Ordering::Acquire), cut);
        }
        if !st.dirty.iter().any(|d| Arc::ptr_eq(d, &seg)) {
            st.dirty.push(seg.clone());
        }
        ent.trailer = None;
        ent.sealed_offsets = OnceLock::new();
        ent.last = new_last;
        if offsets.is_empty() {
            ent.first = from;
        }
        self.active = Active {
            write_pos: cut,
            offsets,
            chain,
            first_term,
        };
        self.last_index = new_last;
        self.last_term = new_last_term;
        let d = shared.durable.load(Ordering::Acquire).min(new_last.0);
        shared.durable.store(d, Ordering::Release);
        drop(st);
        let mut b = lock(&shared.batch);
        b.pending_bytes = 0;
        b.dirty_since = None;
        Ok(())
    }

    /// Discards entries up to and including `upto` (after a snapshot covering them with last
    /// term `upto_term`, Raft §7). The compaction point is recorded durably first, then whole
    /// segments leave the log (storage rule 14 of docs/RULES.md) and are unlinked by a background
    /// thread ([`Wal::wait_for_removals`] waits for that); a segment straddling the point stays,
    /// its early entries unreadable. If `upto` is at or beyond the last index the log becomes
    /// empty and the next append must be `upto + 1` (installing a snapshot).
    pub fn compact(&mut self, upto: LogIndex, upto_term: LogTerm) -> Result<()> {
        self.check_fatal()?;
        if upto <= self.compacted_index {
            return Ok(());
        }
        if upto >= self.first_index && upto <= self.last_index {
            let t = self.term_at(upto)?;
            if t != Some(upto_term) {
                return Err(StorageError::Snapshot(format!(
                    "compaction at index {upto} with term {upto_term}, but the log has term {} there",
                    t.map(|t| t.0.to_string()).unwrap_or_else(|| "none".into())
                )));
            }
        }
        // Prepare the replacement segment first, so a full disk refuses the whole operation
        // before anything changes.
        let fresh = if upto >= self.last_index {
            Some(self.preparer.take(
                &self.dir,
                self.opts.segment_bytes,
                self.opts.zero_fill(),
                &self.shared.faults,
            )?)
        } else {
            None
        };
        self.meta
            .write(upto.0, upto_term.0, 0, true)
            .map_err(|e| match e {
                StorageError::Fatal(f) => self.shared.poison(f),
                e => e,
            })?;
        self.compacted_index = upto;
        self.compacted_term = upto_term;
        let shared = self.shared.clone();
        let mut st = lock(&shared.state);
        // Unlinked by the remover thread once they are out of the log (see `Remover`).
        let mut removed = Vec::new();
        if let Some(next) = fresh {
            // The whole log is replaced by the snapshot: start a fresh segment.
            for s in self.segs.drain(..) {
                let slot = s.seg.ledger_slot.swap(NO_SLOT, Ordering::AcqRel);
                if slot != NO_SLOT {
                    shared.ledger.free(slot);
                }
                removed.push(s.seg);
            }
            st.dirty.clear();
            next.publish(SEGMENT_HEADER_BYTES, upto.0);
            let next = Arc::new(next);
            let slot = shared.ledger.alloc(next.seq, SEGMENT_HEADER_BYTES);
            next.ledger_slot
                .store(slot.unwrap_or(NO_SLOT), Ordering::Release);
            shared.ledger.sync_slots().map_err(|f| shared.poison(f))?;
            st.dirty.push(next.clone());
            self.active = Active {
                write_pos: SEGMENT_HEADER_BYTES,
                offsets: Vec::with_capacity((self.opts.segment_bytes / 256) as usize),
                chain: crc32fast::Hasher::new_with_initial(next.seed),
                first_term: LogTerm(0),
            };
            self.segs.push(SegEntry {
                seg: next,
                first: upto.next(),
                last: upto,
                sealed_offsets: OnceLock::new(),
                trailer: None,
            });
            self.last_index = upto;
            self.last_term = upto_term;
            shared.durable.store(upto.0, Ordering::Release);
            let mut b = lock(&shared.batch);
            b.pending_bytes = 0;
            b.dirty_since = None;
        } else {
            while self.segs.len() > 1 && self.segs[0].last <= upto {
                let s = self.segs.remove(0);
                let slot = s.seg.ledger_slot.swap(NO_SLOT, Ordering::AcqRel);
                if slot != NO_SLOT {
                    shared.ledger.free(slot);
                }
                st.dirty.retain(|d| !Arc::ptr_eq(d, &s.seg));
                removed.push(s.seg);
            }
            shared.durable.fetch_max(upto.0, Ordering::AcqRel);
        }
        self.first_index = upto.next();
        drop(st);
        self.remover.remove(&shared, removed);
        Ok(())
    }

    /// Blocks until the segments that `compact` dropped are unlinked and their directory
    /// synced (they are removed in the background; tests and tools that look at the directory
    /// right after a compaction call this first).
    pub fn wait_for_removals(&self) {
        self.remover.flush();
    }

    /// Paths and index ranges of the segments (oldest first), for status output.
    pub fn segments(&self) -> Vec<(PathBuf, LogIndex, LogIndex)> {
        self.segs
            .iter()
            .map(|s| (s.seg.path.clone(), s.first, s.last))
            .collect()
    }

    /// Stops the background threads; under `always`, `batch` and `interval` syncs what is left.
    pub fn close(mut self) -> Result<()> {
        self.stop_background();
        if self.opts.fsync_policy != FsyncPolicy::Never && self.fatal_error().is_none() {
            self.shared.sync()?;
        }
        Ok(())
    }

    fn stop_background(&mut self) {
        self.remover.stop();
        self.shared.stop.store(true, Ordering::Release);
        {
            let _b = lock(&self.shared.batch);
            self.shared.batch_cv.notify_all();
        }
        if let Some(h) = self.background.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.stop_background();
    }
}

/// Group commit (`batch`): sync when the oldest unsynced append is `delay_us` old or `bytes`
/// are pending.
fn batch_loop(shared: &WalShared, delay_us: u64, bytes: u64) {
    let delay = Duration::from_micros(delay_us);
    loop {
        let mut b = lock(&shared.batch);
        loop {
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            match b.dirty_since {
                None => b = shared.batch_cv.wait(b).unwrap_or_else(|p| p.into_inner()),
                Some(since) => {
                    let due = since + delay;
                    let now = Instant::now();
                    if b.pending_bytes >= bytes || now >= due {
                        break;
                    }
                    b = shared
                        .batch_cv
                        .wait_timeout(b, due - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
        b.pending_bytes = 0;
        b.dirty_since = None;
        drop(b);
        if shared.sync().is_err() {
            return;
        }
    }
}

/// Background sync every `ms` (`interval`).
fn interval_loop(shared: &WalShared, ms: u64) {
    let period = Duration::from_millis(ms);
    loop {
        let mut b = lock(&shared.batch);
        let deadline = Instant::now() + period;
        loop {
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            b = shared
                .batch_cv
                .wait_timeout(b, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(b);
        if shared.sync().is_err() {
            return;
        }
    }
}
