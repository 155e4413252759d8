//! The per-cluster runtime directory: creation with safe permissions, file naming, liveness of
//! owners, and the start-up sweep of leftovers (ipc rule 8 of docs/RULES.md).

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::Endpoint;
use crate::error::SetupError;
use crate::ring::read_ring_header;
use crate::wake;

/// The conventional runtime directory of a cluster: `/dev/shm/shmraft-<cluster>` (tmpfs, so
/// ring pages are plain shared memory), or under the temporary directory if /dev/shm is absent.
pub fn default_runtime_dir(cluster: &str) -> PathBuf {
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("shmraft-{cluster}"))
}

/// Creates the runtime directory with mode 0700, or checks that an existing one is a directory
/// owned by us with mode 0700 (never loosens or trusts a directory someone else prepared).
pub(crate) fn ensure_runtime_dir(path: &Path) -> Result<(), SetupError> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(SetupError::Io {
                op: "create runtime directory",
                path: path.into(),
                source,
            });
        }
    }
    let meta = std::fs::symlink_metadata(path).map_err(|source| SetupError::Io {
        op: "stat runtime directory",
        path: path.into(),
        source,
    })?;
    let insecure = |detail: String| SetupError::InsecureRuntimeDir {
        path: path.into(),
        detail,
        uid,
    };
    if !meta.is_dir() {
        return Err(insecure("not a directory (or a symlink)".into()));
    }
    if meta.uid() != uid {
        return Err(insecure(format!("owned by uid {}", meta.uid())));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode != 0o700 {
        return Err(insecure(format!("mode {mode:04o}")));
    }
    Ok(())
}

/// Short file-name form of an endpoint: `n3`, `c0000beef`.
pub(crate) fn endpoint_tag(e: Endpoint) -> String {
    match e {
        Endpoint::Node(id) => format!("n{id}"),
        Endpoint::Client(id) => format!("c{id:08x}"),
    }
}

/// File name of the ring written by `from` and read by `to`.
pub fn ring_file_name(from: Endpoint, to: Endpoint) -> String {
    format!("ring-{}-{}", endpoint_tag(from), endpoint_tag(to))
}

/// File name of the wake-up FIFO read by `owner`.
pub fn fifo_file_name(owner: Endpoint) -> String {
    format!("wake-{}", endpoint_tag(owner))
}

/// Whether process `pid` exists and is not a zombie. A zombie (killed, not yet reaped) holds
/// no mappings or fds any more, so for our purposes it is dead.
pub(crate) fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill(2) with signal 0 performs only the existence and permission check.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    if r != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => true,
    }
}

/// What a sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Files removed because their owner is dead (or they were unreadable garbage).
    pub removed: Vec<PathBuf>,
}

/// Removes leftovers of dead processes from a runtime directory (ipc rule 8 of docs/RULES.md): ring
/// files whose writer pid is dead or whose header is invalid, FIFOs that no live process reads, and
/// temporary files of dead creators. Files of live processes are left alone. Safe to run while
/// other processes use the directory: a live owner's files always pass these checks (rings are
/// renamed into place only with a valid header; FIFOs only once their owner holds them open).
pub fn sweep(dir: &Path) -> std::io::Result<SweepReport> {
    let mut report = SweepReport::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        let stale = if let Some(rest) = name.strip_prefix(".tmp-") {
            rest.split('-')
                .next()
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|p| !pid_alive(p))
        } else if name.starts_with("ring-") {
            match read_ring_header(&path) {
                Ok(Ok(h)) => !pid_alive(h.writer_pid),
                Ok(Err(e)) => {
                    tracing::warn!(path = %path.display(), error = %e, "sweeping invalid ring file");
                    true
                }
                Err(_) => false,
            }
        } else if name.starts_with("wake-") {
            !wake::fifo_has_reader(&path)
        } else {
            false
        };
        if stale && std::fs::remove_file(&path).is_ok() {
            tracing::info!(path = %path.display(), "swept leftover of a dead process");
            report.removed.push(path);
        }
    }
    Ok(report)
}

/// Removes the runtime directory if it is empty (the last process to shut down cleanly does).
pub(crate) fn remove_dir_if_empty(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}
