//! `raft-dump PATH`: the log inspector.
//!
//! PATH is a node's data directory, a segment file (`seg-<seq>.wal`), a snapshot file
//! (`snap-*`, also `.partial`/`.broken`) or a `hardstate` file. Modes:
//!
//! | flags | prints |
//! |---|---|
//! | (none) | summary: segments with index ranges, sizes, sealed or open, synced bytes, the durable point, hard state, compaction point, snapshots, lock holder |
//! | `--entries [--from N] [--to M] [--payload hex\|kv\|none]` | one line per record: index, term, kind, payload bytes, checksum status, file offset (and the payload) |
//! | `--stats [--from N] [--to M]` | entry-size histogram, entries and bytes per term, space overhead ("waste") |
//! | `--verify` | every record checksum, footer, padding byte and snapshot; each problem with file, byte offset, index and reason |
//!
//! `--json` prints one JSON document in every mode.
//!
//! Exit status: 0 success (verify: no corruption); 1 corruption found (verify: a problem of
//! severity "corruption"; other modes: the input is not a readable shmraft file, or a file
//! could not be read); 2 usage error (bad flags, PATH missing or of an unknown kind).
//!
//! **API Boundary:** read-only and lock-free (it uses `shmraft_storage::inspect`, which reads
//! with `pread` into bounds-checked buffers), so it is safe on a live node's directory. A torn
//! tail after the durable point is reported but is not corruption (recovery truncates it).

use crate::dump::payload::{PayloadMode, PayloadPrinter};
use clap::Parser;
use serde_json::{Value, json};
use shmraft_storage::format;
use shmraft_storage::inspect::{
    self, DirInfo, FooterStatus, HardStateInfo, Problem, RecordInfo, SegmentInfo, Severity,
};
use shmraft_storage::{LogIndex, SnapshotMeta, read_snapshot_meta};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit status: success / clean.
pub const EXIT_OK: u8 = 0;
/// Exit status: corruption found, or input unreadable as a shmraft file.
pub const EXIT_CORRUPT: u8 = 1;
/// Exit status: usage error.
pub const EXIT_USAGE: u8 = 2;

/// Inspect a shmraft data directory, segment, snapshot or hard-state file (read-only; safe on
/// a live node).
#[derive(Parser, Debug, Clone)]
#[command(
    name = "raft-dump",
    version,
    after_help = "Exit status: 0 success (--verify: no corruption), 1 corruption found or input \
                  not a readable shmraft file, 2 usage error."
)]
pub struct RaftDumpArgs {
    /// A node's data directory, a segment file (seg-<seq>.wal), a snapshot (snap-*) or a
    /// hardstate file.
    pub path: PathBuf,
    /// List every record: index, term, kind, payload bytes, checksum status, offset.
    #[arg(long, conflicts_with_all = ["verify", "stats"])]
    pub entries: bool,
    /// First index listed (with --entries or --stats; implies --entries otherwise).
    #[arg(long, value_name = "N")]
    pub from: Option<u64>,
    /// Last index listed (with --entries or --stats; implies --entries otherwise).
    #[arg(long, value_name = "M")]
    pub to: Option<u64>,
    /// Check every record, footer, padding byte and snapshot; exit 1 on corruption.
    #[arg(long, conflicts_with_all = ["stats", "from", "to"])]
    pub verify: bool,
    /// Entry-size histogram, entries and bytes per term, space overhead.
    #[arg(long)]
    pub stats: bool,
    /// Print one machine-readable JSON document.
    #[arg(long)]
    pub json: bool,
    /// How to print payloads with --entries: hex (first 32 bytes), kv (client-session envelope
    /// around a key-value command, falling back to hex), none.
    #[arg(long, value_enum, default_value_t = PayloadMode::None)]
    pub payload: PayloadMode,
}

/// What PATH is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Dir,
    Segment,
    Snapshot,
    HardState,
}

/// Why raft-dump could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// Bad flags or a PATH that cannot be used (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A file could not be read (exit 1).
    #[error("{0}")]
    Read(String),
    /// Writing the output failed (e.g. a closed pipe).
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

impl DumpError {
    fn exit_code(&self) -> u8 {
        match self {
            DumpError::Usage(_) => EXIT_USAGE,
            DumpError::Read(_) | DumpError::Output(_) => EXIT_CORRUPT,
        }
    }
}

fn read_err(e: impl std::fmt::Display) -> DumpError {
    DumpError::Read(e.to_string())
}

/// Attempts at reading a live directory: a node compacting its log may delete a segment
/// between the directory listing and the read, so a failed read is retried with a fresh
/// listing.
const LIVE_DIR_ATTEMPTS: usize = 3;

fn with_retries<T>(f: impl Fn() -> shmraft_storage::Result<T>) -> Result<T, DumpError> {
    let mut last = None;
    for _ in 0..LIVE_DIR_ATTEMPTS {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(read_err(last.map(|e| e.to_string()).unwrap_or_default()))
}

/// Whether `e` says the file is gone (a live node deleted it after compaction).
fn vanished(e: &shmraft_storage::StorageError) -> bool {
    matches!(e, shmraft_storage::StorageError::Io { source, .. }
        if source.kind() == io::ErrorKind::NotFound)
}

fn inspect_dir(path: &Path) -> Result<DirInfo, DumpError> {
    with_retries(|| inspect::inspect_dir(path))
}

/// Decides what `path` is, from its type and name (with a hint from its magic bytes).
pub fn classify(path: &Path) -> Result<Target, DumpError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| DumpError::Usage(format!("cannot open {}: {e}", path.display())))?;
    if meta.is_dir() {
        return Ok(Target::Dir);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.ends_with(".wal") || format::parse_segment_file_name(&name).is_some() {
        return Ok(Target::Segment);
    }
    if name.starts_with("snap-") {
        return Ok(Target::Snapshot);
    }
    if name == format::HARD_STATE_FILE {
        return Ok(Target::HardState);
    }
    // Not recognised by name: sniff the magic to give a useful hint.
    let mut magic = [0u8; 8];
    let hint = std::fs::File::open(path)
        .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut magic, 0))
        .ok()
        .and_then(|_| match magic {
            m if m == format::SEGMENT_MAGIC => Some("a segment: name it seg-<16 hex>.wal or *.wal"),
            m if m == format::SNAPSHOT_MAGIC => Some("a snapshot: name it snap-*"),
            m if m == format::HARD_STATE_MAGIC => Some("a hard-state file: name it hardstate"),
            _ => None,
        });
    Err(DumpError::Usage(match hint {
        Some(h) => format!(
            "{} looks like {h} (raft-dump recognises files by name)",
            path.display()
        ),
        None => format!(
            "{} is not a data directory, segment (*.wal), snapshot (snap-*) or hardstate file",
            path.display()
        ),
    }))
}

/// Entry point of the `raft-dump` binary.
pub fn raft_dump_main() -> ExitCode {
    let args: RaftDumpArgs = match crate::parse_or_exit(std::env::args_os()) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let printer = args.payload.printer();
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let code = match run_with_printer(&args, printer.as_ref(), &mut out) {
        Ok(code) => code,
        Err(DumpError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => EXIT_OK,
        Err(e) => {
            let _ = out.flush();
            eprintln!("raft-dump: {e}");
            e.exit_code()
        }
    };
    match out.flush() {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            eprintln!("raft-dump: writing output: {e}");
            ExitCode::from(EXIT_CORRUPT)
        }
        _ => ExitCode::from(code),
    }
}

/// Runs raft-dump with `args`, rendering payloads with `printer`, writing to `out`; returns the
/// exit status. Embedders with their own state machine pass their own [`PayloadPrinter`].
pub fn run_with_printer(
    args: &RaftDumpArgs,
    printer: &dyn PayloadPrinter,
    out: &mut dyn Write,
) -> Result<u8, DumpError> {
    if let (Some(f), Some(t)) = (args.from, args.to) {
        if f > t {
            return Err(DumpError::Usage(format!(
                "--from {f} is after --to {t}: nothing to list"
            )));
        }
    }
    let target = classify(&args.path)?;
    let range = IndexRange {
        from: args.from.unwrap_or(0),
        to: args.to.unwrap_or(u64::MAX),
    };
    if args.verify {
        return verify_mode(&args.path, target, args.json, out);
    }
    if args.stats {
        return stats_mode(&args.path, target, range, args.json, out);
    }
    if args.entries || args.from.is_some() || args.to.is_some() {
        return entries_mode(&args.path, target, range, printer, args.json, out);
    }
    summary_mode(&args.path, target, args.json, out)
}

#[derive(Debug, Clone, Copy)]
struct IndexRange {
    from: u64,
    to: u64,
}

impl IndexRange {
    fn contains(&self, i: LogIndex) -> bool {
        self.from <= i.0 && i.0 <= self.to
    }
    /// Whether a segment holding `first..=last` may hold an index in range.
    fn overlaps(&self, s: &SegmentInfo) -> bool {
        match (s.first, s.last) {
            (Some((f, _)), Some((l, _))) => f.0 <= self.to && l.0 >= self.from,
            // Unknown range (bad header, no valid record): scan it, it may hold damaged records.
            _ => true,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Summary.
// ---------------------------------------------------------------------------------------------

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

/// The durable index to the record: the last record that ends at or before its segment's
/// synced offset (per the sync ledger). `inspect_dir`'s own figure only counts fully synced
/// segments, so for a partly synced open segment its records are read here. `None` when the
/// ledger is missing or unreadable.
pub fn durable_index(d: &DirInfo) -> Option<LogIndex> {
    if !matches!(d.ledger, Ok(Some(_))) {
        return None;
    }
    let mut best = d.durable_index;
    for s in &d.segments {
        let Some(synced) = s.synced_bytes else {
            continue;
        };
        let last = if synced >= s.records_end {
            s.last.map(|l| l.0)
        } else {
            inspect::records(&s.path).ok().and_then(|recs| {
                recs.iter()
                    .take_while(|r| r.checksum_ok)
                    .filter(|r| r.offset + format::record_bytes(r.payload_len as u64) <= synced)
                    .map(|r| r.index)
                    .last()
            })
        };
        if last > best {
            best = last;
        }
    }
    best
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn footer_str(f: &FooterStatus) -> String {
    match f {
        FooterStatus::Valid => "valid".into(),
        FooterStatus::Missing => "none".into(),
        FooterStatus::Invalid(w) => format!("invalid: {w}"),
    }
}

fn segment_json(s: &SegmentInfo) -> Value {
    json!({
        "file": s.path.display().to_string(),
        "file_bytes": s.file_bytes,
        "seq": s.header.as_ref().ok().map(|h| h.seq),
        "header_error": s.header.as_ref().err(),
        "sealed": s.sealed,
        "footer": footer_str(&s.footer),
        "first_index": s.first.map(|f| f.0.0),
        "first_term": s.first.map(|f| f.1.0),
        "last_index": s.last.map(|l| l.0.0),
        "last_term": s.last.map(|l| l.1.0),
        "record_count": s.record_count,
        "records_end_bytes": s.records_end,
        "synced_bytes": s.synced_bytes,
    })
}

fn write_segment_line(out: &mut dyn Write, s: &SegmentInfo) -> io::Result<()> {
    let range = match (s.first, s.last) {
        (Some((fi, ft)), Some((li, lt))) => format!("{fi}..{li} (terms {ft}..{lt})"),
        _ => "empty".into(),
    };
    let state = match (&s.header, s.sealed, &s.footer) {
        (Err(e), _, _) => format!("BAD HEADER: {e}"),
        (Ok(_), true, _) => "sealed".into(),
        (Ok(_), false, FooterStatus::Invalid(w)) => format!("open, damaged footer: {w}"),
        (Ok(_), false, _) if s.record_count == 0 => "open, empty (prepared ahead)".into(),
        (Ok(_), false, _) => "open".into(),
    };
    let synced = match s.synced_bytes {
        Some(b) if b >= s.file_bytes => "synced: all".to_string(),
        Some(b) => format!("synced: {b} bytes"),
        None => "synced: unknown".into(),
    };
    writeln!(
        out,
        "  {}  {range}  {} records, {} of {} bytes used, {state}, {synced}",
        file_name(&s.path),
        s.record_count,
        s.records_end,
        s.file_bytes
    )
}

fn hard_state_json(h: &HardStateInfo) -> Value {
    json!({
        "file": h.path.display().to_string(),
        "current_term": h.current.map(|c| c.current_term.0),
        "voted_for": h.current.map(|c| c.voted_for),
        "commit_index": h.current.map(|c| c.commit_index.0),
        "generation": h.generation,
        "slots": h.slots.iter().map(|s| match s {
            Ok(g) => json!({"generation": g}),
            Err(e) => json!({"error": e}),
        }).collect::<Vec<_>>(),
    })
}

fn hard_state_line(h: &HardStateInfo) -> String {
    match &h.current {
        Some(c) => format!(
            "term {}, voted for {}, commit index {} (generation {})",
            c.current_term,
            if c.voted_for == 0 {
                "nobody".to_string()
            } else {
                c.voted_for.to_string()
            },
            c.commit_index,
            h.generation
        ),
        None => "NO VALID SLOT".into(),
    }
}

fn snapshot_json(
    path: &Path,
    meta: &Result<SnapshotMeta, String>,
    partial: bool,
    broken: bool,
) -> Value {
    match meta {
        Ok(m) => json!({
            "file": path.display().to_string(),
            "valid": true,
            "partial": partial,
            "broken": broken,
            "last_index": m.last_index.0,
            "last_term": m.last_term.0,
            "membership_bytes": m.membership.len(),
            "data_bytes": m.data_bytes,
            "file_bytes": m.file_bytes,
            "checksum": format!("{:#010x}", m.checksum),
        }),
        Err(e) => json!({
            "file": path.display().to_string(),
            "valid": false,
            "partial": partial,
            "broken": broken,
            "error": e,
        }),
    }
}

fn snapshot_line(
    path: &Path,
    meta: &Result<SnapshotMeta, String>,
    partial: bool,
    broken: bool,
) -> String {
    let tag = if partial {
        " [partial]"
    } else if broken {
        " [broken, kept aside]"
    } else {
        ""
    };
    match meta {
        Ok(m) => format!(
            "  {}{tag}: last index {} term {}, {} data bytes, {} membership bytes, checksum ok",
            file_name(path),
            m.last_index,
            m.last_term,
            m.data_bytes,
            m.membership.len()
        ),
        Err(e) => format!("  {}{tag}: INVALID: {e}", file_name(path)),
    }
}

fn dir_json(d: &DirInfo) -> Value {
    json!({
        "kind": "dir",
        "dir": d.dir.display().to_string(),
        "lock_pid": d.lock_pid,
        "lock_held": d.lock_held,
        "durable_index": durable_index(d).map(|i| i.0),
        "ledger": match &d.ledger {
            Ok(Some(l)) => json!({
                "hard_state_synced_generation": l.hard_state_synced_generation,
                "segment_synced_bytes": l.segment_synced_bytes.iter()
                    .map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            }),
            Ok(None) => Value::Null,
            Err(e) => json!({"error": e}),
        },
        "hard_state": match &d.hard_state {
            Some(Ok(h)) => hard_state_json(h),
            Some(Err(e)) => json!({"error": e}),
            None => Value::Null,
        },
        "compacted": match &d.compacted {
            Some(Ok((i, t))) => json!({"index": i.0, "term": t.0}),
            Some(Err(e)) => json!({"error": e}),
            None => Value::Null,
        },
        "segments": d.segments.iter().map(segment_json).collect::<Vec<_>>(),
        "snapshots": d.snapshots.iter()
            .map(|s| snapshot_json(&s.path, &s.meta, s.partial, s.broken)).collect::<Vec<_>>(),
        "first_index": d.segments.iter().find_map(|s| s.first.map(|f| f.0.0)),
        "last_index": d.segments.iter().rev().find_map(|s| s.last.map(|l| l.0.0)),
        "log_file_bytes": d.segments.iter().map(|s| s.file_bytes).sum::<u64>(),
    })
}

fn write_dir_summary(out: &mut dyn Write, d: &DirInfo) -> io::Result<()> {
    writeln!(out, "data directory {}", d.dir.display())?;
    let lock = match (d.lock_held, d.lock_pid) {
        (true, Some(p)) => format!("held by pid {p} (a live node: figures may move)"),
        (true, None) => "held (pid unknown)".into(),
        (false, Some(p)) => format!("free (last holder pid {p})"),
        (false, None) => "free".into(),
    };
    writeln!(out, "  lock: {lock}")?;
    let hs = match &d.hard_state {
        Some(Ok(h)) => hard_state_line(h),
        Some(Err(e)) => format!("UNREADABLE: {e}"),
        None => "none".into(),
    };
    writeln!(out, "  hard state: {hs}")?;
    let compacted = match &d.compacted {
        Some(Ok((i, t))) => format!("up to index {i} term {t}"),
        Some(Err(e)) => format!("UNREADABLE log.meta: {e}"),
        None => "never".into(),
    };
    writeln!(out, "  compacted: {compacted}")?;
    let first = d.segments.iter().find_map(|s| s.first.map(|f| f.0));
    let last = d.segments.iter().rev().find_map(|s| s.last.map(|l| l.0));
    let durable = match (&d.ledger, durable_index(d)) {
        (Ok(Some(_)), Some(i)) => format!("{i} (per the sync ledger)"),
        (Ok(Some(_)), None) => "nothing synced yet".into(),
        (Ok(None), _) => "unknown (no sync ledger)".into(),
        (Err(e), _) => format!("unknown (sync ledger unreadable: {e})"),
    };
    writeln!(
        out,
        "  log: indexes {}..{}, durable index {durable}",
        opt(first),
        opt(last)
    )?;
    let bytes: u64 = d.segments.iter().map(|s| s.file_bytes).sum();
    writeln!(out, "  segments: {} ({bytes} bytes)", d.segments.len())?;
    for s in &d.segments {
        write_segment_line(out, s)?;
    }
    writeln!(out, "  snapshots: {}", d.snapshots.len())?;
    for s in &d.snapshots {
        writeln!(
            out,
            "{}",
            snapshot_line(&s.path, &s.meta, s.partial, s.broken)
        )?;
    }
    Ok(())
}

fn snapshot_flags(path: &Path) -> (bool, bool) {
    let n = file_name(path);
    (
        n.ends_with(format::PARTIAL_SUFFIX),
        n.ends_with(format::BROKEN_SUFFIX),
    )
}

fn summary_mode(
    path: &Path,
    target: Target,
    js: bool,
    out: &mut dyn Write,
) -> Result<u8, DumpError> {
    match target {
        Target::Dir => {
            let d = inspect_dir(path)?;
            if js {
                writeln!(out, "{}", dir_json(&d))?;
            } else {
                write_dir_summary(out, &d)?;
            }
            Ok(EXIT_OK)
        }
        Target::Segment => {
            let s = inspect::segment_info(path).map_err(read_err)?;
            if js {
                let mut v = segment_json(&s);
                v["kind"] = json!("segment");
                writeln!(out, "{v}")?;
            } else {
                writeln!(out, "segment {}", path.display())?;
                write_segment_line(out, &s)?;
            }
            Ok(if s.header.is_ok() {
                EXIT_OK
            } else {
                EXIT_CORRUPT
            })
        }
        Target::Snapshot => {
            let m = read_snapshot_meta(path);
            let (p, b) = snapshot_flags(path);
            if js {
                let mut v = snapshot_json(path, &m, p, b);
                v["kind"] = json!("snapshot");
                writeln!(out, "{v}")?;
            } else {
                writeln!(out, "snapshot {}", path.display())?;
                writeln!(out, "{}", snapshot_line(path, &m, p, b))?;
            }
            Ok(if m.is_ok() { EXIT_OK } else { EXIT_CORRUPT })
        }
        Target::HardState => {
            let h = inspect::hard_state(path).map_err(read_err)?;
            if js {
                let mut v = hard_state_json(&h);
                v["kind"] = json!("hard_state");
                writeln!(out, "{v}")?;
            } else {
                writeln!(
                    out,
                    "hard state {}: {}",
                    path.display(),
                    hard_state_line(&h)
                )?;
                for (i, s) in h.slots.iter().enumerate() {
                    match s {
                        Ok(g) => writeln!(out, "  slot {i}: generation {g}")?,
                        Err(e) => writeln!(out, "  slot {i}: invalid ({e})")?,
                    }
                }
            }
            Ok(if h.current.is_some() {
                EXIT_OK
            } else {
                EXIT_CORRUPT
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Records of a directory or a segment.
// ---------------------------------------------------------------------------------------------

/// The segments to read for `range`, in log order.
fn segments_for(
    path: &Path,
    target: Target,
    range: IndexRange,
) -> Result<Vec<SegmentInfo>, DumpError> {
    match target {
        Target::Dir => Ok(inspect_dir(path)?
            .segments
            .into_iter()
            .filter(|s| range.overlaps(s))
            .collect()),
        Target::Segment => Ok(vec![inspect::segment_info(path).map_err(read_err)?]),
        Target::Snapshot | Target::HardState => Err(DumpError::Usage(format!(
            "{} holds no log entries: --entries and --stats read a data directory or a segment",
            path.display()
        ))),
    }
}

fn entry_json(file: &Path, r: &RecordInfo, rendered: Option<String>) -> Value {
    let mut v = json!({
        "index": r.index.0,
        "term": r.term.0,
        "kind": r.kind.0,
        "payload_bytes": r.payload_len,
        "checksum_ok": r.checksum_ok,
        "stored_crc": format!("{:#010x}", r.stored_crc),
        "file": file.display().to_string(),
        "offset": r.offset,
    });
    if let Some(p) = rendered {
        v["payload"] = json!(p);
    }
    v
}

fn entries_mode(
    path: &Path,
    target: Target,
    range: IndexRange,
    printer: &dyn PayloadPrinter,
    js: bool,
    out: &mut dyn Write,
) -> Result<u8, DumpError> {
    let segs = segments_for(path, target, range)?;
    let mut listed = 0u64;
    let mut bad = 0u64;
    let mut unreadable: Vec<String> = Vec::new();
    let mut compacted_away: Vec<String> = Vec::new();
    if js {
        write!(
            out,
            "{{\"kind\":\"entries\",\"path\":{},\"entries\":[",
            json!(path.display().to_string())
        )?;
    } else {
        writeln!(
            out,
            "{:>12} {:>8} {:>4} {:>9} {:>8} {:>12}  file",
            "index", "term", "kind", "bytes", "checksum", "offset"
        )?;
    }
    for s in &segs {
        // Records are read one segment at a time, so memory stays bounded by a segment.
        let recs = match inspect::records(&s.path) {
            Ok(r) => r,
            Err(e) if vanished(&e) => {
                // Deleted by a live node's compaction since the listing: not a problem.
                compacted_away.push(s.path.display().to_string());
                continue;
            }
            Err(e) => {
                unreadable.push(e.to_string());
                continue;
            }
        };
        for r in recs.iter().filter(|r| range.contains(r.index)) {
            let rendered = if r.payload.len() == r.payload_len as usize {
                printer.render(r.kind.0, &r.payload)
            } else {
                None
            };
            if !r.checksum_ok {
                bad += 1;
            }
            if js {
                if listed > 0 {
                    write!(out, ",")?;
                }
                write!(out, "{}", entry_json(&s.path, r, rendered))?;
            } else {
                write!(
                    out,
                    "{:>12} {:>8} {:>4} {:>9} {:>8} {:>12}  {}",
                    r.index.0,
                    r.term.0,
                    r.kind.0,
                    r.payload_len,
                    if r.checksum_ok { "ok" } else { "BAD" },
                    r.offset,
                    file_name(&s.path)
                )?;
                if let Some(p) = rendered {
                    write!(out, "  {p}")?;
                }
                writeln!(out)?;
            }
            listed += 1;
        }
    }
    if js {
        writeln!(
            out,
            "],\"listed\":{listed},\"bad_checksums\":{bad},\"unreadable_segments\":{},\"compacted_away_segments\":{}}}",
            json!(unreadable),
            json!(compacted_away)
        )?;
    } else {
        writeln!(out, "{listed} entries listed, {bad} with a bad checksum")?;
        for u in &unreadable {
            writeln!(out, "unreadable segment (skipped): {u}")?;
        }
        for c in &compacted_away {
            writeln!(
                out,
                "segment deleted by the node while reading (compacted): {c}"
            )?;
        }
    }
    Ok(if unreadable.is_empty() {
        EXIT_OK
    } else {
        EXIT_CORRUPT
    })
}

// ---------------------------------------------------------------------------------------------
// Stats.
// ---------------------------------------------------------------------------------------------

/// Space accounting of the segment files read by `--stats`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SpaceStats {
    pub file_bytes: u64,
    pub payload_bytes: u64,
    /// 32-byte record headers.
    pub record_header_bytes: u64,
    /// Zero padding after payloads (8-byte record alignment).
    pub padding_bytes: u64,
    /// 64-byte segment headers.
    pub segment_header_bytes: u64,
    /// Offset index and trailer of sealed segments.
    pub footer_bytes: u64,
    /// Unused bytes between the last record and the footer of sealed segments.
    pub sealed_slack_bytes: u64,
    /// Preallocated, not yet written bytes of open segments (not waste: appends fill them).
    pub open_free_bytes: u64,
}

fn stats_mode(
    path: &Path,
    target: Target,
    range: IndexRange,
    js: bool,
    out: &mut dyn Write,
) -> Result<u8, DumpError> {
    let segs = segments_for(path, target, range)?;
    // Histogram buckets: payload sizes by power of two (bucket k holds sizes in [2^(k-1), 2^k),
    // bucket 0 holds empty payloads).
    let mut hist: BTreeMap<u32, u64> = BTreeMap::new();
    let mut per_term: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut sp = SpaceStats::default();
    let (mut n, mut min, mut max) = (0u64, u64::MAX, 0u64);
    let mut skipped = 0usize;
    for s in &segs {
        let recs = match inspect::records(&s.path) {
            Ok(r) => r,
            // Deleted by a live node's compaction since the listing: nothing to count.
            Err(e) if vanished(&e) => continue,
            Err(_) => {
                skipped += 1;
                continue;
            }
        };
        let mut rec_bytes = 0u64;
        let mut counted = 0u64;
        for r in recs.iter().filter(|r| r.checksum_ok) {
            let len = r.payload_len as u64;
            let rb = format::record_bytes(len);
            rec_bytes += rb;
            counted += 1;
            sp.payload_bytes += len;
            sp.record_header_bytes += format::RECORD_HEADER_BYTES;
            sp.padding_bytes += rb - format::RECORD_HEADER_BYTES - len;
            if range.contains(r.index) {
                n += 1;
                min = min.min(len);
                max = max.max(len);
                let bucket = 64 - len.leading_zeros();
                *hist.entry(bucket).or_default() += 1;
                let t = per_term.entry(r.term.0).or_default();
                t.0 += 1;
                t.1 += len;
            }
        }
        sp.file_bytes += s.file_bytes;
        sp.segment_header_bytes += format::SEGMENT_HEADER_BYTES.min(s.file_bytes);
        let used = format::SEGMENT_HEADER_BYTES + rec_bytes;
        if s.sealed {
            let footer = format::OFFSET_ENTRY_BYTES * counted + format::TRAILER_BYTES;
            sp.footer_bytes += footer;
            sp.sealed_slack_bytes += s.file_bytes.saturating_sub(used + footer);
        } else {
            sp.open_free_bytes += s.file_bytes.saturating_sub(used);
        }
    }
    let bucket_label = |b: u32| -> (u64, u64) {
        if b == 0 {
            (0, 0)
        } else {
            (1u64 << (b - 1), (1u64 << b) - 1)
        }
    };
    let overhead = sp.record_header_bytes
        + sp.padding_bytes
        + sp.segment_header_bytes
        + sp.footer_bytes
        + sp.sealed_slack_bytes;
    if js {
        let v = json!({
            "kind": "stats",
            "path": path.display().to_string(),
            "entries": n,
            "payload_bytes_min": if n > 0 { Some(min) } else { None },
            "payload_bytes_max": if n > 0 { Some(max) } else { None },
            "size_histogram": hist.iter().map(|(b, c)| {
                let (lo, hi) = bucket_label(*b);
                json!({"payload_bytes_min": lo, "payload_bytes_max": hi, "entries": c})
            }).collect::<Vec<_>>(),
            "per_term": per_term.iter().map(|(t, (c, b))| json!({"term": t, "entries": c, "payload_bytes": b})).collect::<Vec<_>>(),
            "space": sp,
            "overhead_bytes": overhead,
            "unreadable_segments": skipped,
        });
        writeln!(out, "{v}")?;
        return Ok(EXIT_OK);
    }
    writeln!(
        out,
        "stats of {} ({} segments read, {skipped} unreadable)",
        path.display(),
        segs.len() - skipped
    )?;
    if n == 0 {
        writeln!(out, "  no entries in range")?;
    } else {
        writeln!(out, "  entries: {n}, payload sizes {min}..{max} bytes")?;
    }
    writeln!(out, "  entry-size histogram (payload bytes):")?;
    let top = hist.values().copied().max().unwrap_or(1).max(1);
    for (b, c) in &hist {
        let (lo, hi) = bucket_label(*b);
        let bar = "#".repeat(((c * 40).div_ceil(top)) as usize);
        writeln!(out, "    {lo:>10}..{hi:<10} {c:>10} {bar}")?;
    }
    writeln!(out, "  per term:")?;
    for (t, (c, b)) in &per_term {
        writeln!(
            out,
            "    term {t:>8}: {c:>10} entries {b:>14} payload bytes"
        )?;
    }
    let pct = |x: u64| {
        if sp.file_bytes == 0 {
            0.0
        } else {
            100.0 * x as f64 / sp.file_bytes as f64
        }
    };
    writeln!(out, "  space (all records of the segments read):")?;
    writeln!(out, "    segment files       {:>14} bytes", sp.file_bytes)?;
    writeln!(
        out,
        "    payload             {:>14} bytes ({:.1}%)",
        sp.payload_bytes,
        pct(sp.payload_bytes)
    )?;
    writeln!(
        out,
        "    record headers      {:>14} bytes ({:.1}%)",
        sp.record_header_bytes,
        pct(sp.record_header_bytes)
    )?;
    writeln!(
        out,
        "    alignment padding   {:>14} bytes ({:.1}%)",
        sp.padding_bytes,
        pct(sp.padding_bytes)
    )?;
    writeln!(
        out,
        "    segment headers     {:>14} bytes ({:.1}%)",
        sp.segment_header_bytes,
        pct(sp.segment_header_bytes)
    )?;
    writeln!(
        out,
        "    footers             {:>14} bytes ({:.1}%)",
        sp.footer_bytes,
        pct(sp.footer_bytes)
    )?;
    writeln!(
        out,
        "    sealed slack        {:>14} bytes ({:.1}%)",
        sp.sealed_slack_bytes,
        pct(sp.sealed_slack_bytes)
    )?;
    writeln!(
        out,
        "    open, preallocated  {:>14} bytes ({:.1}%)",
        sp.open_free_bytes,
        pct(sp.open_free_bytes)
    )?;
    writeln!(
        out,
        "    waste (all but payload and open free space) {overhead} bytes ({:.1}%)",
        pct(overhead)
    )?;
    Ok(EXIT_OK)
}

// ---------------------------------------------------------------------------------------------
// Verify.
// ---------------------------------------------------------------------------------------------

fn severity_str(s: Severity) -> &'static str {
    match s {
        Severity::Corruption => "corruption",
        Severity::TornTail => "torn-tail",
        Severity::Notice => "notice",
    }
}

/// One line for a problem: severity, file, byte offset, index, reason.
pub fn problem_line(p: &Problem) -> String {
    format!(
        "{}: file {}, offset {}, index {}: {}",
        severity_str(p.severity),
        p.file.display(),
        opt(p.offset),
        opt(p.index),
        p.reason
    )
}

fn problem_json(p: &Problem) -> Value {
    json!({
        "severity": severity_str(p.severity),
        "file": p.file.display().to_string(),
        "offset": p.offset,
        "index": p.index.map(|i| i.0),
        "reason": p.reason,
    })
}

/// The outcome of [`verify_path`].
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub problems: Vec<Problem>,
    /// Segments checked and the index range they hold.
    pub segments: usize,
    pub records: u64,
    pub first_index: Option<LogIndex>,
    pub last_index: Option<LogIndex>,
    pub durable_index: Option<LogIndex>,
    pub snapshots: usize,
}

impl VerifyReport {
    /// Problems that make the verification fail (severity corruption).
    pub fn corruption_count(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Corruption)
            .count()
    }
}

/// Verifies `path` (any [`Target`]) and summarises what was checked.
pub fn verify_path(path: &Path, target: Target) -> Result<VerifyReport, DumpError> {
    let problems = if target == Target::Dir {
        with_retries(|| inspect::verify(path))?
    } else {
        inspect::verify(path).map_err(read_err)?
    };
    let mut r = VerifyReport {
        problems,
        segments: 0,
        records: 0,
        first_index: None,
        last_index: None,
        durable_index: None,
        snapshots: 0,
    };
    let segs = match target {
        Target::Dir => {
            let d = inspect_dir(path)?;
            r.durable_index = durable_index(&d);
            r.snapshots = d.snapshots.len();
            d.segments
        }
        Target::Segment => vec![inspect::segment_info(path).map_err(read_err)?],
        Target::Snapshot => {
            r.snapshots = 1;
            Vec::new()
        }
        Target::HardState => Vec::new(),
    };
    r.segments = segs.len();
    r.records = segs.iter().map(|s| s.record_count).sum();
    r.first_index = segs.iter().find_map(|s| s.first.map(|f| f.0));
    r.last_index = segs.iter().rev().find_map(|s| s.last.map(|l| l.0));
    Ok(r)
}

/// Writes the human verification report.
pub fn write_verify_text(out: &mut dyn Write, path: &Path, r: &VerifyReport) -> io::Result<()> {
    writeln!(
        out,
        "verified {}: {} segments, {} records (indexes {}..{}), durable index {}, {} snapshots",
        path.display(),
        r.segments,
        r.records,
        opt(r.first_index),
        opt(r.last_index),
        opt(r.durable_index),
        r.snapshots
    )?;
    for p in &r.problems {
        writeln!(out, "{}", problem_line(p))?;
    }
    let c = r.corruption_count();
    if c == 0 {
        let other = r.problems.len();
        if other == 0 {
            writeln!(out, "result: clean")
        } else {
            writeln!(
                out,
                "result: clean ({other} notices or torn-tail findings, no corruption)"
            )
        }
    } else {
        writeln!(out, "result: CORRUPT ({c} corruption problems)")
    }
}

fn verify_mode(
    path: &Path,
    target: Target,
    js: bool,
    out: &mut dyn Write,
) -> Result<u8, DumpError> {
    let r = verify_path(path, target)?;
    let code = if r.corruption_count() == 0 {
        EXIT_OK
    } else {
        EXIT_CORRUPT
    };
    if js {
        let v = json!({
            "kind": "verify",
            "path": path.display().to_string(),
            "clean": code == EXIT_OK,
            "segments": r.segments,
            "records": r.records,
            "first_index": r.first_index.map(|i| i.0),
            "last_index": r.last_index.map(|i| i.0),
            "durable_index": r.durable_index.map(|i| i.0),
            "snapshots": r.snapshots,
            "corruption_count": r.corruption_count(),
            "problems": r.problems.iter().map(problem_json).collect::<Vec<_>>(),
        });
        writeln!(out, "{v}")?;
    } else {
        write_verify_text(out, path, &r)?;
    }
    Ok(code)
}
