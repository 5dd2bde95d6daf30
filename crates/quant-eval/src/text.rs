//! Sentences in, token batches out: the model's own `tokenizer.json` through the `tokenizers`
//! crate, sequences truncated at the model's `max_seq_length` and padded to the longest in
//! each batch (what sentence-transformers does), and the sentence files.

use std::path::Path;

use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::EvalError;

/// Token ids of `count` sequences padded to `len`, with their masks (1: a token, 0: padding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// `count x len` token ids, row-major.
    pub ids: Vec<u32>,
    /// `count x len`: 1 for a token, 0 for padding.
    pub mask: Vec<u8>,
    /// Sequences.
    pub count: usize,
    /// Tokens per sequence, padding included.
    pub len: usize,
}

impl Batch {
    /// Tokens that are not padding.
    #[must_use]
    pub fn tokens(&self) -> usize {
        self.mask.iter().filter(|&&m| m == 1).count()
    }
}

/// The model's tokenizer.
pub struct TextEncoder {
    tokenizer: Tokenizer,
}

impl TextEncoder {
    /// Loads `dir/tokenizer.json`; sequences are cut at `dir/sentence_bert_config.json`'s
    /// `max_seq_length` (256 when the file is absent).
    ///
    /// # Errors
    /// [`EvalError::File`] for a missing or unreadable file; [`EvalError::Tokenizer`] for a
    /// tokenizer file the crate cannot load.
    pub fn load(dir: &Path) -> Result<Self, EvalError> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(EvalError::File { path, what: "missing: the model directory holds no tokenizer.json".into() });
        }
        let mut tokenizer =
            Tokenizer::from_file(&path).map_err(|e| EvalError::Tokenizer(format!("{}: {e}", path.display())))?;
        let st = dir.join("sentence_bert_config.json");
        let max = match std::fs::read_to_string(&st) {
            Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["max_seq_length"].as_u64())
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| EvalError::File { path: st.clone(), what: "no max_seq_length".into() })?,
            Err(_) => 256,
        };
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max, ..TruncationParams::default() }))
            .map_err(|e| EvalError::Tokenizer(e.to_string()))?;
        tokenizer
            .with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, ..PaddingParams::default() }));
        Ok(TextEncoder { tokenizer })
    }

    /// The sentences as one batch.
    ///
    /// # Errors
    /// [`EvalError::Invalid`] for no sentences; [`EvalError::Tokenizer`] naming a sentence
    /// the tokenizer fails on.
    pub fn batch(&self, sentences: &[String]) -> Result<Batch, EvalError> {
        if sentences.is_empty() {
            return Err(EvalError::Invalid("a batch needs at least one sentence".into()));
        }
        let enc = self
            .tokenizer
            .encode_batch(sentences.to_vec(), true)
            .map_err(|e| EvalError::Tokenizer(format!("encoding {} sentences: {e}", sentences.len())))?;
        let len = enc.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(len * enc.len());
        let mut mask = Vec::with_capacity(len * enc.len());
        for e in &enc {
            ids.extend_from_slice(e.get_ids());
            mask.extend(e.get_attention_mask().iter().map(|&m| u8::from(m != 0)));
        }
        Ok(Batch { ids, mask, count: enc.len(), len })
    }

    /// `sentences` in batches of `size`, in order.
    ///
    /// # Errors
    /// As [`TextEncoder::batch`], and [`EvalError::Invalid`] for a size of 0.
    pub fn batches(&self, sentences: &[String], size: usize) -> Result<Vec<Batch>, EvalError> {
        if size == 0 {
            return Err(EvalError::Invalid("the batch size must be at least 1".into()));
        }
        sentences.chunks(size).map(|c| self.batch(c)).collect()
    }
}

/// Which sentences of a file a step uses: every fourth line (the first, fifth, ...) calibrates,
/// the other three of every four evaluate, so that the two never share a sentence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Lines `0, 4, 8, ...` (0-based): calibration (observers, importance matrices).
    Calibration,
    /// The other lines: evaluation.
    Evaluation,
    /// Every line.
    All,
}

impl Split {
    /// Whether line `i` (0-based) belongs to the split.
    #[must_use]
    pub fn holds(self, i: usize) -> bool {
        match self {
            Split::Calibration => i.is_multiple_of(4),
            Split::Evaluation => !i.is_multiple_of(4),
            Split::All => true,
        }
    }
}

/// The non-empty lines of a sentence file (one sentence a line, trimmed) that `split` holds,
/// counting lines among the non-empty ones.
///
/// # Errors
/// [`EvalError::File`] when the file cannot be read or holds no sentence of the split.
pub fn read_sentences(path: &Path, split: Split) -> Result<Vec<String>, EvalError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EvalError::File { path: path.to_path_buf(), what: format!("cannot read: {e}") })?;
    let all: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    let chosen: Vec<String> = all.into_iter().enumerate().filter(|(i, _)| split.holds(*i)).map(|(_, s)| s).collect();
    if chosen.is_empty() {
        return Err(EvalError::File { path: path.to_path_buf(), what: format!("holds no sentence for {split:?}") });
    }
    Ok(chosen)
}
