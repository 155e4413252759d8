//! Pretty-printing of entry payloads for `raft-dump --entries --payload MODE`.
//!
//! The log stores opaque bytes; what they mean belongs to the layer above. A
//! [`PayloadPrinter`] turns one payload into one line. Built in: `hex` (the first bytes in hex),
//! `kv` (the node's client-session envelope around a key-value command, falling back to a bare
//! KV command, then to hex), and `none`. Embedders with their own state machine implement the
//! trait and call [`crate::dump::raft_dump::run_with_printer`].

use shmraft_consensus::kv::KvCommand;
use shmraft_consensus::session::SessionCommand;
use std::fmt::Write as _;

/// Renders one entry payload as a single line (no newline). Must not panic on any input: the
/// bytes come from a file that may be corrupt.
pub trait PayloadPrinter {
    /// One line describing `payload` of an entry of kind `kind`, or `None` to print nothing.
    fn render(&self, kind: u8, payload: &[u8]) -> Option<String>;
}

/// Bytes shown by [`HexPrinter`] before eliding the rest.
pub const HEX_BYTES_SHOWN: usize = 32;

/// The first [`HEX_BYTES_SHOWN`] bytes in hex, then `... (N bytes)`.
#[derive(Debug, Default, Clone, Copy)]
pub struct HexPrinter;

impl PayloadPrinter for HexPrinter {
    fn render(&self, _kind: u8, payload: &[u8]) -> Option<String> {
        Some(hex_line(payload))
    }
}

/// Hex of the first bytes of `b`, elided past [`HEX_BYTES_SHOWN`].
pub fn hex_line(b: &[u8]) -> String {
    let mut s = String::with_capacity(HEX_BYTES_SHOWN * 2 + 24);
    for x in b.iter().take(HEX_BYTES_SHOWN) {
        let _ = write!(s, "{x:02x}");
    }
    if b.len() > HEX_BYTES_SHOWN {
        let _ = write!(s, "... ({} bytes)", b.len());
    }
    if b.is_empty() {
        s.push_str("(empty)");
    }
    s
}

/// The node's payload layout: a client-session envelope (consensus `session`) around a KV
/// command (consensus `kv`). The real node's entry layout is defined later, so this is
/// tolerant: it tries envelope + KV, then a bare KV command, then falls back to hex.
#[derive(Debug, Default, Clone, Copy)]
pub struct KvPrinter;

impl PayloadPrinter for KvPrinter {
    fn render(&self, _kind: u8, payload: &[u8]) -> Option<String> {
        if SessionCommand::decode(payload).is_ok() {
            return Some(shmraft_consensus::session::pretty(
                payload,
                shmraft_consensus::kv::pretty,
            ));
        }
        if KvCommand::decode(payload).is_ok() {
            return Some(shmraft_consensus::kv::pretty(payload));
        }
        Some(format!("hex {}", hex_line(payload)))
    }
}

/// Prints nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NonePrinter;

impl PayloadPrinter for NonePrinter {
    fn render(&self, _kind: u8, _payload: &[u8]) -> Option<String> {
        None
    }
}

/// The `--payload` choices of raft-dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PayloadMode {
    Hex,
    Kv,
    None,
}

impl PayloadMode {
    /// The built-in printer of this mode.
    pub fn printer(self) -> Box<dyn PayloadPrinter> {
        match self {
            PayloadMode::Hex => Box::new(HexPrinter),
            PayloadMode::Kv => Box::new(KvPrinter),
            PayloadMode::None => Box::new(NonePrinter),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shmraft_consensus::session::ClientRequest;

    #[test]
    fn kv_printer_reads_envelope_then_bare_command_then_falls_back_to_hex() {
        let cmd = KvCommand::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        }
        .encode()
        .unwrap();
        let env = ClientRequest {
            client_id: 7,
            seq: 3,
            first_unacked_seq: 2,
            log_time_ms: 0,
            command: cmd.clone(),
        }
        .encode()
        .unwrap();
        let s = KvPrinter.render(0, &env).unwrap();
        assert!(s.contains("client 7 seq 3") && s.contains("put"), "{s}");
        let s = KvPrinter.render(0, &cmd).unwrap();
        assert!(s.starts_with("put"), "{s}");
        let s = KvPrinter.render(0, &[0xff; 40]).unwrap();
        assert!(
            s.starts_with("hex ffff") && s.ends_with("(40 bytes)"),
            "{s}"
        );
    }

    #[test]
    fn printers_never_panic_on_arbitrary_bytes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for len in 0..300 {
            let b: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            for m in [PayloadMode::Hex, PayloadMode::Kv, PayloadMode::None] {
                let _ = m.printer().render(0, &b);
            }
        }
    }

    #[test]
    fn hex_line_elides_long_payloads() {
        assert_eq!(hex_line(&[1, 2]), "0102");
        assert_eq!(hex_line(&[]), "(empty)");
        assert!(hex_line(&[0; 33]).ends_with("... (33 bytes)"));
    }
}
