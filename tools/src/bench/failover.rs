//! `shmraft bench failover`: repeated leader kills on a real 3-node cluster, and the
//! distribution of the time to a new leader and to the first write the new leader acknowledges.
//!
//! One kill, step by step:
//! 1. Every node runs and has applied what the leader committed; the leader and its term are
//!    read from the nodes' status (over the client channel).
//! 2. `t0`; the leader is SIGKILLed (fault-matrix row C1 of docs/FAULTS.md: a crashed process).
//! 3. The survivors are asked for their status about every millisecond until one reports
//!    `leader` in a higher term: the time to a new leader. Its resolution is the poll interval
//!    plus one status round trip (tens of microseconds), well under the election timeouts.
//! 4. A writer thread proposes small puts all along, one at a time; the first write
//!    acknowledged after `t0` by a node other than the killed one was committed by the new
//!    leader (the old one is dead): the time to the first new commit.
//! 5. The killed node is restarted, the bench waits until it has applied what the leader had
//!    committed, pauses (`--pause-ms`) so the cluster settles, and repeats.

use crate::args::{ElectionTimeoutArg, FsyncArg, JsonFileArg, WorkDirArgs};
use crate::bench::harness::{BenchCluster, three_node_args};
use crate::bench::report::Machine;
use anyhow::{Context, bail};
use serde::Serialize;
use shmraft_consensus::kv::client::KvClient;
use shmraft_consensus::node::client::Client;
use shmraft_consensus::node::status::NodeStatus;
use shmraft_consensus::types::NodeId;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Kill the leader of a 3-node cluster again and again; report how long it takes to elect a new
/// leader and to commit the first write after each kill.
#[derive(clap::Args, Debug, Clone)]
#[command(mut_arg("fsync", |a| a.default_value("never")))]
pub struct FailoverArgs {
    /// Leader kills to measure.
    #[arg(long, default_value_t = 20)]
    pub kills: u64,
    // Heartbeats every MIN/5 ms.
    #[command(flatten)]
    pub timing: ElectionTimeoutArg,
    #[command(flatten)]
    pub sync: FsyncArg,
    /// Pause after the restarted node has caught up, before the next kill, milliseconds
    /// (default: the maximum election timeout).
    #[arg(long)]
    pub pause_ms: Option<u64>,
    /// The writer proposes at most one write per this many microseconds (it waits for each).
    #[arg(long, default_value_t = 500)]
    pub write_interval_us: u64,
    // --keep keeps the cluster's directory as `failover`.
    #[command(flatten)]
    pub work: WorkDirArgs,
    // Every figure and every sample.
    #[command(flatten)]
    pub output: JsonFileArg,
}

/// One leader kill.
#[derive(Clone, Debug, Serialize)]
pub struct KillSample {
    /// 1-based.
    pub kill: u64,
    pub killed_node: u64,
    pub old_term: u64,
    pub new_leader: u64,
    pub new_term: u64,
    /// From the SIGKILL until a survivor reported itself leader in a higher term.
    pub new_leader_ms: f64,
    /// From the SIGKILL until the first write acknowledged by a surviving node.
    pub first_commit_ms: f64,
    /// Status polls of the survivors until the new leader was seen.
    pub polls: u64,
}

/// Percentiles of one measure, milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Distribution {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub min: f64,
    pub mean: f64,
}

/// Everything `--json` writes.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverReport {
    pub version: u32,
    pub command: String,
    pub machine: Machine,
    pub nodes: u64,
    pub fsync: String,
    pub election_timeout_ms_min: u64,
    pub election_timeout_ms_max: u64,
    pub heartbeat_ms: u64,
    pub tick_ms: u64,
    pub kills: u64,
    pub new_leader_ms_p50: f64,
    pub new_leader_ms_p90: f64,
    pub new_leader_ms_p99: f64,
    pub new_leader_ms_max: f64,
    pub new_leader_ms_min: f64,
    pub new_leader_ms_mean: f64,
    pub first_commit_ms_p50: f64,
    pub first_commit_ms_p90: f64,
    pub first_commit_ms_p99: f64,
    pub first_commit_ms_max: f64,
    pub first_commit_ms_min: f64,
    pub first_commit_ms_mean: f64,
    /// The target for the new-leader p50 with these timeouts (350 ms for 150-300, 40 ms for
    /// 10-20; None for other settings) and whether it was met.
    pub target_new_leader_ms_p50: Option<f64>,
    pub target_met: Option<bool>,
    /// Writes the writer had acknowledged, and writes that failed (unknown outcome or refused),
    /// over the whole run.
    pub writes_acked: u64,
    pub writes_failed: u64,
    pub samples: Vec<KillSample>,
}

/// Nearest-rank percentiles of `v` (which need not be sorted); zeros for no samples.
pub fn distribution(v: &[f64]) -> Distribution {
    if v.is_empty() {
        return Distribution::default();
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let rank = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len());
        s[rank - 1]
    };
    Distribution {
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        max: s[s.len() - 1],
        min: s[0],
        mean: s.iter().sum::<f64>() / s.len() as f64,
    }
}

/// Runs `shmraft bench failover`.
pub fn run(a: &FailoverArgs) -> ExitCode {
    super::run_subcommand(
        "failover",
        || validate(a),
        || run_inner(a),
        |r| {
            (r.target_met == Some(false)).then(|| {
                format!(
                    "p50 to a new leader {:.1} ms misses the target {:.0} ms",
                    r.new_leader_ms_p50,
                    r.target_new_leader_ms_p50.unwrap_or(0.0)
                )
            })
        },
    )
}

/// What the writer thread reports: each acknowledged write with the node that answered it.
struct Ack {
    at: Instant,
    node: NodeId,
}

/// A writer proposing small puts one at a time until `stop`; acknowledgements go to `acks`.
fn spawn_writer(
    cluster: &BenchCluster,
    interval: Duration,
    attempt_timeout: Duration,
    stop: Arc<AtomicBool>,
    acks: mpsc::Sender<Ack>,
    failed: Arc<AtomicU64>,
) -> anyhow::Result<std::thread::JoinHandle<u64>> {
    let mut cfg = cluster.client_config();
    // A write sent to the node that just died waits this long before it is retried elsewhere
    // (the client also notices the dead link on its own); short, so the first commit after a
    // failover is not hidden behind the default 500 ms. Retries keep the sequence number.
    cfg.attempt_timeout = attempt_timeout;
    let mut c = KvClient::new(cfg).context("starting the writer's client")?;
    let h = std::thread::Builder::new()
        .name("failover-writer".into())
        .spawn(move || {
            let mut n = 0u64;
            let value = [b'v'; 64];
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let key = format!("failover-{}", n % 1000);
                match c.put(key.as_bytes(), &value, Duration::from_secs(5)) {
                    Ok(()) => {
                        n += 1;
                        let node = c.client().leader_guess();
                        if acks
                            .send(Ack {
                                at: Instant::now(),
                                node,
                            })
                            .is_err()
                        {
                            break;
                        }
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(error = %e, "failover writer: write failed");
                    }
                }
                next += interval;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
            n
        })
        .context("starting the writer thread")?;
    Ok(h)
}

/// The status of `ids`, asked over the client channel with a short timeout each.
fn statuses_of(c: &mut Client, ids: &[u64], each: Duration) -> Vec<NodeStatus> {
    ids.iter()
        .filter_map(|&id| c.status(NodeId(id), each).ok())
        .collect()
}

/// Waits until every node answers, exactly one leads in the highest term, and every node has
/// applied what that leader had committed when first seen. Returns the leader's status.
fn wait_settled(
    cluster: &BenchCluster,
    c: &mut Client,
    within: Duration,
) -> anyhow::Result<NodeStatus> {
    let ids = cluster.ids();
    let deadline = Instant::now() + within;
    let mut target: Option<(u64, u64, u64)> = None; // (leader, term, commit)
    loop {
        let st = statuses_of(c, &ids, Duration::from_millis(200));
        if st.len() == ids.len() {
            let top = st.iter().map(|s| s.term).max().unwrap_or(0);
            let leaders: Vec<&NodeStatus> = st
                .iter()
                .filter(|s| s.role == "leader" && s.term == top)
                .collect();
            if let [l] = leaders[..] {
                match target {
                    Some((id, term, commit)) if id == l.id && term == l.term => {
                        if st.iter().all(|s| s.applied_index >= commit) {
                            return Ok(l.clone());
                        }
                    }
                    _ => target = Some((l.id, l.term, l.commit_index)),
                }
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "the cluster did not settle (all nodes up, one leader, all caught up) within \
                 {within:?}; last statuses: {}; node logs are in {}",
                st.iter()
                    .map(|s| format!(
                        "node {} {} term {} applied {}",
                        s.id, s.role, s.term, s.applied_index
                    ))
                    .collect::<Vec<_>>()
                    .join(", "),
                cluster.dir.join("logs").display()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn validate(a: &FailoverArgs) -> anyhow::Result<()> {
    if a.kills == 0 {
        bail!("--kills must be at least 1");
    }
    if a.timing.election_timeout_ms.0 < 5 {
        bail!(
            "--election-timeout-ms minimum must be at least 5 ms (heartbeats every MIN/5 ms), got {}",
            a.timing.election_timeout_ms.0
        );
    }
    Ok(())
}

/// The targets for the p50 to a new leader.
fn target_for(timeouts: (u64, u64)) -> Option<f64> {
    match timeouts {
        (150, 300) => Some(350.0),
        (10, 20) => Some(40.0),
        _ => None,
    }
}

/// Runs the benchmark and prints its table; returns the report (also written with `--json`).
pub fn run_inner(a: &FailoverArgs) -> anyhow::Result<FailoverReport> {
    validate(a)?;
    let parent = super::data_parent(a.work.dir.as_deref())?;
    let machine = Machine::probe(&parent);
    let spec = three_node_args(a.sync.fsync, a.timing.election_timeout_ms, &[])?;
    let (emin, emax) = spec.timing.election_timeout_ms;
    let heartbeat_ms = spec.heartbeat_ms;
    let keep = a.work.keep.then_some("failover");
    let mut cluster = BenchCluster::start(&spec, &parent, keep)?;
    let tick_ms = cluster.cf.tick_ms;
    println!(
        "shmraft bench failover: 3 nodes, election timeout {emin}-{emax} ms, heartbeat {heartbeat_ms} ms, \
         tick {tick_ms} ms, fsync {}, {} kills, on {} CPUs ({}), data in {}",
        a.sync.fsync,
        a.kills,
        machine.cpus,
        machine.cpu_model,
        parent.display()
    );
    let pause = Duration::from_millis(a.pause_ms.unwrap_or(emax));
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let (ack_tx, ack_rx) = mpsc::channel::<Ack>();
    let attempt_timeout = Duration::from_millis((emin / 2).max(5));
    let writer = spawn_writer(
        &cluster,
        Duration::from_micros(a.write_interval_us),
        attempt_timeout,
        stop.clone(),
        ack_tx,
        failed.clone(),
    )?;
    let result = measure_kills(a, &mut cluster, &ack_rx, pause);
    stop.store(true, Ordering::Relaxed);
    drop(ack_rx);
    let writes_acked = writer.join().unwrap_or(0);
    let samples = result?;
    drop(cluster);

    let nl: Vec<f64> = samples.iter().map(|s| s.new_leader_ms).collect();
    let fc: Vec<f64> = samples.iter().map(|s| s.first_commit_ms).collect();
    let (d_nl, d_fc) = (distribution(&nl), distribution(&fc));
    let target = target_for(a.timing.election_timeout_ms);
    let report = FailoverReport {
        version: 1,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine,
        nodes: 3,
        fsync: a.sync.fsync.to_string(),
        election_timeout_ms_min: emin,
        election_timeout_ms_max: emax,
        heartbeat_ms,
        tick_ms,
        kills: samples.len() as u64,
        new_leader_ms_p50: d_nl.p50,
        new_leader_ms_p90: d_nl.p90,
        new_leader_ms_p99: d_nl.p99,
        new_leader_ms_max: d_nl.max,
        new_leader_ms_min: d_nl.min,
        new_leader_ms_mean: d_nl.mean,
        first_commit_ms_p50: d_fc.p50,
        first_commit_ms_p90: d_fc.p90,
        first_commit_ms_p99: d_fc.p99,
        first_commit_ms_max: d_fc.max,
        first_commit_ms_min: d_fc.min,
        first_commit_ms_mean: d_fc.mean,
        target_new_leader_ms_p50: target,
        target_met: target.map(|t| d_nl.p50 <= t),
        writes_acked,
        writes_failed: failed.load(Ordering::Relaxed),
        samples,
    };
    print!("{}", table(&report, &d_nl, &d_fc));
    if let Some(p) = &a.output.json {
        write_json(p, &report)?;
        println!("wrote {}", p.display());
    }
    Ok(report)
}

fn write_json(p: &Path, r: &FailoverReport) -> anyhow::Result<()> {
    std::fs::write(p, serde_json::to_vec_pretty(r)?)
        .with_context(|| format!("writing {}", p.display()))
}

fn measure_kills(
    a: &FailoverArgs,
    cluster: &mut BenchCluster,
    acks: &mpsc::Receiver<Ack>,
    pause: Duration,
) -> anyhow::Result<Vec<KillSample>> {
    let mut c = Client::new(cluster.client_config())?;
    let settle = Duration::from_secs(30);
    let bar = crate::progress_bar(a.kills, "failover");
    let mut samples = Vec::new();
    for k in 1..=a.kills {
        bar.set_message(format!("kill {k}/{}", a.kills));
        let leader =
            wait_settled(cluster, &mut c, settle).with_context(|| format!("before kill {k}"))?;
        let survivors: Vec<u64> = cluster
            .ids()
            .into_iter()
            .filter(|&i| i != leader.id)
            .collect();
        // Acknowledgements so far belong to the old leader.
        while acks.try_recv().is_ok() {}
        let t0 = Instant::now();
        cluster.kill(leader.id);
        // Step 3: poll the survivors until one leads in a higher term.
        let mut polls = 0u64;
        let (new_leader, new_term, new_leader_at) = loop {
            polls += 1;
            let st = statuses_of(&mut c, &survivors, Duration::from_millis(100));
            let seen = Instant::now();
            if let Some(l) = st
                .iter()
                .filter(|s| s.role == "leader" && s.term > leader.term)
                .max_by_key(|s| s.term)
            {
                break (l.id, l.term, seen);
            }
            if t0.elapsed() > settle {
                bail!(
                    "kill {k}: no new leader within {settle:?} after killing node {} (term {}); \
                     node logs are in {}",
                    leader.id,
                    leader.term,
                    cluster.dir.join("logs").display()
                );
            }
            // About one poll per millisecond (a poll itself takes a round trip per survivor).
            let next = seen + Duration::from_millis(1);
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        };
        // Step 4: the first write acknowledged after t0 by a survivor.
        let first_commit_at = loop {
            match acks.recv_timeout(settle) {
                Ok(ack) if ack.at > t0 && ack.node.get() != leader.id => break ack.at,
                Ok(_) => continue,
                Err(_) => bail!(
                    "kill {k}: no write was acknowledged within {settle:?} after killing node {}; \
                     node logs are in {}",
                    leader.id,
                    cluster.dir.join("logs").display()
                ),
            }
        };
        let sample = KillSample {
            kill: k,
            killed_node: leader.id,
            old_term: leader.term,
            new_leader,
            new_term,
            new_leader_ms: (new_leader_at - t0).as_secs_f64() * 1e3,
            first_commit_ms: (first_commit_at - t0).as_secs_f64() * 1e3,
            polls,
        };
        bar.suspend(|| {
            println!(
                "  kill {k:>3}: node {} (term {}) -> node {} (term {}): new leader {:.1} ms, first commit {:.1} ms",
                sample.killed_node,
                sample.old_term,
                sample.new_leader,
                sample.new_term,
                sample.new_leader_ms,
                sample.first_commit_ms
            )
        });
        samples.push(sample);
        // Step 5: restart the killed node and let it catch up (checked by wait_settled at the
        // top of the next round), then pause.
        cluster
            .start_node(leader.id)
            .with_context(|| format!("restarting node {}", leader.id))?;
        wait_settled(cluster, &mut c, settle)
            .with_context(|| format!("after restarting node {}", leader.id))?;
        std::thread::sleep(pause);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(samples)
}

fn table(r: &FailoverReport, nl: &Distribution, fc: &Distribution) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{} kills, election timeout {}-{} ms, fsync {}\n",
        r.kills, r.election_timeout_ms_min, r.election_timeout_ms_max, r.fsync
    );
    let _ = writeln!(
        s,
        "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "ms after kill", "min", "p50", "p90", "p99", "max", "mean"
    );
    for (name, d) in [("new leader", nl), ("first commit", fc)] {
        let _ = writeln!(
            s,
            "{:<16} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            name, d.min, d.p50, d.p90, d.p99, d.max, d.mean
        );
    }
    if let (Some(t), Some(met)) = (r.target_new_leader_ms_p50, r.target_met) {
        let _ = writeln!(
            s,
            "\ntarget: p50 to a new leader <= {t:.0} ms: {} ({:.1} ms)",
            if met { "met" } else { "MISSED" },
            r.new_leader_ms_p50
        );
    }
    let _ = writeln!(
        s,
        "writer: {} writes acknowledged, {} failed (unknown outcome or refused)",
        r.writes_acked, r.writes_failed
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let d = distribution(&v);
        assert_eq!(
            (d.p50, d.p90, d.p99, d.max, d.min),
            (50.0, 90.0, 99.0, 100.0, 1.0)
        );
        assert!((d.mean - 50.5).abs() < 1e-9);
        let one = distribution(&[7.0]);
        assert_eq!((one.p50, one.p99, one.max), (7.0, 7.0, 7.0));
        assert_eq!(distribution(&[]).p50, 0.0);
    }
}
