//! `shmraft demo`: the README's main command. In well under 30 s on a 2-core machine it starts
//! three node processes, writes a few thousand key-value operations, kills the leader with
//! SIGKILL and times the election, keeps writing while snapshots compact the log, restarts the
//! killed node and shows it catching up through InstallSnapshot, checks every acknowledged
//! write and the state machine digests, prints a summary and cleans up.

use crate::args::{ClusterDirArg, ElectionTimeoutArg, FsyncArg};
use crate::cli::cluster::{
    ClusterArgs, prepare, spawn_node_opts, stop_all, sweep_stale_runtime_dirs,
};
use crate::cli::cluster_file::ClusterFile;
use crate::cli::status::collect;
use anyhow::{Context, bail};
use shmraft_consensus::kv::client::KvClient;
use shmraft_consensus::node::client::ClientConfig;
use shmraft_consensus::node::status::NodeStatus;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Start a 3-node cluster, break it, heal it, and show that nothing acknowledged was lost.
#[derive(clap::Args, Debug)]
#[command(mut_arg("fsync", |a| a.default_value("batch")))]
pub struct DemoArgs {
    /// Cluster directory (default: a temporary one, removed at the end).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub sync: FsyncArg,
    /// Writes before the leader is killed.
    #[arg(long, default_value_t = 3000)]
    pub writes_before: u64,
    /// Writes while the killed node is down (more than a snapshot interval plus the entries
    /// kept behind it, so the node must catch up by InstallSnapshot).
    #[arg(long, default_value_t = 4000)]
    pub writes_during: u64,
}

const CLIENTS: u64 = 8;
const SNAPSHOT_ENTRIES: u64 = 1000;

fn section(title: &str) {
    println!("\n== {title}");
}

fn leader(s: &[NodeStatus]) -> Option<&NodeStatus> {
    s.iter()
        .filter(|n| n.alive && n.role == "leader")
        .max_by_key(|n| n.term)
}

fn wait_for<T>(
    what: &str,
    within: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Writes `count` unique keys from `CLIENTS` threads; returns the acknowledged keys and the
/// rate.
fn write_phase(cfg: &ClientConfig, phase: &str, count: u64) -> anyhow::Result<(Vec<String>, f64)> {
    let bar = crate::progress_bar(count, phase);
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let (cfg, done, phase) = (cfg.clone(), done.clone(), phase.to_string());
            std::thread::spawn(move || -> anyhow::Result<Vec<String>> {
                let mut c = KvClient::new(cfg)?;
                let mut acked = Vec::new();
                for i in (t..count).step_by(CLIENTS as usize) {
                    let key = format!("{phase}-{i:06}");
                    match c.put(
                        key.as_bytes(),
                        format!("value-{i}").as_bytes(),
                        Duration::from_secs(10),
                    ) {
                        Ok(()) => acked.push(key),
                        Err(e) => eprintln!("  write {key}: {e}"),
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(acked)
            })
        })
        .collect();
    let mut acked = Vec::new();
    while !threads.iter().all(|t| t.is_finished()) {
        bar.set_position(done.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(20));
    }
    for t in threads {
        acked.extend(
            t.join()
                .map_err(|_| anyhow::anyhow!("a client thread panicked"))??,
        );
    }
    bar.finish_and_clear();
    let rate = acked.len() as f64 / start.elapsed().as_secs_f64();
    Ok((acked, rate))
}

fn snapshot_bytes(data_dir: &Path) -> u64 {
    std::fs::read_dir(data_dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("snap-"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

pub fn run(a: &DemoArgs) -> ExitCode {
    crate::cli::node::init_logging_quiet();
    let tmp;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => match tempfile::Builder::new().prefix("shmraft-demo-").tempdir() {
            Ok(t) => {
                let p = t.path().to_path_buf();
                tmp = Some(t);
                let _ = &tmp;
                p
            }
            Err(e) => {
                eprintln!("shmraft demo: cannot create a temporary directory: {e}");
                return ExitCode::from(1);
            }
        },
    };
    let mut children = HashMap::new();
    let mut cf = None;
    let r = demo(a, &dir, &mut children, &mut cf);
    if let Some(cf) = &cf {
        stop_all(cf, &mut children, Duration::from_secs(10));
    }
    match r {
        Ok(()) => {
            println!("\ncleaned up: node processes stopped, runtime files removed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "\nshmraft demo FAILED: {e:#}\n(node logs: {}/logs)",
                dir.display()
            );
            ExitCode::from(1)
        }
    }
}

fn demo(
    a: &DemoArgs,
    dir: &Path,
    children: &mut HashMap<u64, Child>,
    cf_out: &mut Option<ClusterFile>,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    section("starting a 3-node cluster");
    sweep_stale_runtime_dirs();
    let cf = prepare(&ClusterArgs {
        nodes: 3,
        cluster: ClusterDirArg {
            dir: dir.to_path_buf(),
        },
        sync: a.sync.clone(),
        timing: ElectionTimeoutArg {
            election_timeout_ms: (150, 300),
        },
        heartbeat_ms: 30,
        tick_ms: None,
        spin_us: 10,
        snapshot_entries: SNAPSHOT_ENTRIES,
        segment_bytes: 8 << 20,
        restart: false,
        exit_with_parent: false,
    })?;
    *cf_out = Some(cf.clone());
    let dir = std::fs::canonicalize(dir)?;
    for n in &cf.nodes {
        children.insert(n.id, spawn_node_opts(&dir, n.id, true)?);
    }
    let started = Instant::now();
    let first = wait_for("a leader", Duration::from_secs(20), || {
        collect(&dir).ok().and_then(|s| leader(&s).cloned())
    })?;
    println!(
        "3 node processes (pids {}), fsync {}, data in {}",
        children
            .values()
            .map(|c| c.id().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        cf.fsync,
        dir.display()
    );
    println!(
        "node {} became leader in term {} after {} ms",
        first.id,
        first.term,
        started.elapsed().as_millis()
    );

    let cfg = ClientConfig::new(cf.runtime_dir.clone(), cf.voters()).with_cluster_id(cf.cluster_id);
    section(&format!(
        "writing {} keys from {CLIENTS} clients",
        a.writes_before
    ));
    let (mut acked, rate1) = write_phase(&cfg, "before", a.writes_before)?;
    println!("{} writes acknowledged, {:.0} writes/s", acked.len(), rate1);

    section(&format!(
        "killing the leader, node {}, with SIGKILL",
        first.id
    ));
    let victim = first.id;
    if let Some(mut c) = children.remove(&victim) {
        c.kill().context("killing the leader")?;
        let _ = c.wait();
    }
    let killed_at = Instant::now();
    let new = wait_for("a new leader", Duration::from_secs(20), || {
        collect(&dir).ok().and_then(|s| {
            leader(&s)
                .filter(|l| l.id != victim && l.term > first.term)
                .cloned()
        })
    })?;
    let election_ms = killed_at.elapsed().as_secs_f64() * 1000.0;
    println!(
        "node {} is the new leader in term {}: elected {:.0} ms after the kill",
        new.id, new.term, election_ms
    );

    section(&format!(
        "writing {} more keys while node {victim} is down (snapshot every {SNAPSHOT_ENTRIES} entries)",
        a.writes_during
    ));
    let (more, rate2) = write_phase(&cfg, "during", a.writes_during)?;
    acked.extend(more);
    println!(
        "{} more writes acknowledged, {:.0} writes/s",
        acked.len() - a.writes_before as usize,
        rate2
    );
    let s = collect(&dir)?;
    for n in s.iter().filter(|n| n.alive) {
        println!(
            "node {}: snapshot at index {}, log {}..={} in {} segment(s), {} snapshots written",
            n.id,
            n.snapshot_index,
            n.snapshot_index + 1,
            n.last_index,
            n.segments,
            n.snapshots_written
        );
    }

    section(&format!("restarting node {victim}"));
    children.insert(victim, spawn_node_opts(&dir, victim, true)?);
    let restarted = Instant::now();
    let target = collect(&dir)?
        .iter()
        .filter(|n| n.alive)
        .map(|n| n.commit_index)
        .max()
        .unwrap_or(0);
    let caught = wait_for(
        "the restarted node to catch up",
        Duration::from_secs(30),
        || {
            collect(&dir).ok().and_then(|s| {
                s.into_iter()
                    .find(|n| n.id == victim && n.alive && n.applied_index >= target)
            })
        },
    )?;
    println!(
        "node {victim} caught up to index {} in {} ms, through {} InstallSnapshot transfer(s)",
        caught.applied_index,
        restarted.elapsed().as_millis(),
        caught.snapshots_installed
    );

    section("checking");
    let mut c = KvClient::new(cfg.clone())?;
    let mut missing = 0;
    for k in &acked {
        let v = c.get(k.as_bytes(), Duration::from_secs(10))?;
        let i: u64 = k
            .rsplit('-')
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or(u64::MAX);
        if v != format!("value-{i}").as_bytes() {
            missing += 1;
        }
    }
    if missing > 0 {
        bail!("{missing} acknowledged writes are missing or wrong");
    }
    println!(
        "all {} acknowledged writes read back (linearizable reads)",
        acked.len()
    );
    c.put(b"demo-barrier", b"done", Duration::from_secs(10))?;
    let converged = wait_for("equal digests", Duration::from_secs(20), || {
        let s = collect(&dir).ok()?;
        (s.iter().all(|n| n.alive)
            && s.iter().all(|n| {
                n.applied_index == s[0].applied_index
                    && n.digest_index == n.applied_index
                    && n.digest == s[0].digest
            }))
        .then_some(s)
    })?;
    println!(
        "all 3 nodes applied index {} with equal state machine digests ({})",
        converged[0].applied_index, converged[0].digest
    );

    section("summary");
    println!(
        "throughput: {rate1:.0} writes/s before the kill, {rate2:.0} writes/s after (fsync {})",
        cf.fsync
    );
    println!("election after the leader's SIGKILL: {election_ms:.0} ms");
    let node_dir = &cf.node(new.id)?.data_dir;
    println!(
        "snapshot size on node {}: {} bytes",
        new.id,
        snapshot_bytes(node_dir)
    );
    println!(
        "raft-dump summary of node {} ({}):",
        new.id,
        node_dir.display()
    );
    crate::raft_dump_summary(node_dir);
    println!("total demo time: {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
