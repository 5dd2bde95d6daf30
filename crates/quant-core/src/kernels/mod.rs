//! Fast paths for the hot loops, bit-identical to the scalar reference in `quantize`.
//!
//! Today: `f32 -> i8/u8` quantization and `i8/u8 -> f32` dequantization with AVX2 and FMA
//! (x86-64),
//! chosen at run time (with `std`) and cached; every other type pair, and every CPU without
//! AVX2, takes the scalar path. `QUANT_KERNEL=portable` in the environment forces the scalar
//! path (the tests run both ways and compare).
//!
//! The fast paths do the same arithmetic as the scalar one, lane by lane: widen to `f64`,
//! divide by the scale (a true division, not a reciprocal), round half to even, add the zero
//! point, clamp; and for dequantization `(q - zp) * scale` in `f64`, clamped to `f32`'s finite
//! range, rounded once to `f32`. So they produce the same bits.

#[cfg(target_arch = "x86_64")]
mod x86_64;

use core::any::TypeId;

use quant_traits::{QuantFloat, Storage};

/// Which implementation runs: `"avx2"` or `"portable"`.
#[must_use]
pub fn selected_kernel() -> &'static str {
    if use_simd() {
        "avx2"
    } else {
        "portable"
    }
}

/// 0 = not decided, 1 = portable, 2 = avx2.
static CHOICE: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

fn use_simd() -> bool {
    use core::sync::atomic::Ordering;
    match CHOICE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let simd = detect();
            CHOICE.store(if simd { 2 } else { 1 }, Ordering::Relaxed);
            simd
        }
    }
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
fn detect() -> bool {
    let forced_portable = std::env::var("QUANT_KERNEL").is_ok_and(|v| v.eq_ignore_ascii_case("portable"));
    !forced_portable && std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

#[cfg(all(not(feature = "std"), target_arch = "x86_64"))]
fn detect() -> bool {
    cfg!(all(target_feature = "avx2", target_feature = "fma"))
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> bool {
    false
}

/// Reinterprets `&[A]` as `&[B]` when they are the same type.
fn same<A: 'static, B: 'static>(x: &[A]) -> Option<&[B]> {
    if TypeId::of::<A>() == TypeId::of::<B>() {
        // SAFETY: A and B are the same type, so the slice is a valid `&[B]` as it is.
        Some(unsafe { &*(core::ptr::from_ref(x) as *const [B]) })
    } else {
        None
    }
}

/// Like [`same`], for a mutable slice.
fn same_mut<A: 'static, B: 'static>(x: &mut [A]) -> Option<&mut [B]> {
    if TypeId::of::<A>() == TypeId::of::<B>() {
        // SAFETY: A and B are the same type, so the slice is a valid `&mut [B]` as it is.
        Some(unsafe { &mut *(core::ptr::from_mut(x) as *mut [B]) })
    } else {
        None
    }
}

/// Quantizes with a fast path if one exists for `(F, Q)` on this CPU (`None`, having written
/// nothing, otherwise). The fast path checks finiteness in the same pass: `Some(Err(i))` names
/// the first NaN or infinite element, with `out` partly written. `out.len() == x.len()` for the
/// 8-bit types.
#[allow(unused_variables)]
pub(crate) fn quantize<F: QuantFloat, Q: Storage>(
    x: &[F],
    scale: f64,
    zp: i64,
    lo: i64,
    hi: i64,
    out: &mut [Q],
) -> Option<Result<(), usize>> {
    #[cfg(target_arch = "x86_64")]
    if use_simd() {
        if let Some(x) = same::<F, f32>(x) {
            if let Some(out) = same_mut::<Q, i8>(out) {
                // SAFETY: AVX2 was detected (use_simd); lengths are equal (caller).
                return Some(unsafe { x86_64::quantize_f32_i8(x, scale, zp, lo, hi, out) });
            }
            if let Some(out) = same_mut::<Q, u8>(out) {
                // SAFETY: as above.
                return Some(unsafe { x86_64::quantize_f32_u8(x, scale, zp, lo, hi, out) });
            }
        }
    }
    None
}

/// Dequantizes with a fast path if one exists for `(Q, F)` on this CPU; returns `false` (having
/// written nothing) otherwise. `codes.len() == out.len()` for the 8-bit types.
#[allow(unused_variables)]
pub(crate) fn dequantize<F: QuantFloat, Q: Storage>(codes: &[Q], scale: f64, zp: i64, out: &mut [F]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if use_simd() {
        if let Some(out) = same_mut::<F, f32>(out) {
            if let Some(codes) = same::<Q, i8>(codes) {
                // SAFETY: AVX2 was detected; lengths are equal (caller).
                unsafe { x86_64::dequantize_i8_f32(codes, scale, zp, out) };
                return true;
            }
            if let Some(codes) = same::<Q, u8>(codes) {
                // SAFETY: as above.
                unsafe { x86_64::dequantize_u8_f32(codes, scale, zp, out) };
                return true;
            }
        }
    }
    false
}
