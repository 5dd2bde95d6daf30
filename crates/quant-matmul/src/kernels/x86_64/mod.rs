//! x86-64 kernels, chosen at run time.

pub(crate) mod avx2;
