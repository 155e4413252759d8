//! shmraft-consensus: a deterministic, sans-I/O Raft core, the state machines it drives, and the
//! seeded simulator and linearizability checker that test it.
//!
//! # The core
//!
//! [`Raft`] is one node's consensus state. It performs no I/O, reads no clock and owns no thread
//! (**Architecture Invariant**): time arrives as [`Raft::tick`], the network as [`Raft::step`],
//! clients as [`Raft::propose`] / [`Raft::propose_batch`] / [`Raft::read_index`], storage
//! completions as [`Raft::on_persisted`] and [`Raft::on_snapshot_written`]. Randomness (election
//! timeouts) comes from a generator seeded by the driver. The core reads durable log contents
//! synchronously through the [`LogStore`] trait; everything it wants written comes out in a
//! [`Ready`].
//!
//! # The driver's duties
//!
//! [`node::driver::Driver`] is the one implementation of these duties: the node process, the
//! simulator and the `core_throughput` benchmark all run it, over different disk and network
//! seams ([`node::driver::Disk`], [`node::driver::Network`]). It loops:
//!
//! 1. Feed inputs: call `tick()` every tick interval (10 ms with the default timeouts), `step(m)`
//!    for every message received (drop messages that fail to decode), `propose`/`read_index` for
//!    client requests, and the completion calls below when storage finishes work.
//! 2. If `has_ready()`, take `let rd = raft.ready()`.
//! 3. Send `rd.messages` now. They never depend on unpersisted state of this node, so the
//!    leader's AppendEntries go out in parallel with its own write (Raft thesis §10.2.1).
//! 4. If `rd.persist` is `Some(p)`: write, in this order, `p.hard_state`, `p.snapshot_chunks`
//!    (to a temporary snapshot file; offset 0 starts a new one), `p.install_snapshot` (make the
//!    received snapshot current and discard the whole log), `p.entries` (truncating the log from
//!    `p.entries[0].index` first). Persist work is ordered: it completes after all earlier persist
//!    work. When it is durable (fsync'd), send `p.messages` — votes and acknowledgements that must
//!    not leave before the sync (storage rule 8 of docs/RULES.md) — and call
//!    `raft.on_persisted(p.id)`. The write may run asynchronously while the loop continues.
//! 5. If `rd.apply_snapshot` is `Some(meta)`: restore the state machine from the store's snapshot
//!    (it is durable by now: at start-up, or after the install's `on_persisted`).
//! 6. Apply `rd.committed` in order (skip `Noop` and `Membership` entries for the state machine
//!    but count them as applied). A proposal took effect iff the entry at its `ProposalId::index`
//!    has its `ProposalId::term`.
//! 7. For each of `rd.read_states`, answer the read once the state machine has applied its
//!    `index` (ReadIndex, thesis §6.4).
//! 8. If `rd.snapshot_request` is `Some(i)`: snapshot the state machine (it has applied exactly up
//!    to `i` now), write it durably (temp file, sync, rename, directory sync: storage rule 15
//!    of docs/RULES.md), then call `raft.on_snapshot_written(&meta)`.
//! 9. If `rd.compact_to` is `Some(i)`: drop log entries `<= i` (the snapshot covering them is
//!    already durable).
//! 10. Go to 1.
//!
//! ```text
//! loop {
//!     select(tick timer, inbound messages, client requests, storage completions);
//!     while raft.has_ready() {
//!         let rd = raft.ready();
//!         send(rd.messages);
//!         if let Some(p) = rd.persist { storage.submit(p) }   // completion: send p.messages,
//!                                                             //   raft.on_persisted(p.id)
//!         if let Some(m) = rd.apply_snapshot { sm.restore(store.snapshot(m)) }
//!         for e in rd.committed { sm.apply(e) }
//!         serve(rd.read_states);
//!         if let Some(i) = rd.snapshot_request { storage.write_snapshot(sm, i) }
//!         if let Some(i) = rd.compact_to { storage.compact(i) }
//!     }
//! }
//! ```
//!
//! On start the driver loads the hard state and opens the store; `Raft::new` then asks (first
//! `Ready`) for the state machine to be restored from the latest snapshot and replays the log tail
//! up to the commit index.
//!
//! # The simulator
//!
//! [`sim`] runs N production drivers in one process over a simulated network and simulated disks
//! with faults (the seams of [`sim::seams`]), stepped by a seeded event queue in one thread,
//! checks Raft's safety properties after every step, and replays any failure from its seed.
#![forbid(unsafe_code)]

pub mod config;
pub mod history;
pub mod kv;
pub mod lincheck;
pub mod log_store;
pub mod message;
pub mod node;
pub mod progress;
pub mod raft;
pub mod session;
pub mod sim;
pub mod state_machine;
pub mod types;

#[cfg(feature = "bug-seeding")]
pub use config::BugSwitches;
pub use config::{Config, ConfigError, ReadMode};
pub use history::{HistoryWriter, OpKind, Operation, read_history_file};
pub use kv::{KvCommand, KvResult, KvStateMachine};
pub use lincheck::{
    CheckLimits, CheckOutcome, CheckReport, CheckedFile, GiveUp, Violation, check_history,
    check_history_file, check_history_file_with, check_history_with,
};
pub use log_store::{LogError, LogStore, MemLogStore};
pub use message::{
    CodecError, Entry, EntryKind, HardState, Membership, Message, MessageBody, Payload,
    SnapshotMeta, decode_message, encode_message,
};
pub use raft::{
    InitError, Persist, ProposalId, ProposeError, Raft, ReadError, ReadState, Ready, RoleKind,
    SnapshotChunk, Status, StepError, TransferError,
};
pub use session::{ClientRequest, SessionConfig, SessionResult, Sessions};
pub use state_machine::{SnapshotJob, StateMachine};
pub use types::{Index, NodeId, Term};
