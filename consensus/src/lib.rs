//! shmraft-consensus: a deterministic, sans-I/O Raft core, the state machines it drives, and the
//! seeded simulator and linearizability checker that test it.
#![forbid(unsafe_code)]

pub mod history;
pub mod kv;
pub mod lincheck;
pub mod session;
pub mod state_machine;
pub mod types;

pub use history::{HistoryWriter, OpKind, Operation, read_history_file};
pub use kv::{KvCommand, KvResult, KvStateMachine};
pub use lincheck::{
    CheckOutcome, CheckReport, CheckedFile, Violation, check_history, check_history_file,
};
pub use session::{ClientRequest, SessionConfig, SessionResult, Sessions};
pub use state_machine::StateMachine;
pub use types::{Index, NodeId, Term};
