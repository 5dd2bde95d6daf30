//! Matrix multiply on weights quantized in groups along their inputs: `y = x · Wᵀ + bias`, the
//! decode-time product of a language model whose weights have a few bits with one scale per
//! group of inputs: every llama.cpp block format as a GGUF file stores it (`Q4_0` to `Q8_0`,
//! the k-quants `Q2_K` to `Q6_K`, `MXFP4`, `IQ4_NL`, `IQ4_XS`; [`GroupWeights::from_blocks`]), ONNX Runtime's
//! `MatMulNBits`, our own per-group schemes.
//!
//! The weights ([`GroupWeights`], from our codes or from llama.cpp's block bytes) are packed
//! once; two compute modes multiply them, each with a **reference** in plain Rust (the
//! `portable` tier) that defines the result bit for bit, and SIMD kernels for the x86-64 tiers
//! that reproduce it exactly, eight output channels at a time (ymm), or sixteen on the
//! `avx512vnni` and `amx` tiers (zmm, int8 mode; see [`GroupWeights`] for the two layouts). The tier is chosen as for
//! [`crate::Gemm`] ([`GroupGemm::kernel`], `QUANT_KERNEL`); threads split the output channels
//! (and, in the int8 mode, the rows of the activations to quantize).
//! The result is the same on every tier and for any thread count: every output element goes
//! through the same sequence of `f32` operations everywhere.
//!
//! # Choosing a mode
//! * [`GroupGemm::int8_activations`] quantizes each row of `x` to `i8` per block of inputs (the
//!   group, or the super-block of two-level weights) and takes exact integer dot products
//!   (`vpdpbusd` on VNNI tiers, `vpmaddubsw` on AVX2): the fastest mode, and the one llama.cpp
//!   (`Q8_0` and `Q8_K` activations) and ONNX Runtime (`accuracy_level = 4`) run by default. It
//!   adds the activations' rounding, half a step of `amax / 127` per block: a relative error of
//!   a few `10^-3` on typical layers, the same as theirs.
//! * [`GroupGemm::float_activations`] keeps `x` in `f32` and multiplies by the weights as
//!   dequantized in registers, with fused multiply-adds (ONNX Runtime's `accuracy_level = 0`):
//!   slower (each weight is converted to `f32` and the FMA units do all the work), but its error
//!   is only `f32` arithmetic, about `10^-6` relative: the mode for checking a quantization's
//!   own loss, or for layers that are sensitive to activation outliers.
//!
//! # The int8-activation mode ([`GroupGemm::int8_activations`])
//! Each row of `x` is quantized in **activation blocks**, with ties to even. For one-level
//! weights (`f32` or `f16` scales a group: the legacy formats, `MXFP4`, `IQ4_NL`, our
//! one-level codes) a block is the weights' group, 32 inputs for the llama.cpp formats, as
//! llama.cpp's `Q8_0` activations and ONNX Runtime's `accuracy_level = 4`. For two-level
//! weights (an integer scale a group times a factor a super-block: the k-quants, `IQ4_XS`, our
//! two-level formats; [`GroupWeights::activation_block`]) a block is the super-block, 256
//! inputs for the k-quants, as llama.cpp's `Q8_K`: each super-block's groups are summed before
//! one product with its activation scale, one `f32` multiply a group and row fewer (10 to 20 %
//! of the time from 16 rows up), and the activations' rounding is that of the super-block's
//! largest value. [`ActivationBlocks::Group`] takes the group for these weights too, for
//! layers whose activations have outliers.
//! 1. `amax = max |x_k|` over the block; `s_x = amax / 127` (an `f32` division); the codes are
//!    `q_k = clamp(round_ties_even(x_k / s_x), -127, 127)` (an `f32` division each), all zero
//!    when `amax = 0`.
//! 2. Per group `g`, the integer dot product with the weight codes, exact in `i32`:
//!    `d_g = Σ q_k · (u_k - z)` (the zero point enters through `z · Σ q_k`, not by widening the
//!    weights), and for the formats with a minimum (`Q4_1`, `Q5_1`, `Q2_K`, `Q4_K`, `Q5_K`)
//!    `σ_g = Σ q_k`. Levels (`MXFP4`, `IQ4_NL`, `IQ4_XS`) enter as the integers `L[u_k]`, looked up from a
//!    16-entry table in registers (`vpshufb`, or `vpermb` where AVX-512 VBMI is present), not
//!    gathered from memory.
//! 3. In `f32`, in this order, with `fma(a, b, c)` the fused multiply-add rounded once
//!    ([`quant_traits::cast::fma_f32`]), from `acc = 0`; then `y = acc + bias`. `d_g` and
//!    `σ_g` are exact in `f32` (`|d_g| <= 127 · 128 · 256 < 2^24`).
//!    * Blocks that are groups: for each group, `acc = fma(s_w,g, s_x,g · d_g, acc)`, plus,
//!      with a minimum, `acc = fma(m_g, s_x,g · σ_g, acc)` right after. The products
//!      `s_x,g · d_g` and `s_x,g · σ_g` are rounded once each (the second is computed once per
//!      row and group, with the codes). This is the float mode's step 3 with the group's
//!      partial sum `s_x,g · d_g`.
//!    * Blocks that are super-blocks: for each super-block `b`, from `t = 0`, for each of its
//!      groups `t = fma(s_w,g, d_g, t)`, plus, with a minimum, `t = fma(m_g, σ_g, t)` right
//!      after; then `acc = fma(t, s_x,b, acc)`.
//!
//! **Error bound.** Against the exact product with the dequantized weights
//! (`y* = Σ_k x_k · w_k + bias`, [`GroupWeights::value`]):
//! `|y - y*| <= Σ_b (s_x,b · (1/2 + 2^-17)) · Σ_{k in b} |w_k| + γ(2 · groups + 4) · T + u · |y|`
//! where `T = Σ_g |s_x · s_w,g · d_g| (+ |s_x · m_g · σ_g|) + |bias|` (`s_x` the scale of the
//! group's block), `u = 2^-24` and `γ(n) = n·u / (1 - n·u)`: the first term is the activations'
//! rounding (half a step, the `f32` division adding at most `127 · 2^-24` steps), the second
//! the `f32` arithmetic of step 3 (a term passes through at most two roundings a group, one
//! for the block and one for the bias). The tests check it on random data and on data with
//! outliers, for both kinds of blocks.
//!
//! # The float-activation mode ([`GroupGemm::float_activations`])
//! `x` is converted exactly to `f32`. For each row, output channel and group `g`, with
//! `fma(a, b, c)` the fused multiply-add `a · b + c` rounded once
//! ([`quant_traits::cast::fma_f32`]):
//! 1. each weight is dequantized in registers to the exact small integer `v_k = u_k - z`
//!    (`q_k` for the signed formats, `u_k` for those with a minimum, `L[u_k]` for levels), as
//!    an `f32`;
//! 2. two partial sums, one for the even and one for the odd inputs of the group, in input
//!    order: `p_(k mod 2) = fma(x_k, v_k, p_(k mod 2))` from `p = 0`, then `p_g = p_0 + p_1`;
//! 3. `acc = fma(s_w,g, p_g, acc)` from `acc = 0`, group after group; with a minimum, right after,
//!    `acc = fma(m_g, σ_g, acc)` with `σ_g = Σ x_k` summed the same way (two partial sums by
//!    parity, then `σ_0 + σ_1`, plain additions);
//! 4. `y = acc + bias`.
//!
//! Two chains per channel, not one, so that a kernel has enough independent multiply-adds in
//! flight; not more, so that three rows by sixteen channels of them fit AVX2's registers.
//!
//! **Error bound.** `|y - y*| <= γ(G/2 + 2 · groups + 4) · T'` with
//! `T' = Σ_g Σ_{k in g} |x_k| · (|s_w,g · v_k| + |m_g|) + |bias|`: every chain of step 2 is
//! `G/2` roundings long, step 3 adds one per group (two with a minimum) and the bias one. A product
//! beyond `f32`'s range gives `±inf`, as IEEE arithmetic does. The tests check the bound on
//! random data and on data with outliers; the relative error on such data is about `10^-6`.

mod weights;

use alloc::vec::Vec;

use quant_traits::{QuantError, QuantFloat};

use crate::arch::decode::{DecodeKernel, FloatRows, QuantizedRows, PANEL, ROUND_BITS, WIDE};
use crate::arch::{dispatch, KernelChoice, Tier};
use crate::view::{Block, MatMut, MatRef};
pub use weights::{GroupCodes, GroupWeights};

/// Settings of the group-quantized multiply: which kernel tier, how many threads, and the
/// int8 mode's activation blocks.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupGemm {
    kernel: KernelChoice,
    threads: Option<usize>,
    blocks: ActivationBlocks,
}

/// How many inputs share one activation scale in the int8 mode
/// ([`GroupGemm::int8_activations`]) for two-level weights (the k-quants, `IQ4_XS`, ours with
/// integer sub-block scales); one-level weights always take their group.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum ActivationBlocks {
    /// One scale a super-block ([`GroupWeights::activation_block`], 256 inputs for the
    /// k-quants), as llama.cpp's `Q8_K`: each super-block's groups are summed before one
    /// product with the activation scale, which saves an `f32` multiply a group and row
    /// (10 to 20 % of the time from 16 rows up). The activations' rounding is then that of the
    /// super-block's largest value.
    #[default]
    SuperBlock,
    /// One scale a group (16 or 32 inputs): each group's activations rounded against their own
    /// maximum, for layers whose activations have outliers.
    Group,
}

/// Every row of `x` quantized to `i8` per activation block (step 1 of the module docs).
pub(crate) struct Activations {
    k: usize,
    m: usize,
    group: usize,
    block: usize,
    two_level: bool,
    /// Codes in input order, row after row.
    pub(crate) q: Vec<i8>,
    /// Scale per activation block, at `b · m + r` (block after block).
    pub(crate) scales: Vec<f32>,
    /// `Σ q` per group, at `g · m + r` (group after group).
    pub(crate) sums: Vec<i32>,
    /// What a group's minimum multiplies, at `g · m + r`: `s_x · Σ q` (an `f32` product) for
    /// one-level weights, `Σ q` for two-level ones (their block's scale comes later).
    pub(crate) scaled_sums: Vec<f32>,
    /// `ROUND_BITS - o · Σ q` per group, at `g · m + r` (group after group) (`o` the weights'
    /// unsigned offset): where the kernels' integer sums start.
    pub(crate) offset_sums: Vec<i32>,
}

/// How [`Activations::quantize_on`] blocks a row: inputs per group and per scale, whether the
/// blocks are super-blocks, and the weights' unsigned offset.
#[derive(Copy, Clone)]
struct Shape {
    group: usize,
    block: usize,
    two_level: bool,
    offset: i32,
}

impl Activations {
    fn quantize<F: QuantFloat>(
        x: &MatRef<'_, F>,
        w: &GroupWeights,
        blocks: ActivationBlocks,
        tier: Tier,
        threads: Option<usize>,
    ) -> Self {
        let (group, offset) = (w.group_size(), w.codes_kind().unsigned_offset());
        let two_level = w.two_level() && blocks == ActivationBlocks::SuperBlock;
        let block = if two_level { w.activation_block() } else { group };
        let shape = Shape { group, block, two_level, offset };
        dispatch!(tier, K => Self::quantize_on::<K, F>(x, shape, threads))
    }

    /// [`Activations::quantize`] with `K`'s step 1: blocks of `block` inputs (a multiple of
    /// `group`) with one scale each, the sums per group; blocks of rows on up to `threads`
    /// threads (each row's values are the same whichever thread computes them).
    #[expect(clippy::as_conversions, reason = "a group's sum of codes (|Σ q| <= 127 · 256) to f32: exact")]
    fn quantize_on<K: DecodeKernel, F: QuantFloat>(x: &MatRef<'_, F>, shape: Shape, threads: Option<usize>) -> Self {
        let Shape { group, block, two_level, offset } = shape;
        let (m, k) = (x.rows(), x.cols());
        let (groups, blocks) = (k / group, k / block);
        let mut q = alloc::vec![0i8; m * k];
        // Row-major first (each row's block scales and group sums), then laid out group after
        // group for the kernels.
        let (mut row_scales, mut row_sums) = (alloc::vec![0f32; m * blocks], alloc::vec![0i32; m * groups]);
        let rows = |first: usize, q: &mut [i8], scales: &mut [f32], sums: &mut [i32]| {
            let mut xf = alloc::vec![0f32; block];
            for (i, ((q, scales), sums)) in q
                .chunks_exact_mut(k)
                .zip(scales.chunks_exact_mut(blocks))
                .zip(sums.chunks_exact_mut(groups))
                .enumerate()
            {
                let row = x.row(first + i);
                for (b, (q, s)) in q.chunks_exact_mut(block).zip(scales.iter_mut()).enumerate() {
                    for (d, v) in xf.iter_mut().zip(&row[b * block..(b + 1) * block]) {
                        *d = f32::from_f64_nearest(v.to_f64_exact()); // exact for f32, f16, bf16
                    }
                    // SAFETY: `K`'s tier was resolved (the CPU has it); `xf` and `q` hold one
                    // block (a multiple of 16).
                    *s = unsafe { K::quantize_group(&xf, q) }.0;
                }
                for (sum, codes) in sums.iter_mut().zip(q.chunks_exact(group)) {
                    *sum = codes.iter().map(|&c| i32::from(c)).sum();
                }
            }
        };
        let threads = crate::threads::thread_count(threads, m);
        #[cfg(feature = "parallel")]
        if threads > 1 {
            use rayon::prelude::*;
            let per = m.div_ceil(threads);
            q.par_chunks_mut(per * k)
                .zip(row_scales.par_chunks_mut(per * blocks))
                .zip(row_sums.par_chunks_mut(per * groups))
                .enumerate()
                .for_each(|(t, ((q, scales), sums))| rows(t * per, q, scales, sums));
        }
        if threads <= 1 || cfg!(not(feature = "parallel")) {
            rows(0, &mut q, &mut row_scales, &mut row_sums);
        }
        let mut a = Activations {
            k,
            m,
            group,
            block,
            two_level,
            q,
            scales: alloc::vec![0.0; m * blocks],
            sums: alloc::vec![0; m * groups],
            scaled_sums: alloc::vec![0.0; m * groups],
            offset_sums: alloc::vec![0; m * groups],
        };
        for r in 0..m {
            for b in 0..blocks {
                a.scales[b * m + r] = row_scales[r * blocks + b];
            }
            for g in 0..groups {
                let (sum, s) = (row_sums[r * groups + g], row_scales[r * blocks + g * group / block]);
                a.sums[g * m + r] = sum;
                // `sum` exact: |Σ q| <= 127 · 256
                a.scaled_sums[g * m + r] = if two_level { sum as f32 } else { s * sum as f32 };
                a.offset_sums[g * m + r] = ROUND_BITS - offset * sum;
            }
        }
        a
    }

    /// The view the kernels read.
    fn view(&self) -> QuantizedRows<'_> {
        QuantizedRows {
            k: self.k,
            group: self.group,
            block: self.block,
            two_level: self.two_level,
            m: self.m,
            q: &self.q,
            scales: &self.scales,
            sums: &self.sums,
            scaled_sums: &self.scaled_sums,
            offset_sums: &self.offset_sums,
        }
    }
}

/// Every row of `x` converted to `f32`, and for the formats with a minimum the per-group sums the minimums
/// multiply (step 3 of the float mode).
pub(crate) struct FloatActivations {
    k: usize,
    group: usize,
    x: Vec<f32>,
    /// `σ_g` per group, row after row (formats with minimums only; empty otherwise).
    sums: Vec<f32>,
}

impl FloatActivations {
    fn new<F: QuantFloat>(x: &MatRef<'_, F>, group: usize, with_sums: bool) -> Self {
        let (m, k) = (x.rows(), x.cols());
        let mut xf = Vec::with_capacity(m * k);
        for r in 0..m {
            xf.extend(x.row(r).iter().map(|v| f32::from_f64_nearest(v.to_f64_exact())));
            // exact
        }
        let sums = if with_sums { xf.chunks_exact(group).map(group_sum).collect() } else { Vec::new() };
        FloatActivations { k, group, x: xf, sums }
    }

    /// The view the kernels read.
    fn view(&self) -> FloatRows<'_> {
        FloatRows { k: self.k, group: self.group, x: &self.x, sums: &self.sums }
    }
}

/// `σ_g`: two partial sums by parity, then `σ_0 + σ_1`.
fn group_sum(x: &[f32]) -> f32 {
    let mut s = [0f32; 2];
    for (i, &v) in x.iter().enumerate() {
        s[i % 2] += v;
    }
    s[0] + s[1]
}

impl GroupGemm {
    /// The default settings.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Forces a kernel tier (one this CPU lacks makes every call an error).
    #[must_use]
    pub fn kernel(mut self, kernel: KernelChoice) -> Self {
        self.kernel = kernel;
        self
    }

    /// Uses at most `threads` threads (they split the output channels, and the int8 mode's
    /// activation rows; the result does not depend on it).
    #[must_use]
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads.max(1));
        self
    }

    /// Sets the int8 mode's activation blocks for two-level weights (default
    /// [`ActivationBlocks::SuperBlock`]).
    #[must_use]
    pub fn activation_blocks(mut self, blocks: ActivationBlocks) -> Self {
        self.blocks = blocks;
        self
    }

    /// The name of the kernel tier these settings run.
    ///
    /// # Errors
    /// [`QuantError::KernelUnavailable`] / [`QuantError::UnknownKernel`] as for
    /// [`crate::Gemm::tier`].
    pub fn kernel_name(&self) -> Result<&'static str, QuantError> {
        self.kernel.resolve().map(Tier::name)
    }

    /// `y = x · Wᵀ + bias` with the activations quantized to `i8` per block on the fly (see
    /// the module docs for the exact arithmetic and its error bound). `x` is `M x K` (`f32`,
    /// `f16` or `bf16`, converted exactly to `f32`), `y` is `M x N`, `bias` has `N` values.
    ///
    /// # Errors
    /// [`QuantError::InnerDimensionMismatch`] when `x` has not `K` columns;
    /// [`QuantError::LengthMismatch`] for `y` not `M x N` or a bias not `N` long;
    /// [`QuantError::NonFiniteInMatrix`] naming the first NaN or infinite activation (nothing
    /// is written then); [`QuantError::KernelUnavailable`] for a tier this CPU lacks.
    pub fn int8_activations<F: QuantFloat>(
        &self,
        x: MatRef<'_, F>,
        w: &GroupWeights,
        bias: Option<&[f32]>,
        y: MatMut<'_, f32>,
    ) -> Result<(), QuantError> {
        check_operands(&x, w, bias, &y)?;
        let tier = self.kernel.resolve()?;
        w.check_layout(tier)?;
        let acts = Activations::quantize(&x, w, self.blocks, tier, self.threads);
        drive(self.threads, tier, w, &acts, bias, y.into_block());
        Ok(())
    }

    /// `y = x · Wᵀ + bias` with `x` kept in `f32` and the weights dequantized in registers,
    /// multiplied with fused multiply-adds (see the module docs for the exact arithmetic and
    /// its error bound). Shapes as [`GroupGemm::int8_activations`].
    ///
    /// # Errors
    /// As [`GroupGemm::int8_activations`].
    pub fn float_activations<F: QuantFloat>(
        &self,
        x: MatRef<'_, F>,
        w: &GroupWeights,
        bias: Option<&[f32]>,
        y: MatMut<'_, f32>,
    ) -> Result<(), QuantError> {
        check_operands(&x, w, bias, &y)?;
        let tier = self.kernel.resolve()?;
        w.check_layout(tier)?;
        let acts = FloatActivations::new(&x, w.group_size(), w.codes_kind().has_min());
        drive(self.threads, tier, w, &acts, bias, y.into_block());
        Ok(())
    }
}

/// The shape, bias and finiteness checks both modes make before writing anything.
fn check_operands<F: QuantFloat>(
    x: &MatRef<'_, F>,
    w: &GroupWeights,
    bias: Option<&[f32]>,
    y: &MatMut<'_, f32>,
) -> Result<(), QuantError> {
    let (m, k, n) = (x.rows(), w.k(), w.n());
    if x.cols() != k {
        return Err(QuantError::InnerDimensionMismatch { a_rows: m, a_cols: x.cols(), b_rows: k, b_cols: n });
    }
    QuantError::check_length("y rows", m, y.rows())?;
    QuantError::check_length("y columns", n, y.cols())?;
    if let Some(b) = bias {
        QuantError::check_length("bias (one per output channel)", n, b.len())?;
    }
    for r in 0..m {
        if let Some(c) = x.row(r).iter().position(|v| !v.is_finite()) {
            return Err(QuantError::NonFiniteInMatrix { row: r, col: c, value: x.row(r)[c].to_f64_exact() });
        }
    }
    Ok(())
}

/// Runs `mode` on every output channel: split into whole panels between at most `threads`
/// threads (at least four panels each), or all here.
fn drive<Mo: Mode>(
    threads: Option<usize>,
    tier: Tier,
    w: &GroupWeights,
    mode: &Mo,
    bias: Option<&[f32]>,
    y: Block<'_, f32>,
) {
    let threads = crate::threads::thread_count(threads, w.n().div_ceil(PANEL * 4));
    // Whole panels of the layout per thread (a 16-channel panel is never split).
    #[cfg(feature = "parallel")]
    if threads > 1 {
        let blocks = crate::threads::split(y, false, w.width(), threads);
        rayon::scope(|s| {
            for block in blocks {
                s.spawn(move |_| channels(tier, w, mode, bias, block));
            }
        });
        return;
    }
    let _ = threads;
    channels(tier, w, mode, bias, y);
}

/// Output channels per pass over the rows: their codes (32 channels x 4096 inputs x 4 bits =
/// 64 KiB) stay in L2 while every row of `x` uses them.
const CHUNK: usize = 4 * PANEL;

/// Rows from which the float mode converts each panel's weights once into a scratch buffer
/// instead of once per block of rows.
const SCRATCH_ROWS: usize = 4;

/// What the driver needs of a compute mode: its kernel for a few panels and rows.
pub(crate) trait Mode: Sync {
    /// Rows per kernel call at most on `tier` (with a scratch buffer of converted weights or
    /// without).
    fn widest(&self, tier: Tier, scratch: bool) -> usize;
    /// Whether the kernel takes two lane groups at once (each broadcast activation then serves
    /// both; for the zmm kernels, the two halves of a 16-channel panel).
    fn pairs(&self, tier: Tier, w: &GroupWeights) -> bool;
    /// Whether this mode converts the weights into a scratch buffer for `rows` rows.
    fn uses_scratch(&self, tier: Tier, rows: usize) -> bool;
    /// Panels `p .. p + count` converted into `scratch`; `false` when this tier does not.
    fn convert(&self, tier: Tier, w: &GroupWeights, p: usize, count: usize, scratch: &mut [f32]) -> bool;
    /// Panels `p .. p + P` for `rows`, before the bias (`scratch`: exactly these panels'
    /// converted weights).
    fn panels<const R: usize, const P: usize>(
        &self,
        tier: Tier,
        w: &GroupWeights,
        rows: [usize; R],
        p: usize,
        scratch: Option<&[f32]>,
    ) -> [[[f32; PANEL]; P]; R];
}

impl Mode for Activations {
    fn widest(&self, tier: Tier, _: bool) -> usize {
        // The zmm kernel keeps three registers a row (two integer chains, one sum): eight rows
        // fit its 32 registers and share each step's codes; the ymm kernels take four.
        if crate::arch::decode::width_for(tier) == WIDE {
            8
        } else {
            4
        }
    }

    fn pairs(&self, tier: Tier, w: &GroupWeights) -> bool {
        crate::arch::decode::width_for(tier) == WIDE && w.width() == WIDE
    }

    fn uses_scratch(&self, _: Tier, _: usize) -> bool {
        false
    }

    fn convert(&self, _: Tier, _: &GroupWeights, _: usize, _: usize, _: &mut [f32]) -> bool {
        false
    }

    fn panels<const R: usize, const P: usize>(
        &self,
        tier: Tier,
        w: &GroupWeights,
        rows: [usize; R],
        p: usize,
        _: Option<&[f32]>,
    ) -> [[[f32; PANEL]; P]; R] {
        let (wv, a) = (w.view(), self.view());
        assert!(rows.iter().all(|&r| (r + 1) * a.k <= a.q.len()), "rows of the activations");
        assert!(rows.iter().enumerate().all(|(i, &r)| r == rows[0] + i), "consecutive rows");
        assert!((p + P) * PANEL <= w.n().next_multiple_of(w.width()), "lane groups {p}..{} of {}", p + P, w.n());
        dispatch!(tier, K => {
            // Two lane groups starting on an even one: the halves of a 16-channel panel.
            if P == 2 && p.is_multiple_of(2) {
                // SAFETY: the tier was resolved by `KernelChoice::resolve`, which checked that
                // this CPU has its features, and `check_layout` that it takes `w`'s layout; the
                // rows and lane groups were checked above.
                if let Some(lanes) = unsafe { K::wide_i8(&wv, &a, rows, p / 2) } {
                    let mut out = [[[0f32; PANEL]; P]; R];
                    for (o, l) in out.iter_mut().zip(lanes) {
                        o.copy_from_slice(&l[..P]);
                    }
                    return out;
                }
            }
            // SAFETY: as above.
            each_panel(p, |p| unsafe { K::panel_i8(&wv, &a, rows, p) })
        })
    }
}

impl Mode for FloatActivations {
    fn widest(&self, _: Tier, scratch: bool) -> usize {
        if scratch {
            3
        } else {
            2
        }
    }

    fn pairs(&self, tier: Tier, _: &GroupWeights) -> bool {
        dispatch!(tier, K => K::FLOAT_SIMD)
    }

    fn uses_scratch(&self, tier: Tier, rows: usize) -> bool {
        rows >= SCRATCH_ROWS && dispatch!(tier, K => K::FLOAT_SIMD)
    }

    fn convert(&self, tier: Tier, w: &GroupWeights, p: usize, count: usize, scratch: &mut [f32]) -> bool {
        assert!(
            (p + count) * PANEL <= w.n().next_multiple_of(w.width()),
            "lane groups {p}..{} of {}",
            p + count,
            w.n()
        );
        assert!(scratch.len() >= w.k() * PANEL * count, "scratch of {} for {} inputs", scratch.len(), w.k());
        // SAFETY: the tier was resolved by `KernelChoice::resolve` (the CPU has its features);
        // the lane groups and the scratch were checked above.
        dispatch!(tier, K => unsafe { K::dequantize(&w.view(), p, count, scratch) })
    }

    fn panels<const R: usize, const P: usize>(
        &self,
        tier: Tier,
        w: &GroupWeights,
        rows: [usize; R],
        p: usize,
        scratch: Option<&[f32]>,
    ) -> [[[f32; PANEL]; P]; R] {
        let (wv, a) = (w.view(), self.view());
        assert!((p + P) * PANEL <= w.n().next_multiple_of(w.width()), "lane groups {p}..{} of {}", p + P, w.n());
        assert!(rows.iter().all(|&r| a.row(r).len() == w.k()), "activation rows of K values");
        if let Some(v) = scratch {
            assert!(v.len() >= w.k() * PANEL * P, "scratch of {} for {} inputs", v.len(), w.k());
        }
        // SAFETY: the tier was resolved by `KernelChoice::resolve` (the CPU has its features)
        // and `check_layout` checked the layout; the lane groups, rows and scratch were checked
        // above.
        dispatch!(tier, K => unsafe { K::panels_f32::<R, P>(&wv, &a, rows, p, scratch) })
    }
}

/// Panels `p .. p + P` for `R` rows from a kernel of one panel at a time.
fn each_panel<const R: usize, const P: usize>(
    p: usize,
    panel: impl Fn(usize) -> [[f32; PANEL]; R],
) -> [[[f32; PANEL]; P]; R] {
    let mut out = [[[0f32; PANEL]; P]; R];
    for q in 0..P {
        for (o, l) in out.iter_mut().zip(panel(p + q)) {
            o[q] = l;
        }
    }
    out
}

/// One thread's block of output channels, for every row. Few rows: a chunk of channels at a
/// time (their codes stay in L2 while every row reads them); with a scratch buffer: one or two
/// panels at a time, their weights converted once. Rows go to the kernel up to
/// [`Mode::widest`] at a time, so each load (and conversion) of the codes serves them all.
fn channels<Mo: Mode>(tier: Tier, w: &GroupWeights, mode: &Mo, bias: Option<&[f32]>, mut y: Block<'_, f32>) {
    let (c0, n) = (y.col0(), y.cols());
    let (first, end) = (y.row0(), y.row0() + y.rows());
    let pairs = mode.pairs(tier, w);
    let mut scratch = Vec::new();
    if mode.uses_scratch(tier, y.rows()) {
        scratch = alloc::vec![0f32; w.k() * PANEL * if pairs { 2 } else { 1 }];
    }
    let step = match (scratch.is_empty(), pairs) {
        (true, _) => CHUNK,
        (false, true) => 2 * PANEL,
        (false, false) => PANEL,
    };
    let mut at = 0;
    while at < n {
        let len = step.min(n - at);
        let count = len.div_ceil(PANEL);
        let converted = !scratch.is_empty() && mode.convert(tier, w, (c0 + at) / PANEL, count, &mut scratch);
        let scratch = converted.then_some(&scratch[..]);
        let widest = mode.widest(tier, converted);
        let mut r = first;
        while r < end {
            let left = end - r;
            let c = c0 + at;
            if widest >= 8 && left >= 8 {
                let r8: [usize; 8] = core::array::from_fn(|i| r + i);
                rows(tier, w, mode, bias, &mut y, r8, c, len, scratch);
                r += 8;
            } else if widest >= 4 && left >= 4 {
                rows(tier, w, mode, bias, &mut y, [r, r + 1, r + 2, r + 3], c, len, scratch);
                r += 4;
            } else if widest >= 3 && left >= 3 {
                rows(tier, w, mode, bias, &mut y, [r, r + 1, r + 2], c, len, scratch);
                r += 3;
            } else if left >= 2 {
                rows(tier, w, mode, bias, &mut y, [r, r + 1], c, len, scratch);
                r += 2;
            } else {
                rows(tier, w, mode, bias, &mut y, [r], c, len, scratch);
                r += 1;
            }
        }
        at += len;
    }
}

/// Channels `c .. c + len` (`c` a multiple of the panel width, in `y`'s block) of `rows`, two
/// panels at a time where the mode pairs them, plus the bias (`y = acc + bias`, the last step
/// of both modes). A `scratch` holds exactly these channels' converted weights.
#[allow(clippy::too_many_arguments)]
fn rows<Mo: Mode, const R: usize>(
    tier: Tier,
    w: &GroupWeights,
    mode: &Mo,
    bias: Option<&[f32]>,
    y: &mut Block<'_, f32>,
    rows: [usize; R],
    c: usize,
    len: usize,
    scratch: Option<&[f32]>,
) {
    let (c0, end) = (y.col0(), c + len);
    let pairs = mode.pairs(tier, w);
    let mut at = c;
    while at < end {
        let lanes2;
        let lanes1;
        let lanes: &[[[f32; PANEL]; 2]] = if pairs && end - at > PANEL {
            lanes2 = mode.panels::<R, 2>(tier, w, rows, at / PANEL, scratch);
            &lanes2
        } else {
            lanes1 = mode.panels::<R, 1>(tier, w, rows, at / PANEL, scratch).map(|[l]| [l, [0.0; PANEL]]);
            &lanes1
        };
        let width = if pairs && end - at > PANEL { 2 * PANEL } else { PANEL };
        let cnt = width.min(end - at);
        for (&r, v) in rows.iter().zip(lanes) {
            let out = y.row_part(r, at - c0, cnt);
            for (l, (o, &v)) in out.iter_mut().zip(v.as_flattened()).enumerate() {
                *o = match bias {
                    Some(b) => v + b[at + l],
                    None => v,
                };
            }
        }
        at += width;
    }
}
