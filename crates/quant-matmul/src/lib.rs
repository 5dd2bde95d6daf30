//! Integer matrix multiply on quantized codes: accumulated exactly in integers, rescaled once.
//!
//! ```text
//! C_float = A_float · B_float
//!         ≈ (A_int · scale_a) · (B_int · scale_b)
//!         = scale_a · scale_b · (A_int · B_int)
//! ```
//!
//! Two tiers:
//! * **The engine** ([`Gemm`], [`Operands`]): 8-bit operands (`u8` or `i8` activations with a
//!   zero point per tensor or per row, `i8` or `u8` weights with a zero point per tensor or per
//!   column, optionally packed once with [`PackedB`] in the running kernel's layout, also from
//!   4-bit codes), packed and blocked, one micro-kernel per CPU tier chosen at run time ([`Tier`]:
//!   AVX-512 VNNI and AVX-VNNI `vpdpbusd`, AVX2 `vpmaddwd`, portable; [`KernelChoice`] or
//!   `QUANT_KERNEL` forces one, an unavailable one is an error; [`selected_kernel`] says which
//!   runs), a 7-bit `vpmaddubsw` path for activations in `0..=127` on AVX2, threads with
//!   rayon, an `M = 1`
//!   path for decoding, and output stages: raw `i32`, `f32` with per-tensor or per-column
//!   scales and a bias, or requantized `i8`/`u8` (float or TFLite fixed-point multiplier, or
//!   ONNX `QLinearMatMul`'s per-row × per-column scales: [`Requant`]). Exact: see [`gemm`].
//!   N-D operands with ONNX's (NumPy's) batch broadcasting: [`BatchedShape`].
//! * **Group-quantized weights** ([`group`]): `y = x · Wᵀ + bias` with `W` in a few bits and
//!   one scale per group of inputs ([`GroupWeights`], from our codes or any of llama.cpp's block
//!   formats, k-quants and `MXFP4` included), in two modes: activations quantized to `i8` per group (or super-block) on the fly
//!   ([`GroupGemm::int8_activations`]) or kept in `f32` against weights dequantized in
//!   registers ([`GroupGemm::float_activations`]). Each mode has a portable reference that
//!   defines the bits and SIMD kernels for every x86-64 tier that reproduce them: the same
//!   result on every CPU and for any thread count.
//! * **The exact reference** for codes of any width (2..=32 bits): [`matmul_exact`] with the
//!   narrowest accumulator that provably cannot overflow, and the seed API
//!   [`quantized_matmul`] / [`quantized_matmul_flat`], which routes to the engine whenever the
//!   codes fit 8 bits.
//!
//! # Features
//! * `std` (default): run-time CPU detection and the `QUANT_KERNEL` variable. Without it the
//!   crate is `no_std` + `alloc` and a tier runs only when the build enables its features
//!   (`-C target-feature`).
//! * `parallel` (default, implies `std`): threads with rayon.
//!
//! # Example
//! ```
//! use quant_matmul::{Gemm, MatMut, MatRef, Operands, Scale, ZeroPoint};
//!
//! // u8 activations (zero point 128) times i8 weights (symmetric), f32 out.
//! let a = [130u8, 126, 128, 200];          // 2 x 2
//! let b = [1i8, -2, 3, 4];                 // 2 x 2
//! let ops = Operands::new(MatRef::row_major(&a, 2, 2)?, ZeroPoint::PerTensor(128),
//!                         MatRef::row_major(&b, 2, 2)?, ZeroPoint::None)?;
//! let mut c = [0f32; 4];
//! Gemm::new().f32(&ops, 0.5, Scale::PerTensor(0.25), None, MatMut::row_major(&mut c, 2, 2)?)?;
//! // (A - 128) = [[2, -2], [0, 72]]; times B = [[-4, -12], [216, 288]]; times 0.125.
//! assert_eq!(c, [-0.5, -1.5, 27.0, 36.0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
// A numeric `as` cast outside `quant_traits::cast` states why it is right where it is.
#![cfg_attr(not(test), deny(clippy::as_conversions))]

extern crate alloc;

mod aligned;
mod arch;
mod batch;
mod exact;
pub mod gemm;
pub mod group;
mod quantized_matmul;
mod threads;
mod view;

pub use arch::{selected_kernel, KernelChoice};
pub use batch::{Batch, BatchedShape};
pub use exact::{matmul_exact, Accumulator, GemmShape};
pub use gemm::element::{Operand, ZeroPoint};
pub use gemm::output::{
    check_fixed_point, multiply_by_quantized_multiplier, quantize_multiplier, rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul, Requant, Scale, ScaleType,
};
pub use gemm::pack::PackedB;
pub use gemm::{Gemm, Operands};
pub use group::{ActivationBlocks, GroupCodes, GroupGemm, GroupWeights};
pub use quant_traits::cpu::Tier;
pub use quantized_matmul::{quantized_matmul, quantized_matmul_flat};
pub use view::{MatMut, MatRef};

pub use quant_traits::{QuantError, QuantFloat};
