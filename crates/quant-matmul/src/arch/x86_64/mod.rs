//! x86-64 kernels, one file per tier, chosen at run time.

pub(crate) mod amx;
pub(crate) mod avx2;
pub(crate) mod avx512;
pub(crate) mod avxvnni;
mod decode;
pub(crate) mod pack;
mod ymm;
