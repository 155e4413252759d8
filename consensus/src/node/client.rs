//! The client API: propose writes and linearizable reads to a cluster of local node processes.
//!
//! A [`Client`] has one session (a random client id) and numbers its writes 1, 2, 3, ...
//! Retries of a write inside one call (after a timeout of one attempt, a lost leader, a `Retry`
//! answer) reuse the same sequence number, so the session applies it exactly once (docs/FAULTS.md,
//! C6). When the call's whole timeout passes without an answer after the write reached a node,
//! the outcome is unknown ([`ClientError::Unknown`]): the write may have taken effect or not.
//! **Retrying is safe:** calling [`Client::write`] again with the same command on the same client
//! sends it again with the same sequence number (as does [`Client::retry`] with the error's
//! [`UnknownWrite`]), so it is applied at most once and answered with the first application's
//! result. A write with a different command gives up on the unknown one: its outcome then stays
//! unknown (read the state it would have changed).
//!
//! A request that reached no node fails with [`ClientError::NoNode`] or [`ClientError::Connect`]
//! and changed nothing.
//!
//! The client finds the leader by asking any node and following `NotLeader` hints.

use crate::node::pipeline::{Completion, PipelinedClient, SessionHandle};
use crate::node::status::NodeStatus;
use crate::types::NodeId;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// How a client reaches a cluster.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The cluster's runtime directory (rings and FIFOs): `NodeConfig::runtime_dir` of its nodes.
    pub runtime_dir: PathBuf,
    /// The cluster id the nodes were started with (`NodeConfig::cluster_id`, 1 unless set). Every
    /// ring header carries it, and a node refuses a client of another cluster
    /// ([`ClientError::Connect`] says so).
    pub cluster_id: u64,
    /// The cluster's nodes.
    pub nodes: Vec<NodeId>,
    /// How long one attempt at one node waits before trying another.
    pub attempt_timeout: Duration,
    /// Ring size of the client's rings.
    pub ring_bytes: usize,
}

impl ClientConfig {
    /// A client of the nodes `nodes` whose runtime directory is `runtime_dir`, in cluster 1 (the
    /// default of `NodeConfig`); see [`ClientConfig::with_cluster_id`].
    pub fn new(runtime_dir: impl Into<PathBuf>, nodes: Vec<NodeId>) -> Self {
        ClientConfig {
            runtime_dir: runtime_dir.into(),
            cluster_id: 1,
            nodes,
            attempt_timeout: Duration::from_millis(500),
            ring_bytes: 1 << 18,
        }
    }

    /// Sets the cluster id (it must equal the nodes' `NodeConfig::cluster_id`).
    pub fn with_cluster_id(mut self, cluster_id: u64) -> Self {
        self.cluster_id = cluster_id;
        self
    }
}

/// A write whose outcome is unknown: everything needed to send it again safely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownWrite {
    /// The session (client id) that sent it.
    pub client_id: u64,
    /// Its sequence number in that session; a retry reuses it.
    pub seq: u64,
    /// The command, as given to `write`.
    pub command: Vec<u8>,
    /// How long the call waited.
    pub waited: Duration,
    /// The node the last attempt went to.
    pub last_node: NodeId,
}

/// Why a request did not succeed.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot set up the client transport: {0}")]
    Setup(#[from] shmraft_ipc::SetupError),
    /// A write reached a node but got no answer in time: it may or may not have taken effect.
    #[error(
        "write {} got no answer within {:?} (last tried node {}): it may or may not have been \
         applied. Retrying is safe: call `write` again with the same command on this client, or \
         `Client::retry` with this error's `UnknownWrite` (both reuse sequence number {}, so it is \
         applied at most once); a different command gives up on it",
        .0.seq, .0.waited, .0.last_node, .0.seq
    )]
    Unknown(Box<UnknownWrite>),
    /// A read reached a node but got no answer in time; reads change nothing.
    #[error("no answer within {0:?}; nothing was changed")]
    Timeout(Duration),
    /// No node took the request within its timeout, so nothing happened.
    #[error(
        "no node answered at {} within {waited:?} (last error: {last_error}): is the cluster \
         running with this runtime directory? Nothing was applied",
        runtime_dir.display()
    )]
    NoNode {
        /// The runtime directory the client looked in.
        runtime_dir: PathBuf,
        /// How long the call waited.
        waited: Duration,
        /// Why the last connection attempt failed.
        last_error: String,
    },
    /// A node refused the connection for a reason no retry fixes (another cluster id).
    #[error("cannot connect at {}: {reason}; nothing was applied", runtime_dir.display())]
    Connect {
        /// The runtime directory the client looked in.
        runtime_dir: PathBuf,
        /// The refusal.
        reason: String,
    },
    /// The cluster refused the request and retrying will not help.
    #[error("request refused: {0}")]
    Refused(String),
    /// The session expired: earlier writes of this client may or may not have been applied.
    #[error("the client session expired on the cluster; start a new client")]
    SessionExpired,
}

/// A client session with a cluster: one request at a time, each call blocking until it is
/// answered or its timeout passes. Built on a [`PipelinedClient`] with one session.
pub struct Client {
    p: PipelinedClient,
    session: SessionHandle,
    done: Vec<Completion>,
    /// The last write whose outcome was unknown, until it is settled or given up.
    unknown: Option<UnknownWrite>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id())
            .field("next_seq", &self.next_seq())
            .field("unknown", &self.unknown.as_ref().map(|u| u.seq))
            .finish()
    }
}

impl Client {
    /// Sets up the client's transport; nodes are connected on first use.
    pub fn new(cfg: ClientConfig) -> Result<Client, ClientError> {
        let mut p = PipelinedClient::new(cfg)?;
        let session = p.open_session();
        Ok(Client::with_session(p, session))
    }

    /// Continues an existing session: `client_id` and the next sequence number to use, as a
    /// client that saved them would (across a restart of the client process, say). A write with
    /// a sequence number the session already applied returns the original result without being
    /// applied again (Raft thesis §6.3). Within one process, retry with [`Client::write`] or
    /// [`Client::retry`] instead.
    pub fn resume(cfg: ClientConfig, client_id: u64, next_seq: u64) -> Result<Client, ClientError> {
        let mut p = PipelinedClient::new(cfg)?;
        let session = p.resume_session(client_id, next_seq);
        Ok(Client::with_session(p, session))
    }

    fn with_session(p: PipelinedClient, session: SessionHandle) -> Client {
        Client {
            p,
            session,
            done: Vec::new(),
            unknown: None,
        }
    }

    /// The sequence number the next new write will use.
    pub fn next_seq(&self) -> u64 {
        self.p.session_state(self.session).1
    }

    /// This client's session id.
    pub fn client_id(&self) -> u64 {
        self.p.session_state(self.session).0
    }

    /// The node the client currently believes leads.
    pub fn leader_guess(&self) -> NodeId {
        self.p.leader_guess()
    }

    /// Proposes `command` to the state machine through the log and returns its result.
    ///
    /// Exactly once: retries inside the call reuse the sequence number. If the previous write
    /// of this client ended in [`ClientError::Unknown`] and `command` is the same command, this
    /// call is its retry (same sequence number): it is applied at most once in all, and answered
    /// with the first application's result. Any other command is a new write, and the earlier
    /// unknown one is given up.
    pub fn write(&mut self, command: &[u8], timeout: Duration) -> Result<Vec<u8>, ClientError> {
        match self.unknown.take() {
            Some(u) if u.command == command => self.retry(&u, timeout),
            _ => {
                self.p.submit_write(self.session, command, 0, timeout)?;
                self.finish_write()
            }
        }
    }

    /// Sends again a write that ended in [`ClientError::Unknown`], with its original sequence
    /// number: it is applied at most once in all (see [`PipelinedClient::retry_write`]).
    pub fn retry(
        &mut self,
        unknown: &UnknownWrite,
        timeout: Duration,
    ) -> Result<Vec<u8>, ClientError> {
        self.unknown = None;
        self.p.retry_write(self.session, unknown, 0, timeout)?;
        self.finish_write()
    }

    /// The write still unknown from this client's last write, if any.
    pub fn unknown_write(&self) -> Option<&UnknownWrite> {
        self.unknown.as_ref()
    }

    fn finish_write(&mut self) -> Result<Vec<u8>, ClientError> {
        let r = self.finish();
        if let Err(ClientError::Unknown(u)) = &r {
            self.unknown = Some((**u).clone());
        }
        r
    }

    /// A linearizable read (ReadIndex on the leader, Raft thesis §6.4).
    pub fn read(&mut self, query: &[u8], timeout: Duration) -> Result<Vec<u8>, ClientError> {
        self.p.submit_read(query, 0, timeout);
        self.finish()
    }

    /// Node `node`'s status (asked of that node, leader or not).
    pub fn status(&mut self, node: NodeId, timeout: Duration) -> Result<NodeStatus, ClientError> {
        let json = self.status_json(node, timeout)?;
        serde_json::from_slice(&json).map_err(|e| {
            ClientError::Refused(format!(
                "node {node} answered a status this client cannot read ({e}): are the node and \
                 the client built from the same version?"
            ))
        })
    }

    /// Node `node`'s status as the JSON it sends (the fields of [`NodeStatus`]).
    pub fn status_json(&mut self, node: NodeId, timeout: Duration) -> Result<Vec<u8>, ClientError> {
        self.p.submit_status(node, 0, timeout)?;
        self.finish()
    }

    /// Polls until the one outstanding request completes (its own deadline bounds the wait).
    fn finish(&mut self) -> Result<Vec<u8>, ClientError> {
        debug_assert_eq!(self.p.outstanding(), 1, "one request at a time");
        loop {
            self.p.poll(Duration::from_millis(50), &mut self.done);
            if let Some(c) = self.done.pop() {
                return c.outcome;
            }
        }
    }
}
