//! Rescaling the exact integer product to floats: the seed's `quantized_matmul`.

use alloc::vec::Vec;

use quant_traits::cast::i128_to_f64;
use quant_traits::{MatrixShape, QuantError, QuantFloat};

use crate::exact::{matmul_exact, GemmShape};
use crate::{Gemm, MatMut, MatRef, Operands, ZeroPoint};

fn check_scale<F: QuantFloat>(scale: F) -> Result<f64, QuantError> {
    QuantError::check_scale(scale.to_f64_exact())
}

/// Rows of `cols` codes as one flat `i8` matrix, or `None` when a code does not fit `i8`
/// (with the `parallel` feature, rows are converted on rayon's threads).
fn to_i8<R: AsRef<[i32]> + Sync>(rows: &[R], cols: usize) -> Option<Vec<i8>> {
    if cols == 0 {
        return None;
    }
    let mut out = alloc::vec![0i8; rows.len() * cols];
    let convert = |(o, r): (&mut [i8], &R)| {
        let mut ok = true;
        for (d, &v) in o.iter_mut().zip(r.as_ref()) {
            ok &= (-128..=127).contains(&v);
            *d = v as i8; // wrong when out of range, but then `ok` is false and the buffer dropped
        }
        ok
    };
    #[cfg(feature = "parallel")]
    let ok = {
        use rayon::prelude::*;
        out.par_chunks_mut(cols).zip(rows.par_iter()).with_min_len(16).all(convert)
    };
    #[cfg(not(feature = "parallel"))]
    let ok = out.chunks_mut(cols).zip(rows.iter()).all(convert);
    ok.then_some(out)
}

/// `A · B` through the engine when every code fits `i8` and the depth keeps `i32` results
/// exact (`k <= 131 071`); `None` otherwise.
fn engine_product<R: AsRef<[i32]> + Sync>(a: &[R], b: &[R], shape: GemmShape) -> Result<Option<Vec<i32>>, QuantError> {
    let GemmShape { m, k, n } = shape;
    if m == 0 || n == 0 {
        return Ok(None);
    }
    let (Some(a8), Some(b8)) = (to_i8(a, k), to_i8(b, n)) else {
        return Ok(None);
    };
    let (a8, b8) = (MatRef::row_major(&a8, m, k)?, MatRef::row_major(&b8, k, n)?);
    if k > Operands::new(a8, ZeroPoint::None, b8, ZeroPoint::None)?.max_i32_depth() {
        return Ok(None);
    }
    let gemm = Gemm::new();
    // B packed once: the engine then takes its pre-packed path (rows split between threads).
    let b = gemm.pack_b(b8)?;
    let ops = Operands::packed(a8, ZeroPoint::None, &b, ZeroPoint::None)?;
    let mut c = alloc::vec![0i32; m * n];
    gemm.i32(&ops, MatMut::row_major(&mut c, m, n)?)?;
    Ok(Some(c))
}

/// `scale_a * scale_b * acc`, rounded once to `F` (see [`quantized_matmul_flat`]), or the
/// overflow error naming the element at `(row, col)`.
#[inline]
fn rescale<F: QuantFloat>(acc: f64, sa: f64, sb: f64, row: usize, col: usize) -> Result<F, QuantError> {
    let s = sa * sb;
    let exact = if s.is_normal() { acc * s } else { acc * sa * sb };
    let out = F::from_f64_nearest(exact);
    if out.is_finite() {
        Ok(out)
    } else {
        Err(QuantError::OutputOverflow { row, col, value: exact, float: F::NAME })
    }
}

/// The engine's `i32` sums (`m x n`) rescaled to `F`, one `Vec` per row (with the `parallel`
/// feature, rows on rayon's threads); the error, if any, names the first overflow in row order.
fn rescale_rows<F: QuantFloat>(acc: &[i32], n: usize, sa: f64, sb: f64) -> Result<Vec<Vec<F>>, QuantError> {
    let row = |(i, r): (usize, &[i32])| -> Result<Vec<F>, QuantError> {
        // Sized up front (collecting into a `Result` would grow the vector step by step).
        let mut out = Vec::with_capacity(r.len());
        for (j, &v) in r.iter().enumerate() {
            out.push(rescale(f64::from(v), sa, sb, i, j)?);
        }
        Ok(out)
    };
    #[cfg(feature = "parallel")]
    let rows: Vec<Result<Vec<F>, QuantError>> = {
        use rayon::prelude::*;
        acc.par_chunks(n).enumerate().with_min_len(16).map(row).collect()
    };
    #[cfg(not(feature = "parallel"))]
    let rows: Vec<Result<Vec<F>, QuantError>> = acc.chunks(n).enumerate().map(row).collect();
    rows.into_iter().collect()
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
        if let Some(acc) = engine_product(&a_rows, &b_rows, shape)? {
            return Ok(rescale_rows::<F>(&acc, shape.n, sa, sb)?.into_iter().flatten().collect());
        }
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
    if let Some(acc) = engine_product(a, b, shape)? {
        return rescale_rows(&acc, shape.n, scale_a64, scale_b64);
    }
    let a_flat: Vec<i32> = a.iter().flatten().copied().collect();
    let b_flat: Vec<i32> = b.iter().flatten().copied().collect();
    let c = quantized_matmul_flat(&a_flat, &b_flat, shape, scale_a, scale_b)?;
    if shape.n == 0 {
        return Ok(alloc::vec![Vec::new(); shape.m]);
    }
    Ok(c.chunks_exact(shape.n).map(<[F]>::to_vec).collect())
}
