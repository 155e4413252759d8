//! `shmraft demo` (interim, until the cluster demo lands): what the storage layer promises,
//! shown in under 30 s.
//!
//! 1. WAL benchmark under `never` (256 B entries) and `always` (4 KiB entries), with the raw
//!    fdatasync and memcpy baselines of the same run.
//! 2. A simulated power cut (`shmraft_storage::power_cut`) of a log whose last entries were
//!    acknowledged but not synced (`never`) and of one under `always`; reopening shows what
//!    survived versus what was durable.
//! 3. `raft-dump --verify` on the recovered log, and a few entries printed with the KV printer.
//! 4. One flipped bit, and `raft-dump --verify` naming its file, record offset and index.
//!
//! Everything happens in a temporary directory (or under `--dir D`) that is removed at the end
//! unless `--keep` is given.

use crate::args::WorkDirArgs;
use crate::bench::wal::{self as wal_bench, BenchParams};
use crate::dump::payload::{KvPrinter, PayloadMode};
use crate::dump::raft_dump::{self, RaftDumpArgs, Target};
use anyhow::{Context, Result, bail};
use clap::Args;
use shmraft_consensus::kv::KvCommand;
use shmraft_consensus::session::ClientRequest;
use shmraft_storage::inspect::{self, Severity};
use shmraft_storage::{EntryKind, FsyncPolicy, LogIndex, LogTerm, Storage, StorageOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Run the interim storage demo.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    // With --keep, the demo prints where its logs are.
    #[command(flatten)]
    pub work: WorkDirArgs,
    /// Smaller benchmark runs (for tests and slow disks).
    #[arg(long)]
    pub quick: bool,
}

/// Seed of the simulated power cut (chosen so that it drops some unsynced sectors and keeps
/// others: see `power_cut`'s "random" mode).
const POWER_CUT_SEED: u64 = 1;
/// Entries appended in the power-cut part, and how many of them are synced.
const CRASH_ENTRIES: u64 = 3000;
const CRASH_SYNCED: u64 = 1800;
/// Entries appended under `always` in the power-cut part (each costs one real sync).
const CRASH_ENTRIES_ALWAYS: u64 = 300;

fn header(title: &str) {
    println!();
    println!("=== {title} ===");
}

/// `shmraft demo`.
pub fn run(a: &DemoArgs) -> ExitCode {
    let (base, _tmp) = match &a.work.dir {
        Some(d) => {
            let p = d.join(format!("shmraft-demo-{}", std::process::id()));
            (p, None)
        }
        None => match tempfile::Builder::new().prefix("shmraft-demo-").tempdir() {
            Ok(t) => (t.path().to_path_buf(), Some(t)),
            Err(e) => {
                eprintln!("shmraft demo: creating a temporary directory: {e}");
                return ExitCode::from(1);
            }
        },
    };
    let r = demo(&base, a.quick);
    let _ = std::io::stdout().flush();
    if a.work.keep {
        println!("\nkept the demo's logs in {}", base.display());
        if let Some(t) = _tmp {
            let _ = t.keep();
        }
    } else {
        let _ = std::fs::remove_dir_all(&base);
    }
    match r {
        Ok(()) => {
            println!("\ndemo finished: everything durable survived and the flipped bit was found.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shmraft demo: FAILED: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn kv_payload(i: u64) -> Vec<u8> {
    let command = KvCommand::Put {
        key: format!("key-{:03}", i % 500).into_bytes(),
        value: format!("value-{i:08}-{}", "x".repeat(80)).into_bytes(),
    }
    .encode()
    .unwrap_or_default();
    ClientRequest {
        client_id: 42,
        seq: i,
        first_unacked_seq: i,
        log_time_ms: i,
        command,
    }
    .encode()
    .unwrap_or_default()
}

fn open(dir: &Path, policy: FsyncPolicy) -> Result<Storage> {
    let mut opts = StorageOptions::default();
    opts.wal.fsync_policy = policy;
    // Small segments so the demo's log has sealed segments and an open one.
    opts.wal.segment_bytes = 256 << 10;
    Storage::open(dir, opts).with_context(|| format!("opening {}", dir.display()))
}

/// Appends `n` KV entries after the last one; returns the last index.
fn append_kv(st: &mut Storage, n: u64) -> Result<LogIndex> {
    let mut last = st.wal.last_index();
    for _ in 0..n {
        let i = last.next();
        last = st
            .wal
            .append_one(i, LogTerm(2), EntryKind(0), &kv_payload(i.0))?;
    }
    Ok(last)
}

/// Appends, crashes without closing, tears the files as a power cut would, reopens.
/// Returns (acknowledged, durable, survived).
fn crash_case(dir: &Path, policy: FsyncPolicy, sync_at: Option<u64>) -> Result<(u64, u64, u64)> {
    let mut st = open(dir, policy)?;
    match sync_at {
        Some(k) => {
            append_kv(&mut st, k)?;
            st.wal.sync()?;
            append_kv(&mut st, CRASH_ENTRIES - k)?;
        }
        None => {
            append_kv(&mut st, CRASH_ENTRIES_ALWAYS)?;
        }
    }
    let acked = st.wal.ack_index().0;
    let durable = st.wal.durable_index().0;
    drop(st); // the process "dies": no close, no final sync
    let rep = shmraft_storage::power_cut(dir, POWER_CUT_SEED)?;
    let (kept, lost) = rep
        .segments
        .iter()
        .fold((0, 0), |(k, l), s| (k + s.sectors_kept, l + s.sectors_lost));
    println!(
        "  power cut (seed {}, mode {}): {} unsynced sectors kept, {} lost (zeroed)",
        rep.seed, rep.mode, kept, lost
    );
    let st = open(dir, policy)?;
    let survived = st.wal.last_index().0;
    st.close()?;
    Ok((acked, durable, survived))
}

fn dump_args(path: &Path) -> RaftDumpArgs {
    RaftDumpArgs {
        path: path.to_path_buf(),
        entries: false,
        from: None,
        to: None,
        verify: false,
        stats: false,
        json: false,
        payload: PayloadMode::None,
    }
}

fn demo(base: &Path, quick: bool) -> Result<()> {
    std::fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
    println!(
        "shmraft interim demo: the write-ahead log (working in {})",
        base.display()
    );
    let (never_n, always_n) = if quick { (20_000, 50) } else { (300_000, 500) };

    header("1a. WAL benchmark, fsync never: 256-byte entries, one per append call");
    let r = wal_bench::run_bench(&BenchParams {
        dir: base.join("bench-never"),
        entries: never_n,
        size: 256,
        policy: FsyncPolicy::Never,
        segment_bytes: 64 << 20,
        zero_fill: None,
        baseline_syncs: 100,
        baselines: true,
        progress: true,
    })?;
    print!("{}", wal_bench::report_text(&r));

    header("1b. WAL benchmark, fsync always: 4 KiB entries, each durable before append returns");
    let r = wal_bench::run_bench(&BenchParams {
        dir: base.join("bench-always"),
        entries: always_n,
        size: 4096,
        policy: FsyncPolicy::Always,
        segment_bytes: 64 << 20,
        zero_fill: None,
        baseline_syncs: always_n.min(300),
        baselines: true,
        progress: true,
    })?;
    print!("{}", wal_bench::report_text(&r));

    header("2. Simulated power cut: only what a completed sync covers must survive");
    let crash = base.join("node-never");
    println!(
        "  fsync never: {CRASH_ENTRIES} KV entries appended (acknowledged at once), sync after {CRASH_SYNCED}"
    );
    let (acked, durable, survived) = crash_case(&crash, FsyncPolicy::Never, Some(CRASH_SYNCED))?;
    println!(
        "  acknowledged up to {acked}, durable up to {durable}; after the power cut the log ends at {survived}"
    );
    if survived < durable {
        bail!("durability violated: durable up to {durable} but only {survived} survived");
    }
    println!(
        "  => every durable entry survived; {} acknowledged-not-durable entries were lost (what `never` may lose)",
        acked - survived
    );
    let always_dir = base.join("node-always");
    println!(
        "  fsync always: {CRASH_ENTRIES_ALWAYS} KV entries, each synced before append returns"
    );
    let (a_acked, a_durable, a_survived) = crash_case(&always_dir, FsyncPolicy::Always, None)?;
    println!(
        "  acknowledged up to {a_acked}, durable up to {a_durable}; after the power cut the log ends at {a_survived}"
    );
    if a_survived < a_acked {
        bail!("durability violated under always: acknowledged {a_acked}, survived {a_survived}");
    }
    println!("  => nothing acknowledged was lost");

    header("3. raft-dump on the recovered log (fsync never case)");
    let stdout = std::io::stdout();
    {
        let mut out = stdout.lock();
        raft_dump::run_with_printer(
            &dump_args(&crash),
            &crate::dump::payload::NonePrinter,
            &mut out,
        )?;
        let from = survived.saturating_sub(2).max(1);
        println!(
            "\n$ raft-dump {} --entries --from {from} --to {survived} --payload kv",
            crash.display()
        );
        let mut a = dump_args(&crash);
        a.entries = true;
        a.from = Some(from);
        a.to = Some(survived);
        raft_dump::run_with_printer(&a, &KvPrinter, &mut out)?;
        println!("\n$ raft-dump {} --verify", crash.display());
        let rep = raft_dump::verify_path(&crash, Target::Dir)?;
        raft_dump::write_verify_text(&mut out, &crash, &rep)?;
        if rep.corruption_count() != 0 {
            bail!("the recovered log does not verify clean");
        }
    }

    header("4. Flip one bit and let raft-dump --verify find it");
    let target = LogIndex(durable / 2);
    let (file, rec_offset) = find_record(&crash, target)?;
    // A bit in the payload, 7 bytes in: the record header stays plausible, only the checksum
    // can tell.
    let flip_at = rec_offset + shmraft_storage::format::RECORD_HEADER_BYTES + 7;
    flip_bit(&file, flip_at, 3)?;
    println!(
        "  flipped bit 3 of byte {flip_at} in {} (inside the record of index {target}, which starts at byte {rec_offset})",
        file.display()
    );
    println!("\n$ raft-dump {} --verify", crash.display());
    let rep = raft_dump::verify_path(&crash, Target::Dir)?;
    raft_dump::write_verify_text(&mut stdout.lock(), &crash, &rep)?;
    let exact = rep.problems.iter().any(|p| {
        p.severity == Severity::Corruption
            && p.file == file
            && p.offset == Some(rec_offset)
            && p.index == Some(target)
    });
    if !exact {
        bail!(
            "verify did not report the flipped bit at {} byte {rec_offset} index {target}",
            file.display()
        );
    }
    println!(
        "  => reported exactly: file {}, record offset {rec_offset}, index {target} (exit status would be 1)",
        file.display()
    );
    Ok(())
}

/// The segment file and byte offset of the record with `index`.
fn find_record(dir: &Path, index: LogIndex) -> Result<(PathBuf, u64)> {
    let d = inspect::inspect_dir(dir)?;
    for s in &d.segments {
        let in_range =
            matches!((s.first, s.last), (Some((f, _)), Some((l, _))) if f <= index && index <= l);
        if in_range {
            if let Some(r) = inspect::records(&s.path)?.iter().find(|r| r.index == index) {
                return Ok((s.path.clone(), r.offset));
            }
        }
    }
    bail!("no record with index {index} in {}", dir.display())
}

/// Flips bit `bit` of the byte at `offset` of `path`.
pub fn flip_bit(path: &Path, offset: u64, bit: u8) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset)?;
    b[0] ^= 1 << (bit & 7);
    f.write_all_at(&b, offset)?;
    f.sync_all()?;
    Ok(())
}
