//! Range observation: the smallest and largest value of a tensor, rejecting NaN and infinities.

use quant_traits::{MatrixShape, QuantError, QuantFloat};

use crate::scalar::first_non_finite;

/// The closed range `[lo, hi]` of a set of finite values, in `f64`.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Range {
    /// Smallest value.
    pub lo: f64,
    /// Largest value.
    pub hi: f64,
}

impl Range {
    /// Widens the range to include `v`.
    #[inline]
    fn include(&mut self, v: f64) {
        if v < self.lo {
            self.lo = v;
        }
        if v > self.hi {
            self.hi = v;
        }
    }
}

/// Fails on the first element that is NaN or infinite, naming its flat index.
///
/// # Errors
/// [`QuantError::NonFinite`].
pub fn check_finite<F: QuantFloat>(x: &[F]) -> Result<(), QuantError> {
    match first_non_finite(x) {
        None => Ok(()),
        Some(index) => Err(QuantError::NonFinite { index, value: x[index].to_f64_exact() }),
    }
}

/// Like [`check_finite`] for a row-major matrix, naming the row and column.
///
/// # Errors
/// [`QuantError::NonFiniteInMatrix`].
pub fn check_finite_matrix<F: QuantFloat>(x: &[F], shape: MatrixShape) -> Result<(), QuantError> {
    check_finite(x).map_err(|e| match e {
        QuantError::NonFinite { index, value } => {
            let (row, col) = shape.position(index);
            QuantError::NonFiniteInMatrix { row, col, value }
        }
        other => other,
    })
}

/// The range of `x`, or `None` when `x` is empty.
///
/// # Errors
/// [`QuantError::NonFinite`] naming the first NaN or infinite element.
pub fn range_of<F: QuantFloat>(x: &[F]) -> Result<Option<Range>, QuantError> {
    check_finite(x)?;
    Ok(range_of_finite(x.iter().copied()))
}

/// The range of already validated values.
pub(crate) fn range_of_finite<F: QuantFloat>(mut x: impl Iterator<Item = F>) -> Option<Range> {
    let first = x.next()?.to_f64_exact();
    let mut r = Range { lo: first, hi: first };
    for v in x {
        r.include(v.to_f64_exact());
    }
    Some(r)
}

/// The range of each column of a validated row-major matrix (`None` for every column when
/// there are no rows).
pub(crate) fn column_ranges<F: QuantFloat>(x: &[F], shape: MatrixShape) -> alloc::vec::Vec<Option<Range>> {
    let mut ranges = alloc::vec![None; shape.cols];
    if shape.cols == 0 {
        return ranges;
    }
    for row in x.chunks_exact(shape.cols) {
        for (slot, &v) in ranges.iter_mut().zip(row) {
            let v = v.to_f64_exact();
            match slot {
                None => *slot = Some(Range { lo: v, hi: v }),
                Some(r) => r.include(v),
            }
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;
    use quant_traits::half;

    #[test]
    fn nan_and_inf_are_named_by_index() {
        assert!(matches!(
            range_of(&[1.0f32, f32::NAN, 2.0]),
            Err(QuantError::NonFinite { index: 1, value }) if value.is_nan()
        ));
        assert_eq!(
            range_of(&[1.0f64, 2.0, f64::NEG_INFINITY]),
            Err(QuantError::NonFinite { index: 2, value: f64::NEG_INFINITY })
        );
        assert_eq!(
            check_finite_matrix(&[f16::ONE, f16::ONE, f16::ONE, f16::INFINITY], MatrixShape::new(2, 2)),
            Err(QuantError::NonFiniteInMatrix { row: 1, col: 1, value: f64::INFINITY })
        );
    }

    #[test]
    fn ranges() {
        assert_eq!(range_of::<f32>(&[]), Ok(None));
        assert_eq!(range_of(&[3.0f32, -1.0, 2.0]), Ok(Some(Range { lo: -1.0, hi: 3.0 })));
        let cols = column_ranges(&[1.0f32, -2.0, 3.0, 4.0], MatrixShape::new(2, 2));
        assert_eq!(cols, [Some(Range { lo: 1.0, hi: 3.0 }), Some(Range { lo: -2.0, hi: 4.0 })]);
        assert_eq!(column_ranges::<f32>(&[], MatrixShape::new(0, 2)), [None, None]);
    }
}
