//! Property tests (proptest: random inputs, shrunk to a minimal case on failure) for the
//! invariants the docs promise, over all four float types and widths 2..=32: every finite
//! element dequantizes within `scale / 2`; zero is exact; codes stay in range and reach the
//! ends; per-channel and per-group equal per-tensor on each slice; every storage type gives
//! the same codes; packed codes round-trip; the min-max observer does not depend on the order
//! of its batches. `PROPTEST_CASES` changes the number of cases (default below).

use proptest::prelude::*;
use quant_core::{
    dequantize_symmetric, quantize, quantize_asymmetric, quantize_matrix, quantize_per_channel, quantize_symmetric,
    Axis, Granularity, MatrixShape, MinMax, Observer, QuantFloat, QuantSpec,
};
use quant_testkit::strategy::{bits, element, magnitude, tensor};
use quant_traits::half::{bf16, f16};
use quant_traits::{pack_codes, unpack_codes, I2x4, I4x2, Storage, U2x4, U4x2};

/// Cases per property (proptest's default is 256; these run at opt-level 1 in every
/// `cargo xtask test`).
const CASES: u32 = 256;

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

fn bound_holds<F: QuantFloat>(x: &[F], bits: u32) {
    let (q, scale) = quantize_symmetric(x, bits).expect("finite input");
    let s = scale.to_f64_exact();
    assert!(s.is_finite() && s > 0.0, "scale {s:e}");
    for (v, &c) in x.iter().zip(&q) {
        assert_within_half_step(v.to_f64_exact(), i64::from(c), s, 0, F::NAME);
    }
    let (q, scale, zp) = quantize_asymmetric(x, bits).expect("finite input");
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

/// Dequantized values in F: within half a step plus F's own rounding of the result.
fn round_trip_holds<F: QuantFloat>(x: &[F], bits: u32) {
    let (q, scale) = quantize_symmetric(x, bits).expect("finite input");
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

fn per_channel_matches_per_tensor<F: QuantFloat>(matrix: &[Vec<F>], bits: u32) {
    let rows = matrix.len();
    let cols = matrix.first().map_or(0, Vec::len);
    for axis in [0usize, 1] {
        let (q, scales) = quantize_per_channel(matrix, axis, bits).expect("finite input");
        let channels = if axis == 0 { rows } else { cols };
        assert_eq!(scales.len(), if rows == 0 { 0 } else { channels });
        for c in 0..scales.len() {
            let channel: Vec<F> = if axis == 0 { matrix[c].clone() } else { matrix.iter().map(|r| r[c]).collect() };
            let (want_q, want_scale) = quantize_symmetric(&channel, bits).expect("finite input");
            assert_eq!(scales[c], want_scale, "{} axis {axis} channel {c}", F::NAME);
            let got_q: Vec<i32> = if axis == 0 { q[c].clone() } else { q.iter().map(|r| r[c]).collect() };
            assert_eq!(got_q, want_q, "{} axis {axis} channel {c}", F::NAME);
        }
    }
}

/// A matrix of `rows x cols` (each up to 12), every row at its own magnitude, as real
/// weights have channels of very different sizes.
fn matrix<F: QuantFloat>() -> impl Strategy<Value = Vec<Vec<F>>> {
    (0usize..=12, 1usize..=12)
        .prop_flat_map(|(rows, cols)| proptest::collection::vec(tensor::<F>(cols..cols + 1), rows..rows + 1))
}

fn slices_equal_per_tensor<Q: Storage>(
    x: &[f32],
    shape: MatrixShape,
    spec: QuantSpec,
    group: usize,
) -> Result<(), TestCaseError> {
    let (rows, cols) = (shape.rows, shape.cols);
    let per_channel = quantize_matrix::<f32, Q>(x, shape, spec, Granularity::PerChannel(Axis::Cols)).expect("finite");
    for c in 0..cols {
        let col: Vec<f32> = (0..rows).map(|r| x[r * cols + c]).collect();
        let one = quantize::<f32, Q>(&col, spec).expect("finite");
        prop_assert_eq!(&per_channel.params()[c], one.params());
        for (r, code) in one.iter_codes().enumerate() {
            prop_assert_eq!(per_channel.code(r, c), code);
        }
    }
    let per_group = quantize_matrix::<f32, Q>(x, shape, spec, Granularity::PerGroup { axis: Axis::Cols, size: group })
        .expect("finite");
    let groups = cols.div_ceil(group);
    for r in 0..rows {
        for g in 0..groups {
            let (c0, c1) = (g * group, (g * group + group).min(cols));
            let one = quantize::<f32, Q>(&x[r * cols + c0..r * cols + c1], spec).expect("finite");
            prop_assert_eq!(&per_group.params()[r * groups + g], one.params());
            for (i, code) in one.iter_codes().enumerate() {
                prop_assert_eq!(per_group.code(r, c0 + i), code);
            }
        }
    }
    Ok(())
}

/// Tensors of 1..=64 elements at ordinary magnitudes (`10^-3 ..= 10^3`): for properties about
/// `F`'s rounding of the result rather than overflow.
fn ordinary<F: QuantFloat>() -> BoxedStrategy<Vec<F>> {
    (-3.0..=3.0f64).prop_flat_map(|e| proptest::collection::vec(element::<F>(10f64.powf(e)), 1..65)).boxed()
}

/// Tensors of 1..=64 elements.
fn tensors<F: QuantFloat>() -> BoxedStrategy<Vec<F>> {
    tensor::<F>(1..65)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn within_half_a_step_f32(x in tensors::<f32>(), b in bits()) { bound_holds(&x, b); }
    #[test]
    fn within_half_a_step_f64(x in tensors::<f64>(), b in bits()) { bound_holds(&x, b); }
    #[test]
    fn within_half_a_step_f16(x in tensors::<f16>(), b in bits()) { bound_holds(&x, b); }
    #[test]
    fn within_half_a_step_bf16(x in tensors::<bf16>(), b in bits()) { bound_holds(&x, b); }

    #[test]
    fn dequantize_round_trip_f32(x in ordinary::<f32>(), b in bits()) { round_trip_holds(&x, b); }
    #[test]
    fn dequantize_round_trip_f64(x in ordinary::<f64>(), b in bits()) { round_trip_holds(&x, b); }
    #[test]
    fn dequantize_round_trip_f16(x in ordinary::<f16>(), b in bits()) { round_trip_holds(&x, b); }
    #[test]
    fn dequantize_round_trip_bf16(x in ordinary::<bf16>(), b in bits()) { round_trip_holds(&x, b); }

    #[test]
    fn per_channel_equals_per_tensor_f32(m in matrix::<f32>(), b in bits()) { per_channel_matches_per_tensor(&m, b); }
    #[test]
    fn per_channel_equals_per_tensor_f64(m in matrix::<f64>(), b in bits()) { per_channel_matches_per_tensor(&m, b); }
    #[test]
    fn per_channel_equals_per_tensor_f16(m in matrix::<f16>(), b in bits()) { per_channel_matches_per_tensor(&m, b); }
    #[test]
    fn per_channel_equals_per_tensor_bf16(m in matrix::<bf16>(), b in bits()) { per_channel_matches_per_tensor(&m, b); }

    /// Per-channel and per-group through the engine, both schemes: each slice's parameters and
    /// codes equal the per-tensor result on that slice.
    #[test]
    fn per_channel_and_per_group_equal_per_tensor(
        (rows, cols, x) in (1usize..=10, 1usize..=10).prop_flat_map(|(r, c)| {
            (Just(r), Just(c), magnitude::<f32>().prop_flat_map(move |m| proptest::collection::vec(element::<f32>(m), r * c)))
        }),
        b in bits(),
        group in 1usize..=6,
    ) {
        let shape = MatrixShape::new(rows, cols);
        slices_equal_per_tensor::<i32>(&x, shape, QuantSpec::symmetric(b).expect("width"), group)?;
        slices_equal_per_tensor::<u32>(&x, shape, QuantSpec::asymmetric(b).expect("width"), group)?;
    }

    /// The same codes whatever the storage, packed or not, for widths every storage can hold.
    #[test]
    fn storage_types_agree(x in tensor::<f32>(0..34), b in 2u32..=4) {
        let spec = QuantSpec::symmetric(b).expect("width");
        let wide = quantize::<f32, i32>(&x, spec).expect("finite");
        let want: Vec<i64> = wide.iter_codes().collect();
        let packed = quantize::<f32, I4x2>(&x, spec).expect("finite");
        prop_assert_eq!(packed.iter_codes().collect::<Vec<_>>(), want.clone());
        prop_assert_eq!(packed.codes().len(), x.len().div_ceil(2));
        prop_assert_eq!(quantize::<f32, i8>(&x, spec).expect("finite").iter_codes().collect::<Vec<_>>(), want.clone());
        prop_assert_eq!(packed.dequantize(), wide.dequantize());
        if b == 2 {
            let quarter = quantize::<f32, I2x4>(&x, spec).expect("finite");
            prop_assert_eq!(quarter.iter_codes().collect::<Vec<_>>(), want);
            prop_assert_eq!(quarter.codes().len(), x.len().div_ceil(4));
            prop_assert_eq!(quarter.dequantize(), wide.dequantize());
        }
        let spec = QuantSpec::asymmetric(b).expect("width");
        let wide = quantize::<f32, u32>(&x, spec).expect("finite");
        let want: Vec<i64> = wide.iter_codes().collect();
        prop_assert_eq!(quantize::<f32, U4x2>(&x, spec).expect("finite").iter_codes().collect::<Vec<_>>(), want.clone());
        if b == 2 {
            prop_assert_eq!(quantize::<f32, U2x4>(&x, spec).expect("finite").iter_codes().collect::<Vec<_>>(), want.clone());
        }
        prop_assert_eq!(quantize::<f32, u8>(&x, spec).expect("finite").iter_codes().collect::<Vec<_>>(), want.clone());
        prop_assert_eq!(quantize::<f32, i16>(&x, spec).expect("finite").iter_codes().collect::<Vec<_>>(), want);
    }

    /// Signed asymmetric codes (ONNX `int8`, `int4`, ... with a zero point) are the unsigned
    /// ones minus `2^(b-1)`, zero point included: the same scale, every element within
    /// `scale / 2`, 0.0 exact, codes in the signed range.
    #[test]
    fn signed_asymmetric_codes_are_the_unsigned_ones_shifted(x in ordinary::<f32>(), b in bits()) {
        let signed = QuantSpec::asymmetric_signed(b).expect("width");
        let s = quantize::<f32, i32>(&x, signed).expect("finite");
        let u = quantize::<f32, u32>(&x, QuantSpec::asymmetric(b).expect("width")).expect("finite");
        // An all-zero tensor gets the identity parameters (zero point 0) whatever the codes.
        let shift = if x.iter().all(|&v| v == 0.0) { 0 } else { 1i64 << (b - 1) };
        prop_assert_eq!(s.params().scale(), u.params().scale());
        prop_assert_eq!(s.params().zero_point(), u.params().zero_point() - shift);
        let (scale, zp) = (f64::from(s.params().scale()), s.params().zero_point());
        for (i, (code, ucode)) in s.iter_codes().zip(u.iter_codes()).enumerate() {
            prop_assert!((signed.code_min()..=signed.code_max()).contains(&code));
            prop_assert_eq!(code, ucode - shift);
            assert_within_half_step(f64::from(x[i]), code, scale, zp, "signed asymmetric");
        }
        prop_assert_eq!(quant_core::dequantize_code(zp, s.params().scale(), zp), 0.0);
    }

    /// Codes stay inside their range; with f64 (no rounding of the scale) the element of
    /// largest magnitude lands exactly on the top code (symmetric), and the range ends on 0 and
    /// within one code of 2^b - 1 (asymmetric, data straddling 0).
    #[test]
    fn codes_stay_in_range_and_reach_the_ends(x in proptest::collection::vec(-3.0..=5.0f64, 2..42), b in bits()) {
        let spec = QuantSpec::symmetric(b).expect("width");
        let (q, _) = quantize_symmetric(&x, b).expect("finite");
        prop_assert!(q.iter().all(|&c| (spec.code_min()..=spec.code_max()).contains(&i64::from(c))));
        let top = x.iter().enumerate().max_by(|a, c| a.1.abs().total_cmp(&c.1.abs())).map(|(i, _)| i).expect("non-empty");
        if x[top] != 0.0 {
            prop_assert_eq!(i64::from(q[top]).abs(), spec.code_max());
        }
        let (q, _, _) = quantize_asymmetric(&x, b).expect("finite");
        let spec = QuantSpec::asymmetric(b).expect("width");
        prop_assert!(q.iter().all(|&c| (spec.code_min()..=spec.code_max()).contains(&i64::from(c))));
        let (lo, hi) = (x.iter().copied().fold(0.0, f64::min), x.iter().copied().fold(0.0, f64::max));
        if lo < 0.0 && hi > 0.0 {
            prop_assert_eq!(q.iter().copied().min(), Some(0));
            let max = i64::from(q.iter().copied().max().expect("non-empty"));
            prop_assert!(spec.code_max() - max <= 1, "top code {}", max);
        }
    }

    /// Packing codes into 2- and 4-bit units and unpacking them gives the codes back, for any
    /// codes in range and any length (the last unit padded).
    #[test]
    fn packed_codes_round_trip(seed in proptest::collection::vec(any::<u8>(), 0..70)) {
        fn round_trip<Q: Storage>(raw: &[u8]) -> Result<(), TestCaseError> {
            let span = u64::try_from(Q::MAX_CODE - Q::MIN_CODE + 1).expect("small");
            let codes: Vec<i64> = raw.iter().map(|&r| Q::MIN_CODE + i64::try_from(u64::from(r) % span).expect("small")).collect();
            let mut units = vec![Q::default(); Q::units_for(codes.len())];
            pack_codes(&codes, &mut units).expect("in range");
            let mut back = vec![0i64; codes.len()];
            unpack_codes(&units, &mut back).expect("sizes");
            prop_assert_eq!(back, codes);
            Ok(())
        }
        round_trip::<I4x2>(&seed)?;
        round_trip::<U4x2>(&seed)?;
        round_trip::<I2x4>(&seed)?;
        round_trip::<U2x4>(&seed)?;
    }

    /// The min-max observer's parameters depend on the batches' values, not their order or
    /// how the data is split into batches.
    #[test]
    fn min_max_calibration_is_order_independent(
        batches in proptest::collection::vec(tensor::<f32>(1..20), 1..6),
        b in bits(),
        rotate in 0usize..6,
    ) {
        let spec = QuantSpec::asymmetric(b).expect("width");
        let mut forward = MinMax::default();
        for x in &batches {
            forward.observe(x).expect("finite");
        }
        let mut turned = MinMax::default();
        let mut order: Vec<&Vec<f32>> = batches.iter().collect();
        let turn = rotate % order.len();
        order.rotate_left(turn);
        order.reverse();
        for x in order {
            turned.observe(x).expect("finite");
        }
        let mut whole = MinMax::default();
        whole.observe(&batches.concat()).expect("finite");
        let want = forward.params::<f32>(spec).expect("observed");
        prop_assert_eq!(turned.params::<f32>(spec).expect("observed"), want);
        prop_assert_eq!(whole.params::<f32>(spec).expect("observed"), want);
    }
}
