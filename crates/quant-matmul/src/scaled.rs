//! Rescaling the exact integer product to floats: the seed's `quantized_matmul`.

use alloc::vec::Vec;

use quant_traits::cast::i128_to_f64;
use quant_traits::{MatrixShape, QuantError, QuantFloat};

use crate::exact::{matmul_exact, GemmShape};

fn check_scale<F: QuantFloat>(scale: F) -> Result<f64, QuantError> {
    QuantError::check_scale(scale.to_f64_exact())
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
    let acc = matmul_exact(a, b, shape)?;
    let s = sa * sb;
    let rescale = |v: f64| if s.is_normal() { v * s } else { v * sa * sb };
    acc.iter()
        .enumerate()
        .map(|(i, &v)| {
            let exact = rescale(i128_to_f64(v));
            let out = F::from_f64_nearest(exact);
            if out.is_finite() {
                Ok(out)
            } else {
                let (row, col) = MatrixShape::new(shape.m, shape.n).position(i);
                Err(QuantError::OutputOverflow { row, col, value: exact, float: F::NAME })
            }
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
    let a_flat: Vec<i32> = a.iter().flatten().copied().collect();
    let b_flat: Vec<i32> = b.iter().flatten().copied().collect();
    let c = quantized_matmul_flat(&a_flat, &b_flat, shape, scale_a, scale_b)?;
    if shape.n == 0 {
        return Ok(alloc::vec![Vec::new(); shape.m]);
    }
    Ok(c.chunks_exact(shape.n).map(<[F]>::to_vec).collect())
}
