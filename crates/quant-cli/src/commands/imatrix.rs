//! `quant imatrix`: llama.cpp's importance matrix of a BERT sentence encoder, from its own
//! activations on the calibration sentences.
//!
//! For each linear layer, by its weight's safetensors name: per input column the sum of the
//! squared activations over every token (padding excluded) of the calibration split (every
//! fourth line of `--sentences`, as `quant eval` splits them), and that token count. Written
//! in llama.cpp's GGUF imatrix form (`quant_io::imatrix::write_gguf`), which
//! `quant quantize --importance` and `quant eval --importance` read; one chunk per sentence,
//! `imatrix.chunk_size` the longest sentence in tokens.

use std::path::PathBuf;

use quant_eval::{importance, read_sentences, Batch, Split, TextEncoder};
use quant_io::imatrix::{write_gguf, Entry};

use crate::{CliError, Progress};

/// `quant imatrix`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model directory: config.json, model.safetensors, tokenizer.json.
    pub model: PathBuf,
    /// One sentence a line; every fourth line (the calibration split) is used.
    #[arg(long)]
    pub sentences: PathBuf,
    /// The GGUF imatrix file to write.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Sentences per batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
}

/// Runs `args`.
pub fn run(args: &Args, progress: &Progress) -> Result<(), CliError> {
    let fail = |p: &std::path::Path, e: quant_eval::EvalError| CliError::file(p, e.to_string());
    if args.batch == 0 {
        return Err(CliError::usage("--batch must be at least 1".into()));
    }
    let text = TextEncoder::load(&args.model).map_err(|e| fail(&args.model, e))?;
    let calib = read_sentences(&args.sentences, Split::Calibration).map_err(|e| fail(&args.sentences, e))?;
    let batches = text.batches(&calib, args.batch).map_err(|e| fail(&args.sentences, e))?;
    let model = quant_eval::load_f32(&args.model).map_err(|e| fail(&args.model, e))?;
    let sums = importance(&model, &batches).map_err(|e| fail(&args.model, e))?;
    let entries: Vec<Entry<'_>> = sums.iter().map(|(name, s)| Entry { name, sums: &s.sums, count: s.count }).collect();
    let tokens: usize = batches.iter().map(Batch::tokens).sum();
    let longest = batches
        .iter()
        .flat_map(|b| b.mask.chunks_exact(b.len.max(1)).map(|m| m.iter().filter(|&&v| v == 1).count()))
        .max()
        .unwrap_or(0);
    let dataset = args.sentences.display().to_string();
    write_gguf(&args.output, &entries, &[dataset], calib.len() as u64, longest as u64)?;
    progress.note(&format!(
        "wrote {}: {} matrices, {tokens} tokens of {} sentences",
        args.output.display(),
        entries.len(),
        calib.len()
    ));
    Ok(())
}
