//! llama.cpp's k-quants `Q2_K`, `Q3_K`, `Q4_K`, `Q5_K` and `Q6_K`: super-blocks of 256 values, ported from
//! ggml's `quantize_row_q*_K_ref` and `dequantize_row_q*_K` (`ggml-quants.c`) operation by
//! operation, in `f32`, without fused multiply-adds (ggml's reference quantizers are compiled for
//! the x86-64 baseline, which has none), so the bytes and values are ggml's own.
//!
//! | format | bytes | super-block of 256 |
//! |---|---|---|
//! | `Q2_K` | 84 | 16 bytes of 4-bit scales (low nibble) and mins (high) per 16 values; 2-bit codes, 32 bytes per 128 values (bits `2s` of byte `l`: value `32s + l`); `d`, `dmin` last |
//! | `Q3_K` | 110 | 32 bytes of high bits (bit `b` of byte `l`: value `32b + l`); 2-bit codes as `Q2_K`; 16 6-bit scales in 12 bytes, offset 32; `d` last |
//! | `Q4_K` | 144 | `d`, `dmin` (`f16`); 8 sub-blocks of 32 with 6-bit scales and mins packed in 12 bytes; 4-bit codes, 32 bytes per 64 values (low nibbles the first 32, high nibbles the next 32) |
//! | `Q5_K` | 176 | as `Q4_K`, plus 32 bytes of fifth bits (bit `2i` of byte `l` for value `64i + l`, bit `2i + 1` for value `64i + 32 + l`) |
//! | `Q6_K` | 210 | 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 `i8` scales (one per 16 values), `d` (`f16`) last |
//!
//! Value `v` of sub-block `j` is `(d · sc_j) · q - dmin · m_j` (`Q2_K`, `Q4_K`, `Q5_K`),
//! `(d · (sc_j - 32)) · (q - 4)` (`Q3_K`) or `(d · sc_j) · (q - 32)` (`Q6_K`), each product and
//! difference one `f32` rounding, in that order.
//!
//! The quantizers search, per sub-block, for the scale (and minimum) that minimise a weighted
//! error (`make_qkx2_quants`: 21 candidate scales for `Q4_K`, 16 for `Q5_K`, with weights
//! `sqrt(mean(x²)) + |x|`, squared error; 16 for `Q2_K`, weights `|x|`, absolute error;
//! `make_qx_quants`: 19 candidates for `Q6_K`, weights `x²`; `make_q3_quants`: up to five
//! passes of coordinate descent for `Q3_K`),
//! then quantize the sub-block scales to 6 or 8 bits against the super-block's `d`, then requantize
//! every value against its stored scale. The `make_qkx2_quants` searches of a super-block's sub-blocks run eight
//! at a time, one per SIMD lane ([`super::lanes`], the same operations in the same order per
//! lane, held to the scalar search here by its tests). ggml's rounding helper `nearest_int` (`x + 1.5 · 2^23`,
//! read back from the bits) rounds ties to even, and so does [`nearest_int`] here, also for
//! magnitudes past `2^22`, where it returns what ggml's does (the low 23 bits, not an error).

// The loops mirror ggml's index by index, so that each line can be checked against the C.
#![allow(clippy::needless_range_loop)]

use quant_traits::cast::sqrt_f32;

use super::lanes::{make_qkx2_quants_x8, Search, LANES};
use super::round::{float_of, nearest_int, signed_max};
use super::{half_at, half_bytes};

/// Values per super-block.
pub(super) const QK_K: usize = 256;

/// ggml's `make_qkx2_quants`: codes `0..=nmax` in `l` for `x` with a scale and a minimum that
/// minimise `Σ w · |scale · l + min - x|^p` (`p = 1` with `use_mad`, else 2) over `nstep + 1`
/// candidate scales. Returns `(scale, -min)`. It is also ggml's `make_qkx3_quants` (the
/// weighted formats' search): that one differs only in testing `max <= min` where this tests
/// `max == min` (the same here: `max >= min` always) and in defaulting absent weights to `x²`
/// (its callers always pass weights).
#[allow(clippy::too_many_arguments)]
#[expect(clippy::as_conversions, reason = "ggml's k-quant C code, cast for cast, so the bytes match ggml's")]
pub(super) fn make_qkx2_quants<const N: usize>(
    nmax: i32,
    x: &[f32; N],
    weights: &[f32; N],
    l: &mut [u8; N],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let err = |diff: f32| if use_mad { diff.abs() } else { diff * diff };
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..N {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let mut iscale = float_of(nmax) / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..N {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        best_error += weights[i] * err(scale * float_of(q) + min - x[i]);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; N];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * float_of(is) + float_of(nmax)) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..N {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let w = weights[i];
            sum_l += w * float_of(q);
            sum_l2 += w * float_of(q) * float_of(q);
            sum_xl += w * float_of(q) * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..N {
                cur_error += weights[i] * err(this_scale * float_of(i32::from(laux[i])) + this_min - x[i]);
            }
            if cur_error < best_error {
                l.copy_from_slice(&laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `make_qx_quants` with `rmse_type = 1`: codes `-nmax..nmax` stored as `l + nmax`, the
/// scale of the best of 19 candidates under the weights `qw` (ggml's importance weights) or,
/// without them, `x²`.
#[expect(clippy::as_conversions, reason = "ggml's k-quant C code, cast for cast, so the bytes match ggml's")]
pub(super) fn make_qx_quants<const N: usize>(nmax: i32, x: &[f32; N], l: &mut [i8; N], qw: Option<&[f32; N]>) -> f32 {
    let (max, amax) = signed_max(x);
    if amax < 1e-15 {
        l.fill(0);
        return 0.0;
    }
    let weight = |i: usize| qw.map_or(x[i] * x[i], |q| q[i]);
    let code = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = float_of(-nmax) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..N {
        let q = code(iscale, x[i]);
        l[i] = (q + nmax) as i8;
        let w = weight(i);
        sumlx += w * x[i] * float_of(q);
        suml2 += w * float_of(q) * float_of(q);
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(float_of(nmax) + 0.1 * float_of(is)) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for i in 0..N {
            let q = code(iscale, x[i]);
            let w = weight(i);
            sumlx += w * x[i] * float_of(q);
            suml2 += w * float_of(q) * float_of(q);
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (o, &v) in l.iter_mut().zip(x) {
                *o = (code(iscale, v) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Sub-block `j`'s 6-bit scale and minimum from the 12 packed bytes (ggml's `get_scale_min_k4`).
pub(super) fn scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// The shared front of `Q4_K` and `Q5_K`: per sub-block of 32, a scale and a minimum searched
/// with `make_qkx2_quants`, both quantized to 6 bits against the super-block's `d` and `dmin`
/// (written to `head`: `d`, `dmin`, 12 bytes of scales), then every value requantized to
/// `0..=nmax` against its stored scale, into `l`. Without importance weights this is ggml's
/// `quantize_row_q*_K_ref` (weights `sqrt(mean(x²)) + |x|`, scales to 6 bits by `63 / max`);
/// with them, its `quantize_row_q*_K_impl` (weights `qw · sqrt(σ² + x²)` with
/// `σ² = 2 · Σx² / 256`, 37 candidate scales, 6-bit scales by `make_qp_quants`).
#[expect(clippy::as_conversions, reason = "ggml's k-quant C code, cast for cast, so the bytes match ggml's")]
fn k_front(x: &[f32; QK_K], nmax: i32, qw: Option<&[f32; QK_K]>, head: &mut [u8], l: &mut [u8; QK_K]) {
    let mut sw = [0f32; 8];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    let (rmin, rdelta, nstep) = match (qw, nmax) {
        (Some(_), _) => (-0.9, 0.05, 36),
        (None, 15) => (-1.0, 0.1, 20),
        (None, _) => (-0.5, 0.1, 15),
    };
    let sigma2 = qw.map(|_| 2.0 * sum_squares(x) / float_of(QK_K as i32));
    // Sub-block j in lane j: xt[i][j] = x[32j + i].
    let (mut xt, mut wt) = ([[0f32; LANES]; 32], [[0f32; LANES]; 32]);
    for j in 0..8 {
        let Some(sub) = x[32 * j..].first_chunk::<32>() else { continue };
        let weights = match (qw.and_then(|q| q[32 * j..].first_chunk::<32>()), sigma2) {
            (Some(q), Some(sigma2)) => importance(q, sub, sigma2),
            _ => {
                let av_x = sqrt_f32(sum_squares(sub) / 32.0);
                sub.map(|v| av_x + v.abs())
            }
        };
        sw[j] = sum(&weights);
        for i in 0..32 {
            xt[i][j] = sub[i];
            wt[i][j] = weights[i];
        }
    }
    let search = Search { nmax, rmin, rdelta, nstep, use_mad: false };
    let mut lt = [[0u8; LANES]; 32];
    let (scales, mins) = make_qkx2_quants_x8(search, &xt, &wt, &mut lt);
    for j in 0..8 {
        for i in 0..32 {
            l[32 * j + i] = lt[i][j];
        }
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let (d, dmin) = if qw.is_some() {
        let d = make_qp_quants(63, &scales, &mut ls, &sw);
        let m = make_qp_quants(63, &mins, &mut lm, &sw);
        if nmax == 31 {
            // ggml's Q5_K (not its Q4_K) clamps the scale codes to 63 here.
            ls = ls.map(|v| v.min(63));
            lm = lm.map(|v| v.min(63));
        }
        (d, m)
    } else {
        let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
        let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
        for j in 0..8 {
            // ggml stores nearest_int(..) in a uint8_t (the low byte), then takes MIN(63, ..).
            ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
            lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
        }
        (max_scale / 63.0, max_min / 63.0)
    };
    let sc = &mut head[4..16];
    sc.fill(0);
    for j in 0..8 {
        if j < 4 {
            sc[j] = ls[j];
            sc[j + 4] = lm[j];
        } else {
            sc[j + 4] = (ls[j] & 0xf) | ((lm[j] & 0xf) << 4);
            sc[j - 4] |= (ls[j] >> 4) << 6;
            sc[j] |= (lm[j] >> 4) << 6;
        }
    }
    head[0..2].copy_from_slice(&half_bytes(d));
    head[2..4].copy_from_slice(&half_bytes(dmin));
    let (d16, dmin16) = (half_at(head, 0), half_at(head, 2));
    for j in 0..8 {
        let (s, m) = scale_min(j, &head[4..16]);
        let d = d16 * f32::from(s);
        if d == 0.0 {
            continue;
        }
        let dm = dmin16 * f32::from(m);
        for i in 32 * j..32 * j + 32 {
            l[i] = nearest_int((x[i] + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

/// `Σ x²`, in order (ggml's loops).
pub(super) fn sum_squares(x: &[f32]) -> f32 {
    x.iter().fold(0.0, |a, &v| a + v * v)
}

/// `Σ w`, in order (ggml's `sumw` / `sw[j]` loops).
fn sum(w: &[f32]) -> f32 {
    w.iter().fold(0.0, |a, &v| a + v)
}

/// ggml's importance weights of the `_impl` quantizers: `qw · sqrt(σ² + x²)`.
pub(super) fn importance<const N: usize>(qw: &[f32; N], x: &[f32; N], sigma2: f32) -> [f32; N] {
    core::array::from_fn(|i| qw[i] * sqrt_f32(sigma2 + x[i] * x[i]))
}

/// One `Q4_K` super-block (144 bytes), with importance weights `qw` or without.
pub(super) fn q4_k(x: &[f32; QK_K], out: &mut [u8], qw: Option<&[f32; QK_K]>) {
    let mut l = [0u8; QK_K];
    k_front(x, 15, qw, &mut out[..16], &mut l);
    let qs = &mut out[16..144];
    for (c, chunk) in l.chunks_exact(64).enumerate() {
        for i in 0..32 {
            qs[32 * c + i] = chunk[i] | (chunk[i + 32] << 4);
        }
    }
}

/// One `Q5_K` super-block (176 bytes), with importance weights `qw` or without.
pub(super) fn q5_k(x: &[f32; QK_K], out: &mut [u8], qw: Option<&[f32; QK_K]>) {
    let mut l = [0u8; QK_K];
    k_front(x, 31, qw, &mut out[..16], &mut l);
    let (qh, qs) = out[16..176].split_at_mut(32);
    qh.fill(0);
    for (c, chunk) in l.chunks_exact(64).enumerate() {
        let (m1, m2) = (1u8 << (2 * c), 2u8 << (2 * c));
        for i in 0..32 {
            let (mut l1, mut l2) = (chunk[i], chunk[i + 32]);
            if l1 > 15 {
                l1 -= 16;
                qh[i] |= m1;
            }
            if l2 > 15 {
                l2 -= 16;
                qh[i] |= m2;
            }
            qs[32 * c + i] = l1 | (l2 << 4);
        }
    }
}

/// One `Q6_K` super-block (210 bytes: `ql[128]`, `qh[64]`, `scales[16]`, `d`); importance
/// weights `qw`, if given, weigh the per-16 scale searches as they are (ggml's `_impl`).
#[expect(clippy::as_conversions, reason = "ggml's k-quant C code, cast for cast, so the bytes match ggml's")]
pub(super) fn q6_k(x: &[f32; QK_K], out: &mut [u8], qw: Option<&[f32; QK_K]>) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for (ib, s) in scales.iter_mut().enumerate() {
        let (Some(sub), Some(lb)) = (x[16 * ib..].first_chunk::<16>(), l[16 * ib..].first_chunk_mut::<16>()) else {
            continue;
        };
        *s = make_qx_quants(32, sub, lb, qw.and_then(|q| q[16 * ib..].first_chunk::<16>()));
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = *s;
        }
    }
    out.fill(0);
    if max_abs_scale < 1e-15 {
        return; // every byte 0, d = +0
    }
    let iscale = -128.0 / max_scale;
    out[208..210].copy_from_slice(&half_bytes(1.0 / iscale));
    for (ib, &s) in scales.iter().enumerate() {
        // MIN(127, nearest_int(..)) stored in an int8_t: >= -128 since |s| <= max_abs_scale.
        out[192 + ib] = nearest_int(iscale * s).min(127) as i8 as u8;
    }
    let d16 = half_at(out, 208);
    for j in 0..16 {
        let d = d16 * f32::from(out[192 + j] as i8);
        if d == 0.0 {
            continue;
        }
        for i in 16 * j..16 * j + 16 {
            l[i] = (nearest_int(x[i] / d).clamp(-32, 31) + 32) as i8;
        }
    }
    let (ql, rest) = out.split_at_mut(128);
    let qh = &mut rest[..64];
    for h in 0..2 {
        let (lh, ql, qh) = (&l[128 * h..128 * h + 128], &mut ql[64 * h..64 * h + 64], &mut qh[32 * h..32 * h + 32]);
        for i in 0..32 {
            let q = [lh[i], lh[i + 32], lh[i + 64], lh[i + 96]].map(|v| v as u8);
            ql[i] = (q[0] & 0xf) | ((q[2] & 0xf) << 4);
            ql[i + 32] = (q[1] & 0xf) | ((q[3] & 0xf) << 4);
            qh[i] = (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
        }
    }
}

/// ggml's `make_q3_quants` with `do_rmse`: 16 values, codes `-nmax..nmax` refined by five
/// passes of coordinate descent on the weighted (`x²`) error, stored as `l + nmax`; returns the
/// scale. An all-zero sub-block gives codes 0 (not `nmax`) and scale 0, as ggml's does.
#[expect(clippy::as_conversions, reason = "ggml's k-quant C code, cast for cast, so the bytes match ggml's")]
fn make_q3_quants(nmax: i32, x: &[f32; 16], l: &mut [i8; 16]) -> f32 {
    let (max, amax) = signed_max(x);
    if amax < 1e-15 {
        l.fill(0);
        return 0.0;
    }
    let iscale = float_of(-nmax) / max;
    let mut q = [0i32; 16];
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..16 {
        q[i] = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        let w = x[i] * x[i];
        sumlx += w * x[i] * float_of(q[i]);
        suml2 += w * float_of(q[i]) * float_of(q[i]);
    }
    for _ in 0..5 {
        let mut changed = 0;
        for i in 0..16 {
            let w = x[i] * x[i];
            let mut slx = sumlx - w * x[i] * float_of(q[i]);
            if slx > 0.0 {
                let mut sl2 = suml2 - w * float_of(q[i]) * float_of(q[i]);
                let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != q[i] {
                    slx += w * x[i] * float_of(new_l);
                    sl2 += w * float_of(new_l) * float_of(new_l);
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        q[i] = new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        changed += 1;
                    }
                }
            }
        }
        if changed == 0 {
            break;
        }
    }
    for (o, &v) in l.iter_mut().zip(&q) {
        *o = (v + nmax) as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Packs 256 two-bit codes as `Q2_K` and `Q3_K` do: byte `32h + l` of each half `h` holds
/// values `128h + l`, `+ 32`, `+ 64`, `+ 96` in bits 0-1, 2-3, 4-5, 6-7.
pub(super) fn pack2(l: &[u8; QK_K], qs: &mut [u8]) {
    for h in 0..2 {
        for i in 0..32 {
            let j = 128 * h + i;
            qs[32 * h + i] = l[j] | (l[j + 32] << 2) | (l[j + 64] << 4) | (l[j + 96] << 6);
        }
    }
}

/// One `Q2_K` super-block (84 bytes: `scales[16]` (scale low, minimum high nibble), `qs[64]`,
/// `d`, `dmin`). Without importance weights ggml's `quantize_row_q2_K_ref` (weights `|x|`,
/// absolute error, 4-bit scales by `15 / max`); with them its `quantize_row_q2_K_impl`
/// (weights `qw · sqrt(σ² + x²)`, `σ² = Σx² / 256`, squared error, scales by `make_qp_quants`).
#[expect(clippy::as_conversions, reason = "ggml's k-quant C code, cast for cast, so the bytes match ggml's")]
pub(super) fn q2_k(x: &[f32; QK_K], out: &mut [u8], qw: Option<&[f32; QK_K]>) {
    let mut l = [0u8; QK_K];
    let (mut scales, mut mins, mut sw) = ([0f32; 16], [0f32; 16], [0f32; 16]);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    let sigma2 = sum_squares(x) / float_of(QK_K as i32);
    let search = match qw {
        Some(_) => Search { nmax: 3, rmin: -0.9, rdelta: 0.05, nstep: 36, use_mad: false },
        None => Search { nmax: 3, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: true },
    };
    // Sub-blocks 8h..8h + 8 in the lanes of half h: xt[h][i][j] = x[16(8h + j) + i].
    let (mut xt, mut wt) = ([[[0f32; LANES]; 16]; 2], [[[0f32; LANES]; 16]; 2]);
    for j in 0..16 {
        let Some(sub) = x[16 * j..].first_chunk::<16>() else { continue };
        let weights = match qw.and_then(|q| q[16 * j..].first_chunk::<16>()) {
            Some(q) => {
                let weights: [f32; 16] = core::array::from_fn(|i| q[i] * sqrt_f32(sigma2 + sub[i] * sub[i]));
                sw[j] = sum(&weights);
                weights
            }
            None => sub.map(f32::abs),
        };
        for i in 0..16 {
            xt[j / 8][i][j % 8] = sub[i];
            wt[j / 8][i][j % 8] = weights[i];
        }
    }
    for h in 0..2 {
        let mut lt = [[0u8; LANES]; 16];
        let (sc, mn) = make_qkx2_quants_x8(search, &xt[h], &wt[h], &mut lt);
        for j in 0..8 {
            for i in 0..16 {
                l[16 * (8 * h + j) + i] = lt[i][j];
            }
            scales[8 * h + j] = sc[j];
            mins[8 * h + j] = mn[j];
        }
    }
    for j in 0..16 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let (sc, rest) = out.split_at_mut(16);
    sc.fill(0);
    let (d, dmin) = if qw.is_some() {
        let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
        let d = make_qp_quants(15, &scales, &mut ls, &sw);
        let m = make_qp_quants(15, &mins, &mut lm, &sw);
        for (o, (&s, &m)) in sc.iter_mut().zip(ls.iter().zip(&lm)) {
            *o = s | (m << 4);
        }
        (d, m)
    } else {
        if max_scale > 0.0 {
            let iscale = 15.0 / max_scale;
            for (o, &s) in sc.iter_mut().zip(&scales) {
                *o = nearest_int(iscale * s) as u8; // ggml stores the int in a uint8_t
            }
        }
        if max_min > 0.0 {
            let iscale = 15.0 / max_min;
            for (o, &m) in sc.iter_mut().zip(&mins) {
                *o |= (nearest_int(iscale * m) << 4) as u8;
            }
        }
        let part = |max: f32| if max > 0.0 { max / 15.0 } else { 0.0 };
        (part(max_scale), part(max_min))
    };
    rest[64..66].copy_from_slice(&half_bytes(d));
    rest[66..68].copy_from_slice(&half_bytes(dmin));
    let (d16, dmin16) = (half_at(rest, 64), half_at(rest, 66));
    for (j, &s) in sc.iter().enumerate() {
        let d = d16 * f32::from(s & 0xf);
        if d == 0.0 {
            continue;
        }
        let dm = dmin16 * f32::from(s >> 4);
        for i in 16 * j..16 * j + 16 {
            l[i] = nearest_int((x[i] + dm) / d).clamp(0, 3) as u8;
        }
    }
    pack2(&l, &mut rest[..64]);
}

/// Sub-block `j`'s 6-bit `Q3_K` scale (`0..=63`, stored with an offset of 32) from the 12 bytes.
pub(super) fn q3_scale(j: usize, sc: &[u8]) -> i32 {
    let low = if j < 8 { sc[j] & 0xf } else { sc[j - 8] >> 4 };
    i32::from(low | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32
}

/// One `Q3_K` super-block (110 bytes: `hmask[32]`, `qs[64]`, `scales[12]`, `d`). Without
/// importance weights ggml's `quantize_row_q3_K_ref` (`make_q3_quants`, scales to 6 bits by
/// `-32 / max`); with them its `quantize_row_q3_K_impl` (`make_qx_quants` under weights
/// `qw · sqrt(σ² + x²)`, `σ² = 2 · Σx² / 256`, and again for the 6-bit scales).
#[expect(clippy::as_conversions, reason = "ggml's k-quant C code, cast for cast, so the bytes match ggml's")]
pub(super) fn q3_k(x: &[f32; QK_K], out: &mut [u8], qw: Option<&[f32; QK_K]>) {
    let mut l8 = [0i8; QK_K];
    let (mut scales, mut sw) = ([0f32; 16], [0f32; 16]);
    let (mut max_scale, mut amax) = (0f32, 0f32);
    let sigma2 = 2.0 * sum_squares(x) / float_of(QK_K as i32);
    for (j, s) in scales.iter_mut().enumerate() {
        let (Some(sub), Some(lj)) = (x[16 * j..].first_chunk::<16>(), l8[16 * j..].first_chunk_mut::<16>()) else {
            continue;
        };
        *s = match qw.and_then(|q| q[16 * j..].first_chunk::<16>()) {
            Some(q) => {
                let weights: [f32; 16] = core::array::from_fn(|i| q[i] * sqrt_f32(sigma2 + sub[i] * sub[i]));
                sw[j] = sum(&weights);
                make_qx_quants(4, sub, lj, Some(&weights))
            }
            None => make_q3_quants(4, sub, lj),
        };
        if s.abs() > amax {
            amax = s.abs();
            max_scale = *s;
        }
    }
    // The 6-bit scale codes (with their offset of 32) and the super-block scale.
    let mut ls = [0u8; 16];
    let d = if qw.is_some() {
        let mut lq = [0i8; 16];
        let d = make_qx_quants(32, &scales, &mut lq, Some(&sw));
        ls = lq.map(|v| v as u8);
        d
    } else if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (o, &s) in ls.iter_mut().zip(&scales) {
            // ggml: int8_t l = nearest_int(..) (the low byte), clamped to -32..=31, plus 32.
            *o = (i32::from(nearest_int(iscale * s) as i8).clamp(-32, 31) + 32) as u8;
        }
        1.0 / iscale
    } else {
        0.0
    };
    out.fill(0);
    let (hmask, rest) = out.split_at_mut(32);
    let (qs, rest) = rest.split_at_mut(64);
    let (sc, d_bytes) = rest.split_at_mut(12);
    for (j, &v) in ls.iter().enumerate() {
        if j < 8 {
            sc[j] = v & 0xf;
        } else {
            sc[j - 8] |= (v & 0xf) << 4;
        }
        sc[j % 4 + 8] |= (v >> 4) << (2 * (j / 4));
    }
    d_bytes.copy_from_slice(&half_bytes(d));
    let d16 = half_at(d_bytes, 0);
    for j in 0..16 {
        let d = d16 * float_of(q3_scale(j, sc));
        if d == 0.0 {
            continue;
        }
        for i in 16 * j..16 * j + 16 {
            l8[i] = (nearest_int(x[i] / d).clamp(-4, 3) + 4) as i8;
        }
    }
    let mut l = l8.map(|v| v as u8);
    for (j, v) in l.iter_mut().enumerate() {
        if *v > 3 {
            hmask[j % 32] |= 1 << (j / 32);
            *v -= 4;
        }
    }
    pack2(&l, qs);
}

/// ggml's `make_qp_quants`: non-negative `x` (sub-block scales or minimums) to codes
/// `0..=nmax` in `l` against one scale, the best of 9 candidates under the weights `qw`, then
/// refined by up to five passes of coordinate descent. Returns the scale. ggml keeps the codes
/// in `uint8_t` while computing with the unclamped integers; so does this port.
#[expect(clippy::as_conversions, reason = "ggml's k-quant C code, cast for cast, so the bytes match ggml's")]
pub(super) fn make_qp_quants<const N: usize>(nmax: i32, x: &[f32; N], l: &mut [u8; N], qw: &[f32; N]) -> f32 {
    let max = x.iter().fold(0.0f32, |m, &v| if m > v { m } else { v }); // MAX(max, x[i])
    if max < 1e-15 {
        l.fill(0);
        return 0.0;
    }
    let mut iscale = float_of(nmax) / max;
    for (o, &v) in l.iter_mut().zip(x) {
        *o = nearest_int(iscale * v) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..N {
        let diff = x[i] - scale * f32::from(l[i]);
        best_mse += qw[i] * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * float_of(is) + float_of(nmax)) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..N {
            let q = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * float_of(q);
            mse += qw[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..N {
        let q = nearest_int(iscale * x[i]).min(nmax);
        l[i] = q as u8;
        let w = qw[i];
        sumlx += w * x[i] * float_of(q);
        suml2 += w * float_of(q) * float_of(q);
    }
    for _ in 0..5 {
        let mut changed = 0;
        for i in 0..N {
            let w = qw[i];
            let li = f32::from(l[i]);
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != i32::from(l[i]) {
                    slx += w * x[i] * float_of(new_l);
                    sl2 += w * float_of(new_l) * float_of(new_l);
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed += 1;
                    }
                }
            }
        }
        if changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// One `Q2_K` super-block's exact integer form (see `BlockFormat::integer_form_into`): per
/// sub-block of 16, `d · sc` and `-(dmin · m)`; codes `0..=3`.
pub(super) fn integer_q2_k(b: &[u8], codes: &mut [i8], scales: &mut [f32], mins: &mut [f32]) {
    let (sc, qs) = (&b[..16], &b[16..80]);
    let (d, min) = (half_at(b, 80), half_at(b, 82));
    let mut is = 0;
    for h in 0..2 {
        let q = &qs[32 * h..32 * h + 32];
        for shift in [0, 2, 4, 6] {
            for half in 0..2 {
                let s = sc[is];
                (scales[is], mins[is]) = (d * f32::from(s & 0xf), -(min * f32::from(s >> 4)));
                for i in 0..16 {
                    codes[16 * is + i] = i8::from_le_bytes([(q[16 * half + i] >> shift) & 3]);
                }
                is += 1;
            }
        }
    }
}

/// One `Q3_K` super-block's exact integer form: per sub-block of 16, `d · (sc - 32)`; codes
/// `-4..=3`.
#[expect(clippy::as_conversions, reason = "ggml's k-quant C code, cast for cast, so the bytes match ggml's")]
pub(super) fn integer_q3_k(b: &[u8], codes: &mut [i8], scales: &mut [f32]) {
    let (hm, qs, sc) = (&b[..32], &b[32..96], &b[96..108]);
    let d_all = half_at(b, 108);
    let mut is = 0;
    for h in 0..2 {
        let q = &qs[32 * h..32 * h + 32];
        for shift in [0, 2, 4, 6] {
            let m = 1u8 << (4 * h + shift / 2);
            for half in 0..2 {
                scales[is] = d_all * float_of(q3_scale(is, sc));
                for i in 0..16 {
                    let k = 16 * half + i;
                    codes[16 * is + i] = ((q[k] >> shift) & 3) as i8 - if hm[k] & m != 0 { 0 } else { 4 };
                }
                is += 1;
            }
        }
    }
}

/// One `Q4_K` (`fifth = false`) or `Q5_K` super-block's exact integer form: per sub-block of
/// 32, `d · sc` and `-(dmin · m)`; codes `0..=15` or `0..=31`.
#[expect(clippy::as_conversions, reason = "ggml's k-quant C code, cast for cast, so the bytes match ggml's")]
pub(super) fn integer_q45_k(b: &[u8], fifth: bool, codes: &mut [i8], scales: &mut [f32], mins: &mut [f32]) {
    let (d, min) = (half_at(b, 0), half_at(b, 2));
    let sc = &b[4..16];
    let (qh, qs) = if fifth { (&b[16..48], &b[48..176]) } else { (&b[0..0], &b[16..144]) };
    for c in 0..4 {
        for s in [2 * c, 2 * c + 1] {
            let (l, m) = scale_min(s, sc);
            (scales[s], mins[s]) = (d * f32::from(l), -(min * f32::from(m)));
        }
        let q = &qs[32 * c..32 * c + 32];
        for i in 0..32 {
            let (mut lo, mut hi) = (q[i] & 0xf, q[i] >> 4);
            if fifth {
                lo += if qh[i] & (1 << (2 * c)) != 0 { 16 } else { 0 };
                hi += if qh[i] & (2 << (2 * c)) != 0 { 16 } else { 0 };
            }
            codes[64 * c + i] = lo as i8;
            codes[64 * c + 32 + i] = hi as i8;
        }
    }
}

/// One `Q6_K` super-block's exact integer form: per sub-block of 16, `d · sc` (`sc` an `i8`);
/// codes `-32..=31`.
#[expect(clippy::as_conversions, reason = "ggml's k-quant C code, cast for cast, so the bytes match ggml's")]
pub(super) fn integer_q6_k(b: &[u8], codes: &mut [i8], scales: &mut [f32]) {
    let d = half_at(b, 208);
    for h in 0..2 {
        let (ql, qh) = (&b[64 * h..64 * h + 64], &b[128 + 32 * h..128 + 32 * h + 32]);
        for (j, &s) in b[192 + 8 * h..192 + 8 * h + 8].iter().enumerate() {
            scales[8 * h + j] = d * f32::from(s as i8);
        }
        let codes = &mut codes[128 * h..128 * h + 128];
        for l in 0..32 {
            let q = [
                (ql[l] & 0xf) | (qh[l] & 3) << 4,
                (ql[l + 32] & 0xf) | ((qh[l] >> 2) & 3) << 4,
                (ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4,
                (ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4,
            ];
            for (k, &q) in q.iter().enumerate() {
                codes[l + 32 * k] = q as i8 - 32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::nearest_int;

    #[test]
    fn nearest_int_rounds_ties_to_even_like_ggml() {
        assert_eq!([0.5f32, 1.5, 2.5, -0.5, -1.5, 3.49, -3.51].map(nearest_int), [0, 2, 2, 0, -2, 3, -4]);
        // Past 2^22 ggml's helper returns its low 23 bits minus 2^22, and so does ours.
        assert_eq!(nearest_int(4_194_304.0), -4_194_304);
    }
}
