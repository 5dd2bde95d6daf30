//! The int8-activation kernels of the x86-64 tiers: eight output channels at a time, the same
//! bits as the reference ([`super::reference_row`]).
//!
//! Per channel and group, the integer dot product of the activation codes with the weight
//! codes, 32 inputs a step:
//! * 4-bit weights: the 16 bytes of 32 codes split into their low nibbles (even inputs) and
//!   high nibbles (odd inputs), against activations stored in the same split order
//!   (`Activations::q_split`); the codes are unsigned (`0..=15`) and the zero point enters
//!   afterwards as `z · Σ q`, as in the reference.
//! * 8-bit weights: `|w| · (x · sign(w))`, which keeps the unsigned operand unsigned (`|w| <=
//!   128`) and the signed one in range (`|x| <= 127`).
//!
//! The step is `vpmaddubsw` + `vpmaddwd` on AVX2 (exact: pair sums are at most
//! `2 · 128 · 127 < 2^15`) and `vpdpbusd` on the VNNI tiers. The eight channels' sums are
//! reduced into one vector of eight lanes; from there every lane does the reference's `f32`
//! operations in the reference's order (`t = s_x · s_w; acc = acc + t · d`, no fused
//! multiply-add), so the result is the same on every tier.

use core::arch::x86_64::*;

use super::{reference_row, Activations, GroupCodes, GroupWeights, PANEL};
use crate::kernels::Tier;

/// Runs the tier's kernel for output channels `c0 .. c0 + out.len()` of row `r`; `false` for a
/// tier without one here (portable).
pub(super) fn row(
    tier: Tier,
    w: &GroupWeights,
    a: &Activations,
    r: usize,
    c0: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> bool {
    // SAFETY: the tier was resolved by `KernelChoice::resolve`, which checked that
    // this CPU has its features.
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

/// Eight vectors of eight `i32` partial sums to one vector: lane `l` is the sum of `v[l]`.
#[inline]
#[target_feature(enable = "avx2")]
fn reduce8(v: &[__m256i; 8]) -> __m256i {
    let s01 = _mm256_hadd_epi32(v[0], v[1]);
    let s23 = _mm256_hadd_epi32(v[2], v[3]);
    let s45 = _mm256_hadd_epi32(v[4], v[5]);
    let s67 = _mm256_hadd_epi32(v[6], v[7]);
    let s0123 = _mm256_hadd_epi32(s01, s23);
    let s4567 = _mm256_hadd_epi32(s45, s67);
    let lo = _mm256_permute2x128_si256::<0x20>(s0123, s4567);
    let hi = _mm256_permute2x128_si256::<0x31>(s0123, s4567);
    _mm256_add_epi32(lo, hi)
}

/// `acc + Σ u·x` over groups of four bytes (`u` unsigned, `x` signed), AVX2.
#[inline]
#[target_feature(enable = "avx2")]
fn dot_avx2(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1)))
}

/// The same with AVX-VNNI's `vpdpbusd` (VEX).
#[inline]
#[target_feature(enable = "avx2,avxvnni")]
fn dot_avxvnni(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
    _mm256_dpbusd_avx_epi32(acc, u, x)
}

/// The same with AVX-512 VNNI's `vpdpbusd` on ymm registers.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
fn dot_avx512vnni(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, u, x)
}

macro_rules! group_kernel {
    ($name:ident, $features:literal, $dot:ident) => {
        /// Output channels `c0 .. c0 + out.len()` of row `r`, eight at a time; the last
        /// `len % 8` through the reference.
        ///
        /// # Safety
        /// The CPU has the features in `target_feature`.
        #[target_feature(enable = $features)]
        unsafe fn $name(w: &GroupWeights, a: &Activations, r: usize, c0: usize, bias: Option<&[f32]>, out: &mut [f32]) {
            let (k, group, groups) = (a.k, a.group, a.groups());
            let kind = w.codes_kind();
            let four = kind.bits() == 4;
            let xq = if four { &a.q_split[r * k..(r + 1) * k] } else { &a.q[r * k..(r + 1) * k] };
            let sx = &a.scales[r * groups..(r + 1) * groups];
            let sums = &a.sums[r * groups..(r + 1) * groups];
            let (scales, zeros, mins) = w.group_params();
            let (codes, row_bytes) = (w.codes(), w.row_bytes());
            let gbytes = group * kind.bits() as usize / 8;
            let nibble = _mm_set1_epi8(0x0f);
            let full = out.len() / PANEL * PANEL;
            for p in (0..full).step_by(PANEL) {
                let c = c0 + p;
                let mut acc = _mm256_setzero_ps();
                for g in 0..groups {
                    let mut v = [_mm256_setzero_si256(); PANEL];
                    for (l, vl) in v.iter_mut().enumerate() {
                        let base = &codes[(c + l) * row_bytes + g * gbytes..][..gbytes];
                        let xg = &xq[g * group..(g + 1) * group];
                        let mut s = _mm256_setzero_si256();
                        for b in 0..group / 32 {
                            // SAFETY: 32 activation bytes at `b * 32` of the group's `group`;
                            // 16 (4-bit) or 32 (8-bit) weight bytes inside the group's `gbytes`.
                            unsafe {
                                let xv = _mm256_loadu_si256(xg.as_ptr().add(b * 32).cast());
                                if four {
                                    let raw = _mm_loadu_si128(base.as_ptr().add(b * 16).cast());
                                    let lo = _mm_and_si128(raw, nibble);
                                    let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), nibble);
                                    s = $dot(s, _mm256_set_m128i(hi, lo), xv);
                                } else {
                                    let wv = _mm256_loadu_si256(base.as_ptr().add(b * 32).cast());
                                    s = $dot(s, _mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv));
                                }
                            }
                        }
                        *vl = s;
                    }
                    let raw = reduce8(&v);
                    let at = |l: usize| (c + l) * groups + g;
                    let z: [i32; PANEL] = match kind {
                        GroupCodes::Sym4 => [8; PANEL],
                        GroupCodes::Asym4 => core::array::from_fn(|l| i32::from(zeros[at(l)])),
                        _ => [0; PANEL],
                    };
                    let sw: [f32; PANEL] = core::array::from_fn(|l| scales[at(l)]);
                    // SAFETY: reads of 8-element stack arrays.
                    let (zv, swv) = unsafe { (_mm256_loadu_si256(z.as_ptr().cast()), _mm256_loadu_ps(sw.as_ptr())) };
                    let d = _mm256_sub_epi32(raw, _mm256_mullo_epi32(zv, _mm256_set1_epi32(sums[g])));
                    let sxv = _mm256_set1_ps(sx[g]);
                    acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_mul_ps(sxv, swv), _mm256_cvtepi32_ps(d)));
                    if kind == GroupCodes::Min4 {
                        let mn: [f32; PANEL] = core::array::from_fn(|l| mins[at(l)]);
                        // SAFETY: a read of an 8-element stack array.
                        let mv = unsafe { _mm256_loadu_ps(mn.as_ptr()) };
                        let t = _mm256_mul_ps(sxv, mv);
                        acc = _mm256_add_ps(acc, _mm256_mul_ps(t, _mm256_set1_ps(sums[g] as f32)));
                    }
                }
                if let Some(b) = bias {
                    // SAFETY: channels c .. c + 8 are inside the bias (checked `N` long).
                    acc = _mm256_add_ps(acc, unsafe { _mm256_loadu_ps(b.as_ptr().add(c)) });
                }
                // SAFETY: `p + 8 <= full <= out.len()`.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(p), acc) };
            }
            reference_row(w, a, r, c0 + full, bias, &mut out[full..]);
        }
    };
}

group_kernel!(row_avx2, "avx2,fma", dot_avx2);
group_kernel!(row_avxvnni, "avx2,fma,avxvnni", dot_avxvnni);
group_kernel!(row_avx512vnni, "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni", dot_avx512vnni);
