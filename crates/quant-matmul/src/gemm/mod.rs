//! The integer GEMM engine: `C = (A - za) · (B - zb)` for 8-bit operands, exact, packed,
//! blocked, SIMD and multithreaded, with a choice of output stage.
//!
//! # How
//! * Zero points are not subtracted element by element: the engine multiplies the raw codes
//!   and corrects with row and column sums (gemmlowp):
//!   `C[i][j] = S[i][j] - zb[j]·rowsum_A[i] - za[i]·colsum_B[j] + K·za[i]·zb[j]`,
//!   with `S = A·B`, exact in `i64`.
//! * Operands are widened to `i16` (A while packing, B in the kernel), so every product is
//!   exact: there is no `vpmaddubsw`-style `i16` saturation on this path. The optional 7-bit path
//!   ([`Gemm::seven_bit_activations`]) does use `vpmaddubsw`, where activations `<= 127` make
//!   it exact.
//! * Weights can be packed once ([`PackedB`], also from 4-bit codes) and reused; unpacked
//!   weights are packed per call, block by block.
//! * `S` is accumulated in `i32` in chunks of depth that provably cannot overflow
//!   (`max|a| · max|b| · depth <= i32::MAX`, e.g. 65 793 for `u8 x i8`), and chunks are summed in
//!   `i64`. Any depth is exact.
//! * Blocking: unpacked weights are packed `NC` columns at a time (all of K); pre-packed
//!   weights are used in place. For each block of `MC` rows, A is packed once; then every
//!   `MR x NR` tile runs the micro-kernel over the full depth and goes straight through the
//!   zero-point correction (in `i32` when the result provably fits) and the output stage.
//!   On the 7-bit path (`MC_QUADS` rows per block), each B panel is first regrouped from depth
//!   pairs into depth quads, once per row block, so the kernel reads it straight from memory.
//! * `M = 1` (token-by-token decoding) skips the tiles: a row kernel streams the packed weights
//!   once, so it runs at memory speed.
//! * Threads (feature `parallel`, on by default): with pre-packed weights and enough rows the
//!   rows are split between threads (the weights are shared, each thread packs its own A);
//!   otherwise the columns (each thread packs its own B). Every output element is computed by
//!   the same exact integer arithmetic whatever the split, so results are bit-identical for
//!   any thread count.

pub(crate) mod operand;
pub(crate) mod output;
pub(crate) mod pack;

use alloc::vec::Vec;

use quant_traits::QuantError;

use crate::kernels::{kernel_for, run_row, run_tile, run_tile_u7, Kernel, KernelChoice, MR, NR};
use crate::view::{Block, MatMut, MatRef};
use operand::{Operand, ZeroPoint};
use output::{F32Out, I32Out, Requant, RequantOut, Scale, Stage};
use pack::{pack_a, pack_a_quads, pack_b_block, pairs, quads_from_pairs, PackedB};

/// Rows of A packed at a time.
const MC: usize = 48;
/// Rows per block on the 7-bit path, whose packed A is half as large (bytes, not `i16`).
/// Larger blocks also regroup each B panel into quads fewer times.
const MC_QUADS: usize = 96;
/// Columns of B packed at a time.
const NC: usize = 256;

/// The weights operand: a matrix view, packed per call, or weights packed once.
#[derive(Copy, Clone, Debug)]
enum Weights<'a> {
    Matrix(MatRef<'a, i8>),
    Packed(&'a PackedB),
}

/// The two operands of a GEMM with their zero points, validated together: A (`M x K`, `u8` or
/// `i8`, zero point per tensor or per row) and B (`K x N`, `i8` weights, zero point per tensor
/// or per column).
#[derive(Copy, Clone, Debug)]
pub struct Operands<'a, A> {
    a: MatRef<'a, A>,
    a_zero: ZeroPoint<'a>,
    b: Weights<'a>,
    b_zero: ZeroPoint<'a>,
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

    /// A with zero point `a_zero`, B packed once with [`PackedB`].
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
        b_zero.check::<i8>("B zero points (one per column)", b_cols)?;
        Ok(Operands { a, a_zero, b, b_zero })
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

    /// Largest depth whose raw sums `A·B` fit `i32` in one accumulation (e.g. 65 793 for
    /// `u8 x i8`).
    fn chunk_depth(&self) -> usize {
        let per = u64::from(A::MAX.unsigned_abs().max(A::MIN.unsigned_abs())) * 128;
        usize::try_from(i32::MAX as u64 / per).unwrap_or(usize::MAX)
    }

    /// Largest depth whose corrected results `(A - za)·(B - zb)` provably fit `i32`.
    #[must_use]
    pub fn max_i32_depth(&self) -> usize {
        let per = self.a_zero.max_centered::<A>() * self.b_zero.max_centered::<i8>();
        usize::try_from(i32::MAX as u64 / per.max(1)).unwrap_or(usize::MAX)
    }

    fn check_i32_depth(&self) -> Result<(), QuantError> {
        let (k, max_k) = (self.a.cols(), self.max_i32_depth());
        if k > max_k {
            Err(QuantError::DepthTooLarge { k, max_k })
        } else {
            Ok(())
        }
    }
}
/// Engine settings: which kernel and how many threads. `Gemm::default()` picks the best kernel
/// for this CPU and (with the `parallel` feature) rayon's thread pool.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Gemm {
    kernel: KernelChoice,
    threads: Option<usize>,
    seven_bit: bool,
}

impl Gemm {
    /// The default settings.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Forces a kernel.
    #[must_use]
    pub fn kernel(mut self, kernel: KernelChoice) -> Self {
        self.kernel = kernel;
        self
    }

    /// Uses at most `threads` threads (1: only the calling thread). The result does not depend
    /// on it.
    #[must_use]
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads.max(1));
        self
    }

    /// Promises activations in `0..=127` (7 bits, as ONNX Runtime's `reduce_range` quantizes
    /// them), which lets the engine use the faster `vpmaddubsw` kernels: `u8 x i8` pair sums
    /// then provably fit `i16`, so the result stays exact. The promise is checked (one pass over
    /// A): a value outside `0..=127` is a [`QuantError::ActivationOutOfRange`]. `M = 1` keeps
    /// the pair kernels (it is bound by memory, not arithmetic).
    #[must_use]
    pub fn seven_bit_activations(mut self, on: bool) -> Self {
        self.seven_bit = on;
        self
    }

    /// The name of the kernel these settings run (`"avx2"` or `"portable"`).
    #[must_use]
    pub fn kernel_name(&self) -> &'static str {
        kernel_for(self.kernel).name()
    }

    /// `C = (A - za)·(B - zb)` as `i32`.
    ///
    /// # Errors
    /// [`QuantError::DepthTooLarge`] if some result could exceed `i32` (depth beyond
    /// [`Operands::max_i32_depth`], e.g. 33 025 for `u8 x i8` with zero points);
    /// [`QuantError::LengthMismatch`] if `c` is not `M x N`.
    pub fn i32<A: Operand>(&self, ops: &Operands<'_, A>, c: MatMut<'_, i32>) -> Result<(), QuantError> {
        ops.check_i32_depth()?;
        self.run(ops, &I32Out, c)
    }

    /// `C = (A - za)·(B - zb) · scale_a · scale_b[j] + bias[j]` as `f32` (computed in `f64`,
    /// rounded once).
    ///
    /// # Errors
    /// [`QuantError::InvalidScale`] for a scale that is not finite and positive;
    /// [`QuantError::LengthMismatch`] for per-column scales or a bias not `N` long, or `c` not
    /// `M x N`.
    pub fn f32<A: Operand>(
        &self,
        ops: &Operands<'_, A>,
        scale_a: f32,
        scale_b: Scale<'_>,
        bias: Option<&[f32]>,
        c: MatMut<'_, f32>,
    ) -> Result<(), QuantError> {
        let n = ops.dims().2;
        Scale::PerTensor(scale_a).check("scale_a", 1)?;
        scale_b.check("scale_b (one per column)", n)?;
        if let Some(bias) = bias {
            QuantError::check_length("bias (one per column)", n, bias.len())?;
        }
        self.run(ops, &F32Out { scale_a: f64::from(scale_a), scale_b, bias }, c)
    }

    /// `C = requantize((A - za)·(B - zb))` as `i8` or `u8` (see [`Requant`] for the rounding).
    ///
    /// # Errors
    /// [`QuantError::InvalidScale`] for a float multiplier that is not finite and positive;
    /// [`QuantError::DepthTooLarge`] for [`Requant::FixedPoint`] beyond the `i32` depth;
    /// [`QuantError::LengthMismatch`] for per-column multipliers not `N` long or `c` not `M x N`.
    pub fn requant<A: Operand, O: Operand>(
        &self,
        ops: &Operands<'_, A>,
        requant: Requant<'_>,
        c: MatMut<'_, O>,
    ) -> Result<(), QuantError> {
        match requant {
            Requant::Float { multiplier, .. } => multiplier.check("multiplier (one per column)", ops.dims().2)?,
            Requant::FixedPoint { .. } => ops.check_i32_depth()?,
        }
        self.run(ops, &RequantOut { requant, _out: core::marker::PhantomData::<O> }, c)
    }

    #[cfg(feature = "parallel")]
    fn thread_count(&self, n: usize) -> usize {
        let available = rayon::current_num_threads();
        let wanted = self.threads.unwrap_or(available).min(available.max(1));
        // At least one NR panel per thread.
        wanted.min(n.div_ceil(NR)).max(1)
    }

    fn run<A: Operand, S: Stage>(
        &self,
        ops: &Operands<'_, A>,
        stage: &S,
        c: MatMut<'_, S::Out>,
    ) -> Result<(), QuantError>
    where
        S::Out: Copy,
    {
        let (m, _, n) = ops.dims();
        QuantError::check_length("C rows", m, c.rows())?;
        QuantError::check_length("C columns", n, c.cols())?;
        let kernel = kernel_for(self.kernel);
        let quads = self.seven_bit && m > 1;
        if self.seven_bit {
            check_seven_bit(&ops.a)?;
        }
        let kernel = Path { kernel, quads };
        let row_sums = if ops.b_zero == ZeroPoint::None { Vec::new() } else { pack::row_sums(&ops.a) };
        let sums = &row_sums;
        #[cfg(feature = "parallel")]
        {
            let threads = self.thread_count(n);
            if threads > 1 {
                split_and_drive(kernel, ops, sums, stage, c, threads);
                return Ok(());
            }
        }
        drive(kernel, ops, sums, stage, c.into_block());
        Ok(())
    }
}

#[cfg(feature = "parallel")]
fn split_and_drive<A: Operand, S: Stage>(
    kernel: Path,
    ops: &Operands<'_, A>,
    sums: &[i64],
    stage: &S,
    c: MatMut<'_, S::Out>,
    threads: usize,
) where
    S::Out: Copy,
{
    // Pre-packed weights and enough rows: split the rows (each thread packs only its own rows
    // of A, the weights are shared). Otherwise split the columns into whole NR panels (each
    // thread packs only its own columns of B).
    let (m, _, n) = ops.dims();
    let by_rows = matches!(ops.b, Weights::Packed(_)) && m >= threads * 4 * MR;
    let (units, unit) = if by_rows { (m.div_ceil(MR), MR) } else { (n.div_ceil(NR), NR) };
    let mut blocks = Vec::with_capacity(threads);
    let mut rest = c.into_block();
    for t in (1..threads).rev() {
        let take = (units * t / threads) * unit; // left for the remaining t threads
        let (left, right) = if by_rows { rest.split_rows(take) } else { rest.split_cols(take) };
        blocks.push(right);
        rest = left;
    }
    blocks.push(rest);
    rayon::scope(|s| {
        for block in blocks {
            s.spawn(move |_| drive(kernel, ops, sums, stage, block));
        }
    });
}

/// Which kernels run: the instruction set, and whether the 7-bit quad kernels do the tiles.
#[derive(Copy, Clone, Debug)]
struct Path {
    kernel: Kernel,
    quads: bool,
}

/// Checks the 7-bit promise: every value of A in `0..=127`.
fn check_seven_bit<A: Operand>(a: &MatRef<'_, A>) -> Result<(), QuantError> {
    for row in 0..a.rows() {
        let values = a.row(row);
        let bad = values.iter().fold(false, |bad, v| bad | !(0..=127).contains(&v.widen()));
        if bad {
            if let Some(col) = values.iter().position(|v| !(0..=127).contains(&v.widen())) {
                return Err(QuantError::ActivationOutOfRange { row, col, value: i32::from(values[col].widen()) });
            }
        }
    }
    Ok(())
}

/// The sequential engine over one block of whole columns (`col0` a multiple of `NR`).
fn drive<A: Operand, S: Stage>(path: Path, ops: &Operands<'_, A>, row_sums: &[i64], stage: &S, mut c: Block<'_, S::Out>)
where
    S::Out: Copy,
{
    let (_, k, _) = ops.dims();
    let (row0, m) = (c.row0(), c.rows());
    let kernel = path.kernel;
    let quads = path.quads && m > 1;
    let kp = pairs(k);
    // Largest depth (in pairs) whose raw tile sums fit i32; even on the quad path, so chunks
    // start on whole quads.
    let chunk = if quads { (i32::MAX as usize / (127 * 128) / 2) & !1 } else { (ops.chunk_depth() / 2).max(1) };
    // Words of one packed A panel.
    let a_panel = if quads { kp.div_ceil(2) * MR } else { kp * MR };
    // One tile over pairs `p0 .. p0 + len` (p0 even on the quad path, where `bpanel` is the
    // quad panel).
    let run = |p0: usize, len: usize, apanel: &[i32], bpanel: &[i8], ahead: &[i8], tile: &mut [i32; MR * NR]| {
        if quads {
            let ahead = ahead.get(p0 * NR * 2..).unwrap_or(&[]);
            run_tile_u7(kernel, len.div_ceil(2), &apanel[p0 / 2 * MR..], &bpanel[p0 / 2 * NR * 4..], ahead, tile);
        } else {
            run_tile(kernel, len, &apanel[p0 * MR..], &bpanel[p0 * NR * 2..], tile);
        }
    };
    // Every corrected result fits i32: the tile and the correction stay in (wrapping) i32,
    // which is exact because the true result is representable.
    let narrow = kp <= chunk && k <= ops.max_i32_depth();
    let (col0, ncols) = (c.col0(), c.cols());
    let epi = Epilogue { ops, row_sums, stage, k };
    let mut apack = Vec::new();
    let mut bquads = Vec::new();
    let mc_block = if quads { MC_QUADS } else { MC };
    let (mut bdata, mut bsums) = (Vec::new(), Vec::new());
    let mut tile = [0i32; MR * NR];
    let mut wide = [0i64; MR * NR];
    let mut row = [0i32; NR];
    // Pre-packed weights: one block spans all of this thread's columns, so A is packed once
    // per row block. Otherwise B is packed here, NC columns at a time.
    let block_cols = match ops.b {
        Weights::Packed(_) => ncols.max(1),
        Weights::Matrix(_) => NC,
    };
    for jc in (0..ncols).step_by(block_cols) {
        let nc = block_cols.min(ncols - jc);
        let (panels, col_sums): (&[i8], &[i64]) = match ops.b {
            Weights::Packed(p) => {
                let first = (col0 + jc) / NR;
                (&p.data_from(first)[..nc.div_ceil(NR) * kp * NR * 2], &p.col_sums()[col0 + jc..col0 + jc + nc])
            }
            Weights::Matrix(b) => {
                pack_b_block(&b, col0 + jc, nc, &mut bdata, &mut bsums);
                (&bdata, &bsums)
            }
        };
        let panel = |jr: usize| &panels[jr * kp * NR * 2..(jr + 1) * kp * NR * 2];
        if m == 1 {
            pack_a(&ops.a, row0, 1, 1, &mut apack);
            for jr in 0..nc.div_ceil(NR) {
                let bpanel = panel(jr);
                wide[..NR].fill(0);
                for p0 in (0..kp).step_by(chunk) {
                    let len = chunk.min(kp - p0);
                    run_row(kernel, len, &apack[p0..], &bpanel[p0 * NR * 2..], &mut row);
                    for (w, &t) in wide.iter_mut().zip(&row) {
                        *w += i64::from(t);
                    }
                }
                let cols = NR.min(nc - jr * NR);
                let cs = &col_sums[jr * NR..jr * NR + cols];
                epi.write_wide(row0, col0 + jc + jr * NR, cs, &wide[..cols], c.row_part(row0, jc + jr * NR, cols));
            }
            continue;
        }
        for ic in (row0..row0 + m).step_by(mc_block) {
            let mc = mc_block.min(row0 + m - ic);
            if quads {
                pack_a_quads(&ops.a, ic, mc, MR, &mut apack);
            } else {
                pack_a(&ops.a, ic, mc, MR, &mut apack);
            }
            for jr in 0..nc.div_ceil(NR) {
                let mut bpanel = panel(jr);
                if quads {
                    // Regrouped once here for the row block's tiles.
                    quads_from_pairs(bpanel, kp, &mut bquads);
                    bpanel = &bquads;
                }
                let cols = NR.min(nc - jr * NR);
                let j0 = col0 + jc + jr * NR;
                let cs = &col_sums[jr * NR..jr * NR + cols];
                let cols_ctx = epi.columns(j0, cs);
                // With a single row block (few rows), B streams from memory exactly once, and
                // the 7-bit path regroups the next pair panel when it gets there: its first
                // tile fetches it meanwhile. (The pair kernel fetches the next panel itself.)
                let next = if quads && m <= mc_block && jr + 1 < nc.div_ceil(NR) { panel(jr + 1) } else { &[][..] };
                for ir in 0..mc.div_ceil(MR) {
                    let ahead = if ir == 0 { next } else { &[][..] };
                    let apanel = &apack[ir * a_panel..(ir + 1) * a_panel];
                    let rows = MR.min(mc - ir * MR);
                    if narrow {
                        run(0, kp, apanel, bpanel, ahead, &mut tile);
                        for r in 0..rows {
                            let i = ic + ir * MR + r;
                            let out = c.row_part(i, jc + jr * NR, cols);
                            epi.write_narrow(i, &cols_ctx, &tile[r * NR..r * NR + cols], out);
                        }
                        continue;
                    }
                    wide.fill(0);
                    for p0 in (0..kp).step_by(chunk) {
                        let len = chunk.min(kp - p0);
                        run(p0, len, apanel, bpanel, ahead, &mut tile);
                        for (w, &t) in wide.iter_mut().zip(&tile) {
                            *w += i64::from(t);
                        }
                    }
                    for r in 0..rows {
                        let i = ic + ir * MR + r;
                        let out = c.row_part(i, jc + jr * NR, cols);
                        epi.write_wide(i, j0, cs, &wide[r * NR..r * NR + cols], out);
                    }
                }
            }
        }
    }
}

/// The zero-point correction and the output stage.
struct Epilogue<'a, 'o, A, S> {
    ops: &'a Operands<'o, A>,
    row_sums: &'a [i64],
    stage: &'a S,
    k: usize,
}

/// Per-column terms of one tile's columns, in wrapping `i32`: `zb[j]`, `colsum[j]`,
/// `K·zb[j]`, and, when A's zero point is the same for every row, the whole column part of the
/// correction, `za·(K·zb[j] - colsum[j])`.
struct Columns {
    j0: usize,
    zb: [i32; NR],
    col_sum: [i32; NR],
    k_zb: [i32; NR],
    fixed: Option<[i32; NR]>,
}

impl<A: Operand, S: Stage> Epilogue<'_, '_, A, S> {
    /// The column terms for columns `j0 ..` (wrapping `i32`: only used when every corrected
    /// result fits `i32`, where modular arithmetic gives the exact value).
    fn columns(&self, j0: usize, col_sums: &[i64]) -> Columns {
        let mut cols = Columns { j0, zb: [0; NR], col_sum: [0; NR], k_zb: [0; NR], fixed: None };
        let k = self.k as i32; // wraps for huge K, consistently with the rest of the i32 path
        for (c, &s) in col_sums.iter().enumerate() {
            let zb = self.ops.b_zero.get(j0 + c);
            cols.zb[c] = zb;
            cols.col_sum[c] = s as i32;
            cols.k_zb[c] = k.wrapping_mul(zb);
        }
        let za = match self.ops.a_zero {
            ZeroPoint::None => Some(0),
            ZeroPoint::PerTensor(z) => Some(z),
            ZeroPoint::PerChannel(_) => None,
        };
        cols.fixed = za.map(|za| core::array::from_fn(|c| za.wrapping_mul(cols.k_zb[c].wrapping_sub(cols.col_sum[c]))));
        cols
    }

    /// `out[c] = stage(S[i][j] - zb[j]·rowsum[i] - za[i]·colsum[j] + K·za[i]·zb[j])`, in
    /// wrapping `i32` (exact, see [`Epilogue::columns`]).
    #[inline]
    fn write_narrow(&self, i: usize, cols: &Columns, raw: &[i32], out: &mut [S::Out]) {
        // A whole tile row (the common case) goes through fixed-length arrays, which the
        // compiler turns into vector code; a partial one through the same code at length n.
        match (<&[i32; NR]>::try_from(raw), <&mut [S::Out; NR]>::try_from(&mut *out)) {
            (Ok(raw), Ok(out)) => self.full_row(i, cols, raw, out),
            _ => self.correct_row(i, cols, raw, out),
        }
    }

    /// Kept out of line so that `cols` stays an array in memory, which the compiler
    /// vectorizes over (inlined, its fields were split into scalars).
    #[inline(never)]
    fn full_row(&self, i: usize, cols: &Columns, raw: &[i32; NR], out: &mut [S::Out; NR]) {
        self.correct_row(i, cols, raw, out);
    }

    #[inline(always)]
    fn correct_row<R, O>(&self, i: usize, cols: &Columns, raw: &R, out: &mut O)
    where
        R: AsRef<[i32]> + ?Sized,
        O: AsMut<[S::Out]> + ?Sized,
    {
        let (raw, out) = (raw.as_ref(), out.as_mut());
        let row_sum = self.row_sums.get(i).copied().unwrap_or(0) as i32;
        let (zb, col_sum, k_zb) = (&cols.zb[..raw.len()], &cols.col_sum[..raw.len()], &cols.k_zb[..raw.len()]);
        let j0 = cols.j0;
        match &cols.fixed {
            Some(fixed) if row_sum == 0 => {
                for (c, (o, (&r, &f))) in out.iter_mut().zip(raw.iter().zip(fixed)).enumerate() {
                    *o = self.stage.apply_i32(j0 + c, r.wrapping_add(f));
                }
            }
            Some(fixed) => {
                for (c, (o, (&r, (&f, &z)))) in out.iter_mut().zip(raw.iter().zip(fixed.iter().zip(zb))).enumerate() {
                    *o = self.stage.apply_i32(j0 + c, r.wrapping_add(f).wrapping_sub(z.wrapping_mul(row_sum)));
                }
            }
            None => {
                let za = self.ops.a_zero.get(i);
                for (c, (o, &r)) in out.iter_mut().zip(raw).enumerate() {
                    let acc = r
                        .wrapping_sub(zb[c].wrapping_mul(row_sum))
                        .wrapping_sub(za.wrapping_mul(col_sum[c]))
                        .wrapping_add(za.wrapping_mul(k_zb[c]));
                    *o = self.stage.apply_i32(j0 + c, acc);
                }
            }
        }
    }

    /// The same in `i64`, for depths whose results may exceed `i32`.
    #[inline]
    fn write_wide(&self, i: usize, j0: usize, col_sums: &[i64], raw: &[i64], out: &mut [S::Out]) {
        let za = i64::from(self.ops.a_zero.get(i));
        let row_sum = self.row_sums.get(i).copied().unwrap_or(0);
        let k = i64::try_from(self.k).unwrap_or(i64::MAX);
        for (c, o) in out.iter_mut().enumerate() {
            let j = j0 + c;
            let zb = i64::from(self.ops.b_zero.get(j));
            let acc = raw[c] - zb * row_sum - za * col_sums[c] + k * za * zb;
            *o = self.stage.apply(j, acc);
        }
    }
}
