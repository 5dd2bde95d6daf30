//! Benchmarks live in `benches/`; run them with `cargo xtask bench`.
//!
//! This library target also compiles the workspace README's Rust examples as doc tests (below),
//! so `cargo xtask test` fails if the README stops being true.

#[doc = include_str!("../README.md")]
#[allow(dead_code)]
mod readme {}
