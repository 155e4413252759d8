//! The simulator's own small deterministic state machine: a map from keys to append-only lists of
//! u64 values. Appends make every acknowledged write observable in the final state, and a read
//! returns a whole list, so stale reads and lost writes are easy to judge.

use crate::state_machine::StateMachine;
use crate::types::Index;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};

/// Command layout: tag 1, key u64 LE, value u64 LE (17 bytes).
pub fn append_command(key: u64, value: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(17);
    v.push(1);
    v.extend_from_slice(&key.to_le_bytes());
    v.extend_from_slice(&value.to_le_bytes());
    v
}

/// Query layout: key u64 LE.
pub fn read_query(key: u64) -> Vec<u8> {
    key.to_le_bytes().to_vec()
}

/// Decodes a query result: the list of values.
pub fn decode_list(bytes: &[u8]) -> Option<Vec<u64>> {
    if bytes.len() % 8 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
    )
}

fn mix(mut x: u64) -> u64 {
    // splitmix64 finaliser: a cheap, well-spread hash step.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[derive(Clone, Debug, Default)]
pub struct ListMachine {
    lists: BTreeMap<u64, (Vec<u64>, u64)>,
    /// Sum over keys of mix(key ^ list_hash): updated in O(1) per append.
    digest: u64,
}

impl ListMachine {
    pub fn new() -> ListMachine {
        ListMachine::default()
    }

    pub fn list(&self, key: u64) -> &[u64] {
        self.lists
            .get(&key)
            .map(|(l, _)| l.as_slice())
            .unwrap_or(&[])
    }

    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.lists.keys().copied()
    }

    fn contribution(key: u64, hash: u64) -> u64 {
        mix(key ^ mix(hash))
    }

    fn push(&mut self, key: u64, value: u64) {
        let (list, hash) = self.lists.entry(key).or_insert((Vec::new(), 0));
        let old = if list.is_empty() {
            0
        } else {
            Self::contribution(key, *hash)
        };
        list.push(value);
        *hash = mix(*hash ^ value);
        let new = Self::contribution(key, *hash);
        self.digest = self.digest.wrapping_sub(old).wrapping_add(new);
    }
}

impl StateMachine for ListMachine {
    fn apply(&mut self, _index: Index, command: &[u8]) -> Vec<u8> {
        if command.len() != 17 || command[0] != 1 {
            return b"error: malformed command".to_vec();
        }
        let key = u64::from_le_bytes(command[1..9].try_into().expect("8 bytes"));
        let value = u64::from_le_bytes(command[9..17].try_into().expect("8 bytes"));
        self.push(key, value);
        b"ok".to_vec()
    }

    fn query(&self, query: &[u8]) -> Vec<u8> {
        let Ok(k) = <[u8; 8]>::try_from(query) else {
            return b"error: malformed query".to_vec();
        };
        let key = u64::from_le_bytes(k);
        self.list(key)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    fn snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&(self.lists.len() as u64).to_le_bytes())?;
        for (k, (l, _)) in &self.lists {
            out.write_all(&k.to_le_bytes())?;
            out.write_all(&(l.len() as u64).to_le_bytes())?;
            for v in l {
                out.write_all(&v.to_le_bytes())?;
            }
        }
        Ok(())
    }

    fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
        let mut bytes = Vec::new();
        input.read_to_end(&mut bytes)?;
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated list-machine snapshot",
            )
        };
        let mut words = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8")));
        if bytes.len() % 8 != 0 {
            return Err(bad());
        }
        let mut fresh = ListMachine::new();
        let n = words.next().ok_or_else(bad)?;
        for _ in 0..n {
            let k = words.next().ok_or_else(bad)?;
            let len = words.next().ok_or_else(bad)?;
            if len > (bytes.len() / 8) as u64 {
                return Err(bad());
            }
            for _ in 0..len {
                let v = words.next().ok_or_else(bad)?;
                fresh.push(k, v);
            }
        }
        if words.next().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "trailing bytes in snapshot",
            ));
        }
        *self = fresh;
        Ok(())
    }

    fn digest(&self) -> u64 {
        self.digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_roundtrip_keeps_digest_and_bad_images_fail() {
        let mut m = ListMachine::new();
        for i in 0..20u64 {
            m.apply(Index(i + 1), &append_command(i % 3, i));
        }
        let mut img = Vec::new();
        m.snapshot(&mut img).unwrap();
        let mut r = ListMachine::new();
        r.restore(&mut img.as_slice()).unwrap();
        assert_eq!(r.digest(), m.digest());
        assert_eq!(r.list(1), m.list(1));
        assert!(r.restore(&mut &img[..img.len() - 8]).is_err());
        assert!(r.restore(&mut &img[..img.len() - 3]).is_err());
        assert_eq!(
            m.apply(Index(99), b"junk"),
            b"error: malformed command".to_vec()
        );
    }

    #[test]
    fn digest_depends_on_order_and_content() {
        let mut a = ListMachine::new();
        let mut b = ListMachine::new();
        a.apply(Index(1), &append_command(1, 1));
        a.apply(Index(2), &append_command(1, 2));
        b.apply(Index(1), &append_command(1, 2));
        b.apply(Index(2), &append_command(1, 1));
        assert_ne!(a.digest(), b.digest());
    }
}
