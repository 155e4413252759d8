//! The leader's view of one follower (Raft Figure 2 "volatile state on leaders", plus the
//! pipelining window and snapshot transfer state; shaped after etcd's tracker/progress.go).

use crate::message::SnapshotMeta;
use crate::types::{Index, NodeId};
use std::collections::VecDeque;

/// How the leader currently replicates to a follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Where the follower's log matches is unknown: one AppendEntries at a time, each waiting for
    /// its answer (or a heartbeat answer) before the next (Raft §5.3 consistency check).
    Probe,
    /// The follower's log matches up to `match_index`: entries are streamed optimistically,
    /// bounded by the in-flight window.
    Replicate,
    /// The entries the follower needs are compacted: a snapshot is being sent in chunks (Raft §7).
    Snapshot(SnapshotTransfer),
}

/// An InstallSnapshot transfer in progress. Chunks are streamed: up to
/// `Config::snapshot_inflight_bytes` of them travel unacknowledged, so the follower always has
/// the next chunk while it writes one (a stop-and-wait transfer pays a round trip per chunk).
/// The follower accepts chunks only in order and answers each with the bytes it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotTransfer {
    pub meta: SnapshotMeta,
    /// Bytes the follower has confirmed receiving. Grows, except when the follower starts over.
    pub offset: u64,
    /// Offset of the next chunk to send. Invariant: `offset <= next_send`; the chunks in
    /// `[offset, next_send)` are in flight.
    pub next_send: u64,
    /// The final chunk is in flight (nothing more to send until an answer or a retransmit).
    pub last_sent: bool,
    /// Leader ticks since the follower last confirmed progress (retransmit when stalled).
    pub stalled_ticks: u64,
}

impl SnapshotTransfer {
    /// A transfer of `meta` from its first byte.
    pub fn new(meta: SnapshotMeta) -> SnapshotTransfer {
        SnapshotTransfer {
            meta,
            offset: 0,
            next_send: 0,
            last_sent: false,
            stalled_ticks: 0,
        }
    }

    /// Whether chunks are sent and not yet confirmed.
    pub fn in_flight(&self) -> bool {
        self.last_sent || self.next_send > self.offset
    }

    /// Sends again from what the follower confirmed (chunks were lost, or it started over).
    pub fn rewind_to(&mut self, offset: u64) {
        self.offset = offset;
        self.next_send = offset;
        self.last_sent = false;
    }
}

#[derive(Clone, Debug)]
pub struct Progress {
    pub id: NodeId,
    /// Highest index known replicated *and durable* on the follower. Only grows within a term.
    /// Invariant: `match_index < next_index`.
    pub match_index: Index,
    /// Index of the next entry to send.
    pub next_index: Index,
    pub state: ProgressState,
    /// In Probe: an AppendEntries is in flight; wait for its answer or the next heartbeat answer.
    pub probe_sent: bool,
    /// (last index, bytes) of each AppendEntries in flight in Replicate. Bounded by
    /// `max_inflight_msgs` entries and `max_inflight_bytes` bytes.
    pub inflight: VecDeque<(Index, u64)>,
    pub inflight_bytes: u64,
    /// Leader ticks since the window last moved while entries were outstanding.
    pub stalled_ticks: u64,
    /// Heard from within the current CheckQuorum period (thesis §6.2).
    pub recent_active: bool,
    /// Highest heartbeat round this follower acknowledged (ReadIndex, thesis §6.4).
    pub read_seq_acked: u64,
    /// The commit index last sent in an AppendEntries (a commit-only update is sent when it
    /// lags).
    pub commit_sent: Index,
}

impl Progress {
    pub fn new(id: NodeId, next_index: Index) -> Progress {
        Progress {
            id,
            match_index: Index::ZERO,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            stalled_ticks: 0,
            recent_active: true,
            read_seq_acked: 0,
            commit_sent: Index::ZERO,
        }
    }

    pub fn become_probe(&mut self, next_index: Index) {
        self.state = ProgressState::Probe;
        self.next_index = next_index.max(self.match_index.next());
        self.probe_sent = false;
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.stalled_ticks = 0;
    }

    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index.next();
        self.probe_sent = false;
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.stalled_ticks = 0;
    }

    /// Records that the follower holds everything up to `index`. Returns whether match grew.
    pub fn maybe_update(&mut self, index: Index) -> bool {
        let grew = index > self.match_index;
        if grew {
            self.match_index = index;
            self.stalled_ticks = 0;
        }
        if self.next_index <= index {
            self.next_index = index.next();
        }
        while let Some(&(last, bytes)) = self.inflight.front() {
            if last > index {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= bytes;
        }
        grew
    }

    pub fn window_full(&self, max_msgs: usize, max_bytes: u64) -> bool {
        self.inflight.len() >= max_msgs || self.inflight_bytes >= max_bytes
    }

    pub fn check(&self) -> Result<(), String> {
        if let ProgressState::Snapshot(t) = &self.state {
            if t.offset > t.next_send {
                return Err(format!(
                    "progress of {}: snapshot transfer confirmed {} > sent {}",
                    self.id, t.offset, t.next_send
                ));
            }
        }
        if self.match_index >= self.next_index {
            return Err(format!(
                "progress of {}: match_index {} >= next_index {}",
                self.id, self.match_index, self.next_index
            ));
        }
        let sum: u64 = self.inflight.iter().map(|&(_, b)| b).sum();
        if sum != self.inflight_bytes {
            return Err(format!(
                "progress of {}: in-flight bytes {} != {}",
                self.id, self.inflight_bytes, sum
            ));
        }
        Ok(())
    }
}
