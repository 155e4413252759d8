//! A seeded, reproducible simulator: N nodes in one process, each the production driver
//! ([`crate::node::driver::Driver`], through the seams of [`seams`]) around a Raft core, over a
//! simulated network (drop, duplicate, reorder, delay, partitions including one-way and bridge
//! topologies) and simulated disks (write latency, power cuts that lose unsynced writes, torn
//! writes), with crashes, restarts and process pauses, driven in virtual time (1 unit = 1 ms, a
//! tick every 10 ms). Each event feeds one node's driver and calls `Driver::process`; the
//! simulator then checks and delivers what the driver sent and schedules its disk writes.
//!
//! After every event the simulator checks Raft's safety properties (at most one leader per term,
//! log matching, leader completeness, state machine safety, monotonic terms and commit indexes),
//! each node's `check_invariants`, and the durability rule that a vote or acknowledgement only
//! leaves a node once what it describes is on its simulated disk. At the end of a run it checks
//! the clients' history (no stale reads, no phantom values), that every acknowledged write is
//! present on every node, that the state machine digests are equal once the faults heal, and that
//! progress resumed within a bounded number of ticks.
//!
//! Every run is a pure function of its seed: `SEED=<n> cargo test -p shmraft-consensus <name>`
//! replays a failure exactly.

pub mod machine;
pub mod scenarios;
pub mod seams;

use crate::config::Config;
use crate::log_store::{LogStore, MemLogStore};
use crate::message::{Entry, Message, MessageBody, Payload};
use crate::node::driver::Driver;
use crate::node::wire::ServerFrame;
use crate::raft::{ProposalId, ProposeError, Raft, RoleKind};
use crate::state_machine::StateMachine;
use crate::types::{Index, NodeId, Term};
use machine::SimMachine;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seams::{ApplyRecord, CheckedMachine, SimDisk, SimDriver, SimNet};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;

/// Virtual milliseconds per Raft tick.
pub const TICK_MS: u64 = 10;

/// A broken property, with what the simulator saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Violation {}

fn violation<T>(msg: impl Into<String>) -> Result<T, Violation> {
    Err(Violation(msg.into()))
}

/// Which faults the random nemesis injects, and how the network and disks behave.
#[derive(Clone, Debug)]
pub struct FaultMix {
    pub drop_prob: f64,
    pub duplicate_prob: f64,
    /// Network delay is 1 ms plus up to this much jitter (jitter reorders messages).
    pub delay_jitter_ms: u64,
    /// Disk writes take up to this long to become durable.
    pub disk_latency_ms_max: u64,
    pub partitions: bool,
    pub one_way: bool,
    pub bridge: bool,
    pub crashes: bool,
    /// Crashes are power cuts: unsynced writes are lost (else only the process dies).
    pub power_cut: bool,
    /// A power cut may persist a prefix of the first unsynced write.
    pub torn_writes: bool,
    pub pauses: bool,
    /// Mean virtual milliseconds between nemesis actions.
    pub nemesis_interval_ms: u64,
    /// Probability that a node loses power right after it sends a vote, coming back 1-5 ms later
    /// (aims crashes at the vote-durability window).
    pub crash_after_vote_prob: f64,
    /// 0: each driver applies committed entries as soon as the core hands them out (as the node
    /// process does). Otherwise the apply stage is stepped on its own: a few entries at a time,
    /// up to this many milliseconds apart, so apply lags commit.
    pub apply_lag_ms: u64,
}

impl FaultMix {
    /// A reliable network and fast disks; no nemesis.
    pub fn none() -> FaultMix {
        FaultMix {
            drop_prob: 0.0,
            duplicate_prob: 0.0,
            delay_jitter_ms: 2,
            disk_latency_ms_max: 2,
            partitions: false,
            one_way: false,
            bridge: false,
            crashes: false,
            power_cut: false,
            torn_writes: false,
            pauses: false,
            nemesis_interval_ms: 200,
            crash_after_vote_prob: 0.0,
            apply_lag_ms: 0,
        }
    }
    pub fn unreliable() -> FaultMix {
        FaultMix {
            drop_prob: 0.1,
            duplicate_prob: 0.05,
            delay_jitter_ms: 20,
            ..FaultMix::none()
        }
    }
    pub fn partitions() -> FaultMix {
        FaultMix {
            partitions: true,
            one_way: true,
            bridge: true,
            ..FaultMix::none()
        }
    }
    pub fn crashes() -> FaultMix {
        FaultMix {
            crashes: true,
            power_cut: true,
            torn_writes: true,
            disk_latency_ms_max: 5,
            ..FaultMix::none()
        }
    }
    pub fn pauses() -> FaultMix {
        FaultMix {
            pauses: true,
            delay_jitter_ms: 5,
            ..FaultMix::none()
        }
    }
    /// Everything at once.
    pub fn chaos() -> FaultMix {
        FaultMix {
            drop_prob: 0.05,
            duplicate_prob: 0.03,
            delay_jitter_ms: 15,
            disk_latency_ms_max: 5,
            partitions: true,
            one_way: true,
            bridge: true,
            crashes: true,
            power_cut: true,
            torn_writes: true,
            pauses: true,
            nemesis_interval_ms: 150,
            crash_after_vote_prob: 0.0,
            apply_lag_ms: 10,
        }
    }
}

/// One simulation's parameters.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub seed: u64,
    pub nodes: usize,
    pub faults: FaultMix,
    /// Adjusts each node's `Config` (snapshot thresholds, bug switches, ...).
    pub tweak: fn(&mut Config),
    pub keys: u64,
    /// Clients give up on a request after this long (its outcome is then unknown).
    pub client_timeout_ms: u64,
    /// Check at send time that votes and acknowledgements are durable (storage rule 8
    /// of docs/RULES.md). The bug-seeding tests turn it off to measure the end-to-end checks alone.
    pub durability_oracle: bool,
}

fn no_tweak(_: &mut Config) {}

impl SimOptions {
    pub fn new(seed: u64, nodes: usize, faults: FaultMix) -> SimOptions {
        SimOptions {
            seed,
            nodes,
            faults,
            tweak: no_tweak,
            keys: 4,
            client_timeout_ms: 400,
            durability_oracle: DURABILITY_ORACLE.with(|d| d.get()),
        }
    }
}

thread_local! {
    static DURABILITY_ORACLE: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Runs `f` with the durability oracle on or off for every `SimOptions` created on this thread
/// (bug seeding measures the end-to-end checks alone with it off).
pub fn with_durability_oracle<R>(on: bool, f: impl FnOnce() -> R) -> R {
    let old = DURABILITY_ORACLE.with(|d| d.replace(on));
    let r = f();
    DURABILITY_ORACLE.with(|d| d.set(old));
    r
}

#[derive(Debug)]
enum Event {
    Tick {
        node: usize,
        generation: u64,
    },
    Deliver(Message),
    DiskDone {
        node: usize,
        epoch: u64,
    },
    SnapshotDone {
        node: usize,
        epoch: u64,
    },
    /// The node's apply stage takes its next few entries.
    ApplyStep {
        node: usize,
        epoch: u64,
    },
    ClientRequest {
        node: usize,
        client: usize,
        op: usize,
        attempt: u32,
        /// (client id, seq, first unacked seq) as sent: a request delayed at a paused node
        /// still carries what the client sent then.
        session: (u64, u64, u64),
    },
    ClientRetry {
        client: usize,
        op: usize,
    },
    ClientReply {
        client: usize,
        op: usize,
        reply: Reply,
    },
    ClientNext {
        client: usize,
    },
    ClientTimeout {
        client: usize,
        op: usize,
        attempt: u32,
    },
    Resume {
        node: usize,
        generation: u64,
    },
    Nemesis,
    Restart {
        node: usize,
    },
}

#[derive(Clone, Debug)]
enum Reply {
    Written,
    Read(Vec<u64>),
    /// The client's session is gone: the outcome is unknown.
    SessionLost,
    /// This attempt was not executed; try this node next (usize::MAX: unknown).
    Redirect(usize, u32),
}

struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we pop the earliest.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// The kind of a client operation in the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Append { key: u64, value: u64 },
    Read { key: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    /// Acknowledged (a read carries the list it saw).
    Ok(Option<Vec<u64>>),
    /// Definitely had no effect.
    Failed,
    /// Timed out: may or may not have taken effect.
    Unknown,
}

/// One client operation, for the end-of-run checks.
#[derive(Clone, Debug)]
pub struct HistoryOp {
    pub client: usize,
    pub kind: OpKind,
    pub invoke_ms: u64,
    pub complete_ms: u64,
    pub outcome: Outcome,
}

struct Client {
    hint: usize,
    /// The operation in progress and its attempt number.
    current: Option<usize>,
    attempt: u32,
    /// Session identity and sequence numbers (exactly-once, thesis §6.3).
    client_id: u64,
    seq: u64,
    /// Sequence number of the write in progress.
    write_seq: u64,
    first_unacked_seq: u64,
    /// Issues one operation and stops (a client that believes in a particular node).
    one_shot: bool,
}

/// Write attempts (the first plus retries with the same sequence number) before a client gives
/// up and records the outcome as unknown.
const WRITE_ATTEMPTS_MAX: u32 = 6;

/// How long a read may wait at a node for leadership confirmation.
const READ_TIMEOUT_MS: u64 = 1000;

struct SimNode {
    /// The production driver over the simulated seams; `None` while the node is down.
    driver: Option<SimDriver>,
    down_store: Option<MemLogStore>,
    epoch: u64,
    tick_gen: u64,
    paused: bool,
    inbox: Vec<Event>,
    last_write_done_ms: u64,
    /// An `ApplyStep` event is pending for this incarnation.
    apply_scheduled: bool,
    /// The last index whose command the state machine applied (or a restored snapshot's).
    last_apply: Index,
    /// What a down node's state machine reads as (empty).
    blank: SimMachine,
    seen_term: Term,
    seen_commit: Index,
    restarts: u64,
}

impl SimNode {
    fn raft(&self) -> Option<&Raft<MemLogStore>> {
        self.driver.as_ref().map(|d| d.raft())
    }
    fn applied(&self) -> Index {
        self.driver.as_ref().map_or(Index::ZERO, |d| d.applied())
    }
    fn sm(&self) -> &SimMachine {
        self.driver
            .as_ref()
            .map_or(&self.blank, |d| &d.state_machine().inner)
    }
}

/// The safety bookkeeping shared by all nodes.
#[derive(Default)]
struct Checker {
    leaders: HashMap<Term, NodeId>,
    /// (index, term) → (content hash, previous entry's term): Raft §5.3 log matching.
    entries: HashMap<(u64, u64), (u64, u64)>,
    /// committed[i] = term of the entry committed at i (Term 0: not known yet).
    committed: Vec<Term>,
    /// commit_term[i] = the term in which index i was first seen committed (the committing
    /// leader's term or later): leader completeness binds leaders of later terms only.
    commit_term: Vec<Term>,
    /// applied[i] = (entry hash, state digest after applying it): state machine safety.
    applied: Vec<Option<(u64, u64)>>,
    elections: u64,
}

fn entry_hash(e: &Entry) -> u64 {
    seams::entry_hash(e.kind, e.data.as_slice())
}

/// The simulator. See the module documentation.
pub struct Sim {
    pub opts: SimOptions,
    now: u64,
    seq: u64,
    rng: ChaCha8Rng,
    events: BinaryHeap<Scheduled>,
    nodes: Vec<SimNode>,
    /// blocked[from][to]: messages from `from` to `to` are lost.
    blocked: Vec<Vec<bool>>,
    drop_prob: f64,
    duplicate_prob: f64,
    delay_jitter_ms: u64,
    nemesis: bool,
    clients: Vec<Client>,
    clients_running: bool,
    history: Vec<HistoryOp>,
    checker: Checker,
    /// Trace of notable events (the last ones are printed with a violation).
    trace: VecDeque<String>,
    /// Messages sent, by kind.
    sent: HashMap<&'static str, u64>,
    rejections: u64,
    crash_after_drive: bool,
    /// `SIM_DEBUG` set: print every message but heartbeats to stderr.
    debug: bool,
}

const TRACE_KEPT: usize = 40;

impl Sim {
    pub fn new(opts: SimOptions) -> Sim {
        let n = opts.nodes;
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let mut sim = Sim {
            now: 0,
            seq: 0,
            events: BinaryHeap::new(),
            nodes: Vec::with_capacity(n),
            blocked: vec![vec![false; n]; n],
            drop_prob: opts.faults.drop_prob,
            duplicate_prob: opts.faults.duplicate_prob,
            delay_jitter_ms: opts.faults.delay_jitter_ms,
            nemesis: false,
            clients: Vec::new(),
            clients_running: false,
            history: Vec::new(),
            checker: Checker {
                committed: vec![Term::ZERO],
                commit_term: vec![Term::ZERO],
                applied: vec![None],
                ..Checker::default()
            },
            trace: VecDeque::new(),
            sent: HashMap::new(),
            rejections: 0,
            crash_after_drive: false,
            debug: std::env::var_os("SIM_DEBUG").is_some(),
            rng: ChaCha8Rng::seed_from_u64(rng.random()),
            opts,
        };
        for i in 0..n {
            sim.nodes.push(SimNode {
                driver: None,
                down_store: Some(MemLogStore::new()),
                epoch: 0,
                tick_gen: 0,
                paused: false,
                inbox: Vec::new(),
                last_write_done_ms: 0,
                apply_scheduled: false,
                last_apply: Index::ZERO,
                blank: machine::new_machine(),
                seen_term: Term::ZERO,
                seen_commit: Index::ZERO,
                restarts: 0,
            });
            sim.start_node(i).expect("a fresh node starts");
        }
        sim
    }

    fn config(&self, i: usize) -> Config {
        let voters = (1..=self.opts.nodes as u64).map(NodeId).collect();
        let mut c = Config::new(NodeId(i as u64 + 1), voters);
        c.snapshot_entries = 0; // scenarios opt in
        c.snapshot_bytes = 0;
        c.max_msg_entries = 64;
        c.max_inflight_bytes = 64 * 1024;
        c.snapshot_chunk_bytes = 256;
        // Three chunks in flight: transfers exercise the window (full, refilled, rewound after
        // lost chunks) rather than sending a small snapshot whole.
        c.snapshot_inflight_bytes = 768;
        c.compaction_retain_entries = 8;
        (self.opts.tweak)(&mut c);
        c
    }

    fn note(&mut self, s: String) {
        if self.trace.len() == TRACE_KEPT {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("[{} ms] {s}", self.now));
    }

    fn schedule(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.events.push(Scheduled {
            at: self.now + delay,
            seq: self.seq,
            event,
        });
    }

    // ------------------------------------------------------------------ public controls

    /// Whether the nodes run with CheckQuorum (their configuration after the tweak).
    pub fn config_check_quorum(&self) -> bool {
        self.config(0).check_quorum
    }

    /// Asks leader `from` to hand leadership to `to` (TimeoutNow, thesis §3.10).
    pub fn transfer_leadership(&mut self, from: usize, to: usize) -> Result<(), Violation> {
        let target = NodeId(to as u64 + 1);
        self.raft_mut(from)
            .transfer_leadership(target)
            .map_err(|e| Violation(format!("transfer to {target} refused: {e}")))?;
        self.drive(from)
    }

    /// How many messages of this kind (`MessageBody::name`) were sent, delivered or not.
    pub fn sent(&self, kind: &str) -> u64 {
        self.sent.get(kind).copied().unwrap_or(0)
    }
    /// AppendEntries rejections sent so far (a measure of log backtracking).
    pub fn append_rejections(&self) -> u64 {
        self.rejections
    }

    pub fn now_ms(&self) -> u64 {
        self.now
    }
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }
    pub fn raft(&self, i: usize) -> Option<&Raft<MemLogStore>> {
        self.nodes[i].raft()
    }
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].driver.is_some()
    }
    pub fn history(&self) -> &[HistoryOp] {
        &self.history
    }
    /// Leaders elected so far (distinct terms).
    pub fn elections(&self) -> u64 {
        self.checker.elections
    }
    pub fn max_term(&self) -> Term {
        self.nodes
            .iter()
            .filter_map(|n| n.raft())
            .map(|r| r.current_term())
            .max()
            .unwrap_or(Term::ZERO)
    }
    pub fn state_machine(&self, i: usize) -> &SimMachine {
        self.nodes[i].sm()
    }
    pub fn applied(&self, i: usize) -> Index {
        self.nodes[i].applied()
    }

    /// The leader with the highest term among running, unpaused nodes, if any.
    pub fn leader(&self) -> Option<usize> {
        let mut best: Option<(Term, usize)> = None;
        for (i, n) in self.nodes.iter().enumerate() {
            if n.paused {
                continue;
            }
            if let Some(r) = n.raft() {
                if r.is_leader() && best.is_none_or(|(t, _)| r.current_term() > t) {
                    best = Some((r.current_term(), i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// Runs until a leader that a majority follows exists, up to `max_ms`.
    pub fn wait_leader(&mut self, max_ms: u64) -> Result<usize, Violation> {
        let deadline = self.now + max_ms;
        while self.now < deadline {
            self.run_for(TICK_MS)?;
            if let Some(l) = self.leader() {
                let term = self.nodes[l].raft().map(|r| r.current_term());
                let followers = self
                    .nodes
                    .iter()
                    .filter(|n| n.raft().is_some_and(|r| Some(r.current_term()) == term))
                    .count();
                if followers > self.opts.nodes / 2 {
                    return Ok(l);
                }
            }
        }
        violation(format!("no leader within {max_ms} ms"))
    }

    pub fn set_network(&mut self, drop_prob: f64, duplicate_prob: f64, delay_jitter_ms: u64) {
        self.drop_prob = drop_prob;
        self.duplicate_prob = duplicate_prob;
        self.delay_jitter_ms = delay_jitter_ms;
    }

    /// Cuts node `i` off from every other node, both directions.
    pub fn disconnect(&mut self, i: usize) {
        for j in 0..self.nodes.len() {
            if i != j {
                self.blocked[i][j] = true;
                self.blocked[j][i] = true;
            }
        }
        self.note(format!("disconnect {}", i + 1));
    }

    pub fn connect(&mut self, i: usize) {
        for j in 0..self.nodes.len() {
            self.blocked[i][j] = false;
            self.blocked[j][i] = false;
        }
        self.note(format!("connect {}", i + 1));
    }

    /// Only nodes in the same group can talk.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        let n = self.nodes.len();
        let group_of = |i: usize| groups.iter().position(|g| g.contains(&i));
        for i in 0..n {
            for j in 0..n {
                self.blocked[i][j] =
                    i != j && (group_of(i).is_none() || group_of(i) != group_of(j));
            }
        }
        let shown: Vec<Vec<usize>> = groups
            .iter()
            .map(|g| g.iter().map(|i| i + 1).collect())
            .collect();
        self.note(format!("partition {shown:?}"));
    }

    /// Blocks or unblocks one direction of one link.
    pub fn set_link(&mut self, from: usize, to: usize, blocked: bool) {
        self.blocked[from][to] = blocked;
    }

    /// `bridge` talks to everyone; the other nodes split into `left` and `right` that only reach
    /// their own side and the bridge.
    pub fn bridge(&mut self, bridge: usize, left: &[usize], right: &[usize]) {
        self.heal_network();
        for &a in left {
            for &b in right {
                self.blocked[a][b] = true;
                self.blocked[b][a] = true;
            }
        }
        let l: Vec<usize> = left.iter().map(|i| i + 1).collect();
        let r: Vec<usize> = right.iter().map(|i| i + 1).collect();
        self.note(format!("bridge {} between {l:?} and {r:?}", bridge + 1));
    }

    pub fn heal_network(&mut self) {
        for row in self.blocked.iter_mut() {
            row.iter_mut().for_each(|b| *b = false);
        }
    }

    /// Crashes node `i`. With `power_cut`, writes not yet durable are lost (a prefix of the first
    /// may survive if the mix allows torn writes); otherwise the process dies but the operating
    /// system still writes out what it was given.
    pub fn crash(&mut self, i: usize, power_cut: bool) {
        let Some(driver) = self.nodes[i].driver.take() else {
            return;
        };
        let (raft, disk, _, _) = driver.into_parts();
        let mut store = raft.into_store();
        let torn = self.opts.faults.torn_writes && self.rng.random_bool(0.5);
        let writes = disk.writes;
        if power_cut {
            if let (true, Some((_, first))) = (torn, writes.front()) {
                // A torn write: a prefix of the entries reached the disk (the record checksums
                // cut the rest), the hard state did not.
                let k = self.rng.random_range(0..=first.entries.len());
                if first.install_snapshot.is_none() && k > 0 {
                    let _ = store.append(&first.entries[..k]);
                }
            }
        } else {
            for (_, w) in &writes {
                w.apply_to(&mut store);
            }
        }
        store.discard_incoming();
        let node = &mut self.nodes[i];
        node.down_store = Some(store);
        node.epoch += 1;
        node.tick_gen += 1;
        node.paused = false;
        node.inbox.clear();
        node.last_apply = Index::ZERO;
        node.apply_scheduled = false;
        self.note(format!("crash {} (power cut: {power_cut})", i + 1));
    }

    /// Restarts a crashed node from its simulated disk.
    pub fn restart(&mut self, i: usize) -> Result<(), Violation> {
        if self.nodes[i].driver.is_some() {
            return Ok(());
        }
        self.note(format!("restart {}", i + 1));
        self.start_node(i)?;
        self.drive(i)
    }

    fn start_node(&mut self, i: usize) -> Result<(), Violation> {
        let cfg = self.config(i);
        let node = &mut self.nodes[i];
        let store = node.down_store.take().expect("a down node has its store");
        if let Err(e) = store.check_no_hole() {
            return violation(format!("node {} restarted with a damaged log: {e}", i + 1));
        }
        let hs = store.hard_state;
        if hs.current_term < node.seen_term.min(hs.current_term) {
            return violation("durable term went backwards");
        }
        node.restarts += 1;
        let seed = self.opts.seed ^ ((i as u64 + 1) << 48) ^ node.restarts;
        let raft = Raft::new(cfg, store, hs, seed)
            .map_err(|e| Violation(format!("node {} failed to restart: {e}", i + 1)))?;
        node.seen_term = raft.current_term();
        node.seen_commit = Index::ZERO;
        let net = SimNet::default();
        let sm = CheckedMachine::new();
        let mut driver = Driver::new(raft, SimDisk::default(), net, sm, READ_TIMEOUT_MS);
        driver.set_apply_inline(self.opts.faults.apply_lag_ms == 0);
        node.driver = Some(driver);
        node.tick_gen += 1;
        let generation = node.tick_gen;
        let phase = self.rng.random_range(1..=TICK_MS);
        self.schedule(
            phase,
            Event::Tick {
                node: i,
                generation,
            },
        );
        Ok(())
    }

    /// Stops node `i` from running for `ms` (SIGSTOP): its timers do not fire and its inputs
    /// queue up; on resume it sees them in an arbitrary order.
    pub fn pause(&mut self, i: usize, ms: u64) {
        if self.nodes[i].driver.is_none() || self.nodes[i].paused {
            return;
        }
        self.nodes[i].paused = true;
        self.nodes[i].tick_gen += 1;
        let generation = self.nodes[i].tick_gen;
        self.schedule(
            ms,
            Event::Resume {
                node: i,
                generation,
            },
        );
        self.note(format!("pause {} for {ms} ms", i + 1));
    }

    fn resume(&mut self, i: usize) -> Result<(), Violation> {
        let node = &mut self.nodes[i];
        if !node.paused {
            return Ok(());
        }
        node.paused = false;
        node.tick_gen += 1;
        let generation = node.tick_gen;
        let mut inbox = std::mem::take(&mut node.inbox);
        inbox.retain(|e| !matches!(e, Event::Tick { .. }));
        inbox.shuffle(&mut self.rng);
        if self.rng.random_bool(0.5) {
            // Sometimes the client ring is polled first: requests that arrived during the pause
            // meet the node's stale view of the cluster (fault-matrix row C2 of docs/FAULTS.md).
            inbox.sort_by_key(|e| !matches!(e, Event::ClientRequest { .. }));
        }
        self.note(format!(
            "resume {} with {} queued inputs",
            i + 1,
            inbox.len()
        ));
        // The stopped process's timer fires once on resume.
        self.handle(Event::Tick {
            node: i,
            generation,
        })?;
        for e in inbox {
            self.handle(e)?;
        }
        Ok(())
    }

    /// Proposes `data` directly at node `i` (no client).
    pub fn propose(&mut self, i: usize, data: Vec<u8>) -> Result<ProposalId, ProposeError> {
        if self.nodes[i].paused {
            return Err(ProposeError::NotLeader {
                leader_hint: NodeId::ZERO,
            });
        }
        let Some(driver) = self.nodes[i].driver.as_mut() else {
            return Err(ProposeError::NotLeader {
                leader_hint: NodeId::ZERO,
            });
        };
        let r = driver.raft_mut().propose(Payload::new(data));
        if r.is_ok() {
            // A proposal is handed to the disk and network in the same loop iteration.
            let _ = self.drive(i);
        }
        r
    }

    /// How many running nodes have applied index `i`, and the command they agree on.
    pub fn n_committed(&self, index: Index) -> (usize, Option<Payload>) {
        let mut count = 0;
        let mut cmd = None;
        for n in &self.nodes {
            let Some(r) = n.raft() else { continue };
            if n.applied() >= index && r.commit_index() >= index {
                count += 1;
                if cmd.is_none() {
                    let mut v = Vec::new();
                    if r.entries(index, index.next(), u64::MAX, &mut v).is_ok() {
                        cmd = v.pop().map(|e| e.data);
                    }
                }
            }
        }
        (count, cmd)
    }

    /// Like the 6.824 tester's `one()`: keeps proposing `data` at whichever node is leader until
    /// it is applied on at least `expected` nodes; gives up after `max_ms`.
    pub fn one(&mut self, data: Vec<u8>, expected: usize, max_ms: u64) -> Result<Index, Violation> {
        let deadline = self.now + max_ms;
        while self.now < deadline {
            let mut proposed = None;
            for i in 0..self.nodes.len() {
                if let Ok(pid) = self.propose(i, data.clone()) {
                    proposed = Some(pid);
                    break;
                }
            }
            if let Some(pid) = proposed {
                let until = (self.now + 2000).min(deadline);
                while self.now < until {
                    self.run_for(TICK_MS)?;
                    let (n, cmd) = self.n_committed(pid.index);
                    if n >= expected && cmd.as_ref().map(|c| c.as_slice()) == Some(data.as_slice())
                    {
                        return Ok(pid.index);
                    }
                    if cmd.is_some() && cmd.as_ref().map(|c| c.as_slice()) != Some(data.as_slice())
                    {
                        break; // another entry won that index: propose again
                    }
                }
            } else {
                self.run_for(5 * TICK_MS)?;
            }
        }
        violation(format!(
            "one({} bytes) did not reach {expected} nodes within {max_ms} ms",
            data.len()
        ))
    }

    /// Starts `n` clients issuing appends and reads against whoever they think leads.
    pub fn start_clients(&mut self, n: usize) {
        self.clients_running = true;
        for c in 0..n {
            let hint = self.rng.random_range(0..self.nodes.len());
            self.clients.push(Client {
                hint,
                current: None,
                attempt: 0,
                client_id: c as u64 + 1,
                seq: 0,
                write_seq: 0,
                first_unacked_seq: 1,
                one_shot: false,
            });
            let d = self.rng.random_range(1..20);
            self.schedule(d, Event::ClientNext { client: c });
        }
    }

    pub fn stop_clients(&mut self) {
        self.clients_running = false;
    }

    pub fn set_nemesis(&mut self, on: bool) {
        if on && !self.nemesis {
            let d = self.opts.faults.nemesis_interval_ms;
            self.schedule(d, Event::Nemesis);
        }
        self.nemesis = on;
    }

    /// Ends every fault: network healed and reliable, paused nodes resumed, crashed nodes
    /// restarted.
    pub fn heal(&mut self) -> Result<(), Violation> {
        self.set_nemesis(false);
        self.heal_network();
        self.drop_prob = 0.0;
        self.duplicate_prob = 0.0;
        self.note("heal".into());
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused {
                self.resume(i)?;
            }
            if self.nodes[i].driver.is_none() {
                self.restart(i)?;
            }
        }
        Ok(())
    }

    /// Processes events for `ms` virtual milliseconds, checking after every one.
    pub fn run_for(&mut self, ms: u64) -> Result<(), Violation> {
        let until = self.now + ms;
        while let Some(top) = self.events.peek() {
            if top.at > until {
                break;
            }
            let Scheduled { at, event, .. } = self.events.pop().expect("peeked");
            self.now = at;
            self.handle(event)?;
        }
        self.now = until;
        Ok(())
    }

    // ------------------------------------------------------------------ event handling

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        let node_of = |e: &Event| match e {
            Event::Tick { node, .. }
            | Event::DiskDone { node, .. }
            | Event::SnapshotDone { node, .. }
            | Event::ApplyStep { node, .. }
            | Event::ClientRequest { node, .. } => Some(*node),
            Event::Deliver(m) => Some(m.to.0 as usize - 1),
            _ => None,
        };
        if let Some(i) = node_of(&event) {
            if self.nodes[i].driver.is_none() {
                return Ok(()); // crashed: inputs are lost
            }
            if self.nodes[i].paused && !matches!(event, Event::Tick { .. }) {
                self.nodes[i].inbox.push(event);
                return Ok(());
            }
        }
        match event {
            Event::Tick { node, generation } => {
                if generation != self.nodes[node].tick_gen || self.nodes[node].paused {
                    return Ok(());
                }
                let now = self.now;
                let d = self.driver_mut(node);
                d.net_mut().now = now;
                d.tick(1);
                self.schedule(TICK_MS, Event::Tick { node, generation });
                self.drive(node)
            }
            Event::Deliver(m) => {
                let i = m.to.0 as usize - 1;
                if let Err(e) = self.driver_mut(i).step(m) {
                    return violation(format!("node {} refused a well-formed message: {e}", i + 1));
                }
                self.drive(i)
            }
            Event::DiskDone { node, epoch } => {
                if epoch != self.nodes[node].epoch {
                    return Ok(());
                }
                self.complete_write(node)
            }
            Event::SnapshotDone { node, epoch } => {
                if epoch != self.nodes[node].epoch {
                    return Ok(());
                }
                let (_, disk) = self.driver_mut(node).raft_and_disk_mut();
                disk.complete_snapshot();
                self.drive(node)
            }
            Event::ApplyStep { node, epoch } => {
                if epoch != self.nodes[node].epoch {
                    return Ok(());
                }
                self.nodes[node].apply_scheduled = false;
                let k = self.rng.random_range(1..=4);
                if let Err(e) = self.driver_mut(node).apply_step(k) {
                    return violation(format!("node {}: the apply stage stopped: {e}", node + 1));
                }
                self.drive(node)
            }
            Event::ClientRequest {
                node,
                client,
                op,
                attempt,
                session,
            } => self.client_request(node, client, op, attempt, session),
            Event::ClientRetry { client, op } => {
                if self.clients[client].current == Some(op) {
                    self.send_attempt(client, op);
                }
                Ok(())
            }
            Event::ClientReply { client, op, reply } => {
                self.client_reply(client, op, reply);
                Ok(())
            }
            Event::ClientNext { client } => {
                self.client_next(client);
                Ok(())
            }
            Event::ClientTimeout {
                client,
                op,
                attempt,
            } => {
                if self.clients[client].current == Some(op)
                    && self.clients[client].attempt == attempt
                {
                    self.client_retry_or_give_up(client, op, usize::MAX);
                }
                Ok(())
            }
            Event::Resume { node, generation } => {
                if self.nodes[node].tick_gen != generation {
                    return Ok(());
                }
                self.resume(node)
            }
            Event::Restart { node } => self.restart(node),
            Event::Nemesis => {
                if !self.nemesis {
                    return Ok(());
                }
                self.nemesis_step()?;
                let mean = self.opts.faults.nemesis_interval_ms;
                let d = self.rng.random_range(mean / 2..=mean * 3 / 2).max(1);
                self.schedule(d, Event::Nemesis);
                Ok(())
            }
        }
    }

    fn raft_mut(&mut self, i: usize) -> &mut Raft<MemLogStore> {
        self.driver_mut(i).raft_mut()
    }

    fn driver_mut(&mut self, i: usize) -> &mut SimDriver {
        self.nodes[i].driver.as_mut().expect("node is up")
    }

    fn send(&mut self, m: Message) {
        if self.debug {
            match &m.body {
                MessageBody::AppendEntries { entries, .. } if entries.is_empty() => {}
                MessageBody::Heartbeat { .. } | MessageBody::HeartbeatResponse { .. } => {}
                _ => eprintln!(
                    "[{} ms] {} -> {} t{} {:?}",
                    self.now,
                    m.from,
                    m.to,
                    m.term,
                    crate::sim::debug_body(&m.body)
                ),
            }
        }
        *self.sent.entry(m.body.name()).or_insert(0) += 1;
        if let MessageBody::AppendEntriesResponse { success: false, .. } = m.body {
            self.rejections += 1;
        }
        let (from, to) = (m.from.0 as usize - 1, m.to.0 as usize - 1);
        if self.blocked[from][to] {
            return;
        }
        if self.drop_prob > 0.0 && self.rng.random_bool(self.drop_prob) {
            return;
        }
        if self.duplicate_prob > 0.0 && self.rng.random_bool(self.duplicate_prob) {
            let d = 1 + self.rng.random_range(0..=self.delay_jitter_ms);
            self.schedule(d, Event::Deliver(m.clone()));
        }
        let d = 1 + self.rng.random_range(0..=self.delay_jitter_ms);
        self.schedule(d, Event::Deliver(m));
    }

    /// The durability oracle (storage rule 8 of docs/RULES.md): a vote or acknowledgement leaves a
    /// node only when what it vouches for is on the node's simulated disk.
    fn check_outgoing(&self, i: usize, m: &Message) -> Result<(), Violation> {
        let Some(raft) = self.nodes[i].raft() else {
            return Ok(());
        };
        if !self.opts.durability_oracle {
            return Ok(());
        }
        let store = raft.store();
        match &m.body {
            MessageBody::RequestVoteResponse {
                pre_vote: false,
                vote_granted: true,
            } => {
                let hs = store.hard_state;
                if hs.current_term != m.term || hs.voted_for != m.to {
                    return violation(format!(
                        "node {} granted its vote to {} in term {} before it was durable (disk has term {}, vote {})",
                        i + 1,
                        m.to,
                        m.term,
                        hs.current_term,
                        hs.voted_for
                    ));
                }
            }
            MessageBody::AppendEntriesResponse {
                success: true,
                match_index,
                ..
            } => {
                let on_disk = store.term(*match_index).ok();
                // An acknowledgement generated in an earlier term describes the log as it was
                // then (a later leader may have replaced entries since, not yet durably): it
                // only needs the disk to reach that far.
                // Messages are checked at the end of the driver's step: if the core gave the
                // index up within the step (a received snapshot replacing the log), the disk
                // only needs to reach that far.
                let in_log = if m.term == raft.current_term() {
                    raft.term_of(*match_index).ok().or(on_disk)
                } else {
                    on_disk
                };
                let covered = *match_index <= store.snapshot_meta().last_included_index;
                if !covered && (on_disk.is_none() || on_disk != in_log) {
                    return violation(format!(
                        "node {} acknowledged entries up to {} before they were durable (disk: {:?}, log: {:?})",
                        i + 1,
                        match_index,
                        on_disk,
                        in_log
                    ));
                }
            }
            MessageBody::InstallSnapshotResponse {
                snapshot_index,
                done: true,
                ..
            } => {
                let held = store.snapshot_meta().last_included_index >= *snapshot_index
                    || store.term(*snapshot_index).is_ok();
                if !held {
                    return violation(format!(
                        "node {} confirmed snapshot {} before it was durable",
                        i + 1,
                        snapshot_index
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The oldest write on node `i`'s simulated disk completes: the store holds it now, and the
    /// driver may send what waited for it.
    fn complete_write(&mut self, i: usize) -> Result<(), Violation> {
        let (raft, disk) = self.driver_mut(i).raft_and_disk_mut();
        let store = raft.store_mut();
        let Some(first) = disk.writes.front().and_then(|(_, w)| w.entries.first()) else {
            disk.complete_one(store);
            return self.drive(i);
        };
        let prev_term = store.term(first.index.prev()).ok();
        let w = disk.complete_one(store).expect("front checked");
        self.check_new_entries(&w.entries, prev_term, i)?;
        self.drive(i)
    }

    /// Steps node `i`'s driver (the production `Driver::process`: drain every `Ready`,
    /// complete durable persists and snapshots), then takes what it sent, checks it and puts it
    /// on the simulated network, schedules its disk writes, and checks the node.
    fn drive(&mut self, i: usize) -> Result<(), Violation> {
        let now = self.now;
        let Some(d) = self.nodes[i].driver.as_mut() else {
            return Ok(());
        };
        d.net_mut().now = now;
        if let Err(e) = d.process() {
            return violation(format!("node {}: the driver stopped: {e}", i + 1));
        }
        let out = std::mem::take(&mut d.net_mut().out);
        let replies = std::mem::take(&mut d.net_mut().replies);
        let records = std::mem::take(&mut d.state_machine_mut().records);
        let (_, disk) = d.raft_and_disk_mut();
        let writes = std::mem::take(&mut disk.unscheduled);
        let snapshot = std::mem::take(&mut disk.snapshot_unscheduled);
        self.schedule_disk(i, writes, snapshot);
        for m in &out {
            self.check_outgoing(i, m)?;
        }
        for m in out {
            self.note_vote(i, &m);
            self.send(m);
        }
        for (client, f) in replies {
            self.reply_to_client(i, client, f);
        }
        self.check_applies(i, &records)?;
        self.check_node(i)?;
        self.schedule_apply(i);
        if std::mem::take(&mut self.crash_after_drive) && self.nodes[i].driver.is_some() {
            self.crash(i, true);
            let d = self.rng.random_range(1..=5);
            self.schedule(d, Event::Restart { node: i });
        }
        Ok(())
    }

    /// Draws the latency of each new write (completing in order) and of a new local snapshot.
    fn schedule_disk(&mut self, i: usize, writes: usize, snapshot: bool) {
        let epoch = self.nodes[i].epoch;
        for _ in 0..writes {
            let lat = self
                .rng
                .random_range(0..=self.opts.faults.disk_latency_ms_max);
            let node = &mut self.nodes[i];
            let done = (self.now + lat).max(node.last_write_done_ms);
            node.last_write_done_ms = done;
            self.schedule(done - self.now, Event::DiskDone { node: i, epoch });
        }
        if snapshot {
            let lat = 1 + self
                .rng
                .random_range(0..=self.opts.faults.disk_latency_ms_max * 4);
            self.schedule(lat, Event::SnapshotDone { node: i, epoch });
        }
    }

    /// Steps node `i`'s apply stage again soon while it has a backlog (lagging apply).
    fn schedule_apply(&mut self, i: usize) {
        let node = &self.nodes[i];
        let backlog = node.driver.as_ref().map_or(0, |d| d.apply_backlog());
        if backlog == 0 || node.apply_scheduled {
            return;
        }
        let epoch = node.epoch;
        self.nodes[i].apply_scheduled = true;
        let d = self.rng.random_range(0..=self.opts.faults.apply_lag_ms);
        self.schedule(d, Event::ApplyStep { node: i, epoch });
    }

    fn note_vote(&mut self, _i: usize, m: &Message) {
        let p = self.opts.faults.crash_after_vote_prob;
        if p > 0.0
            && matches!(
                m.body,
                MessageBody::RequestVoteResponse {
                    pre_vote: false,
                    vote_granted: true
                }
            )
            && self.rng.random_bool(p)
        {
            self.crash_after_drive = true;
        }
    }

    /// State machine safety over what node `i`'s driver did to its state machine: commands
    /// applied in increasing index order (never twice), the same command and the same state as
    /// every other node at each index, and a restored snapshot equal to the state applied there.
    fn check_applies(&mut self, i: usize, records: &[ApplyRecord]) -> Result<(), Violation> {
        for r in records {
            match *r {
                ApplyRecord::Applied {
                    index,
                    hash,
                    digest,
                } => {
                    let last = self.nodes[i].last_apply;
                    if index <= last {
                        return violation(format!(
                            "node {} applied {index} after {last}: an entry applied twice or out of order",
                            i + 1
                        ));
                    }
                    self.nodes[i].last_apply = index;
                    let idx = index.0 as usize;
                    if self.checker.applied.len() <= idx {
                        self.checker.applied.resize(idx + 1, None);
                    }
                    match self.checker.applied[idx] {
                        None => self.checker.applied[idx] = Some((hash, digest)),
                        Some((h0, d0)) if h0 != hash || d0 != digest => {
                            return violation(format!(
                                "state machine safety: node {} applied a different command or reached a different state at index {idx}",
                                i + 1
                            ));
                        }
                        Some(_) => {}
                    }
                }
                ApplyRecord::Restored { digest } => {
                    let raft = self.nodes[i].raft().expect("up");
                    let at = raft.store().snapshot_meta().last_included_index;
                    self.nodes[i].last_apply = at;
                    if let Some(Some((_, d))) = self.checker.applied.get(at.0 as usize) {
                        if *d != digest {
                            return violation(format!(
                                "state machine safety: node {} restored a snapshot at {at} whose state differs from what was applied there",
                                i + 1
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Turns node `i`'s answer to a client into the client's view of it.
    fn reply_to_client(&mut self, i: usize, client: usize, f: ServerFrame) {
        let (op, attempt) = decode_req_id(f.req_id());
        let reply = match f {
            ServerFrame::Ok { result, .. } => match self.history[op].kind {
                OpKind::Append { .. } => match machine::decode_write_result(&result) {
                    machine::WriteResult::Done => Reply::Written,
                    machine::WriteResult::SessionLost => Reply::SessionLost,
                    machine::WriteResult::NotApplied => Reply::Redirect(usize::MAX, attempt),
                },
                OpKind::Read { .. } => Reply::Read(machine::decode_read(&result)),
            },
            ServerFrame::NotLeader { leader_hint, .. } => {
                let to = leader_hint.0 as usize;
                let to = if to == 0 || to - 1 == i {
                    usize::MAX
                } else {
                    to - 1
                };
                Reply::Redirect(to, attempt)
            }
            ServerFrame::Retry { .. } | ServerFrame::Error { .. } => {
                Reply::Redirect(usize::MAX, attempt)
            }
        };
        let d = 1 + self.rng.random_range(0..=2);
        self.schedule(d, Event::ClientReply { client, op, reply });
    }

    /// Log matching (Raft §5.3): an (index, term) pair names one entry and one predecessor.
    /// Checked when a write reaches the disk: `prev_term` is the term the disk holds just
    /// before the write's first entry (`None`: not known, the write is not checked).
    fn check_new_entries(
        &mut self,
        entries: &[Entry],
        prev_term: Option<Term>,
        i: usize,
    ) -> Result<(), Violation> {
        let Some(mut prev_term) = prev_term.map(|t| t.0) else {
            return Ok(());
        };
        for e in entries {
            let key = (e.index.0, e.term.0);
            let val = (entry_hash(e), prev_term);
            match self.checker.entries.get(&key) {
                None => {
                    self.checker.entries.insert(key, val);
                }
                Some(v) if *v == val => {}
                Some(_) => {
                    return violation(format!(
                        "log matching: node {} holds a different entry (or predecessor) at index {} term {}",
                        i + 1,
                        e.index,
                        e.term
                    ));
                }
            }
            prev_term = e.term.0;
        }
        Ok(())
    }

    /// Per-node and cross-node safety checks after node `i` changed.
    fn check_node(&mut self, i: usize) -> Result<(), Violation> {
        let node = &self.nodes[i];
        let Some(raft) = node.raft() else {
            return Ok(());
        };
        raft.check_invariants().map_err(Violation)?;
        let st = raft.status();
        if st.current_term < node.seen_term {
            return violation(format!(
                "node {}: term went back from {} to {}",
                i + 1,
                node.seen_term,
                st.current_term
            ));
        }
        if st.commit_index < node.seen_commit {
            return violation(format!(
                "node {}: commit index went back from {} to {}",
                i + 1,
                node.seen_commit,
                st.commit_index
            ));
        }
        // Commit: every node agrees on the term of each committed index.
        let mut idx = node.seen_commit.next();
        while idx <= st.commit_index {
            if let Ok(t) = raft.term_of(idx) {
                let k = idx.0 as usize;
                if self.checker.committed.len() <= k {
                    self.checker.committed.resize(k + 1, Term::ZERO);
                    self.checker.commit_term.resize(k + 1, Term::ZERO);
                }
                let c = &mut self.checker.committed[k];
                if *c == Term::ZERO {
                    *c = t;
                    self.checker.commit_term[k] = st.current_term;
                } else if *c != t {
                    return violation(format!(
                        "state machine safety: node {} committed term {t} at index {idx}, another node term {c}",
                        i + 1
                    ));
                }
            }
            idx = idx.next();
        }
        if st.role == RoleKind::Leader {
            match self.checker.leaders.get(&st.current_term) {
                Some(&l) if l != st.id => {
                    return violation(format!(
                        "two leaders in term {}: {} and {}",
                        st.current_term, l, st.id
                    ));
                }
                Some(_) => {}
                None => {
                    self.checker.leaders.insert(st.current_term, st.id);
                    self.checker.elections += 1;
                    // Leader completeness (Raft §5.4): the new leader of term T holds every
                    // entry committed in an earlier term. (A leader of an older term may still
                    // appear later in time, e.g. a paused candidate counting votes granted
                    // before the pause; entries committed in later terms are not its concern.)
                    // Log matching makes the last such entry enough.
                    let mut c = self.checker.committed.len() - 1;
                    while c > 0 {
                        let t = self.checker.commit_term[c];
                        if t != Term::ZERO && t < st.current_term {
                            break;
                        }
                        c -= 1;
                    }
                    let c = Index(c as u64);
                    if c > Index::ZERO && c >= st.first_index {
                        let want = self.checker.committed[c.0 as usize];
                        let has = raft.term_of(c);
                        if has.as_ref().ok() != Some(&want) {
                            return violation(format!(
                                "leader completeness: node {} leads term {} without committed entry {c} (term {want}; it has {has:?})",
                                i + 1,
                                st.current_term
                            ));
                        }
                    }
                }
            }
        }
        let node = &mut self.nodes[i];
        node.seen_term = st.current_term;
        node.seen_commit = st.commit_index;
        Ok(())
    }

    // ------------------------------------------------------------------ clients

    fn client_next(&mut self, c: usize) {
        if !self.clients_running || self.clients[c].current.is_some() || self.clients[c].one_shot {
            return;
        }
        let key = self.rng.random_range(0..self.opts.keys);
        let kind = if self.rng.random_bool(0.6) {
            let cl = &mut self.clients[c];
            cl.seq += 1;
            cl.write_seq = cl.seq;
            // Values are unique across the run (op number), so a duplicate is always a bug.
            OpKind::Append {
                key,
                value: ((c as u64 + 1) << 32) | self.history.len() as u64,
            }
        } else {
            OpKind::Read { key }
        };
        self.begin_op(c, kind);
    }

    fn begin_op(&mut self, c: usize, kind: OpKind) {
        let op = self.history.len();
        self.history.push(HistoryOp {
            client: c,
            kind,
            invoke_ms: self.now,
            complete_ms: 0,
            outcome: Outcome::Pending,
        });
        self.clients[c].current = Some(op);
        self.clients[c].attempt = 0;
        self.send_attempt(c, op);
    }

    fn send_attempt(&mut self, c: usize, op: usize) {
        let node = self.clients[c].hint;
        let cl = &self.clients[c];
        let attempt = cl.attempt;
        let session = (cl.client_id, cl.write_seq, cl.first_unacked_seq);
        self.schedule(
            1,
            Event::ClientRequest {
                node,
                client: c,
                op,
                attempt,
                session,
            },
        );
        let t = self.opts.client_timeout_ms;
        self.schedule(
            t,
            Event::ClientTimeout {
                client: c,
                op,
                attempt,
            },
        );
    }

    /// A client that believes node `node` leads reads `key` there once (the stale-leader case of
    /// fault-matrix row C2 of docs/FAULTS.md). Returns the operation's index in the history.
    pub fn read_from(&mut self, node: usize, key: u64) -> usize {
        let c = self.clients.len();
        self.clients.push(Client {
            hint: node,
            current: None,
            attempt: 0,
            client_id: 1_000_000 + c as u64,
            seq: 0,
            write_seq: 0,
            first_unacked_seq: 1,
            one_shot: true,
        });
        self.begin_op(c, OpKind::Read { key });
        c
    }

    fn client_request(
        &mut self,
        i: usize,
        client: usize,
        op: usize,
        attempt: u32,
        (client_id, seq, first_unacked): (u64, u64, u64),
    ) -> Result<(), Violation> {
        let kind = self.history[op].kind;
        let req_id = encode_req_id(op, attempt);
        let now = self.now;
        let driver = self.driver_mut(i);
        driver.net_mut().now = now;
        match kind {
            OpKind::Append { key, value } => {
                let mut req = machine::append_request(client_id, seq, first_unacked, key, value);
                machine::stamp(&mut req, now);
                driver.propose_writes(vec![(client, req_id, Ok(Payload::new(req)))]);
            }
            OpKind::Read { key } => {
                driver.start_reads(vec![(client, req_id, machine::read_query(key))]);
            }
        }
        self.drive(i)
    }

    fn client_reply(&mut self, client: usize, op: usize, reply: Reply) {
        if self.clients[client].current != Some(op) {
            return; // a late answer to an operation that ended
        }
        match reply {
            Reply::Written => {
                let h = &mut self.history[op];
                h.complete_ms = self.now;
                h.outcome = Outcome::Ok(None);
                let cl = &mut self.clients[client];
                cl.first_unacked_seq = cl.write_seq + 1;
                self.end_op(client, 1, 5);
            }
            Reply::Read(list) => {
                let h = &mut self.history[op];
                h.complete_ms = self.now;
                h.outcome = Outcome::Ok(Some(list));
                self.end_op(client, 1, 5);
            }
            Reply::SessionLost => {
                // Outcome unknown; continue under a new identity.
                let h = &mut self.history[op];
                h.complete_ms = self.now;
                h.outcome = Outcome::Unknown;
                let cl = &mut self.clients[client];
                cl.client_id += 1 << 40;
                cl.seq = 0;
                cl.first_unacked_seq = 1;
                self.end_op(client, 5, 20);
            }
            Reply::Redirect(to, attempt) => {
                if self.clients[client].attempt == attempt {
                    self.client_retry_or_give_up(client, op, to);
                }
            }
        }
    }

    /// After a redirect or a timeout: a write is retried with the same sequence number (the
    /// session makes the retry exactly-once) up to `WRITE_ATTEMPTS_MAX` attempts; a read ends.
    fn client_retry_or_give_up(&mut self, client: usize, op: usize, to: usize) {
        let n = self.nodes.len();
        self.clients[client].hint = if to == usize::MAX {
            self.rng.random_range(0..n)
        } else {
            to
        };
        let is_write = matches!(self.history[op].kind, OpKind::Append { .. });
        let cl = &mut self.clients[client];
        if is_write && cl.attempt + 1 < WRITE_ATTEMPTS_MAX {
            cl.attempt += 1;
            let d = self.rng.random_range(5..20);
            self.schedule(d, Event::ClientRetry { client, op });
            return;
        }
        let h = &mut self.history[op];
        h.complete_ms = self.now;
        h.outcome = if is_write {
            Outcome::Unknown
        } else {
            Outcome::Failed
        };
        self.end_op(client, 5, 20);
    }

    fn end_op(&mut self, client: usize, lo: u64, hi: u64) {
        self.clients[client].current = None;
        let think = self.rng.random_range(lo..hi);
        self.schedule(think, Event::ClientNext { client });
    }

    /// The history in the JSON-lines model of `history.rs`, for the linearizability checker.
    pub fn history_operations(&self) -> Vec<crate::history::Operation> {
        let mut out = Vec::new();
        for h in &self.history {
            let (kind, key, value, output) = match (&h.kind, &h.outcome) {
                (_, Outcome::Failed) | (_, Outcome::Pending) => continue,
                (OpKind::Read { .. }, Outcome::Unknown) => continue,
                (OpKind::Append { key, value }, _) => (
                    crate::history::OpKind::Append,
                    *key,
                    machine::token(*value),
                    String::new(),
                ),
                (OpKind::Read { key }, Outcome::Ok(Some(list))) => (
                    crate::history::OpKind::Get,
                    *key,
                    String::new(),
                    list.iter().map(|v| machine::token(*v)).collect(),
                ),
                (OpKind::Read { .. }, Outcome::Ok(None)) => continue,
            };
            let ok = matches!(h.outcome, Outcome::Ok(_));
            out.push(crate::history::Operation {
                client: h.client as u64,
                kind,
                key: machine::key_name(key),
                value,
                output,
                // ms to ns; a completion in the same ms as the call still returns after it.
                call: h.invoke_ms * 1_000_000,
                ret: if ok {
                    Some(h.complete_ms * 1_000_000 + 1)
                } else {
                    None
                },
                ok,
            });
        }
        out
    }

    // ------------------------------------------------------------------ nemesis

    fn nemesis_step(&mut self) -> Result<(), Violation> {
        let f = self.opts.faults.clone();
        let n = self.nodes.len();
        let mut actions: Vec<u8> = Vec::new();
        if f.partitions {
            actions.extend([0, 0, 1, 9]);
        }
        if f.one_way {
            actions.push(2);
        }
        if f.bridge && n >= 3 {
            actions.push(3);
        }
        if f.crashes {
            actions.extend([4, 4, 5, 5, 6]);
        }
        if f.pauses {
            actions.extend([7, 7, 8]);
        }
        let Some(&a) = actions.choose(&mut self.rng) else {
            return Ok(());
        };
        let leader = self.leader();
        let pick_leader_or_any = |s: &mut Sim| match leader {
            Some(l) if s.rng.random_bool(0.5) => l,
            _ => s.rng.random_range(0..n),
        };
        match a {
            0 => {
                let mut ids: Vec<usize> = (0..n).collect();
                ids.shuffle(&mut self.rng);
                let k = self.rng.random_range(1..n);
                let (a, b) = ids.split_at(k);
                let (a, b) = (a.to_vec(), b.to_vec());
                self.partition(&[&a, &b]);
            }
            1 => {
                let i = pick_leader_or_any(self);
                self.disconnect(i);
            }
            2 => {
                let from = self.rng.random_range(0..n);
                let to = self.rng.random_range(0..n);
                if from != to {
                    self.set_link(from, to, true);
                    self.note(format!("block {} -> {}", from + 1, to + 1));
                }
            }
            3 => {
                let mut ids: Vec<usize> = (0..n).collect();
                ids.shuffle(&mut self.rng);
                let b = ids.pop().expect("n >= 3");
                let k = self.rng.random_range(1..ids.len());
                let (l, r) = ids.split_at(k);
                let (l, r) = (l.to_vec(), r.to_vec());
                self.bridge(b, &l, &r);
            }
            4 => {
                let i = pick_leader_or_any(self);
                self.crash(i, f.power_cut);
            }
            5 | 6 => {
                let down: Vec<usize> = (0..n).filter(|&i| self.nodes[i].driver.is_none()).collect();
                if let Some(&i) = down.choose(&mut self.rng) {
                    self.restart(i)?;
                }
            }
            7 => {
                let i = pick_leader_or_any(self);
                let ms = self.rng.random_range(100..600);
                self.pause(i, ms);
            }
            _ => {
                self.heal_network();
                self.note("heal network".into());
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------ end-of-run checks

    /// Heals everything, waits for progress (a client write invoked after the heal must succeed
    /// within `progress_bound_ms`), lets every node catch up, then checks the history, the
    /// acknowledged writes and the digests.
    pub fn heal_and_check(&mut self, progress_bound_ms: u64) -> Result<(), Violation> {
        self.heal()?;
        let healed = self.now;
        if !self.clients_running {
            self.start_clients(2);
        }
        let deadline = healed + progress_bound_ms;
        loop {
            self.run_for(TICK_MS)?;
            let progressed = self.history.iter().any(|h| {
                h.invoke_ms >= healed
                    && matches!(h.kind, OpKind::Append { .. })
                    && h.outcome == Outcome::Ok(None)
            });
            if progressed {
                break;
            }
            if self.now >= deadline {
                return violation(format!(
                    "no progress: no write succeeded within {progress_bound_ms} ms ({} ticks) after the faults healed",
                    progress_bound_ms / TICK_MS
                ));
            }
        }
        self.stop_clients();
        // Let outstanding requests finish and every node apply everything committed.
        let settle_deadline = self.now + 5000;
        loop {
            self.run_for(5 * TICK_MS)?;
            let max_commit = self
                .nodes
                .iter()
                .filter_map(|n| n.raft())
                .map(|r| r.commit_index())
                .max();
            let all = self.nodes.iter().all(|n| Some(n.applied()) == max_commit);
            let idle = self.clients.iter().all(|c| c.current.is_none());
            if all && idle {
                break;
            }
            if self.now >= settle_deadline {
                let applied: Vec<Index> = self.nodes.iter().map(|n| n.applied()).collect();
                return violation(format!(
                    "nodes did not converge after healing: applied {applied:?}, max commit {max_commit:?}"
                ));
            }
        }
        self.final_checks()
    }

    /// Checks on the final state: equal digests, every acknowledged write present exactly once,
    /// no write applied twice (exactly-once sessions, fault-matrix row C6 of docs/FAULTS.md), the
    /// reads in the history (quick checks: no stale read, no phantom), then the whole history with
    /// the linearizability checker (`lincheck`).
    pub fn final_checks(&self) -> Result<(), Violation> {
        let d0 = self.nodes[0].sm().digest();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.sm().digest() != d0 {
                return violation(format!(
                    "state machine digests differ after healing: node 1 vs node {}",
                    i + 1
                ));
            }
        }
        let sm = self.nodes[0].sm();
        let finals: Vec<Vec<u64>> = (0..self.opts.keys).map(|k| machine::read(sm, k)).collect();
        for (k, list) in finals.iter().enumerate() {
            let mut sorted = list.clone();
            sorted.sort_unstable();
            if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                return violation(format!(
                    "exactly-once broken: write {:#x} applied twice to key {k}",
                    w[0]
                ));
            }
        }
        for h in &self.history {
            match (&h.kind, &h.outcome) {
                (OpKind::Append { key, value }, Outcome::Ok(_))
                    if !finals[*key as usize].contains(value) =>
                {
                    return violation(format!(
                        "acknowledged write {value:#x} to key {key} is missing after healing"
                    ));
                }
                (OpKind::Read { key }, Outcome::Ok(Some(list))) => {
                    let fin = &finals[*key as usize];
                    if list.len() > fin.len() || fin[..list.len()] != list[..] {
                        return violation(format!(
                            "read of key {key} saw {list:?}, not a prefix of the final {fin:?}"
                        ));
                    }
                    for w in &self.history {
                        if let (OpKind::Append { key: k2, value }, Outcome::Ok(_)) =
                            (&w.kind, &w.outcome)
                        {
                            if k2 == key && w.complete_ms < h.invoke_ms && !list.contains(value) {
                                return violation(format!(
                                    "stale read: a read of key {key} invoked at {} ms missed write {value:#x} acknowledged at {} ms",
                                    h.invoke_ms, w.complete_ms
                                ));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        let ops = self.history_operations();
        let report = crate::lincheck::check_history(&ops, Some(std::time::Duration::from_secs(20)))
            .map_err(|e| Violation(format!("the simulator wrote an invalid history: {e}")))?;
        if let crate::lincheck::CheckOutcome::NotLinearizable(v) = report.outcome {
            let shown: Vec<String> = v.ops.iter().map(|&i| ops[i].describe()).collect();
            return violation(format!(
                "history not linearizable on key {}: {}\n  {}",
                v.key,
                v.explanation,
                shown.join("\n  ")
            ));
        }
        Ok(())
    }

    /// The last notable events, for failure reports.
    pub fn trace(&self) -> String {
        self.trace.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// A simulated client request's id: its operation and attempt.
fn encode_req_id(op: usize, attempt: u32) -> u64 {
    ((op as u64) << 8) | u64::from(attempt.min(255))
}

fn decode_req_id(req_id: u64) -> (usize, u32) {
    ((req_id >> 8) as usize, (req_id & 0xff) as u32)
}

/// Runs `f` for each seed (or only `SEED` if set; `SEEDS` overrides the count) and panics with a
/// replay command on the first failure.
pub fn run_seeds(test: &str, default_seeds: u64, f: impl Fn(u64) -> Result<(), Violation>) {
    let seeds: Vec<u64> = match std::env::var("SEED").ok().and_then(|s| s.parse().ok()) {
        Some(s) => vec![s],
        None => {
            let n = std::env::var("SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(default_seeds);
            (1..=n).collect()
        }
    };
    for seed in seeds {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(seed)));
        let msg = match r {
            Ok(Ok(())) => continue,
            Ok(Err(v)) => v.0,
            Err(p) => p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into()),
        };
        panic!(
            "{test} failed at seed {seed}: {msg}\nreplay: SEED={seed} cargo test -p shmraft-consensus {test}"
        );
    }
}

/// Runs seeds `1..=max_seeds` and returns the first that fails, with its message (bug seeding).
pub fn first_failing_seed(
    max_seeds: u64,
    f: impl Fn(u64) -> Result<(), Violation>,
) -> Option<(u64, String)> {
    for seed in 1..=max_seeds {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(seed)));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(v)) => return Some((seed, v.0)),
            Err(_) => return Some((seed, "panic".into())),
        }
    }
    None
}

/// A standard randomized run: clients and the nemesis for `fault_ms`, then heal and check.
pub fn random_run(opts: SimOptions, fault_ms: u64) -> Result<Sim, Violation> {
    let mut sim = Sim::new(opts);
    sim.start_clients(3);
    sim.set_nemesis(true);
    let r = sim.run_for(fault_ms).and_then(|_| sim.heal_and_check(3000));
    match r {
        Ok(()) => Ok(sim),
        Err(v) => Err(Violation(format!("{v}\nlast events:\n{}", sim.trace()))),
    }
}

#[doc(hidden)]
pub fn debug_body(b: &MessageBody) -> String {
    match b {
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => format!(
            "AE prev=({prev_log_index},{prev_log_term}) n={} last={:?} commit={leader_commit}",
            entries.len(),
            entries.last().map(|e| (e.index.0, e.term.0))
        ),
        other => format!("{other:?}"),
    }
}
