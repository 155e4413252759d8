//! One file's unsynced operations, in the order they reached the file system, and how they are
//! applied to the durable image: all of them (a completed sync), or a seeded part of them (a
//! crash).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Sector size of the simulated medium: a write is atomic per 512-byte sector, not beyond.
pub const SECTOR_BYTES: u64 = 512;

/// An operation on a file's content that no completed sync has covered yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// `data` written at `offset`.
    Write { offset: u64, data: Vec<u8> },
    /// `len` zero bytes written at `offset` (kept without the bytes: a zero fill of a new WAL
    /// segment is tens of MiB).
    Zeros { offset: u64, len: u64 },
    /// The size set by `ftruncate` (or `O_TRUNC`).
    SetLen(u64),
    /// `fallocate` mode 0 of `[offset, offset+len)` (extends the size).
    Allocate { offset: u64, len: u64 },
}

impl Op {
    /// A write of `data` at `offset`, kept as [`Op::Zeros`] when every byte is zero.
    pub(crate) fn write(offset: u64, data: &[u8]) -> Op {
        if data.iter().all(|&b| b == 0) {
            Op::Zeros {
                offset,
                len: data.len() as u64,
            }
        } else {
            Op::Write {
                offset,
                data: data.to_vec(),
            }
        }
    }

    /// The byte range the operation changes, `[start, end)`. A size change affects everything
    /// from the smaller of the two sizes on; it is reported from the new size to the end.
    pub(crate) fn range(&self) -> (u64, u64) {
        match self {
            Op::Write { offset, data } => (*offset, offset + data.len() as u64),
            Op::Zeros { offset, len } | Op::Allocate { offset, len } => (*offset, offset + len),
            Op::SetLen(n) => (*n, u64::MAX),
        }
    }

    /// Whether the operation changes any byte of `[start, start+len)` (`len` 0: the whole file).
    pub(crate) fn overlaps(&self, start: u64, len: u64) -> bool {
        if len == 0 {
            return true;
        }
        let (s, e) = self.range();
        s < start.saturating_add(len) && start < e
    }

    /// Bytes of memory the operation holds.
    pub(crate) fn held_bytes(&self) -> u64 {
        match self {
            Op::Write { data, .. } => data.len() as u64,
            _ => 0,
        }
    }

    /// The pieces the operation tears into: each 512-byte sector it touches for writes, the
    /// whole operation for size changes (those are atomic metadata updates).
    pub(crate) fn pieces(&self) -> Vec<(u64, u64)> {
        match self {
            Op::Write { .. } | Op::Zeros { .. } => {
                let (start, end) = self.range();
                let mut out = Vec::new();
                let mut at = start;
                while at < end {
                    let next = ((at / SECTOR_BYTES) + 1) * SECTOR_BYTES;
                    let piece_end = next.min(end);
                    out.push((at, piece_end));
                    at = piece_end;
                }
                out
            }
            Op::SetLen(_) | Op::Allocate { .. } => vec![self.range()],
        }
    }

    /// Applies the whole operation to `file`.
    pub(crate) fn apply(&self, file: &File) -> io::Result<()> {
        match self {
            Op::Write { offset, data } => file.write_all_at(data, *offset),
            Op::Zeros { offset, len } => write_zeros(file, *offset, *len),
            Op::SetLen(n) => file.set_len(*n),
            Op::Allocate { offset, len } => allocate(file, *offset, *len),
        }
    }

    /// Applies the pieces of the operation (from [`Op::pieces`]) for which `keep` says yes.
    /// Returns how many pieces were applied.
    pub(crate) fn apply_pieces(
        &self,
        file: &File,
        mut keep: impl FnMut(usize) -> bool,
    ) -> io::Result<usize> {
        let mut applied = 0;
        for (i, (start, end)) in self.pieces().into_iter().enumerate() {
            if !keep(i) {
                continue;
            }
            applied += 1;
            match self {
                Op::Write { offset, data } => {
                    let from = (start - offset) as usize;
                    let to = (end - offset) as usize;
                    file.write_all_at(&data[from..to], start)?;
                }
                Op::Zeros { .. } => write_zeros(file, start, end - start)?,
                Op::SetLen(_) | Op::Allocate { .. } => self.apply(file)?,
            }
        }
        Ok(applied)
    }
}

/// Writes `len` zeros at `offset` with `pwrite`.
pub(crate) fn write_zeros(file: &File, offset: u64, len: u64) -> io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK.min(len).max(1) as usize];
    let mut at = offset;
    let end = offset + len;
    while at < end {
        let n = (end - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// `fallocate` mode 0 on the backing file, or (where the backing file system lacks it)
/// extending the size.
pub(crate) fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let r = nix::fcntl::fallocate(
        file,
        nix::fcntl::FallocateFlags::empty(),
        offset as libc::off_t,
        len as libc::off_t,
    );
    match r {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) => {
            let size = file.metadata()?.len();
            if offset + len > size {
                file.set_len(offset + len)?;
            }
            Ok(())
        }
        Err(e) => Err(io::Error::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_writes_are_kept_without_their_bytes() {
        assert_eq!(
            Op::write(10, &[0; 100]),
            Op::Zeros {
                offset: 10,
                len: 100
            }
        );
        assert_eq!(Op::write(10, &[0, 1]).held_bytes(), 2);
    }

    #[test]
    fn writes_tear_at_sector_boundaries() {
        let op = Op::write(500, &[1; 1100]);
        assert_eq!(
            op.pieces(),
            vec![(500, 512), (512, 1024), (1024, 1536), (1536, 1600)]
        );
        assert_eq!(Op::SetLen(7).pieces(), vec![(7, u64::MAX)]);
    }

    #[test]
    fn overlap_of_ranges() {
        let op = Op::write(100, &[1; 100]);
        assert!(op.overlaps(150, 1));
        assert!(!op.overlaps(200, 10));
        assert!(!op.overlaps(0, 100));
        assert!(op.overlaps(0, 0));
        assert!(Op::SetLen(10).overlaps(1 << 40, 1));
    }

    #[test]
    fn applying_kept_pieces_writes_only_those_sectors() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        f.set_len(1536).unwrap();
        let op = Op::write(0, &[7; 1536]);
        let n = op.apply_pieces(&f, |i| i != 1).unwrap();
        assert_eq!(n, 2);
        let mut buf = vec![0u8; 1536];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 7));
        assert!(buf[512..1024].iter().all(|&b| b == 0));
        assert!(buf[1024..].iter().all(|&b| b == 7));
    }
}
