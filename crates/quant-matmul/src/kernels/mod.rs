//! Micro-kernels, one per CPU tier, and the run-time choice between them.
//!
//! **The kernel is the unit of extension.** Each micro-kernel declares its own shape as
//! associated constants of [`MicroKernel`]: its tile (`MR` rows by `NR` columns), its depth
//! grouping (`GROUP`: pairs for `vpmaddwd`, quads for `vpdpbusd`), its blocking (`MC`, `NC`,
//! `KC`) and so its packed layouts. The driver, the packing and the epilogue
//! ([`crate::gemm`]) are generic over it and monomorphised per kernel; adding an ISA is one new
//! file under `kernels/<arch>/` and one line in [`dispatch!`].
//!
//! | tier | file | tile | depth | inner instruction | exact because |
//! |---|---|---|---|---|---|
//! | `portable` | `portable.rs` | 4 x 16 | quads | plain Rust (`u8 · i8` quads) | `i32` sums below the chunk bound |
//! | `avx2` | `x86_64/avx2.rs` | 6 x 16 | pairs | `vpmaddwd` (ymm) | `i16 · i16` pair sums fit `i32` |
//! | `avxvnni` | `x86_64/avxvnni.rs` | 6 x 16 | quads | `vpdpbusd` (ymm, VEX) | no `i16` step: four `u8 · i8` products into `i32` |
//! | `avx512vnni` | `x86_64/avx512.rs` | 12 x 32 | quads | `vpdpbusd` (zmm) | as above |
//! | `amx` | `x86_64/amx.rs` | 32 x 32 | quads (row blocks) | `tdpbusd` (2 x 2 tiles of 16 x 16) | as above, in `i32` tile elements |
//!
//! Quad kernels multiply unsigned bytes of A by signed bytes of B; `i8` activations are
//! shifted by +128 while A is packed and the shift is corrected like a zero point
//! (`A - za = (A + 128) - (za + 128)`), so both activation types run the same kernel.
//!
//! **Layouts.** A kernel's packed B layout is `(GROUP, NR)`: panels of `NR` columns, depth in
//! groups of `GROUP` rows, bytes `(g * NR + c) * GROUP + t` holding `b[GROUP * g + t][c]`.
//! [`crate::PackedB`] records the layout it holds; a kernel refuses weights packed in another
//! (`QuantError::PackedForOtherKernel`).
//!
//! **The chunk bound.** A kernel's raw sums `Σ a·b` are exact in `i32` while
//! `depth · max|a| · max|b| <= i32::MAX`; [`MicroKernel::chunk_groups`] is that depth in
//! groups, and the driver sums longer depths chunk by chunk in `i64`.
//!
//! The tier is chosen by `quant_traits::cpu` (`QUANT_KERNEL`, cached); a tier this CPU lacks
//! is an error, never a silent fallback.
//!
//! **A new architecture** (say aarch64 with `sdot` / `i8mm`): a `Tier` variant and its features
//! in `quant_traits::cpu`, a file `kernels/aarch64/<tier>.rs` implementing [`MicroKernel`]
//! (quads of `i8 · i8` fit `sdot`; a `u8` operand would shift like the quad kernels here), and
//! its line in [`dispatch!`]; nothing in the driver, packing or epilogue changes.

pub(crate) mod portable;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

use core::marker::PhantomData;

pub use quant_traits::cpu::{KernelChoice, Tier};

/// The widest tile any kernel has: buffers for one tile are sized by these.
pub(crate) const MAX_MR: usize = 32;
/// See [`MAX_MR`].
pub(crate) const MAX_NR: usize = 32;

/// How a kernel's packed A words hold the depth.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum AWords {
    /// Two `i16` per `i32` word: `(a[2p], a[2p+1])`, low half first (`vpmaddwd`).
    Pairs,
    /// Four `u8` per word, `a[4q]` in the lowest byte; `i8` activations shifted by +128
    /// (`vpdpbusd`).
    Quads,
    /// Quads as [`AWords::Quads`], but a panel holds the depth in blocks of 16 quads and each
    /// row's block is contiguous (64 bytes: one row of an AMX tile). Word
    /// `b * 16 * MR + r * w + i` holds row `r`'s quad `16 b + i`, `w` the block's width (16,
    /// or what is left in the last block). Runs of depth must start on a block.
    QuadRows,
}

/// The contract every micro-kernel implements.
///
/// Packed panels (see [`crate::gemm`]'s `pack` module):
/// * A: a panel of `MR` rows is `kg * MR` words; word `g * MR + r` holds row `r`'s group `g`
///   ([`AWords`]). Rows past the matrix are zero.
/// * B: a panel of `NR` columns is `kg * NR * GROUP` bytes; byte `(g * NR + c) * GROUP + t`
///   holds `b[GROUP * g + t][c]`. Columns past the matrix and depths past `K` are zero.
pub(crate) trait MicroKernel {
    /// The tier this kernel is written for.
    const TIER: Tier;
    /// Rows of a tile.
    const MR: usize;
    /// Columns of a tile.
    const NR: usize;
    /// Depth values per group: 2 (pairs) or 4 (quads).
    const GROUP: usize;
    /// How A words hold a group.
    const A_WORDS: AWords;
    /// Rows of A packed at a time (one row block, all of its depth).
    const MC: usize;
    /// Columns of unpacked B packed at a time.
    const NC: usize;
    /// Depth groups one tile runs before its sums are folded into `i64`, at most: the chunk
    /// bound caps it further ([`MicroKernel::chunk_groups`]).
    const KC: usize;
    /// The packed B layout's name, as errors report it.
    const LAYOUT: &'static str;
    /// Runs of depth start on multiples of this many groups (a kernel whose packed A is
    /// blocked along the depth, as AMX's row blocks of 16 quads); 1 for the others.
    const RUN_GROUPS: usize = 1;

    /// The largest depth, in groups, whose raw sums are exact in `i32` when A's values are at
    /// most `a_max` in magnitude (B's at most 128): `i32::MAX / (a_max · 128)` values, rounded
    /// down to whole groups, capped at `KC`, and rounded down to whole runs of `RUN_GROUPS`.
    fn chunk_groups(a_max: u32) -> usize {
        let per = u64::from(a_max.max(1)) * 128;
        let depth = usize::try_from(i32::MAX as u64 / per).unwrap_or(usize::MAX);
        let groups = (depth / Self::GROUP).clamp(1, Self::KC);
        (groups / Self::RUN_GROUPS * Self::RUN_GROUPS).max(Self::RUN_GROUPS)
    }

    /// `tile[r * NR + c] = Σ_g Σ_t a(r, g, t) · b[(g * NR + c) * GROUP + t]` over `kg` groups:
    /// the raw `MR x NR` tile. Only rows `< rows` need be right (a kernel may skip the others).
    /// `ahead` is memory the caller reads next (the next B panel, or empty): a kernel may
    /// prefetch it; it does not change the result.
    ///
    /// # Safety
    /// `a` holds `kg * MR` words, `b` `kg * NR * GROUP` bytes, `tile` `MR * NR` words; the CPU
    /// has the kernel's tier; the caller keeps `kg` within [`MicroKernel::chunk_groups`].
    unsafe fn tile(rows: usize, kg: usize, a: &[i32], b: &[i8], ahead: &[i8], tile: &mut [i32]);

    /// The same for one row of A (`a` holds `kg` words, `out` `NR` words): the `M = 1` path,
    /// which streams the packed weights once.
    ///
    /// # Safety
    /// As [`MicroKernel::tile`], with `a` holding `kg` words.
    unsafe fn row(kg: usize, a: &[i32], b: &[i8], out: &mut [i32]);

    /// Pair kernels only: the 7-bit tile over `kq` depth quads (A in [`AWords::Quads`] with
    /// every byte `<= 127`, B regrouped from this kernel's pair panels into quads of `NR`
    /// columns by `pack::quads_from_pairs`). Quad kernels never get this call (their normal
    /// path already takes `u8` quads), so the default forwards to [`MicroKernel::tile`].
    ///
    /// # Safety
    /// `a` holds `kq * MR` words with every byte `<= 127`, `b` `kq * NR * 4` bytes; the CPU
    /// has the kernel's tier.
    unsafe fn tile_u7(rows: usize, kq: usize, a: &[i32], b: &[i8], ahead: &[i8], tile: &mut [i32]) {
        // SAFETY: forwarded; for a quad kernel the quad layout is its own.
        unsafe { Self::tile(rows, kq, a, b, ahead, tile) }
    }
}

/// Proof that this CPU runs kernel `K`: made only by [`Cpu::check`], it lets the safe
/// wrappers below call the kernel's `unsafe` functions.
pub(crate) struct Cpu<K>(PhantomData<fn() -> K>);

impl<K> Clone for Cpu<K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K> Copy for Cpu<K> {}

impl<K: MicroKernel> Cpu<K> {
    /// The proof, when the CPU has `K`'s tier.
    ///
    /// # Errors
    /// [`quant_traits::QuantError::KernelUnavailable`] naming the missing feature.
    pub(crate) fn check() -> Result<Self, quant_traits::QuantError> {
        K::TIER.require().map(|_| Cpu(PhantomData))
    }

    /// Runs `K::tile` after checking the panel lengths.
    #[inline]
    pub(crate) fn tile(self, rows: usize, kg: usize, a: &[i32], b: &[i8], ahead: &[i8], tile: &mut [i32]) {
        assert!(
            a.len() >= kg * K::MR && b.len() >= kg * K::NR * K::GROUP && tile.len() >= K::MR * K::NR,
            "packed panels too short"
        );
        // SAFETY: lengths asserted above; `self` proves the CPU has the tier; the driver keeps
        // `kg` within the chunk bound.
        unsafe { K::tile(rows, kg, a, b, ahead, tile) }
    }

    /// Runs `K::tile_u7` after checking the panel lengths (the caller checked the 7-bit bound).
    #[inline]
    pub(crate) fn tile_u7(self, rows: usize, kq: usize, a: &[i32], b: &[i8], ahead: &[i8], tile: &mut [i32]) {
        assert!(
            a.len() >= kq * K::MR && b.len() >= kq * K::NR * 4 && tile.len() >= K::MR * K::NR,
            "packed panels too short"
        );
        // SAFETY: as above; the driver checked every A value is in 0..=127.
        unsafe { K::tile_u7(rows, kq, a, b, ahead, tile) }
    }

    /// Runs `K::row` after checking the panel lengths.
    #[inline]
    pub(crate) fn row(self, kg: usize, a: &[i32], b: &[i8], out: &mut [i32]) {
        assert!(a.len() >= kg && b.len() >= kg * K::NR * K::GROUP && out.len() >= K::NR, "packed panels too short");
        // SAFETY: lengths asserted above; `self` proves the CPU has the tier.
        unsafe { K::row(kg, a, b, out) }
    }
}

/// `dispatch!(tier, K => expr)`: evaluates `expr` with the type alias `K` naming the tier's
/// micro-kernel. The one table of kernels: a new tier is one line here.
macro_rules! dispatch {
    ($tier:expr, $k:ident => $body:expr) => {{
        #[allow(unreachable_patterns)]
        match $tier {
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::Tier::Amx => {
                type $k = $crate::kernels::x86_64::amx::Amx;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::Tier::Avx512Vnni => {
                type $k = $crate::kernels::x86_64::avx512::Avx512Vnni;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::Tier::AvxVnni => {
                type $k = $crate::kernels::x86_64::avxvnni::AvxVnni;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::Tier::Avx2 => {
                type $k = $crate::kernels::x86_64::avx2::Avx2;
                $body
            }
            // Portable, and any tier this architecture has no kernel for (such a tier is never
            // available here, so `Tier::require` refused it before we got here).
            _ => {
                type $k = $crate::kernels::portable::Portable;
                $body
            }
        }
    }};
}
pub(crate) use dispatch;

/// The name of the kernel tier [`KernelChoice::Auto`] runs in this process (`"avx512vnni"`,
/// `"avxvnni"`, `"avx2"` or `"portable"`).
///
/// # Errors
/// When `QUANT_KERNEL` names a tier this CPU lacks ([`quant_traits::QuantError::KernelUnavailable`])
/// or no tier at all ([`quant_traits::QuantError::UnknownKernel`]).
pub fn selected_kernel() -> Result<&'static str, quant_traits::QuantError> {
    quant_traits::cpu::auto_tier().map(Tier::name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel's constants fit the driver's buffers and its groups.
    #[test]
    fn kernel_shapes_fit_the_buffers() {
        for tier in Tier::ALL {
            let (mr, nr, group, a_words) = dispatch!(tier, K => (K::MR, K::NR, K::GROUP, K::A_WORDS));
            assert!(mr <= MAX_MR && nr <= MAX_NR && nr % 16 == 0, "{tier}");
            assert!(matches!((group, a_words), (2, AWords::Pairs) | (4, AWords::Quads | AWords::QuadRows)), "{tier}");
        }
    }

    /// The chunk bound for `u8 x i8` (`255 · 128` per product) is 65 793 values.
    #[test]
    fn chunk_bound_in_groups() {
        assert_eq!(portable::Portable::chunk_groups(255), 65_793 / 4);
        assert_eq!(portable::Portable::chunk_groups(128), 131_071 / 4);
        // AMX: whole blocks of 16 quads (16 448 quads is already 1 028 blocks).
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(x86_64::amx::Amx::chunk_groups(255), 16_448);
            assert_eq!(x86_64::amx::Amx::chunk_groups(128), 131_071 / 4 / 16 * 16);
        }
    }
}
