//! `raft-dump`: the read-only inspector of a node's data directory, and the printers of entry
//! payloads it uses.

pub mod payload;
pub mod raft_dump;
