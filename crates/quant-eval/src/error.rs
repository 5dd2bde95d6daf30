//! The errors of loading and running a model: each names the file, tensor or sentence at fault.

use std::path::PathBuf;

use quant_traits::QuantError;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A model or data file could not be read, or breaks its format.
    #[error(transparent)]
    Io(#[from] quant_io::IoError),
    /// A file the model directory must hold is missing or unreadable.
    #[error("{}: {what}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// `config.json` describes a model this runtime does not run.
    #[error("{}: {what}", path.display())]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// The key at fault and what is expected.
        what: String,
    },
    /// A tensor the model needs is missing or has the wrong shape.
    #[error("tensor {name:?}: {what}")]
    Tensor {
        /// The tensor's name in the safetensors file.
        name: String,
        /// What is wrong.
        what: String,
    },
    /// The tokenizer could not be loaded or could not encode a sentence.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A quantization or matrix-multiply step refused its operands (a NaN activation, a
    /// format that does not fit a shape).
    #[error("{layer}: {source}")]
    Quant {
        /// The linear layer (its weight's tensor name) or step.
        layer: String,
        /// The library's error.
        #[source]
        source: QuantError,
    },
    /// A request that cannot be met: no sentences, a batch of 0, an unknown configuration.
    #[error("{0}")]
    Invalid(String),
}

impl EvalError {
    /// A [`QuantError`] raised while running `layer`.
    pub fn quant(layer: &str, source: QuantError) -> Self {
        EvalError::Quant { layer: layer.to_string(), source }
    }
}
