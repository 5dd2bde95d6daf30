//! The AVX2 micro-kernels: `vpmaddwd` on i16 pairs.
//!
//! Tile kernel (6 x 16, 12 ymm accumulators), per depth pair: one 32-byte load of B (16
//! columns of i8 pairs) sign-extended to two vectors of 8 i16 pairs (`vpmovsxbw`), six
//! broadcasts of A, twelve `vpmaddwd` and twelve `vpaddd`. `vpmaddwd` multiplies i16 x i16 and
//! adds adjacent products into i32 without saturation (its one saturating case, two pairs of
//! `-32768 * -32768`, cannot occur with widened 8-bit operands), and `vpaddd` wraps, so the
//! tile is exact modulo `2^32` (see the kernel contract). The tile starts from the zero-point
//! correction and ends in the output stage, both in registers ([`super::ymm`]); fewer rows
//! than 6 run a copy of the loop with only those rows.
//!
//! Row kernel (1 x 16, for `M = 1`): the same per depth pair with one A broadcast, unrolled
//! four pairs deep with independent accumulators so the weights stream at memory speed.

use core::arch::x86_64::*;

use quant_traits::cpu::Avx2;

use super::super::decode::{DecodeKernel, FloatRows, Panels, QuantizedRows, PANEL};
use super::super::{AWords, MicroKernel, TileIo};
use super::decode;
use super::ymm;

/// Rows of a tile.
const MR: usize = 6;
/// Columns of a tile.
const NR: usize = 16;

impl MicroKernel for Avx2 {
    const MR: usize = MR;
    const NR: usize = NR;
    const GROUP: usize = 2;
    const A_WORDS: AWords = AWords::Pairs;
    const MC: usize = 48;
    const NC: usize = 2048;
    // The whole depth; wide column blocks, so that A (i16 pairs, twice the bytes of B)
    // streams from memory as few times as possible.
    const KC: usize = 1 << 20;
    const LAYOUT: &'static str = "pairs x16 (avx2)";

    unsafe fn tile(kp: usize, a: &[i32], b: &[i8], _ahead: &[i8], io: &TileIo) {
        let (a, b) = (a.as_ptr(), b.as_ptr());
        // SAFETY: forwarded from the trait contract: lengths checked by the caller, AVX2
        // present, `io` valid for its rows and columns.
        unsafe {
            match io.rows {
                1 => tile_avx2::<1>(kp, a, b, io),
                2 => tile_avx2::<2>(kp, a, b, io),
                3 => tile_avx2::<3>(kp, a, b, io),
                4 => tile_avx2::<4>(kp, a, b, io),
                5 => tile_avx2::<5>(kp, a, b, io),
                _ => tile_avx2::<MR>(kp, a, b, io),
            }
        }
    }

    unsafe fn tile_u7(kq: usize, a: &[i32], b: &[i8], ahead: &[i8], io: &TileIo) {
        // SAFETY: forwarded from the trait contract.
        unsafe {
            match io.rows {
                1 => tile_u7_avx2::<1>(kq, a.as_ptr(), b.as_ptr(), ahead, io),
                2 => tile_u7_avx2::<2>(kq, a.as_ptr(), b.as_ptr(), ahead, io),
                3 => tile_u7_avx2::<3>(kq, a.as_ptr(), b.as_ptr(), ahead, io),
                4 => tile_u7_avx2::<4>(kq, a.as_ptr(), b.as_ptr(), ahead, io),
                5 => tile_u7_avx2::<5>(kq, a.as_ptr(), b.as_ptr(), ahead, io),
                _ => tile_u7_avx2::<MR>(kq, a.as_ptr(), b.as_ptr(), ahead, io),
            }
        }
    }

    unsafe fn epilogue(io: &TileIo) {
        // SAFETY: forwarded from the trait contract.
        unsafe { ymm::epilogue(&io.start, &io.finish, io.rows, io.cols) }
    }

    unsafe fn row(kp: usize, a: &[i32], b: &[i8], out: &mut [i32]) {
        let Some(out) = out.first_chunk_mut::<NR>() else { return };
        // SAFETY: as above.
        unsafe { row_avx2(kp, a.as_ptr(), b.as_ptr(), out) }
    }
}

/// The decode product: the eight-channel ymm kernels (either layout), the shared AVX2 + FMA
/// float mode.
impl DecodeKernel for Avx2 {
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
        unsafe { decode::panel_avx2(w, a, rows, p) }
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

/// The 7-bit tile over `R` rows: per depth quad and row of A, one broadcast of the row's four
/// bytes, two `vpmaddubsw` against the quad panel read straight from memory (u8 x i8 -> i16
/// pair sums, exact for `a <= 127`), two `vpmaddwd` against ones (-> i32, the quad's sum per
/// column) and two `vpaddd`. 12 accumulators, the ones, a broadcast and a product: 15
/// registers, no spill.
///
/// # Safety
/// `a` points to `kq * MR` words with every byte `<= 127`, `b` to `kq * NR * 4` bytes; `io` is
/// valid for `R` rows; the CPU supports AVX2.
#[target_feature(enable = "avx2")]
unsafe fn tile_u7_avx2<const R: usize>(kq: usize, a: *const i32, b: *const i8, ahead: &[i8], io: &TileIo) {
    // Two copies of the loop: the prefetching one costs a few percent when there is nothing
    // to fetch.
    // SAFETY: forwarded (same contract).
    unsafe {
        if ahead.len() >= kq * 64 {
            tile_u7_loop::<R, true>(kq, a, b, ahead.as_ptr(), io);
        } else {
            tile_u7_loop::<R, false>(kq, a, b, ahead.as_ptr(), io);
        }
    }
}

/// # Safety
/// As [`tile_u7_avx2`]; with `FETCH`, `ahead` points to `kq * 64` bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn tile_u7_loop<const R: usize, const FETCH: bool>(
    kq: usize,
    a: *const i32,
    b: *const i8,
    ahead: *const i8,
    io: &TileIo,
) {
    let ones = _mm256_set1_epi16(1);
    // SAFETY: `io` is valid for R rows (caller).
    let mut c = unsafe { ymm::start::<R>(&io.start, io.cols, 0) };
    let mut ap = a;
    let mut bp = b;
    let mut fp = ahead;
    for _ in 0..kq {
        if FETCH {
            // One line of `ahead` per quad, into L2 (a hint: no access happens).
            _mm_prefetch::<_MM_HINT_T1>(fp);
            fp = fp.wrapping_add(64);
        }
        // SAFETY: for quad q < kq, `bp` points at bytes q*64 .. q*64 + 64 and `ap` at words
        // q*6 .. q*6 + 6, inside the panels (caller's contract).
        unsafe {
            for (r, acc) in c.iter_mut().enumerate() {
                let av = _mm256_set1_epi32(*ap.add(r));
                let lo = maddubs_mem(av, bp);
                let hi = maddubs_mem(av, bp.add(32));
                acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(lo, ones));
                acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(hi, ones));
            }
            ap = ap.add(MR);
            bp = bp.add(NR * 4);
        }
    }
    // SAFETY: as above.
    unsafe { ymm::finish::<R>(&c, &io.finish, io.cols, 0) };
}

/// `vpmaddubsw a, [p]`: `a`'s unsigned bytes times the 32 signed bytes at `p`, adjacent
/// products summed to `i16` with saturation. Written as `asm!` so that B is read from memory
/// by the instruction itself: with the intrinsic and a load, the compiler keeps both B vectors
/// of a quad in registers across the six rows, which spills an accumulator.
///
/// # Safety
/// `p` points to 32 readable bytes (any alignment); AVX2 present.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn maddubs_mem(a: __m256i, p: *const i8) -> __m256i {
    let out: __m256i;
    // SAFETY: reads 32 bytes at `p` (caller); VEX memory operands need no alignment; no stack,
    // no flags, no other memory touched.
    unsafe {
        core::arch::asm!(
            "vpmaddubsw {out}, {a}, ymmword ptr [{p}]",
            out = lateout(ymm_reg) out,
            a = in(ymm_reg) a,
            p = in(reg) p,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    out
}

/// 16 columns of depth pair `p`: two vectors of 8 sign-extended i16 pairs.
///
/// # Safety
/// `b` points to 32 readable bytes; AVX2 present.
#[inline(always)]
unsafe fn load_b(b: *const i8) -> (__m256i, __m256i) {
    // SAFETY: 32 bytes readable (caller); unaligned 16-byte loads.
    unsafe {
        (_mm256_cvtepi8_epi16(_mm_loadu_si128(b.cast())), _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(16).cast())))
    }
}

/// `R` rows of the pair tile, from `io.start` to `io.finish`.
///
/// # Safety
/// `a` points to `kp * MR` words, `b` to `kp * NR * 2` bytes; `io` is valid for `R` rows; the
/// CPU supports AVX2.
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2<const R: usize>(kp: usize, a: *const i32, b: *const i8, io: &TileIo) {
    // SAFETY: `io` is valid for R rows (caller).
    let mut c = unsafe { ymm::start::<R>(&io.start, io.cols, 0) };
    let mut ap = a;
    let mut bp = b;
    // The next panel, when B is a sequence of panels (packed weights): fetched into L2 while
    // this one is used, one line per pair (a hint; harmless past the end of the buffer).
    let ahead = kp * NR * 2;
    for _ in 0..kp {
        _mm_prefetch::<_MM_HINT_T1>(bp.wrapping_add(ahead));
        // SAFETY: for pair p < kp, `bp` points at bytes p*32 .. p*32 + 32 and `ap` at words
        // p*6 .. p*6 + 6, inside the panels (caller's contract).
        unsafe {
            let (b0, b1) = load_b(bp);
            for (r, acc) in c.iter_mut().enumerate() {
                let av = _mm256_set1_epi32(*ap.add(r));
                acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(av, b0));
                acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(av, b1));
            }
            ap = ap.add(MR);
            bp = bp.add(NR * 2);
        }
    }
    // SAFETY: as above.
    unsafe { ymm::finish::<R>(&c, &io.finish, io.cols, 0) };
}

/// # Safety
/// `a` points to `kp` words, `b` to `kp * NR * 2` bytes; the CPU supports AVX2.
#[target_feature(enable = "avx2")]
unsafe fn row_avx2(kp: usize, a: *const i32, b: *const i8, out: &mut [i32; NR]) {
    let mut acc = [_mm256_setzero_si256(); 8];
    let mut p = 0;
    while p + 4 <= kp {
        // The weights stream once: ask for them 1 KiB ahead (a hint, measured to help; a
        // prefetch of an address past the panel is harmless).
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(p * NR * 2 + 1024));
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(p * NR * 2 + 1024 + 64));
        for u in 0..4 {
            // SAFETY: p + u < kp: word p + u of `a`, bytes (p + u) * 32 .. + 32 of `b`.
            unsafe {
                let (b0, b1) = load_b(b.add((p + u) * NR * 2));
                let av = _mm256_set1_epi32(*a.add(p + u));
                acc[2 * u] = _mm256_add_epi32(acc[2 * u], _mm256_madd_epi16(av, b0));
                acc[2 * u + 1] = _mm256_add_epi32(acc[2 * u + 1], _mm256_madd_epi16(av, b1));
            }
        }
        p += 4;
    }
    while p < kp {
        // SAFETY: p < kp, as above.
        unsafe {
            let (b0, b1) = load_b(b.add(p * NR * 2));
            let av = _mm256_set1_epi32(*a.add(p));
            acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(av, b0));
            acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(av, b1));
        }
        p += 1;
    }
    let lo = _mm256_add_epi32(_mm256_add_epi32(acc[0], acc[2]), _mm256_add_epi32(acc[4], acc[6]));
    let hi = _mm256_add_epi32(_mm256_add_epi32(acc[1], acc[3]), _mm256_add_epi32(acc[5], acc[7]));
    // SAFETY: `out` holds 16 words.
    unsafe {
        _mm256_storeu_si256(out.as_mut_ptr().cast(), lo);
        _mm256_storeu_si256(out.as_mut_ptr().add(8).cast(), hi);
    }
}
