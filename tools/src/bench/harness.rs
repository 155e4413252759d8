//! A cluster of real node processes started, driven and stopped by a benchmark.

use crate::cli::cluster::{
    ClusterArgs, prepare, spawn_node_opts, stop_all, sweep_stale_runtime_dirs,
};
use crate::cli::cluster_file::{ClusterFile, live_node_pid};
use anyhow::{Context, bail};
use shmraft_consensus::node::client::{Client, ClientConfig};
use shmraft_consensus::node::status::NodeStatus;
use shmraft_consensus::types::NodeId;
use shmraft_storage::FsyncPolicy;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// A running cluster in its own directory; stopped (nodes terminated, runtime files removed)
/// on drop. The directory is removed on drop unless it was given by the user.
pub struct BenchCluster {
    pub dir: PathBuf,
    pub cf: ClusterFile,
    children: HashMap<u64, Child>,
    _tmp: Option<tempfile::TempDir>,
}

impl BenchCluster {
    /// Creates a cluster directory under `parent` (a fresh temporary directory, or `dir` itself
    /// when `keep` is set) with the settings of `spec` (its `dir` field is ignored), starts one
    /// process per node and waits until a leader is elected.
    pub fn start(spec: &ClusterArgs, parent: &Path, keep: Option<&str>) -> anyhow::Result<Self> {
        Self::start_with(spec, parent, keep, |_| {})
    }

    /// [`BenchCluster::start`], with `edit` applied to the cluster file before any node starts
    /// (for settings `ClusterArgs` has no flag for, such as snapshot thresholds).
    pub fn start_with(
        spec: &ClusterArgs,
        parent: &Path,
        keep: Option<&str>,
        edit: impl FnOnce(&mut ClusterFile),
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let (dir, tmp) = match keep {
            Some(name) => {
                let d = parent.join(name);
                if d.exists() {
                    std::fs::remove_dir_all(&d)
                        .with_context(|| format!("removing the old {}", d.display()))?;
                }
                (d, None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("shmraft-bench-")
                    .tempdir_in(parent)
                    .with_context(|| format!("creating a directory in {}", parent.display()))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        sweep_stale_runtime_dirs();
        let mut a = spec.clone();
        a.cluster.dir = dir.clone();
        let mut cf = prepare(&a)?;
        let dir = std::fs::canonicalize(&dir)?;
        edit(&mut cf);
        for n in &cf.nodes {
            cf.node_config(&dir, n.id)?; // the edited settings are valid
        }
        cf.save(&dir)?;
        let mut c = BenchCluster {
            dir,
            cf,
            children: HashMap::new(),
            _tmp: tmp,
        };
        for id in c.cf.nodes.iter().map(|n| n.id).collect::<Vec<_>>() {
            c.start_node(id)?;
        }
        c.wait_for_leader(Duration::from_secs(30))?;
        Ok(c)
    }

    /// Spawns node `id` (after a kill, a restart).
    pub fn start_node(&mut self, id: u64) -> anyhow::Result<()> {
        let child = spawn_node_opts(&self.dir, id, true)?;
        self.children.insert(id, child);
        Ok(())
    }

    /// The node ids.
    pub fn ids(&self) -> Vec<u64> {
        self.cf.nodes.iter().map(|n| n.id).collect()
    }

    /// The pid of node `id` while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        let n = self.cf.node(id).ok()?;
        live_node_pid(&n.data_dir).or_else(|| self.children.get(&id).map(|c| c.id()))
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.children.remove(&id) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// How to reach the cluster.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::new(self.cf.runtime_dir.clone(), self.cf.voters())
            .with_cluster_id(self.cf.cluster_id)
    }

    /// Every node's status, asked over the client channel (None: no answer within `each`).
    pub fn statuses(&self, c: &mut Client, each: Duration) -> Vec<(u64, Option<NodeStatus>)> {
        self.ids()
            .into_iter()
            .map(|id| {
                let s = c.status(NodeId(id), each).ok();
                (id, s)
            })
            .collect()
    }

    /// Waits until some node reports itself leader; returns its id.
    pub fn wait_for_leader(&self, within: Duration) -> anyhow::Result<u64> {
        let mut c = Client::new(self.client_config())?;
        let deadline = Instant::now() + within;
        loop {
            let leader = self
                .statuses(&mut c, Duration::from_millis(200))
                .into_iter()
                .filter_map(|(_, s)| s)
                .filter(|s| s.role == "leader")
                .max_by_key(|s| s.term);
            if let Some(l) = leader {
                return Ok(l.id);
            }
            if Instant::now() >= deadline {
                bail!(
                    "no leader elected within {within:?}; node logs are in {}",
                    self.dir.join("logs").display()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for BenchCluster {
    fn drop(&mut self) {
        stop_all(&self.cf, &mut self.children, Duration::from_secs(10));
    }
}

/// CPU time (user + system) a process has used, from /proc/PID/stat; None if it is gone.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz.max(1)))
}

/// CPU time (user + system) used by this process so far.
pub fn self_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .map(|t| Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32))
        .unwrap_or_default()
}

/// The settings of the 3-node clusters of `bench failover` and `bench catchup`: `fsync`, the
/// election timeout range, a heartbeat of a fifth of its minimum, then `extra` flags.
pub fn three_node_args(
    fsync: FsyncPolicy,
    (emin, emax): (u64, u64),
    extra: &[String],
) -> anyhow::Result<ClusterArgs> {
    let mut flags: Vec<String> = vec![
        "--nodes".into(),
        "3".into(),
        "--fsync".into(),
        fsync.to_string(),
        "--election-timeout-ms".into(),
        format!("{emin}-{emax}"),
        "--heartbeat-ms".into(),
        (emin / 5).max(1).to_string(),
    ];
    flags.extend_from_slice(extra);
    cluster_args(&flags)
}

/// The `ClusterArgs` that `shmraft cluster` builds from `flags` (e.g. `["--fsync", "never"]`),
/// every setting not named at its command-line default. Benchmarks build their specs this way
/// rather than as struct literals, so a setting added to `ClusterArgs` later gets its default
/// instead of breaking them.
pub fn cluster_args(flags: &[String]) -> anyhow::Result<ClusterArgs> {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        cluster: ClusterArgs,
    }
    let argv = ["cluster", "--dir", "."]
        .into_iter()
        .map(String::from)
        .chain(flags.iter().cloned());
    Flags::try_parse_from(argv)
        .map(|f| f.cluster)
        .map_err(|e| anyhow::anyhow!("cluster settings {flags:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_args_take_the_named_flags_and_the_command_line_defaults() {
        let a = cluster_args(&[
            "--fsync".into(),
            "never".into(),
            "--nodes".into(),
            "5".into(),
        ])
        .unwrap();
        assert_eq!((a.nodes, a.sync.fsync), (5, FsyncPolicy::Never));
        assert_eq!(a.timing.election_timeout_ms, (150, 300), "the default");
        assert_eq!(a.tick_ms, None);
        assert!(cluster_args(&["--no-such-flag".into()]).is_err());
    }
}
