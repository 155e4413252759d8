//! [`WalLogStore`]: the core's [`LogStore`] over `shmraft-storage` (the mmapped WAL, the hard
//! state and the snapshot store), plus the writes the driver performs for `Ready::persist`.
//!
//! Storage knows nothing of Raft: this module converts between the core's types (`Index`,
//! `Term`, `EntryKind`, `Membership`) and storage's opaque ones, and is the only place that does.

use crate::log_store::{LogError, LogStore};
use crate::message::{Entry, EntryKind, HardState, Membership, Payload, SnapshotMeta};
use crate::node::status::SnapshotInstall;
use crate::raft::SnapshotChunk;
use crate::types::{Index, NodeId, Term};
use shmraft_storage as st;
use std::collections::VecDeque;
use std::io::{self, Write};

/// Storage's entry kind byte for each core entry kind (docs/FORMAT.md, "Entry kinds").
pub fn kind_to_storage(k: EntryKind) -> st::EntryKind {
    st::EntryKind(match k {
        EntryKind::Normal => 0,
        EntryKind::Noop => 1,
        EntryKind::Membership => 2,
    })
}

/// The core's entry kind for a storage kind byte; `None` for a byte no version wrote.
pub fn kind_from_storage(k: st::EntryKind) -> Option<EntryKind> {
    match k.0 {
        0 => Some(EntryKind::Normal),
        1 => Some(EntryKind::Noop),
        2 => Some(EntryKind::Membership),
        _ => None,
    }
}

/// Membership as stored in snapshot metadata: `u32` voter count, voters as `u64`, `u32`
/// outgoing count, outgoing voters as `u64` (little-endian; docs/FORMAT.md).
pub fn encode_membership(m: &Membership) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 8 * (m.voters.len() + m.voters_outgoing.len()));
    for list in [&m.voters, &m.voters_outgoing] {
        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for v in list {
            out.extend_from_slice(&v.get().to_le_bytes());
        }
    }
    out
}

/// Decodes [`encode_membership`] bytes; `None` if they are malformed.
pub fn decode_membership(b: &[u8]) -> Option<Membership> {
    let mut at = 0usize;
    let mut lists = [Vec::new(), Vec::new()];
    for list in &mut lists {
        let n = u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize;
        at += 4;
        // Bound before allocating: each id takes 8 bytes.
        if n > (b.len() - at) / 8 {
            return None;
        }
        for _ in 0..n {
            list.push(NodeId(u64::from_le_bytes(
                b.get(at..at + 8)?.try_into().ok()?,
            )));
            at += 8;
        }
    }
    if at != b.len() {
        return None;
    }
    let [voters, voters_outgoing] = lists;
    Some(Membership {
        voters,
        voters_outgoing,
    })
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn storage_err(e: st::StorageError) -> LogError {
    LogError::Storage(e.to_string())
}

/// The core's read view of a node's data directory, and the driver's write path into it.
pub struct WalLogStore {
    storage: st::Storage,
    /// Membership to report when no snapshot exists yet (the configured voters).
    initial_membership: Membership,
    /// A snapshot being received from the leader (InstallSnapshot chunks, Raft §7).
    incoming: Option<(SnapshotMeta, st::SnapshotWriter)>,
    /// When the incoming snapshot's first chunk arrived (monotonic, and Unix microseconds).
    incoming_since: Option<(std::time::Instant, u64)>,
    /// Timings of the last snapshot installed, for the status file.
    last_install: Option<SnapshotInstall>,
    /// The most recently appended entries, contiguous and ending at the log's last index (or
    /// empty). Payloads are shared (`Payload` is an `Arc`), so this costs no copies; the core
    /// reads entries back right after appending them (a leader to replicate, every node to
    /// apply), and serving those from here spares a copy out of the mapped segment and two
    /// allocations per entry.
    recent: VecDeque<Entry>,
    recent_bytes: u64,
}

/// Payload bytes kept in [`WalLogStore`]'s recent-entry cache.
const RECENT_BYTES_MAX: u64 = 16 << 20;

impl std::fmt::Debug for WalLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalLogStore")
            .field("dir", &self.storage.dir())
            .finish()
    }
}

impl WalLogStore {
    /// Wraps an opened data directory, first completing an InstallSnapshot that a crash
    /// interrupted (see [`WalLogStore::reconcile_with_snapshot`]).
    pub fn new(
        storage: st::Storage,
        initial_membership: Membership,
    ) -> Result<WalLogStore, st::StorageError> {
        let mut s = WalLogStore {
            storage,
            initial_membership,
            incoming: None,
            incoming_since: None,
            last_install: None,
            recent: VecDeque::new(),
            recent_bytes: 0,
        };
        s.reconcile_with_snapshot()?;
        Ok(s)
    }

    /// Fault-matrix row C8 of docs/FAULTS.md. Installing a received snapshot is two durable steps:
    /// the snapshot file (sync, rename, directory sync), then discarding the log. A crash between
    /// them leaves the new snapshot beside an old log that may end before it or disagree with it at
    /// its last included index. Such a log does not continue the snapshot (Raft §7: the log is kept
    /// only if it holds the snapshot's last entry with the same term), so finish the install now:
    /// discard it. A log that does hold the snapshot's last entry is consistent and kept.
    pub fn reconcile_with_snapshot(&mut self) -> Result<(), st::StorageError> {
        let Some(m) = self.storage.snapshots.latest() else {
            return Ok(());
        };
        let (idx, term) = (m.last_index, m.last_term);
        let wal = &self.storage.wal;
        if wal.compacted().0 >= idx {
            return Ok(());
        }
        let consistent = matches!(wal.term_at(idx), Ok(Some(t)) if t == term);
        if !consistent {
            tracing::warn!(dir = %self.storage.dir().display(), snapshot = idx.0,
                "completing an interrupted snapshot install: discarding a log that does not continue the snapshot");
            self.discard_log_for_snapshot(idx, term)?;
        }
        Ok(())
    }

    fn discard_log_for_snapshot(
        &mut self,
        idx: st::LogIndex,
        term: st::LogTerm,
    ) -> Result<(), st::StorageError> {
        self.forget_recent_from(Index::ZERO);
        let wal = &mut self.storage.wal;
        // Drop the suffix first (it may conflict with the snapshot), then the prefix; each step
        // is recorded durably by the log before it acts (storage rule 14 of docs/RULES.md).
        if wal.last_index() > idx && wal.first_index() <= idx.next() {
            wal.truncate_suffix(idx.next())?;
        } else if wal.last_index() > idx {
            wal.truncate_suffix(wal.first_index())?;
        }
        wal.compact(idx, term)
    }

    pub fn storage(&self) -> &st::Storage {
        &self.storage
    }

    pub fn storage_mut(&mut self) -> &mut st::Storage {
        &mut self.storage
    }

    pub fn into_storage(self) -> st::Storage {
        self.storage
    }

    /// The hard state as the core sees it.
    pub fn hard_state(&self) -> HardState {
        let hs = self.storage.hard_state.get();
        HardState {
            current_term: Term(hs.current_term.0),
            voted_for: NodeId(hs.voted_for),
            commit_index: Index(hs.commit_index.0),
        }
    }

    /// Saves the hard state. Term and vote changes are synced before this returns whatever the
    /// fsync policy (storage rule 8 of docs/RULES.md: a vote is sent only after it is durable).
    pub fn save_hard_state(&mut self, hs: &HardState) -> Result<(), st::StorageError> {
        self.storage.hard_state.save(&st::HardState {
            current_term: st::LogTerm(hs.current_term.get()),
            voted_for: hs.voted_for.get(),
            commit_index: st::LogIndex(hs.commit_index.get()),
        })?;
        Ok(())
    }

    /// Writes one received snapshot chunk to the temporary snapshot file. Offset 0 starts a new
    /// file; a chunk at any other offset must continue the file exactly.
    pub fn write_snapshot_chunk(&mut self, c: &SnapshotChunk) -> Result<(), st::StorageError> {
        if c.offset == 0 {
            self.incoming = None; // dropping a writer removes its partial file
            let w = self.storage.snapshots.begin(
                st::LogIndex(c.meta.last_included_index.get()),
                st::LogTerm(c.meta.last_included_term.get()),
                &encode_membership(&c.meta.membership),
            )?;
            self.incoming = Some((c.meta.clone(), w));
            self.incoming_since = Some((std::time::Instant::now(), unix_us()));
            tracing::info!(index = %c.meta.last_included_index, "receiving a snapshot");
        }
        let Some((meta, w)) = self.incoming.as_mut() else {
            return Err(st::StorageError::Snapshot(format!(
                "snapshot chunk at offset {} arrived with no snapshot in progress",
                c.offset
            )));
        };
        if *meta != c.meta || w.data_bytes() != c.offset {
            return Err(st::StorageError::Snapshot(format!(
                "snapshot chunk at offset {} for index {} does not continue the snapshot in progress \
                 (index {}, {} bytes written)",
                c.offset,
                c.meta.last_included_index,
                meta.last_included_index,
                w.data_bytes()
            )));
        }
        w.write_chunk(c.data.as_slice())
    }

    /// Makes the received snapshot current (sync, rename, directory sync: storage rule 15
    /// of docs/RULES.md) and discards the whole log, which restarts after the snapshot's last
    /// included index.
    pub fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), st::StorageError> {
        let Some((m, w)) = self.incoming.take() else {
            return Err(st::StorageError::Snapshot(format!(
                "install of snapshot at index {} with no snapshot received",
                meta.last_included_index
            )));
        };
        assert_eq!(
            &m, meta,
            "installing a snapshot other than the one received"
        );
        let data_bytes = w.data_bytes();
        let received = std::time::Instant::now();
        tracing::info!(index = %meta.last_included_index, data_bytes, "snapshot received; installing");
        self.storage.snapshots.finish(w)?;
        // A crash here is completed by `reconcile_with_snapshot` at the next open.
        // Raft §7: the core asked us to discard the whole log.
        self.discard_log_for_snapshot(
            st::LogIndex(meta.last_included_index.get()),
            st::LogTerm(meta.last_included_term.get()),
        )?;
        tracing::info!(index = %meta.last_included_index, "snapshot installed");
        let (first_chunk, first_chunk_unix_us) =
            self.incoming_since.take().unwrap_or((received, 0));
        self.last_install = Some(SnapshotInstall {
            index: meta.last_included_index.get(),
            data_bytes,
            first_chunk_unix_us,
            receive_us: (received - first_chunk).as_micros() as u64,
            install_us: received.elapsed().as_micros() as u64,
        });
        Ok(())
    }

    /// Timings of the last snapshot installed from a leader since the node started.
    pub fn last_snapshot_install(&self) -> Option<&SnapshotInstall> {
        self.last_install.as_ref()
    }

    /// Appends entries, first truncating every entry at or after `entries[0].index` (conflict
    /// resolution, Raft §5.3). Returns the last index appended.
    pub fn append_entries(&mut self, entries: &[Entry]) -> Result<Index, st::StorageError> {
        let Some(first) = entries.first() else {
            return Ok(Index(self.storage.wal.last_index().0));
        };
        // Whatever happens below, cached entries from `first` on are no longer the log's.
        self.forget_recent_from(first.index);
        let wal = &mut self.storage.wal;
        if first.index.get() <= wal.last_index().0 {
            wal.truncate_suffix(st::LogIndex(first.index.get()))?;
        }
        let refs: Vec<st::EntryRef<'_>> = entries
            .iter()
            .map(|e| st::EntryRef {
                index: st::LogIndex(e.index.get()),
                term: st::LogTerm(e.term.get()),
                kind: kind_to_storage(e.kind),
                payload: e.data.as_slice(),
            })
            .collect();
        let last = Index(wal.append(&refs)?.0);
        if self
            .recent
            .back()
            .is_some_and(|e| e.index.next() != first.index)
        {
            self.forget_recent_from(Index::ZERO);
        }
        for e in entries {
            self.recent_bytes += e.data.len() as u64;
            self.recent.push_back(e.clone());
        }
        while self.recent_bytes > RECENT_BYTES_MAX {
            let Some(e) = self.recent.pop_front() else {
                break;
            };
            self.recent_bytes -= e.data.len() as u64;
        }
        debug_assert_eq!(self.recent.back().map(|e| e.index), Some(last));
        Ok(last)
    }

    /// Drops cached entries at or after `from` (all of them for `Index::ZERO`).
    fn forget_recent_from(&mut self, from: Index) {
        while self.recent.back().is_some_and(|e| e.index >= from) {
            let e = self.recent.pop_back().expect("checked");
            self.recent_bytes -= e.data.len() as u64;
        }
    }

    /// Serves `entries` from the recent-entry cache when it holds `lo` and the cache still ends
    /// at the log's last index; returns false to read from the log instead.
    fn entries_from_recent(
        &self,
        lo: Index,
        hi: Index,
        max_bytes: u64,
        out: &mut Vec<Entry>,
    ) -> bool {
        let (Some(front), Some(back)) = (self.recent.front(), self.recent.back()) else {
            return false;
        };
        if lo < front.index
            || lo > back.index
            || back.index.get() != self.storage.wal.last_index().0
        {
            return false;
        }
        let start = (lo.get() - front.index.get()) as usize;
        let mut bytes = 0u64;
        for e in self.recent.range(start..) {
            if e.index >= hi {
                break;
            }
            let size = e.data.len() as u64;
            // Like the log read: payload bytes, at least one entry, then stop before exceeding
            // `max_bytes`.
            if e.index != lo && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            out.push(e.clone());
        }
        true
    }

    /// Writes a snapshot of `sm` at (`index`, `term`) durably and returns its metadata. The
    /// caller then tells the core (`on_snapshot_written`) and may compact.
    pub fn write_snapshot(
        &mut self,
        index: Index,
        term: Term,
        membership: &Membership,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<SnapshotMeta, st::StorageError> {
        let mut w = self.storage.snapshots.begin(
            st::LogIndex(index.get()),
            st::LogTerm(term.get()),
            &encode_membership(membership),
        )?;
        run_into_writer(&mut w, write)?;
        self.storage.snapshots.finish(w)?;
        Ok(SnapshotMeta {
            last_included_index: index,
            last_included_term: term,
            membership: membership.clone(),
        })
    }

    /// Starts a local snapshot at (`index`, `term`) whose data a [`SnapshotJob`] writes on another
    /// thread ([`write_snapshot_job`]); [`WalLogStore::finish_snapshot`] completes it.
    pub fn begin_snapshot(
        &self,
        index: Index,
        term: Term,
        membership: &Membership,
    ) -> Result<st::SnapshotWriter, st::StorageError> {
        self.storage.snapshots.begin(
            st::LogIndex(index.get()),
            st::LogTerm(term.get()),
            &encode_membership(membership),
        )
    }

    /// Completes a snapshot written by [`write_snapshot_job`]: trailer, sync, rename, directory
    /// sync (storage rule 15 of docs/RULES.md). Returns `None`, dropping the partial file, if a
    /// newer snapshot (for example one installed from the leader meanwhile) already covers `index`.
    pub fn finish_snapshot(
        &mut self,
        w: st::SnapshotWriter,
        index: Index,
        term: Term,
        membership: &Membership,
    ) -> Result<Option<SnapshotMeta>, st::StorageError> {
        if self
            .storage
            .snapshots
            .latest()
            .is_some_and(|m| m.last_index.0 >= index.get())
        {
            return Ok(None);
        }
        self.storage.snapshots.finish(w)?;
        Ok(Some(SnapshotMeta {
            last_included_index: index,
            last_included_term: term,
            membership: membership.clone(),
        }))
    }

    /// Reads the latest snapshot's data (checksum verified), with its metadata.
    pub fn read_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, st::StorageError> {
        let Some(r) = self.storage.snapshots.open_latest()? else {
            return Ok(None);
        };
        let meta = self.convert_meta(r.meta());
        Ok(Some((meta, r.read_all()?)))
    }

    /// Drops log entries up to `index` (a durable snapshot covers them: storage rule 15
    /// of docs/RULES.md).
    pub fn compact(&mut self, index: Index) -> Result<(), st::StorageError> {
        let wal = &mut self.storage.wal;
        if index.get() < wal.first_index().0 {
            return Ok(());
        }
        let term = match wal.term_at(st::LogIndex(index.get()))? {
            Some(t) => t,
            None => return Ok(()),
        };
        wal.compact(st::LogIndex(index.get()), term)
    }

    fn convert_meta(&self, m: &st::SnapshotMeta) -> SnapshotMeta {
        SnapshotMeta {
            last_included_index: Index(m.last_index.0),
            last_included_term: Term(m.last_term.0),
            membership: decode_membership(&m.membership).unwrap_or_else(|| {
                tracing::error!(path = %m.path.display(),
                    "snapshot membership does not decode; using the configured voters");
                self.initial_membership.clone()
            }),
        }
    }
}

/// Runs a state machine's snapshot job into `w`, writes the trailer and syncs the file (on the
/// calling thread: the node runs this on its snapshot thread, so the loop only renames it).
pub fn write_snapshot_job(
    w: &mut st::SnapshotWriter,
    job: crate::state_machine::SnapshotJob,
) -> Result<(), st::StorageError> {
    run_into_writer(w, job)?;
    w.seal()
}

/// Feeds what `write` produces into `w` in large chunks (state machines write many small
/// pieces), keeping storage's typed error (ENOSPC, a fatal sync) over the `io::Error` the
/// state machine sees.
fn run_into_writer(
    w: &mut st::SnapshotWriter,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), st::StorageError> {
    let mut adapter = ChunkWriter { w, failed: None };
    let r = {
        let mut buffered = io::BufWriter::with_capacity(256 << 10, &mut adapter);
        write(&mut buffered).and_then(|()| buffered.flush())
    };
    if let Some(e) = adapter.failed.take() {
        return Err(e);
    }
    r.map_err(|e| st::StorageError::Snapshot(format!("state machine snapshot failed: {e}")))
}

/// `io::Write` over a snapshot writer, keeping storage's typed error (ENOSPC, fatal sync).
struct ChunkWriter<'a> {
    w: &'a mut st::SnapshotWriter,
    failed: Option<st::StorageError>,
}

impl Write for ChunkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.w.write_chunk(buf) {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                let msg = e.to_string();
                self.failed = Some(e);
                Err(io::Error::other(msg))
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LogStore for WalLogStore {
    fn snapshot_meta(&self) -> SnapshotMeta {
        match self.storage.snapshots.latest() {
            Some(m) => self.convert_meta(m),
            None => {
                let (ci, ct) = self.storage.wal.compacted();
                SnapshotMeta {
                    last_included_index: Index(ci.0),
                    last_included_term: Term(ct.0),
                    membership: self.initial_membership.clone(),
                }
            }
        }
    }

    fn first_index(&self) -> Index {
        Index(self.storage.wal.first_index().0)
    }

    fn last_index(&self) -> Index {
        let snap = self
            .storage
            .snapshots
            .latest()
            .map_or(0, |m| m.last_index.0);
        Index(self.storage.wal.last_index().0.max(snap))
    }

    fn term(&self, index: Index) -> Result<Term, LogError> {
        if index == Index::ZERO {
            return Ok(Term::ZERO);
        }
        if let Some(m) = self.storage.snapshots.latest() {
            if m.last_index.0 == index.get() {
                return Ok(Term(m.last_term.0));
            }
        }
        let (ci, ct) = self.storage.wal.compacted();
        if ci.0 == index.get() {
            return Ok(Term(ct.0));
        }
        match self
            .storage
            .wal
            .term_at(st::LogIndex(index.get()))
            .map_err(storage_err)?
        {
            Some(t) => Ok(Term(t.0)),
            None if index < self.first_index() => Err(LogError::Compacted {
                index,
                first_index: self.first_index(),
            }),
            None => Err(LogError::Unavailable {
                index,
                last_index: self.last_index(),
            }),
        }
    }

    fn entries(
        &self,
        lo: Index,
        hi: Index,
        max_bytes: u64,
        out: &mut Vec<Entry>,
    ) -> Result<(), LogError> {
        if lo >= hi {
            return Ok(());
        }
        if lo < self.first_index() {
            return Err(LogError::Compacted {
                index: lo,
                first_index: self.first_index(),
            });
        }
        if self.entries_from_recent(lo, hi, max_bytes, out) {
            return Ok(());
        }
        let count = (hi.get() - lo.get()) as usize;
        let got = self
            .storage
            .wal
            .read(st::LogIndex(lo.get()), count, max_bytes.max(1))
            .map_err(storage_err)?;
        if got.is_empty() {
            return Err(LogError::Unavailable {
                index: lo,
                last_index: self.last_index(),
            });
        }
        for e in got {
            let Some(kind) = kind_from_storage(e.kind) else {
                return Err(LogError::Storage(format!(
                    "entry {} has unknown kind byte {}",
                    e.index.0, e.kind.0
                )));
            };
            out.push(Entry {
                index: Index(e.index.0),
                term: Term(e.term.0),
                kind,
                data: Payload::new(e.payload),
            });
        }
        Ok(())
    }

    fn snapshot_chunk(
        &self,
        snapshot_index: Index,
        offset: u64,
        max_bytes: u64,
    ) -> Result<(Payload, bool), LogError> {
        let r = self
            .storage
            .snapshots
            .open_latest()
            .map_err(storage_err)?
            .ok_or(LogError::SnapshotUnavailable {
                requested: snapshot_index,
                current: Index::ZERO,
            })?;
        let current = Index(r.meta().last_index.0);
        if current != snapshot_index {
            return Err(LogError::SnapshotUnavailable {
                requested: snapshot_index,
                current,
            });
        }
        let total = r.meta().data_bytes;
        let want = max_bytes.min(total.saturating_sub(offset)) as usize;
        let mut buf = vec![0u8; want];
        let n = r.read_at(offset, &mut buf).map_err(storage_err)?;
        buf.truncate(n);
        let done = offset + n as u64 >= total;
        Ok((Payload::new(buf), done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn membership_round_trips() {
        let m = Membership {
            voters: vec![NodeId(1), NodeId(2), NodeId(3)],
            voters_outgoing: vec![NodeId(4)],
        };
        assert_eq!(decode_membership(&encode_membership(&m)), Some(m));
    }

    proptest! {
        #[test]
        fn membership_decoder_never_panics(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode_membership(&b);
        }
    }

    fn entries(lo: u64, hi: u64, term: u64) -> Vec<Entry> {
        (lo..=hi)
            .map(|i| Entry {
                index: Index(i),
                term: Term(term),
                kind: EntryKind::Normal,
                data: Payload::from_slice(format!("e{i}").as_bytes()),
            })
            .collect()
    }

    fn open(dir: &std::path::Path) -> WalLogStore {
        let mut opts = st::StorageOptions::default();
        opts.wal.segment_bytes = 1 << 20;
        let storage = st::Storage::open(dir, opts).unwrap();
        WalLogStore::new(storage, Membership::default()).unwrap()
    }

    fn received_snapshot(store: &mut WalLogStore, index: u64, term: u64) -> SnapshotMeta {
        let meta = SnapshotMeta {
            last_included_index: Index(index),
            last_included_term: Term(term),
            membership: Membership {
                voters: vec![NodeId(1), NodeId(2), NodeId(3)],
                voters_outgoing: vec![],
            },
        };
        for (offset, part) in [(0u64, &b"state-"[..]), (6, &b"bytes"[..])] {
            store
                .write_snapshot_chunk(&SnapshotChunk {
                    meta: meta.clone(),
                    offset,
                    data: Payload::from_slice(part),
                })
                .unwrap();
        }
        meta
    }

    /// Every read through the store, whether the recent-entry cache serves it or the log does,
    /// returns what the log holds, across conflicting appends, reopen, byte limits and an
    /// installed snapshot.
    #[test]
    fn reads_served_from_the_recent_entry_cache_match_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let read = |s: &WalLogStore, lo: u64, hi: u64, max: u64| {
            let mut out = Vec::new();
            s.entries(Index(lo), Index(hi), max, &mut out).unwrap();
            out
        };
        let from_log = |s: &WalLogStore, lo: u64, hi: u64, max: u64| {
            s.storage
                .wal
                .read(st::LogIndex(lo), (hi - lo) as usize, max.max(1))
                .unwrap()
                .into_iter()
                .map(|e| (e.index.0, e.term.0, e.payload))
                .collect::<Vec<_>>()
        };
        let simple = |v: Vec<Entry>| {
            v.into_iter()
                .map(|e| (e.index.get(), e.term.get(), e.data.as_slice().to_vec()))
                .collect::<Vec<_>>()
        };
        store.append_entries(&entries(1, 20, 1)).unwrap();
        assert!(!store.recent.is_empty());
        for (lo, hi, max) in [(1, 21, u64::MAX), (5, 9, u64::MAX), (3, 21, 7), (20, 21, 1)] {
            assert_eq!(
                simple(read(&store, lo, hi, max)),
                from_log(&store, lo, hi, max)
            );
        }
        // A conflicting append from a new leader replaces the suffix (Raft §5.3).
        store.append_entries(&entries(12, 15, 2)).unwrap();
        assert_eq!(store.last_index(), Index(15));
        let got = simple(read(&store, 10, 16, u64::MAX));
        assert_eq!(got, from_log(&store, 10, 16, u64::MAX));
        assert_eq!(
            got.iter().map(|e| e.1).collect::<Vec<_>>(),
            [1, 1, 2, 2, 2, 2]
        );
        // Reopened: an empty cache, reads from the log, then the cache refills from appends.
        drop(store);
        let mut store = open(dir.path());
        assert!(store.recent.is_empty());
        store.append_entries(&entries(16, 18, 2)).unwrap();
        assert_eq!(
            simple(read(&store, 1, 19, u64::MAX)),
            from_log(&store, 1, 19, u64::MAX)
        );
        // An installed snapshot discards the log and the cache with it.
        let meta = received_snapshot(&mut store, 30, 3);
        store.install_snapshot(&meta).unwrap();
        assert!(store.recent.is_empty());
        store.append_entries(&entries(31, 33, 3)).unwrap();
        assert_eq!(
            simple(read(&store, 31, 34, u64::MAX)),
            from_log(&store, 31, 34, u64::MAX)
        );
    }

    /// C8: a crash after the received snapshot became durable but before the old log was
    /// discarded. The next open completes the install: the log continues the snapshot.
    #[test]
    fn c8_crash_between_snapshot_install_and_log_discard_is_completed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        store.append_entries(&entries(1, 50, 1)).unwrap();
        let meta = received_snapshot(&mut store, 100, 2);
        // The first durable step of install_snapshot, then the "crash".
        let (_, w) = store.incoming.take().unwrap();
        store.storage.snapshots.finish(w).unwrap();
        drop(store);

        let mut store = open(dir.path());
        assert_eq!(store.snapshot_meta(), meta);
        assert_eq!(store.first_index(), Index(101));
        assert_eq!(store.last_index(), Index(100));
        assert_eq!(store.term(Index(100)), Ok(Term(2)));
        assert!(matches!(
            store.term(Index(40)),
            Err(LogError::Compacted { .. })
        ));
        // The log continues the snapshot.
        store.append_entries(&entries(101, 105, 2)).unwrap();
        let mut out = Vec::new();
        store
            .entries(Index(101), Index(106), u64::MAX, &mut out)
            .unwrap();
        assert_eq!(out, entries(101, 105, 2));
        let (m, data) = store.read_snapshot().unwrap().unwrap();
        assert_eq!((m, data), (meta, b"state-bytes".to_vec()));
    }

    /// C8: a crash in the middle of receiving a snapshot leaves the old state: the partial file
    /// is swept at open, the log and the previous snapshot are intact.
    #[test]
    fn c8_crash_while_receiving_a_snapshot_keeps_the_old_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        store.append_entries(&entries(1, 20, 1)).unwrap();
        received_snapshot(&mut store, 100, 2); // chunks written, never installed
        std::mem::forget(store.incoming.take()); // a crash: no destructor removes the file
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.snapshot_meta().last_included_index, Index(0));
        assert_eq!(
            (store.first_index(), store.last_index()),
            (Index(1), Index(20))
        );
        let partials = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".partial")
            })
            .count();
        assert_eq!(partials, 0, "a partial snapshot was left behind");
    }

    /// A log that holds the snapshot's last entry with the same term continues it: kept.
    #[test]
    fn a_log_consistent_with_the_snapshot_is_kept_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        store.append_entries(&entries(1, 120, 2)).unwrap();
        let meta = received_snapshot(&mut store, 100, 2);
        let (_, w) = store.incoming.take().unwrap();
        store.storage.snapshots.finish(w).unwrap();
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.snapshot_meta(), meta);
        assert_eq!(store.last_index(), Index(120));
        assert_eq!(store.term(Index(110)), Ok(Term(2)));
    }

    #[test]
    fn entry_kinds_round_trip() {
        for k in [EntryKind::Normal, EntryKind::Noop, EntryKind::Membership] {
            assert_eq!(kind_from_storage(kind_to_storage(k)), Some(k));
        }
        assert_eq!(kind_from_storage(st::EntryKind(200)), None);
    }
}
