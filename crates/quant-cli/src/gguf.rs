//! Reading GGUF files (llama.cpp's model format, versions 2 and 3): the header, every metadata
//! key/value, and every tensor's name, ggml type, shape and place in the file, each checked
//! against the file before anything is trusted.
//!
//! Layout (little-endian): `"GGUF"`, `u32` version, `u64` tensor count, `u64` key/value count;
//! the key/values (a string key, a `u32` value type, the value); the tensor infos (a string name,
//! `u32` dimension count, that many `u64` dimensions, innermost first, a `u32` ggml type and a
//! `u64` offset into the data section); then padding to `general.alignment` (32 when absent)
//! and the data section. Strings are a `u64` byte length and UTF-8 bytes.
//!
//! A hostile file cannot make this allocate more than the file holds or read past its end:
//! every count and length is checked against the bytes that remain before it is used, shapes
//! against overflow, types against the known ones, and every tensor's bytes against the data
//! section (inside it, aligned, not overlapping another tensor).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use quant_core::BlockFormat;
use safetensors::tensor::Dtype;

use crate::input::{Input, Kind};
use crate::mix::{self, Mix, ModelInfo, TensorRef};
use crate::writer::{Planned, Writer};
use crate::{CliError, Progress};

/// The magic number at the start of every GGUF file.
pub const MAGIC: &[u8; 4] = b"GGUF";

/// Dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
const MAX_DIMS: u32 = 4;

/// Nesting depth of arrays of arrays that a file may use.
const MAX_DEPTH: usize = 4;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Any of the integer types (type id kept for writing back).
    Int(i128, u32),
    /// `f32` or `f64` (type id kept).
    Float(f64, u32),
    /// `bool`.
    Bool(bool),
    /// A UTF-8 string.
    Str(String),
    /// An array of values of one type (its type id, its values).
    Array(u32, Vec<Value>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v, _) => write!(f, "{v}"),
            Value::Float(v, _) => write!(f, "{v:?}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Array(t, items) => {
                write!(f, "[{} x {}]", items.len(), type_name(*t))?;
                if !items.is_empty() {
                    let shown: Vec<String> = items.iter().take(4).map(ToString::to_string).collect();
                    write!(f, " {}{}", shown.join(", "), if items.len() > 4 { ", .." } else { "" })?;
                }
                Ok(())
            }
        }
    }
}

/// The name of a value type id.
fn type_name(t: u32) -> &'static str {
    match t {
        0 => "u8",
        1 => "i8",
        2 => "u16",
        3 => "i16",
        4 => "u32",
        5 => "i32",
        6 => "f32",
        7 => "bool",
        8 => "string",
        9 => "array",
        10 => "u64",
        11 => "i64",
        12 => "f64",
        _ => "unknown",
    }
}

/// The ggml tensor types this tool knows: name, values per block, bytes per block, and what the
/// bytes hold (the safetensors dtype with the same values and bytes, or our block format).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct GgmlType {
    /// ggml's type id.
    pub id: u32,
    /// llama.cpp's name (`"F32"`, `"Q4_K"`, ...).
    pub name: &'static str,
    /// Values per block (1 for the plain types).
    pub block_len: u64,
    /// Bytes per block.
    pub block_bytes: u64,
    /// What the bytes hold.
    pub kind: Kind,
}

const fn plain(id: u32, name: &'static str, bytes: u64, dtype: Dtype) -> GgmlType {
    GgmlType { id, name, block_len: 1, block_bytes: bytes, kind: Kind::Plain(dtype) }
}

const fn blocks(id: u32, f: BlockFormat) -> GgmlType {
    GgmlType {
        id,
        name: f.name(),
        block_len: f.block_len() as u64,
        block_bytes: f.block_bytes() as u64,
        kind: Kind::Blocks(f),
    }
}

/// Every ggml type by id that this tool can size (and so list, dequantize and copy).
const TYPES: &[GgmlType] = &[
    plain(0, "F32", 4, Dtype::F32),
    plain(1, "F16", 2, Dtype::F16),
    blocks(2, BlockFormat::Q4_0),
    blocks(3, BlockFormat::Q4_1),
    blocks(6, BlockFormat::Q5_0),
    blocks(7, BlockFormat::Q5_1),
    blocks(8, BlockFormat::Q8_0),
    blocks(10, BlockFormat::Q2_K),
    blocks(11, BlockFormat::Q3_K),
    blocks(12, BlockFormat::Q4_K),
    blocks(13, BlockFormat::Q5_K),
    blocks(14, BlockFormat::Q6_K),
    plain(24, "I8", 1, Dtype::I8),
    plain(25, "I16", 2, Dtype::I16),
    plain(26, "I32", 4, Dtype::I32),
    plain(27, "I64", 8, Dtype::I64),
    plain(28, "F64", 8, Dtype::F64),
    plain(30, "BF16", 2, Dtype::BF16),
    blocks(39, BlockFormat::MXFP4),
];

impl GgmlType {
    /// The type with ggml id `id`, if this tool knows it.
    pub fn by_id(id: u32) -> Option<GgmlType> {
        TYPES.iter().copied().find(|t| t.id == id)
    }

    /// The plain type holding safetensors dtype `d`, if GGUF has one.
    fn by_dtype(d: Dtype) -> Option<GgmlType> {
        TYPES.iter().copied().find(|t| t.kind == Kind::Plain(d))
    }

    /// The type holding `format`'s blocks.
    fn by_format(f: BlockFormat) -> Option<GgmlType> {
        TYPES.iter().copied().find(|t| t.kind == Kind::Blocks(f))
    }

    /// Bytes of `elements` values (a whole number of blocks).
    fn bytes_for(self, elements: u64) -> u64 {
        elements / self.block_len * self.block_bytes
    }

    /// Whether `quant quantize` turns tensors of this type into a block format.
    fn quantizable(self) -> bool {
        matches!(self.kind, Kind::Plain(Dtype::F32 | Dtype::F16 | Dtype::BF16))
    }
}

/// One tensor of a GGUF file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Its name.
    pub name: String,
    /// Its dimensions as GGUF stores them, innermost (the row length) first.
    pub dims: Vec<u64>,
    /// Its ggml type.
    pub ty: GgmlType,
    /// Offset of its bytes from the start of the data section.
    pub offset: u64,
    /// Its byte count.
    pub bytes: u64,
}

impl TensorInfo {
    /// Its shape in row-major order, outermost first (as safetensors and NumPy write it).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Its number of values.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed GGUF file (the header; the data stays in the caller's bytes).
#[derive(Clone, Debug, PartialEq)]
pub struct Gguf {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata, in file order.
    pub kv: Vec<(String, Value)>,
    /// Tensors, in file order.
    pub tensors: Vec<TensorInfo>,
    /// Alignment of the data section and of every tensor in it.
    pub alignment: u64,
    /// Offset of the data section in the file.
    pub data_start: u64,
}

/// A cursor over the file's bytes that refuses to read past the end, naming what it wanted.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], String> {
        let n = usize::try_from(n).ok().filter(|&n| n <= self.remaining()).ok_or_else(|| {
            format!("truncated: {what} needs {n} bytes at offset {}, the file has {} left", self.at, self.remaining())
        })?;
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let len = self.u64(what)?;
        let at = self.at;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} at offset {at} is not UTF-8"))
    }

    /// A value of type `t` (for `key`), arrays nested at most [`MAX_DEPTH`] deep.
    fn value(&mut self, t: u32, key: &str, depth: usize) -> Result<Value, String> {
        let what = |kind: &str| format!("value of {key:?} ({kind})");
        Ok(match t {
            0 => Value::Int(i128::from(self.array::<1>(&what("u8"))?[0]), t),
            1 => Value::Int(i128::from(i8::from_le_bytes(self.array(&what("i8"))?)), t),
            2 => Value::Int(i128::from(u16::from_le_bytes(self.array(&what("u16"))?)), t),
            3 => Value::Int(i128::from(i16::from_le_bytes(self.array(&what("i16"))?)), t),
            4 => Value::Int(i128::from(self.u32(&what("u32"))?), t),
            5 => Value::Int(i128::from(i32::from_le_bytes(self.array(&what("i32"))?)), t),
            6 => Value::Float(f64::from(f32::from_le_bytes(self.array(&what("f32"))?)), t),
            7 => match self.array::<1>(&what("bool"))?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(format!("{} is {b}, not 0 or 1", what("bool"))),
            },
            8 => Value::Str(self.string(&what("string"))?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(format!("{} nests arrays more than {MAX_DEPTH} deep", what("array")));
                }
                let et = self.u32(&what("array element type"))?;
                let n = self.u64(&what("array length"))?;
                // Every element takes at least one byte (a string at least eight): a count
                // beyond the bytes left is a lie, found before any allocation.
                let min = match et {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    _ => return Err(format!("{} has unknown element type {et}", what("array"))),
                };
                if n.checked_mul(min).is_none_or(|b| b > self.remaining() as u64) {
                    return Err(format!(
                        "{} claims {n} elements of {}, more than the {} bytes left",
                        what("array"),
                        type_name(et),
                        self.remaining()
                    ));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(et, key, depth + 1)?);
                }
                Value::Array(et, items)
            }
            10 => Value::Int(i128::from(self.u64(&what("u64"))?), t),
            11 => Value::Int(i128::from(i64::from_le_bytes(self.array(&what("i64"))?)), t),
            12 => Value::Float(f64::from_le_bytes(self.array(&what("f64"))?), t),
            _ => return Err(format!("value of {key:?} has unknown type {t} (0..=12 are defined)")),
        })
    }
}

impl Gguf {
    /// Parses and checks the header of a GGUF file whose bytes are `bytes`.
    ///
    /// # Errors
    /// A message naming the first problem: not GGUF, an unsupported version, a truncation, a
    /// count or length beyond the file, an unknown value or tensor type, a bad alignment, a
    /// shape that overflows or is not whole blocks, a tensor outside the data section,
    /// misaligned or overlapping another, two tensors or keys with one name.
    pub fn parse(bytes: &[u8]) -> Result<Gguf, String> {
        let mut r = Reader { bytes, at: 0 };
        let magic = r.array::<4>("magic")?;
        if &magic != MAGIC {
            return Err(format!("not a GGUF file: it starts with {magic:02x?}, not \"GGUF\""));
        }
        let version = r.u32("version")?;
        if version != 2 && version != 3 {
            return Err(format!("GGUF version {version} is not supported (2 and 3 are)"));
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("key/value count")?;
        // A key/value takes at least 8 + 4 + 1 bytes, a tensor info 8 + 4 + 8 + 4 + 8.
        if n_kv.checked_mul(13).is_none_or(|b| b > r.remaining() as u64) {
            return Err(format!("the header claims {n_kv} key/values, more than the file can hold"));
        }
        let mut kv: Vec<(String, Value)> = Vec::with_capacity(n_kv as usize);
        for i in 0..n_kv {
            let key = r.string(&format!("key {i}"))?;
            if kv.iter().any(|(k, _)| *k == key) {
                return Err(format!("key {key:?} appears twice"));
            }
            let t = r.u32(&format!("type of {key:?}"))?;
            let v = r.value(t, &key, 0)?;
            kv.push((key, v));
        }
        if n_tensors.checked_mul(32).is_none_or(|b| b > r.remaining() as u64) {
            return Err(format!("the header claims {n_tensors} tensors, more than the file can hold"));
        }
        let alignment = match kv.iter().find(|(k, _)| k == "general.alignment") {
            None => 32,
            Some((_, Value::Int(a, 4))) if *a > 0 && (*a as u64).is_power_of_two() => *a as u64,
            Some((_, v)) => return Err(format!("general.alignment is {v}, not a power of two as a u32")),
        };
        let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = r.string(&format!("name of tensor {i}"))?;
            if tensors.iter().any(|t| t.name == name) {
                return Err(format!("tensor {name:?} appears twice"));
            }
            let n_dims = r.u32(&format!("dimension count of {name:?}"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(format!("tensor {name:?} has {n_dims} dimensions (1..={MAX_DIMS} allowed)"));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for d in 0..n_dims {
                dims.push(r.u64(&format!("dimension {d} of {name:?}"))?);
            }
            let type_id = r.u32(&format!("type of {name:?}"))?;
            let ty = GgmlType::by_id(type_id)
                .ok_or_else(|| format!("tensor {name:?} has ggml type {type_id}, which this tool does not know"))?;
            let offset = r.u64(&format!("offset of {name:?}"))?;
            let elements = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let elements = elements
                .filter(|&e| e <= 1 << 48)
                .ok_or_else(|| format!("tensor {name:?} has shape {dims:?}, too many values"))?;
            if !dims[0].is_multiple_of(ty.block_len) {
                return Err(format!(
                    "tensor {name:?}: rows of {} values are not whole {} blocks of {}",
                    dims[0], ty.name, ty.block_len
                ));
            }
            let bytes = ty.bytes_for(elements);
            if !offset.is_multiple_of(alignment) {
                return Err(format!("tensor {name:?} starts at data offset {offset}, not a multiple of {alignment}"));
            }
            tensors.push(TensorInfo { name, dims, ty, offset, bytes });
        }
        let data_start = (r.at as u64).div_ceil(alignment) * alignment;
        let data_len = (bytes.len() as u64)
            .checked_sub(data_start)
            .ok_or_else(|| format!("truncated: the data section would start at {data_start}, past the end"))?;
        let mut spans: Vec<(u64, u64, &str)> = Vec::with_capacity(tensors.len());
        for t in &tensors {
            let end = t.offset.checked_add(t.bytes).filter(|&e| e <= data_len).ok_or_else(|| {
                format!(
                    "tensor {:?} ({} bytes at data offset {}) runs past the end of the file ({data_len} bytes of data)",
                    t.name, t.bytes, t.offset
                )
            })?;
            spans.push((t.offset, end, &t.name));
        }
        spans.sort_unstable();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(format!("tensors {:?} and {:?} overlap in the data section", w[0].2, w[1].2));
            }
        }
        Ok(Gguf { version, kv, tensors, alignment, data_start })
    }

    /// The bytes of tensor `t` within the file's `bytes` (checked by [`Gguf::parse`]).
    pub fn data<'a>(&self, bytes: &'a [u8], t: &TensorInfo) -> &'a [u8] {
        let start = (self.data_start + t.offset) as usize;
        &bytes[start..start + t.bytes as usize]
    }
}

/// Whether `path` starts with the GGUF magic (a file that cannot be read is not GGUF here; the
/// caller's own open then names the problem).
pub fn is_gguf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == MAGIC
}

/// A GGUF file mapped into memory, its header parsed and checked.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    /// The parsed header.
    pub header: Gguf,
}

impl GgufFile {
    /// Opens, maps and checks `path`.
    pub fn open(path: &Path) -> Result<Self, CliError> {
        let fail = |msg: String| CliError::file(path, msg);
        let file = File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
        // SAFETY: a read-only private map, as for safetensors files (see `model::Model::open`).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| fail(format!("cannot map into memory: {e}")))?;
        let header = Gguf::parse(&map).map_err(fail)?;
        Ok(GgufFile { path: path.to_path_buf(), map, header })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bytes of tensor `t`.
    pub fn data(&self, t: &TensorInfo) -> &[u8] {
        self.header.data(&self.map, t)
    }

    /// Tells the kernel that `t`'s pages are done with, so the resident size stays near one
    /// tensor whatever the file's size (as [`crate::model::Model::release`]).
    pub fn release(&self, t: &TensorInfo) {
        #[cfg(unix)]
        {
            let start = (self.header.data_start + t.offset) as usize;
            // SAFETY: the map is read-only and file-backed: dropping its pages only makes later
            // reads fetch them again from the page cache or the file; no data can be lost. The
            // range is inside the map (checked by the parser).
            let _ =
                unsafe { self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, t.bytes as usize) };
        }
        #[cfg(not(unix))]
        let _ = t;
    }
}

/// `quant inspect` on a GGUF file: the header, every key/value, every tensor.
pub fn inspect(path: &Path) -> Result<String, CliError> {
    let f = GgufFile::open(path)?;
    let h = &f.header;
    let mut out = format!(
        "{}: GGUF version {}, {} tensors, {} key/values, {} bytes (data at {}, alignment {})\n",
        path.display(),
        h.version,
        h.tensors.len(),
        h.kv.len(),
        f.map.len(),
        h.data_start,
        h.alignment
    );
    for (k, v) in &h.kv {
        out.push_str(&format!("metadata {k} = {v}\n"));
    }
    out.push_str(&format!("{:<48} {:<6} {:<20} {:>12} {:>12}\n", "tensor", "type", "shape", "elements", "bytes"));
    for t in &h.tensors {
        let shape: Vec<String> = t.shape().iter().map(ToString::to_string).collect();
        out.push_str(&format!(
            "{:<48} {:<6} {:<20} {:>12} {:>12}\n",
            t.name,
            t.ty.name,
            format!("[{}]", shape.join(", ")),
            t.elements(),
            t.bytes
        ));
    }
    Ok(out)
}

/// `quant dequantize` on a GGUF file: a safetensors file with every tensor, the quantized ones
/// dequantized to `F32` (bit for bit as ggml's `dequantize_row_*`), the others copied in their
/// own type, shapes outermost first; the scalar metadata (not arrays such as the vocabulary) as
/// `gguf.`-prefixed strings.
pub fn dequantize(input: &Path, output: &Path, progress: &Progress) -> Result<(), CliError> {
    let f = GgufFile::open(input)?;
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
    let total: u64 = f.header.tensors.iter().map(|t| t.bytes).sum();
    let mut w = Writer::create(output, plan, meta)?;
    progress.start(total, "dequantize");
    for t in &f.header.tensors {
        progress.message(&t.name);
        let data = f.data(t);
        match t.ty.kind {
            Kind::Blocks(format) => {
                let values = format.dequantize(data).map_err(|e| CliError::file(input, format!("{}: {e}", t.name)))?;
                let mut bytes = Vec::with_capacity(values.len() * 4);
                for v in values {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                w.write(&bytes)?;
            }
            Kind::Plain(_) => w.write(data)?,
        }
        f.release(t);
        progress.advance(t.bytes);
    }
    progress.finish();
    w.finish()
}

/// Appends `v` as GGUF stores a value of its type (without the type tag).
fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Int(i, t) => match t {
            0 => out.push(*i as u8),
            1 => out.push(*i as i8 as u8),
            2 => out.extend_from_slice(&(*i as u16).to_le_bytes()),
            3 => out.extend_from_slice(&(*i as i16).to_le_bytes()),
            4 => out.extend_from_slice(&(*i as u32).to_le_bytes()),
            5 => out.extend_from_slice(&(*i as i32).to_le_bytes()),
            10 => out.extend_from_slice(&(*i as u64).to_le_bytes()),
            _ => out.extend_from_slice(&(*i as i64).to_le_bytes()),
        },
        Value::Float(x, 6) => out.extend_from_slice(&(*x as f32).to_le_bytes()),
        Value::Float(x, _) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(b) => out.push(u8::from(*b)),
        Value::Str(s) => put_string(out, s),
        Value::Array(t, items) => {
            out.extend_from_slice(&t.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The type tag of a value.
fn tag(v: &Value) -> u32 {
    match v {
        Value::Int(_, t) | Value::Float(_, t) => *t,
        Value::Bool(_) => 7,
        Value::Str(_) => 8,
        Value::Array(..) => 9,
    }
}

/// Alignment of the files we write (GGUF's default).
const ALIGN: u64 = 32;

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
pub fn quantize(input: &Path, output: &Path, target: Target, progress: &Progress) -> Result<(), CliError> {
    let fail = |msg: String| CliError::file(input, msg);
    let source = Input::open(input)?;
    let mut kv: Vec<(String, Value)> = Vec::new();
    // Every tensor: name, GGUF dimensions, source type.
    let mut tensors: Vec<(String, Vec<u64>, GgmlType)> = Vec::new();
    match &source {
        Input::Gguf(f) => {
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
        Input::Safetensors(_, entries) => {
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
    let types: Vec<GgmlType> = match target {
        Target::Format(format) => {
            let to = GgmlType::by_format(format)
                .ok_or_else(|| CliError::usage(format!("--type {}: not a GGUF type", format.name())))?;
            tensors
                .iter()
                .map(|(_, dims, from)| {
                    let rows_fit = dims.len() >= 2 && dims[0].is_multiple_of(to.block_len);
                    if from.quantizable() && rows_fit {
                        to
                    } else {
                        *from
                    }
                })
                .collect()
        }
        Target::Mix(mix) => {
            let Input::Gguf(f) = &source else {
                return Err(fail(format!(
                    "--type {}: llama.cpp's per-tensor rules read its tensor names and model metadata; give the GGUF that convert_hf_to_gguf.py writes (F32/F16/BF16), or a single format such as q4_k",
                    mix.name().to_ascii_lowercase()
                )));
            };
            let info =
                model_info(&f.header).map_err(|e| fail(format!("--type {}: {e}", mix.name().to_ascii_lowercase())))?;
            let refs: Vec<TensorRef> =
                tensors.iter().map(|(name, dims, from)| TensorRef { name, dims, float: from.quantizable() }).collect();
            let plan = mix.plan(&info, &refs).map_err(fail)?;
            kv.push(("general.file_type".into(), Value::Int(i128::from(mix.ftype()), 4)));
            plan.iter()
                .zip(&tensors)
                .map(|(p, (_, _, from))| match p {
                    mix::Target::Keep => Ok(*from),
                    mix::Target::F16 => GgmlType::by_dtype(Dtype::F16).ok_or_else(|| fail("no F16 type".into())),
                    mix::Target::Blocks(f) => {
                        GgmlType::by_format(*f).ok_or_else(|| fail(format!("no GGUF type for {}", f.name())))
                    }
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
    // The header: magic, version, counts, key/values, tensor infos, padding.
    let mut head = MAGIC.to_vec();
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&(outs.len() as u64).to_le_bytes());
    head.extend_from_slice(&(kv.len() as u64).to_le_bytes());
    for (k, v) in &kv {
        put_string(&mut head, k);
        head.extend_from_slice(&tag(v).to_le_bytes());
        put_value(&mut head, v);
    }
    let mut offset = 0u64;
    let mut plan = Vec::with_capacity(outs.len());
    for o in &outs {
        put_string(&mut head, &o.name);
        head.extend_from_slice(&(o.dims.len() as u32).to_le_bytes());
        for d in &o.dims {
            head.extend_from_slice(&d.to_le_bytes());
        }
        head.extend_from_slice(&o.ty.id.to_le_bytes());
        head.extend_from_slice(&offset.to_le_bytes());
        let padded = o.bytes.div_ceil(ALIGN) * ALIGN;
        plan.push(Planned {
            name: o.name.clone(),
            dtype: Dtype::U8,
            shape: vec![padded as usize],
            bytes: padded as usize,
        });
        offset += padded;
    }
    head.resize((head.len() as u64).div_ceil(ALIGN) as usize * ALIGN as usize, 0);
    let total: u64 = outs.iter().map(|o| o.bytes).sum();
    let mut w = Writer::with_header(output, &head, plan)?;
    progress.start(total, "quantize");
    for (i, o) in outs.iter().enumerate() {
        progress.message(&o.name);
        let mut bytes = if o.ty == o.from {
            source.tensor(i).bytes.to_vec()
        } else {
            let x = source
                .tensor(i)
                .floats()
                .ok_or_else(|| fail(format!("cannot read {} values as floats", o.from.name)))?
                .map_err(fail)?
                .into_f32();
            match o.ty.kind {
                Kind::Blocks(format) => {
                    quantize_rows(format, &x, o.dims[0] as usize).map_err(|e| fail(format!("{}: {e}", o.name)))?
                }
                // F16, a mix's fallback: rounded to nearest even, as ggml_fp32_to_fp16_row.
                Kind::Plain(_) => {
                    x.iter().flat_map(|&v| quant_traits::half::f16::from_f32(v).to_bits().to_le_bytes()).collect()
                }
            }
        };
        bytes.resize(bytes.len().div_ceil(ALIGN as usize) * ALIGN as usize, 0);
        w.write(&bytes)?;
        source.release(i);
        progress.advance(o.bytes);
    }
    progress.finish();
    w.finish()
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
pub mod tests {
    use super::*;
    use quant_traits::half::f16;

    /// A GGUF file built by hand: key/values and tensors (name, dims, type, data).
    pub struct Builder {
        pub version: u32,
        pub kv: Vec<(String, u32, Vec<u8>)>,
        pub tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
        pub alignment: u64,
    }

    pub fn string(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    impl Builder {
        pub fn new() -> Self {
            Builder { version: 3, kv: Vec::new(), tensors: Vec::new(), alignment: 32 }
        }

        pub fn bytes(&self) -> Vec<u8> {
            let mut out = MAGIC.to_vec();
            out.extend_from_slice(&self.version.to_le_bytes());
            out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
            out.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
            for (k, t, v) in &self.kv {
                out.extend(string(k));
                out.extend_from_slice(&t.to_le_bytes());
                out.extend_from_slice(v);
            }
            let mut offset = 0u64;
            let mut offsets = Vec::new();
            for (name, dims, ty, data) in &self.tensors {
                out.extend(string(name));
                out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
                for d in dims {
                    out.extend_from_slice(&d.to_le_bytes());
                }
                out.extend_from_slice(&ty.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
                offsets.push(offset);
                offset = (offset + data.len() as u64).div_ceil(self.alignment) * self.alignment;
            }
            while !(out.len() as u64).is_multiple_of(self.alignment) {
                out.push(0);
            }
            let start = out.len();
            for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
                out.resize(start + off as usize, 0);
                out.extend_from_slice(data);
            }
            out
        }
    }

    fn sample() -> Builder {
        let mut b = Builder::new();
        b.kv.push(("general.architecture".into(), 8, string("llama")));
        b.kv.push(("llama.block_count".into(), 4, 2u32.to_le_bytes().to_vec()));
        let mut arr = 8u32.to_le_bytes().to_vec();
        arr.extend_from_slice(&2u64.to_le_bytes());
        arr.extend(string("a"));
        arr.extend(string("b"));
        b.kv.push(("tokenizer.ggml.tokens".into(), 9, arr));
        let w: Vec<u8> = (0..64).flat_map(|i| (i as f32 * 0.25).to_le_bytes()).collect();
        b.tensors.push(("w".into(), vec![32, 2], 0, w));
        let q = BlockFormat::Q4_0.quantize(&[0.5f32; 64]).expect("whole blocks");
        b.tensors.push(("q".into(), vec![64], 2, q));
        b
    }

    #[test]
    fn reads_what_the_builder_writes() {
        let bytes = sample().bytes();
        let g = Gguf::parse(&bytes).expect("valid");
        assert_eq!(g.version, 3);
        assert_eq!(g.kv.len(), 3);
        assert_eq!(g.kv[0], ("general.architecture".to_string(), Value::Str("llama".into())));
        assert_eq!(g.kv[2].1.to_string(), "[2 x string] \"a\", \"b\"");
        assert_eq!(g.tensors[0].shape(), vec![2, 32]);
        assert_eq!((g.tensors[1].ty.name, g.tensors[1].bytes, g.tensors[1].offset), ("Q4_0", 36, 256));
        let w = g.data(&bytes, &g.tensors[0]);
        assert_eq!(f32::from_le_bytes([w[4], w[5], w[6], w[7]]), 0.25);
    }

    /// Every kind of lie a file can tell gets one message naming it, never a panic or a huge
    /// allocation.
    #[test]
    fn hostile_files_are_refused_with_a_reason() {
        let good = sample().bytes();
        let expect = |bytes: &[u8], want: &str| {
            let e = Gguf::parse(bytes).expect_err(want);
            assert!(e.contains(want), "{e:?} should mention {want:?}");
        };
        expect(b"GGU", "truncated");
        expect(b"GGML\x03\0\0\0", "not a GGUF file");
        let mut v = good.clone();
        v[4] = 7;
        expect(&v, "version 7");
        // Truncated anywhere in the header: a message, never a panic.
        for cut in [8, 20, 24, 40, 60, 100, 150, 200] {
            assert!(Gguf::parse(&good[..cut]).is_err(), "cut at {cut}");
        }
        // The data cut short: the last tensor runs past the end.
        expect(&good[..good.len() - 1], "runs past the end");
        // Counts that lie.
        let mut v = good.clone();
        v[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        expect(&v, "key/values, more than the file can hold");
        let mut v = good.clone();
        v[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        expect(&v, "tensors, more than the file can hold");
        // An absurd string length.
        let mut v = good.clone();
        v[24..32].copy_from_slice(&(1u64 << 62).to_le_bytes());
        expect(&v, "truncated: key 0 needs");
        // A value type out of range, an unknown array element type, an absurd array length.
        let mut b = sample();
        b.kv[1].1 = 13;
        expect(&b.bytes(), "unknown type 13");
        let mut b = sample();
        b.kv[2].2[..4].copy_from_slice(&99u32.to_le_bytes());
        expect(&b.bytes(), "unknown element type 99");
        let mut b = sample();
        b.kv[2].2[4..12].copy_from_slice(&(1u64 << 60).to_le_bytes());
        expect(&b.bytes(), "claims 1152921504606846976 elements");
        // A bool that is neither 0 nor 1; a non-UTF-8 string.
        let mut b = sample();
        b.kv.push(("flag".into(), 7, vec![2]));
        expect(&b.bytes(), "not 0 or 1");
        let mut b = sample();
        b.kv[0].2 = [&5u64.to_le_bytes()[..], b"ll\xffma"].concat();
        expect(&b.bytes(), "not UTF-8");
        // Unknown tensor type, bad dimension counts, shapes that overflow or are not blocks.
        let mut b = sample();
        b.tensors[0].2 = 99;
        expect(&b.bytes(), "ggml type 99");
        let mut b = sample();
        b.tensors[0].1 = vec![1, 1, 1, 1, 1];
        expect(&b.bytes(), "5 dimensions");
        let mut b = sample();
        b.tensors[0].1 = vec![1 << 40, 1 << 40];
        expect(&b.bytes(), "too many values");
        let mut b = sample();
        b.tensors[1].1 = vec![48];
        expect(&b.bytes(), "not whole Q4_0 blocks");
        // Duplicate names and keys; a bad alignment.
        let mut b = sample();
        b.tensors[1].0 = "w".into();
        expect(&b.bytes(), "appears twice");
        let mut b = sample();
        b.kv[1].0 = "general.architecture".into();
        expect(&b.bytes(), "appears twice");
        let mut b = sample();
        b.kv.push(("general.alignment".into(), 4, 24u32.to_le_bytes().to_vec()));
        expect(&b.bytes(), "not a power of two");
    }

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

    #[test]
    fn offsets_that_lie_are_refused() {
        let good = sample().bytes();
        let g = Gguf::parse(&good).expect("valid");
        assert_eq!(g.tensors[1].offset, 256);
        let find = |bytes: &[u8]| {
            let name = string("q");
            bytes.windows(name.len()).rposition(|w| w == name.as_slice()).expect("tensor q's name") + name.len()
        };
        let at = find(&good) + 4 + 8 + 4; // n_dims, one dim, type
        let mut v = good.clone();
        v[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
        assert!(Gguf::parse(&v).expect_err("overlap").contains("overlap"));
        let mut v = good.clone();
        v[at..at + 8].copy_from_slice(&33u64.to_le_bytes());
        assert!(Gguf::parse(&v).expect_err("misaligned").contains("not a multiple of 32"));
        let mut v = good.clone();
        v[at..at + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
        assert!(Gguf::parse(&v).expect_err("past the end").contains("runs past the end"));
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
