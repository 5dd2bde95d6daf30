//! A model file read tensor by tensor, safetensors or GGUF (told apart by GGUF's magic number):
//! what `report` and `quantize --type` read.

use std::path::Path;

use quant_core::BlockFormat;
use safetensors::tensor::Dtype;

use crate::gguf::{is_gguf, GgufFile};
use crate::model::{decode_floats, dtype_name, Entry, Floats, Model};
use crate::CliError;

/// An open safetensors or GGUF file.
pub enum Input {
    /// A safetensors file and its tensors in file order.
    Safetensors(Model, Vec<Entry>),
    /// A GGUF file (its tensors in the header).
    Gguf(GgufFile),
}

/// What a tensor's bytes hold.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Plain values of a safetensors dtype (GGUF's plain types map to these).
    Plain(Dtype),
    /// llama.cpp blocks.
    Blocks(BlockFormat),
}

impl Kind {
    /// The type as the file names it: a safetensors dtype (`"F16"`) or a ggml type (`"Q4_K"`).
    pub fn name(self) -> String {
        match self {
            Kind::Plain(d) => dtype_name(d),
            Kind::Blocks(f) => f.name().to_string(),
        }
    }

    /// Whether the values are floating point (stored plainly or in blocks of a float format).
    pub fn is_float(self) -> bool {
        matches!(self, Kind::Blocks(_) | Kind::Plain(Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64))
    }
}

/// One tensor of an [`Input`].
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

impl Input {
    /// Opens `path`, a GGUF file when it starts with GGUF's magic, safetensors otherwise.
    pub fn open(path: &Path) -> Result<Input, CliError> {
        if is_gguf(path) {
            return Ok(Input::Gguf(GgufFile::open(path)?));
        }
        let m = Model::open(path)?;
        let entries = m.entries();
        Ok(Input::Safetensors(m, entries))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        match self {
            Input::Safetensors(m, _) => m.path(),
            Input::Gguf(f) => f.path(),
        }
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        match self {
            Input::Safetensors(_, e) => e.len(),
            Input::Gguf(f) => f.header.tensors.len(),
        }
    }

    /// Tensor `i` (in file order).
    pub fn tensor(&self, i: usize) -> Tensor<'_> {
        match self {
            Input::Safetensors(m, entries) => {
                let e = &entries[i];
                Tensor { name: &e.name, shape: e.shape.clone(), kind: Kind::Plain(e.dtype), bytes: m.bytes(e) }
            }
            Input::Gguf(f) => {
                let t = &f.header.tensors[i];
                Tensor { name: &t.name, shape: t.shape(), kind: t.ty.kind, bytes: f.data(t) }
            }
        }
    }

    /// Tells the kernel that tensor `i`'s pages are done with (see [`Model::release`]).
    pub fn release(&self, i: usize) {
        match self {
            Input::Safetensors(m, entries) => m.release(&entries[i]),
            Input::Gguf(f) => f.release(&f.header.tensors[i]),
        }
    }
}
