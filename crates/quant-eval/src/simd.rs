//! One loop, three compilations: [`multiversion!`] compiles a function's body for the
//! baseline, for AVX2 + FMA and for AVX-512 registers, and runs the widest the CPU has
//! (detected once). The operations are the same, so are the results: Rust forms no fused multiply-add
//! from a separate `*` and `+`, and the loops fix their order of summation themselves.

/// Whether this CPU has AVX2 and FMA (detected on the first call, then cached).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"))
}

/// Whether this CPU has AVX-512 F (and AVX2 and FMA; detected on the first call, then cached).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| avx2() && std::is_x86_feature_detected!("avx512f"))
}

/// `fn name(args) -> ret { body }`, compiled three times (see the [module docs](self)).
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident : $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            fn generic($($a: $t),*) $(-> $r)? $body
            /// # Safety
            /// AVX2 and FMA present.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn wide($($a: $t),*) $(-> $r)? {
                generic($($a),*)
            }
            /// # Safety
            /// AVX-512 F, AVX2 and FMA present.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn widest($($a: $t),*) $(-> $r)? {
                generic($($a),*)
            }
            #[cfg(target_arch = "x86_64")]
            if $crate::simd::avx512() {
                // SAFETY: AVX-512 F, AVX2 and FMA detected.
                return unsafe { widest($($a),*) };
            }
            #[cfg(target_arch = "x86_64")]
            if $crate::simd::avx2() {
                // SAFETY: AVX2 and FMA detected.
                return unsafe { wide($($a),*) };
            }
            generic($($a),*)
        }
    };
}
pub(crate) use multiversion;
