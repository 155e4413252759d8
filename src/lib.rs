//! shmraft: a persistent Raft consensus engine whose nodes are separate processes on one host.
//!
//! This facade re-exports the crates; see ARCHITECTURE.md for the map.
#![forbid(unsafe_code)]

pub use shmraft_consensus as consensus;
pub use shmraft_ipc as ipc;
pub use shmraft_storage as storage;
