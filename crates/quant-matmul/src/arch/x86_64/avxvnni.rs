//! The AVX-VNNI micro-kernels: `vpdpbusd` on ymm registers (VEX encoding), for CPUs with
//! AVX-VNNI but without AVX-512 (Intel Alder Lake and later client cores; AMD Zen 5 has both).
//!
//! `vpdpbusd acc, a, b` multiplies four unsigned bytes of `a` by the four signed bytes of `b`
//! in the same 32-bit lane and adds the four products to `acc`'s `i32` lane: no `i16` step,
//! so unlike `vpmaddubsw` it is exact for full-range `u8 x i8`. The accumulation wraps like
//! `vpaddd`, so every tile is exact modulo `2^32` (see the kernel contract).
//!
//! Tile kernel (6 x 16, 12 ymm accumulators), per depth quad: two 32-byte loads of B (16
//! columns x 4 bytes), one broadcast of each row's quad of A, twelve `vpdpbusd`. 12
//! accumulators + 2 B vectors + 1 broadcast = 15 of 16 registers. Fewer rows than 6 (the last
//! row panel, small `M`) run a copy of the loop with only those rows. The tile starts from the
//! zero-point correction and ends in the output stage (`i32`, or `f32` with its scale and
//! bias), both in registers ([`super::ymm`]).
//!
//! Row kernel (1 x 16, `M = 1`): per quad one broadcast and two `vpdpbusd`, unrolled four
//! quads deep with independent accumulators, the weights prefetched 1 KiB ahead.
//!
//! Chunk bound: A bytes `<= 255` (the `i8` shift included), `|B| <= 128`: exact in `i32` for
//! depths up to `i32::MAX / (255 · 128) = 65 793` (16 448 quads).

use core::arch::x86_64::*;

use quant_traits::cpu::AvxVnni;

use super::super::decode::{DecodeKernel, FloatRows, Panels, QuantizedRows, PANEL};
use super::super::{AWords, MicroKernel, TileIo};
use super::decode;
use super::ymm;

const MR: usize = 6;
const NR: usize = 16;

impl MicroKernel for AvxVnni {
    const MR: usize = MR;
    const NR: usize = NR;
    const GROUP: usize = 4;
    const A_WORDS: AWords = AWords::Quads;
    const MC: usize = 96;
    const NC: usize = 256;
    // The whole depth: a tile runs over all of it and C is written once.
    const KC: usize = 1 << 20;
    const LAYOUT: &'static str = "quads x16 (portable, avxvnni)";

    unsafe fn tile(kq: usize, a: &[i32], b: &[i8], ahead: &[i8], io: &TileIo) {
        // Prefetch `ahead` (the next panel) only when it is a whole panel.
        let fetch = if ahead.len() >= kq * NR * 4 { ahead.as_ptr() } else { core::ptr::null() };
        let (a, b) = (a.as_ptr(), b.as_ptr());
        // SAFETY: forwarded from the trait contract (lengths checked by the caller, AVX-VNNI
        // present, `io` valid for its rows and columns).
        unsafe {
            match io.rows {
                1 => tile_rows::<1>(kq, a, b, fetch, io),
                2 => tile_rows::<2>(kq, a, b, fetch, io),
                3 => tile_rows::<3>(kq, a, b, fetch, io),
                4 => tile_rows::<4>(kq, a, b, fetch, io),
                5 => tile_rows::<5>(kq, a, b, fetch, io),
                _ => tile_rows::<MR>(kq, a, b, fetch, io),
            }
        }
    }

    unsafe fn epilogue(io: &TileIo) {
        // SAFETY: forwarded from the trait contract; AVX2 is part of the tier.
        unsafe { ymm::epilogue(&io.start, &io.finish, io.rows, io.cols) }
    }

    unsafe fn row(kq: usize, a: &[i32], b: &[i8], out: &mut [i32]) {
        // SAFETY: as above; `out` holds NR words.
        unsafe { row_vnni(kq, a.as_ptr(), b.as_ptr(), out.as_mut_ptr()) }
    }
}

/// The decode product: the eight-channel ymm kernels (either layout), the shared AVX2 + FMA
/// float mode.
impl DecodeKernel for AvxVnni {
    const WIDTH: usize = PANEL;
    const FLOAT_SIMD: bool = true;

    unsafe fn quantize_group(x: &[f32], q: &mut [i8]) -> (f32, i32) {
        // SAFETY: the tier includes AVX2; the lengths are the trait's contract.
        unsafe { super::decode::quantize_group(x, q) }
    }

    unsafe fn panel_i8<const R: usize>(
        w: &Panels<'_>,
        a: &QuantizedRows<'_>,
        rows: [usize; R],
        p: usize,
    ) -> [[f32; PANEL]; R] {
        // SAFETY: forwarded from the trait contract (the tier's features present).
        unsafe { decode::panel_avxvnni(w, a, rows, p) }
    }

    unsafe fn panels_f32<const R: usize, const P: usize>(
        w: &Panels<'_>,
        a: &FloatRows<'_>,
        rows: [usize; R],
        p: usize,
        scratch: Option<&[f32]>,
    ) -> [[[f32; PANEL]; P]; R] {
        // SAFETY: forwarded from the trait contract (the tier has AVX2 and FMA).
        unsafe { decode::panels_f32(w, a, rows, p, scratch) }
    }

    unsafe fn dequantize(w: &Panels<'_>, p: usize, count: usize, out: &mut [f32]) -> bool {
        // SAFETY: as above.
        unsafe { decode::dequantize(w, p, count, out) }
    }
}

/// `R` rows of the tile over `kq` quads, from `io.start` to `io.finish`; unless `fetch` is
/// null, the `kq * NR * 4` bytes there (the next panel) are prefetched into L2 meanwhile.
///
/// # Safety
/// `a` points to `kq * MR` words, `b` to `kq * NR * 4` bytes; `io` is valid for `R` rows; AVX2
/// and AVX-VNNI present.
#[inline]
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn tile_rows<const R: usize>(kq: usize, a: *const i32, b: *const i8, fetch: *const i8, io: &TileIo) {
    // SAFETY: `io` is valid for R rows (caller).
    let mut c = unsafe { ymm::start::<R>(&io.start, io.cols, 0) };
    for q in 0..kq {
        if !fetch.is_null() {
            _mm_prefetch::<_MM_HINT_T1>(fetch.wrapping_add(q * NR * 4));
        }
        // SAFETY: quad q < kq: bytes q*64 .. q*64 + 64 of `b` and words q*MR .. q*MR + R of
        // `a` lie inside the panels (caller's contract).
        unsafe {
            let bq = b.add(q * NR * 4);
            let b0 = _mm256_loadu_si256(bq.cast());
            let b1 = _mm256_loadu_si256(bq.add(32).cast());
            for (r, acc) in c.iter_mut().enumerate() {
                let av = _mm256_set1_epi32(*a.add(q * MR + r));
                acc[0] = _mm256_dpbusd_avx_epi32(acc[0], av, b0);
                acc[1] = _mm256_dpbusd_avx_epi32(acc[1], av, b1);
            }
        }
    }
    // SAFETY: as above.
    unsafe { ymm::finish::<R>(&c, &io.finish, io.cols, 0) };
}

/// # Safety
/// `a` points to `kq` words, `b` to `kq * NR * 4` bytes, `out` to `NR` words; AVX2 and
/// AVX-VNNI present.
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn row_vnni(kq: usize, a: *const i32, b: *const i8, out: *mut i32) {
    let mut acc = [_mm256_setzero_si256(); 8];
    let mut q = 0;
    while q + 4 <= kq {
        // The weights stream once: ask for them 1 KiB ahead (a hint; harmless past the end).
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(q * NR * 4 + 1024));
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(q * NR * 4 + 1024 + 64));
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(q * NR * 4 + 1024 + 128));
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(q * NR * 4 + 1024 + 192));
        for u in 0..4 {
            // SAFETY: q + u < kq: word q + u of `a`, bytes (q + u) * 64 .. + 64 of `b`.
            unsafe {
                let bq = b.add((q + u) * NR * 4);
                let av = _mm256_set1_epi32(*a.add(q + u));
                acc[2 * u] = _mm256_dpbusd_avx_epi32(acc[2 * u], av, _mm256_loadu_si256(bq.cast()));
                acc[2 * u + 1] = _mm256_dpbusd_avx_epi32(acc[2 * u + 1], av, _mm256_loadu_si256(bq.add(32).cast()));
            }
        }
        q += 4;
    }
    while q < kq {
        // SAFETY: q < kq, as above.
        unsafe {
            let bq = b.add(q * NR * 4);
            let av = _mm256_set1_epi32(*a.add(q));
            acc[0] = _mm256_dpbusd_avx_epi32(acc[0], av, _mm256_loadu_si256(bq.cast()));
            acc[1] = _mm256_dpbusd_avx_epi32(acc[1], av, _mm256_loadu_si256(bq.add(32).cast()));
        }
        q += 1;
    }
    let lo = _mm256_add_epi32(_mm256_add_epi32(acc[0], acc[2]), _mm256_add_epi32(acc[4], acc[6]));
    let hi = _mm256_add_epi32(_mm256_add_epi32(acc[1], acc[3]), _mm256_add_epi32(acc[5], acc[7]));
    // SAFETY: `out` holds 16 words.
    unsafe {
        _mm256_storeu_si256(out.cast(), lo);
        _mm256_storeu_si256(out.add(8).cast(), hi);
    }
}
