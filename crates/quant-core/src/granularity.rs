//! Granularity: one set of parameters per tensor, per channel (row or column), or per group of
//! consecutive values along a row or a column of a row-major matrix.
//!
//! The three are one concept here: per-channel is per-group with one group spanning the whole
//! row (or column), and every loop below works on those blocks. The parameter sets are ordered
//! as ONNX lays out the scale tensor of blocked quantization:
//!
//! | granularity | parameter sets | set of element `(r, c)` |
//! |---|---|---|
//! | `PerTensor` | 1 | 0 |
//! | `PerChannel(Rows)` | `rows` | `r` |
//! | `PerChannel(Cols)` | `cols` | `c` |
//! | `PerGroup { axis: Cols, size: g }` | `rows · ⌈cols/g⌉` | `r · ⌈cols/g⌉ + c / g` |
//! | `PerGroup { axis: Rows, size: g }` | `⌈rows/g⌉ · cols` | `(r / g) · cols + c` |
//!
//! `axis` of a group is the axis that is split into blocks (as ONNX's `axis` with
//! `block_size`): `Cols` groups `g` consecutive values of a row (the usual choice for a
//! `[out, in]` weight, grouping along the input), `Rows` groups `g` consecutive values of a
//! column. The last group of a row (column) is shorter when `g` does not divide its length.
//!
//! Each channel or group gets exactly the parameters (and codes) per-tensor quantization of
//! its values alone would give. An empty channel (a matrix with zero columns, quantized per
//! row) gets scale 1.0 and zero point 0; a group size of 0 is an error.

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

/// How many parameter sets a matrix gets (see the module docs for their order).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One scale (and zero point) for the whole matrix.
    PerTensor,
    /// One per row ([`Axis::Rows`]) or per column ([`Axis::Cols`]).
    PerChannel(Axis),
    /// One per group of `size` consecutive values along `axis` (the axis split into blocks):
    /// `Cols` groups within each row, `Rows` within each column. The last group of a row
    /// (column) may be shorter.
    PerGroup {
        /// The axis split into groups.
        axis: Axis,
        /// Values per group (at least 1; typical 32, 64, 128).
        size: usize,
    },
}

/// The block layout every granularity reduces to (see the module docs).
#[derive(Copy, Clone, Debug)]
enum Layout {
    /// One block: the whole matrix.
    Whole,
    /// Blocks of `size` consecutive values along `along`, `count` of them per line (a line is a
    /// row when `along` is `Cols`, a column when it is `Rows`).
    Blocks { along: Axis, size: usize, count: usize },
}

impl Granularity {
    /// Checks the group size.
    ///
    /// # Errors
    /// [`QuantError::InvalidGroupSize`] for `PerGroup { size: 0, .. }`.
    pub fn check(self) -> Result<(), QuantError> {
        match self {
            Granularity::PerGroup { size: 0, .. } => Err(QuantError::InvalidGroupSize),
            _ => Ok(()),
        }
    }

    /// The block layout for `shape` (the group size must have been checked).
    fn layout(self, shape: MatrixShape) -> Layout {
        match self {
            Granularity::PerTensor => Layout::Whole,
            Granularity::PerChannel(Axis::Rows) => {
                Layout::Blocks { along: Axis::Cols, size: shape.cols.max(1), count: 1 }
            }
            Granularity::PerChannel(Axis::Cols) => {
                Layout::Blocks { along: Axis::Rows, size: shape.rows.max(1), count: 1 }
            }
            Granularity::PerGroup { axis, size } => {
                let size = size.max(1);
                let line = if axis == Axis::Cols { shape.cols } else { shape.rows };
                Layout::Blocks { along: axis, size, count: line.div_ceil(size) }
            }
        }
    }

    /// Number of parameter sets for `shape` (0 groups for `PerGroup { size: 0, .. }`, which
    /// the quantizers reject).
    #[must_use]
    pub fn channels(self, shape: MatrixShape) -> usize {
        if self.check().is_err() {
            return 0;
        }
        match self.layout(shape) {
            Layout::Whole => 1,
            Layout::Blocks { along: Axis::Cols, count, .. } => shape.rows * count,
            Layout::Blocks { along: Axis::Rows, count, .. } => count * shape.cols,
        }
    }

    /// The values of each parameter set, in order (empty channels included; the group size
    /// must have been checked).
    pub(crate) fn blocks<F: Copy>(self, shape: MatrixShape, x: &[F]) -> Vec<Vec<F>> {
        let layout = self.layout(shape);
        let mut blocks = alloc::vec![Vec::new(); self.channels(shape)];
        if !blocks.is_empty() {
            for (i, &v) in x.iter().enumerate() {
                blocks[Granularity::channel_of(layout, shape, i)].push(v);
            }
        }
        blocks
    }

    /// The parameter set that flat element `index` uses.
    #[inline]
    fn channel_of(layout: Layout, shape: MatrixShape, index: usize) -> usize {
        let (r, c) = shape.position(index);
        match layout {
            Layout::Whole => 0,
            Layout::Blocks { along: Axis::Cols, size, count } => r * count + c / size,
            Layout::Blocks { along: Axis::Rows, size, .. } => (r / size) * shape.cols + c,
        }
    }
}

/// Parameters for each channel or group of a row-major matrix (see the module docs).
///
/// # Errors
/// [`QuantError::InvalidGroupSize`] for a group size of 0;
/// [`QuantError::LengthMismatch`] if `x.len()` disagrees with `shape`;
/// [`QuantError::NonFiniteInMatrix`] naming the first NaN or infinite element.
pub fn matrix_params<F: QuantFloat>(
    x: &[F],
    shape: MatrixShape,
    spec: QuantSpec,
    granularity: Granularity,
) -> Result<Vec<QuantParams<F>>, QuantError> {
    granularity.check()?;
    shape.check_len("matrix", x.len())?;
    check_finite_matrix(x, shape)?;
    let from = |values: &[F]| QuantParams::from_observed(spec, range_of_finite(values.iter().copied()));
    match granularity.layout(shape) {
        Layout::Whole => Ok(alloc::vec![from(x)?]),
        // Each row's groups are contiguous slices of it.
        Layout::Blocks { along: Axis::Cols, size, count } => {
            let mut params = Vec::with_capacity(shape.rows * count);
            for r in 0..shape.rows {
                let row = &x[r * shape.cols..(r + 1) * shape.cols];
                if row.is_empty() && count == 1 {
                    params.push(from(row)?); // an empty channel: scale 1, zero point 0
                }
                for group in row.chunks(size) {
                    params.push(from(group)?);
                }
            }
            Ok(params)
        }
        // A block of `size` rows gives one range per column.
        Layout::Blocks { along: Axis::Rows, size, count } => {
            let mut params = Vec::with_capacity(count * shape.cols);
            for b in 0..count {
                let rows = size.min(shape.rows - b * size);
                let block = &x[b * size * shape.cols..(b * size + rows) * shape.cols];
                for r in column_ranges(block, MatrixShape::new(rows, shape.cols)) {
                    params.push(QuantParams::from_observed(spec, r)?);
                }
            }
            Ok(params)
        }
    }
}

/// Quantizes a row-major matrix with explicit per-channel or per-group parameters into `out`
/// (`Q::units_for(rows * cols)` units, codes in row-major order).
///
/// # Errors
/// [`QuantError::StorageTooNarrow`], [`QuantError::InvalidGroupSize`],
/// [`QuantError::LengthMismatch`] (matrix, parameter count or output),
/// [`QuantError::InvalidZeroPoint`] (all found before anything is written);
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
    check_call::<F, Q>(x, shape, spec, granularity, params, out.len())?;
    let (lo, hi) = (spec.code_min(), spec.code_max());
    let raw = |p: &QuantParams<F>| (p.scale().to_f64_exact(), p.zero_point());
    let layout = granularity.layout(shape);
    match layout {
        Layout::Whole => {
            let (scale, zp) = raw(&params[0]);
            quantize_slice(x, scale, zp, lo, hi, out).map_err(|i| non_finite(x, shape, i))?;
        }
        // One code per unit: each group is a contiguous run of the output with one scale, so
        // it goes through the (SIMD) slice quantizer.
        Layout::Blocks { along: Axis::Cols, size, count } if Q::CODES_PER_UNIT == 1 && shape.cols > 0 => {
            let rows = x.chunks_exact(shape.cols).zip(out.chunks_exact_mut(shape.cols));
            for (r, (row, o)) in rows.enumerate() {
                let groups = row.chunks(size).zip(o.chunks_mut(size)).zip(&params[r * count..(r + 1) * count]);
                for (j, ((g, og), p)) in groups.enumerate() {
                    let (scale, zp) = raw(p);
                    quantize_slice(g, scale, zp, lo, hi, og)
                        .map_err(|i| non_finite(x, shape, r * shape.cols + j * size + i))?;
                }
            }
        }
        // Packed storage whose rows and groups start on whole units: each group through the
        // (SIMD) slice quantizer into a small byte buffer on the stack, then packed.
        Layout::Blocks { along: Axis::Cols, size, count }
            if Q::CODES_PER_UNIT > 1
                && shape.cols > 0
                && shape.cols.is_multiple_of(Q::CODES_PER_UNIT)
                && size % Q::CODES_PER_UNIT == 0 =>
        {
            let packed = if spec.is_signed() {
                quantize_packed::<F, Q, i8>(x, shape, size, count, params, lo, hi, out)
            } else {
                quantize_packed::<F, Q, u8>(x, shape, size, count, params, lo, hi, out)
            };
            packed.map_err(|i| non_finite(x, shape, i))?;
        }
        _ => {
            check_finite_matrix(x, shape)?;
            write_codes(
                out,
                x.iter().enumerate().map(|(i, v)| {
                    let (scale, zp) = raw(&params[Granularity::channel_of(layout, shape, i)]);
                    quantize_value(v.to_f64_exact(), scale, zp, lo, hi)
                }),
            );
        }
    }
    Ok(())
}

/// Codes per stack buffer of [`quantize_packed`] (a multiple of every `CODES_PER_UNIT`).
const PACK_CHUNK: usize = 256;

/// The packed-storage path of [`quantize_matrix_into`]: groups of `size` values along each row
/// (rows and groups starting on whole units), quantized into `T` (`i8` or `u8`, which hold every
/// code of a packed type) chunk by chunk, then packed. `Err(i)`: element `i` is not finite.
#[allow(clippy::too_many_arguments)]
fn quantize_packed<F: QuantFloat, Q: Storage, T: Storage + Into<i64>>(
    x: &[F],
    shape: MatrixShape,
    size: usize,
    count: usize,
    params: &[QuantParams<F>],
    lo: i64,
    hi: i64,
    out: &mut [Q],
) -> Result<(), usize> {
    let per = Q::CODES_PER_UNIT;
    let mut buf = [T::default(); PACK_CHUNK];
    for (r, row) in x.chunks_exact(shape.cols).enumerate() {
        for (j, (group, p)) in row.chunks(size).zip(&params[r * count..(r + 1) * count]).enumerate() {
            let (scale, zp) = (p.scale().to_f64_exact(), p.zero_point());
            let first = r * shape.cols + j * size;
            for (k, part) in group.chunks(PACK_CHUNK).enumerate() {
                let at = first + k * PACK_CHUNK;
                let codes = &mut buf[..part.len()];
                quantize_slice(part, scale, zp, lo, hi, codes).map_err(|i| at + i)?;
                let units = &mut out[at / per..(at + part.len()).div_ceil(per)];
                for (u, c) in units.iter_mut().zip(codes.chunks(per)) {
                    let mut lanes = [0i64; 8];
                    for (l, &v) in lanes.iter_mut().zip(c) {
                        *l = v.into();
                    }
                    *u = Q::pack(&lanes[..c.len()]);
                }
            }
        }
    }
    Ok(())
}

/// The checks of a call with explicit parameters, before anything is written: storage wide
/// enough, group size, matrix length, parameter count and values, output length.
fn check_call<F: QuantFloat, Q: Storage>(
    x: &[F],
    shape: MatrixShape,
    spec: QuantSpec,
    granularity: Granularity,
    params: &[QuantParams<F>],
    out_units: usize,
) -> Result<(), QuantError> {
    spec.check_storage::<Q>()?;
    granularity.check()?;
    shape.check_len("matrix", x.len())?;
    QuantError::check_length("parameter sets", granularity.channels(shape), params.len())?;
    for p in params {
        check_params(spec, p)?;
    }
    crate::arch::check()?;
    check_units::<Q>("output codes", x.len(), out_units)
}

/// [`quantize_matrix_into`]'s checks, then every code from `code(value, its parameters)`:
/// the path of the conventions other than the default.
pub(crate) fn quantize_matrix_with<F: QuantFloat, Q: Storage>(
    x: &[F],
    shape: MatrixShape,
    spec: QuantSpec,
    granularity: Granularity,
    params: &[QuantParams<F>],
    out: &mut [Q],
    code: impl Fn(F, &QuantParams<F>) -> i64,
) -> Result<(), QuantError> {
    check_call::<F, Q>(x, shape, spec, granularity, params, out.len())?;
    check_finite_matrix(x, shape)?;
    let layout = granularity.layout(shape);
    write_codes(out, x.iter().enumerate().map(|(i, &v)| code(v, &params[Granularity::channel_of(layout, shape, i)])));
    Ok(())
}

/// Dequantizes a row-major matrix of codes (`Q::units_for(rows * cols)` units, as
/// [`quantize_matrix_into`] writes them) with one parameter set per channel or group, into
/// `out` (`rows * cols` values): `(q - zero_point) · scale`, rounded once to `F` (saturating at
/// `±F::MAX`). The inverse of [`quantize_matrix_into`], for codes read back from storage.
///
/// # Errors
/// [`QuantError::InvalidGroupSize`]; [`QuantError::LengthMismatch`] (codes, parameter sets or
/// output), all before anything is written.
pub fn dequantize_matrix_into<F: QuantFloat, Q: Storage>(
    codes: &[Q],
    shape: MatrixShape,
    granularity: Granularity,
    params: &[QuantParams<F>],
    out: &mut [F],
) -> Result<(), QuantError> {
    granularity.check()?;
    shape.check_len("output", out.len())?;
    check_units::<Q>("codes", out.len(), codes.len())?;
    QuantError::check_length("parameter sets", granularity.channels(shape), params.len())?;
    crate::arch::check()?;
    dequantize_codes(codes, shape, granularity.layout(shape), params, out);
    Ok(())
}

/// [`dequantize_matrix_into`] after its checks.
fn dequantize_codes<F: QuantFloat, Q: Storage>(
    codes: &[Q],
    shape: MatrixShape,
    layout: Layout,
    params: &[QuantParams<F>],
    out: &mut [F],
) {
    let len = out.len();
    for ((i, q), o) in read_codes(codes, len).enumerate().zip(out.iter_mut()) {
        let p = &params[Granularity::channel_of(layout, shape, i)];
        *o = dequantize_code(q, p.scale(), p.zero_point());
    }
}

/// The error for the non-finite element at flat `index`.
fn non_finite<F: QuantFloat>(x: &[F], shape: MatrixShape, index: usize) -> QuantError {
    let (row, col) = shape.position(index);
    QuantError::NonFiniteInMatrix { row, col, value: x[index].to_f64_exact() }
}

/// A quantized matrix: row-major codes and one parameter set per channel.
///
/// Built only by [`quantize_matrix`] (and [`Convention::quantize_matrix`](crate::Convention::quantize_matrix)),
/// so the codes, shape and parameters always agree.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedMatrix<F, Q> {
    codes: Vec<Q>,
    shape: MatrixShape,
    spec: QuantSpec,
    granularity: Granularity,
    params: Vec<QuantParams<F>>,
}

impl<F: QuantFloat, Q: Storage> QuantizedMatrix<F, Q> {
    /// Assembles a matrix whose parts were validated together by the caller.
    pub(crate) fn from_parts(
        codes: Vec<Q>,
        shape: MatrixShape,
        spec: QuantSpec,
        granularity: Granularity,
        params: Vec<QuantParams<F>>,
    ) -> Self {
        QuantizedMatrix { codes, shape, spec, granularity, params }
    }

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

    /// Per tensor, per channel or per group (and along which axis).
    #[must_use]
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// One parameter set per channel or group ([`Granularity::channels`] of them, in the
    /// order of the module docs).
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
        let mut out = alloc::vec![F::zero(); len];
        dequantize_codes(&self.codes, self.shape, self.granularity.layout(self.shape), &self.params, &mut out);
        out
    }
}

/// Quantizes a row-major matrix per tensor, per channel or per group, parameters from the
/// data.
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
///
/// // 4-bit, groups of 2 along each row (the last group of a row of 3 holds one value):
/// use quant_traits::I4x2;
/// let w = [0.1f32, -0.2, 7.0, 1.0, 2.0, -0.5];
/// let g = Granularity::PerGroup { axis: Axis::Cols, size: 2 };
/// let q = quantize_matrix::<f32, I4x2>(&w, MatrixShape::new(2, 3), QuantSpec::symmetric(4)?, g)?;
/// let amax: Vec<f32> = q.params().iter().map(|p| p.scale() * 7.0).collect();
/// assert_eq!(amax, [0.2, 7.0, 2.0, 0.5]);
/// assert_eq!((q.code(0, 0), q.code(0, 1), q.code(0, 2)), (4, -7, 7)); // 0.1/(0.2/7) = 3.5 -> 4
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
