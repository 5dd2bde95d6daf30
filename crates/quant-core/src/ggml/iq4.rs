//! llama.cpp's non-linear 4-bit formats `IQ4_NL` and `IQ4_XS`, ported from ggml's
//! `quantize_row_iq4_nl_impl` (`ggml-quants.c`) operation by operation, in `f32`, without
//! fused multiply-adds, so the bytes are ggml's own.
//!
//! Each code is an index into 16 integer levels, denser near zero ([`LEVELS`], ggml's
//! `kvalues_iq4nl`); a value is `d · L[i]`.
//!
//! | format | bytes | block |
//! |---|---|---|
//! | `IQ4_NL` | 18 per 32 | `d: f16`, `qs: [u8; 16]` (split halves: byte `j` holds value `j` in its low nibble, `j + 16` in its high one) |
//! | `IQ4_XS` | 136 per 256 | `d: f16`, `scales_h: u16`, `scales_l: [u8; 4]`, `qs: [u8; 128]` (split halves per 32 values); sub-block `s` of 32 has the 6-bit scale `ls = (scales_l[s/2] >> 4(s%2)) & 15 | ((scales_h >> 2s) & 3) << 4` and `d_s = d · (ls - 32)` |
//!
//! # The search (as ggml's `ggml_quantize_chunk`, which `llama-quantize` runs)
//! Per sub-block of 32 values, with weights `w = x²` (or, given an importance vector `qw`,
//! `w = qw · sqrt(σ² + x²)`, `σ² = 2 · Σx² / n` over the block of `n` = 32 or 256 values):
//! 1. `max` is the value of largest magnitude (the first on a tie); a block with
//!    `|max| < 10^-15` gets scale 0.
//! 2. `d = -max / L[0]`; each value takes the level nearest `x / d` (computed as `x · (1/d)`;
//!    ggml's `best_index_int8`: the upper level on an exact tie), and the weighted
//!    least-squares scale `Σ w q x / Σ w q²` is the first candidate.
//! 3. Fifteen more: levels for `id = (t + L[0]) / max`, `t = -7 ..= 7`, each scale kept when
//!    its `(Σ w q x)² / Σ w q²` is larger.
//! 4. `IQ4_NL`: `d` is stored as `f16`, and the codes are the nearest levels of `x · (1/d)`
//!    with the unrounded `d`. `IQ4_XS`: the super-block's `d = -s_max / 32` (`s_max` the
//!    sub-block scale of largest magnitude), each sub-block scale `l = clamp(nearest_int(s /
//!    d), -32, 31)`, stored as `l + 32`, and the codes nearest `x · (1/(d · l))` (`d`
//!    unrounded).
//!
//! Sums run in index order, `w · q · x` as `(w · q) · x`; a zero `d` gives `1/d = 0`.

use super::kquants::{importance, sum_squares};
use super::round::{float_of, nearest_int, signed_max};
use super::{half_at, half_bytes};

/// The 16 levels, in code order (ggml's `kvalues_iq4nl`).
pub(crate) const LEVELS: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// Bytes of an `IQ4_NL` block of 32 values.
pub(super) const NL_BYTES: usize = 18;

/// Bytes of an `IQ4_XS` super-block of 256 values.
pub(super) const XS_BYTES: usize = 136;

/// The level as ggml's `(float)values[l]`.
fn level(l: usize) -> f32 {
    f32::from(LEVELS[l])
}

/// ggml's `best_index_int8(16, kvalues_iq4nl, x)`: the nearest level by bisection, the upper
/// one on an exact tie.
fn best_index(x: f32) -> usize {
    if x <= level(0) {
        return 0;
    }
    if x >= level(15) {
        return 15;
    }
    let (mut ml, mut mu) = (0, 15);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < level(mav) {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - level(mu - 1) < level(mu) - x {
        mu - 1
    } else {
        mu
    }
}

/// `1/v`, or 0 for `v = 0` (ggml's `v ? 1/v : 0.f`).
fn inverse(v: f32) -> f32 {
    if v == 0.0 {
        0.0
    } else {
        1.0 / v
    }
}

/// `(Σ w q x, Σ w q²)` with each value's nearest level of `id · x`, in index order.
fn sums(x: &[f32], weight: &[f32], id: f32) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0f32, 0f32);
    for (&v, &w) in x.iter().zip(weight) {
        let q = level(best_index(id * v));
        sumqx += w * q * v;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// Steps 1 to 3 of the module docs for one sub-block of 32: its scale.
fn sub_block_scale(x: &[f32], weight: &[f32]) -> f32 {
    const NTRY: i32 = 7;
    let (max, amax) = signed_max(x);
    if amax < 1e-15 {
        return 0.0;
    }
    let d = -max / level(0);
    let (sumqx, sumq2) = sums(x, weight, 1.0 / d);
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let id = float_of(itry + i32::from(LEVELS[0])) / max;
        let (sumqx, sumq2) = sums(x, weight, id);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// The weights of one block's search: `x²`, or `qw · sqrt(σ² + x²)` with `σ² = Σx² · (2 / N)`.
fn weights<const N: usize>(x: &[f32; N], qw: Option<&[f32; N]>) -> [f32; N] {
    match qw {
        Some(qw) => importance(qw, x, sum_squares(x) * (2.0 / float_of(i32::try_from(N).unwrap_or(i32::MAX)))),
        None => core::array::from_fn(|i| x[i] * x[i]),
    }
}

/// Packs 32 codes in split halves: byte `j` holds code `j` low, code `j + 16` high.
#[expect(clippy::as_conversions, reason = "level indices (< 16) as nibbles")]
fn pack(l: &[usize], qs: &mut [u8]) {
    for j in 0..16 {
        qs[j] = (l[j] | (l[j + 16] << 4)) as u8;
    }
}

/// One `IQ4_NL` block of 32 finite values into 18 bytes (`qw`: its 32 importance weights).
pub(super) fn quantize_nl(x: &[f32; 32], qw: Option<&[f32; 32]>, out: &mut [u8]) {
    let weight = weights(x, qw);
    let d = sub_block_scale(x, &weight);
    out[..2].copy_from_slice(&half_bytes(d));
    let id = inverse(d);
    let l: [usize; 32] = core::array::from_fn(|j| best_index(id * x[j]));
    pack(&l, &mut out[2..18]);
}

/// One `IQ4_XS` super-block of 256 finite values into 136 bytes.
#[expect(clippy::as_conversions, reason = "6-bit scales (0..=63) as ggml packs them")]
pub(super) fn quantize_xs(x: &[f32; 256], qw: Option<&[f32; 256]>, out: &mut [u8]) {
    // σ² is the super-block's: the weights are computed over all 256 values.
    let weight = weights(x, qw);
    let mut scales = [0f32; 8];
    let (mut max_scale, mut amax_scale) = (0f32, 0f32);
    for (ib, s) in scales.iter_mut().enumerate() {
        *s = sub_block_scale(&x[32 * ib..32 * ib + 32], &weight[32 * ib..32 * ib + 32]);
        if s.abs() > amax_scale {
            amax_scale = s.abs();
            max_scale = *s;
        }
    }
    let d = -max_scale / 32.0;
    out[..2].copy_from_slice(&half_bytes(d));
    let id = inverse(d);
    let (mut scales_h, mut scales_l) = (0u16, [0u8; 4]);
    for (ib, &s) in scales.iter().enumerate() {
        let l = nearest_int(id * s).clamp(-32, 31);
        let idl = inverse(d * float_of(l));
        let xb = &x[32 * ib..32 * ib + 32];
        let codes: [usize; 32] = core::array::from_fn(|j| best_index(idl * xb[j]));
        pack(&codes, &mut out[8 + 16 * ib..8 + 16 * ib + 16]);
        let l = (l + 32) as u16;
        scales_l[ib / 2] |= ((l & 0xf) as u8) << (4 * (ib % 2));
        scales_h |= (l >> 4) << (2 * ib);
    }
    out[2..4].copy_from_slice(&scales_h.to_le_bytes());
    out[4..8].copy_from_slice(&scales_l);
}

/// `IQ4_XS` sub-block `ib`'s 6-bit scale minus 32.
fn xs_scale(b: &[u8], ib: usize) -> i32 {
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    let low = (b[4 + ib / 2] >> (4 * (ib % 2))) & 0xf;
    let high = (scales_h >> (2 * ib)) & 3;
    i32::from(low) | (i32::from(high) << 4)
}

/// The 32 levels of split-halves code bytes `qs`, handed to `each(j, level)`.
fn levels_of(qs: &[u8], mut each: impl FnMut(usize, i8)) {
    for (j, &q) in qs.iter().enumerate() {
        each(j, LEVELS[usize::from(q & 0xf)]);
        each(j + 16, LEVELS[usize::from(q >> 4)]);
    }
}

/// One `IQ4_NL` block's exact integer form: the levels and `d`.
pub(super) fn integer_nl(b: &[u8], codes: &mut [i8], scales: &mut [f32]) {
    scales[0] = half_at(b, 0);
    levels_of(&b[2..18], |j, l| codes[j] = l);
}

/// One `IQ4_XS` super-block's exact integer form: the levels and, per sub-block of 32,
/// `d · (ls - 32)` (an `f16` times a 6-bit integer: exact).
pub(super) fn integer_xs(b: &[u8], codes: &mut [i8], scales: &mut [f32]) {
    let d = half_at(b, 0);
    for (ib, s) in scales.iter_mut().enumerate().take(8) {
        *s = d * float_of(xs_scale(b, ib) - 32);
        levels_of(&b[8 + 16 * ib..8 + 16 * ib + 16], |j, l| codes[32 * ib + j] = l);
    }
}
