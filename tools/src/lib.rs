//! shmraft-tools: the `shmraft` command and the `raft-dump` log inspector. The binaries in the
//! facade package are thin wrappers around [`shmraft_main`] and [`raft_dump_main`].
//!
//! The modules by job: [`cli`] runs and uses a cluster (`cluster`, `node`, `kv`, `status`),
//! [`chaos`] breaks one and checks what it did (`nemesis`, `torture`, `check-history`),
//! [`bench`] measures (`bench`, `bench failover`, `bench catchup`, `wal bench`,
//! `wal open-bench`), [`demo`] shows (`demo`, `wal demo`) and [`dump`] inspects (`raft-dump`).
//! [`args`] holds the argument groups several commands share.
//!
//! Exit status convention of every command: 0 success, 1 the command ran and found a problem
//! (corruption, a non-linearizable history, a failed benchmark run), 2 a usage error (bad flag,
//! missing or unreadable input).
#![forbid(unsafe_code)]

pub mod args;
pub mod bench;
pub mod chaos;
pub mod cli;
pub mod demo;
pub mod dump;

pub use dump::raft_dump::raft_dump_main;

use clap::{Parser, Subcommand};
use dump::{payload, raft_dump};
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
    Demo(demo::cluster::DemoArgs),
    /// Run a cluster of node processes in the foreground (Ctrl-C stops it cleanly).
    Cluster(cli::cluster::ClusterArgs),
    /// Run one node of a cluster (normally spawned by `shmraft cluster`).
    Node(cli::node::NodeArgs),
    /// Key-value operations against a running cluster: put, get, append, delete.
    Kv(cli::kv::KvArgs),
    /// Show every node's role, term, indexes and log size.
    Status(cli::status::StatusArgs),
    /// Break a running cluster on purpose: kill, pause, power cut, partition, ...
    Nemesis(chaos::nemesis::NemesisArgs),
    /// A concurrent workload under random faults, then a linearizability and durability check.
    Torture(chaos::torture::TortureArgs),
    /// Torture runs with crash file system power cuts until N of them, then one report.
    CrashfsSoak(chaos::crashfs_nodes::SoakArgs),
    /// Write-ahead log tools: benchmark appends and recovery, storage demo.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Check a client history (JSON lines) for linearizability.
    CheckHistory(chaos::check_history::CheckHistoryArgs),
    /// Cluster benchmarks: throughput and latency per fsync policy and client count, with
    /// same-run baselines, a table, JSON and an SVG plot.
    Bench(bench::BenchCli),
}

/// `shmraft wal ...`
#[derive(Subcommand, Debug)]
pub enum WalCommand {
    /// Append N entries of B bytes under an fsync policy and report throughput, syncs and
    /// durable-append latency, with raw fdatasync and memcpy baselines from the same run.
    Bench(bench::wal::BenchArgs),
    /// Measure how long opening (recovering) an existing log takes.
    OpenBench(bench::wal::OpenBenchArgs),
    /// The storage demo: WAL benchmarks under `never` and `always`, a simulated power cut,
    /// raft-dump verification and a detected bit flip.
    Demo(demo::wal::DemoArgs),
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
        Command::Demo(a) => demo::cluster::run(&a),
        Command::Cluster(a) => cli::cluster::run(&a),
        Command::Node(a) => cli::node::run(&a),
        Command::Kv(a) => cli::kv::run(&a),
        Command::Status(a) => cli::status::run(&a),
        Command::Nemesis(a) => chaos::nemesis::run(&a),
        Command::Torture(a) => chaos::torture::run(&a),
        Command::CrashfsSoak(a) => chaos::crashfs_nodes::run_soak(&a),
        Command::Wal(WalCommand::Demo(a)) => demo::wal::run(&a),
        Command::Wal(WalCommand::Bench(a)) => bench::wal::run_bench_cmd(&a),
        Command::Wal(WalCommand::OpenBench(a)) => bench::wal::run_open_bench_cmd(&a),
        Command::CheckHistory(a) => chaos::check_history::run(&a),
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

    #[test]
    fn every_fsync_flag_is_typed_and_refuses_a_bad_policy_naming_the_flag_and_the_forms() {
        use clap::Parser;
        for cmd in [
            &["cluster", "--dir", "d"][..],
            &["torture"],
            &["demo"],
            &["bench"],
            &["bench", "failover"],
            &["bench", "catchup"],
            &["wal", "bench", "--dir", "d"],
        ] {
            let ok = ["shmraft"]
                .iter()
                .chain(cmd)
                .chain(&["--fsync", "interval:7"]);
            let parsed = super::ShmraftCli::try_parse_from(ok);
            assert!(parsed.is_ok(), "{cmd:?}: {:?}", parsed.err());
            let bad = ["shmraft"]
                .iter()
                .chain(cmd)
                .chain(&["--fsync", "sometimes"]);
            let e = super::ShmraftCli::try_parse_from(bad).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{cmd:?}");
            let msg = e.to_string();
            for needle in [
                "--fsync",
                "sometimes",
                "always",
                "batch:<delay_us>:<bytes>",
                "never",
            ] {
                assert!(
                    msg.contains(needle),
                    "{cmd:?}: {needle:?} missing from {msg}"
                );
            }
        }
    }
}
