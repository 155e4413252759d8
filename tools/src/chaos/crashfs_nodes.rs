//! `shmraft torture --crash-fs`: every node's data directory on its own mount of the crash file
//! system (crate `shmraft-crashfs`), so a power cut is decided by a layer below the log, not by
//! the log's own sync ledger: the mount is crashed (FUSE connection aborted, unsynced writes
//! dropped by a seeded choice), mounted again over what survived, and the node restarted.
//!
//! Also `shmraft crashfs-soak`: torture runs with crash-fs power cuts until a number of them
//! has been injected, with one summary report.

use crate::args::{ElectionTimeoutArg, FsyncArg, JsonFlag};
use crate::cli::cluster_file::ClusterFile;
use serde::Serialize;
use shmraft_crashfs::{CrashFsMount, CrashPlan};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The power-cut model of a torture run, as its report names it.
pub fn power_cut_model(crash_fs: bool) -> &'static str {
    if crash_fs {
        "crash-fs: FUSE mount crashed, unsynced writes and directory entries dropped by a seeded choice"
    } else {
        "ledger: segments torn after the offsets the log's own sync ledger says were synced"
    }
}

/// What the crash-fs power cuts of a run did, summed over nodes.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CrashFsStats {
    pub power_cuts: u64,
    /// Crashes per mode (keep-none, keep-all, prefix, torn-subset).
    pub modes: BTreeMap<String, u64>,
    pub unsynced_ops: u64,
    pub ops_kept: u64,
    pub ops_torn: u64,
    pub ops_lost: u64,
    /// Directories whose unsynced entries a crash discarded.
    pub dirs_reverted: u64,
}

/// The crash file system mounts of a cluster's nodes.
pub struct CrashFsNodes {
    mounts: HashMap<u64, CrashFsMount>,
    backing: HashMap<u64, PathBuf>,
    data_dirs: HashMap<u64, PathBuf>,
    pub stats: CrashFsStats,
}

impl CrashFsNodes {
    /// Mounts a crash file system on every node's data directory, backed by
    /// `<cluster dir>/crashfs/node-<id>` (what the data directory held moves there first).
    pub fn mount_all(cluster_dir: &Path, cf: &ClusterFile) -> anyhow::Result<CrashFsNodes> {
        let mut nodes = CrashFsNodes {
            mounts: HashMap::new(),
            backing: HashMap::new(),
            data_dirs: HashMap::new(),
            stats: CrashFsStats::default(),
        };
        for n in &cf.nodes {
            let backing = cluster_dir.join("crashfs").join(format!("node-{}", n.id));
            std::fs::create_dir_all(&backing)?;
            std::fs::create_dir_all(&n.data_dir)?;
            for e in std::fs::read_dir(&n.data_dir)? {
                let e = e?;
                std::fs::rename(e.path(), backing.join(e.file_name()))?;
            }
            let m = CrashFsMount::mount(&backing, &n.data_dir)
                .map_err(|e| anyhow::anyhow!("node {}: {e}", n.id))?;
            nodes.mounts.insert(n.id, m);
            nodes.backing.insert(n.id, backing);
            nodes.data_dirs.insert(n.id, n.data_dir.clone());
        }
        Ok(nodes)
    }

    /// The power cut of node `id` (already killed by the caller, whose dirty mapped pages are
    /// still only in the kernel and die with the connection): crash its mount with `seed`,
    /// then mount it again over what survived.
    pub fn power_cut(&mut self, id: u64, seed: u64) -> anyhow::Result<()> {
        let m = self
            .mounts
            .remove(&id)
            .ok_or_else(|| anyhow::anyhow!("node {id} has no crash file system mount"))?;
        let report = m
            .crash(CrashPlan::seeded(seed))
            .map_err(|e| anyhow::anyhow!("crash of node {id}'s file system: {e}"))?;
        let s = &mut self.stats;
        s.power_cuts += 1;
        *s.modes.entry(report.mode.name().to_string()).or_default() += 1;
        s.unsynced_ops += report.unsynced_ops as u64;
        s.ops_kept += report.ops_kept as u64;
        s.ops_torn += report.ops_torn as u64;
        s.ops_lost += report.ops_lost as u64;
        s.dirs_reverted += report.dirs.iter().filter(|d| !d.kept).count() as u64;
        tracing::info!(node = id, %report, "crash-fs power cut");
        let m = CrashFsMount::mount(&self.backing[&id], &self.data_dirs[&id])
            .map_err(|e| anyhow::anyhow!("remounting node {id}'s file system: {e}"))?;
        self.mounts.insert(id, m);
        Ok(())
    }

    /// Unmounts every node's file system cleanly (the nodes must have stopped).
    pub fn unmount_all(&mut self) -> anyhow::Result<()> {
        let mut ids: Vec<u64> = self.mounts.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let m = self.mounts.remove(&id).expect("listed");
            m.unmount()
                .map_err(|e| anyhow::anyhow!("node {id}'s file system: {e}"))?;
        }
        Ok(())
    }
}

/// `shmraft crashfs-soak`: torture runs with crash-fs power cuts until `--power-cuts` of them
/// were injected, then one report.
#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    #[command(flatten)]
    pub sync: FsyncArg,
    /// Stop after this many power cuts (summed over runs).
    #[arg(long, default_value_t = 1000)]
    pub power_cuts: u64,
    /// Length of each torture run's fault phase, seconds (each run then heals and checks).
    #[arg(long, default_value_t = 30)]
    pub run_s: u64,
    /// Seed of the first run (run k uses seed + k).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The soak's report.
#[derive(Debug, Default, Serialize)]
pub struct SoakReport {
    pub fsync: String,
    pub power_cut_model: String,
    pub runs: u64,
    pub power_cuts: u64,
    pub crash_fs: CrashFsStats,
    pub operations: u64,
    pub acknowledged_appends_checked: u64,
    pub acknowledged_appends_lost: u64,
    pub runs_linearizable: u64,
    /// Runs that failed a check (seed: violations).
    pub failed_runs: Vec<String>,
    pub wall_s: u64,
}

pub fn run_soak(a: &SoakArgs) -> std::process::ExitCode {
    crate::cli::node::init_logging_quiet();
    let start = std::time::Instant::now();
    let mut r = SoakReport {
        fsync: a.sync.fsync.to_string(),
        power_cut_model: power_cut_model(true).into(),
        ..SoakReport::default()
    };
    while r.power_cuts < a.power_cuts {
        let seed = a.seed + r.runs;
        let t = soak_run_args(a, seed);
        r.runs += 1;
        match crate::chaos::torture::torture(&t) {
            Ok(rep) => add_run(&mut r, seed, &rep),
            Err(e) => r.failed_runs.push(format!("seed {seed}: {e:#}")),
        }
        r.wall_s = start.elapsed().as_secs();
        eprintln!(
            "crashfs-soak {}: run {} (seed {seed}): {} power cuts so far, {} acknowledged appends checked, {} lost, {} failed runs, {} s",
            r.fsync,
            r.runs,
            r.power_cuts,
            r.acknowledged_appends_checked,
            r.acknowledged_appends_lost,
            r.failed_runs.len(),
            r.wall_s
        );
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    } else {
        print_soak(&r);
    }
    if r.failed_runs.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    }
}

fn soak_run_args(a: &SoakArgs, seed: u64) -> crate::chaos::torture::TortureArgs {
    crate::chaos::torture::TortureArgs {
        nodes: 3,
        duration_s: a.run_s,
        sync: a.sync.clone(),
        faults: crate::chaos::durability::FaultList(vec![
            crate::chaos::durability::FaultKind::Powercut,
        ]),
        clients: 3,
        keys: 8,
        append_keys: 4,
        seed: Some(seed),
        history: None,
        dir: None,
        timing: ElectionTimeoutArg {
            election_timeout_ms: (100, 200),
        },
        snapshot_entries: 500,
        check_timeout_s: 120,
        output: JsonFlag { json: false },
        crash_fs: true,
    }
}

fn add_run(r: &mut SoakReport, seed: u64, rep: &crate::chaos::torture::TortureReport) {
    if let Some(c) = &rep.crash_fs {
        r.power_cuts += c.power_cuts;
        let s = &mut r.crash_fs;
        s.power_cuts += c.power_cuts;
        for (m, n) in &c.modes {
            *s.modes.entry(m.clone()).or_default() += n;
        }
        s.unsynced_ops += c.unsynced_ops;
        s.ops_kept += c.ops_kept;
        s.ops_torn += c.ops_torn;
        s.ops_lost += c.ops_lost;
        s.dirs_reverted += c.dirs_reverted;
    }
    r.operations += rep.ops as u64;
    r.acknowledged_appends_checked += rep.acknowledged_appends_checked as u64;
    r.acknowledged_appends_lost += rep.acknowledged_appends_lost as u64;
    if rep.linearizable.starts_with("yes") {
        r.runs_linearizable += 1;
    }
    if !rep.violations.is_empty() {
        r.failed_runs.push(format!(
            "seed {seed}: {} (kept: {})",
            rep.violations.join("; "),
            rep.dir
        ));
    }
}

fn print_soak(r: &SoakReport) {
    println!("crash-fs soak report (fsync {})", r.fsync);
    println!("  power-cut model: {}", r.power_cut_model);
    println!("  runs: {}, wall time: {} s", r.runs, r.wall_s);
    println!(
        "  power cuts: {} {:?}; unsynced ops {} (kept {}, torn {}, lost {}); directories reverted {}",
        r.power_cuts,
        r.crash_fs.modes,
        r.crash_fs.unsynced_ops,
        r.crash_fs.ops_kept,
        r.crash_fs.ops_torn,
        r.crash_fs.ops_lost,
        r.crash_fs.dirs_reverted
    );
    println!("  operations: {}", r.operations);
    println!(
        "  acknowledged appends checked: {}, lost: {}",
        r.acknowledged_appends_checked, r.acknowledged_appends_lost
    );
    println!("  linearizable runs: {} of {}", r.runs_linearizable, r.runs);
    for f in &r.failed_runs {
        println!("  FAILED RUN: {f}");
    }
    println!(
        "  result: {}",
        if r.failed_runs.is_empty() {
            "PASS"
        } else {
            "FAIL"
        }
    );
}
