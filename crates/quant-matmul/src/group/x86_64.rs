//! The int8-activation kernels of the x86-64 tiers: one panel of eight output channels at a
//! time, the same bits as the reference ([`super::reference_row`]).
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
//! (`t = s_x · s_w; acc = acc + t · d`, no fused multiply-add), so the result is the same on
//! every tier.

use core::arch::x86_64::*;

use super::{Activations, FloatActivations, GroupCodes, GroupWeights, PANEL};
use crate::kernels::Tier;

/// Runs the tier's kernel for output channels `c0 .. c0 + out.len()` of row `r` (`c0` a
/// multiple of the panel width); `false` for a tier without one here (portable).
pub(super) fn row(
    tier: Tier,
    w: &GroupWeights,
    a: &Activations,
    r: usize,
    c0: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> bool {
    // SAFETY: the tier was resolved by `KernelChoice::resolve`, which checked that this CPU
    // has its features.
    unsafe {
        match tier {
            Tier::Avx2 => row_avx2(w, a, r, c0, bias, out),
            Tier::AvxVnni => row_avxvnni(w, a, r, c0, bias, out),
            Tier::Avx512Vnni => row_avx512vnni(w, a, r, c0, bias, out),
            _ => return false,
        }
    }
    true
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

/// One group's eight dot products, 4-bit weights, AVX2.
///
/// # Safety
/// `codes` holds the panel's `group * 4` bytes, `x` the group's `group` codes (`group` a
/// multiple of 32).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn four_avx2(codes: &[u8], x: &[i8]) -> __m256i {
    let (nibble, ones) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi16(1));
    let mut acc = _mm256_setzero_si256();
    for b in 0..x.len() / 32 {
        let mut t = _mm256_setzero_si256();
        for e in 4 * b..4 * b + 4 {
            // SAFETY: 32 code bytes at `e * 32` and 8 activation codes at `e * 8` (caller).
            unsafe {
                let v = _mm256_loadu_si256(codes.as_ptr().add(e * 32).cast());
                let lo = _mm256_and_si256(v, nibble);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble);
                t = _mm256_add_epi16(t, _mm256_maddubs_epi16(lo, quad(x.as_ptr().add(8 * e))));
                t = _mm256_add_epi16(t, _mm256_maddubs_epi16(hi, quad(x.as_ptr().add(8 * e + 4))));
            }
        }
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(t, ones));
    }
    acc
}

/// One group's eight dot products, 8-bit weights, AVX2.
///
/// # Safety
/// `codes` holds the panel's `group * 8` bytes, `x` the group's `group` codes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn eight_avx2(codes: &[u8], x: &[i8]) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_si256();
    for q in 0..x.len() / 4 {
        // SAFETY: 32 code bytes at `q * 32` and 4 activation codes at `q * 4` (caller).
        unsafe {
            let v = _mm256_loadu_si256(codes.as_ptr().add(q * 32).cast());
            let xs = _mm256_sign_epi8(quad(x.as_ptr().add(4 * q)), v);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(v), xs), ones));
        }
    }
    acc
}

macro_rules! vnni_steps {
    ($four:ident, $eight:ident, $features:literal, $dpbusd:ident) => {
        /// One group's eight dot products, 4-bit weights, `vpdpbusd`.
        ///
        /// # Safety
        /// As [`four_avx2`]; the CPU has the features in `target_feature`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $four(codes: &[u8], x: &[i8]) -> __m256i {
            let nibble = _mm256_set1_epi8(0x0f);
            let mut acc = _mm256_setzero_si256();
            for e in 0..x.len() / 8 {
                // SAFETY: 32 code bytes at `e * 32` and 8 activation codes at `e * 8` (caller).
                unsafe {
                    let v = _mm256_loadu_si256(codes.as_ptr().add(e * 32).cast());
                    let lo = _mm256_and_si256(v, nibble);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble);
                    acc = $dpbusd(acc, lo, quad(x.as_ptr().add(8 * e)));
                    acc = $dpbusd(acc, hi, quad(x.as_ptr().add(8 * e + 4)));
                }
            }
            acc
        }

        /// One group's eight dot products, 8-bit weights, `vpdpbusd`.
        ///
        /// # Safety
        /// As [`eight_avx2`]; the CPU has the features in `target_feature`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $eight(codes: &[u8], x: &[i8]) -> __m256i {
            let mut acc = _mm256_setzero_si256();
            for q in 0..x.len() / 4 {
                // SAFETY: 32 code bytes at `q * 32` and 4 activation codes at `q * 4` (caller).
                unsafe {
                    let v = _mm256_loadu_si256(codes.as_ptr().add(q * 32).cast());
                    let xs = _mm256_sign_epi8(quad(x.as_ptr().add(4 * q)), v);
                    acc = $dpbusd(acc, _mm256_abs_epi8(v), xs);
                }
            }
            acc
        }
    };
}

vnni_steps!(four_avxvnni, eight_avxvnni, "avx2,avxvnni", _mm256_dpbusd_avx_epi32);
vnni_steps!(four_avx512vnni, eight_avx512vnni, "avx2,avx512f,avx512vl,avx512vnni", _mm256_dpbusd_epi32);

macro_rules! group_kernel {
    ($name:ident, $features:literal, $four:ident, $eight:ident) => {
        /// Output channels `c0 .. c0 + out.len()` of row `r`, a panel of eight at a time.
        ///
        /// # Safety
        /// The CPU has the features in `target_feature`; `c0` is a multiple of [`PANEL`].
        #[target_feature(enable = $features)]
        unsafe fn $name(w: &GroupWeights, a: &Activations, r: usize, c0: usize, bias: Option<&[f32]>, out: &mut [f32]) {
            let (k, group, groups) = (a.k, a.group, a.groups());
            let kind = w.codes_kind();
            let xq = &a.q[r * k..(r + 1) * k];
            let sx = &a.scales[r * groups..(r + 1) * groups];
            let sums = &a.sums[r * groups..(r + 1) * groups];
            for (pi, chunk) in out.chunks_mut(PANEL).enumerate() {
                let p = c0 / PANEL + pi;
                let mut acc = _mm256_setzero_ps();
                for g in 0..groups {
                    let (codes, xg) = (w.panel_codes(p, g), &xq[g * group..(g + 1) * group]);
                    // SAFETY: the panel holds the group's codes for eight channels; `xg` is the
                    // group's activations (`group` a multiple of 32); CPU features as above.
                    let raw = unsafe {
                        if kind.bits() == 4 {
                            $four(codes, xg)
                        } else {
                            $eight(codes, xg)
                        }
                    };
                    let (sw, z, mn) = w.panel_params(p, g);
                    // SAFETY: the slices hold 8 values (or are empty for the formats without
                    // them, which never read them).
                    unsafe {
                        let d = match kind {
                            GroupCodes::Sym4 => _mm256_sub_epi32(raw, _mm256_set1_epi32(8 * sums[g])),
                            GroupCodes::Asym4 => {
                                let zv = _mm256_cvtepu8_epi32(_mm_loadl_epi64(z.as_ptr().cast()));
                                _mm256_sub_epi32(raw, _mm256_mullo_epi32(zv, _mm256_set1_epi32(sums[g])))
                            }
                            _ => raw,
                        };
                        let sxv = _mm256_set1_ps(sx[g]);
                        let t = _mm256_mul_ps(sxv, _mm256_loadu_ps(sw.as_ptr()));
                        acc = _mm256_add_ps(acc, _mm256_mul_ps(t, _mm256_cvtepi32_ps(d)));
                        if kind == GroupCodes::Min4 {
                            let t = _mm256_mul_ps(sxv, _mm256_loadu_ps(mn.as_ptr()));
                            acc = _mm256_add_ps(acc, _mm256_mul_ps(t, _mm256_set1_ps(sums[g] as f32)));
                        }
                    }
                }
                let mut lanes = [0f32; PANEL];
                // SAFETY: a write of an 8-element stack array.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
                let first = c0 + pi * PANEL;
                for (l, (o, &v)) in chunk.iter_mut().zip(&lanes).enumerate() {
                    *o = match bias {
                        Some(b) => v + b[first + l],
                        None => v,
                    };
                }
            }
        }
    };
}

group_kernel!(row_avx2, "avx2", four_avx2, eight_avx2);
group_kernel!(row_avxvnni, "avx2,avxvnni", four_avxvnni, eight_avxvnni);
group_kernel!(row_avx512vnni, "avx2,avx512f,avx512vl,avx512vnni", four_avx512vnni, eight_avx512vnni);

/// The float mode's kernel, the same on every x86-64 tier (it needs only AVX2 and FMA): panel
/// `p` for `rows`, its weights converted on the fly or read from `scratch` (filled by
/// [`dequantize`]); `None` on the portable tier.
pub(super) fn panel_f32<const R: usize>(
    tier: Tier,
    w: &GroupWeights,
    a: &FloatActivations,
    rows: [usize; R],
    p: usize,
    scratch: Option<&[f32]>,
) -> Option<[[f32; PANEL]; R]> {
    if tier == Tier::Portable {
        return None;
    }
    let values = match scratch {
        Some(v) => {
            assert!(v.len() >= w.k() * PANEL, "scratch of {} for {} inputs", v.len(), w.k());
            Values::Scratch(v)
        }
        None => Values::Codes,
    };
    // SAFETY: every x86-64 tier past portable has AVX2 and FMA, and the tier was resolved by
    // `KernelChoice::resolve`, which checked that this CPU has its features; the scratch was
    // checked above.
    Some(unsafe { panel_fma(w, a, rows, p, values) })
}

/// Panel `p`'s weights dequantized to `v_k` (`[K][8]`) into `out`; `false` on the portable
/// tier (nothing written).
pub(super) fn dequantize(tier: Tier, w: &GroupWeights, p: usize, out: &mut [f32]) -> bool {
    if tier == Tier::Portable {
        return false;
    }
    assert!(out.len() >= w.k() * PANEL, "scratch of {} for {} inputs", out.len(), w.k());
    // SAFETY: as in `panel_f32`; `out` was checked above.
    unsafe { dequantize_panel(w, p, out) };
    true
}

/// `vpshufb` masks that move byte `j` of every 32-bit lane to the lane's low byte (`top`:
/// to its high byte), zeroing the other three.
fn lane_byte_masks(j: usize, top: bool) -> [i8; 32] {
    let mut m = [-128i8; 32]; // 0x80: zero
    for lane in 0..8 {
        let at = if top { 4 * lane + 3 } else { 4 * lane };
        m[at] = ((4 * lane + j) % 16) as i8; // vpshufb indexes within each 128-bit half
    }
    m
}

/// The exact small integers `v_k = u_k - z` (as `f32`, lanes = the panel's eight channels) of
/// panel `p`, group `g`, handed to `each(j, j % 4, v)` in input order, `j` the input's index
/// in the group (the second argument a constant once unrolled, so the four partial sums stay in
/// registers).
///
/// # Safety
/// The CPU has AVX2 and FMA; `p` is a panel of `w`, `g` one of its groups.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn group_values(w: &GroupWeights, p: usize, g: usize, mut each: impl FnMut(usize, usize, __m256)) {
    let kind = w.codes_kind();
    let codes = w.panel_codes(p, g);
    let (_, z, _) = w.panel_params(p, g);
    let mask = |j, t| {
        // SAFETY: a 32-byte load of a 32-byte array.
        unsafe { _mm256_loadu_si256(lane_byte_masks(j, t).as_ptr().cast()) }
    };
    if kind.bits() == 4 {
        let low = [mask(0, false), mask(1, false), mask(2, false), mask(3, false)];
        let nibble = _mm256_set1_epi8(0x0f);
        let zf = match kind {
            GroupCodes::Sym4 => Some(_mm256_set1_ps(8.0)),
            GroupCodes::Asym4 => {
                // SAFETY: `z` holds the panel's 8 zero points (Asym4).
                Some(unsafe { _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(z.as_ptr().cast()))) })
            }
            _ => None,
        };
        for e in 0..w.group_size() / 8 {
            // SAFETY: the group's codes are `group * 4` bytes, 32 per step of 8 inputs.
            let v = unsafe { _mm256_loadu_si256(codes.as_ptr().add(e * 32).cast()) };
            let nibbles = [_mm256_and_si256(v, nibble), _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble)];
            for (half, src) in nibbles.into_iter().enumerate() {
                for (j, m) in low.iter().enumerate() {
                    let u = _mm256_cvtepi32_ps(_mm256_shuffle_epi8(src, *m));
                    each(8 * e + 4 * half + j, j, zf.map_or(u, |zf| _mm256_sub_ps(u, zf)));
                }
            }
        }
    } else {
        let top = [mask(0, true), mask(1, true), mask(2, true), mask(3, true)];
        for q in 0..w.group_size() / 4 {
            // SAFETY: the group's codes are `group * 8` bytes, 32 per step of 4 inputs.
            let v = unsafe { _mm256_loadu_si256(codes.as_ptr().add(q * 32).cast()) };
            for (j, m) in top.iter().enumerate() {
                each(4 * q + j, j, _mm256_cvtepi32_ps(_mm256_srai_epi32::<24>(_mm256_shuffle_epi8(v, *m))));
            }
        }
    }
}

/// Where the float kernel finds a panel's dequantized weights.
#[derive(Copy, Clone)]
enum Values<'a> {
    /// Converted from the codes on the fly, for few rows.
    Codes,
    /// Converted once into `[K][8]` (by [`dequantize_panel`]), for many rows.
    Scratch(&'a [f32]),
}

/// Panel `p`'s `v_k` for every input, `[K][8]`, into `out`.
///
/// # Safety
/// The CPU has AVX2 and FMA; `p` is a panel of `w`; `out` holds `8 K` values.
#[target_feature(enable = "avx2,fma")]
unsafe fn dequantize_panel(w: &GroupWeights, p: usize, out: &mut [f32]) {
    let group = w.group_size();
    for g in 0..w.groups() {
        let dst = &mut out[g * group * PANEL..(g + 1) * group * PANEL];
        // SAFETY: as this function's; each store writes 8 of `dst`'s `8 group` values.
        unsafe { group_values(w, p, g, |j, _, v| _mm256_storeu_ps(dst.as_mut_ptr().add(j * PANEL), v)) };
    }
}

/// The float mode for one panel of eight channels and `R` rows, lanes = channels: each lane
/// does the reference's operations (module docs, steps 1 to 3) in the reference's order, with
/// `vfmadd` where the reference calls `fma_f32`.
///
/// # Safety
/// The CPU has AVX2 and FMA; `p` is a panel of `w`; every row of `rows` is a row of `a`;
/// a `Scratch` holds the panel's `8 K` values.
#[target_feature(enable = "avx2,fma")]
unsafe fn panel_fma<const R: usize>(
    w: &GroupWeights,
    a: &FloatActivations,
    rows: [usize; R],
    p: usize,
    values: Values<'_>,
) -> [[f32; PANEL]; R] {
    let (group, groups, kind) = (w.group_size(), w.groups(), w.codes_kind());
    let xs = rows.map(|r| a.row(r));
    assert!(xs.iter().all(|x| x.len() == groups * group), "activation rows of K values");
    let mut acc = [_mm256_setzero_ps(); R];
    for g in 0..groups {
        let base = g * group;
        let mut part = [[_mm256_setzero_ps(); 4]; R];
        let mut step = |j: usize, chain: usize, wv: __m256| {
            for i in 0..R {
                // SAFETY: `j < group` and the row has `K >= base + group` values.
                let xv = unsafe { *xs[i].get_unchecked(base + j) };
                part[i][chain] = _mm256_fmadd_ps(_mm256_set1_ps(xv), wv, part[i][chain]);
            }
        };
        match values {
            // SAFETY: as this function's.
            Values::Codes => unsafe { group_values(w, p, g, step) },
            Values::Scratch(v) => {
                let v = &v[base * PANEL..(base + group) * PANEL];
                for j in (0..group).step_by(4) {
                    // SAFETY: `v` holds the group's `8 group` values.
                    unsafe {
                        step(j, 0, _mm256_loadu_ps(v.as_ptr().add(j * PANEL)));
                        step(j + 1, 1, _mm256_loadu_ps(v.as_ptr().add((j + 1) * PANEL)));
                        step(j + 2, 2, _mm256_loadu_ps(v.as_ptr().add((j + 2) * PANEL)));
                        step(j + 3, 3, _mm256_loadu_ps(v.as_ptr().add((j + 3) * PANEL)));
                    }
                }
            }
        }
        let (sw, _, mn) = w.panel_params(p, g);
        // SAFETY: `sw` (and `mn` for Min4) hold the panel's 8 values.
        let swv = unsafe { _mm256_loadu_ps(sw.as_ptr()) };
        for i in 0..R {
            let [p0, p1, p2, p3] = part[i];
            acc[i] = _mm256_fmadd_ps(swv, _mm256_add_ps(_mm256_add_ps(p0, p1), _mm256_add_ps(p2, p3)), acc[i]);
            if kind == GroupCodes::Min4 {
                // SAFETY: as above.
                let mv = unsafe { _mm256_loadu_ps(mn.as_ptr()) };
                acc[i] = _mm256_fmadd_ps(mv, _mm256_set1_ps(a.sum(rows[i], g)), acc[i]);
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
