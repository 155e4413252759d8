//! `shmraft-crashfs`: mount the crash file system over a backing directory and serve its
//! control socket, or send a command to one.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(about = "A FUSE file system that forgets what was not synced (see docs/CRASHFS.md)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mount MOUNTPOINT over BACKING and serve the control socket until `unmount`.
    Mount {
        /// Directory holding the durable image (it is rewritten at every crash and unmount).
        #[arg(long)]
        backing: PathBuf,
        /// Where to mount (an existing empty directory).
        #[arg(long)]
        mountpoint: PathBuf,
        /// Path of the control socket.
        #[arg(long)]
        control: PathBuf,
    },
    /// Send one command to a control socket, e.g. `ctl S crash 7`, `ctl S misdirect log/x 4096`.
    Ctl {
        control: PathBuf,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Mount {
            backing,
            mountpoint,
            control,
        } => shmraft_crashfs::serve(&backing, &mountpoint, &control).map(|()| String::new()),
        Cmd::Ctl { control, command } => {
            shmraft_crashfs::send_command(&control, &command.join(" "))
        }
    };
    match r {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shmraft-crashfs: {e}");
            ExitCode::FAILURE
        }
    }
}
