//! The workspace README and the pages of `docs/`, compiled and run as doc tests: every Rust
//! example in them is a test (`cargo xtask test`), so the prose cannot drift from the API.
//! Nothing here is meant to be depended on.
#![doc = include_str!("../../../README.md")]

/// `docs/cli.md`.
#[doc = include_str!("../../../docs/cli.md")]
pub mod cli {}

/// `docs/conventions.md`.
#[doc = include_str!("../../../docs/conventions.md")]
pub mod conventions {}

/// `docs/formats.md`.
#[doc = include_str!("../../../docs/formats.md")]
pub mod formats {}

/// `docs/gemm.md`.
#[doc = include_str!("../../../docs/gemm.md")]
pub mod gemm {}

/// `docs/minilm.md`.
#[doc = include_str!("../../../docs/minilm.md")]
pub mod minilm {}

/// `docs/performance.md`.
#[doc = include_str!("../../../docs/performance.md")]
pub mod performance {}

/// `docs/bad-input.md`.
#[doc = include_str!("../../../docs/bad-input.md")]
pub mod bad_input {}

/// `docs/development.md`.
#[doc = include_str!("../../../docs/development.md")]
pub mod development {}
