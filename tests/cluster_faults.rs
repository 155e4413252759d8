//! Fault-matrix rows C1-C3, C5-C8 and C10 of docs/FAULTS.md against real node processes (C4 is
//! covered in the simulator and the ipc tests, C9 in ipc's multi-process tests; sized for CI:
//! seconds each). Every wait is on a condition with a deadline; every cluster is torn down when its handle
//! drops.

mod cluster_support;

use cluster_support::{TestCluster, wait_until};
use shmraft_consensus::node::client::ClientError;
use std::time::Duration;

const T: Duration = Duration::from_secs(15);

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

/// C1: the leader is killed in the middle of a stream of writes; every acknowledged write is
/// readable afterwards and the cluster converges.
#[test]
fn c1_leader_killed_during_writes_loses_no_acknowledged_write() {
    let c = TestCluster::start(3, "always", &["--restart"]);
    let mut client = c.client();
    let mut acked = Vec::new();
    for i in 0..300u32 {
        if i == 100 {
            let l = c.leader().expect("a leader");
            c.nemesis(&["kill", "--node", &l.to_string()]);
        }
        match client.put(&key(i), format!("v{i}").as_bytes(), T) {
            Ok(()) => acked.push(i),
            Err(ClientError::Unknown(_)) => {}
            Err(e) => panic!("write {i}: {e}"),
        }
    }
    assert!(
        acked.len() >= 290,
        "only {} writes acknowledged",
        acked.len()
    );
    for &i in &acked {
        assert_eq!(client.get(&key(i), T).unwrap(), format!("v{i}").as_bytes());
    }
    c.wait_converged(Duration::from_secs(30));
}

/// C1 / S15: every node loses power at once under `always`; after the restart every
/// acknowledged write is still there.
#[test]
fn c1_all_nodes_power_cut_under_always_loses_no_acknowledged_write() {
    let c = TestCluster::start(3, "always", &[]);
    let mut client = c.client();
    for i in 0..200u32 {
        client.put(&key(i), format!("v{i}").as_bytes(), T).unwrap();
    }
    for id in 1..=3 {
        c.nemesis(&[
            "powercut",
            "--node",
            &id.to_string(),
            "--seed",
            &(id * 7).to_string(),
        ]);
    }
    for id in 1..=3 {
        c.nemesis(&["restart", "--node", &id.to_string()]);
    }
    wait_until("a leader after the power cut", T, || c.leader().is_some());
    let mut client = c.client();
    for i in 0..200u32 {
        assert_eq!(
            client.get(&key(i), T).unwrap(),
            format!("v{i}").as_bytes(),
            "acknowledged write {i} lost"
        );
    }
}

/// C2: a paused leader is deposed; after it resumes it serves no stale read.
#[test]
fn c2_paused_leader_steps_down_and_serves_no_stale_read() {
    let c = TestCluster::start(3, "batch", &[]);
    let mut client = c.client();
    client.put(b"x", b"old", T).unwrap();
    let old = c.leader().unwrap();
    c.nemesis(&["pause", "--node", &old.to_string()]);
    wait_until("a new leader", T, || c.leader().is_some_and(|l| l != old));
    client.put(b"x", b"new", T).unwrap();
    c.nemesis(&["resume", "--node", &old.to_string()]);
    // Ask the old leader only, right away: it must not answer from its stale state.
    let mut pinned = c.client_pinned(old);
    match pinned.get(b"x", Duration::from_secs(3)) {
        Ok(v) => assert_eq!(v, b"new", "stale read from a deposed leader"),
        Err(ClientError::Timeout(_)) => {} // it knows it is not the leader: correct
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// C3: an isolated leader's minority commits nothing; the majority elects a leader and makes
/// progress; after healing everyone converges.
#[test]
fn c3_isolated_leader_commits_nothing_and_majority_progresses() {
    let c = TestCluster::start(3, "batch", &[]);
    let mut client = c.client();
    client.put(b"a", b"1", T).unwrap();
    let old = c.leader().unwrap();
    c.nemesis(&["isolate", &old.to_string()]);
    // CheckQuorum: cut off from the majority, the old leader steps down. Once its (periodically
    // written) status says so, the partition is in force and its commit index is final.
    wait_until("the isolated leader to step down", T, || {
        c.node_status(old)["role"] != "leader"
    });
    let commit_before = c.node_status(old)["commit_index"].as_u64().unwrap();
    for i in 0..50u32 {
        client.put(&key(i), b"during", T).unwrap();
    }
    assert_ne!(
        c.leader(),
        Some(old),
        "the isolated node still leads the cluster"
    );
    assert_eq!(
        c.node_status(old)["commit_index"].as_u64().unwrap(),
        commit_before,
        "the isolated minority committed entries"
    );
    c.nemesis(&["heal"]);
    c.wait_converged(Duration::from_secs(30));
    assert_eq!(client.get(&key(49), T).unwrap(), b"during");
}

/// C3: a one-way link (leader's messages to one follower dropped) does not stop progress.
#[test]
fn c3_one_way_link_keeps_safety_and_progress() {
    let c = TestCluster::start(3, "never", &[]);
    let mut client = c.client();
    let l = c.leader().unwrap();
    let f = (1..=3).find(|&i| i != l).unwrap();
    c.nemesis(&["oneway", &format!("{l}->{f}")]);
    for i in 0..50u32 {
        client.put(&key(i), b"v", T).unwrap();
    }
    c.nemesis(&["heal"]);
    c.wait_converged(Duration::from_secs(30));
}

/// C5: a node whose data directory was wiped refuses to start instead of voting afresh.
#[test]
fn c5_node_with_wiped_data_directory_refuses_to_start() {
    let c = TestCluster::start(3, "always", &[]);
    let mut client = c.client();
    client.put(b"a", b"1", T).unwrap();
    let victim = (1..=3).find(|&i| Some(i) != c.leader()).unwrap();
    c.nemesis(&["kill", "--node", &victim.to_string()]);
    wait_until("the victim to die", T, || {
        c.node_status(victim)["alive"] == false
    });
    std::fs::remove_dir_all(c.data_dir(victim)).unwrap();
    let out = c.shmraft(&[
        "node",
        "--dir",
        c.path().to_str().unwrap(),
        "--id",
        &victim.to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("refusing to start") && msg.contains("vote"),
        "{msg}"
    );
    // The other two keep serving.
    client.put(b"b", b"2", T).unwrap();
}

/// C6: `shmraft kv` exit codes, and a retried write applied exactly once.
#[test]
fn c6_kv_command_exit_codes_and_exactly_once_retry() {
    let c = TestCluster::start(3, "batch", &[]);
    let d = c.path().to_str().unwrap().to_string();
    let kv = |args: &[&str]| {
        let mut v = vec!["kv", "--dir", d.as_str()];
        v.extend_from_slice(args);
        c.shmraft(&v)
    };
    assert_eq!(kv(&["put", "k", "v1"]).status.code(), Some(0));
    assert_eq!(kv(&["append", "k", "+"]).status.code(), Some(0));
    let out = kv(&["get", "k"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"v1+\n");
    assert_eq!(kv(&["get", "missing"]).stdout, b"\n");
    assert_eq!(kv(&["delete", "k"]).status.code(), Some(0));
    assert_eq!(kv(&["get", "k"]).stdout, b"\n");
    let bad = c.shmraft(&["kv", "--dir", "/nonexistent-shmraft", "get", "k"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cluster.json"));
    // Exactly once: the same session and sequence number sent again gets the first result.
    let mut client = c.client();
    client.append(b"once", b"a", T).unwrap();
    let (id, seq) = (client.client().client_id(), client.client().next_seq());
    let cmd = shmraft_consensus::KvCommand::Append {
        key: b"once".to_vec(),
        value: b"b".to_vec(),
    }
    .encode()
    .unwrap();
    client.client().write(&cmd, T).unwrap();
    let mut retry =
        shmraft_consensus::node::client::Client::resume(c.client_config(), id, seq).unwrap();
    retry.write(&cmd, T).unwrap();
    assert_eq!(client.get(b"once", T).unwrap(), b"ab");
    // Every node paused: the write reaches no node, so nothing was applied (exit status 2),
    // and the message says no node answered.
    for id in 1..=3 {
        c.nemesis(&["pause", "--node", &id.to_string()]);
    }
    let out = kv(&["put", "k", "v", "--timeout-ms", "300"]);
    for id in 1..=3 {
        c.nemesis(&["resume", "--node", &id.to_string()]);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no node answered at"), "{stderr}");
    // Unknown outcome: the followers paused, the leader takes the write but cannot commit it
    // in time: exit status 3 (whichever node the client tries first).
    wait_until("a leader after the pause", T, || c.leader().is_some());
    let l = c.leader().unwrap();
    let followers: Vec<u64> = (1..=3).filter(|&i| i != l).collect();
    for id in &followers {
        c.nemesis(&["pause", "--node", &id.to_string()]);
    }
    // Long enough to get past connection attempts (200 ms each) to paused followers.
    let out = kv(&["put", "k", "v", "--timeout-ms", "1500"]);
    for id in &followers {
        c.nemesis(&["resume", "--node", &id.to_string()]);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("may or may not have been applied"),
        "{stderr}"
    );
}

/// C7: a follower that missed many writes (past compaction) catches up by snapshot while the
/// cluster keeps committing.
#[test]
fn c7_lagging_follower_catches_up_by_snapshot() {
    let c = TestCluster::start(3, "never", &["--snapshot-entries", "100"]);
    let mut client = c.client();
    let l = c.leader().unwrap();
    let f = (1..=3).find(|&i| i != l).unwrap();
    c.nemesis(&["kill", "--node", &f.to_string()]);
    // More than the 1024 entries the leader keeps behind its snapshot, so appends cannot
    // bridge the gap.
    for i in 0..1500u32 {
        client
            .put(&key(i % 50), format!("{i}").as_bytes(), T)
            .unwrap();
    }
    c.nemesis(&["restart", "--node", &f.to_string()]);
    for i in 1500..1600u32 {
        client
            .put(&key(i % 50), format!("{i}").as_bytes(), T)
            .unwrap();
    }
    c.wait_converged(Duration::from_secs(30));
    let s = c.node_status(f);
    assert!(
        s["snapshots_installed"].as_u64().unwrap() >= 1,
        "the follower caught up without a snapshot: {s}"
    );
}

/// C10: garbage written into a ring by a stray process resets the link; no node dies and the
/// cluster keeps committing.
#[test]
fn c10_garbage_in_a_ring_does_not_crash_a_node() {
    let c = TestCluster::start(3, "never", &[]);
    let mut client = c.client();
    client.put(b"a", b"1", T).unwrap();
    let mut rings = 0;
    for e in std::fs::read_dir(c.runtime_dir()).unwrap() {
        let p = e.unwrap().path();
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if !meta.is_file() || meta.len() < 8192 {
            continue;
        }
        // Scribble over the ring's data area and part of its header.
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        let junk: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        f.write_all_at(&junk, 256).unwrap();
        rings += 1;
    }
    assert!(
        rings > 0,
        "no ring files found in {}",
        c.runtime_dir().display()
    );
    for i in 0..100u32 {
        client.put(&key(i), b"after", T).unwrap();
    }
    let s = c.status();
    assert!(s.iter().all(|n| n["alive"] == true), "a node died: {s:?}");
    c.wait_converged(Duration::from_secs(30));
}

/// C8: a follower killed while an InstallSnapshot is landing (its `.partial` snapshot file
/// exists) ends with the complete snapshot or its old state, never a mix: after restarts it
/// converges to the same digest and leaves no partial file behind.
#[test]
fn c8_follower_killed_during_snapshot_install_recovers_cleanly() {
    let c = TestCluster::start(3, "never", &["--snapshot-entries", "100"]);
    let mut client = c.client();
    let l = c.leader().unwrap();
    let f = (1..=3).find(|&i| i != l).unwrap();
    c.nemesis(&["kill", "--node", &f.to_string()]);
    // A large state (about 12 MiB: many snapshot chunks) and more entries than the leader keeps
    // behind its snapshot, so the follower can only catch up by InstallSnapshot.
    let big = vec![b'x'; 32 << 10];
    for i in 0..400u32 {
        client.put(&key(i), &big, T).unwrap();
    }
    for i in 0..1200u32 {
        client.put(b"small", format!("{i}").as_bytes(), T).unwrap();
    }
    let partial_present = || {
        std::fs::read_dir(c.data_dir(f))
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().contains(".partial"))
            })
            .unwrap_or(false)
    };
    let mut caught = 0;
    for _ in 0..5 {
        c.nemesis(&["restart", "--node", &f.to_string()]);
        // Up means recovered: a partial file of the killed incarnation was swept during open,
        // before the node wrote its pid file. A partial seen from now on is a transfer under way.
        wait_until("the follower to be up", T, || {
            c.node_status(f)["alive"] == true
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline && !partial_present() {
            std::thread::yield_now();
        }
        let in_transfer = partial_present();
        c.nemesis(&["kill", "--node", &f.to_string()]);
        wait_until("the follower to die", T, || {
            c.node_status(f)["alive"] == false
        });
        if in_transfer {
            caught += 1;
            if caught == 2 {
                break;
            }
        }
    }
    assert!(
        caught > 0,
        "never caught the follower in the middle of a snapshot install"
    );
    c.nemesis(&["restart", "--node", &f.to_string()]);
    client.put(b"after", b"1", T).unwrap();
    c.wait_converged(Duration::from_secs(60));
    assert!(!partial_present(), "a partial snapshot was left behind");
    let s = c.node_status(f);
    assert!(s["snapshot_index"].as_u64().unwrap() > 0, "{s}");
}
