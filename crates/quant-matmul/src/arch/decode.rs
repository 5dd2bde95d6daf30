//! The decode product's kernel contract and the weight layout its kernels read: the panels of
//! [`crate::GroupWeights`] (8 or 16 output channels, codes interleaved four inputs at a time;
//! see that type's docs), the views the kernels take of weights and activations, and the
//! portable references that define every result bit for bit (the arithmetic is written out in
//! [`crate::group`]'s docs).
//!
//! Each tier implements [`DecodeKernel`] in its own module, beside its GEMM micro-kernel:
//! `WIDTH`, the panel width its kernels take, and the int8- and float-mode kernels.

use alloc::vec::Vec;

use quant_traits::cast::fma_f32;
use quant_traits::cpu::TierKernels;

use super::{dispatch, Tier};
use crate::aligned::Aligned;

/// What a weight's code stands for (`s` the group's scale, `u` the stored code).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GroupCodes {
    /// Signed 4-bit codes `q` in `-8..=7`: `w = s · q`. Our symmetric 4-bit ([`I4x2`](quant_traits::I4x2)), ONNX
    /// `INT4`, llama.cpp `Q4_0` (which stores `q + 8`) and `Q3_K` (`q` in `-4..=3`).
    Sym4,
    /// Unsigned 4-bit codes `u` in `0..=15` with an integer zero point `z` per group:
    /// `w = s · (u - z)`. Our asymmetric 4-bit ([`U4x2`](quant_traits::U4x2)), ONNX Runtime's `MatMulNBits`.
    Asym4,
    /// Unsigned 4-bit codes `u` in `0..=15` with a float minimum `m` per group:
    /// `w = s · u + m`. llama.cpp `Q4_1`, `Q4_K` and `Q2_K` (`u` in `0..=3`).
    Min4,
    /// Signed 8-bit codes `q`: `w = s · q`. Our symmetric `i8`, llama.cpp `Q8_0`, and the
    /// signed 5-bit format held in a byte each (`Q5_0`).
    Sym8,
    /// Unsigned 6-bit codes `u` in `0..=63` standing for `u - 32`: `w = s · (u - 32)`.
    /// llama.cpp `Q6_K`, and `Q5_0` (its `q` in `-16..=15` held as `q + 32`). Held in 6 bits: a
    /// plane of the low nibbles (the 4-bit layout) and a plane of the top two bits (see
    /// [`crate::GroupWeights`]).
    Sym6,
    /// Unsigned codes `u` in `0..=63`, held as `Sym6` holds them, with a float minimum `m` per
    /// group: `w = s · u + m`. llama.cpp `Q5_1` and `Q5_K` (`u` in `0..=31`).
    Min6,
    /// Unsigned codes `u` held in a byte each with a float minimum `m` per group:
    /// `w = s · u + m`. llama.cpp `Q5_1` and `Q5_K` (`u` in `0..=31`).
    Min8,
    /// 4-bit indices `u` into 16 signed 8-bit levels `L` (one table for the whole matrix):
    /// `w = s · L[u]`. llama.cpp `MXFP4` (its levels `0, ±1, ±2, ±3, ±4, ±6, ±8, ±12`),
    /// `IQ4_NL` and `IQ4_XS` (`-127 ..= 113`), our 4-bit `levels` grid.
    Levels4,
}

impl GroupCodes {
    /// Bits per code as stored here.
    #[must_use]
    pub fn bits(self) -> u32 {
        match self {
            GroupCodes::Sym8 | GroupCodes::Min8 => 8,
            GroupCodes::Sym6 | GroupCodes::Min6 => 6,
            GroupCodes::Sym4 | GroupCodes::Asym4 | GroupCodes::Min4 | GroupCodes::Levels4 => 4,
        }
    }

    /// Whether each group has a float minimum (`w = s · u + m`).
    #[must_use]
    pub fn has_min(self) -> bool {
        match self {
            GroupCodes::Min4 | GroupCodes::Min8 | GroupCodes::Min6 => true,
            GroupCodes::Sym4 | GroupCodes::Asym4 | GroupCodes::Sym8 | GroupCodes::Sym6 | GroupCodes::Levels4 => false,
        }
    }

    /// What the unsigned bytes the VNNI kernels multiply exceed the signed value by, the same
    /// for every group: 8 for `Sym4` (`q + 8` stored), 32 for `Sym6`, 128 for the 8-bit codes
    /// and levels (the top bit flipped), 0 where the stored code is the value (`Min4`) or the
    /// zero point varies by channel (`Asym4`).
    pub(crate) fn unsigned_offset(self) -> i32 {
        match self {
            GroupCodes::Sym4 => 8,
            GroupCodes::Sym6 => 32,
            GroupCodes::Sym8 | GroupCodes::Min8 | GroupCodes::Levels4 => 128,
            GroupCodes::Asym4 | GroupCodes::Min4 | GroupCodes::Min6 => 0,
        }
    }
}

/// Output channels per lane group: the eight lanes of a ymm register, the unit the driver,
/// the reference and the eight-channel kernels work in.
pub(crate) const PANEL: usize = 8;

/// Output channels per panel of the 16-channel layout (the zmm kernels').
pub(crate) const WIDE: usize = 16;

/// The panel width the kernels of `tier` take ([`DecodeKernel::WIDTH`]).
pub(crate) fn width_for(tier: Tier) -> usize {
    dispatch!(tier, K => <K as DecodeKernel>::WIDTH)
}

/// The layout's codes: row-major codes (`row_bytes` per output channel; 4-bit codes as input
/// pairs, low nibble first) rearranged into panels of `width` channels, group after group,
/// four inputs at a time (see [`crate::GroupWeights`]); channels past `n` are zero.
#[expect(clippy::as_conversions, reason = "bit widths (<= 8) as usize, sums and codes (< 2^24) to f32: exact")]
pub(crate) fn pack_codes(kind: GroupCodes, n: usize, k: usize, group: usize, width: usize, rows: &[u8]) -> Aligned<u8> {
    let bits = kind.bits() as usize;
    // Row-major: a byte per code above 4 bits, two codes a byte otherwise.
    let (groups, panels, row_bytes) = (k / group, n.div_ceil(width), if bits > 4 { k } else { k / 2 });
    // The code of (row r, input c) from the row-major bytes.
    let code = |r: usize, c: usize| -> u8 {
        if r >= n {
            return 0;
        }
        let row = &rows[r * row_bytes..(r + 1) * row_bytes];
        if bits > 4 {
            row[c]
        } else {
            (row[c / 2] >> (4 * (c % 2))) & 0x0f
        }
    };
    let gbytes = group * width * bits / 8;
    let mut codes = Aligned::zeroed(panels * groups * gbytes);
    for p in 0..panels {
        for g in 0..groups {
            let dst = &mut codes[(p * groups + g) * gbytes..][..gbytes];
            for (l, r) in (p * width..(p + 1) * width).enumerate() {
                let first = g * group;
                if bits == 8 {
                    for q in 0..group / 4 {
                        for j in 0..4 {
                            dst[(q * width + l) * 4 + j] = code(r, first + 4 * q + j);
                        }
                    }
                } else {
                    for e in 0..group / 8 {
                        for j in 0..4 {
                            let (lo, hi) = (code(r, first + 8 * e + j), code(r, first + 8 * e + 4 + j));
                            dst[(e * width + l) * 4 + j] = (lo & 0x0f) | (hi << 4);
                            if bits == 6 {
                                // The top two bits of both in the lane's nibble of the high plane.
                                let (at, shift) = six_bit_high(group, width, e, l * 4 + j);
                                dst[at] |= ((lo >> 4) | ((hi >> 4) << 2)) << shift;
                            }
                        }
                    }
                }
            }
        }
    }
    codes
}

/// Where the top two bits of a 6-bit group's codes are: for step `e` (inputs `8e .. 8e + 8`)
/// and byte lane `lane` of the step's `4 · width` (channel `lane / 4`, inputs `8e + lane % 4`
/// and `8e + 4 + lane % 4`), the byte offset in the group and the shift of the lane's nibble
/// (bits 0-1 the first input's, 2-3 the second's). After the group's `group · width / 2` bytes
/// of low nibbles, each pair of steps has a byte per lane, 32 per eight channels: the first
/// step's nibble low, the second's high, so that one load serves two steps (the second
/// shifted by 4) and a lane group's bytes are its own 32.
pub(crate) fn six_bit_high(group: usize, width: usize, e: usize, lane: usize) -> (usize, u32) {
    let byte = group * width / 2 + (e / 2) * 4 * width + lane;
    (byte, if e.is_multiple_of(2) { 0 } else { 4 })
}

/// The layout's parameters: one value per (channel, group), row-major (`channel * groups +
/// group`), rearranged as `[panel][group][width]`; channels past `n` get the default.
pub(crate) fn pack_params<T: Copy + Default>(v: &[T], n: usize, groups: usize, width: usize) -> Vec<T> {
    let mut out = alloc::vec![T::default(); n.div_ceil(width) * groups * width];
    for r in 0..n {
        for g in 0..groups {
            out[((r / width) * groups + g) * width + r % width] = v[r * groups + g];
        }
    }
    out
}

/// Weights in the panel layout, as the kernels read them.
#[derive(Copy, Clone)]
pub(crate) struct Panels<'a> {
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) group: usize,
    pub(crate) kind: GroupCodes,
    /// Channels per panel: 8 or 16.
    pub(crate) width: usize,
    pub(crate) codes: &'a [u8],
    pub(crate) scales: &'a [f32],
    pub(crate) zeros: &'a [u8],
    pub(crate) mins: &'a [f32],
    /// `Levels4`: the 16 levels (zeros otherwise).
    pub(crate) levels: [i8; 16],
    /// The two-level form, where `scales` and `mins` are empty.
    pub(crate) factored: Option<FactoredView<'a>>,
}

/// Scales and minimums as an `i8` per group times an `f32` factor per super-block of `per`
/// groups (the layout's `[panel][group][W]` and `[panel][super-block][W]`): each group's value
/// is the `f32` product `factor · i8`.
#[derive(Copy, Clone)]
pub(crate) struct FactoredView<'a> {
    pub(crate) per: usize,
    pub(crate) scales: &'a [i8],
    /// Empty without minimums.
    pub(crate) mins: &'a [i8],
    pub(crate) supers: &'a [f32],
    /// Empty without minimums.
    pub(crate) super_mins: &'a [f32],
}

/// One lane group's (or 16-channel panel's) factored parameters, from its first channel: group
/// `g`'s at `g · W`, its super-block's at `(g / per) · W`.
#[derive(Copy, Clone)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the SIMD kernels' layout
pub(crate) struct FactoredPanel<'a> {
    /// Groups per super-block.
    pub(crate) per: usize,
    width: usize,
    /// `[group][W]` from this panel's first channel.
    pub(crate) scales: &'a [i8],
    /// As `scales` (empty without minimums).
    pub(crate) mins: &'a [i8],
    /// `[super-block][W]` from this panel's first channel.
    pub(crate) supers: &'a [f32],
    /// As `supers` (empty without minimums).
    pub(crate) super_mins: &'a [f32],
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the SIMD kernels' layout
impl<'a> FactoredPanel<'a> {
    /// Channels `0 .. W` (from this one's first) of `f`, whose panels are `width` wide, from
    /// lane `half` of panel `panel` with `groups` groups a channel.
    fn new(f: &FactoredView<'a>, width: usize, panel: usize, half: usize, groups: usize) -> Self {
        let supers = groups / f.per;
        let (g0, s0) = (panel * groups * width + half, panel * supers * width + half);
        let (g1, s1) = ((panel + 1) * groups * width, (panel + 1) * supers * width);
        let cut = |v: &'a [i8]| if v.is_empty() { v } else { &v[g0..g1] };
        let cut_f = |v: &'a [f32]| if v.is_empty() { v } else { &v[s0..s1] };
        FactoredPanel {
            per: f.per,
            width,
            scales: cut(f.scales),
            mins: cut(f.mins),
            supers: cut_f(f.supers),
            super_mins: cut_f(f.super_mins),
        }
    }

    /// Group `g`'s integers (from this panel's first channel: 8 or 16 read) and its
    /// super-block's factors, for the scales and (empty without) the minimums.
    #[inline]
    pub(crate) fn group(&self, g: usize) -> ([&'a [i8]; 2], [&'a [f32]; 2]) {
        let (at, sup) = (g * self.width, (g / self.per) * self.width);
        let ints = |v: &'a [i8]| if v.is_empty() { v } else { &v[at..] };
        let factors = |v: &'a [f32]| if v.is_empty() { v } else { &v[sup..] };
        ([ints(self.scales), ints(self.mins)], [factors(self.supers), factors(self.super_mins)])
    }
}

impl<'a> Panels<'a> {
    /// Output channels `N`.
    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// Inputs per group.
    pub(crate) fn group_size(&self) -> usize {
        self.group
    }

    /// Groups per output channel.
    pub(crate) fn groups(&self) -> usize {
        self.k / self.group
    }

    /// The code format.
    pub(crate) fn codes_kind(&self) -> GroupCodes {
        self.kind
    }

    /// Channels per panel.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the SIMD kernels' layout
    pub(crate) fn width(&self) -> usize {
        self.width
    }

    /// Bytes of one panel's codes for one group.
    #[expect(clippy::as_conversions, reason = "bit widths (<= 8) as usize, sums and codes (< 2^24) to f32: exact")]
    pub(crate) fn group_bytes(&self) -> usize {
        self.group * self.width * self.kind.bits() as usize / 8
    }

    /// Where channel `r`'s group `g` parameters are.
    pub(crate) fn param_index(&self, r: usize, g: usize) -> usize {
        ((r / self.width) * self.groups() + g) * self.width + r % self.width
    }

    /// Where channel `r`'s super-block `s` factors are (the factored form).
    pub(crate) fn super_index(&self, r: usize, s: usize) -> usize {
        let supers = self.factored.map_or(0, |f| self.groups() / f.per);
        ((r / self.width) * supers + s) * self.width + r % self.width
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the SIMD kernels' layout
    /// Lane group `p` (channels `8p .. 8p + 8`): its codes, group after group, and its scales,
    /// zero points and minimums (empty for the formats without them).
    #[inline]
    pub(crate) fn panel(&self, p: usize) -> Panel<'a> {
        let (groups, gb, w) = (self.groups(), self.group_bytes(), self.width);
        let (panel, half) = (p * PANEL / w, p * PANEL % w);
        let params = panel * groups * w + half..(panel + 1) * groups * w;
        let cut = |v: &'a [f32]| if v.is_empty() { v } else { &v[params.clone()] };
        Panel {
            codes: &self.codes[panel * groups * gb + half * 4..(panel + 1) * groups * gb],
            panel_codes: &self.codes[panel * groups * gb..(panel + 1) * groups * gb],
            lane_group: half / PANEL,
            group: self.group,
            scales: cut(self.scales),
            zeros: if self.zeros.is_empty() { &[] } else { &self.zeros[params.clone()] },
            mins: cut(self.mins),
            factored: self.factored.map(|f| FactoredPanel::new(&f, w, panel, half, groups)),
            group_bytes: gb,
            width: w,
        }
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the SIMD kernels' layout
    /// Panel `p` of the 16-channel layout (channels `16p .. 16p + 16`).
    ///
    /// # Panics
    /// When the weights are in the 8-channel layout.
    #[inline]
    pub(crate) fn wide_panel(&self, p: usize) -> WidePanel<'a> {
        assert_eq!(self.width, WIDE, "a 16-channel panel of 8-channel weights");
        let (groups, gb) = (self.groups(), self.group_bytes());
        let params = p * groups * WIDE..(p + 1) * groups * WIDE;
        let cut = |v: &'a [f32]| if v.is_empty() { v } else { &v[params.clone()] };
        WidePanel {
            codes: &self.codes[p * groups * gb..(p + 1) * groups * gb],
            scales: cut(self.scales),
            zeros: if self.zeros.is_empty() { &[] } else { &self.zeros[params.clone()] },
            mins: cut(self.mins),
            factored: self.factored.map(|f| FactoredPanel::new(&f, WIDE, p, 0, groups)),
            group_bytes: gb,
        }
    }

    /// The scale, integer zero point and float minimum of output channel `r`, group `g`:
    /// weight `= scale · (u - zero point) + minimum` for the stored code `u` (zero point 8 for
    /// `Sym4`, stored as `q + 8`; 0 where the format has none; minimum 0 except for `Min4`).
    pub(crate) fn params(&self, r: usize, g: usize) -> (f32, i32, f32) {
        let at = self.param_index(r, g);
        let z = match self.kind {
            GroupCodes::Sym4 => 8,
            GroupCodes::Sym6 => 32,
            GroupCodes::Asym4 => i32::from(self.zeros[at]),
            GroupCodes::Min4 | GroupCodes::Sym8 | GroupCodes::Min8 | GroupCodes::Min6 | GroupCodes::Levels4 => 0,
        };
        if let Some(f) = self.factored {
            // The kernels' `f32` product, factor times integer.
            let sup = self.super_index(r, g / f.per);
            let m = if self.kind.has_min() { f.super_mins[sup] * f32::from(f.mins[at]) } else { 0.0 };
            return (f.supers[sup] * f32::from(f.scales[at]), z, m);
        }
        let m = if self.kind.has_min() { self.mins[at] } else { 0.0 };
        (self.scales[at], z, m)
    }

    /// The stored code of input `c` of output channel `r`: a nibble `0..=15` for the 4-bit
    /// formats, the byte of an `i8` for `Sym8`.
    pub(crate) fn stored_code(&self, r: usize, c: usize) -> u8 {
        let (g, j, w, gb) = (c / self.group, c % self.group, self.width, self.group_bytes());
        let codes = &self.codes[((r / w) * self.groups() + g) * gb..][..gb];
        let l = r % w;
        match self.kind {
            GroupCodes::Sym8 | GroupCodes::Min8 => codes[((j / 4) * w + l) * 4 + j % 4],
            GroupCodes::Sym6 | GroupCodes::Min6 => {
                let byte = codes[((j / 8) * w + l) * 4 + j % 4];
                let low = if j % 8 < 4 { byte & 0x0f } else { byte >> 4 };
                let (at, shift) = six_bit_high(self.group, w, j / 8, l * 4 + j % 4);
                let pair = (codes[at] >> shift) & 0x0f;
                let top = if j % 8 < 4 { pair & 3 } else { pair >> 2 };
                low | (top << 4)
            }
            GroupCodes::Sym4 | GroupCodes::Asym4 | GroupCodes::Min4 | GroupCodes::Levels4 => {
                let byte = codes[((j / 8) * w + l) * 4 + j % 4];
                if j % 8 < 4 {
                    byte & 0x0f
                } else {
                    byte >> 4
                }
            }
        }
    }

    /// The code of input `c` of output channel `r`, as the integer the format multiplies: `u`
    /// for the linear 4-bit formats (`0..=15`), the byte as an `i8` for `Sym8` and `Min8`,
    /// the level `L[u]` for `Levels4`.
    #[inline]
    pub(crate) fn code(&self, r: usize, c: usize) -> i32 {
        let u = self.stored_code(r, c);
        match self.kind {
            GroupCodes::Sym8 | GroupCodes::Min8 => i32::from(i8::from_ne_bytes([u])),
            GroupCodes::Sym4 | GroupCodes::Asym4 | GroupCodes::Min4 | GroupCodes::Sym6 | GroupCodes::Min6 => {
                i32::from(u)
            }
            GroupCodes::Levels4 => i32::from(self.levels[usize::from(u)]),
        }
    }
}

/// One lane group's codes and parameters ([`Panels::panel`]): eight channels, a panel
/// of the 8-channel layout or half of one of the 16-channel layout.
#[derive(Copy, Clone)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the SIMD kernels' layout
pub(crate) struct Panel<'a> {
    /// From this lane group's first byte of group 0.
    codes: &'a [u8],
    /// From the panel's first byte of group 0 (`Sym6`'s high plane).
    panel_codes: &'a [u8],
    /// Which eight channels of its panel this lane group is (0 or 1).
    lane_group: usize,
    /// Inputs per group.
    group: usize,
    /// The panel's parameters from this lane group's first, `width` per group.
    scales: &'a [f32],
    zeros: &'a [u8],
    mins: &'a [f32],
    /// The two-level form (`scales` and `mins` empty).
    factored: Option<FactoredPanel<'a>>,
    group_bytes: usize,
    /// Channels per panel: bytes between the steps of four inputs are `4 · width`.
    width: usize,
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the SIMD kernels' layout
impl<'a> Panel<'a> {
    /// Group `g`'s codes: 32 bytes (eight channels' four inputs) every [`Panel::step`] bytes.
    #[inline]
    pub(crate) fn codes(&self, g: usize) -> &'a [u8] {
        let steps = self.group_bytes / (4 * self.width);
        &self.codes[g * self.group_bytes..][..(steps - 1) * self.step() + 32]
    }

    /// Bytes from one step of four inputs to the next.
    #[inline]
    pub(crate) fn step(&self) -> usize {
        4 * self.width
    }

    /// `Sym6`: group `g`'s high plane for this lane group, 32 bytes a pair of steps of eight
    /// inputs every `4 · width` bytes (see [`six_bit_high`]).
    #[inline]
    pub(crate) fn high(&self, g: usize) -> &'a [u8] {
        let (at, _) = six_bit_high(self.group, self.width, 0, self.lane_group * 32);
        let pairs = self.group / 16;
        &self.panel_codes[g * self.group_bytes + at..][..(pairs - 1) * 4 * self.width + 32]
    }

    /// Every group's scales, zero points and minimums from this lane group's first channel,
    /// group `g`'s at `g · width` (zero points and minimums empty for the formats without
    /// them; scales and minimums empty in the factored form).
    #[inline]
    pub(crate) fn all_params(&self) -> (&'a [f32], &'a [u8], &'a [f32]) {
        (self.scales, self.zeros, self.mins)
    }

    /// The two-level form's parameters, where the weights have it (then [`Panel::params`]'s
    /// scales and minimums are empty).
    #[inline]
    pub(crate) fn factored(&self) -> Option<FactoredPanel<'a>> {
        self.factored
    }

    /// Group `g`'s eight scales, zero points (`Asym4`) and minimums (`Min4`, `Min8`), the last two
    /// empty for the formats without them (and the scales and minimums for the factored form).
    #[inline]
    pub(crate) fn params(&self, g: usize) -> (&'a [f32], &'a [u8], &'a [f32]) {
        let at = g * self.width..g * self.width + PANEL;
        let z = if self.zeros.is_empty() { &[][..] } else { &self.zeros[at.clone()] };
        let m = if self.mins.is_empty() { &[][..] } else { &self.mins[at.clone()] };
        let s = if self.scales.is_empty() { &[][..] } else { &self.scales[at] };
        (s, z, m)
    }
}

/// One panel of the 16-channel layout ([`Panels::wide_panel`]), for the zmm kernels.
#[derive(Copy, Clone)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the SIMD kernels' layout
pub(crate) struct WidePanel<'a> {
    codes: &'a [u8],
    scales: &'a [f32],
    zeros: &'a [u8],
    mins: &'a [f32],
    /// The two-level form (`scales` and `mins` empty).
    factored: Option<FactoredPanel<'a>>,
    group_bytes: usize,
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the SIMD kernels' layout
impl<'a> WidePanel<'a> {
    /// Group `g`'s codes: 64 bytes (sixteen channels' four inputs) a step.
    #[inline]
    pub(crate) fn codes(&self, g: usize) -> &'a [u8] {
        &self.codes[g * self.group_bytes..(g + 1) * self.group_bytes]
    }

    /// Every group's codes, group after group, and the bytes of one group (for a kernel that
    /// walks them with a pointer instead of slicing each group).
    #[inline]
    pub(crate) fn all_codes(&self) -> (&'a [u8], usize) {
        (self.codes, self.group_bytes)
    }

    /// The two-level form's parameters, where the weights have it (then
    /// [`WidePanel::all_params`]'s scales and minimums are empty).
    #[inline]
    pub(crate) fn factored(&self) -> Option<FactoredPanel<'a>> {
        self.factored
    }

    /// Every group's scales, zero points and minimums, `[group][16]` (zero points and minimums
    /// empty for the formats without them; scales and minimums empty in the factored form).
    #[inline]
    pub(crate) fn all_params(&self) -> (&'a [f32], &'a [u8], &'a [f32]) {
        (self.scales, self.zeros, self.mins)
    }
}

/// Activations quantized to `i8` per activation block (step 1 of the int8 mode: the group, or
/// the super-block of two-level weights), as the kernels read them.
#[derive(Copy, Clone)]
pub(crate) struct QuantizedRows<'a> {
    pub(crate) k: usize,
    pub(crate) group: usize,
    /// Inputs per scale: `group`, or a multiple of it (a super-block of two-level weights).
    pub(crate) block: usize,
    /// Whether the blocks are the weights' super-blocks (step 3's second form, where each
    /// block's groups are summed before its scale multiplies them).
    pub(crate) two_level: bool,
    /// Rows.
    pub(crate) m: usize,
    /// Codes in input order, row after row.
    pub(crate) q: &'a [i8],
    /// Scale per block, at [`QuantizedRows::block_at`].
    pub(crate) scales: &'a [f32],
    /// `Σ q` per group, at [`QuantizedRows::at`].
    pub(crate) sums: &'a [i32],
    /// What a group's minimum multiplies, at [`QuantizedRows::at`]: `s_x · Σ q` (an `f32`
    /// product) for one-level weights, `Σ q` for two-level ones.
    pub(crate) scaled_sums: &'a [f32],
    /// `ROUND_BITS - o · Σ q` per group, at [`QuantizedRows::at`], `o` the weights'
    /// [`GroupCodes::unsigned_offset`]: where a VNNI kernel's integer sum starts, so that it
    /// ends at [`ROUND_BITS`] plus the signed dot product `d` (`|d| <= 127 · 128 · 256 < 2^22`),
    /// the bits of the `f32` `ROUND + d`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the SIMD kernels' start
    pub(crate) offset_sums: &'a [i32],
}

impl QuantizedRows<'_> {
    /// Groups per row.
    pub(crate) fn groups(&self) -> usize {
        self.k / self.group
    }

    /// Where row `r`'s group `g` is in the per-group arrays: group after group, the rows of
    /// each group next to each other (so that a kernel's consecutive rows read one pointer).
    pub(crate) fn at(&self, r: usize, g: usize) -> usize {
        g * self.m + r
    }

    /// Where row `r`'s block `b` is in `scales`, laid out as [`QuantizedRows::at`] lays out the
    /// groups (for one-level weights the blocks are the groups, and the two agree).
    pub(crate) fn block_at(&self, r: usize, b: usize) -> usize {
        b * self.m + r
    }

    /// Where `rows`' codes start (for [`QuantizedRows::group_rows`]).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the SIMD kernels' view
    pub(crate) fn row_starts<const R: usize>(&self, rows: [usize; R]) -> [*const i8; R] {
        rows.map(|r| self.q.as_ptr().wrapping_add(r * self.k))
    }

    /// What a SIMD kernel reads of group `g` for `R` consecutive rows whose per-group values
    /// start at `at` (`self.at(rows[0], g)`): each row's codes of the group (from its start in
    /// `starts`), each row's `ROUND_BITS - o · Σ q`, and a pointer to the rows' `R` values
    /// that the group's minimum multiplies.
    ///
    /// # Safety
    /// `starts` are [`QuantizedRows::row_starts`] of `R` consecutive rows of `self`; `g` is a
    /// group of the rows and `at` is `self.at(rows[0], g)`.
    #[inline(always)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the SIMD kernels' view
    pub(crate) unsafe fn group_rows<const R: usize>(
        &self,
        starts: &[*const i8; R],
        g: usize,
        at: usize,
    ) -> ([*const i8; R], [i32; R], *const f32) {
        // SAFETY: group `g` of every row is inside it, and the rows' `R` consecutive entries of
        // the per-group arrays from `at` are inside those (the caller's contract).
        unsafe {
            (
                starts.map(|x| x.add(g * self.group)),
                core::array::from_fn(|i| *self.offset_sums.as_ptr().add(at + i)),
                self.scaled_sums.as_ptr().add(at),
            )
        }
    }

    /// A pointer to the `R` consecutive rows' scales of a block, from `at`
    /// (`self.block_at(rows[0], b)`).
    ///
    /// # Safety
    /// `at + R` is at most `scales`' length.
    #[inline(always)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the SIMD kernels' view
    pub(crate) unsafe fn block_scales(&self, at: usize) -> *const f32 {
        // SAFETY: inside `scales` (the caller's contract).
        unsafe { self.scales.as_ptr().add(at) }
    }
}

/// Activations in `f32` (the float mode), as the kernels read them.
#[derive(Copy, Clone)]
pub(crate) struct FloatRows<'a> {
    pub(crate) k: usize,
    pub(crate) group: usize,
    /// Row after row.
    pub(crate) x: &'a [f32],
    /// `σ_g` per group, row after row (formats with minimums only; empty otherwise).
    pub(crate) sums: &'a [f32],
}

impl<'a> FloatRows<'a> {
    /// Row `r`.
    #[inline]
    pub(crate) fn row(&self, r: usize) -> &'a [f32] {
        &self.x[r * self.k..(r + 1) * self.k]
    }

    /// `σ_g` of row `r`, group `g` (formats with minimums only).
    #[inline]
    pub(crate) fn sum(&self, r: usize, g: usize) -> f32 {
        self.sums[r * (self.k / self.group) + g]
    }
}

/// A tier's decode-product kernels (see [`crate::group`]): every result is the reference's
/// ([`reference_panel_i8`], [`reference_panel_f32`]) bit for bit.
pub(crate) trait DecodeKernel: TierKernels {
    /// Channels per panel of the layout this tier's kernels take: 16 for the zmm tiers (which
    /// refuse the 8-channel layout), 8 for the others (which take either).
    const WIDTH: usize;

    /// Whether the float mode has SIMD kernels here: they take two lane groups at once and,
    /// for many rows, convert the weights once into a scratch buffer
    /// ([`DecodeKernel::dequantize`]). The portable reference does neither.
    const FLOAT_SIMD: bool;

    /// Step 1 of the int8 mode for one row's group: `x` quantized into `q`, the scale and
    /// `Σ q` returned, bit for bit as [`reference_quantize_group`] (which this is unless a tier
    /// vectorizes it).
    ///
    /// # Safety
    /// The CPU has the tier; `x` and `q` have the same length, a multiple of 16.
    unsafe fn quantize_group(x: &[f32], q: &mut [i8]) -> (f32, i32) {
        reference_quantize_group(x, q)
    }

    /// The int8 mode's lane group `p` (eight channels) for `rows`, before the bias.
    ///
    /// # Safety
    /// The CPU has the tier; `p` is a lane group of `w`, whose layout the tier takes; every row
    /// of `rows` is a row of `a`, and they are consecutive (`rows[i] = rows[0] + i`); `a` and
    /// `w` have the same `K` and group size.
    unsafe fn panel_i8<const R: usize>(
        w: &Panels<'_>,
        a: &QuantizedRows<'_>,
        rows: [usize; R],
        p: usize,
    ) -> [[f32; PANEL]; R];

    /// The int8 mode's 16-channel panel `p` (lane groups `2p`, `2p + 1`) at once, as two lane
    /// groups, where the tier has such a kernel and `w` is in the 16-channel layout; `None`
    /// otherwise (the caller then takes the lane groups one by one).
    ///
    /// # Safety
    /// As [`DecodeKernel::panel_i8`].
    unsafe fn wide_i8<const R: usize>(
        _w: &Panels<'_>,
        _a: &QuantizedRows<'_>,
        _rows: [usize; R],
        _p: usize,
    ) -> Option<[[[f32; PANEL]; 2]; R]> {
        None
    }

    /// The float mode's lane groups `p .. p + P` for `rows`, before the bias, their weights
    /// converted on the fly or read from `scratch` (filled by [`DecodeKernel::dequantize`] for
    /// exactly these lane groups).
    ///
    /// # Safety
    /// As [`DecodeKernel::panel_i8`], for `P` lane groups; `a` has `K` values a row.
    unsafe fn panels_f32<const R: usize, const P: usize>(
        w: &Panels<'_>,
        a: &FloatRows<'_>,
        rows: [usize; R],
        p: usize,
        scratch: Option<&[f32]>,
    ) -> [[[f32; PANEL]; P]; R];

    /// Lane groups `p .. p + count`'s weights dequantized to `v_k` (`[K][count][8]`) into
    /// `out`; `false` (nothing written) for a tier that only converts on the fly.
    ///
    /// # Safety
    /// The CPU has the tier; lane groups `p .. p + count` are in `w`.
    unsafe fn dequantize(w: &Panels<'_>, p: usize, count: usize, out: &mut [f32]) -> bool;
}

/// The int8 mode's reference (portable) kernel: panel `p`'s eight output channels for each of
/// `rows`, before the bias (steps 2 and 3 of the `group` module's docs). Channels past `N` come out as 0.
#[expect(clippy::as_conversions, reason = "bit widths (<= 8) as usize, sums and codes (< 2^24) to f32: exact")]
pub(crate) fn reference_panel_i8<const R: usize>(
    w: &Panels<'_>,
    a: &QuantizedRows<'_>,
    rows: [usize; R],
    p: usize,
) -> [[f32; PANEL]; R] {
    let (k, group, groups) = (a.k, a.group, a.groups());
    let mut out = [[0f32; PANEL]; R];
    for (o, &r) in out.iter_mut().zip(&rows) {
        let q = &a.q[r * k..(r + 1) * k];

        for (l, y) in o.iter_mut().enumerate() {
            let c = p * PANEL + l;
            if c >= w.n() {
                break;
            }
            let mut acc = 0.0f32;
            // Two-level weights: each super-block's groups summed in `t` first, then one
            // product with the block's activation scale.
            let per = match w.factored {
                Some(f) if a.two_level => f.per,
                _ => 1,
            };
            debug_assert_eq!(a.block, per * group);
            for b in 0..groups / per {
                let mut t = 0.0f32;
                for g in b * per..(b + 1) * per {
                    let (s_w, z, min) = w.params(c, g);
                    let qg = &q[g * group..(g + 1) * group];
                    let raw: i32 = qg.iter().enumerate().map(|(j, &v)| i32::from(v) * w.code(c, g * group + j)).sum();
                    let d = raw - z * a.sums[a.at(r, g)];
                    let with_min = w.codes_kind().has_min();
                    if a.two_level {
                        t = fma_f32(s_w, d as f32, t);
                        if with_min {
                            t = fma_f32(min, a.scaled_sums[a.at(r, g)], t);
                        }
                    } else {
                        acc = fma_f32(s_w, a.scales[a.block_at(r, g)] * d as f32, acc);
                        if with_min {
                            acc = fma_f32(min, a.scaled_sums[a.at(r, g)], acc);
                        }
                    }
                }
                if a.two_level {
                    acc = fma_f32(t, a.scales[a.block_at(r, b)], acc);
                }
            }
            *y = acc;
        }
    }
    out
}

/// Step 1 of the int8 mode (the `group` module's docs) for one row's group of activations: the
/// codes into `q`, and the scale and `Σ q` returned. The reference every tier's
/// [`DecodeKernel::quantize_group`] reproduces.
///
/// Its rounding `round_ties_even(y)` is `(y + 1.5 · 2^23) - 1.5 · 2^23`, exact for `|y| < 2^22`
/// (the sum lies where the `f32` spacing is 1, so its one rounding is to the nearest integer,
/// ties to even; `1.5 · 2^23` is even) and `|y| = |x_k / s_x| <= 128` here: the same operation
/// in every tier's vector registers.
#[expect(clippy::as_conversions, reason = "an activation code clamped to -127..=127, to i8")]
pub(crate) fn reference_quantize_group(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 {
        q.fill(0);
        return (0.0, 0);
    }
    let s = amax / 127.0;
    for (o, &v) in q.iter_mut().zip(x) {
        let r = ((v / s) + ROUND) - ROUND;
        *o = r.clamp(-127.0, 127.0) as i8;
    }
    (s, q.iter().map(|&v| i32::from(v)).sum())
}

/// `1.5 · 2^23`: adding and subtracting it rounds an `f32` of magnitude below `2^22` to an
/// integer, ties to even.
pub(crate) const ROUND: f32 = 12_582_912.0;

/// The bits of [`ROUND`] as an `i32`: an integer `d` with `|d| < 2^22` added to them gives the
/// bits of the `f32` `ROUND + d` (the low 23 bits are its fraction, in units of 1), so
/// subtracting `ROUND` as an `f32` gives `d` exactly: a conversion from `i32` in one float
/// subtraction, the addition done for free where an integer sum starts.
pub(crate) const ROUND_BITS: i32 = 0x4B40_0000;

/// The float mode's reference (portable) kernel: panel `p`'s eight output channels for each of
/// `rows`, before the bias (steps 1 to 3 of the `group` module's docs). Channels past `N` come out as 0.
#[expect(clippy::as_conversions, reason = "bit widths (<= 8) as usize, sums and codes (< 2^24) to f32: exact")]
pub(crate) fn reference_panel_f32<const R: usize>(
    w: &Panels<'_>,
    a: &FloatRows<'_>,
    rows: [usize; R],
    p: usize,
) -> [[f32; PANEL]; R] {
    let (group, groups) = (w.group_size(), w.groups());
    let mut out = [[0f32; PANEL]; R];
    for (o, &r) in out.iter_mut().zip(&rows) {
        let x = a.row(r);
        for (l, y) in o.iter_mut().enumerate() {
            let c = p * PANEL + l;
            if c >= w.n() {
                break;
            }
            let mut acc = 0f32;
            for g in 0..groups {
                let (s_w, z, min) = w.params(c, g);
                let mut part = [0f32; 2];
                for j in 0..group {
                    let k = g * group + j;
                    let v = (w.code(c, k) - z) as f32; // exact: |v| <= 128
                    part[j % 2] = fma_f32(x[k], v, part[j % 2]);
                }
                acc = fma_f32(s_w, part[0] + part[1], acc);
                if w.codes_kind().has_min() {
                    acc = fma_f32(min, a.sum(r, g), acc);
                }
            }
            *y = acc;
        }
    }
    out
}

#[cfg(test)]
mod activation_tests {
    use super::reference_quantize_group as quantize_group;
    use quant_traits::cast::round_ties_even;

    /// `ROUND_BITS` are `ROUND`'s, and adding an integer below `2^22` in magnitude to them is
    /// adding it to `ROUND`, at both ends of the range.
    #[test]
    #[expect(clippy::as_conversions, reason = "test values: i32 bits to u32, integers below 2^22 to f32")]
    fn round_bits_convert_integers_exactly() {
        use super::{ROUND, ROUND_BITS};
        assert_eq!(f32::from_bits(ROUND_BITS as u32), ROUND);
        for d in [0, 1, -1, 12_345, -4_161_536, 4_161_536, (1 << 22) - 1, -(1 << 22)] {
            assert_eq!(f32::from_bits((ROUND_BITS + d) as u32) - ROUND, d as f32, "{d}");
        }
    }

    /// The codes are `round_ties_even(x / s)`: ties go to the even neighbour, on both signs,
    /// and every other value to the nearest, as the documented step 1 says.
    #[test]
    #[expect(clippy::as_conversions, reason = "test values, small integers")]
    fn activation_codes_round_ties_to_even() {
        // amax = 127 makes s = 1 exactly, so x / s = x and the ties are exact.
        let x = [127.0f32, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 3.49, -3.51, 0.0, -127.0, 64.5, 65.5, 0.25];
        let mut q = [0i8; 16];
        assert_eq!(quantize_group(&x, &mut q), (1.0, 129));
        assert_eq!(q, [127, 0, 2, 2, 0, -2, -2, 126, -126, 3, -4, 0, -127, 64, 66, 0]);
        // And on values that are not ties, the same codes as `round_ties_even` in `f64`.
        let y: [f32; 16] = core::array::from_fn(|i| (i as f32 - 7.3) * 0.37 + 1e-3 * (i * i) as f32);
        let (s, sum) = quantize_group(&y, &mut q);
        assert_eq!(sum, q.iter().map(|&c| i32::from(c)).sum::<i32>());
        let amax = y.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert_eq!(s, amax / 127.0);
        for (v, c) in y.iter().zip(q) {
            assert_eq!(f64::from(c), round_ties_even(f64::from(v / s)).clamp(-127.0, 127.0), "{v}");
        }
    }
}
