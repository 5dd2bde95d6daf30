//! x86-64 quantize/dequantize kernels, one file per tier, and the loop they share.

/// Implements `CoreKernels` for a tier with no quantizer of its own by running another tier's
/// code: `forward_core_kernels!(Tier => Base)`, where every CPU with `Tier` has all the
/// features `Base`'s code needs (so `Tier`'s callers meet `Base`'s safety contract).
macro_rules! forward_core_kernels {
    ($tier:ty => $base:ty) => {
        impl $crate::arch::CoreKernels for $tier {
            const CODE: &'static str = <$base as $crate::arch::CoreKernels>::CODE;

            unsafe fn quantize_f32_i8(
                x: &[f32],
                scale: f64,
                zp: i64,
                lo: i64,
                hi: i64,
                out: &mut [i8],
            ) -> Option<Result<(), usize>> {
                // SAFETY: forwarded (the tier includes the base tier's features).
                unsafe { <$base as $crate::arch::CoreKernels>::quantize_f32_i8(x, scale, zp, lo, hi, out) }
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
                unsafe { <$base as $crate::arch::CoreKernels>::quantize_f32_u8(x, scale, zp, lo, hi, out) }
            }

            unsafe fn dequantize_i8_f32(codes: &[i8], scale: f64, zp: i64, out: &mut [f32]) -> bool {
                // SAFETY: as above.
                unsafe { <$base as $crate::arch::CoreKernels>::dequantize_i8_f32(codes, scale, zp, out) }
            }

            unsafe fn dequantize_u8_f32(codes: &[u8], scale: f64, zp: i64, out: &mut [f32]) -> bool {
                // SAFETY: as above.
                unsafe { <$base as $crate::arch::CoreKernels>::dequantize_u8_f32(codes, scale, zp, out) }
            }

            unsafe fn qkx2_search<const N: usize>(
                s: $crate::arch::lanes::Search,
                x: &[$crate::arch::lanes::V; N],
                w: &[$crate::arch::lanes::V; N],
                l: &mut [[u8; $crate::arch::lanes::LANES]; N],
            ) -> Option<($crate::arch::lanes::V, $crate::arch::lanes::V)> {
                // SAFETY: as above.
                unsafe { <$base as $crate::arch::CoreKernels>::qkx2_search(s, x, w, l) }
            }
        }
    };
}

pub(crate) mod avx2;
pub(crate) mod avx512;

use core::arch::x86_64::{__m128i, _mm_prefetch, _mm_sfence, _mm_storeu_si128, _mm_stream_si128, _MM_HINT_T0};

use quant_traits::Storage;

use crate::scalar::{dequantize_code, first_non_finite, quantize_value};

/// Outputs of at least this many elements (16 MiB of `f32` when dequantizing, 4 MiB of codes
/// when quantizing) are written with non-temporal stores.
pub(crate) const STREAM_MIN: usize = 1 << 22;

/// How far ahead of the current 16 floats the quantize loop asks for its input (4 KiB, about
/// a page). When `x` comes from memory the hardware prefetcher alone does not keep one core's
/// loop fed: without the hint it runs at about three quarters of the rate it reaches with it.
const PREFETCH_AHEAD: usize = 1024;

/// The loop of the 8-bit quantize kernels: `codes16` turns 16 floats into 16 code bytes (or
/// `None` when one of them is not finite), the scalar reference does the elements before a
/// 16-byte boundary (when streaming) and the tail. Large outputs bypass the caches: no read
/// for ownership of the output lines; non-temporal stores need 16-byte alignment, hence the
/// scalar prologue. `Err(i)`: `x[i]` is the first NaN or infinity.
///
/// # Safety
/// `T` is `i8` or `u8` (one code per byte); `out.len() == x.len()`; `codes16` may be called
/// with a pointer to any 16 consecutive floats of `x`.
#[inline(always)]
pub(crate) unsafe fn quantize_loop<T: Storage>(
    x: &[f32],
    out: &mut [T],
    (scale, zp, lo, hi): (f64, i64, i64, i64),
    mut codes16: impl FnMut(*const f32) -> Option<__m128i>,
) -> Result<(), usize> {
    let n = x.len().min(out.len());
    let stream = n >= STREAM_MIN;
    // Elements `from..to` one at a time (the prologue and the tail).
    let scalar = |from: usize, to: usize, out: &mut [T]| -> Result<(), usize> {
        if let Some(j) = first_non_finite(&x[from..to]) {
            return Err(from + j);
        }
        for (o, v) in out[from..to].iter_mut().zip(&x[from..to]) {
            *o = T::pack(&[quantize_value(f64::from(*v), scale, zp, lo, hi)]);
        }
        Ok(())
    };
    let mut i = if stream { out.as_ptr().align_offset(16).min(n) } else { 0 };
    scalar(0, i, out)?;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n: 16 floats readable, 16 one-byte codes writable; when streaming,
        // out[i] is 16-byte aligned (aligned start, steps of 16 bytes).
        unsafe {
            // A hint, never dereferenced: an address past the end is harmless.
            _mm_prefetch::<_MM_HINT_T0>(x.as_ptr().wrapping_add(i + PREFETCH_AHEAD).cast());
            let Some(bytes) = codes16(x.as_ptr().add(i)) else {
                if stream {
                    _mm_sfence();
                }
                return Err(i + first_non_finite(&x[i..i + 16]).unwrap_or(0));
            };
            if stream {
                _mm_stream_si128(out.as_mut_ptr().add(i).cast(), bytes);
            } else {
                _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), bytes);
            }
        }
        i += 16;
    }
    if stream {
        // Order the non-temporal stores before anything the caller does next.
        // SAFETY: SSE is part of the x86-64 baseline.
        unsafe { _mm_sfence() };
    }
    scalar(i, n, out)
}

/// The loop of the 8-bit dequantize kernels: `step(codes, out, stream)` turns the 16 codes at
/// `codes` into 16 floats at `out` (with non-temporal stores when `stream`); the scalar
/// reference does the elements before an `align`-byte boundary of the output (when streaming:
/// outputs of at least [`STREAM_MIN`] elements bypass the caches) and the tail.
///
/// # Safety
/// `out.len() == codes.len()`; `step` may be called with pointers to any 16 consecutive codes
/// and the 16 floats they become, the floats `align`-byte aligned when `stream`.
#[inline(always)]
pub(crate) unsafe fn dequantize_loop<T: Copy + Into<i64>>(
    codes: &[T],
    out: &mut [f32],
    (scale, zp): (f32, i64),
    align: usize,
    mut step: impl FnMut(*const T, *mut f32, bool),
) {
    let n = codes.len().min(out.len());
    let stream = n >= STREAM_MIN;
    let mut i = if stream { out.as_ptr().align_offset(align).min(n) } else { 0 };
    for (o, &q) in out[..i].iter_mut().zip(&codes[..i]) {
        *o = dequantize_code(q.into(), scale, zp);
    }
    while i + 16 <= n {
        // SAFETY: i + 16 <= n: 16 codes readable, 16 floats writable; when streaming, out[i]
        // is `align`-byte aligned (aligned start, steps of 64 bytes, a multiple of `align`).
        step(unsafe { codes.as_ptr().add(i) }, unsafe { out.as_mut_ptr().add(i) }, stream);
        i += 16;
    }
    if stream {
        // Order the non-temporal stores before anything the caller does next.
        // SAFETY: SSE is part of the x86-64 baseline.
        unsafe { _mm_sfence() };
    }
    for (o, &q) in out[i..n].iter_mut().zip(&codes[i..n]) {
        *o = dequantize_code(q.into(), scale, zp);
    }
}
