//! `shmraft cluster`: a foreground supervisor that creates (or reopens) a cluster directory,
//! spawns one `shmraft node` process per node, prints status changes, restarts crashed nodes
//! only with `--restart`, and on Ctrl-C or SIGTERM stops every node cleanly and removes the
//! cluster's runtime files.

use crate::args::{ClusterDirArg, ElectionTimeoutArg, FsyncArg};
use crate::cli::cluster_file::{ClusterFile, ClusterNode, hold_path, live_node_pid, pid_alive};
use shmraft_consensus::node::status::read_status_file;
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Run a cluster of N node processes in the foreground.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Number of nodes (ids 1..=N).
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    #[command(flatten)]
    pub cluster: ClusterDirArg,
    #[command(flatten)]
    pub sync: FsyncArg,
    #[command(flatten)]
    pub timing: ElectionTimeoutArg,
    /// Leader heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 30)]
    pub heartbeat_ms: u64,
    /// Length of one core tick in milliseconds (default: 10, or 1 when the election timeout is
    /// under 100 ms, so timeouts keep their resolution).
    #[arg(long)]
    pub tick_ms: Option<u64>,
    /// How long each node's loop spins on its rings before parking, microseconds.
    #[arg(long, default_value_t = 10)]
    pub spin_us: u32,
    /// Snapshot after this many applied entries.
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_entries: u64,
    /// WAL segment size in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    pub segment_bytes: u64,
    /// Restart nodes that exit on their own.
    #[arg(long)]
    pub restart: bool,
    /// Stop the cluster cleanly when the process that started this supervisor exits (for test
    /// harnesses and scripts: a killed harness leaves no cluster running).
    #[arg(long)]
    pub exit_with_parent: bool,
}

/// Creates `dir/cluster.json` for these settings, keeping the cluster id (and so the data) of an
/// existing cluster in `dir`.
pub fn prepare(a: &ClusterArgs) -> anyhow::Result<ClusterFile> {
    if a.nodes == 0 || a.nodes > 15 {
        anyhow::bail!("--nodes must be between 1 and 15, got {}", a.nodes);
    }
    let (dir, election_timeout_ms) = (&a.cluster.dir, a.timing.election_timeout_ms);
    std::fs::create_dir_all(dir)?;
    let dir = std::fs::canonicalize(dir)?;
    std::fs::create_dir_all(dir.join("logs"))?;
    let cluster_id = match ClusterFile::load(&dir) {
        Ok(old) => old.cluster_id,
        Err(_) => loop {
            let id = rand::random::<u64>();
            if id != 0 {
                break id;
            }
        },
    };
    let runtime_dir = shmraft_ipc::default_runtime_dir(&format!("{cluster_id:016x}"));
    let cf = ClusterFile {
        version: 1,
        cluster_id,
        runtime_dir,
        fsync: a.sync.fsync.to_string(),
        election_timeout_ms,
        heartbeat_ms: a.heartbeat_ms,
        tick_ms: a
            .tick_ms
            .unwrap_or(if election_timeout_ms.0 < 100 { 1 } else { 10 }),
        snapshot_entries: a.snapshot_entries,
        snapshot_bytes: crate::cli::cluster_file::default_snapshot_bytes(),
        compaction_retain_entries: crate::cli::cluster_file::default_compaction_retain_entries(),
        segment_bytes: a.segment_bytes,
        ring_bytes: 1 << 20,
        spin_us: a.spin_us,
        nodes: (1..=a.nodes)
            .map(|id| ClusterNode {
                id,
                data_dir: dir.join(format!("node{id}")),
                pid: None,
            })
            .collect(),
    };
    for n in &cf.nodes {
        cf.node_config(&dir, n.id)?; // validates timeouts and policy now, not in every node
    }
    cf.save(&dir)?;
    Ok(cf)
}

/// Starts `shmraft node --dir D --id I` with its output appended to `D/logs/node-I.log`. The
/// node runs in its own process group, so a terminal's Ctrl-C reaches only the supervisor,
/// which then stops the nodes in order.
pub fn spawn_node(dir: &Path, id: u64) -> anyhow::Result<Child> {
    spawn_node_opts(dir, id, false)
}

/// [`spawn_node`]; with `exit_with_parent` the node stops cleanly when this process exits, so a
/// harness (demo, torture, bench) killed by a signal leaves no node behind.
pub fn spawn_node_opts(dir: &Path, id: u64, exit_with_parent: bool) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let log = dir.join("logs").join(format!("node-{id}.log"));
    let out = OpenOptions::new().create(true).append(true).open(&log)?;
    let child = Command::new(exe)
        .arg("node")
        .arg("--dir")
        .arg(dir)
        .arg("--id")
        .arg(id.to_string())
        .args(exit_with_parent.then_some("--exit-with-parent"))
        .env(
            crate::cli::node::PARENT_PID_ENV,
            std::process::id().to_string(),
        )
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()?;
    Ok(child)
}

/// Sends SIGTERM to every running node of the cluster and waits for them (SIGKILL after
/// `grace`), then removes the runtime directory's leftovers.
pub fn stop_all(cf: &ClusterFile, children: &mut HashMap<u64, Child>, grace: Duration) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let mut pids = Vec::new();
    for n in &cf.nodes {
        if let Some(pid) = live_node_pid(&n.data_dir) {
            pids.push(pid);
        }
    }
    for c in children.values() {
        pids.push(c.id());
    }
    pids.sort_unstable();
    pids.dedup();
    for &p in &pids {
        // A stopped (paused) node must be continued to handle SIGTERM.
        let _ = kill(Pid::from_raw(p as i32), Signal::SIGCONT);
        let _ = kill(Pid::from_raw(p as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    loop {
        for c in children.values_mut() {
            let _ = c.try_wait();
        }
        if pids.iter().all(|&p| !pid_alive(p)) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for &p in &pids {
        if pid_alive(p) {
            let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
        }
    }
    for c in children.values_mut() {
        let _ = c.wait();
    }
    children.clear();
    if let Err(e) = shmraft_ipc::sweep(&cf.runtime_dir) {
        tracing::debug!(error = %e, "sweeping the runtime directory");
    }
    let _ = std::fs::remove_dir(&cf.runtime_dir);
}

/// Sweeps every cluster runtime directory beside ours (ipc rule 8 of docs/RULES.md): files whose
/// owner died (a crashed cluster, a killed test) are removed, and directories left empty are
/// deleted. Files of live processes, of any cluster, are left alone.
pub fn sweep_stale_runtime_dirs() {
    let probe = shmraft_ipc::default_runtime_dir("probe");
    let Some(parent) = probe.parent() else { return };
    let Some(prefix) = probe
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix("probe"))
        .map(str::to_owned)
    else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let is_ours = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&prefix));
        if is_ours && p.is_dir() {
            match shmraft_ipc::sweep(&p) {
                Ok(r) => tracing::debug!(dir = %p.display(), report = ?r, "swept"),
                Err(e) => tracing::debug!(dir = %p.display(), error = %e, "cannot sweep"),
            }
            let _ = std::fs::remove_dir(&p); // only succeeds when empty
        }
    }
}

pub fn run(a: &ClusterArgs) -> ExitCode {
    crate::cli::node::init_logging();
    let cf = match prepare(a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shmraft cluster: {e:#}");
            return ExitCode::from(2);
        }
    };
    let dir = std::fs::canonicalize(&a.cluster.dir).unwrap_or_else(|_| a.cluster.dir.clone());
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("shmraft cluster: cannot handle signal {sig}: {e}");
            return ExitCode::from(1);
        }
    }
    sweep_stale_runtime_dirs();
    let mut children: HashMap<u64, Child> = HashMap::new();
    for n in &cf.nodes {
        if let Some(pid) = live_node_pid(&n.data_dir) {
            eprintln!(
                "node {} already runs (pid {pid}); not starting it again",
                n.id
            );
            continue;
        }
        match spawn_node(&dir, n.id) {
            Ok(c) => {
                children.insert(n.id, c);
            }
            Err(e) => {
                eprintln!("shmraft cluster: cannot start node {}: {e:#}", n.id);
                stop_all(&cf, &mut children, Duration::from_secs(5));
                return ExitCode::from(1);
            }
        }
    }
    let mut pids_file = cf.clone();
    for n in &mut pids_file.nodes {
        n.pid = children.get(&n.id).map(|c| c.id());
    }
    let _ = pids_file.save(&dir);
    println!(
        "cluster of {} nodes in {} (fsync {}); Ctrl-C stops it",
        cf.nodes.len(),
        dir.display(),
        cf.fsync
    );
    let parent_at_start = nix::unistd::getppid();
    let mut last_leader: Option<(u64, u64)> = None;
    let mut restart_at: HashMap<u64, Instant> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if a.exit_with_parent && nix::unistd::getppid() != parent_at_start {
            println!("the parent process exited");
            break;
        }
        let ids: Vec<u64> = children.keys().copied().collect();
        for id in ids {
            let Some(c) = children.get_mut(&id) else {
                continue;
            };
            if let Ok(Some(status)) = c.try_wait() {
                println!("node {id} exited: {status}");
                children.remove(&id);
                if a.restart {
                    restart_at.insert(id, Instant::now() + Duration::from_millis(200));
                }
            }
        }
        let due: Vec<u64> = restart_at
            .iter()
            .filter(|(_, t)| Instant::now() >= **t)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if hold_path(&dir, id).exists() {
                continue; // a nemesis is working on this node's directory
            }
            restart_at.remove(&id);
            let Ok(n) = cf.node(id) else { continue };
            if live_node_pid(&n.data_dir).is_some() {
                continue; // started by someone else (e.g. `nemesis restart`)
            }
            match spawn_node(&dir, id) {
                Ok(c) => {
                    println!("node {id} restarted (pid {})", c.id());
                    children.insert(id, c);
                }
                Err(e) => eprintln!("cannot restart node {id}: {e:#}"),
            }
        }
        // Report leadership changes.
        let mut leader = None;
        for n in &cf.nodes {
            if let Ok(Some(s)) = read_status_file(&n.data_dir) {
                // A restarted node's old status file may still say "leader": trust only a
                // status written by the process that runs now.
                if s.role == "leader"
                    && live_node_pid(&n.data_dir) == Some(s.pid)
                    && leader.is_none_or(|(t, _)| s.term > t)
                {
                    leader = Some((s.term, s.id));
                }
            }
        }
        if let Some((term, id)) = leader {
            if leader > last_leader {
                println!("term {term}: node {id} is the leader");
                last_leader = leader;
            }
        }
    }
    println!("stopping the cluster");
    stop_all(&cf, &mut children, Duration::from_secs(10));
    println!("stopped");
    ExitCode::SUCCESS
}
