//! A linearizability checker for key-value histories (see [`crate::history`] for the format).
//!
//! # Algorithm
//!
//! 1. **Per-key partitioning (P-compositionality).** Every operation touches one key and keys are
//!    independent registers, so a history is linearizable iff each key's sub-history is (Herlihy &
//!    Wing's locality). Keys are checked one at a time, in key order.
//! 2. **Unknown outcomes.** An `ok:false` operation may have taken effect at any time after its
//!    call, or never. Its return time is treated as +infinity; since puts and appends are always
//!    legal in the model and nothing is observed after the last finite return, "never happened" is
//!    the same as "happened last", so the search succeeds once every `ok:true` operation is
//!    linearized. An `ok:false` get observed nothing and is dropped. An `ok:false` put or append
//!    whose value is non-empty and appears in no `ok:true` get's output on its key as a substring
//!    is dropped too (as is an empty append): any linearization that includes it stays valid
//!    without it, because the values it produces until the next put are never read (they would
//!    contain its value). This keeps histories with many timed-out, never-observed writes cheap.
//! 3. **Observed unknown outcomes.** If such a write's value *is* seen by a get and is unique (no
//!    other write's value contains it, and it cannot straddle a concatenation of other values),
//!    the write happened, before every get that saw it: its return is taken as the earliest
//!    return of those gets instead of +infinity. So timed-out writes with unique values never
//!    stay pending forever, which would make the search exponential in their number.
//! 4. **Search.** Wing & Gong's algorithm with Lowe's memoization, as in porcupine: call and
//!    return events sorted by time (calls before returns at equal times, so touching intervals
//!    count as concurrent) in a doubly linked list. Walking the list, a call whose operation is
//!    legal in the current state is linearized (the call and its return are lifted out of the
//!    list) unless the pair (set of linearized operations, state) was reached before (the memo
//!    keeps 128-bit fingerprints of both); reaching a
//!    return means that operation was not linearized in time, so the search backtracks to the last
//!    choice. Three exact reductions on top:
//!    - *Forced reads.* A pending get that returned the current value can be linearized first
//!      without loss (moving it to the front of any linearization keeps it valid: it changes no
//!      state, and everything that had to precede it already returned before it was called, so is
//!      already linearized). Its alternatives are not tried, and if its successor configuration
//!      was explored before, the current one fails at once.
//!    - *Prefix rule.* Let G be the pending acknowledged get that returns first. Only operations
//!      called before G returned can come before G; if none of them is a put whose value is a
//!      prefix of G's output, the value after each step must be a prefix of G's output (appends
//!      only extend it). This cuts the orders of concurrent appends that a later read rules out.
//!    - *Dead values.* A value that no read's output starts with can never be read again (until
//!      a put replaces it: appends keep it dead, reads fail on it), so all such values are one
//!      state for the memo. This merges the orders of writes nobody read, the main source of
//!      blow-up with many concurrent clients on one key.
//!
//!    A randomized test compares the checker with a brute-force oracle on thousands of tiny
//!    histories, with repeated, overlapping and unique values.
//! 5. **Outcomes.** Linearizable; not linearizable, with the first violating key (in key order);
//!    or unknown, when the time budget or the memo's memory budget ran out, which is never
//!    reported as linearizable. For a violation, a search over return times (galloping from where
//!    the search got stuck, then bisecting) finds the earliest return t such that the key's
//!    history as it stood at t (operations returning later treated as pending) is not
//!    linearizable: the operation returning at t is the first that cannot be explained. The report names it, the end of the longest linearization found for
//!    that cut, the operation whose return the search could not get past, the reads that ruled
//!    out the next steps and the operations pending with it.
//!
//! # Limits
//!
//! The search is exponential in the worst case (the problem is NP-complete). Cost grows with the
//! number of operations on one key that overlap in time (clients × in-flight requests per
//! client). Measured on generated histories of 10,000 operations (5% unknown outcomes, dev
//! profile, shared 2-core machine; figures vary up to 5x with the machine's load): 8 clients over 100 keys, 0.01 s; 8 clients all on one key,
//! 0.13 s; 12 on one key, 0.3 s; 16 on one key, 1.5 s; 24 clients on one key (3,000 operations),
//! 37 s; 32 on one key did not finish in 60 s. Proving a violation costs more than passing a
//! good history (the search must exhaust the alternatives before the bad read, and again for the
//! narrowing): one bad read in the middle of the 16-clients-on-one-key history took 15 s. Spread
//! load over keys (each key is checked separately). `ok:false` writes whose values are not
//! unique and are observed stay pending to the end and make the search slower. The memo stores
//! 128-bit fingerprints of (linearized set, state) (see `search`): a collision, about
//! entries² / 2^129 likely, would skip a configuration as already explored. That can never make
//! a bad history pass (a pass needs a complete linearization actually built step by step); at
//! worst it could hide the one order that explains a good one. Timestamps must come from one
//! monotonic clock; `call`/`return` ties count as overlapping.

use crate::history::{HistoryError, OpKind, Operation, read_history_file_with_lines};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// The result of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Every key's sub-history is linearizable.
    Linearizable,
    /// A key's sub-history is not linearizable.
    NotLinearizable(Violation),
    /// The checker gave up on these keys (no key was found violating): the answer is unknown.
    Unknown { keys: Vec<String>, reason: GiveUp },
}

/// Why the checker gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// [`CheckLimits::timeout`] passed.
    Timeout,
    /// A key's search memo grew past [`CheckLimits::max_memo_bytes`].
    MemoryLimit,
}

impl std::fmt::Display for GiveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GiveUp::Timeout => "timed out",
            GiveUp::MemoryLimit => "memory limit reached",
        })
    }
}

/// Bounds on the search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckLimits {
    /// The whole check's time budget; `None` means no limit.
    pub timeout: Option<Duration>,
    /// The most memory (estimated) one key's memo of visited (linearized set, state) pairs may
    /// use before the checker gives up on that key.
    pub max_memo_bytes: usize,
}

impl Default for CheckLimits {
    fn default() -> Self {
        CheckLimits {
            timeout: None,
            max_memo_bytes: 1 << 30,
        }
    }
}

/// A key whose operations cannot be linearized, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub key: String,
    /// The operations involved (indices into the checked slice): the last few of the longest
    /// linearization found, then the operation that could not be linearized in time and the other
    /// operations pending with it.
    pub ops: Vec<usize>,
    /// A human explanation.
    pub explanation: String,
}

/// A check's outcome and what was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    pub outcome: CheckOutcome,
    /// Operations in the history.
    pub ops: usize,
    /// Operations with `ok:false`.
    pub unknown_outcome_ops: usize,
    /// Distinct keys.
    pub keys: usize,
    /// How long the check took.
    pub elapsed: Duration,
}

/// An operation that breaks the history format's rules.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("operation {index}: {reason}")]
pub struct InvalidOperation {
    pub index: usize,
    pub reason: String,
}

/// Why a history file could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum CheckFileError {
    #[error(transparent)]
    History(#[from] HistoryError),
}

impl CheckFileError {
    /// The 1-based line the error is on, if it is about a line.
    pub fn line(&self) -> Option<usize> {
        match self {
            CheckFileError::History(h) => h.line(),
        }
    }
}

/// How many operations of the longest linearization a violation lists.
const VIOLATION_PREFIX_OPS: usize = 4;
/// How many ruling-out reads a violation lists.
const VIOLATION_READS: usize = 4;
/// How many pending operations a violation lists.
const VIOLATION_PENDING_OPS: usize = 8;
/// How often (in search steps) the deadline is checked.
const DEADLINE_CHECK_STEPS: u64 = 1024;

/// Checks a history with the default memory limit. `timeout: None` means no time limit.
pub fn check_history(
    ops: &[Operation],
    timeout: Option<Duration>,
) -> Result<CheckReport, InvalidOperation> {
    check_history_with(
        ops,
        CheckLimits {
            timeout,
            ..CheckLimits::default()
        },
    )
}

/// Checks a history within `limits`.
pub fn check_history_with(
    ops: &[Operation],
    limits: CheckLimits,
) -> Result<CheckReport, InvalidOperation> {
    let started = Instant::now();
    let deadline = limits.timeout.map(|t| started + t);
    for (index, op) in ops.iter().enumerate() {
        op.validate()
            .map_err(|reason| InvalidOperation { index, reason })?;
    }
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        by_key.entry(op.key.as_str()).or_default().push(i);
    }
    let mut gave_up = Vec::new();
    let mut reason = GiveUp::Timeout;
    let mut outcome = CheckOutcome::Linearizable;
    for (key, indices) in &by_key {
        match check_key(ops, indices, deadline, limits.max_memo_bytes) {
            KeyOutcome::Linearizable => {}
            KeyOutcome::GaveUp(why) => {
                // A memory limit is the more useful thing to report: more time would not help.
                if gave_up.is_empty() || why == GiveUp::MemoryLimit {
                    reason = why;
                }
                gave_up.push((*key).to_owned());
            }
            KeyOutcome::Violation {
                ops: involved,
                explanation,
            } => {
                outcome = CheckOutcome::NotLinearizable(Violation {
                    key: (*key).to_owned(),
                    ops: involved,
                    explanation,
                });
                break;
            }
        }
    }
    if outcome == CheckOutcome::Linearizable && !gave_up.is_empty() {
        outcome = CheckOutcome::Unknown {
            keys: gave_up,
            reason,
        };
    }
    Ok(CheckReport {
        outcome,
        ops: ops.len(),
        unknown_outcome_ops: ops.iter().filter(|o| !o.ok).count(),
        keys: by_key.len(),
        elapsed: started.elapsed(),
    })
}

/// A checked history file.
#[derive(Clone, Debug)]
pub struct CheckedFile {
    pub ops: Vec<Operation>,
    /// `lines[i]` is the 1-based line of `ops[i]` in the file.
    pub lines: Vec<usize>,
    pub report: CheckReport,
}

/// Reads and checks a history file with the default memory limit.
pub fn check_history_file(
    path: &Path,
    timeout: Option<Duration>,
) -> Result<CheckedFile, CheckFileError> {
    check_history_file_with(
        path,
        CheckLimits {
            timeout,
            ..CheckLimits::default()
        },
    )
}

/// Reads and checks a history file within `limits`.
pub fn check_history_file_with(
    path: &Path,
    limits: CheckLimits,
) -> Result<CheckedFile, CheckFileError> {
    let (lines, ops): (Vec<usize>, Vec<Operation>) =
        read_history_file_with_lines(path)?.into_iter().unzip();
    // Name the line rather than the operation's position.
    let report =
        check_history_with(&ops, limits).map_err(|InvalidOperation { index, reason }| {
            CheckFileError::History(HistoryError::Invalid {
                path: path.to_owned(),
                line: lines[index],
                reason,
            })
        })?;
    Ok(CheckedFile { ops, lines, report })
}

enum KeyOutcome {
    Linearizable,
    GaveUp(GiveUp),
    Violation {
        ops: Vec<usize>,
        explanation: String,
    },
}

/// One event in the time-ordered list.
#[derive(Clone, Copy, Debug)]
struct Event {
    /// Local op index.
    op: usize,
    is_call: bool,
}

/// The register's value as the search tracks it. `None` stands for every *dead* value: one that
/// no read of the key returned a value starting with. From a dead value, appends keep it dead and
/// every read fails, whatever the value is, so all dead values behave the same in every
/// continuation and can share one memo entry. This merges the orders of writes that nobody
/// read, which otherwise make the search exponential in the number of concurrent writes.
type State = Option<String>;

/// The outputs of a key's acknowledged reads, sorted, to tell live values from dead ones.
struct Outputs(Vec<String>);

impl Outputs {
    fn new(outputs: impl Iterator<Item = String>) -> Self {
        let mut v: Vec<String> = outputs.collect();
        v.sort_unstable();
        v.dedup();
        Outputs(v)
    }

    /// Whether some read returned a value starting with `s`. The strings starting with `s` sort
    /// contiguously from `s` itself, so only the first output not below `s` needs a look.
    fn live(&self, s: &str) -> bool {
        let i = self.0.partition_point(|o| o.as_str() < s);
        self.0.get(i).is_some_and(|o| o.starts_with(s))
    }

    fn canonical(&self, s: String) -> State {
        self.live(&s).then_some(s)
    }
}

/// The register model: apply `op` to `state`, or `None` if the op is illegal there.
fn step(state: &State, op: &Operation, outputs: &Outputs) -> Option<State> {
    match op.kind {
        OpKind::Put => Some(outputs.canonical(op.value.clone())),
        OpKind::Append => Some(state.as_ref().and_then(|state| {
            let mut s = String::with_capacity(state.len() + op.value.len());
            s.push_str(state);
            s.push_str(&op.value);
            outputs.canonical(s)
        })),
        OpKind::Get => (state.as_deref() == Some(op.output.as_str())).then(|| state.clone()),
    }
}

/// Whether an `ok:false` write can be dropped (see the module docs, point 2).
fn unobservable(op: &Operation, gets: &[&Operation]) -> bool {
    match op.kind {
        OpKind::Get => true,
        OpKind::Append if op.value.is_empty() => true,
        OpKind::Put | OpKind::Append => {
            !op.value.is_empty() && gets.iter().all(|g| !g.output.contains(op.value.as_str()))
        }
    }
}

/// Whether linearizing the op of the call event `at` (leaving `new_state`) can still lead to a
/// linearization (`Err` names the get that rules it out),
/// judged by the first acknowledged get still to be linearized (the one whose
/// return comes first), G. Only operations called before G's return can come before G, so if
/// none of them is a put whose value is a prefix of G's output, G's output must start with
/// `new_state` (appends only extend the value). This prunes the orders of concurrent appends
/// that a later read rules out, which otherwise make the search exponential.
fn viable<'a>(
    new_state: Option<&str>,
    at: usize,
    events: &[Event],
    next: &[usize],
    head: usize,
    op: impl Fn(usize) -> &'a Operation,
) -> Result<(), usize> {
    let this = events[at].op;
    let mut puts: Vec<&'a str> = Vec::new();
    let mut i = next[head];
    while i != usize::MAX {
        let e = events[i];
        i = next[i];
        if e.op == this {
            continue;
        }
        let o = op(e.op);
        if e.is_call {
            if o.kind == OpKind::Put {
                puts.push(&o.value);
            }
        } else if o.kind == OpKind::Get {
            // Every get in a search is acknowledged: `prepare` drops the others.
            let ok = new_state.is_some_and(|s| o.output.starts_with(s))
                || puts.iter().any(|p| o.output.starts_with(p));
            return if ok { Ok(()) } else { Err(e.op) };
        }
    }
    Ok(())
}

/// An operation as one search sees it.
#[derive(Clone, Copy, Debug)]
struct LocalOp {
    /// Index into the whole history.
    index: usize,
    /// The time by which it must be linearized; `None`: +inf (it may also never happen).
    ret: Option<u64>,
}

/// Whether `v` can only ever be part of a value through the write that writes it: no other
/// written value contains it and it cannot straddle the boundaries of a concatenation of other
/// values (a suffix of one, whole values, a prefix of another). `others` are the other values
/// written to the key.
fn unique_value(v: &str, others: &[&str]) -> bool {
    let v = v.as_bytes();
    if v.is_empty() {
        return false;
    }
    let others: Vec<&[u8]> = others
        .iter()
        .map(|w| w.as_bytes())
        .filter(|w| !w.is_empty())
        .collect();
    // reached[p]: some concatenation ends with v[..p] (p >= 1), starting inside or at a value.
    let mut reached = vec![false; v.len()];
    for w in &others {
        if w.windows(v.len()).any(|x| x == v) {
            return false;
        }
        // A non-empty suffix of w that is a proper prefix of v.
        for j in 0..w.len() {
            let suffix = &w[j..];
            if suffix.len() < v.len() && v.starts_with(suffix) {
                reached[suffix.len()] = true;
            }
        }
    }
    for p in 1..v.len() {
        if !reached[p] {
            continue;
        }
        let rest = &v[p..];
        for w in &others {
            if w.starts_with(rest) {
                return false;
            }
            if rest.starts_with(w) {
                reached[p + w.len()] = true;
            }
        }
    }
    true
}

/// The operations of one key that a search considers. With `cutoff: Some(t)`, the history as it
/// stood at time `t`: operations called later are left out and operations returning later have an
/// unknown outcome. Unobservable unknown-outcome operations are dropped (module docs, point 2);
/// observed ones whose value is unique must be linearized before the first read that saw it
/// returned (point 3).
fn prepare(all: &[Operation], indices: &[usize], cutoff: Option<u64>) -> Vec<LocalOp> {
    let included = |i: usize| cutoff.is_none_or(|t| all[i].call <= t);
    let ok = |i: usize| all[i].ok && cutoff.is_none_or(|t| all[i].ret.is_some_and(|r| r <= t));
    let gets: Vec<&Operation> = indices
        .iter()
        .copied()
        .filter(|&i| included(i) && ok(i) && all[i].kind == OpKind::Get)
        .map(|i| &all[i])
        .collect();
    let writes: Vec<usize> = indices
        .iter()
        .copied()
        .filter(|&i| all[i].kind != OpKind::Get)
        .collect();
    let seen_by_until = |i: usize| -> Option<u64> {
        let o = &all[i];
        let others: Vec<&str> = writes
            .iter()
            .filter(|&&w| w != i)
            .map(|&w| all[w].value.as_str())
            .collect();
        if !unique_value(&o.value, &others) {
            return None;
        }
        let first_seen = gets
            .iter()
            .filter(|g| g.output.contains(o.value.as_str()))
            .filter_map(|g| g.ret)
            .min()?;
        // At least its call, so its return never sorts before its call; if a read saw it before
        // it was called, that read still cannot be linearized and the violation is reported.
        Some(first_seen.max(o.call))
    };
    indices
        .iter()
        .copied()
        .filter(|&i| included(i) && (ok(i) || !unobservable(&all[i], &gets)))
        .map(|index| {
            let ret = if ok(index) {
                all[index].ret
            } else {
                seen_by_until(index)
            };
            LocalOp { index, ret }
        })
        .collect()
}

/// Checks one key. On a violation, narrows it down to the earliest return time `t` such that the
/// history as it stood at `t` is not linearizable (that property only grows with `t`: a
/// linearization of a later cut, up to its last operation returning by `t`, is one of the
/// earlier cut), and explains that cut.
fn check_key(
    all: &[Operation],
    indices: &[usize],
    deadline: Option<Instant>,
    max_memo_bytes: usize,
) -> KeyOutcome {
    let full = prepare(all, indices, None);
    let deepest = match search(all, &full, deadline, max_memo_bytes) {
        SearchOutcome::Linearizable => return KeyOutcome::Linearizable,
        SearchOutcome::GaveUp(why) => return KeyOutcome::GaveUp(why),
        SearchOutcome::Failed(d) => d,
    };
    let mut returns: Vec<u64> = indices
        .iter()
        .filter(|&&i| all[i].ok)
        .filter_map(|&i| all[i].ret)
        .collect();
    returns.sort_unstable();
    returns.dedup();
    let last = returns.len().saturating_sub(1);
    // Where the search got stuck is a good guess for the first failing cut; failing cuts cost
    // an exhaustive search and passing ones a greedy pass, so gallop from the guess (few
    // failing probes) instead of bisecting the whole range.
    let stuck_at = full[deepest.blocked].ret.unwrap_or(u64::MAX);
    let guess = returns.partition_point(|&t| t < stuck_at).min(last);
    let mut narrowest = (None, full, deepest);
    // Invariant: the cut at returns[hi] fails (the last one is the whole history); every cut
    // before returns[lo] passes.
    let (mut lo, mut hi) = (0, last);
    let probe = |k: usize, narrowest: &mut (Option<u64>, Vec<LocalOp>, Deepest)| {
        let cut = prepare(all, indices, Some(returns[k]));
        match search(all, &cut, deadline, max_memo_bytes) {
            SearchOutcome::Linearizable => Some(false),
            SearchOutcome::Failed(d) => {
                if narrowest.0.is_none_or(|t| returns[k] < t) {
                    *narrowest = (Some(returns[k]), cut, d);
                }
                Some(true)
            }
            SearchOutcome::GaveUp(_) => None,
        }
    };
    let mut out_of_budget = false;
    // Gallop to a bracket [lo, hi].
    let mut step = 1;
    // If the guess is the whole history, start just below it.
    let mut k = if guess >= hi {
        hi.saturating_sub(1)
    } else {
        guess
    };
    loop {
        if k >= hi {
            break;
        }
        match probe(k, &mut narrowest) {
            Some(true) => {
                hi = k;
                if k == lo {
                    break;
                }
                k = k.saturating_sub(step).max(lo);
            }
            Some(false) => {
                lo = k + 1;
                k = (k + step).min(hi);
            }
            None => {
                out_of_budget = true;
                break;
            }
        }
        step *= 2;
    }
    // Bisect the bracket.
    while !out_of_budget && lo < hi {
        let mid = lo + (hi - lo) / 2;
        match probe(mid, &mut narrowest) {
            Some(true) => hi = mid,
            Some(false) => lo = mid + 1,
            None => out_of_budget = true,
        }
    }
    // Out of budget: explain the narrowest failing cut found so far, without claiming it is the
    // first.
    let (cutoff, local, deepest) = narrowest;
    let cutoff = cutoff.or(returns.last().copied());
    explain(
        all,
        &local,
        deepest,
        if out_of_budget { None } else { cutoff },
    )
}

/// A 128-bit key for op `i`: splitmix64 of two distinct inputs, fixed across runs.
fn zobrist_key(i: u64) -> u128 {
    fn splitmix64(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    (u128::from(splitmix64(2 * i)) << 64) | u128::from(splitmix64(2 * i + 1))
}

/// A 128-bit fingerprint of a state: two SipHash-1-3 runs with std's fixed default keys
/// (`DefaultHasher::new`, not a randomly seeded `RandomState`), so runs are reproducible.
fn fingerprint(state: Option<&str>) -> u128 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        state.hash(&mut h);
        h.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
}

/// One step of the search: which call was linearized, from which state.
struct Choice {
    call: usize,
    state_before: State,
    /// A read that saw the current value: no other op needs trying in its place.
    forced: bool,
}

enum SearchOutcome {
    Linearizable,
    GaveUp(GiveUp),
    Failed(Deepest),
}

fn search(
    all: &[Operation],
    local: &[LocalOp],
    deadline: Option<Instant>,
    max_memo_bytes: usize,
) -> SearchOutcome {
    let n = local.len();
    let op = |l: usize| &all[local[l].index];
    let finite = |l: usize| local[l].ret.is_some();

    // Events sorted by time: calls before returns at equal times; unknown outcomes return at +inf.
    let mut events: Vec<Event> = Vec::with_capacity(2 * n);
    for l in 0..n {
        events.push(Event {
            op: l,
            is_call: true,
        });
        events.push(Event {
            op: l,
            is_call: false,
        });
    }
    let time = |e: &Event| -> (u128, bool) {
        let o = op(e.op);
        let t = if e.is_call {
            u128::from(o.call)
        } else if let Some(ret) = local[e.op].ret {
            u128::from(ret)
        } else {
            u128::MAX
        };
        (t, !e.is_call)
    };
    events.sort_by_key(|e| (time(e), e.op));

    // A doubly linked list over the events with a head sentinel at index 2n.
    const NIL: usize = usize::MAX;
    let head = 2 * n;
    let mut next = vec![NIL; 2 * n + 1];
    let mut prev = vec![NIL; 2 * n + 1];
    let mut return_of = vec![NIL; n];
    let mut last = head;
    for (i, e) in events.iter().enumerate() {
        next[last] = i;
        prev[i] = last;
        last = i;
        if !e.is_call {
            return_of[e.op] = i;
        }
    }

    fn unlink(next: &mut [usize], prev: &mut [usize], i: usize) {
        let (p, q) = (prev[i], next[i]);
        next[p] = q;
        if q != NIL {
            prev[q] = p;
        }
    }
    fn relink(next: &mut [usize], prev: &mut [usize], i: usize) {
        let (p, q) = (prev[i], next[i]);
        next[p] = i;
        if q != NIL {
            prev[q] = i;
        }
    }

    // The memo holds 128-bit fingerprints of the linearized set (Zobrist: the XOR of one random
    // key per op, updated in O(1)) and of the state, not the set and the state themselves: a
    // fraction of the memory and time per step. A false hit needs a 128-bit collision among the
    // entries (probability about entries^2 / 2^129); it could only prune a configuration.
    let op_keys: Vec<u128> = (0..n as u64).map(zobrist_key).collect();
    let mut linearized: u128 = 0;
    let mut cache: HashSet<(u128, u128)> = HashSet::new();
    // An estimate of the memo's size per entry: the pair and a control byte, times up to 2 for
    // a table that has just doubled its capacity.
    let memo_entry_bytes = 2 * (std::mem::size_of::<(u128, u128)>() + 1);
    let mut memo_bytes = 0usize;
    let outputs = Outputs::new(
        (0..n)
            .filter(|&l| op(l).kind == OpKind::Get)
            .map(|l| op(l).output.clone()),
    );
    let mut state: State = outputs.canonical(String::new());
    // The choices made, in order.
    let mut stack: Vec<Choice> = Vec::new();
    let mut finite_remaining = (0..n).filter(|&l| finite(l)).count();

    // The furthest failure, for the explanation.
    let mut best_rank = (0usize, 0usize);
    let mut best: Option<Deepest> = None;
    // The reads that ruled out candidates since the search last made progress.
    let mut pruned_by: Vec<usize> = Vec::new();

    let mut steps: u64 = 0;
    let mut entry = next[head];
    while finite_remaining > 0 {
        steps += 1;
        if steps % DEADLINE_CHECK_STEPS == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
            return SearchOutcome::GaveUp(GiveUp::Timeout);
        }
        // While a finite op remains, its return is in the list and the walk reaches it before
        // falling off the end (finite returns sort before every +inf return).
        assert!(
            entry != NIL,
            "linearizability search walked past the last event"
        );
        let e = events[entry];
        if e.is_call {
            let o = op(e.op);
            // A read that sees the current value can go first (module docs, point 4).
            let forced = o.kind == OpKind::Get && state.as_deref() == Some(o.output.as_str());
            let candidate = step(&state, o, &outputs).filter(|new_state| {
                viable(new_state.as_deref(), entry, &events, &next, head, op)
                    .map_err(|g| {
                        if !pruned_by.contains(&g) && pruned_by.len() < VIOLATION_READS {
                            pruned_by.push(g);
                        }
                    })
                    .is_ok()
            });
            let mut explored_before = false;
            if let Some(new_state) = candidate {
                linearized ^= op_keys[e.op];
                if cache.insert((linearized, fingerprint(new_state.as_deref()))) {
                    memo_bytes += memo_entry_bytes;
                    if memo_bytes > max_memo_bytes {
                        return SearchOutcome::GaveUp(GiveUp::MemoryLimit);
                    }
                    pruned_by.clear();
                    stack.push(Choice {
                        call: entry,
                        state_before: std::mem::replace(&mut state, new_state),
                        forced,
                    });
                    unlink(&mut next, &mut prev, entry);
                    unlink(&mut next, &mut prev, return_of[e.op]);
                    if finite(e.op) {
                        finite_remaining -= 1;
                    }
                    entry = next[head];
                    continue;
                }
                linearized ^= op_keys[e.op];
                explored_before = true;
            }
            if !(forced && explored_before) {
                entry = next[entry];
                continue;
            }
            // Every continuation of this configuration could start with this read, and that
            // configuration failed before: this one fails too.
        } else {
            // `e.op` returned without being linearized.
            // Remember the failure that got furthest in time (then deepest): the violation is
            // at or just before the return the search could never get past.
            // Ties keep the first found: the search tries calls in time order first.
            if best.is_none() || (entry, stack.len()) > best_rank {
                best_rank = (entry, stack.len());
                let order: Vec<usize> = stack.iter().map(|c| events[c.call].op).collect();
                let mut pending = Vec::new();
                let mut i = next[head];
                while i != entry && i != NIL {
                    if events[i].is_call {
                        pending.push(events[i].op);
                    }
                    i = next[i];
                }
                best = Some(Deepest {
                    order,
                    state: state.clone(),
                    blocked: e.op,
                    pending,
                    reads: pruned_by.clone(),
                });
            }
        }
        // Undo the last choice, and the forced reads before it: a configuration where a read
        // was forced fails whenever its continuation after that read fails.
        loop {
            let Some(choice) = stack.pop() else {
                return SearchOutcome::Failed(
                    best.expect("a failed search recorded its furthest failure"),
                );
            };
            let call = choice.call;
            let l = events[call].op;
            state = choice.state_before;
            linearized ^= op_keys[l];
            // Restore in the reverse order of removal, so each node's saved links are valid.
            relink(&mut next, &mut prev, return_of[l]);
            relink(&mut next, &mut prev, call);
            if finite(l) {
                finite_remaining += 1;
            }
            entry = next[call];
            if !choice.forced {
                break;
            }
        }
    }
    SearchOutcome::Linearizable
}

/// The deepest point a failed search reached.
struct Deepest {
    /// The longest linearization found (local op indices, in order).
    order: Vec<usize>,
    /// The value after it.
    state: State,
    /// The op whose return was reached before it could be linearized.
    blocked: usize,
    /// Ops called (and not linearized) before that return.
    pending: Vec<usize>,
    /// Later reads that ruled out the candidates for the next step (see `viable`).
    reads: Vec<usize>,
}

fn explain(
    all: &[Operation],
    local: &[LocalOp],
    deepest: Deepest,
    first_failing_return: Option<u64>,
) -> KeyOutcome {
    let Deepest {
        order,
        state,
        blocked,
        pending,
        reads,
    } = deepest;
    let index = |l: usize| local[l].index;
    let describe = |l: usize| format!("\n  {}", all[index(l)].describe());
    let mut involved: Vec<usize> = Vec::new();
    let mut involve = |i: usize| {
        if !involved.contains(&i) {
            involved.push(i);
        }
    };
    let mut text = String::new();

    if let Some(t) = first_failing_return {
        let culprits: Vec<usize> = (0..local.len())
            .filter(|&l| local[l].ret == Some(t))
            .collect();
        text.push_str(&format!(
            "the operations that returned up to time {t} cannot be linearized, while those that \
             returned earlier can: the first violation is at the return of"
        ));
        for &l in &culprits {
            text.push_str(&describe(l));
            involve(index(l));
        }
        text.push_str("\n(operations returning later are treated as still pending)\n");
    }

    let tail = &order[order.len().saturating_sub(VIOLATION_PREFIX_OPS)..];
    let value = match &state {
        Some(s) => format!("{s:?}"),
        None => "a value that no read's output starts with".to_owned(),
    };
    text.push_str(&format!(
        "the longest linearization found covers {} of {} operations and leaves {value}",
        order.len(),
        local.len(),
    ));
    if !tail.is_empty() {
        text.push_str("; it ends with:");
        for &l in tail {
            text.push_str(&describe(l));
        }
    }
    text.push_str("\nthen this operation returned but cannot be linearized before its return:");
    text.push_str(&describe(blocked));
    involve(index(blocked));
    let blocked_op = &all[index(blocked)];
    if blocked_op.kind == OpKind::Get && state.as_deref() != Some(blocked_op.output.as_str()) {
        text.push_str(&format!(
            "\n  (no order of the operations pending with it makes the value {:?})",
            blocked_op.output
        ));
    }
    let reads: Vec<usize> = reads.into_iter().filter(|&l| l != blocked).collect();
    if !reads.is_empty() {
        text.push_str("\nthe next steps were ruled out by what these later reads returned:");
        for &l in &reads {
            text.push_str(&describe(l));
            involve(index(l));
        }
    }
    let others: Vec<usize> = pending.iter().copied().filter(|&l| l != blocked).collect();
    if !others.is_empty() {
        text.push_str("\noperations pending with it:");
        for &l in others.iter().take(VIOLATION_PENDING_OPS) {
            text.push_str(&describe(l));
            involve(index(l));
        }
        if others.len() > VIOLATION_PENDING_OPS {
            text.push_str(&format!(
                "\n  ... and {} more",
                others.len() - VIOLATION_PENDING_OPS
            ));
        }
    }
    for &l in tail {
        involve(index(l));
    }
    KeyOutcome::Violation {
        ops: involved,
        explanation: text,
    }
}
