//! [`Driver`]: the one implementation of the driver's duties (crate documentation, "The driver's
//! duties") over two seams, so the node process and the simulator run the same code.
//!
//! - [`Disk`]: submit persist work (hard state, snapshot chunks, a snapshot install, entries) and
//!   learn, by ticket, when it is durable; read the current snapshot; write a local snapshot and
//!   learn when it is durable; compact. Errors are fatal: the driver stops with them.
//! - [`Network`]: queue a Raft message to a peer, queue a response to a client, send what is
//!   queued as one batch per destination (ipc rule 6 of docs/RULES.md), and the clock (`now_ms`).
//!
//! Production plugs in [`super::WalDisk`] (the WAL-backed [`super::store::WalLogStore`], its
//! group-commit sync thread, the snapshot thread) and [`super::IpcNetwork`] (the ipc
//! `Transport`); the simulator plugs in its simulated disk and network and steps the driver from
//! its event queue (`crate::sim`). Inputs arrive through the driver's methods ([`Driver::step`],
//! [`Driver::tick`], [`Driver::propose_writes`], [`Driver::start_reads`]); [`Driver::process`]
//! then drains every `Ready`, completes durable persist work and finished snapshots, and flushes
//! the network. The seams are generic parameters, not trait objects: the hot path has no dynamic
//! dispatch.

use crate::log_store::LogStore;
use crate::message::{Entry, EntryKind, Membership, Message, MessageBody, Payload, SnapshotMeta};
use crate::raft::{Persist, ProposeError, Raft, ReadError, Ready, RoleKind, StepError};
use crate::state_machine::StateMachine;
use crate::types::{Index, Term};
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::io;

use super::wire::ServerFrame;

/// The disk seam. `Store` is the core's read view of what was written (the `LogStore` inside
/// `Raft`); every method that writes gets it, so the disk may write synchronously into it (the
/// WAL) or later (the simulator, when the simulated write completes).
pub trait Disk {
    type Store: LogStore;
    /// Identifies submitted persist work; tickets complete in submission order.
    type Ticket: Copy + std::fmt::Debug;
    /// A fatal storage error (failed sync, full disk, corrupt snapshot).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Writes `p`'s durable parts in order: hard state, snapshot chunks, snapshot install,
    /// entries (truncating from `p.entries[0].index`). May return before they are durable.
    fn submit(&mut self, store: &mut Self::Store, p: &Persist)
    -> Result<Self::Ticket, Self::Error>;
    /// Whether the work of `t` (and so of every earlier ticket) is durable.
    fn is_durable(&mut self, store: &Self::Store, t: Self::Ticket) -> Result<bool, Self::Error>;
    /// The current snapshot's metadata and data (for restoring the state machine).
    fn read_snapshot(
        &mut self,
        store: &Self::Store,
    ) -> Result<Option<(SnapshotMeta, Vec<u8>)>, Self::Error>;
    /// Starts writing a snapshot of `sm` (which has applied exactly up to `meta`'s index).
    /// [`Disk::poll_snapshot`] reports it once durable. At most one is in progress.
    fn begin_snapshot<M: StateMachine>(
        &mut self,
        store: &mut Self::Store,
        meta: SnapshotMeta,
        sm: &M,
    ) -> Result<(), Self::Error>;
    /// The metadata to hand to `Raft::on_snapshot_written` once the snapshot in progress is
    /// durable and current (or superseded: then the store's current snapshot).
    fn poll_snapshot(
        &mut self,
        store: &mut Self::Store,
    ) -> Result<Option<SnapshotMeta>, Self::Error>;
    /// Drops log entries `<= index` (a durable snapshot covers them).
    fn compact(&mut self, store: &mut Self::Store, index: Index) -> Result<(), Self::Error>;
}

/// The network seam: outbound messages and responses, and the clock.
pub trait Network {
    /// Names a client connection.
    type Client: Copy + Eq + Hash + std::fmt::Debug;
    /// Queues a Raft message for its destination (`m.to`).
    fn send(&mut self, m: Message);
    /// Queues a response to a client.
    fn respond(&mut self, client: Self::Client, f: ServerFrame);
    /// Sends everything queued, one batch per destination.
    fn flush(&mut self);
    /// Milliseconds on a monotonic clock (the simulator's virtual time).
    fn now_ms(&self) -> u64;
}

/// Why the driver stopped.
#[derive(Debug, thiserror::Error)]
pub enum DriverError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Disk(E),
    #[error("restoring the state machine from the snapshot at index {index}: {source}")]
    Restore { index: Index, source: io::Error },
    #[error("the core asked for a snapshot at {index} but the state machine applied {applied}")]
    SnapshotIndex { index: Index, applied: Index },
    #[error("the core handed out entry {index} to apply after {applied}: entries apply in order")]
    ApplyOrder { index: Index, applied: Index },
}

/// Counters for status and benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct DriverCounters {
    pub entries_appended: u64,
    pub append_calls: u64,
    pub entries_applied: u64,
    pub writes_answered: u64,
    pub reads_answered: u64,
    pub snapshots_written: u64,
    pub snapshots_installed: u64,
}

/// A write proposed for a client, answered when its entry is applied.
#[derive(Clone, Copy, Debug)]
struct PendingWrite<C> {
    term: Term,
    client: C,
    req_id: u64,
}

/// A read waiting for leadership confirmation (keyed by ctx) or for the apply index.
#[derive(Debug)]
struct PendingRead<C> {
    client: C,
    req_id: u64,
    query: Vec<u8>,
    deadline_ms: u64,
}

/// Persist work whose messages wait for durability.
#[derive(Debug)]
struct PendingPersist<T> {
    id: u64,
    ticket: T,
    messages: Vec<Message>,
}

/// A client write received this turn: (client, request id, log payload or why it is malformed).
pub type ClientWrite<C> = (C, u64, Result<Payload, String>);
/// A client read received this turn: (client, request id, query).
pub type ClientRead<C> = (C, u64, Vec<u8>);

/// One node's driver: the core, the state machine, the seams, and the clients' pending requests.
pub struct Driver<D: Disk, N: Network, M: StateMachine> {
    raft: Raft<D::Store>,
    disk: D,
    net: N,
    sm: M,
    applied: Index,
    /// The apply stage's queue: committed entries handed out by the core, not yet applied.
    to_apply: VecDeque<Entry>,
    /// Whether `process` runs the apply stage to the end (the node process) or a scheduler
    /// steps it with [`Driver::apply_step`] (the simulator, so that apply lags commit).
    apply_inline: bool,
    persists: VecDeque<PendingPersist<D::Ticket>>,
    writes: HashMap<Index, PendingWrite<N::Client>>,
    reads_unconfirmed: HashMap<u64, Vec<PendingRead<N::Client>>>,
    reads_confirmed: Vec<(Index, PendingRead<N::Client>)>,
    next_read_ctx: u64,
    read_timeout_ms: u64,
    snapshot_in_progress: bool,
    counters: DriverCounters,
    last_role: RoleKind,
    /// Time spent in the phases of `handle_ready` (0: send, 1: persist, 2: restore, 3: apply,
    /// 4: reads, 5: snapshot, 6: compact), reported with slow loop turns.
    phase_ms: [u64; 7],
    phase_at: u64,
}

impl<D: Disk, N: Network, M: StateMachine> std::fmt::Debug for Driver<D, N, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("status", &self.raft.status())
            .field("applied", &self.applied)
            .finish()
    }
}

impl<D: Disk, N: Network, M: StateMachine> Driver<D, N, M> {
    /// Wraps a core opened on `disk`'s store. `read_timeout_ms`: how long a read may wait for
    /// leadership confirmation before the client is told to retry.
    pub fn new(raft: Raft<D::Store>, disk: D, net: N, sm: M, read_timeout_ms: u64) -> Self {
        Driver {
            last_role: raft.role(),
            raft,
            disk,
            net,
            sm,
            applied: Index::ZERO,
            to_apply: VecDeque::new(),
            apply_inline: true,
            persists: VecDeque::new(),
            writes: HashMap::new(),
            reads_unconfirmed: HashMap::new(),
            reads_confirmed: Vec::new(),
            next_read_ctx: 1,
            read_timeout_ms,
            snapshot_in_progress: false,
            counters: DriverCounters::default(),
            phase_ms: [0; 7],
            phase_at: 0,
        }
    }

    pub fn raft(&self) -> &Raft<D::Store> {
        &self.raft
    }
    pub fn raft_mut(&mut self) -> &mut Raft<D::Store> {
        &mut self.raft
    }
    pub fn disk(&self) -> &D {
        &self.disk
    }
    pub fn net(&self) -> &N {
        &self.net
    }
    pub fn net_mut(&mut self) -> &mut N {
        &mut self.net
    }
    pub fn state_machine(&self) -> &M {
        &self.sm
    }
    pub fn state_machine_mut(&mut self) -> &mut M {
        &mut self.sm
    }
    /// The core and the disk together (the simulator completes simulated writes into the store).
    pub fn raft_and_disk_mut(&mut self) -> (&mut Raft<D::Store>, &mut D) {
        (&mut self.raft, &mut self.disk)
    }
    pub fn applied(&self) -> Index {
        self.applied
    }
    /// Committed entries waiting for the apply stage.
    pub fn apply_backlog(&self) -> usize {
        self.to_apply.len()
    }
    /// `false`: `process` leaves committed entries queued; [`Driver::apply_step`] applies them.
    pub fn set_apply_inline(&mut self, inline: bool) {
        self.apply_inline = inline;
    }
    pub fn counters(&self) -> DriverCounters {
        self.counters
    }
    /// Whether a local snapshot is being written.
    pub fn snapshot_in_progress(&self) -> bool {
        self.snapshot_in_progress
    }
    /// Milliseconds spent per `handle_ready` phase since the last call (then reset).
    pub fn take_phase_ms(&mut self) -> [u64; 7] {
        std::mem::take(&mut self.phase_ms)
    }
    /// Takes the driver apart (crash, shutdown).
    pub fn into_parts(self) -> (Raft<D::Store>, D, N, M) {
        (self.raft, self.disk, self.net, self.sm)
    }

    /// Steps one Raft message. A message the core refuses changes nothing; the node process
    /// logs and drops it, the simulator (whose messages are all well-formed) reports it.
    pub fn step(&mut self, m: Message) -> Result<(), StepError> {
        self.raft.step(m)
    }

    /// Ticks the core `n` times and expires reads past their deadline.
    pub fn tick(&mut self, n: u64) {
        for _ in 0..n {
            self.raft.tick();
        }
        self.expire_reads();
    }

    /// Proposes a turn's client writes as one batch (one AppendEntries, one sync).
    pub fn propose_writes(&mut self, writes: Vec<ClientWrite<N::Client>>) {
        if writes.is_empty() {
            return;
        }
        if !self.raft.is_leader() {
            let hint = self.raft.leader_id();
            for (client, req_id, _) in writes {
                let f = ServerFrame::NotLeader {
                    req_id,
                    leader_hint: hint,
                };
                self.net.respond(client, f);
            }
            return;
        }
        let mut batch = Vec::with_capacity(writes.len());
        let mut who = Vec::with_capacity(writes.len());
        for (client, req_id, payload) in writes {
            match payload {
                Ok(p) => {
                    batch.push(p);
                    who.push((client, req_id));
                }
                Err(message) => self
                    .net
                    .respond(client, ServerFrame::Error { req_id, message }),
            }
        }
        match self.raft.propose_batch(&batch) {
            Ok(first) => {
                for (k, (client, req_id)) in who.into_iter().enumerate() {
                    let w = PendingWrite {
                        term: first.term,
                        client,
                        req_id,
                    };
                    self.writes.insert(Index(first.index.get() + k as u64), w);
                }
            }
            Err(e) => {
                for (client, req_id) in who {
                    self.net.respond(client, propose_refusal(&e, req_id));
                }
            }
        }
    }

    /// Starts one ReadIndex round for a turn's reads (Raft thesis §6.4).
    pub fn start_reads(&mut self, reads: Vec<ClientRead<N::Client>>) {
        if reads.is_empty() {
            return;
        }
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        match self.raft.read_index(ctx) {
            Ok(()) => {
                let deadline_ms = self.net.now_ms() + self.read_timeout_ms;
                let v = reads
                    .into_iter()
                    .map(|(client, req_id, query)| PendingRead {
                        client,
                        req_id,
                        query,
                        deadline_ms,
                    })
                    .collect();
                self.reads_unconfirmed.insert(ctx, v);
            }
            Err(e) => {
                let hint = self.raft.leader_id();
                for (client, req_id, _) in reads {
                    let f = match e {
                        ReadError::NotLeader { .. } => ServerFrame::NotLeader {
                            req_id,
                            leader_hint: hint,
                        },
                        _ => ServerFrame::Retry {
                            req_id,
                            reason: e.to_string(),
                        },
                    };
                    self.net.respond(client, f);
                }
            }
        }
    }

    /// Reads the core never confirmed (leadership lost, or past their deadline) are answered
    /// with a retry.
    fn expire_reads(&mut self) {
        if self.reads_unconfirmed.is_empty() {
            return;
        }
        let now = self.net.now_ms();
        let lost = !self.raft.is_leader();
        let mut expired = Vec::new();
        self.reads_unconfirmed.retain(|_, v| {
            if lost || v.first().is_some_and(|r| r.deadline_ms <= now) {
                expired.append(v);
                false
            } else {
                true
            }
        });
        for r in expired {
            let f = ServerFrame::Retry {
                req_id: r.req_id,
                reason: "leadership was not confirmed for this read; retry".into(),
            };
            self.net.respond(r.client, f);
        }
    }

    /// Drains every `Ready`, completes durable persist work and a finished snapshot, repeats
    /// while the core has more, then flushes the network.
    pub fn process(&mut self) -> Result<(), DriverError<D::Error>> {
        for _ in 0..1000 {
            self.drain_ready()?;
            self.complete_persists()?;
            self.poll_snapshot()?;
            if !self.raft.has_ready() {
                break;
            }
        }
        self.net.flush();
        Ok(())
    }

    fn drain_ready(&mut self) -> Result<(), DriverError<D::Error>> {
        while self.raft.has_ready() {
            let rd = self.raft.ready();
            self.handle_ready(rd)?;
        }
        let role = self.raft.role();
        if role != self.last_role {
            tracing::info!(id = %self.raft.id(), ?role, term = %self.raft.current_term(), "role changed");
            self.last_role = role;
            if role != RoleKind::Leader {
                self.expire_reads();
            }
        }
        Ok(())
    }

    /// Adds the time since the previous mark to phase `i` (0 starts the clock).
    fn phase_mark(&mut self, i: usize) {
        let now = self.net.now_ms();
        if i > 0 {
            self.phase_ms[i] += now.saturating_sub(self.phase_at);
        }
        self.phase_at = now;
    }

    fn handle_ready(&mut self, rd: Ready) -> Result<(), DriverError<D::Error>> {
        self.phase_mark(0);
        let Ready {
            messages,
            persist,
            apply_snapshot,
            committed,
            read_states,
            snapshot_request,
            compact_to,
        } = rd;
        // Step 3: send now; these never depend on this node's unpersisted state. Flushed before
        // the persist below, so followers write in parallel with the leader's own sync (Raft
        // thesis §10.2.1) instead of after it.
        for m in messages {
            self.net.send(m);
        }
        if persist.is_some() {
            self.net.flush();
        }
        // Step 4: persist, in order; its messages wait for durability.
        if let Some(p) = persist {
            self.persist(p)?;
        }
        self.phase_mark(1);
        // Step 5: restore from the snapshot (after what was handed out before it).
        if let Some(meta) = apply_snapshot {
            self.apply_step(usize::MAX)?;
            self.restore(&meta)?;
        }
        self.phase_mark(2);
        // Step 6: apply (the apply stage: at once, or when the scheduler steps it).
        self.to_apply.extend(committed);
        if self.apply_inline {
            self.apply_step(usize::MAX)?;
        }
        self.phase_mark(3);
        // Step 7: confirmed reads, served once applied up to their index.
        for rs in read_states {
            if let Some(v) = self.reads_unconfirmed.remove(&rs.ctx) {
                self.reads_confirmed
                    .extend(v.into_iter().map(|r| (rs.index, r)));
            }
        }
        self.serve_reads();
        self.phase_mark(4);
        // Step 8: snapshot at the applied index (everything handed out, applied first).
        if let Some(i) = snapshot_request {
            self.apply_step(usize::MAX)?;
            self.begin_snapshot(i)?;
        }
        self.phase_mark(5);
        // Step 9: compact behind a durable snapshot (storage rule 15 of docs/RULES.md).
        if let Some(i) = compact_to {
            let store = self.raft.store_mut();
            self.disk.compact(store, i).map_err(DriverError::Disk)?;
        }
        self.phase_mark(6);
        Ok(())
    }

    /// The apply stage: applies up to `budget` queued committed entries in order, answering the
    /// writes proposed here, then serves the confirmed reads the applied index now covers.
    pub fn apply_step(&mut self, budget: usize) -> Result<(), DriverError<D::Error>> {
        for _ in 0..budget {
            let Some(e) = self.to_apply.pop_front() else {
                break;
            };
            if e.index != self.applied.next() {
                return Err(DriverError::ApplyOrder {
                    index: e.index,
                    applied: self.applied,
                });
            }
            let result = match e.kind {
                EntryKind::Normal => Some(self.sm.apply(e.index, e.data.as_slice())),
                _ => None,
            };
            self.applied = e.index;
            self.counters.entries_applied += 1;
            if let Some(w) = self.writes.remove(&e.index) {
                let f = match (w.term == e.term, result) {
                    (true, Some(result)) => {
                        self.counters.writes_answered += 1;
                        ServerFrame::Ok {
                            req_id: w.req_id,
                            result,
                        }
                    }
                    _ => ServerFrame::Retry {
                        req_id: w.req_id,
                        reason: "the entry was replaced by a new leader's log; retry with the same sequence number".into(),
                    },
                };
                self.net.respond(w.client, f);
            }
        }
        self.serve_reads();
        Ok(())
    }

    /// Hands persist work to the disk; its messages wait in `persists` until it is durable.
    fn persist(&mut self, mut p: Persist) -> Result<(), DriverError<D::Error>> {
        self.send_early_bugs(&mut p);
        let ticket = self
            .disk
            .submit(self.raft.store_mut(), &p)
            .map_err(DriverError::Disk)?;
        if !p.entries.is_empty() {
            self.counters.entries_appended += p.entries.len() as u64;
            self.counters.append_calls += 1;
            self.ack_clients_early_bug(&p);
        }
        if p.install_snapshot.is_some() {
            self.counters.snapshots_installed += 1;
        }
        self.persists.push_back(PendingPersist {
            id: p.id,
            ticket,
            messages: p.messages,
        });
        // A disk that wrote synchronously (`always`) completes at once: send the
        // acknowledgements now, before this turn applies committed entries: on a follower the
        // apply is not on the leader's commit path, the ack is.
        self.complete_persists()?;
        self.net.flush();
        Ok(())
    }

    /// Completes persist work the disk reports durable, in order: sends its votes and
    /// acknowledgements (storage rule 8 of docs/RULES.md) and tells the core.
    pub fn complete_persists(&mut self) -> Result<(), DriverError<D::Error>> {
        while let Some(p) = self.persists.front() {
            let durable = self
                .disk
                .is_durable(self.raft.store(), p.ticket)
                .map_err(DriverError::Disk)?;
            if !durable {
                break;
            }
            let p = self.persists.pop_front().expect("front checked");
            for m in p.messages {
                self.net.send(m);
            }
            self.raft.on_persisted(p.id);
        }
        Ok(())
    }

    /// Whether persist work is waiting for the disk.
    pub fn persist_pending(&self) -> bool {
        !self.persists.is_empty()
    }

    fn restore(&mut self, meta: &SnapshotMeta) -> Result<(), DriverError<D::Error>> {
        let Some((m, data)) = self
            .disk
            .read_snapshot(self.raft.store())
            .map_err(DriverError::Disk)?
        else {
            return Err(DriverError::Restore {
                index: meta.last_included_index,
                source: io::Error::new(io::ErrorKind::NotFound, "no snapshot file"),
            });
        };
        self.sm
            .restore(&mut data.as_slice())
            .map_err(|source| DriverError::Restore {
                index: m.last_included_index,
                source,
            })?;
        self.applied = m.last_included_index;
        self.apply_twice_bug(self.applied);
        // Writes whose entries the snapshot covers may or may not have been applied: the client
        // retries with the same sequence number and its session answers exactly once.
        let applied = self.applied;
        let covered: Vec<Index> = self
            .writes
            .keys()
            .copied()
            .filter(|&i| i <= applied)
            .collect();
        for i in covered {
            if let Some(w) = self.writes.remove(&i) {
                let f = ServerFrame::Retry {
                    req_id: w.req_id,
                    reason: "outcome covered by a snapshot; retry with the same sequence number"
                        .into(),
                };
                self.net.respond(w.client, f);
            }
        }
        Ok(())
    }

    fn serve_reads(&mut self) {
        if self.reads_confirmed.is_empty() {
            return;
        }
        let applied = if self.read_before_apply_bug() {
            Index(u64::MAX)
        } else {
            self.applied
        };
        let mut k = 0;
        while k < self.reads_confirmed.len() {
            if self.reads_confirmed[k].0 > applied {
                k += 1;
                continue;
            }
            let (_, r) = self.reads_confirmed.swap_remove(k);
            let result = self.sm.query(&r.query);
            self.counters.reads_answered += 1;
            let f = ServerFrame::Ok {
                req_id: r.req_id,
                result,
            };
            self.net.respond(r.client, f);
        }
    }

    fn begin_snapshot(&mut self, i: Index) -> Result<(), DriverError<D::Error>> {
        if i != self.applied {
            return Err(DriverError::SnapshotIndex {
                index: i,
                applied: self.applied,
            });
        }
        assert!(
            !self.snapshot_in_progress,
            "the core requested a snapshot while one is in progress"
        );
        let term = self.raft.term_of(i).expect("the applied index has a term");
        let mut membership = self.raft.snapshot_meta().membership;
        if membership.voters.is_empty() {
            membership = Membership {
                voters: self.raft.config().voters.clone(),
                voters_outgoing: Vec::new(),
            };
        }
        let meta = SnapshotMeta {
            last_included_index: i,
            last_included_term: term,
            membership,
        };
        self.disk
            .begin_snapshot(self.raft.store_mut(), meta, &self.sm)
            .map_err(DriverError::Disk)?;
        self.snapshot_in_progress = true;
        Ok(())
    }

    /// Completes a local snapshot the disk reports durable: tells the core.
    fn poll_snapshot(&mut self) -> Result<(), DriverError<D::Error>> {
        if !self.snapshot_in_progress {
            return Ok(());
        }
        let done = self
            .disk
            .poll_snapshot(self.raft.store_mut())
            .map_err(DriverError::Disk)?;
        if let Some(meta) = done {
            self.snapshot_in_progress = false;
            self.counters.snapshots_written += 1;
            tracing::info!(id = %self.raft.id(), index = %meta.last_included_index, "snapshot written");
            self.raft.on_snapshot_written(&meta);
        }
        Ok(())
    }

    // ------------------------------------------------------------------ seeded driver bugs

    /// Bugs `vote_before_sync` / `follower_ack_before_sync`: votes or append acknowledgements
    /// leave with the persist submitted, not once it is durable (storage rule 8 of docs/RULES.md).
    fn send_early_bugs(&mut self, p: &mut Persist) {
        let bugs = self.raft.config().bugs();
        if !bugs.driver_vote_before_sync && !bugs.driver_ack_before_sync {
            return;
        }
        let (early, late): (Vec<Message>, Vec<Message>) = std::mem::take(&mut p.messages)
            .into_iter()
            .partition(|m| match m.body {
                MessageBody::RequestVoteResponse {
                    pre_vote: false,
                    vote_granted: true,
                } => bugs.driver_vote_before_sync,
                MessageBody::AppendEntriesResponse { success: true, .. } => {
                    bugs.driver_ack_before_sync
                }
                _ => false,
            });
        p.messages = late;
        for m in early {
            self.net.send(m);
        }
    }

    /// Bug `client_ack_before_commit`: the leader answers a write once it handed the entry to its
    /// own disk, before a majority holds it.
    fn ack_clients_early_bug(&mut self, p: &Persist) {
        if !self.raft.config().bugs().driver_client_ack_before_commit {
            return;
        }
        for e in &p.entries {
            if let Some(w) = self.writes.remove(&e.index) {
                let result = crate::session::SessionResult::Applied(Vec::new()).encode();
                let f = ServerFrame::Ok {
                    req_id: w.req_id,
                    result,
                };
                self.net.respond(w.client, f);
            }
        }
    }

    /// Bug `read_before_apply`: a confirmed read is answered at once, whatever was applied.
    fn read_before_apply_bug(&self) -> bool {
        self.raft.config().bugs().driver_read_before_apply
    }

    /// Bug `apply_twice_after_restart`: after restoring a snapshot, the entries the log still
    /// holds behind it (already in the snapshot) are applied again.
    fn apply_twice_bug(&mut self, snapshot_index: Index) {
        if !self.raft.config().bugs().driver_apply_twice_after_restart {
            return;
        }
        let first = self.raft.first_index();
        let mut again = Vec::new();
        if first > snapshot_index
            || self
                .raft
                .entries(first, snapshot_index.next(), u64::MAX, &mut again)
                .is_err()
        {
            return;
        }
        for e in again.into_iter().filter(|e| e.kind == EntryKind::Normal) {
            self.sm.apply(e.index, e.data.as_slice());
        }
    }
}

/// The answer to a write the core refused.
fn propose_refusal(e: &ProposeError, req_id: u64) -> ServerFrame {
    match e {
        ProposeError::NotLeader { leader_hint } => ServerFrame::NotLeader {
            req_id,
            leader_hint: *leader_hint,
        },
        ProposeError::TooLarge { .. } => ServerFrame::Error {
            req_id,
            message: e.to_string(),
        },
        _ => ServerFrame::Retry {
            req_id,
            reason: e.to_string(),
        },
    }
}

/// A disk seam over a [`crate::MemLogStore`] whose writes are durable at once (no faults, no
/// latency): for benchmarks of the driver and core CPU cost and for tests that need no storage.
/// Local snapshots are taken synchronously.
#[derive(Debug, Default)]
pub struct MemDisk;

impl MemDisk {
    /// Persist work's durable parts, in the driver's order, into an in-memory store (also the
    /// simulator's write path, when a simulated write completes).
    pub fn write(
        store: &mut crate::log_store::MemLogStore,
        hard_state: Option<crate::message::HardState>,
        snapshot_chunks: &[crate::raft::SnapshotChunk],
        install_snapshot: Option<&SnapshotMeta>,
        entries: &[Entry],
    ) {
        if let Some(hs) = hard_state {
            store.hard_state = hs;
        }
        for c in snapshot_chunks {
            if store
                .write_snapshot_chunk(c.offset, c.data.as_slice())
                .is_err()
            {
                store.discard_incoming();
            }
        }
        if let Some(meta) = install_snapshot {
            store.install_received_snapshot(meta.clone());
        }
        if !entries.is_empty() {
            store
                .append(entries)
                .expect("the core hands out appendable entries");
        }
    }
}

impl Disk for MemDisk {
    type Store = crate::log_store::MemLogStore;
    type Ticket = ();
    type Error = std::convert::Infallible;

    fn submit(&mut self, store: &mut Self::Store, p: &Persist) -> Result<(), Self::Error> {
        MemDisk::write(
            store,
            p.hard_state,
            &p.snapshot_chunks,
            p.install_snapshot.as_ref(),
            &p.entries,
        );
        Ok(())
    }

    fn is_durable(&mut self, _: &Self::Store, _: ()) -> Result<bool, Self::Error> {
        Ok(true)
    }

    fn read_snapshot(
        &mut self,
        store: &Self::Store,
    ) -> Result<Option<(SnapshotMeta, Vec<u8>)>, Self::Error> {
        Ok(Some((
            store.snapshot_meta(),
            store.snapshot_data().as_slice().to_vec(),
        )))
    }

    fn begin_snapshot<S: StateMachine>(
        &mut self,
        store: &mut Self::Store,
        meta: SnapshotMeta,
        sm: &S,
    ) -> Result<(), Self::Error> {
        let mut data = Vec::new();
        // Writing into a Vec cannot fail for a well-behaved machine; an error leaves it empty.
        if sm.snapshot(&mut data).is_err() {
            data.clear();
        }
        store.set_snapshot(meta, Payload::new(data));
        Ok(())
    }

    fn poll_snapshot(
        &mut self,
        store: &mut Self::Store,
    ) -> Result<Option<SnapshotMeta>, Self::Error> {
        Ok(Some(store.snapshot_meta()))
    }

    fn compact(&mut self, store: &mut Self::Store, index: Index) -> Result<(), Self::Error> {
        store.compact(index);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::log_store::MemLogStore;
    use crate::types::NodeId;
    use std::io::{Read, Write};

    #[derive(Default)]
    struct TestNet {
        out: Vec<Message>,
        replies: Vec<(u32, ServerFrame)>,
    }

    impl Network for TestNet {
        type Client = u32;
        fn send(&mut self, m: Message) {
            self.out.push(m);
        }
        fn respond(&mut self, client: u32, f: ServerFrame) {
            self.replies.push((client, f));
        }
        fn flush(&mut self) {}
        fn now_ms(&self) -> u64 {
            0
        }
    }

    /// Remembers the last command; a query returns it.
    #[derive(Default)]
    struct Last(Vec<u8>);

    impl StateMachine for Last {
        fn apply(&mut self, _: Index, command: &[u8]) -> Vec<u8> {
            self.0 = command.to_vec();
            b"done".to_vec()
        }
        fn query(&self, _: &[u8]) -> Vec<u8> {
            self.0.clone()
        }
        fn snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
            out.write_all(&self.0)
        }
        fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
            self.0.clear();
            input.read_to_end(&mut self.0).map(|_| ())
        }
        fn digest(&self) -> u64 {
            self.0.len() as u64
        }
    }

    fn driver(voters: u64) -> Driver<MemDisk, TestNet, Last> {
        let c = Config::new(NodeId(1), (1..=voters).map(NodeId).collect());
        let store = MemLogStore::new();
        let hs = store.hard_state;
        let raft = Raft::new(c, store, hs, 7).expect("valid config");
        Driver::new(raft, MemDisk, TestNet::default(), Last::default(), 1000)
    }

    fn elect_alone(d: &mut Driver<MemDisk, TestNet, Last>) {
        for _ in 0..1000 {
            d.tick(1);
            d.process().expect("in memory");
            if d.raft().is_leader() {
                return;
            }
        }
        panic!("a single node did not elect itself");
    }

    #[test]
    fn a_write_is_answered_once_applied_and_a_later_read_sees_it() {
        let mut d = driver(1);
        elect_alone(&mut d);
        d.propose_writes(vec![(9, 1, Ok(Payload::from_slice(b"x=1")))]);
        // Nothing is answered before the entry is committed and applied.
        assert!(d.net().replies.is_empty());
        d.process().expect("in memory");
        let replies = std::mem::take(&mut d.net_mut().replies);
        assert!(
            matches!(&replies[..], [(9, ServerFrame::Ok { req_id: 1, result })] if result == b"done"),
            "{replies:?}"
        );
        d.start_reads(vec![(9, 2, Vec::new())]);
        d.process().expect("in memory");
        let replies = std::mem::take(&mut d.net_mut().replies);
        assert!(
            matches!(&replies[..], [(9, ServerFrame::Ok { req_id: 2, result })] if result == b"x=1"),
            "{replies:?}"
        );
    }

    #[test]
    fn a_lagging_apply_stage_holds_answers_until_it_catches_up() {
        let mut d = driver(1);
        elect_alone(&mut d);
        d.set_apply_inline(false);
        d.propose_writes(vec![(9, 1, Ok(Payload::from_slice(b"x=2")))]);
        d.process().expect("in memory");
        d.start_reads(vec![(9, 2, Vec::new())]);
        d.process().expect("in memory");
        assert!(d.apply_backlog() > 0);
        assert!(d.net().replies.is_empty(), "{:?}", d.net().replies);
        d.apply_step(usize::MAX).expect("in order");
        let ids: Vec<u64> = d.net().replies.iter().map(|(_, f)| f.req_id()).collect();
        assert_eq!(ids, vec![1, 2]);
    }

    #[test]
    fn a_node_that_does_not_lead_refuses_writes_with_a_hint() {
        let mut d = driver(3);
        d.propose_writes(vec![(4, 1, Ok(Payload::from_slice(b"y")))]);
        let replies = &d.net().replies;
        assert!(
            matches!(
                &replies[..],
                [(4, ServerFrame::NotLeader { req_id: 1, .. })]
            ),
            "{replies:?}"
        );
    }
}
