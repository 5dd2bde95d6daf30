//! The floating-point element trait: what a tensor of `f32`, `f64`, `f16` or `bf16` offers the
//! quantizers.
//!
//! All quantization arithmetic happens in `f64`, whatever the element type: an element is
//! widened with [`QuantFloat::to_f64_exact`] (exact for all four types), and a result (a scale,
//! a dequantized value) is narrowed once with [`QuantFloat::from_f64_nearest`] (IEEE
//! round-to-nearest, ties to even) or [`QuantFloat::from_f64_saturating`].

#![allow(clippy::as_conversions, reason = "the float trait's own conversions, which the cast module builds on")]

use core::fmt::{Debug, Display};

use half::{bf16, f16};
use num_traits::float::FloatCore;

use crate::cast;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// A floating-point element type that can be quantized: `f32`, `f64`, [`half::f16`] or
/// [`half::bf16`].
///
/// The trait is sealed: the quantizers' exactness rests on the conversions below being
/// correctly rounded, which is verified for exactly these four types.
///
/// `FloatCore` (from `num-traits`, available without `std`) is a supertrait, so generic code
/// also gets `zero()`, `one()`, `is_finite()`, comparisons and arithmetic on `Self`.
pub trait QuantFloat: FloatCore + Debug + Display + Default + Send + Sync + 'static + sealed::Sealed {
    /// The type's conventional name (`"f32"`, `"f64"`, `"f16"`, `"bf16"`), used in errors.
    const NAME: &'static str;
    /// Significand bits, including the implicit leading one (24, 53, 11, 8).
    const DIGITS: u32;
    /// The largest finite value, as an `f64` (exact).
    const MAX_FINITE: f64;

    /// Widens to `f64`. Exact for every value of all four types.
    fn to_f64_exact(self) -> f64;

    /// Narrows an `f64` to the nearest value of `Self`, ties to even (IEEE 754
    /// round-to-nearest-even, with subnormals); values beyond the finite range become `±inf`,
    /// NaN stays NaN.
    fn from_f64_nearest(v: f64) -> Self;

    /// Like [`from_f64_nearest`](QuantFloat::from_f64_nearest), but a finite `v` beyond the
    /// finite range of `Self` becomes `±MAX` instead of `±inf`. Dequantization uses this, so
    /// that a code near the edge of a range that spans almost all of `Self` (e.g. `127 * scale`
    /// for an `f16` tensor containing 65504) stays finite. NaN stays NaN.
    #[inline]
    fn from_f64_saturating(v: f64) -> Self {
        let r = Self::from_f64_nearest(v);
        if v.is_finite() && !r.is_finite() {
            Self::from_f64_nearest(cast::copysign(Self::MAX_FINITE, v))
        } else {
            r
        }
    }

    /// The next representable value towards `+inf` (for `+0.0` and `-0.0` alike, the smallest
    /// positive subnormal). `+inf` and NaN are returned unchanged; `MAX` steps to `+inf`.
    fn next_up(self) -> Self;
}

macro_rules! quant_float_impl {
    ($t:ty, $name:literal, $bits:ty, $sign:expr, $to:expr, $from:expr, $from_bits:expr, $to_bits:expr) => {
        impl QuantFloat for $t {
            const NAME: &'static str = $name;
            const DIGITS: u32 = <$t as FloatDigits>::DIGITS;
            const MAX_FINITE: f64 = <$t as FloatDigits>::MAX_FINITE;

            #[inline]
            fn to_f64_exact(self) -> f64 {
                $to(self)
            }

            #[inline]
            fn from_f64_nearest(v: f64) -> Self {
                $from(v)
            }

            #[inline]
            fn next_up(self) -> Self {
                let bits: $bits = $to_bits(self);
                let sign: $bits = $sign;
                if self.is_nan() || (self.is_infinite() && bits & sign == 0) {
                    return self;
                }
                let next = if bits & !sign == 0 {
                    1 // ±0 -> smallest positive subnormal
                } else if bits & sign == 0 {
                    bits + 1 // positive: larger magnitude
                } else {
                    bits - 1 // negative: smaller magnitude
                };
                $from_bits(next)
            }
        }
    };
}

/// Format constants, kept apart so the macro above stays one line per type.
trait FloatDigits {
    const DIGITS: u32;
    const MIN_EXP: i32;
    const MAX_FINITE: f64;
}
impl FloatDigits for f64 {
    const DIGITS: u32 = 53;
    const MIN_EXP: i32 = -1022;
    const MAX_FINITE: f64 = f64::MAX;
}
impl FloatDigits for f32 {
    const DIGITS: u32 = 24;
    const MIN_EXP: i32 = -126;
    const MAX_FINITE: f64 = f32::MAX as f64;
}
impl FloatDigits for f16 {
    const DIGITS: u32 = 11;
    const MIN_EXP: i32 = -14;
    const MAX_FINITE: f64 = 65504.0;
}
impl FloatDigits for bf16 {
    const DIGITS: u32 = 8;
    const MIN_EXP: i32 = -126;
    // (2 - 2^-7) * 2^127
    const MAX_FINITE: f64 = 3.389_531_389_251_535_5e38;
}

/// Rounds to a narrow format's grid in `f64`, then converts that exactly representable value.
fn narrow_to<T: FloatDigits>(v: f64) -> f64 {
    cast::round_to_format(v, T::DIGITS, T::MIN_EXP, T::MAX_FINITE)
}

quant_float_impl!(f64, "f64", u64, 1u64 << 63, |x: f64| x, |v: f64| v, f64::from_bits, f64::to_bits);
// `as f32` is IEEE round-to-nearest-even in Rust, with overflow to ±inf.
quant_float_impl!(f32, "f32", u32, 1u32 << 31, f64::from, |v: f64| v as f32, f32::from_bits, f32::to_bits);
// The value is first rounded onto the f16 grid in f64, so the f32 and f16 conversions after it
// are exact: no double rounding, whatever `half` does internally.
quant_float_impl!(
    f16,
    "f16",
    u16,
    1u16 << 15,
    f16::to_f64,
    |v: f64| f16::from_f32(narrow_to::<f16>(v) as f32),
    f16::from_bits,
    f16::to_bits
);
quant_float_impl!(
    bf16,
    "bf16",
    u16,
    1u16 << 15,
    bf16::to_f64,
    |v: f64| bf16::from_f32(narrow_to::<bf16>(v) as f32),
    bf16::from_bits,
    bf16::to_bits
);

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// Checks every finite positive value of a 16-bit format against its neighbours: the value
    /// itself, the exact midpoint to the next value (must go to the even one) and points just
    /// either side of the midpoint. This is an independent check of `round_to_format`, derived
    /// only from the bit patterns.
    fn exhaustive_16bit<T: QuantFloat>(from_bits: fn(u16) -> T, to_bits: fn(T) -> u16) {
        let mut checked_overflow = false;
        for bits in 0u16..0x7fff {
            let lo = from_bits(bits);
            let hi = from_bits(bits + 1);
            if !lo.is_finite() {
                break;
            }
            if !hi.is_finite() {
                // Past MAX: the midpoint MAX + ulp/2 overflows (MAX's significand is odd).
                let mid = lo.to_f64_exact() + (lo.to_f64_exact() - from_bits(bits - 1).to_f64_exact()) / 2.0;
                assert!(T::from_f64_nearest(mid).is_infinite());
                assert_eq!(to_bits(T::from_f64_saturating(mid)), bits);
                checked_overflow = true;
                continue;
            }
            let (l, h) = (lo.to_f64_exact(), hi.to_f64_exact());
            assert_eq!(to_bits(T::from_f64_nearest(l)), bits);
            assert_eq!(to_bits(T::from_f64_nearest(-l)), bits | 0x8000);
            let mid = (l + h) / 2.0; // exact in f64
            let even = if bits % 2 == 0 { bits } else { bits + 1 };
            assert_eq!(to_bits(T::from_f64_nearest(mid)), even, "midpoint of {bits:#06x}");
            let below = f64::from_bits(mid.to_bits() - 1);
            let above = f64::from_bits(mid.to_bits() + 1);
            assert_eq!(to_bits(T::from_f64_nearest(below)), bits, "below mid {bits:#06x}");
            assert_eq!(to_bits(T::from_f64_nearest(above)), bits + 1, "above mid {bits:#06x}");
            assert_eq!(to_bits(lo.next_up()), bits + 1);
        }
        assert!(checked_overflow, "the walk never reached MAX");
    }

    #[test]
    fn f16_rounds_to_nearest_even_on_every_value() {
        exhaustive_16bit::<f16>(f16::from_bits, f16::to_bits);
    }

    #[test]
    fn bf16_rounds_to_nearest_even_on_every_value() {
        exhaustive_16bit::<bf16>(bf16::from_bits, bf16::to_bits);
    }

    #[test]
    fn a_bit_beyond_the_low_32_decides_the_rounding() {
        // 1 + 2^-11 is the exact midpoint between 1.0 and the next f16; one f64 ulp above it
        // must round up. The value is chosen so the deciding bit sits in the low 32 bits.
        let x = 1.0 + f64::from_bits(0x3F40_0000_0000_0000) + f64::EPSILON;
        assert_eq!(f16::from_f64_nearest(x).to_bits(), 0x3c01);
    }

    #[rstest]
    #[case(f32::MAX as f64 * 2.0, f32::MAX)]
    #[case(-1e300, f32::MIN)]
    #[case(1.5, 1.5f32)]
    fn f32_saturates(#[case] v: f64, #[case] want: f32) {
        assert_eq!(f32::from_f64_saturating(v), want);
    }

    #[rstest]
    #[case(65532.0, 65504.0)] // rounds to inf under nearest, saturates to MAX
    #[case(-70000.0, -65504.0)]
    #[case(65519.0, 65504.0)] // below MAX + ulp/2: plain nearest rounding
    fn f16_saturates(#[case] v: f64, #[case] want: f64) {
        assert_eq!(f16::from_f64_saturating(v).to_f64_exact(), want);
    }

    #[test]
    fn next_up_steps_through_zero_and_negatives() {
        assert_eq!(0.0f64.next_up(), f64::from_bits(1));
        assert_eq!((-0.0f64).next_up(), f64::from_bits(1));
        assert_eq!((-1.0f32).next_up(), -1.0f32 + f32::EPSILON / 2.0);
        assert_eq!(f64::MAX.next_up(), f64::INFINITY);
        assert_eq!(f16::ONE.next_up().to_bits(), 0x3c01);
        assert!(f64::NAN.next_up().is_nan());
    }

    #[test]
    fn max_finite_matches_the_types() {
        assert_eq!(<bf16 as QuantFloat>::MAX_FINITE, bf16::MAX.to_f64());
        assert_eq!(<f16 as QuantFloat>::MAX_FINITE, f16::MAX.to_f64());
        assert_eq!(<f32 as QuantFloat>::MAX_FINITE, f64::from(f32::MAX));
    }
}
