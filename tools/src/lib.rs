//! shmraft-tools: the `shmraft` command and the `raft-dump` log inspector. The binaries in the
//! facade package are thin wrappers around [`shmraft_main`] and [`raft_dump_main`].
#![forbid(unsafe_code)]

use std::process::ExitCode;

/// Entry point of the `shmraft` command.
pub fn shmraft_main() -> ExitCode {
    eprintln!("shmraft: no subcommands yet");
    ExitCode::from(2)
}

/// Entry point of the `raft-dump` log inspector.
pub fn raft_dump_main() -> ExitCode {
    eprintln!("raft-dump: not built yet");
    ExitCode::from(2)
}
