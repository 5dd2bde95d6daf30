//! The integer GEMM engine: `C = (A - za) · (B - zb)` for 8-bit operands, exact, packed,
//! blocked, SIMD and multithreaded, with a choice of output stage.
//!
//! # How
//! * Zero points are not subtracted element by element: the engine multiplies the raw codes
//!   and corrects with row and column sums (gemmlowp):
//!   `C[i][j] = S[i][j] - zb[j]·rowsum_A[i] - za[i]·colsum_B[j] + K·za[i]·zb[j]`,
//!   with `S = A·B`, exact in `i64`.
//! * The micro-kernel is chosen per call (one tier per CPU: [`Tier`], [`KernelChoice`]); the
//!   driver, packing and epilogue are generic over it.
//! * Every product is exact: pair kernels (`vpmaddwd`) widen operands to `i16`; quad kernels
//!   (`vpdpbusd`) multiply `u8 · i8` into `i32` with no `i16` step, `i8` activations shifted by
//!   +128 while packing and the shift corrected as a zero point. The optional 7-bit path
//!   ([`Gemm::seven_bit_activations`]) uses `vpmaddubsw` on the AVX2 tier, where activations
//!   `<= 127` make it exact; on the VNNI tiers it is the normal path.
//! * Weights can be packed once ([`PackedB`], also from 4-bit codes) and reused; unpacked
//!   weights are packed per call, block by block.
//! * `S` is accumulated in `i32` in chunks of depth that provably cannot overflow
//!   (`max|a| · max|b| · depth <= i32::MAX`, e.g. 65 793 for `u8 x i8`), and chunks are summed in
//!   `i64`. Any depth is exact.
//! * Blocking (each kernel's `MC`, `NC`, `KC`): unpacked weights are packed `NC` columns at a
//!   time (all of K); pre-packed weights are used in place. For each block of `MC` rows, A is
//!   packed once; then every `MR x NR` tile runs the micro-kernel over the depth and goes
//!   straight through the zero-point correction (in `i32` when the result provably fits) and
//!   the output stage. On the AVX2 7-bit path, each B panel is first regrouped from depth
//!   pairs into depth quads, once per row block, so the kernel reads it straight from memory.
//! * `M = 1` (token-by-token decoding) skips the tiles: a row kernel streams the packed weights
//!   once, so it runs at memory speed.
//! * Threads (feature `parallel`, on by default): with pre-packed weights and enough rows the
//!   rows are split between threads (the weights are shared, each thread packs its own A);
//!   otherwise the columns (each thread packs its own B). Every output element is computed by
//!   the same exact integer arithmetic whatever the split, so results are bit-identical for
//!   any thread count.

pub(crate) mod driver;
pub(crate) mod element;
pub(crate) mod epilogue;
pub(crate) mod operands;
pub(crate) mod output;
pub(crate) mod pack;

use alloc::vec::Vec;

use quant_traits::{I4x2, QuantError};

use crate::arch::{dispatch, Cpu, KernelChoice, MicroKernel, Tier};
use crate::view::{MatMut, MatRef};
use element::{Operand, ZeroPoint};
pub use operands::Operands;
use operands::Weights;
use output::{F32Out, I32Out, Requant, RequantOut, Scale, Stage};
use pack::PackedB;

/// Engine settings: which kernel and how many threads. `Gemm::default()` picks the best kernel
/// for this CPU (or `QUANT_KERNEL`'s) and (with the `parallel` feature) rayon's thread pool.
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

    /// Forces a kernel tier. A tier this CPU lacks makes every call fail with
    /// [`QuantError::KernelUnavailable`] (nothing falls back silently).
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
    /// them), which lets the AVX2 tier use its faster `vpmaddubsw` tiles: `u8 x i8` pair sums
    /// then provably fit `i16`, so the result stays exact. The promise is checked (one pass over
    /// A): a value outside `0..=127` is a [`QuantError::ActivationOutOfRange`]. `M = 1` keeps
    /// the pair kernels (it is bound by memory, not arithmetic). On the portable and VNNI tiers
    /// the normal path is already exact for full-range `u8`, so only the check differs.
    #[must_use]
    pub fn seven_bit_activations(mut self, on: bool) -> Self {
        self.seven_bit = on;
        self
    }

    /// The kernel tier these settings run on this CPU.
    ///
    /// # Errors
    /// [`QuantError::KernelUnavailable`] when the settings (or `QUANT_KERNEL`, for the
    /// automatic choice) ask for a tier this CPU lacks; [`QuantError::UnknownKernel`] for a
    /// `QUANT_KERNEL` that names no tier.
    pub fn tier(&self) -> Result<Tier, QuantError> {
        self.kernel.resolve()
    }

    /// The name of the kernel these settings run (`"avx512vnni"`, `"avxvnni"`, `"avx2"` or
    /// `"portable"`).
    ///
    /// # Errors
    /// As [`Gemm::tier`].
    pub fn kernel_name(&self) -> Result<&'static str, QuantError> {
        self.tier().map(Tier::name)
    }

    /// Packs a `K x N` `i8` weight matrix once, in the layout of the kernel these settings run
    /// (see [`PackedB`]).
    ///
    /// # Errors
    /// As [`Gemm::tier`].
    pub fn pack_b(&self, b: MatRef<'_, i8>) -> Result<PackedB, QuantError> {
        Ok(PackedB::pack_for(self.tier()?, b))
    }

    /// Packs a `K x N` `u8` weight matrix (see [`PackedB::from_u8`]) for the kernel these
    /// settings run.
    ///
    /// # Errors
    /// As [`Gemm::tier`].
    pub fn pack_b_u8(&self, b: MatRef<'_, u8>) -> Result<PackedB, QuantError> {
        Ok(PackedB::from_u8_for(self.tier()?, b))
    }

    /// Packs a `K x N` matrix of signed 4-bit codes (see [`PackedB::from_i4`]) for the kernel
    /// these settings run.
    ///
    /// # Errors
    /// As [`PackedB::from_i4`] and [`Gemm::tier`].
    pub fn pack_b_i4(&self, codes: &[I4x2], k: usize, n: usize) -> Result<PackedB, QuantError> {
        PackedB::from_i4_for(self.tier()?, codes, k, n)
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
    /// [`QuantError::InvalidFixedPoint`] for its multiplier or shift out of range (any column's);
    /// for [`Requant::QLinear`], [`QuantError::InvalidScale`] for a scale that is not finite,
    /// positive and a value of its type, and [`QuantError::LengthMismatch`] for scales neither
    /// one nor one per row (A) or column (B);
    /// [`QuantError::LengthMismatch`] for per-column multipliers or shifts not `N` long or `c`
    /// not `M x N`.
    pub fn requant<A: Operand, O: Operand>(
        &self,
        ops: &Operands<'_, A>,
        requant: Requant<'_>,
        c: MatMut<'_, O>,
    ) -> Result<(), QuantError> {
        match requant {
            Requant::Float { multiplier, .. } => multiplier.check("multiplier (one per column)", ops.dims().2)?,
            Requant::FixedPoint { multiplier, shift, .. } => {
                output::check_fixed_point(multiplier, shift)?;
                ops.check_i32_depth()?;
            }
            Requant::FixedPointPerColumn { multipliers, shifts, .. } => {
                let n = ops.dims().2;
                QuantError::check_length("fixed-point multipliers (one per column)", n, multipliers.len())?;
                QuantError::check_length("fixed-point shifts (one per column)", n, shifts.len())?;
                multipliers.iter().zip(shifts).try_for_each(|(&m, &s)| output::check_fixed_point(m, s))?;
                ops.check_i32_depth()?;
            }
            Requant::QLinear { a_scale, b_scale, y_scale, precision, .. } => {
                let (m, _, n) = ops.dims();
                output::check_qlinear_scales("a_scale (one per row of A)", a_scale, m, precision)?;
                output::check_qlinear_scales("b_scale (one per column of B)", b_scale, n, precision)?;
                output::check_qlinear_scales("y_scale", &[y_scale], 1, precision)?;
            }
        }
        self.run(ops, &RequantOut::<O>::new(requant), c)
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
        let tier = self.tier()?;
        dispatch!(tier, K => self.run_on::<K, A, S>(ops, stage, c))
    }

    /// The call on kernel `K` (monomorphised per kernel).
    fn run_on<K: MicroKernel, A: Operand, S: Stage>(
        &self,
        ops: &Operands<'_, A>,
        stage: &S,
        c: MatMut<'_, S::Out>,
    ) -> Result<(), QuantError>
    where
        S::Out: Copy,
    {
        let cpu = Cpu::<K>::check()?;
        let (m, k, n) = ops.dims();
        QuantError::check_length("C rows", m, c.rows())?;
        QuantError::check_length("C columns", n, c.cols())?;
        if let Weights::Packed(p) = ops.b {
            p.check_layout::<K>()?;
        }
        if self.seven_bit {
            check_seven_bit(&ops.a)?;
        }
        let path = driver::Path::of(ops, stage);
        // Row sums of A as the kernel sees it (quad kernels shift i8 by +128), for B's zero
        // point in the element-by-element epilogue; not needed without one (the register path
        // computes its own per row block).
        let row_sums = if !path.needs_wide_row_sums() || (ops.b_zero == ZeroPoint::None && ops.b_offset() == 0) {
            Vec::new()
        } else {
            let shift = i64::from(pack::a_shift::<K, A>());
            let extra = shift * i64::try_from(k).unwrap_or(i64::MAX);
            pack::row_sums(&ops.a).into_iter().map(|s| s + extra).collect()
        };
        // At least one NR panel per thread.
        let threads = crate::threads::thread_count(self.threads, n.div_ceil(K::NR));
        driver::drive_all(cpu, self.seven_bit, path, ops, &row_sums, stage, c.into_block(), threads);
        Ok(())
    }
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
