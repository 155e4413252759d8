//! Small explicit types of the storage API. Storage does not depend on consensus: these mirror
//! its `Index`/`Term` newtypes without sharing them (0 is the sentinel of each, as there).

use std::fmt;

/// Position of an entry in the log. Indexes start at 1; `LogIndex(0)` means "no entry"
/// (the index before the first entry of an empty, never-compacted log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogIndex(pub u64);

/// Raft term carried by an entry. `LogTerm(0)` means "no term" (before the first entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogTerm(pub u64);

/// Opaque kind byte of an entry (normal command, configuration change, no-op, ...): the meaning
/// belongs to the caller; storage only stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EntryKind(pub u8);

impl LogIndex {
    /// The raw value.
    #[inline]
    pub const fn get(self) -> u64 {
        self.0
    }
    /// The next index (saturating).
    #[inline]
    pub const fn next(self) -> LogIndex {
        LogIndex(self.0.saturating_add(1))
    }
    /// The previous index (saturating at 0).
    #[inline]
    pub const fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

impl LogTerm {
    /// The raw value.
    #[inline]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for LogTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u64> for LogIndex {
    fn from(v: u64) -> Self {
        LogIndex(v)
    }
}

impl From<u64> for LogTerm {
    fn from(v: u64) -> Self {
        LogTerm(v)
    }
}

/// An entry to append, borrowing its payload (no copy until it lands in the mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    pub index: LogIndex,
    pub term: LogTerm,
    pub kind: EntryKind,
    pub payload: &'a [u8],
}

/// An entry read back from the log (owns its payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: LogIndex,
    pub term: LogTerm,
    pub kind: EntryKind,
    pub payload: Vec<u8>,
}

impl Entry {
    /// Borrows this entry as an [`EntryRef`].
    pub fn as_ref(&self) -> EntryRef<'_> {
        EntryRef {
            index: self.index,
            term: self.term,
            kind: self.kind,
            payload: &self.payload,
        }
    }
}
