//! Single-process ring cost (no scheduling): alternately send a batch and drain it.
//!     cargo run --release -p shmraft-ipc --example ring_inproc [-- SIZE...]
//!
//! Without arguments it measures 64 B and 4 KiB frames; with sizes (bytes), only those (a
//! single size makes a clean `perf record` profile).
use shmraft_ipc::{Endpoint, OutFrame, Transport, TransportConfig};
use std::time::Instant;

/// CPU seconds this process has used (user + system): unlike wall time, not inflated when
/// other processes take the core.
fn cpu_secs() -> f64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID).unwrap();
    t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9
}

fn main() {
    let dir = tempfile::Builder::new()
        .prefix("shmraft-inproc-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let mut c = TransportConfig::new(dir.path().join("rt"), 1);
    c.ring_bytes = 4 << 20;
    let mut a = Transport::node(c.clone(), 1, &[1, 2]).unwrap();
    let mut b = Transport::node(c, 2, &[1, 2]).unwrap();
    while a.send(Endpoint::Node(2), 0, b"").is_err() {
        a.wait(Some(std::time::Duration::from_millis(1))).unwrap();
        a.recv(|_| {});
        b.recv(|_| {});
    }
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse().unwrap_or_else(|_| {
                eprintln!("usage: ring_inproc [SIZE_BYTES...] (bad size {a:?})");
                std::process::exit(2)
            })
        })
        .collect();
    let sizes = if sizes.is_empty() {
        vec![64, 4096]
    } else {
        sizes
    };
    for size in sizes {
        let p = vec![1u8; size];
        let frames: Vec<OutFrame<'_>> = (0..32)
            .map(|_| OutFrame {
                kind: 1,
                payload: &p,
            })
            .collect();
        let n = if size <= 256 { 10_000_000 } else { 1_000_000 };
        let t = Instant::now();
        let cpu0 = cpu_secs();
        let mut got = 0usize;
        let mut sent = 0usize;
        while got < n {
            if sent < n && a.send_batch(Endpoint::Node(2), &frames).is_ok() {
                sent += 32;
            } else {
                got += b.recv(|_| {});
            }
        }
        let s = t.elapsed().as_secs_f64();
        let c = cpu_secs() - cpu0;
        println!(
            "{size} B: {:.1} M frames/s per (send+recv) pair, {:.2} GB/s; per CPU-second {:.1} M frames",
            n as f64 / s / 1e6,
            (n * size) as f64 / s / 1e9,
            n as f64 / c / 1e6
        );
    }
}
