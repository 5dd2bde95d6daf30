//! Eight of ggml's `make_qkx2_quants` searches at once, one per lane: the fast path of the
//! k-quant front ends (`Q2_K`, `Q4_K`, `Q5_K`), byte for byte the scalar
//! [`make_qkx2_quants`](super::kquants::make_qkx2_quants) of each lane.
//!
//! The searches of a super-block's sub-blocks are independent, so lane `k` runs the whole
//! search of sub-block `k` (the input is transposed: `x[i][k]` is value `i` of sub-block `k`).
//! Each lane does the scalar search's operations in its order, on `f32`, without fused
//! multiply-adds: every sum runs over `i` in order, every candidate scale is tried in order, and
//! "take the candidate if its error is smaller" becomes a per-lane select. The only change of
//! method is that the winning codes are not copied at each win: the lane keeps the winner's
//! inverse scale and the minimum its codes were made with, and makes the codes again at the end
//! with the same two operations (`nearest_int(iscale · (x - min))`, clamped), so they are the
//! same codes. The scalar search returns early for a constant sub-block (`max == min`: codes 0,
//! scale 0, the minimum); its lane needs no case of its own, as it comes to that answer by
//! itself: the first guess divides by `max - min = 0`, so its inverse scale is infinite, its
//! scale `1 / ∞ = 0` and its codes `nearest_int(∞ · 0 = NaN) = 0` (ggml's bit trick reads a NaN
//! as 0); every candidate then has codes 0, `d = 0` (or NaN), and never wins. The tests hold
//! constant and all-zero lanes to the scalar search.
//!
//! The loops are plain Rust over `[f32; 8]` (the portable build); the x86-64 tiers run the
//! same operations in AVX2 intrinsics (`arch/x86_64/avx2.rs`), chosen at run time by the tier
//! in use as the other kernels of the crate (`QUANT_KERNEL=portable` takes the portable build). Rust never
//! contracts `a * b + c` into a fused multiply-add, so both builds round as the scalar code.

// The loops mirror the scalar search index by index.
#![allow(clippy::needless_range_loop)]

use super::round::{float_of, nearest_int};

use crate::arch::lanes::V;
pub(super) use crate::arch::lanes::{Search, LANES};

/// Runs the search of each lane: codes into `l[i][k]`, and `(scale, -min)` per lane, as
/// `make_qkx2_quants(s.nmax, x[..][k], w[..][k], ..)` returns them.
pub(super) fn make_qkx2_quants_x8<const N: usize>(
    s: Search,
    x: &[V; N],
    w: &[V; N],
    l: &mut [[u8; LANES]; N],
) -> (V, V) {
    crate::arch::qkx2_search(s, x, w, l).unwrap_or_else(|| search(s, x, w, l))
}

/// ggml's `nearest_int` (see [`super::round::nearest_int`]) clamped to `0..=nmax`, as `f32`.
#[inline(always)]
fn code(v: f32, nmax: i32) -> f32 {
    float_of(nearest_int(v).clamp(0, nmax))
}

/// The search itself, in every lane.
#[inline(always)]
#[expect(clippy::as_conversions, reason = "codes already clamped to 0..=63 stored as bytes, as ggml does")]
pub(super) fn search<const N: usize>(s: Search, x: &[V; N], w: &[V; N], l: &mut [[u8; LANES]; N]) -> (V, V) {
    let nmax = s.nmax;
    let err = |diff: f32| if s.use_mad { diff.abs() } else { diff * diff };
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = w[0];
    let mut sum_x: V = core::array::from_fn(|k| w[0][k] * x[0][k]);
    for i in 1..N {
        for k in 0..LANES {
            min[k] = if x[i][k] < min[k] { x[i][k] } else { min[k] };
            max[k] = if x[i][k] > max[k] { x[i][k] } else { max[k] };
            sum_w[k] += w[i][k];
            sum_x[k] += w[i][k] * x[i][k];
        }
    }
    for k in 0..LANES {
        min[k] = if min[k] > 0.0 { 0.0 } else { min[k] };
    }
    // The first guess: the min-max scale.
    let mut iscale: V = core::array::from_fn(|k| float_of(nmax) / (max[k] - min[k]));
    let mut scale: V = core::array::from_fn(|k| 1.0 / iscale[k]);
    let mut best = [0.0f32; LANES];
    for i in 0..N {
        for k in 0..LANES {
            let q = code(iscale[k] * (x[i][k] - min[k]), nmax);
            best[k] += w[i][k] * err(scale[k] * q + min[k] - x[i][k]);
        }
    }
    // The winner's codes are remade from these two at the end.
    let (mut win_iscale, mut win_min) = (iscale, min);
    let mut laux = [[0.0f32; LANES]; N];
    for is in s.candidates() {
        for k in 0..LANES {
            iscale[k] = (s.rmin + s.rdelta * float_of(is) + float_of(nmax)) / (max[k] - min[k]);
        }
        let (mut sum_l, mut sum_l2, mut sum_xl) = ([0.0f32; LANES], [0.0f32; LANES], [0.0f32; LANES]);
        for i in 0..N {
            for k in 0..LANES {
                let q = code(iscale[k] * (x[i][k] - min[k]), nmax);
                laux[i][k] = q;
                let wq = w[i][k] * q;
                sum_l[k] += wq;
                sum_l2[k] += wq * q;
                sum_xl[k] += wq * x[i][k];
            }
        }
        let mut this_scale = [0.0f32; LANES];
        let mut this_min = [0.0f32; LANES];
        let mut ok = [false; LANES];
        for k in 0..LANES {
            let d = sum_w[k] * sum_l2[k] - sum_l[k] * sum_l[k];
            ok[k] = d > 0.0;
            let ts = (sum_w[k] * sum_xl[k] - sum_x[k] * sum_l[k]) / d;
            let tm = (sum_l2[k] * sum_x[k] - sum_l[k] * sum_xl[k]) / d;
            let clamp = tm > 0.0;
            this_min[k] = if clamp { 0.0 } else { tm };
            this_scale[k] = if clamp { sum_xl[k] / sum_l2[k] } else { ts };
        }
        let mut cur = [0.0f32; LANES];
        for i in 0..N {
            for k in 0..LANES {
                cur[k] += w[i][k] * err(this_scale[k] * laux[i][k] + this_min[k] - x[i][k]);
            }
        }
        for k in 0..LANES {
            let win = ok[k] && cur[k] < best[k];
            best[k] = if win { cur[k] } else { best[k] };
            scale[k] = if win { this_scale[k] } else { scale[k] };
            win_iscale[k] = if win { iscale[k] } else { win_iscale[k] };
            win_min[k] = if win { min[k] } else { win_min[k] };
            min[k] = if win { this_min[k] } else { min[k] };
        }
    }
    for i in 0..N {
        for k in 0..LANES {
            let q = code(win_iscale[k] * (x[i][k] - win_min[k]), nmax);
            l[i][k] = q as u8;
        }
    }
    (scale, min.map(|m| -m))
}

#[cfg(test)]
mod tests {
    use quant_testkit::Rng;

    use super::super::kquants::make_qkx2_quants;
    use super::*;

    /// The search parameters of every caller: Q4_K, Q5_K and the weighted k-quants (N = 32),
    /// Q2_K plain and weighted (N = 16), plus a search with no candidates (ggml's nstep < 1).
    const SEARCHES: [Search; 6] = [
        Search { nmax: 15, rmin: -1.0, rdelta: 0.1, nstep: 20, use_mad: false },
        Search { nmax: 31, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: false },
        Search { nmax: 15, rmin: -0.9, rdelta: 0.05, nstep: 36, use_mad: false },
        Search { nmax: 3, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: true },
        Search { nmax: 3, rmin: -0.9, rdelta: 0.05, nstep: 36, use_mad: false },
        Search { nmax: 15, rmin: -1.0, rdelta: 0.1, nstep: 0, use_mad: false },
    ];

    /// One lane's values, of a kind picked by `kind`: Gaussian, heavy-tailed with an outlier,
    /// constant, all zero, all positive, all negative, tiny (near f16's subnormals), so wide that
    /// `max - min` overflows to infinity, or a ramp.
    fn lane<const N: usize>(rng: &mut Rng, kind: usize) -> [f32; N] {
        let scale = 10f64.powi(rng.int(-6, 3) as i32);
        let mut v: [f32; N] = core::array::from_fn(|_| (rng.normal() * scale) as f32);
        match kind % 9 {
            1 => v[rng.index(N)] *= 1000.0,
            2 => v = [v[0]; N],
            3 => v = [0.0; N],
            4 => v = v.map(f32::abs),
            5 => v = v.map(|x| -x.abs()),
            6 => v = v.map(|x| x * 1e-7),
            7 => {
                v[0] = 3.0e38;
                v[N - 1] = -3.0e38;
            }
            8 => v = core::array::from_fn(|i| i as f32 * 0.01 - 0.1),
            _ => {}
        }
        v
    }

    fn check<const N: usize>(seed: u64) {
        let mut rng = Rng::new(seed);
        for round in 0..300 {
            let s = SEARCHES[round % SEARCHES.len()];
            if (N == 16) != (s.nmax == 3) {
                continue;
            }
            let mut x = [[0.0f32; LANES]; N];
            let mut w = [[0.0f32; LANES]; N];
            let lanes: [[f32; N]; LANES] = core::array::from_fn(|_| {
                let kind = rng.index(9);
                lane(&mut rng, kind)
            });
            for k in 0..LANES {
                // The callers' weights: |x| for Q2_K, else sqrt(mean x²) + |x|, or importance
                // weights with zeros and outliers.
                let weights: [f32; N] = match rng.index(3) {
                    0 => lanes[k].map(f32::abs),
                    1 => {
                        let av = (lanes[k].iter().map(|v| v * v).sum::<f32>() / N as f32).sqrt();
                        lanes[k].map(|v| av + v.abs())
                    }
                    _ => core::array::from_fn(|_| match rng.index(8) {
                        0 => 0.0,
                        1 => 1000.0,
                        _ => rng.unit() as f32,
                    }),
                };
                for i in 0..N {
                    x[i][k] = lanes[k][i];
                    w[i][k] = weights[i];
                }
            }
            let mut l_fast = [[0u8; LANES]; N];
            let mut l_plain = [[0u8; LANES]; N];
            let fast = make_qkx2_quants_x8(s, &x, &w, &mut l_fast);
            let plain = search(s, &x, &w, &mut l_plain);
            for k in 0..LANES {
                let xk: [f32; N] = core::array::from_fn(|i| x[i][k]);
                let wk: [f32; N] = core::array::from_fn(|i| w[i][k]);
                let mut lk = [0u8; N];
                let (scale, neg_min) =
                    make_qkx2_quants(s.nmax, &xk, &wk, &mut lk, s.rmin, s.rdelta, s.nstep, s.use_mad);
                for (name, got, codes) in [("dispatched", fast, &l_fast), ("portable", plain, &l_plain)] {
                    let what = format!("{name}, round {round}, lane {k}, {s:?}, x {xk:?}");
                    assert_eq!(got.0[k].to_bits(), scale.to_bits(), "scale: {what}");
                    assert_eq!(got.1[k].to_bits(), neg_min.to_bits(), "min: {what}");
                    let got_codes: [u8; N] = core::array::from_fn(|i| codes[i][k]);
                    assert_eq!(got_codes, lk, "codes: {what}");
                }
            }
        }
    }

    /// Both builds of the lane search (the one this CPU dispatches to and the baseline one) give
    /// each lane the scalar search's scale, minimum and codes, bit for bit, for every caller's
    /// parameters, on lanes of every kind side by side.
    #[test]
    fn lanes_match_the_scalar_search_bit_for_bit() {
        check::<32>(11);
        check::<16>(12);
    }

    /// The lanes really run the whole candidate search: on Gaussian data the searched scale
    /// differs from the min-max first guess in most lanes (so the test above compares winners,
    /// not first guesses).
    #[test]
    fn the_search_moves_most_lanes_off_the_first_guess() {
        let mut rng = Rng::new(3);
        let x: [[f32; LANES]; 32] = core::array::from_fn(|_| core::array::from_fn(|_| rng.normal() as f32));
        let w = x.map(|r| r.map(f32::abs));
        let mut l = [[0u8; LANES]; 32];
        let (scale, neg_min) = make_qkx2_quants_x8(SEARCHES[0], &x, &w, &mut l);
        let moved = (0..LANES)
            .filter(|&k| {
                let (lo, hi) = x.iter().fold((0f32, f32::MIN), |(lo, hi), r| (lo.min(r[k]), hi.max(r[k])));
                scale[k] != (hi - lo) / 15.0 || neg_min[k] != -lo
            })
            .count();
        assert!(moved >= 6, "only {moved} of 8 lanes left the min-max guess");
    }
}
