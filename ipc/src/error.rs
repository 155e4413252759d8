//! Error types, one per operation (style practice 8).

use std::path::PathBuf;

use crate::Endpoint;

/// Creating a transport, its runtime directory, its rings or its wake-up FIFO failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A system call on a file in the runtime directory failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`create ring`, `mkfifo`, ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The runtime directory exists but is not a private directory of this user (ipc rule 8
    /// of docs/RULES.md).
    #[error(
        "runtime directory {path} is not safe to use: {detail}; remove it or fix its owner/mode (want a directory owned by uid {uid} with mode 0700)"
    )]
    InsecureRuntimeDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
        /// Our effective uid.
        uid: u32,
    },
    /// Another live process already plays this endpoint in this runtime directory.
    #[error("{endpoint} is already running in {path} (its wake-up FIFO has a live reader)")]
    AlreadyRunning {
        /// The endpoint we tried to become.
        endpoint: Endpoint,
        /// The FIFO that proved it.
        path: PathBuf,
    },
    /// The configuration is unusable.
    #[error("bad ipc configuration: {0}")]
    BadConfig(String),
}

/// Why a non-blocking send did not accept a batch. Nothing of the batch was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The ring to this peer has no room for the whole batch: backpressure (ipc rule 7
    /// of docs/RULES.md). A `LinkEvent::Writable` is delivered once the receiver frees space.
    #[error("ring to {peer} is full")]
    Full {
        /// The receiver.
        peer: Endpoint,
    },
    /// The receiving process is not running (not started yet, crashed or shut down).
    #[error("{peer} is down")]
    PeerDown {
        /// The receiver.
        peer: Endpoint,
    },
    /// No link to this endpoint exists (not a configured peer, or a client that is gone).
    #[error("no link to {peer}")]
    UnknownPeer {
        /// The endpoint named by the caller.
        peer: Endpoint,
    },
    /// A single frame is larger than the configured `max_message_bytes`.
    #[error("frame of {bytes} bytes to {peer} exceeds max_message_bytes {max}")]
    TooLarge {
        /// The receiver.
        peer: Endpoint,
        /// Size of the offending payload.
        bytes: usize,
        /// The configured bound.
        max: usize,
    },
}

/// A client could not connect to a node.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The node's wake-up FIFO does not exist or has no reader: the node is not running.
    #[error("node {node} is not running (no live FIFO in the runtime directory)")]
    NodeDown {
        /// The node.
        node: u32,
    },
    /// The node did not answer in time.
    #[error("node {node} did not accept the connection within {waited_ms} ms")]
    Timeout {
        /// The node.
        node: u32,
        /// How long we waited.
        waited_ms: u64,
    },
    /// The node refused the connection (too many clients, or it could not validate our ring).
    #[error("node {node} rejected the connection")]
    Rejected {
        /// The node.
        node: u32,
    },
    /// The node belongs to another cluster: its rings carry another cluster id. Found after a
    /// rejection by reading the node's ring headers in the runtime directory.
    #[error(
        "node {node} belongs to cluster {theirs}, not cluster {ours}: give the client the \
         cluster id the nodes were started with"
    )]
    ClusterMismatch {
        /// The node.
        node: u32,
        /// The client's cluster id.
        ours: u64,
        /// The cluster id in the node's ring headers.
        theirs: u64,
    },
    /// Only client transports connect; nodes have static peers.
    #[error("only a client transport can connect")]
    NotAClient,
    /// Creating our side of the link failed.
    #[error(transparent)]
    Setup(#[from] SetupError),
}

/// A ring header that cannot be attached. Returned by [`crate::RingHeader::decode`] and used in
/// rejection reasons; every variant is the result of checking untrusted bytes (ipc rule 3
/// of docs/RULES.md).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer bytes than a header.
    #[error("header truncated: {len} bytes")]
    Truncated {
        /// Bytes available.
        len: usize,
    },
    /// Wrong magic number: not a shmraft ring.
    #[error("bad magic {found:#018x}")]
    BadMagic {
        /// Magic found.
        found: u64,
    },
    /// A layout version this build does not understand.
    #[error("unsupported layout version {found} (this build reads {supported})")]
    BadVersion {
        /// Version found.
        found: u32,
        /// Version supported.
        supported: u32,
    },
    /// The header's own checksum does not match.
    #[error("header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadChecksum {
        /// Stored value.
        stored: u32,
        /// Computed value.
        computed: u32,
    },
    /// A field has an impossible value.
    #[error("bad header field {field}: {value}")]
    BadField {
        /// Field name as in docs/FORMAT.md.
        field: &'static str,
        /// Value found.
        value: u64,
    },
    /// The file size does not match the declared capacity.
    #[error("file is {file_bytes} bytes, header declares {declared_bytes}")]
    SizeMismatch {
        /// Actual size.
        file_bytes: u64,
        /// Size the header implies.
        declared_bytes: u64,
    },
    /// The ring belongs to another cluster.
    #[error("ring belongs to cluster {found:#x}, we are cluster {expected:#x}")]
    WrongCluster {
        /// Cluster id found.
        found: u64,
        /// Our cluster id.
        expected: u64,
    },
    /// The ring's endpoints are not the ones its file name promises.
    #[error("ring connects {found_from} -> {found_to}, expected {expected_from} -> {expected_to}")]
    WrongEndpoints {
        /// Writer found.
        found_from: Endpoint,
        /// Reader found.
        found_to: Endpoint,
        /// Writer expected.
        expected_from: Endpoint,
        /// Reader expected.
        expected_to: Endpoint,
    },
    /// The process that wrote the ring is dead.
    #[error("ring writer pid {pid} is dead")]
    WriterDead {
        /// Its pid.
        pid: u32,
    },
}

/// A protocol violation found on a link: the link is reset and the cause logged (ipc rule 3
/// of docs/RULES.md). Produced by hostile or corrupted shared memory, never by a correct peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The ring indices break `head <= tail <= head + capacity` or alignment.
    #[error("ring indices out of bounds: head {head}, tail {tail}, capacity {capacity}")]
    BadIndices {
        /// Head (consumer index).
        head: u64,
        /// Tail (producer index).
        tail: u64,
        /// Ring capacity in bytes.
        capacity: u64,
    },
    /// A frame header is malformed.
    #[error("malformed frame at ring position {pos}: {reason}")]
    BadFrame {
        /// Ring position of the frame.
        pos: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A frame's checksum does not match its bytes (torn, stale or garbage).
    #[error("frame checksum mismatch at ring position {pos}")]
    ChecksumMismatch {
        /// Ring position of the frame.
        pos: u64,
    },
    /// Fragments of a large message arrived out of order, too big, or inconsistent.
    #[error("bad fragment sequence: {reason}")]
    Reassembly {
        /// What is wrong.
        reason: &'static str,
    },
    /// Garbage was read from a wake-up FIFO.
    #[error("garbage on wake-up FIFO ({bytes} bytes)")]
    WakeGarbage {
        /// Bytes discarded.
        bytes: usize,
    },
}
