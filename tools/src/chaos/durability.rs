//! The durability check of `shmraft torture`: every acknowledged append that no put can have
//! overwritten must be in the final value of its key, exactly once, and in an order consistent
//! with real time. Appends are counted per fault: the fault in effect when each was
//! acknowledged.
//!
//! The check is linear in the history (plus a sort per key for the order): puts, final values
//! and appends are grouped by key in hash maps, so an hour of torture is checked in seconds.

use shmraft_consensus::history::{OpKind, Operation};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// A fault torture injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    Kill,
    Pause,
    Partition,
    Powercut,
}

impl FaultKind {
    pub const ALL: [FaultKind; 4] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Powercut,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Powercut => "powercut",
        }
    }
}

/// The report's name for "no fault in effect".
pub const NO_FAULT: &str = "none";

/// `--faults`: a comma-separated list of fault names, or `none`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultList(pub Vec<FaultKind>);

impl std::str::FromStr for FaultList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == NO_FAULT {
            return Ok(FaultList(Vec::new()));
        }
        s.split(',')
            .map(|f| {
                let f = f.trim();
                FaultKind::ALL
                    .into_iter()
                    .find(|k| k.name() == f)
                    .ok_or_else(|| {
                        format!(
                            "unknown fault {f:?}; expected a comma-separated list of kill, \
                             pause, partition, powercut, or none"
                        )
                    })
            })
            .collect::<Result<_, _>>()
            .map(FaultList)
    }
}

/// When each injected fault was in effect, on the clock of the history (ns since `start`).
#[derive(Debug)]
pub struct FaultTimeline {
    start: Instant,
    /// (from, to, kind); `to` is `u64::MAX` while the fault lasts.
    intervals: Vec<(u64, u64, FaultKind)>,
    /// The open interval of the fault on each node (kill, powercut, pause).
    open_on_node: HashMap<u64, usize>,
    open_partition: Option<usize>,
}

impl FaultTimeline {
    pub fn new(start: Instant) -> Self {
        FaultTimeline {
            start,
            intervals: Vec::new(),
            open_on_node: HashMap::new(),
            open_partition: None,
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// A fault began now: on `node`, or the whole cluster's for a partition (`None`).
    pub fn begin(&mut self, kind: FaultKind, node: Option<u64>) {
        let i = self.intervals.len();
        self.intervals.push((self.now(), u64::MAX, kind));
        match node {
            Some(n) => {
                self.open_on_node.insert(n, i);
            }
            None => self.open_partition = Some(i),
        }
    }

    /// The fault on `node` ended now (restarted or resumed); nothing if it had none.
    pub fn end_on_node(&mut self, node: u64) {
        if let Some(i) = self.open_on_node.remove(&node) {
            self.intervals[i].1 = self.now();
        }
    }

    /// The partition ended now (healed); nothing if there was none.
    pub fn end_partition(&mut self) {
        if let Some(i) = self.open_partition.take() {
            self.intervals[i].1 = self.now();
        }
    }

    /// The fault in effect at each time: change points `(from, fault)`, sorted; the most
    /// recently injected fault wins while several overlap, `None` while there is none.
    fn change_points(&self) -> Vec<(u64, Option<FaultKind>)> {
        let mut edges: Vec<(u64, usize)> = Vec::with_capacity(self.intervals.len() * 2);
        for (i, &(from, to, _)) in self.intervals.iter().enumerate() {
            edges.push((from, i));
            if to != u64::MAX {
                edges.push((to, i));
            }
        }
        edges.sort_unstable();
        let mut active: Vec<usize> = Vec::new(); // few at a time: a scan is fine
        let mut points = vec![(0, None)];
        for (t, i) in edges {
            match active.iter().position(|&a| a == i) {
                Some(p) => {
                    active.remove(p);
                }
                None => active.push(i),
            }
            let now = active
                .iter()
                .max_by_key(|&&a| self.intervals[a].0)
                .map(|&a| self.intervals[a].2);
            points.push((t, now));
        }
        points
    }
}

/// Acknowledged appends checked against the final values, and what was wrong with them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AppendCounts {
    /// Acknowledged appends no put could have overwritten.
    pub checked: usize,
    /// Missing from the final value of their key.
    pub lost: usize,
    /// Present more than once.
    pub duplicated: usize,
    /// Present before an append that was acknowledged before this one was called.
    pub misordered: usize,
}

impl AppendCounts {
    fn add(&mut self, o: &AppendCounts) {
        self.checked += o.checked;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.misordered += o.misordered;
    }

    /// Appends found lost, duplicated or out of order.
    pub fn wrong(&self) -> usize {
        self.lost + self.duplicated + self.misordered
    }
}

/// The result of [`check_appends`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendCheck {
    pub total: AppendCounts,
    /// Per fault in effect at acknowledgement (`kill`, ..., or `none`).
    pub by_fault: BTreeMap<&'static str, AppendCounts>,
}

/// An appended value as it shows in a key's value: values end with `;`, so the text before is
/// one element of the final value split at `;`.
fn element(value: &str) -> &str {
    value.strip_suffix(';').unwrap_or(value)
}

/// One checked append as the order check needs it.
struct Present {
    call: u64,
    ret: u64,
    pos: usize,
    fault: &'static str,
}

/// Checks every acknowledged append of `ops` against `finals` (the final value of each key).
/// An append is required (checked) only if every put on its key, of any outcome, returned
/// before the append was called, so no put can be linearized after it; on keys that only ever
/// receive appends, that is every acknowledged append. Each is counted under
/// the fault `timeline` says was in effect when it was acknowledged.
pub fn check_appends(
    ops: &[Operation],
    finals: &HashMap<String, String>,
    timeline: &FaultTimeline,
) -> AppendCheck {
    let mut last_put_return: HashMap<&str, u64> = HashMap::new();
    for p in ops.iter().filter(|o| o.kind == OpKind::Put) {
        let r = last_put_return.entry(&p.key).or_default();
        *r = (*r).max(p.ret.unwrap_or(u64::MAX));
    }
    let points = timeline.change_points();
    let fault_at = |t: u64| {
        let i = points.partition_point(|&(from, _)| from <= t);
        points[i.saturating_sub(1)]
            .1
            .map_or(NO_FAULT, FaultKind::name)
    };
    // Element -> (first position, occurrences), per key, built on first use.
    let mut elements: HashMap<&str, HashMap<&str, (usize, usize)>> = HashMap::new();
    let mut present: HashMap<&str, Vec<Present>> = HashMap::new();
    let mut check = AppendCheck::default();
    for a in ops.iter().filter(|o| o.kind == OpKind::Append && o.ok) {
        let (Some(ret), key) = (a.ret, a.key.as_str()) else {
            continue;
        };
        if last_put_return.get(key).is_some_and(|&r| r >= a.call) {
            continue; // a put may come after it
        }
        let fault = fault_at(ret);
        let counts = check.by_fault.entry(fault).or_default();
        counts.checked += 1;
        let index = elements
            .entry(key)
            .or_insert_with(|| index_elements(finals.get(key).map_or("", String::as_str)));
        match index.get(element(&a.value)) {
            None => counts.lost += 1,
            Some(&(pos, n)) => {
                if n > 1 {
                    counts.duplicated += 1;
                }
                let (call, fault) = (a.call, fault);
                present.entry(key).or_default().push(Present {
                    call,
                    ret,
                    pos,
                    fault,
                });
            }
        }
    }
    for appends in present.values_mut() {
        for fault in misordered(appends) {
            check.by_fault.entry(fault).or_default().misordered += 1;
        }
    }
    for c in check.by_fault.values() {
        check.total.add(c);
    }
    check
}

/// Each element of a final value with its first position and number of occurrences.
fn index_elements(value: &str) -> HashMap<&str, (usize, usize)> {
    let mut index: HashMap<&str, (usize, usize)> = HashMap::new();
    for (pos, e) in value.split(';').filter(|e| !e.is_empty()).enumerate() {
        index.entry(e).or_insert((pos, 0)).1 += 1;
    }
    index
}

/// The faults of appends found before an append that was acknowledged before they were
/// called (real-time order says they come after it). Sorted by call and by return, one sweep.
fn misordered(appends: &mut [Present]) -> Vec<&'static str> {
    let mut by_ret: Vec<(u64, usize)> = appends.iter().map(|a| (a.ret, a.pos)).collect();
    by_ret.sort_unstable();
    appends.sort_unstable_by_key(|a| a.call);
    let mut out = Vec::new();
    let (mut next, mut latest_pos) = (0, None);
    for a in appends.iter() {
        while next < by_ret.len() && by_ret[next].0 < a.call {
            latest_pos = latest_pos.max(Some(by_ret[next].1));
            next += 1;
        }
        if latest_pos.is_some_and(|p| p > a.pos) {
            out.push(a.fault);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, key: &str, value: &str, call: u64, ret: Option<u64>) -> Operation {
        Operation {
            client: 1,
            kind,
            key: key.into(),
            value: value.into(),
            output: String::new(),
            call,
            ret,
            ok: ret.is_some(),
        }
    }

    fn no_faults() -> FaultTimeline {
        FaultTimeline::new(Instant::now())
    }

    fn finals(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_acknowledged_append_missing_from_the_final_value_is_lost() {
        let ops = vec![
            op(OpKind::Append, "k", "a;", 1, Some(2)),
            op(OpKind::Append, "k", "b;", 3, Some(4)),
        ];
        let c = check_appends(&ops, &finals(&[("k", "a;")]), &no_faults());
        assert_eq!((c.total.checked, c.total.lost), (2, 1));
        assert_eq!(c.by_fault[NO_FAULT], c.total);
    }

    #[test]
    fn appends_a_later_or_unknown_put_may_overwrite_are_not_required() {
        let ops = vec![
            op(OpKind::Append, "k", "a;", 1, Some(2)),
            op(OpKind::Put, "k", "p", 5, None), // unknown put: may land any time later
            op(OpKind::Append, "j", "x;", 1, Some(2)),
            op(OpKind::Put, "j", "q", 0, Some(3)), // overlaps the append
            op(OpKind::Append, "j", "y;", 4, Some(5)), // after every put on j: required
        ];
        let c = check_appends(&ops, &finals(&[("k", "p"), ("j", "qy;")]), &no_faults());
        assert_eq!(
            (c.total.checked, c.total.lost),
            (1, 1),
            "qy is not an element y"
        );
    }

    #[test]
    fn elements_match_whole_values_only() {
        // "c1.1;" is inside "c11.1;" as text but is not one of its elements.
        let ops = vec![op(OpKind::Append, "k", "c1.1;", 1, Some(2))];
        let c = check_appends(&ops, &finals(&[("k", "c11.1;")]), &no_faults());
        assert_eq!(c.total.lost, 1);
    }

    #[test]
    fn duplicates_and_real_time_order_violations_are_counted() {
        let ops = vec![
            op(OpKind::Append, "k", "a;", 1, Some(2)),
            op(OpKind::Append, "k", "b;", 3, Some(4)), // after a: must follow it
            op(OpKind::Append, "k", "c;", 0, Some(9)), // concurrent with both: anywhere
            op(OpKind::Append, "j", "x;", 1, Some(2)),
        ];
        let c = check_appends(
            &ops,
            &finals(&[("k", "c;b;a;"), ("j", "x;x;")]),
            &no_faults(),
        );
        assert_eq!(c.total.checked, 4);
        assert_eq!(
            (c.total.lost, c.total.duplicated, c.total.misordered),
            (0, 1, 1)
        );
        let c = check_appends(&ops, &finals(&[("k", "a;c;b;"), ("j", "x;")]), &no_faults());
        assert_eq!(c.total.wrong(), 0);
    }

    #[test]
    fn appends_count_under_the_fault_in_effect_when_acknowledged() {
        let t0 = Instant::now();
        let mut t = FaultTimeline::new(t0);
        // Intervals in ns on the history's clock, written directly: kill 100..200, a
        // partition 150..400 (the most recent wins while both last), pause 500.. (open).
        t.intervals = vec![
            (100, 200, FaultKind::Kill),
            (150, 400, FaultKind::Partition),
            (500, u64::MAX, FaultKind::Pause),
        ];
        let ops: Vec<Operation> = [50, 120, 160, 300, 450, 600]
            .iter()
            .enumerate()
            .map(|(i, &ret)| op(OpKind::Append, "k", &format!("v{i};"), ret - 1, Some(ret)))
            .collect();
        let c = check_appends(&ops, &finals(&[("k", "v0;v1;v2;v3;v4;")]), &t);
        let got: Vec<(&str, usize, usize)> = c
            .by_fault
            .iter()
            .map(|(k, v)| (*k, v.checked, v.lost))
            .collect();
        assert_eq!(
            got,
            [
                ("kill", 1, 0),
                ("none", 2, 0),
                ("partition", 2, 0),
                ("pause", 1, 1)
            ]
        );
    }

    #[test]
    fn the_timeline_records_faults_by_node_and_partition() {
        let mut t = FaultTimeline::new(Instant::now());
        t.begin(FaultKind::Kill, Some(2));
        t.begin(FaultKind::Partition, None);
        t.end_on_node(2);
        t.end_on_node(3); // no fault there: nothing
        t.end_partition();
        assert_eq!(t.intervals.len(), 2);
        assert!(
            t.intervals
                .iter()
                .all(|&(from, to, _)| from <= to && to != u64::MAX)
        );
        let p = t.change_points();
        assert_eq!(
            p.last().map(|x| x.1),
            Some(None),
            "nothing in effect at the end"
        );
    }

    #[test]
    fn the_check_is_linear_enough_for_an_hour_of_torture() {
        // Half a million acknowledged appends over 500 append-only keys, plus puts elsewhere:
        // the old check compared every append with every operation (10^11 steps here).
        let n = 500_000u64;
        let mut ops = Vec::with_capacity(n as usize + 1000);
        let mut values: HashMap<String, String> = HashMap::new();
        for i in 0..n {
            let key = format!("a{}", i % 500);
            let value = format!("c1.{i};");
            values.entry(key.clone()).or_default().push_str(&value);
            ops.push(op(OpKind::Append, &key, &value, 2 * i, Some(2 * i + 1)));
        }
        for i in 0..1000 {
            ops.push(op(OpKind::Put, &format!("k{i}"), "p", 0, Some(1)));
        }
        let c = check_appends(&ops, &values, &no_faults());
        assert_eq!((c.total.checked, c.total.wrong()), (n as usize, 0));
    }

    #[test]
    fn fault_lists_parse_and_refuse_unknown_names() {
        let l: FaultList = "kill, pause".parse().unwrap();
        assert_eq!(l.0, [FaultKind::Kill, FaultKind::Pause]);
        assert!("none".parse::<FaultList>().unwrap().0.is_empty());
        let e = "kill,explode".parse::<FaultList>().unwrap_err();
        assert!(e.contains("explode") && e.contains("powercut"), "{e}");
    }
}
