//! The `StateMachine` trait that users implement to embed shmraft under their own state.
//!
//! The node driver applies committed entries in log order, exactly once per index, and asks for a
//! snapshot when the log grows past its thresholds. Duplicate suppression of client retries
//! (exactly-once sessions) happens above this trait, so an implementation only sees each client
//! command once.

use crate::types::Index;
use std::io::{self, Read, Write};

/// A snapshot captured now and written later on another thread (see
/// [`StateMachine::snapshot_job`]). It must write exactly what `snapshot` would have written at
/// the moment it was captured.
pub type SnapshotJob = Box<dyn FnOnce(&mut dyn Write) -> io::Result<()> + Send>;

/// A deterministic state machine replicated by Raft.
///
/// Contract:
/// 1. `apply` is called with strictly increasing `index` values, each committed command exactly
///    once; it must be deterministic: the same sequence of commands yields the same results and the
///    same state on every node.
/// 2. `apply` must not fail on a malformed command: it returns an error *result* (as bytes) that is
///    handed to the client instead, because every replica must reach the same state.
/// 3. `snapshot` writes the whole state as of the last applied index; `restore` replaces the whole
///    state with what a `snapshot` wrote. The driver records the index a snapshot covers.
pub trait StateMachine {
    /// Applies one committed command at `index` and returns the result for the client.
    fn apply(&mut self, index: Index, command: &[u8]) -> Vec<u8>;

    /// Answers a read-only query against the current state. The driver calls it for linearizable
    /// reads once the read index (Raft §6.4, ReadIndex) has been applied, so it must not change
    /// state. A malformed query returns an error result as bytes, like `apply`.
    fn query(&self, query: &[u8]) -> Vec<u8>;

    /// Writes a complete image of the state to `out`.
    fn snapshot(&self, out: &mut dyn Write) -> io::Result<()>;

    /// Optional: captures the state cheaply now (a copy, or a handle to an immutable version)
    /// and returns a job that serialises it later, so the node keeps applying entries and
    /// serving clients while a large snapshot is written on another thread. `None` (the
    /// default) makes the node call [`StateMachine::snapshot`] on its loop thread instead.
    fn snapshot_job(&self) -> Option<SnapshotJob> {
        None
    }

    /// Replaces the whole state with the image read from `input`. An image that does not decode is
    /// an `io::ErrorKind::InvalidData` error, never a panic.
    fn restore(&mut self, input: &mut dyn Read) -> io::Result<()>;

    /// A digest of the state for equality checks across nodes (the simulator and `shmraft torture`
    /// compare digests after the faults heal). Equal states must give equal digests.
    fn digest(&self) -> u64;
}
