//! shmraft-ipc: the transport between local node processes.
//!
//! Single-writer rings in shared memory carry bulk data; pipes carry wake-ups. This crate knows
//! nothing of Raft: it moves checksummed frames between processes. Every byte read from shared
//! memory is untrusted input. See `docs/FORMAT.md` for the ring layout.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
