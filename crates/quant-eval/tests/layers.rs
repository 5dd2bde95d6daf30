//! Each linear layer against the exact product of the operands it quantized.

use quant_core::{quantize_into, BlockFormat, QuantParams, QuantSpec};
use quant_eval::{
    ActivationBlocks, ActivationMode, DynamicInt8, EvalError, F32Linear, Grouped, Linear, LinearWeights, RowScheme,
    StaticInt8,
};
use quant_matmul::GroupWeights;
use rstest::rstest;

/// Deterministic values uniform in `[-1, 1)`.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = quant_testkit::Rng::new(seed);
    (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect()
}

/// `x · Wᵀ + b` in `f64`.
fn exact(x: &[f64], w: &[f64], b: &[f32], k: usize) -> Vec<f64> {
    let n = b.len();
    let mut y = Vec::new();
    for xr in x.chunks_exact(k) {
        for j in 0..n {
            let d: f64 = xr.iter().zip(&w[j * k..(j + 1) * k]).map(|(a, c)| a * c).sum();
            y.push(d + f64::from(b[j]));
        }
    }
    y
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// `v` quantized with `params` under `spec` and dequantized, in `f64` (exactly).
fn round_trip(v: &[f32], spec: QuantSpec, p: &QuantParams<f32>) -> Vec<f64> {
    let mut codes = vec![0i32; v.len()];
    quantize_into(v, spec, p, &mut codes).unwrap();
    codes.iter().map(|&q| (q as i64 - p.zero_point()) as f64 * f64::from(p.scale())).collect()
}

/// The weights as [`DynamicInt8`] and [`StaticInt8`] hold them: `i8` per row, symmetric.
fn int8_weights(w: &[f32], k: usize) -> Vec<f64> {
    let spec = QuantSpec::symmetric(8).unwrap();
    w.chunks_exact(k).flat_map(|r| round_trip(r, spec, &QuantParams::from_tensor(spec, r).unwrap())).collect()
}

fn close(got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((f64::from(*g) - w).abs() <= tol * (1.0 + w.abs()), "output {i}: {g} against {w}");
    }
}

#[rstest]
#[case(1, 64, 8)]
#[case(7, 96, 33)]
#[case(16, 384, 40)]
fn f32_layer_is_the_product(#[case] m: usize, #[case] k: usize, #[case] n: usize) {
    let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
    let layer = F32Linear::new(&LinearWeights { name: "w", n, k, weight: &w, bias: &b });
    let mut y = vec![0f32; m * n];
    layer.forward(&x, m, &mut y).unwrap();
    close(&y, &exact(&wide(&x), &wide(&w), &b, k), 1e-5);
    assert_eq!(layer.stored_bytes(), 4 * n * k);
}

#[rstest]
fn dynamic_w8a8_is_the_product_of_its_codes(
    #[values((1, 64, 8), (5, 96, 33), (16, 384, 40))] (m, k, n): (usize, usize, usize),
    #[values(RowScheme::Asymmetric, RowScheme::Symmetric)] scheme: RowScheme,
) {
    let (mut x, w, b) = (values(m * k, 4), values(n * k, 5), values(n, 6));
    // Rows of very different ranges, one of them one-sided: each gets its own parameters.
    for (i, r) in x.chunks_exact_mut(k).enumerate() {
        r.iter_mut().for_each(|v| *v *= (1 + 10 * i) as f32);
        if i == 1 {
            r.iter_mut().for_each(|v| *v = v.abs());
        }
    }
    let layer = DynamicInt8::new(&LinearWeights { name: "w", n, k, weight: &w, bias: &b }, scheme).unwrap();
    let mut y = vec![0f32; m * n];
    layer.forward(&x, m, &mut y).unwrap();
    // Each row quantized with its own parameters under the scheme.
    let spec = match scheme {
        RowScheme::Asymmetric => QuantSpec::asymmetric(8).unwrap(),
        RowScheme::Symmetric => QuantSpec::symmetric(8).unwrap(),
    };
    let xq: Vec<f64> =
        x.chunks_exact(k).flat_map(|r| round_trip(r, spec, &QuantParams::from_tensor(spec, r).unwrap())).collect();
    // The integer product is exact (below 2^24 here, so exact in f32 too); the scale product,
    // the multiplication and the bias's addition each round once in f32.
    close(&y, &exact(&xq, &int8_weights(&w, k), &b, k), 1e-6);
    assert_eq!(layer.stored_bytes(), n * k + 4 * n);
}

#[test]
fn static_w8a8_saturates_outside_its_range() {
    let (m, k, n) = (6, 64, 12);
    let (x, w, b) = (values(m * k, 7), values(n * k, 8), values(n, 9));
    let spec = QuantSpec::asymmetric(8).unwrap();
    // Calibrated on half the range: values beyond it saturate.
    let act = QuantParams::<f32>::from_range(spec, -0.5, 0.5).unwrap();
    let layer = StaticInt8::new(&LinearWeights { name: "w", n, k, weight: &w, bias: &b }, act).unwrap();
    let mut y = vec![0f32; m * n];
    layer.forward(&x, m, &mut y).unwrap();
    let xq = round_trip(&x, spec, &act);
    assert!(xq.iter().all(|v| v.abs() <= 0.51));
    close(&y, &exact(&xq, &int8_weights(&w, k), &b, k), 1e-6);
}

#[rstest]
#[case(BlockFormat::Q8_0)]
#[case(BlockFormat::Q4_K)]
fn grouped_layer_is_the_product_of_its_dequantized_weights(#[case] format: BlockFormat) {
    let (m, k, n) = (3, 256, 16);
    let (x, w, b) = (values(m * k, 10), values(n * k, 11), values(n, 12));
    let bytes = format.quantize(&w).unwrap();
    let dequantized = wide(&format.dequantize(&bytes).unwrap());
    let want = exact(&wide(&x), &dequantized, &b, k);
    let lw = LinearWeights { name: "w", n, k, weight: &w, bias: &b };
    let modes = [
        ActivationMode::Float,
        ActivationMode::Int8(ActivationBlocks::SuperBlock),
        ActivationMode::Int8(ActivationBlocks::Group),
    ];
    for mode in modes {
        let weights = GroupWeights::from_blocks(format, &bytes, n, k).unwrap();
        // Inputs per activation scale: the super-block (256) of Q4_K unless groups are asked
        // for, 32 for Q8_0.
        let block = match mode {
            ActivationMode::Int8(ActivationBlocks::SuperBlock) => weights.activation_block(),
            _ => weights.group_size(),
        };
        let layer = Grouped::new(&lw, weights, bytes.len(), mode).unwrap();
        let mut y = vec![0f32; m * n];
        layer.forward(&x, m, &mut y).unwrap();
        assert_eq!(layer.stored_bytes(), bytes.len());
        if mode == ActivationMode::Float {
            close(&y, &want, 1e-5);
            continue;
        }
        // Activations rounded to i8 per block: each moves by at most half its block's step,
        // max|x| / 127 / 2, so an output by at most the sum of |w| times those (plus the f32
        // roundings).
        for (i, xr) in x.chunks_exact(k).enumerate() {
            let half_steps: Vec<f64> =
                xr.chunks(block).map(|g| g.iter().fold(0f64, |a, v| a.max(f64::from(v.abs()))) / 254.0).collect();
            for j in 0..n {
                let bound: f64 =
                    (0..k).map(|c| dequantized[j * k + c].abs() * half_steps[c / block]).sum::<f64>() + 1e-5;
                let err = (f64::from(y[i * n + j]) - want[i * n + j]).abs();
                assert!(err <= bound, "row {i} output {j}: error {err} beyond {bound}");
            }
        }
    }
}

#[test]
fn bad_operands_are_named_errors() {
    let (k, n) = (32, 4);
    let (w, b) = (values(n * k, 13), values(n, 14));
    let lw = LinearWeights { name: "encoder.layer.0.output.dense.weight", n, k, weight: &w, bias: &b };
    let layer = DynamicInt8::new(&lw, RowScheme::Asymmetric).unwrap();
    let mut y = vec![0f32; n];
    let short = layer.forward(&values(k - 1, 1), 1, &mut y).unwrap_err();
    assert!(matches!(short, EvalError::Invalid(ref m) if m.contains("output.dense")), "{short}");
    let mut x = values(k, 15);
    x[5] = f32::NAN;
    let nan = layer.forward(&x, 1, &mut y).unwrap_err();
    assert!(
        matches!(nan, EvalError::Quant { ref layer, .. } if layer == "encoder.layer.0.output.dense.weight"),
        "{nan}"
    );
    // A grouped layer of the wrong shape is refused when made.
    let bytes = BlockFormat::Q8_0.quantize(&w).unwrap();
    let g = GroupWeights::from_blocks(BlockFormat::Q8_0, &bytes, n / 2, 2 * k).unwrap();
    let e = Grouped::new(&lw, g, bytes.len(), ActivationMode::Int8(ActivationBlocks::SuperBlock)).err().unwrap();
    assert!(matches!(e, EvalError::Tensor { .. }), "{e}");
}
