//! Writing a `quant report`: an aligned table, CSV, or JSON.
//!
//! `report --format json` prints one object (this shape is stable; fields are only added):
//!
//! ```text
//! {
//!   "file": "model.safetensors",
//!   "reconstructed": null | "back.safetensors",
//!   "reference": null | "original.safetensors",
//!   "schemes": [{"scheme": "sym", "bits": 8, "granularity": "channel", "convention": "exact"},
//!               {"format": "Q4_K", "bits_per_weight": 4.5, "convention": "ggml"}, ...],
//!   "tensors": [{"name": "w", "dtype": "F32", "shape": [768, 768], "scheme": 0, "stored": null,
//!                "mse": 1.2e-7, "max_error": 3.1e-4, "snr_db": 39.4,
//!                "scale_min": 1.0e-4, "scale_max": 2.0e-3, "bytes": 589824, "bits_per_weight": 8.04}, ...],
//!   "summary": [{"scheme": 0, "stored": null, "tensors": 7, "bits_per_weight": 8.04, "snr_db_total": 39.0,
//!                "pareto": true, "snr_db_min": .., "snr_db_median": .., "snr_db_max": ..}, ...],
//!   "notes": ["..."]
//! }
//! ```
//!
//! `scheme` indexes `schemes`. When comparing files, `schemes` is empty, `scheme` is `null`,
//! `stored` names the compared tensor's stored type (`"Q4_K"`, `"F32"`) and the scale fields are
//! `null`; a file holding several types also gets a summary line with `"stored": "all"`.
//! `pareto` (the table's `front`) marks the measured schemes no other scheme beats on both size
//! and error over the same tensors (`null` for a compared file's types); `--sort bpw` orders the
//! summary by size. `snr_db_total` is the SNR of all the group's tensors together (`Σx² / Σ(x - x̂)²`).
//! An SNR of `+inf` (no error at all) is written as `null` in JSON and `inf` in the table and
//! CSV. CSV quotes a field holding a comma, a quote or a line break (RFC 4180).

use std::path::Path;

use quant_analysis::median;
use serde_json::{json, Value};

use crate::measure::{Against, Group, Measured, Row};

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

/// The order of the summary lines.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Sort {
    /// As the schemes were given.
    #[default]
    Given,
    /// Fewest bits per weight first (then the higher total SNR): size against error.
    Bpw,
    /// Highest total SNR first.
    Snr,
}

/// The dimensions joined by `sep`.
pub fn shape_text(shape: &[usize], sep: &str) -> String {
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

/// A CSV field, quoted when it holds a comma, a quote or a line break (quotes doubled).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One group's summary line (`group: None`: every compared tensor of the file together).
struct Summary {
    group: Option<usize>,
    tensors: usize,
    bits_per_weight: f64,
    snr_total: f64,
    snr: (f64, f64, f64),
    /// For a measured scheme: whether no other scheme measured on the same tensors has at
    /// most its bits per weight and at least its total SNR, one of them strictly (the
    /// size-against-error front). `None` for the stored types of a compared file.
    pareto: Option<bool>,
}

/// A line per group and, when a compared file holds several stored types (a mix such as
/// `Q4_K_M`), one for the whole file.
fn summarize(groups: &[Group], rows: &[Row], sort: Sort) -> Vec<Summary> {
    let mut lines: Vec<Option<usize>> = (0..groups.len()).map(Some).collect();
    if groups.len() > 1 && groups.iter().all(|g| matches!(g, Group::Stored(_))) {
        lines.push(None);
    }
    let mut out: Vec<Summary> = lines
        .into_iter()
        .map(|g| {
            let mine: Vec<&Row> = rows.iter().filter(|r| g.is_none_or(|g| r.group == g)).collect();
            let snr: Vec<f64> = mine.iter().map(|r| r.stats.snr_db).collect();
            let elements: usize = mine.iter().map(|r| r.stats.len).sum();
            let bytes: usize = mine.iter().map(|r| r.bytes).sum();
            let (mut sq_err, mut signal) = (0.0, 0.0);
            for r in &mine {
                sq_err += r.stats.mse * r.stats.len as f64;
                signal += r.stats.signal_power * r.stats.len as f64;
            }
            let snr_total = if sq_err == 0.0 { f64::INFINITY } else { 10.0 * (signal / sq_err).log10() };
            let lo = snr.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = snr.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            Summary {
                group: g,
                tensors: mine.len(),
                bits_per_weight: 8.0 * bytes as f64 / elements.max(1) as f64,
                snr_total,
                snr: (lo, median(&snr), hi),
                pareto: None,
            }
        })
        .collect();
    // The front, among the measured schemes, each against those measured on the same tensors.
    let names: Vec<std::collections::BTreeSet<&str>> = out
        .iter()
        .map(|s| rows.iter().filter(|r| Some(r.group) == s.group).map(|r| r.name.as_str()).collect())
        .collect();
    let measured = |s: &Summary| s.group.is_some_and(|g| matches!(groups[g], Group::Method(_))) && s.tensors > 0;
    let fronts: Vec<Option<bool>> = out
        .iter()
        .enumerate()
        .map(|(ia, a)| {
            measured(a).then(|| {
                !out.iter().enumerate().any(|(ib, b)| {
                    measured(b)
                        && ib != ia
                        && b.bits_per_weight <= a.bits_per_weight
                        && b.snr_total >= a.snr_total
                        && (b.bits_per_weight < a.bits_per_weight || b.snr_total > a.snr_total)
                        && names[ib] == names[ia]
                })
            })
        })
        .collect();
    for (s, f) in out.iter_mut().zip(fronts) {
        s.pareto = f;
    }
    match sort {
        Sort::Given => {}
        Sort::Bpw => out
            .sort_by(|a, b| a.bits_per_weight.total_cmp(&b.bits_per_weight).then(b.snr_total.total_cmp(&a.snr_total))),
        Sort::Snr => out.sort_by(|a, b| b.snr_total.total_cmp(&a.snr_total)),
    }
    out
}

/// The report on `input` (compared with the file of `against`, if any) in `format`, its
/// summary in `sort` order.
pub fn render(input: &Path, against: Option<Against>, measured: &Measured, format: Format, sort: Sort) -> String {
    let Measured { rows, groups, notes } = measured;
    let summary = summarize(groups, rows, sort);
    let bpw = |r: &Row| 8.0 * r.bytes as f64 / r.stats.len.max(1) as f64;
    let stored = |g: usize| match &groups[g] {
        Group::Stored(s) => Some(s.clone()),
        Group::Method(_) => None,
    };
    let scheme = |g: usize| match &groups[g] {
        Group::Method(_) => Some(g),
        Group::Stored(_) => None,
    };
    let label = |g: Option<usize>| g.map_or_else(|| "file: all".to_string(), |g| groups[g].label());
    match format {
        Format::Json => {
            let schemes: Vec<Value> =
                groups.iter().filter_map(|g| if let Group::Method(m) = g { Some(m.json()) } else { None }).collect();
            let tensors: Vec<Value> = rows
                .iter()
                .map(|r| {
                    json!({"name": r.name, "dtype": r.dtype, "shape": r.shape, "scheme": scheme(r.group), "stored": stored(r.group),
                           "mse": num(r.stats.mse), "max_error": num(r.stats.max_error), "snr_db": num(r.stats.snr_db),
                           "scale_min": r.scales.map(|s| num(s.0)), "scale_max": r.scales.map(|s| num(s.1)),
                           "bytes": r.bytes, "bits_per_weight": num(bpw(r))})
                })
                .collect();
            let summary: Vec<Value> = summary
                .iter()
                .map(|s| {
                    let (scheme, stored) = s.group.map_or((None, Some("all".to_string())), |g| (scheme(g), stored(g)));
                    json!({"scheme": scheme, "stored": stored, "tensors": s.tensors,
                           "bits_per_weight": num(s.bits_per_weight), "snr_db_total": num(s.snr_total), "pareto": s.pareto,
                           "snr_db_min": num(s.snr.0), "snr_db_median": num(s.snr.1), "snr_db_max": num(s.snr.2)})
                })
                .collect();
            let path = |p: &Path| p.display().to_string();
            let (reconstructed, reference) = match against {
                Some(Against::Reconstructed(p)) => (Some(path(p)), None),
                Some(Against::Reference(p)) => (None, Some(path(p))),
                None => (None, None),
            };
            let v = json!({"file": path(input), "reconstructed": reconstructed, "reference": reference,
                           "schemes": schemes, "tensors": tensors, "summary": summary, "notes": notes});
            format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
        }
        Format::Csv => {
            let mut out = String::from(
                "name,dtype,shape,scheme,mse,max_error,snr_db,scale_min,scale_max,bytes,bits_per_weight\n",
            );
            for r in rows {
                let (smin, smax) =
                    r.scales.map_or((String::new(), String::new()), |s| (format!("{:e}", s.0), format!("{:e}", s.1)));
                out.push_str(&format!(
                    "{},{},{},{},{:e},{:e},{},{},{},{},{}\n",
                    csv_field(&r.name),
                    r.dtype,
                    shape_text(&r.shape, "x"),
                    csv_field(&groups[r.group].label()),
                    r.stats.mse,
                    r.stats.max_error,
                    r.stats.snr_db,
                    smin,
                    smax,
                    r.bytes,
                    bpw(r)
                ));
            }
            out
        }
        Format::Table => {
            let mut out = format!(
                "{:<40} {:<5} {:<13} {:<24} {:>6} {:>11} {:>10} {:>8} {:>21}\n",
                "tensor", "dtype", "shape", "scheme", "bpw", "MSE", "max error", "SNR dB", "scale range"
            );
            for r in rows {
                let scales = r.scales.map_or("-".to_string(), |s| format!("{:.3e}..{:.3e}", s.0, s.1));
                out.push_str(&format!(
                    "{:<40} {:<5} {:<13} {:<24} {:>6.3} {:>11.3e} {:>10.3e} {:>8.2} {:>21}\n",
                    r.name,
                    r.dtype,
                    shape_text(&r.shape, "x"),
                    groups[r.group].label(),
                    bpw(r),
                    r.stats.mse,
                    r.stats.max_error,
                    r.stats.snr_db,
                    scales
                ));
            }
            out.push_str("\nsummary (SNR dB; total: all the tensors together, Σx² / Σ(x - x̂)²;");
            out.push_str(" front: * when no scheme measured on the same tensors is as small and as accurate)\n");
            out.push_str(&format!(
                "{:<24} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>5}\n",
                "scheme", "tensors", "bpw", "total", "min", "median", "max", "front"
            ));
            for s in &summary {
                if s.tensors == 0 {
                    out.push_str(&format!("{:<24} {:>7} (no tensor measured)\n", label(s.group), 0));
                    continue;
                }
                out.push_str(&format!(
                    "{:<24} {:>7} {:>7.3} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>5}\n",
                    label(s.group),
                    s.tensors,
                    s.bits_per_weight,
                    s.snr_total,
                    s.snr.0,
                    s.snr.1,
                    s.snr.2,
                    if s.pareto == Some(true) { "*" } else { "" }
                ));
            }
            for n in notes {
                out.push_str(&format!("note: {n}\n"));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use quant_analysis::ErrorStats;
    use quant_core::BlockFormat;

    use super::*;
    use crate::measure::Method;

    /// A file of two stored types gets a line per type and one for the whole file: values and
    /// bytes added up, SNR of the sums.
    #[test]
    fn a_mixed_file_is_summarized_per_type_and_whole() {
        let stats = |len: usize, mse: f64, signal_power: f64| ErrorStats {
            len,
            mse,
            rmse: mse.sqrt(),
            max_error: 0.0,
            max_error_index: None,
            mean_error: 0.0,
            signal_power,
            snr_db: 10.0 * (signal_power / mse).log10(),
        };
        let row = |group: usize, len: usize, mse: f64, bytes: usize| Row {
            name: String::new(),
            dtype: String::new(),
            shape: vec![len],
            group,
            stats: stats(len, mse, 1.0),
            scales: None,
            bytes,
        };
        let groups = [Group::Stored("Q4_K".into()), Group::Stored("Q6_K".into())];
        let rows = [row(0, 256, 1e-2, 144), row(0, 256, 1e-2, 144), row(1, 512, 1e-3, 420)];
        let s = summarize(&groups, &rows, Sort::Given);
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].tensors, s[0].bits_per_weight, s[0].snr_total), (2, 4.5, 20.0));
        assert_eq!((s[1].tensors, s[1].bits_per_weight), (1, 6.5625));
        let all = &s[2];
        assert_eq!((all.group, all.tensors, all.bits_per_weight), (None, 3, 8.0 * 708.0 / 1024.0));
        let want = 10.0 * (1024.0f64 / (512.0 * 1e-2 + 512.0 * 1e-3)).log10();
        assert!((all.snr_total - want).abs() < 1e-12, "{} vs {want}", all.snr_total);
        // Measured schemes get no whole-file line: they are alternatives, not parts.
        let methods =
            [Group::Method(Method::Format(BlockFormat::Q4_K)), Group::Method(Method::Format(BlockFormat::Q6_K))];
        assert_eq!(summarize(&methods, &rows, Sort::Given).len(), 2);
    }

    /// The front: a scheme is on it unless another, measured on the same tensors, is as small
    /// and as accurate and strictly one of them; `--sort bpw` orders by size, then accuracy.
    #[test]
    fn the_front_and_the_size_order() {
        let stats = |mse: f64| ErrorStats {
            len: 256,
            mse,
            rmse: mse.sqrt(),
            max_error: 0.0,
            max_error_index: None,
            mean_error: 0.0,
            signal_power: 1.0,
            snr_db: -10.0 * mse.log10(),
        };
        let row = |name: &str, group: usize, mse: f64, bytes: usize| Row {
            name: name.into(),
            dtype: String::new(),
            shape: vec![256],
            group,
            stats: stats(mse),
            scales: None,
            bytes,
        };
        let f = |b: BlockFormat| Group::Method(Method::Format(b));
        let groups = [
            f(BlockFormat::Q5_0),
            f(BlockFormat::Q4_0),
            f(BlockFormat::Q4_1),
            f(BlockFormat::Q4_K),
            f(BlockFormat::Q8_0),
        ];
        let rows = [
            row("a", 0, 1e-3, 176), // 5.5 bpw, 30 dB
            row("a", 1, 1e-2, 144), // 4.5 bpw, 20 dB
            row("a", 2, 2e-2, 144), // 4.5 bpw, 17 dB: beaten by group 1
            row("a", 3, 1e-2, 160), // 5 bpw, 20 dB: beaten by group 1 (smaller, as accurate)
            row("b", 4, 1e-1, 400), // another tensor: nothing to compare with
        ];
        let s = summarize(&groups, &rows, Sort::Given);
        let front: Vec<Option<bool>> = s.iter().map(|s| s.pareto).collect();
        assert_eq!(front, [Some(true), Some(true), Some(false), Some(false), Some(true)]);
        let by_size: Vec<Option<usize>> = summarize(&groups, &rows, Sort::Bpw).iter().map(|s| s.group).collect();
        assert_eq!(by_size, [Some(1), Some(2), Some(3), Some(0), Some(4)]);
        let by_snr: Vec<Option<usize>> = summarize(&groups, &rows, Sort::Snr).iter().map(|s| s.group).collect();
        assert_eq!(by_snr[0], Some(0));
        // A compared file's stored types are parts of one file, not alternatives: no front.
        let stored = [Group::Stored("Q4_K".into()), Group::Stored("Q6_K".into())];
        let parts = [row("a", 0, 1e-2, 144), row("b", 1, 1e-3, 210)];
        assert!(summarize(&stored, &parts, Sort::Given).iter().all(|s| s.pareto.is_none()));
    }

    /// Names with commas or quotes stay one CSV field each.
    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain.weight"), "plain.weight");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
