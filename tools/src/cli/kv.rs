//! `shmraft kv --dir D put KEY VALUE | get KEY | append KEY VALUE | delete KEY [--timeout-ms T]`.
//!
//! Exit status: 0 success (`get` prints the value alone, an empty line for a missing key), 2 an
//! error (message on stderr), 3 the outcome is unknown (no answer in time: the write may or may
//! not have taken effect). Retries inside one invocation reuse the same client id and sequence
//! number, so a write is applied at most once.

use crate::cli::cluster_file::ClusterFile;
use shmraft_consensus::kv::client::KvClient;
use shmraft_consensus::node::client::{ClientConfig, ClientError};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Exit status when a write's outcome is unknown.
pub const EXIT_UNKNOWN: u8 = 3;

/// Key-value operations against the cluster in D.
#[derive(clap::Args, Debug)]
pub struct KvArgs {
    /// The cluster directory (holds cluster.json).
    /// (Global, so it may also follow the operation; missing is a usage error.)
    #[arg(long, global = true)]
    pub dir: Option<PathBuf>,
    /// Give up after this long (a write then has an unknown outcome: exit 3).
    #[arg(long, global = true, default_value_t = 5000)]
    pub timeout_ms: u64,
    #[command(subcommand)]
    pub op: KvOp,
}

#[derive(clap::Subcommand, Debug)]
pub enum KvOp {
    /// Set KEY to VALUE.
    Put { key: String, value: String },
    /// Print KEY's value (an empty line if it was never written).
    Get { key: String },
    /// Append VALUE to KEY's value.
    Append { key: String, value: String },
    /// Set KEY back to empty.
    Delete { key: String },
}

pub fn client_for(dir: &std::path::Path) -> anyhow::Result<KvClient> {
    let cf = ClusterFile::load(dir)?;
    let cfg = ClientConfig::new(cf.runtime_dir.clone(), cf.voters()).with_cluster_id(cf.cluster_id);
    Ok(KvClient::new(cfg)?)
}

pub fn run(a: &KvArgs) -> ExitCode {
    let Some(dir) = a.dir.as_deref() else {
        eprintln!("shmraft kv: --dir D is required (the cluster directory holding cluster.json)");
        return ExitCode::from(2);
    };
    let mut c = match client_for(dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shmraft kv: {e:#}");
            return ExitCode::from(2);
        }
    };
    let t = Duration::from_millis(a.timeout_ms);
    let r = match &a.op {
        KvOp::Put { key, value } => c.put(key.as_bytes(), value.as_bytes(), t).map(|_| None),
        KvOp::Append { key, value } => c.append(key.as_bytes(), value.as_bytes(), t).map(|_| None),
        KvOp::Delete { key } => c.delete(key.as_bytes(), t).map(|_| None),
        KvOp::Get { key } => c.get(key.as_bytes(), t).map(Some),
    };
    match r {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(v)) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&v);
            let _ = out.write_all(b"\n");
            ExitCode::SUCCESS
        }
        Err(e @ ClientError::Unknown(_)) => {
            // The retry the message offers needs this process's session, which ends with it.
            eprintln!(
                "shmraft kv: {e}\nshmraft kv: this command's session ends with it, so running \
                 the command again is a new write, not a retry: read the key first"
            );
            ExitCode::from(EXIT_UNKNOWN)
        }
        Err(e) => {
            eprintln!("shmraft kv: {e}");
            ExitCode::from(2)
        }
    }
}
