//! The in-process load generator: `clients` closed-loop clients (each its own exactly-once
//! session, one request outstanding at a time, the next issued as soon as the previous one
//! completes), multiplexed over `connections` pipelined client connections, one thread each.
//! Many requests are in flight on each connection; each loop turn sends what its clients issued
//! as one batch.

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use shmraft_consensus::kv::KvCommand;
use shmraft_consensus::node::client::{ClientConfig, ClientError};
use shmraft_consensus::node::pipeline::{Completion, PipelinedClient, SessionHandle};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When a run ends.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// After this many measured operations.
    Ops(u64),
    /// After this long of measurement.
    Duration(Duration),
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub clients: u64,
    pub connections: u64,
    /// Bytes of each written value.
    pub value_bytes: usize,
    /// Percentage of operations that are linearizable reads.
    pub reads_pct: u8,
    /// Distinct keys each client writes and reads (bounds the state's size).
    pub keys_per_client: u64,
    /// Operations before measurement starts (connections made, caches warm, leader found).
    pub warmup: Duration,
    pub stop: Stop,
    /// Per-request timeout; a write that times out is an unknown outcome (counted as an error).
    pub request_timeout: Duration,
}

/// What a run measured (completions inside the measurement window only).
#[derive(Debug)]
pub struct LoadResult {
    /// Latency of successful operations, nanoseconds.
    pub latency_ns: Histogram<u64>,
    pub writes: u64,
    pub reads: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub measured: Duration,
    /// CPU time of this process (the load generator) during the window.
    pub cpu: Duration,
}

impl LoadResult {
    fn empty() -> anyhow::Result<LoadResult> {
        Ok(LoadResult {
            latency_ns: Histogram::new_with_bounds(1, 3_600_000_000_000, 3)?,
            writes: 0,
            reads: 0,
            errors: 0,
            first_error: None,
            measured: Duration::ZERO,
            cpu: Duration::ZERO,
        })
    }
}

struct ClientState {
    session: SessionHandle,
    n: u64,
    rng: u64,
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

struct Shared {
    stop: AtomicBool,
    measuring: AtomicBool,
    measured_ops: AtomicU64,
}

/// Runs the load against the cluster behind `cfg`; `progress` is called now and then with the
/// number of measured operations so far and the time measured so far, and `edge(true)` / `edge(false)` right before the
/// measured window opens and right after it closes (to sample the nodes' counters).
pub fn run(
    cfg: &ClientConfig,
    spec: &LoadSpec,
    progress: &dyn Fn(u64, Duration),
    edge: &mut dyn FnMut(bool),
) -> anyhow::Result<LoadResult> {
    if spec.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let connections = spec.connections.clamp(1, spec.clients);
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        measuring: AtomicBool::new(false),
        measured_ops: AtomicU64::new(0),
    });
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            // Clients spread evenly over connections.
            let mine = spec.clients / connections + u64::from(c < spec.clients % connections);
            let (cfg, spec, shared) = (cfg.clone(), spec.clone(), shared.clone());
            std::thread::Builder::new()
                .name(format!("load-{c}"))
                .spawn(move || connection_loop(&cfg, &spec, c, mine, &shared))
                .context("starting a load thread")
        })
        .collect::<anyhow::Result<_>>()?;
    let t0 = Instant::now();
    // Warm-up, then the measured window.
    while t0.elapsed() < spec.warmup
        && !super::interrupted()
        && !threads.iter().any(|t| t.is_finished())
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    edge(true);
    let cpu0 = super::harness::self_cpu();
    let start = Instant::now();
    shared.measuring.store(true, Ordering::SeqCst);
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let done = shared.measured_ops.load(Ordering::Relaxed);
        progress(done, start.elapsed());
        let over = match spec.stop {
            Stop::Ops(n) => done >= n,
            Stop::Duration(d) => start.elapsed() >= d,
        };
        if over || super::interrupted() || threads.iter().any(|t| t.is_finished()) {
            break;
        }
    }
    shared.measuring.store(false, Ordering::SeqCst);
    let measured = start.elapsed();
    let cpu = super::harness::self_cpu().saturating_sub(cpu0);
    edge(false);
    shared.stop.store(true, Ordering::SeqCst);
    let mut total = LoadResult {
        measured,
        cpu,
        ..LoadResult::empty()?
    };
    for t in threads {
        let r = t
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        total.latency_ns.add(&r.latency_ns)?;
        total.writes += r.writes;
        total.reads += r.reads;
        total.errors += r.errors;
        total.first_error = total.first_error.or(r.first_error);
    }
    Ok(total)
}

fn connection_loop(
    cfg: &ClientConfig,
    spec: &LoadSpec,
    conn: u64,
    clients: u64,
    shared: &Shared,
) -> anyhow::Result<LoadResult> {
    let mut p = PipelinedClient::new(cfg.clone()).context("connecting the load generator")?;
    let mut states: Vec<ClientState> = (0..clients)
        .map(|i| ClientState {
            session: p.open_session(),
            n: 0,
            rng: 0x9e37_79b9_7f4a_7c15 ^ ((conn << 32) | i) | 1,
        })
        .collect();
    let mut value = vec![0u8; spec.value_bytes];
    let mut r = LoadResult::empty()?;
    // Tags carry the client index and whether the operation is a read.
    const READ_BIT: u64 = 1 << 63;
    let issue = |p: &mut PipelinedClient,
                 st: &mut ClientState,
                 i: u64,
                 value: &mut Vec<u8>|
     -> Result<(), ClientError> {
        let key = format!("c{conn}-{i}-{}", st.n % spec.keys_per_client.max(1));
        st.n += 1;
        let read = spec.reads_pct > 0 && xorshift(&mut st.rng) % 100 < u64::from(spec.reads_pct);
        if read {
            let q = KvCommand::Get {
                key: key.into_bytes(),
            }
            .encode()
            .map_err(|e| ClientError::Refused(e.to_string()))?;
            p.submit_read(&q, i | READ_BIT, spec.request_timeout);
            Ok(())
        } else {
            // Distinct values, so a lost or misapplied write would be visible to a reader.
            let stamp = st.n.to_le_bytes();
            let k = stamp.len().min(value.len());
            value[..k].copy_from_slice(&stamp[..k]);
            let cmd = KvCommand::Put {
                key: key.into_bytes(),
                value: value.clone(),
            }
            .encode()
            .map_err(|e| ClientError::Refused(e.to_string()))?;
            p.submit_write(st.session, &cmd, i, spec.request_timeout)
        }
    };
    for (i, st) in states.iter_mut().enumerate() {
        issue(&mut p, st, i as u64, &mut value)?;
    }
    let mut done: Vec<Completion> = Vec::with_capacity(clients as usize);
    while !shared.stop.load(Ordering::Relaxed) {
        p.poll(Duration::from_millis(5), &mut done);
        let measuring = shared.measuring.load(Ordering::Relaxed);
        let n = done.len() as u64;
        for c in done.drain(..) {
            let i = c.tag & !READ_BIT;
            if measuring {
                match &c.outcome {
                    Ok(_) => {
                        r.latency_ns
                            .saturating_record((c.latency.as_nanos() as u64).max(1));
                        if c.tag & READ_BIT != 0 {
                            r.reads += 1;
                        } else {
                            r.writes += 1;
                        }
                    }
                    Err(e) => {
                        r.errors += 1;
                        if r.first_error.is_none() {
                            r.first_error = Some(e.to_string());
                        }
                    }
                }
            }
            let st = &mut states[i as usize];
            issue(&mut p, st, i, &mut value)?;
        }
        if measuring {
            shared.measured_ops.fetch_add(n, Ordering::Relaxed);
        }
    }
    Ok(r)
}
