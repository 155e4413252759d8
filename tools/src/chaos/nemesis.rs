//! `shmraft nemesis --dir D ...`: break a running cluster on purpose.
//!
//! Process faults act on the node's pid (from its `node.pid`): `kill` (SIGKILL), `pause`
//! (SIGSTOP), `resume` (SIGCONT), `restart` (SIGTERM if running, then start it again), and
//! `powercut`: SIGKILL, then tear the node's data directory as a power cut would (everything a
//! segment holds after its last synced offset is dropped, kept or torn at 512-byte granularity,
//! chosen by a seed). The synced offsets are known after the process died because the log
//! records them in its sync ledger, a small file it updates through a shared mapping after
//! every completed sync: a mapping survives SIGKILL (the page cache keeps it), so the ledger
//! says exactly what a real power cut would have kept.
//!
//! Network faults rewrite the cluster's drop matrix (`partition.json`), which every node
//! re-reads within a tick: `partition 1,2/3,4,5`, `isolate I`, `oneway I->J` (I's messages to J
//! are dropped; J's to I still arrive), `heal`.

use crate::args::ClusterDirArg;
use crate::cli::cluster::spawn_node;
use crate::cli::cluster_file::{ClusterFile, hold_path, live_node_pid, pid_alive};
use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shmraft_consensus::node::partition::{
    PartitionMatrix, read_partition_file, write_partition_file,
};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Inject a fault into the cluster in D.
#[derive(clap::Args, Debug)]
pub struct NemesisArgs {
    #[command(flatten)]
    pub cluster: ClusterDirArg,
    #[command(subcommand)]
    pub fault: Fault,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Fault {
    /// SIGKILL the node.
    Kill {
        #[arg(long)]
        node: u64,
    },
    /// SIGSTOP the node (it keeps its state; peers see silence).
    Pause {
        #[arg(long)]
        node: u64,
    },
    /// SIGCONT a paused node.
    Resume {
        #[arg(long)]
        node: u64,
    },
    /// Stop the node if it runs (SIGTERM), then start it again.
    Restart {
        #[arg(long)]
        node: u64,
    },
    /// SIGKILL the node and tear its log after the last synced offsets, as a power cut would.
    Powercut {
        #[arg(long)]
        node: u64,
        /// Seed choosing which unsynced pages survive (default: random, printed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Split the cluster into groups, e.g. `1,2/3,4,5`: messages between groups are dropped.
    Partition { groups: String },
    /// Cut one node off from every other.
    Isolate { node: u64 },
    /// Drop messages in one direction only, e.g. `1->2`.
    Oneway { link: String },
    /// Remove every partition.
    Heal,
}

fn signal(pid: u32, s: Signal) -> anyhow::Result<()> {
    kill(Pid::from_raw(pid as i32), s).with_context(|| format!("sending {s} to pid {pid}"))
}

fn running_pid(cf: &ClusterFile, id: u64) -> anyhow::Result<u32> {
    let n = cf.node(id)?;
    live_node_pid(&n.data_dir).with_context(|| format!("node {id} is not running"))
}

fn wait_dead(pid: u32, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while pid_alive(pid) {
        if Instant::now() >= deadline {
            bail!("pid {pid} is still alive after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn parse_group(s: &str, cf: &ClusterFile) -> anyhow::Result<Vec<u64>> {
    let mut v = Vec::new();
    for part in s.split(',') {
        let id: u64 = part
            .trim()
            .parse()
            .with_context(|| format!("{part:?} is not a node id"))?;
        cf.node(id)?;
        v.push(id);
    }
    Ok(v)
}

/// Performs one fault; returns a line describing what was done.
pub fn apply(dir: &Path, fault: &Fault) -> anyhow::Result<String> {
    let cf = ClusterFile::load(dir)?;
    let ppath = dir.join("partition.json");
    match fault {
        Fault::Kill { node } => {
            let pid = running_pid(&cf, *node)?;
            signal(pid, Signal::SIGKILL)?;
            Ok(format!("node {node} (pid {pid}) killed"))
        }
        Fault::Pause { node } => {
            let pid = running_pid(&cf, *node)?;
            signal(pid, Signal::SIGSTOP)?;
            Ok(format!("node {node} (pid {pid}) paused"))
        }
        Fault::Resume { node } => {
            let pid = running_pid(&cf, *node)?;
            signal(pid, Signal::SIGCONT)?;
            Ok(format!("node {node} (pid {pid}) resumed"))
        }
        Fault::Restart { node } => {
            let n = cf.node(*node)?;
            if let Some(pid) = live_node_pid(&n.data_dir) {
                let _ = signal(pid, Signal::SIGCONT);
                signal(pid, Signal::SIGTERM)?;
                wait_dead(pid, Duration::from_secs(10))?;
            }
            let child = spawn_node(dir, *node)?;
            Ok(format!("node {node} restarted (pid {})", child.id()))
        }
        Fault::Powercut { node, seed } => {
            let n = cf.node(*node)?;
            let hold = hold_path(dir, *node);
            std::fs::write(&hold, b"powercut\n")?;
            let result = (|| {
                if let Some(pid) = live_node_pid(&n.data_dir) {
                    signal(pid, Signal::SIGKILL)?;
                    wait_dead(pid, Duration::from_secs(10))?;
                }
                let seed = seed.unwrap_or_else(rand::random);
                let report = shmraft_storage::power_cut(&n.data_dir, seed)
                    .with_context(|| format!("tearing {}", n.data_dir.display()))?;
                Ok(format!(
                    "node {node} lost power (seed {seed}); its directory now holds what a power cut keeps: {report:?}"
                ))
            })();
            let _ = std::fs::remove_file(&hold);
            result
        }
        Fault::Partition { groups } => {
            let gs: Vec<Vec<u64>> = groups
                .split('/')
                .map(|g| parse_group(g, &cf))
                .collect::<anyhow::Result<_>>()?;
            if gs.len() < 2 {
                bail!("a partition needs at least two groups separated by '/', e.g. 1,2/3");
            }
            let mut m = PartitionMatrix::default();
            for (i, a) in gs.iter().enumerate() {
                for b in &gs[i + 1..] {
                    m.blocked.extend(PartitionMatrix::split(a, b).blocked);
                }
            }
            write_partition_file(&ppath, &m)?;
            Ok(format!("partitioned {groups}"))
        }
        Fault::Isolate { node } => {
            cf.node(*node)?;
            let others: Vec<u64> = cf
                .nodes
                .iter()
                .map(|n| n.id)
                .filter(|i| i != node)
                .collect();
            write_partition_file(&ppath, &PartitionMatrix::split(&[*node], &others))?;
            Ok(format!("node {node} isolated"))
        }
        Fault::Oneway { link } => {
            let (a, b) = link
                .split_once("->")
                .with_context(|| format!("expected I->J, got {link:?}"))?;
            let a = parse_group(a, &cf)?;
            let b = parse_group(b, &cf)?;
            let mut m = read_partition_file(&ppath)?;
            for &x in &a {
                for &y in &b {
                    if !m.is_blocked(x, y) {
                        m.blocked.push((x, y));
                    }
                }
            }
            write_partition_file(&ppath, &m)?;
            Ok(format!("messages {link} dropped"))
        }
        Fault::Heal => {
            write_partition_file(&ppath, &PartitionMatrix::default())?;
            Ok("healed: no partition".into())
        }
    }
}

pub fn run(a: &NemesisArgs) -> ExitCode {
    match apply(&a.cluster.dir, &a.fault) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shmraft nemesis: {e:#}");
            ExitCode::from(2)
        }
    }
}
