//! `shmraft node --dir D --id I`: one node process (spawned by `shmraft cluster`, or by hand)
//! running the built-in key-value state machine.

use crate::args::ClusterDirArg;
use crate::cli::cluster_file::{ClusterFile, PID_FILE_NAME};
use shmraft_consensus::KvStateMachine;
use shmraft_consensus::node::Node;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// The environment variable a harness sets to its pid when it spawns a node with
/// `--exit-with-parent`.
pub const PARENT_PID_ENV: &str = "SHMRAFT_PARENT_PID";

/// Run one node of the cluster in D.
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    #[command(flatten)]
    pub cluster: ClusterDirArg,
    /// This node's id (as listed in cluster.json).
    #[arg(long)]
    pub id: u64,
    /// Stop cleanly when the process that started this node exits (for benchmark and test
    /// harnesses: a harness killed by a signal leaves no node running). The parent is the pid in
    /// the environment variable SHMRAFT_PARENT_PID if set (so a parent that died before this
    /// process looked is noticed too), else the parent at start.
    #[arg(long)]
    pub exit_with_parent: bool,
}

/// Logs go to stderr, filtered by RUST_LOG (default: info).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// For commands that print a report: only warnings and errors unless RUST_LOG says otherwise.
pub fn init_logging_quiet() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,fuser=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run(a: &NodeArgs) -> ExitCode {
    init_logging();
    let cf = match ClusterFile::load(&a.cluster.dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shmraft node: {e:#}");
            return ExitCode::from(2);
        }
    };
    let cfg = match cf.node_config(&a.cluster.dir, a.id) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shmraft node: {e:#}");
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("shmraft node: cannot install a handler for signal {sig}: {e}");
            return ExitCode::from(1);
        }
    }
    if a.exit_with_parent {
        // The parent is checked by polling: a reparented process sees a different ppid. The
        // spawner names itself, because it may die before this line runs.
        let parent_at_start = std::env::var(PARENT_PID_ENV)
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
            .map_or_else(nix::unistd::getppid, nix::unistd::Pid::from_raw);
        let stop = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("parent-watch".into())
            .spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if nix::unistd::getppid() != parent_at_start {
                        tracing::warn!("the parent process exited; stopping");
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            });
        if let Err(e) = spawned {
            eprintln!("shmraft node: cannot start the parent watcher: {e}");
            return ExitCode::from(1);
        }
    }
    let data_dir = cfg.data_dir.clone();
    // Fault-matrix row C5 of docs/FAULTS.md: a node that has run before but finds its data
    // directory gone or empty lost its term, its vote and its log. Starting it as a fresh node
    // could let it vote twice in one term or help elect a leader missing committed entries, so
    // refuse, and say why.
    let marker = crate::cli::cluster_file::initialized_marker(&a.cluster.dir, a.id);
    let empty = std::fs::read_dir(&data_dir).map_or(true, |mut d| d.next().is_none());
    if marker.exists() && empty {
        eprintln!(
            "shmraft node {}: refusing to start: this node has run before (see {}) but its data \
             directory {} is missing or empty, so its term, vote and log are lost. A node that \
             forgot its vote could vote twice in one term and break Raft's safety. Restore the \
             directory from a copy, or replace the node: stop the cluster, remove {} and the \
             directory, and start it as a new member only if no other node is missing data.",
            a.id,
            marker.display(),
            data_dir.display(),
            marker.display()
        );
        return ExitCode::from(1);
    }
    let node = match Node::open(cfg, KvStateMachine::new()) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("shmraft node {}: cannot start: {e}", a.id);
            return ExitCode::from(1);
        }
    };
    // Written after the data directory is locked and recovered, so a pid file names a node
    // that owns its directory.
    if !marker.exists() {
        if let Err(e) = std::fs::write(&marker, b"") {
            eprintln!(
                "shmraft node {}: cannot write {}: {e}",
                a.id,
                marker.display()
            );
            return ExitCode::from(1);
        }
    }
    let pid_file = data_dir.join(PID_FILE_NAME);
    if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
        eprintln!(
            "shmraft node {}: cannot write {}: {e}",
            a.id,
            pid_file.display()
        );
        return ExitCode::from(1);
    }
    let r = node.run(&stop);
    let _ = std::fs::remove_file(&pid_file);
    match r {
        Ok(()) => {
            tracing::info!(id = a.id, "node stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shmraft node {}: stopped: {e}", a.id);
            ExitCode::from(1)
        }
    }
}
