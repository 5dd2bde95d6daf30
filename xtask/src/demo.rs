//! `cargo xtask demo`: the main job on a built-in default.
//!
//! A synthetic 256 x 512 weight matrix (normal, sigma 0.02, with 8 outlier rows ten times
//! larger and a few single outlier weights, as real LLM weights have) and a 512-element
//! post-ReLU activation vector with a heavy tail are quantized with each scheme, granularity
//! (4-bit weights also per group of 128 and 32 inputs) and width 8/4; the table shows the
//! parameters and the error. Then the seed's matmul example,
//! and an int8 matrix-vector product against the f64 one.

use quant_analysis::{error_stats, ErrorStats};
use quant_core::{quantize_matrix, Axis, Granularity, MatrixShape, QuantError, QuantSpec, Scheme};
use quant_matmul::{quantized_matmul, quantized_matmul_flat, GemmShape};
use quant_testkit::Rng;

const ROWS: usize = 256;
const COLS: usize = 512;

fn weights(rng: &mut Rng) -> Vec<f32> {
    let outlier_rows = [3usize, 40, 77, 128, 129, 200, 230, 255];
    let mut w: Vec<f32> = (0..ROWS * COLS)
        .map(|i| {
            let row_scale = if outlier_rows.contains(&(i / COLS)) { 10.0 } else { 1.0 };
            (0.02 * row_scale * rng.normal()) as f32
        })
        .collect();
    for _ in 0..6 {
        let i = rng.index(w.len());
        w[i] = (rng.uniform(0.5, 1.0) * if rng.index(2) == 0 { 1.0 } else { -1.0 }) as f32;
    }
    w
}

fn activations(rng: &mut Rng) -> Vec<f32> {
    (0..COLS)
        .map(|_| {
            let v = rng.normal().max(0.0);
            let tail = if rng.index(100) == 0 { 8.0 } else { 1.0 };
            (v * tail) as f32
        })
        .collect()
}

struct Row {
    tensor: &'static str,
    spec: QuantSpec,
    granularity: Granularity,
    scales: (f64, f64),
    zero_points: (i64, i64),
    stats: ErrorStats,
}

fn measure(
    tensor: &'static str,
    x: &[f32],
    shape: MatrixShape,
    spec: QuantSpec,
    granularity: Granularity,
) -> Result<Row, QuantError> {
    let q = match spec.scheme() {
        Scheme::Symmetric => quantize_matrix::<f32, i32>(x, shape, spec, granularity)?.dequantize(),
        Scheme::Asymmetric => quantize_matrix::<f32, u32>(x, shape, spec, granularity)?.dequantize(),
    };
    let params = quant_core::matrix_params(x, shape, spec, granularity)?;
    let scales = params.iter().map(|p| f64::from(p.scale()));
    let zps = params.iter().map(|p| p.zero_point());
    Ok(Row {
        tensor,
        spec,
        granularity,
        scales: (scales.clone().fold(f64::INFINITY, f64::min), scales.fold(0.0, f64::max)),
        zero_points: (zps.clone().min().unwrap_or(0), zps.max().unwrap_or(0)),
        stats: error_stats(x, &q)?,
    })
}

fn span<T: PartialEq + std::fmt::Display>(lo: T, hi: T, fmt: impl Fn(&T) -> String) -> String {
    if lo == hi {
        fmt(&lo)
    } else {
        format!("{}..{}", fmt(&lo), fmt(&hi))
    }
}

fn print_table(out: &mut String, rows: &[Row]) {
    outln!(
        out,
        "{:<12} {:<10} {:<10} {:>4} {:>21} {:>8} {:>11} {:>10} {:>8}",
        "tensor",
        "scheme",
        "per",
        "bits",
        "scale",
        "zero pt",
        "MSE",
        "max error",
        "SNR dB"
    );
    outln!(out, "{}", "-".repeat(103));
    for r in rows {
        let per = match r.granularity {
            Granularity::PerTensor => "tensor".to_string(),
            Granularity::PerChannel(Axis::Rows) => "row".to_string(),
            Granularity::PerChannel(Axis::Cols) => "column".to_string(),
            Granularity::PerGroup { axis: Axis::Cols, size } => format!("group {size}"),
            Granularity::PerGroup { axis: Axis::Rows, size } => format!("col-group {size}"),
        };
        outln!(
            out,
            "{:<12} {:<10} {:<10} {:>4} {:>21} {:>8} {:>11.3e} {:>10.3e} {:>8.2}",
            r.tensor,
            r.spec.scheme().name(),
            per,
            r.spec.bits(),
            span(r.scales.0, r.scales.1, |v| format!("{v:.3e}")),
            span(r.zero_points.0, r.zero_points.1, |v| v.to_string()),
            r.stats.mse,
            r.stats.max_error,
            r.stats.snr_db,
        );
    }
}

/// Appends a line to the output buffer (writing to a `String` cannot fail).
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}
use outln;

/// Runs the demo and writes its report to stdout (a closed pipe, as in `| head`, is not an error).
pub fn run() -> Result<(), String> {
    let mut out = String::new();
    run_demo(&mut out).map_err(|e| e.to_string())?;
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("writing the report: {e}")),
        _ => Ok(()),
    }
}

/// The built-in data: weights and activations, always the same (fixed seed).
fn data() -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(2026);
    let w = weights(&mut rng);
    let a = activations(&mut rng);
    (w, a)
}

/// One table row per tensor, scheme, granularity and width.
fn table(w: &[f32], a: &[f32]) -> Result<Vec<Row>, QuantError> {
    let w_shape = MatrixShape::new(ROWS, COLS);
    let a_shape = MatrixShape::new(1, COLS);
    let mut rows = Vec::new();
    for bits in [8, 4] {
        for scheme in [Scheme::Symmetric, Scheme::Asymmetric] {
            let spec = QuantSpec::new(scheme, bits)?;
            for g in [Granularity::PerTensor, Granularity::PerChannel(Axis::Rows)] {
                rows.push(measure("weights W", w, w_shape, spec, g)?);
            }
            if bits == 4 {
                // 4-bit weights are only usable per group: each group of 128 or 32 inputs of a
                // row gets its own scale (the llama.cpp / GPTQ layout).
                for size in [128, 32] {
                    rows.push(measure(
                        "weights W",
                        w,
                        w_shape,
                        spec,
                        Granularity::PerGroup { axis: Axis::Cols, size },
                    )?);
                }
            }
        }
    }
    for bits in [8, 4] {
        for scheme in [Scheme::Symmetric, Scheme::Asymmetric] {
            let spec = QuantSpec::new(scheme, bits)?;
            rows.push(measure("activations", a, a_shape, spec, Granularity::PerTensor)?);
        }
    }
    Ok(rows)
}

fn run_demo(out: &mut String) -> Result<(), QuantError> {
    let (w, a) = data();
    outln!(out, "\nengine demo: synthetic weights W ({ROWS} x {COLS}, sigma 0.02, 8 outlier rows x10, 6 outlier");
    outln!(out, "weights) and post-ReLU activations a ({COLS}, heavy tail); f32 in, f64 arithmetic, ties to even.\n");
    print_table(out, &table(&w, &a)?);

    outln!(out, "\nseed matmul example: A (2x3) @ B (3x2), both int8 symmetric per tensor");
    let af = [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0];
    let bf = [7.0f64, 8.0, 9.0, 10.0, 11.0, 12.0];
    let (aq, sa) = quant_core::quantize_symmetric(&af, 8)?;
    let (bq, sb) = quant_core::quantize_symmetric(&bf, 8)?;
    outln!(out, "  A codes {aq:?}, scale {sa:.6}");
    outln!(out, "  B codes {bq:?}, scale {sb:.6}");
    let a_rows: Vec<Vec<i32>> = aq.chunks(3).map(<[i32]>::to_vec).collect();
    let b_rows: Vec<Vec<i32>> = bq.chunks(2).map(<[i32]>::to_vec).collect();
    let c = quantized_matmul(&a_rows, &b_rows, sa, sb)?;
    let exact = [[58.0, 64.0], [139.0, 154.0]];
    for (got, want) in c.iter().zip(exact) {
        outln!(out, "  [{:>9.4} {:>9.4}]   exact [{:>5.1} {:>5.1}]", got[0], got[1], want[0], want[1]);
    }

    outln!(out, "\nint8 matrix-vector product y = W a (exact i32/i64 accumulation, one rescale):");
    let (wq, ws) = quant_core::quantize_symmetric(&w, 8)?;
    let (aq, as_) = quant_core::quantize_symmetric(&a, 8)?;
    let y = quantized_matmul_flat(&wq, &aq, GemmShape::new(ROWS, COLS, 1), ws, as_)?;
    let y_ref: Vec<f32> = w
        .chunks(COLS)
        .map(|row| row.iter().zip(&a).map(|(x, v)| f64::from(*x) * f64::from(*v)).sum::<f64>() as f32)
        .collect();
    let e = error_stats(&y_ref, &y)?;
    outln!(out, "  y vs f64 reference: {e}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(rows: &[Row], tensor: &str, scheme: Scheme, g: Granularity, bits: u32) -> f64 {
        let r = rows
            .iter()
            .find(|r| r.tensor == tensor && r.spec.scheme() == scheme && r.granularity == g && r.spec.bits() == bits);
        r.map_or(f64::NAN, |r| r.stats.snr_db)
    }

    /// What the demo is there to show: per-row scales beat one scale on weights with outlier
    /// rows, 8 bits beat 4, and asymmetric beats symmetric on one-sided activations.
    #[test]
    fn the_table_shows_what_it_claims() -> Result<(), QuantError> {
        let (w, a) = data();
        let rows = table(&w, &a)?;
        assert_eq!(rows.len(), 16);
        let rows_g = Granularity::PerChannel(Axis::Rows);
        for bits in [8, 4] {
            for scheme in [Scheme::Symmetric, Scheme::Asymmetric] {
                let per_tensor = find(&rows, "weights W", scheme, Granularity::PerTensor, bits);
                let per_row = find(&rows, "weights W", scheme, rows_g, bits);
                assert!(per_row > per_tensor + 5.0, "{bits} bits: {per_row} vs {per_tensor}");
            }
            let sym = find(&rows, "activations", Scheme::Symmetric, Granularity::PerTensor, bits);
            let asym = find(&rows, "activations", Scheme::Asymmetric, Granularity::PerTensor, bits);
            assert!(asym > sym + 3.0, "{bits} bits: {asym} vs {sym}");
        }
        // At 4 bits, groups beat whole rows, and smaller groups beat larger ones (the single
        // outlier weights spoil only their own group).
        for scheme in [Scheme::Symmetric, Scheme::Asymmetric] {
            let per_row = find(&rows, "weights W", scheme, rows_g, 4);
            let g128 = find(&rows, "weights W", scheme, Granularity::PerGroup { axis: Axis::Cols, size: 128 }, 4);
            let g32 = find(&rows, "weights W", scheme, Granularity::PerGroup { axis: Axis::Cols, size: 32 }, 4);
            assert!(g128 > per_row && g32 > g128 + 0.5, "{scheme:?}: row {per_row}, g128 {g128}, g32 {g32}");
        }
        let s8 = find(&rows, "weights W", Scheme::Symmetric, rows_g, 8);
        let s4 = find(&rows, "weights W", Scheme::Symmetric, rows_g, 4);
        assert!(s8 > s4 + 18.0, "{s8} vs {s4}"); // ~6 dB per bit
        Ok(())
    }
}
