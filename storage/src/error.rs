//! Errors of the storage crate: each variant carries what a user needs to act on it.

use crate::types::LogIndex;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Damaged data that recovery must not silently drop (storage rule 12 of docs/RULES.md): names the
/// file, the byte offset, the log index when known, and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "corruption in {file} at byte {offset}{idx}: expected {expected}, found {found}; this data \
     was covered by a completed sync, so it is not a torn write: restore the node from a peer \
     or move the directory aside (inspect it with raft-dump)",
    file = .file.display(),
    idx = .index.map(|i| format!(" (index {i})")).unwrap_or_default()
)]
pub struct Corruption {
    pub file: PathBuf,
    pub offset: u64,
    pub index: Option<LogIndex>,
    pub expected: String,
    pub found: String,
}

/// A failed fsync/msync (or another failure after which the on-disk state is unknown).
/// Fatal (storage rule 10 of docs/RULES.md): the log is poisoned and every later call returns this
/// error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "fatal storage error: {op} on {path} failed: {message} (errno {errno:?}); dirty pages may \
     have been dropped by the kernel, so the log stopped accepting work: restart the node so \
     recovery re-reads what is really on disk",
    path = .path.display()
)]
pub struct FatalError {
    pub op: &'static str,
    pub path: PathBuf,
    pub errno: Option<i32>,
    pub message: String,
}

/// Every error of the storage crate.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O call failed (not a sync: those are [`StorageError::Fatal`]).
    #[error("{op} {path}: {source}", path = .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// ENOSPC: the operation was refused and nothing already stored was changed.
    #[error(
        "disk full (ENOSPC) while {op} {path}: nothing already stored was changed; free space \
         and retry",
        path = .path.display()
    )]
    DiskFull { op: &'static str, path: PathBuf },
    /// Damaged data before the durable point, or an unreadable structure.
    #[error(transparent)]
    Corrupt(#[from] Corruption),
    /// Another process holds the data directory's lock (storage rule 4 of docs/RULES.md).
    #[error(
        "data directory {dir} is locked by {holder}: two processes must never open one log; \
         stop that process first",
        dir = .dir.display(),
        holder = .holder_pid.map(|p| format!("process {p}")).unwrap_or_else(|| "another process (pid unknown)".into())
    )]
    Locked {
        dir: PathBuf,
        holder_pid: Option<u32>,
    },
    /// A sync failed earlier; the log is poisoned (storage rule 10 of docs/RULES.md).
    #[error(transparent)]
    Fatal(Arc<FatalError>),
    /// An append whose index does not follow the last index.
    #[error("append of index {got} does not follow the last index (expected {expected})")]
    NotContiguous { expected: LogIndex, got: LogIndex },
    /// An append whose term is lower than the previous entry's (terms never decrease in a log).
    #[error("append of index {index} with term {term} below the previous entry's term {prev_term}")]
    TermRegression {
        index: LogIndex,
        term: u64,
        prev_term: u64,
    },
    /// An entry too large for the configured maximum (or a segment).
    #[error("entry at index {index} has {len} bytes, more than the maximum {max}")]
    EntryTooLarge { index: LogIndex, len: u64, max: u64 },
    /// An index outside the log.
    #[error(
        "index {index} is outside the log ({first}..={last}); compacted entries are in the snapshot"
    )]
    OutOfRange {
        index: LogIndex,
        first: LogIndex,
        last: LogIndex,
    },
    /// Bad options given to `open`.
    #[error("invalid storage options: {0}")]
    InvalidOptions(String),
    /// A snapshot operation that does not fit the store's state.
    #[error("snapshot: {0}")]
    Snapshot(String),
}

impl StorageError {
    /// Wraps an I/O error, turning ENOSPC into [`StorageError::DiskFull`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            StorageError::DiskFull { op, path }
        } else {
            StorageError::Io { op, path, source }
        }
    }

    /// Whether this error is fatal (the log is poisoned).
    pub fn is_fatal(&self) -> bool {
        matches!(self, StorageError::Fatal(_))
    }
}

/// Result alias of this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
