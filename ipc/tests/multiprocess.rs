//! Multi-process tests: real child processes (this test binary re-executed with
//! `SHMRAFT_IPC_ROLE` selecting a role) talk to the test process over real rings and FIFOs.
//! Covers the list and fault-matrix rows C9 and C10 of docs/FAULTS.md (a writer that dies
//! mid-frame, garbage).

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use shmraft_ipc::{
    Endpoint, Incoming, LinkEvent, RING_DATA_OFFSET, SendError, Transport, TransportConfig,
    fifo_file_name, ring_file_name,
};

const ROLE: &str = "SHMRAFT_IPC_ROLE";
const DIR: &str = "SHMRAFT_IPC_DIR";
const ARG: &str = "SHMRAFT_IPC_ARG";
const CLUSTER: u64 = 0xC1;
const QUIT: u16 = 0xFFFF;
const N1: Endpoint = Endpoint::Node(1);
const N2: Endpoint = Endpoint::Node(2);

fn cfg(rt: &Path) -> TransportConfig {
    let mut c = TransportConfig::new(rt, CLUSTER);
    c.ring_bytes = 1 << 14;
    c.maintenance_interval_ms = 5;
    c
}

/// Kills and reaps a child if a test fails before it ends, so no process outlives the test.
struct Kid(Option<Child>);

impl Kid {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.0.as_ref().unwrap().id() as i32)
    }
    fn signal(&self, s: Signal) {
        kill(self.pid(), s).unwrap();
    }
    /// SIGKILL and reap.
    fn kill(mut self) {
        let mut c = self.0.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }
    /// Waits (bounded) for the child to exit and returns its status.
    fn join(mut self) -> std::process::ExitStatus {
        let mut c = self.0.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                c.kill().unwrap();
                panic!("child did not exit: {:?}", c.wait());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    /// Waits until the child stopped itself (SIGSTOP).
    fn wait_stopped(&self) {
        match waitpid(self.pid(), Some(WaitPidFlag::WUNTRACED)).unwrap() {
            WaitStatus::Stopped(_, Signal::SIGSTOP) => {}
            other => panic!("child did not stop: {other:?}"),
        }
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(role: &str, rt: &Path, arg: &str) -> Kid {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_entry_point",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, role)
        .env(DIR, rt)
        .env(ARG, arg)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Kid(Some(child))
}

/// Not a test: the entry point of child processes. Without `SHMRAFT_IPC_ROLE` it does nothing.
#[test]
fn child_process_entry_point() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let rt = PathBuf::from(std::env::var(DIR).unwrap());
    let arg = std::env::var(ARG).unwrap_or_default();
    match role.as_str() {
        "echo_node" => echo_node(&rt, &arg),
        "writer_stop" => writer_stop(&rt, &arg),
        "client" => client(&rt, &arg),
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

/// Node `arg` (default 2) of cluster {1, 2}: echoes every frame to its sender until QUIT.
fn echo_node(rt: &Path, arg: &str) {
    let me: u32 = arg.parse().unwrap_or(2);
    let mut t = Transport::node(cfg(rt), me, &[1, 2]).unwrap();
    let mut queue: std::collections::VecDeque<(Endpoint, u16, Vec<u8>)> = Default::default();
    let parent = std::os::unix::process::parent_id();
    loop {
        if std::os::unix::process::parent_id() != parent {
            return;
        }
        let mut quit = false;
        t.recv(|inc| {
            if let Incoming::Frame(f) = inc {
                if f.kind == QUIT {
                    quit = true;
                } else {
                    queue.push_back((f.from, f.kind, f.payload.to_vec()));
                }
            }
        });
        if quit {
            return;
        }
        while let Some((to, kind, p)) = queue.front() {
            match t.send(*to, *kind, p) {
                Ok(()) | Err(SendError::PeerDown { .. } | SendError::UnknownPeer { .. }) => {
                    queue.pop_front();
                }
                Err(_) => break,
            }
        }
        t.wait(Some(Duration::from_millis(20))).unwrap();
    }
}

/// Node 1: sends frame A, then frame B with the fault hook armed at step `arg`.
fn writer_stop(rt: &Path, arg: &str) {
    let step: u32 = arg.parse().unwrap();
    let mut t = Transport::node(cfg(rt), 1, &[1, 2]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while t.send(N2, 1, b"frame A").is_err() {
        assert!(Instant::now() < deadline);
        t.wait(Some(Duration::from_millis(5))).unwrap();
        t.recv(|_| {});
    }
    shmraft_ipc::FAULT_STOP_AT_STEP.store(step, Ordering::Relaxed);
    let b: Vec<u8> = (0..1000u32).map(|i| (i % 253) as u8 + 1).collect();
    t.send(N2, 2, &b).unwrap();
    if step == 0 {
        // Normal run: stay until the reader acknowledges, then shut down cleanly.
        t.send(N2, 3, b"bye").unwrap();
        let mut acked = false;
        while !acked {
            assert!(Instant::now() < deadline);
            t.wait(Some(Duration::from_millis(5))).unwrap();
            t.recv(|inc| acked |= matches!(inc, Incoming::Frame(f) if f.kind == 9));
        }
    }
}

/// A client: connects to node 1, sends `n` requests with up to 32 outstanding, checks every
/// echo. `crash` as arg: sends a few requests, then dies (SIGKILL) half-way through a frame.
fn client(rt: &Path, arg: &str) {
    let mut t = Transport::client(cfg(rt)).unwrap();
    t.connect(1, Duration::from_secs(20)).unwrap();
    if arg == "crash" {
        for i in 0..5u32 {
            t.send(N1, 1, &i.to_le_bytes()).unwrap();
        }
        shmraft_ipc::FAULT_SIGNAL.store(libc::SIGKILL, Ordering::Relaxed);
        shmraft_ipc::FAULT_STOP_AT_STEP.store(3, Ordering::Relaxed);
        let _ = t.send(N1, 1, &[7u8; 500]);
        unreachable!("the fault hook kills the process");
    }
    let n: u32 = arg.parse().unwrap();
    let (mut sent, mut got) = (0u32, 0u32);
    let deadline = Instant::now() + Duration::from_secs(60);
    while got < n {
        assert!(Instant::now() < deadline, "client stalled at {got}/{n}");
        while sent < n && sent - got < 32 {
            let mut p = vec![0u8; 64 + (sent % 200) as usize];
            p[..4].copy_from_slice(&sent.to_le_bytes());
            if t.send(N1, 5, &p).is_err() {
                break;
            }
            sent += 1;
        }
        t.wait(Some(Duration::from_millis(5))).unwrap();
        t.recv(|inc| {
            if let Incoming::Frame(f) = inc {
                let seq = u32::from_le_bytes(f.payload[..4].try_into().unwrap());
                assert_eq!(seq, got, "echo out of order");
                assert_eq!(f.payload.len(), 64 + (seq % 200) as usize);
                got += 1;
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The test process's side.

struct Node {
    t: Transport,
    frames: Vec<(Endpoint, u16, Vec<u8>)>,
    events: Vec<LinkEvent>,
}

impl Node {
    fn new(rt: &Path, me: u32, peers: &[u32]) -> Self {
        Node {
            t: Transport::node(cfg(rt), me, peers).unwrap(),
            frames: vec![],
            events: vec![],
        }
    }
    fn poll(&mut self) {
        self.t.wait(Some(Duration::from_millis(5))).unwrap();
        let Node { t, frames, events } = self;
        t.recv(|inc| match inc {
            Incoming::Frame(f) => frames.push((f.from, f.kind, f.payload.to_vec())),
            Incoming::Event(e) => events.push(e),
        });
    }
    fn until(&mut self, what: &str, mut cond: impl FnMut(&Node) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.events
            );
            self.poll();
        }
    }
    fn up_epoch(&self, peer: Endpoint) -> Option<u64> {
        self.events.iter().rev().find_map(|e| match e {
            LinkEvent::Up { peer: p, epoch } if *p == peer => Some(*epoch),
            _ => None,
        })
    }
    fn resets(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, LinkEvent::Reset { .. }))
            .count()
    }
}

fn runtime() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let rt = d.path().join("rt");
    (d, rt)
}

fn payload(seq: u32) -> Vec<u8> {
    let len = 4 + (seq as usize * 7919) % 1500;
    let mut p: Vec<u8> = (0..len).map(|i| (i as u32 ^ seq) as u8).collect();
    p[..4].copy_from_slice(&seq.to_le_bytes());
    p
}

#[test]
fn many_frames_both_ways_with_wraparound_and_large_messages() {
    let (_d, rt) = runtime();
    let mut a = Node::new(&rt, 1, &[1, 2]);
    let echo = spawn("echo_node", &rt, "2");
    a.until("peer up", |n| n.up_epoch(N2).is_some());
    // ~11 MB through a 16 KiB ring: hundreds of laps; every 1000th message is 100 KB and
    // fragmented across several ring-fulls.
    let total = 15_000u32;
    let msg = |seq: u32| {
        if seq % 1000 == 999 {
            vec![seq as u8; 100_000]
        } else {
            payload(seq)
        }
    };
    let mut sent = 0;
    while (a.frames.len() as u32) < total {
        while sent < total && sent - (a.frames.len() as u32) < 200 {
            match a.t.send(N2, (sent % 50) as u16, &msg(sent)) {
                Ok(()) => sent += 1,
                Err(SendError::Full { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        a.poll();
    }
    for (seq, (from, kind, p)) in a.frames.iter().enumerate() {
        let seq = seq as u32;
        assert_eq!((*from, *kind), (N2, (seq % 50) as u16));
        assert!(*p == msg(seq), "echo {seq} differs");
    }
    assert_eq!(a.resets(), 0);
    a.t.send(N2, QUIT, b"").unwrap();
    assert!(echo.join().success());
}

#[test]
fn full_ring_is_backpressure_while_the_receiver_is_stopped() {
    let (_d, rt) = runtime();
    let mut a = Node::new(&rt, 1, &[1, 2]);
    let echo = spawn("echo_node", &rt, "2");
    a.until("peer up", |n| n.up_epoch(N2).is_some());
    echo.signal(Signal::SIGSTOP);
    // The signal is asynchronous: wait until the child really stopped (it may have been
    // draining a moment longer).
    echo.wait_stopped();
    let mut accepted = 0u32;
    loop {
        match a.t.send(N2, 1, &payload(accepted)) {
            Ok(()) => accepted += 1,
            Err(SendError::Full { peer }) => {
                assert_eq!(peer, N2);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(accepted > 5);
    for _ in 0..100 {
        // Returns at once, every time: the sender never blocks on a stopped peer.
        assert_eq!(
            a.t.send(N2, 1, &payload(accepted)),
            Err(SendError::Full { peer: N2 })
        );
    }
    echo.signal(Signal::SIGCONT);
    a.until("all echoes", |n| n.frames.len() as u32 == accepted);
    for (i, f) in a.frames.iter().enumerate() {
        assert_eq!(f.2, payload(i as u32), "frame {i} overwritten or reordered");
    }
    a.until("writable", |n| {
        n.events.contains(&LinkEvent::Writable { peer: N2 })
    });
    a.t.send(N2, QUIT, b"").unwrap();
    assert!(echo.join().success());
}

#[test]
fn a_restarted_peer_gets_a_new_epoch_and_the_link_resets() {
    let (_d, rt) = runtime();
    let mut a = Node::new(&rt, 1, &[1, 2]);
    let first = spawn("echo_node", &rt, "2");
    a.until("peer up", |n| n.up_epoch(N2).is_some());
    let epoch1 = a.up_epoch(N2).unwrap();
    a.t.send(N2, 1, b"one").unwrap();
    a.until("echo one", |n| n.frames.len() == 1);
    first.kill();
    a.until("peer down", |n| {
        n.events.contains(&LinkEvent::Down { peer: N2 })
    });
    assert_eq!(
        a.t.send(N2, 1, b"lost"),
        Err(SendError::PeerDown { peer: N2 })
    );
    let second = spawn("echo_node", &rt, "2");
    a.until("peer up again", |n| {
        n.up_epoch(N2).is_some_and(|e| e != epoch1)
    });
    a.t.send(N2, 1, b"two").unwrap();
    a.until("echo two", |n| n.frames.len() == 2);
    assert_eq!(a.frames[1].2, b"two");
    a.t.send(N2, QUIT, b"").unwrap();
    assert!(second.join().success());
    assert_eq!(a.resets(), 0);
}

/// Fault-matrix row C9 of docs/FAULTS.md: the writer is stopped at each step of writing a frame,
/// inspected, killed; the reader never accepts a torn or stale frame, and a restarted writer's
/// frames flow.
#[test]
fn a_writer_killed_at_every_step_of_a_frame_never_yields_a_bad_frame() {
    for step in 1..=6u32 {
        let (_d, rt) = runtime();
        let mut b = Node::new(&rt, 2, &[1, 2]);
        let w = spawn("writer_stop", &rt, &step.to_string());
        w.wait_stopped();
        // The stopped writer left a partly written frame B after its published tail (steps
        // 2..=5): prove the test really exercises one.
        let ring = rt.join(ring_file_name(N1, N2));
        let f = std::fs::File::open(&ring).unwrap();
        let mut tail = [0u8; 8];
        f.read_exact_at(&mut tail, 128).unwrap();
        let tail = u64::from_le_bytes(tail);
        let mut after = [0u8; 32];
        f.read_exact_at(&mut after, RING_DATA_OFFSET as u64 + tail % (1 << 14))
            .unwrap();
        if (2..=5).contains(&step) {
            assert_ne!(
                after, [0u8; 32],
                "step {step}: no partial frame after the tail"
            );
        }
        let want: &[u16] = if step == 6 { &[1, 2] } else { &[1] };
        b.until("published frames", |n| n.frames.len() >= want.len());
        w.kill();
        b.until("writer down", |n| {
            n.events.contains(&LinkEvent::Down { peer: N1 })
        });
        b.poll();
        let kinds: Vec<u16> = b.frames.iter().map(|f| f.1).collect();
        assert_eq!(kinds, want, "step {step}");
        assert_eq!(b.frames[0].2, b"frame A");
        if step == 6 {
            assert_eq!(b.frames[1].2.len(), 1000);
            assert!(
                b.frames[1]
                    .2
                    .iter()
                    .enumerate()
                    .all(|(i, &x)| x == (i % 253) as u8 + 1)
            );
        }
        let epoch1 = b.up_epoch(N1).unwrap();
        let w2 = spawn("writer_stop", &rt, "0");
        b.until("restarted writer's frames", |n| {
            n.frames.iter().any(|f| f.1 == 3)
        });
        assert!(b.up_epoch(N1).unwrap() != epoch1, "step {step}: new epoch");
        let kinds: Vec<u16> = b.frames.iter().map(|f| f.1).collect();
        let mut expect = want.to_vec();
        expect.extend([1, 2, 3]);
        assert_eq!(kinds, expect, "step {step}: only whole frames, each once");
        assert_eq!(b.resets(), 0, "step {step}: no bad frame was even seen");
        b.t.send(N1, 9, b"ack").unwrap();
        assert!(w2.join().success());
    }
}

/// Fault-matrix row C10 of docs/FAULTS.md: a stray process writes garbage into a ring the child
/// reads and into the child's FIFO; the child logs, resets the link and keeps serving.
#[test]
fn garbage_in_a_ring_and_a_fifo_resets_the_link_and_nobody_crashes() {
    let (_d, rt) = runtime();
    let mut a = Node::new(&rt, 1, &[1, 2]);
    let echo = spawn("echo_node", &rt, "2");
    a.until("peer up", |n| n.up_epoch(N2).is_some());
    a.t.send(N2, 1, b"before").unwrap();
    a.until("echo", |n| n.frames.len() == 1);
    // Garbage into the child's FIFO.
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(rt.join(fifo_file_name(N2)))
        .unwrap();
    std::io::Write::write_all(&mut fifo, &[0xEE; 13]).unwrap();
    // Garbage published into the ring the child reads: scribble after the tail, bump the tail.
    let ring = rt.join(ring_file_name(N1, N2));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&ring)
        .unwrap();
    let mut tail = [0u8; 8];
    f.read_exact_at(&mut tail, 128).unwrap();
    let tail = u64::from_le_bytes(tail);
    f.write_all_at(&[0x77; 96], RING_DATA_OFFSET as u64 + tail % (1 << 14))
        .unwrap();
    f.write_all_at(&(tail + 96).to_le_bytes(), 128).unwrap();
    // Keep talking until an echo comes back through the recovered (recreated) link.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0u32;
    while !a.frames.iter().any(|f| f.1 == 2) {
        assert!(
            Instant::now() < deadline,
            "link never recovered: {:?}",
            a.events
        );
        let _ = a.t.send(N2, 2, &n.to_le_bytes());
        n += 1;
        a.poll();
    }
    assert!(
        a.frames.iter().all(|f| f.1 == 1 || f.1 == 2),
        "garbage was delivered"
    );
    a.t.send(N2, QUIT, b"").unwrap();
    let st = echo.join();
    assert!(st.success(), "echo node crashed: {st:?}");
}

#[test]
fn leftovers_of_a_killed_process_are_swept_at_start() {
    let (_d, rt) = runtime();
    let echo = spawn("echo_node", &rt, "2");
    let ring = rt.join(ring_file_name(N2, N1));
    let fifo = rt.join(fifo_file_name(N2));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(ring.exists() && fifo.exists()) {
        assert!(Instant::now() < deadline);
        std::thread::yield_now();
    }
    echo.kill();
    assert!(
        ring.exists() && fifo.exists(),
        "a SIGKILLed process cannot clean up"
    );
    let a = Node::new(&rt, 1, &[1, 2]);
    assert!(!ring.exists(), "dead writer's ring swept");
    assert!(!fifo.exists(), "dead reader's FIFO swept");
    drop(a);
    assert!(!rt.exists());
}

fn assert_private(rt: &Path) {
    let mode = std::fs::metadata(rt).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "runtime directory mode");
    for e in std::fs::read_dir(rt).unwrap() {
        let e = e.unwrap();
        let mode = e.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} mode {mode:o}", e.path().display());
    }
}

#[test]
fn clients_connect_in_numbers_and_a_crashing_client_wedges_nothing() {
    let (_d, rt) = runtime();
    let mut a = Node::new(&rt, 1, &[1]);
    let clients: Vec<Kid> = (0..8).map(|_| spawn("client", &rt, "3000")).collect();
    let crasher = spawn("client", &rt, "crash");
    let mut crasher = Some(crasher);
    let mut crashed: Option<Endpoint> = None;
    let mut crasher_id: Option<Endpoint> = None;
    let mut done = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut kids: Vec<Option<Kid>> = clients.into_iter().map(Some).collect();
    let mut checked_private = false;
    while done.len() < kids.len() || crashed.is_none() {
        assert!(Instant::now() < deadline, "events {:?}", a.events);
        a.poll();
        if !checked_private && a.t.peers().len() >= 4 {
            assert_private(&rt);
            checked_private = true;
        }
        // Echo every request back to its client.
        for (from, kind, p) in std::mem::take(&mut a.frames) {
            if let Endpoint::Client(_) = from {
                if kind == 1 {
                    crasher_id = Some(from);
                    continue; // the crashing client's requests
                }
                let mut tries = 0;
                while let Err(e) = a.t.send(from, kind, &p) {
                    assert!(matches!(e, SendError::Full { .. }), "{e}");
                    a.t.wait(Some(Duration::from_millis(1))).unwrap();
                    tries += 1;
                    assert!(tries < 10_000, "client never drained");
                }
            }
        }
        if let Some(k) = &mut crasher {
            if let Some(st) = k.0.as_mut().unwrap().try_wait().unwrap() {
                assert_eq!(st.signal(), Some(libc::SIGKILL));
                k.0 = None;
                crasher = None;
            }
        }
        if crasher.is_none() && crashed.is_none() {
            // The node learns of the crash by itself (liveness check); the client that died
            // mid-frame is the one whose requests were kind 1.
            crashed = crasher_id.filter(|c| a.events.contains(&LinkEvent::Down { peer: *c }));
        }
        for k in kids.iter_mut() {
            if let Some(kid) = k {
                if let Some(st) = kid.0.as_mut().unwrap().try_wait().unwrap() {
                    assert!(st.success(), "client failed: {st:?}");
                    kid.0 = None;
                    *k = None;
                    done.push(());
                }
            }
        }
    }
    assert!(checked_private);
    let Some(Endpoint::Client(id)) = crashed else {
        panic!()
    };
    // The crashed client's files are gone; the node is healthy and serves a new client.
    let c = Endpoint::Client(id);
    let deadline = Instant::now() + Duration::from_secs(30);
    while rt.join(ring_file_name(c, N1)).exists() || rt.join(fifo_file_name(c)).exists() {
        let files: Vec<_> = std::fs::read_dir(&rt)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            Instant::now() < deadline,
            "crashed {c}: files left {files:?}; events {:?}",
            a.events
        );
        a.poll();
    }
    let mut late = spawn("client", &rt, "100");
    let deadline = Instant::now() + Duration::from_secs(60);
    let st = loop {
        if let Some(st) = late.0.as_mut().unwrap().try_wait().unwrap() {
            late.0 = None;
            break st;
        }
        assert!(Instant::now() < deadline, "late client stalled");
        a.poll();
        for (from, kind, p) in std::mem::take(&mut a.frames) {
            let _ = a.t.send(from, kind, &p);
        }
    };
    assert!(st.success(), "late client failed: {st:?}");
    // Clean shutdown of everything: nothing left behind.
    drop(a);
    assert!(
        !rt.exists(),
        "runtime directory left: {:?}",
        std::fs::read_dir(&rt).map(|d| d.count())
    );
}
