//! `shmraft bench`: cluster throughput and latency per fsync policy and client count, against a
//! real cluster of node processes, with same-run baselines (raw fdatasync, pipe round trip,
//! memcpy), a table, `--json` and an SVG `--plot`.
//!
//! For every configuration (policy x client count) a fresh cluster is started in its own
//! directory, the in-process load generator ([`load`]) drives it through the client channel
//! for the measured window, and the nodes' counters (syncs, appended entries, CPU time) are read
//! before and after the window.

pub mod baseline;
pub mod catchup;
pub mod failover;
pub mod harness;
pub mod load;
pub mod report;
pub mod wal;

use crate::args::{ClusterDirArg, ElectionTimeoutArg, FsyncArg, JsonFileArg, WorkDirArgs};
use crate::cli::cluster::ClusterArgs;
use anyhow::{Context, bail};
use harness::{BenchCluster, process_cpu};
use load::{LoadSpec, Stop};
use report::{BenchReport, ConfigResult, Machine, NodeFigures};
use shmraft_consensus::node::client::Client;
use shmraft_consensus::node::status::NodeStatus;
use shmraft_storage::FsyncPolicy;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `shmraft bench [OPTIONS]` (the write benchmark) or `shmraft bench failover|catchup ...`.
#[derive(clap::Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchCli {
    #[command(subcommand)]
    pub sub: Option<BenchSub>,
    #[command(flatten)]
    pub run: BenchArgs,
}

/// The other cluster benchmarks.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum BenchSub {
    /// Repeated leader kills on a 3-node cluster: time to a new leader and to the first commit.
    Failover(failover::FailoverArgs),
    /// A follower behind by a snapshot of S MiB: time and GB/s to catch up.
    Catchup(catchup::CatchupArgs),
}

/// Measure committed throughput and latency of a real cluster per fsync policy and client count.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Nodes per cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// fsync policies to measure, comma separated (always, batch, batch:<delay_us>:<bytes>,
    /// interval:<ms>, never).
    #[arg(
        long,
        value_name = "POLICY,...",
        default_value = "always,batch,interval:10,never",
        value_delimiter = ','
    )]
    pub fsync: Vec<FsyncPolicy>,
    /// Client counts to measure, comma separated: closed-loop clients, each with one request in
    /// flight and its own exactly-once session.
    #[arg(long, default_value = "1,16,64,256", value_delimiter = ',')]
    pub clients: Vec<u64>,
    /// Client connections the clients are spread over (one load-generator thread each; many
    /// requests in flight per connection).
    #[arg(long, default_value_t = 1)]
    pub connections: u64,
    /// Bytes of each written value.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Measure this many operations per configuration (instead of a duration).
    #[arg(long, conflicts_with = "duration_s")]
    pub ops: Option<u64>,
    /// Measure for this many seconds per configuration.
    #[arg(long, default_value_t = 5.0)]
    pub duration_s: f64,
    /// Warm-up before each measurement, milliseconds.
    #[arg(long, default_value_t = 500)]
    pub warmup_ms: u64,
    /// Percentage of operations that are linearizable reads.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub reads: u8,
    /// Distinct keys per client (bounds the state's size).
    #[arg(long, default_value_t = 1000)]
    pub keys_per_client: u64,
    #[command(flatten)]
    pub timing: ElectionTimeoutArg,
    /// How long each node's loop spins before parking, microseconds.
    #[arg(long, default_value_t = 10)]
    pub spin_us: u32,
    /// Nodes snapshot (and compact their logs) every this many applied entries.
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_entries: u64,
    // --keep keeps each configuration's cluster directory as `bench-POLICY-CLIENTS`.
    #[command(flatten)]
    pub work: WorkDirArgs,
    #[command(flatten)]
    pub output: JsonFileArg,
    /// Write an SVG plot of throughput and latency per policy and client count.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// Set by SIGINT/SIGTERM: the run stops at once, its clusters are stopped and removed, and what
/// was measured so far is reported.
static INTERRUPTED: std::sync::LazyLock<Arc<AtomicBool>> =
    std::sync::LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// Whether Ctrl-C (or SIGTERM) asked the benchmark to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Stops the benchmark cleanly on Ctrl-C or SIGTERM instead of dying with clusters running.
pub fn catch_interrupts() {
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, INTERRUPTED.clone()) {
            eprintln!("shmraft bench: cannot install a handler for signal {sig}: {e}");
        }
    }
}

/// Runs `shmraft bench`.
pub fn run(a: &BenchArgs) -> ExitCode {
    if let Err(e) = validate(a) {
        eprintln!("shmraft bench: {e:#}");
        return ExitCode::from(crate::EXIT_USAGE);
    }
    catch_interrupts();
    match run_inner(a) {
        Ok(()) if interrupted() => {
            eprintln!(
                "shmraft bench: interrupted; the figures above are the configurations finished"
            );
            ExitCode::from(130)
        }
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmraft bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The shape of `bench failover` and `bench catchup`: a usage error exits 2 before anything
/// starts; a run that fails exits 1; a run that misses its target says so and exits 0 (a miss
/// is a measurement, not an error).
pub(crate) fn run_subcommand<R>(
    name: &str,
    validate: impl FnOnce() -> anyhow::Result<()>,
    run: impl FnOnce() -> anyhow::Result<R>,
    missed: impl FnOnce(&R) -> Option<String>,
) -> ExitCode {
    if let Err(e) = validate() {
        eprintln!("shmraft bench {name}: {e:#}");
        return ExitCode::from(crate::EXIT_USAGE);
    }
    match run() {
        Ok(r) => {
            if let Some(m) = missed(&r) {
                eprintln!("shmraft bench {name}: {m}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shmraft bench {name}: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn validate(a: &BenchArgs) -> anyhow::Result<()> {
    if a.nodes == 0 || a.nodes > 15 {
        bail!("--nodes must be between 1 and 15, got {}", a.nodes);
    }
    if a.fsync.is_empty() {
        bail!("--fsync needs at least one policy");
    }
    if a.clients.is_empty() || a.clients.contains(&0) {
        bail!("--clients needs counts of at least 1, got {:?}", a.clients);
    }
    if a.size == 0 || a.size > (1 << 20) {
        bail!("--size must be between 1 and 1048576 bytes, got {}", a.size);
    }
    if !(a.duration_s > 0.0 && a.duration_s.is_finite()) {
        bail!("--duration-s must be a positive number of seconds");
    }
    if a.ops == Some(0) {
        bail!("--ops must be at least 1");
    }
    if a.connections == 0 {
        bail!("--connections must be at least 1");
    }
    Ok(())
}

/// Where a benchmark puts its cluster directories: `--dir`, or the system's temporary
/// directory; created, and canonical (the nodes get absolute paths).
pub(crate) fn data_parent(dir: Option<&std::path::Path>) -> anyhow::Result<PathBuf> {
    let parent = dir.map_or_else(std::env::temp_dir, |d| d.to_path_buf());
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    Ok(std::fs::canonicalize(&parent)?)
}

fn run_inner(a: &BenchArgs) -> anyhow::Result<()> {
    let parent = data_parent(a.work.dir.as_deref())?;
    let machine = Machine::probe(&parent);
    println!(
        "shmraft bench: {} nodes, {} B values, {}% reads, {} on {} CPUs ({}), {} GiB, data in {} ({})",
        a.nodes,
        a.size,
        a.reads,
        match a.ops {
            Some(n) => format!("{n} ops per configuration"),
            None => format!("{} s per configuration", a.duration_s),
        },
        machine.cpus,
        machine.cpu_model,
        machine.memory_bytes >> 30,
        parent.display(),
        machine.data_fs
    );
    let baselines = baseline::measure(&parent, a.size as u64)?;
    print!("{}", report::baselines_text(&baselines));
    let configs: Vec<(FsyncPolicy, u64)> = a
        .fsync
        .iter()
        .flat_map(|&p| a.clients.iter().map(move |&c| (p, c)))
        .collect();
    let per_config = match a.ops {
        Some(n) => n,
        None => (a.duration_s * 1000.0) as u64,
    };
    let bar = crate::progress_bar(per_config * configs.len() as u64, "bench");
    let mut results = Vec::new();
    for (k, (policy, clients)) in configs.iter().enumerate() {
        if interrupted() {
            break;
        }
        bar.set_message(format!("{policy}, {clients} clients"));
        let base = per_config * k as u64;
        let r = run_config(
            a,
            &parent,
            *policy,
            *clients,
            &baselines,
            &|done, elapsed| {
                let pos = match a.ops {
                    Some(_) => done,
                    None => elapsed.as_millis() as u64,
                };
                bar.set_position(base + pos.min(per_config));
            },
        )
        .with_context(|| format!("configuration fsync={policy} clients={clients}"))?;
        if interrupted() {
            // A window cut short is not a measurement.
            break;
        }
        bar.set_position(base + per_config);
        bar.suspend(|| {
            println!(
                "  {:<12} {clients:>4} clients: {:>9.0} ops/s, p50 {:.1} us, p99 {:.1} us \
                 (raw fdatasync p50 just before: {:.1} us){}",
                policy.to_string(),
                r.ops_per_s,
                r.latency_us_p50,
                r.latency_us_p99,
                r.fdatasync_us_p50_before,
                if r.errors > 0 {
                    format!(
                        ", {} errors (first: {})",
                        r.errors,
                        r.first_error.as_deref().unwrap_or("")
                    )
                } else {
                    String::new()
                }
            )
        });
        results.push(r);
    }
    bar.finish_and_clear();
    println!();
    print!("{}", report::table(&results));
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let rep = BenchReport {
        version: 1,
        command,
        machine,
        baselines,
        results,
    };
    if let Some(p) = &a.output.json {
        std::fs::write(p, serde_json::to_vec_pretty(&rep)?)
            .with_context(|| format!("writing {}", p.display()))?;
        println!("wrote {}", p.display());
    }
    if let Some(p) = &a.plot {
        let title = format!(
            "shmraft bench: {} nodes, {} B values, {} CPUs",
            a.nodes, a.size, rep.machine.cpus
        );
        report::plot(p, &rep.results, &title)?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// The counters of every node, asked over the client channel, and their CPU times.
fn sample(
    c: &BenchCluster,
    client: &mut Client,
) -> Vec<(u64, Option<NodeStatus>, Option<Duration>)> {
    c.statuses(client, Duration::from_secs(2))
        .into_iter()
        .map(|(id, s)| (id, s, c.pid(id).and_then(process_cpu)))
        .collect()
}

fn run_config(
    a: &BenchArgs,
    parent: &std::path::Path,
    policy: FsyncPolicy,
    clients: u64,
    baselines: &baseline::Baselines,
    progress: &dyn Fn(u64, Duration),
) -> anyhow::Result<ConfigResult> {
    let spec = ClusterArgs {
        nodes: a.nodes,
        cluster: ClusterDirArg {
            dir: PathBuf::new(),
        },
        sync: FsyncArg { fsync: policy },
        timing: a.timing.clone(),
        heartbeat_ms: (a.timing.election_timeout_ms.0 / 5).max(1),
        tick_ms: None,
        spin_us: a.spin_us,
        snapshot_entries: a.snapshot_entries,
        segment_bytes: 64 << 20,
        restart: false,
        exit_with_parent: false,
    };
    // A short raw-sync baseline right before the cluster starts, on the same disk, with a
    // CPU kept busy as during the run (see `Baselines::fdatasync_us_p50`).
    let fdatasync_before = baseline::fdatasync_busy(parent, a.size as u64, 300)?.p50_us;
    let keep = a
        .work
        .keep
        .then(|| format!("bench-{}-{clients}", policy.to_string().replace(':', "_")));
    let cluster = BenchCluster::start(&spec, parent, keep.as_deref())?;
    let mut status_client = Client::new(cluster.client_config())?;
    let load = LoadSpec {
        clients,
        connections: a.connections,
        value_bytes: a.size,
        reads_pct: a.reads,
        keys_per_client: a.keys_per_client,
        warmup: Duration::from_millis(a.warmup_ms),
        stop: match a.ops {
            Some(n) => Stop::Ops(n),
            None => Stop::Duration(Duration::from_secs_f64(a.duration_s)),
        },
        request_timeout: Duration::from_secs(10),
    };
    // The nodes' counters, sampled as the measured window opens and closes (the samples cost a
    // status round trip each, a few hundred microseconds, inside a window of seconds).
    let mut before = Vec::new();
    let mut after = Vec::new();
    let r = load::run(&cluster.client_config(), &load, progress, &mut |start| {
        let s = sample(&cluster, &mut status_client);
        if start { before = s } else { after = s }
    })?;
    let secs = r.measured.as_secs_f64().max(1e-9);
    let ops = r.writes + r.reads;
    let mut per_node = Vec::new();
    let mut nodes_cpu = 0.0;
    let mut term_start = 0;
    let mut term_end = 0;
    for ((id, s0, c0), (_, s1, c1)) in before.iter().zip(after.iter()) {
        let (Some(s0), Some(s1)) = (s0, s1) else {
            bail!("node {id} did not answer a status request during the run");
        };
        term_start = term_start.max(s0.term);
        term_end = term_end.max(s1.term);
        let syncs = s1.syncs.saturating_sub(s0.syncs);
        let entries = s1.entries_appended.saturating_sub(s0.entries_appended);
        let appends = s1.append_calls.saturating_sub(s0.append_calls);
        let cpu = match (c0, c1) {
            (Some(a), Some(b)) => b.saturating_sub(*a).as_secs_f64(),
            _ => 0.0,
        };
        nodes_cpu += cpu;
        per_node.push(NodeFigures {
            id: *id,
            role: s1.role.clone(),
            syncs,
            syncs_per_s: syncs as f64 / secs,
            entries_appended: entries,
            append_calls: appends,
            entries_per_append: (appends > 0).then(|| entries as f64 / appends as f64),
            entries_per_sync: (syncs > 0).then(|| entries as f64 / syncs as f64),
            cpu_s: cpu,
        });
    }
    let per_op = |cpu_s: f64| {
        if ops > 0 {
            cpu_s * 1e6 / ops as f64
        } else {
            0.0
        }
    };
    let h = &r.latency_ns;
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let ops_per_s = ops as f64 / secs;
    let mb_per_s = ops_per_s * a.size as f64 / 1e6;
    let p50 = us(0.5);
    Ok(ConfigResult {
        fsync: policy.to_string(),
        clients,
        connections: a.connections.min(clients),
        nodes: a.nodes,
        value_bytes: a.size as u64,
        reads_pct: a.reads,
        duration_s: secs,
        ops,
        writes: r.writes,
        reads: r.reads,
        errors: r.errors,
        first_error: r.first_error,
        ops_per_s,
        mb_per_s,
        latency_us_p50: p50,
        latency_us_p90: us(0.9),
        latency_us_p99: us(0.99),
        latency_us_p999: us(0.999),
        latency_us_max: h.max() as f64 / 1000.0,
        latency_us_mean: h.mean() / 1000.0,
        cpu_us_per_op: per_op(nodes_cpu + r.cpu.as_secs_f64()),
        cpu_us_per_op_nodes: per_op(nodes_cpu),
        cpu_us_per_op_load_generator: per_op(r.cpu.as_secs_f64()),
        term_start,
        term_end,
        per_node,
        fdatasync_us_p50_before: fdatasync_before,
        latency_us_p50_minus_fdatasync_p50: p50 - fdatasync_before,
        ratio_latency_p50_to_pipe_rtt_p50: p50 / baselines.pipe_rtt_us_p50.max(1e-9),
        ratio_mb_per_s_to_memcpy: mb_per_s / (baselines.memcpy_gb_per_s * 1000.0).max(1e-9),
    })
}
