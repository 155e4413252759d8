//! The node's status as JSON: written to `<data_dir>/status.json` a few times a second (so
//! `shmraft status` can show a node's last known state even after it died) and answered to
//! status requests over the client channel.

use crate::raft::RoleKind;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::path::Path;

/// File name of the status file inside a node's data directory.
pub const STATUS_FILE_NAME: &str = "status.json";

/// One node's status. Field names are part of `shmraft status --json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: u64,
    pub pid: u32,
    /// Whether the process runs; the node always writes `true`, readers correct it.
    pub alive: bool,
    /// `leader`, `follower`, `candidate` or `precandidate`.
    pub role: String,
    pub term: u64,
    /// The leader this node follows (0: unknown).
    pub leader: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
    pub durable_index: u64,
    pub snapshot_index: u64,
    pub log_bytes: u64,
    pub segments: u64,
    pub fsync_policy: String,
    /// The replicated state's digest (hex) as of `digest_index`: FNV-1a over the state machine's
    /// own digest (`state_machine_digest`) and the exactly-once session table (log clock, and
    /// per client: id, first unacked sequence number, last activity, cached results). Equal on
    /// nodes that applied the same entries. Computing it reads the whole state, so it is
    /// refreshed at most once a second while entries are being applied, and at once when the
    /// node is quiet.
    pub digest: String,
    /// The embedded state machine's own `StateMachine::digest` (hex), as of `digest_index`: the
    /// value to compare with a model of the state machine. Absent in status files of older
    /// builds.
    #[serde(default)]
    pub state_machine_digest: String,
    /// The applied index `digest` covers; compare digests only when it equals `applied_index`.
    pub digest_index: u64,
    pub entries_appended: u64,
    pub append_calls: u64,
    pub snapshots_written: u64,
    pub snapshots_installed: u64,
    /// Data syncs of the log since the node started (entries per sync: `entries_appended /
    /// syncs`). Absent in status files of older builds.
    #[serde(default)]
    pub syncs: u64,
    /// Entries applied to the state machine since the node started.
    #[serde(default)]
    pub entries_applied: u64,
    /// Client writes and reads answered since the node started.
    #[serde(default)]
    pub writes_answered: u64,
    #[serde(default)]
    pub reads_answered: u64,
    pub updated_unix_ms: u64,
}

/// The role's name as `shmraft status` spells it.
pub fn role_name(r: RoleKind) -> &'static str {
    match r {
        RoleKind::Leader => "leader",
        RoleKind::Follower => "follower",
        RoleKind::Candidate => "candidate",
        RoleKind::PreCandidate => "precandidate",
    }
}

/// Writes the status file atomically (temporary file, rename). It is advisory, so it is not
/// synced.
pub fn write_status_file(data_dir: &Path, s: &NodeStatus) -> io::Result<()> {
    let tmp = data_dir.join(format!("{STATUS_FILE_NAME}.tmp"));
    // One write: serde_json on an unbuffered File made a syscall per token, dozens per status
    // write, on the node's loop thread.
    let mut b = serde_json::to_vec(s).map_err(io::Error::other)?;
    b.push(b'\n');
    std::fs::File::create(&tmp)?.write_all(&b)?;
    std::fs::rename(&tmp, data_dir.join(STATUS_FILE_NAME))
}

/// Reads a node's status file; `None` if it does not exist yet.
pub fn read_status_file(data_dir: &Path) -> io::Result<Option<NodeStatus>> {
    let p = data_dir.join(STATUS_FILE_NAME);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", p.display()))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
