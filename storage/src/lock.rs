//! The data-directory lock (storage rule 4 of docs/RULES.md): `flock(LOCK_EX|LOCK_NB)` on `LOCK`,
//! whose content names the holder's pid so a second opener can say who holds it.
//!
//! The kernel drops an flock when its holder dies, so a stale `LOCK` file left by a killed
//! process never blocks a restart; its pid text is simply overwritten.

use crate::error::{Result, StorageError};
use crate::format::LOCK_FILE;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// An exclusive lock on a data directory, released on drop (closing the fd releases the
/// flock; the file stays and the next opener rewrites it).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock of `dir`, or fails with [`StorageError::Locked`] naming the holder's pid.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StorageError::io("opening lock file", &path, e))?;
        // SAFETY: flock on an fd we own, no pointers.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut s = String::new();
                let _ = file.read_to_string(&mut s);
                return Err(StorageError::Locked {
                    dir: dir.to_path_buf(),
                    holder_pid: parse_lock_pid(&s),
                });
            }
            return Err(StorageError::io("locking (flock)", &path, e));
        }
        let text = format!("pid {}\n", std::process::id());
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(text.as_bytes()))
            .map_err(|e| StorageError::io("writing lock file", &path, e))?;
        Ok(DirLock { _file: file, path })
    }

    /// Path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether some live process holds the lock of `dir` right now (probe without keeping it).
    pub fn is_held(dir: &Path) -> bool {
        let path = dir.join(LOCK_FILE);
        let Ok(file) = File::open(&path) else {
            return false;
        };
        // SAFETY: flock on an fd we own, no pointers.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        r != 0
    }
}

/// Parses the `pid <n>` content of a lock file.
pub fn parse_lock_pid(s: &str) -> Option<u32> {
    s.trim().strip_prefix("pid ")?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder_and_release_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let l = DirLock::acquire(dir.path()).unwrap();
        assert!(DirLock::is_held(dir.path()));
        match DirLock::acquire(dir.path()) {
            Err(StorageError::Locked { holder_pid, .. }) => {
                assert_eq!(holder_pid, Some(std::process::id()))
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(l);
        assert!(!DirLock::is_held(dir.path()));
        DirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn lock_file_pid_parsing() {
        assert_eq!(parse_lock_pid("pid 42\n"), Some(42));
        assert_eq!(parse_lock_pid("garbage"), None);
        assert_eq!(parse_lock_pid(""), None);
    }
}
