//! A mounted crash file system: the FUSE session on a background thread, the model it serves,
//! and the operations a test drives it with (crash, unmount, faults).

use crate::crash::{CrashPlan, CrashReport};
use crate::fs::CrashFs;
use crate::model::{Counters, Model};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// How long a clean unmount waits for a busy mount to be let go.
pub const UNMOUNT_BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where the kernel lists FUSE connections (the `fusectl` file system).
const FUSE_CONNECTIONS: &str = "/sys/fs/fuse/connections";

/// A snapshot of a mount's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MountStatus {
    pub counters: Counters,
    /// Files with unsynced operations.
    pub dirty_files: usize,
    /// Unsynced operations in all files.
    pub unsynced_ops: usize,
    /// Bytes the unsynced operations hold in memory.
    pub unsynced_bytes: u64,
    /// Directories whose entries differ from their durable entries.
    pub dirty_dirs: usize,
}

/// A mounted crash file system. Dropping it unmounts cleanly (everything survives) when it
/// can, else aborts the connection; [`CrashFsMount::crash`] is the power cut.
pub struct CrashFsMount {
    mountpoint: PathBuf,
    backing: PathBuf,
    model: Arc<Mutex<Model>>,
    session: Option<fuser::BackgroundSession>,
    /// Device minor of the mount: its connection's name under /sys/fs/fuse/connections.
    connection: u64,
}

impl std::fmt::Debug for CrashFsMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrashFsMount")
            .field("mountpoint", &self.mountpoint)
            .field("backing", &self.backing)
            .field("connection", &self.connection)
            .finish()
    }
}

impl CrashFsMount {
    /// Mounts a crash file system over `backing` at `mountpoint` (both existing directories;
    /// needs root or fusermount3). What `backing` holds is the durable image to start from.
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<CrashFsMount> {
        let model = Arc::new(Mutex::new(Model::open(backing)?));
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("shmraft-crashfs".into()),
            fuser::MountOption::Subtype("shmraft-crashfs".into()),
            fuser::MountOption::NoAtime,
        ];
        let fs = CrashFs {
            model: model.clone(),
        };
        let session = fuser::spawn_mount(fs, mountpoint, &config).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "mounting the crash file system at {}: {e} (needs /dev/fuse, and root or fusermount3 from the fuse3 package)",
                    mountpoint.display()
                ),
            )
        })?;
        let dev = std::fs::metadata(mountpoint)?.dev();
        let backing = model.lock().map(|m| m.backing.clone()).unwrap_or_default();
        Ok(CrashFsMount {
            mountpoint: mountpoint.to_path_buf(),
            backing,
            model,
            session: Some(session),
            connection: nix::sys::stat::minor(dev),
        })
    }

    /// The mount point.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The backing directory.
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The power cut: aborts the FUSE connection (every later request of every process fails,
    /// dirty mapped pages in the kernel are never written back), detaches the mount, then
    /// keeps the synced image plus what `plan` chooses of the unsynced state, and writes it to
    /// the backing directory. Mount again to go on.
    pub fn crash(mut self, plan: CrashPlan) -> io::Result<CrashReport> {
        self.abort_and_detach()?;
        let report = self.model().finish(Some(plan))?;
        Ok(report)
    }

    /// Clean unmount: the kernel writes back dirty pages, then everything unsynced is kept (as
    /// a clean shutdown syncs). Waits up to [`UNMOUNT_BUSY_WAIT`] for processes that are
    /// letting go of the mount (a closing file, an exiting thread), then fails with EBUSY.
    pub fn unmount(mut self) -> io::Result<CrashReport> {
        if let Some(session) = self.session.take() {
            let deadline = std::time::Instant::now() + UNMOUNT_BUSY_WAIT;
            loop {
                match nix::mount::umount(&self.mountpoint) {
                    Ok(()) => break,
                    Err(nix::errno::Errno::EBUSY) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    Err(e) => {
                        self.session = Some(session);
                        return Err(io::Error::new(
                            io::Error::from(e).kind(),
                            format!("unmounting {}: {e}", self.mountpoint.display()),
                        ));
                    }
                }
            }
            session
                .join()
                .map_err(|e| io::Error::new(e.kind(), format!("FUSE session ended with: {e}")))?;
        }
        self.model().finish(None)
    }

    fn abort_and_detach(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let abort = abort_file(self.connection)?;
        std::fs::write(&abort, b"1").map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("aborting the FUSE connection ({}): {e}", abort.display()),
            )
        })?;
        if let Err(e) = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(mountpoint = %self.mountpoint.display(), %e, "detaching an aborted crash file system");
        }
        // The session loop sees ENODEV and ends; join it before anyone mounts here again (its
        // unmount on drop must not meet a new mount).
        session
            .join()
            .map_err(|e| io::Error::new(e.kind(), format!("FUSE session ended with: {e}")))
    }

    /// A snapshot of the counters and the unsynced state.
    pub fn status(&self) -> MountStatus {
        let m = self.model();
        let mut s = MountStatus {
            counters: m.counters,
            dirty_files: 0,
            unsynced_ops: 0,
            unsynced_bytes: 0,
            dirty_dirs: 0,
        };
        for n in m.nodes.values() {
            match n {
                crate::model::Node::File(f) if !f.log.is_empty() => {
                    s.dirty_files += 1;
                    s.unsynced_ops += f.log.len();
                    s.unsynced_bytes += f.log.iter().map(|o| o.held_bytes()).sum::<u64>();
                }
                crate::model::Node::Dir(d) if d.entries != d.durable => s.dirty_dirs += 1,
                _ => {}
            }
        }
        s
    }

    /// Every read of `[offset, offset+len)` of `file` (relative to the mount root) fails with
    /// EIO until [`CrashFsMount::clear_faults`]. Reads the kernel answers from its page cache
    /// never reach the file system: the fault shows on data not cached (after a remount, or
    /// pages the kernel dropped).
    pub fn fail_reads(&self, file: &Path, offset: u64, len: u64) -> io::Result<()> {
        let mut m = self.model();
        let ino = m.resolve(file)?;
        m.file(ino)?;
        m.faults.read_eio.push((ino, offset, len));
        Ok(())
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        let mut m = self.model();
        m.faults = Default::default();
    }

    /// The next sync of `file` with unsynced writes in `[offset, offset+len)` (`len` 0: any)
    /// fails with EIO, and those writes never become durable (as Linux drops dirty pages whose
    /// writeback failed); the other writes of that sync become durable.
    pub fn fail_next_sync(&self, file: &Path, offset: u64, len: u64) -> io::Result<()> {
        let mut m = self.model();
        let ino = m.resolve(file)?;
        m.file(ino)?;
        m.faults.sync_eio.push((ino, offset, len));
        Ok(())
    }

    /// The next write to `file` reaches the medium `delta` bytes from where it was aimed
    /// (clamped at 0). Readers see the right bytes until the next crash (they come from the
    /// cache); the durable image has them at the wrong place.
    pub fn misdirect_next_write(&self, file: &Path, delta: i64) -> io::Result<()> {
        let mut m = self.model();
        let ino = m.resolve(file)?;
        m.file(ino)?;
        m.faults.misdirect.insert(ino, delta);
        Ok(())
    }

    /// Zeroes the 512-byte sector holding `offset` in the synced (durable) content of `file`.
    pub fn zero_sector(&self, file: &Path, offset: u64) -> io::Result<()> {
        let mut m = self.model();
        let ino = m.resolve(file)?;
        m.zero_durable_sector(ino, offset)
    }
}

impl Drop for CrashFsMount {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        if session.umount_and_join().is_err() {
            // Still busy: the session was not joined; abort it so it ends.
            if let Ok(abort) = abort_file(self.connection) {
                let _ = std::fs::write(abort, b"1");
            }
            let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
        }
        if let Err(e) = self.model().finish(None) {
            tracing::warn!(backing = %self.backing.display(), %e, "crash file system: writing the backing tree back failed");
        }
    }
}

/// The `abort` file of connection `minor`, mounting `fusectl` first if it is not mounted.
fn abort_file(minor: u64) -> io::Result<PathBuf> {
    let dir = Path::new(FUSE_CONNECTIONS).join(minor.to_string());
    if !dir.exists() {
        nix::mount::mount(
            Some("fusectl"),
            FUSE_CONNECTIONS,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("FUSE connection {minor} is not listed under {FUSE_CONNECTIONS}, and mounting fusectl there failed: {e}"),
            )
        })?;
    }
    Ok(dir.join("abort"))
}
