//! Property tests on random shapes, widths 2..=32 and all four float types: the error bound,
//! per-channel = per-tensor on each channel, the storage types agreeing with each other, and
//! dequantize(quantize(x)) consistency. Deterministic: fixed seeds, same data every run.

use quant_core::{
    dequantize_symmetric, quantize, quantize_asymmetric, quantize_matrix, quantize_per_channel, quantize_symmetric,
    Axis, Granularity, MatrixShape, QuantError, QuantFloat, QuantSpec,
};
use quant_testkit::Rng;
use quant_traits::half::{bf16, f16};
use quant_traits::{I2x4, I4x2, U2x4, U4x2};
use rstest::rstest;

const CASES: usize = 2000;

/// `|x - (q - zp) * scale| <= scale / 2`, evaluated in f64. The slack covers the f64 rounding
/// of `x / scale` and of the check itself: relative 2^-40 of the magnitudes involved.
fn assert_within_half_step(x: f64, code: i64, scale: f64, zp: i64, what: &str) {
    let steps = (code - zp) as f64;
    // Near f64::MAX, halve everything so the check itself does not overflow; elsewhere (and
    // for subnormal scales, which halving would flush) compute it directly.
    let h = if x.abs() > 1e300 || scale > 1e300 { 0.5 } else { 1.0 };
    let err = (x * h - steps * (scale * h)).abs();
    let slack = (x.abs() + scale) * h * 2f64.powi(-40);
    assert!(
        err <= scale * h / 2.0 + slack,
        "{what}: x = {x:e}, code {code}, zp {zp}, scale {scale:e}: error {:e} > scale/2",
        err / h
    );
}

fn bound_holds_for<F: QuantFloat>(seed: u64) -> Result<(), QuantError> {
    let mut rng = Rng::new(seed);
    for _ in 0..CASES {
        let len = rng.dim(64);
        let x: Vec<F> = rng.tensor(len);
        let bits = rng.bits();
        let (q, scale) = quantize_symmetric(&x, bits)?;
        let s = scale.to_f64_exact();
        assert!(s.is_finite() && s > 0.0, "scale {s:e}");
        for (v, &c) in x.iter().zip(&q) {
            assert_within_half_step(v.to_f64_exact(), i64::from(c), s, 0, F::NAME);
        }
        let (q, scale, zp) = quantize_asymmetric(&x, bits)?;
        let s = scale.to_f64_exact();
        assert!(s.is_finite() && s > 0.0, "scale {s:e}");
        for (v, &c) in x.iter().zip(&q) {
            assert_within_half_step(v.to_f64_exact(), i64::from(c), s, i64::from(zp), F::NAME);
        }
        // Zero is exactly representable whenever the tensor holds a zero.
        if let Some(i) = x.iter().position(|v| v.to_f64_exact() == 0.0) {
            assert_eq!(q[i], zp);
        }
    }
    Ok(())
}

#[rstest]
#[case::f32(0.0f32, 1)]
#[case::f64(0.0f64, 2)]
#[case::f16(f16::ZERO, 3)]
#[case::bf16(bf16::ZERO, 4)]
fn every_element_within_half_a_step<F: QuantFloat>(#[case] _ty: F, #[case] seed: u64) -> Result<(), QuantError> {
    bound_holds_for::<F>(seed)
}

/// Dequantized values in F: within half a step plus F's own rounding of the result.
fn round_trip_for<F: QuantFloat>(seed: u64) -> Result<(), QuantError> {
    let mut rng = Rng::new(seed);
    for _ in 0..CASES {
        let x: Vec<F> = {
            let len = rng.dim(64);
            // Ordinary magnitudes: here the interest is F's rounding, not overflow.
            let m = 10f64.powf(rng.uniform(-3.0, 3.0));
            (0..len).map(|_| rng.element::<F>(m)).collect()
        };
        let bits = rng.bits();
        let (q, scale) = quantize_symmetric(&x, bits)?;
        let back = dequantize_symmetric(&q, scale);
        let s = scale.to_f64_exact();
        for (a, b) in x.iter().zip(&back) {
            let (a, b) = (a.to_f64_exact(), b.to_f64_exact());
            // Half an ulp of F at b: |b| * 2^-DIGITS, plus the subnormal floor.
            let half_ulp = b.abs() * 2f64.powi(-(F::DIGITS as i32)) + 1e-300;
            // f64 rounds x / scale too: up to |x| * 2^-53 more.
            let slack = a.abs() * 2f64.powi(-50);
            assert!((a - b).abs() <= s / 2.0 + slack + half_ulp, "{}: {a:e} -> {b:e}, scale {s:e}", F::NAME);
        }
    }
    Ok(())
}

#[rstest]
#[case::f32(0.0f32, 11)]
#[case::f64(0.0f64, 12)]
#[case::f16(f16::ZERO, 13)]
#[case::bf16(bf16::ZERO, 14)]
fn dequantize_round_trip<F: QuantFloat>(#[case] _ty: F, #[case] seed: u64) -> Result<(), QuantError> {
    round_trip_for::<F>(seed)
}

fn per_channel_matches_per_tensor_for<F: QuantFloat>(seed: u64) -> Result<(), QuantError> {
    let mut rng = Rng::new(seed);
    for _ in 0..CASES / 4 {
        let (rows, cols) = (rng.dim(12), rng.dim(12));
        let bits = rng.bits();
        // Channels at very different magnitudes, as in real weights.
        let matrix: Vec<Vec<F>> = (0..rows).map(|_| rng.tensor(cols)).collect();
        for axis in [0usize, 1] {
            let (q, scales) = quantize_per_channel(&matrix, axis, bits)?;
            let channels = if axis == 0 { rows } else { cols };
            assert_eq!(scales.len(), if rows == 0 { 0 } else { channels });
            for c in 0..scales.len() {
                let channel: Vec<F> = if axis == 0 { matrix[c].clone() } else { matrix.iter().map(|r| r[c]).collect() };
                let (want_q, want_scale) = quantize_symmetric(&channel, bits)?;
                assert_eq!(scales[c], want_scale, "{} axis {axis} channel {c}", F::NAME);
                let got_q: Vec<i32> = if axis == 0 { q[c].clone() } else { q.iter().map(|r| r[c]).collect() };
                assert_eq!(got_q, want_q, "{} axis {axis} channel {c}", F::NAME);
            }
        }
    }
    Ok(())
}

#[rstest]
#[case::f32(0.0f32, 21)]
#[case::f64(0.0f64, 22)]
#[case::f16(f16::ZERO, 23)]
#[case::bf16(bf16::ZERO, 24)]
fn per_channel_equals_per_tensor_on_each_channel<F: QuantFloat>(
    #[case] _ty: F,
    #[case] seed: u64,
) -> Result<(), QuantError> {
    per_channel_matches_per_tensor_for::<F>(seed)
}

/// Asymmetric per-channel through the engine: each channel's parameters and codes equal the
/// per-tensor result on that channel.
#[test]
fn asymmetric_per_channel_engine_matches_per_tensor() -> Result<(), QuantError> {
    let mut rng = Rng::new(31);
    for _ in 0..CASES / 4 {
        let shape = MatrixShape::new(rng.dim(10), rng.dim(10));
        let x: Vec<f32> = (0..shape.rows * shape.cols).map(|_| rng.element::<f32>(5.0) + 1.0).collect();
        let spec = QuantSpec::asymmetric(rng.bits())?;
        let m = quantize_matrix::<f32, u32>(&x, shape, spec, Granularity::PerChannel(Axis::Cols))?;
        for c in 0..shape.cols {
            let col: Vec<f32> = (0..shape.rows).map(|r| x[r * shape.cols + c]).collect();
            let (q, scale, zp) = quantize_asymmetric(&col, spec.bits())?;
            assert_eq!((m.params()[c].scale(), m.params()[c].zero_point()), (scale, i64::from(zp)));
            for (r, &code) in q.iter().enumerate() {
                assert_eq!(m.code(r, c), i64::from(code));
            }
        }
    }
    Ok(())
}

/// The same codes whatever the storage, packed or not, for widths every storage can hold.
#[test]
fn storage_types_agree() -> Result<(), QuantError> {
    let mut rng = Rng::new(41);
    for _ in 0..CASES {
        let len = rng.dim(33);
        let x: Vec<f32> = rng.tensor(len);
        let bits = rng.int(2, 4) as u32;
        let spec = QuantSpec::symmetric(bits)?;
        let wide = quantize::<f32, i32>(&x, spec)?;
        let want: Vec<i64> = wide.iter_codes().collect();
        let packed = quantize::<f32, I4x2>(&x, spec)?;
        assert_eq!(packed.iter_codes().collect::<Vec<_>>(), want);
        assert_eq!(packed.codes().len(), len.div_ceil(2));
        assert_eq!(quantize::<f32, i8>(&x, spec)?.iter_codes().collect::<Vec<_>>(), want);
        assert_eq!(packed.dequantize(), wide.dequantize());
        if bits == 2 {
            let quarter = quantize::<f32, I2x4>(&x, spec)?;
            assert_eq!(quarter.iter_codes().collect::<Vec<_>>(), want);
            assert_eq!(quarter.codes().len(), len.div_ceil(4));
            assert_eq!(quarter.dequantize(), wide.dequantize());
        }
        let spec = QuantSpec::asymmetric(bits)?;
        let wide = quantize::<f32, u32>(&x, spec)?;
        let want: Vec<i64> = wide.iter_codes().collect();
        assert_eq!(quantize::<f32, U4x2>(&x, spec)?.iter_codes().collect::<Vec<_>>(), want);
        if bits == 2 {
            assert_eq!(quantize::<f32, U2x4>(&x, spec)?.iter_codes().collect::<Vec<_>>(), want);
        }
        assert_eq!(quantize::<f32, u8>(&x, spec)?.iter_codes().collect::<Vec<_>>(), want);
        assert_eq!(quantize::<f32, i16>(&x, spec)?.iter_codes().collect::<Vec<_>>(), want);
    }
    Ok(())
}

/// Codes stay inside their range, and with f64 (no rounding of the scale) the element of
/// largest magnitude lands exactly on the top code (symmetric) or the range ends land on 0 and
/// 2^b - 1 (asymmetric, data straddling 0).
#[test]
fn codes_stay_in_range_and_reach_the_ends() -> Result<(), QuantError> {
    let mut rng = Rng::new(51);
    for _ in 0..CASES {
        let x: Vec<f64> = (0..2 + rng.index(40)).map(|_| rng.uniform(-3.0, 5.0)).collect();
        let bits = rng.bits();
        let spec = QuantSpec::symmetric(bits)?;
        let (q, _) = quantize_symmetric(&x, bits)?;
        assert!(q.iter().all(|&c| (spec.code_min()..=spec.code_max()).contains(&i64::from(c))));
        let top = x.iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).map(|(i, _)| i);
        let top = top.expect("non-empty");
        assert_eq!(i64::from(q[top]).abs(), spec.code_max(), "bits {bits}");
        let (q, _, _) = quantize_asymmetric(&x, bits)?;
        let spec = QuantSpec::asymmetric(bits)?;
        let (lo, hi) = (x.iter().copied().fold(0.0, f64::min), x.iter().copied().fold(0.0, f64::max));
        if lo < 0.0 && hi > 0.0 {
            assert_eq!(q.iter().copied().min(), Some(0), "bits {bits}");
            // The top end is within one code of the top (half-step ties may round it down).
            let max = i64::from(q.iter().copied().max().expect("non-empty"));
            assert!(spec.code_max() - max <= 1, "bits {bits}: top code {max}");
        }
    }
    Ok(())
}
