//! `quant quantize` and `quant dequantize` of our one-level files: safetensors in, safetensors out,
//! tensor by tensor.
//!
//! A quantized file holds, for each 2-D floating tensor `W` of the input:
//! * `W`: the codes, `I8`/`U8` of `W`'s shape (5..=8 bits), or packed `U8` bytes, one dimension
//!   (`⌈elements / 2⌉` for 3-4 bits, `⌈elements / 4⌉` for 2 bits; first code in the lowest bits,
//!   row-major, the tail zero-padded);
//! * `W.scale`: the scales in `W`'s own dtype, shape `[1]` (tensor), `[rows]` (channel) or
//!   `[rows, ⌈cols / G⌉]` (group:G);
//! * `W.zero_point`: `I32` of the same shape, asymmetric schemes only;
//!
//! and every other tensor (1-D biases and norms, integer tensors) unchanged. The header's
//! `__metadata__` records `quant.format = "quant"`, `quant.version = "1"`, `quant.scheme`
//! (`sym`/`asym`), `quant.bits`, `quant.granularity`, `quant.convention` (`exact`: `quant_core::Convention::Exact`) and, for each
//! quantized tensor, `quant.tensor.W = {"dtype": .., "shape": [..], "storage": ..}` (JSON).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use quant_core::{QuantFloat, QuantParams, QuantSpec, Scheme};
use safetensors::tensor::Dtype;
use serde_json::json;

use crate::pipeline::{copy_bytes, write_all, Step, Tallies, Written};
use crate::scheme::{dequantize_2d, quantize_2d, Bytes, Gran, Plan};
use crate::stored::{dequantize_steps, float_size, kept_metadata, parse_stored, Stored};
use crate::{with_storage, CliError, Progress};
use quant_io::le::{read_le, write_le, LeBytes};
use quant_io::safetensors::{dtype_name, Entry, SafetensorsFile};
use quant_io::writer::{Planned, Writer};
use quant_io::{with_floats, ModelFile, Tensor};

/// The shape of a tensor's parameter sets under `gran`.
fn param_shape(gran: Gran, rows: usize, cols: usize) -> Vec<usize> {
    match gran {
        Gran::Tensor => vec![1],
        Gran::Channel => vec![rows],
        Gran::Group(g) => vec![rows, cols.div_ceil(g)],
    }
}

/// Whether `e` is quantized: a 2-D floating tensor we can read.
pub fn quantizable(model: &SafetensorsFile, e: &Entry) -> Result<bool, CliError> {
    if e.shape.len() != 2 {
        return Ok(false);
    }
    if matches!(e.dtype, Dtype::F8_E4M3 | Dtype::F8_E5M2 | Dtype::F8_E8M0 | Dtype::F4 | Dtype::F6_E2M3 | Dtype::F6_E3M2)
    {
        return Err(CliError::file(
            model.path(),
            format!("tensor {:?} has dtype {:?}, which quant cannot read (F32, F16, BF16, F64)", e.name, e.dtype),
        ));
    }
    Ok(e.is_float())
}

/// `quant quantize` into one of our one-level files: what it wrote.
pub fn quantize(input: &Path, output: &Path, plan: Plan, progress: &Progress) -> Result<Written, CliError> {
    let source = ModelFile::open(input)?;
    let ModelFile::Safetensors(model, entries) = &source else {
        return Err(CliError::file(
            input,
            "is a GGUF file: quantize it with --type (llama.cpp's formats) or --super (ours)".into(),
        ));
    };
    let Some(storage) = plan.file_storage() else {
        return Err(CliError::usage(format!("--bits {}: files hold 2 to 8 bits", plan.spec.bits())));
    };
    let mut planned = Vec::new();
    let mut meta = BTreeMap::new();
    meta.insert("quant.format".to_string(), "quant".to_string());
    meta.insert("quant.version".to_string(), "1".to_string());
    meta.insert("quant.scheme".to_string(), plan.scheme_name().to_string());
    meta.insert("quant.bits".to_string(), plan.spec.bits().to_string());
    meta.insert("quant.granularity".to_string(), plan.gran.to_string());
    meta.insert("quant.convention".to_string(), quant_core::Convention::Exact.name().to_string());
    let mut steps = Vec::with_capacity(entries.len());
    let mut tallies = Tallies::default();
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    for e in entries {
        if !quantizable(model, e)? {
            planned.push(Planned { name: e.name.clone(), dtype: e.dtype, shape: e.shape.clone(), bytes: e.bytes() });
            steps.push(Step::Copy);
            tallies.add(&dtype_name(e.dtype), count(e.bytes()), count(e.elements()));
            continue;
        }
        steps.push(Step::Convert);
        let first_part = planned.len();
        let (rows, cols) = (e.shape[0], e.shape[1]);
        let units = with_storage!(storage, Q => <Q as quant_traits::Storage>::units_for(e.elements()));
        let (dtype, shape) = if matches!(storage, "i8" | "u8") {
            (if storage == "i8" { Dtype::I8 } else { Dtype::U8 }, e.shape.clone())
        } else {
            (Dtype::U8, vec![units])
        };
        planned.push(Planned { name: e.name.clone(), dtype, shape, bytes: units });
        let pshape = param_shape(plan.gran, rows, cols);
        let sets: usize = pshape.iter().product();
        planned.push(Planned {
            name: format!("{}.scale", e.name),
            dtype: e.dtype,
            shape: pshape.clone(),
            bytes: sets * float_size(e.dtype),
        });
        if plan.spec.scheme() == Scheme::Asymmetric {
            planned.push(Planned {
                name: format!("{}.zero_point", e.name),
                dtype: Dtype::I32,
                shape: pshape,
                bytes: sets * 4,
            });
        }
        meta.insert(
            format!("quant.tensor.{}", e.name),
            json!({"dtype": dtype_name(e.dtype), "shape": e.shape, "storage": storage}).to_string(),
        );
        // Codes, scales and zero points together.
        let bytes: usize = planned[first_part..].iter().map(|p| p.bytes).sum();
        tallies.add(&plan.to_string(), count(bytes), count(e.elements()));
    }
    let w = Writer::create(output, planned, meta)?;
    let convert = |i: usize, _: &Tensor<'_>, w: &mut Writer| {
        let e = &entries[i];
        let floats = model.floats(e)?;
        with_floats!(floats, x => with_storage!(storage, Q => write_quantized::<_, Q>(model, e, &x, plan, w)))
    };
    let mut written = write_all(&source, &steps, w, output, (progress, "quantizing"), convert, copy_bytes)?;
    written.types = tallies.into_vec();
    Ok(written)
}

fn write_quantized<F: QuantFloat + LeBytes, Q: Bytes>(
    model: &SafetensorsFile,
    e: &Entry,
    x: &[F],
    plan: Plan,
    w: &mut Writer,
) -> Result<(), CliError> {
    let (codes, params) = quantize_2d::<F, Q>(x, e.shape[0], e.shape[1], plan)
        .map_err(|err| CliError::file(model.path(), format!("tensor {:?}: {err}", e.name)))?;
    let bytes: Vec<u8> = codes.iter().map(|&u| u.byte()).collect();
    w.write(&bytes)?;
    let scales: Vec<F> = params.iter().map(|p| p.scale()).collect();
    w.write(&write_le(&scales))?;
    if plan.spec.scheme() == Scheme::Asymmetric {
        // Zero points of at most 8-bit codes fit i32.
        let zps: Vec<i32> = params.iter().map(|p| i32::try_from(p.zero_point()).unwrap_or(i32::MAX)).collect();
        w.write(&write_le(&zps))?;
    }
    Ok(())
}

/// `quant dequantize` of a one-level file (`stored::written_by_quant` checked).
pub fn dequantize(source: &ModelFile, output: &Path, progress: &Progress) -> Result<Written, CliError> {
    let input = source.path();
    let ModelFile::Safetensors(model, entries) = source else {
        return Err(CliError::file(input, "is a GGUF file, not one of ours".into()));
    };
    let meta = model.metadata();
    let field = |k: &str| meta.get(k).cloned().ok_or_else(|| CliError::file(input, format!("metadata lacks {k}")));
    let bits: u32 = field("quant.bits")?
        .parse()
        .map_err(|_| CliError::file(input, "metadata quant.bits is not a number".into()))?;
    let scheme = match field("quant.scheme")?.as_str() {
        "sym" => Scheme::Symmetric,
        "asym" => Scheme::Asymmetric,
        other => return Err(CliError::file(input, format!("metadata quant.scheme {other:?} is neither sym nor asym"))),
    };
    let spec = QuantSpec::new(scheme, bits).map_err(|e| CliError::file(input, format!("metadata: {e}")))?;
    let gran =
        Gran::parse(&field("quant.granularity")?).map_err(|e| CliError::file(input, format!("metadata: {e}")))?;
    let by_name: HashMap<&str, &Entry> = entries.iter().map(|e| (e.name.as_str(), e)).collect();
    let mut stored = HashMap::new();
    for e in entries {
        if let Some(text) = meta.get(&format!("quant.tensor.{}", e.name)) {
            let st = parse_stored(input, &e.name, text)?;
            if st.storage == "super" {
                return Err(CliError::file(
                    input,
                    format!("metadata of tensor {:?}: storage super, but no quant.super names the format", e.name),
                ));
            }
            // The shape the metadata claims must be what the codes hold, before anything of
            // that size is planned or allocated.
            let elements = st.shape[0].checked_mul(st.shape[1]);
            let want = elements.map(|n| with_storage!(st.storage, Q => <Q as quant_traits::Storage>::units_for(n)));
            let out_bytes = elements.and_then(|n| n.checked_mul(float_size(st.dtype)));
            if want != Some(e.bytes()) || out_bytes.is_none() {
                return Err(CliError::file(
                    input,
                    format!(
                        "tensor {:?}: its metadata claims shape {}x{}, which {} codes in {} bytes cannot hold ({} bytes stored)",
                        e.name,
                        st.shape[0],
                        st.shape[1],
                        st.storage,
                        want.map_or("more than addressable".to_string(), |b| b.to_string()),
                        e.bytes()
                    ),
                ));
            }
            stored.insert(e.name.clone(), st);
        }
    }
    let aux = |name: &str| {
        [".scale", ".zero_point"].iter().any(|s| name.strip_suffix(s).is_some_and(|base| stored.contains_key(base)))
    };
    let mut planned = Vec::new();
    for e in entries {
        if let Some(s) = stored.get(&e.name) {
            let bytes = s.shape.iter().product::<usize>() * float_size(s.dtype);
            planned.push(Planned { name: e.name.clone(), dtype: s.dtype, shape: s.shape.clone(), bytes });
        } else if !aux(&e.name) {
            planned.push(Planned { name: e.name.clone(), dtype: e.dtype, shape: e.shape.clone(), bytes: e.bytes() });
        }
    }
    let w = Writer::create(output, planned, kept_metadata(&meta))?;
    let steps = dequantize_steps(entries, |n| stored.contains_key(n), aux);
    let convert = |i: usize, _: &Tensor<'_>, w: &mut Writer| {
        let e = &entries[i];
        let Some(s) = stored.get(&e.name) else { return Ok(()) };
        let find = |suffix: &str| by_name.get(format!("{}{suffix}", e.name).as_str()).copied();
        let scale =
            find(".scale").ok_or_else(|| CliError::file(input, format!("tensor {:?} has no .scale", e.name)))?;
        let zp = if scheme == Scheme::Asymmetric {
            let z = find(".zero_point")
                .ok_or_else(|| CliError::file(input, format!("tensor {:?} has no .zero_point", e.name)))?;
            if z.dtype != Dtype::I32 {
                return Err(CliError::file(input, format!("tensor {:?}.zero_point is not I32", e.name)));
            }
            Some(z)
        } else {
            None
        };
        if scale.dtype != s.dtype {
            return Err(CliError::file(input, format!("tensor {:?}.scale is not {}", e.name, dtype_name(s.dtype))));
        }
        let zps: Vec<i64> = match zp {
            Some(z) => read_le::<i32>(model.bytes(z)).into_iter().map(i64::from).collect(),
            None => vec![0; scale.elements()],
        };
        let scales = model.floats(scale)?;
        let out: Vec<u8> = with_floats!(scales, sc => with_storage!(s.storage, Q => restore::<_, Q>(model, e, s, spec, gran, &sc, &zps)))?;
        Ok(w.write(&out)?)
    };
    write_all(source, &steps, w, output, (progress, "dequantizing"), convert, copy_bytes)
}

fn restore<F: QuantFloat + LeBytes, Q: Bytes>(
    model: &SafetensorsFile,
    e: &Entry,
    s: &Stored,
    spec: QuantSpec,
    gran: Gran,
    scales: &[F],
    zps: &[i64],
) -> Result<Vec<u8>, CliError> {
    let fail = |what: String| CliError::file(model.path(), format!("tensor {:?}: {what}", e.name));
    let (rows, cols) = (s.shape[0], s.shape[1]);
    if scales.len() != zps.len() {
        return Err(fail(format!("{} scales but {} zero points", scales.len(), zps.len())));
    }
    let params: Vec<QuantParams<F>> = scales
        .iter()
        .zip(zps)
        .map(|(&sc, &z)| QuantParams::new(spec, sc, z))
        .collect::<Result<_, _>>()
        .map_err(|err| fail(err.to_string()))?;
    let codes: Vec<Q> = model.bytes(e).iter().map(|&b| Q::from_byte(b)).collect();
    let back = dequantize_2d::<F, Q>(&codes, rows, cols, gran, &params).map_err(|err| fail(err.to_string()))?;
    Ok(write_le(&back))
}
