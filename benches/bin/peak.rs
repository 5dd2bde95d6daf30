//! The peak of one core's GEMM inner instruction with register-resident operands: the ceiling
//! each GEMM figure is shown against (as a percentage).
//!
//! Independent accumulator chains (more than latency times throughput needs), written in
//! `asm!` so the compiler cannot hoist or fold the loop-invariant multiplies. Operations are
//! counted as the GEMM counts them: two per multiply-add.
//!
//! | tier | loop body | operations per instruction |
//! |---|---|---|
//! | `avx2` | `vpmaddwd` + `vpaddd` (ymm), 8 chains | 32 (16 `i16` multiply-adds) |
//! | `avxvnni` | `{vex} vpdpbusd` (ymm), 12 chains | 64 (32 `u8 · i8` multiply-adds) |
//! | `avx512vnni` | `vpdpbusd` (zmm), 16 chains | 128 (64 multiply-adds) |
//! | `amx` | `tdpbusd` (16 x 16 tiles), 6 chains | 32 768 (16 · 16 · 64 multiply-adds) |

use quant_traits::cpu::Tier;

/// The inner instruction of a tier's GEMM kernel, as the bench names it.
pub fn instruction(tier: Tier) -> &'static str {
    match tier {
        Tier::Amx => "tdpbusd tiles",
        Tier::Avx512Vnni => "vpdpbusd zmm",
        Tier::AvxVnni => "vpdpbusd ymm",
        Tier::Avx2 => "vpmaddwd+vpaddd ymm",
        _ => "none (portable)",
    }
}

/// Runs `iters` iterations of the tier's peak loop; returns the operations done, or `None` for
/// a tier with no loop here (portable, or not x86-64).
pub fn run(tier: Tier, iters: u64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if tier.missing().is_some() {
            return None;
        }
        match tier {
            // SAFETY: the tier's features were checked just above; the loop touches only
            // registers.
            Tier::Avx2 => Some(unsafe { x86::avx2(iters) } as f64 * 8.0 * 32.0),
            // SAFETY: as above.
            Tier::AvxVnni => Some(unsafe { x86::avxvnni(iters) } as f64 * 12.0 * 64.0),
            // SAFETY: as above.
            Tier::Avx512Vnni => Some(unsafe { x86::avx512(iters) } as f64 * 16.0 * 128.0),
            // SAFETY: as above (the AMX tier is available only once the OS granted the tiles).
            Tier::Amx => Some(unsafe { x86::amx(iters) } as f64 * 6.0 * 32768.0),
            _ => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (tier, iters);
        None
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::asm;

    /// # Safety
    /// AVX2 present.
    #[target_feature(enable = "avx2")]
    pub unsafe fn avx2(iters: u64) -> u64 {
        // SAFETY: registers only; every register written is declared.
        unsafe {
            asm!(
                "2:",
                "vpmaddwd ymm8, ymm14, ymm15", "vpaddd ymm0, ymm0, ymm8",
                "vpmaddwd ymm9, ymm14, ymm15", "vpaddd ymm1, ymm1, ymm9",
                "vpmaddwd ymm10, ymm14, ymm15", "vpaddd ymm2, ymm2, ymm10",
                "vpmaddwd ymm11, ymm14, ymm15", "vpaddd ymm3, ymm3, ymm11",
                "vpmaddwd ymm12, ymm14, ymm15", "vpaddd ymm4, ymm4, ymm12",
                "vpmaddwd ymm13, ymm14, ymm15", "vpaddd ymm5, ymm5, ymm13",
                "vpmaddwd ymm8, ymm15, ymm14", "vpaddd ymm6, ymm6, ymm8",
                "vpmaddwd ymm9, ymm15, ymm14", "vpaddd ymm7, ymm7, ymm9",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) iters.max(1) => _,
                out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _,
                out("ymm5") _, out("ymm6") _, out("ymm7") _, out("ymm8") _, out("ymm9") _,
                out("ymm10") _, out("ymm11") _, out("ymm12") _, out("ymm13") _,
                options(nostack, nomem),
            );
        }
        iters.max(1)
    }

    /// # Safety
    /// AVX2 and AVX-VNNI present.
    #[target_feature(enable = "avx2,avxvnni")]
    pub unsafe fn avxvnni(iters: u64) -> u64 {
        // SAFETY: registers only; every register written is declared.
        unsafe {
            asm!(
                "2:",
                "{{vex}} vpdpbusd ymm0, ymm14, ymm15", "{{vex}} vpdpbusd ymm1, ymm14, ymm15",
                "{{vex}} vpdpbusd ymm2, ymm14, ymm15", "{{vex}} vpdpbusd ymm3, ymm14, ymm15",
                "{{vex}} vpdpbusd ymm4, ymm14, ymm15", "{{vex}} vpdpbusd ymm5, ymm14, ymm15",
                "{{vex}} vpdpbusd ymm6, ymm14, ymm15", "{{vex}} vpdpbusd ymm7, ymm14, ymm15",
                "{{vex}} vpdpbusd ymm8, ymm14, ymm15", "{{vex}} vpdpbusd ymm9, ymm14, ymm15",
                "{{vex}} vpdpbusd ymm10, ymm14, ymm15", "{{vex}} vpdpbusd ymm11, ymm14, ymm15",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) iters.max(1) => _,
                out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _,
                out("ymm5") _, out("ymm6") _, out("ymm7") _, out("ymm8") _, out("ymm9") _,
                out("ymm10") _, out("ymm11") _,
                options(nostack, nomem),
            );
        }
        iters.max(1)
    }

    /// # Safety
    /// AVX-512 F and VNNI present.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn avx512(iters: u64) -> u64 {
        // SAFETY: registers only; every register written is declared.
        unsafe {
            asm!(
                "2:",
                "vpdpbusd zmm0, zmm30, zmm31", "vpdpbusd zmm1, zmm30, zmm31",
                "vpdpbusd zmm2, zmm30, zmm31", "vpdpbusd zmm3, zmm30, zmm31",
                "vpdpbusd zmm4, zmm30, zmm31", "vpdpbusd zmm5, zmm30, zmm31",
                "vpdpbusd zmm6, zmm30, zmm31", "vpdpbusd zmm7, zmm30, zmm31",
                "vpdpbusd zmm8, zmm30, zmm31", "vpdpbusd zmm9, zmm30, zmm31",
                "vpdpbusd zmm10, zmm30, zmm31", "vpdpbusd zmm11, zmm30, zmm31",
                "vpdpbusd zmm12, zmm30, zmm31", "vpdpbusd zmm13, zmm30, zmm31",
                "vpdpbusd zmm14, zmm30, zmm31", "vpdpbusd zmm15, zmm30, zmm31",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) iters.max(1) => _,
                out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _,
                out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _,
                out("zmm10") _, out("zmm11") _, out("zmm12") _, out("zmm13") _, out("zmm14") _,
                out("zmm15") _,
                options(nostack, nomem),
            );
        }
        iters.max(1)
    }

    /// The tile configuration: tiles 0..8, 16 rows of 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    /// # Safety
    /// AMX-INT8 present and the tile state granted by the OS.
    pub unsafe fn amx(iters: u64) -> u64 {
        let mut cfg = [0u8; 64];
        cfg[0] = 1; // palette 1
        for t in 0..8 {
            cfg[16 + 2 * t] = 64; // bytes per row
            cfg[48 + t] = 16; // rows
        }
        let cfg = TileConfig(cfg);
        // SAFETY: `ldtilecfg` reads the 64 bytes of `cfg`; the loop touches only tile
        // registers, which nothing else uses, and `tilerelease` returns them to their
        // initial state.
        unsafe {
            asm!(
                "ldtilecfg [{cfg}]",
                "tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3",
                "tilezero tmm4", "tilezero tmm5", "tilezero tmm6", "tilezero tmm7",
                "2:",
                "tdpbusd tmm0, tmm6, tmm7", "tdpbusd tmm1, tmm6, tmm7", "tdpbusd tmm2, tmm6, tmm7",
                "tdpbusd tmm3, tmm6, tmm7", "tdpbusd tmm4, tmm6, tmm7", "tdpbusd tmm5, tmm6, tmm7",
                "dec {n}",
                "jnz 2b",
                "tilerelease",
                cfg = in(reg) &cfg,
                n = inout(reg) iters.max(1) => _,
                options(nostack),
            );
        }
        iters.max(1)
    }
}
