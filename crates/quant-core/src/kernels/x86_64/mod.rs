//! x86-64 quantize/dequantize kernels, one file per tier.

pub(crate) mod avx2;
pub(crate) mod avx512;
