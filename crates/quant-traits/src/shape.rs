//! Matrix shapes: row-major `rows x cols`, validated once.

use crate::QuantError;

/// The shape of a row-major matrix stored as a flat slice: element `(r, c)` sits at
/// `r * cols + c`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct MatrixShape {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
}

impl MatrixShape {
    /// A `rows x cols` shape.
    #[must_use]
    pub const fn new(rows: usize, cols: usize) -> Self {
        MatrixShape { rows, cols }
    }

    /// Number of elements.
    ///
    /// # Errors
    /// [`QuantError::ShapeOverflow`] when `rows * cols` overflows `usize`.
    pub fn elements(self) -> Result<usize, QuantError> {
        self.rows.checked_mul(self.cols).ok_or(QuantError::ShapeOverflow { rows: self.rows, cols: self.cols })
    }

    /// Checks that a flat buffer holds exactly this many elements.
    ///
    /// # Errors
    /// [`QuantError::LengthMismatch`] (naming `what`) or [`QuantError::ShapeOverflow`].
    pub fn check_len(self, what: &'static str, found: usize) -> Result<(), QuantError> {
        QuantError::check_length(what, self.elements()?, found)
    }

    /// The shape of a matrix given as a list of rows (`&[Vec<T>]`, `&[[T; N]]`, ...), checking
    /// that every row has the same length. Zero rows give `0 x 0`.
    ///
    /// # Errors
    /// [`QuantError::RaggedMatrix`] naming the matrix (`name`) and the first row whose length
    /// differs from row 0's.
    pub fn of_rows<T, R: AsRef<[T]>>(name: &'static str, rows: &[R]) -> Result<Self, QuantError> {
        let cols = rows.first().map_or(0, |r| r.as_ref().len());
        for (row, r) in rows.iter().enumerate() {
            let found = r.as_ref().len();
            if found != cols {
                return Err(QuantError::RaggedMatrix { matrix: name, row, expected: cols, found });
            }
        }
        Ok(MatrixShape { rows: rows.len(), cols })
    }

    /// Maps a flat index to `(row, col)`; `cols == 0` maps everything to `(index, 0)`.
    #[must_use]
    pub fn position(self, index: usize) -> (usize, usize) {
        match index.checked_div(self.cols) {
            Some(row) => (row, index % self.cols),
            None => (index, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ragged_rows_name_the_row() {
        let rows: [&[f32]; 3] = [&[1.0, 2.0], &[3.0, 4.0], &[5.0]];
        assert_eq!(
            MatrixShape::of_rows("W", &rows),
            Err(QuantError::RaggedMatrix { matrix: "W", row: 2, expected: 2, found: 1 })
        );
        assert_eq!(MatrixShape::of_rows::<f32, &[f32]>("W", &[]), Ok(MatrixShape::new(0, 0)));
    }

    #[test]
    fn lengths_are_checked_without_overflow() {
        assert_eq!(MatrixShape::new(2, 3).check_len("x", 6), Ok(()));
        assert_eq!(
            MatrixShape::new(2, 3).check_len("x", 5),
            Err(QuantError::LengthMismatch { what: "x", expected: 6, found: 5 })
        );
        assert!(matches!(MatrixShape::new(usize::MAX, 2).elements(), Err(QuantError::ShapeOverflow { .. })));
        assert_eq!(MatrixShape::new(4, 3).position(7), (2, 1));
    }
}
