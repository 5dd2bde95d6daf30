//! Intrinsics, by architecture (the rest of the crate is portable Rust that the compiler
//! vectorizes).

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;
