//! `quant report` and `quant inspect`.
//!
//! `report` works in one of three ways:
//! * **measure** (the default): every 2-D floating tensor of a safetensors or GGUF file is
//!   quantized under each scheme (`--scheme/--bits/--granularity`, all combinations) and each
//!   llama.cpp format (`--type`), dequantized, and compared with itself. Tensors a file already
//!   holds in a llama.cpp format cannot be measured this way (the original is gone): a note
//!   counts them and names `--reference`.
//! * **`--reference ORIGINAL`**: every floating tensor of two or more dimensions of the file,
//!   quantized (`Q4_K`, ...) or plain, is compared, as stored, with the tensor of the same name
//!   and shape in `ORIGINAL` (safetensors, or a plain `F32`/`F16`/`BF16` GGUF such as
//!   `convert_hf_to_gguf.py` writes). Rows are grouped by the stored type.
//! * **`--reconstructed BACK`**: every 2-D floating tensor of the file (the original) is
//!   compared with the tensor of the same name and shape in `BACK` (e.g. written by `quant
//!   dequantize`). Rows are grouped by `BACK`'s type.
//!
//! Values of different types are compared exactly (both widened to `f64`). Bytes per tensor:
//! for a scheme, what `quant quantize` writes (codes of 2 and 4 bits packed, 3 bits in 4, 5 to 8
//! bits in a byte, wider ones counted at their width; the scale in the tensor's type and an
//! `i32` zero point per scale when asymmetric); for a llama.cpp format, its blocks; when
//! comparing files, the stored tensor's bytes. Bits per weight are `8 · bytes / values`.
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

use quant_analysis::{error_stats, median, ErrorStats};
use quant_core::{BlockFormat, QuantFloat};
use serde_json::{json, Value};

use crate::scheme::{dequantize_2d, file_bytes, quantize_2d, quantize_super_2d, super_name, Plan};
use crate::{CliError, Progress};
use quant_core::superblock::SuperSpec;
use quant_io::imatrix::Importance;
use quant_io::safetensors::{dtype_name, Floats, SafetensorsFile};
use quant_io::{with_floats, Kind, ModelFile, Tensor};

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

/// What a measuring report does to each tensor.
#[derive(Copy, Clone, Debug)]
pub enum Method {
    /// One of our schemes, quantized and dequantized here.
    Plan(Plan),
    /// A llama.cpp block format, quantized and dequantized here (ggml's bytes and values).
    Format(BlockFormat),
    /// One of our two-level formats.
    Super(SuperSpec),
}

impl Method {
    fn label(self) -> String {
        match self {
            Method::Plan(p) => p.to_string(),
            Method::Format(f) => f.name().to_string(),
            Method::Super(s) => super_name(s),
        }
    }

    fn json(self) -> Value {
        match self {
            Method::Plan(p) => {
                json!({"scheme": p.scheme_name(), "bits": p.spec.bits(), "granularity": p.gran.to_string(), "convention": quant_core::Convention::Exact.name()})
            }
            Method::Format(f) => {
                json!({"format": f.name(), "bits_per_weight": f.bits_per_weight(), "convention": "ggml"})
            }
            Method::Super(s) => json!({"format": super_name(s), "convention": "quant two-level"}),
        }
    }
}

/// The file a report compares with, instead of measuring schemes.
#[derive(Copy, Clone, Debug)]
pub enum Against<'a> {
    /// The file reports on is the original; this one was reconstructed from it.
    Reconstructed(&'a Path),
    /// The file reports on was made from this original.
    Reference(&'a Path),
}

/// One tensor under one scheme, or one compared pair.
struct Row {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    /// Index into the report's groups.
    group: usize,
    stats: ErrorStats,
    scales: Option<(f64, f64)>,
    bytes: usize,
}

/// The rows are summarized by group: a measured method, or a stored type when comparing files.
enum Group {
    Method(Method),
    Stored(String),
}

impl Group {
    fn label(&self) -> String {
        match self {
            Group::Method(m) => m.label(),
            Group::Stored(t) => format!("file: {t}"),
        }
    }
}

/// A finished report: the text for stdout, and the notes (tensors skipped, and why), which the
/// table and JSON also hold and CSV cannot.
pub struct Report {
    /// The table, JSON or CSV.
    pub text: String,
    /// One line per note.
    pub notes: Vec<String>,
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

/// The error statistics of `x` (rows of `cols`) in `format` (quantized byte for byte as ggml,
/// from `f32`) and its byte count.
fn measure_format(x: &Floats, cols: usize, format: BlockFormat) -> Result<(ErrorStats, usize), String> {
    let q = crate::gguf::quantize_rows(format, &x.f32s(), cols).map_err(|e| e.to_string())?;
    let back = format.dequantize(&q).map_err(|e| e.to_string())?;
    Ok((compare(x, &Floats::F32(back))?, q.len()))
}

/// The error statistics of `x` in our two-level format `spec`, and its byte count.
fn measure_super<F: QuantFloat>(
    x: &[F],
    rows: usize,
    cols: usize,
    spec: SuperSpec,
    importance: Option<&[f32]>,
) -> Result<(ErrorStats, usize), String> {
    let q = quantize_super_2d(x, rows, cols, spec, importance).map_err(|e| e.to_string())?;
    let back: Vec<F> = q.dequantize();
    Ok((error_stats(x, &back).map_err(|e| e.to_string())?, q.bytes()))
}

/// The error statistics of `y` against `x`, exactly, whatever their types.
fn compare(x: &Floats, y: &Floats) -> Result<ErrorStats, String> {
    match (x, y) {
        (Floats::F32(x), Floats::F32(y)) => error_stats(x, y),
        (Floats::F16(x), Floats::F16(y)) => error_stats(x, y),
        (Floats::BF16(x), Floats::BF16(y)) => error_stats(x, y),
        _ => error_stats(&x.to_f64(), &y.to_f64()),
    }
    .map_err(|e| e.to_string())
}

/// The values of a floating tensor (dequantized if in blocks), or an error naming it.
fn values(input: &ModelFile, t: &Tensor) -> Result<Floats, CliError> {
    let fail = |msg: String| CliError::file(input.path(), format!("tensor {:?}: {msg}", t.name));
    match t.floats() {
        Some(v) => v.map_err(fail),
        None => Err(fail(format!("is {}, not floating point", t.kind.name()))),
    }
}

/// Whether a measuring report quantizes tensor `i` (`t`): 2-D, plain floating point (a type
/// quant cannot read, such as `F8_E4M3`, is an error naming it).
fn measurable(input: &ModelFile, i: usize, t: &Tensor) -> Result<bool, CliError> {
    if t.shape.len() != 2 {
        return Ok(false);
    }
    if let ModelFile::Safetensors(m, entries) = input {
        crate::one_level::quantizable(m, &entries[i])?;
    }
    Ok(matches!(t.kind, Kind::Plain(_)) && t.kind.is_float())
}

/// `quant report`.
pub fn report(
    path: &Path,
    methods: &[Method],
    against: Option<Against>,
    format: Format,
    sort: Sort,
    importance: Option<(&Path, &Importance)>,
    progress: &Progress,
) -> Result<Report, CliError> {
    let input = ModelFile::open(path)?;
    let mut rows = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut notes = Vec::new();
    match against {
        None => {
            groups.extend(methods.iter().map(|&m| Group::Method(m)));
            measure_all(&input, methods, importance, &mut rows, &mut notes, progress)?;
        }
        Some(Against::Reconstructed(other)) => {
            let back = ModelFile::open(other)?;
            compare_files(&input, &back, false, &mut rows, &mut groups, progress)?;
        }
        Some(Against::Reference(other)) => {
            let original = ModelFile::open(other)?;
            compare_files(&original, &input, true, &mut rows, &mut groups, progress)?;
        }
    }
    let text = render(path, against, &groups, &rows, &notes, format, sort);
    Ok(Report { text, notes })
}

/// Measures every 2-D floating tensor of `input` under every method.
fn measure_all(
    input: &ModelFile,
    methods: &[Method],
    importance: Option<(&Path, &Importance)>,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
    progress: &Progress,
) -> Result<(), CliError> {
    let mut work = 0;
    let mut stored: Vec<(String, usize)> = Vec::new();
    let mut chosen = Vec::new();
    for i in 0..input.len() {
        let t = input.tensor(i);
        if measurable(input, i, &t)? {
            work += t.bytes.len() * methods.len().max(1);
            chosen.push(i);
        } else if let Kind::Blocks(f) = t.kind {
            match stored.iter_mut().find(|(n, _)| n == f.name()) {
                Some((_, c)) => *c += 1,
                None => stored.push((f.name().to_string(), 1)),
            }
        }
    }
    if !stored.is_empty() {
        let counts: Vec<String> = stored.iter().map(|(n, c)| format!("{c} {n}")).collect();
        notes.push(format!(
            "{} tensors already quantized ({}) are not measured: their error needs the original, given with --reference FILE",
            stored.iter().map(|(_, c)| c).sum::<usize>(),
            counts.join(", ")
        ));
    }
    progress.start(work as u64, "measuring");
    // Per method, the tensors whose rows are not whole blocks of its format.
    let mut skipped: Vec<Vec<String>> = vec![Vec::new(); methods.len()];
    for i in chosen {
        let t = input.tensor(i);
        progress.message(t.name);
        let floats = values(input, &t)?;
        let (r, c) = (t.shape[0], t.shape[1]);
        let fail = |msg: String| CliError::file(input.path(), format!("tensor {:?}: {msg}", t.name));
        let float_bytes = t.bytes.len() / t.elements().max(1);
        for (group, &method) in methods.iter().enumerate() {
            let (stats, scales, bytes) = match method {
                Method::Plan(plan) => {
                    let (stats, scales) = with_floats!(&floats, x => measure(x, r, c, plan)).map_err(fail)?;
                    (stats, Some(scales), file_bytes(plan, r, c, float_bytes))
                }
                Method::Format(f) if !c.is_multiple_of(f.block_len()) => {
                    skipped[group].push(format!("{:?} ({r} x {c})", t.name));
                    progress.advance(t.bytes.len() as u64);
                    continue;
                }
                Method::Format(f) => {
                    let (stats, bytes) = measure_format(&floats, c, f).map_err(fail)?;
                    (stats, None, bytes)
                }
                Method::Super(spec) => {
                    let imp = match importance {
                        Some((p, imp)) => imp.of(p, t.name, c)?,
                        None => None,
                    };
                    let (stats, bytes) = with_floats!(&floats, x => measure_super(x, r, c, spec, imp)).map_err(fail)?;
                    (stats, None, bytes)
                }
            };
            rows.push(Row {
                name: t.name.to_string(),
                dtype: t.kind.name(),
                shape: t.shape.clone(),
                group,
                stats,
                scales,
                bytes,
            });
            progress.advance(t.bytes.len() as u64);
        }
        input.release(i);
    }
    for (method, names) in methods.iter().zip(&skipped) {
        let Method::Format(f) = method else { continue };
        let why = |its: &str| format!("{}: {its} rows are not whole blocks of {}", f.name(), f.block_len());
        match names.as_slice() {
            [] => {}
            [one] => notes.push(format!("{one} is not measured in {}", why("its"))),
            [first, second, ..] => notes.push(format!(
                "{} tensors are not measured in {} ({first}, {second}{}); its summary covers the others only",
                names.len(),
                why("their"),
                if names.len() > 2 { format!(" and {} more", names.len() - 2) } else { String::new() }
            )),
        }
    }
    progress.finish();
    Ok(())
}

/// Compares the tensors of `candidate` with those of the same name in `original`. With
/// `from_candidate`, every floating tensor of two or more dimensions of `candidate` (quantized or
/// not) is looked up in `original`; otherwise every 2-D floating tensor of `original` is looked
/// up in `candidate`. Rows are grouped by the candidate tensor's stored type.
fn compare_files(
    original: &ModelFile,
    candidate: &ModelFile,
    from_candidate: bool,
    rows: &mut Vec<Row>,
    groups: &mut Vec<Group>,
    progress: &Progress,
) -> Result<(), CliError> {
    let (listed, other) = if from_candidate { (candidate, original) } else { (original, candidate) };
    let by_name: std::collections::HashMap<&str, usize> = (0..other.len()).map(|j| (other.tensor(j).name, j)).collect();
    let mut pairs = Vec::new();
    for i in 0..listed.len() {
        let t = listed.tensor(i);
        let wanted = if from_candidate { t.shape.len() >= 2 && t.kind.is_float() } else { measurable(listed, i, &t)? };
        if !wanted {
            continue;
        }
        let Some(&j) = by_name.get(t.name) else {
            let hint = if from_candidate {
                " (a GGUF from llama.cpp names tensors blk.N...: give the F16/F32 GGUF it was quantized from)"
            } else {
                ""
            };
            return Err(CliError::file(other.path(), format!("has no tensor {:?}{hint}", t.name)));
        };
        let o = other.tensor(j);
        if o.shape != t.shape || !o.kind.is_float() {
            return Err(CliError::file(
                other.path(),
                format!(
                    "tensor {:?} is {} {:?}, the one compared with it is {} {:?}",
                    t.name,
                    o.kind.name(),
                    o.shape,
                    t.kind.name(),
                    t.shape
                ),
            ));
        }
        pairs.push(if from_candidate { (j, i) } else { (i, j) });
    }
    let work: usize = pairs.iter().map(|&(i, _)| original.tensor(i).bytes.len()).sum();
    progress.start(work as u64, "comparing");
    for (i, j) in pairs {
        let (x, y) = (original.tensor(i), candidate.tensor(j));
        progress.message(x.name);
        let stats = compare(&values(original, &x)?, &values(candidate, &y)?)
            .map_err(|e| CliError::file(candidate.path(), format!("tensor {:?}: {e}", y.name)))?;
        let stored = y.kind.name();
        let group = match groups.iter().position(|g| matches!(g, Group::Stored(s) if *s == stored)) {
            Some(g) => g,
            None => {
                groups.push(Group::Stored(stored));
                groups.len() - 1
            }
        };
        let listed = if from_candidate { &y } else { &x };
        rows.push(Row {
            name: listed.name.to_string(),
            dtype: listed.kind.name(),
            shape: listed.shape.clone(),
            group,
            stats,
            scales: None,
            bytes: y.bytes.len(),
        });
        original.release(i);
        candidate.release(j);
        progress.advance(x.bytes.len() as u64);
    }
    progress.finish();
    Ok(())
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

fn render(
    input: &Path,
    against: Option<Against>,
    groups: &[Group],
    rows: &[Row],
    notes: &[String],
    format: Format,
    sort: Sort,
) -> String {
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

/// `quant inspect`: every tensor with dtype, shape, elements and bytes.
pub fn inspect(input: &Path) -> Result<String, CliError> {
    let model = SafetensorsFile::open(input)?;
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

#[cfg(test)]
mod tests {
    use quant_core::BlockFormat;
    use quant_traits::half::f16;
    use serde_json::Value;

    use super::*;
    use quant_testkit::gguf::Builder;

    fn json_report(path: &Path, methods: &[Method], against: Option<Against>) -> Result<Value, CliError> {
        let r = report(path, methods, against, Format::Json, Sort::Given, None, &Progress::new(true))?;
        Ok(serde_json::from_str(&r.text).expect("json"))
    }

    fn row<'a>(v: &'a Value, name: &str) -> &'a Value {
        v["tensors"].as_array().and_then(|t| t.iter().find(|t| t["name"] == name)).expect("row")
    }

    /// A GGUF written by `quant quantize --type q4_k` from an F32/F16 GGUF, reported against that
    /// original: each tensor's figures are the library's (Q4_K round trip against the original
    /// values, F16 ones widened exactly), the same as measuring Q4_K on the original directly;
    /// a wrong reference is a clear error.
    #[test]
    fn a_quantized_gguf_against_its_reference_gives_the_library_figures() {
        let dir = std::env::temp_dir().join(format!("quant-report-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (original, quantized) = (dir.join("in.gguf"), dir.join("q.gguf"));
        let x: Vec<f32> = (0..2 * 256).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013).collect();
        let h: Vec<f16> = x[..256].iter().map(|&v| f16::from_f32(v * 0.5)).collect();
        let mut b = Builder::new();
        b.tensors = vec![
            ("a".into(), vec![256, 2], 0, x.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ("h".into(), vec![256, 1], 1, h.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect()),
            ("n".into(), vec![256], 0, x[..256].iter().flat_map(|v| v.to_le_bytes()).collect()),
        ];
        std::fs::write(&original, b.bytes()).expect("write");
        crate::gguf::quantize(
            &original,
            &quantized,
            crate::gguf::Target::Format(BlockFormat::Q4_K),
            &Progress::new(true),
        )
        .expect("quantizes");

        let a_back = BlockFormat::Q4_K.dequantize(&BlockFormat::Q4_K.quantize(&x).expect("blocks")).expect("blocks");
        let want_a = error_stats(&x, &a_back).expect("finite");
        let h32: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
        let h_back = BlockFormat::Q4_K.dequantize(&BlockFormat::Q4_K.quantize(&h32).expect("blocks")).expect("blocks");
        let widen = |v: &[f32]| v.iter().map(|&y| f64::from(y)).collect::<Vec<f64>>();
        let want_h = error_stats(&widen(&h32), &widen(&h_back)).expect("finite");

        let v = json_report(&quantized, &[], Some(Against::Reference(&original))).expect("report");
        assert_eq!(v["tensors"].as_array().map(Vec::len), Some(2), "the 1-D tensor is not compared");
        for (name, want) in [("a", &want_a), ("h", &want_h)] {
            let r = row(&v, name);
            assert_eq!((r["stored"].as_str(), r["dtype"].as_str()), (Some("Q4_K"), Some("Q4_K")));
            assert_eq!(r["mse"].as_f64(), Some(want.mse), "{name}");
            assert_eq!(r["max_error"].as_f64(), Some(want.max_error), "{name}");
            assert_eq!(r["snr_db"].as_f64(), Some(want.snr_db), "{name}");
            assert_eq!(r["bits_per_weight"].as_f64(), Some(4.5), "{name}");
        }
        let s = &v["summary"][0];
        assert_eq!((s["stored"].as_str(), s["tensors"].as_u64()), (Some("Q4_K"), Some(2)));
        let (n, signal, err) = (
            256.0 * 3.0,
            want_a.signal_power * 512.0 + want_h.signal_power * 256.0,
            want_a.mse * 512.0 + want_h.mse * 256.0,
        );
        let total = s["snr_db_total"].as_f64().expect("finite");
        assert!((total - 10.0 * (signal / err).log10()).abs() < 1e-12, "{total} over {n} values");

        // Measuring Q4_K on the original gives the same figures.
        let m = json_report(&original, &[Method::Format(BlockFormat::Q4_K)], None).expect("report");
        assert_eq!(row(&m, "a")["snr_db"], row(&v, "a")["snr_db"]);
        assert_eq!(row(&m, "h")["mse"], row(&v, "h")["mse"]);
        // The quantized file alone: nothing to measure, and a note saying why.
        let alone = json_report(&quantized, &[Method::Format(BlockFormat::Q6_K)], None).expect("report");
        assert_eq!(alone["tensors"].as_array().map(Vec::len), Some(0));
        assert!(alone["notes"][0].as_str().is_some_and(|n| n.contains("2 Q4_K") && n.contains("--reference")));

        // A reference without the tensor, or with another shape: one line naming it.
        let mut wrong = Builder::new();
        wrong.tensors = vec![("a".into(), vec![256, 2], 0, vec![0; 2048])];
        let bad = dir.join("wrong.gguf");
        std::fs::write(&bad, wrong.bytes()).expect("write");
        let e = json_report(&quantized, &[], Some(Against::Reference(&bad))).expect_err("no tensor h");
        assert!(e.to_string().contains("has no tensor \"h\""), "{e}");
        wrong.tensors = vec![("a".into(), vec![128, 4], 0, vec![0; 2048]), ("h".into(), vec![256, 1], 1, vec![0; 512])];
        std::fs::write(&bad, wrong.bytes()).expect("write");
        let e = json_report(&quantized, &[], Some(Against::Reference(&bad))).expect_err("shapes differ");
        assert!(e.to_string().contains("tensor \"a\" is F32 [4, 128]"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

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
