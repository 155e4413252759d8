//! The built-in key-value state machine.
//!
//! Keys and values are byte strings. Every key starts as the empty value, so a get of a key never
//! written returns an empty value and a delete is the same as a put of the empty value (the key is
//! then removed from the map, so deleted keys cost nothing and do not show in the digest).
//!
//! # Command encoding (version 1)
//!
//! All integers are fixed-width little-endian. A command is exactly one of:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version, `1` ([`KV_COMMAND_VERSION`]) |
//! | 1 | opcode: `1` put, `2` get, `3` append, `4` delete |
//! | 4 | key length `k`, at most [`MAX_KEY_BYTES`] |
//! | k | key |
//! | 4 | value length `v` (put and append only), at most [`MAX_VALUE_BYTES`] |
//! | v | value (put and append only) |
//!
//! Trailing bytes are an error. [`KvCommand::decode`] returns a [`KvDecodeError`] and never panics.
//!
//! # Result encoding (version 1)
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version, `1` |
//! | 1 | tag: `1` done (put, delete), `2` value (get), `3` appended (append), `4` error |
//! | ... | value: `u32` length + bytes; appended: `u64` new length of the value in bytes; error: `u8` code (`1` malformed command, `2` value too large) + `u32` length + UTF-8 message |
//!
//! An append returns the new length of the value, so a client can tell how far the value has
//! grown without reading it back. An append that would grow the value past [`MAX_VALUE_BYTES`]
//! leaves the value unchanged and returns an error result; every replica makes the same decision.
//!
//! # Snapshot encoding (version 1)
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `SKVS` |
//! | 4 | version, `1` |
//! | 8 | entry count `n` |
//! | n × | key length `u32`, key, value length `u32`, value; keys strictly increasing |
//! | 4 | CRC-32 (crc32fast, IEEE) of every byte before it |
//!
//! The image is self-delimiting: a restore reads exactly its bytes and leaves anything after them
//! unread (so it can be embedded, e.g. after the session table). A restore that fails leaves the
//! state unchanged and returns `io::ErrorKind::InvalidData`.
//!
//! # Digest
//!
//! [`KvStateMachine::digest`] is the word-wise FNV-style hash (`Fnv64`) of the entry count and
//! the wrapping sum of one XXH3 hash per entry (the value's hash seeded with the key's). The sum is kept up to date by
//! every change, so a digest costs O(1). It does not depend on the process, the run or the
//! platform, so digests from different node processes can be compared.
//!
//! # Memory
//!
//! Values are shared (`Arc<[u8]>`) and keys of up to 22 bytes are stored inline (longer ones
//! shared) in a hash map, so capturing a snapshot on the node's
//! loop thread copies the table and bumps reference counts, not every byte of the state; the
//! snapshot thread sorts the keys and writes the image.

pub mod client;

use crate::state_machine::StateMachine;
use crate::types::Index;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::sync::Arc;

/// The version byte every command and result starts with.
pub const KV_COMMAND_VERSION: u8 = 1;
/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;
/// The longest value, in bytes (also the limit an append cannot grow a value past).
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// The longest error message carried in a result, in bytes.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

const OP_PUT: u8 = 1;
const OP_GET: u8 = 2;
const OP_APPEND: u8 = 3;
const OP_DELETE: u8 = 4;

const RESULT_DONE: u8 = 1;
const RESULT_VALUE: u8 = 2;
const RESULT_APPENDED: u8 = 3;
const RESULT_ERROR: u8 = 4;

const ERROR_MALFORMED: u8 = 1;
const ERROR_VALUE_TOO_LARGE: u8 = 2;

/// The snapshot image's magic bytes.
pub const KV_SNAPSHOT_MAGIC: [u8; 4] = *b"SKVS";
/// The snapshot image's version.
pub const KV_SNAPSHOT_VERSION: u32 = 1;

/// A key-value command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvCommand {
    /// Sets `key` to `value`.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// Reads `key` (empty if never written).
    Get { key: Vec<u8> },
    /// Appends `value` to the value of `key`.
    Append { key: Vec<u8>, value: Vec<u8> },
    /// Sets `key` back to the empty value.
    Delete { key: Vec<u8> },
}

/// Why bytes did not decode as a [`KvCommand`] or [`KvResult`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvDecodeError {
    #[error("empty input")]
    Empty,
    #[error("unsupported version {found} (expected {KV_COMMAND_VERSION})")]
    Version { found: u8 },
    #[error("unknown opcode or tag {found}")]
    UnknownTag { found: u8 },
    #[error("unknown error code {found}")]
    UnknownErrorCode { found: u8 },
    #[error("truncated: needed {needed} bytes at offset {offset}, {available} available")]
    Truncated {
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("{field} length {len} exceeds the limit {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{count} trailing bytes after the end")]
    TrailingBytes { count: usize },
    #[error("error message is not UTF-8")]
    MessageNotUtf8,
}

/// The result of applying or querying a [`KvCommand`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResult {
    /// A put or delete took effect.
    Done,
    /// A get's value (empty for a key never written).
    Value(Vec<u8>),
    /// An append took effect; the value is now `new_len` bytes long.
    Appended { new_len: u64 },
    /// The command did not take effect.
    Error(KvError),
}

/// Why a command did not take effect. Returned as a result (every replica returns the same), not
/// raised: see the `StateMachine` contract.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("malformed command: {0}")]
    Malformed(String),
    #[error("value would be {len} bytes, over the limit of {max}")]
    ValueTooLarge { len: u64, max: u64 },
}

/// A little-endian reader over a byte slice that reports truncation instead of panicking.
struct Cursor<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, offset: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], KvDecodeError> {
        let available = self.bytes.len() - self.offset;
        if n > available {
            return Err(KvDecodeError::Truncated {
                offset: self.offset,
                needed: n,
                available,
            });
        }
        let out = &self.bytes[self.offset..self.offset + n];
        self.offset += n;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, KvDecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, KvDecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, KvDecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A `u32`-length-prefixed byte string of at most `max` bytes.
    fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], KvDecodeError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(KvDecodeError::TooLong { field, len, max });
        }
        self.take(len)
    }

    fn finish(&self) -> Result<(), KvDecodeError> {
        let count = self.bytes.len() - self.offset;
        if count != 0 {
            return Err(KvDecodeError::TrailingBytes { count });
        }
        Ok(())
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Callers check the limits first; a length past u32 would be a bug in this module.
    let len = u32::try_from(bytes.len()).expect("length checked against a limit below u32::MAX");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

impl KvCommand {
    /// The key the command addresses.
    pub fn key(&self) -> &[u8] {
        match self {
            KvCommand::Put { key, .. }
            | KvCommand::Get { key }
            | KvCommand::Append { key, .. }
            | KvCommand::Delete { key } => key,
        }
    }

    /// Checks the length limits, so that what is encoded always decodes.
    pub fn validate(&self) -> Result<(), KvDecodeError> {
        if self.key().len() > MAX_KEY_BYTES {
            return Err(KvDecodeError::TooLong {
                field: "key",
                len: self.key().len(),
                max: MAX_KEY_BYTES,
            });
        }
        if let KvCommand::Put { value, .. } | KvCommand::Append { value, .. } = self
            && value.len() > MAX_VALUE_BYTES
        {
            return Err(KvDecodeError::TooLong {
                field: "value",
                len: value.len(),
                max: MAX_VALUE_BYTES,
            });
        }
        Ok(())
    }

    /// Encodes the command, or says which limit it breaks.
    pub fn encode(&self) -> Result<Vec<u8>, KvDecodeError> {
        self.validate()?;
        let mut out = Vec::with_capacity(10 + self.key().len());
        out.push(KV_COMMAND_VERSION);
        match self {
            KvCommand::Put { key, value } => {
                out.push(OP_PUT);
                put_bytes(&mut out, key);
                put_bytes(&mut out, value);
            }
            KvCommand::Get { key } => {
                out.push(OP_GET);
                put_bytes(&mut out, key);
            }
            KvCommand::Append { key, value } => {
                out.push(OP_APPEND);
                put_bytes(&mut out, key);
                put_bytes(&mut out, value);
            }
            KvCommand::Delete { key } => {
                out.push(OP_DELETE);
                put_bytes(&mut out, key);
            }
        }
        Ok(out)
    }

    /// Decodes a command; any malformed input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<KvCommand, KvDecodeError> {
        let (op, key, value) = decode_parts(bytes)?;
        let key = key.to_vec();
        Ok(match op {
            OP_PUT => KvCommand::Put {
                key,
                value: value.to_vec(),
            },
            OP_APPEND => KvCommand::Append {
                key,
                value: value.to_vec(),
            },
            OP_GET => KvCommand::Get { key },
            _ => KvCommand::Delete { key },
        })
    }
}

/// Decodes a command into its operation, key and value (empty for get and delete) without
/// copying; any malformed input is an error, never a panic.
fn decode_parts(bytes: &[u8]) -> Result<(u8, &[u8], &[u8]), KvDecodeError> {
    let mut c = Cursor::new(bytes);
    let version = c.u8().map_err(|_| KvDecodeError::Empty)?;
    if version != KV_COMMAND_VERSION {
        return Err(KvDecodeError::Version { found: version });
    }
    let op = c.u8()?;
    let parts = match op {
        OP_PUT | OP_APPEND => {
            let key = c.bytes("key", MAX_KEY_BYTES)?;
            let value = c.bytes("value", MAX_VALUE_BYTES)?;
            (op, key, value)
        }
        OP_GET | OP_DELETE => (op, c.bytes("key", MAX_KEY_BYTES)?, &[][..]),
        found => return Err(KvDecodeError::UnknownTag { found }),
    };
    c.finish()?;
    Ok(parts)
}

impl KvResult {
    /// Encodes the result. Error messages longer than [`MAX_ERROR_MESSAGE_BYTES`] are cut at a
    /// character boundary, so every encoded result decodes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![KV_COMMAND_VERSION];
        match self {
            KvResult::Done => out.push(RESULT_DONE),
            KvResult::Value(v) => {
                out.push(RESULT_VALUE);
                // A value past the limit cannot be stored, so it cannot be read back either.
                put_bytes(&mut out, v);
            }
            KvResult::Appended { new_len } => {
                out.push(RESULT_APPENDED);
                out.extend_from_slice(&new_len.to_le_bytes());
            }
            KvResult::Error(KvError::Malformed(message)) => {
                out.push(RESULT_ERROR);
                out.push(ERROR_MALFORMED);
                put_bytes(
                    &mut out,
                    truncate_utf8(message, MAX_ERROR_MESSAGE_BYTES).as_bytes(),
                );
            }
            KvResult::Error(KvError::ValueTooLarge { len, max }) => {
                out.push(RESULT_ERROR);
                out.push(ERROR_VALUE_TOO_LARGE);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&max.to_le_bytes());
            }
        }
        out
    }

    /// Decodes a result; any malformed input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<KvResult, KvDecodeError> {
        let mut c = Cursor::new(bytes);
        let version = c.u8().map_err(|_| KvDecodeError::Empty)?;
        if version != KV_COMMAND_VERSION {
            return Err(KvDecodeError::Version { found: version });
        }
        let result = match c.u8()? {
            RESULT_DONE => KvResult::Done,
            RESULT_VALUE => KvResult::Value(c.bytes("value", MAX_VALUE_BYTES)?.to_vec()),
            RESULT_APPENDED => KvResult::Appended { new_len: c.u64()? },
            RESULT_ERROR => match c.u8()? {
                ERROR_MALFORMED => {
                    let m = c.bytes("error message", MAX_ERROR_MESSAGE_BYTES)?;
                    let m = std::str::from_utf8(m).map_err(|_| KvDecodeError::MessageNotUtf8)?;
                    KvResult::Error(KvError::Malformed(m.to_owned()))
                }
                ERROR_VALUE_TOO_LARGE => {
                    let len = c.u64()?;
                    let max = c.u64()?;
                    KvResult::Error(KvError::ValueTooLarge { len, max })
                }
                found => return Err(KvDecodeError::UnknownErrorCode { found }),
            },
            found => return Err(KvDecodeError::UnknownTag { found }),
        };
        c.finish()?;
        Ok(result)
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A 64-bit FNV-1a-style digest: simple and deterministic across processes and platforms
/// (unlike std's randomly seeded `DefaultHasher`), good enough to compare replica states.
///
/// Whole 8-byte little-endian words are mixed in one step (xor, multiply by the FNV prime,
/// rotate; inputs of 128 bytes or more in four interleaved lanes), the remaining bytes one at
/// a time as in FNV-1a. Byte-at-a-time FNV runs at about
/// 1 GB/s, and a node computes the digest of its whole state for its status: with a state of
/// hundreds of MiB that stalled the event loop for a third of a second (found profiling
/// `shmraft bench catchup`; the key-value digest itself is now O(1), but the session table and
/// other users still hash whole byte strings). Every step is a bijection of the running value (and of the lane
/// values), so two inputs of the same length that differ in one word always give different
/// digests.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fnv64(u64);

const FNV64_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Fnv64 {
    pub(crate) const fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        if rest.len() >= 4 * 32 {
            // Long inputs (values of a large state): four independent lanes, so the multiplies
            // overlap instead of waiting on each other, then the lanes folded in one by one.
            let mut lanes = [
                self.0,
                self.0 ^ 0x9e37_79b9_7f4a_7c15,
                self.0 ^ 0xc2b2_ae3d_27d4_eb4f,
                self.0 ^ 0x1656_67b1_9e37_79f9,
            ];
            let mut blocks = rest.chunks_exact(32);
            for b in &mut blocks {
                for (lane, w) in lanes.iter_mut().zip(b.chunks_exact(8)) {
                    let w = u64::from_le_bytes(w.try_into().expect("chunks of 8"));
                    *lane = Self::mix(*lane, w);
                }
            }
            rest = blocks.remainder();
            for lane in lanes {
                self.0 = Self::mix(self.0, lane);
            }
        }
        let mut words = rest.chunks_exact(8);
        for w in &mut words {
            self.0 = Self::mix(
                self.0,
                u64::from_le_bytes(w.try_into().expect("chunks of 8")),
            );
        }
        for &b in words.remainder() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(FNV64_PRIME);
        }
    }

    /// One word into a running value: a bijection of the value for a fixed word and of the word
    /// for a fixed value.
    #[inline(always)]
    fn mix(h: u64, w: u64) -> u64 {
        (h ^ w).wrapping_mul(FNV64_PRIME).rotate_left(29)
    }

    pub(crate) fn write_u64(&mut self, v: u64) {
        self.write(&v.to_le_bytes());
    }

    /// A length-prefixed byte string, so ("ab","c") and ("a","bc") hash differently.
    pub(crate) fn write_framed(&mut self, bytes: &[u8]) {
        self.write_u64(bytes.len() as u64);
        self.write(bytes);
    }

    pub(crate) fn finish(self) -> u64 {
        self.0
    }
}

/// The machine's map: keys and values shared with snapshots in progress (module docs, "Memory").
type Entries = HashMap<Key, Arc<[u8]>>;

/// A key: up to [`Key::INLINE`] bytes stored in the hash table itself, longer ones shared on the
/// heap. Most keys are short, and comparing an inline key during a lookup touches no other
/// cache line (profiling showed the pointer chase to heap keys as a fifth of the apply cost).
/// Hashes and compares exactly as the byte string it holds, so lookups take `&[u8]`.
#[derive(Clone)]
enum Key {
    Inline { len: u8, bytes: [u8; Key::INLINE] },
    Shared(Arc<[u8]>),
}

impl Key {
    const INLINE: usize = 22;

    fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..*len as usize],
            Key::Shared(b) => b,
        }
    }
}

impl From<&[u8]> for Key {
    fn from(b: &[u8]) -> Key {
        if b.len() <= Key::INLINE {
            let mut bytes = [0u8; Key::INLINE];
            bytes[..b.len()].copy_from_slice(b);
            Key::Inline {
                len: b.len() as u8,
                bytes,
            }
        } else {
            Key::Shared(b.into())
        }
    }
}

impl std::borrow::Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Must equal the hash of the `[u8]` it borrows as (HashMap lookups by `&[u8]`).
        self.as_slice().hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Key {}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_slice())
    }
}

/// The built-in key-value state machine. See the module docs for the encodings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStateMachine {
    /// Keys whose value is not empty; a missing key reads as empty.
    entries: Entries,
    /// Wrapping sum of [`entry_hash`] over `entries`, kept up to date by every change, so the
    /// digest costs O(1) instead of a pass over the whole state (status files ask for it often).
    hash_sum: u64,
}

/// The hash of one (key, value) pair: XXH3 of the value seeded with XXH3 of the key (no
/// per-process seed: equal on every node and in every run). A sum of these is independent of
/// iteration order, and adding or removing one entry updates it in O(entry size).
fn entry_hash(key: &[u8], value: &[u8]) -> u64 {
    use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};
    xxh3_64_with_seed(value, xxh3_64(key))
}

impl KvStateMachine {
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key` (empty if never written or deleted).
    pub fn get(&self, key: &[u8]) -> &[u8] {
        self.entries.get(key).map_or(&[], |v| &v[..])
    }

    /// The number of keys with a non-empty value.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The non-empty entries in key order (sorts: O(n log n)).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut v: Vec<(&[u8], &[u8])> = self
            .entries
            .iter()
            .map(|(k, v)| (k.as_slice(), &v[..]))
            .collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v.into_iter()
    }

    /// Removes `key`, keeping `hash_sum` in step.
    fn remove_entry(&mut self, key: &[u8]) {
        if let Some(old) = self.entries.remove(key) {
            self.hash_sum = self.hash_sum.wrapping_sub(entry_hash(key, &old));
        }
    }

    /// Applies a decoded command and returns its result.
    pub fn apply_command(&mut self, command: KvCommand) -> KvResult {
        match &command {
            KvCommand::Put { key, value } => self.apply_parts(OP_PUT, key, value),
            KvCommand::Append { key, value } => self.apply_parts(OP_APPEND, key, value),
            KvCommand::Get { key } => self.apply_parts(OP_GET, key, &[]),
            KvCommand::Delete { key } => self.apply_parts(OP_DELETE, key, &[]),
        }
    }

    /// Applies one operation on borrowed bytes: the log's payload is read in place, and an
    /// overwrite of a value by one of the same length reuses its memory when no snapshot in
    /// progress shares it (no allocation, no free on the steady-state path).
    fn apply_parts(&mut self, op: u8, key: &[u8], value: &[u8]) -> KvResult {
        match op {
            OP_PUT if value.is_empty() => {
                self.remove_entry(key);
                KvResult::Done
            }
            OP_PUT => {
                self.hash_sum = self.hash_sum.wrapping_add(entry_hash(key, value));
                match self.entries.get_mut(key) {
                    Some(v) => {
                        self.hash_sum = self.hash_sum.wrapping_sub(entry_hash(key, v));
                        match Arc::get_mut(v) {
                            Some(m) if m.len() == value.len() => m.copy_from_slice(value),
                            _ => *v = value.into(),
                        }
                    }
                    None => {
                        self.entries.insert(key.into(), value.into());
                    }
                }
                KvResult::Done
            }
            OP_GET => KvResult::Value(self.get(key).to_vec()),
            OP_APPEND => {
                let current = self.get(key).len();
                let new_len = current + value.len();
                if new_len > MAX_VALUE_BYTES {
                    return KvResult::Error(KvError::ValueTooLarge {
                        len: new_len as u64,
                        max: MAX_VALUE_BYTES as u64,
                    });
                }
                if !value.is_empty() {
                    // Values may be shared with a snapshot in progress: build the new one.
                    let mut v = Vec::with_capacity(new_len);
                    if let Some(old) = self.entries.get(key) {
                        v.extend_from_slice(old);
                        self.hash_sum = self.hash_sum.wrapping_sub(entry_hash(key, old));
                    }
                    v.extend_from_slice(value);
                    self.hash_sum = self.hash_sum.wrapping_add(entry_hash(key, &v));
                    match self.entries.get_mut(key) {
                        Some(slot) => *slot = v.into(),
                        None => {
                            self.entries.insert(key.into(), v.into());
                        }
                    }
                }
                KvResult::Appended {
                    new_len: new_len as u64,
                }
            }
            _ => {
                self.remove_entry(key);
                KvResult::Done
            }
        }
    }

    fn read_image(input: &mut dyn Read) -> Result<Entries, String> {
        let mut r = CrcReader {
            inner: input,
            crc: crc32fast::Hasher::new(),
        };
        let magic: [u8; 4] = r.array().map_err(|e| format!("reading the magic: {e}"))?;
        if magic != KV_SNAPSHOT_MAGIC {
            return Err(format!(
                "bad magic {magic:02x?}, expected {KV_SNAPSHOT_MAGIC:02x?}"
            ));
        }
        let version =
            u32::from_le_bytes(r.array().map_err(|e| format!("reading the version: {e}"))?);
        if version != KV_SNAPSHOT_VERSION {
            return Err(format!(
                "unsupported version {version}, expected {KV_SNAPSHOT_VERSION}"
            ));
        }
        let count = u64::from_le_bytes(r.array().map_err(|e| format!("reading the count: {e}"))?);
        // The count is untrusted: reserve a bounded amount up front, grow past it as entries
        // actually arrive.
        let mut entries = HashMap::with_capacity(count.min(1 << 16) as usize);
        let mut previous: Option<Key> = None;
        for i in 0..count {
            let key = r
                .framed(MAX_KEY_BYTES)
                .map_err(|e| format!("entry {i}: key: {e}"))?;
            let value = r
                .framed(MAX_VALUE_BYTES)
                .map_err(|e| format!("entry {i}: value: {e}"))?;
            if previous.as_ref().is_some_and(|p| p.as_slice() >= &key[..]) {
                return Err(format!("entry {i}: keys are not strictly increasing"));
            }
            if value.is_empty() {
                return Err(format!(
                    "entry {i}: empty value (empty values are never stored)"
                ));
            }
            let key = Key::from(&key[..]);
            previous = Some(key.clone());
            entries.insert(key, value.into());
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
        Ok(entries)
    }
}

/// Reads from an untrusted stream while computing the CRC of what it read. Lengths are checked
/// against their limits before anything is allocated.
pub(crate) struct CrcReader<'a> {
    pub(crate) inner: &'a mut dyn Read,
    pub(crate) crc: crc32fast::Hasher,
}

impl CrcReader<'_> {
    pub(crate) fn array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut a = [0u8; N];
        self.inner.read_exact(&mut a)?;
        self.crc.update(&a);
        Ok(a)
    }

    pub(crate) fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A `u32`-length-prefixed byte string of at most `max` bytes (checked before allocating).
    pub(crate) fn framed(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("length {len} exceeds the limit {max}"),
            ));
        }
        // At most `max` bytes, so a forged length costs one bounded allocation before the
        // short read below refuses it. One exact-size buffer: `read_to_end` into an empty
        // vector regrew (and recopied) every value several times, and a restore reads every
        // key and value of the state through here.
        let mut out = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match self.inner.read(&mut out[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if got != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{got} of {len} bytes before the end of the image"),
            ));
        }
        self.crc.update(&out);
        Ok(out)
    }
}

/// Writes to a stream while computing the CRC of what it wrote.
pub(crate) struct CrcWriter<'a> {
    pub(crate) inner: &'a mut dyn Write,
    pub(crate) crc: crc32fast::Hasher,
}

impl CrcWriter<'_> {
    pub(crate) fn bytes(&mut self, b: &[u8]) -> io::Result<()> {
        self.crc.update(b);
        self.inner.write_all(b)
    }

    pub(crate) fn framed(&mut self, b: &[u8]) -> io::Result<()> {
        let len = u32::try_from(b.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "field longer than u32"))?;
        self.bytes(&len.to_le_bytes())?;
        self.bytes(b)
    }

    /// Writes the CRC of everything written so far (not itself covered by the CRC).
    pub(crate) fn finish(self) -> io::Result<()> {
        let crc = self.crc.finalize();
        self.inner.write_all(&crc.to_le_bytes())
    }
}

impl StateMachine for KvStateMachine {
    fn apply(&mut self, _index: Index, command: &[u8]) -> Vec<u8> {
        let result = match decode_parts(command) {
            Ok((op, key, value)) => self.apply_parts(op, key, value),
            Err(e) => KvResult::Error(KvError::Malformed(e.to_string())),
        };
        result.encode()
    }

    /// Serves gets only: a query is an encoded [`KvCommand::Get`]; anything else is an error
    /// result, because a query must not change state.
    fn query(&self, query: &[u8]) -> Vec<u8> {
        let result = match KvCommand::decode(query) {
            Ok(KvCommand::Get { key }) => KvResult::Value(self.get(&key).to_vec()),
            Ok(other) => KvResult::Error(KvError::Malformed(format!(
                "a query must be a get, not {}",
                pretty_command(&other)
            ))),
            Err(e) => KvResult::Error(KvError::Malformed(e.to_string())),
        };
        result.encode()
    }

    /// A clone of the map on the loop thread (the table and reference counts: keys and values
    /// are shared); sorting, serialising and writing happen on the snapshot thread.
    fn snapshot_job(&self) -> Option<crate::state_machine::SnapshotJob> {
        let copy = self.clone();
        Some(Box::new(move |out: &mut dyn Write| copy.snapshot(out)))
    }

    fn snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut w = CrcWriter {
            inner: out,
            crc: crc32fast::Hasher::new(),
        };
        w.bytes(&KV_SNAPSHOT_MAGIC)?;
        w.bytes(&KV_SNAPSHOT_VERSION.to_le_bytes())?;
        w.bytes(&(self.entries.len() as u64).to_le_bytes())?;
        // The image lists keys in increasing order (restore checks it).
        for (key, value) in self.iter() {
            w.framed(key)?;
            w.framed(value)?;
        }
        w.finish()
    }

    fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
        let entries = Self::read_image(input).map_err(|reason| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("key-value snapshot: {reason}"),
            )
        })?;
        self.hash_sum = entries.iter().fold(0u64, |s, (k, v)| {
            s.wrapping_add(entry_hash(k.as_slice(), v))
        });
        self.entries = entries;
        Ok(())
    }

    /// O(1): the entry count and the running sum of entry hashes (see [`entry_hash`]).
    fn digest(&self) -> u64 {
        debug_assert_eq!(
            self.hash_sum,
            self.entries.iter().fold(0u64, |s, (k, v)| s
                .wrapping_add(entry_hash(k.as_slice(), v))),
            "the running entry-hash sum matches the state"
        );
        let mut h = Fnv64::new();
        h.write_u64(self.entries.len() as u64);
        h.write_u64(self.hash_sum);
        h.finish()
    }
}

/// How many bytes of a key or value [`pretty`] shows before eliding the rest.
const PRETTY_BYTES_MAX: usize = 64;

fn pretty_bytes(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for chunk in bytes[..bytes.len().min(PRETTY_BYTES_MAX)].utf8_chunks() {
        for ch in chunk.valid().chars() {
            for e in ch.escape_debug() {
                out.push(e);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    if bytes.len() > PRETTY_BYTES_MAX {
        let _ = write!(out, "…({} bytes)", bytes.len());
    }
}

fn pretty_command(command: &KvCommand) -> String {
    let mut out = String::new();
    match command {
        KvCommand::Put { key, value } => {
            out.push_str("put ");
            pretty_bytes(&mut out, key);
            out.push_str(" = ");
            pretty_bytes(&mut out, value);
        }
        KvCommand::Get { key } => {
            out.push_str("get ");
            pretty_bytes(&mut out, key);
        }
        KvCommand::Append { key, value } => {
            out.push_str("append ");
            pretty_bytes(&mut out, key);
            out.push_str(" += ");
            pretty_bytes(&mut out, value);
        }
        KvCommand::Delete { key } => {
            out.push_str("delete ");
            pretty_bytes(&mut out, key);
        }
    }
    out
}

/// A one-line, human-readable rendering of encoded command bytes for `raft-dump`, e.g.
/// `put "k" = "v"`. Long keys and values are elided; bytes that do not decode are described, not
/// rejected.
pub fn pretty(command: &[u8]) -> String {
    match KvCommand::decode(command) {
        Ok(c) => pretty_command(&c),
        Err(e) => format!("<not a kv command ({} bytes): {e}>", command.len()),
    }
}

/// A one-line rendering of encoded result bytes, e.g. `value "v"` or `appended, length 3`.
pub fn pretty_result(result: &[u8]) -> String {
    match KvResult::decode(result) {
        Ok(KvResult::Done) => "done".to_owned(),
        Ok(KvResult::Value(v)) => {
            let mut out = "value ".to_owned();
            pretty_bytes(&mut out, &v);
            out
        }
        Ok(KvResult::Appended { new_len }) => format!("appended, length {new_len}"),
        Ok(KvResult::Error(e)) => format!("error: {e}"),
        Err(e) => format!("<not a kv result ({} bytes): {e}>", result.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn apply(sm: &mut KvStateMachine, i: u64, c: KvCommand) -> KvResult {
        KvResult::decode(&sm.apply(Index(i), &c.encode().unwrap())).unwrap()
    }

    fn k(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn fresh_key_reads_empty_and_put_get_append_delete_work() {
        let mut sm = KvStateMachine::new();
        assert_eq!(
            apply(&mut sm, 1, KvCommand::Get { key: k("a") }),
            KvResult::Value(vec![])
        );
        assert_eq!(
            apply(
                &mut sm,
                2,
                KvCommand::Put {
                    key: k("a"),
                    value: k("x")
                }
            ),
            KvResult::Done
        );
        assert_eq!(
            apply(
                &mut sm,
                3,
                KvCommand::Append {
                    key: k("a"),
                    value: k("yz")
                }
            ),
            KvResult::Appended { new_len: 3 }
        );
        assert_eq!(
            apply(&mut sm, 4, KvCommand::Get { key: k("a") }),
            KvResult::Value(k("xyz"))
        );
        assert_eq!(
            apply(
                &mut sm,
                5,
                KvCommand::Append {
                    key: k("b"),
                    value: k("q")
                }
            ),
            KvResult::Appended { new_len: 1 }
        );
        assert_eq!(
            apply(&mut sm, 6, KvCommand::Delete { key: k("a") }),
            KvResult::Done
        );
        assert_eq!(
            apply(&mut sm, 7, KvCommand::Get { key: k("a") }),
            KvResult::Value(vec![])
        );
        assert_eq!(sm.len(), 1);
    }

    #[test]
    fn put_of_empty_value_equals_delete_for_state_and_digest() {
        let mut a = KvStateMachine::new();
        let mut b = KvStateMachine::new();
        apply(
            &mut a,
            1,
            KvCommand::Put {
                key: k("a"),
                value: k("1"),
            },
        );
        apply(
            &mut a,
            2,
            KvCommand::Put {
                key: k("a"),
                value: vec![],
            },
        );
        apply(&mut b, 1, KvCommand::Delete { key: k("a") });
        assert_eq!(a, b);
        assert_eq!(a.digest(), b.digest());
    }

    #[test]
    fn append_past_the_value_limit_is_rejected_and_changes_nothing() {
        let mut sm = KvStateMachine::new();
        let big = vec![b'x'; MAX_VALUE_BYTES];
        apply(
            &mut sm,
            1,
            KvCommand::Put {
                key: k("a"),
                value: big,
            },
        );
        let before = sm.digest();
        let r = apply(
            &mut sm,
            2,
            KvCommand::Append {
                key: k("a"),
                value: k("y"),
            },
        );
        assert!(
            matches!(r, KvResult::Error(KvError::ValueTooLarge { .. })),
            "{r:?}"
        );
        assert_eq!(sm.digest(), before);
    }

    #[test]
    fn malformed_command_gives_an_error_result_not_a_panic() {
        let mut sm = KvStateMachine::new();
        for bad in [
            &b""[..],
            &[9][..],
            &[1, 9][..],
            &[1, 1, 5, 0, 0, 0, b'a'][..],
        ] {
            let r = KvResult::decode(&sm.apply(Index(1), bad)).unwrap();
            assert!(
                matches!(r, KvResult::Error(KvError::Malformed(_))),
                "{bad:?}: {r:?}"
            );
        }
        assert!(sm.is_empty());
    }

    #[test]
    fn query_serves_gets_and_refuses_writes() {
        let mut sm = KvStateMachine::new();
        apply(
            &mut sm,
            1,
            KvCommand::Put {
                key: k("a"),
                value: k("v"),
            },
        );
        let get = KvCommand::Get { key: k("a") }.encode().unwrap();
        assert_eq!(
            KvResult::decode(&sm.query(&get)).unwrap(),
            KvResult::Value(k("v"))
        );
        let put = KvCommand::Put {
            key: k("a"),
            value: k("w"),
        }
        .encode()
        .unwrap();
        let r = KvResult::decode(&sm.query(&put)).unwrap();
        assert!(matches!(r, KvResult::Error(KvError::Malformed(_))));
        assert_eq!(sm.get(b"a"), b"v");
    }

    #[test]
    fn inline_and_shared_keys_hash_compare_and_round_trip_alike() {
        let mut sm = KvStateMachine::new();
        let keys: Vec<Vec<u8>> = [0usize, 1, 21, 22, 23, 64, 4096]
            .iter()
            .map(|&n| (0..n).map(|i| b'a' + (i % 26) as u8).collect())
            .collect();
        for (i, k) in keys.iter().enumerate() {
            apply(
                &mut sm,
                i as u64 + 1,
                KvCommand::Put {
                    key: k.clone(),
                    value: vec![i as u8 + 1; 3],
                },
            );
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(sm.get(k), &[i as u8 + 1; 3][..], "key of {} bytes", k.len());
        }
        // Overwrite in place (same length) and with a new length, across the inline limit.
        apply(
            &mut sm,
            10,
            KvCommand::Put {
                key: keys[3].clone(),
                value: vec![9; 3],
            },
        );
        apply(
            &mut sm,
            11,
            KvCommand::Put {
                key: keys[4].clone(),
                value: vec![8; 5],
            },
        );
        assert_eq!(sm.get(&keys[3]), &[9; 3][..]);
        assert_eq!(sm.get(&keys[4]), &[8; 5][..]);
        assert_eq!(sm.len(), keys.len());
        let mut image = Vec::new();
        sm.snapshot(&mut image).unwrap();
        let mut restored = KvStateMachine::new();
        restored.restore(&mut image.as_slice()).unwrap();
        assert_eq!(restored, sm);
        assert_eq!(restored.digest(), sm.digest());
        let sorted: Vec<&[u8]> = restored.iter().map(|(k, _)| k).collect();
        assert!(
            sorted.windows(2).all(|w| w[0] < w[1]),
            "iter() is in key order"
        );
    }

    #[test]
    fn snapshot_round_trips_and_bad_images_are_invalid_data() {
        let mut sm = KvStateMachine::new();
        for i in 0..50u64 {
            let key = format!("key{i}").into_bytes();
            apply(
                &mut sm,
                i + 1,
                KvCommand::Put {
                    key,
                    value: i.to_le_bytes().to_vec(),
                },
            );
        }
        let mut image = Vec::new();
        sm.snapshot(&mut image).unwrap();
        let mut restored = KvStateMachine::new();
        restored.restore(&mut image.as_slice()).unwrap();
        assert_eq!(restored, sm);
        assert_eq!(restored.digest(), sm.digest());

        // Every single-bit flip and every truncation is refused and leaves the state unchanged.
        for byte in (0..image.len()).step_by(7) {
            let mut bad = image.clone();
            bad[byte] ^= 0x10;
            let mut target = restored.clone();
            let e = target.restore(&mut bad.as_slice()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "flip at {byte}");
            assert_eq!(target, sm);
        }
        for len in 0..image.len() {
            let e = KvStateMachine::new()
                .restore(&mut &image[..len])
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "truncated to {len}");
        }
        // The image is self-delimiting: a restore reads exactly its bytes, no more.
        let mut followed = image.clone();
        followed.extend_from_slice(b"rest");
        let mut input = followed.as_slice();
        let mut again = KvStateMachine::new();
        again.restore(&mut input).unwrap();
        assert_eq!(again, sm);
        assert_eq!(input, b"rest");
    }

    #[test]
    fn digest_sees_a_change_of_any_single_byte_of_a_long_value() {
        let base = vec![0x5au8; 4096 + 13];
        let digest = |bytes: &[u8]| {
            let mut h = Fnv64::new();
            h.write(bytes);
            h.finish()
        };
        let d0 = digest(&base);
        // Every position class: inside the four lanes, the word tail, the byte tail.
        for at in [0, 7, 8, 31, 32, 100, 4095, 4096, 4100, 4108] {
            let mut v = base.clone();
            v[at] ^= 1;
            assert_ne!(digest(&v), d0, "a flip at byte {at} went unnoticed");
        }
        assert_ne!(digest(&base[..4096]), d0);
    }

    #[test]
    fn digest_is_stable_across_runs_and_independent_of_insertion_order() {
        let mut a = KvStateMachine::new();
        let mut b = KvStateMachine::new();
        apply(
            &mut a,
            1,
            KvCommand::Put {
                key: k("x"),
                value: k("1"),
            },
        );
        apply(
            &mut a,
            2,
            KvCommand::Put {
                key: k("y"),
                value: k("2"),
            },
        );
        apply(
            &mut b,
            1,
            KvCommand::Put {
                key: k("y"),
                value: k("2"),
            },
        );
        apply(
            &mut b,
            2,
            KvCommand::Put {
                key: k("x"),
                value: k("1"),
            },
        );
        assert_eq!(a.digest(), b.digest());
        assert_ne!(a.digest(), KvStateMachine::new().digest());
        // A fixed value: neither FNV-1a nor XXH3 has a per-process seed, so this never changes
        // between runs or processes.
        assert_eq!(KvStateMachine::new().digest(), {
            let mut h = Fnv64::new();
            h.write_u64(0);
            h.write_u64(0);
            h.finish()
        });
        assert_eq!(Fnv64::new().finish(), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn pretty_prints_commands_and_describes_garbage() {
        let put = KvCommand::Put {
            key: k("k"),
            value: k("v\n"),
        }
        .encode()
        .unwrap();
        assert_eq!(pretty(&put), r#"put "k" = "v\n""#);
        let app = KvCommand::Append {
            key: vec![0xff],
            value: k("x"),
        }
        .encode()
        .unwrap();
        assert_eq!(pretty(&app), r#"append "\xff" += "x""#);
        let long = KvCommand::Get {
            key: vec![b'a'; 100],
        }
        .encode()
        .unwrap();
        assert!(pretty(&long).ends_with("…(100 bytes)"));
        assert!(pretty(&[7, 7]).starts_with("<not a kv command"));
        assert_eq!(
            pretty_result(&KvResult::Appended { new_len: 3 }.encode()),
            "appended, length 3"
        );
    }

    fn arb_command() -> impl Strategy<Value = KvCommand> {
        let key = proptest::collection::vec(any::<u8>(), 0..16);
        let value = proptest::collection::vec(any::<u8>(), 0..32);
        prop_oneof![
            (key.clone(), value.clone()).prop_map(|(key, value)| KvCommand::Put { key, value }),
            key.clone().prop_map(|key| KvCommand::Get { key }),
            (key.clone(), value).prop_map(|(key, value)| KvCommand::Append { key, value }),
            key.prop_map(|key| KvCommand::Delete { key }),
        ]
    }

    fn arb_result() -> impl Strategy<Value = KvResult> {
        prop_oneof![
            Just(KvResult::Done),
            proptest::collection::vec(any::<u8>(), 0..32).prop_map(KvResult::Value),
            any::<u64>().prop_map(|new_len| KvResult::Appended { new_len }),
            ".{0,40}".prop_map(|m| KvResult::Error(KvError::Malformed(m))),
            (any::<u64>(), any::<u64>())
                .prop_map(|(len, max)| KvResult::Error(KvError::ValueTooLarge { len, max })),
        ]
    }

    proptest! {
        #[test]
        fn command_round_trips(c in arb_command()) {
            prop_assert_eq!(KvCommand::decode(&c.encode().unwrap()).unwrap(), c);
        }

        #[test]
        fn result_round_trips(r in arb_result()) {
            prop_assert_eq!(KvResult::decode(&r.encode()).unwrap(), r);
        }

        #[test]
        fn any_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = KvCommand::decode(&bytes);
            let _ = KvResult::decode(&bytes);
            let _ = pretty(&bytes);
            let _ = pretty_result(&bytes);
            let mut sm = KvStateMachine::new();
            let _ = sm.apply(Index(1), &bytes);
            let _ = sm.query(&bytes);
            let _ = sm.restore(&mut bytes.as_slice());
            prop_assert!(sm.is_empty());
        }

        #[test]
        fn snapshot_restore_of_mutated_images_never_panics(
            commands in proptest::collection::vec(arb_command(), 0..20),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            cut in any::<usize>(),
        ) {
            let mut sm = KvStateMachine::new();
            for (i, c) in commands.into_iter().enumerate() {
                sm.apply(Index(i as u64 + 1), &c.encode().unwrap());
            }
            let mut image = Vec::new();
            sm.snapshot(&mut image).unwrap();
            let mut restored = KvStateMachine::new();
            restored.restore(&mut image.as_slice()).unwrap();
            prop_assert_eq!(&restored, &sm);
            for (at, x) in flips {
                let at = at % image.len();
                image[at] ^= x;
            }
            let len = image.len();
            image.truncate(len - cut % 3);
            if restored.restore(&mut image.as_slice()).is_err() {
                prop_assert_eq!(&restored, &sm);
            }
        }
    }
}
