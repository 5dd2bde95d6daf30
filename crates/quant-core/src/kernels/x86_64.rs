//! AVX2 quantize/dequantize, 8 elements per step, in `f64` lanes like the scalar path.

use core::arch::x86_64::*;

use quant_traits::QuantFloat;

use crate::quantize::{dequantize_code, quantize_value};
use crate::range::first_non_finite;

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

macro_rules! quantize_fn {
    ($name:ident, $t:ty, $pack:ident) => {
        /// `Err(i)`: `x[i]` is the first NaN or infinity (checked in the same pass).
        ///
        /// # Safety
        /// AVX2 present; `out.len() == x.len()`.
        #[target_feature(enable = "avx2")]
        pub(super) unsafe fn $name(
            x: &[f32],
            scale: f64,
            zp: i64,
            lo: i64,
            hi: i64,
            out: &mut [$t],
        ) -> Result<(), usize> {
            let n = x.len().min(out.len());
            use quant_traits::cast::i64_to_f64;
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
            let mut i = 0;
            while i + 16 <= n {
                // SAFETY: i + 16 <= n: 16 floats readable.
                if !unsafe { finite16(x.as_ptr().add(i)) } {
                    return Err(i + first_non_finite(&x[i..i + 16]).unwrap_or(0));
                }
                // SAFETY: i + 16 <= n: 16 floats readable, 16 bytes writable.
                unsafe {
                    let c0 = codes8(x.as_ptr().add(i), &p);
                    let c1 = codes8(x.as_ptr().add(i + 8), &p);
                    // i32 -> i16 (in range, no saturation), fix the lane interleave, -> 8-bit.
                    let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(c0, c1));
                    let bytes = $pack(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
                    _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), bytes);
                }
                i += 16;
            }
            if let Some(j) = first_non_finite(&x[i..n]) {
                return Err(i + j);
            }
            for (o, v) in out[i..n].iter_mut().zip(&x[i..n]) {
                *o = <$t as quant_traits::Storage>::pack(&[quantize_value(f64::from(*v), scale, zp, lo, hi)]);
            }
            Ok(())
        }
    };
}

quantize_fn!(quantize_f32_i8, i8, _mm_packs_epi16);
quantize_fn!(quantize_f32_u8, u8, _mm_packus_epi16);

macro_rules! dequantize_fn {
    ($name:ident, $t:ty, $widen:ident) => {
        /// # Safety
        /// AVX2 present; `out.len() == codes.len()`.
        #[target_feature(enable = "avx2")]
        pub(super) unsafe fn $name(codes: &[$t], scale: f64, zp: i64, out: &mut [f32]) {
            let n = codes.len().min(out.len());
            let s = _mm256_set1_pd(scale);
            // 8-bit zero points fit i32 (validated by QuantParams).
            let z = _mm256_set1_epi32(quant_traits::cast::narrow::to_i32(zp));
            let max = _mm256_set1_pd(f64::from(f32::MAX));
            let min = _mm256_set1_pd(-f64::from(f32::MAX));
            let mut i = 0;
            while i + 8 <= n {
                // SAFETY: i + 8 <= n: 8 codes readable, 8 floats writable.
                unsafe {
                    let q = $widen(_mm_loadl_epi64(codes.as_ptr().add(i).cast()));
                    let d = _mm256_sub_epi32(q, z);
                    let lo = _mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_castsi256_si128(d)), s);
                    let hi = _mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_extracti128_si256::<1>(d)), s);
                    let lo = _mm256_cvtpd_ps(_mm256_min_pd(_mm256_max_pd(lo, min), max));
                    let hi = _mm256_cvtpd_ps(_mm256_min_pd(_mm256_max_pd(hi, min), max));
                    _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_set_m128(hi, lo));
                }
                i += 8;
            }
            for (o, &q) in out[i..n].iter_mut().zip(&codes[i..n]) {
                *o = dequantize_code(i64::from(q), f32::from_f64_nearest(scale), zp);
            }
        }
    };
}

dequantize_fn!(dequantize_i8_f32, i8, _mm256_cvtepi8_epi32);
dequantize_fn!(dequantize_u8_f32, u8, _mm256_cvtepu8_epi32);
