//! Named conventions: the exact arithmetic of a framework, so that codes computed here are the
//! codes that framework computes, bit for bit.
//!
//! The rest of this crate follows [`Convention::Onnx`]. The others change how the code of an
//! `f32` value is computed, and [`Convention::PyTorch`] also how the parameters are:
//!
//! | convention | parameters from data | code of `x` |
//! |---|---|---|
//! | [`Onnx`](Convention::Onnx) (default) | this crate's ([`params`](crate::params)) | `clamp(round_ties_even(x / scale) + zp)`, the division exact (`f64`) |
//! | [`OnnxF32`](Convention::OnnxF32) | this crate's | `clamp(round_ties_even(f32(x / scale)) + zp)`, the division rounded to `f32` first |
//! | [`PyTorch`](Convention::PyTorch) | `torch.ao.quantization` observers (below) | `clamp(f32(zp + nearbyint(f32(x · f32(1 / scale)))))` |
//! | [`Ggml`](Convention::Ggml) | symmetric only: `d = amax / qmax` in `f32` | `clamp(roundf(f32(x · f32(1 / d))))`, ties away from zero |
//!
//! * `Onnx` is ONNX `QuantizeLinear` with `precision = DOUBLE` (opset 28): the quotient of two
//!   `f32` values rounded once in `f64`, which never creates or hides a tie. `OnnxF32` is
//!   `QuantizeLinear` with its default precision for `f32` input, as the ONNX reference evaluator
//!   and ONNX Runtime's CPU kernel compute it: the quotient is rounded to `f32`, which can land
//!   exactly on a half-integer (or cross one) when the exact quotient is within half an `f32`
//!   ulp of it, and then rounds differently. Both are golden-tested against `onnx`'s reference
//!   evaluator (per tensor, per row, blocked along either axis, `int8`, `uint8` and `int4`), and
//!   `OnnxF32` also against ONNX Runtime's own `QuantizeLinear` codes.
//! * `PyTorch` follows `torch/ao/quantization/observer.py` (`_calculate_qparams`) and aten's
//!   `quantize_val`, all in `f32`: with `min_neg = min(min x, 0)`, `max_pos = max(max x, 0)`,
//!   symmetric `scale = max(-min_neg, max_pos) / ((qmax - qmin) / 2)` (so `max|x| / 127.5` for
//!   8 bits, not `/ 127`), zero point 0; asymmetric `scale = (max_pos - min_neg) / (qmax - qmin)`
//!   and `zero_point = clamp(qmin - round_ties_even(min_neg / scale), qmin, qmax)`; both floored
//!   at `eps = 2^-23` (so an all-zero tensor gets scale `2^-23`, not 1). The code multiplies by
//!   the reciprocal `1 / scale` rounded to `f32`, rounds ties to even (`nearbyint`), adds the
//!   zero point in `f32` and clamps. PyTorch cannot be installed here, so its tests compare with
//!   fixtures written from these published formulas (`xtask/fixtures/conventions.py`).
//! * `Ggml` is llama.cpp's `Q8_0` arithmetic generalized to any symmetric width and
//!   granularity: with 8 bits and groups of 32 along the rows its codes are exactly the `qs`
//!   bytes of [`BlockFormat::Q8_0`](crate::BlockFormat::Q8_0) (tested on the `gguf` fixtures).
//!   The block formats themselves, with their `f16` scales and byte layout, are
//!   [`BlockFormat`](crate::BlockFormat); llama.cpp's asymmetric `Q4_1` (a float minimum, not an
//!   integer zero point) exists only there.
//!
//! Dequantization is the same in all three: `(q - zp) · scale`, rounded once to `f32`.
//!
//! These entry points take `f32` (the frameworks' type): the conventions differ precisely in
//! how `f32` arithmetic rounds.

use alloc::vec::Vec;

use quant_traits::cast::{f64_to_i64_saturating, i64_to_f64, round_half_away, round_ties_even};
use quant_traits::{MatrixShape, QuantError, Storage};

use crate::granularity::{matrix_params, quantize_matrix, quantize_matrix_into, Granularity, QuantizedMatrix};
use crate::params::QuantParams;
use crate::quantize::quantize_value;
use crate::range::check_finite_matrix;
use crate::scheme::{QuantSpec, Scheme};

/// Which framework's arithmetic to reproduce (see the module docs).
///
/// `Ggml` is llama.cpp's `Q8_0` arithmetic for any symmetric width, granularity and storage
/// (`Q8_0` itself is 8 bits per group of 32, with the scale stored as `f16`:
/// [`BlockFormat::Q8_0`](crate::BlockFormat::Q8_0)); its asymmetric formats carry a float
/// minimum instead of an integer zero point, so they exist only as block formats.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Convention {
    /// ONNX `QuantizeLinear` with the division exact (`precision = DOUBLE`): this crate's
    /// arithmetic everywhere else.
    #[default]
    Onnx,
    /// ONNX `QuantizeLinear` with its default precision for `f32` input: the quotient rounded to
    /// `f32` first (the ONNX reference evaluator, ONNX Runtime's CPU kernel).
    OnnxF32,
    /// PyTorch's observers and `quantize_per_tensor` / `quantize_per_channel`.
    PyTorch,
    /// llama.cpp's `Q8_0` arithmetic, symmetric only: `d = amax / qmax` in `f32`,
    /// `q = roundf(x · (1/d))` (ties away from zero).
    Ggml,
}

impl Convention {
    /// The convention's name: `"onnx"`, `"onnx-f32"`, `"pytorch"` or `"ggml"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Convention::Onnx => "onnx",
            Convention::OnnxF32 => "onnx-f32",
            Convention::PyTorch => "pytorch",
            Convention::Ggml => "ggml",
        }
    }

    /// The code of one finite value under this convention, clamped to `lo..=hi`.
    #[must_use]
    pub fn quantize_value(self, x: f32, scale: f32, zero_point: i64, lo: i64, hi: i64) -> i64 {
        match self {
            Convention::Onnx => quantize_value(f64::from(x), f64::from(scale), zero_point, lo, hi),
            Convention::OnnxF32 => {
                let q = f64_to_i64_saturating(round_ties_even(f64::from(x / scale)));
                q.saturating_add(zero_point).clamp(lo, hi)
            }
            Convention::Ggml => {
                let q = f64_to_i64_saturating(round_half_away(f64::from(x * (1.0 / scale))));
                q.saturating_add(zero_point).clamp(lo, hi)
            }
            Convention::PyTorch => {
                let inv = 1.0 / scale;
                let r = round_ties_even(f64::from(x * inv));
                // `zero_point + Round(...)` is a float sum in aten (int64 + float -> float).
                let sum = f32_nearest(i64_to_f64(zero_point)) + f32_nearest(r);
                f64_to_i64_saturating(f64::from(sum)).clamp(lo, hi)
            }
        }
    }

    /// Parameters for each channel or group of a row-major `f32` matrix, from the data, as the
    /// convention computes them (`Onnx` and `OnnxF32` share this crate's).
    ///
    /// # Errors
    /// As [`matrix_params`]; [`QuantError::InvalidZeroPoint`] cannot occur (PyTorch's zero
    /// point is clamped into range).
    pub fn matrix_params(
        self,
        x: &[f32],
        shape: MatrixShape,
        spec: QuantSpec,
        granularity: Granularity,
    ) -> Result<Vec<QuantParams<f32>>, QuantError> {
        match self {
            Convention::Onnx | Convention::OnnxF32 => matrix_params(x, shape, spec, granularity),
            Convention::PyTorch | Convention::Ggml => {
                if self == Convention::Ggml && spec.scheme() == Scheme::Asymmetric {
                    return Err(QuantError::UnsupportedByConvention {
                        convention: "ggml",
                        what: "asymmetric scheme with an integer zero point (see BlockFormat::Q4_1)",
                    });
                }
                granularity.check()?;
                shape.check_len("matrix", x.len())?;
                check_finite_matrix(x, shape)?;
                let blocks = granularity.blocks(shape, x).into_iter();
                if self == Convention::Ggml {
                    blocks.map(|values| ggml_params(spec, &values)).collect()
                } else {
                    blocks.map(|values| torch_params(spec, &values)).collect()
                }
            }
        }
    }

    /// Quantizes a row-major `f32` matrix with explicit parameters (one set per channel or
    /// group) into `out`, under this convention.
    ///
    /// # Errors
    /// As [`quantize_matrix_into`].
    pub fn quantize_matrix_into<Q: Storage>(
        self,
        x: &[f32],
        shape: MatrixShape,
        spec: QuantSpec,
        granularity: Granularity,
        params: &[QuantParams<f32>],
        out: &mut [Q],
    ) -> Result<(), QuantError> {
        match self {
            Convention::Onnx => quantize_matrix_into(x, shape, spec, granularity, params, out),
            _ => crate::granularity::quantize_matrix_with(x, shape, spec, granularity, params, out, |v, p| {
                self.quantize_value(v, p.scale(), p.zero_point(), spec.code_min(), spec.code_max())
            }),
        }
    }

    /// Quantizes a row-major `f32` matrix, parameters from the data, under this convention.
    ///
    /// # Errors
    /// As [`Convention::matrix_params`] and [`Convention::quantize_matrix_into`].
    ///
    /// # Example
    /// ```
    /// use quant_core::{Convention, Granularity, MatrixShape, QuantSpec};
    ///
    /// let x = [1.0f32, -0.5, 0.25, 2.0];
    /// let shape = MatrixShape::new(1, 4);
    /// let spec = QuantSpec::symmetric(8)?;
    /// let onnx = Convention::Onnx.quantize_matrix::<i8>(&x, shape, spec, Granularity::PerTensor)?;
    /// let torch = Convention::PyTorch.quantize_matrix::<i8>(&x, shape, spec, Granularity::PerTensor)?;
    /// assert_eq!(onnx.params()[0].scale(), 2.0 / 127.0);
    /// assert_eq!(torch.params()[0].scale(), 2.0 / 127.5); // max|x| / ((qmax - qmin) / 2)
    /// assert_eq!(onnx.codes(), [64, -32, 16, 127]); // 63.5 -> 64, -31.75 -> -32, 15.875 -> 16
    /// assert_eq!(torch.codes(), [64, -32, 16, 127]); // 63.75, -31.875, 15.94, 127.5 -> 128 -> 127
    /// # Ok::<(), quant_core::QuantError>(())
    /// ```
    pub fn quantize_matrix<Q: Storage>(
        self,
        x: &[f32],
        shape: MatrixShape,
        spec: QuantSpec,
        granularity: Granularity,
    ) -> Result<QuantizedMatrix<f32, Q>, QuantError> {
        if self == Convention::Onnx {
            return quantize_matrix(x, shape, spec, granularity);
        }
        spec.check_storage::<Q>()?;
        let params = self.matrix_params(x, shape, spec, granularity)?;
        let mut codes = alloc::vec![Q::default(); Q::units_for(x.len())];
        self.quantize_matrix_into(x, shape, spec, granularity, &params, &mut codes)?;
        Ok(QuantizedMatrix::from_parts(codes, shape, spec, granularity, params))
    }
}

/// `v` rounded to `f32` (to nearest, ties to even).
fn f32_nearest(v: f64) -> f32 {
    <f32 as quant_traits::QuantFloat>::from_f64_nearest(v)
}

/// llama.cpp's `Q8_0` scale for one channel or group: `amax / qmax` in `f32`; an all-zero
/// group (llama.cpp's `d = 0`, every code 0) gets scale 1, which gives the same codes.
fn ggml_params(spec: QuantSpec, values: &[f32]) -> Result<QuantParams<f32>, QuantError> {
    let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / f32_nearest(i64_to_f64(spec.code_max()));
    QuantParams::new(spec, if d > 0.0 { d } else { 1.0 }, 0)
}

/// PyTorch's `_calculate_qparams` for one channel or group, in `f32`.
fn torch_params(spec: QuantSpec, values: &[f32]) -> Result<QuantParams<f32>, QuantError> {
    const EPS: f32 = f32::EPSILON; // torch.finfo(torch.float32).eps = 2^-23
    let (qmin, qmax) = (spec.code_min(), spec.code_max());
    let mn = values.iter().fold(f32::INFINITY, |m, &v| m.min(v));
    let mx = values.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let (min_neg, max_pos) = (mn.min(0.0), mx.max(0.0)); // an empty channel: both 0
    match spec.scheme() {
        Scheme::Symmetric => {
            let amax = (-min_neg).max(max_pos);
            let half_range = f32_nearest(i64_to_f64(qmax - qmin) / 2.0);
            let scale = (amax / half_range).max(EPS);
            QuantParams::new(spec, scale, 0)
        }
        Scheme::Asymmetric => {
            let scale = ((max_pos - min_neg) / f32_nearest(i64_to_f64(qmax - qmin))).max(EPS);
            let zp = qmin - f64_to_i64_saturating(round_ties_even(f64::from(min_neg / scale)));
            QuantParams::new(spec, scale, zp.clamp(qmin, qmax))
        }
    }
}
