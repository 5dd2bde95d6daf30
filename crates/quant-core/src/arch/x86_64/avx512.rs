//! AVX-512 quantize/dequantize, 16 `f32` lanes per vector, bit-identical to the scalar path.
//!
//! The same arithmetic as the AVX2 code's `f32`-lane path (`avx2.rs`, where the argument that
//! the bits agree is made in full), with masks in place of blends:
//! * quantize: the candidate `r = round(x · (1/scale))` is the right integer unless it lies
//!   within `2^-13` of a half-integer; one comparison per vector finds such lanes and the
//!   non-finite ones together; only then does the slow branch check finiteness and correct by
//!   the exact signs of `x - (r ± 0.5)·scale` (one FMA each, exact before its rounding for
//!   scales in `[2^-100, 2^100]`). Scales outside that range run the AVX2 code's `f64` lanes.
//! * dequantize: `(q - zp) * scale` in `f32` is one correctly rounded product of an integer
//!   below `2^10` and an `f32`, which equals the exact product rounded once; overflow is
//!   clamped to `±f32::MAX` as the scalar path saturates.

use core::arch::x86_64::*;

use quant_traits::cpu::{Amx, Avx2, Avx512Vnni};
use quant_traits::QuantFloat;

use super::super::lanes::{Search, LANES, V};
use super::super::CoreKernels;

/// Broadcast constants of one quantization.
struct Consts {
    scale: __m512,
    inv: __m512,
    zp: __m512,
    lo: __m512,
    hi: __m512,
    rmin: __m512,
    rmax: __m512,
    half: __m512,
    neg_half: __m512,
    /// `0.5 - 2^-13`: candidates farther than this from the product are near a tie.
    limit: __m512,
}

/// 16 codes in `i32` lanes, exactly `clamp(round_ties_even(x / scale) + zp, lo, hi)`, or
/// `None` when one of the 16 values is not finite.
///
/// # Safety
/// `x` points to 16 readable `f32`; AVX-512 F present.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,fma,avx2")]
unsafe fn codes16(x: *const f32, p: &Consts) -> Option<__m512i> {
    // SAFETY: 16 floats readable (caller).
    let v = unsafe { _mm512_loadu_ps(x) };
    let t = _mm512_mul_ps(v, p.inv);
    let mut r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
    // |t - r| <= 0.5 - 2^-13 passes every lane that is finite and off a tie; NaN fails
    // (unordered), and so does an infinity (t - r is NaN).
    let ok = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(_mm512_abs_ps(_mm512_sub_ps(t, r)), p.limit);
    if ok != 0xffff {
        let finite = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_abs_ps(v), _mm512_set1_ps(f32::INFINITY));
        if finite != 0xffff {
            return None;
        }
        // Keep the candidates small for the exact FMA signs; anything beyond these bounds is
        // clamped at the end anyway.
        r = correct(v, _mm512_min_ps(_mm512_max_ps(r, p.rmin), p.rmax), p);
    }
    let c = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(r, p.zp), p.lo), p.hi);
    Some(_mm512_cvtps_epi32(c))
}

/// The exact rounding of `x / scale` given a candidate `r` within one of it, ties to even.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,fma,avx2")]
fn correct(x: __m512, r: __m512, p: &Consts) -> __m512 {
    let up = _mm512_fmadd_ps(_mm512_sub_ps(p.neg_half, r), p.scale, x); // x - (r + 0.5)·s
    let dn = _mm512_fmadd_ps(_mm512_sub_ps(p.half, r), p.scale, x); // x - (r - 0.5)·s
    let odd = _mm512_test_epi32_mask(_mm512_cvtps_epi32(r), _mm512_set1_epi32(1));
    let zero = _mm512_setzero_ps();
    let inc = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(up, zero) | (_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(up, zero) & odd);
    let dec = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(dn, zero) | (_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(dn, zero) & odd);
    // At most one of the two holds in a lane (x cannot be both above r + 0.5 and below r - 0.5).
    let one = _mm512_set1_ps(1.0);
    let r = _mm512_mask_add_ps(r, inc, r, one);
    _mm512_mask_sub_ps(r, dec, r, one)
}

macro_rules! quantize_fn {
    ($name:ident, $t:ty, $avx2:ident) => {
        /// `Err(i)`: `x[i]` is the first NaN or infinity (checked in the same pass).
        ///
        /// # Safety
        /// AVX-512 F/BW, AVX2 and FMA present; `out.len() == x.len()`.
        #[target_feature(enable = "avx512f,avx512bw,fma,avx2")]
        #[expect(clippy::as_conversions, reason = "i8/u8 code bounds (|v| <= 255) to f32, exact")]
        pub(crate) unsafe fn $name(
            x: &[f32],
            scale: f64,
            zp: i64,
            lo: i64,
            hi: i64,
            out: &mut [$t],
        ) -> Result<(), usize> {
            use quant_traits::cast::i64_to_f64;
            // f32 lanes when the scale keeps the FMA signs exact; the AVX2 code's f64 lanes
            // otherwise.
            if !(quant_traits::cast::pow2(-100)..=quant_traits::cast::pow2(100)).contains(&scale) {
                // SAFETY: AVX2 and FMA present (the AVX-512 tier includes them); same contract.
                return unsafe { super::avx2::$avx2(x, scale, zp, lo, hi, out) };
            }
            let scale32 = f32::from_f64_nearest(scale); // exact: the scale is an f32
            let (zp32, lo32, hi32) = (i64_to_f64(zp) as f32, i64_to_f64(lo) as f32, i64_to_f64(hi) as f32);
            let p = Consts {
                scale: _mm512_set1_ps(scale32),
                inv: _mm512_set1_ps(1.0 / scale32),
                zp: _mm512_set1_ps(zp32),
                lo: _mm512_set1_ps(lo32),
                hi: _mm512_set1_ps(hi32),
                rmin: _mm512_set1_ps(lo32 - zp32 - 1.0),
                rmax: _mm512_set1_ps(hi32 - zp32 + 1.0),
                half: _mm512_set1_ps(0.5),
                neg_half: _mm512_set1_ps(-0.5),
                limit: _mm512_set1_ps(0.5 - 1.0 / 8192.0), // exact in f32
            };
            let codes16 = |p16: *const f32| {
                // SAFETY: `p16` points to 16 readable floats (`quantize_loop`'s contract);
                // AVX-512 F present (this function's contract). Every lane is already clamped
                // into the type's range: truncating to bytes is exact.
                unsafe { codes16(p16, &p).map(|c| _mm512_cvtepi32_epi8(c)) }
            };
            // SAFETY: `$t` is a one-byte code; lengths are equal (caller).
            unsafe { super::quantize_loop(x, out, (scale, zp, lo, hi), codes16) }
        }
    };
}

quantize_fn!(quantize_f32_i8, i8, quantize_f32_i8);
quantize_fn!(quantize_f32_u8, u8, quantize_f32_u8);

macro_rules! dequantize_fn {
    ($name:ident, $t:ty, $widen:ident) => {
        /// # Safety
        /// AVX-512 F present; `out.len() == codes.len()`.
        #[target_feature(enable = "avx512f,avx512bw,avx2")]
        pub(crate) unsafe fn $name(codes: &[$t], scale: f64, zp: i64, out: &mut [f32]) {
            let scale32 = f32::from_f64_nearest(scale); // exact: the scale is an f32
            let s = _mm512_set1_ps(scale32);
            // 8-bit zero points fit i32 (validated by QuantParams).
            let z = _mm512_set1_epi32(quant_traits::cast::narrow::to_i32(zp));
            let max = _mm512_set1_ps(f32::MAX);
            let min = _mm512_set1_ps(f32::MIN);
            let step = |c: *const $t, o: *mut f32, stream: bool| {
                // SAFETY: 16 codes readable at `c`, 16 floats writable at `o`, 64-byte aligned
                // when streaming (`dequantize_loop`'s contract); AVX-512 F present.
                unsafe {
                    let v = _mm512_sub_epi32($widen(_mm_loadu_si128(c.cast())), z);
                    let v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(v), s), min), max);
                    if stream {
                        _mm512_stream_ps(o, v);
                    } else {
                        _mm512_storeu_ps(o, v);
                    }
                }
            };
            // SAFETY: lengths are equal (caller).
            unsafe { super::dequantize_loop(codes, out, (scale32, zp), 64, step) }
        }
    };
}

dequantize_fn!(dequantize_i8_f32, i8, _mm512_cvtepi8_epi32);
dequantize_fn!(dequantize_u8_f32, u8, _mm512_cvtepu8_epi32);

/// The AVX-512 tier's fast paths (the k-quant search runs the AVX2 code).
impl CoreKernels for Avx512Vnni {
    const CODE: &'static str = "avx512";

    unsafe fn quantize_f32_i8(
        x: &[f32],
        scale: f64,
        zp: i64,
        lo: i64,
        hi: i64,
        out: &mut [i8],
    ) -> Option<Result<(), usize>> {
        // SAFETY: the tier has AVX-512 F/BW (caller); lengths are equal (caller).
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
        // SAFETY: the tier includes AVX2 (caller).
        unsafe { Avx2::qkx2_search(s, x, w, l) }
    }
}

// The AMX tier's quantizers are the AVX-512 ones (tiles do not quantize).
forward_core_kernels!(Amx => Avx512Vnni);
