//! The seed specification's examples, edge cases and bad inputs, one fact per case.
//!
//! Expected codes come from the specification text (`../shared/SEED.md`) and were cross-checked
//! with Python's `round` (ties to even) on the same `f64` arithmetic.

use quant_core::{
    dequantize_asymmetric, dequantize_symmetric, quantize_asymmetric, quantize_per_channel, quantize_symmetric,
    QuantError,
};
use quant_traits::half::{bf16, f16};
use quant_traits::QuantFloat;
use rstest::rstest;

type Res = Result<(), QuantError>;

const SEED_TENSOR: [f64; 6] = [1.0, -0.5, 0.3, -1.0, 0.0, 0.7];
const SEED_ACTIVATIONS: [f64; 6] = [0.0, 0.5, 1.0, 1.5, 2.0, 0.1];

#[test]
fn seed_symmetric_example() -> Res {
    let (q, scale) = quantize_symmetric(&SEED_TENSOR, 8)?;
    assert_eq!(scale, 1.0 / 127.0);
    assert_eq!(q, [127, -64, 38, -127, 0, 89]);
    Ok(())
}

#[test]
fn seed_symmetric_dequantized() -> Res {
    let (q, scale) = quantize_symmetric(&SEED_TENSOR, 8)?;
    let d = dequantize_symmetric(&q, scale);
    // The seed's "~= [1.0, -0.504, 0.299, -1.0, 0.0, 0.701]": exactly q * (1/127).
    let want = [127.0, -64.0, 38.0, -127.0, 0.0, 89.0].map(|c: f64| c * (1.0 / 127.0));
    assert_eq!(d, want);
    assert_eq!(d[0], 1.0);
    assert!((d[1] - -0.504).abs() < 5e-4 && (d[2] - 0.299).abs() < 5e-4 && (d[5] - 0.701).abs() < 5e-4);
    Ok(())
}

#[test]
fn seed_asymmetric_example() -> Res {
    let (q, scale, zp) = quantize_asymmetric(&SEED_ACTIVATIONS, 8)?;
    assert_eq!(scale, 2.0 / 255.0);
    assert_eq!(zp, 0);
    assert_eq!(q, [0, 64, 128, 191, 255, 13]);
    Ok(())
}

/// The seed's symmetric example gives the same codes in every float type (the values and the
/// scale, rounded once to the type, are close enough that no code moves).
#[rstest]
fn seed_symmetric_example_in_every_float_type<F: QuantFloat>(
    #[values(0.0f32, 0.0f64, f16::ZERO, bf16::ZERO)] _ty: F,
) -> Res {
    let x: Vec<F> = SEED_TENSOR.iter().map(|&v| F::from_f64_nearest(v)).collect();
    let (q, scale) = quantize_symmetric(&x, 8)?;
    assert_eq!(q, [127, -64, 38, -127, 0, 89], "{}", F::NAME);
    assert_eq!(scale, F::from_f64_nearest(1.0 / 127.0), "{}", F::NAME);
    Ok(())
}

/// The asymmetric example is a knife edge: 1.0 sits exactly on 127.5 steps only when the scale
/// is 2/255 rounded to f64 (or f16). In f32 that scale rounds *up* (0.007843138), so 1.0 is
/// 127.49999 steps: code 127. In bf16 it rounds *down* to 2^-7, which would put 2.0 at 256
/// steps, clipped by more than half a step, so the scale steps up one bf16 ulp (0.0078735) and
/// 2.0 lands on 254 (error 0.00012, under half a step).
#[rstest]
#[case::f64(0.0f64, [0, 64, 128, 191, 255, 13], 2.0 / 255.0)]
#[case::f16(f16::ZERO, [0, 64, 128, 191, 255, 13], 0.007843017578125)]
#[case::f32(0.0f32, [0, 64, 127, 191, 255, 13], 0.007843137718737125)]
#[case::bf16(bf16::ZERO, [0, 64, 127, 191, 254, 13], 0.00787353515625)]
fn seed_asymmetric_example_in_every_float_type<F: QuantFloat>(
    #[case] _ty: F,
    #[case] codes: [u32; 6],
    #[case] scale: f64,
) -> Res {
    let a: Vec<F> = SEED_ACTIVATIONS.iter().map(|&v| F::from_f64_nearest(v)).collect();
    let (q, s, zp) = quantize_asymmetric(&a, 8)?;
    assert_eq!((q, s.to_f64_exact(), zp), (codes.to_vec(), scale, 0));
    Ok(())
}

#[test]
fn asymmetric_round_comes_before_the_zero_point() -> Res {
    // Range [-1, 14] at 4 bits: scale 1.0 exactly, zero point 1 (odd). x = 2.5: round(2.5) + 1
    // = 3, while "add, then round" would give round(3.5) = 4. x = -0.5: round(-0.5) + 1 = 1.
    let (q, scale, zp) = quantize_asymmetric(&[-1.0f64, 14.0, 2.5, -0.5], 4)?;
    assert_eq!((scale, zp), (1.0, 1));
    assert_eq!(q, [0, 15, 3, 1]);
    Ok(())
}

#[rstest]
#[case::all_zero(&[0.0, 0.0, 0.0])]
#[case::negative_zero(&[-0.0, 0.0])]
#[case::empty(&[])]
fn zero_and_empty_get_scale_one(#[case] x: &[f64]) -> Res {
    for bits in [2, 8, 32] {
        let (q, scale) = quantize_symmetric(x, bits)?;
        assert_eq!(scale, 1.0);
        assert!(q.iter().all(|&c| c == 0));
        assert_eq!(q.len(), x.len());
        let (q, scale, zp) = quantize_asymmetric(x, bits)?;
        assert_eq!((scale, zp), (1.0, 0));
        assert!(q.iter().all(|&c| c == 0));
    }
    Ok(())
}

#[rstest]
#[case::positive(&[2.5, 2.5], 2.5 / 255.0, 0, &[255, 255])]
#[case::negative(&[-2.5], 2.5 / 255.0, 255, &[0])]
#[case::single(&[0.5], 0.5 / 255.0, 0, &[255])]
fn constant_tensors_keep_zero_representable(
    #[case] x: &[f64],
    #[case] scale: f64,
    #[case] zp: u32,
    #[case] codes: &[u32],
) -> Res {
    let (q, s, z) = quantize_asymmetric(x, 8)?;
    assert_eq!((s, z), (scale, zp));
    assert_eq!(q, codes);
    Ok(())
}

#[test]
fn single_element_symmetric() -> Res {
    let (q, scale) = quantize_symmetric(&[-3.0f32], 8)?;
    assert_eq!((q, scale), (vec![-127], 3.0 / 127.0));
    Ok(())
}

#[rstest]
#[case(2, 1, -2)]
#[case(3, 3, -4)]
#[case(8, 127, -128)]
#[case(16, 32767, -32768)]
#[case(31, 1_073_741_823, -1_073_741_824)]
#[case(32, i32::MAX, i32::MIN)]
fn symmetric_widths_fill_their_code_range(#[case] bits: u32, #[case] top: i32, #[case] bottom: i32) -> Res {
    // The bottom code -(2^(b-1)) is reached by clamping a value just below -max.
    let (q, scale) = quantize_symmetric(&[1.0f64, -1.0, 0.0], bits)?;
    assert_eq!(q, [top, -top, 0]);
    assert_eq!(scale, 1.0 / f64::from(top));
    assert!(bottom < -top);
    Ok(())
}

#[rstest]
#[case(2, 3)]
#[case(8, 255)]
#[case(16, 65535)]
#[case(32, u32::MAX)]
fn asymmetric_widths_fill_their_code_range(#[case] bits: u32, #[case] top: u32) -> Res {
    let (q, _, zp) = quantize_asymmetric(&[0.0f64, 1.0], bits)?;
    assert_eq!((q, zp), (vec![0, top], 0));
    Ok(())
}

#[test]
fn thirty_two_bit_round_trip_is_tight() -> Res {
    let x = [0.123_456_789_012_345_67f64, -0.987_654_321, 0.5];
    let (q, scale) = quantize_symmetric(&x, 32)?;
    let d = dequantize_symmetric(&q, scale);
    for (a, b) in x.iter().zip(&d) {
        assert!((a - b).abs() <= scale / 2.0, "{a} vs {b}");
    }
    let (q, scale, zp) = quantize_asymmetric(&x, 32)?;
    let d = dequantize_asymmetric(&q, scale, zp);
    for (a, b) in x.iter().zip(&d) {
        assert!((a - b).abs() <= scale / 2.0 * (1.0 + 1e-9), "{a} vs {b}");
    }
    Ok(())
}

#[test]
fn extreme_f64_ranges_give_finite_answers() -> Res {
    let x = [f64::MAX, -f64::MAX, 0.0, 1.0];
    let (q, scale, zp) = quantize_asymmetric(&x, 8)?;
    assert!(scale.is_finite() && scale > 0.0);
    let d = dequantize_asymmetric(&q, scale, zp);
    assert!(d.iter().all(|v| v.is_finite()), "{d:?}");
    assert_eq!(d[2], 0.0); // zero is exact
    for (a, b) in x.iter().zip(&d) {
        assert!((a / 2.0 - b / 2.0).abs() <= scale / 4.0, "{a} vs {b}");
    }
    let (q, scale) = quantize_symmetric(&x, 8)?;
    assert_eq!(scale, f64::MAX / 127.0);
    assert_eq!(q[..2], [127, -127]);
    let d = dequantize_symmetric(&q, scale);
    assert!(d.iter().all(|v| v.is_finite()));
    Ok(())
}

#[test]
fn subnormal_maxima_do_not_divide_by_zero() -> Res {
    let tiny = f64::from_bits(1); // 4.9e-324
    let (q, scale) = quantize_symmetric(&[tiny, -tiny, 0.0], 8)?;
    assert_eq!(scale, tiny);
    assert_eq!(q, [1, -1, 0]);
    let (q, scale, zp) = quantize_asymmetric(&[tiny, 0.0], 8)?;
    assert_eq!((q, scale, zp), (vec![1, 0], tiny, 0));
    let t = f16::from_bits(1); // smallest f16 subnormal
    let (q, scale) = quantize_symmetric(&[t, f16::ZERO], 8)?;
    assert_eq!((q, scale), (vec![1, 0], t));
    Ok(())
}

#[test]
fn f16_tensor_holding_its_maximum_dequantizes_finite() -> Res {
    let x = [f16::MAX, f16::MIN, f16::from_f32(1000.0)];
    let (q, scale) = quantize_symmetric(&x, 8)?;
    assert_eq!(q[..2], [127, -127]);
    let d = dequantize_symmetric(&q, scale);
    // 127 * 516 = 65532 rounds past f16::MAX; dequantization saturates instead of giving inf.
    assert_eq!(d[..2], [f16::MAX, f16::MIN]);
    Ok(())
}

#[test]
fn per_channel_rows_and_columns() -> Res {
    let w = vec![vec![1.0f64, -2.0, 0.5], vec![0.25, 0.125, -0.0625]];
    let (q, scales) = quantize_per_channel(&w, 0, 8)?;
    assert_eq!(scales, [2.0 / 127.0, 0.25 / 127.0]);
    assert_eq!(q, [vec![64, -127, 32], vec![127, 64, -32]]); // 63.5 -> 64, 31.75 -> 32
    let (q, scales) = quantize_per_channel(&w, 1, 8)?;
    assert_eq!(scales, [1.0 / 127.0, 2.0 / 127.0, 0.5 / 127.0]);
    assert_eq!(q, [vec![127, -127, 127], vec![32, 8, -16]]); // 31.75, 7.9375, -15.875
    Ok(())
}

#[test]
fn per_channel_edges() -> Res {
    let (q, s) = quantize_per_channel::<f32>(&[], 0, 8)?;
    assert!(q.is_empty() && s.is_empty());
    let (q, s) = quantize_per_channel::<f32>(&[vec![], vec![]], 0, 8)?;
    assert_eq!((q, s), (vec![vec![], vec![]], vec![1.0, 1.0]));
    let (q, s) = quantize_per_channel::<f32>(&[vec![], vec![]], 1, 8)?;
    assert_eq!((q, s), (vec![vec![], vec![]], vec![]));
    let (q, s) = quantize_per_channel(&[vec![0.0f32, 3.0]], 0, 8)?;
    assert_eq!((q, s), (vec![vec![0, 127]], vec![3.0 / 127.0]));
    Ok(())
}

#[rstest]
#[case(0)]
#[case(1)]
#[case(33)]
fn bad_widths(#[case] bits: u32) {
    let want = Err(QuantError::InvalidBits { bits });
    assert_eq!(quantize_symmetric(&[1.0f32], bits).map(|_| ()), want);
    assert_eq!(quantize_asymmetric(&[1.0f32], bits).map(|_| ()), want);
    assert_eq!(quantize_per_channel(&[vec![1.0f32]], 0, bits).map(|_| ()), want);
}

#[rstest]
#[case::nan(f64::NAN)]
#[case::inf(f64::INFINITY)]
#[case::neg_inf(f64::NEG_INFINITY)]
fn non_finite_inputs_name_the_index(#[case] bad: f64) {
    let x = [0.5, 1.0, bad, 2.0];
    let is_bad =
        |e: &QuantError| matches!(e, QuantError::NonFinite { index: 2, value } if value.to_bits() == bad.to_bits());
    assert!(quantize_symmetric(&x, 8).is_err_and(|e| is_bad(&e)));
    assert!(quantize_asymmetric(&x, 8).is_err_and(|e| is_bad(&e)));
    let m = vec![vec![0.0, 1.0], vec![bad, 2.0]];
    for axis in [0, 1] {
        let err = quantize_per_channel(&m, axis, 8).map(|_| ());
        assert!(
            matches!(err, Err(QuantError::NonFiniteInMatrix { row: 1, col: 0, value }) if value.to_bits() == bad.to_bits()),
            "{err:?}"
        );
    }
}

#[test]
fn half_types_report_non_finite_values() {
    let x = [f16::ONE, f16::NAN];
    assert!(matches!(quantize_symmetric(&x, 8), Err(QuantError::NonFinite { index: 1, .. })));
    let x = [bf16::NEG_INFINITY];
    assert_eq!(
        quantize_asymmetric(&x, 4).map(|_| ()),
        Err(QuantError::NonFinite { index: 0, value: f64::NEG_INFINITY })
    );
}

#[test]
fn ragged_matrices_and_bad_axes() {
    let ragged = vec![vec![1.0f32, 2.0], vec![3.0]];
    assert_eq!(
        quantize_per_channel(&ragged, 0, 8).map(|_| ()),
        Err(QuantError::RaggedMatrix { matrix: "input", row: 1, expected: 2, found: 1 })
    );
    assert_eq!(quantize_per_channel(&[vec![1.0f32]], 2, 8).map(|_| ()), Err(QuantError::InvalidAxis { axis: 2 }));
}

#[test]
fn errors_read_well() {
    let e = quantize_symmetric(&[0.0f32, f32::NAN], 8).expect_err("NaN is rejected");
    assert_eq!(e.to_string(), "element 1 is NaN: quantization needs finite values");
    let e = quantize_per_channel(&[vec![1.0f32], vec![]], 0, 8).expect_err("ragged");
    assert_eq!(e.to_string(), "ragged matrix input: row 1 has 0 columns but row 0 has 1");
    let e = quantize_symmetric(&[1.0f32], 40).expect_err("bits");
    assert_eq!(e.to_string(), "bit width 40 is not supported: use 2..=32");
}
