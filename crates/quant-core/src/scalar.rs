//! The scalar per-element functions: the reference every fast path is held to, in a leaf
//! module (it imports nothing of this crate), so the kernels and the public API both import it
//! without a cycle.

use quant_traits::cast::{clamp_i64, copysign, f64_to_i64_saturating, i128_to_f64, round_ties_even};
use quant_traits::QuantFloat;

/// The code for one finite value: `clamp(round_ties_even(x / scale) + zero_point)`.
#[inline]
#[must_use]
pub fn quantize_value(x: f64, scale: f64, zero_point: i64, code_min: i64, code_max: i64) -> i64 {
    let steps = f64_to_i64_saturating(round_ties_even(x / scale));
    clamp_i64(steps.saturating_add(zero_point), code_min, code_max)
}

/// The value for one code: `(code - zero_point) * scale`, rounded once to `F`, saturating at
/// `±F::MAX`. The difference is taken in `i128`, so any `i64` code and zero point work.
#[inline]
#[must_use]
pub fn dequantize_code<F: QuantFloat>(code: i64, scale: F, zero_point: i64) -> F {
    let steps = i128_to_f64(i128::from(code) - i128::from(zero_point));
    let scale = scale.to_f64_exact();
    let v = steps * scale;
    if v.is_infinite() && scale.is_finite() {
        // The exact product is finite but beyond f64::MAX (an f64 tensor spanning all of f64):
        // saturate like any other value beyond F's range.
        return F::from_f64_saturating(copysign(F::MAX_FINITE, v));
    }
    F::from_f64_saturating(v)
}

/// The index of the first NaN or infinity. Scans in blocks without an early exit inside a
/// block, so the compiler can vectorize the test.
pub(crate) fn first_non_finite<F: QuantFloat>(x: &[F]) -> Option<usize> {
    for (b, block) in x.chunks(256).enumerate() {
        if block.iter().fold(false, |bad, v| bad | !v.is_finite()) {
            return block.iter().position(|v| !v.is_finite()).map(|i| b * 256 + i);
        }
    }
    None
}
