//! Frame layout inside a ring, its checksum, and reassembly of fragmented messages.
//! Byte layout: docs/FORMAT.md, "IPC: frames". Pure code: no shared memory here.

use crate::crc32c::{crc32c_frame, crc32c_frame_words};
use crate::error::ProtocolError;

/// Bytes of a frame header.
pub const FRAME_HEADER_BYTES: usize = 16;
/// Frames start on this alignment; a frame record is `16 + round_up(len, 16)` bytes.
pub const FRAME_ALIGN: usize = 16;

/// Flag: this frame is one fragment of a larger message.
pub const FLAG_FRAGMENT: u8 = 0x01;
/// Flag: this fragment is the last of its message.
pub const FLAG_LAST: u8 = 0x02;
/// Flag: padding that fills the ring up to its end; the next frame starts at offset 0.
pub const FLAG_PAD: u8 = 0x80;
const KNOWN_FLAGS: u8 = FLAG_FRAGMENT | FLAG_LAST | FLAG_PAD;

/// Bytes of the total-length prefix carried by the first fragment of a message.
pub const FRAGMENT_PREFIX_BYTES: usize = 8;

/// Size of the ring record that carries a payload of `len` bytes.
pub const fn record_bytes(len: usize) -> usize {
    FRAME_HEADER_BYTES + len.div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload bytes following the header (for a pad: bytes of padding after the header).
    pub payload_len: u32,
    /// The user's kind tag.
    pub kind: u16,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Fragment index within its message (0 unless `FLAG_FRAGMENT`).
    pub fragment_index: u32,
    /// Stored checksum.
    pub checksum: u32,
}

impl FrameHeader {
    /// Encodes the header with the given checksum.
    pub fn encode(&self) -> [u8; FRAME_HEADER_BYTES] {
        let mut b = [0u8; FRAME_HEADER_BYTES];
        b[0..4].copy_from_slice(&self.payload_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.kind.to_le_bytes());
        b[6] = self.flags;
        b[7] = 0;
        b[8..12].copy_from_slice(&self.fragment_index.to_le_bytes());
        b[12..16].copy_from_slice(&self.checksum.to_le_bytes());
        b
    }

    /// Decodes and structurally checks a header read from `pos`. Does not verify the
    /// checksum (that needs the payload). Never panics on any input.
    pub fn decode(b: &[u8], pos: u64) -> Result<Self, ProtocolError> {
        let bad = |reason| ProtocolError::BadFrame { pos, reason };
        if b.len() < FRAME_HEADER_BYTES {
            return Err(bad("truncated header"));
        }
        let h = FrameHeader {
            payload_len: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            kind: u16::from_le_bytes([b[4], b[5]]),
            flags: b[6],
            fragment_index: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            checksum: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        };
        if b[7] != 0 {
            return Err(bad("reserved byte not zero"));
        }
        if h.flags & !KNOWN_FLAGS != 0 {
            return Err(bad("unknown flag bits"));
        }
        if h.flags & FLAG_PAD != 0 && h.flags != FLAG_PAD {
            return Err(bad("pad combined with other flags"));
        }
        if h.flags & FLAG_FRAGMENT == 0 && (h.flags & FLAG_LAST != 0 || h.fragment_index != 0) {
            return Err(bad("fragment fields on an unfragmented frame"));
        }
        Ok(h)
    }
}

/// The checksum seed of a frame: mixes the writer's epoch and the frame's ring position, so a
/// stale frame left by a previous epoch, or by a previous lap of the ring at the same offset,
/// fails the checksum (fault-matrix row C9 of docs/FAULTS.md: no stale frame accepted).
fn seed(epoch: u64, pos: u64) -> u32 {
    let x = epoch ^ pos.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x ^ (x >> 32)) as u32
}

/// Payloads of at least this many bytes are checksummed with CRC-32 (IEEE, crc32fast's
/// PCLMULQDQ folding, ~18 GB/s); shorter ones with CRC-32C (one SSE4.2 instruction per 8 bytes,
/// ~10 ns for 64 B, where crc32fast's table path takes ~40 ns). The choice depends only on
/// `payload_len`, which the checksum itself covers. docs/FORMAT.md, "IPC: frames".
pub const LARGE_PAYLOAD_CRC32_BYTES: usize = 512;

/// The frame checksum over header bytes 0..12 and the payload, seeded by epoch and position.
#[inline(always)]
pub fn frame_checksum(epoch: u64, pos: u64, header12: &[u8], payload: &[u8]) -> u32 {
    frame_checksum_parts(epoch, pos, header12, &[], payload)
}

/// [`frame_checksum`] over a payload given in two parts (a fragment's prefix and its data).
/// Always inlined: it is on both hot paths, and a call costs a third of the CRC of 64 bytes.
#[inline(always)]
pub fn frame_checksum_parts(epoch: u64, pos: u64, header12: &[u8], a: &[u8], b: &[u8]) -> u32 {
    let header: &[u8; 12] = header12[..12].try_into().expect("12 bytes");
    if a.len() + b.len() >= LARGE_PAYLOAD_CRC32_BYTES {
        return large_frame_checksum(seed(epoch, pos), header, a, b);
    }
    crc32c_frame(seed(epoch, pos), header, a, b)
}

/// [`frame_checksum`] of an unfragmented frame whose header bytes 0..8 and 8..12 are the
/// little-endian words `w0` and `w1` (the hot paths build and parse headers as words).
#[inline(always)]
pub(crate) fn frame_checksum_words(epoch: u64, pos: u64, w0: u64, w1: u32, payload: &[u8]) -> u32 {
    if payload.len() >= LARGE_PAYLOAD_CRC32_BYTES {
        let mut header = [0u8; 12];
        header[..8].copy_from_slice(&w0.to_le_bytes());
        header[8..].copy_from_slice(&w1.to_le_bytes());
        return large_frame_checksum(seed(epoch, pos), &header, &[], payload);
    }
    crc32c_frame_words(seed(epoch, pos), w0, w1, payload)
}

/// The first 8 header bytes as a little-endian word (`FrameHeader::encode`'s layout).
#[inline(always)]
pub(crate) fn header_word0(payload_len: u32, kind: u16, flags: u8) -> u64 {
    u64::from(payload_len) | u64::from(kind) << 32 | u64::from(flags) << 48
}

/// The CRC-32 path of large payloads, out of line so the small-frame path inlines into its
/// callers without the hasher's register pressure.
#[inline(never)]
fn large_frame_checksum(seed: u32, header: &[u8; 12], a: &[u8], b: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(seed);
    h.update(header);
    h.update(a);
    h.update(b);
    h.finalize()
}

/// Reassembles fragmented messages from one link. A ring is FIFO with one writer, so fragments
/// of one message arrive contiguously and in order: one buffer per link suffices. The buffer is
/// bounded by `max_message_bytes`.
#[derive(Debug, Default)]
pub struct Reassembly {
    buf: Vec<u8>,
    total: usize,
    next_index: u32,
    kind: u16,
    active: bool,
    /// After a reset the next fragments of an interrupted message are dropped quietly until
    /// a new first fragment arrives.
    skipping: bool,
}

/// Result of feeding one fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum Reassembled {
    /// More fragments needed.
    Incomplete,
    /// The message is complete: `take()` it.
    Complete,
    /// A fragment of a message whose start we never saw (we attached mid-message); dropped.
    Skipped,
}

impl Reassembly {
    /// Forgets any partial message (link reset or re-attach).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.total = 0;
        self.next_index = 0;
        self.active = false;
        self.skipping = true;
    }

    /// Feeds one fragment frame. `max_message_bytes` bounds what is buffered.
    pub fn feed(
        &mut self,
        kind: u16,
        flags: u8,
        index: u32,
        payload: &[u8],
        max_message_bytes: usize,
    ) -> Result<Reassembled, ProtocolError> {
        let err = |reason| Err(ProtocolError::Reassembly { reason });
        let last = flags & FLAG_LAST != 0;
        if index == 0 {
            if self.active {
                self.active = false;
                return err("new message started before the previous one ended");
            }
            if payload.len() < FRAGMENT_PREFIX_BYTES {
                return err("first fragment shorter than its length prefix");
            }
            let mut p = [0u8; 8];
            p.copy_from_slice(&payload[..8]);
            let total = u64::from_le_bytes(p);
            if total > max_message_bytes as u64 {
                return err("message larger than max_message_bytes");
            }
            self.total = total as usize;
            self.buf.clear();
            self.buf.reserve(self.total);
            self.next_index = 0;
            self.kind = kind;
            self.active = true;
            self.skipping = false;
            return self.append(index, &payload[8..], kind, last);
        }
        if !self.active {
            if self.skipping {
                if last {
                    self.skipping = false;
                }
                return Ok(Reassembled::Skipped);
            }
            return err("continuation fragment without a first fragment");
        }
        self.append(index, payload, kind, last)
    }

    fn append(
        &mut self,
        index: u32,
        data: &[u8],
        kind: u16,
        last: bool,
    ) -> Result<Reassembled, ProtocolError> {
        let fail = |s: &mut Self, reason| {
            s.active = false;
            s.buf.clear();
            Err(ProtocolError::Reassembly { reason })
        };
        if index != self.next_index {
            return fail(self, "fragment index out of sequence");
        }
        if kind != self.kind {
            return fail(self, "fragment kind changed mid-message");
        }
        if data.len() > self.total - self.buf.len() {
            return fail(self, "fragments exceed the declared total");
        }
        self.buf.extend_from_slice(data);
        self.next_index = self.next_index.wrapping_add(1);
        if last {
            if self.buf.len() != self.total {
                return fail(self, "last fragment before the declared total");
            }
            self.active = false;
            return Ok(Reassembled::Complete);
        }
        Ok(Reassembled::Incomplete)
    }

    /// The completed message (valid right after `feed` returned `Complete`).
    pub fn message(&self) -> (u16, &[u8]) {
        (self.kind, &self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_round_trip() {
        let h = FrameHeader {
            payload_len: 77,
            kind: 9,
            flags: FLAG_FRAGMENT | FLAG_LAST,
            fragment_index: 3,
            checksum: 0xdead_beef,
        };
        assert_eq!(FrameHeader::decode(&h.encode(), 0), Ok(h));
    }

    #[test]
    fn checksum_of_header_words_equals_checksum_of_header_bytes() {
        // Both CRC paths: CRC-32C below LARGE_PAYLOAD_CRC32_BYTES, CRC-32 above.
        for payload in [&b"abc"[..], &[7u8; 600][..]] {
            let h = FrameHeader {
                payload_len: payload.len() as u32,
                kind: 0x1234,
                flags: FLAG_FRAGMENT,
                fragment_index: 9,
                checksum: 0,
            }
            .encode();
            let w0 = header_word0(payload.len() as u32, 0x1234, FLAG_FRAGMENT);
            assert_eq!(w0.to_le_bytes(), h[..8]);
            assert_eq!(
                frame_checksum_words(5, 4096, w0, 9, payload),
                frame_checksum(5, 4096, &h, payload)
            );
        }
    }

    #[test]
    fn checksum_depends_on_epoch_and_position() {
        let hdr = [1u8; 12];
        let a = frame_checksum(1, 0, &hdr, b"abc");
        assert_ne!(a, frame_checksum(2, 0, &hdr, b"abc"));
        assert_ne!(a, frame_checksum(1, 4096, &hdr, b"abc"));
        assert_ne!(a, frame_checksum(1, 0, &hdr, b"abd"));
    }

    fn first(total: u64, data: &[u8]) -> Vec<u8> {
        let mut v = total.to_le_bytes().to_vec();
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn reassembles_in_order_and_bounds_size() {
        let mut r = Reassembly::default();
        let f0 = first(6, b"abc");
        assert_eq!(
            r.feed(5, FLAG_FRAGMENT, 0, &f0, 100),
            Ok(Reassembled::Incomplete)
        );
        assert_eq!(
            r.feed(5, FLAG_FRAGMENT | FLAG_LAST, 1, b"def", 100),
            Ok(Reassembled::Complete)
        );
        assert_eq!(r.message(), (5, &b"abcdef"[..]));
        // Over the bound: refused before buffering anything.
        assert!(
            r.feed(5, FLAG_FRAGMENT, 0, &first(1000, b"x"), 100)
                .is_err()
        );
        // Out of sequence.
        let mut r = Reassembly::default();
        r.feed(5, FLAG_FRAGMENT, 0, &first(9, b"abc"), 100).unwrap();
        assert!(r.feed(5, FLAG_FRAGMENT, 2, b"def", 100).is_err());
        // Overflowing the declared total.
        let mut r = Reassembly::default();
        r.feed(5, FLAG_FRAGMENT, 0, &first(4, b"abc"), 100).unwrap();
        assert!(
            r.feed(5, FLAG_FRAGMENT | FLAG_LAST, 1, b"def", 100)
                .is_err()
        );
    }

    #[test]
    fn orphan_fragments_after_reset_are_skipped() {
        let mut r = Reassembly::default();
        r.reset();
        assert_eq!(
            r.feed(5, FLAG_FRAGMENT, 4, b"zz", 100),
            Ok(Reassembled::Skipped)
        );
        assert_eq!(
            r.feed(5, FLAG_FRAGMENT | FLAG_LAST, 5, b"zz", 100),
            Ok(Reassembled::Skipped)
        );
        // After the orphaned message ended, a stray continuation is a protocol error.
        assert!(r.feed(5, FLAG_FRAGMENT, 1, b"zz", 100).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), pos in any::<u64>()) {
            let _ = FrameHeader::decode(&bytes, pos);
        }

        #[test]
        fn reassembly_never_panics(
            frags in proptest::collection::vec(
                (any::<u16>(), any::<u8>(), 0u32..4, proptest::collection::vec(any::<u8>(), 0..40)),
                0..20)
        ) {
            let mut r = Reassembly::default();
            for (kind, flags, idx, data) in frags {
                let _ = r.feed(kind % 2, flags & (FLAG_FRAGMENT | FLAG_LAST), idx, &data, 64);
            }
        }
    }
}
