//! `quant quantize`: a model file into one of our one-level or two-level safetensors files, or a
//! GGUF in a llama.cpp format or mix.

use std::path::PathBuf;
use std::time::Instant;

use super::{block_format, plan, FitArg, SchemeArg};
use crate::{gguf, mix, one_level, two_level, CliError, Progress};

/// `quant quantize`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The safetensors file.
    pub model: PathBuf,
    /// Output file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Scheme.
    #[arg(long, value_enum, default_value = "sym")]
    pub scheme: SchemeArg,
    /// Width in bits (2..=8 in files).
    #[arg(long, default_value_t = 8)]
    pub bits: u32,
    /// `tensor`, `channel` or `group:G`.
    #[arg(long, default_value = "channel")]
    pub granularity: String,
    /// Print input MB/s and peak resident memory to stderr at the end.
    #[arg(long)]
    pub stats: bool,
    /// Write a GGUF file in this llama.cpp type instead (q8_0, q4_0, q4_1, q5_0, q5_1,
    /// q2_k, q3_k, q4_k, q5_k, q6_k): every float tensor of two or more dimensions whose rows
    /// are whole blocks, byte for byte as ggml's reference quantizer. Or one of llama.cpp's
    /// mixes (q3_k_s, q3_k_m, q3_k_l, q4_k_s, q4_k_m, q5_k_s, q5_k_m), each tensor in the
    /// format llama-quantize's rules give it; these need a GGUF with llama.cpp's names.
    #[arg(long = "type", conflicts_with = "super_format")]
    pub ty: Option<String>,
    /// Write one of our two-level formats instead (see `report --super`), e.g.
    /// `levels4/16@256`: a safetensors file of code, sub-scale and super-scale tensors.
    #[arg(long = "super")]
    pub super_format: Option<String>,
    /// How the two-level format fits its scales.
    #[arg(long, value_enum, default_value = "search")]
    pub fit: FitArg,
    /// llama.cpp importance matrix (`imatrix`, GGUF or legacy .dat) weighting the two-level
    /// search by each input column's mean squared activation.
    #[arg(long, requires = "super_format")]
    pub importance: Option<PathBuf>,
}

/// Runs `quant quantize` with `args`: the file, then (unless `--quiet`) one line on stderr
/// saying what was written.
pub fn run(args: Args, progress: &Progress) -> Result<(), CliError> {
    let Args { model, output, scheme, bits, granularity, stats, ty, super_format, fit, importance } = args;
    let start = Instant::now();
    let (written, what) = if let Some(name) = super_format {
        let spec = crate::scheme::parse_super(&name, fit.fit()).map_err(|e| CliError::usage(format!("--super {e}")))?;
        let imp = importance.as_deref().map(quant_io::imatrix::Importance::load).transpose()?;
        let imp = importance.as_deref().zip(imp.as_ref());
        (
            two_level::quantize(&model, &output, spec, imp, progress)?,
            format!("quantized to {}", crate::scheme::super_name(spec)),
        )
    } else {
        match ty {
            Some(name) => {
                let target = match mix::Mix::by_name(&name) {
                    Some(m) => gguf::Target::Mix(m),
                    None => gguf::Target::Format(block_format(&name).map_err(|e| {
                        let mixes: Vec<&str> = mix::ALL.iter().map(|(n, _)| *n).collect();
                        CliError::usage(format!("{e}, or a mix: {}", mixes.join(", ")))
                    })?),
                };
                // The per-type lines that follow say into what (fallbacks included).
                (gguf::quantize(&model, &output, target, progress)?, "quantized".to_string())
            }
            None => {
                let plan = plan(scheme, bits, &granularity)?;
                (one_level::quantize(&model, &output, plan, progress)?, format!("quantized to {plan}"))
            }
        }
    };
    for line in written.lines(&output, &what) {
        progress.note(&line);
    }
    if stats {
        let secs = start.elapsed().as_secs_f64();
        let bytes = written.read;
        let peak = peak_rss().map_or("unavailable".to_string(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
        eprintln!(
            "quant: read {:.1} MB in {secs:.2} s ({:.1} MB/s), peak resident memory {peak}",
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / secs
        );
    }
    Ok(())
}

/// Peak resident memory of this process (Linux `VmHWM`), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
