//! Fast paths for the hot loops, bit-identical to the scalar reference (`crate::scalar`).
//!
//! Today: `f32 -> i8/u8` quantization and `i8/u8 -> f32` dequantization, per tier
//! (`quant_traits::cpu`, the same `QUANT_KERNEL` vocabulary and cached choice as the GEMM):
//!
//! | tier | code that runs |
//! |---|---|
//! | `avx512vnni` | `x86_64/avx512.rs`: 16 lanes of AVX-512 F/BW (scales outside `[2^-100, 2^100]` go to the AVX2 code) |
//! | `avxvnni`, `avx2` | `x86_64/avx2.rs`: AVX2 and FMA |
//! | `portable` | the scalar reference |
//!
//! Every other type pair takes the scalar path. The tests run every tier this CPU has and
//! compare with the scalar reference.
//!
//! The fast paths do the same arithmetic as the scalar one, lane by lane (see each file for
//! why the bits agree): `clamp(round_half_even(x / scale) + zp)`, and for dequantization
//! `(q - zp) * scale` rounded once to `f32` and clamped to `f32`'s finite range.

#[cfg(target_arch = "x86_64")]
mod x86_64;

use core::any::TypeId;

use quant_traits::cpu::{auto_tier, Tier};
use quant_traits::{QuantError, QuantFloat, Storage};

/// The name of the code that quantizes here: `"avx512"`, `"avx2"` or `"portable"` (a tier
/// with no code of its own runs the next lower tier's).
///
/// # Errors
/// When `QUANT_KERNEL` names a tier this CPU lacks ([`QuantError::KernelUnavailable`]) or no
/// tier ([`QuantError::UnknownKernel`]).
pub fn selected_kernel() -> Result<&'static str, QuantError> {
    auto_tier().map(|t| match implementation(t) {
        Impl::Avx512 => "avx512",
        Impl::Avx2 => "avx2",
        Impl::Portable => "portable",
    })
}

/// Fails when `QUANT_KERNEL` asks for what cannot run: the fallible entry points call it, so
/// a bad request is an error rather than a silent fallback.
pub(crate) fn check() -> Result<(), QuantError> {
    auto_tier().map(|_| ())
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Impl {
    Portable,
    Avx2,
    Avx512,
}

/// This crate's code for a tier.
fn implementation(tier: Tier) -> Impl {
    match tier {
        Tier::Avx512Vnni | Tier::Amx => Impl::Avx512,
        Tier::Avx2 | Tier::AvxVnni => Impl::Avx2,
        _ => Impl::Portable,
    }
}

/// The code to run: the automatic tier's (the entry points have checked it resolves; the
/// infallible paths behind them see the same cached answer).
fn current() -> Impl {
    auto_tier().map_or(Impl::Portable, implementation)
}

/// Whether the tier in use may run AVX2 code (other modules' fast paths ask this).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    matches!(current(), Impl::Avx2 | Impl::Avx512)
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
    {
        let x = same::<F, f32>(x)?;
        match current() {
            Impl::Avx512 => {
                if let Some(out) = same_mut::<Q, i8>(out) {
                    // SAFETY: the tier's features were detected (auto_tier); lengths are equal
                    // (caller).
                    return Some(unsafe { x86_64::avx512::quantize_f32_i8(x, scale, zp, lo, hi, out) });
                }
                if let Some(out) = same_mut::<Q, u8>(out) {
                    // SAFETY: as above.
                    return Some(unsafe { x86_64::avx512::quantize_f32_u8(x, scale, zp, lo, hi, out) });
                }
            }
            Impl::Avx2 => {
                if let Some(out) = same_mut::<Q, i8>(out) {
                    // SAFETY: AVX2 and FMA were detected (auto_tier); lengths are equal (caller).
                    return Some(unsafe { x86_64::avx2::quantize_f32_i8(x, scale, zp, lo, hi, out) });
                }
                if let Some(out) = same_mut::<Q, u8>(out) {
                    // SAFETY: as above.
                    return Some(unsafe { x86_64::avx2::quantize_f32_u8(x, scale, zp, lo, hi, out) });
                }
            }
            Impl::Portable => {}
        }
    }
    None
}

/// Dequantizes with a fast path if one exists for `(Q, F)` on this CPU; returns `false` (having
/// written nothing) otherwise. `codes.len() == out.len()` for the 8-bit types.
#[allow(unused_variables)]
pub(crate) fn dequantize<F: QuantFloat, Q: Storage>(codes: &[Q], scale: f64, zp: i64, out: &mut [F]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if let Some(out) = same_mut::<F, f32>(out) {
        match current() {
            Impl::Avx512 => {
                if let Some(codes) = same::<Q, i8>(codes) {
                    // SAFETY: the tier's features were detected; lengths are equal (caller).
                    unsafe { x86_64::avx512::dequantize_i8_f32(codes, scale, zp, out) };
                    return true;
                }
                if let Some(codes) = same::<Q, u8>(codes) {
                    // SAFETY: as above.
                    unsafe { x86_64::avx512::dequantize_u8_f32(codes, scale, zp, out) };
                    return true;
                }
            }
            Impl::Avx2 => {
                if let Some(codes) = same::<Q, i8>(codes) {
                    // SAFETY: AVX2 was detected; lengths are equal (caller).
                    unsafe { x86_64::avx2::dequantize_i8_f32(codes, scale, zp, out) };
                    return true;
                }
                if let Some(codes) = same::<Q, u8>(codes) {
                    // SAFETY: as above.
                    unsafe { x86_64::avx2::dequantize_u8_f32(codes, scale, zp, out) };
                    return true;
                }
            }
            Impl::Portable => {}
        }
    }
    false
}
