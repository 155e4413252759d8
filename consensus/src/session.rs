//! Exactly-once client sessions (Raft thesis §6.3), as a [`StateMachine`] wrapper.
//!
//! [`Sessions<S>`] wraps any state machine `S`. Clients send their commands inside a
//! [`ClientRequest`] envelope carrying a client id, a sequence number and the lowest sequence
//! number the client has not yet received a response for. The wrapper applies each `(client, seq)`
//! to `S` at most once and remembers its result, so a client that retries after a timeout (fault
//! matrix C6) gets the original result instead of a second application.
//!
//! # Command encoding (version 1)
//!
//! All integers are fixed-width little-endian. The first byte says what the command is:
//!
//! | first byte | meaning |
//! |---|---|
//! | (empty command) | no-op: nothing is applied, the result is [`SessionResult::NoOp`]. A new leader's no-op entry (Raft §8) may be handed to `apply` this way. |
//! | `0x01` | a [`ClientRequest`]: `u64` client id, `u64` seq, `u64` first unacked seq, `u64` log time in ms, `u32` command length `n` (at most [`MAX_REQUEST_COMMAND_BYTES`]), `n` command bytes; nothing after |
//! | `0x02` | an unsessioned command: the remaining bytes are applied to `S` as they are, with no duplicate suppression (for administrative commands and tests) |
//! | anything else | malformed: nothing is applied, the result is [`SessionResult::Malformed`] |
//!
//! The log time field sits at a fixed offset ([`LOG_TIME_OFFSET`]) so the leader can stamp it into
//! an encoded request with [`stamp_log_time`] before appending the entry.
//!
//! Results are encoded as a [`SessionResult`]: a tag byte (`1` applied, `2` duplicate, `3` session
//! expired, `4` result discarded, `5` too many pending, `6` no-op, `7` malformed) followed by, for
//! applied and duplicate, a `u32` length and the inner result; for result discarded, `u64` seq and
//! `u64` first unacked seq; for too many pending, `u64` limit; for malformed, a `u32` length and a
//! UTF-8 message.
//!
//! # Rules, in the order a request is handled
//!
//! 1. **Log clock.** The wrapper's clock is the largest `log_time_ms` seen in any request so far.
//!    Times come from the log (the leader stamps them), never from the wall clock, so every replica
//!    computes the same expiries. A leader whose clock is behind cannot move the clock backwards.
//! 2. **Expiry.** Every session idle for more than [`SessionConfig::session_timeout_ms`] of log time
//!    (`last_activity_ms + timeout < clock`) is dropped, before the request is looked at.
//! 3. **Unknown client.** A request from a client without a session opens one if its
//!    `first_unacked_seq <= 1` (the client has never received a response). Otherwise the client
//!    has lost its session (expired or evicted) and gets [`SessionResult::SessionExpired`]; the
//!    command is not applied. If [`SessionConfig::max_sessions`] are open, the least recently
//!    active session (ties: lowest client id) is evicted first.
//! 4. **Acknowledgements.** The session's `first_unacked_seq` becomes the largest value the client
//!    has sent; cached results below it are discarded (the client has them).
//! 5. **Sequence number.** `seq < first_unacked_seq`: [`SessionResult::ResultDiscarded`], not
//!    applied (the client already received this result). `seq` cached: [`SessionResult::Duplicate`]
//!    with the original result, not applied again. Otherwise, if the session already caches
//!    [`SessionConfig::max_pending_per_client`] results, [`SessionResult::TooManyPending`], not
//!    applied (evicting a result the client has not seen would break exactly-once); else the
//!    command is applied to `S` and its result cached: [`SessionResult::Applied`].
//!
//! Clients may pipeline: any number of seqs up to the pending limit may be outstanding, and they
//! may reach the log in any order.
//!
//! **Known limit:** a client whose session expired before it received *any* response
//! (`first_unacked_seq` still 1) cannot be told apart from a new client, so a retry of its first
//! requests after expiry is applied again. Choose a session timeout far longer than any client's
//! retry period.
//!
//! # Snapshot
//!
//! The image is the session section followed by the inner machine's image: magic `SSES`, `u32`
//! version 1, `u64` clock, `u64` session count, then per session (in client id order) `u64` client
//! id, `u64` first unacked seq, `u64` last activity ms, `u64` cached result count, and per result
//! `u64` seq and a `u32`-length-prefixed result; then a CRC-32 of the section. The session table
//! is replaced only if the inner image restores too.

use crate::kv::{CrcReader, CrcWriter, Fnv64};
use crate::state_machine::StateMachine;
use crate::types::Index;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

/// The first byte of an encoded [`ClientRequest`].
pub const TAG_CLIENT_REQUEST: u8 = 0x01;
/// The first byte of an unsessioned command.
pub const TAG_UNSESSIONED: u8 = 0x02;
/// The byte offset of `log_time_ms` in an encoded [`ClientRequest`].
pub const LOG_TIME_OFFSET: usize = 25;
/// The fixed header of an encoded [`ClientRequest`] before the command bytes.
pub const REQUEST_HEADER_BYTES: usize = 37;
/// The largest command a request may carry.
pub const MAX_REQUEST_COMMAND_BYTES: usize = 8 << 20;
/// The longest error message in a [`SessionResult::Malformed`].
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// The session section's magic bytes.
pub const SESSION_SNAPSHOT_MAGIC: [u8; 4] = *b"SSES";
/// The session section's version.
pub const SESSION_SNAPSHOT_VERSION: u32 = 1;
/// The largest result the session table stores and a snapshot may hold (the `u32` length field).
/// A state machine returning more is a bug; the wrapper asserts against it.
pub const MAX_RESULT_BYTES: usize = u32::MAX as usize;

const _: () = assert!(LOG_TIME_OFFSET + 8 + 4 == REQUEST_HEADER_BYTES);

/// A client's command inside its session envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRequest {
    /// The client's identity, chosen by the client (e.g. at random) and never reused.
    pub client_id: u64,
    /// The request's sequence number; a client numbers its requests 1, 2, 3, ...
    pub seq: u64,
    /// The lowest seq the client has not yet received a response for (thesis §6.3): the server
    /// discards cached results below it.
    pub first_unacked_seq: u64,
    /// Log time in ms, stamped by the leader (see [`stamp_log_time`]); drives session expiry.
    pub log_time_ms: u64,
    /// The inner state machine's command.
    pub command: Vec<u8>,
}

/// A decoded sessions command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionCommand {
    /// The empty command.
    NoOp,
    /// A client request with duplicate suppression.
    Request(ClientRequest),
    /// A command applied to the inner machine without duplicate suppression.
    Unsessioned(Vec<u8>),
}

/// A sessions command decoded in place (the command bytes borrowed from the log entry): the
/// apply path allocates nothing to read it.
#[derive(Clone, Copy, Debug)]
enum CommandRef<'a> {
    NoOp,
    Request(RequestRef<'a>),
    Unsessioned(&'a [u8]),
}

#[derive(Clone, Copy, Debug)]
struct RequestRef<'a> {
    client_id: u64,
    seq: u64,
    first_unacked_seq: u64,
    log_time_ms: u64,
    command: &'a [u8],
}

/// Why bytes did not decode as a sessions command or result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionDecodeError {
    #[error("unknown tag {found:#04x}")]
    UnknownTag { found: u8 },
    #[error("truncated: {len} bytes, needed at least {needed}")]
    Truncated { len: usize, needed: usize },
    #[error("{field} length {len} exceeds the limit {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{count} trailing bytes after the end")]
    TrailingBytes { count: usize },
    #[error("message is not UTF-8")]
    MessageNotUtf8,
    #[error("empty result")]
    Empty,
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(a)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Reads a `u32`-length-prefixed field at `at` that must end the input exactly.
fn read_tail_field<'a>(
    bytes: &'a [u8],
    at: usize,
    field: &'static str,
    max: usize,
) -> Result<&'a [u8], SessionDecodeError> {
    if bytes.len() < at + 4 {
        return Err(SessionDecodeError::Truncated {
            len: bytes.len(),
            needed: at + 4,
        });
    }
    let len = read_u32(bytes, at) as usize;
    if len > max {
        return Err(SessionDecodeError::TooLong { field, len, max });
    }
    let end = at + 4 + len;
    if bytes.len() < end {
        return Err(SessionDecodeError::Truncated {
            len: bytes.len(),
            needed: end,
        });
    }
    if bytes.len() > end {
        return Err(SessionDecodeError::TrailingBytes {
            count: bytes.len() - end,
        });
    }
    Ok(&bytes[at + 4..end])
}

impl ClientRequest {
    /// Encodes the request, or says that the command is too long.
    pub fn encode(&self) -> Result<Vec<u8>, SessionDecodeError> {
        if self.command.len() > MAX_REQUEST_COMMAND_BYTES {
            return Err(SessionDecodeError::TooLong {
                field: "command",
                len: self.command.len(),
                max: MAX_REQUEST_COMMAND_BYTES,
            });
        }
        let mut out = Vec::with_capacity(REQUEST_HEADER_BYTES + self.command.len());
        out.push(TAG_CLIENT_REQUEST);
        out.extend_from_slice(&self.client_id.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.first_unacked_seq.to_le_bytes());
        debug_assert_eq!(out.len(), LOG_TIME_OFFSET);
        out.extend_from_slice(&self.log_time_ms.to_le_bytes());
        out.extend_from_slice(&(self.command.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.command);
        Ok(out)
    }

    /// Decodes a request (the bytes must start with [`TAG_CLIENT_REQUEST`]).
    pub fn decode(bytes: &[u8]) -> Result<ClientRequest, SessionDecodeError> {
        match SessionCommand::decode(bytes)? {
            SessionCommand::Request(r) => Ok(r),
            _ => Err(SessionDecodeError::UnknownTag {
                found: bytes.first().copied().unwrap_or(0),
            }),
        }
    }
}

/// Overwrites the log time of an encoded [`ClientRequest`] in place: the leader calls this just
/// before appending the entry, so the time is part of the log and every replica sees the same.
pub fn stamp_log_time(encoded: &mut [u8], log_time_ms: u64) -> Result<(), SessionDecodeError> {
    // Validate in place (no copy of the command).
    let CommandRef::Request(_) = decode_ref(encoded)? else {
        return Err(SessionDecodeError::UnknownTag {
            found: encoded.first().copied().unwrap_or(0),
        });
    };
    encoded[LOG_TIME_OFFSET..LOG_TIME_OFFSET + 8].copy_from_slice(&log_time_ms.to_le_bytes());
    Ok(())
}

impl SessionCommand {
    pub fn encode(&self) -> Result<Vec<u8>, SessionDecodeError> {
        match self {
            SessionCommand::NoOp => Ok(Vec::new()),
            SessionCommand::Request(r) => r.encode(),
            SessionCommand::Unsessioned(c) => {
                let mut out = Vec::with_capacity(1 + c.len());
                out.push(TAG_UNSESSIONED);
                out.extend_from_slice(c);
                Ok(out)
            }
        }
    }

    /// Decodes a command; any malformed input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<SessionCommand, SessionDecodeError> {
        Ok(match decode_ref(bytes)? {
            CommandRef::NoOp => SessionCommand::NoOp,
            CommandRef::Request(r) => SessionCommand::Request(ClientRequest {
                client_id: r.client_id,
                seq: r.seq,
                first_unacked_seq: r.first_unacked_seq,
                log_time_ms: r.log_time_ms,
                command: r.command.to_vec(),
            }),
            CommandRef::Unsessioned(c) => SessionCommand::Unsessioned(c.to_vec()),
        })
    }

    fn as_ref(&self) -> CommandRef<'_> {
        match self {
            SessionCommand::NoOp => CommandRef::NoOp,
            SessionCommand::Request(r) => CommandRef::Request(RequestRef {
                client_id: r.client_id,
                seq: r.seq,
                first_unacked_seq: r.first_unacked_seq,
                log_time_ms: r.log_time_ms,
                command: &r.command,
            }),
            SessionCommand::Unsessioned(c) => CommandRef::Unsessioned(c),
        }
    }
}

/// Decodes a command in place; any malformed input is an error, never a panic.
fn decode_ref(bytes: &[u8]) -> Result<CommandRef<'_>, SessionDecodeError> {
    let Some(&tag) = bytes.first() else {
        return Ok(CommandRef::NoOp);
    };
    match tag {
        TAG_CLIENT_REQUEST => {
            if bytes.len() < REQUEST_HEADER_BYTES {
                return Err(SessionDecodeError::Truncated {
                    len: bytes.len(),
                    needed: REQUEST_HEADER_BYTES,
                });
            }
            Ok(CommandRef::Request(RequestRef {
                client_id: read_u64(bytes, 1),
                seq: read_u64(bytes, 9),
                first_unacked_seq: read_u64(bytes, 17),
                log_time_ms: read_u64(bytes, LOG_TIME_OFFSET),
                command: read_tail_field(bytes, 33, "command", MAX_REQUEST_COMMAND_BYTES)?,
            }))
        }
        TAG_UNSESSIONED => Ok(CommandRef::Unsessioned(&bytes[1..])),
        found => Err(SessionDecodeError::UnknownTag { found }),
    }
}

/// What the client gets back for a sessions command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionResult {
    /// The command was applied now; the inner machine's result.
    Applied(Vec<u8>),
    /// The command had been applied before; the result of that first application.
    Duplicate(Vec<u8>),
    /// The client has no session (it expired or was evicted) and has acknowledged results before,
    /// so this request may or may not have been applied already: the outcome is unknown. Nothing
    /// was applied now. The client must start over with a new client id.
    SessionExpired,
    /// `seq` is below the session's `first_unacked_seq`: the client said it already received this
    /// result, which has been discarded. Nothing was applied now.
    ResultDiscarded { seq: u64, first_unacked_seq: u64 },
    /// The session already holds `limit` results the client has not acknowledged. Nothing was
    /// applied; retry after acknowledging (raising `first_unacked_seq`).
    TooManyPending { limit: u64 },
    /// The empty command: nothing was applied.
    NoOp,
    /// The command did not decode; nothing was applied.
    Malformed(String),
}

const RES_APPLIED: u8 = 1;
const RES_DUPLICATE: u8 = 2;
const RES_EXPIRED: u8 = 3;
const RES_DISCARDED: u8 = 4;
const RES_TOO_MANY: u8 = 5;
const RES_NOOP: u8 = 6;
const RES_MALFORMED: u8 = 7;

impl SessionResult {
    /// The inner result, if the command took effect (now or before).
    pub fn output(&self) -> Option<&[u8]> {
        match self {
            SessionResult::Applied(o) | SessionResult::Duplicate(o) => Some(o),
            _ => None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let framed = |out: &mut Vec<u8>, tag: u8, b: &[u8]| {
            out.push(tag);
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        };
        match self {
            SessionResult::Applied(o) => framed(&mut out, RES_APPLIED, o),
            SessionResult::Duplicate(o) => framed(&mut out, RES_DUPLICATE, o),
            SessionResult::SessionExpired => out.push(RES_EXPIRED),
            SessionResult::ResultDiscarded {
                seq,
                first_unacked_seq,
            } => {
                out.push(RES_DISCARDED);
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&first_unacked_seq.to_le_bytes());
            }
            SessionResult::TooManyPending { limit } => {
                out.push(RES_TOO_MANY);
                out.extend_from_slice(&limit.to_le_bytes());
            }
            SessionResult::NoOp => out.push(RES_NOOP),
            SessionResult::Malformed(m) => {
                let mut end = m.len().min(MAX_MESSAGE_BYTES);
                while !m.is_char_boundary(end) {
                    end -= 1;
                }
                framed(&mut out, RES_MALFORMED, &m.as_bytes()[..end]);
            }
        }
        out
    }

    /// Decodes a result; any malformed input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<SessionResult, SessionDecodeError> {
        let Some(&tag) = bytes.first() else {
            return Err(SessionDecodeError::Empty);
        };
        let exact = |n: usize| -> Result<(), SessionDecodeError> {
            match bytes.len().cmp(&n) {
                std::cmp::Ordering::Less => Err(SessionDecodeError::Truncated {
                    len: bytes.len(),
                    needed: n,
                }),
                std::cmp::Ordering::Greater => Err(SessionDecodeError::TrailingBytes {
                    count: bytes.len() - n,
                }),
                std::cmp::Ordering::Equal => Ok(()),
            }
        };
        Ok(match tag {
            RES_APPLIED => SessionResult::Applied(
                read_tail_field(bytes, 1, "result", MAX_RESULT_BYTES)?.to_vec(),
            ),
            RES_DUPLICATE => SessionResult::Duplicate(
                read_tail_field(bytes, 1, "result", MAX_RESULT_BYTES)?.to_vec(),
            ),
            RES_EXPIRED => {
                exact(1)?;
                SessionResult::SessionExpired
            }
            RES_DISCARDED => {
                exact(17)?;
                SessionResult::ResultDiscarded {
                    seq: read_u64(bytes, 1),
                    first_unacked_seq: read_u64(bytes, 9),
                }
            }
            RES_TOO_MANY => {
                exact(9)?;
                SessionResult::TooManyPending {
                    limit: read_u64(bytes, 1),
                }
            }
            RES_NOOP => {
                exact(1)?;
                SessionResult::NoOp
            }
            RES_MALFORMED => {
                let m = read_tail_field(bytes, 1, "message", MAX_MESSAGE_BYTES)?;
                let m = std::str::from_utf8(m).map_err(|_| SessionDecodeError::MessageNotUtf8)?;
                SessionResult::Malformed(m.to_owned())
            }
            found => return Err(SessionDecodeError::UnknownTag { found }),
        })
    }
}

/// The session table's limits. Every replica must use the same configuration (it is not part of
/// the snapshot), since it decides which requests are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// A session idle for longer than this much log time is dropped.
    pub session_timeout_ms: u64,
    /// The most sessions kept; opening one more evicts the least recently active.
    pub max_sessions: usize,
    /// The most unacknowledged results cached per client (its pipelining window).
    pub max_pending_per_client: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            session_timeout_ms: 60 * 60 * 1000,
            max_sessions: 10_000,
            max_pending_per_client: 1024,
        }
    }
}

/// One client's session.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Session {
    /// Results below this seq have been discarded; only grows.
    first_unacked_seq: u64,
    /// Log time of the client's latest request; only grows.
    last_activity_ms: u64,
    /// Results of applied seqs `>= first_unacked_seq`. Invariant: `len() <= max_pending_per_client`.
    results: BTreeMap<u64, Vec<u8>>,
}

/// A [`StateMachine`] that adds exactly-once client sessions to `S`. See the module docs.
#[derive(Clone, Debug)]
pub struct Sessions<S> {
    inner: S,
    config: SessionConfig,
    /// The log clock: the largest `log_time_ms` seen; only grows.
    clock_ms: u64,
    sessions: BTreeMap<u64, Session>,
    /// `(last_activity_ms, client_id)` for every session: the expiry and eviction order.
    by_activity: BTreeSet<(u64, u64)>,
}

impl<S: StateMachine> Sessions<S> {
    /// A limit of 0 sessions or 0 pending results would refuse every request; it is taken as 1.
    pub fn new(inner: S, config: SessionConfig) -> Self {
        let config = SessionConfig {
            max_sessions: config.max_sessions.max(1),
            max_pending_per_client: config.max_pending_per_client.max(1),
            ..config
        };
        Sessions {
            inner,
            config,
            clock_ms: 0,
            sessions: BTreeMap::new(),
            by_activity: BTreeSet::new(),
        }
    }

    /// Both digests with one pass over the wrapped machine: (the wrapper's digest, which
    /// also covers the session table, clock and cached results; the wrapped machine's own
    /// [`StateMachine::digest`]).
    pub fn digests(&self) -> (u64, u64) {
        let inner = self.inner.digest();
        (self.digest_over(inner), inner)
    }

    /// The wrapper's digest given the wrapped machine's: FNV-1a over `inner_digest`, the log
    /// clock, and every session's id, first unacked seq, last activity and cached results.
    fn digest_over(&self, inner_digest: u64) -> u64 {
        let mut h = Fnv64::new();
        h.write_u64(inner_digest);
        h.write_u64(self.clock_ms);
        h.write_u64(self.sessions.len() as u64);
        for (id, s) in &self.sessions {
            h.write_u64(*id);
            h.write_u64(s.first_unacked_seq);
            h.write_u64(s.last_activity_ms);
            h.write_u64(s.results.len() as u64);
            for (seq, output) in &s.results {
                h.write_u64(*seq);
                h.write_framed(output);
            }
        }
        h.finish()
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn into_inner(self) -> S {
        self.inner
    }

    pub fn config(&self) -> SessionConfig {
        self.config
    }

    /// The number of open sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The log clock in ms (the largest log time seen).
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Whether `client_id` has an open session.
    pub fn has_session(&self, client_id: u64) -> bool {
        self.sessions.contains_key(&client_id)
    }

    /// Applies one decoded command (see the module docs for the rules).
    pub fn apply_command(&mut self, index: Index, command: SessionCommand) -> SessionResult {
        self.apply_ref(index, command.as_ref())
    }

    fn apply_ref(&mut self, index: Index, command: CommandRef<'_>) -> SessionResult {
        let result = match command {
            CommandRef::NoOp => SessionResult::NoOp,
            CommandRef::Unsessioned(c) => SessionResult::Applied(self.inner.apply(index, c)),
            CommandRef::Request(r) => self.apply_request(index, r),
        };
        self.check_invariants();
        result
    }

    fn apply_request(&mut self, index: Index, r: RequestRef<'_>) -> SessionResult {
        // Rule 1: the log clock never goes backwards, even if a new leader's clock is behind.
        self.clock_ms = self.clock_ms.max(r.log_time_ms);
        // Rule 2: expire idle sessions first, so the result does not depend on request order.
        self.expire();

        // Rule 3: open a session only for a client that has never received a response.
        if !self.sessions.contains_key(&r.client_id) {
            if r.first_unacked_seq > 1 {
                return SessionResult::SessionExpired;
            }
            if self.sessions.len() >= self.config.max_sessions
                && let Some(&(_, victim)) = self.by_activity.first()
            {
                self.remove_session(victim);
            }
            self.sessions.insert(
                r.client_id,
                Session {
                    first_unacked_seq: 1,
                    last_activity_ms: self.clock_ms,
                    results: BTreeMap::new(),
                },
            );
            self.by_activity.insert((self.clock_ms, r.client_id));
        }

        let clock_ms = self.clock_ms;
        let session = self
            .sessions
            .get_mut(&r.client_id)
            .expect("session opened above");
        if session.last_activity_ms != clock_ms {
            self.by_activity
                .remove(&(session.last_activity_ms, r.client_id));
            self.by_activity.insert((clock_ms, r.client_id));
            session.last_activity_ms = clock_ms;
        }

        // Rule 4: discard results the client has received (thesis §6.3).
        if r.first_unacked_seq > session.first_unacked_seq {
            session.first_unacked_seq = r.first_unacked_seq;
            // Usually one result goes (the client's previous request): pop, don't rebuild.
            while session
                .results
                .first_key_value()
                .is_some_and(|(&seq, _)| seq < r.first_unacked_seq)
            {
                session.results.pop_first();
            }
        }

        // Rule 5.
        if r.seq < session.first_unacked_seq {
            return SessionResult::ResultDiscarded {
                seq: r.seq,
                first_unacked_seq: session.first_unacked_seq,
            };
        }
        if let Some(output) = session.results.get(&r.seq) {
            return SessionResult::Duplicate(output.clone());
        }
        if session.results.len() >= self.config.max_pending_per_client {
            return SessionResult::TooManyPending {
                limit: self.config.max_pending_per_client as u64,
            };
        }
        let output = self.inner.apply(index, r.command);
        // Every replica would cache the same oversized result and no snapshot could hold it.
        assert!(
            output.len() <= MAX_RESULT_BYTES,
            "state machine result over MAX_RESULT_BYTES"
        );
        session.results.insert(r.seq, output.clone());
        SessionResult::Applied(output)
    }

    fn expire(&mut self) {
        let timeout = self.config.session_timeout_ms;
        while let Some(&(last, client)) = self.by_activity.first() {
            if last.saturating_add(timeout) >= self.clock_ms {
                break;
            }
            self.remove_session(client);
        }
    }

    fn remove_session(&mut self, client_id: u64) {
        if let Some(s) = self.sessions.remove(&client_id) {
            self.by_activity.remove(&(s.last_activity_ms, client_id));
        }
    }

    fn check_invariants(&self) {
        debug_assert_eq!(self.sessions.len(), self.by_activity.len());
        debug_assert!(self.sessions.len() <= self.config.max_sessions);
        #[cfg(debug_assertions)]
        for (id, s) in &self.sessions {
            debug_assert!(self.by_activity.contains(&(s.last_activity_ms, *id)));
            debug_assert!(s.last_activity_ms <= self.clock_ms);
            debug_assert!(s.results.len() <= self.config.max_pending_per_client);
            debug_assert!(s.results.keys().all(|&seq| seq >= s.first_unacked_seq));
        }
    }

    fn write_section(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut w = CrcWriter {
            inner: out,
            crc: crc32fast::Hasher::new(),
        };
        w.bytes(&SESSION_SNAPSHOT_MAGIC)?;
        w.bytes(&SESSION_SNAPSHOT_VERSION.to_le_bytes())?;
        w.bytes(&self.clock_ms.to_le_bytes())?;
        w.bytes(&(self.sessions.len() as u64).to_le_bytes())?;
        for (id, s) in &self.sessions {
            w.bytes(&id.to_le_bytes())?;
            w.bytes(&s.first_unacked_seq.to_le_bytes())?;
            w.bytes(&s.last_activity_ms.to_le_bytes())?;
            w.bytes(&(s.results.len() as u64).to_le_bytes())?;
            for (seq, output) in &s.results {
                w.bytes(&seq.to_le_bytes())?;
                w.framed(output)?;
            }
        }
        w.finish()
    }

    /// Reads the session section; `Err` is a human reason.
    #[allow(clippy::type_complexity)]
    fn read_section(
        &self,
        input: &mut dyn Read,
    ) -> Result<(u64, BTreeMap<u64, Session>, BTreeSet<(u64, u64)>), String> {
        let mut r = CrcReader {
            inner: input,
            crc: crc32fast::Hasher::new(),
        };
        let magic: [u8; 4] = r.array().map_err(|e| format!("reading the magic: {e}"))?;
        if magic != SESSION_SNAPSHOT_MAGIC {
            return Err(format!(
                "bad magic {magic:02x?}, expected {SESSION_SNAPSHOT_MAGIC:02x?}"
            ));
        }
        let version = r.u32().map_err(|e| format!("reading the version: {e}"))?;
        if version != SESSION_SNAPSHOT_VERSION {
            return Err(format!("unsupported version {version}"));
        }
        let clock_ms = r.u64().map_err(|e| format!("reading the clock: {e}"))?;
        let count = r
            .u64()
            .map_err(|e| format!("reading the session count: {e}"))?;
        if count > self.config.max_sessions as u64 {
            return Err(format!(
                "{count} sessions, over this node's max_sessions {}",
                self.config.max_sessions
            ));
        }
        let mut sessions = BTreeMap::new();
        let mut by_activity = BTreeSet::new();
        let mut previous: Option<u64> = None;
        for i in 0..count {
            let ctx = |e: io::Error| format!("session {i}: {e}");
            let id = r.u64().map_err(ctx)?;
            if previous.is_some_and(|p| p >= id) {
                return Err(format!("session {i}: client ids not strictly increasing"));
            }
            previous = Some(id);
            let first_unacked_seq = r.u64().map_err(ctx)?;
            let last_activity_ms = r.u64().map_err(ctx)?;
            if last_activity_ms > clock_ms {
                return Err(format!("session {i}: last activity after the clock"));
            }
            let n = r.u64().map_err(ctx)?;
            if n > self.config.max_pending_per_client as u64 {
                return Err(format!("session {i}: {n} cached results, over the limit"));
            }
            let mut results = BTreeMap::new();
            let mut previous_seq: Option<u64> = None;
            for _ in 0..n {
                let seq = r.u64().map_err(ctx)?;
                if seq < first_unacked_seq || previous_seq.is_some_and(|p| p >= seq) {
                    return Err(format!("session {i}: cached seq {seq} out of order"));
                }
                previous_seq = Some(seq);
                results.insert(seq, r.framed(MAX_RESULT_BYTES).map_err(ctx)?);
            }
            sessions.insert(
                id,
                Session {
                    first_unacked_seq,
                    last_activity_ms,
                    results,
                },
            );
            by_activity.insert((last_activity_ms, id));
        }
        let expected = r.crc.clone().finalize();
        let mut stored = [0u8; 4];
        r.inner
            .read_exact(&mut stored)
            .map_err(|e| format!("reading the checksum: {e}"))?;
        let stored = u32::from_le_bytes(stored);
        if stored != expected {
            return Err(format!(
                "checksum mismatch: stored {stored:#010x}, computed {expected:#010x}"
            ));
        }
        Ok((clock_ms, sessions, by_activity))
    }
}

impl<S: StateMachine> StateMachine for Sessions<S> {
    fn apply(&mut self, index: Index, command: &[u8]) -> Vec<u8> {
        let result = match decode_ref(command) {
            Ok(c) => self.apply_ref(index, c),
            Err(e) => SessionResult::Malformed(e.to_string()),
        };
        result.encode()
    }

    /// Reads need no session (they change nothing): the query goes to the inner machine as it is,
    /// and its result comes back unwrapped.
    fn query(&self, query: &[u8]) -> Vec<u8> {
        self.inner.query(query)
    }

    fn snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        self.write_section(out)?;
        self.inner.snapshot(out)
    }

    /// The session section is serialised now (it is bounded by the session limits); the inner
    /// machine's image is written by its own job, if it offers one.
    fn snapshot_job(&self) -> Option<crate::state_machine::SnapshotJob> {
        let inner = self.inner.snapshot_job()?;
        let mut section = Vec::new();
        if let Err(e) = self.write_section(&mut section) {
            tracing::error!(error = %e, "cannot serialise the session table; snapshotting on the loop thread");
            return None;
        }
        Some(Box::new(move |out: &mut dyn Write| {
            out.write_all(&section)?;
            inner(out)
        }))
    }

    fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
        let (clock_ms, sessions, by_activity) = self.read_section(input).map_err(|reason| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("session table snapshot: {reason}"),
            )
        })?;
        self.inner.restore(input)?;
        self.clock_ms = clock_ms;
        self.sessions = sessions;
        self.by_activity = by_activity;
        self.check_invariants();
        Ok(())
    }

    /// Mixes the session table into the inner digest: the table is replicated state too.
    fn digest(&self) -> u64 {
        self.digest_over(self.inner.digest())
    }
}

/// A one-line rendering of a sessions command for `raft-dump`, with `inner` rendering the wrapped
/// command (e.g. [`crate::kv::pretty`]).
pub fn pretty(command: &[u8], inner: impl Fn(&[u8]) -> String) -> String {
    match SessionCommand::decode(command) {
        Ok(SessionCommand::NoOp) => "no-op".to_owned(),
        Ok(SessionCommand::Unsessioned(c)) => format!("unsessioned {}", inner(&c)),
        Ok(SessionCommand::Request(r)) => format!(
            "client {} seq {} (acked <{}, t={}ms) {}",
            r.client_id,
            r.seq,
            r.first_unacked_seq,
            r.log_time_ms,
            inner(&r.command)
        ),
        Err(e) => format!("<not a session command ({} bytes): {e}>", command.len()),
    }
}

/// A one-line rendering of a sessions result, with `inner` rendering the wrapped result (e.g.
/// [`crate::kv::pretty_result`]).
pub fn pretty_result(result: &[u8], inner: impl Fn(&[u8]) -> String) -> String {
    match SessionResult::decode(result) {
        Ok(SessionResult::Applied(o)) => format!("applied: {}", inner(&o)),
        Ok(SessionResult::Duplicate(o)) => format!("duplicate, original result: {}", inner(&o)),
        Ok(SessionResult::SessionExpired) => "session expired (outcome unknown)".to_owned(),
        Ok(SessionResult::ResultDiscarded {
            seq,
            first_unacked_seq,
        }) => {
            format!("result of seq {seq} discarded (client acknowledged below {first_unacked_seq})")
        }
        Ok(SessionResult::TooManyPending { limit }) => {
            format!("not applied: {limit} results pending acknowledgement")
        }
        Ok(SessionResult::NoOp) => "no-op".to_owned(),
        Ok(SessionResult::Malformed(m)) => format!("malformed command: {m}"),
        Err(e) => format!("<not a session result ({} bytes): {e}>", result.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{KvCommand, KvResult, KvStateMachine};
    use proptest::prelude::*;

    fn request(client_id: u64, seq: u64, acked_below: u64, t: u64, c: KvCommand) -> Vec<u8> {
        ClientRequest {
            client_id,
            seq,
            first_unacked_seq: acked_below,
            log_time_ms: t,
            command: c.encode().unwrap(),
        }
        .encode()
        .unwrap()
    }

    fn append(v: &str) -> KvCommand {
        KvCommand::Append {
            key: b"k".to_vec(),
            value: v.as_bytes().to_vec(),
        }
    }

    struct Harness {
        sm: Sessions<KvStateMachine>,
        index: u64,
    }

    impl Harness {
        fn new(config: SessionConfig) -> Self {
            Harness {
                sm: Sessions::new(KvStateMachine::new(), config),
                index: 0,
            }
        }

        fn apply(&mut self, bytes: &[u8]) -> SessionResult {
            self.index += 1;
            SessionResult::decode(&self.sm.apply(Index(self.index), bytes)).unwrap()
        }

        fn value(&self) -> Vec<u8> {
            self.sm.inner().get(b"k").to_vec()
        }
    }

    fn appended(n: u64) -> Vec<u8> {
        KvResult::Appended { new_len: n }.encode()
    }

    #[test]
    fn retried_request_is_applied_once_and_returns_the_original_result() {
        let mut h = Harness::new(SessionConfig::default());
        let req = request(7, 1, 1, 100, append("a"));
        assert_eq!(h.apply(&req), SessionResult::Applied(appended(1)));
        assert_eq!(h.apply(&req), SessionResult::Duplicate(appended(1)));
        assert_eq!(h.value(), b"a");
    }

    #[test]
    fn pipelined_requests_arriving_out_of_order_each_apply_once() {
        let mut h = Harness::new(SessionConfig::default());
        assert_eq!(
            h.apply(&request(7, 3, 1, 1, append("c"))),
            SessionResult::Applied(appended(1))
        );
        assert_eq!(
            h.apply(&request(7, 1, 1, 2, append("a"))),
            SessionResult::Applied(appended(2))
        );
        assert_eq!(
            h.apply(&request(7, 2, 1, 3, append("b"))),
            SessionResult::Applied(appended(3))
        );
        assert_eq!(
            h.apply(&request(7, 3, 1, 4, append("c"))),
            SessionResult::Duplicate(appended(1))
        );
        assert_eq!(h.value(), b"cab");
    }

    #[test]
    fn acknowledged_results_are_discarded_and_old_seqs_refused() {
        let mut h = Harness::new(SessionConfig::default());
        h.apply(&request(7, 1, 1, 1, append("a")));
        h.apply(&request(7, 2, 1, 2, append("b")));
        // The client received 1 and 2; request 3 says so.
        h.apply(&request(7, 3, 3, 3, append("c")));
        assert_eq!(
            h.apply(&request(7, 1, 1, 4, append("a"))),
            SessionResult::ResultDiscarded {
                seq: 1,
                first_unacked_seq: 3
            }
        );
        assert_eq!(h.value(), b"abc");
    }

    #[test]
    fn idle_session_expires_on_log_time_and_a_client_that_acked_gets_session_expired() {
        let config = SessionConfig {
            session_timeout_ms: 1000,
            ..SessionConfig::default()
        };
        let mut h = Harness::new(config);
        h.apply(&request(7, 1, 1, 0, append("a")));
        h.apply(&request(7, 2, 2, 500, append("b")));
        // Another client's request moves the log clock past client 7's expiry.
        h.apply(&request(8, 1, 1, 1501, append("x")));
        assert!(!h.sm.has_session(7));
        assert_eq!(
            h.apply(&request(7, 2, 2, 1502, append("b"))),
            SessionResult::SessionExpired
        );
        assert_eq!(h.value(), b"abx");
        // Exactly at the timeout the session is still alive.
        h.apply(&request(8, 2, 2, 2501, append("y")));
        assert!(h.sm.has_session(8));
    }

    #[test]
    fn log_clock_never_goes_backwards() {
        let config = SessionConfig {
            session_timeout_ms: 1000,
            ..SessionConfig::default()
        };
        let mut h = Harness::new(config);
        h.apply(&request(7, 1, 1, 5000, append("a")));
        // A new leader with a clock behind stamps an older time: the clock stays at 5000.
        h.apply(&request(8, 1, 1, 10, append("b")));
        assert_eq!(h.sm.clock_ms(), 5000);
        h.apply(&request(9, 1, 1, 6001, append("c")));
        assert!(!h.sm.has_session(7) && !h.sm.has_session(8) && h.sm.has_session(9));
    }

    #[test]
    fn session_count_is_bounded_by_evicting_the_least_recently_active() {
        let config = SessionConfig {
            max_sessions: 2,
            ..SessionConfig::default()
        };
        let mut h = Harness::new(config);
        h.apply(&request(1, 1, 1, 10, append("a")));
        h.apply(&request(2, 1, 1, 20, append("b")));
        h.apply(&request(1, 2, 2, 30, append("c")));
        h.apply(&request(3, 1, 1, 40, append("d")));
        assert_eq!(h.sm.session_count(), 2);
        assert!(h.sm.has_session(1) && !h.sm.has_session(2) && h.sm.has_session(3));
    }

    #[test]
    fn pending_results_per_client_are_bounded_without_losing_exactly_once() {
        let config = SessionConfig {
            max_pending_per_client: 2,
            ..SessionConfig::default()
        };
        let mut h = Harness::new(config);
        h.apply(&request(1, 1, 1, 1, append("a")));
        h.apply(&request(1, 2, 1, 2, append("b")));
        assert_eq!(
            h.apply(&request(1, 3, 1, 3, append("c"))),
            SessionResult::TooManyPending { limit: 2 }
        );
        assert_eq!(h.value(), b"ab");
        // Acknowledging 1 frees room; 3 is then applied, and 2 is still deduplicated.
        assert_eq!(
            h.apply(&request(1, 3, 2, 4, append("c"))),
            SessionResult::Applied(appended(3))
        );
        assert_eq!(
            h.apply(&request(1, 2, 2, 5, append("b"))),
            SessionResult::Duplicate(appended(2))
        );
    }

    #[test]
    fn noop_unsessioned_and_malformed_commands_are_handled() {
        let mut h = Harness::new(SessionConfig::default());
        assert_eq!(h.apply(&[]), SessionResult::NoOp);
        let raw = SessionCommand::Unsessioned(append("z").encode().unwrap())
            .encode()
            .unwrap();
        assert_eq!(h.apply(&raw), SessionResult::Applied(appended(1)));
        assert_eq!(h.apply(&raw), SessionResult::Applied(appended(2)));
        let bare_kv = append("q").encode().unwrap();
        assert!(matches!(h.apply(&bare_kv), SessionResult::Malformed(_)));
        assert_eq!(h.value(), b"zz");
    }

    #[test]
    fn stamp_log_time_rewrites_only_the_time() {
        let mut bytes = request(5, 6, 2, 0, append("x"));
        stamp_log_time(&mut bytes, 123_456).unwrap();
        let r = ClientRequest::decode(&bytes).unwrap();
        assert_eq!(
            (r.client_id, r.seq, r.first_unacked_seq, r.log_time_ms),
            (5, 6, 2, 123_456)
        );
        assert!(stamp_log_time(&mut [0x02, 1, 2], 1).is_err());
    }

    #[test]
    fn snapshot_carries_the_session_table_and_restored_replica_dedups() {
        let mut h = Harness::new(SessionConfig::default());
        h.apply(&request(1, 1, 1, 1, append("a")));
        h.apply(&request(2, 1, 1, 2, append("b")));
        let mut image = Vec::new();
        h.sm.snapshot(&mut image).unwrap();
        let mut replica = Harness::new(SessionConfig::default());
        replica.sm.restore(&mut image.as_slice()).unwrap();
        replica.index = h.index;
        assert_eq!(replica.sm.digest(), h.sm.digest());
        assert_eq!(
            replica.apply(&request(1, 1, 1, 3, append("a"))),
            SessionResult::Duplicate(appended(1))
        );
        assert_eq!(replica.value(), b"ab");

        for byte in (0..image.len()).step_by(5) {
            let mut bad = image.clone();
            bad[byte] ^= 0x01;
            let before = replica.sm.digest();
            let e = replica.sm.restore(&mut bad.as_slice()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "flip at {byte}");
            assert_eq!(replica.sm.digest(), before);
        }
    }

    #[test]
    fn pretty_shows_the_envelope_and_the_inner_command() {
        let bytes = request(5, 6, 2, 9, append("x"));
        assert_eq!(
            pretty(&bytes, crate::kv::pretty),
            r#"client 5 seq 6 (acked <2, t=9ms) append "k" += "x""#
        );
        assert_eq!(pretty(&[], crate::kv::pretty), "no-op");
        let r = SessionResult::Duplicate(KvResult::Appended { new_len: 2 }.encode()).encode();
        assert_eq!(
            pretty_result(&r, crate::kv::pretty_result),
            "duplicate, original result: appended, length 2"
        );
    }

    fn arb_request() -> impl Strategy<Value = ClientRequest> {
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(
                |(client_id, seq, first_unacked_seq, log_time_ms, command)| ClientRequest {
                    client_id,
                    seq,
                    first_unacked_seq,
                    log_time_ms,
                    command,
                },
            )
    }

    fn arb_result() -> impl Strategy<Value = SessionResult> {
        let bytes = proptest::collection::vec(any::<u8>(), 0..32);
        prop_oneof![
            bytes.clone().prop_map(SessionResult::Applied),
            bytes.prop_map(SessionResult::Duplicate),
            Just(SessionResult::SessionExpired),
            (any::<u64>(), any::<u64>()).prop_map(|(seq, first_unacked_seq)| {
                SessionResult::ResultDiscarded {
                    seq,
                    first_unacked_seq,
                }
            }),
            any::<u64>().prop_map(|limit| SessionResult::TooManyPending { limit }),
            Just(SessionResult::NoOp),
            ".{0,40}".prop_map(SessionResult::Malformed),
        ]
    }

    proptest! {
        #[test]
        fn request_round_trips(r in arb_request()) {
            prop_assert_eq!(ClientRequest::decode(&r.encode().unwrap()).unwrap(), r);
        }

        #[test]
        fn result_round_trips(r in arb_result()) {
            prop_assert_eq!(SessionResult::decode(&r.encode()).unwrap(), r);
        }

        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = SessionCommand::decode(&bytes);
            let _ = SessionResult::decode(&bytes);
            let _ = pretty(&bytes, crate::kv::pretty);
            let _ = pretty_result(&bytes, crate::kv::pretty_result);
            let mut sm = Sessions::new(KvStateMachine::new(), SessionConfig::default());
            let _ = sm.apply(Index(1), &bytes);
            let _ = sm.restore(&mut bytes.as_slice());
        }

        /// A mutated or truncated snapshot image never panics the restore, and a refused image
        /// leaves the state as it was.
        #[test]
        fn mutated_snapshot_images_never_panic(
            ops in proptest::collection::vec((0u64..4, 1u64..5, 1u64..3), 1..20),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
            cut in 0usize..3,
        ) {
            let mut h = Harness::new(SessionConfig::default());
            for (i, &(client, seq, acked)) in ops.iter().enumerate() {
                h.apply(&request(client, seq, acked, i as u64, append("v")));
            }
            let mut image = Vec::new();
            h.sm.snapshot(&mut image).unwrap();
            for (at, x) in flips {
                let at = at.index(image.len());
                image[at] ^= x;
            }
            image.truncate(image.len() - cut);
            let mut target = Harness::new(SessionConfig::default());
            target.apply(&request(99, 1, 1, 0, append("w")));
            let before = target.sm.digest();
            if target.sm.restore(&mut image.as_slice()).is_err() {
                prop_assert_eq!(target.sm.digest(), before);
            }
        }

        /// Random interleavings of retries: every (client, seq) takes effect exactly once, and a
        /// replica that restores a snapshot taken midway ends in the same state.
        #[test]
        fn random_retries_apply_each_request_exactly_once(
            ops in proptest::collection::vec((0u64..3, 1u64..6, 0u64..3), 1..60),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut h = Harness::new(SessionConfig::default());
            let mut replica = Harness::new(SessionConfig::default());
            let cut = cut.index(ops.len());
            let mut applied = std::collections::BTreeSet::new();
            for (i, &(client, seq, t)) in ops.iter().enumerate() {
                let value = format!("{client}.{seq};");
                let bytes = request(client, seq, 1, i as u64 * 10 + t, KvCommand::Append {
                    key: b"k".to_vec(),
                    value: value.into_bytes(),
                });
                let r = h.apply(&bytes);
                prop_assert_eq!(
                    matches!(r, SessionResult::Applied(_)),
                    applied.insert((client, seq)),
                );
                if i == cut {
                    let mut image = Vec::new();
                    h.sm.snapshot(&mut image).unwrap();
                    replica.sm.restore(&mut image.as_slice()).unwrap();
                } else if i > cut {
                    replica.apply(&bytes);
                }
            }
            prop_assert_eq!(h.value().iter().filter(|&&b| b == b';').count(), applied.len());
            prop_assert_eq!(replica.sm.digest(), h.sm.digest());
        }
    }
}
