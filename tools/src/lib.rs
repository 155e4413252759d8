//! shmraft-tools: the `shmraft` command and the `raft-dump` log inspector. The binaries in the
//! facade package are thin wrappers around [`shmraft_main`] and [`raft_dump_main`].
#![forbid(unsafe_code)]

pub mod cluster;
pub mod cluster_demo;
pub mod cluster_file;
pub mod kv_cmd;
pub mod nemesis;
pub mod node_cmd;
pub mod status_cmd;
pub mod torture;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// shmraft: a persistent Raft consensus engine whose nodes are separate processes on one host.
#[derive(Parser, Debug)]
#[command(name = "shmraft", version, about, long_about = None)]
pub struct ShmraftCli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `shmraft`.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start a 3-node cluster, kill its leader, heal it, and check nothing was lost (~15 s).
    Demo(cluster_demo::DemoArgs),
    /// Run a cluster of node processes in the foreground (Ctrl-C stops it cleanly).
    Cluster(cluster::ClusterArgs),
    /// Run one node of a cluster (normally spawned by `shmraft cluster`).
    Node(node_cmd::NodeArgs),
    /// Key-value operations: put, get, append, delete.
    Kv(kv_cmd::KvArgs),
    /// Show every node's role, term, indexes and log size.
    Status(status_cmd::StatusArgs),
    /// Break a running cluster on purpose: kill, pause, power cut, partition, ...
    Nemesis(nemesis::NemesisArgs),
    /// A concurrent workload under random faults, then a linearizability and durability check.
    Torture(torture::TortureArgs),
}

/// Prints a short summary of a node's data directory (segments, hard state, snapshots).
/// (Replaced by raft-dump's own summary when the tools merge.)
pub fn raft_dump_summary(dir: &std::path::Path) {
    match shmraft_storage::inspect::inspect_dir(dir) {
        Ok(info) => {
            for s in &info.segments {
                println!(
                    "  {} {} bytes, {} records, {:?}..{:?}, sealed {}",
                    s.path.display(),
                    s.file_bytes,
                    s.record_count,
                    s.first.map(|x| x.0.0),
                    s.last.map(|x| x.0.0),
                    s.sealed
                );
            }
            println!("  durable index {:?}", info.durable_index.map(|x| x.0));
        }
        Err(e) => println!("  cannot inspect: {e}"),
    }
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
pub fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len);
    b.set_message(what.to_string());
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {percent}%") {
        b.set_style(style);
    }
    b
}

/// Entry point of the `shmraft` command.
pub fn shmraft_main() -> ExitCode {
    let cli = match ShmraftCli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Demo(a) => cluster_demo::run(&a),
        Command::Cluster(a) => cluster::run(&a),
        Command::Node(a) => node_cmd::run(&a),
        Command::Kv(a) => kv_cmd::run(&a),
        Command::Status(a) => status_cmd::run(&a),
        Command::Nemesis(a) => nemesis::run(&a),
        Command::Torture(a) => torture::run(&a),
    }
}

/// Entry point of the `raft-dump` log inspector.
pub fn raft_dump_main() -> ExitCode {
    eprintln!("raft-dump: not built yet");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::ShmraftCli::command().debug_assert();
    }
}
