//! The client API: propose writes and linearizable reads to a cluster of local node processes.
//!
//! A [`Client`] has one session (a random client id) and numbers its writes 1, 2, 3, ...
//! Retries of a write (after a timeout, a lost leader, a `Retry` answer) reuse the same sequence
//! number, so the session applies it exactly once (fault-matrix C6). When the overall timeout
//! passes without an answer, the outcome is unknown ([`ClientError::Unknown`]): the write may
//! have taken effect or not; the client moves on to the next sequence number. To settle an
//! unknown write, read the state it would have changed.
//!
//! The client finds the leader by asking any node and following `NotLeader` hints.

use crate::kv::{KvCommand, KvResult};
use crate::node::pipeline::{Completion, PipelinedClient, SessionHandle};
use crate::types::NodeId;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// How a client reaches a cluster.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The cluster's runtime directory (rings and FIFOs).
    pub runtime_dir: PathBuf,
    pub cluster_id: u64,
    /// The cluster's nodes.
    pub nodes: Vec<NodeId>,
    /// How long one attempt at one node waits before trying another.
    pub attempt_timeout: Duration,
    /// Ring size of the client's rings.
    pub ring_bytes: usize,
}

impl ClientConfig {
    pub fn new(runtime_dir: impl Into<PathBuf>, cluster_id: u64, nodes: Vec<NodeId>) -> Self {
        ClientConfig {
            runtime_dir: runtime_dir.into(),
            cluster_id,
            nodes,
            attempt_timeout: Duration::from_millis(500),
            ring_bytes: 1 << 18,
        }
    }
}

/// Why a request did not succeed.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot set up the client transport: {0}")]
    Setup(#[from] shmraft_ipc::SetupError),
    /// A write got no answer in time: it may or may not have taken effect.
    #[error(
        "no answer within {0:?}: the outcome is unknown (retrying with the same client settles it)"
    )]
    Unknown(Duration),
    /// A read got no answer in time; reads change nothing, so nothing happened.
    #[error("no answer within {0:?}; nothing was changed")]
    Timeout(Duration),
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
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id())
            .field("next_seq", &self.next_seq())
            .finish()
    }
}

impl Client {
    /// Sets up the client's transport; nodes are connected on first use.
    pub fn new(cfg: ClientConfig) -> Result<Client, ClientError> {
        let mut p = PipelinedClient::new(cfg)?;
        let session = p.open_session();
        Ok(Client {
            p,
            session,
            done: Vec::new(),
        })
    }

    /// Continues an existing session: `client_id` and the next sequence number to use, as a
    /// client that saved them (or a retry of a write whose answer was lost) would. A write with a
    /// sequence number the session already applied returns the original result without being
    /// applied again (Raft thesis §6.3).
    pub fn resume(cfg: ClientConfig, client_id: u64, next_seq: u64) -> Result<Client, ClientError> {
        let mut p = PipelinedClient::new(cfg)?;
        let session = p.resume_session(client_id, next_seq);
        Ok(Client {
            p,
            session,
            done: Vec::new(),
        })
    }

    /// The sequence number the next write will use.
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

    /// Proposes `command` to the state machine through the log and returns its result. Retries
    /// reuse the sequence number: the command is applied at most once. The sequence number is
    /// used up whatever happens (see [`PipelinedClient::submit_write`]).
    pub fn write(&mut self, command: &[u8], timeout: Duration) -> Result<Vec<u8>, ClientError> {
        self.p.submit_write(self.session, command, 0, timeout)?;
        self.finish()
    }

    /// A linearizable read (ReadIndex on the leader, Raft thesis §6.4).
    pub fn read(&mut self, query: &[u8], timeout: Duration) -> Result<Vec<u8>, ClientError> {
        self.p.submit_read(query, 0, timeout);
        self.finish()
    }

    /// A node's status as JSON (asked of that node, leader or not).
    pub fn status_of(&mut self, node: NodeId, timeout: Duration) -> Result<Vec<u8>, ClientError> {
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

    pub fn put(&mut self, key: &[u8], value: &[u8], timeout: Duration) -> Result<(), ClientError> {
        let cmd = KvCommand::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        self.kv_write(cmd, timeout).map(|_| ())
    }

    pub fn append(
        &mut self,
        key: &[u8],
        value: &[u8],
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let cmd = KvCommand::Append {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        self.kv_write(cmd, timeout).map(|_| ())
    }

    pub fn delete(&mut self, key: &[u8], timeout: Duration) -> Result<(), ClientError> {
        self.kv_write(KvCommand::Delete { key: key.to_vec() }, timeout)
            .map(|_| ())
    }

    /// A linearizable get; a key never written reads as empty.
    pub fn get(&mut self, key: &[u8], timeout: Duration) -> Result<Vec<u8>, ClientError> {
        let q = KvCommand::Get { key: key.to_vec() }
            .encode()
            .map_err(|e| ClientError::Refused(e.to_string()))?;
        let r = self.read(&q, timeout)?;
        match KvResult::decode(&r) {
            Ok(KvResult::Value(v)) => Ok(v),
            Ok(other) => Err(ClientError::Refused(format!("{other:?}"))),
            Err(e) => Err(ClientError::Refused(format!("undecodable result: {e}"))),
        }
    }

    fn kv_write(&mut self, cmd: KvCommand, timeout: Duration) -> Result<KvResult, ClientError> {
        let b = cmd
            .encode()
            .map_err(|e| ClientError::Refused(e.to_string()))?;
        let r = self.write(&b, timeout)?;
        match KvResult::decode(&r) {
            Ok(KvResult::Error(e)) => Err(ClientError::Refused(e.to_string())),
            Ok(ok) => Ok(ok),
            Err(e) => Err(ClientError::Refused(format!("undecodable result: {e}"))),
        }
    }
}
