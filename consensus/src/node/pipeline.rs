//! A pipelined client connection: many requests in flight on one connection, from one or many
//! exactly-once sessions.
//!
//! [`PipelinedClient`] is the high-throughput client (the benchmark's load generator uses it,
//! and so can an embedding application); [`super::client::Client`] is the blocking one-request-
//! at-a-time API on top of it. Requests are queued by `submit_*`, sent to the believed leader as
//! one batch per [`PipelinedClient::poll`] (one ring publication, at most one wake-up: ipc rule
//! 6 of docs/RULES.md), and completed, in any order, by `poll`.
//!
//! Retries follow the same rules as the blocking client (Raft thesis §6.3): a write keeps its
//! session sequence number across retries (after `NotLeader`, `Retry`, a dead or silent node),
//! so it is applied at most once; when its overall timeout passes unanswered the outcome is
//! [`ClientError::Unknown`], and the sequence number stays used up. Each session's
//! `first_unacked_seq` is the lowest sequence number it has not yet seen answered, so a session
//! can have many writes in flight and the cluster keeps exactly their results cached.

use crate::node::client::{ClientConfig, ClientError, UnknownWrite};
use crate::node::wire::{ClientFrame, KIND_CLIENT_REQUEST, KIND_CLIENT_RESPONSE, ServerFrame};
use crate::session::{ClientRequest, SessionResult};
use crate::types::NodeId;
use shmraft_ipc::{
    ConnectError, Endpoint, Incoming, LinkEvent, OutFrame, SendError, Transport, TransportConfig,
};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// A session opened with [`PipelinedClient::open_session`] (an index, local to the client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionHandle(usize);

/// A finished request.
#[derive(Debug)]
pub struct Completion {
    /// The caller's tag given at submission.
    pub tag: u64,
    /// For a write: the state machine's result; for a read: the query's result; for a status
    /// request: JSON.
    pub outcome: Result<Vec<u8>, ClientError>,
    /// From submission to completion.
    pub latency: Duration,
}

#[derive(Debug)]
struct SessionState {
    client_id: u64,
    next_seq: u64,
    /// Sequence numbers submitted and not yet answered (or given up on).
    unanswered: BTreeSet<u64>,
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        session: usize,
        seq: u64,
        envelope: Vec<u8>,
    },
    Read {
        query: Vec<u8>,
    },
    /// Asked of one node, leader or not; never redirected.
    Status,
}

#[derive(Debug)]
struct Request {
    tag: u64,
    op: Op,
    submitted: Instant,
    deadline: Instant,
    /// Node index this attempt went to and when it gives up on it.
    node: usize,
    attempt_deadline: Instant,
    backoff: Duration,
    /// Whether some attempt was handed to a node's ring. A write that never was cannot have
    /// been applied, so its timeout is [`ClientError::NoNode`], not [`ClientError::Unknown`].
    delivered: bool,
}

/// One client connection to a cluster with any number of requests in flight. Not thread-safe:
/// one per thread.
pub struct PipelinedClient {
    cfg: ClientConfig,
    t: Transport,
    sessions: Vec<SessionState>,
    next_req_id: u64,
    /// Index into `cfg.nodes` of the node believed to lead.
    target: usize,
    connected: Vec<bool>,
    /// Sent requests by the req_id of their current attempt.
    in_flight: HashMap<u64, Request>,
    /// Requests to send at the next flush: (not before, request).
    queued: Vec<(Instant, Request)>,
    completions: Vec<Completion>,
    next_timeout_scan: Instant,
    /// The last reason a node could not be reached, for the error of a request that reached none.
    last_connect_error: Option<String>,
}

impl std::fmt::Debug for PipelinedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelinedClient")
            .field("sessions", &self.sessions.len())
            .field("in_flight", &self.in_flight.len())
            .field("queued", &self.queued.len())
            .finish()
    }
}

fn random_client_id() -> u64 {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return id;
        }
    }
}

impl PipelinedClient {
    /// Sets up the client's transport; nodes are connected on first use.
    pub fn new(cfg: ClientConfig) -> Result<PipelinedClient, ClientError> {
        let mut tcfg = TransportConfig::new(cfg.runtime_dir.clone(), cfg.cluster_id);
        tcfg.ring_bytes = cfg.ring_bytes;
        let t = Transport::client(tcfg)?;
        let n = cfg.nodes.len();
        Ok(PipelinedClient {
            cfg,
            t,
            sessions: Vec::new(),
            next_req_id: 1,
            target: 0,
            connected: vec![false; n],
            in_flight: HashMap::new(),
            queued: Vec::new(),
            completions: Vec::new(),
            next_timeout_scan: Instant::now(),
            last_connect_error: None,
        })
    }

    /// Opens a new exactly-once session with a random client id.
    pub fn open_session(&mut self) -> SessionHandle {
        self.resume_session(random_client_id(), 1)
    }

    /// Continues an existing session at `next_seq` (see [`super::client::Client::resume`]).
    pub fn resume_session(&mut self, client_id: u64, next_seq: u64) -> SessionHandle {
        assert!(
            client_id != 0 && next_seq >= 1,
            "client id 0 and seq 0 are reserved"
        );
        self.sessions.push(SessionState {
            client_id,
            next_seq,
            unanswered: BTreeSet::new(),
        });
        SessionHandle(self.sessions.len() - 1)
    }

    /// The session's client id and the sequence number its next write will use.
    pub fn session_state(&self, s: SessionHandle) -> (u64, u64) {
        let st = &self.sessions[s.0];
        (st.client_id, st.next_seq)
    }

    /// The node the client currently believes leads.
    pub fn leader_guess(&self) -> NodeId {
        self.cfg
            .nodes
            .get(self.target)
            .copied()
            .unwrap_or(NodeId::ZERO)
    }

    /// Requests submitted and not yet completed.
    pub fn outstanding(&self) -> usize {
        self.in_flight.len() + self.queued.len()
    }

    /// Queues a write of `command` in session `s`; it is sent at the next [`Self::poll`] and
    /// completed (with `tag`) within `timeout` at the latest. It takes the session's next
    /// sequence number, which stays used up whatever happens: reusing it for another command
    /// after an unknown outcome would let the session answer that command with the old one's
    /// result.
    pub fn submit_write(
        &mut self,
        s: SessionHandle,
        command: &[u8],
        tag: u64,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let seq = self.sessions[s.0].next_seq;
        self.queue_write(s, seq, command, tag, timeout)?;
        self.sessions[s.0].next_seq += 1;
        Ok(())
    }

    /// Sends again a write whose outcome was unknown ([`ClientError::Unknown`]), with its
    /// original sequence number: the session applies it at most once, and answers with the
    /// first application's result if there was one (Raft thesis §6.3). Settle an unknown write
    /// before the session's later writes are answered: once they are, the cluster may have
    /// dropped the cached result, and the retry ends in an error that says so (applied no
    /// second time either way).
    pub fn retry_write(
        &mut self,
        s: SessionHandle,
        unknown: &UnknownWrite,
        tag: u64,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let st = &self.sessions[s.0];
        if unknown.client_id != st.client_id || unknown.seq >= st.next_seq {
            return Err(ClientError::Refused(format!(
                "write {} of client {:#x} was not sent by this session (client {:#x}): retry it \
                 on the client that got the unknown outcome",
                unknown.seq, unknown.client_id, st.client_id
            )));
        }
        self.queue_write(s, unknown.seq, &unknown.command, tag, timeout)
    }

    fn queue_write(
        &mut self,
        s: SessionHandle,
        seq: u64,
        command: &[u8],
        tag: u64,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let st = &mut self.sessions[s.0];
        let first_unacked_seq = st.unanswered.first().copied().unwrap_or(seq).min(seq);
        let req = ClientRequest {
            client_id: st.client_id,
            seq,
            first_unacked_seq,
            log_time_ms: 0,
            command: command.to_vec(),
        };
        let envelope = req
            .encode()
            .map_err(|e| ClientError::Refused(format!("command cannot be encoded: {e}")))?;
        st.unanswered.insert(seq);
        self.enqueue(
            tag,
            Op::Write {
                session: s.0,
                seq,
                envelope,
            },
            self.target,
            timeout,
        );
        Ok(())
    }

    /// Queues a linearizable read (ReadIndex on the leader, Raft thesis §6.4).
    pub fn submit_read(&mut self, query: &[u8], tag: u64, timeout: Duration) {
        self.enqueue(
            tag,
            Op::Read {
                query: query.to_vec(),
            },
            self.target,
            timeout,
        );
    }

    /// Queues a status request to `node` (answered by that node, leader or not).
    pub fn submit_status(
        &mut self,
        node: NodeId,
        tag: u64,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let Some(i) = self.cfg.nodes.iter().position(|&n| n == node) else {
            return Err(ClientError::Refused(format!(
                "node {node} is not in the cluster"
            )));
        };
        self.enqueue(tag, Op::Status, i, timeout);
        Ok(())
    }

    fn enqueue(&mut self, tag: u64, op: Op, node: usize, timeout: Duration) {
        let now = Instant::now();
        self.queued.push((
            now,
            Request {
                tag,
                op,
                submitted: now,
                deadline: now + timeout,
                node,
                attempt_deadline: now,
                backoff: Duration::from_millis(1),
                delivered: false,
            },
        ));
    }

    /// Sends what is queued, waits up to `timeout` for answers (not at all if some are already
    /// complete), handles them and appends finished requests to `out`. Returns how many were
    /// appended.
    pub fn poll(&mut self, timeout: Duration, out: &mut Vec<Completion>) -> usize {
        let before = out.len();
        self.flush();
        if self.completions.is_empty() {
            let mut wait = timeout;
            if let Some(next) = self.next_event() {
                wait = wait.min(next.saturating_duration_since(Instant::now()));
            }
            let _ = self.t.wait(Some(wait));
        }
        self.receive();
        self.expire();
        self.flush();
        out.append(&mut self.completions);
        out.len() - before
    }

    /// The earliest time something needs doing without input: a delayed resend or a deadline.
    fn next_event(&self) -> Option<Instant> {
        let q = self.queued.iter().map(|(at, _)| *at).min();
        let f = self
            .in_flight
            .values()
            .map(|r| r.attempt_deadline.min(r.deadline))
            .min();
        match (q, f) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn take_req_id(&mut self) -> u64 {
        let r = self.next_req_id;
        self.next_req_id += 1;
        r
    }

    fn complete(&mut self, r: Request, outcome: Result<Vec<u8>, ClientError>) {
        let outcome = match (&r.op, outcome) {
            (Op::Write { session, seq, .. }, outcome) => {
                self.sessions[*session].unanswered.remove(seq);
                outcome.and_then(|bytes| session_outcome(&bytes))
            }
            (_, outcome) => outcome,
        };
        self.completions.push(Completion {
            tag: r.tag,
            outcome,
            latency: r.submitted.elapsed(),
        });
    }

    /// Completes a request whose overall deadline passed. A write that reached a node may have
    /// been applied: its outcome is unknown, and the error carries what a retry needs. A request
    /// that reached no node did nothing, and the error says why no node took it.
    fn time_out(&mut self, r: Request) {
        let waited = r.deadline - r.submitted;
        let err = if !r.delivered {
            ClientError::NoNode {
                runtime_dir: self.cfg.runtime_dir.clone(),
                waited,
                last_error: self
                    .last_connect_error
                    .clone()
                    .unwrap_or_else(|| "every node's ring stayed full".into()),
            }
        } else if let Op::Write {
            session,
            seq,
            envelope,
        } = &r.op
        {
            let command = ClientRequest::decode(envelope)
                .map(|req| req.command)
                .unwrap_or_default();
            ClientError::Unknown(Box::new(UnknownWrite {
                client_id: self.sessions[*session].client_id,
                seq: *seq,
                command,
                waited,
                last_node: self.cfg.nodes.get(r.node).copied().unwrap_or(NodeId::ZERO),
            }))
        } else {
            ClientError::Timeout(waited)
        };
        self.complete(r, Err(err));
    }

    /// Connects to node `i` if needed. A failed connection lets a little time pass so a dead
    /// node is not retried in a tight loop. `Err` carries a refusal that no retry can fix (a
    /// node of another cluster).
    fn ensure_connected(&mut self, i: usize) -> Result<bool, ConnectError> {
        if self.connected[i] {
            return Ok(true);
        }
        let node = self.cfg.nodes[i];
        match self
            .t
            .connect(node.get() as u32, Duration::from_millis(200))
        {
            Ok(()) => {
                self.connected[i] = true;
                Ok(true)
            }
            Err(e @ ConnectError::ClusterMismatch { .. }) => Err(e),
            Err(e) => {
                tracing::debug!(%node, error = %e, "cannot connect");
                self.last_connect_error = Some(e.to_string());
                let _ = self.t.wait(Some(Duration::from_millis(2)));
                Ok(false)
            }
        }
    }

    /// Sends every queued request that is due, one batch per node.
    fn flush(&mut self) {
        if self.queued.is_empty() {
            return;
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queued)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.queued = later;
        let mut by_node: HashMap<usize, Vec<Request>> = HashMap::new();
        for (_, mut r) in due {
            if now >= r.deadline {
                self.time_out(r);
                continue;
            }
            if !matches!(r.op, Op::Status) {
                r.node = self.target;
            }
            by_node.entry(r.node).or_default().push(r);
        }
        for (i, reqs) in by_node {
            self.send_to(i, reqs);
        }
    }

    fn send_to(&mut self, i: usize, reqs: Vec<Request>) {
        let now = Instant::now();
        let connected = match (i < self.cfg.nodes.len()).then(|| self.ensure_connected(i)) {
            Some(Ok(up)) => up,
            None => false,
            Some(Err(refusal)) => {
                // A configuration error: the requests reached no node, nothing was applied.
                for r in reqs {
                    let err = ClientError::Connect {
                        runtime_dir: self.cfg.runtime_dir.clone(),
                        reason: refusal.to_string(),
                    };
                    self.complete(r, Err(err));
                }
                return;
            }
        };
        if !connected {
            self.rotate_from(i);
            for r in reqs {
                self.queued.push((now + Duration::from_millis(1), r));
            }
            return;
        }
        let peer = Endpoint::Node(self.cfg.nodes[i].get() as u32);
        let mut ids = Vec::with_capacity(reqs.len());
        let mut bytes = Vec::with_capacity(reqs.len());
        for r in &reqs {
            let req_id = self.take_req_id();
            let f = match &r.op {
                Op::Write { envelope, .. } => ClientFrame::Write {
                    req_id,
                    envelope: envelope.clone(),
                },
                Op::Read { query } => ClientFrame::Read {
                    req_id,
                    query: query.clone(),
                },
                Op::Status => ClientFrame::Status { req_id },
            };
            ids.push(req_id);
            bytes.push(f.encode());
        }
        let frames: Vec<OutFrame<'_>> = bytes
            .iter()
            .map(|b| OutFrame {
                kind: KIND_CLIENT_REQUEST,
                payload: b,
            })
            .collect();
        match self.t.send_batch(peer, &frames) {
            Ok(()) => {
                let attempt_deadline = now + self.cfg.attempt_timeout;
                for (req_id, mut r) in ids.into_iter().zip(reqs) {
                    r.node = i;
                    r.attempt_deadline = attempt_deadline;
                    r.delivered = true;
                    self.in_flight.insert(req_id, r);
                }
            }
            Err(SendError::Full { .. }) => {
                // Backpressure: try again after the node has drained some (ipc rule 7
                // of docs/RULES.md).
                for r in reqs {
                    self.queued.push((now + Duration::from_micros(50), r));
                }
            }
            Err(e) => {
                tracing::debug!(node = %self.cfg.nodes[i], error = %e, "send failed");
                self.connected[i] = false;
                self.rotate_from(i);
                for r in reqs {
                    self.queued.push((now, r));
                }
            }
        }
    }

    /// Moves the leader guess off node `i` (if it was the guess).
    fn rotate_from(&mut self, i: usize) {
        if self.target == i && !self.cfg.nodes.is_empty() {
            self.target = (self.target + 1) % self.cfg.nodes.len();
        }
    }

    fn receive(&mut self) {
        let mut answers = Vec::new();
        let mut down = Vec::new();
        self.t.recv(|inc| match inc {
            Incoming::Frame(f) if f.kind == KIND_CLIENT_RESPONSE => {
                match ServerFrame::decode(f.payload) {
                    Ok(sf) => answers.push((f.from, sf)),
                    Err(e) => tracing::warn!(from = %f.from, error = %e, "malformed response"),
                }
            }
            Incoming::Event(LinkEvent::Down { peer }) => down.push(peer),
            _ => {}
        });
        for (from, sf) in answers {
            self.handle_answer(from, sf);
        }
        for peer in down {
            if let Some(i) = self.node_index(peer) {
                self.connected[i] = false;
                self.rotate_from(i);
                // Whatever went to the dead node is retried elsewhere (same sequence numbers).
                let lost: Vec<u64> = self
                    .in_flight
                    .iter()
                    .filter(|(_, r)| r.node == i)
                    .map(|(&id, _)| id)
                    .collect();
                let now = Instant::now();
                for id in lost {
                    let r = self.in_flight.remove(&id).expect("listed");
                    self.queued.push((now, r));
                }
            }
        }
    }

    fn node_index(&self, peer: Endpoint) -> Option<usize> {
        match peer {
            Endpoint::Node(n) => self.cfg.nodes.iter().position(|x| x.get() == u64::from(n)),
            Endpoint::Client(_) => None,
        }
    }

    fn handle_answer(&mut self, from: Endpoint, sf: ServerFrame) {
        // Answers to abandoned attempts (their req_id was replaced) are ignored.
        let Some(mut r) = self.in_flight.remove(&sf.req_id()) else {
            return;
        };
        let now = Instant::now();
        match sf {
            ServerFrame::Ok { result, .. } => self.complete(r, Ok(result)),
            ServerFrame::Error { message, .. } => {
                self.complete(r, Err(ClientError::Refused(message)))
            }
            ServerFrame::NotLeader { leader_hint, .. } => {
                if let Op::Status = r.op {
                    // Cannot happen (any node answers status); treat as a refusal.
                    self.complete(r, Err(ClientError::Refused("status refused".into())));
                    return;
                }
                let from_i = self.node_index(from);
                match self.cfg.nodes.iter().position(|&n| n == leader_hint) {
                    Some(h) if Some(h) != from_i => {
                        self.target = h;
                        self.queued.push((now, r));
                    }
                    _ => {
                        // No leader known (an election is likely under way): wait a little.
                        if let Some(i) = from_i {
                            self.rotate_from(i);
                        }
                        let at = now + r.backoff;
                        r.backoff = (r.backoff * 2).min(Duration::from_millis(20));
                        self.queued.push((at, r));
                    }
                }
            }
            ServerFrame::Retry { .. } => {
                let at = now + r.backoff;
                r.backoff = (r.backoff * 2).min(Duration::from_millis(20));
                self.queued.push((at, r));
            }
        }
    }

    /// Gives up on attempts that got no answer in time (tries another node) and on requests
    /// past their overall deadline (unknown outcome for writes). Scanned at most once a
    /// millisecond.
    fn expire(&mut self) {
        let now = Instant::now();
        if now < self.next_timeout_scan || self.in_flight.is_empty() {
            return;
        }
        self.next_timeout_scan = now + Duration::from_millis(1);
        let late: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, r)| now >= r.attempt_deadline || now >= r.deadline)
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            let r = self.in_flight.remove(&id).expect("listed");
            if now >= r.deadline {
                self.time_out(r);
            } else {
                if !matches!(r.op, Op::Status) {
                    self.rotate_from(r.node);
                }
                self.queued.push((now, r));
            }
        }
    }
}

/// What a write's answer means for the caller: the state machine's result, or why there is none.
fn session_outcome(bytes: &[u8]) -> Result<Vec<u8>, ClientError> {
    match SessionResult::decode(bytes) {
        Ok(SessionResult::Applied(v) | SessionResult::Duplicate(v)) => Ok(v),
        Ok(SessionResult::SessionExpired) => Err(ClientError::SessionExpired),
        Ok(SessionResult::ResultDiscarded { seq, .. }) => Err(ClientError::Refused(format!(
            "write {seq} was retried after later writes of this session were answered, so the \
             cluster no longer holds its result: it was not applied again, and whether it was \
             applied before is unknown; read the state it would have changed"
        ))),
        Ok(other) => Err(ClientError::Refused(format!("{other:?}"))),
        Err(e) => Err(ClientError::Refused(format!(
            "undecodable session result: {e}"
        ))),
    }
}
