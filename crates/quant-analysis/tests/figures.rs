//! The figures behind the advice on choosing a scheme (`docs/conventions.md`), measured here
//! and held by assertions (run with `--nocapture` to see the tables):
//! - on heavy-tailed activations (Student-t, 3 degrees of freedom) at 4 bits, the MSE-optimal
//!   clipping has a lower quantization MSE than min-max (and than a 99.9 % percentile);
//! - on weights with a few outlier input channels at 4 bits, groups of 128, 64 and 32 along the
//!   input have a higher SNR than one scale per output channel, smaller groups higher still.

use quant_analysis::error_stats;
use quant_core::{
    quantize_into, quantize_matrix, Axis, Granularity, MatrixShape, MinMax, MseOptimal, Observer, Percentile,
    QuantError, QuantSpec,
};
use quant_testkit::Rng;

type Res = Result<(), QuantError>;

/// Student-t with `nu` degrees of freedom: `z / sqrt(chi2_nu / nu)`.
fn student_t(rng: &mut Rng, nu: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let chi2: f64 = (0..nu).map(|_| rng.normal().powi(2)).sum();
            (rng.normal() / (chi2 / nu as f64).sqrt()) as f32
        })
        .collect()
}

/// MSE of quantizing `x` with the parameters `observer` gives for `spec`.
fn mse_with<O: Observer>(observer: &O, spec: QuantSpec, x: &[f32]) -> Result<f64, QuantError> {
    let params = observer.params::<f32>(spec)?;
    let mut codes = vec![0i32; x.len()];
    quantize_into(x, spec, &params, &mut codes)?;
    let mut back = vec![0f32; x.len()];
    quant_core::dequantize_into(&codes, x.len(), &params, &mut back)?;
    Ok(error_stats(x, &back)?.mse)
}

#[test]
fn mse_optimal_clipping_beats_min_max_on_heavy_tails_at_4_bits() -> Res {
    let mut rng = Rng::new(2026);
    let x = student_t(&mut rng, 3, 100_000);
    println!("Student-t (3 dof), 100 000 values, observed in 10 batches");
    println!("{:<12} {:<14} {:>12} {:>12} {:>12}", "spec", "observer", "range hi", "MSE", "vs min-max");
    for spec in [QuantSpec::symmetric(4)?, QuantSpec::asymmetric(4)?, QuantSpec::symmetric(8)?] {
        let (mut minmax, mut pct, mut mse) = (MinMax::new(), Percentile::new(99.9)?, MseOptimal::new());
        for batch in x.chunks(10_000) {
            minmax.observe(batch)?;
            pct.observe(batch)?;
            mse.observe(batch)?;
        }
        let base = mse_with(&minmax, spec, &x)?;
        let rows = [
            ("min-max", mse_with(&minmax, spec, &x)?, minmax.range(spec)?.hi),
            ("99.9 %", mse_with(&pct, spec, &x)?, pct.range(spec)?.hi),
            ("MSE-optimal", mse_with(&mse, spec, &x)?, mse.range(spec)?.hi),
        ];
        for (name, m, hi) in rows {
            println!(
                "{:<12} {:<14} {:>12.3} {:>12.4e} {:>11.2}x",
                format!("{:?} {}", spec.scheme(), spec.bits()),
                name,
                hi,
                m,
                m / base
            );
        }
        // Never worse than min-max (it is one of the candidates).
        assert!(rows[2].1 <= base, "{spec:?}: MSE-optimal {} vs min-max {base}", rows[2].1);
        if spec.bits() == 4 {
            // The claim: clipping the tails beats covering them, by a wide margin at 4 bits.
            assert!(rows[2].1 < 0.5 * base, "{spec:?}: MSE-optimal {} vs min-max {base}", rows[2].1);
            assert!(rows[2].1 <= rows[1].1, "{spec:?}: MSE-optimal {} vs percentile {}", rows[2].1, rows[1].1);
        }
    }
    Ok(())
}

#[test]
fn groups_beat_channels_on_outlier_inputs_at_4_bits() -> Res {
    // 128 output channels x 1024 inputs, sigma 0.02, 4 input columns (features) ten times larger,
    // as LLM weights facing outlier activation features have.
    let mut rng = Rng::new(7);
    let shape = MatrixShape::new(128, 1024);
    let outliers = [17usize, 300, 301, 777];
    let w: Vec<f32> = (0..shape.rows * shape.cols)
        .map(|i| (0.02 * rng.normal() * if outliers.contains(&(i % shape.cols)) { 10.0 } else { 1.0 }) as f32)
        .collect();
    let spec = QuantSpec::symmetric(4)?;
    let snr = |g: Granularity| -> Result<f64, QuantError> {
        let q = quantize_matrix::<f32, i8>(&w, shape, spec, g)?;
        Ok(error_stats(&w, &q.dequantize())?.snr_db)
    };
    let per_channel = snr(Granularity::PerChannel(Axis::Rows))?;
    println!("weights 128 x 1024 with 4 outlier input columns, symmetric 4-bit");
    println!("{:<22} {:>8}", "granularity", "SNR dB");
    println!("{:<22} {:>8.2}", "per output channel", per_channel);
    let mut last = per_channel;
    for size in [128, 64, 32] {
        let s = snr(Granularity::PerGroup { axis: Axis::Cols, size })?;
        println!("{:<22} {:>8.2}", format!("groups of {size}"), s);
        assert!(s > last + 0.3, "groups of {size}: {s} dB vs {last} dB");
        last = s;
    }
    assert!(last > per_channel + 3.0, "groups of 32: {last} dB vs per channel {per_channel} dB");
    Ok(())
}
