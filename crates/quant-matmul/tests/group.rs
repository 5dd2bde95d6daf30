//! Group-quantized weights: every format's values against an independent decoding (llama.cpp's
//! block bytes, quant-core's per-group codes); both compute modes (int8 and float activations)
//! against the exact product with their documented error bounds (random data and outliers,
//! every format and group size), their arithmetic pinned step by step, the same bits on every
//! tier and thread count, and bad input.

// Index loops read as the formulas they check.
#![allow(clippy::needless_range_loop)]

use quant_core::{quantize_matrix, Axis, BlockFormat, Granularity, QuantSpec};
use quant_matmul::{
    ActivationBlocks, GroupCodes, GroupGemm, GroupWeights, KernelChoice, MatMut, MatRef, QuantError, Tier,
};
use quant_testkit::Rng;
use quant_traits::half::{bf16, f16};
use quant_traits::{I4x2, MatrixShape, Storage, U4x2};

type Res = Result<(), QuantError>;

/// The two compute modes.
#[derive(Copy, Clone, Debug, PartialEq)]
enum Mode {
    Int8,
    Float,
}

const MODES: [Mode; 2] = [Mode::Int8, Mode::Float];

/// Runs `mode` with settings `g`.
fn run<F: quant_traits::QuantFloat>(
    g: GroupGemm,
    mode: Mode,
    x: MatRef<'_, F>,
    w: &GroupWeights,
    bias: Option<&[f32]>,
    y: MatMut<'_, f32>,
) -> Res {
    match mode {
        Mode::Int8 => g.int8_activations(x, w, bias, y),
        Mode::Float => g.float_activations(x, w, bias, y),
    }
}

/// Weights with a few large values (outliers), as real LLM weights have.
fn weights(rng: &mut Rng, n: usize, k: usize, outliers: bool) -> Vec<f32> {
    (0..n * k)
        .map(|i| {
            let v = rng.normal() as f32 * 0.02;
            if outliers && i % 97 == 3 {
                v * 40.0
            } else {
                v
            }
        })
        .collect()
}

/// Activations, optionally with a few features far larger than the rest.
fn activations(rng: &mut Rng, m: usize, k: usize, outliers: bool) -> Vec<f32> {
    (0..m * k).map(|i| rng.normal() as f32 * if outliers && i % k < 4 { 30.0 } else { 1.0 }).collect()
}

/// Every format, built from `w` (`n x k`) with groups of `group` (llama.cpp's formats: 32).
fn all_formats(w: &[f32], n: usize, k: usize, group: usize) -> Result<Vec<GroupWeights>, QuantError> {
    let shape = MatrixShape::new(n, k);
    let gran = Granularity::PerGroup { axis: Axis::Cols, size: group };
    let s4 = quantize_matrix::<f32, I4x2>(w, shape, QuantSpec::symmetric(4)?, gran)?;
    let a4 = quantize_matrix::<f32, U4x2>(w, shape, QuantSpec::asymmetric(4)?, gran)?;
    let s8 = quantize_matrix::<f32, i8>(w, shape, QuantSpec::symmetric(8)?, gran)?;
    let scales = |p: &[quant_core::QuantParams<f32>]| p.iter().map(|p| p.scale()).collect::<Vec<f32>>();
    let zeros: Vec<i64> = a4.params().iter().map(|p| p.zero_point()).collect();
    let mut v = vec![
        GroupWeights::sym4(s4.codes(), &scales(s4.params()), n, k, group)?,
        GroupWeights::asym4(a4.codes(), &scales(a4.params()), &zeros, n, k, group)?,
        GroupWeights::sym8(s8.codes(), &scales(s8.params()), n, k, group)?,
    ];
    if group == 32 {
        v.extend(ggml_formats(w, n, k)?.into_iter().map(|(_, gw)| gw));
    }
    Ok(v)
}

/// Every llama.cpp block format whose blocks fit rows of `k`, built from `w` by quant-core's
/// quantizer and read back with [`GroupWeights::from_blocks`].
fn ggml_formats(w: &[f32], n: usize, k: usize) -> Result<Vec<(BlockFormat, GroupWeights)>, QuantError> {
    let mut v = Vec::new();
    for format in BlockFormat::ALL.into_iter().filter(|f| k.is_multiple_of(f.block_len())) {
        v.push((format, GroupWeights::from_blocks(format, &format.quantize(w)?, n, k)?));
    }
    Ok(v)
}

/// Each format's weights are what its producer says they are: quant-core's dequantization
/// (exact products, rounded once to f32) and llama.cpp's block arithmetic.
#[test]
fn weights_decode_as_their_producers_do() -> Res {
    let mut rng = Rng::new(5);
    let (n, k) = (5, 128);
    let w = weights(&mut rng, n, k, true);
    for group in [32, 64, 128] {
        let shape = MatrixShape::new(n, k);
        let gran = Granularity::PerGroup { axis: Axis::Cols, size: group };
        let s4 = quantize_matrix::<f32, I4x2>(&w, shape, QuantSpec::symmetric(4)?, gran)?;
        let a4 = quantize_matrix::<f32, U4x2>(&w, shape, QuantSpec::asymmetric(4)?, gran)?;
        let s8 = quantize_matrix::<f32, i8>(&w, shape, QuantSpec::symmetric(8)?, gran)?;
        let formats = all_formats(&w, n, k, group)?;
        for (gw, deq) in formats.iter().zip([s4.dequantize(), a4.dequantize(), s8.dequantize()]) {
            assert_eq!(gw.group_size(), group);
            for r in 0..n {
                for c in 0..k {
                    assert_eq!(gw.value(r, c) as f32, deq[r * k + c], "{:?} g{group} ({r}, {c})", gw.codes_kind());
                }
            }
        }
    }
    // Every llama.cpp format, through its exact integer form, is quant-core's (and ggml's)
    // dequantized value once rounded to f32; the held form is the table of the type's docs.
    let held = |f: BlockFormat| match f {
        BlockFormat::Q4_0 | BlockFormat::Q3_K => (GroupCodes::Sym4, f.sub_block_len()),
        BlockFormat::Q4_1 | BlockFormat::Q4_K | BlockFormat::Q2_K => (GroupCodes::Min4, f.sub_block_len()),
        BlockFormat::Q8_0 => (GroupCodes::Sym8, f.sub_block_len()),
        BlockFormat::Q5_0 | BlockFormat::Q6_K => (GroupCodes::Sym6, f.sub_block_len()),
        BlockFormat::Q5_1 | BlockFormat::Q5_K => (GroupCodes::Min6, 32),
        BlockFormat::MXFP4 | BlockFormat::IQ4_NL | BlockFormat::IQ4_XS => (GroupCodes::Levels4, 32),
        _ => unreachable!("a format this test does not know"),
    };
    let (n2, k2) = (3, 512);
    let w2 = weights(&mut rng, n2, k2, true);
    let built = ggml_formats(&w2, n2, k2)?;
    assert_eq!(built.len(), BlockFormat::ALL.len());
    for (format, gw) in &built {
        assert_eq!((gw.codes_kind(), gw.group_size()), held(*format), "{format:?}");
        let back = format.dequantize(&format.quantize(&w2)?)?;
        for r in 0..n2 {
            for c in 0..k2 {
                let want = back[r * k2 + c];
                let min = f64::from(gw.params(r, c / gw.group_size()).2);
                // Without a minimum the exact value is the f32 product; with one, one rounding
                // (equal as numbers: `value` adds a zero minimum, so its zeros are +0).
                let got = gw.value(r, c) as f32;
                assert_eq!(got, want, "{format:?} ({r}, {c}) min {min}");
            }
        }
    }
    // llama.cpp's blocks, decoded here from the bytes by their spec: Q4_0 `(q - 8)·d`, Q4_1
    // `q·d + m` (exact in f64), Q8_0 `q·d`; inputs j and j + 16 share byte j.
    let formats = ggml_formats(&w, n, k)?;
    for (format, bb) in [(BlockFormat::Q4_0, 18), (BlockFormat::Q4_1, 20), (BlockFormat::Q8_0, 34)] {
        let gw = &formats.iter().find(|(f, _)| *f == format).expect("a 32-value format").1;
        let bytes = format.quantize(&w)?;
        for r in 0..n {
            for c in 0..k {
                let b = &bytes[(r * k + c) / 32 * bb..][..bb];
                let d = f64::from(f16::from_le_bytes([b[0], b[1]]).to_f32());
                let j = c % 32;
                let want = match format {
                    BlockFormat::Q8_0 => f64::from(b[2 + j] as i8) * d,
                    _ => {
                        let qs = if format == BlockFormat::Q4_1 { &b[4..] } else { &b[2..] };
                        let q = f64::from(if j < 16 { qs[j] & 15 } else { qs[j - 16] >> 4 });
                        if format == BlockFormat::Q4_1 {
                            q * d + f64::from(f16::from_le_bytes([b[2], b[3]]).to_f32())
                        } else {
                            (q - 8.0) * d
                        }
                    }
                };
                assert_eq!(gw.value(r, c), want, "{format:?} ({r}, {c})");
            }
        }
    }
    Ok(())
}

/// The exact product with the dequantized weights, and the documented bound of the
/// int8-activation mode for each output.
fn exact_and_bound(
    x: &[f32],
    w: &GroupWeights,
    bias: Option<&[f32]>,
    m: usize,
    mode: Mode,
    blocks: ActivationBlocks,
) -> (Vec<f64>, Vec<f64>) {
    let (k, n, g) = (w.k(), w.n(), w.group_size());
    let block = if blocks == ActivationBlocks::SuperBlock { w.activation_block() } else { g };
    let groups = k / g;
    let u = 2f64.powi(-24);
    let gamma = |c: f64| c * u / (1.0 - c * u);
    let (mut exact, mut bound) = (vec![0.0; m * n], vec![0.0; m * n]);
    for i in 0..m {
        let row = &x[i * k..(i + 1) * k];
        // The activation scales as the kernel computes them (f32 division, one per block of
        // `block` inputs: the group, or the super-block of two-level weights), for each group.
        let sx: Vec<f64> = (0..groups)
            .map(|gi| {
                let b = gi * g / block * block;
                f64::from(row[b..b + block].iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0)
            })
            .collect();
        for c in 0..n {
            let mut y = bias.map_or(0.0, |b| f64::from(b[c]));
            let (mut act, mut t) = (0.0, bias.map_or(0.0, |b| f64::from(b[c]).abs()));
            // Float mode: T' = Σ |x_k| (|s · v_k| + |m|) + |bias|.
            let mut t_float = t;
            for gi in 0..groups {
                let min = f64::from(w.params(c, gi).2);
                let (mut wsum, mut dot) = (0.0, 0.0);
                for j in gi * g..(gi + 1) * g {
                    let wv = w.value(c, j);
                    y += f64::from(row[j]) * wv;
                    wsum += wv.abs();
                    t_float += f64::from(row[j]).abs() * ((wv - min).abs() + min.abs());
                    let q = if sx[gi] == 0.0 {
                        0.0
                    } else {
                        (f64::from(row[j] / sx[gi] as f32)).round_ties_even().clamp(-127.0, 127.0)
                    };
                    dot += q * sx[gi] * wv;
                }
                act += sx[gi] * (0.5 + 2f64.powi(-17)) * wsum;
                t += dot.abs() + if w.codes_kind().has_min() { dot.abs() } else { 0.0 };
            }
            exact[i * n + c] = y;
            bound[i * n + c] = match mode {
                Mode::Int8 => act + gamma((2 * groups + 4) as f64) * t + u * (y.abs() + act),
                // The f64 sum `y` itself is off by at most K · 2^-53 · T', far below this.
                Mode::Float => gamma((g / 2 + 2 * groups + 4) as f64) * t_float * (1.0 + 1e-6),
            };
        }
    }
    (exact, bound)
}

/// The compute modes with the activation blocks each takes: the int8 mode with both.
const SETTINGS: [(Mode, ActivationBlocks); 3] = [
    (Mode::Int8, ActivationBlocks::SuperBlock),
    (Mode::Int8, ActivationBlocks::Group),
    (Mode::Float, ActivationBlocks::SuperBlock),
];

fn check_bound(rng: &mut Rng, m: usize, n: usize, k: usize, group: usize, outliers: bool, mode: Mode) -> Res {
    let w = weights(rng, n, k, outliers);
    let x = activations(rng, m, k, outliers);
    let bias: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 0.1).collect();
    for gw in all_formats(&w, n, k, group)? {
        for (_, blocks) in SETTINGS.into_iter().filter(|s| s.0 == mode) {
            for b in [None, Some(&bias[..])] {
                let mut y = vec![0f32; m * n];
                let g = GroupGemm::new().activation_blocks(blocks);
                run(g, mode, MatRef::row_major(&x, m, k)?, &gw, b, MatMut::row_major(&mut y, m, n)?)?;
                let (exact, bound) = exact_and_bound(&x, &gw, b, m, mode, blocks);
                let what =
                    format!("{mode:?} {blocks:?} {:?} g{group} {m}x{k}x{n} outliers={outliers}", gw.codes_kind());
                for (idx, ((&got, &want), &bd)) in y.iter().zip(&exact).zip(&bound).enumerate() {
                    let err = (f64::from(got) - want).abs();
                    assert!(err <= bd, "{what} [{idx}]: |{got} - {want}| = {err} > {bd}");
                }
                // The bound is not vacuous: for the int8 mode the activations' rounding
                // dominates, of the order of a percent of the outputs (as for llama.cpp's Q8
                // activations), more where one scale spans a super-block with outliers in it;
                // for the float mode it is f32 arithmetic, a worst case far below 10^-3 (the
                // errors themselves are about 10^-7, see relative_errors_on_a_layer_sized_product).
                let scale: f64 = exact.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-30);
                let bsum: f64 = bound.iter().map(|v| v * v).sum::<f64>().sqrt();
                let wide = gw.activation_block() > group && blocks == ActivationBlocks::SuperBlock;
                let limit = match mode {
                    Mode::Int8 if wide && outliers => 1.0,
                    Mode::Int8 => 0.5,
                    Mode::Float => 1e-3,
                };
                assert!(bsum / scale < limit, "{what}: bound {bsum} against outputs {scale}");
            }
        }
    }
    Ok(())
}

#[test]
fn both_modes_are_within_their_bounds_on_random_data() -> Res {
    let mut rng = Rng::new(11);
    for mode in MODES {
        for (m, n, k, group) in
            [(1, 7, 256, 32), (3, 5, 512, 128), (16, 9, 256, 256), (2, 33, 192, 64), (1, 1, 32, 32), (2, 9, 128, 16)]
        {
            check_bound(&mut rng, m, n, k, group, false, mode)?;
        }
    }
    Ok(())
}

#[test]
fn both_modes_are_within_their_bounds_with_outliers() -> Res {
    let mut rng = Rng::new(12);
    for mode in MODES {
        for (m, n, k, group) in [(1, 8, 256, 32), (4, 6, 512, 128), (2, 5, 256, 64)] {
            check_bound(&mut rng, m, n, k, group, true, mode)?;
        }
    }
    Ok(())
}

/// The relative error each mode promises on a layer-sized product (K = 4096, llama.cpp's
/// `Q4_0` weights): float activations at most 10^-5, int8 activations below a percent.
#[test]
fn relative_errors_on_a_layer_sized_product() -> Res {
    let mut rng = Rng::new(16);
    let (m, n, k) = (2, 24, 4096);
    let w = weights(&mut rng, n, k, false);
    let x = activations(&mut rng, m, k, false);
    let gw = GroupWeights::q4_0(&BlockFormat::Q4_0.quantize(&w)?, n, k)?;
    for (mode, limit) in [(Mode::Float, 1e-5), (Mode::Int8, 1e-2)] {
        let mut y = vec![0f32; m * n];
        run(GroupGemm::new(), mode, MatRef::row_major(&x, m, k)?, &gw, None, MatMut::row_major(&mut y, m, n)?)?;
        let (exact, _) = exact_and_bound(&x, &gw, None, m, mode, ActivationBlocks::SuperBlock);
        let err: f64 = y.iter().zip(&exact).map(|(&a, &b)| (f64::from(a) - b).powi(2)).sum::<f64>().sqrt();
        let norm: f64 = exact.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!(err / norm <= limit, "{mode:?}: relative error {} > {limit}", err / norm);
        // Far from zero error too, for the int8 mode: it does quantize the activations.
        if mode == Mode::Int8 {
            assert!(err / norm > 1e-4, "int8 mode relative error {} is implausibly small", err / norm);
        }
    }
    Ok(())
}

/// Step 1 of the int8 mode as the module docs write it, on one block of activations: the
/// scale `amax / 127` and the codes.
fn step1(xs: &[f32]) -> (f32, Vec<i32>) {
    let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
    let sx = amax / 127.0;
    let q = xs
        .iter()
        .map(|&v| if amax == 0.0 { 0 } else { (v / sx).round_ties_even().clamp(-127.0, 127.0) as i32 })
        .collect();
    (sx, q)
}

/// The arithmetic of the module docs, step by step, on weights whose codes and parameters are
/// known: the default kernel must give exactly these bits (and every tier is held to the
/// reference's below).
#[test]
fn both_modes_follow_the_documented_arithmetic() -> Res {
    let mut rng = Rng::new(13);
    let (m, n, k, g) = (2, 3, 96, 32);
    let groups = k / g;
    let x = activations(&mut rng, m, k, true);
    let u: Vec<i64> = (0..n * k).map(|_| rng.int(0, 15)).collect();
    let q8: Vec<i8> = (0..n * k).map(|_| rng.int(-128, 127) as i8).collect();
    // f16-exact parameters, so llama.cpp's Q4_1 bytes carry them unchanged.
    let s: Vec<f32> = (0..n * groups).map(|_| f16::from_f64(rng.uniform(1e-3, 1e-2)).to_f32()).collect();
    let mins: Vec<f32> = (0..n * groups).map(|_| f16::from_f64(rng.uniform(-0.1, 0.0)).to_f32()).collect();
    let z: Vec<i64> = (0..n * groups).map(|_| rng.int(0, 15)).collect();
    let sym4: Vec<I4x2> = u.chunks(2).map(|p| I4x2::pack(&[p[0] - 8, p[1] - 8])).collect();
    let asym4: Vec<U4x2> = u.chunks(2).map(U4x2::pack).collect();
    let mut q41 = Vec::new();
    for (blk, codes) in u.chunks(32).enumerate() {
        q41.extend_from_slice(&f16::from_f32(s[blk]).to_le_bytes());
        q41.extend_from_slice(&f16::from_f32(mins[blk]).to_le_bytes());
        q41.extend((0..16).map(|j| (codes[j] | (codes[j + 16] << 4)) as u8));
    }
    let cases = [
        (GroupWeights::sym4(&sym4, &s, n, k, g)?, "sym4"),
        (GroupWeights::asym4(&asym4, &s, &z, n, k, g)?, "asym4"),
        (GroupWeights::sym8(&q8, &s, n, k, g)?, "sym8"),
        (GroupWeights::q4_1(&q41, n, k)?, "q4_1"),
    ];
    for (gw, name) in &cases {
        let mut y = vec![0f32; m * n];
        GroupGemm::new().int8_activations(MatRef::row_major(&x, m, k)?, gw, None, MatMut::row_major(&mut y, m, n)?)?;
        for i in 0..m {
            for c in 0..n {
                let mut acc = 0f32;
                for gi in 0..groups {
                    let (sx, qx) = step1(&x[i * k + gi * g..i * k + gi * g + g]);
                    let sum: i32 = qx.iter().sum();
                    let at = c * groups + gi;
                    let code = |j: usize| -> i32 {
                        let idx = c * k + gi * g + j;
                        match *name {
                            "sym4" => u[idx] as i32 - 8,
                            "sym8" => i32::from(q8[idx]),
                            _ => u[idx] as i32,
                        }
                    };
                    let raw: i32 = (0..g).map(|j| qx[j] * code(j)).sum();
                    let d = if *name == "asym4" { raw - z[at] as i32 * sum } else { raw };
                    acc = s[at].mul_add(sx * d as f32, acc);
                    if *name == "q4_1" {
                        acc = mins[at].mul_add(sx * sum as f32, acc);
                    }
                }
                assert_eq!(y[i * n + c].to_bits(), acc.to_bits(), "{name} ({i}, {c})");
            }
        }
        // The float mode: v = u - z as f32, two fused partial sums by parity,
        // acc = fma(s, p, acc) per group (and fma(min, σ, acc) for Q4_1), no bias here.
        GroupGemm::new().float_activations(MatRef::row_major(&x, m, k)?, gw, None, MatMut::row_major(&mut y, m, n)?)?;
        for i in 0..m {
            for c in 0..n {
                let mut acc = 0f32;
                for gi in 0..groups {
                    let at = c * groups + gi;
                    let (mut part, mut sig) = ([0f32; 2], [0f32; 2]);
                    for j in 0..g {
                        let (idx, xv) = (c * k + gi * g + j, x[i * k + gi * g + j]);
                        let v = match *name {
                            "sym4" => u[idx] as i32 - 8,
                            "asym4" => u[idx] as i32 - z[at] as i32,
                            "sym8" => i32::from(q8[idx]),
                            _ => u[idx] as i32,
                        };
                        part[j % 2] = xv.mul_add(v as f32, part[j % 2]);
                        sig[j % 2] += xv;
                    }
                    acc = s[at].mul_add(part[0] + part[1], acc);
                    if *name == "q4_1" {
                        acc = mins[at].mul_add(sig[0] + sig[1], acc);
                    }
                }
                assert_eq!(y[i * n + c].to_bits(), acc.to_bits(), "float mode {name} ({i}, {c})");
            }
        }
    }
    Ok(())
}

/// The int8 mode on two-level weights (`Q4_K`, with minimums; `Q6_K`, signed 6-bit codes in
/// groups of 16), step by step as the module docs write it: with one activation scale a
/// super-block, `t = Σ_g fma(s_w,g, d_g, ·)` (and `fma(m_g, σ_g, ·)`) then `acc = fma(t, s_x, acc)`;
/// with one a group, the one-level form. The default kernel gives exactly these bits.
#[test]
fn two_level_weights_follow_the_documented_arithmetic() -> Res {
    let mut rng = Rng::new(18);
    let (m, n, k) = (2, 3, 512);
    let x = activations(&mut rng, m, k, true);
    let w = weights(&mut rng, n, k, true);
    for format in [BlockFormat::Q4_K, BlockFormat::Q6_K] {
        let gw = GroupWeights::from_blocks(format, &format.quantize(&w)?, n, k)?;
        let (g, block) = (gw.group_size(), gw.activation_block());
        assert_eq!(block, 256, "{format:?}: one activation scale a super-block");
        // Each weight's integer code, from its exact value and its group's parameters.
        let code = |c: usize, j: usize| -> i32 {
            let (s, _, min) = gw.params(c, j / g);
            let u = (gw.value(c, j) - f64::from(min)) / f64::from(s);
            assert_eq!(u, u.round(), "{format:?} ({c}, {j}): an integer code");
            u as i32
        };
        for blocks in [ActivationBlocks::SuperBlock, ActivationBlocks::Group] {
            let mut y = vec![0f32; m * n];
            let gemm = GroupGemm::new().activation_blocks(blocks);
            gemm.int8_activations(MatRef::row_major(&x, m, k)?, &gw, None, MatMut::row_major(&mut y, m, n)?)?;
            for i in 0..m {
                for c in 0..n {
                    let mut acc = 0f32;
                    for b in 0..k / block {
                        let row = &x[i * k..(i + 1) * k];
                        let (sx, q) = step1(&row[b * block..(b + 1) * block]);
                        let mut t = 0f32;
                        for gi in b * block / g..(b + 1) * block / g {
                            let (s, _, min) = gw.params(c, gi);
                            let (sxg, qg) = match blocks {
                                ActivationBlocks::SuperBlock => {
                                    let at = gi * g - b * block;
                                    (sx, q[at..at + g].to_vec())
                                }
                                ActivationBlocks::Group => step1(&row[gi * g..(gi + 1) * g]),
                            };
                            let d: i32 = (0..g).map(|j| qg[j] * code(c, gi * g + j)).sum();
                            let sum: i32 = qg.iter().sum();
                            let with_min = format == BlockFormat::Q4_K;
                            if blocks == ActivationBlocks::SuperBlock {
                                t = s.mul_add(d as f32, t);
                                if with_min {
                                    t = min.mul_add(sum as f32, t);
                                }
                            } else {
                                acc = s.mul_add(sxg * d as f32, acc);
                                if with_min {
                                    acc = min.mul_add(sxg * sum as f32, acc);
                                }
                            }
                        }
                        if blocks == ActivationBlocks::SuperBlock {
                            acc = t.mul_add(sx, acc);
                        }
                    }
                    assert_eq!(y[i * n + c].to_bits(), acc.to_bits(), "{format:?} {blocks:?} ({i}, {c})");
                }
            }
        }
    }
    Ok(())
}

/// The weights in both layouts: 8 channels (the portable kernel's) and 16 (built in place,
/// whatever this CPU runs, so that every tier's reading of it is tested).
fn layouts(w: &GroupWeights) -> Result<Vec<GroupWeights>, QuantError> {
    let eight = w.for_kernel(KernelChoice::Portable)?;
    let sixteen = if w.layout().starts_with("16") {
        w.clone()
    } else {
        match Tier::ALL.into_iter().find(|t| t.is_available() && matches!(t, Tier::Avx512Vnni | Tier::Amx)) {
            Some(t) => w.for_kernel(KernelChoice::of(t))?,
            // No zmm tier here: the 8-channel weights stand in (the 16-channel reading is
            // tested on CPUs that have one).
            None => eight.clone(),
        }
    };
    Ok(vec![eight, sixteen])
}

/// Weights in either layout hold the same values, and the 16-channel kernels refuse the
/// 8-channel layout with a typed error naming both.
#[test]
fn layouts_hold_the_same_weights_and_are_checked() -> Res {
    let mut rng = Rng::new(16);
    let (n, k) = (21, 128);
    let w = weights(&mut rng, n, k, true);
    for gw in all_formats(&w, n, k, 32)? {
        let [eight, sixteen]: [GroupWeights; 2] = layouts(&gw)?.try_into().expect("two layouts");
        assert!(eight.layout().starts_with("8 channels"), "{}", eight.layout());
        for r in 0..n {
            for c in 0..k {
                assert_eq!(eight.value(r, c).to_bits(), gw.value(r, c).to_bits(), "{r} {c}");
                assert_eq!(sixteen.value(r, c).to_bits(), gw.value(r, c).to_bits(), "{r} {c}");
            }
        }
        let x = activations(&mut rng, 2, k, false);
        for tier in [Tier::Avx512Vnni, Tier::Amx].into_iter().filter(|t| t.is_available()) {
            let mut y = vec![0f32; 2 * n];
            let got = GroupGemm::new().kernel(KernelChoice::of(tier)).int8_activations(
                MatRef::row_major(&x, 2, k)?,
                &eight,
                None,
                MatMut::row_major(&mut y, 2, n)?,
            );
            assert_eq!(got, Err(QuantError::PackedForOtherKernel { packed: eight.layout(), kernel: tier.name() }));
            assert!(sixteen.layout().starts_with("16 channels"), "{}", sixteen.layout());
        }
    }
    Ok(())
}

/// The tiers under test: `QUANT_KERNEL`'s, or every tier this CPU has.
fn tiers() -> Vec<Tier> {
    match quant_traits::cpu::requested_tier().expect("QUANT_KERNEL names a tier") {
        Some(t) => vec![t],
        None => Tier::ALL.into_iter().filter(|t| t.is_available()).collect(),
    }
}

/// Every kernel tier this CPU has, with 1 and 2 threads, gives the reference's bits: every
/// format, group sizes 16 to 256, channel counts that leave a partial panel of eight, row counts
/// past the kernels' blocks of 4 and 8, a bias or none, outliers.
#[test]
fn every_tier_and_thread_count_gives_the_reference_bits() -> Res {
    let mut rng = Rng::new(15);
    for t in Tier::ALL {
        if let Some(missing) = t.missing() {
            println!("group kernels of tier {t} not run: this CPU lacks {missing}");
        }
    }
    for (m, n, k, group) in [
        (1, 37, 256, 32),
        (3, 16, 512, 128),
        (2, 13, 256, 256),
        (5, 24, 192, 64),
        (1, 7, 64, 32),
        (4, 41, 128, 32),
        (7, 56, 96, 32),
        (6, 20, 64, 32),
        (3, 19, 512, 32),
        (2, 40, 256, 32),
        (9, 37, 256, 32),
        (17, 24, 64, 16),
    ] {
        let w = weights(&mut rng, n, k, true);
        let x = activations(&mut rng, m, k, true);
        let bias: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        for gw in all_formats(&w, n, k, group)? {
            for b in [None, Some(&bias[..])] {
                let what = format!("{:?} {m}x{k}x{n} g{group} bias={}", gw.codes_kind(), b.is_some());
                every_tier_gives_the_reference_bits(&gw, &x, m, b, false, &what)?;
            }
        }
    }
    Ok(())
}

/// Both modes of `w` on `x` (`m` rows) on every tier under test, in the tier's own layout and
/// in the 16-channel one when that differs (eight-channel kernels read its halves), with 1 and
/// 2 threads: the portable reference's bits (with `nan_equal`, any NaN matches any NaN: for
/// weights whose products overflow).
fn every_tier_gives_the_reference_bits(
    w: &GroupWeights,
    x: &[f32],
    m: usize,
    bias: Option<&[f32]>,
    nan_equal: bool,
    what: &str,
) -> Res {
    let (n, k) = (w.n(), w.k());
    for (mode, blocks) in SETTINGS {
        let mut want = vec![0f32; m * n];
        let reference = GroupGemm::new().kernel(KernelChoice::Portable).threads(1).activation_blocks(blocks);
        run(reference, mode, MatRef::row_major(x, m, k)?, w, bias, MatMut::row_major(&mut want, m, n)?)?;
        for tier in tiers() {
            let own = w.for_kernel(KernelChoice::of(tier))?;
            let wide = layouts(w)?.pop().expect("two layouts");
            for (weights, threads) in [(&own, 1), (&own, 2), (&wide, 1), (&wide, 2)] {
                let g = GroupGemm::new().kernel(KernelChoice::of(tier)).threads(threads).activation_blocks(blocks);
                let mut y = vec![f32::NAN; m * n];
                run(g, mode, MatRef::row_major(x, m, k)?, weights, bias, MatMut::row_major(&mut y, m, n)?)?;
                let same = |p: &f32, q: &f32| p.to_bits() == q.to_bits() || (nan_equal && p.is_nan() && q.is_nan());
                assert!(
                    y.iter().zip(&want).all(|(p, q)| same(p, q)),
                    "{mode:?} {blocks:?} {tier} {threads}T {} {what}: {y:?} vs {want:?}",
                    weights.layout()
                );
            }
        }
    }
    Ok(())
}

/// `f16` and `bf16` activations give the results of the same values in `f32`, in both modes.
#[test]
fn half_precision_activations_convert_exactly() -> Res {
    let mut rng = Rng::new(14);
    let (m, n, k) = (3, 5, 64);
    let w = weights(&mut rng, n, k, false);
    let gw = GroupWeights::q4_0(&BlockFormat::Q4_0.quantize(&w)?, n, k)?;
    let xh: Vec<f16> = activations(&mut rng, m, k, false).iter().map(|&v| f16::from_f32(v)).collect();
    let xb: Vec<bf16> = xh.iter().map(|v| bf16::from_f32(v.to_f32())).collect();
    let xf: Vec<f32> = xh.iter().map(|v| v.to_f32()).collect();
    // bf16 keeps fewer bits than f16: compare with those values in f32.
    let xbf: Vec<f32> = xb.iter().map(|v| v.to_f32()).collect();
    for mode in MODES {
        let g = GroupGemm::new();
        let (mut yf, mut yh, mut yb, mut ybf) =
            (vec![0f32; m * n], vec![1f32; m * n], vec![2f32; m * n], vec![3f32; m * n]);
        run(g, mode, MatRef::row_major(&xf, m, k)?, &gw, None, MatMut::row_major(&mut yf, m, n)?)?;
        run(g, mode, MatRef::row_major(&xh, m, k)?, &gw, None, MatMut::row_major(&mut yh, m, n)?)?;
        run(g, mode, MatRef::row_major(&xb, m, k)?, &gw, None, MatMut::row_major(&mut yb, m, n)?)?;
        run(g, mode, MatRef::row_major(&xbf, m, k)?, &gw, None, MatMut::row_major(&mut ybf, m, n)?)?;
        assert_eq!(yh, yf, "{mode:?} f16");
        assert_eq!(yb, ybf, "{mode:?} bf16");
    }
    Ok(())
}

#[test]
fn bad_input_is_a_typed_error() -> Res {
    let scales = [1.0f32; 4];
    let codes = [I4x2(0); 64];
    assert_eq!(GroupWeights::sym4(&codes, &scales, 2, 64, 40), Err(QuantError::GroupSizeUnsupported { size: 40 }));
    assert_eq!(GroupWeights::sym4(&codes, &scales, 2, 64, 512), Err(QuantError::GroupSizeUnsupported { size: 512 }));
    assert_eq!(
        GroupWeights::sym4(&codes, &scales, 2, 96, 64),
        Err(QuantError::NotABlockMultiple {
            what: "K (inputs per output channel)",
            format: "group",
            len: 96,
            block: 64
        })
    );
    assert_eq!(
        GroupWeights::sym4(&codes, &scales[..3], 2, 64, 32),
        Err(QuantError::LengthMismatch { what: "scales (one per group)", expected: 4, found: 3 })
    );
    assert_eq!(
        GroupWeights::sym4(&codes[..63], &scales, 2, 64, 32),
        Err(QuantError::LengthMismatch { what: "4-bit codes (bytes)", expected: 64, found: 63 })
    );
    assert!(matches!(
        GroupWeights::sym4(&codes, &[1.0, f32::NAN, 1.0, 1.0], 2, 64, 32),
        Err(QuantError::NonFiniteParameter { what: "scale of group", index: 1, .. })
    ));
    let ucodes = [U4x2(0); 64];
    assert_eq!(
        GroupWeights::asym4(&ucodes, &scales, &[0, 3, 16, 0], 2, 64, 32),
        Err(QuantError::ZeroPointOutOfRange { zero_point: 16, index: 2, operand: "u4", min: 0, max: 15 })
    );
    assert_eq!(
        GroupWeights::q4_0(&[0u8; 36], 1, 48),
        Err(QuantError::NotABlockMultiple {
            what: "K (inputs per output channel)",
            format: "Q4_0",
            len: 48,
            block: 32
        })
    );
    assert_eq!(
        GroupWeights::q4_0(&[0u8; 35], 1, 64),
        Err(QuantError::LengthMismatch { what: "block bytes", expected: 36, found: 35 })
    );
    let mut nan_block = [0u8; 18];
    nan_block[..2].copy_from_slice(&f16::NAN.to_le_bytes());
    assert!(matches!(
        GroupWeights::q4_0(&nan_block, 1, 32),
        Err(QuantError::NonFiniteParameter { what: "scale of block", index: 0, .. })
    ));
    // k-quants take whole super-blocks of 256; a NaN `d` of Q6_K (its last two bytes) is
    // named by its block, row-major.
    assert_eq!(
        GroupWeights::from_blocks(BlockFormat::Q4_K, &[0u8; 2 * 144], 1, 384),
        Err(QuantError::NotABlockMultiple {
            what: "K (inputs per output channel)",
            format: "Q4_K",
            len: 384,
            block: 256
        })
    );
    assert_eq!(
        GroupWeights::from_blocks(BlockFormat::Q6_K, &[0u8; 3 * 210], 2, 512),
        Err(QuantError::LengthMismatch { what: "block bytes", expected: 4 * 210, found: 3 * 210 })
    );
    let mut q6 = vec![0u8; 4 * 210];
    q6[3 * 210 + 192] = 1; // a non-zero sub-block scale, so the NaN reaches a product
    q6[3 * 210 + 208..3 * 210 + 210].copy_from_slice(&f16::NAN.to_le_bytes());
    assert!(matches!(
        GroupWeights::from_blocks(BlockFormat::Q6_K, &q6, 2, 512),
        Err(QuantError::NonFiniteParameter { what: "scale of block", index: 3, .. })
    ));
    // Multiply, both modes: shapes, bias, a NaN activation named by row and column.
    let gw = GroupWeights::sym4(&codes, &scales, 2, 64, 32)?;
    let x = vec![1.0f32; 3 * 64];
    let mut y = vec![0f32; 6];
    for mode in MODES {
        let g = GroupGemm::new();
        assert!(matches!(
            run(g, mode, MatRef::row_major(&x, 3, 63)?, &gw, None, MatMut::row_major(&mut y, 3, 2)?),
            Err(QuantError::InnerDimensionMismatch { a_cols: 63, b_rows: 64, .. })
        ));
        assert!(matches!(
            run(g, mode, MatRef::row_major(&x, 3, 64)?, &gw, None, MatMut::row_major(&mut y[..4], 2, 2)?),
            Err(QuantError::LengthMismatch { what: "y rows", expected: 3, found: 2 })
        ));
        assert!(matches!(
            run(g, mode, MatRef::row_major(&x, 3, 64)?, &gw, Some(&[0.0]), MatMut::row_major(&mut y, 3, 2)?),
            Err(QuantError::LengthMismatch { what: "bias (one per output channel)", .. })
        ));
        let mut bad = x.clone();
        bad[64 + 5] = f32::INFINITY;
        y.fill(7.0);
        assert!(matches!(
            run(g, mode, MatRef::row_major(&bad, 3, 64)?, &gw, None, MatMut::row_major(&mut y, 3, 2)?),
            Err(QuantError::NonFiniteInMatrix { row: 1, col: 5, .. })
        ));
        assert_eq!(y, [7.0; 6], "{mode:?}: nothing written");
    }
    Ok(())
}

/// Our two-level formats ([`GroupWeights::from_super`]), every grid and code width the kernels
/// take, sub-blocks of 16 to 64 under 6-bit or `f16` sub-scales: each weight is the format's
/// own value (exactly; the offset grid's reconstruction rounds twice in `f32`, so within those
/// two roundings), and every tier and thread count gives the reference's bits in both modes.
#[test]
fn two_level_formats_multiply_exactly_on_every_tier() -> Res {
    use quant_core::superblock::{quantize_super, Grid, SubScale, SuperSpec};
    let mut rng = Rng::new(17);
    let (m, n, k) = (3, 21, 512);
    let w = weights(&mut rng, n, k, true);
    let x = activations(&mut rng, m, k, true);
    let mut seen = std::collections::BTreeSet::new();
    for grid in [Grid::Symmetric, Grid::Offset, Grid::ZeroPoint, Grid::Levels] {
        for bits in 2..=8u32 {
            for (sub, sub_scale) in [(16, SubScale::Bits(6)), (32, SubScale::F16), (64, SubScale::Bits(8))] {
                let Ok(spec) = SuperSpec::new(grid, bits, sub)
                    .and_then(|s| s.with_sub_scale(sub_scale))
                    .and_then(|s| s.with_super_len(Some(256)))
                else {
                    continue; // a combination the format itself refuses (levels: 4 to 6 bits)
                };
                let q = quantize_super(&w, MatrixShape::new(n, k), spec, None)?;
                let gw = match GroupWeights::from_super(&q) {
                    Err(QuantError::FormatUnsupported { .. })
                        if bits == 8 && matches!(grid, Grid::Offset | Grid::ZeroPoint) =>
                    {
                        continue;
                    }
                    other => other?,
                };
                seen.insert(format!("{:?}", gw.codes_kind()));
                let back: Vec<f32> = q.dequantize();
                for r in 0..n {
                    for c in 0..k {
                        let (exact, want) = (gw.value(r, c), f64::from(back[r * k + c]));
                        let (d, m0) = q.sub_block_params(r, c / sub);
                        // One rounding of the exact value; the offset grid's d·v rounded, then
                        // + m rounded: two half-ulps.
                        let ok = if grid == Grid::Offset {
                            let tol = (f64::from(d) * 127.0).abs() * 2f64.powi(-24) + want.abs() * 2f64.powi(-24);
                            (exact - want).abs() <= tol
                        } else {
                            f64::from(exact as f32) == want
                        };
                        assert!(ok, "{grid:?}{bits}/{sub} ({r}, {c}): {exact} vs {want} (d {d}, m {m0})");
                    }
                }
                every_tier_gives_the_reference_bits(&gw, &x, m, None, false, &format!("{grid:?}{bits}/{sub}"))?;
            }
        }
    }
    // Every held form was reached.
    assert_eq!(seen.len(), 8, "{seen:?}");
    // Sub-blocks the kernels cannot take, and codes that do not fit a byte, are errors.
    let q = quantize_super(&w, MatrixShape::new(n, k), SuperSpec::new(Grid::Symmetric, 4, 8)?, None)?;
    assert_eq!(GroupWeights::from_super(&q), Err(QuantError::GroupSizeUnsupported { size: 8 }));
    let q = quantize_super(&w, MatrixShape::new(n, k), SuperSpec::new(Grid::ZeroPoint, 8, 32)?, None)?;
    assert!(matches!(GroupWeights::from_super(&q), Err(QuantError::FormatUnsupported { format: "zp8", .. })));
    Ok(())
}

/// Any bytes at all, not only a quantizer's: `from_blocks` either names the first block whose
/// scale or minimum is NaN or infinite, or holds weights that are quant-core's dequantized
/// values (as numbers; ggml's arithmetic), and then both modes run on every tier with the
/// reference's bits. Random bytes reach every code, sub-block scale and sign, subnormal and
/// huge `f16` scales, and MXFP4's largest exponents.
#[test]
fn arbitrary_block_bytes_decode_as_quant_core_does_or_are_named() -> Res {
    let mut rng = Rng::new(19);
    let (n, m) = (3, 2);
    let (mut accepted, mut refused) = (0, 0);
    for round in 0..24 {
        for format in BlockFormat::ALL {
            let k = format.block_len() * 2;
            let len = n * k / format.block_len() * format.block_bytes();
            // Odd rounds: random bytes (about one f16 in 32 is then NaN or infinite). Even
            // rounds: a quantizer's blocks with one byte in eight made random, so that most
            // blocks are accepted and their codes and scales still vary.
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.int(0, 255) as u8).collect();
            if round % 2 == 0 {
                let good = format.quantize(&weights(&mut rng, n, k, true))?;
                for (b, &g) in bytes.iter_mut().zip(&good) {
                    if rng.int(0, 7) != 0 {
                        *b = g;
                    }
                }
            }
            let back = format.dequantize(&bytes)?;
            let gw = match GroupWeights::from_blocks(format, &bytes, n, k) {
                Ok(gw) => gw,
                Err(QuantError::NonFiniteParameter { index, .. }) => {
                    refused += 1;
                    // The named block dequantizes to a NaN or infinite value somewhere.
                    assert!(index < n * k / format.block_len(), "{format:?} block {index}");
                    let vals = &back[index * format.block_len()..(index + 1) * format.block_len()];
                    assert!(vals.iter().any(|v| !v.is_finite()), "{format:?} block {index}: {vals:?}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            accepted += 1;
            for r in 0..n {
                for c in 0..k {
                    let (got, want) = (gw.value(r, c), back[r * k + c]);
                    assert!(
                        got as f32 == want || (want.is_infinite() && (got as f32).is_infinite()),
                        "{format:?} ({r}, {c}): {got} vs {want}"
                    );
                }
            }
            let x = activations(&mut rng, m, k, false);
            every_tier_gives_the_reference_bits(&gw, &x, m, None, true, &format!("{format:?}"))?;
        }
    }
    assert!(accepted > 100 && refused > 10, "accepted {accepted}, refused {refused}");
    Ok(())
}
