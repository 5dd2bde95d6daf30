//! A real model through the quant crates: a small BERT encoder (all-MiniLM-L6-v2 and its kin)
//! in `f32`, whose linear layers run in any precision the crates offer, and the measurements
//! that say what a quantization does to the model's sentence embeddings.
//!
//! * [`Encoder`]: embeddings, attention, feed-forward, pooling ([`encoder`] has the exact
//!   operations), loaded from a model directory (`config.json`, `model.safetensors`).
//! * [`Linear`]: one linear layer. [`F32Linear`] is the reference; [`DynamicInt8`] and
//!   [`StaticInt8`] are W8A8 through the integer GEMM; [`Grouped`] is weight-only through the
//!   group-quantized product, in any of llama.cpp's block formats or our two-level formats.
//! * [`TextEncoder`]: the model's `tokenizer.json`, batches padded to their longest sentence.
//! * [`calibrate`]: each linear input's activation parameters from an observer;
//!   [`importance`]: llama.cpp's importance matrix (per input column, the sum of squared
//!   activations and the number of rows seen).
//! * [`metrics`]: cosine to the reference and nearest-neighbour agreement.
//!
//! It exists to measure quantization on a real model and to show how an engine embeds the
//! crates; it is not a general inference engine.

mod arch;
pub mod encoder;
mod error;
pub mod linear;
pub mod math;
pub mod metrics;
mod simd;
pub mod text;

use std::collections::BTreeMap;
use std::path::Path;

pub use encoder::{BertConfig, Encoder};
pub use error::EvalError;
pub use linear::{
    ActivationMode, DynamicInt8, F32Linear, Grouped, Linear, LinearWeights, MakeLinear, RowScheme, StaticInt8,
};
use quant_core::{Observer, QuantParams, QuantSpec};
pub use quant_matmul::ActivationBlocks;
pub use text::{read_sentences, Batch, Split, TextEncoder};

/// Each linear input's activation parameters (asymmetric 8-bit) from `make_observer`'s
/// observers, fed every row the `f32` model gives each layer on `batches`. The query, key and
/// value projections share their input, so they get the same parameters.
///
/// # Errors
/// [`EvalError::Quant`] naming the layer when an observer refuses a value or gives no range.
pub fn calibrate<O: Observer>(
    model: &Encoder,
    batches: &[Batch],
    make_observer: impl Fn() -> O,
) -> Result<BTreeMap<String, QuantParams<f32>>, EvalError> {
    let mut observers: BTreeMap<String, O> = BTreeMap::new();
    let mut failure: Option<EvalError> = None;
    for batch in batches {
        let mut see = |name: &str, x: &[f32], _rows: usize| {
            if failure.is_some() {
                return;
            }
            let o = observers.entry(name.to_string()).or_insert_with(&make_observer);
            if let Err(e) = o.observe(x) {
                failure = Some(EvalError::quant(name, e));
            }
        };
        model.embed(batch, Some(&mut see))?;
        if let Some(e) = failure.take() {
            return Err(e);
        }
    }
    let spec = QuantSpec::asymmetric(8).map_err(|e| EvalError::quant("calibration", e))?;
    observers
        .into_iter()
        .map(|(name, o)| o.params(spec).map(|p| (name.clone(), p)).map_err(|e| EvalError::quant(&name, e)))
        .collect()
}

/// llama.cpp's importance matrix of one linear layer: per input column, the sum of the squared
/// activations, and how many rows were summed.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportanceSums {
    /// `Σ x²` per input column.
    pub sums: Vec<f32>,
    /// Rows (tokens, padding excluded) summed.
    pub count: u64,
}

/// The importance matrices of every linear layer over `batches` (padding tokens excluded), by
/// weight name; the sums are accumulated in `f64` and rounded once.
///
/// # Errors
/// Whatever the forward pass returns.
pub fn importance(model: &Encoder, batches: &[Batch]) -> Result<BTreeMap<String, ImportanceSums>, EvalError> {
    let mut acc: BTreeMap<String, (Vec<f64>, u64)> = BTreeMap::new();
    for batch in batches {
        let mask = &batch.mask;
        let mut see = |name: &str, x: &[f32], rows: usize| {
            let k = x.len() / rows.max(1);
            let (sums, count) = acc.entry(name.to_string()).or_insert_with(|| (vec![0f64; k], 0));
            for (r, row) in x.chunks_exact(k).enumerate() {
                if mask[r] == 0 {
                    continue;
                }
                *count += 1;
                for (s, v) in sums.iter_mut().zip(row) {
                    *s += f64::from(*v) * f64::from(*v);
                }
            }
        };
        model.embed(batch, Some(&mut see))?;
    }
    Ok(acc
        .into_iter()
        .map(|(name, (sums, count))| {
            #[allow(clippy::cast_possible_truncation, clippy::as_conversions)]
            let sums = sums.iter().map(|&s| s as f32).collect();
            (name, ImportanceSums { sums, count })
        })
        .collect())
}

/// The embeddings of every batch, in order (`sentences x hidden`).
///
/// # Errors
/// Whatever the forward pass returns.
pub fn embed_all(model: &Encoder, batches: &[Batch]) -> Result<Vec<f32>, EvalError> {
    let mut out = Vec::new();
    for b in batches {
        out.extend(model.embed(b, None)?);
    }
    Ok(out)
}

/// Loads the model of `dir` with `f32` linear layers.
///
/// # Errors
/// As [`Encoder::load`].
pub fn load_f32(dir: &Path) -> Result<Encoder, EvalError> {
    Encoder::load(dir, &mut |w| Ok(Box::new(F32Linear::new(w)) as Box<dyn Linear>))
}
