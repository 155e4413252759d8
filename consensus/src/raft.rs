//! The Raft core: one node's state machine of roles, driven by ticks, messages, proposals, reads
//! and completions, producing `Ready` batches. Performs no I/O, reads no clock, owns no thread
//! (see the crate documentation for the driver's duties).

use crate::config::{Config, ConfigError, ReadMode};
use crate::log_store::{LogError, LogStore};
use crate::message::{Entry, EntryKind, HardState, Message, MessageBody, Payload, SnapshotMeta};
use crate::progress::{Progress, ProgressState, SnapshotTransfer};
use crate::types::{Index, NodeId, Term};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use thiserror::Error;

/// Reads waiting for confirmation at one leader, at most.
pub const MAX_PENDING_READS: usize = 65_536;
/// Heartbeat rounds remembered for lease reads.
const HEARTBEAT_ROUNDS_KEPT: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleKind {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

#[derive(Debug, Default)]
struct Votes {
    granted: Vec<NodeId>,
    rejected: Vec<NodeId>,
}

impl Votes {
    fn record(&mut self, from: NodeId, granted: bool) {
        if self.granted.contains(&from) || self.rejected.contains(&from) {
            return; // a duplicate answer counts once
        }
        if granted {
            self.granted.push(from);
        } else {
            self.rejected.push(from);
        }
    }
}

#[derive(Debug)]
struct PendingRead {
    ctx: u64,
    index: Index,
    seq: u64,
}

/// State that exists only while leading (Raft Figure 2 "volatile state on leaders").
#[derive(Debug)]
struct LeaderState {
    /// One per peer, in `Raft::peers` order.
    progress: Vec<Progress>,
    /// (last index, bytes) of each proposal batch not yet committed; their sum is
    /// `uncommitted_bytes` (backpressure bound `max_uncommitted_bytes`).
    uncommitted: VecDeque<(Index, u64)>,
    uncommitted_bytes: u64,
    /// New entries were appended and must be sent in the next `ready()` (batching).
    broadcast_pending: bool,
    check_quorum_elapsed: u64,
    /// Heartbeat rounds: each broadcast carries a new sequence number (ReadIndex, thesis §6.4).
    read_seq: u64,
    heartbeat_rounds: VecDeque<(u64, u64)>,
    pending_reads: VecDeque<PendingRead>,
    /// Reads that arrived before an entry of this term committed (thesis §6.4 step 1).
    reads_waiting_commit: Vec<u64>,
    /// Leadership transfer target and ticks since it started (thesis §3.10).
    transferee: Option<(NodeId, u64)>,
}

#[derive(Debug)]
enum Role {
    Follower,
    PreCandidate(Votes),
    Candidate(Votes),
    Leader(Box<LeaderState>),
}

/// A snapshot being received from the leader (Raft §7, chunked).
#[derive(Debug)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    next_offset: u64,
}

#[derive(Debug)]
struct PendingPersist {
    id: u64,
    /// Last log index this write makes durable (clamped when a later truncation removes it).
    last_index: Option<Index>,
    installs_snapshot: Option<Index>,
}

/// A received snapshot chunk to write (to a temporary snapshot file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub meta: SnapshotMeta,
    /// Offset 0 starts a new file (discard any partial one).
    pub offset: u64,
    pub data: Payload,
}

/// Durable work of one `Ready`. The driver performs it in this order: `hard_state`,
/// `snapshot_chunks`, `install_snapshot`, `entries`; makes it durable (after all earlier persist
/// work); then sends `messages` and calls `Raft::on_persisted(id)`.
#[derive(Debug, Default)]
pub struct Persist {
    pub id: u64,
    pub hard_state: Option<HardState>,
    pub snapshot_chunks: Vec<SnapshotChunk>,
    /// All chunks of this snapshot are written: make it the current snapshot (sync, rename) and
    /// discard the whole log (it restarts after `last_included_index`).
    pub install_snapshot: Option<SnapshotMeta>,
    /// Append these, first truncating every entry at or after `entries[0].index`.
    pub entries: Vec<Entry>,
    /// Send only once this work is durable (votes, acknowledgements: storage rule 8
    /// of docs/RULES.md).
    pub messages: Vec<Message>,
}

/// A confirmed read: answer it from the state machine once `index` is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: u64,
    pub index: Index,
}

/// Work for the driver. See the crate documentation for the order of duties.
#[derive(Debug, Default)]
pub struct Ready {
    /// Send now (before this Ready's persist work completes): the leader's AppendEntries may go
    /// out before its own write (Raft thesis §10.2.1).
    pub messages: Vec<Message>,
    pub persist: Option<Persist>,
    /// Restore the state machine from the store's snapshot with this metadata before applying
    /// `committed` (on restart, or after an installed snapshot is durable).
    pub apply_snapshot: Option<SnapshotMeta>,
    /// Apply these in order (`Noop` and `Membership` entries are not client commands).
    pub committed: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    /// Take a snapshot of the state machine at this index (everything handed out for applying so
    /// far), write it durably, then call `Raft::on_snapshot_written`.
    pub snapshot_request: Option<Index>,
    /// The log may drop entries at and before this index.
    pub compact_to: Option<Index>,
}

/// Identifies a proposal: it took effect iff the entry applied at `index` has `term`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProposalId {
    pub index: Index,
    pub term: Term,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProposeError {
    #[error("not the leader (the leader is believed to be node {leader_hint}; 0: unknown)")]
    NotLeader { leader_hint: NodeId },
    #[error(
        "{uncommitted_bytes} bytes are uncommitted (limit {limit}); retry when commits catch up"
    )]
    Backpressure { uncommitted_bytes: u64, limit: u64 },
    #[error(
        "{unstable_bytes} bytes of the leader's log are not yet durable (limit {limit}); retry when its disk catches up"
    )]
    DiskBehind { unstable_bytes: u64, limit: u64 },
    #[error("a proposal of {bytes} bytes exceeds the {max}-byte limit")]
    TooLarge { bytes: u64, max: u64 },
    #[error("leadership is being transferred to node {to}; retry at the new leader")]
    TransferInProgress { to: NodeId },
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ReadError {
    #[error("not the leader (the leader is believed to be node {leader_hint}; 0: unknown)")]
    NotLeader { leader_hint: NodeId },
    #[error("{limit} reads are already waiting for confirmation")]
    TooManyPending { limit: usize },
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TransferError {
    #[error("not the leader")]
    NotLeader,
    #[error("node {0} is not a voter of this cluster")]
    UnknownNode(NodeId),
    #[error("this node is already the leader")]
    ToSelf,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StepError {
    #[error("message addressed to node {to} delivered to node {me}")]
    WrongRecipient { to: NodeId, me: NodeId },
    #[error("message from node {0}, which is not a member")]
    UnknownSender(NodeId),
}

#[derive(Debug, Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reading the log at start-up: {0}")]
    Log(#[from] LogError),
}

/// A summary for drivers, tools and the simulator's checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: RoleKind,
    pub current_term: Term,
    pub voted_for: NodeId,
    pub leader_id: NodeId,
    pub commit_index: Index,
    pub applied_index: Index,
    pub first_index: Index,
    pub last_index: Index,
    pub durable_index: Index,
    pub snapshot_index: Index,
}

/// One Raft node's consensus state. `S` is the log-read view of durable storage.
pub struct Raft<S: LogStore> {
    cfg: Config,
    id: NodeId,
    /// The other voters, in a fixed order (Progress vectors follow it).
    peers: Vec<NodeId>,
    quorum: usize,
    rng: ChaCha8Rng,

    /// Latest term seen; only grows. MUST be durable before any message of this term is sent
    /// (handed out through `Persist::hard_state`).
    current_term: Term,
    /// Vote in `current_term` (0: none). MUST be durable before the vote is sent (Raft §5.2).
    voted_for: NodeId,
    /// Highest index known committed; only grows. Invariant: `commit_index <= last_index`.
    commit_index: Index,
    /// Highest index handed to the driver for applying. Invariant: `applied_index <=
    /// commit_index` and `applied_index <= durable_index` (only durable entries are applied).
    applied_index: Index,
    /// The leader this node follows in `current_term` (0: unknown).
    leader_id: NodeId,
    role: Role,

    store: S,
    /// Entries not yet durable (or not yet handed out): `unstable[k]` has index
    /// `unstable_offset + k`. Bounded: the leader's by `max_uncommitted_bytes` (entries cannot
    /// commit before they are durable on the leader), a follower's by the leader's window.
    unstable: VecDeque<Entry>,
    unstable_offset: Index,
    /// Sum of `size_bytes` of `unstable`. The leader refuses proposals past
    /// `max_unstable_bytes` (its own disk is behind); a follower's is bounded by the leader's
    /// in-flight window, since it acknowledges only durable entries.
    unstable_bytes: u64,
    /// A received snapshot not yet durable; while set, the log logically starts after it.
    unstable_snapshot: Option<SnapshotMeta>,
    /// Entries up to here were handed to the driver. Invariant: `unstable_offset - 1 <=
    /// handed_out <= last_index`.
    handed_out: Index,
    /// Highest log index durable on this node (Raft thesis §10.2.1: the leader counts itself for
    /// commitment only up to here). Invariant: `durable_index <= handed_out`.
    durable_index: Index,
    persist_queue: VecDeque<PendingPersist>,
    next_persist_id: u64,
    /// The hard state last handed out for persisting.
    persisted_hard_state: HardState,

    election_elapsed: u64,
    randomized_election_timeout: u64,
    heartbeat_elapsed: u64,
    tick_count: u64,

    incoming_snapshot: Option<IncomingSnapshot>,
    pending_chunks: Vec<SnapshotChunk>,
    pending_install: Option<SnapshotMeta>,
    apply_snapshot_pending: Option<SnapshotMeta>,
    snapshot_requested: Option<Index>,
    applied_bytes_since_snapshot: u64,
    compact_to: Option<Index>,

    msgs: Vec<Message>,
    persisted_msgs: Vec<Message>,
    read_states: Vec<ReadState>,
}

impl<S: LogStore> std::fmt::Debug for Raft<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raft")
            .field("status", &self.status())
            .finish()
    }
}

fn quorum_of(voters: usize) -> usize {
    voters / 2 + 1
}

impl<S: LogStore> Raft<S> {
    /// Creates (or restarts) a node over `store`, whose durable contents and `hard_state` were
    /// loaded by the driver. A restart loads the latest snapshot (the first `Ready` asks for the
    /// state machine to be restored from it) and then replays the log tail up to the commit index.
    /// `rng_seed` seeds the election-timeout generator (distinct per node; fixed in the simulator).
    pub fn new(
        cfg: Config,
        store: S,
        hard_state: HardState,
        rng_seed: u64,
    ) -> Result<Self, InitError> {
        cfg.validate()?;
        let snap = store.snapshot_meta();
        let last = store.last_index();
        let first = store.first_index();
        if first > snap.last_included_index.next() {
            return Err(InitError::Log(LogError::Storage(format!(
                "the log starts at {first} but the snapshot covers only up to {}: entries are missing",
                snap.last_included_index
            ))));
        }
        // The hard state's commit may run ahead of a torn log tail; the snapshot is committed.
        let commit = hard_state
            .commit_index
            .max(snap.last_included_index)
            .min(last);
        let peers: Vec<NodeId> = cfg
            .voters
            .iter()
            .copied()
            .filter(|&v| v != cfg.id)
            .collect();
        let quorum = quorum_of(cfg.voters.len());
        let restore =
            snap.last_included_index > Index::ZERO && !cfg.bugs().forget_snapshot_on_restart;
        let mut raft = Raft {
            id: cfg.id,
            peers,
            quorum,
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            current_term: hard_state.current_term,
            voted_for: hard_state.voted_for,
            commit_index: commit,
            applied_index: snap.last_included_index,
            leader_id: NodeId::ZERO,
            role: Role::Follower,
            unstable: VecDeque::new(),
            unstable_offset: last.next(),
            unstable_bytes: 0,
            unstable_snapshot: None,
            handed_out: last,
            durable_index: last,
            persist_queue: VecDeque::new(),
            next_persist_id: 0,
            persisted_hard_state: hard_state,
            election_elapsed: 0,
            randomized_election_timeout: 0,
            heartbeat_elapsed: 0,
            tick_count: 0,
            incoming_snapshot: None,
            pending_chunks: Vec::new(),
            pending_install: None,
            apply_snapshot_pending: if restore { Some(snap) } else { None },
            snapshot_requested: None,
            applied_bytes_since_snapshot: 0,
            compact_to: None,
            msgs: Vec::new(),
            persisted_msgs: Vec::new(),
            read_states: Vec::new(),
            store,
            cfg,
        };
        raft.reset_election_timeout();
        Ok(raft)
    }

    // ---------------------------------------------------------------- accessors

    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn store(&self) -> &S {
        &self.store
    }
    /// The driver writes `Persist` work, snapshots and compactions through this.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }
    /// Gives the store back (the simulator's crash: the process state is dropped).
    pub fn into_store(self) -> S {
        self.store
    }
    pub fn role(&self) -> RoleKind {
        match self.role {
            Role::Follower => RoleKind::Follower,
            Role::PreCandidate(_) => RoleKind::PreCandidate,
            Role::Candidate(_) => RoleKind::Candidate,
            Role::Leader(_) => RoleKind::Leader,
        }
    }
    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }
    pub fn current_term(&self) -> Term {
        self.current_term
    }
    pub fn leader_id(&self) -> NodeId {
        self.leader_id
    }
    pub fn commit_index(&self) -> Index {
        self.commit_index
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role(),
            current_term: self.current_term,
            voted_for: self.voted_for,
            leader_id: self.leader_id,
            commit_index: self.commit_index,
            applied_index: self.applied_index,
            first_index: self.first_index(),
            last_index: self.last_index(),
            durable_index: self.durable_index,
            snapshot_index: self.snapshot_index(),
        }
    }

    // ---------------------------------------------------------------- log view

    /// The snapshot the log logically starts after (a received one not yet durable, or the
    /// store's).
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        match &self.unstable_snapshot {
            Some(m) => m.clone(),
            None => self.store.snapshot_meta(),
        }
    }

    fn snapshot_index(&self) -> Index {
        match &self.unstable_snapshot {
            Some(m) => m.last_included_index,
            None => self.store.snapshot_meta().last_included_index,
        }
    }

    pub fn first_index(&self) -> Index {
        match &self.unstable_snapshot {
            Some(m) => m.last_included_index.next(),
            None => self.store.first_index(),
        }
    }

    pub fn last_index(&self) -> Index {
        if !self.unstable.is_empty() {
            Index(self.unstable_offset.0 + self.unstable.len() as u64 - 1)
        } else if let Some(m) = &self.unstable_snapshot {
            m.last_included_index
        } else {
            self.store.last_index()
        }
    }

    /// Term of the entry at `index` (the snapshot's last included index works too).
    pub fn term_of(&self, index: Index) -> Result<Term, LogError> {
        let last = self.last_index();
        if index > last {
            return Err(LogError::Unavailable {
                index,
                last_index: last,
            });
        }
        if index >= self.unstable_offset {
            return Ok(self.unstable[(index.0 - self.unstable_offset.0) as usize].term);
        }
        if let Some(m) = &self.unstable_snapshot {
            if index == m.last_included_index {
                return Ok(m.last_included_term);
            }
            return Err(LogError::Compacted {
                index,
                first_index: m.last_included_index.next(),
            });
        }
        if index == Index::ZERO {
            return Ok(Term::ZERO);
        }
        self.store.term(index)
    }

    fn last_term(&self) -> Term {
        self.term_of(self.last_index()).unwrap_or(Term::ZERO)
    }

    /// Appends entries `[lo, hi)` to `out` (at least one if `lo < hi`) up to about `max_bytes`.
    pub fn entries(
        &self,
        lo: Index,
        hi: Index,
        max_bytes: u64,
        out: &mut Vec<Entry>,
    ) -> Result<(), LogError> {
        let hi = hi.min(self.last_index().next());
        if lo >= hi {
            return Ok(());
        }
        if self.unstable_snapshot.is_some() && lo < self.unstable_offset {
            return Err(LogError::Compacted {
                index: lo,
                first_index: self.unstable_offset,
            });
        }
        let base = out.len();
        if lo < self.unstable_offset {
            self.store
                .entries(lo, hi.min(self.unstable_offset), max_bytes, out)?;
            let got = (out.len() - base) as u64;
            if hi <= self.unstable_offset || Index(lo.0 + got) < self.unstable_offset {
                return Ok(());
            }
        }
        let mut bytes: u64 = out[base..].iter().map(Entry::size_bytes).sum();
        let start = lo.max(self.unstable_offset);
        for i in start.0..hi.0 {
            let e = &self.unstable[(i - self.unstable_offset.0) as usize];
            bytes += e.size_bytes();
            if bytes > max_bytes && out.len() > base {
                break;
            }
            out.push(e.clone());
        }
        Ok(())
    }

    /// Raft §5.4.1: is a log ending at (`last_index`, `last_term`) at least as up-to-date as ours?
    fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        let my_term = self.last_term();
        last_term > my_term || (last_term == my_term && last_index >= self.last_index())
    }

    /// Appends entries at the end of the log (leader) or after a conflict point (follower).
    /// `entries[0].index` must be `<= last_index + 1`; everything from there on is replaced.
    fn append_to_log(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let at = first.index;
        assert!(
            at <= self.last_index().next(),
            "append at {at} leaves a hole after {}",
            self.last_index()
        );
        // Raft §5.4: committed entries are never overwritten.
        assert!(
            at > self.commit_index,
            "truncating committed entry {at} (commit {})",
            self.commit_index
        );
        if at <= self.last_index() {
            self.truncate_from(at);
        }
        self.unstable_bytes += entries.iter().map(Entry::size_bytes).sum::<u64>();
        self.unstable.extend(entries.iter().cloned());
    }

    /// Drops entries `>= at` from the log view (a conflict, Raft §5.3).
    fn truncate_from(&mut self, at: Index) {
        if at >= self.unstable_offset {
            self.unstable
                .truncate((at.0 - self.unstable_offset.0) as usize);
            self.unstable_bytes = self.unstable.iter().map(Entry::size_bytes).sum();
        } else {
            self.unstable_bytes = 0;
            // Conflicts with entries already handed to the driver: the next Persist starts at
            // `at`, which tells the driver to truncate there.
            self.unstable.clear();
            self.unstable_offset = at;
        }
        let keep = at.prev();
        self.handed_out = self.handed_out.min(keep);
        self.durable_index = self.durable_index.min(keep);
        for p in self.persist_queue.iter_mut() {
            if let Some(l) = p.last_index.as_mut() {
                *l = (*l).min(keep);
            }
        }
    }

    // ---------------------------------------------------------------- timers and roles

    fn reset_election_timeout(&mut self) {
        self.election_elapsed = 0;
        self.randomized_election_timeout = self
            .rng
            .random_range(self.cfg.election_timeout_min_ticks..self.cfg.election_timeout_max_ticks);
    }

    /// Thesis §4.2.3 leader stickiness: a node that heard from a leader within the minimum
    /// election timeout does not help depose it.
    fn in_leader_lease(&self) -> bool {
        self.cfg.check_quorum
            && self.leader_id != NodeId::ZERO
            && (self.is_leader() || self.election_elapsed < self.cfg.election_timeout_min_ticks)
    }

    fn become_follower(&mut self, term: Term, leader: NodeId) {
        assert!(term >= self.current_term, "terms only grow (Raft §5.1)");
        if term > self.current_term {
            self.current_term = term;
            self.voted_for = NodeId::ZERO;
            self.incoming_snapshot = None;
        }
        self.role = Role::Follower;
        self.leader_id = leader;
        self.reset_election_timeout();
    }

    fn become_pre_candidate(&mut self) {
        assert!(!self.is_leader(), "a leader does not start a pre-vote");
        // Thesis §9.6: the term and vote are left alone until the pre-vote succeeds.
        let mut votes = Votes::default();
        votes.record(self.id, true);
        self.role = Role::PreCandidate(votes);
        self.leader_id = NodeId::ZERO;
        self.reset_election_timeout();
    }

    fn become_candidate(&mut self) {
        assert!(!self.is_leader(), "a leader does not become a candidate");
        // Raft §5.2: increment currentTerm, vote for self.
        self.current_term = Term(self.current_term.0 + 1);
        self.voted_for = self.id;
        self.incoming_snapshot = None;
        let mut votes = Votes::default();
        votes.record(self.id, true);
        self.role = Role::Candidate(votes);
        self.leader_id = NodeId::ZERO;
        self.reset_election_timeout();
    }

    fn become_leader(&mut self) {
        assert!(
            matches!(self.role, Role::Candidate(_)),
            "only a candidate becomes leader (Raft §5.2)"
        );
        let next = self.last_index().next();
        let progress = self.peers.iter().map(|&p| Progress::new(p, next)).collect();
        self.role = Role::Leader(Box::new(LeaderState {
            progress,
            uncommitted: VecDeque::new(),
            uncommitted_bytes: 0,
            broadcast_pending: true,
            check_quorum_elapsed: 0,
            read_seq: 0,
            heartbeat_rounds: VecDeque::new(),
            pending_reads: VecDeque::new(),
            reads_waiting_commit: Vec::new(),
            transferee: None,
        }));
        self.leader_id = self.id;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        // Raft §8 / §5.4.2: a new leader commits an entry of its own term; this also lets
        // ReadIndex start (thesis §6.4).
        let noop = Entry {
            index: next,
            term: self.current_term,
            kind: EntryKind::Noop,
            data: Payload::default(),
        };
        self.append_to_log(std::slice::from_ref(&noop));
        self.maybe_commit();
    }

    /// Starts an election: a pre-vote first if enabled (thesis §9.6), unless `transfer`.
    fn campaign(&mut self, transfer: bool) {
        if self.cfg.pre_vote && !transfer {
            self.become_pre_candidate();
            if self.quorum == 1 {
                self.campaign_for_real(false);
                return;
            }
            let term = Term(self.current_term.0 + 1);
            self.broadcast_vote_request(term, true, false);
        } else {
            self.campaign_for_real(transfer);
        }
    }

    fn campaign_for_real(&mut self, transfer: bool) {
        self.become_candidate();
        if self.quorum == 1 {
            self.become_leader();
            return;
        }
        self.broadcast_vote_request(self.current_term, false, transfer);
    }

    fn broadcast_vote_request(&mut self, term: Term, pre_vote: bool, transfer: bool) {
        let last_log_index = self.last_index();
        let last_log_term = self.last_term();
        for i in 0..self.peers.len() {
            let m = Message {
                from: self.id,
                to: self.peers[i],
                term,
                body: MessageBody::RequestVote {
                    pre_vote,
                    last_log_index,
                    last_log_term,
                    leadership_transfer: transfer,
                },
            };
            if pre_vote {
                self.msgs.push(m);
            } else {
                // The candidate's own vote must be durable before it can count toward a leader
                // of this term (Raft §5.2, storage rule 8 of docs/RULES.md).
                self.persisted_msgs.push(m);
            }
        }
    }

    // ---------------------------------------------------------------- inputs

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.tick_count += 1;
        if self.is_leader() {
            self.tick_leader();
            return;
        }
        self.election_elapsed += 1;
        if self.election_elapsed >= self.randomized_election_timeout {
            // Raft §5.2: no word from a leader within the timeout: start an election.
            self.campaign(false);
        }
    }

    fn tick_leader(&mut self) {
        let cfg_min = self.cfg.election_timeout_min_ticks;
        let check_quorum = self.cfg.check_quorum;
        let hb_interval = self.cfg.heartbeat_interval_ticks;
        let Role::Leader(ls) = &mut self.role else {
            unreachable!()
        };
        for pr in ls.progress.iter_mut() {
            pr.stalled_ticks += 1;
            if let ProgressState::Snapshot(t) = &mut pr.state {
                t.stalled_ticks += 1;
            }
        }
        let mut step_down = false;
        ls.check_quorum_elapsed += 1;
        if ls.check_quorum_elapsed >= cfg_min {
            ls.check_quorum_elapsed = 0;
            let active = 1 + ls.progress.iter().filter(|p| p.recent_active).count();
            // Thesis §6.2 CheckQuorum: step down without a majority's recent contact.
            if check_quorum && active < self.quorum {
                step_down = true;
            }
            for p in ls.progress.iter_mut() {
                p.recent_active = false;
            }
        }
        if let Some((_, elapsed)) = ls.transferee.as_mut() {
            *elapsed += 1;
            if *elapsed >= cfg_min {
                ls.transferee = None; // the transfer timed out: resume accepting proposals
            }
        }
        if step_down {
            let term = self.current_term;
            self.become_follower(term, NodeId::ZERO);
            return;
        }
        self.heartbeat_elapsed += 1;
        if self.heartbeat_elapsed >= hb_interval {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    fn broadcast_heartbeat(&mut self) {
        let Role::Leader(ls) = &mut self.role else {
            return;
        };
        ls.read_seq += 1;
        let seq = ls.read_seq;
        ls.heartbeat_rounds.push_back((seq, self.tick_count));
        if ls.heartbeat_rounds.len() > HEARTBEAT_ROUNDS_KEPT {
            ls.heartbeat_rounds.pop_front();
        }
        for pr in ls.progress.iter() {
            self.msgs.push(Message {
                from: self.id,
                to: pr.id,
                term: self.current_term,
                body: MessageBody::Heartbeat {
                    // Only what the follower is known to hold (its log may differ beyond).
                    leader_commit: pr.match_index.min(self.commit_index),
                    read_seq: seq,
                },
            });
        }
    }

    /// Proposes one command. On success the entry will be committed at `index` unless
    /// leadership changes (check `ProposalId::term` when it is applied).
    pub fn propose(&mut self, data: Payload) -> Result<ProposalId, ProposeError> {
        let size = data.len() as u64 + crate::message::ENTRY_OVERHEAD_BYTES;
        if data.len() as u64 > self.cfg.max_entry_bytes {
            return Err(ProposeError::TooLarge {
                bytes: data.len() as u64,
                max: self.cfg.max_entry_bytes,
            });
        }
        self.check_propose(size)?;
        let index = self.last_index().next();
        let entry = Entry {
            index,
            term: self.current_term,
            kind: EntryKind::Normal,
            data,
        };
        self.unstable.push_back(entry);
        self.unstable_bytes += size;
        self.note_proposed(index, size);
        Ok(ProposalId {
            index,
            term: self.current_term,
        })
    }

    /// Proposes a batch of commands as consecutive entries (all or none). Returns the first
    /// entry's id; the others follow at consecutive indexes in the same term.
    pub fn propose_batch(&mut self, batch: &[Payload]) -> Result<ProposalId, ProposeError> {
        let mut size = 0u64;
        for d in batch {
            let s = d.len() as u64 + crate::message::ENTRY_OVERHEAD_BYTES;
            if d.len() as u64 > self.cfg.max_entry_bytes {
                return Err(ProposeError::TooLarge {
                    bytes: d.len() as u64,
                    max: self.cfg.max_entry_bytes,
                });
            }
            size += s;
        }
        self.check_propose(size)?;
        let first = self.last_index().next();
        let term = self.current_term;
        let mut index = first;
        for d in batch {
            self.unstable.push_back(Entry {
                index,
                term,
                kind: EntryKind::Normal,
                data: d.clone(),
            });
            index = index.next();
        }
        self.unstable_bytes += size;
        if !batch.is_empty() {
            self.note_proposed(index.prev(), size);
        }
        Ok(ProposalId { index: first, term })
    }

    fn check_propose(&self, size: u64) -> Result<(), ProposeError> {
        let Role::Leader(ls) = &self.role else {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader_id,
            });
        };
        if let Some((to, _)) = ls.transferee {
            return Err(ProposeError::TransferInProgress { to });
        }
        if self.unstable_bytes > 0 && self.unstable_bytes + size > self.cfg.max_unstable_bytes {
            return Err(ProposeError::DiskBehind {
                unstable_bytes: self.unstable_bytes,
                limit: self.cfg.max_unstable_bytes,
            });
        }
        if ls.uncommitted_bytes > 0 && ls.uncommitted_bytes + size > self.cfg.max_uncommitted_bytes
        {
            return Err(ProposeError::Backpressure {
                uncommitted_bytes: ls.uncommitted_bytes,
                limit: self.cfg.max_uncommitted_bytes,
            });
        }
        Ok(())
    }

    fn note_proposed(&mut self, last: Index, size: u64) {
        let Role::Leader(ls) = &mut self.role else {
            unreachable!()
        };
        ls.uncommitted.push_back((last, size));
        ls.uncommitted_bytes += size;
        ls.broadcast_pending = true;
        if self.quorum == 1 {
            self.maybe_commit();
        }
    }

    /// Requests a linearizable read identified by `ctx` (Raft §8 / thesis §6.4). A `ReadState`
    /// with the same `ctx` comes out of a later `Ready` once leadership is confirmed; serve it
    /// when the state machine has applied its index. Reads pending when leadership is lost are
    /// never confirmed: the driver times them out.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ReadError> {
        let committed_in_term = self.term_of(self.commit_index).ok() == Some(self.current_term);
        let Role::Leader(ls) = &mut self.role else {
            return Err(ReadError::NotLeader {
                leader_hint: self.leader_id,
            });
        };
        if self.cfg.bugs().read_without_read_index {
            self.read_states.push(ReadState {
                ctx,
                index: self.commit_index,
            });
            return Ok(());
        }
        if ls.pending_reads.len() + ls.reads_waiting_commit.len() >= MAX_PENDING_READS {
            return Err(ReadError::TooManyPending {
                limit: MAX_PENDING_READS,
            });
        }
        if !committed_in_term {
            // Thesis §6.4 step 1: the commit index is only known to be current once an entry of
            // this term has committed.
            ls.reads_waiting_commit.push(ctx);
            return Ok(());
        }
        self.register_read(ctx);
        Ok(())
    }

    fn register_read(&mut self, ctx: u64) {
        let index = self.commit_index;
        if self.quorum == 1 {
            self.read_states.push(ReadState { ctx, index });
            return;
        }
        if self.cfg.read_mode == ReadMode::Lease && self.lease_valid() {
            self.read_states.push(ReadState { ctx, index });
            return;
        }
        // Thesis §6.4 steps 2-3: confirm leadership with a fresh heartbeat round.
        self.broadcast_heartbeat();
        let Role::Leader(ls) = &mut self.role else {
            unreachable!()
        };
        ls.pending_reads.push_back(PendingRead {
            ctx,
            index,
            seq: ls.read_seq,
        });
    }

    /// The highest heartbeat round a majority (counting this leader) acknowledged.
    fn quorum_acked_seq(&self) -> u64 {
        let Role::Leader(ls) = &self.role else {
            return 0;
        };
        let mut acks: Vec<u64> = ls.progress.iter().map(|p| p.read_seq_acked).collect();
        acks.push(ls.read_seq);
        acks.sort_unstable_by(|a, b| b.cmp(a));
        acks[self.quorum - 1]
    }

    /// Thesis §6.4.1: followers will not elect another leader within the minimum election
    /// timeout of hearing from us, measured from when the acknowledged round was *sent*.
    fn lease_valid(&self) -> bool {
        let Role::Leader(ls) = &self.role else {
            return false;
        };
        let seq = self.quorum_acked_seq();
        let Some(&(_, sent_tick)) = ls.heartbeat_rounds.iter().find(|(s, _)| *s == seq) else {
            return false;
        };
        let lease = self
            .cfg
            .election_timeout_min_ticks
            .saturating_sub(self.cfg.lease_margin_ticks);
        self.tick_count < sent_tick + lease
    }

    fn release_reads(&mut self) {
        let acked = self.quorum_acked_seq();
        let Role::Leader(ls) = &mut self.role else {
            return;
        };
        while let Some(r) = ls.pending_reads.front() {
            if r.seq > acked {
                break;
            }
            self.read_states.push(ReadState {
                ctx: r.ctx,
                index: r.index,
            });
            ls.pending_reads.pop_front();
        }
    }

    /// Leadership transfer (thesis §3.10): bring `to` up to date, then tell it to campaign.
    /// Proposals are refused until the transfer completes or times out (an election timeout).
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        if to == self.id {
            return Err(TransferError::ToSelf);
        }
        let Some(pos) = self.peers.iter().position(|&p| p == to) else {
            return Err(TransferError::UnknownNode(to));
        };
        let last = self.last_index();
        let Role::Leader(ls) = &mut self.role else {
            return Err(TransferError::NotLeader);
        };
        ls.transferee = Some((to, 0));
        if ls.progress[pos].match_index == last {
            self.msgs.push(Message {
                from: self.id,
                to,
                term: self.current_term,
                body: MessageBody::TimeoutNow,
            });
        } else {
            self.send_append(pos);
        }
        Ok(())
    }

    /// Feeds one message from a peer.
    pub fn step(&mut self, m: Message) -> Result<(), StepError> {
        if m.to != self.id {
            return Err(StepError::WrongRecipient {
                to: m.to,
                me: self.id,
            });
        }
        if !self.peers.contains(&m.from) {
            return Err(StepError::UnknownSender(m.from));
        }
        // Raft §5.1: terms first, then dispatch by kind.
        if m.term > self.current_term {
            if let MessageBody::RequestVote {
                leadership_transfer,
                ..
            } = m.body
            {
                if !leadership_transfer && self.in_leader_lease() {
                    // Thesis §4.2.3: ignore a disruptive vote request while a leader is live.
                    return Ok(());
                }
            }
            match m.body {
                MessageBody::RequestVote { pre_vote: true, .. } => {}
                MessageBody::RequestVoteResponse {
                    pre_vote: true,
                    vote_granted: true,
                } => {}
                MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => self.become_follower(m.term, m.from),
                _ => self.become_follower(m.term, NodeId::ZERO),
            }
        } else if m.term < self.current_term {
            match m.body {
                MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. }
                    if self.cfg.check_quorum || self.cfg.pre_vote =>
                {
                    // A stale leader must learn the new term, or (with PreVote/CheckQuorum) it
                    // could keep a partition's followers from electing anyone.
                    self.msgs.push(Message {
                        from: self.id,
                        to: m.from,
                        term: self.current_term,
                        body: MessageBody::HeartbeatResponse { read_seq: 0 },
                    });
                }
                MessageBody::RequestVote { pre_vote: true, .. } => {
                    self.msgs.push(Message {
                        from: self.id,
                        to: m.from,
                        term: self.current_term,
                        body: MessageBody::RequestVoteResponse {
                            pre_vote: true,
                            vote_granted: false,
                        },
                    });
                }
                _ => {}
            }
            return Ok(());
        }
        let from = m.from;
        let term = m.term;
        match m.body {
            MessageBody::RequestVote {
                pre_vote,
                last_log_index,
                last_log_term,
                ..
            } => self.handle_vote_request(from, term, pre_vote, last_log_index, last_log_term),
            MessageBody::RequestVoteResponse {
                pre_vote,
                vote_granted,
            } => self.handle_vote_response(from, term, pre_vote, vote_granted),
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                self.follow(from);
                self.handle_append(from, prev_log_index, prev_log_term, &entries, leader_commit);
            }
            MessageBody::Heartbeat {
                leader_commit,
                read_seq,
            } => {
                self.follow(from);
                let c = leader_commit.min(self.last_index());
                if c > self.commit_index {
                    self.commit_index = c;
                }
                self.msgs
                    .push(self.reply(from, MessageBody::HeartbeatResponse { read_seq }));
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done,
            } => {
                self.follow(from);
                self.handle_snapshot_chunk(from, meta, offset, data, done);
            }
            MessageBody::AppendEntriesResponse {
                success,
                match_index,
                rejected_index,
                conflict_term,
                conflict_index,
            } => self.handle_append_response(
                from,
                success,
                match_index,
                rejected_index,
                conflict_term,
                conflict_index,
            ),
            MessageBody::HeartbeatResponse { read_seq } => {
                self.handle_heartbeat_response(from, read_seq)
            }
            MessageBody::InstallSnapshotResponse {
                snapshot_index,
                next_offset,
                done,
            } => self.handle_snapshot_response(from, snapshot_index, next_offset, done),
            MessageBody::TimeoutNow => {
                if !self.is_leader() {
                    // Thesis §3.10: the leader chose us; skip PreVote and leader stickiness.
                    self.campaign(true);
                }
            }
        }
        Ok(())
    }

    fn reply(&self, to: NodeId, body: MessageBody) -> Message {
        Message {
            from: self.id,
            to,
            term: self.current_term,
            body,
        }
    }

    /// A message from the leader of the current term: recognise it (Raft §5.2: a candidate that
    /// hears from the leader of its term steps down).
    fn follow(&mut self, leader: NodeId) {
        if !matches!(self.role, Role::Follower) || self.leader_id != leader {
            assert!(
                !self.is_leader(),
                "two leaders in term {} ({} and {leader})",
                self.current_term,
                self.id
            );
            let term = self.current_term;
            self.become_follower(term, leader);
        }
        self.election_elapsed = 0;
    }

    fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        pre_vote: bool,
        last_index: Index,
        last_term: Term,
    ) {
        // Raft §5.2: one vote per term, first come first served; §5.4.1: only for an
        // up-to-date log. A pre-vote for a future term is granted on the log alone.
        let can_vote = self.voted_for == from
            || (self.voted_for == NodeId::ZERO && self.leader_id == NodeId::ZERO)
            || (pre_vote && term > self.current_term);
        let granted = can_vote && self.is_up_to_date(last_index, last_term);
        if pre_vote {
            let t = if granted { term } else { self.current_term };
            self.msgs.push(Message {
                from: self.id,
                to: from,
                term: t,
                body: MessageBody::RequestVoteResponse {
                    pre_vote: true,
                    vote_granted: granted,
                },
            });
            return;
        }
        if granted {
            self.voted_for = from;
            self.election_elapsed = 0;
        }
        let m = self.reply(
            from,
            MessageBody::RequestVoteResponse {
                pre_vote: false,
                vote_granted: granted,
            },
        );
        if self.cfg.bugs().vote_without_persisting {
            self.msgs.push(m);
        } else {
            // Storage rule 8 of docs/RULES.md / fault-matrix row S11 of docs/FAULTS.md: the vote is
            // sent only after it is durable.
            self.persisted_msgs.push(m);
        }
    }

    fn handle_vote_response(&mut self, from: NodeId, term: Term, pre_vote: bool, granted: bool) {
        let quorum = self.quorum;
        match &mut self.role {
            Role::PreCandidate(votes) if pre_vote => {
                // Granted pre-votes carry the proposed term; rejections ours or an older one.
                if granted && term != Term(self.current_term.0 + 1) {
                    return;
                }
                votes.record(from, granted);
                if votes.granted.len() >= quorum {
                    self.campaign_for_real(false);
                } else if votes.rejected.len() >= quorum {
                    let t = self.current_term;
                    self.become_follower(t, NodeId::ZERO);
                }
            }
            Role::Candidate(votes) if !pre_vote && term == self.current_term => {
                votes.record(from, granted);
                if votes.granted.len() >= quorum {
                    self.become_leader();
                } else if votes.rejected.len() >= quorum {
                    let t = self.current_term;
                    self.become_follower(t, NodeId::ZERO);
                }
            }
            _ => {}
        }
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: &[Entry],
        leader_commit: Index,
    ) {
        let mut prev_index = prev_index;
        let mut prev_term = prev_term;
        let mut entries = entries;
        if prev_index < self.commit_index {
            // Entries up to our commit index are committed, so identical to the leader's
            // (Raft §5.4 leader completeness): skip them.
            let skip = ((self.commit_index.0 - prev_index.0) as usize).min(entries.len());
            if skip == entries.len() {
                let m = self.append_response(
                    from,
                    true,
                    self.commit_index,
                    Index::ZERO,
                    Term::ZERO,
                    Index::ZERO,
                );
                self.push_ack(m);
                return;
            }
            prev_index = entries[skip - 1].index;
            prev_term = entries[skip - 1].term;
            entries = &entries[skip..];
        }
        match self.term_of(prev_index) {
            Ok(t) if t == prev_term => {
                // Raft §5.3: find the first conflicting entry, delete it and all that follow,
                // append the new ones.
                let last_new = Index(prev_index.0 + entries.len() as u64);
                let mut k = 0;
                while k < entries.len() {
                    match self.term_of(entries[k].index) {
                        Ok(t) if t == entries[k].term => k += 1,
                        _ => break,
                    }
                }
                if k < entries.len() {
                    self.append_to_log(&entries[k..]);
                }
                // Raft §5.3: commitIndex = min(leaderCommit, index of last new entry).
                let c = leader_commit.min(last_new);
                if c > self.commit_index {
                    self.commit_index = c;
                }
                let m = self.append_response(
                    from,
                    true,
                    last_new,
                    Index::ZERO,
                    Term::ZERO,
                    Index::ZERO,
                );
                self.push_ack(m);
            }
            _ => {
                // Fast backtracking (thesis §5.3): tell the leader the conflicting term and the
                // first index we hold of it, or our log's end if we are short.
                let last = self.last_index();
                let (ct, ci) = if prev_index > last {
                    (Term::ZERO, last.next())
                } else {
                    match self.term_of(prev_index) {
                        Ok(t) => {
                            let floor = self.commit_index.max(self.first_index().prev());
                            let mut i = prev_index;
                            while i.prev() > floor && self.term_of(i.prev()).ok() == Some(t) {
                                i = i.prev();
                            }
                            (t, i)
                        }
                        Err(_) => (Term::ZERO, self.commit_index.next()),
                    }
                };
                let m = self.append_response(from, false, Index::ZERO, prev_index, ct, ci);
                self.push_ack(m);
            }
        }
    }

    fn append_response(
        &self,
        to: NodeId,
        success: bool,
        match_index: Index,
        rejected_index: Index,
        conflict_term: Term,
        conflict_index: Index,
    ) -> Message {
        self.reply(
            to,
            MessageBody::AppendEntriesResponse {
                success,
                match_index,
                rejected_index,
                conflict_term,
                conflict_index,
            },
        )
    }

    /// Acknowledgements leave only after everything they describe is durable (storage rule 8
    /// of docs/RULES.md, Raft thesis §10.2.1: followers ack after persisting).
    fn push_ack(&mut self, m: Message) {
        if self.cfg.bugs().ack_before_sync {
            self.msgs.push(m);
        } else {
            self.persisted_msgs.push(m);
        }
    }

    fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Payload,
        done: bool,
    ) {
        let idx = meta.last_included_index;
        let respond = |s: &mut Self, next_offset: u64, done: bool| {
            let m = s.reply(
                from,
                MessageBody::InstallSnapshotResponse {
                    snapshot_index: idx,
                    next_offset,
                    done,
                },
            );
            s.push_ack(m);
        };
        if idx <= self.commit_index {
            // Already covered by committed entries (or a newer snapshot).
            respond(self, 0, true);
            return;
        }
        if offset == 0 && self.term_of(idx).ok() == Some(meta.last_included_term) {
            // Raft §7: our log holds the snapshot's last entry: keep the log, everything up to
            // it is committed.
            self.commit_index = idx;
            respond(self, 0, true);
            return;
        }
        if offset == 0 {
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta: meta.clone(),
                next_offset: 0,
            });
        }
        let expected = match &self.incoming_snapshot {
            Some(inc) if inc.meta == meta => inc.next_offset,
            _ => {
                respond(self, 0, false); // restart the transfer from the beginning
                return;
            }
        };
        if offset != expected {
            respond(self, expected, false);
            return;
        }
        let len = data.len() as u64;
        self.pending_chunks.push(SnapshotChunk {
            meta: meta.clone(),
            offset,
            data,
        });
        let next_offset = offset + len;
        if !done {
            if let Some(inc) = self.incoming_snapshot.as_mut() {
                inc.next_offset = next_offset;
            }
            respond(self, next_offset, false);
            return;
        }
        // The whole snapshot is written (once this Ready persists): it replaces the log.
        self.incoming_snapshot = None;
        self.unstable_bytes = 0;
        self.unstable.clear();
        self.unstable_offset = idx.next();
        self.handed_out = idx;
        // Until the install is durable only the committed prefix of the old log counts as ours.
        self.durable_index = self.durable_index.min(self.commit_index);
        for p in self.persist_queue.iter_mut() {
            p.last_index = None;
        }
        self.unstable_snapshot = Some(meta.clone());
        self.pending_install = Some(meta);
        self.commit_index = idx;
        respond(self, next_offset, true);
    }

    fn peer_pos(&self, id: NodeId) -> Option<usize> {
        self.peers.iter().position(|&p| p == id)
    }

    fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        match_index: Index,
        rejected_index: Index,
        conflict_term: Term,
        conflict_index: Index,
    ) {
        let Some(pos) = self.peer_pos(from) else {
            return;
        };
        let last = self.last_index();
        if !self.is_leader() {
            return;
        }
        if success {
            if match_index > last {
                return; // cannot be: a follower never matches beyond our log
            }
            let (grew, send_timeout_now) = {
                let Role::Leader(ls) = &mut self.role else {
                    unreachable!()
                };
                let pr = &mut ls.progress[pos];
                pr.recent_active = true;
                let grew = pr.maybe_update(match_index);
                if grew && pr.state == ProgressState::Probe {
                    pr.become_replicate();
                } else if pr.state == ProgressState::Probe {
                    pr.probe_sent = false;
                }
                let tn =
                    matches!(ls.transferee, Some((t, _)) if t == from) && pr.match_index == last;
                (grew, tn)
            };
            if grew {
                self.maybe_commit();
            }
            if send_timeout_now {
                let m = self.reply(from, MessageBody::TimeoutNow);
                self.msgs.push(m);
            }
            self.send_append(pos);
            return;
        }
        // A rejection. Compute where to probe next from the hint, ignoring stale answers.
        let next = {
            let Role::Leader(ls) = &self.role else {
                unreachable!()
            };
            let pr = &ls.progress[pos];
            if rejected_index <= pr.match_index {
                return; // stale: we already know a longer match
            }
            if pr.state == ProgressState::Probe && rejected_index != pr.next_index.prev() {
                return; // stale probe answer
            }
            if matches!(pr.state, ProgressState::Snapshot(_)) {
                return;
            }
            let mut next = conflict_index;
            if conflict_term > Term::ZERO {
                // Thesis §5.3: skip all of the conflicting term; if we hold entries of that
                // term, resume just after our last one.
                let mut i = rejected_index.min(last);
                while i > Index::ZERO {
                    match self.term_of(i) {
                        Ok(t) if t > conflict_term => i = i.prev(),
                        Ok(t) if t == conflict_term => {
                            next = i.next();
                            break;
                        }
                        _ => break,
                    }
                }
            }
            next.min(rejected_index).max(pr.match_index.next())
        };
        {
            let Role::Leader(ls) = &mut self.role else {
                unreachable!()
            };
            let pr = &mut ls.progress[pos];
            pr.recent_active = true;
            pr.become_probe(next);
        }
        self.send_append(pos);
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, read_seq: u64) {
        let Some(pos) = self.peer_pos(from) else {
            return;
        };
        let last = self.last_index();
        let hb = self.cfg.heartbeat_interval_ticks;
        {
            let Role::Leader(ls) = &mut self.role else {
                return;
            };
            let pr = &mut ls.progress[pos];
            pr.recent_active = true;
            pr.read_seq_acked = pr.read_seq_acked.max(read_seq);
            match &mut pr.state {
                ProgressState::Probe => pr.probe_sent = false,
                ProgressState::Replicate => {
                    // Appends or their answers were lost: fall back to probing.
                    if pr.match_index < last && !pr.inflight.is_empty() && pr.stalled_ticks > 4 * hb
                    {
                        let next = pr.match_index.next();
                        pr.become_probe(next);
                    }
                }
                ProgressState::Snapshot(t) => {
                    if t.in_flight() && t.stalled_ticks > 2 * hb {
                        // Chunks or their answers were lost: send again from the confirmed
                        // offset.
                        let confirmed = t.offset;
                        t.rewind_to(confirmed);
                    }
                }
            }
        }
        self.release_reads();
        self.send_append(pos);
    }

    fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        snapshot_index: Index,
        next_offset: u64,
        done: bool,
    ) {
        let Some(pos) = self.peer_pos(from) else {
            return;
        };
        {
            let Role::Leader(ls) = &mut self.role else {
                return;
            };
            let pr = &mut ls.progress[pos];
            pr.recent_active = true;
            let ProgressState::Snapshot(t) = &mut pr.state else {
                if done {
                    pr.maybe_update(snapshot_index);
                }
                return;
            };
            if t.meta.last_included_index != snapshot_index {
                return; // an answer about another transfer
            }
            if done {
                // Appends resume right after the snapshot (Raft §7).
                pr.maybe_update(snapshot_index);
                pr.become_probe(snapshot_index.next());
            } else if next_offset < t.offset || next_offset > t.next_send {
                // The follower holds less than it confirmed before (it restarted and lost its
                // partial file) or more than this round sent (chunks sent before a rewind
                // arrived after all): continue from what it holds.
                t.rewind_to(next_offset);
                t.stalled_ticks = 0;
            } else {
                // Chunks arrive in order, so everything before `next_offset` is received.
                // An answer without progress (a chunk after a lost one) changes nothing; the
                // stall check resends.
                if next_offset > t.offset {
                    t.stalled_ticks = 0;
                }
                t.offset = next_offset;
            }
        }
        if done {
            self.maybe_commit();
        }
        self.send_append(pos);
    }

    /// Sends what the follower at `pos` needs next, within its window.
    fn send_append(&mut self, pos: usize) {
        let last = self.last_index();
        let commit = self.commit_index;
        let (next, state_snapshot) = {
            let Role::Leader(ls) = &self.role else { return };
            let pr = &ls.progress[pos];
            match &pr.state {
                ProgressState::Probe if pr.probe_sent => return,
                ProgressState::Replicate
                    if pr.window_full(self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes) =>
                {
                    return;
                }
                ProgressState::Replicate if pr.next_index > last && pr.commit_sent >= commit => {
                    return;
                }
                ProgressState::Snapshot(t) => {
                    if t.last_sent
                        || (t.next_send > t.offset
                            && t.next_send - t.offset >= self.cfg.snapshot_inflight_bytes)
                    {
                        return;
                    }
                    (pr.next_index, true)
                }
                _ => (pr.next_index, false),
            }
        };
        if state_snapshot {
            self.send_snapshot_chunks(pos);
            return;
        }
        let prev = next.prev();
        let prev_term = match self.term_of(prev) {
            Ok(t) => t,
            Err(LogError::Compacted { .. }) => {
                self.start_snapshot(pos);
                return;
            }
            Err(e) => {
                tracing::error!(node = %self.id, error = %e, "reading the log to replicate");
                return;
            }
        };
        let mut entries = Vec::new();
        let max_bytes = {
            let Role::Leader(ls) = &self.role else {
                unreachable!()
            };
            let pr = &ls.progress[pos];
            self.cfg
                .max_msg_bytes
                .min(
                    self.cfg
                        .max_inflight_bytes
                        .saturating_sub(pr.inflight_bytes),
                )
                .max(1)
        };
        let hi = Index(next.0.saturating_add(self.cfg.max_msg_entries as u64)).min(last.next());
        match self.entries(next, hi, max_bytes, &mut entries) {
            Ok(()) => {}
            Err(LogError::Compacted { .. }) => {
                self.start_snapshot(pos);
                return;
            }
            Err(e) => {
                tracing::error!(node = %self.id, error = %e, "reading entries to replicate");
                return;
            }
        }
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let last_sent = entries.last().map(|e| e.index);
        let Role::Leader(ls) = &mut self.role else {
            unreachable!()
        };
        let pr = &mut ls.progress[pos];
        match pr.state {
            ProgressState::Replicate => {
                // An empty append in Replicate only carries a new commit index; it is not
                // tracked in the window.
                if let Some(ls_idx) = last_sent {
                    pr.inflight.push_back((ls_idx, bytes));
                    pr.inflight_bytes += bytes;
                    pr.next_index = ls_idx.next();
                }
            }
            _ => pr.probe_sent = true,
        }
        pr.commit_sent = commit;
        let to = pr.id;
        self.msgs.push(Message {
            from: self.id,
            to,
            term: self.current_term,
            body: MessageBody::AppendEntries {
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries,
                leader_commit: commit,
            },
        });
    }

    fn start_snapshot(&mut self, pos: usize) {
        let meta = self.store.snapshot_meta();
        if meta.last_included_index == Index::ZERO {
            tracing::error!(node = %self.id, "entries are compacted but there is no snapshot to send");
            return;
        }
        let Role::Leader(ls) = &mut self.role else {
            return;
        };
        ls.progress[pos].state = ProgressState::Snapshot(SnapshotTransfer::new(meta));
        self.send_snapshot_chunks(pos);
    }

    /// Sends chunks of the snapshot transfer at `pos` until the in-flight window is full or
    /// the last chunk is sent (Raft §7, streamed: see `SnapshotTransfer`).
    fn send_snapshot_chunks(&mut self, pos: usize) {
        let window = self.cfg.snapshot_inflight_bytes;
        // Bounded by the window: each chunk moves `next_send` forward by at least one byte or
        // sets `last_sent`; the bound below is a backstop.
        let max_chunks = window / self.cfg.snapshot_chunk_bytes.max(1) + 2;
        for _ in 0..max_chunks {
            let more = {
                let Role::Leader(ls) = &self.role else { return };
                let ProgressState::Snapshot(t) = &ls.progress[pos].state else {
                    return;
                };
                !t.last_sent && (t.next_send == t.offset || t.next_send - t.offset < window)
            };
            if !more || !self.send_snapshot_chunk(pos) {
                return;
            }
        }
    }

    /// Sends the chunk at the transfer's `next_send`; false if nothing could be sent.
    fn send_snapshot_chunk(&mut self, pos: usize) -> bool {
        let chunk_bytes = self.cfg.snapshot_chunk_bytes;
        let Role::Leader(ls) = &mut self.role else {
            return false;
        };
        let pr = &mut ls.progress[pos];
        let to = pr.id;
        let ProgressState::Snapshot(t) = &mut pr.state else {
            return false;
        };
        let read = self
            .store
            .snapshot_chunk(t.meta.last_included_index, t.next_send, chunk_bytes);
        let (data, done) = match read {
            Ok(x) => x,
            Err(LogError::SnapshotUnavailable { .. }) => {
                // A newer snapshot replaced it: restart the transfer with that one.
                *t = SnapshotTransfer::new(self.store.snapshot_meta());
                match self
                    .store
                    .snapshot_chunk(t.meta.last_included_index, 0, chunk_bytes)
                {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::error!(node = %self.id, error = %e, "reading the snapshot to send");
                        return false;
                    }
                }
            }
            Err(e) => {
                tracing::error!(node = %self.id, error = %e, "reading the snapshot to send");
                return false;
            }
        };
        if !t.in_flight() {
            t.stalled_ticks = 0;
        }
        let offset = t.next_send;
        t.next_send += data.len() as u64;
        t.last_sent = done;
        let body = MessageBody::InstallSnapshot {
            meta: t.meta.clone(),
            offset,
            data,
            done,
        };
        self.msgs.push(Message {
            from: self.id,
            to,
            term: self.current_term,
            body,
        });
        true
    }

    /// Raft §5.3/§5.4.2: the highest index stored on a majority commits if it is of the current
    /// term. The leader counts itself only up to its durable index (thesis §10.2.1).
    fn maybe_commit(&mut self) {
        let Role::Leader(ls) = &self.role else { return };
        let mut matches: Vec<Index> = ls.progress.iter().map(|p| p.match_index).collect();
        matches.push(self.durable_index);
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let n = matches[self.quorum - 1];
        if n <= self.commit_index {
            return;
        }
        let term_ok = self.term_of(n).ok() == Some(self.current_term);
        // Raft §5.4.2 (Figure 8): never commit an entry of an earlier term by counting replicas.
        if !term_ok && !self.cfg.bugs().commit_previous_term_by_counting {
            return;
        }
        self.commit_index = n;
        let Role::Leader(ls) = &mut self.role else {
            unreachable!()
        };
        while let Some(&(last, bytes)) = ls.uncommitted.front() {
            if last > n {
                break;
            }
            ls.uncommitted.pop_front();
            ls.uncommitted_bytes -= bytes;
        }
        if term_ok && !ls.reads_waiting_commit.is_empty() {
            let waiting = std::mem::take(&mut ls.reads_waiting_commit);
            for ctx in waiting {
                self.register_read(ctx);
            }
        }
        // Followers learn the new commit index with the next append or heartbeat.
        let Role::Leader(ls) = &mut self.role else {
            unreachable!()
        };
        ls.broadcast_pending = true;
    }

    // ---------------------------------------------------------------- completions

    /// The driver finished (durably) the `Persist` with this id and every earlier one.
    pub fn on_persisted(&mut self, id: u64) {
        while let Some(p) = self.persist_queue.front() {
            if p.id > id {
                break;
            }
            let p = self.persist_queue.pop_front().expect("front exists");
            if let Some(l) = p.last_index {
                self.durable_index = self.durable_index.max(l);
            }
            if let Some(idx) = p.installs_snapshot {
                if let Some(m) = self
                    .unstable_snapshot
                    .take_if(|m| m.last_included_index == idx)
                {
                    self.apply_snapshot_pending = Some(m);
                }
            }
        }
        debug_assert!(self.durable_index <= self.handed_out);
        // Durable entries are readable from the store now: drop them from memory.
        while self.unstable_offset <= self.durable_index && !self.unstable.is_empty() {
            if let Some(e) = self.unstable.pop_front() {
                self.unstable_bytes -= e.size_bytes();
            }
            self.unstable_offset = self.unstable_offset.next();
        }
        if self.unstable.is_empty() && self.unstable_snapshot.is_none() {
            self.unstable_offset = self.unstable_offset.max(self.durable_index.next());
        }
        self.maybe_commit();
    }

    /// The driver wrote the snapshot it was asked for (`Ready::snapshot_request`), durably.
    pub fn on_snapshot_written(&mut self, meta: &SnapshotMeta) {
        self.snapshot_requested = None;
        let mut to = Index(
            meta.last_included_index
                .0
                .saturating_sub(self.cfg.compaction_retain_entries),
        );
        if let Role::Leader(ls) = &self.role {
            // Storage rule 17 of docs/RULES.md: keep what an in-flight snapshot transfer's follower
            // will need next.
            for pr in &ls.progress {
                if let ProgressState::Snapshot(t) = &pr.state {
                    to = to.min(t.meta.last_included_index);
                }
            }
        }
        to = to.min(self.store.snapshot_meta().last_included_index);
        if to >= self.store.first_index() {
            self.compact_to = Some(to);
        }
    }

    // ---------------------------------------------------------------- output

    /// Whether `ready()` has anything to hand out.
    pub fn has_ready(&self) -> bool {
        let broadcast = matches!(&self.role, Role::Leader(ls) if ls.broadcast_pending);
        broadcast
            || !self.msgs.is_empty()
            || !self.persisted_msgs.is_empty()
            || self.hard_state() != self.persisted_hard_state
            || self.handed_out < self.last_index()
            || !self.pending_chunks.is_empty()
            || self.pending_install.is_some()
            || self.apply_snapshot_pending.is_some()
            || (self.unstable_snapshot.is_none()
                && self.applied_index < self.commit_index.min(self.durable_index))
            || !self.read_states.is_empty()
            || self.compact_to.is_some()
    }

    fn hard_state(&self) -> HardState {
        HardState {
            current_term: self.current_term,
            voted_for: self.voted_for,
            commit_index: self.commit_index,
        }
    }

    /// Hands out the accumulated work. THE DRIVER MUST perform it as the crate documentation
    /// says: send `messages`; perform `persist` in order and durably, then send its messages and
    /// call `on_persisted`; restore `apply_snapshot`; apply `committed` in order; serve
    /// `read_states` once applied; honour `snapshot_request` and `compact_to`.
    pub fn ready(&mut self) -> Ready {
        if let Role::Leader(ls) = &mut self.role {
            if ls.broadcast_pending {
                ls.broadcast_pending = false;
                for pos in 0..self.peers.len() {
                    self.send_append_or_commit(pos);
                }
            }
        }
        let mut rd = Ready {
            messages: std::mem::take(&mut self.msgs),
            ..Ready::default()
        };

        // Durable work.
        let hs = self.hard_state();
        let mut persist = Persist::default();
        if hs != self.persisted_hard_state {
            persist.hard_state = Some(hs);
            self.persisted_hard_state = hs;
        }
        persist.snapshot_chunks = std::mem::take(&mut self.pending_chunks);
        persist.install_snapshot = self.pending_install.take();
        let last = self.last_index();
        if self.handed_out < last {
            let from = self.handed_out.next();
            debug_assert!(from >= self.unstable_offset);
            let k = (from.0 - self.unstable_offset.0) as usize;
            persist.entries.extend(self.unstable.range(k..).cloned());
            self.handed_out = last;
        }
        persist.messages = std::mem::take(&mut self.persisted_msgs);
        let has_work = persist.hard_state.is_some()
            || !persist.snapshot_chunks.is_empty()
            || persist.install_snapshot.is_some()
            || !persist.entries.is_empty()
            || !persist.messages.is_empty();
        if has_work {
            self.next_persist_id += 1;
            persist.id = self.next_persist_id;
            let last_index = match (persist.entries.last(), &persist.install_snapshot) {
                (Some(e), _) => Some(e.index),
                (None, Some(m)) => Some(m.last_included_index),
                (None, None) => None,
            };
            self.persist_queue.push_back(PendingPersist {
                id: persist.id,
                last_index,
                installs_snapshot: persist
                    .install_snapshot
                    .as_ref()
                    .map(|m| m.last_included_index),
            });
            rd.persist = Some(persist);
        }

        // Applying.
        if let Some(meta) = self.apply_snapshot_pending.take() {
            self.applied_index = self.applied_index.max(meta.last_included_index);
            self.applied_bytes_since_snapshot = 0;
            rd.apply_snapshot = Some(meta);
        }
        let upto = self.commit_index.min(self.durable_index);
        if self.unstable_snapshot.is_none() && self.applied_index < upto {
            let lo = self.applied_index.next();
            match self.entries(lo, upto.next(), self.cfg.max_apply_bytes, &mut rd.committed) {
                Ok(()) => {
                    if let Some(e) = rd.committed.last() {
                        self.applied_index = e.index;
                    }
                    self.applied_bytes_since_snapshot +=
                        rd.committed.iter().map(Entry::size_bytes).sum::<u64>();
                }
                Err(e) => tracing::error!(node = %self.id, error = %e, "reading committed entries"),
            }
        }
        rd.read_states = std::mem::take(&mut self.read_states);

        // Snapshot trigger: by entries and by bytes applied since the last snapshot.
        if self.snapshot_requested.is_none() && self.unstable_snapshot.is_none() {
            let since = self
                .applied_index
                .0
                .saturating_sub(self.store.snapshot_meta().last_included_index.0);
            let by_entries = self.cfg.snapshot_entries > 0 && since >= self.cfg.snapshot_entries;
            let by_bytes = self.cfg.snapshot_bytes > 0
                && self.applied_bytes_since_snapshot >= self.cfg.snapshot_bytes;
            if since > 0 && (by_entries || by_bytes) {
                self.snapshot_requested = Some(self.applied_index);
                self.applied_bytes_since_snapshot = 0;
                rd.snapshot_request = Some(self.applied_index);
                if self.cfg.bugs().compact_before_snapshot_durable {
                    self.compact_to = Some(self.applied_index);
                }
            }
        }
        rd.compact_to = self.compact_to.take();
        rd
    }

    fn send_append_or_commit(&mut self, pos: usize) {
        // A commit-only update rides on the next heartbeat; new entries go now.
        self.send_append(pos);
    }

    // ---------------------------------------------------------------- checks

    /// Checks this node's internal invariants; the simulator calls it after every step.
    pub fn check_invariants(&self) -> Result<(), String> {
        let last = self.last_index();
        let fail = |what: String| Err(format!("node {}: {what}", self.id));
        if self.commit_index > last {
            return fail(format!(
                "commit_index {} > last_index {last}",
                self.commit_index
            ));
        }
        if self.applied_index > self.commit_index {
            return fail(format!(
                "applied {} > commit {}",
                self.applied_index, self.commit_index
            ));
        }
        if self.durable_index > self.handed_out || self.handed_out > last {
            return fail(format!(
                "durable {} <= handed out {} <= last {last} broken",
                self.durable_index, self.handed_out
            ));
        }
        if self.handed_out.next() < self.unstable_offset {
            return fail(format!(
                "handed out {} below unstable offset {}",
                self.handed_out, self.unstable_offset
            ));
        }
        let mut prev_term = Term::ZERO;
        for (k, e) in self.unstable.iter().enumerate() {
            if e.index.0 != self.unstable_offset.0 + k as u64 {
                return fail(format!("unstable entry {k} has index {}", e.index));
            }
            if e.term < prev_term || e.term > self.current_term {
                return fail(format!(
                    "unstable entry {} has term {} out of order",
                    e.index, e.term
                ));
            }
            prev_term = e.term;
        }
        let unstable_sum: u64 = self.unstable.iter().map(Entry::size_bytes).sum();
        if unstable_sum != self.unstable_bytes {
            return fail(format!(
                "unstable bytes {} != {unstable_sum}",
                self.unstable_bytes
            ));
        }
        if let Role::Leader(ls) = &self.role {
            if self.voted_for != self.id || self.leader_id != self.id {
                return fail("a leader that did not vote for itself".into());
            }
            for pr in &ls.progress {
                pr.check().or_else(fail)?;
                if pr.next_index > last.next() {
                    return fail(format!(
                        "next_index {} of {} past the log end {last}",
                        pr.next_index, pr.id
                    ));
                }
                if pr.inflight.len() > self.cfg.max_inflight_msgs {
                    return fail(format!(
                        "{} messages in flight to {}",
                        pr.inflight.len(),
                        pr.id
                    ));
                }
            }
            let sum: u64 = ls.uncommitted.iter().map(|&(_, b)| b).sum();
            if sum != ls.uncommitted_bytes {
                return fail("uncommitted byte count drifted".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Paper-rule tests on single cores, messages passed by hand.
    use super::*;
    use crate::log_store::MemLogStore;

    fn node(id: u64, n: u64) -> Raft<MemLogStore> {
        let voters = (1..=n).map(NodeId).collect();
        let store = MemLogStore::new();
        Raft::new(
            Config::new(NodeId(id), voters),
            store,
            HardState::default(),
            id,
        )
        .unwrap()
    }

    /// Performs a Ready like a synchronous driver; returns (sent now, sent after persist).
    fn drain(r: &mut Raft<MemLogStore>) -> (Vec<Message>, Vec<Message>) {
        let mut now = Vec::new();
        let mut after = Vec::new();
        while r.has_ready() {
            let rd = r.ready();
            now.extend(rd.messages);
            if let Some(p) = rd.persist {
                let s = r.store_mut();
                if let Some(hs) = p.hard_state {
                    s.hard_state = hs;
                }
                s.append(&p.entries).unwrap();
                after.extend(p.messages);
                r.on_persisted(p.id);
            }
        }
        (now, after)
    }

    fn vote_request(from: u64, to: u64, term: u64, last: (u64, u64)) -> Message {
        Message {
            from: NodeId(from),
            to: NodeId(to),
            term: Term(term),
            body: MessageBody::RequestVote {
                pre_vote: false,
                last_log_index: Index(last.0),
                last_log_term: Term(last.1),
                leadership_transfer: false,
            },
        }
    }

    #[test]
    fn raft_5_2_a_vote_is_sent_only_after_it_is_persisted() {
        let mut r = node(2, 3);
        r.step(vote_request(1, 2, 1, (0, 0))).unwrap();
        let rd = r.ready();
        assert!(
            rd.messages.is_empty(),
            "no vote may leave before the persist"
        );
        let p = rd.persist.expect("the vote must be persisted");
        assert_eq!(p.hard_state.unwrap().voted_for, NodeId(1));
        assert!(matches!(
            p.messages[0].body,
            MessageBody::RequestVoteResponse {
                vote_granted: true,
                ..
            }
        ));
    }

    #[test]
    fn raft_5_2_one_vote_per_term_and_5_4_1_only_for_up_to_date_logs() {
        let mut r = node(3, 3);
        r.step(vote_request(1, 3, 1, (0, 0))).unwrap();
        r.step(vote_request(2, 3, 1, (0, 0))).unwrap();
        let (_, after) = drain(&mut r);
        let grants: Vec<bool> = after
            .iter()
            .map(|m| {
                matches!(
                    m.body,
                    MessageBody::RequestVoteResponse {
                        vote_granted: true,
                        ..
                    }
                )
            })
            .collect();
        assert_eq!(grants, vec![true, false]);
        // A log that is behind ours does not get a vote, even in a new term.
        let mut r = node(3, 3);
        r.append_to_log(&[Entry {
            index: Index(1),
            term: Term(1),
            kind: EntryKind::Normal,
            data: Payload::default(),
        }]);
        r.step(vote_request(1, 3, 2, (0, 0))).unwrap();
        let (_, after) = drain(&mut r);
        assert!(matches!(
            after[0].body,
            MessageBody::RequestVoteResponse {
                vote_granted: false,
                ..
            }
        ));
    }

    fn elect(n: u64) -> Vec<Raft<MemLogStore>> {
        let mut nodes: Vec<_> = (1..=n).map(|i| node(i, n)).collect();
        for _ in 0..100 {
            nodes[0].tick();
            let mut wire: Vec<Message> = Vec::new();
            loop {
                for r in nodes.iter_mut() {
                    let (a, b) = drain(r);
                    wire.extend(a);
                    wire.extend(b);
                }
                if wire.is_empty() {
                    break;
                }
                for m in wire.drain(..) {
                    let to = m.to.0 as usize - 1;
                    nodes[to].step(m).unwrap();
                }
            }
            if nodes[0].is_leader() {
                return nodes;
            }
        }
        panic!("node 1 was not elected");
    }

    /// Offsets of the InstallSnapshot chunks in `msgs`, in order.
    fn chunk_offsets(msgs: &[Message]) -> Vec<(u64, bool)> {
        msgs.iter()
            .filter_map(|m| match &m.body {
                MessageBody::InstallSnapshot { offset, done, .. } => Some((*offset, *done)),
                _ => None,
            })
            .collect()
    }

    /// Raft §7, streamed: the leader keeps up to `snapshot_inflight_bytes` of chunks in flight,
    /// sends more as the follower confirms, resends from the confirmed offset after a stall
    /// (lost chunks), and starts over when the follower does.
    #[test]
    fn raft_7_snapshot_chunks_stream_within_the_window_and_resend_after_a_stall() {
        let mut nodes = elect(3);
        let leader = &mut nodes[0];
        leader.cfg.snapshot_chunk_bytes = 100;
        leader.cfg.snapshot_inflight_bytes = 300;
        let term = leader.current_term;
        let meta = SnapshotMeta {
            last_included_index: leader.last_index(),
            last_included_term: term,
            membership: Default::default(),
        };
        let idx = meta.last_included_index;
        leader
            .store_mut()
            .set_snapshot(meta, Payload::new(vec![7u8; 1000]));
        let pos = leader.peer_pos(NodeId(2)).unwrap();
        leader.start_snapshot(pos);
        let (now, _) = drain(leader);
        assert_eq!(
            chunk_offsets(&now),
            vec![(0, false), (100, false), (200, false)],
            "three chunks fill the 300-byte window"
        );
        let answer = |next_offset: u64, done: bool| Message {
            from: NodeId(2),
            to: NodeId(1),
            term,
            body: MessageBody::InstallSnapshotResponse {
                snapshot_index: idx,
                next_offset,
                done,
            },
        };
        leader.step(answer(100, false)).unwrap();
        assert_eq!(chunk_offsets(&drain(leader).0), vec![(300, false)]);
        // An answer without progress (a chunk after a lost one) sends nothing more.
        leader.step(answer(100, false)).unwrap();
        assert_eq!(chunk_offsets(&drain(leader).0), vec![]);
        // A stall: heartbeat answers arrive, chunk answers do not; the transfer resends from
        // the confirmed offset.
        let hb = leader.cfg.heartbeat_interval_ticks;
        for _ in 0..=2 * hb {
            leader.tick();
        }
        drain(leader);
        leader
            .step(Message {
                from: NodeId(2),
                to: NodeId(1),
                term,
                body: MessageBody::HeartbeatResponse { read_seq: 0 },
            })
            .unwrap();
        assert_eq!(
            chunk_offsets(&drain(leader).0),
            vec![(100, false), (200, false), (300, false)]
        );
        // The follower started over (a restart lost its partial file): so does the leader.
        leader.step(answer(0, false)).unwrap();
        assert_eq!(
            chunk_offsets(&drain(leader).0),
            vec![(0, false), (100, false), (200, false)]
        );
        // Confirmations up to the end: the last chunk says done, nothing is sent past it.
        for confirmed in [300, 600, 900] {
            leader.step(answer(confirmed, false)).unwrap();
            drain(leader);
        }
        leader.check_invariants().unwrap();
        let Role::Leader(ls) = &leader.role else {
            panic!("not leader")
        };
        let ProgressState::Snapshot(t) = &ls.progress[pos].state else {
            panic!("not sending a snapshot")
        };
        assert!(t.last_sent && t.next_send == 1000 && t.offset == 900);
        leader.step(answer(1000, true)).unwrap();
        let Role::Leader(ls) = &leader.role else {
            panic!("not leader")
        };
        assert_eq!(ls.progress[pos].match_index, idx);
        assert_eq!(ls.progress[pos].state, ProgressState::Probe);
    }

    #[test]
    fn thesis_10_2_1_the_leader_counts_itself_only_once_durable() {
        let mut nodes = elect(5);
        let leader = &mut nodes[0];
        let base = leader.commit_index();
        let pid = leader.propose(Payload::from_slice(b"x")).unwrap();
        let rd = leader.ready();
        let persist = rd.persist.expect("the entry must be persisted");
        // Two followers acknowledge (2 of 5): with the leader's own durable copy that is a
        // majority, but the leader's write has not completed yet.
        for f in [2, 3] {
            leader
                .step(Message {
                    from: NodeId(f),
                    to: NodeId(1),
                    term: leader.current_term(),
                    body: MessageBody::AppendEntriesResponse {
                        success: true,
                        match_index: pid.index,
                        rejected_index: Index::ZERO,
                        conflict_term: Term::ZERO,
                        conflict_index: Index::ZERO,
                    },
                })
                .unwrap();
        }
        assert_eq!(
            leader.commit_index(),
            base,
            "committed before the leader's own sync"
        );
        leader.store_mut().append(&persist.entries).unwrap();
        leader.on_persisted(persist.id);
        assert_eq!(leader.commit_index(), pid.index);
    }

    fn ack(from: u64, term: Term, match_index: Index) -> Message {
        Message {
            from: NodeId(from),
            to: NodeId(1),
            term,
            body: MessageBody::AppendEntriesResponse {
                success: true,
                match_index,
                rejected_index: Index::ZERO,
                conflict_term: Term::ZERO,
                conflict_index: Index::ZERO,
            },
        }
    }

    #[test]
    fn raft_5_4_2_no_commit_of_a_previous_term_entry_by_counting() {
        // Node 1 holds two uncommitted entries of term 1 and wins term 2 (Figure 8's S1).
        let mut r = node(1, 3);
        for i in 1..=2 {
            r.append_to_log(&[Entry {
                index: Index(i),
                term: Term(1),
                kind: EntryKind::Normal,
                data: Payload::default(),
            }]);
        }
        r.current_term = Term(1);
        drain(&mut r);
        r.become_candidate();
        r.become_leader(); // appends its no-op at index 3, term 2
        drain(&mut r);
        let term = r.current_term();
        assert_eq!(term, Term(2));
        // A majority now stores the term-1 entry at index 2: counting must not commit it.
        r.step(ack(2, term, Index(2))).unwrap();
        assert_eq!(
            r.commit_index(),
            Index::ZERO,
            "an old-term entry committed by counting (Figure 8)"
        );
        // Once the leader's own entry is on a majority, everything up to it commits.
        r.step(ack(2, term, Index(3))).unwrap();
        assert_eq!(r.commit_index(), Index(3));
    }

    #[test]
    fn fast_backtracking_hint_names_the_conflicting_term_start() {
        let mut f = node(2, 3);
        for (i, t) in [(1, 1), (2, 2), (3, 2), (4, 2)] {
            f.append_to_log(&[Entry {
                index: Index(i),
                term: Term(t),
                kind: EntryKind::Normal,
                data: Payload::default(),
            }]);
        }
        f.current_term = Term(3);
        f.step(Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(3),
            body: MessageBody::AppendEntries {
                prev_log_index: Index(4),
                prev_log_term: Term(3),
                entries: vec![],
                leader_commit: Index::ZERO,
            },
        })
        .unwrap();
        let (_, after) = drain(&mut f);
        match &after[0].body {
            MessageBody::AppendEntriesResponse {
                success: false,
                conflict_term,
                conflict_index,
                ..
            } => {
                assert_eq!((*conflict_term, *conflict_index), (Term(2), Index(2)));
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn proposals_get_backpressure_when_the_disk_or_the_commit_lags() {
        let mut nodes = elect(3);
        let leader = &mut nodes[0];
        leader.cfg.max_unstable_bytes = 1000;
        let payload = Payload::new(vec![0; 100]);
        // The leader's disk never completes: the entry cache fills up.
        let mut accepted = 0;
        let err = loop {
            match leader.propose(payload.clone()) {
                Ok(_) => accepted += 1,
                Err(e) => break e,
            }
            let _ = leader.ready();
        };
        assert!(matches!(err, ProposeError::DiskBehind { .. }), "{err}");
        assert!((8..=10).contains(&accepted), "{accepted} accepted");
        // Followers never answer: uncommitted bytes hit their bound too.
        let mut nodes = elect(3);
        let leader = &mut nodes[0];
        leader.cfg.max_uncommitted_bytes = 1000;
        let err = loop {
            if let Err(e) = leader.propose(payload.clone()) {
                break e;
            }
            drain(leader);
        };
        assert!(matches!(err, ProposeError::Backpressure { .. }), "{err}");
        // Too large is refused whatever the state.
        leader.cfg.max_entry_bytes = 10;
        assert!(matches!(
            leader.propose(payload),
            Err(ProposeError::TooLarge { .. })
        ));
    }

    #[test]
    fn stale_leader_learns_the_newer_term() {
        let mut f = node(2, 3);
        f.current_term = Term(5);
        f.step(Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(3),
            body: MessageBody::Heartbeat {
                leader_commit: Index::ZERO,
                read_seq: 1,
            },
        })
        .unwrap();
        let (now, _) = drain(&mut f);
        assert_eq!(now[0].term, Term(5));
    }
}
