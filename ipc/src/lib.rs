//! shmraft-ipc: the transport between local node processes.
//!
//! Single-writer rings in shared memory carry bulk data; FIFOs carry wake-ups. This crate knows
//! nothing of Raft: it moves checksummed frames between processes. Every byte read from shared
//! memory is untrusted input. See `docs/FORMAT.md` for the ring layout and ARCHITECTURE.md for
//! the design; comments cite the ipc rules of `docs/RULES.md` by number.
//!
//! A node's event loop, in outline:
//!
//! ```no_run
//! use shmraft_ipc::{Endpoint, Incoming, OutFrame, Transport, TransportConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = TransportConfig::new(shmraft_ipc::default_runtime_dir("demo"), 42);
//! let mut t = Transport::node(cfg, 1, &[1, 2, 3])?;
//! loop {
//!     t.wait(Some(std::time::Duration::from_millis(10)))?; // or poll t.as_raw_fd() yourself
//!     t.recv(|inc| match inc {
//!         Incoming::Frame(f) => { /* checked frame: f.from, f.kind, f.payload */ }
//!         Incoming::Event(e) => { /* Up / Down / Reset / Writable / Rejected */ }
//!     });
//!     // Full and PeerDown are normal outcomes: Raft resends later (ipc rule 7 of docs/RULES.md).
//!     let _ = t.send_batch(Endpoint::Node(2), &[OutFrame { kind: 1, payload: b"append" }]);
//! #   break;
//! }
//! # Ok(()) }
//! ```
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod crc32c;
mod dir;
mod error;
mod frame;
mod ring;
mod shm;
mod transport;
mod wake;

pub use crc32c::crc32c;
pub use dir::{SweepReport, default_runtime_dir, fifo_file_name, ring_file_name, sweep};
pub use error::{ConnectError, HeaderError, ProtocolError, SendError, SetupError};
pub use frame::{
    FLAG_FRAGMENT, FLAG_LAST, FLAG_PAD, FRAME_ALIGN, FRAME_HEADER_BYTES, FrameHeader, Reassembled,
    Reassembly, frame_checksum, record_bytes,
};
#[cfg(feature = "fault-injection")]
pub use ring::{FAULT_SIGNAL, FAULT_STOP_AT_STEP};
pub use ring::{
    RING_DATA_OFFSET, RING_HEADER_BYTES, RING_LAYOUT_VERSION, RING_MAGIC, RING_MAX_BYTES,
    RING_MIN_BYTES, RingHeader, read_ring_header,
};
pub use transport::{
    Frame, Incoming, LinkEvent, OutFrame, Transport, TransportConfig, TransportStats, Waker,
};
pub use wake::{WAKE_MAGIC, WAKE_RECORD_BYTES, WakeKind, WakeRecord};

/// A process in a cluster: a node (static id from the cluster configuration) or a client
/// (dynamic id chosen at connect time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// A node process.
    Node(u32),
    /// A client process (the `kv` command, a load generator, an embedding application).
    Client(u32),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Node(id) => write!(f, "node {id}"),
            Endpoint::Client(id) => write!(f, "client {id:08x}"),
        }
    }
}
