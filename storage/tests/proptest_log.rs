//! Property tests of the log: any sequence of appends, truncations, compactions, syncs,
//! clean reopens and power cuts leaves exactly the entries that must survive; damaged files
//! never cause a panic or a wrong entry. Case counts are kept small so the suite stays fast;
//! raise them with PROPTEST_CASES=... for a longer run.

mod common;
use common::*;
use proptest::prelude::*;
use shmraft_storage::*;
use std::path::Path;

const SEG: u64 = 64 << 10;

/// `default` cases, or PROPTEST_CASES when set (for longer runs).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone)]
enum Op {
    Append { n: u8, len: u16, bump_term: bool },
    Truncate { back: u16 },
    Compact { forward: u16 },
    Sync,
    Reopen,
    PowerCut { seed: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..40, 0u16..1500, any::<bool>()).prop_map(|(n, len, bump_term)| Op::Append { n, len, bump_term }),
        1 => (0u16..60).prop_map(|back| Op::Truncate { back }),
        1 => (0u16..120).prop_map(|forward| Op::Compact { forward }),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
        2 => any::<u64>().prop_map(|seed| Op::PowerCut { seed }),
    ]
}

/// What the log must contain.
#[derive(Debug, Default)]
struct Model {
    /// (term, payload) of indexes `first ..= last`.
    entries: std::collections::VecDeque<(u64, Vec<u8>)>,
    first: u64,
    compacted: (u64, u64),
    durable: u64,
    term: u64,
}

impl Model {
    fn last(&self) -> u64 {
        self.first + self.entries.len() as u64 - 1
    }
    fn last_term(&self) -> u64 {
        self.entries.back().map(|e| e.0).unwrap_or(self.compacted.1)
    }
    fn check(&self, wal: &Wal, ctx: &str) {
        assert_eq!(
            wal.first_index(),
            LogIndex(self.first),
            "{ctx}: first index"
        );
        assert_eq!(wal.last_index(), LogIndex(self.last()), "{ctx}: last index");
        assert_eq!(
            wal.last_term(),
            LogTerm(self.last_term()),
            "{ctx}: last term"
        );
        let got = all_entries(wal);
        assert_eq!(got.len(), self.entries.len(), "{ctx}");
        for (e, (t, p)) in got.iter().zip(self.entries.iter()) {
            assert_eq!((e.term.0, &e.payload), (*t, p), "{ctx}: entry {}", e.index);
        }
        assert_eq!(
            wal.compacted(),
            (LogIndex(self.compacted.0), LogTerm(self.compacted.1)),
            "{ctx}"
        );
    }
}

fn run(policy: &str, ops: &[Op]) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut st = Some(Storage::open(d, opts(policy, SEG)).unwrap());
    let mut m = Model {
        first: 1,
        term: 1,
        ..Model::default()
    };
    for (step, op) in ops.iter().enumerate() {
        let ctx = format!("{policy} step {step} {op:?}");
        let s = st.as_mut().unwrap();
        match *op {
            Op::Append { n, len, bump_term } => {
                if bump_term {
                    m.term += 1;
                }
                let mut batch = Vec::new();
                for k in 0..n as u64 {
                    let i = m.last() + 1 + k;
                    batch.push((i, payload(i ^ m.term << 32, len as usize)));
                }
                let refs: Vec<EntryRef<'_>> = batch
                    .iter()
                    .map(|(i, p)| EntryRef {
                        index: LogIndex(*i),
                        term: LogTerm(m.term),
                        kind: EntryKind(1),
                        payload: p,
                    })
                    .collect();
                s.wal.append(&refs).unwrap();
                for (_, p) in batch {
                    m.entries.push_back((m.term, p));
                }
                if policy == "always" {
                    m.durable = m.last();
                }
            }
            Op::Truncate { back } => {
                if m.entries.is_empty() {
                    continue;
                }
                let from = m.last().saturating_sub(back as u64).max(m.first);
                s.wal.truncate_suffix(LogIndex(from)).unwrap();
                while m.last() >= from && !m.entries.is_empty() {
                    m.entries.pop_back();
                }
                m.durable = from - 1;
            }
            Op::Compact { forward } => {
                let upto = m.first - 1 + forward as u64;
                if upto <= m.compacted.0 {
                    continue;
                }
                let term = if upto <= m.last() {
                    m.entries[(upto - m.first) as usize].0
                } else {
                    m.term
                };
                s.wal.compact(LogIndex(upto), LogTerm(term)).unwrap();
                if upto >= m.last() {
                    m.entries.clear();
                } else {
                    for _ in m.first..=upto {
                        m.entries.pop_front();
                    }
                }
                m.first = upto + 1;
                m.compacted = (upto, term);
                m.durable = m.durable.max(upto);
            }
            Op::Sync => {
                s.wal.sync().unwrap();
                m.durable = m.last();
            }
            Op::Reopen => {
                st.take().unwrap().close().unwrap();
                st = Some(Storage::open(d, opts(policy, SEG)).unwrap());
                m.durable = m.last();
            }
            Op::PowerCut { seed } => {
                // What the log says is durable must survive.
                let durable = st.as_ref().unwrap().wal.durable_index().0;
                assert!(
                    durable >= m.durable.min(m.last()),
                    "{ctx}: durable index went back"
                );
                drop(st.take());
                power_cut(d, seed).unwrap();
                let s2 =
                    Storage::open(d, opts(policy, SEG)).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                let last = s2.wal.last_index().0;
                assert!(last >= durable, "{ctx}: durable {durable} but last {last}");
                assert!(last <= m.last(), "{ctx}: more entries than appended");
                while m.last() > last {
                    m.entries.pop_back();
                }
                m.durable = last;
                st = Some(s2);
            }
        }
        m.check(&st.as_ref().unwrap().wal, &ctx);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(16), ..ProptestConfig::default() })]

    #[test]
    fn ops_then_clean_or_power_cut_reopen_keep_exactly_what_must_survive_never(ops in prop::collection::vec(op(), 1..28)) {
        run("never", &ops);
    }

    #[test]
    fn ops_then_clean_or_power_cut_reopen_keep_exactly_what_must_survive_batch(ops in prop::collection::vec(op(), 1..20)) {
        run("batch:50:4096", &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(8), ..ProptestConfig::default() })]

    #[test]
    fn ops_then_power_cut_keep_every_acknowledged_entry_always(ops in prop::collection::vec(op(), 1..14)) {
        run("always", &ops);
    }
}

// ---------------------------------------------------------------------------------------------
// Damaged files: never a panic, never a wrong entry.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Damage {
    FlipBit {
        file: u8,
        at: u32,
        bit: u8,
    },
    Zero {
        file: u8,
        at: u32,
        len: u16,
    },
    Random {
        file: u8,
        at: u32,
        bytes: Vec<u8>,
    },
    Truncate {
        file: u8,
        keep: u32,
    },
    /// Copies a range of one segment into another (recycled, stale content).
    Recycle {
        from: u8,
        to: u8,
        at: u32,
        len: u16,
    },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<u8>(), any::<u32>(), 0u8..8).prop_map(|(file, at, bit)| Damage::FlipBit {
            file,
            at,
            bit
        }),
        (any::<u8>(), any::<u32>(), 1u16..4096).prop_map(|(file, at, len)| Damage::Zero {
            file,
            at,
            len
        }),
        (
            any::<u8>(),
            any::<u32>(),
            prop::collection::vec(any::<u8>(), 1..300)
        )
            .prop_map(|(file, at, bytes)| Damage::Random { file, at, bytes }),
        (any::<u8>(), any::<u32>()).prop_map(|(file, keep)| Damage::Truncate { file, keep }),
        (any::<u8>(), any::<u8>(), any::<u32>(), 1u16..2048)
            .prop_map(|(from, to, at, len)| Damage::Recycle { from, to, at, len }),
    ]
}

fn files_of(d: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with("LOCK"))
        .collect();
    v.sort();
    v
}

fn apply(d: &Path, dmg: &Damage) {
    use std::os::unix::fs::FileExt;
    let files = files_of(d);
    let pick = |i: u8| files[i as usize % files.len()].clone();
    let len_of = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    match dmg {
        Damage::FlipBit { file, at, bit } => {
            let p = pick(*file);
            let l = len_of(&p);
            if l > 0 {
                flip_bit(&p, *at as u64 % l, *bit);
            }
        }
        Damage::Zero { file, at, len } => {
            let p = pick(*file);
            let l = len_of(&p);
            if l > 0 {
                let at = *at as u64 % l;
                fill(&p, at, (*len as u64).min(l - at), 0);
            }
        }
        Damage::Random { file, at, bytes } => {
            let p = pick(*file);
            let l = len_of(&p);
            if l > 0 {
                let at = *at as u64 % l;
                let n = (bytes.len() as u64).min(l - at) as usize;
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .unwrap()
                    .write_all_at(&bytes[..n], at)
                    .unwrap();
            }
        }
        Damage::Truncate { file, keep } => {
            let p = pick(*file);
            let l = len_of(&p);
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(*keep as u64 % (l + 1))
                .unwrap();
        }
        Damage::Recycle { from, to, at, len } => {
            let segs = segment_files(d);
            if segs.is_empty() {
                return;
            }
            let a = &segs[*from as usize % segs.len()];
            let b = &segs[*to as usize % segs.len()];
            let (la, lb) = (len_of(a), len_of(b));
            if la == 0 || lb == 0 {
                return;
            }
            let at_a = *at as u64 % la;
            let n = (*len as u64).min(la - at_a).min(lb);
            let bytes = read_bytes(a, at_a, n);
            let at_b = (*at as u64 / 7) % (lb - n + 1);
            std::fs::OpenOptions::new()
                .write(true)
                .open(b)
                .unwrap()
                .write_all_at(&bytes, at_b)
                .unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(48), ..ProptestConfig::default() })]

    #[test]
    fn damaged_files_never_panic_and_never_yield_a_wrong_entry(damages in prop::collection::vec(damage(), 1..4)) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        {
            let mut st = Storage::open(d, opts("never", SEG)).unwrap();
            for i in 1..=420u64 {
                st.wal.append_one(LogIndex(i), LogTerm(1 + i / 100), EntryKind(0), &payload(i, 300)).unwrap();
            }
            st.hard_state.save(&HardState { current_term: LogTerm(5), voted_for: 1, commit_index: LogIndex(10) }).unwrap();
            st.snapshots.install(LogIndex(50), LogTerm(1), b"m", &b"snapshot-data"[..]).unwrap();
            st.wal.sync().unwrap();
        }
        for dmg in &damages {
            apply(d, dmg);
        }
        // The inspector copes with anything.
        let _ = inspect::verify(d);
        let _ = inspect::inspect_dir(d);
        for p in files_of(d) {
            let _ = inspect::verify(&p);
            let _ = inspect::records(&p);
        }
        // Recovery either refuses with an error or yields only entries that were written.
        if let Ok(st) = Storage::open(d, opts("never", SEG)) {
            let (first, last) = (st.wal.first_index().0, st.wal.last_index().0);
            prop_assert!(last <= 420);
            for i in first..=last {
                if let Ok(e) = st.wal.entry(LogIndex(i)) {
                    prop_assert_eq!(e.payload, payload(i, 300), "wrong payload at {}", i);
                    prop_assert_eq!(e.term, LogTerm(1 + i / 100));
                }
            }
        }
    }

    #[test]
    fn inspector_never_panics_on_random_files(bytes in prop::collection::vec(any::<u8>(), 0..3000), with_header in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let mut content = bytes.clone();
        if with_header {
            // A valid header followed by garbage exercises the record and footer parsers.
            let h = format::encode_segment_header(1, 4096, 7);
            content.splice(0..0, h.iter().copied());
            content.resize(4096, 0xA5);
        }
        for name in [format::segment_file_name(1), "snap-00000000000000000001-00000000000000000001.snap".into(), "hardstate".into()] {
            let p = dir.path().join(&name);
            std::fs::write(&p, &content).unwrap();
            let _ = inspect::verify(&p);
            let _ = inspect::records(&p);
            let _ = inspect::segment_info(&p);
        }
        std::fs::write(dir.path().join("sync.ledger"), &content).unwrap();
        std::fs::write(dir.path().join("log.meta"), &content).unwrap();
        let _ = inspect::inspect_dir(dir.path());
        let _ = inspect::verify(dir.path());
        // Opening such a directory is an error or a consistent (possibly empty) log: no panic.
        if let Ok(st) = Storage::open(dir.path(), opts("never", SEG)) {
            let _ = st.wal.read(st.wal.first_index(), 10, 1 << 20);
        }
    }
}
