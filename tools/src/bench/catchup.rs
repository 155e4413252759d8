//! `shmraft bench catchup`: how fast a follower that is behind by a snapshot of S MiB catches up
//! (InstallSnapshot, Raft §7), against same-run baselines.
//!
//! One run, step by step, on a fresh 3-node cluster:
//! 1. One follower is stopped (SIGKILL).
//! 2. S MiB of distinct keys are written through the leader with a [`PipelinedClient`]. The
//!    cluster snapshots by entry count exactly once the writes are applied (`snapshot_entries`
//!    = the number of writes) and keeps only a few entries behind the snapshot
//!    (`compaction_retain_entries`), so the stopped follower's log ends long before the
//!    leader's first entry: it can only catch up by a snapshot.
//! 3. The bench waits until the leader's snapshot covering the writes is durable, and reads the
//!    leader's commit index `C0`.
//! 4. `t0`: the follower is restarted. Its status is polled over the client channel until its
//!    applied index reaches `C0`: the catch-up time. Polling also gives when the process first
//!    answered (start-up), when its snapshot was installed and restored, and the log tail after
//!    (the transfer and install phases come from the follower's status: the node records the
//!    timings of the last snapshot it installed).
//!    After the run the follower must report an installed snapshot, or the run is refused.
//! 5. GB/s = the leader's snapshot file bytes / catch-up time.
//!
//! Baselines, measured in the same run on the same disk: memcpy GB/s, and a raw sequential
//! `write` of the snapshot's size in 1 MiB pieces followed by one `fdatasync` (what receiving
//! and installing the file durably costs at least). And, offline on the leader's snapshot file
//! after the run: reading and checking it plus restoring a key-value machine from it (what the
//! follower's restore costs, so the transfer's share can be estimated).

use crate::args::{ElectionTimeoutArg, FsyncArg, JsonFileArg, WorkDirArgs};
use crate::bench::harness::{BenchCluster, three_node_args};
use crate::bench::report::Machine;
use crate::bench::wal::baseline_memcpy_gb_per_s;
use anyhow::{Context, bail};
use serde::Serialize;
use shmraft_consensus::StateMachine;
use shmraft_consensus::kv::{KvCommand, KvStateMachine};
use shmraft_consensus::node::client::Client;
use shmraft_consensus::node::pipeline::{Completion, PipelinedClient};
use shmraft_consensus::node::status::NodeStatus;
use shmraft_consensus::types::NodeId;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// A follower behind by a snapshot of S MiB: the time and GB/s to catch up.
#[derive(clap::Args, Debug, Clone)]
#[command(mut_arg("fsync", |a| a.default_value("never")))]
pub struct CatchupArgs {
    /// Size of the state (the sum of the written values), MiB.
    #[arg(long, default_value_t = 256)]
    pub state_mib: u64,
    /// Bytes of each written value (one distinct key each).
    #[arg(long, default_value_t = 4096)]
    pub value_bytes: u64,
    /// Catch-ups to measure, each on a fresh cluster.
    #[arg(long, default_value_t = 3)]
    pub runs: u64,
    #[command(flatten)]
    pub sync: FsyncArg,
    /// Writes in flight while the state is written.
    #[arg(long, default_value_t = 32)]
    pub window: u64,
    // Heartbeats every MIN/5 ms.
    #[command(flatten)]
    pub timing: ElectionTimeoutArg,
    // --keep keeps each run's cluster directory as `catchup-run-N`.
    #[command(flatten)]
    pub work: WorkDirArgs,
    #[command(flatten)]
    pub output: JsonFileArg,
}

/// One catch-up.
#[derive(Clone, Debug, Serialize)]
pub struct CatchupRun {
    pub run: u64,
    pub follower: u64,
    pub leader: u64,
    pub writes: u64,
    /// Seconds to write the state through the leader (with one follower down).
    pub write_s: f64,
    pub write_mb_per_s: f64,
    pub snapshot_index: u64,
    /// Size of the leader's snapshot file (header, membership, data, trailer).
    pub snapshot_file_bytes: u64,
    /// The leader's commit index when the follower was restarted: caught up = applied this.
    pub leader_commit_at_t0: u64,
    /// From the restart until the follower had applied `leader_commit_at_t0`.
    pub catchup_s: f64,
    /// `snapshot_file_bytes / catchup_s`, 10^9 bytes per second.
    pub gb_per_s: f64,
    /// From the restart until the follower first answered a status request (process start,
    /// storage recovery, transport set-up).
    pub startup_ms: f64,
    /// From the first answer until the follower reported the snapshot installed and restored
    /// (transfer, install: sync + rename + log discard, restore into the state machine).
    pub snapshot_ms: f64,
    /// From then until it had applied `leader_commit_at_t0` (the log after the snapshot).
    pub tail_ms: f64,
    /// The follower's side, from the snapshot-install timings in its status: from the restart
    /// until its first chunk arrived (start-up, the leader noticing it and finding its log
    /// compacted; on the host's wall clock, shared by both processes).
    pub transfer_start_ms: f64,
    /// From the first chunk until the last was written (chunks read, sent, received, written).
    pub transfer_ms: f64,
    /// Install: trailer, fdatasync, rename, directory sync, log discarded (storage rule 15
    /// of docs/RULES.md).
    pub install_ms: f64,
    /// From the install until the follower reported the snapshot applied (reading the file
    /// back, checking it, restoring the state machine; plus one status round trip).
    pub restore_ms: f64,
    /// Offline, on the same snapshot file after the run: read it, check its checksum and
    /// restore a key-value machine from it (the follower does the same after the install).
    pub offline_restore_ms: f64,
    pub snapshots_installed: u64,
}

/// Everything `--json` writes.
#[derive(Clone, Debug, Serialize)]
pub struct CatchupReport {
    pub version: u32,
    pub command: String,
    pub machine: Machine,
    pub nodes: u64,
    pub fsync: String,
    pub state_mib: u64,
    pub value_bytes: u64,
    /// Baselines of this run: memcpy of 1 MiB pieces, and a raw sequential write of the snapshot
    /// size in 1 MiB pieces plus one fdatasync, on the disk of the clusters' directories.
    pub baseline_memcpy_gb_per_s: f64,
    pub baseline_write_fdatasync_gb_per_s: f64,
    pub baseline_write_fdatasync_ms: f64,
    pub runs: Vec<CatchupRun>,
    pub catchup_s_median: f64,
    pub gb_per_s_median: f64,
    pub gb_per_s_min: f64,
    pub gb_per_s_max: f64,
    /// `gb_per_s_median / baseline_write_fdatasync_gb_per_s`.
    pub ratio_gb_per_s_to_write_fdatasync: f64,
    /// `gb_per_s_median / baseline_memcpy_gb_per_s`.
    pub ratio_gb_per_s_to_memcpy: f64,
    /// The target (1 GB/s) applies to a 256 MiB state; None for other sizes.
    pub target_gb_per_s: Option<f64>,
    pub target_met: Option<bool>,
}

/// Runs `shmraft bench catchup`.
pub fn run(a: &CatchupArgs) -> ExitCode {
    super::run_subcommand(
        "catchup",
        || validate(a),
        || run_inner(a),
        |r| {
            (r.target_met == Some(false)).then(|| {
                format!(
                    "{:.2} GB/s misses the target {:.1} GB/s",
                    r.gb_per_s_median,
                    r.target_gb_per_s.unwrap_or(0.0)
                )
            })
        },
    )
}

fn validate(a: &CatchupArgs) -> anyhow::Result<()> {
    if a.state_mib == 0 || a.state_mib > 64 << 10 {
        bail!(
            "--state-mib must be between 1 and 65536, got {}",
            a.state_mib
        );
    }
    let max_value = shmraft_consensus::kv::MAX_VALUE_BYTES as u64;
    if a.value_bytes < 16 || a.value_bytes > max_value.min(1 << 20) {
        bail!(
            "--value-bytes must be between 16 and {}, got {}",
            max_value.min(1 << 20),
            a.value_bytes
        );
    }
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    // The nodes keep 16 entries behind their snapshot: with fewer writes than a few times that,
    // the follower's log would not be compacted away and it would catch up by appends.
    let writes = (a.state_mib << 20).div_ceil(a.value_bytes.max(1));
    if writes < 64 {
        bail!(
            "--state-mib {} with --value-bytes {} gives {writes} writes; at least 64 are needed \
             so the leader compacts its log past the stopped follower",
            a.state_mib,
            a.value_bytes
        );
    }
    if a.window == 0 || a.window > 4096 {
        bail!("--window must be between 1 and 4096, got {}", a.window);
    }
    if a.timing.election_timeout_ms.0 < 5 {
        bail!("--election-timeout-ms minimum must be at least 5 ms");
    }
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Runs the benchmark and prints its table; returns the report (also written with `--json`).
pub fn run_inner(a: &CatchupArgs) -> anyhow::Result<CatchupReport> {
    validate(a)?;
    let parent = super::data_parent(a.work.dir.as_deref())?;
    let machine = Machine::probe(&parent);
    let state_bytes = a.state_mib << 20;
    let writes = state_bytes.div_ceil(a.value_bytes);
    println!(
        "shmraft bench catchup: 3 nodes, a {} MiB state ({writes} keys of {} B values), fsync {}, \
         {} runs, on {} CPUs ({}), data in {}",
        a.state_mib,
        a.value_bytes,
        a.sync.fsync,
        a.runs,
        machine.cpus,
        machine.cpu_model,
        parent.display()
    );
    let memcpy = baseline_memcpy_gb_per_s(1 << 20)?;
    let (raw_ms, raw_gb) = write_fdatasync_baseline(&parent, state_bytes)?;
    println!(
        "baselines: memcpy {memcpy:.2} GB/s; write {} MiB + fdatasync {raw_ms:.1} ms ({raw_gb:.2} GB/s)",
        a.state_mib
    );
    let mut runs = Vec::new();
    for r in 1..=a.runs {
        let run = one_run(a, &parent, r, writes).with_context(|| format!("run {r}"))?;
        println!(
            "  run {r}: {:.1} MiB snapshot caught up in {:.3} s = {:.2} GB/s (start-up {:.0} ms, \
             snapshot {:.0} ms, tail {:.0} ms; offline restore {:.0} ms)",
            run.snapshot_file_bytes as f64 / (1 << 20) as f64,
            run.catchup_s,
            run.gb_per_s,
            run.startup_ms,
            run.snapshot_ms,
            run.tail_ms,
            run.offline_restore_ms
        );
        runs.push(run);
    }
    let gbs: Vec<f64> = runs.iter().map(|r| r.gb_per_s).collect();
    let secs: Vec<f64> = runs.iter().map(|r| r.catchup_s).collect();
    let gb_med = median(&gbs);
    let target = (a.state_mib == 256).then_some(1.0);
    let report = CatchupReport {
        version: 1,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine,
        nodes: 3,
        fsync: a.sync.fsync.to_string(),
        state_mib: a.state_mib,
        value_bytes: a.value_bytes,
        baseline_memcpy_gb_per_s: memcpy,
        baseline_write_fdatasync_gb_per_s: raw_gb,
        baseline_write_fdatasync_ms: raw_ms,
        catchup_s_median: median(&secs),
        gb_per_s_median: gb_med,
        gb_per_s_min: gbs.iter().copied().fold(f64::INFINITY, f64::min),
        gb_per_s_max: gbs.iter().copied().fold(0.0, f64::max),
        ratio_gb_per_s_to_write_fdatasync: gb_med / raw_gb.max(1e-9),
        ratio_gb_per_s_to_memcpy: gb_med / memcpy.max(1e-9),
        target_gb_per_s: target,
        target_met: target.map(|t| gb_med >= t),
        runs,
    };
    print!("{}", table(&report));
    if let Some(p) = &a.output.json {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
        println!("wrote {}", p.display());
    }
    Ok(report)
}

/// A raw sequential write of `bytes` in 1 MiB pieces to a new file in `dir`, then one
/// fdatasync: (milliseconds, GB/s). The file is removed afterwards.
pub fn write_fdatasync_baseline(dir: &Path, bytes: u64) -> anyhow::Result<(f64, f64)> {
    let mut f = tempfile::Builder::new()
        .prefix("shmraft-catchup-baseline-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a baseline file in {}", dir.display()))?;
    let piece = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(piece.len() as u64) as usize;
        f.write_all(&piece[..n])
            .context("writing the baseline file")?;
        left -= n as u64;
    }
    f.as_file()
        .sync_data()
        .context("fdatasync of the baseline file")?;
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    Ok((secs * 1e3, bytes as f64 / secs / 1e9))
}

fn status(c: &mut Client, id: u64, timeout: Duration) -> Option<NodeStatus> {
    c.status(NodeId(id), timeout).ok()
}

/// Writes `writes` distinct keys of `value_bytes` through the leader, `window` in flight.
fn write_state(
    cluster: &BenchCluster,
    writes: u64,
    value_bytes: u64,
    window: u64,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let mut p = PipelinedClient::new(cluster.client_config())?;
    let session = p.open_session();
    let mut done = Vec::<Completion>::new();
    let (mut submitted, mut completed) = (0u64, 0u64);
    let mut value = vec![0u8; value_bytes as usize];
    while completed < writes {
        while submitted < writes && submitted - completed < window {
            // Distinct keys and values: nothing in the state compresses or repeats.
            let key = format!("catchup-{submitted:012}");
            for (k, b) in value.iter_mut().enumerate() {
                *b = (submitted as usize).wrapping_mul(31).wrapping_add(k) as u8;
            }
            let cmd = KvCommand::Put {
                key: key.into_bytes(),
                value: value.clone(),
            }
            .encode()?;
            p.submit_write(session, &cmd, submitted, Duration::from_secs(30))?;
            submitted += 1;
        }
        p.poll(Duration::from_millis(10), &mut done);
        for c in done.drain(..) {
            if let Err(e) = c.outcome {
                bail!("write {} failed: {e}", c.tag);
            }
            completed += 1;
        }
        bar.set_position(completed);
    }
    Ok(())
}

fn one_run(a: &CatchupArgs, parent: &Path, run: u64, writes: u64) -> anyhow::Result<CatchupRun> {
    // A restarted node prepares (zero-fills) a fresh segment before it answers anything;
    // 16 MiB segments keep that start-up cost small against the transfer.
    let spec = three_node_args(
        a.sync.fsync,
        a.timing.election_timeout_ms,
        &[
            "--snapshot-entries".into(),
            writes.to_string(),
            "--segment-bytes".into(),
            (16u64 << 20).to_string(),
        ],
    )?;
    let keep = a.work.keep.then(|| format!("catchup-run-{run}"));
    let mut cluster = BenchCluster::start_with(&spec, parent, keep.as_deref(), |cf| {
        // One snapshot, by entry count, once the writes are applied; a short log behind it.
        cf.snapshot_bytes = 0;
        cf.compaction_retain_entries = 16;
    })?;
    let mut c = Client::new(cluster.client_config())?;
    let leader = cluster.wait_for_leader(Duration::from_secs(30))?;
    let follower = cluster
        .ids()
        .into_iter()
        .find(|&i| i != leader)
        .context("the cluster has no follower")?;
    // Step 1.
    cluster.kill(follower);
    // Step 2.
    let bar = crate::progress_bar(writes, &format!("run {run}: writing"));
    let w0 = Instant::now();
    write_state(&cluster, writes, a.value_bytes, a.window, &bar)?;
    let write_s = w0.elapsed().as_secs_f64();
    bar.finish_and_clear();
    // Step 3: the leader's snapshot covers (nearly) every write and is durable. The snapshot
    // triggers when `writes` entries were applied since index 0, so it covers all writes but
    // the few applied in the same batch as the trigger. Leadership may have moved during the
    // writes (a loaded machine): whoever leads now is the one that will send the snapshot.
    let running: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|&i| i != follower)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    let ls = loop {
        let leader_now = running
            .iter()
            .filter_map(|&id| status(&mut c, id, Duration::from_millis(500)))
            .filter(|s| s.role == "leader")
            .max_by_key(|s| s.term);
        match leader_now {
            Some(s) if s.snapshot_index >= writes => break s,
            last if Instant::now() >= deadline => bail!(
                "no leader with a snapshot covering the {writes} writes within 300 s; last                  leader status: {last:?}; node logs are in {}",
                cluster.dir.join("logs").display()
            ),
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let leader = ls.id;
    let leader_commit = ls.commit_index;
    let snap_path = latest_snapshot_file(&cluster.cf.node(leader)?.data_dir)?;
    let snapshot_file_bytes = std::fs::metadata(&snap_path)
        .with_context(|| format!("reading the size of {}", snap_path.display()))?
        .len();
    // Step 4.
    let mut poll = Client::new(cluster.client_config())?;
    let t0_wall = std::time::SystemTime::now();
    let t0 = Instant::now();
    cluster.start_node(follower)?;
    let mut first_answer: Option<Instant> = None;
    let mut snapshot_done: Option<Instant> = None;
    let deadline = t0 + Duration::from_secs(600);
    let final_status = loop {
        if let Some(s) = status(&mut poll, follower, Duration::from_millis(20)) {
            let now = Instant::now();
            first_answer.get_or_insert(now);
            if s.snapshots_installed > 0 && s.applied_index >= s.snapshot_index {
                snapshot_done.get_or_insert(now);
            }
            if s.applied_index >= leader_commit {
                break s;
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "node {follower} did not catch up within 600 s; node logs are in {}",
                cluster.dir.join("logs").display()
            );
        }
        // Every 2 ms: each status request costs the follower's loop a status (JSON, a stat per
        // log segment), so polling faster slows down what it measures; 2 ms of resolution is
        // 0.2 % of a 1 s catch-up.
        std::thread::sleep(Duration::from_millis(2));
    };
    let done_at = Instant::now();
    if final_status.snapshots_installed == 0 {
        bail!(
            "node {follower} caught up without installing a snapshot: the leader kept the log it \
             needed (snapshot at {}, compaction retains entries)",
            ls.snapshot_index
        );
    }
    // The follower's own timings of the transfer and the install.
    let install = final_status
        .last_snapshot_install
        .clone()
        .with_context(|| {
            format!("node {follower} reports an installed snapshot but no install timings")
        })?;
    let t0_unix_us = t0_wall
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let transfer_start_ms = (install.first_chunk_unix_us as f64 - t0_unix_us as f64) / 1e3;
    let transfer_ms = install.receive_us as f64 / 1e3;
    let install_ms = install.install_us as f64 / 1e3;
    let installed_ms = transfer_start_ms + transfer_ms + install_ms;
    // The cluster is idle now (no writer, the follower caught up): measure the restore alone.
    let offline = offline_restore_ms(&snap_path)?;
    drop(cluster);
    let catchup_s = (done_at - t0).as_secs_f64();
    let first_answer = first_answer.unwrap_or(done_at);
    let snapshot_done = snapshot_done.unwrap_or(done_at);
    let snapshot_ms = (snapshot_done - first_answer).as_secs_f64() * 1e3;
    Ok(CatchupRun {
        run,
        follower,
        leader,
        writes,
        write_s,
        write_mb_per_s: (writes * a.value_bytes) as f64 / write_s.max(1e-9) / 1e6,
        snapshot_index: ls.snapshot_index,
        snapshot_file_bytes,
        leader_commit_at_t0: leader_commit,
        catchup_s,
        gb_per_s: snapshot_file_bytes as f64 / catchup_s.max(1e-9) / 1e9,
        startup_ms: (first_answer - t0).as_secs_f64() * 1e3,
        snapshot_ms,
        tail_ms: (done_at - snapshot_done).as_secs_f64() * 1e3,
        transfer_start_ms,
        transfer_ms,
        install_ms,
        restore_ms: (snapshot_done - t0).as_secs_f64() * 1e3 - installed_ms,
        offline_restore_ms: offline,
        snapshots_installed: final_status.snapshots_installed,
    })
}

/// The newest complete snapshot file (`snap-*.snap`) in a node's data directory.
fn latest_snapshot_file(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let mut best: Option<(u64, PathBuf)> = None;
    for e in
        std::fs::read_dir(data_dir).with_context(|| format!("listing {}", data_dir.display()))?
    {
        let p = e?.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some((index, _)) = shmraft_storage::format::parse_snapshot_file_name(name) {
            if best.as_ref().is_none_or(|(i, _)| index.0 > *i) {
                best = Some((index.0, p.clone()));
            }
        }
    }
    best.map(|(_, p)| p)
        .with_context(|| format!("no snapshot file in {}", data_dir.display()))
}

/// Reads and verifies a snapshot file and restores a key-value machine (inside exactly-once
/// sessions, as a node does) from its data; returns milliseconds.
pub fn offline_restore_ms(path: &Path) -> anyhow::Result<f64> {
    let t = Instant::now();
    let meta = shmraft_storage::read_snapshot_meta(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let start = (shmraft_storage::format::SNAPSHOT_HEADER_BYTES as usize) + meta.membership.len();
    let data = bytes
        .get(start..start + meta.data_bytes as usize)
        .context("the snapshot file is shorter than its metadata says")?;
    let mut sm = shmraft_consensus::session::Sessions::new(
        KvStateMachine::new(),
        shmraft_consensus::session::SessionConfig::default(),
    );
    sm.restore(&mut &data[..])
        .with_context(|| format!("restoring from {}", path.display()))?;
    std::hint::black_box(&sm);
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

fn table(r: &CatchupReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{:>4} {:>9} {:>9} {:>6} | {:>9} {:>9} {:>9} {:>9} {:>8} | {:>9}",
        "run",
        "snap MiB",
        "catch-up",
        "GB/s",
        "to 1st ms",
        "xfer ms",
        "inst. ms",
        "restr. ms",
        "tail ms",
        "offl. rst"
    );
    for x in &r.runs {
        let _ = writeln!(
            s,
            "{:>4} {:>9.1} {:>8.3}s {:>6.2} | {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>8.1} | {:>9.1}",
            x.run,
            x.snapshot_file_bytes as f64 / (1 << 20) as f64,
            x.catchup_s,
            x.gb_per_s,
            x.transfer_start_ms,
            x.transfer_ms,
            x.install_ms,
            x.restore_ms,
            x.tail_ms,
            x.offline_restore_ms
        );
    }
    let _ = writeln!(
        s,
        "(to 1st: restart until the first chunk was written; xfer: first to last chunk; inst.: \
         sync, rename, log discard; restr.: read back, check, restore; offl. rst: the same \
         restore done offline after the run)"
    );
    let _ = writeln!(
        s,
        "\nmedian {:.3} s, {:.2} GB/s = {:.2}x raw write+fdatasync ({:.2} GB/s), {:.3}x memcpy ({:.2} GB/s)",
        r.catchup_s_median,
        r.gb_per_s_median,
        r.ratio_gb_per_s_to_write_fdatasync,
        r.baseline_write_fdatasync_gb_per_s,
        r.ratio_gb_per_s_to_memcpy,
        r.baseline_memcpy_gb_per_s
    );
    if let (Some(t), Some(met)) = (r.target_gb_per_s, r.target_met) {
        let _ = writeln!(
            s,
            "target: >= {t:.1} GB/s for a 256 MiB state: {}",
            if met { "met" } else { "MISSED" }
        );
    }
    s
}
