//! Quantization error analysis: how much precision a quantized tensor lost.
//!
//! * [`quantization_error`] (the seed API): dequantize codes with a scale and zero point, then
//!   compare with the original.
//! * [`error_stats`]: compare any original with any reconstruction of the same length.
//! * [`ErrorStats`]: MSE, RMSE, max error (and where), mean error (bias), signal power, SNR.
//! * [`median`]: the median of a set of figures (per-tensor SNRs, benchmark timings).
//!
//! # Conventions
//! * `mse = mean((x - x̂)^2)`, `signal_power = mean(x^2)`,
//!   `snr_db = 10 · log10(signal_power / mse)`.
//! * `snr_db` is `+inf` when the noise is zero (a lossless reconstruction, even of an all-zero
//!   signal) and `-inf` when the signal is zero but the noise is not. It is never NaN.
//! * An empty tensor has zero noise and zero signal: every statistic 0, `snr_db = +inf`.
//! * Everything is computed in `f64` with compensated (Neumaier) sums, after scaling all
//!   values by one power of two so that no square overflows or underflows: tensors near
//!   `f64::MAX` or deep in the subnormals give the right SNR. Scaling by a power of two is
//!   exact, so ordinary tensors get exactly the unscaled arithmetic. A statistic whose true
//!   value exceeds `f64::MAX` (the MSE of an error near `f64::MAX`) is reported as `+inf`, the
//!   IEEE rounding of that value; `snr_db` stays finite and right.
//!
//! # Example
//! ```
//! use quant_analysis::quantization_error;
//! use quant_core::quantize_symmetric;
//!
//! let x = [1.0f64, -0.5, 0.3, -1.0, 0.0, 0.7];
//! let (q, scale) = quantize_symmetric(&x, 8)?;
//! let e = quantization_error(&x, &q, scale, 0, true)?;
//! assert!((e.mse - 2.79e-6).abs() < 1e-8);
//! assert!((e.max_error - 0.003937).abs() < 1e-6);
//! assert!((e.snr_db - 52.28).abs() < 0.01);
//! println!("{e}"); // MSE 2.7900e-6, max error 3.9370e-3 (element 1), SNR 52.28 dB
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
// A numeric `as` cast outside `quant_traits::cast` states why it is right where it is.
#![cfg_attr(not(test), deny(clippy::as_conversions))]

mod stats;

pub use stats::{error_stats, quantization_error, snr_db, ErrorStats};

/// The median of `values`: the middle value in `f64::total_cmp` order, or the mean of the two
/// middle values for an even count; NaN for none.
///
/// ```
/// assert_eq!(quant_analysis::median(&[3.0, 1.0, 2.0]), 2.0);
/// assert_eq!(quant_analysis::median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
/// assert!(quant_analysis::median(&[]).is_nan());
/// ```
#[must_use]
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub use quant_traits::QuantError;
