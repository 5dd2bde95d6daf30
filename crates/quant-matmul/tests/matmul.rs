//! quantized_matmul: the seed example, exactness against a naive i128 reference on random
//! shapes and widths 2..=32, the accumulator boundaries, and bad input.

use quant_core::quantize_symmetric;
use quant_matmul::{matmul_exact, quantized_matmul, quantized_matmul_flat, Accumulator, GemmShape, QuantError};
use quant_testkit::Rng;
use quant_traits::half::{bf16, f16};
use quant_traits::QuantFloat;
use rstest::rstest;

type Res = Result<(), QuantError>;

/// The naive reference: i-j-k triple loop in i128 (exact for any depth below 2^65).
fn reference(a: &[i32], b: &[i32], m: usize, k: usize, n: usize) -> Vec<i128> {
    let mut c = vec![0i128; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| i128::from(a[i * k + p]) * i128::from(b[p * n + j])).sum();
        }
    }
    c
}

fn rows(flat: &[i32], cols: usize) -> Vec<Vec<i32>> {
    flat.chunks(cols).map(<[i32]>::to_vec).collect()
}

#[test]
fn seed_matmul_example() -> Res {
    let a = [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = [7.0f64, 8.0, 9.0, 10.0, 11.0, 12.0];
    let (aq, sa) = quantize_symmetric(&a, 8)?;
    let (bq, sb) = quantize_symmetric(&b, 8)?;
    // Codes: A = round([1..6] * 127/6), B = round([7..12] * 127/12).
    assert_eq!(aq, [21, 42, 64, 85, 106, 127]);
    assert_eq!(bq, [74, 85, 95, 106, 116, 127]);
    let c = quantized_matmul(&rows(&aq, 3), &rows(&bq, 2), sa, sb)?;
    // Integer product [[12968, 14365], [31092, 34590]] times (6/127) * (12/127); Python's
    // integer arithmetic gives the same codes, product and floats
    // ([[57.88926777853555, 64.12548825097649], [138.79496558993117, 154.4100688201376]]).
    let s = sa * sb;
    assert_eq!(c, [vec![12968.0 * s, 14365.0 * s], vec![31092.0 * s, 34590.0 * s]]);
    assert_eq!(c[1][1], 154.4100688201376);
    let exact = [[58.0, 64.0], [139.0, 154.0]];
    for i in 0..2 {
        for j in 0..2 {
            let rel = (c[i][j] - exact[i][j]).abs() / exact[i][j];
            assert!(rel < 0.005, "c[{i}][{j}] = {} vs {}", c[i][j], exact[i][j]);
        }
    }
    Ok(())
}

/// Random shapes (0 and 1 included), random widths, random magnitudes up to the width's
/// extremes: the exact engine equals the naive i128 reference, element for element.
#[test]
fn exact_matches_naive_reference_on_random_shapes() -> Res {
    let mut rng = Rng::new(7);
    let mut seen = [false; 3];
    for _ in 0..600 {
        let (m, k, n) = (rng.dim(9), rng.dim(40), rng.dim(9));
        let bits = rng.bits();
        let (lo, hi) = (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1);
        // Half the cases use only the extremes, which is where overflow would show.
        let extreme = rng.index(2) == 0;
        let draw = |rng: &mut Rng| {
            let v = if extreme {
                if rng.index(2) == 0 {
                    lo
                } else {
                    hi
                }
            } else {
                rng.int(lo, hi)
            };
            i32::try_from(v).expect("code fits i32")
        };
        let a: Vec<i32> = (0..m * k).map(|_| draw(&mut rng)).collect();
        let b: Vec<i32> = (0..k * n).map(|_| draw(&mut rng)).collect();
        let max = |x: &[i32]| x.iter().map(|v| u64::from(v.unsigned_abs())).max().unwrap_or(0);
        seen[Accumulator::for_operands(max(&a), max(&b), k) as usize] = true;
        let got = matmul_exact(&a, &b, GemmShape::new(m, k, n))?;
        assert_eq!(got, reference(&a, &b, m, k, n), "{m}x{k}x{n} at {bits} bits");
    }
    assert_eq!(seen, [true; 3], "every accumulator width was exercised");
    Ok(())
}

#[rstest]
// 8-bit extremes: -128 * -128 * k. At k = 131_071 the sum is 2^31 - 16384 (fits i32);
// at 131_072 it is 2^31, one past i32::MAX: the i64 path must take over.
#[case(-128, 131_071)]
#[case(-128, 131_072)]
#[case(-32768, 3)] // 16-bit: 3 * 2^30 > i32::MAX
#[case(i32::MIN, 2)] // 2 * 2^62 = 2^63 > i64::MAX
#[case(i32::MIN, 1000)]
fn depth_that_would_overflow_a_narrow_accumulator(#[case] v: i32, #[case] k: usize) -> Res {
    let a = vec![v; k];
    let b = vec![v; k];
    let c = matmul_exact(&a, &b, GemmShape::new(1, k, 1))?;
    assert_eq!(c, [i128::from(v) * i128::from(v) * k as i128]);
    Ok(())
}

#[test]
fn mixed_signs_at_the_extremes_cancel_exactly() -> Res {
    // (MIN * MIN) + (MAX * -MAX) ... exact value, no intermediate loss.
    let a = [i32::MIN, i32::MAX, i32::MIN];
    let b = [i32::MIN, -i32::MAX, i32::MAX];
    let c = matmul_exact(&a, &b, GemmShape::new(1, 3, 1))?;
    let want =
        (1i128 << 62) - (i128::from(i32::MAX) * i128::from(i32::MAX)) + i128::from(i32::MIN) * i128::from(i32::MAX);
    assert_eq!(c, [want]);
    Ok(())
}

/// The float result is the exact integer sum rounded to f64, times scale_a * scale_b, rounded
/// once to F.
#[rstest]
fn rescale_rounds_once_into_each_float_type<F: QuantFloat>(
    #[values(0.0f32, 0.0f64, f16::ZERO, bf16::ZERO)] _ty: F,
) -> Res {
    let mut rng = Rng::new(99);
    for _ in 0..200 {
        let (m, k, n) = (rng.dim(5), rng.dim(8), rng.dim(5));
        let a: Vec<i32> = (0..m * k).map(|_| rng.int(-128, 127) as i32).collect();
        let b: Vec<i32> = (0..k * n).map(|_| rng.int(-128, 127) as i32).collect();
        let sa = F::from_f64_nearest(rng.uniform(1e-3, 1e-2));
        let sb = F::from_f64_nearest(rng.uniform(1e-3, 1e-2));
        let c = quantized_matmul_flat(&a, &b, GemmShape::new(m, k, n), sa, sb)?;
        let s = sa.to_f64_exact() * sb.to_f64_exact();
        let want: Vec<F> = reference(&a, &b, m, k, n).iter().map(|&v| F::from_f64_nearest(v as f64 * s)).collect();
        assert_eq!(c, want, "{}", F::NAME);
        // The nested API (8-bit codes: straight into the engine and back into rows).
        if k == 0 || n == 0 {
            continue;
        }
        let nested = quantized_matmul(&rows(&a, k), &rows(&b, n), sa, sb)?;
        assert_eq!(nested.concat(), want, "{}", F::NAME);
        assert_eq!(nested.len(), m);
    }
    Ok(())
}

#[test]
fn scale_product_underflow_falls_back_to_two_steps() -> Res {
    // 1e-160 * 1e-160 = 1e-320 is subnormal in f64 (a few bits of precision); the result
    // 2^63 * 1e-320 ~ 9.2e-302 is an ordinary f64, which scaling one factor at a time keeps.
    let (sa, sb) = (1e-160f64, 1e-160f64);
    let a = [i32::MIN, i32::MIN];
    let c = quantized_matmul_flat(&a, &a, GemmShape::new(1, 2, 1), sa, sb)?;
    let acc = 2f64.powi(63);
    assert_eq!(c, [acc * sa * sb]);
    assert_ne!(c[0], acc * (sa * sb), "the one-step product would have lost precision");
    Ok(())
}

#[test]
fn zero_sum_with_overflowing_scale_product_is_zero_not_nan() -> Res {
    // 1e200 * 1e200 overflows to inf; 0 * inf would be NaN.
    let c = quantized_matmul_flat(&[1, -1], &[1, 1], GemmShape::new(1, 2, 1), 1e200f64, 1e200f64)?;
    assert_eq!(c, [0.0]);
    Ok(())
}

#[test]
fn results_beyond_the_float_range_are_errors() {
    let err = quantized_matmul(&[vec![1000, 1000]], &[vec![1000], vec![1000]], f16::from_f32(1.0), f16::from_f32(1.0));
    assert_eq!(err, Err(QuantError::OutputOverflow { row: 0, col: 0, value: 2e6, float: "f16" }));
}

/// 8-bit codes go through the engine (rows converted in parallel): an overflow is still
/// reported at the first element in row order.
#[test]
fn eight_bit_overflow_names_the_first_element_in_row_order() {
    // 127 * 127 * 5 = 80 645 > f16::MAX; rows 0 and 3 stay small, rows 1.. overflow in column 1.
    let k = 5;
    let mut a = vec![vec![1; k]; 40];
    for row in a.iter_mut().skip(1).take(38) {
        row.fill(127);
    }
    let b: Vec<Vec<i32>> = (0..k).map(|_| vec![1, 127]).collect();
    let err = quantized_matmul(&a, &b, f16::from_f32(1.0), f16::from_f32(1.0));
    assert_eq!(err, Err(QuantError::OutputOverflow { row: 1, col: 1, value: 80_645.0, float: "f16" }));
}

/// More rows than one engine block (256 per thread), in every float type and both APIs: the
/// blocks land in order, and a code wider than `i8` in the last block still gives the exact
/// result (the engine's earlier blocks are dropped).
#[rstest]
fn results_span_several_engine_blocks<F: QuantFloat>(
    #[values(0.0f32, 0.0f64, f16::ZERO, bf16::ZERO)] _ty: F,
    #[values(false, true)] wide_last: bool,
) -> Res {
    let mut rng = Rng::new(7);
    let (m, k, n) = (1100, 9, 5);
    let mut a: Vec<i32> = (0..m * k).map(|_| rng.int(-128, 127) as i32).collect();
    if wide_last {
        a[(m - 1) * k] = 1000;
    }
    let b: Vec<i32> = (0..k * n).map(|_| rng.int(-128, 127) as i32).collect();
    let (sa, sb) = (F::from_f64_nearest(1.0 / 64.0), F::from_f64_nearest(1.0 / 128.0));
    let s = sa.to_f64_exact() * sb.to_f64_exact();
    let want: Vec<F> = reference(&a, &b, m, k, n).iter().map(|&v| F::from_f64_nearest(v as f64 * s)).collect();
    assert_eq!(quantized_matmul_flat(&a, &b, GemmShape::new(m, k, n), sa, sb)?, want, "{}", F::NAME);
    let nested = quantized_matmul(&rows(&a, k), &rows(&b, n), sa, sb)?;
    assert_eq!(nested.len(), m);
    assert_eq!(nested.concat(), want, "{}", F::NAME);
    Ok(())
}

/// An `f32` overflow in a later engine block (the flat API takes the engine's results in
/// place, the nested one converts them into rows) names its element.
#[test]
fn f32_overflow_in_a_later_block_names_the_element() {
    let (m, k, n) = (700, 3, 4);
    let mut a = vec![1i32; m * k];
    a[(613 * k)..(614 * k)].fill(127);
    let b = vec![127i32; k * n];
    // 127 * 127 * 3 * 1e34 = 4.8e38 > f32::MAX; the other rows give 381e34.
    let (sa, sb) = (1e30f32, 1e4f32);
    let value = 48_387.0 * f64::from(sa) * f64::from(sb);
    let want = QuantError::OutputOverflow { row: 613, col: 0, value, float: "f32" };
    assert_eq!(quantized_matmul_flat(&a, &b, GemmShape::new(m, k, n), sa, sb), Err(want.clone()));
    assert_eq!(quantized_matmul(&rows(&a, k), &rows(&b, n), sa, sb), Err(want));
}

#[rstest]
#[case(0.0)]
#[case(-1.0)]
#[case(f64::NAN)]
#[case(f64::INFINITY)]
fn bad_scales(#[case] s: f64) {
    let r = quantized_matmul(&[vec![1]], &[vec![1]], s, 1.0);
    assert!(matches!(r, Err(QuantError::InvalidScale { .. })), "{r:?}");
    let r = quantized_matmul(&[vec![1]], &[vec![1]], 1.0, s);
    assert!(matches!(r, Err(QuantError::InvalidScale { .. })), "{r:?}");
}

#[test]
fn inner_dimensions_must_agree() {
    let a = vec![vec![1, 2, 3], vec![4, 5, 6]];
    let b = vec![vec![1, 2], vec![3, 4]];
    let err = quantized_matmul(&a, &b, 1.0f32, 1.0).expect_err("2x3 times 2x2");
    assert_eq!(err, QuantError::InnerDimensionMismatch { a_rows: 2, a_cols: 3, b_rows: 2, b_cols: 2 });
    assert_eq!(
        err.to_string(),
        "matrix shapes clash: A is 2x3 and B is 2x2, but A's column count must equal B's row count"
    );
}

#[test]
fn ragged_operands_are_named() {
    let ragged = vec![vec![1, 2], vec![3]];
    let ok = vec![vec![1], vec![2]];
    assert_eq!(
        quantized_matmul(&ragged, &ok, 1.0f32, 1.0),
        Err(QuantError::RaggedMatrix { matrix: "A", row: 1, expected: 2, found: 1 })
    );
    assert_eq!(
        quantized_matmul(&ok, &ragged, 1.0f32, 1.0),
        Err(QuantError::RaggedMatrix { matrix: "B", row: 1, expected: 2, found: 1 })
    );
}

#[test]
fn empty_operands() -> Res {
    assert_eq!(quantized_matmul::<f32>(&[], &[vec![1, 2]], 1.0, 1.0)?, Vec::<Vec<f32>>::new());
    assert_eq!(quantized_matmul::<f32>(&[vec![], vec![]], &[], 1.0, 1.0)?, vec![Vec::<f32>::new(); 2]);
    assert_eq!(quantized_matmul_flat::<f32>(&[], &[], GemmShape::new(2, 0, 2), 1.0, 1.0)?, [0.0; 4]);
    Ok(())
}
