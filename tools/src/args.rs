//! Argument groups shared by several commands, flattened into their argument structs with
//! `#[command(flatten)]`, so a flag has one name, one type and one parser everywhere. Values
//! are parsed here, at the edge: a bad value is a usage error (exit 2) whose message names the
//! flag and the accepted forms.
//!
//! A command whose default differs overrides it on its own struct, e.g.
//! `#[command(mut_arg("fsync", |a| a.default_value("never")))]`.

use crate::cli::cluster_file::parse_range_ms;
use shmraft_storage::FsyncPolicy;
use std::path::PathBuf;

/// `--fsync POLICY` (default `always`).
#[derive(clap::Args, Debug, Clone)]
pub struct FsyncArg {
    /// fsync policy: always, batch, batch:<delay_us>:<bytes>, interval:<ms>, never.
    #[arg(long, value_name = "POLICY", default_value = "always")]
    pub fsync: FsyncPolicy,
}

/// `--election-timeout-ms MIN-MAX` (default `150-300`).
#[derive(clap::Args, Debug, Clone)]
pub struct ElectionTimeoutArg {
    /// Election timeout range of the nodes in milliseconds, MIN-MAX.
    #[arg(
        long,
        value_name = "MIN-MAX",
        default_value = "150-300",
        value_parser = parse_range_ms
    )]
    pub election_timeout_ms: (u64, u64),
}

/// `--dir D`: the directory of a cluster that exists or is being created.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterDirArg {
    /// The cluster directory (holds cluster.json, the node data directories and logs).
    #[arg(long)]
    pub dir: PathBuf,
}

/// `--dir D --keep`: where a run that creates its own directories puts them, and whether they
/// outlive it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WorkDirArgs {
    /// Create the run's directories under this directory (default: the system's temporary
    /// directory); for benchmarks, the disk under test.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the run's directories (node logs, data) instead of removing them.
    #[arg(long)]
    pub keep: bool,
}

/// `--json`: print the report as JSON instead of text.
#[derive(clap::Args, Debug, Clone)]
pub struct JsonFlag {
    /// Print the report as one JSON object instead of text (field names carry their units).
    #[arg(long)]
    pub json: bool,
}

/// `--json FILE`: also write every figure as JSON.
#[derive(clap::Args, Debug, Clone)]
pub struct JsonFileArg {
    /// Write every figure as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser, Debug)]
    #[command(mut_arg("fsync", |a| a.default_value("never")))]
    struct Cmd {
        #[command(flatten)]
        fsync: FsyncArg,
        #[command(flatten)]
        timeout: ElectionTimeoutArg,
    }

    #[test]
    fn typed_values_parse_at_the_edge_and_defaults_can_be_overridden() {
        let c = Cmd::try_parse_from(["x"]).unwrap();
        assert_eq!(c.fsync.fsync, FsyncPolicy::Never, "the overridden default");
        assert_eq!(c.timeout.election_timeout_ms, (150, 300));
        let c = Cmd::try_parse_from(["x", "--fsync", "interval:5"]).unwrap();
        assert_eq!(c.fsync.fsync, FsyncPolicy::Interval { ms: 5 });
    }

    #[test]
    fn a_bad_value_names_the_flag_and_the_accepted_forms() {
        let e = Cmd::try_parse_from(["x", "--fsync", "sometimes"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--fsync"), "{e}");
        assert!(e.contains("batch:<delay_us>:<bytes>"), "{e}");
        let e = Cmd::try_parse_from(["x", "--election-timeout-ms", "300"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--election-timeout-ms") && e.contains("MIN-MAX"),
            "{e}"
        );
    }
}
