//! `D/cluster.json`: a cluster's configuration, written by `shmraft cluster` and read by every
//! other command that takes `--dir D` (node, kv, status, nemesis, torture).
//!
//! Layout of a cluster directory:
//!
//! | path | what |
//! |---|---|
//! | `cluster.json` | this file |
//! | `partition.json` | the nemesis drop matrix (absent: no partition) |
//! | `node<I>/` | node I's data directory (WAL, hard state, snapshots, `status.json`, `node.pid`) |
//! | `logs/node-<I>.log` | node I's log output |
//! | `node<I>.initialized` | node I has run: an empty `node<I>/` then means lost state (C5) |
//! | `hold-<I>` | while present, the supervisor does not restart node I (a nemesis is at work) |
//!
//! Rings and FIFOs live in the runtime directory named in the file (under /dev/shm).

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use shmraft_consensus::NodeId;
use shmraft_consensus::node::NodeConfig;
use std::path::{Path, PathBuf};

pub const CLUSTER_FILE_NAME: &str = "cluster.json";
pub const PID_FILE_NAME: &str = "node.pid";

/// One node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterNode {
    pub id: u64,
    pub data_dir: PathBuf,
    /// The pid the supervisor last started it with (the node's own `node.pid` is authoritative).
    pub pid: Option<u32>,
}

/// The cluster's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub version: u32,
    pub cluster_id: u64,
    pub runtime_dir: PathBuf,
    pub fsync: String,
    pub election_timeout_ms: (u64, u64),
    pub heartbeat_ms: u64,
    /// Length of a core tick; elections and heartbeats are counted in ticks.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    pub snapshot_entries: u64,
    /// Snapshot after this many applied entry bytes (0: never by size). Absent in files of
    /// older builds: the node default, 64 MiB.
    #[serde(default = "default_snapshot_bytes")]
    pub snapshot_bytes: u64,
    /// Entries kept behind a snapshot when compacting. Absent in files of older builds: the
    /// node default, 1024.
    #[serde(default = "default_compaction_retain_entries")]
    pub compaction_retain_entries: u64,
    pub segment_bytes: u64,
    pub ring_bytes: usize,
    /// How long a node's loop spins before parking, microseconds.
    #[serde(default = "default_spin_us")]
    pub spin_us: u32,
    pub nodes: Vec<ClusterNode>,
}

fn default_tick_ms() -> u64 {
    10
}

fn default_spin_us() -> u32 {
    10
}

impl ClusterFile {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(CLUSTER_FILE_NAME)
    }

    /// Loads `D/cluster.json`, with a message that says what to do when it is missing.
    pub fn load(dir: &Path) -> anyhow::Result<ClusterFile> {
        let p = Self::path(dir);
        let b = std::fs::read(&p).with_context(|| {
            format!(
                "cannot read {}: is {} a cluster directory? (start one with `shmraft cluster --dir {}`)",
                p.display(),
                dir.display(),
                dir.display()
            )
        })?;
        let f: ClusterFile = serde_json::from_slice(&b)
            .with_context(|| format!("{} is not a valid cluster file", p.display()))?;
        if f.version != 1 {
            bail!(
                "{} has version {}; this build reads version 1",
                p.display(),
                f.version
            );
        }
        Ok(f)
    }

    /// Writes the file atomically (temporary file, rename).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let p = Self::path(dir);
        let tmp = dir.join(format!("{CLUSTER_FILE_NAME}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &p).with_context(|| format!("renaming to {}", p.display()))?;
        Ok(())
    }

    pub fn node(&self, id: u64) -> anyhow::Result<&ClusterNode> {
        self.nodes.iter().find(|n| n.id == id).with_context(|| {
            format!(
                "node {id} is not in this cluster (nodes: {:?})",
                self.nodes.iter().map(|n| n.id).collect::<Vec<_>>()
            )
        })
    }

    pub fn voters(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| NodeId(n.id)).collect()
    }

    /// The node configuration for node `id` of the cluster in `dir`.
    pub fn node_config(&self, dir: &Path, id: u64) -> anyhow::Result<NodeConfig> {
        let n = self.node(id)?;
        let mut c = NodeConfig::new(
            NodeId(id),
            self.voters(),
            n.data_dir.clone(),
            self.runtime_dir.clone(),
        );
        c.cluster_id = self.cluster_id;
        c.fsync_policy = self
            .fsync
            .parse()
            .map_err(|e| anyhow::anyhow!("cluster.json: {e}"))?;
        c.election_timeout_ms = self.election_timeout_ms;
        c.heartbeat_ms = self.heartbeat_ms;
        c.tick_ms = self.tick_ms;
        c.snapshot_entries = self.snapshot_entries;
        c.snapshot_bytes = self.snapshot_bytes;
        c.compaction_retain_entries = self.compaction_retain_entries;
        c.segment_bytes = self.segment_bytes;
        c.ring_bytes = self.ring_bytes;
        c.spin_us = self.spin_us;
        c.partition_file = Some(dir.join("partition.json"));
        c.core_config()
            .map_err(|e| anyhow::anyhow!("cluster.json: {e}"))?;
        Ok(c)
    }
}

/// The node driver's default (`NodeConfig::new`).
pub fn default_snapshot_bytes() -> u64 {
    64 << 20
}

/// The node driver's default (`NodeConfig::new`).
pub fn default_compaction_retain_entries() -> u64 {
    1024
}

/// Whether a process with this pid exists (a zombie counts until it is reaped).
pub fn pid_alive(pid: u32) -> bool {
    use nix::errno::Errno;
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    match kill(Pid::from_raw(pid as i32), None) {
        Ok(()) => true,
        Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// The pid a node recorded in its data directory, if it is still running.
pub fn live_node_pid(data_dir: &Path) -> Option<u32> {
    let s = std::fs::read_to_string(data_dir.join(PID_FILE_NAME)).ok()?;
    let pid: u32 = s.trim().parse().ok()?;
    pid_alive(pid).then_some(pid)
}

/// Path of the marker saying node `id` has run (and so has state that must not vanish).
pub fn initialized_marker(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node{id}.initialized"))
}

/// Path of the marker that keeps the supervisor from restarting node `id`.
pub fn hold_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("hold-{id}"))
}

/// Parses `MIN-MAX` milliseconds.
pub fn parse_range_ms(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("expected MIN-MAX in milliseconds, got {s:?}"))?;
    let a: u64 = a.trim().parse().map_err(|_| format!("bad minimum {a:?}"))?;
    let b: u64 = b.trim().parse().map_err(|_| format!("bad maximum {b:?}"))?;
    if a == 0 || a >= b {
        return Err(format!("need 0 < MIN < MAX, got {a}-{b}"));
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_refuse_nonsense() {
        assert_eq!(parse_range_ms("150-300"), Ok((150, 300)));
        assert!(parse_range_ms("300-150").is_err());
        assert!(parse_range_ms("x").is_err());
        assert!(parse_range_ms("0-10").is_err());
    }

    #[test]
    fn a_cluster_file_without_the_snapshot_size_fields_reads_with_the_node_defaults() {
        let old = r#"{"version":1,"cluster_id":7,"runtime_dir":"/dev/shm/x","fsync":"never",
            "election_timeout_ms":[150,300],"heartbeat_ms":30,"tick_ms":10,
            "snapshot_entries":100000,"segment_bytes":67108864,"ring_bytes":1048576,
            "nodes":[{"id":1,"data_dir":"/tmp/n1","pid":null}]}"#;
        let f: ClusterFile = serde_json::from_str(old).unwrap();
        let defaults = NodeConfig::new(NodeId(1), vec![NodeId(1)], "/d", "/r");
        assert_eq!(f.snapshot_bytes, defaults.snapshot_bytes);
        assert_eq!(
            f.compaction_retain_entries,
            defaults.compaction_retain_entries
        );
        let c = f.node_config(Path::new("/tmp"), 1).unwrap();
        assert_eq!(c.snapshot_bytes, defaults.snapshot_bytes);
    }

    #[test]
    fn our_own_pid_is_alive() {
        assert!(pid_alive(std::process::id()));
    }
}
