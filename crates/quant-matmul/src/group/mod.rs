//! Matrix multiply on weights quantized in groups along their inputs: `y = x · Wᵀ + bias`, the
//! decode-time product of a language model whose weights are 4 or 8 bits with one scale per
//! group of inputs (llama.cpp's `Q4_0`/`Q4_1`/`Q8_0`, ONNX Runtime's `MatMulNBits`, our own
//! per-group schemes).
//!
//! Today this module holds the weights ([`GroupWeights`], from our codes or from llama.cpp's
//! block bytes) and the **reference** computation of the int8-activation mode, in plain Rust:
//! the definition that faster kernels will be held to, bit for bit.
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

use alloc::vec::Vec;

use quant_traits::cast::round_ties_even;
use quant_traits::{QuantError, QuantFloat};

use crate::view::{MatMut, MatRef};
pub use weights::{GroupCodes, GroupWeights};

/// Settings of the group-quantized multiply (today: the portable reference kernel).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupGemm {}

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

impl GroupGemm {
    /// The default settings.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// `y = x · Wᵀ + bias` with the activations quantized to `i8` per group on the fly (see
    /// the module docs for the exact arithmetic and its error bound). `x` is `M x K` (`f32`,
    /// `f16` or `bf16`, converted exactly to `f32`), `y` is `M x N`, `bias` has `N` values.
    ///
    /// # Errors
    /// [`QuantError::InnerDimensionMismatch`] when `x` has not `K` columns;
    /// [`QuantError::LengthMismatch`] for `y` not `M x N` or a bias not `N` long;
    /// [`QuantError::NonFiniteInMatrix`] naming the first NaN or infinite activation (nothing
    /// is written then).
    pub fn int8_activations<F: QuantFloat>(
        &self,
        x: MatRef<'_, F>,
        w: &GroupWeights,
        bias: Option<&[f32]>,
        mut y: MatMut<'_, f32>,
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
        let (group, groups) = (w.group_size(), w.groups());
        let mut xf = alloc::vec![0f32; k];
        let mut q = alloc::vec![0i8; k];
        let mut sx: Vec<f32> = alloc::vec![0.0; groups];
        let mut sums: Vec<i32> = alloc::vec![0; groups];
        for r in 0..m {
            for (d, v) in xf.iter_mut().zip(x.row(r)) {
                *d = f32::from_f64_nearest(v.to_f64_exact()); // exact for f32, f16, bf16
            }
            for g in 0..groups {
                let span = g * group..(g + 1) * group;
                sx[g] = quantize_group(&xf[span.clone()], &mut q[span.clone()]);
                sums[g] = q[span].iter().map(|&v| i32::from(v)).sum();
            }
            let out = y.row_mut(r);
            for (c, o) in out.iter_mut().enumerate() {
                let mut acc = 0.0f32;
                for g in 0..groups {
                    let codes = w.group_codes(c, g);
                    let (s_w, z, min) = w.params(c, g);
                    let qg = &q[g * group..(g + 1) * group];
                    let raw: i32 = qg.iter().enumerate().map(|(j, &v)| i32::from(v) * w.code(codes, j)).sum();
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
        Ok(())
    }
}
