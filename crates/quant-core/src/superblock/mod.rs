//! Two-level weight formats of our own: codes in sub-blocks of a row, each sub-block's scale
//! (and offset) stored in a few bits under one `f16` scale per super-block, every parameter
//! found by an error-minimizing search, optionally weighted by the importance of each input
//! column.
//!
//! This is the structure of llama.cpp's k-quants (sub-blocks of 16 or 32 values, 6-bit scales
//! under an `f16` per 256 values) as a general, configurable format: any code width 2..=8, any
//! sub-block length, super-blocks of any multiple of it or of the whole row, three grids, and
//! sub-scales stored in 2..=8 bits or as plain `f16` (then there is no super level: a group
//! format with compact parameters).
//!
//! # The format, exactly
//! A row-major `rows x cols` matrix (a weight `[out, in]`, quantized along its input
//! dimension) is cut per row into sub-blocks of `sub_len` values (the last one of a row may be
//! shorter) and super-blocks of `super_len` values (default: the whole row). For the value at
//! a column of sub-block `j`, with code `q`:
//!
//! | grid | codes `q` | value |
//! |---|---|---|
//! | [`Grid::Symmetric`] | `-2^(b-1) ..= 2^(b-1) - 1` | `d_j · q` |
//! | [`Grid::Offset`] | `0 ..= 2^b - 1` | `d_j · q + m_j` |
//! | [`Grid::ZeroPoint`] | `0 ..= 2^b - 1` | `d_j · (q - z_j)`, `z_j` an integer in `0 ..= 2^b - 1` stored in `b` bits |
//! | [`Grid::Levels`] (4 to 6 bits) | `0 ..= 2^b - 1` | `d_j · L[q]` ([`LEVELS`]: llama.cpp's `IQ4_NL` codebook; [`LEVELS5`], [`LEVELS6`]: its curve at half and quarter steps) |
//!
//! Sub-block parameters, by [`SubScale`]:
//! * [`SubScale::F16`], [`SubScale::Bf16`]: `d_j` (and `m_j`) are stored as `f16` or `bf16`
//!   (rounded to nearest, ties to even): `bf16` trades 3 bits of precision for `f32`'s range.
//! * [`SubScale::Bits(s)`](SubScale::Bits): `d_j = D · l_j` and `m_j = M · k_j`, with `D`, `M` one
//!   `f16` each per super-block and `l_j`, `k_j` integers of `s` bits: signed
//!   `-2^(s-1) ..= 2^(s-1) - 1` for the symmetric and levels scales and for offsets, unsigned
//!   `0 ..= 2^s - 1` for the offset and zero-point grids' scales (`d_j >= 0` there). Zero points
//!   are stored as they are, in `b` bits, whatever the sub-scales. `D` maps the super-block's
//!   sub-scale of largest magnitude to `l = -2^(s-1)` (the sign trick one level up;
//!   `D = max d_j / (2^s - 1)` for the offset grid), `M` its largest offset to `k = -2^(s-1)`.
//!
//! Reconstruction is in `f32`, one rounding per operation, no fused multiply-add:
//! `d_j = f32(D) · l_j` (exact), `x̂ = d_j · v(q) + m_j`. Codes are the nearest to each value
//! under the *stored* parameters: `clamp(round((x - m_j) / d_j))`, ties to even, for the linear
//! grids (`clamp(round(x / d_j) + z_j)` for the zero-point grid: round first, as ONNX); the nearest level of `x / d_j` (the lower one on an exact tie) for the levels grid;
//! `d_j = 0` gives the code of 0 (symmetric), of the level nearest 0 (levels) or code 0 (offset).
//! The symmetric grid and the 6-bit levels represent 0.0 exactly; the 4- and 5-bit levels'
//! nearest values are `d_j` and `-2 d_j`, and the offset grid's depends on `m_j`, as in
//! llama.cpp's `IQ4_NL` and `Q4_K`.
//!
//! # How the parameters are found
//! Each sub-block is fitted by [`fit_sub_block`] ([`Fit::MinMax`] or [`Fit::Search`]); then
//! `D`, `M` and the integers `l_j`, `k_j` are rounded to nearest; with [`Fit::Search`] the
//! neighbours `l_j ± 1` are tried, then (offset grid) `k_j ± 1` with the best `l_j`, and the least error kept.
//! An optional importance per column (e.g. the mean squared activation of that input, what
//! llama.cpp's `imatrix` stores) weights every squared error of the search; all-zero weights in
//! a sub-block count as all ones. Everything is `f32` arithmetic in a fixed order: the same
//! input gives the same bytes on every machine. Input of other float types is converted to
//! `f32` first (exactly for `f16`/`bf16`, rounded to nearest for `f64`).
//!
//! # Storage and size
//! Codes, sub-scales and sub-offsets are little-endian bit streams (element `i` of width `w`
//! at bits `i·w .. i·w + w`, least significant bit first, row after row with no padding); signed
//! integers are stored with an offset of `2^(w-1)`, symmetric codes as `q + 2^(b-1)`.
//! [`SuperMatrix::bits_per_weight`] counts every stored byte.
//!
//! `f16` bounds the scales: a scale beyond `f16::MAX` is an error
//! ([`QuantError::ScaleOverflow`]), and one below its smallest subnormal (`6·10^-8`) is stored
//! as 0, so a sub-block whose values are all below about `10^-6` (at 4 bits, 6-bit sub-scales)
//! reconstructs as zeros (or its offset): scale such a tensor up first.
//!
//! # Example
//! ```
//! use quant_core::superblock::{quantize_super, Grid, SuperSpec};
//! use quant_core::MatrixShape;
//!
//! let w: Vec<f32> = (0..4 * 64).map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0).collect();
//! // 4-bit symmetric codes, sub-blocks of 16 with 6-bit scales under one f16 per row.
//! let spec = SuperSpec::new(Grid::Symmetric, 4, 16)?;
//! let q = quantize_super(&w, MatrixShape::new(4, 64), spec, None)?;
//! assert_eq!(q.bits_per_weight(), 4.0 + 6.0 / 16.0 + 16.0 / 64.0);
//! let back: Vec<f32> = q.dequantize();
//! // Values within ±0.79 on 16 levels: steps of about 0.1, errors about half a step.
//! let max_err = w.iter().zip(&back).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
//! assert!(max_err < 0.06, "{max_err}");
//! assert_eq!(q.code(0, 0), -8); // -50/64, the largest magnitude of its sub-block, on code -8
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod fit;

use alloc::vec;
use alloc::vec::Vec;

use quant_traits::half::{bf16, f16};
use quant_traits::{MatrixShape, QuantError, QuantFloat};

pub use fit::{fit_sub_block, levels, Fit, SubFit, LEVELS, LEVELS5, LEVELS6};

use fit::{code_range, nearest_code, reconstruct};

/// The grid of values a sub-block's codes stand for (see the [module docs](self)).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Grid {
    /// `d · q`, `q` signed; the scale may be negative, so the extra negative code serves the
    /// value of largest magnitude.
    Symmetric,
    /// `d · q + m`, `q` unsigned, `d >= 0`, a float offset `m` of any sign.
    Offset,
    /// `d · (q - z)`, `q` unsigned, `d >= 0`, an integer zero point `z` in the code range
    /// stored in the code width: ONNX's asymmetric arithmetic (`q = clamp(round(x / d) + z)`),
    /// so 0.0 is exact and an integer matrix multiply can subtract `z` exactly.
    ZeroPoint,
    /// `d · L[q]`: non-uniform levels, denser near zero ([`LEVELS`], [`LEVELS5`], [`LEVELS6`]:
    /// 4, 5 or 6 bits).
    Levels,
}

/// How sub-block scales (and offsets) are stored.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum SubScale {
    /// As `f16` each: no super-block level.
    F16,
    /// As `bf16` each: no super-block level.
    Bf16,
    /// As integers of this many bits (2..=8) under one `f16` scale (and offset scale) per
    /// super-block.
    Bits(u32),
}

/// A two-level format: grid, code width, sub-block and super-block lengths, how sub-scales are
/// stored, and how parameters are fitted. Built by [`SuperSpec::new`], which checks it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct SuperSpec {
    grid: Grid,
    bits: u32,
    sub_len: usize,
    super_len: Option<usize>,
    sub_scale: SubScale,
    fit: Fit,
}

impl SuperSpec {
    /// `grid` with `bits`-bit codes in sub-blocks of `sub_len`, with the defaults: 6-bit
    /// sub-scales ([`SubScale::Bits`]`(6)`), one super-block per row, [`Fit::Search`].
    ///
    /// # Errors
    /// [`QuantError::InvalidBits`] outside `2..=8`; [`QuantError::InvalidSuperSpec`] for the
    /// levels grid at other than 4, 5 or 6 bits; [`QuantError::InvalidGroupSize`] for `sub_len = 0`.
    pub fn new(grid: Grid, bits: u32, sub_len: usize) -> Result<Self, QuantError> {
        if !(2..=8).contains(&bits) {
            return Err(QuantError::InvalidBits { bits });
        }
        if grid == Grid::Levels && !(4..=6).contains(&bits) {
            return Err(QuantError::InvalidSuperSpec { reason: "the levels grid has 4-, 5- or 6-bit codes" });
        }
        if sub_len == 0 {
            return Err(QuantError::InvalidGroupSize);
        }
        Ok(SuperSpec { grid, bits, sub_len, super_len: None, sub_scale: SubScale::Bits(6), fit: Fit::Search })
    }

    /// The same with sub-scales stored as `sub_scale`.
    ///
    /// # Errors
    /// [`QuantError::InvalidSuperSpec`] for [`SubScale::Bits`] outside `2..=8`.
    pub fn with_sub_scale(self, sub_scale: SubScale) -> Result<Self, QuantError> {
        if let SubScale::Bits(s) = sub_scale {
            if !(2..=8).contains(&s) {
                return Err(QuantError::InvalidSuperSpec { reason: "sub-scales take 2..=8 bits (or f16, bf16)" });
            }
        }
        Ok(SuperSpec { sub_scale, ..self })
    }

    /// The same with super-blocks of `len` values (`None`: one per row).
    ///
    /// # Errors
    /// [`QuantError::InvalidSuperSpec`] unless `len` is a positive multiple of the sub-block
    /// length.
    pub fn with_super_len(self, len: Option<usize>) -> Result<Self, QuantError> {
        if let Some(n) = len {
            if n == 0 || n % self.sub_len != 0 {
                return Err(QuantError::InvalidSuperSpec {
                    reason: "a super-block must be a positive multiple of the sub-block length",
                });
            }
        }
        Ok(SuperSpec { super_len: len, ..self })
    }

    /// The same with parameters fitted by `fit`.
    #[must_use]
    pub fn with_fit(self, fit: Fit) -> Self {
        SuperSpec { fit, ..self }
    }

    /// The grid.
    #[must_use]
    pub fn grid(&self) -> Grid {
        self.grid
    }

    /// The code width.
    #[must_use]
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Values per sub-block.
    #[must_use]
    pub fn sub_len(&self) -> usize {
        self.sub_len
    }

    /// Values per super-block (`None`: the whole row).
    #[must_use]
    pub fn super_len(&self) -> Option<usize> {
        self.super_len
    }

    /// How sub-scales are stored.
    #[must_use]
    pub fn sub_scale(&self) -> SubScale {
        self.sub_scale
    }

    /// How parameters are fitted.
    #[must_use]
    pub fn fit(&self) -> Fit {
        self.fit
    }

    /// Bits per stored sub-scale (and sub-offset).
    fn scale_width(&self) -> u32 {
        match self.sub_scale {
            SubScale::F16 | SubScale::Bf16 => 16,
            SubScale::Bits(s) => s,
        }
    }

    /// Float offsets under an offset scale (the offset grid).
    fn has_offsets(&self) -> bool {
        self.grid == Grid::Offset
    }

    /// Integer zero points in the code width (the zero-point grid).
    fn has_zero_points(&self) -> bool {
        self.grid == Grid::ZeroPoint
    }

    /// Whether sub-scales are non-negative (stored unsigned).
    fn unsigned_scales(&self) -> bool {
        matches!(self.grid, Grid::Offset | Grid::ZeroPoint)
    }

    /// Bits per stored sub-offset or zero point.
    fn offset_width(&self) -> u32 {
        if self.has_zero_points() {
            self.bits
        } else {
            self.scale_width()
        }
    }

    fn has_super(&self) -> bool {
        matches!(self.sub_scale, SubScale::Bits(_))
    }

    /// The layout of a `cols`-wide row: (sub-blocks, super-blocks).
    fn per_row(&self, cols: usize) -> (usize, usize) {
        let sub = cols.div_ceil(self.sub_len);
        let sup = if !self.has_super() || cols == 0 { 0 } else { self.super_len.map_or(1, |n| cols.div_ceil(n)) };
        (sub, sup)
    }

    /// The size of each stored part for `shape`: bytes of codes, of sub-scales and of
    /// sub-offsets, then the number of super-scale and super-offset `f16`s (what
    /// [`SuperMatrix::from_parts`] expects).
    ///
    /// # Errors
    /// [`QuantError::ShapeOverflow`].
    pub fn part_sizes(&self, shape: MatrixShape) -> Result<[usize; 5], QuantError> {
        let n = shape.elements()?;
        let (sub, sup) = self.per_row(shape.cols);
        let overflow = QuantError::ShapeOverflow { rows: shape.rows, cols: shape.cols };
        let subs = shape.rows.checked_mul(sub).ok_or(overflow.clone())?;
        let sups = shape.rows.checked_mul(sup).ok_or(overflow.clone())?;
        let bytes = |count: usize, width: u32| {
            count
                .checked_mul(usize::try_from(width).unwrap_or(usize::MAX))
                .map(|b| b.div_ceil(8))
                .ok_or(overflow.clone())
        };
        let offs = if self.has_offsets() || self.has_zero_points() { subs } else { 0 };
        let sup_offs = if self.has_offsets() { sups } else { 0 };
        Ok([bytes(n, self.bits)?, bytes(subs, self.scale_width())?, bytes(offs, self.offset_width())?, sups, sup_offs])
    }

    /// Bytes a `shape` matrix takes in this format: codes, sub-scales, sub-offsets, and 2 per
    /// super-block `f16`.
    ///
    /// # Errors
    /// [`QuantError::ShapeOverflow`].
    pub fn stored_bytes(&self, shape: MatrixShape) -> Result<usize, QuantError> {
        let [c, s, o, ss, so] = self.part_sizes(shape)?;
        Ok(c + s + o + 2 * (ss + so))
    }

    /// Bits per weight of a `shape` matrix in this format: every stored byte counted (codes,
    /// sub-scales, offsets, super-scales), divided by the number of weights.
    ///
    /// # Errors
    /// [`QuantError::ShapeOverflow`].
    pub fn bits_per_weight(&self, shape: MatrixShape) -> Result<f64, QuantError> {
        let [c, s, o, ss, so] = self.part_sizes(shape)?;
        let n = shape.elements()?;
        let bits = quant_traits::cast::usize_to_f64(8 * (c + s + o) + 16 * (ss + so));
        Ok(if n == 0 { 0.0 } else { bits / quant_traits::cast::usize_to_f64(n) })
    }
}

/// A matrix in a two-level format (see the [module docs](self)): made by [`quantize_super`],
/// or from stored parts by [`SuperMatrix::from_parts`].
#[derive(Clone, Debug, PartialEq)]
pub struct SuperMatrix {
    spec: SuperSpec,
    shape: MatrixShape,
    codes: Vec<u8>,
    scales: Vec<u8>,
    offsets: Vec<u8>,
    super_scales: Vec<f16>,
    super_offsets: Vec<f16>,
}

/// Reads the `width`-bit field `i` of a little-endian bit stream.
#[inline]
fn get_bits(buf: &[u8], i: usize, width: u32) -> u32 {
    let w = usize::try_from(width).unwrap_or(0);
    let start = i * w;
    let mut v = 0u32;
    let mut got = 0usize;
    while got < w {
        let bit = start + got;
        let byte = buf[bit / 8];
        let shift = bit % 8;
        let take = (8 - shift).min(w - got);
        let part = (u32::from(byte) >> shift) & ((1u32 << take) - 1);
        v |= part << got;
        got += take;
    }
    v
}

/// Writes `v` (already `< 2^width`) as the `width`-bit field `i` of a zeroed bit stream.
#[inline]
fn put_bits(buf: &mut [u8], i: usize, width: u32, v: u32) {
    let w = usize::try_from(width).unwrap_or(0);
    let start = i * w;
    let mut done = 0usize;
    while done < w {
        let bit = start + done;
        let shift = bit % 8;
        let take = (8 - shift).min(w - done);
        let part = (v >> done) & ((1u32 << take) - 1);
        // `part < 2^take <= 2^(8 - shift)`, so the shifted value fits a byte.
        buf[bit / 8] |= u8::try_from(part << shift).unwrap_or(0);
        done += take;
    }
}

/// `v` in `lo..=hi` as the unsigned field `v - lo`.
#[inline]
fn field(v: i32, lo: i32) -> u32 {
    u32::try_from(v - lo).unwrap_or(0)
}

/// The signed range of an `s`-bit integer.
fn signed_range(s: u32) -> (i32, i32) {
    (-(1i32 << (s - 1)), (1i32 << (s - 1)) - 1)
}

/// An integer in `lo..=hi` as an exact `f32` (all ranges here are within 16 bits).
#[inline]
fn small_f32(v: i32) -> f32 {
    f32::from(i16::try_from(v).unwrap_or(0))
}

/// `v` as an `f16`, or the error of a scale beyond `f16`'s range.
fn to_f16(v: f32, lo: f32, hi: f32) -> Result<f16, QuantError> {
    let h = f16::from_f32(v);
    if h.is_finite() {
        Ok(h)
    } else {
        Err(QuantError::ScaleOverflow { lo: f64::from(lo), hi: f64::from(hi), float: "f16" })
    }
}

/// `v` as the 16 bits of an `f16` or `bf16` (nearest, ties to even) and their value, or the
/// error of a scale beyond the type's range.
fn to_half(kind: SubScale, v: f32, lo: f32, hi: f32) -> Result<(u16, f32), QuantError> {
    if kind == SubScale::Bf16 {
        let h = bf16::from_f32(v);
        if h.is_finite() {
            return Ok((h.to_bits(), h.to_f32()));
        }
        return Err(QuantError::ScaleOverflow { lo: f64::from(lo), hi: f64::from(hi), float: "bf16" });
    }
    let h = to_f16(v, lo, hi)?;
    Ok((h.to_bits(), h.to_f32()))
}

/// Field `i` of a 16-bit stream as the value of an `f16` or `bf16`.
fn from_half(kind: SubScale, buf: &[u8], i: usize) -> f32 {
    let bits = u16::try_from(get_bits(buf, i, 16)).unwrap_or(0);
    if kind == SubScale::Bf16 {
        bf16::from_bits(bits).to_f32()
    } else {
        f16::from_bits(bits).to_f32()
    }
}

/// Checks an importance vector: `cols` finite weights `>= 0`.
fn check_importance(importance: &[f32], cols: usize) -> Result<(), QuantError> {
    QuantError::check_length("importance (one weight per column)", cols, importance.len())?;
    match importance.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
        Some(index) => Err(QuantError::InvalidImportance { index, value: f64::from(importance[index]) }),
        None => Ok(()),
    }
}

/// Quantizes a row-major `shape` matrix `x` into `spec`'s two-level format, with an optional
/// importance per column weighting the search's squared errors (see the [module docs](self)).
///
/// # Errors
/// [`QuantError::LengthMismatch`] when `x` or `importance` has the wrong length;
/// [`QuantError::NonFiniteInMatrix`] naming the first NaN or infinite value;
/// [`QuantError::InvalidImportance`] for a negative or non-finite weight;
/// [`QuantError::ScaleOverflow`] when a scale exceeds `f16`'s range (values beyond about
/// `±2·10^6` at 4 bits with 6-bit sub-scales).
pub fn quantize_super<F: QuantFloat>(
    x: &[F],
    shape: MatrixShape,
    spec: SuperSpec,
    importance: Option<&[f32]>,
) -> Result<SuperMatrix, QuantError> {
    shape.check_len("matrix", x.len())?;
    crate::range::check_finite_matrix(x, shape)?;
    if let Some(imp) = importance {
        check_importance(imp, shape.cols)?;
    }
    let [c, s, o, ss, so] = spec.part_sizes(shape)?;
    let mut m = SuperMatrix {
        spec,
        shape,
        codes: vec![0; c],
        scales: vec![0; s],
        offsets: vec![0; o],
        super_scales: vec![f16::ZERO; ss],
        super_offsets: vec![f16::ZERO; so],
    };
    let (subs, sups) = spec.per_row(shape.cols);
    let mut row = vec![0.0f32; shape.cols];
    let mut fits: Vec<SubFit> = vec![SubFit { d: 0.0, m: 0.0, error: 0.0, curvature: 0.0 }; subs];
    for r in 0..shape.rows {
        for (dst, v) in row.iter_mut().zip(&x[r * shape.cols..(r + 1) * shape.cols]) {
            *dst = narrow_f32(*v);
        }
        m.quantize_row(r, &row, importance, &mut fits, subs, sups)?;
    }
    Ok(m)
}

/// A float as `f32` (exact for `f32`, `f16`, `bf16`; nearest for `f64`).
#[inline]
fn narrow_f32<F: QuantFloat>(v: F) -> f32 {
    f32::from_f64_nearest(v.to_f64_exact())
}

impl SuperMatrix {
    /// Fits, stores and encodes row `r`.
    fn quantize_row(
        &mut self,
        r: usize,
        row: &[f32],
        importance: Option<&[f32]>,
        fits: &mut [SubFit],
        subs: usize,
        sups: usize,
    ) -> Result<(), QuantError> {
        let spec = self.spec;
        let sl = spec.sub_len;
        let cols = row.len();
        let span = |j: usize| (j * sl, ((j + 1) * sl).min(cols));
        for (j, f) in fits.iter_mut().enumerate() {
            let (a, b) = span(j);
            *f = fit_sub_block(spec.grid, spec.bits, spec.fit, &row[a..b], importance.map(|w| &w[a..b]));
        }
        let subs_per_super = spec.super_len.map_or(subs, |n| n / sl).max(1);
        let mut d_buf: Vec<f32> = Vec::new();
        let mut c_buf: Vec<f32> = Vec::new();
        for j in 0..subs {
            let (a, b) = span(j);
            let w = importance.map(|w| &w[a..b]).filter(|w| w.iter().any(|&v| v > 0.0));
            let xs = &row[a..b];
            let (dq, mq) = match spec.sub_scale {
                SubScale::F16 | SubScale::Bf16 => {
                    let (lo, hi) = fit::value_range(xs);
                    let (dh, dv) = to_half(spec.sub_scale, fits[j].d, lo, hi)?;
                    let (mh, mv) = to_half(spec.sub_scale, fits[j].m, lo, hi)?;
                    put_bits(&mut self.scales, r * subs + j, 16, u32::from(dh));
                    if spec.has_offsets() {
                        put_bits(&mut self.offsets, r * subs + j, 16, u32::from(mh));
                    }
                    if spec.has_zero_points() {
                        // The zero point fitted for the scale as stored.
                        let z = self.zero_point_for(xs, w, fits[j], dv);
                        put_bits(&mut self.offsets, r * subs + j, spec.bits, field(z, 0));
                        (dv, small_f32(z))
                    } else {
                        (dv, if spec.has_offsets() { mv } else { 0.0 })
                    }
                }
                SubScale::Bits(s) => {
                    let k = j / subs_per_super;
                    if j % subs_per_super == 0 {
                        // A new super-block: its scale (and offset scale) from its sub-blocks.
                        let end = (j + subs_per_super).min(subs);
                        let (lo, hi) = fit::value_range(&row[span(j).0..span(end - 1).1]);
                        d_buf.clear();
                        d_buf.extend(fits[j..end].iter().map(|f| f.d));
                        // The sub-scales are themselves fitted to an s-bit grid, each weighted
                        // by how much its sub-block's error grows per unit of scale error.
                        c_buf.clear();
                        c_buf.extend(fits[j..end].iter().map(|f| f.curvature));
                        let big_d = if spec.unsigned_scales() {
                            fit::fit_unsigned_scale(s, spec.fit, &d_buf, &c_buf)
                        } else {
                            fit_sub_block(Grid::Symmetric, s, spec.fit, &d_buf, Some(&c_buf)).d
                        };
                        self.super_scales[r * sups + k] = to_f16(big_d, lo, hi)?;
                        if spec.has_offsets() {
                            d_buf.clear();
                            d_buf.extend(fits[j..end].iter().map(|f| f.m));
                            // Offsets weighted by their sub-block's total weight.
                            c_buf.clear();
                            c_buf.extend((j..end).map(|jj| {
                                let (a, b) = span(jj);
                                importance
                                    .map(|w| &w[a..b])
                                    .filter(|w| w.iter().any(|&v| v > 0.0))
                                    .map_or(small_f32(i32::try_from(b - a).unwrap_or(0)), |w| w.iter().sum())
                            }));
                            let big_m = fit_sub_block(Grid::Symmetric, s, spec.fit, &d_buf, Some(&c_buf)).d;
                            self.super_offsets[r * sups + k] = to_f16(big_m, lo, hi)?;
                        }
                    }
                    let big_d = self.super_scales[r * sups + k].to_f32();
                    let big_m = if spec.has_offsets() { self.super_offsets[r * sups + k].to_f32() } else { 0.0 };
                    let (l, km) = self.stored_ints(xs, w, fits[j], big_d, big_m, s);
                    let (slo, _) = signed_range(s);
                    let l_field = if spec.unsigned_scales() { field(l, 0) } else { field(l, slo) };
                    put_bits(&mut self.scales, r * subs + j, s, l_field);
                    if spec.has_offsets() {
                        put_bits(&mut self.offsets, r * subs + j, s, field(km, slo));
                    }
                    if spec.has_zero_points() {
                        put_bits(&mut self.offsets, r * subs + j, spec.bits, field(km, 0));
                        (big_d * small_f32(l), small_f32(km))
                    } else {
                        (big_d * small_f32(l), big_m * small_f32(km))
                    }
                }
            };
            let (lo, _) = code_range(spec.grid, spec.bits);
            for (i, &v) in xs.iter().enumerate() {
                let q = nearest_code(spec.grid, spec.bits, v, dq, mq);
                put_bits(&mut self.codes, r * cols + a + i, spec.bits, field(i32::from(q), i32::from(lo)));
            }
        }
        Ok(())
    }

    /// The zero point for a stored scale `d`: the fitted one's offset `-d_fit · z` re-expressed
    /// under `d`, rounded and clamped, then (with [`Fit::Search`]) the better neighbour.
    fn zero_point_for(&self, xs: &[f32], w: Option<&[f32]>, f: SubFit, d: f32) -> i32 {
        let hi = (1i32 << self.spec.bits) - 1;
        let z0 = if d == 0.0 {
            i32::from(fit::rint_clamped(f.m, 0, i16::try_from(hi).unwrap_or(0)))
        } else {
            i32::from(fit::rint_clamped(f.d * f.m / d, 0, i16::try_from(hi).unwrap_or(0)))
        };
        if self.spec.fit == Fit::MinMax {
            return z0;
        }
        let err = |z: i32| fit::error_of(self.spec.grid, self.spec.bits, xs, w, d, small_f32(z));
        let mut best = (err(z0), z0);
        for z in [z0 - 1, z0 + 1] {
            if (0..=hi).contains(&z) {
                let e = err(z);
                if e < best.0 {
                    best = (e, z);
                }
            }
        }
        best.1
    }

    /// The stored integers `(l, k)` of a sub-block under super-scales `big_d`, `big_m`: nearest,
    /// then (with [`Fit::Search`]) the better of `l ± 1`, then of `k ± 1`.
    fn stored_ints(&self, xs: &[f32], w: Option<&[f32]>, f: SubFit, big_d: f32, big_m: f32, s: u32) -> (i32, i32) {
        let spec = self.spec;
        let (slo, shi) = signed_range(s);
        let (llo, lhi) = if spec.unsigned_scales() { (0, (1 << s) - 1) } else { (slo, shi) };
        let near = |v: f32, den: f32, lo: i32, hi: i32| {
            if den == 0.0 {
                0
            } else {
                i32::from(fit::rint_clamped(v / den, i16::try_from(lo).unwrap_or(0), i16::try_from(hi).unwrap_or(0)))
            }
        };
        let l0 = near(f.d, big_d, llo, lhi);
        if spec.has_zero_points() {
            // The scale's neighbours, each with its best zero point.
            let mut best = (f32::INFINITY, l0, 0);
            let ls: &[i32] = if spec.fit == Fit::MinMax { &[0] } else { &[0, -1, 1] };
            for dl in ls {
                let l = l0 + dl;
                if !(llo..=lhi).contains(&l) {
                    continue;
                }
                let d = big_d * small_f32(l);
                let z = self.zero_point_for(xs, w, f, d);
                let e = fit::error_of(spec.grid, spec.bits, xs, w, d, small_f32(z));
                if e < best.0 {
                    best = (e, l, z);
                }
            }
            return (best.1, best.2);
        }
        let k0 = if spec.has_offsets() { near(f.m, big_m, slo, shi) } else { 0 };
        if spec.fit == Fit::MinMax {
            return (l0, k0);
        }
        let err =
            |l: i32, k: i32| fit::error_of(spec.grid, spec.bits, xs, w, big_d * small_f32(l), big_m * small_f32(k));
        let mut best = (err(l0, k0), l0, k0);
        // The scale's neighbours, then (offset grid) the offset's around the best scale.
        for l in [l0 - 1, l0 + 1] {
            if (llo..=lhi).contains(&l) {
                let e = err(l, k0);
                if e < best.0 {
                    best = (e, l, k0);
                }
            }
        }
        if spec.has_offsets() {
            let l = best.1;
            for k in [k0 - 1, k0 + 1] {
                if (slo..=shi).contains(&k) {
                    let e = err(l, k);
                    if e < best.0 {
                        best = (e, l, k);
                    }
                }
            }
        }
        (best.1, best.2)
    }

    /// The format.
    #[must_use]
    pub fn spec(&self) -> SuperSpec {
        self.spec
    }

    /// The matrix shape.
    #[must_use]
    pub fn shape(&self) -> MatrixShape {
        self.shape
    }

    /// The code bit stream.
    #[must_use]
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }

    /// The sub-scale bit stream (`f16`/`bf16` bits with [`SubScale::F16`]/[`SubScale::Bf16`]).
    #[must_use]
    pub fn scales(&self) -> &[u8] {
        &self.scales
    }

    /// The sub-offset bit stream (empty unless the grid is [`Grid::Offset`]).
    #[must_use]
    pub fn offsets(&self) -> &[u8] {
        &self.offsets
    }

    /// One `f16` scale per super-block, row by row (empty with 16-bit sub-scales).
    #[must_use]
    pub fn super_scales(&self) -> &[f16] {
        &self.super_scales
    }

    /// One `f16` offset scale per super-block (offset grid with [`SubScale::Bits`] only).
    #[must_use]
    pub fn super_offsets(&self) -> &[f16] {
        &self.super_offsets
    }

    /// Every stored byte: codes, sub-scales, sub-offsets, and 2 per super-block `f16`.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.codes.len()
            + self.scales.len()
            + self.offsets.len()
            + 2 * (self.super_scales.len() + self.super_offsets.len())
    }

    /// Stored bits per weight (0 for an empty matrix).
    #[must_use]
    pub fn bits_per_weight(&self) -> f64 {
        self.spec.bits_per_weight(self.shape).unwrap_or(0.0)
    }

    /// A matrix from its stored parts (as read from a file), every length checked against
    /// `spec` and `shape`, and every super-scale checked finite.
    ///
    /// # Errors
    /// [`QuantError::LengthMismatch`] naming the part of the wrong length;
    /// [`QuantError::NonFiniteParameter`] for a NaN or infinite `f16`;
    /// [`QuantError::ShapeOverflow`].
    pub fn from_parts(
        spec: SuperSpec,
        shape: MatrixShape,
        codes: Vec<u8>,
        scales: Vec<u8>,
        offsets: Vec<u8>,
        super_scales: Vec<f16>,
        super_offsets: Vec<f16>,
    ) -> Result<Self, QuantError> {
        let [c, s, o, ss, so] = spec.part_sizes(shape)?;
        QuantError::check_length("codes (bytes)", c, codes.len())?;
        QuantError::check_length("sub-scales (bytes)", s, scales.len())?;
        QuantError::check_length("sub-offsets (bytes)", o, offsets.len())?;
        QuantError::check_length("super-scales", ss, super_scales.len())?;
        QuantError::check_length("super-offsets", so, super_offsets.len())?;
        for (what, v) in [("super-scale", &super_scales), ("super-offset", &super_offsets)] {
            if let Some(index) = v.iter().position(|h| !h.is_finite()) {
                return Err(QuantError::NonFiniteParameter { what, index, value: v[index].to_f64() });
            }
        }
        let m = SuperMatrix { spec, shape, codes, scales, offsets, super_scales, super_offsets };
        if !spec.has_super() {
            let subs = shape.rows * spec.per_row(shape.cols).0;
            for (what, buf) in [("sub-scale", &m.scales), ("sub-offset", &m.offsets)] {
                // Zero points are integers: any stored value is valid.
                let n = if buf.is_empty() || (spec.has_zero_points() && what == "sub-offset") { 0 } else { subs };
                if let Some(index) = (0..n).find(|&i| !from_half(spec.sub_scale, buf, i).is_finite()) {
                    let value = f64::from(from_half(spec.sub_scale, buf, index));
                    return Err(QuantError::NonFiniteParameter { what, index, value });
                }
            }
        }
        Ok(m)
    }

    /// The stored parameters of sub-block `j` of row `row`, as reconstruction uses them: the
    /// scale `d_j` and, by grid, the offset `m_j` ([`Grid::Offset`]), the zero point `z_j` as an
    /// `f32` integer ([`Grid::ZeroPoint`]) or 0. With [`SubScale::Bits`] `d_j = f32(D) · l_j`
    /// (and `m_j = f32(M) · k_j`) is exact: an `f16` times an integer of at most 8 bits.
    ///
    /// # Panics
    /// When `row` or `j` is outside the matrix.
    #[must_use]
    pub fn sub_block_params(&self, row: usize, j: usize) -> (f32, f32) {
        let (subs, _) = self.spec.per_row(self.shape.cols);
        assert!(row < self.shape.rows && j < subs, "sub-block ({row}, {j}) is outside {} x {subs}", self.shape.rows);
        self.sub_params(row, j)
    }

    /// The stored `(d, m)` of sub-block `j` of row `r`.
    fn sub_params(&self, r: usize, j: usize) -> (f32, f32) {
        let spec = self.spec;
        let (subs, sups) = spec.per_row(self.shape.cols);
        let idx = r * subs + j;
        let zero_point = || small_f32(i32::try_from(get_bits(&self.offsets, idx, spec.bits)).unwrap_or(0));
        match spec.sub_scale {
            SubScale::F16 | SubScale::Bf16 if spec.has_zero_points() => {
                (from_half(spec.sub_scale, &self.scales, idx), zero_point())
            }
            SubScale::F16 | SubScale::Bf16 => {
                let d = from_half(spec.sub_scale, &self.scales, idx);
                (d, if spec.has_offsets() { from_half(spec.sub_scale, &self.offsets, idx) } else { 0.0 })
            }
            SubScale::Bits(s) => {
                let per = spec.super_len.map_or(subs, |n| n / spec.sub_len).max(1);
                let k = r * sups + j / per;
                let (slo, _) = signed_range(s);
                let raw = i32::try_from(get_bits(&self.scales, idx, s)).unwrap_or(0);
                let l = if spec.unsigned_scales() { raw } else { raw + slo };
                let d = self.super_scales[k].to_f32() * small_f32(l);
                let m = if spec.has_zero_points() {
                    zero_point()
                } else if spec.has_offsets() {
                    let km = i32::try_from(get_bits(&self.offsets, idx, s)).unwrap_or(0) + slo;
                    self.super_offsets[k].to_f32() * small_f32(km)
                } else {
                    0.0
                };
                (d, m)
            }
        }
    }

    /// The code at `(row, col)` as the grid's `q` (signed for the symmetric grid).
    ///
    /// # Panics
    /// When `(row, col)` is outside the matrix.
    #[must_use]
    pub fn code(&self, row: usize, col: usize) -> i16 {
        assert!(row < self.shape.rows && col < self.shape.cols, "({row}, {col}) is outside {:?}", self.shape);
        let (lo, _) = code_range(self.spec.grid, self.spec.bits);
        let raw = get_bits(&self.codes, row * self.shape.cols + col, self.spec.bits);
        i16::try_from(raw).unwrap_or(0) + lo
    }

    /// The values the codes stand for, into `out` (row-major, `rows x cols`), converted from
    /// `f32` to `F` (exact for `f32` and `f64`, nearest for `f16`/`bf16`).
    ///
    /// # Errors
    /// [`QuantError::LengthMismatch`] when `out` has the wrong length.
    pub fn dequantize_into<F: QuantFloat>(&self, out: &mut [F]) -> Result<(), QuantError> {
        self.shape.check_len("output", out.len())?;
        let spec = self.spec;
        let cols = self.shape.cols;
        let (subs, _) = spec.per_row(cols);
        for r in 0..self.shape.rows {
            for j in 0..subs {
                let (d, m) = self.sub_params(r, j);
                let (a, b) = (j * spec.sub_len, ((j + 1) * spec.sub_len).min(cols));
                for c in a..b {
                    let v = reconstruct(spec.grid, spec.bits, self.code(r, c), d, m);
                    out[r * cols + c] = F::from_f64_nearest(f64::from(v));
                }
            }
        }
        Ok(())
    }

    /// The values the codes stand for (see [`SuperMatrix::dequantize_into`]).
    #[must_use]
    pub fn dequantize<F: QuantFloat>(&self) -> Vec<F> {
        let mut out = vec![F::zero(); self.shape.rows * self.shape.cols];
        // The length is right by construction.
        let _ = self.dequantize_into(&mut out);
        out
    }

    /// Joins matrices of the same format and width, row blocks in order (e.g. quantized in
    /// parallel).
    ///
    /// # Errors
    /// [`QuantError::InvalidSuperSpec`] when the formats differ;
    /// [`QuantError::LengthMismatch`] when the widths differ.
    pub fn concat_rows(parts: &[SuperMatrix]) -> Result<SuperMatrix, QuantError> {
        let Some(first) = parts.first() else {
            return Err(QuantError::InvalidSuperSpec { reason: "nothing to join" });
        };
        let spec = first.spec;
        let cols = first.shape.cols;
        let mut rows = 0usize;
        for p in parts {
            if p.spec != spec {
                return Err(QuantError::InvalidSuperSpec { reason: "the parts to join have different formats" });
            }
            QuantError::check_length("columns of a part", cols, p.shape.cols)?;
            rows = rows.checked_add(p.shape.rows).ok_or(QuantError::ShapeOverflow { rows, cols })?;
        }
        let shape = MatrixShape::new(rows, cols);
        let [c, s, o, _, _] = spec.part_sizes(shape)?;
        let (subs, _) = spec.per_row(cols);
        let mut out = SuperMatrix {
            spec,
            shape,
            codes: vec![0; c],
            scales: vec![0; s],
            offsets: vec![0; o],
            super_scales: Vec::new(),
            super_offsets: Vec::new(),
        };
        let (mut at_code, mut at_sub) = (0usize, 0usize);
        let w = spec.scale_width();
        for p in parts {
            let n = p.shape.rows * cols;
            let ns = p.shape.rows * subs;
            append_bits(&mut out.codes, at_code, &p.codes, n, spec.bits);
            append_bits(&mut out.scales, at_sub, &p.scales, ns, w);
            if !p.offsets.is_empty() {
                append_bits(&mut out.offsets, at_sub, &p.offsets, ns, spec.offset_width());
            }
            out.super_scales.extend_from_slice(&p.super_scales);
            out.super_offsets.extend_from_slice(&p.super_offsets);
            at_code += n;
            at_sub += ns;
        }
        Ok(out)
    }
}

/// Copies `n` fields of `width` bits from `src` to `dst` starting at field `at` (bytes at a
/// time when the start is byte-aligned).
fn append_bits(dst: &mut [u8], at: usize, src: &[u8], n: usize, width: u32) {
    let w = usize::try_from(width).unwrap_or(0);
    if (at * w).is_multiple_of(8) {
        let start = at * w / 8;
        let len = (n * w).div_ceil(8);
        dst[start..start + len].copy_from_slice(&src[..len]);
    } else {
        for i in 0..n {
            put_bits(dst, at + i, width, get_bits(src, i, width));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_streams_round_trip_every_width() {
        for width in 1..=16u32 {
            let n = 37;
            let mut buf = vec![0u8; (n * width as usize).div_ceil(8)];
            let vals: Vec<u32> = (0..n).map(|i| (i as u32).wrapping_mul(2_654_435_761) >> (32 - width)).collect();
            for (i, &v) in vals.iter().enumerate() {
                put_bits(&mut buf, i, width, v);
            }
            for (i, &v) in vals.iter().enumerate() {
                assert_eq!(get_bits(&buf, i, width), v, "width {width} field {i}");
            }
        }
        // Least significant bit first: fields 0x1 and 0x2 of 4 bits are the byte 0x21.
        let mut b = [0u8; 1];
        put_bits(&mut b, 0, 4, 1);
        put_bits(&mut b, 1, 4, 2);
        assert_eq!(b, [0x21]);
    }
}
