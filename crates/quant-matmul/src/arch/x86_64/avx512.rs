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

use quant_traits::cpu::{has_feature, Avx512Vnni};

use super::super::decode::{DecodeKernel, FloatRows, GroupCodes, Panels, QuantizedRows, PANEL, ROUND, WIDE};
use super::super::{AWords, Finish, MicroKernel, Start, TileIo};
use super::decode::{self, kind_of, ASYM4, LEVELS4, MIN4, MIN6, MIN8, SIX_TOPS, SYM4, SYM6, SYM8};

const MR: usize = 12;
const NR: usize = 32;

impl MicroKernel for Avx512Vnni {
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

/// The decode product: 16-channel zmm panels for the int8 mode (a lone lane group, the last of
/// an odd count, takes the ymm kernel with this tier's VNNI), the shared AVX2 + FMA float mode.
impl DecodeKernel for Avx512Vnni {
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
        // SAFETY: forwarded from the trait contract (the tier has AVX2 and AVX-512 VL/VNNI).
        unsafe { decode::panel_avx512vnni(w, a, rows, p) }
    }

    unsafe fn wide_i8<const R: usize>(
        w: &Panels<'_>,
        a: &QuantizedRows<'_>,
        rows: [usize; R],
        p: usize,
    ) -> Option<[[[f32; PANEL]; 2]; R]> {
        if w.width() != WIDE {
            return None;
        }
        // SAFETY: forwarded from the trait contract; the weights are in the 16-channel layout.
        // One kernel per code kind, so that each one's arithmetic is fixed when it compiles.
        let lanes = unsafe {
            match w.codes_kind() {
                GroupCodes::Sym4 => wide_avx512vnni::<R, SYM4>(w, a, rows, p),
                GroupCodes::Asym4 => wide_avx512vnni::<R, ASYM4>(w, a, rows, p),
                GroupCodes::Min4 => wide_avx512vnni::<R, MIN4>(w, a, rows, p),
                GroupCodes::Sym8 => wide_avx512vnni::<R, SYM8>(w, a, rows, p),
                GroupCodes::Min8 => wide_avx512vnni::<R, MIN8>(w, a, rows, p),
                GroupCodes::Levels4 if has_feature("avx512_vbmi") => wide_avx512vbmi::<R, LEVELS4>(w, a, rows, p),
                GroupCodes::Levels4 => wide_avx512vnni::<R, LEVELS4>(w, a, rows, p),
                GroupCodes::Sym6 => wide_avx512vnni::<R, SYM6>(w, a, rows, p),
                GroupCodes::Min6 => wide_avx512vnni::<R, MIN6>(w, a, rows, p),
            }
        };
        Some(lanes.map(|l| {
            let mut halves = [[0f32; PANEL]; 2];
            halves[0].copy_from_slice(&l[..PANEL]);
            halves[1].copy_from_slice(&l[PANEL..]);
            halves
        }))
    }

    unsafe fn panels_f32<const R: usize, const P: usize>(
        w: &Panels<'_>,
        a: &FloatRows<'_>,
        rows: [usize; R],
        p: usize,
        scratch: Option<&[f32]>,
    ) -> [[[f32; PANEL]; P]; R] {
        // SAFETY: forwarded from the trait contract (the tier has AVX2 and FMA).
        unsafe { decode::panels_f32(w, a, rows, p, scratch) }
    }

    unsafe fn dequantize(w: &Panels<'_>, p: usize, count: usize, out: &mut [f32]) -> bool {
        // SAFETY: as above.
        unsafe { decode::dequantize(w, p, count, out) }
    }
}

/// Four activation codes broadcast to every 32-bit lane of a zmm register.
///
/// # Safety
/// `x` points to 4 readable bytes; AVX-512 F present.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn quad_zmm(x: *const i8) -> __m512i {
    // SAFETY: 4 readable bytes (caller); unaligned read.
    _mm512_set1_epi32(unsafe { x.cast::<i32>().read_unaligned() })
}

/// The lines 2 KiB (into L1) and 16 KiB (into L2) past byte `at` of a group's codes, asked
/// for as the line at `at` is read: with few rows the codes stream once, and the hardware's
/// prefetch alone leaves a core short of the memory's bandwidth; a pair of hints a line keeps
/// them ahead without a loop of its own (hints; harmless past the weights).
#[inline]
#[target_feature(enable = "avx512f")]
fn ahead(codes: &[u8], at: usize) {
    _mm_prefetch::<_MM_HINT_T0>(codes.as_ptr().wrapping_add(2048 + at).cast());
    decode::ahead_l2(codes.as_ptr().wrapping_add(at));
}

/// Each row's integer chains of a group, started at `init` (the row's `-o · Σ q`, so that the
/// sum ends at the signed dot product): one chain a row from four rows on (enough
/// independent `vpdpbusd` in flight), two below (the second started at 0), summed at the end
/// (exact integers, so the split changes nothing).
///
/// # Safety
/// AVX-512 F present.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn chains<const R: usize>(init: [i32; R]) -> [[__m512i; 2]; R] {
    init.map(|v| [_mm512_set1_epi32(v), _mm512_setzero_si512()])
}

/// The chain a row's `n`-th `vpdpbusd` of a step goes to (see [`chains`]).
const fn chain<const R: usize>(n: usize) -> usize {
    if R >= 4 {
        0
    } else {
        n % 2
    }
}

/// The sum of a row's chains (see [`chains`]).
///
/// # Safety
/// AVX-512 F present.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn total<const R: usize>(acc: [[__m512i; 2]; R]) -> [__m512i; R] {
    acc.map(|[a, b]| if R >= 4 { a } else { _mm512_add_epi32(a, b) })
}

/// One group's sixteen sums for each of `R` rows, from `init`, for the kinds whose codes come
/// a step of eight inputs at a time as nibbles: per step one 64-byte load, asked for 2 KiB
/// ahead ([`ahead`]), split into its low nibbles (inputs `8e .. 8e + 4` of the sixteen
/// channels) and high nibbles (`8e + 4 .. 8e + 8`) as the kind's unsigned bytes by
/// `bytes(load)`, and two `vpdpbusd` a row.
///
/// # Safety
/// `codes` holds the panel's group (its nibbles `64` bytes a step from the start); each
/// `xs[i]` points to the group's `group` activation codes (`group` a multiple of 16); `bytes`
/// reads only what its caller vouches for; AVX-512 F/BW and VNNI present.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn nibble_dots<const R: usize>(
    codes: &[u8],
    xs: [*const i8; R],
    group: usize,
    init: [i32; R],
    mut bytes: impl FnMut(__m512i) -> (__m512i, __m512i),
) -> [__m512i; R] {
    // SAFETY: AVX-512 F present (this function's features).
    let mut acc = unsafe { chains(init) };
    // Steps in pairs (`group / 8` is even), a loop's bookkeeping for two.
    for pair in (0..group / 8).step_by(2) {
        for e in [pair, pair + 1] {
            // SAFETY: 64 code bytes at `e * 64` and 8 activation codes at `e * 8` (caller).
            unsafe {
                let v = _mm512_loadu_si512(codes.as_ptr().add(e * 64).cast());
                ahead(codes, e * 64);
                let (lo, hi) = bytes(v);
                for i in 0..R {
                    let (c0, c1) = (chain::<R>(0), chain::<R>(1));
                    acc[i][c0] = _mm512_dpbusd_epi32(acc[i][c0], lo, quad_zmm(xs[i].add(8 * e)));
                    acc[i][c1] = _mm512_dpbusd_epi32(acc[i][c1], hi, quad_zmm(xs[i].add(8 * e + 4)));
                }
            }
        }
    }
    // SAFETY: as above.
    unsafe { total(acc) }
}

/// One group's sixteen dot products for each of `R` rows, 4-bit weights, plus `init`: the
/// nibbles as they are ([`nibble_dots`]).
///
/// # Safety
/// `codes` holds the panel's `group * 8` bytes; each `xs[i]` points to the group's `group`
/// activation codes (`group` a multiple of 16); AVX-512 F/BW and VNNI present.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn four_zmm<const R: usize>(codes: &[u8], xs: [*const i8; R], group: usize, init: [i32; R]) -> [__m512i; R] {
    // SAFETY: forwarded (the caller's contract).
    unsafe { nibble_dots(codes, xs, group, init, |v| split(v)) }
}

/// A 64-byte load of nibbles split into its low and its high nibbles, a byte each.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn split(v: __m512i) -> (__m512i, __m512i) {
    let nibble = _mm512_set1_epi8(0x0f);
    (_mm512_and_si512(v, nibble), _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble))
}

/// One group's sixteen sums `init + Σ u · q` for each of `R` rows, `Sym6` weights (`u` in
/// `0..=63`; `init = ROUND_BITS - 32 · Σ q` makes the sum `ROUND_BITS` plus the signed dot
/// product): per step of eight inputs the low nibbles as [`nibble_dots`] reads them, and each
/// input's top two bits from the high plane (64 bytes a pair of steps, a byte per lane: the
/// first step's nibble, then the second's), looked up in two 16-entry tables that put them at
/// bits 4 and 5 (`vpshufb`), or-ed in. Its own loop, by pairs of steps, so that each line of
/// top bits is loaded and split once for both steps.
///
/// # Safety
/// `codes` holds the panel's group (`group · 12` bytes); each `xs[i]` points to the group's
/// `group` activation codes (`group` a multiple of 16); AVX-512 F/BW and VNNI present.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn six_zmm<const R: usize>(codes: &[u8], xs: [*const i8; R], group: usize, init: [i32; R]) -> [__m512i; R] {
    let nibble = _mm512_set1_epi8(0x0f);
    // SAFETY: 16-byte loads of 16-byte arrays.
    let [first, second] = SIX_TOPS.map(|t| _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(t.as_ptr().cast()) }));
    let high = group * 8; // the top bits follow the group's low nibbles
                          // SAFETY: AVX-512 F present (this function's features).
    let mut acc = unsafe { chains(init) };
    for t in 0..group / 16 {
        // SAFETY: 64 bytes of top bits at `high + t * 64` (caller).
        let h = unsafe { _mm512_loadu_si512(codes.as_ptr().add(high + t * 64).cast()) };
        let tops = [_mm512_and_si512(h, nibble), _mm512_and_si512(_mm512_srli_epi16::<4>(h), nibble)];
        for (s, top) in tops.into_iter().enumerate() {
            let e = 2 * t + s;
            // SAFETY: 64 code bytes at `e * 64` and 8 activation codes at `e * 8` (caller).
            unsafe {
                let v = _mm512_loadu_si512(codes.as_ptr().add(e * 64).cast());
                // The pair's three lines of the group's bytes, low nibbles then tops, as
                // its two steps and the top bits are read (the tops just after the loop).
                ahead(codes, e * 64);
                let (lo, hi) = (_mm512_and_si512(v, nibble), _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble));
                let lo = _mm512_or_si512(lo, _mm512_shuffle_epi8(first, top));
                let hi = _mm512_or_si512(hi, _mm512_shuffle_epi8(second, top));
                for i in 0..R {
                    let (c0, c1) = (chain::<R>(0), chain::<R>(1));
                    acc[i][c0] = _mm512_dpbusd_epi32(acc[i][c0], lo, quad_zmm(xs[i].add(8 * e)));
                    acc[i][c1] = _mm512_dpbusd_epi32(acc[i][c1], hi, quad_zmm(xs[i].add(8 * e + 4)));
                }
            }
        }
        ahead(codes, high + t * 64);
    }
    // SAFETY: as above.
    unsafe { total(acc) }
}

/// The levels plus 128 (`L[u] + 128`, flipping an `i8`'s top bit adds 128 to it as a `u8`) in
/// each 128-bit quarter of a register: the table of [`levels_zmm`] and [`levels_vbmi_zmm`] (for
/// `vpermb`, which indexes all 64 bytes by six bits, the four copies make the two bits above
/// the nibble irrelevant).
///
/// # Safety
/// AVX-512 F present.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn levels_table(levels: &[i8; 16]) -> __m512i {
    let offset: [u8; 16] = core::array::from_fn(|i| levels[i].to_ne_bytes()[0] ^ 0x80);
    // SAFETY: a 16-byte load of a 16-byte array.
    _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(offset.as_ptr().cast()) })
}

/// One group's sixteen sums `init + Σ (L[u] + 128) · q` for each of `R` rows, `Levels4`
/// weights: each step's nibbles looked up in `table` ([`levels_table`]) in registers
/// (`vpshufb` on each 128-bit quarter), unsigned bytes `0..=255` that `vpdpbusd` takes as
/// they are; `init = -128 · Σ q` makes it the signed dot product (exact: every partial sum
/// is at most `255 · 127 · 256 < 2^31` in magnitude).
///
/// # Safety
/// As [`four_zmm`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn levels_zmm<const R: usize>(
    codes: &[u8],
    xs: [*const i8; R],
    group: usize,
    table: __m512i,
    init: [i32; R],
) -> [__m512i; R] {
    let bytes = |v| {
        let (lo, hi) = split(v);
        (_mm512_shuffle_epi8(table, lo), _mm512_shuffle_epi8(table, hi))
    };
    // SAFETY: forwarded (the caller's contract).
    unsafe { nibble_dots(codes, xs, group, init, bytes) }
}

/// [`levels_zmm`]'s sums with AVX-512 VBMI: `vpermb` looks each byte up by its low six bits
/// in the four copies of the table, so the low nibbles need no mask and the high ones only
/// the shift (two operations a step fewer; the same bytes, so the same sums).
///
/// # Safety
/// As [`four_zmm`], and AVX-512 VBMI present.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
unsafe fn levels_vbmi_zmm<const R: usize>(
    codes: &[u8],
    xs: [*const i8; R],
    group: usize,
    table: __m512i,
    init: [i32; R],
) -> [__m512i; R] {
    let bytes = |v| (_mm512_permutexvar_epi8(v, table), _mm512_permutexvar_epi8(_mm512_srli_epi16::<4>(v), table));
    // SAFETY: forwarded (the caller's contract).
    unsafe { nibble_dots(codes, xs, group, init, bytes) }
}

/// One group's sixteen sums `init + Σ (w + 128) · q` for each of `R` rows, 8-bit weights: each
/// step's codes with their top bit flipped are `w + 128` as unsigned bytes, which `vpdpbusd`
/// takes as they are (one `vpxord` a step for every row); `init = -128 · Σ q` makes it the
/// signed dot product (exact: every partial sum is at most `255 · 127 · 256 < 2^31` in
/// magnitude).
///
/// # Safety
/// `codes` holds the panel's `group * 16` bytes; each `xs[i]` the group's `group` codes;
/// AVX-512 F/BW and VNNI present.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn eight_zmm<const R: usize>(codes: &[u8], xs: [*const i8; R], group: usize, init: [i32; R]) -> [__m512i; R] {
    let flip = _mm512_set1_epi8(i8::MIN);
    // SAFETY: AVX-512 F present (this function's features).
    let mut acc = unsafe { chains(init) };
    // `group / 4` is even (`group` a multiple of 16): steps in pairs, one to each chain.
    for q in (0..group / 4).step_by(2) {
        for (n, q) in [q, q + 1].into_iter().enumerate() {
            // SAFETY: 64 code bytes at `q * 64` and 4 activation codes at `q * 4` (caller).
            unsafe {
                let v = _mm512_xor_si512(_mm512_loadu_si512(codes.as_ptr().add(q * 64).cast()), flip);
                ahead(codes, q * 64);
                for i in 0..R {
                    let c = &mut acc[i][chain::<R>(n)];
                    *c = _mm512_dpbusd_epi32(*c, v, quad_zmm(xs[i].add(4 * q)));
                }
            }
        }
    }
    // SAFETY: as above.
    unsafe { total(acc) }
}

/// The 16-channel kernel of the int8 mode, made twice: [`wide_avx512vnni`] with the `vpshufb`
/// lookup of the `Levels4` codes, and [`wide_avx512vbmi`] with `vpermb`, for the CPUs with
/// AVX-512 VBMI (a function's target features cannot depend on its const parameters, so each
/// is its own function; the sums are the same).
macro_rules! wide_kernel {
    ($name:ident, $features:literal, $levels:ident) => {
        /// 16-channel panel `p`'s channels for each of `rows`, before the bias: the reference's
        /// operations lane by lane (see the module docs), on sixteen lanes; `KIND` is the
        /// weights' code kind ([`kind_of`]); `Levels4` codes looked up with `vpshufb`
        /// ([`wide_avx512vnni`]) or `vpermb` ([`wide_avx512vbmi`]).
        ///
        /// # Safety
        /// AVX-512 F/BW and VNNI present (and VBMI for [`wide_avx512vbmi`]); `p` is a panel of
        /// `w`, in the 16-channel layout, whose codes are of `KIND`; every row of `rows` is a
        /// row of `a`.
        #[target_feature(enable = $features)]
        unsafe fn $name<const R: usize, const KIND: u8>(
            w: &Panels<'_>,
            a: &QuantizedRows<'_>,
            rows: [usize; R],
            p: usize,
        ) -> [[f32; WIDE]; R] {
            let (group, groups) = (a.group, a.groups());
            let kind = kind_of(KIND);
            debug_assert_eq!(kind, w.codes_kind());
            debug_assert!(rows.iter().enumerate().all(|(i, &r)| r == rows[0] + i));
            let panel = w.wide_panel(p);
            // Each row's codes; its per-group values are `R` consecutive entries from `a.at(rows[0], g)`.
            let xs0 = a.row_starts(rows);
            // The scales: plain (`f32` a group and channel) or factored (an `i8` a group times an
            // `f32` a super-block), read through pointers that advance group by group (a group `g`
            // below `groups` reads inside them: the panel's slices hold `groups · 16` values, or
            // `groups / per · 16` for the factors).
            let (plain, zeros, plain_mins) = panel.all_params();
            let (all_codes, gb) = panel.all_codes();
            debug_assert_eq!(all_codes.len(), groups * gb);
            let zeros = zeros.as_ptr();
            let factored = panel.factored();
            let per = factored.map_or(groups, |f| f.per);
            let (with_min, round) = (kind.has_min(), _mm512_set1_ps(ROUND));
            let ints = |v: *const i8| {
                // SAFETY: 16 readable bytes (the caller's group, above).
                _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(unsafe { _mm_loadu_si128(v.cast()) }))
            };
            // SAFETY: 16 readable values (as above).
            let floats = |v: *const f32| unsafe { _mm512_loadu_ps(v) };
            // SAFETY: AVX-512 F present (this function's features).
            let table = unsafe { levels_table(&w.levels) };
            let mut acc = [_mm512_setzero_ps(); R];
            // Where group `g`'s per-group activation values start, `a.at(rows[0], g)`: a step of `m`
            // a group (a running index, not a product per group).
            let mut meta = a.at(rows[0], 0);
            for sup in 0..groups / per {
                // The super-block's factors (the factored form).
                let (d, dmin) = match factored {
                    Some(f) => {
                        let at = sup * WIDE;
                        let dmin =
                            if with_min { floats(f.super_mins.as_ptr().wrapping_add(at)) } else { _mm512_setzero_ps() };
                        (floats(f.supers.as_ptr().wrapping_add(at)), dmin)
                    }
                    None => (_mm512_setzero_ps(), _mm512_setzero_ps()),
                };
                // Two-level weights: the super-block's groups summed here first (step 3's second form).
                let mut t = [_mm512_setzero_ps(); R];
                for g in sup * per..(sup + 1) * per {
                    // Group `g`'s sixteen scales and minimums: the `f32` product of factor and integer
                    // (as `Panels::params` forms it), or the values.
                    let at = g * WIDE;
                    let (swv, mnv) = match factored {
                        Some(f) => {
                            let m = if with_min {
                                _mm512_mul_ps(dmin, ints(f.mins.as_ptr().wrapping_add(at)))
                            } else {
                                dmin
                            };
                            (_mm512_mul_ps(d, ints(f.scales.as_ptr().wrapping_add(at))), m)
                        }
                        None => {
                            let m = if with_min {
                                floats(plain_mins.as_ptr().wrapping_add(at))
                            } else {
                                _mm512_setzero_ps()
                            };
                            (floats(plain.as_ptr().wrapping_add(at)), m)
                        }
                    };
                    // SAFETY: the panel holds `groups` groups of `gb` bytes (`g < groups`).
                    let codes = unsafe { core::slice::from_raw_parts(all_codes.as_ptr().add(g * gb), gb) };
                    debug_assert_eq!(codes, panel.codes(g));
                    let at = meta;
                    debug_assert_eq!(at, a.at(rows[0], g));
                    // SAFETY: `xs0` are the starts of `R` consecutive rows of `a` (caller), `g` one of
                    // their groups, `at` its index.
                    let (xs, init, scaled) = unsafe { a.group_rows(&xs0, g, at) };
                    // SAFETY: the panel holds the group's codes for sixteen channels; `xs` point to the
                    // group's activations (`group` a multiple of 16); CPU features as above.
                    let raw = unsafe {
                        match kind {
                            GroupCodes::Sym4 | GroupCodes::Asym4 | GroupCodes::Min4 => four_zmm(codes, xs, group, init),
                            GroupCodes::Levels4 => $levels(codes, xs, group, table, init),
                            GroupCodes::Sym6 | GroupCodes::Min6 => six_zmm(codes, xs, group, init),
                            GroupCodes::Sym8 | GroupCodes::Min8 => eight_zmm(codes, xs, group, init),
                        }
                    };
                    // SAFETY: `zeros` holds 16 values a group (`Asym4`, the one kind that reads it);
                    // the scales (one-level: the blocks are the groups) and `scaled` hold `R` values
                    // (above).
                    unsafe {
                        for i in 0..R {
                            let d = if kind == GroupCodes::Asym4 {
                                let zv = _mm512_cvtepu8_epi32(_mm_loadu_si128(zeros.add(g * WIDE).cast()));
                                _mm512_sub_epi32(raw[i], _mm512_mullo_epi32(zv, _mm512_set1_epi32(a.sums[at + i])))
                            } else {
                                raw[i] // the offset is in `init`
                            };
                            // `d` holds the bits of `ROUND + d` (the sums start at `ROUND_BITS`): `d` as
                            // an `f32`, exactly, without a conversion (`vcvtdq2ps` shares the port of
                            // `vpdpbusd`).
                            let dv = _mm512_sub_ps(_mm512_castsi512_ps(d), round);
                            let m = _mm512_set1_ps(*scaled.add(i));
                            if a.two_level {
                                t[i] = _mm512_fmadd_ps(swv, dv, t[i]);
                                if with_min {
                                    t[i] = _mm512_fmadd_ps(mnv, m, t[i]);
                                }
                            } else {
                                let part = _mm512_mul_ps(_mm512_set1_ps(*a.block_scales(at + i)), dv);
                                acc[i] = _mm512_fmadd_ps(swv, part, acc[i]);
                                if with_min {
                                    acc[i] = _mm512_fmadd_ps(mnv, m, acc[i]);
                                }
                            }
                        }
                    }
                    meta += a.m;
                }
                if a.two_level {
                    let at = a.block_at(rows[0], sup);
                    for i in 0..R {
                        // SAFETY: the `R` rows' scales of block `sup` (above).
                        acc[i] = _mm512_fmadd_ps(t[i], _mm512_set1_ps(unsafe { *a.block_scales(at + i) }), acc[i]);
                    }
                }
            }
            let mut out = [[0f32; WIDE]; R];
            for (o, v) in out.iter_mut().zip(acc) {
                // SAFETY: a write of a 16-element array.
                unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) };
            }
            out
        }
    };
}

wide_kernel!(wide_avx512vnni, "avx512f,avx512bw,avx512vnni", levels_zmm);
wide_kernel!(wide_avx512vbmi, "avx512f,avx512bw,avx512vnni,avx512vbmi", levels_vbmi_zmm);

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

#[cfg(test)]
mod tests {
    use core::arch::x86_64::*;

    /// The `vpermb` lookup of `Levels4` codes gives the `vpshufb` lookup's sums lane for lane,
    /// on random nibbles and activations, for one and three rows, at group sizes 16, 32 and
    /// 64, with the levels of IQ4_NL and a table with every byte's top bit set and clear, and
    /// both against the sums written out in scalar code.
    #[test]
    #[expect(clippy::as_conversions, reason = "test data from a counter; lane sums to i64")]
    fn both_level_lookups_give_the_scalar_sums() {
        let features = ["avx512f", "avx512bw", "avx512_vnni", "avx512_vbmi"];
        if !features.iter().all(|f| quant_traits::cpu::has_feature(f)) {
            return; // this CPU runs neither lookup: nothing to compare
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let tables: [[i8; 16]; 2] = [
            [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
            core::array::from_fn(|i| if i % 2 == 0 { -128 + i as i8 } else { 127 - i as i8 }),
        ];
        for levels in &tables {
            for group in [16usize, 32, 64] {
                let codes: Vec<u8> = (0..group * 8).map(|_| next() as u8).collect();
                let xs: Vec<Vec<i8>> = (0..3).map(|_| (0..group).map(|_| next() as i8).collect()).collect();
                let init = [7i32, -300, 12345];
                // Lane `l` (channel `l`) of step `e`: byte `4l + j` of the step's 64 holds input
                // `8e + j` in its low nibble and `8e + 4 + j` in its high one.
                let want = |r: usize| -> Vec<i64> {
                    (0..16)
                        .map(|l| {
                            let mut sum = i64::from(init[r]);
                            for e in 0..group / 8 {
                                for j in 0..4 {
                                    let byte = codes[e * 64 + 4 * l + j];
                                    for (nib, input) in [(byte & 15, 8 * e + j), (byte >> 4, 8 * e + 4 + j)] {
                                        let u = i64::from(levels[usize::from(nib)]) + 128;
                                        sum += u * i64::from(xs[r][input]);
                                    }
                                }
                            }
                            sum
                        })
                        .collect()
                };
                let lanes = |v: __m512i| -> Vec<i64> {
                    let mut out = [0i32; 16];
                    // SAFETY: a 64-byte store to a 64-byte array.
                    unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), v) };
                    out.iter().map(|&v| i64::from(v)).collect()
                };
                // SAFETY: the CPU has the features (checked above); `codes` holds the group's
                // `group * 8` bytes and each row `group` activations.
                unsafe {
                    let table = super::levels_table(levels);
                    let one = [xs[0].as_ptr()];
                    let three = [xs[0].as_ptr(), xs[1].as_ptr(), xs[2].as_ptr()];
                    let shuffled = super::levels_zmm(&codes, one, group, table, [init[0]]);
                    let permuted = super::levels_vbmi_zmm(&codes, one, group, table, [init[0]]);
                    assert_eq!(lanes(shuffled[0]), want(0), "vpshufb, {levels:?}, group {group}");
                    assert_eq!(lanes(permuted[0]), want(0), "vpermb, {levels:?}, group {group}");
                    let shuffled = super::levels_zmm(&codes, three, group, table, init);
                    let permuted = super::levels_vbmi_zmm(&codes, three, group, table, init);
                    for r in 0..3 {
                        assert_eq!(lanes(shuffled[r]), want(r), "vpshufb row {r}, {levels:?}, group {group}");
                        assert_eq!(lanes(permuted[r]), want(r), "vpermb row {r}, {levels:?}, group {group}");
                    }
                }
            }
        }
    }
}
