//! IPC benchmark: shm rings (through `Transport`) versus raw memcpy, a raw pipe round trip and
//! a Unix domain socket, between two real processes (this program re-executes itself).
//!
//!     cargo run --release -p shmraft-ipc --example ipc_bench [-- --quick | --help]
//!
//! Prints a Markdown table for BENCHMARKS.md (`--help` lists the environment knobs). With
//! `IPC_BENCH_PIN=1` the parent is pinned to CPU 0 and the child to CPU 1 (only sensible on an
//! otherwise idle machine: pinned spinners cannot dodge other load). Every measurement is also
//! capped at ~5 s of wall time (latency: plus at most 1 s of warm-up).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shmraft_ipc::{Endpoint, Incoming, OutFrame, Transport, TransportConfig};

const BATCH: usize = 32;

fn pin(cpu: usize) {
    if std::env::var_os("IPC_BENCH_PIN").is_none() {
        return;
    }
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if n < 2 {
        return;
    }
    // SAFETY: cpu_set_t is a plain bitmask for which all-zero is a valid (empty) value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit inside `set`; `cpu % n` is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu % n, &mut set) };
    // SAFETY: pid 0 means this thread; `set` is a valid cpu_set_t of the size we pass.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

/// CPU seconds this process has used (user + system), to normalise for a loaded machine.
fn cpu_secs() -> f64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID).unwrap();
    t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9
}

fn cfg(rt: &Path, spin_us: u32) -> TransportConfig {
    let mut c = TransportConfig::new(rt, 0xBE);
    c.ring_bytes = env_bytes("IPC_BENCH_RING_BYTES").unwrap_or(4 << 20);
    c.spin_us = spin_us;
    c
}

/// A byte count from the environment; exits with a message if it is set but not a number.
fn env_bytes(name: &str) -> Option<usize> {
    let v = std::env::var(name).ok()?;
    match v.parse() {
        Ok(n) => Some(n),
        Err(_) => {
            eprintln!("ipc_bench: {name}={v:?} is not a byte count\n\n{USAGE}");
            std::process::exit(2);
        }
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .arg("child")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn child_line(c: &mut Child) -> String {
    let mut s = String::new();
    BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut s)
        .unwrap();
    s
}

fn wait_up(t: &mut Transport, peer: Endpoint) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut up = false;
    while !up {
        assert!(Instant::now() < deadline, "peer never came up");
        t.wait(Some(Duration::from_millis(5))).unwrap();
        t.recv(|i| up |= matches!(i, Incoming::Event(shmraft_ipc::LinkEvent::Up { peer: p, .. }) if p == peer));
    }
}

// ---- memcpy baseline ----------------------------------------------------------------------

fn memcpy_gbps(size: usize, total: usize) -> f64 {
    let src = vec![1u8; size];
    let mut dst = vec![0u8; size];
    let iters = (total / size).max(1);
    let t = cpu_secs();
    for _ in 0..iters {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    }
    (iters * size) as f64 / (cpu_secs() - t) / 1e9
}

fn memcpy_msgs_per_s(size: usize, n: usize) -> f64 {
    let src = vec![1u8; size];
    let mut ring = vec![0u8; 1 << 20];
    let t = cpu_secs();
    let mut off = 0;
    for _ in 0..n {
        if off + size > ring.len() {
            off = 0;
        }
        ring[off..off + size].copy_from_slice(std::hint::black_box(&src));
        off += size;
    }
    std::hint::black_box(&ring);
    n as f64 / (cpu_secs() - t)
}

// ---- ring throughput ----------------------------------------------------------------------

/// Parent = node 1 = receiver, spinning on recv (never parks). Returns (frames/s, GB/s,
/// syscalls per frame on both sides).
/// Returns (frames/s wall, GB/s wall, syscalls/frame, frames per CPU-second of the busier side).
fn ring_throughput(rt: &Path, size: usize, n: u64) -> (f64, f64, f64, f64) {
    let _ = std::fs::remove_file(rt.join("stop"));
    let mut t = Transport::node(cfg(rt, 50), 1, &[1, 2]).unwrap();
    let mut child = spawn(&[
        "ring_tx",
        rt.to_str().unwrap(),
        &size.to_string(),
        &n.to_string(),
    ]);
    wait_up(&mut t, Endpoint::Node(2));
    while t.send(Endpoint::Node(2), 1, b"go").is_err() {
        t.wait(Some(Duration::from_millis(1))).unwrap();
        t.recv(|_| {});
    }
    let before = t.stats();
    let mut got = 0u64;
    let mut start = None;
    let cpu0 = cpu_secs();
    let cap = Instant::now() + Duration::from_secs(8);
    while got < n && Instant::now() < cap {
        // Returns at once (no syscall) while data is there; spins spin_us, then parks.
        t.wait(Some(Duration::from_millis(100))).unwrap();
        let k = t.recv(|i| {
            if let Incoming::Frame(f) = i {
                std::hint::black_box(f.payload);
            }
        });
        if k > 0 && start.is_none() {
            start = Some(Instant::now());
        }
        got += k as u64;
    }
    let secs = start.unwrap().elapsed().as_secs_f64();
    let my_cpu = cpu_secs() - cpu0;
    let after = t.stats();
    if std::env::var_os("IPC_BENCH_DEBUG").is_some() {
        eprintln!("parent: got {got} in {secs:.3}s stats {after:?}");
    }
    // Tell the sender to stop (it may not have sent all n if we hit the time cap).
    std::fs::write(rt.join("stop"), b"").unwrap();
    let line = child_line(&mut child);
    let mut it = line.split_whitespace();
    let child_syscalls: u64 = it.next().unwrap().parse().unwrap();
    let child_cpu: f64 = it.next().unwrap().parse().unwrap();
    child.wait().unwrap();
    let mine = (after.wake_reads - before.wake_reads)
        + (after.polls - before.polls)
        + (after.wake_writes - before.wake_writes);
    let fps = got as f64 / secs;
    drop(t);
    let per_cpu = got as f64 / my_cpu.max(child_cpu);
    (
        fps,
        fps * size as f64 / 1e9,
        (mine + child_syscalls) as f64 / got as f64,
        per_cpu,
    )
}

fn ring_tx(rt: &Path, size: usize, n: u64) {
    pin(1);
    let mut t = Transport::node(cfg(rt, 50), 2, &[1, 2]).unwrap();
    let payload = vec![0x5a; size];
    let frames: Vec<OutFrame<'_>> = (0..BATCH)
        .map(|_| OutFrame {
            kind: 1,
            payload: &payload,
        })
        .collect();
    // Wait for the receiver's go (it is attached and counting from now on).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut go = false;
    while !go {
        assert!(Instant::now() < deadline);
        t.wait(Some(Duration::from_millis(1))).unwrap();
        t.recv(|i| go |= matches!(i, Incoming::Frame(_)));
    }
    while t.send(Endpoint::Node(1), 0, b"").is_err() {
        assert!(Instant::now() < deadline);
        t.wait(Some(Duration::from_millis(1))).unwrap();
        t.recv(|_| {});
    }
    let mut sent = 1u64;
    let before = t.stats();
    let cpu0 = cpu_secs();
    let stop = rt.join("stop");
    let mut fails = 0u64;
    let mut yields = 0u64;
    let mut full_since: Option<Instant> = None;
    while sent < n {
        let k = BATCH.min((n - sent) as usize);
        if t.send_batch(Endpoint::Node(1), &frames[..k]).is_ok() {
            sent += k as u64;
            full_since = None;
        } else {
            fails += 1;
            if fails % 65536 == 0 && stop.exists() {
                break;
            }
            // Full: spin briefly, then give the CPU away (the receiver may share our core).
            let since = *full_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_micros(20) {
                std::thread::yield_now();
                yields += 1;
            } else {
                std::hint::spin_loop();
            }
        }
    }
    let s = t.stats();
    if std::env::var_os("IPC_BENCH_DEBUG").is_some() {
        eprintln!("child: yields {yields}");
    }
    if std::env::var_os("IPC_BENCH_DEBUG").is_some() {
        eprintln!("child: sent {sent} stats {s:?}");
    }
    println!(
        "{} {}",
        s.wake_writes - before.wake_writes + yields,
        cpu_secs() - cpu0
    );
    let _ = std::io::stdout().flush();
    // Stay alive until the receiver is done (our rings vanish with us).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stop.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---- raw shared-memory ring baseline ------------------------------------------------------

/// Capacity of the raw ring (the transport's default ring size).
const RAW_RING_BYTES: usize = 4 << 20;
const RAW_DATA: usize = 4096;
const RAW_TAIL: usize = 0;
const RAW_HEAD: usize = 128;

/// A mapping of the raw ring file: a minimal single-producer/single-consumer ring with the
/// transport's record sizes (16-byte header, payload rounded up to 16), one index store per
/// batch, and nothing else: no checksum, no validation, no epochs. It is the floor of what a
/// shared-memory ring costs on this machine: the cache-line transfers between the two CPUs.
struct RawRing {
    map: memmap2::MmapRaw,
}

impl RawRing {
    fn open(path: &Path, create: bool) -> Self {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(create)
            .open(path)
            .unwrap();
        if create {
            f.set_len((RAW_DATA + RAW_RING_BYTES) as u64).unwrap();
        }
        let map = memmap2::MmapOptions::new()
            .len(RAW_DATA + RAW_RING_BYTES)
            .populate()
            .map_raw(&f)
            .unwrap();
        Self { map }
    }

    fn index(&self, off: usize) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: `off` is 0 or 128, inside the first page of the mapping, 8-aligned (the
        // mapping is page-aligned); the mapping lives as long as `self`; AtomicU64 tolerates
        // the other process's concurrent atomic accesses.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(self.map.as_mut_ptr().add(off).cast()) }
    }

    fn write(&self, pos: usize, src: &[u8]) {
        assert!(pos + src.len() <= RAW_RING_BYTES);
        // SAFETY: in bounds of the data area (checked above); the range is unpublished, so the
        // reader does not read it concurrently; `src` is private memory.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                self.map.as_mut_ptr().add(RAW_DATA + pos),
                src.len(),
            )
        };
    }

    fn read(&self, pos: usize, dst: &mut [u8]) {
        assert!(pos + dst.len() <= RAW_RING_BYTES);
        // SAFETY: in bounds (checked above); the range is published and not yet released, so
        // the writer does not modify it; `dst` is private memory.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.as_ptr().add(RAW_DATA + pos),
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
    }
}

/// Frames per second (wall) and per CPU-second of the busier side through the raw ring.
fn raw_ring_throughput(dir: &Path, size: usize, n: u64) -> (f64, f64) {
    use std::sync::atomic::Ordering;
    let path = dir.join(format!("raw-ring-{size}"));
    let ring = RawRing::open(&path, true);
    let mut child = spawn(&[
        "raw_tx",
        path.to_str().unwrap(),
        &size.to_string(),
        &n.to_string(),
    ]);
    let rec = 16 + size.div_ceil(16) * 16;
    let mut scratch = vec![0u8; 64 << 10];
    let (mut head, mut got, mut sum) = (0u64, 0u64, 0u64);
    let mut start = None;
    let cpu0 = cpu_secs();
    while got < n {
        let tail = ring.index(RAW_TAIL).load(Ordering::Acquire);
        if tail == head {
            std::hint::spin_loop();
            continue;
        }
        start.get_or_insert_with(Instant::now);
        while head < tail {
            let off = (head as usize) & (RAW_RING_BYTES - 1);
            let len = ((tail - head) as usize)
                .min(RAW_RING_BYTES - off)
                .min(scratch.len());
            ring.read(off, &mut scratch[..len]);
            let mut at = 0;
            while at + 16 <= len {
                let l = u32::from_le_bytes(scratch[at..at + 4].try_into().unwrap());
                if l == u32::MAX {
                    // Pad to the end of the data area.
                    at = RAW_RING_BYTES - off;
                    break;
                }
                if at + rec > len {
                    break;
                }
                sum += u64::from(scratch[at + 16]);
                got += 1;
                at += rec;
            }
            head += at as u64;
            ring.index(RAW_HEAD).store(head, Ordering::Release);
        }
    }
    let secs = start.unwrap().elapsed().as_secs_f64();
    let my_cpu = cpu_secs() - cpu0;
    std::hint::black_box(sum);
    let child_cpu: f64 = child_line(&mut child).trim().parse().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_file(&path);
    (n as f64 / secs, n as f64 / my_cpu.max(child_cpu))
}

fn raw_tx(path: &Path, size: usize, n: u64) {
    use std::sync::atomic::Ordering;
    pin(1);
    let ring = RawRing::open(path, false);
    let rec = 16 + size.div_ceil(16) * 16;
    let mut record = vec![0x5au8; rec];
    record[..4].copy_from_slice(&(size as u32).to_le_bytes());
    let mut pad = [0u8; 16];
    pad[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    let (mut tail, mut head_cache, mut sent) = (0u64, 0u64, 0u64);
    let cpu0 = cpu_secs();
    while sent < n {
        let k = BATCH.min((n - sent) as usize) as u64;
        // Room for the batch plus a pad at the wrap.
        let need = k * rec as u64 + rec as u64;
        while tail + need - head_cache > RAW_RING_BYTES as u64 {
            head_cache = ring.index(RAW_HEAD).load(Ordering::Acquire);
            std::hint::spin_loop();
        }
        for _ in 0..k {
            let off = (tail as usize) & (RAW_RING_BYTES - 1);
            if RAW_RING_BYTES - off < rec {
                ring.write(off, &pad);
                tail += (RAW_RING_BYTES - off) as u64;
            }
            ring.write((tail as usize) & (RAW_RING_BYTES - 1), &record);
            tail += rec as u64;
        }
        ring.index(RAW_TAIL).store(tail, Ordering::Release);
        sent += k;
    }
    println!("{}", cpu_secs() - cpu0);
}

// ---- ring ping-pong -----------------------------------------------------------------------

/// Round trips used to warm up before measuring (fewer if `WARMUP_MAX` passes first).
const WARMUP_ROUNDS: usize = 1000;
const WARMUP_MAX: Duration = Duration::from_secs(1);
/// Each latency measurement stops after this long even with fewer samples than asked.
const MEASURE_MAX: Duration = Duration::from_secs(5);

/// The schedule of a latency loop: warm up for `WARMUP_ROUNDS` round trips or `WARMUP_MAX`,
/// whichever ends first, then take up to `n` samples (one-way = RTT/2) within `MEASURE_MAX`.
/// A time-bounded warm-up matters when pinned spinners share their CPU with other load: a
/// round trip then costs a scheduler time slice, and a count-only warm-up used up the whole
/// time cap, leaving no samples (the `NaN` of earlier pinned runs).
struct Rounds {
    n: usize,
    warm: usize,
    warm_until: Instant,
    measure_until: Option<Instant>,
    samples: Vec<u64>,
}

impl Rounds {
    fn new(n: usize) -> Self {
        Self {
            n,
            warm: 0,
            warm_until: Instant::now() + WARMUP_MAX,
            measure_until: None,
            samples: Vec::with_capacity(n),
        }
    }

    /// Whether to run another round trip (its phase is decided here).
    fn more(&mut self) -> bool {
        let now = Instant::now();
        let until = match self.measure_until {
            Some(u) => u,
            None if self.warm < WARMUP_ROUNDS && now < self.warm_until => return true,
            None => *self.measure_until.insert(now + MEASURE_MAX),
        };
        self.samples.len() < self.n && now < until
    }

    /// Records the round trip that `more` allowed last.
    fn record(&mut self, rtt: Duration) {
        if self.measure_until.is_some() {
            self.samples.push(rtt.as_nanos() as u64 / 2);
        } else {
            self.warm += 1;
        }
    }
}

/// One-way latency samples (RTT/2, ns). `parked`: both sides sleep in `wait` (spin 0).
fn ring_latency(rt: &Path, parked: bool, n: usize) -> Vec<u64> {
    let spin = if parked { 0 } else { 1_000_000 };
    let mut t = Transport::node(cfg(rt, spin), 1, &[1, 2]).unwrap();
    let mut child = spawn(&[
        "ring_echo",
        rt.to_str().unwrap(),
        if parked { "1" } else { "0" },
    ]);
    wait_up(&mut t, Endpoint::Node(2));
    let payload = [7u8; 64];
    let mut rounds = Rounds::new(n);
    while rounds.more() {
        let t0 = Instant::now();
        t.send(Endpoint::Node(2), 1, &payload).unwrap();
        let mut got = false;
        while !got {
            if parked {
                t.wait(None).unwrap();
            }
            t.recv(|i| got |= matches!(i, Incoming::Frame(_)));
        }
        rounds.record(t0.elapsed());
    }
    t.send(Endpoint::Node(2), 0xFFFF, b"").unwrap();
    child.wait().unwrap();
    rounds.samples
}

fn ring_echo(rt: &Path, parked: bool) {
    pin(1);
    let spin = if parked { 0 } else { 1_000_000 };
    let mut t = Transport::node(cfg(rt, spin), 2, &[1, 2]).unwrap();
    let mut quit = false;
    while !quit {
        if parked {
            t.wait(Some(Duration::from_millis(100))).unwrap();
        }
        let mut echo = 0;
        t.recv(|i| {
            if let Incoming::Frame(f) = i {
                if f.kind == 0xFFFF {
                    quit = true;
                } else {
                    echo += 1;
                }
            }
        });
        for _ in 0..echo {
            t.send(Endpoint::Node(1), 1, &[7u8; 64]).unwrap();
        }
    }
}

// ---- raw pipe baseline --------------------------------------------------------------------

fn pipe_latency(dir: &Path, n: usize) -> Vec<u64> {
    let a = dir.join("fifo-a");
    let b = dir.join("fifo-b");
    for p in [&a, &b] {
        nix::unistd::mkfifo(p, nix::sys::stat::Mode::S_IRWXU).unwrap();
    }
    let mut child = spawn(&["pipe_echo", dir.to_str().unwrap()]);
    let mut w = std::fs::OpenOptions::new().write(true).open(&a).unwrap();
    let mut r = std::fs::File::open(&b).unwrap();
    let mut byte = [0u8; 1];
    let mut rounds = Rounds::new(n);
    while rounds.more() {
        let t0 = Instant::now();
        w.write_all(&byte).unwrap();
        r.read_exact(&mut byte).unwrap();
        rounds.record(t0.elapsed());
    }
    drop(w);
    child.wait().unwrap();
    rounds.samples
}

fn pipe_echo(dir: &Path) {
    pin(1);
    let mut r = std::fs::File::open(dir.join("fifo-a")).unwrap();
    let mut w = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("fifo-b"))
        .unwrap();
    let mut byte = [0u8; 1];
    while r.read_exact(&mut byte).is_ok() {
        w.write_all(&byte).unwrap();
    }
}

// ---- Unix domain socket -------------------------------------------------------------------

fn uds_throughput(dir: &Path, size: usize, n: u64) -> (f64, f64, f64, f64) {
    let path = dir.join(format!("uds-{size}"));
    let l = UnixListener::bind(&path).unwrap();
    let mut child = spawn(&[
        "uds_tx",
        path.to_str().unwrap(),
        &size.to_string(),
        &n.to_string(),
    ]);
    let (mut s, _) = l.accept().unwrap();
    let rec = 4 + size;
    let mut buf = vec![0u8; 1 << 20];
    let (mut have, mut got, mut reads) = (0usize, 0u64, 0u64);
    let mut start = None;
    let cpu0 = cpu_secs();
    while got < n {
        let k = s.read(&mut buf[have..]).unwrap();
        assert!(k > 0);
        reads += 1;
        start.get_or_insert_with(Instant::now);
        have += k;
        let mut off = 0;
        while have - off >= rec {
            let len = u32::from_le_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            assert_eq!(len, size);
            std::hint::black_box(&buf[off + 4..off + rec]);
            off += rec;
            got += 1;
        }
        buf.copy_within(off..have, 0);
        have -= off;
    }
    let secs = start.unwrap().elapsed().as_secs_f64();
    let my_cpu = cpu_secs() - cpu0;
    let line = child_line(&mut child);
    let mut it = line.split_whitespace();
    let writes: u64 = it.next().unwrap().parse().unwrap();
    let child_cpu: f64 = it.next().unwrap().parse().unwrap();
    child.wait().unwrap();
    let fps = n as f64 / secs;
    let per_cpu = n as f64 / my_cpu.max(child_cpu);
    (
        fps,
        fps * size as f64 / 1e9,
        (reads + writes) as f64 / n as f64,
        per_cpu,
    )
}

fn uds_tx(path: &Path, size: usize, n: u64) {
    pin(1);
    let mut s = UnixStream::connect(path).unwrap();
    let mut batch = Vec::new();
    for _ in 0..BATCH {
        batch.extend_from_slice(&(size as u32).to_le_bytes());
        batch.extend(std::iter::repeat_n(0x5au8, size));
    }
    let rec = 4 + size;
    let (mut sent, mut writes) = (0u64, 0u64);
    let cpu0 = cpu_secs();
    while sent < n {
        let k = BATCH.min((n - sent) as usize);
        s.write_all(&batch[..k * rec]).unwrap();
        writes += 1;
        sent += k as u64;
    }
    println!("{writes} {}", cpu_secs() - cpu0);
}

fn uds_latency(dir: &Path, n: usize) -> Vec<u64> {
    let path = dir.join("uds-lat");
    let l = UnixListener::bind(&path).unwrap();
    let mut child = spawn(&["uds_echo", path.to_str().unwrap()]);
    let (mut s, _) = l.accept().unwrap();
    let mut msg = [7u8; 68];
    let mut rounds = Rounds::new(n);
    while rounds.more() {
        let t0 = Instant::now();
        s.write_all(&msg).unwrap();
        s.read_exact(&mut msg).unwrap();
        rounds.record(t0.elapsed());
    }
    drop(s);
    child.wait().unwrap();
    rounds.samples
}

fn uds_echo(path: &Path) {
    pin(1);
    let mut s = UnixStream::connect(path).unwrap();
    let mut msg = [0u8; 68];
    while s.read_exact(&mut msg).is_ok() {
        s.write_all(&msg).unwrap();
    }
}

// ---- main ---------------------------------------------------------------------------------

/// Latency percentiles of one measurement (microseconds), or none if it got no samples.
struct Lat {
    p50: Option<f64>,
    p99: Option<f64>,
    samples: usize,
}

impl Lat {
    fn of(mut v: Vec<u64>) -> Self {
        v.sort_unstable();
        let pct = |p: f64| {
            (!v.is_empty()).then(|| v[((v.len() - 1) as f64 * p) as usize] as f64 / 1000.0)
        };
        Self {
            p50: pct(0.5),
            p99: pct(0.99),
            samples: v.len(),
        }
    }

    /// "p50 .. us, p99 .. us" with `prec` decimals, or why there is no figure.
    fn show(&self, prec: usize) -> String {
        match (self.p50, self.p99) {
            (Some(a), Some(b)) => format!("p50 {a:.prec$} us, p99 {b:.prec$} us"),
            _ => format!(
                "n/a: no samples within {} s (the machine is too loaded for this measurement)",
                MEASURE_MAX.as_secs()
            ),
        }
    }

    /// p50 as a ratio to `base`'s p50, formatted, or "n/a".
    fn ratio(&self, base: &Lat, prec: usize) -> String {
        match (self.p50, base.p50) {
            (Some(a), Some(b)) => format!("{:.prec$}x", a / b),
            _ => "n/a".into(),
        }
    }
}

const USAGE: &str = "\
ipc_bench: shared-memory rings (through shmraft_ipc::Transport) versus raw memcpy, a raw pipe
round trip and a Unix domain socket, between two processes (the program re-executes itself).

usage: ipc_bench [--quick]
       ipc_bench --help

options:
  --quick   a tenth of the work (smoke run; figures are noisier)
  --help    print this text

environment:
  IPC_BENCH_PIN=1             pin the two processes to CPUs 0 and 1 (idle machines only)
  IPC_BENCH_RING_ONLY=BYTES   measure only ring throughput with frames of BYTES
  IPC_BENCH_RING_BYTES=BYTES  ring capacity (power of two; default 4194304)
  IPC_BENCH_RING_FRAMES=N     frames sent with IPC_BENCH_RING_ONLY (default 4 GB worth)
  IPC_BENCH_RAW=1             with IPC_BENCH_RING_ONLY: measure the raw ring baseline first
  IPC_BENCH_LATENCY_ONLY=1    measure only the pipe baseline and the parked ring latency,
                              alternated three times
  IPC_BENCH_DEBUG=1           print transport counters of both sides

Prints a Markdown table for BENCHMARKS.md, then the ratios to the baselines.
";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let p = PathBuf::from(&args[3]);
        match args[2].as_str() {
            "ring_tx" => ring_tx(&p, args[4].parse().unwrap(), args[5].parse().unwrap()),
            "ring_echo" => ring_echo(&p, args[4] == "1"),
            "raw_tx" => raw_tx(&p, args[4].parse().unwrap(), args[5].parse().unwrap()),
            "pipe_echo" => pipe_echo(&p),
            "uds_tx" => uds_tx(&p, args[4].parse().unwrap(), args[5].parse().unwrap()),
            "uds_echo" => uds_echo(&p),
            other => panic!("unknown child {other}"),
        }
        return;
    }
    let mut quick = false;
    for a in &args[1..] {
        match a.as_str() {
            "--quick" => quick = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                return;
            }
            other => {
                eprintln!("ipc_bench: unknown argument {other:?}\n\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let scale = if quick { 10 } else { 1 };
    if let Err(e) = cfg(Path::new("/nonexistent"), 0).validate() {
        eprintln!("ipc_bench: {e}\n\n{USAGE}");
        std::process::exit(2);
    }
    pin(0);
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let dir = tempfile::Builder::new()
        .prefix("shmraft-bench-")
        .tempdir_in(base)
        .unwrap();
    let rt = dir.path().join("rt");

    if let Some(size) = env_bytes("IPC_BENCH_RING_ONLY") {
        let max = cfg(&rt, 0).ring_bytes / 4 - shmraft_ipc::FRAME_HEADER_BYTES;
        if size == 0 || size > max {
            eprintln!("ipc_bench: IPC_BENCH_RING_ONLY must be in 1..={max} (a quarter ring)");
            std::process::exit(2);
        }
        let frames = env_bytes("IPC_BENCH_RING_FRAMES")
            .map_or(4_000_000_000 / size as u64, |n| n.max(1) as u64);
        if std::env::var_os("IPC_BENCH_RAW").is_some() {
            let (f, c) = raw_ring_throughput(dir.path(), size, frames);
            println!(
                "raw ring {size} B: {:.2} M frames/s; per CPU-second {:.2} M frames",
                f / 1e6,
                c / 1e6
            );
        }
        let (f, g, sys, c) = ring_throughput(&rt, size, frames);
        println!(
            "ring {size} B: {:.2} M frames/s, {g:.2} GB/s, {sys:.5} syscalls/frame; per CPU-second {:.2} M frames, {:.2} GB",
            f / 1e6,
            c / 1e6,
            c * size as f64 / 1e9
        );
        return;
    }
    if std::env::var_os("IPC_BENCH_LATENCY_ONLY").is_some() {
        // Parked ring latency and its pipe baseline, alternated three times (A/B checks of
        // the park path on a machine whose load drifts).
        let n = 20_000 / scale;
        for _ in 0..3 {
            let pipe = Lat::of(pipe_latency(dir.path(), n));
            let parked = Lat::of(ring_latency(&rt, true, n));
            println!(
                "pipe one-way {}; ring parked {} = {} the pipe",
                pipe.show(2),
                parked.show(2),
                parked.ratio(&pipe, 2)
            );
            for f in ["fifo-a", "fifo-b"] {
                let _ = std::fs::remove_file(dir.path().join(f));
            }
        }
        return;
    }
    let mc64 = memcpy_msgs_per_s(64, 50_000_000 / scale);
    let mc4k_hot = memcpy_gbps(4096, 4 << 30 >> (scale / 10 * 3));
    let mc64m = memcpy_gbps(64 << 20, 2 << 30 >> (scale / 10 * 3));
    println!(
        "| baseline | memcpy 64 B into a 1 MiB buffer, per CPU-second | {:.1} M copies |",
        mc64 / 1e6
    );
    println!("| baseline | memcpy 4 KiB hot, per CPU-second | {mc4k_hot:.1} GB |");
    println!("| baseline | memcpy 64 MiB (DRAM), per CPU-second | {mc64m:.1} GB |");

    // 64 B throughput swings between runs on a VM (where the two vCPUs land decides what a
    // cache-line transfer costs), so: three rounds, each the raw ring then the transport,
    // medians reported and each round's ratio to its own raw-ring figure.
    let n64 = 60_000_000 / scale as u64;
    let mut rounds64 = Vec::new();
    for _ in 0..3 {
        let raw = raw_ring_throughput(dir.path(), 64, n64);
        let ring = ring_throughput(&rt, 64, n64);
        rounds64.push((raw, ring));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{:.1}", x / 1e6))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let raw64: Vec<f64> = rounds64.iter().map(|r| r.0.0).collect();
    let ring64: Vec<f64> = rounds64.iter().map(|r| r.1.0).collect();
    println!(
        "| baseline | raw shared-memory ring, 64 B records, batches of {BATCH} (no checksum, no checks), 3 rounds | median {:.1} M frames/s (rounds {}) |",
        median(raw64.clone()) / 1e6,
        list(&raw64)
    );
    // The other figures (GB/s, per CPU-second, syscalls) are those of the median round.
    let mut by_fps: Vec<_> = rounds64.iter().map(|r| r.1).collect();
    by_fps.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (f64s, g64, sys64, c64) = by_fps[by_fps.len() / 2];
    let ratio64 = median(rounds64.iter().map(|r| r.1.0 / r.0.0).collect());
    println!(
        "| ring | 64 B frames, batches of {BATCH}, receiver awake, 3 rounds | median {:.2} M frames/s (rounds {}), {g64:.2} GB/s; per CPU-second of the busier side {:.2} M frames; {sys64:.5} syscalls/frame; {ratio64:.2}x the raw ring of the same round (median) |",
        f64s / 1e6,
        list(&ring64),
        c64 / 1e6
    );
    let (f4k, g4k, sys4k, c4k) = ring_throughput(&rt, 4096, 4_000_000 / scale as u64);
    println!(
        "| ring | 4 KiB frames, batches of {BATCH}, receiver awake | {:.2} M frames/s, {g4k:.2} GB/s; per CPU-second {:.2} GB; {sys4k:.5} syscalls/frame |",
        f4k / 1e6,
        c4k * 4096.0 / 1e9
    );
    let (u64s, ug64, usys64, uc64) = uds_throughput(dir.path(), 64, 20_000_000 / scale as u64);
    println!(
        "| uds | 64 B frames, {BATCH} per write | {:.2} M frames/s, {ug64:.2} GB/s; per CPU-second {:.2} M frames; {usys64:.4} syscalls/frame |",
        u64s / 1e6,
        uc64 / 1e6
    );
    let (u4k, ug4k, usys4k, uc4k) = uds_throughput(dir.path(), 4096, 2_000_000 / scale as u64);
    println!(
        "| uds | 4 KiB frames, {BATCH} per write | {:.2} M frames/s, {ug4k:.2} GB/s; per CPU-second {:.2} GB; {usys4k:.4} syscalls/frame |",
        u4k / 1e6,
        uc4k * 4096.0 / 1e9
    );

    let n = 200_000 / scale;
    let spin = Lat::of(ring_latency(&rt, false, n));
    println!(
        "| ring | one-way latency, receiver spinning (RTT/2) | {} |",
        spin.show(3)
    );
    let n = 20_000 / scale;
    let pipe = Lat::of(pipe_latency(dir.path(), n));
    println!(
        "| baseline | raw pipe one-way (RTT/2), reader blocked in read | {} |",
        pipe.show(2)
    );
    let parked = Lat::of(ring_latency(&rt, true, n));
    println!(
        "| ring | one-way latency, receiver parked (RTT/2) | {}; {} the raw pipe |",
        parked.show(2),
        parked.ratio(&pipe, 2)
    );
    let uds = Lat::of(uds_latency(dir.path(), n));
    println!(
        "| uds | one-way latency 64 B (RTT/2), reader blocked | {} |",
        uds.show(2)
    );
    println!();
    println!(
        "ratios (per CPU-second): ring 64 B = {:.3}x memcpy-64B copies, {:.2}x UDS; ring 4 KiB = {:.2}x hot 4 KiB memcpy, {:.2}x DRAM memcpy, {:.2}x UDS. Latency: parked = {} pipe half-RTT; spinning = {} pipe half-RTT; UDS = {} pipe half-RTT",
        c64 / mc64,
        c64 / uc64,
        c4k * 4096.0 / 1e9 / mc4k_hot,
        c4k * 4096.0 / 1e9 / mc64m,
        c4k / uc4k,
        parked.ratio(&pipe, 2),
        spin.ratio(&pipe, 3),
        uds.ratio(&pipe, 2)
    );
    println!(
        "latency samples: spinning {}, pipe {}, parked {}, uds {}",
        spin.samples, pipe.samples, parked.samples, uds.samples
    );
    println!(
        "load average during the run: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
