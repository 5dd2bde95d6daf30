//! Packing operands into a micro-kernel's panel layout (the layouts are described on
//! `arch::MicroKernel`).
//!
//! Everything here is generic over the kernel `K`: its tile (`K::MR`, `K::NR`) and depth
//! grouping (`K::GROUP`: pairs for `vpmaddwd`, quads for `vpdpbusd`). Depths past `K` are
//! padded with zeros, and rows or columns past the matrix edge are zero, so kernels always
//! compute full tiles.
//!
//! * A, packed per call into `i32` words: two `i16` per word on pair kernels (word
//!   `p * MR + r` holds `(a[r][2p], a[r][2p+1])`), four bytes per word on quad kernels (word
//!   `q * MR + r` holds `a[r][4q .. 4q + 4]`, lowest depth in the lowest byte), `i8` values
//!   shifted by +128 into `0..=255` (the driver corrects the shift as a zero point).
//! * B (weights) stays 8-bit: in a panel of `NR` columns, byte `(g * NR + c) * GROUP + t`
//!   holds `b[GROUP * g + t][c]`. [`PackedB`] keeps a whole matrix packed this way, so
//!   weights are packed once and reused (the kernels widen bytes in registers: half the memory
//!   traffic of `i16` panels, which matters for `M = 1`).

use alloc::vec::Vec;

use quant_traits::{I4x2, QuantError, Storage};

use crate::aligned::Aligned;
use crate::arch::pack::word;
use crate::arch::{dispatch, AWords, MicroKernel, Tier, QUAD_ROW_BLOCK};
use crate::gemm::element::Operand;
use crate::view::MatRef;

/// One word from two `i16` values: `lo` in bits 0..16, `hi` in bits 16..32.
#[inline(always)]
#[expect(clippy::as_conversions, reason = "an i16's bits as u16, to pack it as the low half of a word")]
fn pair(lo: i16, hi: i16) -> i32 {
    i32::from(lo as u16) | (i32::from(hi) << 16)
}

/// Makes `out` `len` words long: a buffer that grows is allocated zeroed (fresh pages from the
/// OS are zero already) rather than filled word by word, since the packers overwrite it.
fn grow(out: &mut Aligned<i32>, len: usize) {
    out.reset(len);
}

/// Number of K pairs for depth `k`.
#[inline]
pub(crate) fn pairs(k: usize) -> usize {
    k.div_ceil(2)
}

/// Packs rows `[r0, r0 + rows)` of A (all of K) into `K`'s word format, in panels of `mr`
/// rows (`K::MR`, or 1 for the row kernel), in `out` (resized). Panel `i` starts at word
/// `i * groups(k) * mr`.
pub(crate) fn pack_a<K: MicroKernel, T: Operand>(
    a: &MatRef<'_, T>,
    r0: usize,
    rows: usize,
    mr: usize,
    out: &mut Aligned<i32>,
) {
    match K::A_WORDS {
        AWords::Pairs => pack_a_pairs(a, r0, rows, mr, out),
        AWords::Quads => pack_a_quads(a, r0, rows, mr, a_shift::<K, T>(), out),
        AWords::QuadRows => pack_a_quad_rows(a, r0, rows, mr, a_shift::<K, T>(), out),
    }
}

/// What packing A for kernel `K` adds to every value of `T`, which the epilogue corrects as a
/// zero point: [`quad_shift`] on quad kernels, 0 on pair kernels (they take `i16`).
#[inline]
pub(crate) fn a_shift<K: MicroKernel, T: Operand>() -> i16 {
    if K::A_WORDS == AWords::Pairs {
        0
    } else {
        quad_shift::<T>()
    }
}

/// What quad packing adds to a value of `T` to make it a byte `0..=255`: 128 for `i8`.
#[inline]
pub(crate) fn quad_shift<T: Operand>() -> i16 {
    if T::UNSIGNED {
        0
    } else {
        128
    }
}

/// Depth groups of `group` values for depth `k`.
#[inline]
pub(crate) fn groups(k: usize, group: usize) -> usize {
    k.div_ceil(group)
}

/// Pair words: see [`pack_a`].
fn pack_a_pairs<T: Operand>(a: &MatRef<'_, T>, r0: usize, rows: usize, mr: usize, out: &mut Aligned<i32>) {
    const MR: usize = 6; // the unrolled fast case below: the AVX2 tile's rows
    let k = a.cols();
    let kp = pairs(k);
    let panels = rows.div_ceil(mr);
    // Every word is written below, so the buffer is only grown, never cleared.
    grow(out, panels * kp * mr);
    for panel in 0..panels {
        let dst = &mut out[panel * kp * mr..(panel + 1) * kp * mr];
        let live = mr.min(rows - panel * mr);
        if live == mr && mr == MR && k.is_multiple_of(2) {
            // The common case: a full panel, written in order, reading MR rows side by side.
            let src: [&[T]; MR] = core::array::from_fn(|r| a.row(r0 + panel * MR + r));
            for (p, d) in dst.chunks_exact_mut(MR).enumerate() {
                for (w, row) in d.iter_mut().zip(&src) {
                    *w = pair(row[2 * p].widen(), row[2 * p + 1].widen());
                }
            }
            continue;
        }
        // A partial panel (last rows, odd depth): zero first for the padding rows and word.
        dst.fill(0);
        for r in 0..live {
            let row = a.row(r0 + panel * mr + r);
            let (full, tail) = row.split_at(k - k % 2);
            for (d, two) in dst.iter_mut().skip(r).step_by(mr).zip(full.chunks_exact(2)) {
                *d = pair(two[0].widen(), two[1].widen());
            }
            if let Some(&last) = tail.first() {
                dst[(kp - 1) * mr + r] = pair(last.widen(), 0);
            }
        }
    }
}

/// What quad packing XORs into each byte: `v + 128` of an `i8` is its bits with the top bit
/// flipped; `shift` is 0 or 128.
#[inline]
fn quad_xor(shift: i16) -> u32 {
    debug_assert!(shift == 0 || shift == 128, "quad shift {shift}");
    if shift == 0 {
        0
    } else {
        0x8080_8080
    }
}

/// The last, partial quad of a row (`1..=3` bytes): the bytes with the shift, zero past them.
#[inline]
fn tail_word(bytes: &[u8], xor: u32) -> i32 {
    let mut q = [0u8; 4];
    let mask = xor.to_le_bytes();
    for ((d, &b), &x) in q.iter_mut().zip(bytes).zip(&mask) {
        *d = b ^ x;
    }
    i32::from_le_bytes(q)
}

/// Packs rows `[r0, r0 + rows)` of A (all of K) into panels of `mr` rows of *quads*: word
/// `q * mr + r` holds the bytes `a[r][4q .. 4q + 4] + shift` (zero past K), lowest address in
/// the lowest byte. The layout of the quad kernels (`shift` 128 for `i8`, else 0) and of the
/// 7-bit `vpmaddubsw` tiles (`shift` 0, values `0..=127`).
pub(crate) fn pack_a_quads<T: Operand>(
    a: &MatRef<'_, T>,
    r0: usize,
    rows: usize,
    mr: usize,
    shift: i16,
    out: &mut Aligned<i32>,
) {
    let k = a.cols();
    let kq = groups(k, 4);
    let xor = quad_xor(shift);
    let panels = rows.div_ceil(mr);
    // Every word of a live row is written below (padding rows zeroed), so the buffer is only
    // grown.
    grow(out, panels * kq * mr);
    if kq == 0 {
        return;
    }
    for panel in 0..panels {
        let dst = &mut out[panel * kq * mr..(panel + 1) * kq * mr];
        let live = mr.min(rows - panel * mr);
        if live < mr {
            dst.fill(0); // padding rows
        }
        // Groups of four rows: their whole quads four at a time (SIMD where there is some).
        let done = interleave_groups(a, r0 + panel * mr, live, k / 4 / 4 * 4, xor, dst, mr);
        for r in 0..live {
            let row = T::bytes(a.row(r0 + panel * mr + r));
            let from = if r < live / 4 * 4 { done } else { 0 };
            let quads = row[4 * from..].chunks_exact(4);
            let rest = quads.remainder();
            // Nothing left when the interleave took every quad.
            let Some(left) = dst.get_mut(from * mr + r..) else { continue };
            let mut words = left.iter_mut().step_by(mr);
            // The quads first: `zip` stops on them without taking a word past the last.
            for (four, d) in quads.zip(words.by_ref()) {
                *d = word(four, xor);
            }
            if let (Some(d), false) = (words.next(), rest.is_empty()) {
                *d = tail_word(rest, xor);
            }
        }
    }
}

/// Quads `0 .. quads` (a multiple of 4) of rows `[first, first + live / 4 * 4)` interleaved
/// into a quad panel (`dst`, row stride `mr` words) four rows at a time; returns `quads`.
fn interleave_groups<T: Operand>(
    a: &MatRef<'_, T>,
    first: usize,
    live: usize,
    quads: usize,
    xor: u32,
    dst: &mut [i32],
    mr: usize,
) -> usize {
    for g in 0..live / 4 {
        let rows: [&[u8]; 4] = core::array::from_fn(|j| T::bytes(a.row(first + 4 * g + j)));
        crate::arch::pack::interleave4(rows, quads, xor, &mut dst[4 * g..], mr);
    }
    quads
}

/// Packs rows `[r0, r0 + rows)` of A into panels of `mr` rows of quads in row blocks
/// ([`AWords::QuadRows`]): the depth in blocks of [`QUAD_ROW_BLOCK`] quads; within block `b`
/// (`w` quads wide, the last one possibly narrower) word `b * QUAD_ROW_BLOCK * mr + r * w + i`
/// holds row `r`'s quad `b * QUAD_ROW_BLOCK + i` (bytes plus `shift`, zero past K), so a block
/// of a row is `4 w` contiguous bytes: a copy of the row's bytes. A panel is `kq * mr` words,
/// as for [`AWords::Quads`], and with `mr = 1` the two layouts are the same.
pub(crate) fn pack_a_quad_rows<T: Operand>(
    a: &MatRef<'_, T>,
    r0: usize,
    rows: usize,
    mr: usize,
    shift: i16,
    out: &mut Aligned<i32>,
) {
    const BLOCK: usize = QUAD_ROW_BLOCK * 4;
    let k = a.cols();
    let kq = groups(k, 4);
    let xor = quad_xor(shift);
    let panels = rows.div_ceil(mr);
    grow(out, panels * kq * mr);
    for panel in 0..panels {
        let dst = &mut out[panel * kq * mr..(panel + 1) * kq * mr];
        let live = mr.min(rows - panel * mr);
        if live < mr {
            dst.fill(0); // padding rows
        }
        for r in 0..live {
            let row = T::bytes(a.row(r0 + panel * mr + r));
            for (b, blk) in row.chunks(BLOCK).enumerate() {
                let w = (kq - b * QUAD_ROW_BLOCK).min(QUAD_ROW_BLOCK);
                let at = b * QUAD_ROW_BLOCK * mr + r * w;
                let d = &mut dst[at..at + w];
                if let (Ok(blk), Ok(d)) =
                    (<&[u8; BLOCK]>::try_from(blk), <&mut [i32; QUAD_ROW_BLOCK]>::try_from(&mut *d))
                {
                    // A whole block: 64 bytes copied with the shift.
                    crate::arch::pack::copy_block(blk, xor, d);
                    continue;
                }
                let quads = blk.chunks_exact(4);
                let rest = quads.remainder();
                let mut words = d.iter_mut();
                for (four, dw) in quads.zip(words.by_ref()) {
                    *dw = word(four, xor);
                }
                if let (Some(dw), false) = (words.next(), rest.is_empty()) {
                    *dw = tail_word(rest, xor);
                }
            }
        }
    }
}

/// `Σ_k (a[k] + shift)` over one row in wrapping `i32`: the row sum the zero-point correction
/// of B needs, as a quad kernel sees the row (exact whenever the corrected result fits `i32`).
#[inline]
pub(crate) fn row_sum_wrapping<T: Operand>(row: &[T], shift: i16) -> i32 {
    let sum = row.iter().fold(0i32, |s, v| s.wrapping_add(i32::from(v.widen())));
    let k = row.len().to_le_bytes();
    let k = i32::from_le_bytes([k[0], k[1], k[2], k[3]]);
    sum.wrapping_add(i32::from(shift).wrapping_mul(k))
}

/// Columns of the pair panels that [`quads_from_pairs`] regroups.
const NR: usize = 16;

/// Regroups one B panel of `kp` depth pairs into quads for the 7-bit kernels: bytes
/// `(q * NR + c) * 4 .. + 4` of `out` (resized) hold column `c` at depths `4q .. 4q + 4`,
/// that is pair `2q` then pair `2q + 1` (zero past `kp`).
pub(crate) fn quads_from_pairs(panel: &[i8], kp: usize, out: &mut Aligned<i8>) {
    // Only the AVX2 pair kernel (16 columns) has a 7-bit quad tile.
    let kq = kp.div_ceil(2);
    // Every byte is written below.
    out.reset(kq * NR * 4);
    let zeros = [0i8; NR * 2];
    let mut rows = panel[..kp * NR * 2].chunks_exact(NR * 2).filter_map(<[i8]>::first_chunk::<{ NR * 2 }>);
    for dst in out.chunks_exact_mut(NR * 4).filter_map(<[i8]>::first_chunk_mut::<{ NR * 4 }>) {
        // Pairs 2q and 2q + 1; past `kp` (odd depth), zeros.
        let p0 = rows.next().unwrap_or(&zeros);
        let p1 = rows.next().unwrap_or(&zeros);
        crate::arch::pack::interleave_pairs(p0, p1, dst);
    }
}

/// Weights packed once for the engine: `K x N` `i8` values in the panel layout of one kernel
/// (panels of `NR` columns, depth in groups of `GROUP`), plus each column's sum (for the
/// zero-point correction of A).
///
/// Packed weights belong to a kernel layout: [`crate::Gemm::pack_b`] packs them for the kernel
/// those settings run (and [`PackedB::new`] for the default kernel). A kernel handed weights in
/// another layout refuses them with [`QuantError::PackedForOtherKernel`] rather than repacking
/// in every call; [`PackedB::layout`] says which layout a value holds. Kernels may share a
/// layout (the portable and AVX-VNNI kernels both take quads of 16 columns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedB {
    k: usize,
    n: usize,
    group: usize,
    nr: usize,
    layout: &'static str,
    data: Aligned<i8>,
    col_sums: Vec<i64>,
    /// What was subtracted from every weight while packing: 128 for `u8` weights (stored as
    /// `b - 128`, an `i8`), 0 for `i8`.
    offset: i32,
}

/// `dst[i] = src[i] as i8` (the low byte) for `i < min(len)`; true when every `src[i]` fits
/// `i8` (otherwise `dst` holds low bytes the caller drops): the seed API's `i32` codes narrowed.
#[inline]
pub(crate) fn narrow_i8(src: &[i32], dst: &mut [i8]) -> bool {
    let mut ok = true;
    for (d, &v) in dst.iter_mut().zip(src) {
        ok &= (-128..=127).contains(&v);
        // The low byte: the value when it fits (else `ok` drops it all).
        *d = i8::from_le_bytes([v.to_le_bytes()[0]]);
    }
    ok
}
impl PackedB {
    /// Packs a `K x N` `i8` matrix for the default kernel (`Gemm::new().pack_b(b)`).
    ///
    /// # Errors
    /// When `QUANT_KERNEL` asks for a kernel this CPU cannot run
    /// ([`QuantError::KernelUnavailable`], [`QuantError::UnknownKernel`]).
    pub fn new(b: MatRef<'_, i8>) -> Result<Self, QuantError> {
        crate::Gemm::new().pack_b(b)
    }

    /// Packs a `K x N` matrix of signed 4-bit codes for the default kernel (ONNX `INT4` order:
    /// two codes per byte, first in the low nibble, row-major over the whole matrix, a `K x N`
    /// matrix taking `ceil(K * N / 2)` bytes), unpacking while packing.
    ///
    /// # Errors
    /// [`QuantError::LengthMismatch`] unless `codes` holds exactly `K * N` codes;
    /// [`QuantError::ShapeOverflow`] if `K * N` overflows; as [`PackedB::new`].
    pub fn from_i4(codes: &[I4x2], k: usize, n: usize) -> Result<Self, QuantError> {
        crate::Gemm::new().pack_b_i4(codes, k, n)
    }

    pub(crate) fn pack_for(tier: Tier, b: MatRef<'_, i8>) -> Self {
        dispatch!(tier, K => {
            let mut packed = PackedB::zeroed::<K>(b.rows(), b.cols());
            pack_b_into::<K>(&b, 0, b.cols(), &mut packed.data, &mut packed.col_sums);
            packed
        })
    }

    /// Packs a `K x N` `u8` weight matrix for the default kernel: stored as `b - 128` (exact in
    /// `i8`), with the shift corrected like a zero point (`B - zb = (B - 128) - (zb - 128)`), so
    /// `u8 x u8` (ONNX `MatMulInteger`, `QLinearMatMul`) runs the same kernels exactly. The zero
    /// point given with these weights is a `u8` value.
    ///
    /// # Errors
    /// As [`PackedB::new`].
    pub fn from_u8(b: MatRef<'_, u8>) -> Result<Self, QuantError> {
        crate::Gemm::new().pack_b_u8(b)
    }

    pub(crate) fn from_u8_for(tier: Tier, b: MatRef<'_, u8>) -> Self {
        let (k, n) = (b.rows(), b.cols());
        dispatch!(tier, K => {
            let mut packed = PackedB::zeroed::<K>(k, n);
            packed.offset = 128;
            let mut buf = alloc::vec![0i8; K::GROUP * n];
            let kg = groups(k, K::GROUP);
            for g in 0..kg {
                let live = K::GROUP.min(k - g * K::GROUP);
                for t in 0..live {
                    for (d, &v) in buf[t * n..(t + 1) * n].iter_mut().zip(b.row(g * K::GROUP + t)) {
                        // v - 128, exact in i8: flipping the top bit.
                        *d = i8::from_ne_bytes([v ^ 0x80]);
                    }
                }
                let rows: [Option<&[i8]>; 4] = core::array::from_fn(|t| (t < live).then(|| &buf[t * n..(t + 1) * n]));
                pack_group::<K>(&rows, g, kg, 0, n, &mut packed.data, &mut packed.col_sums);
            }
            packed
        })
    }

    pub(crate) fn from_i4_for(tier: Tier, codes: &[I4x2], k: usize, n: usize) -> Result<Self, QuantError> {
        let len = k.checked_mul(n).ok_or(QuantError::ShapeOverflow { rows: k, cols: n })?;
        QuantError::check_length("int4 codes (bytes)", I4x2::units_for(len), codes.len())?;
        Ok(dispatch!(tier, K => {
            // Unpack one depth group of rows at a time into a small buffer, then pack it as i8.
            let mut packed = PackedB::zeroed::<K>(k, n);
            let mut buf = alloc::vec![0i8; K::GROUP * n];
            let kg = groups(k, K::GROUP);
            for g in 0..kg {
                let live = K::GROUP.min(k - g * K::GROUP);
                for (idx, v) in buf.iter_mut().enumerate().take(live * n) {
                    let code = I4x2::code_at(codes, g * K::GROUP * n + idx);
                    *v = quant_traits::cast::narrow::to_i8(code);
                }
                let rows: [Option<&[i8]>; 4] = core::array::from_fn(|t| (t < live).then(|| &buf[t * n..(t + 1) * n]));
                pack_group::<K>(&rows, g, kg, 0, n, &mut packed.data, &mut packed.col_sums);
            }
            packed
        }))
    }

    /// Packs `K` rows of `N` `i32` codes (the seed API's nested rows) for `tier`, checking that
    /// every code fits `i8`: `None` (nothing packed) when one does not. With `threads > 1`
    /// (feature `parallel`) the column panels are split between threads, each converting and
    /// packing its own.
    pub(crate) fn from_i32_rows_for<R: AsRef<[i32]> + Sync>(
        tier: Tier,
        rows: &[R],
        n: usize,
        threads: usize,
    ) -> Option<Self> {
        let k = rows.len();
        if rows.iter().any(|r| r.as_ref().len() != n) {
            return None;
        }
        dispatch!(tier, K => {
            let mut packed = PackedB::zeroed::<K>(k, n);
            let kg = groups(k, K::GROUP);
            let panel_len = kg * K::NR * K::GROUP;
            let panels = n.div_ceil(K::NR);
            let parts = threads.clamp(1, panels.max(1));
            // Whole panels per part, and the matching parts of the data and the sums.
            let mut jobs = Vec::with_capacity(parts);
            let (mut data, mut sums) = (&mut packed.data[..], &mut packed.col_sums[..]);
            let mut first = 0;
            for t in 0..parts {
                let end = panels * (t + 1) / parts;
                let cols = (end * K::NR).min(n) - first * K::NR;
                let (d, rest_d) = data.split_at_mut((end - first) * panel_len);
                let (s, rest_s) = sums.split_at_mut(cols);
                jobs.push((first * K::NR, cols, d, s));
                (data, sums, first) = (rest_d, rest_s, end);
            }
            let pack = |(c0, cols, data, sums): (usize, usize, &mut [i8], &mut [i64])| -> bool {
                let mut buf = alloc::vec![0i8; K::GROUP * cols];
                for g in 0..kg {
                    let live = K::GROUP.min(k - g * K::GROUP);
                    let mut ok = true;
                    for t in 0..live {
                        let src = &rows[g * K::GROUP + t].as_ref()[c0..c0 + cols];
                        ok &= narrow_i8(src, &mut buf[t * cols..(t + 1) * cols]);
                    }
                    if !ok {
                        return false;
                    }
                    let group: [Option<&[i8]>; 4] =
                        core::array::from_fn(|t| (t < live).then(|| &buf[t * cols..(t + 1) * cols]));
                    pack_group::<K>(&group, g, kg, 0, cols, data, sums);
                }
                true
            };
            #[cfg(feature = "parallel")]
            let ok = {
                use rayon::prelude::*;
                jobs.into_par_iter().map(pack).collect::<Vec<bool>>().into_iter().all(|b| b)
            };
            #[cfg(not(feature = "parallel"))]
            let ok = jobs.into_iter().map(pack).fold(true, |a, b| a & b);
            ok.then_some(packed)
        })
    }

    fn zeroed<K: MicroKernel>(k: usize, n: usize) -> Self {
        let kg = groups(k, K::GROUP);
        PackedB {
            k,
            n,
            group: K::GROUP,
            nr: K::NR,
            layout: K::LAYOUT,
            data: Aligned::zeroed(n.div_ceil(K::NR) * kg * K::NR * K::GROUP),
            col_sums: alloc::vec![0; n],
            offset: 0,
        }
    }

    /// Whether the weights were `u8` ([`PackedB::from_u8`]); their zero point is then a `u8`.
    #[must_use]
    pub fn is_u8(&self) -> bool {
        self.offset != 0
    }

    /// What packing subtracted from every weight (128 for `u8`, else 0).
    pub(crate) fn offset(&self) -> i32 {
        self.offset
    }

    /// Depth `K`.
    #[must_use]
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns `N`.
    #[must_use]
    pub fn n(&self) -> usize {
        self.n
    }

    /// The kernel layout the weights are packed in, e.g. `"pairs x16 (avx2)"` or
    /// `"quads x32 (avx512vnni)"` (the kernels that take it in brackets).
    #[must_use]
    pub fn layout(&self) -> &'static str {
        self.layout
    }

    /// `Ok` when kernel `K` takes this layout, else [`QuantError::PackedForOtherKernel`].
    pub(crate) fn check_layout<K: MicroKernel>(&self) -> Result<(), QuantError> {
        if self.group == K::GROUP && self.nr == K::NR {
            Ok(())
        } else {
            Err(QuantError::PackedForOtherKernel { packed: self.layout, kernel: K::TIER.name() })
        }
    }

    /// The bytes from panel `j` (columns `j * NR ..`) to the end.
    #[inline]
    pub(crate) fn data_from(&self, j: usize) -> &[i8] {
        &self.data[j * groups(self.k, self.group) * self.nr * self.group..]
    }

    pub(crate) fn col_sums(&self) -> &[i64] {
        &self.col_sums
    }
}

/// Packs columns `[c0, c0 + cols)` of B (all of K) for kernel `K` into `data` (panel `j` of
/// these columns at byte `j * groups * NR * GROUP`), and their column sums into `sums` (`cols`
/// long). Both are resized.
pub(crate) fn pack_b_block<K: MicroKernel>(
    b: &MatRef<'_, i8>,
    c0: usize,
    cols: usize,
    data: &mut Aligned<i8>,
    sums: &mut Vec<i64>,
) {
    let kg = groups(b.rows(), K::GROUP);
    data.reset_zeroed(cols.div_ceil(K::NR) * kg * K::NR * K::GROUP);
    sums.clear();
    sums.resize(cols, 0);
    pack_b_into::<K>(b, c0, cols, data, sums);
}

fn pack_b_into<K: MicroKernel>(b: &MatRef<'_, i8>, c0: usize, cols: usize, data: &mut [i8], sums: &mut [i64]) {
    let k = b.rows();
    let kg = groups(k, K::GROUP);
    for g in 0..kg {
        let rows: [Option<&[i8]>; 4] = core::array::from_fn(|t| {
            let r = g * K::GROUP + t;
            (t < K::GROUP && r < k).then(|| b.row(r))
        });
        pack_group::<K>(&rows, g, kg, c0, cols, data, sums);
    }
}

/// Writes depth group `g` (`rows[t]` is row `GROUP * g + t` of B, `None` past K) of columns
/// `[c0, c0 + cols)` into every panel, and adds those rows to the column sums.
fn pack_group<K: MicroKernel>(
    rows: &[Option<&[i8]>; 4],
    g: usize,
    kg: usize,
    c0: usize,
    cols: usize,
    data: &mut [i8],
    sums: &mut [i64],
) {
    let (nr, group) = (K::NR, K::GROUP);
    let panel_len = kg * nr * group;
    // Four rows of whole 16-column chunks: one SIMD interleave where there is one.
    let full = if group == 4 && rows.iter().all(Option::is_some) { cols / 16 * 16 } else { 0 };
    if let (true, [Some(r0), Some(r1), Some(r2), Some(r3)]) = (full > 0, rows) {
        interleave_quads_into::<K>(rows, g, kg, c0, full, data);
        // The four rows summed in i16 (at most 4 · 128) before the i64 column sums.
        let cols = c0..c0 + full;
        let four = r0[cols.clone()].iter().zip(&r1[cols.clone()]).zip(&r2[cols.clone()]).zip(&r3[cols]);
        for (s, (((&a, &b), &c), &d)) in sums[..full].iter_mut().zip(four) {
            *s += i64::from(i16::from(a) + i16::from(b) + i16::from(c) + i16::from(d));
        }
    }
    for (panel, start) in (0..cols).step_by(nr).enumerate() {
        let width = nr.min(cols - start);
        let dst = &mut data[panel * panel_len + g * nr * group..][..width * group];
        // Columns `start .. start + skip` of this panel were interleaved above.
        let skip = full.saturating_sub(start).min(width);
        if skip == width {
            continue;
        }
        let (dst, start, width) = (&mut dst[skip * group..], start + skip, width - skip);
        for (t, row) in rows.iter().enumerate().take(group) {
            let Some(row) = row else { continue };
            let src = &row[c0 + start..c0 + start + width];
            for (d, &v) in dst.iter_mut().skip(t).step_by(group).zip(src) {
                *d = v;
            }
            for (s, &v) in sums[start..start + width].iter_mut().zip(src) {
                *s += i64::from(v);
            }
        }
    }
}

/// Columns `[c0, c0 + full)` (`full` a multiple of 16) of four rows of B (quad group `g`)
/// interleaved into their panels.
fn interleave_quads_into<K: MicroKernel>(
    rows: &[Option<&[i8]>; 4],
    g: usize,
    kg: usize,
    c0: usize,
    full: usize,
    data: &mut [i8],
) {
    let (nr, panel_len) = (K::NR, kg * K::NR * 4);
    for start in (0..full).step_by(16) {
        // 16 columns inside one panel (NR is a multiple of 16).
        let (panel, at) = (start / nr, start % nr);
        let dst = &mut data[panel * panel_len + (g * nr + at) * 4..][..64];
        let src: [&[i8]; 4] = core::array::from_fn(|t| rows[t].map_or(&[][..], |r| &r[c0 + start..c0 + start + 16]));
        crate::arch::pack::interleave_quads(src, 1, dst);
    }
}

/// `sum_k a[r][k]` for every row (exact in `i64`).
pub(crate) fn row_sums<T: Operand>(a: &MatRef<'_, T>) -> Vec<i64> {
    (0..a.rows()).map(|r| a.row(r).iter().map(|&v| i64::from(v.widen())).sum()).collect()
}
