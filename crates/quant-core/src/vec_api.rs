//! The `Vec` API ("the seed API"): the functions of the original specification, with its
//! names and shapes (`Vec<i32>` / `Vec<u32>` codes, `Vec<Vec<_>>` matrices).
//!
//! Each is a thin layer over the generic engine ([`quantize`](crate::quantize),
//! [`quantize_matrix`](crate::quantize_matrix), [`QuantParams`](crate::QuantParams)), so the
//! conventions are the engine's: ties to even, round before adding the zero point, the
//! asymmetric range widened to include 0, scale 1.0 for all-zero or empty input, `f64`
//! arithmetic with the scale rounded once to `F`.

use alloc::vec::Vec;

use quant_traits::cast::narrow;
use quant_traits::{MatrixShape, QuantError, QuantFloat};

use crate::granularity::{quantize_matrix, Axis, Granularity};
use crate::params::QuantParams;
use crate::quantize::{dequantize_code, quantize};
use crate::scheme::QuantSpec;

/// Symmetric quantization to `bits`-bit signed codes: returns `(codes, scale)` with
/// `scale = max|x| / (2^(bits-1) - 1)` and codes in `-2^(bits-1) ..= 2^(bits-1) - 1`.
///
/// All-zero or empty input gives scale 1.0 and all-zero codes.
///
/// # Errors
/// [`QuantError::InvalidBits`] unless `2 <= bits <= 32`; [`QuantError::NonFinite`] naming the
/// first NaN or infinite element.
///
/// # Example
/// ```
/// use quant_core::quantize_symmetric;
///
/// let (q, scale) = quantize_symmetric(&[1.0f64, -0.5, 0.3, -1.0, 0.0, 0.7], 8)?;
/// assert_eq!(scale, 1.0 / 127.0);
/// assert_eq!(q, [127, -64, 38, -127, 0, 89]); // -63.5 rounds to even: -64
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn quantize_symmetric<F: QuantFloat>(tensor: &[F], bits: u32) -> Result<(Vec<i32>, F), QuantError> {
    let q = quantize::<F, i32>(tensor, QuantSpec::symmetric(bits)?)?;
    let scale = q.params().scale();
    Ok((q.into_codes(), scale))
}

/// Symmetric dequantization: `x = q * scale`, in `f64`, rounded once to `F` (saturating at
/// `±F::MAX`).
///
/// This function cannot fail, so it does not check `scale`: pass the scale
/// [`quantize_symmetric`] returned. (A NaN scale gives NaN values; for checked use build a
/// [`QuantParams`](crate::QuantParams) and call [`dequantize_into`](crate::dequantize_into).)
///
/// # Example
/// ```
/// use quant_core::dequantize_symmetric;
///
/// let x = dequantize_symmetric(&[127, -64, 0], 1.0f32 / 127.0);
/// assert_eq!(x[0], 1.0);
/// assert!((x[1] - -0.504).abs() < 1e-3);
/// ```
#[must_use]
pub fn dequantize_symmetric<F: QuantFloat>(quantized: &[i32], scale: F) -> Vec<F> {
    quantized.iter().map(|&q| dequantize_code(i64::from(q), scale, 0)).collect()
}

/// Asymmetric quantization to `bits`-bit unsigned codes: returns `(codes, scale, zero_point)`.
///
/// With `lo = min(min x, 0)` and `hi = max(max x, 0)`: `scale = (hi - lo) / (2^bits - 1)`,
/// `zero_point = round_ties_even(-lo / scale)` clamped to `0 ..= 2^bits - 1`, and
/// `q = clamp(round_ties_even(x / scale) + zero_point, 0, 2^bits - 1)`. Widening the range to
/// include 0 makes 0.0 exactly representable (code = zero point); for data that straddles 0 it
/// is the seed formula unchanged. All-zero or empty input gives scale 1.0, zero point 0.
///
/// # Errors
/// [`QuantError::InvalidBits`] unless `2 <= bits <= 32`; [`QuantError::NonFinite`] naming the
/// first NaN or infinite element.
///
/// # Example
/// ```
/// use quant_core::quantize_asymmetric;
///
/// let (q, scale, zp) = quantize_asymmetric(&[0.0f64, 0.5, 1.0, 1.5, 2.0, 0.1], 8)?;
/// assert_eq!((scale, zp), (2.0 / 255.0, 0));
/// assert_eq!(q, [0, 64, 128, 191, 255, 13]); // 127.5 rounds to even: 128
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn quantize_asymmetric<F: QuantFloat>(tensor: &[F], bits: u32) -> Result<(Vec<u32>, F, u32), QuantError> {
    let q = quantize::<F, u32>(tensor, QuantSpec::asymmetric(bits)?)?;
    let (scale, zero_point) = (q.params().scale(), narrow::to_u32(q.params().zero_point()));
    Ok((q.into_codes(), scale, zero_point))
}

/// Asymmetric dequantization: `x = (q - zero_point) * scale`, in `f64` (the difference is
/// exact), rounded once to `F` (saturating at `±F::MAX`).
///
/// Like [`dequantize_symmetric`], this cannot fail and does not check `scale`.
///
/// # Example
/// ```
/// use quant_core::dequantize_asymmetric;
///
/// let x = dequantize_asymmetric(&[0, 128, 255], 2.0f64 / 255.0, 0);
/// assert_eq!(x[2], 2.0);
/// ```
#[must_use]
pub fn dequantize_asymmetric<F: QuantFloat>(quantized: &[u32], scale: F, zero_point: u32) -> Vec<F> {
    let zp = i64::from(zero_point);
    quantized.iter().map(|&q| dequantize_code(i64::from(q), scale, zp)).collect()
}

/// Symmetric per-channel quantization of a matrix given as rows: one scale per row
/// (`axis = 0`) or per column (`axis = 1`), each computed exactly as [`quantize_symmetric`]
/// would for that channel alone. Returns `(codes, scales)` with `codes` in the input's shape and
/// `scales[c]` the scale of channel `c`.
///
/// # Errors
/// [`QuantError::InvalidBits`], [`QuantError::InvalidAxis`] (axis not 0 or 1),
/// [`QuantError::RaggedMatrix`] (rows of different lengths),
/// [`QuantError::NonFiniteInMatrix`] naming the row and column of a NaN or infinity.
///
/// # Example
/// ```
/// use quant_core::quantize_per_channel;
///
/// let w = vec![vec![0.5f32, -1.0], vec![20.0, 10.0]];
/// let (q, scales) = quantize_per_channel(&w, 0, 8)?;
/// assert_eq!(scales, [1.0 / 127.0, 20.0 / 127.0]);
/// assert_eq!(q, [vec![64, -127], vec![127, 64]]); // 63.5 rounds to even
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn quantize_per_channel<F: QuantFloat>(
    matrix: &[Vec<F>],
    axis: usize,
    bits: u32,
) -> Result<(Vec<Vec<i32>>, Vec<F>), QuantError> {
    let spec = QuantSpec::symmetric(bits)?;
    let axis = Axis::try_from(axis)?;
    let shape = MatrixShape::of_rows("input", matrix)?;
    let flat: Vec<F> = matrix.iter().flatten().copied().collect();
    let q = quantize_matrix::<F, i32>(&flat, shape, spec, Granularity::PerChannel(axis))?;
    let scales = q.params().iter().map(QuantParams::scale).collect();
    let codes = q.into_codes();
    let rows = if shape.cols == 0 {
        alloc::vec![Vec::new(); shape.rows]
    } else {
        codes.chunks_exact(shape.cols).map(<[i32]>::to_vec).collect()
    };
    Ok((rows, scales))
}
