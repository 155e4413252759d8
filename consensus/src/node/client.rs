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
use crate::node::wire::{ClientFrame, KIND_CLIENT_REQUEST, KIND_CLIENT_RESPONSE, ServerFrame};
use crate::session::{ClientRequest, SessionResult};
use crate::types::NodeId;
use shmraft_ipc::{Endpoint, Incoming, LinkEvent, SendError, Transport, TransportConfig};
use std::path::PathBuf;
use std::time::{Duration, Instant};
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

/// A client session with a cluster. Not thread-safe: one request at a time.
pub struct Client {
    cfg: ClientConfig,
    t: Transport,
    client_id: u64,
    next_seq: u64,
    next_req_id: u64,
    /// Index into `cfg.nodes` of the node believed to lead.
    target: usize,
    connected: Vec<bool>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id)
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

enum Attempt {
    Answer(ServerFrame),
    NoAnswer,
}

impl Client {
    /// Sets up the client's transport; nodes are connected on first use.
    pub fn new(cfg: ClientConfig) -> Result<Client, ClientError> {
        let mut tcfg = TransportConfig::new(cfg.runtime_dir.clone(), cfg.cluster_id);
        tcfg.ring_bytes = cfg.ring_bytes;
        let t = Transport::client(tcfg)?;
        let mut client_id = 0;
        while client_id == 0 {
            client_id = rand::random::<u64>();
        }
        let n = cfg.nodes.len();
        Ok(Client {
            cfg,
            t,
            client_id,
            next_seq: 1,
            next_req_id: 1,
            target: 0,
            connected: vec![false; n],
        })
    }

    /// Continues an existing session: `client_id` and the next sequence number to use, as a
    /// client that saved them (or a retry of a write whose answer was lost) would. A write with a
    /// sequence number the session already applied returns the original result without being
    /// applied again (Raft thesis §6.3).
    pub fn resume(cfg: ClientConfig, client_id: u64, next_seq: u64) -> Result<Client, ClientError> {
        let mut c = Client::new(cfg)?;
        assert!(
            client_id != 0 && next_seq >= 1,
            "client id 0 and seq 0 are reserved"
        );
        c.client_id = client_id;
        c.next_seq = next_seq;
        Ok(c)
    }

    /// The sequence number the next write will use.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// This client's session id.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The node the client currently believes leads.
    pub fn leader_guess(&self) -> NodeId {
        self.cfg
            .nodes
            .get(self.target)
            .copied()
            .unwrap_or(NodeId::ZERO)
    }

    /// Proposes `command` to the state machine through the log and returns its result. Retries
    /// reuse the sequence number: the command is applied at most once.
    pub fn write(&mut self, command: &[u8], timeout: Duration) -> Result<Vec<u8>, ClientError> {
        let seq = self.next_seq;
        let req = ClientRequest {
            client_id: self.client_id,
            seq,
            // One outstanding write at a time: every earlier result was received.
            first_unacked_seq: seq,
            log_time_ms: 0,
            command: command.to_vec(),
        };
        let envelope = req
            .encode()
            .map_err(|e| ClientError::Refused(format!("command cannot be encoded: {e}")))?;
        let result = self.request(timeout, |req_id| ClientFrame::Write {
            req_id,
            envelope: envelope.clone(),
        });
        // The sequence number is used up whatever happened: reusing it for a different command
        // after an unknown outcome would let the session answer the new command with the old
        // one's cached result. A late copy of this request is then either applied before the
        // next one (consistent with "unknown") or refused as discarded (thesis §6.3).
        self.next_seq += 1;
        let bytes = match result {
            Ok(b) => b,
            Err(ClientError::Timeout(d)) => return Err(ClientError::Unknown(d)),
            Err(e) => return Err(e),
        };
        match SessionResult::decode(&bytes) {
            Ok(SessionResult::Applied(r) | SessionResult::Duplicate(r)) => Ok(r),
            Ok(SessionResult::SessionExpired) => Err(ClientError::SessionExpired),
            Ok(other) => Err(ClientError::Refused(format!("{other:?}"))),
            Err(e) => Err(ClientError::Refused(format!(
                "undecodable session result: {e}"
            ))),
        }
    }

    /// A linearizable read (ReadIndex on the leader, Raft thesis §6.4).
    pub fn read(&mut self, query: &[u8], timeout: Duration) -> Result<Vec<u8>, ClientError> {
        let query = query.to_vec();
        self.request(timeout, |req_id| ClientFrame::Read {
            req_id,
            query: query.clone(),
        })
    }

    /// A node's status as JSON (asked of that node, leader or not).
    pub fn status_of(&mut self, node: NodeId, timeout: Duration) -> Result<Vec<u8>, ClientError> {
        let Some(i) = self.cfg.nodes.iter().position(|&n| n == node) else {
            return Err(ClientError::Refused(format!(
                "node {node} is not in the cluster"
            )));
        };
        let deadline = Instant::now() + timeout;
        let req_id = self.take_req_id();
        match self.attempt(i, ClientFrame::Status { req_id }, deadline) {
            Attempt::Answer(ServerFrame::Ok { result, .. }) => Ok(result),
            Attempt::Answer(other) => Err(ClientError::Refused(format!("{other:?}"))),
            Attempt::NoAnswer => Err(ClientError::Timeout(timeout)),
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

    fn take_req_id(&mut self) -> u64 {
        let r = self.next_req_id;
        self.next_req_id += 1;
        r
    }

    /// Sends a request to the believed leader until it is answered or `timeout` passes,
    /// following leader hints and moving on from nodes that do not answer. `Timeout` means no
    /// node answered in time.
    fn request(
        &mut self,
        timeout: Duration,
        frame: impl Fn(u64) -> ClientFrame,
    ) -> Result<Vec<u8>, ClientError> {
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(1);
        while Instant::now() < deadline {
            let req_id = self.take_req_id();
            let attempt_deadline = (Instant::now() + self.cfg.attempt_timeout).min(deadline);
            match self.attempt(self.target, frame(req_id), attempt_deadline) {
                Attempt::Answer(ServerFrame::Ok { result, .. }) => return Ok(result),
                Attempt::Answer(ServerFrame::NotLeader { leader_hint, .. }) => {
                    match self.cfg.nodes.iter().position(|&n| n == leader_hint) {
                        Some(i) if i != self.target => self.target = i,
                        _ => {
                            self.rotate();
                            self.pause(&mut backoff, deadline);
                        }
                    }
                }
                Attempt::Answer(ServerFrame::Retry { .. }) => self.pause(&mut backoff, deadline),
                Attempt::Answer(ServerFrame::Error { message, .. }) => {
                    return Err(ClientError::Refused(message));
                }
                Attempt::NoAnswer => self.rotate(),
            }
        }
        Err(ClientError::Timeout(timeout))
    }

    fn rotate(&mut self) {
        if !self.cfg.nodes.is_empty() {
            self.target = (self.target + 1) % self.cfg.nodes.len();
        }
    }

    /// Waits a little before the next attempt (an election is likely under way), doubling up to
    /// 20 ms; keeps the transport serviced meanwhile.
    fn pause(&mut self, backoff: &mut Duration, deadline: Instant) {
        let until = (Instant::now() + *backoff).min(deadline);
        while Instant::now() < until {
            let _ = self.t.wait(Some(until - Instant::now()));
            self.t.recv(|_| {});
        }
        *backoff = (*backoff * 2).min(Duration::from_millis(20));
    }

    /// One attempt at node `i`: connect if needed, send, wait for the answer with this req_id.
    fn attempt(&mut self, i: usize, frame: ClientFrame, deadline: Instant) -> Attempt {
        let Some(&node) = self.cfg.nodes.get(i) else {
            return Attempt::NoAnswer;
        };
        let peer = Endpoint::Node(node.get() as u32);
        if !self.connected[i] {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .t
                .connect(node.get() as u32, left.min(Duration::from_millis(200)))
            {
                Ok(()) => self.connected[i] = true,
                Err(e) => {
                    tracing::debug!(%node, error = %e, "cannot connect");
                    // Do not spin on a dead node: let a little time pass.
                    let _ = self.t.wait(Some(Duration::from_millis(2).min(left)));
                    return Attempt::NoAnswer;
                }
            }
        }
        let req_id = frame.req_id();
        let bytes = frame.encode();
        loop {
            match self.t.send(peer, KIND_CLIENT_REQUEST, &bytes) {
                Ok(()) => break,
                Err(SendError::Full { .. }) if Instant::now() < deadline => {
                    let _ = self.t.wait(Some(Duration::from_millis(1)));
                    self.t.recv(|_| {});
                }
                Err(e) => {
                    tracing::debug!(%node, error = %e, "send failed");
                    self.connected[i] = false;
                    return Attempt::NoAnswer;
                }
            }
        }
        let mut answer = None;
        let mut down = false;
        while answer.is_none() && !down {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let _ = self.t.wait(Some(deadline - now));
            self.t.recv(|inc| match inc {
                Incoming::Frame(f) if f.from == peer && f.kind == KIND_CLIENT_RESPONSE => {
                    match ServerFrame::decode(f.payload) {
                        Ok(sf) if sf.req_id() == req_id => answer = Some(sf),
                        Ok(_) => {} // an answer to an earlier, abandoned attempt
                        Err(e) => tracing::warn!(from = %f.from, error = %e, "malformed response"),
                    }
                }
                Incoming::Event(LinkEvent::Down { peer: p }) if p == peer => down = true,
                _ => {}
            });
        }
        if down {
            self.connected[i] = false;
        }
        match answer {
            Some(a) => Attempt::Answer(a),
            None => Attempt::NoAnswer,
        }
    }
}
