//! shmraft: a persistent Raft consensus engine whose nodes are separate processes on one host.
//!
//! This facade re-exports the crates; see ARCHITECTURE.md for the map. The `cli` feature (on by
//! default) adds the `shmraft` and `raft-dump` binaries and [`tools`], the crate behind them;
//! without it an embedder compiles only the library crates (no clap, plotters, indicatif,
//! hdrhistogram).
#![forbid(unsafe_code)]

pub use shmraft_consensus as consensus;
pub use shmraft_ipc as ipc;
pub use shmraft_storage as storage;
#[cfg(feature = "cli")]
pub use shmraft_tools as tools;
