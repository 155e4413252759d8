//! The log-read abstraction the core calls synchronously, and an in-memory implementation.
//!
//! **API Boundary:** the core only *reads* through `LogStore`; every write reaches the store
//! through `Ready::persist`, performed by the driver. The node driver implements `LogStore` over
//! the mmapped WAL; the simulator and the benchmark use `MemLogStore`.

use crate::message::{Entry, HardState, Payload, SnapshotMeta};
use crate::types::{Index, Term};
use std::collections::VecDeque;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LogError {
    #[error("entry {index} is compacted (the log starts at {first_index})")]
    Compacted { index: Index, first_index: Index },
    #[error("entry {index} is past the end of the log (last index {last_index})")]
    Unavailable { index: Index, last_index: Index },
    #[error(
        "snapshot at index {requested} is no longer available (the current one covers {current})"
    )]
    SnapshotUnavailable { requested: Index, current: Index },
    #[error("log storage failed: {0}")]
    Storage(String),
}

/// What the core reads from durable storage. Indexes refer to entries the driver has written
/// (completed `Persist` work); the core keeps anything newer in memory.
pub trait LogStore {
    /// Metadata of the latest durable snapshot (index 0 if none).
    fn snapshot_meta(&self) -> SnapshotMeta;
    /// Index of the first entry still in the log. Invariant: `first_index() <=
    /// snapshot_meta().last_included_index + 1` (no hole between the snapshot and the log).
    fn first_index(&self) -> Index;
    /// Index of the last entry written (the snapshot index if the log is empty).
    fn last_index(&self) -> Index;
    /// Term of entry `index`; `index` may also be the snapshot's last included index.
    fn term(&self, index: Index) -> Result<Term, LogError>;
    /// Appends entries `[lo, hi)` to `out`, stopping once `max_bytes` is reached but always
    /// returning at least one entry when `lo < hi`.
    fn entries(
        &self,
        lo: Index,
        hi: Index,
        max_bytes: u64,
        out: &mut Vec<Entry>,
    ) -> Result<(), LogError>;
    /// Reads up to `max_bytes` of the snapshot covering `snapshot_index`, from byte `offset`.
    /// Returns the bytes and whether they reach the end of the snapshot.
    fn snapshot_chunk(
        &self,
        snapshot_index: Index,
        offset: u64,
        max_bytes: u64,
    ) -> Result<(Payload, bool), LogError>;
}

/// An in-memory log with a hard state, a snapshot and a partially received snapshot, for the
/// simulator and benchmarks. Its mutators are what a driver does with `Ready` work.
#[derive(Clone, Debug, Default)]
pub struct MemLogStore {
    pub hard_state: HardState,
    snapshot: SnapshotMeta,
    snapshot_data: Payload,
    /// Index of `entries[0]`. Invariant: `offset <= snapshot.last_included_index + 1`.
    offset: Index,
    entries: VecDeque<Entry>,
    /// Chunks of a snapshot being received (a temp file in a real store).
    incoming: Vec<u8>,
}

impl MemLogStore {
    pub fn new() -> MemLogStore {
        MemLogStore {
            offset: Index(1),
            ..Default::default()
        }
    }

    pub fn snapshot_data(&self) -> &Payload {
        &self.snapshot_data
    }

    /// Appends `entries`, first dropping every entry at or after `entries[0].index` (a conflict
    /// truncation, Raft §5.3). Fails if that would leave a hole.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), LogError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let last = self.last_index();
        if first.index > last.next() {
            return Err(LogError::Storage(format!(
                "append at {} would leave a hole after {}",
                first.index, last
            )));
        }
        if first.index < self.offset {
            return Err(LogError::Compacted {
                index: first.index,
                first_index: self.offset,
            });
        }
        let keep = (first.index.0 - self.offset.0) as usize;
        self.entries.truncate(keep);
        for (k, e) in entries.iter().enumerate() {
            debug_assert_eq!(
                e.index.0,
                first.index.0 + k as u64,
                "entries must be contiguous"
            );
            self.entries.push_back(e.clone());
        }
        Ok(())
    }

    /// Drops entries `<= index` (never past the last entry).
    pub fn compact(&mut self, index: Index) {
        let index = index.min(self.last_index());
        while self.offset <= index {
            self.entries.pop_front();
            self.offset = self.offset.next();
        }
    }

    /// Records a snapshot taken locally (the log is kept; compaction is a separate step).
    pub fn set_snapshot(&mut self, meta: SnapshotMeta, data: Payload) {
        if meta.last_included_index <= self.snapshot.last_included_index {
            return;
        }
        self.snapshot = meta;
        self.snapshot_data = data;
    }

    /// Writes one received snapshot chunk (offset 0 starts over).
    pub fn write_snapshot_chunk(&mut self, offset: u64, data: &[u8]) -> Result<(), LogError> {
        if offset == 0 {
            self.incoming.clear();
        }
        if offset != self.incoming.len() as u64 {
            return Err(LogError::Storage(format!(
                "snapshot chunk at offset {offset} but {} bytes received",
                self.incoming.len()
            )));
        }
        self.incoming.extend_from_slice(data);
        Ok(())
    }

    /// Makes the received snapshot the current one and discards the whole log (Raft §7: the log
    /// does not match the snapshot's last entry, so none of it is kept).
    pub fn install_received_snapshot(&mut self, meta: SnapshotMeta) {
        self.snapshot_data = Payload::new(std::mem::take(&mut self.incoming));
        self.offset = meta.last_included_index.next();
        self.entries.clear();
        self.snapshot = meta;
    }

    /// Drops a partially received snapshot (temp files swept at start).
    pub fn discard_incoming(&mut self) {
        self.incoming.clear();
    }

    /// Whether the log and snapshot leave no hole: the first entry directly follows the snapshot
    /// or overlaps it.
    pub fn check_no_hole(&self) -> Result<(), String> {
        if self.offset > self.snapshot.last_included_index.next() {
            return Err(format!(
                "the log starts at {} but the snapshot only covers up to {}: entries {}..{} are lost",
                self.offset,
                self.snapshot.last_included_index,
                self.snapshot.last_included_index.next(),
                self.offset.prev()
            ));
        }
        Ok(())
    }

    pub fn entry(&self, index: Index) -> Option<&Entry> {
        if index < self.offset {
            return None;
        }
        self.entries.get((index.0 - self.offset.0) as usize)
    }
}

impl LogStore for MemLogStore {
    fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot.clone()
    }

    fn first_index(&self) -> Index {
        self.offset
    }

    fn last_index(&self) -> Index {
        let after = Index(self.offset.0 + self.entries.len() as u64).prev();
        after.max(self.snapshot.last_included_index)
    }

    fn term(&self, index: Index) -> Result<Term, LogError> {
        if let Some(e) = self.entry(index) {
            return Ok(e.term);
        }
        if index == self.snapshot.last_included_index {
            return Ok(self.snapshot.last_included_term);
        }
        if index == Index::ZERO {
            return Ok(Term::ZERO);
        }
        if index < self.offset {
            return Err(LogError::Compacted {
                index,
                first_index: self.offset,
            });
        }
        Err(LogError::Unavailable {
            index,
            last_index: self.last_index(),
        })
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
        if lo < self.offset {
            return Err(LogError::Compacted {
                index: lo,
                first_index: self.offset,
            });
        }
        if hi.prev() > self.last_index() {
            return Err(LogError::Unavailable {
                index: hi.prev(),
                last_index: self.last_index(),
            });
        }
        let mut bytes = 0u64;
        let base = out.len();
        let start = (lo.0 - self.offset.0) as usize;
        let end = (hi.0 - self.offset.0) as usize;
        for e in self.entries.range(start..end) {
            bytes += e.size_bytes();
            if bytes > max_bytes && out.len() > base {
                break;
            }
            out.push(e.clone());
        }
        Ok(())
    }

    fn snapshot_chunk(
        &self,
        snapshot_index: Index,
        offset: u64,
        max_bytes: u64,
    ) -> Result<(Payload, bool), LogError> {
        if snapshot_index != self.snapshot.last_included_index {
            return Err(LogError::SnapshotUnavailable {
                requested: snapshot_index,
                current: self.snapshot.last_included_index,
            });
        }
        let data = self.snapshot_data.as_slice();
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(max_bytes as usize).min(data.len());
        Ok((Payload::from_slice(&data[start..end]), end == data.len()))
    }
}
