//! `shmraft status --dir D [--json]`: each node's last published status (its `status.json`),
//! with `alive` taken from whether its process runs.

use crate::args::{ClusterDirArg, JsonFlag};
use crate::cli::cluster_file::{ClusterFile, live_node_pid};
use shmraft_consensus::node::status::{NodeStatus, read_status_file};
use std::path::Path;
use std::process::ExitCode;

/// Show every node's role, term, indexes and log size.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub cluster: ClusterDirArg,
    // Prints `{"nodes":[...]}`.
    #[command(flatten)]
    pub output: JsonFlag,
}

/// The status of every node of the cluster in `dir`; a node that never ran or whose status
/// file is unreadable is listed as not alive with zero figures.
pub fn collect(dir: &Path) -> anyhow::Result<Vec<NodeStatus>> {
    let cf = ClusterFile::load(dir)?;
    let mut out = Vec::new();
    for n in &cf.nodes {
        let pid = live_node_pid(&n.data_dir);
        let mut s = read_status_file(&n.data_dir)
            .ok()
            .flatten()
            .unwrap_or_else(|| NodeStatus {
                id: n.id,
                pid: 0,
                alive: false,
                role: "follower".into(),
                fsync_policy: cf.fsync.clone(),
                ..NodeStatus::default()
            });
        s.alive = pid.is_some_and(|p| p == s.pid || s.pid == 0);
        if let Some(p) = pid {
            s.pid = p;
        }
        out.push(s);
    }
    Ok(out)
}

pub fn run(a: &StatusArgs) -> ExitCode {
    let nodes = match collect(&a.cluster.dir) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("shmraft status: {e:#}");
            return ExitCode::from(2);
        }
    };
    if a.output.json {
        println!("{}", serde_json::json!({ "nodes": nodes }));
        return ExitCode::SUCCESS;
    }
    println!(
        "{:>4} {:>8} {:>5} {:<12} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>4}",
        "id",
        "pid",
        "alive",
        "role",
        "term",
        "leader",
        "commit",
        "applied",
        "last",
        "durable",
        "snapshot",
        "log bytes",
        "segs"
    );
    for s in nodes {
        println!(
            "{:>4} {:>8} {:>5} {:<12} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>4}",
            s.id,
            s.pid,
            if s.alive { "yes" } else { "no" },
            if s.alive { s.role.as_str() } else { "-" },
            s.term,
            s.leader,
            s.commit_index,
            s.applied_index,
            s.last_index,
            s.durable_index,
            s.snapshot_index,
            s.log_bytes,
            s.segments
        );
    }
    ExitCode::SUCCESS
}
