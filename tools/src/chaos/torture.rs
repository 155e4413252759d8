//! `shmraft torture`: a concurrent key-value workload against a real cluster while faults are
//! injected at random, then heal, then check:
//!
//! 1. the client history is linearizable (the in-repo checker, `shmraft check-history`);
//! 2. every acknowledged append is in the final value of its key, exactly once and in real-time
//!    order ([`durability`]), so acknowledged writes lost on power cuts are counted. The
//!    workload has keys that only ever receive appends (`a<slot>.<generation>`), so every
//!    acknowledged append on them is checked; on the other keys (`k<i>`, puts, appends and
//!    gets) only appends no put can have overwritten are. The report counts the checked
//!    appends per fault in effect when they were acknowledged;
//! 3. all nodes converge to equal state machine digests;
//! 4. no node died on its own (every exit was a fault we injected).
//!
//! Under `always` and `batch` no acknowledged write may be lost, even on power cuts. Under
//! `interval` and `never` a power cut may lose acknowledged writes (docs/DURABILITY.md): the
//! report counts them and the run does not fail for that reason alone.
//!
//! Torture supervises the node processes itself (it must know which exits it caused).

use crate::args::{ClusterDirArg, ElectionTimeoutArg, FsyncArg, JsonFlag};
use crate::chaos::durability::{self, AppendCounts, FaultKind, FaultList, FaultTimeline, NO_FAULT};
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
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Appends one append-only key receives before the workload moves on to the slot's next key:
/// bounds the values the nodes snapshot and the checker replays (each key is checked alone).
const APPENDS_PER_KEY: u64 = 1000;

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
    pub faults: FaultList,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    pub clients: u64,
    /// Keys that receive puts, appends and reads.
    #[arg(long, default_value_t = 8)]
    pub keys: u64,
    /// Slots of keys that only ever receive appends (each slot moves to a fresh key every
    /// 1000 appends), so every acknowledged append on them is checked at the end.
    #[arg(long, default_value_t = 4)]
    pub append_keys: u64,
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
    pub acknowledged_appends_duplicated: usize,
    pub acknowledged_appends_misordered: usize,
    /// The same counts per fault in effect when the append was acknowledged (`kill`, `pause`,
    /// `partition`, `powercut`, or `none`), one entry per injected kind and `none`.
    pub acknowledged_appends_by_fault: BTreeMap<String, AppendCounts>,
    /// Seconds the durability check of the appends took.
    pub append_check_s: f64,
    /// Seconds the linearizability check took.
    pub linearizability_check_s: f64,
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
    /// When each injected fault was in effect, on the history's clock.
    timeline: FaultTimeline,
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
            self.timeline.end_on_node(id);
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
            self.timeline.end_on_node(id);
        }
    }
}

fn now_ns(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// What a client's workload draws its keys from.
#[derive(Clone)]
struct Keys {
    /// Keys `k0..` (puts, appends, reads).
    mixed: u64,
    /// Appends made so far per append-only slot: slot `s` appends to `a<s>.<count / 1000>`.
    append_only: Arc<Vec<AtomicU64>>,
}

impl Keys {
    /// The next operation: 40 % appends to an append-only key, 10 % appends, 10 % puts and
    /// 40 % reads on the mixed keys.
    fn next(&self, rng: &mut StdRng) -> (OpKind, String) {
        let roll = rng.random_range(0..10);
        if roll < 4 && !self.append_only.is_empty() {
            let slot = rng.random_range(0..self.append_only.len());
            let n = self.append_only[slot].fetch_add(1, Ordering::Relaxed);
            return (OpKind::Append, format!("a{slot}.{}", n / APPENDS_PER_KEY));
        }
        let key = format!("k{}", rng.random_range(0..self.mixed));
        let kind = match roll {
            0..=4 => OpKind::Append,
            5 => OpKind::Put,
            _ => OpKind::Get,
        };
        (kind, key)
    }
}

/// One client's workload loop.
fn client_loop(
    client_no: u64,
    cfg: ClientConfig,
    keys: Keys,
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
        let (kind, key) = keys.next(&mut rng);
        // Every written value is unique and ends with `;`, so the final value of a key splits
        // into the appends it holds.
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
    println!(
        "  linearizable: {} (checked in {:.1} s)",
        r.linearizable, r.linearizability_check_s
    );
    println!(
        "  acknowledged appends checked: {}, lost: {}, duplicated: {}, out of order: {} \
         (checked in {:.2} s)",
        r.acknowledged_appends_checked,
        r.acknowledged_appends_lost,
        r.acknowledged_appends_duplicated,
        r.acknowledged_appends_misordered,
        r.append_check_s
    );
    println!("    by the fault in effect when acknowledged:");
    for (fault, c) in &r.acknowledged_appends_by_fault {
        println!(
            "    {fault:<10} checked {:>8}, lost {}, duplicated {}, out of order {}",
            c.checked, c.lost, c.duplicated, c.misordered
        );
    }
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
    let faults = &a.faults.0;
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
    // The history's clock: operation times and fault times are ns since this instant.
    let clock = Instant::now();
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
        timeline: FaultTimeline::new(clock),
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
    let result = drive(a, clock, &mut rng, &mut sup, &cf, &mut report);
    stop_all(&cf, &mut sup.children, Duration::from_secs(10));
    if let Some(c) = sup.crashfs.as_mut() {
        report.crash_fs = Some(c.stats.clone());
        c.unmount_all()?;
    }
    result?;
    report.nodes_died_on_their_own = sup.died.clone();
    judge(&mut report, policy, faults);
    if report.violations.is_empty() {
        drop(tmp); // removes a temporary directory
    } else if let Some(t) = tmp {
        let _ = t.keep();
    }
    Ok(report)
}

/// Turns what the run found into violations.
fn judge(report: &mut TortureReport, policy: shmraft_storage::FsyncPolicy, faults: &[FaultKind]) {
    for d in &report.nodes_died_on_their_own {
        report.violations.push(d.clone());
    }
    let may_lose = !policy.acknowledges_after_sync() && faults.contains(&FaultKind::Powercut);
    let wrong = report.acknowledged_appends_lost
        + report.acknowledged_appends_duplicated
        + report.acknowledged_appends_misordered;
    if wrong > 0 && !may_lose {
        report.violations.push(format!(
            "of {} acknowledged appends checked, {} were lost, {} duplicated and {} out of \
             order under fsync {}",
            report.acknowledged_appends_checked,
            report.acknowledged_appends_lost,
            report.acknowledged_appends_duplicated,
            report.acknowledged_appends_misordered,
            report.fsync
        ));
    }
    // Under a policy that may lose acknowledged writes on a power cut, a lost append also
    // makes the history non-linearizable; the loss is then reported, not a failure.
    let loss_explains_it = may_lose && wrong > 0;
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
}

/// Starts the nodes and the workload, injects faults for `--duration-s`, heals, lets the
/// cluster converge, reads every key and checks the history.
fn drive(
    a: &TortureArgs,
    clock: Instant,
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
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(Mutex::new(Vec::new()));
    let keys = Keys {
        mixed: a.keys,
        append_only: Arc::new((0..a.append_keys).map(|_| AtomicU64::new(0)).collect()),
    };
    let threads: Vec<_> = (1..=a.clients)
        .map(|c| {
            let (cfg, stop, ops) = (client_cfg.clone(), stop.clone(), ops.clone());
            let (seed, keys) = (rng.random(), keys.clone());
            std::thread::spawn(move || client_loop(c, cfg, keys, seed, clock, stop, ops))
        })
        .collect();
    inject_faults(a, rng, sup, cf, report)?;
    // Heal everything, stop the workload, and let the cluster converge.
    apply(&dir, &Fault::Heal)?;
    sup.timeline.end_partition();
    sup.service(true);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let mut final_client = KvClient::new(client_cfg.clone())?;
    final_client
        .put(b"torture-barrier", b"done", Duration::from_secs(10))
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
    let mut ops = std::mem::take(&mut *ops.lock().expect("history lock"));
    let finals = final_reads(a, &mut final_client, clock, &mut ops)?;
    report.ops = ops.len();
    report.ops_ok = ops.iter().filter(|o| o.ok).count();
    report.ops_unknown = report.ops - report.ops_ok;
    if let Some(path) = &a.history {
        write_history(path, &ops)?;
    }
    check(a, &ops, &finals, &sup.timeline, report);
    Ok(())
}

/// Injects random faults until `--duration-s` has passed, restarting and resuming nodes as
/// their time comes. At most a minority of the nodes is down or paused at once.
fn inject_faults(
    a: &TortureArgs,
    rng: &mut StdRng,
    sup: &mut Supervisor,
    cf: &ClusterFile,
    report: &mut TortureReport,
) -> anyhow::Result<()> {
    let faults = &a.faults.0;
    let dir = sup.dir.clone();
    let start = Instant::now();
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
            sup.timeline.end_partition();
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
        let back = Instant::now() + Duration::from_millis(rng.random_range(200..1500));
        let injected = match (kind, victim) {
            (FaultKind::Partition, _) if partition_until.is_none() => {
                partition(&dir, cf, rng)?;
                sup.timeline.begin(kind, None);
                partition_until = Some(back);
                true
            }
            (FaultKind::Partition, _) | (_, None) => false,
            _ if sup.down_or_paused() >= max_down => false,
            (FaultKind::Pause, Some(v)) => {
                apply(&dir, &Fault::Pause { node: v })?;
                sup.timeline.begin(kind, Some(v));
                sup.paused.insert(v, back);
                true
            }
            (FaultKind::Kill | FaultKind::Powercut, Some(v)) => {
                // We are the nodes' parent: kill and reap here (a zombie would look alive).
                if let Some(mut c) = sup.children.remove(&v) {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                if kind == FaultKind::Powercut {
                    match sup.crashfs.as_mut() {
                        Some(c) => c.power_cut(v, rng.random())?,
                        None => power_cut(cf, v, rng.random())?,
                    }
                }
                sup.timeline.begin(kind, Some(v));
                sup.restart_at.insert(v, back);
                true
            }
        };
        if injected {
            *report.faults.entry(kind.name().to_string()).or_default() += 1;
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// The power-cut step of a `powercut` fault, on node `node` whose process was just killed and
/// reaped: its data directory is torn as a power cut would tear it (storage's seam: what the
/// sync ledger says was synced is kept; after it, 512-byte pieces are dropped, kept or torn by
/// `seed`). Another way of cutting power (a crash file system) plugs in here.
fn power_cut(cf: &ClusterFile, node: u64, seed: u64) -> anyhow::Result<()> {
    let data_dir = &cf.node(node)?.data_dir;
    shmraft_storage::power_cut(data_dir, seed)
        .map_err(|e| anyhow::anyhow!("power cut of node {node}: {e}"))?;
    Ok(())
}

/// Splits the nodes into two random non-empty groups.
fn partition(dir: &Path, cf: &ClusterFile, rng: &mut StdRng) -> anyhow::Result<()> {
    let mut ids: Vec<u64> = cf.nodes.iter().map(|n| n.id).collect();
    let cut = rng.random_range(1..ids.len());
    // A random split: shuffle, then cut.
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.random_range(0..=i));
    }
    let spec = |g: &[u64]| g.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let groups = format!("{}/{}", spec(&ids[..cut]), spec(&ids[cut..]));
    apply(dir, &Fault::Partition { groups }).map(|_| ())
}

/// Reads every key the workload used (all `k<i>`, and every append-only key that received
/// an operation), recording the reads in the history; returns the values.
fn final_reads(
    a: &TortureArgs,
    client: &mut KvClient,
    clock: Instant,
    ops: &mut Vec<Operation>,
) -> anyhow::Result<HashMap<String, String>> {
    let mut keys: BTreeSet<String> = (0..a.keys).map(|k| format!("k{k}")).collect();
    keys.extend(ops.iter().map(|o| o.key.clone()));
    let mut finals = HashMap::with_capacity(keys.len());
    for key in keys {
        let call = now_ns(clock);
        let v = client
            .get(key.as_bytes(), Duration::from_secs(10))
            .map_err(|e| anyhow::anyhow!("final read of {key}: {e}"))?;
        let v = String::from_utf8_lossy(&v).into_owned();
        ops.push(Operation {
            client: a.clients + 1,
            kind: OpKind::Get,
            key: key.clone(),
            value: String::new(),
            output: v.clone(),
            call,
            ret: Some(now_ns(clock)),
            ok: true,
        });
        finals.insert(key, v);
    }
    Ok(finals)
}

/// The durability check of the appends and the linearizability check of the history.
fn check(
    a: &TortureArgs,
    ops: &[Operation],
    finals: &HashMap<String, String>,
    timeline: &FaultTimeline,
    report: &mut TortureReport,
) {
    let t = Instant::now();
    let appends = durability::check_appends(ops, finals, timeline);
    report.append_check_s = t.elapsed().as_secs_f64();
    report.acknowledged_appends_checked = appends.total.checked;
    report.acknowledged_appends_lost = appends.total.lost;
    report.acknowledged_appends_duplicated = appends.total.duplicated;
    report.acknowledged_appends_misordered = appends.total.misordered;
    // Every injected kind and `none` appear, with zeros where nothing was checked.
    let kinds = a.faults.0.iter().map(|k| k.name()).chain([NO_FAULT]);
    for k in kinds {
        let counts = appends.by_fault.get(k).copied().unwrap_or_default();
        report
            .acknowledged_appends_by_fault
            .insert(k.to_string(), counts);
    }
    for (k, c) in appends.by_fault {
        report
            .acknowledged_appends_by_fault
            .insert(k.to_string(), c);
    }
    let t = Instant::now();
    report.linearizable = match check_history(ops, Some(Duration::from_secs(a.check_timeout_s))) {
        Ok(r) => match r.outcome {
            CheckOutcome::Linearizable => "yes".into(),
            CheckOutcome::NotLinearizable(v) => format!("NO: {v:?}"),
            CheckOutcome::Unknown { keys, reason } => {
                format!("unknown: the checker gave up on keys {keys:?} ({reason:?})")
            }
        },
        Err(e) => format!("invalid history: {e}"),
    };
    report.linearizability_check_s = t.elapsed().as_secs_f64();
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

    #[test]
    fn append_only_keys_move_on_after_a_thousand_appends_and_get_nothing_else() {
        let keys = Keys {
            mixed: 3,
            append_only: Arc::new(vec![AtomicU64::new(0)]),
        };
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen = BTreeMap::<String, u64>::new();
        for _ in 0..10_000 {
            let (kind, key) = keys.next(&mut rng);
            if key.starts_with('a') {
                assert_eq!(kind, OpKind::Append, "{key}");
                *seen.entry(key).or_default() += 1;
            }
        }
        assert!(seen.len() >= 3, "{seen:?}");
        assert!(seen.values().all(|&n| n <= APPENDS_PER_KEY), "{seen:?}");
        assert_eq!(seen["a0.0"], APPENDS_PER_KEY);
    }

    #[test]
    fn a_bad_fault_list_is_a_usage_error_naming_the_flag() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            t: TortureArgs,
        }
        let e = T::try_parse_from(["t", "--faults", "kill,explode"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("--faults") && e.contains("explode"), "{e}");
        let ok = T::try_parse_from(["t", "--faults", "none"]).map(|t| t.t.faults.0.len());
        assert_eq!(ok.ok(), Some(0));
    }
}
