//! CRC-32C (Castagnoli), the frame checksum. On x86-64 with SSE4.2 it uses the `crc32`
//! instruction (8 bytes per instruction: ~10 ns for a 64-byte frame, where a table-driven
//! CRC-32 costs ~40 ns and would cap a ring near 25 M frames/s); elsewhere a table.

/// Reflected Castagnoli polynomial.
const POLY: u32 = 0x82F6_3B78;

const TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

fn update_table(mut state: u32, data: &[u8]) -> u32 {
    for &b in data {
        state = TABLE[((state ^ u32::from(b)) & 0xff) as usize] ^ (state >> 8);
    }
    state
}

/// CRC-32C state update over `$data` with the `crc32` instruction: 8 bytes per instruction,
/// then 4, 2, 1 for the tail. The CRC of a byte string does not depend on how it is cut into
/// words, so this equals the table result. A macro rather than a function so it is expanded
/// inside each `target_feature` function (a call per part cost as much as the CRC of a
/// 64-byte payload: `target_feature` functions are not inlined into each other reliably).
#[cfg(target_arch = "x86_64")]
macro_rules! crc_update_sse42 {
    ($state:expr, $data:expr) => {{
        use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64};
        let data: &[u8] = $data;
        let mut s = u64::from($state);
        let mut words = data.chunks_exact(8);
        for c in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            s = _mm_crc32_u64(s, u64::from_le_bytes(w));
        }
        let mut s = s as u32;
        let rest = words.remainder();
        let mut at = 0;
        if rest.len() & 4 != 0 {
            s = _mm_crc32_u32(s, u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]));
            at = 4;
        }
        if rest.len() & 2 != 0 {
            s = _mm_crc32_u16(s, u16::from_le_bytes([rest[at], rest[at + 1]]));
            at += 2;
        }
        if rest.len() & 1 != 0 {
            s = _mm_crc32_u8(s, rest[at]);
        }
        s
    }};
}

/// All parts in one `target_feature` function, so the per-part loop is inlined into a single
/// call per checksum (a frame checksum is 2-3 parts; the call overhead used to cost as much as
/// the CRC of a 64-byte frame).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn update_parts_sse42(mut state: u32, parts: &[&[u8]]) -> u32 {
    for p in parts {
        state = crc_update_sse42!(state, p);
    }
    state
}

#[inline]
fn update_parts(state: u32, parts: &[&[u8]]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU supports SSE4.2 (checked at run time just above), which is the
            // only requirement of this `target_feature` function; it touches only `parts`.
            return unsafe { update_parts_sse42(state, parts) };
        }
    }
    parts.iter().fold(state, |s, p| update_table(s, p))
}

/// A frame's checksummed bytes (12 header bytes, then `a`, then `b`) with SSE4.2: the header
/// is one 8-byte and one 4-byte instruction, an empty `a` costs nothing, and there is no loop
/// over parts (per-part loop and tail handling used to cost as many instructions as the CRC
/// of a 64-byte payload itself).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn frame_sse42(state: u32, header: &[u8; 12], a: &[u8], b: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u32, _mm_crc32_u64};
    let [h0, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10, h11] = *header;
    let s = _mm_crc32_u64(
        u64::from(state),
        u64::from_le_bytes([h0, h1, h2, h3, h4, h5, h6, h7]),
    );
    let mut s = _mm_crc32_u32(s as u32, u32::from_le_bytes([h8, h9, h10, h11]));
    if !a.is_empty() {
        s = crc_update_sse42!(s, a);
    }
    crc_update_sse42!(s, b)
}

/// CRC-32C of `header` followed by `a` and `b`, continuing from `crc`: the same value as
/// `crc32c(crc, &[header, a, b])`, computed faster (the frame checksum's shape).
#[inline]
pub(crate) fn crc32c_frame(crc: u32, header: &[u8; 12], a: &[u8], b: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU supports SSE4.2 (checked at run time just above), which is the
            // only requirement of this `target_feature` function; it touches only its inputs.
            return !unsafe { frame_sse42(!crc, header, a, b) };
        }
    }
    crc32c(crc, &[header, a, b])
}

/// [`crc32c_frame`] with the 12 header bytes given as the little-endian words `w0` (bytes
/// 0..8) and `w1` (bytes 8..12): the hot paths hold the header as words already, and the
/// words feed the `crc32` instruction directly.
#[inline]
pub(crate) fn crc32c_frame_words(crc: u32, w0: u64, w1: u32, payload: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU supports SSE4.2 (checked at run time just above), which is the
            // only requirement of this `target_feature` function; it touches only its inputs.
            return !unsafe { words_sse42(!crc, w0, w1, payload) };
        }
    }
    let mut header = [0u8; 12];
    header[..8].copy_from_slice(&w0.to_le_bytes());
    header[8..].copy_from_slice(&w1.to_le_bytes());
    crc32c(crc, &[&header, payload])
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn words_sse42(state: u32, w0: u64, w1: u32, payload: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u32, _mm_crc32_u64};
    let mut s = _mm_crc32_u64(u64::from(state), w0);
    s = u64::from(_mm_crc32_u32(s as u32, w1));
    // 32 bytes per iteration (four independent-latency-bound instructions, one loop branch),
    // then 8-byte steps, then the tail: for a 64-byte payload, two iterations and no tail.
    let mut rest = payload;
    while let Some((c, r)) = rest.split_first_chunk::<32>() {
        let word = |i: usize| u64::from_le_bytes(c[i..i + 8].try_into().expect("8 bytes"));
        s = _mm_crc32_u64(s, word(0));
        s = _mm_crc32_u64(s, word(8));
        s = _mm_crc32_u64(s, word(16));
        s = _mm_crc32_u64(s, word(24));
        rest = r;
    }
    while let Some((c, r)) = rest.split_first_chunk::<8>() {
        s = _mm_crc32_u64(s, u64::from_le_bytes(*c));
        rest = r;
    }
    crc_update_sse42!(s as u32, rest)
}

/// CRC-32C of the concatenation of `parts`, continuing from `crc` (0 for a fresh checksum;
/// the standard CRC-32C of `data` is `crc32c(0, &[data])`).
#[inline]
pub fn crc32c(crc: u32, parts: &[&[u8]]) -> u32 {
    !update_parts(!crc, parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_vector() {
        assert_eq!(crc32c(0, &[b"123456789"]), 0xE306_9283);
        assert_eq!(crc32c(0, &[b"1234", b"56789"]), 0xE306_9283);
    }

    proptest! {
        #[test]
        fn hardware_and_table_agree(data in proptest::collection::vec(any::<u8>(), 0..300), seed in any::<u32>(), split in 0usize..300) {
            let split = split.min(data.len());
            let table = !update_table(!seed, &data);
            prop_assert_eq!(crc32c(seed, &[&data]), table);
            prop_assert_eq!(crc32c(seed, &[&data[..split], &data[split..]]), table);
            let (a, b) = data.split_at(split / 2);
            prop_assert_eq!(crc32c(seed, &[a, &[], b]), table);
        }

        #[test]
        fn frame_shape_equals_parts(header in any::<[u8; 12]>(), a in proptest::collection::vec(any::<u8>(), 0..20), b in proptest::collection::vec(any::<u8>(), 0..300), seed in any::<u32>()) {
            let mut all = header.to_vec();
            all.extend_from_slice(&a);
            all.extend_from_slice(&b);
            prop_assert_eq!(crc32c_frame(seed, &header, &a, &b), !update_table(!seed, &all));
        }

        #[test]
        fn header_words_equal_header_bytes(header in any::<[u8; 12]>(), b in proptest::collection::vec(any::<u8>(), 0..300), seed in any::<u32>()) {
            let w0 = u64::from_le_bytes(header[..8].try_into().unwrap());
            let w1 = u32::from_le_bytes(header[8..].try_into().unwrap());
            prop_assert_eq!(crc32c_frame_words(seed, w0, w1, &b), crc32c_frame(seed, &header, &[], &b));
        }
    }
}
