//! Range to parameters: where the scale and the zero point are computed.
//!
//! # Conventions
//! All arithmetic is in `f64`, whatever the element type `F`; the scale is then rounded to `F`
//! once, and quantization uses that rounded scale, so `dequantize(quantize(x))` is consistent.
//!
//! * **Symmetric**, `b` bits: `scale = max|x| / (2^(b-1) - 1)`, zero point 0.
//! * **Asymmetric**, `b` bits: the range is first widened to include zero,
//!   `lo = min(min x, 0)`, `hi = max(max x, 0)` (as PyTorch and ONNX do, so 0.0 is always exactly
//!   representable and an all-positive tensor does not collapse onto one code);
//!   `scale = (hi - lo) / (2^b - 1)` and `zero_point = round_ties_even(-lo / scale)` clamped to
//!   `[0, 2^b - 1]`; with signed codes ([`QuantSpec::asymmetric_signed`]) the zero point is
//!   that minus `2^(b-1)` (ONNX Runtime's `qmin - round(lo / scale)` for `int8`: the same value,
//!   since `qmin` is even). `hi - lo` may overflow `f64` (`f64::MAX` and `-f64::MAX`); the scale is
//!   then computed from the halves, which gives the same correctly rounded value.
//! * **All-zero or empty input**: scale 1.0, zero point 0 (every code is then 0).
//! * **Rounding the scale to `F`**: to nearest, ties to even, unless that rounding makes an
//!   end of the range land more than half a step away from its code (possible when `F` is
//!   coarse: wide codes with a `bf16` or `f16` scale, or a scale in `F`'s subnormals). Then the
//!   next larger value of `F` is used, repeatedly if needed. This guarantees, for every finite
//!   input, `|x - (q - zero_point) * scale| <= scale / 2` (up to `f64` rounding of the check),
//!   and that a scale never underflows to 0.

use quant_traits::cast::{abs, f64_to_i64_saturating, i64_to_f64, round_ties_even};
use quant_traits::{QuantError, QuantFloat};

use crate::range::{range_of, Range};
use crate::scheme::{QuantSpec, Scheme};

/// A validated scale and zero point: `x ~ (q - zero_point) * scale`.
///
/// Constructed by [`QuantParams::from_range`] or [`QuantParams::from_tensor`] (the conventions
/// of this module), or from explicit values with [`QuantParams::new`], which checks them.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct QuantParams<F> {
    scale: F,
    zero_point: i64,
}

impl<F: QuantFloat> QuantParams<F> {
    /// Explicit parameters for `spec`.
    ///
    /// # Errors
    /// [`QuantError::InvalidScale`] unless `scale` is finite and positive;
    /// [`QuantError::InvalidZeroPoint`] unless `zero_point` is 0 (symmetric) or inside the
    /// code range (asymmetric: `0..=2^b - 1`, or `-2^(b-1)..=2^(b-1) - 1` for signed codes).
    pub fn new(spec: QuantSpec, scale: F, zero_point: i64) -> Result<Self, QuantError> {
        QuantError::check_scale(scale.to_f64_exact())?;
        let (min, max) = match spec.scheme() {
            Scheme::Symmetric => (0, 0),
            Scheme::Asymmetric => (spec.code_min(), spec.code_max()),
        };
        if !(min..=max).contains(&zero_point) {
            return Err(QuantError::InvalidZeroPoint { zero_point, min, max });
        }
        Ok(QuantParams { scale, zero_point })
    }

    /// Scale 1.0 and zero point 0: what an all-zero or empty tensor gets.
    #[must_use]
    pub fn identity() -> Self {
        QuantParams { scale: F::one(), zero_point: 0 }
    }

    /// The scale, in `F`.
    #[must_use]
    pub fn scale(&self) -> F {
        self.scale
    }

    /// The zero point (0 for symmetric schemes).
    #[must_use]
    pub fn zero_point(&self) -> i64 {
        self.zero_point
    }

    /// Parameters for the values in `x` (see the module docs for the formulas).
    ///
    /// # Errors
    /// [`QuantError::NonFinite`] naming the first NaN or infinite element.
    pub fn from_tensor(spec: QuantSpec, x: &[F]) -> Result<Self, QuantError> {
        Self::from_observed(spec, range_of(x)?)
    }

    /// Parameters for an observed range (`None`: nothing observed, i.e. an empty tensor).
    ///
    /// # Errors
    /// As [`QuantParams::from_range`].
    pub fn from_observed(spec: QuantSpec, range: Option<Range>) -> Result<Self, QuantError> {
        match range {
            None => Ok(Self::identity()),
            Some(r) => Self::from_range(spec, r.lo, r.hi),
        }
    }

    /// Parameters for values in `[lo, hi]` (see the module docs for the formulas).
    ///
    /// # Errors
    /// [`QuantError::InvalidRange`] if an end is not finite or `lo > hi`;
    /// [`QuantError::ScaleOverflow`] if the scale exceeds `F`'s finite range (possible only
    /// for a range wider than `F` itself, e.g. a calibrated `f64` range for an `f16` tensor).
    pub fn from_range(spec: QuantSpec, lo: f64, hi: f64) -> Result<Self, QuantError> {
        if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
            return Err(QuantError::InvalidRange { lo, hi });
        }
        let qmax = i64_to_f64(spec.steps());
        match spec.scheme() {
            Scheme::Symmetric => {
                let amax = abs(lo).max(abs(hi));
                if amax == 0.0 {
                    return Ok(Self::identity());
                }
                // The largest magnitude must land within half a step of the top code; the
                // bottom code -(qmax + 1) has room to spare.
                let scale = fit_scale::<F>(amax / qmax, |s| amax / s <= qmax + 0.5)
                    .ok_or(QuantError::ScaleOverflow { lo, hi, float: F::NAME })?;
                Ok(QuantParams { scale, zero_point: 0 })
            }
            Scheme::Asymmetric => {
                let (lo, hi) = (lo.min(0.0), hi.max(0.0));
                if lo == hi {
                    return Ok(Self::identity());
                }
                let width = hi - lo;
                let ideal = if width.is_finite() {
                    width / qmax
                } else {
                    // Halving is exact here (the values are huge), so this is the same
                    // correctly rounded quotient without the overflow.
                    ((hi * 0.5 - lo * 0.5) / qmax) * 2.0
                };
                let scale = fit_scale::<F>(ideal, |s| {
                    let z = -lo / s;
                    // `lo` must land within half a step of code 0, `hi` of the top code.
                    z <= qmax + 0.5 && hi / s <= qmax - zero_point_for(z, qmax) + 0.5
                })
                .ok_or(QuantError::ScaleOverflow { lo, hi, float: F::NAME })?;
                let unsigned = f64_to_i64_saturating(zero_point_for(-lo / scale.to_f64_exact(), qmax));
                Ok(QuantParams { scale, zero_point: unsigned + spec.code_min() })
            }
        }
    }
}

/// `clamp(round_ties_even(z), 0, qmax)`, as an `f64`.
fn zero_point_for(z: f64, qmax: f64) -> f64 {
    round_ties_even(z).max(0.0).min(qmax)
}

/// The `F` nearest to `ideal`, stepped up while `fits` rejects it (see the module docs).
/// `None` if the scale overflows `F`.
fn fit_scale<F: QuantFloat>(ideal: f64, fits: impl Fn(f64) -> bool) -> Option<F> {
    let mut s = F::from_f64_nearest(ideal);
    // Terminates: each step raises `s` by one ulp of F, and once `s >= ideal` the range fits
    // with a margin of half a step. In practice this runs zero times (f64, f32 at <= 24 bits),
    // or once or twice.
    loop {
        let v = s.to_f64_exact();
        if !v.is_finite() {
            return None;
        }
        if v > 0.0 && fits(v) {
            return Some(s);
        }
        s = s.next_up();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};
    use quant_traits::half;
    use rstest::rstest;

    fn sym(bits: u32) -> QuantSpec {
        QuantSpec::symmetric(bits).expect("valid width")
    }
    fn asym(bits: u32) -> QuantSpec {
        QuantSpec::asymmetric(bits).expect("valid width")
    }

    #[test]
    fn seed_scales() {
        let p = QuantParams::<f64>::from_range(sym(8), -1.0, 1.0).expect("ok");
        assert_eq!((p.scale(), p.zero_point()), (1.0 / 127.0, 0));
        let p = QuantParams::<f64>::from_range(asym(8), 0.0, 2.0).expect("ok");
        assert_eq!((p.scale(), p.zero_point()), (2.0 / 255.0, 0));
    }

    #[rstest]
    #[case(-1.0, 3.0, 4.0 / 255.0, 64)] // 0.25 / (4/255) = 63.75 -> 64
    #[case(-2.0, -1.0, 2.0 / 255.0, 255)] // all negative: hi widened to 0
    #[case(1.0, 2.0, 2.0 / 255.0, 0)] // all positive: lo widened to 0
    #[case(-1.0, 1.0, 2.0 / 255.0, 128)] // 127.5 -> 128 (ties to even)
    fn asymmetric_ranges_include_zero(#[case] lo: f64, #[case] hi: f64, #[case] scale: f64, #[case] zp: i64) {
        let p = QuantParams::<f64>::from_range(asym(8), lo, hi).expect("ok");
        assert_eq!((p.scale(), p.zero_point()), (scale, zp));
    }

    #[test]
    fn signed_asymmetric_zero_points_are_the_unsigned_ones_shifted() {
        // ONNX Runtime's int8 formula: zp = round(-128 - lo / scale) = 64 - 128 for (-1, 3).
        for (lo, hi) in [(-1.0, 3.0), (-2.0, -1.0), (1.0, 2.0), (-1.0, 1.0), (0.0, 0.0)] {
            for bits in [2, 4, 8, 16, 32] {
                let u = QuantParams::<f32>::from_range(asym(bits), lo, hi).expect("ok");
                let s = QuantParams::<f32>::from_range(QuantSpec::asymmetric_signed(bits).expect("ok"), lo, hi);
                let shift = if lo == hi { 0 } else { 1i64 << (bits - 1) };
                assert_eq!(
                    s,
                    Ok(QuantParams { scale: u.scale(), zero_point: u.zero_point() - shift }),
                    "{lo} {hi} {bits}"
                );
            }
        }
        let s8 = QuantSpec::asymmetric_signed(8).expect("ok");
        assert_eq!(QuantParams::new(s8, 1.0f32, -128).map(|p| p.zero_point()), Ok(-128));
        assert_eq!(
            QuantParams::new(s8, 1.0f32, 128),
            Err(QuantError::InvalidZeroPoint { zero_point: 128, min: -128, max: 127 })
        );
    }

    #[rstest]
    #[case(0.0, 0.0)]
    #[case(-0.0, 0.0)]
    fn zero_range_gets_identity(#[case] lo: f64, #[case] hi: f64) {
        for spec in [sym(8), asym(8), sym(2), asym(32)] {
            assert_eq!(QuantParams::<f32>::from_range(spec, lo, hi), Ok(QuantParams::identity()));
        }
        assert_eq!(QuantParams::<f32>::from_tensor(sym(8), &[]), Ok(QuantParams::identity()));
    }

    #[test]
    fn overflowing_width_is_computed_from_halves() {
        let p = QuantParams::<f64>::from_range(asym(8), -f64::MAX, f64::MAX).expect("finite");
        assert_eq!(p.scale(), (f64::MAX / 255.0) * 2.0);
        // -lo / scale = 127.49999999999999 in f64 (Python agrees), so the zero point is 127.
        assert_eq!(p.zero_point(), 127);
        let p = QuantParams::<f64>::from_range(sym(2), -f64::MAX, f64::MAX).expect("finite");
        assert_eq!(p.scale(), f64::MAX);
    }

    #[test]
    fn subnormal_maximum_never_gives_a_zero_scale() {
        let tiny = f64::from_bits(1); // 5e-324: tiny / 127 underflows to 0
        let p = QuantParams::<f64>::from_range(sym(8), -tiny, tiny).expect("ok");
        assert_eq!(p.scale(), tiny);
        let t16 = f16::from_bits(3).to_f64_exact();
        let p = QuantParams::<f16>::from_range(asym(8), 0.0, t16).expect("ok");
        assert_eq!(p.scale(), f16::from_bits(1));
    }

    #[test]
    fn coarse_scale_rounding_steps_up_to_cover_the_range() {
        // 16-bit codes with a bf16 scale: 1/32767 rounds to a bf16 *below* it, which would clip
        // x = 1.0 by more than half a step; the next bf16 up is used instead.
        let ideal = 1.0 / 32767.0;
        let nearest = bf16::from_f64_nearest(ideal);
        assert!(nearest.to_f64_exact() < ideal * 32767.0 / 32767.5);
        let p = QuantParams::<bf16>::from_range(sym(16), -1.0, 1.0).expect("ok");
        assert_eq!(p.scale(), nearest.next_up());
        assert!(1.0 / p.scale().to_f64_exact() <= 32767.5);
    }

    #[rstest]
    #[case(f64::NAN, 1.0)]
    #[case(0.0, f64::INFINITY)]
    #[case(2.0, 1.0)]
    fn invalid_ranges(#[case] lo: f64, #[case] hi: f64) {
        assert!(matches!(QuantParams::<f32>::from_range(sym(8), lo, hi), Err(QuantError::InvalidRange { .. })));
    }

    #[test]
    fn f64_range_too_wide_for_f16_is_an_error() {
        assert_eq!(
            QuantParams::<f16>::from_range(sym(8), -1e10, 1e10),
            Err(QuantError::ScaleOverflow { lo: -1e10, hi: 1e10, float: "f16" })
        );
    }

    #[rstest]
    #[case(0.0)]
    #[case(-1.0)]
    #[case(f64::INFINITY)]
    #[case(f64::NAN)]
    fn explicit_scale_must_be_finite_and_positive(#[case] s: f64) {
        assert!(matches!(QuantParams::new(sym(8), s, 0), Err(QuantError::InvalidScale { .. })));
    }

    #[test]
    fn explicit_zero_point_must_fit() {
        assert_eq!(QuantParams::new(asym(8), 0.5f32, 255).map(|p| p.zero_point()), Ok(255));
        assert_eq!(
            QuantParams::new(asym(8), 0.5f32, 256),
            Err(QuantError::InvalidZeroPoint { zero_point: 256, min: 0, max: 255 })
        );
        assert_eq!(
            QuantParams::new(sym(8), 0.5f32, 3),
            Err(QuantError::InvalidZeroPoint { zero_point: 3, min: 0, max: 0 })
        );
    }
}
