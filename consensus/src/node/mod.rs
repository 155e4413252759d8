//! The node process: one event loop per process around the [`driver::Driver`] (the one
//! implementation of the driver's duties, shared with the simulator) over the production seams
//! ([`seams::WalDisk`]: `shmraft-storage`; [`seams::IpcNetwork`]: `shmraft-ipc`), applying
//! committed entries to a [`StateMachine`] wrapped in exactly-once [`Sessions`], and serving
//! clients.
//!
//! Each loop turn:
//!
//! 1. Wait on the transport (rings of every peer and client) until input arrives or the next tick
//!    is due; a group-commit sync completing on the log's thread wakes it (`Transport::waker`).
//! 2. Decode the turn's frames; step every Raft message; hand the turn's client writes to the
//!    driver as one `propose_batch` and its reads as one `read_index` (thesis §10.2.1
//!    batching); answer status requests.
//! 3. Tick the core every `tick_ms`.
//! 4. `Driver::process`: drain `Ready`s (send messages now, so the leader replicates while its
//!    own write syncs; hand persist work to the WAL; apply snapshots and committed entries;
//!    answer confirmed reads; begin requested snapshots; compact), complete persist work whose
//!    entries the log's acknowledgement index covers (the durable index under `always`/`batch`):
//!    only then send its votes and acknowledgements (storage rule 8 of docs/RULES.md) and call
//!    `on_persisted`.
//! 5. Publish a status file now and then (for `shmraft status`).
//!
//! Snapshots: a state machine that offers a [`crate::SnapshotJob`] (the built-in KV machine
//! does) is captured on the loop thread (for the KV machine, one copy of its map) and serialised,
//! written and synced on a `snapshot` thread while the loop goes on; the loop then only renames
//! the file into place and tells the core. Others are snapshotted on the loop thread.

pub mod client;
pub mod driver;
pub mod logging;
pub mod partition;
pub mod pipeline;
pub mod seams;
pub mod status;
pub mod store;
pub mod wire;

use crate::config::{Config, ConfigError};
use crate::decode_message;
use crate::message::{Message, Payload};
use crate::raft::{InitError, Raft};
use crate::session::{SessionConfig, Sessions, stamp_log_time};
use crate::state_machine::StateMachine;
use crate::types::{Index, NodeId};
use driver::{ClientRead, ClientWrite, Driver, DriverCounters, DriverError, Network};
pub use seams::{IpcNetwork, WalDisk};
use shmraft_ipc::{Endpoint, Incoming, LinkEvent, Transport, TransportConfig};
use shmraft_storage::{self as st, FsyncPolicy};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};
use store::WalLogStore;
use thiserror::Error;
use wire::{ClientFrame, ClientFrameRef, KIND_CLIENT_REQUEST, KIND_RAFT, ServerFrame};

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
    /// How long the loop spins on its rings before parking (ipc rule 5 of docs/RULES.md). Longer
    /// spins answer faster when the next message comes soon (an acknowledgement during a sync) at
    /// the price of CPU; on virtual machines a parked process can take tens of microseconds to
    /// wake.
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
    #[error("the driver broke the core's contract: {0}")]
    Driver(String),
}

impl From<DriverError<st::StorageError>> for NodeError {
    fn from(e: DriverError<st::StorageError>) -> NodeError {
        match e {
            DriverError::Disk(e) => NodeError::Storage(e),
            DriverError::Restore { index, source } => NodeError::Restore { index, source },
            e @ (DriverError::SnapshotIndex { .. } | DriverError::ApplyOrder { .. }) => {
                NodeError::Driver(e.to_string())
            }
        }
    }
}

/// Counters for status and benchmarks: the driver's, and the process's own.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeCounters {
    pub driver: DriverCounters,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub bad_frames: u64,
}

/// The driver a node process runs: the WAL and the ipc transport behind the two seams.
pub type NodeDriver<S> = Driver<WalDisk, IpcNetwork, Sessions<S>>;

/// A running node: the [`Driver`] over its storage and transport, plus what only a process
/// has (decoding client frames, status requests and files, the partition file).
pub struct Node<S: StateMachine> {
    cfg: NodeConfig,
    driver: NodeDriver<S>,
    /// Client requests received this loop turn; a write's envelope already copied into its
    /// log payload and stamped with the log time (or why it is malformed).
    inbox_writes: Vec<ClientWrite<Endpoint>>,
    inbox_reads: Vec<ClientRead<Endpoint>>,
    inbox_status: Vec<(Endpoint, u64)>,
    inbox_raft: Vec<Message>,
    bad_frames: u64,
    started: Instant,
    wall_ms_at_start: u64,
    /// Contents of the partition file when last applied (empty: no file).
    partition_seen: Vec<u8>,
    /// The state machine digest, the applied index it covers and when it was computed. A digest
    /// costs a pass over the whole state, so status writes reuse it (see `current_digest`).
    digest_cache: std::cell::Cell<Option<(Index, Digests, Instant)>>,
    /// The applied index at the previous `current_digest` call: unchanged means quiet.
    digest_last_applied: std::cell::Cell<Index>,
    /// The WAL's sync listener wakes the loop when a group-commit sync completes.
    sync_wakes: bool,
}

impl<S: StateMachine> std::fmt::Debug for Node<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.cfg.id)
            .field("status", &self.driver.raft().status())
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
        let store = WalLogStore::new(storage, seams::initial_membership(&cfg.voters))?;
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
        let snapshot = raft.snapshot_meta().last_included_index;
        tracing::info!(id = %cfg.id, term = %hard_state.current_term, commit = %hard_state.commit_index,
            last = %raft.last_index(), %snapshot, "node opened");
        let sm = Sessions::new(state_machine, cfg.sessions);
        let net = IpcNetwork::new(transport);
        let driver = Driver::new(raft, WalDisk::default(), net, sm, cfg.read_timeout_ms);
        Ok(Node {
            driver,
            inbox_writes: Vec::new(),
            inbox_reads: Vec::new(),
            inbox_status: Vec::new(),
            inbox_raft: Vec::new(),
            bad_frames: 0,
            started: Instant::now(),
            wall_ms_at_start: wall_ms(),
            partition_seen: Vec::new(),
            digest_cache: std::cell::Cell::new(None),
            digest_last_applied: std::cell::Cell::new(Index::ZERO),
            sync_wakes,
            cfg,
        })
    }

    pub fn id(&self) -> NodeId {
        self.cfg.id
    }

    pub fn raft(&self) -> &Raft<WalLogStore> {
        self.driver.raft()
    }

    pub fn state_machine(&self) -> &S {
        self.driver.state_machine().inner()
    }

    pub fn counters(&self) -> NodeCounters {
        let d = self.driver.counters();
        let net = self.driver.net();
        NodeCounters {
            driver: d,
            messages_sent: net.messages_sent,
            messages_dropped: net.messages_dropped,
            bad_frames: self.bad_frames,
        }
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
        let (raft, disk) = self.driver.raft_and_disk_mut();
        disk.finish_on_shutdown(raft.store_mut());
        self.write_status();
        let (raft, _, net, _) = self.driver.into_parts();
        net.into_transport().shutdown();
        let close = raft.into_store().into_storage().close();
        match (result, close) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(e.into()),
            (Ok(()), Ok(())) => Ok(()),
        }
    }

    /// One loop turn: wait, take input, tick, then let the driver drain readies, complete
    /// durable persists and finished snapshots, and flush.
    fn turn(&mut self, next_tick: &mut Instant, tick: Duration) -> Result<(), NodeError> {
        let now = Instant::now();
        let mut timeout = next_tick.saturating_duration_since(now);
        if self.driver.persist_pending() && !self.sync_wakes {
            // No sync listener wakes us (see `open`): look again soon.
            timeout = timeout.min(Duration::from_micros(100));
        }
        if self.driver.snapshot_in_progress() {
            // The snapshot thread does not wake us: look again within a millisecond.
            timeout = timeout.min(Duration::from_millis(1));
        }
        self.driver
            .net_mut()
            .transport
            .wait(Some(timeout))
            .map_err(NodeError::Wait)?;
        // Phases are timed so a turn that holds up heartbeats and acknowledgements (a long
        // sync, a big snapshot capture) is visible in the log: such stalls are what make
        // CheckQuorum depose a healthy leader.
        let t0 = Instant::now();
        self.receive();
        self.handle_inbox();
        let t_input = Instant::now();
        if t_input >= *next_tick {
            // A paused process (SIGSTOP) catches up by at most one election timeout of ticks,
            // enough for CheckQuorum to notice it lost touch (fault-matrix row C2
            // of docs/FAULTS.md).
            let behind = (t_input - *next_tick).as_millis() as u64 / self.cfg.tick_ms.max(1) + 1;
            let n = behind.min(self.driver.raft().config().election_timeout_max_ticks);
            self.driver.tick(n);
            *next_tick = t_input + tick;
            self.apply_partition_file();
        }
        let t_tick = Instant::now();
        self.driver.process()?;
        let t_end = Instant::now();
        let slow = Duration::from_millis(
            self.driver.raft().config().election_timeout_min_ticks * self.cfg.tick_ms / 4,
        );
        let phases = self.driver.take_phase_ms();
        if t_end - t0 >= slow.max(Duration::from_millis(5)) {
            tracing::warn!(
                id = %self.cfg.id,
                turn_ms = (t_end - t0).as_secs_f64() * 1e3,
                input_ms = (t_input - t0).as_secs_f64() * 1e3,
                tick_ms = (t_tick - t_input).as_secs_f64() * 1e3,
                ready_ms = (t_end - t_tick).as_secs_f64() * 1e3,
                ready_phases_ms = ?phases,
                "slow loop turn (a quarter of the election timeout): heartbeats and acks waited"
            );
        }
        Ok(())
    }

    /// Takes everything the transport has, decoding Raft messages and client frames. Bad frames
    /// are counted and logged; they never stop the node (fault-matrix row C10 of docs/FAULTS.md).
    fn receive(&mut self) {
        // Session expiry runs on log time stamped by the leader (sessions module, rule 1); a
        // follower's stamp is never used (it answers NotLeader).
        let log_time = self.wall_ms_at_start + self.started.elapsed().as_millis() as u64;
        let Node {
            driver,
            inbox_raft,
            inbox_writes,
            inbox_reads,
            inbox_status,
            bad_frames,
            ..
        } = self;
        driver.net_mut().transport.recv(|inc| match inc {
            Incoming::Frame(f) => match (f.from, f.kind) {
                (Endpoint::Node(_), KIND_RAFT) => match decode_message(f.payload) {
                    Ok(m) => inbox_raft.push(m),
                    Err(e) => {
                        *bad_frames += 1;
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
                        *bad_frames += 1;
                        tracing::warn!(from = %f.from, error = %e, "dropping malformed client frame");
                    }
                },
                (from, kind) => {
                    *bad_frames += 1;
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
            if let Err(e) = self.driver.step(m) {
                tracing::warn!(error = %e, "ignoring Raft message");
            }
        }
        self.driver
            .propose_writes(std::mem::take(&mut self.inbox_writes));
        self.driver
            .start_reads(std::mem::take(&mut self.inbox_reads));
        for (client, req_id) in std::mem::take(&mut self.inbox_status) {
            let json = serde_json::to_vec(&self.status_snapshot()).unwrap_or_default();
            let f = ServerFrame::Ok {
                req_id,
                result: json,
            };
            self.driver.net_mut().respond(client, f);
        }
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
            self.driver.net_mut().transport.set_blocked_directions(
                Endpoint::Node(peer as u32),
                send,
                recv,
            );
        }
        tracing::info!(id = me, blocked = ?matrix.blocked, "partition matrix applied");
    }

    /// The state machine digest and the applied index it covers. Recomputed when the node is
    /// quiescent (nothing applied since the last computation was requested) or when the cached
    /// one is a second old; otherwise the cached one is returned with its own index, so readers
    /// compare digests only where `digest_index == applied_index`.
    fn current_digest(&self) -> (Index, Digests) {
        let now = Instant::now();
        let applied = self.driver.applied();
        let quiet = self.digest_last_applied.replace(applied) == applied;
        match self.digest_cache.get() {
            Some((i, d, _)) if i == applied => (i, d),
            // Busy (entries applied since the last call) and recently computed: reuse.
            Some((i, d, at)) if !quiet && now.duration_since(at) < Duration::from_secs(1) => (i, d),
            _ => {
                let (with_sessions, state_machine) = self.driver.state_machine().digests();
                let d = Digests {
                    with_sessions,
                    state_machine,
                };
                self.digest_cache.set(Some((applied, d, now)));
                (applied, d)
            }
        }
    }

    /// The node's status, as written to the status file and answered to status requests.
    pub fn status_snapshot(&self) -> status::NodeStatus {
        let s = self.driver.raft().status();
        let counters = self.counters().driver;
        let (digest_index, digest) = self.current_digest();
        let storage = self.driver.raft().store().storage();
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
            applied_index: self.driver.applied().get(),
            last_index: s.last_index.get(),
            durable_index: storage.wal.durable_index().0,
            snapshot_index: s.snapshot_index.get(),
            log_bytes,
            segments: segments.len() as u64,
            fsync_policy: self.cfg.fsync_policy.to_string(),
            digest: format!("{:016x}", digest.with_sessions),
            state_machine_digest: format!("{:016x}", digest.state_machine),
            digest_index: digest_index.get(),
            entries_appended: counters.entries_appended,
            append_calls: counters.append_calls,
            snapshots_written: counters.snapshots_written,
            snapshots_installed: counters.snapshots_installed,
            syncs: storage.wal.sync_count(),
            entries_applied: counters.entries_applied,
            writes_answered: counters.writes_answered,
            reads_answered: counters.reads_answered,
            last_snapshot_install: self.driver.raft().store().last_snapshot_install().cloned(),
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
