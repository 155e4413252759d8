//! The control socket of the `shmraft-crashfs` binary: one command per line, one answer per
//! line (`ok <json>` or `error <message>`).
//!
//! Commands (paths are relative to the mount root):
//! - `crash <seed> [keep-none|keep-all|prefix|torn-subset]`: power cut, then mount again over
//!   the surviving image; answers the crash report;
//! - `eio-read <path> <offset> <len>`: every read of the range fails with EIO until
//!   `clear-faults`; `eio-sync <path> <offset> <len>`: the next sync touching it fails;
//! - `misdirect <path> <delta>`: the next write to the file lands `delta` bytes away;
//! - `zero-sector <path> <offset>`: zero a sector of the file's synced data;
//! - `status`: counters and unsynced state;
//! - `unmount`: clean unmount, then the server ends.

use crate::crash::{CrashMode, CrashPlan};
use crate::mount::CrashFsMount;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Serves the control socket `socket` for the mount of `backing` at `mountpoint` until an
/// `unmount` command.
pub fn serve(backing: &Path, mountpoint: &Path, socket: &Path) -> io::Result<()> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)
        .map_err(|e| io::Error::new(e.kind(), format!("binding {}: {e}", socket.display())))?;
    let mut mount = Some(CrashFsMount::mount(backing, mountpoint)?);
    for conn in listener.incoming() {
        let conn = conn?;
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut writer = conn;
        let mut line = String::new();
        while {
            line.clear();
            reader.read_line(&mut line)? > 0
        } {
            let (answer, done) = match execute(line.trim(), &mut mount, backing, mountpoint) {
                Ok((json, done)) => (format!("ok {json}"), done),
                Err(e) => (format!("error {e}"), false),
            };
            writeln!(writer, "{answer}")?;
            if done {
                let _ = std::fs::remove_file(socket);
                return Ok(());
            }
        }
    }
    Ok(())
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn num<T: std::str::FromStr>(words: &[&str], i: usize, what: &str) -> io::Result<T> {
    words
        .get(i)
        .ok_or_else(|| bad(format!("missing {what}")))?
        .parse()
        .map_err(|_| bad(format!("{what} {:?} is not a number", words[i])))
}

fn path_arg(words: &[&str]) -> io::Result<PathBuf> {
    words
        .get(1)
        .map(PathBuf::from)
        .ok_or_else(|| bad("missing path".into()))
}

/// Runs one command; returns its JSON answer and whether the server should end.
fn execute(
    line: &str,
    slot: &mut Option<CrashFsMount>,
    backing: &Path,
    mountpoint: &Path,
) -> io::Result<(String, bool)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mount = slot
        .as_ref()
        .ok_or_else(|| io::Error::other("not mounted (a remount failed)"))?;
    let json = |v: &dyn erased::Json| v.to_json();
    match words.first().copied().unwrap_or("") {
        "crash" => {
            let seed: u64 = num(&words, 1, "seed")?;
            let mode = match words.get(2) {
                None => None,
                Some(m) => Some(CrashMode::parse(m).ok_or_else(|| {
                    bad(format!("unknown crash mode {m:?}; choose keep-none, keep-all, prefix or torn-subset"))
                })?),
            };
            let report = slot
                .take()
                .expect("checked above")
                .crash(CrashPlan { seed, mode })?;
            *slot = Some(CrashFsMount::mount(backing, mountpoint)?);
            Ok((json(&report), false))
        }
        "eio-read" | "eio-sync" => {
            let path = path_arg(&words)?;
            let (offset, len) = (num(&words, 2, "offset")?, num(&words, 3, "length")?);
            if words[0] == "eio-read" {
                mount.fail_reads(&path, offset, len)?;
            } else {
                mount.fail_next_sync(&path, offset, len)?;
            }
            Ok(("{}".into(), false))
        }
        "misdirect" => {
            mount.misdirect_next_write(&path_arg(&words)?, num(&words, 2, "delta")?)?;
            Ok(("{}".into(), false))
        }
        "zero-sector" => {
            mount.zero_sector(&path_arg(&words)?, num(&words, 2, "offset")?)?;
            Ok(("{}".into(), false))
        }
        "clear-faults" => {
            mount.clear_faults();
            Ok(("{}".into(), false))
        }
        "status" => Ok((json(&mount.status()), false)),
        "unmount" => {
            let report = slot.take().expect("checked above").unmount()?;
            Ok((json(&report), true))
        }
        other => Err(bad(format!(
            "unknown command {other:?}; choose crash, eio-read, eio-sync, misdirect, zero-sector, clear-faults, status or unmount"
        ))),
    }
}

mod erased {
    /// Serialises any report to one line of JSON.
    pub trait Json {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            serde_json::to_string(self).unwrap_or_else(|e| format!("\"{e}\""))
        }
    }
}

/// Sends one command to a control socket and returns the answer's JSON, or the server's error.
pub fn send_command(socket: &Path, command: &str) -> io::Result<String> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        io::Error::new(e.kind(), format!("connecting to {}: {e}", socket.display()))
    })?;
    writeln!(s, "{command}")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    let line = line.trim_end();
    if let Some(json) = line.strip_prefix("ok ") {
        Ok(json.to_string())
    } else {
        Err(io::Error::other(
            line.strip_prefix("error ").unwrap_or(line).to_string(),
        ))
    }
}
