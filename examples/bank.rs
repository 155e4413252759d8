//! Embedding shmraft under your own state machine: a replicated bank ledger running as a
//! 3-process cluster.
//!
//! ```sh
//! cargo run --release --example bank
//! ```
//!
//! The example starts three copies of itself as node processes (`bank node <id> <dir>`), opens
//! accounts, runs transfers from several clients, kills one node in the middle, and checks that
//! money is conserved, that every balance equals the client's own model of the ledger (so a
//! transfer applied twice would show), and that every node agrees. Everything a user needs is
//! here: a `StateMachine` implementation with its own command encoding, `NodeConfig` +
//! `Node::open` + `Node::run` in the node process, and `Client::write` / `Client::read` /
//! `Client::status` on the client side, with the safe retry after an unknown outcome.

use shmraft::{
    Client, ClientConfig, ClientError, Index, Node, NodeConfig, NodeId, StateMachine, init_logging,
};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// The ledger: account name -> balance in cents. Deterministic (BTreeMap), so every replica
/// computes the same state and digest.
#[derive(Default)]
struct Bank {
    accounts: BTreeMap<String, i64>,
}

/// Commands, encoded as one text line (simple on purpose; any encoding works).
/// `open NAME CENTS` | `transfer FROM TO CENTS`. Queries: `balance NAME` | `total`.
fn command(words: &[&str]) -> Vec<u8> {
    words.join(" ").into_bytes()
}

impl StateMachine for Bank {
    fn apply(&mut self, _index: Index, cmd: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(cmd);
        let w: Vec<&str> = text.split_whitespace().collect();
        // Never panic on a command: every replica must reach the same state, so a bad command
        // is an error *result*.
        let r: Result<String, String> = match w.as_slice() {
            ["open", name, cents] => match cents.parse::<i64>() {
                Ok(c) if c >= 0 && !self.accounts.contains_key(*name) => {
                    self.accounts.insert(name.to_string(), c);
                    Ok("opened".into())
                }
                _ => Err(format!("cannot open {name}")),
            },
            ["transfer", from, to, cents] => {
                let c = cents.parse::<i64>().unwrap_or(-1);
                let have = self.accounts.get(*from).copied();
                if c <= 0 || !self.accounts.contains_key(*to) || from == to {
                    Err("bad transfer".into())
                } else if have.is_none_or(|h| h < c) {
                    Err(format!("insufficient funds in {from}"))
                } else {
                    *self.accounts.get_mut(*from).expect("checked") -= c;
                    *self.accounts.get_mut(*to).expect("checked") += c;
                    Ok("done".into())
                }
            }
            _ => Err(format!("unknown command {text:?}")),
        };
        match r {
            Ok(s) => format!("ok {s}").into_bytes(),
            Err(e) => format!("error {e}").into_bytes(),
        }
    }

    fn query(&self, q: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(q);
        match text.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["balance", name] => self
                .accounts
                .get(*name)
                .map_or("none".to_string(), |b| b.to_string())
                .into_bytes(),
            ["total"] => self.accounts.values().sum::<i64>().to_string().into_bytes(),
            _ => b"error unknown query".to_vec(),
        }
    }

    fn snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        for (name, cents) in &self.accounts {
            writeln!(out, "{name} {cents}")?;
        }
        Ok(())
    }

    fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
        let mut s = String::new();
        input.read_to_string(&mut s)?;
        let mut accounts = BTreeMap::new();
        for line in s.lines() {
            let (name, cents) = line
                .split_once(' ')
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad snapshot line"))?;
            let cents = cents
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad balance"))?;
            accounts.insert(name.to_string(), cents);
        }
        self.accounts = accounts;
        Ok(())
    }

    fn digest(&self) -> u64 {
        // FNV-1a over the sorted accounts: stable across processes.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (name, cents) in &self.accounts {
            for b in name.bytes().chain(cents.to_le_bytes()) {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
        }
        h
    }
}

const NODES: [u64; 3] = [1, 2, 3];

fn node_config(id: u64, dir: &Path) -> NodeConfig {
    let mut c = NodeConfig::new(
        NodeId(id),
        NODES.iter().map(|&n| NodeId(n)).collect(),
        dir.join(format!("node{id}")),
        dir.join("run"),
    );
    c.fsync_policy = "batch".parse().expect("valid policy");
    c.snapshot_entries = 500;
    // If this example is killed, its node processes stop too.
    c.exit_with_parent = true;
    c
}

/// The node process: open the node over the Bank and run until SIGTERM/SIGINT.
fn run_node(id: u64, dir: &Path) {
    init_logging("warn"); // RUST_LOG=info shows the node's elections and snapshots
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone()).expect("signal");
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone()).expect("signal");
    let node = Node::open(node_config(id, dir), Bank::default()).unwrap_or_else(|e| {
        eprintln!("bank node {id}: {e}");
        std::process::exit(1)
    });
    if let Err(e) = node.run(&stop) {
        eprintln!("bank node {id}: {e}");
        std::process::exit(1);
    }
}

fn spawn(id: u64, dir: &Path) -> Child {
    Command::new(std::env::current_exe().expect("own path"))
        .args(["node", &id.to_string()])
        .arg(dir)
        .spawn()
        .expect("spawn node")
}

/// Writes `cmd`, retrying after an unknown outcome: `write` with the same command on the same
/// client reuses the sequence number, so the transfer is applied at most once.
fn write_settled(client: &mut Client, cmd: &[u8], timeout: Duration) -> Vec<u8> {
    for _ in 0..10 {
        match client.write(cmd, timeout) {
            Ok(r) => return r,
            Err(ClientError::Unknown(u)) => println!("  write {} unknown; retrying it", u.seq),
            Err(e) => panic!("write failed: {e}"),
        }
    }
    panic!("no answer after 10 tries")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "node" {
        run_node(args[2].parse().expect("node id"), Path::new(&args[3]));
        return;
    }
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir: PathBuf = tmp.path().to_path_buf();
    let mut nodes: Vec<Child> = NODES.iter().map(|&id| spawn(id, &dir)).collect();
    let voters: Vec<NodeId> = NODES.iter().map(|&n| NodeId(n)).collect();
    let cfg = ClientConfig::new(dir.join("run"), voters);
    let t = Duration::from_secs(10);
    let mut client = Client::new(cfg.clone()).expect("client");
    // The client's own model of the ledger, updated with every settled result.
    let mut model = Bank::default();
    let names = ["alice", "bob", "carol", "dave"];
    for n in names {
        let cmd = command(&["open", n, "10000"]);
        let r = write_settled(&mut client, &cmd, t);
        assert_eq!(r, model.apply(Index(0), &cmd), "open {n}");
    }
    let start = Instant::now();
    let mut done = 0;
    for i in 0..2000u64 {
        if i == 1000 {
            println!("killing node 1 in the middle of the transfers");
            let _ = nodes[0].kill();
            let _ = nodes[0].wait();
        }
        let from = names[(i % 4) as usize];
        let to = names[((i * 7 + 1) % 4) as usize];
        let cents = ((i * 37) % 500 + 1).to_string();
        let cmd = command(&["transfer", from, to, &cents]);
        let r = write_settled(&mut client, &cmd, Duration::from_secs(2));
        assert_eq!(r, model.apply(Index(0), &cmd), "transfer {i}: {cmd:?}");
        if r.starts_with(b"ok") {
            done += 1;
        }
    }
    println!("{done} transfers in {:.2} s", start.elapsed().as_secs_f64());
    nodes[0] = spawn(1, &dir);
    let total = client.read(b"total", t).expect("total");
    let total: i64 = String::from_utf8_lossy(&total).parse().expect("number");
    println!("total money: {total} cents (opened with {})", 4 * 10000);
    assert_eq!(total, 40000, "money was created or destroyed");
    for n in names {
        let b = client.read(&command(&["balance", n]), t).expect("balance");
        let expected = model.query(&command(&["balance", n]));
        println!("  {n}: {} cents", String::from_utf8_lossy(&b));
        assert_eq!(b, expected, "{n}'s balance differs from the client's model");
    }
    wait_for_equal_digests(&mut client, &format!("{:016x}", model.digest()));
    for mut n in nodes {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(n.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = n.wait();
    }
    println!("ledger replicated across 3 processes; every balance as the client's model says");
}

/// Waits until every node reports the model's state machine digest at its applied index.
fn wait_for_equal_digests(client: &mut Client, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let agree = NODES.iter().all(|&id| {
            client
                .status(NodeId(id), Duration::from_millis(500))
                .is_ok_and(|s| s.digest_index == s.applied_index && s.state_machine_digest == want)
        });
        if agree {
            println!("all nodes report state machine digest {want}, the model's");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nodes did not reach the model's digest"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
