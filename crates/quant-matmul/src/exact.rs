//! Exact integer matrix multiply of `i32` codes, with the accumulator chosen by proof.

use alloc::vec::Vec;
use core::ops::{AddAssign, Mul};

use quant_traits::{MatrixShape, QuantError};

/// The shape of `C[m x n] = A[m x k] · B[k x n]`, all row-major.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct GemmShape {
    /// Rows of A and C.
    pub m: usize,
    /// Columns of A, rows of B (the depth of each dot product).
    pub k: usize,
    /// Columns of B and C.
    pub n: usize,
}

impl GemmShape {
    /// `m x k` times `k x n`.
    #[must_use]
    pub const fn new(m: usize, k: usize, n: usize) -> Self {
        GemmShape { m, k, n }
    }

    /// Checks the operand lengths against the shape; returns the output length `m * n`.
    fn check(self, a: usize, b: usize) -> Result<usize, QuantError> {
        MatrixShape::new(self.m, self.k).check_len("A (m x k)", a)?;
        MatrixShape::new(self.k, self.n).check_len("B (k x n)", b)?;
        MatrixShape::new(self.m, self.n).elements()
    }
}

/// The integer type a dot product is accumulated in.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Accumulator {
    /// `i32`: every partial sum provably fits (e.g. 8-bit codes with `k <= 131_071`).
    I32,
    /// `i64`.
    I64,
    /// `i128`: exact for any depth below `2^65`, whatever the codes.
    I128,
}

impl Accumulator {
    /// The narrowest accumulator in which no partial sum of `k` products can overflow, given
    /// the largest magnitudes `max_abs_a` and `max_abs_b` of the operands: the bound is
    /// `max_abs_a * max_abs_b * k`, computed without overflow.
    #[must_use]
    #[expect(clippy::as_conversions, reason = "widening to u128 for the overflow bound of the exact reference")]
    pub fn for_operands(max_abs_a: u64, max_abs_b: u64, k: usize) -> Self {
        let per_product = u128::from(max_abs_a) * u128::from(max_abs_b);
        let bound = per_product.checked_mul(k as u128);
        match bound {
            Some(b) if b <= i32::MAX as u128 => Accumulator::I32,
            Some(b) if b <= i64::MAX as u128 => Accumulator::I64,
            _ => Accumulator::I128,
        }
    }
}

fn max_abs(x: &[i32]) -> u64 {
    x.iter().map(|v| u64::from(v.unsigned_abs())).max().unwrap_or(0)
}

/// `C = A · B` of `i32` codes (row-major, shapes in `shape`), every element the exact sum.
///
/// Codes that all fit `i8` run on the packed SIMD engine ([`crate::Gemm`]). Wider codes take
/// the exact portable loop, with the accumulator chosen once from the operands' largest
/// magnitudes ([`Accumulator::for_operands`]). The result is the same whichever path runs (that
/// is the point), only the speed differs.
///
/// # Errors
/// [`QuantError::LengthMismatch`] if `a` is not `m * k` or `b` not `k * n` long;
/// [`QuantError::ShapeOverflow`] if a product of dimensions overflows `usize`.
///
/// # Example
/// ```
/// use quant_matmul::{matmul_exact, GemmShape};
///
/// // Two 32-bit extremes: the sum of two products of 2^62 overflows i64, not i128.
/// let c = matmul_exact(&[i32::MIN, i32::MIN], &[i32::MIN, i32::MIN], GemmShape::new(1, 2, 1))?;
/// assert_eq!(c, [1i128 << 63]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn matmul_exact(a: &[i32], b: &[i32], shape: GemmShape) -> Result<Vec<i128>, QuantError> {
    let out_len = shape.check(a.len(), b.len())?;
    if let Some(c) = via_engine(a, b, shape)? {
        return Ok(c);
    }
    let mut c = alloc::vec![0i128; out_len];
    match Accumulator::for_operands(max_abs(a), max_abs(b), shape.k) {
        Accumulator::I32 => accumulate::<i32>(a, b, shape, &mut c),
        Accumulator::I64 => accumulate::<i64>(a, b, shape, &mut c),
        Accumulator::I128 => accumulate::<i128>(a, b, shape, &mut c),
    }
    Ok(c)
}

/// Codes that all fit `i8` (every seed code of 8 bits or fewer) go through the packed SIMD
/// engine ([`crate::Gemm`]) when the depth keeps its `i32` results exact; `None` otherwise.
fn via_engine(a: &[i32], b: &[i32], shape: GemmShape) -> Result<Option<Vec<i128>>, QuantError> {
    let to_i8 = |x: &[i32]| x.iter().map(|&v| i8::try_from(v).ok()).collect::<Option<Vec<i8>>>();
    let (Some(a8), Some(b8)) = (to_i8(a), to_i8(b)) else {
        return Ok(None);
    };
    let av = crate::MatRef::row_major(&a8, shape.m, shape.k)?;
    let bv = crate::MatRef::row_major(&b8, shape.k, shape.n)?;
    let ops = crate::Operands::new(av, crate::ZeroPoint::None, bv, crate::ZeroPoint::None)?;
    if shape.k > ops.max_i32_depth() {
        return Ok(None);
    }
    let mut c32 = alloc::vec![0i32; shape.m * shape.n];
    crate::Gemm::new().i32(&ops, crate::MatMut::row_major(&mut c32, shape.m, shape.n)?)?;
    Ok(Some(c32.into_iter().map(i128::from).collect()))
}

/// Row-by-row `i-k-j` loop with one row of accumulators (allocated once, reused).
/// The caller has proven that `Acc` cannot overflow.
fn accumulate<Acc>(a: &[i32], b: &[i32], shape: GemmShape, c: &mut [i128])
where
    Acc: Copy + Default + From<i32> + AddAssign + Mul<Output = Acc> + Into<i128>,
{
    let GemmShape { k, n, .. } = shape;
    if n == 0 {
        return;
    }
    let mut row = alloc::vec![Acc::default(); n];
    for (a_row, c_row) in a.chunks_exact(k.max(1)).zip(c.chunks_exact_mut(n)) {
        row.fill(Acc::default());
        if k > 0 {
            for (&a_ip, b_row) in a_row.iter().zip(b.chunks_exact(n)) {
                if a_ip == 0 {
                    continue;
                }
                let a_ip = Acc::from(a_ip);
                for (acc, &b_pj) in row.iter_mut().zip(b_row) {
                    *acc += a_ip * Acc::from(b_pj);
                }
            }
        }
        for (out, &acc) in c_row.iter_mut().zip(row.iter()) {
            *out = acc.into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(127, 127, 1, Accumulator::I32)]
    #[case(128, 128, 131_071, Accumulator::I32)] // 16384 * 131071 = 2^31 - 16384
    #[case(128, 128, 131_072, Accumulator::I64)] // = 2^31: one past i32::MAX
    #[case(1 << 31, 1 << 31, 1, Accumulator::I64)]
    #[case(1 << 31, 1 << 31, 2, Accumulator::I128)]
    #[case(0, 0, usize::MAX, Accumulator::I32)]
    fn accumulator_choice(#[case] a: u64, #[case] b: u64, #[case] k: usize, #[case] want: Accumulator) {
        assert_eq!(Accumulator::for_operands(a, b, k), want);
    }

    #[test]
    fn lengths_are_checked() {
        assert_eq!(
            matmul_exact(&[1, 2, 3], &[1, 2], GemmShape::new(2, 2, 1)),
            Err(QuantError::LengthMismatch { what: "A (m x k)", expected: 4, found: 3 })
        );
        assert_eq!(
            matmul_exact(&[1, 2], &[1, 2, 3], GemmShape::new(1, 2, 2)),
            Err(QuantError::LengthMismatch { what: "B (k x n)", expected: 4, found: 3 })
        );
    }

    #[test]
    fn zero_depth_gives_zeros() {
        assert_eq!(matmul_exact(&[], &[], GemmShape::new(2, 0, 3)), Ok(alloc::vec![0; 6]));
        assert_eq!(matmul_exact(&[], &[1, 2], GemmShape::new(0, 1, 2)), Ok(alloc::vec![]));
    }
}
