//! The engine against a naive reference on chosen cases: beyond every block size, depths
//! around the AMX blocks and the `i32` chunk bound, 4-bit weights, each output stage's
//! conventions, bad input, the tier and layout rules. Arbitrary shapes, strides, zero points
//! and values through every stage are the property tests' (`gemm_properties.rs`).
//!
//! The tiers: with `QUANT_KERNEL` set (`cargo xtask test` runs the suite once per tier this
//! CPU has), the portable reference and that tier; unset, every tier this CPU has. A tier this
//! CPU lacks is reported (and its refusal tested) by `tiers_this_cpu_lacks_are_refused`.

use quant_matmul::{
    multiply_by_quantized_multiplier, rounding_divide_by_pot, selected_kernel, Gemm, KernelChoice, MatMut, MatRef,
    Operand, Operands, PackedB, QuantError, Requant, Scale, ScaleType, Tier, ZeroPoint,
};
use quant_testkit::Rng;

mod common;
use common::settings;
use quant_traits::{I4x2, Storage};
use rstest::rstest;

type Res = Result<(), QuantError>;

/// A matrix with a row stride of at least `cols` and the data to back it.
struct Strided<T> {
    data: Vec<T>,
    rows: usize,
    cols: usize,
    stride: usize,
}

impl<T: Operand> Strided<T> {
    fn random(rng: &mut Rng, rows: usize, cols: usize, fill: Fill) -> Self {
        let stride = cols + if rng.index(3) == 0 { rng.index(5) } else { 0 };
        let len = if rows == 0 { 0 } else { (rows - 1) * stride + cols };
        let data = (0..len)
            .map(|_| {
                let v = match fill {
                    Fill::Random => rng.int(i64::from(T::MIN), i64::from(T::MAX)),
                    Fill::Min => i64::from(T::MIN),
                    Fill::Max => i64::from(T::MAX),
                    Fill::Extremes => {
                        if rng.index(2) == 0 {
                            i64::from(T::MIN)
                        } else {
                            i64::from(T::MAX)
                        }
                    }
                };
                T::narrow(v)
            })
            .collect();
        Strided { data, rows, cols, stride }
    }

    fn view(&self) -> MatRef<'_, T> {
        MatRef::new(&self.data, self.rows, self.cols, self.stride).expect("valid view")
    }

    fn at(&self, r: usize, c: usize) -> i64 {
        i64::from(self.data[r * self.stride + c].widen())
    }
}

#[derive(Copy, Clone, Debug)]
enum Fill {
    Random,
    Min,
    Max,
    Extremes,
}

fn zero_points<T: Operand>(rng: &mut Rng, n: usize) -> (Option<i32>, Vec<i32>) {
    let z = |rng: &mut Rng| i32::try_from(rng.int(i64::from(T::MIN), i64::from(T::MAX))).expect("fits");
    match rng.index(3) {
        0 => (None, vec![]),
        1 => (Some(z(rng)), vec![]),
        _ => (None, (0..n).map(|_| z(rng)).collect()),
    }
}

fn zp<'a>(t: Option<i32>, per: &'a [i32]) -> ZeroPoint<'a> {
    match (t, per.is_empty()) {
        (Some(z), _) => ZeroPoint::PerTensor(z),
        (None, true) => ZeroPoint::None,
        (None, false) => ZeroPoint::PerChannel(per),
    }
}

/// Naive reference: (A - za)(B - zb) in i64.
fn reference<A: Operand>(a: &Strided<A>, za: &ZeroPoint, b: &Strided<i8>, zb: &ZeroPoint) -> Vec<i64> {
    let get = |z: &ZeroPoint, i: usize| -> i64 {
        match *z {
            ZeroPoint::None => 0,
            ZeroPoint::PerTensor(v) => i64::from(v),
            ZeroPoint::PerChannel(v) => i64::from(v[i]),
        }
    };
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let mut c = vec![0i64; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| (a.at(i, p) - get(za, i)) * (b.at(p, j) - get(zb, j))).sum();
        }
    }
    c
}

fn name(g: &Gemm) -> String {
    format!("{:?} ({:?})", g.kernel_name(), g)
}

/// Depths around the AMX kernel's blocks of 64 (whole blocks, a block and a tail, a tail
/// alone) by rows around its tiles of 16 and 32, every tier, `u8` and `i8`, every fill.
#[test]
fn depths_around_the_tile_blocks() -> Res {
    let mut rng = Rng::new(7);
    let depths = [1, 60, 63, 64, 65, 68, 127, 128, 129, 192, 255, 256, 257, 1027];
    let rows = [1, 2, 15, 16, 17, 31, 32, 33, 48, 65];
    let cols = [1, 16, 31, 32, 33, 70];
    for &k in &depths {
        for _ in 0..3 {
            let (m, n) = (rows[rng.index(rows.len())], cols[rng.index(cols.len())]);
            let fill = [Fill::Min, Fill::Max, Fill::Extremes, Fill::Random][rng.index(4)];
            if rng.index(2) == 0 {
                fixed_case::<u8>(&mut rng, m, k, n, fill)?;
            } else {
                fixed_case::<i8>(&mut rng, m, k, n, fill)?;
            }
        }
    }
    Ok(())
}

/// One `m x k x n` product with random zero points, raw and packed B, against the reference.
fn fixed_case<A: Operand>(rng: &mut Rng, m: usize, k: usize, n: usize, fill: Fill) -> Res {
    let a = Strided::<A>::random(rng, m, k, fill);
    let b = Strided::<i8>::random(rng, k, n, fill);
    let (zat, zap) = zero_points::<A>(rng, m);
    let (zbt, zbp) = zero_points::<i8>(rng, n);
    let (za, zb) = (zp(zat, &zap), zp(zbt, &zbp));
    let want = reference(&a, &za, &b, &zb);
    for g in settings() {
        let packed = g.pack_b(b.view())?;
        let raw_ops = Operands::new(a.view(), za, b.view(), zb)?;
        let packed_ops = Operands::packed(a.view(), za, &packed, zb)?;
        for (ops, how) in [(raw_ops, "raw B"), (packed_ops, "packed B")] {
            let mut c = vec![0i32; m * n];
            g.i32(&ops, MatMut::row_major(&mut c, m, n)?)?;
            let c64: Vec<i64> = c.iter().map(|&v| i64::from(v)).collect();
            assert_eq!(c64, want, "{m}x{k}x{n} {} {how} {} {:?} {:?} {:?}", name(&g), A::NAME, fill, za, zb);
        }
    }
    Ok(())
}

/// Depths around the portable kernel's depth blocks (1 024 values: the sums of earlier blocks
/// wait in C, in an `f32` output's words as `i32`), every zero-point form on both sides, the
/// `i32` and the `f32` stage (per-column scales and a bias), raw and packed B, every tier and
/// thread count.
#[test]
fn depth_blocks_with_every_zero_point_and_stage() -> Res {
    let mut rng = Rng::new(23);
    for (k, m, n) in [(1023, 5, 17), (1024, 13, 33), (1025, 33, 70), (2049, 7, 40), (3100, 3, 16)] {
        for forms in 0..9 {
            let a = Strided::<u8>::random(&mut rng, m, k, Fill::Random);
            let b = Strided::<i8>::random(&mut rng, k, n, Fill::Random);
            let pick = |form: usize, count: usize, rng: &mut Rng, lo: i64, hi: i64| -> (Option<i32>, Vec<i32>) {
                let z = |rng: &mut Rng| i32::try_from(rng.int(lo, hi)).expect("fits");
                match form {
                    0 => (None, vec![]),
                    1 => (Some(z(rng)), vec![]),
                    _ => (None, (0..count).map(|_| z(rng)).collect()),
                }
            };
            let (zat, zap) = pick(forms / 3, m, &mut rng, 0, 255);
            let (zbt, zbp) = pick(forms % 3, n, &mut rng, -128, 127);
            let (za, zb) = (zp(zat, &zap), zp(zbt, &zbp));
            let want = reference(&a, &za, &b, &zb);
            let sb: Vec<f32> = (0..n).map(|_| rng.uniform(1e-3, 1e-1) as f32).collect();
            let bias: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
            let sa = 0.0375f32;
            let want_f: Vec<f32> = want
                .iter()
                .enumerate()
                .map(|(idx, &acc)| {
                    (acc as f64 * (f64::from(sa) * f64::from(sb[idx % n])) + f64::from(bias[idx % n])) as f32
                })
                .collect();
            for g in settings() {
                let packed = g.pack_b(b.view())?;
                let raw = Operands::new(a.view(), za, b.view(), zb)?;
                let pre = Operands::packed(a.view(), za, &packed, zb)?;
                for (ops, how) in [(raw, "raw B"), (pre, "packed B")] {
                    let what = format!("{m}x{k}x{n} {} {how} {za:?} {zb:?}", name(&g));
                    let mut c = vec![0i32; m * n];
                    g.i32(&ops, MatMut::row_major(&mut c, m, n)?)?;
                    assert!(c.iter().zip(&want).all(|(x, y)| i64::from(*x) == *y), "i32 {what}");
                    let mut cf = vec![0f32; m * n];
                    g.f32(&ops, sa, Scale::PerColumn(&sb), Some(&bias), MatMut::row_major(&mut cf, m, n)?)?;
                    assert!(cf.iter().zip(&want_f).all(|(x, y)| x.to_bits() == y.to_bits()), "f32 {what}");
                }
            }
        }
    }
    Ok(())
}

/// 4-bit weights unpacked while packing give the same product as the same codes in i8.
#[test]
fn int4_weights_match_their_i8_codes() -> Res {
    let mut rng = Rng::new(4);
    for _ in 0..40 {
        let (m, k, n) = (1 + rng.index(9), 1 + rng.index(40), 1 + rng.index(40));
        let codes: Vec<i64> = (0..k * n).map(|_| rng.int(-8, 7)).collect();
        let nibbles: Vec<I4x2> = codes.chunks(2).map(I4x2::pack).collect();
        let b8: Vec<i8> = codes.iter().map(|&c| i8::try_from(c).expect("fits")).collect();
        let a = Strided::<u8>::random(&mut rng, m, k, Fill::Random);
        let b = Strided { data: b8, rows: k, cols: n, stride: n };
        let want = reference(&a, &ZeroPoint::PerTensor(3), &b, &ZeroPoint::None);
        for g in settings() {
            let packed = g.pack_b_i4(&nibbles, k, n)?;
            assert_eq!(packed, g.pack_b(b.view())?);
            let ops = Operands::packed(a.view(), ZeroPoint::PerTensor(3), &packed, ZeroPoint::None)?;
            let mut c = vec![0i32; m * n];
            g.i32(&ops, MatMut::row_major(&mut c, m, n)?)?;
            assert!(c.iter().zip(&want).all(|(x, y)| i64::from(*x) == *y), "{}", name(&g));
        }
    }
    assert_eq!(
        PackedB::from_i4(&[I4x2(0); 2], 3, 3),
        Err(QuantError::LengthMismatch { what: "int4 codes (bytes)", expected: 5, found: 2 })
    );
    Ok(())
}

/// Larger than every block (MC = 48 rows, NC = 256 columns), with odd sizes.
#[rstest]
#[case(97, 301, 517)]
#[case(50, 2, 260)]
#[case(1, 1000, 300)]
fn beyond_the_block_sizes(#[case] m: usize, #[case] k: usize, #[case] n: usize) -> Res {
    let mut rng = Rng::new((m * 31 + k * 7 + n) as u64);
    let a = Strided::<u8>::random(&mut rng, m, k, Fill::Random);
    let b = Strided::<i8>::random(&mut rng, k, n, Fill::Random);
    let zap: Vec<i32> = (0..m).map(|i| (i % 256) as i32).collect();
    let zbp: Vec<i32> = (0..n).map(|j| (j % 256) as i32 - 128).collect();
    let (za, zb) = (ZeroPoint::PerChannel(&zap), ZeroPoint::PerChannel(&zbp));
    let want = reference(&a, &za, &b, &zb);
    for g in settings() {
        let packed = g.pack_b(b.view())?;
        // Raw weights split the columns between threads; packed ones (with enough rows) the rows.
        let raw = Operands::new(a.view(), za, b.view(), zb)?;
        let pre = Operands::packed(a.view(), za, &packed, zb)?;
        for ops in [raw, pre] {
            let mut c = vec![0i32; m * n];
            g.i32(&ops, MatMut::row_major(&mut c, m, n)?)?;
            assert!(c.iter().zip(&want).all(|(x, y)| i64::from(*x) == *y), "{}", name(&g));
        }
    }
    Ok(())
}

/// u8 x i8 extremes: 255 * -128 per product; at K = 70 000 the raw sum is -2.28e9, beyond
/// i32, so the engine must chunk the depth and sum the chunks in i64 (f32 output).
#[test]
fn depth_beyond_i32_is_chunked() -> Res {
    let k = 70_000;
    for m in [1usize, 2] {
        let a = vec![255u8; m * k];
        let b = vec![-128i8; k * 3];
        let av = MatRef::row_major(&a, m, k)?;
        for g in settings() {
            let packed = g.pack_b(MatRef::row_major(&b, k, 3)?)?;
            let raw = Operands::new(av, ZeroPoint::None, MatRef::row_major(&b, k, 3)?, ZeroPoint::None)?;
            let pre = Operands::packed(av, ZeroPoint::None, &packed, ZeroPoint::None)?;
            for ops in [raw, pre] {
                let mut c = vec![0f32; m * 3];
                g.f32(&ops, 1.0, Scale::PerTensor(1.0), None, MatMut::row_major(&mut c, m, 3)?)?;
                assert_eq!(c, vec![(255.0 * -128.0 * 70_000.0) as f32; m * 3], "{}", name(&g));
                // The same depth cannot promise an i32 result.
                let mut ci = vec![0i32; m * 3];
                assert_eq!(
                    g.i32(&ops, MatMut::row_major(&mut ci, m, 3)?),
                    Err(QuantError::DepthTooLarge { k, max_k: 65_793 })
                );
            }
        }
    }
    Ok(())
}

#[test]
fn f32_stage_scales_per_column_and_adds_bias() -> Res {
    let mut rng = Rng::new(11);
    for _ in 0..40 {
        let (m, k, n) = (1 + rng.index(20), 1 + rng.index(50), 1 + rng.index(40));
        let a = Strided::<u8>::random(&mut rng, m, k, Fill::Random);
        let b = Strided::<i8>::random(&mut rng, k, n, Fill::Random);
        let za = ZeroPoint::PerTensor(i32::try_from(rng.int(0, 255)).expect("fits"));
        let ops = Operands::new(a.view(), za, b.view(), ZeroPoint::None)?;
        let sb: Vec<f32> = (0..n).map(|_| rng.uniform(1e-3, 1e-1) as f32).collect();
        let bias: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        let sa = rng.uniform(1e-3, 1e-1) as f32;
        let want: Vec<f32> = reference(&a, &za, &b, &ZeroPoint::None)
            .iter()
            .enumerate()
            .map(|(idx, &acc)| {
                let j = idx % n;
                (acc as f64 * (f64::from(sa) * f64::from(sb[j])) + f64::from(bias[j])) as f32
            })
            .collect();
        for g in settings() {
            let mut c = vec![0f32; m * n];
            g.f32(&ops, sa, Scale::PerColumn(&sb), Some(&bias), MatMut::row_major(&mut c, m, n)?)?;
            assert_eq!(c, want, "{}", name(&g));
        }
    }
    Ok(())
}

#[test]
fn requantize_float_rounds_ties_to_even_and_saturates() -> Res {
    // 1 x 1 x 1: acc = a * b. Multiplier 0.5: 3 * 0.5 = 1.5 -> 2, 5 * 0.5 = 2.5 -> 2 (even).
    let cases: [(i8, i8, i32, i8); 5] =
        [(3, 1, 0, 2), (5, 1, 0, 2), (-5, 1, 0, -2), (127, 127, 0, 127), (-128, 127, 10, -128)];
    for (x, w, zp, want) in cases {
        let a = [x];
        let b = [w];
        let ops = Operands::new(
            MatRef::row_major(&a, 1, 1)?,
            ZeroPoint::None,
            MatRef::row_major(&b, 1, 1)?,
            ZeroPoint::None,
        )?;
        let mut c = [0i8; 1];
        let r = Requant::Float { multiplier: Scale::PerTensor(0.5), zero_point: zp };
        Gemm::new().requant(&ops, r, MatMut::row_major(&mut c, 1, 1)?)?;
        assert_eq!(c[0], want, "{x} * {w} * 0.5 + {zp}");
    }
    Ok(())
}

/// Float requantization on random shapes, per-column multipliers, both output types: the
/// engine equals `clamp(round_ties_even(acc * m[j]) + zp)` on the reference sums.
#[test]
fn requantize_float_matches_reference() -> Res {
    let mut rng = Rng::new(31);
    for _ in 0..40 {
        let (m, k, n) = (1 + rng.index(20), 1 + rng.index(60), 1 + rng.index(40));
        let a = Strided::<u8>::random(&mut rng, m, k, Fill::Random);
        let b = Strided::<i8>::random(&mut rng, k, n, Fill::Random);
        let za = ZeroPoint::PerTensor(i32::try_from(rng.int(0, 255)).expect("fits"));
        let ops = Operands::new(a.view(), za, b.view(), ZeroPoint::None)?;
        let mult: Vec<f32> = (0..n).map(|_| rng.uniform(1e-5, 1e-2) as f32).collect();
        let zp = i32::try_from(rng.int(-20, 20)).expect("fits");
        let acc = reference(&a, &za, &b, &ZeroPoint::None);
        let q = |j: usize, v: i64, lo: f64, hi: f64| {
            ((v as f64 * f64::from(mult[j])).round_ties_even() + f64::from(zp)).clamp(lo, hi)
        };
        let want_i8: Vec<i8> = acc.iter().enumerate().map(|(x, &v)| q(x % n, v, -128.0, 127.0) as i8).collect();
        let want_u8: Vec<u8> = acc.iter().enumerate().map(|(x, &v)| q(x % n, v, 0.0, 255.0) as u8).collect();
        let r = Requant::Float { multiplier: Scale::PerColumn(&mult), zero_point: zp };
        for g in settings() {
            let mut c8 = vec![0i8; m * n];
            g.requant(&ops, r, MatMut::row_major(&mut c8, m, n)?)?;
            assert_eq!(c8, want_i8, "{}", name(&g));
            let mut cu = vec![0u8; m * n];
            g.requant(&ops, r, MatMut::row_major(&mut cu, m, n)?)?;
            assert_eq!(cu, want_u8, "{}", name(&g));
        }
    }
    Ok(())
}

#[rstest]
// multiplier 2^30 (0.5 in Q31), shift 0: x * 0.5. SRDHM's nudge rounds ties towards +inf:
// 1.5 -> 2, -1.5 -> -1 (gemmlowp's code: (ab + 1 - 2^30) / 2^31 truncates towards zero).
#[case(3, 1 << 30, 0, 2)]
#[case(-3, 1 << 30, 0, -1)]
#[case(5, 1 << 30, 0, 3)]
#[case(4, 1 << 30, 0, 2)]
// shift -2: x * 0.5, then RoundingDivideByPOT(2) (ties away from zero): 12 -> 6 -> 1.5 -> 2,
// -12 -> -6 -> -1.5 -> -2. TFLite rounds twice: 11 -> 5.5 -> 6 -> 1.5 -> 2, where 11/8 = 1.375.
#[case(12, 1 << 30, -2, 2)]
#[case(-12, 1 << 30, -2, -2)]
#[case(11, 1 << 30, -2, 2)]
// shift +1: x * 0.5 * 2 = x.
#[case(1000, 1 << 30, 1, 1000)]
// The saturating case of SRDHM.
#[case(i32::MIN, i32::MIN, 0, i32::MAX)]
fn fixed_point_multiplier_matches_tflite(#[case] x: i32, #[case] m: i32, #[case] shift: i32, #[case] want: i32) {
    assert_eq!(multiply_by_quantized_multiplier(x, m, shift), want);
}

/// `round(x / 2^e)`, ties away from zero, exactly in `i128`.
fn divide_by_pot_reference(x: i32, e: u32) -> i32 {
    let (x, d) = (i128::from(x), 1i128 << e.min(100));
    let (q, r) = (x / d, x % d);
    let q = if 2 * r.abs() >= d { q + x.signum() } else { q };
    i32::try_from(q).expect("fits")
}

#[test]
fn rounding_divide_by_pot_is_exact_for_every_exponent() {
    let mut rng = Rng::new(31);
    let mut xs = vec![0, 1, -1, 2, -2, 3, -3, i32::MAX, i32::MIN, i32::MIN + 1, 1 << 30, -(1 << 30)];
    xs.extend((0..200).map(|_| rng.next_u64() as i32));
    for e in 0..=70u32 {
        for &x in &xs {
            assert_eq!(rounding_divide_by_pot(x, e), divide_by_pot_reference(x, e), "x {x} exponent {e}");
        }
    }
    // -2^31 / 2^32 = -0.5: ties away from zero.
    assert_eq!(rounding_divide_by_pot(i32::MIN, 32), -1);
    assert_eq!(rounding_divide_by_pot(i32::MAX, 40), 0);
}

#[test]
fn fixed_point_parameters_out_of_range_are_refused() -> Res {
    // Any shift, even far outside -31..=30, gives the saturated answer rather than an overflow.
    assert_eq!(multiply_by_quantized_multiplier(1, 1 << 30, 40), multiply_by_quantized_multiplier(1, 1 << 30, 32));
    assert_eq!(multiply_by_quantized_multiplier(1_000_000, 1 << 30, -100), 0);
    let a = [1u8, 2, 3, 4];
    let b = [1i8, 0, 0, 1];
    let ops =
        Operands::new(MatRef::row_major(&a, 2, 2)?, ZeroPoint::None, MatRef::row_major(&b, 2, 2)?, ZeroPoint::None)?;
    let mut c = [0u8; 4];
    for (multiplier, shift) in [(1 << 30, 31), (1 << 30, -32), (12345, 0), (-(1 << 30), 0)] {
        let r = Requant::FixedPoint { multiplier, shift, zero_point: 0 };
        let e = Gemm::new().requant(&ops, r, MatMut::row_major(&mut c, 2, 2)?);
        assert_eq!(e, Err(QuantError::InvalidFixedPoint { multiplier, shift }));
        assert_eq!(c, [0; 4], "nothing written");
    }
    // The edges of the contract are accepted: 0, 2^30, 2^31 - 1; shifts -31 and 30.
    for (multiplier, shift) in [(0, 0), (1 << 30, -31), (i32::MAX, 30)] {
        let r = Requant::FixedPoint { multiplier, shift, zero_point: 0 };
        Gemm::new().requant(&ops, r, MatMut::row_major(&mut c, 2, 2)?)?;
    }
    Ok(())
}

#[test]
fn requantize_fixed_point_through_the_engine() -> Res {
    let mut rng = Rng::new(21);
    let (m, k, n) = (7, 33, 19);
    let a = Strided::<u8>::random(&mut rng, m, k, Fill::Random);
    let b = Strided::<i8>::random(&mut rng, k, n, Fill::Random);
    let za = ZeroPoint::PerTensor(128);
    let ops = Operands::new(a.view(), za, b.view(), ZeroPoint::None)?;
    let (mult, shift, zp) = (1_518_500_250, -8, 3); // ~0.7071 * 2^-8
    let want: Vec<u8> = reference(&a, &za, &b, &ZeroPoint::None)
        .iter()
        .map(|&acc| {
            let q = multiply_by_quantized_multiplier(i32::try_from(acc).expect("fits"), mult, shift) + zp;
            q.clamp(0, 255) as u8
        })
        .collect();
    for g in settings() {
        let mut c = vec![0u8; m * n];
        let r = Requant::FixedPoint { multiplier: mult, shift, zero_point: zp };
        g.requant(&ops, r, MatMut::row_major(&mut c, m, n)?)?;
        assert_eq!(c, want, "{}", name(&g));
    }
    Ok(())
}

#[test]
fn output_views_with_strides_leave_the_gaps_alone() -> Res {
    let a = [1u8, 2, 3, 4];
    let b = [1i8, 0, 0, 1];
    let ops =
        Operands::new(MatRef::row_major(&a, 2, 2)?, ZeroPoint::None, MatRef::row_major(&b, 2, 2)?, ZeroPoint::None)?;
    let mut c = [-7i32; 7]; // 2 x 2 with a row stride of 5
    Gemm::new().i32(&ops, MatMut::new(&mut c, 2, 2, 5)?)?;
    assert_eq!(c, [1, 2, -7, -7, -7, 3, 4]);
    Ok(())
}

#[test]
fn bad_shapes_and_zero_points() -> Res {
    let a = [1u8; 6];
    let b = [1i8; 6];
    let av = MatRef::row_major(&a, 2, 3)?;
    let bv = MatRef::row_major(&b, 2, 3)?;
    assert_eq!(
        Operands::new(av, ZeroPoint::None, bv, ZeroPoint::None).map(|_| ()),
        Err(QuantError::InnerDimensionMismatch { a_rows: 2, a_cols: 3, b_rows: 2, b_cols: 3 })
    );
    let bv = MatRef::row_major(&b, 3, 2)?;
    assert_eq!(
        Operands::new(av, ZeroPoint::PerTensor(256), bv, ZeroPoint::None).map(|_| ()),
        Err(QuantError::ZeroPointOutOfRange { zero_point: 256, index: 0, operand: "u8", min: 0, max: 255 })
    );
    assert_eq!(
        Operands::new(av, ZeroPoint::None, bv, ZeroPoint::PerChannel(&[0, 200])).map(|_| ()),
        Err(QuantError::ZeroPointOutOfRange { zero_point: 200, index: 1, operand: "i8", min: -128, max: 127 })
    );
    assert_eq!(
        Operands::new(av, ZeroPoint::PerChannel(&[1]), bv, ZeroPoint::None).map(|_| ()),
        Err(QuantError::LengthMismatch { what: "A zero points (one per row)", expected: 2, found: 1 })
    );
    assert!(matches!(MatRef::new(&a, 2, 3, 2), Err(QuantError::InvalidStride { .. })));
    assert!(matches!(MatRef::new(&a, 2, 4, 4), Err(QuantError::LengthMismatch { .. })));
    let ops = Operands::new(av, ZeroPoint::None, bv, ZeroPoint::None)?;
    let mut c = [0f32; 4];
    assert!(matches!(
        Gemm::new().f32(&ops, 1.0, Scale::PerTensor(f32::NAN), None, MatMut::row_major(&mut c, 2, 2)?),
        Err(QuantError::InvalidScale { value }) if value.is_nan()
    ));
    assert_eq!(
        Gemm::new().f32(&ops, 1.0, Scale::PerColumn(&[1.0]), None, MatMut::row_major(&mut c, 2, 2)?),
        Err(QuantError::LengthMismatch { what: "scale_b (one per column)", expected: 2, found: 1 })
    );
    let mut small = [0i32; 3];
    assert!(matches!(
        Gemm::new().i32(&ops, MatMut::row_major(&mut small, 1, 3)?),
        Err(QuantError::LengthMismatch { what: "C rows", .. })
    ));
    Ok(())
}

/// The best tier this CPU has, detected here independently of the library.
fn best_tier_here() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        let has = |f: &str| match f {
            "avx2" => std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
            "avxvnni" => std::is_x86_feature_detected!("avxvnni"),
            "avx512vnni" => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512vnni")
            }
            _ => false,
        };
        // AMX: the flags Linux lists (it lists them only when it supports the tile state).
        let amx = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
            info.lines().find(|l| l.starts_with("flags")).is_some_and(|l| {
                let flags: Vec<&str> = l.split_whitespace().collect();
                flags.contains(&"amx_tile") && flags.contains(&"amx_int8")
            })
        });
        if has("avx2") && has("avx512vnni") && amx {
            return "amx";
        }
        if has("avx2") && has("avx512vnni") {
            return "avx512vnni";
        }
        if has("avx2") && has("avxvnni") {
            return "avxvnni";
        }
        if has("avx2") {
            return "avx2";
        }
    }
    "portable"
}

/// The kernel that runs is the one asked for: with `QUANT_KERNEL` set (`cargo xtask test`
/// runs the suite once per tier this CPU has), the automatic choice must be that tier, and
/// without it the best tier this CPU has. This fails (it does not skip) when the requested
/// tier did not run, including when the CPU lacks it.
#[test]
fn the_requested_kernel_runs() -> Res {
    let requested = std::env::var("QUANT_KERNEL").unwrap_or_default().to_ascii_lowercase();
    let want = if requested.is_empty() { best_tier_here() } else { requested.as_str() };
    assert_eq!(selected_kernel()?, want, "QUANT_KERNEL={requested:?}");
    assert_eq!(Gemm::new().kernel_name()?, want);
    assert_eq!(Gemm::new().kernel(KernelChoice::Portable).kernel_name()?, "portable");
    // The packed layout follows the kernel.
    let b = [1i8; 6];
    let packed = Gemm::new().pack_b(MatRef::row_major(&b, 2, 3)?)?;
    assert!(packed.layout().contains(want), "{} for {want}", packed.layout());
    Ok(())
}

/// A tier this CPU lacks is an error naming the missing feature, never a silent fallback; the
/// test prints which tiers it could not run.
#[test]
fn tiers_this_cpu_lacks_are_refused() -> Res {
    let a = [1u8; 4];
    let b = [1i8; 4];
    let ops =
        Operands::new(MatRef::row_major(&a, 2, 2)?, ZeroPoint::None, MatRef::row_major(&b, 2, 2)?, ZeroPoint::None)?;
    for tier in Tier::ALL {
        let g = Gemm::new().kernel(KernelChoice::of(tier));
        let mut c = [0i32; 4];
        match tier.missing() {
            None => {
                g.i32(&ops, MatMut::row_major(&mut c, 2, 2)?)?;
                assert_eq!(c, [2; 4], "{tier}");
            }
            Some(missing) => {
                println!("tier {tier} not run: this CPU lacks {missing}");
                let err = QuantError::KernelUnavailable { kernel: tier.name(), missing };
                assert_eq!(g.i32(&ops, MatMut::row_major(&mut c, 2, 2)?), Err(err.clone()));
                assert_eq!(g.pack_b(MatRef::row_major(&b, 2, 2)?), Err(err.clone()));
                assert_eq!(g.kernel_name(), Err(err));
            }
        }
    }
    Ok(())
}

/// Weights packed in one kernel's layout are refused by a kernel with another, and taken by a
/// kernel that shares the layout.
#[test]
fn packed_weights_belong_to_a_layout() -> Res {
    let a = [3u8; 10];
    let b: Vec<i8> = (0..10).map(|v| v - 5).collect();
    let portable = Gemm::new().kernel(KernelChoice::Portable);
    let packed = portable.pack_b(MatRef::row_major(&b, 5, 2)?)?;
    assert_eq!(packed.layout(), "quads x16 (portable, avxvnni)");
    let ops = Operands::packed(MatRef::row_major(&a, 2, 5)?, ZeroPoint::None, &packed, ZeroPoint::None)?;
    let mut want = [0i32; 4];
    portable.i32(&ops, MatMut::row_major(&mut want, 2, 2)?)?;
    // B columns are -5, -3, -1, 1, 3 and -4, -2, 0, 2, 4; every A value is 3.
    assert_eq!(want, [-15, 0, -15, 0]);
    for (tier, accepts) in [(Tier::Avx2, false), (Tier::AvxVnni, true), (Tier::Avx512Vnni, false), (Tier::Amx, false)] {
        if let Some(missing) = tier.missing() {
            println!("layout check on {tier} not run: this CPU lacks {missing}");
            continue;
        }
        let g = Gemm::new().kernel(KernelChoice::of(tier));
        let mut c = [0i32; 4];
        let got = g.i32(&ops, MatMut::row_major(&mut c, 2, 2)?);
        if accepts {
            assert_eq!((got, c), (Ok(()), want), "{tier}");
        } else {
            let err = QuantError::PackedForOtherKernel { packed: "quads x16 (portable, avxvnni)", kernel: tier.name() };
            assert_eq!(got, Err(err), "{tier}");
        }
    }
    Ok(())
}

/// Depths around the `i32` chunk bound of `u8 x i8` (65 793 values, 16 448 quads and a
/// value, 32 896 pairs and a value), all extremes: the last depth with an `i32` result, the
/// first without (chunked, `f32` out), on every tier, 1 and 2 threads, `u8` and `i8`.
#[rstest]
#[case(65_792)]
#[case(65_793)]
#[case(65_794)]
#[case(65_797)]
fn depths_around_the_chunk_bound(#[case] k: usize) -> Res {
    let (m, n) = (3, 17);
    let b = vec![-128i8; k * n];
    for g in settings() {
        let packed = g.pack_b(MatRef::row_major(&b, k, n)?)?;
        // u8: all 255; i8: all -128 (shifted to 0 by quad kernels) and all 127.
        let a8 = vec![255u8; m * k];
        let ops = Operands::packed(MatRef::row_major(&a8, m, k)?, ZeroPoint::None, &packed, ZeroPoint::None)?;
        let exact = -255i64 * 128 * k as i64;
        let mut c = vec![0f32; m * n];
        g.f32(&ops, 1.0, Scale::PerTensor(1.0), None, MatMut::row_major(&mut c, m, n)?)?;
        assert!(c.iter().all(|&v| v == exact as f32), "{k} {}", name(&g));
        let mut ci = vec![0i32; m * n];
        let got = g.i32(&ops, MatMut::row_major(&mut ci, m, n)?);
        if k <= 65_793 {
            assert_eq!(got, Ok(()));
            assert!(ci.iter().all(|&v| i64::from(v) == exact), "{k} {}", name(&g));
        } else {
            assert_eq!(got, Err(QuantError::DepthTooLarge { k, max_k: 65_793 }));
        }
        for (fill, per) in [(-128i8, 128 * 128), (127i8, -127 * 128)] {
            let ai = vec![fill; m * k];
            let ops = Operands::packed(MatRef::row_major(&ai, m, k)?, ZeroPoint::None, &packed, ZeroPoint::None)?;
            let mut c = vec![0f32; m * n];
            g.f32(&ops, 1.0, Scale::PerTensor(1.0), None, MatMut::row_major(&mut c, m, n)?)?;
            let exact = per as f64 * k as f64;
            assert!(c.iter().all(|&v| v == exact as f32), "i8 {fill} {k} {}", name(&g));
        }
    }
    Ok(())
}

/// The 7-bit (`vpmaddubsw`) path: activations in 0..=127, exact against the reference on
/// random shapes (odd depths end on a half quad), every zero-point form, both kernels and both
/// thread counts, raw and pre-packed weights.
fn seven_bit_case<A: Operand>(rng: &mut Rng) -> Res {
    let (m, k, n) = (2 + rng.index(30), rng.index(70), 1 + rng.index(40));
    let a_data: Vec<A> = (0..m * k).map(|_| A::narrow(rng.int(0, 127))).collect();
    let a = Strided { data: a_data, rows: m, cols: k, stride: k };
    let fill = if rng.index(3) == 0 { Fill::Extremes } else { Fill::Random };
    let b = Strided::<i8>::random(rng, k, n, fill);
    let (zat, zap) = zero_points::<A>(rng, m);
    let (zbt, zbp) = zero_points::<i8>(rng, n);
    let (za, zb) = (zp(zat, &zap), zp(zbt, &zbp));
    let want = reference(&a, &za, &b, &zb);
    for g in settings() {
        let packed = g.pack_b(b.view())?;
        for ops in [Operands::new(a.view(), za, b.view(), zb)?, Operands::packed(a.view(), za, &packed, zb)?] {
            let g = g.seven_bit_activations(true);
            let mut c = vec![0i32; m * n];
            g.i32(&ops, MatMut::row_major(&mut c, m, n)?)?;
            let c64: Vec<i64> = c.iter().map(|&v| i64::from(v)).collect();
            assert_eq!(c64, want, "7-bit {m}x{k}x{n} {} {}", name(&g), A::NAME);
        }
    }
    Ok(())
}

#[test]
fn seven_bit_path_matches_reference() -> Res {
    let mut rng = Rng::new(71);
    for _ in 0..80 {
        seven_bit_case::<u8>(&mut rng)?;
        seven_bit_case::<i8>(&mut rng)?;
    }
    Ok(())
}

#[test]
fn seven_bit_path_chunks_deep_sums_and_checks_its_promise() -> Res {
    // 127 * -128 * 140_000 = -2.28e9: beyond i32, so the quad path must chunk (f32 output).
    let k = 140_000;
    let a = vec![127u8; 2 * k];
    let b = vec![-128i8; k * 3];
    let ops =
        Operands::new(MatRef::row_major(&a, 2, k)?, ZeroPoint::None, MatRef::row_major(&b, k, 3)?, ZeroPoint::None)?;
    for g in settings() {
        let mut c = vec![0f32; 6];
        g.seven_bit_activations(true).f32(&ops, 1.0, Scale::PerTensor(1.0), None, MatMut::row_major(&mut c, 2, 3)?)?;
        assert_eq!(c, vec![(127.0 * -128.0 * 140_000.0) as f32; 6], "{}", name(&g));
    }
    let a = [1u8, 2, 128, 3];
    let ops = Operands::new(
        MatRef::row_major(&a, 2, 2)?,
        ZeroPoint::None,
        MatRef::row_major(&[1i8; 4], 2, 2)?,
        ZeroPoint::None,
    )?;
    let mut c = [0i32; 4];
    assert_eq!(
        Gemm::new().seven_bit_activations(true).i32(&ops, MatMut::row_major(&mut c, 2, 2)?),
        Err(QuantError::ActivationOutOfRange { row: 1, col: 0, value: 128 })
    );
    Ok(())
}

#[test]
fn qlinear_scales_are_checked_before_anything_is_written() -> Res {
    let a = [1u8; 8];
    let b = [1i8; 12];
    let ops =
        Operands::new(MatRef::row_major(&a, 2, 4)?, ZeroPoint::None, MatRef::row_major(&b, 4, 3)?, ZeroPoint::None)?;
    let run = |a_scale: &[f32], b_scale: &[f32], y_scale: f32, precision: ScaleType| {
        let mut out = [7u8; 6];
        let r = Requant::QLinear { a_scale, b_scale, y_scale, zero_point: 0, precision };
        let result = Gemm::new().requant(&ops, r, MatMut::row_major(&mut out, 2, 3).expect("view"));
        (result, out)
    };
    // One scale per row of A (2), not 3.
    let (r, out) = run(&[0.5; 3], &[0.5], 1.0, ScaleType::F32);
    assert_eq!(r, Err(QuantError::LengthMismatch { what: "a_scale (one per row of A)", expected: 2, found: 3 }));
    assert_eq!(out, [7; 6]);
    // 0.1 is no f16: an f16 multiplier computed from it would not be ONNX's.
    let (r, out) = run(&[0.5], &[0.5, 0.1, 0.5], 1.0, ScaleType::F16);
    assert_eq!(r, Err(QuantError::InvalidScale { value: f64::from(0.1f32) }));
    assert_eq!(out, [7; 6]);
    let (r, _) = run(&[0.5], &[0.5], 0.0, ScaleType::F32);
    assert_eq!(r, Err(QuantError::InvalidScale { value: 0.0 }));
    // Valid: 4 · 0.5 · 0.25 / 0.125 = 4 everywhere.
    let (r, out) = run(&[0.5, 0.5], &[0.25], 0.125, ScaleType::Bf16);
    assert_eq!((r, out), (Ok(()), [4; 6]));
    Ok(())
}

#[test]
fn qlinear_adds_the_zero_point_before_rounding_and_float_after() -> Res {
    // Sums 1, 3, 5 times 0.5 are ties; with an odd output zero point the order shows. The ONNX
    // reference evaluator gives [2, 2, 4] (rint(x + 1)); ONNX Runtime 1.32's QLinearMatMul
    // gives [1, 3, 3] (rint(x) + 1), which is Requant::Float's order.
    let a = [1u8, 0];
    let b = [1i8, 3, 5, 0, 0, 0];
    let ops =
        Operands::new(MatRef::row_major(&a, 1, 2)?, ZeroPoint::None, MatRef::row_major(&b, 2, 3)?, ZeroPoint::None)?;
    let mut onnx = [0u8; 3];
    let r =
        Requant::QLinear { a_scale: &[1.0], b_scale: &[1.0], y_scale: 2.0, zero_point: 1, precision: ScaleType::F32 };
    Gemm::new().requant(&ops, r, MatMut::row_major(&mut onnx, 1, 3)?)?;
    assert_eq!(onnx, [2, 2, 4]);
    let mut ort = [0u8; 3];
    let r = Requant::Float { multiplier: Scale::PerTensor(0.5), zero_point: 1 };
    Gemm::new().requant(&ops, r, MatMut::row_major(&mut ort, 1, 3)?)?;
    assert_eq!(ort, [1, 3, 3]);
    Ok(())
}
