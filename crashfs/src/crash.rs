//! What a crash keeps: a seeded choice of each file's unsynced operations and of each
//! directory's unsynced entries, applied to the durable image.

use crate::model::{Ino, Model, Node};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::io;

/// How the unsynced state of a crashed mount is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrashMode {
    /// Nothing unsynced survives.
    KeepNone,
    /// Everything unsynced survives (a crash just after the disk caught up).
    KeepAll,
    /// Per file, a prefix of its unsynced operations in write order survives, the last one
    /// torn at a sector boundary; per directory, all unsynced entries or none.
    Prefix,
    /// Per file, any subset of the 512-byte sectors of its unsynced writes survives (size
    /// changes whole or not at all); per directory, all unsynced entries or none.
    TornSubset,
}

impl CrashMode {
    /// Every mode, in the order a seed picks from.
    pub const ALL: [CrashMode; 4] = [
        CrashMode::KeepNone,
        CrashMode::KeepAll,
        CrashMode::Prefix,
        CrashMode::TornSubset,
    ];

    /// The mode's name as the control interface and reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            CrashMode::KeepNone => "keep-none",
            CrashMode::KeepAll => "keep-all",
            CrashMode::Prefix => "prefix",
            CrashMode::TornSubset => "torn-subset",
        }
    }

    /// Parses a name from [`CrashMode::name`].
    pub fn parse(s: &str) -> Option<CrashMode> {
        CrashMode::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// A crash: the seed of every choice, and the mode (picked by the seed when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashPlan {
    pub seed: u64,
    pub mode: Option<CrashMode>,
}

impl CrashPlan {
    /// A crash whose mode the seed picks.
    pub fn seeded(seed: u64) -> CrashPlan {
        CrashPlan { seed, mode: None }
    }
}

/// What happened to one file's unsynced operations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileOutcome {
    /// Path relative to the mount root (a current name, else a durable one).
    pub path: String,
    pub unsynced_ops: usize,
    pub kept: usize,
    pub torn: usize,
    pub lost: usize,
}

/// What happened to one directory's unsynced entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirOutcome {
    pub path: String,
    /// Whether the current entries survived (else the durable ones did).
    pub kept: bool,
    /// Names only in the current entries (created or renamed in, not yet synced).
    pub unsynced_names: Vec<String>,
    /// Names only in the durable entries (removed or renamed away, not yet synced).
    pub unsynced_removals: Vec<String>,
}

/// The report of a crash (or of a clean unmount, with mode `keep-all`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrashReport {
    pub seed: u64,
    pub mode: CrashMode,
    pub files: Vec<FileOutcome>,
    pub dirs: Vec<DirOutcome>,
    pub unsynced_ops: usize,
    pub ops_kept: usize,
    pub ops_torn: usize,
    pub ops_lost: usize,
}

impl std::fmt::Display for CrashReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "crash seed {} mode {}: {} unsynced ops ({} kept, {} torn, {} lost) in {} files; {} directories with unsynced entries",
            self.seed,
            self.mode.name(),
            self.unsynced_ops,
            self.ops_kept,
            self.ops_torn,
            self.ops_lost,
            self.files.len(),
            self.dirs.len()
        )
    }
}

impl Model {
    /// Applies `plan` to the unsynced state (`None`: a clean unmount, everything survives),
    /// writes the durable image back as the backing tree and reports what survived.
    pub fn finish(&mut self, plan: Option<CrashPlan>) -> io::Result<CrashReport> {
        let seed = plan.map_or(0, |p| p.seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mode = match plan {
            None => CrashMode::KeepAll,
            Some(CrashPlan { mode: Some(m), .. }) => m,
            Some(CrashPlan { mode: None, .. }) => CrashMode::ALL[rng.random_range(0..4)],
        };
        let mut report = CrashReport {
            seed,
            mode,
            files: Vec::new(),
            dirs: Vec::new(),
            unsynced_ops: 0,
            ops_kept: 0,
            ops_torn: 0,
            ops_lost: 0,
        };
        let paths = self.paths();
        let mut inos: Vec<Ino> = self.nodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in &inos {
            let path = paths
                .get(ino)
                .cloned()
                .unwrap_or_else(|| format!("<inode {ino}>"));
            match self.nodes.get_mut(ino) {
                Some(Node::File(f)) if !f.log.is_empty() => {
                    let log = std::mem::take(&mut f.log);
                    let outcome = apply_choice(&log, &f.durable, mode, &mut rng, path)?;
                    report.unsynced_ops += outcome.unsynced_ops;
                    report.ops_kept += outcome.kept;
                    report.ops_torn += outcome.torn;
                    report.ops_lost += outcome.lost;
                    report.files.push(outcome);
                }
                Some(Node::Dir(d)) if d.entries != d.durable => {
                    let kept = match mode {
                        CrashMode::KeepNone => false,
                        CrashMode::KeepAll => true,
                        CrashMode::Prefix | CrashMode::TornSubset => rng.random_bool(0.5),
                    };
                    let names =
                        |a: &std::collections::BTreeMap<_, _>,
                         b: &std::collections::BTreeMap<_, _>| {
                            a.iter()
                                .filter(|(n, i)| b.get(*n) != Some(*i))
                                .map(|(n, _): (&std::ffi::OsString, &Ino)| {
                                    n.to_string_lossy().into_owned()
                                })
                                .collect::<Vec<_>>()
                        };
                    report.dirs.push(DirOutcome {
                        path,
                        kept,
                        unsynced_names: names(&d.entries, &d.durable),
                        unsynced_removals: names(&d.durable, &d.entries),
                    });
                    if kept {
                        d.durable = d.entries.clone();
                    }
                }
                _ => {}
            }
        }
        self.rebuild_backing_tree()?;
        Ok(report)
    }
}

/// Applies the part of `log` that `mode` keeps to `durable`.
fn apply_choice(
    log: &[crate::oplog::Op],
    durable: &std::fs::File,
    mode: CrashMode,
    rng: &mut ChaCha8Rng,
    path: String,
) -> io::Result<FileOutcome> {
    let mut out = FileOutcome {
        path,
        unsynced_ops: log.len(),
        kept: 0,
        torn: 0,
        lost: 0,
    };
    let mut tally = |applied: usize, pieces: usize| match applied {
        0 => out.lost += 1,
        n if n == pieces => out.kept += 1,
        _ => out.torn += 1,
    };
    match mode {
        CrashMode::KeepNone => log.iter().for_each(|op| tally(0, op.pieces().len())),
        CrashMode::KeepAll => {
            for op in log {
                op.apply(durable)?;
                tally(1, 1);
            }
        }
        CrashMode::Prefix => {
            let whole = rng.random_range(0..=log.len());
            for (i, op) in log.iter().enumerate() {
                let pieces = op.pieces().len();
                let keep_pieces = match i.cmp(&whole) {
                    std::cmp::Ordering::Less => pieces,
                    std::cmp::Ordering::Equal => rng.random_range(0..pieces.max(1)),
                    std::cmp::Ordering::Greater => 0,
                };
                let applied = op.apply_pieces(durable, |p| p < keep_pieces)?;
                tally(applied, pieces);
            }
        }
        CrashMode::TornSubset => {
            for op in log {
                let pieces = op.pieces().len();
                let applied = op.apply_pieces(durable, |_| rng.random_bool(0.5))?;
                tally(applied, pieces);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names_round_trip() {
        for m in CrashMode::ALL {
            assert_eq!(CrashMode::parse(m.name()), Some(m));
        }
        assert_eq!(CrashMode::parse("some"), None);
    }
}
