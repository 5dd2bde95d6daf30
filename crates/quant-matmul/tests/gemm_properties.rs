//! Property tests (proptest, shrinking to a minimal case): every output stage of the engine
//! equals the naive reference on arbitrary shapes (0, 1, around every kernel's tiles and the
//! AMX blocks of 64), row strides, zero points (none, per tensor, per row / column) and values
//! (extremes included), on every kernel tier this CPU has (or `QUANT_KERNEL`'s), 1 and 2
//! threads, raw and packed weights.

use proptest::prelude::*;
use quant_matmul::{
    multiply_by_quantized_multiplier, MatMut, MatRef, Operand, Operands, Requant, Scale, ScaleType, ZeroPoint,
};
use quant_traits::half::f16;

mod common;
use common::settings;

/// A dimension: mostly small, often on a tile edge.
fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 0usize..=40,
        2 => prop::sample::select(vec![1usize, 11, 12, 13, 15, 16, 17, 31, 32, 33, 63, 64, 65, 129]),
    ]
}

/// Values of an operand type: anything in range, or only its extremes.
fn values(len: usize, lo: i32, hi: i32) -> impl Strategy<Value = Vec<i32>> {
    prop_oneof![
        3 => proptest::collection::vec(lo..=hi, len),
        1 => proptest::collection::vec(prop::sample::select(vec![lo, hi]), len),
    ]
}

/// A zero point: none, per tensor, or one per row (A) / column (B).
#[derive(Clone, Debug)]
enum Zp {
    None,
    Tensor(i32),
    Channel(Vec<i32>),
}

impl Zp {
    fn get(&self, i: usize) -> i64 {
        match self {
            Zp::None => 0,
            Zp::Tensor(z) => i64::from(*z),
            Zp::Channel(v) => i64::from(v[i]),
        }
    }

    fn view(&self) -> ZeroPoint<'_> {
        match self {
            Zp::None => ZeroPoint::None,
            Zp::Tensor(z) => ZeroPoint::PerTensor(*z),
            Zp::Channel(v) => ZeroPoint::PerChannel(v),
        }
    }
}

fn zero_point(n: usize, lo: i32, hi: i32) -> impl Strategy<Value = Zp> {
    prop_oneof![
        Just(Zp::None),
        (lo..=hi).prop_map(Zp::Tensor),
        proptest::collection::vec(lo..=hi, n).prop_map(Zp::Channel),
    ]
}

/// One problem: `m x k` A (row stride `k + pad_a`), `k x n` B (stride `n + pad_b`), zero points.
#[derive(Clone, Debug)]
struct Case {
    m: usize,
    k: usize,
    n: usize,
    pad_a: usize,
    pad_b: usize,
    a: Vec<i32>,
    b: Vec<i32>,
    za: Zp,
    zb: Zp,
}

/// A case with A's values and zero points in `a_lo..=a_hi`, B's in `b_lo..=b_hi`.
fn case(a_lo: i32, a_hi: i32, b_lo: i32, b_hi: i32) -> impl Strategy<Value = Case> {
    (dim(), dim(), dim(), 0usize..4, 0usize..4).prop_flat_map(move |(m, k, n, pad_a, pad_b)| {
        let len_a = if m == 0 { 0 } else { (m - 1) * (k + pad_a) + k };
        let len_b = if k == 0 { 0 } else { (k - 1) * (n + pad_b) + n };
        (values(len_a, a_lo, a_hi), values(len_b, b_lo, b_hi), zero_point(m, a_lo, a_hi), zero_point(n, b_lo, b_hi))
            .prop_map(move |(a, b, za, zb)| Case { m, k, n, pad_a, pad_b, a, b, za, zb })
    })
}

impl Case {
    /// `(A - za)(B - zb)` in i64.
    fn reference(&self) -> Vec<i64> {
        let (sa, sb) = (self.k + self.pad_a, self.n + self.pad_b);
        let mut c = vec![0i64; self.m * self.n];
        for i in 0..self.m {
            for j in 0..self.n {
                c[i * self.n + j] = (0..self.k)
                    .map(|p| {
                        (i64::from(self.a[i * sa + p]) - self.za.get(i))
                            * (i64::from(self.b[p * sb + j]) - self.zb.get(j))
                    })
                    .sum();
            }
        }
        c
    }
}

/// Every stage on one case, with activations of type `A`.
fn check<A: Operand>(c: &Case, scale_b: &[f32], mult: &[f32], fixed: (i32, i32)) -> Result<(), TestCaseError> {
    let a: Vec<A> = c.a.iter().map(|&v| A::narrow(i64::from(v))).collect();
    let b: Vec<i8> = c.b.iter().map(|&v| i8::try_from(v).expect("i8 range")).collect();
    let av = MatRef::new(&a, c.m, c.k, c.k + c.pad_a).expect("view");
    let bv = MatRef::new(&b, c.k, c.n, c.n + c.pad_b).expect("view");
    let want = c.reference();
    let (m, n) = (c.m, c.n);
    for g in settings() {
        let packed = g.pack_b(bv).expect("packs");
        let raw = Operands::new(av, c.za.view(), bv, c.zb.view()).expect("operands");
        let pre = Operands::packed(av, c.za.view(), &packed, c.zb.view()).expect("operands");
        for ops in [raw, pre] {
            let what = format!("{g:?}");
            // Raw i32 (every result of 8-bit operands at these depths fits).
            let mut out = vec![0i32; m * n];
            g.i32(&ops, MatMut::row_major(&mut out, m, n).expect("view")).expect("runs");
            prop_assert_eq!(out.iter().map(|&v| i64::from(v)).collect::<Vec<_>>(), want.clone(), "i32 {}", what);
            // f32: acc * (sa * sb[j]) + bias[j], in f64, rounded once.
            let (sa, bias): (f32, Vec<f32>) = (0.03125, (0..n).map(|j| j as f32 * 0.25 - 1.0).collect());
            let mut out = vec![0f32; m * n];
            g.f32(&ops, sa, Scale::PerColumn(scale_b), Some(&bias), MatMut::row_major(&mut out, m, n).expect("view"))
                .expect("runs");
            let f: Vec<f32> = want
                .iter()
                .enumerate()
                .map(|(x, &acc)| {
                    let j = x % n;
                    (acc as f64 * (f64::from(sa) * f64::from(scale_b[j])) + f64::from(bias[j])) as f32
                })
                .collect();
            prop_assert_eq!(out, f, "f32 {}", what);
            // Requantized with a float multiplier per column: ties to even, then saturate.
            let mut out = vec![0i8; m * n];
            let r = Requant::Float { multiplier: Scale::PerColumn(mult), zero_point: 3 };
            g.requant(&ops, r, MatMut::row_major(&mut out, m, n).expect("view")).expect("runs");
            let q: Vec<i8> = want
                .iter()
                .enumerate()
                .map(|(x, &acc)| {
                    ((acc as f64 * f64::from(mult[x % n])).round_ties_even() + 3.0).clamp(-128.0, 127.0) as i8
                })
                .collect();
            prop_assert_eq!(out, q, "requant float {}", what);
            // Requantized with TFLite's fixed-point multiplier and shift.
            let mut out = vec![0u8; m * n];
            let r = Requant::FixedPoint { multiplier: fixed.0, shift: fixed.1, zero_point: 128 };
            g.requant(&ops, r, MatMut::row_major(&mut out, m, n).expect("view")).expect("runs");
            let q: Vec<u8> = want
                .iter()
                .map(|&acc| {
                    let acc = i32::try_from(acc).expect("fits i32 at these depths");
                    (multiply_by_quantized_multiplier(acc, fixed.0, fixed.1) + 128).clamp(0, 255) as u8
                })
                .collect();
            prop_assert_eq!(out, q, "requant fixed point {}", what);
            // Per column, the pairs made by quantize_multiplier from the float multipliers.
            let pairs: Vec<(i32, i32)> =
                mult.iter().map(|&r| quant_matmul::quantize_multiplier(f64::from(r)).expect("positive")).collect();
            let (ms, ss): (Vec<i32>, Vec<i32>) = pairs.iter().copied().unzip();
            let mut out = vec![0i8; m * n];
            let r = Requant::FixedPointPerColumn { multipliers: &ms, shifts: &ss, zero_point: -5 };
            g.requant(&ops, r, MatMut::row_major(&mut out, m, n).expect("view")).expect("runs");
            let q: Vec<i8> = want
                .iter()
                .enumerate()
                .map(|(x, &acc)| {
                    let (mj, sj) = pairs[x % n];
                    let acc = i32::try_from(acc).expect("fits i32 at these depths");
                    (multiply_by_quantized_multiplier(acc, mj, sj) - 5).clamp(-128, 127) as i8
                })
                .collect();
            prop_assert_eq!(out, q, "requant fixed point per column {}", what);
            // ONNX QLinearMatMul: a scale per row of A and per column of B, the multiplier
            // rounded to the scales' type after each operation (here computed in f32, and in f16
            // through f32, whose double rounding is innocuous), the zero point added before
            // rounding.
            for precision in [ScaleType::F32, ScaleType::F16] {
                let to_p = |v: f32| match precision {
                    ScaleType::F16 => f16::from_f32(v).to_f32(),
                    _ => v,
                };
                let a_scale: Vec<f32> = (0..m).map(|i| to_p(0.01 + i as f32 * 0.003)).collect();
                let b_scale: Vec<f32> = scale_b.iter().map(|&v| to_p(v)).collect();
                let y_scale = to_p(0.37);
                let mut out = vec![0u8; m * n];
                let r = Requant::QLinear { a_scale: &a_scale, b_scale: &b_scale, y_scale, zero_point: 7, precision };
                g.requant(&ops, r, MatMut::row_major(&mut out, m, n).expect("view")).expect("runs");
                let q: Vec<u8> = want
                    .iter()
                    .enumerate()
                    .map(|(x, &acc)| {
                        let mult = to_p(to_p(a_scale[x / n] * b_scale[x % n]) / y_scale);
                        (acc as f64 * f64::from(mult) + 7.0).round_ties_even().clamp(0.0, 255.0) as u8
                    })
                    .collect();
                prop_assert_eq!(out, q, "requant qlinear {:?} {}", precision, what);
            }
        }
    }
    Ok(())
}

/// Per-column scales, multipliers and a Q31 multiplier with its shift for `n` columns.
fn stage_parameters(n: usize) -> impl Strategy<Value = (Vec<f32>, Vec<f32>, (i32, i32))> {
    (
        proptest::collection::vec(1e-3f32..1e-1, n),
        proptest::collection::vec(1e-5f32..1e-2, n),
        ((1i32 << 30)..i32::MAX, -20i32..=0),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_stage_matches_the_reference_u8(
        (c, (sb, mult, fixed)) in case(0, 255, -128, 127).prop_flat_map(|c| { let n = c.n; (Just(c), stage_parameters(n)) })
    ) {
        check::<u8>(&c, &sb, &mult, fixed)?;
    }

    #[test]
    fn every_stage_matches_the_reference_i8(
        (c, (sb, mult, fixed)) in case(-128, 127, -128, 127).prop_flat_map(|c| { let n = c.n; (Just(c), stage_parameters(n)) })
    ) {
        check::<i8>(&c, &sb, &mult, fixed)?;
    }
}

/// TFLite's `QuantizeMultiplier` on chosen values: powers of two at the shift limits, the
/// carry of a `q` that rounds up to `2^31`, a tie (rounded away from zero, as `std::round`),
/// saturation, and the refused inputs.
#[test]
fn quantize_multiplier_matches_tflite_on_chosen_values() {
    use quant_matmul::{quantize_multiplier, QuantError};
    let two = |k: i32| 2f64.powi(k);
    let cases = [
        (0.0, (0, 0)),
        (0.5, (1 << 30, 0)),
        (1.0, (1 << 30, 1)),
        (0.75, (1_610_612_736, 0)),
        (3.0, (1_610_612_736, 2)),
        (two(-31), (1 << 30, -30)),
        (two(-32), (1 << 30, -31)),
        (two(-33), (0, 0)),
        // Just under 2^-32: q rounds up to 2^31, so the shift becomes -31 and stays in range.
        (two(-32) * (1.0 - two(-40)), (1 << 30, -31)),
        // q · 2^31 = 2^30 + 0.5 exactly: away from zero gives 2^30 + 1 (ties-to-even would not).
        ((two(30) + 0.5) * two(-31), ((1 << 30) + 1, 0)),
        (two(29), (1 << 30, 30)),
        (two(30), (i32::MAX, 30)),
        (1e300, (i32::MAX, 30)),
        (f64::MIN_POSITIVE / 4.0, (0, 0)),
    ];
    for (real, want) in cases {
        assert_eq!(quantize_multiplier(real), Ok(want), "{real:e}");
    }
    for bad in [-1.0, (-0.0f64).next_down(), f64::NAN, f64::INFINITY] {
        assert!(matches!(quantize_multiplier(bad), Err(QuantError::InvalidScale { .. })), "{bad}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// For every multiplier in TFLite's range, the Q31 pair passes `check_fixed_point`, is within
    /// half a Q31 step of the real multiplier, and requantizes any `i32` sum to within one of
    /// `acc · real` (the fixed-point path rounds twice).
    #[test]
    fn quantize_multiplier_is_within_half_a_q31_step(e in -31.0..30.0f64, acc in any::<i32>()) {
        let real = 2f64.powf(e);
        let (m, shift) = quant_matmul::quantize_multiplier(real).expect("in range");
        prop_assert!(quant_matmul::check_fixed_point(m, shift).is_ok(), "{real:e}: {m}, {shift}");
        let back = f64::from(m) * 2f64.powi(shift - 31);
        prop_assert!((back - real).abs() <= 2f64.powi(shift - 32), "{real:e}: {m} * 2^({shift} - 31) = {back:e}");
        let exact = f64::from(acc) * real;
        if exact.abs() < 2f64.powi(30) && shift <= 0 {
            let got = f64::from(multiply_by_quantized_multiplier(acc, m, shift));
            prop_assert!((got - exact).abs() <= 1.0, "{acc} * {real:e}: {got} against {exact}");
        }
    }
}

/// Per-column fixed-point parameters: the wrong count and any column's pair out of range are
/// refused before anything is written.
#[test]
fn per_column_fixed_point_parameters_are_checked() {
    use quant_matmul::{Gemm, QuantError};
    let (a, b) = ([1u8, 2, 3, 4], [1i8, -1, 2, 0]);
    let ops = Operands::new(
        MatRef::row_major(&a, 2, 2).expect("view"),
        ZeroPoint::None,
        MatRef::row_major(&b, 2, 2).expect("view"),
        ZeroPoint::None,
    )
    .expect("operands");
    let g = Gemm::new();
    let run = |ms: &[i32], ss: &[i32]| {
        let mut c = [7i8; 4];
        let r = Requant::FixedPointPerColumn { multipliers: ms, shifts: ss, zero_point: 0 };
        (g.requant(&ops, r, MatMut::row_major(&mut c, 2, 2).expect("view")), c)
    };
    let good = 1 << 30;
    assert!(matches!(run(&[good], &[0, 0]).0, Err(QuantError::LengthMismatch { .. })));
    assert!(matches!(run(&[good, good], &[0]).0, Err(QuantError::LengthMismatch { .. })));
    let (got, c) = run(&[good, 5], &[0, 0]);
    assert_eq!(got, Err(QuantError::InvalidFixedPoint { multiplier: 5, shift: 0 }));
    assert_eq!(c, [7; 4], "nothing written");
    assert_eq!(run(&[good, good], &[0, 31]).0, Err(QuantError::InvalidFixedPoint { multiplier: good, shift: 31 }));
    // In range: column 0 halves (ties towards +inf: 2.5 -> 3, 5.5 -> 6), column 1 doubles.
    // A·B = [[5, -1], [11, -3]].
    let (got, c) = run(&[good, good], &[0, 2]);
    assert_eq!((got, c), (Ok(()), [3, -2, 6, -6]));
}

/// `u8` weights (ONNX `MatMulInteger` / `QLinearMatMul` with `u8 x u8`): packed once with
/// `pack_b_u8`, any `u8` zero point form, equal to the reference on every tier.
fn check_u8_weights<A: Operand>(c: &Case) -> Result<(), TestCaseError> {
    let a: Vec<A> = c.a.iter().map(|&v| A::narrow(i64::from(v))).collect();
    let b: Vec<u8> = c.b.iter().map(|&v| u8::try_from(v).expect("u8 range")).collect();
    let av = MatRef::new(&a, c.m, c.k, c.k + c.pad_a).expect("view");
    let bv = MatRef::new(&b, c.k, c.n, c.n + c.pad_b).expect("view");
    let want = c.reference();
    for g in settings() {
        let packed = g.pack_b_u8(bv).expect("packs");
        prop_assert!(packed.is_u8());
        let ops = Operands::packed(av, c.za.view(), &packed, c.zb.view()).expect("operands");
        let mut out = vec![0i32; c.m * c.n];
        g.i32(&ops, MatMut::row_major(&mut out, c.m, c.n).expect("view")).expect("runs");
        prop_assert_eq!(out.iter().map(|&v| i64::from(v)).collect::<Vec<_>>(), want.clone(), "{:?}", g);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn u8_weights_match_the_reference_u8(c in case(0, 255, 0, 255)) { check_u8_weights::<u8>(&c)?; }

    #[test]
    fn u8_weights_match_the_reference_i8(c in case(-128, 127, 0, 255)) { check_u8_weights::<i8>(&c)?; }
}

/// `u8` weights take `u8` zero points: 255 is accepted, -1 and 256 are refused naming `u8`.
#[test]
fn u8_weights_take_u8_zero_points() {
    use quant_matmul::{Gemm, QuantError};
    let (a, b) = ([1u8, 2], [200u8, 255]);
    let packed = Gemm::new().pack_b_u8(MatRef::row_major(&b, 2, 1).expect("view")).expect("packs");
    let av = MatRef::row_major(&a, 1, 2).expect("view");
    let ops = Operands::packed(av, ZeroPoint::None, &packed, ZeroPoint::PerTensor(255)).expect("a u8 zero point");
    let mut c = [0i32; 1];
    Gemm::new().i32(&ops, MatMut::row_major(&mut c, 1, 1).expect("view")).expect("runs");
    // (A - 0)·(B - 255) = 1 · (200 - 255) + 2 · (255 - 255).
    assert_eq!(c[0], -55);
    for bad in [-1, 256] {
        let err = Operands::packed(av, ZeroPoint::None, &packed, ZeroPoint::PerTensor(bad)).map(|_| ());
        assert!(matches!(err, Err(QuantError::ZeroPointOutOfRange { operand: "u8", .. })), "{bad}: {err:?}");
    }
}
