//! `shmraft torture`: a concurrent key-value workload against a real cluster while faults are
//! injected at random, then heal, then check:
//!
//! 1. the client history is linearizable (the in-repo checker, `shmraft check-history`);
//! 2. every acknowledged append is in the final value of its key (unless a put that may have
//!    come later overwrote it), so acknowledged writes lost on power cuts are counted;
//! 3. all nodes converge to equal state machine digests;
//! 4. no node died on its own (every exit was a fault we injected).
//!
//! Under `always` and `batch` no acknowledged write may be lost, even on power cuts. Under
//! `interval` and `never` a power cut may lose acknowledged writes (docs/DURABILITY.md): the
//! report counts them and the run does not fail for that reason alone.
//!
//! Torture supervises the node processes itself (it must know which exits it caused).

use crate::args::{ClusterDirArg, ElectionTimeoutArg, FsyncArg, JsonFlag};
use crate::chaos::nemesis::{Fault, apply};
use crate::cli::cluster::{
    ClusterArgs, prepare, spawn_node_opts, stop_all, sweep_stale_runtime_dirs,
};
use crate::cli::cluster_file::ClusterFile;
use crate::cli::status::collect;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shmraft_consensus::history::{HistoryWriter, OpKind, Operation};
use shmraft_consensus::kv::client::KvClient;
use shmraft_consensus::lincheck::{CheckOutcome, check_history};
use shmraft_consensus::node::client::{ClientConfig, ClientError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Run a workload under random faults and check linearizability and durability.
#[derive(clap::Args, Debug, Clone)]
#[command(mut_arg("election_timeout_ms", |a| a.default_value("100-200")))]
pub struct TortureArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// How long faults are injected, seconds (then heal and check).
    #[arg(long, default_value_t = 30)]
    pub duration_s: u64,
    #[command(flatten)]
    pub sync: FsyncArg,
    /// Faults to inject, comma-separated: kill, pause, partition, powercut (or "none").
    #[arg(long, default_value = "kill,pause,partition,powercut")]
    pub faults: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    pub clients: u64,
    /// Keys the workload uses.
    #[arg(long, default_value_t = 8)]
    pub keys: u64,
    /// Seed of the workload and fault schedule (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the client history (JSON lines) here.
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Cluster directory (default: a temporary one, kept only if the run fails).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub timing: ElectionTimeoutArg,
    /// Snapshot every this many entries (small, so snapshots and InstallSnapshot happen).
    #[arg(long, default_value_t = 500)]
    pub snapshot_entries: u64,
    /// Time budget of the linearizability check, seconds.
    #[arg(long, default_value_t = 120)]
    pub check_timeout_s: u64,
    #[command(flatten)]
    pub output: JsonFlag,
    /// Put every node's data directory on its own crash file system mount: a power cut
    /// crashes the mount (unsynced writes dropped by the file system, not by the log's own
    /// ledger), remounts it and restarts the node. Needs /dev/fuse and root (or fusermount3).
    #[arg(long)]
    pub crash_fs: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum FaultKind {
    Kill,
    Pause,
    Partition,
    Powercut,
}

fn parse_faults(s: &str) -> anyhow::Result<Vec<FaultKind>> {
    if s == "none" {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|f| match f.trim() {
            "kill" => Ok(FaultKind::Kill),
            "pause" => Ok(FaultKind::Pause),
            "partition" => Ok(FaultKind::Partition),
            "powercut" => Ok(FaultKind::Powercut),
            other => anyhow::bail!(
                "unknown fault {other:?}; choose from kill, pause, partition, powercut, none"
            ),
        })
        .collect()
}

/// What a run found.
#[derive(Debug, Default, serde::Serialize)]
pub struct TortureReport {
    pub seed: u64,
    pub fsync: String,
    pub duration_s: u64,
    pub ops: usize,
    pub ops_ok: usize,
    pub ops_unknown: usize,
    pub faults: HashMap<String, u64>,
    pub linearizable: String,
    pub acknowledged_appends_checked: usize,
    pub acknowledged_appends_lost: usize,
    pub converged: bool,
    pub digests: Vec<String>,
    pub nodes_died_on_their_own: Vec<String>,
    pub violations: Vec<String>,
    pub dir: String,
    /// How power cuts were simulated (super::crashfs_nodes::power_cut_model).
    pub power_cut_model: String,
    /// What the crash-fs power cuts did (with `--crash-fs`).
    pub crash_fs: Option<super::crashfs_nodes::CrashFsStats>,
}

struct Supervisor {
    dir: PathBuf,
    cf: ClusterFile,
    children: HashMap<u64, Child>,
    /// Nodes we took down and when to bring them back.
    restart_at: HashMap<u64, Instant>,
    paused: HashMap<u64, Instant>,
    died: Vec<String>,
    /// The nodes' crash file system mounts (with `--crash-fs`).
    crashfs: Option<super::crashfs_nodes::CrashFsNodes>,
}

impl Supervisor {
    fn reap(&mut self) {
        let ids: Vec<u64> = self.children.keys().copied().collect();
        for id in ids {
            let c = self.children.get_mut(&id).expect("listed");
            if let Ok(Some(st)) = c.try_wait() {
                let pid = c.id();
                self.children.remove(&id);
                // Faults we inject reap their victims themselves, so any exit seen here
                // happened on its own.
                self.died.push(format!(
                    "node {id} (pid {pid}) exited on its own: {st}; see {}",
                    self.dir
                        .join("logs")
                        .join(format!("node-{id}.log"))
                        .display()
                ));
                self.restart_at
                    .insert(id, Instant::now() + Duration::from_millis(200));
            }
        }
    }

    fn down_or_paused(&self) -> usize {
        self.cf.nodes.len() - self.children.len() + self.paused.len()
    }

    fn start(&mut self, id: u64) -> anyhow::Result<()> {
        let c = spawn_node_opts(&self.dir, id, true)?;
        self.children.insert(id, c);
        Ok(())
    }

    /// Restarts nodes and resumes pauses whose time has come (all of them with `all`).
    fn service(&mut self, all: bool) {
        self.reap();
        let now = Instant::now();
        let due: Vec<u64> = self
            .restart_at
            .iter()
            .filter(|(_, t)| all || now >= **t)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.restart_at.remove(&id);
            if let Err(e) = self.start(id) {
                self.died
                    .push(format!("node {id} could not be restarted: {e:#}"));
            }
        }
        let due: Vec<u64> = self
            .paused
            .iter()
            .filter(|(_, t)| all || now >= **t)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.paused.remove(&id);
            let _ = apply(&self.dir, &Fault::Resume { node: id });
        }
    }
}

fn now_ns(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// One client's workload loop.
fn client_loop(
    client_no: u64,
    cfg: ClientConfig,
    keys: u64,
    seed: u64,
    start: Instant,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Vec<Operation>>>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (client_no.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    let mut client = match KvClient::new(cfg.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("client {client_no}: {e}");
            return;
        }
    };
    let t = Duration::from_millis(1000);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("k{}", rng.random_range(0..keys));
        let roll = rng.random_range(0..10);
        // Mostly appends: each is unique and stays in its key's value until a put, so a lost
        // acknowledged write is visible at the end.
        let kind = match roll {
            0..=4 => OpKind::Append,
            5 => OpKind::Put,
            _ => OpKind::Get,
        };
        let value = match kind {
            OpKind::Get => String::new(),
            _ => format!("c{client_no}.{n};"),
        };
        let call = now_ns(start);
        let r = match kind {
            OpKind::Put => client
                .put(key.as_bytes(), value.as_bytes(), t)
                .map(|_| None),
            OpKind::Append => client
                .append(key.as_bytes(), value.as_bytes(), t)
                .map(|_| None),
            OpKind::Get => client.get(key.as_bytes(), t).map(Some),
        };
        let ret = now_ns(start);
        let mut op = Operation {
            client: client_no,
            kind,
            key,
            value,
            output: String::new(),
            call,
            ret: Some(ret),
            ok: true,
        };
        match r {
            Ok(Some(v)) => op.output = String::from_utf8_lossy(&v).into_owned(),
            Ok(None) => {}
            Err(ClientError::Unknown(_)) => {
                op.ok = false;
                op.ret = None;
            }
            Err(ClientError::SessionExpired) => {
                op.ok = false;
                op.ret = None;
                if let Ok(c) = KvClient::new(cfg.clone()) {
                    client = c;
                }
            }
            // A read that timed out, or a refused request, had no effect: leave it out.
            Err(_) => continue,
        }
        out.lock().expect("history lock").push(op);
    }
}

/// Counts acknowledged appends missing from the final value of their key. An append is
/// required to be present only if every put on its key (of any outcome) returned before the
/// append was called, so no put can be linearized after it.
fn lost_appends(ops: &[Operation], finals: &HashMap<String, String>) -> (usize, usize) {
    let mut checked = 0;
    let mut lost = 0;
    for a in ops.iter().filter(|o| o.kind == OpKind::Append && o.ok) {
        let overwritable = ops
            .iter()
            .any(|p| p.kind == OpKind::Put && p.key == a.key && p.ret.is_none_or(|r| r >= a.call));
        if overwritable {
            continue;
        }
        checked += 1;
        if !finals.get(&a.key).is_some_and(|v| v.contains(&a.value)) {
            lost += 1;
        }
    }
    (checked, lost)
}

pub fn run(a: &TortureArgs) -> ExitCode {
    crate::cli::node::init_logging_quiet();
    match torture(a) {
        Ok(report) => {
            let failed = !report.violations.is_empty();
            if a.output.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print_report(&report);
            }
            if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("shmraft torture: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn print_report(r: &TortureReport) {
    println!(
        "torture report (seed {}, fsync {}, {} s)",
        r.seed, r.fsync, r.duration_s
    );
    println!(
        "  operations: {} ({} acknowledged, {} unknown outcome)",
        r.ops, r.ops_ok, r.ops_unknown
    );
    let mut f: Vec<_> = r.faults.iter().collect();
    f.sort();
    println!("  faults injected: {f:?}");
    println!("  power-cut model: {}", r.power_cut_model);
    if let Some(c) = &r.crash_fs {
        println!(
            "  crash-fs power cuts: {} {:?}; unsynced ops {} (kept {}, torn {}, lost {}); directories reverted {}",
            c.power_cuts,
            c.modes,
            c.unsynced_ops,
            c.ops_kept,
            c.ops_torn,
            c.ops_lost,
            c.dirs_reverted
        );
    }
    println!("  linearizable: {}", r.linearizable);
    println!(
        "  acknowledged appends checked: {}, lost: {}",
        r.acknowledged_appends_checked, r.acknowledged_appends_lost
    );
    println!(
        "  converged with equal digests: {} {:?}",
        r.converged, r.digests
    );
    for d in &r.nodes_died_on_their_own {
        println!("  DIED: {d}");
    }
    if r.violations.is_empty() {
        println!("  result: PASS");
    } else {
        for v in &r.violations {
            println!("  VIOLATION: {v}");
        }
        println!("  result: FAIL (cluster directory kept: {})", r.dir);
    }
}

pub(crate) fn torture(a: &TortureArgs) -> anyhow::Result<TortureReport> {
    let faults = parse_faults(&a.faults)?;
    let policy = a.sync.fsync;
    if a.clients == 0 || a.keys == 0 {
        anyhow::bail!("--clients and --keys must be at least 1");
    }
    let seed = a.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let (dir, tmp) = match &a.dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("shmraft-torture-")
                .tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    sweep_stale_runtime_dirs();
    let cf = prepare(&ClusterArgs {
        nodes: a.nodes,
        cluster: ClusterDirArg { dir: dir.clone() },
        sync: a.sync.clone(),
        timing: a.timing.clone(),
        heartbeat_ms: (a.timing.election_timeout_ms.0 / 5).max(1),
        tick_ms: None,
        spin_us: 10,
        snapshot_entries: a.snapshot_entries,
        segment_bytes: 4 << 20,
        restart: false,
        exit_with_parent: false,
    })?;
    let dir = std::fs::canonicalize(&dir)?;
    let crashfs = match a.crash_fs {
        true => Some(super::crashfs_nodes::CrashFsNodes::mount_all(&dir, &cf)?),
        false => None,
    };
    let mut sup = Supervisor {
        dir: dir.clone(),
        cf: cf.clone(),
        children: HashMap::new(),
        restart_at: HashMap::new(),
        paused: HashMap::new(),
        died: Vec::new(),
        crashfs,
    };
    let mut report = TortureReport {
        seed,
        fsync: policy.to_string(),
        duration_s: a.duration_s,
        dir: dir.display().to_string(),
        power_cut_model: super::crashfs_nodes::power_cut_model(a.crash_fs).into(),
        ..Default::default()
    };
    let result = drive(a, &faults, &mut rng, &mut sup, &cf, &mut report);
    stop_all(&cf, &mut sup.children, Duration::from_secs(10));
    if let Some(c) = sup.crashfs.as_mut() {
        report.crash_fs = Some(c.stats.clone());
        c.unmount_all()?;
    }
    result?;
    report.nodes_died_on_their_own = sup.died.clone();
    for d in &sup.died {
        report.violations.push(d.clone());
    }
    let may_lose = !policy.acknowledges_after_sync() && faults.contains(&FaultKind::Powercut);
    if report.acknowledged_appends_lost > 0 && !may_lose {
        report.violations.push(format!(
            "{} acknowledged appends were lost under fsync {}",
            report.acknowledged_appends_lost, report.fsync
        ));
    }
    // Under a policy that may lose acknowledged writes on a power cut, a lost append also
    // makes the history non-linearizable; the loss is then reported, not a failure.
    let loss_explains_it = may_lose && report.acknowledged_appends_lost > 0;
    if !report.linearizable.starts_with("yes") && !loss_explains_it {
        report
            .violations
            .push(format!("history check: {}", report.linearizable));
    }
    if !report.converged {
        report
            .violations
            .push("the nodes did not converge to equal digests after healing".into());
    }
    if report.violations.is_empty() {
        drop(tmp); // removes a temporary directory
    } else if let Some(t) = tmp {
        let _ = t.keep();
    }
    Ok(report)
}

fn drive(
    a: &TortureArgs,
    faults: &[FaultKind],
    rng: &mut StdRng,
    sup: &mut Supervisor,
    cf: &ClusterFile,
    report: &mut TortureReport,
) -> anyhow::Result<()> {
    for n in &cf.nodes {
        sup.start(n.id)?;
    }
    let dir = sup.dir.clone();
    wait_for("a first leader", Duration::from_secs(30), || {
        collect(&dir).is_ok_and(|s| s.iter().any(|n| n.alive && n.role == "leader"))
    })?;
    let client_cfg =
        ClientConfig::new(cf.runtime_dir.clone(), cf.voters()).with_cluster_id(cf.cluster_id);
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (1..=a.clients)
        .map(|c| {
            let (cfg, stop, ops) = (client_cfg.clone(), stop.clone(), ops.clone());
            let seed = rng.random();
            let keys = a.keys;
            std::thread::spawn(move || client_loop(c, cfg, keys, seed, start, stop, ops))
        })
        .collect();
    let bar = crate::progress_bar(a.duration_s * 10, "torture");
    let end = start + Duration::from_secs(a.duration_s);
    let mut next_fault = Instant::now() + Duration::from_millis(rng.random_range(200..800));
    let max_down = (cf.nodes.len() - 1) / 2;
    let mut partition_until: Option<Instant> = None;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
        bar.set_position((start.elapsed().as_millis() / 100) as u64);
        sup.service(false);
        if partition_until.is_some_and(|t| Instant::now() >= t) {
            apply(&dir, &Fault::Heal)?;
            partition_until = None;
        }
        if faults.is_empty() || Instant::now() < next_fault {
            continue;
        }
        next_fault = Instant::now() + Duration::from_millis(rng.random_range(300..1500));
        let kind = faults[rng.random_range(0..faults.len())];
        let up: Vec<u64> = sup
            .children
            .keys()
            .copied()
            .filter(|id| !sup.paused.contains_key(id))
            .collect();
        let victim = up.get(rng.random_range(0..up.len().max(1))).copied();
        let process_fault = matches!(
            kind,
            FaultKind::Kill | FaultKind::Pause | FaultKind::Powercut
        );
        if process_fault && (sup.down_or_paused() >= max_down || victim.is_none()) {
            continue;
        }
        let back = Instant::now() + Duration::from_millis(rng.random_range(200..1500));
        match (kind, victim) {
            (FaultKind::Kill, Some(v)) | (FaultKind::Powercut, Some(v)) => {
                // We are the nodes' parent: kill and reap here (a zombie would look alive).
                if let Some(mut c) = sup.children.remove(&v) {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                if let (FaultKind::Powercut, Some(c)) = (kind, sup.crashfs.as_mut()) {
                    c.power_cut(v, rng.random())?;
                } else if kind == FaultKind::Powercut {
                    let data_dir = cf.node(v)?.data_dir.clone();
                    shmraft_storage::power_cut(&data_dir, rng.random())
                        .map_err(|e| anyhow::anyhow!("power cut of node {v}: {e}"))?;
                }
                sup.restart_at.insert(v, back);
            }
            (FaultKind::Pause, Some(v)) => {
                apply(&dir, &Fault::Pause { node: v })?;
                sup.paused.insert(v, back);
            }
            (FaultKind::Partition, _) => {
                if partition_until.is_some() {
                    continue;
                }
                let mut ids: Vec<u64> = cf.nodes.iter().map(|n| n.id).collect();
                let cut = rng.random_range(1..ids.len());
                // A random split: shuffle, then cut.
                for i in (1..ids.len()).rev() {
                    ids.swap(i, rng.random_range(0..=i));
                }
                let spec = |g: &[u64]| g.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
                let groups = format!("{}/{}", spec(&ids[..cut]), spec(&ids[cut..]));
                apply(&dir, &Fault::Partition { groups })?;
                partition_until = Some(back);
            }
            _ => continue,
        }
        *report
            .faults
            .entry(format!("{kind:?}").to_lowercase())
            .or_default() += 1;
    }
    bar.finish_and_clear();
    // Heal everything, stop the workload, and let the cluster converge.
    apply(&dir, &Fault::Heal)?;
    sup.service(true);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let mut final_client = KvClient::new(client_cfg.clone())?;
    let t = Duration::from_secs(10);
    final_client
        .put(b"torture-barrier", b"done", t)
        .map_err(|e| anyhow::anyhow!("the cluster did not accept a write after healing: {e}"))?;
    report.converged = wait_for("convergence", Duration::from_secs(60), || {
        sup.service(true);
        collect(&dir).is_ok_and(|s| {
            s.iter().all(|n| n.alive)
                && s.iter().all(|n| {
                    n.applied_index == s[0].applied_index
                        && n.digest_index == n.applied_index
                        && n.digest == s[0].digest
                })
        })
    })
    .is_ok();
    report.digests = collect(&dir)?.into_iter().map(|n| n.digest).collect();
    // Final reads, part of the history.
    let mut ops = std::mem::take(&mut *ops.lock().expect("history lock"));
    let mut finals = HashMap::new();
    for k in 0..a.keys {
        let key = format!("k{k}");
        let call = now_ns(start);
        let v = final_client
            .get(key.as_bytes(), t)
            .map_err(|e| anyhow::anyhow!("final read of {key}: {e}"))?;
        let v = String::from_utf8_lossy(&v).into_owned();
        ops.push(Operation {
            client: a.clients + 1,
            kind: OpKind::Get,
            key: key.clone(),
            value: String::new(),
            output: v.clone(),
            call,
            ret: Some(now_ns(start)),
            ok: true,
        });
        finals.insert(key, v);
    }
    report.ops = ops.len();
    report.ops_ok = ops.iter().filter(|o| o.ok).count();
    report.ops_unknown = report.ops - report.ops_ok;
    if let Some(path) = &a.history {
        write_history(path, &ops)?;
    }
    (
        report.acknowledged_appends_checked,
        report.acknowledged_appends_lost,
    ) = lost_appends(&ops, &finals);
    report.linearizable = match check_history(&ops, Some(Duration::from_secs(a.check_timeout_s))) {
        Ok(r) => match r.outcome {
            CheckOutcome::Linearizable => "yes".into(),
            CheckOutcome::NotLinearizable(v) => format!("NO: {v:?}"),
            CheckOutcome::Unknown { keys, reason } => {
                format!("unknown: the checker gave up on keys {keys:?} ({reason:?})")
            }
        },
        Err(e) => format!("invalid history: {e}"),
    };
    Ok(())
}

fn write_history(path: &Path, ops: &[Operation]) -> anyhow::Result<()> {
    let f = std::fs::File::create(path)?;
    let mut w = HistoryWriter::new(std::io::BufWriter::new(f));
    for o in ops {
        w.write(o)?;
    }
    w.flush()?;
    Ok(())
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !f() {
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {within:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, key: &str, value: &str, call: u64, ret: Option<u64>) -> Operation {
        Operation {
            client: 1,
            kind,
            key: key.into(),
            value: value.into(),
            output: String::new(),
            call,
            ret,
            ok: ret.is_some(),
        }
    }

    #[test]
    fn an_acknowledged_append_missing_from_the_final_value_is_lost() {
        let ops = vec![
            op(OpKind::Append, "k", "a;", 1, Some(2)),
            op(OpKind::Append, "k", "b;", 3, Some(4)),
        ];
        let finals = HashMap::from([("k".to_string(), "a;".to_string())]);
        assert_eq!(lost_appends(&ops, &finals), (2, 1));
    }

    #[test]
    fn appends_a_later_or_unknown_put_may_overwrite_are_not_required() {
        let ops = vec![
            op(OpKind::Append, "k", "a;", 1, Some(2)),
            op(OpKind::Put, "k", "p", 5, None), // unknown put: may land any time later
            op(OpKind::Append, "j", "x;", 1, Some(2)),
            op(OpKind::Put, "j", "q", 0, Some(3)), // overlaps the append
        ];
        let finals = HashMap::from([("k".to_string(), "p".to_string())]);
        assert_eq!(lost_appends(&ops, &finals), (0, 0));
    }

    #[test]
    fn fault_lists_parse_and_refuse_unknown_names() {
        assert_eq!(parse_faults("kill,pause").unwrap().len(), 2);
        assert!(parse_faults("none").unwrap().is_empty());
        assert!(parse_faults("explode").is_err());
    }
}
