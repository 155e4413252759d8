//! Embedding shmraft under a custom state machine (a counter, not the built-in key-value one)
//! through the facade's root exports only, as the README shows; node processes are this test
//! binary started again with `node <id> <dir>` (so the harness is our own: `harness = false`).
//!
//! Checks: a naive retry after an unknown outcome applies the write once; the typed status
//! reports the counter's own digest; a wrong cluster id and a missing cluster get errors that
//! name the cause.

use shmraft::{
    Client, ClientConfig, ClientError, Index, Node, NodeConfig, NodeId, NodeStatus, StateMachine,
    init_logging,
};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// The replicated counter: `incr` adds one and answers the new value; the query `get` reads it.
#[derive(Default)]
struct Counter {
    value: u64,
}

impl StateMachine for Counter {
    fn apply(&mut self, _index: Index, command: &[u8]) -> Vec<u8> {
        match command {
            b"incr" => {
                self.value += 1;
                self.value.to_string().into_bytes()
            }
            _ => b"error: unknown command".to_vec(),
        }
    }

    fn query(&self, _query: &[u8]) -> Vec<u8> {
        self.value.to_string().into_bytes()
    }

    fn snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&self.value.to_le_bytes())
    }

    fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
        let mut b = [0u8; 8];
        input.read_exact(&mut b)?;
        self.value = u64::from_le_bytes(b);
        Ok(())
    }

    fn digest(&self) -> u64 {
        self.value
    }
}

const NODES: [u64; 3] = [1, 2, 3];
const T: Duration = Duration::from_secs(10);

fn voters() -> Vec<NodeId> {
    NODES.iter().map(|&n| NodeId(n)).collect()
}

fn node_main(id: u64, dir: &Path) {
    init_logging("warn");
    let mut cfg = NodeConfig::new(
        NodeId(id),
        voters(),
        dir.join(format!("n{id}")),
        dir.join("run"),
    );
    // Long elections: the test pauses both followers for a moment, and the leader must keep its
    // leadership (CheckQuorum) through that pause.
    cfg.election_timeout_ms = (3000, 6000);
    cfg.heartbeat_ms = 50;
    cfg.fsync_policy = "batch".parse().expect("policy");
    cfg.exit_with_parent = true;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone()).expect("signal");
    let node = Node::open(cfg, Counter::default()).expect("node opens");
    node.run(&stop).expect("node runs");
}

struct Cluster {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    nodes: Vec<Child>,
}

impl Cluster {
    fn start() -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let exe = std::env::current_exe().expect("own path");
        let nodes = NODES
            .iter()
            .map(|id| {
                Command::new(&exe)
                    .args(["node", &id.to_string()])
                    .arg(&dir)
                    .spawn()
                    .expect("spawn node")
            })
            .collect();
        Cluster {
            _tmp: tmp,
            dir,
            nodes,
        }
    }

    fn config(&self) -> ClientConfig {
        ClientConfig::new(self.dir.join("run"), voters())
    }

    fn signal(&self, id: u64, sig: nix::sys::signal::Signal) {
        let pid = self.nodes[(id - 1) as usize].id() as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("signal node");
    }

    fn statuses(&self, c: &mut Client) -> Vec<NodeStatus> {
        NODES
            .iter()
            .filter_map(|&id| c.status(NodeId(id), Duration::from_millis(500)).ok())
            .collect()
    }

    fn leader(&self, c: &mut Client) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.statuses(c).iter().find(|s| s.role == "leader") {
                return s.id;
            }
            assert!(Instant::now() < deadline, "no leader within 60 s");
            // Elections take seconds here (long timeouts): poll gently.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let pid = nix::unistd::Pid::from_raw(n.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = n.wait();
        }
    }
}

fn read_counter(c: &mut Client) -> u64 {
    let v = c.read(b"get", T).expect("read the counter");
    String::from_utf8_lossy(&v).parse().expect("a number")
}

/// Both followers paused: the leader appends the write but cannot commit it, so the call ends
/// with an unknown outcome. Once they resume the write commits; calling `write` again with the
/// same command (the naive retry) must answer the first result and apply nothing.
fn naive_retry_after_unknown_applies_once(cluster: &Cluster) {
    let mut c = Client::new(cluster.config()).expect("client");
    assert_eq!(c.write(b"incr", T).expect("first write"), b"1");
    let leader = cluster.leader(&mut c);
    let followers: Vec<u64> = NODES.iter().copied().filter(|&n| n != leader).collect();
    for &f in &followers {
        cluster.signal(f, nix::sys::signal::Signal::SIGSTOP);
    }
    let unknown = c.write(b"incr", Duration::from_millis(300));
    for &f in &followers {
        cluster.signal(f, nix::sys::signal::Signal::SIGCONT);
    }
    let Err(ClientError::Unknown(u)) = unknown else {
        panic!("expected an unknown outcome, got {unknown:?}");
    };
    let message = ClientError::Unknown(u.clone()).to_string();
    assert!(
        message.contains("call `write` again with the same command"),
        "{message}"
    );
    // The paused write commits once the followers are back.
    let deadline = Instant::now() + T;
    while read_counter(&mut c) != 2 {
        assert!(
            Instant::now() < deadline,
            "the unknown write never committed"
        );
    }
    let again = c.write(b"incr", T).expect("the retry");
    assert_eq!(
        again, b"2",
        "the retry answers the first application's result"
    );
    assert_eq!(
        read_counter(&mut c),
        2,
        "the retry applied the write a second time"
    );
    // A new write after that is a new increment.
    assert_eq!(c.write(b"incr", T).expect("a new write"), b"3");
}

/// The typed status carries the counter's own digest (its value) next to the digest that also
/// covers the session table.
fn status_reports_the_state_machine_digest(cluster: &Cluster) {
    let mut c = Client::new(cluster.config()).expect("client");
    let value = read_counter(&mut c);
    let deadline = Instant::now() + T;
    loop {
        let s = cluster.statuses(&mut c);
        let agree = s.len() == NODES.len()
            && s.iter().all(|s| {
                s.applied_index == s.digest_index
                    && s.state_machine_digest == format!("{value:016x}")
            });
        if agree {
            assert!(s.iter().all(|s| s.digest != s.state_machine_digest));
            return;
        }
        assert!(Instant::now() < deadline, "statuses: {s:?}");
    }
}

/// A client of another cluster id is told so; a client pointed at a directory where no cluster
/// runs is told that no node answered there, and that nothing was applied.
fn wrong_cluster_id_and_missing_cluster_are_named(cluster: &Cluster) {
    let mut other = Client::new(cluster.config().with_cluster_id(99)).expect("client");
    let e = other.write(b"incr", Duration::from_secs(2)).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
    assert!(
        text.contains("belongs to cluster 1, not cluster 99"),
        "{text}"
    );
    let nowhere = tempfile::tempdir().expect("tempdir");
    let cfg = ClientConfig::new(nowhere.path().join("run"), voters());
    let mut lost = Client::new(cfg).expect("client");
    let e = lost.write(b"incr", Duration::from_millis(500)).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ClientError::NoNode { .. }), "{e:?}");
    assert!(text.contains("no node answered at"), "{text}");
    assert!(text.contains("Nothing was applied"), "{text}");
    let mut c = Client::new(cluster.config()).expect("client");
    assert_eq!(
        read_counter(&mut c),
        3,
        "the refused writes changed nothing"
    );
}

/// One check against the shared cluster.
type ClusterTest = fn(&Cluster);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "node" {
        node_main(args[2].parse().expect("node id"), Path::new(&args[3]));
        return;
    }
    let cluster = Cluster::start();
    let tests: [(&str, ClusterTest); 3] = [
        (
            "naive_retry_after_unknown_applies_once",
            naive_retry_after_unknown_applies_once,
        ),
        (
            "status_reports_the_state_machine_digest",
            status_reports_the_state_machine_digest,
        ),
        (
            "wrong_cluster_id_and_missing_cluster_are_named",
            wrong_cluster_id_and_missing_cluster_are_named,
        ),
    ];
    // In order: each test leaves the counter where the next expects it.
    for (name, test) in tests {
        eprintln!("test {name} ...");
        test(&cluster);
        eprintln!("test {name} ... ok");
    }
    println!("embed_counter: {} passed, 0 failed", tests.len());
}
