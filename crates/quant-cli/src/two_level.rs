//! `quant quantize --super` and its `dequantize`: our two-level formats in a safetensors file.
//!
//! For each 2-D floating tensor `W` of the input (safetensors, or F32/F16/BF16 tensors of a
//! GGUF), the file holds the parts of [`SuperMatrix`], each a 1-D tensor:
//! * `W`: the code bit stream (`U8`);
//! * `W.scales`: the sub-scale bit stream (`U8`);
//! * `W.offsets`: the sub-offset bit stream (`U8`, offset grid), or the zero points in the code
//!   width (zero-point grid);
//! * `W.super_scales`, `W.super_offsets`: `F16`, one per super-block (few-bit sub-scales only;
//!   offsets for the offset grid only);
//!
//! and every other tensor unchanged. The header's `__metadata__` records `quant.format =
//! "quant"`, `quant.version = "1"`, `quant.super` (the format, as `--super` names it),
//! `quant.fit`, `quant.importance` (the file's name, when one weighted the search) and per
//! quantized tensor `quant.tensor.W = {"dtype": .., "shape": [rows, cols], "storage": "super"}`.
//! Reading back checks every part's size against the shape before anything is allocated.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use quant_core::superblock::{Fit, SuperMatrix, SuperSpec};
use quant_core::MatrixShape;
use quant_traits::half::f16;
use safetensors::tensor::Dtype;
use serde_json::json;

use crate::pipeline::{copy_bytes, write_all, Step, Tallies, Written};
use crate::scheme::{parse_super, quantize_super_2d, super_name};
use crate::stored::{dequantize_steps, float_size, kept_metadata, parse_stored};
use crate::{CliError, Progress};
use quant_io::imatrix::Importance;
use quant_io::le::{read_le, write_le};
use quant_io::safetensors::{dtype_name, SafetensorsFile};
use quant_io::writer::{Planned, Writer};
use quant_io::{with_floats, Kind, ModelFile, Tensor};

/// The part names and dtypes, in file order.
const PARTS: [(&str, Dtype); 5] = [
    ("", Dtype::U8),
    (".scales", Dtype::U8),
    (".offsets", Dtype::U8),
    (".super_scales", Dtype::F16),
    (".super_offsets", Dtype::F16),
];

/// `--super` without the fit (which the metadata keeps apart).
fn format_name(spec: SuperSpec) -> String {
    super_name(spec).split(' ').next().unwrap_or_default().to_string()
}

/// `quant quantize --super`: every 2-D float tensor of `input` into `spec`, optionally
/// weighted by `importance` (tensors it has no entry for are quantized unweighted; a note on
/// stderr counts them).
pub fn quantize(
    input: &Path,
    output: &Path,
    spec: SuperSpec,
    importance: Option<(&Path, &Importance)>,
    progress: &Progress,
) -> Result<Written, CliError> {
    let source = ModelFile::open(input)?;
    let mut planned = Vec::new();
    let mut meta = BTreeMap::new();
    meta.insert("quant.format".to_string(), "quant".to_string());
    meta.insert("quant.version".to_string(), "1".to_string());
    meta.insert("quant.super".to_string(), format_name(spec));
    meta.insert("quant.fit".to_string(), if spec.fit() == Fit::Search { "search" } else { "minmax" }.to_string());
    if let Some((p, _)) = importance {
        meta.insert(
            "quant.importance".to_string(),
            p.file_name().map_or(String::new(), |n| n.to_string_lossy().into()),
        );
    }
    let mut steps = vec![Step::Copy; source.len()];
    let (mut weighted, mut unweighted) = (0usize, 0usize);
    let mut tallies = Tallies::default();
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    for (i, step) in steps.iter_mut().enumerate() {
        let t = source.tensor(i);
        match t.kind {
            Kind::Blocks(f) => {
                return Err(CliError::file(
                    input,
                    format!("tensor {:?} is already quantized ({}): quantize from the original", t.name, f.name()),
                ))
            }
            Kind::Plain(d) if t.shape.len() == 2 && t.kind.is_float() => {
                let shape = MatrixShape::new(t.shape[0], t.shape[1]);
                let sizes =
                    spec.part_sizes(shape).map_err(|e| CliError::file(input, format!("tensor {:?}: {e}", t.name)))?;
                let first_part = planned.len();
                for ((suffix, dtype), n) in PARTS.iter().zip(sizes) {
                    if !present(spec, suffix) {
                        continue;
                    }
                    let bytes = if *dtype == Dtype::F16 { 2 * n } else { n };
                    planned.push(Planned { name: format!("{}{suffix}", t.name), dtype: *dtype, shape: vec![n], bytes });
                }
                let bytes: usize = planned[first_part..].iter().map(|p| p.bytes).sum();
                tallies.add(&super_name(spec), count(bytes), count(t.elements()));
                meta.insert(
                    format!("quant.tensor.{}", t.name),
                    json!({"dtype": dtype_name(d), "shape": t.shape, "storage": "super"}).to_string(),
                );
                if let Some((p, imp)) = importance {
                    match imp.of(p, t.name, t.shape[1])? {
                        Some(_) => weighted += 1,
                        None => unweighted += 1,
                    }
                }
                *step = Step::Convert;
            }
            Kind::Plain(d) => {
                planned.push(Planned {
                    name: t.name.to_string(),
                    dtype: d,
                    shape: t.shape.clone(),
                    bytes: t.bytes.len(),
                });
                tallies.add(&dtype_name(d), count(t.bytes.len()), count(t.elements()));
            }
        }
    }
    if let Some((p, _)) = importance {
        if weighted == 0 {
            return Err(CliError::file(
                p,
                "names none of the tensors quantized (llama.cpp's imatrix uses GGUF names such as blk.0.attn_q.weight; quantize the GGUF)".into(),
            ));
        }
        if unweighted > 0 {
            eprintln!(
                "quant: note: {unweighted} of {} tensors have no importance entry and are quantized unweighted",
                weighted + unweighted
            );
        }
    }
    let w = Writer::create(output, planned, meta)?;
    let convert = |_: usize, t: &Tensor<'_>, w: &mut Writer| {
        let fail = |e: String| CliError::file(input, format!("tensor {:?}: {e}", t.name));
        let floats = t.floats().ok_or_else(|| fail("not floating point".into()))?.map_err(fail)?;
        let imp = match importance {
            Some((p, imp)) => imp.of(p, t.name, t.shape[1])?,
            None => None,
        };
        let q = with_floats!(&floats, x => quantize_super_2d(x, t.shape[0], t.shape[1], spec, imp))
            .map_err(|e| fail(e.to_string()))?;
        for suffix in PARTS.map(|(s, _)| s) {
            if !present(spec, suffix) {
                continue;
            }
            match suffix {
                "" => w.write(q.codes())?,
                ".scales" => w.write(q.scales())?,
                ".offsets" => w.write(q.offsets())?,
                ".super_scales" => w.write(&write_le(q.super_scales()))?,
                _ => w.write(&write_le(q.super_offsets()))?,
            }
        }
        Ok(())
    };
    let mut written = write_all(&source, &steps, w, output, (progress, "quantizing"), convert, copy_bytes)?;
    written.types = tallies.into_vec();
    Ok(written)
}

/// Whether part `suffix` exists in `spec`'s files.
fn present(spec: SuperSpec, suffix: &str) -> bool {
    let offsets = spec.grid() == quant_core::superblock::Grid::Offset;
    let zero_points = spec.grid() == quant_core::superblock::Grid::ZeroPoint;
    let sup = matches!(spec.sub_scale(), quant_core::superblock::SubScale::Bits(_));
    match suffix {
        ".offsets" => offsets || zero_points,
        ".super_scales" => sup,
        ".super_offsets" => sup && offsets,
        _ => true,
    }
}

/// Whether `meta` is a two-level file's.
pub fn is_super(meta: &HashMap<String, String>) -> bool {
    meta.contains_key("quant.super")
}

/// `quant dequantize` of a two-level file (`stored::written_by_quant` checked): every quantized
/// tensor back in its original dtype.
pub fn dequantize(source: &ModelFile, output: &Path, progress: &Progress) -> Result<Written, CliError> {
    let input = source.path();
    let ModelFile::Safetensors(model, entries) = source else {
        return Err(CliError::file(input, "is a GGUF file, not one of ours".into()));
    };
    let meta = model.metadata();
    let name = meta.get("quant.super").cloned().unwrap_or_default();
    let spec =
        parse_super(&name, Fit::Search).map_err(|e| CliError::file(input, format!("metadata quant.super: {e}")))?;
    let by_name: HashMap<&str, usize> = entries.iter().enumerate().map(|(i, e)| (e.name.as_str(), i)).collect();
    // Quantized tensors: (dtype, shape) from the metadata.
    let mut stored: HashMap<String, (Dtype, MatrixShape)> = HashMap::new();
    for (k, v) in &meta {
        let Some(base) = k.strip_prefix("quant.tensor.") else { continue };
        let st = parse_stored(input, base, v)?;
        if st.storage != "super" {
            return Err(CliError::file(input, format!("metadata of tensor {base:?}: storage is not super")));
        }
        let (dtype, dims) = (st.dtype, st.shape);
        stored.insert(base.to_string(), (dtype, MatrixShape::new(dims[0], dims[1])));
    }
    let part_of =
        |name: &str| PARTS[1..].iter().any(|(s, _)| name.strip_suffix(s).is_some_and(|base| stored.contains_key(base)));
    let mut planned = Vec::new();
    for e in entries {
        if let Some((dtype, shape)) = stored.get(&e.name) {
            // Sizes come from the parts, checked below, before anything is allocated.
            let bytes = shape.rows.checked_mul(shape.cols).and_then(|n| n.checked_mul(float_size(*dtype)));
            let bytes = bytes.ok_or_else(|| CliError::file(input, format!("tensor {:?}: shape overflows", e.name)))?;
            planned.push(Planned { name: e.name.clone(), dtype: *dtype, shape: vec![shape.rows, shape.cols], bytes });
        } else if !part_of(&e.name) {
            planned.push(Planned { name: e.name.clone(), dtype: e.dtype, shape: e.shape.clone(), bytes: e.bytes() });
        }
    }
    // Every quantized tensor's parts are checked before the output is created.
    for (base, &(_, shape)) in &stored {
        read_parts(model, entries, &by_name, input, base, spec, shape, true)?;
    }
    let w = Writer::create(output, planned, kept_metadata(&meta))?;
    let steps = dequantize_steps(entries, |n| stored.contains_key(n), part_of);
    let convert = |i: usize, _: &Tensor<'_>, w: &mut Writer| {
        let e = &entries[i];
        let Some(&(dtype, shape)) = stored.get(&e.name) else { return Ok(()) };
        let q = read_parts(model, entries, &by_name, input, &e.name, spec, shape, false)?
            .ok_or_else(|| CliError::file(input, format!("tensor {:?}: parts missing", e.name)))?;
        let out = match dtype {
            Dtype::F64 => write_le(&q.dequantize::<f64>()),
            Dtype::F16 => write_le(&q.dequantize::<f16>()),
            Dtype::BF16 => write_le(&q.dequantize::<quant_traits::half::bf16>()),
            _ => write_le(&q.dequantize::<f32>()),
        };
        Ok(w.write(&out)?)
    };
    write_all(source, &steps, w, output, (progress, "dequantizing"), convert, copy_bytes)
}

/// The parts of tensor `base`, checked against `spec` and `shape` (sizes first, from the
/// header alone); with `check_only`, nothing is built.
#[allow(clippy::too_many_arguments)]
fn read_parts(
    model: &SafetensorsFile,
    entries: &[quant_io::safetensors::Entry],
    by_name: &HashMap<&str, usize>,
    input: &Path,
    base: &str,
    spec: SuperSpec,
    shape: MatrixShape,
    check_only: bool,
) -> Result<Option<SuperMatrix>, CliError> {
    let fail = |what: String| CliError::file(input, format!("tensor {base:?}: {what}"));
    let sizes = spec.part_sizes(shape).map_err(|e| fail(e.to_string()))?;
    let mut bytes: Vec<&[u8]> = Vec::new();
    for ((suffix, dtype), n) in PARTS.iter().zip(sizes) {
        if !present(spec, suffix) {
            bytes.push(&[]);
            continue;
        }
        let name = format!("{base}{suffix}");
        let e = by_name.get(name.as_str()).map(|&i| &entries[i]).ok_or_else(|| fail(format!("no tensor {name:?}")))?;
        let want = if *dtype == Dtype::F16 { 2 * n } else { n };
        if e.dtype != *dtype || e.bytes() != want {
            return Err(fail(format!(
                "{name:?} is {} of {} bytes, but {} of {want} bytes is what {} needs for {}x{}",
                dtype_name(e.dtype),
                e.bytes(),
                dtype_name(*dtype),
                format_name(spec),
                shape.rows,
                shape.cols
            )));
        }
        bytes.push(model.bytes(e));
    }
    if check_only {
        return Ok(None);
    }
    SuperMatrix::from_parts(
        spec,
        shape,
        bytes[0].to_vec(),
        bytes[1].to_vec(),
        bytes[2].to_vec(),
        read_le::<f16>(bytes[3]),
        read_le::<f16>(bytes[4]),
    )
    .map(Some)
    .map_err(|e| fail(e.to_string()))
}
