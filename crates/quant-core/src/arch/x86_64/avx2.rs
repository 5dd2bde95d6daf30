//! The AVX2 tier's fast paths (the AVX-VNNI tier runs them too): quantize/dequantize, 8
//! elements per step, in `f64` lanes like the scalar path, and the eight-lane k-quant search.

use core::arch::x86_64::*;

use quant_traits::cpu::{Avx2, AvxVnni};
use quant_traits::QuantFloat;

use super::super::lanes::{Search, LANES, V};
use super::super::CoreKernels;

/// 4 codes for 4 `f32` values: `clamp(round_ties_even(x / scale) + zp, lo, hi)` as `i32`,
/// bit-identical to the scalar division.
///
/// Division is slow, so this multiplies by the reciprocal and rounds, which gives the same
/// integer unless the quotient is within a hair of a half-integer: for `f32` `x` and `scale`,
/// `x / scale` is either exactly a half-integer or at least `2^-27` away from one (the
/// difference `2x - (2k+1)·scale` is a nonzero multiple of the coarser of the two grids), while
/// the product differs from the quotient by under `2^-42` for `|x / scale| <= 2^10`. Larger
/// quotients are clamped anyway (8-bit codes: every bound is within 256 of the zero point).
/// Groups with a lane within `2^-32` of a tie are recomputed with the true division.
#[inline]
#[target_feature(enable = "avx2")]
fn codes4(x: __m128, p: &Consts) -> __m128i {
    let xd = _mm256_cvtps_pd(x);
    let t = _mm256_mul_pd(xd, p.inv);
    let mut r = _mm256_round_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
    let off = _mm256_andnot_pd(p.sign, _mm256_sub_pd(t, r)); // |t - r| in [0, 0.5]
    let near_tie = _mm256_cmp_pd::<_CMP_LT_OQ>(_mm256_andnot_pd(p.sign, _mm256_sub_pd(off, p.half)), p.eps);
    if _mm256_movemask_pd(near_tie) != 0 {
        r = _mm256_round_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_div_pd(xd, p.scale));
    }
    let c = _mm256_min_pd(_mm256_max_pd(_mm256_add_pd(r, p.zp), p.lo), p.hi);
    _mm256_cvtpd_epi32(c)
}

/// Broadcast constants of one quantization.
struct Consts {
    scale: __m256d,
    inv: __m256d,
    zp: __m256d,
    lo: __m256d,
    hi: __m256d,
    sign: __m256d,
    half: __m256d,
    eps: __m256d,
}

/// Whether 16 `f32` values are all finite (`|x| < inf`; false for NaN).
///
/// # Safety
/// `x` points to 16 readable `f32`; AVX2 present.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn finite16(x: *const f32) -> bool {
    let inf = _mm256_set1_ps(f32::INFINITY);
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    // SAFETY: 16 floats readable (caller).
    let (a, b) = unsafe { (_mm256_loadu_ps(x), _mm256_loadu_ps(x.add(8))) };
    let ok = _mm256_and_ps(
        _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_and_ps(a, abs), inf),
        _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_and_ps(b, abs), inf),
    );
    _mm256_movemask_ps(ok) == 0xff
}

/// 8 codes for 8 `f32` values.
///
/// # Safety
/// `x` points to 8 readable `f32`; AVX2 present.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn codes8(x: *const f32, p: &Consts) -> __m256i {
    // SAFETY: 8 floats readable (caller).
    let v = unsafe { _mm256_loadu_ps(x) };
    let a = codes4(_mm256_castps256_ps128(v), p);
    let b = codes4(_mm256_extractf128_ps::<1>(v), p);
    _mm256_set_m128i(b, a)
}

/// 16 codes in `f32` lanes, exactly `clamp(round_ties_even(x / scale) + zp, lo, hi)`, or
/// `None` when one of the 16 values is not finite.
///
/// The candidate `r = round(x · (1/scale))` in `f32` is off from the quotient by at most
/// `2^-14` for quotients up to `2^9` (larger ones are clamped regardless), so it is the right
/// integer unless the candidate lies within `2^-13` of a half-integer. One comparison per
/// vector, `|t - r| <= 0.5 - 2^-13`, passes every lane that is finite and off a tie (it fails
/// for NaN, and for infinities, where `t - r` is NaN). Only when a lane fails does the slow
/// branch run: the finiteness check, then the correction by the exact signs of
/// `x - (r ± 0.5)·scale`: each is one `vfmadd`, exact before its single rounding, so its sign
/// is the sign of the exact value when the scale is in `[2^-100, 2^100]`; ties go to even.
///
/// # Safety
/// `x` points to 16 readable `f32`; AVX2 and FMA present.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn codes16_f32(x: *const f32, p: &Consts32) -> Option<(__m256i, __m256i)> {
    // SAFETY: 16 floats readable (caller).
    let (x0, x1) = unsafe { (_mm256_loadu_ps(x), _mm256_loadu_ps(x.add(8))) };
    let (t0, t1) = (_mm256_mul_ps(x0, p.inv), _mm256_mul_ps(x1, p.inv));
    let mut r0 = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t0);
    let mut r1 = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t1);
    let ok0 = _mm256_cmp_ps::<_CMP_LE_OQ>(_mm256_andnot_ps(p.sign, _mm256_sub_ps(t0, r0)), p.limit);
    let ok1 = _mm256_cmp_ps::<_CMP_LE_OQ>(_mm256_andnot_ps(p.sign, _mm256_sub_ps(t1, r1)), p.limit);
    if _mm256_movemask_ps(_mm256_and_ps(ok0, ok1)) != 0xff {
        // SAFETY: as above.
        if !unsafe { finite16(x) } {
            return None;
        }
        // Keep the candidates small for the exact FMA signs; anything beyond these bounds is
        // clamped at the end anyway.
        r0 = correct(x0, _mm256_min_ps(_mm256_max_ps(r0, p.rmin), p.rmax), p);
        r1 = correct(x1, _mm256_min_ps(_mm256_max_ps(r1, p.rmin), p.rmax), p);
    }
    let c0 = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r0, p.zp), p.lo), p.hi);
    let c1 = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r1, p.zp), p.lo), p.hi);
    Some((_mm256_cvtps_epi32(c0), _mm256_cvtps_epi32(c1)))
}

/// The exact rounding of `x / scale` given a candidate `r` within one of it.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn correct(x: __m256, r: __m256, p: &Consts32) -> __m256 {
    let up = _mm256_fmadd_ps(_mm256_sub_ps(p.neg_half, r), p.scale, x); // x - (r + 0.5)·s
    let dn = _mm256_fmadd_ps(_mm256_sub_ps(p.half, r), p.scale, x); // x - (r - 0.5)·s
    let odd = _mm256_castsi256_ps(_mm256_cmpeq_epi32(
        _mm256_and_si256(_mm256_cvtps_epi32(r), _mm256_set1_epi32(1)),
        _mm256_set1_epi32(1),
    ));
    let zero = _mm256_setzero_ps();
    let inc =
        _mm256_or_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(up, zero), _mm256_and_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(up, zero), odd));
    let dec =
        _mm256_or_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(dn, zero), _mm256_and_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(dn, zero), odd));
    let one = _mm256_set1_ps(1.0);
    _mm256_sub_ps(_mm256_add_ps(r, _mm256_and_ps(inc, one)), _mm256_and_ps(dec, one))
}

/// Broadcast constants of the `f32`-lane path.
struct Consts32 {
    scale: __m256,
    inv: __m256,
    zp: __m256,
    lo: __m256,
    hi: __m256,
    rmin: __m256,
    rmax: __m256,
    half: __m256,
    neg_half: __m256,
    sign: __m256,
    /// `0.5 - 2^-13`: candidates farther than this from the product are near a tie.
    limit: __m256,
}

macro_rules! quantize_fn {
    ($name:ident, $t:ty, $pack:ident) => {
        /// `Err(i)`: `x[i]` is the first NaN or infinity (checked in the same pass).
        ///
        /// # Safety
        /// AVX2 and FMA present; `out.len() == x.len()`.
        #[target_feature(enable = "avx2,fma")]
        #[expect(clippy::as_conversions, reason = "code bounds (|v| <= 255) to f32: exact")]
        pub(crate) unsafe fn $name(
            x: &[f32],
            scale: f64,
            zp: i64,
            lo: i64,
            hi: i64,
            out: &mut [$t],
        ) -> Result<(), usize> {
            use quant_traits::cast::i64_to_f64;
            // f32 lanes when the scale keeps the FMA signs exact; f64 lanes otherwise.
            let narrow = (quant_traits::cast::pow2(-100)..=quant_traits::cast::pow2(100)).contains(&scale);
            let p = Consts {
                scale: _mm256_set1_pd(scale),
                inv: _mm256_set1_pd(1.0 / scale),
                zp: _mm256_set1_pd(i64_to_f64(zp)),
                lo: _mm256_set1_pd(i64_to_f64(lo)),
                hi: _mm256_set1_pd(i64_to_f64(hi)),
                sign: _mm256_set1_pd(-0.0),
                half: _mm256_set1_pd(0.5),
                eps: _mm256_set1_pd(1.0 / 4_294_967_296.0), // 2^-32
            };
            let scale32 = f32::from_f64_nearest(scale); // exact: the scale is an f32
            let (zp32, lo32, hi32) = (i64_to_f64(zp) as f32, i64_to_f64(lo) as f32, i64_to_f64(hi) as f32);
            let q = Consts32 {
                scale: _mm256_set1_ps(scale32),
                inv: _mm256_set1_ps(1.0 / scale32),
                zp: _mm256_set1_ps(zp32),
                lo: _mm256_set1_ps(lo32),
                hi: _mm256_set1_ps(hi32),
                rmin: _mm256_set1_ps(lo32 - zp32 - 1.0),
                rmax: _mm256_set1_ps(hi32 - zp32 + 1.0),
                half: _mm256_set1_ps(0.5),
                neg_half: _mm256_set1_ps(-0.5),
                sign: _mm256_set1_ps(-0.0),
                limit: _mm256_set1_ps(0.5 - 1.0 / 8192.0), // exact in f32
            };
            let codes16 = |p16: *const f32| {
                // SAFETY: `p16` points to 16 readable floats (`quantize_loop`'s contract);
                // AVX2 and FMA present (this function's contract).
                unsafe {
                    let (c0, c1) = if narrow {
                        codes16_f32(p16, &q)?
                    } else if finite16(p16) {
                        (codes8(p16, &p), codes8(p16.add(8), &p))
                    } else {
                        return None;
                    };
                    // i32 -> i16 (in range, no saturation), fix the lane interleave, -> 8-bit.
                    let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(c0, c1));
                    Some($pack(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w)))
                }
            };
            // SAFETY: `$t` is a one-byte code; lengths are equal (caller).
            unsafe { super::quantize_loop(x, out, (scale, zp, lo, hi), codes16) }
        }
    };
}

quantize_fn!(quantize_f32_i8, i8, _mm_packs_epi16);
quantize_fn!(quantize_f32_u8, u8, _mm_packus_epi16);

macro_rules! dequantize_fn {
    ($name:ident, $t:ty, $widen:ident) => {
        /// `f32` lanes give the scalar path's bits: `q - zp` is an integer below `2^10`, so
        /// `(q - zp) * scale` is a single correctly rounded `f32` product, the same as the
        /// exact `f64` product rounded once to `f32`; an overflow to infinity is clamped to
        /// `±f32::MAX`, which is where the scalar path saturates.
        ///
        /// # Safety
        /// AVX2 present; `out.len() == codes.len()`.
        #[target_feature(enable = "avx2")]
        pub(crate) unsafe fn $name(codes: &[$t], scale: f64, zp: i64, out: &mut [f32]) {
            let scale32 = f32::from_f64_nearest(scale); // exact: the scale is an f32
            let s = _mm256_set1_ps(scale32);
            // 8-bit zero points fit i32 (validated by QuantParams).
            let z = _mm256_set1_epi32(quant_traits::cast::narrow::to_i32(zp));
            let max = _mm256_set1_ps(f32::MAX);
            let min = _mm256_set1_ps(f32::MIN);
            let step = |c: *const $t, o: *mut f32, stream: bool| {
                // SAFETY: 16 codes readable at `c`, 16 floats writable at `o`, 32-byte aligned
                // when streaming (`dequantize_loop`'s contract); AVX2 present.
                unsafe {
                    let raw = _mm_loadu_si128(c.cast());
                    let lo = _mm256_sub_epi32($widen(raw), z);
                    let hi = _mm256_sub_epi32($widen(_mm_unpackhi_epi64(raw, raw)), z);
                    let lo = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(lo), s), min), max);
                    let hi = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(hi), s), min), max);
                    if stream {
                        _mm256_stream_ps(o, lo);
                        _mm256_stream_ps(o.add(8), hi);
                    } else {
                        _mm256_storeu_ps(o, lo);
                        _mm256_storeu_ps(o.add(8), hi);
                    }
                }
            };
            // SAFETY: lengths are equal (caller).
            unsafe { super::dequantize_loop(codes, out, (scale32, zp), 32, step) }
        }
    };
}

dequantize_fn!(dequantize_i8_f32, i8, _mm256_cvtepi8_epi32);
dequantize_fn!(dequantize_u8_f32, u8, _mm256_cvtepu8_epi32);

/// The AVX2 tier's fast paths.
impl CoreKernels for Avx2 {
    const CODE: &'static str = "avx2";

    unsafe fn quantize_f32_i8(
        x: &[f32],
        scale: f64,
        zp: i64,
        lo: i64,
        hi: i64,
        out: &mut [i8],
    ) -> Option<Result<(), usize>> {
        // SAFETY: the tier has AVX2 and FMA (caller); lengths are equal (caller).
        Some(unsafe { quantize_f32_i8(x, scale, zp, lo, hi, out) })
    }

    unsafe fn quantize_f32_u8(
        x: &[f32],
        scale: f64,
        zp: i64,
        lo: i64,
        hi: i64,
        out: &mut [u8],
    ) -> Option<Result<(), usize>> {
        // SAFETY: as above.
        Some(unsafe { quantize_f32_u8(x, scale, zp, lo, hi, out) })
    }

    unsafe fn dequantize_i8_f32(codes: &[i8], scale: f64, zp: i64, out: &mut [f32]) -> bool {
        // SAFETY: as above.
        unsafe { dequantize_i8_f32(codes, scale, zp, out) };
        true
    }

    unsafe fn dequantize_u8_f32(codes: &[u8], scale: f64, zp: i64, out: &mut [f32]) -> bool {
        // SAFETY: as above.
        unsafe { dequantize_u8_f32(codes, scale, zp, out) };
        true
    }

    unsafe fn qkx2_search<const N: usize>(
        s: Search,
        x: &[V; N],
        w: &[V; N],
        l: &mut [[u8; LANES]; N],
    ) -> Option<(V, V)> {
        // SAFETY: the tier has AVX2 (caller).
        Some(unsafe { search_avx2(s, x, w, l) })
    }
}

// The AVX-VNNI tier has no quantizer of its own: it runs the AVX2 code (its CPUs have AVX2
// and FMA).
forward_core_kernels!(AvxVnni => Avx2);

/// `i` as ggml's `(float)i` for the search's small integers (exact).
#[inline(always)]
#[expect(clippy::as_conversions, reason = "small integers (<= 255) to f32 and codes (0..=63) to bytes, as ggml")]
fn f(i: i32) -> f32 {
    i as f32
}

/// ggml's `make_qkx2_quants` in eight lanes (`crate::ggml::lanes::search`) in AVX2 intrinsics,
/// the same operations on the same lanes in the same order.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
#[expect(clippy::as_conversions, reason = "small integers (<= 255) to f32 and codes (0..=63) to bytes, as ggml")]
pub(super) unsafe fn search_avx2<const N: usize>(
    s: Search,
    x: &[V; N],
    w: &[V; N],
    l: &mut [[u8; LANES]; N],
) -> (V, V) {
    // SAFETY: a `V` is eight `f32`s, what an unaligned 256-bit load reads.
    let load = |v: &V| unsafe { _mm256_loadu_ps(v.as_ptr()) };
    let store = |v: __m256| {
        let mut out = [0.0f32; LANES];
        // SAFETY: `out` is eight `f32`s, what an unaligned 256-bit store writes.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
        out
    };
    let magic = _mm256_set1_ps(12_582_912.0);
    let low = _mm256_set1_epi32(0x007f_ffff);
    let half = _mm256_set1_epi32(0x0040_0000);
    let (zero_i, nmax_i) = (_mm256_setzero_si256(), _mm256_set1_epi32(s.nmax));
    let zero = _mm256_setzero_ps();
    let sign = _mm256_set1_ps(-0.0);
    // nearest_int(v) clamped to 0..=nmax, as f32 (see `code`).
    let code = |v: __m256| {
        let bits = _mm256_and_si256(_mm256_castps_si256(_mm256_add_ps(v, magic)), low);
        let q = _mm256_sub_epi32(bits, half);
        _mm256_cvtepi32_ps(_mm256_min_epi32(_mm256_max_epi32(q, zero_i), nmax_i))
    };
    let err = |diff: __m256| if s.use_mad { _mm256_andnot_ps(sign, diff) } else { _mm256_mul_ps(diff, diff) };
    let (mut min, mut max) = (load(&x[0]), load(&x[0]));
    let mut sum_w = load(&w[0]);
    let mut sum_x = _mm256_mul_ps(sum_w, min);
    for i in 1..N {
        let (xi, wi) = (load(&x[i]), load(&w[i]));
        // min_ps(a, b) is `a < b ? a : b`, the scalar `if x < min { min = x }`.
        min = _mm256_min_ps(xi, min);
        max = _mm256_max_ps(xi, max);
        sum_w = _mm256_add_ps(sum_w, wi);
        sum_x = _mm256_add_ps(sum_x, _mm256_mul_ps(wi, xi));
    }
    min = _mm256_blendv_ps(min, zero, _mm256_cmp_ps::<_CMP_GT_OQ>(min, zero));
    let mut iscale = _mm256_div_ps(_mm256_set1_ps(f(s.nmax)), _mm256_sub_ps(max, min));
    let mut scale = _mm256_div_ps(_mm256_set1_ps(1.0), iscale);
    let mut best = zero;
    for i in 0..N {
        let (xi, wi) = (load(&x[i]), load(&w[i]));
        let q = code(_mm256_mul_ps(iscale, _mm256_sub_ps(xi, min)));
        let diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale, q), min), xi);
        best = _mm256_add_ps(best, _mm256_mul_ps(wi, err(diff)));
    }
    let (mut win_iscale, mut win_min) = (iscale, min);
    let mut laux = [zero; N];
    for is in s.candidates() {
        iscale = _mm256_div_ps(_mm256_set1_ps(s.rmin + s.rdelta * f(is) + f(s.nmax)), _mm256_sub_ps(max, min));
        let (mut sum_l, mut sum_l2, mut sum_xl) = (zero, zero, zero);
        for i in 0..N {
            let (xi, wi) = (load(&x[i]), load(&w[i]));
            let q = code(_mm256_mul_ps(iscale, _mm256_sub_ps(xi, min)));
            laux[i] = q;
            let wq = _mm256_mul_ps(wi, q);
            sum_l = _mm256_add_ps(sum_l, wq);
            sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wq, q));
            sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wq, xi));
        }
        let d = _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_l2), _mm256_mul_ps(sum_l, sum_l));
        let ok = _mm256_cmp_ps::<_CMP_GT_OQ>(d, zero);
        let ts = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_w, sum_xl), _mm256_mul_ps(sum_x, sum_l)), d);
        let tm = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_l2, sum_x), _mm256_mul_ps(sum_l, sum_xl)), d);
        let clamp = _mm256_cmp_ps::<_CMP_GT_OQ>(tm, zero);
        let this_min = _mm256_blendv_ps(tm, zero, clamp);
        let this_scale = _mm256_blendv_ps(ts, _mm256_div_ps(sum_xl, sum_l2), clamp);
        let mut cur = zero;
        for i in 0..N {
            let (xi, wi) = (load(&x[i]), load(&w[i]));
            let diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(this_scale, laux[i]), this_min), xi);
            cur = _mm256_add_ps(cur, _mm256_mul_ps(wi, err(diff)));
        }
        let win = _mm256_and_ps(ok, _mm256_cmp_ps::<_CMP_LT_OQ>(cur, best));
        best = _mm256_blendv_ps(best, cur, win);
        scale = _mm256_blendv_ps(scale, this_scale, win);
        win_iscale = _mm256_blendv_ps(win_iscale, iscale, win);
        win_min = _mm256_blendv_ps(win_min, min, win);
        min = _mm256_blendv_ps(min, this_min, win);
    }
    for i in 0..N {
        let q = store(code(_mm256_mul_ps(win_iscale, _mm256_sub_ps(load(&x[i]), win_min))));
        l[i] = q.map(|v| v as u8);
    }
    (store(scale), store(_mm256_xor_ps(min, sign)))
}
