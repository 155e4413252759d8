//! Named simulator scenarios (after the MIT 6.824 Raft tests and the Raft paper's figures). Each
//! is a function of a seed and a `Config` tweak, so the scenario tests run them over seeds and the
//! bug-seeding tests run them with a bug switched on. Every scenario also gets the simulator's
//! per-step safety checks; most end with `heal_and_check` (linearizable history, acknowledged
//! writes present, equal digests, bounded recovery).

use super::machine::unsessioned_append;
use super::{FaultMix, Sim, SimOptions, TICK_MS, Violation};
use crate::config::Config;
use crate::types::{Index, Term};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Recovery bound after the faults heal: 300 ticks.
pub const PROGRESS_BOUND_MS: u64 = 3000;
/// An election should finish well within this (many election timeouts).
const ELECTION_BOUND_MS: u64 = 3000;

fn fail<T>(msg: impl Into<String>) -> Result<T, Violation> {
    Err(Violation(msg.into()))
}

fn sim(seed: u64, nodes: usize, faults: FaultMix, tweak: fn(&mut Config)) -> Sim {
    let mut o = SimOptions::new(seed, nodes, faults);
    o.tweak = tweak;
    Sim::new(o)
}

fn with_trace<T>(s: &Sim, r: Result<T, Violation>) -> Result<T, Violation> {
    r.map_err(|v| Violation(format!("{v}\nlast events:\n{}", s.trace())))
}

fn cmd(rng: &mut ChaCha8Rng) -> Vec<u8> {
    // Keys from 100 up: the clients (keys 0..4) and their checked history never see these.
    unsessioned_append(100 + rng.random_range(0..4), rng.random())
}

pub fn no_tweak(_: &mut Config) {}

/// Raft §5.2: a leader is elected, and with a healthy network it stays (no spurious elections).
pub fn initial_election(seed: u64, tweak: fn(&mut Config)) -> Result<(), Violation> {
    let mut s = sim(seed, 3, FaultMix::none(), tweak);
    let r = (|| {
        let l = s.wait_leader(ELECTION_BOUND_MS)?;
        let term = s.raft(l).map(|r| r.current_term()).unwrap_or(Term::ZERO);
        s.run_for(2000)?;
        if s.leader() != Some(l) || s.max_term() != term {
            return fail(format!(
                "leadership changed without faults: term {term} -> {}",
                s.max_term()
            ));
        }
        Ok(())
    })();
    with_trace(&s, r)
}

/// A new leader after the old one is cut off; the old one rejoins as a follower; no leader
/// without a majority.
pub fn reelection_after_leader_loss(seed: u64, tweak: fn(&mut Config)) -> Result<(), Violation> {
    let mut s = sim(seed, 3, FaultMix::none(), tweak);
    let r = (|| {
        let l1 = s.wait_leader(ELECTION_BOUND_MS)?;
        s.disconnect(l1);
        let deadline = s.now_ms() + ELECTION_BOUND_MS;
        while !(0..3).any(|i| i != l1 && s.raft(i).is_some_and(|r| r.is_leader())) {
            if s.now_ms() >= deadline {
                return fail("no new leader after the old one was disconnected");
            }
            s.run_for(TICK_MS)?;
        }
        s.connect(l1);
        s.run_for(1000)?;
        let l3 = s.wait_leader(ELECTION_BOUND_MS)?;
        if s.raft(l1).is_some_and(|r| r.is_leader()) && l3 != l1 {
            return fail("the old leader did not step down after rejoining");
        }
        // Two of three gone: nobody may lead (CheckQuorum makes the leader step down).
        let others: Vec<usize> = (0..3).filter(|&i| i != l3).collect();
        s.disconnect(others[0]);
        s.disconnect(l3);
        s.run_for(1500)?;
        for i in 0..3 {
            if s.raft(i).is_some_and(|r| r.is_leader()) && s.config_check_quorum() {
                return fail(format!("node {} leads without a majority", i + 1));
            }
        }
        s.connect(others[0]);
        s.wait_leader(ELECTION_BOUND_MS)?;
        s.connect(l3);
        s.heal_and_check(PROGRESS_BOUND_MS)
    })();
    with_trace(&s, r)
}

/// 7 nodes, repeatedly disconnect three at random: a leader is always elected among the four.
pub fn many_elections_seven_nodes(seed: u64, tweak: fn(&mut Config)) -> Result<(), Violation> {
    let mut s = sim(seed, 7, FaultMix::none(), tweak);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = (|| {
        s.wait_leader(ELECTION_BOUND_MS)?;
        for _ in 0..8 {
            let mut ids: Vec<usize> = (0..7).collect();
            ids.shuffle(&mut rng);
            for &i in &ids[..3] {
                s.disconnect(i);
            }
            s.wait_leader(ELECTION_BOUND_MS)?;
            for &i in &ids[..3] {
                s.connect(i);
            }
        }
        s.wait_leader(ELECTION_BOUND_MS)?;
        Ok(())
    })();
    with_trace(&s, r)
}

/// Raft §5.3: commands commit in order on every node.
pub fn basic_agreement(seed: u64, tweak: fn(&mut Config)) -> Result<(), Violation> {
    let mut s = sim(seed, 3, FaultMix::none(), tweak);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = (|| {
        s.wait_leader(ELECTION_BOUND_MS)?;
        let mut last = Index::ZERO;
        for _ in 0..5 {
            let i = s.one(cmd(&mut rng), 3, 3000)?;
            if i <= last {
                return fail(format!("index {i} after {last}"));
            }
            last = i;
        }
        s.heal_and_check(PROGRESS_BOUND_MS)
    })();
    with_trace(&s, r)
}

/// A majority keeps committing while one follower is gone; it catches up when back.
pub fn agreement_despite_failed_follower(
    seed: u64,
    tweak: fn(&mut Config),
) -> Result<(), Violation> {
    let mut s = sim(seed, 3, FaultMix::none(), tweak);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = (|| {
        s.one(cmd(&mut rng), 3, 3000)?;
        let l = s.wait_leader(ELECTION_BOUND_MS)?;
        let f = (l + 1) % 3;
        s.disconnect(f);
        for _ in 0..4 {
            s.one(cmd(&mut rng), 2, 3000)?;
        }
        s.connect(f);
        s.one(cmd(&mut rng), 3, 3000)?;
        s.heal_and_check(PROGRESS_BOUND_MS)
    })();
    with_trace(&s, r)
}

/// With 3 of 5 followers gone, the leader's entry does not commit; after they return, the log
/// converges.
pub fn no_agreement_without_majority(seed: u64, tweak: fn(&mut Config)) -> Result<(), Violation> {
    let mut s = sim(seed, 5, FaultMix::none(), tweak);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = (|| {
        s.one(cmd(&mut rng), 5, 3000)?;
        let l = s.wait_leader(ELECTION_BOUND_MS)?;
        for k in 1..=3 {
            s.disconnect((l + k) % 5);
        }
        let pid = s
            .propose(l, cmd(&mut rng))
            .map_err(|e| Violation(format!("the leader refused a proposal: {e}")))?;
        s.run_for(2000)?;
        let (n, _) = s.n_committed(pid.index);
        if n > 0 {
            return fail(format!(
                "{n} nodes committed index {} without a majority",
                pid.index
            ));
        }
        for k in 1..=3 {
            s.connect((l + k) % 5);
        }
        s.one(cmd(&mut rng), 5, 5000)?;
        s.heal_and_check(PROGRESS_BOUND_MS)
    })();
    with_trace(&s, r)
}

/// Many proposals in the same instant each commit exactly once at distinct indexes.
pub fn concurrent_proposals(seed: u64, tweak: fn(&mut Config)) -> Result<(), Violation> {
    let mut s = sim(seed, 3, FaultMix::none(), tweak);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = (|| {
        let l = s.wait_leader(ELECTION_BOUND_MS)?;
        let mut pids = Vec::new();
        for _ in 0..40 {
            match s.propose(l, cmd(&mut rng)) {
                Ok(p) => pids.push(p),
                Err(e) => return fail(format!("proposal refused: {e}")),
            }
        }
        s.run_for(1000)?;
        for (k, p) in pids.iter().enumerate() {
            if k > 0 && p.index != pids[k - 1].index.next() {
                return fail("concurrent proposals did not get consecutive indexes");
            }
            let (n, _) = s.n_committed(p.index);
            if n != 3 {
                return fail(format!("index {} applied on {n} of 3 nodes", p.index));
            }
        }
        s.heal_and_check(PROGRESS_BOUND_MS)
    })();
    with_trace(&s, r)
}

/// A partitioned leader keeps uncommitted entries, a new leader commits others, then the old
/// leader rejoins: its conflicting entries are replaced (Raft §5.3).
pub fn rejoin_partitioned_leader(seed: u64, tweak: fn(&mut Config)) -> Result<(), Violation> {
    let mut s = sim(seed, 3, FaultMix::none(), tweak);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = (|| {
        s.one(cmd(&mut rng), 3, 3000)?;
        let l1 = s.wait_leader(ELECTION_BOUND_MS)?;
        s.disconnect(l1);
        for _ in 0..3 {
            let _ = s.propose(l1, cmd(&mut rng));
        }
        s.run_for(100)?;
        s.one(cmd(&mut rng), 2, 3000)?;
        let l2 = s.wait_leader(ELECTION_BOUND_MS)?;
        s.disconnect(l2);
        s.connect(l1);
        s.one(cmd(&mut rng), 2, 5000)?;
        s.connect(l2);
        s.one(cmd(&mut rng), 3, 5000)?;
        s.heal_and_check(PROGRESS_BOUND_MS)
    })();
    with_trace(&s, r)
}

/// 6.824's TestBackup: 50 divergent uncommitted entries on a partitioned leader and follower;
/// fast backtracking (conflict term and index) lets the leader find the match point in a few
/// round trips, not one per entry.
pub fn fast_backup_over_50_divergent_entries(
    seed: u64,
    tweak: fn(&mut Config),
) -> Result<(), Violation> {
    let mut s = sim(seed, 5, FaultMix::none(), tweak);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = (|| {
        s.one(cmd(&mut rng), 5, 3000)?;
        let l1 = s.wait_leader(ELECTION_BOUND_MS)?;
        // The leader and one follower in a minority, with 50 entries that never commit.
        let minority = [l1, (l1 + 1) % 5];
        let majority: Vec<usize> = (0..5).filter(|i| !minority.contains(i)).collect();
        s.partition(&[&minority, &majority]);
        for _ in 0..50 {
            let _ = s.propose(l1, cmd(&mut rng));
        }
        s.run_for(200)?;
        // The majority commits 50 others.
        for _ in 0..50 {
            s.one(cmd(&mut rng), 3, 5000)?;
        }
        // Heal and measure backtracking.
        let before = s.append_rejections();
        s.heal_network();
        s.one(cmd(&mut rng), 5, 5000)?;
        let rejections = s.append_rejections() - before;
        if rejections > 20 {
            return fail(format!(
                "{rejections} AppendEntries rejections to back up over 50 entries"
            ));
        }
        s.heal_and_check(PROGRESS_BOUND_MS)
    })();
    with_trace(&s, r)
}

/// Which nodes a persistence scenario crashes.
#[derive(Clone, Copy, Debug)]
pub enum CrashWho {
    All,
    Leader,
    Followers,
}

/// Acknowledged commands survive power cuts of all nodes, the leader, or the followers.
pub fn persistence(seed: u64, who: CrashWho, tweak: fn(&mut Config)) -> Result<(), Violation> {
    let mut s = sim(seed, 3, FaultMix::crashes(), tweak);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = (|| {
        s.start_clients(2);
        let mut acked = Vec::new();
        for round in 0..4 {
            acked.push(s.one(cmd(&mut rng), 3, 5000)?);
            let l = s.wait_leader(ELECTION_BOUND_MS)?;
            let victims: Vec<usize> = match who {
                CrashWho::All => (0..3).collect(),
                CrashWho::Leader => vec![l],
                CrashWho::Followers => (0..3).filter(|&i| i != l).collect(),
            };
            s.run_for(rng.random_range(0..30))?;
            for &v in &victims {
                s.crash(v, true);
            }
            s.run_for(rng.random_range(0..500))?;
            for &v in &victims {
                s.restart(v)?;
            }
            acked.push(s.one(cmd(&mut rng), 3, 5000)?);
            let _ = round;
        }
        s.heal_and_check(PROGRESS_BOUND_MS)?;
        for i in acked {
            if s.n_committed(i).0 != 3 {
                return fail(format!(
                    "acknowledged index {i} not applied on every node after restarts"
                ));
            }
        }
        Ok(())
    })();
    with_trace(&s, r)
}

/// 6.824's Figure 8 tests: proposals at whoever leads while leaders crash (or, unreliable,
/// get disconnected) at random moments, so logs diverge in the Figure 8 patterns; then
/// everything heals and must agree. `unreliable` uses a lossy, reordering network and
/// disconnections instead of crashes.
pub fn figure8(seed: u64, unreliable: bool, tweak: fn(&mut Config)) -> Result<(), Violation> {
    let faults = if unreliable {
        FaultMix::unreliable()
    } else {
        FaultMix::crashes()
    };
    let mut s = sim(seed, 5, faults, tweak);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = (|| {
        s.start_clients(2);
        s.one(cmd(&mut rng), 1, 3000)?;
        let mut down = 0usize;
        let iterations = if unreliable { 150 } else { 100 };
        for _ in 0..iterations {
            let mut leader = None;
            for i in 0..5 {
                if s.propose(i, cmd(&mut rng)).is_ok() {
                    leader = Some(i);
                }
            }
            let wait = if rng.random_bool(0.1) {
                rng.random_range(0..500)
            } else {
                rng.random_range(0..13)
            };
            s.run_for(wait)?;
            if let Some(l) = leader {
                if rng.random_bool(0.5) {
                    if unreliable {
                        s.disconnect(l);
                    } else {
                        s.crash(l, true);
                    }
                    down += 1;
                }
            }
            if down >= 3 || (unreliable && rng.random_bool(0.3)) {
                let i = rng.random_range(0..5);
                if unreliable {
                    s.connect(i);
                } else if !s.is_up(i) {
                    s.restart(i)?;
                }
                down = (0..5).filter(|&i| !s.is_up(i)).count();
                if unreliable {
                    down = down.saturating_sub(1);
                }
            }
        }
        s.heal_and_check(PROGRESS_BOUND_MS)
    })();
    with_trace(&s, r)
}

/// Churn: clients keep writing and reading while nodes crash, restart, disconnect and reconnect.
pub fn churn(seed: u64, tweak: fn(&mut Config)) -> Result<(), Violation> {
    let mut faults = FaultMix::chaos();
    faults.pauses = false;
    faults.nemesis_interval_ms = 80;
    let mut s = sim(seed, 5, faults, tweak);
    let r = (|| {
        s.start_clients(4);
        s.set_nemesis(true);
        s.run_for(4000)?;
        s.heal_and_check(PROGRESS_BOUND_MS)
    })();
    with_trace(&s, r)
}

/// Snapshots every 10 entries, so a follower that was away for 60 must be brought back by
/// InstallSnapshot (several chunks), while the cluster keeps committing (fault-matrix row C7
/// of docs/FAULTS.md).
pub fn snapshot_install_lagging_follower(
    seed: u64,
    faults: FaultMix,
    crash_during: bool,
    tweak: fn(&mut Config),
) -> Result<(), Violation> {
    let mut s = sim(seed, 3, faults, tweak);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = (|| {
        s.one(cmd(&mut rng), 3, 5000)?;
        let l = s.wait_leader(ELECTION_BOUND_MS)?;
        let f = (l + 1) % 3;
        s.disconnect(f);
        for _ in 0..60 {
            s.one(cmd(&mut rng), 2, 5000)?;
        }
        s.start_clients(2);
        let before = s.sent("InstallSnapshot");
        s.connect(f);
        if crash_during {
            // Crash the follower, then the leader, while chunks are flowing (fault-matrix row C8
            // of docs/FAULTS.md).
            s.run_for(rng.random_range(5..60))?;
            s.crash(f, true);
            s.run_for(rng.random_range(5..100))?;
            s.restart(f)?;
            s.run_for(rng.random_range(5..60))?;
            if let Some(l) = s.leader() {
                s.crash(l, true);
                s.run_for(rng.random_range(5..200))?;
                s.restart(l)?;
            }
        }
        let last = s.one(cmd(&mut rng), 3, 8000)?;
        if s.sent("InstallSnapshot") == before {
            return fail(
                "the lagging follower caught up without a snapshot: the scenario did not test InstallSnapshot",
            );
        }
        s.heal_and_check(PROGRESS_BOUND_MS)?;
        if s.n_committed(last).0 != 3 {
            return fail("the follower did not catch up");
        }
        Ok(())
    })();
    with_trace(&s, r)
}

pub fn snapshot_tweak(c: &mut Config) {
    c.snapshot_entries = 10;
    c.compaction_retain_entries = 2;
}

/// Every node takes snapshots; then all lose power at once and restart from snapshot plus log
/// tail; nothing acknowledged is lost.
pub fn all_nodes_crash_after_snapshots(seed: u64, tweak: fn(&mut Config)) -> Result<(), Violation> {
    let mut s = sim(seed, 3, FaultMix::crashes(), tweak);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = (|| {
        s.start_clients(3);
        for _ in 0..3 {
            for _ in 0..15 {
                s.one(cmd(&mut rng), 3, 5000)?;
            }
            s.run_for(rng.random_range(0..50))?;
            for i in 0..3 {
                s.crash(i, true);
            }
            s.run_for(rng.random_range(0..300))?;
            for i in 0..3 {
                s.restart(i)?;
            }
        }
        let snapshots = (0..3)
            .filter(|&i| {
                s.raft(i)
                    .is_some_and(|r| r.status().snapshot_index > Index::ZERO)
            })
            .count();
        if snapshots == 0 {
            return fail(
                "no node took a snapshot: the scenario did not test restart from a snapshot",
            );
        }
        s.heal_and_check(PROGRESS_BOUND_MS)
    })();
    with_trace(&s, r)
}

/// The leader is paused (SIGSTOP) past the election timeout while clients continue; a new
/// leader commits writes; clients that still believe in the old leader read from it when it
/// resumes. No read may be stale (fault-matrix row C2 of docs/FAULTS.md).
pub fn leader_pause_no_stale_reads(seed: u64, tweak: fn(&mut Config)) -> Result<(), Violation> {
    let mut faults = FaultMix::none();
    faults.delay_jitter_ms = 3;
    let mut s = sim(seed, 5, faults, tweak);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = (|| {
        s.start_clients(3);
        let old = s.wait_leader(ELECTION_BOUND_MS)?;
        s.run_for(rng.random_range(50..300))?;
        let pause_ms = 1200;
        s.pause(old, pause_ms);
        let paused_at = s.now_ms();
        // Wait for another leader and some writes through it.
        s.run_for(600)?;
        for _ in 0..3 {
            s.one(cmd(&mut rng), 4, 3000)?;
        }
        // Clients that still believe in the old leader read from it; their requests queue up.
        let remaining = (paused_at + pause_ms)
            .saturating_sub(s.now_ms())
            .max(TICK_MS);
        s.run_for(remaining.saturating_sub(30))?;
        for k in 0..4 {
            s.read_from(old, k);
        }
        s.run_for(300)?;
        s.heal_and_check(PROGRESS_BOUND_MS)
    })();
    with_trace(&s, r)
}

/// The bridge topology: one node sees both halves, which cannot see each other. With PreVote
/// and CheckQuorum the cluster keeps one leader and terms stay put; returns how far the term
/// moved.
pub fn bridge_partition_terms(seed: u64, tweak: fn(&mut Config)) -> Result<u64, Violation> {
    let mut s = sim(seed, 5, FaultMix::none(), tweak);
    let r = (|| {
        s.start_clients(2);
        let l = s.wait_leader(ELECTION_BOUND_MS)?;
        let bridge = (l + 1) % 5;
        let left = [l, (l + 2) % 5];
        let right = [(l + 3) % 5, (l + 4) % 5];
        let term0 = s.max_term();
        s.bridge(bridge, &left, &right);
        s.run_for(3000)?;
        let moved = s.max_term().0 - term0.0;
        s.heal_and_check(PROGRESS_BOUND_MS)?;
        Ok(moved)
    })();
    with_trace(&s, r)
}

/// Leadership transfer (TimeoutNow) to a chosen follower, as for a planned restart.
pub fn leadership_transfer(seed: u64, tweak: fn(&mut Config)) -> Result<(), Violation> {
    let mut s = sim(seed, 3, FaultMix::none(), tweak);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = (|| {
        s.start_clients(2);
        s.one(cmd(&mut rng), 3, 3000)?;
        let l = s.wait_leader(ELECTION_BOUND_MS)?;
        let target = (l + 1 + rng.random_range(0..2)) % 3;
        s.transfer_leadership(l, target)?;
        let deadline = s.now_ms() + 1000;
        while s.now_ms() < deadline && s.leader() != Some(target) {
            s.run_for(TICK_MS)?;
        }
        if s.leader() != Some(target) {
            return fail(format!("leadership did not move to node {}", target + 1));
        }
        s.heal_and_check(PROGRESS_BOUND_MS)
    })();
    with_trace(&s, r)
}

/// A random run under `faults`: clients plus the nemesis, then heal and check.
pub fn random(
    seed: u64,
    faults: FaultMix,
    nodes: usize,
    fault_ms: u64,
    tweak: fn(&mut Config),
) -> Result<(), Violation> {
    let mut o = SimOptions::new(seed, nodes, faults);
    o.tweak = tweak;
    super::random_run(o, fault_ms).map(|_| ())
}

/// Elections while nodes keep losing power: every few tens of milliseconds a random node is
/// power-cut and restarted, with slow disks, so crashes land between a vote and its sync. The
/// per-step checks (one leader per term) catch a vote that was sent before it was durable.
pub fn elections_under_power_cuts(seed: u64, tweak: fn(&mut Config)) -> Result<(), Violation> {
    let mut faults = FaultMix::crashes();
    faults.disk_latency_ms_max = 20;
    faults.delay_jitter_ms = 10;
    faults.crash_after_vote_prob = 0.3;
    let mut s = sim(seed, 3, faults, tweak);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = (|| {
        s.start_clients(2);
        let end = s.now_ms() + 4000;
        while s.now_ms() < end {
            s.run_for(rng.random_range(5..60))?;
            let i = rng.random_range(0..3);
            s.crash(i, true);
            s.run_for(rng.random_range(0..30))?;
            s.restart(i)?;
        }
        s.heal_and_check(PROGRESS_BOUND_MS)
    })();
    with_trace(&s, r)
}
