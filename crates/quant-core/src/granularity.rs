//! Granularity: one set of parameters per tensor, or one per channel (row or column) of a
//! row-major matrix.
//!
//! Per-channel quantization of channel `c` gives exactly what per-tensor quantization of that
//! channel alone gives (same scale, same zero point, same codes); an empty channel (a matrix
//! with zero columns, quantized per row) gets scale 1.0 and zero point 0.

use alloc::vec::Vec;

use quant_traits::{MatrixShape, QuantError, QuantFloat, Storage};

use crate::params::QuantParams;
use crate::quantize::{
    check_params, check_units, dequantize_code, quantize_slice, quantize_value, read_codes, write_codes,
};
use crate::range::{check_finite_matrix, column_ranges, range_of_finite};
use crate::scheme::QuantSpec;

/// A matrix axis: which index selects the channel.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Axis {
    /// Axis 0: one channel per row (e.g. per output channel of a `[out, in]` weight).
    Rows,
    /// Axis 1: one channel per column.
    Cols,
}

impl TryFrom<usize> for Axis {
    type Error = QuantError;

    /// `0 -> Rows`, `1 -> Cols`.
    fn try_from(axis: usize) -> Result<Self, QuantError> {
        match axis {
            0 => Ok(Axis::Rows),
            1 => Ok(Axis::Cols),
            _ => Err(QuantError::InvalidAxis { axis }),
        }
    }
}

/// How many parameter sets a matrix gets.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One scale (and zero point) for the whole matrix.
    PerTensor,
    /// One per row ([`Axis::Rows`]) or per column ([`Axis::Cols`]).
    PerChannel(Axis),
}

impl Granularity {
    /// Number of parameter sets for `shape`.
    #[must_use]
    pub fn channels(self, shape: MatrixShape) -> usize {
        match self {
            Granularity::PerTensor => 1,
            Granularity::PerChannel(Axis::Rows) => shape.rows,
            Granularity::PerChannel(Axis::Cols) => shape.cols,
        }
    }

    /// The parameter set that flat element `index` uses.
    #[inline]
    fn channel_of(self, shape: MatrixShape, index: usize) -> usize {
        match self {
            Granularity::PerTensor => 0,
            Granularity::PerChannel(Axis::Rows) => shape.position(index).0,
            Granularity::PerChannel(Axis::Cols) => shape.position(index).1,
        }
    }
}

/// Parameters for each channel of a row-major matrix (see the module docs).
///
/// # Errors
/// [`QuantError::LengthMismatch`] if `x.len()` disagrees with `shape`;
/// [`QuantError::NonFiniteInMatrix`] naming the first NaN or infinite element.
pub fn matrix_params<F: QuantFloat>(
    x: &[F],
    shape: MatrixShape,
    spec: QuantSpec,
    granularity: Granularity,
) -> Result<Vec<QuantParams<F>>, QuantError> {
    shape.check_len("matrix", x.len())?;
    check_finite_matrix(x, shape)?;
    match granularity {
        Granularity::PerTensor => {
            Ok(alloc::vec![QuantParams::from_observed(spec, range_of_finite(x.iter().copied()))?])
        }
        Granularity::PerChannel(Axis::Rows) => (0..shape.rows)
            .map(|r| {
                let row = &x[r * shape.cols..(r + 1) * shape.cols];
                QuantParams::from_observed(spec, range_of_finite(row.iter().copied()))
            })
            .collect(),
        Granularity::PerChannel(Axis::Cols) => {
            column_ranges(x, shape).into_iter().map(|r| QuantParams::from_observed(spec, r)).collect()
        }
    }
}

/// Quantizes a row-major matrix with explicit per-channel parameters into `out`
/// (`Q::units_for(rows * cols)` units, codes in row-major order).
///
/// # Errors
/// [`QuantError::StorageTooNarrow`], [`QuantError::LengthMismatch`] (matrix, parameter count
/// or output), [`QuantError::InvalidZeroPoint`] (all found before anything is written);
/// [`QuantError::NonFiniteInMatrix`], found while converting, so `out` may then hold the codes
/// of the elements before it (as [`quantize_into`](crate::quantize_into)).
pub fn quantize_matrix_into<F: QuantFloat, Q: Storage>(
    x: &[F],
    shape: MatrixShape,
    spec: QuantSpec,
    granularity: Granularity,
    params: &[QuantParams<F>],
    out: &mut [Q],
) -> Result<(), QuantError> {
    spec.check_storage::<Q>()?;
    shape.check_len("matrix", x.len())?;
    QuantError::check_length("parameter sets", granularity.channels(shape), params.len())?;
    for p in params {
        check_params(spec, p)?;
    }
    check_units::<Q>("output codes", x.len(), out.len())?;

    let (lo, hi) = (spec.code_min(), spec.code_max());
    let raw = |p: &QuantParams<F>| (p.scale().to_f64_exact(), p.zero_point());
    match granularity {
        Granularity::PerTensor => {
            let (scale, zp) = raw(&params[0]);
            quantize_slice(x, scale, zp, lo, hi, out).map_err(|i| non_finite(x, shape, i))?;
        }
        // One code per unit: each row is a contiguous slice of the output, with one scale.
        Granularity::PerChannel(Axis::Rows) if Q::CODES_PER_UNIT == 1 && shape.cols > 0 => {
            let rows = x.chunks_exact(shape.cols).zip(out.chunks_exact_mut(shape.cols)).zip(params);
            for (r, ((row, o), p)) in rows.enumerate() {
                let (scale, zp) = raw(p);
                quantize_slice(row, scale, zp, lo, hi, o).map_err(|i| non_finite(x, shape, r * shape.cols + i))?;
            }
        }
        _ => {
            check_finite_matrix(x, shape)?;
            write_codes(
                out,
                x.iter().enumerate().map(|(i, v)| {
                    let (scale, zp) = raw(&params[granularity.channel_of(shape, i)]);
                    quantize_value(v.to_f64_exact(), scale, zp, lo, hi)
                }),
            );
        }
    }
    Ok(())
}

/// The error for the non-finite element at flat `index`.
fn non_finite<F: QuantFloat>(x: &[F], shape: MatrixShape, index: usize) -> QuantError {
    let (row, col) = shape.position(index);
    QuantError::NonFiniteInMatrix { row, col, value: x[index].to_f64_exact() }
}

/// A quantized matrix: row-major codes and one parameter set per channel.
///
/// Built only by [`quantize_matrix`], so the codes, shape and parameters always agree.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedMatrix<F, Q> {
    codes: Vec<Q>,
    shape: MatrixShape,
    spec: QuantSpec,
    granularity: Granularity,
    params: Vec<QuantParams<F>>,
}

impl<F: QuantFloat, Q: Storage> QuantizedMatrix<F, Q> {
    /// The storage units, row-major, `Q::CODES_PER_UNIT` codes to a unit.
    #[must_use]
    pub fn codes(&self) -> &[Q] {
        &self.codes
    }

    /// Takes the storage units out.
    #[must_use]
    pub fn into_codes(self) -> Vec<Q> {
        self.codes
    }

    /// The matrix shape.
    #[must_use]
    pub fn shape(&self) -> MatrixShape {
        self.shape
    }

    /// The scheme and width.
    #[must_use]
    pub fn spec(&self) -> QuantSpec {
        self.spec
    }

    /// Per tensor or per channel (and along which axis).
    #[must_use]
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// One parameter set per channel ([`Granularity::channels`] of them).
    #[must_use]
    pub fn params(&self) -> &[QuantParams<F>] {
        &self.params
    }

    /// The code at `(row, col)`.
    #[must_use]
    pub fn code(&self, row: usize, col: usize) -> i64 {
        Q::code_at(&self.codes, row * self.shape.cols + col)
    }

    /// Dequantizes the whole matrix, row-major.
    #[must_use]
    pub fn dequantize(&self) -> Vec<F> {
        let len = self.shape.rows * self.shape.cols; // validated when the matrix was built
        read_codes(&self.codes, len)
            .enumerate()
            .map(|(i, q)| {
                let p = &self.params[self.granularity.channel_of(self.shape, i)];
                dequantize_code(q, p.scale(), p.zero_point())
            })
            .collect()
    }
}

/// Quantizes a row-major matrix per tensor or per channel, parameters from the data.
///
/// # Errors
/// As [`matrix_params`] and [`quantize_matrix_into`].
///
/// # Example
/// ```
/// use quant_core::{quantize_matrix, Axis, Granularity, QuantSpec};
/// use quant_traits::MatrixShape;
///
/// // Row 0 is small, row 1 large: per-row scales keep row 0's precision.
/// let w = [0.01f32, -0.03, 12.0, -5.0];
/// let q = quantize_matrix::<f32, i8>(&w, MatrixShape::new(2, 2), QuantSpec::symmetric(8)?,
///                                    Granularity::PerChannel(Axis::Rows))?;
/// assert_eq!(q.params()[0].scale(), 0.03 / 127.0);
/// assert_eq!(q.params()[1].scale(), 12.0 / 127.0);
/// assert_eq!(q.codes(), [42, -127, 127, -53]); // 42.33 -> 42, -52.92 -> -53
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn quantize_matrix<F: QuantFloat, Q: Storage>(
    x: &[F],
    shape: MatrixShape,
    spec: QuantSpec,
    granularity: Granularity,
) -> Result<QuantizedMatrix<F, Q>, QuantError> {
    spec.check_storage::<Q>()?;
    let params = matrix_params(x, shape, spec, granularity)?;
    let mut codes = alloc::vec![Q::default(); Q::units_for(x.len())];
    quantize_matrix_into(x, shape, spec, granularity, &params, &mut codes)?;
    Ok(QuantizedMatrix { codes, shape, spec, granularity, params })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_from_usize() {
        assert_eq!(Axis::try_from(0), Ok(Axis::Rows));
        assert_eq!(Axis::try_from(1), Ok(Axis::Cols));
        assert_eq!(Axis::try_from(2), Err(QuantError::InvalidAxis { axis: 2 }));
    }

    #[test]
    fn per_column_scales() {
        let spec = QuantSpec::symmetric(8).expect("valid");
        let x = [1.0f64, 4.0, -2.0, 0.0];
        let q = quantize_matrix::<f64, i16>(&x, MatrixShape::new(2, 2), spec, Granularity::PerChannel(Axis::Cols))
            .expect("valid");
        assert_eq!(q.params().iter().map(|p| p.scale()).collect::<Vec<_>>(), [2.0 / 127.0, 4.0 / 127.0]);
        assert_eq!(q.codes(), [64, 127, -127, 0]); // 63.5 ties to 64
    }

    #[test]
    fn shape_and_parameter_count_are_checked() {
        let spec = QuantSpec::symmetric(8).expect("valid");
        assert_eq!(
            quantize_matrix::<f32, i8>(&[1.0; 5], MatrixShape::new(2, 3), spec, Granularity::PerTensor),
            Err(QuantError::LengthMismatch { what: "matrix", expected: 6, found: 5 })
        );
        let p = [QuantParams::identity(); 2];
        assert_eq!(
            quantize_matrix_into(
                &[1.0f32; 6],
                MatrixShape::new(2, 3),
                spec,
                Granularity::PerChannel(Axis::Cols),
                &p,
                &mut [0i8; 6]
            ),
            Err(QuantError::LengthMismatch { what: "parameter sets", expected: 3, found: 2 })
        );
    }

    #[test]
    fn empty_rows_get_identity_params() {
        let spec = QuantSpec::asymmetric(8).expect("valid");
        let q = quantize_matrix::<f32, u8>(&[], MatrixShape::new(3, 0), spec, Granularity::PerChannel(Axis::Rows))
            .expect("valid");
        assert_eq!(q.params(), [QuantParams::identity(); 3]);
        assert!(q.codes().is_empty());
    }
}
