//! Baselines measured in the same run as the cluster figures, so results read as ratios to what
//! the machine can do at all: a raw fdatasync, a raw pipe round trip, raw memcpy.

use crate::bench::wal::{baseline_fdatasync, baseline_memcpy_gb_per_s};
use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

/// The machine's floor figures.
#[derive(Clone, Debug, Serialize)]
pub struct Baselines {
    /// `pwrite(size) + fdatasync` on a preallocated file in the benchmark's directory, with a
    /// spinning thread keeping another CPU busy, as the nodes keep the CPUs busy during a run.
    /// (On some virtual machines an idle CPU's wake-up adds milliseconds to every I/O wait;
    /// the idle figure is `fdatasync_idle_us_p50`.) Targets are judged against this one.
    pub fdatasync_us_p50: f64,
    pub fdatasync_us_p99: f64,
    /// The same loop on an otherwise idle machine.
    pub fdatasync_idle_us_p50: f64,
    /// One byte there and back between two threads over two pipes (write, read on each side).
    pub pipe_rtt_us_p50: f64,
    pub pipe_rtt_us_p99: f64,
    /// memcpy of `size`-byte chunks into a pre-faulted mapping.
    pub memcpy_gb_per_s: f64,
}

/// Measures all three; `dir` must be on the file system the nodes write to.
pub fn measure(dir: &Path, size: u64) -> anyhow::Result<Baselines> {
    let idle = baseline_fdatasync(dir, size, 1000)?;
    let fd = fdatasync_busy(dir, size, 2000)?;
    let (pipe_p50, pipe_p99) = pipe_round_trip_us(20_000)?;
    let memcpy = baseline_memcpy_gb_per_s(size)?;
    Ok(Baselines {
        fdatasync_us_p50: fd.p50_us,
        fdatasync_us_p99: fd.p99_us,
        fdatasync_idle_us_p50: idle.p50_us,
        pipe_rtt_us_p50: pipe_p50,
        pipe_rtt_us_p99: pipe_p99,
        memcpy_gb_per_s: memcpy,
    })
}

/// The raw fdatasync loop while a spinning thread keeps another CPU out of its idle state.
pub fn fdatasync_busy(
    dir: &Path,
    size: u64,
    iterations: u64,
) -> anyhow::Result<crate::bench::wal::FdatasyncBaseline> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let spinner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        })
    };
    let r = baseline_fdatasync(dir, size, iterations);
    stop.store(true, Ordering::Relaxed);
    let _ = spinner.join();
    r
}

/// p50 and p99 of `n` one-byte round trips through a pair of pipes and an echo thread: the
/// cost of the wake-ups a parked process pays (ipc rule 5 of docs/RULES.md parks on a FIFO).
pub fn pipe_round_trip_us(n: u64) -> anyhow::Result<(f64, f64)> {
    let (to_echo_r, to_echo_w) = nix::unistd::pipe().context("creating a pipe")?;
    let (from_echo_r, from_echo_w) = nix::unistd::pipe().context("creating a pipe")?;
    let mut to_echo_w = std::fs::File::from(to_echo_w);
    let mut from_echo_r = std::fs::File::from(from_echo_r);
    let echo = std::thread::spawn(move || {
        let mut r = std::fs::File::from(to_echo_r);
        let mut w = std::fs::File::from(from_echo_w);
        let mut b = [0u8; 1];
        // Ends when the other side closes its write end (read returns 0).
        while let Ok(1) = r.read(&mut b) {
            if w.write_all(&b).is_err() {
                break;
            }
        }
    });
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut b = [7u8; 1];
    for _ in 0..n {
        let t = Instant::now();
        to_echo_w.write_all(&b).context("pipe write")?;
        from_echo_r.read_exact(&mut b).context("pipe read")?;
        h.saturating_record((t.elapsed().as_nanos() as u64).max(1));
    }
    drop(to_echo_w);
    let _ = echo.join();
    Ok((
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
    ))
}
