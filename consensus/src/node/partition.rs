//! The drop matrix a nemesis writes to partition a running cluster: a JSON file listing the
//! directed links `[from, to]` whose messages are dropped. `{"blocked": []}` (or no file) heals.
//! Nodes re-read it every tick and apply it when its contents change.

use serde::{Deserialize, Serialize};
use std::io;
use std::path::Path;

/// Directed links whose messages are dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionMatrix {
    pub blocked: Vec<(u64, u64)>,
}

impl PartitionMatrix {
    pub fn is_blocked(&self, from: u64, to: u64) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// Blocks both directions between every node of `a` and every node of `b`.
    pub fn split(a: &[u64], b: &[u64]) -> PartitionMatrix {
        let mut blocked = Vec::new();
        for &x in a {
            for &y in b {
                blocked.push((x, y));
                blocked.push((y, x));
            }
        }
        PartitionMatrix { blocked }
    }
}

/// Parses a partition file's contents.
pub fn parse_partition(bytes: &[u8]) -> Result<PartitionMatrix, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Reads a partition file; a missing file is the empty matrix.
pub fn read_partition_file(path: &Path) -> io::Result<PartitionMatrix> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(PartitionMatrix::default()),
        Err(e) => Err(e),
    }
}

/// Writes a partition file atomically (temporary file, rename).
pub fn write_partition_file(path: &Path, m: &PartitionMatrix) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(m).map_err(io::Error::other)?,
    )?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_blocks_both_directions_only_across() {
        let m = PartitionMatrix::split(&[1, 2], &[3]);
        assert!(m.is_blocked(1, 3) && m.is_blocked(3, 1) && m.is_blocked(2, 3));
        assert!(!m.is_blocked(1, 2));
    }

    #[test]
    fn unknown_fields_are_refused_and_missing_file_heals() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("partition.json");
        assert_eq!(read_partition_file(&p).unwrap(), PartitionMatrix::default());
        std::fs::write(&p, br#"{"blocked":[],"extra":1}"#).unwrap();
        assert!(read_partition_file(&p).is_err());
        write_partition_file(&p, &PartitionMatrix::split(&[1], &[2])).unwrap();
        assert!(read_partition_file(&p).unwrap().is_blocked(2, 1));
    }
}
