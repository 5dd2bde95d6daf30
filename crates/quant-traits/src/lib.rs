//! The small crate every `quant` crate depends on: element traits, exact conversions and the
//! error type.
//!
//! * [`QuantFloat`]: the float element types a tensor may hold: `f32`, `f64`, [`half::f16`],
//!   [`half::bf16`]. Widening to `f64` is exact; narrowing rounds to nearest, ties to even.
//! * [`Storage`]: where codes live: `i8 u8 i16 u16 i32 u32`, the packed 4-bit [`I4x2`] and
//!   [`U4x2`] (two codes per byte, first code in the low nibble, as ONNX and PyTorch pack them)
//!   and the packed 2-bit [`I2x4`] and [`U2x4`] (four per byte, same order).
//! * [`cast`]: the one module holding every rounding, clamp and numeric cast of the workspace.
//! * [`MatrixShape`]: a row-major matrix shape over a flat slice, validated once.
//! * [`QuantError`]: the typed error every fallible function returns.
//! * [`cpu`]: which CPU features exist and which kernel tier runs (`QUANT_KERNEL`), one
//!   vocabulary and one cached choice for every crate.
//!
//! The crate is `#![no_std]` and allocates nothing. Its `std` feature (on by default) turns on
//! run-time CPU detection and the `QUANT_KERNEL` variable in [`cpu`], and `half`'s std support.
//!
//! # Example
//! ```
//! use half::f16;
//! use quant_traits::{QuantFloat, Storage, U4x2};
//!
//! // Narrowing is correctly rounded: 1 + 2^-11 is halfway between two f16 values.
//! let tie = 1.0 + 2f64.powi(-11);
//! assert_eq!(f16::from_f64_nearest(tie), f16::ONE); // ties to even
//!
//! // Two 4-bit codes per byte, first code in the low nibble.
//! let byte = U4x2::pack(&[0x3, 0xA]);
//! assert_eq!(byte.0, 0xA3);
//! assert_eq!((byte.lane(0), byte.lane(1)), (3, 10));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![no_std]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
// A numeric `as` cast outside `quant_traits::cast` states why it is right where it is.
#![cfg_attr(not(test), deny(clippy::as_conversions))]

pub mod cast;
pub mod cpu;
mod error;
mod float;
mod shape;
mod storage;

pub use error::QuantError;
pub use float::QuantFloat;
pub use shape::MatrixShape;
pub use storage::{pack_codes, unpack_codes, I2x4, I4x2, Storage, U2x4, U4x2};

/// Re-exported so users name the same `f16`/`bf16` types the traits are implemented for.
pub use half;
