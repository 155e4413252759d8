//! `shmraft wal bench` and `shmraft wal open-bench`: write-ahead log benchmarks with same-run
//! baselines.
//!
//! # What `wal bench` does under each policy
//! One appender thread appends `--entries` entries of `--size` payload bytes, **one entry per
//! append call**, into the log in `--dir` (continuing after its last index if a log is there;
//! the log is left in place for `raft-dump`). For each entry it measures a latency:
//!
//! | policy | the appender, per entry | latency measured |
//! |---|---|---|
//! | `always` | `append` returns after the msync covering the entry | durable: call to return |
//! | `batch[:<delay_us>:<bytes>]` | appends, then waits until the group-commit thread's sync covers the entry (1 appender: a durable-latency test, each sync covers one entry) | durable: call until `durable_index` covers it |
//! | `interval:<ms>` | appends and goes on (a background thread syncs every `ms`) | acknowledged, not durable: call to return |
//! | `never` | appends and goes on (only the OS writes back) | acknowledged, not durable: call to return |
//!
//! "Syncs" counts completed syncs that advanced the durable index (reported by the log's sync
//! listener). In the same run it measures two raw baselines in `--dir`: a `pwrite` of
//! `--size` bytes + `fdatasync` loop on a preallocated, zero-filled file (the floor of one
//! durable append), and memcpy of `--size`-byte chunks into a pre-faulted anonymous mapping
//! (the ceiling of appending into a mapping), and prints the ratios. Under `always` and
//! `batch` the fdatasync baseline is interleaved with the appends (blocks of up to 64
//! appends, then the baseline syncs due by then, `--baseline-syncs` spread over the run), so a
//! shared disk's changing load affects both alike; only the append blocks count towards
//! entries/s. Under `interval` and `never` it runs after the appends.
//!
//! `wal open-bench` opens (recovers) the existing log in `--dir` several times with a warm page
//! cache and reports the time `Storage::open` takes.

use crate::args::{FsyncArg, JsonFlag};
use anyhow::{Context, Result, bail};
use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use shmraft_storage::{
    EntryKind, FsyncPolicy, LogIndex, LogTerm, Storage, StorageOptions, SyncEvent,
};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Append benchmark of the write-ahead log.
#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Policies: always (sync before append returns), batch[:<delay_us>:<bytes>] \
    (group commit; the appender waits for each entry to be durable), interval:<ms> and never \
    (latency is acknowledged-not-durable). The log is left in --dir for raft-dump."
)]
pub struct BenchArgs {
    /// Directory of the log (created if missing; an existing log is appended to).
    #[arg(long)]
    pub dir: PathBuf,
    /// Number of entries to append (one per append call).
    #[arg(long, default_value_t = 100_000)]
    pub entries: u64,
    /// Payload bytes per entry.
    #[arg(long, default_value_t = 256)]
    pub size: u64,
    #[command(flatten)]
    pub sync: FsyncArg,
    /// Segment file size, MiB.
    #[arg(long = "segment-mib", default_value_t = 64)]
    pub segment_mib: u64,
    /// Zero-fill new segments when preparing them (`true`) or only fallocate them (`false`).
    /// Default: the storage default for the policy (on under always/batch, off under
    /// interval/never).
    #[arg(long = "zero-fill", value_name = "BOOL")]
    pub zero_fill: Option<bool>,
    /// Iterations of the fdatasync baseline: spread over the run under always/batch, after
    /// it (stopping after 3 s) under interval/never.
    #[arg(long = "baseline-syncs", default_value_t = 1000)]
    pub baseline_syncs: u64,
    /// Skip the baselines.
    #[arg(long)]
    pub no_baselines: bool,
    #[command(flatten)]
    pub output: JsonFlag,
}

/// Recovery (open) benchmark of an existing log.
#[derive(Args, Debug, Clone)]
pub struct OpenBenchArgs {
    /// Directory holding the log (e.g. made by `shmraft wal bench`).
    #[arg(long)]
    pub dir: PathBuf,
    /// Timed opens (after one warm-up open).
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
    #[command(flatten)]
    pub output: JsonFlag,
}

/// What one `wal bench` run measured. Field names carry their units.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub dir: String,
    pub policy: String,
    pub entries: u64,
    pub entry_bytes: u64,
    pub segment_bytes: u64,
    pub zero_fill_segments: bool,
    pub first_index: u64,
    pub last_index: u64,
    /// "durable" (always, batch) or "acknowledged-not-durable" (interval, never).
    pub latency_kind: &'static str,
    pub elapsed_s: f64,
    pub entries_per_s: f64,
    /// Payload megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// Completed syncs that advanced the durable index during the run.
    pub syncs: u64,
    /// `entries / syncs` (null when nothing was synced).
    pub entries_per_sync: Option<f64>,
    pub latency_us_mean: f64,
    pub latency_us_p50: f64,
    pub latency_us_p90: f64,
    pub latency_us_p99: f64,
    pub latency_us_p999: f64,
    pub latency_us_max: f64,
    /// Durable index when the appender finished (before close).
    pub durable_index_at_end: u64,
    /// Raw `pwrite(entry_bytes) + fdatasync` on a preallocated file in `dir`.
    pub baseline_fdatasync_us_p50: Option<f64>,
    pub baseline_fdatasync_us_p99: Option<f64>,
    pub baseline_fdatasync_iterations: Option<u64>,
    /// Raw memcpy of `entry_bytes` chunks into a pre-faulted anonymous mapping.
    pub baseline_memcpy_gb_per_s: Option<f64>,
    /// `latency_us_p50 / baseline_fdatasync_us_p50` (meaningful for durable latency).
    pub ratio_latency_p50_to_fdatasync_p50: Option<f64>,
    /// `entries_per_s / (1e6 / baseline_fdatasync_us_p50)`: durable appends per raw sync.
    pub ratio_entries_per_s_to_fdatasync_per_s: Option<f64>,
    /// `mb_per_s / (baseline_memcpy_gb_per_s * 1000)`.
    pub ratio_mb_per_s_to_memcpy: Option<f64>,
}

/// Parameters of [`run_bench`] (the CLI's and the demo's).
#[derive(Debug, Clone)]
pub struct BenchParams {
    pub dir: PathBuf,
    pub entries: u64,
    pub size: u64,
    pub policy: FsyncPolicy,
    pub segment_bytes: u64,
    /// `None`: the storage default for the policy.
    pub zero_fill: Option<bool>,
    pub baseline_syncs: u64,
    pub baselines: bool,
    pub progress: bool,
}

impl BenchParams {
    fn from_args(a: &BenchArgs) -> Self {
        BenchParams {
            dir: a.dir.clone(),
            entries: a.entries,
            size: a.size,
            policy: a.sync.fsync,
            segment_bytes: a.segment_mib.saturating_mul(1 << 20),
            zero_fill: a.zero_fill,
            baseline_syncs: a.baseline_syncs,
            baselines: !a.no_baselines,
            progress: true,
        }
    }
}

fn progress_bar(len: u64, enabled: bool, what: &str) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(s) = ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
    ) {
        pb.set_style(s);
    }
    pb.set_message(what.to_string());
    pb
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// Runs the append benchmark and the baselines.
pub fn run_bench(p: &BenchParams) -> Result<BenchReport> {
    if p.entries == 0 {
        bail!("--entries must be at least 1");
    }
    let mut opts = StorageOptions::default();
    opts.wal.fsync_policy = p.policy;
    opts.wal.segment_bytes = p.segment_bytes;
    opts.wal.zero_fill_segments = p.zero_fill;
    let zero_fill = opts.wal.zero_fill();
    let mut st = Storage::open(&p.dir, opts)
        .with_context(|| format!("opening the log in {}", p.dir.display()))?;
    if p.size > st.wal.entry_bytes_max() {
        bail!(
            "--size {} is above the largest entry this log accepts ({} bytes with {} MiB segments)",
            p.size,
            st.wal.entry_bytes_max(),
            p.segment_bytes >> 20
        );
    }
    let payload: Vec<u8> = {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        (0..p.size).map(|_| rng.random()).collect()
    };
    let term = LogTerm(st.wal.last_term().0.max(1));
    let first = st.wal.last_index().next();

    // The sync listener counts syncs that advanced the durable index and wakes a waiting
    // appender (batch).
    let durable = Arc::new((Mutex::new(st.wal.durable_index().0), Condvar::new()));
    let syncs = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    {
        let (durable, syncs, failed) = (durable.clone(), syncs.clone(), failed.clone());
        st.wal.set_sync_listener(move |ev| {
            let (m, cv) = &*durable;
            let mut d = m.lock().unwrap_or_else(|e| e.into_inner());
            match ev {
                SyncEvent::Durable(i) => {
                    if i.0 > *d {
                        *d = i.0;
                        syncs.fetch_add(1, Ordering::Relaxed);
                    }
                }
                SyncEvent::Failed(_) => failed.store(true, Ordering::Release),
            }
            cv.notify_all();
        });
    }
    let wait_durable = matches!(p.policy, FsyncPolicy::Batch { .. });
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)
        .context("creating the latency histogram")?;
    let pb = progress_bar(p.entries, p.progress, &format!("append {}", p.policy));
    // Under the durable policies the raw fdatasync baseline runs interleaved with the appends
    // (a block of baseline syncs after every block of appends), so both see the same disk and
    // the same load from other processes; its time is not counted in the append throughput.
    let mut interleaved = if p.baselines && p.policy.acknowledges_after_sync() {
        Some(FdatasyncLoop::new(&p.dir, p.size)?)
    } else {
        None
    };
    let block = (p.entries / p.baseline_syncs.max(1)).clamp(1, 64);
    let pb_every = block.max(256);
    let mut elapsed = Duration::ZERO;
    let mut index = first;
    let mut done = 0u64;
    while done < p.entries {
        let n = block.min(p.entries - done);
        let start = Instant::now();
        // One clock read per entry: an entry's latency runs from the previous entry's end
        // (which is when this append call starts, give or take a histogram update).
        let mut t0 = start;
        for _ in 0..n {
            st.wal
                .append_one(index, term, EntryKind(0), &payload)
                .with_context(|| format!("appending index {index}"))?;
            if wait_durable {
                let (m, cv) = &*durable;
                let mut d = m.lock().unwrap_or_else(|e| e.into_inner());
                while *d < index.0 {
                    if failed.load(Ordering::Acquire) {
                        bail!("a sync failed: {:?}", st.wal.fatal_error());
                    }
                    d = cv.wait(d).unwrap_or_else(|e| e.into_inner());
                }
            }
            let t1 = Instant::now();
            hist.saturating_record(((t1 - t0).as_nanos() as u64).max(1));
            t0 = t1;
            index = index.next();
        }
        elapsed += t0 - start;
        done += n;
        if let Some(l) = interleaved.as_mut() {
            // Spread the baseline syncs evenly over the run.
            let target = (done as u128 * p.baseline_syncs as u128).div_ceil(p.entries as u128);
            while (l.iterations() as u128) < target {
                l.step()?;
            }
        }
        if done % pb_every < block {
            pb.set_position(done);
        }
    }
    pb.finish_and_clear();
    let durable_at_end = st.wal.durable_index();
    let last = st.wal.last_index();
    let syncs = syncs.load(Ordering::Relaxed);
    st.close().context("closing the log")?;

    let secs = elapsed.as_secs_f64().max(1e-9);
    let entries_per_s = p.entries as f64 / secs;
    let mb_per_s = (p.entries * p.size) as f64 / secs / 1e6;
    let mut r = BenchReport {
        dir: p.dir.display().to_string(),
        policy: p.policy.to_string(),
        entries: p.entries,
        entry_bytes: p.size,
        segment_bytes: p.segment_bytes,
        zero_fill_segments: zero_fill,
        first_index: first.0,
        last_index: last.0,
        latency_kind: if p.policy.acknowledges_after_sync() {
            "durable"
        } else {
            "acknowledged-not-durable"
        },
        elapsed_s: secs,
        entries_per_s,
        mb_per_s,
        syncs,
        entries_per_sync: (syncs > 0).then(|| p.entries as f64 / syncs as f64),
        latency_us_mean: hist.mean() / 1000.0,
        latency_us_p50: us(hist.value_at_quantile(0.50)),
        latency_us_p90: us(hist.value_at_quantile(0.90)),
        latency_us_p99: us(hist.value_at_quantile(0.99)),
        latency_us_p999: us(hist.value_at_quantile(0.999)),
        latency_us_max: us(hist.max()),
        durable_index_at_end: durable_at_end.0,
        baseline_fdatasync_us_p50: None,
        baseline_fdatasync_us_p99: None,
        baseline_fdatasync_iterations: None,
        baseline_memcpy_gb_per_s: None,
        ratio_latency_p50_to_fdatasync_p50: None,
        ratio_entries_per_s_to_fdatasync_per_s: None,
        ratio_mb_per_s_to_memcpy: None,
    };
    if p.baselines {
        let fd = match interleaved.take() {
            Some(l) => l.result(),
            None => baseline_fdatasync(&p.dir, p.size, p.baseline_syncs)?,
        };
        let mc = baseline_memcpy_gb_per_s(p.size)?;
        r.baseline_fdatasync_us_p50 = Some(fd.p50_us);
        r.baseline_fdatasync_us_p99 = Some(fd.p99_us);
        r.baseline_fdatasync_iterations = Some(fd.iterations);
        r.baseline_memcpy_gb_per_s = Some(mc);
        if fd.p50_us > 0.0 {
            r.ratio_latency_p50_to_fdatasync_p50 = Some(r.latency_us_p50 / fd.p50_us);
            r.ratio_entries_per_s_to_fdatasync_per_s = Some(entries_per_s / (1e6 / fd.p50_us));
        }
        if mc > 0.0 {
            r.ratio_mb_per_s_to_memcpy = Some(mb_per_s / (mc * 1000.0));
        }
    }
    Ok(r)
}

/// Result of the fdatasync baseline.
#[derive(Debug, Clone, Copy)]
pub struct FdatasyncBaseline {
    pub p50_us: f64,
    pub p99_us: f64,
    pub iterations: u64,
}

/// Bytes of the preallocated baseline file.
const BASELINE_FILE_BYTES: u64 = 64 << 20;

/// The raw durable-write baseline: `pwrite(size bytes) + fdatasync` at consecutive offsets of
/// a preallocated, zero-filled file in the log's directory (like a WAL segment: written
/// extents, so each sync flushes data only). Steps can be interleaved with the measured
/// appends so both see the same disk conditions. The file is removed on drop.
pub struct FdatasyncLoop {
    path: PathBuf,
    file: std::fs::File,
    buf: Vec<u8>,
    step: u64,
    off: u64,
    hist: Histogram<u64>,
}

impl FdatasyncLoop {
    /// Creates and preallocates the baseline file in `dir`.
    pub fn new(dir: &Path, size: u64) -> Result<FdatasyncLoop> {
        use std::os::unix::fs::FileExt;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("baseline-fdatasync.tmp");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let l = FdatasyncLoop {
            path,
            file,
            buf: vec![0x5au8; size as usize],
            step: size.div_ceil(8) * 8 + 32, // like a record: header + aligned payload
            off: 0,
            hist: Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)?,
        };
        let chunk = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < BASELINE_FILE_BYTES {
            l.file
                .write_all_at(&chunk, at)
                .with_context(|| format!("preallocating {}", l.path.display()))?;
            at += chunk.len() as u64;
        }
        l.file
            .sync_all()
            .with_context(|| format!("syncing {}", l.path.display()))?;
        Ok(l)
    }

    /// One timed `pwrite + fdatasync`.
    pub fn step(&mut self) -> Result<()> {
        use std::os::unix::fs::FileExt;
        if self.off + self.step > BASELINE_FILE_BYTES {
            self.off = 0;
        }
        let t0 = Instant::now();
        self.file
            .write_all_at(&self.buf, self.off)
            .and_then(|_| self.file.sync_data())
            .with_context(|| format!("fdatasync baseline on {}", self.path.display()))?;
        self.hist
            .saturating_record((t0.elapsed().as_nanos() as u64).max(1));
        self.off += self.step;
        Ok(())
    }

    /// Steps taken so far.
    pub fn iterations(&self) -> u64 {
        self.hist.len()
    }

    /// The percentiles so far.
    pub fn result(&self) -> FdatasyncBaseline {
        FdatasyncBaseline {
            p50_us: us(self.hist.value_at_quantile(0.5)),
            p99_us: us(self.hist.value_at_quantile(0.99)),
            iterations: self.hist.len(),
        }
    }
}

impl Drop for FdatasyncLoop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Runs the fdatasync baseline alone: `iterations` steps or 3 s, whichever comes first (at
/// least 10 steps).
pub fn baseline_fdatasync(dir: &Path, size: u64, iterations: u64) -> Result<FdatasyncBaseline> {
    let mut l = FdatasyncLoop::new(dir, size)?;
    let deadline = Instant::now() + Duration::from_secs(3);
    while l.iterations() < iterations.max(1) && (l.iterations() < 10 || Instant::now() < deadline) {
        l.step()?;
    }
    Ok(l.result())
}

/// memcpy of `size`-byte chunks into a pre-faulted 64 MiB anonymous mapping, 512 MiB in all;
/// returns GB/s (10^9 bytes per second).
pub fn baseline_memcpy_gb_per_s(size: u64) -> Result<f64> {
    let map_bytes = 64usize << 20;
    let mut map = memmap2::MmapMut::map_anon(map_bytes).context("mapping anonymous memory")?;
    map.fill(1); // fault every page in first: the WAL writes into page-cache pages
    let size = (size as usize).clamp(1, map_bytes);
    let src = vec![0xa5u8; size];
    let total = 512usize << 20;
    let start = Instant::now();
    let mut copied = 0usize;
    let mut off = 0usize;
    while copied < total {
        if off + size > map_bytes {
            off = 0;
        }
        map[off..off + size].copy_from_slice(std::hint::black_box(&src));
        off += size;
        copied += size;
    }
    std::hint::black_box(&map[..]);
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    Ok(copied as f64 / secs / 1e9)
}

fn opt2(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into())
}

/// The human report of a bench run.
pub fn report_text(r: &BenchReport) -> String {
    let mut s = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "wal bench: {} entries of {} bytes, fsync {}, one entry per append call, in {}",
        r.entries, r.entry_bytes, r.policy, r.dir
    );
    let _ = writeln!(
        s,
        "  segments of {} MiB, {}",
        r.segment_bytes >> 20,
        if r.zero_fill_segments {
            "zero-filled when prepared"
        } else {
            "fallocated only (not zero-filled)"
        }
    );
    let _ = writeln!(
        s,
        "  indexes {}..{}, {:.3} s: {:.0} entries/s, {:.1} MB/s",
        r.first_index, r.last_index, r.elapsed_s, r.entries_per_s, r.mb_per_s
    );
    let _ = writeln!(
        s,
        "  syncs: {} ({} entries per sync); durable index at end: {}",
        r.syncs,
        opt2(r.entries_per_sync),
        r.durable_index_at_end
    );
    let _ = writeln!(
        s,
        "  {} latency us: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (mean {:.2})",
        r.latency_kind,
        r.latency_us_p50,
        r.latency_us_p90,
        r.latency_us_p99,
        r.latency_us_p999,
        r.latency_us_max,
        r.latency_us_mean
    );
    if let (Some(p50), Some(p99), Some(n)) = (
        r.baseline_fdatasync_us_p50,
        r.baseline_fdatasync_us_p99,
        r.baseline_fdatasync_iterations,
    ) {
        let _ = writeln!(
            s,
            "  baseline: pwrite({} B) + fdatasync on a preallocated file: p50 {p50:.2} us, p99 {p99:.2} us ({n} iterations)",
            r.entry_bytes
        );
    }
    if let Some(mc) = r.baseline_memcpy_gb_per_s {
        let _ = writeln!(
            s,
            "  baseline: memcpy of {}-byte chunks into a mapping: {mc:.2} GB/s",
            r.entry_bytes
        );
    }
    if r.baseline_fdatasync_us_p50.is_some() {
        let _ = writeln!(
            s,
            "  ratios: latency p50 / fdatasync p50 = {}; entries/s / raw syncs/s = {}; MB/s / memcpy = {}",
            opt2(r.ratio_latency_p50_to_fdatasync_p50),
            opt2(r.ratio_entries_per_s_to_fdatasync_per_s),
            r.ratio_mb_per_s_to_memcpy
                .map(|x| format!("{x:.4}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    s
}

/// `shmraft wal bench`.
pub fn run_bench_cmd(a: &BenchArgs) -> ExitCode {
    if a.size == 0 || a.entries == 0 {
        eprintln!("shmraft wal bench: --entries and --size must be at least 1");
        return ExitCode::from(crate::EXIT_USAGE);
    }
    match run_bench(&BenchParams::from_args(a)) {
        Ok(r) => {
            if a.output.json {
                match serde_json::to_string(&r) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("shmraft wal bench: {e}");
                        return ExitCode::from(1);
                    }
                }
            } else {
                print!("{}", report_text(&r));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shmraft wal bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// What `wal open-bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct OpenReport {
    pub dir: String,
    pub segments: usize,
    pub log_bytes: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub runs: u32,
    pub open_ms_min: f64,
    pub open_ms_median: f64,
    pub open_ms_max: f64,
}

/// Opens the log in `dir` once to warm the page cache (and read every segment file), then
/// `runs` timed opens.
pub fn run_open_bench(dir: &Path, runs: u32) -> Result<OpenReport> {
    let info = shmraft_storage::inspect::inspect_dir(dir)
        .with_context(|| format!("inspecting {}", dir.display()))?;
    if info.segments.is_empty() {
        bail!(
            "{} holds no log segments (make one with `shmraft wal bench --dir ...`)",
            dir.display()
        );
    }
    let segment_bytes = info
        .segments
        .iter()
        .find_map(|s| s.header.as_ref().ok().map(|h| h.segment_bytes))
        .unwrap_or(64 << 20);
    let log_bytes = info.segments.iter().map(|s| s.file_bytes).sum();
    let open = || -> Result<(Duration, LogIndex, LogIndex)> {
        let mut opts = StorageOptions::default();
        opts.wal.fsync_policy = FsyncPolicy::Never;
        opts.wal.segment_bytes = segment_bytes;
        let t0 = Instant::now();
        let st = Storage::open(dir, opts).with_context(|| format!("opening {}", dir.display()))?;
        let t = t0.elapsed();
        let (f, l) = (st.wal.first_index(), st.wal.last_index());
        st.close()?;
        Ok((t, f, l))
    };
    let _ = open()?; // warm-up: page cache, and any one-time recovery work
    let mut times = Vec::new();
    let (mut first, mut last) = (LogIndex(0), LogIndex(0));
    for _ in 0..runs.max(1) {
        let (t, f, l) = open()?;
        times.push(t.as_secs_f64() * 1000.0);
        (first, last) = (f, l);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let segments = shmraft_storage::inspect::inspect_dir(dir)
        .map(|d| d.segments.len())
        .unwrap_or(info.segments.len());
    Ok(OpenReport {
        dir: dir.display().to_string(),
        segments,
        log_bytes,
        first_index: first.0,
        last_index: last.0,
        runs: times.len() as u32,
        open_ms_min: times[0],
        open_ms_median: times[times.len() / 2],
        open_ms_max: times[times.len() - 1],
    })
}

/// `shmraft wal open-bench`.
pub fn run_open_bench_cmd(a: &OpenBenchArgs) -> ExitCode {
    if !a.dir.is_dir() {
        eprintln!(
            "shmraft wal open-bench: {} is not a directory",
            a.dir.display()
        );
        return ExitCode::from(crate::EXIT_USAGE);
    }
    match run_open_bench(&a.dir, a.runs) {
        Ok(r) => {
            if a.output.json {
                match serde_json::to_string(&r) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("shmraft wal open-bench: {e}");
                        return ExitCode::from(1);
                    }
                }
            } else {
                println!(
                    "wal open-bench: {} ({} segments, {} bytes, indexes {}..{}), warm page cache",
                    r.dir, r.segments, r.log_bytes, r.first_index, r.last_index
                );
                println!(
                    "  Storage::open over {} runs: min {:.2} ms, median {:.2} ms, max {:.2} ms",
                    r.runs, r.open_ms_min, r.open_ms_median, r.open_ms_max
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shmraft wal open-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}
