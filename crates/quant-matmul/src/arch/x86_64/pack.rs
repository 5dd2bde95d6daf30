//! Packing help for the panel layouts on x86-64, in SSE2 (the x86-64 baseline, so every tier
//! can use it): A's rows interleaved word by word into quads, B's rows byte by byte into
//! quads, and pair panels regrouped into quad panels.

use core::arch::x86_64::*;

/// `dst[q * stride + j] = word q of rows[j] ^ xor` for `j < 4` and `q < quads` (`quads` a
/// multiple of 4): four rows of quads interleaved, four quads at a time by a 4 x 4 transpose of
/// 32-bit words (word `q` of a row is its bytes `4q .. 4q + 4`, the first lowest).
///
/// # Panics
/// When a row has fewer than `4 * quads` bytes, `quads` is not a multiple of 4, or `dst` is
/// shorter than `(quads - 1) * stride + 4` words.
pub(crate) fn interleave4(rows: [&[u8]; 4], quads: usize, xor: u32, dst: &mut [i32], stride: usize) {
    if quads == 0 {
        return;
    }
    assert!(
        quads.is_multiple_of(4) && rows.iter().all(|r| r.len() >= 4 * quads) && dst.len() >= (quads - 1) * stride + 4,
        "interleave4 bounds"
    );
    let x = i32::from_ne_bytes(xor.to_ne_bytes());
    // SAFETY: SSE2 is part of the x86-64 baseline; every load reads 16 bytes at `4q` of a row
    // with `q + 4 <= quads`, inside the row (asserted); every store writes 4 words at
    // `(q + i) * stride`, `q + i < quads`, inside `dst` (asserted).
    unsafe {
        let xv = _mm_set1_epi32(x);
        let d = dst.as_mut_ptr();
        for q in (0..quads).step_by(4) {
            let load = |j: usize| _mm_xor_si128(_mm_loadu_si128(rows[j].as_ptr().add(4 * q).cast()), xv);
            let (r0, r1, r2, r3) = (load(0), load(1), load(2), load(3));
            let (t0, t1) = (_mm_unpacklo_epi32(r0, r1), _mm_unpacklo_epi32(r2, r3));
            let (t2, t3) = (_mm_unpackhi_epi32(r0, r1), _mm_unpackhi_epi32(r2, r3));
            _mm_storeu_si128(d.add(q * stride).cast(), _mm_unpacklo_epi64(t0, t1));
            _mm_storeu_si128(d.add((q + 1) * stride).cast(), _mm_unpackhi_epi64(t0, t1));
            _mm_storeu_si128(d.add((q + 2) * stride).cast(), _mm_unpacklo_epi64(t2, t3));
            _mm_storeu_si128(d.add((q + 3) * stride).cast(), _mm_unpackhi_epi64(t2, t3));
        }
    }
}

/// `dst[i] = word i of src ^ xor` for the 16 words of a 64-byte block: one row block of the
/// AMX row-block layout (a copy, with the `i8` shift as an XOR), with SSE2.
#[inline]
pub(crate) fn copy_block(src: &[u8; 64], xor: u32, dst: &mut [i32; 16]) {
    let x = i32::from_ne_bytes(xor.to_ne_bytes());
    // SAFETY: SSE2 is part of the x86-64 baseline; the four loads read the 64 bytes of `src`
    // and the four stores write the 64 bytes of `dst`, 16 at a time.
    unsafe {
        let xv = _mm_set1_epi32(x);
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        for i in 0..4 {
            let v = _mm_xor_si128(_mm_loadu_si128(s.add(16 * i).cast()), xv);
            _mm_storeu_si128(d.add(4 * i).cast(), v);
        }
    }
}

/// `dst[4 c + t] = rows[t][c]` for `c < 16 * chunks`: four rows of B interleaved byte by byte
/// into depth quads (the quad panels' layout), sixteen columns at a time with SSE2 byte and
/// word unpacks.
///
/// # Panics
/// When a row has fewer than `16 * chunks` bytes or `dst` fewer than `64 * chunks`.
pub(crate) fn interleave_quads(rows: [&[i8]; 4], chunks: usize, dst: &mut [i8]) {
    assert!(rows.iter().all(|r| r.len() >= 16 * chunks) && dst.len() >= 64 * chunks, "interleave_quads bounds");
    // SAFETY: SSE2 is part of the x86-64 baseline; chunk `i` loads bytes `16 i .. 16 i + 16` of
    // each row and stores bytes `64 i .. 64 i + 64` of `dst`, inside them (asserted).
    unsafe {
        let d = dst.as_mut_ptr();
        for i in 0..chunks {
            let load = |t: usize| _mm_loadu_si128(rows[t].as_ptr().add(16 * i).cast());
            let (r0, r1, r2, r3) = (load(0), load(1), load(2), load(3));
            let (p01l, p01h) = (_mm_unpacklo_epi8(r0, r1), _mm_unpackhi_epi8(r0, r1));
            let (p23l, p23h) = (_mm_unpacklo_epi8(r2, r3), _mm_unpackhi_epi8(r2, r3));
            let out = d.add(64 * i);
            _mm_storeu_si128(out.cast(), _mm_unpacklo_epi16(p01l, p23l));
            _mm_storeu_si128(out.add(16).cast(), _mm_unpackhi_epi16(p01l, p23l));
            _mm_storeu_si128(out.add(32).cast(), _mm_unpacklo_epi16(p01h, p23h));
            _mm_storeu_si128(out.add(48).cast(), _mm_unpackhi_epi16(p01h, p23h));
        }
    }
}

/// `dst` holds, per column `c` of 16, `p0`'s pair `c` then `p1`'s pair `c`: two depth pairs of a
/// 16-column pair panel regrouped into one depth quad (the AVX2 kernel's 7-bit path).
#[inline(always)]
pub(crate) fn interleave_pairs(p0: &[i8; 32], p1: &[i8; 32], dst: &mut [i8; 64]) {
    // SAFETY: SSE2 is part of the x86-64 baseline; every load reads 16 bytes inside a 32-byte
    // array (offsets 0 and 16) and every store writes 16 bytes inside the 64-byte `dst`.
    unsafe {
        let (p0, p1, d) =
            (p0.as_ptr().cast::<__m128i>(), p1.as_ptr().cast::<__m128i>(), dst.as_mut_ptr().cast::<__m128i>());
        for half in 0..2 {
            let (x, y) = (_mm_loadu_si128(p0.add(half)), _mm_loadu_si128(p1.add(half)));
            _mm_storeu_si128(d.add(2 * half), _mm_unpacklo_epi16(x, y));
            _mm_storeu_si128(d.add(2 * half + 1), _mm_unpackhi_epi16(x, y));
        }
    }
}
