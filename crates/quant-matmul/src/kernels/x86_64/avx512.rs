//! The AVX-512 VNNI micro-kernels: `vpdpbusd` on zmm registers (Intel Ice Lake and later,
//! AMD Zen 4 and later).
//!
//! `vpdpbusd acc, a, b` multiplies four unsigned bytes of `a` by the four signed bytes of `b`
//! in the same 32-bit lane and adds the four products to `acc`'s `i32` lane: exact for
//! full-range `u8 x i8` (no `i16` step). The accumulation wraps like `vpaddd`, so every tile
//! is exact modulo `2^32` (see the kernel contract).
//!
//! Tile kernel (12 x 32, 24 zmm accumulators), per depth quad: two 64-byte loads of B (32
//! columns x 4 bytes), one broadcast of each row's quad of A, 24 `vpdpbusd`. 24 accumulators,
//! 2 B vectors and 1 broadcast take 27 of 32 registers; 14 loads per 24 `vpdpbusd`, within two
//! load ports at two `vpdpbusd` per cycle. Fewer rows than 12 (the last row panel, small `M`)
//! run a copy of the loop with only those rows, so `M = 2..16` wastes no multiplies.
//!
//! The tile's epilogue is in registers ([`start`], [`finish`]): the accumulators start from
//! the zero-point correction (`col[c] + row[r]`, plus a rank-one term `vpmulld`, or the sums
//! of earlier depth blocks loaded from C) and end in the output stage (`i32`, or `f32`:
//! `vcvtdq2pd`, `vmulpd` by the column's scale, `vaddpd` of its bias, `vcvtpd2ps`, the scalar
//! stage's operations in its order), stored once with column masks for a partial panel.
//!
//! Row kernel (1 x 32, `M = 1`): per quad one broadcast and two `vpdpbusd`, unrolled four quads
//! deep with independent accumulators, the weights prefetched 2 KiB ahead.
//!
//! Chunk bound: A bytes `<= 255` (the `i8` shift included), `|B| <= 128`: exact in `i32` for
//! depths up to `i32::MAX / (255 · 128) = 65 793` (16 448 quads).

use core::arch::x86_64::*;

use super::super::{AWords, Finish, MicroKernel, Start, Tier, TileIo};

pub(crate) struct Avx512Vnni;

const MR: usize = 12;
const NR: usize = 32;

impl MicroKernel for Avx512Vnni {
    const TIER: Tier = Tier::Avx512Vnni;
    const MR: usize = MR;
    const NR: usize = NR;
    const GROUP: usize = 4;
    const A_WORDS: AWords = AWords::Quads;
    const MC: usize = 96;
    const NC: usize = 512;
    // The whole depth: its A and B are prefetched into L1 sixteen quads ahead, so a tile
    // runs over all of it and C is written once.
    const KC: usize = 1 << 20;
    const LAYOUT: &'static str = "quads x32 (avx512vnni, amx)";

    unsafe fn tile(kq: usize, a: &[i32], b: &[i8], ahead: &[i8], io: &TileIo) {
        // Prefetch `ahead` (the next panel) only when it is a whole panel.
        let fetch = if ahead.len() >= kq * NR * 4 { ahead.as_ptr() } else { core::ptr::null() };
        let (a, b) = (a.as_ptr(), b.as_ptr());
        // SAFETY: forwarded from the trait contract (lengths checked by the caller, AVX-512
        // VNNI present, `io` valid for its rows and columns).
        unsafe {
            match io.rows {
                1 => tile_rows::<1>(kq, a, b, fetch, io),
                2 => tile_rows::<2>(kq, a, b, fetch, io),
                3 => tile_rows::<3>(kq, a, b, fetch, io),
                4 => tile_rows::<4>(kq, a, b, fetch, io),
                5 => tile_rows::<5>(kq, a, b, fetch, io),
                6 => tile_rows::<6>(kq, a, b, fetch, io),
                7 => tile_rows::<7>(kq, a, b, fetch, io),
                8 => tile_rows::<8>(kq, a, b, fetch, io),
                9 => tile_rows::<9>(kq, a, b, fetch, io),
                10 => tile_rows::<10>(kq, a, b, fetch, io),
                11 => tile_rows::<11>(kq, a, b, fetch, io),
                _ => tile_rows::<MR>(kq, a, b, fetch, io),
            }
        }
    }

    unsafe fn epilogue(io: &TileIo) {
        // SAFETY: forwarded from the trait contract.
        unsafe { epilogue_zmm(&io.start, &io.finish, io.rows, io.cols) }
    }

    unsafe fn row(kq: usize, a: &[i32], b: &[i8], out: &mut [i32]) {
        // SAFETY: as above; `out` holds NR words.
        unsafe { row_vnni(kq, a.as_ptr(), b.as_ptr(), out.as_mut_ptr()) }
    }
}

/// `R` rows of the tile over `kq` quads, from `io.start` to `io.finish`; unless `fetch` is
/// null, the `kq * NR * 4` bytes there (the next panel) are prefetched into L2 meanwhile.
///
/// # Safety
/// `a` points to `kq * MR` words, `b` to `kq * NR * 4` bytes; `io` is valid for `R` rows;
/// AVX-512 F/BW/VL and VNNI present.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_rows<const R: usize>(kq: usize, a: *const i32, b: *const i8, fetch: *const i8, io: &TileIo) {
    // SAFETY: `io` is valid for R rows (caller).
    let mut c = unsafe { start::<R>(&io.start, io.cols, 0) };
    for q in 0..kq {
        if !fetch.is_null() {
            _mm_prefetch::<_MM_HINT_T1>(fetch.wrapping_add(q * NR * 4));
            _mm_prefetch::<_MM_HINT_T1>(fetch.wrapping_add(q * NR * 4 + 64));
        }
        // This tile's A and B sixteen quads ahead, into L1 (hints: harmless past the panels).
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add((q + 16) * NR * 4));
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add((q + 16) * NR * 4 + 64));
        _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add((q + 16) * MR).cast::<i8>());
        // SAFETY: quad q < kq: bytes q*128 .. q*128 + 128 of `b` and words q*MR .. q*MR + R
        // of `a` lie inside the panels (caller's contract).
        unsafe {
            let bq = b.add(q * NR * 4);
            let b0 = _mm512_loadu_si512(bq.cast());
            let b1 = _mm512_loadu_si512(bq.add(64).cast());
            for (r, acc) in c.iter_mut().enumerate() {
                let av = _mm512_set1_epi32(*a.add(q * MR + r));
                acc[0] = _mm512_dpbusd_epi32(acc[0], av, b0);
                acc[1] = _mm512_dpbusd_epi32(acc[1], av, b1);
            }
        }
    }
    // SAFETY: as above.
    unsafe { finish::<R>(&c, &io.finish, io.cols, 0) };
}

/// Column masks of the two vectors of a 32-column row with `cols` columns live.
#[inline(always)]
fn masks(cols: usize) -> [__mmask16; 2] {
    let live = u32::try_from(cols.min(NR)).unwrap_or(0);
    let bits = u32::MAX.checked_shr(32 - live).unwrap_or(0).to_le_bytes();
    [u16::from_le_bytes([bits[0], bits[1]]), u16::from_le_bytes([bits[2], bits[3]])]
}

/// The accumulators of rows `r0 .. r0 + R` as `start` says: loaded (or zero), plus the terms.
/// The fields are read one by one, never copied as a whole: the driver writes them just
/// before the call, and a wide load of narrower stores would wait for them to retire.
///
/// # Safety
/// `start`'s pointers are valid for rows `r0 .. r0 + R` and `cols` columns; AVX-512 F/BW/VL
/// present.
#[inline(always)]
pub(super) unsafe fn start<const R: usize>(start: &Start, cols: usize, r0: usize) -> [[__m512i; 2]; R] {
    // SAFETY: AVX-512 F present (caller).
    let mut c = [[unsafe { _mm512_setzero_si512() }; 2]; R];
    // SAFETY: every read is inside the rows and columns (masked loads past `cols` touch no
    // memory there), or inside the terms' NR values and rows (caller).
    unsafe {
        if let Some((src, ld)) = &start.load {
            let (src, ld) = (*src, *ld);
            let m = masks(cols);
            for (r, acc) in c.iter_mut().enumerate() {
                for (v, x) in acc.iter_mut().enumerate() {
                    *x = _mm512_maskz_loadu_epi32(m[v], src.add((r0 + r) * ld + 16 * v));
                }
            }
        }
        if let Some(t) = &start.terms {
            let (col, row) = (t.col, t.row.add(r0));
            let col = [_mm512_loadu_si512(col.cast()), _mm512_loadu_si512(col.add(16).cast())];
            for (r, acc) in c.iter_mut().enumerate() {
                let rv = _mm512_set1_epi32(*row.add(r));
                for (x, &cv) in acc.iter_mut().zip(&col) {
                    *x = _mm512_add_epi32(*x, _mm512_add_epi32(cv, rv));
                }
            }
            for term in &t.mul {
                let Some((x, y)) = term else { continue };
                let (x, y) = (x.add(r0), *y);
                let yv = [_mm512_loadu_si512(y.cast()), _mm512_loadu_si512(y.add(16).cast())];
                for (r, acc) in c.iter_mut().enumerate() {
                    let xv = _mm512_set1_epi32(*x.add(r));
                    for (v, &m) in acc.iter_mut().zip(&yv) {
                        *v = _mm512_add_epi32(*v, _mm512_mullo_epi32(xv, m));
                    }
                }
            }
        }
    }
    c
}

/// Writes rows `r0 .. r0 + R` of accumulators as `finish` says (fields read one by one, as in
/// [`start`]).
///
/// # Safety
/// `finish`'s pointers are valid for rows `r0 .. r0 + R` and `cols` columns; AVX-512 F/BW/VL
/// present.
#[inline(always)]
pub(super) unsafe fn finish<const R: usize>(c: &[[__m512i; 2]; R], finish: &Finish, cols: usize, r0: usize) {
    let m = masks(cols);
    // SAFETY: every write is inside the rows and columns (masked past `cols`), every read of
    // the scale and bias inside their NR values (caller).
    unsafe {
        match finish {
            Finish::I32 { dst, ld } => {
                let (dst, ld) = (dst.add(r0 * *ld), *ld);
                for (r, acc) in c.iter().enumerate() {
                    for (v, &x) in acc.iter().enumerate() {
                        _mm512_mask_storeu_epi32(dst.add(r * ld + 16 * v), m[v], x);
                    }
                }
            }
            Finish::F32 { dst, ld, scale, bias } => {
                let (dst, ld, scale, bias) = (dst.add(r0 * *ld), *ld, *scale, *bias);
                for v in 0..2 {
                    let s = [_mm512_loadu_pd(scale.add(16 * v)), _mm512_loadu_pd(scale.add(16 * v + 8))];
                    let b = [_mm512_loadu_pd(bias.add(16 * v)), _mm512_loadu_pd(bias.add(16 * v + 8))];
                    let halves = m[v].to_le_bytes();
                    for (r, acc) in c.iter().enumerate() {
                        let x = acc[v];
                        let lo = _mm512_cvtepi32_pd(_mm512_castsi512_si256(x));
                        let hi = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64::<1>(x));
                        let lo = _mm512_cvtpd_ps(_mm512_add_pd(_mm512_mul_pd(lo, s[0]), b[0]));
                        let hi = _mm512_cvtpd_ps(_mm512_add_pd(_mm512_mul_pd(hi, s[1]), b[1]));
                        let p = dst.add(r * ld + 16 * v);
                        _mm256_mask_storeu_ps(p, halves[0], lo);
                        _mm256_mask_storeu_ps(p.add(8), halves[1], hi);
                    }
                }
            }
        }
    }
}

/// [`MicroKernel::epilogue`] for 32-column panels, eight rows at a time (the AMX kernel's
/// deferred epilogue, and its start from the correction, too): `rows` rows of `start`, then
/// `finish`.
///
/// # Safety
/// As `MicroKernel::epilogue` for these parts; AVX-512 F/BW/VL present.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn epilogue_zmm(start: &Start, finish: &Finish, rows: usize, cols: usize) {
    let mut r = 0;
    // SAFETY: rows `r .. r + 8` (or `r`) of the parts, inside `rows` (caller's contract).
    unsafe {
        while r + 8 <= rows {
            self::finish::<8>(&self::start::<8>(start, cols, r), finish, cols, r);
            r += 8;
        }
        while r < rows {
            self::finish::<1>(&self::start::<1>(start, cols, r), finish, cols, r);
            r += 1;
        }
    }
}

/// # Safety
/// `a` points to `kq` words, `b` to `kq * NR * 4` bytes, `out` to `NR` words; AVX-512 F/BW
/// and VNNI present.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn row_vnni(kq: usize, a: *const i32, b: *const i8, out: *mut i32) {
    let mut acc = [_mm512_setzero_si512(); 8];
    let mut q = 0;
    while q + 4 <= kq {
        // The weights stream once: ask for the 512 bytes 2 KiB ahead (a hint; harmless past
        // the end of the buffer).
        for line in 0..8 {
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(q * NR * 4 + 2048 + line * 64));
        }
        for u in 0..4 {
            // SAFETY: q + u < kq: word q + u of `a`, bytes (q + u) * 128 .. + 128 of `b`.
            unsafe {
                let bq = b.add((q + u) * NR * 4);
                let av = _mm512_set1_epi32(*a.add(q + u));
                acc[2 * u] = _mm512_dpbusd_epi32(acc[2 * u], av, _mm512_loadu_si512(bq.cast()));
                acc[2 * u + 1] = _mm512_dpbusd_epi32(acc[2 * u + 1], av, _mm512_loadu_si512(bq.add(64).cast()));
            }
        }
        q += 4;
    }
    while q < kq {
        // SAFETY: q < kq, as above.
        unsafe {
            let bq = b.add(q * NR * 4);
            let av = _mm512_set1_epi32(*a.add(q));
            acc[0] = _mm512_dpbusd_epi32(acc[0], av, _mm512_loadu_si512(bq.cast()));
            acc[1] = _mm512_dpbusd_epi32(acc[1], av, _mm512_loadu_si512(bq.add(64).cast()));
        }
        q += 1;
    }
    let lo = _mm512_add_epi32(_mm512_add_epi32(acc[0], acc[2]), _mm512_add_epi32(acc[4], acc[6]));
    let hi = _mm512_add_epi32(_mm512_add_epi32(acc[1], acc[3]), _mm512_add_epi32(acc[5], acc[7]));
    // SAFETY: `out` holds 32 words.
    unsafe {
        _mm512_storeu_si512(out.cast(), lo);
        _mm512_storeu_si512(out.add(16).cast(), hi);
    }
}
