//! Packing's inner moves: SSE2 on x86-64 (its baseline, so every tier there has it,
//! `x86_64/pack.rs`), plain Rust elsewhere, the same bytes either way. The plain versions are
//! the reference the tests hold the SIMD ones to.

/// The word of four bytes (the first lowest) with `xor` applied.
#[inline(always)]
pub(crate) fn word(four: &[u8], xor: u32) -> i32 {
    let mut q = [0u8; 4];
    q.copy_from_slice(&four[..4]);
    i32::from_ne_bytes((u32::from_le_bytes(q) ^ xor).to_ne_bytes())
}

/// `dst[q * stride + j] = word q of rows[j] ^ xor` for `j < 4` and `q < quads` (`quads` a
/// multiple of 4): four rows of A interleaved into a quad panel (word `q` of a row is its
/// bytes `4q .. 4q + 4`, the first lowest).
///
/// # Panics
/// When a row has fewer than `4 * quads` bytes, `quads` is not a multiple of 4, or `dst` is
/// shorter than `(quads - 1) * stride + 4` words.
#[inline]
pub(crate) fn interleave4(rows: [&[u8]; 4], quads: usize, xor: u32, dst: &mut [i32], stride: usize) {
    #[cfg(target_arch = "x86_64")]
    super::x86_64::pack::interleave4(rows, quads, xor, dst, stride);
    #[cfg(not(target_arch = "x86_64"))]
    interleave4_plain(rows, quads, xor, dst, stride);
}

/// [`interleave4`] in plain Rust.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))] // the tests' reference there
fn interleave4_plain(rows: [&[u8]; 4], quads: usize, xor: u32, dst: &mut [i32], stride: usize) {
    assert!(quads.is_multiple_of(4), "interleave4 bounds");
    for (j, row) in rows.iter().enumerate() {
        for (q, four) in row[..4 * quads].chunks_exact(4).enumerate() {
            dst[q * stride + j] = word(four, xor);
        }
    }
}

/// `dst[i] = word i of src ^ xor` for the 16 words of a 64-byte block: one row block of the
/// AMX row-block layout (a copy, with the `i8` shift as an XOR).
#[inline]
pub(crate) fn copy_block(src: &[u8; 64], xor: u32, dst: &mut [i32; 16]) {
    #[cfg(target_arch = "x86_64")]
    super::x86_64::pack::copy_block(src, xor, dst);
    #[cfg(not(target_arch = "x86_64"))]
    copy_block_plain(src, xor, dst);
}

/// [`copy_block`] in plain Rust.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))] // the tests' reference there
fn copy_block_plain(src: &[u8; 64], xor: u32, dst: &mut [i32; 16]) {
    for (d, four) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = word(four, xor);
    }
}

/// `dst` holds, per column `c` of 16, `p0`'s pair `c` then `p1`'s pair `c`: two depth pairs of a
/// 16-column pair panel regrouped into one depth quad (the AVX2 kernel's 7-bit path).
#[inline]
pub(crate) fn interleave_pairs(p0: &[i8; 32], p1: &[i8; 32], dst: &mut [i8; 64]) {
    #[cfg(target_arch = "x86_64")]
    super::x86_64::pack::interleave_pairs(p0, p1, dst);
    #[cfg(not(target_arch = "x86_64"))]
    interleave_pairs_plain(p0, p1, dst);
}

/// [`interleave_pairs`] in plain Rust.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))] // the tests' reference there
fn interleave_pairs_plain(p0: &[i8; 32], p1: &[i8; 32], dst: &mut [i8; 64]) {
    for c in 0..16 {
        dst[4 * c..4 * c + 2].copy_from_slice(&p0[2 * c..2 * c + 2]);
        dst[4 * c + 2..4 * c + 4].copy_from_slice(&p1[2 * c..2 * c + 2]);
    }
}

/// `dst[4 c + t] = rows[t][c]` for `c < 16 * chunks`: four rows of B interleaved byte by byte
/// into depth quads (the quad panels' layout).
///
/// # Panics
/// When a row has fewer than `16 * chunks` bytes or `dst` fewer than `64 * chunks`.
#[inline]
pub(crate) fn interleave_quads(rows: [&[i8]; 4], chunks: usize, dst: &mut [i8]) {
    #[cfg(target_arch = "x86_64")]
    super::x86_64::pack::interleave_quads(rows, chunks, dst);
    #[cfg(not(target_arch = "x86_64"))]
    interleave_quads_plain(rows, chunks, dst);
}

/// [`interleave_quads`] in plain Rust.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))] // the tests' reference there
fn interleave_quads_plain(rows: [&[i8]; 4], chunks: usize, dst: &mut [i8]) {
    for (c, four) in dst[..64 * chunks].chunks_exact_mut(4).enumerate() {
        for (t, d) in four.iter_mut().enumerate() {
            *d = rows[t][c];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes `seed, seed + 7, ..` (wrapping): every value, both signs.
    fn bytes<const N: usize>(seed: u8) -> [u8; N] {
        core::array::from_fn(|i| seed.wrapping_add((i as u8).wrapping_mul(7)))
    }

    /// Every move gives the plain version's bytes.
    #[test]
    fn the_moves_match_their_plain_versions() {
        let rows: [[u8; 64]; 4] = core::array::from_fn(|j| bytes((j as u8).wrapping_mul(50)));
        for xor in [0, 0x8080_8080] {
            for stride in [4, 6, 12] {
                let (mut a, mut b) = (alloc::vec![0i32; 16 * stride], alloc::vec![0i32; 16 * stride]);
                let src = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
                interleave4(src, 16, xor, &mut a, stride);
                interleave4_plain(src, 16, xor, &mut b, stride);
                assert_eq!(a, b, "interleave4 xor {xor:x} stride {stride}");
            }
            let (mut a, mut b) = ([0i32; 16], [0i32; 16]);
            copy_block(&rows[1], xor, &mut a);
            copy_block_plain(&rows[1], xor, &mut b);
            assert_eq!(a, b, "copy_block xor {xor:x}");
        }
        let signed: [[i8; 32]; 4] =
            core::array::from_fn(|j| bytes::<32>((j as u8).wrapping_mul(90)).map(|v| i8::from_ne_bytes([v])));
        let (mut a, mut b) = ([0i8; 64], [0i8; 64]);
        interleave_pairs(&signed[0], &signed[1], &mut a);
        interleave_pairs_plain(&signed[0], &signed[1], &mut b);
        assert_eq!(a, b, "interleave_pairs");
        let src = [&signed[0][..], &signed[1][..], &signed[2][..], &signed[3][..]];
        let (mut a, mut b) = ([0i8; 128], [0i8; 128]);
        interleave_quads(src, 2, &mut a);
        interleave_quads_plain(src, 2, &mut b);
        assert_eq!(a, b, "interleave_quads");
    }
}
