//! Weights quantized in groups along their inputs: the formats, their validation, and the
//! exact value of every weight.

use alloc::vec::Vec;

use quant_core::superblock::{levels, Grid, SubScale, SuperMatrix};
use quant_core::{BlockCodes, BlockFormat};
use quant_traits::cast::round_ties_even;
use quant_traits::{I4x2, QuantError, QuantFloat, Storage, U4x2};

use crate::aligned::Aligned;
pub use crate::arch::decode::GroupCodes;
use crate::arch::decode::{pack_codes, pack_params, width_for, FactoredView, Panels, WIDE};
use crate::arch::{KernelChoice, Tier};

/// A weight matrix `W` (`N x K`: output channels by inputs) quantized in groups of `G`
/// consecutive inputs, with one scale per group (and a zero point or a minimum, by format).
///
/// Every constructor packs the weights once into the layout the kernels read: output
/// channels in panels of `W` (8, or 16 where the kernel that runs has zmm registers: the
/// `avx512vnni` and `amx` tiers), and within a panel, group after group, the channels' codes
/// interleaved four inputs at a time: 8-bit codes as `[quad][channel][4 bytes]`, 4-bit codes
/// (unsigned, `Sym4` stored as `q + 8`) as `[8 inputs][channel][4 bytes]` with inputs `8p + j`
/// in the low nibble of byte `j` and `8p + 4 + j` in its high nibble, 6-bit codes (`Sym6`) as
/// those low nibbles followed by a plane of their top two bits, a byte per lane for each pair
/// of such steps (two bits for each of the lane's four inputs); then each group's `W`
/// scales (`f32`; `f16` and `bf16` convert exactly), zero points and minimums side by side. A
/// kernel then finds, for one step of four inputs, the panel's codes in one `4 W`-byte load,
/// each channel's four in one 32-bit lane (what `vpdpbusd` and `vpmaddubsw` + `vpmaddwd`
/// sum). Channels past `N` in the last panel are zero.
///
/// **Layouts.** The constructors pack for the kernel that runs by default (`QUANT_KERNEL`, or
/// this CPU's best tier); [`GroupWeights::layout`] names the layout, and
/// [`GroupWeights::for_kernel`] repacks for another kernel. Eight-channel kernels read a
/// 16-channel panel as its two halves (the first 32 bytes of each step are channels 0..8), so
/// every tier takes the 16-channel layout; the 16-channel kernels refuse the 8-channel one
/// ([`QuantError::PackedForOtherKernel`]).
///
/// Group sizes: a multiple of 16 from 16 to 256, which keeps every per-group integer dot
/// product of the int8-activation mode exact in `f32` (`127 · 128 · 256 < 2^24`).
///
/// # llama.cpp's block formats
/// [`GroupWeights::from_blocks`] takes every [`BlockFormat`] as a GGUF file stores it, and
/// holds each block's exact integer form ([`BlockFormat::integer_form_into`]): one group per
/// sub-block, its scale (and minimum) an exact `f32` product of the block's `f16` and the
/// sub-block's integer scale, so every weight is the format's value exactly:
///
/// | format | group | codes as held | weight |
/// |---|---|---|---|
/// | `Q4_0` | 32 | [`GroupCodes::Sym4`] | `d · (q - 8)` |
/// | `Q4_1` | 32 | [`GroupCodes::Min4`] | `d · u + m` |
/// | `Q8_0` | 32 | [`GroupCodes::Sym8`] | `d · q` |
/// | `Q5_0` | 32 | [`GroupCodes::Sym6`] (`q + 16` held as `q + 32`) | `d · (q - 16)` |
/// | `Q5_1` | 32 | [`GroupCodes::Min6`] | `d · u + m` |
/// | `Q2_K` | 16 | [`GroupCodes::Min4`] | `(d · sc) · u - dmin · m` |
/// | `Q3_K` | 16 | [`GroupCodes::Sym4`] | `(d · (sc - 32)) · q` |
/// | `Q4_K` | 32 | [`GroupCodes::Min4`] | `(d · sc) · u - dmin · m` |
/// | `Q5_K` | 32 | [`GroupCodes::Min6`] | `(d · sc) · u - dmin · m` |
/// | `Q6_K` | 16 | [`GroupCodes::Sym6`] | `(d · sc) · (q - 32)` |
/// | `MXFP4` | 32 | [`GroupCodes::Levels4`] | `2^(e - 128) · L[u]` |
/// | `IQ4_NL` | 32 | [`GroupCodes::Levels4`] | `d · L[u]` |
/// | `IQ4_XS` | 32 | [`GroupCodes::Levels4`] | `(d · (ls - 32)) · L[u]` |
///
/// The one-level formats' scales and minimums are held as `f32`; the two-level formats'
/// (the k-quants, `IQ4_XS`, and [`GroupWeights::from_super`]'s with integer sub-block scales)
/// as the block's integers, a byte a group, with the super-block's `f32` factors (`d`,
/// `-dmin`): the kernels form each scale as the `f32` product, which is exact, so the result is
/// that of the `f32` scales bit for bit. Codes of 5 and 6 bits are held in 6 (a plane of low
/// nibbles and one of the top two bits). [`GroupWeights::bytes`] says what a matrix holds,
/// e.g. 4.75 bits a weight for `Q4_K` (4.5 in the file), 6.75 for `Q5_K` (5.5), 6.625 for
/// `Q6_K` (6.5625) and 5 for `Q4_0` (4.5). The formats with a minimum differ from llama.cpp's dequantization only in that
/// its `d · u - m` is rounded to `f32` per weight, where the products here use the exact
/// value (see [`GroupWeights::value`]).
#[derive(Clone, Debug, PartialEq)]
pub struct GroupWeights {
    n: usize,
    k: usize,
    group: usize,
    codes_kind: GroupCodes,
    /// Channels per panel: 8 or 16.
    width: usize,
    /// While building: row `r`'s codes at `r * row_bytes ..`; empty once built.
    codes: Vec<u8>,
    /// Built: the codes in the panel layout, from a cache line (a 16-channel step is one).
    panels: Aligned<u8>,
    /// While building: one per group, row-major (`r * groups + g`); built: `[panel][group][W]`.
    scales: Vec<f32>,
    /// `Asym4`: one per group (as `scales`); empty otherwise.
    zeros: Vec<u8>,
    /// `Min4`, `Min8`: one per group (as `scales`); empty otherwise.
    mins: Vec<f32>,
    /// `Levels4`: the levels the codes index (zeros otherwise).
    levels: [i8; 16],
    /// The two-level form (see [`Factored`]), or `None` with the scales and minimums in
    /// `scales` and `mins`.
    factored: Option<Factored>,
}

/// Scales (and minimums) held as an `i8` per group times an `f32` factor per super-block of
/// `per` groups, where every group's `f32` scale is exactly that product: the k-quants, `IQ4_XS`
/// and our two-level formats. The kernels then read one byte per group and channel where the
/// plain form reads four (`Q4_K`: 4.75 bits a weight against 6) and form `d · k` in `f32`, the
/// value the plain form holds.
#[derive(Clone, Debug, PartialEq)]
struct Factored {
    /// Groups per super-block.
    per: usize,
    /// While building: one per group, row-major; built: `[panel][group][W]`.
    scales: Vec<i8>,
    /// As `scales`, for `Min4` and `Min8`; empty otherwise.
    mins: Vec<i8>,
    /// While building: one per super-block, row-major (`r * supers + s`); built:
    /// `[panel][super-block][W]`.
    supers: Vec<f32>,
    /// As `supers`, the minimums' factors (`Min4`, `Min8`); empty otherwise.
    super_mins: Vec<f32>,
}

impl Factored {
    /// The factored form of row-major `scales` (and `mins`, empty without) with the
    /// super-blocks' factors `supers` (and `super_mins`) of `per` groups each, or `None`
    /// when some group's value is not exactly its factor times an `i8` (then the plain form
    /// holds them).
    #[expect(clippy::as_conversions, reason = "integers checked to be in i8's range, to i8 and back to f32: exact")]
    fn of(per: usize, scales: &[f32], mins: &[f32], supers: &[f32], super_mins: &[f32]) -> Option<Self> {
        let factor = |v: &[f32], f: &[f32]| -> Option<Vec<i8>> {
            if f.len() * per != v.len() {
                return None;
            }
            v.iter()
                .enumerate()
                .map(|(i, &x)| {
                    let d = f[i / per];
                    let k = if d == 0.0 { 0.0 } else { round_ties_even(f64::from(x / d)) };
                    // `==`: a zero scale may come out as `-0` from `d · 0`, which changes no
                    // result (the kernels' sums start at `+0`).
                    ((-128.0..=127.0).contains(&k) && d * (k as f32) == x).then_some(k as i8)
                })
                .collect()
        };
        if per == 0 || supers.is_empty() {
            return None;
        }
        let scales_i8 = factor(scales, supers)?;
        let mins_i8 = if mins.is_empty() { Vec::new() } else { factor(mins, super_mins)? };
        Some(Factored {
            per,
            scales: scales_i8,
            mins: mins_i8,
            supers: supers.to_vec(),
            super_mins: if mins.is_empty() { Vec::new() } else { super_mins.to_vec() },
        })
    }
}

/// The panel width of the kernel that runs by default (eight when `QUANT_KERNEL` names what
/// cannot run: every call reports that error anyway).
fn default_width() -> usize {
    KernelChoice::Auto.resolve().map_or(8, width_for)
}

/// The row-major codes the constructors collect (`GroupWeights::codes` while building) from the
/// stored codes in input order: a byte each for the 6- and 8-bit kinds, two to a byte (the first in
/// the low nibble) for the 4-bit ones. Rows of whole groups (16 inputs at least) start on whole
/// bytes.
fn row_major_codes(kind: GroupCodes, stored: impl IntoIterator<Item = u8>) -> Vec<u8> {
    let mut it = stored.into_iter();
    if kind.bits() > 4 {
        return it.collect();
    }
    let mut out = Vec::with_capacity(it.size_hint().0 / 2);
    while let (Some(lo), Some(hi)) = (it.next(), it.next()) {
        out.push(lo | (hi << 4));
    }
    out
}

fn check_group(k: usize, group: usize) -> Result<usize, QuantError> {
    if group == 0 || !group.is_multiple_of(16) || group > 256 {
        return Err(QuantError::GroupSizeUnsupported { size: group });
    }
    if !k.is_multiple_of(group) {
        return Err(QuantError::NotABlockMultiple {
            what: "K (inputs per output channel)",
            format: "group",
            len: k,
            block: group,
        });
    }
    Ok(k / group)
}

fn groups_len(n: usize, groups: usize) -> Result<usize, QuantError> {
    n.checked_mul(groups).ok_or(QuantError::ShapeOverflow { rows: n, cols: groups })
}

/// Finite `f32` copies of `scales` (any [`QuantFloat`]; `f64` values are rounded to `f32`).
fn scales_f32<S: QuantFloat>(what: &'static str, scales: &[S]) -> Result<Vec<f32>, QuantError> {
    scales
        .iter()
        .enumerate()
        .map(|(index, s)| {
            let v = s.to_f64_exact();
            if v.is_finite() {
                Ok(f32::from_f64_nearest(v))
            } else {
                Err(QuantError::NonFiniteParameter { what, index, value: v })
            }
        })
        .collect()
}

impl GroupWeights {
    /// Symmetric 4-bit codes (`n x k`, row-major, two per byte as [`I4x2`] packs them) with one
    /// scale per group of `group` inputs (`n * k / group` scales, row-major).
    ///
    /// # Errors
    /// [`QuantError::GroupSizeUnsupported`]; [`QuantError::NotABlockMultiple`] when `k` is not
    /// a whole number of groups; [`QuantError::LengthMismatch`] for codes or scales of the wrong
    /// length; [`QuantError::NonFiniteParameter`] for a NaN or infinite scale.
    pub fn sym4<S: QuantFloat>(
        codes: &[I4x2],
        scales: &[S],
        n: usize,
        k: usize,
        group: usize,
    ) -> Result<Self, QuantError> {
        let mut w = Self::new_checked(GroupCodes::Sym4, n, k, group, scales)?;
        let len = n.checked_mul(k).ok_or(QuantError::ShapeOverflow { rows: n, cols: k })?;
        QuantError::check_length("4-bit codes (bytes)", I4x2::units_for(len), codes.len())?;
        // k is a multiple of 16, so rows start on whole bytes: the bytes are the rows.
        w.codes = codes.iter().map(|b| b.0 ^ 0x88).collect(); // q + 8 in each nibble
        Ok(w.into_panels())
    }

    /// Asymmetric 4-bit codes (as [`U4x2`] packs them) with one scale and one zero point
    /// (`0..=15`) per group.
    ///
    /// # Errors
    /// As [`GroupWeights::sym4`]; [`QuantError::ZeroPointOutOfRange`] for a zero point outside
    /// `0..=15`.
    pub fn asym4<S: QuantFloat>(
        codes: &[U4x2],
        scales: &[S],
        zero_points: &[i64],
        n: usize,
        k: usize,
        group: usize,
    ) -> Result<Self, QuantError> {
        let mut w = Self::new_checked(GroupCodes::Asym4, n, k, group, scales)?;
        let len = n.checked_mul(k).ok_or(QuantError::ShapeOverflow { rows: n, cols: k })?;
        QuantError::check_length("4-bit codes (bytes)", U4x2::units_for(len), codes.len())?;
        QuantError::check_length("zero points (one per group)", w.scales.len(), zero_points.len())?;
        w.zeros = zero_points
            .iter()
            .enumerate()
            .map(|(index, &z)| {
                u8::try_from(z).ok().filter(|&z| z <= 15).ok_or(QuantError::ZeroPointOutOfRange {
                    zero_point: i32::try_from(z).unwrap_or(if z < 0 { i32::MIN } else { i32::MAX }),
                    index,
                    operand: "u4",
                    min: 0,
                    max: 15,
                })
            })
            .collect::<Result<_, _>>()?;
        w.codes = codes.iter().map(|b| b.0).collect();
        Ok(w.into_panels())
    }

    /// Symmetric 8-bit codes (`n x k`, row-major) with one scale per group.
    ///
    /// # Errors
    /// As [`GroupWeights::sym4`].
    #[expect(clippy::as_conversions, reason = "i8 codes to their u8 bits, bit widths (<= 8) as usize")]
    pub fn sym8<S: QuantFloat>(
        codes: &[i8],
        scales: &[S],
        n: usize,
        k: usize,
        group: usize,
    ) -> Result<Self, QuantError> {
        let mut w = Self::new_checked(GroupCodes::Sym8, n, k, group, scales)?;
        let len = n.checked_mul(k).ok_or(QuantError::ShapeOverflow { rows: n, cols: k })?;
        QuantError::check_length("8-bit codes", len, codes.len())?;
        w.codes = codes.iter().map(|&q| q as u8).collect();
        Ok(w.into_panels())
    }

    /// llama.cpp's blocks of any [`BlockFormat`], `n` rows of `k` inputs as a GGUF file stores
    /// them (row after row, each row `k / block_len` blocks), held as their exact integer form
    /// (see the type's docs for each format's group and codes).
    ///
    /// # Errors
    /// [`QuantError::NotABlockMultiple`] when `k` is not a whole number of blocks;
    /// [`QuantError::LengthMismatch`] when `bytes` is not `n · k / block_len · block_bytes`
    /// long; [`QuantError::NonFiniteParameter`] naming the first block (row-major) whose scale
    /// or minimum is NaN or infinite; [`QuantError::FormatUnsupported`] for a format whose
    /// codes these kernels do not take.
    ///
    /// # Example
    /// ```
    /// use quant_core::BlockFormat;
    /// use quant_matmul::{GroupGemm, GroupWeights, MatMut, MatRef};
    ///
    /// let (n, k) = (8, 256);
    /// let w: Vec<f32> = (0..n * k).map(|i| ((i * 7 % 23) as f32 - 11.0) / 16.0).collect();
    /// let bytes = BlockFormat::Q4_K.quantize(&w)?;
    /// let gw = GroupWeights::from_blocks(BlockFormat::Q4_K, &bytes, n, k)?;
    /// let x = vec![0.5f32; k];
    /// let mut y = vec![0f32; n];
    /// GroupGemm::new().float_activations(MatRef::row_major(&x, 1, k)?, &gw, None, MatMut::row_major(&mut y, 1, n)?)?;
    /// // Against the dequantized weights: f32 sums of 256 products, within 1e-4 relative.
    /// let back = BlockFormat::Q4_K.dequantize(&bytes)?;
    /// for (r, y) in y.iter().enumerate() {
    ///     let want: f32 = back[r * k..(r + 1) * k].iter().map(|v| v * 0.5).sum();
    ///     assert!((y - want).abs() <= 1e-4 * want.abs().max(1.0), "{y} {want}");
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[expect(clippy::as_conversions, reason = "i8 codes to their u8 bits, level indices (< 16) to u8")]
    pub fn from_blocks(format: BlockFormat, bytes: &[u8], n: usize, k: usize) -> Result<Self, QuantError> {
        let (len, sub) = (format.block_len(), format.sub_block_len());
        if !k.is_multiple_of(len) {
            return Err(QuantError::NotABlockMultiple {
                what: "K (inputs per output channel)",
                format: format.name(),
                len: k,
                block: len,
            });
        }
        let blocks = groups_len(n, k / len)?;
        let expected =
            blocks.checked_mul(format.block_bytes()).ok_or(QuantError::ShapeOverflow { rows: n, cols: k })?;
        QuantError::check_length("block bytes", expected, bytes.len())?;
        let (kind, levels) = match format.codes() {
            BlockCodes::Signed { bits } if bits <= 4 => (GroupCodes::Sym4, [0; 16]),
            BlockCodes::Signed { bits } if bits <= 6 => (GroupCodes::Sym6, [0; 16]),
            BlockCodes::Signed { .. } => (GroupCodes::Sym8, [0; 16]),
            BlockCodes::Unsigned { bits } if bits <= 4 => (GroupCodes::Min4, [0; 16]),
            BlockCodes::Unsigned { bits } if bits <= 6 => (GroupCodes::Min6, [0; 16]),
            BlockCodes::Unsigned { .. } => (GroupCodes::Min8, [0; 16]),
            BlockCodes::Levels(l) => (GroupCodes::Levels4, *l),
            _ => {
                return Err(QuantError::FormatUnsupported {
                    format: format.name(),
                    reason: "the decode product has no kernel for its codes",
                })
            }
        };
        let (values, groups) = (blocks * len, blocks * (len / sub));
        let mut q = alloc::vec![0i8; values];
        let mut scales = alloc::vec![0f32; groups];
        let mut mins = alloc::vec![0f32; groups];
        format.integer_form_into(bytes, &mut q, &mut scales, &mut mins)?;
        // Levels: each level's first index (MXFP4's -0 level is its +0).
        let mut index = [0u8; 256];
        for (i, &l) in levels.iter().enumerate().rev() {
            index[usize::from(l as u8)] = i as u8;
        }
        let stored = |v: i8| match kind {
            GroupCodes::Sym4 => (v + 8) as u8,
            GroupCodes::Sym6 => (v + 32) as u8,
            GroupCodes::Levels4 => index[usize::from(v as u8)],
            GroupCodes::Asym4 | GroupCodes::Min4 | GroupCodes::Sym8 | GroupCodes::Min8 | GroupCodes::Min6 => v as u8,
        };
        let codes = row_major_codes(kind, q.iter().map(|&v| stored(v)));
        // The two-level formats' super-block factors, block after block.
        let (mut supers, mut super_mins) = (Vec::new(), Vec::new());
        for block in bytes.chunks_exact(format.block_bytes()) {
            match format.super_params(block) {
                Some((d, dmin)) => {
                    supers.push(d);
                    super_mins.push(dmin);
                }
                None => break,
            }
        }
        let w = GroupWeights {
            n,
            k,
            group: sub,
            codes_kind: kind,
            width: default_width(),
            codes,
            panels: Aligned::new(),
            scales,
            zeros: Vec::new(),
            mins: if kind.has_min() { mins } else { Vec::new() },
            levels,
            factored: None,
        };
        Ok(w.with_supers(supers, super_mins, len / sub).into_panels())
    }

    /// One of our two-level formats ([`SuperMatrix`], `rows x cols` = `n x k`), held as its
    /// exact parameters: one group per sub-block, its scale `d_j` (and offset `m_j`) the exact
    /// `f32` the format reconstructs with, so every weight is the format's value exactly (the
    /// offset grid's `d_j · v + m_j` without its two `f32` roundings):
    ///
    /// | grid | bits | codes as held |
    /// |---|---|---|
    /// | `sym` | 2 to 4 / 5, 6 / 7, 8 | [`GroupCodes::Sym4`] / [`GroupCodes::Sym6`] / [`GroupCodes::Sym8`] |
    /// | `offset` | 2 to 4 / 5, 6 / 7 | [`GroupCodes::Min4`] / [`GroupCodes::Min6`] / [`GroupCodes::Min8`] |
    /// | `zp` | 2 to 4 / 5 to 7 | [`GroupCodes::Asym4`] / [`GroupCodes::Sym8`] holding `q - z_j` |
    /// | `levels` | 4 / 5, 6 | [`GroupCodes::Levels4`] / [`GroupCodes::Sym8`] holding `L[q]` |
    ///
    /// # Errors
    /// [`QuantError::GroupSizeUnsupported`] for sub-blocks that are not a multiple of 16 from
    /// 16 to 256; [`QuantError::NotABlockMultiple`] when the rows are not whole sub-blocks;
    /// [`QuantError::FormatUnsupported`] for 8-bit `offset` and `zp` codes (their integers
    /// do not fit a signed byte); [`QuantError::NonFiniteParameter`] for a scale or offset
    /// that is not finite (index: row-major sub-block).
    ///
    /// # Example
    /// ```
    /// use quant_core::superblock::{quantize_super, Grid, SuperSpec};
    /// use quant_core::MatrixShape;
    /// use quant_matmul::{GroupCodes, GroupWeights};
    ///
    /// let (n, k) = (16, 512);
    /// let w: Vec<f32> = (0..n * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 640.0).collect();
    /// let spec = SuperSpec::new(Grid::Levels, 4, 16)?.with_super_len(Some(256))?;
    /// let q = quantize_super(&w, MatrixShape::new(n, k), spec, None)?;
    /// let gw = GroupWeights::from_super(&q)?;
    /// assert_eq!((gw.codes_kind(), gw.group_size()), (GroupCodes::Levels4, 16));
    /// let back: Vec<f32> = q.dequantize();
    /// assert_eq!(gw.value(3, 100) as f32, back[3 * k + 100]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[expect(
        clippy::as_conversions,
        reason = "codes checked to fit a byte (or a nibble) to u8/i8, levels (|L| <= 127) to i8"
    )]
    pub fn from_super(m: &SuperMatrix) -> Result<Self, QuantError> {
        let (spec, shape) = (m.spec(), m.shape());
        let (n, k, bits) = (shape.rows, shape.cols, spec.bits());
        let groups = check_group(k, spec.sub_len())?;
        let small = bits <= 4;
        let kind = match spec.grid() {
            Grid::Symmetric if small => GroupCodes::Sym4,
            Grid::Offset if small => GroupCodes::Min4,
            Grid::ZeroPoint if small => GroupCodes::Asym4,
            Grid::Levels if bits == 4 => GroupCodes::Levels4,
            Grid::Symmetric if bits <= 6 => GroupCodes::Sym6,
            Grid::Offset if bits <= 6 => GroupCodes::Min6,
            Grid::Offset if bits < 8 => GroupCodes::Min8,
            Grid::Symmetric | Grid::Levels => GroupCodes::Sym8,
            Grid::ZeroPoint if bits < 8 => GroupCodes::Sym8,
            Grid::Offset | Grid::ZeroPoint => {
                return Err(QuantError::FormatUnsupported {
                    format: if spec.grid() == Grid::Offset { "offset8" } else { "zp8" },
                    reason: "8-bit offset and zero-point codes do not fit a signed byte: use 7 bits or fewer",
                })
            }
        };
        let table = levels(bits);
        let mut level4 = [0i8; 16];
        if kind == GroupCodes::Levels4 {
            for (l, &v) in level4.iter_mut().zip(table) {
                *l = v as i8;
            }
        }
        let total = groups_len(n, groups)?;
        let mut w = GroupWeights {
            n,
            k,
            group: spec.sub_len(),
            codes_kind: kind,
            width: default_width(),
            codes: Vec::new(),
            panels: Aligned::new(),
            scales: Vec::with_capacity(total),
            zeros: Vec::new(),
            mins: Vec::new(),
            levels: level4,
            factored: None,
        };
        let mut held = Vec::with_capacity(n * k);
        for r in 0..n {
            for j in 0..groups {
                let (d, mz) = m.sub_block_params(r, j);
                let index = r * groups + j;
                if !d.is_finite() {
                    return Err(QuantError::NonFiniteParameter {
                        what: "scale of sub-block",
                        index,
                        value: f64::from(d),
                    });
                }
                if !mz.is_finite() {
                    return Err(QuantError::NonFiniteParameter {
                        what: "offset of sub-block",
                        index,
                        value: f64::from(mz),
                    });
                }
                w.scales.push(d);
                let z = if spec.grid() == Grid::ZeroPoint { mz as i16 } else { 0 };
                match kind {
                    GroupCodes::Min4 | GroupCodes::Min8 | GroupCodes::Min6 => w.mins.push(mz),
                    GroupCodes::Asym4 => w.zeros.push(z as u8),
                    GroupCodes::Sym4 | GroupCodes::Sym8 | GroupCodes::Sym6 | GroupCodes::Levels4 => {}
                }
                for c in j * spec.sub_len()..(j + 1) * spec.sub_len() {
                    let q = m.code(r, c);
                    held.push(match (kind, spec.grid()) {
                        (GroupCodes::Sym4, _) => (q + 8) as u8,
                        (GroupCodes::Sym6, _) => (q + 32) as u8,
                        (GroupCodes::Sym8, Grid::Levels) => table[q as usize] as u8,
                        (GroupCodes::Sym8, Grid::ZeroPoint) => (q - z) as u8,
                        _ => q as u8,
                    });
                }
            }
        }
        w.codes = row_major_codes(kind, held);
        // Sub-block scales of a few bits times a super-block `f16`: the factors.
        let (supers, super_mins) = if matches!(spec.sub_scale(), SubScale::Bits(_)) {
            let offsets = m.super_offsets();
            let min = |i: usize| offsets.get(i).map_or(0.0, |v| v.to_f32());
            (m.super_scales().iter().map(|v| v.to_f32()).collect(), (0..m.super_scales().len()).map(min).collect())
        } else {
            (Vec::new(), Vec::new())
        };
        let per = spec.super_len().map_or(groups, |len| len / spec.sub_len()).max(1);
        Ok(w.with_supers(supers, super_mins, per).into_panels())
    }

    /// llama.cpp `Q4_0` blocks: [`GroupWeights::from_blocks`] with [`BlockFormat::Q4_0`].
    ///
    /// # Errors
    /// As [`GroupWeights::from_blocks`].
    pub fn q4_0(bytes: &[u8], n: usize, k: usize) -> Result<Self, QuantError> {
        Self::from_blocks(BlockFormat::Q4_0, bytes, n, k)
    }

    /// llama.cpp `Q4_1` blocks: [`GroupWeights::from_blocks`] with [`BlockFormat::Q4_1`].
    ///
    /// # Errors
    /// As [`GroupWeights::from_blocks`].
    pub fn q4_1(bytes: &[u8], n: usize, k: usize) -> Result<Self, QuantError> {
        Self::from_blocks(BlockFormat::Q4_1, bytes, n, k)
    }

    /// llama.cpp `Q8_0` blocks: [`GroupWeights::from_blocks`] with [`BlockFormat::Q8_0`].
    ///
    /// # Errors
    /// As [`GroupWeights::from_blocks`].
    pub fn q8_0(bytes: &[u8], n: usize, k: usize) -> Result<Self, QuantError> {
        Self::from_blocks(BlockFormat::Q8_0, bytes, n, k)
    }

    fn new_checked<S: QuantFloat>(
        kind: GroupCodes,
        n: usize,
        k: usize,
        group: usize,
        scales: &[S],
    ) -> Result<Self, QuantError> {
        let groups = check_group(k, group)?;
        QuantError::check_length("scales (one per group)", groups_len(n, groups)?, scales.len())?;
        Ok(GroupWeights {
            n,
            k,
            group,
            codes_kind: kind,
            width: default_width(),
            codes: Vec::new(),
            panels: Aligned::new(),
            scales: scales_f32("scale of group", scales)?,
            zeros: Vec::new(),
            mins: Vec::new(),
            levels: [0; 16],
            factored: None,
        })
    }

    /// Output channels `N`.
    #[must_use]
    pub fn n(&self) -> usize {
        self.n
    }

    /// Inputs `K`.
    #[must_use]
    pub fn k(&self) -> usize {
        self.k
    }

    /// Inputs per group.
    #[must_use]
    pub fn group_size(&self) -> usize {
        self.group
    }

    /// Inputs per activation scale in the int8 mode ([`crate::GroupGemm::int8_activations`]):
    /// the super-block (256 for the k-quants and `IQ4_XS`) where the scales are held as an
    /// integer per group times a factor per super-block, the group otherwise (see the
    /// [`crate::group`] docs).
    #[must_use]
    pub fn activation_block(&self) -> usize {
        self.factored.as_ref().map_or(self.group, |f| f.per * self.group)
    }

    /// Whether the scales are held in the two-level form (an `i8` a group times an `f32` a
    /// super-block): the int8 mode then takes one activation scale a super-block.
    pub(crate) fn two_level(&self) -> bool {
        self.factored.is_some()
    }

    /// The code format.
    #[must_use]
    pub fn codes_kind(&self) -> GroupCodes {
        self.codes_kind
    }

    /// Groups per output channel.
    #[must_use]
    pub fn groups(&self) -> usize {
        self.k / self.group
    }

    /// Rearranges the row-major codes and parameters the constructors collect into the
    /// panel layout of `self.width` (see the type's docs; the layout is the kernels',
    /// `arch::decode`).
    fn into_panels(mut self) -> Self {
        let (n, k, group, groups, w) = (self.n, self.k, self.group, self.groups(), self.width);
        self.panels = pack_codes(self.codes_kind, n, k, group, w, &self.codes);
        self.codes = Vec::new();
        if let Some(f) = &mut self.factored {
            let supers = groups / f.per;
            f.scales = pack_params(&f.scales, n, groups, w);
            f.supers = pack_params(&f.supers, n, supers, w);
            if !f.mins.is_empty() {
                f.mins = pack_params(&f.mins, n, groups, w);
                f.super_mins = pack_params(&f.super_mins, n, supers, w);
            }
            self.scales = Vec::new();
            self.mins = Vec::new();
        } else {
            self.scales = pack_params(&self.scales, n, groups, w);
            if !self.mins.is_empty() {
                self.mins = pack_params(&self.mins, n, groups, w);
            }
        }
        if !self.zeros.is_empty() {
            self.zeros = pack_params(&self.zeros, n, groups, w);
        }
        self
    }

    /// The row-major weights being built with their super-blocks' factors (`per` groups each,
    /// row-major; the minimums' empty or all zero without minimums): the factored form where
    /// every group's scale and minimum is its factor times an `i8`, the plain one otherwise.
    fn with_supers(mut self, supers: Vec<f32>, super_mins: Vec<f32>, per: usize) -> Self {
        let groups = self.groups();
        if per == 0 || !groups.is_multiple_of(per) {
            return self;
        }
        self.factored = Factored::of(per, &self.scales, &self.mins, &supers, &super_mins);
        self
    }

    /// The packed weights as the kernels read them.
    #[inline]
    pub(crate) fn view(&self) -> Panels<'_> {
        Panels {
            n: self.n,
            k: self.k,
            group: self.group,
            kind: self.codes_kind,
            width: self.width,
            codes: &self.panels,
            scales: &self.scales,
            zeros: &self.zeros,
            mins: &self.mins,
            levels: self.levels,
            factored: self.factored.as_ref().map(|f| FactoredView {
                per: f.per,
                scales: &f.scales,
                mins: &f.mins,
                supers: &f.supers,
                super_mins: &f.super_mins,
            }),
        }
    }

    /// The layout these weights are packed in: `"8 channels"` (every tier but `avx512vnni`
    /// and `amx`) or `"16 channels"` (every tier).
    #[must_use]
    pub fn layout(&self) -> &'static str {
        if self.width == WIDE {
            "16 channels (portable, avx2, avxvnni, avx512vnni, amx)"
        } else {
            "8 channels (portable, avx2, avxvnni)"
        }
    }

    /// Channels per panel (8 or 16).
    pub(crate) fn width(&self) -> usize {
        self.width
    }

    /// `Ok` when the kernel of `tier` takes this layout, else
    /// [`QuantError::PackedForOtherKernel`].
    pub(crate) fn check_layout(&self, tier: Tier) -> Result<(), QuantError> {
        if width_for(tier) <= self.width {
            Ok(())
        } else {
            Err(QuantError::PackedForOtherKernel { packed: self.layout(), kernel: tier.name() })
        }
    }

    /// The same weights packed in the layout of `kernel` (a copy; the values are unchanged).
    ///
    /// # Errors
    /// [`QuantError::KernelUnavailable`] / [`QuantError::UnknownKernel`] as
    /// [`crate::GroupGemm::kernel_name`].
    pub fn for_kernel(&self, kernel: KernelChoice) -> Result<Self, QuantError> {
        let width = width_for(kernel.resolve()?);
        if width == self.width {
            return Ok(self.clone());
        }
        let w = self.unpacked(width);
        let Some(f) = &self.factored else { return Ok(w.into_panels()) };
        let (n, view) = (self.n, self.view());
        let supers = self.groups() / f.per;
        let factors = |v: &[f32]| -> Vec<f32> {
            if v.is_empty() {
                return Vec::new();
            }
            (0..n * supers).map(|i| v[view.super_index(i / supers, i % supers)]).collect()
        };
        Ok(w.with_supers(factors(&f.supers), factors(&f.super_mins), f.per).into_panels())
    }

    /// These weights as the constructors collect them, to be packed `width` channels a panel:
    /// row-major codes, and every scale and minimum as its `f32` value (the plain form).
    #[expect(clippy::as_conversions, reason = "bit widths (<= 8) as usize")]
    fn unpacked(&self, width: usize) -> Self {
        let (n, k, groups, view) = (self.n, self.k, self.groups(), self.view());
        let bits = self.codes_kind.bits() as usize;
        let row_bytes = if bits > 4 { k } else { k / 2 };
        let mut rows = alloc::vec![0u8; n * row_bytes];
        for r in 0..n {
            for c in 0..k {
                let u = view.stored_code(r, c);
                if bits > 4 {
                    rows[r * row_bytes + c] = u;
                } else {
                    rows[r * row_bytes + c / 2] |= u << (4 * (c % 2));
                }
            }
        }
        let (scales, mins): (Vec<f32>, Vec<f32>) = (0..n * groups)
            .map(|i| {
                let (s, _, m) = view.params(i / groups, i % groups);
                (s, m)
            })
            .unzip();
        GroupWeights {
            n,
            k,
            group: self.group,
            codes_kind: self.codes_kind,
            width,
            codes: rows,
            panels: Aligned::new(),
            scales,
            zeros: if self.zeros.is_empty() {
                Vec::new()
            } else {
                (0..n * groups).map(|i| self.zeros[view.param_index(i / groups, i % groups)]).collect()
            },
            mins: if self.codes_kind.has_min() { mins } else { Vec::new() },
            levels: self.levels,
            factored: None,
        }
    }

    /// The scale, integer zero point and float minimum of output channel `r`, group `g`, as the
    /// kernels use them: weight `= scale · (u - zero point) + minimum` for the stored code `u`
    /// (zero point 8 for `Sym4`, whose codes are stored as `q + 8`; 0 where the format has none;
    /// minimum 0 except for `Min4` and `Min8`).
    ///
    /// # Panics
    /// When `r >= n` or `g >= groups`.
    #[must_use]
    pub fn params(&self, r: usize, g: usize) -> (f32, i32, f32) {
        assert!(r < self.n && g < self.groups(), "group ({r}, {g}) outside {} x {}", self.n, self.groups());
        self.view().params(r, g)
    }

    /// Weight `(r, c)` exactly, in `f64`: `s · (u - z) + m` (every product and sum of an `f32`
    /// and a small integer is exact in `f64`).
    #[must_use]
    pub fn value(&self, r: usize, c: usize) -> f64 {
        let (s, z, m) = self.params(r, c / self.group);
        f64::from(s) * f64::from(self.view().code(r, c) - z) + f64::from(m)
    }

    /// Bytes this form holds: the codes, the scales and minimums (`f32` each, or for the
    /// two-level formats a byte each plus an `f32` factor per super-block), one byte per zero
    /// point.
    #[must_use]
    pub fn bytes(&self) -> usize {
        let factored = self
            .factored
            .as_ref()
            .map_or(0, |f| f.scales.len() + f.mins.len() + 4 * (f.supers.len() + f.super_mins.len()));
        self.panels.len() + 4 * self.scales.len() + self.zeros.len() + 4 * self.mins.len() + factored
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use quant_core::BlockFormat;
    use quant_traits::cpu::Tier;

    use super::{Factored, GroupWeights};
    use crate::{ActivationBlocks, GroupGemm, KernelChoice, MatMut, MatRef};

    /// The two-level formats hold their scales and minimums factored (a byte a group and an
    /// `f32` a super-block and channel), and multiply to the very bits of the same weights held
    /// with `f32` scales, in both modes (the int8 one with an activation scale a group, as the
    /// plain form takes) and on every tier this CPU has.
    #[test]
    #[expect(clippy::as_conversions, reason = "test data from a counter")]
    fn factored_scales_give_the_plain_forms_bits() -> Result<(), quant_traits::QuantError> {
        let (m, n, k) = (9, 24, 512);
        let w: Vec<f32> = (0..n * k).map(|i| (((i * 7919) % 1009) as f32 - 504.0) / 2000.0).collect();
        let x: Vec<f32> = (0..m * k).map(|i| (((i * 104_729) % 997) as f32 - 498.0) / 300.0).collect();
        let formats = [
            (BlockFormat::Q2_K, 16, true),
            (BlockFormat::Q3_K, 16, false),
            (BlockFormat::Q4_K, 32, true),
            (BlockFormat::Q5_K, 32, true),
            (BlockFormat::Q6_K, 16, false),
            (BlockFormat::IQ4_XS, 32, false),
        ];
        let tiers: Vec<Tier> = Tier::ALL.into_iter().filter(|t| t.is_available()).collect();
        for (format, group, with_min) in formats {
            let gw = GroupWeights::from_blocks(format, &format.quantize(&w)?, n, k)?;
            let plain = gw.unpacked(gw.width).into_panels();
            assert!(gw.factored.is_some() && plain.factored.is_none(), "{format:?}");
            // Codes, a byte (two with a minimum) a group, two `f32` (one) per 256 inputs.
            let (groups, supers) = (n * k / group, n * k / 256);
            let per_group = if with_min { 2 } else { 1 };
            let packed_n = n.next_multiple_of(gw.width);
            let scale = |v: usize| v * packed_n / n;
            assert_eq!(gw.bytes(), gw.panels.len() + scale(per_group * (groups + 4 * supers)), "{format:?}");
            assert!(gw.bytes() < plain.bytes(), "{format:?}");
            for tier in &tiers {
                let g = GroupGemm::new().kernel(KernelChoice::of(*tier)).activation_blocks(ActivationBlocks::Group);
                let (ours, theirs) =
                    (gw.for_kernel(KernelChoice::of(*tier))?, plain.for_kernel(KernelChoice::of(*tier))?);
                for int8 in [true, false] {
                    let (mut y, mut want) = (vec![0f32; m * n], vec![0f32; m * n]);
                    for (wt, out) in [(&ours, &mut y), (&theirs, &mut want)] {
                        let (xv, yv) = (MatRef::row_major(&x, m, k)?, MatMut::row_major(out, m, n)?);
                        if int8 {
                            g.int8_activations(xv, wt, None, yv)?;
                        } else {
                            g.float_activations(xv, wt, None, yv)?;
                        }
                    }
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&y), bits(&want), "{format:?} {tier} int8 {int8}");
                }
            }
        }
        Ok(())
    }

    /// A scale that is not its factor times an integer in `-128..=127`, exactly, keeps the
    /// plain form for the whole matrix.
    #[test]
    fn scales_that_do_not_factor_stay_plain() {
        let supers = [0.5f32, 0.25];
        assert!(Factored::of(2, &[1.0, -64.0, 0.25, 0.0], &[], &supers, &[]).is_some());
        assert!(Factored::of(2, &[1.0, -64.5, 0.25, 0.0], &[], &supers, &[]).is_none()); // -129
        assert!(Factored::of(2, &[1.0, 0.3, 0.25, 0.0], &[], &supers, &[]).is_none()); // not a multiple
        assert!(Factored::of(2, &[1.0, 2.0, 0.25, 0.0], &[1.0], &supers, &[]).is_none()); // minimums' factors missing
        assert!(Factored::of(2, &[0.0, 0.0], &[], &[0.0], &[]).is_some()); // a zero factor: zero scales
        assert!(Factored::of(2, &[0.0, 1.0], &[], &[0.0], &[]).is_none());
    }
}
