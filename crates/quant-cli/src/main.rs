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
//! quant eval MODEL_DIR --sentences FILE [--type q4_k] [--super levels4/16@256] [--importance IMATRIX]
//! quant imatrix MODEL_DIR --sentences FILE -o IMATRIX.gguf
//! ```
//!
//! Files are read through a memory map, tensor by tensor (peak memory stays near the largest
//! tensor's size, whatever the file's size), with both cores, and written to a temporary file in
//! the destination's folder that replaces the destination only once complete. Errors are one line
//! naming the file and the problem, with exit code 1 (2 for a bad command line).

mod commands;
mod gguf;
mod measure;
mod mix;
mod one_level;
mod pipeline;
mod render;
mod scheme;
mod stored;
mod two_level;

use std::fmt;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

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

/// A progress bar on stderr, shown only on a terminal and without `--quiet`, and the closing
/// summary line (also without `--quiet`).
pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        let show = !quiet && std::io::stderr().is_terminal();
        Progress { bar: show.then(|| ProgressBar::new(0)), quiet }
    }

    /// One line on stderr (`quant: ...`), unless `--quiet`.
    pub fn note(&self, line: &str) {
        if !self.quiet {
            eprintln!("quant: {line}");
        }
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
    /// No progress bar and no summary line.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Quantize a built-in synthetic transformer block (hidden 768, MLP 3072) under several
    /// schemes and print the comparison table. No files needed.
    Demo,
    /// List every tensor of a safetensors or GGUF file (GGUF: and its metadata).
    Inspect(commands::inspect::Args),
    /// Error statistics of each 2-D floating tensor under one or more schemes and llama.cpp
    /// formats (all combinations of the values given), or against another file: the original
    /// (`--reference`) or a reconstruction (`--reconstructed`).
    Report(commands::report::Args),
    /// Write a quantized safetensors file: codes, scales and zero points as tensors, the scheme
    /// in the header metadata; 1-D and integer tensors copied as they are.
    Quantize(commands::quantize::Args),
    /// Reconstruct floating tensors (in their original dtype) from a file written by
    /// `quantize`, or every tensor of a GGUF file (quantized ones as F32, bit for bit as ggml).
    Dequantize(commands::dequantize::Args),
    /// Run a BERT sentence encoder (all-MiniLM-L6-v2) with its linear layers in f32, W8A8 and
    /// weight-only formats, and say what each does to its embeddings and how fast it runs.
    Eval(commands::eval::Args),
    /// Write llama.cpp's importance matrix (GGUF) of a BERT sentence encoder from its
    /// activations on calibration sentences.
    Imatrix(commands::imatrix::Args),
}

fn run(cli: Cli) -> Result<(), CliError> {
    let progress = Progress::new(cli.quiet);
    match cli.command {
        Command::Demo => print!("{}", commands::demo::run().map_err(|e| CliError::usage(e.to_string()))?),
        Command::Inspect(args) => commands::inspect::run(&args)?,
        Command::Report(args) => commands::report::run(args, &progress)?,
        Command::Quantize(args) => commands::quantize::run(args, &progress)?,
        Command::Dequantize(args) => commands::dequantize::run(args, &progress)?,
        Command::Eval(args) => commands::eval::run(args, &progress)?,
        Command::Imatrix(args) => commands::imatrix::run(&args, &progress)?,
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
