//! `Transport`: one per process. A node's transport holds a link (one ring each way plus the
//! peer's wake-up FIFO) to every configured peer and to every connected client; a client's
//! transport holds links to the nodes it connected to. See ARCHITECTURE.md, `ipc/`.

use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::Endpoint;
use crate::dir::{self, ring_file_name};
use crate::error::{ConnectError, HeaderError, ProtocolError, SendError, SetupError};
use crate::frame::{
    FLAG_FRAGMENT, FLAG_LAST, FRAGMENT_PREFIX_BYTES, FRAME_HEADER_BYTES, Reassembled, Reassembly,
    record_bytes,
};
use crate::ring::{
    AttachError, Expect, READER_BROKEN, RING_HEADER_BYTES, RING_MAX_BYTES, RING_MIN_BYTES,
    RingHeader, RingReader, RingWriter,
};
use crate::wake::{WakeInbox, WakeKind, WakeRecord, WakeSend, WakeTarget};

/// Ends a parked [`Transport::wait`] of the transport it came from ([`Transport::waker`]):
/// writes one `Data` wake-up record, from this process, to its own FIFO. Cheap (one write(2)),
/// `Send + Sync`, cloneable; a wake-up that finds the loop awake only costs a later drain.
#[derive(Clone)]
pub struct Waker {
    target: std::sync::Arc<WakeTarget>,
    me: Endpoint,
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waker").field("of", &self.me).finish()
    }
}

impl Waker {
    /// Wakes the transport's `wait` (now, or at once the next time it parks).
    pub fn wake(&self) {
        let _ = self.target.send(WakeRecord {
            kind: WakeKind::Data,
            sender: self.me,
        });
    }
}

/// Transport settings. All processes of a cluster must agree on `runtime_dir` and `cluster_id`.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Per-cluster runtime directory (mode 0700), e.g. [`crate::default_runtime_dir`].
    pub runtime_dir: PathBuf,
    /// Cluster id carried in every ring header; rings of other clusters are rejected.
    pub cluster_id: u64,
    /// Data bytes of each ring this process creates (power of two, 4 KiB ..= 1 GiB).
    pub ring_bytes: usize,
    /// Largest message (frame payload) accepted, before and after fragmentation; bounds what a
    /// receiver buffers per link for reassembly.
    pub max_message_bytes: usize,
    /// How long `wait` spins on the rings before parking (ipc rule 5 of docs/RULES.md).
    pub spin_us: u32,
    /// Period of liveness checks, re-attach attempts and FIFO draining while busy.
    pub maintenance_interval_ms: u32,
    /// Most clients a node accepts at once.
    pub max_clients: usize,
}

impl TransportConfig {
    /// Defaults: 1 MiB rings, 64 MiB messages, 10 us spin, 50 ms maintenance, 1024 clients.
    pub fn new(runtime_dir: impl Into<PathBuf>, cluster_id: u64) -> Self {
        Self {
            runtime_dir: runtime_dir.into(),
            cluster_id,
            ring_bytes: 1 << 20,
            max_message_bytes: 64 << 20,
            spin_us: 10,
            maintenance_interval_ms: 50,
            max_clients: 1024,
        }
    }

    /// Checks the settings without touching the file system (also done by `Transport::node`
    /// and `Transport::client`), so a command can reject bad flags before it starts anything.
    pub fn validate(&self) -> Result<(), SetupError> {
        if !self.ring_bytes.is_power_of_two()
            || !(RING_MIN_BYTES..=RING_MAX_BYTES).contains(&self.ring_bytes)
        {
            return Err(SetupError::BadConfig(format!(
                "ring_bytes {} must be a power of two in {RING_MIN_BYTES}..={RING_MAX_BYTES}",
                self.ring_bytes
            )));
        }
        if self.max_message_bytes == 0 || self.max_message_bytes > u32::MAX as usize {
            return Err(SetupError::BadConfig(format!(
                "max_message_bytes {} must be in 1..=4 GiB",
                self.max_message_bytes
            )));
        }
        if self.maintenance_interval_ms == 0 {
            return Err(SetupError::BadConfig(
                "maintenance_interval_ms must be > 0".into(),
            ));
        }
        Ok(())
    }
}

/// A frame to send.
#[derive(Debug, Clone, Copy)]
pub struct OutFrame<'a> {
    /// The user's kind tag (opaque to this crate).
    pub kind: u16,
    /// The payload; up to `max_message_bytes`. Larger than a quarter ring is fragmented.
    pub payload: &'a [u8],
}

/// A received, checksum-verified frame. `payload` borrows the transport's private receive
/// buffer (the frame was copied out of shared memory once), valid for the callback's duration.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The sender.
    pub from: Endpoint,
    /// The kind tag it was sent with.
    pub kind: u16,
    /// The payload, reassembled if it was fragmented.
    pub payload: &'a [u8],
}

/// A change in a link's state, delivered in order with the frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// We attached to a ring from `peer` written by its incarnation `epoch`. Delivered at
    /// start-up, when a peer (re)starts, and when a client connects. A new epoch means the peer
    /// restarted: anything in flight to or from its previous incarnation is gone.
    Up {
        /// The peer.
        peer: Endpoint,
        /// Its incarnation.
        epoch: u64,
    },
    /// The peer stopped (crash or clean shutdown). Sends return `PeerDown` until it is back.
    Down {
        /// The peer.
        peer: Endpoint,
    },
    /// A protocol violation on a link (garbage, corruption): data in flight was dropped and
    /// the link resynchronised or recreated. Logged.
    Reset {
        /// The peer.
        peer: Endpoint,
        /// What was wrong.
        reason: ProtocolError,
    },
    /// A ring that returned `Full` has room again.
    Writable {
        /// The peer.
        peer: Endpoint,
    },
    /// A ring claiming to come from `peer` was refused (wrong cluster, bad header, ...).
    Rejected {
        /// Who it claimed to be.
        peer: Endpoint,
        /// Why it was refused.
        reason: HeaderError,
    },
}

/// What `recv` hands to its callback.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// A frame.
    Frame(Frame<'a>),
    /// A link event.
    Event(LinkEvent),
}

/// Counters, for benchmarks and `status` output.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TransportStats {
    /// Frames written to rings (fragments count individually).
    pub frames_sent: u64,
    /// Tail publications (one per accepted batch).
    pub batches_published: u64,
    /// Frames delivered to the caller (a reassembled message counts once).
    pub frames_received: u64,
    /// write(2) calls on peers' wake-up FIFOs.
    pub wake_writes: u64,
    /// read(2) calls on our wake-up FIFO.
    pub wake_reads: u64,
    /// poll(2) calls made while parked.
    pub polls: u64,
    /// Links reset after a protocol violation.
    pub resets: u64,
    /// Rings refused at attach.
    pub rejected: u64,
    /// Frames dropped by `set_blocked`.
    pub dropped_blocked: u64,
}

struct PendingMsg {
    kind: u16,
    data: Vec<u8>,
    sent: usize,
    next_index: u32,
}

struct Link {
    peer: Endpoint,
    /// Static node peers persist across the peer's restarts; dynamic links (clients on a node,
    /// nodes on a client) are removed when the peer goes down.
    dynamic: bool,
    out: Option<RingWriter>,
    inp: Option<RingReader>,
    wake: Option<WakeTarget>,
    reasm: Reassembly,
    /// Remainder of an accepted batch with a large message (bounded: one batch per link).
    pending: VecDeque<PendingMsg>,
    block_send: bool,
    block_recv: bool,
    /// An `Up` event was delivered and no `Down` since.
    up: bool,
    /// The reader found our ring's indices corrupt: ignore it until the writer replaces it.
    broken: bool,
    /// A send returned `Full`; deliver `Writable` when space appears.
    waiting_space: bool,
    last_rejection: Option<HeaderError>,
    /// The epoch of the peer incarnation we know is gone. Until a newer incarnation has
    /// attached our ring (its `reader_epoch` differs), we do not send: the newcomer starts
    /// reading at the tail and would silently skip what we wrote in between.
    gone_epoch: Option<u64>,
    /// The writer of our incoming ring died; `recv` delivers what it published, then the
    /// link goes down.
    writer_gone: bool,
}

impl Link {
    fn new(peer: Endpoint, dynamic: bool) -> Self {
        Self {
            peer,
            dynamic,
            out: None,
            inp: None,
            wake: None,
            reasm: Reassembly::default(),
            pending: VecDeque::new(),
            block_send: false,
            block_recv: false,
            up: false,
            broken: false,
            waiting_space: false,
            last_rejection: None,
            gone_epoch: None,
            writer_gone: false,
        }
    }
}

/// One process's end of every link. Not thread-safe by design: one event loop owns it.
pub struct Transport {
    cfg: TransportConfig,
    me: Endpoint,
    pid: u32,
    epoch: u64,
    inbox: WakeInbox,
    links: Vec<Link>,
    index: HashMap<Endpoint, usize>,
    events: VecDeque<LinkEvent>,
    scratch: Vec<u8>,
    stats: TransportStats,
    next_maintenance: Instant,
    /// Maintenance rounds so far (selects which links get a liveness check).
    maintenance_rounds: u64,
    /// Wake-ups `wait` returned on without reading their FIFO records (see `wait`).
    undrained_wakes: u32,
}

/// `wait` drains the FIFO at least every this many wake-ups it left unread.
const UNDRAINED_WAKES_MAX: u32 = 8;
/// ... and before the FIFO may hold this many records (half of a default 64 KiB pipe of 8-byte
/// records): a full FIFO makes writers drop wake-ups, and an edge-triggered wait would then
/// sleep until its timeout.
const FIFO_RECORDS_DRAIN_AT: u64 = 4096;

/// Most links whose writer pid is checked per maintenance round (each check is a `kill(2)` and
/// a read of /proc/<pid>/stat); with more links, all are covered over several rounds.
const LIVENESS_CHECKS_PER_ROUND: usize = 64;

fn new_epoch() -> u64 {
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (ns ^ (u64::from(std::process::id()) << 40)) | 1
}

fn ignore_sigpipe() {
    // ipc rule 5 of docs/RULES.md: a write to a dead peer's FIFO must return EPIPE, not kill us.
    // SAFETY: installing SIG_IGN runs no handler code, so no async-signal-safety concerns.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        )
    };
}

impl Transport {
    /// Starts node `me` of a cluster whose other nodes are `peers`: creates (or checks) the
    /// runtime directory, sweeps leftovers of dead processes, creates our wake-up FIFO and our
    /// ring to every peer (a new epoch), and attaches to every peer ring that already exists.
    pub fn node(cfg: TransportConfig, me: u32, peers: &[u32]) -> Result<Self, SetupError> {
        let mut t = Self::start(cfg, Endpoint::Node(me))?;
        for &p in peers.iter().filter(|&&p| p != me) {
            let peer = Endpoint::Node(p);
            if t.index.contains_key(&peer) {
                continue;
            }
            let mut link = Link::new(peer, false);
            link.out = Some(t.create_out_ring(peer)?);
            link.wake = WakeTarget::open(&t.cfg.runtime_dir, peer);
            t.index.insert(peer, t.links.len());
            t.links.push(link);
            let i = t.links.len() - 1;
            t.try_attach(i, true);
        }
        Ok(t)
    }

    /// Starts a client process's transport with a fresh client id; then `connect` to nodes.
    pub fn client(cfg: TransportConfig) -> Result<Self, SetupError> {
        cfg.validate()?;
        dir::ensure_runtime_dir(&cfg.runtime_dir)?;
        let mut seed = new_epoch();
        for _ in 0..64 {
            seed = seed
                .wrapping_mul(0x5851_F42D_4C95_7F2D)
                .wrapping_add(0x1405_7B7E_F767_814F);
            let id = ((seed >> 32) as u32).max(1);
            if let Some(t) = Self::start_with_inbox(cfg.clone(), Endpoint::Client(id))? {
                return Ok(t);
            }
        }
        Err(SetupError::BadConfig(
            "could not find a free client id".into(),
        ))
    }

    fn start(cfg: TransportConfig, me: Endpoint) -> Result<Self, SetupError> {
        cfg.validate()?;
        dir::ensure_runtime_dir(&cfg.runtime_dir)?;
        match dir::sweep(&cfg.runtime_dir) {
            Ok(r) if !r.removed.is_empty() => {
                tracing::info!(
                    removed = r.removed.len(),
                    "start-up sweep removed leftovers"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "start-up sweep failed"),
        }
        Self::start_with_inbox(cfg, me)?
            .ok_or_else(|| SetupError::BadConfig("wake-up FIFO name taken".into()))
    }

    fn start_with_inbox(cfg: TransportConfig, me: Endpoint) -> Result<Option<Self>, SetupError> {
        ignore_sigpipe();
        let replace = matches!(me, Endpoint::Node(_));
        let Some(inbox) = WakeInbox::create(&cfg.runtime_dir, me, replace)? else {
            return Ok(None);
        };
        let now = Instant::now();
        let interval = Duration::from_millis(cfg.maintenance_interval_ms.into());
        Ok(Some(Self {
            scratch: Vec::with_capacity(cfg.ring_bytes),
            cfg,
            me,
            pid: std::process::id(),
            epoch: new_epoch(),
            inbox,
            links: Vec::new(),
            index: HashMap::new(),
            events: VecDeque::new(),
            stats: TransportStats::default(),
            next_maintenance: now + interval,
            maintenance_rounds: 0,
            undrained_wakes: 0,
        }))
    }

    /// This process's endpoint.
    /// A handle another thread of this process can use to end a parked [`Transport::wait`]
    /// early, for events that do not arrive through a ring (a storage sync completing, say).
    /// `None` if this process's wake-up FIFO cannot be opened for writing.
    pub fn waker(&self) -> Option<Waker> {
        let target = WakeTarget::open(&self.cfg.runtime_dir, self.me)?;
        Some(Waker {
            target: std::sync::Arc::new(target),
            me: self.me,
        })
    }

    pub fn me(&self) -> Endpoint {
        self.me
    }

    /// This incarnation's epoch (written into every ring we create).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The configuration.
    pub fn config(&self) -> &TransportConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> TransportStats {
        self.stats
    }

    /// Endpoints we currently have links to, and whether each is up.
    pub fn peers(&self) -> Vec<(Endpoint, bool)> {
        self.links.iter().map(|l| (l.peer, l.up)).collect()
    }

    /// Whether `wait` wakes with one system call, leaving wake-up records unread while rings
    /// have data (an edge-triggered epoll on the FIFO), or, on kernels that do not report every
    /// write to a non-empty pipe as an edge, polls and drains after every wake-up.
    pub fn edge_triggered_wait(&self) -> bool {
        self.inbox.edge_triggered()
    }

    /// The file descriptor to poll for readability (our wake-up FIFO) when the caller runs its
    /// own poll loop; call `before_poll` first and `after_poll` after.
    pub fn as_raw_fd(&self) -> RawFd {
        self.inbox.raw_fd()
    }

    fn create_out_ring(&self, peer: Endpoint) -> Result<RingWriter, SetupError> {
        let header = RingHeader {
            capacity: self.cfg.ring_bytes as u64,
            cluster_id: self.cfg.cluster_id,
            from: self.me,
            to: peer,
            writer_pid: self.pid,
            writer_epoch: self.epoch,
            created_unix_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        };
        let name = ring_file_name(self.me, peer);
        RingWriter::create(&self.cfg.runtime_dir, &name, header).map_err(|source| SetupError::Io {
            op: "create ring",
            path: self.cfg.runtime_dir.join(name),
            source,
        })
    }

    /// Drops (both directions) everything exchanged with `peer` while `blocked`: the partition
    /// hook. Sends return `Ok` and are discarded; received frames are consumed and discarded.
    pub fn set_blocked(&mut self, peer: Endpoint, blocked: bool) {
        self.set_blocked_directions(peer, blocked, blocked);
    }

    /// Like `set_blocked`, per direction (for one-way partitions).
    pub fn set_blocked_directions(&mut self, peer: Endpoint, send: bool, recv: bool) {
        if let Some(&i) = self.index.get(&peer) {
            self.links[i].block_send = send;
            self.links[i].block_recv = recv;
        }
    }

    /// Sends a batch of frames to `to` without blocking, publishing once (ipc rule 6
    /// of docs/RULES.md). `Ok`: the whole batch was accepted and will be delivered in order unless
    /// the link resets. A batch holding a message too large for the ring's free space, or whose
    /// frames and padding exceed the ring even after the reader consumed everything sent before it,
    /// is accepted in part and its remainder buffered (one batch per link at most) and pushed as the reader
    /// frees space. `Full` / `PeerDown`: nothing was accepted.
    pub fn send_batch(&mut self, to: Endpoint, frames: &[OutFrame<'_>]) -> Result<(), SendError> {
        let Some(&i) = self.index.get(&to) else {
            return Err(SendError::UnknownPeer { peer: to });
        };
        let max = self.cfg.max_message_bytes;
        if let Some(f) = frames.iter().find(|f| f.payload.len() > max) {
            return Err(SendError::TooLarge {
                peer: to,
                bytes: f.payload.len(),
                max,
            });
        }
        let link = &mut self.links[i];
        if link.block_send {
            self.stats.dropped_blocked += frames.len() as u64;
            return Ok(());
        }
        if link.wake.is_none() || link.out.is_none() {
            return Err(SendError::PeerDown { peer: to });
        }
        if frames.is_empty() {
            return Ok(());
        }
        let result = Self::write_batch(link, frames, &mut self.stats);
        self.finish_send(i, result)
    }

    /// Convenience: sends one frame.
    pub fn send(&mut self, to: Endpoint, kind: u16, payload: &[u8]) -> Result<(), SendError> {
        self.send_batch(to, &[OutFrame { kind, payload }])
    }

    /// Writes a batch (after any pending remainder) into the link's ring without publishing.
    /// Returns Ok(true) if accepted, Ok(false) if it did not fit (nothing written).
    fn write_batch(
        link: &mut Link,
        frames: &[OutFrame<'_>],
        stats: &mut TransportStats,
    ) -> Result<bool, ProtocolError> {
        let out = link.out.as_mut().expect("checked by caller");
        if !Self::pump_pending(out, &mut link.pending, stats)? {
            return Ok(false);
        }
        // Remainders written by `pump_pending` were taken off `pending`: a rollback must keep
        // them, so it goes back to here, not to the published tail.
        let mark = out.pending_end();
        let max_frame = (out.capacity() / 4) as usize - FRAME_HEADER_BYTES;
        let (largest, total) = frames.iter().fold((0, 0u64), |(m, t), f| {
            (
                m.max(f.payload.len()),
                t + record_bytes(f.payload.len()) as u64,
            )
        });
        let all_small = largest <= max_frame;
        // A batch of small frames that even an empty ring might not hold (its records plus a
        // pad at the wrap) takes the per-frame path below, which can accept it in part.
        let bound = total + record_bytes(largest) as u64;
        let oversized = all_small && bound > out.capacity();
        if all_small && !oversized {
            // No fragments: the whole batch fits or nothing is written.
            if !out.fits(bound, frames.iter().map(|f| f.payload.len()))?
                || !out.write_unfragmented(frames.iter().map(|f| (f.kind, f.payload)))?
            {
                out.rollback_to(mark);
                return Ok(false);
            }
            stats.frames_sent += frames.len() as u64;
            return Ok(true);
        }
        let mut large_started = false;
        let mut written = 0u64;
        for (n, f) in frames.iter().enumerate() {
            if f.payload.len() <= max_frame {
                if out.write_frame(f.kind, 0, 0, &[], f.payload)? {
                    written += 1;
                    continue;
                }
                // Before a large message, a frame that does not fit refuses the batch (Full)
                // while the ring still holds anything written before this batch (published
                // or not): space will come. Once the reader has consumed all of that, only
                // this batch fills the ring and waiting cannot help (its records and padding
                // exceed the ring): accept it in part.
                if !large_started && !out.reader_reached(mark)? {
                    out.rollback_to(mark);
                    return Ok(false);
                }
                Self::queue_rest(&mut link.pending, &frames[n..]);
                break;
            }
            large_started = true;
            let mut msg = PendingMsg {
                kind: f.kind,
                data: Vec::new(),
                sent: 0,
                next_index: 0,
            };
            let (done, frags) = Self::write_fragments(out, &mut msg, f.payload)?;
            written += frags;
            if !done {
                msg.data = f.payload.to_vec();
                link.pending.push_back(msg);
                Self::queue_rest(&mut link.pending, &frames[n + 1..]);
                break;
            }
        }
        stats.frames_sent += written;
        Ok(true)
    }

    fn queue_rest(pending: &mut VecDeque<PendingMsg>, rest: &[OutFrame<'_>]) {
        for f in rest {
            pending.push_back(PendingMsg {
                kind: f.kind,
                data: f.payload.to_vec(),
                sent: 0,
                next_index: 0,
            });
        }
    }

    /// Writes as many fragments of `data` (from `msg.sent`) as fit. Returns (complete, frames).
    fn write_fragments(
        out: &mut RingWriter,
        msg: &mut PendingMsg,
        data: &[u8],
    ) -> Result<(bool, u64), ProtocolError> {
        let max_frame = (out.capacity() / 4) as usize - FRAME_HEADER_BYTES;
        let mut frames = 0;
        loop {
            let prefix: [u8; FRAGMENT_PREFIX_BYTES] = (data.len() as u64).to_le_bytes();
            let prefix: &[u8] = if msg.next_index == 0 { &prefix } else { &[] };
            let room = max_frame - prefix.len();
            let take = room.min(data.len() - msg.sent);
            let last = msg.sent + take == data.len();
            let flags = FLAG_FRAGMENT | if last { FLAG_LAST } else { 0 };
            let chunk = &data[msg.sent..msg.sent + take];
            if !out.write_frame(msg.kind, flags, msg.next_index, prefix, chunk)? {
                return Ok((false, frames));
            }
            frames += 1;
            msg.sent += take;
            msg.next_index += 1;
            if last {
                return Ok((true, frames));
            }
        }
    }

    /// Writes pending remainders that fit. Returns true when nothing is pending any more.
    fn pump_pending(
        out: &mut RingWriter,
        pending: &mut VecDeque<PendingMsg>,
        stats: &mut TransportStats,
    ) -> Result<bool, ProtocolError> {
        let max_frame = (out.capacity() / 4) as usize - FRAME_HEADER_BYTES;
        while let Some(msg) = pending.front_mut() {
            let done = if msg.data.len() <= max_frame && msg.next_index == 0 {
                let ok = out.write_frame(msg.kind, 0, 0, &[], &msg.data)?;
                stats.frames_sent += u64::from(ok);
                ok
            } else {
                let data = std::mem::take(&mut msg.data);
                let r = Self::write_fragments(out, msg, &data);
                msg.data = data;
                let (done, frames) = r?;
                stats.frames_sent += frames;
                done
            };
            if !done {
                return Ok(false);
            }
            pending.pop_front();
        }
        Ok(true)
    }

    /// Publishes what `write_batch` wrote, wakes a parked reader, maps the outcome.
    fn finish_send(
        &mut self,
        i: usize,
        result: Result<bool, ProtocolError>,
    ) -> Result<(), SendError> {
        let peer = self.links[i].peer;
        match result {
            Ok(accepted) => {
                self.publish(i);
                if accepted {
                    Ok(())
                } else {
                    self.announce_wait_for_space(i);
                    Err(SendError::Full { peer })
                }
            }
            Err(reason) => {
                // Our ring's reader line is corrupt: recreate the ring (new file, same epoch).
                self.recreate_out_ring(i, reason);
                Err(SendError::Full { peer })
            }
        }
    }

    fn publish(&mut self, i: usize) {
        let me = self.me;
        let link = &mut self.links[i];
        let Some(out) = link.out.as_mut() else { return };
        if !out.has_pending() {
            return;
        }
        self.stats.batches_published += 1;
        if out.publish() {
            if let Some(w) = &link.wake {
                self.stats.wake_writes += 1;
                if w.send(WakeRecord {
                    kind: WakeKind::Data,
                    sender: me,
                }) == WakeSend::PeerGone
                {
                    link.wake = None;
                }
            }
        }
    }

    fn announce_wait_for_space(&mut self, i: usize) {
        let link = &mut self.links[i];
        if link.waiting_space {
            // Announced once per episode: a sender that retries in a loop must not make the
            // reader write a wake-up after every drain.
            return;
        }
        link.waiting_space = true;
        let Some(out) = link.out.as_mut() else { return };
        match out.wait_for_space(out.capacity() / 2) {
            Ok(true) => {
                // Space appeared between our check and the announcement: no wake-up will come.
                link.waiting_space = false;
                self.events
                    .push_back(LinkEvent::Writable { peer: link.peer });
            }
            Ok(false) => {}
            Err(reason) => self.recreate_out_ring(i, reason),
        }
    }

    fn recreate_out_ring(&mut self, i: usize, reason: ProtocolError) {
        let peer = self.links[i].peer;
        tracing::warn!(%peer, error = %reason, "our ring to the peer is corrupt; recreating it");
        self.stats.resets += 1;
        match self.create_out_ring(peer) {
            Ok(w) => {
                let link = &mut self.links[i];
                link.out = Some(w);
                link.pending.clear();
                link.waiting_space = false;
                self.events.push_back(LinkEvent::Reset { peer, reason });
                self.events.push_back(LinkEvent::Writable { peer });
                self.wake_peer(i, WakeKind::Data);
            }
            Err(e) => tracing::error!(%peer, error = %e, "cannot recreate ring"),
        }
    }

    fn wake_peer(&mut self, i: usize, kind: WakeKind) {
        let me = self.me;
        let link = &mut self.links[i];
        if let Some(w) = &link.wake {
            self.stats.wake_writes += 1;
            if w.send(WakeRecord { kind, sender: me }) == WakeSend::PeerGone {
                link.wake = None;
            }
        }
    }

    /// Drains every link: hands each checked frame (and pending link events, first) to
    /// `on_incoming`, releases ring space, wakes writers waiting for space. Never blocks; at
    /// most one ring's worth of data per link per call. Returns the number of frames delivered.
    pub fn recv(&mut self, mut on_incoming: impl FnMut(Incoming<'_>)) -> usize {
        while let Some(ev) = self.events.pop_front() {
            on_incoming(Incoming::Event(ev));
        }
        let mut delivered = 0;
        let mut retired = Vec::new();
        for i in 0..self.links.len() {
            let max = self.cfg.max_message_bytes;
            let Self {
                links,
                scratch,
                stats,
                ..
            } = self;
            let link = &mut links[i];
            if link.broken {
                if link.writer_gone || link.inp.as_ref().is_some_and(|r| r.retired()) {
                    retired.push(i);
                }
                continue;
            }
            let Some(inp) = link.inp.as_mut() else {
                continue;
            };
            if !inp.has_data() {
                if inp.retired() || link.writer_gone {
                    retired.push(i);
                }
                continue;
            }
            let peer = link.peer;
            let block = link.block_recv;
            let reasm = &mut link.reasm;
            let mut reasm_err = None;
            let result = inp.drain(scratch, |rec| {
                if block {
                    stats.dropped_blocked += 1;
                    return;
                }
                if rec.flags & FLAG_FRAGMENT == 0 {
                    delivered += 1;
                    on_incoming(Incoming::Frame(Frame {
                        from: peer,
                        kind: rec.kind,
                        payload: rec.payload,
                    }));
                    return;
                }
                if reasm_err.is_some() {
                    return;
                }
                match reasm.feed(rec.kind, rec.flags, rec.fragment_index, rec.payload, max) {
                    Ok(Reassembled::Complete) => {
                        let (kind, payload) = reasm.message();
                        delivered += 1;
                        on_incoming(Incoming::Frame(Frame {
                            from: peer,
                            kind,
                            payload,
                        }));
                    }
                    Ok(Reassembled::Incomplete | Reassembled::Skipped) => {}
                    Err(e) => reasm_err = Some(e),
                }
            });
            let wants_space = inp.writer_wants_space();
            let err = match result {
                Err(e) => Some(e),
                Ok(_) => reasm_err,
            };
            if let Some(reason) = err {
                tracing::warn!(%peer, error = %reason, "protocol violation on link; resetting it");
                stats.resets += 1;
                reasm.reset();
                if matches!(reason, ProtocolError::BadIndices { .. }) {
                    inp.mark_broken();
                    link.broken = true;
                }
                on_incoming(Incoming::Event(LinkEvent::Reset { peer, reason }));
            }
            if wants_space {
                self.wake_peer(i, WakeKind::Space);
            }
        }
        self.stats.frames_received += delivered as u64;
        for i in retired.into_iter().rev() {
            self.handle_retired(i);
        }
        while let Some(ev) = self.events.pop_front() {
            on_incoming(Incoming::Event(ev));
        }
        delivered
    }

    /// The writer of our incoming ring on link `i` replaced or removed it: its incarnation is
    /// over (Down); a static peer's new incarnation is attached at once if its ring is there.
    fn handle_retired(&mut self, i: usize) {
        let dynamic = self.links[i].dynamic;
        self.links[i].broken = false;
        self.link_down(i);
        if !dynamic {
            self.try_attach(i, false);
        }
    }

    /// (Re)opens link `i`'s wake-up target unless the peer's new incarnation has not attached
    /// our ring yet (see `Link::gone_epoch`), then reports `Up` if both directions work.
    fn reopen_wake(&mut self, i: usize) {
        let link = &mut self.links[i];
        if let (Some(gone), Some(out)) = (link.gone_epoch, &link.out) {
            if out.reader_status().0 == gone {
                return;
            }
        }
        if link.wake.as_ref().is_none_or(|w| w.peer_gone()) {
            link.wake = WakeTarget::open(&self.cfg.runtime_dir, link.peer);
        }
        if link.wake.is_some() {
            link.gone_epoch = None;
        }
        self.check_up(i);
    }

    /// `Up` means: we read the peer's ring and may send to it.
    fn check_up(&mut self, i: usize) {
        let link = &mut self.links[i];
        if link.up || link.wake.is_none() {
            return;
        }
        if let Some(r) = &link.inp {
            link.up = true;
            let epoch = r.header.writer_epoch;
            self.events.push_back(LinkEvent::Up {
                peer: link.peer,
                epoch,
            });
        }
    }

    /// Attaches link `i`'s incoming ring if its file exists and is valid. Returns whether the
    /// link now has a reader.
    fn try_attach(&mut self, i: usize, quiet_if_missing: bool) -> bool {
        let peer = self.links[i].peer;
        let path = self.cfg.runtime_dir.join(ring_file_name(peer, self.me));
        let expect = Expect {
            cluster_id: self.cfg.cluster_id,
            from: peer,
            to: self.me,
        };
        match RingReader::attach(&path, &expect, self.pid, self.epoch) {
            Ok(r) if r.retired() => false,
            Ok(r) => {
                let epoch = r.header.writer_epoch;
                let link = &mut self.links[i];
                link.inp = Some(r);
                link.reasm.reset();
                link.broken = false;
                link.last_rejection = None;
                tracing::debug!(%peer, epoch, "attached peer ring");
                self.reopen_wake(i);
                // Tell the writer we attached (it may be waiting to open our FIFO), even if we
                // may not send to it yet.
                let me = self.me;
                if self.links[i].wake.is_some() {
                    self.wake_peer(i, WakeKind::Attached);
                } else if let Some(w) = WakeTarget::open(&self.cfg.runtime_dir, peer) {
                    self.stats.wake_writes += 1;
                    w.send(WakeRecord {
                        kind: WakeKind::Attached,
                        sender: me,
                    });
                }
                true
            }
            Err(AttachError::Missing) => {
                if !quiet_if_missing {
                    tracing::debug!(%peer, "peer ring missing");
                }
                false
            }
            Err(AttachError::Io(e)) => {
                tracing::warn!(%peer, path = %path.display(), error = %e, "cannot attach peer ring");
                false
            }
            Err(AttachError::Rejected(reason)) => {
                let link = &mut self.links[i];
                if link.last_rejection.as_ref() != Some(&reason) {
                    if !matches!(reason, HeaderError::WriterDead { .. }) {
                        tracing::warn!(%peer, path = %path.display(), error = %reason, "rejected ring");
                        self.stats.rejected += 1;
                        self.events.push_back(LinkEvent::Rejected {
                            peer,
                            reason: reason.clone(),
                        });
                    }
                    link.last_rejection = Some(reason);
                }
                false
            }
        }
    }

    fn link_down(&mut self, i: usize) {
        let link = &mut self.links[i];
        link.writer_gone = false;
        if let Some(r) = &link.inp {
            link.gone_epoch = Some(r.header.writer_epoch);
        } else if let Some(out) = &link.out {
            // We never read its ring, but it may have read ours.
            let reader_epoch = out.reader_status().0;
            if reader_epoch != 0 {
                link.gone_epoch = Some(reader_epoch);
            }
        }
        link.reasm.reset();
        link.inp = None;
        link.wake = None;
        link.pending.clear();
        link.waiting_space = false;
        if link.up {
            link.up = false;
            self.events.push_back(LinkEvent::Down { peer: link.peer });
        }
        if link.dynamic {
            self.remove_link(i);
        }
    }

    fn remove_link(&mut self, i: usize) {
        let link = self.links.swap_remove(i);
        if let Some(out) = &link.out {
            out.retire_and_remove();
        }
        // Sweep the dead peer's own files if nobody is left to remove them (ipc rule 8
        // of docs/RULES.md).
        let theirs = self
            .cfg
            .runtime_dir
            .join(ring_file_name(link.peer, self.me));
        if let Ok(Ok(h)) = crate::ring::read_ring_header(&theirs) {
            if !dir::pid_alive(h.writer_pid) {
                let _ = std::fs::remove_file(&theirs);
            }
        }
        if let Endpoint::Client(_) = link.peer {
            let fifo = self.cfg.runtime_dir.join(dir::fifo_file_name(link.peer));
            if fifo.exists() && !crate::wake::fifo_has_reader(&fifo) {
                let _ = std::fs::remove_file(&fifo);
            }
        }
        self.index.remove(&link.peer);
        if i < self.links.len() {
            self.index.insert(self.links[i].peer, i);
        }
    }

    /// Whether anything is ready: data in a ring, a retired ring, or pending events.
    fn ready(&self) -> bool {
        !self.events.is_empty()
            || self.links.iter().any(|l| {
                l.inp
                    .as_ref()
                    .is_some_and(|r| (!l.broken && r.has_data()) || r.retired() || l.writer_gone)
            })
    }

    /// Call before sleeping in your own poll on `as_raw_fd()`. Marks us parked on every ring
    /// (ipc rule 5 of docs/RULES.md) and re-checks them; returns false if something is ready (then
    /// do not sleep, and call `after_poll`).
    pub fn before_poll(&mut self) -> bool {
        for l in &mut self.links {
            if let Some(r) = l.inp.as_mut() {
                r.park();
            }
        }
        fence(Ordering::SeqCst);
        !self.ready()
    }

    /// Call after your poll returned (or after `before_poll` returned false): clears the
    /// parked marks and processes wake-up records (connections, space, peer restarts).
    pub fn after_poll(&mut self) {
        for l in &mut self.links {
            if let Some(r) = l.inp.as_mut() {
                r.unpark();
            }
        }
        self.process_inbox();
        if Instant::now() >= self.next_maintenance {
            self.maintain();
        }
    }

    /// Sleeps until something arrives on any link, a link event is pending, or `timeout`
    /// passes (None: no deadline). Spins `spin_us` first, then parks in poll(2) on the wake-up
    /// FIFO. May return early (a maintenance round is due every `maintenance_interval_ms`, and
    /// wake-ups can be spurious): always follow it with `recv`. Maintenance (liveness,
    /// re-attach, client accept while busy) runs here.
    pub fn wait(&mut self, timeout: Option<Duration>) -> std::io::Result<()> {
        let start = Instant::now();
        let deadline = timeout.map(|t| start + t);
        if start >= self.next_maintenance {
            self.maintain();
        }
        if self.ready() {
            return Ok(());
        }
        // Spin briefly (ipc rule 5 of docs/RULES.md). PAUSE costs up to ~140 cycles on recent x86,
        // so the clock is read every few pauses to keep the spin close to `spin_us`.
        if self.cfg.spin_us > 0 {
            let spin_end = start + Duration::from_micros(self.cfg.spin_us.into());
            loop {
                for _ in 0..4 {
                    std::hint::spin_loop();
                }
                if self.ready() {
                    return Ok(());
                }
                let now = Instant::now();
                if now >= spin_end {
                    break;
                }
                if deadline.is_some_and(|d| now >= d) {
                    return Ok(());
                }
            }
        }
        if !self.before_poll() {
            self.after_poll();
            return Ok(());
        }
        let mut woken = false;
        loop {
            let now = Instant::now();
            let mut until = self.next_maintenance;
            if let Some(d) = deadline {
                until = until.min(d);
            }
            let ms = until
                .saturating_duration_since(now)
                .as_micros()
                .div_ceil(1000);
            let ms = i32::try_from(ms).unwrap_or(i32::MAX);
            self.stats.polls += 1;
            let timeout =
                nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX);
            match self.inbox.wait(timeout) {
                Ok(true) => {
                    woken = true;
                    break;
                }
                Ok(false) => {}
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let now = Instant::now();
            if now >= self.next_maintenance || deadline.is_some_and(|d| now >= d) || self.ready() {
                break;
            }
        }
        for l in &mut self.links {
            if let Some(r) = l.inp.as_mut() {
                r.unpark();
            }
        }
        // The wake-up path costs one epoll_wait(2), like a blocked pipe reader's one read(2):
        // when a record woke us and a ring has data, the record (a hint; the ring is the data)
        // is left unread. The FIFO is drained, and the records in it acted on, when a wake-up
        // shows no ring data (a control record: connect, space, restart; or garbage), after a
        // timeout, every UNDRAINED_WAKES_MAX wake-ups (so a control record that arrived with
        // data waits at most that many), before it could hold half its capacity, and by
        // maintenance. `after_poll` (the caller's own poll) always drains.
        if woken {
            self.undrained_wakes += 1;
        }
        let may_hold = u64::from(self.undrained_wakes) * (self.links.len() as u64 + 1);
        if !woken
            || !self.inbox.edge_triggered()
            || self.undrained_wakes >= UNDRAINED_WAKES_MAX
            || may_hold >= FIFO_RECORDS_DRAIN_AT
            || !self.ready()
        {
            self.process_inbox();
        }
        if Instant::now() >= self.next_maintenance {
            self.maintain();
        }
        Ok(())
    }

    fn process_inbox(&mut self) {
        self.undrained_wakes = 0;
        let mut records = Vec::new();
        let (reads, garbage) = self.inbox.drain(|r| records.push(r));
        self.stats.wake_reads += u64::from(reads);
        if let Some(reason) = garbage {
            // ipc rule 3 of docs/RULES.md: log and resynchronise. Rings are re-scanned on every
            // recv anyway, so a corrupted wake-up stream loses nothing but latency.
            tracing::warn!(error = %reason, fifo = %self.inbox.path.display(), "garbage on our wake-up FIFO; discarded");
            self.stats.resets += 1;
        }
        for r in records {
            self.on_wake_record(r);
        }
    }

    fn on_wake_record(&mut self, r: WakeRecord) {
        match (r.kind, self.index.get(&r.sender).copied()) {
            (WakeKind::Connect, _) => self.accept_client(r.sender),
            (WakeKind::Space, Some(i)) => self.on_space(i),
            (WakeKind::Attached, Some(i)) => {
                // The peer (re)attached to our ring: its FIFO may be new; and its own ring to us
                // may be new too.
                self.links[i].wake = None;
                self.reopen_wake(i);
                if self.links[i].inp.is_none() {
                    self.try_attach(i, true);
                }
            }
            (WakeKind::Accepted, Some(i)) => {
                if self.links[i].inp.is_none() {
                    self.try_attach(i, false);
                }
            }
            (WakeKind::Data | WakeKind::Rejected, _) => {}
            (_, None) => {
                tracing::debug!(sender = %r.sender, kind = ?r.kind, "wake-up from unknown endpoint ignored")
            }
        }
    }

    fn on_space(&mut self, i: usize) {
        let Self { links, stats, .. } = self;
        let link = &mut links[i];
        let Some(out) = link.out.as_mut() else { return };
        // A space wake-up ends the current waiting episode; a new one starts if still short.
        let was_waiting = std::mem::replace(&mut link.waiting_space, false);
        let result = Self::pump_pending(out, &mut link.pending, stats);
        match result {
            Ok(done) => {
                self.publish(i);
                if !done {
                    self.announce_wait_for_space(i);
                } else if was_waiting {
                    let peer = self.links[i].peer;
                    self.events.push_back(LinkEvent::Writable { peer });
                }
            }
            Err(reason) => self.recreate_out_ring(i, reason),
        }
    }

    /// A client asks to connect (its ring to us exists): validate it, create ours, answer.
    fn accept_client(&mut self, peer: Endpoint) {
        if !matches!(self.me, Endpoint::Node(_)) || !matches!(peer, Endpoint::Client(_)) {
            tracing::warn!(%peer, "connect request not from a client to a node; ignored");
            return;
        }
        if let Some(&i) = self.index.get(&peer) {
            // A reconnect from the same client id: forget the old link first.
            self.links[i].up = false;
            self.remove_link(i);
        }
        let clients = self.links.iter().filter(|l| l.dynamic).count();
        let Some(wake) = WakeTarget::open(&self.cfg.runtime_dir, peer) else {
            tracing::info!(%peer, "client vanished before its connection was accepted");
            return;
        };
        let me = self.me;
        let refuse = |wake: &WakeTarget| {
            wake.send(WakeRecord {
                kind: WakeKind::Rejected,
                sender: me,
            });
        };
        if clients >= self.cfg.max_clients {
            tracing::warn!(%peer, max = self.cfg.max_clients, "too many clients; connection refused");
            refuse(&wake);
            return;
        }
        let path = self.cfg.runtime_dir.join(ring_file_name(peer, me));
        let expect = Expect {
            cluster_id: self.cfg.cluster_id,
            from: peer,
            to: me,
        };
        let inp = match RingReader::attach(&path, &expect, self.pid, self.epoch) {
            Ok(r) => r,
            Err(e) => {
                let reason = match e {
                    AttachError::Rejected(h) => Some(h),
                    AttachError::Missing => None,
                    AttachError::Io(e) => {
                        tracing::warn!(%peer, error = %e, "cannot attach client ring");
                        None
                    }
                };
                if let Some(reason) = reason {
                    tracing::warn!(%peer, error = %reason, "client ring rejected");
                    self.stats.rejected += 1;
                    self.events.push_back(LinkEvent::Rejected { peer, reason });
                }
                refuse(&wake);
                return;
            }
        };
        let out = match self.create_out_ring(peer) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(%peer, error = %e, "cannot create ring to client");
                refuse(&wake);
                return;
            }
        };
        let epoch = inp.header.writer_epoch;
        let mut link = Link::new(peer, true);
        link.out = Some(out);
        link.inp = Some(inp);
        link.wake = Some(wake);
        link.up = true;
        self.index.insert(peer, self.links.len());
        self.links.push(link);
        self.events.push_back(LinkEvent::Up { peer, epoch });
        self.wake_peer(self.links.len() - 1, WakeKind::Accepted);
    }

    /// Connects this client transport to node `node`: creates our ring to it, asks the node
    /// (a `Connect` record on its FIFO) and waits up to `timeout` for its ring to us.
    pub fn connect(&mut self, node: u32, timeout: Duration) -> Result<(), ConnectError> {
        let Endpoint::Client(_) = self.me else {
            return Err(ConnectError::NotAClient);
        };
        let peer = Endpoint::Node(node);
        if let Some(&i) = self.index.get(&peer) {
            self.links[i].up = false;
            self.remove_link(i);
        }
        let Some(wake) = WakeTarget::open(&self.cfg.runtime_dir, peer) else {
            return Err(ConnectError::NodeDown { node });
        };
        let mut link = Link::new(peer, true);
        link.out = Some(self.create_out_ring(peer)?);
        link.wake = Some(wake);
        self.index.insert(peer, self.links.len());
        self.links.push(link);
        let i = self.links.len() - 1;
        self.wake_peer(i, WakeKind::Connect);
        let start = Instant::now();
        let deadline = start + timeout;
        let mut rejected = false;
        loop {
            let i = self.index[&peer];
            if self.links[i].inp.is_some() {
                return Ok(());
            }
            self.inbox_wait_until(deadline.min(Instant::now() + Duration::from_millis(5)));
            let mut records = Vec::new();
            let (reads, _) = self.inbox.drain(|r| records.push(r));
            self.stats.wake_reads += u64::from(reads);
            for r in records {
                if r.sender == peer && r.kind == WakeKind::Rejected {
                    rejected = true;
                } else {
                    self.on_wake_record(r);
                }
            }
            let i = self.index[&peer];
            if self.links[i].inp.is_none() && !rejected {
                // The Accepted record may have been lost (full FIFO): look for the ring anyway.
                self.try_attach(i, true);
            }
            if self.links[i].inp.is_some() {
                return Ok(());
            }
            if rejected || Instant::now() >= deadline {
                self.links[i].up = false;
                self.remove_link(i);
                return Err(if rejected {
                    self.explain_rejection(node)
                } else {
                    ConnectError::Timeout {
                        node,
                        waited_ms: start.elapsed().as_millis() as u64,
                    }
                });
            }
        }
    }

    /// Why node `node` refused our connection, as far as the runtime directory tells: a ring
    /// the node writes with another cluster id in its header means a cluster mismatch;
    /// otherwise the node had its reasons (too many clients, a ring it could not validate).
    /// Reads plain header bytes (no mapping); anything unreadable just gives `Rejected`.
    fn explain_rejection(&self, node: u32) -> ConnectError {
        let prefix = format!("ring-{}-", dir::endpoint_tag(Endpoint::Node(node)));
        let theirs = std::fs::read_dir(&self.cfg.runtime_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .find_map(|e| {
                use std::io::Read;
                let mut b = [0u8; RING_HEADER_BYTES];
                std::fs::File::open(e.path())
                    .ok()?
                    .read_exact(&mut b)
                    .ok()?;
                RingHeader::decode(&b).ok().map(|h| h.cluster_id)
            });
        match theirs {
            Some(theirs) if theirs != self.cfg.cluster_id => ConnectError::ClusterMismatch {
                node,
                ours: self.cfg.cluster_id,
                theirs,
            },
            _ => ConnectError::Rejected { node },
        }
    }

    fn inbox_wait_until(&mut self, until: Instant) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let ms = until
            .saturating_duration_since(Instant::now())
            .as_micros()
            .div_ceil(1000);
        let mut fds = [PollFd::new(self.inbox.as_fd(), PollFlags::POLLIN)];
        self.stats.polls += 1;
        let _ = poll(
            &mut fds,
            PollTimeout::try_from(ms as i32).unwrap_or(PollTimeout::MAX),
        );
    }

    /// Periodic work (runs from `wait`/`after_poll` every `maintenance_interval_ms`; callable
    /// directly): drains the FIFO while busy, detects dead peers, re-attaches restarted ones,
    /// recreates rings a reader reported corrupt, retries buffered remainders.
    pub fn maintain(&mut self) {
        self.next_maintenance =
            Instant::now() + Duration::from_millis(self.cfg.maintenance_interval_ms.into());
        self.process_inbox();
        self.maintenance_rounds += 1;
        let stride = self.links.len().div_ceil(LIVENESS_CHECKS_PER_ROUND).max(1) as u64;
        let round = self.maintenance_rounds % stride;
        let mut i = self.links.len();
        while i > 0 {
            i -= 1;
            let peer = self.links[i].peer;
            // Writer side: did the reader flag our ring as corrupt?
            if let Some(out) = &self.links[i].out {
                let (_, flags, _) = out.reader_status();
                if flags & READER_BROKEN != 0 {
                    self.recreate_out_ring(
                        i,
                        ProtocolError::BadIndices {
                            head: 0,
                            tail: 0,
                            capacity: out.capacity(),
                        },
                    );
                }
            }
            // Reader side: is the writer alive?
            let writer_dead = i as u64 % stride == round
                && self.links[i]
                    .inp
                    .as_ref()
                    .is_some_and(|r| !dir::pid_alive(r.header.writer_pid));
            if writer_dead {
                tracing::info!(%peer, "peer process is gone");
                // Frames it published are complete and valid: `recv` delivers them first.
                self.links[i].writer_gone = true;
                continue;
            }
            if self.links[i].inp.is_none() {
                if self.links[i].dynamic {
                    if self.links[i].up {
                        self.link_down(i);
                    }
                    continue;
                }
                self.try_attach(i, true);
            }
            let link = &mut self.links[i];
            if i as u64 % stride == round && link.wake.as_ref().is_some_and(|w| w.peer_gone()) {
                link.wake = None;
            }
            if link.wake.is_none() && !link.dynamic {
                self.reopen_wake(i);
            }
            if !self.links[i].pending.is_empty() || self.links[i].waiting_space {
                self.on_space(i);
            }
        }
    }

    /// Clean shutdown: retires and removes every ring and FIFO this process created, wakes
    /// peers so they notice at once, and removes the runtime directory if it is now empty.
    /// Also done by `Drop`.
    pub fn shutdown(mut self) {
        self.shutdown_inner();
        // Drop runs shutdown_inner again: idempotent (nothing left to retire or remove).
    }

    fn shutdown_inner(&mut self) {
        for i in 0..self.links.len() {
            if let Some(out) = &self.links[i].out {
                out.retire_and_remove();
            }
            self.wake_peer(i, WakeKind::Data);
        }
        self.links.clear();
        self.index.clear();
        self.inbox.remove();
        dir::remove_dir_if_empty(&self.cfg.runtime_dir);
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shutdown_inner();
    }
}
