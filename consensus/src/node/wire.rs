//! The node's frame kinds and the client protocol carried over `shmraft-ipc` frames.
//!
//! Raft messages travel as frames of kind [`KIND_RAFT`] holding `encode_message` bytes. Clients
//! send [`ClientFrame`]s (kind [`KIND_CLIENT_REQUEST`]) and receive [`ServerFrame`]s (kind
//! [`KIND_CLIENT_RESPONSE`]). Every frame from another process is untrusted: decoding returns an
//! error for any malformed input and never panics. Layout (version 1, little-endian) in
//! docs/FORMAT.md, "Client protocol".

use crate::types::NodeId;
use thiserror::Error;

/// Frame kind of a Raft message between nodes.
pub const KIND_RAFT: u16 = 1;
/// Frame kind of a client request (client → node).
pub const KIND_CLIENT_REQUEST: u16 = 2;
/// Frame kind of a response (node → client).
pub const KIND_CLIENT_RESPONSE: u16 = 3;

/// Version byte that starts every client-protocol frame.
pub const CLIENT_PROTOCOL_VERSION: u8 = 1;
/// Longest payload (command, query, result or message) a client-protocol frame may carry.
pub const CLIENT_PAYLOAD_BYTES_MAX: usize = 16 << 20;

const OP_WRITE: u8 = 1;
const OP_READ: u8 = 2;
const OP_STATUS: u8 = 3;

const ST_OK: u8 = 1;
const ST_NOT_LEADER: u8 = 2;
const ST_RETRY: u8 = 3;
const ST_ERROR: u8 = 4;

/// A client's request to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientFrame {
    /// A write: `envelope` is an encoded [`crate::ClientRequest`] (session envelope around the
    /// state machine's command), proposed to the log by the leader.
    Write { req_id: u64, envelope: Vec<u8> },
    /// A linearizable read: `query` is answered by `StateMachine::query` after ReadIndex
    /// (Raft thesis §6.4).
    Read { req_id: u64, query: Vec<u8> },
    /// The node's status as JSON (any node answers, leader or not).
    Status { req_id: u64 },
}

/// A [`ClientFrame`] decoded in place: payloads borrowed from the frame (the node's receive
/// path copies a write's envelope once, straight into its log payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFrameRef<'a> {
    Write { req_id: u64, envelope: &'a [u8] },
    Read { req_id: u64, query: &'a [u8] },
    Status { req_id: u64 },
}

/// A node's answer to a [`ClientFrame`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerFrame {
    /// Done: for a write, an encoded [`crate::SessionResult`]; for a read, the query's result;
    /// for a status request, JSON.
    Ok { req_id: u64, result: Vec<u8> },
    /// This node is not the leader; `leader_hint` is the leader it knows of (0: unknown).
    NotLeader { req_id: u64, leader_hint: NodeId },
    /// Not done, and certainly not applied: retry (later, or elsewhere). For example the
    /// proposal's entry was overwritten by a new leader, or the leader is backpressured.
    Retry { req_id: u64, reason: String },
    /// The request is invalid and retrying will not help.
    Error { req_id: u64, message: String },
}

/// A client-protocol frame that does not decode.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    #[error("frame of {len} bytes is shorter than its {need}-byte header or fields")]
    Truncated { len: usize, need: usize },
    #[error("client protocol version {0} is not supported (this build speaks version 1)")]
    Version(u8),
    #[error("unknown {what} code {code}")]
    UnknownCode { what: &'static str, code: u8 },
    #[error("payload of {len} bytes exceeds the {max}-byte limit")]
    TooLong { len: usize, max: usize },
    #[error("{0} trailing bytes after the frame")]
    Trailing(usize),
    #[error("message is not UTF-8")]
    NotUtf8,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let Some(end) = end else {
            return Err(WireError::Truncated {
                len: self.b.len(),
                need: self.at.saturating_add(n),
            });
        };
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let s = self.take(8)?;
        Ok(u64::from_le_bytes(s.try_into().expect("8 bytes")))
    }
    /// A `u32` length then that many bytes, bounded before anything is allocated (storage
    /// rule 7 applies to shared memory too: ipc rule 3 of docs/RULES.md).
    fn bytes(&mut self) -> Result<Vec<u8>, WireError> {
        Ok(self.slice()?.to_vec())
    }
    fn slice(&mut self) -> Result<&'a [u8], WireError> {
        let s = self.take(4)?;
        let len = u32::from_le_bytes(s.try_into().expect("4 bytes")) as usize;
        if len > CLIENT_PAYLOAD_BYTES_MAX {
            return Err(WireError::TooLong {
                len,
                max: CLIENT_PAYLOAD_BYTES_MAX,
            });
        }
        self.take(len)
    }
    fn string(&mut self) -> Result<String, WireError> {
        String::from_utf8(self.bytes()?).map_err(|_| WireError::NotUtf8)
    }
    fn finish(self) -> Result<(), WireError> {
        match self.b.len() - self.at {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

fn header(out: &mut Vec<u8>, code: u8, req_id: u64) {
    out.push(CLIENT_PROTOCOL_VERSION);
    out.push(code);
    out.extend_from_slice(&req_id.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Lengths above the limit are refused by the decoder; the encoder clamps nothing and callers
    // keep payloads within CLIENT_PAYLOAD_BYTES_MAX.
    debug_assert!(b.len() <= CLIENT_PAYLOAD_BYTES_MAX);
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn open(b: &[u8]) -> Result<(Reader<'_>, u8, u64), WireError> {
    let mut r = Reader { b, at: 0 };
    let v = r.u8()?;
    if v != CLIENT_PROTOCOL_VERSION {
        return Err(WireError::Version(v));
    }
    let code = r.u8()?;
    let req_id = r.u64()?;
    Ok((r, code, req_id))
}

impl ClientFrame {
    pub fn req_id(&self) -> u64 {
        match self {
            ClientFrame::Write { req_id, .. }
            | ClientFrame::Read { req_id, .. }
            | ClientFrame::Status { req_id } => *req_id,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        match self {
            ClientFrame::Write { req_id, envelope } => {
                header(&mut out, OP_WRITE, *req_id);
                put_bytes(&mut out, envelope);
            }
            ClientFrame::Read { req_id, query } => {
                header(&mut out, OP_READ, *req_id);
                put_bytes(&mut out, query);
            }
            ClientFrame::Status { req_id } => header(&mut out, OP_STATUS, *req_id),
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<ClientFrame, WireError> {
        Ok(match ClientFrame::decode_ref(b)? {
            ClientFrameRef::Write { req_id, envelope } => ClientFrame::Write {
                req_id,
                envelope: envelope.to_vec(),
            },
            ClientFrameRef::Read { req_id, query } => ClientFrame::Read {
                req_id,
                query: query.to_vec(),
            },
            ClientFrameRef::Status { req_id } => ClientFrame::Status { req_id },
        })
    }

    /// Decodes in place; any malformed input is an error, never a panic.
    pub fn decode_ref(b: &[u8]) -> Result<ClientFrameRef<'_>, WireError> {
        let (mut r, code, req_id) = open(b)?;
        let f = match code {
            OP_WRITE => ClientFrameRef::Write {
                req_id,
                envelope: r.slice()?,
            },
            OP_READ => ClientFrameRef::Read {
                req_id,
                query: r.slice()?,
            },
            OP_STATUS => ClientFrameRef::Status { req_id },
            code => {
                return Err(WireError::UnknownCode {
                    what: "client operation",
                    code,
                });
            }
        };
        r.finish()?;
        Ok(f)
    }
}

impl ServerFrame {
    pub fn req_id(&self) -> u64 {
        match self {
            ServerFrame::Ok { req_id, .. }
            | ServerFrame::NotLeader { req_id, .. }
            | ServerFrame::Retry { req_id, .. }
            | ServerFrame::Error { req_id, .. } => *req_id,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        match self {
            ServerFrame::Ok { req_id, result } => {
                header(&mut out, ST_OK, *req_id);
                put_bytes(&mut out, result);
            }
            ServerFrame::NotLeader {
                req_id,
                leader_hint,
            } => {
                header(&mut out, ST_NOT_LEADER, *req_id);
                out.extend_from_slice(&leader_hint.get().to_le_bytes());
            }
            ServerFrame::Retry { req_id, reason } => {
                header(&mut out, ST_RETRY, *req_id);
                put_bytes(&mut out, reason.as_bytes());
            }
            ServerFrame::Error { req_id, message } => {
                header(&mut out, ST_ERROR, *req_id);
                put_bytes(&mut out, message.as_bytes());
            }
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<ServerFrame, WireError> {
        let (mut r, code, req_id) = open(b)?;
        let f = match code {
            ST_OK => ServerFrame::Ok {
                req_id,
                result: r.bytes()?,
            },
            ST_NOT_LEADER => ServerFrame::NotLeader {
                req_id,
                leader_hint: NodeId(r.u64()?),
            },
            ST_RETRY => ServerFrame::Retry {
                req_id,
                reason: r.string()?,
            },
            ST_ERROR => ServerFrame::Error {
                req_id,
                message: r.string()?,
            },
            code => {
                return Err(WireError::UnknownCode {
                    what: "response status",
                    code,
                });
            }
        };
        r.finish()?;
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_frame_round_trips() {
        let frames = [
            ClientFrame::Write {
                req_id: 7,
                envelope: b"env".to_vec(),
            },
            ClientFrame::Read {
                req_id: u64::MAX,
                query: vec![],
            },
            ClientFrame::Status { req_id: 0 },
        ];
        for f in frames {
            assert_eq!(ClientFrame::decode(&f.encode()).unwrap(), f);
        }
        let frames = [
            ServerFrame::Ok {
                req_id: 1,
                result: b"r".to_vec(),
            },
            ServerFrame::NotLeader {
                req_id: 2,
                leader_hint: NodeId(3),
            },
            ServerFrame::Retry {
                req_id: 3,
                reason: "overwritten".into(),
            },
            ServerFrame::Error {
                req_id: 4,
                message: "bad".into(),
            },
        ];
        for f in frames {
            assert_eq!(ServerFrame::decode(&f.encode()).unwrap(), f);
        }
    }

    #[test]
    fn huge_length_is_refused_before_allocating() {
        let mut b = vec![CLIENT_PROTOCOL_VERSION, OP_WRITE];
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            ClientFrame::decode(&b),
            Err(WireError::TooLong { .. })
        ));
    }

    #[test]
    fn wrong_version_and_trailing_bytes_are_errors() {
        let mut b = ClientFrame::Status { req_id: 1 }.encode();
        b[0] = 9;
        assert_eq!(ClientFrame::decode(&b), Err(WireError::Version(9)));
        let mut b = ClientFrame::Status { req_id: 1 }.encode();
        b.push(0);
        assert_eq!(ClientFrame::decode(&b), Err(WireError::Trailing(1)));
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = ClientFrame::decode(&bytes);
            let _ = ServerFrame::decode(&bytes);
        }

        #[test]
        fn write_round_trips(req_id in any::<u64>(), env in proptest::collection::vec(any::<u8>(), 0..256)) {
            let f = ClientFrame::Write { req_id, envelope: env };
            prop_assert_eq!(ClientFrame::decode(&f.encode()).unwrap(), f);
        }
    }
}
