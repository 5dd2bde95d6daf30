//! The two-level weight formats: golden bytes, the search against min-max on every sub-block,
//! importance weights on the output error, storage sizes, validation and errors.

use quant_core::superblock::{fit_sub_block, quantize_super, Fit, Grid, SubScale, SuperMatrix, SuperSpec};
use quant_core::{MatrixShape, QuantError};
use quant_testkit::Rng;
use quant_traits::half::{bf16, f16};

/// Heavy-tailed values (a normal divided by the root of a chi-square-ish scale), as weights are.
fn heavy(rng: &mut Rng, n: usize, scale: f64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let g = rng.normal();
            let s = (0..4).map(|_| rng.normal().powi(2)).sum::<f64>() / 4.0;
            (scale * g / s.sqrt().max(0.05)) as f32
        })
        .collect()
}

fn snr(x: &[f32], y: &[f32]) -> f64 {
    let sx: f64 = x.iter().map(|&v| f64::from(v).powi(2)).sum();
    let se: f64 = x.iter().zip(y).map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2)).sum();
    10.0 * (sx / se).log10()
}

fn all_grids() -> Vec<(Grid, u32)> {
    let mut v = vec![(Grid::Levels, 4), (Grid::Levels, 5), (Grid::Levels, 6)];
    for bits in 2..=8 {
        v.push((Grid::Symmetric, bits));
        v.push((Grid::Offset, bits));
        v.push((Grid::ZeroPoint, bits));
    }
    v
}

#[test]
fn golden_symmetric_two_level_bytes() {
    // Sub-block 0 is 1·[-8, 4, 2, 1], sub-block 1 is 0.5·[-8, 4, 2, 0]: the sign trick gives
    // d = 1 and 0.5, the 6-bit level gives D = -1/32 with l = -32 and -16, all exact.
    let x = [-8.0f32, 4.0, 2.0, 1.0, -4.0, 2.0, 1.0, 0.0];
    let spec = SuperSpec::new(Grid::Symmetric, 4, 4).expect("spec");
    let q = quantize_super(&x, MatrixShape::new(1, 8), spec, None).expect("quantize");
    assert_eq!(q.super_scales(), [f16::from_f32(-0.03125)]);
    // Codes q + 8, low nibble first: [0, 12, 10, 9], [0, 12, 10, 8].
    assert_eq!(q.codes(), [0xC0, 0x9A, 0xC0, 0x8A]);
    // Sub-scales l + 32 = 0 and 16 in 6-bit fields: 16 << 6 = 0x400.
    assert_eq!(q.scales(), [0x00, 0x04]);
    assert!(q.offsets().is_empty());
    assert_eq!(q.dequantize::<f32>(), x);
    assert_eq!(q.bytes(), 4 + 2 + 2);
    assert_eq!(q.bits_per_weight(), 8.0 * 8.0 / 8.0);
}

#[test]
fn golden_offset_and_levels_with_f16_scales() {
    // Offset grid, f16 sub-scales: 0.25 q - 1 for codes 0..=14 is found exactly.
    let codes = [0i16, 3, 7, 14, 9, 2, 11, 13];
    let x: Vec<f32> = codes.iter().map(|&q| 0.25 * f32::from(q) - 1.0).collect();
    let spec = SuperSpec::new(Grid::Offset, 4, 8).and_then(|s| s.with_sub_scale(SubScale::F16)).expect("spec");
    let q = quantize_super(&x, MatrixShape::new(1, 8), spec, None).expect("quantize");
    assert_eq!(q.scales(), f16::from_f32(0.25).to_bits().to_le_bytes());
    assert_eq!(q.offsets(), f16::from_f32(-1.0).to_bits().to_le_bytes());
    assert!(q.super_scales().is_empty());
    assert_eq!((0..8).map(|c| q.code(0, c)).collect::<Vec<_>>(), codes);
    assert_eq!(q.dequantize::<f32>(), x);
    assert_eq!(q.bits_per_weight(), 4.0 + 32.0 / 8.0);

    // Levels: values on the codebook times 0.5 come back exactly.
    let levels = quant_core::superblock::LEVELS;
    let x: Vec<f32> = levels.iter().map(|&l| 0.5 * f32::from(l)).collect();
    let spec = SuperSpec::new(Grid::Levels, 4, 16).and_then(|s| s.with_sub_scale(SubScale::F16)).expect("spec");
    let q = quantize_super(&x, MatrixShape::new(1, 16), spec, None).expect("quantize");
    assert_eq!(q.dequantize::<f32>(), x);
    assert_eq!((0..16).map(|c| q.code(0, c)).collect::<Vec<_>>(), (0..16).collect::<Vec<i16>>());
}

#[test]
fn golden_zero_point_grid() {
    // 0.5 · (q - 3) for codes 0..=15: f16 scale 0.5 and zero point 3, exact, 0.0 on code 3.
    let codes = [0i16, 3, 15, 9, 4, 2, 11, 13];
    let x: Vec<f32> = codes.iter().map(|&q| 0.5 * f32::from(q - 3)).collect();
    let spec = SuperSpec::new(Grid::ZeroPoint, 4, 8).and_then(|s| s.with_sub_scale(SubScale::F16)).expect("spec");
    let q = quantize_super(&x, MatrixShape::new(1, 8), spec, None).expect("quantize");
    assert_eq!(q.scales(), f16::from_f32(0.5).to_bits().to_le_bytes());
    assert_eq!(q.offsets(), [3]); // the zero point in 4 bits
    assert_eq!((0..8).map(|c| q.code(0, c)).collect::<Vec<_>>(), codes);
    assert_eq!(q.dequantize::<f32>(), x);
    // 4 bytes of codes, 2 of scale, and the 4-bit zero point rounded up to a byte (one
    // sub-block): 7 bytes for 8 weights.
    assert_eq!(q.bits_per_weight(), 7.0);
    // ONNX's min-max: the range widened to 0, z = round(-min / d); zero stays exact.
    let y = [0.3f32, 1.2, 2.7, 0.9, 1.5, 2.0, 0.6, 1.1];
    let mm = quantize_super(&y, MatrixShape::new(1, 8), spec.with_fit(Fit::MinMax), None).expect("min-max");
    assert_eq!(mm.offsets(), [0]);
    let with_zero = [0.0f32, -1.0, 2.0, 0.5, 0.0, 1.0, -0.25, 0.75];
    for fit in [Fit::MinMax, Fit::Search] {
        let z = quantize_super(&with_zero, MatrixShape::new(1, 8), spec.with_fit(fit), None).expect("zeros");
        assert_eq!(z.dequantize::<f32>()[0], 0.0, "{fit:?}");
    }
}

#[test]
fn the_search_never_loses_to_min_max_on_any_sub_block() {
    let mut rng = Rng::new(12);
    let mut wins = 0usize;
    let mut total = 0usize;
    for round in 0..600 {
        let n = 1 + rng.index(64);
        let magnitude = 10f64.powi(rng.int(-4, 3) as i32);
        let mut x = heavy(&mut rng, n, magnitude);
        match round % 5 {
            0 => x.iter_mut().for_each(|v| *v = v.abs()),                  // one-sided
            1 => x[rng.index(n)] *= 40.0,                                  // an outlier
            2 => x.iter_mut().for_each(|v| *v = (*v * 4.0).round() / 4.0), // on a grid
            _ => {}
        }
        let w: Option<Vec<f32>> = (round % 3 == 0).then(|| (0..n).map(|_| rng.unit().powi(3) as f32).collect());
        for (grid, bits) in all_grids() {
            let s = fit_sub_block(grid, bits, Fit::Search, &x, w.as_deref());
            let m = fit_sub_block(grid, bits, Fit::MinMax, &x, w.as_deref());
            assert!(s.error <= m.error, "{grid:?} {bits} n={n}: search {s:?} min-max {m:?} x={x:?}");
            total += 1;
            wins += usize::from(s.error < m.error * 0.95);
        }
    }
    // And it is not a no-op: most sub-blocks gain more than 5 %.
    assert!(wins * 2 > total, "{wins} of {total}");
}

#[test]
fn the_search_pays_on_whole_matrices_at_every_width() {
    let mut rng = Rng::new(5);
    let (rows, cols) = (24, 256);
    let x = heavy(&mut rng, rows * cols, 0.02);
    let shape = MatrixShape::new(rows, cols);
    for (grid, bits) in all_grids() {
        let spec = SuperSpec::new(grid, bits, 16).expect("spec");
        let s = quantize_super(&x, shape, spec, None).expect("search");
        let m = quantize_super(&x, shape, spec.with_fit(Fit::MinMax), None).expect("min-max");
        let (a, b) = (snr(&x, &s.dequantize::<f32>()), snr(&x, &m.dequantize::<f32>()));
        assert!(a > b + 0.3, "{grid:?} {bits}: search {a:.2} dB, min-max {b:.2} dB");
        assert_eq!(s.bytes(), m.bytes());
    }
}

#[test]
fn every_width_dequantizes_near_its_input() {
    let mut rng = Rng::new(9);
    for (grid, bits) in all_grids() {
        for scale in [SubScale::F16, SubScale::Bf16, SubScale::Bits(4), SubScale::Bits(8)] {
            let (rows, cols) = (1 + rng.index(5), 1 + rng.index(70));
            let x = heavy(&mut rng, rows * cols, 1.0);
            let spec =
                SuperSpec::new(grid, bits, 1 + rng.index(20)).and_then(|s| s.with_sub_scale(scale)).expect("spec");
            let q = quantize_super(&x, MatrixShape::new(rows, cols), spec, None).expect("quantize");
            let back: Vec<f32> = q.dequantize();
            // A crude bound that still fails on wrong codes or scales: every value within the
            // largest magnitude of the matrix times a step of the codes' width plus one of the
            // sub-scales' (scales and offsets stored in s bits are off by up to 2^-s of the
            // largest, which codes at the end of their range cannot make up).
            let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let s_bits = match scale {
                SubScale::Bits(s) => s,
                SubScale::F16 => 11,
                SubScale::Bf16 => 8,
            };
            let step = amax * 4.0 / (1u32 << bits) as f32 + amax * 2.0 / (1u32 << s_bits) as f32;
            for (i, (a, b)) in x.iter().zip(&back).enumerate() {
                assert!((a - b).abs() <= step, "{grid:?} {bits} {scale:?} {rows}x{cols} at {i}: {a} vs {b}");
            }
            assert_eq!(q.bytes(), spec.stored_bytes(MatrixShape::new(rows, cols)).expect("bytes"));
        }
    }
}

#[test]
fn sizes_count_every_stored_part_including_partial_blocks() {
    // 37 columns, sub-blocks of 16 (3 per row, the last of 5), super-blocks of 32 (2 per row).
    let spec = SuperSpec::new(Grid::Offset, 3, 16).and_then(|s| s.with_super_len(Some(32))).expect("spec");
    let shape = MatrixShape::new(3, 37);
    let codes = (3 * 37 * 3usize).div_ceil(8);
    let subs = (9 * 6usize).div_ceil(8);
    let bytes = codes + 2 * subs + 2 * 2 * 6;
    assert_eq!(spec.stored_bytes(shape), Ok(bytes));
    assert_eq!(spec.bits_per_weight(shape), Ok(8.0 * bytes as f64 / 111.0));
    let x: Vec<f32> = (0..111).map(|i| (i as f32 * 0.37).sin()).collect();
    let q = quantize_super(&x, shape, spec, None).expect("quantize");
    assert_eq!(q.bytes(), bytes);
    assert!(snr(&x, &q.dequantize::<f32>()) > 14.0);
}

#[test]
fn other_float_types_give_the_bytes_of_their_f32_values() {
    let mut rng = Rng::new(3);
    let x = heavy(&mut rng, 4 * 64, 0.1);
    let h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
    let b: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
    let shape = MatrixShape::new(4, 64);
    let spec = SuperSpec::new(Grid::Levels, 4, 16).expect("spec");
    let of_f16 = quantize_super(&h, shape, spec, None).expect("f16");
    let hf: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
    assert_eq!(of_f16, quantize_super(&hf, shape, spec, None).expect("f32"));
    let of_bf16 = quantize_super(&b, shape, spec, None).expect("bf16");
    let bf: Vec<f32> = b.iter().map(|v| v.to_f32()).collect();
    assert_eq!(of_bf16, quantize_super(&bf, shape, spec, None).expect("f32"));
    let back: Vec<f16> = of_f16.dequantize();
    let want: Vec<f16> = of_f16.dequantize::<f32>().iter().map(|&v| f16::from_f32(v)).collect();
    assert_eq!(back, want);
}

#[test]
fn row_blocks_joined_equal_the_whole() {
    let mut rng = Rng::new(4);
    let (rows, cols) = (21, 45);
    let x = heavy(&mut rng, rows * cols, 1.0);
    for spec in [
        SuperSpec::new(Grid::Symmetric, 3, 9).expect("spec"),
        SuperSpec::new(Grid::Offset, 5, 15).and_then(|s| s.with_sub_scale(SubScale::F16)).expect("spec"),
    ] {
        let whole = quantize_super(&x, MatrixShape::new(rows, cols), spec, None).expect("whole");
        // Blocks of 5 rows: 5·45·3 bits do not end on a byte, so the join shifts bits.
        let parts: Vec<SuperMatrix> = x
            .chunks(5 * cols)
            .map(|c| quantize_super(c, MatrixShape::new(c.len() / cols, cols), spec, None).expect("part"))
            .collect();
        assert_eq!(SuperMatrix::concat_rows(&parts), Ok(whole));
    }
}

#[test]
fn stored_parts_are_checked_when_read_back() {
    let x: Vec<f32> = (0..64).map(|i| (i as f32).cos()).collect();
    let spec = SuperSpec::new(Grid::Offset, 4, 16).expect("spec");
    let shape = MatrixShape::new(2, 32);
    let q = quantize_super(&x, shape, spec, None).expect("quantize");
    let parts = |q: &SuperMatrix| {
        (
            q.codes().to_vec(),
            q.scales().to_vec(),
            q.offsets().to_vec(),
            q.super_scales().to_vec(),
            q.super_offsets().to_vec(),
        )
    };
    let (c, s, o, ss, so) = parts(&q);
    assert_eq!(
        SuperMatrix::from_parts(spec, shape, c.clone(), s.clone(), o.clone(), ss.clone(), so.clone()),
        Ok(q.clone())
    );
    let short = SuperMatrix::from_parts(spec, shape, c[1..].to_vec(), s.clone(), o.clone(), ss.clone(), so.clone());
    assert_eq!(short, Err(QuantError::LengthMismatch { what: "codes (bytes)", expected: 32, found: 31 }));
    // A shape claiming far more values than the bytes hold is refused before any allocation.
    let huge = SuperMatrix::from_parts(
        spec,
        MatrixShape::new(1 << 40, 2),
        c.clone(),
        s.clone(),
        o.clone(),
        ss.clone(),
        so.clone(),
    );
    assert!(matches!(huge, Err(QuantError::LengthMismatch { what: "codes (bytes)", .. })), "{huge:?}");
    let mut bad = ss.clone();
    bad[1] = f16::NAN;
    let nan = SuperMatrix::from_parts(spec, shape, c, s, o, bad, so);
    assert!(matches!(nan, Err(QuantError::NonFiniteParameter { what: "super-scale", index: 1, .. })), "{nan:?}");
}

#[test]
fn bad_input_gets_a_typed_error() {
    let spec = SuperSpec::new(Grid::Symmetric, 4, 16).expect("spec");
    let shape = MatrixShape::new(2, 16);
    let mut x = vec![0.5f32; 32];
    x[19] = f32::NAN;
    assert!(matches!(quantize_super(&x, shape, spec, None), Err(QuantError::NonFiniteInMatrix { row: 1, col: 3, .. })));
    let x = vec![0.5f32; 32];
    assert_eq!(
        quantize_super(&x[..31], shape, spec, None),
        Err(QuantError::LengthMismatch { what: "matrix", expected: 32, found: 31 })
    );
    let mut imp = vec![1.0f32; 16];
    imp[7] = -1.0;
    assert_eq!(
        quantize_super(&x, shape, spec, Some(&imp)),
        Err(QuantError::InvalidImportance { index: 7, value: -1.0 })
    );
    assert!(matches!(
        quantize_super(&x, shape, spec, Some(&imp[..15])),
        Err(QuantError::LengthMismatch { expected: 16, found: 15, .. })
    ));
    assert_eq!(
        SuperSpec::new(Grid::Levels, 3, 16),
        Err(QuantError::InvalidSuperSpec { reason: "the levels grid has 4-, 5- or 6-bit codes" })
    );
    assert_eq!(SuperSpec::new(Grid::Symmetric, 9, 16), Err(QuantError::InvalidBits { bits: 9 }));
    assert_eq!(SuperSpec::new(Grid::Symmetric, 4, 0), Err(QuantError::InvalidGroupSize));
    assert!(spec.with_super_len(Some(24)).is_err());
    assert!(spec.with_sub_scale(SubScale::Bits(1)).is_err());
    // Scales beyond f16; bf16 sub-scales hold them.
    let big: Vec<f32> = (0..32).map(|i| 1e9 * (i as f32 - 15.5)).collect();
    assert!(matches!(quantize_super(&big, shape, spec, None), Err(QuantError::ScaleOverflow { float: "f16", .. })));
    let wide = spec.with_sub_scale(SubScale::Bf16).expect("spec");
    let q = quantize_super(&big, shape, wide, None).expect("bf16 scales");
    assert!(snr(&big, &q.dequantize::<f32>()) > 15.0);
    assert_eq!(q.bits_per_weight(), 4.0 + 16.0 / 16.0);
    // Empty and zero-width matrices are fine and hold nothing.
    let e = quantize_super::<f32>(&[], MatrixShape::new(3, 0), spec, None).expect("empty");
    assert_eq!((e.bytes(), e.bits_per_weight()), (0, 0.0));
}

#[test]
fn all_zero_and_constant_rows() {
    for (grid, bits) in all_grids() {
        let spec = SuperSpec::new(grid, bits, 8).expect("spec");
        let z = quantize_super(&[0.0f32; 32], MatrixShape::new(2, 16), spec, None).expect("zeros");
        assert_eq!(z.dequantize::<f32>(), [0.0; 32], "{grid:?} {bits}");
    }
    // The offset grid holds a constant exactly (in f16 offsets: a value f16 represents).
    let spec = SuperSpec::new(Grid::Offset, 4, 8).and_then(|s| s.with_sub_scale(SubScale::F16)).expect("spec");
    let c = quantize_super(&[0.75f32; 16], MatrixShape::new(1, 16), spec, None).expect("constant");
    assert_eq!(c.dequantize::<f32>(), [0.75; 16]);
}

/// Importance weights: on activations with outlier input channels, weighting the search by
/// each column's mean squared activation cuts the output error of `x · Wᵀ`.
#[test]
fn importance_cuts_the_output_error_on_outlier_channels() {
    let mut rng = Rng::new(21);
    let (out, inp, tokens) = (64, 512, 96);
    let w = heavy(&mut rng, out * inp, 0.02);
    let outliers: Vec<usize> = (0..12).map(|_| rng.index(inp)).collect();
    let mut x: Vec<f32> = (0..tokens * inp).map(|_| rng.normal() as f32).collect();
    for t in 0..tokens {
        for &c in &outliers {
            x[t * inp + c] *= 30.0;
        }
    }
    let importance: Vec<f32> =
        (0..inp).map(|c| (0..tokens).map(|t| x[t * inp + c].powi(2)).sum::<f32>() / tokens as f32).collect();
    let matmul = |w: &[f32]| -> Vec<f64> {
        let mut y = vec![0.0f64; tokens * out];
        for t in 0..tokens {
            for o in 0..out {
                y[t * out + o] = (0..inp).map(|c| f64::from(x[t * inp + c]) * f64::from(w[o * inp + c])).sum();
            }
        }
        y
    };
    let exact = matmul(&w);
    let err = |back: &[f32]| -> f64 {
        let y = matmul(back);
        y.iter().zip(&exact).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt()
    };
    let shape = MatrixShape::new(out, inp);
    for spec in [
        SuperSpec::new(Grid::Levels, 4, 16).expect("spec"),
        SuperSpec::new(Grid::Symmetric, 3, 16).expect("spec"),
        SuperSpec::new(Grid::Offset, 4, 32).expect("spec"),
    ] {
        let plain = quantize_super(&w, shape, spec, None).expect("plain");
        let weighted = quantize_super(&w, shape, spec, Some(&importance)).expect("weighted");
        assert_eq!(plain.bytes(), weighted.bytes());
        let (a, b) = (err(&plain.dequantize::<f32>()), err(&weighted.dequantize::<f32>()));
        println!(
            "{spec:?}: output error {b:.4} with importance, {a:.4} without ({:.0} % lower)",
            100.0 * (1.0 - b / a)
        );
        assert!(b < 0.8 * a, "{spec:?}: output error {b:.4} with importance, {a:.4} without");
    }
}
