//! The demonstrations: `shmraft demo` (a 3-node cluster loses its leader and nothing
//! acknowledged is lost) and `shmraft wal demo` (the storage demo).

pub mod cluster;
pub mod wal;
