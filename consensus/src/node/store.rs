//! [`WalLogStore`]: the core's [`LogStore`] over `shmraft-storage` (the mmapped WAL, the hard
//! state and the snapshot store), plus the writes the driver performs for `Ready::persist`.
//!
//! Storage knows nothing of Raft: this module converts between the core's types (`Index`,
//! `Term`, `EntryKind`, `Membership`) and storage's opaque ones, and is the only place that does.

use crate::log_store::{LogError, LogStore};
use crate::message::{Entry, EntryKind, HardState, Membership, Payload, SnapshotMeta};
use crate::raft::SnapshotChunk;
use crate::types::{Index, NodeId, Term};
use shmraft_storage as st;
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
}

impl std::fmt::Debug for WalLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalLogStore")
            .field("dir", &self.storage.dir())
            .finish()
    }
}

impl WalLogStore {
    pub fn new(storage: st::Storage, initial_membership: Membership) -> WalLogStore {
        WalLogStore {
            storage,
            initial_membership,
            incoming: None,
        }
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
    /// fsync policy (storage rule 8: a vote is sent only after it is durable).
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

    /// Makes the received snapshot current (sync, rename, directory sync: storage rule 15) and
    /// discards the whole log, which restarts after the snapshot's last included index.
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
        self.storage.snapshots.finish(w)?;
        let idx = st::LogIndex(meta.last_included_index.get());
        let term = st::LogTerm(meta.last_included_term.get());
        let wal = &mut self.storage.wal;
        // Raft §7: if the log holds entries past the snapshot, they may conflict with it; the
        // core asked us to discard the whole log, so drop the suffix first, then the prefix.
        if wal.last_index() > idx && wal.first_index() <= idx.next() {
            wal.truncate_suffix(idx.next())?;
        } else if wal.last_index() > idx {
            wal.truncate_suffix(wal.first_index())?;
        }
        wal.compact(idx, term)
    }

    /// Appends entries, first truncating every entry at or after `entries[0].index` (conflict
    /// resolution, Raft §5.3). Returns the last index appended.
    pub fn append_entries(&mut self, entries: &[Entry]) -> Result<Index, st::StorageError> {
        let Some(first) = entries.first() else {
            return Ok(Index(self.storage.wal.last_index().0));
        };
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
        Ok(Index(wal.append(&refs)?.0))
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
        let mut adapter = ChunkWriter {
            w: &mut w,
            failed: None,
        };
        let r = write(&mut adapter);
        if let Some(e) = adapter.failed.take() {
            return Err(e);
        }
        r.map_err(|e| st::StorageError::Snapshot(format!("state machine snapshot failed: {e}")))?;
        self.storage.snapshots.finish(w)?;
        Ok(SnapshotMeta {
            last_included_index: index,
            last_included_term: term,
            membership: membership.clone(),
        })
    }

    /// Reads the latest snapshot's data (checksum verified), with its metadata.
    pub fn read_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, st::StorageError> {
        let Some(r) = self.storage.snapshots.open_latest()? else {
            return Ok(None);
        };
        let meta = self.convert_meta(r.meta());
        Ok(Some((meta, r.read_all()?)))
    }

    /// Drops log entries up to `index` (a durable snapshot covers them: storage rule 15).
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

    #[test]
    fn entry_kinds_round_trip() {
        for k in [EntryKind::Normal, EntryKind::Noop, EntryKind::Membership] {
            assert_eq!(kind_from_storage(kind_to_storage(k)), Some(k));
        }
        assert_eq!(kind_from_storage(st::EntryKind(200)), None);
    }
}
