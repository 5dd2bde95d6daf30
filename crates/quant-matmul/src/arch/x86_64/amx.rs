//! The AMX micro-kernel: `tdpbusd` on tile registers (Intel Sapphire Rapids and later Xeons).
//!
//! `tdpbusd c, a, b` takes a tile `a` of 16 rows by 64 unsigned bytes and a tile `b` of 16
//! rows by 64 signed bytes (16 depth quads by 16 columns of 4 bytes) and adds, to each `i32`
//! element `c[m][n]`, the 64 products `a[m][4k + t] · b[k][4n + t]`: exact for full-range
//! `u8 x i8`, wrapping like `vpdpbusd` (so a tile is exact modulo `2^32`, see the kernel
//! contract). Rust has no stable AMX intrinsics; the tile instructions are `asm!`, and nothing
//! else in the program touches the tile registers.
//!
//! Tile (32 x 32, four 16 x 16 accumulator tiles): per block of 16 depth quads (64 bytes of
//! depth), two A tiles (rows 0..16 and 16..32, 1 KiB each, contiguous in the
//! [`AWords::QuadRows`] panel) and two B tiles (columns 0..16 and 16..32 of the
//! `quads x32` panel, a 64-byte row every 128 bytes) are loaded and multiplied 2 x 2. Up to 16
//! rows use one A tile and two accumulators. A tile load that misses L1 stalls the tiles that
//! wait for it, so each block prefetches the B block two steps ahead into L1 (the driver runs a
//! row block's tiles row tile after row tile, [`MicroKernel::ROWS_OUTER`], so the B panel is the
//! one that changes from tile to tile); with that, a tile runs over the whole depth at once
//! (`KC`), and C is written once. Tile rows are cache lines: the packed panels start on one
//! (`crate::aligned`). The depth left over after whole blocks (fewer than 16 quads) is added
//! with AVX-512 VNNI to the stored tile.
//!
//! **The tile configuration** is loaded once per call and thread ([`MicroKernel::begin`]) and
//! released at its end ([`MicroKernel::end`]), so no tile state outlives a call.
//!
//! **The epilogue.** Accumulator tiles only load from and store to memory. A tile starts from
//! a start tile in memory: C (the sums of earlier depth blocks), a tile the driver built once
//! per panel (a correction that is the same for every row), or one built here with AVX-512
//! from the correction's terms; it stores its `i32` sums straight into C (`tilestored` with
//! C's row stride). The `f32` stage cannot run on tiles, so it is deferred
//! ([`Epilogue::Deferred`]): once a row block's tiles of a column panel are done,
//! [`MicroKernel::epilogue`] (AVX-512) converts the panel in place, a panel late, when its tile
//! stores have long left the core (reading a tile right after storing it stalls until the
//! store retires). A tile with fewer than 16 (or between 17 and 31) live rows, fewer than 32
//! live columns, or an `f32` finish goes through a 4 KiB scratch tile on the stack instead.
//!
//! B's packed layout is the AVX-512 VNNI kernel's (`quads x32`), so weights packed for either
//! run on both. The row kernel (`M = 1`) is the AVX-512 VNNI one: one row cannot fill a tile.
//!
//! Chunk bound: as for `vpdpbusd`, `i32::MAX / (255 · 128)` depth values, rounded down to
//! whole blocks of 16 quads (runs of depth start on a block).

use core::arch::asm;
use core::arch::x86_64::*;

use quant_traits::cpu::Amx;

use quant_traits::cpu::Avx512Vnni;

use super::super::decode::{DecodeKernel, FloatRows, Panels, QuantizedRows, PANEL, WIDE};
use super::super::{AWords, Epilogue, Finish, MicroKernel, Start, TileIo, QUAD_ROW_BLOCK};

const MR: usize = 32;
const NR: usize = 32;
/// Depth quads per tile block.
const BLK: usize = QUAD_ROW_BLOCK;

/// The 64-byte `ldtilecfg` operand (palette 1).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// Tiles 0..8 all 16 rows of 64 bytes: accumulators `tmm0..tmm3`, A `tmm4`/`tmm5`, B
/// `tmm6`/`tmm7`.
static CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

impl MicroKernel for Amx {
    const MR: usize = MR;
    const NR: usize = NR;
    const GROUP: usize = 4;
    const A_WORDS: AWords = AWords::QuadRows;
    const MC: usize = 256;
    const NC: usize = 256;
    // The whole depth (see the module docs).
    const KC: usize = 1 << 20;
    const LAYOUT: &'static str = "quads x32 (avx512vnni, amx)";
    // Whole blocks, so that every run of depth starts on a block of the A panel.
    const RUN_GROUPS: usize = BLK;
    const EPILOGUE: Epilogue = Epilogue::Deferred;
    const ROWS_OUTER: bool = true;

    unsafe fn begin() {
        // SAFETY: the CPU has AMX (the tier was checked) and the OS granted the tile state
        // (`quant_traits::cpu` asks before it reports the tier available); CONFIG is a valid
        // palette-1 configuration.
        unsafe { asm!("ldtilecfg [{cfg}]", cfg = in(reg) &CONFIG, options(nostack, readonly)) };
    }

    unsafe fn end() {
        // SAFETY: AMX present (as in `begin`).
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }

    unsafe fn tile(kq: usize, a: &[i32], b: &[i8], _ahead: &[i8], io: &TileIo) {
        let full = io.cols == NR && (io.rows == MR || io.rows == BLK);
        let (a, b) = (a.as_ptr(), b.as_ptr());
        // SAFETY: forwarded from the trait contract: `a` holds `kq * MR` words in the
        // `QuadRows` layout, `b` `kq * NR * 4` bytes, `io` is valid for its rows and columns;
        // the CPU has AMX and AVX-512 VNNI and the session loaded the configuration.
        unsafe {
            match (full, &io.finish) {
                (true, &Finish::I32 { dst, ld }) => {
                    let mut init = core::mem::MaybeUninit::<Scratch>::uninit();
                    let load = match &io.start.terms {
                        None => io.start.load,
                        Some(_) => {
                            // The correction (and any loaded sums) built in a scratch tile
                            // with AVX-512 (every word of its `io.rows` rows written), then
                            // loaded into the accumulator tiles.
                            let at = init.as_mut_ptr().cast::<i32>();
                            let to = Finish::I32 { dst: at, ld: NR };
                            super::avx512::epilogue_zmm(&io.start, &to, io.rows, NR);
                            Some((at.cast_const(), NR))
                        }
                    };
                    run(io.rows, kq, a, b, load, dst, ld);
                }
                _ => through_scratch(kq, a, b, io),
            }
        }
    }

    unsafe fn epilogue(io: &TileIo) {
        // SAFETY: forwarded from the trait contract; the tier has AVX-512.
        unsafe { super::avx512::epilogue_zmm(&io.start, &io.finish, io.rows, io.cols) }
    }

    unsafe fn row(kq: usize, a: &[i32], b: &[i8], out: &mut [i32]) {
        // SAFETY: as above; with one row the `QuadRows` layout is the quad layout, and `out`
        // holds NR words.
        unsafe { super::avx512::row_vnni(kq, a.as_ptr(), b.as_ptr(), out.as_mut_ptr()) }
    }
}

/// The decode product: the AVX-512 VNNI tier's kernels (a dot product over a group of 32 to 256
/// inputs is too short for a tile).
impl DecodeKernel for Amx {
    const WIDTH: usize = WIDE;
    const FLOAT_SIMD: bool = true;

    unsafe fn quantize_group(x: &[f32], q: &mut [i8]) -> (f32, i32) {
        // SAFETY: the tier includes AVX2; the lengths are the trait's contract.
        unsafe { super::decode::quantize_group(x, q) }
    }

    unsafe fn panel_i8<const R: usize>(
        w: &Panels<'_>,
        a: &QuantizedRows<'_>,
        rows: [usize; R],
        p: usize,
    ) -> [[f32; PANEL]; R] {
        // SAFETY: forwarded from the trait contract (the tier includes AVX-512 VNNI's features).
        unsafe { Avx512Vnni::panel_i8(w, a, rows, p) }
    }

    unsafe fn wide_i8<const R: usize>(
        w: &Panels<'_>,
        a: &QuantizedRows<'_>,
        rows: [usize; R],
        p: usize,
    ) -> Option<[[[f32; PANEL]; 2]; R]> {
        // SAFETY: as above.
        unsafe { Avx512Vnni::wide_i8(w, a, rows, p) }
    }

    unsafe fn panels_f32<const R: usize, const P: usize>(
        w: &Panels<'_>,
        a: &FloatRows<'_>,
        rows: [usize; R],
        p: usize,
        scratch: Option<&[f32]>,
    ) -> [[[f32; PANEL]; P]; R] {
        // SAFETY: as above.
        unsafe { Avx512Vnni::panels_f32(w, a, rows, p, scratch) }
    }

    unsafe fn dequantize(w: &Panels<'_>, p: usize, count: usize, out: &mut [f32]) -> bool {
        // SAFETY: as above.
        unsafe { Avx512Vnni::dequantize(w, p, count, out) }
    }
}

/// One 32 x 32 tile of `i32`, aligned to a cache line (a tile row is one line).
#[repr(C, align(64))]
struct Scratch([i32; MR * NR]);

/// A tile whose rows, columns, terms or output the tiles cannot take directly: its start
/// copied into a scratch tile, the tile run there, then the AVX-512 epilogue from the scratch
/// tile to `io.finish` with `io`'s terms.
///
/// # Safety
/// As [`MicroKernel::tile`] (any `terms`, any `finish`).
unsafe fn through_scratch(kq: usize, a: *const i32, b: *const i8, io: &TileIo) {
    let mut s = Scratch([0; MR * NR]);
    let rows = if io.rows > BLK { MR } else { BLK };
    // SAFETY: the start's rows and columns are valid (caller); the scratch tile holds MR rows
    // of NR words; `run` reads `rows` rows of it and writes them back.
    unsafe {
        if let Some((src, ld)) = io.start.load {
            for r in 0..io.rows {
                core::ptr::copy_nonoverlapping(src.add(r * ld), s.0.as_mut_ptr().add(r * NR), io.cols);
            }
        }
        let load = io.start.load.map(|_| (s.0.as_ptr(), NR));
        run(rows, kq, a, b, load, s.0.as_mut_ptr(), NR);
        let from = Start { load: Some((s.0.as_ptr(), NR)), terms: io.start.terms };
        super::avx512::epilogue_zmm(&from, &io.finish, io.rows, io.cols);
    }
}

/// `rows` (16 or 32) rows of the tile over `kq` quads: accumulators loaded from `load` (row
/// stride in words) or zero, whole blocks of 16 quads on the tiles, stored to `dst` (row
/// stride `ld` words), then the last `kq % 16` quads added there with AVX-512 VNNI.
///
/// # Safety
/// `a` points to `kq * MR` words (`QuadRows` layout), `b` to `kq * NR * 4` bytes; `load` and
/// `dst` to `rows` rows of `NR` words at their strides; the tile configuration is loaded; the
/// CPU has AMX-INT8 and AVX-512 VNNI.
unsafe fn run(
    rows: usize,
    kq: usize,
    a: *const i32,
    b: *const i8,
    load: Option<(*const i32, usize)>,
    dst: *mut i32,
    ld: usize,
) {
    let (blocks, rem) = (kq / BLK, kq % BLK);
    // SAFETY: forwarded (caller's contract).
    unsafe {
        if rows > BLK {
            blocks_32(blocks, a, b, load, dst, ld);
        } else {
            blocks_16(blocks, a, b, load, dst, ld);
        }
        if rem > 0 {
            tail(rows, rem, a.add(blocks * BLK * MR), b.add(blocks * BLK * NR * 4), dst, ld);
        }
    }
}

/// Rows 0..32 of the tile over `blocks` blocks of 16 quads: accumulators from `load` or zero,
/// stored to `dst`.
///
/// # Safety
/// `a` points to `blocks * 16 * MR` words (`QuadRows` layout), `b` to `blocks * 16 * NR * 4`
/// bytes, `load` and `dst` to 32 rows of 32 words at their strides (words); the tile
/// configuration is loaded; AMX-INT8 present.
unsafe fn blocks_32(
    blocks: usize,
    a: *const i32,
    b: *const i8,
    load: Option<(*const i32, usize)>,
    dst: *mut i32,
    ld: usize,
) {
    let dstride = ld * 4;
    // SAFETY: every `tileloadd` of A or B reads 16 rows of 64 bytes inside the panels (A:
    // block `i`'s rows 0..16 at `a + 2048 i`, rows 16..32 1 KiB further, stride 64; B: quads
    // `16 i .. 16 i + 16` at `b + 2048 i`, stride 128, columns 16..32 at +64); the loads from
    // `load` and stores to `dst` read and write 16 rows of 64 bytes at the given strides, rows
    // 0..16 and 16..32, columns 0..16 and 16..32 of the caller's 32 x 32 tile.
    unsafe {
        match load {
            Some((src, sld)) => {
                let sstride = sld * 4;
                let src16 = src.add(16 * sld);
                asm!(
                    "tileloadd tmm0, [{s} + {ss}*1]",
                    "tileloadd tmm1, [{s} + {ss}*1 + 64]",
                    "tileloadd tmm2, [{t} + {ss}*1]",
                    "tileloadd tmm3, [{t} + {ss}*1 + 64]",
                    s = in(reg) src,
                    t = in(reg) src16,
                    ss = in(reg) sstride,
                    options(nostack, readonly),
                );
            }
            None => asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem)),
        }
        if blocks > 0 {
            asm!(
                "2:",
                "tileloadd tmm4, [{a} + {s64}*1]",
                "tileloadd tmm6, [{b} + {s128}*1]",
                "tileloadd tmm7, [{b} + {s128}*1 + 64]",
                "prefetcht0 [{b} + 4096]",
                "prefetcht0 [{b} + 4160]",
                "prefetcht0 [{b} + 4224]",
                "prefetcht0 [{b} + 4288]",
                "prefetcht0 [{b} + 4352]",
                "prefetcht0 [{b} + 4416]",
                "prefetcht0 [{b} + 4480]",
                "prefetcht0 [{b} + 4544]",
                "prefetcht0 [{b} + 4608]",
                "prefetcht0 [{b} + 4672]",
                "prefetcht0 [{b} + 4736]",
                "prefetcht0 [{b} + 4800]",
                "prefetcht0 [{b} + 4864]",
                "prefetcht0 [{b} + 4928]",
                "prefetcht0 [{b} + 4992]",
                "prefetcht0 [{b} + 5056]",
                "tdpbusd tmm0, tmm4, tmm6",
                "tdpbusd tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a} + {s64}*1 + 1024]",
                "prefetcht0 [{b} + 5120]",
                "prefetcht0 [{b} + 5184]",
                "prefetcht0 [{b} + 5248]",
                "prefetcht0 [{b} + 5312]",
                "prefetcht0 [{b} + 5376]",
                "prefetcht0 [{b} + 5440]",
                "prefetcht0 [{b} + 5504]",
                "prefetcht0 [{b} + 5568]",
                "prefetcht0 [{b} + 5632]",
                "prefetcht0 [{b} + 5696]",
                "prefetcht0 [{b} + 5760]",
                "prefetcht0 [{b} + 5824]",
                "prefetcht0 [{b} + 5888]",
                "prefetcht0 [{b} + 5952]",
                "prefetcht0 [{b} + 6016]",
                "prefetcht0 [{b} + 6080]",
                "tdpbusd tmm2, tmm5, tmm6",
                "tdpbusd tmm3, tmm5, tmm7",
                "add {a}, 2048",
                "add {b}, 2048",
                "dec {n}",
                "jnz 2b",
                a = inout(reg) a => _,
                b = inout(reg) b => _,
                n = inout(reg) blocks => _,
                s64 = in(reg) 64usize,
                s128 = in(reg) 128usize,
                options(nostack, readonly),
            );
        }
        let dst16 = dst.add(16 * ld);
        asm!(
            "tilestored [{d} + {ds}*1], tmm0",
            "tilestored [{d} + {ds}*1 + 64], tmm1",
            "tilestored [{e} + {ds}*1], tmm2",
            "tilestored [{e} + {ds}*1 + 64], tmm3",
            d = in(reg) dst,
            e = in(reg) dst16,
            ds = in(reg) dstride,
            options(nostack),
        );
    }
}

/// Rows 0..16 of the tile (one A tile) over `blocks` blocks of 16 quads, as [`blocks_32`].
///
/// # Safety
/// As [`blocks_32`], with `load` and `dst` 16 rows.
unsafe fn blocks_16(
    blocks: usize,
    a: *const i32,
    b: *const i8,
    load: Option<(*const i32, usize)>,
    dst: *mut i32,
    ld: usize,
) {
    let dstride = ld * 4;
    // SAFETY: as in `blocks_32`, with only the first A tile of each block and rows 0..16.
    unsafe {
        match load {
            Some((src, sld)) => asm!(
                "tileloadd tmm0, [{s} + {ss}*1]",
                "tileloadd tmm1, [{s} + {ss}*1 + 64]",
                s = in(reg) src,
                ss = in(reg) sld * 4,
                options(nostack, readonly),
            ),
            None => asm!("tilezero tmm0", "tilezero tmm1", options(nostack, nomem)),
        }
        if blocks > 0 {
            asm!(
                "2:",
                "tileloadd tmm4, [{a} + {s64}*1]",
                "tileloadd tmm6, [{b} + {s128}*1]",
                "tileloadd tmm7, [{b} + {s128}*1 + 64]",
                "tdpbusd tmm0, tmm4, tmm6",
                "tdpbusd tmm1, tmm4, tmm7",
                "add {a}, 2048",
                "add {b}, 2048",
                "dec {n}",
                "jnz 2b",
                a = inout(reg) a => _,
                b = inout(reg) b => _,
                n = inout(reg) blocks => _,
                s64 = in(reg) 64usize,
                s128 = in(reg) 128usize,
                options(nostack, readonly),
            );
        }
        asm!(
            "tilestored [{d} + {ds}*1], tmm0",
            "tilestored [{d} + {ds}*1 + 64], tmm1",
            d = in(reg) dst,
            ds = in(reg) dstride,
            options(nostack),
        );
    }
}

/// Adds the last `rem < 16` quads to rows `0..rows` of the tile stored at `dst` (row stride
/// `ld` words), with `vpdpbusd`.
///
/// # Safety
/// `a` points to the last block of the A panel (`MR * rem` words, row `r` at `r * rem`), `b`
/// to `rem * NR * 4` bytes, `dst` to `rows` rows of 32 words at stride `ld`; AVX-512 F/BW and
/// VNNI present.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tail(rows: usize, rem: usize, a: *const i32, b: *const i8, dst: *mut i32, ld: usize) {
    for r in 0..rows {
        // SAFETY: row r < rows: words r * ld .. r * ld + 32 of `dst`, words r * rem ..
        // r * rem + rem of the block, bytes i * 128 .. i * 128 + 128 of `b` for i < rem.
        unsafe {
            let out = dst.add(r * ld);
            let mut c0 = _mm512_loadu_si512(out.cast());
            let mut c1 = _mm512_loadu_si512(out.add(16).cast());
            for i in 0..rem {
                let av = _mm512_set1_epi32(*a.add(r * rem + i));
                let bq = b.add(i * NR * 4);
                c0 = _mm512_dpbusd_epi32(c0, av, _mm512_loadu_si512(bq.cast()));
                c1 = _mm512_dpbusd_epi32(c1, av, _mm512_loadu_si512(bq.add(64).cast()));
            }
            _mm512_storeu_si512(out.cast(), c0);
            _mm512_storeu_si512(out.add(16).cast(), c1);
        }
    }
}
