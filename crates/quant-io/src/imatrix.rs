//! Importance weights per input column, from llama.cpp's `imatrix` files: the legacy binary
//! `.dat` and the GGUF form.
//!
//! * Legacy: `i32` entry count; per entry an `i32` name length, the name, `i32` `ncall`, `i32`
//!   `nval`, then `nval` `f32` sums; the importance of column `j` is `sum_j / ncall` (`ncall = 0`
//!   keeps the sums). Anything after the entries (llama.cpp appends the chunk count and the
//!   dataset name) is ignored.
//! * GGUF (`llama-imatrix --output-format gguf`): for each weight `NAME`, tensors
//!   `NAME.in_sum2` (F32, the sums of squared activations, one row per expert) and `NAME.counts`
//!   (F32, one count per expert); the importance is `in_sum2 / count` (a count of 0 counts as 1).
//!   For expert tensors the first expert's row is used.
//!
//! The names are GGUF tensor names (`blk.0.attn_q.weight`), or the safetensors names of the
//! model a file was computed on (what `quant imatrix` writes).
//!
//! [`write_gguf`] writes the GGUF form as `llama-imatrix` does: `general.type = "imatrix"`,
//! `imatrix.datasets` (strings), `imatrix.chunk_count` and `imatrix.chunk_size` (`u32`), and per
//! entry the raw sums (`NAME.in_sum2`, `F32`, dimensions `[columns, 1]`) and the raw row count
//! (`NAME.counts`, `F32`, `[1, 1]`).

use std::collections::HashMap;
use std::path::Path;

use ::safetensors::tensor::Dtype;

use crate::gguf::{is_gguf, padded_bytes, write_header, GgmlType, GgufFile, TensorOut, Value};
use crate::kind::Kind;
use crate::writer::{Planned, Writer};
use crate::{IoError, Malformed};

/// One importance vector per tensor name.
pub struct Importance {
    /// Per tensor, one weight per input column.
    pub by_name: HashMap<String, Vec<f32>>,
}

impl Importance {
    /// Reads an imatrix file (GGUF or legacy `.dat`, told apart by GGUF's magic).
    ///
    /// # Errors
    /// [`IoError::Os`] when it cannot be read; [`IoError::Malformed`] for a file that is not an
    /// imatrix, holds no entries, or an importance that is not finite and `>= 0`.
    pub fn load(path: &Path) -> Result<Importance, IoError> {
        let by_name = if is_gguf(path) { load_gguf(path)? } else { load_dat(path)? };
        if by_name.is_empty() {
            return Err(IoError::malformed(path, "the importance file holds no entries"));
        }
        for (name, v) in &by_name {
            if let Some(j) = v.iter().position(|x| !(x.is_finite() && *x >= 0.0)) {
                return Err(IoError::malformed(
                    path,
                    format!("importance of {name:?} column {j} is {}: it must be finite and >= 0", v[j]),
                ));
            }
        }
        Ok(Importance { by_name })
    }

    /// The weights of `name` for a `cols`-wide tensor, or `None` when the file has no entry.
    ///
    /// # Errors
    /// [`IoError::Malformed`] (naming `path`, the imatrix file) when the entry's length is not
    /// `cols`.
    pub fn of(&self, path: &Path, name: &str, cols: usize) -> Result<Option<&[f32]>, IoError> {
        match self.by_name.get(name) {
            None => Ok(None),
            Some(v) if v.len() == cols => Ok(Some(v)),
            Some(v) => Err(IoError::malformed(
                path,
                format!("importance of {name:?} has {} values but the tensor has {cols} columns", v.len()),
            )),
        }
    }
}

/// A little-endian reader that names what it ran out of.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!("truncated at byte {}: {what} needs {n} bytes", self.at));
        };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn i32(&mut self, what: &str) -> Result<i32, String> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn count(&mut self, what: &str) -> Result<usize, String> {
        let v = self.i32(what)?;
        usize::try_from(v).map_err(|_| format!("{what} is {v}"))
    }
}

fn load_dat(path: &Path) -> Result<HashMap<String, Vec<f32>>, IoError> {
    let bytes = std::fs::read(path).map_err(|e| IoError::os(path, "cannot read", e))?;
    parse_dat(&bytes).map_err(|e| IoError::malformed(path, format!("not a llama.cpp imatrix file: {e}")))
}

/// Parses the legacy format (see the module docs).
///
/// # Errors
/// [`Malformed`] naming the first problem: a truncation, a negative count, a name that is not
/// UTF-8.
pub fn parse_dat(bytes: &[u8]) -> Result<HashMap<String, Vec<f32>>, Malformed> {
    parse_entries(bytes).map_err(Malformed)
}

fn parse_entries(bytes: &[u8]) -> Result<HashMap<String, Vec<f32>>, String> {
    let mut r = Reader { bytes, at: 0 };
    let n = r.count("the entry count")?;
    let mut out = HashMap::new();
    for e in 0..n {
        let len = r.count("a name length")?;
        let name =
            String::from_utf8(r.take(len, "a name")?.to_vec()).map_err(|_| format!("entry {e}: name is not UTF-8"))?;
        let ncall = r.i32("a call count")?;
        let nval = r.count("a value count")?;
        let raw = r.take(nval.checked_mul(4).ok_or("value count overflows")?, "the values")?;
        let div = if ncall > 0 { ncall as f32 } else { 1.0 };
        let v: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) / div).collect();
        out.insert(name, v);
    }
    Ok(out)
}

fn load_gguf(path: &Path) -> Result<HashMap<String, Vec<f32>>, IoError> {
    let f = GgufFile::open(path)?;
    let mut sums: HashMap<&str, (&[u8], Vec<usize>)> = HashMap::new();
    let mut counts: HashMap<&str, &[u8]> = HashMap::new();
    for t in &f.header.tensors {
        if t.ty.kind != Kind::Plain(Dtype::F32) {
            continue;
        }
        if let Some(base) = t.name.strip_suffix(".in_sum2") {
            sums.insert(base, (f.data(t), t.shape()));
        } else if let Some(base) = t.name.strip_suffix(".counts") {
            counts.insert(base, f.data(t));
        }
    }
    let floats =
        |b: &[u8]| -> Vec<f32> { b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect() };
    let mut out = HashMap::new();
    for (base, (data, shape)) in sums {
        let Some(c) = counts.get(base) else {
            return Err(IoError::malformed(path, format!("{base}.in_sum2 has no {base}.counts")));
        };
        let cols = shape.last().copied().unwrap_or(0);
        let s = floats(data);
        let count = floats(c).first().copied().unwrap_or(1.0);
        let count = if count > 0.0 { count } else { 1.0 };
        out.insert(base.to_string(), s.iter().take(cols).map(|v| v / count).collect());
    }
    Ok(out)
}

/// One entry of an importance matrix: the sum of squared activations per input column and the
/// number of rows summed.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry<'a> {
    /// The weight's name.
    pub name: &'a str,
    /// `Σ x²` per input column.
    pub sums: &'a [f32],
    /// Rows summed.
    pub count: u64,
}

/// Writes `entries` as a GGUF imatrix file (see the module docs), atomically: a temporary file
/// renamed over `path` once complete. `chunk_count` and `chunk_size` describe how the rows
/// were gathered (for llama.cpp: chunks of `chunk_size` tokens).
///
/// # Errors
/// [`IoError::Unsupported`] for no entries, or a chunk figure beyond `u32`; [`IoError::Os`] when
/// the file cannot be written.
pub fn write_gguf(
    path: &Path,
    entries: &[Entry<'_>],
    datasets: &[String],
    chunk_count: u64,
    chunk_size: u64,
) -> Result<(), IoError> {
    let unsupported = |reason: String| IoError::Unsupported { path: path.to_path_buf(), reason };
    if entries.is_empty() {
        return Err(unsupported("an importance matrix needs at least one entry".into()));
    }
    let u32_of = |v: u64, what: &str| u32::try_from(v).map_err(|_| unsupported(format!("{what} {v} exceeds u32")));
    let kv = vec![
        ("general.type".to_string(), Value::Str("imatrix".into())),
        ("imatrix.datasets".to_string(), Value::Array(8, datasets.iter().map(|d| Value::Str(d.clone())).collect())),
        ("imatrix.chunk_count".to_string(), Value::Int(i128::from(u32_of(chunk_count, "chunk count")?), 4)),
        ("imatrix.chunk_size".to_string(), Value::Int(i128::from(u32_of(chunk_size, "chunk size")?), 4)),
    ];
    let f32_type = GgmlType::by_dtype(Dtype::F32).ok_or_else(|| unsupported("no F32 type".into()))?;
    let names: Vec<(String, String, [u64; 2])> = entries
        .iter()
        .map(|e| (format!("{}.in_sum2", e.name), format!("{}.counts", e.name), [e.sums.len() as u64, 1]))
        .collect();
    let one = [1u64, 1];
    let mut infos = Vec::with_capacity(2 * entries.len());
    for (sums, counts, dims) in &names {
        infos.push(TensorOut { name: sums, dims: dims.as_slice(), ty: f32_type });
        infos.push(TensorOut { name: counts, dims: one.as_slice(), ty: f32_type });
    }
    let head = write_header(&kv, &infos);
    let plan = infos
        .iter()
        .map(|t| {
            let padded = padded_bytes(t.ty.bytes_for(t.dims.iter().product())) as usize;
            Planned { name: t.name.to_string(), dtype: Dtype::U8, shape: vec![padded], bytes: padded }
        })
        .collect();
    let mut w = Writer::with_header(path, &head, plan)?;
    let put = |values: &[f32], w: &mut Writer| {
        let mut bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.resize(padded_bytes(bytes.len() as u64) as usize, 0);
        w.write(&bytes)
    };
    for e in entries {
        put(e.sums, &mut w)?;
        // The count as llama.cpp stores it: an `f32`.
        #[allow(clippy::cast_precision_loss, clippy::as_conversions)]
        put(&[e.count as f32], &mut w)?;
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dat(entries: &[(&str, i32, &[f32])]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(entries.len() as i32).to_le_bytes());
        for (name, ncall, vals) in entries {
            b.extend_from_slice(&(name.len() as i32).to_le_bytes());
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&ncall.to_le_bytes());
            b.extend_from_slice(&(vals.len() as i32).to_le_bytes());
            for v in *vals {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        // llama.cpp's trailer: chunk count and dataset name.
        b.extend_from_slice(&10i32.to_le_bytes());
        b.extend_from_slice(&4i32.to_le_bytes());
        b.extend_from_slice(b"wiki");
        b
    }

    #[test]
    fn legacy_files_give_sums_over_calls() {
        let b = dat(&[("blk.0.attn_q.weight", 4, &[8.0, 2.0, 0.0]), ("blk.0.ffn_up.weight", 0, &[1.5])]);
        let m = parse_dat(&b).expect("parse");
        assert_eq!(m["blk.0.attn_q.weight"], [2.0, 0.5, 0.0]);
        assert_eq!(m["blk.0.ffn_up.weight"], [1.5]);
    }

    #[test]
    fn truncated_legacy_files_are_named_errors() {
        let b = dat(&[("blk.0.attn_q.weight", 4, &[8.0, 2.0, 0.0])]);
        let e = parse_dat(&b[..40]).expect_err("truncated").0;
        assert!(e.contains("truncated") && e.contains("the values"), "{e}");
        let mut neg = b.clone();
        neg[0..4].copy_from_slice(&(-1i32).to_le_bytes());
        assert_eq!(parse_dat(&neg).expect_err("negative").0, "the entry count is -1");
    }

    #[test]
    fn gguf_files_give_sums_over_counts() {
        let path = std::env::temp_dir().join(format!("quant-imatrix-{}.gguf", std::process::id()));
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let b = quant_testkit::gguf::Builder {
            version: 3,
            kv: vec![],
            tensors: vec![
                ("blk.0.attn_q.weight.in_sum2".into(), vec![4], 0, f32s(&[4.0, 8.0, 0.0, 2.0])),
                ("blk.0.attn_q.weight.counts".into(), vec![1], 0, f32s(&[4.0])),
            ],
            alignment: 32,
        };
        std::fs::write(&path, b.bytes()).expect("write");
        let imp = Importance::load(&path);
        let _ = std::fs::remove_file(&path);
        let imp = imp.expect("load");
        assert_eq!(imp.by_name["blk.0.attn_q.weight"], [1.0, 2.0, 0.0, 0.5]);
        assert_eq!(imp.of(&path, "blk.0.attn_q.weight", 4).expect("of"), Some(&[1.0f32, 2.0, 0.0, 0.5][..]));
        assert!(imp.of(&path, "blk.0.attn_q.weight", 5).is_err());
        assert_eq!(imp.of(&path, "other", 4).expect("of"), None);
    }

    #[test]
    fn written_gguf_files_read_back_as_sums_over_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("imatrix.gguf");
        let (q, o) = ([4.0f32, 8.0, 0.0, 2.0], [3.0f32, 6.0]);
        let entries = [
            Entry { name: "encoder.layer.0.attention.self.query.weight", sums: &q, count: 4 },
            Entry { name: "encoder.layer.0.output.dense.weight", sums: &o, count: 3 },
        ];
        write_gguf(&path, &entries, &["sentences.txt".into()], 2, 7).expect("write");
        let f = GgufFile::open(&path).expect("open");
        let kv: HashMap<&str, &Value> = f.header.kv.iter().map(|(k, v)| (k.as_str(), v)).collect();
        assert_eq!(kv["general.type"], &Value::Str("imatrix".into()));
        assert_eq!(kv["imatrix.chunk_count"], &Value::Int(2, 4));
        assert_eq!(kv["imatrix.chunk_size"], &Value::Int(7, 4));
        assert_eq!(kv["imatrix.datasets"], &Value::Array(8, vec![Value::Str("sentences.txt".into())]));
        let shapes: Vec<(String, Vec<usize>)> = f.header.tensors.iter().map(|t| (t.name.clone(), t.shape())).collect();
        assert_eq!(shapes[0], ("encoder.layer.0.attention.self.query.weight.in_sum2".into(), vec![1, 4]));
        assert_eq!(shapes[1], ("encoder.layer.0.attention.self.query.weight.counts".into(), vec![1, 1]));
        let imp = Importance::load(&path).expect("load");
        assert_eq!(imp.by_name["encoder.layer.0.attention.self.query.weight"], [1.0, 2.0, 0.0, 0.5]);
        assert_eq!(imp.by_name["encoder.layer.0.output.dense.weight"], [1.0, 2.0]);
        // Nothing to write is refused, and leaves no file.
        let none = dir.path().join("none.gguf");
        assert!(matches!(write_gguf(&none, &[], &[], 0, 0), Err(IoError::Unsupported { .. })));
        assert!(!none.exists());
    }
}
