//! The GGUF commands: `quant inspect` and `quant dequantize` on a GGUF file, and `quant
//! quantize --type` into one (a single block format, or llama.cpp's per-tensor mix). The format
//! itself is read and written by `quant_io::gguf`.

use std::collections::BTreeMap;
use std::path::Path;

use quant_core::BlockFormat;
use quant_io::gguf::{padded_bytes, write_header, GgmlType, Gguf, TensorOut, Value, MAX_DIMS};
use quant_io::writer::{Planned, Writer};
use quant_io::{Dtype, Kind, ModelFile, Tensor};

use crate::mix::{self, Mix, ModelInfo, TensorRef};
use crate::pipeline::{copy_bytes, write_all, Step, Tallies, Written};
use crate::{CliError, Progress};

/// `quant dequantize` on a GGUF file: a safetensors file with every tensor, the quantized ones
/// dequantized to `F32` (bit for bit as ggml's `dequantize_row_*`), the others copied in their
/// own type, shapes outermost first; the scalar metadata (not arrays such as the vocabulary) as
/// `gguf.`-prefixed strings.
pub fn dequantize(source: &ModelFile, output: &Path, progress: &Progress) -> Result<Written, CliError> {
    let input = source.path();
    let ModelFile::Gguf(f) = source else {
        return Err(CliError::file(input, "is not a GGUF file".into()));
    };
    let plan: Vec<Planned> = f
        .header
        .tensors
        .iter()
        .map(|t| {
            let (dtype, bytes) = match t.ty.kind {
                Kind::Blocks(_) => (Dtype::F32, t.elements() as usize * 4),
                Kind::Plain(d) => (d, t.bytes as usize),
            };
            Planned { name: t.name.clone(), dtype, shape: t.shape(), bytes }
        })
        .collect();
    let mut meta = BTreeMap::new();
    meta.insert("gguf.version".to_string(), f.header.version.to_string());
    for (k, v) in &f.header.kv {
        match v {
            Value::Array(..) => {}
            Value::Str(s) => {
                meta.insert(format!("gguf.{k}"), s.clone());
            }
            other => {
                meta.insert(format!("gguf.{k}"), other.to_string());
            }
        }
    }
    let w = Writer::create(output, plan, meta)?;
    let steps: Vec<Step> = f
        .header
        .tensors
        .iter()
        .map(|t| if matches!(t.ty.kind, Kind::Blocks(_)) { Step::Convert } else { Step::Copy })
        .collect();
    let convert = |_: usize, t: &Tensor<'_>, w: &mut Writer| {
        let Kind::Blocks(format) = t.kind else { return Ok(()) };
        let values = format.dequantize(t.bytes).map_err(|e| CliError::file(input, format!("{}: {e}", t.name)))?;
        let mut bytes = Vec::with_capacity(values.len() * 4);
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        Ok(w.write(&bytes)?)
    };
    write_all(source, &steps, w, output, (progress, "dequantizing"), convert, copy_bytes)
}

/// One tensor to write: where its values come from and what it becomes.
struct Out {
    name: String,
    /// GGUF dimensions, innermost first.
    dims: Vec<u64>,
    /// The source's type.
    from: GgmlType,
    /// The type written: `from` (the bytes copied) or a block format (quantized from floats).
    ty: GgmlType,
    bytes: u64,
}

/// What `quant quantize --type` makes.
#[derive(Copy, Clone, Debug)]
pub enum Target {
    /// One block format for every tensor that fits it.
    Format(BlockFormat),
    /// llama.cpp's per-tensor mix (`Q4_K_M`, ...).
    Mix(Mix),
}

/// The model facts llama.cpp's mixing rules read from a GGUF header.
fn model_info(h: &Gguf) -> Result<ModelInfo, String> {
    let get = |key: &str| h.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let arch = match get("general.architecture") {
        Some(Value::Str(s)) => s.clone(),
        _ => return Err("the file has no general.architecture (a string)".into()),
    };
    let count = |key: String| -> Result<Option<usize>, String> {
        match get(&key) {
            None => Ok(None),
            Some(Value::Int(v, _)) => usize::try_from(*v).map(Some).map_err(|_| format!("{key} is {v}, not a count")),
            Some(other) => Err(format!("{key} is {other}, not a count")),
        }
    };
    let n_layer = count(format!("{arch}.block_count"))?.ok_or_else(|| format!("the file has no {arch}.block_count"))?;
    let n_expert = count(format!("{arch}.expert_count"))?.unwrap_or(0);
    // llama.cpp's LLM_TYPE_70B: a llama of 80 layers with grouped key/value heads.
    let heads = count(format!("{arch}.attention.head_count")).ok().flatten();
    let kv_heads = count(format!("{arch}.attention.head_count_kv")).ok().flatten().or(heads);
    let is_70b = arch == "llama" && n_layer == 80 && heads != kv_heads;
    Ok(ModelInfo { arch, n_layer, n_expert, is_70b })
}

/// `quant quantize IN -o OUT.gguf --type T`: every float tensor of two or more dimensions whose
/// rows are whole blocks of `format` quantized to it (byte for byte as ggml's reference
/// quantizer; rows spread over all cores), the others copied in their own type (1-D norms and
/// biases stay `F32`/`F16`, as llama.cpp keeps them); a GGUF input's metadata kept, key by key,
/// with `general.quantization_version = 2` and without `general.file_type` (llama.cpp then infers
/// it from the tensors). Written through a temporary file renamed over the destination at the
/// end; peak memory follows the largest tensor.
pub fn quantize(input: &Path, output: &Path, target: Target, progress: &Progress) -> Result<Written, CliError> {
    let fail = |msg: String| CliError::file(input, msg);
    let source = ModelFile::open(input)?;
    let mut kv: Vec<(String, Value)> = Vec::new();
    // Every tensor: name, GGUF dimensions, source type.
    let mut tensors: Vec<(String, Vec<u64>, GgmlType)> = Vec::new();
    match &source {
        ModelFile::Gguf(f) => {
            for (k, v) in &f.header.kv {
                if !matches!(k.as_str(), "general.alignment" | "general.file_type" | "general.quantization_version") {
                    kv.push((k.clone(), v.clone()));
                }
            }
            for t in &f.header.tensors {
                if let Kind::Blocks(_) = t.ty.kind {
                    return Err(fail(format!(
                        "tensor {:?} is already {}: quant quantizes F32, F16 and BF16 tensors, it does not requantize",
                        t.name, t.ty.name
                    )));
                }
                tensors.push((t.name.clone(), t.dims.clone(), t.ty));
            }
        }
        ModelFile::Safetensors(_, entries) => {
            kv.push((
                "general.name".into(),
                Value::Str(input.file_stem().map_or(String::new(), |s| s.to_string_lossy().into_owned())),
            ));
            for e in entries {
                let ty = GgmlType::by_dtype(e.dtype).ok_or_else(|| {
                    fail(format!("tensor {:?} has dtype {:?}, which GGUF cannot hold", e.name, e.dtype))
                })?;
                let dims: Vec<u64> = e.shape.iter().rev().map(|&d| d as u64).collect();
                let dims = if dims.is_empty() { vec![1] } else { dims };
                if dims.len() > MAX_DIMS as usize {
                    return Err(fail(format!(
                        "tensor {:?} has {} dimensions; GGUF holds at most {MAX_DIMS}",
                        e.name,
                        dims.len()
                    )));
                }
                tensors.push((e.name.clone(), dims, ty));
            }
        }
    }
    let mut fallbacks = Vec::new();
    let types: Vec<GgmlType> = match target {
        Target::Format(format) => {
            let to = GgmlType::of_format(format);
            let mut types = Vec::with_capacity(tensors.len());
            for (name, dims, from) in &tensors {
                if !from.is_plain_float() || dims.len() < 2 {
                    types.push(*from);
                    continue;
                }
                // As llama-quantize: rows that are not whole blocks get the fallback format.
                let ty = match mix::fallback(dims[0], format) {
                    mix::Target::Blocks(f) if f == format => to,
                    mix::Target::Blocks(f) => GgmlType::of_format(f),
                    mix::Target::F16 | mix::Target::Keep => {
                        GgmlType::by_dtype(Dtype::F16).ok_or_else(|| fail("no F16 type".into()))?
                    }
                };
                if ty != to {
                    fallbacks.push(format!(
                        "tensor {name:?}: rows of {} values are not whole {} blocks of {}: {} instead",
                        dims[0],
                        format.name(),
                        format.block_len(),
                        ty.name
                    ));
                }
                types.push(ty);
            }
            types
        }
        Target::Mix(mix) => {
            let ModelFile::Gguf(f) = &source else {
                return Err(fail(format!(
                    "--type {}: llama.cpp's per-tensor rules read its tensor names and model metadata; give the GGUF that convert_hf_to_gguf.py writes (F32/F16/BF16), or a single format such as q4_k",
                    mix.name().to_ascii_lowercase()
                )));
            };
            let info =
                model_info(&f.header).map_err(|e| fail(format!("--type {}: {e}", mix.name().to_ascii_lowercase())))?;
            let refs: Vec<TensorRef> = tensors
                .iter()
                .map(|(name, dims, from)| TensorRef { name, dims, float: from.is_plain_float() })
                .collect();
            let plan = mix.plan(&info, &refs).map_err(fail)?;
            kv.push(("general.file_type".into(), Value::Int(i128::from(mix.ftype()), 4)));
            plan.iter()
                .zip(&tensors)
                .map(|(p, (_, _, from))| match p {
                    mix::Target::Keep => Ok(*from),
                    mix::Target::F16 => GgmlType::by_dtype(Dtype::F16).ok_or_else(|| fail("no F16 type".into())),
                    mix::Target::Blocks(f) => Ok(GgmlType::of_format(*f)),
                })
                .collect::<Result<_, _>>()?
        }
    };
    let outs: Vec<Out> = tensors
        .into_iter()
        .zip(types)
        .map(|((name, dims, from), ty)| {
            let bytes = ty.bytes_for(dims.iter().product());
            Out { name, dims, from, ty, bytes }
        })
        .collect();
    kv.push(("general.quantization_version".into(), Value::Int(2, 4)));
    let infos: Vec<TensorOut<'_>> = outs.iter().map(|o| TensorOut { name: &o.name, dims: &o.dims, ty: o.ty }).collect();
    let head = write_header(&kv, &infos);
    let plan = outs
        .iter()
        .map(|o| {
            let padded = padded_bytes(o.bytes) as usize;
            Planned { name: o.name.clone(), dtype: Dtype::U8, shape: vec![padded], bytes: padded }
        })
        .collect();
    let w = Writer::with_header(output, &head, plan)?;
    let steps: Vec<Step> = outs.iter().map(|o| if o.ty == o.from { Step::Copy } else { Step::Convert }).collect();
    let pad = |mut bytes: Vec<u8>, w: &mut Writer| {
        bytes.resize(padded_bytes(bytes.len() as u64) as usize, 0);
        Ok::<(), CliError>(w.write(&bytes)?)
    };
    let convert = |i: usize, t: &Tensor<'_>, w: &mut Writer| {
        let o = &outs[i];
        let x = t
            .floats()
            .ok_or_else(|| fail(format!("cannot read {} values as floats", o.from.name)))?
            .map_err(fail)?
            .into_f32();
        let bytes = match o.ty.kind {
            Kind::Blocks(format) => {
                quantize_rows(format, &x, o.dims[0] as usize).map_err(|e| fail(format!("{}: {e}", o.name)))?
            }
            // F16, a mix's fallback: rounded to nearest even, as ggml_fp32_to_fp16_row.
            Kind::Plain(_) => {
                x.iter().flat_map(|&v| quant_traits::half::f16::from_f32(v).to_bits().to_le_bytes()).collect()
            }
        };
        pad(bytes, w)
    };
    let copy = |t: &Tensor<'_>, w: &mut Writer| pad(t.bytes.to_vec(), w);
    for note in &fallbacks {
        progress.note(note);
    }
    let mut tallies = Tallies::default();
    for o in &outs {
        tallies.add(o.ty.name, o.bytes, o.dims.iter().product());
    }
    let mut written = write_all(&source, &steps, w, output, (progress, "quantizing"), convert, copy)?;
    written.types = tallies.into_vec();
    Ok(written)
}

/// Rows of `row_len` values quantized to `format`, the rows spread over rayon's threads (each
/// row's bytes are the same whoever computes them).
pub fn quantize_rows(format: BlockFormat, x: &[f32], row_len: usize) -> Result<Vec<u8>, quant_core::QuantError> {
    use rayon::prelude::*;
    let row_bytes = format.bytes_for(row_len)?;
    let rows = x.len() / row_len;
    let mut out = vec![0u8; rows * row_bytes];
    // Chunks of rows big enough to amortize a task (about 64 Ki values).
    let per = (65536 / row_len).max(1);
    x.par_chunks(per * row_len)
        .zip(out.par_chunks_mut(per * row_bytes))
        .try_for_each(|(xs, o)| format.quantize_into(xs, o))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quant_testkit::gguf::{sample, string, Builder};
    use quant_traits::half::f16;

    /// An `F32`/`F16` GGUF in, a `Q4_K` GGUF out: every key/value kept in order (but
    /// `general.file_type`), `general.quantization_version = 2` added, the 2-D tensors quantized
    /// byte for byte as the library does, the 1-D one copied.
    #[test]
    fn a_float_gguf_quantizes_keeping_its_metadata() {
        let dir = std::env::temp_dir().join(format!("quant-gguf-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (input, output) = (dir.join("in.gguf"), dir.join("out.gguf"));
        let mut b = sample();
        b.kv.push(("general.file_type".into(), 4, 1u32.to_le_bytes().to_vec()));
        let x: Vec<f32> = (0..2 * 256).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01).collect();
        b.tensors = vec![
            ("a".into(), vec![256, 2], 0, x.iter().flat_map(|v| v.to_le_bytes()).collect()),
            (
                "h".into(),
                vec![256, 1],
                1,
                x[..256].iter().flat_map(|&v| f16::from_f32(v).to_bits().to_le_bytes()).collect(),
            ),
            ("n".into(), vec![256], 0, x[..256].iter().flat_map(|v| v.to_le_bytes()).collect()),
        ];
        std::fs::write(&input, b.bytes()).expect("write");
        quantize(&input, &output, Target::Format(BlockFormat::Q4_K), &Progress::new(true)).expect("quantizes");
        let bytes = std::fs::read(&output).expect("written");
        let g = Gguf::parse(&bytes).expect("valid GGUF");
        let keys: Vec<&str> = g.kv.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["general.architecture", "llama.block_count", "tokenizer.ggml.tokens", "general.quantization_version"]
        );
        assert_eq!(g.kv[3].1, Value::Int(2, 4));
        assert_eq!(g.kv[2].1.to_string(), "[2 x string] \"a\", \"b\"");
        let names: Vec<(&str, &str)> = g.tensors.iter().map(|t| (t.name.as_str(), t.ty.name)).collect();
        assert_eq!(names, [("a", "Q4_K"), ("h", "Q4_K"), ("n", "F32")]);
        assert_eq!(g.data(&bytes, &g.tensors[0]), BlockFormat::Q4_K.quantize(&x).expect("blocks").as_slice());
        let h: Vec<f32> = x[..256].iter().map(|&v| f16::from_f32(v).to_f32()).collect();
        assert_eq!(g.data(&bytes, &g.tensors[1]), BlockFormat::Q4_K.quantize(&h).expect("blocks").as_slice());
        assert_eq!(g.data(&bytes, &g.tensors[2]), &b.tensors[2].3[..]);
        // Quantized input is refused: no requantizing, and nothing written.
        let again = dir.join("again.gguf");
        let e =
            quantize(&output, &again, Target::Format(BlockFormat::Q6_K), &Progress::new(true)).expect_err("refused");
        assert!(e.to_string().contains("does not requantize"), "{e}");
        assert!(!again.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `--type q4_k_m` on a small llama-named F32 GGUF: each tensor in the format llama.cpp's
    /// rules give it, its bytes ggml's for that format, `general.file_type` 15, norms copied;
    /// without llama.cpp's metadata, or from safetensors, a clear error and nothing written.
    #[test]
    fn a_mix_quantizes_each_tensor_in_its_own_format() {
        let dir = std::env::temp_dir().join(format!("quant-gguf-mix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (input, output) = (dir.join("in.gguf"), dir.join("out.gguf"));
        let mut b = Builder::new();
        b.kv.push(("general.architecture".into(), 8, string("llama")));
        b.kv.push(("llama.block_count".into(), 4, 8u32.to_le_bytes().to_vec()));
        let values = |n: usize, seed: usize| -> Vec<f32> {
            (0..n).map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 - 500.0) * 1e-3).collect()
        };
        let mut want: Vec<(String, Option<BlockFormat>, Vec<f32>)> = Vec::new();
        for l in 0..8 {
            // use_more_bits(l, 8): layers 0, 3 (= 1 + 2), 6 and 7.
            let v6 = if [0, 3, 6, 7].contains(&l) { BlockFormat::Q6_K } else { BlockFormat::Q4_K };
            for (name, f) in [("attn_v", v6), ("ffn_down", v6), ("attn_q", BlockFormat::Q4_K)] {
                want.push((format!("blk.{l}.{name}.weight"), Some(f), values(2 * 256, want.len())));
            }
            want.push((format!("blk.{l}.attn_norm.weight"), None, values(256, want.len())));
        }
        want.push(("output.weight".into(), Some(BlockFormat::Q6_K), values(2 * 256, 99)));
        for (name, _, x) in &want {
            let dims = if x.len() == 256 { vec![256] } else { vec![256, 2] };
            b.tensors.push((name.clone(), dims, 0, x.iter().flat_map(|v| v.to_le_bytes()).collect()));
        }
        std::fs::write(&input, b.bytes()).expect("write");
        let mix = Target::Mix(Mix::Q4KM);
        quantize(&input, &output, mix, &Progress::new(true)).expect("quantizes");
        let bytes = std::fs::read(&output).expect("written");
        let g = Gguf::parse(&bytes).expect("valid GGUF");
        assert!(g.kv.iter().any(|(k, v)| k == "general.file_type" && *v == Value::Int(15, 4)));
        for ((name, format, x), t) in want.iter().zip(&g.tensors) {
            assert_eq!(&t.name, name);
            match format {
                Some(f) => {
                    assert_eq!(t.ty.name, f.name(), "{name}");
                    assert_eq!(g.data(&bytes, t), f.quantize(x).expect("blocks").as_slice(), "{name}");
                }
                None => assert_eq!(t.ty.name, "F32", "{name}"),
            }
        }
        // No block_count: refused, nothing written.
        b.kv.truncate(1);
        std::fs::write(&input, b.bytes()).expect("write");
        let again = dir.join("again.gguf");
        let e = quantize(&input, &again, mix, &Progress::new(true)).expect_err("no block count");
        assert!(e.to_string().contains("no llama.block_count"), "{e}");
        assert!(!again.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
