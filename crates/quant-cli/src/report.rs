//! `quant report` and `quant inspect`.
//!
//! `report --format json` prints one object (this shape is stable; fields are only added):
//!
//! ```text
//! {
//!   "file": "model.safetensors",
//!   "reconstructed": null | "back.safetensors",
//!   "schemes": [{"scheme": "sym", "bits": 8, "granularity": "channel", "convention": "onnx"}, ...],
//!   "tensors": [{"name": "w", "dtype": "F32", "shape": [768, 768], "scheme": 0,
//!                "mse": 1.2e-7, "max_error": 3.1e-4, "snr_db": 39.4,
//!                "scale_min": 1.0e-4, "scale_max": 2.0e-3}, ...],
//!   "summary": [{"scheme": 0, "tensors": 7, "snr_db_min": .., "snr_db_median": .., "snr_db_max": ..}, ...]
//! }
//! ```
//!
//! `scheme` indexes `schemes`. With `--reconstructed`, `schemes` is empty, `scheme` is `null`
//! and the scale fields are `null` (the figures compare the two files). An SNR of `+inf` (no
//! error at all) is written as `null` in JSON and `inf` in the table and CSV.

use std::path::Path;

use quant_analysis::{error_stats, ErrorStats};
use quant_core::QuantFloat;
use serde_json::{json, Value};

use crate::convert::quantizable;
use crate::model::{dtype_name, Entry, Model};
use crate::scheme::{dequantize_2d, quantize_2d, Plan};
use crate::{with_floats, CliError, Progress};

/// Output format of `report`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for a terminal.
    Table,
    /// One JSON object (see the module docs).
    Json,
    /// Comma-separated values with a header row.
    Csv,
}

/// One tensor under one scheme.
struct Row {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    scheme: Option<usize>,
    stats: ErrorStats,
    scales: Option<(f64, f64)>,
}

/// The error statistics of `x` quantized with `plan` and dequantized, and the scale range.
pub fn measure<F: QuantFloat>(
    x: &[F],
    rows: usize,
    cols: usize,
    plan: Plan,
) -> Result<(ErrorStats, (f64, f64)), String> {
    let storage =
        plan.file_storage().unwrap_or(if plan.spec.scheme() == quant_core::Scheme::Symmetric { "i32" } else { "u32" });
    let (back, scales) = match storage {
        "i32" => round_trip::<F, i32>(x, rows, cols, plan),
        "u32" => round_trip::<F, u32>(x, rows, cols, plan),
        other => crate::with_storage!(other, Q => round_trip::<F, Q>(x, rows, cols, plan)),
    }
    .map_err(|e| e.to_string())?;
    Ok((error_stats(x, &back).map_err(|e| e.to_string())?, scales))
}

fn round_trip<F: QuantFloat, Q: quant_core::Storage>(
    x: &[F],
    rows: usize,
    cols: usize,
    plan: Plan,
) -> Result<(Vec<F>, (f64, f64)), quant_core::QuantError> {
    let (codes, params) = quantize_2d::<F, Q>(x, rows, cols, plan)?;
    let back = dequantize_2d::<F, Q>(&codes, rows, cols, plan.gran, &params)?;
    let s = params.iter().map(|p| p.scale().to_f64_exact());
    Ok((back, (s.clone().fold(f64::INFINITY, f64::min), s.fold(0.0, f64::max))))
}

/// `quant report`.
pub fn report(
    input: &Path,
    plans: &[Plan],
    reconstructed: Option<&Path>,
    format: Format,
    progress: &Progress,
) -> Result<String, CliError> {
    let model = Model::open(input)?;
    let other = reconstructed.map(Model::open).transpose()?;
    let entries: Vec<Entry> = model
        .entries()
        .into_iter()
        .filter_map(|e| quantizable(&model, &e).map(|q| q.then_some(e)).transpose())
        .collect::<Result<_, _>>()?;
    let work: usize = entries.iter().map(|e| e.bytes() * plans.len().max(1)).sum();
    progress.start(work as u64, "measuring");
    // The reconstructed file's tensors by name, read from its header once.
    let back_entries: std::collections::HashMap<String, Entry> =
        other.iter().flat_map(Model::entries).map(|b| (b.name.clone(), b)).collect();
    let mut rows = Vec::new();
    for e in &entries {
        progress.message(&e.name);
        let floats = model.floats(e)?;
        let (r, c) = (e.shape[0], e.shape[1]);
        let fail = |msg: String| CliError::file(input, format!("tensor {:?}: {msg}", e.name));
        match &other {
            Some(back_model) => {
                let Some(b) = back_entries.get(&e.name) else {
                    return Err(CliError::file(back_model.path(), format!("has no tensor {:?}", e.name)));
                };
                if b.shape != e.shape || b.dtype != e.dtype {
                    return Err(CliError::file(
                        back_model.path(),
                        format!(
                            "tensor {:?} is {:?} {:?}, the original is {:?} {:?}",
                            e.name, b.dtype, b.shape, e.dtype, e.shape
                        ),
                    ));
                }
                let back = back_model.floats(b)?;
                let stats = match (&floats, &back) {
                    (crate::model::Floats::F32(x), crate::model::Floats::F32(y)) => error_stats(x, y),
                    (crate::model::Floats::F16(x), crate::model::Floats::F16(y)) => error_stats(x, y),
                    (crate::model::Floats::BF16(x), crate::model::Floats::BF16(y)) => error_stats(x, y),
                    (crate::model::Floats::F64(x), crate::model::Floats::F64(y)) => error_stats(x, y),
                    _ => return Err(fail("dtypes differ".into())),
                }
                .map_err(|err| fail(err.to_string()))?;
                rows.push(Row {
                    name: e.name.clone(),
                    dtype: dtype_name(e.dtype),
                    shape: e.shape.clone(),
                    scheme: None,
                    stats,
                    scales: None,
                });
                back_model.release(b);
                progress.advance(e.bytes() as u64);
            }
            None => {
                for (i, plan) in plans.iter().enumerate() {
                    let (stats, scales) = with_floats!(&floats, x => measure(x, r, c, *plan)).map_err(fail)?;
                    rows.push(Row {
                        name: e.name.clone(),
                        dtype: dtype_name(e.dtype),
                        shape: e.shape.clone(),
                        scheme: Some(i),
                        stats,
                        scales: Some(scales),
                    });
                    progress.advance(e.bytes() as u64);
                }
            }
        }
        model.release(e);
    }
    progress.finish();
    let plans_shown: &[Plan] = if other.is_some() { &[] } else { plans };
    Ok(render(input, reconstructed, plans_shown, &rows, format))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The dimensions joined by `sep`.
fn shape_text(shape: &[usize], sep: &str) -> String {
    shape.iter().map(ToString::to_string).collect::<Vec<_>>().join(sep)
}

/// A finite number, or `null` (JSON has no infinity).
fn num(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}

fn render(input: &Path, reconstructed: Option<&Path>, plans: &[Plan], rows: &[Row], format: Format) -> String {
    let groups: Vec<Option<usize>> = if plans.is_empty() { vec![None] } else { (0..plans.len()).map(Some).collect() };
    let summary: Vec<(Option<usize>, usize, f64, f64, f64)> = groups
        .iter()
        .map(|&g| {
            let snr: Vec<f64> = rows.iter().filter(|r| r.scheme == g).map(|r| r.stats.snr_db).collect();
            let (lo, hi) = (
                snr.iter().copied().fold(f64::INFINITY, f64::min),
                snr.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            );
            (g, snr.len(), lo, median(snr), hi)
        })
        .collect();
    let label = |g: Option<usize>| g.map_or_else(|| "file".to_string(), |i| plans[i].to_string());
    match format {
        Format::Json => {
            let schemes: Vec<Value> = plans
                .iter()
                .map(|p| json!({"scheme": p.scheme_name(), "bits": p.spec.bits(), "granularity": p.gran.to_string(), "convention": "onnx"}))
                .collect();
            let tensors: Vec<Value> = rows
                .iter()
                .map(|r| {
                    json!({"name": r.name, "dtype": r.dtype, "shape": r.shape, "scheme": r.scheme,
                           "mse": num(r.stats.mse), "max_error": num(r.stats.max_error), "snr_db": num(r.stats.snr_db),
                           "scale_min": r.scales.map(|s| num(s.0)), "scale_max": r.scales.map(|s| num(s.1))})
                })
                .collect();
            let summary: Vec<Value> = summary
                .iter()
                .map(|&(g, n, lo, med, hi)| json!({"scheme": g, "tensors": n, "snr_db_min": num(lo), "snr_db_median": num(med), "snr_db_max": num(hi)}))
                .collect();
            let v = json!({"file": input.display().to_string(), "reconstructed": reconstructed.map(|p| p.display().to_string()),
                           "schemes": schemes, "tensors": tensors, "summary": summary});
            format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
        }
        Format::Csv => {
            let mut out = String::from("name,dtype,shape,scheme,mse,max_error,snr_db,scale_min,scale_max\n");
            for r in rows {
                let (smin, smax) =
                    r.scales.map_or((String::new(), String::new()), |s| (format!("{:e}", s.0), format!("{:e}", s.1)));
                out.push_str(&format!(
                    "{},{},{},{},{:e},{:e},{},{},{}\n",
                    r.name,
                    r.dtype,
                    shape_text(&r.shape, "x"),
                    label(r.scheme),
                    r.stats.mse,
                    r.stats.max_error,
                    r.stats.snr_db,
                    smin,
                    smax
                ));
            }
            out
        }
        Format::Table => {
            let mut out = format!(
                "{:<40} {:<5} {:<13} {:<24} {:>11} {:>10} {:>8} {:>21}\n",
                "tensor", "dtype", "shape", "scheme", "MSE", "max error", "SNR dB", "scale range"
            );
            for r in rows {
                let scales = r.scales.map_or("-".to_string(), |s| format!("{:.3e}..{:.3e}", s.0, s.1));
                out.push_str(&format!(
                    "{:<40} {:<5} {:<13} {:<24} {:>11.3e} {:>10.3e} {:>8.2} {:>21}\n",
                    r.name,
                    r.dtype,
                    shape_text(&r.shape, "x"),
                    label(r.scheme),
                    r.stats.mse,
                    r.stats.max_error,
                    r.stats.snr_db,
                    scales
                ));
            }
            out.push_str("\nsummary (SNR dB over the 2-D floating tensors)\n");
            out.push_str(&format!("{:<24} {:>7} {:>8} {:>8} {:>8}\n", "scheme", "tensors", "min", "median", "max"));
            for (g, n, lo, med, hi) in summary {
                out.push_str(&format!("{:<24} {:>7} {:>8.2} {:>8.2} {:>8.2}\n", label(g), n, lo, med, hi));
            }
            out
        }
    }
}

/// `quant inspect`: every tensor with dtype, shape, elements and bytes.
pub fn inspect(input: &Path) -> Result<String, CliError> {
    let model = Model::open(input)?;
    let entries = model.entries();
    let mut out = format!("{}: {} tensors, {} bytes\n", input.display(), entries.len(), model.file_bytes());
    let meta = model.metadata();
    if !meta.is_empty() {
        let mut keys: Vec<_> = meta.iter().collect();
        keys.sort();
        for (k, v) in keys {
            out.push_str(&format!("metadata {k} = {v}\n"));
        }
    }
    out.push_str(&format!("{:<48} {:<6} {:<20} {:>12} {:>12}\n", "tensor", "dtype", "shape", "elements", "bytes"));
    for e in &entries {
        out.push_str(&format!(
            "{:<48} {:<6} {:<20} {:>12} {:>12}\n",
            e.name,
            dtype_name(e.dtype),
            format!("[{}]", shape_text(&e.shape, ", ")),
            e.elements(),
            e.bytes()
        ));
    }
    Ok(out)
}
