//! Micro-kernels and the run-time choice between them.
//!
//! A micro-kernel multiplies one packed A panel (`MR` rows) by one packed B panel (`NR`
//! columns) over `kp` depth pairs and returns the `MR x NR` tile of exact `i32` sums (the
//! caller guarantees that `kp` is small enough for `i32`). Every kernel uses the same packed
//! layout ([`crate::gemm`]'s `pack` module), so the driver is shared.
//!
//! The kernel is chosen once per process and cached: AVX2 when the CPU has it (detected at
//! run time, so a default `cargo build` on x86-64 uses it), otherwise the portable one.
//! `QUANT_KERNEL=portable` (or `avx2`) in the environment, or [`KernelChoice`] in the API,
//! forces one.

pub(crate) mod portable;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

/// Rows of a tile.
pub(crate) const MR: usize = 6;
/// Columns of a tile.
pub(crate) const NR: usize = 16;

/// The contract every micro-kernel implements (the packed layouts are in `gemm::pack`).
pub(crate) trait MicroKernel {
    /// The kernel's name, as reported by [`selected_kernel`].
    const NAME: &'static str;

    /// `tile[r * NR + c] = sum over p < kp of lo(a[p*MR + r]) * b[(p*NR + c)*2]
    /// + hi(a[p*MR + r]) * b[(p*NR + c)*2 + 1]`: an `MR x NR` tile over `kp` depth pairs.
    ///
    /// # Safety
    /// `a` must hold `kp * MR` words and `b` `kp * NR * 2` bytes, and the CPU must support the
    /// kernel's instruction set. The caller guarantees that no sum overflows `i32`.
    unsafe fn tile(kp: usize, a: &[i32], b: &[i8], tile: &mut [i32; MR * NR]);

    /// The 7-bit path over `kq` depth quads: A in quads (`a[q * MR + r]` holds four `u8` of
    /// row `r`, each `<= 127`), B in quad panels (bytes `(q * NR + c) * 4 .. + 4` hold column
    /// `c` at depths `4q .. 4q + 4`, see `gemm::pack::quads_from_pairs`); the same tile. Exact
    /// because `vpmaddubsw`'s `i16` pair sums cannot saturate when `a <= 127`.
    ///
    /// `ahead` is memory the caller will read next (the next B panel, or empty): a kernel
    /// may prefetch it while it runs. It does not change the result.
    ///
    /// # Safety
    /// `a` must hold `kq * MR` words and `b` `kq * NR * 4` bytes, every A byte must be
    /// `<= 127`, and the CPU must support the kernel's instruction set.
    unsafe fn tile_u7(kq: usize, a: &[i32], b: &[i8], ahead: &[i8], tile: &mut [i32; MR * NR]);

    /// The same for a single row of A (`a` holds `kp` words): the `M = 1` path.
    ///
    /// # Safety
    /// As [`MicroKernel::tile`], with `a` holding `kp` words.
    unsafe fn row(kp: usize, a: &[i32], b: &[i8], out: &mut [i32; NR]);
}

/// Which kernel to run.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum KernelChoice {
    /// The best the CPU supports, unless `QUANT_KERNEL` says otherwise (the default).
    #[default]
    Auto,
    /// The portable kernel (plain Rust; always available; the reference).
    Portable,
    /// The x86-64 AVX2 kernel (`vpmaddwd`). Falls back to portable where AVX2 is missing.
    Avx2,
}

/// A kernel that can actually run here.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kernel::Portable => portable::Portable::NAME,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => x86_64::avx2::Avx2::NAME,
        }
    }
}

fn best_available() -> Kernel {
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    {
        if std::is_x86_feature_detected!("avx2") {
            return Kernel::Avx2;
        }
    }
    #[cfg(all(target_arch = "x86_64", not(feature = "std"), target_feature = "avx2"))]
    {
        return Kernel::Avx2;
    }
    #[allow(unreachable_code)]
    Kernel::Portable
}

fn resolve(choice: KernelChoice) -> Kernel {
    match choice {
        KernelChoice::Portable => Kernel::Portable,
        KernelChoice::Avx2 => best_available(),
        KernelChoice::Auto => match env_choice() {
            Some(KernelChoice::Portable) => Kernel::Portable,
            _ => best_available(),
        },
    }
}

#[cfg(feature = "std")]
fn env_choice() -> Option<KernelChoice> {
    match std::env::var("QUANT_KERNEL").ok()?.to_ascii_lowercase().as_str() {
        "portable" => Some(KernelChoice::Portable),
        "avx2" => Some(KernelChoice::Avx2),
        _ => None,
    }
}

#[cfg(not(feature = "std"))]
fn env_choice() -> Option<KernelChoice> {
    None
}

/// The automatic choice, computed once (0 = not yet, 1 = portable, 2 = avx2).
static AUTO: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

pub(crate) fn kernel_for(choice: KernelChoice) -> Kernel {
    use core::sync::atomic::Ordering;
    if choice != KernelChoice::Auto {
        return resolve(choice);
    }
    match AUTO.load(Ordering::Relaxed) {
        1 => Kernel::Portable,
        #[cfg(target_arch = "x86_64")]
        2 => Kernel::Avx2,
        _ => {
            let k = resolve(KernelChoice::Auto);
            let code = match k {
                Kernel::Portable => 1,
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => 2,
            };
            AUTO.store(code, Ordering::Relaxed);
            k
        }
    }
}

/// The name of the kernel [`KernelChoice::Auto`] runs in this process: `"avx2"` or
/// `"portable"`.
#[must_use]
pub fn selected_kernel() -> &'static str {
    kernel_for(KernelChoice::Auto).name()
}

/// Runs `kernel`'s tile function.
#[inline]
pub(crate) fn run_tile(kernel: Kernel, kp: usize, a: &[i32], b: &[i8], tile: &mut [i32; MR * NR]) {
    assert!(a.len() >= kp * MR && b.len() >= kp * NR * 2, "packed panels too short");
    match kernel {
        // SAFETY: the panel lengths are asserted above; the portable kernel needs no CPU feature.
        Kernel::Portable => unsafe { portable::Portable::tile(kp, a, b, tile) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: lengths asserted above; `Kernel::Avx2` is only produced by `best_available`,
        // after AVX2 was detected at run time (or enabled at compile time).
        Kernel::Avx2 => unsafe { x86_64::avx2::Avx2::tile(kp, a, b, tile) },
    }
}

/// Runs `kernel`'s 7-bit tile function over `kq` quads (A bytes `<= 127`, checked by the
/// caller).
#[inline]
pub(crate) fn run_tile_u7(kernel: Kernel, kq: usize, a: &[i32], b: &[i8], ahead: &[i8], tile: &mut [i32; MR * NR]) {
    assert!(a.len() >= kq * MR && b.len() >= kq * NR * 4, "packed panels too short");
    match kernel {
        // SAFETY: lengths asserted above; the caller checked the 7-bit bound; no CPU feature.
        Kernel::Portable => unsafe { portable::Portable::tile_u7(kq, a, b, ahead, tile) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; `Kernel::Avx2` exists only once AVX2 was detected.
        Kernel::Avx2 => unsafe { x86_64::avx2::Avx2::tile_u7(kq, a, b, ahead, tile) },
    }
}

/// Runs `kernel`'s single-row function.
#[inline]
pub(crate) fn run_row(kernel: Kernel, kp: usize, a: &[i32], b: &[i8], out: &mut [i32; NR]) {
    assert!(a.len() >= kp && b.len() >= kp * NR * 2, "packed panels too short");
    match kernel {
        // SAFETY: the lengths are asserted above; the portable kernel needs no CPU feature.
        Kernel::Portable => unsafe { portable::Portable::row(kp, a, b, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: lengths asserted above; `Kernel::Avx2` exists only once AVX2 was detected.
        Kernel::Avx2 => unsafe { x86_64::avx2::Avx2::row(kp, a, b, out) },
    }
}
