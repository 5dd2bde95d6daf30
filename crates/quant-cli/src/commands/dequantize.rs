//! `quant dequantize`: a GGUF file, or one of our quantized safetensors files, back to floats.

use std::path::PathBuf;

use crate::{gguf, one_level, stored, two_level, CliError, Progress};

/// `quant dequantize`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The quantized safetensors file, or a GGUF file.
    pub model: PathBuf,
    /// Output file.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Runs `quant dequantize` with `args`: GGUF's quantized tensors as F32 (bit for bit as ggml),
/// our files' tensors in their original dtype.
pub fn run(args: Args, progress: &Progress) -> Result<(), CliError> {
    let Args { model, output } = args;
    if quant_io::gguf::is_gguf(&model) {
        return gguf::dequantize(&model, &output, progress).map(|_| ());
    }
    let meta = quant_io::safetensors::SafetensorsFile::open(&model)?.metadata();
    stored::written_by_quant(&model, &meta)?;
    if two_level::is_super(&meta) {
        two_level::dequantize(&model, &output, progress).map(|_| ())
    } else {
        one_level::dequantize(&model, &output, progress).map(|_| ())
    }
}
