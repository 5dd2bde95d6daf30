//! The AVX-512 VNNI micro-kernels: `vpdpbusd` on zmm registers (Intel Ice Lake and later,
//! AMD Zen 4 and later).
//!
//! `vpdpbusd acc, a, b` multiplies four unsigned bytes of `a` by the four signed bytes of `b`
//! in the same 32-bit lane and adds the four products to `acc`'s `i32` lane: exact for
//! full-range `u8 x i8` (no `i16` step). The accumulation wraps like `vpaddd`; the driver keeps
//! each run within the chunk bound, so it never does.
//!
//! Tile kernel (12 x 32, 24 zmm accumulators), per depth quad: two 64-byte loads of B (32
//! columns x 4 bytes), one broadcast of each row's quad of A, 24 `vpdpbusd`. 24 accumulators,
//! 2 B vectors and 1 broadcast take 27 of 32 registers; 14 loads per 24 `vpdpbusd`, within two
//! load ports at two `vpdpbusd` per cycle. Fewer rows than 12 (the last row panel, small `M`)
//! run a copy of the loop with only those rows, so `M = 2..16` wastes no multiplies.
//!
//! Row kernel (1 x 32, `M = 1`): per quad one broadcast and two `vpdpbusd`, unrolled four quads
//! deep with independent accumulators, the weights prefetched 2 KiB ahead.
//!
//! Chunk bound: A bytes `<= 255` (the `i8` shift included), `|B| <= 128`: exact in `i32` for
//! depths up to `i32::MAX / (255 · 128) = 65 793` (16 448 quads).

use core::arch::x86_64::*;

use super::super::{AWords, MicroKernel, Tier};

pub(crate) struct Avx512Vnni;

const MR: usize = 12;
const NR: usize = 32;

impl MicroKernel for Avx512Vnni {
    const TIER: Tier = Tier::Avx512Vnni;
    const MR: usize = MR;
    const NR: usize = NR;
    const GROUP: usize = 4;
    const A_WORDS: AWords = AWords::Quads;
    const MC: usize = 96;
    const NC: usize = 512;
    const KC: usize = usize::MAX;
    const LAYOUT: &'static str = "quads x32 (avx512vnni, amx)";

    unsafe fn tile(rows: usize, kq: usize, a: &[i32], b: &[i8], ahead: &[i8], tile: &mut [i32]) {
        // Prefetch `ahead` (the next panel) only when it is a whole panel.
        let fetch = if ahead.len() >= kq * NR * 4 { ahead.as_ptr() } else { core::ptr::null() };
        let (a, b, t) = (a.as_ptr(), b.as_ptr(), tile.as_mut_ptr());
        // SAFETY: forwarded from the trait contract (lengths checked by the caller, AVX-512
        // VNNI present); `tile` holds MR * NR words.
        unsafe {
            match rows {
                1 => tile_rows::<1>(kq, a, b, fetch, t),
                2 => tile_rows::<2>(kq, a, b, fetch, t),
                3 => tile_rows::<3>(kq, a, b, fetch, t),
                4 => tile_rows::<4>(kq, a, b, fetch, t),
                5 => tile_rows::<5>(kq, a, b, fetch, t),
                6 => tile_rows::<6>(kq, a, b, fetch, t),
                7 => tile_rows::<7>(kq, a, b, fetch, t),
                8 => tile_rows::<8>(kq, a, b, fetch, t),
                9 => tile_rows::<9>(kq, a, b, fetch, t),
                10 => tile_rows::<10>(kq, a, b, fetch, t),
                11 => tile_rows::<11>(kq, a, b, fetch, t),
                _ => tile_rows::<MR>(kq, a, b, fetch, t),
            }
        }
    }

    unsafe fn row(kq: usize, a: &[i32], b: &[i8], out: &mut [i32]) {
        // SAFETY: as above; `out` holds NR words.
        unsafe { row_vnni(kq, a.as_ptr(), b.as_ptr(), out.as_mut_ptr()) }
    }
}

/// `R` rows of the tile over `kq` quads; unless `fetch` is null, the
/// `kq * NR * 4` bytes there (the next panel) are prefetched into L2 meanwhile.
///
/// # Safety
/// `a` points to `kq * MR` words, `b` to `kq * NR * 4` bytes, `tile` to `MR * NR` words
/// (rows `R..` are left alone); AVX-512 F/BW and VNNI present.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_rows<const R: usize>(kq: usize, a: *const i32, b: *const i8, fetch: *const i8, tile: *mut i32) {
    let mut c = [[_mm512_setzero_si512(); 2]; R];
    for q in 0..kq {
        if !fetch.is_null() {
            _mm_prefetch::<_MM_HINT_T1>(fetch.wrapping_add(q * NR * 4));
            _mm_prefetch::<_MM_HINT_T1>(fetch.wrapping_add(q * NR * 4 + 64));
        }
        // SAFETY: quad q < kq: bytes q*128 .. q*128 + 128 of `b` and words q*MR .. q*MR + R
        // of `a` lie inside the panels (caller's contract).
        unsafe {
            let bq = b.add(q * NR * 4);
            let b0 = _mm512_loadu_si512(bq.cast());
            let b1 = _mm512_loadu_si512(bq.add(64).cast());
            for (r, acc) in c.iter_mut().enumerate() {
                let av = _mm512_set1_epi32(*a.add(q * MR + r));
                acc[0] = _mm512_dpbusd_epi32(acc[0], av, b0);
                acc[1] = _mm512_dpbusd_epi32(acc[1], av, b1);
            }
        }
    }
    for (r, acc) in c.iter().enumerate() {
        // SAFETY: row r < R <= MR of the MR x NR tile: words r*NR .. r*NR + 32.
        unsafe {
            _mm512_storeu_si512(tile.add(r * NR).cast(), acc[0]);
            _mm512_storeu_si512(tile.add(r * NR + 16).cast(), acc[1]);
        }
    }
}

/// # Safety
/// `a` points to `kq` words, `b` to `kq * NR * 4` bytes, `out` to `NR` words; AVX-512 F/BW
/// and VNNI present.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn row_vnni(kq: usize, a: *const i32, b: *const i8, out: *mut i32) {
    let mut acc = [_mm512_setzero_si512(); 8];
    let mut q = 0;
    while q + 4 <= kq {
        // The weights stream once: ask for the 512 bytes 2 KiB ahead (a hint; harmless past
        // the end of the buffer).
        for line in 0..8 {
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(q * NR * 4 + 2048 + line * 64));
        }
        for u in 0..4 {
            // SAFETY: q + u < kq: word q + u of `a`, bytes (q + u) * 128 .. + 128 of `b`.
            unsafe {
                let bq = b.add((q + u) * NR * 4);
                let av = _mm512_set1_epi32(*a.add(q + u));
                acc[2 * u] = _mm512_dpbusd_epi32(acc[2 * u], av, _mm512_loadu_si512(bq.cast()));
                acc[2 * u + 1] = _mm512_dpbusd_epi32(acc[2 * u + 1], av, _mm512_loadu_si512(bq.add(64).cast()));
            }
        }
        q += 4;
    }
    while q < kq {
        // SAFETY: q < kq, as above.
        unsafe {
            let bq = b.add(q * NR * 4);
            let av = _mm512_set1_epi32(*a.add(q));
            acc[0] = _mm512_dpbusd_epi32(acc[0], av, _mm512_loadu_si512(bq.cast()));
            acc[1] = _mm512_dpbusd_epi32(acc[1], av, _mm512_loadu_si512(bq.add(64).cast()));
        }
        q += 1;
    }
    let lo = _mm512_add_epi32(_mm512_add_epi32(acc[0], acc[2]), _mm512_add_epi32(acc[4], acc[6]));
    let hi = _mm512_add_epi32(_mm512_add_epi32(acc[1], acc[3]), _mm512_add_epi32(acc[5], acc[7]));
    // SAFETY: `out` holds 32 words.
    unsafe {
        _mm512_storeu_si512(out.cast(), lo);
        _mm512_storeu_si512(out.add(16).cast(), hi);
    }
}
