//! The zero-point correction and the output stage, applied to each finished tile row.
//!
//! `C[i][j] = S[i][j] - zb[j]·rowsum_A[i] - za[i]·colsum_B[j] + K·za[i]·zb[j]` (gemmlowp),
//! where `S = A·B` is the kernel's raw sum. Quad kernels see `i8` activations shifted by
//! `+128`; the shift is one more zero point: `za` becomes `za + 128` and `rowsum_A` the sum of
//! the shifted values (the driver passes those row sums).

use crate::arch::MAX_NR;
use crate::gemm::element::{Operand, ZeroPoint};
use crate::gemm::operands::Operands;
use crate::gemm::output::Stage;

/// Columns of a tile row corrected through fixed-length arrays (vector code) at a time.
const LANE: usize = 16;

/// The correction and output stage of one GEMM call.
pub(crate) struct Epilogue<'a, 'o, A, S> {
    pub(crate) ops: &'a Operands<'o, A>,
    /// `Σ_k a[i][k]` of the values the kernel saw (shifted for quad kernels on `i8`), or empty
    /// when B has no zero point.
    pub(crate) row_sums: &'a [i64],
    pub(crate) stage: &'a S,
    pub(crate) k: usize,
    /// What packing added to every A value (128 for `i8` on quad kernels, else 0).
    pub(crate) shift: i32,
}

/// Per-column terms of one tile's columns, in wrapping `i32`: `zb[j]`, `colsum[j]`,
/// `K·zb[j]`, and, when A's zero point is the same for every row, the whole column part of the
/// correction, `za·(K·zb[j] - colsum[j])`.
pub(crate) struct Columns {
    j0: usize,
    zb: [i32; MAX_NR],
    col_sum: [i32; MAX_NR],
    k_zb: [i32; MAX_NR],
    fixed: Option<[i32; MAX_NR]>,
}

impl<A: Operand, S: Stage> Epilogue<'_, '_, A, S> {
    /// A's zero point for row `i`, as the kernel saw A (shift included).
    #[inline(always)]
    fn za(&self, i: usize) -> i32 {
        self.ops.a_zero.get(i) + self.shift
    }

    /// The column terms for columns `j0 ..` (wrapping `i32`: only used when every corrected
    /// result fits `i32`, where modular arithmetic gives the exact value).
    #[expect(clippy::as_conversions, reason = "wrapping i32 arithmetic, exact wherever the i32 path is taken")]
    pub(crate) fn columns(&self, j0: usize, col_sums: &[i64]) -> Columns {
        let mut cols = Columns { j0, zb: [0; MAX_NR], col_sum: [0; MAX_NR], k_zb: [0; MAX_NR], fixed: None };
        let k = self.k as i32; // wraps for huge K, consistently with the rest of the i32 path
        for (c, &s) in col_sums.iter().enumerate().take(MAX_NR) {
            let zb = self.ops.zb(j0 + c);
            cols.zb[c] = zb;
            cols.col_sum[c] = s as i32;
            cols.k_zb[c] = k.wrapping_mul(zb);
        }
        let za = match self.ops.a_zero {
            ZeroPoint::None => Some(self.shift),
            ZeroPoint::PerTensor(z) => Some(z + self.shift),
            ZeroPoint::PerChannel(_) => None,
        };
        cols.fixed = za.map(|za| core::array::from_fn(|c| za.wrapping_mul(cols.k_zb[c].wrapping_sub(cols.col_sum[c]))));
        cols
    }

    /// `out[c] = stage(S[i][j] - zb[j]·rowsum[i] - za[i]·colsum[j] + K·za[i]·zb[j])`, in
    /// wrapping `i32` (exact, see [`Epilogue::columns`]).
    #[inline(always)]
    pub(crate) fn write_narrow(&self, i: usize, cols: &Columns, raw: &[i32], out: &mut [S::Out]) {
        // Whole runs of LANE columns (the common case) go through fixed-length arrays, which
        // the compiler turns into vector code; a partial one through the same code at its length.
        // One whole run (a full tile row of a 16-column kernel) goes straight there.
        if let (Ok(raw), Ok(out)) = (<&[i32; LANE]>::try_from(raw), <&mut [S::Out; LANE]>::try_from(&mut *out)) {
            self.full_run(i, cols, 0, raw, out);
            return;
        }
        for (part, (raw, out)) in raw.chunks(LANE).zip(out.chunks_mut(LANE)).enumerate() {
            let c0 = part * LANE;
            match (<&[i32; LANE]>::try_from(raw), <&mut [S::Out; LANE]>::try_from(&mut *out)) {
                (Ok(raw), Ok(out)) => self.full_run(i, cols, c0, raw, out),
                _ => self.correct_run(i, cols, c0, raw, out),
            }
        }
    }

    /// Kept out of line so that `cols` stays an array in memory, which the compiler
    /// vectorizes over (inlined, its fields were split into scalars).
    #[inline(never)]
    fn full_run(&self, i: usize, cols: &Columns, c0: usize, raw: &[i32; LANE], out: &mut [S::Out; LANE]) {
        self.correct_run(i, cols, c0, raw, out);
    }

    /// Columns `c0 .. c0 + raw.len()` of the tile row.
    #[inline(always)]
    #[expect(clippy::as_conversions, reason = "wrapping i32 arithmetic, exact wherever the i32 path is taken")]
    fn correct_run<R, O>(&self, i: usize, cols: &Columns, c0: usize, raw: &R, out: &mut O)
    where
        R: AsRef<[i32]> + ?Sized,
        O: AsMut<[S::Out]> + ?Sized,
    {
        let (raw, out) = (raw.as_ref(), out.as_mut());
        let n = raw.len();
        let row_sum = self.row_sums.get(i).copied().unwrap_or(0) as i32;
        let (zb, col_sum, k_zb) = (&cols.zb[c0..c0 + n], &cols.col_sum[c0..c0 + n], &cols.k_zb[c0..c0 + n]);
        let j0 = cols.j0 + c0;
        match &cols.fixed {
            Some(fixed) if row_sum == 0 => {
                for (c, (o, (&r, &f))) in out.iter_mut().zip(raw.iter().zip(&fixed[c0..c0 + n])).enumerate() {
                    *o = self.stage.apply_i32(i, j0 + c, r.wrapping_add(f));
                }
            }
            Some(fixed) => {
                for (c, (o, (&r, (&f, &z)))) in
                    out.iter_mut().zip(raw.iter().zip(fixed[c0..c0 + n].iter().zip(zb))).enumerate()
                {
                    *o = self.stage.apply_i32(i, j0 + c, r.wrapping_add(f).wrapping_sub(z.wrapping_mul(row_sum)));
                }
            }
            None => {
                let za = self.za(i);
                for (c, (o, &r)) in out.iter_mut().zip(raw).enumerate() {
                    let acc = r
                        .wrapping_sub(zb[c].wrapping_mul(row_sum))
                        .wrapping_sub(za.wrapping_mul(col_sum[c]))
                        .wrapping_add(za.wrapping_mul(k_zb[c]));
                    *o = self.stage.apply_i32(i, j0 + c, acc);
                }
            }
        }
    }

    /// The same in `i64`, for depths whose results may exceed `i32`.
    #[inline]
    pub(crate) fn write_wide(&self, i: usize, j0: usize, col_sums: &[i64], raw: &[i64], out: &mut [S::Out]) {
        let za = i64::from(self.za(i));
        let row_sum = self.row_sums.get(i).copied().unwrap_or(0);
        let k = i64::try_from(self.k).unwrap_or(i64::MAX);
        for (c, o) in out.iter_mut().enumerate() {
            let j = j0 + c;
            let zb = i64::from(self.ops.zb(j));
            let acc = raw[c] - zb * row_sum - za * col_sums[c] + k * za * zb;
            *o = self.stage.apply(i, j, acc);
        }
    }
}
