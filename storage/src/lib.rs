//! shmraft-storage: the durable half of a shmraft node.
//!
//! This crate knows nothing of Raft's rules: it stores records that carry an index and a term,
//! a small hard-state record and snapshot files, and it says exactly what is durable.
//! See `docs/FORMAT.md` for every byte on disk and `../shared/notes/storage-rules.md` for the
//! rules each part upholds.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
