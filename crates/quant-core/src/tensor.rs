//! N-D tensors as ONNX's `QuantizeLinear` and `DequantizeLinear` see them: a flat row-major slice
//! with its dimensions, one scale (and zero point) per tensor, per index of an `axis`, or per
//! block of `block_size` consecutive indices along the axis.
//!
//! [`TensorLayout`] is the view (no copies): the tensor as `outer × channels × inner` around the
//! axis. Parameter sets are in ONNX's order: per axis, one per channel; blocked, the scale
//! tensor's own row-major order, whose shape is the input's with the axis shortened to
//! `ceil(channels / block_size)`. A last block may be shorter.
//!
//! The quantizers take a [`Convention`] for the arithmetic (`Convention::Onnx` is ONNX's own)
//! and check everything before writing anything: lengths, parameter counts, every parameter, and
//! every element's finiteness.
//!
//! # Example: ONNX's `test_quantizelinear_axis`
//! ```
//! use quant_core::tensor::{quantize_tensor_into, TensorLayout};
//! use quant_core::{Convention, QuantParams, QuantSpec, Scheme};
//!
//! // x of shape (1, 3, 3, 2), one scale and zero point per index of axis 1.
//! let x = [-162.0f32, 10.0, -100.0, 232.0, -20.0, -50.0, -76.0, 0.0, 0.0, 252.0, 32.0, -44.0,
//!          245.0, -485.0, -960.0, -270.0, -375.0, -470.0];
//! let layout = TensorLayout::per_axis(&[1, 3, 3, 2], 1)?;
//! let spec = QuantSpec::for_storage::<u8>(Scheme::Asymmetric)?;
//! let params = [(2.0, 84), (4.0, 24), (5.0, 196)]
//!     .map(|(s, z)| QuantParams::new(spec, s, z))
//!     .into_iter()
//!     .collect::<Result<Vec<_>, _>>()?;
//! let mut y = [0u8; 18];
//! quantize_tensor_into(&x, &layout, spec, &params, Convention::Onnx, &mut y)?;
//! assert_eq!(y, [3, 89, 34, 200, 74, 59, 5, 24, 24, 87, 32, 13, 245, 99, 4, 142, 121, 102]);
//! # Ok::<(), quant_core::QuantError>(())
//! ```

use quant_traits::{QuantError, QuantFloat, Storage, U4x2};

use crate::convention::Convention;
use crate::minifloat::MiniFloat;
use crate::params::QuantParams;
use crate::quantize::{check_params, check_units, dequantize_code, write_codes};
use crate::range::check_finite;
use crate::scheme::QuantSpec;

/// How parameter sets map onto an N-D tensor (see the module docs).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorLayout {
    outer: usize,
    channels: usize,
    inner: usize,
    sets: Sets,
}

/// Which elements share a parameter set.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum Sets {
    Tensor,
    Axis,
    Blocks(usize),
}

impl TensorLayout {
    /// One parameter set for the whole tensor.
    ///
    /// # Errors
    /// [`QuantError::TensorTooLarge`] if the element count overflows.
    pub fn per_tensor(dims: &[usize]) -> Result<Self, QuantError> {
        Ok(TensorLayout { outer: 1, channels: 1, inner: elements(dims)?, sets: Sets::Tensor })
    }

    /// One parameter set per index of `axis` (negative counts from the end, as in ONNX).
    ///
    /// # Errors
    /// [`QuantError::InvalidTensorAxis`]; [`QuantError::TensorTooLarge`].
    pub fn per_axis(dims: &[usize], axis: isize) -> Result<Self, QuantError> {
        let (outer, channels, inner) = split(dims, axis)?;
        Ok(TensorLayout { outer, channels, inner, sets: Sets::Axis })
    }

    /// One parameter set per block of `block_size` consecutive indices along `axis`, for each
    /// position of the other axes (ONNX's blocked quantization, opset 21).
    ///
    /// # Errors
    /// [`QuantError::InvalidGroupSize`] for a block size of 0; as [`TensorLayout::per_axis`].
    pub fn blocked(dims: &[usize], axis: isize, block_size: usize) -> Result<Self, QuantError> {
        if block_size == 0 {
            return Err(QuantError::InvalidGroupSize);
        }
        let (outer, channels, inner) = split(dims, axis)?;
        Ok(TensorLayout { outer, channels, inner, sets: Sets::Blocks(block_size) })
    }

    /// Number of elements.
    #[must_use]
    pub fn len(&self) -> usize {
        self.outer * self.channels * self.inner
    }

    /// Whether the tensor has no elements.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of parameter sets: 1, the axis length, or `outer · ceil(channels / block) · inner`.
    #[must_use]
    pub fn param_count(&self) -> usize {
        match self.sets {
            Sets::Tensor => 1,
            Sets::Axis => self.channels,
            Sets::Blocks(b) => self.outer * self.channels.div_ceil(b) * self.inner,
        }
    }

    /// The parameter set of flat element `index` (`index < len()`).
    #[must_use]
    pub fn param_of(&self, index: usize) -> usize {
        // Only reached with elements, so every dimension is at least 1.
        let (channels, inner) = (self.channels.max(1), self.inner.max(1));
        match self.sets {
            Sets::Tensor => 0,
            Sets::Axis => (index / inner) % channels,
            Sets::Blocks(b) => {
                let (o, c, i) = (index / (inner * channels), (index / inner) % channels, index % inner);
                (o * channels.div_ceil(b) + c / b) * inner + i
            }
        }
    }
}

/// The product of `dims`, checked.
fn elements(dims: &[usize]) -> Result<usize, QuantError> {
    dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d).ok_or(QuantError::TensorTooLarge { before: n, dim: d }))
}

/// `(outer, channels, inner)` around `axis`.
fn split(dims: &[usize], axis: isize) -> Result<(usize, usize, usize), QuantError> {
    let rank = dims.len();
    let index = if axis < 0 { rank.checked_sub(axis.unsigned_abs()) } else { Some(axis.unsigned_abs()) };
    let index = index.filter(|&i| i < rank).ok_or(QuantError::InvalidTensorAxis { axis, rank })?;
    elements(dims)?;
    Ok((elements(&dims[..index])?, dims[index], elements(&dims[index + 1..])?))
}

/// Checks a parameter-set count against a layout.
fn check_param_count(layout: &TensorLayout, found: usize) -> Result<(), QuantError> {
    QuantError::check_length("parameter sets", layout.param_count(), found)
}

/// Checks float8/float4 scales: one per parameter set, each finite and positive.
fn check_scales<F: QuantFloat>(layout: &TensorLayout, scales: &[F]) -> Result<(), QuantError> {
    check_param_count(layout, scales.len())?;
    scales.iter().try_for_each(|s| QuantError::check_scale(s.to_f64_exact()).map(|_| ()))
}

/// Quantizes an N-D tensor into integer codes with explicit parameters, one set per
/// [`TensorLayout::param_of`], under `convention`: ONNX `QuantizeLinear` with an integer output
/// type (`Convention::Onnx` for its arithmetic; the spec from the output type,
/// [`QuantSpec::for_storage`]).
///
/// # Errors
/// [`QuantError::StorageTooNarrow`], [`QuantError::LengthMismatch`] (input, parameter sets,
/// output), [`QuantError::InvalidZeroPoint`], [`QuantError::NonFinite`] naming the first NaN
/// or infinite element; all before anything is written.
pub fn quantize_tensor_into<F: QuantFloat, Q: Storage>(
    x: &[F],
    layout: &TensorLayout,
    spec: QuantSpec,
    params: &[QuantParams<F>],
    convention: Convention,
    out: &mut [Q],
) -> Result<(), QuantError> {
    spec.check_storage::<Q>()?;
    QuantError::check_length("input", layout.len(), x.len())?;
    check_param_count(layout, params.len())?;
    for p in params {
        check_params(spec, p)?;
    }
    check_units::<Q>("output codes", x.len(), out.len())?;
    check_finite(x)?;
    let (lo, hi) = (spec.code_min(), spec.code_max());
    write_codes(
        out,
        x.iter().enumerate().map(|(i, &v)| {
            let p = &params[layout.param_of(i)];
            convention.quantize_value(v, p.scale(), p.zero_point(), lo, hi)
        }),
    );
    Ok(())
}

/// Dequantizes an N-D tensor of integer codes: `(q - zero_point) · scale` per element, rounded
/// once to `F` (ONNX `DequantizeLinear`).
///
/// # Errors
/// [`QuantError::LengthMismatch`] (codes, parameter sets, output), before anything is written.
pub fn dequantize_tensor_into<F: QuantFloat, Q: Storage>(
    codes: &[Q],
    layout: &TensorLayout,
    params: &[QuantParams<F>],
    out: &mut [F],
) -> Result<(), QuantError> {
    QuantError::check_length("output", layout.len(), out.len())?;
    check_units::<Q>("codes", out.len(), codes.len())?;
    check_param_count(layout, params.len())?;
    let len = out.len();
    for (i, (o, q)) in out.iter_mut().zip(crate::quantize::read_codes(codes, len)).enumerate() {
        let p = &params[layout.param_of(i)];
        *o = dequantize_code(q, p.scale(), p.zero_point());
    }
    Ok(())
}

/// Checks float zero points: one per parameter set, each a code of value zero.
fn check_float_zero_points(
    layout: &TensorLayout,
    format: MiniFloat,
    zero_points: Option<&[u8]>,
) -> Result<(), QuantError> {
    let Some(zps) = zero_points else { return Ok(()) };
    check_param_count(layout, zps.len())?;
    match zps.iter().find(|&&z| format.decode(z) != 0.0) {
        Some(&z) => Err(QuantError::InvalidZeroPoint { zero_point: i64::from(z), min: 0, max: 0 }),
        None => Ok(()),
    }
}

/// Bytes that hold `len` codes of `format`: `len`, or `ceil(len / 2)` for 4-bit `E2M1`.
#[must_use]
pub fn minifloat_bytes(format: MiniFloat, len: usize) -> usize {
    if format.bits() == 4 {
        len.div_ceil(2)
    } else {
        len
    }
}

/// Quantizes an N-D tensor into float8 or float4 codes: `code = format(x / scale)` with one
/// scale per [`TensorLayout::param_of`] (ONNX `QuantizeLinear` with a float8/float4 output).
///
/// `zero_points` are codes of `format`, one per parameter set, or `None` (ONNX's optional
/// input). For float8 ONNX requires them to be zero and does not use them; for `float4e2m1` its
/// reference adds the zero point's value to the quotient, so a given `+0` zero point turns a
/// `-0` quotient into `+0` (and only a zero one is accepted here, as for float8).
/// `Convention::Onnx` rounds
/// the quotient to `F` before converting it (ONNX's arithmetic: two roundings);
/// `Convention::Exact` converts the exact quotient. `saturate` is ONNX's attribute (see
/// [`crate::minifloat`]). Codes of `E2M1` pack two to a byte, the first in the low nibble.
///
/// NaN and infinite inputs convert as the format says (NaN to its NaN, infinity saturated or to
/// its infinity or NaN); `E2M1` has no NaN, so a NaN input is an error.
///
/// # Errors
/// [`QuantError::LengthMismatch`], [`QuantError::InvalidScale`] naming no index but the value,
/// [`QuantError::InvalidZeroPoint`] for a zero point that is not zero (its code),
/// [`QuantError::NonFinite`] for NaN into `E2M1`, [`QuantError::UnsupportedByConvention`] for
/// `PyTorch` and `Ggml`; all before anything is written.
#[allow(clippy::too_many_arguments)] // ONNX's inputs and attributes, one each
pub fn quantize_minifloat_into<F: QuantFloat>(
    x: &[F],
    layout: &TensorLayout,
    format: MiniFloat,
    scales: &[F],
    zero_points: Option<&[u8]>,
    saturate: bool,
    convention: Convention,
    out: &mut [u8],
) -> Result<(), QuantError> {
    if let Convention::PyTorch | Convention::Ggml = convention {
        return Err(QuantError::UnsupportedByConvention { convention: convention.name(), what: "float8/float4 codes" });
    }
    QuantError::check_length("input", layout.len(), x.len())?;
    check_scales(layout, scales)?;
    check_float_zero_points(layout, format, zero_points)?;
    QuantError::check_length("output bytes", minifloat_bytes(format, x.len()), out.len())?;
    // float4e2m1 adds its (zero) zero point: -0 + 0 = +0.
    let add_zero = zero_points.is_some() && format == MiniFloat::E2M1;
    if !format.has_nan() {
        if let Some(index) = x.iter().position(|v| v.to_f64_exact().is_nan()) {
            return Err(QuantError::NonFinite { index, value: f64::NAN });
        }
    }
    let code = |i: usize, v: F| {
        let q = v.to_f64_exact() / scales[layout.param_of(i)].to_f64_exact();
        let q = if convention == Convention::Onnx { F::from_f64_nearest(q).to_f64_exact() } else { q };
        format.encode(if add_zero { q + 0.0 } else { q }, saturate)
    };
    if format.bits() == 4 {
        // Float4 codes pack as unsigned 4-bit codes do (U4x2: first in the low nibble, a last
        // odd one with a zero high nibble).
        for (b, (pair, o)) in x.chunks(2).zip(out.iter_mut()).enumerate() {
            let mut lanes = [0i64; 2];
            for (l, (lane, &v)) in lanes.iter_mut().zip(pair).enumerate() {
                *lane = i64::from(code(2 * b + l, v));
            }
            *o = U4x2::pack(&lanes[..pair.len()]).0;
        }
    } else {
        for (i, (o, &v)) in out.iter_mut().zip(x).enumerate() {
            *o = code(i, v);
        }
    }
    Ok(())
}

/// Dequantizes float8 or float4 codes (as [`quantize_minifloat_into`] writes them):
/// `value(code) · scale`, rounded once to `F` (ONNX `DequantizeLinear`); NaN codes give NaN,
/// infinities infinity. `zero_points`, ONNX's optional input, must be zero codes.
///
/// # Errors
/// [`QuantError::LengthMismatch`], [`QuantError::InvalidScale`],
/// [`QuantError::InvalidZeroPoint`], before anything is written.
pub fn dequantize_minifloat_into<F: QuantFloat>(
    codes: &[u8],
    layout: &TensorLayout,
    format: MiniFloat,
    scales: &[F],
    zero_points: Option<&[u8]>,
    out: &mut [F],
) -> Result<(), QuantError> {
    check_float_zero_points(layout, format, zero_points)?;
    QuantError::check_length("output", layout.len(), out.len())?;
    QuantError::check_length("codes", minifloat_bytes(format, out.len()), codes.len())?;
    check_scales(layout, scales)?;
    let four = format.bits() == 4;
    for (i, o) in out.iter_mut().enumerate() {
        // Float4 codes pack as unsigned 4-bit codes do (U4x2: first in the low nibble).
        let code = if four { u8::try_from(U4x2(codes[i / 2]).lane(i % 2)).unwrap_or(0) } else { codes[i] };
        *o = F::from_f64_nearest(format.decode(code) * scales[layout.param_of(i)].to_f64_exact());
    }
    Ok(())
}

/// The flat case of a convention's quantizer is the one-dimensional tensor.
impl Convention {
    /// Quantizes a flat tensor with explicit parameters into `out` (`Q::units_for(x.len())`
    /// units), under this convention.
    ///
    /// # Errors
    /// As [`crate::quantize_into`]; under any convention but `Exact`, a non-finite element is
    /// found before anything is written.
    pub fn quantize_into<F: QuantFloat, Q: Storage>(
        self,
        x: &[F],
        spec: QuantSpec,
        params: &QuantParams<F>,
        out: &mut [Q],
    ) -> Result<(), QuantError> {
        if self == Convention::Exact {
            return crate::quantize_into(x, spec, params, out);
        }
        let layout = TensorLayout::per_tensor(&[x.len()])?;
        quantize_tensor_into(x, &layout, spec, core::slice::from_ref(params), self, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_map_elements_to_onnx_parameter_order() {
        // (2, 5, 3) blocked along axis 1 by 2: scale shape (2, 3, 3).
        let l = TensorLayout::blocked(&[2, 5, 3], 1, 2).expect("valid");
        assert_eq!((l.len(), l.param_count()), (30, 18));
        // Element (o, c, i) at (o * 5 + c) * 3 + i uses scale (o, c / 2, i).
        for o in 0..2 {
            for c in 0..5 {
                for i in 0..3 {
                    assert_eq!(l.param_of((o * 5 + c) * 3 + i), (o * 3 + c / 2) * 3 + i);
                }
            }
        }
        let l = TensorLayout::per_axis(&[2, 5, 3], -2).expect("valid");
        assert_eq!(l.param_count(), 5);
        assert_eq!(l.param_of((5 + 4) * 3 + 2), 4);
        let l = TensorLayout::per_tensor(&[2, 5, 3]).expect("valid");
        assert_eq!((l.param_count(), l.param_of(29)), (1, 0));
        // A block as long as the axis: one set per position of the other axes.
        let l = TensorLayout::blocked(&[4, 6], 1, 6).expect("valid");
        assert_eq!(l.param_count(), 4);
        assert_eq!(l.param_of(13), 2);
    }

    #[test]
    fn bad_axes_and_blocks_are_named() {
        assert_eq!(TensorLayout::per_axis(&[2, 3], 2), Err(QuantError::InvalidTensorAxis { axis: 2, rank: 2 }));
        assert_eq!(TensorLayout::per_axis(&[2, 3], -3), Err(QuantError::InvalidTensorAxis { axis: -3, rank: 2 }));
        assert_eq!(TensorLayout::blocked(&[2, 3], 0, 0), Err(QuantError::InvalidGroupSize));
        assert_eq!(
            TensorLayout::per_tensor(&[usize::MAX, 2]),
            Err(QuantError::TensorTooLarge { before: usize::MAX, dim: 2 })
        );
    }
}
