//! shmraft: a persistent Raft consensus engine whose nodes are separate processes on one host.
//!
//! What an embedding application needs is exported here, at the root:
//!
//! - your state machine implements [`StateMachine`];
//! - each node process runs a [`Node`] built from a [`NodeConfig`] (call [`init_logging`] first
//!   to see its logs);
//! - clients talk to the cluster with a [`Client`] (one request at a time, exactly-once writes:
//!   after [`ClientError::Unknown`], calling `write` again with the same command is a safe
//!   retry) or a [`PipelinedClient`] (many requests in flight), and read a node's
//!   [`NodeStatus`] with [`Client::status`];
//! - [`kv`] holds the built-in key-value machine and its typed client.
//!
//! The crates themselves are re-exported as [`consensus`], [`storage`] and [`ipc`] for tools that
//! need more; see ARCHITECTURE.md for the map.
#![forbid(unsafe_code)]

pub use shmraft_consensus as consensus;
pub use shmraft_ipc as ipc;
pub use shmraft_storage as storage;

pub use shmraft_consensus::node::client::{Client, ClientConfig, ClientError, UnknownWrite};
pub use shmraft_consensus::node::logging::init_logging;
pub use shmraft_consensus::node::pipeline::{Completion, PipelinedClient, SessionHandle};
pub use shmraft_consensus::node::status::NodeStatus;
pub use shmraft_consensus::node::{Node, NodeConfig, NodeError, PARENT_PID_ENV};
pub use shmraft_consensus::session::SessionConfig;
pub use shmraft_consensus::{Index, NodeId, SnapshotJob, StateMachine, Term};
pub use shmraft_storage::FsyncPolicy;

/// The built-in key-value state machine and its typed client.
pub mod kv {
    pub use shmraft_consensus::kv::client::KvClient;
    pub use shmraft_consensus::kv::{KvCommand, KvResult, KvStateMachine};
}
