//! Wake-up FIFOs (ipc rule 5 of docs/RULES.md). One per receiving process; every record written to
//! one is exactly 8 bytes, so writes are atomic (< PIPE_BUF) and never interleave. The FIFO is only
//! a hint: the receiver re-scans all its rings after any wake-up, so a lost or garbage record
//! costs at most a timed-poll backstop, never a frame.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::stat::Mode;

use crate::Endpoint;
use crate::error::{ProtocolError, SetupError};

/// Bytes of one wake-up record.
pub const WAKE_RECORD_BYTES: usize = 8;
/// First byte of every wake-up record.
pub const WAKE_MAGIC: u8 = 0xA5;

/// What a wake-up record announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum WakeKind {
    /// The sender published frames while we were parked.
    Data = 1,
    /// We (the sender's reader) freed space the sender was waiting for.
    Space = 2,
    /// A client asks to connect (its ring to us exists).
    Connect = 3,
    /// The node accepted a client (its ring to the client exists).
    Accepted = 4,
    /// The sender attached as reader of our ring (it (re)started): re-open its FIFO.
    Attached = 5,
    /// The node refused a client.
    Rejected = 6,
}

/// A decoded wake-up record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeRecord {
    /// What happened.
    pub kind: WakeKind,
    /// Who wrote it.
    pub sender: Endpoint,
}

impl WakeRecord {
    /// Encodes the record.
    pub fn encode(&self) -> [u8; WAKE_RECORD_BYTES] {
        let (k, id) = match self.sender {
            Endpoint::Node(id) => (0u8, id),
            Endpoint::Client(id) => (1u8, id),
        };
        let mut b = [WAKE_MAGIC, self.kind as u8, k, 0, 0, 0, 0, 0];
        b[4..8].copy_from_slice(&id.to_le_bytes());
        b
    }

    /// Decodes one record from untrusted bytes; `None` if malformed. Never panics.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != WAKE_RECORD_BYTES || b[0] != WAKE_MAGIC || b[3] != 0 {
            return None;
        }
        let kind = match b[1] {
            1 => WakeKind::Data,
            2 => WakeKind::Space,
            3 => WakeKind::Connect,
            4 => WakeKind::Accepted,
            5 => WakeKind::Attached,
            6 => WakeKind::Rejected,
            _ => return None,
        };
        let id = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let sender = match b[2] {
            0 => Endpoint::Node(id),
            1 => Endpoint::Client(id),
            _ => return None,
        };
        Some(WakeRecord { kind, sender })
    }
}

/// Opens a FIFO for writing without blocking; `Ok(None)` when it does not exist or nobody reads
/// it (ENXIO): the owner is not running.
fn open_writer(path: &Path) -> Result<Option<OwnedFd>, Errno> {
    match nix::fcntl::open(
        path,
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENXIO | Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a live process holds the FIFO at `path` open for reading.
pub(crate) fn fifo_has_reader(path: &Path) -> bool {
    matches!(open_writer(path), Ok(Some(_)))
}

/// Our own FIFO, held open read-write (so it never reports EOF and `open` never blocks).
pub(crate) struct WakeInbox {
    fd: OwnedFd,
    /// An epoll instance watching `fd` edge-triggered (EPOLLET): `wait` returns when a
    /// record is written, even while earlier records are still unread, which lets
    /// `Transport::wait` sleep and wake with one system call and leave the (hint-only) record
    /// to a later drain. `None` when this kernel does not report a write to a non-empty pipe
    /// as a new edge (checked once per process, `epollet_sees_every_write`): then `wait` polls
    /// level-triggered and the caller must drain after every wake-up.
    edge: Option<Epoll>,
    pub(crate) path: PathBuf,
    /// Bytes of an incomplete record left by the last read (only garbage produces these).
    buf: Vec<u8>,
}

impl WakeInbox {
    /// Creates the FIFO for `owner` in `dir`: mkfifo 0600 under a temporary name, open it, then
    /// publish it under its final name. With `replace`, an existing FIFO nobody reads (our dead
    /// predecessor's) is replaced by rename; a read one means another live process is `owner`.
    /// Without `replace` (clients), publication uses link(2), which fails if the name is taken.
    pub(crate) fn create(
        dir: &Path,
        owner: Endpoint,
        replace: bool,
    ) -> Result<Option<Self>, SetupError> {
        let path = dir.join(crate::dir::fifo_file_name(owner));
        if replace && fifo_has_reader(&path) {
            return Err(SetupError::AlreadyRunning {
                endpoint: owner,
                path,
            });
        }
        let tmp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            crate::dir::fifo_file_name(owner)
        ));
        let _ = std::fs::remove_file(&tmp);
        let io = |op, path: &Path, e: Errno| SetupError::Io {
            op,
            path: path.into(),
            source: std::io::Error::from(e),
        };
        nix::unistd::mkfifo(&tmp, Mode::S_IRUSR | Mode::S_IWUSR)
            .map_err(|e| io("mkfifo", &tmp, e))?;
        let fd = nix::fcntl::open(
            &tmp,
            OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        );
        let fd = match fd {
            Ok(fd) => fd,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(io("open fifo", &tmp, e));
            }
        };
        let edge = if epollet_sees_every_write() {
            let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).and_then(|ep| {
                ep.add(
                    &fd,
                    EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, 0),
                )
                .map(|()| ep)
            });
            match ep {
                Ok(ep) => Some(ep),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(io("epoll fifo", &tmp, e));
                }
            }
        } else {
            None
        };
        let published = if replace {
            std::fs::rename(&tmp, &path).map(|()| true)
        } else {
            let r = match std::fs::hard_link(&tmp, &path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            };
            let _ = std::fs::remove_file(&tmp);
            r
        };
        match published {
            Ok(true) => Ok(Some(Self {
                fd,
                edge,
                path,
                buf: Vec::new(),
            })),
            Ok(false) => Ok(None),
            Err(source) => {
                let _ = std::fs::remove_file(&tmp);
                Err(SetupError::Io {
                    op: "publish fifo",
                    path,
                    source,
                })
            }
        }
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(crate) fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether `wait` is edge-triggered (see `edge`): if not, every wake-up must be followed by
    /// a drain, or the next `wait` returns at once.
    pub(crate) fn edge_triggered(&self) -> bool {
        self.edge.is_some()
    }

    /// Sleeps until the FIFO gets a record or `timeout` passes; returns whether it did. With
    /// `edge`: until a record is written after the previous `wait` returned (records written
    /// before, read or not, do not count): one epoll_wait(2), nothing read. Without: until the
    /// FIFO is readable (one poll(2)).
    pub(crate) fn wait(&self, timeout: PollTimeout) -> nix::Result<bool> {
        if let Some(edge) = &self.edge {
            let mut ev = [EpollEvent::empty()];
            return edge.wait(&mut ev, timeout).map(|n| n > 0);
        }
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        nix::poll::poll(&mut fds, timeout).map(|n| n > 0)
    }

    /// Reads everything available without blocking and hands each well-formed record to
    /// `on_record`. Returns the number of read(2) calls and any garbage found. Bounded: at most
    /// 64 reads of 4 KiB per call.
    pub(crate) fn drain(
        &mut self,
        mut on_record: impl FnMut(WakeRecord),
    ) -> (u32, Option<ProtocolError>) {
        let mut chunk = [0u8; 4096];
        let mut reads = 0;
        let mut garbage = 0usize;
        for _ in 0..64 {
            reads += 1;
            match nix::unistd::read(&self.fd, &mut chunk) {
                Ok(0) | Err(Errno::EAGAIN) => break,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    let whole = self.buf.len() / WAKE_RECORD_BYTES * WAKE_RECORD_BYTES;
                    for rec in self.buf[..whole].chunks_exact(WAKE_RECORD_BYTES) {
                        match WakeRecord::decode(rec) {
                            Some(r) => on_record(r),
                            None => garbage += WAKE_RECORD_BYTES,
                        }
                    }
                    self.buf.drain(..whole);
                    if n < chunk.len() {
                        break;
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        if !self.buf.is_empty() {
            // Only a stray writer leaves a partial record: drop it to resynchronise.
            garbage += self.buf.len();
            self.buf.clear();
        }
        (
            reads,
            (garbage > 0).then_some(ProtocolError::WakeGarbage { bytes: garbage }),
        )
    }

    /// Removes the FIFO's name (clean shutdown).
    pub(crate) fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether this kernel reports every write to a pipe as a new EPOLLET edge, even when the pipe
/// already holds unread bytes (Linux does for pipes that have been polled since 5.15-5.16;
/// between 5.5 and those releases a write woke readers only when the pipe was empty). Checked
/// once per process on a scratch pipe: write, consume the edge, write again, look for a second
/// edge. Any failure answers no (the level-triggered path is always correct).
fn epollet_sees_every_write() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| {
        let probe = || -> nix::Result<bool> {
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
            let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
            ep.add(
                &r,
                EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, 0),
            )?;
            let mut ev = [EpollEvent::empty()];
            nix::unistd::write(&w, &[1])?;
            if ep.wait(&mut ev, PollTimeout::ZERO)? != 1 {
                return Ok(false);
            }
            nix::unistd::write(&w, &[2])?;
            Ok(ep.wait(&mut ev, PollTimeout::ZERO)? == 1)
        };
        let yes = probe().unwrap_or(false);
        if !yes {
            tracing::info!(
                "this kernel does not report writes to a non-empty pipe to EPOLLET waiters; \
                 parked waits drain their FIFO after every wake-up"
            );
        }
        yes
    })
}

/// Result of writing a wake-up record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WakeSend {
    /// Written, or the FIFO was full (the reader has unread wake-ups anyway).
    Sent,
    /// Nobody reads the FIFO any more: the peer died (EPIPE; SIGPIPE is ignored).
    PeerGone,
}

/// A peer's FIFO, open for writing.
pub(crate) struct WakeTarget {
    fd: OwnedFd,
}

impl WakeTarget {
    /// Opens the FIFO of `owner`; `None` if it is not running.
    pub(crate) fn open(dir: &Path, owner: Endpoint) -> Option<Self> {
        let path = dir.join(crate::dir::fifo_file_name(owner));
        match open_writer(&path) {
            Ok(Some(fd)) => Some(Self { fd }),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open peer FIFO");
                None
            }
        }
    }

    /// Writes one record (one write(2)).
    pub(crate) fn send(&self, rec: WakeRecord) -> WakeSend {
        loop {
            match nix::unistd::write(&self.fd, &rec.encode()) {
                Ok(_) | Err(Errno::EAGAIN) => return WakeSend::Sent,
                Err(Errno::EINTR) => continue,
                Err(_) => return WakeSend::PeerGone,
            }
        }
    }

    /// Whether the reader end is gone (poll reports POLLERR on a FIFO without readers).
    pub(crate) fn peer_gone(&self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLOUT)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn record_round_trip() {
        for kind in [
            WakeKind::Data,
            WakeKind::Space,
            WakeKind::Connect,
            WakeKind::Accepted,
            WakeKind::Attached,
            WakeKind::Rejected,
        ] {
            for sender in [Endpoint::Node(7), Endpoint::Client(0xdead_beef)] {
                let r = WakeRecord { kind, sender };
                assert_eq!(WakeRecord::decode(&r.encode()), Some(r));
            }
        }
    }

    /// `WakeInbox::wait` with `edge`: a record wakes it once, read or not; the next record
    /// wakes it again. Without `edge` (old kernels), an unread record keeps waking it.
    #[test]
    fn inbox_wait_reports_each_write_once_when_edge_triggered() {
        let dir = tempfile::tempdir().unwrap();
        let me = Endpoint::Node(1);
        let inbox = WakeInbox::create(dir.path(), me, true).unwrap().unwrap();
        let target = WakeTarget::open(dir.path(), me).unwrap();
        let rec = WakeRecord {
            kind: WakeKind::Data,
            sender: Endpoint::Node(2),
        };
        assert!(
            !inbox.wait(PollTimeout::ZERO).unwrap(),
            "nothing written yet"
        );
        assert_eq!(target.send(rec), WakeSend::Sent);
        assert!(inbox.wait(PollTimeout::ZERO).unwrap());
        // The record is still unread.
        let again = inbox.wait(PollTimeout::ZERO).unwrap();
        assert_eq!(again, !inbox.edge_triggered());
        assert_eq!(target.send(rec), WakeSend::Sent);
        assert!(
            inbox.wait(PollTimeout::ZERO).unwrap(),
            "a new write wakes again"
        );
        let mut inbox = inbox;
        let mut got = Vec::new();
        let (_, garbage) = inbox.drain(|r| got.push(r));
        assert_eq!((got, garbage), (vec![rec, rec], None));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = WakeRecord::decode(&bytes);
        }
    }
}
