//! The only place that touches shared memory. Everything here reads or writes a mapping that
//! another (possibly hostile) process can change at any time, so (ipc rule 3 of docs/RULES.md):
//!
//! - no `&[u8]`, `&T` or `&mut` is ever formed over the mapping: bytes are copied in and out
//!   through raw pointers, and the index words are accessed as atomics;
//! - every offset is bounds-checked against the mapping length with `assert!` (a failed check is
//!   a bug in this crate, not bad input: callers mask positions into the data area first).

use std::fs::File;
use std::sync::atomic::{AtomicU32, AtomicU64};

use memmap2::{MmapOptions, MmapRaw};

/// A shared mapping of a whole ring file.
pub(crate) struct SharedRegion {
    map: MmapRaw,
    len: usize,
}

impl SharedRegion {
    /// Maps `len` bytes of `file` shared and read-write, pre-faulting the page tables
    /// (MAP_POPULATE) so the first frames do not pay page faults (ipc rule 8 of docs/RULES.md).
    pub(crate) fn map(file: &File, len: usize) -> std::io::Result<Self> {
        let map = MmapOptions::new().len(len).populate().map_raw(file)?;
        assert!(map.len() == len);
        Ok(Self { map, len })
    }

    /// The atomic u64 at byte offset `off`.
    pub(crate) fn atomic_u64(&self, off: usize) -> &AtomicU64 {
        assert!(
            off % 8 == 0 && off + 8 <= self.len,
            "atomic u64 at {off} outside mapping"
        );
        // SAFETY: `off + 8 <= len`, so the pointer is inside the mapping, which stays mapped as
        // long as `self` (the returned reference borrows `self`). The mapping is page-aligned
        // and `off` is a multiple of 8, so the pointer is aligned for AtomicU64. AtomicU64 is
        // built on UnsafeCell, so concurrent modification by the other process (which also uses
        // atomic operations, or, if hostile, can at worst leave an arbitrary u64 that callers
        // validate) does not violate Rust's aliasing rules.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(off).cast::<u64>()) }
    }

    /// The atomic u32 at byte offset `off`.
    pub(crate) fn atomic_u32(&self, off: usize) -> &AtomicU32 {
        assert!(
            off % 4 == 0 && off + 4 <= self.len,
            "atomic u32 at {off} outside mapping"
        );
        // SAFETY: as in `atomic_u64`: in bounds, 4-aligned (page-aligned base, `off % 4 == 0`),
        // lives as long as `self`, and AtomicU32 tolerates concurrent modification.
        unsafe { AtomicU32::from_ptr(self.map.as_mut_ptr().add(off).cast::<u32>()) }
    }

    /// Copies `dst.len()` bytes starting at `off` out of the mapping into private memory.
    pub(crate) fn copy_out(&self, off: usize, dst: &mut [u8]) {
        assert!(
            off <= self.len && dst.len() <= self.len - off,
            "copy_out outside mapping"
        );
        // SAFETY: the source range [off, off + dst.len()) lies inside the mapping (checked
        // above) and the mapping outlives this call; `dst` is private memory that cannot
        // overlap a shared mapping. No reference to the shared bytes is formed. The protocol
        // guarantees the writer does not modify published bytes [head, tail); a hostile writer
        // that does can only make us copy wrong bytes (u8 has no invalid values), which the
        // frame checksum then rejects.
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.as_ptr().add(off), dst.as_mut_ptr(), dst.len())
        };
    }

    /// Copies `src` into the mapping at `off`.
    pub(crate) fn copy_in(&self, off: usize, src: &[u8]) {
        assert!(
            off <= self.len && src.len() <= self.len - off,
            "copy_in outside mapping"
        );
        // SAFETY: the destination range lies inside the mapping (checked above), which is
        // writable (mapped read-write) and outlives this call; `src` is private memory and
        // cannot overlap it. We only write bytes the protocol gives this process (the
        // unpublished part of a ring we own), so no correct peer reads them concurrently.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.map.as_mut_ptr().add(off), src.len())
        };
    }

    /// Writes zeros over [off, off + len): used to pre-fault a fresh ring's pages.
    pub(crate) fn zero(&self, off: usize, len: usize) {
        assert!(
            off <= self.len && len <= self.len - off,
            "zero outside mapping"
        );
        // SAFETY: in bounds (checked above), writable mapping that outlives the call; only
        // called on a ring file that is not yet published, so nobody else maps it.
        unsafe { std::ptr::write_bytes(self.map.as_mut_ptr().add(off), 0, len) };
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}
