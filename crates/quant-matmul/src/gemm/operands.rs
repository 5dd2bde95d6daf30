//! The two operands of a GEMM, validated together, and the depth bounds they imply.

use quant_traits::QuantError;

use crate::gemm::element::{Operand, ZeroPoint};
use crate::gemm::pack::PackedB;
use crate::view::MatRef;

/// The weights operand: a matrix view, packed per call, or weights packed once.
#[derive(Copy, Clone, Debug)]
pub(crate) enum Weights<'a> {
    /// Packed per call, block by block.
    Matrix(MatRef<'a, i8>),
    /// Packed once, for one kernel layout.
    Packed(&'a PackedB),
}

/// The two operands of a GEMM with their zero points, validated together: A (`M x K`, `u8` or
/// `i8`, zero point per tensor or per row) and B (`K x N`, `i8` weights, zero point per tensor
/// or per column).
#[derive(Copy, Clone, Debug)]
pub struct Operands<'a, A> {
    pub(crate) a: MatRef<'a, A>,
    pub(crate) a_zero: ZeroPoint<'a>,
    pub(crate) b: Weights<'a>,
    pub(crate) b_zero: ZeroPoint<'a>,
}

impl<'a, A: Operand> Operands<'a, A> {
    /// A with zero point `a_zero`, B given as a matrix view (packed per call).
    ///
    /// # Errors
    /// [`QuantError::InnerDimensionMismatch`] if A's columns differ from B's rows;
    /// [`QuantError::LengthMismatch`] for a per-channel zero point of the wrong length;
    /// [`QuantError::ZeroPointOutOfRange`] for a zero point that is not a value of its operand
    /// type.
    pub fn new(
        a: MatRef<'a, A>,
        a_zero: ZeroPoint<'a>,
        b: MatRef<'a, i8>,
        b_zero: ZeroPoint<'a>,
    ) -> Result<Self, QuantError> {
        Self::build(a, a_zero, Weights::Matrix(b), b.rows(), b.cols(), b_zero)
    }

    /// A with zero point `a_zero`, B packed once with [`PackedB`]. For `u8` weights
    /// ([`PackedB::from_u8`]) `b_zero` holds `u8` values.
    ///
    /// # Errors
    /// As [`Operands::new`].
    pub fn packed(
        a: MatRef<'a, A>,
        a_zero: ZeroPoint<'a>,
        b: &'a PackedB,
        b_zero: ZeroPoint<'a>,
    ) -> Result<Self, QuantError> {
        Self::build(a, a_zero, Weights::Packed(b), b.k(), b.n(), b_zero)
    }

    fn build(
        a: MatRef<'a, A>,
        a_zero: ZeroPoint<'a>,
        b: Weights<'a>,
        b_rows: usize,
        b_cols: usize,
        b_zero: ZeroPoint<'a>,
    ) -> Result<Self, QuantError> {
        if a.cols() != b_rows {
            return Err(QuantError::InnerDimensionMismatch { a_rows: a.rows(), a_cols: a.cols(), b_rows, b_cols });
        }
        a_zero.check::<A>("A zero points (one per row)", a.rows())?;
        let ops = Operands { a, a_zero, b, b_zero };
        if ops.b_offset() == 0 {
            b_zero.check::<i8>("B zero points (one per column)", b_cols)?;
        } else {
            b_zero.check::<u8>("B zero points (one per column)", b_cols)?;
        }
        Ok(ops)
    }

    /// What packing subtracted from B: 128 for `u8` weights ([`PackedB::from_u8`]), else 0.
    #[inline(always)]
    pub(crate) fn b_offset(&self) -> i32 {
        match self.b {
            Weights::Packed(p) => p.offset(),
            Weights::Matrix(_) => 0,
        }
    }

    /// B's zero point for column `j` as the kernels see B (after packing's offset).
    #[inline(always)]
    pub(crate) fn zb(&self, j: usize) -> i32 {
        self.b_zero.get(j) - self.b_offset()
    }

    /// `M`, `K`, `N`.
    #[must_use]
    pub fn dims(&self) -> (usize, usize, usize) {
        let n = match self.b {
            Weights::Matrix(b) => b.cols(),
            Weights::Packed(b) => b.n(),
        };
        (self.a.rows(), self.a.cols(), n)
    }

    /// Largest depth whose corrected results `(A - za)·(B - zb)` provably fit `i32`.
    #[must_use]
    #[expect(clippy::as_conversions, reason = "the i32 depth bound as usize")]
    pub fn max_i32_depth(&self) -> usize {
        // |B - zb| is the same before and after packing's offset.
        let b = if self.b_offset() == 0 { self.b_zero.max_centered::<i8>() } else { self.b_zero.max_centered::<u8>() };
        let per = self.a_zero.max_centered::<A>() * b;
        usize::try_from(i32::MAX as u64 / per.max(1)).unwrap_or(usize::MAX)
    }

    pub(crate) fn check_i32_depth(&self) -> Result<(), QuantError> {
        let (k, max_k) = (self.a.cols(), self.max_i32_depth());
        if k > max_k {
            Err(QuantError::DepthTooLarge { k, max_k })
        } else {
            Ok(())
        }
    }
}
