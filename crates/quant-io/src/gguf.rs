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
//!
//! Writing: [`write_header`] makes the header of a file whose tensors' bytes follow (through
//! [`crate::writer::Writer::with_header`]).

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use ::safetensors::tensor::Dtype;
use memmap2::Mmap;
use quant_core::BlockFormat;

use crate::kind::Kind;
use crate::{IoError, Malformed};

/// The magic number at the start of every GGUF file.
pub const MAGIC: &[u8; 4] = b"GGUF";

/// Dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;

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

/// The plain ggml types this crate reads (the block types come from
/// [`BlockFormat::ALL`], each with its [`BlockFormat::ggml_type`]).
const PLAIN: &[GgmlType] = &[
    plain(0, "F32", 4, Dtype::F32),
    plain(1, "F16", 2, Dtype::F16),
    plain(24, "I8", 1, Dtype::I8),
    plain(25, "I16", 2, Dtype::I16),
    plain(26, "I32", 4, Dtype::I32),
    plain(27, "I64", 8, Dtype::I64),
    plain(28, "F64", 8, Dtype::F64),
    plain(30, "BF16", 2, Dtype::BF16),
];

impl GgmlType {
    /// The type with ggml id `id`, if this crate knows it: a plain type, or one of the
    /// library's block formats.
    pub fn by_id(id: u32) -> Option<GgmlType> {
        PLAIN
            .iter()
            .copied()
            .find(|t| t.id == id)
            .or_else(|| BlockFormat::ALL.into_iter().find(|f| f.ggml_type() == id).map(Self::of_format))
    }

    /// The plain type holding safetensors dtype `d`, if GGUF has one.
    pub fn by_dtype(d: Dtype) -> Option<GgmlType> {
        PLAIN.iter().copied().find(|t| t.kind == Kind::Plain(d))
    }

    /// The type holding `format`'s blocks (its id, name and sizes are the format's own).
    pub const fn of_format(format: BlockFormat) -> GgmlType {
        GgmlType {
            id: format.ggml_type(),
            name: format.name(),
            block_len: format.block_len() as u64,
            block_bytes: format.block_bytes() as u64,
            kind: Kind::Blocks(format),
        }
    }

    /// Bytes of `elements` values (a whole number of blocks).
    pub fn bytes_for(self, elements: u64) -> u64 {
        elements / self.block_len * self.block_bytes
    }

    /// Whether the type holds plain floats that a block format can be made from (`F32`,
    /// `F16`, `BF16`).
    pub fn is_plain_float(self) -> bool {
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
    pub fn parse(bytes: &[u8]) -> Result<Gguf, Malformed> {
        Self::parse_header(bytes).map_err(Malformed)
    }

    fn parse_header(bytes: &[u8]) -> Result<Gguf, String> {
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
    ///
    /// # Errors
    /// [`IoError::Os`] when the file cannot be opened or mapped; [`IoError::Malformed`] with
    /// [`Gguf::parse`]'s reason.
    pub fn open(path: &Path) -> Result<Self, IoError> {
        let file = File::open(path).map_err(|e| IoError::os(path, "cannot open", e))?;
        // SAFETY: a read-only private map, as for safetensors files (see
        // `SafetensorsFile::open`).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| IoError::os(path, "cannot map into memory", e))?;
        let header = Gguf::parse(&map).map_err(|e| IoError::malformed(path, e.0))?;
        Ok(GgufFile { path: path.to_path_buf(), map, header })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes.
    pub fn file_bytes(&self) -> usize {
        self.map.len()
    }

    /// The bytes of tensor `t`.
    pub fn data(&self, t: &TensorInfo) -> &[u8] {
        self.header.data(&self.map, t)
    }

    /// Tells the kernel that `t`'s pages are done with, so the resident size stays near one
    /// tensor whatever the file's size (as [`crate::safetensors::SafetensorsFile::release`]).
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

/// Alignment of the files [`write_header`] lays out (GGUF's default): the data section and
/// every tensor in it start on a multiple of it.
pub const ALIGN: u64 = 32;

/// One tensor of a GGUF file to be written: its name, GGUF dimensions (innermost first), type,
/// and byte count (before padding).
#[derive(Clone, Debug)]
pub struct TensorOut<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its dimensions, innermost first.
    pub dims: &'a [u64],
    /// Its ggml type.
    pub ty: GgmlType,
}

/// The header of a GGUF version 3 file with the key/values `kv` and the tensors `tensors`, in
/// these orders, padded to [`ALIGN`]: each tensor's data follows in order, each padded to a
/// multiple of [`ALIGN`] (its [`padded_bytes`]).
pub fn write_header(kv: &[(String, Value)], tensors: &[TensorOut<'_>]) -> Vec<u8> {
    let mut head = MAGIC.to_vec();
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    head.extend_from_slice(&(kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        put_string(&mut head, k);
        head.extend_from_slice(&tag(v).to_le_bytes());
        put_value(&mut head, v);
    }
    let mut offset = 0u64;
    for t in tensors {
        put_string(&mut head, t.name);
        head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in t.dims {
            head.extend_from_slice(&d.to_le_bytes());
        }
        head.extend_from_slice(&t.ty.id.to_le_bytes());
        head.extend_from_slice(&offset.to_le_bytes());
        offset += padded_bytes(t.ty.bytes_for(t.dims.iter().product()));
    }
    head.resize((head.len() as u64).div_ceil(ALIGN) as usize * ALIGN as usize, 0);
    head
}

/// `bytes` rounded up to a multiple of [`ALIGN`]: a tensor's room in the data section.
pub fn padded_bytes(bytes: u64) -> u64 {
    bytes.div_ceil(ALIGN) * ALIGN
}

#[cfg(test)]
mod tests {
    use super::*;
    use quant_testkit::gguf::{sample, string, Q4_0_OF_64_HALVES};

    /// The hand-made sample's `Q4_0` bytes are the library's.
    #[test]
    fn the_sample_block_bytes_are_the_librarys() {
        assert_eq!(BlockFormat::Q4_0.quantize(&[0.5f32; 64]).expect("whole blocks"), Q4_0_OF_64_HALVES);
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
            let e = Gguf::parse(bytes).expect_err(want).0;
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
        assert!(Gguf::parse(&v).expect_err("overlap").0.contains("overlap"));
        let mut v = good.clone();
        v[at..at + 8].copy_from_slice(&33u64.to_le_bytes());
        assert!(Gguf::parse(&v).expect_err("misaligned").0.contains("not a multiple of 32"));
        let mut v = good.clone();
        v[at..at + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
        assert!(Gguf::parse(&v).expect_err("past the end").0.contains("runs past the end"));
    }

    /// Every block format has one ggml id, found again by it, and no plain type shares it.
    #[test]
    fn block_formats_and_plain_types_have_distinct_ids() {
        for f in BlockFormat::ALL {
            assert_eq!(GgmlType::by_id(f.ggml_type()), Some(GgmlType::of_format(f)), "{}", f.name());
            assert!(PLAIN.iter().all(|t| t.id != f.ggml_type()), "{}", f.name());
        }
        let mut ids: Vec<u32> =
            BlockFormat::ALL.iter().map(|f| f.ggml_type()).chain(PLAIN.iter().map(|t| t.id)).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), BlockFormat::ALL.len() + PLAIN.len());
    }

    /// What `write_header` lays out, `parse` reads back: the key/values, each tensor's shape,
    /// type and aligned offset, and the data section right after the header.
    #[test]
    fn written_headers_read_back() {
        let kv = vec![("general.name".to_string(), Value::Str("m".into())), ("n".to_string(), Value::Int(7, 4))];
        let q4 = GgmlType::of_format(BlockFormat::Q4_0);
        let f32t = GgmlType::by_dtype(Dtype::F32).expect("a GGUF type");
        let tensors = [TensorOut { name: "a", dims: &[64, 3], ty: q4 }, TensorOut { name: "b", dims: &[5], ty: f32t }];
        let mut file = write_header(&kv, &tensors);
        assert_eq!(file.len() as u64 % ALIGN, 0);
        let sizes = [3 * 36u64, 20];
        for s in sizes {
            file.resize(file.len() + padded_bytes(s) as usize, 0);
        }
        let g = Gguf::parse(&file).expect("valid");
        assert_eq!(g.kv, kv);
        assert_eq!(g.data_start, write_header(&kv, &tensors).len() as u64);
        let got: Vec<(&str, Vec<usize>, &str, u64, u64)> =
            g.tensors.iter().map(|t| (t.name.as_str(), t.shape(), t.ty.name, t.offset, t.bytes)).collect();
        assert_eq!(got, [("a", vec![3, 64], "Q4_0", 0, 108), ("b", vec![5], "F32", 128, 20)]);
    }
}
