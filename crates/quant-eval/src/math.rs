//! The encoder's elementwise functions in `f32`, branch-free so that the compiler vectorizes
//! their loops: `exp` (Cody–Waite reduction by `ln 2`, a degree-7 polynomial, the power of
//! two built in the exponent bits; within 2 ulp on `[-87, 88]`) and `erf` (Abramowitz and
//! Stegun 7.1.26, `1 − (a₁t + … + a₅t⁵)·e^{−x²}` with `t = 1/(1 + p·|x|)`, the sign restored,
//! and its Taylor series near 0; absolute error below `4·10⁻⁷`), and from them the exact-form
//! GELU. The tests hold them to
//! `f64` references.

/// `1.5 · 2^23`: adding and subtracting it rounds an `f32` of magnitude below `2^22` to an
/// integer (ties to even).
const ROUND: f32 = 12_582_912.0;

/// `e^x` (see the [module docs](self)); inputs below `-87` give `e^-87`, above `88` give
/// `e^88`.
#[inline(always)]
#[must_use]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // x = n·ln2 + r, |r| <= ln2/2, ln2 split in a high part exact in f32 and a low one.
    let t = x * core::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    // ln 2 = 0.693359375 (9 significant bits: n times it is exact) - 2.12194440e-4.
    let r = (x - n * 0.693_359_4) + n * 2.121_944_4e-4;
    // e^r by its Taylor polynomial to r^7 (truncation below 6·10^-9 relative for |r| <= 0.35).
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2^n in the exponent bits: `t`'s low mantissa bits hold n (two's complement above
    // `ROUND`'s bits), n in -126..=127 after the clamp; integer operations only, which
    // vectorize (a float-to-int cast would not).
    let bits = t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23;
    p * f32::from_bits(bits)
}

/// `erf(x)` (see the [module docs](self)); below `|x| = 0.5` its Taylor series to `x¹¹`
/// instead (no cancellation near 0; the next term is below `2·10⁻⁸`).
#[inline(always)]
#[must_use]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let far = (1.0 - poly * exp(-a * a)).copysign(x);
    let x2 = x * x;
    let series = core::f32::consts::FRAC_2_SQRT_PI
        * x
        * (1.0
            + x2 * (-1.0 / 3.0 + x2 * (1.0 / 10.0 + x2 * (-1.0 / 42.0 + x2 * (1.0 / 216.0 + x2 * (-1.0 / 1320.0))))));
    if a < 0.5 {
        series
    } else {
        far
    }
}

/// GELU in its exact form, `x/2 · (1 + erf(x/√2))`.
#[inline(always)]
#[must_use]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * core::f32::consts::FRAC_1_SQRT_2))
}

crate::simd::multiversion! {
    /// [`gelu`] of every value in place.
    pub fn gelu_in_place(v: &mut [f32]) {
        v.iter_mut().for_each(|x| *x = gelu(*x));
    }
}

/// The dot product of `a` and `b` in `L` interleaved partial sums (product `i` to sum
/// `i mod L`), added in order at the end: a fixed order on every CPU, which the compiler keeps
/// in vector lanes.
#[inline(always)]
pub(crate) fn dot<const L: usize>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..L {
            acc[i] += x[i] * y[i];
        }
    }
    for (i, (x, y)) in ra.iter().zip(rb).enumerate() {
        acc[i] += x * y;
    }
    acc.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `step`-th `f32` in `[lo, hi]`.
    fn sweep(lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
        (0..=n).map(move |i| lo + (hi - lo) * (i as f32 / n as f32))
    }

    #[test]
    fn exp_is_within_two_ulp() {
        for x in sweep(-87.0, 88.0, 200_000).chain([0.0, -0.0, 1.0, -1.0, 1e-30]) {
            let want = f64::from(x).exp();
            let got = f64::from(exp(x));
            let ulp = f64::from(f32::EPSILON) * want;
            assert!((got - want).abs() <= 2.0 * ulp, "exp({x}) = {got}, want {want}");
        }
        assert_eq!(exp(-1000.0), exp(-87.0));
        assert!(exp(0.0) == 1.0);
    }

    #[test]
    fn erf_is_within_4e7() {
        for x in sweep(-6.0, 6.0, 200_000).chain([0.0, 1e-20, -1e-20, 30.0, -30.0]) {
            let want = libm::erf(f64::from(x));
            let got = f64::from(erf(x));
            assert!((got - want).abs() <= 4e-7, "erf({x}) = {got}, want {want}");
            assert!((got - want).abs() <= 2e-6 * want.abs(), "erf({x}) = {got}, want {want} (relative)");
        }
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    #[test]
    fn gelu_matches_the_exact_form() {
        let mut v: Vec<f32> = sweep(-10.0, 10.0, 10_001).collect();
        let want: Vec<f64> =
            v.iter().map(|&x| 0.5 * f64::from(x) * (1.0 + libm::erf(f64::from(x) / 2f64.sqrt()))).collect();
        gelu_in_place(&mut v);
        for (g, w) in v.iter().zip(&want) {
            assert!((f64::from(*g) - w).abs() <= 3e-6 * (1.0 + w.abs()), "{g} against {w}");
        }
    }
}
