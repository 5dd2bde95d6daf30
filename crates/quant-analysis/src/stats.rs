//! The statistics and how they are computed (see the crate docs for the conventions).

use core::fmt;

use quant_core::dequantize_code;
use quant_traits::cast::{abs, exponent, scale_by_pow2, usize_to_f64};
use quant_traits::{QuantError, QuantFloat};

/// Error statistics of a reconstruction `x̂` of an original `x`.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct ErrorStats {
    /// Number of elements compared.
    pub len: usize,
    /// Mean squared error, `mean((x - x̂)^2)`.
    pub mse: f64,
    /// Root mean squared error, `sqrt(mse)`.
    pub rmse: f64,
    /// Largest absolute error, `max |x - x̂|`.
    pub max_error: f64,
    /// Index of the (first) element with the largest error; `None` for an empty tensor.
    pub max_error_index: Option<usize>,
    /// Mean error `mean(x - x̂)`: a systematic bias of the rounding shows here.
    pub mean_error: f64,
    /// Signal power, `mean(x^2)`.
    pub signal_power: f64,
    /// Signal-to-noise ratio in decibels, `10 · log10(signal_power / mse)`; `±inf` at the edges
    /// described in the crate docs, never NaN.
    pub snr_db: f64,
}

impl fmt::Display for ErrorStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MSE {:.4e}, max error {:.4e}", self.mse, self.max_error)?;
        if let Some(i) = self.max_error_index {
            write!(f, " (element {i})")?;
        }
        write!(f, ", SNR {:.2} dB", self.snr_db)
    }
}

/// `10 · log10(signal_power / noise_power)`, with `+inf` for zero noise (even with zero
/// signal) and `-inf` for zero signal with nonzero noise. Both powers must be `>= 0`.
#[must_use]
pub fn snr_db(signal_power: f64, noise_power: f64) -> f64 {
    if noise_power == 0.0 {
        return f64::INFINITY;
    }
    if signal_power == 0.0 {
        return f64::NEG_INFINITY;
    }
    let ratio = signal_power / noise_power;
    if ratio.is_normal() {
        10.0 * ratio.log10()
    } else {
        // The ratio itself over- or underflows: subtract the logarithms instead.
        10.0 * (signal_power.log10() - noise_power.log10())
    }
}

/// Neumaier's compensated sum: the rounding error of each addition is carried separately.
#[derive(Default)]
struct Sum {
    sum: f64,
    carry: f64,
}

impl Sum {
    fn add(&mut self, v: f64) {
        let t = self.sum + v;
        if abs(self.sum) >= abs(v) {
            self.carry += (self.sum - t) + v;
        } else {
            self.carry += (v - t) + self.sum;
        }
        self.sum = t;
    }

    fn total(&self) -> f64 {
        self.sum + self.carry
    }
}

/// Compares `original` with `reconstructed` element by element.
///
/// # Errors
/// [`QuantError::LengthMismatch`] if the lengths differ; [`QuantError::NonFinite`] or
/// [`QuantError::NonFiniteReconstruction`] naming the first NaN or infinite element.
///
/// # Example
/// ```
/// use quant_analysis::error_stats;
///
/// let e = error_stats(&[1.0f32, 2.0, 3.0], &[1.0, 2.5, 3.0])?;
/// assert_eq!((e.max_error, e.max_error_index), (0.5, Some(1)));
/// assert_eq!(e.mse, 0.25 / 3.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn error_stats<F: QuantFloat>(original: &[F], reconstructed: &[F]) -> Result<ErrorStats, QuantError> {
    QuantError::check_length("reconstructed vs original", original.len(), reconstructed.len())?;
    quant_core::check_finite(original)?;
    if let Some(index) = reconstructed.iter().position(|v| !v.is_finite()) {
        return Err(QuantError::NonFiniteReconstruction { index, value: reconstructed[index].to_f64_exact() });
    }
    Ok(stats_of_finite(original.iter().zip(reconstructed).map(|(x, y)| (x.to_f64_exact(), y.to_f64_exact()))))
}

/// The statistics of validated, finite pairs `(x, x̂)`.
fn stats_of_finite(pairs: impl Iterator<Item = (f64, f64)> + Clone) -> ErrorStats {
    let amax = pairs.clone().fold(0.0f64, |m, (x, y)| m.max(abs(x)).max(abs(y)));
    // Scale so the largest magnitude is in [1, 2): squares of differences stay <= 16.
    let e = if amax == 0.0 { 0 } else { exponent(amax).max(-1074) };
    let (mut sq_err, mut sq_sig, mut err) = (Sum::default(), Sum::default(), Sum::default());
    let (mut len, mut max_d, mut max_i) = (0usize, 0.0f64, None);
    for (i, (x, y)) in pairs.enumerate() {
        let (xs, ys) = (scale_by_pow2(x, -e), scale_by_pow2(y, -e));
        let d = xs - ys;
        sq_err.add(d * d);
        sq_sig.add(xs * xs);
        err.add(d);
        if max_i.is_none() || abs(d) > max_d {
            max_d = abs(d);
            max_i = Some(i);
        }
        len += 1;
    }
    if len == 0 {
        return ErrorStats {
            len: 0,
            mse: 0.0,
            rmse: 0.0,
            max_error: 0.0,
            max_error_index: None,
            mean_error: 0.0,
            signal_power: 0.0,
            snr_db: f64::INFINITY,
        };
    }
    let n = usize_to_f64(len);
    let mse_scaled = sq_err.total() / n;
    let mse = scale_by_pow2(mse_scaled, 2 * e);
    ErrorStats {
        len,
        mse,
        rmse: scale_by_pow2(mse_scaled.sqrt(), e),
        max_error: scale_by_pow2(max_d, e),
        max_error_index: max_i,
        mean_error: scale_by_pow2(err.total() / n, e),
        signal_power: scale_by_pow2(sq_sig.total() / n, 2 * e),
        // The common scale 2^(2e) and the 1/n cancel in the ratio.
        snr_db: snr_db(sq_sig.total(), sq_err.total()),
    }
}

/// The seed API: dequantizes `quantized` with `scale` (and `zero_point` when asymmetric) into
/// `F`, exactly as `quant_core`'s dequantizers do, and compares with `original`.
///
/// `Q` is any integer code type (`i32` from `quantize_symmetric`, `u32` from
/// `quantize_asymmetric`, `i8`, ...). With `symmetric = true` the zero point must be 0.
/// The comparison is against the dequantized values *in `F`*, as a user of the tensor sees
/// them.
///
/// # Errors
/// [`QuantError::LengthMismatch`] if the lengths differ; [`QuantError::InvalidScale`] unless
/// `scale` is finite and positive; [`QuantError::InvalidZeroPoint`] for a nonzero zero point
/// with `symmetric = true`; [`QuantError::NonFinite`] naming a NaN or infinite original.
///
/// # Example
/// ```
/// use quant_analysis::quantization_error;
/// use quant_core::quantize_asymmetric;
///
/// let x = [0.0f32, 0.5, 1.0, 1.5, 2.0, 0.1];
/// let (q, scale, zp) = quantize_asymmetric(&x, 8)?;
/// let e = quantization_error(&x, &q, scale, i64::from(zp), false)?;
/// assert!(e.max_error <= f64::from(scale) / 2.0);
/// assert!(e.snr_db > 45.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn quantization_error<F: QuantFloat, Q: Copy + Into<i64>>(
    original: &[F],
    quantized: &[Q],
    scale: F,
    zero_point: i64,
    symmetric: bool,
) -> Result<ErrorStats, QuantError> {
    QuantError::check_length("quantized vs original", original.len(), quantized.len())?;
    QuantError::check_scale(scale.to_f64_exact())?;
    if symmetric && zero_point != 0 {
        return Err(QuantError::InvalidZeroPoint { zero_point, min: 0, max: 0 });
    }
    quant_core::check_finite(original)?;
    let zp = if symmetric { 0 } else { zero_point };
    Ok(stats_of_finite(
        original
            .iter()
            .zip(quantized)
            .map(|(x, &q)| (x.to_f64_exact(), dequantize_code(q.into(), scale, zp).to_f64_exact())),
    ))
}
