//! Named conventions: the exact arithmetic of a framework, so that codes computed here are the
//! codes that framework computes, bit for bit.
//!
//! The rest of this crate follows [`Convention::Exact`]. The others change how the code of a
//! value is computed, and how the parameters are computed from data:
//!
//! | convention | parameters from data | code of `x` |
//! |---|---|---|
//! | [`Exact`](Convention::Exact) (default) | this crate's ([`params`](crate::params)): in `f64`, the scale rounded once | `clamp(round_ties_even(x / scale) + zp)`, the division exact |
//! | [`Onnx`](Convention::Onnx) | `DynamicQuantizeLinear`'s, in `F` (below) | `clamp(round_ties_even(F(x / scale)) + zp)`, the division rounded to `F` first |
//! | [`PyTorch`](Convention::PyTorch) | `torch.ao.quantization` observers (below), in `f32` | `clamp(f32(zp + nearbyint(f32(x · f32(1 / scale)))))` |
//! | [`Ggml`](Convention::Ggml) | symmetric only: `d = amax / qmax` in `f32` | `clamp(roundf(f32(x · f32(1 / d))))`, ties away from zero |
//!
//! * `Exact` is ONNX `QuantizeLinear` with `precision = DOUBLE` (opset 25+): the quotient rounded
//!   once in `f64`, which never creates or hides a tie. Its parameters are this crate's
//!   (`max|x| / qmax`, `(hi - lo) / (2^b - 1)`, computed exactly and rounded once to `F`, with
//!   the scale stepped up an ulp when rounding would leave an end of the range more than half a
//!   step from its code).
//! * `Onnx` is ONNX's default arithmetic, as its reference evaluator and ONNX Runtime's CPU
//!   kernels compute it: the quotient `x / scale` in the input's float type `F` (`f32` for
//!   `f32` input, `f16` for `f16`), which can land exactly on a half-integer (or cross one)
//!   when the exact quotient is within half an ulp of it, and then rounds differently from
//!   `Exact`. Asymmetric parameters are `DynamicQuantizeLinear`'s, every operation rounded to
//!   `F`: `max = max(0, max x)`, `min = min(0, min x)`, `scale = F(max - min) / F(qmax - qmin)`
//!   (an all-zero tensor: `1 / F(qmax - qmin)`, as ONNX), `zero_point =
//!   round_ties_even(clamp(F(qmin) - F(min / scale), qmin, qmax))`. ONNX defines that operator
//!   for `f32` input and `uint8` codes; here it is the same formula for any `F`, width and
//!   code range (signed codes: `qmin = -2^(b-1)`, ONNX Runtime's `int8` formula). Symmetric
//!   parameters (no ONNX operator computes them) are `F(max|x| / qmax)` with zero point 0, as
//!   ONNX Runtime's quantization tool; an all-zero tensor gets scale 1. A scale that underflows
//!   to 0 in `F` is an error ([`QuantError::InvalidScale`]): ONNX would divide by it.
//!   Tested against all six `DynamicQuantizeLinear` node-test vectors of ONNX and against the
//!   reference evaluator's `QuantizeLinear` codes (per tensor, per row, blocked along either
//!   axis, `int8`, `uint8` and `int4`) and ONNX Runtime's own.
//! * `PyTorch` follows `torch/ao/quantization/observer.py` (`_calculate_qparams`) and aten's
//!   `quantize_val`, all in `f32`: with `min_neg = min(min x, 0)`, `max_pos = max(max x, 0)`,
//!   symmetric `scale = max(-min_neg, max_pos) / ((qmax - qmin) / 2)` (so `max|x| / 127.5` for
//!   8 bits, not `/ 127`), zero point 0; asymmetric `scale = (max_pos - min_neg) / (qmax - qmin)`
//!   and `zero_point = clamp(qmin - round_ties_even(min_neg / scale), qmin, qmax)`; both floored
//!   at `eps = 2^-23` (so an all-zero tensor gets scale `2^-23`, not 1). The code multiplies by
//!   the reciprocal `1 / scale` rounded to `f32`, rounds ties to even (`nearbyint`), adds the
//!   zero point in `f32` and clamps. PyTorch cannot be installed here, so its tests compare with
//!   fixtures written from these published formulas (`crates/quant-core/tests/fixtures/conventions.py`).
//! * `Ggml` is llama.cpp's `Q8_0` arithmetic generalized to any symmetric width and
//!   granularity: with 8 bits and groups of 32 along the rows its codes are exactly the `qs`
//!   bytes of [`BlockFormat::Q8_0`](crate::BlockFormat::Q8_0) (tested on the `gguf` fixtures).
//!   The block formats themselves, with their `f16` scales and byte layout, are
//!   [`BlockFormat`](crate::BlockFormat); llama.cpp's asymmetric `Q4_1` (a float minimum, not an
//!   integer zero point) exists only there.
//! * `PyTorch` and `Ggml` compute in `f32` whatever the element type `F`: `f16` and `bf16`
//!   values and scales convert to `f32` exactly, `f64` ones round to the nearest `f32`; the
//!   scale they compute is then rounded to `F`.
//!
//! Dequantization is the same in all four: `(q - zp) · scale`, rounded once to `F` (ONNX's
//! `f32` product, rounded to `f16` for an `f16` scale, is the same value: `f32` carries more
//! than twice `f16`'s precision, so the double rounding is innocuous).

use alloc::vec::Vec;

use quant_traits::cast::{f64_to_i64_saturating, i64_to_f64, round_half_away, round_ties_even};
use quant_traits::{MatrixShape, QuantError, QuantFloat, Storage};

use crate::granularity::{matrix_params, quantize_matrix, quantize_matrix_into, Granularity, QuantizedMatrix};
use crate::params::QuantParams;
use crate::quantize::{quantize_value, Quantized};
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
    /// Exact arithmetic: the division in `f64` (ONNX `QuantizeLinear` with
    /// `precision = DOUBLE`), parameters computed exactly and rounded once. This crate's
    /// arithmetic everywhere else.
    #[default]
    Exact,
    /// ONNX's default arithmetic (reference evaluator, ONNX Runtime's CPU kernels): the
    /// division in the input's float type, `DynamicQuantizeLinear`'s parameters.
    Onnx,
    /// PyTorch's observers and `quantize_per_tensor` / `quantize_per_channel`, in `f32`.
    PyTorch,
    /// llama.cpp's `Q8_0` arithmetic, symmetric only: `d = amax / qmax` in `f32`,
    /// `q = roundf(x · (1/d))` (ties away from zero).
    Ggml,
}

impl Convention {
    /// Every convention, in declaration order.
    pub const ALL: [Convention; 4] = [Convention::Exact, Convention::Onnx, Convention::PyTorch, Convention::Ggml];

    /// The convention's name: `"exact"`, `"onnx"`, `"pytorch"` or `"ggml"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Convention::Exact => "exact",
            Convention::Onnx => "onnx",
            Convention::PyTorch => "pytorch",
            Convention::Ggml => "ggml",
        }
    }

    /// The convention named `name` (as [`Convention::name`] spells it).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Convention> {
        Convention::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The code of one finite value under this convention, clamped to `lo..=hi`.
    ///
    /// ```
    /// use quant_core::Convention;
    ///
    /// // ONNX's DynamicQuantizeLinear vector: 0.5 / (5/255 in f32) is 25.4999991 exactly, but
    /// // exactly 25.5 once rounded to f32, which rounds to 26 (even) rather than 25.
    /// let s = 5.0f32 / 255.0;
    /// assert_eq!(Convention::Exact.quantize_value(0.5f32, s, 153, 0, 255), 178);
    /// assert_eq!(Convention::Onnx.quantize_value(0.5f32, s, 153, 0, 255), 179);
    /// ```
    #[must_use]
    pub fn quantize_value<F: QuantFloat>(self, x: F, scale: F, zero_point: i64, lo: i64, hi: i64) -> i64 {
        match self {
            Convention::Exact => quantize_value(x.to_f64_exact(), scale.to_f64_exact(), zero_point, lo, hi),
            Convention::Onnx => {
                let quotient = F::from_f64_nearest(x.to_f64_exact() / scale.to_f64_exact()).to_f64_exact();
                f64_to_i64_saturating(round_ties_even(quotient)).saturating_add(zero_point).clamp(lo, hi)
            }
            Convention::Ggml => {
                let (x, scale) = (to_f32(x), to_f32(scale));
                let q = f64_to_i64_saturating(round_half_away(f64::from(x * (1.0 / scale))));
                q.saturating_add(zero_point).clamp(lo, hi)
            }
            Convention::PyTorch => {
                let (x, scale) = (to_f32(x), to_f32(scale));
                let inv = 1.0 / scale;
                let r = round_ties_even(f64::from(x * inv));
                // `zero_point + Round(...)` is a float sum in aten (int64 + float -> float).
                let sum = f32_nearest(i64_to_f64(zero_point)) + f32_nearest(r);
                f64_to_i64_saturating(f64::from(sum)).clamp(lo, hi)
            }
        }
    }

    /// Parameters for a whole tensor from its values, as the convention computes them
    /// (`DynamicQuantizeLinear` for `Onnx` with an asymmetric spec).
    ///
    /// # Errors
    /// [`QuantError::NonFinite`] naming the first NaN or infinite element; as
    /// [`Convention::matrix_params`] otherwise.
    ///
    /// # Example
    /// ```
    /// use quant_core::{Convention, QuantSpec};
    ///
    /// // ONNX's DynamicQuantizeLinear test vector.
    /// let x = [0.0f32, 2.0, -3.0, -2.5, 1.34, 0.5];
    /// let p = Convention::Onnx.params(&x, QuantSpec::asymmetric(8)?)?;
    /// assert_eq!((p.scale(), p.zero_point()), (0.019607844, 153));
    /// let q = Convention::Onnx.quantize::<f32, u8>(&x, QuantSpec::asymmetric(8)?)?;
    /// assert_eq!(q.codes(), [153, 255, 0, 26, 221, 179]);
    /// # Ok::<(), quant_core::QuantError>(())
    /// ```
    pub fn params<F: QuantFloat>(self, x: &[F], spec: QuantSpec) -> Result<QuantParams<F>, QuantError> {
        // One row: the matrix's finiteness check names the column, which is the flat index.
        let mut all =
            self.matrix_params(x, MatrixShape::new(1, x.len()), spec, Granularity::PerTensor).map_err(|e| match e {
                QuantError::NonFiniteInMatrix { col, value, .. } => QuantError::NonFinite { index: col, value },
                other => other,
            })?;
        Ok(all.pop().unwrap_or_else(QuantParams::identity))
    }

    /// Parameters for each channel or group of a row-major matrix, from the data, as the
    /// convention computes them (see the module docs).
    ///
    /// # Errors
    /// As [`matrix_params`]; [`QuantError::UnsupportedByConvention`] for `Ggml` with an
    /// asymmetric spec; [`QuantError::InvalidScale`] for an `Onnx` scale that underflows to 0
    /// in `F`; [`QuantError::ScaleOverflow`] for an `Onnx` range wider than `F`.
    pub fn matrix_params<F: QuantFloat>(
        self,
        x: &[F],
        shape: MatrixShape,
        spec: QuantSpec,
        granularity: Granularity,
    ) -> Result<Vec<QuantParams<F>>, QuantError> {
        if self == Convention::Exact {
            return matrix_params(x, shape, spec, granularity);
        }
        if self == Convention::Ggml && spec.scheme() == Scheme::Asymmetric {
            return Err(QuantError::UnsupportedByConvention {
                convention: "ggml",
                what: "asymmetric scheme with an integer zero point (see BlockFormat::Q4_1)",
            });
        }
        granularity.check()?;
        shape.check_len("matrix", x.len())?;
        check_finite_matrix(x, shape)?;
        granularity
            .blocks(shape, x)
            .into_iter()
            .map(|values| match self {
                Convention::Onnx => onnx_params(spec, &values),
                Convention::Ggml => in_f32(spec, &values, ggml_params),
                _ => in_f32(spec, &values, torch_params),
            })
            .collect()
    }

    /// Quantizes a flat tensor per tensor, parameters from the data ([`Convention::params`]),
    /// under this convention.
    ///
    /// # Errors
    /// As [`Convention::params`] and [`Convention::quantize_into`].
    pub fn quantize<F: QuantFloat, Q: Storage>(self, x: &[F], spec: QuantSpec) -> Result<Quantized<F, Q>, QuantError> {
        spec.check_storage::<Q>()?;
        let params = self.params(x, spec)?;
        let mut codes = alloc::vec![Q::default(); Q::units_for(x.len())];
        self.quantize_into(x, spec, &params, &mut codes)?;
        Ok(Quantized::from_parts(codes, x.len(), spec, params))
    }

    /// Quantizes a row-major matrix with explicit parameters (one set per channel or group)
    /// into `out`, under this convention.
    ///
    /// # Errors
    /// As [`quantize_matrix_into`].
    pub fn quantize_matrix_into<F: QuantFloat, Q: Storage>(
        self,
        x: &[F],
        shape: MatrixShape,
        spec: QuantSpec,
        granularity: Granularity,
        params: &[QuantParams<F>],
        out: &mut [Q],
    ) -> Result<(), QuantError> {
        match self {
            Convention::Exact => quantize_matrix_into(x, shape, spec, granularity, params, out),
            _ => crate::granularity::quantize_matrix_with(x, shape, spec, granularity, params, out, |v, p| {
                self.quantize_value(v, p.scale(), p.zero_point(), spec.code_min(), spec.code_max())
            }),
        }
    }

    /// Quantizes a row-major matrix, parameters from the data, under this convention.
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
    /// let exact = Convention::Exact.quantize_matrix::<f32, i8>(&x, shape, spec, Granularity::PerTensor)?;
    /// let torch = Convention::PyTorch.quantize_matrix::<f32, i8>(&x, shape, spec, Granularity::PerTensor)?;
    /// assert_eq!(exact.params()[0].scale(), 2.0 / 127.0);
    /// assert_eq!(torch.params()[0].scale(), 2.0 / 127.5); // max|x| / ((qmax - qmin) / 2)
    /// assert_eq!(exact.codes(), [64, -32, 16, 127]); // 63.5 -> 64, -31.75 -> -32, 15.875 -> 16
    /// assert_eq!(torch.codes(), [64, -32, 16, 127]); // 63.75, -31.875, 15.94, 127.5 -> 128 -> 127
    /// # Ok::<(), quant_core::QuantError>(())
    /// ```
    pub fn quantize_matrix<F: QuantFloat, Q: Storage>(
        self,
        x: &[F],
        shape: MatrixShape,
        spec: QuantSpec,
        granularity: Granularity,
    ) -> Result<QuantizedMatrix<F, Q>, QuantError> {
        if self == Convention::Exact {
            return quantize_matrix(x, shape, spec, granularity);
        }
        spec.check_storage::<Q>()?;
        let params = self.matrix_params(x, shape, spec, granularity)?;
        let mut codes = alloc::vec![Q::default(); Q::units_for(x.len())];
        self.quantize_matrix_into(x, shape, spec, granularity, &params, &mut codes)?;
        Ok(QuantizedMatrix::from_parts(codes, shape, spec, granularity, params))
    }
}

/// `v` as the `f32` the `f32` conventions compute with (exact for `f16`/`bf16`/`f32`).
fn to_f32<F: QuantFloat>(v: F) -> f32 {
    f32_nearest(v.to_f64_exact())
}

/// An `f32` convention's parameters for values of type `F`: computed on the values in `f32`,
/// the scale then rounded to `F`.
fn in_f32<F: QuantFloat>(
    spec: QuantSpec,
    values: &[F],
    params: fn(QuantSpec, &[f32]) -> Result<QuantParams<f32>, QuantError>,
) -> Result<QuantParams<F>, QuantError> {
    let values: Vec<f32> = values.iter().map(|&v| to_f32(v)).collect();
    let p = params(spec, &values)?;
    QuantParams::new(spec, F::from_f64_nearest(f64::from(p.scale())), p.zero_point())
}

/// ONNX's parameters for one channel or group, every operation rounded to `F` (module docs).
fn onnx_params<F: QuantFloat>(spec: QuantSpec, values: &[F]) -> Result<QuantParams<F>, QuantError> {
    let r = |v: f64| F::from_f64_nearest(v).to_f64_exact();
    let (qmin, qmax) = (spec.code_min(), spec.code_max());
    let hi = values.iter().fold(0f64, |m, v| m.max(v.to_f64_exact()));
    let lo = values.iter().fold(0f64, |m, v| m.min(v.to_f64_exact()));
    let overflow = QuantError::ScaleOverflow { lo, hi, float: F::NAME };
    match spec.scheme() {
        Scheme::Symmetric => {
            let amax = hi.max(-lo);
            if amax == 0.0 {
                return Ok(QuantParams::identity());
            }
            QuantParams::new(spec, F::from_f64_nearest(amax / r(i64_to_f64(spec.steps()))), 0)
        }
        Scheme::Asymmetric => {
            let width = if hi == lo { 1.0 } else { r(hi - lo) };
            if !width.is_finite() {
                return Err(overflow);
            }
            let scale = r(width / r(i64_to_f64(qmax - qmin)));
            if scale == 0.0 {
                return Err(QuantError::InvalidScale { value: scale });
            }
            let initial = r(r(i64_to_f64(qmin)) - r(lo / scale));
            let zero_point = f64_to_i64_saturating(round_ties_even(initial.clamp(i64_to_f64(qmin), i64_to_f64(qmax))));
            QuantParams::new(spec, F::from_f64_nearest(scale), zero_point)
        }
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
