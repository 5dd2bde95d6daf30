//! The BERT encoder in `f32`: embeddings, self-attention, GELU feed-forward, LayerNorm, mean
//! pooling and L2 normalization, as sentence-transformers runs all-MiniLM-L6-v2.
//!
//! * Embeddings: word + position + token type 0, then LayerNorm.
//! * Each layer: `q, k, v` projections; per head `softmax(q·kᵀ / √d + mask) · v`, the mask
//!   `-inf` on padding keys; the output projection; `LayerNorm(x + attention)`; then
//!   `LayerNorm(x + W₂ · gelu(W₁ · x))` with the exact GELU `x/2 · (1 + erf(x/√2))`
//!   ([`math::gelu`], within `4·10⁻⁷` of it).
//! * LayerNorm: `(x − mean) / √(var + ε) · γ + β`, the biased variance, `ε` from the config.
//! * Pooling: the mean of the non-padding tokens' last hidden states, divided by its
//!   Euclidean norm (at least `1e-12`).
//!
//! The linear layers are [`Linear`]s made by the caller, one per weight ([`Encoder::load`]),
//! so the same encoder runs in every precision. Everything else is `f32`, in a fixed order
//! of operations; only the pooled mean and its norm are accumulated in `f64`.

use std::path::Path;

use quant_io::safetensors::SafetensorsFile;
use rayon::prelude::*;

use crate::linear::{Linear, LinearWeights, MakeLinear};
use crate::math;
use crate::text::Batch;
use crate::EvalError;

/// The parts of a BERT `config.json` the encoder needs.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    /// Width of the hidden states.
    pub hidden: usize,
    /// Layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate: usize,
    /// Positions the position embeddings cover.
    pub max_positions: usize,
    /// LayerNorm's `ε`.
    pub eps: f32,
}

impl BertConfig {
    /// Reads `config.json`.
    ///
    /// # Errors
    /// [`EvalError::File`] when it cannot be read or parsed; [`EvalError::Config`] naming a
    /// missing key, an activation other than `gelu`, or a head count that does not divide the
    /// width.
    pub fn load(path: &Path) -> Result<Self, EvalError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| EvalError::File { path: path.to_path_buf(), what: format!("cannot read: {e}") })?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| EvalError::File { path: path.to_path_buf(), what: format!("not JSON: {e}") })?;
        let bad = |what: String| EvalError::Config { path: path.to_path_buf(), what };
        let int = |key: &str| {
            v[key]
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| bad(format!("{key:?} is missing or not a positive integer")))
        };
        let act = v["hidden_act"].as_str().unwrap_or("gelu");
        if act != "gelu" {
            return Err(bad(format!("hidden_act {act:?}: only \"gelu\" (the exact, erf form) is run")));
        }
        if let Some(t) = v["position_embedding_type"].as_str() {
            if t != "absolute" {
                return Err(bad(format!("position_embedding_type {t:?}: only \"absolute\" is run")));
            }
        }
        #[allow(clippy::cast_possible_truncation, clippy::as_conversions)]
        let eps = v["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32;
        let c = BertConfig {
            hidden: int("hidden_size")?,
            layers: int("num_hidden_layers")?,
            heads: int("num_attention_heads")?,
            intermediate: int("intermediate_size")?,
            max_positions: int("max_position_embeddings")?,
            eps,
        };
        if !c.hidden.is_multiple_of(c.heads) {
            return Err(bad(format!("{} heads do not divide hidden_size {}", c.heads, c.hidden)));
        }
        Ok(c)
    }
}

/// LayerNorm's `γ` and `β`.
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// One encoder layer.
struct Layer {
    query: Box<dyn Linear>,
    key: Box<dyn Linear>,
    value: Box<dyn Linear>,
    attn_out: Box<dyn Linear>,
    attn_norm: Norm,
    inter: Box<dyn Linear>,
    out: Box<dyn Linear>,
    out_norm: Norm,
    names: [String; 6],
}

/// Called with each linear layer's input during a forward pass: the weight's tensor name,
/// the rows (`rows x k`, row-major) and the row count. Calibration and importance matrices
/// are gathered through it.
pub type Inspect<'a> = &'a mut dyn FnMut(&str, &[f32], usize);

/// A loaded encoder (see the [module docs](self)).
pub struct Encoder {
    config: BertConfig,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    /// A pool of one thread, made on first use: batches of fewer than [`SMALL_ROWS`] tokens
    /// run there, where handing each small step to a second thread costs more than it saves.
    single: std::sync::OnceLock<Option<rayon::ThreadPool>>,
}

/// Tokens below which a batch runs on one thread.
const SMALL_ROWS: usize = 64;

/// Reads `name` as `f32` with `shape`.
fn tensor(file: &SafetensorsFile, name: &str, shape: &[usize]) -> Result<Vec<f32>, EvalError> {
    let entry = file.entries().into_iter().find(|e| e.name == name).ok_or_else(|| EvalError::Tensor {
        name: name.to_string(),
        what: format!("missing from {}", file.path().display()),
    })?;
    if entry.shape != shape {
        return Err(EvalError::Tensor {
            name: name.to_string(),
            what: format!("shape {:?}, the config asks for {shape:?}", entry.shape),
        });
    }
    if !entry.is_float() {
        return Err(EvalError::Tensor {
            name: name.to_string(),
            what: format!("dtype {:?} is not a float", entry.dtype),
        });
    }
    Ok(file.floats(&entry)?.into_f32())
}

impl Encoder {
    /// Loads `dir/config.json` and `dir/model.safetensors`, making each linear layer with
    /// `make` from its `f32` weights (in file order of layers: query, key, value, attention
    /// output, intermediate, output).
    ///
    /// # Errors
    /// [`EvalError::File`], [`EvalError::Config`], [`EvalError::Io`] for the files;
    /// [`EvalError::Tensor`] naming a missing or misshapen tensor; whatever `make` returns.
    pub fn load(dir: &Path, make: &mut MakeLinear<'_>) -> Result<Self, EvalError> {
        let config = BertConfig::load(&dir.join("config.json"))?;
        let path = dir.join("model.safetensors");
        if !path.exists() {
            return Err(EvalError::File {
                path,
                what: "missing: the model directory holds no model.safetensors".into(),
            });
        }
        let file = SafetensorsFile::open(&path)?;
        let h = config.hidden;
        let vocab = file
            .entries()
            .into_iter()
            .find(|e| e.name == "embeddings.word_embeddings.weight")
            .map(|e| e.shape.first().copied().unwrap_or(0))
            .ok_or_else(|| EvalError::Tensor {
                name: "embeddings.word_embeddings.weight".into(),
                what: format!("missing from {}", path.display()),
            })?;
        let norm = |prefix: &str| -> Result<Norm, EvalError> {
            Ok(Norm {
                gamma: tensor(&file, &format!("{prefix}.LayerNorm.weight"), &[h])?,
                beta: tensor(&file, &format!("{prefix}.LayerNorm.bias"), &[h])?,
            })
        };
        let word = tensor(&file, "embeddings.word_embeddings.weight", &[vocab, h])?;
        let position = tensor(&file, "embeddings.position_embeddings.weight", &[config.max_positions, h])?;
        let token_type = tensor(&file, "embeddings.token_type_embeddings.weight", &[2, h])?;
        let embed_norm = norm("embeddings")?;
        let mut linear = |name: String, n: usize, k: usize| -> Result<(Box<dyn Linear>, String), EvalError> {
            let weight = tensor(&file, &name, &[n, k])?;
            let bias_name = name.strip_suffix(".weight").map(|s| format!("{s}.bias")).unwrap_or_default();
            let bias = tensor(&file, &bias_name, &[n])?;
            let l = make(&LinearWeights { name: &name, n, k, weight: &weight, bias: &bias })?;
            if l.shape() != (n, k) {
                return Err(EvalError::Tensor {
                    name,
                    what: format!("the layer made is {:?}, the weight {n} x {k}", l.shape()),
                });
            }
            Ok((l, name))
        };
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let p = format!("encoder.layer.{i}");
            let (query, n0) = linear(format!("{p}.attention.self.query.weight"), h, h)?;
            let (key, n1) = linear(format!("{p}.attention.self.key.weight"), h, h)?;
            let (value, n2) = linear(format!("{p}.attention.self.value.weight"), h, h)?;
            let (attn_out, n3) = linear(format!("{p}.attention.output.dense.weight"), h, h)?;
            let (inter, n4) = linear(format!("{p}.intermediate.dense.weight"), config.intermediate, h)?;
            let (out, n5) = linear(format!("{p}.output.dense.weight"), h, config.intermediate)?;
            layers.push(Layer {
                query,
                key,
                value,
                attn_out,
                inter,
                out,
                attn_norm: norm(&format!("{p}.attention.output"))?,
                out_norm: norm(&format!("{p}.output"))?,
                names: [n0, n1, n2, n3, n4, n5],
            });
        }
        Ok(Encoder { config, word, position, token_type, embed_norm, layers, single: std::sync::OnceLock::new() })
    }

    /// The model's configuration.
    #[must_use]
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The linear layers: their weight names and stored bytes, and their weight count.
    #[must_use]
    pub fn linear_layers(&self) -> Vec<(String, usize, usize)> {
        let mut v = Vec::new();
        for l in &self.layers {
            let ls: [&dyn Linear; 6] = [&*l.query, &*l.key, &*l.value, &*l.attn_out, &*l.inter, &*l.out];
            for (lin, name) in ls.iter().zip(&l.names) {
                let (n, k) = lin.shape();
                v.push((name.clone(), lin.stored_bytes(), n * k));
            }
        }
        v
    }

    /// The sentence embeddings of `batch` (`batch.count x hidden`, row-major, unit length),
    /// calling `inspect` with each linear layer's input.
    ///
    /// # Errors
    /// [`EvalError::Invalid`] for a token id outside the vocabulary or a sequence longer
    /// than the position embeddings; whatever a linear layer returns.
    pub fn embed(&self, batch: &Batch, inspect: Option<Inspect<'_>>) -> Result<Vec<f32>, EvalError> {
        // (An inspector, which need not be `Send`, keeps the batch on the calling pool.)
        if inspect.is_none() && batch.len * batch.count < SMALL_ROWS && rayon::current_num_threads() > 1 {
            let single = self.single.get_or_init(|| rayon::ThreadPoolBuilder::new().num_threads(1).build().ok());
            if let Some(pool) = single {
                return pool.install(|| self.embed_here(batch, None));
            }
        }
        self.embed_here(batch, inspect)
    }

    /// [`Encoder::embed`] on the current pool.
    fn embed_here(&self, batch: &Batch, mut inspect: Option<Inspect<'_>>) -> Result<Vec<f32>, EvalError> {
        let c = &self.config;
        let (h, len, count) = (c.hidden, batch.len, batch.count);
        let rows = len * count;
        if len > c.max_positions {
            return Err(EvalError::Invalid(format!(
                "a sequence of {len} tokens is longer than the model's {} positions",
                c.max_positions
            )));
        }
        let vocab = self.word.len() / h;
        let mut x = vec![0f32; rows * h];
        for (r, xr) in x.chunks_exact_mut(h).enumerate() {
            let id = usize::try_from(batch.ids[r]).unwrap_or(usize::MAX);
            if id >= vocab {
                return Err(EvalError::Invalid(format!("token id {id} is outside the vocabulary of {vocab}")));
            }
            let pos = r % len;
            let (w, p) = (&self.word[id * h..(id + 1) * h], &self.position[pos * h..(pos + 1) * h]);
            for (i, v) in xr.iter_mut().enumerate() {
                *v = w[i] + p[i] + self.token_type[i];
            }
        }
        layer_norm(&mut x, &self.embed_norm, c.eps);
        let mut q = vec![0f32; rows * h];
        let mut k = vec![0f32; rows * h];
        let mut v = vec![0f32; rows * h];
        let mut ctx = vec![0f32; rows * h];
        let mut t = vec![0f32; rows * h];
        let mut wide = vec![0f32; rows * c.intermediate];
        for l in &self.layers {
            if let Some(f) = inspect.as_mut() {
                for name in &l.names[..3] {
                    f(name, &x, rows);
                }
            }
            l.query.forward(&x, rows, &mut q)?;
            l.key.forward(&x, rows, &mut k)?;
            l.value.forward(&x, rows, &mut v)?;
            attention(&q, &k, &v, &batch.mask, len, c.heads, h, &mut ctx);
            if let Some(f) = inspect.as_mut() {
                f(&l.names[3], &ctx, rows);
            }
            l.attn_out.forward(&ctx, rows, &mut t)?;
            add_into(&mut x, &t);
            layer_norm(&mut x, &l.attn_norm, c.eps);
            if let Some(f) = inspect.as_mut() {
                f(&l.names[4], &x, rows);
            }
            l.inter.forward(&x, rows, &mut wide)?;
            wide.par_chunks_mut(4096).for_each(math::gelu_in_place);
            if let Some(f) = inspect.as_mut() {
                f(&l.names[5], &wide, rows);
            }
            l.out.forward(&wide, rows, &mut t)?;
            add_into(&mut x, &t);
            layer_norm(&mut x, &l.out_norm, c.eps);
        }
        Ok(pool(&x, &batch.mask, count, len, h))
    }
}

/// `x += t`.
fn add_into(x: &mut [f32], t: &[f32]) {
    for (a, b) in x.iter_mut().zip(t) {
        *a += b;
    }
}

/// The sum of `f(v_i)` in eight interleaved partial sums (element `i` to sum `i mod 8`), added
/// in order at the end: a fixed order, which the compiler keeps in vector lanes (eight elements
/// a step, then the rest).
#[inline(always)]
fn sum8(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x);
        }
    }
    for (a, &x) in acc.iter_mut().zip(rest) {
        *a += f(x);
    }
    acc.iter().sum()
}

/// LayerNorm of every row of `x` in place (see the [module docs](self)).
fn layer_norm(x: &mut [f32], norm: &Norm, eps: f32) {
    let h = norm.gamma.len();
    x.par_chunks_mut(h).for_each(|row| norm_row(row, &norm.gamma, &norm.beta, eps));
}

crate::simd::multiversion! {
    /// LayerNorm of one row: the mean, then the mean squared deviation, each summed as
    /// [`sum8`] does.
    fn norm_row(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        #[allow(clippy::cast_precision_loss, clippy::as_conversions)]
        let n = row.len() as f32;
        let mean = sum8(row, |v| v) / n;
        let var = sum8(row, |v| (v - mean) * (v - mean)) / n;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

/// Self-attention of every sequence and head: `ctx = softmax(q·kᵀ/√d + mask) · v`, with the
/// padding keys (`mask` 0) left out; the exponentials by [`math::exp`].
#[allow(clippy::too_many_arguments)]
fn attention(q: &[f32], k: &[f32], v: &[f32], mask: &[u8], len: usize, heads: usize, h: usize, ctx: &mut [f32]) {
    ctx.par_chunks_mut(len * h).enumerate().for_each(|(b, out)| {
        let rows = b * len * h..(b + 1) * len * h;
        attend(&q[rows.clone()], &k[rows.clone()], &v[rows], &mask[b * len..(b + 1) * len], heads, out);
    });
}

crate::simd::multiversion! {
    /// [`attention`] of one sequence (`len x h` rows of `q`, `k`, `v`; `keep` its mask).
    fn attend(q: &[f32], k: &[f32], v: &[f32], keep: &[u8], heads: usize, out: &mut [f32]) {
        let len = keep.len();
        let h = q.len() / len.max(1);
        let d = h / heads;
        #[allow(clippy::cast_precision_loss, clippy::as_conversions)]
        let scale = 1.0 / (d as f32).sqrt();
        let mut p = vec![0f32; len];
        for head in 0..heads {
            let off = head * d;
            for i in 0..len {
                let qi = &q[i * h + off..i * h + off + d];
                let mut max = f32::NEG_INFINITY;
                for (j, pj) in p.iter_mut().enumerate() {
                    *pj = crate::math::dot::<8>(qi, &k[j * h + off..j * h + off + d]) * scale;
                    if keep[j] != 0 {
                        max = max.max(*pj);
                    }
                }
                for (pj, &m) in p.iter_mut().zip(keep) {
                    *pj = if m != 0 { math::exp(*pj - max) } else { 0.0 };
                }
                let inv = 1.0 / sum8(&p, |v| v);
                // `o_c = Σ_j w_j · v_jc` in `j` order, sixteen columns at a time in a local
                // sum (in registers, not stored and reloaded for every key).
                let o = &mut out[i * h + off..i * h + off + d];
                for (c, o) in (off..off + d).step_by(16).zip(o.chunks_mut(16)) {
                    let mut acc = [0f32; 16];
                    for (j, &pj) in p.iter().enumerate() {
                        if pj == 0.0 {
                            continue;
                        }
                        let w = pj * inv;
                        let row = &v[j * h + c..j * h + c + o.len()];
                        // The same sum twice: as a 16-element array the loop has a length the
                        // compiler knows, and runs in vector registers (12 to 16 % faster).
                        if let Some(row) = row.first_chunk::<16>() {
                            for (a, b) in acc.iter_mut().zip(row) {
                                *a += w * b;
                            }
                        } else {
                            for (a, b) in acc.iter_mut().zip(row) {
                                *a += w * b;
                            }
                        }
                    }
                    o.copy_from_slice(&acc[..o.len()]);
                }
            }
        }
    }
}

/// Mean pooling over the non-padding tokens, then L2 normalization.
fn pool(x: &[f32], mask: &[u8], count: usize, len: usize, h: usize) -> Vec<f32> {
    let mut out = vec![0f32; count * h];
    for (b, o) in out.chunks_exact_mut(h).enumerate() {
        let mut sum = vec![0f64; h];
        let mut n = 0u32;
        for t in 0..len {
            if mask[b * len + t] == 0 {
                continue;
            }
            n += 1;
            for (s, v) in sum.iter_mut().zip(&x[(b * len + t) * h..(b * len + t + 1) * h]) {
                *s += f64::from(*v);
            }
        }
        let n = f64::from(n.max(1));
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        for (dst, v) in o.iter_mut().zip(&mean) {
            #[allow(clippy::cast_possible_truncation, clippy::as_conversions)]
            {
                *dst = (v / norm) as f32;
            }
        }
    }
    out
}
