//! Integer matrix multiply on quantized codes: accumulated exactly in integers, rescaled once.
//!
//! ```text
//! C_float = A_float · B_float
//!         ≈ (A_int · scale_a) · (B_int · scale_b)
//!         = scale_a · scale_b · (A_int · B_int)
//! ```
//!
//! * [`matmul_exact`]: `A_int · B_int` for `i32` codes of any width (2..=32 bits), returned as
//!   exact `i128` sums. The accumulator is the narrowest type that provably cannot overflow for
//!   the operands' actual magnitudes and depth ([`Accumulator::for_operands`]): `i32` for
//!   typical 8-bit codes, `i64` for wider ones, `i128` when even `i64` could overflow (two
//!   32-bit codes multiply to up to `2^62`).
//! * [`quantized_matmul_flat`] / [`quantized_matmul`] (the seed API): the exact sum, converted to
//!   `f64`, multiplied once by `scale_a * scale_b` in `f64`, rounded once to `F`.
//!
//! This crate is the exact reference tier; the tiled SIMD engine for 8-bit codes builds on it.
//!
//! # Features
//! * `std` (default): links `std`. Without it the crate is `no_std` and needs only `alloc`.
//!
//! # Example
//! ```
//! use quant_core::quantize_symmetric;
//! use quant_matmul::quantized_matmul;
//!
//! let a = [[1.0f64, 2.0, 3.0], [4.0, 5.0, 6.0]];
//! let b = [[7.0f64, 8.0], [9.0, 10.0], [11.0, 12.0]];
//! let (aq, sa) = quantize_symmetric(a.as_flattened(), 8)?;
//! let (bq, sb) = quantize_symmetric(b.as_flattened(), 8)?;
//! let aq: Vec<Vec<i32>> = aq.chunks(3).map(<[i32]>::to_vec).collect();
//! let bq: Vec<Vec<i32>> = bq.chunks(2).map(<[i32]>::to_vec).collect();
//! let c = quantized_matmul(&aq, &bq, sa, sb)?;
//! // Exact: [[58, 64], [139, 154]]; int8 gets within a fraction of a percent.
//! assert!((c[0][0] - 58.0).abs() < 0.2 && (c[1][1] - 154.0).abs() < 0.5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

extern crate alloc;

mod exact;
mod scaled;

pub use exact::{matmul_exact, Accumulator, GemmShape};
pub use scaled::{quantized_matmul, quantized_matmul_flat};

pub use quant_traits::{QuantError, QuantFloat};
