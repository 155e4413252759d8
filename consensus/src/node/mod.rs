//! The node driver: one event loop per process that runs the Raft core over `shmraft-storage`
//! and `shmraft-ipc`, applies committed entries to a [`StateMachine`] wrapped in exactly-once
//! [`Sessions`], and serves clients.
//!
//! The loop follows the driver's duties in the crate documentation:
//!
//! 1. Wait on the transport (rings of every peer and client) until input arrives or the next tick
//!    is due; a group-commit sync completing on the log's thread wakes it (`Transport::waker`).
//! 2. Step every Raft message; batch client writes into one `propose_batch` and client reads into
//!    one `read_index` per loop turn (thesis §10.2.1 batching).
//! 3. Tick the core every `tick_ms`.
//! 4. Drain `Ready`s: send messages now (the leader replicates while its own write syncs), hand
//!    persist work to storage, apply snapshots and committed entries, answer confirmed reads,
//!    write requested snapshots, compact.
//! 5. Complete persist work whose entries are covered by the log's acknowledgement index (the
//!    durable index under `always`/`batch`): only then send its votes and acknowledgements
//!    (storage rule 8) and call `on_persisted`.
//! 6. Publish a status file now and then (for `shmraft status`).
//!
//! Snapshots: a state machine that offers a [`crate::SnapshotJob`] (the built-in KV machine
//! does) is captured on the loop thread (for the KV machine, one copy of its map) and serialised,
//! written and synced on a `snapshot` thread while the loop goes on; the loop then only renames
//! the file into place and tells the core. Others are snapshotted on the loop thread.

pub mod client;
pub mod logging;
pub mod partition;
pub mod pipeline;
pub mod status;
pub mod store;
pub mod wire;

use crate::config::{Config, ConfigError};
use crate::message::{Membership, Message, Payload};
use crate::raft::{InitError, ProposeError, Raft, Ready, RoleKind};
use crate::session::{SessionConfig, Sessions, stamp_log_time};
use crate::state_machine::StateMachine;
use crate::types::{Index, NodeId, Term};
use crate::{decode_message, encode_message};
use shmraft_ipc::{Endpoint, Incoming, LinkEvent, OutFrame, SendError, Transport, TransportConfig};
use shmraft_storage::{self as st, FsyncPolicy};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};
use store::WalLogStore;
use thiserror::Error;
use wire::{
    ClientFrame, ClientFrameRef, KIND_CLIENT_REQUEST, KIND_CLIENT_RESPONSE, KIND_RAFT, ServerFrame,
};

/// The two digests a node reports (see [`status::NodeStatus`]).
#[derive(Clone, Copy, Debug)]
struct Digests {
    /// Over the state machine and the exactly-once session table.
    with_sessions: u64,
    /// The embedded state machine's own [`StateMachine::digest`].
    state_machine: u64,
}

/// Everything a node process needs to start. Build with [`NodeConfig::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id (from 1).
    pub id: NodeId,
    /// Every voter of the cluster, this node included.
    pub voters: Vec<NodeId>,
    /// The node's data directory (WAL, hard state, snapshots), locked while the node runs.
    pub data_dir: PathBuf,
    /// The cluster's runtime directory for rings and wake-up FIFOs (0700, shared by the nodes).
    pub runtime_dir: PathBuf,
    /// Carried in every ring header: rings of another cluster are refused.
    pub cluster_id: u64,
    /// When appended entries are synced and acknowledged (docs/DURABILITY.md).
    pub fsync_policy: FsyncPolicy,
    /// Size of each WAL segment file (a multiple of 4096, 64 KiB to the storage maximum). A node
    /// keeps its active segment and one prepared ahead, each allocated in full, so a node uses at
    /// least twice this on disk however small its log. The default, 8 MiB, suits small clusters
    /// and tests; under sustained heavy writes (tens of MB/s per node) use 64 MiB, so that a
    /// segment switch (creation, allocation, directory sync, on the preparer thread) happens
    /// less often.
    pub segment_bytes: u64,
    /// Data bytes of each ring this node creates (power of two).
    pub ring_bytes: usize,
    /// How long the loop spins on its rings before parking (ipc rule 5). Longer spins answer
    /// faster when the next message comes soon (an acknowledgement during a sync) at the price of
    /// CPU; on virtual machines a parked process can take tens of microseconds to wake.
    pub spin_us: u32,
    /// Length of one core tick.
    pub tick_ms: u64,
    /// Randomized election timeout range, milliseconds (Raft §5.2).
    pub election_timeout_ms: (u64, u64),
    /// Leader heartbeat interval, milliseconds.
    pub heartbeat_ms: u64,
    /// Snapshot after this many applied entries (0: never by count).
    pub snapshot_entries: u64,
    /// Snapshot after this many applied bytes (0: never by size).
    pub snapshot_bytes: u64,
    /// Entries kept behind a snapshot so slightly lagging followers catch up by appends.
    pub compaction_retain_entries: u64,
    /// Exactly-once session limits; every node of a cluster must use the same values.
    pub sessions: SessionConfig,
    /// How long a confirmed-leadership read may wait before the client is told to retry.
    pub read_timeout_ms: u64,
    /// Where and how often the status file is written (None: never).
    pub status_interval_ms: Option<u64>,
    /// A drop-matrix file (see [`partition`]) the node re-reads when it changes, so a nemesis
    /// can partition the cluster, one-way links included, without restarting anything.
    pub partition_file: Option<PathBuf>,
    /// Stop cleanly (as on SIGTERM) when the process that started this node exits, so node
    /// processes do not outlive a killed parent. The parent is the process named in the
    /// [`PARENT_PID_ENV`] environment variable if set (a spawner that may exit early names
    /// itself there), else the parent at [`Node::run`]. Default: off.
    pub exit_with_parent: bool,
}

impl NodeConfig {
    /// Defaults: `always` fsync, 8 MiB segments, 1 MiB rings, 10 ms ticks, elections in
    /// 150-300 ms, heartbeats every 30 ms, snapshots every 100,000 entries or 64 MiB.
    pub fn new(
        id: NodeId,
        voters: Vec<NodeId>,
        data_dir: impl Into<PathBuf>,
        runtime_dir: impl Into<PathBuf>,
    ) -> NodeConfig {
        NodeConfig {
            id,
            voters,
            data_dir: data_dir.into(),
            runtime_dir: runtime_dir.into(),
            cluster_id: 1,
            fsync_policy: FsyncPolicy::Always,
            segment_bytes: 8 << 20,
            ring_bytes: 1 << 20,
            spin_us: 10,
            tick_ms: 10,
            election_timeout_ms: (150, 300),
            heartbeat_ms: 30,
            snapshot_entries: 100_000,
            snapshot_bytes: 64 << 20,
            compaction_retain_entries: 1024,
            sessions: SessionConfig::default(),
            read_timeout_ms: 2000,
            status_interval_ms: Some(100),
            partition_file: None,
            exit_with_parent: false,
        }
    }

    /// The core's configuration, with times converted to ticks.
    pub fn core_config(&self) -> Result<Config, ConfigError> {
        let tick = self.tick_ms.max(1);
        let mut c = Config::new(self.id, self.voters.clone());
        c.election_timeout_min_ticks = self.election_timeout_ms.0.div_ceil(tick);
        c.election_timeout_max_ticks = self.election_timeout_ms.1.div_ceil(tick);
        c.heartbeat_interval_ticks = (self.heartbeat_ms / tick).max(1);
        c.snapshot_entries = self.snapshot_entries;
        c.snapshot_bytes = self.snapshot_bytes;
        c.compaction_retain_entries = self.compaction_retain_entries;
        c.validate()?;
        Ok(c)
    }
}

/// Why a node could not start or had to stop.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error("storage: {0}")]
    Storage(#[from] st::StorageError),
    #[error("transport: {0}")]
    Transport(#[from] shmraft_ipc::SetupError),
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("starting the consensus core: {0}")]
    Init(#[from] InitError),
    #[error("restoring the state machine from the snapshot at index {index}: {source}")]
    Restore { index: Index, source: io::Error },
    #[error("waiting for input: {0}")]
    Wait(io::Error),
    #[error("cannot start the parent watcher thread (exit_with_parent): {0}")]
    ParentWatch(io::Error),
}

/// A write proposed for a client, answered when its entry is applied.
#[derive(Clone, Copy, Debug)]
struct PendingWrite {
    term: Term,
    client: Endpoint,
    req_id: u64,
}

/// A read waiting for leadership confirmation (keyed by ctx) or for the apply index.
#[derive(Debug)]
struct PendingRead {
    client: Endpoint,
    req_id: u64,
    query: Vec<u8>,
    deadline: Instant,
}

/// Persist work whose messages wait for durability.
#[derive(Debug)]
struct PendingPersist {
    id: u64,
    /// Highest log index this work appended (0: nothing appended).
    need: Index,
    messages: Vec<Message>,
}

/// Counters for status and benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeCounters {
    pub entries_appended: u64,
    pub append_calls: u64,
    pub entries_applied: u64,
    pub writes_answered: u64,
    pub reads_answered: u64,
    pub snapshots_written: u64,
    pub snapshots_installed: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub bad_frames: u64,
}

/// A running node: owns its storage, its transport, the core and the state machine.
pub struct Node<S: StateMachine> {
    cfg: NodeConfig,
    raft: Raft<WalLogStore>,
    sm: Sessions<S>,
    transport: Transport,
    applied: Index,
    persists: VecDeque<PendingPersist>,
    writes: HashMap<Index, PendingWrite>,
    reads_unconfirmed: HashMap<u64, Vec<PendingRead>>,
    reads_confirmed: Vec<(Index, PendingRead)>,
    next_read_ctx: u64,
    /// Encoded Raft messages per destination node, sent once per loop turn (ipc rule 6).
    outbox: HashMap<u32, Vec<Vec<u8>>>,
    /// Encoded responses per client, sent as one batch per loop turn (ipc rule 6): with many
    /// requests in flight per connection, one publication and at most one wake-up per turn.
    client_outbox: HashMap<Endpoint, Vec<Vec<u8>>>,
    /// Client requests received this loop turn; a write's envelope already copied into its
    /// log payload and stamped with the log time (or why it is malformed).
    inbox_writes: Vec<(Endpoint, u64, Result<Payload, String>)>,
    inbox_reads: Vec<(Endpoint, u64, Vec<u8>)>,
    inbox_status: Vec<(Endpoint, u64)>,
    inbox_raft: Vec<Message>,
    counters: NodeCounters,
    last_role: RoleKind,
    started: Instant,
    wall_ms_at_start: u64,
    /// Contents of the partition file when last applied (empty: no file).
    partition_seen: Vec<u8>,
    /// A snapshot being written on the snapshot thread.
    snapshot_in_progress: Option<SnapshotInProgress>,
    /// The state machine digest, the applied index it covers and when it was computed. A digest
    /// costs a pass over the whole state, so status writes reuse it (see `current_digest`).
    digest_cache: std::cell::Cell<Option<(Index, Digests, Instant)>>,
    /// The applied index at the previous `current_digest` call: unchanged means quiet.
    digest_last_applied: std::cell::Cell<Index>,
    /// The WAL's sync listener wakes the loop when a group-commit sync completes.
    sync_wakes: bool,
    /// Time spent in the phases of `handle_ready` this loop turn (see `phase_mark`).
    ready_phase_ns: [u64; 7],
    phase_at: Instant,
}

/// A local snapshot whose data a [`crate::SnapshotJob`] writes on another thread, so the loop
/// keeps applying entries and serving clients meanwhile (the core requests no other snapshot
/// until `on_snapshot_written`).
struct SnapshotInProgress {
    index: Index,
    term: Term,
    membership: Membership,
    handle: std::thread::JoinHandle<Result<shmraft_storage::SnapshotWriter, st::StorageError>>,
}

impl<S: StateMachine> std::fmt::Debug for Node<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.cfg.id)
            .field("status", &self.raft.status())
            .finish()
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<S: StateMachine> Node<S> {
    /// Opens the data directory (locking it and recovering the log), attaches to the cluster's
    /// runtime directory, restores the latest snapshot and prepares to replay the log tail.
    pub fn open(cfg: NodeConfig, state_machine: S) -> Result<Node<S>, NodeError> {
        let core_cfg = cfg.core_config()?;
        let mut opts = st::StorageOptions::default();
        opts.wal.segment_bytes = cfg.segment_bytes;
        opts.wal.fsync_policy = cfg.fsync_policy;
        let storage = st::Storage::open(&cfg.data_dir, opts)?;
        let membership = Membership {
            voters: cfg.voters.clone(),
            voters_outgoing: Vec::new(),
        };
        let store = WalLogStore::new(storage, membership)?;
        let hard_state = store.hard_state();
        // Distinct per node and per incarnation; determinism is the simulator's business.
        let seed = wall_ms() ^ (cfg.id.get() << 48) ^ u64::from(std::process::id());
        let raft = Raft::new(core_cfg, store, hard_state, seed)?;
        let mut tcfg = TransportConfig::new(cfg.runtime_dir.clone(), cfg.cluster_id);
        tcfg.ring_bytes = cfg.ring_bytes;
        tcfg.spin_us = cfg.spin_us;
        let peers: Vec<u32> = cfg.voters.iter().map(|v| v.get() as u32).collect();
        let transport = Transport::node(tcfg, cfg.id.get() as u32, &peers)?;
        // Group commit syncs on the log's own thread; its completion is not a transport event.
        // The sync listener wakes the loop (one write to our own FIFO), so acknowledgements
        // leave as soon as the sync that covers them completes.
        let sync_wakes = matches!(cfg.fsync_policy, FsyncPolicy::Batch { .. })
            && match transport.waker() {
                Some(w) => {
                    raft.store()
                        .storage()
                        .wal
                        .set_sync_listener(move |_| w.wake());
                    true
                }
                None => {
                    tracing::warn!("cannot open our own wake-up FIFO; polling for syncs");
                    false
                }
            };
        let applied = raft.snapshot_meta().last_included_index;
        let sm = Sessions::new(state_machine, cfg.sessions);
        tracing::info!(id = %cfg.id, term = %hard_state.current_term, commit = %hard_state.commit_index,
            last = %raft.last_index(), snapshot = %applied, "node opened");
        Ok(Node {
            last_role: raft.role(),
            raft,
            sm,
            transport,
            applied: Index::ZERO,
            persists: VecDeque::new(),
            writes: HashMap::new(),
            reads_unconfirmed: HashMap::new(),
            reads_confirmed: Vec::new(),
            next_read_ctx: 1,
            outbox: HashMap::new(),
            client_outbox: HashMap::new(),
            inbox_writes: Vec::new(),
            inbox_reads: Vec::new(),
            inbox_status: Vec::new(),
            inbox_raft: Vec::new(),
            counters: NodeCounters::default(),
            started: Instant::now(),
            wall_ms_at_start: wall_ms(),
            partition_seen: Vec::new(),
            snapshot_in_progress: None,
            digest_cache: std::cell::Cell::new(None),
            digest_last_applied: std::cell::Cell::new(Index::ZERO),
            ready_phase_ns: [0; 7],
            phase_at: Instant::now(),
            sync_wakes,
            cfg,
        })
    }

    pub fn id(&self) -> NodeId {
        self.cfg.id
    }

    pub fn raft(&self) -> &Raft<WalLogStore> {
        &self.raft
    }

    pub fn state_machine(&self) -> &S {
        self.sm.inner()
    }

    pub fn counters(&self) -> NodeCounters {
        self.counters
    }

    /// Runs the event loop until `stop` is set, then shuts down cleanly (syncs the log unless
    /// the policy is `never`, removes this node's runtime files). A storage failure (a failed
    /// sync, a full disk) stops the node with the error: nothing after the last good sync was
    /// acknowledged.
    pub fn run(self, stop: &AtomicBool) -> Result<(), NodeError> {
        if !self.cfg.exit_with_parent {
            return self.run_until(stop);
        }
        let parent = parent_at_start();
        let stop_now = AtomicBool::new(false);
        let finished = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let watcher = std::thread::Builder::new()
                .name("parent-watch".into())
                .spawn_scoped(scope, || watch_parent(parent, stop, &stop_now, &finished));
            if let Err(e) = watcher {
                return Err(NodeError::ParentWatch(e));
            }
            let result = self.run_until(&stop_now);
            finished.store(true, Ordering::Relaxed);
            result
        })
    }

    /// The loop of [`Node::run`], until `stop` is set.
    fn run_until(mut self, stop: &AtomicBool) -> Result<(), NodeError> {
        let tick = Duration::from_millis(self.cfg.tick_ms.max(1));
        let mut next_tick = Instant::now() + tick;
        let status_every = self.cfg.status_interval_ms.map(Duration::from_millis);
        let mut next_status = Instant::now();
        let result = loop {
            if stop.load(Ordering::Relaxed) {
                break Ok(());
            }
            if let Err(e) = self.turn(&mut next_tick, tick) {
                break Err(e);
            }
            if let Some(every) = status_every {
                if Instant::now() >= next_status {
                    next_status = Instant::now() + every;
                    self.write_status();
                }
            }
        };
        if let Err(e) = &result {
            tracing::error!(id = %self.cfg.id, error = %e, "node stopping on error");
        }
        if let Some(s) = self.snapshot_in_progress.take() {
            // Let a snapshot in progress finish (it is consistent); a failure only loses it.
            if let Ok(Ok(w)) = s.handle.join() {
                let _ = self
                    .raft
                    .store_mut()
                    .finish_snapshot(w, s.index, s.term, &s.membership);
            }
        }
        self.write_status();
        let Node {
            raft, transport, ..
        } = self;
        transport.shutdown();
        let close = raft.into_store().into_storage().close();
        match (result, close) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(e.into()),
            (Ok(()), Ok(())) => Ok(()),
        }
    }

    /// One loop turn: wait, take input, tick, drain readies, complete durable persists.
    fn turn(&mut self, next_tick: &mut Instant, tick: Duration) -> Result<(), NodeError> {
        let now = Instant::now();
        let mut timeout = next_tick.saturating_duration_since(now);
        if !self.persists.is_empty() && !self.sync_wakes {
            // No sync listener wakes us (see `open`): look again soon.
            timeout = timeout.min(Duration::from_micros(100));
        }
        self.transport
            .wait(Some(timeout))
            .map_err(NodeError::Wait)?;
        // Phases are timed so a turn that holds up heartbeats and acknowledgements (a long
        // sync, a big snapshot capture) is visible in the log: such stalls are what make
        // CheckQuorum depose a healthy leader.
        let t0 = Instant::now();
        self.ready_phase_ns = [0; 7];
        self.receive();
        self.handle_inbox();
        let t_input = Instant::now();
        if t_input >= *next_tick {
            // A paused process (SIGSTOP) catches up by at most one election timeout of ticks,
            // enough for CheckQuorum to notice it lost touch (fault-matrix C2).
            let behind = (t_input - *next_tick).as_millis() as u64 / self.cfg.tick_ms.max(1) + 1;
            let n = behind.min(self.raft.config().election_timeout_max_ticks);
            for _ in 0..n {
                self.raft.tick();
            }
            *next_tick = t_input + tick;
            self.expire_reads(t_input);
            self.apply_partition_file();
        }
        let t_tick = Instant::now();
        self.drain_ready()?;
        let t_ready = Instant::now();
        self.complete_persists()?;
        self.poll_snapshot()?;
        self.flush_outbox();
        let t_end = Instant::now();
        let slow = Duration::from_millis(
            self.raft.config().election_timeout_min_ticks * self.cfg.tick_ms / 4,
        );
        if t_end - t0 >= slow.max(Duration::from_millis(5)) {
            tracing::warn!(
                id = %self.cfg.id,
                turn_ms = (t_end - t0).as_secs_f64() * 1e3,
                input_ms = (t_input - t0).as_secs_f64() * 1e3,
                tick_ms = (t_tick - t_input).as_secs_f64() * 1e3,
                ready_ms = (t_ready - t_tick).as_secs_f64() * 1e3,
                finish_ms = (t_end - t_ready).as_secs_f64() * 1e3,
                ready_phases_ms = ?self.ready_phase_ns.map(|n| n / 1_000_000),
                "slow loop turn (a quarter of the election timeout): heartbeats and acks waited"
            );
        }
        Ok(())
    }

    /// Completes a snapshot whose thread finished: rename it into place and tell the core.
    fn poll_snapshot(&mut self) -> Result<(), NodeError> {
        if !self
            .snapshot_in_progress
            .as_ref()
            .is_some_and(|s| s.handle.is_finished())
        {
            return Ok(());
        }
        let s = self.snapshot_in_progress.take().expect("checked");
        let w = match s.handle.join() {
            Ok(r) => r?,
            Err(_) => {
                return Err(st::StorageError::Snapshot(format!(
                    "the state machine's snapshot job for index {} panicked",
                    s.index
                ))
                .into());
            }
        };
        let done = self
            .raft
            .store_mut()
            .finish_snapshot(w, s.index, s.term, &s.membership)?;
        let meta = match done {
            Some(meta) => {
                self.counters.snapshots_written += 1;
                tracing::info!(id = %self.cfg.id, index = %s.index, "snapshot written");
                meta
            }
            // Superseded by a newer snapshot (installed from the leader meanwhile).
            None => crate::log_store::LogStore::snapshot_meta(self.raft.store()),
        };
        self.raft.on_snapshot_written(&meta);
        self.drain_ready()
    }

    /// Takes everything the transport has, decoding Raft messages and client frames. Bad frames
    /// are counted and logged; they never stop the node (fault-matrix C10).
    fn receive(&mut self) {
        // Session expiry runs on log time stamped by the leader (sessions module, rule 1); a
        // follower's stamp is never used (it answers NotLeader).
        let log_time = self.wall_ms_at_start + self.started.elapsed().as_millis() as u64;
        let Node {
            transport,
            inbox_raft,
            inbox_writes,
            inbox_reads,
            inbox_status,
            counters,
            ..
        } = self;
        transport.recv(|inc| match inc {
            Incoming::Frame(f) => match (f.from, f.kind) {
                (Endpoint::Node(_), KIND_RAFT) => match decode_message(f.payload) {
                    Ok(m) => inbox_raft.push(m),
                    Err(e) => {
                        counters.bad_frames += 1;
                        tracing::warn!(from = %f.from, error = %e, "dropping undecodable Raft message");
                    }
                },
                (Endpoint::Client(_), KIND_CLIENT_REQUEST) => match ClientFrame::decode_ref(
                    f.payload,
                ) {
                    Ok(ClientFrameRef::Write { req_id, envelope }) => {
                        // One copy, from the ring straight into the entry's payload.
                        let (payload, stamped) =
                            Payload::from_slice_with(envelope, |b| stamp_log_time(b, log_time));
                        let p = stamped
                            .map(|()| payload)
                            .map_err(|e| format!("malformed client request: {e}"));
                        inbox_writes.push((f.from, req_id, p))
                    }
                    Ok(ClientFrameRef::Read { req_id, query }) => {
                        inbox_reads.push((f.from, req_id, query.to_vec()))
                    }
                    Ok(ClientFrameRef::Status { req_id }) => inbox_status.push((f.from, req_id)),
                    Err(e) => {
                        counters.bad_frames += 1;
                        tracing::warn!(from = %f.from, error = %e, "dropping malformed client frame");
                    }
                },
                (from, kind) => {
                    counters.bad_frames += 1;
                    tracing::warn!(%from, kind, "dropping frame of unexpected kind");
                }
            },
            Incoming::Event(ev) => match ev {
                LinkEvent::Reset { peer, reason } => {
                    tracing::warn!(%peer, %reason, "link reset after a protocol violation")
                }
                LinkEvent::Rejected { peer, reason } => {
                    tracing::warn!(%peer, %reason, "refused a ring")
                }
                LinkEvent::Up { peer, epoch } => tracing::debug!(%peer, epoch, "link up"),
                LinkEvent::Down { peer } => tracing::debug!(%peer, "link down"),
                LinkEvent::Writable { .. } => {}
            },
        });
    }

    fn handle_inbox(&mut self) {
        for m in std::mem::take(&mut self.inbox_raft) {
            if let Err(e) = self.raft.step(m) {
                tracing::warn!(error = %e, "ignoring Raft message");
            }
        }
        let writes = std::mem::take(&mut self.inbox_writes);
        if !writes.is_empty() {
            self.propose_writes(writes);
        }
        let reads = std::mem::take(&mut self.inbox_reads);
        if !reads.is_empty() {
            self.start_reads(reads);
        }
        for (client, req_id) in std::mem::take(&mut self.inbox_status) {
            let json = serde_json::to_vec(&self.status_snapshot()).unwrap_or_default();
            self.respond(
                client,
                ServerFrame::Ok {
                    req_id,
                    result: json,
                },
            );
        }
    }

    /// Proposes a loop turn's client writes as one batch (one AppendEntries, one sync).
    fn propose_writes(&mut self, writes: Vec<(Endpoint, u64, Result<Payload, String>)>) {
        if !self.raft.is_leader() {
            let hint = self.raft.leader_id();
            for (client, req_id, _) in writes {
                self.respond(
                    client,
                    ServerFrame::NotLeader {
                        req_id,
                        leader_hint: hint,
                    },
                );
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
                Err(message) => self.respond(client, ServerFrame::Error { req_id, message }),
            }
        }
        match self.raft.propose_batch(&batch) {
            Ok(first) => {
                for (k, (client, req_id)) in who.into_iter().enumerate() {
                    let index = Index(first.index.get() + k as u64);
                    self.writes.insert(
                        index,
                        PendingWrite {
                            term: first.term,
                            client,
                            req_id,
                        },
                    );
                }
            }
            Err(e) => {
                for (client, req_id) in who {
                    let f = match &e {
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
                    };
                    self.respond(client, f);
                }
            }
        }
    }

    /// Starts one ReadIndex round for a loop turn's reads (Raft thesis §6.4).
    fn start_reads(&mut self, reads: Vec<(Endpoint, u64, Vec<u8>)>) {
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        match self.raft.read_index(ctx) {
            Ok(()) => {
                let deadline = Instant::now() + Duration::from_millis(self.cfg.read_timeout_ms);
                let v = reads
                    .into_iter()
                    .map(|(client, req_id, query)| PendingRead {
                        client,
                        req_id,
                        query,
                        deadline,
                    })
                    .collect();
                self.reads_unconfirmed.insert(ctx, v);
            }
            Err(e) => {
                let hint = self.raft.leader_id();
                for (client, req_id, _) in reads {
                    let f = match e {
                        crate::raft::ReadError::NotLeader { .. } => ServerFrame::NotLeader {
                            req_id,
                            leader_hint: hint,
                        },
                        _ => ServerFrame::Retry {
                            req_id,
                            reason: e.to_string(),
                        },
                    };
                    self.respond(client, f);
                }
            }
        }
    }

    /// Reads the core never confirmed (leadership lost) are answered with a retry.
    fn expire_reads(&mut self, now: Instant) {
        let lost = !self.raft.is_leader();
        let mut expired = Vec::new();
        self.reads_unconfirmed.retain(|_, v| {
            if lost || v.first().is_some_and(|r| r.deadline <= now) {
                expired.append(v);
                false
            } else {
                true
            }
        });
        for r in expired {
            self.respond(
                r.client,
                ServerFrame::Retry {
                    req_id: r.req_id,
                    reason: "leadership was not confirmed for this read; retry".into(),
                },
            );
        }
    }

    fn drain_ready(&mut self) -> Result<(), NodeError> {
        while self.raft.has_ready() {
            let rd = self.raft.ready();
            self.handle_ready(rd)?;
        }
        let role = self.raft.role();
        if role != self.last_role {
            tracing::info!(id = %self.cfg.id, ?role, term = %self.raft.current_term(), "role changed");
            self.last_role = role;
            if role != RoleKind::Leader {
                self.expire_reads(Instant::now());
            }
        }
        Ok(())
    }

    /// Adds the time since the previous mark to phase `i` of `handle_ready` (0: send, 1:
    /// persist, 2: restore, 3: apply, 4: reads, 5: snapshot, 6: compact); reported with slow
    /// loop turns.
    fn phase_mark(&mut self, i: usize) {
        let now = Instant::now();
        if i > 0 {
            self.ready_phase_ns[i] += (now - self.phase_at).as_nanos() as u64;
        }
        self.phase_at = now;
    }

    fn handle_ready(&mut self, rd: Ready) -> Result<(), NodeError> {
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
            self.queue_message(m);
        }
        if persist.is_some() {
            self.flush_outbox();
        }
        self.phase_mark(0);
        // Step 4: persist, in order; its messages wait for durability.
        if let Some(p) = persist {
            let store = self.raft.store_mut();
            if let Some(hs) = &p.hard_state {
                store.save_hard_state(hs)?;
            }
            for c in &p.snapshot_chunks {
                store.write_snapshot_chunk(c)?;
            }
            if let Some(meta) = &p.install_snapshot {
                store.install_snapshot(meta)?;
                self.counters.snapshots_installed += 1;
            }
            let mut need = Index::ZERO;
            if !p.entries.is_empty() {
                need = store.append_entries(&p.entries)?;
                self.counters.entries_appended += p.entries.len() as u64;
                self.counters.append_calls += 1;
            }
            self.persists.push_back(PendingPersist {
                id: p.id,
                need,
                messages: p.messages,
            });
            // Under `always` the append returned after its sync: complete at once, and send
            // the acknowledgements now, before this turn applies committed entries: on a
            // follower the apply is not on the leader's commit path, the ack is.
            self.complete_persists()?;
            self.flush_outbox();
        }
        self.phase_mark(1);
        // Step 5: restore from the snapshot.
        if let Some(meta) = apply_snapshot {
            let store = self.raft.store();
            let Some((m, data)) = store.read_snapshot()? else {
                return Err(NodeError::Restore {
                    index: meta.last_included_index,
                    source: io::Error::new(io::ErrorKind::NotFound, "no snapshot file"),
                });
            };
            self.sm
                .restore(&mut data.as_slice())
                .map_err(|source| NodeError::Restore {
                    index: m.last_included_index,
                    source,
                })?;
            self.applied = m.last_included_index;
            // Writes whose entries the snapshot covers may or may not have been applied: the
            // client retries with the same sequence number and its session answers exactly once.
            let covered: Vec<Index> = self
                .writes
                .keys()
                .copied()
                .filter(|&i| i <= self.applied)
                .collect();
            for i in covered {
                if let Some(w) = self.writes.remove(&i) {
                    self.respond(
                        w.client,
                        ServerFrame::Retry {
                            req_id: w.req_id,
                            reason:
                                "outcome covered by a snapshot; retry with the same sequence number"
                                    .into(),
                        },
                    );
                }
            }
        }
        self.phase_mark(2);
        // Step 6: apply.
        for e in committed {
            debug_assert_eq!(e.index, self.applied.next(), "entries are applied in order");
            let result = match e.kind {
                crate::message::EntryKind::Normal => {
                    Some(self.sm.apply(e.index, e.data.as_slice()))
                }
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
                self.respond(w.client, f);
            }
        }
        self.phase_mark(3);
        // Step 7: confirmed reads, served once applied up to their index.
        for rs in read_states {
            if let Some(v) = self.reads_unconfirmed.remove(&rs.ctx) {
                self.reads_confirmed
                    .extend(v.into_iter().map(|r| (rs.index, r)));
            }
        }
        if !self.reads_confirmed.is_empty() {
            let applied = self.applied;
            let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_confirmed)
                .into_iter()
                .partition(|(i, _)| *i <= applied);
            self.reads_confirmed = waiting;
            for (_, r) in ready {
                let result = self.sm.query(&r.query);
                self.counters.reads_answered += 1;
                self.respond(
                    r.client,
                    ServerFrame::Ok {
                        req_id: r.req_id,
                        result,
                    },
                );
            }
        }
        self.phase_mark(4);
        // Step 8: snapshot at the applied index.
        if let Some(i) = snapshot_request {
            assert_eq!(
                i, self.applied,
                "snapshot requested at {i} but applied up to {}",
                self.applied
            );
            let term = self.raft.term_of(i).map_err(|e| {
                st::StorageError::Snapshot(format!("term of snapshot index {i}: {e}"))
            })?;
            let membership = self.raft.snapshot_meta().membership;
            let membership = if membership.voters.is_empty() {
                Membership {
                    voters: self.cfg.voters.clone(),
                    voters_outgoing: Vec::new(),
                }
            } else {
                membership
            };
            assert!(
                self.snapshot_in_progress.is_none(),
                "the core requested a snapshot while one is in progress"
            );
            if let Some(job) = self.sm.snapshot_job() {
                let mut w = self.raft.store().begin_snapshot(i, term, &membership)?;
                let handle = std::thread::Builder::new()
                    .name("snapshot".into())
                    .spawn(move || store::write_snapshot_job(&mut w, job).map(|()| w))
                    .map_err(|e| {
                        st::StorageError::Snapshot(format!("cannot start the snapshot thread: {e}"))
                    })?;
                self.snapshot_in_progress = Some(SnapshotInProgress {
                    index: i,
                    term,
                    membership,
                    handle,
                });
            } else {
                let sm = &self.sm;
                let meta = self
                    .raft
                    .store_mut()
                    .write_snapshot(i, term, &membership, |w| sm.snapshot(w))?;
                self.counters.snapshots_written += 1;
                tracing::info!(id = %self.cfg.id, index = %i, "snapshot written");
                self.raft.on_snapshot_written(&meta);
            }
        }
        self.phase_mark(5);
        // Step 9: compact behind a durable snapshot (storage rule 15).
        if let Some(i) = compact_to {
            self.raft.store_mut().compact(i)?;
        }
        self.phase_mark(6);
        Ok(())
    }

    /// Completes persist work covered by the log's acknowledgement index, in order.
    fn complete_persists(&mut self) -> Result<(), NodeError> {
        if self.persists.is_empty() {
            return Ok(());
        }
        let wal = &self.raft.store().storage().wal;
        if let Some(f) = wal.fatal_error() {
            return Err(st::StorageError::Fatal(f).into());
        }
        let ack = Index(wal.ack_index().0);
        while self.persists.front().is_some_and(|p| p.need <= ack) {
            let p = self.persists.pop_front().expect("front checked");
            for m in p.messages {
                self.queue_message(m);
            }
            self.raft.on_persisted(p.id);
        }
        Ok(())
    }

    fn queue_message(&mut self, m: Message) {
        match encode_message(&m) {
            Ok(b) => self.outbox.entry(m.to.get() as u32).or_default().push(b),
            Err(e) => tracing::error!(error = %e, "cannot encode a Raft message"),
        }
    }

    fn flush_outbox(&mut self) {
        for (to, msgs) in self.outbox.iter_mut() {
            if msgs.is_empty() {
                continue;
            }
            let frames: Vec<OutFrame<'_>> = msgs
                .iter()
                .map(|b| OutFrame {
                    kind: KIND_RAFT,
                    payload: b,
                })
                .collect();
            match self.transport.send_batch(Endpoint::Node(*to), &frames) {
                Ok(()) => self.counters.messages_sent += frames.len() as u64,
                // A full ring or a dead peer is normal: Raft resends from the log (ipc rule 7).
                Err(SendError::Full { .. } | SendError::PeerDown { .. }) => {
                    self.counters.messages_dropped += frames.len() as u64
                }
                Err(e) => {
                    self.counters.messages_dropped += frames.len() as u64;
                    tracing::debug!(to, error = %e, "send failed");
                }
            }
            msgs.clear();
        }
        // Clients come and go: forget the ones with nothing queued.
        self.client_outbox.retain(|_, v| !v.is_empty());
        for (client, resps) in self.client_outbox.iter_mut() {
            let frames: Vec<OutFrame<'_>> = resps
                .iter()
                .map(|b| OutFrame {
                    kind: KIND_CLIENT_RESPONSE,
                    payload: b,
                })
                .collect();
            if let Err(e) = self.transport.send_batch(*client, &frames) {
                // The client is gone or slow; it times out and retries (exactly-once sessions).
                tracing::debug!(%client, error = %e, "responses not delivered");
            }
            resps.clear();
        }
    }

    /// Queues a response; `flush_outbox` sends each client's responses as one batch.
    fn respond(&mut self, client: Endpoint, f: ServerFrame) {
        self.client_outbox
            .entry(client)
            .or_default()
            .push(f.encode());
    }

    /// Re-reads the partition file every tick and, when its contents changed, blocks the links it
    /// names (each end enforces both directions: a sender drops what it may not send, a receiver
    /// what it may not receive). Contents, not the modification time, decide: the kernel stamps
    /// mtimes with a coarse clock, so a partition and its heal written within one clock tick
    /// have the same mtime, and a node that trusted it kept a healed partition forever.
    fn apply_partition_file(&mut self) {
        let Some(path) = self.cfg.partition_file.as_ref() else {
            return;
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the partition file");
                return;
            }
        };
        if bytes == self.partition_seen {
            return;
        }
        let matrix = if bytes.is_empty() {
            partition::PartitionMatrix::default()
        } else {
            match partition::parse_partition(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable partition file");
                    return;
                }
            }
        };
        self.partition_seen = bytes;
        let me = self.cfg.id.get();
        for v in self.cfg.voters.clone() {
            let peer = v.get();
            if peer == me {
                continue;
            }
            let send = matrix.is_blocked(me, peer);
            let recv = matrix.is_blocked(peer, me);
            self.transport
                .set_blocked_directions(Endpoint::Node(peer as u32), send, recv);
        }
        tracing::info!(id = me, blocked = ?matrix.blocked, "partition matrix applied");
    }

    /// The state machine digest and the applied index it covers. Recomputed when the node is
    /// quiescent (nothing applied since the last computation was requested) or when the cached
    /// one is a second old; otherwise the cached one is returned with its own index, so readers
    /// compare digests only where `digest_index == applied_index`.
    fn current_digest(&self) -> (Index, Digests) {
        let now = Instant::now();
        let quiet = self.digest_last_applied.replace(self.applied) == self.applied;
        match self.digest_cache.get() {
            Some((i, d, _)) if i == self.applied => (i, d),
            // Busy (entries applied since the last call) and recently computed: reuse.
            Some((i, d, at)) if !quiet && now.duration_since(at) < Duration::from_secs(1) => (i, d),
            _ => {
                let (with_sessions, state_machine) = self.sm.digests();
                let d = Digests {
                    with_sessions,
                    state_machine,
                };
                self.digest_cache.set(Some((self.applied, d, now)));
                (self.applied, d)
            }
        }
    }

    /// The node's status, as written to the status file and answered to status requests.
    pub fn status_snapshot(&self) -> status::NodeStatus {
        let s = self.raft.status();
        let (digest_index, digest) = self.current_digest();
        let storage = self.raft.store().storage();
        let segments = storage.wal.segments();
        let log_bytes = segments
            .iter()
            .filter_map(|(p, _, _)| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        status::NodeStatus {
            id: s.id.get(),
            pid: std::process::id(),
            alive: true,
            role: status::role_name(s.role).to_string(),
            term: s.current_term.get(),
            leader: s.leader_id.get(),
            commit_index: s.commit_index.get(),
            applied_index: self.applied.get(),
            last_index: s.last_index.get(),
            durable_index: storage.wal.durable_index().0,
            snapshot_index: s.snapshot_index.get(),
            log_bytes,
            segments: segments.len() as u64,
            fsync_policy: self.cfg.fsync_policy.to_string(),
            digest: format!("{:016x}", digest.with_sessions),
            state_machine_digest: format!("{:016x}", digest.state_machine),
            digest_index: digest_index.get(),
            entries_appended: self.counters.entries_appended,
            append_calls: self.counters.append_calls,
            snapshots_written: self.counters.snapshots_written,
            snapshots_installed: self.counters.snapshots_installed,
            syncs: storage.wal.sync_count(),
            entries_applied: self.counters.entries_applied,
            writes_answered: self.counters.writes_answered,
            reads_answered: self.counters.reads_answered,
            updated_unix_ms: wall_ms(),
        }
    }

    fn write_status(&self) {
        let s = self.status_snapshot();
        if let Err(e) = status::write_status_file(&self.cfg.data_dir, &s) {
            tracing::debug!(error = %e, "cannot write the status file");
        }
    }
}

/// The environment variable in which a spawner may name itself (its pid), for
/// [`NodeConfig::exit_with_parent`]: the spawner may exit before the node reads its parent.
pub const PARENT_PID_ENV: &str = "SHMRAFT_PARENT_PID";

/// The parent to watch: the one named in [`PARENT_PID_ENV`], else the current parent.
fn parent_at_start() -> u32 {
    std::env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or_else(std::os::unix::process::parent_id)
}

/// Sets `stop_now` when `stop` is set or the parent exits (a process whose parent exits is
/// reparented, so its parent id changes), until `finished`. Polls every 10 ms: Linux offers no
/// portable event for "my parent exited" that ends in a clean stop (PR_SET_PDEATHSIG fires when
/// the parent *thread* exits, and delivers a signal).
fn watch_parent(parent: u32, stop: &AtomicBool, stop_now: &AtomicBool, finished: &AtomicBool) {
    while !finished.load(Ordering::Relaxed) {
        if stop.load(Ordering::Relaxed) {
            stop_now.store(true, Ordering::Relaxed);
        } else if std::os::unix::process::parent_id() != parent {
            tracing::warn!(
                parent,
                "the parent process exited; stopping (exit_with_parent)"
            );
            stop_now.store(true, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
