//! Logs of an embedded node. The node logs through `tracing`; nothing is printed until the
//! program installs a subscriber. [`init_logging`] installs the one the `shmraft` command uses.

/// Sends `tracing` output to stderr, filtered by `RUST_LOG` (for example `RUST_LOG=debug` or
/// `RUST_LOG=shmraft_consensus=debug`), with `default_filter` when `RUST_LOG` is unset or
/// invalid (`"info"` is a good choice for a node process, `"warn"` for a client). Returns false,
/// changing nothing, if the program already installed a subscriber.
pub fn init_logging(default_filter: &str) -> bool {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init()
        .is_ok()
}
