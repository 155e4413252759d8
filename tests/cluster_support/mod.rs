//! A real cluster of `shmraft` node processes for tests: started through `shmraft cluster`,
//! driven by the client library and `shmraft nemesis`, and always torn down (processes killed,
//! runtime files removed) when the handle drops, even if the test failed.
#![allow(dead_code)]

use serde_json::Value;
use shmraft_consensus::NodeId;
use shmraft_consensus::kv::client::KvClient;
use shmraft_consensus::node::client::ClientConfig;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_shmraft");

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    supervisor: Child,
    pub nodes: u64,
}

pub fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl TestCluster {
    /// Starts `nodes` nodes with short election timeouts and waits for a leader.
    pub fn start(nodes: u64, fsync: &str, extra: &[&str]) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("supervisor.log")).unwrap();
        let supervisor = Command::new(BIN)
            .args(["cluster", "--nodes", &nodes.to_string(), "--dir"])
            .arg(dir.path())
            .args(["--fsync", fsync, "--election-timeout-ms", "100-200"])
            .args(["--segment-bytes", "1048576", "--exit-with-parent"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = TestCluster {
            dir,
            supervisor,
            nodes,
        };
        wait_until("a leader", Duration::from_secs(20), || c.leader().is_some());
        wait_until("every node to be up", Duration::from_secs(20), || {
            let s = c.status();
            s.len() == nodes as usize && s.iter().all(|n| n["alive"] == true)
        });
        c
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.path().join(format!("node{id}"))
    }

    pub fn shmraft(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .output()
            .expect("running shmraft")
    }

    /// `shmraft nemesis --dir D ARGS`, which must succeed.
    pub fn nemesis(&self, args: &[&str]) {
        let mut v = vec!["nemesis", "--dir", self.path().to_str().unwrap()];
        v.extend_from_slice(args);
        let out = self.shmraft(&v);
        assert!(
            out.status.success(),
            "nemesis {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Every node's status; empty until the supervisor has written cluster.json.
    pub fn status(&self) -> Vec<Value> {
        let run = || self.shmraft(&["status", "--dir", self.path().to_str().unwrap(), "--json"]);
        let mut out = run();
        if !out.status.success() {
            if !self.path().join("cluster.json").exists() {
                return Vec::new();
            }
            out = run(); // the file appeared meanwhile
            assert!(
                out.status.success(),
                "shmraft status failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["nodes"].as_array().unwrap().clone()
    }

    pub fn node_status(&self, id: u64) -> Value {
        self.status().into_iter().find(|n| n["id"] == id).unwrap()
    }

    /// The live leader of the highest term, if any.
    pub fn leader(&self) -> Option<u64> {
        self.status()
            .iter()
            .filter(|n| n["alive"] == true && n["role"] == "leader")
            .max_by_key(|n| n["term"].as_u64())
            .and_then(|n| n["id"].as_u64())
    }

    pub fn client_config(&self) -> ClientConfig {
        let cf: Value =
            serde_json::from_slice(&std::fs::read(self.path().join("cluster.json")).unwrap())
                .unwrap();
        ClientConfig::new(
            cf["runtime_dir"].as_str().unwrap(),
            (1..=self.nodes).map(NodeId).collect(),
        )
        .with_cluster_id(cf["cluster_id"].as_u64().unwrap())
    }

    pub fn client(&self) -> KvClient {
        KvClient::new(self.client_config()).unwrap()
    }

    /// A client that talks to one node only (no leader redirection).
    pub fn client_pinned(&self, id: u64) -> KvClient {
        let mut cfg = self.client_config();
        cfg.nodes = vec![NodeId(id)];
        KvClient::new(cfg).unwrap()
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.client_config().runtime_dir
    }

    /// Waits until every live node applied the same index with the same digest.
    pub fn wait_converged(&self, within: Duration) {
        wait_until("all nodes to apply the same entries", within, || {
            let s = self.status();
            !s.is_empty()
                && s.iter().all(|n| n["alive"] == true)
                && s.iter().all(|n| {
                    n["applied_index"] == s[0]["applied_index"]
                        && n["digest_index"] == n["applied_index"]
                        && n["digest"] == s[0]["digest"]
                })
        });
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let sup = Pid::from_raw(self.supervisor.id() as i32);
        let _ = kill(sup, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.supervisor.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.supervisor.kill();
        let _ = self.supervisor.wait();
        // Nodes started by `nemesis restart` are not the supervisor's children: kill any left.
        for id in 1..=self.nodes {
            if let Ok(s) = std::fs::read_to_string(self.data_dir(id).join("node.pid")) {
                if let Ok(pid) = s.trim().parse::<i32>() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        // Never panic here: a panic while unwinding from a failed test aborts the whole run.
        let runtime = std::fs::read(self.path().join("cluster.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["runtime_dir"].as_str().map(PathBuf::from));
        if let Some(r) = runtime {
            let _ = shmraft_ipc::sweep(&r);
            let _ = std::fs::remove_dir_all(&r);
        }
    }
}
