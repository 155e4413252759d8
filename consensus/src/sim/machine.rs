//! The simulated nodes' state machine: the built-in key-value machine (`kv`) inside exactly-once
//! client sessions (`session`), with helpers to speak its encodings. Simulated clients append
//! unique tokens (`<hex value>;`) to keys `k<n>`, so every acknowledged write can be looked for in
//! the final state, duplicates (a retry applied twice) are visible, and a read returns the tokens
//! in the order they were applied.

use crate::kv::{KvCommand, KvResult, KvStateMachine};
use crate::session::{ClientRequest, SessionConfig, SessionResult, Sessions, stamp_log_time};
use crate::state_machine::StateMachine;

pub type SimMachine = Sessions<KvStateMachine>;

pub fn new_machine() -> SimMachine {
    Sessions::new(KvStateMachine::new(), SessionConfig::default())
}

fn key_bytes(key: u64) -> Vec<u8> {
    format!("k{key}").into_bytes()
}

pub fn token(value: u64) -> String {
    format!("{value:x};")
}

/// Parses a value made of tokens.
pub fn parse_tokens(bytes: &[u8]) -> Option<Vec<u64>> {
    let s = std::str::from_utf8(bytes).ok()?;
    s.split(';')
        .filter(|t| !t.is_empty())
        .map(|t| u64::from_str_radix(t, 16).ok())
        .collect()
}

/// A client's append of `value` to key `key`, in its session envelope.
pub fn append_request(
    client_id: u64,
    seq: u64,
    first_unacked_seq: u64,
    key: u64,
    value: u64,
) -> Vec<u8> {
    let command = KvCommand::Append {
        key: key_bytes(key),
        value: token(value).into_bytes(),
    }
    .encode()
    .expect("small command encodes");
    ClientRequest {
        client_id,
        seq,
        first_unacked_seq,
        log_time_ms: 0,
        command,
    }
    .encode()
    .expect("small request encodes")
}

/// The leader stamps its log time into a request before proposing it (session expiry runs on log
/// time).
pub fn stamp(request: &mut [u8], now_ms: u64) {
    let _ = stamp_log_time(request, now_ms);
}

/// What an applied request's result means for the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteResult {
    /// Applied now or before (a duplicate): acknowledged.
    Done,
    /// The session is gone: the outcome is unknown, start a new session.
    SessionLost,
    /// Not applied (for example too many pending): retry.
    NotApplied,
}

pub fn decode_write_result(bytes: &[u8]) -> WriteResult {
    match SessionResult::decode(bytes) {
        Ok(SessionResult::Applied(_)) | Ok(SessionResult::Duplicate(_)) => WriteResult::Done,
        Ok(SessionResult::SessionExpired) => WriteResult::SessionLost,
        _ => WriteResult::NotApplied,
    }
}

/// The query that reads key `key`.
pub fn read_query(key: u64) -> Vec<u8> {
    KvCommand::Get {
        key: key_bytes(key),
    }
    .encode()
    .expect("small query encodes")
}

/// The tokens in a read's result.
pub fn decode_read(result: &[u8]) -> Vec<u64> {
    match KvResult::decode(result) {
        Ok(KvResult::Value(v)) => parse_tokens(&v).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The tokens of key `key`, read through the machine's query path.
pub fn read(sm: &SimMachine, key: u64) -> Vec<u64> {
    decode_read(&sm.query(&read_query(key)))
}

pub fn key_name(key: u64) -> String {
    format!("k{key}")
}

/// An append applied without a session (tag 2), for scripted scenarios that propose directly.
pub fn unsessioned_append(key: u64, value: u64) -> Vec<u8> {
    let command = KvCommand::Append {
        key: key_bytes(key),
        value: token(value).into_bytes(),
    }
    .encode()
    .expect("small command encodes");
    let mut out = Vec::with_capacity(command.len() + 1);
    out.push(2);
    out.extend_from_slice(&command);
    out
}
