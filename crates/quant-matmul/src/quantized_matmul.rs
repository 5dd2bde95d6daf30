//! Rescaling the exact integer product to floats: the seed's `quantized_matmul`.
//!
//! Codes that all fit `i8` run on the engine: B packed once straight from its rows, then A in
//! blocks of rows (converted to `i8` into a block buffer, multiplied, the block's results
//! converted into the output rows while they are still in cache), so no full-size
//! intermediate is made; a flat `f32` result takes the engine's results in place. An `f32`
//! result takes the engine's `f32` output stage, which computes
//! `acc · (scale_a · scale_b)` in `f64` and rounds once, the arithmetic documented on
//! [`quantized_matmul_flat`] (for `f32` scales `scale_a · scale_b` is always a normal `f64`);
//! other float types rescale the engine's `i32` sums. With the `parallel` feature the
//! conversions run on rayon's threads.

use alloc::vec::Vec;

use quant_traits::cast::{i128_to_f64, i64_to_f64};
use quant_traits::{MatrixShape, QuantError, QuantFloat};

use crate::exact::{matmul_exact, GemmShape};
use crate::{Gemm, MatMut, MatRef, Operands, PackedB, Scale, ZeroPoint};

fn check_scale<F: QuantFloat>(scale: F) -> Result<f64, QuantError> {
    QuantError::check_scale(scale.to_f64_exact())
}

/// Whether `F` has `f32`'s format (the engine's `f32` stage then rounds exactly as
/// [`rescale`] does).
fn is_f32_format<F: QuantFloat>() -> bool {
    F::DIGITS == f32::MANTISSA_DIGITS && F::MAX_FINITE == f64::from(f32::MAX)
}

/// Runs `f(i, chunk)` on every `width`-long chunk `i` of `out`, on rayon's threads with the
/// `parallel` feature; true when every call returned true.
fn chunks_all<T: Send>(out: &mut [T], width: usize, f: impl Fn(usize, &mut [T]) -> bool + Sync) -> bool {
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(width).enumerate().with_min_len(16).all(|(i, o)| f(i, o))
    }
    #[cfg(not(feature = "parallel"))]
    out.chunks_mut(width).enumerate().all(|(i, o)| f(i, o))
}

/// Rows of A (`cols` codes each) converted to `i8` into `out` (resized); false when a code
/// does not fit `i8`.
fn to_i8<R: AsRef<[i32]> + Sync>(rows: &[R], cols: usize, out: &mut Vec<i8>) -> bool {
    out.resize(rows.len() * cols, 0);
    chunks_all(out, cols, |i, o| crate::gemm::pack::narrow_i8(rows[i].as_ref(), o))
}

/// `scale_a * scale_b * acc` in `f64` (see [`quantized_matmul_flat`]): one product by
/// `scale_a * scale_b`, or by each scale in turn when that product is not a normal `f64`.
#[inline]
fn scaled(acc: f64, sa: f64, sb: f64) -> f64 {
    let s = sa * sb;
    if s.is_normal() {
        acc * s
    } else {
        acc * sa * sb
    }
}

/// `scale_a * scale_b * acc`, rounded once to `F` (see [`quantized_matmul_flat`]), or the
/// overflow error naming the element at `(row, col)`.
#[inline]
fn rescale<F: QuantFloat>(acc: f64, sa: f64, sb: f64, row: usize, col: usize) -> Result<F, QuantError> {
    let exact = scaled(acc, sa, sb);
    let out = F::from_f64_nearest(exact);
    if out.is_finite() {
        Ok(out)
    } else {
        Err(QuantError::OutputOverflow { row, col, value: exact, float: F::NAME })
    }
}

/// One block of the engine's results, row-major: the `f32` stage's (already rescaled, for an
/// `F` of `f32`'s format) or the `i32` sums with the two scales.
#[derive(Clone, Copy)]
enum Sums<'a> {
    F32(&'a [f32]),
    I32(&'a [i32], f64, f64),
}

impl Sums<'_> {
    /// Row `r` (`n` values) rescaled to `F` into `dst`; false when a value is beyond `F`'s range.
    #[inline]
    fn fill_row<F: QuantFloat>(self, r: usize, n: usize, dst: &mut [F]) -> bool {
        match self {
            // Exact: F has f32's format.
            Self::F32(c) => {
                for (d, &v) in dst.iter_mut().zip(&c[r * n..(r + 1) * n]) {
                    *d = F::from_f64_nearest(f64::from(v));
                }
            }
            Self::I32(c, sa, sb) => {
                for (d, &v) in dst.iter_mut().zip(&c[r * n..(r + 1) * n]) {
                    *d = F::from_f64_nearest(scaled(f64::from(v), sa, sb));
                }
            }
        }
        // The finite inputs and scales make every value finite unless it overflowed.
        dst.iter().fold(true, |ok, v| ok & v.is_finite())
    }
}

/// Where [`engine_blocks`] puts the rescaled results: appended to one row-major `Vec`, or
/// one `Vec` per row.
enum Out<'a, F> {
    Flat(&'a mut Vec<F>),
    Rows(&'a mut Vec<Vec<F>>),
}

impl<F: QuantFloat> Out<'_, F> {
    /// Appends the `rows` rows of `sums` (`n` values each), rescaled to `F`; false when a value
    /// is beyond `F`'s range. The rows are filled on rayon's threads with the `parallel` feature.
    fn append(&mut self, sums: Sums<'_>, rows: usize, n: usize) -> bool {
        match self {
            Self::Flat(out) => {
                let start = out.len();
                out.resize(start + rows * n, F::zero());
                chunks_all(&mut out[start..], n, |r, o| sums.fill_row(r, n, o))
            }
            Self::Rows(out) => {
                let row = |r: usize| {
                    let mut v = alloc::vec![F::zero(); n];
                    sums.fill_row(r, n, &mut v).then_some(v)
                };
                #[cfg(feature = "parallel")]
                let block: Option<Vec<Vec<F>>> = {
                    use rayon::prelude::*;
                    (0..rows).into_par_iter().with_min_len(16).map(row).collect()
                };
                #[cfg(not(feature = "parallel"))]
                let block: Option<Vec<Vec<F>>> = (0..rows).map(row).collect();
                block.map(|b| out.extend(b)).is_some()
            }
        }
    }

    /// The `f32` slice of a flat `f32` output, to take the engine's results in place.
    fn flat_f32(&mut self) -> Option<&mut Vec<f32>> {
        match self {
            Self::Flat(out) => {
                let any: &mut dyn core::any::Any = &mut **out;
                any.downcast_mut::<Vec<f32>>()
            }
            Self::Rows(_) => None,
        }
    }
}

/// Rows of A per engine call and thread: each thread's share of the block's codes, results
/// and their conversion stays in its L2.
const BLOCK_ROWS: usize = 256;

/// The largest depth whose `i8 x i8` sums (no zero points) provably fit `i32`:
/// `i32::MAX / (128 · 128)` ([`Operands::max_i32_depth`] of such operands; a test holds the two
/// together).
const I8_DEPTH: usize = 131_071;

/// `A · B` rescaled to `F` through the engine, block of rows by block, appended to `out` in
/// row order. `Ok(false)` when some code does not fit `i8` (found as the blocks go: the caller
/// then drops what `out` got) or, off `f32`, the depth is beyond the `i32` bound; the error of
/// the first overflow in row order otherwise.
fn engine_blocks<F: QuantFloat, R: AsRef<[i32]> + Sync>(
    a: &[R],
    b: &[R],
    shape: GemmShape,
    sa: f64,
    sb: f64,
    mut out: Out<'_, F>,
) -> Result<bool, QuantError> {
    let GemmShape { m, k, n } = shape;
    if m == 0 || n == 0 || k == 0 {
        return Ok(false);
    }
    let f32_stage = is_f32_format::<F>();
    if !f32_stage && k > I8_DEPTH {
        return Ok(false);
    }
    let gemm = Gemm::new();
    let threads = crate::threads::thread_count(None, n.div_ceil(64));
    let Some(packed) = PackedB::from_i32_rows_for(gemm.tier()?, b, n, threads) else {
        return Ok(false);
    };
    // Exact: for f32 scales `sa · sb` is a normal f64, the product the f32 stage rounds.
    let (sa32, sb32) = (f32::from_f64_nearest(sa), f32::from_f64_nearest(sb));
    let (mut a8, mut c32, mut ci) = (Vec::new(), Vec::new(), Vec::new());
    let block_rows = BLOCK_ROWS * crate::threads::thread_count(None, m.div_ceil(BLOCK_ROWS));
    for i0 in (0..m).step_by(block_rows) {
        let rows = block_rows.min(m - i0);
        if !to_i8(&a[i0..i0 + rows], k, &mut a8) {
            return Ok(false);
        }
        let ops = Operands::packed(MatRef::row_major(&a8, rows, k)?, ZeroPoint::None, &packed, ZeroPoint::None)?;
        let ok = if let Some(flat) = out.flat_f32() {
            // An f32 result: the engine writes straight into the output.
            let start = flat.len();
            flat.resize(start + rows * n, 0.0);
            gemm.f32(&ops, sa32, Scale::PerTensor(sb32), None, MatMut::row_major(&mut flat[start..], rows, n)?)?;
            flat[start..].iter().fold(true, |ok, v| ok & v.is_finite())
        } else if f32_stage {
            c32.resize(rows * n, 0f32);
            gemm.f32(&ops, sa32, Scale::PerTensor(sb32), None, MatMut::row_major(&mut c32, rows, n)?)?;
            out.append(Sums::F32(&c32), rows, n)
        } else {
            ci.resize(rows * n, 0i32);
            gemm.i32(&ops, MatMut::row_major(&mut ci, rows, n)?)?;
            out.append(Sums::I32(&ci, sa, sb), rows, n)
        };
        if !ok {
            return Err(first_overflow::<F, R>(&a8, b, i0, rows, k, n, sa, sb));
        }
    }
    Ok(true)
}

/// The error of the first result of rows `i0 .. i0 + rows` (A's codes `a8`, the block's) whose
/// rescaled value is beyond `F`'s range, in row order; each element's exact sum recomputed.
#[allow(clippy::too_many_arguments)]
fn first_overflow<F: QuantFloat, R: AsRef<[i32]>>(
    a8: &[i8],
    b: &[R],
    i0: usize,
    rows: usize,
    k: usize,
    n: usize,
    sa: f64,
    sb: f64,
) -> QuantError {
    for r in 0..rows {
        for col in 0..n {
            let acc: i64 = (0..k).map(|p| i64::from(a8[r * k + p]) * i64::from(b[p].as_ref()[col])).sum();
            if let Err(e) = rescale::<F>(i64_to_f64(acc), sa, sb, i0 + r, col) {
                return e;
            }
        }
    }
    // Unreachable: the block had a non-finite result, so some element overflows.
    QuantError::OutputOverflow { row: i0, col: 0, value: f64::INFINITY, float: F::NAME }
}

/// `C = scale_a * scale_b * (A · B)` for row-major `i32` codes, as `F`.
///
/// The integer product is exact ([`matmul_exact`]); each sum is then rounded to `f64`,
/// multiplied by `scale_a * scale_b` (one `f64` product, computed once; if that product
/// over- or underflows `f64`, each element is scaled by `scale_a` then by `scale_b` instead),
/// and rounded once to `F`, ties to even.
///
/// # Errors
/// [`QuantError::InvalidScale`] for a scale that is not finite and positive; the errors of
/// [`matmul_exact`]; [`QuantError::OutputOverflow`] (naming the element) if a result is beyond
/// `F`'s finite range.
pub fn quantized_matmul_flat<F: QuantFloat>(
    a: &[i32],
    b: &[i32],
    shape: GemmShape,
    scale_a: F,
    scale_b: F,
) -> Result<Vec<F>, QuantError> {
    let (sa, sb) = (check_scale(scale_a)?, check_scale(scale_b)?);
    let out_shape = MatrixShape::new(shape.m, shape.n);
    if shape.k > 0 && shape.n > 0 {
        MatrixShape::new(shape.m, shape.k).check_len("A (m x k)", a.len())?;
        MatrixShape::new(shape.k, shape.n).check_len("B (k x n)", b.len())?;
        let a_rows: Vec<&[i32]> = a.chunks(shape.k).collect();
        let b_rows: Vec<&[i32]> = b.chunks(shape.n).collect();
        let mut out = Vec::with_capacity(shape.m * shape.n);
        if engine_blocks::<F, _>(&a_rows, &b_rows, shape, sa, sb, Out::Flat(&mut out))? {
            return Ok(out);
        }
        // Codes wider than i8: the exact path below (whatever the engine wrote is dropped).
    }
    let acc = matmul_exact(a, b, shape)?;
    acc.iter()
        .enumerate()
        .map(|(i, &v)| {
            let (row, col) = out_shape.position(i);
            rescale(i128_to_f64(v), sa, sb, row, col)
        })
        .collect()
}

/// The seed API: `A_int · B_int` in exact integer arithmetic, then multiplied by
/// `scale_a * scale_b` (see [`quantized_matmul_flat`] for the exact rounding).
///
/// `a` is `m` rows of `k` codes, `b` is `k` rows of `n` codes, codes of any width up to 32
/// bits. An `a` with no rows gives an empty result (whatever `b`); an `a` whose rows are empty
/// needs a `b` with no rows and gives `m` empty rows.
///
/// # Errors
/// [`QuantError::RaggedMatrix`] naming `"A"` or `"B"`; [`QuantError::InnerDimensionMismatch`]
/// when A's column count differs from B's row count; [`QuantError::InvalidScale`];
/// [`QuantError::OutputOverflow`].
///
/// # Example
/// ```
/// use quant_matmul::quantized_matmul;
///
/// let a = vec![vec![127, -64], vec![0, 1]];
/// let b = vec![vec![2], vec![3]];
/// let c = quantized_matmul(&a, &b, 0.5f32, 0.25f32)?;
/// assert_eq!(c, [vec![(254.0 - 192.0) * 0.125], vec![3.0 * 0.125]]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn quantized_matmul<F: QuantFloat>(
    a: &[Vec<i32>],
    b: &[Vec<i32>],
    scale_a: F,
    scale_b: F,
) -> Result<Vec<Vec<F>>, QuantError> {
    let sa = MatrixShape::of_rows("A", a)?;
    let sb = MatrixShape::of_rows("B", b)?;
    if sa.rows == 0 {
        check_scale(scale_a)?;
        check_scale(scale_b)?;
        return Ok(Vec::new());
    }
    if sa.cols != sb.rows {
        return Err(QuantError::InnerDimensionMismatch {
            a_rows: sa.rows,
            a_cols: sa.cols,
            b_rows: sb.rows,
            b_cols: sb.cols,
        });
    }
    let shape = GemmShape::new(sa.rows, sa.cols, sb.cols);
    // Codes of 8 bits: straight from the rows into the engine and back into rows (the
    // conversions on rayon's threads with the `parallel` feature).
    let (scale_a64, scale_b64) = (check_scale(scale_a)?, check_scale(scale_b)?);
    let mut rows: Vec<Vec<F>> = Vec::with_capacity(shape.m);
    if engine_blocks::<F, _>(a, b, shape, scale_a64, scale_b64, Out::Rows(&mut rows))? {
        return Ok(rows);
    }
    // Codes wider than i8: the exact path below (whatever the engine wrote is dropped).
    drop(rows);
    let a_flat: Vec<i32> = a.iter().flatten().copied().collect();
    let b_flat: Vec<i32> = b.iter().flatten().copied().collect();
    let c = quantized_matmul_flat(&a_flat, &b_flat, shape, scale_a, scale_b)?;
    if shape.n == 0 {
        return Ok(alloc::vec![Vec::new(); shape.m]);
    }
    Ok(c.chunks_exact(shape.n).map(<[F]>::to_vec).collect())
}

#[cfg(test)]
mod tests {
    /// The seed's engine bound is the engine's own for `i8 x i8`.
    #[test]
    fn i8_depth_is_the_engines() -> Result<(), crate::QuantError> {
        let (a, b) = ([0i8; 1], [0i8; 1]);
        let ops = crate::Operands::new(
            crate::MatRef::row_major(&a, 1, 1)?,
            crate::ZeroPoint::None,
            crate::MatRef::row_major(&b, 1, 1)?,
            crate::ZeroPoint::None,
        )?;
        assert_eq!(ops.max_i32_depth(), super::I8_DEPTH);
        Ok(())
    }
}
