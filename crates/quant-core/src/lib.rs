//! Symmetric and asymmetric quantization of `f32`, `f64`, `f16` and `bf16` tensors into
//! 2..=32-bit integer codes, per tensor, per channel or per group, exact to the last bit.
//!
//! # Two layers
//! * **The seed API** ([`quantize_symmetric`], [`quantize_asymmetric`],
//!   [`quantize_per_channel`], [`dequantize_symmetric`], [`dequantize_asymmetric`]): the
//!   functions of the original specification, with `Vec<i32>`/`Vec<u32>` codes.
//! * **The engine** that an inference runtime embeds: a validated [`QuantSpec`] (scheme and
//!   width), [`QuantParams`] (scale and zero point, from data, from a range or explicit), and
//!   quantize/dequantize over flat slices into any [`Storage`] type,
//!   including packed 4-bit ([`I4x2`](quant_traits::I4x2), [`U4x2`](quant_traits::U4x2)):
//!   [`quantize_into`], [`dequantize_into`], [`quantize`], and for matrices with a
//!   [`Granularity`] (per tensor, per channel, per group) [`quantize_matrix`] /
//!   [`quantize_matrix_into`].
//! * **Interchange formats**: llama.cpp's blocks, byte for byte ([`BlockFormat`], module
//!   [`ggml`]; `MXFP4` in [`mxfp4`]); ONNX's float8 and float4 types ([`MiniFloat`]).
//! * **N-D tensors** as ONNX's `QuantizeLinear`/`DequantizeLinear` see them ([`tensor`]): an
//!   `axis` and a `block_size` over a flat slice with its dimensions ([`TensorLayout`]), into
//!   integer, float8 or float4 codes.
//! * **Two-level weight formats of our own** ([`superblock`]): codes in sub-blocks with
//!   few-bit scales under an `f16` per super-block, symmetric, offset or non-uniform levels,
//!   fitted by an error-minimizing search, optionally weighted by per-column importance.
//! * **Calibration** ([`calibrate`]): observers that see activations in batches and give their
//!   range: [`MinMax`], [`MovingAverageMinMax`], [`Percentile`], [`MseOptimal`], per tensor or
//!   per channel ([`ChannelObserver`]).
//! * **Named conventions** ([`Convention`]): exact (this crate's arithmetic, the default), ONNX
//!   (the division in the input's float type, as its reference evaluator and ONNX Runtime
//!   compute; `DynamicQuantizeLinear`'s parameters), PyTorch, llama.cpp.
//!
//! # Conventions (each tested)
//! * Arithmetic in `f64` whatever the element type; the scale is rounded to `F` once
//!   ([`params`] says exactly how, and when it steps up one ulp to keep the range covered).
//! * Rounding is **ties to even** everywhere (Python `round`, NumPy `rint`, PyTorch, ONNX):
//!   [`quant_traits::cast::round_ties_even`].
//! * Asymmetric codes are `clamp(round(x / scale) + zero_point)`: round first, then add the
//!   zero point (ONNX and PyTorch order). They are unsigned unless asked for signed
//!   ([`QuantSpec::asymmetric_signed`], [`QuantSpec::for_storage`]).
//! * Symmetric: `scale = max|x| / (2^(b-1) - 1)`, codes `-2^(b-1) ..= 2^(b-1) - 1`.
//!   Asymmetric: range widened to include 0, `scale = (hi - lo) / (2^b - 1)`,
//!   `zero_point = round(-lo / scale)` in `0 ..= 2^b - 1`, codes `0 ..= 2^b - 1`.
//! * All-zero and empty tensors: scale 1.0, zero point 0, codes 0 (an empty tensor is not an
//!   error).
//! * Every finite input dequantizes to within `scale / 2` of itself (before the final rounding
//!   of the dequantized value to `F`).
//! * NaN or ±inf input is an error naming the element; nothing panics on user input.
//!
//! # Features
//! * `std` (default): links `std`. Without it the crate is `no_std` and needs only `alloc`.
//! * `parallel` (off): splits large quantize/dequantize calls (at least 2^20 elements of 8-bit
//!   codes) across rayon's threads; the result does not depend on it.
//!
//! # Example
//! ```
//! use quant_core::{quantize, quantize_asymmetric, QuantSpec};
//! use quant_traits::{half::f16, U4x2};
//!
//! // The seed API.
//! let (codes, scale, zero_point) = quantize_asymmetric(&[-1.0f32, 0.0, 3.0], 8)?;
//! assert_eq!((scale, zero_point), (4.0 / 255.0, 64)); // 63.75 -> 64
//! assert_eq!(codes, [0, 64, 255]);
//!
//! // The engine: f16 weights into packed unsigned 4-bit codes.
//! let x: Vec<f16> = [0.0f32, 0.5, 1.0, 1.5].iter().map(|&v| f16::from_f32(v)).collect();
//! let q = quantize::<f16, U4x2>(&x, QuantSpec::asymmetric(4)?)?;
//! assert_eq!(q.iter_codes().collect::<Vec<_>>(), [0, 5, 10, 15]);
//! assert_eq!(q.codes().len(), 2); // two bytes
//! assert_eq!(q.dequantize()[2], f16::from_f32(1.0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
// A numeric `as` cast outside `quant_traits::cast` states why it is right where it is.
#![cfg_attr(not(test), deny(clippy::as_conversions))]

extern crate alloc;

mod arch;
pub mod calibrate;
pub mod convention;
pub mod ggml;
mod granularity;
pub mod minifloat;
pub use ggml::mxfp4;
pub mod params;
mod quantize;
mod range;
mod scalar;
mod scheme;
pub mod superblock;
pub mod tensor;
mod vec_api;

pub use arch::selected_kernel;
pub use calibrate::{ChannelObserver, MinMax, MovingAverageMinMax, MseOptimal, Observer, Percentile};
pub use convention::Convention;
pub use ggml::{BlockCodes, BlockFormat};
pub use granularity::{
    dequantize_matrix_into, matrix_params, quantize_matrix, quantize_matrix_into, Axis, Granularity, QuantizedMatrix,
};
pub use minifloat::MiniFloat;
pub use params::QuantParams;
pub use quantize::{dequantize_code, dequantize_into, quantize, quantize_into, quantize_value, read_codes, Quantized};
pub use range::{check_finite, range_of, Range};
pub use scheme::{QuantSpec, Scheme};
pub use tensor::TensorLayout;
pub use vec_api::{
    dequantize_asymmetric, dequantize_symmetric, quantize_asymmetric, quantize_per_channel, quantize_symmetric,
};

/// The shared traits and error type, re-exported so a user of the core needs one dependency.
pub use quant_traits::{self, MatrixShape, QuantError, QuantFloat, Storage};
