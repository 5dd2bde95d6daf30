//! `quant inspect`: a safetensors or GGUF file's tensors (dtype, shape, elements, bytes) and
//! metadata.

use std::path::{Path, PathBuf};

use quant_io::gguf::GgufFile;
use quant_io::safetensors::{dtype_name, SafetensorsFile};

use crate::render::shape_text;
use crate::CliError;

/// `quant inspect`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The safetensors or GGUF file.
    pub model: PathBuf,
}

/// Runs `quant inspect` with `args`: the listing on stdout.
pub fn run(args: &Args) -> Result<(), CliError> {
    print!("{}", listing(&args.model)?);
    Ok(())
}

/// The listing of `path`, a GGUF file when it starts with GGUF's magic, safetensors otherwise.
pub fn listing(path: &Path) -> Result<String, CliError> {
    if quant_io::gguf::is_gguf(path) {
        gguf(path)
    } else {
        safetensors(path)
    }
}

/// `quant inspect`: every tensor with dtype, shape, elements and bytes.
fn safetensors(input: &Path) -> Result<String, CliError> {
    let model = SafetensorsFile::open(input)?;
    let entries = model.entries();
    let mut out = format!("{}: {} tensors, {} bytes\n", input.display(), entries.len(), model.file_bytes());
    let meta = model.metadata();
    if !meta.is_empty() {
        let mut keys: Vec<_> = meta.iter().collect();
        keys.sort();
        for (k, v) in keys {
            out.push_str(&format!("metadata {k} = {v}\n"));
        }
    }
    out.push_str(&format!("{:<48} {:<6} {:<20} {:>12} {:>12}\n", "tensor", "dtype", "shape", "elements", "bytes"));
    for e in &entries {
        out.push_str(&format!(
            "{:<48} {:<6} {:<20} {:>12} {:>12}\n",
            e.name,
            dtype_name(e.dtype),
            format!("[{}]", shape_text(&e.shape, ", ")),
            e.elements(),
            e.bytes()
        ));
    }
    Ok(out)
}

/// `quant inspect` on a GGUF file: the header, every key/value, every tensor.
fn gguf(path: &Path) -> Result<String, CliError> {
    let f = GgufFile::open(path)?;
    let h = &f.header;
    let mut out = format!(
        "{}: GGUF version {}, {} tensors, {} key/values, {} bytes (data at {}, alignment {})\n",
        path.display(),
        h.version,
        h.tensors.len(),
        h.kv.len(),
        f.file_bytes(),
        h.data_start,
        h.alignment
    );
    for (k, v) in &h.kv {
        out.push_str(&format!("metadata {k} = {v}\n"));
    }
    out.push_str(&format!(
        "{:<48} {:<6} {:<20} {:>12} {:>12} {:>7}\n",
        "tensor", "type", "shape", "elements", "bytes", "bpw"
    ));
    for t in &h.tensors {
        let shape: Vec<String> = t.shape().iter().map(ToString::to_string).collect();
        // Bits per weight as stored: 8 · bytes / values.
        let bpw = 8.0 * t.bytes as f64 / t.elements().max(1) as f64;
        out.push_str(&format!(
            "{:<48} {:<6} {:<20} {:>12} {:>12} {bpw:>7.3}\n",
            t.name,
            t.ty.name,
            format!("[{}]", shape.join(", ")),
            t.elements(),
            t.bytes
        ));
    }
    Ok(out)
}
