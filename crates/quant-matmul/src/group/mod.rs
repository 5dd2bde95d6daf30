//! Matrix multiply on weights quantized in groups along their inputs: `y = x · Wᵀ + bias`, the
//! decode-time product of a language model whose weights are 4 or 8 bits with one scale per
//! group of inputs (llama.cpp's `Q4_0`/`Q4_1`/`Q8_0`, ONNX Runtime's `MatMulNBits`, our own
//! per-group schemes).
//!
//! Today this module holds the weights ([`GroupWeights`], from our codes or from llama.cpp's
//! block bytes) and the int8-activation mode: its **reference** in plain Rust (the `portable`
//! tier), which defines the result bit for bit, and SIMD kernels for the x86-64 tiers
//! (`avx2`: `vpmaddubsw`; `avxvnni`, `avx512vnni`: `vpdpbusd`) that reproduce it exactly,
//! eight output channels at a time. The tier is chosen as for [`crate::Gemm`]
//! ([`GroupGemm::kernel`], `QUANT_KERNEL`); threads split the output channels. The result is
//! the same on every tier and for any thread count.
//!
//! # The int8-activation mode ([`GroupGemm::int8_activations`])
//! For each row of `x` and each group `g` of `G` inputs (what llama.cpp does with `Q8_0`
//! activations and ONNX Runtime with `accuracy_level = 4`, with ties to even):
//! 1. `amax = max |x_k|` over the group; `s_x = amax / 127` (an `f32` division); the codes are
//!    `q_k = clamp(round_ties_even(x_k / s_x), -127, 127)` (an `f32` division each), all zero
//!    when `amax = 0`.
//! 2. The integer dot product with the weight codes, exact in `i32`:
//!    `d_g = Σ q_k · (u_k - z)` (the zero point enters through `z · Σ q_k`, not by widening the
//!    weights), and for `Q4_1`'s minimum `σ_g = Σ q_k`.
//! 3. In `f32`, in this order, one rounding per operation and no fused multiply-add:
//!    `acc = 0; for g in groups: acc = acc + (s_x,g · s_w,g) · d_g`, plus, for `Q4_1`,
//!    `acc = acc + (s_x,g · m_g) · σ_g` right after; then `y = acc + bias`. `d_g` and `σ_g`
//!    are exact in `f32` (`|d_g| <= 127 · 128 · 256 < 2^24`).
//!
//! **Error bound.** Against the exact product with the dequantized weights
//! (`y* = Σ_k x_k · w_k + bias`, [`GroupWeights::value`]):
//! `|y - y*| <= Σ_g (s_x,g · (1/2 + 2^-17)) · Σ_{k in g} |w_k| + γ(2 · groups + 4) · T + u · |y|`
//! where `T = Σ_g |s_x,g · s_w,g · d_g| (+ |s_x,g · m_g · σ_g|) + |bias|`, `u = 2^-24` and
//! `γ(n) = n·u / (1 - n·u)`: the first term is the activations' rounding (half a step, the
//! `f32` division adding at most `127 · 2^-24` steps), the second the `f32` arithmetic of
//! step 3. The tests check it on random data and on data with outliers.

mod weights;
#[cfg(target_arch = "x86_64")]
mod x86_64;

use alloc::vec::Vec;

use quant_traits::cast::round_ties_even;
use quant_traits::{QuantError, QuantFloat};

use crate::kernels::{KernelChoice, Tier};
use crate::view::{Block, MatMut, MatRef};
use weights::PANEL;
pub use weights::{GroupCodes, GroupWeights};

/// Settings of the group-quantized multiply: which kernel tier and how many threads.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupGemm {
    kernel: KernelChoice,
    threads: Option<usize>,
}

/// Every row of `x` quantized to `i8` per group (step 1 of the module docs).
pub(crate) struct Activations {
    k: usize,
    group: usize,
    /// Codes in input order, row after row.
    pub(crate) q: Vec<i8>,
    /// Scale per group, row after row.
    pub(crate) scales: Vec<f32>,
    /// `Σ q` per group, row after row.
    pub(crate) sums: Vec<i32>,
}

impl Activations {
    fn quantize<F: QuantFloat>(x: &MatRef<'_, F>, group: usize) -> Self {
        let (m, k) = (x.rows(), x.cols());
        let groups = k / group;
        let mut a = Activations {
            k,
            group,
            q: alloc::vec![0; m * k],
            scales: alloc::vec![0.0; m * groups],
            sums: alloc::vec![0; m * groups],
        };
        let mut xf = alloc::vec![0f32; group];
        for r in 0..m {
            let row = x.row(r);
            for g in 0..groups {
                for (d, v) in xf.iter_mut().zip(&row[g * group..(g + 1) * group]) {
                    *d = f32::from_f64_nearest(v.to_f64_exact()); // exact for f32, f16, bf16
                }
                let q = &mut a.q[r * k + g * group..r * k + (g + 1) * group];
                a.scales[r * groups + g] = quantize_group(&xf, q);
                a.sums[r * groups + g] = q.iter().map(|&v| i32::from(v)).sum();
            }
        }
        a
    }

    fn groups(&self) -> usize {
        self.k / self.group
    }
}

/// One row's group of activations quantized to `i8`: the scale and the codes.
fn quantize_group(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 {
        q.fill(0);
        return 0.0;
    }
    let s = amax / 127.0;
    for (o, &v) in q.iter_mut().zip(x) {
        let r = round_ties_even(f64::from(v / s)).clamp(-127.0, 127.0);
        *o = r as i8;
    }
    s
}

/// The reference (portable) kernel: output channels `c0 .. c0 + out.len()` of row `r`
/// (steps 2 and 3 of the module docs).
pub(crate) fn reference_row(
    w: &GroupWeights,
    a: &Activations,
    r: usize,
    c0: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let (k, group, groups) = (a.k, a.group, a.groups());
    let q = &a.q[r * k..(r + 1) * k];
    let (sx, sums) = (&a.scales[r * groups..(r + 1) * groups], &a.sums[r * groups..(r + 1) * groups]);
    for (i, o) in out.iter_mut().enumerate() {
        let c = c0 + i;
        let mut acc = 0.0f32;
        for g in 0..groups {
            let (s_w, z, min) = w.params(c, g);
            let qg = &q[g * group..(g + 1) * group];
            let raw: i32 = qg.iter().enumerate().map(|(j, &v)| i32::from(v) * w.code(c, g * group + j)).sum();
            let d = raw - z * sums[g];
            acc += (sx[g] * s_w) * d as f32;
            if w.codes_kind() == GroupCodes::Min4 {
                acc += (sx[g] * min) * sums[g] as f32;
            }
        }
        *o = match bias {
            Some(b) => acc + b[c],
            None => acc,
        };
    }
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

    /// Uses at most `threads` threads (they split the output channels; the result does not
    /// depend on it).
    #[must_use]
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads.max(1));
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

    /// `y = x · Wᵀ + bias` with the activations quantized to `i8` per group on the fly (see
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
        let tier = self.kernel.resolve()?;
        let acts = Activations::quantize(&x, w.group_size());
        // At least four panels per thread.
        let threads = crate::threads::thread_count(self.threads, n.div_ceil(PANEL * 4));
        drive(tier, w, &acts, bias, y.into_block(), threads);
        Ok(())
    }
}

/// Splits the output channels into whole panels between `threads` threads, or runs them here.
fn drive(tier: Tier, w: &GroupWeights, a: &Activations, bias: Option<&[f32]>, y: Block<'_, f32>, threads: usize) {
    #[cfg(feature = "parallel")]
    if threads > 1 {
        let blocks = crate::threads::split(y, false, PANEL, threads);
        rayon::scope(|s| {
            for block in blocks {
                s.spawn(move |_| channels(tier, w, a, bias, block));
            }
        });
        return;
    }
    let _ = threads;
    channels(tier, w, a, bias, y);
}

/// Output channels per pass over the rows: their codes (32 channels x 4096 inputs x 4 bits =
/// 64 KiB) stay in L2 while every row of `x` uses them.
const CHUNK: usize = 4 * PANEL;

/// Every row of `y`'s block of output channels on one thread, a chunk of channels at a time.
fn channels(tier: Tier, w: &GroupWeights, a: &Activations, bias: Option<&[f32]>, mut y: Block<'_, f32>) {
    let (c0, n) = (y.col0(), y.cols());
    for start in (0..n).step_by(CHUNK) {
        let len = CHUNK.min(n - start);
        for r in y.row0()..y.row0() + y.rows() {
            let out = y.row_part(r, start, len);
            #[cfg(target_arch = "x86_64")]
            if x86_64::row(tier, w, a, r, c0 + start, bias, out) {
                continue;
            }
            let _ = tier;
            reference_row(w, a, r, c0 + start, bias, out);
        }
    }
}
