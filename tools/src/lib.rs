//! shmraft-tools: the `shmraft` command and the `raft-dump` log inspector. The binaries in the
//! facade package are thin wrappers around [`shmraft_main`] and [`raft_dump_main`].
//!
//! Exit status convention of every command: 0 success, 1 the command ran and found a problem
//! (corruption, a non-linearizable history, a failed benchmark run), 2 a usage error (bad flag,
//! missing or unreadable input).
#![forbid(unsafe_code)]

pub mod check_history;
pub mod demo;
pub mod payload;
pub mod raft_dump;
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
    /// Interim demo: WAL benchmarks under `never` and `always`, a simulated power cut, raft-dump
    /// verification and a detected bit flip (the cluster demo replaces it later).
    Demo(demo::DemoArgs),
    /// Write-ahead log tools: benchmark appends and recovery.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Check a client history (JSON lines) for linearizability.
    CheckHistory(check_history::CheckHistoryArgs),
}

/// `shmraft wal ...`
#[derive(Subcommand, Debug)]
pub enum WalCommand {
    /// Append N entries of B bytes under an fsync policy and report throughput, syncs and
    /// durable-append latency, with raw fdatasync and memcpy baselines from the same run.
    Bench(wal_bench::BenchArgs),
    /// Measure how long opening (recovering) an existing log takes.
    OpenBench(wal_bench::OpenBenchArgs),
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
        Command::Demo(a) => demo::run(&a),
        Command::Wal(WalCommand::Bench(a)) => wal_bench::run_bench_cmd(&a),
        Command::Wal(WalCommand::OpenBench(a)) => wal_bench::run_open_bench_cmd(&a),
        Command::CheckHistory(a) => check_history::run(&a),
    }
}
