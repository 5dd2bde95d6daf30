//! Which CPU features exist and which kernel tier runs: one vocabulary and one cached choice
//! for every quant crate (quant-core's quantizers and quant-matmul's GEMM ask here).
//!
//! A **tier** is a set of CPU features that kernels are written for:
//!
//! | tier | `QUANT_KERNEL` | needs (as `/proc/cpuinfo` names them) | GEMM inner instruction |
//! |---|---|---|---|
//! | [`Tier::Portable`] | `portable` | nothing | plain Rust |
//! | [`Tier::Avx2`] | `avx2` | `avx2`, `fma` | `vpmaddwd` (ymm) |
//! | [`Tier::AvxVnni`] | `avxvnni` | `avx2`, `fma`, `avx_vnni` | `vpdpbusd` (ymm, VEX) |
//! | [`Tier::Avx512Vnni`] | `avx512vnni` | `avx2`, `fma`, `avx512f`, `avx512bw`, `avx512vl`, `avx512_vnni` | `vpdpbusd` (zmm) |
//! | [`Tier::Amx`] | `amx` | those of `avx512vnni`, `amx_tile`, `amx_int8` | `tdpbusd` (tiles) |
//!
//! A crate runs, for a tier, its best kernel written for that tier or a lower one (quant-core
//! has no VNNI-specific quantizer, so `avxvnni` quantizes with its AVX2 code).
//!
//! **The choice.** [`KernelChoice::Auto`] takes `QUANT_KERNEL` from the environment when it is
//! set, otherwise the best tier this CPU has; it is decided once per process and cached
//! ([`auto_tier`]). An explicit choice (the API's [`KernelChoice`] or the variable) that this
//! CPU cannot run is an error naming the missing feature
//! ([`QuantError::KernelUnavailable`]), never a silent fallback; an unknown name in the
//! variable is [`QuantError::UnknownKernel`].
//!
//! Detection is at run time with the `std` feature (`is_x86_feature_detected!`, which asks
//! `cpuid` and the OS). Without `std` there is no environment and no run-time detection: a tier
//! is available when the build enables its features (`-C target-feature` / `target-cpu`).
//!
//! **One dispatch.** Each tier also has a type here ([`Portable`], [`Avx2`], [`AvxVnni`],
//! [`Avx512Vnni`], [`Amx`]), on which every crate implements its own kernel traits, in one
//! module per tier (`arch/x86_64/avx512.rs` holds everything a crate runs on `avx512vnni`);
//! [`dispatch!`](crate::dispatch) turns a [`Tier`] into that type, for every crate. Adding a tier
//! is a variant and a type here, one line in `dispatch!`, and one module in each crate that has
//! kernels for it.
//!
//! **AMX** has one more condition: its tile registers are 8 KiB of state that Linux gives a
//! process only when asked (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`). The first
//! time `amx_tile` or `amx_int8` is asked about, with `std` on Linux x86-64, this module reads
//! `cpuid` and `XCR0` and, when both say AMX is there, makes that request once for the whole
//! process; the features count as present only if the kernel grants it. Elsewhere (another
//! OS, or no `std`) AMX is never detected, so [`Tier::Amx`] is never chosen.

use crate::QuantError;

/// A set of CPU features that kernels are written for, lowest first.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Tier {
    /// Plain Rust, every CPU: the reference the others are tested against.
    Portable,
    /// x86-64 AVX2 and FMA.
    Avx2,
    /// x86-64 AVX-VNNI: `vpdpbusd` on ymm registers (Intel Alder Lake and later client CPUs,
    /// AMD Zen 5).
    AvxVnni,
    /// x86-64 AVX-512 with VNNI: `vpdpbusd` on zmm registers (Intel Ice Lake and later, AMD
    /// Zen 4 and later).
    Avx512Vnni,
    /// x86-64 AMX (Intel Sapphire Rapids and later Xeons): `tdpbusd` multiplies 16 x 64 `u8`
    /// by 64 x 16 `i8` tiles into 16 x 16 `i32`; AVX-512 VNNI for everything else. Detected
    /// with `std` on Linux only (the OS must grant the tile state; see the module docs).
    Amx,
}

impl Tier {
    /// Every tier, lowest first.
    pub const ALL: [Tier; 5] = [Tier::Portable, Tier::Avx2, Tier::AvxVnni, Tier::Avx512Vnni, Tier::Amx];

    /// The tier's name, as `QUANT_KERNEL` takes it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Tier::Portable => "portable",
            Tier::Avx2 => "avx2",
            Tier::AvxVnni => "avxvnni",
            Tier::Avx512Vnni => "avx512vnni",
            Tier::Amx => "amx",
        }
    }

    /// The tier named `name` (ASCII case ignored).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The CPU features the tier needs, as `/proc/cpuinfo` names them.
    #[must_use]
    pub const fn features(self) -> &'static [&'static str] {
        match self {
            Tier::Portable => &[],
            Tier::Avx2 => &["avx2", "fma"],
            Tier::AvxVnni => &["avx2", "fma", "avx_vnni"],
            Tier::Avx512Vnni => &["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"],
            Tier::Amx => &["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "amx_tile", "amx_int8"],
        }
    }

    /// The first feature the tier needs that this CPU lacks, or `None` when it can run.
    #[must_use]
    pub fn missing(self) -> Option<&'static str> {
        self.missing_on(has_feature)
    }

    /// The first feature the tier needs that a CPU with the features `has` says yes to lacks.
    fn missing_on(self, has: impl Fn(&str) -> bool) -> Option<&'static str> {
        self.features().iter().copied().find(|f| !has(f))
    }

    /// [`Tier::require`] on a CPU with the features `has` says yes to.
    fn require_on(self, has: impl Fn(&str) -> bool) -> Result<Tier, QuantError> {
        match self.missing_on(has) {
            None => Ok(self),
            Some(missing) => Err(QuantError::KernelUnavailable { kernel: self.name(), missing }),
        }
    }

    /// Whether this CPU can run the tier.
    #[must_use]
    pub fn is_available(self) -> bool {
        self.missing().is_none()
    }

    /// The tier if this CPU can run it, else [`QuantError::KernelUnavailable`].
    ///
    /// # Errors
    /// [`QuantError::KernelUnavailable`] naming the first missing feature.
    pub fn require(self) -> Result<Tier, QuantError> {
        self.require_on(has_feature)
    }
}

impl core::fmt::Display for Tier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// A tier's type, on which crates implement their kernels: [`dispatch!`](crate::dispatch)
/// names it for a [`Tier`].
pub trait TierKernels: 'static {
    /// The tier.
    const TIER: Tier;
}

macro_rules! tier_types {
    ($($(#[$doc:meta])* $name:ident,)*) => {$(
        $(#[$doc])*
        #[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
        pub struct $name;

        impl TierKernels for $name {
            const TIER: Tier = Tier::$name;
        }
    )*};
}

tier_types! {
    /// The [`Tier::Portable`] kernels' type.
    Portable,
    /// The [`Tier::Avx2`] kernels' type.
    Avx2,
    /// The [`Tier::AvxVnni`] kernels' type.
    AvxVnni,
    /// The [`Tier::Avx512Vnni`] kernels' type.
    Avx512Vnni,
    /// The [`Tier::Amx`] kernels' type.
    Amx,
}

/// `dispatch!(tier, K => expr)`: evaluates `expr` with the type alias `K` naming `tier`'s type
/// ([`TierKernels`]), on which the calling crate implements its kernels. The one table of tiers
/// for every crate: a new tier is one line here.
///
/// A tier of another architecture than the one compiled for is never available, so
/// [`Tier::require`] refused it before any dispatch; it falls into the portable arm.
///
/// ```
/// use quant_traits::cpu::{Tier, TierKernels};
///
/// fn name(tier: Tier) -> Tier {
///     quant_traits::dispatch!(tier, K => K::TIER)
/// }
/// assert_eq!(name(Tier::Portable), Tier::Portable);
/// ```
#[macro_export]
macro_rules! dispatch {
    ($tier:expr, $k:ident => $body:expr) => {{
        #[allow(unreachable_patterns)]
        match $tier {
            #[cfg(target_arch = "x86_64")]
            $crate::cpu::Tier::Amx => {
                type $k = $crate::cpu::Amx;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            $crate::cpu::Tier::Avx512Vnni => {
                type $k = $crate::cpu::Avx512Vnni;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            $crate::cpu::Tier::AvxVnni => {
                type $k = $crate::cpu::AvxVnni;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            $crate::cpu::Tier::Avx2 => {
                type $k = $crate::cpu::Avx2;
                $body
            }
            // Portable, and any tier this architecture has no kernels for (never available
            // here, so `Tier::require` refused it before any dispatch).
            _ => {
                type $k = $crate::cpu::Portable;
                $body
            }
        }
    }};
}
pub use crate::dispatch;

/// Which kernel tier to run.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum KernelChoice {
    /// `QUANT_KERNEL` if set, otherwise the best tier this CPU has (the default; cached).
    #[default]
    Auto,
    /// [`Tier::Portable`].
    Portable,
    /// [`Tier::Avx2`].
    Avx2,
    /// [`Tier::AvxVnni`].
    AvxVnni,
    /// [`Tier::Avx512Vnni`].
    Avx512Vnni,
    /// [`Tier::Amx`].
    Amx,
}

impl KernelChoice {
    /// The explicit choice of `tier`.
    #[must_use]
    pub const fn of(tier: Tier) -> KernelChoice {
        match tier {
            Tier::Portable => KernelChoice::Portable,
            Tier::Avx2 => KernelChoice::Avx2,
            Tier::AvxVnni => KernelChoice::AvxVnni,
            Tier::Avx512Vnni => KernelChoice::Avx512Vnni,
            Tier::Amx => KernelChoice::Amx,
        }
    }

    /// The tier this choice runs on this CPU.
    ///
    /// # Errors
    /// [`QuantError::KernelUnavailable`] for an explicit tier (or a `QUANT_KERNEL` value) this
    /// CPU lacks; [`QuantError::UnknownKernel`] for a `QUANT_KERNEL` value that names no tier.
    pub fn resolve(self) -> Result<Tier, QuantError> {
        match self {
            KernelChoice::Auto => auto_tier(),
            KernelChoice::Portable => Tier::Portable.require(),
            KernelChoice::Avx2 => Tier::Avx2.require(),
            KernelChoice::AvxVnni => Tier::AvxVnni.require(),
            KernelChoice::Avx512Vnni => Tier::Avx512Vnni.require(),
            KernelChoice::Amx => Tier::Amx.require(),
        }
    }
}

/// The best tier this CPU can run (ignores `QUANT_KERNEL`).
#[must_use]
pub fn best_tier() -> Tier {
    Tier::ALL.into_iter().rev().find(|t| t.is_available()).unwrap_or(Tier::Portable)
}

/// What `QUANT_KERNEL` asks for: `Ok(None)` when unset or empty.
///
/// # Errors
/// [`QuantError::UnknownKernel`] for a value that names no tier.
#[cfg(feature = "std")]
pub fn requested_tier() -> Result<Option<Tier>, QuantError> {
    extern crate std;
    match std::env::var("QUANT_KERNEL") {
        Ok(v) if !v.trim().is_empty() => Tier::from_name(&v).map(Some).ok_or(QuantError::UnknownKernel),
        _ => Ok(None),
    }
}

/// What `QUANT_KERNEL` asks for: without `std` there is no environment, so always `None`.
///
/// # Errors
/// None without `std`.
#[cfg(not(feature = "std"))]
pub fn requested_tier() -> Result<Option<Tier>, QuantError> {
    Ok(None)
}

/// The cached automatic choice: 0 = not decided yet, `1 + index` into [`Tier::ALL`], or
/// [`FAILED`] when `QUANT_KERNEL` asks for something that cannot run.
static AUTO: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);
const FAILED: u8 = u8::MAX;

/// The tier [`KernelChoice::Auto`] runs in this process: `QUANT_KERNEL` when set (it must
/// name a tier this CPU has), otherwise [`best_tier`]. Decided on first use and cached.
///
/// # Errors
/// As [`KernelChoice::resolve`], when `QUANT_KERNEL` asks for what cannot run (every call
/// returns the same error).
#[expect(clippy::as_conversions, reason = "a tier's index into Tier::ALL (< 5) as the cached u8")]
pub fn auto_tier() -> Result<Tier, QuantError> {
    use core::sync::atomic::Ordering;
    match AUTO.load(Ordering::Relaxed) {
        0 => {}
        FAILED => return decide(),
        code => {
            if let Some(&t) = Tier::ALL.get(usize::from(code - 1)) {
                return Ok(t);
            }
        }
    }
    let result = decide();
    let code = match result {
        Ok(t) => Tier::ALL.iter().position(|&x| x == t).map_or(FAILED, |i| i as u8 + 1),
        Err(_) => FAILED,
    };
    AUTO.store(code, Ordering::Relaxed);
    result
}

fn decide() -> Result<Tier, QuantError> {
    match requested_tier()? {
        Some(t) => t.require(),
        None => Ok(best_tier()),
    }
}

/// Whether this CPU has `feature` (a `/proc/cpuinfo` name from [`Tier::features`], or
/// `avx512_vbmi`, which the `avx512vnni` tier's decode kernel uses where present: `vpermb`).
#[must_use]
pub fn has_feature(feature: &str) -> bool {
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    {
        extern crate std;
        match feature {
            "avx2" => std::is_x86_feature_detected!("avx2"),
            "fma" => std::is_x86_feature_detected!("fma"),
            "avx512f" => std::is_x86_feature_detected!("avx512f"),
            "avx512bw" => std::is_x86_feature_detected!("avx512bw"),
            "avx512vl" => std::is_x86_feature_detected!("avx512vl"),
            "avx512_vnni" => std::is_x86_feature_detected!("avx512vnni"),
            "avx_vnni" => std::is_x86_feature_detected!("avxvnni"),
            "avx512_vbmi" => std::is_x86_feature_detected!("avx512vbmi"),
            "amx_tile" | "amx_int8" => amx::usable(),
            _ => false,
        }
    }
    #[cfg(all(target_arch = "x86_64", not(feature = "std")))]
    {
        match feature {
            "avx2" => cfg!(target_feature = "avx2"),
            "fma" => cfg!(target_feature = "fma"),
            "avx512f" => cfg!(target_feature = "avx512f"),
            "avx512bw" => cfg!(target_feature = "avx512bw"),
            "avx512vl" => cfg!(target_feature = "avx512vl"),
            "avx512_vnni" => cfg!(target_feature = "avx512vnni"),
            "avx_vnni" => cfg!(target_feature = "avxvnni"),
            "avx512_vbmi" => cfg!(target_feature = "avx512vbmi"),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = feature;
        false
    }
}

/// AMX detection on Linux: `cpuid`, `XCR0`, and the kernel's permission for the tile data.
#[cfg(all(target_arch = "x86_64", target_os = "linux", feature = "std"))]
mod amx {
    use core::sync::atomic::{AtomicU8, Ordering};

    /// 0: not asked yet; 1: usable; 2: not usable.
    static STATE: AtomicU8 = AtomicU8::new(0);

    /// Whether this process may run AMX-INT8 instructions (asked once, then cached).
    pub(super) fn usable() -> bool {
        match STATE.load(Ordering::Relaxed) {
            1 => true,
            2 => false,
            _ => {
                let ok = detect();
                STATE.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
                ok
            }
        }
    }

    fn detect() -> bool {
        use core::arch::x86_64::__cpuid_count;
        // CPUID.(EAX=7, ECX=0): EDX bit 24 AMX-TILE, bit 25 AMX-INT8; CPUID.1: ECX bit 27
        // OSXSAVE (XGETBV is allowed).
        let leaf7 = __cpuid_count(7, 0);
        let leaf1 = __cpuid_count(1, 0);
        if leaf7.edx >> 24 & 1 == 0 || leaf7.edx >> 25 & 1 == 0 || leaf1.ecx >> 27 & 1 == 0 {
            return false;
        }
        // SAFETY: OSXSAVE is set (checked above), so XGETBV(0) is a valid instruction.
        let xcr0 = unsafe { xgetbv0() };
        // XTILECFG (bit 17) and XTILEDATA (bit 18) enabled by the OS.
        if xcr0 >> 17 & 3 != 3 {
            return false;
        }
        request_tile_data()
    }

    /// # Safety
    /// The CPU supports XGETBV (CPUID.1:ECX.OSXSAVE).
    #[target_feature(enable = "xsave")]
    unsafe fn xgetbv0() -> u64 {
        // SAFETY: the caller checked OSXSAVE.
        unsafe { core::arch::x86_64::_xgetbv(0) }
    }

    /// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: true when granted (Linux 5.16+).
    fn request_tile_data() -> bool {
        const SYS_ARCH_PRCTL: i64 = 158;
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        let ret: i64;
        // SAFETY: the arch_prctl system call with two integer arguments; it reads and writes
        // no memory of ours. `syscall` clobbers rcx and r11, declared below.
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret == 0
    }
}

/// AMX detection where it is not supported (see the module docs): never usable.
#[cfg(all(target_arch = "x86_64", not(all(target_os = "linux", feature = "std"))))]
mod amx {
    /// Always false here.
    #[allow(dead_code)]
    pub(super) fn usable() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dispatch!` names each available tier's own type.
    #[test]
    fn dispatch_names_each_tiers_type() {
        for t in Tier::ALL.into_iter().filter(|t| t.is_available()) {
            assert_eq!(crate::dispatch!(t, K => K::TIER), t);
        }
    }

    #[test]
    fn names_round_trip() {
        for t in Tier::ALL {
            assert_eq!(Tier::from_name(t.name()), Some(t));
        }
        assert_eq!(Tier::from_name(" AVX512VNNI "), Some(Tier::Avx512Vnni));
        assert_eq!(Tier::from_name("avx3"), None);
    }

    #[test]
    fn portable_always_runs_and_tiers_are_ordered() {
        assert_eq!(Tier::Portable.missing(), None);
        assert_eq!(KernelChoice::Portable.resolve(), Ok(Tier::Portable));
        // A tier is available only if every lower x86 tier's features are too (AVX-512 VNNI
        // and AVX-VNNI both include AVX2 + FMA).
        for t in [Tier::AvxVnni, Tier::Avx512Vnni, Tier::Amx] {
            if t.is_available() {
                assert!(Tier::Avx2.is_available());
            }
        }
        if Tier::Amx.is_available() {
            assert!(Tier::Avx512Vnni.is_available());
        }
        assert!(best_tier().is_available());
    }

    /// On a CPU without AVX2 (whatever this one has), asking for AVX2 or anything above it is an
    /// error naming the first missing feature, never a fallback; on one with AVX2 but no FMA,
    /// FMA is named.
    #[test]
    fn asking_for_a_tier_a_cpu_lacks_names_the_feature() {
        let no_avx2 = |f: &str| f != "avx2";
        assert_eq!(Tier::Portable.require_on(no_avx2), Ok(Tier::Portable));
        for t in [Tier::Avx2, Tier::AvxVnni, Tier::Avx512Vnni, Tier::Amx] {
            assert_eq!(t.require_on(no_avx2), Err(QuantError::KernelUnavailable { kernel: t.name(), missing: "avx2" }));
        }
        let no_fma = |f: &str| f != "fma";
        assert_eq!(
            Tier::Avx2.require_on(no_fma),
            Err(QuantError::KernelUnavailable { kernel: "avx2", missing: "fma" })
        );
        let no_amx = |f: &str| !f.starts_with("amx");
        assert_eq!(Tier::Avx512Vnni.require_on(no_amx), Ok(Tier::Avx512Vnni));
        assert_eq!(
            Tier::Amx.require_on(no_amx),
            Err(QuantError::KernelUnavailable { kernel: "amx", missing: "amx_tile" })
        );
    }

    #[test]
    fn an_unavailable_tier_is_an_error_naming_the_feature() {
        for t in Tier::ALL {
            match t.missing() {
                None => assert_eq!(t.require(), Ok(t)),
                Some(f) => {
                    assert!(t.features().contains(&f));
                    assert_eq!(t.require(), Err(QuantError::KernelUnavailable { kernel: t.name(), missing: f }));
                    assert_eq!(
                        KernelChoice::of(t).resolve(),
                        Err(QuantError::KernelUnavailable { kernel: t.name(), missing: f })
                    );
                }
            }
        }
    }
}
