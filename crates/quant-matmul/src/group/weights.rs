//! Weights quantized in groups along their inputs: the formats, their validation, and the
//! exact value of every weight.

use alloc::vec::Vec;

use quant_traits::half::f16;
use quant_traits::{I4x2, QuantError, QuantFloat, Storage, U4x2};

use crate::aligned::Aligned;
pub use crate::arch::decode::GroupCodes;
use crate::arch::decode::{pack_codes, pack_params, width_for, Panels, WIDE};
use crate::arch::{KernelChoice, Tier};

/// A weight matrix `W` (`N x K`: output channels by inputs) quantized in groups of `G`
/// consecutive inputs, with one scale per group (and a zero point or a minimum, by format).
///
/// Every constructor packs the weights once into the layout the kernels read: output
/// channels in panels of `W` (8, or 16 where the kernel that runs has zmm registers: the
/// `avx512vnni` and `amx` tiers), and within a panel, group after group, the channels' codes
/// interleaved four inputs at a time: 8-bit codes as `[quad][channel][4 bytes]`, 4-bit codes
/// (unsigned, `Sym4` stored as `q + 8`) as `[8 inputs][channel][4 bytes]` with inputs `8p + j`
/// in the low nibble of byte `j` and `8p + 4 + j` in its high nibble; then each group's `W`
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
/// Group sizes: a multiple of 32 from 32 to 256, which keeps every per-group integer dot
/// product of the int8-activation mode exact in `f32` (`127 · 128 · 256 < 2^24`).
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
    /// `Min4`: one per group (as `scales`); empty otherwise.
    mins: Vec<f32>,
}

/// The panel width of the kernel that runs by default (eight when `QUANT_KERNEL` names what
/// cannot run: every call reports that error anyway).
fn default_width() -> usize {
    KernelChoice::Auto.resolve().map_or(8, width_for)
}

/// llama.cpp's block size.
const GGML_BLOCK: usize = 32;

fn check_group(k: usize, group: usize) -> Result<usize, QuantError> {
    if group == 0 || !group.is_multiple_of(32) || group > 256 {
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
        // k is a multiple of 32, so rows start on whole bytes: the bytes are the rows.
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

    /// llama.cpp `Q4_0` blocks (18 bytes per 32 inputs: an `f16` scale `d`, then 16 bytes whose
    /// low nibbles are inputs 0..16 and high nibbles inputs 16..32, each `q + 8`), `n` rows of
    /// `k` inputs as stored in a GGUF file. Groups of 32.
    ///
    /// # Errors
    /// [`QuantError::NotABlockMultiple`] when `k` is not a multiple of 32;
    /// [`QuantError::LengthMismatch`] when `bytes` is not `n * k / 32 * 18` long;
    /// [`QuantError::NonFiniteParameter`] for a NaN or infinite `d`.
    pub fn q4_0(bytes: &[u8], n: usize, k: usize) -> Result<Self, QuantError> {
        Self::from_ggml(GroupCodes::Sym4, "Q4_0", 18, bytes, n, k)
    }

    /// llama.cpp `Q4_1` blocks (20 bytes per 32 inputs: `f16` scale `d`, `f16` minimum `m`,
    /// then 16 bytes of nibbles as in `Q4_0`, `w = d · q + m`).
    ///
    /// # Errors
    /// As [`GroupWeights::q4_0`] (20 bytes per block).
    pub fn q4_1(bytes: &[u8], n: usize, k: usize) -> Result<Self, QuantError> {
        Self::from_ggml(GroupCodes::Min4, "Q4_1", 20, bytes, n, k)
    }

    /// llama.cpp `Q8_0` blocks (34 bytes per 32 inputs: `f16` scale `d`, then 32 `i8` codes).
    ///
    /// # Errors
    /// As [`GroupWeights::q4_0`] (34 bytes per block).
    pub fn q8_0(bytes: &[u8], n: usize, k: usize) -> Result<Self, QuantError> {
        Self::from_ggml(GroupCodes::Sym8, "Q8_0", 34, bytes, n, k)
    }

    fn from_ggml(
        kind: GroupCodes,
        format: &'static str,
        block_bytes: usize,
        bytes: &[u8],
        n: usize,
        k: usize,
    ) -> Result<Self, QuantError> {
        if !k.is_multiple_of(GGML_BLOCK) {
            return Err(QuantError::NotABlockMultiple {
                what: "K (inputs per output channel)",
                format,
                len: k,
                block: GGML_BLOCK,
            });
        }
        let blocks = groups_len(n, k / GGML_BLOCK)?;
        let expected = blocks.checked_mul(block_bytes).ok_or(QuantError::ShapeOverflow { rows: n, cols: k })?;
        QuantError::check_length("block bytes", expected, bytes.len())?;
        let half = |b: &[u8], at: usize| f16::from_le_bytes([b[at], b[at + 1]]).to_f32();
        let mut w = GroupWeights {
            n,
            k,
            group: GGML_BLOCK,
            codes_kind: kind,
            width: default_width(),
            codes: Vec::with_capacity(blocks * if kind == GroupCodes::Sym8 { 32 } else { 16 }),
            panels: Aligned::new(),
            scales: Vec::with_capacity(blocks),
            zeros: Vec::new(),
            mins: Vec::new(),
        };
        for (index, b) in bytes.chunks_exact(block_bytes).enumerate() {
            let d = half(b, 0);
            if !d.is_finite() {
                return Err(QuantError::NonFiniteParameter { what: "scale of block", index, value: f64::from(d) });
            }
            w.scales.push(d);
            let qs = match kind {
                GroupCodes::Min4 => {
                    let m = half(b, 2);
                    if !m.is_finite() {
                        return Err(QuantError::NonFiniteParameter {
                            what: "minimum of block",
                            index,
                            value: f64::from(m),
                        });
                    }
                    w.mins.push(m);
                    &b[4..20]
                }
                GroupCodes::Sym8 => {
                    w.codes.extend_from_slice(&b[2..34]);
                    continue;
                }
                _ => &b[2..18],
            };
            // ggml: input j in the low nibble of byte j, input j + 16 in its high nibble.
            // Ours: inputs 2i and 2i + 1 in byte i, low nibble first.
            let nib = |j: usize| if j < 16 { qs[j] & 0x0f } else { qs[j - 16] >> 4 };
            for i in 0..16 {
                w.codes.push(nib(2 * i) | (nib(2 * i + 1) << 4));
            }
        }
        Ok(w.into_panels())
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
        self.scales = pack_params(&self.scales, n, groups, w);
        if !self.mins.is_empty() {
            self.mins = pack_params(&self.mins, n, groups, w);
        }
        if !self.zeros.is_empty() {
            self.zeros = pack_params(&self.zeros, n, groups, w);
        }
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
    #[expect(clippy::as_conversions, reason = "i8 codes to their u8 bits, bit widths (<= 8) as usize")]
    pub fn for_kernel(&self, kernel: KernelChoice) -> Result<Self, QuantError> {
        let width = width_for(kernel.resolve()?);
        if width == self.width {
            return Ok(self.clone());
        }
        let (n, k, groups) = (self.n, self.k, self.groups());
        let bits = self.codes_kind.bits() as usize;
        let row_bytes = k * bits / 8;
        let mut rows = alloc::vec![0u8; n * row_bytes];
        for r in 0..n {
            for c in 0..k {
                let u = self.view().stored_code(r, c);
                if bits == 8 {
                    rows[r * row_bytes + c] = u;
                } else {
                    rows[r * row_bytes + c / 2] |= u << (4 * (c % 2));
                }
            }
        }
        let gather = |v: &[f32]| -> Vec<f32> {
            (0..n * groups).map(|i| v[self.view().param_index(i / groups, i % groups)]).collect()
        };
        let w = GroupWeights {
            n,
            k,
            group: self.group,
            codes_kind: self.codes_kind,
            width,
            codes: rows,
            panels: Aligned::new(),
            scales: gather(&self.scales),
            zeros: if self.zeros.is_empty() {
                Vec::new()
            } else {
                (0..n * groups).map(|i| self.zeros[self.view().param_index(i / groups, i % groups)]).collect()
            },
            mins: if self.mins.is_empty() { Vec::new() } else { gather(&self.mins) },
        };
        Ok(w.into_panels())
    }

    /// The scale, integer zero point and float minimum of output channel `r`, group `g`, as the
    /// kernels use them: weight `= scale · (u - zero point) + minimum` for the stored code `u`
    /// (zero point 8 for `Sym4`, whose codes are stored as `q + 8`; 0 where the format has none;
    /// minimum 0 except for `Min4`).
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

    /// Bytes this form holds: the codes, `f32` scales and minimums, one byte per zero point.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.panels.len() + 4 * self.scales.len() + self.zeros.len() + 4 * self.mins.len()
    }
}
