//! Output stages: what happens to each exact, zero-point-corrected sum.
//!
//! | stage | formula | rounding |
//! |-------|---------|----------|
//! | `i32` | `acc` | none (the depth is checked to fit `i32` up front) |
//! | `f32` | `acc * scale_a * scale_b[j] + bias[j]` | in `f64`, rounded once to `f32` (nearest, ties to even) |
//! | requantize, float | `clamp(round_ties_even(acc * multiplier[j]) + zero_point)` | in `f64`, ties to even |
//! | requantize, fixed point | `clamp(rdbpot(srdhm(acc << left, m), right) + zero_point)` | TFLite's `MultiplyByQuantizedMultiplier`: two roundings, ties towards +inf then away from zero |
//! | requantize, ONNX `QLinearMatMul` | `clamp(round_ties_even(acc * m[i][j] + zero_point))`, `m[i][j] = P(P(a_scale[i] * b_scale[j]) / y_scale)` | the multiplier rounded to the scales' type `P` after each operation, the rest in `f64`, ties to even |

use alloc::vec::Vec;

use quant_traits::cast::{
    clamp_i64, exponent, f64_to_i64_saturating, i64_to_f64, round_half_away, round_ties_even, scale_by_pow2,
};
use quant_traits::QuantError;

use crate::gemm::element::Operand;

/// A per-tensor or per-output-column factor.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Scale<'a> {
    /// One value for every column.
    PerTensor(f32),
    /// One value per output column (`N` of them).
    PerColumn(&'a [f32]),
}

impl Scale<'_> {
    #[inline(always)]
    pub(crate) fn get(&self, j: usize) -> f64 {
        match *self {
            Scale::PerTensor(s) => f64::from(s),
            Scale::PerColumn(s) => f64::from(s[j]),
        }
    }

    /// Checks the length and that every value is finite and positive.
    pub(crate) fn check(&self, what: &'static str, n: usize) -> Result<(), QuantError> {
        let values: &[f32] = match self {
            Scale::PerTensor(s) => core::slice::from_ref(s),
            Scale::PerColumn(s) => {
                QuantError::check_length(what, n, s.len())?;
                s
            }
        };
        values.iter().try_for_each(|&v| QuantError::check_scale(f64::from(v)).map(|_| ()))
    }
}

/// How to requantize the `i32`/`i64` sums to 8-bit outputs.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Requant<'a> {
    /// `clamp(round_ties_even(acc * multiplier[j]) + zero_point)`, the multiplication in `f64`
    /// (`multiplier` is typically `scale_a * scale_b[j] / scale_out`).
    Float {
        /// Per tensor or per output column.
        multiplier: Scale<'a>,
        /// The output's zero point.
        zero_point: i32,
    },
    /// TFLite/gemmlowp fixed point: `multiplier` is a Q31 value in `[2^30, 2^31)` and the real
    /// multiplier is `multiplier * 2^(shift - 31)`. Computed exactly as TFLite's
    /// `MultiplyByQuantizedMultiplier`: `acc << max(shift, 0)` (saturated to `i32`), then
    /// `SaturatingRoundingDoublingHighMul` (ties towards +inf), then
    /// `RoundingDivideByPOT(max(-shift, 0))` (ties away from zero), plus `zero_point`, clamped.
    /// Like TFLite it rounds twice (11 · 0.5 / 4 gives 2, not 1). Needs `i32` sums, so the
    /// depth must fit, and the multiplier and shift must be in range ([`check_fixed_point`]);
    /// both are checked up front.
    FixedPoint {
        /// Q31 multiplier.
        multiplier: i32,
        /// Power-of-two exponent, `-31..=30`.
        shift: i32,
        /// The output's zero point.
        zero_point: i32,
    },
    /// [`Requant::FixedPoint`] with a multiplier and shift per output column (TFLite's
    /// per-channel requantization; [`quantize_multiplier`] makes each pair from
    /// `scale_a · scale_b[j] / scale_out`). Every pair is checked up front.
    FixedPointPerColumn {
        /// Q31 multipliers, one per output column.
        multipliers: &'a [i32],
        /// Power-of-two exponents, one per output column.
        shifts: &'a [i32],
        /// The output's zero point.
        zero_point: i32,
    },
    /// ONNX `QLinearMatMul` (opset 10 and 21) exactly as its reference computes it: each output's
    /// multiplier `m[i][j] = P(P(a_scale[i] · b_scale[j]) / y_scale)`, rounded to the scales'
    /// type `P` after each operation, then `clamp(round_ties_even(acc · m[i][j] + zero_point))`
    /// in `f64`: the zero point is added *before* rounding (unlike [`Requant::Float`], which
    /// rounds first; the two differ only on an exact tie with an odd zero point).
    ///
    /// ONNX Runtime's CPU kernel (MLAS) differs: it multiplies in `f32`, then rounds, then adds
    /// the zero point, so it disagrees at such ties and where `|acc| > 2^24` makes the `f32`
    /// product inexact.
    ///
    /// `a_scale` has one value or one per row of A (`M`); `b_scale` one or one per column (`N`).
    QLinear {
        /// A's scale: 1 or `M` values, each a value of `precision`.
        a_scale: &'a [f32],
        /// B's scale: 1 or `N` values.
        b_scale: &'a [f32],
        /// The output's scale.
        y_scale: f32,
        /// The output's zero point.
        zero_point: i32,
        /// The scales' float type.
        precision: ScaleType,
    },
}

/// Checks [`Requant::QLinear`]'s scales: lengths 1 or `len`, every value finite, positive and
/// a value of `precision`.
pub(crate) fn check_qlinear_scales(
    what: &'static str,
    scales: &[f32],
    len: usize,
    precision: ScaleType,
) -> Result<(), QuantError> {
    if scales.len() != 1 {
        QuantError::check_length(what, len, scales.len())?;
    }
    for &s in scales {
        QuantError::check_scale(f64::from(s))?;
        if !precision.holds(s) {
            return Err(QuantError::InvalidScale { value: f64::from(s) });
        }
    }
    Ok(())
}

/// The float type of [`Requant::QLinear`]'s scales, in which ONNX computes the multiplier.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ScaleType {
    /// `float` scales.
    F32,
    /// `float16` scales (QLinearMatMul opset 21).
    F16,
    /// `bfloat16` scales (QLinearMatMul opset 21).
    Bf16,
}

impl ScaleType {
    /// `v` rounded to this type (to nearest, ties to even), as an `f64`.
    #[inline(always)]
    fn round(self, v: f64) -> f64 {
        use quant_traits::half::{bf16, f16};
        use quant_traits::QuantFloat;
        match self {
            ScaleType::F32 => f32::from_f64_nearest(v).to_f64_exact(),
            ScaleType::F16 => f16::from_f64_nearest(v).to_f64_exact(),
            ScaleType::Bf16 => bf16::from_f64_nearest(v).to_f64_exact(),
        }
    }

    /// Whether `v` is a value of this type.
    fn holds(self, v: f32) -> bool {
        self.round(f64::from(v)) == f64::from(v)
    }
}

/// gemmlowp's `SaturatingRoundingDoublingHighMul`: `round(a * b / 2^31)` with ties towards
/// +inf (its nudge, then a division truncating towards zero), saturating the single overflow
/// case `i32::MIN * i32::MIN`.
#[must_use]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = i64::from(a) * i64::from(b);
    let nudge = if ab >= 0 { 1i64 << 30 } else { 1 - (1i64 << 30) };
    // Division truncates towards zero, as in C++.
    let q = (ab + nudge) / (1i64 << 31);
    i32::try_from(q).unwrap_or(i32::MAX)
}

/// gemmlowp's `RoundingDivideByPOT`: `round(x / 2^exponent)`, ties away from zero, for every
/// exponent (gemmlowp's takes `0..=31`; here the arithmetic is in `i64`, so larger exponents
/// give the exact rounded quotient too: 0, or -1 for `i32::MIN / 2^32`).
#[must_use]
pub fn rounding_divide_by_pot(x: i32, exponent: u32) -> i32 {
    // |x| <= 2^31, so beyond 2^62 the quotient rounds to 0 exactly as at 2^62.
    let e = exponent.min(62);
    let x = i64::from(x);
    let mask = (1i64 << e) - 1;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i64::from(x < 0);
    let q = (x >> e) + i64::from(remainder > threshold);
    // |q| <= 2^31 rounded, and only x = i32::MIN reaches -2^31: within i32.
    i32::try_from(q).unwrap_or(if q < 0 { i32::MIN } else { i32::MAX })
}

/// Checks a [`Requant::FixedPoint`] multiplier and shift against TFLite's contract: the
/// multiplier 0 (a zero real multiplier) or in `[2^30, 2^31)`, the shift in `-31..=30`.
///
/// # Errors
/// [`QuantError::InvalidFixedPoint`].
pub fn check_fixed_point(multiplier: i32, shift: i32) -> Result<(), QuantError> {
    if (multiplier == 0 || multiplier >= 1 << 30) && (-31..=30).contains(&shift) {
        Ok(())
    } else {
        Err(QuantError::InvalidFixedPoint { multiplier, shift })
    }
}

/// TFLite's `MultiplyByQuantizedMultiplier(x, multiplier, shift)`.
#[must_use]
pub fn multiply_by_quantized_multiplier(x: i32, multiplier: i32, shift: i32) -> i32 {
    // A left shift past 32 saturates every nonzero `x` just as 32 does (no `i64` overflow).
    let left = shift.clamp(0, 32).unsigned_abs();
    let right = shift.clamp(i32::MIN + 1, 0).unsigned_abs();
    let shifted = clamp_i64(i64::from(x) << left, i64::from(i32::MIN), i64::from(i32::MAX));
    let shifted = i32::try_from(shifted).unwrap_or(i32::MAX);
    rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)
}

/// TFLite's `QuantizeMultiplier`: the Q31 multiplier and shift for a real multiplier (typically
/// `scale_a · scale_b / scale_out`), ready for [`Requant::FixedPoint`].
///
/// `real = q · 2^shift` with `q` in `[0.5, 1)` (`frexp`); the multiplier is
/// `round_half_away(q · 2^31)`, and a `q` that rounds up to `2^31` becomes `2^30` with the shift
/// one larger. As TFLite: 0 gives `(0, 0)`; a shift below -31 (a multiplier under about
/// `2^-32`, which would shift every product to 0) gives `(0, 0)`; a shift above 30 saturates to
/// `(i32::MAX, 30)`. The result always passes [`check_fixed_point`], and
/// `multiplier · 2^(shift - 31)` is within `2^(shift - 32)` of `real` (for shifts in range).
///
/// # Errors
/// [`QuantError::InvalidScale`] for a negative, NaN or infinite `real`.
///
/// ```
/// use quant_matmul::quantize_multiplier;
/// assert_eq!(quantize_multiplier(0.5)?, (1 << 30, 0));
/// assert_eq!(quantize_multiplier(0.75)?, (1_610_612_736, 0));
/// assert_eq!(quantize_multiplier(3.0)?, (1_610_612_736, 2));
/// # Ok::<(), quant_matmul::QuantError>(())
/// ```
pub fn quantize_multiplier(real: f64) -> Result<(i32, i32), QuantError> {
    if !real.is_finite() || real < 0.0 {
        return Err(QuantError::InvalidScale { value: real });
    }
    if real == 0.0 {
        return Ok((0, 0));
    }
    // frexp: real = q · 2^shift, q in [0.5, 1). (Subnormals report exponent -1023: their q is
    // below 0.5, but the shift puts them under -31 all the same.)
    let mut shift = exponent(real) + 1;
    let q = scale_by_pow2(real, -shift);
    // q · 2^31 is exact (a power of two); TFLite rounds it half away from zero (std::round).
    let mut fixed = f64_to_i64_saturating(round_half_away(scale_by_pow2(q, 31)));
    if fixed == 1 << 31 {
        fixed /= 2;
        shift += 1;
    }
    if shift < -31 {
        return Ok((0, 0));
    }
    if shift > 30 {
        return Ok((i32::MAX, 30));
    }
    Ok((i32::try_from(fixed).unwrap_or(i32::MAX), shift))
}

/// TFLite's fixed-point requantization of one sum (exact in `i32` by the depth check), plus the
/// zero point, before clamping.
#[inline(always)]
fn fixed_point(acc: i64, multiplier: i32, shift: i32, zero_point: i32) -> i64 {
    let acc = i32::try_from(acc).unwrap_or(if acc < 0 { i32::MIN } else { i32::MAX });
    i64::from(multiply_by_quantized_multiplier(acc, multiplier, shift)) + i64::from(zero_point)
}

/// An output stage the kernels apply in registers ([`crate::arch::Finish`]).
#[derive(Copy, Clone, Debug)]
pub(crate) enum RegisterStage<'a> {
    /// The corrected `i32` sum as it is.
    I32,
    /// `acc · (scale_a · scale_b[j]) + bias[j]` in `f64`, rounded once to `f32`.
    F32 { scale_a: f64, scale_b: Scale<'a>, bias: Option<&'a [f32]> },
}

impl RegisterStage<'_> {
    /// Column `j`'s `f64` scale and bias (`F32` only; `(1, 0)` for `I32`).
    #[inline]
    pub(crate) fn column(&self, j: usize) -> (f64, f64) {
        match *self {
            RegisterStage::I32 => (1.0, 0.0),
            RegisterStage::F32 { scale_a, scale_b, bias } => {
                (scale_a * scale_b.get(j), bias.map_or(0.0, |b| f64::from(b[j])))
            }
        }
    }
}

/// What the driver calls for every output element, with the corrected exact sum.
pub(crate) trait Stage: Sync {
    type Out: Copy + Send;
    fn apply(&self, row: usize, col: usize, acc: i64) -> Self::Out;
    /// The stage as kernels apply it in registers, when they can (its output is then a 4-byte
    /// word, `i32` or `f32`, which also holds the `i32` sums between depth blocks).
    fn registers(&self) -> Option<RegisterStage<'_>> {
        None
    }
    /// The same for a sum known to be exact in `i32`.
    #[inline(always)]
    fn apply_i32(&self, row: usize, col: usize, acc: i32) -> Self::Out {
        self.apply(row, col, i64::from(acc))
    }
}

pub(crate) struct I32Out;

impl Stage for I32Out {
    type Out = i32;
    fn registers(&self) -> Option<RegisterStage<'_>> {
        Some(RegisterStage::I32)
    }
    #[inline(always)]
    fn apply_i32(&self, _row: usize, _col: usize, acc: i32) -> i32 {
        acc
    }
    #[inline(always)]
    fn apply(&self, _row: usize, _col: usize, acc: i64) -> i32 {
        // The depth was checked so that every result fits.
        i32::try_from(acc).unwrap_or(if acc < 0 { i32::MIN } else { i32::MAX })
    }
}

pub(crate) struct F32Out<'a> {
    pub(crate) scale_a: f64,
    pub(crate) scale_b: Scale<'a>,
    pub(crate) bias: Option<&'a [f32]>,
}

impl Stage for F32Out<'_> {
    type Out = f32;
    fn registers(&self) -> Option<RegisterStage<'_>> {
        Some(RegisterStage::F32 { scale_a: self.scale_a, scale_b: self.scale_b, bias: self.bias })
    }
    #[inline(always)]
    #[expect(clippy::as_conversions, reason = "the f32 stage's one documented rounding of its f64 value")]
    fn apply(&self, _row: usize, col: usize, acc: i64) -> f32 {
        let bias = self.bias.map_or(0.0, |b| f64::from(b[col]));
        (i64_to_f64(acc) * (self.scale_a * self.scale_b.get(col)) + bias) as f32
    }
}

pub(crate) struct RequantOut<'a, O> {
    requant: Requant<'a>,
    /// [`Requant::QLinear`]'s multipliers when one side's scale is shared: one per column when
    /// A's scale is per tensor (one in all when B's is too), else one per row when B's is;
    /// empty when both vary, and then each output computes its own.
    qlinear: Vec<f64>,
    _out: core::marker::PhantomData<O>,
}

/// ONNX `QLinearMatMul`'s multiplier `P(P(a · b) / y)`.
#[inline(always)]
fn qlinear_multiplier(a: f32, b: f32, y: f32, precision: ScaleType) -> f64 {
    precision.round(precision.round(f64::from(a) * f64::from(b)) / f64::from(y))
}

impl<'a, O> RequantOut<'a, O> {
    /// The stage for `requant` (checked), with QLinear's shared multipliers computed once.
    pub(crate) fn new(requant: Requant<'a>) -> Self {
        let qlinear = match requant {
            Requant::QLinear { a_scale: &[a], b_scale, y_scale, precision, .. } => {
                b_scale.iter().map(|&b| qlinear_multiplier(a, b, y_scale, precision)).collect()
            }
            Requant::QLinear { a_scale, b_scale: &[b], y_scale, precision, .. } => {
                a_scale.iter().map(|&a| qlinear_multiplier(a, b, y_scale, precision)).collect()
            }
            _ => Vec::new(),
        };
        RequantOut { requant, qlinear, _out: core::marker::PhantomData }
    }
}

impl<O: Operand> Stage for RequantOut<'_, O> {
    type Out = O;
    #[inline(always)]
    fn apply(&self, row: usize, col: usize, acc: i64) -> O {
        let (lo, hi) = (i64::from(O::MIN), i64::from(O::MAX));
        let q = match self.requant {
            Requant::Float { multiplier, zero_point } => {
                let steps = f64_to_i64_saturating(round_ties_even(i64_to_f64(acc) * multiplier.get(col)));
                steps.saturating_add(i64::from(zero_point))
            }
            Requant::FixedPoint { multiplier, shift, zero_point } => fixed_point(acc, multiplier, shift, zero_point),
            Requant::FixedPointPerColumn { multipliers, shifts, zero_point } => {
                fixed_point(acc, multipliers[col], shifts[col], zero_point)
            }
            Requant::QLinear { a_scale, b_scale, y_scale, zero_point, precision } => {
                let m = match (a_scale.len(), b_scale.len()) {
                    (1, 1) => self.qlinear[0],
                    (1, _) => self.qlinear[col],
                    (_, 1) => self.qlinear[row],
                    _ => qlinear_multiplier(a_scale[row], b_scale[col], y_scale, precision),
                };
                f64_to_i64_saturating(round_ties_even(i64_to_f64(acc) * m + f64::from(zero_point)))
            }
        };
        O::narrow(clamp_i64(q, lo, hi))
    }
}
