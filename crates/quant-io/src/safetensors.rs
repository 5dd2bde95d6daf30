//! Reading safetensors files: a memory map, a validated header, tensors in file order, and
//! floating tensors converted to our float types one at a time. (Writing them:
//! [`crate::writer`].)

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use ::safetensors::tensor::{Dtype, Metadata, SafeTensorError};
use ::safetensors::SafeTensors;
use memmap2::Mmap;
use quant_traits::half::{bf16, f16};
use quant_traits::QuantFloat;

use crate::le::read_le;
use crate::IoError;

/// An open safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    map: Mmap,
    header_len: usize,
    metadata: Metadata,
}

/// One tensor of the file: where its bytes are, and what they hold.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Name in the header.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Byte range in the file.
    pub start: usize,
    /// End of the byte range.
    pub end: usize,
}

impl Entry {
    /// Number of elements.
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of data.
    pub fn bytes(&self) -> usize {
        self.end - self.start
    }

    /// Whether the tensor holds floating-point values we quantize.
    pub fn is_float(&self) -> bool {
        matches!(self.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64)
    }
}

/// A floating tensor's values in its own type.
pub enum Floats {
    /// `F32` data.
    F32(Vec<f32>),
    /// `F16` data.
    F16(Vec<f16>),
    /// `BF16` data.
    BF16(Vec<bf16>),
    /// `F64` data.
    F64(Vec<f64>),
}

impl Floats {
    /// The values as `f32` (exact from `F16`, `BF16`; `F64` rounded to nearest): `F32` values
    /// as they are, without a copy (peak memory stays one tensor), the others converted.
    pub fn into_f32(self) -> Vec<f32> {
        match self {
            Floats::F32(v) => v,
            other => other.f32s().into_owned(),
        }
    }

    /// The values as `f32` slice, borrowed for `F32` and converted (as [`Floats::into_f32`])
    /// for the others.
    pub fn f32s(&self) -> std::borrow::Cow<'_, [f32]> {
        match self {
            Floats::F32(v) => std::borrow::Cow::Borrowed(v),
            other => {
                crate::with_floats!(other, v => v.iter().map(|x| f32::from_f64_nearest(x.to_f64_exact())).collect())
            }
        }
    }

    /// The values as `f64`, exactly.
    pub fn to_f64(&self) -> Vec<f64> {
        crate::with_floats!(self, v => v.iter().map(|x| x.to_f64_exact()).collect())
    }
}

/// Runs `$body` with `$v` bound to the vector inside a [`Floats`], whatever its type.
#[macro_export]
macro_rules! with_floats {
    ($floats:expr, $v:ident => $body:expr) => {
        match $floats {
            $crate::safetensors::Floats::F32($v) => $body,
            $crate::safetensors::Floats::F16($v) => $body,
            $crate::safetensors::Floats::BF16($v) => $body,
            $crate::safetensors::Floats::F64($v) => $body,
        }
    };
}

/// What went wrong in a header, in words a user can act on.
fn describe(e: &SafeTensorError) -> String {
    match e {
        SafeTensorError::HeaderTooSmall => "file too small to be safetensors (no 8-byte header length)".into(),
        SafeTensorError::HeaderTooLarge => {
            "header length is implausibly large: not a safetensors file, or corrupted".into()
        }
        SafeTensorError::InvalidHeaderLength => {
            "header length points past the end of the file: truncated or corrupted".into()
        }
        SafeTensorError::InvalidHeader(_) => "header is not UTF-8: corrupted".into(),
        SafeTensorError::InvalidHeaderDeserialization(err) => format!("header is not valid safetensors JSON: {err}"),
        SafeTensorError::InvalidOffset(name) => {
            format!("header lies about offsets: tensor {name:?} does not start where the previous one ends")
        }
        SafeTensorError::TensorInvalidInfo => {
            "header lies about a tensor: its byte range does not match its dtype and shape".into()
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            "file size does not match the header's tensor offsets: truncated, or extra bytes".into()
        }
        SafeTensorError::ValidationOverflow => "header shapes overflow when multiplied out".into(),
        SafeTensorError::MisalignedSlice => "a tensor's size is not a whole number of bytes".into(),
        other => other.to_string(),
    }
}

impl SafetensorsFile {
    /// Opens and validates `path`.
    ///
    /// # Errors
    /// [`IoError::Os`] when the file cannot be opened or mapped; [`IoError::Malformed`] naming
    /// what is wrong with its header.
    pub fn open(path: &Path) -> Result<Self, IoError> {
        let file = File::open(path).map_err(|e| IoError::os(path, "cannot open", e))?;
        // SAFETY: the map is read-only and private to this process. Another process truncating
        // or rewriting the file while we read it could change the bytes under us; that is the
        // usual contract of memory-mapped model loaders (safetensors' own examples do this).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| IoError::os(path, "cannot map into memory", e))?;
        let (header_len, metadata) =
            SafeTensors::read_metadata(&map).map_err(|e| IoError::malformed(path, describe(&e)))?;
        Ok(SafetensorsFile { path: path.to_path_buf(), map, header_len, metadata })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes.
    pub fn file_bytes(&self) -> usize {
        self.map.len()
    }

    /// The `__metadata__` strings of the header.
    pub fn metadata(&self) -> HashMap<String, String> {
        self.metadata.metadata().clone().unwrap_or_default()
    }

    /// Every tensor, in file order.
    pub fn entries(&self) -> Vec<Entry> {
        let base = 8 + self.header_len;
        self.metadata
            .offset_keys()
            .into_iter()
            .filter_map(|name| {
                let info = self.metadata.info(&name)?;
                let (s, e) = info.data_offsets;
                Some(Entry { name, dtype: info.dtype, shape: info.shape.clone(), start: base + s, end: base + e })
            })
            .collect()
    }

    /// The raw bytes of `entry`.
    pub fn bytes(&self, entry: &Entry) -> &[u8] {
        &self.map[entry.start..entry.end]
    }

    /// The values of a floating tensor, converted from little-endian bytes.
    ///
    /// # Errors
    /// [`IoError::Unsupported`] for a tensor that is not `F32`, `F16`, `BF16` or `F64`.
    pub fn floats(&self, entry: &Entry) -> Result<Floats, IoError> {
        decode_floats(entry.dtype, self.bytes(entry)).ok_or_else(|| {
            IoError::unsupported(
                &self.path,
                format!(
                    "tensor {:?} has dtype {:?}; only F32, F16, BF16 and F64 are quantized",
                    entry.name, entry.dtype
                ),
            )
        })
    }

    /// Tells the kernel that `entry`'s pages are done with, so the resident size stays near one
    /// tensor whatever the file's size (the pages stay in the page cache).
    pub fn release(&self, entry: &Entry) {
        #[cfg(unix)]
        {
            // SAFETY: the map is read-only and file-backed: dropping its pages only makes later
            // reads fetch them again from the page cache or the file; no data can be lost.
            let _ = unsafe {
                self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, entry.start, entry.bytes())
            };
        }
        #[cfg(not(unix))]
        let _ = entry;
    }
}

/// Little-endian values of a floating `dtype` (`F32`, `F16`, `BF16`, `F64`) in their own type;
/// `None` for any other dtype.
pub fn decode_floats(dtype: Dtype, b: &[u8]) -> Option<Floats> {
    Some(match dtype {
        Dtype::F32 => Floats::F32(read_le(b)),
        Dtype::F64 => Floats::F64(read_le(b)),
        Dtype::F16 => Floats::F16(read_le(b)),
        Dtype::BF16 => Floats::BF16(read_le(b)),
        _ => return None,
    })
}

/// The safetensors name of a dtype (`"F32"`, ...).
pub fn dtype_name(d: Dtype) -> String {
    format!("{d:?}")
}

/// The dtype for a name written by [`dtype_name`].
pub fn dtype_from_name(s: &str) -> Option<Dtype> {
    Some(match s {
        "F32" => Dtype::F32,
        "F16" => Dtype::F16,
        "BF16" => Dtype::BF16,
        "F64" => Dtype::F64,
        "I8" => Dtype::I8,
        "U8" => Dtype::U8,
        "I32" => Dtype::I32,
        _ => return None,
    })
}
