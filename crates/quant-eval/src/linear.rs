//! The linear layers `y = x · Wᵀ + b` of the encoder, behind one trait, in each precision
//! `quant eval` compares.
//!
//! | implementation | weights | activations | product |
//! |---|---|---|---|
//! | [`F32Linear`] | `f32` | `f32` | `f32` sums in a fixed order: the reference |
//! | [`DynamicInt8`] | `i8` per output channel, symmetric (`max\|w\| / 127`) | per row, from each row's own range at run time: `u8` asymmetric or `i8` symmetric ([`RowScheme`]) | [`Gemm`] on the codes in exact `i32`, then `f32(acc − z[row] · Σw[col]) · (s_x[row] · s_w[col]) + b`, the subtraction exact in `i32`, the rest in `f32` |
//! | [`StaticInt8`] | as [`DynamicInt8`] | `u8` with one scale and zero point fixed beforehand by an observer (values outside saturate) | [`Gemm::f32`] |
//! | [`Grouped`] | any [`GroupWeights`] (llama.cpp's block formats, our two-level formats) | `i8` per group (per super-block of two-level weights) on the fly, or `f32` | [`GroupGemm`] |
//!
//! [`DynamicInt8`] with [`RowScheme::Asymmetric`] is ONNX Runtime's `quantize_dynamic` recipe
//! (`QInt8` weights per channel, `u8` activations) with one change: the activation range is per
//! row (per token) instead of per tensor, which costs one scale and zero point a row and keeps
//! an outlier token from coarsening every other token's codes. The zero point is taken off after
//! the product (`z · Σw`, one multiply-add a value) rather than inside the engine, whose
//! per-row correction costs more at these shapes. [`RowScheme::Symmetric`] drops the zero
//! point: one bit less resolution on a one-sided row (GELU's outputs).

use quant_core::{quantize_into, QuantParams, QuantSpec};
use quant_matmul::{
    ActivationBlocks, Gemm, GroupGemm, GroupWeights, MatMut, MatRef, Operands, PackedB, Scale, ZeroPoint,
};
use rayon::prelude::*;

use crate::EvalError;

/// One linear layer: `y = x · Wᵀ + b` for `rows` rows of `x` (`rows x k`, row-major) into `y`
/// (`rows x n`).
pub trait Linear: Send + Sync {
    /// `(n, k)`: outputs and inputs.
    fn shape(&self) -> (usize, usize);

    /// Computes `y = x · Wᵀ + b`.
    ///
    /// # Errors
    /// [`EvalError::Quant`] naming the layer when the product refuses its operands (a NaN
    /// activation, for one); [`EvalError::Invalid`] when `x` or `y` has the wrong length.
    fn forward(&self, x: &[f32], rows: usize, y: &mut [f32]) -> Result<(), EvalError>;

    /// Bytes the weights take as stored in a model file (codes and scales; the bias is not
    /// counted): what bits per weight are measured from.
    fn stored_bytes(&self) -> usize;
}

/// Makes a layer from its weights: how [`crate::Encoder::load`] is told the precision.
pub type MakeLinear<'a> = dyn FnMut(&LinearWeights<'_>) -> Result<Box<dyn Linear>, EvalError> + 'a;

/// A linear layer's `f32` weights as the model file holds them.
#[derive(Clone, Copy, Debug)]
pub struct LinearWeights<'a> {
    /// The weight's tensor name (`encoder.layer.0.attention.self.query.weight`).
    pub name: &'a str,
    /// Outputs (rows of `W`).
    pub n: usize,
    /// Inputs (columns of `W`).
    pub k: usize,
    /// `W`, `n x k`, row-major.
    pub weight: &'a [f32],
    /// `b`, `n` values.
    pub bias: &'a [f32],
}

fn check_lengths(name: &str, n: usize, k: usize, x: &[f32], rows: usize, y: &[f32]) -> Result<(), EvalError> {
    if x.len() != rows * k || y.len() != rows * n {
        return Err(EvalError::Invalid(format!(
            "{name}: {rows} rows need {} inputs and {} outputs, got {} and {}",
            rows * k,
            rows * n,
            x.len(),
            y.len()
        )));
    }
    Ok(())
}

/// The `f32` reference: each output is `b[j]` plus the dot product of the row with `W`'s row
/// `j`, summed in sixteen interleaved partial sums (element `i` to sum `i mod 16`), then the
/// sixteen added in order: a fixed order on every CPU, so its results repeat exactly.
pub struct F32Linear {
    n: usize,
    k: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
    name: String,
}

impl F32Linear {
    /// The layer with `w`'s weights, copied.
    #[must_use]
    pub fn new(w: &LinearWeights<'_>) -> Self {
        F32Linear { n: w.n, k: w.k, weight: w.weight.to_vec(), bias: w.bias.to_vec(), name: w.name.to_string() }
    }
}

crate::simd::multiversion! {
    /// `y` rows = `x` rows · `Wᵀ` + `b` (see [`F32Linear`]).
    fn f32_rows(x: &[f32], w: &[f32], b: &[f32], k: usize, y: &mut [f32]) {
        let n = b.len();
        for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)) {
            for ((o, wr), bias) in yr.iter_mut().zip(w.chunks_exact(k)).zip(b) {
                *o = bias + crate::math::dot::<16>(xr, wr);
            }
        }
    }
}

impl Linear for F32Linear {
    fn shape(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    fn forward(&self, x: &[f32], rows: usize, y: &mut [f32]) -> Result<(), EvalError> {
        let (n, k) = (self.n, self.k);
        check_lengths(&self.name, n, k, x, rows, y)?;
        // Blocks of rows to the threads; each block's arithmetic is the same whoever runs it.
        const ROWS: usize = 4;
        y.par_chunks_mut(ROWS * n)
            .zip(x.par_chunks(ROWS * k))
            .for_each(|(yb, xb)| f32_rows(xb, &self.weight, &self.bias, k, yb));
        Ok(())
    }

    fn stored_bytes(&self) -> usize {
        self.n * self.k * 4
    }
}

/// `W` as `i8` codes per output channel, symmetric, packed once for [`Gemm`] as `Wᵀ`
/// (`k x n`), with the channels' scales.
struct Int8Weights {
    n: usize,
    k: usize,
    packed: PackedB,
    /// Per output channel, the sum of its codes: the zero-point term `z · Σ w` of a row.
    sums: Vec<i32>,
    scales: Vec<f32>,
    bias: Vec<f32>,
    name: String,
}

impl Int8Weights {
    fn new(w: &LinearWeights<'_>) -> Result<Self, EvalError> {
        let spec = QuantSpec::symmetric(8).map_err(|e| EvalError::quant(w.name, e))?;
        let (n, k) = (w.n, w.k);
        let mut codes = vec![0i8; n * k];
        let mut scales = Vec::with_capacity(n);
        for (row, out) in w.weight.chunks_exact(k).zip(codes.chunks_exact_mut(k)) {
            let p = QuantParams::<f32>::from_tensor(spec, row).map_err(|e| EvalError::quant(w.name, e))?;
            quantize_into(row, spec, &p, out).map_err(|e| EvalError::quant(w.name, e))?;
            scales.push(p.scale());
        }
        // Wᵀ: k rows of n codes.
        let mut t = vec![0i8; n * k];
        for j in 0..n {
            for c in 0..k {
                t[c * n + j] = codes[j * k + c];
            }
        }
        let quant = |e| EvalError::quant(w.name, e);
        let packed = Gemm::new().pack_b(MatRef::row_major(&t, k, n).map_err(quant)?).map_err(quant)?;
        let sums = codes.chunks_exact(k).map(|r| r.iter().map(|&c| i32::from(c)).sum()).collect();
        Ok(Int8Weights { n, k, packed, sums, scales, bias: w.bias.to_vec(), name: w.name.to_string() })
    }

    fn stored_bytes(&self) -> usize {
        self.n * self.k + 4 * self.n
    }
}

/// How [`DynamicInt8`] quantizes each row of activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowScheme {
    /// `u8` codes, `scale = (max − min) / 255` and a zero point per row (ONNX Runtime's
    /// `DynamicQuantizeLinear`, per row instead of per tensor).
    Asymmetric,
    /// `i8` codes, `scale = max|x| / 127`, zero point 0: one bit less for a one-sided row, and
    /// no zero-point term in the product.
    Symmetric,
}

/// W8A8 with activations quantized per row at run time (see the [module docs](self)).
pub struct DynamicInt8 {
    w: Int8Weights,
    scheme: RowScheme,
    /// The activation codes (`u8` or `i8`) and the integer sums of the last call, kept so that
    /// a call allocates nothing once the largest batch has been seen.
    scratch: std::sync::Mutex<Scratch>,
}

#[derive(Default)]
struct Scratch {
    unsigned: Vec<u8>,
    signed: Vec<i8>,
    acc: Vec<i32>,
    zeros: Vec<i32>,
    scales: Vec<f32>,
}

impl DynamicInt8 {
    /// The layer with `w`'s weights quantized to `i8` per output channel, its inputs per row
    /// under `scheme`.
    ///
    /// # Errors
    /// [`EvalError::Quant`] for a weight that is not finite.
    pub fn new(w: &LinearWeights<'_>, scheme: RowScheme) -> Result<Self, EvalError> {
        Ok(DynamicInt8 { w: Int8Weights::new(w)?, scheme, scratch: std::sync::Mutex::default() })
    }
}

/// Rows a task quantizes or rescales (the threads take blocks of them).
const ROW_BLOCK: usize = 16;

/// Quantizes each `k`-long row of `x` into `codes` under `spec` with the parameters
/// `QuantParams::from_tensor` gives for it (its range found by [`row_range`]; a NaN is left to
/// `quantize_into`, which names it), recording each row's scale and zero point; blocks of rows
/// on the threads.
fn quantize_rows<Q: quant_core::Storage + Send>(
    x: &[f32],
    k: usize,
    spec: QuantSpec,
    codes: &mut [Q],
    scales: &mut [f32],
    zeros: &mut [i32],
) -> Result<(), quant_core::QuantError> {
    x.par_chunks(ROW_BLOCK * k)
        .zip(codes.par_chunks_mut(ROW_BLOCK * k))
        .zip(scales.par_chunks_mut(ROW_BLOCK).zip(zeros.par_chunks_mut(ROW_BLOCK)))
        .try_for_each(|((x, codes), (scales, zeros))| {
            for (((row, out), s), z) in x.chunks_exact(k).zip(codes.chunks_exact_mut(k)).zip(scales).zip(zeros) {
                let (lo, hi) = row_range(row);
                let p = QuantParams::<f32>::from_range(spec, f64::from(lo), f64::from(hi))?;
                quantize_into(row, spec, &p, out)?;
                *s = p.scale();
                *z = i32::try_from(p.zero_point()).unwrap_or(0); // 0..=255 by the spec
            }
            Ok(())
        })
}

/// `out = q · Wᵀ` in exact `i32`, `q` the rows of `x` quantized into `codes` (resized to hold
/// them) by [`quantize_rows`]. The codes go in as they are, no zero point in the engine: each
/// row's `z · Σw` is taken off in the rescale, where it costs one multiply-add a value instead
/// of a correction per tile.
#[allow(clippy::too_many_arguments)]
fn row_product<Q: quant_core::Storage + quant_matmul::Operand + Default + Send>(
    x: &[f32],
    k: usize,
    spec: QuantSpec,
    codes: &mut Vec<Q>,
    scales: &mut [f32],
    zeros: &mut [i32],
    packed: &PackedB,
    out: MatMut<'_, i32>,
) -> Result<(), quant_core::QuantError> {
    let rows = scales.len();
    codes.resize(rows * k, Q::default());
    quantize_rows(x, k, spec, codes, scales, zeros)?;
    let a = MatRef::row_major(codes, rows, k)?;
    Gemm::new().i32(&Operands::packed(a, ZeroPoint::None, packed, ZeroPoint::None)?, out)
}

/// The smallest and largest value of `row`, NaN skipped; `(0, 0)` when it holds no number.
fn row_range(row: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2() {
        // SAFETY: AVX2 detected.
        return unsafe { crate::arch::x86_64::row_range_avx2(row) };
    }
    let (lo, hi) = row.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    if lo <= hi {
        (lo, hi)
    } else {
        (0.0, 0.0)
    }
}

crate::simd::multiversion! {
    /// One row's outputs: `f32(acc − z · Σw[j]) · (sx · sw[j]) + b[j]`, the integer part exact
    /// (`|z · Σw| <= 255 · 127 · k`, which fits `i32` for `k` below 66 000), the rest in `f32`.
    fn rescale(acc: &[i32], z: i32, sums: &[i32], sx: f32, sw: &[f32], b: &[f32], y: &mut [f32]) {
        for ((((o, a), ws), s), b) in y.iter_mut().zip(acc).zip(sums).zip(sw).zip(b) {
            #[allow(clippy::cast_precision_loss, clippy::as_conversions)]
            let a = a.wrapping_sub(z.wrapping_mul(*ws)) as f32; // exact below 2^24, else nearest
            *o = a * (sx * s) + b;
        }
    }
}

impl Linear for DynamicInt8 {
    fn shape(&self) -> (usize, usize) {
        (self.w.n, self.w.k)
    }

    fn forward(&self, x: &[f32], rows: usize, y: &mut [f32]) -> Result<(), EvalError> {
        let w = &self.w;
        let (n, k) = (w.n, w.k);
        check_lengths(&w.name, n, k, x, rows, y)?;
        let quant = |e| EvalError::quant(&w.name, e);
        let mut guard = self.scratch.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = &mut *guard;
        s.acc.resize(rows * n, 0);
        s.scales.resize(rows, 0.0);
        s.zeros.resize(rows, 0);
        let out = MatMut::row_major(&mut s.acc, rows, n).map_err(quant)?;
        let (scales, zeros) = (&mut s.scales[..], &mut s.zeros[..]);
        match self.scheme {
            RowScheme::Asymmetric => {
                let spec = QuantSpec::asymmetric(8).map_err(quant)?;
                row_product(x, k, spec, &mut s.unsigned, scales, zeros, &w.packed, out)
            }
            RowScheme::Symmetric => {
                let spec = QuantSpec::symmetric(8).map_err(quant)?;
                row_product(x, k, spec, &mut s.signed, scales, zeros, &w.packed, out)
            }
        }
        .map_err(quant)?;
        y.par_chunks_mut(ROW_BLOCK * n)
            .zip(s.acc.par_chunks(ROW_BLOCK * n))
            .zip(s.scales.par_chunks(ROW_BLOCK).zip(s.zeros.par_chunks(ROW_BLOCK)))
            .for_each(|((y, acc), (scales, zeros))| {
                let rows = y.chunks_exact_mut(n).zip(acc.chunks_exact(n)).zip(scales).zip(zeros);
                for (((yr, ar), sx), z) in rows {
                    rescale(ar, *z, &w.sums, *sx, &w.scales, &w.bias, yr);
                }
            });
        Ok(())
    }

    fn stored_bytes(&self) -> usize {
        self.w.stored_bytes()
    }
}

/// W8A8 with the activations' scale and zero point fixed beforehand (one per layer input).
pub struct StaticInt8 {
    w: Int8Weights,
    act: QuantParams<f32>,
}

impl StaticInt8 {
    /// The layer with `w`'s weights quantized to `i8` per output channel, and its inputs
    /// quantized with `act` (asymmetric 8-bit parameters, from an observer).
    ///
    /// # Errors
    /// [`EvalError::Quant`] for a weight that is not finite.
    pub fn new(w: &LinearWeights<'_>, act: QuantParams<f32>) -> Result<Self, EvalError> {
        Ok(StaticInt8 { w: Int8Weights::new(w)?, act })
    }
}

impl Linear for StaticInt8 {
    fn shape(&self) -> (usize, usize) {
        (self.w.n, self.w.k)
    }

    fn forward(&self, x: &[f32], rows: usize, y: &mut [f32]) -> Result<(), EvalError> {
        let w = &self.w;
        let (n, k) = (w.n, w.k);
        check_lengths(&w.name, n, k, x, rows, y)?;
        let quant = |e| EvalError::quant(&w.name, e);
        let spec = QuantSpec::asymmetric(8).map_err(quant)?;
        let mut codes = vec![0u8; rows * k];
        quantize_into(x, spec, &self.act, &mut codes).map_err(quant)?;
        let zero = i32::try_from(self.act.zero_point()).unwrap_or(0); // 0..=255 by the spec
        let ops = Operands::packed(
            MatRef::row_major(&codes, rows, k).map_err(quant)?,
            ZeroPoint::PerTensor(zero),
            &w.packed,
            ZeroPoint::None,
        )
        .map_err(quant)?;
        Gemm::new()
            .f32(
                &ops,
                self.act.scale(),
                Scale::PerColumn(&w.scales),
                Some(&w.bias),
                MatMut::row_major(y, rows, n).map_err(quant)?,
            )
            .map_err(quant)
    }

    fn stored_bytes(&self) -> usize {
        self.w.stored_bytes()
    }
}

/// How [`Grouped`] treats the activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivationMode {
    /// Quantized to `i8` on the fly ([`GroupGemm::int8_activations`]) in the blocks given:
    /// per super-block of two-level weights (as llama.cpp), or always per group.
    Int8(ActivationBlocks),
    /// Kept in `f32` ([`GroupGemm::float_activations`]).
    Float,
}

/// Weight-only quantization: group-quantized weights through [`GroupGemm`].
pub struct Grouped {
    weights: GroupWeights,
    bias: Vec<f32>,
    mode: ActivationMode,
    stored: usize,
    name: String,
}

impl Grouped {
    /// The layer of `w`'s bias and `weights` (`n x k`, as `w`), stored in `stored` bytes in
    /// its file format, multiplied in `mode`.
    ///
    /// # Errors
    /// [`EvalError::Tensor`] when `weights` is not `w`'s shape.
    pub fn new(
        w: &LinearWeights<'_>,
        weights: GroupWeights,
        stored: usize,
        mode: ActivationMode,
    ) -> Result<Self, EvalError> {
        if (weights.n(), weights.k()) != (w.n, w.k) {
            return Err(EvalError::Tensor {
                name: w.name.to_string(),
                what: format!("quantized as {} x {}, the layer is {} x {}", weights.n(), weights.k(), w.n, w.k),
            });
        }
        Ok(Grouped { weights, bias: w.bias.to_vec(), mode, stored, name: w.name.to_string() })
    }
}

impl Linear for Grouped {
    fn shape(&self) -> (usize, usize) {
        (self.weights.n(), self.weights.k())
    }

    fn forward(&self, x: &[f32], rows: usize, y: &mut [f32]) -> Result<(), EvalError> {
        let (n, k) = self.shape();
        check_lengths(&self.name, n, k, x, rows, y)?;
        let quant = |e| EvalError::quant(&self.name, e);
        let x = MatRef::row_major(x, rows, k).map_err(quant)?;
        let y = MatMut::row_major(y, rows, n).map_err(quant)?;
        let g = GroupGemm::new();
        match self.mode {
            ActivationMode::Int8(blocks) => {
                g.activation_blocks(blocks).int8_activations(x, &self.weights, Some(&self.bias), y)
            }
            ActivationMode::Float => g.float_activations(x, &self.weights, Some(&self.bias), y),
        }
        .map_err(quant)
    }

    fn stored_bytes(&self) -> usize {
        self.stored
    }
}
