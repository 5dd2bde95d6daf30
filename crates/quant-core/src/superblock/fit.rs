//! Fitting one sub-block: the scale (and offset) that a grid of codes gets, by min-max or by an
//! error-minimizing search. The scalar reference of the two-level formats; every step is one
//! `f32` operation in the order written here (no fused multiply-add), so results are the same on
//! every machine.

use super::Grid;

/// The 16 levels of the [`Grid::Levels`] grid: llama.cpp's `kvalues_iq4nl` (`IQ4_NL`, `IQ4_XS`),
/// a non-uniform 4-bit codebook denser near zero, as weights are. Code `q` stands for
/// `d · LEVELS[q]`.
pub const LEVELS: [i16; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// The 32 levels of the 5-bit [`Grid::Levels`] grid: [`LEVELS`]' curve at half steps. With
/// `f` the piecewise-linear interpolation of `LEVELS` over its index (extended linearly past
/// both ends), level `j` of a `b`-bit table is `round(127 · f(t_j) / max_i |f(t_i)|)`, ties to
/// even, at `t_j = (j + 1/2) · 2^(4-b) - 1/2` (the 4-bit table is `LEVELS` itself). A test holds
/// the tables to this rule.
pub const LEVELS5: [i16; 32] = [
    -127, -116, -105, -94, -84, -75, -66, -58, -51, -44, -37, -30, -24, -18, -12, -7, -2, 4, 10, 15, 21, 27, 33, 40,
    47, 55, 62, 71, 80, 91, 102, 114,
];

/// The 64 levels of the 6-bit [`Grid::Levels`] grid: [`LEVELS`]' curve at quarter steps (the
/// rule of [`LEVELS5`]).
pub const LEVELS6: [i16; 64] = [
    -127, -122, -116, -111, -105, -100, -95, -90, -85, -80, -76, -71, -67, -63, -59, -55, -52, -48, -44, -41, -38, -34,
    -31, -28, -25, -22, -19, -16, -14, -11, -8, -6, -3, 0, 2, 5, 8, 11, 14, 16, 19, 22, 25, 28, 31, 34, 37, 41, 44, 48,
    52, 55, 59, 63, 67, 72, 76, 81, 86, 92, 97, 103, 109, 114,
];

/// The level table of a `bits`-wide levels grid (4, 5 or 6 bits; others get the 4-bit one).
#[must_use]
pub fn levels(bits: u32) -> &'static [i16] {
    match bits {
        5 => &LEVELS5,
        6 => &LEVELS6,
        _ => &LEVELS,
    }
}

/// For the 5- and 6-bit tables: the code of `t` by `k = ceil(2t)` (clamped to `-256..=256`),
/// `LUT[k + 256]` = the number of midpoints `<= (k - 1)/2`. Levels are integers, so midpoints lie
/// on the half-integer grid and every `t` in `((k-1)/2, k/2]` has the same nearest level (the
/// lower one on a tie, as `t > midpoint` decides).
#[expect(clippy::as_conversions, reason = "small integer level tables (|v| <= 127) to i32/f32, exact")]
const fn level_lut(levels: &[i16]) -> [u8; 513] {
    let mut lut = [0u8; 513];
    let mut k = 0;
    while k < 513 {
        // Twice the bound (k - 256 - 1) / 2: compare doubled midpoints L[i] + L[i+1].
        let bound2 = k as i32 - 257;
        let mut count = 0u8;
        let mut i = 0;
        while i + 1 < levels.len() {
            if (levels[i] as i32 + levels[i + 1] as i32) <= bound2 {
                count += 1;
            }
            i += 1;
        }
        lut[k] = count;
        k += 1;
    }
    lut
}

const LUT5: [u8; 513] = level_lut(&LEVELS5);
const LUT6: [u8; 513] = level_lut(&LEVELS6);

/// The code of the level nearest to `t` in the `bits`-wide table (the lower on a tie).
#[inline]
fn level_code(bits: u32, t: f32) -> i16 {
    if bits == 4 {
        let mut q: i16 = 0;
        for m in MIDS {
            q += i16::from(t > m);
        }
        return q;
    }
    // k = ceil(2t), clamped (NaN to the low end): round to nearest, then up by one when that
    // fell below.
    let t2 = 2.0 * t;
    let r = rint_f(t2, -256.0, 256.0);
    let k = if r < t2 { r + 1.0 } else { r };
    let idx = usize::try_from(rint_clamped(k, -256, 256) + 256).unwrap_or(0);
    let lut = if bits == 5 { &LUT5 } else { &LUT6 };
    i16::from(lut[idx])
}

/// How a sub-block's scale and offset are chosen.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Fit {
    /// From the extremes alone: symmetric `d = max|x| / (2^(b-1) - 1)`; offset
    /// `d = (max - min) / (2^b - 1)`, `m = min`; zero point as ONNX (the range widened to hold
    /// 0, `z = round(-min / d)`); levels `d = -a / 127` with `a` the value of largest magnitude.
    MinMax,
    /// An error-minimizing search (deterministic, documented in [`fit_sub_block`]): candidate
    /// scales around the extremes, each followed by a least-squares refit of the scale (and the
    /// offset) given its codes; the min-max fit is one of the candidates, so the search is never
    /// worse than [`Fit::MinMax`] on any sub-block. After the scales are stored in few bits, the
    /// neighbouring stored values are tried too.
    Search,
}

/// A fitted sub-block: `x ≈ d · v(q) + m`, with `v(q)` the grid's value of code `q`
/// (`x ≈ d · (q - z)` for [`Grid::ZeroPoint`], with `z` in `m`).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct SubFit {
    /// The scale (negative allowed for the symmetric and levels grids: the sign trick).
    pub d: f32,
    /// The offset (0 for the symmetric and levels grids); for [`Grid::ZeroPoint`], the zero
    /// point `z` (an integer in the code range).
    pub m: f32,
    /// The weighted squared error `Σ w (x - x̂)²` of the fit with nearest codes, in `f32`.
    pub error: f32,
    /// `Σ w v(q)²` over the nearest codes: how fast the error grows as `d` moves (by `Δ`, the
    /// codes kept, it grows by about `Δ² ·` this). Weights the scales' own quantization.
    pub curvature: f32,
}

/// The range of codes of `grid` at `bits`, as the values `v(q)` the codes stand for.
pub(crate) fn code_range(grid: Grid, bits: u32) -> (i16, i16) {
    match grid {
        Grid::Symmetric => (-(1i16 << (bits - 1)), (1i16 << (bits - 1)) - 1),
        Grid::Offset | Grid::ZeroPoint => (0, (1i16 << bits) - 1),
        Grid::Levels => (0, (1i16 << bits) - 1),
    }
}

/// `v` rounded to the nearest integer, ties to even, after clamping to `lo..=hi` (NaN gives
/// `lo`). Clamping first is the same as rounding first for integer bounds, and keeps `v` small
/// enough for the `2^23` trick: adding `1.5 · 2^23` leaves `v` rounded in the low mantissa bits.
#[inline]
pub(crate) fn rint_clamped(v: f32, lo: i16, hi: i16) -> i16 {
    let c = v.max(f32::from(lo)).min(f32::from(hi));
    let bits = (c + 12_582_912.0).to_bits() & 0x007f_ffff;
    // `c` is in -256..=255, so the low bits are 2^22 + c, within `i32` and the result in `i16`.
    let r = i32::try_from(bits).unwrap_or(0) - 0x0040_0000;
    i16::try_from(r).unwrap_or(lo)
}

/// `v` clamped to `lo..=hi` and rounded to an integer, ties to even, as an `f32` (the same
/// value as [`rint_clamped`]; float operations only, so loops over it vectorize).
#[inline]
fn rint_f(v: f32, lo: f32, hi: f32) -> f32 {
    let c = v.max(lo).min(hi);
    (c + 12_582_912.0) - 12_582_912.0
}

/// Midpoints between neighbouring [`LEVELS`] and the steps between them.
#[expect(clippy::as_conversions, reason = "small integer level tables (|v| <= 127) to i32/f32, exact")]
const MIDS: [f32; 15] = {
    let mut m = [0.0f32; 15];
    let mut i = 0;
    while i < 15 {
        m[i] = (LEVELS[i] + LEVELS[i + 1]) as f32 * 0.5;
        i += 1;
    }
    m
};
#[expect(clippy::as_conversions, reason = "small integer level tables (|v| <= 127) to i32/f32, exact")]
const STEPS: [f32; 15] = {
    let mut m = [0.0f32; 15];
    let mut i = 0;
    while i < 15 {
        m[i] = (LEVELS[i + 1] - LEVELS[i]) as f32;
        i += 1;
    }
    m
};

/// The level nearest to `t` (the lower on a tie) as its value: `LEVELS[0]` plus every step
/// whose midpoint `t` exceeds (selects and adds only, so loops over it vectorize).
#[inline]
fn level_value(t: f32) -> f32 {
    let mut v = f32::from(LEVELS[0]);
    for i in 0..15 {
        v += if t > MIDS[i] { STEPS[i] } else { 0.0 };
    }
    v
}

/// Partial sums kept per lane and added in lane order at the end: a fixed order (the same
/// result on every machine) that the compiler can vectorize.
const LANES: usize = 8;

/// `Σ_lanes` in lane order.
#[inline]
fn lane_total(a: [f32; LANES]) -> f32 {
    let mut s = 0.0f32;
    for v in a {
        s += v;
    }
    s
}

/// `[Σ w f(x)_0, .., Σ w f(x)_(K-1)]` over `x` (weights 1 without `w`), in [`LANES`] partial
/// sums per term: value `i` goes to lane `i % LANES`, lanes are added in order at the end.
#[inline(always)]
fn weighted_sums<const K: usize>(x: &[f32], w: Option<&[f32]>, f: impl Fn(f32) -> [f32; K]) -> [f32; K] {
    let mut acc = [[0.0f32; LANES]; K];
    let n = x.len() / LANES * LANES;
    for (ci, c) in x[..n].chunks_exact(LANES).enumerate() {
        let wc: [f32; LANES] = match w {
            Some(w) => w[ci * LANES..(ci + 1) * LANES].try_into().unwrap_or([1.0; LANES]),
            None => [1.0; LANES],
        };
        for k in 0..LANES {
            let t = f(c[k]);
            for j in 0..K {
                acc[j][k] += wc[k] * t[j];
            }
        }
    }
    for (k, &v) in x[n..].iter().enumerate() {
        let wi = weight(w, n + k);
        let t = f(v);
        for j in 0..K {
            acc[j][k] += wi * t[j];
        }
    }
    acc.map(lane_total)
}

/// `(Σ w g x, Σ w g²)` over `x` with `g` the grid value of each value's code under the
/// reciprocal scale `inv` (`x · inv` rounded, or its nearest level).
#[inline]
fn candidate_sums(grid: Grid, bits: u32, x: &[f32], w: Option<&[f32]>, inv: f32) -> (f32, f32) {
    let (lo, hi) = code_range(grid, bits);
    let (lo, hi) = (f32::from(lo), f32::from(hi));
    let [a, b] = if grid == Grid::Levels && bits == 4 {
        weighted_sums(x, w, |v| {
            let q = level_value(v * inv);
            [q * v, q * q]
        })
    } else if grid == Grid::Levels {
        let table = levels(bits);
        weighted_sums(x, w, |v| {
            let q = f32::from(table[usize::try_from(level_code(bits, v * inv)).unwrap_or(0)]);
            [q * v, q * q]
        })
    } else {
        weighted_sums(x, w, |v| {
            let q = rint_f(v * inv, lo, hi);
            [q * v, q * q]
        })
    };
    (a, b)
}

/// The code nearest to `x` under scale `d` and offset `m`: `clamp(round((x - m) / d))` for the
/// linear grids (ties to even), the level nearest to `x / d` for [`Grid::Levels`] (a value
/// exactly between two levels takes the lower one). `d = 0` gives the code of value 0 (or
/// the lowest code, for the offset grid).
#[inline]
pub(crate) fn nearest_code(grid: Grid, bits: u32, x: f32, d: f32, m: f32) -> i16 {
    let (lo, hi) = code_range(grid, bits);
    if grid == Grid::ZeroPoint {
        // `m` holds the zero point z: clamp(round(x / d) + z), round first (ONNX's order).
        let z = rint_clamped(m, lo, hi);
        return if d == 0.0 { z } else { rint_clamped(x / d, lo - z, hi - z) + z };
    }
    if d == 0.0 {
        return match grid {
            Grid::Symmetric | Grid::Offset | Grid::ZeroPoint => 0,
            Grid::Levels => zero_code(bits),
        };
    }
    match grid {
        Grid::Symmetric | Grid::Offset | Grid::ZeroPoint => rint_clamped((x - m) / d, lo, hi),
        Grid::Levels => level_code(bits, x / d),
    }
}

/// The value code `q` stands for before scaling: `q` for the linear grids, `LEVELS[q]` for
/// the levels grid.
#[inline]
pub(crate) fn grid_value(grid: Grid, bits: u32, q: i16) -> f32 {
    match grid {
        Grid::Symmetric | Grid::Offset | Grid::ZeroPoint => f32::from(q),
        Grid::Levels => {
            let table = levels(bits);
            f32::from(table[usize::try_from(q).unwrap_or(0).min(table.len() - 1)])
        }
    }
}

/// The code of the level nearest 0 (the first on a tie): what a zero scale gives.
pub(crate) fn zero_code(bits: u32) -> i16 {
    let table = levels(bits);
    let mut best = 0usize;
    for (i, &l) in table.iter().enumerate() {
        if l.abs() < table[best].abs() {
            best = i;
        }
    }
    i16::try_from(best).unwrap_or(0)
}

/// The reconstruction `d · v(q) + m`, rounded once per operation (`m = 0` adds nothing).
#[inline]
pub(crate) fn reconstruct(grid: Grid, bits: u32, q: i16, d: f32, m: f32) -> f32 {
    if grid == Grid::ZeroPoint {
        // `m` holds the zero point z: d · (q - z), the difference exact (small integers).
        return d * (f32::from(q) - m);
    }
    d * grid_value(grid, bits, q) + m
}

/// `Σ w (x - x̂)²` with nearest codes under `(d, m)`, in `f32`, in order.
pub(crate) fn error_of(grid: Grid, bits: u32, x: &[f32], w: Option<&[f32]>, d: f32, m: f32) -> f32 {
    error_and_curvature(grid, bits, x, w, d, m).0
}

/// `Σ w (x - x̂)²` and `Σ w v(q)²` with nearest codes under `(d, m)` (the codes of
/// [`nearest_code`], computed with float operations only), in [`LANES`] partial sums.
fn error_and_curvature(grid: Grid, bits: u32, x: &[f32], w: Option<&[f32]>, d: f32, m: f32) -> (f32, f32) {
    let (lo, hi) = code_range(grid, bits);
    let (lo, hi) = (f32::from(lo), f32::from(hi));
    let term = |q: f32, v: f32| {
        let r = v - (d * q + m);
        [r * r, q * q]
    };
    let [e, c] = if grid == Grid::ZeroPoint {
        // `m` is the zero point z; g = q - z = clamp(round(x / d), -z, hi - z).
        let z = f32::from(rint_clamped(m, 0, (1i16 << bits) - 1));
        weighted_sums(x, w, |v| {
            let g = if d == 0.0 { 0.0 } else { rint_f(v / d, lo - z, hi - z) };
            let r = v - d * g;
            [r * r, g * g]
        })
    } else if d == 0.0 {
        let q = if grid == Grid::Levels { grid_value(grid, bits, zero_code(bits)) } else { 0.0 };
        weighted_sums(x, w, |v| term(q, v))
    } else if grid == Grid::Levels && bits == 4 {
        weighted_sums(x, w, |v| term(level_value(v / d), v))
    } else if grid == Grid::Levels {
        weighted_sums(x, w, |v| term(grid_value(grid, bits, level_code(bits, v / d)), v))
    } else {
        weighted_sums(x, w, |v| term(rint_f((v - m) / d, lo, hi), v))
    };
    (e, c)
}

#[inline]
fn weight(w: Option<&[f32]>, i: usize) -> f32 {
    w.map_or(1.0, |w| w[i])
}

/// The value of largest magnitude (the first one on a tie), 0 for an empty slice.
fn extreme(x: &[f32]) -> f32 {
    let mut a = 0.0f32;
    for &v in x {
        if v.abs() > a.abs() {
            a = v;
        }
    }
    a
}

/// The smallest and largest value (0, 0 for an empty slice).
pub(crate) fn value_range(x: &[f32]) -> (f32, f32) {
    if x.is_empty() {
        return (0.0, 0.0);
    }
    x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)))
}

/// The min-max fit of [`Fit::MinMax`].
fn min_max(grid: Grid, bits: u32, x: &[f32]) -> (f32, f32) {
    let (lo, hi) = code_range(grid, bits);
    match grid {
        Grid::Symmetric => (extreme(x).abs() / f32::from(hi), 0.0),
        Grid::Levels => (extreme(x) / f32::from(LEVELS[0]), 0.0),
        Grid::Offset => {
            if x.is_empty() {
                return (0.0, 0.0);
            }
            let (mn, mx) = value_range(x);
            ((mx - mn) / f32::from(hi - lo), mn)
        }
        Grid::ZeroPoint => {
            // ONNX's asymmetric range: widened to hold 0, z = round(-min / d).
            let (mn, mx) = value_range(x);
            let (mn, mx) = (mn.min(0.0), mx.max(0.0));
            let d = (mx - mn) / f32::from(hi - lo);
            let z = if d == 0.0 { 0 } else { rint_clamped(-mn / d, lo, hi) };
            (d, f32::from(z))
        }
    }
}

/// Fits one sub-block of `x` (with optional per-element weights `w`, all `>= 0`) to `grid` at
/// `bits`.
///
/// * [`Fit::MinMax`]: the extremes, as [`Fit`] says.
/// * [`Fit::Search`], symmetric and levels grids: with `a` the value of largest magnitude and
///   `lo` the lowest grid value (`-2^(b-1)`, or `-127` for levels), the candidates are
///   `d = a / (lo + k·s)` with `s = 0.1` (levels: `s = 1`): the extreme value lands on or near
///   the *lowest* code, so the extra negative code serves the largest magnitude whatever its
///   sign (the sign trick of llama.cpp's `Q4_0`). Steps `k = -6, 0, 6` are tried first, then
///   `k* ± 3` around the best `k*` so far, then `k* ± 1` around the best so far (within
///   `-9..=9`: 7 candidates that can reach every step). Each candidate's codes
///   (of `x · (1/d)`) give the least-squares scale `d' = Σ w v x / Σ w v²`; both `d` and `d'`
///   are scored.
/// * [`Fit::Search`], offset grid (as llama.cpp's `make_qkx2_quants`, without its clamp of the
///   minimum to `<= 0`): candidates `1/d = (2^b - 2 + 0.1 k) / (max - min)`, `k = 0, 6, 12, 18`,
///   then `k* ± 3`, then `k* ± 1` (within `0..=20`); codes `round((x - min) / d)`, then the weighted
///   least-squares `(d', m')` for those codes (kept when `d' > 0`).
///
/// An HQQ-style alternation after the search (the codes of the best scale, then their
/// least-squares scale, repeated while the error drops) was tried and changed MiniLM-L6's SNR by
/// less than 0.01 dB: the refit of every candidate already lands on that fixed point, so it is
/// not done.
///
/// * [`Fit::Search`], zero-point grid: the offset grid's search, its offset turned into the
///   zero point `z = clamp(round(-m / d))`, then the least-squares scale for the codes under
///   `z` if it does better.
///
/// Candidates are scored by `Σ w (x - x̂)²` computed from sums (kept per lane of 8 values and
/// added in lane order, so the result is the same on every machine); the first best wins. The
/// winner is then scored exactly with nearest codes ([`SubFit::error`]) and kept only if no worse
/// than the min-max fit, so the search never loses to [`Fit::MinMax`]. All-zero weights count as
/// all ones.
#[must_use]
pub fn fit_sub_block(grid: Grid, bits: u32, fit: Fit, x: &[f32], w: Option<&[f32]>) -> SubFit {
    let w = w.filter(|w| w.iter().any(|&v| v > 0.0));
    let (d0, m0) = min_max(grid, bits, x);
    let (e0, c0) = error_and_curvature(grid, bits, x, w, d0, m0);
    let base = SubFit { d: d0, m: m0, error: e0, curvature: c0 };
    if fit == Fit::MinMax || x.is_empty() {
        return base;
    }
    let (d, m) = match grid {
        Grid::Symmetric | Grid::Levels => search_scale(grid, bits, x, w),
        Grid::Offset => search_offset(bits, x, w),
        Grid::ZeroPoint => search_zero_point(bits, x, w),
    };
    let (e, c) = error_and_curvature(grid, bits, x, w, d, m);
    if e <= e0 {
        SubFit { d, m, error: e, curvature: c }
    } else {
        base
    }
}

/// The coarse candidate steps of the scale search.
const COARSE: [i8; 3] = [-6, 0, 6];

/// The scale search of the symmetric and levels grids (see [`fit_sub_block`]).
fn search_scale(grid: Grid, bits: u32, x: &[f32], w: Option<&[f32]>) -> (f32, f32) {
    let a = extreme(x);
    if a == 0.0 {
        return (0.0, 0.0);
    }
    let (lo_v, step) = match grid {
        // Steps of 1 on the 4-bit table's scale, 1/2 and 1/4 on the denser tables.
        Grid::Levels => (
            f32::from(LEVELS[0]),
            if bits == 4 {
                1.0f32
            } else if bits == 5 {
                0.5
            } else {
                0.25
            },
        ),
        _ => (f32::from(code_range(grid, bits).0), 0.1f32),
    };
    let [sx2] = weighted_sums(x, w, |v| [v * v]);
    // (score, scale) of the best candidate or refit, and the candidate step `k` it came from.
    let mut best = (f32::INFINITY, 0.0f32, 0i8);
    let try_k = |k: i8, best: &mut (f32, f32, i8)| {
        let den = lo_v + f32::from(k) * step;
        let d = a / den;
        // Codes of x / d, as x · (den / a).
        let (sqx, sq2) = candidate_sums(grid, bits, x, w, den / a);
        // Σw(x - d v)² = Σwx² - 2 d Σwvx + d² Σwv², for the candidate and for the refit.
        let score = |d: f32| sx2 - 2.0 * d * sqx + d * d * sq2;
        for cand in [d, if sq2 > 0.0 { sqx / sq2 } else { d }] {
            let e = score(cand);
            if e < best.0 {
                *best = (e, cand, k);
            }
        }
    };
    // Steps of 6, then ±3 around the best, then ±1 around the best.
    for k in COARSE {
        try_k(k, &mut best);
    }
    for delta in [3i8, 1] {
        let centre = best.2;
        for k in [centre - delta, centre + delta] {
            if (-9..=9).contains(&k) {
                try_k(k, &mut best);
            }
        }
    }
    (best.1, 0.0)
}

/// The scale `D` of non-negative values `v` (weights `c`) stored as `D · l` with `l` in
/// `0 ..= 2^s - 1`: min-max `D = max v / (2^s - 1)`, or (search) the best of
/// `D = max v / (2^s - 1 + δ)`, `δ = -0.9, -0.8, .., 0.9`, and each one's least-squares refit
/// `Σ c l v / Σ c l²`, scored by `Σ c (v - D l)²`.
pub(crate) fn fit_unsigned_scale(s: u32, fit: Fit, v: &[f32], c: &[f32]) -> f32 {
    let top = v.iter().fold(0.0f32, |a, &x| a.max(x));
    let hi = (1i16 << s) - 1;
    let d0 = top / f32::from(hi);
    if fit == Fit::MinMax || top == 0.0 {
        return d0;
    }
    let c = if c.iter().any(|&x| x > 0.0) { Some(c) } else { None };
    let score = |d: f32| {
        let mut e = 0.0f32;
        for (i, &x) in v.iter().enumerate() {
            let l = if d == 0.0 { 0.0 } else { f32::from(rint_clamped(x / d, 0, hi)) };
            let r = x - d * l;
            e += weight(c, i) * r * r;
        }
        e
    };
    let mut best = (score(d0), d0);
    for k in -9i8..=9 {
        let d = top / (f32::from(hi) + 0.1 * f32::from(k));
        let (mut slx, mut sl2) = (0.0f32, 0.0f32);
        for (i, &x) in v.iter().enumerate() {
            let l = f32::from(rint_clamped(x / d, 0, hi));
            slx += weight(c, i) * l * x;
            sl2 += weight(c, i) * l * l;
        }
        for cand in [d, if sl2 > 0.0 { slx / sl2 } else { d }] {
            let e = score(cand);
            if e < best.0 {
                best = (e, cand);
            }
        }
    }
    best.1
}

/// The zero-point grid's search: the offset grid's `(d, m)`, then `z = clamp(round(-m / d))`
/// and the least-squares scale for the codes under `z`; the better of the two scales.
fn search_zero_point(bits: u32, x: &[f32], w: Option<&[f32]>) -> (f32, f32) {
    let (_, hi) = code_range(Grid::ZeroPoint, bits);
    let (d, m) = search_offset(bits, x, w);
    if d <= 0.0 {
        return min_max(Grid::ZeroPoint, bits, x);
    }
    let z = f32::from(rint_clamped(-m / d, 0, hi));
    let [sgx, sg2] = weighted_sums(x, w, |v| {
        let g = rint_f(v / d, -z, f32::from(hi) - z);
        [g * v, g * g]
    });
    let refit = if sg2 > 0.0 { sgx / sg2 } else { d };
    let e = |d: f32| error_of(Grid::ZeroPoint, bits, x, w, d, z);
    if refit > 0.0 && e(refit) < e(d) {
        (refit, z)
    } else {
        (d, z)
    }
}

/// The scale-and-offset search of the offset grid (see [`fit_sub_block`]).
fn search_offset(bits: u32, x: &[f32], w: Option<&[f32]>) -> (f32, f32) {
    let (_, hi) = code_range(Grid::Offset, bits);
    let (mn, mx) = value_range(x);
    if mx <= mn {
        // Constant: the offset alone is exact.
        return (0.0, mn);
    }
    let [sw, sx, sx2] = weighted_sums(x, w, |v| [1.0, v, v * v]);
    let top = f32::from(hi);
    // (score, scale, offset) of the best refit, and the candidate step `k` it came from.
    let mut best = (f32::INFINITY, 0.0f32, 0.0f32, 0u8);
    let try_k = |k: u8, best: &mut (f32, f32, f32, u8)| {
        let iscale = (top - 1.0 + 0.1 * f32::from(k)) / (mx - mn);
        let [sq, sq2, sqx] = weighted_sums(x, w, |v| {
            let q = rint_f(iscale * (v - mn), 0.0, top);
            [q, q * q, q * v]
        });
        let det = sw * sq2 - sq * sq;
        if det <= 0.0 {
            return;
        }
        let d = (sw * sqx - sq * sx) / det;
        let m = (sq2 * sx - sq * sqx) / det;
        if d <= 0.0 || !d.is_finite() || !m.is_finite() {
            return;
        }
        // Σw(x - dq - m)² expanded.
        let e = sx2 + d * d * sq2 + m * m * sw - 2.0 * d * sqx - 2.0 * m * sx + 2.0 * d * m * sq;
        if e < best.0 {
            *best = (e, d, m, k);
        }
    };
    // Steps of 6, then ±3 around the best, then ±1 around the best (k = 20 from 18 + 2 is
    // not reached; k = 19 is).
    for k in (0..=18).step_by(6) {
        try_k(k, &mut best);
    }
    for delta in [3u8, 1] {
        let centre = best.3;
        for k in [centre.wrapping_sub(delta), centre + delta] {
            if k <= 20 {
                try_k(k, &mut best);
            }
        }
    }
    if best.0.is_finite() {
        (best.1, best.2)
    } else {
        min_max(Grid::Offset, bits, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_ties_to_even_and_clamped() {
        assert_eq!(rint_clamped(2.5, -8, 7), 2);
        assert_eq!(rint_clamped(3.5, -8, 7), 4);
        assert_eq!(rint_clamped(-2.5, -8, 7), -2);
        assert_eq!(rint_clamped(100.0, -8, 7), 7);
        assert_eq!(rint_clamped(f32::NEG_INFINITY, -8, 7), -8);
        assert_eq!(rint_clamped(f32::NAN, 0, 15), 0);
        assert_eq!(rint_clamped(254.5, 0, 255), 254);
    }

    #[test]
    fn the_vectorizable_forms_equal_the_plain_ones() {
        let mut v = -140.0f32;
        while v < 140.0 {
            assert_eq!(level_value(v), grid_value(Grid::Levels, 4, nearest_code(Grid::Levels, 4, v, 1.0, 0.0)), "{v}");
            assert_eq!(rint_f(v, -8.0, 7.0), f32::from(rint_clamped(v, -8, 7)), "{v}");
            v += 0.25;
        }
        for mid in MIDS {
            assert_eq!(level_value(mid), grid_value(Grid::Levels, 4, nearest_code(Grid::Levels, 4, mid, 1.0, 0.0)));
        }
    }

    /// The 5- and 6-bit tables follow the rule their docs give.
    #[test]
    fn the_denser_tables_follow_their_rule() {
        let f = |t: f64| {
            let i = (t.floor() as i64).clamp(0, 14) as usize;
            f64::from(LEVELS[i]) + (t - i as f64) * f64::from(LEVELS[i + 1] - LEVELS[i])
        };
        for (bits, table) in [(5u32, &LEVELS5[..]), (6, &LEVELS6[..])] {
            let s = 2f64.powi(4 - bits as i32);
            let raw: Vec<f64> = (0..table.len()).map(|j| f((j as f64 + 0.5) * s - 0.5)).collect();
            let top = raw.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            let want: Vec<i16> = raw.iter().map(|v| (127.0 * v / top).round_ties_even() as i16).collect();
            assert_eq!(table, want, "{bits}");
            assert!(table.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn the_lookup_gives_the_nearest_level_of_the_denser_tables() {
        for bits in [5u32, 6] {
            let table = levels(bits);
            let mut t = -140.0f32;
            while t < 140.0 {
                // Nearest by search; the lower one on a tie (t > midpoint moves up).
                let mut q = 0usize;
                while q + 1 < table.len() && t > f32::from(table[q] + table[q + 1]) * 0.5 {
                    q += 1;
                }
                assert_eq!(level_code(bits, t), q as i16, "{bits} bits at {t}");
                t += 0.125;
            }
        }
        assert_eq!(zero_code(5), 16); // -2
        assert_eq!(zero_code(6), 33); // 0
        assert_eq!(zero_code(4), 8); // 1
    }

    #[test]
    fn levels_take_the_nearest_and_the_lower_on_a_tie() {
        // Between -127 and -104 the midpoint is -115.5.
        assert_eq!(nearest_code(Grid::Levels, 4, -115.5, 1.0, 0.0), 0);
        assert_eq!(nearest_code(Grid::Levels, 4, -115.4, 1.0, 0.0), 1);
        assert_eq!(nearest_code(Grid::Levels, 4, 0.0, 1.0, 0.0), 8);
        assert_eq!(nearest_code(Grid::Levels, 4, 1000.0, 1.0, 0.0), 15);
        assert_eq!(nearest_code(Grid::Levels, 4, -1000.0, 1.0, 0.0), 0);
        // A negative scale mirrors the grid.
        assert_eq!(nearest_code(Grid::Levels, 4, 127.0, -1.0, 0.0), 0);
    }

    #[test]
    fn min_max_fits_are_the_documented_formulas() {
        let x = [0.5f32, -2.0, 1.0, 3.0];
        let s = fit_sub_block(Grid::Symmetric, 4, Fit::MinMax, &x, None);
        assert_eq!((s.d, s.m), (3.0 / 7.0, 0.0));
        let o = fit_sub_block(Grid::Offset, 4, Fit::MinMax, &x, None);
        assert_eq!((o.d, o.m), (5.0 / 15.0, -2.0));
        let l = fit_sub_block(Grid::Levels, 4, Fit::MinMax, &x, None);
        assert_eq!((l.d, l.m), (3.0 / -127.0, 0.0));
    }

    #[test]
    fn the_sign_trick_gives_the_largest_magnitude_the_extra_code() {
        // Codes -8..=7: with d = 1 (a / -8 for a = -8) every value is exact; min-max
        // (d = 8/7) is not.
        let x = [-8.0f32, -4.0, 0.0, 3.0, 7.0, 5.0, -1.0, 2.0];
        let s = fit_sub_block(Grid::Symmetric, 4, Fit::Search, &x, None);
        assert_eq!((s.d, s.error), (1.0, 0.0));
        let mm = fit_sub_block(Grid::Symmetric, 4, Fit::MinMax, &x, None);
        assert!(mm.error > 0.5, "{mm:?}");
        // The same values negated: d = -1 maps 8 to code -8.
        let neg: Vec<f32> = x.iter().map(|v| -v).collect();
        let s = fit_sub_block(Grid::Symmetric, 4, Fit::Search, &neg, None);
        assert_eq!((s.d, s.error), (-1.0, 0.0));
    }

    #[test]
    fn the_offset_search_finds_an_exact_affine_grid() {
        // x = 0.25 q - 1 for codes 0..=14 (15 unused): min-max stretches 14 steps over 15
        // codes, the candidate 1/d = 14 / (max - min) and its refit land on the grid.
        let codes = [0i16, 3, 7, 14, 9, 2, 11, 13];
        let x: Vec<f32> = codes.iter().map(|&q| 0.25 * f32::from(q) - 1.0).collect();
        let o = fit_sub_block(Grid::Offset, 4, Fit::Search, &x, None);
        assert_eq!((o.d, o.m, o.error), (0.25, -1.0, 0.0));
        assert!(fit_sub_block(Grid::Offset, 4, Fit::MinMax, &x, None).error > 0.01);
    }

    #[test]
    fn constant_and_zero_blocks() {
        for grid in [Grid::Symmetric, Grid::Offset, Grid::Levels] {
            for fit in [Fit::MinMax, Fit::Search] {
                let z = fit_sub_block(grid, 4, fit, &[0.0; 16], None);
                assert_eq!(z.error, 0.0, "{grid:?} {fit:?}");
                let c = fit_sub_block(grid, 4, fit, &[0.75; 16], None);
                assert!(c.error <= 16.0 * 0.75 * 0.75 / 1e4, "{grid:?} {fit:?} {c:?}");
            }
        }
        let c = fit_sub_block(Grid::Offset, 4, Fit::Search, &[0.75; 16], None);
        assert_eq!((c.d, c.m, c.error), (0.0, 0.75, 0.0));
    }

    #[test]
    fn weights_steer_the_fit() {
        // Two clusters a single 2-bit symmetric scale cannot both hit; weighting one makes it
        // exact.
        let x = [1.0f32, 1.0, 1.0, 0.3, 0.3, 0.3];
        let heavy_small = [0.0f32, 0.0, 0.0, 1.0, 1.0, 1.0];
        let f = fit_sub_block(Grid::Symmetric, 2, Fit::Search, &x, Some(&heavy_small));
        assert!(f.error < 1e-12, "{f:?}");
        let plain = fit_sub_block(Grid::Symmetric, 2, Fit::Search, &x, None);
        assert!(error_of(Grid::Symmetric, 2, &x, Some(&heavy_small), plain.d, plain.m) > 1e-3);
    }
}
