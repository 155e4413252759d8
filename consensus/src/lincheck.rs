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
//!    whose value is non-empty and appears in no `ok:true` get's output on its key as a substring is
//!    dropped too (or is an empty append): any linearization that includes it stays valid without
//!    it, because the states it produces until the next put are never read (they would contain its
//!    value). This keeps histories with many timed-out, never-observed writes cheap.
//! 3. **Search.** Wing & Gong's algorithm with Lowe's memoization, as in porcupine: call and return
//!    events sorted by time (calls before returns at equal times, so touching intervals count as
//!    concurrent) in a doubly linked list. Walking the list, a call whose operation is legal in the
//!    current state is linearized (the call and its return are lifted out of the list) unless the
//!    pair (set of linearized operations, state) was reached before; reaching a return means that
//!    operation was not linearized in time, so the search backtracks to the last choice.
//! 4. **Outcomes.** Linearizable; not linearizable, with the first violating key (in key order) and
//!    the operations involved: the end of the longest linearization found, the operation whose
//!    return could not be passed and the operations pending with it; or timeout, which is never
//!    reported as linearizable.
//!
//! # Limits
//!
//! The search is exponential in the worst case (the problem is NP-complete). It is fast when few
//! operations per key overlap (clients × in-flight requests); many `ok:false` writes on one key
//! whose values *are* observed keep growing the set of pending operations and can make a key slow.
//! The timeout bounds the total time. Timestamps must come from one monotonic clock.

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
    /// The checker ran out of time on these keys (no key was found violating): unknown.
    Timeout { keys: Vec<String> },
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
/// How many pending operations a violation lists.
const VIOLATION_PENDING_OPS: usize = 8;
/// How often (in search steps) the deadline is checked.
const DEADLINE_CHECK_STEPS: u64 = 1024;

/// Checks a history. `timeout: None` means no limit.
pub fn check_history(
    ops: &[Operation],
    timeout: Option<Duration>,
) -> Result<CheckReport, InvalidOperation> {
    let started = Instant::now();
    let deadline = timeout.map(|t| started + t);
    for (index, op) in ops.iter().enumerate() {
        op.validate()
            .map_err(|reason| InvalidOperation { index, reason })?;
    }
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        by_key.entry(op.key.as_str()).or_default().push(i);
    }
    let mut timed_out = Vec::new();
    let mut outcome = CheckOutcome::Linearizable;
    for (key, indices) in &by_key {
        match check_key(ops, indices, deadline) {
            KeyOutcome::Linearizable => {}
            KeyOutcome::Timeout => timed_out.push((*key).to_owned()),
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
    if outcome == CheckOutcome::Linearizable && !timed_out.is_empty() {
        outcome = CheckOutcome::Timeout { keys: timed_out };
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

/// Reads and checks a history file.
pub fn check_history_file(
    path: &Path,
    timeout: Option<Duration>,
) -> Result<CheckedFile, CheckFileError> {
    let (lines, ops): (Vec<usize>, Vec<Operation>) =
        read_history_file_with_lines(path)?.into_iter().unzip();
    // Name the line rather than the operation's position.
    let report = check_history(&ops, timeout).map_err(|InvalidOperation { index, reason }| {
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
    Timeout,
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

/// The register model: apply `op` to `state`, or `None` if the op is illegal there.
fn step(state: &str, op: &Operation) -> Option<String> {
    match op.kind {
        OpKind::Put => Some(op.value.clone()),
        OpKind::Append => {
            let mut s = String::with_capacity(state.len() + op.value.len());
            s.push_str(state);
            s.push_str(&op.value);
            Some(s)
        }
        OpKind::Get => (op.output == state).then(|| state.to_owned()),
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

fn check_key(all: &[Operation], indices: &[usize], deadline: Option<Instant>) -> KeyOutcome {
    let gets: Vec<&Operation> = indices
        .iter()
        .map(|&i| &all[i])
        .filter(|o| o.ok && o.kind == OpKind::Get)
        .collect();
    // Local ops: indices into `all`, after dropping unobservable unknown-outcome ops.
    let local: Vec<usize> = indices
        .iter()
        .copied()
        .filter(|&i| all[i].ok || !unobservable(&all[i], &gets))
        .collect();
    let n = local.len();
    let op = |l: usize| &all[local[l]];
    let finite = |l: usize| op(l).ok;

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
        } else if o.ok {
            u128::from(o.ret.expect("validated: ok ops have a return"))
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

    let words = n.div_ceil(64).max(1);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, String)> = HashSet::new();
    let mut state = String::new();
    // The choices made: (call event, state before it).
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut finite_remaining = (0..n).filter(|&l| finite(l)).count();

    // The deepest point reached, for the explanation.
    let mut best_depth = 0usize;
    let mut best: Option<(Vec<usize>, String, usize, Vec<usize>)> = None;

    let mut steps: u64 = 0;
    let mut entry = next[head];
    while finite_remaining > 0 {
        steps += 1;
        if steps % DEADLINE_CHECK_STEPS == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
            return KeyOutcome::Timeout;
        }
        // While a finite op remains, its return is in the list and the walk reaches it before
        // falling off the end (finite returns sort before every +inf return).
        assert!(
            entry != NIL,
            "linearizability search walked past the last event"
        );
        let e = events[entry];
        if e.is_call {
            if let Some(new_state) = step(&state, op(e.op)) {
                let (w, bit) = (e.op / 64, 1u64 << (e.op % 64));
                linearized[w] |= bit;
                if cache.insert((linearized.clone(), new_state.clone())) {
                    stack.push((entry, std::mem::replace(&mut state, new_state)));
                    unlink(&mut next, &mut prev, entry);
                    unlink(&mut next, &mut prev, return_of[e.op]);
                    if finite(e.op) {
                        finite_remaining -= 1;
                    }
                    entry = next[head];
                    continue;
                }
                linearized[w] &= !bit;
            }
            entry = next[entry];
        } else {
            // `e.op` returned without being linearized: undo the last choice.
            if stack.len() >= best_depth {
                best_depth = stack.len();
                let order: Vec<usize> = stack.iter().map(|&(c, _)| events[c].op).collect();
                let mut pending = Vec::new();
                let mut i = next[head];
                while i != entry && i != NIL {
                    if events[i].is_call {
                        pending.push(events[i].op);
                    }
                    i = next[i];
                }
                best = Some((order, state.clone(), e.op, pending));
            }
            let Some((call, old_state)) = stack.pop() else {
                break;
            };
            let l = events[call].op;
            state = old_state;
            linearized[l / 64] &= !(1u64 << (l % 64));
            // Restore in the reverse order of removal, so each node's saved links are valid.
            relink(&mut next, &mut prev, return_of[l]);
            relink(&mut next, &mut prev, call);
            if finite(l) {
                finite_remaining += 1;
            }
            entry = next[call];
        }
    }
    if finite_remaining == 0 {
        return KeyOutcome::Linearizable;
    }
    let (order, state, blocked, pending) =
        best.expect("a failed search recorded its deepest point");
    explain(all, &local, order, state, blocked, pending)
}

fn explain(
    all: &[Operation],
    local: &[usize],
    order: Vec<usize>,
    state: String,
    blocked: usize,
    pending: Vec<usize>,
) -> KeyOutcome {
    let op = |l: usize| &all[local[l]];
    let mut involved: Vec<usize> = Vec::new();
    let tail = &order[order.len().saturating_sub(VIOLATION_PREFIX_OPS)..];
    involved.extend(tail.iter().map(|&l| local[l]));
    involved.push(local[blocked]);
    involved.extend(
        pending
            .iter()
            .filter(|&&l| l != blocked)
            .take(VIOLATION_PENDING_OPS)
            .map(|&l| local[l]),
    );

    let mut text = format!(
        "the longest linearization found covers {} of {} operations on this key and leaves the \
         value {:?}",
        order.len(),
        local.len(),
        state
    );
    if !tail.is_empty() {
        text.push_str("; it ends with:");
        for &l in tail {
            text.push_str("\n  ");
            text.push_str(&op(l).describe());
        }
    }
    text.push_str(&format!(
        "\nthen this operation returned but cannot be linearized before its return:\n  {}",
        op(blocked).describe()
    ));
    if op(blocked).kind == OpKind::Get && op(blocked).output != state {
        text.push_str(&format!(
            "\n  (it read {:?}, but no order of the operations pending with it makes the value \
             {:?})",
            op(blocked).output,
            op(blocked).output
        ));
    }
    let others: Vec<usize> = pending.iter().copied().filter(|&l| l != blocked).collect();
    if !others.is_empty() {
        text.push_str("\noperations pending with it:");
        for &l in others.iter().take(VIOLATION_PENDING_OPS) {
            text.push_str("\n  ");
            text.push_str(&op(l).describe());
        }
        if others.len() > VIOLATION_PENDING_OPS {
            text.push_str(&format!(
                "\n  ... and {} more",
                others.len() - VIOLATION_PENDING_OPS
            ));
        }
    }
    KeyOutcome::Violation {
        ops: involved,
        explanation: text,
    }
}
