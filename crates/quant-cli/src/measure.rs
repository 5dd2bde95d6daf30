//! Measuring for `quant report`: every 2-D floating tensor of a file quantized and dequantized
//! under each method and compared with itself, or a file's tensors compared with another's.
//! (`render` writes what this finds.)

use std::path::Path;

use quant_analysis::{error_stats, ErrorStats};
use quant_core::superblock::SuperSpec;
use quant_core::{BlockFormat, QuantFloat};
use quant_io::imatrix::Importance;
use quant_io::safetensors::Floats;
use quant_io::{with_floats, Kind, ModelFile, Tensor};
use serde_json::{json, Value};

use crate::scheme::{dequantize_2d, file_bytes, quantize_2d, quantize_super_2d, super_name, Plan};
use crate::{CliError, Progress};

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
    /// The method's name.
    pub fn label(self) -> String {
        match self {
            Method::Plan(p) => p.to_string(),
            Method::Format(f) => f.name().to_string(),
            Method::Super(s) => super_name(s),
        }
    }

    /// The method as the JSON report lists it.
    pub fn json(self) -> Value {
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
pub struct Row {
    /// The tensor's name.
    pub name: String,
    /// Its type as the file names it.
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Index into the groups.
    pub group: usize,
    /// The error statistics.
    pub stats: ErrorStats,
    /// The smallest and largest scale, for a measured scheme.
    pub scales: Option<(f64, f64)>,
    /// The bytes the tensor takes as quantized or stored.
    pub bytes: usize,
}

/// The rows are summarized by group: a measured method, or a stored type when comparing files.
pub enum Group {
    /// A measured method.
    Method(Method),
    /// A stored type of a compared file.
    Stored(String),
}

impl Group {
    /// The group's name in the table and CSV.
    pub fn label(&self) -> String {
        match self {
            Group::Method(m) => m.label(),
            Group::Stored(t) => format!("file: {t}"),
        }
    }
}

/// What measuring or comparing found: a row per tensor and group, the groups, and notes
/// (tensors skipped, and why).
pub struct Measured {
    /// One row per tensor and group.
    pub rows: Vec<Row>,
    /// The measured methods, or the compared file's stored types.
    pub groups: Vec<Group>,
    /// One line per note.
    pub notes: Vec<String>,
}

/// Measures `path` under `methods`, or compares it with the file of `against`.
///
/// # Errors
/// A file that cannot be read, a tensor that cannot be measured or compared (naming it).
pub fn measure_file(
    path: &Path,
    methods: &[Method],
    against: Option<Against>,
    importance: Option<(&Path, &Importance)>,
    progress: &Progress,
) -> Result<Measured, CliError> {
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
    Ok(Measured { rows, groups, notes })
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
