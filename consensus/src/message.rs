//! Log entries, persistent state and the messages Raft nodes exchange, as plain serde types, with
//! bincode encode/decode helpers that return errors (never panic) on bad bytes.

use crate::types::{Index, NodeId, Term};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;
use thiserror::Error;

/// An immutable, cheaply clonable byte payload (an entry's command). Cloning shares the bytes, so
/// handing an entry to the log, to each follower's message and to the applier allocates nothing
/// beyond the payload itself.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Payload(Arc<[u8]>);

impl Payload {
    pub fn new(bytes: Vec<u8>) -> Payload {
        Payload(bytes.into())
    }
    pub fn from_slice(bytes: &[u8]) -> Payload {
        Payload(bytes.into())
    }
    /// A copy of `bytes` that `edit` may change before it is shared (one allocation).
    pub fn from_slice_with<R>(bytes: &[u8], edit: impl FnOnce(&mut [u8]) -> R) -> (Payload, R) {
        let mut a: Arc<[u8]> = bytes.into();
        let r = edit(Arc::get_mut(&mut a).expect("a fresh Arc is unique"));
        (Payload(a), r)
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Payload, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Payload;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Payload, E> {
                Ok(Payload::from_slice(v))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Payload, E> {
                Ok(Payload::new(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Payload, A::Error> {
                let mut out = Vec::with_capacity(a.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = a.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Payload::new(out))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A client command, opaque to the core, handed to the state machine.
    Normal,
    /// The empty entry a new leader appends to commit an entry of its own term (Raft §5.4.2,
    /// §8). Not handed to the state machine's `apply` (the driver skips it).
    Noop,
    /// A membership configuration (`Membership` encoded with `encode`). Reserved so joint
    /// consensus can be added without a format break: this version never proposes one and its
    /// membership is fixed by `Config::voters`.
    Membership,
}

/// One log entry (Raft §5.3). `index` and `term` are immutable once written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub index: Index,
    pub term: Term,
    pub kind: EntryKind,
    pub data: Payload,
}

/// Fixed per-entry overhead counted in byte limits (index, term, kind, length).
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

impl Entry {
    /// Size counted against byte limits (windows, batches, snapshot triggers).
    #[inline]
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// State that must be durable before the node answers anything that depends on it (Raft Figure 2
/// "persistent state on all servers"; commit_index is persisted too so a restart replays up to it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// Latest term this node has seen; only grows. MUST be durable before any message of that
    /// term is sent.
    pub current_term: Term,
    /// Candidate voted for in `current_term` (NodeId 0: none). MUST be durable before the vote is
    /// sent (Raft §5.2).
    pub voted_for: NodeId,
    /// Highest index known committed (may lag; volatile in the paper, persisted as a hint).
    pub commit_index: Index,
}

/// The voting membership. `voters_outgoing` is empty unless a joint configuration (Raft §6) is in
/// effect; this version always leaves it empty, the field exists for format stability.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub voters: Vec<NodeId>,
    pub voters_outgoing: Vec<NodeId>,
}

/// What a snapshot covers (Raft §7): the last included entry and the membership as of it.
/// `last_included_index == 0` means "no snapshot".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub last_included_index: Index,
    pub last_included_term: Term,
    pub membership: Membership,
}

/// A message between two nodes. Every message carries its sender's term (Raft §5.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: MessageBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// RequestVote (Raft §5.2) or, with `pre_vote`, the PreVote probe (thesis §9.6) for `term`
    /// without the sender having incremented its own term.
    RequestVote {
        pre_vote: bool,
        last_log_index: Index,
        last_log_term: Term,
        /// Sent after TimeoutNow: voters skip leader stickiness (thesis §3.10).
        leadership_transfer: bool,
    },
    RequestVoteResponse {
        pre_vote: bool,
        vote_granted: bool,
    },
    /// AppendEntries (Raft §5.3).
    AppendEntries {
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
    },
    /// Success carries `match_index`, the last index known to match the leader (durable on the
    /// sender). A rejection carries `rejected_index` (the request's prev_log_index) and the fast
    /// backtracking hint (thesis §5.3 "conflict term and index").
    AppendEntriesResponse {
        success: bool,
        match_index: Index,
        rejected_index: Index,
        conflict_term: Term,
        conflict_index: Index,
    },
    /// Leader liveness, commit propagation and ReadIndex confirmation round `read_seq`.
    Heartbeat {
        leader_commit: Index,
        read_seq: u64,
    },
    HeartbeatResponse {
        read_seq: u64,
    },
    /// One chunk of a snapshot (Raft §7): bytes `[offset, offset + data.len())`, `done` on the last.
    InstallSnapshot {
        meta: SnapshotMeta,
        offset: u64,
        data: Payload,
        done: bool,
    },
    /// `next_offset`: bytes received so far (0 asks the leader to restart); `done`: the follower
    /// now holds everything up to `snapshot_index` durably.
    InstallSnapshotResponse {
        snapshot_index: Index,
        next_offset: u64,
        done: bool,
    },
    /// Leadership transfer (thesis §3.10): start an election now.
    TimeoutNow,
}

impl MessageBody {
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::RequestVote { pre_vote: true, .. } => "PreVote",
            MessageBody::RequestVote { .. } => "RequestVote",
            MessageBody::RequestVoteResponse { pre_vote: true, .. } => "PreVoteResponse",
            MessageBody::RequestVoteResponse { .. } => "RequestVoteResponse",
            MessageBody::AppendEntries { .. } => "AppendEntries",
            MessageBody::AppendEntriesResponse { .. } => "AppendEntriesResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::InstallSnapshotResponse { .. } => "InstallSnapshotResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
        }
    }
}

/// Largest encoded value `decode` accepts; longer inputs (or corrupt lengths claiming more) are
/// refused before anything that size is allocated.
pub const MAX_ENCODED_BYTES: usize = 64 * 1024 * 1024;

fn codec_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_ENCODED_BYTES>()
}

#[derive(Debug, Error)]
pub enum CodecError {
    #[error("encoding a {what} failed: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: bincode::error::EncodeError,
    },
    #[error("decoding a {what} from {len} bytes failed: {source}")]
    Decode {
        what: &'static str,
        len: usize,
        #[source]
        source: bincode::error::DecodeError,
    },
    #[error("decoding a {what}: {trailing} unexpected bytes after the value ({len} bytes in all)")]
    TrailingBytes {
        what: &'static str,
        len: usize,
        trailing: usize,
    },
    #[error("a {what} of {len} bytes exceeds the {max}-byte limit")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
}

/// Encodes any of this module's types (messages, entries, hard state, membership, snapshot
/// metadata) with bincode's standard configuration.
pub fn encode<T: Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>, CodecError> {
    let out = bincode::serde::encode_to_vec(value, codec_config())
        .map_err(|source| CodecError::Encode { what, source })?;
    Ok(out)
}

/// Decodes a value written by `encode`. Bad bytes give an error, never a panic; the whole input
/// must be consumed.
pub fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, CodecError> {
    if bytes.len() > MAX_ENCODED_BYTES {
        return Err(CodecError::TooLong {
            what,
            len: bytes.len(),
            max: MAX_ENCODED_BYTES,
        });
    }
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, codec_config()).map_err(|source| {
            CodecError::Decode {
                what,
                len: bytes.len(),
                source,
            }
        })?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes {
            what,
            len: bytes.len(),
            trailing: bytes.len() - used,
        });
    }
    Ok(value)
}

pub fn encode_message(m: &Message) -> Result<Vec<u8>, CodecError> {
    encode(m, "message")
}

pub fn decode_message(bytes: &[u8]) -> Result<Message, CodecError> {
    decode(bytes, "message")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_entry() -> impl Strategy<Value = Entry> {
        (
            any::<u64>(),
            any::<u64>(),
            0u8..3,
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(i, t, k, d)| Entry {
                index: Index(i),
                term: Term(t),
                kind: match k {
                    0 => EntryKind::Normal,
                    1 => EntryKind::Noop,
                    _ => EntryKind::Membership,
                },
                data: Payload::new(d),
            })
    }

    fn arb_meta() -> impl Strategy<Value = SnapshotMeta> {
        (
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(1u64..10, 0..5),
        )
            .prop_map(|(i, t, v)| SnapshotMeta {
                last_included_index: Index(i),
                last_included_term: Term(t),
                membership: Membership {
                    voters: v.into_iter().map(NodeId).collect(),
                    voters_outgoing: vec![],
                },
            })
    }

    fn arb_body() -> impl Strategy<Value = MessageBody> {
        prop_oneof![
            (any::<bool>(), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(p, i, t, l)| {
                MessageBody::RequestVote {
                    pre_vote: p,
                    last_log_index: Index(i),
                    last_log_term: Term(t),
                    leadership_transfer: l,
                }
            }),
            (any::<bool>(), any::<bool>()).prop_map(|(p, g)| MessageBody::RequestVoteResponse {
                pre_vote: p,
                vote_granted: g
            }),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(arb_entry(), 0..4),
                any::<u64>()
            )
                .prop_map(|(p, t, e, c)| MessageBody::AppendEntries {
                    prev_log_index: Index(p),
                    prev_log_term: Term(t),
                    entries: e,
                    leader_commit: Index(c),
                }),
            (
                any::<bool>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>()
            )
                .prop_map(|(s, m, r, t, c)| MessageBody::AppendEntriesResponse {
                    success: s,
                    match_index: Index(m),
                    rejected_index: Index(r),
                    conflict_term: Term(t),
                    conflict_index: Index(c),
                }),
            (any::<u64>(), any::<u64>()).prop_map(|(c, s)| MessageBody::Heartbeat {
                leader_commit: Index(c),
                read_seq: s
            }),
            any::<u64>().prop_map(|s| MessageBody::HeartbeatResponse { read_seq: s }),
            (
                arb_meta(),
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..64),
                any::<bool>()
            )
                .prop_map(|(m, o, d, done)| MessageBody::InstallSnapshot {
                    meta: m,
                    offset: o,
                    data: Payload::new(d),
                    done,
                }),
            (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(i, o, d)| {
                MessageBody::InstallSnapshotResponse {
                    snapshot_index: Index(i),
                    next_offset: o,
                    done: d,
                }
            }),
            Just(MessageBody::TimeoutNow),
        ]
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        (any::<u64>(), any::<u64>(), any::<u64>(), arb_body()).prop_map(|(f, t, term, body)| {
            Message {
                from: NodeId(f),
                to: NodeId(t),
                term: Term(term),
                body,
            }
        })
    }

    proptest! {
        #[test]
        fn message_roundtrip(m in arb_message()) {
            let bytes = encode_message(&m).unwrap();
            prop_assert_eq!(decode_message(&bytes).unwrap(), m);
        }

        #[test]
        fn decode_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_message(&bytes);
            let _ = decode::<HardState>(&bytes, "hard state");
            let _ = decode::<SnapshotMeta>(&bytes, "snapshot metadata");
        }

        #[test]
        fn decode_rejects_truncation_and_corruption(m in arb_message(), cut in any::<usize>(), flip in any::<usize>()) {
            let bytes = encode_message(&m).unwrap();
            let cut = cut % bytes.len();
            prop_assert!(decode_message(&bytes[..cut]).is_err());
            let mut extended = bytes.clone();
            extended.push(0);
            prop_assert!(
                matches!(decode_message(&extended), Err(CodecError::TrailingBytes { .. })),
                "an extra byte must be refused"
            );
            // A flipped byte either fails to decode or decodes to something well-formed; never a
            // panic.
            let mut flipped = bytes;
            let at = flip % flipped.len();
            flipped[at] ^= 0x5a;
            let _ = decode_message(&flipped);
        }
    }

    #[test]
    fn huge_length_prefix_is_refused_without_allocating() {
        // An InstallSnapshot whose payload claims ~2^60 bytes.
        let m = Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            body: MessageBody::InstallSnapshot {
                meta: SnapshotMeta::default(),
                offset: 0,
                data: Payload::new(vec![1, 2, 3]),
                done: true,
            },
        };
        let mut bytes = encode_message(&m).unwrap();
        // Find the payload length byte (3) followed by 1,2,3 and replace it with a u64 varint.
        let pos = bytes.windows(4).position(|w| w == [3, 1, 2, 3]).unwrap();
        bytes.splice(pos..pos + 1, [253u8, 0, 0, 0, 0, 0, 0, 0, 16]);
        assert!(decode_message(&bytes).is_err());
    }
}
