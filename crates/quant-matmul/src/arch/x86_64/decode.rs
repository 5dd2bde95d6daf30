//! The decode product's shared x86-64 kernels (each tier's module picks its own), one lane group of eight output channels (ymm) or
//! one 16-channel panel (zmm, the int8 mode of the `avx512vnni` and `amx` tiers) for up to four
//! rows at a time (eight on zmm; each load of codes serves every row), the same bits as the
//! references ([`super::reference_panel_i8`], [`super::reference_panel_f32`]): the
//! int8-activation mode for each tier, one instance per code kind (its arithmetic fixed when
//! it compiles), and the float mode's one kernel (AVX2 + FMA) for all of them.
//!
//! # The int8-activation mode
//!
//! The panel layout (see [`GroupWeights`]) puts the eight channels' codes for four inputs in
//! one 32-byte load, each channel's four codes in one 32-bit lane. Against the four activation
//! codes broadcast to every lane, one `vpdpbusd` (VNNI tiers) or `vpmaddubsw` + `vpmaddwd`
//! (AVX2) adds each channel's four products to its own lane, so a group's eight integer dot
//! products come out in the eight lanes with no horizontal sums:
//! * 4-bit weights: the low nibbles of a 32-byte load are inputs `8e .. 8e + 4` and the high
//!   nibbles `8e + 4 .. 8e + 8`; the codes are unsigned (`0..=15`). On AVX2 the `i16` pair
//!   sums of four such steps (32 inputs) are added before widening: at most
//!   `4 · 2 · 2 · 15 · 127 = 30 480 < 2^15`.
//! * 8-bit weights: `|w| · (x · sign(w))`, which keeps the unsigned operand unsigned
//!   (`|w| <= 128`) and the signed one in range (`|x| <= 127`); `vpmaddubsw` pair sums are at
//!   most `2 · 128 · 127 < 2^15`.
//!
//! From there every lane does the reference's `f32` operations in the reference's order
//! (`acc = fma(s_w, s_x · d, acc)`, then `acc = fma(m, s_x · σ, acc)` with a minimum; for
//! super-block activation scales `t = fma(s_w, d, t)`, `t = fma(m, σ, t)`, and
//! `acc = fma(t, s_x, acc)` a super-block), so the result is the same on every tier.
//!
//! The zmm kernel does the same on sixteen lanes, one 64-byte load a step. Its 8-bit codes and
//! its levels (`Levels4`, looked up with `vpshufb`, or with `vpermb` on the CPUs with AVX-512
//! VBMI, which needs no mask of the nibbles) go to `vpdpbusd` as `w + 128`, unsigned
//! bytes (the top bit flipped, once a step for every row), and `128 · Σ q` is subtracted per
//! group, as `Sym4`'s offset of 8 is: each row's integer sum starts at `-o · Σ q`
//! (precomputed with the codes), so the offset costs nothing per group, and there is no
//! per-row sign work (`vpdpbusd` does not saturate, where AVX2's `vpmaddubsw` would). Below
//! four rows each row keeps two integer chains (exact, so summing them at the end changes
//! nothing); the rows are consecutive, so one pointer reaches every row's per-group values.
//! The codes are prefetched 2 KiB ahead: with one row they stream from memory once. The eight-channel kernels read a
//! 16-channel panel as its two halves (each step's first or last 32 bytes).

use core::arch::x86_64::*;

use crate::arch::decode::{FloatRows, GroupCodes, Panel, Panels, QuantizedRows, PANEL, ROUND, ROUND_BITS};

/// Step 1 of the int8 mode for one row's group, eight lanes at a time, every operation the
/// reference's ([`crate::arch::decode::reference_quantize_group`]): the maximum magnitude
/// (exact, in any order), one `f32` division a value, the `1.5 · 2^23` rounding, the clamp,
/// then the integers (exact) packed to bytes; and `Σ q`.
///
/// # Safety
/// AVX2 present; `x` and `q` have the same length, a multiple of 16.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize_group(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    debug_assert!(x.len() == q.len() && x.len().is_multiple_of(16));
    let magnitude = _mm256_set1_ps(-0.0);
    let mut m = _mm256_setzero_ps();
    for c in x.chunks_exact(8) {
        // SAFETY: an 8-value chunk.
        m = _mm256_max_ps(m, _mm256_andnot_ps(magnitude, unsafe { _mm256_loadu_ps(c.as_ptr()) }));
    }
    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps::<1>(m, m)));
    if amax == 0.0 {
        q.fill(0);
        return (0.0, 0);
    }
    let s = amax / 127.0;
    let (sv, round) = (_mm256_set1_ps(s), _mm256_set1_ps(ROUND));
    let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
    let code = |v: __m256| {
        let r = _mm256_sub_ps(_mm256_add_ps(_mm256_div_ps(v, sv), round), round);
        _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi)) // integers: exact
    };
    let mut sums = _mm256_setzero_si256();
    for (c, o) in x.chunks_exact(16).zip(q.chunks_exact_mut(16)) {
        // SAFETY: 16-value chunks of `x` and `q`.
        unsafe {
            let (a, b) = (code(_mm256_loadu_ps(c.as_ptr())), code(_mm256_loadu_ps(c.as_ptr().add(8))));
            sums = _mm256_add_epi32(sums, _mm256_add_epi32(a, b));
            // `packs` works within 128-bit halves: a0..3 b0..3 a4..7 b4..7, reordered to a, b.
            let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(a, b));
            let bytes = _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
            _mm_storeu_si128(o.as_mut_ptr().cast(), bytes);
        }
    }
    let t = _mm_add_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256::<1>(sums));
    let t = _mm_add_epi32(t, _mm_shuffle_epi32::<0b01_00_11_10>(t));
    let t = _mm_add_epi32(t, _mm_shuffle_epi32::<0b10_11_00_01>(t));
    (s, _mm_cvtsi128_si32(t))
}

/// Group `g`'s eight scales and minimums (0 without `with_min`) of a lane group, from either
/// form: the plain `f32` values, or the factored form's `factor · k` (the `f32` product
/// [`Panels::params`] forms). A macro, so that it is always inlined into the kernels.
///
/// Safety: AVX2 present; `g` is a group of the lane group (the caller's `unsafe` block).
macro_rules! scales_ymm {
    ($panel:expr, $g:expr, $with_min:expr) => {{
        // Each slice holds at least 8 values from its start (the lane group's channels).
        let ints = |v: &[i8]| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(v.as_ptr().cast())));
        let floats = |v: &[f32]| _mm256_loadu_ps(v.as_ptr());
        match $panel.factored() {
            Some(f) => {
                let ([sc, mc], [d, dm]) = f.group($g);
                let m = if $with_min { _mm256_mul_ps(floats(dm), ints(mc)) } else { _mm256_setzero_ps() };
                (_mm256_mul_ps(floats(d), ints(sc)), m)
            }
            None => {
                let (sw, _, mn) = $panel.params($g);
                (floats(sw), if $with_min { floats(mn) } else { _mm256_setzero_ps() })
            }
        }
    }};
}

/// Four activation codes broadcast to every 32-bit lane.
///
/// # Safety
/// `x` points to 4 readable bytes; AVX2 present.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn quad(x: *const i8) -> __m256i {
    // SAFETY: 4 readable bytes (caller); unaligned read.
    _mm256_set1_epi32(unsafe { x.cast::<i32>().read_unaligned() })
}

/// The line 16 KiB past `at` into L2, asked for as the codes at `at` are read: with few rows
/// the codes stream once, and the hardware's prefetch alone leaves a core short of the memory's
/// bandwidth (a hint; harmless past the weights). The ymm and zmm kernels both ask through it.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn ahead_l2(at: *const u8) {
    _mm_prefetch::<_MM_HINT_T1>(at.wrapping_add(16384).cast());
}

/// Step `e` of a panel's 4-bit codes: its 32-byte load split into the low nibbles (inputs
/// `8e .. 8e + 4` of the eight channels) and the high nibbles (`8e + 4 .. 8e + 8`), each a byte
/// `0..=15`.
///
/// # Safety
/// `codes` has 32 readable bytes at `e * step`; AVX2 present.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nibbles(codes: *const u8, e: usize, step: usize) -> (__m256i, __m256i) {
    let nibble = _mm256_set1_epi8(0x0f);
    // SAFETY: 32 readable bytes (caller); unaligned load.
    let v = unsafe { _mm256_loadu_si256(codes.add(e * step).cast()) };
    ahead_l2(codes.wrapping_add(e * step));
    (_mm256_and_si256(v, nibble), _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble))
}

/// `Sym6`'s two lookup tables, indexed by a lane's nibble of top bits: the first input's two
/// bits (bits 0-1) and the second's (bits 2-3), each moved to bits 4 and 5.
pub(super) const SIX_TOPS: [[u8; 16]; 2] = [
    [0, 16, 32, 48, 0, 16, 32, 48, 0, 16, 32, 48, 0, 16, 32, 48],
    [0, 0, 0, 0, 16, 16, 16, 16, 32, 32, 32, 32, 48, 48, 48, 48],
];

/// Step `e` of a lane group's `Sym6` codes: the low nibbles as [`nibbles`] reads them, with
/// each input's top two bits or-ed in at bits 4 and 5 from the high plane (`high`: the pair of
/// steps' 32 bytes, a byte per lane, this step's nibble low for even `e` and high for odd),
/// looked up in two 16-entry tables with `vpshufb`; each code a byte `0..=63`.
///
/// # Safety
/// `codes` has 32 readable bytes at `e * step`, `high` 32 at `e / 2 * step`; AVX2 present.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn six_codes(codes: *const u8, high: &[u8], e: usize, step: usize) -> (__m256i, __m256i) {
    // SAFETY: as this function's.
    unsafe {
        let (lo, hi) = nibbles(codes, e, step);
        let v = _mm256_loadu_si256(high.as_ptr().add(e / 2 * step).cast());
        if e.is_multiple_of(2) {
            ahead_l2(high.as_ptr().wrapping_add(e / 2 * step));
        }
        let v = if e.is_multiple_of(2) { v } else { _mm256_srli_epi16::<4>(v) };
        let h = _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
        let [first, second] = SIX_TOPS.map(|t| _mm256_broadcastsi128_si256(_mm_loadu_si128(t.as_ptr().cast())));
        (_mm256_or_si256(lo, _mm256_shuffle_epi8(first, h)), _mm256_or_si256(hi, _mm256_shuffle_epi8(second, h)))
    }
}

/// One group's eight sums `init + Σ u · q` for each of `R` rows, `Sym6` weights, AVX2: the
/// codes `0..=63` of [`six_codes`] against the activations with `vpmaddubsw`, whose pair sums
/// (at most `2 · 63 · 127`) are added two at a time (`32 004 < 2^15`) before widening.
///
/// # Safety
/// `codes` holds the lane group's group (`group · 4` bytes of low nibbles from it, a step
/// every `step`), `high` its high plane ([`Panel::high`]); each `xs[i]` points to the group's
/// `group` activation codes (`group` a multiple of 16); AVX2 present.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn six_avx2<const R: usize>(
    codes: &[u8],
    high: &[u8],
    step: usize,
    xs: [*const i8; R],
    group: usize,
    init: [i32; R],
) -> [__m256i; R] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = init.map(|v| _mm256_set1_epi32(v));
    for e in 0..group / 8 {
        // SAFETY: the step's code bytes and 8 activation codes at `e * 8` (caller).
        unsafe {
            let (lo, hi) = six_codes(codes.as_ptr(), high, e, step);
            for i in 0..R {
                let t = _mm256_add_epi16(
                    _mm256_maddubs_epi16(lo, quad(xs[i].add(8 * e))),
                    _mm256_maddubs_epi16(hi, quad(xs[i].add(8 * e + 4))),
                );
                acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(t, ones));
            }
        }
    }
    acc
}

/// One group's eight sums `init + Σ u · q` for each of `R` rows, 4-bit weights, AVX2 (`init =
/// -8 · Σ q` makes `Sym4`'s the signed dot product): each 32-byte load of codes (and its two
/// nibble masks) serves every row.
///
/// # Safety
/// `codes` holds the panel's `group * 4` bytes; each `xs[i]` points to the group's `group`
/// activation codes (`group` a multiple of 16).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn four_avx2<const R: usize>(
    codes: &[u8],
    step: usize,
    xs: [*const i8; R],
    group: usize,
    init: [i32; R],
) -> [__m256i; R] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = init.map(|v| _mm256_set1_epi32(v));
    let steps = group / 8;
    for b in (0..steps).step_by(4) {
        let mut t = [_mm256_setzero_si256(); R];
        for e in b..(b + 4).min(steps) {
            // SAFETY: 32 code bytes at `e * step` and 8 activation codes at `e * 8` (caller).
            unsafe {
                let (lo, hi) = nibbles(codes.as_ptr(), e, step);
                for i in 0..R {
                    t[i] = _mm256_add_epi16(t[i], _mm256_maddubs_epi16(lo, quad(xs[i].add(8 * e))));
                    t[i] = _mm256_add_epi16(t[i], _mm256_maddubs_epi16(hi, quad(xs[i].add(8 * e + 4))));
                }
            }
        }
        for i in 0..R {
            acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(t[i], ones));
        }
    }
    acc
}

/// One group's eight dot products for each of `R` rows, 8-bit weights, AVX2, plus
/// `ROUND_BITS`: `|w| · (x · sign(w))` on the signed codes (`vpmaddubsw` would saturate on
/// `w + 128`; `_init`, the VNNI kernels' start for `w + 128`, is unused here).
///
/// # Safety
/// `codes` holds the panel's `group * 8` bytes; each `xs[i]` the group's `group` codes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn eight_avx2<const R: usize>(
    codes: &[u8],
    step: usize,
    xs: [*const i8; R],
    group: usize,
    _init: [i32; R],
) -> [__m256i; R] {
    let mut acc = [_mm256_set1_epi32(ROUND_BITS); R];
    for q in 0..group / 4 {
        // SAFETY: 32 code bytes at `q * step` and 4 activation codes at `q * 4` (caller).
        unsafe { signed_step(&mut acc, _mm256_loadu_si256(codes.as_ptr().add(q * step).cast()), xs, 4 * q) };
        ahead_l2(codes.as_ptr().wrapping_add(q * step));
    }
    acc
}

/// One step of signed 8-bit weights `v` (eight channels' four inputs each) against each row's
/// four activation codes at `at`: `|w| · (x · sign(w))` into `acc` (`vpmaddubsw` pair sums at
/// most `2 · 128 · 127 < 2^15`, then `vpmaddwd` to 32 bits).
///
/// # Safety
/// Each `xs[i]` has 4 readable bytes at `at`; AVX2 present.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn signed_step<const R: usize>(acc: &mut [__m256i; R], v: __m256i, xs: [*const i8; R], at: usize) {
    let (ones, magnitude) = (_mm256_set1_epi16(1), _mm256_abs_epi8(v));
    for i in 0..R {
        // SAFETY: 4 readable bytes at `at` (caller).
        let signed = _mm256_sign_epi8(unsafe { quad(xs[i].add(at)) }, v);
        acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, signed), ones));
    }
}

/// The 16 levels of `Levels4` in both 128-bit halves, for `vpshufb` to look nibbles up in.
///
/// # Safety
/// AVX2 present.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn level_table(levels: &[i8; 16]) -> __m256i {
    // SAFETY: a 16-byte load of a 16-byte array.
    _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(levels.as_ptr().cast()) })
}

/// One group's eight dot products for each of `R` rows, `Levels4` weights, AVX2, plus
/// `ROUND_BITS`: each step's nibbles looked up in the level table in registers (`vpshufb`),
/// then as 8-bit weights (`_init` unused, as in [`eight_avx2`]).
///
/// # Safety
/// As [`four_avx2`].
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn levels_avx2<const R: usize>(
    codes: &[u8],
    step: usize,
    xs: [*const i8; R],
    group: usize,
    levels: &[i8; 16],
    _init: [i32; R],
) -> [__m256i; R] {
    // SAFETY: AVX2 present (this function's features).
    let table = unsafe { level_table(levels) };
    let mut acc = [_mm256_set1_epi32(ROUND_BITS); R];
    for e in 0..group / 8 {
        // SAFETY: 32 code bytes at `e * step` and 8 activation codes at `e * 8` (caller).
        unsafe {
            let (lo, hi) = nibbles(codes.as_ptr(), e, step);
            signed_step(&mut acc, _mm256_shuffle_epi8(table, lo), xs, 8 * e);
            signed_step(&mut acc, _mm256_shuffle_epi8(table, hi), xs, 8 * e + 4);
        }
    }
    acc
}

macro_rules! vnni_steps {
    ($dots:ident, $four:ident, $eight:ident, $levels:ident, $six:ident, $features:literal, $dpbusd:ident) => {
        /// One group's eight sums for each of `R` rows, from `init`, for the kinds whose codes
        /// come a step of eight inputs at a time: `bytes(e)` gives step `e`'s unsigned bytes
        /// (inputs `8e .. 8e + 4` of the eight channels, then `8e + 4 .. 8e + 8`), and each row
        /// adds both against its activations, two `vpdpbusd`.
        ///
        /// # Safety
        /// Each `xs[i]` points to the group's `group` activation codes (`group` a multiple of
        /// 16); `bytes` reads only what its caller vouches for; the CPU has the features in
        /// `target_feature`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $dots<const R: usize>(
            xs: [*const i8; R],
            group: usize,
            init: [i32; R],
            mut bytes: impl FnMut(usize) -> (__m256i, __m256i),
        ) -> [__m256i; R] {
            let mut acc = init.map(|v| _mm256_set1_epi32(v));
            for e in 0..group / 8 {
                let (lo, hi) = bytes(e);
                for i in 0..R {
                    // SAFETY: 8 activation codes at `e * 8` (caller).
                    unsafe {
                        acc[i] = $dpbusd(acc[i], lo, quad(xs[i].add(8 * e)));
                        acc[i] = $dpbusd(acc[i], hi, quad(xs[i].add(8 * e + 4)));
                    }
                }
            }
            acc
        }

        /// One group's eight sums `init + Σ u · q` for each of `R` rows, `Sym6` weights
        /// (`init = ROUND_BITS - 32 · Σ q`), `vpdpbusd` on the codes `0..=63` ([`six_codes`]).
        ///
        /// # Safety
        /// As [`six_avx2`]; the CPU has the features in `target_feature`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $six<const R: usize>(
            codes: &[u8],
            high: &[u8],
            step: usize,
            xs: [*const i8; R],
            group: usize,
            init: [i32; R],
        ) -> [__m256i; R] {
            // SAFETY: the step's code bytes and top bits (caller); the rest forwarded.
            unsafe { $dots(xs, group, init, |e| six_codes(codes.as_ptr(), high, e, step)) }
        }

        /// One group's eight dot products for each of `R` rows, `Levels4` weights: `vpdpbusd`
        /// on the levels plus 128 looked up in registers (unsigned bytes), from `init`
        /// (each row's `-128 · Σ q` of the group).
        ///
        /// # Safety
        /// As [`four_avx2`]; the CPU has the features in `target_feature`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $levels<const R: usize>(
            codes: &[u8],
            step: usize,
            xs: [*const i8; R],
            group: usize,
            levels: &[i8; 16],
            init: [i32; R],
        ) -> [__m256i; R] {
            // L + 128: flipping an i8's top bit adds 128 to it as a u8.
            let offset: [i8; 16] = core::array::from_fn(|i| levels[i] ^ i8::MIN);
            // SAFETY: AVX2 present (this function's features).
            let table = unsafe { level_table(&offset) };
            let bytes = |e| {
                // SAFETY: 32 code bytes at `e * step` (caller).
                let (lo, hi) = unsafe { nibbles(codes.as_ptr(), e, step) };
                (_mm256_shuffle_epi8(table, lo), _mm256_shuffle_epi8(table, hi))
            };
            // SAFETY: forwarded (the caller's contract).
            unsafe { $dots(xs, group, init, bytes) }
        }

        /// One group's eight sums `init + Σ u · q` for each of `R` rows, 4-bit weights,
        /// `vpdpbusd`.
        ///
        /// # Safety
        /// As [`four_avx2`]; the CPU has the features in `target_feature`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $four<const R: usize>(
            codes: &[u8],
            step: usize,
            xs: [*const i8; R],
            group: usize,
            init: [i32; R],
        ) -> [__m256i; R] {
            // SAFETY: 32 code bytes at `e * step` (caller); the rest forwarded.
            unsafe { $dots(xs, group, init, |e| nibbles(codes.as_ptr(), e, step)) }
        }

        /// One group's eight dot products for each of `R` rows, 8-bit weights: `vpdpbusd` on
        /// the codes plus 128 (the top bit flipped: unsigned bytes), from `init` (each row's
        /// `-128 · Σ q`).
        ///
        /// # Safety
        /// As [`eight_avx2`]; the CPU has the features in `target_feature`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $eight<const R: usize>(
            codes: &[u8],
            step: usize,
            xs: [*const i8; R],
            group: usize,
            init: [i32; R],
        ) -> [__m256i; R] {
            let flip = _mm256_set1_epi8(i8::MIN);
            let mut acc = init.map(|v| _mm256_set1_epi32(v));
            for q in 0..group / 4 {
                // SAFETY: 32 code bytes at `q * step` and 4 activation codes at `q * 4` (caller).
                unsafe {
                    let v = _mm256_xor_si256(_mm256_loadu_si256(codes.as_ptr().add(q * step).cast()), flip);
                    ahead_l2(codes.as_ptr().wrapping_add(q * step));
                    for i in 0..R {
                        acc[i] = $dpbusd(acc[i], v, quad(xs[i].add(4 * q)));
                    }
                }
            }
            acc
        }
    };
}

vnni_steps!(
    dots_avxvnni,
    four_avxvnni,
    eight_avxvnni,
    levels_avxvnni,
    six_avxvnni,
    "avx2,avxvnni",
    _mm256_dpbusd_avx_epi32
);
vnni_steps!(
    dots_avx512vnni,
    four_avx512vnni,
    eight_avx512vnni,
    levels_avx512vnni,
    six_avx512vnni,
    "avx2,avx512f,avx512vl,avx512vnni",
    _mm256_dpbusd_epi32
);

/// The code kinds as const generic arguments of the int8-mode kernels, so that each kind's
/// arithmetic is fixed when its kernel compiles (no dispatch per row and group).
pub(super) const SYM4: u8 = 0;
pub(super) const ASYM4: u8 = 1;
pub(super) const MIN4: u8 = 2;
pub(super) const SYM8: u8 = 3;
pub(super) const MIN8: u8 = 4;
pub(super) const LEVELS4: u8 = 5;
pub(super) const SYM6: u8 = 6;
pub(super) const MIN6: u8 = 7;

/// The code kind a const generic argument stands for.
pub(super) const fn kind_of(kind: u8) -> GroupCodes {
    match kind {
        SYM4 => GroupCodes::Sym4,
        ASYM4 => GroupCodes::Asym4,
        MIN4 => GroupCodes::Min4,
        SYM8 => GroupCodes::Sym8,
        MIN8 => GroupCodes::Min8,
        SYM6 => GroupCodes::Sym6,
        MIN6 => GroupCodes::Min6,
        _ => GroupCodes::Levels4,
    }
}

macro_rules! group_kernel {
    ($name:ident, $inner:ident, $features:literal, $four:ident, $eight:ident, $levels:ident, $six:ident) => {
        /// Panel `p`'s eight output channels for each of `rows`, before the bias: the kernel of
        /// `w`'s code kind.
        ///
        /// # Safety
        /// The CPU has the features in `target_feature`; `p` is a panel of `w`; every row of
        /// `rows` is a row of `a`.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name<const R: usize>(
            w: &Panels<'_>,
            a: &QuantizedRows<'_>,
            rows: [usize; R],
            p: usize,
        ) -> [[f32; PANEL]; R] {
            // SAFETY: forwarded (the caller's contract); each instance gets weights of its kind.
            unsafe {
                match w.codes_kind() {
                    GroupCodes::Sym4 => $inner::<R, SYM4>(w, a, rows, p),
                    GroupCodes::Asym4 => $inner::<R, ASYM4>(w, a, rows, p),
                    GroupCodes::Min4 => $inner::<R, MIN4>(w, a, rows, p),
                    GroupCodes::Sym8 => $inner::<R, SYM8>(w, a, rows, p),
                    GroupCodes::Min8 => $inner::<R, MIN8>(w, a, rows, p),
                    GroupCodes::Levels4 => $inner::<R, LEVELS4>(w, a, rows, p),
                    GroupCodes::Sym6 => $inner::<R, SYM6>(w, a, rows, p),
                    GroupCodes::Min6 => $inner::<R, MIN6>(w, a, rows, p),
                }
            }
        }

        /// [`$name`] for weights of code kind `KIND` ([`kind_of`]).
        ///
        /// # Safety
        /// As [`$name`]; `w`'s codes are of `KIND`.
        #[target_feature(enable = $features)]
        unsafe fn $inner<const R: usize, const KIND: u8>(
            w: &Panels<'_>,
            a: &QuantizedRows<'_>,
            rows: [usize; R],
            p: usize,
        ) -> [[f32; PANEL]; R] {
            let (group, groups) = (a.group, a.groups());
            let kind = kind_of(KIND);
            debug_assert_eq!(kind, w.codes_kind());
            debug_assert!(rows.iter().enumerate().all(|(i, &r)| r == rows[0] + i));
            let panel = w.panel(p);
            // Each row's codes; its per-group values are `R` consecutive entries from
            // `a.at(rows[0], g)`.
            let xs0 = a.row_starts(rows);
            // The scales: plain (`f32` a group and channel) or factored (an `i8` a group times
            // an `f32` a super-block), read through pointers a super-block at a time (a group
            // `g` below `groups` reads inside the lane group's slices: eight values at
            // `g · width`, or at `g / per · width` for the factors).
            let (plain, zeros, plain_mins) = panel.all_params();
            let (factored, width) = (panel.factored(), panel.step() / 4);
            let per = factored.map_or(groups, |f| f.per);
            let (with_min, round) = (kind.has_min(), _mm256_set1_ps(ROUND));
            let ints = |v: *const i8| {
                // SAFETY: 8 readable bytes (the caller's group, above).
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(unsafe { _mm_loadl_epi64(v.cast()) }))
            };
            // SAFETY: 8 readable values (as above).
            let floats = |v: *const f32| unsafe { _mm256_loadu_ps(v) };
            let mut acc = [_mm256_setzero_ps(); R];
            for sup in 0..groups / per {
                // The super-block's factors (the factored form).
                let (d, dmin) = match factored {
                    Some(f) => {
                        let at = sup * width;
                        let dmin =
                            if with_min { floats(f.super_mins.as_ptr().wrapping_add(at)) } else { _mm256_setzero_ps() };
                        (floats(f.supers.as_ptr().wrapping_add(at)), dmin)
                    }
                    None => (_mm256_setzero_ps(), _mm256_setzero_ps()),
                };
                // Two-level weights: the super-block's groups summed here first (step 3's
                // second form).
                let mut t = [_mm256_setzero_ps(); R];
                for g in sup * per..(sup + 1) * per {
                    // Group `g`'s eight scales and minimums: the `f32` product of factor and
                    // integer (as `Panels::params` forms it), or the values.
                    let at = g * width;
                    let (swv, mnv) = match factored {
                        Some(f) => {
                            let m = if with_min {
                                _mm256_mul_ps(dmin, ints(f.mins.as_ptr().wrapping_add(at)))
                            } else {
                                dmin
                            };
                            (_mm256_mul_ps(d, ints(f.scales.as_ptr().wrapping_add(at))), m)
                        }
                        None => {
                            let m = if with_min {
                                floats(plain_mins.as_ptr().wrapping_add(at))
                            } else {
                                _mm256_setzero_ps()
                            };
                            (floats(plain.as_ptr().wrapping_add(at)), m)
                        }
                    };
                    let z = zeros.as_ptr().wrapping_add(at);
                    let codes = panel.codes(g);
                    let at = a.at(rows[0], g);
                    // SAFETY: `xs0` are the starts of `R` consecutive rows of `a` (caller), `g`
                    // one of their groups, `at` its index.
                    let (xs, init, scaled) = unsafe { a.group_rows(&xs0, g, at) };
                    // SAFETY: the panel holds the group's codes for eight channels; `xs` point to
                    // the group's activations (`group` a multiple of 16); CPU features as above.
                    let raw = unsafe {
                        match kind {
                            GroupCodes::Sym4 | GroupCodes::Asym4 | GroupCodes::Min4 => {
                                $four(codes, panel.step(), xs, group, init)
                            }
                            GroupCodes::Levels4 => $levels(codes, panel.step(), xs, group, &w.levels, init),
                            GroupCodes::Sym6 | GroupCodes::Min6 => {
                                $six(codes, panel.high(g), panel.step(), xs, group, init)
                            }
                            GroupCodes::Sym8 | GroupCodes::Min8 => $eight(codes, panel.step(), xs, group, init),
                        }
                    };
                    // SAFETY: `z` holds 8 values (`Asym4`, the one kind that reads it); the
                    // scales (one-level: the blocks are the groups) and `scaled` hold `R` values
                    // (above).
                    unsafe {
                        for i in 0..R {
                            let d = if kind == GroupCodes::Asym4 {
                                let zv = _mm256_cvtepu8_epi32(_mm_loadl_epi64(z.cast()));
                                _mm256_sub_epi32(raw[i], _mm256_mullo_epi32(zv, _mm256_set1_epi32(a.sums[at + i])))
                            } else {
                                raw[i] // the offset is in `init`, or absent
                            };
                            // `d` holds the bits of `ROUND + d` (the sums start at `ROUND_BITS`):
                            // `d` as an `f32`, exactly, in one subtraction.
                            let dv = _mm256_sub_ps(_mm256_castsi256_ps(d), round);
                            let m = _mm256_set1_ps(*scaled.add(i));
                            if a.two_level {
                                t[i] = _mm256_fmadd_ps(swv, dv, t[i]);
                                if with_min {
                                    t[i] = _mm256_fmadd_ps(mnv, m, t[i]);
                                }
                            } else {
                                let part = _mm256_mul_ps(_mm256_set1_ps(*a.block_scales(at + i)), dv);
                                acc[i] = _mm256_fmadd_ps(swv, part, acc[i]);
                                if with_min {
                                    acc[i] = _mm256_fmadd_ps(mnv, m, acc[i]);
                                }
                            }
                        }
                    }
                }
                if a.two_level {
                    let at = a.block_at(rows[0], sup);
                    for i in 0..R {
                        // SAFETY: the `R` rows' scales of block `sup` (above).
                        acc[i] = _mm256_fmadd_ps(t[i], _mm256_set1_ps(unsafe { *a.block_scales(at + i) }), acc[i]);
                    }
                }
            }
            let mut out = [[0f32; PANEL]; R];
            for (o, v) in out.iter_mut().zip(acc) {
                // SAFETY: a write of an 8-element array.
                unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) };
            }
            out
        }
    };
}

group_kernel!(panel_avx2, kinds_avx2, "avx2,fma", four_avx2, eight_avx2, levels_avx2, six_avx2);
group_kernel!(
    panel_avxvnni,
    kinds_avxvnni,
    "avx2,fma,avxvnni",
    four_avxvnni,
    eight_avxvnni,
    levels_avxvnni,
    six_avxvnni
);
group_kernel!(
    panel_avx512vnni,
    kinds_avx512vnni,
    "avx2,fma,avx512f,avx512vl,avx512vnni",
    four_avx512vnni,
    eight_avx512vnni,
    levels_avx512vnni,
    six_avx512vnni
);

/// The float mode's kernel, the same on every x86-64 tier (it needs only AVX2 and FMA): `P`
/// lane groups from `p` for `rows`, their weights converted on the fly or read from `scratch`
/// (filled by [`dequantize`] for exactly these lane groups).
///
/// # Safety
/// The CPU has AVX2 and FMA; lane groups `p .. p + P` are in `w`; every row of `rows` is a row
/// of `a` (`K` values); a scratch holds these lane groups' `8 K P` values.
#[inline]
pub(super) unsafe fn panels_f32<const R: usize, const P: usize>(
    w: &Panels<'_>,
    a: &FloatRows<'_>,
    rows: [usize; R],
    p: usize,
    scratch: Option<&[f32]>,
) -> [[[f32; PANEL]; P]; R] {
    let values = match scratch {
        Some(v) => Values::Scratch(v),
        None => Values::Codes,
    };
    // SAFETY: forwarded (the caller's contract).
    unsafe { panels_fma::<R, P>(w, a, rows, p, values) }
}

/// Lane groups `p .. p + count`'s weights dequantized to `v_k` (`[K][count][8]`) into `out`.
///
/// # Safety
/// The CPU has AVX2 and FMA; lane groups `p .. p + count` are in `w`; `out` holds `8 K count`
/// values.
pub(super) unsafe fn dequantize(w: &Panels<'_>, p: usize, count: usize, out: &mut [f32]) -> bool {
    for q in 0..count {
        // SAFETY: as this function's.
        unsafe { dequantize_panel(w, p + q, q, count, out) };
    }
    true
}

/// `vpshufb` masks that move byte `j` of every 32-bit lane to the lane's low byte (`top`:
/// to its high byte), zeroing the other three.
#[expect(clippy::as_conversions, reason = "shuffle indices (< 16) as i8, code sums (< 2^24) to f32: exact")]
fn lane_byte_masks(j: usize, top: bool) -> [i8; 32] {
    let mut m = [-128i8; 32]; // 0x80: zero
    for lane in 0..8 {
        let at = if top { 4 * lane + 3 } else { 4 * lane };
        m[at] = ((4 * lane + j) % 16) as i8; // vpshufb indexes within each 128-bit half
    }
    m
}

/// The exact small integers `v_k = u_k - z` (as `f32`, lanes = a panel's eight channels) of
/// group `g` of `P` panels, handed to `each(j, j % 2, [v; P])` in input order, `j` the input's
/// index in the group (the second argument a constant once unrolled, so the partial sums stay
/// in registers).
///
/// # Safety
/// The CPU has AVX2 and FMA; `g` is a group of the panels, whose codes are of `kind` in groups
/// of `group`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn group_values<const P: usize>(
    kind: GroupCodes,
    group: usize,
    levels: &[i8; 16],
    panels: &[Panel<'_>; P],
    g: usize,
    mut each: impl FnMut(usize, usize, [__m256; P]),
) {
    let mask = |j, t| {
        // SAFETY: a 32-byte load of a 32-byte array.
        unsafe { _mm256_loadu_si256(lane_byte_masks(j, t).as_ptr().cast()) }
    };
    let codes = panels.map(|pl| pl.codes(g).as_ptr());
    let steps = panels.map(|pl| pl.step());
    if kind == GroupCodes::Levels4 {
        // Each nibble looked up in the level table in registers, then sign-extended as the
        // 8-bit codes are.
        // SAFETY: AVX2 present (this function's features).
        let table = unsafe { level_table(levels) };
        let top = [mask(0, true), mask(1, true), mask(2, true), mask(3, true)];
        for e in 0..group / 8 {
            let mut lo = [_mm256_setzero_si256(); P];
            let mut hi = [_mm256_setzero_si256(); P];
            for q in 0..P {
                // SAFETY: the group's codes are `group * 4` bytes, 32 per step of 8 inputs.
                let (l, h) = unsafe { nibbles(codes[q], e, steps[q]) };
                (lo[q], hi[q]) = (_mm256_shuffle_epi8(table, l), _mm256_shuffle_epi8(table, h));
            }
            for (half, src) in [lo, hi].into_iter().enumerate() {
                for (j, m) in top.iter().enumerate() {
                    let mut v = [_mm256_setzero_ps(); P];
                    for q in 0..P {
                        v[q] = _mm256_cvtepi32_ps(_mm256_srai_epi32::<24>(_mm256_shuffle_epi8(src[q], *m)));
                    }
                    each(8 * e + 4 * half + j, j % 2, v);
                }
            }
        }
    } else if kind.bits() <= 6 {
        let low = [mask(0, false), mask(1, false), mask(2, false), mask(3, false)];
        let mut zf = [_mm256_setzero_ps(); P];
        for (z, pl) in zf.iter_mut().zip(panels) {
            *z = match kind {
                GroupCodes::Sym4 => _mm256_set1_ps(8.0),
                GroupCodes::Sym6 => _mm256_set1_ps(32.0),
                // SAFETY: the panel's 8 zero points of group `g` (Asym4).
                GroupCodes::Asym4 => unsafe {
                    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(pl.params(g).1.as_ptr().cast())))
                },
                // Min4, Min6: u - 0 is u exactly (Levels4 is looked up above).
                GroupCodes::Min4 | GroupCodes::Min6 | GroupCodes::Sym8 | GroupCodes::Min8 | GroupCodes::Levels4 => {
                    _mm256_setzero_ps()
                }
            };
        }
        for e in 0..group / 8 {
            let mut lo = [_mm256_setzero_si256(); P];
            let mut hi = [_mm256_setzero_si256(); P];
            for q in 0..P {
                // SAFETY: the group's codes are `group * 4` bytes, 32 per step of 8 inputs (and
                // `Sym6`'s high plane 16 a step).
                (lo[q], hi[q]) = unsafe {
                    if kind.bits() == 6 {
                        six_codes(codes[q], panels[q].high(g), e, steps[q])
                    } else {
                        nibbles(codes[q], e, steps[q])
                    }
                };
            }
            for (half, src) in [lo, hi].into_iter().enumerate() {
                for (j, m) in low.iter().enumerate() {
                    let mut v = [_mm256_setzero_ps(); P];
                    for q in 0..P {
                        v[q] = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_shuffle_epi8(src[q], *m)), zf[q]);
                    }
                    each(8 * e + 4 * half + j, j % 2, v);
                }
            }
        }
    } else {
        let top = [mask(0, true), mask(1, true), mask(2, true), mask(3, true)];
        for s in 0..group / 4 {
            let mut raw = [_mm256_setzero_si256(); P];
            for q in 0..P {
                // SAFETY: the group's codes are `group * 8` bytes, 32 per step of 4 inputs.
                raw[q] = unsafe { _mm256_loadu_si256(codes[q].add(s * steps[q]).cast()) };
            }
            for (j, m) in top.iter().enumerate() {
                let mut v = [_mm256_setzero_ps(); P];
                for q in 0..P {
                    v[q] = _mm256_cvtepi32_ps(_mm256_srai_epi32::<24>(_mm256_shuffle_epi8(raw[q], *m)));
                }
                each(4 * s + j, j % 2, v);
            }
        }
    }
}

/// Where the float kernel finds the panels' dequantized weights.
#[derive(Copy, Clone)]
enum Values<'a> {
    /// Converted from the codes on the fly, for few rows.
    Codes,
    /// Converted once into `[K][P][8]` (by [`dequantize`]), for many rows.
    Scratch(&'a [f32]),
}

/// Panel `p`'s `v_k` for every input into slot `q` of `[K][count][8]` in `out`.
///
/// # Safety
/// The CPU has AVX2 and FMA; `p` is a panel of `w`; `q < count`; `out` holds `8 K count`
/// values.
#[target_feature(enable = "avx2,fma")]
unsafe fn dequantize_panel(w: &Panels<'_>, p: usize, q: usize, count: usize, out: &mut [f32]) {
    let (group, kind, panel) = (w.group_size(), w.codes_kind(), [w.panel(p)]);
    for g in 0..w.groups() {
        let dst = &mut out[g * group * PANEL * count..(g + 1) * group * PANEL * count];
        let store = |j: usize, _: usize, v: [__m256; 1]| {
            // SAFETY: `(j * count + q) * 8 + 8 <= 8 group count`: inside `dst`.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add((j * count + q) * PANEL), v[0]) }
        };
        // SAFETY: as this function's.
        unsafe { group_values(kind, group, &w.levels, &panel, g, store) };
    }
}

/// The float mode for `P` panels of eight channels and `R` rows, lanes = channels: each lane
/// does the reference's operations (module docs, steps 1 to 3) in the reference's order, with
/// `vfmadd` where the reference calls `fma_f32`. `R · P · 2` partial sums stay in registers
/// (12 of AVX2's 16 for three rows and two panels); each broadcast activation serves `P`
/// multiply-adds and each converted weight `R`.
///
/// # Safety
/// The CPU has AVX2 and FMA; panels `p .. p + P` are panels of `w`; every row of `rows` is a
/// row of `a` (`K` values); a `Scratch` holds these panels' `8 K P` values.
#[target_feature(enable = "avx2,fma")]
unsafe fn panels_fma<const R: usize, const P: usize>(
    w: &Panels<'_>,
    a: &FloatRows<'_>,
    rows: [usize; R],
    p: usize,
    values: Values<'_>,
) -> [[[f32; PANEL]; P]; R] {
    let (group, groups, kind) = (w.group_size(), w.groups(), w.codes_kind());
    let mut panels = [w.panel(p); P];
    for (q, pl) in panels.iter_mut().enumerate() {
        *pl = w.panel(p + q);
    }
    let xs = rows.map(|r| a.row(r).as_ptr());
    let mut acc = [[_mm256_setzero_ps(); P]; R];
    for g in 0..groups {
        let base = g * group;
        let mut part = [[[_mm256_setzero_ps(); 2]; P]; R];
        let mut step = |j: usize, chain: usize, wv: [__m256; P]| {
            for i in 0..R {
                // SAFETY: `base + j < K`, the row's length (caller).
                let xv = _mm256_set1_ps(unsafe { *xs[i].add(base + j) });
                for q in 0..P {
                    part[i][q][chain] = _mm256_fmadd_ps(xv, wv[q], part[i][q][chain]);
                }
            }
        };
        match values {
            // SAFETY: as this function's.
            Values::Codes => unsafe { group_values(kind, group, &w.levels, &panels, g, step) },
            Values::Scratch(v) => {
                let v = v[base * PANEL * P..(base + group) * PANEL * P].as_ptr();
                for j in (0..group).step_by(2) {
                    let (mut w0, mut w1) = ([_mm256_setzero_ps(); P], [_mm256_setzero_ps(); P]);
                    for q in 0..P {
                        // SAFETY: `v` holds the group's `8 group P` values.
                        unsafe {
                            w0[q] = _mm256_loadu_ps(v.add((j * P + q) * PANEL));
                            w1[q] = _mm256_loadu_ps(v.add(((j + 1) * P + q) * PANEL));
                        }
                    }
                    step(j, 0, w0);
                    step(j + 1, 1, w1);
                }
            }
        }
        for q in 0..P {
            // SAFETY: AVX2 present; `g` is a group of the panels.
            let (swv, mv) = unsafe { scales_ymm!(panels[q], g, kind.has_min()) };
            for i in 0..R {
                let [p0, p1] = part[i][q];
                acc[i][q] = _mm256_fmadd_ps(swv, _mm256_add_ps(p0, p1), acc[i][q]);
                if kind.has_min() {
                    acc[i][q] = _mm256_fmadd_ps(mv, _mm256_set1_ps(a.sum(rows[i], g)), acc[i][q]);
                }
            }
        }
    }
    let mut out = [[[0f32; PANEL]; P]; R];
    for (o, v) in out.iter_mut().zip(acc) {
        for (o, v) in o.iter_mut().zip(v) {
            // SAFETY: a write of an 8-element array.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::arch::decode::reference_quantize_group;

    /// The vectorized step 1 gives the reference's codes, scale and sum bit for bit: on
    /// random groups at every scale, on exact ties (`amax = 127`, so `s = 1`), on zeros and on
    /// a single large value among small ones.
    #[test]
    #[expect(clippy::as_conversions, reason = "test data from a counter")]
    fn vectorized_activation_quantization_is_the_reference() {
        if !std::is_x86_feature_detected!("avx2") {
            return; // no AVX2 tier on this CPU: nothing to compare
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5 // [-0.5, 0.5)
        };
        let mut groups: Vec<Vec<f32>> = Vec::new();
        for len in [16, 32, 64, 256] {
            for scale in [1e-30f32, 1e-3, 1.0, 3e4, 1e30] {
                groups.push((0..len).map(|_| next() * scale).collect());
            }
            groups.push(vec![0.0; len]);
            let mut ties: Vec<f32> = (0..len).map(|i| (i % 64) as f32 - 31.5).collect();
            ties[len - 1] = -127.0;
            groups.push(ties);
            let mut spike: Vec<f32> = (0..len).map(|_| next() * 1e-3).collect();
            spike[len / 2] = 500.0;
            groups.push(spike);
        }
        for x in &groups {
            let (mut want, mut got) = (vec![0i8; x.len()], vec![0i8; x.len()]);
            let (ws, wsum) = reference_quantize_group(x, &mut want);
            // SAFETY: AVX2 detected above; equal lengths, a multiple of 16.
            let (gs, gsum) = unsafe { super::quantize_group(x, &mut got) };
            assert_eq!((gs.to_bits(), gsum), (ws.to_bits(), wsum), "{x:?}");
            assert_eq!(got, want, "{x:?}");
        }
    }
}
