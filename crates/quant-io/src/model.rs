//! A model file read tensor by tensor, safetensors or GGUF (told apart by GGUF's magic number):
//! every tensor's name, shape, what its bytes hold, and the bytes themselves, borrowed from the
//! file's memory map (an engine hands them to `quant_matmul::GroupWeights` without a copy).

use std::path::Path;

use crate::gguf::{is_gguf, GgufFile};
use crate::kind::Kind;
use crate::safetensors::{decode_floats, Entry, Floats, SafetensorsFile};
use crate::IoError;

/// An open safetensors or GGUF file.
pub enum ModelFile {
    /// A safetensors file and its tensors in file order.
    Safetensors(SafetensorsFile, Vec<Entry>),
    /// A GGUF file (its tensors in the header).
    Gguf(GgufFile),
}

/// One tensor of a [`ModelFile`].
pub struct Tensor<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its shape, outermost first.
    pub shape: Vec<usize>,
    /// What its bytes hold.
    pub kind: Kind,
    /// Its bytes in the file.
    pub bytes: &'a [u8],
}

impl Tensor<'_> {
    /// Number of values.
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values, in their own float type, or as `f32` for blocks (dequantized bit for bit as
    /// ggml's `dequantize_row_*`); `None` for integer tensors.
    pub fn floats(&self) -> Option<Result<Floats, String>> {
        match self.kind {
            Kind::Plain(d) => decode_floats(d, self.bytes).map(Ok),
            Kind::Blocks(f) => Some(f.dequantize(self.bytes).map(Floats::F32).map_err(|e| e.to_string())),
        }
    }
}

impl ModelFile {
    /// Opens `path`, a GGUF file when it starts with GGUF's magic, safetensors otherwise.
    ///
    /// # Errors
    /// Those of [`GgufFile::open`] and [`SafetensorsFile::open`].
    pub fn open(path: &Path) -> Result<ModelFile, IoError> {
        if is_gguf(path) {
            return Ok(ModelFile::Gguf(GgufFile::open(path)?));
        }
        let m = SafetensorsFile::open(path)?;
        let entries = m.entries();
        Ok(ModelFile::Safetensors(m, entries))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        match self {
            ModelFile::Safetensors(m, _) => m.path(),
            ModelFile::Gguf(f) => f.path(),
        }
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        match self {
            ModelFile::Safetensors(_, e) => e.len(),
            ModelFile::Gguf(f) => f.header.tensors.len(),
        }
    }

    /// Whether the file holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tensor `i` (in file order).
    pub fn tensor(&self, i: usize) -> Tensor<'_> {
        match self {
            ModelFile::Safetensors(m, entries) => {
                let e = &entries[i];
                Tensor { name: &e.name, shape: e.shape.clone(), kind: Kind::Plain(e.dtype), bytes: m.bytes(e) }
            }
            ModelFile::Gguf(f) => {
                let t = &f.header.tensors[i];
                Tensor { name: &t.name, shape: t.shape(), kind: t.ty.kind, bytes: f.data(t) }
            }
        }
    }

    /// Tells the kernel that tensor `i`'s pages are done with (see [`SafetensorsFile::release`]).
    pub fn release(&self, i: usize) {
        match self {
            ModelFile::Safetensors(m, entries) => m.release(&entries[i]),
            ModelFile::Gguf(f) => f.release(&f.header.tensors[i]),
        }
    }
}
