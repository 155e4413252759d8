//! Configuration of the Raft core. Every limit has a unit in its name (style rule 7
//! of docs/STYLE.md).

use crate::types::NodeId;
use thiserror::Error;

/// How the leader confirms its leadership before answering a read (Raft §6.4 / thesis §6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// ReadIndex: the leader records its commit index, confirms with a heartbeat round that a
    /// majority still follows it, then releases the read once that index is applied. Safe under
    /// any clock behaviour. The default.
    ReadIndex,
    /// Lease reads (thesis §6.4.1): the leader answers at its commit index without a round trip
    /// while a majority acknowledged a heartbeat sent less than `election_timeout_min_ticks -
    /// lease_margin_ticks` ago. HAZARD: this relies on bounded clock drift *and* on the process
    /// not being paused between the lease check and the reply. A leader stopped (SIGSTOP, a long
    /// GC-like stall, a VM migration) after checking its lease may answer after a new leader has
    /// committed writes: a stale read. Use only when that risk is acceptable.
    Lease,
}

/// Test-only switches that reintroduce classic Raft bugs, so the simulator's power to catch them
/// can be measured (`tests/bug_seeding.rs`). All are off by default; they exist only with the
/// `bug-seeding` cargo feature, which the crate's own tests enable.
#[cfg(feature = "bug-seeding")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BugSwitches {
    /// Send vote grants before the vote is durable (breaks Raft §5.2 + storage rule 8
    /// of docs/RULES.md).
    pub vote_without_persisting: bool,
    /// Commit an entry from a previous term by counting replicas (the Figure 8 bug, Raft §5.4.2).
    pub commit_previous_term_by_counting: bool,
    /// Followers acknowledge appends before the entries are durable (storage rule 8
    /// of docs/RULES.md).
    pub ack_before_sync: bool,
    /// Answer reads at the commit index without confirming leadership (Raft §6.4 / §8).
    pub read_without_read_index: bool,
    /// Ask the driver to compact the log as soon as a snapshot is requested, before the snapshot
    /// is durable (storage rule 15 of docs/RULES.md).
    pub compact_before_snapshot_durable: bool,
    /// On restart, do not ask the driver to restore the state machine from the stored snapshot.
    pub forget_snapshot_on_restart: bool,
    // Driver bugs (`node::driver`): the core is correct, the code that runs it is not.
    /// The driver sends vote grants when it submits the hard state, not once it is durable.
    pub driver_vote_before_sync: bool,
    /// The driver sends a follower's successful append acknowledgements when it submits the
    /// entries, not once they are durable.
    pub driver_ack_before_sync: bool,
    /// The leader's driver answers a client write once the entry is handed to its own disk,
    /// before a majority holds it (before commit).
    pub driver_client_ack_before_commit: bool,
    /// The driver answers a confirmed read at once, before the state machine applied its read
    /// index.
    pub driver_read_before_apply: bool,
    /// After restoring a snapshot, the driver applies again the entries the log still holds
    /// behind it (they are in the snapshot already).
    pub driver_apply_twice_after_restart: bool,
}

/// The core's configuration. `Config::new(id, voters)` gives the defaults; change fields after.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id (non-zero, one of `voters`).
    pub id: NodeId,
    /// The fixed voting membership (this version does not change membership; see
    /// `EntryKind::Membership`).
    pub voters: Vec<NodeId>,
    /// Election timeouts are drawn uniformly from `[min, max)` ticks (Raft §5.2). With the
    /// intended 10 ms tick the defaults are 150-300 ms.
    pub election_timeout_min_ticks: u64,
    pub election_timeout_max_ticks: u64,
    /// The leader sends heartbeats every this many ticks (must be well under the election timeout).
    pub heartbeat_interval_ticks: u64,
    /// PreVote (thesis §9.6): a node first checks it could win before disrupting the term.
    pub pre_vote: bool,
    /// CheckQuorum (thesis §6.2): a leader that has not heard from a majority within an election
    /// timeout steps down; followers that heard from a leader within the minimum election timeout
    /// ignore vote requests (leader stickiness, thesis §4.2.3).
    pub check_quorum: bool,
    pub read_mode: ReadMode,
    /// Lease reads subtract this many ticks from the lease to cover clock drift between nodes.
    pub lease_margin_ticks: u64,
    /// Largest AppendEntries payload in bytes (at least one entry is always sent).
    pub max_msg_bytes: u64,
    /// Most entries in one AppendEntries.
    pub max_msg_entries: usize,
    /// Bytes of entries in flight to one follower, unacknowledged (pipelining window).
    pub max_inflight_bytes: u64,
    /// AppendEntries messages in flight to one follower.
    pub max_inflight_msgs: usize,
    /// The leader refuses proposals (backpressure) while this many bytes are uncommitted.
    pub max_uncommitted_bytes: u64,
    /// The leader refuses proposals (backpressure) while this many bytes of its log are not yet
    /// durable on its own disk (bounds the in-memory entry cache).
    pub max_unstable_bytes: u64,
    /// Largest single proposal in bytes.
    pub max_entry_bytes: u64,
    /// Most bytes of committed entries handed out for applying in one `Ready`.
    pub max_apply_bytes: u64,
    /// Request a snapshot when this many entries were applied since the last one (0: never).
    pub snapshot_entries: u64,
    /// Request a snapshot when this many entry bytes were applied since the last one (0: never).
    pub snapshot_bytes: u64,
    /// Entries kept before the snapshot point when compacting, so slightly lagging followers
    /// catch up by appends rather than a snapshot.
    pub compaction_retain_entries: u64,
    /// InstallSnapshot chunk size in bytes.
    pub snapshot_chunk_bytes: u64,
    /// Bytes of InstallSnapshot chunks in flight to one follower, unacknowledged (at least one
    /// chunk is always sent). Keep it well under the transport's buffer to a peer (the node's
    /// rings are 1 MiB): a chunk that does not fit is dropped and resent only after a stall.
    pub snapshot_inflight_bytes: u64,
    #[cfg(feature = "bug-seeding")]
    pub bugs: BugSwitches,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("node id 0 is reserved for \"nobody\"; give node ids from 1")]
    ZeroId,
    #[error("node {id} is not among the voters {voters:?}")]
    NotAVoter { id: NodeId, voters: Vec<NodeId> },
    #[error("the voter list contains {0} twice")]
    DuplicateVoter(NodeId),
    #[error(
        "election timeout range [{min}, {max}) ticks is empty or not above the heartbeat interval {heartbeat}"
    )]
    BadTimeouts { min: u64, max: u64, heartbeat: u64 },
    #[error("limit `{name}` must be greater than zero")]
    ZeroLimit { name: &'static str },
    #[error(
        "lease reads rely on leader stickiness: enable check_quorum or use ReadMode::ReadIndex"
    )]
    LeaseWithoutCheckQuorum,
}

impl Config {
    /// Defaults for a 10 ms tick: elections 150-300 ms, heartbeats every 30 ms, PreVote and
    /// CheckQuorum on, ReadIndex reads.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Config {
        Config {
            id,
            voters,
            election_timeout_min_ticks: 15,
            election_timeout_max_ticks: 30,
            heartbeat_interval_ticks: 3,
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::ReadIndex,
            lease_margin_ticks: 2,
            max_msg_bytes: 256 * 1024,
            max_msg_entries: 4096,
            max_inflight_bytes: 4 * 1024 * 1024,
            max_inflight_msgs: 256,
            max_uncommitted_bytes: 16 * 1024 * 1024,
            max_unstable_bytes: 64 * 1024 * 1024,
            max_entry_bytes: 4 * 1024 * 1024,
            max_apply_bytes: 4 * 1024 * 1024,
            snapshot_entries: 100_000,
            snapshot_bytes: 64 * 1024 * 1024,
            compaction_retain_entries: 1024,
            snapshot_chunk_bytes: 256 * 1024,
            snapshot_inflight_bytes: 512 * 1024,
            #[cfg(feature = "bug-seeding")]
            bugs: BugSwitches::default(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == NodeId::ZERO || self.voters.contains(&NodeId::ZERO) {
            return Err(ConfigError::ZeroId);
        }
        if !self.voters.contains(&self.id) {
            return Err(ConfigError::NotAVoter {
                id: self.id,
                voters: self.voters.clone(),
            });
        }
        for (i, v) in self.voters.iter().enumerate() {
            if self.voters[..i].contains(v) {
                return Err(ConfigError::DuplicateVoter(*v));
            }
        }
        if self.election_timeout_min_ticks >= self.election_timeout_max_ticks
            || self.election_timeout_min_ticks <= self.heartbeat_interval_ticks
            || self.heartbeat_interval_ticks == 0
        {
            return Err(ConfigError::BadTimeouts {
                min: self.election_timeout_min_ticks,
                max: self.election_timeout_max_ticks,
                heartbeat: self.heartbeat_interval_ticks,
            });
        }
        if self.read_mode == ReadMode::Lease && !self.check_quorum {
            return Err(ConfigError::LeaseWithoutCheckQuorum);
        }
        let limits: [(&'static str, u64); 10] = [
            ("max_unstable_bytes", self.max_unstable_bytes),
            ("max_msg_bytes", self.max_msg_bytes),
            ("max_msg_entries", self.max_msg_entries as u64),
            ("max_inflight_bytes", self.max_inflight_bytes),
            ("max_inflight_msgs", self.max_inflight_msgs as u64),
            ("max_uncommitted_bytes", self.max_uncommitted_bytes),
            ("max_entry_bytes", self.max_entry_bytes),
            ("max_apply_bytes", self.max_apply_bytes),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes),
            ("snapshot_inflight_bytes", self.snapshot_inflight_bytes),
        ];
        for (name, v) in limits {
            if v == 0 {
                return Err(ConfigError::ZeroLimit { name });
            }
        }
        Ok(())
    }

    #[cfg(feature = "bug-seeding")]
    pub(crate) fn bugs(&self) -> BugSwitches {
        self.bugs
    }

    #[cfg(not(feature = "bug-seeding"))]
    #[inline(always)]
    pub(crate) fn bugs(&self) -> NoBugs {
        NoBugs::default()
    }
}

/// Without the `bug-seeding` feature every switch is a constant `false`, so the checks compile
/// away.
#[cfg(not(feature = "bug-seeding"))]
#[derive(Clone, Copy, Default)]
pub(crate) struct NoBugs {
    pub vote_without_persisting: bool,
    pub commit_previous_term_by_counting: bool,
    pub ack_before_sync: bool,
    pub read_without_read_index: bool,
    pub compact_before_snapshot_durable: bool,
    pub forget_snapshot_on_restart: bool,
    pub driver_vote_before_sync: bool,
    pub driver_ack_before_sync: bool,
    pub driver_client_ack_before_commit: bool,
    pub driver_read_before_apply: bool,
    pub driver_apply_twice_after_restart: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        let ok = Config::new(NodeId(1), vec![NodeId(1), NodeId(2), NodeId(3)]);
        assert_eq!(ok.validate(), Ok(()));
        let mut c = ok.clone();
        c.id = NodeId(4);
        assert!(matches!(c.validate(), Err(ConfigError::NotAVoter { .. })));
        let mut c = ok.clone();
        c.voters.push(NodeId(2));
        assert_eq!(c.validate(), Err(ConfigError::DuplicateVoter(NodeId(2))));
        let mut c = ok.clone();
        c.election_timeout_max_ticks = c.election_timeout_min_ticks;
        assert!(matches!(c.validate(), Err(ConfigError::BadTimeouts { .. })));
        let mut c = ok.clone();
        c.read_mode = ReadMode::Lease;
        c.check_quorum = false;
        assert_eq!(c.validate(), Err(ConfigError::LeaseWithoutCheckQuorum));
        let mut c = ok;
        c.max_inflight_msgs = 0;
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroLimit {
                name: "max_inflight_msgs"
            })
        );
    }
}
