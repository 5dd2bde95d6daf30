//! The portable tier: no fast path of its own, so the scalar reference (`crate::scalar`) and
//! the lane search's portable build (`crate::ggml::lanes`) run.

use quant_traits::cpu::Portable;

use super::CoreKernels;

impl CoreKernels for Portable {
    const CODE: &'static str = "portable";
}
