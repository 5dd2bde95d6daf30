//! `quant eval`: a real model (a BERT sentence encoder such as all-MiniLM-L6-v2) run with its
//! linear layers in each precision, and what each does to the sentence embeddings.
//!
//! Configurations, one row each: `f32` (the reference the others are compared with), W8A8
//! `dynamic` (activations quantized per row at run time: `u8` with a zero point, or `i8`
//! symmetric for `dynamic-sym`), W8A8 `static` per observer
//! (`minmax`, `percentile` at 99.99, `mse`; the activation ranges from the calibration
//! sentences), and each `--type` (llama.cpp's block formats, with llama-quantize's fallbacks for
//! rows that are not whole blocks) and `--super` format (our two-level formats), weight-only,
//! in each `--modes` activation mode; with `--importance`, each weight-only format a second
//! time with the importance matrix weighting its rounding.
//!
//! Sentences: one per line of `--sentences`; every fourth line (the 1st, 5th, ...) calibrates
//! (static W8A8), the others are evaluated. Columns: bits per weight of the linear layers as
//! stored (codes and scales; the 36 encoder matrices of MiniLM), the mean and minimum cosine of
//! the embeddings to `f32`'s, the share of sentences whose most similar other sentence is
//! unchanged, and sentences and tokens per second at `--batch` on `--threads` threads
//! (tokenization excluded; padding tokens not counted).
//!
//! `--reference FILE` (little-endian `f32`, sentences x hidden, every line of the file in
//! order, as `xtask/fixtures/minilm_reference.py` writes from sentence-transformers) also
//! checks the `f32` embeddings of every line against it, and fails when any cosine is below
//! 0.99999.
//!
//! `--format json` prints `{"model", "sentences", "batch", "threads", "reference":
//! null | {"file", "mean_cosine", "min_cosine"}, "rows": [{"config", "bits_per_weight",
//! "mean_cosine", "min_cosine", "neighbour_agreement", "sentences_per_second",
//! "tokens_per_second"}]}`; `csv` the rows with a header line.

use std::path::{Path, PathBuf};
use std::time::Instant;

use quant_core::superblock::{quantize_super, SuperSpec};
use quant_core::{BlockFormat, MatrixShape, MinMax, MseOptimal, Percentile, QuantParams};
use quant_eval::metrics::{cosines, neighbour_agreement};
use quant_eval::{
    calibrate, embed_all, read_sentences, ActivationBlocks, ActivationMode, Batch, DynamicInt8, Encoder, EvalError,
    F32Linear, Grouped, Linear, LinearWeights, RowScheme, Split, StaticInt8, TextEncoder,
};
use quant_io::imatrix::Importance;
use quant_matmul::GroupWeights;
use serde_json::json;

use super::{block_format, FitArg};
use crate::mix::{fallback, Target};
use crate::render::Format;
use crate::scheme::parse_super;
use crate::{CliError, Progress};

/// `quant eval`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model directory: config.json, model.safetensors, tokenizer.json (and
    /// sentence_bert_config.json).
    pub model: PathBuf,
    /// One sentence a line; every fourth line calibrates, the others are evaluated.
    #[arg(long)]
    pub sentences: PathBuf,
    /// W8A8 configurations, comma-separated: dynamic (u8 per row, asymmetric), dynamic-sym
    /// (i8 per row, symmetric), minmax, percentile, mse (static with that observer), or none.
    #[arg(long, value_delimiter = ',', default_value = "dynamic,dynamic-sym,minmax,percentile,mse")]
    pub w8a8: Vec<String>,
    /// llama.cpp formats for weight-only rows (q8_0, q4_k, ...), comma-separated.
    #[arg(long = "type", value_delimiter = ',')]
    pub ty: Vec<String>,
    /// Our two-level formats for weight-only rows (`levels4/16@256`, ...), comma-separated.
    #[arg(long = "super", value_delimiter = ',')]
    pub super_formats: Vec<String>,
    /// How the two-level formats fit their scales.
    #[arg(long, value_enum, default_value = "search")]
    pub fit: FitArg,
    /// An importance matrix (as `quant imatrix` or llama-imatrix write): each weight-only
    /// format is also run with it weighting the rounding.
    #[arg(long)]
    pub importance: Option<PathBuf>,
    /// Activation modes of the weight-only rows: int8 (quantized on the fly per group, or per
    /// super-block of two-level weights, as llama.cpp), int8-group (always per group), float.
    #[arg(long, value_delimiter = ',', default_value = "int8")]
    pub modes: Vec<String>,
    /// Sentences per batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed passes over the evaluation sentences per configuration (the fastest counts).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Embeddings to check the f32 encoder against (see the module docs).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// One configuration's measurements.
struct Row {
    config: String,
    bpw: f64,
    mean_cos: f64,
    min_cos: f64,
    agreement: f64,
    sentences_per_s: f64,
    tokens_per_s: f64,
}

/// A way to make every linear layer.
type Maker = Box<dyn FnMut(&LinearWeights<'_>) -> Result<Box<dyn Linear>, EvalError>>;

fn eval_error(dir: &Path, e: EvalError) -> CliError {
    CliError::file(dir, e.to_string())
}

/// The weight-only layer of `w` in llama.cpp's `format` (or its fallback), weighted by
/// `importance` when given.
fn block_layer(
    w: &LinearWeights<'_>,
    format: BlockFormat,
    importance: Option<&[f32]>,
    mode: ActivationMode,
) -> Result<Box<dyn Linear>, EvalError> {
    let quant = |e| EvalError::quant(w.name, e);
    match fallback(w.k as u64, format) {
        Target::Blocks(f) => {
            let bytes = match importance {
                Some(imp) => f.quantize_weighted(w.weight, w.k, imp),
                None => f.quantize(w.weight),
            }
            .map_err(quant)?;
            let g = GroupWeights::from_blocks(f, &bytes, w.n, w.k).map_err(quant)?;
            Ok(Box::new(Grouped::new(w, g, bytes.len(), mode)?))
        }
        _ => Err(EvalError::Tensor {
            name: w.name.to_string(),
            what: format!("rows of {} values fit neither {} nor its fallback", w.k, format.name()),
        }),
    }
}

/// The weight-only layer of `w` in our two-level `spec`.
fn super_layer(
    w: &LinearWeights<'_>,
    spec: SuperSpec,
    importance: Option<&[f32]>,
    mode: ActivationMode,
) -> Result<Box<dyn Linear>, EvalError> {
    let quant = |e| EvalError::quant(w.name, e);
    let m = quantize_super(w.weight, MatrixShape::new(w.n, w.k), spec, importance).map_err(quant)?;
    let g = GroupWeights::from_super(&m).map_err(quant)?;
    Ok(Box::new(Grouped::new(w, g, m.bytes(), mode)?))
}

/// Runs `args`.
pub fn run(args: Args, progress: &Progress) -> Result<(), CliError> {
    if args.batch == 0 || args.repeat == 0 {
        return Err(CliError::usage("--batch and --repeat must be at least 1".into()));
    }
    // Every name on the command line checked before any file is read.
    if let Some(bad) = args
        .w8a8
        .iter()
        .find(|w| !["none", "dynamic", "dynamic-sym", "minmax", "percentile", "mse"].contains(&w.as_str()))
    {
        return Err(CliError::usage(format!(
            "--w8a8 {bad}: use dynamic, dynamic-sym, minmax, percentile, mse or none"
        )));
    }
    if let Some(bad) = args.modes.iter().find(|m| !["int8", "int8-group", "float"].contains(&m.as_str())) {
        return Err(CliError::usage(format!("--modes {bad}: use int8, int8-group or float")));
    }
    for ty in &args.ty {
        block_format(ty)?;
    }
    for f in &args.super_formats {
        parse_super(f, args.fit.fit()).map_err(CliError::usage)?;
    }
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| CliError::usage(format!("--threads {threads}: {e}")))?;
    pool.install(|| run_in_pool(&args, threads, progress))
}

fn run_in_pool(args: &Args, threads: usize, progress: &Progress) -> Result<(), CliError> {
    let dir = &args.model;
    let text = TextEncoder::load(dir).map_err(|e| eval_error(dir, e))?;
    let calib = read_sentences(&args.sentences, Split::Calibration).map_err(|e| eval_error(&args.sentences, e))?;
    let eval = read_sentences(&args.sentences, Split::Evaluation).map_err(|e| eval_error(&args.sentences, e))?;
    let calib_batches = text.batches(&calib, args.batch).map_err(|e| eval_error(&args.sentences, e))?;
    let eval_batches = text.batches(&eval, args.batch).map_err(|e| eval_error(&args.sentences, e))?;
    let tokens: usize = eval_batches.iter().map(Batch::tokens).sum();
    let importance = match &args.importance {
        Some(p) => Some(std::rc::Rc::new((p.clone(), Importance::load(p)?))),
        None => None,
    };
    let modes: Vec<(ActivationMode, &str)> = args
        .modes
        .iter()
        .map(|m| match m.as_str() {
            "int8" => Ok((ActivationMode::Int8(ActivationBlocks::SuperBlock), "")),
            "int8-group" => Ok((ActivationMode::Int8(ActivationBlocks::Group), " group-act")),
            "float" => Ok((ActivationMode::Float, " f32-act")),
            other => Err(CliError::usage(format!("--modes {other}: use int8, int8-group or float"))),
        })
        .collect::<Result<_, _>>()?;

    // The configurations, in order.
    let mut configs: Vec<(String, Maker)> =
        vec![("f32".into(), Box::new(|w: &LinearWeights<'_>| Ok(Box::new(F32Linear::new(w)) as Box<dyn Linear>)))];
    let reference_model = quant_eval::load_f32(dir).map_err(|e| eval_error(dir, e))?;
    for name in &args.w8a8 {
        match name.as_str() {
            "none" => {}
            "dynamic" => configs.push((
                "w8a8 dynamic".into(),
                Box::new(|w: &LinearWeights<'_>| {
                    Ok(Box::new(DynamicInt8::new(w, RowScheme::Asymmetric)?) as Box<dyn Linear>)
                }),
            )),
            "dynamic-sym" => configs.push((
                "w8a8 dynamic sym".into(),
                Box::new(|w: &LinearWeights<'_>| {
                    Ok(Box::new(DynamicInt8::new(w, RowScheme::Symmetric)?) as Box<dyn Linear>)
                }),
            )),
            "minmax" | "percentile" | "mse" => {
                progress.note(&format!("calibrating {name} on {} sentences", calib.len()));
                let params = match name.as_str() {
                    "minmax" => calibrate(&reference_model, &calib_batches, MinMax::new),
                    "percentile" => calibrate(&reference_model, &calib_batches, || {
                        Percentile::new(99.99).unwrap_or_else(|_| unreachable_percentile())
                    }),
                    _ => calibrate(&reference_model, &calib_batches, MseOptimal::new),
                }
                .map_err(|e| eval_error(dir, e))?;
                configs.push((
                    format!("w8a8 static {name}"),
                    Box::new(move |w: &LinearWeights<'_>| {
                        let act: QuantParams<f32> = *params.get(w.name).ok_or_else(|| EvalError::Tensor {
                            name: w.name.to_string(),
                            what: "no calibrated activation range".into(),
                        })?;
                        Ok(Box::new(StaticInt8::new(w, act)?) as Box<dyn Linear>)
                    }),
                ));
            }
            other => {
                return Err(CliError::usage(format!(
                    "--w8a8 {other}: use dynamic, dynamic-sym, minmax, percentile, mse or none"
                )))
            }
        }
    }
    let weightings: Vec<bool> = if importance.is_some() { vec![false, true] } else { vec![false] };
    for ty in &args.ty {
        let format = block_format(ty)?;
        for &(mode, suffix) in &modes {
            for &weighted in &weightings {
                let imp = if weighted { importance.clone() } else { None };
                let label = format!("{}{}{suffix}", format.name(), if weighted { " +imatrix" } else { "" });
                configs.push((
                    label,
                    Box::new(move |w: &LinearWeights<'_>| {
                        let v = weights_of(&imp, w)?;
                        block_layer(w, format, v.as_deref(), mode)
                    }),
                ));
            }
        }
    }
    for s in &args.super_formats {
        let spec = parse_super(s, args.fit.fit()).map_err(CliError::usage)?;
        for &(mode, suffix) in &modes {
            for &weighted in &weightings {
                let imp = if weighted { importance.clone() } else { None };
                let label = format!("{s}{}{suffix}", if weighted { " +imatrix" } else { "" });
                configs.push((
                    label,
                    Box::new(move |w: &LinearWeights<'_>| {
                        let v = weights_of(&imp, w)?;
                        super_layer(w, spec, v.as_deref(), mode)
                    }),
                ));
            }
        }
    }

    // The reference check (every line) and the f32 embeddings every row is compared with.
    let reference = match &args.reference {
        Some(path) => Some(check_reference(path, &args.sentences, &text, &reference_model, args.batch)?),
        None => None,
    };
    let base = embed_all(&reference_model, &eval_batches).map_err(|e| eval_error(dir, e))?;
    drop(reference_model);
    let hidden = base.len() / eval.len();
    let mut rows = Vec::new();
    for (label, mut make) in configs {
        progress.note(&format!("{label}: quantizing and running {} sentences", eval.len()));
        let model = Encoder::load(dir, &mut *make).map_err(|e| eval_error(dir, e))?;
        let (stored, weights) = model.linear_layers().iter().fold((0usize, 0usize), |(s, n), (_, b, w)| (s + b, n + w));
        let mut best = f64::INFINITY;
        let mut emb = Vec::new();
        for _ in 0..args.repeat {
            let t = Instant::now();
            emb = embed_all(&model, &eval_batches).map_err(|e| eval_error(dir, e))?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        let cos = cosines(&base, &emb, hidden);
        #[allow(clippy::cast_precision_loss, clippy::as_conversions)]
        rows.push(Row {
            config: label,
            bpw: 8.0 * stored as f64 / weights as f64,
            mean_cos: cos.iter().sum::<f64>() / cos.len() as f64,
            min_cos: cos.iter().copied().fold(f64::INFINITY, f64::min),
            agreement: neighbour_agreement(&base, &emb, hidden),
            sentences_per_s: eval.len() as f64 / best,
            tokens_per_s: tokens as f64 / best,
        });
    }
    print!("{}", render_rows(args, threads, eval.len(), reference.as_ref(), &rows));
    Ok(())
}

/// Never taken: 99.99 is a valid percentile.
fn unreachable_percentile() -> Percentile {
    Percentile::new(100.0).unwrap_or_else(|_| unreachable!("100 is a valid percentile"))
}

/// The importance weights of `w` from `imp`, when given (an entry the file lacks is an error:
/// a silently unweighted layer would misreport what the matrix buys).
fn weights_of(
    imp: &Option<std::rc::Rc<(PathBuf, Importance)>>,
    w: &LinearWeights<'_>,
) -> Result<Option<Vec<f32>>, EvalError> {
    match imp {
        None => Ok(None),
        Some(pi) => match pi.1.of(&pi.0, w.name, w.k)? {
            Some(v) => Ok(Some(v.to_vec())),
            None => Err(EvalError::Tensor {
                name: w.name.to_string(),
                what: format!("{} has no importance for it", pi.0.display()),
            }),
        },
    }
}

/// The `f32` encoder against `path`'s embeddings of every line: (file, mean, min cosine).
fn check_reference(
    path: &Path,
    sentences: &Path,
    text: &TextEncoder,
    model: &Encoder,
    batch: usize,
) -> Result<(PathBuf, f64, f64), CliError> {
    let all = read_sentences(sentences, Split::All).map_err(|e| eval_error(sentences, e))?;
    let bytes = std::fs::read(path).map_err(|e| CliError::file(path, format!("cannot read: {e}")))?;
    let hidden = model.config().hidden;
    if bytes.len() != all.len() * hidden * 4 {
        return Err(CliError::file(
            path,
            format!(
                "{} bytes, but {} sentences x {hidden} f32 need {}",
                bytes.len(),
                all.len(),
                all.len() * hidden * 4
            ),
        ));
    }
    let expected: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let batches = text.batches(&all, batch).map_err(|e| eval_error(sentences, e))?;
    let ours = embed_all(model, &batches).map_err(|e| eval_error(path, e))?;
    let cos = cosines(&expected, &ours, hidden);
    let (worst, at) = cos.iter().enumerate().fold((f64::INFINITY, 0), |b, (i, &c)| if c < b.0 { (c, i) } else { b });
    #[allow(clippy::cast_precision_loss, clippy::as_conversions)]
    let mean = cos.iter().sum::<f64>() / cos.len() as f64;
    if worst < 0.99999 {
        return Err(CliError::file(
            path,
            format!("the f32 encoder's embedding of line {} has cosine {worst:.7} to the reference (at least 0.99999 expected)", at + 1),
        ));
    }
    Ok((path.to_path_buf(), mean, worst))
}

fn render_rows(
    args: &Args,
    threads: usize,
    sentences: usize,
    reference: Option<&(PathBuf, f64, f64)>,
    rows: &[Row],
) -> String {
    match args.format {
        Format::Json => {
            let rows: Vec<_> = rows
                .iter()
                .map(|r| {
                    json!({"config": r.config, "bits_per_weight": r.bpw, "mean_cosine": r.mean_cos,
                           "min_cosine": r.min_cos, "neighbour_agreement": r.agreement,
                           "sentences_per_second": r.sentences_per_s, "tokens_per_second": r.tokens_per_s})
                })
                .collect();
            let reference = reference
                .map(|(f, mean, min)| json!({"file": f.display().to_string(), "mean_cosine": mean, "min_cosine": min}));
            let v = json!({"model": args.model.display().to_string(), "sentences": sentences, "batch": args.batch,
                           "threads": threads, "reference": reference, "rows": rows});
            format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
        }
        Format::Csv => {
            let mut s = String::from("config,bits_per_weight,mean_cosine,min_cosine,neighbour_agreement,sentences_per_second,tokens_per_second\n");
            for r in rows {
                s += &format!(
                    "{},{:.4},{:.7},{:.7},{:.4},{:.2},{:.1}\n",
                    r.config, r.bpw, r.mean_cos, r.min_cos, r.agreement, r.sentences_per_s, r.tokens_per_s
                );
            }
            s
        }
        Format::Table => {
            let mut s = format!(
                "{} sentences evaluated, batch {}, {threads} thread{}\n",
                sentences,
                args.batch,
                if threads == 1 { "" } else { "s" }
            );
            if let Some((f, mean, min)) = reference {
                s += &format!("f32 against {}: mean cosine {mean:.7}, min {min:.7}\n", f.display());
            }
            let w = rows.iter().map(|r| r.config.len()).max().unwrap_or(6).max(6);
            s += &format!(
                "{:<w$} {:>7} {:>10} {:>10} {:>6} {:>9} {:>9}\n",
                "config", "bpw", "1-cos mean", "1-cos max", "NN", "sent/s", "tok/s"
            );
            for r in rows {
                s += &format!(
                    "{:<w$} {:>7.3} {:>10.3e} {:>10.3e} {:>6.3} {:>9.1} {:>9.0}\n",
                    r.config,
                    r.bpw,
                    1.0 - r.mean_cos,
                    1.0 - r.min_cos,
                    r.agreement,
                    r.sentences_per_s,
                    r.tokens_per_s
                );
            }
            s
        }
    }
}
