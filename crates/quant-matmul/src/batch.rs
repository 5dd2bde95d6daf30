//! Batched matrix multiply with ONNX's (NumPy's) broadcasting: `A` of shape `[..., M, K]` times
//! `B` of shape `[..., K, N]`, the batch dimensions broadcast against each other, as used by
//! `MatMulInteger` and `QLinearMatMul` on 3-D and larger operands.
//!
//! [`BatchedShape`] works out the output shape and, for each output matrix, where its `A`, `B`
//! and `C` matrices start in the flat row-major buffers: no copies, each batch one ordinary
//! [`Gemm`](crate::Gemm) call on sub-slices. As in NumPy, a 1-D `A` is a row `[1, K]` and a
//! 1-D `B` a column `[K, 1]`, and that dimension is dropped from the output.
//!
//! ```
//! use quant_matmul::{BatchedShape, Gemm, MatMut, MatRef, Operands, ZeroPoint};
//!
//! // A: [2, 1, 2, 3] against B: [3, 3, 2]: the batch dims [2, 1] and [3] broadcast to [2, 3].
//! let shape = BatchedShape::new(&[2, 1, 2, 3], &[3, 3, 2])?;
//! assert_eq!(shape.out_dims(), [2, 3, 2, 2]);
//! let a: Vec<u8> = (0..12).collect();
//! let b: Vec<i8> = (0..18).map(|v| v - 9).collect();
//! let mut c = vec![0i32; shape.out_len()];
//! let (m, k, n) = shape.mkn();
//! for batch in shape.batches() {
//!     let av = MatRef::row_major(&a[batch.a..batch.a + m * k], m, k)?;
//!     let bv = MatRef::row_major(&b[batch.b..batch.b + k * n], k, n)?;
//!     let ops = Operands::new(av, ZeroPoint::None, bv, ZeroPoint::None)?;
//!     Gemm::new().i32(&ops, MatMut::row_major(&mut c[batch.c..batch.c + m * n], m, n)?)?;
//! }
//! // Output batch (1, 2) is A's batch 1 times B's batch 2.
//! let want: i32 = (0..3).map(|p| i32::from(a[6 + p]) * i32::from(b[12 + p * 2])).sum();
//! assert_eq!(c[(3 + 2) * 4], want);
//! # Ok::<(), quant_matmul::QuantError>(())
//! ```

use alloc::vec::Vec;

use quant_traits::QuantError;

/// The broadcast of two matmul operand shapes (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchedShape {
    m: usize,
    k: usize,
    n: usize,
    /// The broadcast batch dimensions.
    batch: Vec<usize>,
    /// Per batch dimension, A's and B's stride in matrices (0 where broadcast).
    a_strides: Vec<usize>,
    b_strides: Vec<usize>,
    out_dims: Vec<usize>,
}

/// Where one output matrix and its operands start (element offsets into the flat buffers).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Offset of its `M x K` matrix in A.
    pub a: usize,
    /// Offset of its `K x N` matrix in B.
    pub b: usize,
    /// Offset of its `M x N` matrix in C.
    pub c: usize,
}

impl BatchedShape {
    /// Broadcasts `a_dims` (`[..., M, K]`, or `[K]`) against `b_dims` (`[..., K, N]`, or `[K]`).
    ///
    /// # Errors
    /// [`QuantError::InnerDimensionMismatch`] if A's `K` differs from B's;
    /// [`QuantError::BatchMismatch`] naming the batch axis where the sizes differ and neither
    /// is 1; [`QuantError::InvalidTensorAxis`] for a 0-D operand (ONNX's MatMul needs rank 1 or
    /// more); [`QuantError::TensorTooLarge`] if a size overflows.
    pub fn new(a_dims: &[usize], b_dims: &[usize]) -> Result<Self, QuantError> {
        if a_dims.is_empty() || b_dims.is_empty() {
            return Err(QuantError::InvalidTensorAxis { axis: -1, rank: 0 });
        }
        let (a_batch, m, ka, a_vector) = match *a_dims {
            [k] => (&[][..], 1, k, true),
            [ref batch @ .., m, k] => (batch, m, k, false),
            [] => unreachable!("checked above"),
        };
        let (b_batch, kb, n, b_vector) = match *b_dims {
            [k] => (&[][..], k, 1, true),
            [ref batch @ .., k, n] => (batch, k, n, false),
            [] => unreachable!("checked above"),
        };
        if ka != kb {
            return Err(QuantError::InnerDimensionMismatch { a_rows: m, a_cols: ka, b_rows: kb, b_cols: n });
        }
        let rank = a_batch.len().max(b_batch.len());
        let pad = |dims: &[usize], i: usize| {
            let offset = rank - dims.len();
            if i < offset {
                1
            } else {
                dims[i - offset]
            }
        };
        let mut batch = Vec::with_capacity(rank);
        for axis in 0..rank {
            let (a, b) = (pad(a_batch, axis), pad(b_batch, axis));
            batch.push(match (a, b) {
                _ if a == b => a,
                (1, _) => b,
                (_, 1) => a,
                _ => return Err(QuantError::BatchMismatch { a, b, axis }),
            });
        }
        let strides = |dims: &[usize]| -> Vec<usize> {
            let mut strides = alloc::vec![0; rank];
            let mut step = 1usize;
            for axis in (0..rank).rev() {
                let d = pad(dims, axis);
                strides[axis] = if d == 1 { 0 } else { step };
                step = step.saturating_mul(d);
            }
            strides
        };
        let mut out_dims = batch.clone();
        if !a_vector {
            out_dims.push(m);
        }
        if !b_vector {
            out_dims.push(n);
        }
        let shape =
            BatchedShape { m, k: ka, n, a_strides: strides(a_batch), b_strides: strides(b_batch), batch, out_dims };
        // Every buffer size must fit.
        for dims in [a_dims, b_dims, &shape.out_dims[..]] {
            dims.iter()
                .try_fold(1usize, |p, &d| p.checked_mul(d).ok_or(QuantError::TensorTooLarge { before: p, dim: d }))?;
        }
        Ok(shape)
    }

    /// `(M, K, N)` of every batch's multiply.
    #[must_use]
    pub fn mkn(&self) -> (usize, usize, usize) {
        (self.m, self.k, self.n)
    }

    /// The output's dimensions (NumPy's: the broadcast batch, then `M` and `N` unless an
    /// operand was 1-D).
    #[must_use]
    pub fn out_dims(&self) -> &[usize] {
        &self.out_dims
    }

    /// Number of output elements.
    #[must_use]
    pub fn out_len(&self) -> usize {
        self.out_dims.iter().product()
    }

    /// Number of output matrices (the product of the batch dimensions; 1 for plain matrices).
    #[must_use]
    pub fn batch_count(&self) -> usize {
        self.batch.iter().product()
    }

    /// Each output matrix's offsets, in the output's row-major order.
    pub fn batches(&self) -> impl Iterator<Item = Batch> + '_ {
        let (mk, kn, mn) = (self.m * self.k, self.k * self.n, self.m * self.n);
        (0..self.batch_count()).map(move |index| {
            let (mut rest, mut a, mut b) = (index, 0, 0);
            for axis in (0..self.batch.len()).rev() {
                let i = rest % self.batch[axis];
                rest /= self.batch[axis];
                a += i * self.a_strides[axis];
                b += i * self.b_strides[axis];
            }
            Batch { a: a * mk, b: b * kn, c: index * mn }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_broadcasting() {
        let s = BatchedShape::new(&[2, 2, 4], &[2, 4, 3]).expect("broadcasts");
        assert_eq!((s.out_dims(), s.mkn()), (&[2usize, 2, 3][..], (2, 4, 3)));
        let b: Vec<Batch> = s.batches().collect();
        assert_eq!(b, [Batch { a: 0, b: 0, c: 0 }, Batch { a: 8, b: 12, c: 6 }]);
        // B shared by every batch of A.
        let s = BatchedShape::new(&[3, 2, 4], &[4, 5]).expect("broadcasts");
        assert_eq!(s.out_dims(), [3, 2, 5]);
        assert!(s.batches().all(|x| x.b == 0));
        assert_eq!(s.batches().map(|x| x.a).collect::<Vec<_>>(), [0, 8, 16]);
        // 1-D operands: the dimension is dropped.
        assert_eq!(BatchedShape::new(&[4], &[4, 5]).expect("ok").out_dims(), [5]);
        assert_eq!(BatchedShape::new(&[2, 3, 4], &[4]).expect("ok").out_dims(), [2, 3]);
        assert_eq!(BatchedShape::new(&[4], &[4]).expect("ok").out_dims(), [0usize; 0]);
    }

    #[test]
    fn clashes_are_named() {
        assert_eq!(BatchedShape::new(&[2, 2, 4], &[3, 4, 3]), Err(QuantError::BatchMismatch { a: 2, b: 3, axis: 0 }));
        assert_eq!(
            BatchedShape::new(&[2, 4], &[5, 3]),
            Err(QuantError::InnerDimensionMismatch { a_rows: 2, a_cols: 4, b_rows: 5, b_cols: 3 })
        );
        assert!(matches!(BatchedShape::new(&[], &[2, 3]), Err(QuantError::InvalidTensorAxis { .. })));
    }
}
