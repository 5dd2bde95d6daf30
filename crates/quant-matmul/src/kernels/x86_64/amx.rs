//! The AMX micro-kernel: `tdpbusd` on tile registers (Intel Sapphire Rapids and later Xeons).
//!
//! `tdpbusd c, a, b` takes a tile `a` of 16 rows by 64 unsigned bytes and a tile `b` of 16
//! rows by 64 signed bytes (16 depth quads by 16 columns of 4 bytes) and adds, to each `i32`
//! element `c[m][n]`, the 64 products `a[m][4k + t] · b[k][4n + t]`: exact for full-range
//! `u8 x i8`, wrapping like `vpdpbusd` (the driver keeps each run within the chunk bound, so
//! it never does). Rust has no stable AMX intrinsics; the tile instructions are `asm!`, and
//! nothing else in the program touches the tile registers.
//!
//! Tile (32 x 32, four 16 x 16 accumulator tiles): per block of 16 depth quads (64 bytes of
//! depth), two A tiles (rows 0..16 and 16..32, 1 KiB each, contiguous in the
//! [`AWords::QuadRows`] panel) and two B tiles (columns 0..16 and 16..32 of the
//! `quads x32` panel, a 64-byte row every 128 bytes) are loaded and multiplied 2 x 2. Up to 16
//! rows use one A tile and two accumulators. The depth left over after whole blocks (fewer
//! than 16 quads) is added with AVX-512 VNNI to the stored tile.
//!
//! B's packed layout is the AVX-512 VNNI kernel's (`quads x32`), so weights packed for either
//! run on both. The row kernel (`M = 1`) is the AVX-512 VNNI one: one row cannot fill a tile.
//!
//! The tile configuration is loaded at the start of every tile call and released at its end
//! (`tilerelease`), so no tile state outlives a call.
//!
//! Chunk bound: as for `vpdpbusd`, `i32::MAX / (255 · 128)` depth values, rounded down to
//! whole blocks of 16 quads (runs of depth start on a block).

use core::arch::asm;
use core::arch::x86_64::*;

use super::super::{AWords, MicroKernel, Tier};
use crate::gemm::pack::QUAD_ROW_BLOCK;

pub(crate) struct Amx;

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
    const TIER: Tier = Tier::Amx;
    const MR: usize = MR;
    const NR: usize = NR;
    const GROUP: usize = 4;
    const A_WORDS: AWords = AWords::QuadRows;
    const MC: usize = 128;
    const NC: usize = 512;
    const KC: usize = usize::MAX;
    const LAYOUT: &'static str = "quads x32 (avx512vnni, amx)";
    // Whole blocks, so that every run of depth starts on a block of the A panel.
    const RUN_GROUPS: usize = BLK;

    unsafe fn tile(rows: usize, kq: usize, a: &[i32], b: &[i8], _ahead: &[i8], tile: &mut [i32]) {
        let (blocks, rem) = (kq / BLK, kq % BLK);
        let (a, b, t) = (a.as_ptr(), b.as_ptr(), tile.as_mut_ptr());
        // SAFETY: forwarded from the trait contract: `a` holds `kq * MR` words in the
        // `QuadRows` layout, `b` `kq * NR * 4` bytes, `tile` `MR * NR` words; the CPU has AMX
        // and AVX-512 VNNI (the tier was checked) and the OS granted the tile state
        // (`quant_traits::cpu` asks before it reports the tier available).
        unsafe {
            if blocks > 0 {
                if rows > 16 {
                    blocks_32(blocks, a, b, t);
                } else {
                    blocks_16(blocks, a, b, t);
                }
            }
            if rem > 0 {
                tail(rows.min(MR), rem, blocks > 0, a.add(blocks * BLK * MR), b.add(blocks * BLK * NR * 4), t);
            }
        }
    }

    unsafe fn row(kq: usize, a: &[i32], b: &[i8], out: &mut [i32]) {
        // SAFETY: as above; with one row the `QuadRows` layout is the quad layout, and `out`
        // holds NR words.
        unsafe { super::avx512::row_vnni(kq, a.as_ptr(), b.as_ptr(), out.as_mut_ptr()) }
    }
}

/// Rows 0..32 of the tile over `blocks` blocks of 16 quads, stored to `tile`.
///
/// # Safety
/// `a` points to `blocks * 16 * MR` words (`QuadRows` layout), `b` to `blocks * 16 * NR * 4`
/// bytes, `tile` to `MR * NR` words; AMX-INT8 present and its tile state granted.
unsafe fn blocks_32(blocks: usize, a: *const i32, b: *const i8, tile: *mut i32) {
    // SAFETY: every `tileloadd` reads 16 rows of 64 bytes inside the panels (A: block `i`'s
    // rows 0..16 at `a + 2048 i`, rows 16..32 1 KiB further, stride 64; B: quads `16 i ..
    // 16 i + 16` at `b + 2048 i`, stride 128, columns 16..32 at +64), and every `tilestored`
    // writes 16 rows of 64 bytes inside the 32 x 32 tile (stride 128); `blocks >= 1`.
    unsafe {
        asm!(
            "ldtilecfg [{cfg}]",
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{a} + {s64}*1]",
            "tileloadd tmm6, [{b} + {s128}*1]",
            "tileloadd tmm7, [{b} + {s128}*1 + 64]",
            "tdpbusd tmm0, tmm4, tmm6",
            "tdpbusd tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a} + {s64}*1 + 1024]",
            "tdpbusd tmm2, tmm5, tmm6",
            "tdpbusd tmm3, tmm5, tmm7",
            "add {a}, 2048",
            "add {b}, 2048",
            "dec {n}",
            "jnz 2b",
            "tilestored [{t} + {s128}*1], tmm0",
            "tilestored [{t} + {s128}*1 + 64], tmm1",
            "tilestored [{t} + {s128}*1 + 2048], tmm2",
            "tilestored [{t} + {s128}*1 + 2112], tmm3",
            "tilerelease",
            cfg = in(reg) &CONFIG,
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            n = inout(reg) blocks => _,
            t = in(reg) tile,
            s64 = in(reg) 64usize,
            s128 = in(reg) 128usize,
            options(nostack),
        );
    }
}

/// Rows 0..16 of the tile (one A tile) over `blocks` blocks of 16 quads, stored to `tile`
/// (rows 16.. are left alone).
///
/// # Safety
/// As [`blocks_32`].
unsafe fn blocks_16(blocks: usize, a: *const i32, b: *const i8, tile: *mut i32) {
    // SAFETY: as in `blocks_32`, with only the first A tile of each block.
    unsafe {
        asm!(
            "ldtilecfg [{cfg}]",
            "tilezero tmm0",
            "tilezero tmm1",
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
            "tilestored [{t} + {s128}*1], tmm0",
            "tilestored [{t} + {s128}*1 + 64], tmm1",
            "tilerelease",
            cfg = in(reg) &CONFIG,
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            n = inout(reg) blocks => _,
            t = in(reg) tile,
            s64 = in(reg) 64usize,
            s128 = in(reg) 128usize,
            options(nostack),
        );
    }
}

/// Adds the last `rem < 16` quads to rows `0..rows` of the tile (onto what is stored there
/// when `add`, else onto zero), with `vpdpbusd`.
///
/// # Safety
/// `a` points to the last block of the A panel (`MR * rem` words, row `r` at `r * rem`), `b`
/// to `rem * NR * 4` bytes, `tile` to `MR * NR` words; AVX-512 F/BW and VNNI present.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tail(rows: usize, rem: usize, add: bool, a: *const i32, b: *const i8, tile: *mut i32) {
    for r in 0..rows {
        // SAFETY: row r < MR: words r * NR .. r * NR + 32 of the tile, words r * rem ..
        // r * rem + rem of the block, bytes i * 128 .. i * 128 + 128 of `b` for i < rem.
        unsafe {
            let out = tile.add(r * NR);
            let (mut c0, mut c1) = if add {
                (_mm512_loadu_si512(out.cast()), _mm512_loadu_si512(out.add(16).cast()))
            } else {
                (_mm512_setzero_si512(), _mm512_setzero_si512())
            };
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
