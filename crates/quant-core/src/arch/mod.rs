//! Fast paths for the hot loops, bit-identical to the scalar reference (`crate::scalar`), one
//! module per tier, chosen by the workspace's one [`dispatch!`](quant_traits::dispatch) on the
//! cached tier (`quant_traits::cpu`, the same `QUANT_KERNEL` vocabulary as the GEMM):
//!
//! | tier | code that runs |
//! |---|---|
//! | `amx`, `avx512vnni` | `x86_64/avx512.rs`: 16 lanes of AVX-512 F/BW (scales outside `[2^-100, 2^100]` go to the AVX2 code); the k-quant lane search in AVX2 |
//! | `avxvnni`, `avx2` | `x86_64/avx2.rs`: AVX2 and FMA, and the k-quant lane search |
//! | `portable` | the scalar reference and the lane search's portable build |
//!
//! [`CoreKernels`] is the contract each tier's type implements (a tier with no code of its own
//! forwards to the next lower one). The fast paths cover `f32 -> i8/u8` quantization, `i8/u8
//! -> f32` dequantization and the eight-lane `make_qkx2_quants` search ([`lanes`]); every other
//! type pair takes the scalar path. The tests run every tier this CPU has and compare with the
//! scalar reference.
//!
//! The fast paths do the same arithmetic as the scalar one, lane by lane (see each file for
//! why the bits agree): `clamp(round_half_even(x / scale) + zp)`, and for dequantization
//! `(q - zp) * scale` rounded once to `f32` and clamped to `f32`'s finite range.

pub(crate) mod lanes;
mod portable;
#[cfg(target_arch = "x86_64")]
mod x86_64;

use core::any::TypeId;

use quant_traits::cpu::{auto_tier, TierKernels};
use quant_traits::{dispatch, QuantError, QuantFloat, Storage};

use lanes::{Search, LANES, V};

/// A tier's fast paths. Each `unsafe fn` requires that the CPU has the tier; the defaults are
/// "no fast path here" (the scalar reference then runs).
pub(crate) trait CoreKernels: TierKernels {
    /// The name of the code that runs, as [`selected_kernel`] reports it.
    const CODE: &'static str;

    /// `out[i] = clamp(round_ties_even(x[i] / scale) + zp, lo, hi)`, or `Err(i)` naming the
    /// first NaN or infinite `x[i]` (with `out` partly written); `None` (nothing written) when
    /// this tier has no such code. `out.len() == x.len()`.
    ///
    /// # Safety
    /// The CPU has the tier.
    unsafe fn quantize_f32_i8(
        _x: &[f32],
        _scale: f64,
        _zp: i64,
        _lo: i64,
        _hi: i64,
        _out: &mut [i8],
    ) -> Option<Result<(), usize>> {
        None
    }

    /// As [`CoreKernels::quantize_f32_i8`], for `u8` codes.
    ///
    /// # Safety
    /// The CPU has the tier.
    unsafe fn quantize_f32_u8(
        _x: &[f32],
        _scale: f64,
        _zp: i64,
        _lo: i64,
        _hi: i64,
        _out: &mut [u8],
    ) -> Option<Result<(), usize>> {
        None
    }

    /// `out[i] = (codes[i] - zp) * scale` rounded once to `f32`, clamped to its finite range;
    /// `false` (nothing written) when this tier has no such code.
    ///
    /// # Safety
    /// The CPU has the tier; `codes.len() == out.len()`.
    unsafe fn dequantize_i8_f32(_codes: &[i8], _scale: f64, _zp: i64, _out: &mut [f32]) -> bool {
        false
    }

    /// As [`CoreKernels::dequantize_i8_f32`], for `u8` codes.
    ///
    /// # Safety
    /// The CPU has the tier; `codes.len() == out.len()`.
    unsafe fn dequantize_u8_f32(_codes: &[u8], _scale: f64, _zp: i64, _out: &mut [f32]) -> bool {
        false
    }

    /// The eight-lane `make_qkx2_quants` search in this tier's instructions, byte for byte the
    /// portable build's (`crate::ggml::lanes`); `None` when this tier has no such code.
    ///
    /// # Safety
    /// The CPU has the tier.
    unsafe fn qkx2_search<const N: usize>(
        _s: Search,
        _x: &[V; N],
        _w: &[V; N],
        _l: &mut [[u8; LANES]; N],
    ) -> Option<(V, V)> {
        None
    }
}

/// The name of the code that quantizes here: `"avx512"`, `"avx2"` or `"portable"` (a tier
/// with no code of its own runs the next lower tier's).
///
/// # Errors
/// When `QUANT_KERNEL` names a tier this CPU lacks ([`QuantError::KernelUnavailable`]) or no
/// tier ([`QuantError::UnknownKernel`]).
pub fn selected_kernel() -> Result<&'static str, QuantError> {
    auto_tier().map(|t| dispatch!(t, K => <K as CoreKernels>::CODE))
}

/// Fails when `QUANT_KERNEL` asks for what cannot run: the fallible entry points call it, so
/// a bad request is an error rather than a silent fallback.
pub(crate) fn check() -> Result<(), QuantError> {
    auto_tier().map(|_| ())
}

/// The tier to run: the automatic one (the entry points have checked it resolves; the
/// infallible paths behind them see the same cached answer, and the portable code otherwise).
fn current() -> quant_traits::cpu::Tier {
    auto_tier().unwrap_or(quant_traits::cpu::Tier::Portable)
}

/// The eight-lane k-quant search on the tier in use, where it has one.
pub(crate) fn qkx2_search<const N: usize>(
    s: Search,
    x: &[V; N],
    w: &[V; N],
    l: &mut [[u8; LANES]; N],
) -> Option<(V, V)> {
    // SAFETY: `current` is a tier this CPU has (`auto_tier` checked it) or portable.
    dispatch!(current(), K => unsafe { K::qkx2_search(s, x, w, l) })
}

/// Reinterprets `&[A]` as `&[B]` when they are the same type.
#[expect(clippy::as_conversions, reason = "a slice pointer cast to the type it is (checked by the caller)")]
fn same<A: 'static, B: 'static>(x: &[A]) -> Option<&[B]> {
    if TypeId::of::<A>() == TypeId::of::<B>() {
        // SAFETY: A and B are the same type, so the slice is a valid `&[B]` as it is.
        Some(unsafe { &*(core::ptr::from_ref(x) as *const [B]) })
    } else {
        None
    }
}

/// Like [`same`], for a mutable slice.
#[expect(clippy::as_conversions, reason = "a slice pointer cast to the type it is (checked by the caller)")]
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
pub(crate) fn quantize<F: QuantFloat, Q: Storage>(
    x: &[F],
    scale: f64,
    zp: i64,
    lo: i64,
    hi: i64,
    out: &mut [Q],
) -> Option<Result<(), usize>> {
    let x = same::<F, f32>(x)?;
    // SAFETY: `current` is a tier this CPU has (`auto_tier` checked it) or portable; the
    // lengths are equal (caller).
    dispatch!(current(), K => unsafe {
        if let Some(out) = same_mut::<Q, i8>(out) {
            K::quantize_f32_i8(x, scale, zp, lo, hi, out)
        } else if let Some(out) = same_mut::<Q, u8>(out) {
            K::quantize_f32_u8(x, scale, zp, lo, hi, out)
        } else {
            None
        }
    })
}

/// Dequantizes with a fast path if one exists for `(Q, F)` on this CPU; returns `false` (having
/// written nothing) otherwise. `codes.len() == out.len()` for the 8-bit types.
pub(crate) fn dequantize<F: QuantFloat, Q: Storage>(codes: &[Q], scale: f64, zp: i64, out: &mut [F]) -> bool {
    let Some(out) = same_mut::<F, f32>(out) else { return false };
    // SAFETY: as in `quantize`.
    dispatch!(current(), K => unsafe {
        if let Some(codes) = same::<Q, i8>(codes) {
            K::dequantize_i8_f32(codes, scale, zp, out)
        } else if let Some(codes) = same::<Q, u8>(codes) {
            K::dequantize_u8_f32(codes, scale, zp, out)
        } else {
            false
        }
    })
}
