//! shmraft-crashfs: a FUSE file system that forgets what was not synced.
//!
//! It passes files through to a backing directory but keeps every write that no completed
//! fsync, fdatasync or msync of that file has covered in its own log, per file in write order,
//! and makes directory operations (create, rename, unlink) durable only when the directory is
//! fsynced. [`CrashFsMount::crash`] aborts the FUSE connection (so dirty pages still in the
//! kernel are lost too) and keeps only the synced image plus a seeded choice of the unsynced
//! writes. Fault injection: EIO on the next read or sync of a range, a misdirected next write,
//! a zeroed sector in synced data.
//!
//! What it models and what it does not: docs/CRASHFS.md.

mod control;
mod crash;
mod fs;
mod model;
mod mount;
mod oplog;

pub use control::{send_command, serve};
pub use crash::{CrashMode, CrashPlan, CrashReport, DirOutcome, FileOutcome};
pub use model::{Counters, META_DIR};
pub use mount::{CrashFsMount, MountStatus, UNMOUNT_BUSY_WAIT};
pub use oplog::SECTOR_BYTES;
