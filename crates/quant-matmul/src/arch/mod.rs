//! The kernels, one module per CPU tier, each implementing both of this crate's kernel
//! traits for its tier's type (`quant_traits::cpu`): [`MicroKernel`] (the GEMM) and
//! [`decode::DecodeKernel`] (the decode product), chosen by the workspace's one
//! [`dispatch!`](quant_traits::dispatch). The kernels own their layouts: the GEMM's panels
//! are described by each kernel's constants, the decode product's in [`decode`], and the
//! packing moves that have faster forms on an architecture in [`pack`].
//!
//! **The kernel is the unit of extension.** Each micro-kernel declares its own shape as
//! associated constants of [`MicroKernel`]: its tile (`MR` rows by `NR` columns), its depth
//! grouping (`GROUP`: pairs for `vpmaddwd`, quads for `vpdpbusd`), its blocking (`MC`, `NC`,
//! `KC`) and so its packed layouts. The driver, the packing and the epilogue
//! ([`crate::gemm`]) are generic over it and monomorphised per kernel. Adding a tier is one new
//! module under `arch/<arch>/` implementing both traits, and its line in `dispatch!`.
//!
//! | tier | module | GEMM tile | depth | inner instruction | exact because | decode panels |
//! |---|---|---|---|---|---|---|
//! | `portable` | `portable.rs` | 4 x 16 | quads | plain Rust (`u8 · i8` quads) | `i32` sums below the chunk bound | the references |
//! | `avx2` | `x86_64/avx2.rs` | 6 x 16 | pairs | `vpmaddwd` (ymm) | `i16 · i16` pair sums fit `i32` | 8 channels, `vpmaddubsw` |
//! | `avxvnni` | `x86_64/avxvnni.rs` | 6 x 16 | quads | `vpdpbusd` (ymm, VEX) | no `i16` step: four `u8 · i8` products into `i32` | 8 channels, `vpdpbusd` |
//! | `avx512vnni` | `x86_64/avx512.rs` | 12 x 32 | quads | `vpdpbusd` (zmm) | as above | 16 channels, `vpdpbusd` (zmm) |
//! | `amx` | `x86_64/amx.rs` | 32 x 32 | quads (row blocks) | `tdpbusd` (2 x 2 tiles of 16 x 16) | as above, in `i32` tile elements | as `avx512vnni` |
//!
//! Quad kernels multiply unsigned bytes of A by signed bytes of B; `i8` activations are
//! shifted by +128 while A is packed and the shift is corrected like a zero point
//! (`A - za = (A + 128) - (za + 128)`), so both activation types run the same kernel.
//!
//! **Layouts.** A kernel's packed B layout is `(GROUP, NR)`: panels of `NR` columns, depth in
//! groups of `GROUP` rows, bytes `(g * NR + c) * GROUP + t` holding `b[GROUP * g + t][c]`.
//! [`crate::PackedB`] records the layout it holds; a kernel refuses weights packed in another
//! (`QuantError::PackedForOtherKernel`). [`crate::GroupWeights`] does the same for the decode
//! panels.
//!
//! **The chunk bound.** A kernel's raw sums `Σ a·b` are exact in `i32` while
//! `depth · max|a| · max|b| <= i32::MAX`; [`MicroKernel::chunk_groups`] is that depth in
//! groups, and the driver sums longer depths chunk by chunk in `i64`.
//!
//! The tier is chosen by `quant_traits::cpu` (`QUANT_KERNEL`, cached); a tier this CPU lacks
//! is an error, never a silent fallback.
//!
//! **A new architecture** (say aarch64 with `sdot` / `i8mm`): a `Tier` variant, its type and
//! its features in `quant_traits::cpu` with its line in `dispatch!`, and a module
//! `arch/aarch64/<tier>.rs` implementing [`MicroKernel`] (quads of `i8 · i8` fit `sdot`; a `u8`
//! operand would shift like the quad kernels here) and [`decode::DecodeKernel`]; nothing in the
//! drivers, packing or epilogue changes. The crates already build for aarch64 with the
//! portable tier (`cargo xtask check`).

pub(crate) mod decode;
pub(crate) mod pack;
pub(crate) mod portable;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

use core::marker::PhantomData;

use quant_traits::cpu::TierKernels;
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
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the AMX kernel's
    QuadRows,
}

/// Quads per row block of [`AWords::QuadRows`]: 64 bytes, one AMX tile row.
pub(crate) const QUAD_ROW_BLOCK: usize = 16;

/// Where a kernel applies the output stage.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Epilogue {
    /// In registers: the tile starts from the correction ([`Start::terms`]) and ends in the
    /// output stage ([`Finish`]), so C is written once per depth block.
    Registers,
    /// Partly after the tile: the accumulators cannot take the `f32` stage (AMX's live in tile
    /// registers, which only load and store), so tiles start from the correction and store
    /// `i32` sums into C, and [`MicroKernel::epilogue`] converts a whole column panel of a row
    /// block once its tiles are done (when those stores have long left the core). Such a
    /// kernel may also be given its start as a tile in memory ([`Start::load`]) the driver
    /// built once for a panel.
    Deferred,
}

/// The zero-point correction a tile starts from: `col[c] + row[r]`, plus
/// `x[r] · y[c]` for each rank-one term `(x, y)` in `mul`, in wrapping `i32`.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Terms {
    /// `NR` values (one per tile column, padded).
    pub(crate) col: *const i32,
    /// One value per tile row ([`TileIo::rows`] of them).
    pub(crate) row: *const i32,
    /// Rank-one terms: a value per row and a value per column (`NR`, padded).
    pub(crate) mul: [Option<(*const i32, *const i32)>; 2],
}

/// How a tile's accumulators start: the `i32` values at `load` (sums of earlier depth blocks),
/// or zero, plus `terms` when set.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Start {
    /// `(src, ld)`: element `(r, c)` at `src + r * ld + c`.
    pub(crate) load: Option<(*const i32, usize)>,
    /// The correction, added before the first product.
    pub(crate) terms: Option<Terms>,
}

impl Start {
    /// From zero: the tile ends as the raw sums.
    pub(crate) const ZERO: Start = Start { load: None, terms: None };
}

/// Where a tile's accumulators go.
#[derive(Copy, Clone, Debug)]
pub(crate) enum Finish {
    /// `dst[r * ld + c] = acc` (`i32`).
    I32 { dst: *mut i32, ld: usize },
    /// `dst[r * ld + c] = (acc as f64 * scale[c] + bias[c]) as f32`: the `f32` output stage
    /// in registers, each operation in `f64` and one rounding to `f32` (ties to even), the
    /// same operations as [`crate::gemm::output`]'s scalar stage. `scale` and `bias` hold
    /// `NR` values (padded).
    F32 { dst: *mut f32, ld: usize, scale: *const f64, bias: *const f64 },
}

/// One call's tile: which rows and columns are live, how it starts and where it goes. The
/// driver builds it from checked slices ([`crate::gemm::driver`]); the kernels read and write
/// only rows `< rows` and columns `< cols` through its pointers.
#[derive(Copy, Clone, Debug)]
pub(crate) struct TileIo {
    /// Live rows, `1..=MR` for a tile ([`MicroKernel::epilogue`] takes any number).
    pub(crate) rows: usize,
    /// Live columns, `1..=NR`.
    pub(crate) cols: usize,
    pub(crate) start: Start,
    pub(crate) finish: Finish,
}

impl TileIo {
    /// Rows `r .. r + n` of this tile as a tile of `n` rows (pointers moved to row `r`; valid
    /// to use whenever `r + n <= rows`).
    pub(crate) fn rows_from(&self, r: usize, n: usize) -> TileIo {
        let start = Start {
            load: self.start.load.map(|(src, ld)| (src.wrapping_add(r * ld), ld)),
            terms: self.start.terms.map(|t| Terms {
                row: t.row.wrapping_add(r),
                mul: t.mul.map(|m| m.map(|(x, y)| (x.wrapping_add(r), y))),
                ..t
            }),
        };
        let finish = match self.finish {
            Finish::I32 { dst, ld } => Finish::I32 { dst: dst.wrapping_add(r * ld), ld },
            Finish::F32 { dst, ld, scale, bias } => Finish::F32 { dst: dst.wrapping_add(r * ld), ld, scale, bias },
        };
        TileIo { rows: n, cols: self.cols, start, finish }
    }
}

/// The contract every micro-kernel implements.
///
/// Packed panels (see [`crate::gemm`]'s `pack` module):
/// * A: a panel of `MR` rows is `kg * MR` words; word `g * MR + r` holds row `r`'s group `g`
///   ([`AWords`]). Rows past the matrix are zero.
/// * B: a panel of `NR` columns is `kg * NR * GROUP` bytes; byte `(g * NR + c) * GROUP + t`
///   holds `b[GROUP * g + t][c]`. Columns past the matrix and depths past `K` are zero.
///
/// **Exactness.** Every step of a tile is arithmetic modulo `2^32` (`vpdpbusd`, `vpmaddwd`,
/// `vpaddd`, `vpmulld`'s low half, `tdpbusd` all wrap), so a tile's `i32` values equal the
/// true values modulo `2^32`. When the true corrected result fits `i32`, the tile's value is
/// that result, whatever the depth; the driver uses the correction in registers only then
/// (the depth is within [`crate::Operands::max_i32_depth`]). Beyond it, tiles start from zero,
/// run at most [`MicroKernel::chunk_groups`] deep (raw sums exact in `i32`), and the driver
/// carries them in `i64`.
pub(crate) trait MicroKernel: TierKernels {
    /// Rows of a tile.
    const MR: usize;
    /// Columns of a tile.
    const NR: usize;
    /// Depth values per group: 2 (pairs) or 4 (quads).
    const GROUP: usize;
    /// How A words hold a group.
    const A_WORDS: AWords;
    /// Rows of A packed at a time (one row block, all of its depth); a multiple of `MR`.
    const MC: usize;
    /// Columns of unpacked B packed at a time; a multiple of `NR`.
    const NC: usize;
    /// Depth groups per depth block: a tile runs this deep, then its sums wait in C for the
    /// next block. Chosen so that a B panel of a block (`KC · NR · GROUP` bytes) stays in L1
    /// while the row block's tiles use it; a multiple of `RUN_GROUPS`.
    const KC: usize;
    /// The packed B layout's name, as errors report it.
    const LAYOUT: &'static str;
    /// Runs of depth start on multiples of this many groups (a kernel whose packed A is
    /// blocked along the depth, as AMX's row blocks of 16 quads); 1 for the others.
    const RUN_GROUPS: usize = 1;
    /// Where the correction and the output stage run.
    const EPILOGUE: Epilogue = Epilogue::Registers;
    /// The order of a row block's tiles within a depth block: column panel after column panel,
    /// each B panel used by every row tile in turn (`false`), or, when `true` and the row block
    /// is at least as tall as the column block is wide, row tile after row tile, each A panel
    /// used by every column panel in turn (the tiles' stores then run along rows of C). The
    /// 7-bit path of a pair kernel always goes panel by panel (it regroups each B panel once
    /// for the row block).
    const ROWS_OUTER: bool = false;

    /// The largest depth, in groups, whose raw sums are exact in `i32` when A's values are at
    /// most `a_max` in magnitude (B's at most 128): `i32::MAX / (a_max · 128)` values, rounded
    /// down to whole groups and to whole runs of `RUN_GROUPS`.
    #[expect(clippy::as_conversions, reason = "the chunk bound's i32::MAX as u64")]
    fn chunk_groups(a_max: u32) -> usize {
        let per = u64::from(a_max.max(1)) * 128;
        let depth = usize::try_from(i32::MAX as u64 / per).unwrap_or(usize::MAX);
        let groups = (depth / Self::GROUP).max(1);
        (groups / Self::RUN_GROUPS * Self::RUN_GROUPS).max(Self::RUN_GROUPS)
    }

    /// Prepares the CPU for this kernel's tiles on the calling thread (AMX: loads the tile
    /// configuration); the driver calls it once per call and thread, through [`Session`].
    ///
    /// # Safety
    /// The CPU has the kernel's tier.
    unsafe fn begin() {}

    /// Undoes [`MicroKernel::begin`] (AMX: releases the tile state).
    ///
    /// # Safety
    /// As [`MicroKernel::begin`], after it on the same thread.
    unsafe fn end() {}

    /// One tile over `kg` groups: `acc[r][c] = start[r][c] + Σ_g Σ_t a(r, g, t) ·
    /// b[(g * NR + c) * GROUP + t]`, then `io.finish`. Only rows `< io.rows` and columns
    /// `< io.cols` are read from `start` and written. `ahead` is memory the caller reads next
    /// (the next B panel, or empty): a kernel may prefetch it; it does not change the result.
    ///
    /// # Safety
    /// `a` holds `kg * MR` words, `b` `kg * NR * GROUP` bytes; `io`'s pointers are valid for
    /// its rows and columns ([`TileIo`]); the CPU has the kernel's tier and [`Session`] began
    /// it.
    unsafe fn tile(kg: usize, a: &[i32], b: &[i8], ahead: &[i8], io: &TileIo);

    /// Applies `io` with no depth (`acc = start`, then `finish`) to `io.rows` rows, any number:
    /// the deferred epilogue of [`Epilogue::Deferred`] kernels (and the same arithmetic as a
    /// tile's start and finish for the others).
    ///
    /// # Safety
    /// As [`MicroKernel::tile`] for `io` (any `terms`, any `finish`).
    unsafe fn epilogue(io: &TileIo);

    /// The same for one row of A (`a` holds `kg` words, `out` `NR` words, raw sums): the
    /// `M = 1` path, which streams the packed weights once.
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
    /// `a` holds `kq * MR` words with every byte `<= 127`, `b` `kq * NR * 4` bytes; otherwise
    /// as [`MicroKernel::tile`].
    unsafe fn tile_u7(kq: usize, a: &[i32], b: &[i8], ahead: &[i8], io: &TileIo) {
        // SAFETY: forwarded; for a quad kernel the quad layout is its own.
        unsafe { Self::tile(kq, a, b, ahead, io) }
    }
}

/// Proof that this CPU runs kernel `K`: made only by [`Cpu::check`], it lets [`Session`] call
/// the kernel's `unsafe` functions.
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

    /// Begins the kernel on this thread ([`MicroKernel::begin`]); the session ends it when
    /// dropped.
    pub(crate) fn session(self) -> Session<K> {
        // SAFETY: `self` proves the CPU has the tier.
        unsafe { K::begin() };
        Session(PhantomData)
    }
}

/// Kernel `K` begun on this thread: the safe wrappers of its calls. Not `Send`: the tile
/// configuration belongs to the thread that loaded it.
pub(crate) struct Session<K: MicroKernel>(PhantomData<*const K>);

impl<K: MicroKernel> Drop for Session<K> {
    fn drop(&mut self) {
        // SAFETY: begun by `Cpu::session` on this thread (a Session never leaves it).
        unsafe { K::end() }
    }
}

impl<K: MicroKernel> Session<K> {
    /// Runs `K::tile` after checking the panel lengths. `io` is the caller's promise (the
    /// driver builds it from bounds-checked views).
    #[inline]
    pub(crate) fn tile(&self, kg: usize, a: &[i32], b: &[i8], ahead: &[i8], io: &TileIo) {
        assert!(
            a.len() >= kg * K::MR && b.len() >= kg * K::NR * K::GROUP && io.rows <= K::MR && io.cols <= K::NR,
            "packed panels too short"
        );
        // SAFETY: lengths asserted above; the session proves the CPU has the tier and began
        // it; `io` was built from checked views (driver).
        unsafe { K::tile(kg, a, b, ahead, io) }
    }

    /// Runs `K::tile_u7` after checking the panel lengths (the caller checked the 7-bit bound).
    #[inline]
    pub(crate) fn tile_u7(&self, kq: usize, a: &[i32], b: &[i8], ahead: &[i8], io: &TileIo) {
        assert!(
            a.len() >= kq * K::MR && b.len() >= kq * K::NR * 4 && io.rows <= K::MR && io.cols <= K::NR,
            "packed panels too short"
        );
        // SAFETY: as above; the driver checked every A value is in 0..=127.
        unsafe { K::tile_u7(kq, a, b, ahead, io) }
    }

    /// Runs `K::epilogue`.
    #[inline]
    pub(crate) fn epilogue(&self, io: &TileIo) {
        assert!(io.cols <= K::NR, "epilogue wider than a panel");
        // SAFETY: as above.
        unsafe { K::epilogue(io) }
    }

    /// Runs `K::row` after checking the panel lengths.
    #[inline]
    pub(crate) fn row(&self, kg: usize, a: &[i32], b: &[i8], out: &mut [i32]) {
        assert!(a.len() >= kg && b.len() >= kg * K::NR * K::GROUP && out.len() >= K::NR, "packed panels too short");
        // SAFETY: lengths asserted above; the session proves the CPU has the tier.
        unsafe { K::row(kg, a, b, out) }
    }
}

/// The start and finish of a tile in plain Rust, for any kernel: `acc[r][c]` from `io.start`
/// (row `r < io.rows`, column `c < io.cols`), handed to `body`, then written by `io.finish`.
/// The portable kernel's epilogue, and the definition the SIMD ones are tested against.
///
/// # Safety
/// `io`'s pointers are valid for its rows and columns; `acc` holds `io.rows` rows.
pub(crate) unsafe fn apply_scalar<const NR: usize>(io: &TileIo, acc: &mut [[i32; NR]]) {
    let (rows, cols) = (io.rows, io.cols.min(NR));
    for (r, row) in acc.iter_mut().enumerate().take(rows) {
        for (c, v) in row.iter_mut().enumerate().take(cols) {
            // SAFETY: r < rows, c < cols (caller's contract for `io`).
            unsafe {
                if let Some(t) = io.start.terms {
                    *v = v.wrapping_add(*t.col.add(c)).wrapping_add(*t.row.add(r));
                    for (x, y) in t.mul.iter().flatten() {
                        *v = v.wrapping_add((*x.add(r)).wrapping_mul(*y.add(c)));
                    }
                }
                match io.finish {
                    Finish::I32 { dst, ld } => *dst.add(r * ld + c) = *v,
                    Finish::F32 { dst, ld, scale, bias } => {
                        let x = quant_traits::cast::i64_to_f64(i64::from(*v)) * *scale.add(c) + *bias.add(c);
                        *dst.add(r * ld + c) = <f32 as quant_traits::QuantFloat>::from_f64_nearest(x);
                    }
                }
            }
        }
    }
}

/// The accumulators a tile starts from, in plain Rust (`io.start.load`, or zero; the terms
/// are added by [`apply_scalar`]).
///
/// # Safety
/// As [`apply_scalar`].
pub(crate) unsafe fn load_scalar<const NR: usize>(io: &TileIo, acc: &mut [[i32; NR]]) {
    for (r, row) in acc.iter_mut().enumerate().take(io.rows) {
        for (c, v) in row.iter_mut().enumerate() {
            *v = match io.start.load {
                // SAFETY: r < rows, c < cols (caller's contract).
                Some((src, ld)) if c < io.cols => unsafe { *src.add(r * ld + c) },
                _ => 0,
            };
        }
    }
}

pub(crate) use quant_traits::dispatch;

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

    /// A deterministic byte stream for the tests below.
    fn bytes(seed: u64, len: usize) -> alloc::vec::Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[3]
            })
            .collect()
    }

    /// Every start (zero, loaded, the terms with none, one or two rank-one products, loaded
    /// plus terms) and every finish (`i32`, `f32`) of kernel `K`'s tile and epilogue, on every
    /// live row and column count at the edges, against the plain-Rust definition
    /// ([`load_scalar`], a naive dot product, [`apply_scalar`]).
    fn starts_and_finishes<K: MicroKernel>() {
        use crate::aligned::Aligned;
        use crate::gemm::pack::{pack_a, pack_b_block};
        use crate::view::MatRef;
        let Ok(cpu) = Cpu::<K>::check() else { return };
        let session = cpu.session();
        let (mr, nr, k) = (K::MR, K::NR, 37);
        let a: alloc::vec::Vec<u8> = bytes(1, mr * k);
        let b: alloc::vec::Vec<i8> = bytes(2, k * nr).into_iter().map(|v| i8::from_ne_bytes([v])).collect();
        let (mut ap, mut bp, mut sums) = (Aligned::new(), Aligned::new(), alloc::vec::Vec::new());
        pack_a::<K, u8>(&MatRef::row_major(&a, mr, k).expect("view"), 0, mr, mr, &mut ap);
        pack_b_block::<K>(&MatRef::row_major(&b, k, nr).expect("view"), 0, nr, &mut bp, &mut sums);
        let kg = k.div_ceil(K::GROUP);
        let dot = |r: usize, c: usize| (0..k).fold(0i32, |s, p| s + i32::from(a[r * k + p]) * i32::from(b[p * nr + c]));
        let word = |seed: u64, n: usize| -> alloc::vec::Vec<i32> {
            bytes(seed, 4 * n).chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) >> 8).collect()
        };
        let (col, row, x0, y0, x1, y1) = (word(3, nr), word(4, mr), word(5, mr), word(6, nr), word(7, mr), word(8, nr));
        let loaded = word(9, mr * nr);
        let scale: alloc::vec::Vec<f64> = (0..nr).map(|c| 0.5 + c as f64 / 7.0).collect();
        let bias: alloc::vec::Vec<f64> = (0..nr).map(|c| c as f64 - 3.25).collect();
        let terms = |muls: usize| Terms {
            col: col.as_ptr(),
            row: row.as_ptr(),
            mul: [(muls > 0).then_some((x0.as_ptr(), y0.as_ptr())), (muls > 1).then_some((x1.as_ptr(), y1.as_ptr()))],
        };
        let starts = [
            Start::ZERO,
            Start { load: Some((loaded.as_ptr(), nr)), terms: None },
            Start { load: None, terms: Some(terms(0)) },
            Start { load: None, terms: Some(terms(1)) },
            Start { load: Some((loaded.as_ptr(), nr)), terms: Some(terms(2)) },
        ];
        for (si, start) in starts.iter().enumerate() {
            for rows in [1, mr - 1, mr] {
                for cols in [1, nr - 1, nr] {
                    for f32_out in [false, true] {
                        let (mut got_i, mut want_i) = (alloc::vec![7i32; mr * nr], alloc::vec![7i32; mr * nr]);
                        let (mut got_f, mut want_f) = (alloc::vec![7f32; mr * nr], alloc::vec![7f32; mr * nr]);
                        let finish = |i: &mut [i32], f: &mut [f32]| {
                            if f32_out {
                                Finish::F32 { dst: f.as_mut_ptr(), ld: nr, scale: scale.as_ptr(), bias: bias.as_ptr() }
                            } else {
                                Finish::I32 { dst: i.as_mut_ptr(), ld: nr }
                            }
                        };
                        let io = TileIo { rows, cols, start: *start, finish: finish(&mut got_i, &mut got_f) };
                        session.tile(kg, &ap, &bp, &[], &io);
                        // The definition: start, plus the dot products, then the terms and finish.
                        let want_io = TileIo { rows, cols, start: *start, finish: finish(&mut want_i, &mut want_f) };
                        let mut acc = alloc::vec![[0i32; MAX_NR]; rows];
                        // SAFETY: the pointers are valid for `rows` x `cols` (the buffers above).
                        unsafe { load_scalar(&want_io, &mut acc) };
                        for (r, row) in acc.iter_mut().enumerate() {
                            for (c, v) in row.iter_mut().enumerate().take(cols) {
                                *v = v.wrapping_add(dot(r, c));
                            }
                        }
                        // SAFETY: as above.
                        unsafe { apply_scalar(&want_io, &mut acc) };
                        let what = alloc::format!("{} start {si} rows {rows} cols {cols} f32 {f32_out}", K::TIER);
                        assert_eq!(got_i, want_i, "{what}");
                        assert_eq!(got_f.map_bits(), want_f.map_bits(), "{what}");
                        // The epilogue alone (no depth) gives the start and finish.
                        let (mut e_i, mut e_f) = (alloc::vec![7i32; mr * nr], alloc::vec![7f32; mr * nr]);
                        let io = TileIo { rows, cols, start: *start, finish: finish(&mut e_i, &mut e_f) };
                        session.epilogue(&io);
                        let mut acc = alloc::vec![[0i32; MAX_NR]; rows];
                        let (mut w_i, mut w_f) = (alloc::vec![7i32; mr * nr], alloc::vec![7f32; mr * nr]);
                        let want_io = TileIo { rows, cols, start: *start, finish: finish(&mut w_i, &mut w_f) };
                        // SAFETY: as above.
                        unsafe {
                            load_scalar(&want_io, &mut acc);
                            apply_scalar(&want_io, &mut acc);
                        }
                        assert_eq!((e_i, e_f.map_bits()), (w_i, w_f.map_bits()), "epilogue {what}");
                    }
                }
            }
        }
    }

    /// `f32` values by their bits (so that the comparison also tells `-0.0` from `0.0`).
    trait Bits {
        fn map_bits(&self) -> alloc::vec::Vec<u32>;
    }

    impl Bits for alloc::vec::Vec<f32> {
        fn map_bits(&self) -> alloc::vec::Vec<u32> {
            self.iter().map(|v| v.to_bits()).collect()
        }
    }

    /// [`starts_and_finishes`] on every tier this CPU has.
    #[test]
    fn every_kernel_starts_and_finishes_as_defined() {
        for tier in Tier::ALL.into_iter().filter(|t| t.is_available()) {
            dispatch!(tier, K => starts_and_finishes::<K>());
        }
    }

    /// The chunk bound for `u8 x i8` (`255 · 128` per product) is 65 793 values.
    #[test]
    fn chunk_bound_in_groups() {
        assert_eq!(quant_traits::cpu::Portable::chunk_groups(255), 65_793 / 4);
        assert_eq!(quant_traits::cpu::Portable::chunk_groups(128), 131_071 / 4);
        // AMX: whole blocks of 16 quads (16 448 quads is already 1 028 blocks).
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(quant_traits::cpu::Amx::chunk_groups(255), 16_448);
            assert_eq!(quant_traits::cpu::Amx::chunk_groups(128), 131_071 / 4 / 16 * 16);
        }
    }
}
