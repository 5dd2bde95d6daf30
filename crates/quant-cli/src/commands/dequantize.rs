//! `quant dequantize`: a GGUF file, or one of our quantized safetensors files, back to floats.

use std::path::PathBuf;

use quant_io::ModelFile;

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
    // Opened once: each format reads the same map.
    let source = ModelFile::open(&model)?;
    match &source {
        ModelFile::Gguf(_) => gguf::dequantize(&source, &output, progress)?,
        ModelFile::Safetensors(file, _) => {
            let meta = file.metadata();
            stored::written_by_quant(&model, &meta)?;
            if two_level::is_super(&meta) {
                two_level::dequantize(&source, &output, progress)?
            } else {
                one_level::dequantize(&source, &output, progress)?
            }
        }
    };
    Ok(())
}
