//! `quant`: quantize safetensors model files and report the precision lost.
//!
//! ```text
//! quant demo                                   built-in synthetic transformer block, no files
//! quant inspect MODEL.safetensors|MODEL.gguf   every tensor: dtype, shape, elements, bytes
//!                                              (GGUF: also every metadata key/value)
//! quant report MODEL.safetensors|MODEL.gguf [--scheme sym,asym] [--bits 8,4] [--granularity channel,group:128]
//!              [--type q4_k,q6_k] [--format table|json|csv] [--sort given|bpw|snr]
//! quant report MODEL.safetensors --reconstructed BACK.safetensors   compare with a reconstruction
//! quant report MODEL.gguf --reference ORIGINAL.safetensors|.gguf    every tensor as stored vs the original
//! quant quantize MODEL.safetensors -o OUT.safetensors [--scheme sym] [--bits 8] [--granularity channel]
//! quant quantize MODEL.safetensors|MODEL.gguf -o OUT.gguf --type q4_k   llama.cpp's formats
//! quant quantize MODEL.gguf -o OUT.gguf --type q4_k_m        llama.cpp's per-tensor mixes
//! quant report MODEL.safetensors --super levels4/16@256,sym4/16 [--fit search|minmax] [--importance IMATRIX]
//! quant quantize MODEL.safetensors|MODEL.gguf -o OUT.safetensors --super levels4/16@256 [--importance IMATRIX]
//! quant dequantize OUT.safetensors|MODEL.gguf -o BACK.safetensors
//! ```
//!
//! Files are read through a memory map, tensor by tensor (peak memory stays near the largest
//! tensor's size, whatever the file's size), with both cores, and written to a temporary file in
//! the destination's folder that replaces the destination only once complete. Errors are one line
//! naming the file and the problem, with exit code 1 (2 for a bad command line).

mod demo;
mod gguf;
mod mix;
mod one_level;
mod report;
mod scheme;
mod stored;
mod two_level;

use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use quant_core::{QuantSpec, Scheme};

use crate::report::Format;
use crate::scheme::{Gran, Plan};

/// A one-line error: what went wrong, and with which file.
#[derive(Debug)]
pub struct CliError {
    message: String,
    usage: bool,
}

impl CliError {
    /// A problem with `path`.
    pub fn file(path: &Path, message: String) -> Self {
        CliError { message: format!("{}: {message}", path.display()), usage: false }
    }

    /// A problem with the command line.
    pub fn usage(message: String) -> Self {
        CliError { message, usage: true }
    }
}

impl From<quant_io::IoError> for CliError {
    fn from(e: quant_io::IoError) -> Self {
        CliError { message: e.to_string(), usage: false }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line, whatever a library message contained.
        write!(f, "{}", self.message.replace('\n', " "))
    }
}

/// A progress bar on stderr, shown only on a terminal and without `--quiet`.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        let show = !quiet && std::io::stderr().is_terminal();
        Progress { bar: show.then(|| ProgressBar::new(0)) }
    }

    /// Starts a phase of `total` bytes.
    pub fn start(&self, total: u64, what: &str) {
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(0);
            if let Ok(style) =
                ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {wide_msg}")
            {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_prefix(what.to_string());
        }
    }

    /// Names the tensor being worked on.
    pub fn message(&self, m: &str) {
        if let Some(b) = &self.bar {
            b.set_message(m.to_string());
        }
    }

    /// Adds `n` bytes done.
    pub fn advance(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[derive(Parser)]
#[command(name = "quant", version, about = "Quantize safetensors model files and report the precision lost")]
struct Cli {
    /// No progress bar.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum SchemeArg {
    /// Symmetric: zero point 0.
    Sym,
    /// Asymmetric: a zero point per scale.
    Asym,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum FitArg {
    /// Least-squares search over candidate scales (and offsets), never worse than min-max.
    Search,
    /// Scales from the extremes alone.
    Minmax,
}

impl FitArg {
    fn fit(self) -> quant_core::superblock::Fit {
        match self {
            FitArg::Search => quant_core::superblock::Fit::Search,
            FitArg::Minmax => quant_core::superblock::Fit::MinMax,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Quantize a built-in synthetic transformer block (hidden 768, MLP 3072) under several
    /// schemes and print the comparison table. No files needed.
    Demo,
    /// List every tensor of a safetensors or GGUF file (GGUF: and its metadata).
    Inspect {
        /// The safetensors or GGUF file.
        model: PathBuf,
    },
    /// Error statistics of each 2-D floating tensor under one or more schemes and llama.cpp
    /// formats (all combinations of the values given), or against another file: the original
    /// (`--reference`) or a reconstruction (`--reconstructed`).
    Report {
        /// The safetensors or GGUF file.
        model: PathBuf,
        /// Schemes, comma-separated (default sym, unless only --type is given).
        #[arg(long, value_delimiter = ',')]
        scheme: Vec<SchemeArg>,
        /// Widths in bits (2..=32), comma-separated (default 8).
        #[arg(long, value_delimiter = ',')]
        bits: Vec<u32>,
        /// `tensor`, `channel` (one scale per row) or `group:G` (per G values of a row),
        /// comma-separated (default channel).
        #[arg(long, value_delimiter = ',')]
        granularity: Vec<String>,
        /// llama.cpp formats to measure too (q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k,
        /// q5_k, q6_k), comma-separated, byte for byte as ggml quantizes them.
        #[arg(long = "type", value_delimiter = ',')]
        ty: Vec<String>,
        /// Our two-level formats to measure, comma-separated: `GRID BITS/SUB[:sS|:f16|:bf16][@SUPER]`
        /// with GRID `sym`, `offset`, `zp` (integer zero points) or `levels` (4 to 6 bits), e.g. `sym4/16` (4-bit codes, 6-bit
        /// scales per 16 values under one f16 per row), `levels4/16`, `offset4/32:s6@256`,
        /// `sym4/32:f16` (groups of 32 with f16 scales).
        #[arg(long = "super", value_delimiter = ',')]
        super_formats: Vec<String>,
        /// How the two-level formats fit their scales: an error-minimizing search, or min-max.
        #[arg(long, value_enum, default_value = "search")]
        fit: FitArg,
        /// llama.cpp importance matrix (GGUF or legacy .dat) weighting the two-level formats'
        /// search (tensors it names; the others unweighted).
        #[arg(long, requires = "super_formats")]
        importance: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Order of the summary: as given, by bits per weight (size against error), or by SNR.
        #[arg(long, value_enum, default_value = "given")]
        sort: report::Sort,
        /// Compare with this file (e.g. written by `quant dequantize`) instead of quantizing.
        #[arg(long, conflicts_with_all = ["reference", "scheme", "bits", "granularity", "ty", "super_formats"])]
        reconstructed: Option<PathBuf>,
        /// The original this file was made from (safetensors, or an F32/F16/BF16 GGUF): every
        /// floating tensor of the file, quantized or not, is compared with it as stored.
        #[arg(long, conflicts_with_all = ["scheme", "bits", "granularity", "ty", "super_formats"])]
        reference: Option<PathBuf>,
    },
    /// Write a quantized safetensors file: codes, scales and zero points as tensors, the scheme
    /// in the header metadata; 1-D and integer tensors copied as they are.
    Quantize {
        /// The safetensors file.
        model: PathBuf,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
        /// Scheme.
        #[arg(long, value_enum, default_value = "sym")]
        scheme: SchemeArg,
        /// Width in bits (2..=8 in files).
        #[arg(long, default_value_t = 8)]
        bits: u32,
        /// `tensor`, `channel` or `group:G`.
        #[arg(long, default_value = "channel")]
        granularity: String,
        /// Print input MB/s and peak resident memory to stderr at the end.
        #[arg(long)]
        stats: bool,
        /// Write a GGUF file in this llama.cpp type instead (q8_0, q4_0, q4_1, q5_0, q5_1,
        /// q2_k, q3_k, q4_k, q5_k, q6_k): every float tensor of two or more dimensions whose rows
        /// are whole blocks, byte for byte as ggml's reference quantizer. Or one of llama.cpp's
        /// mixes (q3_k_s, q3_k_m, q3_k_l, q4_k_s, q4_k_m, q5_k_s, q5_k_m), each tensor in the
        /// format llama-quantize's rules give it; these need a GGUF with llama.cpp's names.
        #[arg(long = "type", conflicts_with = "super_format")]
        ty: Option<String>,
        /// Write one of our two-level formats instead (see `report --super`), e.g.
        /// `levels4/16@256`: a safetensors file of code, sub-scale and super-scale tensors.
        #[arg(long = "super")]
        super_format: Option<String>,
        /// How the two-level format fits its scales.
        #[arg(long, value_enum, default_value = "search")]
        fit: FitArg,
        /// llama.cpp importance matrix (`imatrix`, GGUF or legacy .dat) weighting the two-level
        /// search by each input column's mean squared activation.
        #[arg(long, requires = "super_format")]
        importance: Option<PathBuf>,
    },
    /// Reconstruct floating tensors (in their original dtype) from a file written by
    /// `quantize`, or every tensor of a GGUF file (quantized ones as F32, bit for bit as ggml).
    Dequantize {
        /// The quantized safetensors file, or a GGUF file.
        model: PathBuf,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
    },
}

fn plan(scheme: SchemeArg, bits: u32, granularity: &str) -> Result<Plan, CliError> {
    let kind = if scheme == SchemeArg::Sym { Scheme::Symmetric } else { Scheme::Asymmetric };
    let spec = QuantSpec::new(kind, bits).map_err(|e| CliError::usage(format!("--bits {bits}: {e}")))?;
    let gran = Gran::parse(granularity).map_err(CliError::usage)?;
    Ok(Plan { spec, gran })
}

/// The llama.cpp format `--type NAME` names (case ignored).
fn block_format(name: &str) -> Result<quant_core::BlockFormat, CliError> {
    quant_core::BlockFormat::ALL.into_iter().find(|f| f.name().eq_ignore_ascii_case(name)).ok_or_else(|| {
        let all: Vec<String> = quant_core::BlockFormat::ALL.iter().map(|f| f.name().to_ascii_lowercase()).collect();
        CliError::usage(format!("--type {name}: not one of {}", all.join(", ")))
    })
}

/// Peak resident memory of this process (Linux `VmHWM`), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn run(cli: Cli) -> Result<(), CliError> {
    let progress = Progress::new(cli.quiet);
    match cli.command {
        Command::Demo => print!("{}", demo::run().map_err(|e| CliError::usage(e.to_string()))?),
        Command::Inspect { model } if quant_io::gguf::is_gguf(&model) => print!("{}", gguf::inspect(&model)?),
        Command::Inspect { model } => print!("{}", report::inspect(&model)?),
        Command::Report {
            model,
            scheme,
            bits,
            granularity,
            ty,
            super_formats,
            fit,
            importance,
            format,
            sort,
            reconstructed,
            reference,
        } => {
            let mut methods = Vec::new();
            // Our schemes: every combination, with sym / 8 / channel for what is not given, and
            // none when only llama.cpp or two-level formats are asked for.
            let only_formats = !(ty.is_empty() && super_formats.is_empty());
            if !(only_formats && scheme.is_empty() && bits.is_empty() && granularity.is_empty()) {
                let scheme = if scheme.is_empty() { vec![SchemeArg::Sym] } else { scheme };
                let bits = if bits.is_empty() { vec![8] } else { bits };
                let granularity = if granularity.is_empty() { vec!["channel".to_string()] } else { granularity };
                for &s in &scheme {
                    for &b in &bits {
                        for g in &granularity {
                            methods.push(report::Method::Plan(plan(s, b, g)?));
                        }
                    }
                }
            }
            for name in &super_formats {
                let spec = scheme::parse_super(name, fit.fit()).map_err(|e| CliError::usage(format!("--super {e}")))?;
                methods.push(report::Method::Super(spec));
            }
            for name in &ty {
                methods.push(report::Method::Format(block_format(name)?));
            }
            let against = match (&reconstructed, &reference) {
                (Some(p), _) => Some(report::Against::Reconstructed(p)),
                (_, Some(p)) => Some(report::Against::Reference(p)),
                _ => None,
            };
            let imp = importance.as_deref().map(quant_io::imatrix::Importance::load).transpose()?;
            let imp = importance.as_deref().zip(imp.as_ref());
            let r = report::report(&model, &methods, against, format, sort, imp, &progress)?;
            print!("{}", r.text);
            if format == Format::Csv {
                for n in &r.notes {
                    eprintln!("quant: note: {n}");
                }
            }
        }
        Command::Quantize { model, output, scheme, bits, granularity, stats, ty, super_format, fit, importance } => {
            let start = Instant::now();
            if let Some(name) = super_format {
                let spec =
                    scheme::parse_super(&name, fit.fit()).map_err(|e| CliError::usage(format!("--super {e}")))?;
                let imp = importance.as_deref().map(quant_io::imatrix::Importance::load).transpose()?;
                let imp = importance.as_deref().zip(imp.as_ref());
                two_level::quantize(&model, &output, spec, imp, &progress)?;
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
                        gguf::quantize(&model, &output, target, &progress)?;
                    }
                    None => one_level::quantize(&model, &output, plan(scheme, bits, &granularity)?, &progress)?,
                }
            }
            if stats {
                let secs = start.elapsed().as_secs_f64();
                let bytes = std::fs::metadata(&model).map(|m| m.len()).unwrap_or(0);
                let peak = peak_rss().map_or("unavailable".to_string(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
                eprintln!(
                    "quant: read {:.1} MB in {secs:.2} s ({:.1} MB/s), peak resident memory {peak}",
                    bytes as f64 / 1e6,
                    bytes as f64 / 1e6 / secs
                );
            }
        }
        Command::Dequantize { model, output } if quant_io::gguf::is_gguf(&model) => {
            gguf::dequantize(&model, &output, &progress)?
        }
        Command::Dequantize { model, output } => {
            let meta = quant_io::safetensors::SafetensorsFile::open(&model)?.metadata();
            stored::written_by_quant(&model, &meta)?;
            if two_level::is_super(&meta) {
                two_level::dequantize(&model, &output, &progress)?
            } else {
                one_level::dequantize(&model, &output, &progress)?
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message spans several lines (usage, tips); keep its first, the one that
            // names the problem.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("bad command line").trim_start_matches("error: ");
            eprintln!("quant: {first} (see quant --help)");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quant: {e}");
            ExitCode::from(if e.usage { 2 } else { 1 })
        }
    }
}
