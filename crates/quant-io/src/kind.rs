//! What a tensor's bytes hold: plain values of a safetensors dtype, or llama.cpp blocks.

use ::safetensors::tensor::Dtype;
use quant_core::BlockFormat;

use crate::safetensors::dtype_name;

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
