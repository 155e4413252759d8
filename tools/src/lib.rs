//! shmraft-tools: the `shmraft` command and the `raft-dump` log inspector. The binaries in the
//! facade package are thin wrappers around [`shmraft_main`] and [`raft_dump_main`].
//!
//! Exit status convention of every command: 0 success, 1 the command ran and found a problem
//! (corruption, a non-linearizable history, a failed benchmark run), 2 a usage error (bad flag,
//! missing or unreadable input).
#![forbid(unsafe_code)]

pub mod bench;
pub mod check_history;
pub mod cluster;
pub mod cluster_demo;
pub mod cluster_file;
pub mod crashfs_nodes;
pub mod demo;
pub mod kv_cmd;
pub mod nemesis;
pub mod node_cmd;
pub mod payload;
pub mod raft_dump;
pub mod status_cmd;
pub mod torture;
pub mod wal_bench;

pub use raft_dump::raft_dump_main;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Exit status of a usage error (clap's own errors also exit 2).
pub const EXIT_USAGE: u8 = 2;

/// shmraft: a persistent Raft consensus engine whose nodes are separate processes on one host.
#[derive(Parser, Debug)]
#[command(name = "shmraft", version)]
pub struct ShmraftCli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `shmraft`.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start a 3-node cluster, kill its leader, heal it, and check nothing was lost (seconds).
    Demo(cluster_demo::DemoArgs),
    /// Run a cluster of node processes in the foreground (Ctrl-C stops it cleanly).
    Cluster(cluster::ClusterArgs),
    /// Run one node of a cluster (normally spawned by `shmraft cluster`).
    Node(node_cmd::NodeArgs),
    /// Key-value operations against a running cluster: put, get, append, delete.
    Kv(kv_cmd::KvArgs),
    /// Show every node's role, term, indexes and log size.
    Status(status_cmd::StatusArgs),
    /// Break a running cluster on purpose: kill, pause, power cut, partition, ...
    Nemesis(nemesis::NemesisArgs),
    /// A concurrent workload under random faults, then a linearizability and durability check.
    Torture(torture::TortureArgs),
    /// Torture runs with crash file system power cuts until N of them, then one report.
    CrashfsSoak(crashfs_nodes::SoakArgs),
    /// Write-ahead log tools: benchmark appends and recovery, storage demo.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Check a client history (JSON lines) for linearizability.
    CheckHistory(check_history::CheckHistoryArgs),
    /// Cluster benchmarks: throughput and latency per fsync policy and client count, with
    /// same-run baselines, a table, JSON and an SVG plot.
    Bench(bench::BenchCli),
}

/// `shmraft wal ...`
#[derive(Subcommand, Debug)]
pub enum WalCommand {
    /// Append N entries of B bytes under an fsync policy and report throughput, syncs and
    /// durable-append latency, with raw fdatasync and memcpy baselines from the same run.
    Bench(wal_bench::BenchArgs),
    /// Measure how long opening (recovering) an existing log takes.
    OpenBench(wal_bench::OpenBenchArgs),
    /// The storage demo: WAL benchmarks under `never` and `always`, a simulated power cut,
    /// raft-dump verification and a detected bit flip.
    Demo(demo::DemoArgs),
}

/// Parses a command line, printing clap's message; `Err` carries the exit code (0 for
/// `--help`/`--version`, 2 for a usage error).
pub(crate) fn parse_or_exit<P, I, T>(args: I) -> Result<P, ExitCode>
where
    P: Parser,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    match P::try_parse_from(args) {
        Ok(p) => Ok(p),
        Err(e) => {
            let _ = e.print();
            Err(if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// Entry point of the `shmraft` command.
pub fn shmraft_main() -> ExitCode {
    run_cli(std::env::args_os())
}

/// Runs `shmraft` with the command line `args` (the first item is the program name).
pub fn run_cli<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli: ShmraftCli = match parse_or_exit(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cli.command {
        Command::Demo(a) => cluster_demo::run(&a),
        Command::Cluster(a) => cluster::run(&a),
        Command::Node(a) => node_cmd::run(&a),
        Command::Kv(a) => kv_cmd::run(&a),
        Command::Status(a) => status_cmd::run(&a),
        Command::Nemesis(a) => nemesis::run(&a),
        Command::Torture(a) => torture::run(&a),
        Command::CrashfsSoak(a) => crashfs_nodes::run_soak(&a),
        Command::Wal(WalCommand::Demo(a)) => demo::run(&a),
        Command::Wal(WalCommand::Bench(a)) => wal_bench::run_bench_cmd(&a),
        Command::Wal(WalCommand::OpenBench(a)) => wal_bench::run_open_bench_cmd(&a),
        Command::CheckHistory(a) => check_history::run(&a),
        Command::Bench(b) => match b.sub {
            Some(bench::BenchSub::Failover(a)) => bench::failover::run(&a),
            Some(bench::BenchSub::Catchup(a)) => bench::catchup::run(&a),
            None => bench::run(&b.run),
        },
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

/// Prints `raft-dump`'s summary of a node's data directory (with key-value payloads).
pub fn raft_dump_summary(dir: &std::path::Path) {
    use clap::Parser;
    let args = match raft_dump::RaftDumpArgs::try_parse_from([
        std::ffi::OsStr::new("raft-dump"),
        dir.as_os_str(),
    ]) {
        Ok(a) => a,
        Err(e) => {
            println!("  cannot summarise {}: {e}", dir.display());
            return;
        }
    };
    let mut out = std::io::stdout();
    if let Err(e) = raft_dump::run_with_printer(&args, &payload::KvPrinter, &mut out) {
        println!("  raft-dump: {e}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::ShmraftCli::command().debug_assert();
    }
}
