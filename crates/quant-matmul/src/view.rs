//! Matrix views: a slice with a shape and a row stride, validated once, so callers can pass a
//! sub-matrix or a padded buffer without copying it.

use quant_traits::QuantError;

/// Checks that `len` elements hold a `rows x cols` matrix with rows `row_stride` apart.
fn check_view(what: &'static str, len: usize, rows: usize, cols: usize, row_stride: usize) -> Result<(), QuantError> {
    if rows > 1 && row_stride < cols {
        return Err(QuantError::InvalidStride { what, row_stride, cols });
    }
    let needed = if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1)
            .checked_mul(row_stride)
            .and_then(|v| v.checked_add(cols))
            .ok_or(QuantError::ShapeOverflow { rows, cols })?
    };
    if len < needed {
        return Err(QuantError::LengthMismatch { what, expected: needed, found: len });
    }
    Ok(())
}

/// A read-only `rows x cols` matrix: element `(r, c)` is `data[r * row_stride + c]`.
#[derive(Copy, Clone, Debug)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
}

impl<'a, T: Copy> MatRef<'a, T> {
    /// A view with an explicit row stride (in elements, `>= cols`).
    ///
    /// # Errors
    /// [`QuantError::InvalidStride`] if `row_stride < cols` (with more than one row);
    /// [`QuantError::LengthMismatch`] if `data` is too short for the last row.
    pub fn new(data: &'a [T], rows: usize, cols: usize, row_stride: usize) -> Result<Self, QuantError> {
        check_view("matrix view", data.len(), rows, cols, row_stride)?;
        Ok(MatRef { data, rows, cols, row_stride })
    }

    /// A dense row-major view (`row_stride == cols`).
    ///
    /// # Errors
    /// [`QuantError::LengthMismatch`] unless `data.len() >= rows * cols`.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Result<Self, QuantError> {
        Self::new(data, rows, cols, cols)
    }

    /// Number of rows.
    #[must_use]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    #[must_use]
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Distance between rows, in elements.
    #[must_use]
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }

    /// Row `r` (`r < rows`), `cols` elements.
    #[inline]
    #[must_use]
    pub fn row(&self, r: usize) -> &'a [T] {
        let start = r * self.row_stride;
        &self.data[start..start + self.cols]
    }

    /// Element `(r, c)`.
    #[inline]
    #[must_use]
    pub fn at(&self, r: usize, c: usize) -> T {
        self.data[r * self.row_stride + c]
    }
}

/// A mutable `rows x cols` matrix: element `(r, c)` is `data[r * row_stride + c]`.
#[derive(Debug)]
pub struct MatMut<'a, T> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
}

impl<'a, T: Copy> MatMut<'a, T> {
    /// A view with an explicit row stride (in elements, `>= cols`).
    ///
    /// # Errors
    /// As [`MatRef::new`].
    pub fn new(data: &'a mut [T], rows: usize, cols: usize, row_stride: usize) -> Result<Self, QuantError> {
        check_view("output view", data.len(), rows, cols, row_stride)?;
        Ok(MatMut { data, rows, cols, row_stride })
    }

    /// A dense row-major view.
    ///
    /// # Errors
    /// As [`MatRef::row_major`].
    pub fn row_major(data: &'a mut [T], rows: usize, cols: usize) -> Result<Self, QuantError> {
        Self::new(data, rows, cols, cols)
    }

    /// Number of rows.
    #[must_use]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    #[must_use]
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `r`, mutable.
    #[inline]
    pub fn row_mut(&mut self, r: usize) -> &mut [T] {
        let start = r * self.row_stride;
        &mut self.data[start..start + self.cols]
    }

    /// The whole view as one block.
    pub(crate) fn into_block(self) -> Block<'a, T> {
        Block {
            data: self.data.as_mut_ptr(),
            row0: 0,
            rows: self.rows,
            col0: 0,
            cols: self.cols,
            row_stride: self.row_stride,
            _life: core::marker::PhantomData,
        }
    }
}

/// Rows `[row0, row0 + rows)` by columns `[col0, col0 + cols)` of a mutable view. Blocks made by
/// [`Block::split_rows`] or [`Block::split_cols`] never overlap, so they can be written from
/// different threads.
pub(crate) struct Block<'a, T> {
    data: *mut T,
    row0: usize,
    rows: usize,
    col0: usize,
    cols: usize,
    row_stride: usize,
    _life: core::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: a Block is an exclusive borrow of its rows x columns; blocks made by `split_rows` /
// `split_cols` are disjoint, so sending one to another thread cannot alias another's writes.
unsafe impl<T: Send> Send for Block<'_, T> {}

impl<'a, T: Copy> Block<'a, T> {
    /// Splits into columns `[0, at)` and `[at, cols)` of this block.
    #[cfg(feature = "parallel")]
    pub(crate) fn split_cols(self, at: usize) -> (Block<'a, T>, Block<'a, T>) {
        let at = at.min(self.cols);
        (Block { cols: at, ..self }, Block { col0: self.col0 + at, cols: self.cols - at, ..self })
    }

    /// Splits into rows `[0, at)` and `[at, rows)` of this block.
    #[cfg(feature = "parallel")]
    pub(crate) fn split_rows(self, at: usize) -> (Block<'a, T>, Block<'a, T>) {
        let at = at.min(self.rows);
        (Block { rows: at, ..self }, Block { row0: self.row0 + at, rows: self.rows - at, ..self })
    }

    /// First row (in the parent view).
    pub(crate) fn row0(&self) -> usize {
        self.row0
    }

    /// Number of rows.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// First column (in the parent view).
    pub(crate) fn col0(&self) -> usize {
        self.col0
    }

    /// Number of columns.
    pub(crate) fn cols(&self) -> usize {
        self.cols
    }

    /// The `rows x cols` tile at row `i` (a row of the parent view) and column `c` (relative
    /// to this block), for a kernel: a pointer to its first element and the row stride. The
    /// kernel may read and write elements `(r, j)` at `ptr + r * stride + j` for `r < rows`,
    /// `j < cols`, all inside this block.
    #[inline]
    pub(crate) fn tile_ptr(&mut self, i: usize, c: usize, rows: usize, cols: usize) -> (*mut T, usize) {
        assert!(
            i >= self.row0 && i + rows <= self.row0 + self.rows && c + cols <= self.cols,
            "block access out of bounds"
        );
        (self.data.wrapping_add(i * self.row_stride + self.col0 + c), self.row_stride)
    }

    /// Columns `[c, c + n)` (relative to this block) of row `i` (a row of the parent view,
    /// inside this block).
    #[inline]
    pub(crate) fn row_part(&mut self, i: usize, c: usize, n: usize) -> &mut [T] {
        assert!(i >= self.row0 && i < self.row0 + self.rows && c + n <= self.cols, "block access out of bounds");
        // SAFETY: the parent MatMut validated that every (row < rows, col < cols) lies inside its
        // slice; this block owns rows [row0, row0 + rows) x columns [col0, col0 + cols) of it
        // exclusively (split_rows / split_cols), and the assert keeps the access inside that.
        unsafe { core::slice::from_raw_parts_mut(self.data.add(i * self.row_stride + self.col0 + c), n) }
    }
}
