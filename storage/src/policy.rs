//! The fsync policy: one explicit type, parsed from and printed as the CLI strings.
//! docs/DURABILITY.md states what each policy can lose on a power cut and on a process crash.

use std::fmt;
use std::str::FromStr;

/// When the write-ahead log makes appended entries durable, and when they count as acknowledged.
///
/// | policy | sync | acknowledged ([`crate::Wal::ack_index`]) |
/// |---|---|---|
/// | `always` | before `append` returns | after that sync |
/// | `batch:<delay_us>:<bytes>` | group commit by a background thread when the oldest unsynced entry is `delay_us` old or `bytes` are pending | only up to the durable index |
/// | `interval:<ms>` | by a background thread every `ms` | at once (before the sync) |
/// | `never` | never by the log (the OS writes back) | at once |
///
/// Term and vote changes in the hard state are synced whatever the policy (storage rule 8
/// of docs/RULES.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Sync before anything is acknowledged: `append` returns after the msync covering it.
    #[default]
    Always,
    /// Group commit: sync when the oldest unsynced append is `delay_us` old or `bytes` are pending.
    Batch { delay_us: u64, bytes: u64 },
    /// Background sync every `ms` milliseconds; entries are acknowledged before they are synced.
    Interval { ms: u64 },
    /// The log never syncs on its own (the OS writes back dirty pages when it likes).
    Never,
}

impl FsyncPolicy {
    /// Default group-commit delay of `batch`.
    pub const BATCH_DELAY_US_DEFAULT: u64 = 1000;
    /// Default group-commit byte threshold of `batch`.
    pub const BATCH_BYTES_DEFAULT: u64 = 1 << 20;

    /// `batch` with the default delay and byte threshold.
    pub const fn batch_default() -> FsyncPolicy {
        FsyncPolicy::Batch {
            delay_us: Self::BATCH_DELAY_US_DEFAULT,
            bytes: Self::BATCH_BYTES_DEFAULT,
        }
    }

    /// Whether entries count as acknowledged only once durable (`always`, `batch`).
    pub const fn acknowledges_after_sync(&self) -> bool {
        matches!(self, FsyncPolicy::Always | FsyncPolicy::Batch { .. })
    }
}

/// A policy string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid fsync policy {input:?}: {reason}; expected one of `always`, `batch`, \
     `batch:<delay_us>:<bytes>`, `interval:<ms>`, `never`"
)]
pub struct ParsePolicyError {
    pub input: String,
    pub reason: String,
}

impl FromStr for FsyncPolicy {
    type Err = ParsePolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| ParsePolicyError {
            input: s.to_string(),
            reason: reason.into(),
        };
        let num = |v: &str, what: &str| -> Result<u64, ParsePolicyError> {
            v.trim()
                .parse::<u64>()
                .map_err(|_| err(&format!("{what} {v:?} is not a whole number")))
        };
        let t = s.trim();
        let mut parts = t.split(':');
        let head = parts.next().unwrap_or("");
        let rest: Vec<&str> = parts.collect();
        match (head, rest.as_slice()) {
            ("always", []) => Ok(FsyncPolicy::Always),
            ("never", []) => Ok(FsyncPolicy::Never),
            ("batch", []) => Ok(FsyncPolicy::batch_default()),
            ("batch", [d, b]) => {
                let delay_us = num(d, "delay_us")?;
                let bytes = num(b, "bytes")?;
                if bytes == 0 {
                    return Err(err("bytes must be at least 1"));
                }
                Ok(FsyncPolicy::Batch { delay_us, bytes })
            }
            ("interval", [ms]) => {
                let ms = num(ms, "ms")?;
                if ms == 0 {
                    return Err(err("interval must be at least 1 ms"));
                }
                Ok(FsyncPolicy::Interval { ms })
            }
            ("always" | "never", _) => Err(err("takes no parameters")),
            ("batch", _) => Err(err(
                "batch takes either no parameters or <delay_us>:<bytes>",
            )),
            ("interval", _) => Err(err("interval takes exactly one parameter <ms>")),
            _ => Err(err("unknown policy name")),
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => write!(f, "always"),
            FsyncPolicy::Batch { delay_us, bytes } => write!(f, "batch:{delay_us}:{bytes}"),
            FsyncPolicy::Interval { ms } => write!(f, "interval:{ms}"),
            FsyncPolicy::Never => write!(f, "never"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_strings_round_trip() {
        for p in [
            FsyncPolicy::Always,
            FsyncPolicy::Never,
            FsyncPolicy::Batch {
                delay_us: 250,
                bytes: 65536,
            },
            FsyncPolicy::Interval { ms: 10 },
        ] {
            assert_eq!(p.to_string().parse::<FsyncPolicy>().unwrap(), p);
        }
        assert_eq!(
            "batch".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::batch_default()
        );
    }

    #[test]
    fn bad_policy_strings_are_rejected_with_reason() {
        for s in [
            "",
            "sometimes",
            "always:1",
            "batch:1",
            "batch:x:1",
            "interval",
            "interval:0",
        ] {
            let e = s.parse::<FsyncPolicy>().unwrap_err();
            assert!(e.to_string().contains("expected one of"), "{e}");
        }
    }
}
