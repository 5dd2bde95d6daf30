//! What our quantized safetensors files say about themselves: the `quant.*` metadata that
//! `quant quantize` writes (one-level and two-level alike) and `quant dequantize` reads.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use quant_io::safetensors::{dtype_from_name, Entry};
use quant_io::Dtype;

use crate::pipeline::Step;
use crate::CliError;

/// Whether `meta` is a file `quant quantize` wrote.
///
/// # Errors
/// Naming `input` when its metadata lacks `quant.format = quant`.
pub fn written_by_quant(input: &Path, meta: &HashMap<String, String>) -> Result<(), CliError> {
    if meta.get("quant.format").map(String::as_str) != Some("quant") {
        return Err(CliError::file(input, "not a file written by `quant quantize` (no quant.format metadata)".into()));
    }
    Ok(())
}

/// Bytes per element of a floating dtype.
pub fn float_size(d: Dtype) -> usize {
    match d {
        Dtype::F64 => 8,
        Dtype::F32 => 4,
        _ => 2,
    }
}

/// What the metadata says about one quantized tensor.
pub struct Stored {
    /// The original dtype.
    pub dtype: Dtype,
    /// The original shape (2-D).
    pub shape: Vec<usize>,
    /// How the codes are stored: a storage type, or `super` (a two-level format's parts).
    pub storage: &'static str,
}

/// Parses `quant.tensor.NAME`'s JSON.
pub fn parse_stored(path: &Path, name: &str, text: &str) -> Result<Stored, CliError> {
    let bad = |what: &str| CliError::file(path, format!("metadata of tensor {name:?}: {what}"));
    let v: serde_json::Value = serde_json::from_str(text).map_err(|_| bad("not JSON"))?;
    let dtype = v["dtype"]
        .as_str()
        .and_then(dtype_from_name)
        .filter(|d| matches!(d, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64))
        .ok_or_else(|| bad("dtype is not F32, F16, BF16 or F64"))?;
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .map(|a| a.iter().filter_map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok())).collect())
        .filter(|s: &Vec<usize>| s.len() == 2)
        .ok_or_else(|| bad("shape is not 2-D"))?;
    let storage = match v["storage"].as_str() {
        Some("i8") => "i8",
        Some("u8") => "u8",
        Some("i4x2") => "i4x2",
        Some("u4x2") => "u4x2",
        Some("i2x4") => "i2x4",
        Some("u2x4") => "u2x4",
        Some("super") => "super",
        _ => return Err(bad("unknown storage")),
    };
    Ok(Stored { dtype, shape, storage })
}

/// The metadata a dequantized file keeps: everything but our `quant.*` keys.
pub fn kept_metadata(meta: &HashMap<String, String>) -> BTreeMap<String, String> {
    meta.iter().filter(|(k, _)| !k.starts_with("quant.")).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The steps of dequantizing one of our files: each quantized tensor converted, the other parts
/// of its format dropped, everything else copied.
pub fn dequantize_steps(entries: &[Entry], quantized: impl Fn(&str) -> bool, part: impl Fn(&str) -> bool) -> Vec<Step> {
    entries
        .iter()
        .map(|e| {
            if quantized(&e.name) {
                Step::Convert
            } else if part(&e.name) {
                Step::Drop
            } else {
                Step::Copy
            }
        })
        .collect()
}
