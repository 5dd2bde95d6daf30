//! quantization_error and error_stats: the seed example against values computed exactly with
//! Python's `fractions` (see the comments), the SNR edge conventions, extreme magnitudes, and
//! bad input.

use quant_analysis::{error_stats, quantization_error, snr_db, ErrorStats, QuantError};
use quant_core::{quantize_asymmetric, quantize_symmetric};
use quant_testkit::Rng;
use quant_traits::half::f16;
use rstest::rstest;

type Res = Result<(), QuantError>;

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs()
}

/// Python, exact rationals over the same f64 values:
/// x = [1.0, -0.5, 0.3, -1.0, 0.0, 0.7]; s = 1/127; q = [round(v/s) for v in x]
/// errs = [Fraction(a) - Fraction(c*s) ...]  ->  mse = 2.7900055800111473e-06,
/// max_error = 0.003937007874015741 (element 1: -0.5 vs -64/127), snr = 52.28030113277218 dB,
/// signal = 0.4716666666666667, mean error = 0.0006561679790026143.
#[test]
fn seed_error_analysis() -> Res {
    let x = [1.0f64, -0.5, 0.3, -1.0, 0.0, 0.7];
    let (q, scale) = quantize_symmetric(&x, 8)?;
    let e = quantization_error(&x, &q, scale, 0, true)?;
    assert!(close(e.mse, 2.7900055800111473e-06, 1e-14), "{}", e.mse);
    assert!(close(e.max_error, 0.003937007874015741, 1e-14), "{}", e.max_error);
    assert_eq!(e.max_error_index, Some(1));
    assert!(close(e.snr_db, 52.28030113277218, 1e-14), "{}", e.snr_db);
    assert!(close(e.signal_power, 0.4716666666666667, 1e-15));
    assert!(close(e.mean_error, 0.0006561679790026143, 1e-12));
    assert!(close(e.rmse, e.mse.sqrt(), 1e-15));
    assert_eq!(e.len, 6);
    Ok(())
}

#[test]
fn display_names_the_worst_element() -> Res {
    let e = error_stats(&[1.0f64, 2.0], &[1.0, 2.5])?;
    assert_eq!(e.to_string(), "MSE 1.2500e-1, max error 5.0000e-1 (element 1), SNR 13.01 dB");
    Ok(())
}

#[test]
fn asymmetric_uses_the_zero_point() -> Res {
    let x = [-1.0f64, 0.0, 0.25, 3.0];
    let (q, scale, zp) = quantize_asymmetric(&x, 8)?;
    assert_eq!(zp, 64);
    let e = quantization_error(&x, &q, scale, i64::from(zp), false)?;
    assert!(e.max_error <= scale / 2.0);
    assert_eq!(e.max_error_index.map(|i| x[i] != 0.0), Some(true)); // zero is exact
                                                                    // Ignoring the zero point would shift every value by 64 steps.
    let wrong = quantization_error(&x, &q, scale, 0, false)?;
    assert!(wrong.max_error > 60.0 * scale);
    Ok(())
}

#[test]
fn agrees_with_the_naive_formulas_on_ordinary_data() -> Res {
    let mut rng = Rng::new(5);
    for _ in 0..300 {
        let n = 1 + rng.index(200);
        let x: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let bits = rng.int(2, 16) as u32;
        let (q, scale) = quantize_symmetric(&x, bits)?;
        let e = quantization_error(&x, &q, scale, 0, true)?;
        let d: Vec<f64> = q.iter().map(|&c| f64::from(c) * scale).collect();
        let mse = x.iter().zip(&d).map(|(a, b)| (a - b) * (a - b)).sum::<f64>() / n as f64;
        let sig = x.iter().map(|a| a * a).sum::<f64>() / n as f64;
        let max = x.iter().zip(&d).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(close(e.mse, mse, 1e-12), "{} vs {mse}", e.mse);
        assert!(close(e.signal_power, sig, 1e-12));
        assert_eq!(e.max_error, max);
        if mse == 0.0 {
            assert_eq!(e.snr_db, f64::INFINITY); // e.g. one element: exactly max * 1
        } else {
            assert!((e.snr_db - 10.0 * (sig / mse).log10()).abs() < 1e-9, "{}", e.snr_db);
        }
        assert!(e.max_error <= scale / 2.0 * (1.0 + 1e-9));
    }
    Ok(())
}

#[rstest]
#[case::lossless(1.0, 0.0, f64::INFINITY)]
#[case::lossless_zero_signal(0.0, 0.0, f64::INFINITY)]
#[case::zero_signal(0.0, 1.0, f64::NEG_INFINITY)]
#[case::equal(2.0, 2.0, 0.0)]
#[case::ten_times(10.0, 1.0, 10.0)]
#[case::ratio_overflows(1e300, 1e-300, 6000.0)]
#[case::ratio_underflows(1e-300, 1e300, -6000.0)]
fn snr_edges(#[case] signal: f64, #[case] noise: f64, #[case] want: f64) {
    assert_eq!(snr_db(signal, noise), want);
}

#[test]
fn all_zero_and_lossless_tensors() -> Res {
    let zeros = [0.0f32; 4];
    let (q, scale) = quantize_symmetric(&zeros, 8)?;
    let e = quantization_error(&zeros, &q, scale, 0, true)?;
    assert_eq!((e.mse, e.max_error, e.signal_power, e.snr_db), (0.0, 0.0, 0.0, f64::INFINITY));
    // Exactly representable values: no noise, infinite SNR.
    let x = [1.0f32, -1.0, 0.5];
    let e = quantization_error(&x, &[2i32, -2, 1], 0.5, 0, true)?;
    assert_eq!((e.mse, e.snr_db), (0.0, f64::INFINITY));
    // Zero signal, nonzero reconstruction: -inf.
    let e = error_stats(&[0.0f64, 0.0], &[0.0, 1.0])?;
    assert_eq!(e.snr_db, f64::NEG_INFINITY);
    Ok(())
}

#[test]
fn empty_tensor() -> Res {
    let e = quantization_error::<f32, i32>(&[], &[], 1.0, 0, true)?;
    assert_eq!(
        e,
        ErrorStats {
            len: 0,
            mse: 0.0,
            rmse: 0.0,
            max_error: 0.0,
            max_error_index: None,
            mean_error: 0.0,
            signal_power: 0.0,
            snr_db: f64::INFINITY
        }
    );
    Ok(())
}

#[test]
fn huge_values_do_not_overflow_the_snr() -> Res {
    // Squares of 1e300 overflow f64; the SNR must still be the same as for the data scaled down.
    let x = [1e300f64, -0.7e300, 0.3e300];
    let y = [1.001e300f64, -0.7e300, 0.3e300];
    let e = error_stats(&x, &y)?;
    let small = error_stats(&x.map(|v| v * 1e-300), &y.map(|v| v * 1e-300))?;
    assert!(e.snr_db.is_finite());
    assert!(close(e.snr_db, small.snr_db, 1e-9), "{} vs {}", e.snr_db, small.snr_db);
    assert!(close(e.max_error, 1e297, 1e-3));
    // The MSE itself (~3.3e593) is beyond f64: reported as +inf, not NaN.
    assert_eq!(e.mse, f64::INFINITY);
    Ok(())
}

#[test]
fn tiny_values_do_not_underflow_the_snr() -> Res {
    let x = [1e-200f64, 2e-200];
    let y = [1.1e-200f64, 2e-200];
    let e = error_stats(&x, &y)?;
    let big = error_stats(&x.map(|v| v * 1e200), &y.map(|v| v * 1e200))?;
    assert!(close(e.snr_db, big.snr_db, 1e-9), "{} vs {}", e.snr_db, big.snr_db);
    assert_eq!(e.mse, 0.0); // the true MSE, 5e-403, is below the smallest f64: IEEE gives 0
    assert!(close(e.max_error, 1e-201, 1e-9));
    Ok(())
}

#[test]
fn extreme_f64_range_through_the_seed_api() -> Res {
    let x = [f64::MAX, -f64::MAX, 0.0];
    let (q, scale, zp) = quantize_asymmetric(&x, 8)?;
    let e = quantization_error(&x, &q, scale, i64::from(zp), false)?;
    assert!(e.snr_db.is_finite() && e.snr_db > 40.0, "{}", e.snr_db);
    assert!(e.max_error.is_finite() && e.max_error <= scale / 2.0);
    Ok(())
}

#[test]
fn works_for_half_types() -> Res {
    let x: Vec<f16> = [0.1f32, -0.2, 0.3].iter().map(|&v| f16::from_f32(v)).collect();
    let (q, scale) = quantize_symmetric(&x, 8)?;
    let e = quantization_error(&x, &q, scale, 0, true)?;
    assert!(e.max_error <= f64::from(scale) / 2.0 + 1e-4);
    assert!(e.snr_db > 40.0);
    Ok(())
}

#[test]
fn bad_inputs() {
    assert_eq!(
        quantization_error(&[1.0f32, 2.0], &[1i32], 1.0, 0, true),
        Err(QuantError::LengthMismatch { what: "quantized vs original", expected: 2, found: 1 })
    );
    assert!(matches!(
        quantization_error(&[1.0f32, f32::NAN], &[1i32, 2], 1.0, 0, true),
        Err(QuantError::NonFinite { index: 1, .. })
    ));
    assert_eq!(quantization_error(&[1.0f32], &[1i32], 0.0, 0, true), Err(QuantError::InvalidScale { value: 0.0 }));
    assert_eq!(
        quantization_error(&[1.0f32], &[1u32], 1.0, 5, true),
        Err(QuantError::InvalidZeroPoint { zero_point: 5, min: 0, max: 0 })
    );
    assert!(matches!(
        error_stats(&[1.0f64, 2.0], &[1.0, f64::INFINITY]),
        Err(QuantError::NonFiniteReconstruction { index: 1, .. })
    ));
    assert_eq!(
        error_stats(&[1.0f64], &[]),
        Err(QuantError::LengthMismatch { what: "reconstructed vs original", expected: 1, found: 0 })
    );
}
