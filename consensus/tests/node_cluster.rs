//! The node driver end to end, in one process: three nodes on threads, each with its own data
//! directory and transport endpoints in one runtime directory, and a client. (Multi-process
//! versions live in the root tests/.)

use shmraft_consensus::kv::client::KvClient;
use shmraft_consensus::node::client::{Client, ClientConfig};
use shmraft_consensus::node::status::read_status_file;
use shmraft_consensus::node::{Node, NodeConfig};
use shmraft_consensus::{KvStateMachine, NodeId};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

struct Running {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<(), String>>,
}

fn config(id: u64, root: &Path, runtime: &Path, policy: &str) -> NodeConfig {
    let mut c = NodeConfig::new(
        NodeId(id),
        vec![NodeId(1), NodeId(2), NodeId(3)],
        root.join(format!("node{id}")),
        runtime,
    );
    c.fsync_policy = policy.parse().unwrap();
    c.segment_bytes = 1 << 20;
    c.ring_bytes = 1 << 18;
    c.election_timeout_ms = (100, 200);
    c.snapshot_entries = 200;
    c.compaction_retain_entries = 10;
    c.status_interval_ms = Some(20);
    c
}

fn start(cfg: NodeConfig) -> Running {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::spawn(move || {
        let node = Node::open(cfg, KvStateMachine::new()).map_err(|e| e.to_string())?;
        node.run(&s).map_err(|e| e.to_string())
    });
    Running { stop, handle }
}

fn stop(r: Running) {
    r.stop.store(true, Ordering::Relaxed);
    r.handle.join().unwrap().unwrap();
}

fn wait_until(what: &str, deadline_s: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(deadline_s);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn leader_of(root: &Path) -> Option<u64> {
    let mut leaders = Vec::new();
    for id in 1..=3 {
        if let Ok(Some(s)) = read_status_file(&root.join(format!("node{id}"))) {
            if s.role == "leader" {
                leaders.push((s.term, id));
            }
        }
    }
    leaders.sort();
    leaders.last().map(|&(_, id)| id)
}

/// A client of the three-node cluster whose runtime directory is `runtime`.
fn client_of_three(runtime: &Path) -> KvClient {
    KvClient::new(ClientConfig::new(
        runtime,
        vec![NodeId(1), NodeId(2), NodeId(3)],
    ))
    .unwrap()
}

fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    let runtime = tmp.path().join("run");
    (tmp, root, runtime)
}

#[test]
fn three_nodes_elect_replicate_read_and_survive_a_leader_stop() {
    let (_tmp, root, runtime) = dirs();
    let mut nodes: Vec<Option<Running>> = (1..=3)
        .map(|id| Some(start(config(id, &root, &runtime, "always"))))
        .collect();
    let mut client = client_of_three(&runtime);
    let t = Duration::from_secs(10);
    for i in 0..300u32 {
        client
            .put(
                format!("k{}", i % 17).as_bytes(),
                format!("v{i}").as_bytes(),
                t,
            )
            .unwrap();
    }
    client.append(b"log", b"a", t).unwrap();
    client.append(b"log", b"b", t).unwrap();
    assert_eq!(client.get(b"log", t).unwrap(), b"ab");
    assert_eq!(client.get(b"k3", t).unwrap(), b"v292");
    assert_eq!(client.get(b"never-written", t).unwrap(), b"");

    // Stop the leader; the others elect a new one and keep serving.
    wait_until("a leader in the status files", 10, || {
        leader_of(&root).is_some()
    });
    let old = leader_of(&root).unwrap();
    stop(nodes[old as usize - 1].take().unwrap());
    for i in 0..50u32 {
        client.put(b"after", format!("{i}").as_bytes(), t).unwrap();
    }
    assert_eq!(client.get(b"after", t).unwrap(), b"49");

    // Restart the old leader: it catches up (by snapshot: 350 entries > 200 per snapshot).
    nodes[old as usize - 1] = Some(start(config(old, &root, &runtime, "always")));
    let target = {
        let st = read_status_file(&root.join(format!("node{}", (old % 3) + 1)))
            .unwrap()
            .unwrap();
        st.applied_index
    };
    wait_until("the restarted node to catch up", 20, || {
        read_status_file(&root.join(format!("node{old}")))
            .ok()
            .flatten()
            .is_some_and(|s| s.applied_index >= target)
    });
    // Equal digests once everyone applied the same prefix.
    client.put(b"final", b"x", t).unwrap();
    let want = client.get(b"final", t).unwrap();
    assert_eq!(want, b"x");
    wait_until("equal digests on all nodes", 20, || {
        let s: Vec<_> = (1..=3)
            .map(|id| {
                read_status_file(&root.join(format!("node{id}")))
                    .unwrap()
                    .unwrap()
            })
            .collect();
        s.iter().all(|x| {
            x.applied_index == s[0].applied_index
                && x.digest_index == x.applied_index
                && x.digest == s[0].digest
        })
    });
    for n in nodes.into_iter().flatten() {
        stop(n);
    }
    // Clean shutdown leaves only what the client itself still holds in the runtime directory.
    drop(client);
}

#[test]
fn a_write_retried_after_a_lost_answer_is_applied_once() {
    let (_tmp, root, runtime) = dirs();
    let nodes: Vec<Running> = (1..=3)
        .map(|id| start(config(id, &root, &runtime, "batch")))
        .collect();
    let mut client = client_of_three(&runtime);
    let t = Duration::from_secs(10);
    client.append(b"x", b"1", t).unwrap();
    // The same session and sequence number again, as a retry after a lost answer would send:
    // the session returns the first result and the append is not applied twice.
    let cmd = shmraft_consensus::KvCommand::Append {
        key: b"x".to_vec(),
        value: b"2".to_vec(),
    }
    .encode()
    .unwrap();
    let (id, seq) = (client.client().client_id(), client.client().next_seq());
    let r1 = client.client().write(&cmd, t).unwrap();
    let mut retry = Client::resume(
        ClientConfig::new(&runtime, vec![NodeId(1), NodeId(2), NodeId(3)]),
        id,
        seq,
    )
    .unwrap();
    let r2 = retry.write(&cmd, t).unwrap();
    assert_eq!(r1, r2, "the retry returns the original result");
    assert_eq!(client.get(b"x", t).unwrap(), b"12");
    for n in nodes {
        stop(n);
    }
}

/// A KV machine whose snapshot job waits at a gate: it shows whether the node's loop keeps going
/// while a snapshot is being written.
struct GatedKv {
    kv: KvStateMachine,
    gate: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    jobs_started: Arc<std::sync::atomic::AtomicU64>,
}

impl shmraft_consensus::StateMachine for GatedKv {
    fn apply(&mut self, index: shmraft_consensus::Index, command: &[u8]) -> Vec<u8> {
        self.kv.apply(index, command)
    }
    fn query(&self, query: &[u8]) -> Vec<u8> {
        self.kv.query(query)
    }
    fn snapshot(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        self.kv.snapshot(out)
    }
    fn snapshot_job(&self) -> Option<shmraft_consensus::SnapshotJob> {
        self.jobs_started.fetch_add(1, Ordering::SeqCst);
        let (kv, gate) = (self.kv.clone(), self.gate.clone());
        Some(Box::new(move |out: &mut dyn std::io::Write| {
            let (open, cv) = &*gate;
            let mut g = open.lock().unwrap();
            while !*g {
                g = cv.wait(g).unwrap();
            }
            kv.snapshot(out)
        }))
    }
    fn restore(&mut self, input: &mut dyn std::io::Read) -> std::io::Result<()> {
        self.kv.restore(input)
    }
    fn digest(&self) -> u64 {
        self.kv.digest()
    }
}

#[test]
fn a_snapshot_being_written_does_not_stall_the_node() {
    let (_tmp, root, runtime) = dirs();
    let mut cfg = config(1, &root, &runtime, "batch");
    cfg.voters = vec![NodeId(1)]; // one node: if its loop stalled, nothing could commit
    cfg.snapshot_entries = 50;
    let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let jobs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop_flag = Arc::new(AtomicBool::new(false));
    let (g, j, s, c) = (gate.clone(), jobs.clone(), stop_flag.clone(), cfg.clone());
    let handle = std::thread::spawn(move || {
        let sm = GatedKv {
            kv: KvStateMachine::new(),
            gate: g,
            jobs_started: j,
        };
        let node = Node::open(c, sm).map_err(|e| e.to_string())?;
        node.run(&s).map_err(|e| e.to_string())
    });
    let mut client = KvClient::new(ClientConfig::new(&runtime, vec![NodeId(1)])).unwrap();
    let t = Duration::from_secs(10);
    for i in 0..60u32 {
        client
            .put(format!("k{i}").as_bytes(), b"before", t)
            .unwrap();
    }
    wait_until("the snapshot job to start", 10, || {
        jobs.load(Ordering::SeqCst) == 1
    });
    // The job is blocked at the gate: the node must still commit, apply and answer.
    for i in 0..200u32 {
        client
            .put(format!("k{i}").as_bytes(), b"during", t)
            .unwrap();
    }
    assert_eq!(client.get(b"k150", t).unwrap(), b"during");
    assert_eq!(jobs.load(Ordering::SeqCst), 1, "a second snapshot started");
    let st = read_status_file(&root.join("node1")).unwrap().unwrap();
    assert_eq!(
        st.snapshot_index, 0,
        "the snapshot finished while its job was blocked"
    );
    // Open the gate: the snapshot (of the state when it was requested) lands.
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    wait_until("the snapshot to land", 10, || {
        read_status_file(&root.join("node1"))
            .ok()
            .flatten()
            .is_some_and(|s| s.snapshot_index >= 50)
    });
    stop_flag.store(true, Ordering::Relaxed);
    handle.join().unwrap().unwrap();
    // A restart restores the snapshot and replays the tail: the latest values are back.
    let node = start(cfg);
    let mut client = KvClient::new(ClientConfig::new(&runtime, vec![NodeId(1)])).unwrap();
    assert_eq!(client.get(b"k10", t).unwrap(), b"during");
    assert_eq!(client.get(b"k55", t).unwrap(), b"during");
    stop(node);
}

/// A heal written within the same modification-time tick as the partition before it (the
/// kernel's mtime clock is coarse) must still be applied: nodes compare contents, not mtimes.
#[test]
fn a_heal_with_the_same_mtime_as_the_partition_is_still_applied() {
    use shmraft_consensus::node::partition::{PartitionMatrix, write_partition_file};
    let (_tmp, root, runtime) = dirs();
    let pfile = root.join("partition.json");
    std::fs::create_dir_all(&root).unwrap();
    let nodes: Vec<Running> = (1..=3)
        .map(|id| {
            let mut c = config(id, &root, &runtime, "never");
            c.partition_file = Some(pfile.clone());
            start(c)
        })
        .collect();
    let mut client = client_of_three(&runtime);
    let t = Duration::from_secs(10);
    client.put(b"a", b"1", t).unwrap();
    let status_of = |id: u64| {
        read_status_file(&root.join(format!("node{id}")))
            .ok()
            .flatten()
    };
    // Isolate a follower (whichever node is not the leader).
    let mut victim = 0;
    wait_until("a node to follow a leader", 10, || {
        victim = (1..=3)
            .find(|&id| status_of(id).is_some_and(|s| s.role == "follower" && s.leader != 0))
            .unwrap_or(0);
        victim != 0
    });
    let others: Vec<u64> = (1..=3).filter(|&id| id != victim).collect();
    // Isolated, it stops hearing the leader and campaigns; then heal with the partition's
    // modification time.
    write_partition_file(&pfile, &PartitionMatrix::split(&[victim], &others)).unwrap();
    let mtime = std::fs::metadata(&pfile).unwrap().modified().unwrap();
    wait_until("the isolated node to campaign", 10, || {
        status_of(victim).is_some_and(|s| s.role != "follower")
    });
    for i in 0..20u32 {
        client.put(format!("k{i}").as_bytes(), b"v", t).unwrap();
    }
    write_partition_file(&pfile, &PartitionMatrix::default()).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&pfile)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(
        std::fs::metadata(&pfile).unwrap().modified().unwrap(),
        mtime
    );
    // The isolated node must catch up: it can only if every node applied the heal.
    client.put(b"final", b"x", t).unwrap();
    wait_until("the isolated node to rejoin and catch up", 20, || {
        let s: Vec<_> = (1..=3)
            .map(|id| {
                read_status_file(&root.join(format!("node{id}")))
                    .unwrap()
                    .unwrap()
            })
            .collect();
        s.iter()
            .all(|x| x.applied_index == s[0].applied_index && x.applied_index > 20)
    });
    for n in nodes {
        stop(n);
    }
}

/// Many writes in flight on one pipelined connection, from several sessions, while the leader
/// stops: every write completes, each exactly once (same-seq retries on the new leader), and
/// each session's appends land in submission order when nothing failed.
#[test]
fn pipelined_writes_from_many_sessions_survive_a_leader_stop_exactly_once() {
    use shmraft_consensus::node::pipeline::PipelinedClient;
    let (_tmp, root, runtime) = dirs();
    let mut nodes: Vec<Option<Running>> = (1..=3)
        .map(|id| Some(start(config(id, &root, &runtime, "batch"))))
        .collect();
    let voters = vec![NodeId(1), NodeId(2), NodeId(3)];
    let mut p = PipelinedClient::new(ClientConfig::new(&runtime, voters)).unwrap();
    let sessions: Vec<_> = (0..4).map(|_| p.open_session()).collect();
    let t = Duration::from_secs(30);
    let append = |s: usize, i: usize| {
        shmraft_consensus::KvCommand::Append {
            key: format!("s{s}").into_bytes(),
            value: format!("<{i}>").into_bytes(),
        }
        .encode()
        .unwrap()
    };
    // Round 1: no faults. Round 2: the leader stops with requests in flight.
    for round in 0..2 {
        for i in 0..40 {
            for (s, &h) in sessions.iter().enumerate() {
                let tag = (round * 1000 + s * 100 + i) as u64;
                p.submit_write(h, &append(s, round * 100 + i), tag, t)
                    .unwrap();
            }
        }
        let mut done = Vec::new();
        let mut stopped = false;
        let deadline = Instant::now() + Duration::from_secs(60);
        while done.len() < 160 {
            assert!(
                Instant::now() < deadline,
                "only {} of 160 completed",
                done.len()
            );
            p.poll(Duration::from_millis(20), &mut done);
            // Right after the batch went out: the stop catches requests in flight.
            if round == 1 && !stopped {
                let mut l = None;
                wait_until("a leader in the status files", 20, || {
                    l = leader_of(&root);
                    l.is_some()
                });
                stop(nodes[l.unwrap() as usize - 1].take().unwrap());
                stopped = true;
            }
        }
        for c in &done {
            assert!(c.outcome.is_ok(), "tag {}: {:?}", c.tag, c.outcome);
        }
        assert_eq!(p.outstanding(), 0);
    }
    let mut reader = client_of_three(&runtime);
    for s in 0..4 {
        let v = String::from_utf8(reader.get(format!("s{s}").as_bytes(), t).unwrap()).unwrap();
        let first: String = (0..40).map(|i| format!("<{i}>")).collect();
        assert!(
            v.starts_with(&first),
            "round 1 of session {s} in order: {v}"
        );
        for i in 100..140 {
            assert_eq!(
                v.matches(&format!("<{i}>")).count(),
                1,
                "session {s} append {i} applied exactly once: {v}"
            );
        }
        assert_eq!(v.matches('<').count(), 80, "{v}");
    }
    for n in nodes.into_iter().flatten() {
        stop(n);
    }
}
